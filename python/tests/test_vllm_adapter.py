# SPDX-License-Identifier: Apache-2.0
"""kvbm.vllm.BlockPool against the contract vLLM's own tests check
(tests/v1/core/test_prefix_caching.py, test_kv_cache_utils.py): allocation,
prefix hits, ref counts, free order = eviction order, reset_prefix_cache,
evict_blocks, events, usage; then what only a shared pool has: two
processes sharing a prefix, and a process killed while it holds blocks.

The KVCacheManager calls are replayed by hand (lookup = vLLM's
find_longest_cache_hit, admit = allocate_slots: touch, then new blocks,
then cache_full_blocks), with real kvbm pools in /dev/shm."""

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import kvbm
from kvbm import vllm as kv
from kvbm.vllm import (AllBlocksCleared, BlockPool, BlockRemoved, BlockStored,
                       request_block_hasher)

BS = 16
_names = itertools.count()


def _destroy(name):
    try:
        kvbm.destroy(name, force=True)
    except (kvbm.KvbmError, OSError):
        pass


@pytest.fixture
def pool_name():
    name = f"kvbm-vllm-test-{os.getpid()}-{next(_names)}"
    _destroy(name)
    yield name
    try:  # every test leaves a sound pool behind
        with kvbm.Pool(name) as p:
            assert p.check(lock=True) == []
    except kvbm.NoSuchPool:
        pass
    _destroy(name)


class Request:
    """The parts of vllm.v1.request.Request that BlockPool reads."""

    def __init__(self, request_id, tokens, hasher, cache_salt=None, lora_request=None):
        self.request_id = request_id
        self.all_token_ids = list(tokens)
        self.cache_salt = cache_salt
        self.lora_request = lora_request
        self.block_hashes = []
        self._hasher = hasher
        self.block_hashes.extend(hasher(self))

    def append(self, tokens):
        self.all_token_ids.extend(tokens)
        self.block_hashes.extend(self._hasher(self))


def make_bp(name, n=11, events=True, **kw):
    return BlockPool(n, True, BS, events, pool_name=name, **kw)


def req(rid, tokens, **kw):
    return Request(rid, tokens, request_block_hasher(BS), **kw)


def lookup(bp, r):
    """vLLM's find_longest_cache_hit for one full-attention group: one
    get_cached_block per hash, up to the first miss."""
    hit = []
    for h in r.block_hashes:
        got = bp.get_cached_block(h, [0])
        if got is None:
            break
        hit.append(got[0])
    return hit


