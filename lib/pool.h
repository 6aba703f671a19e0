/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pool.h - the per-process attach handle behind struct kvbm_pool, and the
 * block store's internal calls. PRIVATE.
 *
 * Concurrency rules (docs/PROTOCOL.md; rule numbers are its
 * handshake rules, which the design's SPIN model pin_evict.pml checks):
 *  - slot transitions out of RESET, into and out of EVICTING, the pool
 *    lists, the registry index and slot.dups change only under the pool
 *    mutex; a MUTABLE or STAGED slot's key and state are written by its
 *    owner alone, without the mutex;
 *  - pin and unpin (kvbm_hold_*) take no pool mutex: a process's 0<->1
 *    count transitions on a slot are serialised by a process-local stripe
 *    lock (rule 2); lock order is pool mutex, then stripe lock (rule 4);
 *  - an unpin that empties a slot's holder mask leaves the slot REGISTERED
 *    with no holder and not yet inactive: kvbm_store_settle() (mutex) puts
 *    it where it belongs. Settling is idempotent and anyone may do it, so a
 *    process that dies before settling loses nothing: the reaper settles
 *    every slot.
 */
#ifndef KVBM_LIB_POOL_H
#define KVBM_LIB_POOL_H

#include "kvbm.h"
#include "index.h"
#include "../shm/failpoint.h"
#include "../shm/segment.h"

struct kvbm_pool {
	struct kvbm_seg seg;
	struct kvbm_index ix;
	uint64_t id;      /* pool instance id: handles carry it */
	uint32_t nslots;
	uint32_t block_size;
	uint32_t dup_policy;
	uint32_t ror_default; /* pool-wide reset-on-release */
	uint64_t bit;     /* our holder bit */
	kvbm_hold_t *ht;  /* our holder table */
	struct kvbm_shm_metrics *shard;
	uint32_t stripe_mask;
	uint32_t *stripes; /* process-local per-slot locks (rule 2) */
	/* match hints (lib/match.c): where a key was last matched, read and
	 * written only inside one-writer operations (so by one thread);
	 * KVBM_HINTS entries, in sets of two (kvbm_hint_set) */
	struct kvbm_hint *hints;
	struct kvbm_att *att; /* process-local attachments (attach.c) */
	/* eviction (evict.c): views into the segment's eviction region */
	struct kvbm_shm_evict *ev;
	uint32_t backend;
	uint8_t thresholds[4];
	uint32_t sketch_words;
	uint64_t *sketch;          /* NULL: no frequency tracking */
	struct kvbm_shm_lnode *ln; /* lineage backends only */
	uint32_t *heads;
	struct kvbm_shm_hent *heap;
	uint64_t *gpfrag; /* ghosts' parent fragments, by node - nslots */
	uint32_t lin_nodes, lin_buckets; /* this process's geometry, not the segment's */
	/* evict.c's hints, node + 1 (0: none), used only once validated by
	 * key: the ghost its last link made (its parent, usually released
	 * next) and the node it last inserted (a child's parent, released
	 * in order) */
	uint32_t lin_ghost_hint, lin_last_hint;
	/* the ghost table of S3-FIFO and ARC (evict_queue.c), or NULL */
	struct kvbm_shm_ghosthdr *ghdr;
	struct kvbm_shm_gbucket *gtab;
	uint32_t gbuckets;
	uint8_t *mini;                /* adapt's miniatures (evict_adapt.c) */
	uint32_t mini_ents, mini_tslots;
	uint32_t scan_budget; /* evict_queue.c, for one call: 0 = unbounded */
	uint32_t ev_cap, ev_entry_size;  /* the event ring's, likewise (events.c) */
	/* where an out-of-range index read from the segment lands (evict.c,
	 * store.c) instead of outside the mapping; written only by the mutex
	 * holder, so by one thread at a time */
	struct {
		struct kvbm_shm_slot slot;
		struct kvbm_shm_lnode node;
		struct kvbm_shm_hent hent;
		uint64_t pfrag;
	} sink;
};

/*
 * A match hint: the slot that last held a key matched through this
 * handle, and the low 32 bits of the state word it had then (REGISTERED,
 * PRIMARY, no owner, the generation's low 16 bits: what an index entry
 * records). Only a guess: a match trusts it after the checks an index
 * entry gets (lib/match.c, hint_find), so a stale or garbage hint costs a
 * lookup, never a wrong hit. An empty entry (all zero) names slot 0 with
 * a word no REGISTERED slot has (its state bits are 0), so it never
 * passes; the slot is stored as is, not + 1, which saves the match's
 * hinted loop a subtraction per block. Two ways per set, in one cache
 * line: two keys of one prefix that share a set do not take turns
 * missing.
 */
struct kvbm_hint {
	uint32_t s;
	uint32_t w;
};
#define KVBM_HINTS 2048u /* 16 KiB a handle */
static inline struct kvbm_hint *kvbm_hint_set(struct kvbm_hint *hints, struct kvbm_plh key)
{
	/* the low bits of a real key's halves are XXH3 output already; bits
	 * 1 to 10 as an even entry index: an and and a scaled address */
	return &hints[(uint32_t)(key.hi ^ key.lo) & (KVBM_HINTS - 2)];
}

/* Checks @cfg and converts it to the stored form. Returns 0 or -EINVAL. */
int kvbm_config_to_shm(const struct kvbm_config *cfg, struct kvbm_shm_config *out);
/* The first field an opener's @want disagrees with the pool's @have on
 * (lib/confdiff.c): 1 and *out (may be NULL), or 0 when they agree. */
int kvbm_shm_config_diff(const struct kvbm_shm_config *have, const struct kvbm_shm_config *want,
			 struct kvbm_config_diff *out);

static inline void kvbm_metric_add(struct kvbm_pool *p, int idx, int64_t v)
{
	/* relaxed: a counter, read only as a sum in snapshots */
	__atomic_fetch_add(&p->shard->v[idx], v, __ATOMIC_RELAXED);
}

static inline struct kvbm_shm_slot *kvbm_slot(struct kvbm_pool *p, uint32_t s)
{
	return &p->seg.slots[s];
}

static inline struct kvbm_plh kvbm_slot_key(const struct kvbm_shm_slot *sl)
{
	struct kvbm_plh k;

	/* relaxed: the key is published by the release store of STAGED or
	 * REGISTERED that follows its (relaxed) stores; every caller reads it
	 * after an acquire load of that state word or a seq_cst RMW of a pin,
	 * which orders these loads after it. Nothing stores the key with
	 * release, so an acquire here would pair with nothing */
	k.hi = __atomic_load_n(&sl->key_hi, __ATOMIC_RELAXED);
	k.lo = __atomic_load_n(&sl->key_lo, __ATOMIC_RELAXED);
	return k;
}

/*
 * The seqlock writer's fence: stores to a slot's key after a store of its
 * state word (a new generation, or STAGED over MUTABLE) must not become
 * visible before it. x86-64's store order gives that for free, and gcc
 * emits nothing for this fence there; it makes the pairing with the
 * readers' acquire key loads (kvbm_index_validate) hold in C11 terms.
 * ThreadSanitizer does not model fences (gcc refuses them under it), so
 * its build gets the compiler barrier alone, which is what x86 needs.
 */
static inline void kvbm_key_store_fence(void)
{
#if defined(__SANITIZE_THREAD__)
	__atomic_signal_fence(__ATOMIC_RELEASE);
#else
	__atomic_thread_fence(__ATOMIC_RELEASE);
#endif
}

/* ---- hold.c: holder bits and counts, lock-free ---------------------------- */

int kvbm_hold_setup(struct kvbm_pool *p);
void kvbm_hold_teardown(struct kvbm_pool *p);
/*
 * One writer (hold.c): 1 when this operation may update our holder entries
 * with plain stores. Every kvbm_st_enter pairs with a kvbm_st_leave, with
 * no wait for the mutex or another thread in between. A biased handle's
 * owner marks itself busy first; see shm/segment.c for the handshake with
 * a revoking thread, to which the compiler barrier is one side (the other
 * side's membarrier() makes it a fence).
 */
static inline int kvbm_st_enter(struct kvbm_pool *p)
{
	int st = __atomic_load_n(&p->seg.one_thread, __ATOMIC_RELAXED);

	if (st != KVBM_SEG_ST_BIASED)
		return st;
	__atomic_store_n(&p->seg.st_busy, 1, __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&p->seg.st_revoke, __ATOMIC_RELAXED)) {
		/* being revoked: shared paths from now on, and let it finish */
		__atomic_store_n(&p->seg.st_busy, 0, __ATOMIC_RELEASE);
		return KVBM_SEG_ST_SHARED;
	}
	return st;
}
static inline void kvbm_st_leave(struct kvbm_pool *p, int st)
{
	/* release: our plain entry updates happen before a revoker's RMWs */
	if (st == KVBM_SEG_ST_BIASED)
		__atomic_store_n(&p->seg.st_busy, 0, __ATOMIC_RELEASE);
}
void kvbm_stripe_spin(struct kvbm_pool *p, uint32_t s);
/* Rule 2's per-slot lock, process-local; with one writer (@st) there is
 * no sibling to serialise against. */
