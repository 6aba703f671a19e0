/* SPDX-License-Identifier: Apache-2.0 */
/*
 * request.c - RequestSequence and SchedulableSequence (kvbm_sequence.h):
 * the reference's integrations module, with its arithmetic unchanged.
 *
 * Where the reference panics (a call out of order, a token past the
 * budget) we return a code and change nothing. An apply that appends
 * tokens and then fails in the pool truncates them again, so a failed
 * call leaves the request as it was.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvbm_sequence.h"
#include "seqint.h"

struct kvbm_request {
	struct kvbm_pool *pool;
	struct kvbm_bseq *seq;
	struct kvbm_lassign *la;
	size_t generated, max_output, num_input, prefix_matched;
	uint32_t bs;
	struct kvbm_block *tmp; /* allocation and match batches */
	struct kvbm_plh *hashes;
	size_t cap_tmp, cap_hashes;
};

int kvbm_request_new(struct kvbm_pool *pool, const uint32_t *tokens, size_t n,
		     size_t max_output_tokens, uint32_t block_size, uint64_t salt,
		     struct kvbm_request **out)
{
	struct kvbm_pool_info info;
	int r;

	if (!pool || !out || (n && !tokens))
		return -EINVAL;
	if ((r = kvbm_pool_info(pool, &info)) < 0)
		return r;
	if (block_size != info.config.block_size)
		return KVBM_ESIZE; /* the reference panics at the first stage */
	struct kvbm_request *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->pool = pool;
	q->bs = block_size;
	q->max_output = max_output_tokens;
	q->num_input = n;
	/* sized for the whole request up front (prompt, output and the
	 * generation block; a hint, it grows past it if need be) */
	size_t blocks = (n + max_output_tokens) / block_size + 2;
	if ((r = kvbm_bseq_new(tokens, n, block_size, salt, &q->seq)) < 0 ||
	    (r = kvbm_lassign_new(pool, &q->la)) < 0 ||
	    (r = seq_lassign_reserve(q->la, blocks < 4096 ? blocks : 4096)) < 0) {
		kvbm_request_free(q);
		return r;
	}
	*out = q;
	return 0;
}

void kvbm_request_free(struct kvbm_request *r)
{
	if (!r)
		return;
	kvbm_lassign_free(r->la);
	kvbm_bseq_free(r->seq);
	free(r->tmp);
	free(r->hashes);
	free(r);
}

/* Checks that @n held blocks are the ones registered at positions
 * assigned.. and adds them as assigned (the caller keeps them on error). */
static long add_matched(struct kvbm_request *r, const struct kvbm_block *blks, size_t n,
			struct kvbm_seq_error *err)
{
	size_t start = kvbm_lassign_assigned_count(r->la);
	const struct kvbm_block_hashes *sb = kvbm_bseq_blocks(r->seq);
	int rc;

	if (start + n > kvbm_bseq_num_blocks(r->seq))
		return -ERANGE; /* the reference: "matched blocks exceed completed sequence blocks" */
	if ((rc = kvbm_grow((void **)&r->hashes, &r->cap_hashes, n, sizeof(*r->hashes))) < 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		struct kvbm_block_info bi;
		if ((rc = kvbm_block_info(r->pool, &blks[i], &bi)) < 0)
			return rc;
		if (!kvbm_plh_eq(bi.hash, sb[start + i].plh)) {
			seq_err(err, KVBM_EHASHMISMATCH, start + i, 0, 0, 0);
			if (err) {
				err->expected_hash = sb[start + i].plh;
				err->actual_hash = bi.hash;
			}
			return KVBM_EHASHMISMATCH;
		}
		r->hashes[i] = bi.hash;
	}
	long k = kvbm_lassign_extend_assigned(r->la, blks, r->hashes, n, err);
	if (k < 0)
		return k;
	r->prefix_matched += n;
	return k;
}

long kvbm_request_add_matched_blocks(struct kvbm_request *r, const struct kvbm_block *blks,
				     size_t n, struct kvbm_seq_error *err)
{
	if (!r || (n && !blks))
		return -EINVAL;
	return add_matched(r, blks, n, err);
}

