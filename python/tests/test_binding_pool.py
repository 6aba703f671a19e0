# SPDX-License-Identifier: Apache-2.0
"""The Pool API from one process: lifecycle, the block life cycle, matching,
metrics, stats, events."""

import errno

import numpy as np
import pytest

import kvbm

BS = 4


def tokens(nblocks, start=1):
    return list(range(start, start + nblocks * BS))


def fill(pool, nblocks, start=1):
    """Registers @nblocks blocks of fresh tokens; returns (Blocks held, Hashes)."""
    t = tokens(nblocks, start)
    h = kvbm.hash_tokens(t, BS)
    b = pool.allocate(nblocks)
    pool.stage(b, h)
    pool.register(b, t)
    return b, h


@pytest.mark.parametrize("backend", kvbm.BACKENDS)
def test_every_backend_evicts_by_its_order(pool_name, backend):
    """BACKENDS names the C library's backends in its order: a pool made
    with each reports it back and evicts (4 blocks, a chain of 4 cached,
    then 2 allocated: the chain's last two go, leaves first where the
    backend keeps the prefix tree)."""
    with kvbm.Pool(pool_name, create=True, block_count=4, block_size=BS,
                   backend=backend) as p:
        assert p.info()["config"]["backend"] == backend == p.backend
        b, h = fill(p, 4)
        p.release(b)
        got = p.allocate(2)
        assert p.available() == 2  # the other two, still cached
        if backend not in ("lru", "fifo", "multi-lru"):
            m = p.match(h)
            assert len(m) == 2  # the prefix stays, its leaves went
            p.release(m)
        p.release(got)


def test_create_attach_properties_and_close(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=32, block_size=8, tier="G2",
                   backend="lru", dup_policy="reject", max_procs=4) as p:
        assert (p.name, p.block_size, p.block_count, p.tier) == (pool_name, 8, 32, "G2")
        info = p.info()
        assert info["initialized_by_me"] and info["config"]["backend"] == "lru"
        assert info["config"]["dup_policy"] == "reject" and info["config"]["max_procs"] == 4
        assert p.available() == p.total() == 32
        with kvbm.Pool(pool_name) as q:  # attach: config read from the pool
            assert (q.block_size, q.block_count, q.tier) == (8, 32, "G2")
            assert not q.info()["initialized_by_me"]
            assert q.info()["procs_attached"] == 2
        with pytest.raises(kvbm.Mismatch, match="block_size"):
            kvbm.Pool(pool_name, block_size=16)
        with pytest.raises(kvbm.Mismatch):
            kvbm.Pool(pool_name, create=True, block_count=64, block_size=8)
        with pytest.raises(kvbm.PoolExists):
            kvbm.Pool(pool_name, create=True, exclusive=True, block_count=32, block_size=8)
        with pytest.raises(kvbm.Busy):
            kvbm.destroy(pool_name)
    assert p.closed
    p.close()  # idempotent
    kvbm.destroy(pool_name)
    with pytest.raises(kvbm.NoSuchPool):
        kvbm.destroy(pool_name)


def test_version():
    assert kvbm.__version__.count(".") == 2


def test_block_life_cycle(pool):
    b, h = fill(pool, 3)
    assert len(b) == 3 and isinstance(b, kvbm.Blocks)
    info = pool.block_info(b[0])
    assert info["state"] == "registered" and info["primary"] and info["holds"] == 1
    assert info["hash"] == h.plh_bytes(0)
    assert pool.available() == 61
    pool.release(b)
    assert pool.available() == 64  # inactive blocks count as available
    assert pool.block_info(b[1])["inactive"]
    m = pool.match(h)
    assert m.ids == b.ids and list(m) == list(b)
    two = pool.match(h[:2])
    assert two.ids.tolist() == b.ids.tolist()[:2]
    pool.release(two)
    pool.release(m)
    # a prefix stops at the first miss
    other = kvbm.hash_tokens(tokens(3, 1000), BS)
    assert len(pool.match(other)) == 0
    mixed = h[:1] + other[1:2] + h[2:]
    assert len(pool.match(mixed)) == 1
    pool.release(pool.match(h[:1]))  # the leftover hold of the previous line
    assert pool.check(lock=True, quiescent=True) == []