static inline void kvbm_stripe_lock(struct kvbm_pool *p, int st, uint32_t s)
{
	if (!st)
		kvbm_stripe_spin(p, s);
}
static inline void kvbm_stripe_unlock(struct kvbm_pool *p, int st, uint32_t s)
{
	if (!st)
		__atomic_store_n(&p->stripes[s & p->stripe_mask], 0, __ATOMIC_RELEASE);
}
static inline uint32_t kvbm_hold_count(const struct kvbm_pool *p, uint32_t s)
{
	return __atomic_load_n(&p->ht[s], __ATOMIC_ACQUIRE) & KVBM_HOLD_COUNT;
}
/*
 * A resurrection window held open across one call's pins, on the caller's
 * stack (so one thread's): one begin/end pair in our shard and one
 * decrement of the inactive count per call instead of per block. Close it
 * before anything that may wait for the mutex (its holder may be
 * recounting, waiting for our window) and before the call returns.
 */
struct kvbm_resw {
	int open;
	uint32_t taken; /* marks cleared, the count not yet lowered */
	uint32_t pins;  /* resurrections in this window */
};
/* Resurrections per window: a window is closed and a new one opened after
 * this many, so a reader stopped or preempted inside one holds it open
 * for at most this many of its pins' worth of a recount's wait. */
