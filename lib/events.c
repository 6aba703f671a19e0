/* SPDX-License-Identifier: Apache-2.0 */
/*
 * events.c - the event ring: every change of the set of registered
 * primaries, appended under the pool mutex by whoever makes it, and read
 * lock-free by readers that each keep their own cursor.
 *
 * Rules (shm/layout.h has the entry format):
 *  - the writer holds the pool mutex, so there is one writer at a time;
 *    it marks an entry busy, writes it, stores the entry's sequence number
 *    (release), then advances the head (release). It never waits for a
 *    reader: a slow reader is lapped, and finds out.
 *  - a reader at cursor c reads the entry only if the entry's seq word is
 *    c before and after it copies the fields (a seqlock per entry whose
 *    counter is the sequence number): anything else means the writer has
 *    lapped it, which is KVBM_EGAP, never a wrong or silently lost event.
 *  - a writer killed half-way leaves the entry busy and the head where it
 *    was: the next writer rewrites the same entry. Recovery appends RESYNC,
 *    since what it rebuilt may not match what the stream said.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "../shm/failpoint.h"

_Static_assert((int)KVBM_EVENT_STORED == (int)KVBM_SHM_EV_STORED &&
		       (int)KVBM_EVENT_REMOVED == (int)KVBM_SHM_EV_REMOVED &&
		       (int)KVBM_EVENT_RESYNC == (int)KVBM_SHM_EV_RESYNC,
	       "the public event kinds are the ring's");

static struct kvbm_shm_event *entry(const struct kvbm_pool *p, uint64_t seq)
{
	const struct kvbm_shm_events *ev = p->seg.events;
	/* our own geometry: the segment's copy is any peer's to overwrite */
	uint64_t i = seq & (p->ev_cap - 1);

	return (struct kvbm_shm_event *)((uint8_t *)ev + sizeof(*ev) + i * p->ev_entry_size);
}

void kvbm_events_setup(struct kvbm_pool *p)
{
	const struct kvbm_shm_config *cfg = &p->seg.cfg;

	p->ev_cap = cfg->event_log2 ? 1u << cfg->event_log2 : 0;
	p->ev_entry_size = kvbm_event_entry_size(cfg);
}

void kvbm_events_append(struct kvbm_pool *p, uint32_t kind, struct kvbm_plh key,
			const uint32_t *tokens)
{
	struct kvbm_shm_events *ev = p->seg.events;

	if (!ev)
		return;
	/* relaxed: only mutex holders write the head */
	uint64_t seq = __atomic_load_n(&ev->head, __ATOMIC_RELAXED);
	struct kvbm_shm_event *e = entry(p, seq);
	uint32_t ntok = tokens ? p->block_size : 0;

	/* busy first, and the fence keeps the field stores after it: a
	 * reader copying the lapped event sees its seq change (pairs with
	 * the reader's acquire field loads and seq re-read) */
	__atomic_store_n(&e->seq, KVBM_SHM_EV_SEQ_BUSY, __ATOMIC_RELAXED);
	kvbm_key_store_fence();
	__atomic_store_n(&e->kind, kind, __ATOMIC_RELAXED);
	__atomic_store_n(&e->ntok, ntok, __ATOMIC_RELAXED);
	__atomic_store_n(&e->key_hi, key.hi, __ATOMIC_RELAXED);
	__atomic_store_n(&e->key_lo, key.lo, __ATOMIC_RELAXED);
	for (uint32_t i = 0; i < ntok; i++)
		__atomic_store_n(&e->tokens[i], tokens[i], __ATOMIC_RELAXED);
	KVBM_FAILPOINT("events.append.written");
	/* release: a reader that acquire-loads this seq sees the fields */
	__atomic_store_n(&e->seq, seq, __ATOMIC_RELEASE);
	/* release: a reader that acquire-loads the head finds the entry
	 * published (pairs with kvbm_events_read's head load) */
	__atomic_store_n(&ev->head, seq + 1, __ATOMIC_RELEASE);
}

void kvbm_events_resync(struct kvbm_pool *p)
{
	if (!p->seg.events)
		return;
	kvbm_events_append(p, KVBM_SHM_EV_RESYNC, (struct kvbm_plh){0, 0}, NULL);
	p->seg.events->resyncs++;
}

