/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rhint.h - release hints (lib/rhint.c), for the eviction order: mutex held.
 */
#ifndef KVBM_RHINT_H
#define KVBM_RHINT_H

#include "pool.h"

/* Whether a release whose first block is keyed @key is in the control
 * sample (1 in 16): its blocks are ordered as if unhinted and their
 * outcomes counted for their hint. */
int kvbm_rhint_control(struct kvbm_plh key);
/* The hint a release whose first handle names slot @s inserts its blocks
 * with: @hint, with KVBM_TICK_CONTROL for the control sample. Decided
 * once per call, not per batch of it (see rhint.c). */
uint32_t kvbm_rhint_for_release(struct kvbm_pool *p, uint32_t s, uint32_t hint);
/* The hint slot @s (its tick written) is ordered by: its own, or NONE for
 * an unhinted block, a block of the control sample, a bad value. */
uint32_t kvbm_rhint_placed(struct kvbm_pool *p, uint32_t s);
/* How far a block placed under hint @k moves now, in ticks. */
uint64_t kvbm_rhint_boost(struct kvbm_pool *p, uint32_t k);
/* Eviction priority of a block inserted at counter @t, placed under @k:
 * ONESHOT earlier, CONTINUES later, by kvbm_rhint_boost(). */
uint64_t kvbm_rhint_prio(struct kvbm_pool *p, uint64_t t, uint32_t k);
void kvbm_rhint_count(struct kvbm_pool *p, uint32_t s, int reused);
/* Slot @s enters the order under @hint (with its control bit): when it is
 * the first block of a release (the one the mutex's operation record
 * names), the release counts for its kind if its blocks' outcomes will. */
void kvbm_rhint_release(struct kvbm_pool *p, uint32_t s, uint32_t hint);
/* Slot @s, still in the order, leaves it: hit again (@reused) or evicted.
 * Counts for its hint when it is unhinted or its release was in the
 * control sample (the queued backends' ticks carry queue bits instead:
 * never); nothing before the pool's first hinted release. Inline: it runs at every eviction, and a hinted block outside
 * the sample ends at the test. */
static inline void kvbm_rhint_outcome(struct kvbm_pool *p, uint32_t s, int reused)
{
	uint64_t t = kvbm_slot(p, s)->tick;

	if (p->ev->hint.seen && (!(t & KVBM_TICK_HINT) || (t & KVBM_TICK_CONTROL)) &&
	    !kvbm_backend_is_queued(p->backend))
		kvbm_rhint_count(p, s, reused);
}

#endif
