/* SPDX-License-Identifier: Apache-2.0 */
/*
 * evict.h - what the eviction modules share (mutex held throughout):
 * evict.c's lists and lineage forest, used by evict_queue.c's backends.
 */
#ifndef KVBM_EVICT_H
#define KVBM_EVICT_H

#include "pool.h"

/* control.lists entries, linked through the slots (slot + 1) */
void kvbm_evlist_unlink(struct kvbm_pool *p, struct kvbm_shm_list *l, uint32_t s);
void kvbm_evlist_append(struct kvbm_pool *p, struct kvbm_shm_list *l, uint32_t s);
void kvbm_evlist_prepend(struct kvbm_pool *p, struct kvbm_shm_list *l, uint32_t s);
/* The entries from the head to @last, an entry of @l, to the tail, in
 * their order: rotations of a queue's heads, spliced once. */
void kvbm_evlist_rotate(struct kvbm_pool *p, struct kvbm_shm_list *l, uint32_t last);
/* @s before @before, an entry of @l */
void kvbm_evlist_insert_before(struct kvbm_pool *p, struct kvbm_shm_list *l, uint32_t s,
			       uint32_t before);

/* A 64-bit mix of a 128-bit key; @mult (odd) picks the function. Inline:
 * a call cost as much as the mix, once or twice a block. */
static inline uint64_t kvbm_evict_mix(struct kvbm_plh k, uint64_t mult)
{
	uint64_t h = k.lo ^ (k.hi * mult);

	h ^= h >> 32;
	h *= 0xd6e8feb86659fd93ull;
	h ^= h >> 32;
	return h;
}

/* lfru's extra time for a block of frequency @f, in sixteenths of a pool
 * turnover: 16 x log2(f), rounded (evict.c, and adapt's miniature) */
static inline uint32_t kvbm_lfru_weight(uint32_t f)
{
	static const uint8_t l16[16] = {0, 0, 16, 25, 32, 37, 41, 45, 48, 51, 53, 55, 57, 59, 61, 63};

	return l16[f & 15];
}

/* The lineage forest: node @s joins (a node still there from before its
 * resurrection stays), leaves, and how many nodes hang under it. */
void kvbm_lin_insert(struct kvbm_pool *p, uint32_t s);
void kvbm_lin_remove(struct kvbm_pool *p, uint32_t s);
static inline uint32_t kvbm_lin_children(struct kvbm_pool *p, uint32_t s)
{
	if (s < p->lin_nodes)
		return p->ln[s].nchild;
	kvbm_store_corrupt(p);
	return 0;
}
/* The leaf at the top of the leaf heap, or UINT32_MAX. */
uint32_t kvbm_lin_least(struct kvbm_pool *p);
/* Every leaf's priority again, and the heap rebuilt (adapt's order changed). */
void kvbm_lin_reorder(struct kvbm_pool *p);

/* evict_queue.c: S3-FIFO, ARC, W-TinyLFU, LeCaR */
enum kvbm_qi {
	KVBM_QI_NEW,      /* released: a new block, or a hit on a listed one */
	KVBM_QI_RESTORE,  /* a victim put back at the head of its queue */
	KVBM_QI_REINSERT, /* recovery: at the tail of the queue its tick names */
};
void kvbm_queue_insert(struct kvbm_pool *p, uint32_t s, enum kvbm_qi how);
uint32_t kvbm_queue_first(struct kvbm_pool *p);

/* evict_queue.c's queue and ghost machinery, for evict_adapt.c */
uint32_t kvbm_q_len(struct kvbm_pool *p, uint32_t q);
uint32_t kvbm_q_head(struct kvbm_pool *p, uint32_t q);
void kvbm_q_move(struct kvbm_pool *p, uint32_t s, uint32_t from, uint32_t q, uint32_t f);
int kvbm_q_ready(struct kvbm_pool *p, uint32_t s);
/* the first leaf of queue @q nobody holds (short scan, see SCAN_BUDGET) */
uint32_t kvbm_q_scan(struct kvbm_pool *p, uint32_t q);
uint32_t kvbm_q_fallback(struct kvbm_pool *p);
uint32_t kvbm_q_scan_clock(struct kvbm_pool *p, uint32_t q);
void kvbm_ghost_put(struct kvbm_pool *p, struct kvbm_plh key, uint32_t l);
uint32_t kvbm_ghost_take(struct kvbm_pool *p, struct kvbm_plh key, uint32_t lists, uint32_t *age);
double kvbm_q_draw(struct kvbm_pool *p);   /* deterministic, in [0, 1) */
double kvbm_exp_approx(double y);          /* e^y for y in [-6, 1] */

/* adapt's experts (evict_adapt.c), each with its miniature (evict_mini.c) */
enum kvbm_adapt_expert {
	KVBM_AE_LRU,    /* the oldest leaf */
	KVBM_AE_FILTER, /* S3-FIFO's small queue, M in order of use */
	KVBM_AE_LFU,    /* the leaf heap in LFU's order */
	KVBM_AE_LFRU,   /* the leaf heap in lfru's order */
	KVBM_AE_CLOCK,  /* the small queue, M a CLOCK with counts (S3-FIFO's) */
	KVBM_AE_ARC,    /* the small queue at the target ARC's miniature learns */
	KVBM_AE_N
};
_Static_assert(KVBM_AE_N == KVBM_MINIS, "a miniature per expert");

/* evict_mini.c: adapt's miniature simulations, one per expert */
void kvbm_mini_access(struct kvbm_pool *p, struct kvbm_plh key);
uint64_t kvbm_mini_hits(struct kvbm_pool *p, uint32_t k); /* hit ratio, 2^-16 */
/* Each mini's decayed hit count (0 for one not built), in @h[KVBM_MINIS]:
 * they compare as the ratios do */
void kvbm_mini_hits_all(struct kvbm_pool *p, uint64_t *h);
/* ARC's miniature's target for S, scaled to @size */
uint32_t kvbm_mini_arc_target(struct kvbm_pool *p, uint32_t size);
void kvbm_mini_clear(struct kvbm_pool *p); /* all emptied */

/* evict_adapt.c: ours */
uint32_t kvbm_adapt_first(struct kvbm_pool *p);
void kvbm_adapt_hit(struct kvbm_pool *p, uint32_t s, uint32_t q);
uint32_t kvbm_adapt_new(struct kvbm_pool *p, struct kvbm_plh key); /* its queue */
uint32_t kvbm_adapt_window(struct kvbm_pool *p, uint32_t l);
void kvbm_adapt_recover(struct kvbm_pool *p); /* recovery: the miniatures emptied */
/* Whether adapt's leaf heap is in lfru's order (else LFU's): the low bit
 * of evict.qtarget, any value legal. */
static inline int kvbm_adapt_heap_lfru(const struct kvbm_pool *p)
{
	return p->ev->qtarget & 1;
}

#endif
