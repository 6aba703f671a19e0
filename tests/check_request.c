/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_request.c - RequestSequence and SchedulableSequence
 * (kvbm_sequence.h), one process and several.
 *
 * Ported from kvbm-logical 1.3 integrations/request.rs (28 tests) and
 * integrations/scheduled.rs (55): one START_TEST per reference test,
 * under its name (docs/SEQUENCES.md counts them); where the reference
 * panics we check the error code instead. Block size 4, tokens 0, 1, ...
 * and an LRU pool of N blocks, as the reference's create_test_manager(N).
 * The multi-process tests at the end are ours: two processes' requests
 * sharing a prefix mid-schedule, and a process SIGKILLed mid-schedule.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "kvbm_sequence.h"

#define BS 4

#define MAXOBJ 8
static struct kvbm_request *reqs[MAXOBJ];
static struct kvbm_sched *scheds[MAXOBJ];
static int nreqs, nscheds;
static struct kvbm_pool *pool;
static char pool_name[64];

/* the delegate's log (the reference's CollectingDelegate) */
#define MAXEV 64
static struct kvbm_seq_event events[MAXEV];
static int nevents;

static void collect(const struct kvbm_seq_event *ev, void *arg)
{
	(void)arg;
	ck_assert_int_lt(nevents, MAXEV);
	events[nevents++] = *ev;
}

static void teardown(void)
{
	for (int i = 0; i < nreqs; i++)
		kvbm_request_free(reqs[i]);
	for (int i = 0; i < nscheds; i++)
		kvbm_sched_free(scheds[i]);
	nreqs = nscheds = nevents = 0;
	if (pool) {
		/* everything the requests held came back */
		ck_assert_int_eq(kvbm_available_blocks(pool), kvbm_total_blocks(pool));
		t_done(pool, pool_name);
		pool = NULL;
	}
}

/* create_test_manager(n) */
static void mkpool(uint32_t n)
{
	t_name(pool_name, sizeof(pool_name));
	pool = t_pool(pool_name, n);
}

static uint32_t *toks(size_t n)
{
	static uint32_t t[64];
	ck_assert_uint_le(n, 64);
	for (size_t i = 0; i < n; i++)
		t[i] = (uint32_t)i;
	return t;
}

static struct kvbm_request *req(size_t n, size_t max)
{
	struct kvbm_request *r = NULL;
	if (!pool)
		mkpool(20);
	ck_assert_int_eq(kvbm_request_new(pool, toks(n), n, max, BS, 0, &r), 0);
	reqs[nreqs++] = r;
	return r;
}

/* The reference's build_prefilled: match, allocate the rest + a
 * generation block, register. NULL when the pool ran out. */
static struct kvbm_request *build_prefilled(size_t n, size_t max)
{
	struct kvbm_request *r = req(n, max);
	long matched = kvbm_request_match_and_add_prefix(r, NULL);
	ck_assert_int_ge(matched, 0);
	size_t total = kvbm_request_num_blocks(r) - (size_t)matched + (max > 0);
	int rc = kvbm_request_allocate_blocks(r, total);
	if (rc == -ENOSPC)
		return NULL;
	ck_assert_int_eq(rc, 0);
	ck_assert_int_ge(kvbm_request_complete_and_register_pending(r), 0);
	return r;
}

/* Registers the blocks of tokens 0..n-1 and releases them (inactive). */
static void populate(size_t n)
{
	struct kvbm_plh h[16];
	struct kvbm_block b[16];
	long nb = kvbm_hash_tokens(toks(n), n, BS, 0, NULL, 0);
	struct kvbm_block_hashes bh[16];
	ck_assert_int_eq(kvbm_hash_tokens(toks(n), n, BS, 0, bh, 16), nb);
	for (long i = 0; i < nb; i++)
		h[i] = bh[i].plh;
	t_register(pool, h, (size_t)nb, b);
	t_release(pool, b, (size_t)nb);
}

#define AVAIL() kvbm_available_blocks(pool)

/* ---- request.rs ---- */

START_TEST(test_new_minimal_constructor)
{
	struct kvbm_request *r = req(8, 10);
	ck_assert_uint_eq(kvbm_request_num_input_tokens(r), 8);
	ck_assert_uint_eq(kvbm_request_total_tokens(r), 8);
	ck_assert_uint_eq(kvbm_request_num_blocks(r), 2);
	ck_assert_uint_eq(kvbm_request_generated_tokens(r), 0);
	ck_assert_uint_eq(kvbm_request_max_output_tokens(r), 10);
	ck_assert_uint_eq(kvbm_request_block_size(r), BS);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 0);
	ck_assert_uint_eq(kvbm_request_staged_blocks(r), 0);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 0);
	ck_assert_uint_eq(kvbm_request_prefix_matched_blocks(r), 0);
	ck_assert_int_eq(AVAIL(), 20); /* no allocation */
}
END_TEST

START_TEST(test_build_prefilled_basic)
{
	struct kvbm_request *r = build_prefilled(8, 10);
	ck_assert_uint_eq(kvbm_request_num_input_tokens(r), 8);
	ck_assert_uint_eq(kvbm_request_total_tokens(r), 8);
	ck_assert_uint_eq(kvbm_request_num_blocks(r), 2);
	ck_assert_uint_eq(kvbm_request_generated_tokens(r), 0);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 2);
	ck_assert_uint_eq(kvbm_request_staged_blocks(r), 0);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 1);
}
END_TEST

START_TEST(test_build_prefilled_partial_tokens)
{
	struct kvbm_request *r = build_prefilled(6, 10);
	ck_assert_uint_eq(kvbm_request_num_blocks(r), 1);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 1);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 1);
}
END_TEST

START_TEST(test_build_prefilled_empty_tokens)
{
	struct kvbm_request *r = build_prefilled(0, 10);
	ck_assert_uint_eq(kvbm_request_num_blocks(r), 0);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 0);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 1);
}
END_TEST

START_TEST(test_build_prefilled_zero_max)
{
	struct kvbm_request *r = build_prefilled(8, 0);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 2);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 0);
}
END_TEST

START_TEST(test_build_prefilled_allocation_failure)
{
	mkpool(2);
	ck_assert_ptr_null(build_prefilled(12, 10));
	ck_assert_int_eq(AVAIL(), 2);
}
END_TEST

START_TEST(test_prefix_cache_hit)
{
	mkpool(20);
	populate(8);
	struct kvbm_request *r = build_prefilled(8, 10);
	ck_assert_uint_eq(kvbm_request_prefix_matched_blocks(r), 2);
}
END_TEST

START_TEST(test_partial_prefix_cache_hit)
{
	mkpool(20);
	populate(4);
	struct kvbm_request *r = build_prefilled(12, 10);
	ck_assert_uint_eq(kvbm_request_prefix_matched_blocks(r), 1);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 3);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 1);
}
END_TEST

/* The reference panics; we return -ERANGE and keep nothing. */
START_TEST(test_add_matched_blocks_panics_when_matched_exceeds_completed)
{
	struct kvbm_request *r = req(4, 10);
	struct kvbm_block_hashes bh[2];
	struct kvbm_plh h[2];
	struct kvbm_block b[2];
	kvbm_hash_tokens(toks(8), 8, BS, 0, bh, 2);
	h[0] = bh[0].plh;
	h[1] = bh[1].plh;
	t_register(pool, h, 2, b);
	ck_assert_int_eq(kvbm_request_add_matched_blocks(r, b, 2, NULL), -ERANGE);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 0);
	t_release(pool, b, 2);
}
END_TEST

