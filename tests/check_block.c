/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_block.c - the block lifecycle, ported from kvbm-logical's
 * manager/tests.rs and pools/tests.rs (builder, allocation, lifecycle,
 * block sizes, registration, immutable/weak, reset-on-release, capacity,
 * pins, metrics) plus bad input. Test names follow the reference's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define BS 4

/* ---- builder ------------------------------------------------------------- */

START_TEST(test_builder_defaults)
{
	T_NAME(name);
	struct kvbm_config cfg;
	struct kvbm_block b;

	kvbm_config_init(&cfg);
	ck_assert_uint_eq(cfg.block_size, 16);
	ck_assert_uint_eq(cfg.dup_policy, KVBM_DUP_ALLOW);
	ck_assert_str_eq(cfg.tier, "G1");
	ck_assert_uint_eq(cfg.reset_on_release, 0);
	cfg.block_count = 100;
	struct kvbm_pool *p = t_create(name, &cfg);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_int_eq(m.reset_pool_size, 100);
	ck_assert_int_eq(m.inactive_pool_size, 0);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), 0);
	t_release(p, &b, 1);
	t_done(p, name);
}
END_TEST

START_TEST(test_builder_validation)
{
	struct kvbm_config cfg;
	const char *why;
	static const uint32_t bad_sizes[] = {0, 7, 15, 2048};

	kvbm_config_init(&cfg);
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), 0);
	cfg.block_count = 0;
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
	ck_assert_str_eq(why, "block_count must be greater than 0");
	kvbm_config_init(&cfg);
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		cfg.block_size = bad_sizes[i];
		ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
		ck_assert_ptr_nonnull(strstr(why, "power of two"));
	}
	for (uint32_t bs = 1; bs <= 1024; bs <<= 1) {
		cfg.block_size = bs;
		ck_assert_int_eq(kvbm_config_check(&cfg, NULL), 0);
	}
	kvbm_config_init(&cfg);
	cfg.dup_policy = 7;
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
	kvbm_config_init(&cfg);
	cfg.backend = KVBM_BACKEND_COUNT; /* the first unknown one */
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
	kvbm_config_init(&cfg);
	cfg.tier[0] = '\0';
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
	ck_assert_int_eq(kvbm_config_check(NULL, &why), -EINVAL);
	/* an invalid config never creates a pool */
	kvbm_config_init(&cfg);
	cfg.block_size = 15;
	struct kvbm_pool *p = NULL;
	ck_assert_int_eq(kvbm_pool_open("never", &cfg, KVBM_OPEN_CREATE, &p), -EINVAL);
	ck_assert_ptr_null(p);
}
END_TEST

START_TEST(test_attach_with_other_policy_is_refused)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p = t_create(name, &cfg), *q = NULL;

	cfg.dup_policy = KVBM_DUP_REJECT;
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, 0, &q), KVBM_EMISMATCH);
	cfg = t_cfg();
	strcpy(cfg.tier, "G2");
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, 0, &q), KVBM_EMISMATCH);
	t_done(p, name);
}
END_TEST

/* ---- allocation ---------------------------------------------------------- */

START_TEST(test_allocate_single_block)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_block b;

	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), 0);
	ck_assert_uint_eq(b.id, 0); /* the free list starts 0..N-1 */
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_uint_eq(m.allocations, 1);
	ck_assert_uint_eq(m.allocations_from_reset, 1);
	ck_assert_int_eq(m.inflight_mutable, 1);
	ck_assert_int_eq(m.reset_pool_size, 9);
	ck_assert_int_eq(kvbm_available_blocks(p), 9);
	t_release(p, &b, 1);
	m = t_metrics(p);
	ck_assert_int_eq(m.inflight_mutable, 0);
	ck_assert_int_eq(m.reset_pool_size, 10);
	t_done(p, name);
}
END_TEST

START_TEST(test_allocate_all_and_too_many)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_block b[11];

	ck_assert_int_eq(kvbm_allocate_blocks(p, 11, b, NULL, NULL), -ENOSPC);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 10, b, NULL, NULL), 0);
	for (int i = 0; i < 10; i++)
		ck_assert_uint_eq(b[i].id, (uint32_t)i);
	ck_assert_int_eq(kvbm_available_blocks(p), 0);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b[10], NULL, NULL), -ENOSPC);
	/* nothing was taken by the failed call */
	ck_assert_uint_eq(t_metrics(p).allocations, 10);
	t_release(p, b, 10);
	ck_assert_int_eq(kvbm_available_blocks(p), 10);
	t_done(p, name);
}
END_TEST

START_TEST(test_allocate_zero_blocks)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	uint32_t nev = 99;

	ck_assert_int_eq(kvbm_allocate_blocks(p, 0, NULL, NULL, &nev), 0);
	ck_assert_uint_eq(nev, 0);
	ck_assert_uint_eq(t_metrics(p).allocations, 0);
	t_done(p, name);
}
END_TEST

START_TEST(test_sequential_allocations)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_block a[3], b[3];

	ck_assert_int_eq(kvbm_allocate_blocks(p, 3, a, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 3, b, NULL, NULL), 0);
	ck_assert_uint_eq(b[0].id, 3);
	ck_assert_int_eq(kvbm_available_blocks(p), 4);
	t_release(p, a, 3);
	/* released blocks go to the back of the free list */
	struct kvbm_block c;
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &c, NULL, NULL), 0);
	ck_assert_uint_eq(c.id, 6);
	t_release(p, b, 3);
	t_release(p, &c, 1);
	ck_assert_uint_eq(t_metrics(p).allocations, 7);
	t_done(p, name);
}
END_TEST

/* ---- stage, complete, sizes ------------------------------------------------ */

