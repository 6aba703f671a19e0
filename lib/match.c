/* SPDX-License-Identifier: Apache-2.0 */
/*
 * match.c - the readers: prefix, scattered and scan matching and presence
 * checks, lock-free and syscall-free (docs/PROTOCOL.md). A hit is a
 * hold taken through the pin protocol on the slot the index names; an
 * inactive hit is resurrected by that hold alone. Also the pool-wide
 * counts and reset_inactive_pool, which take the mutex.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "pool.h"

/* The pin @r (kvbm_hold_pin's answer) on slot @s of generation @g for
 * @key: 1 and *out when it holds @key, else 0 (nothing held) or the
 * error. */
static int pinned_key(struct kvbm_pool *p, struct kvbm_plh key, uint32_t s, uint64_t g, int r,
		      struct kvbm_block *out, struct kvbm_resw *w)
{
	if (r != 1)
		return r;
	/* rule 6: once held the key cannot change; re-read it, so a hit is
	 * exact even if the generation wrapped between lookup and pin */
	struct kvbm_plh k = kvbm_slot_key(kvbm_slot(p, s));
	if (k.hi == key.hi && k.lo == key.lo) {
		*out = (struct kvbm_block){p->id, s, g};
		return 1;
	}
	kvbm_hold_unpin_settle(p, s, w);
	return 0;
}

/* acquire_slow's retry after a lost race, out of line: inside the loop,
 * gcc computed the lookup's hash and tag before every first hold, won or
 * not (17 instructions a block of a match of inactive blocks). */
static __attribute__((noinline)) int acquire_retry(struct kvbm_pool *p, struct kvbm_plh key,
						   struct kvbm_block *out, struct kvbm_resw *w)
{
	struct kvbm_hit f = kvbm_index_find(&p->ix, key, 1);

	if (!f.s1)
		return 0;
	return pinned_key(p, key, f.s1 - 1, f.gen, kvbm_hold_pin(p, f.s1 - 1, f.gen, w), out, w);
}

/* Pins the block the index named (@s, @g) for @key; 1 on a hit. Begins
 * with a first hold inside the one-writer operation @st, which that ends
 * (@overflow: what the fast path found). A lost race (evicted, or
 * re-registered elsewhere) is retried once with a fresh lookup: the hash
 * may have a new primary by now. */
static __attribute__((noinline)) int acquire_slow(struct kvbm_pool *p, struct kvbm_plh key,
						  uint32_t s, uint64_t g, struct kvbm_block *out,
						  struct kvbm_resw *w, int st, int overflow)
{
	int r = pinned_key(p, key, s, g, kvbm_hold_pin_first(p, st, s, g, overflow, w), out, w);

	return r ? r : acquire_retry(p, key, out, w);
}

/* A match call's state: the pool fields its loop reads, copied so that
 * gcc need not reload them after each store of a result (they might
 * alias), the call's resurrection window and its one-writer operation. */
struct matcher {
	struct kvbm_index ix;
	kvbm_hold_t *ht;
	struct kvbm_hint *hints;
	uint64_t id;
	struct kvbm_resw w;
	int ow;
};

static void matcher_begin(struct kvbm_pool *p, struct matcher *m)
{
	m->ix = p->ix;
	m->ht = p->ht;
	m->hints = p->hints;
	m->id = p->id;
	m->w = (struct kvbm_resw){0};
	m->ow = kvbm_st_enter(p);
}

static void matcher_end(struct kvbm_pool *p, struct matcher *m)
{
	kvbm_st_leave(p, m->ow);
	kvbm_resw_close(p, &m->w);
}

/*
 * acquire()'s general path: a first hold, any hold of a shared handle, an
 * overflow, or a lost race. acquire_slow ends the one-writer operation; a
 * new one begins. Inline: out of line it cost a call per block where every
 * block is a first hold (a match of inactive blocks).
 */
