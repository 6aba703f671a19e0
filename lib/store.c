/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store.c - the writer side of the block store, under the pool mutex: the
 * free list, the eviction order, settling a slot nobody holds, the
 * pin/evict handshake, reaping a dead process's blocks, and rebuilding
 * every derived structure from the slot array after a mutex owner died.
 *
 * The slot array is the truth. Every writer step leaves each slot in a
 * valid state; the lists, dups counts, registry index and inactive count
 * are derived from it and rebuilt by kvbm_store_recover().
 *
 * The eviction order itself is lib/evict.c's. A resurrected block stays
 * in it until an allocation meets it and drops it (lazily: a pin takes no
 * mutex).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pool.h"
#include "rhint.h"
#include "../shm/failpoint.h"
#include "../shm/mutex.h"
#include "../shm/liveness.h"

int kvbm_store_lock_checked(struct kvbm_pool *p, uint32_t op, uint32_t arg0)
{
	int r = kvbm_seg_lock_checked(&p->seg);

	if (r < 0)
		return r;
	kvbm_store_op(p, op, arg0);
	return 0;
}

int kvbm_store_lock(struct kvbm_pool *p, uint32_t op, uint32_t arg0)
{
	int r = kvbm_seg_check(&p->seg); /* what kvbm_seg_lock() checks first */

	return r < 0 ? r : kvbm_store_lock_checked(p, op, arg0);
}

void kvbm_store_op(struct kvbm_pool *p, uint32_t op, uint32_t arg0)
{
	struct kvbm_shm_op *o = &p->seg.ctl->op;

	o->proc = p->seg.self;
	o->arg0 = arg0;
	o->step = 0;
	/* op last, release: the fields above stay before it, so an owner
	 * killed here never leaves an op without its arg; the next owner
	 * reads the record under the mutex after EOWNERDEAD (shm/mutex.c
	 * recover()), as for shm/proctable.c op_begin() */
	__atomic_store_n(&o->op, op, __ATOMIC_RELEASE);
}

void kvbm_store_unlock(struct kvbm_pool *p)
{
	/* release: the section's stores stay before the clear, so an owner
	 * killed between it and the unlock left nothing half-done that the
	 * record should have named (read as above) */
	__atomic_store_n(&p->seg.ctl->op.op, KVBM_OP_NONE, __ATOMIC_RELEASE);
	kvbm_seg_unlock(&p->seg);
}

int kvbm_store_repair(struct kvbm_pool *p)
{
	return kvbm_seg_repair(&p->seg);
}

/* ---- lists (links are slot + 1) ------------------------------------------- */

/* The slot a free-list link (slot + 1, not 0) names; out of range, the
 * pool is marked for repair and a sink takes the access (see evict.c). */
static struct kvbm_shm_slot *free_link(struct kvbm_pool *p, uint32_t link)
{
	if (link - 1 < p->nslots)
		return kvbm_slot(p, link - 1);
	kvbm_store_corrupt(p);
	return &p->sink.slot;
}

uint32_t kvbm_free_pop(struct kvbm_pool *p)
{
	struct kvbm_shm_control *c = p->seg.ctl;
	uint32_t s1 = c->free_head;

	if (s1 == 0 || s1 > p->nslots) {
		if (s1 || c->free_count)
			kvbm_store_corrupt(p); /* a count with no list, or a bad head */
		return UINT32_MAX;
	}
	struct kvbm_shm_slot *sl = kvbm_slot(p, s1 - 1);
	if (sl->list != KVBM_LIST_FREE || c->free_count == 0) {
		/* a slot on the free list that says otherwise, or a list
		 * longer than its count (a loop): never hand it out */
		kvbm_store_corrupt(p);
		return UINT32_MAX;
	}
	c->free_head = sl->next;
	if (c->free_head == 0)
		c->free_tail = 0;
	else
		free_link(p, c->free_head)->prev = 0;
	sl->next = sl->prev = 0;
	sl->list = KVBM_LIST_NONE;
	/* relaxed: a gauge, read lock-free only as a snapshot
	 * (kvbm_available_blocks, metrics); the mutex orders it for its holders */
	__atomic_store_n(&c->free_count, c->free_count - 1, __ATOMIC_RELAXED);
	return s1 - 1;
}