START_TEST(test_mutable_block_complete_error_returns_block)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_block b;
	struct kvbm_tokens *seq;
	struct kvbm_block_info info;
	uint32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};

	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_tokens_new(8, T_SALT, &seq), 0);
	ck_assert_int_eq(kvbm_tokens_extend(seq, tok, 8, NULL, NULL), 0);
	/* an 8-token block into a size-4 slot: mismatch, block intact */
	ck_assert_int_eq(kvbm_complete_block(p, &b, seq, 0), KVBM_ESIZE);
	ck_assert_int_eq(kvbm_block_info(p, &b, &info), 0);
	ck_assert_uint_eq(info.state, KVBM_BLOCK_MUTABLE);
	ck_assert_int_eq(kvbm_stage_block(p, &b, t_hash1(1, BS), 8), KVBM_ESIZE);
	kvbm_tokens_free(seq);
	/* the right size completes it */
	ck_assert_int_eq(kvbm_tokens_new(BS, T_SALT, &seq), 0);
	ck_assert_int_eq(kvbm_tokens_extend(seq, tok, 8, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_complete_block(p, &b, seq, 2), -ERANGE);
	ck_assert_int_eq(kvbm_complete_block(p, &b, seq, 1), 0);
	ck_assert_int_eq(kvbm_block_info(p, &b, &info), 0);
	ck_assert_uint_eq(info.state, KVBM_BLOCK_STAGED);
	ck_assert(kvbm_plh_eq(info.hash, kvbm_tokens_block(seq, 1)->plh));
	kvbm_tokens_free(seq);
	t_release(p, &b, 1);
	t_done(p, name);
}
END_TEST

START_TEST(test_complete_block_reset)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_block b;
	struct kvbm_block_info info;

	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_stage_block(p, &b, t_hash1(1, BS), BS), 0);
	ck_assert_int_eq(t_metrics(p).inflight_mutable, 0); /* staged is counted nowhere */
	ck_assert_int_eq(kvbm_unstage_block(p, &b), 0);
	ck_assert_int_eq(kvbm_block_info(p, &b, &info), 0);
	ck_assert_uint_eq(info.state, KVBM_BLOCK_MUTABLE);
	ck_assert_int_eq(t_metrics(p).inflight_mutable, 1);
	/* re-staging yields the same hash */
	ck_assert_int_eq(kvbm_stage_block(p, &b, t_hash1(1, BS), BS), 0);
	ck_assert_int_eq(kvbm_block_info(p, &b, &info), 0);
	ck_assert(kvbm_plh_eq(info.hash, t_hash1(1, BS)));
	ck_assert_uint_eq(t_metrics(p).stagings, 2);
	/* a staged block released goes to the reset pool */
	t_release(p, &b, 1);
	ck_assert_int_eq(t_metrics(p).reset_pool_size, 10);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 0);
	t_done(p, name);
}
END_TEST

/* a batch stages all or nothing: the failing block's index comes back and
 * the blocks before it are MUTABLE again */
START_TEST(test_stage_blocks_all_or_nothing)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_block b[4];
	struct kvbm_plh h[4];
	struct kvbm_block_info info;
	uint32_t failed = 99;

	ck_assert_int_eq(kvbm_allocate_blocks(p, 4, b, NULL, NULL), 0);
	for (int i = 0; i < 4; i++)
		h[i] = t_hash1((uint32_t)i + 1, BS);
	ck_assert_int_eq(kvbm_stage_blocks(p, b, h, 0, BS, &failed), 0);
	ck_assert_int_eq(kvbm_stage_block(p, &b[2], h[2], BS), 0);
	ck_assert_int_eq(kvbm_stage_blocks(p, b, h, 4, BS, &failed), KVBM_ESTATE);
	ck_assert_uint_eq(failed, 2);
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(kvbm_block_info(p, &b[i], &info), 0);
		ck_assert_uint_eq(info.state, i == 2 ? KVBM_BLOCK_STAGED : KVBM_BLOCK_MUTABLE);
	}
	ck_assert_int_eq(kvbm_stage_blocks(p, b, h, 2, BS * 2, NULL), KVBM_ESIZE);
	ck_assert_int_eq(kvbm_unstage_block(p, &b[2]), 0);
	ck_assert_int_eq(kvbm_stage_blocks(p, b, h, 4, BS, NULL), 0);
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(kvbm_block_info(p, &b[i], &info), 0);
		ck_assert_uint_eq(info.state, KVBM_BLOCK_STAGED);
		ck_assert(kvbm_plh_eq(info.hash, h[i]));
	}
	ck_assert_int_eq(kvbm_register_blocks(p, b, 4), 0);
	t_release(p, b, 4);
	t_done(p, name);
}
END_TEST

/* ---- lifecycle --------------------------------------------------------------- */

START_TEST(test_registered_block_lifecycle)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h = t_hash1(100, BS);
	struct kvbm_block b, m[1];

	t_register(p, &h, 1, &b);
	ck_assert_int_eq(kvbm_available_blocks(p), 9);
	ck_assert_int_eq(kvbm_match_blocks(p, &h, 1, m), 1);
	ck_assert_uint_eq(m[0].id, b.id);
	ck_assert_int_eq(t_metrics(p).inflight_immutable, 2);
	t_release(p, &b, 1);
	t_release(p, m, 1);
	struct kvbm_metrics mm = t_metrics(p);
	ck_assert_int_eq(mm.inflight_immutable, 0);
	ck_assert_int_eq(mm.inactive_pool_size, 1);
	ck_assert_int_eq(kvbm_available_blocks(p), 10);
	/* a match pulls it out of the inactive pool */
	ck_assert_int_eq(kvbm_match_blocks(p, &h, 1, m), 1);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 9);
	t_release(p, m, 1);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	t_done(p, name);
}
END_TEST

