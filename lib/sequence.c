/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sequence.c - BlockSequence, ExternalBlockAssignments,
 * LogicalBlockAssignments and the zip functions (kvbm_sequence.h).
 *
 * Both assignment kinds keep the reference's three ordered collections
 * (an IndexMap each): here a deque per collection plus one id set over
 * all three, so that the duplicate checks cost O(1) an id rather than a
 * scan of everything the request holds (a 4,096-token prompt holds 256).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvbm_sequence.h"
#include "seqint.h"

/* ---- error details --------------------------------------------------------- */

void seq_err(struct kvbm_seq_error *e, int code, uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
	if (!e)
		return;
	memset(e, 0, sizeof(*e));
	e->code = code;
	e->a = a;
	e->b = b;
	e->c = c;
	e->d = d;
}

int kvbm_seq_error_format(const struct kvbm_seq_error *e, char *buf, size_t len)
{
	const char *st = e ? kvbm_sched_state_name(e->state) : "";

	if (!e)
		return snprintf(buf, len, "no error");
	switch (e->code) {
	case KVBM_EORDER:
		return snprintf(buf, len,
				"ordering violation: known block_id %llu at index %llu appeared after "
				"new block_id %llu at index %llu",
				(unsigned long long)e->a, (unsigned long long)e->c,
				(unsigned long long)e->b, (unsigned long long)e->d);
	case KVBM_EPOSITION:
		return snprintf(buf, len, "position mismatch for block_id %llu: expected %llu, actual %llu",
				(unsigned long long)e->c, (unsigned long long)e->a,
				(unsigned long long)e->b);
	case KVBM_EDUPID:
		return snprintf(buf, len, "duplicate block_id %llu already present",
				(unsigned long long)e->a);
	case KVBM_EHASHMISMATCH:
		return snprintf(buf, len,
				"sequence hash mismatch at position %llu: expected %016llx%016llx, got "
				"%016llx%016llx",
				(unsigned long long)e->a, (unsigned long long)e->expected_hash.hi,
				(unsigned long long)e->expected_hash.lo,
				(unsigned long long)e->actual_hash.hi,
				(unsigned long long)e->actual_hash.lo);
	case KVBM_ENOTIDLE:
		return snprintf(buf, len, "expected Idle state, got %s", st);
	case KVBM_EOVERRUN:
		return snprintf(buf, len, "prefill overrun: position %llu + %llu > %llu",
				(unsigned long long)e->a, (unsigned long long)e->b,
				(unsigned long long)e->c);
	case KVBM_EPREFILLPENDING:
		return snprintf(buf, len, "prefill not yet complete (position %llu < %llu)",
				(unsigned long long)e->a, (unsigned long long)e->b);
	case -ENOSPC:
		return snprintf(buf, len, "allocation failed: needed %llu blocks",
				(unsigned long long)e->a);
	case KVBM_EGENDONE:
		return snprintf(buf, len, "generation complete: %llu >= %llu",
				(unsigned long long)e->a, (unsigned long long)e->b);
	case KVBM_EDANGLING:
		return snprintf(buf, len, "expected %llu dangling token(s), got %llu",
				(unsigned long long)e->a, (unsigned long long)e->b);
	case KVBM_ESEQSTATE:
		return snprintf(buf, len, "expected %s, got %s", e->expected ? e->expected : "?", st);
	case KVBM_EACCEPTED:
		return snprintf(buf, len, "accepted %llu tokens exceeds scheduled %llu",
				(unsigned long long)e->a, (unsigned long long)e->b);
	case KVBM_EAPPEND:
		return snprintf(buf, len, "append requested %llu tokens but only %llu remain",
				(unsigned long long)e->a, (unsigned long long)e->b);
	default:
		return snprintf(buf, len, "%s", kvbm_strerror(e->code));
	}
}

/* ---- BlockSequence ----------------------------------------------------------- */

struct kvbm_bseq {
	uint32_t block_size;
	uint64_t salt;
	uint32_t *tokens;
	size_t ntokens, cap_tokens;
	struct kvbm_block_hashes *blocks;
	size_t nblocks, cap_blocks;
};

static int valid_block_size(uint32_t bs)
{
	return bs && bs <= 1024 && !(bs & (bs - 1));
}

