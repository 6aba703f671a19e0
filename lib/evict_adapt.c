/* SPDX-License-Identifier: Apache-2.0 */
/*
 * evict_adapt.c - adapt, our own policy: six experts over the same
 * leaves, and miniature simulations of each to say which to follow. All
 * under the pool mutex.
 *
 * Two queues of every inactive block, both in order of last use: S
 * (queue 0) holds blocks not used again since they came in, M (queue 1)
 * blocks used again (a hit moves a block to M's tail, and counts its
 * uses in M, up to 3, in the tick's frequency bits). The experts
 * (KVBM_AE_* in evict.h):
 *  - LRU: the oldest leaf of both queues;
 *  - filter: S's head while S holds more than a tenth of the pool, else
 *    M's head (S3-FIFO's small queue, ARC's T1: a block must be used
 *    again before a tenth of the pool has turned over, or go first);
 *  - LFU: the forest's leaf heap, lowest TinyLFU estimate, then oldest;
 *  - lfru: the same heap in lfru's order (evict.c: last use plus one
 *    pool turnover per doubling of the estimate);
 *  - clock: the filter with S3-FIFO's M, a CLOCK: M's head goes around
 *    once more per use counted, one less each time;
 *  - ARC: the filter with S's share the target that ARC's miniature
 *    learns (ghost hits on S's evictions raise it, on M's lower it).
 * Each eviction follows the expert whose miniature (evict_mini.c: the
 * same expert as a cache of its own over a hashed eighth of the blocks)
 * hit most over the last eight pool turnovers, and LRU unless another's
 * beats LRU's outright: the floor against LRU. LFU and lfru share the
 * heap, which is in the order of one of them (evict.qtarget); following
 * the other rebuilds it, at most once per pool turnover. A victim is
 * remembered (the ghost table, a list per kind of expert, half a pool of
 * its evictions); a block that comes back while remembered goes to M: it
 * was used again.
 *
 * Only leaves go, as for the other queued backends: evict_queue.c has the
 * queue walks, the ghost table and the interface. Crash safety is theirs
 * too: a slot's tick names its queue and recovery reinserts in tick
 * order, which rebuilds the heap in the order evict.qtarget names (any
 * value is legal); the miniatures may hold anything (evict_mini.c bounds
 * every read) and recovery empties them.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "evict.h"
#include "../shm/failpoint.h"

static uint64_t qtick(struct kvbm_pool *p, uint32_t s)
{
	return kvbm_slot(p, s)->tick >> KVBM_QT_SHIFT;
}

static uint32_t uses(struct kvbm_pool *p, uint32_t s)
{
	return (uint32_t)(kvbm_slot(p, s)->tick >> KVBM_QT_FREQ_SHIFT) & 3;
}

/*
 * The oldest leaf nobody holds, over both queues: the older head, and a
 * head that may not go rotates to its queue's tail. Scanning each queue
 * on its own and comparing the survivors rotates heads younger than the
 * victim, which renews their ticks and takes them out of LRU's order
 * (0.005 below LRU on the agentic trace at 25% with LRU alone, though
 * 0.012 above it on the conversation trace at 5-10%: docs/EVICTION.md).
 */
static uint32_t lru_victim(struct kvbm_pool *p)
{
	uint64_t n = (uint64_t)kvbm_q_len(p, 0) + kvbm_q_len(p, 1);

	if (p->scan_budget && n > p->scan_budget)
		n = p->scan_budget;
	for (uint64_t i = 0; i < n; i++) {
		uint32_t a = kvbm_q_head(p, 0), b = kvbm_q_head(p, 1), q;
		if (a == UINT32_MAX && b == UINT32_MAX)
			break;
		q = a == UINT32_MAX ? 1 : b == UINT32_MAX ? 0 : qtick(p, b) < qtick(p, a);
		uint32_t s = q ? b : a;
		if (kvbm_q_ready(p, s))
			return s;
		kvbm_q_move(p, s, q, q, uses(p, s));
	}
	return UINT32_MAX;
}

/* S's head while S holds more than @small, else M's: its head (@clock 0,
 * the least recently used) or its CLOCK's hand (@clock 1) */
static uint32_t filter_victim(struct kvbm_pool *p, uint32_t small, int clock)
{
	uint32_t q = kvbm_q_len(p, 0) > small || !kvbm_q_len(p, 1) ? 0 : 1, s;

	s = clock && q ? kvbm_q_scan_clock(p, 1) : kvbm_q_scan(p, q);
	if (s == UINT32_MAX)
		s = clock && !q ? kvbm_q_scan_clock(p, 1) : kvbm_q_scan(p, !q);
	return s;
}

static uint32_t heap_victim(struct kvbm_pool *p)
{
	uint32_t s = kvbm_lin_least(p);

	return s != UINT32_MAX && kvbm_q_ready(p, s) ? s : UINT32_MAX;
}

