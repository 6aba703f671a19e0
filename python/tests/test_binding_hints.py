# SPDX-License-Identifier: Apache-2.0
"""Release hints through the binding (Pool.release(..., hint=),
Pool.hint_stats()): a bad hint raises and releases nothing; the pool
learns a hint's weight from how often it is right, follows right hints
(more hits) and ignores wrong ones (no fewer hits than without hints); a
hint given by another process moves its block in the order this one
evicts in."""

import multiprocessing as mp

import pytest

import kvbm

BS = 4


def one(t):
    """The hash of a one-block sequence of its own (a root, so a leaf)."""
    return kvbm.hash_tokens(list(range(t * BS, t * BS + BS)), BS)


def register(p, h):
    b = p.allocate(1)
    p.stage(b, h)
    p.register(b)
    return b


def test_bad_hint_raises_and_releases_nothing(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=16, block_size=BS) as p:
        b = register(p, one(1))
        for bad in ("sometimes", "ONESHOT", 3, 2**31):
            with pytest.raises(kvbm.BadReleaseHint) as e:
                p.release(b, hint=bad)
            assert "hint" in str(e.value)
        with pytest.raises(TypeError):
            p.release(b, hint=1.5)
        assert p.block_info(b)["holds"] == 1  # still ours
        assert issubclass(kvbm.BadReleaseHint, kvbm.KvbmError)
        p.release(b, hint="oneshot")
        assert p.metrics()["inactive_pool_size"] == 1
        assert p.check(lock=True, quiescent=True) == []


def workload(p, new_hint, hot_hint, rounds=2400):
    """Each round a new block nobody asks for again, then one block of a
    hot set of 20 and one of 30 asked for again (every 20 and 30 rounds):
    64 blocks hold both hot sets only if the new blocks go first. Returns
    the hot hits of the last 500 rounds (1000 asked)."""
    a = [one(10 + j) for j in range(20)]
    b = [one(1000 + j) for j in range(30)]
    hits = []
    for r in range(rounds):
        p.release(register(p, one(100000 + r)), hint=new_hint)
        for h in (a[r % 20], b[r % 30]):
            m = p.match(h)
            hits.append(len(m))
            p.release(m if len(m) else register(p, h), hint=hot_hint)
    return sum(hits[-1000:])


@pytest.mark.parametrize("backend", ["lineage", "lru", "lfru"])
def test_right_hints_followed_wrong_ones_ignored(pool_name, backend):
    def run(new_hint, hot_hint):
        name = "%s-%s-%s" % (pool_name, new_hint, hot_hint)
        with kvbm.Pool(name, create=True, block_count=64, block_size=BS,
                       backend=backend) as p:
            hits = workload(p, new_hint, hot_hint)
            st = p.hint_stats()
            assert p.check(lock=True, quiescent=True) == []
        kvbm.destroy(name, force=True)
        return hits, st

    none, _ = run(None, None)
    right, st = run("oneshot", "none")
    wrong, stw = run("none", "oneshot")
    # the record: the control sample of the one-shot blocks never came back
    assert st["oneshot"]["reused"] == 0 and st["oneshot"]["unused"] > 64
    assert st["oneshot"]["weight"] == 1.0 and st["oneshot"]["boost"] > 0
    # every hot block hits; lfru's frequency alone keeps them already
    assert right == 1000 and (right > none or backend == "lfru")
    # hot blocks called one-shot: they come back (if the control sample
    # has any), the rest are no better than the one-shot blocks: no weight
    assert stw["oneshot"]["weight"] == 0
    assert wrong >= none


def _release_oneshot(name, q):
    try:
        with kvbm.Pool(name) as p:
            p.release(register(p, one(7)), hint="oneshot")
        q.put(None)
    except BaseException as e:  # the parent reports it
        q.put(repr(e))


def test_hint_from_another_process_moves_its_block(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=64, block_size=BS) as p:
        workload(p, "oneshot", "none", rounds=1500)  # the record trusts ONESHOT now
        assert p.hint_stats()["oneshot"]["weight"] == 1.0
        p.release(register(p, one(5)), hint="none")
        q = mp.get_context("fork").Queue()
        w = mp.get_context("fork").Process(target=_release_oneshot, args=(pool_name, q))
        w.start()
        assert q.get(timeout=30) is None
        w.join(30)
        assert w.exitcode == 0
        # the other process's block went in last, ONESHOT: unhinted it
        # would go last of the 64, now it goes a horizon early, among the
        # first few and before the unhinted block released before it
        assert p.available() == 64 and p.metrics()["reset_pool_size"] == 0
        x, y = one(7).plh_bytes(0), one(5).plh_bytes(0)
        taken, before = [], []
        while not before or before[-1] != x:
            got, ev = p.allocate(1, evicted=True)
            taken.append(got)
            before.append(ev.plh_bytes(0))
            assert len(before) <= 20, "the ONESHOT block was not evicted early"
        assert y not in before
        for got in taken:
            p.release(got)
        assert p.check(lock=True, quiescent=False) == []