/* Matches the prefix into r->tmp; returns the hit count. */
static long match_prefix(struct kvbm_request *r)
{
	size_t nb = kvbm_bseq_num_blocks(r->seq);
	int rc;

	if ((rc = kvbm_grow((void **)&r->hashes, &r->cap_hashes, nb, sizeof(*r->hashes))) < 0 ||
	    (rc = kvbm_grow((void **)&r->tmp, &r->cap_tmp, nb, sizeof(*r->tmp))) < 0)
		return rc;
	kvbm_bseq_sequence_hashes(r->seq, r->hashes, nb);
	return kvbm_match_blocks(r->pool, r->hashes, nb, r->tmp);
}

long kvbm_request_match_and_add_prefix(struct kvbm_request *r, struct kvbm_seq_error *err)
{
	if (!r)
		return -EINVAL;
	if (!kvbm_lassign_is_empty(r->la))
		return -EBUSY; /* the reference asserts */
	long n = match_prefix(r);
	if (n <= 0)
		return n;
	long k = add_matched(r, r->tmp, (size_t)n, err);
	if (k < 0)
		kvbm_release_blocks(r->pool, r->tmp, (uint32_t)n);
	return k;
}

int kvbm_request_allocate_blocks(struct kvbm_request *r, size_t n)
{
	int rc;

	if (!r)
		return -EINVAL;
	if (!n)
		return 0;
	if (n > UINT32_MAX)
		return -ENOSPC;
	if ((rc = kvbm_grow((void **)&r->tmp, &r->cap_tmp, n, sizeof(*r->tmp))) < 0 ||
	    (rc = kvbm_allocate_blocks(r->pool, (uint32_t)n, r->tmp, NULL, NULL)) < 0)
		return rc;
	if ((rc = seq_lassign_add_allocated(r->la, r->tmp, n)) < 0) {
		kvbm_release_blocks(r->pool, r->tmp, (uint32_t)n);
		return rc;
	}
	return 0;
}

/* Stages the complete blocks below @upto not yet staged or assigned. */
static long stage_upto(struct kvbm_request *r, size_t upto)
{
	size_t start = kvbm_lassign_assigned_count(r->la) + kvbm_lassign_staged_count(r->la);

	if (start >= upto)
		return 0;
	return kvbm_lassign_stage(r->la, kvbm_bseq_blocks(r->seq) + start, upto - start, r->bs);
}

long kvbm_request_stage_pending(struct kvbm_request *r)
{
	if (!r)
		return -EINVAL;
	return stage_upto(r, kvbm_bseq_num_blocks(r->seq));
}

long kvbm_request_register_staged(struct kvbm_request *r)
{
	if (!r)
		return -EINVAL;
	/* the staged blocks follow the assigned ones: their tokens are contiguous */
	size_t first = kvbm_lassign_assigned_count(r->la);
	return kvbm_lassign_register(r->la, kvbm_bseq_tokens(r->seq) + first * r->bs);
}

/* Stage (below @upto) and register, or neither. */
static long commit_upto(struct kvbm_request *r, size_t upto)
{
	long staged = stage_upto(r, upto);
	if (staged < 0)
		return staged;
	long reg = kvbm_request_register_staged(r);
	if (reg < 0) {
		seq_lassign_unstage_last(r->la, (size_t)staged);
		return reg;
	}
	return reg;
}

long kvbm_request_complete_and_register_pending(struct kvbm_request *r)
{
	if (!r)
		return -EINVAL;
	return commit_upto(r, kvbm_bseq_num_blocks(r->seq));
}

int kvbm_request_append_token(struct kvbm_request *r, uint32_t token, size_t *index)
{
	if (!r)
		return -EINVAL;
	if (r->generated >= r->max_output)
		return KVBM_EGENDONE;
	int rc = kvbm_bseq_append(r->seq, token, index);
	if (rc >= 0)
		r->generated++;
	return rc;
}

/* Drops the last @n appended tokens again (undoing an apply). */
static void unappend(struct kvbm_request *r, size_t n)
{
	kvbm_bseq_truncate(r->seq, kvbm_bseq_total_tokens(r->seq) - n);
	r->generated -= n;
}

