/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_sequence.c - BlockSequence, ExternalBlockAssignments,
 * LogicalBlockAssignments and the zip functions (kvbm_sequence.h).
 *
 * Ported from kvbm-logical 1.3 sequence/assignments/tests.rs (86 tests)
 * and sequence/assignments/logical.rs (37): one START_TEST per reference
 * test, under the reference's name; docs/SEQUENCES.md has the count and
 * the few that have no counterpart. Block size 4 and tokens 0, 1, 2, ...
 * as the reference's create_test_sequence; pools are t_pool()'s (LRU).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "kvbm_sequence.h"

#define BS 4
#define U64S(...) ((const uint64_t[]){ __VA_ARGS__ }), \
	(sizeof((const uint64_t[]){ __VA_ARGS__ }) / sizeof(uint64_t))

/* Every object a test makes is freed by the teardown (ASan's leak check
 * runs in each forked test). */
#define MAXOBJ 16
static struct kvbm_bseq *seqs[MAXOBJ];
static struct kvbm_xassign *xs[MAXOBJ];
static struct kvbm_lassign *ls[MAXOBJ];
static int nseqs, nxs, nls;
static struct kvbm_pool *pool;
static char pool_name[64];

static void teardown(void)
{
	for (int i = 0; i < nseqs; i++)
		kvbm_bseq_free(seqs[i]);
	for (int i = 0; i < nxs; i++)
		kvbm_xassign_free(xs[i]);
	for (int i = 0; i < nls; i++)
		kvbm_lassign_free(ls[i]);
	nseqs = nxs = nls = 0;
	if (pool) {
		t_done(pool, pool_name);
		pool = NULL;
	}
}

static struct kvbm_bseq *seq_tokens(const uint32_t *tokens, size_t n, uint32_t bs, uint64_t salt)
{
	struct kvbm_bseq *s = NULL;
	ck_assert_int_eq(kvbm_bseq_new(tokens, n, bs, salt, &s), 0);
	seqs[nseqs++] = s;
	return s;
}

/* The reference's create_test_sequence: tokens 0.. of @nb blocks + @partial. */
static struct kvbm_bseq *mkseq(size_t nb, size_t partial)
{
	size_t n = nb * BS + partial;
	uint32_t *t = calloc(n + 1, sizeof(*t));
	for (size_t i = 0; i < n; i++)
		t[i] = (uint32_t)i;
	struct kvbm_bseq *s = seq_tokens(t, n, BS, 0);
	free(t);
	return s;
}

static void append_range(struct kvbm_bseq *s, uint32_t from, uint32_t to)
{
	for (uint32_t t = from; t < to; t++)
		ck_assert_int_ge(kvbm_bseq_append(s, t, NULL), 0);
}

static struct kvbm_plh h(const struct kvbm_bseq *s, size_t i)
{
	ck_assert_uint_lt(i, kvbm_bseq_num_blocks(s));
	return kvbm_bseq_blocks(s)[i].plh;
}

static struct kvbm_xassign *mkx(size_t offset)
{
	struct kvbm_xassign *x = NULL;
	ck_assert_int_eq(kvbm_xassign_new(offset, &x), 0);
	xs[nxs++] = x;
	return x;
}

static void ext(struct kvbm_xassign *x, const uint64_t *ids, size_t n)
{
	struct kvbm_seq_error e;
	int r = kvbm_xassign_extend_block_ids(x, ids, n, &e);
	ck_assert_msg(r == 0, "extend_block_ids: %s", kvbm_strerror(r));
}
#define EXT(x, ...) ext(x, U64S(__VA_ARGS__))

/* assign_pending(&seq.blocks()[..n]) */
static struct kvbm_range assign_n(struct kvbm_xassign *x, const struct kvbm_bseq *s, size_t n)
{
	struct kvbm_range r = { 99, 99 };
	ck_assert_int_eq(kvbm_xassign_assign_pending(x, kvbm_bseq_blocks(s), n, &r, NULL), 0);
	return r;
}

static struct kvbm_range assign(struct kvbm_xassign *x, const struct kvbm_bseq *s)
{
	return assign_n(x, s, kvbm_bseq_num_blocks(s));
}

static struct kvbm_range stage_n(struct kvbm_xassign *x, const struct kvbm_bseq *s, size_t n)
{
	struct kvbm_range r = { 99, 99 };
	ck_assert_int_eq(kvbm_xassign_stage_pending(x, kvbm_bseq_blocks(s), n, &r, NULL), 0);
	return r;
}

static struct kvbm_range stage(struct kvbm_xassign *x, const struct kvbm_bseq *s)
{
	return stage_n(x, s, kvbm_bseq_num_blocks(s));
}

#define RANGE_EQ(r, s, e) do { struct kvbm_range r_ = (r); \
	ck_assert_msg(r_.start == (s) && r_.end == (e), "range %zu..%zu, expected %zu..%zu", \
		      r_.start, r_.end, (size_t)(s), (size_t)(e)); } while (0)

static uint64_t aid(const struct kvbm_xassign *x, size_t i)
{
	uint64_t id = 0;
	ck_assert_int_eq(kvbm_xassign_get_assigned(x, i, &id, NULL), 1);
	return id;
}

static struct kvbm_plh ahash(const struct kvbm_xassign *x, size_t i)
{
	struct kvbm_plh p;
	ck_assert_int_eq(kvbm_xassign_get_assigned(x, i, NULL, &p), 1);
	return p;
}

#define PLH_EQ(a, b) ck_assert(kvbm_plh_eq((a), (b)))

static void unassigned_eq(const struct kvbm_xassign *x, const uint64_t *ids, size_t n)
{
	ck_assert_uint_eq(kvbm_xassign_unassigned_count(x), n);
	for (size_t i = 0; i < n; i++) {
		uint64_t id;
		ck_assert_int_eq(kvbm_xassign_get_unassigned(x, i, &id), 1);
		ck_assert_uint_eq(id, ids[i]);
	}
}
#define UNASSIGNED(x, ...) unassigned_eq(x, U64S(__VA_ARGS__))

/* assigned[i] = ((i + 1) x 100, the sequence's hash i) for i < n */
static void assigned_x100(const struct kvbm_xassign *x, const struct kvbm_bseq *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_eq(aid(x, i), (i + 1) * 100);
		PLH_EQ(ahash(x, i), h(s, i));
	}
}

#define COUNTS(x, a, u) do { ck_assert_uint_eq(kvbm_xassign_assigned_count(x), (a)); \
	ck_assert_uint_eq(kvbm_xassign_unassigned_count(x), (u)); } while (0)

/* ---- aligned and partial matrices ---- */

START_TEST(test_aligned_0_blocks_0_block_ids)
{
	struct kvbm_bseq *s = mkseq(0, 0);
	struct kvbm_xassign *x = mkx(0);
	RANGE_EQ(assign(x, s), 0, 0);
	COUNTS(x, 0, 0);
}
END_TEST

START_TEST(test_aligned_1_block_0_block_ids)
{
	struct kvbm_bseq *s = mkseq(1, 0);
	struct kvbm_xassign *x = mkx(0);
	RANGE_EQ(assign(x, s), 0, 0);
	COUNTS(x, 0, 0);
}
END_TEST

START_TEST(test_aligned_1_block_1_block_id)
{
	struct kvbm_bseq *s = mkseq(1, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100);
	RANGE_EQ(assign(x, s), 0, 1);
	COUNTS(x, 1, 0);
	assigned_x100(x, s, 1);
}
END_TEST

START_TEST(test_aligned_1_block_2_block_ids)
{
	struct kvbm_bseq *s = mkseq(1, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200);
	RANGE_EQ(assign(x, s), 0, 1);
	assigned_x100(x, s, 1);
	UNASSIGNED(x, 200);
}
END_TEST

START_TEST(test_aligned_3_blocks_3_block_ids)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300);
	RANGE_EQ(assign(x, s), 0, 3);
	COUNTS(x, 3, 0);
	assigned_x100(x, s, 3);
}
END_TEST

START_TEST(test_aligned_3_blocks_1_block_id)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100);
	RANGE_EQ(assign(x, s), 0, 1);
	COUNTS(x, 1, 0);
	assigned_x100(x, s, 1);
}
END_TEST

START_TEST(test_aligned_3_blocks_5_block_ids)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400, 500);
	RANGE_EQ(assign(x, s), 0, 3);
	assigned_x100(x, s, 3);
	UNASSIGNED(x, 400, 500);
}
END_TEST

START_TEST(test_partial_0_complete_2_partial_0_block_ids)
{
	struct kvbm_bseq *s = mkseq(0, 2);
	struct kvbm_xassign *x = mkx(0);
	RANGE_EQ(assign(x, s), 0, 0);
	COUNTS(x, 0, 0);
}
END_TEST

START_TEST(test_partial_2_complete_1_partial_2_block_ids)
{
	struct kvbm_bseq *s = mkseq(2, 1);
	struct kvbm_xassign *x = mkx(0);
	ck_assert_uint_eq(kvbm_bseq_num_blocks(s), 2);
	EXT(x, 100, 200);
	RANGE_EQ(assign(x, s), 0, 2);
	COUNTS(x, 2, 0);
	assigned_x100(x, s, 2);
}
END_TEST

START_TEST(test_partial_2_complete_3_partial_4_block_ids)
{
	struct kvbm_bseq *s = mkseq(2, 3);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400);
	RANGE_EQ(assign(x, s), 0, 2);
	assigned_x100(x, s, 2);
	UNASSIGNED(x, 300, 400);
}
END_TEST

START_TEST(test_partial_3_complete_2_partial_1_block_id)
{
	struct kvbm_bseq *s = mkseq(3, 2);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100);
	RANGE_EQ(assign(x, s), 0, 1);
	COUNTS(x, 1, 0);
	assigned_x100(x, s, 1);
}
END_TEST

/* ---- incremental ---- */

START_TEST(test_incremental_assignment_aligned)
{
	struct kvbm_bseq *s = mkseq(4, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200);
	RANGE_EQ(assign(x, s), 0, 2);
	EXT(x, 100, 200, 300, 400);
	RANGE_EQ(assign(x, s), 2, 4);
	COUNTS(x, 4, 0);
	assigned_x100(x, s, 4);
}
END_TEST