START_TEST(test_add_matched_blocks_returns_error_on_hash_mismatch)
{
	struct kvbm_request *r = req(4, 10);
	const uint32_t other[4] = { 100, 101, 102, 103 };
	struct kvbm_block_hashes bh;
	struct kvbm_block b;
	struct kvbm_seq_error e;
	kvbm_hash_tokens(other, 4, BS, 0, &bh, 1);
	t_register(pool, &bh.plh, 1, &b);
	ck_assert_int_eq(kvbm_request_add_matched_blocks(r, &b, 1, &e), KVBM_EHASHMISMATCH);
	ck_assert_uint_eq(e.a, 0); /* position */
	ck_assert(kvbm_plh_eq(e.actual_hash, bh.plh));
	ck_assert(kvbm_plh_eq(e.expected_hash, kvbm_bseq_blocks(kvbm_request_sequence(r))[0].plh));
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 0);
	t_release(pool, &b, 1); /* the caller's still */
}
END_TEST

START_TEST(test_new_tokens_for_prefill)
{
	mkpool(20);
	populate(4);
	struct kvbm_request *r = build_prefilled(12, 10);
	ck_assert_uint_eq(kvbm_request_prefix_matched_blocks(r), 1);
	ck_assert_uint_eq(kvbm_request_new_tokens_for_prefill(r), 8);
}
END_TEST

START_TEST(test_append_token_no_boundary)
{
	struct kvbm_request *r = build_prefilled(5, 10);
	ck_assert_int_eq(kvbm_request_append_token(r, 100, NULL), 0);
	ck_assert_uint_eq(kvbm_request_generated_tokens(r), 1);
	ck_assert_uint_eq(kvbm_request_total_tokens(r), 6);
}
END_TEST

START_TEST(test_append_token_crosses_boundary)
{
	struct kvbm_request *r = build_prefilled(7, 10);
	size_t idx = 99;
	ck_assert_int_eq(kvbm_request_append_token(r, 100, &idx), 1);
	ck_assert_uint_eq(idx, 1);
	ck_assert_uint_eq(kvbm_request_num_blocks(r), 2);
}
END_TEST

/* The reference panics "Cannot generate more tokens"; we return
 * KVBM_EGENDONE and append nothing. */
START_TEST(test_append_token_panics_after_max)
{
	struct kvbm_request *r = build_prefilled(4, 1);
	ck_assert_int_eq(kvbm_request_append_token(r, 100, NULL), 0);
	ck_assert_int_eq(kvbm_request_append_token(r, 101, NULL), KVBM_EGENDONE);
	ck_assert_uint_eq(kvbm_request_total_tokens(r), 5);
	ck_assert_uint_eq(kvbm_request_generated_tokens(r), 1);
}
END_TEST

START_TEST(test_is_complete_transitions)
{
	struct kvbm_request *r = build_prefilled(4, 3);
	ck_assert(!kvbm_request_is_complete(r));
	kvbm_request_append_token(r, 100, NULL);
	ck_assert(!kvbm_request_is_complete(r));
	kvbm_request_append_token(r, 101, NULL);
	ck_assert(!kvbm_request_is_complete(r));
	kvbm_request_append_token(r, 102, NULL);
	ck_assert(kvbm_request_is_complete(r));
}
END_TEST

START_TEST(test_is_complete_zero_max)
{
	ck_assert(kvbm_request_is_complete(req(4, 0)));
}
END_TEST

START_TEST(test_modular_decode_loop)
{
	struct kvbm_request *r = build_prefilled(4, 8);
	for (uint32_t i = 0; i < 3; i++)
		ck_assert_int_eq(kvbm_request_append_token(r, 100 + i, NULL), 0);
	ck_assert_int_eq(kvbm_request_append_token(r, 103, NULL), 1);
	ck_assert(!kvbm_request_is_complete(r));
	ck_assert_int_eq(kvbm_request_complete_and_register_pending(r), 1);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 2);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 0);
	ck_assert_int_eq(kvbm_request_allocate_blocks(r, 1), 0);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 1);
	for (uint32_t i = 0; i < 3; i++)
		ck_assert_int_eq(kvbm_request_append_token(r, 200 + i, NULL), 0);
	ck_assert_int_eq(kvbm_request_append_token(r, 203, NULL), 1);
	ck_assert(kvbm_request_is_complete(r));
	kvbm_request_complete_and_register_pending(r);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 3);
	kvbm_request_release(r);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 0);
}
END_TEST

START_TEST(test_modular_prefill_with_cache)
{
	mkpool(20);
	populate(4);
	struct kvbm_request *r = req(8, 10);
	ck_assert_int_eq(kvbm_request_match_and_add_prefix(r, NULL), 1);
	ck_assert_uint_eq(kvbm_request_prefix_matched_blocks(r), 1);
	ck_assert_int_eq(kvbm_request_allocate_blocks(r, kvbm_request_num_blocks(r) - 1 + 1), 0);
	kvbm_request_complete_and_register_pending(r);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 2);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 1);
}
END_TEST

START_TEST(test_allocate_blocks_failure)
{
	mkpool(2);
	struct kvbm_request *r = req(4, 10);
	ck_assert_int_eq(kvbm_request_allocate_blocks(r, 3), -ENOSPC);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 0);
	ck_assert_int_eq(kvbm_request_allocate_blocks(r, 2), 0);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 2);
}
END_TEST

START_TEST(test_allocate_blocks_zero)
{
	mkpool(2);
	struct kvbm_request *r = req(4, 10);
	ck_assert_int_eq(kvbm_request_allocate_blocks(r, 0), 0);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 0);
}
END_TEST

START_TEST(test_release)
{
	struct kvbm_request *r = build_prefilled(8, 10);
	long before = AVAIL();
	ck_assert_int_eq(kvbm_request_release(r), 0);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 0);
	ck_assert_uint_eq(kvbm_request_staged_blocks(r), 0);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 0);
	ck_assert_int_gt(AVAIL(), before);
}
END_TEST

START_TEST(test_release_idempotent)
{
	struct kvbm_request *r = build_prefilled(8, 10);
	ck_assert_int_eq(kvbm_request_release(r), 0);
	ck_assert_int_eq(kvbm_request_release(r), 0);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 0);
}
END_TEST

START_TEST(test_release_returns_blocks_to_pools)
{
	struct kvbm_request *r = build_prefilled(8, 10);
	ck_assert_int_eq(AVAIL(), 17);
	kvbm_request_release(r);
	ck_assert_int_eq(AVAIL(), 20);
}
END_TEST

START_TEST(test_reacquire_basic)
{
	struct kvbm_request *r = build_prefilled(8, 10);
	kvbm_request_append_token(r, 100, NULL);
	kvbm_request_append_token(r, 101, NULL);
	kvbm_request_release(r);
	ck_assert_int_eq(kvbm_request_reacquire(r), 1);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 2);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 0);
	ck_assert_uint_eq(kvbm_request_generated_tokens(r), 2);
}
END_TEST

START_TEST(test_reacquire_with_cache_hits)
{
	struct kvbm_request *r = build_prefilled(8, 10);
	kvbm_request_release(r);
	ck_assert_int_eq(kvbm_request_reacquire(r), 1);
	ck_assert_uint_eq(kvbm_request_prefix_matched_blocks(r), 2);
}
END_TEST

START_TEST(test_reacquire_cleans_up_on_failure)
{
	struct kvbm_block all[4];
	mkpool(4);
	struct kvbm_request *r = build_prefilled(4, 10);
	kvbm_request_release(r);
	ck_assert_int_eq(kvbm_allocate_blocks(pool, 4, all, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_request_reacquire(r), 0);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(r), 0);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 0);
	t_release(pool, all, 4);
	/* and holding blocks, it refuses (the reference asserts) */
	ck_assert_int_eq(kvbm_request_allocate_blocks(r, 1), 0);
	ck_assert_int_eq(kvbm_request_reacquire(r), -EBUSY);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 1);
}
END_TEST

START_TEST(test_blocks_returned_on_drop)
{
	struct kvbm_request *r = build_prefilled(8, 10);
	ck_assert_int_eq(AVAIL(), 17);
	kvbm_request_free(r);
	nreqs--;
	ck_assert_int_eq(AVAIL(), 20);
}
END_TEST