int kvbm_request_is_complete(const struct kvbm_request *r)
{
	return r->generated >= r->max_output;
}

int kvbm_request_release(struct kvbm_request *r)
{
	if (!r)
		return -EINVAL;
	return kvbm_lassign_clear(r->la);
}

int kvbm_request_reacquire(struct kvbm_request *r)
{
	if (!r)
		return -EINVAL;
	if (!kvbm_lassign_is_empty(r->la))
		return -EBUSY;
	size_t nb = kvbm_bseq_num_blocks(r->seq);
	long m = match_prefix(r);
	if (m < 0)
		return (int)m;
	size_t before = r->prefix_matched;
	long rc = m ? add_matched(r, r->tmp, (size_t)m, NULL) : 0;
	if (rc < 0) {
		kvbm_release_blocks(r->pool, r->tmp, (uint32_t)m);
		goto fail;
	}
	/* the complete blocks that missed; the generation block is the next
	 * schedule_decode's */
	if ((rc = kvbm_request_allocate_blocks(r, nb - (size_t)m)) < 0 ||
	    (rc = commit_upto(r, nb)) < 0)
		goto fail;
	r->prefix_matched = (size_t)m;
	return 1;
fail:
	kvbm_lassign_clear(r->la);
	r->prefix_matched = before;
	return rc == -ENOSPC ? 0 : (int)rc;
}

size_t kvbm_request_generated_tokens(const struct kvbm_request *r)
{
	return r->generated;
}

size_t kvbm_request_max_output_tokens(const struct kvbm_request *r)
{
	return r->max_output;
}

size_t kvbm_request_num_input_tokens(const struct kvbm_request *r)
{
	return r->num_input;
}

size_t kvbm_request_total_tokens(const struct kvbm_request *r)
{
	return kvbm_bseq_total_tokens(r->seq);
}

size_t kvbm_request_remaining_tokens(const struct kvbm_request *r)
{
	return r->max_output > r->generated ? r->max_output - r->generated : 0;
}

size_t kvbm_request_num_blocks(const struct kvbm_request *r)
{
	return kvbm_bseq_num_blocks(r->seq);
}

size_t kvbm_request_assigned_blocks(const struct kvbm_request *r)
{
	return kvbm_lassign_assigned_count(r->la);
}

size_t kvbm_request_staged_blocks(const struct kvbm_request *r)
{
	return kvbm_lassign_staged_count(r->la);
}

size_t kvbm_request_unassigned_blocks(const struct kvbm_request *r)
{
	return kvbm_lassign_unassigned_count(r->la);
}

size_t kvbm_request_prefix_matched_blocks(const struct kvbm_request *r)
{
	return r->prefix_matched;
}

size_t kvbm_request_new_tokens_for_prefill(const struct kvbm_request *r)
{
	size_t cached = r->prefix_matched * r->bs, total = kvbm_request_total_tokens(r);
	return total > cached ? total - cached : 0;
}

uint32_t kvbm_request_block_size(const struct kvbm_request *r)
{
	return r->bs;
}

const struct kvbm_bseq *kvbm_request_sequence(const struct kvbm_request *r)
{
	return r->seq;
}

const struct kvbm_lassign *kvbm_request_assignments(const struct kvbm_request *r)
{
	return r->la;
}

size_t kvbm_request_page_indices(const struct kvbm_request *r, uint32_t *out, size_t max)
{
	return kvbm_lassign_block_ids(r->la, out, max);
}

/* Releases up to @n unassigned blocks, last first. */
static size_t pop_unassigned(struct kvbm_request *r, size_t n)
{
	size_t k = 0;
	while (k < n && kvbm_lassign_pop_last_unassigned(r->la, NULL))
		k++;
	return k;
}

size_t kvbm_request_drop_excess_unassigned(struct kvbm_request *r, size_t keep)
{
	size_t u = kvbm_lassign_unassigned_count(r->la);
	return u > keep ? pop_unassigned(r, u - keep) : 0;
}