START_TEST(test_incremental_assignment_with_excess)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200);
	RANGE_EQ(assign(x, s), 0, 2);
	EXT(x, 100, 200, 300, 400, 500);
	RANGE_EQ(assign(x, s), 2, 3);
	assigned_x100(x, s, 3);
	UNASSIGNED(x, 400, 500);
}
END_TEST

START_TEST(test_incremental_assignment_partial_then_excess)
{
	struct kvbm_bseq *s = mkseq(2, 1);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100);
	RANGE_EQ(assign(x, s), 0, 1);
	EXT(x, 100, 200, 300, 400);
	RANGE_EQ(assign(x, s), 1, 2);
	assigned_x100(x, s, 2);
	UNASSIGNED(x, 300, 400);
}
END_TEST

START_TEST(test_all_blocks_already_assigned_extra_goes_to_unassigned)
{
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200);
	RANGE_EQ(assign(x, s), 0, 2);
	EXT(x, 100, 200, 300, 400);
	RANGE_EQ(assign(x, s), 2, 2);
	COUNTS(x, 2, 2);
	UNASSIGNED(x, 300, 400);
}
END_TEST

START_TEST(test_empty_slot_receives_block_ids)
{
	struct kvbm_bseq *s = mkseq(0, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300);
	RANGE_EQ(assign(x, s), 0, 0);
	UNASSIGNED(x, 100, 200, 300);
}
END_TEST

START_TEST(test_only_partial_tokens_receives_block_ids)
{
	struct kvbm_bseq *s = mkseq(0, 3);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200);
	RANGE_EQ(assign(x, s), 0, 0);
	UNASSIGNED(x, 100, 200);
}
END_TEST

START_TEST(test_large_sequence_exact_match)
{
	struct kvbm_bseq *s = mkseq(10, 0);
	struct kvbm_xassign *x = mkx(0);
	uint64_t ids[10];
	for (int i = 0; i < 10; i++)
		ids[i] = (uint64_t)(i + 1) * 100;
	ext(x, ids, 10);
	RANGE_EQ(assign(x, s), 0, 10);
	COUNTS(x, 10, 0);
	assigned_x100(x, s, 10);
}
END_TEST

START_TEST(test_verify_hash_block_id_pairing_order)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 999, 888, 777, 666, 555);
	RANGE_EQ(assign(x, s), 0, 5);
	for (size_t i = 0; i < 5; i++) {
		ck_assert_uint_eq(aid(x, i), 999 - 111 * i);
		PLH_EQ(ahash(x, i), h(s, i));
	}
}
END_TEST

START_TEST(test_cartesian_product_combinations)
{
	const size_t nbs[] = { 0, 1, 3, 5 }, partials[] = { 0, 1, 3 };
	uint64_t ids[16];

	for (size_t i = 0; i < 16; i++)
		ids[i] = i;
	for (int a = 0; a < 4; a++)
		for (int b = 0; b < 3; b++) {
			struct kvbm_bseq *s = mkseq(nbs[a], partials[b]);
			size_t avail = kvbm_bseq_num_blocks(s);
			struct kvbm_xassign *x = mkx(0);
			RANGE_EQ(assign(x, s), 0, 0);
			COUNTS(x, 0, 0);
			if (avail > 1) {
				size_t fewer = avail / 2;
				x = mkx(0);
				ext(x, ids, fewer);
				RANGE_EQ(assign(x, s), 0, fewer);
				COUNTS(x, fewer, 0);
				for (size_t i = 0; i < fewer; i++) {
					ck_assert_uint_eq(aid(x, i), i);
					PLH_EQ(ahash(x, i), h(s, i));
				}
			}
			if (avail > 0) {
				x = mkx(0);
				ext(x, ids, avail);
				RANGE_EQ(assign(x, s), 0, avail);
				COUNTS(x, avail, 0);
			}
			x = mkx(0);
			ext(x, ids, avail + 3);
			RANGE_EQ(assign(x, s), 0, avail);
			COUNTS(x, avail, 3);
			unassigned_eq(x, ids + avail, 3);
			teardown(); /* room for the next combination's objects */
		}
}
END_TEST

/* ---- unassigned ids carried over ---- */

START_TEST(test_unassigned_blocks_applied_before_new_blocks)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400, 500, 600, 700);
	RANGE_EQ(assign(x, s), 0, 5);
	UNASSIGNED(x, 600, 700);
	append_range(s, 20, 28);
	ck_assert_uint_eq(kvbm_bseq_num_blocks(s), 7);
	EXT(x, 100, 200, 300, 400, 500, 600, 700, 800, 900);
	RANGE_EQ(assign(x, s), 5, 7);
	ck_assert_uint_eq(aid(x, 5), 600);
	ck_assert_uint_eq(aid(x, 6), 700);
	UNASSIGNED(x, 800, 900);
}
END_TEST

START_TEST(test_unassigned_blocks_with_new_blocks_all_assigned)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400);
	assign(x, s);
	UNASSIGNED(x, 400);
	append_range(s, 12, 24);
	ck_assert_uint_eq(kvbm_bseq_num_blocks(s), 6);
	EXT(x, 100, 200, 300, 400, 500, 600);
	RANGE_EQ(assign(x, s), 3, 6);
	assigned_x100(x, s, 6);
	COUNTS(x, 6, 0);
}
END_TEST

START_TEST(test_unassigned_blocks_no_new_space)
{
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400);
	assign(x, s);
	UNASSIGNED(x, 300, 400);
	EXT(x, 100, 200, 300, 400, 500, 600);
	RANGE_EQ(assign(x, s), 2, 2);
	UNASSIGNED(x, 300, 400, 500, 600);
}
END_TEST

START_TEST(test_unassigned_blocks_partial_space)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400, 500);
	assign(x, s);
	UNASSIGNED(x, 400, 500);
	append_range(s, 12, 16);
	EXT(x, 100, 200, 300, 400, 500, 600, 700, 800);
	RANGE_EQ(assign(x, s), 3, 4);
	ck_assert_uint_eq(aid(x, 3), 400);
	UNASSIGNED(x, 500, 600, 700, 800);
}
END_TEST

START_TEST(test_multiple_rounds_of_unassigned_accumulation)
{
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400);
	assign(x, s);
	UNASSIGNED(x, 300, 400);
	EXT(x, 100, 200, 300, 400, 500, 600);
	assign(x, s);
	UNASSIGNED(x, 300, 400, 500, 600);
	EXT(x, 100, 200, 300, 400, 500, 600, 700);
	assign(x, s);
	UNASSIGNED(x, 300, 400, 500, 600, 700);
	append_range(s, 8, 20);
	RANGE_EQ(assign(x, s), 2, 5);
	assigned_x100(x, s, 5);
	UNASSIGNED(x, 600, 700);
}
END_TEST

START_TEST(test_unassigned_blocks_ordering_preserved)
{
	struct kvbm_bseq *s = mkseq(1, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 10, 20, 30, 40, 50, 60);
	assign(x, s);
	ck_assert_uint_eq(aid(x, 0), 10);
	UNASSIGNED(x, 20, 30, 40, 50, 60);
	append_range(s, 4, 12);
	assign(x, s);
	ck_assert_uint_eq(aid(x, 1), 20);
	ck_assert_uint_eq(aid(x, 2), 30);
	UNASSIGNED(x, 40, 50, 60);
	append_range(s, 12, 16);
	EXT(x, 10, 20, 30, 40, 50, 60, 70);
	assign(x, s);
	ck_assert_uint_eq(aid(x, 3), 40);
	UNASSIGNED(x, 50, 60, 70);
}
END_TEST

START_TEST(test_unassigned_blocks_with_partial_token_block)
{
	struct kvbm_bseq *s = mkseq(2, 2);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400);
	assign(x, s);
	UNASSIGNED(x, 300, 400);
	append_range(s, 10, 12);
	ck_assert_uint_eq(kvbm_bseq_num_blocks(s), 3);
	EXT(x, 100, 200, 300, 400, 500);
	RANGE_EQ(assign(x, s), 2, 3);
	ck_assert_uint_eq(aid(x, 2), 300);
	UNASSIGNED(x, 400, 500);
}
END_TEST

START_TEST(test_unassigned_blocks_exactly_fill_new_space)
{
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400, 500);
	assign(x, s);
	UNASSIGNED(x, 300, 400, 500);
	append_range(s, 8, 20);
	RANGE_EQ(assign(x, s), 2, 5);
	assigned_x100(x, s, 5);
	COUNTS(x, 5, 0);
}
END_TEST

START_TEST(test_empty_unassigned_with_new_blocks)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300);
	assign(x, s);
	COUNTS(x, 3, 0);
	append_range(s, 12, 16);
	EXT(x, 100, 200, 300, 400);
	RANGE_EQ(assign(x, s), 3, 4);
	ck_assert_uint_eq(aid(x, 3), 400);
	COUNTS(x, 4, 0);
}
END_TEST

/* ---- ordering and duplicates ---- */

START_TEST(test_ordering_violation_known_after_new)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	struct kvbm_seq_error e;
	char msg[160];
	EXT(x, 100);
	assign(x, s);
	ck_assert_int_eq(kvbm_xassign_extend_block_ids(x, U64S(200, 100), &e), KVBM_EORDER);
	ck_assert_int_eq(e.code, KVBM_EORDER);
	ck_assert_uint_eq(e.a, 100); /* known_id */
	ck_assert_uint_eq(e.b, 200); /* new_id */
	ck_assert_uint_eq(e.c, 1);   /* known_index */
	ck_assert_uint_eq(e.d, 0);   /* first_new_index */
	kvbm_seq_error_format(&e, msg, sizeof(msg));
	ck_assert_str_eq(msg, "ordering violation: known block_id 100 at index 1 appeared after "
			      "new block_id 200 at index 0");
	COUNTS(x, 1, 0);
}
END_TEST

START_TEST(test_ordering_violation_no_state_change)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200);
	assign(x, s);
	ck_assert_int_eq(kvbm_xassign_extend_block_ids(x, U64S(300, 100), NULL), KVBM_EORDER);
	COUNTS(x, 2, 0);
	ck_assert_uint_eq(aid(x, 0), 100);
	ck_assert_uint_eq(aid(x, 1), 200);
	ck_assert(!kvbm_xassign_contains(x, 300));
}
END_TEST

START_TEST(test_all_duplicates_noop)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300);
	assign(x, s);
	EXT(x, 100, 200, 300);
	RANGE_EQ(assign(x, s), 3, 3);
	COUNTS(x, 3, 0);
}
END_TEST