START_TEST(test_mixed_return_paths)
{
	/* capacity_lifecycle: 8 mutable, 8 complete, 8 registered dropped */
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 32);
	struct kvbm_block mut[8], comp[8], reg[8];
	struct kvbm_plh h[16];

	t_seq_hashes(1000, 16, BS, h);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 8, mut, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 8, comp, NULL, NULL), 0);
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(kvbm_stage_block(p, &comp[i], h[i], BS), 0);
	t_register(p, h + 8, 8, reg);
	t_release(p, mut, 8);
	t_release(p, comp, 8);
	t_release(p, reg, 8);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_int_eq(m.reset_pool_size, 24);
	ck_assert_int_eq(m.inactive_pool_size, 8);
	ck_assert_uint_eq(m.stagings, 16);
	ck_assert_uint_eq(m.registrations, 8);
	ck_assert_int_eq(kvbm_available_blocks(p), 32);
	t_done(p, name);
}
END_TEST

START_TEST(test_full_capacity_and_eviction_cycle)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 32);
	struct kvbm_block b[32], c[16];
	struct kvbm_plh h[32], ev[16];
	uint32_t nev;

	t_seq_hashes(5000, 32, BS, h);
	t_register(p, h, 32, b);
	t_release(p, b, 32);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_int_eq(m.inactive_pool_size, 32);
	ck_assert_int_eq(m.reset_pool_size, 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 32);
	/* allocating again evicts, oldest released first, reporting hashes */
	ck_assert_int_eq(kvbm_allocate_blocks(p, 16, c, ev, &nev), 0);
	ck_assert_uint_eq(nev, 16);
	for (int i = 0; i < 16; i++) {
		ck_assert(kvbm_plh_eq(ev[i], h[i]));
		ck_assert_uint_eq(c[i].id, b[i].id);
		ck_assert_uint_ne(c[i].gen, b[i].gen); /* a new generation */
	}
	m = t_metrics(p);
	ck_assert_uint_eq(m.evictions, 16);
	ck_assert_uint_eq(m.allocations, 48);
	ck_assert_int_eq(m.inactive_pool_size, 16);
	uint8_t pres[32];
	ck_assert_int_eq(kvbm_check_presence(p, h, 32, pres), 16);
	ck_assert_int_eq(pres[0], 0);
	ck_assert_int_eq(pres[31], 1);
	t_release(p, c, 16);
	t_done(p, name);
}
END_TEST

START_TEST(test_lru_order_follows_release)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 4);
	struct kvbm_block b[4], m, c;
	struct kvbm_plh h[4], ev;
	uint32_t nev;

	t_seq_hashes(7000, 4, BS, h);
	t_register(p, h, 4, b);
	/* release tail first: the last block becomes the oldest */
	for (int i = 3; i >= 0; i--)
		t_release(p, &b[i], 1);
	/* a hit takes block 3 out; its re-release makes it the newest */
	ck_assert_int_eq(kvbm_match_blocks(p, &h[3], 1, &m), 1);
	t_release(p, &m, 1);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &c, &ev, &nev), 0);
	ck_assert(kvbm_plh_eq(ev, h[2]));
	t_release(p, &c, 1);
	t_done(p, name);
}
END_TEST

START_TEST(test_fifo_backend_same_order)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_block b[3], c;
	struct kvbm_plh h[3], ev;
	uint32_t nev;

	cfg.block_count = 3;
	cfg.backend = KVBM_BACKEND_FIFO;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(9000, 3, BS, h);
	t_register(p, h, 3, b);
	t_release(p, &b[1], 1);
	t_release(p, &b[0], 1);
	t_release(p, &b[2], 1);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &c, &ev, &nev), 0);
	ck_assert(kvbm_plh_eq(ev, h[1]));
	t_release(p, &c, 1);
	t_done(p, name);
}
END_TEST

/* ---- registration -------------------------------------------------------- */

START_TEST(test_register_multiple_blocks)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_block b[4];
	struct kvbm_plh h[4];
	struct kvbm_block_info info;

	t_seq_hashes(1, 4, BS, h);
	t_register(p, h, 4, b);
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(kvbm_block_info(p, &b[i], &info), 0);
		ck_assert_uint_eq(info.state, KVBM_BLOCK_REGISTERED);
		ck_assert(info.primary);
		ck_assert_uint_eq(info.holds, 1);
		ck_assert(kvbm_plh_eq(info.hash, h[i]));
	}
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_uint_eq(m.registrations, 4);
	ck_assert_uint_eq(m.stagings, 4);
	ck_assert_int_eq(m.inflight_immutable, 4);
	/* empty register is a no-op */
	ck_assert_int_eq(kvbm_register_blocks(p, NULL, 0), 0);
	t_release(p, b, 4);
	t_done(p, name);
}
END_TEST

START_TEST(test_deduplication_policy)
{
	T_NAME(na);
	T_NAME(nr);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h = t_hash1(42, BS);
	struct kvbm_block a, b;
	struct kvbm_block_info info;

	cfg.block_count = 10;
	/* Allow: a second block with the same hash becomes a duplicate */
	struct kvbm_pool *p = t_create(na, &cfg);
	t_register(p, &h, 1, &a);
	t_register(p, &h, 1, &b);
	ck_assert_uint_ne(a.id, b.id);
	ck_assert_int_eq(kvbm_block_info(p, &b, &info), 0);
	ck_assert(!info.primary);
	ck_assert_uint_eq(t_metrics(p).duplicate_blocks, 1);
	/* the duplicate keeps the primary active; released, it is freed */
	t_release(p, &a, 1);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 0);
	uint8_t pres;
	ck_assert_int_eq(kvbm_check_presence(p, &h, 1, &pres), 1);
	t_release(p, &b, 1);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_int_eq(m.inactive_pool_size, 1);
	ck_assert_int_eq(m.reset_pool_size, 9);
	/* duplicate_drop_preserves_presence: the inactive primary is present */
	ck_assert_int_eq(kvbm_check_presence(p, &h, 1, &pres), 1);
	t_done(p, na);

	/* Reject: the existing primary is returned, the candidate freed */
	cfg.dup_policy = KVBM_DUP_REJECT;
	p = t_create(nr, &cfg);
	t_register(p, &h, 1, &a);
	t_register(p, &h, 1, &b);
	ck_assert_uint_eq(a.id, b.id);
	ck_assert_uint_eq(t_metrics(p).registration_dedup, 1);
	ck_assert_int_eq(t_metrics(p).reset_pool_size, 9);
	ck_assert_int_eq(kvbm_block_info(p, &a, &info), 0);
	ck_assert_uint_eq(info.holds, 2);
	t_release(p, &a, 1);
	t_release(p, &b, 1);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	t_done(p, nr);
}
END_TEST