/* Hashes blocks [from, to) of s->tokens, each chained to the one before. */
static int bseq_hash(struct kvbm_bseq *s, size_t from, size_t to)
{
	if (from == 0 && to > 1) /* the bulk path: one call, the fast hasher */
		return kvbm_hash_tokens(s->tokens, to * s->block_size, s->block_size, s->salt,
					s->blocks, to) < 0 ? -ERANGE : 0;
	for (size_t i = from; i < to; i++) {
		struct kvbm_block_hashes *b = &s->blocks[i];
		b->block_hash = kvbm_block_hash(s->tokens + i * s->block_size, s->block_size, s->salt);
		if (i == 0) {
			b->seq_hash = b->block_hash;
			if (kvbm_plh_make(b->seq_hash, NULL, 0, &b->plh) < 0)
				return -ERANGE;
		} else {
			uint64_t parent = s->blocks[i - 1].seq_hash;
			b->seq_hash = kvbm_chain_hash(parent, b->block_hash);
			if (kvbm_plh_make(b->seq_hash, &parent, (uint32_t)i, &b->plh) < 0)
				return -ERANGE;
		}
	}
	return 0;
}

int kvbm_bseq_new(const uint32_t *tokens, size_t n, uint32_t block_size, uint64_t salt,
		  struct kvbm_bseq **out)
{
	if (!out || !valid_block_size(block_size) || (n && !tokens))
		return -EINVAL;
	struct kvbm_bseq *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->block_size = block_size;
	s->salt = salt;
	int r = kvbm_bseq_extend(s, tokens, n, NULL);
	if (r < 0) {
		kvbm_bseq_free(s);
		return r;
	}
	*out = s;
	return 0;
}

void kvbm_bseq_free(struct kvbm_bseq *s)
{
	if (!s)
		return;
	free(s->tokens);
	free(s->blocks);
	free(s);
}

uint32_t kvbm_bseq_block_size(const struct kvbm_bseq *s)
{
	return s->block_size;
}

size_t kvbm_bseq_total_tokens(const struct kvbm_bseq *s)
{
	return s->ntokens;
}

size_t kvbm_bseq_num_blocks(const struct kvbm_bseq *s)
{
	return s->nblocks;
}

const uint32_t *kvbm_bseq_tokens(const struct kvbm_bseq *s)
{
	return s->tokens;
}

const struct kvbm_block_hashes *kvbm_bseq_blocks(const struct kvbm_bseq *s)
{
	return s->blocks;
}

size_t kvbm_bseq_sequence_hashes(const struct kvbm_bseq *s, struct kvbm_plh *out, size_t max)
{
	for (size_t i = 0; i < s->nblocks && i < max; i++)
		out[i] = s->blocks[i].plh;
	return s->nblocks;
}

int kvbm_bseq_extend(struct kvbm_bseq *s, const uint32_t *tokens, size_t n,
		     struct kvbm_range *completed)
{
	if (!s || (n && !tokens))
		return -EINVAL;
	size_t total = s->ntokens + n, nblocks = total / s->block_size, before = s->nblocks;
	if (nblocks > (size_t)KVBM_PLH_MAX_POSITION + 1)
		return -ERANGE;
	if (kvbm_grow((void **)&s->tokens, &s->cap_tokens, total, sizeof(*s->tokens)) < 0 ||
	    kvbm_grow((void **)&s->blocks, &s->cap_blocks, nblocks, sizeof(*s->blocks)) < 0)
		return -ENOMEM;
	if (n)
		memcpy(s->tokens + s->ntokens, tokens, n * sizeof(*tokens));
	int r = bseq_hash(s, before, nblocks);
	if (r < 0)
		return r;
	s->ntokens = total;
	s->nblocks = nblocks;
	if (completed) {
		completed->start = before;
		completed->end = nblocks;
	}
	return 0;
}

int kvbm_bseq_append(struct kvbm_bseq *s, uint32_t token, size_t *index)
{
	struct kvbm_range c;

	/* a decode step appends one token: most complete no block */
	if (s && s->ntokens < s->cap_tokens && (s->ntokens + 1) % s->block_size) {
		s->tokens[s->ntokens++] = token;
		return 0;
	}
	int r = kvbm_bseq_extend(s, &token, 1, &c);

	if (r < 0)
		return r;
	if (c.end == c.start)
		return 0;
	if (index)
		*index = c.start;
	return 1;
}

int kvbm_bseq_truncate(struct kvbm_bseq *s, size_t ntokens)
{
	if (!s)
		return -EINVAL;
	if (ntokens > s->ntokens)
		return -ERANGE;
	s->ntokens = ntokens;
	s->nblocks = ntokens / s->block_size; /* the hashes of a prefix never change */
	return 0;
}

/* ---- an id set over the three collections --------------------------------------- */

/* Linear probing with backward-shift deletion (no tombstones), so that a
 * request that stages and drops for hours never degrades. */
struct idset {
	uint64_t *keys;
	uint8_t *used;
	size_t cap, n; /* cap a power of two, or 0 */
};

static size_t id_slot(uint64_t k, size_t cap)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return (size_t)k & (cap - 1);
}

