/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_evict.c - the eviction backends (spec 2.3, 3.4, 3.6): the
 * capacity-lifecycle tests swept over every backend, the reference's
 * multi-level LRU and lineage order tests through the pool API, config
 * validation, and our lfru. Every test ends with the invariant checker,
 * which walks the lineage forest too.
 */
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <string.h>

#include "helpers.h"
#include "../lib/pool.h"
#include "../lib/evict.h"
#include "../shm/failpoint.h"

#define BS 4

static struct kvbm_pool *pool_with(const char *name, uint32_t blocks, uint32_t backend)
{
	struct kvbm_config cfg = t_cfg();

	cfg.block_count = blocks;
	cfg.backend = backend;
	return t_create(name, &cfg);
}

/* Registers one block under @h, held. */
static struct kvbm_block reg1(struct kvbm_pool *p, struct kvbm_plh h)
{
	struct kvbm_block b;

	t_register(p, &h, 1, &b);
	return b;
}

/* Allocates @n (all by eviction) and returns the evicted hashes. */
static void evict_all(struct kvbm_pool *p, uint32_t n, struct kvbm_plh *ev)
{
	struct kvbm_block b[64];
	uint32_t nev;

	ck_assert_uint_le(n, 64);
	ck_assert_int_eq(kvbm_allocate_blocks(p, n, b, ev, &nev), 0);
	ck_assert_uint_eq(nev, n);
	t_release(p, b, n);
}

START_TEST(test_capacity_lifecycle_every_backend)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 32, (uint32_t)_i);
	struct kvbm_block b[32], c[16], m[8];
	struct kvbm_plh h[32];

	t_seq_hashes(5000 + 100 * (uint32_t)_i, 32, BS, h);
	t_register(p, h, 32, b);
	t_release(p, b, 32);
	struct kvbm_metrics mt = t_metrics(p);
	ck_assert_int_eq(mt.inactive_pool_size, 32);
	ck_assert_int_eq(mt.reset_pool_size, 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 32);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 16, c, NULL, NULL), 0);
	mt = t_metrics(p);
	ck_assert_uint_eq(mt.evictions, 16);
	ck_assert_int_eq(mt.inactive_pool_size, 16);
	/* mutable drops never reach the inactive pool */
	t_release(p, c, 16);
	mt = t_metrics(p);
	ck_assert_int_eq(mt.reset_pool_size, 16);
	ck_assert_int_eq(mt.inactive_pool_size, 16);
	/* what is left is matchable and comes back */
	uint8_t pres[32];
	ck_assert_int_eq(kvbm_check_presence(p, h, 32, pres), 16);
	for (int i = 0, k = 0; i < 32 && k < 8; i++)
		if (pres[i])
			ck_assert_int_eq(kvbm_match_blocks(p, &h[i], 1, &m[k++]), 1);
	t_release(p, m, 8);
	ck_assert_int_eq(kvbm_reset_inactive_pool(p), 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 32);
	t_done(p, name);
}
END_TEST

/* Two chains A->B and X->Y released A, X, B, Y. Tick: B, A, Y, X (a
 * parent keeps its insertion tick); Fifo: B, Y, A, X (a re-leafed parent
 * goes to the tail); LRU: A, X, B, Y. */
START_TEST(test_interleaved_chains)
{
	static const uint32_t backends[] = {KVBM_BACKEND_LINEAGE, KVBM_BACKEND_LINEAGE_FIFO,
					    KVBM_BACKEND_LRU};
	static const int want[][4] = {{1, 0, 3, 2}, {1, 3, 0, 2}, {0, 2, 1, 3}};
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 4, backends[_i]);
	struct kvbm_plh ab[2], xy[2], h[4], ev[4];
	struct kvbm_block b[4];

	t_seq_hashes(100, 2, BS, ab);
	t_seq_hashes(900, 2, BS, xy);
	h[0] = ab[0], h[1] = ab[1], h[2] = xy[0], h[3] = xy[1];
	for (int i = 0; i < 4; i++)
		b[i] = reg1(p, h[i]);
	t_release(p, &b[0], 1);
	t_release(p, &b[2], 1);
	t_release(p, &b[1], 1);
	t_release(p, &b[3], 1);
	evict_all(p, 4, ev);
	for (int i = 0; i < 4; i++)
		ck_assert_msg(kvbm_plh_eq(ev[i], h[want[_i][i]]), "backend %u: eviction %d",
			      backends[_i], i);
	t_done(p, name);
}
END_TEST

/* A child released while its parent is held hangs under a ghost; the
 * parent, released later, takes the ghost's place: still child first. */
START_TEST(test_lineage_out_of_order_insert)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 3, (uint32_t)_i ? KVBM_BACKEND_LINEAGE_FIFO
							     : KVBM_BACKEND_LINEAGE);
	struct kvbm_plh h[3], ev[3];
	struct kvbm_block b[3];

	t_seq_hashes(300, 3, BS, h);
	t_register(p, h, 3, b);
	t_release(p, &b[2], 1); /* ghost for h[1] */
	ck_assert_int_eq(t_check(p), 0);
	t_release(p, &b[1], 1); /* ghost for h[0] */
	t_release(p, &b[0], 1);
	ck_assert_int_eq(t_check(p), 0);
	evict_all(p, 3, ev);
	for (int i = 0; i < 3; i++)
		ck_assert(kvbm_plh_eq(ev[i], h[2 - i]));
	t_done(p, name);
}
END_TEST