void kvbm_free_push(struct kvbm_pool *p, uint32_t s, int front)
{
	struct kvbm_shm_control *c = p->seg.ctl;
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	if (front) {
		sl->prev = 0;
		sl->next = c->free_head;
		if (c->free_head)
			free_link(p, c->free_head)->prev = s + 1;
		else
			c->free_tail = s + 1;
		c->free_head = s + 1;
	} else {
		sl->next = 0;
		sl->prev = c->free_tail;
		if (c->free_tail)
			free_link(p, c->free_tail)->next = s + 1;
		else
			c->free_head = s + 1;
		c->free_tail = s + 1;
	}
	sl->list = KVBM_LIST_FREE;
	/* relaxed: as in kvbm_free_pop() */
	__atomic_store_n(&c->free_count, c->free_count + 1, __ATOMIC_RELAXED);
}

/*
 * Clears every field that belongs to a slot's previous incarnation: key,
 * duplicate link and count, reset-on-release. Every return to RESET or
 * MUTABLE goes through here (eviction, freeing an owned slot, allocation
 * from the free list, recovery): a link left by a process killed between
 * two of these stores would otherwise outlive the incarnation, and the
 * slot's next eviction would lower an unrelated primary's count.
 */
void kvbm_store_fresh(struct kvbm_pool *p, uint32_t s)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	/* relaxed, after the fence: the new generation, stored before,
	 * already fails every reader's check, and the fence keeps these
	 * stores after it (kvbm_key_store_fence, kvbm_index_validate);
	 * nobody reads them until the slot is published again */
	kvbm_key_store_fence();
	__atomic_store_n(&sl->key_hi, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&sl->key_lo, 0, __ATOMIC_RELAXED);
	sl->primary = 0;
	sl->dups = 0;
	__atomic_store_n(&sl->reset_on_release, p->ror_default, __ATOMIC_RELAXED);
}

/* ---- eviction handshake ------------------------------------------------------ */

int kvbm_store_try_evict(struct kvbm_pool *p, uint32_t s)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);
	/* relaxed: mutex held; the CAS below checks the word again */
	uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_RELAXED);

	if (kvbm_slot_state(w) != KVBM_SLOT_REGISTERED)
		return 0;
	uint64_t ev = kvbm_slot_word(kvbm_slot_gen(w), kvbm_slot_owner(w), kvbm_slot_flags(w),
				     KVBM_SLOT_EVICTING);
	/* seq_cst CAS then seq_cst holders load: the evictor's half of the
	 * Dekker handshake with pin_slow()'s seq_cst fetch_or of its bit and
	 * state load (hold.c, rule 1): one of us sees the other. Failure
	 * relaxed: a lost CAS reads nothing after it */
	if (!__atomic_compare_exchange_n(&sl->state, &w, ev, 0, __ATOMIC_SEQ_CST,
					 __ATOMIC_RELAXED))
		return 0;
	if (__atomic_load_n(&sl->holders, __ATOMIC_SEQ_CST) & KVBM_HOLD_PROCS) {
		/* release: restores the word that published the key, for the
		 * same loads (kvbm_index_validate, pin_slow) */
		__atomic_store_n(&sl->state, w, __ATOMIC_RELEASE);
		return 0;
	}
	KVBM_FAILPOINT("store.evict.marked");
	return 1;
}

void kvbm_store_unevict(struct kvbm_pool *p, uint32_t s)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);
	/* relaxed: mutex held; only its holders change an EVICTING word */
	uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_RELAXED);

	/* release: a pinner that loads REGISTERED again (pin_slow's seq_cst
	 * load, kvbm_index_validate's acquire) sees the slot as it was */
	__atomic_store_n(&sl->state,
			 kvbm_slot_word(kvbm_slot_gen(w), kvbm_slot_owner(w), kvbm_slot_flags(w),
					KVBM_SLOT_REGISTERED),
			 __ATOMIC_RELEASE);
}

