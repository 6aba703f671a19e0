# SPDX-License-Identifier: Apache-2.0
"""The engine example: a paged-KV transformer whose KV blocks are shared
between processes through a kvbm pool gives exactly the outputs of a full
recompute, while engines are SIGKILLed and restarted."""
import os
import shutil
import sys
import tempfile

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")
sys.path.insert(0, EXAMPLES)
sys.path.insert(0, os.path.dirname(HERE))     # python/, the kvbm package

import kvbm  # noqa: E402
import demo  # noqa: E402
import engine as eng  # noqa: E402
from tinylm import F32, Config, TinyLM, full_recompute  # noqa: E402

SMALL = Config(vocab=256, d_model=64, n_layers=2, n_heads=4, d_ff=256, seed=99)
BS = 16


@pytest.fixture(scope="module")
def model():
    return TinyLM(SMALL)


def prompt(n, seed):
    return [int(t) for t in np.random.default_rng(seed).integers(0, SMALL.vocab, n)]


@pytest.fixture
def pool_name(tmp_path, monkeypatch):
    # Our own segment directory: nothing to clean by hand, no clash with
    # another run.
    monkeypatch.setenv("KVBM_SHM_DIR", str(tmp_path))
    name = f"test-engine-{os.getpid()}"
    yield name
    eng.SharedKV.remove(name)
    try:
        kvbm.destroy(name)
    except kvbm.KvbmError:      # a test that made no pool
        pass


def private_kv(model, nblocks):
    return np.zeros((nblocks,) + model.cfg.kv_block_shape(BS), F32)


# ---- (a) the model ---------------------------------------------------------

@pytest.mark.parametrize("plen", [1, 15, 16, 17, 95, 96, 130])
def test_cached_prefix_gives_the_bits_of_a_full_recompute(model, plen):
    p = prompt(plen, plen)
    ref_toks, ref_logits = full_recompute(model, p, 5, BS)
    # Another "request" computes the prefix into blocks 40.., then this one
    # reuses every complete block before the last token's from there and
    # computes the rest into scattered blocks.
    kv = private_kv(model, 64)
    reuse = (plen - 1) // BS
    prefix_table = list(range(40, 40 + reuse + 1))
    if reuse:
        model.prefill(p[:reuse * BS], 0, kv, prefix_table, BS)
    table = prefix_table[:reuse] + [7, 3, 25, 11, 19, 2, 30, 5, 9, 12][: 10]
    first = model.prefill(p, reuse * BS, kv, table, BS)
    toks, logits = model.decode(first, 5, plen, kv, table, BS)
    assert toks == ref_toks
    assert logits.dtype == F32 and np.array_equal(logits, ref_logits)


def test_the_cache_is_really_read(model):
    # The test above cannot pass with a model that ignores its cache: a
    # changed value in a reused block changes the logits.
    p = prompt(70, 1)
    kv = private_kv(model, 16)
    table = list(range(8))
    ref = model.prefill(p, 0, kv, table, BS)
    kv[table[1], 1, 1, 3] += 0.5           # layer 1, V, position 19
    assert not np.array_equal(model.prefill(p, 4 * BS, kv, table, BS), ref)


def test_chunks_must_be_block_aligned(model):
    kv = private_kv(model, 4)
    with pytest.raises(ValueError, match="block-aligned"):
        model.prefill(prompt(40, 2), 8, kv, [0, 1, 2], BS)
    with pytest.raises(ValueError, match="inside one block"):
        model.forward(prompt(20, 2), 0, kv, [0, 1], BS)
    with pytest.raises(ValueError, match="block table"):
        model.prefill(prompt(40, 2), 0, kv, [0, 1], BS)
    with pytest.raises(ValueError, match="token ids"):
        model.prefill([SMALL.vocab], 0, kv, [0], BS)


# ---- one engine process on a pool ----------------------------------------