/* A 1000-deep chain: leaves only, so it goes deepest first whatever the
 * release order; removing nodes and pruning ghosts is iterative. */
START_TEST(test_lineage_deep_chain)
{
	enum { N = 1000 };
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, N, KVBM_BACKEND_LINEAGE);
	static struct kvbm_plh h[N];
	static struct kvbm_block b[N];
	static struct kvbm_plh ev[N];

	t_seq_hashes(7, N, BS, h);
	t_register(p, h, N, b);
	if (_i == 0) {
		t_release(p, b, N); /* parents first: the root is the oldest */
	} else {
		for (int i = N; i-- > 0;) /* children first: a ghost each time */
			t_release(p, &b[i], 1);
	}
	ck_assert_int_eq(t_check(p), 0);
	uint32_t nev;
	ck_assert_int_eq(kvbm_allocate_blocks(p, N, b, ev, &nev), 0);
	ck_assert_uint_eq(nev, N);
	for (int i = 0; i < N; i++)
		ck_assert(kvbm_plh_eq(ev[i], h[N - 1 - i]));
	t_release(p, b, N);
	t_done(p, name);
}
END_TEST

/* Reference test_multi_lru_priority_levels with thresholds [2, 6, 15]:
 * 1 (the registration), 2, 6 and 15 uses put blocks in levels 0-3, and
 * level 0 drains first whatever the release order. */
START_TEST(test_multi_lru_levels)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	static const int uses[4] = {1, 2, 6, 15};
	struct kvbm_plh h[4], ev[4];
	struct kvbm_block b[4], m;

	cfg.block_count = 4;
	cfg.backend = KVBM_BACKEND_MULTI_LRU;
	cfg.mlru_thresholds[0] = 2;
	cfg.mlru_thresholds[1] = 6;
	cfg.mlru_thresholds[2] = 15;
	struct kvbm_pool *p = t_create(name, &cfg);
	for (int i = 0; i < 4; i++) {
		h[i] = t_hash1(4000 + 10 * (uint32_t)i, BS);
		b[i] = reg1(p, h[i]);
		for (int k = 1; k < uses[i]; k++) {
			ck_assert_int_eq(kvbm_match_blocks(p, &h[i], 1, &m), 1);
			t_release(p, &m, 1);
		}
	}
	for (int i = 4; i-- > 0;) /* the hottest released first */
		t_release(p, &b[i], 1);
	evict_all(p, 4, ev);
	for (int i = 0; i < 4; i++)
		ck_assert(kvbm_plh_eq(ev[i], h[i]));
	t_done(p, name);
}
END_TEST

/* lfru: a block used 8 times outlives one used once, released after it
 * (three pool turnovers of grace); LRU would evict it first. */
START_TEST(test_lfru_keeps_the_frequent_block)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 2, KVBM_BACKEND_LFRU);
	struct kvbm_plh h[2], ev[2];
	struct kvbm_block a, b, m;

	h[0] = t_hash1(100, BS);
	h[1] = t_hash1(200, BS);
	a = reg1(p, h[0]);
	for (int k = 1; k < 8; k++) {
		ck_assert_int_eq(kvbm_match_blocks(p, &h[0], 1, &m), 1);
		t_release(p, &m, 1);
	}
	b = reg1(p, h[1]);
	t_release(p, &a, 1);
	t_release(p, &b, 1);
	evict_all(p, 1, ev);
	ck_assert(kvbm_plh_eq(ev[0], h[1]));
	t_done(p, name);
}
END_TEST

START_TEST(test_eviction_config_validation)
{
	struct kvbm_config cfg;
	const char *why = NULL;

	kvbm_config_init(&cfg);
	ck_assert_uint_eq(cfg.backend, KVBM_BACKEND_LINEAGE); /* the reference's default */
	ck_assert_uint_eq(cfg.mlru_thresholds[0], 3);
	ck_assert_uint_eq(cfg.mlru_thresholds[2], 15);
	cfg.backend = KVBM_BACKEND_MULTI_LRU;
	cfg.mlru_thresholds[2] = 16;
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
	ck_assert_str_eq(why, "frequency thresholds must be <= 15");
	cfg.mlru_thresholds[2] = 15;
	cfg.mlru_thresholds[1] = 2;
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
	ck_assert_str_eq(why, "frequency thresholds must be in ascending order");
	cfg.mlru_thresholds[1] = 8;
	cfg.tinylfu = KVBM_TINYLFU_NONE;
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
	ck_assert_ptr_nonnull(strstr(why, "frequency tracking"));
	cfg.tinylfu = KVBM_TINYLFU_SMALL;
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), 0);
	cfg.backend = KVBM_BACKEND_COUNT;
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
	for (uint32_t b = 0; b < KVBM_BACKEND_COUNT; b++)
		ck_assert_int_eq(kvbm_backend_parse(kvbm_backend_name(b)), (int)b);
	ck_assert_int_eq(kvbm_backend_parse("belady"), -EINVAL);
}
END_TEST