static int idset_has(const struct idset *s, uint64_t k)
{
	if (!s->cap)
		return 0;
	for (size_t i = id_slot(k, s->cap);; i = (i + 1) & (s->cap - 1)) {
		if (!s->used[i])
			return 0;
		if (s->keys[i] == k)
			return 1;
	}
}

static void idset_put_nogrow(struct idset *s, uint64_t k)
{
	size_t i = id_slot(k, s->cap);
	while (s->used[i]) {
		if (s->keys[i] == k)
			return;
		i = (i + 1) & (s->cap - 1);
	}
	s->used[i] = 1;
	s->keys[i] = k;
	s->n++;
}

/* Makes room for @extra more keys (load at most 1/2). */
static int idset_reserve(struct idset *s, size_t extra)
{
	size_t need = s->n + extra, cap = s->cap ? s->cap : 16;
	while (need * 2 > cap)
		cap *= 2;
	if (cap == s->cap)
		return 0;
	struct idset ns = { .cap = cap };
	ns.keys = malloc(cap * sizeof(*ns.keys));
	ns.used = calloc(cap, 1);
	if (!ns.keys || !ns.used) {
		free(ns.keys);
		free(ns.used);
		return -ENOMEM;
	}
	for (size_t i = 0; i < s->cap; i++)
		if (s->used[i])
			idset_put_nogrow(&ns, s->keys[i]);
	free(s->keys);
	free(s->used);
	*s = ns;
	return 0;
}

static void idset_del(struct idset *s, uint64_t k)
{
	if (!s->cap)
		return;
	size_t m = s->cap - 1, i = id_slot(k, s->cap);
	while (s->used[i] && s->keys[i] != k)
		i = (i + 1) & m;
	if (!s->used[i])
		return;
	s->used[i] = 0;
	s->n--;
	/* shift back every later key of the run that probed past the hole */
	for (size_t j = (i + 1) & m; s->used[j]; j = (j + 1) & m) {
		size_t h = id_slot(s->keys[j], s->cap);
		if (((j - h) & m) >= ((j - i) & m)) {
			s->keys[i] = s->keys[j];
			s->used[i] = 1;
			s->used[j] = 0;
			i = j;
		}
	}
}

static void idset_clear(struct idset *s)
{
	if (s->cap)
		memset(s->used, 0, s->cap);
	s->n = 0;
}

static void idset_free(struct idset *s)
{
	free(s->keys);
	free(s->used);
	memset(s, 0, sizeof(*s));
}

/*
 * Whether @n ids (read through @get) collide with @set or with each other;
 * the first that does goes to *@dup. Uses @scratch, an empty set.
 */
static int find_dup(const struct idset *set, struct idset *scratch, size_t n,
		    uint64_t (*get)(const void *, size_t), const void *arg, uint64_t *dup)
{
	if (idset_reserve(scratch, n) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		uint64_t id = get(arg, i);
		if (idset_has(set, id) || idset_has(scratch, id)) {
			*dup = id;
			idset_clear(scratch);
			return 1;
		}
		idset_put_nogrow(scratch, id);
	}
	idset_clear(scratch);
	return 0;
}

/* ---- a deque of entries ------------------------------------------------------------ */

struct entry {
	uint64_t id;
	struct kvbm_block blk; /* LogicalBlockAssignments only */
	struct kvbm_plh hash;  /* staged, assigned */
};

struct deque {
	struct entry *v;
	size_t head, len, cap;
};

static struct entry *dq_at(const struct deque *d, size_t i)
{
	return i < d->len ? &d->v[d->head + i] : NULL;
}

static int dq_reserve(struct deque *d, size_t extra)
{
	if (d->head + d->len + extra <= d->cap)
		return 0;
	if (d->head) { /* slide to the front before growing */
		memmove(d->v, d->v + d->head, d->len * sizeof(*d->v));
		d->head = 0;
	}
	return kvbm_grow((void **)&d->v, &d->cap, d->len + extra, sizeof(*d->v));
}

/* After dq_reserve(). */
static void dq_push(struct deque *d, const struct entry *e)
{
	d->v[d->head + d->len++] = *e;
}

static struct entry dq_shift(struct deque *d)
{
	struct entry e = d->v[d->head++];
	if (--d->len == 0)
		d->head = 0;
	return e;
}

/* Puts back entries taken by dq_shift (only right after, so head has room). */
static void dq_unshift(struct deque *d, const struct entry *e)
{
	if (!d->head) {
		memmove(d->v + 1, d->v, d->len * sizeof(*d->v));
		d->head = 1;
	}
	d->v[--d->head] = *e;
	d->len++;
}

static struct entry dq_pop(struct deque *d)
{
	struct entry e = d->v[d->head + --d->len];
	if (!d->len)
		d->head = 0;
	return e;
}

static void dq_clear(struct deque *d)
{
	d->head = d->len = 0;
}

/* ---- ExternalBlockAssignments --------------------------------------------------------- */