def test_match_scattered_scan_presence(pool):
    b, h = fill(pool, 4)
    other = kvbm.hash_tokens(tokens(4, 500), BS)
    q = h[0:1] + other[1:2] + h[2:4]
    assert pool.presence(q) == [True, False, True, True]
    hits, found = pool.match_scattered(q)
    assert found == [True, False, True, True]
    assert hits.ids.tolist() == [b.ids[0], b.ids[2], b.ids[3]]
    pool.release(hits)
    s = pool.scan(h[3:4] + h[0:1] + h[3:4], touch=True)
    assert s.ids.tolist() == [b.ids[3], b.ids[0]]
    pool.release(s)
    assert all(0 <= f <= 15 for f in pool.frequency(h))
    pool.release(b)
    assert pool.check(lock=True) == []


def test_clone_and_block_states(pool):
    b = pool.allocate(2)
    assert pool.block_info(b[0])["state"] == "mutable"
    h = kvbm.hash_tokens(tokens(2), BS)
    pool.stage(b, h)
    assert pool.block_info(b[1])["state"] == "staged"
    pool.unstage(b)
    assert pool.block_info(b[1])["state"] == "mutable"
    pool.stage(b, h)
    pool.register(b)
    c = pool.clone(b)
    assert c.ids == b.ids and pool.block_info(b[0])["holds"] == 2
    pool.release(c)
    pool.release(b)
    assert pool.check(lock=True) == []


def test_allocate_evicts_and_reports_hashes(pool):
    b, h = fill(pool, 64)
    pool.release(b)
    got, ev = pool.allocate(5, evicted=True)
    assert len(got) == 5 and len(ev) == 5
    assert set(ev.seq_hashes) <= set(h.seq_hashes)
    with pytest.raises(kvbm.NoSpace) as ei:
        pool.allocate(60)
    assert ei.value.code == -errno.ENOSPC
    with pytest.raises(kvbm.NoSpace, match="the pool has 64"):
        pool.allocate(2**31)  # refused before a 48 GiB buffer is made
    pool.release(got)
    assert pool.reset_inactive() is True
    assert pool.metrics()["inactive_pool_size"] == 0
    held, _ = fill(pool, 2)
    assert pool.reset_inactive() is False
    pool.release(held)
    assert pool.check(lock=True) == []


def test_dup_policy_reject_returns_the_primary(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=16, block_size=BS,
                   dup_policy="reject") as p:
        a, h = fill(p, 2)
        b = p.allocate(2)
        p.stage(b, h)
        p.register(b)  # updated in place to the primaries
        assert b.ids == a.ids
        p.release(b)
        p.release(a)
        assert p.check(lock=True) == []


def test_blocks_container(pool):
    b = pool.allocate(6)
    assert b[1:4].ids.tolist() == b.ids.tolist()[1:4]
    assert b[::2].ids.tolist() == b.ids.tolist()[::2]
    assert b[-1] == list(b)[-1] and b[-1].pool == pool.instance_id
    assert isinstance(b[0], kvbm.Block) and b[0].id == b.ids[0]
    assert (b[:2] + b[2:]) == b == kvbm.Blocks.concat(b[:1], b[1:3], b[3:])
    assert np.array_equal(b.ids_numpy(), np.array(b.ids, dtype=np.uint32))
    assert len(b.tobytes()) == 6 * 24
    with pytest.raises(IndexError):
        b[6]
    with pytest.raises(TypeError):
        b["x"]
    empty = b[:0] + b[6:]
    assert len(empty) == 0 and empty.pool is pool
    pool.release(empty)
    again = kvbm.Blocks.from_handles(list(b), pool)
    assert again == b
    # from ids and generations: the same handles, usable in every way
    c = kvbm.Blocks.from_ids(b.ids, b.gens, pool)
    assert c == b and list(c) == list(b) and c.pool is pool and c[1] == b[1]
    assert c[2:5] == b[2:5] and c[::2] == b[::2] and (c[:1] + c[1:]) == b
    assert np.array_equal(c[1:].ids_numpy(), b[1:].ids_numpy())
    assert b.gens.tolist() == [x.gen for x in b] and c[3:].gens.tolist() == b.gens.tolist()[3:]
    assert c[2:].ids_gens() == (tuple(b.ids[2:]), tuple(b.gens[2:]))
    assert b[:0].ids_gens() == ((), ())
    assert len(kvbm.Blocks.from_ids([], [], pool)) == 0
    for bad_ids, bad_gens in (([1 << 32], [0]), ([-1], [0]), ([1], [-1]), ([1, 2], [0]),
                              (["x"], [0])):
        with pytest.raises(ValueError, match="from_ids"):
            kvbm.Blocks.from_ids(bad_ids, bad_gens, pool)
    pool.release(b[:3])
    pool.release([b[3], b[4]])  # Block values are accepted too
    pool.release(b[5])
    assert pool.available() == 64
    assert repr(b).startswith("<kvbm.Blocks 6: ids ")