/* Expert @e's victim (LFU's and lfru's: the heap's, in its order now). */
static uint32_t victim(struct kvbm_pool *p, uint32_t e)
{
	uint32_t tenth = p->nslots / 10 ? p->nslots / 10 : 1;

	switch (e) {
	case KVBM_AE_LRU:
		return lru_victim(p);
	case KVBM_AE_FILTER:
		return filter_victim(p, tenth, 0);
	case KVBM_AE_CLOCK:
		return filter_victim(p, tenth, 1);
	case KVBM_AE_ARC:
		return filter_victim(p, kvbm_mini_arc_target(p, p->nslots), 0);
	default:
		return heap_victim(p);
	}
}

/* The expert whose order the heap is in: LFU or lfru. */
static uint32_t heap_expert(const struct kvbm_pool *p)
{
	return kvbm_adapt_heap_lfru(p) ? KVBM_AE_LFRU : KVBM_AE_LFU;
}

/*
 * The heap to the other order, at most once per pool turnover of queue
 * ticks (a rebuild is a pass over the leaves: O(1) per insertion so):
 * evict.qtarget holds the order (bit 0) and the turnover of the last
 * switch (the rest). Any value is legal: a wrong turnover delays or
 * allows one switch. 0 if it may not switch yet.
 */
static int heap_switch(struct kvbm_pool *p)
{
	uint32_t now = (uint32_t)(p->ev->qtick / (p->nslots ? p->nslots : 1)) & 0x7fffffffu;

	if (p->ev->qtarget >> 1 == now)
		return 0;
	p->ev->qtarget = now << 1 | !kvbm_adapt_heap_lfru(p);
	kvbm_lin_reorder(p);
	return 1;
}

/*
 * The expert whose miniature hits most, if it hits more than LRU's; LRU
 * otherwise (ties included): adapt leaves LRU's order only where LRU's
 * own miniature says another does better. A margin on top (0.0015, 0.005
 * of hit ratio) cost 0.013 and 0.04 of the summed shortfall against the
 * best published policy and raised no cell against LRU (docs/EVICTION.md).
 * The heap's other expert, if it leads, once the heap may switch.
 */
static uint32_t choose_expert(struct kvbm_pool *p)
{
	uint64_t h[KVBM_AE_N];
	uint32_t best = KVBM_AE_LRU, heap = heap_expert(p);
	uint32_t other = heap == KVBM_AE_LFU ? KVBM_AE_LFRU : KVBM_AE_LFU;

	kvbm_mini_hits_all(p, h);
	for (uint32_t e = 0; e < KVBM_AE_N; e++)
		if (h[e] > h[best])
			best = e;
	if (best == other && !heap_switch(p)) {
		best = KVBM_AE_LRU;
		for (uint32_t e = 0; e < KVBM_AE_N; e++)
			if (e != other && h[e] > h[best])
				best = e;
	}
	return best;
}

/* The ghost table's list of expert @e's victims: LRU, a filter, the heap. */
static uint32_t history(uint32_t e)
{
	return e == KVBM_AE_LRU ? 0 : e == KVBM_AE_LFU || e == KVBM_AE_LFRU ? 2 : 1;
}

uint32_t kvbm_adapt_first(struct kvbm_pool *p)
{
	uint32_t e = choose_expert(p), s = victim(p, e);

	/* that expert has no leaf nobody holds: LRU, the filter, the heap */
	for (uint32_t k = 0; s == UINT32_MAX && k < 3; k++) {
		uint32_t x = k == 2 ? heap_expert(p) : k;
		if (x != e)
			s = victim(p, e = x);
	}
	if (s == UINT32_MAX)
		return kvbm_q_fallback(p);
	kvbm_ghost_put(p, kvbm_slot_key(kvbm_slot(p, s)), history(e));
	KVBM_FAILPOINT("evict.adapt.ghost");
	return s;
}

/* Released again while listed: to M's tail, one use more if it was in M
 * (S3-FIFO: a block moves from S to M with none). */
void kvbm_adapt_hit(struct kvbm_pool *p, uint32_t s, uint32_t q)
{
	uint32_t f = uses(p, s);

	kvbm_mini_access(p, kvbm_slot_key(kvbm_slot(p, s)));
	kvbm_q_move(p, s, q, 1, q != 1 ? 0 : f < 3 ? f + 1 : 3);
	KVBM_FAILPOINT("evict.adapt.hit");
	kvbm_lin_insert(p, s); /* its heap entry, at its frequency now */
}

uint32_t kvbm_adapt_new(struct kvbm_pool *p, struct kvbm_plh key)
{
	uint32_t age;

	kvbm_mini_access(p, key);
	return kvbm_ghost_take(p, key, 7, &age) != 0; /* back while remembered: used again */
}

/* Each kind of expert remembers its last half pool of evictions. */
uint32_t kvbm_adapt_window(struct kvbm_pool *p, uint32_t l)
{
	(void)l;
	return p->nslots / 2 ? p->nslots / 2 : 1;
}

void kvbm_adapt_recover(struct kvbm_pool *p)
{
	kvbm_mini_clear(p);
}