struct kvbm_xassign {
	struct deque assigned, staged, unassigned;
	struct idset ids, scratch;
	size_t offset;
};

int kvbm_xassign_new(size_t offset, struct kvbm_xassign **out)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	(*out)->offset = offset;
	return 0;
}

void kvbm_xassign_free(struct kvbm_xassign *x)
{
	if (!x)
		return;
	free(x->assigned.v);
	free(x->staged.v);
	free(x->unassigned.v);
	idset_free(&x->ids);
	idset_free(&x->scratch);
	free(x);
}

size_t kvbm_xassign_offset(const struct kvbm_xassign *x)
{
	return x->offset;
}

size_t kvbm_xassign_assigned_count(const struct kvbm_xassign *x)
{
	return x->assigned.len;
}

size_t kvbm_xassign_staged_count(const struct kvbm_xassign *x)
{
	return x->staged.len;
}

size_t kvbm_xassign_unassigned_count(const struct kvbm_xassign *x)
{
	return x->unassigned.len;
}

int kvbm_xassign_contains(const struct kvbm_xassign *x, uint64_t id)
{
	return idset_has(&x->ids, id);
}

static int get_entry(const struct deque *d, size_t i, uint64_t *id, struct kvbm_plh *hash)
{
	const struct entry *e = dq_at(d, i);
	if (!e)
		return 0;
	if (id)
		*id = e->id;
	if (hash)
		*hash = e->hash;
	return 1;
}

int kvbm_xassign_get_assigned(const struct kvbm_xassign *x, size_t i, uint64_t *id,
			      struct kvbm_plh *hash)
{
	return get_entry(&x->assigned, i, id, hash);
}

int kvbm_xassign_get_staged(const struct kvbm_xassign *x, size_t i, uint64_t *id,
			    struct kvbm_plh *hash)
{
	return get_entry(&x->staged, i, id, hash);
}

int kvbm_xassign_get_unassigned(const struct kvbm_xassign *x, size_t i, uint64_t *id)
{
	return get_entry(&x->unassigned, i, id, NULL);
}

void kvbm_xassign_clear(struct kvbm_xassign *x)
{
	dq_clear(&x->assigned);
	dq_clear(&x->staged);
	dq_clear(&x->unassigned);
	idset_clear(&x->ids);
}

long kvbm_xassign_take_staged(struct kvbm_xassign *x, uint64_t *ids, struct kvbm_plh *hashes,
			      size_t max)
{
	size_t n = x->staged.len;
	if (n > max)
		return -ERANGE;
	for (size_t i = 0; i < n; i++) {
		struct entry e = dq_shift(&x->staged);
		idset_del(&x->ids, e.id);
		if (ids)
			ids[i] = e.id;
		if (hashes)
			hashes[i] = e.hash;
	}
	return (long)n;
}

size_t kvbm_xassign_next_position(const struct kvbm_xassign *x)
{
	return x->offset + x->assigned.len + x->staged.len;
}

struct kvbm_range kvbm_xassign_assigned_positions(const struct kvbm_xassign *x)
{
	return (struct kvbm_range){ x->offset, x->offset + x->assigned.len };
}

struct kvbm_range kvbm_xassign_staged_positions(const struct kvbm_xassign *x)
{
	size_t start = x->offset + x->assigned.len;
	return (struct kvbm_range){ start, start + x->staged.len };
}

struct kvbm_range kvbm_xassign_pending_positions(const struct kvbm_xassign *x)
{
	size_t start = kvbm_xassign_next_position(x);
	return (struct kvbm_range){ start, start + x->unassigned.len };
}

int kvbm_xassign_get_at_position(const struct kvbm_xassign *x, size_t pos, uint64_t *id,
				 struct kvbm_plh *hash)
{
	if (pos < x->offset)
		return 0;
	return get_entry(&x->assigned, pos - x->offset, id, hash);
}

int kvbm_xassign_get_pending_at_position(const struct kvbm_xassign *x, size_t pos, uint64_t *id)
{
	size_t start = kvbm_xassign_next_position(x);
	if (pos < start)
		return 0;
	return get_entry(&x->unassigned, pos - start, id, NULL);
}

int kvbm_xassign_extend_block_ids(struct kvbm_xassign *x, const uint64_t *ids, size_t n,
				  struct kvbm_seq_error *err)
{
	size_t first_new = SIZE_MAX;
	int r;