uint32_t kvbm_store_evict_commit(struct kvbm_pool *p, uint32_t s, int to_mutable)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);
	/* relaxed: mutex held, and the slot EVICTING since our try_evict */
	uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_RELAXED);
	/* only we clear an EVICTING slot's mark (a pinner resurrects only a
	 * slot it found REGISTERED); an RMW, so that the bits of pins in
	 * flight stay. acq_rel is more than needed: the commit's release
	 * below keeps it first */
	uint64_t prev = __atomic_fetch_and(&sl->holders, ~KVBM_HOLD_INACTIVE, __ATOMIC_ACQ_REL);
	struct kvbm_plh key = {sl->key_hi, sl->key_lo};
	/* a primary's own link is meaningless (and cleared); only a
	 * duplicate names the primary whose count it holds */
	uint32_t primary = (kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY) ? 0 : sl->primary;

	/* relaxed: a gauge, ordered by the mutex for recounts and settles */
	if (prev & KVBM_HOLD_INACTIVE)
		__atomic_fetch_sub(&p->seg.ctl->inactive, 1, __ATOMIC_RELAXED);
	/* rule 5: the new generation is committed BEFORE the index entry goes
	 * and the key is cleared, so a reader still holding the entry fails
	 * its generation check instead of reading a cleared key (for the
	 * entry kvbm_index_delete's release keeps that order, for the key
	 * TSO). release: the mark's clear and the count above stay before
	 * it, so a kill after it leaves no mark on a RESET slot (recovery's
	 * check poisons for one); a reader whose acquire loads it misses */
	__atomic_store_n(&sl->state,
			 kvbm_slot_word(kvbm_slot_gen(w) + 1, to_mutable ? p->seg.self : 0, 0,
					to_mutable ? KVBM_SLOT_MUTABLE : KVBM_SLOT_RESET),
			 __ATOMIC_RELEASE);
	KVBM_FAILPOINT("store.evict.committed");
	if (kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY) {
		(void)kvbm_index_delete(&p->ix, key, s);
		/* the registered set lost this hash (a duplicate's eviction
		 * changes nothing a router sees: its primary still stands) */
		kvbm_events_append(p, KVBM_SHM_EV_REMOVED, key, NULL);
	}
	/* out of the order while the key is still there: a lineage node
	 * reads its parent's key from it */
	kvbm_evict_remove(p, s);
	kvbm_store_fresh(p, s);
	KVBM_FAILPOINT("store.evict.unindexed");
	if (!to_mutable)
		kvbm_free_push(p, s, 0);
	if (primary && primary <= p->nslots) {
		struct kvbm_shm_slot *ps = kvbm_slot(p, primary - 1);
		if (ps->dups)
			ps->dups--;
		return primary;
	}
	return 0;
}

void kvbm_store_free_owned(struct kvbm_pool *p, uint32_t s, uint32_t owner_proc)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);
	/* relaxed: the caller's guard read it under the mutex and the
	 * owner's stripe lock (or the owner is dead): nobody changes it */
	uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_RELAXED);
	kvbm_hold_t *e = (kvbm_hold_t *)(p->seg.holders + (uint64_t)owner_proc *
					 kvbm_holder_stride(&p->seg.cfg)) + s;

	/* generation first: the owner's handle goes stale at once. release
	 * is more than needed: a guard (owned_guard) that loads it refuses
	 * and reads nothing after it */
	__atomic_store_n(&sl->state, kvbm_slot_word(kvbm_slot_gen(w) + 1, 0, 0, KVBM_SLOT_RESET),
			 __ATOMIC_RELEASE);
	/* a registrar killed between linking its duplicate and publishing
	 * it left a primary link on this STAGED slot */
	kvbm_store_fresh(p, s);
	/* an RMW: a sibling's TENT or count on the entry stays (rule 7).
	 * release keeps the RESET commit before it; more than needed, the
	 * readers that act on OWNED hold the mutex */
	__atomic_fetch_and(e, (kvbm_hold_t)~KVBM_HOLD_OWNED, __ATOMIC_RELEASE);
	KVBM_FAILPOINT("store.free.owned");
	kvbm_free_push(p, s, 0);
}

/* ---- settle ---------------------------------------------------------------- */

/* Evicts REGISTERED slot @s to the free list if nobody holds it, and
 * settles the primary it was a duplicate of. */
static void reset_unheld(struct kvbm_pool *p, uint32_t s)
{
	if (!kvbm_store_try_evict(p, s))
		return;
	uint32_t primary = kvbm_store_evict_commit(p, s, 0);
	if (primary)
		kvbm_store_settle(p, primary - 1);
}

/* What settle() found. */
enum {
	SETTLE_OTHER = 0,       /* freed, kept active by a duplicate, or gone */
	SETTLE_INACTIVE = 1,    /* it became inactive: the count went to it */
	SETTLE_NOOP_PRIMARY = 2, /* a primary held again, or settled already */
	SETTLE_NOOP_DUP = 3,    /* a duplicate held again */
};

