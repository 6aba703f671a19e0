/* SPDX-License-Identifier: Apache-2.0 */
/*
 * evict_mini.c - adapt's miniature simulations (Waldspurger et al.,
 * "Cache Modeling and Optimization using Miniature Simulations", ATC'17):
 * each of adapt's experts run as a cache of its own over the blocks whose
 * hash falls in a 1/KVBM_MINI_RATE sample, at 1/KVBM_MINI_RATE of the
 * pool's size, on the pool's stream of insertions and reuses. Their
 * decayed hit counts tell adapt which expert the traffic favours now,
 * which the regret of one-step mistakes sees late or not at all (the
 * design note in docs/EVICTION.md).
 *
 * Miniature k is expert k of evict_adapt.c: 0 LRU (everything on M in
 * order of use), 1 the filter (new blocks on S, a tenth of the mini;
 * S's evictions remembered on G for half the mini; a reuse or a return
 * from G goes to M), 2 LFU (the lowest sketch estimate as of its last
 * use, the oldest first).
 *
 * In the segment, under the pool mutex. Any content is legal: every index
 * read is bounded, every walk is bounded by the entries, and a mini found
 * inconsistent (a list that ends early, no free entry, a full table) is
 * emptied and starts again. Recovery empties them all: they only steer.
 */
#define _GNU_SOURCE
#include <string.h>
#include "pool.h"
#include "evict.h"
#include "../shm/failpoint.h"

#define NONE KVBM_MINI_NONE
#define FRAC 16 /* fractional bits of the hit counts */

/* Hits decay over eight of a mini's turnovers (eight of the pool's): two
 * or four followed the traffic's noise (docs/EVICTION.md's design note). */
#define WINDOW 8u

struct mini {
	struct kvbm_shm_mini *h;
	struct kvbm_shm_ment *e;
	uint32_t *tab;
	uint32_t n, tslots, cap; /* entries, table slots, entries S and M hold */
};

static uint32_t mini_cap(const struct kvbm_pool *p)
{
	uint32_t m = p->nslots / KVBM_MINI_RATE;

	return m < 8 ? 8 : m;
}

static int mini_get(struct kvbm_pool *p, uint32_t k, struct mini *x)
{
	if (!p->mini || k >= KVBM_MINIS)
		return 0;
	uint64_t per = kvbm_mini_bytes(p->mini_ents, p->mini_tslots);
	uint8_t *body = p->mini + KVBM_MINIS * sizeof(struct kvbm_shm_mini) + k * per;

	x->h = (struct kvbm_shm_mini *)p->mini + k;
	x->e = (struct kvbm_shm_ment *)body;
	x->tab = (uint32_t *)(body + (uint64_t)p->mini_ents * sizeof(struct kvbm_shm_ment));
	x->n = p->mini_ents;
	x->tslots = p->mini_tslots;
	x->cap = mini_cap(p);
	return 1;
}

/* Empty: every entry free, the table clear, no hits. */
static void mini_reset(struct mini *x)
{
	memset(x->h, 0, sizeof(*x->h));
	for (uint32_t l = 0; l < KVBM_MINI_LISTS; l++)
		x->h->head[l] = x->h->tail[l] = NONE;
	memset(x->tab, 0xff, (size_t)x->tslots * 4);
	for (uint32_t i = 0; i < x->n; i++) {
		x->e[i] = (struct kvbm_shm_ment){.prev = i ? i - 1 : NONE,
						 .next = i + 1 < x->n ? i + 1 : NONE,
						 .list = KVBM_MINI_FREE};
	}
	x->h->head[KVBM_MINI_FREE] = 0;
	x->h->tail[KVBM_MINI_FREE] = x->n - 1;
	x->h->len[KVBM_MINI_FREE] = x->n;
	x->h->built = x->n;
}

static uint32_t ix(const struct mini *x, uint32_t i)
{
	return i < x->n ? i : NONE;
}

static uint32_t list_of(const struct mini *x, uint32_t i)
{
	return x->e[i].list < KVBM_MINI_LISTS ? x->e[i].list : KVBM_MINI_FREE;
}