START_TEST(test_duplicates_with_unassigned)
{
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400);
	assign(x, s);
	RANGE_EQ(assign(x, s), 2, 2);
	UNASSIGNED(x, 300, 400);
}
END_TEST

/* Ours: a new id given twice (the reference's DuplicateBlockId of
 * extend_block_ids), and nothing queued. */
START_TEST(test_extend_block_ids_repeated_new_id_rejected)
{
	struct kvbm_xassign *x = mkx(0);
	struct kvbm_seq_error e;
	EXT(x, 1);
	ck_assert_int_eq(kvbm_xassign_extend_block_ids(x, U64S(1, 2, 3, 2), &e), KVBM_EDUPID);
	ck_assert_uint_eq(e.a, 2);
	UNASSIGNED(x, 1);
}
END_TEST

START_TEST(test_shorter_sequence_slice_does_not_shrink_assigned)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300);
	assign(x, s);
	RANGE_EQ(assign_n(x, s, 2), 3, 3);
	COUNTS(x, 3, 0);
	assigned_x100(x, s, 3);
}
END_TEST

/* ---- offsets ---- */

START_TEST(test_offset_assignments)
{
	struct kvbm_bseq *s = mkseq(10, 0);
	struct kvbm_xassign *x = mkx(5);
	ck_assert_uint_eq(kvbm_xassign_offset(x), 5);
	ck_assert_uint_eq(kvbm_xassign_next_position(x), 5);
	EXT(x, 100, 200, 300);
	RANGE_EQ(assign(x, s), 0, 3);
	ck_assert_uint_eq(kvbm_xassign_next_position(x), 8);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_uint_eq(aid(x, i), (i + 1) * 100);
		PLH_EQ(ahash(x, i), h(s, 5 + i));
	}
}
END_TEST

START_TEST(test_offset_with_excess)
{
	struct kvbm_bseq *s = mkseq(8, 0);
	struct kvbm_xassign *x = mkx(5);
	EXT(x, 100, 200, 300, 400, 500);
	RANGE_EQ(assign(x, s), 0, 3);
	PLH_EQ(ahash(x, 0), h(s, 5));
	UNASSIGNED(x, 400, 500);
}
END_TEST

START_TEST(test_multi_instance_different_offsets)
{
	struct kvbm_bseq *s = mkseq(10, 0);
	struct kvbm_xassign *g1 = mkx(0), *g2 = mkx(5);
	EXT(g1, 10, 20, 30);
	RANGE_EQ(assign(g1, s), 0, 3);
	EXT(g2, 110, 120, 130);
	RANGE_EQ(assign(g2, s), 0, 3);
	for (size_t i = 0; i < 3; i++) {
		PLH_EQ(ahash(g1, i), h(s, i));
		PLH_EQ(ahash(g2, i), h(s, 5 + i));
	}
}
END_TEST

START_TEST(test_token_extension_then_flush)
{
	struct kvbm_bseq *s = mkseq(2, 2);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300);
	assign(x, s);
	UNASSIGNED(x, 300);
	ck_assert_int_eq(kvbm_bseq_append(s, 10, NULL), 0);
	size_t idx = 99;
	ck_assert_int_eq(kvbm_bseq_append(s, 11, &idx), 1);
	ck_assert_uint_eq(idx, 2);
	RANGE_EQ(assign(x, s), 2, 3);
	ck_assert_uint_eq(aid(x, 2), 300);
	COUNTS(x, 3, 0);
}
END_TEST

START_TEST(test_extend_tokens_creates_new_blocks)
{
	struct kvbm_bseq *s = mkseq(1, 0);
	struct kvbm_xassign *x = mkx(0);
	uint32_t more[8];
	struct kvbm_range c;
	EXT(x, 100, 200, 300);
	assign(x, s);
	for (int i = 0; i < 8; i++)
		more[i] = (uint32_t)(4 + i);
	ck_assert_int_eq(kvbm_bseq_extend(s, more, 8, &c), 0);
	RANGE_EQ(c, 1, 3);
	RANGE_EQ(assign(x, s), 1, 3);
	assigned_x100(x, s, 3);
	COUNTS(x, 3, 0);
}
END_TEST

START_TEST(test_clear_preserves_offset)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *x = mkx(3);
	EXT(x, 100, 200, 300);
	assign(x, s);
	COUNTS(x, 2, 1);
	kvbm_xassign_clear(x);
	ck_assert_uint_eq(kvbm_xassign_offset(x), 3);
	COUNTS(x, 0, 0);
	ck_assert_uint_eq(kvbm_xassign_next_position(x), 3);
	ck_assert(!kvbm_xassign_contains(x, 100));
}
END_TEST

START_TEST(test_assign_with_nonzero_offset)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(1);
	EXT(x, 100, 200);
	RANGE_EQ(assign(x, s), 0, 2);
	PLH_EQ(ahash(x, 0), h(s, 1));
	PLH_EQ(ahash(x, 1), h(s, 2));
}
END_TEST

START_TEST(test_contains)
{
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300);
	assign(x, s);
	ck_assert(kvbm_xassign_contains(x, 100));
	ck_assert(kvbm_xassign_contains(x, 200));
	ck_assert(kvbm_xassign_contains(x, 300));
	ck_assert(!kvbm_xassign_contains(x, 400));
}
END_TEST

START_TEST(test_assigned_iter)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300);
	assign(x, s);
	ck_assert_uint_eq(kvbm_xassign_assigned_count(x), 3);
	assigned_x100(x, s, 3);
	ck_assert_int_eq(kvbm_xassign_get_assigned(x, 3, NULL, NULL), 0);
}
END_TEST

/* ---- BlockSequence ---- */

START_TEST(test_block_sequence_new)
{
	struct kvbm_bseq *s = seq_tokens((const uint32_t[]){ 0, 1, 2, 3, 4, 5, 6, 7 }, 8, 4, 0);
	ck_assert_uint_eq(kvbm_bseq_num_blocks(s), 2);
	ck_assert_uint_eq(kvbm_bseq_block_size(s), 4);
	ck_assert_uint_eq(kvbm_bseq_total_tokens(s), 8);
}
END_TEST

START_TEST(test_block_sequence_all_sequence_hashes)
{
	const uint32_t t[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
	struct kvbm_bseq *s = seq_tokens(t, 8, 4, 0);
	struct kvbm_plh p[4];
	struct kvbm_block_hashes ref[2];
	ck_assert_uint_eq(kvbm_bseq_sequence_hashes(s, p, 4), 2);
	/* and they are kvbm_hash_tokens()'s, the pool's hashing */
	ck_assert_int_eq(kvbm_hash_tokens(t, 8, 4, 0, ref, 2), 2);
	for (int i = 0; i < 2; i++) {
		PLH_EQ(p[i], h(s, (size_t)i));
		PLH_EQ(p[i], ref[i].plh);
	}
}
END_TEST

START_TEST(test_block_sequence_extend_tokens)
{
	struct kvbm_bseq *s = seq_tokens((const uint32_t[]){ 0, 1, 2, 3 }, 4, 4, 0);
	struct kvbm_range c;
	ck_assert_uint_eq(kvbm_bseq_num_blocks(s), 1);
	ck_assert_int_eq(kvbm_bseq_extend(s, (const uint32_t[]){ 4, 5, 6, 7, 8, 9 }, 6, &c), 0);
	RANGE_EQ(c, 1, 2);
	ck_assert_uint_eq(kvbm_bseq_num_blocks(s), 2);
	ck_assert_uint_eq(kvbm_bseq_total_tokens(s), 10);
}
END_TEST

START_TEST(test_block_sequence_append_token)
{
	struct kvbm_bseq *s = seq_tokens((const uint32_t[]){ 0, 1, 2 }, 3, 4, 0);
	size_t idx = 99;
	ck_assert_uint_eq(kvbm_bseq_num_blocks(s), 0);
	ck_assert_int_eq(kvbm_bseq_append(s, 3, &idx), 1);
	ck_assert_uint_eq(idx, 0);
	ck_assert_uint_eq(kvbm_bseq_num_blocks(s), 1);
}
END_TEST

START_TEST(test_block_sequence_with_salt)
{
	const uint32_t t[4] = { 0, 1, 2, 3 };
	struct kvbm_bseq *a = seq_tokens(t, 4, 4, 0), *b = seq_tokens(t, 4, 4, 42);
	ck_assert(!kvbm_plh_eq(h(a, 0), h(b, 0)));
}
END_TEST

/* Ours: incremental hashing (block by block, long runs, truncation)
 * agrees with hashing the whole sequence at once, across the PLH mode
 * change at position 256. */
START_TEST(test_block_sequence_incremental_matches_bulk)
{
	enum { N = 300 * 4 + 3 };
	uint32_t *t = malloc(N * sizeof(*t));
	struct kvbm_block_hashes *ref = malloc(300 * sizeof(*ref));
	for (uint32_t i = 0; i < N; i++)
		t[i] = i * 7u + 1;
	ck_assert_int_eq(kvbm_hash_tokens(t, N, 4, 9, ref, 300), 300);
	struct kvbm_bseq *s = seq_tokens(t, 5, 4, 9);
	for (size_t i = 5; i < 600; i++)
		ck_assert_int_ge(kvbm_bseq_append(s, t[i], NULL), 0);
	ck_assert_int_eq(kvbm_bseq_extend(s, t + 600, N - 600, NULL), 0);
	ck_assert_uint_eq(kvbm_bseq_num_blocks(s), 300);
	for (size_t i = 0; i < 300; i++)
		PLH_EQ(h(s, i), ref[i].plh);
	ck_assert_int_eq(kvbm_bseq_truncate(s, 10), 0);
	ck_assert_uint_eq(kvbm_bseq_num_blocks(s), 2);
	ck_assert_int_eq(kvbm_bseq_truncate(s, 11), -ERANGE);
	ck_assert_int_eq(kvbm_bseq_extend(s, t + 10, N - 10, NULL), 0);
	for (size_t i = 0; i < 300; i++)
		PLH_EQ(h(s, i), ref[i].plh);
	ck_assert_mem_eq(kvbm_bseq_tokens(s), t, N * sizeof(*t));
	free(t);
	free(ref);
}
END_TEST

/* ---- positions ---- */

START_TEST(test_assigned_positions_empty)
{
	RANGE_EQ(kvbm_xassign_assigned_positions(mkx(0)), 0, 0);
}
END_TEST

START_TEST(test_assigned_positions_with_offset)
{
	struct kvbm_bseq *s = mkseq(10, 0);
	struct kvbm_xassign *x = mkx(3);
	EXT(x, 100, 200);
	assign(x, s);
	RANGE_EQ(kvbm_xassign_assigned_positions(x), 3, 5);
}
END_TEST

START_TEST(test_pending_positions_empty)
{
	RANGE_EQ(kvbm_xassign_pending_positions(mkx(0)), 0, 0);
}
END_TEST

START_TEST(test_pending_positions_with_assigned_and_unassigned)
{
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400);
	assign(x, s);
	RANGE_EQ(kvbm_xassign_pending_positions(x), 2, 4);
}
END_TEST