/* audit_counter_tests: a touch for each returned match block (active or
 * inactive), each scattered hit occurrence, each scan hit when asked, and a
 * new registration; never for a scan without touch, a duplicate
 * registration or a presence check. */
START_TEST(test_frequency_touches_where_the_reference_does)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	cfg.block_count = 16;
	cfg.tinylfu = KVBM_TINYLFU_SMALL;
	struct kvbm_pool *p = t_create(name, &cfg);
	struct kvbm_plh h[2], dup[2];
	struct kvbm_block b[2], m[2], d[2];
	uint8_t found[3], pres[2];

	t_seq_hashes(900, 2, BS, h);
	ck_assert_int_eq(kvbm_frequency_estimate(p, h[0]), 0);
	t_register(p, h, 2, b); /* new: one touch each */
	ck_assert_int_eq(kvbm_frequency_estimate(p, h[0]), 1);
	dup[0] = dup[1] = h[0];
	t_register(p, dup, 1, d); /* a duplicate registration: no touch */
	ck_assert_int_eq(kvbm_frequency_estimate(p, h[0]), 1);
	t_release(p, d, 1);
	ck_assert_int_eq(kvbm_match_blocks(p, h, 2, m), 2); /* active hits */
	t_release(p, m, 2);
	ck_assert_int_eq(kvbm_frequency_estimate(p, h[0]), 2);
	t_release(p, b, 2);
	ck_assert_int_eq(kvbm_match_blocks(p, h, 1, m), 1); /* inactive hit */
	t_release(p, m, 1);
	ck_assert_int_eq(kvbm_frequency_estimate(p, h[0]), 3);
	ck_assert_int_eq(kvbm_scan_matches(p, dup, 2, 0, m), 1);
	t_release(p, m, 1);
	ck_assert_int_eq(kvbm_frequency_estimate(p, h[0]), 3);
	ck_assert_int_eq(kvbm_scan_matches(p, dup, 2, KVBM_SCAN_TOUCH, m), 1);
	t_release(p, m, 1); /* distinct hits: one touch for the repeated hash */
	ck_assert_int_eq(kvbm_frequency_estimate(p, h[0]), 4);
	struct kvbm_plh sc[3] = {h[0], t_hash1(424242, BS), h[0]};
	struct kvbm_block so[3];
	ck_assert_int_eq(kvbm_match_blocks_scattered(p, sc, 3, so, found), 2);
	t_release(p, &so[0], 1);
	t_release(p, &so[2], 1);
	ck_assert_int_eq(kvbm_frequency_estimate(p, h[0]), 6);
	ck_assert_int_eq(kvbm_check_presence(p, h, 2, pres), 2);
	ck_assert_int_eq(kvbm_frequency_estimate(p, h[0]), 6);
	ck_assert_int_eq(kvbm_frequency_estimate(p, h[1]), 2);
	ck_assert_int_eq(kvbm_scan_matches(p, h, 2, 2, m), -EINVAL);
	ck_assert_int_eq(kvbm_frequency_estimate(NULL, h[0]), -EINVAL);
	t_done(p, name);
}
END_TEST

/*
 * Ghosts run out: a 64-block chain whose interior blocks are reset on
 * release one by one, root first, leaves each one's children under a
 * ghost, 63 of them against 48 ghost nodes. Past that, nodes go without
 * their parent (counted as orphans); the forest must stay sound for the
 * checker and every block must still come back.
 */
START_TEST(test_lineage_out_of_ghosts)
{
	enum { N = 64 };
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, N, KVBM_BACKEND_LINEAGE);
	struct kvbm_plh h[N];
	struct kvbm_block b[N], m;

	t_seq_hashes(31, N, BS, h);
	t_register(p, h, N, b);
	t_release(p, b, N);
	for (int i = 0; i < N - 1; i++) {
		ck_assert_int_eq(kvbm_match_blocks(p, &h[i], 1, &m), 1);
		ck_assert_int_eq(kvbm_set_reset_on_release(p, &m, 1), 0);
		t_release(p, &m, 1);
		ck_assert_int_eq(t_check(p), 0);
	}
	ck_assert_uint_gt(p->ev->orphans, 0);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	/* the chain again, over what is left: orphans keep counting until
	 * the forest empties */
	t_register(p, h, N, b);
	t_release(p, b, N);
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_int_eq(kvbm_allocate_blocks(p, N, b, NULL, NULL), 0);
	ck_assert_uint_eq(p->ev->orphans, 0);
	ck_assert_uint_eq(p->ev->nghosts, 0);
	t_release(p, b, N);
	t_done(p, name);
}
END_TEST

/*
 * Reference lookup_rejects_same_position_fragment_but_different_full_hash,
 * in the forest: A = PLH(0xAA, parent 0x11, pos 5) and B = PLH(0xAA,
 * parent 0x22, pos 5) share a key. A leaves with a child, so a ghost
 * keeps A's key and its link under A's parent; B then takes that ghost's
 * place, but B's parent is another one: the link goes back to A's parent
 * (which becomes a leaf again) instead of passing to B.
 */