/* Ours: the page table lists assigned, staged, unassigned block ids, the
 * ones the request holds. */
START_TEST(test_page_indices_and_drop_excess)
{
	struct kvbm_request *r = build_prefilled(8, 10);
	uint32_t ids[8];
	struct kvbm_block b;
	ck_assert_int_eq(kvbm_request_allocate_blocks(r, 2), 0);
	ck_assert_uint_eq(kvbm_request_page_indices(r, ids, 8), 5);
	for (size_t i = 0; i < 2; i++) {
		kvbm_lassign_get_assigned(kvbm_request_assignments(r), i, &b, NULL);
		ck_assert_uint_eq(ids[i], b.id);
	}
	ck_assert_uint_eq(kvbm_request_drop_excess_unassigned(r, 1), 2);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(r), 1);
	ck_assert_uint_eq(kvbm_request_drop_excess_unassigned(r, 1), 0);
	ck_assert_uint_eq(kvbm_request_page_indices(r, ids, 8), 3);
}
END_TEST

/* Ours: a request whose block size is not the pool's is refused at once
 * (the reference panics at its first stage). */
START_TEST(test_request_block_size_must_match_pool)
{
	struct kvbm_request *r = NULL;
	mkpool(4);
	ck_assert_int_eq(kvbm_request_new(pool, toks(8), 8, 1, 8, 0, &r), KVBM_ESIZE);
	ck_assert_ptr_null(r);
}
END_TEST

/* ---- scheduled.rs ---- */

static struct kvbm_sched *mks_d(size_t n, size_t max, int with_delegate)
{
	struct kvbm_sched *s = NULL;
	if (!pool)
		mkpool(20);
	ck_assert_int_eq(kvbm_sched_new(pool, toks(n), n, max, BS, 0, with_delegate ? collect : NULL,
					NULL, &s),
			 0);
	scheds[nscheds++] = s;
	return s;
}

static struct kvbm_sched *mks(size_t n, size_t max)
{
	return mks_d(n, max, 0);
}

static const struct kvbm_request *R(const struct kvbm_sched *s)
{
	return kvbm_sched_request(s);
}

#define OK(call) do { struct kvbm_seq_error e_; int r_ = (int)(call); \
	char m_[160]; kvbm_seq_error_format(&e_, m_, sizeof(m_)); \
	ck_assert_msg(r_ >= 0, #call ": %s (%s)", kvbm_strerror(r_), m_); } while (0)
#define SCHED_PREFILL(s, n) OK(kvbm_sched_schedule_prefill(s, n, &e_))
#define APPLY_PREFILL(s, tok) OK(kvbm_sched_apply_prefill(s, 1, tok, &e_))
#define APPLY_PREFILL_NONE(s) OK(kvbm_sched_apply_prefill(s, 0, 0, &e_))
#define SCHED_DECODE(s) OK(kvbm_sched_schedule_decode(s, &e_))

static int decode(struct kvbm_sched *s, uint32_t tok)
{
	SCHED_DECODE(s);
	int r = kvbm_sched_apply_decode(s, tok, NULL);
	ck_assert_int_ge(r, 0);
	return r;
}

static void state_is(const struct kvbm_sched *s, uint32_t kind, size_t num_tokens,
		     size_t allocated)
{
	struct kvbm_sched_state st = kvbm_sched_state(s);
	ck_assert_str_eq(kvbm_sched_state_name(st.kind), kvbm_sched_state_name(kind));
	ck_assert_uint_eq(st.num_tokens, num_tokens);
	ck_assert_uint_eq(st.blocks_allocated, allocated);
}
#define IDLE(s) state_is(s, KVBM_SCHED_IDLE, 0, 0)

/* prefilled_seq(): a prompt prefilled in one chunk, first token 1000 */
static struct kvbm_sched *prefilled(size_t n, size_t max)
{
	struct kvbm_sched *s = mks(n, max);
	if (n > 0) {
		SCHED_PREFILL(s, n);
		APPLY_PREFILL(s, 1000);
	}
	return s;
}

START_TEST(test_new_starts_idle)
{
	struct kvbm_sched *s = mks_d(8, 10, 1);
	IDLE(s);
	ck_assert_uint_eq(kvbm_sched_prefill_position(s), 0);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 0);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 8);
	ck_assert_uint_eq(kvbm_request_num_input_tokens(R(s)), 8);
	ck_assert_uint_eq(kvbm_request_max_output_tokens(R(s)), 10);
	ck_assert_uint_eq(kvbm_request_block_size(R(s)), BS);
	ck_assert(!kvbm_sched_is_prefill_complete(s));
	ck_assert_int_eq(nevents, 1);
	ck_assert_uint_eq(events[0].kind, KVBM_SEQ_CREATED);
	ck_assert_uint_eq(events[0].num_input_tokens, 8);
	ck_assert_uint_eq(events[0].max_output_tokens, 10);
	ck_assert_uint_eq(events[0].block_size, BS);
}
END_TEST

START_TEST(test_schedule_prefill_requires_idle)
{
	struct kvbm_sched *s = mks(8, 10);
	struct kvbm_seq_error e;
	SCHED_PREFILL(s, 4);
	ck_assert_int_eq(kvbm_sched_schedule_prefill(s, 4, &e), KVBM_ENOTIDLE);
	ck_assert_uint_eq(e.state, KVBM_SCHED_PREFILL);
}
END_TEST

START_TEST(test_schedule_decode_requires_idle)
{
	struct kvbm_sched *s = prefilled(4, 10);
	SCHED_DECODE(s);
	ck_assert_int_eq(kvbm_sched_schedule_decode(s, NULL), KVBM_ENOTIDLE);
}
END_TEST

START_TEST(test_apply_prefill_requires_scheduled)
{
	struct kvbm_sched *s = mks(8, 10);
	struct kvbm_seq_error e;
	ck_assert_int_eq(kvbm_sched_apply_prefill(s, 0, 0, &e), KVBM_ESEQSTATE);
	ck_assert_str_eq(e.expected, "PrefillScheduled");
	ck_assert_uint_eq(e.state, KVBM_SCHED_IDLE);
}
END_TEST

START_TEST(test_apply_decode_requires_scheduled)
{
	struct kvbm_sched *s = mks(4, 10);
	ck_assert_int_eq(kvbm_sched_apply_decode(s, 100, NULL), KVBM_ESEQSTATE);
}
END_TEST

START_TEST(test_decode_requires_prefill_complete)
{
	struct kvbm_sched *s = mks(8, 10);
	struct kvbm_seq_error e;
	ck_assert_int_eq(kvbm_sched_schedule_decode(s, &e), KVBM_EPREFILLPENDING);
	ck_assert_uint_eq(e.a, 0);
	ck_assert_uint_eq(e.b, 8);
}
END_TEST

START_TEST(test_speculative_requires_prefill_complete)
{
	struct kvbm_sched *s = mks(8, 10);
	ck_assert_int_eq(kvbm_sched_schedule_speculative(s, 3, NULL), KVBM_EPREFILLPENDING);
}
END_TEST

START_TEST(test_prefill_single_chunk)
{
	struct kvbm_sched *s = mks(8, 10);
	SCHED_PREFILL(s, 8);
	state_is(s, KVBM_SCHED_PREFILL, 8, 2);
	APPLY_PREFILL(s, 1000);
	IDLE(s);
	ck_assert_uint_eq(kvbm_sched_prefill_position(s), 8);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 8);
	ck_assert(kvbm_sched_is_prefill_complete(s));
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 2);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 0);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
}
END_TEST

START_TEST(test_prefill_chunked)
{
	struct kvbm_sched *s = mks(8, 10);
	SCHED_PREFILL(s, 4);
	APPLY_PREFILL_NONE(s);
	ck_assert_uint_eq(kvbm_sched_prefill_position(s), 4);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 4);
	ck_assert(!kvbm_sched_is_prefill_complete(s));
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 1);
	SCHED_PREFILL(s, 4);
	APPLY_PREFILL(s, 1000);
	ck_assert_uint_eq(kvbm_sched_prefill_position(s), 8);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 8);
	ck_assert(kvbm_sched_is_prefill_complete(s));
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 2);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 0);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
}
END_TEST

