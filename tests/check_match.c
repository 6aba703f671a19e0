/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_match.c - matching, ported from kvbm-logical's matching_tests,
 * single_lock_match_tests, scattered_match_tests and scan_matches_tests.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "helpers.h"

#define BS 4

START_TEST(test_match_no_blocks)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h[3];
	struct kvbm_block out[3];

	t_seq_hashes(1, 3, BS, h);
	ck_assert_int_eq(kvbm_match_blocks(p, h, 3, out), 0);
	ck_assert_int_eq(kvbm_match_blocks(p, h, 0, out), 0); /* empty input */
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_uint_eq(m.match_hashes_requested, 3);
	ck_assert_uint_eq(m.match_blocks_returned, 0);
	t_done(p, name);
}
END_TEST

START_TEST(test_match_partial_blocks)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h[3];
	struct kvbm_block b[2], out[3];

	t_seq_hashes(1, 3, BS, h);
	t_register(p, h, 2, b);
	ck_assert_int_eq(kvbm_match_blocks(p, h, 3, out), 2);
	ck_assert_uint_eq(out[0].id, b[0].id);
	ck_assert_uint_eq(out[1].id, b[1].id);
	t_release(p, out, 2);
	t_release(p, b, 2);
	t_done(p, name);
}
END_TEST

/* [A, A, I, I, A, A]: active and inactive hits in one prefix, in order */
START_TEST(test_match_mixed_active_inactive)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h[6];
	struct kvbm_block b[6], out[6];

	t_seq_hashes(100, 6, BS, h);
	t_register(p, h, 6, b);
	t_release(p, &b[2], 2);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 2);
	ck_assert_int_eq(kvbm_match_blocks(p, h, 6, out), 6);
	for (int i = 0; i < 6; i++)
		ck_assert_uint_eq(out[i].id, b[i].id);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 4);
	t_release(p, out, 6);
	t_release(p, b, 2);
	t_release(p, &b[4], 2);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 6);
	t_done(p, name);
}
END_TEST

START_TEST(test_match_stops_on_first_miss)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h[4];
	struct kvbm_block b[4], out[4];

	t_seq_hashes(200, 4, BS, h);
	t_register(p, h, 4, b);
	t_release(p, &b[1], 1);
	/* evict block 1 only: the other inactive-free blocks are in use */
	struct kvbm_block c[7];
	ck_assert_int_eq(kvbm_allocate_blocks(p, 7, c, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_match_blocks(p, h, 4, out), 1);
	ck_assert_uint_eq(out[0].id, b[0].id);
	t_release(p, out, 1);
	t_release(p, c, 7);
	t_release(p, b, 1);
	t_release(p, &b[2], 2);
	t_done(p, name);
}
END_TEST

START_TEST(test_match_blocks_scattered)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h[4], in[5];
	struct kvbm_block b[4], out[5];
	uint8_t found[5];

	t_seq_hashes(300, 4, BS, h);
	t_register(p, h, 4, b);
	t_release(p, &b[2], 1); /* an inactive hit too */
	in[0] = h[0];
	in[1] = t_hash1(99999, BS); /* miss */
	in[2] = h[2];
	in[3] = h[0]; /* repeated */
	in[4] = h[3];
	ck_assert_int_eq(kvbm_match_blocks_scattered(p, in, 5, out, found), 4);
	ck_assert_int_eq(found[1], 0);
	ck_assert(found[0] && found[2] && found[3] && found[4]);
	ck_assert_uint_eq(out[0].id, b[0].id);
	ck_assert_uint_eq(out[3].id, b[0].id);
	ck_assert_uint_eq(out[2].id, b[2].id);
	ck_assert_uint_eq(out[4].id, b[3].id);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_uint_eq(m.match_hashes_requested, 5);
	ck_assert_uint_eq(m.match_blocks_returned, 4);
	ck_assert_uint_eq(m.scan_hashes_requested, 0);
	for (int i = 0; i < 5; i++)
		if (found[i])
			t_release(p, &out[i], 1);
	t_release(p, b, 2);
	t_release(p, &b[3], 1);
	ck_assert_int_eq(t_metrics(p).inflight_immutable, 0);
	t_done(p, name);
}
END_TEST

START_TEST(test_scan_matches_counts_distinct)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h[3], in[4];
	struct kvbm_block b[3], out[4];

	t_seq_hashes(400, 3, BS, h);
	t_register(p, h, 3, b);
	t_release(p, b, 3);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 3);
	in[0] = h[2];
	in[1] = t_hash1(77777, BS);
	in[2] = h[2];
	in[3] = h[0];
	ck_assert_int_eq(kvbm_scan_matches(p, in, 4, 0, out), 2);
	ck_assert_uint_eq(out[0].id, b[2].id);
	ck_assert_uint_eq(out[1].id, b[0].id);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_uint_eq(m.scan_hashes_requested, 4);
	ck_assert_uint_eq(m.scan_blocks_returned, 2);
	ck_assert_uint_eq(m.match_hashes_requested, 0);
	ck_assert_int_eq(m.inactive_pool_size, 1);
	t_release(p, out, 2);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 3);
	t_done(p, name);
}
END_TEST

