/* SPDX-License-Identifier: Apache-2.0 */
/*
 * block.c - the block lifecycle through handles: allocate, stage and
 * complete, unstage, register, release, clone, pin, weak handles, the
 * reset-on-release flag and block info (kvbm-logical's guards, as values).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "rhint.h"
#include "../shm/failpoint.h"
#include "../shm/proctable.h"

/* Handles processed per mutex acquisition by the batch calls. */
#define BATCH 64

int kvbm_handle_check(const struct kvbm_pool *p, const struct kvbm_block *blk)
{
	if (!blk)
		return -EINVAL;
	if (blk->pool != p->id)
		return KVBM_EFOREIGN;
	if (blk->id >= p->nslots)
		return -EINVAL;
	return 0;
}

static int pool_ok(struct kvbm_pool *p)
{
	return p ? kvbm_seg_check(&p->seg) : -EINVAL;
}

/*
 * The guard of every operation on an owned (MUTABLE/STAGED) block: the
 * state word of the block @blk names, when that handle's incarnation is
 * ours and in one of the states in @states (a mask of 1 << state), else
 * the error that names why. Called before the mutex to refuse early, and
 * again under the block's stripe lock (and the mutex, where the operation
 * takes it) right before acting: a sibling thread may have released,
 * registered or unstaged the block in between, and acting on the word
 * read before would free it twice or register a freed slot.
 */
static inline __attribute__((always_inline)) int
owned_guard(struct kvbm_pool *p, const struct kvbm_block *blk, unsigned states, uint64_t *w)
{
	int r = kvbm_handle_check(p, blk);

	if (r < 0)
		return r;
	/* acquire: pairs with the release store that made the slot ours
	 * (take_owned) or moved it on (a sibling's stage/unstage, the
	 * mutex holder's free or register) */
	*w = __atomic_load_n(&kvbm_slot(p, blk->id)->state, __ATOMIC_ACQUIRE);
	if (kvbm_slot_gen(*w) != blk->gen)
		return KVBM_ESTALE;
	uint32_t st = kvbm_slot_state(*w);
	if (st != KVBM_SLOT_MUTABLE && st != KVBM_SLOT_STAGED)
		return KVBM_ESTATE;
	if (kvbm_slot_owner(*w) != p->seg.self)
		return KVBM_ENOTOWNER;
	if (!(states & (1u << st)))
		return KVBM_ESTATE;
	return 0;
}

#define OWNED_ANY ((1u << KVBM_SLOT_MUTABLE) | (1u << KVBM_SLOT_STAGED))
#define OWNED_MUTABLE (1u << KVBM_SLOT_MUTABLE)
#define OWNED_STAGED (1u << KVBM_SLOT_STAGED)

/* A REGISTERED block named by @blk that this process holds. */
static int held_check(struct kvbm_pool *p, const struct kvbm_block *blk)
{
	int r = kvbm_handle_check(p, blk);

	if (r < 0)
		return r;
	/* acquire: pairs with register_one's release of REGISTERED, so the
	 * key kvbm_pin_block and kvbm_downgrade_block read next is its key */
	uint64_t w = __atomic_load_n(&kvbm_slot(p, blk->id)->state, __ATOMIC_ACQUIRE);
	if (kvbm_slot_gen(w) != blk->gen)
		return KVBM_ESTALE;
	if (kvbm_slot_state(w) != KVBM_SLOT_REGISTERED && kvbm_slot_state(w) != KVBM_SLOT_EVICTING)
		return KVBM_ESTATE;
	/* our count > 0 pins the generation: the checks above stay true */
	if (kvbm_hold_count(p, blk->id) == 0)
		return KVBM_ENOTHELD;
	return 0;
}

/* ---- allocate --------------------------------------------------------------- */

/* Gives the slots in @out[0..n) to us as MUTABLE (mutex held). */
static void take_owned(struct kvbm_pool *p, struct kvbm_block *out, uint32_t n, uint32_t nfree)
{
	for (uint32_t i = 0; i < n; i++) {
		uint32_t s = out[i].id;
		struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		/* OWNED first: a reaper of us finds the slot either way (by
		 * owner in the state word), the entry only tells our threads.
		 * An RMW, so a sibling's stale pin keeps its TENT mark (rule
		 * 7). release is more than needed: the readers that act on it
		 * hold the mutex (kvbm_hold_register, reap_hook), and the
		 * state's release store below keeps it first */
		__atomic_fetch_or(&p->ht[s], KVBM_HOLD_OWNED, __ATOMIC_RELEASE);
		if (i < nfree) {
			/* relaxed: a RESET word changes only under the mutex */
			uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_RELAXED);
			kvbm_store_fresh(p, s);
			/* release: pairs with owned_guard()'s acquire; the
			 * clears of kvbm_store_fresh() come with MUTABLE */
			__atomic_store_n(&sl->state,
					 kvbm_slot_word(kvbm_slot_gen(w), p->seg.self, 0,
							KVBM_SLOT_MUTABLE),
					 __ATOMIC_RELEASE);
		} else {
			(void)kvbm_store_evict_commit(p, s, 1);
		}
		out[i].pool = p->id;
		/* relaxed: our own store just above */
		out[i].gen = kvbm_slot_gen(__atomic_load_n(&sl->state, __ATOMIC_RELAXED));
	}
}