START_TEST(test_prefill_final_with_first_token)
{
	struct kvbm_sched *s = mks(4, 10);
	SCHED_PREFILL(s, 4);
	APPLY_PREFILL(s, 100);
	ck_assert(kvbm_sched_is_prefill_complete(s));
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 1);
	ck_assert_uint_eq(kvbm_request_total_tokens(R(s)), 5);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 4);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
}
END_TEST

START_TEST(test_prefill_token_on_non_final_rejected)
{
	struct kvbm_sched *s = mks(8, 10);
	SCHED_PREFILL(s, 4);
	ck_assert_int_eq(kvbm_sched_apply_prefill(s, 1, 100, NULL), KVBM_ETOKENCHUNK);
	state_is(s, KVBM_SCHED_PREFILL, 4, 1); /* nothing changed */
	ck_assert_uint_eq(kvbm_request_total_tokens(R(s)), 8);
}
END_TEST

START_TEST(test_prefill_overrun_rejected)
{
	struct kvbm_sched *s = mks(8, 10);
	struct kvbm_seq_error e;
	ck_assert_int_eq(kvbm_sched_schedule_prefill(s, 9, &e), KVBM_EOVERRUN);
	ck_assert_uint_eq(e.a, 0);
	ck_assert_uint_eq(e.b, 9);
	ck_assert_uint_eq(e.c, 8);
	IDLE(s);
}
END_TEST

START_TEST(test_prefill_allocation_failure)
{
	struct kvbm_seq_error e;
	mkpool(1);
	struct kvbm_sched *s = mks(8, 10);
	ck_assert_int_eq(kvbm_sched_schedule_prefill(s, 8, &e), -ENOSPC);
	ck_assert_uint_eq(e.a, 2); /* needed */
	IDLE(s);
	ck_assert_int_eq(AVAIL(), 1);
}
END_TEST

START_TEST(test_schedule_prefill_after_complete_rejected)
{
	struct kvbm_sched *s = prefilled(4, 10);
	ck_assert_int_eq(kvbm_sched_schedule_prefill(s, 1, NULL), KVBM_EPREFILLDONE);
}
END_TEST

START_TEST(test_apply_prefill_none_on_final_rejected)
{
	struct kvbm_sched *s = mks(4, 10);
	SCHED_PREFILL(s, 4);
	ck_assert_int_eq(kvbm_sched_apply_prefill(s, 0, 0, NULL), KVBM_ENOTOKEN);
	state_is(s, KVBM_SCHED_PREFILL, 4, 1);
}
END_TEST

START_TEST(test_decode_continue)
{
	struct kvbm_sched *s = prefilled(5, 10);
	ck_assert_int_eq(decode(s, 100), KVBM_DECODE_CONTINUE);
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 2);
	IDLE(s);
}
END_TEST

START_TEST(test_decode_block_completed)
{
	struct kvbm_sched *s = prefilled(4, 10);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(decode(s, 100), KVBM_DECODE_CONTINUE);
	ck_assert_int_eq(decode(s, 100), KVBM_DECODE_BLOCK_COMPLETED);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 2);
}
END_TEST

START_TEST(test_decode_max_length)
{
	struct kvbm_sched *s = prefilled(5, 2);
	ck_assert_int_eq(decode(s, 100), KVBM_DECODE_MAX_LENGTH);
	ck_assert(kvbm_request_is_complete(R(s)));
}
END_TEST

START_TEST(test_decode_block_and_max)
{
	struct kvbm_sched *s = prefilled(4, 4);
	decode(s, 100);
	decode(s, 100);
	ck_assert_int_eq(decode(s, 100), KVBM_DECODE_BLOCK_COMPLETED | KVBM_DECODE_MAX_LENGTH);
}
END_TEST

START_TEST(test_decode_allocates_gen_block)
{
	struct kvbm_sched *s = prefilled(4, 10);
	SCHED_DECODE(s);
	state_is(s, KVBM_SCHED_DECODE, 0, 1);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 1);
	ck_assert_int_ge(kvbm_sched_apply_decode(s, 100, NULL), 0);
	decode(s, 101);
	ck_assert_int_eq(decode(s, 102), KVBM_DECODE_BLOCK_COMPLETED);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 0);
	SCHED_DECODE(s);
	state_is(s, KVBM_SCHED_DECODE, 0, 1);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 1);
	kvbm_sched_revert_schedule(s, NULL);
}
END_TEST

START_TEST(test_decode_generation_complete_rejected)
{
	struct kvbm_sched *s = prefilled(5, 2);
	struct kvbm_seq_error e;
	decode(s, 100);
	ck_assert(kvbm_request_is_complete(R(s)));
	ck_assert_int_eq(kvbm_sched_schedule_decode(s, &e), KVBM_EGENDONE);
	ck_assert_uint_eq(e.a, 2);
	ck_assert_uint_eq(e.b, 2);
}
END_TEST

START_TEST(test_speculative_basic)
{
	struct kvbm_sched *s = prefilled(8, 10);
	OK(kvbm_sched_schedule_speculative(s, 2, &e_));
	ck_assert_uint_eq(kvbm_sched_state(s).kind, KVBM_SCHED_SPECULATIVE);
	ck_assert_uint_eq(kvbm_sched_state(s).num_tokens, 2);
	ck_assert_int_eq(kvbm_sched_apply_speculative(s, (const uint32_t[]){ 100, 101 }, 2, NULL),
			 KVBM_DECODE_CONTINUE);
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 3);
	IDLE(s);
}
END_TEST

START_TEST(test_speculative_partial_accept)
{
	struct kvbm_sched *s = mks_d(4, 10, 1);
	SCHED_PREFILL(s, 4);
	APPLY_PREFILL(s, 1000);
	OK(kvbm_sched_schedule_speculative(s, 4, &e_));
	ck_assert_int_eq(kvbm_sched_apply_speculative(s, (const uint32_t[]){ 100, 101 }, 2, NULL),
			 KVBM_DECODE_CONTINUE);
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 3);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 1);
	const struct kvbm_seq_event *last = &events[nevents - 1];
	ck_assert_uint_eq(last->kind, KVBM_SEQ_SPECULATIVE_APPLIED);
	ck_assert_uint_eq(last->count, 2);      /* accepted */
	ck_assert_uint_eq(last->num_tokens, 4); /* scheduled */
	ck_assert_uint_eq(last->blocks, 1);     /* released: 2 allocated, 1 kept */
}
END_TEST

START_TEST(test_speculative_single_accept)
{
	struct kvbm_sched *s = prefilled(4, 10);
	OK(kvbm_sched_schedule_speculative(s, 5, &e_));
	ck_assert_int_eq(kvbm_sched_apply_speculative(s, (const uint32_t[]){ 100 }, 1, NULL),
			 KVBM_DECODE_CONTINUE);
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 2);
}
END_TEST

START_TEST(test_speculative_zero_accept)
{
	struct kvbm_sched *s = prefilled(4, 10);
	OK(kvbm_sched_schedule_speculative(s, 3, &e_));
	long after_schedule = AVAIL();
	ck_assert_int_eq(kvbm_sched_apply_speculative(s, NULL, 0, NULL), KVBM_DECODE_CONTINUE);
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 1);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 1);
	ck_assert_int_ge(AVAIL(), after_schedule);
}
END_TEST