static inline int acquire_general(struct kvbm_pool *p, struct matcher *m,
						     struct kvbm_plh key, struct kvbm_hit f,
						     struct kvbm_block *out)
{
	uint32_t s = f.s1 - 1;
	/* what the fast path found: a saturated count (one writer: ours) */
	int overflow = m->ow && (__atomic_load_n(&m->ht[s], __ATOMIC_RELAXED) & KVBM_HOLD_COUNT) ==
					KVBM_HOLD_COUNT;
	int r = acquire_slow(p, key, s, f.gen, out, &m->w, m->ow, overflow);

	m->ow = kvbm_st_enter(p);
	return r;
}

/*
 * 1 when slot @sl holds key @kv (the key as 16 bytes, hi then lo, the
 * slot's layout). One 16-byte load and compare where two loads and two
 * compares of 8 bytes took four more instructions. x86 loads each aligned
 * 8-byte half whole (a slot is 64-byte aligned), and every load is an acquire, as
 * kvbm_index_validate's key loads are; the asm statement makes the
 * compiler read the memory once. ThreadSanitizer does not see an asm
 * load, so its build reads the key as kvbm_index_validate does.
 */
static inline __attribute__((always_inline)) int slot_has_key(const struct kvbm_shm_slot *sl,
							       __m128i kv)
{
#if defined(__SANITIZE_THREAD__)
	return __atomic_load_n(&sl->key_hi, __ATOMIC_ACQUIRE) == (uint64_t)_mm_cvtsi128_si64(kv) &&
	       __atomic_load_n(&sl->key_lo, __ATOMIC_ACQUIRE) ==
		       (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(kv, kv));
#else
	__m128i v;

	__asm__("movdqu %1, %0" : "=x"(v) : "m"(*(const __m128i_u *)&sl->key_hi));
	return _mm_movemask_epi8(_mm_cmpeq_epi32(v, kv)) == 0xffff;
#endif
}

/* Hint @hh's checks (see hint_find) for key @kv: 1 and the slot and its
 * state word, or 0. */
static inline __attribute__((always_inline)) int
hinted_try(const struct kvbm_shm_slot *slots, uint64_t nslots, const struct kvbm_hint *hh,
	   __m128i kv, uint64_t *s, uint64_t *w1)
{
	*s = hh->s;
	if (*s >= nslots)
		return 0;
	/* acquire: as kvbm_index_validate's */
	*w1 = __atomic_load_n(&slots[*s].state, __ATOMIC_ACQUIRE);
	return (uint32_t)*w1 == hh->w && slot_has_key(&slots[*s], kv);
}

/* Hint @h's candidate for @key among the @nslots @slots, or a miss (see
 * hint_find). */
static inline __attribute__((always_inline)) struct kvbm_hit
hint_try(const struct kvbm_shm_slot *slots, uint32_t nslots, const struct kvbm_hint *h,
	 struct kvbm_plh key)
{
	uint64_t s, w1;

	if (!hinted_try(slots, nslots, h, _mm_set_epi64x((long long)key.lo, (long long)key.hi), &s,
			&w1))
		return KVBM_INDEX_MISS;
	return (struct kvbm_hit){kvbm_slot_gen(w1), (uint32_t)s + 1};
}

/*
 * The slot where this handle last matched @key, if it still holds the key
 * as a primary of the generation matched then: the checks
 * kvbm_index_validate makes of an index entry (in range, REGISTERED,
 * PRIMARY, the generation's low 16 bits, the full key), so the candidate
 * is as good as a lookup's without the seqlock re-read (kvbm_index_find,
 * @exact 0), and callers prove it the same way. Any other hint, stale or
 * damaged, is a miss. Inside a one-writer operation only: the table is
 * the handle's and has no lock.
 */
static inline __attribute__((always_inline)) struct kvbm_hit
hint_find(const struct kvbm_shm_slot *slots, uint32_t nslots, struct kvbm_hint *hints,
	  struct kvbm_plh key)
{
	const struct kvbm_hint *h = kvbm_hint_set(hints, key);
	struct kvbm_hit f = hint_try(slots, nslots, &h[0], key);

	if (!f.s1)
		f = hint_try(slots, nslots, &h[1], key);
	return f;
}

/* @key matched block @b through the index: its hint, in the set's first
 * way, and the first way's hint in the second. */