START_TEST(test_resurrect_via_register_returns_existing_under_reject_policy)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h = t_hash1(77, BS);
	struct kvbm_block a, b;
	struct kvbm_weak w;

	cfg.block_count = 10;
	cfg.dup_policy = KVBM_DUP_REJECT;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_register(p, &h, 1, &a);
	ck_assert_int_eq(kvbm_downgrade_block(p, &a, &w), 0);
	t_release(p, &a, 1);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	t_register(p, &h, 1, &b);
	ck_assert_uint_eq(b.id, a.id);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 0);
	struct kvbm_block c;
	ck_assert_int_eq(kvbm_upgrade_block(p, &w, &c), 1);
	ck_assert_uint_eq(c.id, a.id);
	t_release(p, &b, 1);
	t_release(p, &c, 1);
	t_done(p, name);
}
END_TEST

START_TEST(test_batch_register_mixed_reject)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[4], in[4];
	struct kvbm_block first[2], b[4];

	cfg.block_count = 10;
	cfg.dup_policy = KVBM_DUP_REJECT;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(300, 4, BS, h);
	t_register(p, h, 2, first); /* ids 0, 1 */
	/* batch [h0, h2, h1, h3]: h0 and h1 dedup to the existing blocks */
	in[0] = h[0];
	in[1] = h[2];
	in[2] = h[1];
	in[3] = h[3];
	t_register(p, in, 4, b);
	ck_assert_uint_eq(b[0].id, first[0].id);
	ck_assert_uint_eq(b[2].id, first[1].id);
	ck_assert_uint_eq(b[1].id, 3);
	ck_assert_uint_eq(b[3].id, 5);
	ck_assert_uint_eq(t_metrics(p).registration_dedup, 2);
	/* the rejected slots (2 and 4) went back to the reset pool in order */
	struct kvbm_block c[7];
	ck_assert_int_eq(kvbm_allocate_blocks(p, 6, c, NULL, NULL), 0);
	ck_assert_uint_eq(c[4].id, 2);
	ck_assert_uint_eq(c[5].id, 4);
	t_release(p, c, 6);
	t_release(p, first, 2);
	t_release(p, b, 4);
	t_done(p, name);
}
END_TEST

/* ---- immutable, weak, pins ------------------------------------------------ */

START_TEST(test_immutable_block_downgrade_and_upgrade)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 4);
	struct kvbm_plh h = t_hash1(5, BS), hh[3];
	struct kvbm_block b, u, c[4];
	struct kvbm_weak w, w2;

	t_register(p, &h, 1, &b);
	ck_assert_int_eq(kvbm_downgrade_block(p, &b, &w), 0);
	ck_assert_int_eq(kvbm_downgrade_block(p, &b, &w2), 0);
	ck_assert_int_eq(kvbm_upgrade_block(p, &w, &u), 1);
	ck_assert_uint_eq(u.id, b.id);
	t_release(p, &u, 1);
	/* test_weak_block_upgrade_via_resurrection */
	t_release(p, &b, 1);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	ck_assert_int_eq(kvbm_upgrade_block(p, &w2, &u), 1);
	ck_assert_uint_eq(u.id, b.id);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 0);
	t_release(p, &u, 1);
	/* test_weak_block_upgrade_fails_when_evicted */
	t_seq_hashes(900, 3, BS, hh);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 4, c, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_upgrade_block(p, &w, &u), 0);
	t_release(p, c, 4);
	t_done(p, name);
}
END_TEST

START_TEST(test_upgrade_finds_other_block_with_same_hash)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 2);
	struct kvbm_plh h = t_hash1(5, BS);
	struct kvbm_block b, c[2], d, u;
	struct kvbm_weak w;

	t_register(p, &h, 1, &b);
	ck_assert_int_eq(kvbm_downgrade_block(p, &b, &w), 0);
	t_release(p, &b, 1);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 2, c, NULL, NULL), 0); /* evicts it */
	t_release(p, c, 2);
	t_register(p, &h, 1, &d);
	ck_assert_int_eq(kvbm_upgrade_block(p, &w, &u), 1);
	ck_assert_uint_eq(u.id, d.id);
	ck_assert_uint_eq(u.gen, d.gen);
	t_release(p, &u, 1);
	t_release(p, &d, 1);
	t_done(p, name);
}
END_TEST

START_TEST(test_pin_keeps_slot_active_after_block_drops)
{
	T_NAME(n1);
	T_NAME(n2);
	struct kvbm_pool *p = t_pool(n1, 4), *q = t_pool(n2, 4);
	struct kvbm_plh h = t_hash1(8, BS);
	struct kvbm_block b, bq, c;
	struct kvbm_pin pin, pin2;
	struct kvbm_pool_info ip, iq;

	t_register(p, &h, 1, &b);
	ck_assert_int_eq(kvbm_pin_block(p, &b, &pin), 0);
	ck_assert_int_eq(kvbm_pool_info(p, &ip), 0);
	ck_assert_uint_eq(pin.block.pool, ip.instance_id);
	ck_assert_uint_ne(ip.instance_id, 0);
	ck_assert_uint_eq(pin.block.id, b.id);
	ck_assert(kvbm_plh_eq(pin.hash, h));
	long avail = kvbm_available_blocks(p);
	t_release(p, &b, 1);
	ck_assert_int_eq(kvbm_available_blocks(p), avail);
	/* pin_clone_is_arc_bump */
	ck_assert_int_eq(kvbm_clone_block(p, &pin.block, &c), 0);
	struct kvbm_block_info info;
	ck_assert_int_eq(kvbm_block_info(p, &c, &info), 0);
	ck_assert_uint_eq(info.holds, 2);
	t_release(p, &c, 1);
	t_release(p, &pin.block, 1);
	ck_assert_int_eq(kvbm_available_blocks(p), avail + 1);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	/* pins_from_different_managers_have_different_addresses */
	t_register(q, &h, 1, &bq);
	ck_assert_int_eq(kvbm_pin_block(q, &bq, &pin2), 0);
	ck_assert_int_eq(kvbm_pool_info(q, &iq), 0);
	ck_assert_uint_ne(pin2.block.pool, ip.instance_id);
	ck_assert(kvbm_plh_eq(pin2.hash, h));
	t_release(q, &pin2.block, 1);
	t_release(q, &bq, 1);
	t_done(p, n1);
	t_done(q, n2);
}
END_TEST