/* Settles @s; @counted: the caller raised the inactive count for it
 * already; @hint: the release hint it enters the order with. Returns a
 * SETTLE_* (SETTLE_INACTIVE: that count went to @s). */
static int settle(struct kvbm_pool *p, uint32_t s, int counted, uint32_t hint)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);
	/* relaxed: mutex held; only its holders change a REGISTERED word */
	uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_RELAXED);
	/* seq_cst is more than needed: a filter, the CAS below (or
	 * try_evict's handshake) decides against pinners, and a bit seen
	 * stale was cleared by someone who settles after us */
	uint64_t h = __atomic_load_n(&sl->holders, __ATOMIC_SEQ_CST);

	if (kvbm_slot_state(w) != KVBM_SLOT_REGISTERED)
		return SETTLE_OTHER; /* already gone */
	if (h & KVBM_HOLD_PROCS) /* held again since the last unpin */
		return kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY ? SETTLE_NOOP_PRIMARY
							       : SETTLE_NOOP_DUP;
	if (!(kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY)) {
		reset_unheld(p, s); /* duplicates always go back to the free pool */
		return 0;
	}
	if (sl->dups)
		return 0; /* a live duplicate keeps its primary active */
	/* relaxed: last writer wins; see kvbm_set_reset_on_release() */
	if (__atomic_load_n(&sl->reset_on_release, __ATOMIC_RELAXED)) {
		reset_unheld(p, s);
		return 0;
	}
	if (h & KVBM_HOLD_INACTIVE) {
		/* settled already; but an allocation may have dropped it from
		 * the order while a pin that then missed had its bit set */
		if (!kvbm_evict_listed(p, s))
			kvbm_evict_insert(p, s);
		return SETTLE_NOOP_PRIMARY;
	}
	/* count first: a crash before the CAS over-counts, which allocation
	 * tolerates, and recovery recounts. relaxed: the CAS below (a
	 * release) keeps it first, so a pinner whose fetch_and sees the mark
	 * (take_from_inactive) lowers a count already raised */
	if (!counted)
		__atomic_fetch_add(&p->seg.ctl->inactive, 1, __ATOMIC_RELAXED);
	KVBM_FAILPOINT("store.settle.counted");
	uint64_t zero = 0;
	/* a pinner's fetch_or (pin_slow) either precedes this (CAS fails: it
	 * holds the slot) or follows it and sees INACTIVE (it resurrects):
	 * one location, so its modification order decides. release is what
	 * the count above needs; seq_cst is more. Failure relaxed: the count
	 * taken back below is ours */
	if (!__atomic_compare_exchange_n(&sl->holders, &zero, KVBM_HOLD_INACTIVE, 0,
					 __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
		/* relaxed: our own raise; no mark, so no pinner lowered it */
		if (!counted)
			__atomic_fetch_sub(&p->seg.ctl->inactive, 1, __ATOMIC_RELAXED);
		return 0;
	}
	KVBM_FAILPOINT("store.settle.inactive");
	kvbm_evict_insert_hint(p, s, hint);
	return SETTLE_INACTIVE;
}

void kvbm_store_settle(struct kvbm_pool *p, uint32_t s)
{
	(void)settle(p, s, 0, KVBM_HINT_NONE);
}

void kvbm_store_settle_many(struct kvbm_pool *p, const uint32_t *s, uint32_t n, uint32_t hint)
{
	uint32_t used = 0, noop_primary = 0, noop_dup = 0;

	/* the count first for all of them, as for one (a crash in between
	 * over-counts, and the recovery it causes recounts); what did not
	 * go inactive is taken back once. relaxed: each mark's CAS in
	 * settle() keeps this first, as for one */
	__atomic_fetch_add(&p->seg.ctl->inactive, (int64_t)n, __ATOMIC_RELAXED);
	if (hint != KVBM_HINT_NONE && !p->ev->hint.seen)
		p->ev->hint.seen = 1; /* the record starts (rhint.h) */
	for (uint32_t i = 0; i < n; i++) {
		int r = settle(p, s[i], 1, hint);
		used += r == SETTLE_INACTIVE;
		/* the reference's late drop: a release whose last unpin a
		 * lock-free pin (or another settle) overtook before this */
		noop_primary += r == SETTLE_NOOP_PRIMARY;
		noop_dup += r == SETTLE_NOOP_DUP;
	}
	if (noop_primary)
		kvbm_metric_add(p, KVBM_M_RELEASE_PRIMARY_NOOP, noop_primary);
	if (noop_dup)
		kvbm_metric_add(p, KVBM_M_RELEASE_DUPLICATE_NOOP, noop_dup);
	if (used != n) /* relaxed: our own raise, taken back */
		__atomic_fetch_sub(&p->seg.ctl->inactive, (int64_t)(n - used), __ATOMIC_RELAXED);
}