/*
 * Takes @need victims in eviction order into @out, leaving them EVICTING
 * and out of the order (so that a lineage parent they leave becomes a
 * leaf now). Drops what is not evictable: resurrected, released again with
 * its settle pending, or kept active by a duplicate. A pin still in flight
 * may yet miss; it then settles the slot, which puts it back (store.c).
 * Returns how many it got.
 */
static uint32_t pick_victims(struct kvbm_pool *p, struct kvbm_block *out, uint32_t need)
{
	uint32_t got = 0, s;

	/* bounded: each turn removes one entry, and a damaged order may
	 * hold a cycle (then repaired at unlock) */
	for (uint64_t turns = 0; got < need && (s = kvbm_evict_first(p)) != UINT32_MAX; turns++) {
		if (turns > 2 * (uint64_t)p->nslots) {
			kvbm_store_corrupt(p);
			break;
		}
		struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		/* seq_cst is more than needed: a filter, the handshake in
		 * kvbm_store_try_evict() decides (and on x86-64 a load is a
		 * plain mov whatever its order) */
		uint64_t h = __atomic_load_n(&sl->holders, __ATOMIC_SEQ_CST);
		int ok = !(h & KVBM_HOLD_PROCS) && (h & KVBM_HOLD_INACTIVE) && !sl->dups &&
			 kvbm_store_try_evict(p, s);
		/* the release hints' record: evicted unused, or hit meanwhile
		 * (held, or released again with its settle pending) */
		if (ok || (h & KVBM_HOLD_PROCS) || !(h & KVBM_HOLD_INACTIVE))
			kvbm_rhint_outcome(p, s, !ok);
		kvbm_evict_remove(p, s);
		if (ok)
			out[got++].id = s;
	}
	return got;
}

/*
 * The order ran dry (pick_victims came up short with no damage seen) and
 * yet a block is INACTIVE and unheld, which only a lie in the order's own
 * bytes explains (a child count too high keeps a chain from ever having a
 * leaf): each such allocation would fail. A pin that missed may, for a
 * moment, leave such a block outside the order too; then the repair this
 * asks for is merely early. O(slots), on the failing path only.
 */
static int order_lost_blocks(struct kvbm_pool *p)
{
	for (uint32_t s = 0; s < p->nslots; s++) {
		const struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		/* relaxed: a filter under the mutex; the repair decides */
		if (__atomic_load_n(&sl->holders, __ATOMIC_RELAXED) == KVBM_HOLD_INACTIVE &&
		    kvbm_slot_state(__atomic_load_n(&sl->state, __ATOMIC_RELAXED)) ==
			    KVBM_SLOT_REGISTERED)
			return 1;
	}
	return 0;
}

int kvbm_allocate_blocks(struct kvbm_pool *p, uint32_t n, struct kvbm_block *out,
			 struct kvbm_plh *evicted, uint32_t *n_evicted)
{
	struct kvbm_shm_control *c;
	uint32_t nfree = 0;
	int r = pool_ok(p);