START_TEST(test_speculative_exceeds_scheduled_rejected)
{
	struct kvbm_sched *s = prefilled(4, 10);
	struct kvbm_seq_error e;
	OK(kvbm_sched_schedule_speculative(s, 2, &e_));
	ck_assert_int_eq(kvbm_sched_apply_speculative(s, (const uint32_t[]){ 100, 101, 102 }, 3, &e),
			 KVBM_EACCEPTED);
	ck_assert_uint_eq(e.a, 3);
	ck_assert_uint_eq(e.b, 2);
	ck_assert_uint_eq(kvbm_sched_state(s).kind, KVBM_SCHED_SPECULATIVE);
	ck_assert_uint_eq(kvbm_request_total_tokens(R(s)), 5);
}
END_TEST

START_TEST(test_speculative_block_boundaries)
{
	struct kvbm_sched *s = prefilled(7, 20);
	OK(kvbm_sched_schedule_speculative(s, 5, &e_));
	ck_assert_int_eq(kvbm_sched_apply_speculative(
				 s, (const uint32_t[]){ 100, 101, 102, 103, 104 }, 5, NULL),
			 KVBM_DECODE_BLOCK_COMPLETED);
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 6);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 3);
}
END_TEST

START_TEST(test_revert_prefill)
{
	struct kvbm_sched *s = mks(8, 10);
	long before = AVAIL();
	SCHED_PREFILL(s, 4);
	ck_assert_int_lt(AVAIL(), before);
	OK(kvbm_sched_revert_schedule(s, &e_));
	IDLE(s);
	ck_assert_int_eq(AVAIL(), before);
}
END_TEST

START_TEST(test_revert_decode)
{
	struct kvbm_sched *s = prefilled(4, 10);
	for (int i = 0; i < 3; i++)
		decode(s, 100);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 0);
	long before = AVAIL();
	SCHED_DECODE(s);
	ck_assert_int_eq(AVAIL(), before - 1);
	OK(kvbm_sched_revert_schedule(s, &e_));
	IDLE(s);
	ck_assert_int_eq(AVAIL(), before);
}
END_TEST

START_TEST(test_revert_speculative)
{
	struct kvbm_sched *s = prefilled(4, 10);
	long before = AVAIL();
	OK(kvbm_sched_schedule_speculative(s, 4, &e_));
	long allocated = before - AVAIL();
	ck_assert_int_eq(allocated, 2);
	OK(kvbm_sched_revert_schedule(s, &e_));
	IDLE(s);
	ck_assert_int_eq(AVAIL(), before);
}
END_TEST

START_TEST(test_revert_returns_blocks_to_manager)
{
	struct kvbm_sched *s = mks(8, 10);
	long before = AVAIL();
	SCHED_PREFILL(s, 8);
	ck_assert_int_lt(AVAIL(), before);
	OK(kvbm_sched_revert_schedule(s, &e_));
	ck_assert_int_eq(AVAIL(), before);
}
END_TEST

START_TEST(test_drop_unassigned_lifo)
{
	struct kvbm_sched *s = prefilled(4, 10);
	struct kvbm_block b;
	decode(s, 100);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 1);
	kvbm_lassign_get_unassigned(kvbm_request_assignments(R(s)), 0, &b);
	ck_assert_int_eq(kvbm_sched_drop_unassigned(s, 1, NULL), 1);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 0);
	ck_assert(!kvbm_lassign_contains(kvbm_request_assignments(R(s)), b.id));
}
END_TEST

START_TEST(test_drop_unassigned_partial)
{
	struct kvbm_sched *s = prefilled(8, 10);
	decode(s, 100);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 1);
	ck_assert_int_eq(kvbm_sched_drop_unassigned(s, 5, NULL), 1);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 0);
}
END_TEST

START_TEST(test_drop_unassigned_zero)
{
	struct kvbm_sched *s = prefilled(4, 10);
	decode(s, 100);
	ck_assert_int_eq(kvbm_sched_drop_unassigned(s, 0, NULL), 0);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 1);
}
END_TEST

START_TEST(test_delegate_full_lifecycle)
{
	struct kvbm_sched *s = mks_d(4, 3, 1);
	static const uint32_t want[] = { KVBM_SEQ_CREATED,         KVBM_SEQ_PREFILL_SCHEDULED,
					 KVBM_SEQ_PREFILL_APPLIED, KVBM_SEQ_DECODE_SCHEDULED,
					 KVBM_SEQ_DECODE_APPLIED,  KVBM_SEQ_DECODE_SCHEDULED,
					 KVBM_SEQ_DECODE_APPLIED,  KVBM_SEQ_RELEASED };
	SCHED_PREFILL(s, 4);
	APPLY_PREFILL(s, 1000);
	decode(s, 100);
	decode(s, 101);
	OK(kvbm_sched_release(s, &e_));
	ck_assert_int_eq(nevents, 8);
	for (int i = 0; i < 8; i++)
		ck_assert_uint_eq(events[i].kind, want[i]);
	ck_assert_uint_eq(events[1].num_tokens, 4);
	ck_assert_uint_eq(events[1].blocks, 1);
	ck_assert_uint_eq(events[2].blocks, 1); /* registered */
	ck_assert_int_eq(events[2].flag, 1);    /* token emitted */
	ck_assert_uint_eq(events[4].token, 100);
}
END_TEST

START_TEST(test_full_lifecycle_prefill_decode_release)
{
	struct kvbm_sched *s = mks(6, 7);
	SCHED_PREFILL(s, 6);
	APPLY_PREFILL(s, 1000);
	ck_assert(kvbm_sched_is_prefill_complete(s));
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 1);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 1);
	for (uint32_t i = 0; i < 6; i++) {
		int o = decode(s, 100 + i);
		ck_assert_int_eq(!!(o & KVBM_DECODE_MAX_LENGTH), i == 5);
	}
	ck_assert(kvbm_request_is_complete(R(s)));
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 7);
	ck_assert_uint_eq(kvbm_request_total_tokens(R(s)), 13);
	OK(kvbm_sched_release(s, &e_));
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 0);
}
END_TEST

START_TEST(test_preempt_and_reacquire)
{
	struct kvbm_sched *s = mks_d(8, 10, 1);
	SCHED_PREFILL(s, 8);
	APPLY_PREFILL(s, 1000);
	decode(s, 100);
	decode(s, 100);
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 3);
	OK(kvbm_sched_release(s, &e_));
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 0);
	ck_assert_int_eq(kvbm_sched_reacquire(s, NULL), 1);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 2);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 0);
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 3);
	ck_assert_uint_eq(events[nevents - 1].kind, KVBM_SEQ_REACQUIRED);
	ck_assert_uint_eq(events[nevents - 1].count, 2); /* prefix matched */
	ck_assert_int_eq(events[nevents - 1].flag, 1);
	decode(s, 200);
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 4);
}
END_TEST

START_TEST(test_match_and_add_prefix)
{
	mkpool(20);
	populate(4);
	struct kvbm_sched *s = mks(8, 10);
	ck_assert_int_eq(kvbm_sched_match_and_add_prefix(s, NULL), 1);
	ck_assert_uint_eq(kvbm_sched_prefill_position(s), 4);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 4);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 1);
	SCHED_PREFILL(s, 4);
	APPLY_PREFILL(s, 1000);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 2);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 0);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
}
END_TEST

START_TEST(test_match_and_add_prefix_no_hits)
{
	struct kvbm_sched *s = mks(8, 10);
	ck_assert_int_eq(kvbm_sched_match_and_add_prefix(s, NULL), 0);
	ck_assert_uint_eq(kvbm_sched_prefill_position(s), 0);
}
END_TEST

START_TEST(test_empty_tokens_prefill)
{
	struct kvbm_sched *s = mks(0, 10);
	ck_assert(kvbm_sched_is_prefill_complete(s));
	ck_assert_int_eq(kvbm_sched_schedule_prefill(s, 0, NULL), KVBM_EPREFILLDONE);
	ck_assert_int_eq(kvbm_sched_schedule_decode(s, NULL), KVBM_EDANGLING);
	OK(kvbm_sched_append_tokens(s, (const uint32_t[]){ 100 }, 1, &e_));
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
	ck_assert_int_eq(decode(s, 101), KVBM_DECODE_CONTINUE);
}
END_TEST

