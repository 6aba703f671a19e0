# SPDX-License-Identifier: Apache-2.0
"""Pins held by the pool (Pool.pin_prefix): unevictable until the TTL or an
unpin, kept when the pinning process dies, bounded by pin_share."""

import os
import signal
import time

import pytest

import kvbm

BS = 4


def cached(pool, nblocks, start=1):
    """Registers @nblocks blocks and releases them (inactive); their Hashes."""
    t = list(range(start, start + nblocks * BS))
    h = kvbm.hash_tokens(t, BS)
    b = pool.allocate(nblocks)
    pool.stage(b, h)
    pool.register(b)
    pool.release(b)
    return h


def pressure(pool):
    """Takes every block allocation can get, then gives them back."""
    got = pool.allocate(pool.available())
    with pytest.raises(kvbm.NoSpace):
        pool.allocate(1)
    pool.release(got)
    return len(got)


def test_pin_survives_pressure_and_unpin_releases(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=32, block_size=BS, pin_share=50) as p:
        assert p.info()["config"]["pin_share"] == 50
        h = cached(p, 6)
        assert p.pin_prefix(h[:4], ttl=60) == 4
        info = p.pins()
        assert (info["pins"], info["blocks"], info["capacity"]) == (1, 4, 16)
        assert 50 < info["next_expiry"] <= 60
        assert pressure(p) == 28
        assert p.presence(h) == [True] * 4 + [False] * 2
        listed = p.pinned()
        assert len(listed) == 4 and sum(e["tip"] for e in listed) == 1
        assert [e["hash"] for e in listed if e["tip"]] == [h.plh_bytes(3)]
        m = p.metrics()
        assert (m["pins_active"], m["pinned_blocks"], m["pin_capacity"]) == (1, 4, 16)
        assert "kvbm_pinned_blocks{pool=\"G1\"} 4" in p.prometheus()
        assert p.unpin_prefix(h[:4]) == 4
        assert p.unpin_prefix(h[:4]) == 0
        assert p.pins()["next_expiry"] is None
        assert pressure(p) == 32
        assert p.check(lock=True, quiescent=True) == []


def test_ttl_expires_and_renewal_extends(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=16, block_size=BS, pin_share=50) as p:
        h = cached(p, 4)
        assert p.pin_prefix(h[:2], ttl=0.05) == 2
        assert p.pin_prefix(h[2:], ttl=0.3) == 2
        assert p.pin_prefix(h[2:], ttl=60) == 0  # renewed: nothing new
        time.sleep(0.4)
        assert p.expire_pins() == 2  # the short pin; the renewed one stays
        info = p.pins()
        assert (info["blocks"], info["expirations"]) == (2, 2)
        assert p.available() == 14
        assert p.metrics()["pin_expirations"] == 2


def test_bad_input_and_share(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=16, block_size=BS, pin_share=25) as p:
        h = cached(p, 6)
        other = kvbm.hash_tokens(list(range(1000, 1000 + 2 * BS)), BS)
        with pytest.raises(kvbm.NotRegistered, match=r"hashes\[0\] is not registered"):
            p.pin_prefix(other, ttl=1)
        with pytest.raises(kvbm.InvalidArgument):
            p.pin_prefix(h[:2], ttl=0)
        with pytest.raises(kvbm.InvalidArgument):
            p.pin_prefix(h[:2], ttl=-1)
        with pytest.raises(kvbm.InvalidArgument):
            p.pin_prefix(h[:2], ttl=400 * 24 * 3600)
        for bad in (float("inf"), float("nan"), 1e30):
            with pytest.raises(kvbm.InvalidArgument):
                p.pin_prefix(h[:2], ttl=bad)
        with pytest.raises(kvbm.InvalidArgument):
            p.pin_prefix(h[:0], ttl=1)
        with pytest.raises(TypeError):
            p.pin_prefix([1, 2], ttl=1)
        with pytest.raises(kvbm.PinShareExceeded, match="pin share"):
            p.pin_prefix(h[:5], ttl=60)  # the share is 4 blocks
        assert p.pin_prefix(h[:4], ttl=60) == 4
        with pytest.raises(kvbm.PinShareExceeded):
            p.pin_prefix(h[4:5], ttl=60)
        assert p.pins()["blocks"] == 4  # the refused calls changed nothing
        assert p.unpin_prefix(other) == 0
    with pytest.raises(kvbm.InvalidArgument):
        kvbm.Pool(pool_name + "x", create=True, block_count=16, pin_share=101)


def test_pin_outlives_a_killed_pinner(pool_name):
    with kvbm.Pool(pool_name, create=True, block_count=32, block_size=BS, pin_share=50) as p:
        h = cached(p, 4)
        pid = os.fork()
        if pid == 0:
            try:
                q = kvbm.Pool(pool_name)  # never closed: killed attached
                q.pin_prefix(h, ttl=60)
                os.kill(os.getpid(), signal.SIGKILL)
            finally:
                os._exit(3)
        _, st = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL
        p.reap()
        assert p.pins()["blocks"] == 4
        assert pressure(p) == 28
        assert p.presence(h) == [True] * 4
        assert p.unpin_prefix(h) == 4
        assert p.check(lock=True, quiescent=True) == []