	if (r < 0)
		return r;
	if (n_evicted)
		*n_evicted = 0;
	if (n == 0)
		return 0;
	if (!out)
		return -EINVAL;
	if (n > p->nslots)
		return -ENOSPC;
	r = kvbm_store_lock_checked(p, KVBM_OP_ALLOCATE, n);
	if (r < 0)
		return r;
	c = p->seg.ctl;
	/* relaxed, here and below: besides mutex holders only pinners change
	 * the count, lowering it; a value from before their decrement is
	 * higher, and an allocation that then finds too few victims rolls
	 * back (all or nothing) */
	if ((int64_t)c->free_count + __atomic_load_n(&c->inactive, __ATOMIC_RELAXED) < n) {
		/* short: what dead processes held may be what is missing. Their
		 * liveness is probed without the mutex (syscalls), then they are
		 * reaped under it */
		struct kvbm_proc_dead dead;
		kvbm_store_unlock(p);
		kvbm_proc_probe(&p->seg, &dead);
		if (!dead.mask)
			return -ENOSPC;
		r = kvbm_store_lock_checked(p, KVBM_OP_ALLOCATE, n);
		if (r < 0)
			return r;
		/* the reap writes its own op records; ours is the allocation */
		if (kvbm_proc_reap_proven(&p->seg, &dead) > 0)
			kvbm_store_op(p, KVBM_OP_ALLOCATE, n);
	}
	if ((int64_t)c->free_count + __atomic_load_n(&c->inactive, __ATOMIC_RELAXED) < n) {
		kvbm_store_unlock(p);
		return -ENOSPC;
	}
	/* a recount given up earlier (store.c) left the count over: retried
	 * where an allocation would evict, which reads it */
	if (c->recount_pending && c->free_count < n)
		(void)kvbm_store_recount_inactive(p, UINT32_MAX);
	int repaired = 0;
again:
	while (nfree < n && c->free_count) {
		uint32_t s = kvbm_free_pop(p);
		if (s == UINT32_MAX)
			break; /* damaged: repaired at unlock (store.c) */
		out[nfree++].id = s;
	}
	KVBM_FAILPOINT("block.allocate.popped");
	uint32_t nev = nfree < n ? pick_victims(p, out + nfree, n - nfree) : 0;
	if (nfree + nev < n) {
		if (!repaired && !p->seg.corrupt && order_lost_blocks(p))
			kvbm_store_corrupt(p);
		/* a block we counted was resurrected meanwhile: all or nothing */
		for (uint32_t i = nfree + nev; i-- > nfree;) {
			kvbm_store_unevict(p, out[i].id);
			kvbm_evict_restore(p, out[i].id);
		}
		for (uint32_t i = nfree; i-- > 0;)
			kvbm_free_push(p, out[i].id, 1);
		nfree = 0;
		/* short because the order was damaged (a peer's bytes): it
		 * is rebuilt from the slot array now, and the blocks it lost
		 * are found on the retry, which a repair at unlock would
		 * leave to the next call (or, for a lie no walk trips on,
		 * to no call at all) */
		if (!repaired && p->seg.corrupt) {
			repaired = 1;
			r = kvbm_store_repair(p);
			if (r < 0) {
				kvbm_store_unlock(p);
				return r;
			}
			goto again;
		}
		kvbm_metric_add(p, KVBM_M_ALLOCATE_ATOMIC_ROLLBACK, 1);
		kvbm_store_unlock(p);
		return -ENOSPC;
	}
	for (uint32_t i = nfree; i < n && evicted; i++) {
		struct kvbm_shm_slot *sl = kvbm_slot(p, out[i].id);
		evicted[i - nfree] = (struct kvbm_plh){sl->key_hi, sl->key_lo};
	}
	KVBM_FAILPOINT("block.allocate.victims");
	take_owned(p, out, n, nfree);
	kvbm_store_unlock(p);
	if (n_evicted)
		*n_evicted = nev;
	kvbm_metric_add(p, KVBM_M_ALLOCATIONS, n);
	kvbm_metric_add(p, KVBM_M_ALLOCATIONS_FROM_RESET, nfree);
	kvbm_metric_add(p, KVBM_M_EVICTIONS, nev);
	return 0;
}

/* ---- stage, complete, unstage ------------------------------------------------ */

int kvbm_stage_block(struct kvbm_pool *p, const struct kvbm_block *blk, struct kvbm_plh hash,
		     uint32_t block_size)
{
	uint64_t w;
	int r = pool_ok(p);

	if (r < 0)
		return r;
	r = owned_guard(p, blk, OWNED_MUTABLE, &w);
	if (r < 0)
		return r;
	if (block_size != p->block_size)
		return KVBM_ESIZE;
	struct kvbm_shm_slot *sl = kvbm_slot(p, blk->id);
	int st = kvbm_st_enter(p);
	kvbm_stripe_lock(p, st, blk->id);
	/* again under the stripe lock: a sibling's release may have freed
	 * the slot since, and its key is then no longer ours to write */
	r = owned_guard(p, blk, OWNED_MUTABLE, &w);
	if (r == 0) {
		/* owner-only, no mutex, relaxed: published by the release of
		 * STAGED below and later REGISTERED. A reader that meets it
		 * through a stale index entry refuses it (kvbm_index_validate's
		 * seqlock or its pin, rule 6). The fence keeps the stores after
		 * the generation's store that the guard's acquire load saw */
		kvbm_key_store_fence();
		__atomic_store_n(&sl->key_hi, hash.hi, __ATOMIC_RELAXED);
		__atomic_store_n(&sl->key_lo, hash.lo, __ATOMIC_RELAXED);
		KVBM_FAILPOINT("block.stage.keyed");
		/* release: pairs with owned_guard()'s acquire (the registering
		 * thread's) and kvbm_block_info's: the key comes with STAGED */
		__atomic_store_n(&sl->state,
				 kvbm_slot_word(blk->gen, p->seg.self, 0, KVBM_SLOT_STAGED),
				 __ATOMIC_RELEASE);
	}
	kvbm_stripe_unlock(p, st, blk->id);
	kvbm_st_leave(p, st);
	if (r == 0)
		kvbm_metric_add(p, KVBM_M_STAGINGS, 1);
	return r;
}

int kvbm_complete_block(struct kvbm_pool *p, const struct kvbm_block *blk,
			const struct kvbm_tokens *seq, size_t index)
{
	if (!seq)
		return -EINVAL;
	const struct kvbm_block_hashes *h = kvbm_tokens_block(seq, index);
	if (!h)
		return -ERANGE;
	/* a token block of the sequence holds exactly its block size tokens */
	return kvbm_stage_block(p, blk, h->plh, kvbm_tokens_block_size(seq));
}