	if (!x || (n && !ids))
		return -EINVAL;
	/* phase 1: validate, so that a bad list changes nothing */
	if ((r = idset_reserve(&x->scratch, n)) < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		if (idset_has(&x->ids, ids[i])) {
			if (first_new != SIZE_MAX) {
				idset_clear(&x->scratch);
				seq_err(err, KVBM_EORDER, ids[i], ids[first_new], i, first_new);
				return KVBM_EORDER;
			}
			continue;
		}
		if (idset_has(&x->scratch, ids[i])) {
			idset_clear(&x->scratch);
			seq_err(err, KVBM_EDUPID, ids[i], 0, 0, 0);
			return KVBM_EDUPID;
		}
		idset_put_nogrow(&x->scratch, ids[i]);
		if (first_new == SIZE_MAX)
			first_new = i;
	}
	size_t nnew = x->scratch.n;
	idset_clear(&x->scratch);
	if (!nnew)
		return 0;
	if ((r = dq_reserve(&x->unassigned, nnew)) < 0 || (r = idset_reserve(&x->ids, nnew)) < 0)
		return r;
	/* phase 2: commit; the new ids are exactly ids[first_new..] */
	for (size_t i = first_new; i < n; i++) {
		struct entry e = { .id = ids[i] };
		dq_push(&x->unassigned, &e);
		idset_put_nogrow(&x->ids, ids[i]);
	}
	return 0;
}

static uint64_t get_u64(const void *arg, size_t i)
{
	return ((const uint64_t *)arg)[i];
}

long kvbm_xassign_extend_assigned(struct kvbm_xassign *x, const uint64_t *ids,
				  const struct kvbm_plh *hashes, size_t n, struct kvbm_seq_error *err)
{
	uint64_t dup;
	int r;

	if (!x || (n && (!ids || !hashes)))
		return -EINVAL;
	if ((r = find_dup(&x->ids, &x->scratch, n, get_u64, ids, &dup)) != 0) {
		if (r < 0)
			return r;
		seq_err(err, KVBM_EDUPID, dup, 0, 0, 0);
		return KVBM_EDUPID;
	}
	if ((r = dq_reserve(&x->assigned, n)) < 0 || (r = idset_reserve(&x->ids, n)) < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct entry e = { .id = ids[i], .hash = hashes[i] };
		dq_push(&x->assigned, &e);
		idset_put_nogrow(&x->ids, ids[i]);
	}
	return (long)n;
}

int kvbm_xassign_stage_pending(struct kvbm_xassign *x, const struct kvbm_block_hashes *blocks,
			       size_t n, struct kvbm_range *staged, struct kvbm_seq_error *err)
{
	size_t start_idx, start_pos, avail, k;
	int r;

	if (!x || (n && !blocks))
		return -EINVAL;
	start_idx = x->staged.len;
	start_pos = kvbm_xassign_next_position(x);
	avail = n > start_pos ? n - start_pos : 0;
	k = avail < x->unassigned.len ? avail : x->unassigned.len;
	for (size_t i = 0; i < k; i++) {
		uint32_t actual = kvbm_plh_position(blocks[start_pos + i].plh);
		if (actual != start_pos + i) {
			seq_err(err, KVBM_EPOSITION, start_pos + i, actual, dq_at(&x->unassigned, i)->id,
				0);
			return KVBM_EPOSITION;
		}
	}
	if ((r = dq_reserve(&x->staged, k)) < 0)
		return r;
	for (size_t i = 0; i < k; i++) {
		struct entry e = dq_shift(&x->unassigned);
		e.hash = blocks[start_pos + i].plh;
		dq_push(&x->staged, &e);
	}
	if (staged)
		*staged = (struct kvbm_range){ start_idx, x->staged.len };
	return 0;
}

struct kvbm_range kvbm_xassign_commit_staged(struct kvbm_xassign *x)
{
	size_t start = x->assigned.len;

	/* staged entries only move: on -ENOMEM they stay staged */
	if (dq_reserve(&x->assigned, x->staged.len) == 0)
		while (x->staged.len) {
			struct entry e = dq_shift(&x->staged);
			dq_push(&x->assigned, &e);
		}
	return (struct kvbm_range){ start, x->assigned.len };
}

int kvbm_xassign_assign_pending(struct kvbm_xassign *x, const struct kvbm_block_hashes *blocks,
				size_t n, struct kvbm_range *assigned, struct kvbm_seq_error *err)
{
	int r;

	if (!x)
		return -EINVAL;
	/* room first, so that the commit after a successful stage cannot fail */
	if ((r = dq_reserve(&x->assigned, x->staged.len + x->unassigned.len)) < 0)
		return r;
	if ((r = kvbm_xassign_stage_pending(x, blocks, n, NULL, err)) < 0)
		return r;
	struct kvbm_range a = kvbm_xassign_commit_staged(x);
	if (assigned)
		*assigned = a;
	return 0;
}