/* ---- reset-on-release ----------------------------------------------------- */

START_TEST(test_per_block_flag_bypasses_inactive)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 4);
	struct kvbm_plh h = t_hash1(9, BS);
	struct kvbm_block b, c, m;
	uint8_t pres;

	t_register(p, &h, 1, &b);
	ck_assert_int_eq(kvbm_clone_block(p, &b, &c), 0);
	ck_assert_int_eq(kvbm_set_reset_on_release(p, &b, 1), 0);
	t_release(p, &b, 1);
	/* still shared while a hold lives */
	ck_assert_int_eq(kvbm_match_blocks(p, &h, 1, &m), 1);
	t_release(p, &m, 1);
	/* last writer wins */
	ck_assert_int_eq(kvbm_set_reset_on_release(p, &c, 0), 0);
	ck_assert_int_eq(kvbm_set_reset_on_release(p, &c, 1), 0);
	t_release(p, &c, 1);
	struct kvbm_metrics mm = t_metrics(p);
	ck_assert_int_eq(mm.inactive_pool_size, 0);
	ck_assert_int_eq(mm.reset_pool_size, 4);
	ck_assert_int_eq(mm.inflight_immutable, 0);
	ck_assert_int_eq(kvbm_check_presence(p, &h, 1, &pres), 0);
	/* no poisoning of a re-used block id: the next tenant gets the default */
	t_register(p, &h, 1, &b);
	t_release(p, &b, 1);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	t_done(p, name);
}
END_TEST

START_TEST(test_store_wide_default_and_opt_out)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[2];
	struct kvbm_block b[2], m;

	cfg.block_count = 4;
	cfg.reset_on_release = 1;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(40, 2, BS, h);
	t_register(p, h, 2, b);
	ck_assert_int_eq(kvbm_set_reset_on_release(p, &b[1], 0), 0);
	t_release(p, b, 2);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	/* the opt-out survives a resurrection */
	ck_assert_int_eq(kvbm_match_blocks(p, &h[1], 1, &m), 1);
	t_release(p, &m, 1);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	/* ... and is discarded on eviction back to mutable */
	struct kvbm_block c[4];
	ck_assert_int_eq(kvbm_allocate_blocks(p, 4, c, NULL, NULL), 0);
	struct kvbm_block_info info;
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(kvbm_block_info(p, &c[i], &info), 0);
		ck_assert_int_eq(info.reset_on_release, 1);
	}
	t_release(p, c, 4);
	t_done(p, name);
}
END_TEST

START_TEST(test_duplicates_reset_regardless_of_flag)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 4);
	struct kvbm_plh h = t_hash1(11, BS);
	struct kvbm_block a, d;
	uint8_t pres;

	t_register(p, &h, 1, &a);
	t_register(p, &h, 1, &d);
	/* setting it on a duplicate does not touch the primary */
	ck_assert_int_eq(kvbm_set_reset_on_release(p, &d, 0), 0);
	t_release(p, &d, 1);
	ck_assert_int_eq(t_metrics(p).reset_pool_size, 3);
	ck_assert_int_eq(kvbm_check_presence(p, &h, 1, &pres), 1);
	t_release(p, &a, 1);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	t_done(p, name);
}
END_TEST

START_TEST(test_reset_inactive_pool_drains_and_clears_presence)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 8);
	struct kvbm_plh h[4];
	struct kvbm_block b[4];
	uint8_t pres[4];

	t_seq_hashes(60, 4, BS, h);
	t_register(p, h, 4, b);
	t_release(p, b, 3);
	/* one block still held: drained anyway, then -EBUSY */
	ck_assert_int_eq(kvbm_reset_inactive_pool(p), -EBUSY);
	ck_assert_int_eq(kvbm_check_presence(p, h, 4, pres), 1);
	ck_assert_int_eq(pres[3], 1);
	t_release(p, &b[3], 1);
	ck_assert_int_eq(kvbm_reset_inactive_pool(p), 0);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_int_eq(m.inactive_pool_size, 0);
	ck_assert_int_eq(m.reset_pool_size, 8);
	ck_assert_uint_eq(m.evictions, 0); /* a drain counts no evictions */
	ck_assert_int_eq(kvbm_check_presence(p, h, 4, pres), 0);
	t_done(p, name);
}
END_TEST

/* ---- bad input ------------------------------------------------------------ */