START_TEST(test_scan_many_hashes)
{
	T_NAME(name);
	enum { N = 200 };
	struct kvbm_pool *p = t_pool(name, 256);
	struct kvbm_plh h[N], in[2 * N];
	struct kvbm_block b[N], out[2 * N];

	t_seq_hashes(1, N, BS, h);
	t_register(p, h, N, b);
	for (int i = 0; i < N; i++)
		in[2 * i] = in[2 * i + 1] = h[N - 1 - i];
	ck_assert_int_eq(kvbm_scan_matches(p, in, 2 * N, 0, out), N);
	ck_assert_uint_eq(out[0].id, b[N - 1].id);
	t_release(p, out, N);
	t_release(p, b, N);
	t_done(p, name);
}
END_TEST

START_TEST(test_check_presence_takes_no_hold)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h[2];
	struct kvbm_block b[2];
	uint8_t pres[2];

	t_seq_hashes(500, 2, BS, h);
	ck_assert_int_eq(kvbm_check_presence(p, h, 2, pres), 0);
	t_register(p, h, 1, b);
	ck_assert_int_eq(kvbm_check_presence(p, h, 2, pres), 1);
	ck_assert_int_eq(pres[0], 1);
	ck_assert_int_eq(pres[1], 0);
	t_release(p, b, 1);
	ck_assert_int_eq(kvbm_check_presence(p, h, 2, pres), 1); /* inactive counts */
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 1);
	t_done(p, name);
}
END_TEST

/* Matches @k, expects exactly block @want (its slot and generation) and a
 * block that holds @k, and releases it. */
static void match_one(struct kvbm_pool *p, struct kvbm_plh k, const struct kvbm_block *want)
{
	struct kvbm_block out;
	struct kvbm_block_info bi;

	ck_assert_int_eq(kvbm_match_blocks(p, &k, 1, &out), 1);
	ck_assert_uint_eq(out.id, want->id);
	ck_assert_uint_eq(out.gen, want->gen);
	ck_assert_int_eq(kvbm_block_info(p, &out, &bi), 0);
	ck_assert(kvbm_plh_eq(bi.hash, k));
	t_release(p, &out, 1);
}

/*
 * A handle's match hints (lib/match.c) are guesses the index's checks
 * prove: three keys that share one two-way hint set take turns in it, and
 * after the pool is emptied and the keys registered again on other slots
 * or later generations, every match still names the block the index does.
 */
START_TEST(test_match_hints_follow_the_index)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 4);
	/* hi ^ lo has the same low bits: one hint set */
	struct kvbm_plh k[3] = {{1ull << 20, 0}, {2ull << 20, 0}, {3ull << 20, 0}};
	struct kvbm_block b[3], a2, c2;

	t_register(p, k, 3, b);
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 3; i++)
			match_one(p, k[(i + round) % 3], &b[(i + round) % 3]);
	t_release(p, b, 3);
	for (int i = 2; i >= 0; i--)
		match_one(p, k[i], &b[i]); /* inactive: resurrected through a hint */
	/* every slot back to the free list (a new generation each), then c
	 * and a again, in the other order, so each may land where the other
	 * or b was */
	ck_assert_int_eq(kvbm_reset_inactive_pool(p), 0);
	t_register(p, &k[2], 1, &c2);
	t_register(p, &k[0], 1, &a2);
	match_one(p, k[0], &a2);
	match_one(p, k[2], &c2);
	struct kvbm_block out;
	ck_assert_int_eq(kvbm_match_blocks(p, &k[1], 1, &out), 0); /* b is gone */
	t_release(p, &a2, 1);
	t_release(p, &c2, 1);
	t_done(p, name);
}
END_TEST

Suite *make_match_suite(void)
{
	Suite *s = suite_create("match");
	TCase *tc = tcase_create("match");

	tcase_add_test(tc, test_match_no_blocks);
	tcase_add_test(tc, test_match_partial_blocks);
	tcase_add_test(tc, test_match_mixed_active_inactive);
	tcase_add_test(tc, test_match_stops_on_first_miss);
	tcase_add_test(tc, test_match_blocks_scattered);
	tcase_add_test(tc, test_scan_matches_counts_distinct);
	tcase_add_test(tc, test_scan_many_hashes);
	tcase_add_test(tc, test_check_presence_takes_no_hold);
	tcase_add_test(tc, test_match_hints_follow_the_index);
	suite_add_tcase(s, tc);
	return s;
}