def counting(model):
    """Counts the tokens the model really runs."""
    ran = [0]
    real = model.forward

    def forward(tokens, *a, **k):
        ran[0] += len(tokens)
        return real(tokens, *a, **k)
    model.forward = forward
    return ran


def test_a_hit_skips_the_compute_of_the_cached_prefix(pool_name):
    model = TinyLM(SMALL)
    ran = counting(model)
    with kvbm.Pool(pool_name, create=True, block_count=64, block_size=BS) as pool:
        kv = eng.SharedKV(pool_name, 64, BS, SMALL)
        e = eng.Engine(pool, kv, model)
        a = prompt(100, 5)
        r1 = e.serve(a, 4)
        assert (r1.cached, r1.computed, r1.registered) == (0, 100, 6)
        assert ran[0] == 100 + 3
        # The same prompt again: 6 complete blocks, but the one holding the
        # last token (block 6, partial) is computed: 4 tokens.
        ran[0] = 0
        r2 = e.serve(a, 4)
        assert (r2.cached, r2.computed) == (96, 4) and ran[0] == 4 + 3
        # A prompt of exactly 6 blocks: the 6th holds its last token, so 5
        # are matched and 16 tokens computed.
        ran[0] = 0
        r3 = e.serve(a[:96], 4)
        assert (r3.cached, r3.computed) == (80, 16) and ran[0] == 16 + 3
        # A longer prompt: the 6 blocks reused, the rest computed.
        b = a + prompt(50, 6)
        r4 = e.serve(b, 4)
        assert (r4.cached, r4.computed) == (96, 54)
        for r, p in ((r1, a), (r2, a), (r3, a[:96]), (r4, b)):
            toks, logits = full_recompute(model, p, 4, BS)
            assert r.tokens == toks and np.array_equal(r.logits, logits)
        m = pool.metrics()
        assert m["inflight_mutable"] == 0 and m["inflight_immutable"] == 0
        assert m["reset_pool_size"] + m["inactive_pool_size"] == 64
        assert pool.check(lock=True) == []
        kv.close()


class RecordingPool:
    """The pool, with a copy of each block's KV taken when it is registered."""

    def __init__(self, pool, kv):
        self._pool, self._kv, self.at_register = pool, kv, {}

    def __getattr__(self, name):
        return getattr(self._pool, name)

    def register(self, blocks, tokens=None):
        for b in blocks:
            self.at_register[b.id] = self._kv.blocks[b.id].copy()
        return self._pool.register(blocks, tokens=tokens)


def test_a_block_is_registered_only_once_its_kv_is_written(pool_name):
    # Others may read a block as soon as it is registered: its KV must be
    # complete then, and never change after.
    model = TinyLM(SMALL)
    with kvbm.Pool(pool_name, create=True, block_count=64, block_size=BS) as pool:
        kv = eng.SharedKV(pool_name, 64, BS, SMALL)
        kv.blocks[:] = np.nan                  # what a fresh block may hold
        rec = RecordingPool(pool, kv)
        e = eng.Engine(rec, kv, model)
        a = prompt(120, 8)
        e.serve(a, 6)
        e.serve(a + prompt(40, 9), 6)
        assert len(rec.at_register) == 10     # 7, then 3 more
        ref = private_kv(model, 16)
        model.prefill(a + prompt(40, 9), 0, ref, list(range(16)), BS)
        hashes = kvbm.hash_tokens(a + prompt(40, 9), BS)
        got = pool.match(hashes)
        assert len(got) == 10
        for i, b in enumerate(got):
            if b.id in rec.at_register:
                assert np.array_equal(rec.at_register[b.id], kv.blocks[b.id])
            assert np.array_equal(kv.blocks[b.id], ref[i]), i
        pool.release(got)
        kv.close()