START_TEST(test_pending_positions_with_offset)
{
	struct kvbm_bseq *s = mkseq(10, 0);
	struct kvbm_xassign *x = mkx(5);
	EXT(x, 100, 200, 300, 400);
	assign(x, s);
	RANGE_EQ(kvbm_xassign_assigned_positions(x), 5, 9);
	RANGE_EQ(kvbm_xassign_pending_positions(x), 9, 9);
}
END_TEST

START_TEST(test_get_at_position_in_range)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *x = mkx(2);
	uint64_t id;
	struct kvbm_plh p;
	EXT(x, 100, 200, 300);
	assign(x, s);
	ck_assert_int_eq(kvbm_xassign_get_at_position(x, 2, &id, &p), 1);
	ck_assert_uint_eq(id, 100);
	PLH_EQ(p, h(s, 2));
	ck_assert_int_eq(kvbm_xassign_get_at_position(x, 4, &id, &p), 1);
	ck_assert_uint_eq(id, 300);
	PLH_EQ(p, h(s, 4));
}
END_TEST

START_TEST(test_get_at_position_out_of_range)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *x = mkx(2);
	EXT(x, 100, 200);
	assign(x, s);
	ck_assert_int_eq(kvbm_xassign_get_at_position(x, 0, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_xassign_get_at_position(x, 1, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_xassign_get_at_position(x, 4, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_xassign_get_at_position(x, 100, NULL, NULL), 0);
}
END_TEST

START_TEST(test_get_pending_at_position_in_range)
{
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_xassign *x = mkx(0);
	uint64_t id;
	EXT(x, 100, 200, 300, 400, 500);
	assign(x, s);
	for (size_t pos = 2; pos < 5; pos++) {
		ck_assert_int_eq(kvbm_xassign_get_pending_at_position(x, pos, &id), 1);
		ck_assert_uint_eq(id, (pos + 1) * 100);
	}
}
END_TEST

START_TEST(test_get_pending_at_position_out_of_range)
{
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400);
	assign(x, s);
	ck_assert_int_eq(kvbm_xassign_get_pending_at_position(x, 0, NULL), 0);
	ck_assert_int_eq(kvbm_xassign_get_pending_at_position(x, 1, NULL), 0);
	ck_assert_int_eq(kvbm_xassign_get_pending_at_position(x, 4, NULL), 0);
	ck_assert_int_eq(kvbm_xassign_get_pending_at_position(x, 100, NULL), 0);
}
END_TEST

/* ---- zip ---- */

static void zip_eq(const struct kvbm_zip *z, size_t n, const uint64_t *want, size_t nwant)
{
	ck_assert_uint_eq(n * 3, nwant);
	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_eq(z[i].position, want[3 * i]);
		ck_assert_uint_eq(z[i].a, want[3 * i + 1]);
		ck_assert_uint_eq(z[i].b, want[3 * i + 2]);
	}
}
#define ZIP_EQ(z, n, ...) zip_eq(z, n, U64S(__VA_ARGS__))

START_TEST(test_zip_assigned_full_overlap)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *a = mkx(0), *b = mkx(0);
	struct kvbm_zip z[8];
	EXT(a, 10, 20, 30);
	assign(a, s);
	EXT(b, 110, 120, 130);
	assign(b, s);
	size_t n = kvbm_zip_assigned(a, b, z, 8);
	ZIP_EQ(z, n, 0, 10, 110, 1, 20, 120, 2, 30, 130);
}
END_TEST

START_TEST(test_zip_assigned_partial_overlap)
{
	struct kvbm_bseq *s = mkseq(10, 0);
	struct kvbm_xassign *a = mkx(0), *b = mkx(2);
	struct kvbm_zip z[8];
	EXT(a, 10, 20, 30, 40);
	assign(a, s);
	EXT(b, 110, 120, 130);
	assign(b, s);
	size_t n = kvbm_zip_assigned(a, b, z, 8);
	ZIP_EQ(z, n, 2, 30, 110, 3, 40, 120);
}
END_TEST

START_TEST(test_zip_assigned_no_overlap)
{
	struct kvbm_bseq *s = mkseq(10, 0);
	struct kvbm_xassign *a = mkx(0), *b = mkx(5);
	EXT(a, 10, 20);
	assign(a, s);
	EXT(b, 110, 120);
	assign(b, s);
	ck_assert_uint_eq(kvbm_zip_assigned(a, b, NULL, 0), 0);
}
END_TEST

START_TEST(test_zip_assigned_either_empty)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *a = mkx(0), *b = mkx(0);
	EXT(b, 110, 120);
	assign(b, s);
	ck_assert_uint_eq(kvbm_zip_assigned(a, b, NULL, 0), 0);
	ck_assert_uint_eq(kvbm_zip_assigned(b, a, NULL, 0), 0);
}
END_TEST

START_TEST(test_zip_assigned_both_empty)
{
	ck_assert_uint_eq(kvbm_zip_assigned(mkx(0), mkx(0), NULL, 0), 0);
}
END_TEST

START_TEST(test_zip_assigned_pending_full_overlap)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *src = mkx(2), *dst = mkx(0);
	struct kvbm_zip z[8];
	EXT(src, 10, 20, 30);
	assign(src, s);
	EXT(dst, 110, 120, 130, 140, 150);
	assign_n(dst, s, 2);
	COUNTS(dst, 2, 3);
	size_t n = kvbm_zip_assigned_pending(src, dst, z, 8);
	ZIP_EQ(z, n, 2, 10, 130, 3, 20, 140, 4, 30, 150);
}
END_TEST

START_TEST(test_zip_assigned_pending_partial_overlap)
{
	struct kvbm_bseq *s = mkseq(10, 0);
	struct kvbm_xassign *src = mkx(2), *dst = mkx(0);
	struct kvbm_zip z[8];
	EXT(src, 10, 20, 30, 40);
	assign(src, s);
	EXT(dst, 110, 120, 130, 140, 150);
	assign_n(dst, s, 3);
	COUNTS(dst, 3, 2);
	size_t n = kvbm_zip_assigned_pending(src, dst, z, 8);
	ZIP_EQ(z, n, 3, 20, 140, 4, 30, 150);
}
END_TEST

START_TEST(test_zip_assigned_pending_no_overlap)
{
	struct kvbm_bseq *s = mkseq(10, 0);
	struct kvbm_xassign *src = mkx(0), *dst = mkx(0);
	EXT(src, 10, 20);
	assign(src, s);
	EXT(dst, 110, 120, 130, 140, 150, 160, 170);
	assign(dst, s);
	ck_assert_uint_eq(kvbm_zip_assigned_pending(src, dst, NULL, 0), 0);
}
END_TEST

START_TEST(test_zip_assigned_pending_either_empty)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *src = mkx(0), *dst = mkx(0), *src2 = mkx(0), *dst2 = mkx(0);
	EXT(dst, 110, 120, 130);
	assign(dst, s);
	ck_assert_uint_eq(kvbm_zip_assigned_pending(src, dst, NULL, 0), 0);
	EXT(src2, 10, 20);
	assign(src2, s);
	ck_assert_uint_eq(kvbm_zip_assigned_pending(src2, dst2, NULL, 0), 0);
}
END_TEST

START_TEST(test_onboard_scenario_g2_to_g1)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *g1 = mkx(0), *g2 = mkx(2);
	struct kvbm_zip z[8];
	EXT(g1, 1000, 1001);
	assign(g1, s);
	RANGE_EQ(kvbm_xassign_assigned_positions(g1), 0, 2);
	EXT(g2, 2002, 2003, 2004);
	assign(g2, s);
	RANGE_EQ(kvbm_xassign_assigned_positions(g2), 2, 5);
	EXT(g1, 1000, 1001, 1002, 1003, 1004);
	COUNTS(g1, 2, 3);
	RANGE_EQ(kvbm_xassign_pending_positions(g1), 2, 5);
	size_t n = kvbm_zip_assigned_pending(g2, g1, z, 8);
	ZIP_EQ(z, n, 2, 2002, 1002, 3, 2003, 1003, 4, 2004, 1004);
	assign(g1, s);
	COUNTS(g1, 5, 0);
	RANGE_EQ(kvbm_xassign_assigned_positions(g1), 0, 5);
	n = kvbm_zip_assigned(g2, g1, z, 8);
	ZIP_EQ(z, n, 2, 2002, 1002, 3, 2003, 1003, 4, 2004, 1004);
	/* and a short buffer gets the first ones, the count says how many */
	ck_assert_uint_eq(kvbm_zip_assigned(g2, g1, z, 1), 3);
	ck_assert_uint_eq(z[0].position, 2);
}
END_TEST

/* ---- stage / commit ---- */

START_TEST(test_stage_pending_basic)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	uint64_t id;
	struct kvbm_plh p;
	EXT(x, 100, 200, 300);
	RANGE_EQ(stage(x, s), 0, 3);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 3);
	COUNTS(x, 0, 0);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_int_eq(kvbm_xassign_get_staged(x, i, &id, &p), 1);
		ck_assert_uint_eq(id, (i + 1) * 100);
		PLH_EQ(p, h(s, i));
	}
}
END_TEST

START_TEST(test_commit_staged_basic)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300);
	stage(x, s);
	RANGE_EQ(kvbm_xassign_commit_staged(x), 0, 3);
	COUNTS(x, 3, 0);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 0);
	assigned_x100(x, s, 3);
}
END_TEST

START_TEST(test_stage_pending_partial)
{
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400, 500);
	RANGE_EQ(stage(x, s), 0, 2);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 2);
	ck_assert_uint_eq(kvbm_xassign_unassigned_count(x), 3);
}
END_TEST

