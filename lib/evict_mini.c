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
 * Miniature k is expert k of evict_adapt.c (KVBM_AE_*): LRU (everything
 * on M in order of use); the filter (new blocks on S, a tenth of the
 * mini; S's evictions remembered on G for half the mini; a reuse or a
 * return from G goes to M); LFU (the lowest sketch estimate as of its
 * last use, the oldest first); lfru (the least of last use plus the
 * mini's size per doubling of that estimate); clock (the filter with M a
 * CLOCK of use counts, S3-FIFO's); ARC (S evicted down to a target that
 * returns from G, S's history, raise and returns from G2, M's, lower; the
 * real expert scales it to the pool).
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
 * or four followed the traffic's noise (docs/EVICTION.md's design note);
 * and over 4,096 sampled accesses at least: at 1-2% of a trace a mini
 * holds 40-60 blocks, and eight of its turnovers are a few hundred
 * accesses, whose hit counts could not tell six experts apart. */
#define WINDOW 8u
#define WINDOW_MIN 4096u

struct mini {
	struct kvbm_shm_mini *h;
	struct kvbm_shm_ment *e;
	uint32_t *tab;
	uint32_t n, tslots, cap; /* entries, table slots, entries S and M hold */
};

/* Accesses the hits decay over: eight of the mini's turnovers, and at
 * least WINDOW_MIN, so that a small pool's estimates are not noise */
static uint64_t window(const struct mini *x)
{
	uint64_t w = (uint64_t)WINDOW * x->cap;

	return w > WINDOW_MIN ? w : WINDOW_MIN;
}

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
	x->e[i].tick = x->h->clock;
	x->e[i].uses = 0;
	append(x, i, l);
	x->tab[t] = i;
	return i;
}

/* Where mini @kind keeps a block in use, of frequency @freq: LFU and lfru
 * by frequency, so that a victim is a list's head, not a walk (lfru's:
 * the least of sixteen heads). */
static uint32_t m_list(uint32_t kind, uint32_t freq)
{
	if (kind == KVBM_AE_LFU || kind == KVBM_AE_LFRU)
		return KVBM_MINI_F0 + (freq < 15 ? freq : 15);
	return KVBM_MINI_M;
}

/* Whether mini @kind puts new blocks on S: the filter, clock and ARC. */
static int filters(uint32_t kind)
{
	return kind == KVBM_AE_FILTER || kind == KVBM_AE_CLOCK || kind == KVBM_AE_ARC;
}