class GreedyNeighbourPool(RecordingPool):
    """The pool, where before each stage a neighbour takes every block
    allocation can get (evicting every inactive one), overwrites its KV
    with NaN and gives it back."""

    def stage(self, blocks, hashes):
        grab = self._pool.allocate(self._pool.available())
        for b in grab:
            self._kv.blocks[b.id] = np.nan
        self.grabbed = getattr(self, "grabbed", 0) + len(grab)
        self._pool.release(grab)
        return self._pool.stage(blocks, hashes)


def test_held_blocks_survive_a_neighbour_that_evicts_everything_else(pool_name):
    # The KV an engine reads is safe because it holds the blocks until the
    # request ends: a neighbour evicting and overwriting every block it can
    # get in the middle of a prefill does not touch them.
    model = TinyLM(SMALL)
    with kvbm.Pool(pool_name, create=True, block_count=24, block_size=BS) as pool:
        kv = eng.SharedKV(pool_name, 24, BS, SMALL)
        e = eng.Engine(pool, kv, model)
        a = prompt(100, 11)
        e.serve(a, 3)                       # 6 blocks registered, then inactive
        greedy = GreedyNeighbourPool(pool, kv)
        e2 = eng.Engine(greedy, kv, model)
        b = a + prompt(60, 12)
        r = e2.serve(b, 3)
        assert r.cached == 96 and greedy.grabbed > 0
        toks, logits = full_recompute(model, b, 3, BS)
        assert r.tokens == toks and np.array_equal(r.logits, logits)
        assert pool.check(lock=True) == []
        kv.close()


def test_bad_requests_leave_the_pool_intact(pool_name):
    model = TinyLM(SMALL)
    with kvbm.Pool(pool_name, create=True, block_count=8, block_size=BS) as pool:
        kv = eng.SharedKV(pool_name, 8, BS, SMALL)
        e = eng.Engine(pool, kv, model, alloc_timeout=0.05)
        with pytest.raises(ValueError, match="prompt"):
            e.serve([], 3)
        with pytest.raises(ValueError, match="token ids"):
            e.serve([1, 2, SMALL.vocab + 7], 3)
        with pytest.raises(ValueError, match="token ids"):
            e.serve([1, 2.0, 3], 3)
        with pytest.raises(ValueError, match="positions"):
            e.serve([1] * SMALL.max_positions, 3)
        with pytest.raises(kvbm.NoSpace):
            e.serve(prompt(200, 3), 3)          # 13 blocks > 8
        m = pool.metrics()
        assert m["inflight_mutable"] == 0 and m["inflight_immutable"] == 0
        assert pool.check(lock=True) == []
        kv.close()


def test_a_kv_file_of_another_geometry_is_refused(pool_name):
    eng.SharedKV(pool_name, 8, BS, SMALL).close()
    with pytest.raises(ValueError, match="another pool geometry or model"):
        eng.SharedKV(pool_name, 16, BS, SMALL)
    with pytest.raises(ValueError, match="another pool geometry or model"):
        eng.SharedKV(pool_name, 8, BS, Config(vocab=256, d_model=32, n_layers=2,
                                                n_heads=4, d_ff=64))
    eng.SharedKV(pool_name, 8, BS, SMALL).close()   # the same geometry attaches
    # a creator killed between its temporary file and the link left one
    open(eng.kv_path(pool_name) + ".tmp12345", "wb").close()
    eng.SharedKV.remove(pool_name)
    assert not os.path.exists(eng.kv_path(pool_name))
    assert not os.path.exists(eng.kv_path(pool_name) + ".tmp12345")


# ---- (b) several engine processes -----------------------------------------

def workload(chats, turns, blocks=256):
    return eng.make_workload(seed=3, chats=chats, turns=turns, system_len=64,
                             user_len=(5, 40), n_new=6, block_size=BS,
                             block_count=blocks, model=SMALL)


def check_against_reference(wl, results):
    ref = eng.reference(wl)
    assert set(results) == set(ref)
    for k, (p, toks, logits) in ref.items():
        r = results[k]
        assert list(r["prompt"]) == p, k
        assert list(r["tokens"]) == toks, k
        assert np.array_equal(r["logits"], logits), k


