# SPDX-License-Identifier: Apache-2.0
"""The README's Python example, runnable: two requests with one prompt; the
second computes nothing. python/tests/test_quickstart.py checks that the
README quotes the marked region of this file and runs it."""
import sys

import kvbm


def serve(pool, prompt_tokens):
    # README-BEGIN
    hashes = kvbm.hash_tokens(prompt_tokens, 16)   # complete blocks only
    hit = pool.match(hashes)                     # holds on blocks any process computed
    new = pool.allocate(len(hashes) - len(hit))  # raises kvbm.NoSpace when full
    # ... write the KV of the new blocks into your storage at new.ids ...
    pool.stage(new, hashes[len(hit):])
    pool.register(new, tokens=prompt_tokens[len(hit) * 16:len(hashes) * 16])
    pool.release(kvbm.Blocks.concat(hit, new))   # when the request ends
    # README-END
    return len(hit), len(new)


def main(name):
    prompt_tokens = list(range(1000, 1000 + 70))  # 4 complete blocks of 16, 6 more tokens
    with kvbm.Pool(name, create=True, block_count=1024, block_size=16) as pool:
        first = serve(pool, prompt_tokens)
        second = serve(pool, prompt_tokens)
        print("first request: %d blocks matched, %d computed" % first)
        print("second request: %d blocks matched, %d computed" % second)
        problems = pool.check(lock=True)
    kvbm.destroy(name)
    return 0 if first == (0, 4) and second == (4, 0) and not problems else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "quickstart"))
