# SPDX-License-Identifier: Apache-2.0
"""An inference engine process whose KV cache is shared through a kvbm pool.

Every engine process of the node attaches to one kvbm pool (which block
holds which prefix, who holds it) and maps one shared KV array (the blocks'
keys and values, indexed by kvbm block id). A request's prompt is hashed
block by block; the engine takes holds on the longest registered prefix,
computes only the rest, writes the new KV into blocks it allocated, and
registers each complete block once its KV is written, so that the other
engines can reuse it. docs/ENGINE.md explains the protocol.

Run as a worker of the chat workload (python/examples/demo.py starts them):
    python3 engine.py --workload FILE --out DIR --worker I --workers N
"""
import argparse
import glob
import json
import mmap
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

import kvbm
from tinylm import F32, Config, TinyLM, full_recompute

KV_MAGIC = b"kvbm-engine-kv 1\n"
KV_HEADER = 4096


def kv_path(pool_name):
    """The shared KV file of pool `pool_name`, next to its segment."""
    d = os.environ.get("KVBM_SHM_DIR", "/dev/shm")
    return os.path.join(d, "kvbm-kv." + pool_name.lstrip("/"))


class SharedKV:
    """The paged KV cache of a pool: [block_count] blocks of float32.

    One file in $KVBM_SHM_DIR (default /dev/shm), mapped by every engine.
    The first process creates it (header + size written to a private
    temporary file, then linked under the name, so no one ever sees it half
    made); the others check that its header (model geometry) and size agree
    with theirs before using it.
    """

    def __init__(self, pool_name, block_count, block_size, cfg):
        self.path = kv_path(pool_name)
        self.shape = (block_count,) + cfg.kv_block_shape(block_size)
        header = json.dumps({"block_count": block_count, "block_size": block_size,
                             "block_shape": list(cfg.kv_block_shape(block_size)),
                             "dtype": "float32"}, sort_keys=True).encode()
        header = KV_MAGIC + header + b"\n"
        self.size = KV_HEADER + int(np.prod(self.shape)) * 4
        fd = self._open_or_create(header)
        try:
            st = os.fstat(fd)
            found = os.pread(fd, len(header), 0)
            if found != header or st.st_size != self.size:
                raise ValueError(
                    f"{self.path} is a KV file for another pool geometry or model "
                    f"(header {found[:200]!r}, {st.st_size} bytes; this engine needs "
                    f"{header!r}, {self.size} bytes): remove it or use another pool name")
            self._mm = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        self.blocks = np.ndarray(self.shape, F32, buffer=self._mm, offset=KV_HEADER)

    def _open_or_create(self, header):
        try:
            return os.open(self.path, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            pass
        tmp = f"{self.path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.pwrite(fd, header, 0)
            os.ftruncate(fd, self.size)
            try:
                os.link(tmp, self.path)
            except FileExistsError:  # another engine made it first: use theirs
                os.close(fd)
                fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW)
            return fd
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(tmp)

    def close(self):
        self.blocks = None
        try:
            self._mm.close()
        except BufferError:  # a view is still alive somewhere: the GC unmaps it
            pass

    @staticmethod
    def remove(pool_name):
        """Removes the KV file, and the temporary files of creators killed
        before they could link theirs."""
        path = kv_path(pool_name)
        for p in [path] + glob.glob(glob.escape(path) + ".tmp*"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _die_hook():
    """KVBM_ENGINE_DIE="point:n": SIGKILL ourselves at the n-th `point`.

    For the crash tests only: they kill engines in exactly the states that
    matter (holding matched blocks, after allocate before register, between
    stage and register, mid-prefill, mid-decode), besides at random times.
    """
    spec = os.environ.get("KVBM_ENGINE_DIE")
    if not spec:
        return lambda point: None
    where, n = spec.split(":")
    seen = [0]

    def hook(point):
        if point == where:
            seen[0] += 1
            if seen[0] == int(n):
                os.kill(os.getpid(), signal.SIGKILL)
    return hook


@dataclass
class Result:
    tokens: list
    logits: np.ndarray        # [n_new, vocab]: the logits that chose each token
    prompt_len: int
    cached: int               # prompt tokens whose KV came from the pool
    computed: int             # prompt tokens computed here
    prefill_s: float
    decode_s: float
    registered: int = 0       # blocks this request registered
    from_others: int = 0      # cached tokens of blocks this process never registered
    extra: dict = field(default_factory=dict)


class Engine:
    """One engine process: a model, the pool, the shared KV array."""

    def __init__(self, pool, kv, model, share=True, alloc_timeout=30.0):
        if kv.shape[0] != pool.block_count or kv.shape[3] != pool.block_size:
            raise ValueError(f"KV array of {kv.shape[0]} blocks of {kv.shape[3]} "
                             f"does not fit the pool ({pool.block_count} of {pool.block_size})")
        self.pool, self.kv, self.model = pool, kv, model
        self.share = share
        self.alloc_timeout = alloc_timeout
        self.die = _die_hook()
        self.mine = set()     # hashes this process registered (for the demo's count)

    def _allocate(self, n):
        """n MUTABLE blocks, waiting while other requests hold the pool full."""
        deadline = time.monotonic() + self.alloc_timeout
        while True:
            try:
                return self.pool.allocate(n)
            except kvbm.NoSpace:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def serve(self, prompt, n_new):
        """Prefill `prompt` (reusing what the pool has), then n_new tokens."""
        pool, bs, model = self.pool, self.pool.block_size, self.model
        if not prompt or n_new < 1:
            raise ValueError("a request needs a prompt and n_new >= 1")
        vocab = model.cfg.vocab
        if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool)
                   and 0 <= t < vocab for t in prompt):
            raise ValueError(f"prompt token ids must be ints in 0..{vocab - 1}")
        if len(prompt) + n_new > model.cfg.max_positions:
            raise ValueError(f"{len(prompt)} prompt + {n_new} new tokens exceed the "
                             f"model's {model.cfg.max_positions} positions")
        hashes = kvbm.hash_tokens(prompt, bs)
        # Never match the block holding the last prompt token: its logits
        # choose the first new token, so it is computed even on a full hit.
        cap = (len(prompt) - 1) // bs
        matched, slots = None, []   # every handle of this request
        try:
            t0 = time.perf_counter()
            matched = pool.match(hashes[:cap if self.share else 0])
            self.die("matched")
            m = len(matched)
            others = sum(hashes.plh_bytes(i) not in self.mine for i in range(m)) * bs
            need = (len(prompt) + n_new - 1 + bs - 1) // bs - m
            new = self._allocate(need)
            slots = [new[j:j + 1] for j in range(need)]   # one handle per new block
            self.die("allocated")
            # (an empty Blocks' .ids raises in the binding's first commit)
            table = [b.id for b in matched] + [b.id for b in new]
            registered = [0]

            def on_block(i):
                # Block i's KV is written: only now may others read it.
                self.die("written")
                if not self.share or i < m:
                    return
                j = i - m
                pool.stage(slots[j], hashes[i:i + 1])
                self.die("staged")
                slots[j] = pool.register(slots[j], tokens=prompt[i * bs:(i + 1) * bs])
                registered[0] += 1
                self.mine.add(hashes.plh_bytes(i))

            first = model.prefill(prompt, m * bs, self.kv.blocks, table, bs, on_block)
            t1 = time.perf_counter()
            self.die("prefilled")
            toks, logits = model.decode(first, n_new, len(prompt), self.kv.blocks, table, bs)
            t2 = time.perf_counter()
            return Result(toks, logits, len(prompt), m * bs, len(prompt) - m * bs,
                          t1 - t0, t2 - t1, registered[0], others)
        finally:
            # (only non-empty parts: the binding's first commit refuses to
            # release an empty concat as a ForeignHandle)
            held = [b for b in ([matched] if matched is not None else []) + slots if len(b)]
            if held:
                pool.release(kvbm.Blocks.concat(*held))