START_TEST(test_zero_max_output_no_gen_block)
{
	struct kvbm_sched *s = mks(4, 0);
	SCHED_PREFILL(s, 4);
	APPLY_PREFILL_NONE(s);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 1);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 0);
	ck_assert_int_eq(kvbm_sched_schedule_decode(s, NULL), KVBM_EGENDONE);
}
END_TEST

START_TEST(test_revert_idle_rejected)
{
	struct kvbm_sched *s = mks(8, 10);
	struct kvbm_seq_error e;
	ck_assert_int_eq(kvbm_sched_revert_schedule(s, &e), KVBM_ESEQSTATE);
	ck_assert_str_eq(e.expected, "any Scheduled state");
}
END_TEST

START_TEST(test_release_while_scheduled_rejected)
{
	struct kvbm_sched *s = mks(8, 10);
	SCHED_PREFILL(s, 4);
	ck_assert_int_eq(kvbm_sched_release(s, NULL), KVBM_ESEQSTATE);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 1);
}
END_TEST

START_TEST(test_reacquire_while_scheduled_rejected)
{
	struct kvbm_sched *s = mks(8, 10);
	SCHED_PREFILL(s, 4);
	ck_assert_int_eq(kvbm_sched_reacquire(s, NULL), KVBM_ESEQSTATE);
}
END_TEST

START_TEST(test_dangling_tokens_tracking)
{
	struct kvbm_sched *s = mks(8, 20);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 0);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 8);
	SCHED_PREFILL(s, 8);
	APPLY_PREFILL(s, 1000);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 8);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
	decode(s, 100);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 9);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
	OK(kvbm_sched_schedule_speculative(s, 3, &e_));
	OK(kvbm_sched_apply_speculative(s, (const uint32_t[]){ 200, 201 }, 2, &e_));
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 11);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
}
END_TEST

START_TEST(test_decode_requires_one_dangling)
{
	struct kvbm_sched *s = mks(0, 10);
	struct kvbm_seq_error e;
	ck_assert_int_eq(kvbm_sched_schedule_decode(s, &e), KVBM_EDANGLING);
	ck_assert_uint_eq(e.a, 1);
	ck_assert_uint_eq(e.b, 0);
	OK(kvbm_sched_append_tokens(s, (const uint32_t[]){ 100, 101 }, 2, &e_));
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 2);
	ck_assert_int_eq(kvbm_sched_schedule_decode(s, &e), KVBM_EDANGLING);
	ck_assert_uint_eq(e.b, 2);
}
END_TEST

START_TEST(test_append_tokens_creates_dangling)
{
	struct kvbm_sched *s = mks(0, 10);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 0);
	OK(kvbm_sched_append_tokens(s, (const uint32_t[]){ 100 }, 1, &e_));
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
	ck_assert_uint_eq(kvbm_request_total_tokens(R(s)), 1);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 0);
	decode(s, 101);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 1);
}
END_TEST

START_TEST(test_append_tokens_exceeding_remaining_returns_error_without_mutation)
{
	struct kvbm_sched *s = mks(0, 1);
	struct kvbm_seq_error e;
	ck_assert_int_eq(kvbm_sched_append_tokens(s, (const uint32_t[]){ 100, 101 }, 2, &e),
			 KVBM_EAPPEND);
	ck_assert_uint_eq(e.a, 2);
	ck_assert_uint_eq(e.b, 1);
	ck_assert_uint_eq(kvbm_request_generated_tokens(R(s)), 0);
	ck_assert_uint_eq(kvbm_request_remaining_tokens(R(s)), 1);
	ck_assert_uint_eq(kvbm_request_total_tokens(R(s)), 0);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 0);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 0);
}
END_TEST

START_TEST(test_kv_position_through_lifecycle)
{
	struct kvbm_sched *s = mks(8, 20);
	SCHED_PREFILL(s, 4);
	APPLY_PREFILL_NONE(s);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 4);
	SCHED_PREFILL(s, 4);
	APPLY_PREFILL(s, 1000);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 8);
	decode(s, 100);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 9);
	OK(kvbm_sched_schedule_speculative(s, 3, &e_));
	OK(kvbm_sched_apply_speculative(s, (const uint32_t[]){ 200, 201, 202 }, 3, &e_));
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 12);
}
END_TEST

START_TEST(test_pending_completion_staged_during_decode)
{
	struct kvbm_sched *s = mks(7, 10);
	SCHED_PREFILL(s, 7);
	APPLY_PREFILL(s, 1000);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 1);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 1);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 7);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
	SCHED_DECODE(s);
	state_is(s, KVBM_SCHED_DECODE, 0, 1);
	ck_assert_int_eq(kvbm_sched_apply_decode(s, 100, NULL), KVBM_DECODE_CONTINUE);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 2);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(s)), 1);
	ck_assert_uint_eq(kvbm_sched_kv_position(s), 8);
	ck_assert_uint_eq(kvbm_sched_tail_tokens(s), 1);
}
END_TEST

/* The reference's builder tests: kvbm_sched_new() takes the same fields. */
START_TEST(test_builder_basic)
{
	struct kvbm_sched *s = mks(8, 10);
	IDLE(s);
	ck_assert_uint_eq(kvbm_request_num_input_tokens(R(s)), 8);
	ck_assert_uint_eq(kvbm_request_max_output_tokens(R(s)), 10);
	ck_assert_uint_eq(kvbm_request_block_size(R(s)), BS);
}
END_TEST

START_TEST(test_builder_with_delegate)
{
	struct kvbm_sched *s = mks_d(4, 5, 1);
	ck_assert_uint_eq(kvbm_request_num_input_tokens(R(s)), 4);
	ck_assert_int_eq(nevents, 1);
	ck_assert_uint_eq(events[0].kind, KVBM_SEQ_CREATED);
}
END_TEST

START_TEST(test_builder_missing_required_field)
{
	struct kvbm_sched *s = NULL;
	mkpool(4);
	ck_assert_int_eq(kvbm_sched_new(pool, toks(4), 4, 10, 0, 0, NULL, NULL, &s), KVBM_ESIZE);
	ck_assert_int_eq(kvbm_sched_new(NULL, toks(4), 4, 10, BS, 0, NULL, NULL, &s), -EINVAL);
	ck_assert_int_eq(kvbm_sched_new(pool, NULL, 4, 10, BS, 0, NULL, NULL, &s), -EINVAL);
	ck_assert_ptr_null(s);
}
END_TEST

START_TEST(test_builder_default_noop_delegate)
{
	struct kvbm_sched *s = prefilled(4, 10);
	decode(s, 100);
	OK(kvbm_sched_release(s, &e_));
	ck_assert_int_eq(nevents, 0);
}
END_TEST

/* ---- ours ---- */

/* A failed apply changes nothing: a registration the pool refuses (the
 * handle forged stale under the request) leaves tokens, blocks and state
 * as they were, and the same apply then succeeds. */
START_TEST(test_failed_apply_changes_nothing)
{
	struct kvbm_sched *s = prefilled(4, 10);
	const struct kvbm_lassign *l = kvbm_request_assignments(R(s));
	decode(s, 100);
	decode(s, 101); /* 7 tokens: the next completes block 1 */
	SCHED_DECODE(s);
	/* the pool is closed under the request's feet in a child: every pool
	 * call of the child fails with KVBM_EFORKED */
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_sched_state st = kvbm_sched_state(s);
		size_t total = kvbm_request_total_tokens(R(s)), un = kvbm_lassign_unassigned_count(l);
		int r = kvbm_sched_apply_decode(s, 7, NULL);
		T_CHILD_CHECK(r == KVBM_EFORKED, 10);
		T_CHILD_CHECK(kvbm_request_total_tokens(R(s)) == total, 11);
		T_CHILD_CHECK(kvbm_request_generated_tokens(R(s)) == 3, 12);
		T_CHILD_CHECK(kvbm_lassign_unassigned_count(l) == un, 13);
		T_CHILD_CHECK(kvbm_lassign_staged_count(l) == 0, 14);
		T_CHILD_CHECK(kvbm_sched_state(s).kind == st.kind, 15);
		T_CHILD_CHECK(kvbm_sched_kv_position(s) == 6, 16);
		T_CHILD_CHECK(kvbm_request_num_blocks(R(s)) == 1, 17);
		_exit(0);
	}
	ck_assert_int_eq(t_wait(pid), 0);
	ck_assert_int_eq(kvbm_sched_apply_decode(s, 7, NULL), KVBM_DECODE_BLOCK_COMPLETED);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 2);
}
END_TEST