void kvbm_store_settle_one(struct kvbm_pool *p, uint32_t s)
{
	/* on failure (poisoned, forked) nothing is lost: a reaper settles it */
	if (kvbm_store_lock(p, KVBM_OP_RELEASE, s) == 0) {
		kvbm_store_settle(p, s);
		kvbm_store_unlock(p);
	}
}

/* ---- reaping a dead process ------------------------------------------------- */

/* Whether every attached process other than @skip is outside a
 * resurrection window, and its window counters equal @b / @e (when
 * @check). No syscall: a process that died inside one keeps its entry
 * ACTIVE until it is reaped (its windows go with it), and a wait for it
 * runs into the bound below like a wait for a stopped one. */
static int windows_quiet(struct kvbm_pool *p, uint32_t skip, int64_t *b, int64_t *e, int check)
{
	uint32_t n = p->seg.cfg.max_procs;

	for (uint32_t i = 0; i < n && i < KVBM_MAX_PROCS; i++) {
		const struct kvbm_shm_proc *pe = &p->seg.procs[i];
		const struct kvbm_shm_metrics *sh = &p->seg.metrics[i];
		/* acquire: pairs with the release of ACTIVE at attach
		 * (shm/proctable.c); more than needed, we hold the mutex,
		 * under which entries are claimed and freed */
		if (i == skip || __atomic_load_n(&pe->state, __ATOMIC_ACQUIRE) != KVBM_PROC_ACTIVE)
			continue;
		/* seq_cst: pairs with the pinner's seq_cst begin and end
		 * around its clear and decrement (hold.c take_from_inactive,
		 * kvbm_resw_close), and follows the recount's seq_cst store
		 * of the count (a store then loads: only seq_cst orders it) */
		int64_t bi = __atomic_load_n(&sh->v[KVBM_M_RES_BEGIN], __ATOMIC_SEQ_CST);
		int64_t ei = __atomic_load_n(&sh->v[KVBM_M_RES_END], __ATOMIC_SEQ_CST);
		if (bi != ei || (check && (bi != b[i] || ei != e[i])))
			return 0;
		b[i] = bi;
		e[i] = ei;
	}
	return 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	/* the vDSO: no syscall under the mutex */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Sets the inactive count to the number of slots marked INACTIVE (mutex
 * held). Everyone else who changes the marks holds the mutex too, except a
 * live pinner resurrecting a slot, which clears the mark and then lowers the
 * count: a recount between those two steps would count one too few. So the
 * count is stored only from a scan during which no live process (other
 * than @skip, the one being reaped) began or was inside such a window;
 * otherwise it is redone. A window that begins after the check clears a
 * mark the scan counted and lowers the stored count after it: exact too.
 *
 * The wait is bounded (KVBM_RECOUNT_WAIT_NS): a window spans at most
 * KVBM_RESW_PINS pins, but its process may be stopped or preempted inside
 * it, and nobody may hold the mutex for long because of another process's
 * scheduling. Giving up keeps the count as it is: over by what dead
 * pinners left (never under: every step counts first and lowers after),
 * which allocation tolerates (it rolls back), and sets recount_pending for
 * the next reap or short allocation. Returns 1 done, 0 deferred.
 */
int kvbm_store_recount_inactive(struct kvbm_pool *p, uint32_t skip)
{
	int64_t b[KVBM_MAX_PROCS] = {0}, e[KVBM_MAX_PROCS] = {0};
	struct kvbm_shm_control *c = p->seg.ctl;
	uint64_t deadline = now_ns() + KVBM_RECOUNT_WAIT_NS;

	for (unsigned attempt = 0;; attempt++) {
		if (attempt && now_ns() > deadline) {
			c->recounts_deferred++;
			c->recount_pending = 1;
			return 0;
		}
		if (!windows_quiet(p, skip, b, e, 0)) {
			__builtin_ia32_pause();
			continue;
		}
		int64_t n = 0;
		/* seq_cst (acquire would do): a mark seen cleared brings the
		 * clearer's res_begin, seq_cst before its clear, to the
		 * second windows_quiet() */
		for (uint32_t s = 0; s < p->nslots; s++)
			if (__atomic_load_n(&kvbm_slot(p, s)->holders, __ATOMIC_SEQ_CST) &
			    KVBM_HOLD_INACTIVE)
				n++;
		/* seq_cst: a pinner's decrement that this overwrites follows
		 * its res_begin, which the seq_cst loads after it then see */
		__atomic_store_n(&c->inactive, n, __ATOMIC_SEQ_CST);
		if (windows_quiet(p, skip, b, e, 1)) {
			c->recount_pending = 0;
			return 1;
		}
	}
}

/*
 * Releases everything dead process @d held, then settles every slot (a
 * live process may be between an unpin and its settle: settling is
 * idempotent, so doing it for it is harmless). Idempotent as a whole: a
 * reaper that dies here leaves the REAP op record and the next locker
 * reruns it.
 */
static int reap_hook(struct kvbm_seg *seg, uint32_t d, void *arg)
{
	struct kvbm_pool *p = arg;
	kvbm_hold_t *ht = (kvbm_hold_t *)(seg->holders +
					  (uint64_t)d * kvbm_holder_stride(&seg->cfg));
	uint64_t bit = 1ull << d;

	for (uint32_t s = 0; s < p->nslots; s++) {
		/* acquire: pairs with the dead process's last release on its
		 * entry (hold.c: the TENT clear after its bit's clear), so an
		 * entry read as 0 left no bit */
		kvbm_hold_t v = __atomic_load_n(&ht[s], __ATOMIC_ACQUIRE);
		if (v == 0)
			continue;
		/* committed, tentative or owned: the bit may be set either way.
		 * An RMW, so live pinners' bits stay; seq_cst is more than
		 * needed, the settles below run in this thread */
		__atomic_fetch_and(&kvbm_slot(p, s)->holders, ~bit, __ATOMIC_SEQ_CST);
		/* release: the bit's clear stays before it, so a reaper killed
		 * in between leaves the entry, and the next one redoes both */
		__atomic_store_n(&ht[s], 0, __ATOMIC_RELEASE);
	}
	KVBM_FAILPOINT("store.reap.bits");
	for (uint32_t s = 0; s < p->nslots; s++) {
		struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		/* acquire is more than needed: a dead owner's word changes no
		 * more, and kvbm_store_free_owned() reads nothing it published */
		uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_ACQUIRE);
		uint32_t st = kvbm_slot_state(w);
		if ((st == KVBM_SLOT_MUTABLE || st == KVBM_SLOT_STAGED) &&
		    kvbm_slot_owner(w) == d)
			kvbm_store_free_owned(p, s, d);
	}
	KVBM_FAILPOINT("store.reap.freed");
	for (uint32_t s = 0; s < p->nslots; s++)
		kvbm_store_settle(p, s);
	/* a pinner killed between clearing INACTIVE and lowering the count
	 * left it one too high */
	kvbm_store_recount_inactive(p, d);
	return 0;
}