# ---- the chat workload ---------------------------------------------------

def make_workload(seed=7, chats=16, turns=4, system_len=256, user_len=(24, 64),
                  n_new=16, block_size=16, block_count=1024, model=None):
    """A system prompt all chats share, and each chat's user turns."""
    cfg = model or Config()
    rng = np.random.default_rng(seed)
    tok = lambda n: [int(t) for t in rng.integers(0, cfg.vocab, n)]  # noqa: E731
    return {
        "system": tok(system_len),
        "chats": [[tok(int(rng.integers(user_len[0], user_len[1] + 1)))
                   for _ in range(turns)] for _ in range(chats)],
        "n_new": n_new, "block_size": block_size, "block_count": block_count,
        "model": cfg.__dict__.copy(),
    }


def owner(chat, turn, workers):
    """Which engine serves a turn: no session affinity, each turn of a chat
    goes to the next engine, which finds the history's KV made by another."""
    return (chat + turn) % workers


def result_path(out, chat, turn):
    return os.path.join(out, f"c{chat:03d}_t{turn:02d}.npz")


def prompt_of(workload, chat, turn, answers):
    """System prompt + the chat's history + this turn's user message."""
    p = list(workload["system"])
    for t in range(turn):
        p += workload["chats"][chat][t] + [int(a) for a in answers[t]]
    return p + workload["chats"][chat][turn]