/* The whole schedule cycle of a long request: 64 prompt tokens in chunks
 * of 8 (blocks of 4), 40 decode steps, a speculative step; what it
 * registers is what a second request matches. */
START_TEST(test_long_request_then_prefix_reuse)
{
	uint32_t t[64];
	struct kvbm_sched *a, *b;
	for (uint32_t i = 0; i < 64; i++)
		t[i] = i * 3 + 1;
	mkpool(64);
	ck_assert_int_eq(kvbm_sched_new(pool, t, 64, 48, BS, 0, NULL, NULL, &a), 0);
	scheds[nscheds++] = a;
	for (int c = 0; c < 8; c++) {
		SCHED_PREFILL(a, 8);
		if (c < 7)
			APPLY_PREFILL_NONE(a);
		else
			APPLY_PREFILL(a, 5000);
	}
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(a)), 16);
	for (uint32_t i = 0; i < 40; i++)
		decode(a, 6000 + i);
	OK(kvbm_sched_schedule_speculative(a, 10, &e_)); /* clamped to the 7 left */
	ck_assert_uint_eq(kvbm_sched_state(a).num_tokens, 7);
	ck_assert_int_eq(kvbm_sched_apply_speculative(a, (const uint32_t[]){ 1, 2, 3, 4, 5, 6, 7 },
						      7, NULL) & KVBM_DECODE_MAX_LENGTH,
			 KVBM_DECODE_MAX_LENGTH);
	ck_assert_uint_eq(kvbm_request_unassigned_blocks(R(a)), 0);
	/* 112 tokens = 28 blocks, all registered except the dangling last token's */
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(a)), 28);
	ck_assert_int_eq(kvbm_sched_new(pool, t, 64, 1, BS, 0, NULL, NULL, &b), 0);
	scheds[nscheds++] = b;
	ck_assert_int_eq(kvbm_sched_match_and_add_prefix(b, NULL), 16);
	ck_assert_uint_eq(kvbm_sched_prefill_position(b), 64);
}
END_TEST

/* ---- several processes ---- */

static struct kvbm_pool *attach(void)
{
	struct kvbm_pool *p = NULL;
	if (kvbm_pool_open(pool_name, NULL, 0, &p) != 0)
		_exit(90);
	return p;
}

/*
 * Two processes, one prompt prefix: the child prefills its first chunk
 * (its blocks registered) and stops mid-schedule; the parent's request
 * for the same prompt matches those blocks as its prefix and finishes
 * while the child still holds them; then the child finishes too.
 */
START_TEST(test_mproc_shared_prefix_mid_schedule)
{
	enum { N = 32 };
	uint32_t t[N];
	struct t_gate g1, g2;
	int fd[2];
	char c;
	for (uint32_t i = 0; i < N; i++)
		t[i] = 77 + i;
	mkpool(64);
	t_gate_init(&g2);
	ck_assert_int_eq(pipe(fd), 0);
	(void)g1;
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = attach();
		struct kvbm_sched *s = NULL;
		T_CHILD_CHECK(kvbm_sched_new(q, t, N, 4, BS, 0, NULL, NULL, &s) == 0, 20);
		T_CHILD_CHECK(kvbm_sched_schedule_prefill(s, 16, NULL) == 0, 21);
		T_CHILD_CHECK(kvbm_sched_apply_prefill(s, 0, 0, NULL) == 0, 22);
		T_CHILD_CHECK(kvbm_sched_schedule_prefill(s, 16, NULL) == 0, 23); /* mid-schedule */
		t_send(fd[1], "x", 1);
		t_gate_wait(&g2);
		T_CHILD_CHECK(kvbm_sched_apply_prefill(s, 1, 9, NULL) == 0, 24);
		T_CHILD_CHECK(kvbm_request_assigned_blocks(kvbm_sched_request(s)) == 8, 25);
		T_CHILD_CHECK(kvbm_sched_schedule_decode(s, NULL) == 0, 26);
		T_CHILD_CHECK(kvbm_sched_apply_decode(s, 10, NULL) == 0, 27);
		kvbm_sched_free(s);
		kvbm_pool_close(q);
		_exit(0);
	}
	ck_assert_int_eq(t_recv(fd[0], &c, 1), 0);
	struct kvbm_sched *s = NULL;
	ck_assert_int_eq(kvbm_sched_new(pool, t, N, 4, BS, 0, NULL, NULL, &s), 0);
	scheds[nscheds++] = s;
	ck_assert_int_eq(kvbm_sched_match_and_add_prefix(s, NULL), 4); /* the child's chunk */
	ck_assert_uint_eq(kvbm_sched_prefill_position(s), 16);
	SCHED_PREFILL(s, 16);
	APPLY_PREFILL(s, 9);
	ck_assert_uint_eq(kvbm_request_assigned_blocks(R(s)), 8);
	t_gate_open(&g2);
	ck_assert_int_eq(t_wait(pid), 0);
	/* the child registered the same second half after us: a duplicate, now
	 * gone with it; ours stay matchable */
	struct kvbm_block_info bi;
	struct kvbm_block b;
	kvbm_lassign_get_assigned(kvbm_request_assignments(R(s)), 7, &b, NULL);
	ck_assert_int_eq(kvbm_block_info(pool, &b, &bi), 0);
	ck_assert_uint_eq(bi.holder_procs, 1);
	close(fd[0]);
	close(fd[1]);
}
END_TEST

/*
 * A process SIGKILLed in the middle of a schedule (blocks allocated for
 * a chunk, others registered, a prefix shared with us) leaks nothing:
 * after the reap the pool checks clean, and once we release ours every
 * block is available again.
 */