int kvbm_unstage_block(struct kvbm_pool *p, const struct kvbm_block *blk)
{
	uint64_t w;
	int r = pool_ok(p);

	if (r < 0)
		return r;
	r = owned_guard(p, blk, OWNED_STAGED, &w);
	if (r < 0)
		return r;
	struct kvbm_shm_slot *sl = kvbm_slot(p, blk->id);
	int st = kvbm_st_enter(p);
	kvbm_stripe_lock(p, st, blk->id);
	r = owned_guard(p, blk, OWNED_STAGED, &w); /* as in stage */
	if (r == 0) {
		/* relaxed: comes with MUTABLE below; read under the mutex */
		__atomic_store_n(&sl->reset_on_release, p->ror_default, __ATOMIC_RELAXED);
		/* release: pairs with the acquire load of owned_guard(): a
		 * sibling that stages next sees the flag reset */
		__atomic_store_n(&sl->state,
				 kvbm_slot_word(blk->gen, p->seg.self, 0, KVBM_SLOT_MUTABLE),
				 __ATOMIC_RELEASE);
	}
	kvbm_stripe_unlock(p, st, blk->id);
	kvbm_st_leave(p, st);
	return r;
}

int kvbm_stage_blocks(struct kvbm_pool *p, const struct kvbm_block *blks,
		      const struct kvbm_plh *hashes, uint32_t n, uint32_t block_size,
		      uint32_t *failed)
{
	if (n && (!blks || !hashes))
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		int r = kvbm_stage_block(p, &blks[i], hashes[i], block_size);
		if (r < 0) {
			/* ours alone since we staged them: cannot fail */
			for (uint32_t j = 0; j < i; j++)
				(void)kvbm_unstage_block(p, &blks[j]);
			if (failed)
				*failed = i;
			return r;
		}
	}
	return 0;
}

/* ---- register ------------------------------------------------------------------ */

/* Takes @blk's stripe lock inside a one-writer operation (*st) and
 * passes the guard: 0 with both held, or the error with neither. */
static int lock_owned(struct kvbm_pool *p, const struct kvbm_block *blk, unsigned states, int *st)
{
	uint64_t w;

	*st = kvbm_st_enter(p);
	kvbm_stripe_lock(p, *st, blk->id);
	int r = owned_guard(p, blk, states, &w);
	if (r < 0) {
		kvbm_stripe_unlock(p, *st, blk->id);
		kvbm_st_leave(p, *st);
	}
	return r;
}

static void unlock_owned(struct kvbm_pool *p, uint32_t s, int st)
{
	kvbm_stripe_unlock(p, st, s);
	kvbm_st_leave(p, st);
}

/*
 * KVBM_DUP_REJECT with @key registered at (@ps, @pg): one hold on that
 * primary for us, and STAGED @blk back to the free pool (mutex held). The
 * pin takes its own stripe lock, which may be @blk's: it runs first, and
 * the guard after it. Returns 1 and *out, 0 (keep @blk as a duplicate:
 * our holds on the primary saturated), or the guard's error.
 */
static int register_rejected(struct kvbm_pool *p, const struct kvbm_block *blk,
			     struct kvbm_plh key, uint32_t ps, uint64_t pg, struct kvbm_block *out)
{
	int st;

	/* the existing primary (resurrected if inactive) is returned */
	if (kvbm_hold_pin(p, ps, pg, NULL) != 1)
		return 0;
	int r = lock_owned(p, blk, OWNED_STAGED, &st);
	if (r == 0 && !kvbm_plh_eq(kvbm_slot_key(kvbm_slot(p, blk->id)), key)) {
		unlock_owned(p, blk->id, st);
		r = KVBM_ESTATE; /* a sibling restaged it meanwhile */
	}
	if (r < 0) {
		if (kvbm_hold_unpin(p, ps) == 1)
			kvbm_store_settle(p, ps); /* we hold the mutex */
		return r;
	}
	kvbm_store_free_owned(p, blk->id, p->seg.self);
	unlock_owned(p, blk->id, st);
	kvbm_metric_add(p, KVBM_M_REGISTRATION_DEDUP, 1);
	*out = (struct kvbm_block){p->id, ps, pg};
	return 1;
}

/*
 * Registers STAGED block @blk of ours (mutex held) and sets *out to the
 * handle of the hold it gives. Returns 0 or the guard's error (a sibling
 * thread released or unstaged @blk after the caller's first check).
 */