START_TEST(test_lineage_key_twin_takes_a_ghost)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 8, KVBM_BACKEND_LINEAGE);
	uint64_t g = 0x99, a_par = 0x11, b_par = 0x22, cur = 0xAA;
	struct kvbm_plh pa, a, c, b;
	struct kvbm_block bl[3], bb, m, all[8];
	uint32_t nev;
	struct kvbm_plh ev[8];

	ck_assert_int_eq(kvbm_plh_make(a_par, &g, 4, &pa), 0);
	ck_assert_int_eq(kvbm_plh_make(cur, &a_par, 5, &a), 0);
	ck_assert_int_eq(kvbm_plh_make(0x77, &cur, 6, &c), 0);
	ck_assert_int_eq(kvbm_plh_make(cur, &b_par, 5, &b), 0);
	struct kvbm_plh chain[3] = {pa, a, c};
	t_register(p, chain, 3, bl);
	t_release(p, bl, 3);
	ck_assert_int_eq(kvbm_match_blocks(p, &a, 1, &m), 1);
	ck_assert_int_eq(kvbm_set_reset_on_release(p, &m, 1), 0);
	t_release(p, &m, 1); /* A goes; a ghost holds C under A's key */
	ck_assert_int_eq(t_check(p), 0);
	t_register(p, &b, 1, &bb);
	t_release(p, &bb, 1);
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_uint_eq(p->ev->orphans, 0);
	/* leaves first: PA (a leaf again) and C (under B's key) before B */
	ck_assert_int_eq(kvbm_allocate_blocks(p, 8, all, ev, &nev), 0);
	ck_assert_uint_eq(nev, 3);
	int bpos = -1;
	for (uint32_t i = 0; i < nev; i++)
		if (kvbm_plh_eq(ev[i], b))
			bpos = (int)i;
	ck_assert_int_eq(bpos, 2);
	t_release(p, all, 8);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * Two real nodes with one key (A = PLH(0xAA, parent 0x11, pos 5) and B =
 * PLH(0xAA, parent 0x22, pos 5)): the forest marks key twins, after which
 * it finds parents by key, not by hint (a hint that has the key would be
 * one of two). The checker verifies the mark: unmarked twins are reported.
 * The mark goes when the forest empties.
 */
START_TEST(test_lineage_real_key_twins_are_marked)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 8, KVBM_BACKEND_LINEAGE);
	uint64_t g = 0x99, a_par = 0x11, b_par = 0x22, cur = 0xAA;
	struct kvbm_plh pa, a, pb, b;
	struct kvbm_block ba[2], bb[2], all[8];

	ck_assert_int_eq(kvbm_plh_make(a_par, &g, 4, &pa), 0);
	ck_assert_int_eq(kvbm_plh_make(cur, &a_par, 5, &a), 0);
	ck_assert_int_eq(kvbm_plh_make(b_par, &g, 4, &pb), 0);
	ck_assert_int_eq(kvbm_plh_make(cur, &b_par, 5, &b), 0);
	struct kvbm_plh ca[2] = {pa, a}, cb[2] = {pb, b};
	t_register(p, ca, 2, ba);
	t_release(p, ba, 2);
	ck_assert_uint_eq(p->ev->twins, 0);
	t_register(p, cb, 2, bb);
	t_release(p, bb, 2);
	ck_assert_uint_eq(p->ev->twins, 1);
	ck_assert_int_eq(t_check(p), 0);
	p->ev->twins = 0; /* as if the insertion had missed them */
	ck_assert_int_gt(kvbm_pool_check(p, KVBM_CHECK_LOCK | KVBM_CHECK_QUIESCENT, NULL, NULL), 0);
	p->ev->twins = 1;
	ck_assert_int_eq(kvbm_allocate_blocks(p, 8, all, NULL, NULL), 0);
	ck_assert_uint_eq(p->ev->twins, 0);
	t_release(p, all, 8);
	t_done(p, name);
}
END_TEST

/* ---- the published policies (lib/evict_queue.c) ---------------------------- */

static const uint32_t queued[] = {KVBM_BACKEND_S3FIFO, KVBM_BACKEND_ARC,
				  KVBM_BACKEND_WTINYLFU, KVBM_BACKEND_LECAR, KVBM_BACKEND_ADAPT};

/* The queue (0..3) slot @b is on, or -1. */
static int queue_of(struct kvbm_pool *p, struct kvbm_block b)
{
	uint32_t l = p->seg.slots[b.id].list;

	return l >= KVBM_LIST_LRU && l < KVBM_LIST_LRU + 4 ? (int)(l - KVBM_LIST_LRU) : -1;
}

/* Registers and releases one one-block sequence @id; returns its block. */
static struct kvbm_block once(struct kvbm_pool *p, uint32_t id)
{
	struct kvbm_plh h = t_hash1(id, BS);
	struct kvbm_block b = reg1(p, h);

	t_release(p, &b, 1);
	return b;
}

/* Matches the cached block @h and releases it, @n times. */
static void reuse(struct kvbm_pool *p, struct kvbm_plh h, int n)
{
	struct kvbm_block m;

	for (int k = 0; k < n; k++) {
		ck_assert_int_eq(kvbm_match_blocks(p, &h, 1, &m), 1);
		t_release(p, &m, 1);
	}
}

/* A chain A -> B released parent first: LRU evicts A, stranding B; the
 * queued backends take the leaf B first, though A is older in every queue. */