START_TEST(test_mproc_sigkill_mid_schedule_leaks_nothing)
{
	enum { N = 40 };
	uint32_t t[N];
	int fd[2];
	char c;
	for (uint32_t i = 0; i < N; i++)
		t[i] = 500 + i;
	mkpool(48);
	struct kvbm_sched *s = NULL;
	ck_assert_int_eq(kvbm_sched_new(pool, t, 16, 4, BS, 0, NULL, NULL, &s), 0);
	scheds[nscheds++] = s;
	SCHED_PREFILL(s, 16);
	APPLY_PREFILL(s, 1);
	ck_assert_int_eq(pipe(fd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = attach();
		struct kvbm_sched *k = NULL;
		T_CHILD_CHECK(kvbm_sched_new(q, t, N, 100, BS, 0, NULL, NULL, &k) == 0, 30);
		T_CHILD_CHECK(kvbm_sched_match_and_add_prefix(k, NULL) == 4, 31); /* ours */
		T_CHILD_CHECK(kvbm_sched_schedule_prefill(k, 16, NULL) == 0, 32);
		T_CHILD_CHECK(kvbm_sched_apply_prefill(k, 0, 0, NULL) == 0, 33);
		T_CHILD_CHECK(kvbm_sched_schedule_prefill(k, 8, NULL) == 0, 34);
		t_send(fd[1], "x", 1); /* holds 4 matched, 4 registered, 2 MUTABLE */
		pause();
		_exit(35);
	}
	ck_assert_int_eq(t_recv(fd[0], &c, 1), 0);
	ck_assert_int_eq(AVAIL(), 48 - 4 - 4 - 2);
	kill(pid, SIGKILL);
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	ck_assert_int_eq(kvbm_reap(pool), 1);
	ck_assert_int_eq(t_check(pool), 0);
	ck_assert_int_eq(AVAIL(), 48 - 4);
	/* what it registered before dying stays matchable (inactive) */
	struct kvbm_block_hashes bh[10];
	struct kvbm_plh h[10];
	uint8_t present[10];
	kvbm_hash_tokens(t, N, BS, 0, bh, 10);
	for (int i = 0; i < 10; i++)
		h[i] = bh[i].plh;
	ck_assert_int_eq(kvbm_check_presence(pool, h, 10, present), 8);
	OK(kvbm_sched_release(s, &e_));
	ck_assert_int_eq(AVAIL(), 48);
	close(fd[0]);
	close(fd[1]);
}
END_TEST

Suite *make_request_suite(void)
{
	Suite *s = suite_create("request");
	TCase *t_request = tcase_create("request");
	TCase *t_scheduled = tcase_create("scheduled");
	TCase *t_mproc = tcase_create("mproc");

	tcase_add_checked_fixture(t_request, NULL, teardown);
	tcase_add_test(t_request, test_new_minimal_constructor);
	tcase_add_test(t_request, test_build_prefilled_basic);
	tcase_add_test(t_request, test_build_prefilled_partial_tokens);
	tcase_add_test(t_request, test_build_prefilled_empty_tokens);
	tcase_add_test(t_request, test_build_prefilled_zero_max);
	tcase_add_test(t_request, test_build_prefilled_allocation_failure);
	tcase_add_test(t_request, test_prefix_cache_hit);
	tcase_add_test(t_request, test_partial_prefix_cache_hit);
	tcase_add_test(t_request, test_add_matched_blocks_panics_when_matched_exceeds_completed);
	tcase_add_test(t_request, test_add_matched_blocks_returns_error_on_hash_mismatch);
	tcase_add_test(t_request, test_new_tokens_for_prefill);
	tcase_add_test(t_request, test_append_token_no_boundary);
	tcase_add_test(t_request, test_append_token_crosses_boundary);
	tcase_add_test(t_request, test_append_token_panics_after_max);
	tcase_add_test(t_request, test_is_complete_transitions);
	tcase_add_test(t_request, test_is_complete_zero_max);
	tcase_add_test(t_request, test_modular_decode_loop);
	tcase_add_test(t_request, test_modular_prefill_with_cache);
	tcase_add_test(t_request, test_allocate_blocks_failure);
	tcase_add_test(t_request, test_allocate_blocks_zero);
	tcase_add_test(t_request, test_release);
	tcase_add_test(t_request, test_release_idempotent);
	tcase_add_test(t_request, test_release_returns_blocks_to_pools);
	tcase_add_test(t_request, test_reacquire_basic);
	tcase_add_test(t_request, test_reacquire_with_cache_hits);
	tcase_add_test(t_request, test_reacquire_cleans_up_on_failure);
	tcase_add_test(t_request, test_blocks_returned_on_drop);
	tcase_add_test(t_request, test_page_indices_and_drop_excess);
	tcase_add_test(t_request, test_request_block_size_must_match_pool);
	suite_add_tcase(s, t_request);

	tcase_add_checked_fixture(t_scheduled, NULL, teardown);
	tcase_add_test(t_scheduled, test_new_starts_idle);
	tcase_add_test(t_scheduled, test_schedule_prefill_requires_idle);
	tcase_add_test(t_scheduled, test_schedule_decode_requires_idle);
	tcase_add_test(t_scheduled, test_apply_prefill_requires_scheduled);
	tcase_add_test(t_scheduled, test_apply_decode_requires_scheduled);
	tcase_add_test(t_scheduled, test_decode_requires_prefill_complete);
	tcase_add_test(t_scheduled, test_speculative_requires_prefill_complete);
	tcase_add_test(t_scheduled, test_prefill_single_chunk);
	tcase_add_test(t_scheduled, test_prefill_chunked);
	tcase_add_test(t_scheduled, test_prefill_final_with_first_token);
	tcase_add_test(t_scheduled, test_prefill_token_on_non_final_rejected);
	tcase_add_test(t_scheduled, test_prefill_overrun_rejected);
	tcase_add_test(t_scheduled, test_prefill_allocation_failure);
	tcase_add_test(t_scheduled, test_schedule_prefill_after_complete_rejected);
	tcase_add_test(t_scheduled, test_apply_prefill_none_on_final_rejected);
	tcase_add_test(t_scheduled, test_decode_continue);
	tcase_add_test(t_scheduled, test_decode_block_completed);
	tcase_add_test(t_scheduled, test_decode_max_length);
	tcase_add_test(t_scheduled, test_decode_block_and_max);
	tcase_add_test(t_scheduled, test_decode_allocates_gen_block);
	tcase_add_test(t_scheduled, test_decode_generation_complete_rejected);
	tcase_add_test(t_scheduled, test_speculative_basic);
	tcase_add_test(t_scheduled, test_speculative_partial_accept);
	tcase_add_test(t_scheduled, test_speculative_single_accept);
	tcase_add_test(t_scheduled, test_speculative_zero_accept);
	tcase_add_test(t_scheduled, test_speculative_exceeds_scheduled_rejected);
	tcase_add_test(t_scheduled, test_speculative_block_boundaries);
	tcase_add_test(t_scheduled, test_revert_prefill);
	tcase_add_test(t_scheduled, test_revert_decode);
	tcase_add_test(t_scheduled, test_revert_speculative);
	tcase_add_test(t_scheduled, test_revert_returns_blocks_to_manager);
	tcase_add_test(t_scheduled, test_drop_unassigned_lifo);
	tcase_add_test(t_scheduled, test_drop_unassigned_partial);
	tcase_add_test(t_scheduled, test_drop_unassigned_zero);
	tcase_add_test(t_scheduled, test_delegate_full_lifecycle);
	tcase_add_test(t_scheduled, test_full_lifecycle_prefill_decode_release);
	tcase_add_test(t_scheduled, test_preempt_and_reacquire);
	tcase_add_test(t_scheduled, test_match_and_add_prefix);
	tcase_add_test(t_scheduled, test_match_and_add_prefix_no_hits);
	tcase_add_test(t_scheduled, test_empty_tokens_prefill);
	tcase_add_test(t_scheduled, test_zero_max_output_no_gen_block);
	tcase_add_test(t_scheduled, test_revert_idle_rejected);
	tcase_add_test(t_scheduled, test_release_while_scheduled_rejected);
	tcase_add_test(t_scheduled, test_reacquire_while_scheduled_rejected);
	tcase_add_test(t_scheduled, test_dangling_tokens_tracking);
	tcase_add_test(t_scheduled, test_decode_requires_one_dangling);
	tcase_add_test(t_scheduled, test_append_tokens_creates_dangling);
	tcase_add_test(t_scheduled, test_append_tokens_exceeding_remaining_returns_error_without_mutation);
	tcase_add_test(t_scheduled, test_kv_position_through_lifecycle);
	tcase_add_test(t_scheduled, test_pending_completion_staged_during_decode);
	tcase_add_test(t_scheduled, test_builder_basic);
	tcase_add_test(t_scheduled, test_builder_with_delegate);
	tcase_add_test(t_scheduled, test_builder_missing_required_field);
	tcase_add_test(t_scheduled, test_builder_default_noop_delegate);
	tcase_add_test(t_scheduled, test_failed_apply_changes_nothing);
	tcase_add_test(t_scheduled, test_long_request_then_prefix_reuse);
	suite_add_tcase(s, t_scheduled);

	tcase_add_checked_fixture(t_mproc, NULL, teardown);
	tcase_add_test(t_mproc, test_mproc_shared_prefix_mid_schedule);
	tcase_add_test(t_mproc, test_mproc_sigkill_mid_schedule_leaks_nothing);
	suite_add_tcase(s, t_mproc);
	return s;
}