static void unlink_ent(struct mini *x, uint32_t i)
{
	uint32_t l = list_of(x, i), pv = ix(x, x->e[i].prev), nx = ix(x, x->e[i].next);

	if (pv != NONE)
		x->e[pv].next = nx;
	else
		x->h->head[l] = nx;
	if (nx != NONE)
		x->e[nx].prev = pv;
	else
		x->h->tail[l] = pv;
	if (x->h->len[l])
		x->h->len[l]--;
}

static void append(struct mini *x, uint32_t i, uint32_t l)
{
	uint32_t t = ix(x, x->h->tail[l]);

	x->e[i].list = (uint8_t)l;
	x->e[i].prev = t;
	x->e[i].next = NONE;
	if (t != NONE)
		x->e[t].next = i;
	else
		x->h->head[l] = i;
	x->h->tail[l] = i;
	x->h->len[l]++;
}

static uint32_t slot_hash(uint64_t key)
{
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdull;
	return (uint32_t)(key ^ key >> 33);
}

/* The table slot holding @key, or the empty one where it would go (its
 * entry in *@ent, NONE if absent); NONE if the table has no empty slot. */
static uint32_t find(const struct mini *x, uint64_t key, uint32_t *ent)
{
	uint32_t mask = x->tslots - 1, t = slot_hash(key) & mask;

	for (uint32_t k = 0; k < x->tslots; k++, t = (t + 1) & mask) {
		uint32_t v = x->tab[t];
		if (v == NONE) {
			*ent = NONE;
			return t;
		}
		if (v < x->n && x->e[v].key == key && list_of(x, v) != KVBM_MINI_FREE) {
			*ent = v;
			return t;
		}
	}
	*ent = NONE;
	return NONE;
}

/* Linear probing's backward-shift deletion of table slot @t. */
static void untable(struct mini *x, uint32_t t)
{
	uint32_t mask = x->tslots - 1, j = t;

	x->tab[t] = NONE;
	for (uint32_t k = 0; k < x->tslots; k++) {
		j = (j + 1) & mask;
		uint32_t v = x->tab[j];
		if (v == NONE)
			return;
		uint32_t home = v < x->n ? slot_hash(x->e[v].key) & mask : j;
		/* may v move back to t: is t within [home, j) cyclically? */
		if (((j - home) & mask) >= ((j - t) & mask)) {
			x->tab[t] = v;
			x->tab[j] = NONE;
			t = j;
		}
	}
}

static int drop(struct mini *x, uint32_t i)
{
	uint32_t ent, t = find(x, x->e[i].key, &ent);

	if (ent != i)
		return 0;
	untable(x, t);
	unlink_ent(x, i);
	append(x, i, KVBM_MINI_FREE);
	return 1;
}

static uint32_t add(struct mini *x, uint64_t key, uint32_t l, uint32_t freq)
{
	uint32_t i = ix(x, x->h->head[KVBM_MINI_FREE]), ent, t;

	if (i == NONE || list_of(x, i) != KVBM_MINI_FREE)
		return NONE;
	t = find(x, key, &ent);
	if (t == NONE || ent != NONE)
		return NONE;
	unlink_ent(x, i);
	x->e[i].key = key;
	x->e[i].freq = (uint8_t)(freq > 255 ? 255 : freq);
	append(x, i, l);
	x->tab[t] = i;
	return i;
}

/* Where mini @kind keeps a block in use, of frequency @freq: LFU by
 * frequency, so that its victim is a list's head, not a walk. */
static uint32_t m_list(uint32_t kind, uint32_t freq)
{
	return kind == 2 ? KVBM_MINI_F0 + (freq < 15 ? freq : 15) : KVBM_MINI_M;
}

static uint64_t resident(const struct mini *x)
{
	uint64_t n = (uint64_t)x->h->len[KVBM_MINI_S] + x->h->len[KVBM_MINI_M];

	for (uint32_t l = KVBM_MINI_F0; l < KVBM_MINI_LISTS; l++)
		n += x->h->len[l];
	return n;
}