static inline void hint_fill(const struct matcher *m, struct kvbm_plh key,
			     const struct kvbm_block *b)
{
	struct kvbm_hint *h = kvbm_hint_set(m->hints, key);

	h[1] = h[0];
	h[0] = (struct kvbm_hint){
		b->id,
		(uint32_t)kvbm_slot_word(b->gen, 0, KVBM_SLOT_F_PRIMARY, KVBM_SLOT_REGISTERED)};
}

/*
 * One block of a match, inside the one-writer operation m->ow
 * (kvbm_st_enter once per call, not per block). A hold on top of one of
 * ours needs no more than the index's validation: ours was held since
 * before it (only this thread changes our count, and it let nothing go in
 * between; a revoking thread would have made kvbm_st_enter say no), so
 * the slot kept the validated incarnation and key, and rules 3 and 6 have
 * nothing to re-check. Anything else ends the operation (it may wait for
 * the mutex) and begins a new one after.
 *
 * The candidate comes from the handle's hint for the key when that still
 * holds, which a match of a prefix matched before (an engine's system
 * prompt, a running request's own prefix) finds without hashing into the
 * index; else from the index, and a hit then becomes the key's hint.
 */
static inline __attribute__((always_inline)) int acquire(struct kvbm_pool *p, struct matcher *m,
							 struct kvbm_plh key,
							 struct kvbm_block *out)
{
	struct kvbm_hit f;
	int r;

	if (m->ow) {
		f = hint_find(m->ix.slots, m->ix.nslots, m->hints, key);
		if (f.s1 && kvbm_count_inc_ow(&m->ht[f.s1 - 1])) {
			*out = (struct kvbm_block){m->id, f.s1 - 1, f.gen};
			return 1;
		}
		if (f.s1)
			return acquire_general(p, m, key, f, out);
	}
	/* a candidate (no seqlock re-read): the fast path's hold spans the
	 * lookup, the slow path pins and re-reads (kvbm_index_find) */
	f = kvbm_index_find(&m->ix, key, 0);
	if (!f.s1)
		return 0;
	if (m->ow && kvbm_count_inc_ow(&m->ht[f.s1 - 1])) {
		*out = (struct kvbm_block){m->id, f.s1 - 1, f.gen};
		r = 1;
	} else {
		r = acquire_general(p, m, key, f, out);
	}
	/* the block matched (acquire_slow may have found another slot) */
	if (r == 1 && m->ow)
		hint_fill(m, key, out);
	return r;
}

/*
 * A prefix match's common case: the keys from @k on (up to @end) that are
 * blocks this process holds already whose hints hold (as hint_find
 * finds them), each taken as acquire()'s fast path takes it; returns the
 * first key that needs more, which acquire() then takes. The caller is in
 * a one-writer operation. Out of line, with the matcher's fields copied
 * to locals, so that they stay in registers (in the match loop, gcc keeps
 * the matcher on the stack and reloads its fields). 33 instructions a
 * block on x86-64 (BENCHMARKS.md): each saved one was a spill, a copy or
 * a compare gcc had added around the checks, none of which are left out.
 */
static __attribute__((noinline)) const struct kvbm_plh *
match_hinted(const struct kvbm_plh *k, const struct kvbm_plh *end, struct kvbm_block *out,
	     const struct matcher *m)
{
	/* in registers for the whole loop: the stores of the results might
	 * alias the matcher */
	const struct kvbm_shm_slot *slots = m->ix.slots;
	const uint64_t nslots = m->ix.nslots, id = m->id;
	kvbm_hold_t *ht = m->ht;
	struct kvbm_hint *hints = m->hints;

	/* pointers, not an index: one increment each and one compare; the
	 * caller counts (one value fewer to keep in a register) */
	for (; k != end; k++, out++) {
		__m128i kv = _mm_loadu_si128((const __m128i *)k);
		const struct kvbm_hint *set = kvbm_hint_set(hints, (struct kvbm_plh){k->hi, k->lo});
		uint64_t s, w1;
		if (!hinted_try(slots, nslots, &set[0], kv, &s, &w1) &&
		    !hinted_try(slots, nslots, &set[1], kv, &s, &w1))
			break;
		/* kvbm_count_inc_ow, with the incremented value computed once */
		kvbm_hold_t v = (kvbm_hold_t)(__atomic_load_n(&ht[s], __ATOMIC_RELAXED) + 1);
		__asm__("" : "+r"(v)); /* a test, not an and and a second add */
		if (!(v & (KVBM_HOLD_COUNT & ~1u)))
			break;
		KVBM_FAILPOINT("hold.fast");
		__atomic_store_n(&ht[s], v, __ATOMIC_RELAXED);
		*out = (struct kvbm_block){id, (uint32_t)s, kvbm_slot_gen(w1)};
	}
	return k;
}

