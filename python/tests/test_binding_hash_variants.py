# SPDX-License-Identifier: Apache-2.0
"""The PLH display form and the block-hash variants (spec sections 4.2, 4.4,
4.5), cross-checked two independent ways: libkvbm's C against a Python
implementation written here from the spec text alone, over python3-xxhash's
XXH3 (a different XXH3 build than the one libkvbm inlines), on fixed and
random inputs. tests/check_hash.c holds vectors computed by this file's
implementation (print_vectors below) and checks the C against them too."""

import ctypes
import random
import struct
from ctypes import POINTER, Structure, c_char_p, c_int, c_long, c_size_t, c_uint, c_uint32

import pytest

from kvbm._lib import BlockHashes, Plh, lib

xxhash = pytest.importorskip("xxhash")  # python3-xxhash (scripts/deps.sh)

u64 = ctypes.c_uint64
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


# ---- the spec, in Python ---------------------------------------------------------

def xxh(data, seed):
    return xxhash.xxh3_64_intdigest(data, seed=seed)


def chain(parent, block):
    return xxh(struct.pack("<QQ", parent, block), 1337)


def widths(pos):
    mode = 0 if pos < 2 ** 8 else 1 if pos < 2 ** 16 else 2
    return mode, (8, 16, 24)[mode], (54, 46, 38)[mode]


def plh(cur, parent, pos):
    mode, p, r = widths(pos)
    return mode << 126 | pos << (64 + r) | cur << r | ((parent or 0) & (2 ** r - 1))


def b58(data):
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, d = divmod(n, 58)
        out = B58[d] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def display(value):
    mode = value >> 126
    p, r = (8, 16, 24)[mode], (54, 46, 38)[mode]
    pos = (value >> (64 + r)) & (2 ** p - 1)
    cur = (value >> r) & (2 ** 64 - 1)
    frag = value & (2 ** r - 1)
    s = "%d:%s" % (pos, b58(cur.to_bytes(8, "big")))
    return s if pos == 0 else s + ":" + b58(frag.to_bytes(8, "big"))