def admit(bp, r, hit, num_tokens=None):
    """allocate_slots: touch the hit, then new blocks, then cache the full ones."""
    n = len(r.all_token_ids) if num_tokens is None else num_tokens
    bp.touch((hit,))
    new = bp.get_new_blocks(-(-n // BS) - len(hit))
    blocks = hit + new
    bp.cache_full_blocks(r, blocks, len(hit), n // BS, BS, 0)
    return blocks


def finish(bp, blocks):
    """vLLM frees a request's blocks tail first: the tail is evicted first."""
    bp.free_blocks(reversed(blocks))


def ids(blocks):
    return [b.block_id for b in blocks]


# ---- single process: vLLM's own cases ---------------------------------------

def test_null_block_is_block_0_and_never_handed_out(pool_name):
    with make_bp(pool_name) as bp:
        assert bp.null_block.block_id == 0 and bp.null_block.is_null
        assert bp.get_num_free_blocks() == 10
        assert bp.get_usage() == 0.0
        got = bp.get_new_blocks(10)
        assert sorted(ids(got)) == list(range(1, 11))
        assert all(b.ref_cnt == 1 and b.block_hash is None for b in got)
        assert bp.get_usage() == 1.0
        with pytest.raises(ValueError, match="Cannot get 1 free blocks"):
            bp.get_new_blocks(1)
        # the null block in a free list is skipped, as vLLM does
        bp.free_blocks([bp.null_block] + got)
        assert bp.get_num_free_blocks() == 10


def test_failed_free_gives_back_exactly_what_it_took(pool_name):
    """A free_blocks() that finds a block this process does not use undoes
    its decrements before it raises: the null block taken from 1 to 0
    included (it stayed at 0, and its later frees were ignored)."""
    with make_bp(pool_name) as bp:
        null = bp.null_block
        bp.touch([null])
        assert null.ref_cnt == 1
        got = bp.get_new_blocks(2)
        bp.free_blocks([got[1]])
        with pytest.raises(ValueError, match="freed twice"):
            bp.free_blocks([null, got[0], got[1]])
        assert null.ref_cnt == 1 and got[0].ref_cnt == 1 and got[1].ref_cnt == 0
        bp.free_blocks([null, got[0]])
        assert null.ref_cnt == 0 and got[0].ref_cnt == 0
        assert bp.pool.check(lock=True) == []


def test_prefill_prefix_hit_and_ref_counts(pool_name):
    """test_prefill: a second request with the same 3-block prefix hits
    those blocks, ref_cnt counts both requests, frees count down."""
    common = list(range(3 * BS))
    with make_bp(pool_name) as bp:
        r0 = req("0", common + [100] * 7)
        assert lookup(bp, r0) == []
        b0 = admit(bp, r0, [])
        assert ids(b0) == [1, 2, 3, 4]
        assert [b.ref_cnt for b in b0] == [1, 1, 1, 1]
        for i, b in enumerate(b0[:3]):
            assert b.block_hash == kv.make_block_hash_with_group_id(r0.block_hashes[i], 0)
        assert b0[3].block_hash is None  # partial block: not cached

        r1 = req("1", common + [200] * 5)
        hit = lookup(bp, r1)
        assert ids(hit) == [1, 2, 3]
        b1 = admit(bp, r1, hit)
        assert ids(b1) == [1, 2, 3, 5]
        assert [b.ref_cnt for b in b1] == [2, 2, 2, 1]
        assert bp.get_num_free_blocks() == 11 - 1 - 5

        finish(bp, b0)
        assert [b.ref_cnt for b in b1] == [1, 1, 1, 1]
        assert b0[3].ref_cnt == 0
        finish(bp, b1)
        assert all(bp.blocks[i].ref_cnt == 0 for i in range(1, 11))
        assert bp.get_num_free_blocks() == 10

        # the prefix is still cached after both finished
        r2 = req("2", common + [300] * 3)
        assert ids(lookup(bp, r2)) == [1, 2, 3]


def test_decode_completes_and_caches_a_block(pool_name):
    """Generated tokens that complete a block get it cached (hashes come
    from the request's hasher as tokens are appended)."""
    with make_bp(pool_name) as bp:
        r = req("0", list(range(BS + 10)))
        blocks = admit(bp, r, [])
        assert [b.block_hash is not None for b in blocks] == [True, False]
        r.append([7] * 6)  # 2 blocks full now
        assert len(r.block_hashes) == 2
        bp.cache_full_blocks(r, blocks, 1, 2, BS, 0)
        assert blocks[1].block_hash is not None
        r2 = req("1", r.all_token_ids + [1])
        assert ids(lookup(bp, r2)) == ids(blocks)


def test_free_order_is_eviction_order(pool_name):
    """test_evict: blocks freed first are evicted first; vLLM frees a
    request tail first, so a later prefix still hits its head."""
    with make_bp(pool_name) as bp:
        ra = req("a", list(range(5 * BS)))
        rb = req("b", list(range(1000, 1000 + 5 * BS)))
        ba = admit(bp, ra, [])
        bb = admit(bp, rb, [])
        assert ids(ba) == [1, 2, 3, 4, 5] and ids(bb) == [6, 7, 8, 9, 10]
        finish(bp, ba)  # released 5, 4, 3, 2, 1
        finish(bp, bb)  # then 10, 9, 8, 7, 6
        assert ids(bp.get_new_blocks(1)) == [5]
        assert ids(bp.get_new_blocks(2)) == [4, 3]
        assert ids(lookup(bp, ra)) == [1, 2]
        bp.release_lookups()
        assert ids(lookup(bp, rb)) == [6, 7, 8, 9, 10]


def test_uncached_free_blocks_are_used_before_cached_ones(pool_name):
    """Where we differ from vLLM (docs/VLLM.md): vLLM's single free queue can
    evict a cached block while never-cached blocks are free; the pool hands
    out its free blocks first."""
    with make_bp(pool_name) as bp:
        r = req("a", list(range(2 * BS)))
        cached = admit(bp, r, [])
        scratch = bp.get_new_blocks(3)
        finish(bp, cached)   # cached blocks released first ...
        bp.free_blocks(scratch)  # ... then three never-cached ones
        got = bp.get_new_blocks(8)
        assert set(ids(cached)).isdisjoint(ids(got))
        bp.free_blocks(got)
        assert ids(lookup(bp, r)) == ids(cached)


def test_hit_is_not_evicted_between_lookup_and_touch(pool_name):
    """test_computed_blocks_not_evicted, made stronger: the lookup itself
    holds the hit, so even an allocation of everything available before
    touch() cannot take it."""
    with make_bp(pool_name) as bp:
        r0 = req("0", list(range(BS)))
        b0 = admit(bp, r0, [])
        finish(bp, b0)
        r1 = req("1", list(range(500, 500 + BS)))
        finish(bp, admit(bp, r1, []))
        assert bp.get_num_free_blocks() == 10

        hit = lookup(bp, req("2", list(range(BS)) + [5]))
        assert ids(hit) == ids(b0)
        assert hit[0].ref_cnt == 0  # not a use yet: vLLM counts it as free
        assert bp.get_num_free_blocks() == 10
        assert bp.pool.available() == 9
        taken = bp.get_new_blocks(9)
        assert b0[0].block_id not in ids(taken)
        assert bp.get_num_free_blocks() == 1
        with pytest.raises(ValueError):  # vLLM touches before it allocates
            bp.get_new_blocks(1)
        bp.touch((hit,))
        assert hit[0].ref_cnt == 1
        bp.free_blocks(taken + hit)
        assert bp.get_num_free_blocks() == 10


def test_longest_cache_hit_is_get_cached_block_in_one_call(pool_name):
    """longest_cache_hit gives what the per-hash lookups give, with the same
    holds, whether the head of the prefix is in use here or not."""
    with make_bp(pool_name) as bp:
        r = req("a", list(range(5 * BS)))
        blocks = admit(bp, r, [])
        finish(bp, blocks[3:])           # the head stays in use, the tail does not
        r2 = req("b", list(range(4 * BS)) + [7] * BS)
        hit = bp.longest_cache_hit(r2.block_hashes)
        assert ids(hit) == ids(blocks[:4])
        assert bp.pool.available() == 10 - 4 and bp.get_num_free_blocks() == 10 - 3
        assert ids(bp.longest_cache_hit(r2.block_hashes, max_blocks=2)) == ids(blocks[:2])
        bp.touch((hit,))
        assert [b.ref_cnt for b in hit] == [2, 2, 2, 1]
        assert bp.pool.available() == 10 - 4
        bp.release_lookups()
        assert ids(lookup(bp, r2)) == ids(hit)
        bp.release_lookups()
        finish(bp, hit)
        finish(bp, blocks[:3])
        assert bp.longest_cache_hit([]) == []
        assert bp.get_num_free_blocks() == 10


def count_pool_calls(pool, names=("match", "release", "allocate", "stage", "register")):
    """Wraps @pool's methods to count calls: {name: calls}."""
    calls = dict.fromkeys(names, 0)
    for name in names:
        def counted(*a, _f=getattr(pool, name), _n=name, **k):
            calls[_n] += 1
            return _f(*a, **k)
        setattr(pool, name, counted)
    return calls


def test_a_prefix_is_matched_in_one_pool_call(pool_name):
    """vLLM asks for a prefix one hash at a time; the first miss here
    matches the rest of the request's chain in one pool call, and the
    request's blocks go back in one release call."""
    with make_bp(pool_name, n=16) as bp:
        r = req("a", list(range(8 * BS)))
        blocks = admit(bp, r, [])
        finish(bp, blocks)
        calls = count_pool_calls(bp.pool)
        hit = lookup(bp, req("b", list(range(8 * BS)) + [1]))
        assert ids(hit) == ids(blocks) and calls["match"] == 1
        bp.touch(hit)
        bp.free_blocks(reversed(hit))
        assert calls == {"match": 1, "release": 1, "allocate": 0, "stage": 0, "register": 0}
        # allocation, caching and freeing: one call each
        r2 = req("c", list(range(100, 100 + 4 * BS)))
        finish(bp, admit(bp, r2, []))
        assert calls == {"match": 1, "release": 2, "allocate": 1, "stage": 1, "register": 1}
        assert bp.get_num_free_blocks() == bp.pool.available() == 15


def test_blocks_matched_ahead_are_held_against_other_processes(pool_name):
    """The blocks matched ahead of vLLM's asking are lookups like any
    other: another process cannot evict them before vLLM asks; those
    vLLM does not touch go back at touch(); an allocation that needs them
    gets them."""
    with make_bp(pool_name) as bp, make_bp(pool_name) as other:
        r = req("a", list(range(6 * BS)))
        blocks = admit(bp, r, [])
        finish(bp, blocks)
        first = bp.get_cached_block(r.block_hashes[0], [0])
        assert ids(first) == ids(blocks[:1])
        assert bp.pool.available() == 4 and bp.get_num_free_blocks() == 10
        # another process allocates everything it can: it cannot take them
        taken = other.get_new_blocks(other.get_num_free_blocks())
        assert len(taken) == 4 and not set(ids(taken)) & set(ids(blocks))
        calls = count_pool_calls(bp.pool)
        hit = first + [bp.get_cached_block(h, [0])[0] for h in r.block_hashes[1:4]]
        assert ids(hit) == ids(blocks[:4]) and calls["match"] == 0
        bp.touch(hit)                 # the two never asked for go back
        assert [b.ref_cnt for b in blocks] == [1, 1, 1, 1, 0, 0]
        assert bp.pool.available() == 2
        other.free_blocks(taken)
        bp.free_blocks(hit)
        assert bp.get_num_free_blocks() == 10
        # looked up, not touched yet, and an allocation needs the blocks
        # matched ahead: they go back first, the one vLLM asked for stays
        first = bp.get_cached_block(r.block_hashes[0], [0])
        got = bp.get_new_blocks(9)
        assert first[0].block_id not in ids(got)
        bp.touch(first)
        assert first[0].ref_cnt == 1
        bp.free_blocks(got + first)
        assert bp.get_num_free_blocks() == 10


def test_a_lookup_that_leaves_the_batch_keeps_what_it_found(pool_name):
    """The batch matched ahead follows the latest request hashed with that
    prefix; when vLLM's request leaves it, the blocks vLLM got from it stay
    held (another process cannot evict them before touch) and the rest of
    its request is matched as a batch of its own."""
    with make_bp(pool_name, n=16) as bp, make_bp(pool_name, n=16) as other:
        head = list(range(3 * BS))
        rb = req("b", head + [5] * (3 * BS))
        ra = req("a", head + [9] * (3 * BS))   # hashed last: the prefix's batch
        finish(bp, admit(bp, rb, []))
        finish(bp, admit(bp, ra, []))
        calls = count_pool_calls(bp.pool)
        hit = lookup(bp, rb)
        assert len(hit) == 6 and calls["match"] == 2
        assert [b.block_hash for b in hit] == [
            kv.make_block_hash_with_group_id(h, 0) for h in rb.block_hashes]
        taken = other.get_new_blocks(other.get_num_free_blocks() - 6)
        assert not set(ids(taken)) & set(ids(hit))
        bp.touch(hit)                    # no retake: every hit was held
        assert calls["match"] == 2 and [b.ref_cnt for b in hit] == [1] * 6
        other.free_blocks(taken)
        bp.free_blocks(hit)
        assert bp.get_num_free_blocks() == bp.pool.available() == 15


def test_hit_on_a_block_in_use_here_survives_its_free_before_touch(pool_name):
    """A lookup that hits a block this process uses takes no pool hold; if
    that use ends before touch(), the hold stays, as the lookup's."""
    with make_bp(pool_name) as bp, make_bp(pool_name) as other:
        r = req("a", list(range(2 * BS)))
        running = admit(bp, r, [])
        hit = lookup(bp, r)
        assert ids(hit) == ids(running)
        finish(bp, running)           # the request ends before the hit is touched
        assert bp.pool.available() == 8
        # another process allocates all it can
        other.free_blocks(other.get_new_blocks(other.get_num_free_blocks()))
        bp.touch(hit)
        assert ids(hit) == ids(running) and [b.ref_cnt for b in hit] == [1, 1]
        assert bp.pool.block_info(bp._hold(hit[0]))["holds"] == 1
        bp.free_blocks(hit)
        assert ids(lookup(bp, r)) == ids(running)  # still cached
        bp.release_lookups()
        assert bp.get_num_free_blocks() == 10


def test_abandoned_lookups_are_given_back(pool_name):
    """vLLM may look a request up and not schedule it (no room): its lookup
    holds go back at the next touch(), or by release_lookups()."""
    with make_bp(pool_name) as bp:
        ra = req("a", list(range(2 * BS)))
        rb = req("b", list(range(900, 900 + 2 * BS)))
        finish(bp, admit(bp, ra, []))
        finish(bp, admit(bp, rb, []))
        assert len(lookup(bp, ra)) == 2   # a is looked up, never scheduled
        assert bp.pool.available() == 8
        hb = lookup(bp, rb)
        blocks = admit(bp, rb, hb)        # b is scheduled: a's holds go back
        assert bp.pool.available() == bp.get_num_free_blocks() == 8
        finish(bp, blocks)
        assert bp.get_num_free_blocks() == 10
        lookup(bp, ra)
        assert bp.release_lookups() == 2
        assert bp.get_num_free_blocks() == 10
        # touching after the hold went back retakes it while still cached
        hit = lookup(bp, ra)
        bp.release_lookups()
        bp.touch(hit)
        assert [b.ref_cnt for b in hit] == [1, 1]
        bp.free_blocks(hit)


def test_partial_touch_gives_back_the_rest(pool_name):
    """EAGLE drops the last hit block: only the touched ones stay held."""
    with make_bp(pool_name) as bp:
        r = req("a", list(range(3 * BS)))
        finish(bp, admit(bp, r, []))
        hit = lookup(bp, r)
        assert len(hit) == 3
        bp.touch(hit[:2])
        assert [b.ref_cnt for b in hit] == [1, 1, 0]
        assert bp.pool.available() == bp.get_num_free_blocks() == 8
        bp.free_blocks(hit[:2])


def test_reserve_sets_blocks_aside_for_this_process(pool_name):
    """reserve(n): the blocks are this process's at once, still counted
    free by it (vLLM's check), gone for every other process."""
    with make_bp(pool_name) as a, make_bp(pool_name) as b:
        assert a.reserve(6)
        assert a.get_num_free_blocks() == 10 and b.get_num_free_blocks() == 4
        assert not b.reserve(5) and b.get_num_free_blocks() == 4  # all or nothing
        with pytest.raises(ValueError, match="Cannot get 5 free blocks"):
            b.get_new_blocks(5)
        got = a.get_new_blocks(8)  # 6 from the reserve, 2 from the pool
        assert a.get_num_free_blocks() == b.get_num_free_blocks() == 2
        assert a.reserve(2) and b.get_num_free_blocks() == 0
        assert a.reserve(0) and b.get_num_free_blocks() == 2  # surplus back
        a.free_blocks(got)
        assert a.reserve(4)
        assert a.reset_prefix_cache()  # gives the reserve back first
        assert b.get_num_free_blocks() == 10
        with pytest.raises(ValueError):
            a.reserve(-1)


def test_metrics_collector_hooks(pool_name):
    """vLLM's KVCacheMetricsCollector gets its calls."""
    calls = []

    class Collector:
        def on_block_allocated(self, b):
            calls.append(("alloc", b.block_id))

        def on_block_accessed(self, b):
            calls.append(("access", b.block_id))

        def on_block_evicted(self, b):
            calls.append(("evict", b.block_id))

        def reset(self):
            calls.append(("reset",))

    with make_bp(pool_name, metrics_collector=Collector()) as bp:
        r = req("0", list(range(BS)))
        blocks = admit(bp, r, [])
        finish(bp, admit(bp, req("1", r.all_token_ids + [1]), lookup(bp, r)))
        finish(bp, blocks)
        bp.free_blocks(bp.get_new_blocks(10))
        assert bp.reset_prefix_cache()
        bid = blocks[0].block_id
        assert calls[:2] == [("alloc", bid), ("access", bid)]
        assert ("evict", bid) in calls and calls[-1] == ("reset",)
        assert bp.metrics()["evictions"] == 1


def test_reset_prefix_cache(pool_name):
    """test_reset_prefix_cache: fails while blocks are in use, then forgets
    every hash; AllBlocksCleared is the event."""
    with make_bp(pool_name) as bp:
        r = req("0", list(range(3 * BS)))
        blocks = admit(bp, r, [])
        assert bp.reset_prefix_cache() is False
        assert ids(lookup(bp, r)) == ids(blocks)  # still cached
        bp.release_lookups()
        finish(bp, blocks)
        bp.take_events()
        assert bp.reset_prefix_cache() is True
        assert all(b.block_hash is None for b in bp.blocks)
        assert lookup(bp, r) == []
        assert bp.get_num_free_blocks() == 10
        assert bp.take_events() == [AllBlocksCleared()]


def test_evict_blocks(pool_name):
    """evict_blocks: a cached block no one uses leaves the cache now; a
    block in use leaves it on its last release; unknown ids are skipped,
    invalid ids refused."""
    with make_bp(pool_name) as bp:
        r = req("0", list(range(3 * BS)))
        blocks = admit(bp, r, [])
        b1, b2, b3 = blocks
        finish(bp, [b3])
        bp.take_events()
        bp.evict_blocks({b3.block_id})
        assert b3.block_hash is None
        ev = bp.take_events()
        assert ev == [BlockRemoved(block_hashes=[kv._router_hash(r.block_hashes[2])],
                                   medium="GPU")]
        bp.evict_blocks({b2.block_id})    # in use: marked
        assert ids(lookup(bp, r)) == [1, 2]  # still hit while held
        bp.release_lookups()
        finish(bp, [b1, b2])
        assert ids(lookup(bp, r)) == [1]
        bp.release_lookups()
        bp.evict_blocks({9, 10})          # never cached: nothing happens
        with pytest.raises(ValueError, match="invalid block id 11"):
            bp.evict_blocks({11})
        assert bp.get_num_free_blocks() == 10


def test_kv_cache_events(pool_name):
    """test_kv_cache_events: one BlockStored per cached run, with the
    parent, tokens and block size; BlockRemoved on eviction; hashes are the
    PLH router projection (what kvbmd publishes)."""
    with make_bp(pool_name) as bp:
        toks = list(range(3 * BS + 4))
        r = req("0", toks)
        blocks = admit(bp, r, [])
        ev = bp.take_events()
        rh = [kv._router_hash(h) for h in r.block_hashes]
        assert ev == [BlockStored(block_hashes=rh, parent_block_hash=None,
                                  token_ids=toks[:3 * BS], block_size=BS,
                                  lora_id=None, medium="GPU", lora_name=None)]
        assert bp.take_events() == []
        # the request grows a block: its event names the parent
        r.append([9] * (BS - 4))
        bp.cache_full_blocks(r, blocks, 3, 4, BS, 0)
        ev = bp.take_events()
        assert len(ev) == 1 and ev[0].parent_block_hash == rh[2]
        assert ev[0].block_hashes == [kv._router_hash(r.block_hashes[3])]
        assert ev[0].token_ids == r.all_token_ids[3 * BS:4 * BS]
        # a duplicate registration emits nothing (the pool has the hash)
        r2 = req("1", toks)
        b2 = admit(bp, r2, [])  # no lookup: caches into a new block
        assert bp.take_events() == []
        finish(bp, b2)
        finish(bp, blocks)
        bp.get_new_blocks(10)  # evicts all 4 cached blocks
        removed = [h for e in bp.take_events() for h in e.block_hashes]
        assert sorted(removed) == sorted(rh + [kv._router_hash(r.block_hashes[3])])


def test_reader_lapped_by_the_ring_resyncs(pool_name):
    """A reader that falls a ring behind gets AllBlocksCleared and a
    BlockStored per cached block (a snapshot), never a silent loss."""
    with make_bp(pool_name, event_ring=64) as bp:
        keep = admit(bp, req("keep", list(range(2 * BS))), [])
        for i in range(40):  # 80 events: store + evict, one block at a time
            r = req(str(i), [i + 7000] * BS)
            finish(bp, admit(bp, r, []))
            bp.free_blocks(bp.get_new_blocks(8))
        ev = bp.take_events()
        assert ev[0] == AllBlocksCleared()
        stored = [h for e in ev[1:] if isinstance(e, BlockStored) for h in e.block_hashes]
        keep_rh = [kv._router_hash(bytes(h[:16])) for h in (b.block_hash for b in keep)]
        assert stored == keep_rh
        assert bp.take_events() == []
        finish(bp, keep)


def test_events_disabled_returns_nothing(pool_name):
    with make_bp(pool_name, events=False) as bp:
        admit(bp, req("0", list(range(2 * BS))), [])
        assert bp.take_events() == []


def test_salt_separates_caches(pool_name):
    """cache_salt and LoRA are in the hash: no hit across them."""
    class Lora:
        lora_name = "adapter-1"
    toks = list(range(2 * BS))
    with make_bp(pool_name) as bp:
        finish(bp, admit(bp, req("0", toks), []))
        assert lookup(bp, req("1", toks, cache_salt="tenant-b")) == []
        assert lookup(bp, req("2", toks, lora_request=Lora())) == []
        assert len(lookup(bp, req("3", toks))) == 2
        bp.release_lookups()


def test_hash_mode_vllm_with_vllms_own_hashes(pool_name):
    """hash_mode='vllm': vLLM's sha256 hashes, mapped to root PLHs; events
    carry vLLM's int form (low 64 bits)."""
    import hashlib

    def sha_hasher(request):
        out, parent = [], (request.block_hashes[-1] if request.block_hashes else b"seed")
        for i in range(len(request.block_hashes), len(request.all_token_ids) // BS):
            parent = hashlib.sha256(parent + repr(request.all_token_ids[i * BS:(i + 1) * BS])
                                    .encode()).digest()
            out.append(parent)
        return out

    with make_bp(pool_name, hash_mode="vllm") as bp:
        r = Request("0", list(range(2 * BS)), sha_hasher)
        blocks = admit(bp, r, [])
        ev = bp.take_events()
        low = [int.from_bytes(h, "big") & ((1 << 64) - 1) for h in r.block_hashes]
        assert ev == [BlockStored(block_hashes=low, parent_block_hash=None,
                                  token_ids=r.all_token_ids, block_size=BS,
                                  lora_id=None, medium="GPU", lora_name=None)]
        finish(bp, blocks)
        r2 = Request("1", list(range(2 * BS)) + [1], sha_hasher)
        assert ids(lookup(bp, r2)) == ids(blocks)
        bp.release_lookups()
    with make_bp(pool_name + "-plh") as other:
        with pytest.raises(ValueError, match="16-byte PLH"):
            other.get_cached_block(r.block_hashes[0], [0])
    _destroy(pool_name + "-plh")


def test_request_hasher_is_the_librarys_hash():
    """The hasher's PLHs, computed as tokens arrive, equal kvbm.hash_tokens
    over the whole sequence with the request's salt: every process agrees."""
    toks = list(range(5 * BS + 3))
    r = req("0", toks[:BS + 1], cache_salt="s")
    for t in toks[BS + 1:]:
        r.append([t])
    want = kvbm.hash_tokens(toks, BS, kvbm.salt_hash("s", None))
    assert r.block_hashes == want.plh_bytes_list()
    assert req("1", toks, cache_salt="s").block_hashes == want.plh_bytes_list()


def test_plh_packing_matches_the_library():
    hs = kvbm.hash_tokens(list(range(300 * 4)), 4)
    for i in (0, 1, 255, 256, 299):
        pos, cur, pfrag = kv._plh_unpack(hs.plh_bytes(i))
        assert pos == i and cur == hs.seq_hashes[i]
        if i:
            assert pfrag == hs.seq_hashes[i - 1] & ((1 << kv._r_bits(i)) - 1)
            assert kv._router_hash(hs.plh_bytes(i - 1)) == hs.router_hashes[i - 1]
        assert kv._plh_pack(cur, pfrag, pos) == hs.plh_bytes(i)


def test_groups_do_not_share_blocks(pool_name):
    """A second KV cache group keys its blocks apart from group 0's."""
    with make_bp(pool_name) as bp:
        r = req("0", list(range(BS)))
        g0 = bp.get_new_blocks(1)
        g1 = bp.get_new_blocks(1)
        bp.cache_full_blocks(r, g0, 0, 1, BS, 0)
        bp.cache_full_blocks(r, g1, 0, 1, BS, 1)
        got = bp.get_cached_block(r.block_hashes[0], [0, 1])
        assert ids(got) == ids(g0) + ids(g1)
        bp.touch((got[:1], got[1:]))
        bp.free_blocks(g0 + g1 + got)
        assert bp.get_cached_block(r.block_hashes[0], [2]) is None
        # group 0 hits, group 2 misses: the group-0 hold taken goes back
        assert bp.get_cached_block(r.block_hashes[0], [0, 2]) is None
        assert bp.pool.available() == bp.get_num_free_blocks() == 10


def test_bad_input_leaves_state_intact(pool_name):
    with make_bp(pool_name) as bp:
        r = req("0", list(range(2 * BS)))
        blocks = admit(bp, r, [])
        with pytest.raises(ValueError, match="16-byte PLH"):
            bp.get_cached_block(b"\x01" * 32, [0])
        with pytest.raises(ValueError, match="freed 2 times"):
            bp.free_blocks([blocks[0], blocks[0]])
        assert [b.ref_cnt for b in blocks] == [1, 1]
        with pytest.raises(ValueError, match="not a new block"):
            bp.cache_full_blocks(r, blocks, 0, 2, BS, 0)
        with pytest.raises(NotImplementedError):
            bp.cache_full_blocks(r, blocks, 1, 2, 2 * BS, 0)
        short = req("short", list(range(BS)))
        short.block_hashes.append(r.block_hashes[1])
        with pytest.raises(ValueError, match="has 16 tokens, not the 32"):
            bp.cache_full_blocks(short, bp.get_new_blocks(2), 0, 2, BS, 0)
        with pytest.raises(TypeError, match="block hash must be bytes or int"):
            bp.get_cached_block([1, 2], [0])
        with pytest.raises(ValueError):
            bp.get_new_blocks(-1)
        with pytest.raises(ValueError, match="touch blocks returned by get_cached_block"):
            bp.touch([bp.blocks[9]])
        with pytest.raises(TypeError, match="expected KVCacheBlock, got int"):
            bp.free_blocks([3])
        with pytest.raises(ValueError, match="block 1 belongs to another BlockPool"):
            bp.free_blocks([kv.KVCacheBlock(1)])
        assert [b.ref_cnt for b in blocks] == [1, 1]
        assert bp.pool.check(lock=True) == []
        finish(bp, blocks)
        bp.free_blocks([b for b in bp.blocks if b.ref_cnt])  # the "short" ones
        assert bp.get_num_free_blocks() == 10
        with pytest.raises(kvbm.Mismatch):
            BlockPool(12, True, BS, pool_name=pool_name)
        with kvbm.Pool(pool_name) as p:
            with pytest.raises(ValueError, match="pool has 11 blocks"):
                BlockPool(12, True, BS, pool=p)
            with pytest.raises(ValueError, match="block size 16 differs"):
                BlockPool(11, True, 2 * BS, pool=p)
        assert bp.get_num_free_blocks() == 10
    with kvbm.Pool(pool_name + "-rej", create=True, block_count=11, block_size=BS,
                   dup_policy="reject", event_ring=0) as p:
        with pytest.raises(ValueError, match="dup_policy must be 'allow'"):
            BlockPool(11, True, BS, pool=p)
    _destroy(pool_name + "-rej")
    with kvbm.Pool(pool_name + "-noring", create=True, block_count=11, block_size=BS,
                   event_ring=0) as p:
        with pytest.raises(ValueError, match="needs a pool with an event ring"):
            BlockPool(11, True, BS, True, pool=p)
        assert p.available() == 11  # nothing held, nothing registered
        with BlockPool(11, True, BS, False, pool=p) as bp:
            assert bp.get_num_free_blocks() == 10
        assert not p.closed  # the caller's pool stays open
    _destroy(pool_name + "-noring")


# ---- several processes on one pool ------------------------------------------

CHILD = textwrap.dedent("""
    import json, sys
    sys.path[:0] = json.loads(sys.argv[1])
    from kvbm.vllm import BlockPool, request_block_hasher
    name, bs, tokens = sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])

    class R:
        pass

    r = R()
    r.request_id, r.all_token_ids, r.cache_salt, r.lora_request = "c", tokens, None, None
    r.block_hashes = []
    r.block_hashes.extend(request_block_hasher(bs)(r))
    bp = BlockPool(11, True, bs, True, pool_name=name)
    for line in sys.stdin:
        cmd = line.split()[0]
        if cmd == "cache":
            blocks = bp.get_new_blocks(len(tokens) // bs)
            bp.cache_full_blocks(r, blocks, 0, len(blocks), bs, 0)
            out = [b.block_id for b in blocks]
        elif cmd == "hit":
            blocks = bp.longest_cache_hit(r.block_hashes)
            bp.touch((blocks,))
            out = [b.block_id for b in blocks]
        elif cmd == "free":
            bp.free_blocks(reversed(blocks))
            out = []
        elif cmd == "exit":
            bp.close()
            break
        print(json.dumps(out), flush=True)
""")


class Child:
    def __init__(self, name, tokens):
        self.p = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(sys.path), name, str(BS),
             json.dumps(tokens)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, f"child died on {cmd!r} (exit {self.p.wait()})"
        return json.loads(line)

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.write("exit\n")
            self.p.stdin.close()
        self.p.wait(timeout=30)


def test_two_processes_share_a_prefix(pool_name):
    """One process caches a prompt's blocks; another finds them with
    get_cached_block + touch: the same block ids, so the same KV."""
    toks = list(range(4 * BS))
    with make_bp(pool_name) as bp:
        bp.take_events()
        child = Child(pool_name, toks)
        try:
            cached = child.ask("cache")
            assert len(cached) == 4
            r = req("main", toks + [1, 2, 3])
            hit = lookup(bp, r)
            assert ids(hit) == cached
            blocks = admit(bp, r, hit)
            assert [b.ref_cnt for b in blocks] == [1, 1, 1, 1, 1]
            # the child finishes; the blocks stay ours, not evictable
            child.ask("free")
            assert bp.get_num_free_blocks() == 10 - 5
            # our events: the child's store, seen through the shared ring
            ev = bp.take_events()
            assert [h for e in ev for h in e.block_hashes] == \
                [kv._router_hash(h) for h in r.block_hashes[:4]]
            # the child hits what it cached through us
            assert child.ask("hit") == cached
            child.ask("free")
            finish(bp, blocks)
            assert bp.get_num_free_blocks() == 10
        finally:
            child.close()


def test_killed_process_blocks_become_evictable(pool_name):
    """SIGKILL a process that holds touched blocks: once reaped, the blocks
    are inactive again, still cached, and evictable."""
    toks = list(range(3 * BS))
    with make_bp(pool_name, reap_interval_s=0) as bp:
        r = req("main", toks)
        blocks = admit(bp, r, [])
        finish(bp, blocks)
        child = Child(pool_name, toks)
        try:
            assert child.ask("hit") == ids(blocks)
            assert bp.get_num_free_blocks() == 10 - 3
            with pytest.raises(ValueError):
                bp.get_new_blocks(10)
            child.p.send_signal(signal.SIGKILL)
            child.p.wait(timeout=30)
        finally:
            child.close()
        # vLLM asks how many blocks are free before it allocates: that
        # question reaps the dead process
        assert bp.get_num_free_blocks() == 10
        assert bp.pool.reap() == 0
        assert bp.pool.check(lock=True) == []
        assert ids(lookup(bp, r)) == ids(blocks)  # still cached
        bp.release_lookups()
        got = bp.get_new_blocks(10)  # evicts them
        assert set(ids(blocks)) <= set(ids(got))
        bp.free_blocks(got)


# A scheduler in miniature, several of them on one pool and one "KV
# storage" (a shared-memory array indexed by block id): each request
# looks its prompt up, checks that every hit block holds that prefix's
# "KV" (here: the block's tokens and the chain position, plus who wrote
# it), writes the KV of
# its new blocks before caching them, keeps running for a few steps, checks
# its blocks again and frees them. A block evicted and rewritten by another
# process while this one holds it, or between its lookup and touch, shows
# up as wrong KV.
WORKER = textwrap.dedent("""
    import json, random, sys
    sys.path[:0] = json.loads(sys.argv[1])
    import numpy as np
    from kvbm.vllm import BlockPool, request_block_hasher
    import os
    name, kv_path, bs, nblocks, seed, steps, stop_path = sys.argv[2:9]
    bs, nblocks, seed, steps = int(bs), int(nblocks), int(seed), int(steps)
    kv = np.memmap(kv_path, dtype=np.int64, mode="r+", shape=(nblocks, bs + 2))
    hasher = request_block_hasher(bs)
    rng = random.Random(seed)
    systems = [[1000 * s + i for i in range(4 * bs)] for s in range(3)]

    class R:
        pass

    def make(i):
        r = R()
        r.request_id, r.cache_salt, r.lora_request = f"{seed}-{i}", None, None
        sp = systems[rng.randrange(3)]
        turn = [rng.randrange(50) for _ in range(rng.randrange(0, 3 * bs))]
        r.all_token_ids = sp[:rng.randrange(bs, len(sp) + 1)] + turn
        r.block_hashes = []
        r.block_hashes.extend(hasher(r))
        return r

    def kv_ok(r, blocks, n):
        for i in range(n):
            want = r.all_token_ids[i * bs:(i + 1) * bs] + [i]
            if kv[blocks[i].block_id, :bs + 1].tolist() != want:
                return False
        return True

    bp = BlockPool(nblocks, True, bs, False, pool_name=name)
    running, stats = [], dict(hits=0, foreign_hits=0, bad=0, done=0, skipped=0)
    step = 0
    while step < steps or not os.path.exists(stop_path):
        step += 1
        if step == steps:
            print("running", flush=True)
        r = make(step)
        hit = bp.longest_cache_hit(r.block_hashes)
        if len(hit) * bs == len(r.all_token_ids):
            hit.pop()  # vLLM recomputes the last token
        stats["bad"] += not kv_ok(r, hit, len(hit))
        need = -(-len(r.all_token_ids) // bs) - len(hit)
        # allocate_slots' check, made race-free: what vLLM counts (new
        # blocks plus hits no request uses), set aside
        if not bp.reserve(need + sum(b.ref_cnt == 0 for b in hit)):
            stats["skipped"] += 1  # not scheduled: the lookup is abandoned
        else:
            bp.touch((hit,))
            new = bp.get_new_blocks(need)
            blocks = hit + new
            nfull = len(r.all_token_ids) // bs
            for i in range(len(hit), nfull):
                kv[blocks[i].block_id] = r.all_token_ids[i * bs:(i + 1) * bs] + [i, seed]
            bp.cache_full_blocks(r, blocks, len(hit), nfull, bs, 0)
            stats["hits"] += len(hit)
            stats["foreign_hits"] += sum(int(kv[b.block_id, bs + 1]) != seed for b in hit)
            running.append((r, blocks, nfull))
        while len(running) > 2 or (running and rng.random() < 0.3):
            r0, b0, n0 = running.pop(rng.randrange(len(running)))
            stats["bad"] += not kv_ok(r0, b0, n0)
            bp.free_blocks(reversed(b0))
            stats["done"] += 1
    for r0, b0, n0 in running:
        stats["bad"] += not kv_ok(r0, b0, n0)
        bp.free_blocks(reversed(b0))
    bp.close()
    print(json.dumps(stats), flush=True)
""")


def test_engines_sharing_one_pool_never_see_foreign_kv(pool_name):
    """Three scheduler processes with shared system prompts on a pool too
    small for their working set (so blocks are evicted and reused all the
    time), one of them SIGKILLed mid-run: every hit holds the right KV,
    and the prefixes are shared across processes."""
    np = pytest.importorskip("numpy")
    nblocks = 24
    kv_path = f"/dev/shm/{pool_name}.kv"
    np.memmap(kv_path, dtype=np.int64, mode="w+", shape=(nblocks, BS + 2)).flush()
    stop_path = kv_path + ".stop"
    procs = []
    try:
        with make_bp(pool_name, n=nblocks, events=False) as bp:
            # each runs until the stop file exists; the third forever
            procs = [subprocess.Popen(
                [sys.executable, "-c", WORKER, json.dumps(sys.path), pool_name, kv_path,
                 str(BS), str(nblocks), str(seed), "200", stop],
                stdout=subprocess.PIPE, text=True) for seed, stop in
                ((1, stop_path), (2, stop_path), (3, "/nonexistent"))]
            for p in procs:
                assert p.stdout.readline() == "running\n"
            procs[2].send_signal(signal.SIGKILL)  # dies holding blocks, mid-step
            time.sleep(0.3)  # the others go on meanwhile, evicting its blocks' neighbours
            open(stop_path, "w").close()
            results = []
            for p in procs[:2]:
                out, _ = p.communicate(timeout=120)
                assert p.returncode == 0, out
                results.append(json.loads(out))
            procs[2].wait(timeout=30)
            assert all(r["bad"] == 0 for r in results), results
            assert all(r["done"] > 0 for r in results), results
            assert all(r["foreign_hits"] > 0 for r in results), results
            # the dead one's blocks are back; the pool is sound
            assert bp.get_num_free_blocks() == nblocks - 1
            m = bp.metrics()
            assert m["evictions"] > 0, m
            assert bp.pool.check(lock=True) == []
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in (kv_path, stop_path):
            if os.path.exists(f):
                os.unlink(f)


def _check_holds(bp):
    """Each block's holds by this process in the pool are exactly what the
    adapter thinks it holds: its one hold (_gen), plus the batch matched
    ahead's; a new block is owned (MUTABLE), not held; ref_cnt > 0 only on
    blocks it holds."""
    batch = {}
    for b, g in zip(bp._a_blocks[:bp._a_n], bp._a_gens[:bp._a_n]):
        batch.setdefault(b.block_id, []).append(g)
    for b in bp.blocks:
        if b.ref_cnt:
            assert b._gen is not None, b
        gens = ([b._gen] if b._gen is not None else []) + batch.get(b.block_id, [])
        if not gens:
            continue
        info = bp.pool.block_info(kvbm.Blocks.from_ids([b.block_id], gens[:1], bp.pool))
        if info["state"] == "mutable":  # a new block: owned, not held
            assert len(gens) == 1 and b._block_hash is None, (b, info)
        else:
            assert info["state"] == "registered" and info["holds"] == len(gens), (b, info, gens)


def test_random_vllm_call_sequences_keep_holds_exact(pool_name):
    """Random interleavings of what vLLM's scheduler does (lookups, partial
    touches, abandoned lookups, frees in any order, allocations that evict,
    caching, decode blocks, another process's allocations): after every
    step the pool's count of this process's holds matches the adapter's
    bookkeeping, and at the end every block comes back."""
    import random
    rng = random.Random(1234)
    with make_bp(pool_name, n=40) as bp, make_bp(pool_name, n=40) as other:
        prompts = [list(range(p * 1000, p * 1000 + rng.randint(1, 6) * BS + rng.randint(0, 3)))
                   for p in range(6)]
        running = []   # (request, blocks)
        theirs = []
        for step in range(400):
            op = rng.random()
            if op < 0.45 and len(running) < 6:
                r = req(str(step), rng.choice(prompts) + [7] * rng.randint(0, BS))
                how = rng.random()
                if how < 0.2:  # hashes whose chain is not known: a match a hash
                    kv._chains_new.clear()
                    kv._chains_old.clear()
                    hit = lookup(bp, r)
                elif how < 0.35:
                    hit = bp.longest_cache_hit(r.block_hashes)
                elif how < 0.45 and r.block_hashes:
                    # the first block only, then an allocation that needs
                    # every free block before any touch
                    first = bp.get_cached_block(r.block_hashes[0], [0])
                    try:
                        grab = bp.get_new_blocks(bp.pool.available() + 1)
                    except ValueError:
                        grab = []
                    bp.free_blocks(grab)
                    if first is None:
                        continue
                    hit = first
                else:
                    hit = lookup(bp, r)
                if rng.random() < 0.2:
                    continue          # not scheduled: an abandoned lookup
                if hit and rng.random() < 0.2:
                    hit = hit[:-1]    # EAGLE drops the last hit block
                need = -(-len(r.all_token_ids) // BS) - len(hit)
                if bp.get_num_free_blocks() < need + sum(1 for b in hit if b.ref_cnt == 0):
                    bp.release_lookups()
                    continue
                try:
                    running.append((r, admit(bp, r, hit)))
                except ValueError:    # the other process took them meanwhile
                    bp.release_lookups()
                    for b in hit:
                        if b.ref_cnt:
                            bp.free_blocks([b])
            elif op < 0.75 and running:
                r, blocks = running.pop(rng.randrange(len(running)))
                finish(bp, blocks) if rng.random() < 0.7 else bp.free_blocks(blocks)
            elif op < 0.85 and running:     # decode: a block completes
                r, blocks = running[rng.randrange(len(running))]
                full = len(r.all_token_ids) // BS
                r.append([3] * (BS - len(r.all_token_ids) % BS))
                if len(blocks) * BS < len(r.all_token_ids) and bp.get_num_free_blocks():
                    try:
                        blocks += bp.get_new_blocks(1)
                    except ValueError:
                        continue
                if len(blocks) * BS >= len(r.all_token_ids):
                    bp.cache_full_blocks(r, blocks, full, len(r.all_token_ids) // BS, BS, 0)
            elif op < 0.92:
                if theirs:
                    other.free_blocks(theirs)
                    theirs = []
                else:
                    k = min(other.get_num_free_blocks(), rng.randint(1, 6))
                    try:
                        theirs = other.get_new_blocks(k)
                    except ValueError:
                        pass
            else:
                bp.release_lookups()
            _check_holds(bp)
        for r, blocks in running:
            finish(bp, blocks)
        other.free_blocks(theirs)
        bp.release_lookups()
        _check_holds(bp)
        assert all(b.ref_cnt == 0 and b._gen is None for b in bp.blocks if not b.is_null)
        assert bp.get_num_free_blocks() == bp.pool.available() == 39
