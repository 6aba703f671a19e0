/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_misuse.c - a caller's misuse gets an error and leaves the pool
 * intact: a block released twice in one call or by two threads at once,
 * a release racing a registration of the same handle, a match whose holds
 * saturate. Each operation validates before the mutex and again under it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define BS 4

START_TEST(test_release_listed_twice_frees_once)
{
	T_NAME(name);
	enum { TOTAL = 4 };
	struct kvbm_pool *p = t_pool(name, TOTAL);
	struct kvbm_block b, twice[2], all[TOTAL];

	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), 0);
	twice[0] = twice[1] = b;
	ck_assert_int_eq(kvbm_release_blocks(p, twice, 2), KVBM_ESTALE);
	ck_assert_int_eq(kvbm_available_blocks(p), TOTAL);
	ck_assert_int_eq(t_check(p), 0);
	/* a free list looped by a second push hands one block out twice */
	ck_assert_int_eq(kvbm_allocate_blocks(p, TOTAL, all, NULL, NULL), 0);
	for (int i = 0; i < TOTAL; i++)
		for (int j = 0; j < i; j++)
			ck_assert_uint_ne(all[i].id, all[j].id);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), -ENOSPC);
	t_release(p, all, TOTAL);
	/* a STAGED one too */
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_stage_block(p, &b, t_hash1(7, BS), BS), 0);
	twice[0] = twice[1] = b;
	ck_assert_int_eq(kvbm_release_blocks(p, twice, 2), KVBM_ESTALE);
	ck_assert_int_eq(kvbm_available_blocks(p), TOTAL);
	t_done(p, name);
}
END_TEST

/* Two threads, one call each, released at once through a barrier. */
struct race {
	struct kvbm_pool *p;
	pthread_barrier_t *go;
	struct kvbm_block blk;
	int (*op)(struct kvbm_pool *p, struct kvbm_block *b);
	int r;
};

static void *race_thread(void *arg)
{
	struct race *a = arg;

	pthread_barrier_wait(a->go);
	a->r = a->op(a->p, &a->blk);
	return NULL;
}

static int op_release(struct kvbm_pool *p, struct kvbm_block *b)
{
	return kvbm_release_blocks(p, b, 1);
}

static int op_register(struct kvbm_pool *p, struct kvbm_block *b)
{
	return kvbm_register_blocks(p, b, 1);
}

static void race2(struct kvbm_pool *p, struct race *a, struct race *b)
{
	pthread_barrier_t go;
	pthread_t ta, tb;

	pthread_barrier_init(&go, NULL, 2);
	a->p = b->p = p;
	a->go = b->go = &go;
	ck_assert_int_eq(pthread_create(&ta, NULL, race_thread, a), 0);
	ck_assert_int_eq(pthread_create(&tb, NULL, race_thread, b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	pthread_barrier_destroy(&go);
}

/* Both threads validate before either takes the mutex: without the guard
 * under it, both pushed the block onto the free list. */
START_TEST(test_two_threads_release_one_owned_handle)
{
	T_NAME(name);
	enum { TOTAL = 8, ROUNDS = 400 };
	struct kvbm_pool *p = t_pool(name, TOTAL);
	struct kvbm_block b;
	int both = 0;

	for (int i = 0; i < ROUNDS; i++) {
		ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), 0);
		struct race x = {.blk = b, .op = op_release}, y = {.blk = b, .op = op_release};
		race2(p, &x, &y);
		both += x.r == 0 && y.r == 0;
		ck_assert_msg(x.r == 0 || y.r == 0, "neither release succeeded");
		ck_assert_msg(x.r == 0 || x.r == KVBM_ESTALE, "%s", kvbm_strerror(x.r));
		ck_assert_msg(y.r == 0 || y.r == KVBM_ESTALE, "%s", kvbm_strerror(y.r));
		ck_assert_int_eq(kvbm_available_blocks(p), TOTAL);
	}
	ck_assert_int_eq(both, 0);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * A release and a registration of one STAGED handle at once. Legal ends:
 * the release first (the registration then finds a stale handle), or the
 * registration first (the release then drops the hold it gave, or, if it
 * checked the block while still STAGED, is refused with KVBM_ESTATE). Never a freed slot with a holder bit and an
 * index entry.
 */
START_TEST(test_register_and_release_race_on_one_handle)
{
	T_NAME(name);
	enum { TOTAL = 8, ROUNDS = 400 };
	struct kvbm_pool *p = t_pool(name, TOTAL);
	struct kvbm_block b;
	uint8_t present;

	for (int i = 0; i < ROUNDS; i++) {
		struct kvbm_plh h = t_hash1(1000 + 10 * (uint32_t)i, BS);
		ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), 0);
		ck_assert_int_eq(kvbm_stage_block(p, &b, h, BS), 0);
		struct race x = {.blk = b, .op = op_register}, y = {.blk = b, .op = op_release};
		race2(p, &x, &y);
		ck_assert_msg(x.r == 0 || x.r == KVBM_ESTALE, "register: %s", kvbm_strerror(x.r));
		/* the release checked a STAGED block and found it registered
		 * under the mutex: refused, the hold stays with the caller */
		ck_assert_msg(y.r == 0 || (y.r == KVBM_ESTATE && x.r == 0), "release: %s",
			      kvbm_strerror(y.r));
		if (y.r != 0)
			t_release(p, &x.blk, 1);
		ck_assert_int_eq(kvbm_check_presence(p, &h, 1, &present), x.r == 0);
		ck_assert_int_eq(kvbm_available_blocks(p), TOTAL);
		ck_assert_int_eq(t_metrics(p).inflight_immutable, 0);
		ck_assert_int_eq(t_check(p), 0);
		if (i % 16 == 15)
			ck_assert_int_eq(kvbm_reset_inactive_pool(p), 0);
	}
	t_done(p, name);
}
END_TEST