static int register_one(struct kvbm_pool *p, const struct kvbm_block *blk, struct kvbm_block *out,
			const uint32_t *tokens)
{
	uint32_t s = blk->id, ps;
	uint64_t gen = blk->gen, pg;
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);
	int st;
	int r = lock_owned(p, blk, OWNED_STAGED, &st);

	if (r < 0)
		return r;
	/* stable now: only our stripe holder writes a STAGED key */
	struct kvbm_plh key = {sl->key_hi, sl->key_lo};
	/* under the mutex the index is stable: no eviction can run */
	int found = kvbm_index_lookup(&p->ix, key, &ps, &pg);

	if (found && p->dup_policy == KVBM_DUP_REJECT) {
		unlock_owned(p, s, st);
		r = register_rejected(p, blk, key, ps, pg, out);
		if (r != 0)
			return r < 0 ? r : 0;
		/* our holds on the primary saturated: keep the candidate as a
		 * duplicate, never as a second primary */
		r = lock_owned(p, blk, OWNED_STAGED, &st);
		if (r < 0)
			return r;
	}
	*out = (struct kvbm_block){p->id, s, gen};
	kvbm_hold_register(p, st, s); /* rule 4: the owner's bit under the stripe */
	uint32_t flags = 0;
	if (found) {
		struct kvbm_shm_slot *psl = kvbm_slot(p, ps);
		sl->primary = ps + 1;
		psl->dups++;
		/* a duplicate keeps its primary active: out of the inactive
		 * pool. The RMW's atomicity against a pinner's (hold.c
		 * take_from_inactive) makes one of us lower the count; acq_rel
		 * is more than needed, the mark's other readers hold the mutex */
		uint64_t prev = __atomic_fetch_and(&psl->holders, ~KVBM_HOLD_INACTIVE,
						   __ATOMIC_ACQ_REL);
		/* relaxed: a gauge; the mutex orders it with recounts */
		if (prev & KVBM_HOLD_INACTIVE)
			__atomic_fetch_sub(&p->seg.ctl->inactive, 1, __ATOMIC_RELAXED);
		kvbm_metric_add(p, KVBM_M_DUPLICATE_BLOCKS, 1);
		KVBM_FAILPOINT("block.register.duplicate");
	} else {
		flags = KVBM_SLOT_F_PRIMARY;
		/* a new registration counts as a use (reference: a new handle);
		 * lock-free, so its place under the mutex costs one CAS */
		kvbm_sketch_touch(p, key);
		kvbm_events_keep_tokens(p, s, gen, tokens);
	}
	/* release: the key stored at staging is visible with REGISTERED to
	 * the acquire loads of kvbm_index_validate, held_check and
	 * kvbm_hold_pin_check, and pin_slow's seq_cst load (hold.c) */
	__atomic_store_n(&sl->state, kvbm_slot_word(gen, 0, flags, KVBM_SLOT_REGISTERED),
			 __ATOMIC_RELEASE);
	KVBM_FAILPOINT("block.register.published");
	if (!found && kvbm_index_insert(&p->ix, key, s, gen) < 0) {
		/* both buckets full: the block works but is not shareable.
		 * release: this word replaces the one that published the key,
		 * so it publishes it again for the same loads */
		__atomic_store_n(&sl->state, kvbm_slot_word(gen, 0, 0, KVBM_SLOT_REGISTERED),
				 __ATOMIC_RELEASE);
		p->seg.ctl->index_full++;
	} else if (!found) {
		/* a new primary: the registered set changed (a duplicate, a
		 * deduplicated or index-less block changes nothing a router
		 * can see). Its REMOVED comes from kvbm_store_evict_commit */
		kvbm_events_append(p, KVBM_SHM_EV_STORED, key, tokens);
	}
	unlock_owned(p, s, st);
	return 0;
}

/* Entries of the set listed_twice_set() keeps on the stack: twice the
 * largest batch it checks, so a probe rarely goes past its first entry. */
#define TWICE_SET 128

/* listed_twice() for up to TWICE_SET / 2 blocks: an open-addressed set on
 * the stack. Out of line: its 512-byte frame would otherwise be the
 * caller's on every registration, the one-block ones too. */
static __attribute__((noinline)) int listed_twice_set(const struct kvbm_block *blks, uint32_t n)
{
	uint32_t set[TWICE_SET];

	/* ids are < nslots <= UINT32_MAX - 1: all ones is empty */
	memset(set, 0xff, sizeof(set));
	for (uint32_t i = 0; i < n; i++) {
		uint32_t id = blks[i].id;
		/* the top 7 bits of a multiplicative hash: consecutive ids,
		 * the usual batch, spread over the set */
		uint32_t h = (id * 0x9e3779b1u) >> 25;
		/* bounded: the set is never more than half full */
		while (set[h] != UINT32_MAX) {
			if (set[h] == id)
				return 1;
			h = (h + 1) & (TWICE_SET - 1);
		}
		set[h] = id;
	}
	return 0;
}

/* 1 if a block is listed twice (ids checked against the pool), 0, or
 * -ENOMEM. Pairwise for a few; the set on the stack up to half its size
 * (pairwise, a batch of 64 cost 2,016 comparisons, 160 instructions a
 * block of (d)); a bitmap of the pool beyond. */
static int listed_twice(const struct kvbm_pool *p, const struct kvbm_block *blks, uint32_t n)
{
	if (n <= 8) {
		for (uint32_t i = 1; i < n; i++)
			for (uint32_t j = 0; j < i; j++)
				if (blks[j].id == blks[i].id)
					return 1;
		return 0;
	}
	if (n <= TWICE_SET / 2)
		return listed_twice_set(blks, n);
	uint64_t *seen = calloc((p->nslots + 63) / 64, sizeof(uint64_t));
	int r = 0;

	if (!seen)
		return -ENOMEM;
	for (uint32_t i = 0; i < n && !r; i++) {
		uint64_t bit = 1ull << (blks[i].id % 64);
		r = (seen[blks[i].id / 64] & bit) != 0;
		seen[blks[i].id / 64] |= bit;
	}
	free(seen);
	return r;
}