START_TEST(test_queued_evict_leaves_only)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 2, queued[_i]);
	struct kvbm_plh h[2], ev[2];
	struct kvbm_block b[2];

	t_seq_hashes(700, 2, BS, h);
	t_register(p, h, 2, b);
	t_release(p, &b[0], 1);
	t_release(p, &b[1], 1);
	ck_assert_int_eq(t_check(p), 0);
	evict_all(p, 2, ev);
	ck_assert_msg(kvbm_plh_eq(ev[0], h[1]), "backend %u evicted the parent", queued[_i]);
	ck_assert(kvbm_plh_eq(ev[1], h[0]));
	t_done(p, name);
}
END_TEST

/* S3-FIFO and ARC: A, used once more while cached (S3-FIFO counts it and
 * moves it to M at S's head, ARC moves it to T2), outlives nine one-shot
 * blocks released after it, which go in release order; LRU and FIFO would
 * take A first. */
START_TEST(test_queued_reused_block_outlives_one_shots)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 10, queued[_i]);
	struct kvbm_plh a = t_hash1(100, BS), ev[9];
	struct kvbm_block m;

	once(p, 100);
	ck_assert_int_eq(kvbm_match_blocks(p, &a, 1, &m), 1);
	t_release(p, &m, 1);
	for (uint32_t i = 0; i < 9; i++)
		once(p, 200 + i);
	ck_assert_int_eq(t_check(p), 0);
	evict_all(p, 9, ev);
	for (uint32_t i = 0; i < 9; i++)
		ck_assert_msg(kvbm_plh_eq(ev[i], t_hash1(200 + i, BS)), "backend %u: eviction %u",
			      queued[_i], i);
	uint8_t pres;
	ck_assert_int_eq(kvbm_check_presence(p, &a, 1, &pres), 1);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/* The ghosts: a block evicted lately comes back to S3-FIFO's M or ARC's
 * T2 (queue 1), a new one to S or T1 (queue 0); in ARC, a hit in B1 grows
 * T1's target. */
START_TEST(test_queued_ghost_readmits)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 10, queued[_i]);
	struct kvbm_plh ev[1], x0 = t_hash1(300, BS);

	for (uint32_t i = 0; i < 10; i++)
		once(p, 300 + i);
	evict_all(p, 1, ev);
	ck_assert(kvbm_plh_eq(ev[0], x0));
	ck_assert_uint_eq(p->ev->qtarget, 0);
	struct kvbm_block b = once(p, 300);
	ck_assert_int_eq(queue_of(p, b), 1);
	if (queued[_i] == KVBM_BACKEND_ARC)
		ck_assert_uint_eq(p->ev->qtarget, 1);
	evict_all(p, 1, ev); /* X1, from S or T1 */
	ck_assert(kvbm_plh_eq(ev[0], t_hash1(301, BS)));
	b = once(p, 400); /* never seen */
	ck_assert_int_eq(queue_of(p, b), 0);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/* The ghost table answers for the keys it remembers and for no other:
 * with a quarter of its entries live, a key never put is not taken for
 * another key of its bucket (the fingerprint compare), a remembered one
 * is, from the list it was put in, with its age in that list's
 * evictions, and only once. */
START_TEST(test_ghost_table_takes_only_its_keys)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 512, KVBM_BACKEND_ARC);
	enum { N = 256 };
	struct kvbm_plh in[N], out[N];
	uint32_t age = 0;

	t_seq_hashes(7000, N, BS, in);
	t_seq_hashes(9000, N, BS, out);
	for (uint32_t i = 0; i < N; i++)
		kvbm_ghost_put(p, in[i], i & 1);
	for (uint32_t i = 0; i < N; i++)
		ck_assert_msg(kvbm_ghost_take(p, out[i], 3, &age) == 0,
			      "key %u never put was taken", i);
	for (uint32_t i = 0; i < N; i++) {
		ck_assert_uint_eq(kvbm_ghost_take(p, in[i], 3, &age), (i & 1) + 1);
		/* puts into its list since it, itself included: one in two */
		ck_assert_uint_eq(age, N / 2 - i / 2);
		ck_assert_uint_eq(kvbm_ghost_take(p, in[i], 3, &age), 0);
	}
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/* adapt follows expert @e: its miniature's hits at full, the others' at
 * none (@e < 0: all equal, a tie). */
static void steer(struct kvbm_pool *p, int e)
{
	kvbm_mini_clear(p);
	for (int k = 0; k < (int)KVBM_MINIS; k++)
		((struct kvbm_shm_mini *)p->mini + k)->hits = e < 0 || k == e ? 1ull << 40 : 0;
}

/*
 * adapt's experts: A (used four times: M's head, the least recently used),
 * B and C (used once: S), D (used twice: M). Run 0 follows the LRU expert
 * (A goes), run 1 the filter (S holds more than its tenth: its head B
 * goes), run 2 LFU in a pool of A and B alone, where S is within its
 * tenth, so that LRU and the filter would both take A (B, the least
 * frequent, goes). Run 3 is run 1's pool with the three miniatures tied:
 * LRU's order (A goes), the floor. The victim comes back while
 * remembered: it goes to M.
 */