/*
 * A prefix match's other common case: how many of the @n keys from @h on
 * are blocks whose hints hold (hint_find) and that this process does not
 * hold yet, each taken with a first hold inside the matcher's one-writer
 * operation (kvbm_hold_pin_first_ow) and its key re-read (rule 6), as
 * acquire_slow takes it. Where acquire() ended and began the operation
 * and went through three calls per block (a match of inactive blocks is
 * all first holds). Stops at the first block that needs more; one whose
 * pin lost its race is undone outside the operation as acquire_slow
 * undoes it, and acquire() then takes that block again.
 */
static __attribute__((noinline)) size_t match_first(struct kvbm_pool *p, struct matcher *m,
						    const struct kvbm_plh *h, size_t n,
						    struct kvbm_block *out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		struct kvbm_plh key = {h[i].hi, h[i].lo};
		struct kvbm_hit f = hint_find(m->ix.slots, m->ix.nslots, m->hints, key);
		if (!f.s1)
			break;
		uint32_t s = f.s1 - 1;
		/* no hold, no TENTATIVE, not OWNED: the entry is 0 */
		if (__atomic_load_n(&m->ht[s], __ATOMIC_RELAXED))
			break;
		int r = kvbm_hold_pin_first_ow(p, s, f.gen, &m->w);
		if (r == 1) {
			struct kvbm_plh k = kvbm_slot_key(kvbm_slot(p, s));
			if (k.hi == key.hi && k.lo == key.lo) {
				out[i] = (struct kvbm_block){m->id, s, f.gen};
				continue;
			}
		}
		kvbm_st_leave(p, m->ow);
		if (r == 2) {
			kvbm_resw_close(p, &m->w); /* as kvbm_hold_pin_first */
			kvbm_store_settle_one(p, s);
		} else if (r == 1) {
			kvbm_hold_unpin_settle(p, s, &m->w);
		}
		m->ow = kvbm_st_enter(p);
		break;
	}
	return i;
}

int kvbm_acquire_hash(struct kvbm_pool *p, struct kvbm_plh key, struct kvbm_block *out,
		      struct kvbm_resw *w)
{
	struct kvbm_hit f = kvbm_index_find(&p->ix, key, 1);

	if (!f.s1)
		return 0;
	return acquire_slow(p, key, f.s1 - 1, f.gen, out, w, kvbm_st_enter(p), 0);
}