static size_t zip(const struct kvbm_xassign *a, const struct kvbm_xassign *b, int pending,
		  struct kvbm_zip *out, size_t max)
{
	struct kvbm_range ra = kvbm_xassign_assigned_positions(a);
	struct kvbm_range rb = pending ? kvbm_xassign_pending_positions(b)
				       : kvbm_xassign_assigned_positions(b);
	size_t start = ra.start > rb.start ? ra.start : rb.start;
	size_t end = ra.end < rb.end ? ra.end : rb.end;

	if (start >= end)
		return 0;
	for (size_t pos = start, k = 0; pos < end && k < max; pos++, k++) {
		out[k].position = pos;
		out[k].a = dq_at(&a->assigned, pos - a->offset)->id;
		out[k].b = dq_at(pending ? &b->unassigned : &b->assigned, pos - rb.start)->id;
	}
	return end - start;
}

size_t kvbm_zip_assigned(const struct kvbm_xassign *a, const struct kvbm_xassign *b,
			 struct kvbm_zip *out, size_t max)
{
	return zip(a, b, 0, out, max);
}

size_t kvbm_zip_assigned_pending(const struct kvbm_xassign *src, const struct kvbm_xassign *dst,
				 struct kvbm_zip *out, size_t max)
{
	return zip(src, dst, 1, out, max);
}

/* ---- LogicalBlockAssignments ----------------------------------------------------------- */

struct kvbm_lassign {
	struct kvbm_pool *pool;
	struct deque assigned, staged, unassigned;
	struct idset ids, scratch;
	struct kvbm_block *tmp; /* batches for the pool calls */
	struct kvbm_plh *tmph;
	size_t cap_tmp, cap_tmph;
};