def mm_block_hashes(tokens, bs, salt, runs):
    """(block hash, sequence hash, plh) per complete block, section 4.4."""
    runs = sorted(runs, key=lambda r: r[1])
    out, prev = [], None
    for i in range(len(tokens) // bs):
        lo, hi = i * bs, (i + 1) * bs
        if any(off < hi and off + ln > lo for _, off, ln in runs):
            data = b""
            for g in range(lo, hi):
                run = [r for r in runs if r[1] <= g < r[1] + r[2]]
                if run:
                    data += b"\x01" + struct.pack("<IQ", g - run[0][1], run[0][0])
                else:
                    data += b"\x00" + struct.pack("<IQ", tokens[g], 0)
        else:
            data = struct.pack("<%dI" % bs, *tokens[lo:hi])
        b = xxh(data, salt)
        s = b if prev is None else chain(prev, b)
        out.append((b, s, plh(s, prev, i)))
        prev = s
    return out


def router_hashes(tokens, bs, seed, mm=None, eagle=False):
    """kv-router LocalBlockHash per block, section 4.5."""
    window = bs + 1 if eagle else bs
    out, start, i = [], 0, 0
    while start + window <= len(tokens):
        data = struct.pack("<%dI" % window, *tokens[start:start + window])
        if mm and i < len(mm) and mm[i]:
            data += b"".join(struct.pack("<Q", h) for h in sorted(mm[i]))
        out.append(xxh(data, seed))
        start += bs
        i += 1
    return out


def salt_hash(namespace=None, lora=None):
    seed = 1337
    if lora:
        seed = (seed + xxh(lora.encode(), 0)) % 2 ** 64
    if namespace:
        seed = (seed + xxh(namespace.encode(), 1)) % 2 ** 64
    return seed


# ---- libkvbm ------------------------------------------------------------------------

class MmRun(Structure):
    _fields_ = [("mm_hash", u64), ("offset", c_size_t), ("length", c_size_t)]


class RouterMm(Structure):
    _fields_ = [("mm_hashes", POINTER(u64)), ("n", c_size_t)]


lib.kvbm_plh_to_base58.argtypes = [u64, u64, c_char_p, c_size_t]
lib.kvbm_plh_to_base58.restype = c_int
lib.kvbm_plh_from_base58.argtypes = [c_char_p, POINTER(Plh)]
lib.kvbm_plh_from_base58.restype = c_int
lib.kvbm_hash_tokens_mm.argtypes = [POINTER(c_uint32), c_size_t, c_uint32, u64, POINTER(MmRun),
                                    c_size_t, POINTER(BlockHashes), c_size_t]
lib.kvbm_hash_tokens_mm.restype = c_long
lib.kvbm_router_block_hashes.argtypes = [POINTER(c_uint32), c_size_t, c_uint32, u64,
                                         POINTER(RouterMm), c_size_t, c_uint, POINTER(u64),
                                         c_size_t]
lib.kvbm_router_block_hashes.restype = c_long
lib.kvbm_salt_hash.argtypes = [c_char_p, c_char_p]
lib.kvbm_salt_hash.restype = u64
lib.kvbm_mm_pad_value.argtypes = [u64]
lib.kvbm_mm_pad_value.restype = c_uint32


def c_display(value):
    buf = ctypes.create_string_buffer(40)
    n = lib.kvbm_plh_to_base58(value >> 64, value & (2 ** 64 - 1), buf, 40)
    assert n == len(buf.value)
    return buf.value.decode()


def c_parse(text):
    out = Plh()
    r = lib.kvbm_plh_from_base58(text.encode(), ctypes.byref(out))
    return r if r < 0 else out.hi << 64 | out.lo


def c_mm(tokens, bs, salt, runs):
    toks = (c_uint32 * max(1, len(tokens)))(*tokens)
    rr = (MmRun * max(1, len(runs)))(*[MmRun(h, o, n) for h, o, n in runs])
    out = (BlockHashes * max(1, len(tokens) // bs))()
    n = lib.kvbm_hash_tokens_mm(toks, len(tokens), bs, salt, rr, len(runs), out, len(out))
    if n < 0:
        return n
    return [(o.block_hash, o.seq_hash, o.plh.hi << 64 | o.plh.lo) for o in out[:n]]


def c_router(tokens, bs, seed, mm=None, eagle=False):
    toks = (c_uint32 * max(1, len(tokens)))(*tokens)
    keep = []
    arr = (RouterMm * max(1, len(mm or [])))()
    for i, hs in enumerate(mm or []):
        a = (u64 * max(1, len(hs)))(*hs)
        keep.append(a)
        arr[i] = RouterMm(ctypes.cast(a, POINTER(u64)), len(hs))
    out = (u64 * (len(tokens) + 1))()
    n = lib.kvbm_router_block_hashes(toks, len(tokens), bs, seed, arr, len(mm or []),
                                     1 if eagle else 0, out, len(out))
    return n if n < 0 else list(out[:n])


# ---- the checks -----------------------------------------------------------------------

# spec section 4.6's PLH vectors
SPEC_PLHS = [0x0032ce3935fecb729700000000000000, 0x005128ac8de75b4f0f78e4d7fb2dca5c,
             0x00aba8799e9b2033e122b2379d6d3c3d, 0x40402af37bc048d159e2567890abcdef,
             0x804000155559999ddde2222233334444, 0x01400000000000002a80000000000011]


def test_python_side_reproduces_the_spec_vectors():
    # the Python implementation is only a witness if it gets the spec's own numbers
    toks = list(range(1, 13))
    got = mm_block_hashes(toks, 4, 1337, [])
    assert [b for b, _, _ in got] == [14643705804678351452, 16777012769546811212,
                                     483935686894639516]
    assert [p for _, _, p in got] == SPEC_PLHS[:3]
    assert plh(0xABCDEF0123456789, 0x1234567890ABCDEF, 256) == SPEC_PLHS[3]
    assert plh(0x5555666677778888, 0x1111222233334444, 65536) == SPEC_PLHS[4]
    assert plh(0xAA, 0x11, 5) == SPEC_PLHS[5]
    assert router_hashes(list(range(13, 17)), 4, 1337) == [135165725823939817]
    assert salt_hash(lora="alpha-7b") == 723495307357893745
    assert salt_hash(namespace="tenant-a") == 1948188790972764086


def test_base58_display_against_python():
    for v in SPEC_PLHS:
        assert c_display(v) == display(v)
        assert c_parse(display(v)) == v
    rnd = random.Random(7)
    for _ in range(2000):
        pos = rnd.choice([0, 1, 5, 255, 256, 65535, 65536, rnd.randrange(2 ** 24)])
        cur = rnd.choice([0, 1, 2 ** 64 - 1, rnd.getrandbits(64), rnd.getrandbits(20)])
        par = None if pos == 0 else rnd.getrandbits(64)
        v = plh(cur, par, pos)
        assert c_display(v) == display(v), hex(v)
        assert c_parse(display(v)) == v


def test_base58_parse_rejects():
    root = display(SPEC_PLHS[0])
    child = display(SPEC_PLHS[1])
    einval, erange = -22, -34
    for bad in ["", ":", "0", "0:", "x:" + root[2:], "00:" + root[2:], root + ":1",
                child.rsplit(":", 1)[0], "1:" + root[2:] + "0", "0:1" + root[2:],
                "0:" + root[2:] + "l", "0:" + "z" * 12, "0:zzzzzzzzzzz", "-1:" + root[2:]]:
        assert c_parse(bad) == einval, bad
    assert c_parse("16777216:" + child.split(":", 1)[1]) == erange
    # a fragment wider than the mode's 54 bits
    assert c_parse("1:%s:%s" % (b58((1).to_bytes(8, "big")),
                                 b58((2 ** 54).to_bytes(8, "big")))) == erange


def test_multimodal_against_python():
    rnd = random.Random(11)
    for _ in range(400):
        bs = rnd.choice([1, 2, 4, 8, 16])
        n = rnd.randrange(0, 6 * bs + 3)
        toks = [rnd.getrandbits(32) for _ in range(n)]
        runs, pos = [], 0
        while pos < n and rnd.random() < 0.7:
            off = pos + rnd.randrange(0, 2 * bs + 1)
            ln = rnd.randrange(1, 2 * bs + 2)
            if off + ln > n:
                break
            runs.append((rnd.getrandbits(64), off, ln))
            pos = off + ln
        rnd.shuffle(runs)
        salt = rnd.choice([0, 1337, rnd.getrandbits(64)])
        assert c_mm(toks, bs, salt, runs) == mm_block_hashes(toks, bs, salt, runs), (bs, runs)


def test_multimodal_without_runs_is_the_plain_hash_and_bad_runs_fail():
    toks = list(range(1, 13))
    assert c_mm(toks, 4, 1337, []) == mm_block_hashes(toks, 4, 1337, [])
    # a run that covers no complete block's slot changes nothing there
    assert c_mm(toks + [9], 4, 1337, [(5, 12, 1)]) == mm_block_hashes(toks, 4, 1337, [])
    for runs in [[(1, 0, 0)], [(1, 10, 3)], [(1, 2, 3), (2, 4, 2)], [(1, 2 ** 64 - 1, 2)]]:
        assert c_mm(toks, 4, 0, runs) == -22, runs


def test_router_against_python():
    rnd = random.Random(13)
    for _ in range(400):
        bs = rnd.choice([1, 3, 4, 16, 32])
        n = rnd.randrange(0, 5 * bs + 3)
        toks = [rnd.getrandbits(32) for _ in range(n)]
        eagle = rnd.random() < 0.5
        mm = [[rnd.getrandbits(64) for _ in range(rnd.randrange(0, 4))]
              for _ in range(rnd.randrange(0, 6))]
        seed = salt_hash(rnd.choice([None, "tenant-a"]), rnd.choice([None, "alpha-7b"]))
        assert c_router(toks, bs, seed, mm, eagle) == router_hashes(toks, bs, seed, mm, eagle)
    # EAGLE: (n - 1) // bs blocks, each one token wider
    assert len(c_router(list(range(17)), 4, 1337, eagle=True)) == 4
    assert len(c_router(list(range(16)), 4, 1337, eagle=True)) == 3
    assert c_router([], 4, 1337, eagle=True) == []
    assert lib.kvbm_salt_hash(b"tenant-a", b"alpha-7b") == salt_hash("tenant-a", "alpha-7b")
    assert lib.kvbm_mm_pad_value(2 ** 64 - 1) == 1000000 + 2 ** 30 - 1


def print_vectors():
    """The vectors tests/check_hash.c holds (python3 -c 'import ...; print_vectors()')."""
    toks = list(range(1, 13))
    print("display", [display(v) for v in SPEC_PLHS])
    mm = mm_block_hashes(toks, 4, 1337, [(0xDEADBEEF, 2, 5)])
    print("mm", [(b, s, hex(p)) for b, s, p in mm])
    print("router mm", router_hashes(toks, 4, 1337, [None, [3, 1, 2]]))
    print("router eagle", router_hashes(toks, 4, 1337, eagle=True))


if __name__ == "__main__":
    print_vectors()