long kvbm_match_blocks(struct kvbm_pool *p, const struct kvbm_plh *hashes, size_t n,
		       struct kvbm_block *out)
{
	struct matcher m;
	size_t i;
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	if (n && (!hashes || !out))
		return -EINVAL;
	/* one block's lookup and pin back to back: doing a round's lookups
	 * first gained 3% alone but lost 10-15% with two processes matching
	 * one prefix, whose slot lines then move twice (BENCHMARKS.md) */
	matcher_begin(p, &m);
	/* the prefix's first run of blocks held already (once: where every
	 * block is a first hold, as in a match of inactive blocks, a run per
	 * block would cost more than it saves) */
	i = m.ow ? (size_t)(match_hinted(hashes, hashes + n, out, &m) - hashes) : 0;
	/* then its first run of blocks this process does not hold (once,
	 * as above) */
	if (m.ow && i < n)
		i += match_first(p, &m, hashes + i, n - i, out + i);
	for (; i < n; i++) {
		/* the key as two scalars in registers: gcc otherwise loads
		 * the pair into a vector register and moves each half out */
		struct kvbm_plh key = {hashes[i].hi, hashes[i].lo};
		__asm__("" : "+r"(key.hi), "+r"(key.lo));
		r = acquire(p, &m, key, &out[i]);
		/* -EOVERFLOW: this process's holds on the block saturated. The
		 * prefix so far is still a valid answer (a shorter match), and
		 * dropping it would throw away every earlier hit */
		if (r < 0 && r != -EOVERFLOW) {
			matcher_end(p, &m);
			kvbm_unpin_settle(p, out, i);
			return r;
		}
		if (r <= 0)
			break;
	}
	matcher_end(p, &m);
	/* the reference touches each returned block once, after its lock */
	if (p->sketch)
		for (size_t j = 0; j < i; j++)
			kvbm_sketch_touch(p, hashes[j]);
	kvbm_metric_add(p, KVBM_M_MATCH_HASHES_REQUESTED, (int64_t)n);
	kvbm_metric_add(p, KVBM_M_MATCH_BLOCKS_RETURNED, (int64_t)i);
	return (long)i;
}

long kvbm_match_blocks_scattered(struct kvbm_pool *p, const struct kvbm_plh *hashes, size_t n,
				 struct kvbm_block *out, uint8_t *found)
{
	struct matcher m;
	long hits = 0;
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	if (n && (!hashes || !out || !found))
		return -EINVAL;
	matcher_begin(p, &m);
	for (size_t i = 0; i < n; i++) {
		r = acquire(p, &m, hashes[i], &out[i]);
		if (r == -EOVERFLOW)
			r = 0; /* saturated holds: a miss for this one, as above */
		if (r < 0) {
			matcher_end(p, &m);
			for (size_t j = 0; j < i; j++)
				if (found[j])
					kvbm_unpin_settle(p, &out[j], 1);
			return r;
		}
		found[i] = (uint8_t)r;
		if (!r)
			out[i] = (struct kvbm_block){0, 0, 0};
		else
			kvbm_sketch_touch(p, hashes[i]); /* once per hit occurrence */
		hits += r;
	}
	matcher_end(p, &m);
	kvbm_metric_add(p, KVBM_M_MATCH_HASHES_REQUESTED, (int64_t)n);
	kvbm_metric_add(p, KVBM_M_MATCH_BLOCKS_RETURNED, hits);
	return hits;
}

/* Open-addressed set of input indices, keyed by their hash. */
struct seen {
	uint32_t *tab; /* index + 1, 0 = empty */
	uint32_t mask;
	uint32_t small[128];
};

static int seen_init(struct seen *st, size_t n)
{
	size_t cap = 2;

	while (cap < 2 * n)
		cap <<= 1;
	st->tab = cap <= 128 ? st->small : calloc(cap, sizeof(uint32_t));
	if (!st->tab)
		return -ENOMEM;
	if (st->tab == st->small)
		for (size_t i = 0; i < cap; i++)
			st->small[i] = 0;
	st->mask = (uint32_t)cap - 1;
	return 0;
}

/* 1 if hashes[i] was added before, else adds it and returns 0. */
static int seen_add(struct seen *st, const struct kvbm_plh *hashes, uint32_t i)
{
	uint64_t h = (hashes[i].hi ^ hashes[i].lo) * 0x9e3779b97f4a7c15ull;

	for (uint32_t b = (uint32_t)(h >> 32) & st->mask;; b = (b + 1) & st->mask) {
		if (st->tab[b] == 0) {
			st->tab[b] = i + 1;
			return 0;
		}
		if (kvbm_plh_eq(hashes[st->tab[b] - 1], hashes[i]))
			return 1;
	}
}