/* The guard for each of @n handles: 0, or the first one's error. */
static int all_staged(struct kvbm_pool *p, const struct kvbm_block *blks, uint32_t n)
{
	uint64_t w;

	for (uint32_t i = 0; i < n; i++) {
		int r = owned_guard(p, &blks[i], OWNED_STAGED, &w);
		if (r < 0)
			return r;
	}
	return 0;
}

int kvbm_register_blocks_tokens(struct kvbm_pool *p, struct kvbm_block *blks, uint32_t n,
				const uint32_t *tokens)
{
	int r = pool_ok(p);

	if (r < 0)
		return r;
	if (n && !blks)
		return -EINVAL;
	r = all_staged(p, blks, n);
	if (r < 0 || n == 0)
		return r;
	r = listed_twice(p, blks, n);
	if (r != 0)
		return r < 0 ? r : -EINVAL;
	r = kvbm_store_lock_checked(p, KVBM_OP_REGISTER, blks[0].id);
	if (r < 0)
		return r;
	/* each is guarded again under its stripe lock and the mutex right
	 * before it is registered (register_one): a sibling thread that
	 * released or registered one since gets it refused there, after the
	 * ones before it were registered; the pool stays consistent */
	for (uint32_t i = 0; i < n && r == 0; i++) {
		p->seg.ctl->op.arg0 = blks[i].id;
		r = register_one(p, &blks[i], &blks[i],
				 tokens ? tokens + (size_t)i * p->block_size : NULL);
		if (r == 0 && i + 1 < n)
			KVBM_FAILPOINT("block.register.batch"); /* some in, some not */
	}
	kvbm_store_unlock(p);
	if (r == 0)
		kvbm_metric_add(p, KVBM_M_REGISTRATIONS, n);
	return r;
}

int kvbm_register_blocks(struct kvbm_pool *p, struct kvbm_block *blks, uint32_t n)
{
	return kvbm_register_blocks_tokens(p, blks, n, NULL);
}

/* ---- release ------------------------------------------------------------------- */

/*
 * Frees owned blocks and settles emptied slots, one mutex acquisition.
 * Each owned handle passes the guard again under its stripe lock: the
 * first check ran without either, and a block listed twice, or released
 * by two threads at once, must be freed once (a second push would loop
 * the free list). Returns 0, or the first guard's error (the others are
 * freed).
 */
static int flush(struct kvbm_pool *p, const struct kvbm_block *owned, uint32_t nown,
		 const uint32_t *empty, uint32_t nempty, uint32_t hint)
{
	int r = kvbm_store_lock_checked(p, KVBM_OP_RELEASE, nown ? owned[0].id : empty[0]);
	int err = 0, st;

	if (r < 0)
		return r;
	for (uint32_t i = 0; i < nown; i++) {
		r = lock_owned(p, &owned[i], OWNED_ANY, &st);
		if (r < 0) {
			err = err ? err : r;
			continue;
		}
		kvbm_store_free_owned(p, owned[i].id, p->seg.self);
		unlock_owned(p, owned[i].id, st);
	}
	kvbm_store_settle_many(p, empty, nempty, hint);
	kvbm_store_unlock(p);
	return err;
}

/*
 * The release's common case, in a one-writer operation: how many of the
 * @n blocks from @b on were REGISTERED blocks of ours held more than
 * once, each dropped with a load and a store. The checks of the general
 * loop below (the handle's pool and id, the generation, then
 * kvbm_count_dec's one-writer branch; the state, see below) in a loop of
 * its own, whose registers the general one does not crowd: it stops at
 * the first block that needs more, which the general loop then takes.
 */
static uint32_t unpin_run(const struct kvbm_pool *p, const struct kvbm_block *b, uint32_t n)
{
	const struct kvbm_block *end = b + n;
	const uint64_t pool_id = p->id, nslots = p->nslots;
	const struct kvbm_shm_slot *slots = p->seg.slots;
	kvbm_hold_t *ht = p->ht;

	/* pointers, not an index: one increment and one compare a block */
	for (; b != end; b++) {
		uint64_t s = b->id;
		if (b->pool != pool_id || s >= nslots)
			break;
		/* acquire: as the general loop's. The generation alone: the
		 * count test below finds this process holding the slot, so
		 * it is REGISTERED, or EVICTING with an evictor that will
		 * see our bit and roll back, which the general loop accepts
		 * too (kvbm_hold_unpin_st); its generation cannot change
		 * while held, and a stale handle's differs */
		uint64_t w = __atomic_load_n(&slots[s].state, __ATOMIC_ACQUIRE);
		if (kvbm_slot_gen(w) != b->gen)
			break;
		/* kvbm_count_dec_ow, its test on the loaded value: > 1 */
		kvbm_hold_t v = __atomic_load_n(&ht[s], __ATOMIC_RELAXED);
		if (!(v & (KVBM_HOLD_COUNT & ~1u)))
			break;
		KVBM_FAILPOINT("hold.fast");
		kvbm_entry_put(&ht[s], (kvbm_hold_t)(v - 1));
	}
	return n - (uint32_t)(end - b);
}

