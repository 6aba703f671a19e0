/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm_sequence.h - the layer a scheduler programs against (the reference's
 * kvbm-logical `sequence` and `integrations` modules), over kvbm.h's blocks:
 *
 *  - kvbm_bseq     BlockSequence: a request's tokens, its complete blocks
 *                  and their hashes;
 *  - kvbm_xassign  ExternalBlockAssignments: which block id holds which
 *                  position of a sequence, at the identity level (ids and
 *                  hashes only, no hold), for planning transfers between
 *                  tiers (kvbm_zip_assigned, kvbm_zip_assigned_pending);
 *  - kvbm_lassign  LogicalBlockAssignments: the blocks a request holds in
 *                  one pool, unassigned (MUTABLE), staged, assigned
 *                  (registered), each returned to the pool when dropped;
 *  - kvbm_request  RequestSequence: tokens + blocks + output budget;
 *  - kvbm_sched    SchedulableSequence: a request with a schedule/apply
 *                  state machine (prefill chunks, decode, speculative
 *                  decode, revert, preemption) reporting to a delegate.
 *
 * Conventions are kvbm.h's: 0 or a count on success, a negative code on
 * failure (kvbm_strerror() names it). A call that fails changes nothing.
 * Calls that can fail for a reason with details (which id, which position)
 * take a `struct kvbm_seq_error *err` (may be NULL) that receives them;
 * kvbm_seq_error_format() renders the reference's message. None of these
 * objects is thread-safe: one request belongs to one scheduler thread. They
 * are process-local (they hold blocks through this process's pool handle);
 * what they register is shared through the pool as usual.
 */
#ifndef KVBM_SEQUENCE_H
#define KVBM_SEQUENCE_H

#include "kvbm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A half-open range [start, end) of indices or positions. */
struct kvbm_range {
	size_t start, end;
};

/* The details of a failed call. Which fields mean what, by code:
 *   KVBM_EORDER      a known_id, b new_id, c known_index, d first_new_index
 *   KVBM_EPOSITION   a expected position, b actual position, c block id
 *   KVBM_EDUPID      a block id
 *   KVBM_EHASHMISMATCH a position, expected, actual
 *   KVBM_ENOTIDLE    state
 *   KVBM_EOVERRUN    a position, b num_tokens, c num_input_tokens
 *   KVBM_EPREFILLPENDING a position, b num_input_tokens
 *   -ENOSPC          a blocks needed (the reference's AllocationFailed)
 *   KVBM_EGENDONE    a generated, b max_output
 *   KVBM_EDANGLING   a expected, b actual
 *   KVBM_ESEQSTATE   expected (a state name), state (the actual one)
 *   KVBM_EACCEPTED   a accepted, b scheduled
 *   KVBM_EAPPEND     a requested, b remaining
 */
struct kvbm_seq_error {
	int code;
	uint32_t state;       /* enum kvbm_sched_state_kind */
	const char *expected; /* KVBM_ESEQSTATE: "PrefillScheduled", "Idle", ... */
	uint64_t a, b, c, d;
	struct kvbm_plh expected_hash, actual_hash;
};
/* Writes the message of @e (like snprintf); returns the length it needs. */
KVBM_API int kvbm_seq_error_format(const struct kvbm_seq_error *e, char *buf, size_t len);

/* ---- BlockSequence --------------------------------------------------------- */

/*
 * Tokens and the hashes of their complete blocks (kvbm.h's hashing: block
 * i's PLH has position i). Unlike struct kvbm_tokens it gives its tokens
 * back and can be truncated, which a request needs to undo a failed apply.
 */
struct kvbm_bseq;
/* @block_size: a power of two 1..1024; @salt: 0 or kvbm_salt_hash(). */
KVBM_API int kvbm_bseq_new(const uint32_t *tokens, size_t n, uint32_t block_size, uint64_t salt,
			   struct kvbm_bseq **out);
KVBM_API void kvbm_bseq_free(struct kvbm_bseq *s);
KVBM_API uint32_t kvbm_bseq_block_size(const struct kvbm_bseq *s);
KVBM_API size_t kvbm_bseq_total_tokens(const struct kvbm_bseq *s); /* incl. the partial block */
KVBM_API size_t kvbm_bseq_num_blocks(const struct kvbm_bseq *s);   /* complete blocks */
KVBM_API const uint32_t *kvbm_bseq_tokens(const struct kvbm_bseq *s);
/* The complete blocks, an array of kvbm_bseq_num_blocks() entries (valid
 * until the next change of @s): what the stage calls below take. */
KVBM_API const struct kvbm_block_hashes *kvbm_bseq_blocks(const struct kvbm_bseq *s);
/* Copies the PLH of every complete block (at most @max) into @out; returns
 * the number of complete blocks. */
KVBM_API size_t kvbm_bseq_sequence_hashes(const struct kvbm_bseq *s, struct kvbm_plh *out,
					  size_t max);
/* Appends @n tokens; *@completed (may be NULL) gets the range of the blocks
 * they completed (empty: none). Returns 0, -ENOMEM or -ERANGE. */
KVBM_API int kvbm_bseq_extend(struct kvbm_bseq *s, const uint32_t *tokens, size_t n,
			      struct kvbm_range *completed);
/* Appends one token. Returns 1 and *@index (may be NULL) when it completed
 * block *@index, 0 when not, or a negative code. */
KVBM_API int kvbm_bseq_append(struct kvbm_bseq *s, uint32_t token, size_t *index);
/* Drops tokens past the first @ntokens (and the blocks they completed).
 * -ERANGE when @ntokens exceeds the total. */
KVBM_API int kvbm_bseq_truncate(struct kvbm_bseq *s, size_t ntokens);

/* ---- ExternalBlockAssignments ----------------------------------------------- */

/*
 * Block ids (any 64-bit id of the caller's storage: another pool's, a
 * tier's) paired with the sequence positions they hold: unassigned ids
 * queue in order; staged and assigned ids carry the PLH of their block.
 * Assigned index i is absolute position offset + i; staged ones follow the
 * assigned; pending (unassigned) ones follow the staged.
 */
struct kvbm_xassign;
KVBM_API int kvbm_xassign_new(size_t offset, struct kvbm_xassign **out);
KVBM_API void kvbm_xassign_free(struct kvbm_xassign *x);
KVBM_API size_t kvbm_xassign_offset(const struct kvbm_xassign *x);
KVBM_API size_t kvbm_xassign_assigned_count(const struct kvbm_xassign *x);
KVBM_API size_t kvbm_xassign_staged_count(const struct kvbm_xassign *x);
KVBM_API size_t kvbm_xassign_unassigned_count(const struct kvbm_xassign *x);
/* 1 if @id is in any of the three collections, else 0. */
KVBM_API int kvbm_xassign_contains(const struct kvbm_xassign *x, uint64_t id);
/* 1 and the entry at index @i (id and hash may be NULL), or 0 out of range. */
KVBM_API int kvbm_xassign_get_assigned(const struct kvbm_xassign *x, size_t i, uint64_t *id,
				       struct kvbm_plh *hash);
KVBM_API int kvbm_xassign_get_staged(const struct kvbm_xassign *x, size_t i, uint64_t *id,
				     struct kvbm_plh *hash);
KVBM_API int kvbm_xassign_get_unassigned(const struct kvbm_xassign *x, size_t i, uint64_t *id);
/* Forgets every id; the offset stays. */
KVBM_API void kvbm_xassign_clear(struct kvbm_xassign *x);
/* Moves the staged entries out into @ids / @hashes (room for @max; either
 * may be NULL). Returns how many, or -ERANGE (nothing taken) when more than
 * @max are staged. */
KVBM_API long kvbm_xassign_take_staged(struct kvbm_xassign *x, uint64_t *ids,
				       struct kvbm_plh *hashes, size_t max);
/* offset + assigned + staged: the position the next staged id gets. */
KVBM_API size_t kvbm_xassign_next_position(const struct kvbm_xassign *x);
KVBM_API struct kvbm_range kvbm_xassign_assigned_positions(const struct kvbm_xassign *x);
KVBM_API struct kvbm_range kvbm_xassign_staged_positions(const struct kvbm_xassign *x);
KVBM_API struct kvbm_range kvbm_xassign_pending_positions(const struct kvbm_xassign *x);
/* 1 and the assigned entry at absolute position @pos, or 0. */
KVBM_API int kvbm_xassign_get_at_position(const struct kvbm_xassign *x, size_t pos,
					  uint64_t *id, struct kvbm_plh *hash);
/* 1 and the unassigned id that will hold absolute position @pos, or 0. */
KVBM_API int kvbm_xassign_get_pending_at_position(const struct kvbm_xassign *x, size_t pos,
						  uint64_t *id);
/*
 * Takes the FULL ordered id list of the request (as a scheduler sends it
 * every step): the ids already known must form a prefix and are skipped,
 * the new ones are queued unassigned. A known id after a new one is
 * KVBM_EORDER, a new id twice is KVBM_EDUPID; all is checked before
 * anything changes.
 */
KVBM_API int kvbm_xassign_extend_block_ids(struct kvbm_xassign *x, const uint64_t *ids, size_t n,
					   struct kvbm_seq_error *err);
/* Adds (id, hash) pairs directly as assigned (cache hits). An id already
 * present, or repeated in the input, is KVBM_EDUPID (nothing added).
 * Returns @n. */
KVBM_API long kvbm_xassign_extend_assigned(struct kvbm_xassign *x, const uint64_t *ids,
					   const struct kvbm_plh *hashes, size_t n,
					   struct kvbm_seq_error *err);
/*
 * Pairs unassigned ids, in order, with @blocks[next_position ...] (the
 * request's complete blocks from position 0, e.g. kvbm_bseq_blocks()):
 * as many as both have. A block whose PLH position is not its index is
 * KVBM_EPOSITION (nothing staged). *@staged (may be NULL) gets the staged
 * indices.
 */
KVBM_API int kvbm_xassign_stage_pending(struct kvbm_xassign *x,
					const struct kvbm_block_hashes *blocks, size_t n,
					struct kvbm_range *staged, struct kvbm_seq_error *err);
/* Moves every staged entry to assigned; returns the assigned indices. */
KVBM_API struct kvbm_range kvbm_xassign_commit_staged(struct kvbm_xassign *x);
/* stage_pending + commit_staged; *@assigned gets the assigned indices. */
KVBM_API int kvbm_xassign_assign_pending(struct kvbm_xassign *x,
					 const struct kvbm_block_hashes *blocks, size_t n,
					 struct kvbm_range *assigned, struct kvbm_seq_error *err);

/* A position both sides hold, and the id each holds it with. */
struct kvbm_zip {
	size_t position;
	uint64_t a, b;
};
/* Positions assigned in both @a and @b, ascending, into @out (room for
 * @max). Returns how many there are (may exceed @max). */
KVBM_API size_t kvbm_zip_assigned(const struct kvbm_xassign *a, const struct kvbm_xassign *b,
				  struct kvbm_zip *out, size_t max);
/* Positions assigned in @src and pending in @dst: (position, src id, dst
 * id), the copies an onboarding (G2 hits into G1 blocks) must make. */
KVBM_API size_t kvbm_zip_assigned_pending(const struct kvbm_xassign *src,
					  const struct kvbm_xassign *dst, struct kvbm_zip *out,
					  size_t max);

/* ---- LogicalBlockAssignments ------------------------------------------------ */

/*
 * The blocks of one pool a request holds, in three ordered collections
 * keyed by block id: unassigned (MUTABLE, FIFO), staged (STAGED), assigned
 * (a hold on a REGISTERED block). Every block in it is given back to the
 * pool by kvbm_lassign_clear() and kvbm_lassign_free(); the ones taken out
 * (pop, take) become the caller's to release.
 */
struct kvbm_lassign;
KVBM_API int kvbm_lassign_new(struct kvbm_pool *pool, struct kvbm_lassign **out);
/* Clears (returning every block) and frees. */
KVBM_API void kvbm_lassign_free(struct kvbm_lassign *l);
KVBM_API size_t kvbm_lassign_assigned_count(const struct kvbm_lassign *l);
KVBM_API size_t kvbm_lassign_staged_count(const struct kvbm_lassign *l);
KVBM_API size_t kvbm_lassign_unassigned_count(const struct kvbm_lassign *l);
KVBM_API int kvbm_lassign_is_empty(const struct kvbm_lassign *l);
KVBM_API int kvbm_lassign_contains(const struct kvbm_lassign *l, uint32_t id);
/* 1 and the entry at index @i (blk / hash may be NULL), or 0. */
KVBM_API int kvbm_lassign_get_assigned(const struct kvbm_lassign *l, size_t i,
				       struct kvbm_block *blk, struct kvbm_plh *hash);
KVBM_API int kvbm_lassign_get_staged(const struct kvbm_lassign *l, size_t i,
				     struct kvbm_block *blk, struct kvbm_plh *hash);
KVBM_API int kvbm_lassign_get_unassigned(const struct kvbm_lassign *l, size_t i,
					 struct kvbm_block *blk);
/* The block ids, assigned then staged then unassigned (at most @max);
 * returns the total (the engine's page table). */
KVBM_API size_t kvbm_lassign_block_ids(const struct kvbm_lassign *l, uint32_t *out, size_t max);
/* Adds MUTABLE blocks (the caller's, e.g. from kvbm_allocate_blocks) as
 * unassigned; they are @l's from now on. An id already in @l or repeated
 * is KVBM_EDUPID: nothing is added and the blocks stay the caller's.
 * Returns @n. */
KVBM_API long kvbm_lassign_extend_blocks(struct kvbm_lassign *l, const struct kvbm_block *blks,
					 size_t n, struct kvbm_seq_error *err);
/* Adds holds on REGISTERED blocks (e.g. from kvbm_match_blocks) as
 * assigned, with their hashes (@hashes NULL: read with kvbm_block_info).
 * Duplicates as above. Returns @n. */
KVBM_API long kvbm_lassign_extend_assigned(struct kvbm_lassign *l, const struct kvbm_block *blks,
					   const struct kvbm_plh *hashes, size_t n,
					   struct kvbm_seq_error *err);
/*
 * Stages the first min(@n, unassigned) unassigned blocks, FIFO, under the
 * hashes of @blocks[0..] (block 0 goes to the first unassigned). The token
 * count is @block_size: one the pool does not use is KVBM_ESIZE. All or
 * nothing: on failure every block stays unassigned. Returns how many.
 */
KVBM_API long kvbm_lassign_stage(struct kvbm_lassign *l, const struct kvbm_block_hashes *blocks,
				 size_t n, uint32_t block_size);
/*
 * Registers every staged block, FIFO, in one call (@tokens: their token
 * ids, block after block, for the pool's STORED events; may be NULL).
 * Each becomes assigned, holding what kvbm_register_blocks() returned:
 * the same block, or under KVBM_DUP_REJECT the existing primary, which
 * then also gives the entry its id (the reference keys it by the
 * candidate's id, which went back to the free pool: a page table must not
 * point there). Returns how many, or a negative code (nothing changed).
 */
KVBM_API long kvbm_lassign_register(struct kvbm_lassign *l, const uint32_t *tokens);
/* Takes the last unassigned block out (LIFO): 1 and *@out (now the
 * caller's; NULL: released at once), or 0 when there is none. */
KVBM_API int kvbm_lassign_pop_last_unassigned(struct kvbm_lassign *l, struct kvbm_block *out);
/* Gives every block back to the pool. Returns 0 or the first release error
 * (the others are still released). */
KVBM_API int kvbm_lassign_clear(struct kvbm_lassign *l);
/* Moves a collection out (room for @max; @hashes may be NULL): the blocks
 * become the caller's. Returns how many, or -ERANGE when they do not fit
 * (nothing taken). */
KVBM_API long kvbm_lassign_take_assigned(struct kvbm_lassign *l, struct kvbm_block *blks,
					 struct kvbm_plh *hashes, size_t max);
KVBM_API long kvbm_lassign_take_staged(struct kvbm_lassign *l, struct kvbm_block *blks,
				       struct kvbm_plh *hashes, size_t max);
KVBM_API long kvbm_lassign_take_unassigned(struct kvbm_lassign *l, struct kvbm_block *blks,
					   size_t max);

/* ---- RequestSequence --------------------------------------------------------- */

/*
 * A request: its tokens (prompt + generated), its blocks in @pool and its
 * output budget. Creating one allocates no block. kvbm_request_free()
 * gives every block back.
 */
struct kvbm_request;
/* @block_size must be the pool's (KVBM_ESIZE); @salt 0 or kvbm_salt_hash(). */
KVBM_API int kvbm_request_new(struct kvbm_pool *pool, const uint32_t *tokens, size_t n,
			      size_t max_output_tokens, uint32_t block_size, uint64_t salt,
			      struct kvbm_request **out);
KVBM_API void kvbm_request_free(struct kvbm_request *r);
/*
 * Matches the request's complete blocks against the pool (prefix) and adds
 * the hits as assigned. Only on a request that holds nothing (-EBUSY).
 * Returns how many matched, or a negative code (KVBM_EHASHMISMATCH when a
 * hit is not the block expected at its position: nothing kept).
 */
KVBM_API long kvbm_request_match_and_add_prefix(struct kvbm_request *r, struct kvbm_seq_error *err);
/* Adds holds the caller matched itself (e.g. kvbm_match_blocks_scattered()
 * or another tier's plan) as the next assigned blocks, after checking each
 * is registered under the hash of its position (KVBM_EHASHMISMATCH, -ERANGE
 * past the complete blocks: nothing added, the blocks stay the caller's).
 * They count as prefix matched. Returns @n. */
KVBM_API long kvbm_request_add_matched_blocks(struct kvbm_request *r,
					      const struct kvbm_block *blks, size_t n,
					      struct kvbm_seq_error *err);
/* Allocates @n blocks as unassigned (0: nothing). -ENOSPC: none taken. */
KVBM_API int kvbm_request_allocate_blocks(struct kvbm_request *r, size_t n);
/* Stages unassigned blocks under the complete blocks not yet staged or
 * assigned. Returns how many. */
KVBM_API long kvbm_request_stage_pending(struct kvbm_request *r);
/* Registers the staged blocks. Returns how many. */
KVBM_API long kvbm_request_register_staged(struct kvbm_request *r);
/* Both. Returns how many were registered. */
KVBM_API long kvbm_request_complete_and_register_pending(struct kvbm_request *r);
/* Appends one generated token (no block is touched). Returns 1 and
 * *@index when it completed block *@index, 0 when not; KVBM_EGENDONE once
 * max_output_tokens were generated. */
KVBM_API int kvbm_request_append_token(struct kvbm_request *r, uint32_t token, size_t *index);
KVBM_API int kvbm_request_is_complete(const struct kvbm_request *r);
/* Gives every block back (idempotent). */
KVBM_API int kvbm_request_release(struct kvbm_request *r);
/*
 * After release (preemption): matches the prefix again, allocates, stages
 * and registers the complete blocks that missed (no generation block).
 * Returns 1, 0 when blocks ran out (then it holds nothing), -EBUSY when it
 * still holds blocks, or a negative code.
 */
KVBM_API int kvbm_request_reacquire(struct kvbm_request *r);
KVBM_API size_t kvbm_request_generated_tokens(const struct kvbm_request *r);
KVBM_API size_t kvbm_request_max_output_tokens(const struct kvbm_request *r);
KVBM_API size_t kvbm_request_num_input_tokens(const struct kvbm_request *r);
KVBM_API size_t kvbm_request_total_tokens(const struct kvbm_request *r);
KVBM_API size_t kvbm_request_remaining_tokens(const struct kvbm_request *r);
KVBM_API size_t kvbm_request_num_blocks(const struct kvbm_request *r); /* complete blocks */
KVBM_API size_t kvbm_request_assigned_blocks(const struct kvbm_request *r);
KVBM_API size_t kvbm_request_staged_blocks(const struct kvbm_request *r);
KVBM_API size_t kvbm_request_unassigned_blocks(const struct kvbm_request *r);
KVBM_API size_t kvbm_request_prefix_matched_blocks(const struct kvbm_request *r);
/* total - matched x block_size (0 at least): tokens whose KV must be computed. */
KVBM_API size_t kvbm_request_new_tokens_for_prefill(const struct kvbm_request *r);
KVBM_API uint32_t kvbm_request_block_size(const struct kvbm_request *r);
KVBM_API const struct kvbm_bseq *kvbm_request_sequence(const struct kvbm_request *r);
KVBM_API const struct kvbm_lassign *kvbm_request_assignments(const struct kvbm_request *r);
/* kvbm_lassign_block_ids() of the request's blocks. */
KVBM_API size_t kvbm_request_page_indices(const struct kvbm_request *r, uint32_t *out, size_t max);
/* Releases unassigned blocks, last first, until @keep remain. Returns how many. */
KVBM_API size_t kvbm_request_drop_excess_unassigned(struct kvbm_request *r, size_t keep);

/* ---- SchedulableSequence ------------------------------------------------------ */

enum kvbm_sched_state_kind {
	KVBM_SCHED_IDLE = 0,
	KVBM_SCHED_PREFILL = 1,     /* PrefillScheduled{num_tokens, blocks_allocated} */
	KVBM_SCHED_DECODE = 2,      /* DecodeScheduled{blocks_allocated} */
	KVBM_SCHED_SPECULATIVE = 3, /* SpeculativeScheduled{num_tokens, blocks_allocated} */
};
struct kvbm_sched_state {
	uint32_t kind; /* enum kvbm_sched_state_kind */
	size_t num_tokens;
	size_t blocks_allocated; /* by this schedule: what a revert gives back */
};
/* "Idle", "PrefillScheduled", ... */
KVBM_API const char *kvbm_sched_state_name(uint32_t kind);

enum kvbm_seq_event_kind {
	KVBM_SEQ_CREATED = 1,               /* num_input_tokens, max_output_tokens, block_size */
	KVBM_SEQ_PREFIX_MATCHED = 2,        /* count (blocks matched) */
	KVBM_SEQ_PREFILL_SCHEDULED = 3,     /* num_tokens, blocks */
	KVBM_SEQ_PREFILL_APPLIED = 4,       /* num_tokens, blocks (registered), flag (token emitted) */
	KVBM_SEQ_DECODE_SCHEDULED = 5,      /* blocks */
	KVBM_SEQ_DECODE_APPLIED = 6,        /* token, flag (block completed) */
	KVBM_SEQ_SPECULATIVE_SCHEDULED = 7, /* num_tokens, blocks */
	KVBM_SEQ_SPECULATIVE_APPLIED = 8,   /* count (accepted), num_tokens (scheduled), blocks (released) */
	KVBM_SEQ_SCHEDULE_REVERTED = 9,     /* blocks (released) */
	KVBM_SEQ_UNASSIGNED_DROPPED = 10,   /* count */
	KVBM_SEQ_RELEASED = 11,
	KVBM_SEQ_REACQUIRED = 12,           /* count (prefix matched), flag (success) */
};
struct kvbm_seq_event {
	uint32_t kind; /* enum kvbm_seq_event_kind; the comments say which fields it sets */
	uint32_t token;
	int flag;
	size_t num_tokens, blocks, count;
	size_t num_input_tokens, max_output_tokens, block_size;
};
/* The delegate: called synchronously after each state change. */
typedef void (*kvbm_seq_delegate_fn)(const struct kvbm_seq_event *ev, void *arg);

/* What apply_decode / apply_speculative report (bits). */
#define KVBM_DECODE_CONTINUE 0
#define KVBM_DECODE_BLOCK_COMPLETED 1
#define KVBM_DECODE_MAX_LENGTH 2

struct kvbm_sched;
/* A request in state Idle (emits CREATED). @delegate may be NULL. */
KVBM_API int kvbm_sched_new(struct kvbm_pool *pool, const uint32_t *tokens, size_t n,
			    size_t max_output_tokens, uint32_t block_size, uint64_t salt,
			    kvbm_seq_delegate_fn delegate, void *arg, struct kvbm_sched **out);
/* Gives every block back and frees (no event). */
KVBM_API void kvbm_sched_free(struct kvbm_sched *s);
/* Idle only: prefix match; advances the prefill and KV positions past the
 * hits. Returns how many blocks matched (emits PREFIX_MATCHED). */
KVBM_API long kvbm_sched_match_and_add_prefix(struct kvbm_sched *s, struct kvbm_seq_error *err);
/* Idle, prefill not complete, position + @num_tokens <= input tokens:
 * allocates the blocks that cover the prompt up to there. Errors:
 * KVBM_ENOTIDLE, KVBM_EPREFILLDONE, KVBM_EOVERRUN, -ENOSPC. */
KVBM_API int kvbm_sched_schedule_prefill(struct kvbm_sched *s, size_t num_tokens,
					 struct kvbm_seq_error *err);
/* After the forward pass of a scheduled chunk: registers the blocks it
 * completed and advances; the final chunk must bring the first generated
 * token (@has_token, @token), which stays dangling (its KV not computed).
 * Errors: KVBM_ESEQSTATE, KVBM_ETOKENCHUNK, KVBM_ENOTOKEN. */
KVBM_API int kvbm_sched_apply_prefill(struct kvbm_sched *s, int has_token, uint32_t token,
				      struct kvbm_seq_error *err);
/* Idle, prefill complete, budget left, exactly one dangling token:
 * allocates the blocks the pending completions and the generation block
 * need. Errors: KVBM_ENOTIDLE, KVBM_EPREFILLPENDING, KVBM_EGENDONE,
 * KVBM_EDANGLING, -ENOSPC. */
KVBM_API int kvbm_sched_schedule_decode(struct kvbm_sched *s, struct kvbm_seq_error *err);
/* Appends @token, registers what completed, advances the KV position.
 * Returns KVBM_DECODE_* bits, or KVBM_ESEQSTATE. */
KVBM_API int kvbm_sched_apply_decode(struct kvbm_sched *s, uint32_t token,
				     struct kvbm_seq_error *err);
/* Like schedule_decode for @num_draft draft tokens (clamped to the budget
 * left): allocates the blocks they could complete. */
KVBM_API int kvbm_sched_schedule_speculative(struct kvbm_sched *s, size_t num_draft,
					     struct kvbm_seq_error *err);
/* Appends the @n accepted tokens, registers what completed, then releases
 * (LIFO) the unassigned blocks beyond one generation block (none once the
 * budget is spent). KVBM_EACCEPTED when @n exceeds the scheduled count. */
KVBM_API int kvbm_sched_apply_speculative(struct kvbm_sched *s, const uint32_t *accepted,
					  size_t n, struct kvbm_seq_error *err);
/* From any scheduled state: releases (LIFO) exactly the blocks that
 * schedule allocated, back to Idle. KVBM_ESEQSTATE from Idle. */
KVBM_API int kvbm_sched_revert_schedule(struct kvbm_sched *s, struct kvbm_seq_error *err);
/* Idle only (KVBM_ESEQSTATE): releases up to @n unassigned blocks, LIFO.
 * Returns how many. */
KVBM_API long kvbm_sched_drop_unassigned(struct kvbm_sched *s, size_t n,
					 struct kvbm_seq_error *err);
/* Idle only: gives every block back (preemption). */
KVBM_API int kvbm_sched_release(struct kvbm_sched *s, struct kvbm_seq_error *err);
/* Idle only: kvbm_request_reacquire(). Returns 1 or 0 (failed, holds
 * nothing), or a negative code. */
KVBM_API int kvbm_sched_reacquire(struct kvbm_sched *s, struct kvbm_seq_error *err);
/* Idle only: appends tokens whose KV is not computed (dangling).
 * KVBM_EAPPEND when they exceed the budget left (nothing appended). */
KVBM_API int kvbm_sched_append_tokens(struct kvbm_sched *s, const uint32_t *tokens, size_t n,
				      struct kvbm_seq_error *err);
KVBM_API struct kvbm_sched_state kvbm_sched_state(const struct kvbm_sched *s);
KVBM_API size_t kvbm_sched_prefill_position(const struct kvbm_sched *s);
KVBM_API int kvbm_sched_is_prefill_complete(const struct kvbm_sched *s);
KVBM_API size_t kvbm_sched_kv_position(const struct kvbm_sched *s);
/* total - kv_position: tokens whose KV is not computed yet. */
KVBM_API size_t kvbm_sched_tail_tokens(const struct kvbm_sched *s);
/* The request inside, for its counters (kvbm_request_*; do not free it). */
KVBM_API const struct kvbm_request *kvbm_sched_request(const struct kvbm_sched *s);

#ifdef __cplusplus
}
#endif
#endif /* KVBM_SEQUENCE_H */