#define KVBM_RESW_PINS 64
void kvbm_resw_close(struct kvbm_pool *p, struct kvbm_resw *w);
/*
 * One writer (lib/hold.c). While an operation runs with @st set, no
 * other thread writes our holder entries: other processes write them only
 * after our death, as reapers, and no sibling thread runs a hold operation
 * (a one-thread handle refuses them; a biased handle revokes first, see
 * above). A relaxed load and a plain store then do what a locked RMW
 * does, at a fraction of its cost, and rule 3's worry, a sibling's hold on
 * a new incarnation, cannot arise; the generation check stays for stale
 * handles. The holder mask, which other processes read, keeps its seq_cst
 * RMWs; a plain store to our entry before one of them is ordered before it
 * (the RMW is a release), which is all the reaper needs.
 */
static inline void kvbm_entry_put(kvbm_hold_t *e, kvbm_hold_t v)
{
	/* release: our uses of the block happen before a drop */
	__atomic_store_n(e, v, __ATOMIC_RELEASE);
}

/* One writer (@st set by the caller): count n -> n + 1 for 1 <= n <
 * COUNT - 1, a load and a store; 0 for anything else (a first hold, a
 * saturated count), which kvbm_count_inc decides. The match path's own
 * copy of kvbm_count_inc's first branch (lib/match.c, acquire). */
static inline __attribute__((always_inline)) int kvbm_count_inc_ow(kvbm_hold_t *e)
{
	uint32_t v = __atomic_load_n(e, __ATOMIC_RELAXED);

	/* the count's low bits + 1, masked: 0 or 1 for a count of COUNT or 0 */
	if (((v + 1) & KVBM_HOLD_COUNT) < 2)
		return 0;
	KVBM_FAILPOINT("hold.fast"); /* tests widen the load-store pair */
	__atomic_store_n(e, (kvbm_hold_t)(v + 1), __ATOMIC_RELAXED);
	return 1;
}