/* ---- recovery after the mutex owner died ------------------------------------ */

/*
 * Sorts the list at @list (slot + 1 in each slot's next link, 0 ends it) by
 * tick, stably, and returns its head: Tatham's bottom-up merge sort, which
 * allocates nothing. Recovery runs it: a malloc failing there would poison
 * the pool for every process.
 */
static uint32_t sort_by_tick(struct kvbm_pool *p, uint32_t list)
{
#define NEXT(e) (kvbm_slot(p, (e) - 1)->next)
#define TICK(e) (kvbm_slot(p, (e) - 1)->tick)
	for (uint64_t run = 1;; run *= 2) {
		uint32_t a = list, tail = 0, merges = 0;
		list = 0;
		while (a) {
			uint32_t b = a;
			uint64_t na = 0, nb = run;
			merges++;
			while (na < run && b) {
				na++;
				b = NEXT(b);
			}
			while (na > 0 || (nb > 0 && b)) {
				uint32_t e;
				if (na > 0 && (nb == 0 || !b || TICK(a) <= TICK(b))) {
					e = a;
					a = NEXT(a);
					na--;
				} else {
					e = b;
					b = NEXT(b);
					nb--;
				}
				if (tail)
					NEXT(tail) = e;
				else
					list = e;
				tail = e;
			}
			a = b;
		}
		if (tail)
			NEXT(tail) = 0;
		if (merges <= 1)
			return list;
	}
#undef NEXT
#undef TICK
}

