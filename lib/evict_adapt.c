/* SPDX-License-Identifier: Apache-2.0 */
/*
 * evict_adapt.c - adapt, our own policy: three experts over the same
 * leaves, weighted by regret (as LeCaR, with three). All under the pool
 * mutex.
 *
 * Two queues of every inactive block, both in order of last use: S
 * (queue 0) holds blocks not used again since they came in, M (queue 1)
 * blocks used again (a hit moves a block to M's tail). So the older of
 * the two heads is LRU's victim. The experts:
 *  - LRU: the older head;
 *  - filter: S's head while S holds more than a tenth of the pool, else
 *    M's head (S3-FIFO's small queue, ARC's T1: a block must be used
 *    again before a tenth of the pool has turned over, or go first);
 *  - LFU: the forest's leaf heap (lowest TinyLFU estimate, then oldest).
 * Each eviction follows one expert, drawn by weight, and that expert's
 * history (the ghost table, list = expert, half a pool of its evictions)
 * remembers the block. A block that comes back while remembered lowers
 * the weight of the expert that evicted it, the more the fresher the
 * mistake, and goes to M: it was used again.
 *
 * Only leaves go, as for the other queued backends: evict_queue.c has the
 * queue walks, the ghost table and the interface. Crash safety is theirs
 * too: a slot's tick names its queue and recovery reinserts in tick
 * order; the weights (the ghost header's adapt words) may hold anything,
 * every read clamps them, recovery clamps them in place and the checker
 * verifies the range.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "evict.h"
#include "../shm/failpoint.h"

enum { E_LRU, E_FILTER, E_LFU, E_N };

#define ONE (1u << 20)   /* a weight of 1, fixed point */
#define WMIN (ONE >> 10) /* no expert is lost for good in fixed point */

/*
 * Per return, the expert's weight is multiplied by e^(-RATE x
 * 0.005^(age / pool)). LeCaR's 0.45 swings the weights from one end to
 * the other several times per pool turnover once a few hundred returns
 * come per turnover (as at every capacity here); at 0.02 they follow the
 * traffic's mix instead (sum of shortfalls against the best published
 * policy over 36 cells: 0.17 at 0.45, 0.11 at 0.02; 0.005 and 0.1 worse).
 */
#define RATE 0.02

static uint32_t weight(struct kvbm_pool *p, uint32_t e)
{
	uint32_t w = p->ghdr->adapt[e];

	return w < WMIN ? WMIN : w > ONE ? ONE : w; /* any process may write it */
}

static uint64_t qtick(struct kvbm_pool *p, uint32_t s)
{
	return kvbm_slot(p, s)->tick >> KVBM_QT_SHIFT;
}

static uint32_t lru_victim(struct kvbm_pool *p)
{
	uint32_t a = kvbm_q_scan(p, 0), b = kvbm_q_scan(p, 1);

	if (a == UINT32_MAX || b == UINT32_MAX)
		return a == UINT32_MAX ? b : a;
	return qtick(p, a) < qtick(p, b) ? a : b;
}

static uint32_t filter_victim(struct kvbm_pool *p)
{
	uint32_t small = p->nslots / 10 ? p->nslots / 10 : 1;
	uint32_t q = kvbm_q_len(p, 0) > small || !kvbm_q_len(p, 1) ? 0 : 1;
	uint32_t s = kvbm_q_scan(p, q);

	return s != UINT32_MAX ? s : kvbm_q_scan(p, !q);
}

static uint32_t lfu_victim(struct kvbm_pool *p)
{
	uint32_t s = kvbm_lin_least(p);

	return s != UINT32_MAX && kvbm_q_ready(p, s) ? s : UINT32_MAX;
}

static uint32_t victim(struct kvbm_pool *p, uint32_t e)
{
	return e == E_LRU ? lru_victim(p) : e == E_FILTER ? filter_victim(p) : lfu_victim(p);
}

/* By weight, with evict_queue.c's deterministic draw (no generator state
 * to repair after a crash). */
static uint32_t draw_expert(struct kvbm_pool *p)
{
	uint32_t w[E_N], sum = 0;

	for (uint32_t e = 0; e < E_N; e++)
		sum += w[e] = weight(p, e);
	double r = kvbm_q_draw(p) * sum;
	for (uint32_t e = 0; e + 1 < E_N; e++) {
		if (r < w[e])
			return e;
		r -= w[e];
	}
	return E_N - 1;
}

uint32_t kvbm_adapt_first(struct kvbm_pool *p)
{
	uint32_t e = draw_expert(p), s = victim(p, e);

	/* that expert has no leaf nobody holds: the others, in order */
	for (uint32_t k = 0; s == UINT32_MAX && k < E_N; k++)
		if (k != e)
			s = victim(p, e = k);
	if (s == UINT32_MAX)
		return kvbm_q_fallback(p);
	kvbm_ghost_put(p, kvbm_slot_key(kvbm_slot(p, s)), e);
	KVBM_FAILPOINT("evict.adapt.ghost");
	return s;
}

/* Released again while listed: to M's tail. */
void kvbm_adapt_hit(struct kvbm_pool *p, uint32_t s, uint32_t q)
{
	kvbm_q_move(p, s, q, 1, 0);
	KVBM_FAILPOINT("evict.adapt.hit");
	kvbm_lin_insert(p, s); /* its heap entry, at its frequency now */
}

/* Expert @e's eviction of @age of its evictions ago came back. */
static void regret(struct kvbm_pool *p, uint32_t e, uint32_t age)
{
	double a = (double)age / (p->nslots ? p->nslots : 1);
	double r = kvbm_exp_approx(-5.298317366548036 * (a < 1.0 ? a : 1.0)); /* 0.005^a */
	double w[E_N], sum = 0;

	for (uint32_t k = 0; k < E_N; k++)
		w[k] = weight(p, k);
	w[e] *= kvbm_exp_approx(-RATE * r);
	for (uint32_t k = 0; k < E_N; k++)
		sum += w[k];
	for (uint32_t k = 0; k < E_N; k++) {
		double v = w[k] / sum * ONE;
		p->ghdr->adapt[k] = v < WMIN ? WMIN : v > ONE ? ONE : (uint32_t)v;
	}
}

uint32_t kvbm_adapt_new(struct kvbm_pool *p, struct kvbm_plh key)
{
	uint32_t age, g = kvbm_ghost_take(p, key, 7, &age);

	if (!g)
		return 0;
	regret(p, g - 1, age);
	return 1;
}

/* Each expert remembers its last half pool of evictions. */
uint32_t kvbm_adapt_window(struct kvbm_pool *p, uint32_t l)
{
	(void)l;
	return p->nslots / 2 ? p->nslots / 2 : 1;
}

int kvbm_adapt_bad_weight(const uint32_t *w)
{
	for (int e = 0; e < E_N; e++)
		if (w[e] > ONE)
			return e;
	return -1;
}

void kvbm_adapt_clamp(struct kvbm_pool *p)
{
	if (!p->ghdr)
		return;
	for (uint32_t e = 0; e < E_N; e++)
		p->ghdr->adapt[e] = weight(p, e);
}