int kvbm_lassign_new(struct kvbm_pool *pool, struct kvbm_lassign **out)
{
	if (!pool || !out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	(*out)->pool = pool;
	return 0;
}

void kvbm_lassign_free(struct kvbm_lassign *l)
{
	if (!l)
		return;
	kvbm_lassign_clear(l);
	free(l->assigned.v);
	free(l->staged.v);
	free(l->unassigned.v);
	free(l->tmp);
	free(l->tmph);
	idset_free(&l->ids);
	idset_free(&l->scratch);
	free(l);
}

size_t kvbm_lassign_assigned_count(const struct kvbm_lassign *l)
{
	return l->assigned.len;
}

size_t kvbm_lassign_staged_count(const struct kvbm_lassign *l)
{
	return l->staged.len;
}

size_t kvbm_lassign_unassigned_count(const struct kvbm_lassign *l)
{
	return l->unassigned.len;
}

int kvbm_lassign_is_empty(const struct kvbm_lassign *l)
{
	return !l->assigned.len && !l->staged.len && !l->unassigned.len;
}

int kvbm_lassign_contains(const struct kvbm_lassign *l, uint32_t id)
{
	return idset_has(&l->ids, id);
}

static int get_block(const struct deque *d, size_t i, struct kvbm_block *blk,
		     struct kvbm_plh *hash)
{
	const struct entry *e = dq_at(d, i);
	if (!e)
		return 0;
	if (blk)
		*blk = e->blk;
	if (hash)
		*hash = e->hash;
	return 1;
}

int kvbm_lassign_get_assigned(const struct kvbm_lassign *l, size_t i, struct kvbm_block *blk,
			      struct kvbm_plh *hash)
{
	return get_block(&l->assigned, i, blk, hash);
}

int kvbm_lassign_get_staged(const struct kvbm_lassign *l, size_t i, struct kvbm_block *blk,
			    struct kvbm_plh *hash)
{
	return get_block(&l->staged, i, blk, hash);
}

int kvbm_lassign_get_unassigned(const struct kvbm_lassign *l, size_t i, struct kvbm_block *blk)
{
	return get_block(&l->unassigned, i, blk, NULL);
}

size_t kvbm_lassign_block_ids(const struct kvbm_lassign *l, uint32_t *out, size_t max)
{
	const struct deque *ds[3] = { &l->assigned, &l->staged, &l->unassigned };
	size_t k = 0;

	for (int d = 0; d < 3; d++)
		for (size_t i = 0; i < ds[d]->len; i++, k++)
			if (k < max)
				out[k] = (uint32_t)dq_at(ds[d], i)->blk.id;
	return k;
}

static uint64_t get_blk_id(const void *arg, size_t i)
{
	return ((const struct kvbm_block *)arg)[i].id;
}

/* Validates @n new blocks for @d and makes room; 0, KVBM_EDUPID or -ENOMEM. */
static int lassign_admit(struct kvbm_lassign *l, struct deque *d, const struct kvbm_block *blks,
			 size_t n, struct kvbm_seq_error *err)
{
	uint64_t dup;
	int r = find_dup(&l->ids, &l->scratch, n, get_blk_id, blks, &dup);

	if (r > 0) {
		seq_err(err, KVBM_EDUPID, dup, 0, 0, 0);
		return KVBM_EDUPID;
	}
	if (r < 0 || (r = dq_reserve(d, n)) < 0 || (r = idset_reserve(&l->ids, n)) < 0)
		return r;
	return 0;
}

static void lassign_put(struct kvbm_lassign *l, struct deque *d, const struct kvbm_block *blk,
			const struct kvbm_plh *hash)
{
	struct entry e = { .id = blk->id, .blk = *blk };
	if (hash)
		e.hash = *hash;
	dq_push(d, &e);
	idset_put_nogrow(&l->ids, blk->id);
}

long kvbm_lassign_extend_blocks(struct kvbm_lassign *l, const struct kvbm_block *blks, size_t n,
				struct kvbm_seq_error *err)
{
	int r;

	if (!l || (n && !blks))
		return -EINVAL;
	if ((r = lassign_admit(l, &l->unassigned, blks, n, err)) < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		lassign_put(l, &l->unassigned, &blks[i], NULL);
	return (long)n;
}

/* extend_blocks for blocks kvbm_allocate_blocks() just returned: they
 * cannot be in @l (every block of @l is held by this process, and an
 * allocation only hands out blocks nobody holds) nor repeat, so the
 * duplicate check is skipped (a request allocates on every schedule). */
int seq_lassign_add_allocated(struct kvbm_lassign *l, const struct kvbm_block *blks, size_t n)
{
	int r;

	if ((r = dq_reserve(&l->unassigned, n)) < 0 || (r = idset_reserve(&l->ids, n)) < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		lassign_put(l, &l->unassigned, &blks[i], NULL);
	return 0;
}

/* Room for @n assigned blocks, so that a request that knows its size does
 * not grow (and rehash) while it runs. The staged and unassigned queues
 * hold one schedule's blocks at a time: they grow to that on their own. */
int seq_lassign_reserve(struct kvbm_lassign *l, size_t n)
{
	int r;

	if ((r = dq_reserve(&l->assigned, n)) < 0 || (r = idset_reserve(&l->ids, n)) < 0)
		return r;
	return 0;
}

long kvbm_lassign_extend_assigned(struct kvbm_lassign *l, const struct kvbm_block *blks,
				  const struct kvbm_plh *hashes, size_t n, struct kvbm_seq_error *err)
{
	int r;

	if (!l || (n && !blks))
		return -EINVAL;
	if ((r = lassign_admit(l, &l->assigned, blks, n, err)) < 0)
		return r;
	if (!hashes) { /* read them all first: a stale handle changes nothing */
		if ((r = kvbm_grow((void **)&l->tmph, &l->cap_tmph, n, sizeof(*l->tmph))) < 0)
			return r;
		for (size_t i = 0; i < n; i++) {
			struct kvbm_block_info bi;
			if ((r = kvbm_block_info(l->pool, &blks[i], &bi)) < 0)
				return r;
			if (bi.state != KVBM_BLOCK_REGISTERED || !bi.holds)
				return KVBM_ESTATE;
			l->tmph[i] = bi.hash;
		}
		hashes = l->tmph;
	}
	for (size_t i = 0; i < n; i++)
		lassign_put(l, &l->assigned, &blks[i], &hashes[i]);
	return (long)n;
}

long kvbm_lassign_stage(struct kvbm_lassign *l, const struct kvbm_block_hashes *blocks, size_t n,
			uint32_t block_size)
{
	size_t k;
	int r;

	if (!l || (n && !blocks))
		return -EINVAL;
	k = n < l->unassigned.len ? n : l->unassigned.len;
	if (!k)
		return 0;
	if ((r = kvbm_grow((void **)&l->tmp, &l->cap_tmp, k, sizeof(*l->tmp))) < 0 ||
	    (r = kvbm_grow((void **)&l->tmph, &l->cap_tmph, k, sizeof(*l->tmph))) < 0 ||
	    (r = dq_reserve(&l->staged, k)) < 0)
		return r;
	for (size_t i = 0; i < k; i++) {
		l->tmp[i] = dq_at(&l->unassigned, i)->blk;
		l->tmph[i] = blocks[i].plh;
	}
	/* one pool call for the batch, all or nothing */
	if ((r = kvbm_stage_blocks(l->pool, l->tmp, l->tmph, (uint32_t)k, block_size, NULL)) < 0)
		return r;
	for (size_t i = 0; i < k; i++) {
		struct entry e = dq_shift(&l->unassigned);
		e.hash = blocks[i].plh;
		dq_push(&l->staged, &e);
	}
	return (long)k;
}

long kvbm_lassign_register(struct kvbm_lassign *l, const uint32_t *tokens)
{
	size_t k;
	int r;

	if (!l)
		return -EINVAL;
	k = l->staged.len;
	if (!k)
		return 0;
	if ((r = kvbm_grow((void **)&l->tmp, &l->cap_tmp, k, sizeof(*l->tmp))) < 0 ||
	    (r = dq_reserve(&l->assigned, k)) < 0)
		return r;
	for (size_t i = 0; i < k; i++)
		l->tmp[i] = dq_at(&l->staged, i)->blk;
	if ((r = kvbm_register_blocks_tokens(l->pool, l->tmp, (uint32_t)k, tokens)) < 0)
		return r;
	for (size_t i = 0; i < k; i++) {
		struct entry e = dq_shift(&l->staged);
		if (l->tmp[i].id != e.blk.id) { /* rejected as a duplicate: keyed by the primary */
			idset_del(&l->ids, e.id);
			e.id = l->tmp[i].id;
			idset_put_nogrow(&l->ids, e.id); /* a removal then an insert: room */
		}
		e.blk = l->tmp[i];
		dq_push(&l->assigned, &e);
	}
	return (long)k;
}

/* Puts the last @k entries of l->staged back at the front of unassigned
 * after a failed register (a request's apply undoing its stage). */
int seq_lassign_unstage_last(struct kvbm_lassign *l, size_t k)
{
	int r = 0;

	while (k-- && l->staged.len) {
		struct entry e = dq_pop(&l->staged);
		int u = kvbm_unstage_block(l->pool, &e.blk);
		if (u < 0 && !r)
			r = u;
		if (dq_reserve(&l->unassigned, 1) < 0) { /* cannot keep it: give it back */
			kvbm_release_blocks(l->pool, &e.blk, 1);
			idset_del(&l->ids, e.id);
			continue;
		}
		dq_unshift(&l->unassigned, &e);
	}
	return r;
}

int kvbm_lassign_pop_last_unassigned(struct kvbm_lassign *l, struct kvbm_block *out)
{
	if (!l || !l->unassigned.len)
		return 0;
	struct entry e = dq_pop(&l->unassigned);
	idset_del(&l->ids, e.id);
	if (out)
		*out = e.blk;
	else
		kvbm_release_blocks(l->pool, &e.blk, 1);
	return 1;
}

/*
 * Releases every block of @d in one pool call (a request's 272 blocks cost
 * one call, not 272). kvbm_release_blocks() stops at a bad handle, having
 * released the ones before it, and does not say which: retrying could
 * drop holds this process took elsewhere, so the rest are left to die with
 * the process (a bad handle of our own means the attachment is gone:
 * forked, reaped). Block by block only when the batch cannot be built.
 */
static int release_all(struct kvbm_lassign *l, struct deque *d)
{
	int first = 0;
	size_t n = d->len;

	if (n && n <= UINT32_MAX &&
	    kvbm_grow((void **)&l->tmp, &l->cap_tmp, n, sizeof(*l->tmp)) == 0) {
		for (size_t i = 0; i < n; i++)
			l->tmp[i] = dq_at(d, i)->blk;
		first = kvbm_release_blocks(l->pool, l->tmp, (uint32_t)n);
	} else {
		for (size_t i = 0; i < n; i++) {
			int r = kvbm_release_blocks(l->pool, &dq_at(d, i)->blk, 1);
			if (r < 0 && !first)
				first = r;
		}
	}
	dq_clear(d);
	return first;
}

int kvbm_lassign_clear(struct kvbm_lassign *l)
{
	if (!l)
		return -EINVAL;
	int a = release_all(l, &l->assigned);
	int b = release_all(l, &l->staged);
	int c = release_all(l, &l->unassigned);
	idset_clear(&l->ids);
	return a ? a : b ? b : c;
}

static long take(struct kvbm_lassign *l, struct deque *d, struct kvbm_block *blks,
		 struct kvbm_plh *hashes, size_t max)
{
	size_t n = d->len;

	if (!l || (n && !blks))
		return -EINVAL;
	if (n > max)
		return -ERANGE;
	for (size_t i = 0; i < n; i++) {
		struct entry e = dq_shift(d);
		idset_del(&l->ids, e.id);
		blks[i] = e.blk;
		if (hashes)
			hashes[i] = e.hash;
	}
	return (long)n;
}

long kvbm_lassign_take_assigned(struct kvbm_lassign *l, struct kvbm_block *blks,
				struct kvbm_plh *hashes, size_t max)
{
	return take(l, &l->assigned, blks, hashes, max);
}

long kvbm_lassign_take_staged(struct kvbm_lassign *l, struct kvbm_block *blks,
			      struct kvbm_plh *hashes, size_t max)
{
	return take(l, &l->staged, blks, hashes, max);
}

long kvbm_lassign_take_unassigned(struct kvbm_lassign *l, struct kvbm_block *blks, size_t max)
{
	return take(l, &l->unassigned, blks, NULL, max);
}