START_TEST(test_stage_pending_then_commit_then_stage_more)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400, 500);
	RANGE_EQ(stage_n(x, s, 3), 0, 3);
	ck_assert_uint_eq(kvbm_xassign_unassigned_count(x), 2);
	RANGE_EQ(kvbm_xassign_commit_staged(x), 0, 3);
	RANGE_EQ(stage(x, s), 0, 2);
	ck_assert_uint_eq(kvbm_xassign_unassigned_count(x), 0);
	RANGE_EQ(kvbm_xassign_commit_staged(x), 3, 5);
	assigned_x100(x, s, 5);
}
END_TEST

START_TEST(test_stage_pending_empty_unassigned)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	RANGE_EQ(stage(x, s), 0, 0);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 0);
}
END_TEST

/* Ours: a block whose hash is of another position is KVBM_EPOSITION and
 * nothing is staged (the reference's PositionMismatch, untested there). */
START_TEST(test_stage_pending_position_mismatch)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	struct kvbm_block_hashes b[3];
	struct kvbm_seq_error e;
	memcpy(b, kvbm_bseq_blocks(s), sizeof(b));
	b[1] = b[2]; /* position 2 where 1 belongs */
	EXT(x, 100, 200, 300);
	ck_assert_int_eq(kvbm_xassign_stage_pending(x, b, 3, NULL, &e), KVBM_EPOSITION);
	ck_assert_uint_eq(e.a, 1);
	ck_assert_uint_eq(e.b, 2);
	ck_assert_uint_eq(e.c, 200);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 0);
	UNASSIGNED(x, 100, 200, 300);
}
END_TEST

START_TEST(test_commit_staged_empty)
{
	RANGE_EQ(kvbm_xassign_commit_staged(mkx(0)), 0, 0);
}
END_TEST

START_TEST(test_staged_positions_empty)
{
	RANGE_EQ(kvbm_xassign_staged_positions(mkx(0)), 0, 0);
}
END_TEST

START_TEST(test_staged_positions_after_stage)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200);
	assign(x, s);
	EXT(x, 100, 200, 300, 400, 500);
	stage(x, s);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 3);
	RANGE_EQ(kvbm_xassign_staged_positions(x), 2, 5);
	RANGE_EQ(kvbm_xassign_assigned_positions(x), 0, 2);
}
END_TEST

START_TEST(test_staged_positions_with_offset)
{
	struct kvbm_bseq *s = mkseq(10, 0);
	struct kvbm_xassign *x = mkx(3);
	EXT(x, 100, 200);
	assign(x, s);
	EXT(x, 100, 200, 300, 400);
	stage(x, s);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 2);
	RANGE_EQ(kvbm_xassign_staged_positions(x), 5, 7);
}
END_TEST

START_TEST(test_staged_iter)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	uint64_t id;
	struct kvbm_plh p;
	EXT(x, 100, 200, 300);
	stage(x, s);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_int_eq(kvbm_xassign_get_staged(x, i, &id, &p), 1);
		ck_assert_uint_eq(id, (i + 1) * 100);
		PLH_EQ(p, h(s, i));
	}
	ck_assert_int_eq(kvbm_xassign_get_staged(x, 3, &id, &p), 0);
}
END_TEST

START_TEST(test_take_staged)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	uint64_t ids[3];
	struct kvbm_plh p[3];
	EXT(x, 100, 200, 300);
	stage(x, s);
	ck_assert_int_eq(kvbm_xassign_take_staged(x, ids, p, 2), -ERANGE); /* no room: kept */
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 3);
	ck_assert_int_eq(kvbm_xassign_take_staged(x, ids, p, 3), 3);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 0);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_uint_eq(ids[i], (i + 1) * 100);
		PLH_EQ(p[i], h(s, i));
	}
}
END_TEST

START_TEST(test_next_position_accounts_for_staged)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300);
	ck_assert_uint_eq(kvbm_xassign_next_position(x), 0);
	stage(x, s);
	ck_assert_uint_eq(kvbm_xassign_next_position(x), 3);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 3);
	kvbm_xassign_commit_staged(x);
	ck_assert_uint_eq(kvbm_xassign_next_position(x), 3);
	ck_assert_uint_eq(kvbm_xassign_assigned_count(x), 3);
}
END_TEST

START_TEST(test_pending_positions_accounts_for_staged)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400, 500);
	stage(x, s);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 3);
	ck_assert_uint_eq(kvbm_xassign_unassigned_count(x), 2);
	RANGE_EQ(kvbm_xassign_pending_positions(x), 3, 5);
}
END_TEST

/* ---- extend_assigned ---- */

static void xassigned(struct kvbm_xassign *x, const struct kvbm_bseq *s, size_t from,
		      const uint64_t *ids, size_t n)
{
	struct kvbm_plh p[8];
	for (size_t i = 0; i < n; i++)
		p[i] = h(s, from + i);
	ck_assert_int_eq(kvbm_xassign_extend_assigned(x, ids, p, n, NULL), (long)n);
}

START_TEST(test_extend_assigned_basic)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	xassigned(x, s, 0, U64S(100, 200, 300));
	COUNTS(x, 3, 0);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 0);
	assigned_x100(x, s, 3);
}
END_TEST

START_TEST(test_extend_assigned_then_stage_pending)
{
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_xassign *x = mkx(0);
	xassigned(x, s, 0, U64S(100, 200));
	EXT(x, 100, 200, 300, 400, 500);
	stage(x, s);
	kvbm_xassign_commit_staged(x);
	assigned_x100(x, s, 5);
}
END_TEST

START_TEST(test_extend_assigned_duplicate_detection)
{
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_xassign *x = mkx(0);
	struct kvbm_seq_error e;
	struct kvbm_plh p = h(s, 1);
	char msg[80];
	xassigned(x, s, 0, U64S(100));
	const uint64_t id100 = 100;
	ck_assert_int_eq(kvbm_xassign_extend_assigned(x, &id100, &p, 1, &e), KVBM_EDUPID);
	ck_assert_uint_eq(e.a, 100);
	kvbm_seq_error_format(&e, msg, sizeof(msg));
	ck_assert_str_eq(msg, "duplicate block_id 100 already present");
	ck_assert_uint_eq(kvbm_xassign_assigned_count(x), 1);
}
END_TEST

START_TEST(test_extend_assigned_empty)
{
	struct kvbm_xassign *x = mkx(0);
	ck_assert_int_eq(kvbm_xassign_extend_assigned(x, NULL, NULL, 0, NULL), 0);
	ck_assert_uint_eq(kvbm_xassign_assigned_count(x), 0);
}
END_TEST

START_TEST(test_contains_with_staged)
{
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_xassign *x = mkx(0);
	EXT(x, 100, 200, 300, 400, 500);
	assign_n(x, s, 2);
	stage(x, s);
	ck_assert_uint_eq(kvbm_xassign_staged_count(x), 1);
	COUNTS(x, 2, 2);
	for (uint64_t id = 100; id <= 500; id += 100)
		ck_assert(kvbm_xassign_contains(x, id));
	ck_assert(!kvbm_xassign_contains(x, 600));
}
END_TEST

/* Ours: the id set survives growth and removals (many ids, take_staged
 * removing some in the middle of probe runs). */
START_TEST(test_contains_many_ids_and_removals)
{
	enum { N = 2000 };
	struct kvbm_bseq *s = mkseq(N, 0);
	struct kvbm_xassign *x = mkx(0);
	uint64_t *ids = malloc(N * sizeof(*ids));
	for (size_t i = 0; i < N; i++)
		ids[i] = i * 4096 + 7; /* collide in the low bits */
	ext(x, ids, N);
	RANGE_EQ(stage_n(x, s, N / 2), 0, N / 2);
	ck_assert_int_eq(kvbm_xassign_take_staged(x, NULL, NULL, N), N / 2);
	for (size_t i = 0; i < N; i++)
		ck_assert_int_eq(kvbm_xassign_contains(x, ids[i]), i >= N / 2);
	free(ids);
}
END_TEST

/* ---- LogicalBlockAssignments (logical.rs) ---- */

static struct kvbm_lassign *mkl(void)
{
	struct kvbm_lassign *l = NULL;
	if (!pool) {
		t_name(pool_name, sizeof(pool_name));
		pool = t_pool(pool_name, 10);
	}
	ck_assert_int_eq(kvbm_lassign_new(pool, &l), 0);
	ls[nls++] = l;
	return l;
}

static void alloc(size_t n, struct kvbm_block *out)
{
	ck_assert_int_eq(kvbm_allocate_blocks(pool, (uint32_t)n, out, NULL, NULL), 0);
}

/* the reference's register_blocks_directly: holds on @n registered blocks */
static void register_directly(const struct kvbm_bseq *s, size_t n, struct kvbm_block *out)
{
	struct kvbm_plh p[8];
	kvbm_bseq_sequence_hashes(s, p, n);
	t_register(pool, p, n, out);
}

static long lstage(struct kvbm_lassign *l, const struct kvbm_bseq *s, size_t from, size_t n)
{
	return kvbm_lassign_stage(l, kvbm_bseq_blocks(s) + from, n, BS);
}

static uint32_t lid(const struct kvbm_lassign *l, int which, size_t i)
{
	struct kvbm_block b;
	int r = which == 0 ? kvbm_lassign_get_assigned(l, i, &b, NULL)
		: which == 1 ? kvbm_lassign_get_staged(l, i, &b, NULL)
			     : kvbm_lassign_get_unassigned(l, i, &b);
	ck_assert_int_eq(r, 1);
	return b.id;
}

#define LCOUNTS(l, a, s, u) do { ck_assert_uint_eq(kvbm_lassign_assigned_count(l), (a)); \
	ck_assert_uint_eq(kvbm_lassign_staged_count(l), (s)); \
	ck_assert_uint_eq(kvbm_lassign_unassigned_count(l), (u)); } while (0)

START_TEST(test_empty_construction)
{
	struct kvbm_lassign *l = mkl();
	ck_assert(kvbm_lassign_is_empty(l));
	LCOUNTS(l, 0, 0, 0);
	ck_assert(!kvbm_lassign_contains(l, 0));
}
END_TEST

START_TEST(test_default_is_empty)
{
	ck_assert(kvbm_lassign_is_empty(mkl()));
}
END_TEST