/* ---- SchedulableSequence ----------------------------------------------------------- */

struct kvbm_sched {
	struct kvbm_request *req;
	struct kvbm_sched_state state;
	size_t prefill_position, kv_position;
	kvbm_seq_delegate_fn delegate;
	void *arg;
};

const char *kvbm_sched_state_name(uint32_t kind)
{
	static const char *const names[] = { "Idle", "PrefillScheduled", "DecodeScheduled",
					     "SpeculativeScheduled" };
	return kind < 4 ? names[kind] : "unknown";
}

static void emit(const struct kvbm_sched *s, struct kvbm_seq_event ev)
{
	if (s->delegate)
		s->delegate(&ev, s->arg);
}

int kvbm_sched_new(struct kvbm_pool *pool, const uint32_t *tokens, size_t n,
		   size_t max_output_tokens, uint32_t block_size, uint64_t salt,
		   kvbm_seq_delegate_fn delegate, void *arg, struct kvbm_sched **out)
{
	if (!out)
		return -EINVAL;
	struct kvbm_sched *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	int r = kvbm_request_new(pool, tokens, n, max_output_tokens, block_size, salt, &s->req);
	if (r < 0) {
		free(s);
		return r;
	}
	s->delegate = delegate;
	s->arg = arg;
	emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_CREATED, .num_input_tokens = n,
					 .max_output_tokens = max_output_tokens,
					 .block_size = block_size });
	*out = s;
	return 0;
}

void kvbm_sched_free(struct kvbm_sched *s)
{
	if (!s)
		return;
	kvbm_request_free(s->req);
	free(s);
}

static int not_idle(const struct kvbm_sched *s, struct kvbm_seq_error *err)
{
	if (s->state.kind == KVBM_SCHED_IDLE)
		return 0;
	seq_err(err, KVBM_ENOTIDLE, 0, 0, 0, 0);
	if (err)
		err->state = s->state.kind;
	return KVBM_ENOTIDLE;
}

static int wrong_state(const struct kvbm_sched *s, const char *expected,
		       struct kvbm_seq_error *err)
{
	seq_err(err, KVBM_ESEQSTATE, 0, 0, 0, 0);
	if (err) {
		err->state = s->state.kind;
		err->expected = expected;
	}
	return KVBM_ESEQSTATE;
}

static int idle_for_apply(const struct kvbm_sched *s, struct kvbm_seq_error *err)
{
	return s->state.kind == KVBM_SCHED_IDLE ? 0 : wrong_state(s, "Idle", err);
}

static size_t held(const struct kvbm_sched *s)
{
	return kvbm_request_assigned_blocks(s->req) + kvbm_request_staged_blocks(s->req) +
	       kvbm_request_unassigned_blocks(s->req);
}

/* Allocates @n for a schedule: -ENOSPC carries how many were needed. */
static int sched_allocate(struct kvbm_sched *s, size_t n, struct kvbm_seq_error *err)
{
	int r = kvbm_request_allocate_blocks(s->req, n);
	if (r < 0)
		seq_err(err, r, n, 0, 0, 0);
	return r;
}

long kvbm_sched_match_and_add_prefix(struct kvbm_sched *s, struct kvbm_seq_error *err)
{
	int r;

	if (!s)
		return -EINVAL;
	if ((r = not_idle(s, err)) < 0)
		return r;
	long n = kvbm_request_match_and_add_prefix(s->req, err);
	if (n < 0)
		return n;
	if (n > 0) {
		s->prefill_position += (size_t)n * s->req->bs;
		s->kv_position = s->prefill_position;
	}
	emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_PREFIX_MATCHED, .count = (size_t)n });
	return n;
}

int kvbm_sched_schedule_prefill(struct kvbm_sched *s, size_t num_tokens,
				struct kvbm_seq_error *err)
{
	int r;