/* Entries that no longer validate go; REGISTERED primaries missing from it
 * are re-inserted (a dead owner may have stopped between the two). */
static void rebuild_index(struct kvbm_pool *p)
{
	struct kvbm_plh key;
	uint32_t s, found;
	uint64_t g;

	/* the stash's count first: a damaged one would hide stash entries
	 * from the lookups below (release: as kvbm_index_insert's) */
	__atomic_store_n(p->ix.stash_used, kvbm_index_stash_count(&p->ix), __ATOMIC_RELEASE);
	for (uint32_t b = 0; b <= p->ix.mask + KVBM_INDEX_STASH_BUCKETS; b++) {
		struct kvbm_shm_bucket *bk = kvbm_index_bucket(&p->ix, b);
		for (int i = 0; i < KVBM_BUCKET_ENTRIES; i++) {
			uint32_t s1 = bk->slot[i];
			if (s1 == 0)
				continue;
			int ok = 0;
			if (s1 <= p->nslots) {
				struct kvbm_shm_slot *sl = kvbm_slot(p, s1 - 1);
				key = (struct kvbm_plh){sl->key_hi, sl->key_lo};
				ok = kvbm_index_lookup(&p->ix, key, &s, &g) && s == s1 - 1;
			}
			/* release is more than needed: a reader that loads 0
			 * skips the entry, and nothing has to precede it */
			if (!ok)
				__atomic_store_n(&bk->slot[i], 0, __ATOMIC_RELEASE);
		}
	}
	/* relaxed: fewer entries now, the count only lets readers skip */
	__atomic_store_n(p->ix.stash_used, kvbm_index_stash_count(&p->ix), __ATOMIC_RELAXED);
	for (s = 0; s < p->nslots; s++) {
		struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		uint64_t w = sl->state;
		if (kvbm_slot_state(w) != KVBM_SLOT_REGISTERED ||
		    !(kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY))
			continue;
		key = (struct kvbm_plh){sl->key_hi, sl->key_lo};
		/* not into s: a damaged segment can hold two primaries of one
		 * key, and the lookup then names the other one (an earlier
		 * slot sent the loop back, forever) */
		int hit = kvbm_index_lookup(&p->ix, key, &found, &g);
		if (hit && found == s)
			continue;
		if (hit ||
		    kvbm_index_insert(&p->ix, key, s, kvbm_slot_gen(w)) < 0) {
			/* another primary owns the key, or no room after all:
			 * no longer shareable, freed on release. release: as
			 * in register_one, this word replaces the one that
			 * published the key */
			__atomic_store_n(&sl->state,
					 kvbm_slot_word(kvbm_slot_gen(w), 0, 0,
							KVBM_SLOT_REGISTERED),
					 __ATOMIC_RELEASE);
		}
	}
}

/* to the host's log function, if any: never to its stderr */
static void report_log(const char *msg, void *arg)
{
	(void)arg;
	kvbm_log(KVBM_LOG_ERROR, "repair failed: %s", msg);
}

/*
 * EOWNERDEAD: the previous owner died inside a critical section. Every
 * slot is in a valid state, but the lists, counts and index around it may
 * be half-updated: resolve EVICTING slots (rule 8), then rebuild the free
 * list, dups counts, eviction order, index and inactive count from the slot
 * array. Dead owners' MUTABLE/STAGED slots are reaped right after.
 */