/* count > 0 -> count + 1; 0 when the count was 0 (slow path needed). */
static inline __attribute__((always_inline)) int kvbm_count_inc(int st, kvbm_hold_t *e,
								   int *overflow)
{
	kvbm_hold_t v = __atomic_load_n(e, __ATOMIC_RELAXED);

	if (st && kvbm_count_inc_ow(e))
		return 1;
	while (v & KVBM_HOLD_COUNT) {
		if ((v & KVBM_HOLD_COUNT) == KVBM_HOLD_COUNT) {
			*overflow = 1;
			return 0;
		}
		/* acq_rel: the generation check after it must not move above
		 * the increment (rule 3) */
		if (__atomic_compare_exchange_n(e, &v, (kvbm_hold_t)(v + 1), 0, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED))
			return 1;
	}
	return 0;
}

/* One writer (@st set by the caller): count n -> n - 1 for n > 1, a load
 * and a store; 0 when it was 0 or 1 (kvbm_count_dec decides). The
 * release path's own copy of kvbm_count_dec's first branch. */
static inline __attribute__((always_inline)) int kvbm_count_dec_ow(kvbm_hold_t *e)
{
	kvbm_hold_t v = __atomic_load_n(e, __ATOMIC_RELAXED);

	if ((v & KVBM_HOLD_COUNT) <= 1)
		return 0;
	KVBM_FAILPOINT("hold.fast");
	kvbm_entry_put(e, (kvbm_hold_t)(v - 1));
	return 1;
}

/* count > 1 -> count - 1; 0 when it was 0 or 1 (slow path). */
static inline __attribute__((always_inline)) int kvbm_count_dec(int st, kvbm_hold_t *e)
{
	kvbm_hold_t v = __atomic_load_n(e, __ATOMIC_RELAXED);

	if (st && kvbm_count_dec_ow(e))
		return 1;
	while ((v & KVBM_HOLD_COUNT) > 1) {
		/* release: our uses of the block happen before the drop */
		/* acq_rel: release, our uses happen before the drop; acquire,
		 * a sibling's drop before ours (and its reset-on-release flag)
		 * happens before whatever our last unpin does next */
		if (__atomic_compare_exchange_n(e, &v, (kvbm_hold_t)(v - 1), 0, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED))
			return 1;
	}
	return 0;
}

int kvbm_hold_pin_first(struct kvbm_pool *p, int st, uint32_t s, uint64_t gen, int overflow,
			struct kvbm_resw *w);
int kvbm_hold_unpin_last(struct kvbm_pool *p, int st, uint32_t s);
/*
 * One writer: the first hold on slot @s (our entry reads 0) if it is
 * REGISTERED with generation @gen, inside the caller's one-writer
 * operation, which it does not end (kvbm_hold_pin_first's steps,
 * rule 1). Returns 1 held, 0 lost (nothing held), 2 lost with the slot
 * to settle: the caller ends the operation, closes @w and settles it
 * (kvbm_store_settle_one), as kvbm_hold_pin_first does.
 */
int kvbm_hold_pin_first_ow(struct kvbm_pool *p, uint32_t s, uint64_t gen, struct kvbm_resw *w);

/*
 * One writer (@st set by the caller): drops this process's last hold on
 * slot @s, whose entry reads @v (count 1). The last hold becomes
 * TENTATIVE so that the entry stays non-zero until our bit is clear (a
 * reaper of a process killed in between still finds the bit), then the
 * bit goes (seq_cst: the evictor's handshake, rule 2), then TENTATIVE.
 * Returns 1 when that emptied the holder mask (settle the slot), else 0.
 * kvbm_hold_unpin_last's one-writer step, and the release's run of last
 * holds (lib/block.c).
 */