def load_result(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _wait_for(path, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {path}: is its engine running?")
        time.sleep(0.003)
    return load_result(path)


def _save(path, prompt, res, worker):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, prompt=np.asarray(prompt, np.int64), tokens=np.asarray(res.tokens, np.int64),
                 logits=res.logits, cached=res.cached, computed=res.computed,
                 prefill_s=res.prefill_s, decode_s=res.decode_s,
                 registered=res.registered, from_others=res.from_others, worker=worker,
                 pid=os.getpid())
    os.replace(tmp, path)   # a result exists whole or not at all


def run_worker(workload, pool_name, out, worker, workers, share=True, wait_timeout=120.0):
    """Serves this worker's turns, turn by turn; skips turns already done
    (a restarted engine resumes where the killed one stopped)."""
    cfg = Config(**workload["model"])
    bs, nblocks = workload["block_size"], workload["block_count"]
    model = TinyLM(cfg)
    with kvbm.Pool(pool_name, create=True, block_count=nblocks, block_size=bs) as pool:
        kv = SharedKV(pool_name, nblocks, bs, cfg)
        try:
            eng = Engine(pool, kv, model, share=share)
            chats = workload["chats"]
            for turn in range(max(len(c) for c in chats)):
                for chat in range(len(chats)):
                    if turn >= len(chats[chat]) or owner(chat, turn, workers) != worker:
                        continue
                    path = result_path(out, chat, turn)
                    if os.path.exists(path):
                        continue
                    answers = [_wait_for(result_path(out, chat, t), wait_timeout)["tokens"]
                               for t in range(turn)]
                    prompt = prompt_of(workload, chat, turn, answers)
                    _save(path, prompt, eng.serve(prompt, workload["n_new"]), worker)
        finally:
            kv.close()


def reference(workload):
    """Every chat's turns in one process with no cache: {(chat, turn): (prompt, tokens, logits)}."""
    model = TinyLM(Config(**workload["model"]))
    bs, out = workload["block_size"], {}
    for chat, turns in enumerate(workload["chats"]):
        answers = []
        for turn in range(len(turns)):
            prompt = prompt_of(workload, chat, turn, answers)
            toks, logits = full_recompute(model, prompt, workload["n_new"], bs)
            answers.append(toks)
            out[chat, turn] = (prompt, toks, logits)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", required=True, help="JSON file from make_workload()")
    ap.add_argument("--pool", required=True, help="kvbm pool name")
    ap.add_argument("--out", required=True, help="directory for the results")
    ap.add_argument("--worker", type=int, required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--no-share", action="store_true",
                    help="neither match nor register: every prompt computed in full")
    a = ap.parse_args(argv)
    if not 0 <= a.worker < a.workers:
        ap.error(f"--worker {a.worker} must be in 0..{a.workers - 1}")
    with open(a.workload) as f:
        workload = json.load(f)
    run_worker(workload, a.pool, a.out, a.worker, a.workers, share=not a.no_share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
