/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hold.c - holder bits and counts: the lock-free pin and unpin of
 * docs/PROTOCOL.md (model: the design's pin_evict.pml, reader and
 * UNPIN, with FASTGEN=1 REGLOCK=1 EVFIX=1 KEYRECHECK=1).
 *
 * Each process has one bit in a slot's holder mask and counts its holds in
 * its own holder table entry. The entry never reads zero while the bit may
 * be set (TENTATIVE covers the windows on both sides), so a reaper that
 * clears the bit of every non-zero entry of a dead process clears every
 * bit it left behind.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#include "pool.h"
#include "../shm/failpoint.h"

#define STRIPES_MAX 4096u

int kvbm_hold_setup(struct kvbm_pool *p)
{
	uint32_t n = 1;

	while (n < p->nslots && n < STRIPES_MAX)
		n <<= 1;
	p->stripes = calloc(n, sizeof(*p->stripes));
	p->hints = calloc(KVBM_HINTS, sizeof(*p->hints));
	if (!p->stripes || !p->hints) {
		kvbm_hold_teardown(p);
		return -ENOMEM;
	}
	p->stripe_mask = n - 1;
	p->ht = (kvbm_hold_t *)(p->seg.holders + (uint64_t)p->seg.self *
				kvbm_holder_stride(&p->seg.cfg));
	p->bit = 1ull << p->seg.self;
	p->shard = &p->seg.metrics[p->seg.self];
	/* the entry's previous owner may have died inside a resurrection
	 * window (its begin counted, its end not): the windows are ours now */
	__atomic_store_n(&p->shard->v[KVBM_M_RES_END],
			 __atomic_load_n(&p->shard->v[KVBM_M_RES_BEGIN], __ATOMIC_SEQ_CST),
			 __ATOMIC_SEQ_CST);
	return 0;
}

void kvbm_hold_teardown(struct kvbm_pool *p)
{
	free(p->stripes);
	p->stripes = NULL;
	free(p->hints);
	p->hints = NULL;
}

/* The stripe lock's wait (pool.h). Process-local, so a spinlock dies with
 * its process and never needs recovery; held for a handful of
 * instructions, never across a syscall. */