/* Misuse inside one thread: a registered handle released, then registered
 * again; a freed handle staged. Errors, and nothing changes. */
START_TEST(test_stale_owned_handles_are_refused)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 4);
	struct kvbm_block b, old;

	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), 0);
	old = b;
	t_release(p, &b, 1);
	ck_assert_int_eq(kvbm_stage_block(p, &old, t_hash1(3, BS), BS), KVBM_ESTALE);
	ck_assert_int_eq(kvbm_unstage_block(p, &old), KVBM_ESTALE);
	ck_assert_int_eq(kvbm_register_blocks(p, &old, 1), KVBM_ESTALE);
	ck_assert_int_eq(kvbm_release_blocks(p, &old, 1), KVBM_ESTALE);
	t_register(p, &(struct kvbm_plh){t_hash1(5, BS).hi, t_hash1(5, BS).lo}, 1, &b);
	ck_assert_int_eq(kvbm_register_blocks(p, &b, 1), KVBM_ESTATE);
	t_release(p, &b, 1);
	ck_assert_int_eq(kvbm_release_blocks(p, &b, 1), KVBM_ENOTHELD);
	ck_assert_int_eq(kvbm_available_blocks(p), 4);
	t_done(p, name);
}
END_TEST

/* The release's first run (lib/block.c, unpin_run), which takes blocks
 * this process holds more than once with a load and a store each, checks
 * each handle as the general loop does: a handle whose generation is not
 * the slot's (an earlier or later one, or one with bits above the 48 the
 * slot keeps) is refused and drops none of the holds; nor does a handle
 * of another pool or past the last slot. */
START_TEST(test_release_run_refuses_stale_and_foreign_handles)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 4);
	struct kvbm_plh k[2] = {t_hash1(7, BS), t_hash1(8, BS)};
	struct kvbm_block b[2], m[2];

	t_register(p, k, 2, b);
	ck_assert_int_eq(kvbm_match_blocks(p, k, 2, m), 2); /* two holds each */
	const uint64_t gens[] = {b[1].gen + 1, b[1].gen - 1, b[1].gen | 1ull << 48};
	for (size_t i = 0; i < sizeof(gens) / sizeof(gens[0]); i++) {
		struct kvbm_block bad[2] = {b[0], b[1]};
		bad[1].gen = gens[i];
		/* the first in the run is dropped, the second refused */
		ck_assert_int_eq(kvbm_release_blocks(p, bad, 2), KVBM_ESTALE);
		ck_assert_int_eq(kvbm_match_blocks(p, k, 1, m), 1); /* b[0] back to two */
	}
	struct kvbm_block foreign[2] = {b[0], b[1]}, past[2] = {b[0], b[1]};
	foreign[1].pool ^= 1;
	past[1].id = 4;
	ck_assert_int_lt(kvbm_release_blocks(p, foreign, 2), 0);
	ck_assert_int_eq(kvbm_match_blocks(p, k, 1, m), 1);
	ck_assert_int_lt(kvbm_release_blocks(p, past, 2), 0);
	ck_assert_int_eq(kvbm_match_blocks(p, k, 1, m), 1);
	/* b[1] kept both holds through all of it, b[0] its two */
	for (int round = 0; round < 2; round++)
		ck_assert_int_eq(kvbm_release_blocks(p, b, 2), 0);
	ck_assert_int_eq(kvbm_release_blocks(p, &b[1], 1), KVBM_ENOTHELD);
	ck_assert_int_eq(kvbm_available_blocks(p), 4);
	t_done(p, name);
}
END_TEST