static uint32_t *kept(const struct kvbm_pool *p, uint32_t s)
{
	return p->seg.tokens + (uint64_t)s * kvbm_tokens_stride(&p->seg.cfg);
}

void kvbm_events_keep_tokens(struct kvbm_pool *p, uint32_t s, uint64_t gen,
			     const uint32_t *tokens)
{
	if (!p->seg.tokens)
		return;
	uint32_t *t = kept(p, s);
	/* the tag last: a snapshot reads the tag, then the ids, then the
	 * state word again; the REGISTERED release store that follows this
	 * call publishes all of it (pairs with the snapshot's acquire load) */
	for (uint32_t i = 0; tokens && i < p->block_size; i++)
		__atomic_store_n(&t[1 + i], tokens[i], __ATOMIC_RELAXED);
	KVBM_FAILPOINT("events.keep.ids"); /* the ids written, the tag not yet */
	__atomic_store_n(&t[0], tokens ? (uint32_t)gen + 1 : 0, __ATOMIC_RELAXED);
}

static int events_ok(struct kvbm_pool *p)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	return p->seg.events ? 0 : -EOPNOTSUPP;
}

int kvbm_events_head(struct kvbm_pool *p, uint64_t *head)
{
	int r = events_ok(p);

	if (r < 0)
		return r;
	if (!head)
		return -EINVAL;
	/* acquire: pairs with the writer's release of the head */
	*head = __atomic_load_n(&p->seg.events->head, __ATOMIC_ACQUIRE);
	return 0;
}

/*
 * Copies entry @seq into *@out and its tokens to @tok (room for @room).
 * Returns 1, 0 (the tokens do not fit), or KVBM_EGAP (lapped).
 */
static int read_one(struct kvbm_pool *p, uint64_t seq, struct kvbm_event *out, uint32_t *tok,
		    size_t room)
{
	const struct kvbm_shm_event *e = entry(p, seq);

	/* acquire: pairs with the writer's release of seq; the field loads
	 * below are acquire too, so the re-read of seq stays after them */
	if (__atomic_load_n(&e->seq, __ATOMIC_ACQUIRE) != seq)
		return KVBM_EGAP;
	uint32_t kind = __atomic_load_n(&e->kind, __ATOMIC_ACQUIRE);
	uint32_t ntok = __atomic_load_n(&e->ntok, __ATOMIC_ACQUIRE);
	struct kvbm_plh key = {__atomic_load_n(&e->key_hi, __ATOMIC_ACQUIRE),
			       __atomic_load_n(&e->key_lo, __ATOMIC_ACQUIRE)};
	if (ntok > p->block_size)
		ntok = 0; /* a peer's bytes: checked below by the seq re-read anyway */
	if (ntok > room)
		return 0;
	for (uint32_t i = 0; i < ntok; i++)
		tok[i] = __atomic_load_n(&e->tokens[i], __ATOMIC_ACQUIRE);
	if (__atomic_load_n(&e->seq, __ATOMIC_RELAXED) != seq)
		return KVBM_EGAP; /* rewritten while we copied */
	*out = (struct kvbm_event){.seq = seq, .kind = kind, .ntokens = ntok, .hash = key,
				   .tokens = ntok ? tok : NULL};
	return 1;
}

long kvbm_events_read(struct kvbm_pool *p, uint64_t *cursor, struct kvbm_event *out, size_t max,
		      uint32_t *tokens, size_t ntokens)
{
	int r = events_ok(p);

	if (r < 0)
		return r;
	if (!cursor || (max && !out) || (ntokens && !tokens))
		return -EINVAL;
	/* acquire: pairs with the writer's release of the head */
	uint64_t head = __atomic_load_n(&p->seg.events->head, __ATOMIC_ACQUIRE);
	uint64_t c = *cursor;
	size_t n = 0, used = 0;

	if (c > head)
		return -ERANGE;
	if (head - c > p->ev_cap)
		return KVBM_EGAP;
	while (n < max && c < head) {
		r = read_one(p, c, &out[n], tokens + used, ntokens - used);
		if (r == KVBM_EGAP && n == 0)
			return KVBM_EGAP;
		if (r <= 0)
			break; /* a gap after some events: they are returned first */
		if (out[n].kind > KVBM_SHM_EV_RESYNC) {
			/* bytes no writer of ours wrote: treat as lost */
			if (n == 0)
				return KVBM_EGAP;
			break;
		}
		used += out[n].ntokens;
		n++;
		c++;
	}
	*cursor = c;
	return (long)n;
}