/* LFU's victim: the oldest entry of the lowest frequency. */
static uint32_t lfu_pick(const struct mini *x)
{
	for (uint32_t l = KVBM_MINI_F0; l < KVBM_MINI_LISTS; l++)
		if (x->h->len[l])
			return ix(x, x->h->head[l]);
	return NONE;
}

/* Makes room for one more entry on S or M; 0 if the mini is inconsistent. */
static int evict_one(struct mini *x, uint32_t kind)
{
	uint32_t s = x->h->len[KVBM_MINI_S], m = x->h->len[KVBM_MINI_M];

	if (kind == 1 && (s > x->cap / 10 || !m)) {
		uint32_t v = ix(x, x->h->head[KVBM_MINI_S]);
		if (v == NONE)
			return 0;
		uint64_t key = x->e[v].key;
		if (!drop(x, v))
			return 0;
		if (x->h->len[KVBM_MINI_G] >= x->cap / 2) {
			uint32_t g = ix(x, x->h->head[KVBM_MINI_G]);
			if (g == NONE || !drop(x, g))
				return 0;
		}
		return add(x, key, KVBM_MINI_G, 0) != NONE;
	}
	uint32_t v = kind == 2 ? lfu_pick(x) : ix(x, x->h->head[KVBM_MINI_M]);
	return v != NONE && drop(x, v);
}

/* One access of a sampled block to mini @kind: 1 if it hit. */
static int access_one(struct mini *x, uint32_t kind, uint64_t key, uint32_t freq)
{
	uint32_t ent, t = find(x, key, &ent);

	if (t == NONE)
		return -1;
	if (ent != NONE && list_of(x, ent) != KVBM_MINI_G) {
		unlink_ent(x, ent);
		x->e[ent].freq = (uint8_t)(freq > 255 ? 255 : freq);
		append(x, ent, m_list(kind, freq));
		return 1;
	}
	uint32_t l = kind == 1 ? KVBM_MINI_S : m_list(kind, freq);
	if (ent != NONE) { /* back from the filter's history: it was reused */
		if (!drop(x, ent))
			return -1;
		l = KVBM_MINI_M;
	}
	for (uint32_t k = 0; resident(x) >= x->cap; k++)
		if (k == x->n || !evict_one(x, kind))
			return -1; /* lengths that lie */
	return add(x, key, l, freq) == NONE ? -1 : 0;
}

void kvbm_mini_access(struct kvbm_pool *p, struct kvbm_plh key)
{
	uint64_t h = kvbm_evict_mix(key, 0x8cb92ba72f3d8dd7ull);
	struct mini x;

	if (!p->mini || h % 64 >= 64 / KVBM_MINI_RATE)
		return;
	uint32_t freq = kvbm_sketch_estimate(p, key);
	for (uint32_t k = 0; k < KVBM_MINIS && mini_get(p, k, &x); k++) {
		if (x.h->built != x.n)
			mini_reset(&x);
		x.h->hits -= x.h->hits / ((uint64_t)WINDOW * x.cap);
		int r = access_one(&x, k, h, freq);
		KVBM_FAILPOINT("evict.adapt.mini");
		if (r < 0)
			mini_reset(&x);
		else
			x.h->hits += (uint64_t)r << FRAC;
	}
}

/* Mini @k's decayed hits, in hits per access over the window (2^-FRAC). */
uint64_t kvbm_mini_hits(struct kvbm_pool *p, uint32_t k)
{
	struct mini x;

	if (!mini_get(p, k, &x) || x.h->built != x.n)
		return 0;
	uint64_t w = (uint64_t)WINDOW * x.cap, hit = x.h->hits / w;

	return hit > 1u << FRAC ? 1u << FRAC : hit;
}

void kvbm_mini_clear(struct kvbm_pool *p)
{
	struct mini x;

	for (uint32_t k = 0; k < KVBM_MINIS && mini_get(p, k, &x); k++)
		mini_reset(&x);
}