static inline __attribute__((always_inline)) int kvbm_hold_drop_last_ow(struct kvbm_pool *p,
									uint32_t s, kvbm_hold_t v)
{
	kvbm_hold_t *e = &p->ht[s];

	kvbm_entry_put(e, (kvbm_hold_t)((v - 1u) | KVBM_HOLD_TENT));
	KVBM_FAILPOINT("hold.unpin.tentative");
	uint64_t old = __atomic_fetch_and(&p->seg.slots[s].holders, ~p->bit, __ATOMIC_SEQ_CST);
	KVBM_FAILPOINT("hold.unpin.bit");
	kvbm_entry_put(e, (kvbm_hold_t)(v - 1u));
	return (old & KVBM_HOLD_PROCS) == p->bit;
}
/* Drops a hold this call took and settles the slot if that emptied it. */
void kvbm_hold_unpin_settle(struct kvbm_pool *p, uint32_t s, struct kvbm_resw *w);

/* The generation check of a hold taken on top of ours (rule 3): we held
 * the slot already, so it cannot be evicted now, but a stale handle may
 * name its previous incarnation, held by a sibling thread: compare
 * generations AFTER the increment. Ends the one-writer operation. */
static inline __attribute__((always_inline)) int
kvbm_hold_pin_check(struct kvbm_pool *p, int st, uint32_t s, uint64_t gen, struct kvbm_resw *w)
{
	uint64_t ws = __atomic_load_n(&kvbm_slot(p, s)->state, __ATOMIC_ACQUIRE);

	kvbm_st_leave(p, st);
	/* EVICTING too: our bit was set before the evictor's CAS, it rolls back */
	if (kvbm_slot_gen(ws) == gen && (kvbm_slot_state(ws) == KVBM_SLOT_REGISTERED ||
					 kvbm_slot_state(ws) == KVBM_SLOT_EVICTING))
		return 1;
	/* the undo may empty the mask (the sibling let go meanwhile): rare */
	kvbm_hold_unpin_settle(p, s, w);
	return 0;
}

/*
 * Takes one hold on slot @s if it is REGISTERED with generation @gen.
 * Returns 1 held, 0 lost (not registered with @gen: a clean miss),
 * -EOVERFLOW (this process's holds saturated). Lock-free unless a lost
 * race has to settle the slot. @w: NULL, or the caller's window. Inline:
 * a hold on top of one of ours is a few instructions.
 */
static inline __attribute__((always_inline)) int kvbm_hold_pin(struct kvbm_pool *p, uint32_t s,
								uint64_t gen, struct kvbm_resw *w)
{
	int overflow = 0;
	int st = kvbm_st_enter(p);

	if (!kvbm_count_inc(st, &p->ht[s], &overflow))
		return kvbm_hold_pin_first(p, st, s, gen, overflow, w);
	return kvbm_hold_pin_check(p, st, s, gen, w);
}

/* kvbm_hold_unpin inside a one-writer operation @st the caller began
 * (and ends, before any wait for the mutex). */
static inline __attribute__((always_inline)) int kvbm_hold_unpin_st(struct kvbm_pool *p, int st,
								    uint32_t s)
{
	return kvbm_count_dec(st, &p->ht[s]) ? 0 : kvbm_hold_unpin_last(p, st, s);
}

/* Drops one hold. Returns 1 when it emptied the holder mask (settle the
 * slot), 0, or KVBM_ENOTHELD. */
static inline __attribute__((always_inline)) int kvbm_hold_unpin(struct kvbm_pool *p, uint32_t s)
{
	int st = kvbm_st_enter(p);
	int r = kvbm_hold_unpin_st(p, st, s);

	kvbm_st_leave(p, st);
	return r;
}

/* Register (mutex + stripe held): sets our bit and turns the OWNED entry
 * into one hold. */
void kvbm_hold_register(struct kvbm_pool *p, int st, uint32_t s);

/* ---- attach.c: process-local attachments ---------------------------------- */

int kvbm_att_setup(struct kvbm_pool *p);
/* Frees every attachment; in a forked child (@forked) without calling the
 * values' free functions, which belong to the parent. */
void kvbm_att_teardown(struct kvbm_pool *p, int forked);

/* ---- check.c: the invariants ------------------------------------------------ */

#define KVBM_CK_LOCKED 0x1u    /* the mutex is held: lists, index, counts exact */
#define KVBM_CK_QUIESCENT 0x2u /* nobody else runs: in-flight states are violations */
#define KVBM_CK_LIVENESS 0x4u  /* with QUIESCENT: a dead, unreaped holder is one */
/* Checks segment @seg (attached or a read-only mapping). Returns the number
 * of violations, each reported through @fn (may be NULL). */