/* The release's run of last holds (lib/block.c, unpin_last_run): a batch
 * of 150 (past the 64 that one settling batch takes) all go inactive and
 * match again; in a batch with a handle of another generation, the ones
 * before it are released and it is refused, keeping its hold. */
START_TEST(test_release_last_hold_run)
{
	T_NAME(name);
	enum { N = 150 };
	struct kvbm_pool *p = t_pool(name, 256);
	struct kvbm_plh k[N];
	struct kvbm_block b[N], m[N];

	for (uint32_t i = 0; i < N; i++)
		k[i] = t_hash1(1000 + i, BS);
	t_register(p, k, N, b);
	ck_assert_int_eq(kvbm_release_blocks(p, b, N), 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 256); /* every one settled inactive */
	ck_assert_int_eq(kvbm_match_blocks(p, k, N, m), N);
	struct kvbm_block bad[3] = {m[0], m[1], m[2]};
	bad[2].gen++;
	ck_assert_int_eq(kvbm_release_blocks(p, bad, 3), KVBM_ESTALE);
	ck_assert_int_eq(kvbm_available_blocks(p), 256 - N + 2);
	ck_assert_int_eq(kvbm_release_blocks(p, m + 2, N - 2), 0);
	ck_assert_int_eq(kvbm_release_blocks(p, &m[2], 1), KVBM_ENOTHELD);
	ck_assert_int_eq(kvbm_available_blocks(p), 256);
	t_done(p, name);
}
END_TEST

/* A prefix match that meets a block whose holds by this process have
 * saturated returns the prefix before it, not an error that drops every
 * earlier hit; a scattered match counts it a miss. */
START_TEST(test_match_with_saturated_holds_returns_short_prefix)
{
	T_NAME(name);
	enum { N = 4 };
	struct kvbm_pool *p = t_pool(name, 8);
	struct kvbm_plh h[N];
	struct kvbm_block b[N], m[N], c;
	uint8_t found[N];
	uint32_t extra = 0;

	t_seq_hashes(1, N, BS, h);
	t_register(p, h, N, b);
	while (kvbm_clone_block(p, &b[2], &c) == 0)
		extra++;
	ck_assert_uint_gt(extra, 1000);
	ck_assert_int_eq(kvbm_match_blocks(p, h, N, m), 2);
	t_release(p, m, 2);
	ck_assert_int_eq(kvbm_match_blocks_scattered(p, h, N, m, found), N - 1);
	ck_assert_int_eq(found[2], 0);
	ck_assert_int_eq(found[3], 1);
	for (int i = 0; i < N; i++)
		if (found[i])
			t_release(p, &m[i], 1);
	for (uint32_t i = 0; i < extra; i++)
		t_release(p, &b[2], 1);
	t_release(p, b, N);
	t_done(p, name);
}
END_TEST

/* A primary kept active by a live duplicate is not inactive, in the
 * block's info as in the pool's counts. */
START_TEST(test_info_primary_kept_active_by_duplicate)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 4);
	struct kvbm_plh h = t_hash1(9, BS);
	struct kvbm_block prim, dup;
	struct kvbm_block_info info;

	t_register(p, &h, 1, &prim);
	t_register(p, &h, 1, &dup);
	t_release(p, &prim, 1);
	ck_assert_int_eq(kvbm_block_info(p, &prim, &info), 0);
	ck_assert_int_eq(info.holder_procs, 0);
	ck_assert_int_eq(info.inactive, 0);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 0);
	t_release(p, &dup, 1);
	ck_assert_int_eq(kvbm_block_info(p, &prim, &info), 0);
	ck_assert_int_eq(info.inactive, 1);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	t_done(p, name);
}
END_TEST

Suite *make_misuse_suite(void)
{
	Suite *s = suite_create("misuse");
	TCase *tc = tcase_create("misuse");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_release_listed_twice_frees_once);
	tcase_add_test(tc, test_two_threads_release_one_owned_handle);
	tcase_add_test(tc, test_register_and_release_race_on_one_handle);
	tcase_add_test(tc, test_stale_owned_handles_are_refused);
	tcase_add_test(tc, test_release_run_refuses_stale_and_foreign_handles);
	tcase_add_test(tc, test_release_last_hold_run);
	tcase_add_test(tc, test_match_with_saturated_holds_returns_short_prefix);
	tcase_add_test(tc, test_info_primary_kept_active_by_duplicate);
	suite_add_tcase(s, tc);
	return s;
}