void kvbm_stripe_spin(struct kvbm_pool *p, uint32_t s)
{
	uint32_t *l = &p->stripes[s & p->stripe_mask];

	for (unsigned spins = 0;; spins++) {
		uint32_t z = 0;
		/* acquire: the critical section's entry loads stay after it */
		if (__atomic_compare_exchange_n(l, &z, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			return;
		while (__atomic_load_n(l, __ATOMIC_RELAXED)) {
			if (++spins > 1000)
				sched_yield(); /* the holder was preempted */
			else
				__builtin_ia32_pause();
		}
	}
}

/*
 * Our committed pin took the slot out of the inactive pool if the mask had
 * the INACTIVE bit: whoever's RMW clears it lowers the count, so exactly
 * one party does. The clear and the decrement are two steps, so the window
 * between them is bracketed in our shard (seq_cst, like the clear): a
 * recount under the mutex (kvbm_store_recount_inactive) retries until no
 * live process is inside one, and a process killed inside one leaves a
 * count that the recount corrects. With @w the window stays open across
 * the caller's pins and the count is lowered once, at kvbm_resw_close.
 */
static void take_from_inactive(struct kvbm_pool *p, struct kvbm_shm_slot *sl,
			       struct kvbm_resw *w)
{
	if (w && w->open && w->pins >= KVBM_RESW_PINS)
		kvbm_resw_close(p, w); /* bounded: see KVBM_RESW_PINS */
	if (!w || !w->open)
		__atomic_fetch_add(&p->shard->v[KVBM_M_RES_BEGIN], 1, __ATOMIC_SEQ_CST);
	/* in this form (only the one bit of the result used) a lock btr */
	int was = (__atomic_fetch_and(&sl->holders, ~KVBM_HOLD_INACTIVE, __ATOMIC_SEQ_CST) &
		   KVBM_HOLD_INACTIVE) != 0;
	KVBM_FAILPOINT("hold.pin.taken");
	if (w) {
		w->open = 1;
		w->taken += (uint32_t)was;
		w->pins++;
		return;
	}
	if (was)
		__atomic_fetch_sub(&p->seg.ctl->inactive, 1, __ATOMIC_SEQ_CST);
	__atomic_fetch_add(&p->shard->v[KVBM_M_RES_END], 1, __ATOMIC_SEQ_CST);
}

void kvbm_resw_close(struct kvbm_pool *p, struct kvbm_resw *w)
{
	if (!w || !w->open)
		return;
	if (w->taken)
		__atomic_fetch_sub(&p->seg.ctl->inactive, (int64_t)w->taken, __ATOMIC_SEQ_CST);
	__atomic_fetch_add(&p->shard->v[KVBM_M_RES_END], 1, __ATOMIC_SEQ_CST);
	w->open = 0;
	w->taken = 0;
	w->pins = 0;
}

/* 0 -> 1: record intent, set the bit, re-read the state (rule 1). */
static int pin_slow(struct kvbm_pool *p, int st, uint32_t s, uint64_t gen, struct kvbm_resw *w)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);
	kvbm_hold_t *e = &p->ht[s];
	uint64_t old, ws;

	/* the tentative entry comes first: if we die after the fetch_or, the
	 * reaper finds the entry and clears our bit */
	if (st)
		kvbm_entry_put(e, __atomic_load_n(e, __ATOMIC_RELAXED) | KVBM_HOLD_TENT);
	else
		__atomic_fetch_or(e, KVBM_HOLD_TENT, __ATOMIC_SEQ_CST);
	KVBM_FAILPOINT("hold.pin.tentative");
	/* seq_cst on both: with the evictor's seq_cst CAS to EVICTING and
	 * holders load this is a Dekker handshake, one of us sees the other */
	old = __atomic_fetch_or(&sl->holders, p->bit, __ATOMIC_SEQ_CST);
	KVBM_FAILPOINT("hold.pin.bit");
	ws = __atomic_load_n(&sl->state, __ATOMIC_SEQ_CST);
	if (kvbm_slot_state(ws) != KVBM_SLOT_REGISTERED || kvbm_slot_gen(ws) != gen) {
		/* lost the race: a clean miss */
		uint64_t now = old;
		if (!(old & p->bit))
			now = __atomic_and_fetch(&sl->holders, ~p->bit, __ATOMIC_SEQ_CST);
		if (st)
			kvbm_entry_put(e, __atomic_load_n(e, __ATOMIC_RELAXED) & ~KVBM_HOLD_TENT);
		else
			__atomic_fetch_and(e, (kvbm_hold_t)~KVBM_HOLD_TENT, __ATOMIC_RELEASE);
		/* an evictor that saw our bit dropped the slot from the order
		 * and rolled back: still marked INACTIVE, nobody holding it,
		 * it must go back in (2: the caller settles it, mutex) */
		return (now & KVBM_HOLD_INACTIVE) && !(now & KVBM_HOLD_PROCS) ? 2 : 0;
	}
	/* commit: TENTATIVE -> one hold, in one step (the count was 0 and only
	 * stripe holders touch a zero count) */
	kvbm_hold_t v = __atomic_load_n(e, __ATOMIC_RELAXED);
	if (st)
		kvbm_entry_put(e, (kvbm_hold_t)((v & ~KVBM_HOLD_TENT) + 1));
	else
		while (!__atomic_compare_exchange_n(e, &v, (kvbm_hold_t)((v & ~KVBM_HOLD_TENT) + 1),
						    0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			;
	KVBM_FAILPOINT("hold.pin.commit");
	if (old & KVBM_HOLD_INACTIVE)
		take_from_inactive(p, sl, w);
	return 1;
}

/* pool.h: pin_slow's one-writer steps, for lib/match.c's run of first
 * holds, which stays inside its operation */
int kvbm_hold_pin_first_ow(struct kvbm_pool *p, uint32_t s, uint64_t gen, struct kvbm_resw *w)
{
	return pin_slow(p, 1, s, gen, w);
}

/* 0 -> 1 (or an overflow); the inline kvbm_hold_pin's slow path, kept
 * out of line so that the fast path saves no registers. */
int kvbm_hold_pin_first(struct kvbm_pool *p, int st, uint32_t s, uint64_t gen, int overflow,
			struct kvbm_resw *w)
{
	kvbm_hold_t *e = &p->ht[s];
	int r;

	if (overflow) {
		kvbm_st_leave(p, st);
		return -EOVERFLOW;
	}
	kvbm_stripe_lock(p, st, s);
	if (kvbm_count_inc(st, e, &overflow)) {
		/* a sibling took the first hold meanwhile: as the fast path */
		kvbm_stripe_unlock(p, st, s);
		return kvbm_hold_pin_check(p, st, s, gen, w);
	}
	r = overflow ? -EOVERFLOW : pin_slow(p, st, s, gen, w);
	kvbm_stripe_unlock(p, st, s);
	kvbm_st_leave(p, st);
	if (r == 2) {
		/* the mutex holder may be recounting, waiting for our window */
		kvbm_resw_close(p, w);
		kvbm_store_settle_one(p, s);
		r = 0;
	}
	return r;
}

void kvbm_hold_unpin_settle(struct kvbm_pool *p, uint32_t s, struct kvbm_resw *w)
{
	if (kvbm_hold_unpin(p, s) == 1) {
		kvbm_resw_close(p, w); /* as above */
		kvbm_store_settle_one(p, s);
	}
}

/* 1 -> 0 (or not held): the inline kvbm_hold_unpin's slow path; the
 * caller ends the one-writer operation. */
int kvbm_hold_unpin_last(struct kvbm_pool *p, int st, uint32_t s)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);
	kvbm_hold_t *e = &p->ht[s];
	uint64_t old;

	if (st) {
		/* one writer: no stripe lock, no sibling to race */
		kvbm_hold_t v = __atomic_load_n(e, __ATOMIC_RELAXED);
		if (!(v & KVBM_HOLD_COUNT))
			return KVBM_ENOTHELD;
		if ((v & KVBM_HOLD_COUNT) > 1) {
			kvbm_entry_put(e, (kvbm_hold_t)(v - 1u));
			return 0;
		}
		return kvbm_hold_drop_last_ow(p, s, v);
	}
	kvbm_stripe_lock(p, st, s);
	/* 1 -> 0 under the stripe lock (rule 2): the last hold becomes
	 * TENTATIVE so the entry stays non-zero until the bit is clear. A
	 * sibling's fast path may still raise the count (it needs no stripe
	 * lock while the count is > 0): every failed CAS decides again, or
	 * we would clear the bit of a hold the sibling just took */
	kvbm_hold_t v = __atomic_load_n(e, __ATOMIC_RELAXED);
	for (;;) {
		kvbm_hold_t c = v & KVBM_HOLD_COUNT;
		if (c == 0) {
			kvbm_stripe_unlock(p, st, s);
			return KVBM_ENOTHELD;
		}
		kvbm_hold_t nv = (kvbm_hold_t)(v - 1u);
		if (c == 1)
			nv |= KVBM_HOLD_TENT;
		/* acq_rel: as kvbm_count_dec's, a sibling's earlier drop (and
		 * its reset-on-release store) is ours to see when we settle */
		if (!__atomic_compare_exchange_n(e, &v, nv, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			continue;
		if (c > 1) {
			kvbm_stripe_unlock(p, st, s);
			return 0;
		}
		break;
	}
	KVBM_FAILPOINT("hold.unpin.tentative");
	/* seq_cst: pairs with the evictor's holders load (handshake) */
	old = __atomic_fetch_and(&sl->holders, ~p->bit, __ATOMIC_SEQ_CST);
	KVBM_FAILPOINT("hold.unpin.bit");
	__atomic_fetch_and(e, (kvbm_hold_t)~KVBM_HOLD_TENT, __ATOMIC_RELEASE);
	kvbm_stripe_unlock(p, st, s);
	return (old & KVBM_HOLD_PROCS) == p->bit ? 1 : 0;
}

void kvbm_hold_register(struct kvbm_pool *p, int st, uint32_t s)
{
	kvbm_hold_t *e = &p->ht[s];

	/* bit first, while the entry is still OWNED (non-zero): a reaper
	 * never misses it */
	__atomic_fetch_or(&kvbm_slot(p, s)->holders, p->bit, __ATOMIC_SEQ_CST);
	kvbm_hold_t v = __atomic_load_n(e, __ATOMIC_RELAXED);
	if (st)
		kvbm_entry_put(e, (kvbm_hold_t)((v & ~KVBM_HOLD_OWNED) + 1));
	else
		while (!__atomic_compare_exchange_n(e, &v, (kvbm_hold_t)((v & ~KVBM_HOLD_OWNED) + 1),
						    0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
			;
}