/* ---- snapshots ----------------------------------------------------------------- */

static int by_chain(const struct kvbm_plh *x, const struct kvbm_plh *y)
{
	uint32_t px = kvbm_plh_position(*x), py = kvbm_plh_position(*y);

	if (px != py)
		return px < py ? -1 : 1;
	if (x->hi != y->hi)
		return x->hi < y->hi ? -1 : 1;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* qsort_r's comparison of two indices into the keys @arg */
static int by_chain_index(const void *a, const void *b, void *arg)
{
	const struct kvbm_plh *keys = arg;

	return by_chain(&keys[*(const size_t *)a], &keys[*(const size_t *)b]);
}

long kvbm_events_snapshot(struct kvbm_pool *p, uint64_t *cursor,
			  void (*fn)(const struct kvbm_event *ev, void *arg), void *arg)
{
	int r = events_ok(p);

	if (r < 0)
		return r;
	if (!cursor || !fn)
		return -EINVAL;
	struct kvbm_plh *keys = malloc((size_t)p->nslots * sizeof(*keys));
	uint32_t bs = p->block_size;
	/* per block: its slot's kept ids (count, then bs ids) when the pool
	 * keeps them */
	uint32_t *toks = p->seg.tokens ? malloc((size_t)p->nslots * (bs + 1) * sizeof(*toks)) : NULL;
	size_t n = 0;
	if (!keys || (p->seg.tokens && !toks)) {
		free(keys);
		free(toks);
		return -ENOMEM;
	}
	/* the head first: a change after it is in the stream from there */
	uint64_t head = __atomic_load_n(&p->seg.events->head, __ATOMIC_ACQUIRE);
	for (uint32_t s = 0; s < p->nslots; s++) {
		const struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		/* acquire, key loads acquire, state re-read: the key belongs
		 * to the registration seen (the generation is a seqcount) */
		uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_ACQUIRE);
		if (kvbm_slot_state(w) != KVBM_SLOT_REGISTERED ||
		    !(kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY))
			continue;
		struct kvbm_plh k = {__atomic_load_n(&sl->key_hi, __ATOMIC_ACQUIRE),
				     __atomic_load_n(&sl->key_lo, __ATOMIC_ACQUIRE)};
		uint32_t *out = toks ? toks + n * (bs + 1) : NULL;
		if (out) {
			const uint32_t *t = kept(p, s);
			out[0] = __atomic_load_n(&t[0], __ATOMIC_ACQUIRE) ==
						 (uint32_t)kvbm_slot_gen(w) + 1
					 ? bs
					 : 0;
			for (uint32_t i = 0; i < out[0]; i++)
				out[1 + i] = __atomic_load_n(&t[1 + i], __ATOMIC_ACQUIRE);
		}
		if (__atomic_load_n(&sl->state, __ATOMIC_RELAXED) == w)
			keys[n++] = k;
	}
	/* sorted by chain through an index, so each key keeps its ids */
	size_t *order = malloc((n ? n : 1) * sizeof(*order));
	if (!order) {
		free(keys);
		free(toks);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	qsort_r(order, n, sizeof(*order), by_chain_index, keys);
	struct kvbm_event ev = {.seq = head, .kind = KVBM_EVENT_CLEARED};
	fn(&ev, arg);
	for (size_t i = 0; i < n; i++) {
		const uint32_t *t = toks ? toks + order[i] * (bs + 1) : NULL;
		ev = (struct kvbm_event){.seq = head, .kind = KVBM_EVENT_STORED,
					 .hash = keys[order[i]], .ntokens = t ? t[0] : 0,
					 .tokens = t && t[0] ? t + 1 : NULL};
		fn(&ev, arg);
	}
	free(order);
	free(toks);
	free(keys);
	*cursor = head;
	return (long)n;
}
