# SPDX-License-Identifier: Apache-2.0
"""Several Python processes on one pool: a prefix registered by one is
matched by another (same block ids), a SIGKILLed holder's blocks come back
after reap()."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys

import kvbm

BS = 4
PKG = os.path.dirname(os.path.dirname(os.path.abspath(kvbm.__file__)))

# a second process: registers a prefix (keeping its holds) and allocates
# mutable blocks, prints what it has, then waits to be killed
OWNER = r"""
import sys, kvbm
name, n = sys.argv[1], int(sys.argv[2])
p = kvbm.Pool(name)
toks = list(range(1, 1 + n * p.block_size))
h = kvbm.hash_tokens(toks, p.block_size)
b = p.allocate(n)
p.stage(b, h)
p.register(b, toks)
scratch = p.allocate(5)
print(" ".join(map(str, b.ids)), flush=True)
print(h.plh_bytes(n - 1).hex(), flush=True)
sys.stdin.read()
"""


def spawn_owner(name, n):
    env = dict(os.environ, PYTHONPATH=PKG + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", OWNER, name, str(n)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ids = [int(x) for x in proc.stdout.readline().split()]
    last = proc.stdout.readline().strip()
    return proc, ids, last


def test_other_process_prefix_is_matched_and_reaped_after_sigkill(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=64, block_size=BS,
                   event_ring=256) as pool:
        proc, ids, last = spawn_owner(pool_name, 6)
        try:
            assert len(ids) == 6
            h = kvbm.hash_tokens(list(range(1, 1 + 6 * BS)), BS)
            assert h.plh_bytes(5).hex() == last  # the same hashes in both processes
            m = pool.match(h)
            assert m.ids.tolist() == ids  # the other process's blocks
            info = pool.block_info(m[0])
            assert info["holder_procs"] == 2 and info["holds"] == 1
            assert pool.available() == 64 - 6 - 5
            assert pool.info()["procs_attached"] == 2
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert pool.reap() == 1
        assert pool.info()["procs_attached"] == 1
        assert pool.block_info(m[0])["holder_procs"] == 1  # ours is left
        assert pool.available() == 64 - 6  # its mutable blocks are free again
        pool.release(m)
        assert pool.available() == 64
        assert pool.check(lock=True, quiescent=True) == []


def _worker(name, start, rounds, q):
    """A forked worker: opens its own attachment (none was open at fork)."""
    try:
        with kvbm.Pool(name) as p:
            shared = kvbm.hash_tokens(list(range(1, 1 + 8 * BS)), BS)
            hits = 0
            for r in range(rounds):
                m = p.match(shared)
                hits += len(m)
                if len(m) < len(shared):
                    rest = shared[len(m):]
                    b = p.allocate(len(rest))
                    p.stage(b, rest)
                    p.register(b)
                    m = m + b
                own = kvbm.hash_tokens(list(range(start + r * 100, start + r * 100 + 4 * BS)), BS)
                b = p.allocate(4)
                p.stage(b, own)
                p.register(b)
                p.release(b)
                p.release(m)
            q.put(("ok", hits, p.match(shared).ids.tolist()))
    except BaseException as e:  # report, never hang the parent
        q.put(("error", repr(e), None))


def test_forked_workers_share_one_prefix(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=256, block_size=BS):
        pass  # created; no attachment is open while we fork
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ws = [ctx.Process(target=_worker, args=(pool_name, 10**6 * (i + 1), 200, q))
          for i in range(3)]
    for w in ws:
        w.start()
    res = [q.get(timeout=60) for _ in ws]
    for w in ws:
        w.join(30)
        assert w.exitcode == 0
    assert all(r[0] == "ok" for r in res), res
    # everyone ends up on the same 8 blocks of the shared prefix
    assert len({tuple(r[2]) for r in res}) == 1 and len(res[0][2]) == 8
    assert sum(r[1] for r in res) > 8 * 200  # later rounds hit what others registered
    with kvbm.Pool(pool_name) as p:
        # the workers' final match holds died with them: reaped at check
        assert p.check(lock=True) == []
        assert p.available() == 256


def test_child_of_a_pool_holder_sees_forked(pool_name):
    """multiprocessing's fork start method after a pool is open: the
    inherited Pool refuses to work (Forked) instead of corrupting the
    parent's holds; a fresh Pool in the child works."""
    with kvbm.Pool(pool_name, create=True, block_count=16, block_size=BS) as pool:
        b = pool.allocate(2)
        ctx = mp.get_context("fork")
        q = ctx.Queue()

        def child():
            out = []
            try:
                pool.release(b)
            except kvbm.Forked as e:
                out.append(type(e).__name__)
            with kvbm.Pool(pool_name) as mine:
                out.append(mine.available())
            q.put(out)

        pr = ctx.Process(target=child)
        pr.start()
        got = q.get(timeout=30)
        pr.join(30)
        assert pr.exitcode == 0 and got == ["Forked", 14]
        pool.release(b)
        assert pool.check(lock=True) == []