long kvbm_scan_matches(struct kvbm_pool *p, const struct kvbm_plh *hashes, size_t n,
		       unsigned flags, struct kvbm_block *out)
{
	struct matcher m;
	struct seen st;
	long k = 0;
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	if ((n && (!hashes || !out)) || (flags & ~KVBM_SCAN_TOUCH))
		return -EINVAL;
	if (n > UINT32_MAX / 4)
		return -E2BIG;
	r = seen_init(&st, n);
	if (r < 0)
		return r;
	matcher_begin(p, &m);
	for (size_t i = 0; i < n; i++) {
		if (seen_add(&st, hashes, (uint32_t)i))
			continue; /* one result per distinct hash */
		r = acquire(p, &m, hashes[i], &out[k]);
		if (r == -EOVERFLOW)
			r = 0; /* saturated holds: a miss for this one, as above */
		if (r < 0)
			break;
		if (r && (flags & KVBM_SCAN_TOUCH))
			kvbm_sketch_touch(p, hashes[i]); /* once per distinct hit */
		k += r;
	}
	matcher_end(p, &m);
	if (r < 0) {
		kvbm_unpin_settle(p, out, (size_t)k);
		k = r;
	}
	if (st.tab != st.small)
		free(st.tab);
	if (k >= 0) {
		kvbm_metric_add(p, KVBM_M_SCAN_HASHES_REQUESTED, (int64_t)n);
		kvbm_metric_add(p, KVBM_M_SCAN_BLOCKS_RETURNED, k);
	}
	return k;
}

long kvbm_frequency_estimate(struct kvbm_pool *p, struct kvbm_plh hash)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	return r < 0 ? r : (long)kvbm_sketch_estimate(p, hash);
}

long kvbm_frequency_touch(struct kvbm_pool *p, struct kvbm_plh hash)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	kvbm_sketch_touch(p, hash);
	return (long)kvbm_sketch_estimate(p, hash);
}

long kvbm_registered_count(struct kvbm_pool *p)
{
	long k = 0;
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	/* the slot array is the truth (a registry index entry may outlive its
	 * slot until the next lookup meets it): one primary per hash */
	for (uint32_t s = 0; s < p->nslots; s++) {
		/* relaxed: a snapshot, each word read once */
		uint64_t w = __atomic_load_n(&kvbm_slot(p, s)->state, __ATOMIC_RELAXED);
		k += kvbm_slot_state(w) == KVBM_SLOT_REGISTERED &&
		     (kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY);
	}
	return k;
}

long kvbm_check_presence(struct kvbm_pool *p, const struct kvbm_plh *hashes, size_t n,
			 uint8_t *present)
{
	long k = 0;
	uint32_t s;
	uint64_t g;
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	if (n && (!hashes || !present))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		present[i] = (uint8_t)kvbm_index_lookup(&p->ix, hashes[i], &s, &g);
		k += present[i];
	}
	return k;
}

long kvbm_available_blocks(struct kvbm_pool *p)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	/* relaxed: two gauges, each exact; their sum is a snapshot */
	int64_t inactive = __atomic_load_n(&p->seg.ctl->inactive, __ATOMIC_RELAXED);
	return (long)__atomic_load_n(&p->seg.ctl->free_count, __ATOMIC_RELAXED) +
	       (inactive > 0 ? inactive : 0);
}

long kvbm_total_blocks(struct kvbm_pool *p)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	return r < 0 ? r : (long)p->nslots;
}

int kvbm_reset_inactive_pool(struct kvbm_pool *p)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	r = kvbm_store_lock(p, KVBM_OP_EVICT, 0);
	if (r < 0)
		return r;
	uint32_t s;
	for (uint64_t turns = 0; (s = kvbm_evict_first(p)) != UINT32_MAX; turns++) {
		if (turns > 2 * (uint64_t)p->nslots) {
			kvbm_store_corrupt(p); /* a cycle: repaired at unlock */
			break;
		}
		struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		uint64_t h = __atomic_load_n(&sl->holders, __ATOMIC_SEQ_CST);
		int ok = !(h & KVBM_HOLD_PROCS) && (h & KVBM_HOLD_INACTIVE) && !sl->dups &&
			 kvbm_store_try_evict(p, s);
		kvbm_evict_remove(p, s);
		if (ok)
			(void)kvbm_store_evict_commit(p, s, 0);
	}
	r = p->seg.ctl->free_count == p->nslots ? 0 : -EBUSY;
	kvbm_store_unlock(p);
	return r;
}