	if (!s)
		return -EINVAL;
	if ((r = not_idle(s, err)) < 0)
		return r;
	if (kvbm_sched_is_prefill_complete(s)) {
		seq_err(err, KVBM_EPREFILLDONE, 0, 0, 0, 0);
		return KVBM_EPREFILLDONE;
	}
	size_t num_input = s->req->num_input;
	if (num_tokens > num_input - s->prefill_position) {
		seq_err(err, KVBM_EOVERRUN, s->prefill_position, num_tokens, num_input, 0);
		return KVBM_EOVERRUN;
	}
	size_t new_position = s->prefill_position + num_tokens, bs = s->req->bs;
	size_t needed = (new_position + bs - 1) / bs, have = held(s);
	size_t n = needed > have ? needed - have : 0;
	if ((r = sched_allocate(s, n, err)) < 0)
		return r;
	s->state = (struct kvbm_sched_state){ KVBM_SCHED_PREFILL, num_tokens, n };
	emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_PREFILL_SCHEDULED,
					 .num_tokens = num_tokens, .blocks = n });
	return 0;
}

int kvbm_sched_apply_prefill(struct kvbm_sched *s, int has_token, uint32_t token,
			     struct kvbm_seq_error *err)
{
	struct kvbm_request *q;

	if (!s)
		return -EINVAL;
	if (s->state.kind != KVBM_SCHED_PREFILL)
		return wrong_state(s, "PrefillScheduled", err);
	q = s->req;
	size_t num_tokens = s->state.num_tokens, new_position = s->prefill_position + num_tokens;
	int is_final = new_position >= q->num_input;
	if (has_token && !is_final) {
		seq_err(err, KVBM_ETOKENCHUNK, 0, 0, 0, 0);
		return KVBM_ETOKENCHUNK;
	}
	if (is_final && !has_token && q->max_output > 0) {
		seq_err(err, KVBM_ENOTOKEN, 0, 0, 0, 0);
		return KVBM_ENOTOKEN;
	}
	if (has_token && kvbm_request_is_complete(q)) { /* max_output 0: the reference panics */
		seq_err(err, KVBM_EGENDONE, q->generated, q->max_output, 0, 0);
		return KVBM_EGENDONE;
	}
	size_t assigned_before = kvbm_request_assigned_blocks(q);
	size_t nb_before = kvbm_request_num_blocks(q);
	/* The first token is appended first, so that a failure of the pool
	 * below can take it back; a block it completes is not registered now
	 * (its KV is not computed: the next decode registers it). */
	if (has_token) {
		int r = kvbm_request_append_token(q, token, NULL);
		if (r < 0)
			return r;
	}
	long reg = commit_upto(q, nb_before);
	if (reg < 0) {
		if (has_token)
			unappend(q, 1);
		return (int)reg;
	}
	s->prefill_position = new_position;
	s->kv_position = s->prefill_position;
	size_t registered = kvbm_request_assigned_blocks(q) - assigned_before +
			    kvbm_request_staged_blocks(q);
	s->state = (struct kvbm_sched_state){ KVBM_SCHED_IDLE, 0, 0 };
	emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_PREFILL_APPLIED, .num_tokens = num_tokens,
					 .blocks = registered, .flag = has_token != 0 });
	return 0;
}

/* The preconditions of a decode or speculative schedule. */
static int decode_ready(const struct kvbm_sched *s, struct kvbm_seq_error *err)
{
	int r;

	if ((r = not_idle(s, err)) < 0)
		return r;
	if (!kvbm_sched_is_prefill_complete(s)) {
		seq_err(err, KVBM_EPREFILLPENDING, s->prefill_position, s->req->num_input, 0, 0);
		return KVBM_EPREFILLPENDING;
	}
	if (kvbm_request_is_complete(s->req)) {
		seq_err(err, KVBM_EGENDONE, s->req->generated, s->req->max_output, 0, 0);
		return KVBM_EGENDONE;
	}
	size_t dangling = kvbm_sched_tail_tokens(s);
	if (dangling != 1) {
		seq_err(err, KVBM_EDANGLING, 1, dangling, 0, 0);
		return KVBM_EDANGLING;
	}
	return 0;
}