def test_metrics_prometheus_stats(pool):
    b, h = fill(pool, 3)
    pool.release(b)
    m = pool.metrics()
    assert m["registrations"] == 3 and m["stagings"] == 3 and m["allocations"] == 3
    assert len(m) == len(kvbm._lib.METRIC_FIELDS)
    # the mutex was held for the 3 registrations at least; the buckets are
    # cumulative, as Prometheus's are
    assert m["mutex_hold_count"] >= 3 and m["mutex_hold_ns"] > 0
    assert len(m["mutex_hold_le"]) == 5
    assert m["mutex_hold_le"] == sorted(m["mutex_hold_le"])
    assert m["mutex_hold_le"][-1] <= m["mutex_hold_count"]
    text = pool.prometheus({"instance": "a"})
    assert 'kvbm_allocations_total{pool="G1",instance="a"} 3' in text
    st = pool.stats(window=4)
    assert st.latest() is None
    assert st.sample() is True
    pool.release(pool.match(h))
    st.sample()
    w = st.window()
    assert 1 <= len(w) <= 4 and set(w[-1]) >= {"match_hit_rate", "allocation_rate"}
    st.enabled = False
    assert st.sample() is False and not st.enabled
    m2 = dict(m, allocations=m["allocations"] + 100)
    st.enabled = True
    st.sample_at(m, 10**9)
    st.sample_at(m2, 2 * 10**9)
    assert st.latest()["allocation_rate"] == pytest.approx(100.0)
    pool.close()
    with pytest.raises(kvbm.PoolClosed):
        st.sample()


def test_events_with_tokens_and_snapshot(pool):
    c0 = pool.events_head()
    b, h = fill(pool, 2)
    evs, c1 = pool.read_events(c0)
    assert [e.kind for e in evs] == ["stored", "stored"]
    assert [e.plh for e in evs] == [h.plh_bytes(0), h.plh_bytes(1)]
    assert [e.seq_hash for e in evs] == h.seq_hashes
    assert evs[0].tokens == tokens(2)[:BS] and evs[1].tokens == tokens(2)[BS:]
    assert [e.position for e in evs] == [0, 1]
    assert c1 == c0 + 2 and pool.read_events(c1) == ([], c1)
    snap, cur = pool.events_snapshot()
    assert snap[0].kind == "cleared" and [e.plh for e in snap[1:]] == [e.plh for e in evs]
    assert cur == c1
    pool.release(b)
    pool.reset_inactive()
    evs, _ = pool.read_events(c1, max=1)
    assert len(evs) == 1 and evs[0].kind == "removed"
    with pytest.raises(kvbm.OutOfRange):
        pool.read_events(c1 + 1000)


def test_event_gap(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=128, block_size=BS,
                   event_ring=64) as p:
        c0 = p.events_head()
        for i in range(3):
            b, _ = fill(p, 40, start=1 + i * 1000)
            p.release(b)
            p.reset_inactive()
        with pytest.raises(kvbm.EventGap):
            p.read_events(c0)
        assert p.check(lock=True) == []