START_TEST(test_bad_handles_get_clear_errors)
{
	T_NAME(n1);
	T_NAME(n2);
	struct kvbm_pool *p = t_pool(n1, 4), *q = t_pool(n2, 4);
	struct kvbm_plh h = t_hash1(3, BS);
	struct kvbm_block b, c, m, bad;

	/* double release of a mutable block */
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), 0);
	t_release(p, &b, 1);
	ck_assert_int_eq(kvbm_release_blocks(p, &b, 1), KVBM_ESTALE);
	/* stale handle after its slot is recycled */
	ck_assert_int_eq(kvbm_allocate_blocks(p, 4, (struct kvbm_block[4]){0}, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_stage_block(p, &b, h, BS), KVBM_ESTALE);
	ck_assert_int_eq(kvbm_reset_inactive_pool(p), -EBUSY);
	t_done(p, n1);
	p = t_pool(n1, 4);
	/* a registered block: one hold, released twice */
	t_register(p, &h, 1, &b);
	t_release(p, &b, 1);
	ck_assert_int_eq(kvbm_release_blocks(p, &b, 1), KVBM_ENOTHELD);
	ck_assert_int_eq(kvbm_clone_block(p, &b, &c), KVBM_ENOTHELD);
	/* handle from another pool */
	ck_assert_int_eq(kvbm_match_blocks(p, &h, 1, &m), 1);
	ck_assert_int_eq(kvbm_release_blocks(q, &m, 1), KVBM_EFOREIGN);
	ck_assert_int_eq(kvbm_stage_block(q, &m, h, BS), KVBM_EFOREIGN);
	/* out of range, wrong state, NULLs */
	bad = m;
	bad.id = 4;
	ck_assert_int_eq(kvbm_release_blocks(p, &bad, 1), -EINVAL);
	ck_assert_int_eq(kvbm_stage_block(p, &m, h, BS), KVBM_ESTATE);
	ck_assert_int_eq(kvbm_register_blocks(p, &m, 1), KVBM_ESTATE);
	ck_assert_int_eq(kvbm_unstage_block(p, &m), KVBM_ESTATE);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(kvbm_allocate_blocks(NULL, 1, &c, NULL, NULL), -EINVAL);
	ck_assert_int_eq(kvbm_match_blocks(p, NULL, 1, &c), -EINVAL);
	ck_assert_int_eq(kvbm_release_blocks(p, NULL, 1), -EINVAL);
	ck_assert_int_eq(kvbm_metrics_snapshot(p, NULL), -EINVAL);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 5, (struct kvbm_block[5]){0}, NULL, NULL),
			 -ENOSPC);
	/* the pool is intact after all of it */
	t_release(p, &m, 1);
	ck_assert_int_eq(kvbm_reset_inactive_pool(p), 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 4);
	struct kvbm_metrics mm = t_metrics(p);
	ck_assert_int_eq(mm.inflight_immutable, 0);
	ck_assert_int_eq(mm.inflight_mutable, 0);
	t_done(p, n1);
	t_done(q, n2);
}
END_TEST

START_TEST(test_register_checks_every_handle_first)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 4);
	struct kvbm_block b[2];
	struct kvbm_block_info info;

	ck_assert_int_eq(kvbm_allocate_blocks(p, 2, b, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_stage_block(p, &b[0], t_hash1(1, BS), BS), 0);
	/* b[1] is still mutable: nothing is registered */
	ck_assert_int_eq(kvbm_register_blocks(p, b, 2), KVBM_ESTATE);
	ck_assert_int_eq(kvbm_block_info(p, &b[0], &info), 0);
	ck_assert_uint_eq(info.state, KVBM_BLOCK_STAGED);
	t_release(p, b, 2);
	ck_assert_int_eq(kvbm_available_blocks(p), 4);
	t_done(p, name);
}
END_TEST

/* A block listed twice in one batch is refused, before anything is
 * registered, in a small batch (pairwise check), a middle one (the set on
 * the stack: every pair of positions, at both of its size's ends) and a
 * large one (bitmap); batches without a duplicate in the set's sizes
 * register. */
START_TEST(test_register_refuses_a_block_listed_twice)
{
	T_NAME(name);
	enum { N = 100 };
	struct kvbm_pool *p = t_pool(name, N);
	struct kvbm_block b[N + 1];
	struct kvbm_plh h[N];
	struct kvbm_block_info info;

	ck_assert_int_eq(kvbm_allocate_blocks(p, N, b, NULL, NULL), 0);
	t_seq_hashes(1, N, BS, h);
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(kvbm_stage_block(p, &b[i], h[i], BS), 0);
	b[N] = b[N - 7];
	struct kvbm_block small[3] = {b[0], b[1], b[0]};
	ck_assert_int_eq(kvbm_register_blocks(p, small, 3), -EINVAL);
	ck_assert_int_eq(kvbm_register_blocks(p, b, N + 1), -EINVAL);
	static const uint32_t sizes[] = {9, 64};
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		uint32_t m = sizes[k];
		struct kvbm_block c[64];
		for (uint32_t j = 1; j < m; j++)
			for (uint32_t i = 0; i < j; i++) {
				memcpy(c, b, sizeof(c[0]) * m);
				c[j] = b[i];
				ck_assert_msg(kvbm_register_blocks(p, c, m) == -EINVAL,
					      "batch of %u, position %u listed again at %u", m, i,
					      j);
			}
	}
	ck_assert_int_eq(kvbm_block_info(p, &b[0], &info), 0);
	ck_assert_uint_eq(info.state, KVBM_BLOCK_STAGED);
	ck_assert_int_eq(kvbm_register_blocks(p, b, 64), 0);
	ck_assert_int_eq(kvbm_register_blocks(p, b + 64, N - 64), 0);
	ck_assert_int_eq(kvbm_block_info(p, &b[N - 7], &info), 0);
	ck_assert_uint_eq(info.state, KVBM_BLOCK_REGISTERED);
	t_release(p, b, N);
	ck_assert_int_eq(kvbm_available_blocks(p), N);
	t_done(p, name);
}
END_TEST

/* ---- metrics --------------------------------------------------------------- */