int kvbm_sched_schedule_decode(struct kvbm_sched *s, struct kvbm_seq_error *err)
{
	int r;

	if (!s)
		return -EINVAL;
	if ((r = decode_ready(s, err)) < 0)
		return r;
	struct kvbm_request *q = s->req;
	size_t complete = kvbm_request_num_blocks(q);
	size_t registered = kvbm_request_assigned_blocks(q) + kvbm_request_staged_blocks(q);
	size_t pending = complete > registered ? complete - registered : 0;
	size_t need = pending + 1, have = kvbm_request_unassigned_blocks(q); /* + the generation block */
	size_t n = need > have ? need - have : 0;
	if ((r = sched_allocate(s, n, err)) < 0)
		return r;
	s->state = (struct kvbm_sched_state){ KVBM_SCHED_DECODE, 0, n };
	emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_DECODE_SCHEDULED, .blocks = n });
	return 0;
}

static int outcome(const struct kvbm_sched *s, int completed)
{
	return (completed ? KVBM_DECODE_BLOCK_COMPLETED : 0) |
	       (kvbm_request_is_complete(s->req) ? KVBM_DECODE_MAX_LENGTH : 0);
}

int kvbm_sched_apply_decode(struct kvbm_sched *s, uint32_t token, struct kvbm_seq_error *err)
{
	if (!s)
		return -EINVAL;
	if (s->state.kind != KVBM_SCHED_DECODE)
		return wrong_state(s, "DecodeScheduled", err);
	int crossed = kvbm_request_append_token(s->req, token, NULL);
	if (crossed < 0)
		return crossed;
	/* every pending completion: the block the token just completed, and
	 * one the prefill's token completed (deferred until its KV existed);
	 * most steps have none */
	struct kvbm_request *q = s->req;
	long reg = 0;
	if (kvbm_bseq_num_blocks(q->seq) >
	    kvbm_lassign_assigned_count(q->la) + kvbm_lassign_staged_count(q->la))
		reg = kvbm_request_complete_and_register_pending(q);
	if (reg < 0) {
		unappend(s->req, 1);
		return (int)reg;
	}
	s->kv_position++;
	s->state = (struct kvbm_sched_state){ KVBM_SCHED_IDLE, 0, 0 };
	emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_DECODE_APPLIED, .token = token,
					 .flag = crossed });
	return outcome(s, crossed);
}

int kvbm_sched_schedule_speculative(struct kvbm_sched *s, size_t num_draft,
				    struct kvbm_seq_error *err)
{
	int r;

	if (!s)
		return -EINVAL;
	if ((r = decode_ready(s, err)) < 0)
		return r;
	size_t remaining = kvbm_request_remaining_tokens(s->req), bs = s->req->bs;
	if (num_draft > remaining)
		num_draft = remaining; /* the budget: applying more would fail */
	size_t future = (kvbm_request_total_tokens(s->req) + num_draft + bs - 1) / bs, have = held(s);
	size_t n = future > have ? future - have : 0;
	if ((r = sched_allocate(s, n, err)) < 0)
		return r;
	s->state = (struct kvbm_sched_state){ KVBM_SCHED_SPECULATIVE, num_draft, n };
	emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_SPECULATIVE_SCHEDULED,
					 .num_tokens = num_draft, .blocks = n });
	return 0;
}

int kvbm_sched_apply_speculative(struct kvbm_sched *s, const uint32_t *accepted, size_t n,
				 struct kvbm_seq_error *err)
{
	struct kvbm_request *q;

	if (!s || (n && !accepted))
		return -EINVAL;
	if (s->state.kind != KVBM_SCHED_SPECULATIVE)
		return wrong_state(s, "SpeculativeScheduled", err);
	q = s->req;
	size_t scheduled = s->state.num_tokens;
	if (n > scheduled) {
		seq_err(err, KVBM_EACCEPTED, n, scheduled, 0, 0);
		return KVBM_EACCEPTED;
	}
	if (n > kvbm_request_remaining_tokens(q)) { /* only if appended between: cannot be */
		seq_err(err, KVBM_EGENDONE, q->generated, q->max_output, 0, 0);
		return KVBM_EGENDONE;
	}
	struct kvbm_range c;
	int r = kvbm_bseq_extend(q->seq, accepted, n, &c);
	if (r < 0)
		return r;
	q->generated += n;
	long reg = kvbm_request_complete_and_register_pending(q);
	if (reg < 0) {
		unappend(q, n);
		return (int)reg;
	}
	s->kv_position += n;
	/* keep one generation block for the next decode, none once complete */
	size_t keep = kvbm_request_is_complete(q) ? 0 : 1;
	size_t released = kvbm_request_drop_excess_unassigned(q, keep);
	s->state = (struct kvbm_sched_state){ KVBM_SCHED_IDLE, 0, 0 };
	emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_SPECULATIVE_APPLIED, .count = n,
					 .num_tokens = scheduled, .blocks = released });
	return outcome(s, c.end > c.start);
}