/*
 * The release's other common case, in a one-writer operation: how many of
 * the @n blocks from @b on were REGISTERED blocks of ours held once, each
 * dropped as kvbm_hold_unpin_last drops a last hold (kvbm_hold_drop_last_ow),
 * those that emptied their holder mask added to @empty. As unpin_run, in a
 * loop of its own that stops at the first block that needs more; where
 * the general loop paid a call and its checks again per block (a batch of
 * last holds is what a match of inactive blocks releases). The caller
 * leaves room in @empty for all @n.
 */
static uint32_t unpin_last_run(struct kvbm_pool *p, const struct kvbm_block *b, uint32_t n,
			       uint32_t *empty, uint32_t *nempty)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		uint32_t s = b[i].id;
		if (b[i].pool != p->id || s >= p->nslots)
			break;
		/* acquire: as the general loop's, with its checks */
		uint64_t w = __atomic_load_n(&kvbm_slot(p, s)->state, __ATOMIC_ACQUIRE);
		uint32_t st = kvbm_slot_state(w);
		if (kvbm_slot_gen(w) != b[i].gen ||
		    (st != KVBM_SLOT_REGISTERED && st != KVBM_SLOT_EVICTING))
			break;
		kvbm_hold_t v = __atomic_load_n(&p->ht[s], __ATOMIC_RELAXED);
		if ((v & KVBM_HOLD_COUNT) != 1)
			break;
		if (kvbm_hold_drop_last_ow(p, s, v))
			empty[(*nempty)++] = s;
	}
	return i;
}

int kvbm_release_blocks_hint(struct kvbm_pool *p, const struct kvbm_block *blks, uint32_t n,
			     uint32_t hint)
{
	struct kvbm_block owned[BATCH];
	uint32_t empty[BATCH], nown = 0, nempty = 0;
	int r = pool_ok(p), err = 0;

	if (r < 0)
		return r;
	if (hint >= KVBM_HINT_COUNT)
		return KVBM_EHINT;
	if (n && !blks)
		return -EINVAL;
	if (n && hint != KVBM_HINT_NONE)
		hint = kvbm_rhint_for_release(p, blks[0].id, hint);
	/* one one-writer operation for the unpins, ended before each flush */
	int ow = kvbm_st_enter(p), run = 1;
	for (uint32_t i = 0; i < n && !err; i++) {
		/* until the run stops at its first block (a batch of last
		 * holds, as a match of inactive blocks releases, would pay
		 * for a run per block) */
		if (ow && run) {
			uint32_t k = unpin_run(p, blks + i, n - i);
			/* then a run of last holds, leaving room in empty for
			 * the general loop's block after it */
			if (!k && nempty + 1 < BATCH)
				k = unpin_last_run(p, blks + i,
						   n - i < BATCH - 1 - nempty ? n - i
									       : BATCH - 1 - nempty,
						   empty, &nempty);
			i += k;
			run = k > 0;
			if (i == n)
				break;
		}
		const struct kvbm_block *b = &blks[i];
		uint64_t w;
		r = kvbm_handle_check(p, b);
		if (r < 0) {
			err = r;
			break;
		}
		/* acquire: pairs with the state word's release stores; more
		 * than needed, it only picks the path, and each path checks
		 * again (the unpin our count, flush() the guard, locked) */
		w = __atomic_load_n(&kvbm_slot(p, b->id)->state, __ATOMIC_ACQUIRE);
		uint32_t st = kvbm_slot_state(w);
		if (kvbm_slot_gen(w) != b->gen) {
			err = KVBM_ESTALE;
		} else if (st == KVBM_SLOT_REGISTERED || st == KVBM_SLOT_EVICTING) {
			r = kvbm_hold_unpin_st(p, ow, b->id);
			if (r < 0)
				err = r;
			else if (r == 1)
				empty[nempty++] = b->id;
		} else if (st == KVBM_SLOT_MUTABLE || st == KVBM_SLOT_STAGED) {
			if (kvbm_slot_owner(w) != p->seg.self)
				err = KVBM_ENOTOWNER;
			else
				owned[nown++] = *b;
		} else {
			err = KVBM_ESTALE;
		}
		if (nown == BATCH || nempty == BATCH) {
			kvbm_st_leave(p, ow);
			r = flush(p, owned, nown, empty, nempty, hint);
			nown = nempty = 0;
			if (r < 0)
				return r;
			ow = kvbm_st_enter(p);
		}
	}
	kvbm_st_leave(p, ow);
	r = nown + nempty ? flush(p, owned, nown, empty, nempty, hint) : 0;
	return err ? err : r;
}

int kvbm_release_blocks(struct kvbm_pool *p, const struct kvbm_block *blks, uint32_t n)
{
	return kvbm_release_blocks_hint(p, blks, n, KVBM_HINT_NONE);
}

void kvbm_unpin_settle(struct kvbm_pool *p, const struct kvbm_block *blks, size_t n)
{
	(void)kvbm_release_blocks(p, blks, (uint32_t)n);
}

/* ---- holds: clone, pin, weak ------------------------------------------------- */

/* The checks every call on a held block starts with. */
static int held_call(struct kvbm_pool *p, const struct kvbm_block *blk, const void *out)
{
	int r = pool_ok(p);

	if (r < 0)
		return r;
	if (!out)
		return -EINVAL;
	return held_check(p, blk);
}