static int recover_hook(struct kvbm_seg *seg, const struct kvbm_shm_op *op, void *arg)
{
	struct kvbm_pool *p = arg;
	struct kvbm_shm_control *c = seg->ctl;
	uint32_t list = 0, tail = 0;

	(void)op;
	for (uint32_t s = 0; s < p->nslots; s++) {
		struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		uint64_t w = sl->state;
		if (kvbm_slot_state(w) == KVBM_SLOT_EVICTING) {
			/* rule 8: index entry and key are intact until commit.
			 * seq_cst is more than needed: either way the slot goes
			 * back to REGISTERED, and the settles below go by the
			 * mask. release (both): restores the word that published
			 * the key, as in kvbm_store_unevict() */
			if (__atomic_load_n(&sl->holders, __ATOMIC_SEQ_CST) & KVBM_HOLD_PROCS)
				kvbm_store_unevict(p, s);
			else
				__atomic_store_n(&sl->state,
						 kvbm_slot_word(kvbm_slot_gen(w), 0,
								kvbm_slot_flags(w),
								KVBM_SLOT_REGISTERED),
						 __ATOMIC_RELEASE);
		}
	}
	rebuild_index(p);
	KVBM_FAILPOINT("store.recover.indexed");
	/* before the marks are read below: a pinned slot is not inactive */
	kvbm_pins_rebuild(p);
	c->free_head = c->free_tail = 0;
	c->free_count = 0;
	kvbm_evict_clear(p);
	for (uint32_t s = 0; s < p->nslots; s++) {
		struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		sl->list = KVBM_LIST_NONE;
		sl->dups = 0;
	}
	for (uint32_t s = 0; s < p->nslots; s++) {
		struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		uint64_t w = sl->state;
		uint32_t st = kvbm_slot_state(w);
		if (st == KVBM_SLOT_RESET) {
			/* an eviction killed after its RESET commit left the
			 * old incarnation's fields */
			kvbm_store_fresh(p, s);
			kvbm_free_push(p, s, 0);
		} else if (st != KVBM_SLOT_REGISTERED) {
			/* MUTABLE/STAGED: a link here was left by a registrar
			 * killed before publishing (its owner, being reaped) */
			sl->primary = 0;
		} else if (st == KVBM_SLOT_REGISTERED && !(kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY)) {
			uint32_t pr = sl->primary;
			if (pr && pr <= p->nslots &&
			    kvbm_slot_state(kvbm_slot(p, pr - 1)->state) == KVBM_SLOT_REGISTERED)
				kvbm_slot(p, pr - 1)->dups++;
			else
				sl->primary = 0;
		}
	}
	for (uint32_t s = 0; s < p->nslots; s++) {
		struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		/* relaxed: only a settle, under the mutex we hold, sets the
		 * mark; a pinner clearing it meanwhile leaves an order entry
		 * that the evictor drops (lazily) */
		if (kvbm_slot_state(sl->state) == KVBM_SLOT_REGISTERED &&
		    (__atomic_load_n(&sl->holders, __ATOMIC_RELAXED) & KVBM_HOLD_INACTIVE)) {
			if (sl->dups) { /* a duplicate was registered meanwhile */
				/* an RMW: pinners' bits stay; seq_cst is more
				 * than needed, the recount below follows */
				__atomic_fetch_and(&sl->holders, ~KVBM_HOLD_INACTIVE,
						   __ATOMIC_SEQ_CST);
				continue;
			}
			if (tail) /* onto the list to sort, in slot order */
				kvbm_slot(p, tail - 1)->next = s + 1;
			else
				list = s + 1;
			tail = s + 1;
		}
	}
	/* the eviction order survives: it is the order of the insertion ticks.
	 * The inactive slots are on no list now, so their next links hold the
	 * sort; reinserting one rewrites its links, so read the next first */
	if (tail)
		kvbm_slot(p, tail - 1)->next = 0;
	list = sort_by_tick(p, list);
	for (uint32_t e = list, nx; e; e = nx) {
		nx = kvbm_slot(p, e - 1)->next;
		kvbm_evict_reinsert(p, e - 1); /* and the counter with it */
	}
	kvbm_store_recount_inactive(p, UINT32_MAX);
	for (uint32_t s = 0; s < p->nslots; s++)
		kvbm_store_settle(p, s);
	/* what the dead owner changed may be missing from the event stream
	 * (or in it, undone): readers resync from a snapshot */
	kvbm_events_resync(p);
	/* the repaired pool must pass the checker before the mutex is marked
	 * consistent; otherwise the caller poisons the segment, and every
	 * process gets KVBM_EPOISONED instead of building on a broken one */
	if (kvbm_check_seg(seg, KVBM_CK_LOCKED, report_log, NULL) != 0)
		return KVBM_ECORRUPT;
	return 0;
}

void kvbm_store_hooks(struct kvbm_pool *p)
{
	p->seg.reap = reap_hook;
	p->seg.reap_arg = p;
	p->seg.recover = recover_hook;
	p->seg.recover_arg = p;
}