START_TEST(test_extend_blocks_basic)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_block b[5];
	alloc(5, b);
	ck_assert_int_eq(kvbm_lassign_extend_blocks(l, b, 5, NULL), 5);
	LCOUNTS(l, 0, 0, 5);
	ck_assert(!kvbm_lassign_is_empty(l));
	for (size_t i = 0; i < 5; i++)
		ck_assert_uint_eq(lid(l, 2, i), b[i].id);
}
END_TEST

START_TEST(test_extend_assigned_basic_logical)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3], g;
	struct kvbm_plh p;
	register_directly(s, 3, b);
	ck_assert_int_eq(kvbm_lassign_extend_assigned(l, b, NULL, 3, NULL), 3);
	LCOUNTS(l, 3, 0, 0);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_int_eq(kvbm_lassign_get_assigned(l, i, &g, &p), 1);
		ck_assert_uint_eq(g.id, b[i].id);
		PLH_EQ(p, h(s, i));
	}
}
END_TEST

START_TEST(test_extend_assigned_ordering_preserved)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_block b[5];
	register_directly(s, 5, b);
	ck_assert_int_eq(kvbm_lassign_extend_assigned(l, b, NULL, 5, NULL), 5);
	for (size_t i = 0; i < 5; i++)
		ck_assert_uint_eq(lid(l, 0, i), b[i].id);
}
END_TEST

START_TEST(test_extend_assigned_contains)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3];
	register_directly(s, 3, b);
	kvbm_lassign_extend_assigned(l, b, NULL, 3, NULL);
	for (size_t i = 0; i < 3; i++)
		ck_assert(kvbm_lassign_contains(l, b[i].id));
	ck_assert(!kvbm_lassign_contains(l, 999));
}
END_TEST

START_TEST(test_extend_assigned_then_extend_stage_register)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_block m[3], n[2];
	register_directly(s, 3, m);
	kvbm_lassign_extend_assigned(l, m, NULL, 3, NULL);
	alloc(2, n);
	ck_assert_int_eq(kvbm_lassign_extend_blocks(l, n, 2, NULL), 2);
	ck_assert_int_eq(lstage(l, s, 3, 2), 2);
	ck_assert_int_eq(kvbm_lassign_register(l, NULL), 2);
	LCOUNTS(l, 5, 0, 0);
	for (size_t i = 0; i < 3; i++)
		ck_assert_uint_eq(lid(l, 0, i), m[i].id);
	for (size_t i = 0; i < 2; i++)
		ck_assert_uint_eq(lid(l, 0, 3 + i), n[i].id);
}
END_TEST

START_TEST(test_extend_assigned_with_match_blocks)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3], m[3];
	struct kvbm_plh hs[3], p;
	register_directly(s, 3, b);
	t_release(pool, b, 3); /* inactive now */
	kvbm_bseq_sequence_hashes(s, hs, 3);
	ck_assert_int_eq(kvbm_match_blocks(pool, hs, 3, m), 3);
	ck_assert_int_eq(kvbm_lassign_extend_assigned(l, m, NULL, 3, NULL), 3);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_int_eq(kvbm_lassign_get_assigned(l, i, NULL, &p), 1);
		PLH_EQ(p, hs[i]);
	}
}
END_TEST

START_TEST(test_extend_assigned_empty_logical)
{
	struct kvbm_lassign *l = mkl();
	ck_assert_int_eq(kvbm_lassign_extend_assigned(l, NULL, NULL, 0, NULL), 0);
	ck_assert(kvbm_lassign_is_empty(l));
}
END_TEST

START_TEST(test_stage_basic)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3];
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	ck_assert_int_eq(lstage(l, s, 0, 3), 3);
	LCOUNTS(l, 0, 3, 0);
	for (size_t i = 0; i < 3; i++)
		ck_assert_uint_eq(lid(l, 1, i), b[i].id);
}
END_TEST

START_TEST(test_stage_fifo_drain)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[5];
	alloc(5, b);
	kvbm_lassign_extend_blocks(l, b, 5, NULL);
	lstage(l, s, 0, 3);
	ck_assert_uint_eq(kvbm_lassign_unassigned_count(l), 2);
	ck_assert_uint_eq(lid(l, 2, 0), b[3].id);
	ck_assert_uint_eq(lid(l, 2, 1), b[4].id);
}
END_TEST

START_TEST(test_stage_partial_fewer_blocks_than_unassigned)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[5];
	alloc(5, b);
	kvbm_lassign_extend_blocks(l, b, 5, NULL);
	ck_assert_int_eq(lstage(l, s, 0, 3), 3);
	LCOUNTS(l, 0, 3, 2);
}
END_TEST

START_TEST(test_stage_partial_fewer_unassigned_than_blocks)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_block b[2];
	alloc(2, b);
	kvbm_lassign_extend_blocks(l, b, 2, NULL);
	ck_assert_int_eq(lstage(l, s, 0, 5), 2);
	LCOUNTS(l, 0, 2, 0);
}
END_TEST

/* The reference hands the failing block back inside the error; here the
 * call is all or nothing and every block stays unassigned, MUTABLE. */
START_TEST(test_stage_block_size_mismatch_recovery)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_block b[3];
	struct kvbm_block_info bi;
	uint32_t t[24];
	for (uint32_t i = 0; i < 24; i++)
		t[i] = i;
	struct kvbm_bseq *bad = seq_tokens(t, 24, 8, 0), *good = mkseq(3, 0);
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	ck_assert_int_eq(kvbm_lassign_stage(l, kvbm_bseq_blocks(bad), 3, 8), KVBM_ESIZE);
	LCOUNTS(l, 0, 0, 3);
	ck_assert_int_eq(kvbm_block_info(pool, &b[0], &bi), 0);
	ck_assert_uint_eq(bi.state, KVBM_BLOCK_MUTABLE);
	ck_assert_int_eq(lstage(l, good, 0, 3), 3); /* recovered */
}
END_TEST

START_TEST(test_stage_partial_then_mismatch)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_block b[3];
	uint32_t t[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
	struct kvbm_bseq *good = mkseq(2, 0), *bad = seq_tokens(t, 8, 8, 0);
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	ck_assert_int_eq(lstage(l, good, 0, 2), 2);
	LCOUNTS(l, 0, 2, 1);
	ck_assert_int_eq(kvbm_lassign_stage(l, kvbm_bseq_blocks(bad), 1, 8), KVBM_ESIZE);
	LCOUNTS(l, 0, 2, 1); /* the reference: 0 unassigned, the block handed back */
}
END_TEST

START_TEST(test_register_basic)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3], g;
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	lstage(l, s, 0, 3);
	ck_assert_int_eq(kvbm_lassign_register(l, NULL), 3);
	LCOUNTS(l, 3, 0, 0);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_int_eq(kvbm_lassign_get_assigned(l, i, &g, NULL), 1);
		ck_assert_uint_eq(g.id, b[i].id);
	}
}
END_TEST

START_TEST(test_register_empty_staged)
{
	ck_assert_int_eq(kvbm_lassign_register(mkl(), NULL), 0);
}
END_TEST

START_TEST(test_full_pipeline_extend_stage_register)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(5, 0);
	struct kvbm_block b[5], g;
	struct kvbm_plh p;
	alloc(5, b);
	kvbm_lassign_extend_blocks(l, b, 5, NULL);
	LCOUNTS(l, 0, 0, 5);
	lstage(l, s, 0, 5);
	LCOUNTS(l, 0, 5, 0);
	kvbm_lassign_register(l, NULL);
	LCOUNTS(l, 5, 0, 0);
	for (size_t i = 0; i < 5; i++) {
		ck_assert_int_eq(kvbm_lassign_get_assigned(l, i, &g, &p), 1);
		ck_assert_uint_eq(g.id, b[i].id);
		PLH_EQ(p, h(s, i));
	}
}
END_TEST

START_TEST(test_full_pipeline_incremental)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(6, 0);
	struct kvbm_block b[6];
	alloc(6, b);
	kvbm_lassign_extend_blocks(l, b, 6, NULL);
	lstage(l, s, 0, 3);
	kvbm_lassign_register(l, NULL);
	LCOUNTS(l, 3, 0, 3);
	lstage(l, s, 3, 3); /* the reference restages blocks[..3]: same hashes again */
	kvbm_lassign_register(l, NULL);
	LCOUNTS(l, 6, 0, 0);
	for (size_t i = 0; i < 6; i++)
		ck_assert_uint_eq(lid(l, 0, i), b[i].id);
}
END_TEST

START_TEST(test_contains_across_collections)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(4, 0);
	struct kvbm_block b[6];
	alloc(6, b);
	kvbm_lassign_extend_blocks(l, b, 6, NULL);
	lstage(l, s, 0, 2);
	kvbm_lassign_register(l, NULL);
	lstage(l, s, 2, 2);
	LCOUNTS(l, 2, 2, 2);
	for (size_t i = 0; i < 6; i++)
		ck_assert(kvbm_lassign_contains(l, b[i].id));
	ck_assert(!kvbm_lassign_contains(l, 999));
}
END_TEST

START_TEST(test_clear)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[5];
	alloc(5, b);
	kvbm_lassign_extend_blocks(l, b, 5, NULL);
	lstage(l, s, 0, 3);
	kvbm_lassign_register(l, NULL);
	lstage(l, s, 3, 0);
	ck_assert_int_eq(kvbm_available_blocks(pool), 5);
	ck_assert_int_eq(kvbm_lassign_clear(l), 0);
	ck_assert(kvbm_lassign_is_empty(l));
	/* every block back: 3 inactive (registered), 2 free */
	ck_assert_int_eq(kvbm_available_blocks(pool), 10);
	ck_assert_int_eq(t_metrics(pool).inactive_pool_size, 3);
}
END_TEST

START_TEST(test_take_assigned)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3], out[3];
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	lstage(l, s, 0, 3);
	kvbm_lassign_register(l, NULL);
	ck_assert_int_eq(kvbm_lassign_take_assigned(l, out, NULL, 3), 3);
	ck_assert_uint_eq(kvbm_lassign_assigned_count(l), 0);
	for (size_t i = 0; i < 3; i++)
		ck_assert_uint_eq(out[i].id, b[i].id);
	t_release(pool, out, 3); /* the caller's now */
}
END_TEST

