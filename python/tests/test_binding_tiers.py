# SPDX-License-Identifier: Apache-2.0
"""Tiers from Python: the tier keyword, kvbm.tiers_presence, kvbm.Onboarding
(plan, copy, complete / abort) between a G1 and a G2 pool."""

import pytest

import kvbm

BS = 4


def tokens(nblocks, start=1000):
    return list(range(start, start + nblocks * BS))


def cache(pool, hashes):
    """Registers @hashes (a prefix of the request) and releases them."""
    b = pool.allocate(len(hashes))
    pool.stage(b, hashes)
    pool.register(b)
    pool.release(b)


@pytest.fixture
def two_tiers(pool_name):
    with kvbm.Pool(pool_name + "-g1", create=True, block_count=32, block_size=BS,
                   tier="device") as g1, \
            kvbm.Pool(pool_name + "-g2", create=True, block_count=64, block_size=BS,
                      tier="G2") as g2:
        yield g1, g2
    for n in (pool_name + "-g1", pool_name + "-g2"):
        kvbm.destroy(n, force=True)


def test_tier_keyword(two_tiers, pool_name):
    g1, g2 = two_tiers
    assert (g1.tier, g1.storage_tier) == ("G1", "device")  # stored as its G name
    assert (g2.tier, g2.storage_tier) == ("G2", "host_pinned")
    with kvbm.Pool(pool_name + "-g2", tier="host_pinned") as q:  # the same tier
        assert q.tier == "G2"
    with pytest.raises(kvbm.Mismatch, match="tier"):
        kvbm.Pool(pool_name + "-g2", tier="G3")
    for bad in ("G5", "gpu", "", "g1", 2):
        with pytest.raises(ValueError, match="tier"):
            kvbm.Pool(pool_name + "-x", create=True, tier=bad)
    assert kvbm.TIERS[3] == ("G3", "disk")


def test_tiers_presence(two_tiers):
    g1, g2 = two_tiers
    h = kvbm.hash_tokens(tokens(6), BS)
    cache(g1, h[:2])
    cache(g2, h[:5])
    assert kvbm.tiers_presence([g1, g2], h) == [3, 3, 2, 2, 2, 0]
    assert kvbm.tiers_presence([g2], h[4:]) == [1, 0]
    with pytest.raises(ValueError):
        kvbm.tiers_presence([], h)


def test_onboarding_complete(two_tiers):
    g1, g2 = two_tiers
    t = tokens(8)
    h = kvbm.hash_tokens(t, BS)
    cache(g1, h[:2])
    cache(g2, h[:6])
    held = g2.match(h[:6])
    kv1, kv2 = {}, {b.id: "kv%d" % i for i, b in enumerate(held)}  # G2's bytes
    g2.release(held)
    with kvbm.Onboarding(g1, g2, h) as plan:
        assert (plan.matched, plan.count) == (2, 4)
        pairs = plan.pairs()
        assert [pos for pos, _, _ in pairs] == [2, 3, 4, 5]
        assert g1.available() == 32 - 2 - 4
        for pos, src, dst in pairs:
            kv1[dst.id] = kv2[src.id]
        blocks = plan.complete(t)
        assert plan.pairs() == []
    assert len(blocks) == 6
    assert [kv1[b.id] for b in blocks[2:]] == ["kv2", "kv3", "kv4", "kv5"]
    assert g1.presence(h) == [True] * 6 + [False] * 2
    g1.release(blocks)
    assert g1.available() == 32


def test_onboarding_abort_and_errors(two_tiers, pool_name):
    g1, g2 = two_tiers
    h = kvbm.hash_tokens(tokens(6), BS)
    cache(g2, h)
    plan = kvbm.Onboarding(g1, g2, h)
    assert (plan.matched, plan.count) == (0, 6)
    plan.abort()
    assert g1.available() == 32 and g2.available() == 64
    with pytest.raises(kvbm.WrongState):
        plan.complete()
    plan.close()
    with kvbm.Onboarding(g1, g2, h) as plan:  # left without complete: aborted
        assert g1.available() == 26
    assert g1.available() == 32 and g2.available() == 64
    with pytest.raises(kvbm.InvalidArgument):
        kvbm.Onboarding(g1, g1, h)
    with kvbm.Pool(pool_name + "-g2") as again, pytest.raises(kvbm.ForeignHandle):
        kvbm.Onboarding(again, g2, h)