START_TEST(test_prometheus_exposition)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 16);
	struct kvbm_block b[10];
	char buf[8192];
	const char *const labels[][2] = {{"node", "a\"b"}};

	ck_assert_int_eq(kvbm_allocate_blocks(p, 10, b, NULL, NULL), 0);
	struct kvbm_metrics m = t_metrics(p);
	long n = kvbm_metrics_prometheus(&m, "G1", labels, 1, buf, sizeof(buf));
	ck_assert_int_gt(n, 0);
	ck_assert_int_lt(n, (long)sizeof(buf));
	ck_assert_ptr_nonnull(strstr(buf, "kvbm_allocations_total{pool=\"G1\",node=\"a\\\"b\"} 10\n"));
	ck_assert_ptr_nonnull(strstr(buf, "# TYPE kvbm_allocations_total counter\n"));
	ck_assert_ptr_nonnull(strstr(buf, "# TYPE kvbm_inflight_mutable gauge\n"));
	ck_assert_ptr_nonnull(strstr(buf, "kvbm_reset_pool_size{pool=\"G1\",node=\"a\\\"b\"} 6\n"));
	/* the reference's 19 families, plus the index-full and
	 * deferred-recount counters, the mutex hold-time histogram and the
	 * four of the pool's pins */
	int families = 0;
	for (const char *s = buf; (s = strstr(s, "# TYPE ")); s++)
		families++;
	ck_assert_int_eq(families, 26);
	ck_assert_ptr_nonnull(strstr(buf, "# TYPE kvbm_pinned_blocks gauge\n"));
	ck_assert_ptr_nonnull(strstr(buf, "# TYPE kvbm_pin_expirations_total counter\n"));
	ck_assert_ptr_nonnull(strstr(buf, "# TYPE kvbm_mutex_hold_seconds histogram\n"));
	ck_assert_ptr_nonnull(strstr(buf, "# TYPE kvbm_recounts_deferred_total counter\n"));
	/* too small a buffer: the needed length, like snprintf */
	ck_assert_int_eq(kvbm_metrics_prometheus(&m, "G1", labels, 1, buf, 10), n);
	ck_assert_uint_eq(strlen(buf), 9);
	t_release(p, b, 10);
	t_done(p, name);
}
END_TEST

/* ---- stats collector (metrics/stats.rs) ------------------------------------ */

START_TEST(test_stats_disabled_by_default)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 8);
	struct kvbm_stats *st;
	struct kvbm_stats_snapshot s;

	ck_assert_int_eq(kvbm_stats_new(p, 0, &st), 0);
	ck_assert_int_eq(kvbm_stats_is_enabled(st), 0);
	ck_assert_int_eq(kvbm_stats_sample(st), 0);
	ck_assert_int_eq(kvbm_stats_latest(st, &s), 0);
	kvbm_stats_set_enabled(st, 1);
	ck_assert_int_eq(kvbm_stats_sample(st), 1);
	ck_assert_int_eq(kvbm_stats_latest(st, &s), 1);
	/* the first sample: no rates, current gauges */
	ck_assert(s.allocation_rate == 0.0);
	ck_assert_int_eq(s.reset_pool_size, 8);
	kvbm_stats_free(st);
	t_done(p, name);
}
END_TEST

START_TEST(test_stats_rates_ratios_gradients_window)
{
	struct kvbm_stats *st;
	struct kvbm_metrics m = {0};
	struct kvbm_stats_snapshot s, w[8];

	ck_assert_int_eq(kvbm_stats_new(NULL, 3, &st), 0);
	kvbm_stats_set_enabled(st, 1);
	ck_assert_int_eq(kvbm_stats_sample_at(st, &m, 1000000000ull), 1);
	m.allocations = 10;
	m.evictions = 4;
	m.match_hashes_requested = 10;
	m.match_blocks_returned = 7;
	ck_assert_int_eq(kvbm_stats_sample_at(st, &m, 2000000000ull), 1);
	ck_assert_int_eq(kvbm_stats_latest(st, &s), 1);
	ck_assert(s.allocation_rate == 10.0);
	ck_assert(s.eviction_rate == 4.0);
	ck_assert(s.match_hit_rate > 0.6999 && s.match_hit_rate < 0.7001);
	ck_assert(s.scan_hit_rate == 0.0); /* no scan requests */
	ck_assert(s.allocation_gradient == 10.0);
	m.allocations = 40; /* 30 in 2 s: rate 15, gradient (15 - 10) / 2 */
	ck_assert_int_eq(kvbm_stats_sample_at(st, &m, 4000000000ull), 1);
	ck_assert_int_eq(kvbm_stats_latest(st, &s), 1);
	ck_assert(s.allocation_rate == 15.0);
	ck_assert(s.allocation_gradient == 2.5);
	/* same instant again: zero rates */
	ck_assert_int_eq(kvbm_stats_sample_at(st, &m, 4000000000ull), 1);
	ck_assert_int_eq(kvbm_stats_latest(st, &s), 1);
	ck_assert(s.allocation_rate == 0.0);
	/* the ring keeps the window's 3, oldest first */
	ck_assert_uint_eq(kvbm_stats_window(st, 8, w), 3);
	ck_assert_uint_eq(w[0].t_ns, 2000000000ull);
	ck_assert_uint_eq(w[2].t_ns, 4000000000ull);
	ck_assert_uint_eq(kvbm_stats_window(st, 1, w), 1);
	ck_assert_uint_eq(w[0].t_ns, 4000000000ull);
	kvbm_stats_free(st);
}
END_TEST

/* ---- one-thread handles ---------------------------------------------------- */

struct other_thread {
	struct kvbm_pool *p;
	const struct kvbm_plh *h;
	struct kvbm_block *held;
	int match, alloc, release, clone, info, close;
};

static void *other_thread_calls(void *arg)
{
	struct other_thread *o = arg;
	struct kvbm_block out[4], c;
	struct kvbm_pool_info pi;

	o->match = (int)kvbm_match_blocks(o->p, o->h, 4, out);
	o->alloc = kvbm_allocate_blocks(o->p, 1, out, NULL, NULL);
	o->release = kvbm_release_blocks(o->p, o->held, 1);
	o->clone = kvbm_clone_block(o->p, o->held, &c);
	o->info = kvbm_pool_info(o->p, &pi);
	return NULL;
}

static void *other_thread_closes(void *arg)
{
	struct other_thread *o = arg;

	o->close = kvbm_pool_close(o->p);
	return NULL;
}