START_TEST(test_adapt_follows_its_miniatures)
{
	T_NAME(name);
	int e = _i < 3 ? _i : -1;
	struct kvbm_pool *p = pool_with(name, e == 2 ? 2 : 4, KVBM_BACKEND_ADAPT);
	struct kvbm_plh a = t_hash1(10, BS), d = t_hash1(40, BS), ev[1];
	const struct kvbm_plh want[4] = {a, t_hash1(20, BS), t_hash1(20, BS), a};

	once(p, 10);
	reuse(p, a, 3);
	once(p, 20);
	if (e != 2) {
		once(p, 30);
		once(p, 40);
		reuse(p, d, 1);
	}
	steer(p, e);
	ck_assert_int_eq(t_check(p), 0);
	evict_all(p, 1, ev);
	ck_assert_msg(kvbm_plh_eq(ev[0], want[_i]), "run %d", _i);
	struct kvbm_block back = reg1(p, want[_i]); /* the free block: no eviction */
	t_release(p, &back, 1);
	ck_assert_int_eq(queue_of(p, back), 1);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * adapt's LRU expert takes the oldest leaf over both queues and renews no
 * parent younger than it. X (used once: S) is older than a chain P -> C
 * used twice (M: P, then C). X goes; P, a parent younger than X, stays at
 * M's head. Scanning M on its own to its first leaf (C) would have moved
 * P to M's tail, out of LRU's order (0.005 below lru at agentic 25%).
 */
START_TEST(test_adapt_lru_expert_is_lru)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 3, KVBM_BACKEND_ADAPT);
	struct kvbm_plh pc[2], ev[1];
	struct kvbm_block b[2];

	once(p, 10);
	t_seq_hashes(500, 2, BS, pc);
	t_register(p, pc, 2, b);
	t_release(p, b, 2);
	reuse(p, pc[0], 1);
	reuse(p, pc[1], 1);
	ck_assert_int_eq(queue_of(p, b[0]), 1);
	ck_assert_uint_eq(kvbm_q_head(p, 1), b[0].id);
	steer(p, 0);
	evict_all(p, 1, ev);
	ck_assert(kvbm_plh_eq(ev[0], t_hash1(10, BS)));
	ck_assert_uint_eq(kvbm_q_head(p, 1), b[0].id);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * The experts added to the first three, each against the one it refines:
 *  - run 0 and 1, lfru and LFU: A used twice, then (the queue clock moved
 *    on by three pools' worth of ticks) B used once. LFU takes B, the
 *    less frequent; lfru gives A's second use one pool turnover and no
 *    more, so A, three turnovers older, goes. Following lfru from a heap
 *    in LFU's order switches the heap (evict.qtarget) and rebuilds it.
 *  - run 2, clock against the filter: A used four times, then D twice,
 *    both in M, S empty. The filter takes M's head A; the clock gives A
 *    another round for its uses in M, and D, with none, goes.
 *  - run 3, ARC against the filter: the pool of the miniatures test (S
 *    holds B and C, more than a tenth). The filter takes S's head B; with
 *    ARC's miniature's target at its whole size, S is not over it, and M's
 *    head A goes.
 */
START_TEST(test_adapt_more_experts)
{
	T_NAME(name);
	static const int follow[4] = {KVBM_AE_LFRU, KVBM_AE_LFU, KVBM_AE_CLOCK, KVBM_AE_ARC};
	struct kvbm_pool *p = pool_with(name, _i == 3 ? 4 : 2, KVBM_BACKEND_ADAPT);
	struct kvbm_plh a = t_hash1(10, BS), d = t_hash1(40, BS), ev[1];
	const struct kvbm_plh want[4] = {a, t_hash1(20, BS), d, a};

	once(p, 10);
	if (_i < 2) {
		reuse(p, a, 1);
		p->ev->qtick += 3 * p->nslots;
		once(p, 20);
	} else {
		reuse(p, a, 3);
		if (_i == 3) {
			once(p, 20);
			once(p, 30);
		}
		once(p, 40);
		reuse(p, d, 1);
	}
	steer(p, follow[_i]);
	if (_i == 3)
		((struct kvbm_shm_mini *)p->mini + KVBM_AE_ARC)->target = UINT32_MAX; /* clamped */
	ck_assert_int_eq(kvbm_adapt_heap_lfru(p), 0); /* a new pool's heap: LFU's */
	evict_all(p, 1, ev);
	ck_assert_msg(kvbm_plh_eq(ev[0], want[_i]), "run %d", _i);
	ck_assert_int_eq(kvbm_adapt_heap_lfru(p), _i == 0);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * A process killed while it rebuilds adapt's heap in the other order
 * (evict.adapt.reorder: some leaves' priorities already lfru's, the heap
 * not yet rebuilt): the next locker's recovery reinserts every block in
 * the order evict.qtarget names, the checker passes, every block comes
 * back, and lfru is followed from there.
 */
static int reorder_victim(const char *name)
{
	struct kvbm_pool *q = NULL;
	struct kvbm_block b;

	if (kvbm_pool_open(name, NULL, 0, &q) != 0)
		return 90;
	steer(q, KVBM_AE_LFRU);
	kvbm_fp_arm("evict.adapt.reorder:3");
	if (kvbm_allocate_blocks(q, 1, &b, NULL, NULL) != 0)
		return 70;
	return 77; /* the failpoint never fired */
}

START_TEST(test_adapt_killed_in_reorder)
{
	T_NAME(name);
	enum { TOTAL = 32 };
	struct kvbm_pool *p = pool_with(name, TOTAL, KVBM_BACKEND_ADAPT);
	struct kvbm_plh h[TOTAL];
	struct kvbm_block b[TOTAL];
	struct kvbm_pool_info pi;

	for (uint32_t i = 0; i < TOTAL; i++) {
		h[i] = t_hash1(100 + i, BS);
		b[i] = reg1(p, h[i]);
		t_release(p, &b[i], 1);
	}
	reuse(p, h[0], 3); /* one frequent block among leaves used once */
	p->ev->qtick += TOTAL; /* a turnover on: the heap may switch */
	ck_assert_int_eq(kvbm_adapt_heap_lfru(p), 0);
	pid_t pid = fork();
	if (pid == 0)
		_exit(reorder_victim(name));
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	ck_assert_int_eq(kvbm_reap(p) >= 0, 1);
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	ck_assert_uint_eq(pi.recoveries, 1);
	ck_assert_int_eq(kvbm_adapt_heap_lfru(p), 1); /* set before the rebuild */
	ck_assert_int_eq(t_check(p), 0);
	uint8_t pres[TOTAL];
	ck_assert_int_eq(kvbm_check_presence(p, h, TOTAL, pres), TOTAL);
	/* lfru now, from the rebuilt heap: the oldest block used once goes,
	 * not the frequent one */
	struct kvbm_plh ev[1];
	steer(p, KVBM_AE_LFRU);
	evict_all(p, 1, ev);
	ck_assert(kvbm_plh_eq(ev[0], h[1]));
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * The miniatures may hold anything: every byte of them overwritten, the
 * checker has nothing to report, traffic goes on (a mini found
 * inconsistent starts again, empty), and they learn again: a block used
 * over and over is a hit in every miniature that samples it.
 */
START_TEST(test_adapt_miniatures_any_content)
{
	T_NAME(name);
	enum { N = 64 };
	struct kvbm_pool *p = pool_with(name, N, KVBM_BACKEND_ADAPT);
	struct kvbm_shm_mini *h = (struct kvbm_shm_mini *)p->mini;
	uint64_t bytes = KVBM_MINIS * (sizeof(*h) + kvbm_mini_bytes(p->mini_ents, p->mini_tslots));

	memset(p->mini, _i ? 0xff : 0xa5, bytes);
	ck_assert_int_eq(t_check(p), 0);
	for (uint32_t k = 0; k < 4 * N; k++)
		once(p, 1000 + k); /* a pool's turnovers of new blocks: evictions */
	ck_assert_int_eq(t_check(p), 0);
	for (uint32_t k = 0; k < KVBM_MINIS; k++)
		ck_assert_uint_eq(h[k].built, p->mini_ents);
	uint64_t before = kvbm_mini_hits(p, 0);
	for (uint32_t k = 0; k < N / 2; k++) /* the latest 32, still cached: some sampled */
		reuse(p, t_hash1(1000 + 4 * N - 1 - k, BS), 2);
	ck_assert_uint_gt(kvbm_mini_hits(p, 0), before);
	t_done(p, name);
}
END_TEST

/* W-TinyLFU: the window's oldest against probation's. A hot block H (used
 * six times) at probation's head outlives 50 rounds of one-shot blocks,
 * each losing its duel; LRU would evict H in the first round. A frequent
 * candidate F then wins its duel: into probation, and the victim goes. */
START_TEST(test_wtinylfu_admission)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 100, KVBM_BACKEND_WTINYLFU);
	struct kvbm_plh hot = t_hash1(10, BS), f = t_hash1(20, BS);
	struct kvbm_block h = reg1(p, hot), m;
	uint8_t pres;

	for (int k = 0; k < 5; k++) {
		ck_assert_int_eq(kvbm_match_blocks(p, &hot, 1, &m), 1);
		t_release(p, &m, 1);
	}
	t_release(p, &h, 1);
	for (uint32_t i = 0; i < 99; i++)
		once(p, 1000 + i);
	for (uint32_t i = 0; i < 50; i++) {
		once(p, 2000 + i); /* its allocation evicts */
		ck_assert_int_eq(kvbm_check_presence(p, &hot, 1, &pres), 1);
	}
	ck_assert_int_eq(queue_of(p, h), 1);
	ck_assert_int_eq(t_check(p), 0);
	/* F, used nine times (H six), reaches the window's head: admitted */
	struct kvbm_block fb = reg1(p, f);
	for (int k = 0; k < 8; k++) {
		ck_assert_int_eq(kvbm_match_blocks(p, &f, 1, &m), 1);
		t_release(p, &m, 1);
	}
	t_release(p, &fb, 1);
	for (uint32_t i = 0; p->seg.ctl->lists[0].head - 1 != fb.id; i++) {
		ck_assert_uint_lt(i, 100); /* the window's older blocks go */
		(void)once(p, 3000 + i);
	}
	(void)once(p, 4000);
	ck_assert_int_eq(kvbm_check_presence(p, &f, 1, &pres), 1);
	ck_assert_int_eq(queue_of(p, fb), 1);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * LeCaR: A is the older leaf and used four times, B newer and used once,
 * so the LRU expert would evict A and the LFU one B. Run 0: the weight all
 * on LFU, B goes; run 1: all on LRU, A goes. Then, at even weights, the
 * block that went comes back: its expert was wrong, and the other's
 * weight rises (LeCaR's regret).
 */
START_TEST(test_lecar_experts_and_regret)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 2, KVBM_BACKEND_LECAR);
	struct kvbm_plh a = t_hash1(10, BS), b = t_hash1(20, BS), ev[1];
	struct kvbm_block m;

	once(p, 10);
	reuse(p, a, 3);
	once(p, 20);
	/* A was released again after B: make A the older by releasing B
	 * once more */
	ck_assert_int_eq(kvbm_match_blocks(p, &b, 1, &m), 1);
	t_release(p, &m, 1);
	ck_assert_uint_gt(kvbm_frequency_estimate(p, a), kvbm_frequency_estimate(p, b));
	p->ev->qtarget = (uint32_t)(_i ? (int32_t)KVBM_LECAR_ONE / 2 : -(int32_t)KVBM_LECAR_ONE / 2);
	ck_assert_int_eq(t_check(p), 0);
	evict_all(p, 1, ev);
	ck_assert_msg(kvbm_plh_eq(ev[0], _i ? a : b), "run %d", _i);
	p->ev->qtarget = 0;
	struct kvbm_block back = reg1(p, _i ? a : b); /* the free block: no eviction */
	t_release(p, &back, 1);
	int32_t w = (int32_t)p->ev->qtarget;
	ck_assert_msg(_i ? w < 0 : w > 0, "run %d: LRU weight %d", _i, w);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * An allocation that rolls back puts its victims back (kvbm_evict_restore).
 * LeCaR's LFU expert takes its victim from the middle of the recency
 * queue (the least frequent leaf, not the oldest): it must go back where
 * its tick says, or the queue's ticks would decrease, which the checker
 * reports and recovery relies on. The same for every queued backend, its
 * victim taken and put back under the mutex as pick_victims does.
 */
START_TEST(test_queued_restore_keeps_the_order)
{
	T_NAME(name);
	struct kvbm_pool *p = pool_with(name, 8, queued[_i]);
	struct kvbm_plh h = t_hash1(50, BS);
	struct kvbm_block x = reg1(p, h), m;

	for (int k = 0; k < 3; k++) { /* the oldest, and the most frequent */
		ck_assert_int_eq(kvbm_match_blocks(p, &h, 1, &m), 1);
		t_release(p, &m, 1);
	}
	t_release(p, &x, 1);
	for (uint32_t i = 1; i < 8; i++)
		once(p, 50 + i);
	if (queued[_i] == KVBM_BACKEND_LECAR)
		p->ev->qtarget = (uint32_t)-(int32_t)(KVBM_LECAR_ONE / 2); /* LFU only */
	if (queued[_i] == KVBM_BACKEND_ADAPT)
		steer(p, 2); /* LFU */
	ck_assert_int_eq(kvbm_store_lock(p, KVBM_OP_EVICT, 0), 0);
	uint32_t s = kvbm_evict_first(p);
	ck_assert_uint_lt(s, 8);
	kvbm_evict_remove(p, s);
	kvbm_evict_restore(p, s);
	kvbm_store_unlock(p);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

Suite *make_evict_suite(void)
{
	Suite *s = suite_create("evict");
	TCase *tc = tcase_create("backends");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_capacity_lifecycle_every_backend, 0, KVBM_BACKEND_COUNT);
	tcase_add_loop_test(tc, test_interleaved_chains, 0, 3);
	tcase_add_loop_test(tc, test_lineage_out_of_order_insert, 0, 2);
	tcase_add_loop_test(tc, test_lineage_deep_chain, 0, 2);
	tcase_add_test(tc, test_lineage_out_of_ghosts);
	tcase_add_test(tc, test_lineage_key_twin_takes_a_ghost);
	tcase_add_test(tc, test_lineage_real_key_twins_are_marked);
	tcase_add_test(tc, test_multi_lru_levels);
	tcase_add_test(tc, test_lfru_keeps_the_frequent_block);
	tcase_add_test(tc, test_eviction_config_validation);
	tcase_add_test(tc, test_frequency_touches_where_the_reference_does);
	tcase_add_loop_test(tc, test_queued_evict_leaves_only, 0, 5);
	tcase_add_loop_test(tc, test_lecar_experts_and_regret, 0, 2);
	tcase_add_loop_test(tc, test_adapt_follows_its_miniatures, 0, 4);
	tcase_add_loop_test(tc, test_adapt_miniatures_any_content, 0, 2);
	tcase_add_loop_test(tc, test_adapt_more_experts, 0, 4);
	tcase_add_test(tc, test_adapt_killed_in_reorder);
	tcase_add_test(tc, test_adapt_lru_expert_is_lru);
	tcase_add_loop_test(tc, test_queued_restore_keeps_the_order, 0, 5);
	tcase_add_loop_test(tc, test_queued_reused_block_outlives_one_shots, 0, 2);
	tcase_add_loop_test(tc, test_queued_ghost_readmits, 0, 2);
	tcase_add_test(tc, test_ghost_table_takes_only_its_keys);
	tcase_add_test(tc, test_wtinylfu_admission);
	suite_add_tcase(s, tc);
	return s;
}