def test_events_without_ring(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=8, block_size=BS, event_ring=0) as p:
        with pytest.raises(kvbm.NotSupported):
            p.events_head()


def test_tokens_sequence_stages_like_hash_tokens(pool):
    t = kvbm.Tokens(BS)
    t.extend(tokens(3))
    b = pool.allocate(3)
    pool.stage(b, t.hashes())
    pool.register(b)
    pool.release(b)
    m = pool.match(kvbm.hash_tokens(tokens(3), BS))
    assert m.ids == b.ids
    pool.release(m)


def test_one_thread_handle_refuses_other_threads(pool_name):
    import threading
    with kvbm.Pool(pool_name, create=True, block_count=8, block_size=BS, one_thread=True) as p:
        errs = []
        th = threading.Thread(target=lambda: errs.append(
            pytest.raises(kvbm.WrongThread, p.available)))
        th.start()
        th.join()
        assert errs and p.available() == 8


def test_threads_share_a_handle(pool):
    import threading
    h = kvbm.hash_tokens(tokens(8), BS)
    b = pool.allocate(8)
    pool.stage(b, h)
    pool.register(b)
    bad = []

    def worker():
        try:
            for _ in range(300):
                pool.release(pool.match(h))
        except Exception as e:  # pragma: no cover - reported below
            bad.append(e)

    ths = [threading.Thread(target=worker) for _ in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert bad == []
    pool.release(b)
    assert pool.check(lock=True, quiescent=True) == []


def test_empty_blocks_are_a_no_op_everywhere(pool):
    """An empty Blocks, however it was made (no parts, an empty slice,
    from no handles, without a pool), is a valid no-op for every call."""
    three = pool.allocate(3)
    empties = [kvbm.Blocks.concat(), kvbm.Blocks.concat([]), kvbm.Blocks.from_handles([]),
               kvbm.Blocks.from_handles([], pool), pool.allocate(0), three[3:]]
    for e in empties:
        assert len(e) == 0 and list(e) == []
        assert e.ids.tolist() == [] and e.ids_numpy().tolist() == []
        assert e.tobytes() == b"" and repr(e) == "<kvbm.Blocks 0: ids >"
        assert e == kvbm.Blocks.concat()
        pool.release(e)
        pool.stage(e, kvbm.Hashes.from_plh_bytes([]))
        pool.register(e)
        pool.unstage(e)
        pool.set_reset_on_release(e)
        assert len(pool.clone(e)) == 0
    b = pool.allocate(2)
    both = kvbm.Blocks.concat(kvbm.Blocks.concat(), b, kvbm.Blocks.concat())
    assert both.pool is pool and both == b == kvbm.Blocks.concat() + b
    pool.release(both + three)
    assert pool.available() == 64 and pool.check(lock=True) == []


def test_config_properties(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=32, block_size=8, tier="G2",
                   backend="fifo", dup_policy="reject", max_procs=4, event_ring=128,
                   keep_tokens=True, reset_on_release=True) as p:
        with kvbm.Pool(pool_name) as q:  # read from the pool, not from the keywords
            for x in (p, q):
                assert (x.backend, x.dup_policy, x.max_procs, x.event_ring) == \
                    ("fifo", "reject", 4, 128)
                assert x.keep_tokens is True and x.reset_on_release is True
                assert x.config == p.info()["config"]
                for k in ("mode", "uid", "gid", "tinylfu", "mlru_thresholds", "max_procs"):
                    assert getattr(x, k) == x.config[k]
                with pytest.raises(AttributeError):
                    x.backend = "lru"
    with kvbm.Pool(pool_name + "b", create=True, block_count=16, block_size=4) as d:
        assert (d.backend, d.dup_policy, d.event_ring, d.keep_tokens,
                d.reset_on_release) == ("lineage", "allow", 4096, False, False)
    kvbm.destroy(pool_name + "b")