def check_pool_drained(name, blocks):
    with kvbm.Pool(name) as pool:
        assert pool.check(lock=True) == []       # reaps the dead first
        m = pool.metrics()
        assert m["inflight_mutable"] == 0 and m["inflight_immutable"] == 0, m
        assert m["reset_pool_size"] + m["inactive_pool_size"] == blocks, m
        assert pool.available() == blocks
        return m


def run(name, wl, workers, **kw):
    work = tempfile.mkdtemp(prefix="kvbm-engine-test-")
    try:
        return demo.run_engines(wl, name, workers, True, work, timeout=120, **kw)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_engines_share_kv_and_match_a_full_recompute(pool_name):
    wl = workload(chats=6, turns=3)
    wall, results, kills = run(pool_name, wl, 3)
    assert kills == []
    check_against_reference(wl, results)
    # Turn t of chat c ran on engine (c+t) % 3: the history it reused was
    # registered by another process.
    later = [r for (c, t), r in results.items() if t > 0]
    assert all(int(r["cached"]) > 0 for r in later)
    assert {int(r["worker"]) for r in results.values()} == {0, 1, 2}
    computed = sum(int(r["computed"]) for r in results.values())
    total = sum(len(r["prompt"]) for r in results.values())
    assert computed < total / 2
    m = check_pool_drained(pool_name, 256)
    assert m["match_blocks_returned"] * BS == total - computed


def test_engines_under_eviction_pressure_still_match(pool_name):
    # A pool too small to keep every prefix: allocations evict inactive
    # blocks (whose KV the new owner overwrites) while other engines hold
    # and read theirs. A held block is never evicted, so every reply
    # still equals the reference.
    wl = workload(chats=10, turns=4, blocks=40)
    wall, results, kills = run(pool_name, wl, 3)
    check_against_reference(wl, results)
    m = check_pool_drained(pool_name, 40)
    assert m["evictions"] > 20, m
    assert sum(int(r["cached"]) for r in results.values()) > 0


def test_engines_killed_anywhere_and_restarted_still_match(pool_name):
    wl = workload(chats=12, turns=6)
    # Engines die in every state that matters: holding matched blocks,
    # after allocate before any register, between stage and register,
    # mid-prefill (KV written, not registered), after prefill with
    # everything held; their restarts die again. And engines are killed
    # at random times on top.
    die = {0: ["matched:3", "prefilled:2"], 1: ["staged:2", "written:9"],
           2: ["allocated:2", "matched:2"], 3: ["written:5"]}
    rng = np.random.default_rng()
    wall, results, kills = run(pool_name, wl, 4, die=die,
                               kill_after=rng.uniform(0.1, 1.0, 2),
                               kill_progress=rng.uniform(0.1, 0.8, 2))
    killed = {(w, at) for w, _, at in kills}
    for w, specs in die.items():
        for spec in specs:
            assert (w, spec) in killed, f"engine {w} never reached {spec}: {kills}"
    # the kills at a progress always find a victim (the timed ones may
    # come after the end)
    assert len(kills) >= sum(map(len, die.values())) + 2, kills
    check_against_reference(wl, results)
    check_pool_drained(pool_name, 256)


def test_the_demo_runs_and_reports(pool_name, capsys):
    # pool_name: a private KVBM_SHM_DIR, which the demo's engines inherit
    rc = demo.main(["--engines", "2", "--chats", "3", "--turns", "2", "--system", "48",
                    "--new", "4", "--blocks", "64", "--kill"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "SIGKILLed" in out and "restarted" in out
    assert "replies: all 6 identical bit for bit" in out
    assert "pool.check(lock=True): clean" in out
    assert os.listdir(os.environ["KVBM_SHM_DIR"]) == []     # pools and KV files removed