START_TEST(test_take_staged_logical)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3], out[3];
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	lstage(l, s, 0, 3);
	ck_assert_int_eq(kvbm_lassign_take_staged(l, out, NULL, 3), 3);
	ck_assert_uint_eq(kvbm_lassign_staged_count(l), 0);
	for (size_t i = 0; i < 3; i++)
		ck_assert_uint_eq(out[i].id, b[i].id);
	t_release(pool, out, 3);
}
END_TEST

START_TEST(test_take_unassigned)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_block b[3], out[3];
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	ck_assert_int_eq(kvbm_lassign_take_unassigned(l, out, 2), -ERANGE);
	ck_assert_int_eq(kvbm_lassign_take_unassigned(l, out, 3), 3);
	ck_assert_uint_eq(kvbm_lassign_unassigned_count(l), 0);
	for (size_t i = 0; i < 3; i++)
		ck_assert_uint_eq(out[i].id, b[i].id);
	t_release(pool, out, 3);
}
END_TEST

START_TEST(test_extend_assigned_duplicate_already_in_assigned)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3], c[3];
	struct kvbm_seq_error e;
	register_directly(s, 3, b);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(kvbm_clone_block(pool, &b[i], &c[i]), 0);
	kvbm_lassign_extend_assigned(l, b, NULL, 3, NULL);
	ck_assert_int_eq(kvbm_lassign_extend_assigned(l, c, NULL, 3, &e), KVBM_EDUPID);
	ck_assert_uint_eq(e.a, b[0].id);
	ck_assert_uint_eq(kvbm_lassign_assigned_count(l), 3);
	t_release(pool, c, 3); /* still the caller's */
}
END_TEST

START_TEST(test_extend_assigned_duplicate_within_input_batch)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(1, 0);
	struct kvbm_block b[2];
	struct kvbm_seq_error e;
	register_directly(s, 1, b);
	ck_assert_int_eq(kvbm_clone_block(pool, &b[0], &b[1]), 0);
	ck_assert_int_eq(kvbm_lassign_extend_assigned(l, b, NULL, 2, &e), KVBM_EDUPID);
	ck_assert_uint_eq(e.a, b[0].id);
	ck_assert(kvbm_lassign_is_empty(l));
	t_release(pool, b, 2);
}
END_TEST

START_TEST(test_extend_assigned_disjoint_from_staged)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3], o[3];
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	lstage(l, s, 0, 3);
	register_directly(s, 3, o);
	ck_assert_int_eq(kvbm_lassign_extend_assigned(l, o, NULL, 3, NULL), 3);
	LCOUNTS(l, 3, 3, 0);
}
END_TEST

START_TEST(test_extend_assigned_disjoint_from_unassigned)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3], o[3];
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	register_directly(s, 3, o);
	ck_assert_int_eq(kvbm_lassign_extend_assigned(l, o, NULL, 3, NULL), 3);
	LCOUNTS(l, 3, 0, 3);
}
END_TEST

/* The reference's test only registers; here an id already assigned is
 * refused by extend_blocks as well. */
START_TEST(test_extend_blocks_id_already_in_assigned)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3], c;
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	lstage(l, s, 0, 3);
	kvbm_lassign_register(l, NULL);
	ck_assert_uint_eq(kvbm_lassign_assigned_count(l), 3);
	ck_assert_int_eq(kvbm_clone_block(pool, &b[1], &c), 0);
	ck_assert_int_eq(kvbm_lassign_extend_blocks(l, &c, 1, NULL), KVBM_EDUPID);
	ck_assert_uint_eq(kvbm_lassign_unassigned_count(l), 0);
	t_release(pool, &c, 1);
}
END_TEST

START_TEST(test_stage_empty_unassigned)
{
	struct kvbm_lassign *l = mkl();
	ck_assert_int_eq(lstage(l, mkseq(3, 0), 0, 3), 0);
	ck_assert_uint_eq(kvbm_lassign_staged_count(l), 0);
}
END_TEST

START_TEST(test_stage_empty_sequence_blocks)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_block b[3];
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	ck_assert_int_eq(kvbm_lassign_stage(l, NULL, 0, BS), 0);
	LCOUNTS(l, 0, 0, 3);
}
END_TEST

START_TEST(test_stage_both_empty)
{
	struct kvbm_lassign *l = mkl();
	ck_assert_int_eq(kvbm_lassign_stage(l, NULL, 0, BS), 0);
	ck_assert(kvbm_lassign_is_empty(l));
}
END_TEST