/* What mini @kind holds: S and M, or (LFU, lfru) the frequency lists. */
static uint64_t resident(const struct mini *x, uint32_t kind)
{
	uint64_t n = (uint64_t)x->h->len[KVBM_MINI_S] + x->h->len[KVBM_MINI_M];

	if (kind != KVBM_AE_LFU && kind != KVBM_AE_LFRU)
		return n;
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

/* lfru's victim: the least of last use + the mini's size per doubling of
 * the frequency (evict.c's lfru order, in the mini's own clock) */
static uint32_t lfru_pick(const struct mini *x)
{
	uint32_t best = NONE;
	int64_t bp = 0;

	for (uint32_t l = KVBM_MINI_F0; l < KVBM_MINI_LISTS; l++) {
		uint32_t v = x->h->len[l] ? ix(x, x->h->head[l]) : NONE;
		if (v == NONE)
			continue;
		int64_t pr = (int64_t)x->cap * kvbm_lfru_weight(l - KVBM_MINI_F0) -
			     16 * (int64_t)(uint32_t)(x->h->clock - x->e[v].tick);
		if (best == NONE || pr < bp)
			best = v, bp = pr;
	}
	return best;
}

/* The clock filter's victim in M: a head with uses goes around once more
 * with one less (at most four rounds: a use count is at most 3; a walk
 * past that, or past the entries, finds counts or a length that lie). */
static uint32_t clock_pick(struct mini *x)
{
	uint32_t len = x->h->len[KVBM_MINI_M];

	for (uint64_t k = 0, n = 4ull * (len < x->n ? len : x->n) + 1; k < n; k++) {
		uint32_t v = ix(x, x->h->head[KVBM_MINI_M]);
		if (v == NONE || !x->e[v].uses)
			return v;
		x->e[v].uses--;
		unlink_ent(x, v);
		append(x, v, KVBM_MINI_M);
	}
	return NONE; /* counts that lie */
}

static uint32_t arc_target(const struct mini *x)
{
	return x->h->target < x->cap ? x->h->target : x->cap;
}

/* Entry @v evicted and remembered on history @g, which holds half the
 * mini with the other (ARC's B1 and B2: the longer one forgets) */
static int to_history(struct mini *x, uint32_t v, uint32_t g)
{
	if (v == NONE)
		return 0;
	uint64_t key = x->e[v].key;
	if (!drop(x, v))
		return 0;
	uint32_t g1 = x->h->len[KVBM_MINI_G], g2 = x->h->len[KVBM_MINI_G2];
	if (g1 + g2 >= x->cap / 2) {
		uint32_t o = ix(x, x->h->head[g1 >= g2 ? KVBM_MINI_G : KVBM_MINI_G2]);
		if (o == NONE || !drop(x, o))
			return 0;
	}
	return add(x, key, g, 0) != NONE;
}

/* ARC: a return remembered on B1 (@g: S was too small) moves the target
 * up by max(1, |B2| / |B1|), on B2 down by max(1, |B1| / |B2|) */
static void arc_learn(struct mini *x, uint32_t g)
{
	uint32_t b1 = x->h->len[KVBM_MINI_G], b2 = x->h->len[KVBM_MINI_G2], t = arc_target(x);

	if (g == KVBM_MINI_G) {
		uint32_t d = b1 && b2 / b1 > 1 ? b2 / b1 : 1;
		x->h->target = x->cap - t > d ? t + d : x->cap;
	} else {
		uint32_t d = b2 && b1 / b2 > 1 ? b1 / b2 : 1;
		x->h->target = t > d ? t - d : 0;
	}
}

/* Makes room for one more entry on S or M; 0 if the mini is inconsistent. */
static int evict_one(struct mini *x, uint32_t kind)
{
	uint32_t s = x->h->len[KVBM_MINI_S], m = x->h->len[KVBM_MINI_M];
	uint32_t small = kind == KVBM_AE_ARC ? arc_target(x) : x->cap / 10;

	if (filters(kind) && s && (s > small || !m))
		return to_history(x, ix(x, x->h->head[KVBM_MINI_S]), KVBM_MINI_G);
	if (kind == KVBM_AE_ARC)
		return to_history(x, ix(x, x->h->head[KVBM_MINI_M]), KVBM_MINI_G2);
	uint32_t v = kind == KVBM_AE_LFU    ? lfu_pick(x)
		     : kind == KVBM_AE_LFRU ? lfru_pick(x)
		     : kind == KVBM_AE_CLOCK ? clock_pick(x)
					     : ix(x, x->h->head[KVBM_MINI_M]);
	return v != NONE && drop(x, v);
}

/* One access of a sampled block to mini @kind: 1 if it hit. */
static int access_one(struct mini *x, uint32_t kind, uint64_t key, uint32_t freq)
{
	uint32_t ent, t = find(x, key, &ent);

	if (t == NONE)
		return -1;
	uint32_t el = ent != NONE ? list_of(x, ent) : KVBM_MINI_FREE;

	if (ent != NONE && el != KVBM_MINI_G && el != KVBM_MINI_G2) {
		/* the clock filter counts uses in M, up to 3 (S3-FIFO: a
		 * block moves from S with none) */
		uint8_t u = x->e[ent].uses;
		x->e[ent].uses = el != KVBM_MINI_M ? 0 : u < 3 ? u + 1 : 3;
		unlink_ent(x, ent);
		x->e[ent].freq = (uint8_t)(freq > 255 ? 255 : freq);
		x->e[ent].tick = x->h->clock;
		append(x, ent, m_list(kind, freq));
		return 1;
	}
	uint32_t l = filters(kind) ? KVBM_MINI_S : m_list(kind, freq);
	if (ent != NONE) { /* back from a history: it was reused */
		if (!drop(x, ent))
			return -1;
		if (kind == KVBM_AE_ARC)
			arc_learn(x, el);
		l = KVBM_MINI_M;
	}
	for (uint32_t k = 0; resident(x, kind) >= x->cap; k++)
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
		x.h->hits -= x.h->hits / window(&x);
		x.h->clock++;
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
	uint64_t w = window(&x), hit = x.h->hits / w;

	return hit > 1u << FRAC ? 1u << FRAC : hit;
}

void kvbm_mini_hits_all(struct kvbm_pool *p, uint64_t *h)
{
	const struct kvbm_shm_mini *m = (const struct kvbm_shm_mini *)p->mini;

	/* every mini has the same window: the decayed counts compare as the
	 * ratios do, without a division each */
	for (uint32_t k = 0; k < KVBM_MINIS; k++)
		h[k] = m && m[k].built == p->mini_ents ? m[k].hits : 0;
}

uint32_t kvbm_mini_arc_target(struct kvbm_pool *p, uint32_t size)
{
	struct mini x;

	if (!mini_get(p, KVBM_AE_ARC, &x) || x.h->built != x.n)
		return size / 10;
	return (uint32_t)((uint64_t)arc_target(&x) * size / x.cap);
}

void kvbm_mini_clear(struct kvbm_pool *p)
{
	struct mini x;

	for (uint32_t k = 0; k < KVBM_MINIS && mini_get(p, k, &x); k++)
		mini_reset(&x);
}