int kvbm_sched_revert_schedule(struct kvbm_sched *s, struct kvbm_seq_error *err)
{
	if (!s)
		return -EINVAL;
	if (s->state.kind == KVBM_SCHED_IDLE)
		return wrong_state(s, "any Scheduled state", err);
	size_t n = s->state.blocks_allocated;
	/* the last unassigned blocks are exactly the ones this schedule added */
	pop_unassigned(s->req, n);
	s->state = (struct kvbm_sched_state){ KVBM_SCHED_IDLE, 0, 0 };
	emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_SCHEDULE_REVERTED, .blocks = n });
	return 0;
}

long kvbm_sched_drop_unassigned(struct kvbm_sched *s, size_t n, struct kvbm_seq_error *err)
{
	int r;

	if (!s)
		return -EINVAL;
	if ((r = idle_for_apply(s, err)) < 0)
		return r; /* the reference asserts */
	size_t k = pop_unassigned(s->req, n);
	if (k)
		emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_UNASSIGNED_DROPPED, .count = k });
	return (long)k;
}

int kvbm_sched_release(struct kvbm_sched *s, struct kvbm_seq_error *err)
{
	int r;

	if (!s)
		return -EINVAL;
	if ((r = idle_for_apply(s, err)) < 0)
		return r;
	r = kvbm_request_release(s->req);
	emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_RELEASED });
	return r;
}

int kvbm_sched_reacquire(struct kvbm_sched *s, struct kvbm_seq_error *err)
{
	int r;

	if (!s)
		return -EINVAL;
	if ((r = idle_for_apply(s, err)) < 0)
		return r;
	r = kvbm_request_reacquire(s->req);
	if (r < 0)
		return r;
	emit(s, (struct kvbm_seq_event){ .kind = KVBM_SEQ_REACQUIRED,
					 .count = s->req->prefix_matched, .flag = r == 1 });
	return r;
}

int kvbm_sched_append_tokens(struct kvbm_sched *s, const uint32_t *tokens, size_t n,
			     struct kvbm_seq_error *err)
{
	int r;

	if (!s || (n && !tokens))
		return -EINVAL;
	if ((r = idle_for_apply(s, err)) < 0)
		return r;
	size_t remaining = kvbm_request_remaining_tokens(s->req);
	if (n > remaining) {
		seq_err(err, KVBM_EAPPEND, n, remaining, 0, 0);
		return KVBM_EAPPEND;
	}
	if ((r = kvbm_bseq_extend(s->req->seq, tokens, n, NULL)) < 0)
		return r;
	s->req->generated += n;
	return 0;
}

struct kvbm_sched_state kvbm_sched_state(const struct kvbm_sched *s)
{
	return s->state;
}

size_t kvbm_sched_prefill_position(const struct kvbm_sched *s)
{
	return s->prefill_position;
}

int kvbm_sched_is_prefill_complete(const struct kvbm_sched *s)
{
	return s->prefill_position >= s->req->num_input;
}

size_t kvbm_sched_kv_position(const struct kvbm_sched *s)
{
	return s->kv_position;
}

size_t kvbm_sched_tail_tokens(const struct kvbm_sched *s)
{
	size_t total = kvbm_request_total_tokens(s->req);
	return total > s->kv_position ? total - s->kv_position : 0;
}

const struct kvbm_request *kvbm_sched_request(const struct kvbm_sched *s)
{
	return s->req;
}