START_TEST(test_get_assigned_out_of_bounds)
{
	struct kvbm_lassign *l = mkl();
	ck_assert_int_eq(kvbm_lassign_get_assigned(l, 0, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_lassign_get_assigned(l, 100, NULL, NULL), 0);
}
END_TEST

START_TEST(test_get_staged_out_of_bounds)
{
	struct kvbm_lassign *l = mkl();
	ck_assert_int_eq(kvbm_lassign_get_staged(l, 0, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_lassign_get_staged(l, 100, NULL, NULL), 0);
}
END_TEST

START_TEST(test_get_unassigned_out_of_bounds)
{
	struct kvbm_lassign *l = mkl();
	ck_assert_int_eq(kvbm_lassign_get_unassigned(l, 0, NULL), 0);
	ck_assert_int_eq(kvbm_lassign_get_unassigned(l, 100, NULL), 0);
}
END_TEST

START_TEST(test_get_out_of_bounds_with_populated_collections)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_block b[2];
	alloc(2, b);
	kvbm_lassign_extend_blocks(l, b, 2, NULL);
	lstage(l, s, 0, 2);
	kvbm_lassign_register(l, NULL);
	ck_assert_int_eq(kvbm_lassign_get_assigned(l, 0, NULL, NULL), 1);
	ck_assert_int_eq(kvbm_lassign_get_assigned(l, 1, NULL, NULL), 1);
	ck_assert_int_eq(kvbm_lassign_get_assigned(l, 2, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_lassign_get_staged(l, 0, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_lassign_get_unassigned(l, 0, NULL), 0);
}
END_TEST

/* Ours: pop_last_unassigned is LIFO and its block is the caller's; the
 * block ids list assigned, staged, unassigned in order. */
START_TEST(test_pop_last_unassigned_and_block_ids)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(2, 0);
	struct kvbm_block b[5], p;
	uint32_t ids[8];
	alloc(5, b);
	kvbm_lassign_extend_blocks(l, b, 5, NULL);
	lstage(l, s, 0, 1);
	kvbm_lassign_register(l, NULL);
	lstage(l, s, 1, 1);
	ck_assert_int_eq(kvbm_lassign_pop_last_unassigned(l, &p), 1);
	ck_assert_uint_eq(p.id, b[4].id);
	ck_assert(!kvbm_lassign_contains(l, b[4].id));
	t_release(pool, &p, 1);
	ck_assert_uint_eq(kvbm_lassign_block_ids(l, ids, 8), 4);
	for (int i = 0; i < 4; i++)
		ck_assert_uint_eq(ids[i], b[i].id);
	ck_assert_int_eq(kvbm_lassign_pop_last_unassigned(l, NULL), 1); /* released at once */
	ck_assert_int_eq(kvbm_lassign_pop_last_unassigned(l, NULL), 1);
	ck_assert_int_eq(kvbm_lassign_pop_last_unassigned(l, NULL), 0);
	ck_assert_int_eq(kvbm_available_blocks(pool), 8);
}
END_TEST

/* Ours: under KVBM_DUP_REJECT registering a hash another request already
 * registered hands back the primary; the entry then holds and names the
 * primary, never the candidate that went back to the free pool. */
START_TEST(test_register_reject_keys_entry_by_primary)
{
	struct kvbm_config cfg = t_cfg();
	struct kvbm_lassign *l;
	struct kvbm_bseq *s = mkseq(1, 0);
	struct kvbm_block first, b, g;
	uint32_t id;
	cfg.block_count = 10;
	cfg.dup_policy = KVBM_DUP_REJECT;
	t_name(pool_name, sizeof(pool_name));
	pool = t_create(pool_name, &cfg);
	l = mkl();
	register_directly(s, 1, &first);
	alloc(1, &b);
	kvbm_lassign_extend_blocks(l, &b, 1, NULL);
	lstage(l, s, 0, 1);
	ck_assert_int_eq(kvbm_lassign_register(l, NULL), 1);
	ck_assert_int_eq(kvbm_lassign_get_assigned(l, 0, &g, NULL), 1);
	ck_assert_uint_eq(g.id, first.id);
	ck_assert(kvbm_lassign_contains(l, first.id));
	ck_assert(!kvbm_lassign_contains(l, b.id));
	ck_assert_uint_eq(kvbm_lassign_block_ids(l, &id, 1), 1);
	ck_assert_uint_eq(id, first.id);
	t_release(pool, &first, 1);
}
END_TEST

/* Ours: a register the pool refuses (a staged block unstaged behind the
 * assignments' back) registers nothing and leaves every block staged. */
START_TEST(test_register_refused_changes_nothing)
{
	struct kvbm_lassign *l = mkl();
	struct kvbm_bseq *s = mkseq(3, 0);
	struct kvbm_block b[3], g;
	alloc(3, b);
	kvbm_lassign_extend_blocks(l, b, 3, NULL);
	lstage(l, s, 0, 3);
	ck_assert_int_eq(kvbm_unstage_block(pool, &b[2]), 0);
	ck_assert_int_eq(kvbm_lassign_register(l, NULL), KVBM_ESTATE);
	LCOUNTS(l, 0, 3, 0);
	ck_assert_int_eq(t_metrics(pool).registrations, 0);
	ck_assert_int_eq(kvbm_stage_block(pool, &b[2], h(s, 2), BS), 0);
	ck_assert_int_eq(kvbm_lassign_register(l, NULL), 3);
	ck_assert_int_eq(kvbm_lassign_get_assigned(l, 2, &g, NULL), 1);
	ck_assert_uint_eq(g.id, b[2].id);
}
END_TEST

/* Ours: the details of every error render as the reference's messages. */
START_TEST(test_seq_error_messages)
{
	struct kvbm_seq_error e = { .code = KVBM_EPOSITION, .a = 1, .b = 2, .c = 7 };
	char m[128];
	kvbm_seq_error_format(&e, m, sizeof(m));
	ck_assert_str_eq(m, "position mismatch for block_id 7: expected 1, actual 2");
	e = (struct kvbm_seq_error){ .code = KVBM_EOVERRUN, .a = 8, .b = 8, .c = 12 };
	kvbm_seq_error_format(&e, m, sizeof(m));
	ck_assert_str_eq(m, "prefill overrun: position 8 + 8 > 12");
	e = (struct kvbm_seq_error){ .code = KVBM_ESEQSTATE, .expected = "Idle",
				     .state = KVBM_SCHED_DECODE };
	kvbm_seq_error_format(&e, m, sizeof(m));
	ck_assert_str_eq(m, "expected Idle, got DecodeScheduled");
	e = (struct kvbm_seq_error){ .code = -ENOSPC, .a = 3 };
	kvbm_seq_error_format(&e, m, sizeof(m));
	ck_assert_str_eq(m, "allocation failed: needed 3 blocks");
	e = (struct kvbm_seq_error){ .code = KVBM_EPREFILLDONE };
	kvbm_seq_error_format(&e, m, sizeof(m));
	ck_assert_str_eq(m, "prefill already complete");
}
END_TEST

Suite *make_sequence_suite(void)
{
	Suite *s = suite_create("sequence");
	TCase *tx = tcase_create("external");
	TCase *tl = tcase_create("logical");

	tcase_add_checked_fixture(tx, NULL, teardown);
	tcase_add_checked_fixture(tl, NULL, teardown);
	tcase_add_test(tx, test_aligned_0_blocks_0_block_ids);
	tcase_add_test(tx, test_aligned_1_block_0_block_ids);
	tcase_add_test(tx, test_aligned_1_block_1_block_id);
	tcase_add_test(tx, test_aligned_1_block_2_block_ids);
	tcase_add_test(tx, test_aligned_3_blocks_3_block_ids);
	tcase_add_test(tx, test_aligned_3_blocks_1_block_id);
	tcase_add_test(tx, test_aligned_3_blocks_5_block_ids);
	tcase_add_test(tx, test_partial_0_complete_2_partial_0_block_ids);
	tcase_add_test(tx, test_partial_2_complete_1_partial_2_block_ids);
	tcase_add_test(tx, test_partial_2_complete_3_partial_4_block_ids);
	tcase_add_test(tx, test_partial_3_complete_2_partial_1_block_id);
	tcase_add_test(tx, test_incremental_assignment_aligned);
	tcase_add_test(tx, test_incremental_assignment_with_excess);
	tcase_add_test(tx, test_incremental_assignment_partial_then_excess);
	tcase_add_test(tx, test_all_blocks_already_assigned_extra_goes_to_unassigned);
	tcase_add_test(tx, test_empty_slot_receives_block_ids);
	tcase_add_test(tx, test_only_partial_tokens_receives_block_ids);
	tcase_add_test(tx, test_large_sequence_exact_match);
	tcase_add_test(tx, test_verify_hash_block_id_pairing_order);
	tcase_add_test(tx, test_cartesian_product_combinations);
	tcase_add_test(tx, test_unassigned_blocks_applied_before_new_blocks);
	tcase_add_test(tx, test_unassigned_blocks_with_new_blocks_all_assigned);
	tcase_add_test(tx, test_unassigned_blocks_no_new_space);
	tcase_add_test(tx, test_unassigned_blocks_partial_space);
	tcase_add_test(tx, test_multiple_rounds_of_unassigned_accumulation);
	tcase_add_test(tx, test_unassigned_blocks_ordering_preserved);
	tcase_add_test(tx, test_unassigned_blocks_with_partial_token_block);
	tcase_add_test(tx, test_unassigned_blocks_exactly_fill_new_space);
	tcase_add_test(tx, test_empty_unassigned_with_new_blocks);
	tcase_add_test(tx, test_ordering_violation_known_after_new);
	tcase_add_test(tx, test_ordering_violation_no_state_change);
	tcase_add_test(tx, test_all_duplicates_noop);
	tcase_add_test(tx, test_duplicates_with_unassigned);
	tcase_add_test(tx, test_extend_block_ids_repeated_new_id_rejected);
	tcase_add_test(tx, test_shorter_sequence_slice_does_not_shrink_assigned);
	tcase_add_test(tx, test_offset_assignments);
	tcase_add_test(tx, test_offset_with_excess);
	tcase_add_test(tx, test_multi_instance_different_offsets);
	tcase_add_test(tx, test_token_extension_then_flush);
	tcase_add_test(tx, test_extend_tokens_creates_new_blocks);
	tcase_add_test(tx, test_clear_preserves_offset);
	tcase_add_test(tx, test_assign_with_nonzero_offset);
	tcase_add_test(tx, test_contains);
	tcase_add_test(tx, test_assigned_iter);
	tcase_add_test(tx, test_block_sequence_new);
	tcase_add_test(tx, test_block_sequence_all_sequence_hashes);
	tcase_add_test(tx, test_block_sequence_extend_tokens);
	tcase_add_test(tx, test_block_sequence_append_token);
	tcase_add_test(tx, test_block_sequence_with_salt);
	tcase_add_test(tx, test_block_sequence_incremental_matches_bulk);
	tcase_add_test(tx, test_assigned_positions_empty);
	tcase_add_test(tx, test_assigned_positions_with_offset);
	tcase_add_test(tx, test_pending_positions_empty);
	tcase_add_test(tx, test_pending_positions_with_assigned_and_unassigned);
	tcase_add_test(tx, test_pending_positions_with_offset);
	tcase_add_test(tx, test_get_at_position_in_range);
	tcase_add_test(tx, test_get_at_position_out_of_range);
	tcase_add_test(tx, test_get_pending_at_position_in_range);
	tcase_add_test(tx, test_get_pending_at_position_out_of_range);
	tcase_add_test(tx, test_zip_assigned_full_overlap);
	tcase_add_test(tx, test_zip_assigned_partial_overlap);
	tcase_add_test(tx, test_zip_assigned_no_overlap);
	tcase_add_test(tx, test_zip_assigned_either_empty);
	tcase_add_test(tx, test_zip_assigned_both_empty);
	tcase_add_test(tx, test_zip_assigned_pending_full_overlap);
	tcase_add_test(tx, test_zip_assigned_pending_partial_overlap);
	tcase_add_test(tx, test_zip_assigned_pending_no_overlap);
	tcase_add_test(tx, test_zip_assigned_pending_either_empty);
	tcase_add_test(tx, test_onboard_scenario_g2_to_g1);
	tcase_add_test(tx, test_stage_pending_basic);
	tcase_add_test(tx, test_commit_staged_basic);
	tcase_add_test(tx, test_stage_pending_partial);
	tcase_add_test(tx, test_stage_pending_then_commit_then_stage_more);
	tcase_add_test(tx, test_stage_pending_empty_unassigned);
	tcase_add_test(tx, test_stage_pending_position_mismatch);
	tcase_add_test(tx, test_commit_staged_empty);
	tcase_add_test(tx, test_staged_positions_empty);
	tcase_add_test(tx, test_staged_positions_after_stage);
	tcase_add_test(tx, test_staged_positions_with_offset);
	tcase_add_test(tx, test_staged_iter);
	tcase_add_test(tx, test_take_staged);
	tcase_add_test(tx, test_next_position_accounts_for_staged);
	tcase_add_test(tx, test_pending_positions_accounts_for_staged);
	tcase_add_test(tx, test_extend_assigned_basic);
	tcase_add_test(tx, test_extend_assigned_then_stage_pending);
	tcase_add_test(tx, test_extend_assigned_duplicate_detection);
	tcase_add_test(tx, test_extend_assigned_empty);
	tcase_add_test(tx, test_contains_with_staged);
	tcase_add_test(tx, test_contains_many_ids_and_removals);
	tcase_add_test(tl, test_empty_construction);
	tcase_add_test(tl, test_default_is_empty);
	tcase_add_test(tl, test_extend_blocks_basic);
	tcase_add_test(tl, test_extend_assigned_basic_logical);
	tcase_add_test(tl, test_extend_assigned_ordering_preserved);
	tcase_add_test(tl, test_extend_assigned_contains);
	tcase_add_test(tl, test_extend_assigned_then_extend_stage_register);
	tcase_add_test(tl, test_extend_assigned_with_match_blocks);
	tcase_add_test(tl, test_extend_assigned_empty_logical);
	tcase_add_test(tl, test_stage_basic);
	tcase_add_test(tl, test_stage_fifo_drain);
	tcase_add_test(tl, test_stage_partial_fewer_blocks_than_unassigned);
	tcase_add_test(tl, test_stage_partial_fewer_unassigned_than_blocks);
	tcase_add_test(tl, test_stage_block_size_mismatch_recovery);
	tcase_add_test(tl, test_stage_partial_then_mismatch);
	tcase_add_test(tl, test_register_basic);
	tcase_add_test(tl, test_register_empty_staged);
	tcase_add_test(tl, test_full_pipeline_extend_stage_register);
	tcase_add_test(tl, test_full_pipeline_incremental);
	tcase_add_test(tl, test_contains_across_collections);
	tcase_add_test(tl, test_clear);
	tcase_add_test(tl, test_take_assigned);
	tcase_add_test(tl, test_take_staged_logical);
	tcase_add_test(tl, test_take_unassigned);
	tcase_add_test(tl, test_extend_assigned_duplicate_already_in_assigned);
	tcase_add_test(tl, test_extend_assigned_duplicate_within_input_batch);
	tcase_add_test(tl, test_extend_assigned_disjoint_from_staged);
	tcase_add_test(tl, test_extend_assigned_disjoint_from_unassigned);
	tcase_add_test(tl, test_extend_blocks_id_already_in_assigned);
	tcase_add_test(tl, test_stage_empty_unassigned);
	tcase_add_test(tl, test_stage_empty_sequence_blocks);
	tcase_add_test(tl, test_stage_both_empty);
	tcase_add_test(tl, test_get_assigned_out_of_bounds);
	tcase_add_test(tl, test_get_staged_out_of_bounds);
	tcase_add_test(tl, test_get_unassigned_out_of_bounds);
	tcase_add_test(tl, test_get_out_of_bounds_with_populated_collections);
	tcase_add_test(tl, test_pop_last_unassigned_and_block_ids);
	tcase_add_test(tl, test_register_reject_keys_entry_by_primary);
	tcase_add_test(tl, test_register_refused_changes_nothing);
	tcase_add_test(tl, test_seq_error_messages);
	suite_add_tcase(s, tx);
	suite_add_tcase(s, tl);
	return s;
}