long kvbm_check_seg(const struct kvbm_seg *seg, unsigned flags, kvbm_report_fn fn, void *arg);
/* Whether @seg's mapping is what @cfg lays out (KVBM_ECORRUPT if not) and
 * its file still backs all of it (KVBM_ETRUNCATED if not): 0 when every
 * bound derived from @cfg is safe to read. */
int kvbm_check_mapping(const struct kvbm_seg *seg, const struct kvbm_shm_config *cfg);

/* ---- store.c: lists, settle, evict, reap, recover (mutex held) ----------- */

/* kvbm_seg_lock() with the op record; kvbm_store_unlock() clears it. */
int kvbm_store_lock(struct kvbm_pool *p, uint32_t op, uint32_t arg0);
/* The same after the operation's own kvbm_seg_check() (pool_ok) passed
 * earlier in the call (shm/mutex.h, kvbm_seg_lock_checked). */
int kvbm_store_lock_checked(struct kvbm_pool *p, uint32_t op, uint32_t arg0);
void kvbm_store_unlock(struct kvbm_pool *p);
/* (Re)writes the op record of the critical section we are in. */
void kvbm_store_op(struct kvbm_pool *p, uint32_t op, uint32_t arg0);
uint32_t kvbm_free_pop(struct kvbm_pool *p);
void kvbm_free_push(struct kvbm_pool *p, uint32_t s, int front);

/* The mutex holder found an index or link out of range, or a cycle: the
 * structures derived from the slot array are repaired (rebuilt) before the
 * mutex is released, or the pool is poisoned (shm/mutex.c). */
static inline void kvbm_store_corrupt(struct kvbm_pool *p)
{
	p->seg.corrupt = 1;
}
/* Repairs now, mutex held, what kvbm_store_unlock() would: 1 if it did, 0
 * if nothing was damaged, KVBM_EPOISONED if the pool is now poisoned. */
int kvbm_store_repair(struct kvbm_pool *p);

/* ---- events.c: the event ring --------------------------------------------- */

void kvbm_events_setup(struct kvbm_pool *p);
/* Appends an event (mutex held; a no-op without a ring). @tokens: NULL or
 * block_size token ids. */
void kvbm_events_append(struct kvbm_pool *p, uint32_t kind, struct kvbm_plh key,
			const uint32_t *tokens);
/* Keeps @tokens (or forgets any) as slot @s's for generation @gen, before
 * the slot is published REGISTERED (mutex held; KVBM_CFG_KEEP_TOKENS). */
void kvbm_events_keep_tokens(struct kvbm_pool *p, uint32_t s, uint64_t gen,
			     const uint32_t *tokens);
/* Appends RESYNC (mutex held): a recovery rebuilt what the stream told. */
void kvbm_events_resync(struct kvbm_pool *p);

/* ---- evict.c: the eviction order (mutex held) and the sketch (lock-free) -- */

void kvbm_evict_setup(struct kvbm_pool *p);
/* Slot @s was just marked INACTIVE: into the backend's order (a stale
 * entry of its earlier stay is replaced). */
void kvbm_evict_insert(struct kvbm_pool *p, uint32_t s);
/* The same with a release hint (KVBM_HINT_*, checked by the caller), and
 * KVBM_TICK_CONTROL for a block of the control sample (lib/rhint.c). */
void kvbm_evict_insert_hint(struct kvbm_pool *p, uint32_t s, uint32_t hint);
/* Puts a victim back where it was (an allocation rolling back). */
void kvbm_evict_restore(struct kvbm_pool *p, uint32_t s);
/* Recovery: inserts @s at its recorded tick (call in tick order). */
void kvbm_evict_reinsert(struct kvbm_pool *p, uint32_t s);
void kvbm_evict_remove(struct kvbm_pool *p, uint32_t s);
int kvbm_evict_listed(const struct kvbm_pool *p, uint32_t s);
/* The next candidate in eviction order (maybe stale), or UINT32_MAX. */
uint32_t kvbm_evict_first(struct kvbm_pool *p);
/* Empties every eviction structure (recovery). */
void kvbm_evict_clear(struct kvbm_pool *p);
/* hash.c: kvbm_plh_position, _router_hash and _parent_fragment of @h at once */
void kvbm_plh_lineage_key(struct kvbm_plh h, uint32_t *pos, uint64_t *frag, uint64_t *pfrag);
void kvbm_sketch_touch(struct kvbm_pool *p, struct kvbm_plh key);
uint32_t kvbm_sketch_estimate(const struct kvbm_pool *p, struct kvbm_plh key);
/* Puts slot @s where its holders and flags say it belongs. */
void kvbm_store_settle(struct kvbm_pool *p, uint32_t s);
/* The same for @n slots, with one update of the inactive count; those that
 * become inactive enter the order with release hint @hint. */