int kvbm_clone_block(struct kvbm_pool *p, const struct kvbm_block *blk, struct kvbm_block *out)
{
	int r = held_call(p, blk, out);

	if (r < 0)
		return r;
	r = kvbm_hold_pin(p, blk->id, blk->gen, NULL);
	if (r < 0)
		return r;
	if (r == 0)
		return KVBM_ESTALE;
	*out = *blk;
	return 0;
}

int kvbm_pin_block(struct kvbm_pool *p, const struct kvbm_block *blk, struct kvbm_pin *out)
{
	int r;

	if (!out)
		return -EINVAL;
	r = kvbm_clone_block(p, blk, &out->block);
	if (r < 0)
		return r;
	out->hash = kvbm_slot_key(kvbm_slot(p, blk->id));
	return 0;
}

int kvbm_downgrade_block(struct kvbm_pool *p, const struct kvbm_block *blk, struct kvbm_weak *out)
{
	int r = held_call(p, blk, out);

	if (r < 0)
		return r;
	out->block = *blk;
	out->hash = kvbm_slot_key(kvbm_slot(p, blk->id));
	return 0;
}

int kvbm_upgrade_block(struct kvbm_pool *p, const struct kvbm_weak *weak, struct kvbm_block *out)
{
	int r = pool_ok(p);

	if (r < 0)
		return r;
	if (!weak || !out)
		return -EINVAL;
	r = kvbm_handle_check(p, &weak->block);
	if (r < 0)
		return r;
	/* the same block if it still holds the hash (rule 6: the key is
	 * stable once held, so check it after the pin) */
	r = kvbm_hold_pin(p, weak->block.id, weak->block.gen, NULL);
	if (r < 0)
		return r;
	if (r == 1) {
		struct kvbm_plh k = kvbm_slot_key(kvbm_slot(p, weak->block.id));
		if (kvbm_plh_eq(k, weak->hash)) {
			*out = weak->block;
			return 1;
		}
		kvbm_hold_unpin_settle(p, weak->block.id, NULL);
	}
	/* else whichever block now holds the hash */
	r = kvbm_acquire_hash(p, weak->hash, out, NULL);
	return r;
}

int kvbm_set_reset_on_release(struct kvbm_pool *p, const struct kvbm_block *blk, int on)
{
	int r = pool_ok(p);

	if (r < 0)
		return r;
	r = held_check(p, blk);
	if (r < 0)
		return r;
	/* relaxed: read by settle() under the mutex after the last unpin,
	 * and our own drop comes after this store: a process's last unpin
	 * passes it on through its seq_cst holders RMW (hold.c); a sibling
	 * thread's last unpin meets our drop only in release-only CASes on
	 * the entry, so there x86's locked RMWs order it (TSO) */
	__atomic_store_n(&kvbm_slot(p, blk->id)->reset_on_release, on ? 1u : 0u,
			 __ATOMIC_RELAXED);
	return 0;
}

int kvbm_block_info(struct kvbm_pool *p, const struct kvbm_block *blk,
		    struct kvbm_block_info *info)
{
	int r = pool_ok(p);

	if (r < 0)
		return r;
	if (!info)
		return -EINVAL;
	r = kvbm_handle_check(p, blk);
	if (r < 0)
		return r;
	const struct kvbm_shm_slot *sl = kvbm_slot(p, blk->id);
	/* acquire: pairs with the release of STAGED or REGISTERED, so the
	 * hash read below is that word's. holders is a snapshot: acquire,
	 * pairing with the pinners' RMWs, is more than needed */
	uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_ACQUIRE);
	uint64_t h = __atomic_load_n(&sl->holders, __ATOMIC_ACQUIRE);
	memset(info, 0, sizeof(*info));
	if (kvbm_slot_gen(w) != blk->gen)
		return KVBM_ESTALE;
	info->state = kvbm_slot_state(w);
	info->holds = kvbm_hold_count(p, blk->id);
	/* an evictor that marked the slot EVICTING before seeing our holder
	 * bit (rule 1) puts it back: while we hold it, it is REGISTERED */
	if (info->state == KVBM_SLOT_EVICTING && info->holds)
		info->state = KVBM_SLOT_REGISTERED;
	info->primary = (kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY) != 0;
	/* the pool's own mark, which its counts follow: a primary kept
	 * active by a live duplicate has no holder and is not inactive, and
	 * a block whose last release has not settled yet is not either */
	info->inactive = info->state == KVBM_SLOT_REGISTERED && !(h & KVBM_HOLD_PROCS) &&
			 (h & KVBM_HOLD_INACTIVE);
	/* relaxed: a snapshot of a flag whose last writer wins */
	info->reset_on_release = (int)__atomic_load_n(&sl->reset_on_release, __ATOMIC_RELAXED);
	info->holder_procs = (uint32_t)__builtin_popcountll(h & KVBM_HOLD_PROCBITS);
	if (info->state == KVBM_SLOT_STAGED || info->state == KVBM_SLOT_REGISTERED)
		info->hash = kvbm_slot_key(sl);
	return 0;
}