/* A KVBM_OPEN_ONE_THREAD handle refuses every other thread with a clear
 * error and no effect (its hold counts have one writer), works on in its
 * own thread, and may be closed by any thread. */
START_TEST(test_one_thread_handle_refuses_other_threads)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p, *q;
	struct kvbm_plh h[4];
	struct kvbm_block b[4], m[4], c;
	struct kvbm_block_info info;
	pthread_t t;

	cfg.block_count = 8;
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | 0x80u, &p), -EINVAL);
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_ONE_THREAD, &p), 0);
	t_seq_hashes(1, 4, BS, h);
	t_register(p, h, 4, b);
	struct other_thread o = {.p = p, .h = h, .held = &b[0]};
	ck_assert_int_eq(pthread_create(&t, NULL, other_thread_calls, &o), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(o.match, KVBM_ETHREAD);
	ck_assert_int_eq(o.alloc, KVBM_ETHREAD);
	ck_assert_int_eq(o.release, KVBM_ETHREAD);
	ck_assert_int_eq(o.clone, KVBM_ETHREAD);
	ck_assert_int_eq(o.info, KVBM_ETHREAD);
	ck_assert_str_eq(kvbm_strerror(KVBM_ETHREAD),
			 "handle opened with KVBM_OPEN_ONE_THREAD used by another thread");
	/* nothing happened: still one hold each, no block allocated */
	ck_assert_int_eq(kvbm_block_info(p, &b[0], &info), 0);
	ck_assert_uint_eq(info.holds, 1);
	ck_assert_int_eq(kvbm_available_blocks(p), 4);
	/* in its own thread: holds counted without RMWs, and exact */
	ck_assert_int_eq(kvbm_match_blocks(p, h, 4, m), 4);
	ck_assert_int_eq(kvbm_clone_block(p, &m[3], &c), 0);
	ck_assert_int_eq(kvbm_block_info(p, &b[3], &info), 0);
	ck_assert_uint_eq(info.holds, 3);
	ck_assert_int_eq(kvbm_release_blocks(p, &c, 1), 0);
	ck_assert_int_eq(kvbm_release_blocks(p, &c, 1), 0); /* the match's, by value */
	ck_assert_int_eq(kvbm_release_blocks(p, m, 3), 0);
	ck_assert_int_eq(kvbm_block_info(p, &b[3], &info), 0);
	ck_assert_uint_eq(info.holds, 1);
	/* another process (here: a second handle) sees the same counts */
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &q), 0);
	ck_assert_int_eq(kvbm_match_blocks(q, h, 4, m), 4);
	ck_assert_int_eq(kvbm_block_info(q, &m[0], &info), 0);
	ck_assert_uint_eq(info.holds, 1);
	ck_assert_uint_eq(info.holder_procs, 2);
	ck_assert_int_eq(kvbm_release_blocks(q, m, 4), 0);
	ck_assert_int_eq(kvbm_release_blocks(p, b, 4), 0);
	ck_assert_int_eq(kvbm_release_blocks(p, b, 1), KVBM_ENOTHELD);
	ck_assert_int_eq(t_check(q), 0);
	ck_assert_int_eq(kvbm_available_blocks(q), 8);
	o.p = p;
	ck_assert_int_eq(pthread_create(&t, NULL, other_thread_closes, &o), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(o.close, 0);
	ck_assert_int_eq(t_check(q), 0);
	kvbm_pool_close(q);
	kvbm_pool_destroy(name, 0);
}
END_TEST

Suite *make_block_suite(void)
{
	Suite *s = suite_create("block");
	TCase *tc = tcase_create("lifecycle");

	tcase_add_test(tc, test_builder_defaults);
	tcase_add_test(tc, test_one_thread_handle_refuses_other_threads);
	tcase_add_test(tc, test_builder_validation);
	tcase_add_test(tc, test_attach_with_other_policy_is_refused);
	tcase_add_test(tc, test_allocate_single_block);
	tcase_add_test(tc, test_allocate_all_and_too_many);
	tcase_add_test(tc, test_allocate_zero_blocks);
	tcase_add_test(tc, test_sequential_allocations);
	tcase_add_test(tc, test_mutable_block_complete_error_returns_block);
	tcase_add_test(tc, test_complete_block_reset);
	tcase_add_test(tc, test_stage_blocks_all_or_nothing);
	tcase_add_test(tc, test_registered_block_lifecycle);
	tcase_add_test(tc, test_mixed_return_paths);
	tcase_add_test(tc, test_full_capacity_and_eviction_cycle);
	tcase_add_test(tc, test_lru_order_follows_release);
	tcase_add_test(tc, test_fifo_backend_same_order);
	tcase_add_test(tc, test_register_multiple_blocks);
	tcase_add_test(tc, test_deduplication_policy);
	tcase_add_test(tc, test_resurrect_via_register_returns_existing_under_reject_policy);
	tcase_add_test(tc, test_batch_register_mixed_reject);
	tcase_add_test(tc, test_immutable_block_downgrade_and_upgrade);
	tcase_add_test(tc, test_upgrade_finds_other_block_with_same_hash);
	tcase_add_test(tc, test_pin_keeps_slot_active_after_block_drops);
	tcase_add_test(tc, test_per_block_flag_bypasses_inactive);
	tcase_add_test(tc, test_store_wide_default_and_opt_out);
	tcase_add_test(tc, test_duplicates_reset_regardless_of_flag);
	tcase_add_test(tc, test_reset_inactive_pool_drains_and_clears_presence);
	tcase_add_test(tc, test_bad_handles_get_clear_errors);
	tcase_add_test(tc, test_register_checks_every_handle_first);
	tcase_add_test(tc, test_register_refuses_a_block_listed_twice);
	tcase_add_test(tc, test_prometheus_exposition);
	tcase_add_test(tc, test_stats_disabled_by_default);
	tcase_add_test(tc, test_stats_rates_ratios_gradients_window);
	suite_add_tcase(s, tc);
	return s;
}