void kvbm_store_settle_many(struct kvbm_pool *p, const uint32_t *s, uint32_t n, uint32_t hint);
/* The same, taking and dropping the mutex (after an unpin returned 1). */
void kvbm_store_settle_one(struct kvbm_pool *p, uint32_t s);
/* Pin/evict handshake on a REGISTERED slot: 1 and the slot EVICTING, or 0
 * (someone holds it: left REGISTERED). */
int kvbm_store_try_evict(struct kvbm_pool *p, uint32_t s);
/* Rolls an EVICTING slot back to REGISTERED. */
void kvbm_store_unevict(struct kvbm_pool *p, uint32_t s);
/* Completes an eviction (rule 5: new generation first, then index entry and
 * key): to RESET on the free list tail, or to MUTABLE owned by us. Returns
 * the slot of a primary whose duplicate this was (+1), to settle, or 0. */
uint32_t kvbm_store_evict_commit(struct kvbm_pool *p, uint32_t s, int to_mutable);
/* Clears slot @s's per-incarnation fields (key, duplicate link and count,
 * reset-on-release) on its way back to RESET or MUTABLE. */
void kvbm_store_fresh(struct kvbm_pool *p, uint32_t s);
/* Returns an owned MUTABLE/STAGED slot to the free list tail. */
void kvbm_store_free_owned(struct kvbm_pool *p, uint32_t s, uint32_t owner_proc);
/* Recounts the inactive pool from the slot marks, exactly despite live
 * resurrecting pinners; @skip: a process being reaped (or UINT32_MAX).
 * Waits at most KVBM_RECOUNT_WAIT_NS for open windows: returns 1 done, or
 * 0 deferred (control.recount_pending set, recounts_deferred counted). */
#define KVBM_RECOUNT_WAIT_NS 2000000u
int kvbm_store_recount_inactive(struct kvbm_pool *p, uint32_t skip);
/* Installs the reap and recovery hooks of this pool's segment. */
void kvbm_store_hooks(struct kvbm_pool *p);

/* ---- pins.c: pins held by the pool (mutex held) ------------------------- */

/* Installs the expire hook of kvbm_seg_lock (once the handle can settle). */
void kvbm_pins_hooks(struct kvbm_pool *p);
/* Recovery: the POOL bits and the counts from the deadline words. */
void kvbm_pins_rebuild(struct kvbm_pool *p);
#ifdef KVBM_FAILPOINTS
/* Test builds: deadline words and heap tops read, summed, to find what is
 * due (expiry; unpin and kvbm_pins_info read the top too): what an
 * expiry's mutex hold grows with. */
extern uint64_t kvbm_pins_expire_visits;
#endif

/* ---- block.c ---------------------------------------------------------------- */

/* Validates a handle against this pool. Returns 0 or KVBM_EFOREIGN /
 * -EINVAL (id out of range). */
int kvbm_handle_check(const struct kvbm_pool *p, const struct kvbm_block *blk);
/* One hold on the primary registered under @key (lock-free). Returns 1 and
 * *out, 0 on a miss, or a negative code. */
int kvbm_acquire_hash(struct kvbm_pool *p, struct kvbm_plh key, struct kvbm_block *out,
		      struct kvbm_resw *w);
/* Drops holds taken by this library call and settles what they emptied. */
void kvbm_unpin_settle(struct kvbm_pool *p, const struct kvbm_block *blks, size_t n);

#endif /* KVBM_LIB_POOL_H */
