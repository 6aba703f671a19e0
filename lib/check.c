/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check.c - the invariants of ARCHITECTURE section 5, checked against the
 * slot array (the source of truth): by kvbm-shm-dump --check, by the crash
 * and torture tests, and by recovery before it declares a repaired segment
 * consistent.
 *
 * What may be checked depends on who else is running:
 *  - always (even lock-free, on a live pool): a state word holds a valid
 *    state; a set holder bit has a non-zero holder-table entry behind it
 *    (rule 1: the entry goes tentative before the bit and is cleared after
 *    it); no bit or entry belongs to a free process-table entry;
 *  - KVBM_CK_LOCKED (the mutex is held): everything written under it -
 *    lists, index, dups, EVICTING, list membership - is exact;
 *  - KVBM_CK_QUIESCENT (nobody else runs): the lock-free in-flight states
 *    are violations too: a tentative entry, a bit on a slot that is not
 *    REGISTERED (a pin about to undo itself), an unsettled release, the
 *    inactive count off by a resurrection in progress.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "pool.h"
#include "../shm/liveness.h"
#include "../shm/proctable.h"

#define MAX_REPORTS 64 /* then one summary line: a broken pool has thousands */

struct ck {
	const struct kvbm_seg *seg;
	unsigned flags;
	kvbm_report_fn fn;
	void *arg;
	long n;
	uint32_t nslots, maxp;
	uint32_t pst[KVBM_MAX_PROCS];
	int dead[KVBM_MAX_PROCS];
	struct kvbm_index ix;
};

__attribute__((format(printf, 2, 3))) static void bad(struct ck *c, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (c->fn && c->n < MAX_REPORTS) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		c->fn(msg, c->arg);
	}
	c->n++;
}

static const kvbm_hold_t *htab(const struct ck *c, uint32_t proc)
{
	return (const kvbm_hold_t *)(c->seg->holders +
				     (uint64_t)proc * kvbm_holder_stride(&c->seg->hdr->config));
}

static const char *state_name(uint32_t st)
{
	static const char *const names[] = {"RESET", "MUTABLE", "STAGED", "REGISTERED",
					    "EVICTING"};

	return st < 5 ? names[st] : "invalid";
}

/* Holder bits and holder-table entries of slot @s. */
static void check_holders(struct ck *c, uint32_t s, uint32_t st, uint64_t w, uint64_t h)
{
	uint64_t pb = h & KVBM_HOLD_PROCS;

	for (uint32_t p = 0; p < KVBM_MAX_PROCS; p++) {
		uint64_t bit = 1ull << p;
		kvbm_hold_t v = p < c->maxp ? __atomic_load_n(&htab(c, p)[s], __ATOMIC_ACQUIRE) : 0;
		if (pb & bit) {
			if (p >= c->maxp || c->pst[p] == KVBM_PROC_FREE)
				bad(c, "slot %u: holder bit of free process entry %u", s, p);
			else if (c->dead[p])
				bad(c, "slot %u: held by dead process entry %u, not reaped", s, p);
			else if (v == 0)
				bad(c, "slot %u: process %u's holder bit set, its holder entry 0", s, p);
		}
		if (v == 0)
			continue;
		if (c->pst[p] == KVBM_PROC_FREE) {
			bad(c, "process entry %u is free but its holder entry for slot %u is 0x%x", p,
			    s, v);
			continue;
		}
		if (!(c->flags & KVBM_CK_QUIESCENT))
			continue;
		if (v & KVBM_HOLD_TENT)
			bad(c, "slot %u: process %u left a tentative hold", s, p);
		if ((v & KVBM_HOLD_COUNT) && !(pb & bit))
			bad(c, "slot %u: process %u counts %u holds without its holder bit", s, p,
			    v & KVBM_HOLD_COUNT);
		int owns = (st == KVBM_SLOT_MUTABLE || st == KVBM_SLOT_STAGED) &&
			   kvbm_slot_owner(w) == p;
		if (!!(v & KVBM_HOLD_OWNED) != owns)
			bad(c, "slot %u: process %u's OWNED mark disagrees with the %s slot", s, p,
			    state_name(st));
	}
	if (pb && st != KVBM_SLOT_REGISTERED && st != KVBM_SLOT_EVICTING &&
	    (c->flags & KVBM_CK_QUIESCENT))
		bad(c, "slot %u: %s with holder bits 0x%llx", s, state_name(st),
		    (unsigned long long)pb);
}

/* A REGISTERED slot: primary in the index, duplicate pointing at one. */
static void check_registered(struct ck *c, uint32_t s, uint64_t w, uint64_t h, uint32_t *dupcnt)
{
	const struct kvbm_shm_slot *sl = &c->seg->slots[s];
	struct kvbm_plh key = kvbm_slot_key(sl);
	int locked = c->flags & KVBM_CK_LOCKED;
	uint32_t fs;
	uint64_t fg;

	if (kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY) {
		if (locked && (!kvbm_index_lookup(&c->ix, key, &fs, &fg) || fs != s ||
			       fg != kvbm_slot_gen(w)))
			bad(c, "slot %u: registered primary not found in the registry index", s);
		/* a pin in flight may have had it dropped, and will settle it */
		if ((h & KVBM_HOLD_INACTIVE) && locked && (c->flags & KVBM_CK_QUIESCENT) &&
		    sl->list < KVBM_LIST_LRU)
			bad(c, "slot %u: inactive but not in the eviction order", s);
		if ((h & KVBM_HOLD_INACTIVE) && locked && sl->dups)
			bad(c, "slot %u: inactive with %u live duplicates", s, sl->dups);
		if ((h & KVBM_HOLD_INACTIVE) && (h & KVBM_HOLD_PROCS) &&
		    (c->flags & KVBM_CK_QUIESCENT))
			bad(c, "slot %u: counted inactive while held", s);
	} else {
		if ((h & KVBM_HOLD_INACTIVE) && locked)
			bad(c, "slot %u: a duplicate counted inactive", s);
		uint32_t pr = locked ? sl->primary : 0;
		if (pr) {
			const struct kvbm_shm_slot *ps = pr <= c->nslots ? &c->seg->slots[pr - 1] : NULL;
			uint64_t pw = ps ? __atomic_load_n(&ps->state, __ATOMIC_ACQUIRE) : 0;
			if (!ps || kvbm_slot_state(pw) != KVBM_SLOT_REGISTERED ||
			    !(kvbm_slot_flags(pw) & KVBM_SLOT_F_PRIMARY) ||
			    !kvbm_plh_eq(kvbm_slot_key(ps), key))
				bad(c, "slot %u: duplicate of slot %u, which is no primary of its hash",
				    s, pr - 1);
			else
				dupcnt[pr - 1]++;
		}
	}
	if (!(h & KVBM_HOLD_PROCS) && !(h & KVBM_HOLD_INACTIVE) && (c->flags & KVBM_CK_QUIESCENT))
		bad(c, "slot %u: released by everyone but neither inactive nor freed", s);
}

static void check_free_list(struct ck *c, uint32_t nreset)
{
	const struct kvbm_shm_control *ctl = c->seg->ctl;
	uint32_t k = 0, last = 0;

	for (uint32_t s1 = ctl->free_head; s1; s1 = c->seg->slots[s1 - 1].next) {
		if (s1 > c->nslots || k > c->nslots) {
			bad(c, "free list: broken link %u after %u entries", s1, k);
			return;
		}
		const struct kvbm_shm_slot *sl = &c->seg->slots[s1 - 1];
		uint32_t st = kvbm_slot_state(__atomic_load_n(&sl->state, __ATOMIC_ACQUIRE));
		if (st != KVBM_SLOT_RESET || sl->list != KVBM_LIST_FREE)
			bad(c, "free list: slot %u is %s (list %u)", s1 - 1, state_name(st), sl->list);
		last = s1;
		k++;
	}
	if (last != ctl->free_tail)
		bad(c, "free list: tail %u, last entry %u", ctl->free_tail, last);
	if (k != ctl->free_count)
		bad(c, "free list: %u entries, free count %u", k, ctl->free_count);
	if (k != nreset)
		bad(c, "free list: %u entries, %u RESET slots", k, nreset);
}

static void check_list(struct ck *c, uint32_t lv, uint32_t want_list, uint32_t *listed)
{
	const struct kvbm_shm_list *l = &c->seg->ctl->lists[lv];
	uint32_t k = 0, prev = 0;

	for (uint32_t s1 = l->head; s1; s1 = c->seg->slots[s1 - 1].next) {
		if (s1 > c->nslots || k > c->nslots) {
			bad(c, "eviction list %u: broken link %u after %u entries", lv, s1, k);
			return;
		}
		const struct kvbm_shm_slot *sl = &c->seg->slots[s1 - 1];
		if (sl->list != want_list || sl->prev != prev)
			bad(c, "eviction list %u: slot %u has list %u, prev %u (expected %u)", lv,
			    s1 - 1, sl->list, sl->prev, prev);
		prev = s1;
		k++;
	}
	if (prev != l->tail)
		bad(c, "eviction list %u: tail %u, last entry %u", lv, l->tail, prev);
	if (k != l->len)
		bad(c, "eviction list %u: %u entries, length %u", lv, k, l->len);
	*listed += k;
}

/* The lineage forest: the leaf order holds exactly the childless real
 * nodes, every child count is what the keys say, ghosts are accounted. */
static void check_forest(struct ck *c, const struct kvbm_evict_geom *g, uint32_t *listed)
{
	const struct kvbm_shm_evict *e = c->seg->evict;
	const uint8_t *base = (const uint8_t *)e;
	const struct kvbm_shm_lnode *ln = (const void *)(base + g->nodes_off);
	const struct kvbm_shm_hent *heap = (const void *)(base + g->heap_off);
	const uint64_t *gpfrag = (const void *)(base + g->pfrag_off);
	const uint32_t *heads = (const void *)(base + g->heads_off);
	int fifo = c->seg->hdr->config.backend == KVBM_BACKEND_LINEAGE_FIFO;
	uint32_t nghosts = 0, nleaves = 0, hashed = 0, listed0 = *listed;
	uint32_t *kids = calloc(g->nodes, sizeof(*kids));

	if (!kids)
		return;
	for (uint32_t b = 0; b < g->buckets; b++)
		for (uint32_t n1 = heads[b], k = 0; n1; n1 = ln[n1 - 1].hnext, k++) {
			if (n1 > g->nodes || k > g->nodes) {
				bad(c, "lineage: hash chain %u broken at node %u", b, n1);
				break;
			}
			hashed++;
		}
	for (uint32_t n = 0; n < g->nodes; n++) {
		const struct kvbm_shm_lnode *nd = &ln[n];
		if (!(nd->pos_fl & KVBM_LN_USED))
			continue;
		int ghost = (nd->pos_fl & KVBM_LN_GHOST) != 0;
		uint32_t pos = nd->pos_fl & KVBM_LN_POS;
		if (ghost != (n >= c->nslots))
			bad(c, "lineage: node %u is %s in the %s range", n, ghost ? "a ghost" : "real",
			    n >= c->nslots ? "ghost" : "slot");
		nghosts += ghost;
		if (!ghost && c->seg->slots[n].list != KVBM_LIST_LINEAGE)
			bad(c, "lineage: node of slot %u, which is not marked in the forest", n);
		if (!ghost && !nd->nchild)
			nleaves++;
		if (ghost && !nd->nchild)
			bad(c, "lineage: ghost node %u has no children", n);
		if (!ghost && !fifo && (nd->nchild != 0) == (nd->hpos != 0))
			bad(c, "lineage: node %u has %u children and %s the leaf order", n, nd->nchild,
			    nd->hpos ? "is in" : "is not in");
		if ((nd->pos_fl & KVBM_LN_LINKED) && pos > 0) {
			/* the node a lookup of the parent key finds, real first */
			uint32_t par = UINT32_MAX;
			uint64_t pfrag = ghost ? gpfrag[n - c->nslots]
					       : kvbm_plh_parent_fragment(kvbm_slot_key(&c->seg->slots[n]));
			uint32_t b = kvbm_lineage_bucket(pos - 1, pfrag, g->buckets);
			for (uint32_t m1 = heads[b], k = 0; m1 && m1 <= g->nodes && k <= g->nodes;
			     m1 = ln[m1 - 1].hnext, k++) {
				const struct kvbm_shm_lnode *pm = &ln[m1 - 1];
				if ((pm->pos_fl & KVBM_LN_POS) == pos - 1 && pm->frag == pfrag &&
				    (par == UINT32_MAX || !(pm->pos_fl & KVBM_LN_GHOST)))
					par = par != UINT32_MAX && !(ln[par].pos_fl & KVBM_LN_GHOST)
						      ? par : m1 - 1;
			}
			if (par != UINT32_MAX)
				kids[par]++;
			else if (!e->orphans) /* else an orphan: its parent went ghostless */
				bad(c, "lineage: node %u counted in a parent that is gone", n);
		}
		if (!ghost)
			(*listed)++;
	}
	for (uint32_t n = 0; n < g->nodes; n++)
		if ((ln[n].pos_fl & KVBM_LN_USED) && kids[n] != ln[n].nchild && !e->orphans)
			bad(c, "lineage: node %u counts %u children, %u are linked to it", n,
			    ln[n].nchild, kids[n]);
	if (nghosts != e->nghosts)
		bad(c, "lineage: %u ghosts, %u counted", nghosts, e->nghosts);
	if (*listed - listed0 != e->nreal)
		bad(c, "lineage: %u real nodes, %u counted", *listed - listed0, e->nreal);
	if (!fifo) {
		for (uint32_t i = 0; i < e->nheap && i < c->nslots; i++) {
			uint32_t n = heap[i].node;
			if (n >= c->nslots || ln[n].hpos != i + 1) {
				bad(c, "lineage: heap entry %u (node %u) does not point back", i, n);
				continue;
			}
			if (i && heap[i].prio < heap[(i - 1) / 4].prio)
				bad(c, "lineage: heap order broken at entry %u", i);
		}
		if (e->nheap != nleaves)
			bad(c, "lineage: %u leaves, %u in the heap", nleaves, e->nheap);
	} else {
		uint32_t inlist = 0;
		check_list(c, 0, KVBM_LIST_LINEAGE, &inlist);
		if (inlist != nleaves)
			bad(c, "lineage: %u leaves, %u in the leaf list", nleaves, inlist);
	}
	free(kids);
}

static void check_order(struct ck *c, uint32_t marked)
{
	const struct kvbm_shm_config *cfg = &c->seg->hdr->config;
	struct kvbm_evict_geom g;
	uint32_t listed = 0;

	kvbm_evict_geometry(cfg, &g);
	if (kvbm_backend_is_lineage(cfg->backend))
		check_forest(c, &g, &listed);
	else
		for (uint32_t lv = 0; lv < 4; lv++)
			check_list(c, lv, KVBM_LIST_LRU + lv, &listed);
	if (listed != marked)
		bad(c, "eviction order: %u entries, %u slots marked", listed, marked);
}

static void check_index(struct ck *c)
{
	static const char *const why[] = {"", "names no registered primary of its generation",
					  "sits where its key does not hash",
					  "is not what a lookup of its key finds"};

	for (uint32_t b = 0; b <= c->ix.mask; b++)
		for (int i = 0; i < KVBM_BUCKET_ENTRIES; i++) {
			int r = kvbm_index_entry_check(&c->ix, b, i);
			if (r < 0)
				bad(c, "registry index: bucket %u entry %d (slot %u) %s", b, i,
				    c->seg->buckets[b].slot[i] - 1, why[-r]);
		}
}

long kvbm_check_seg(const struct kvbm_seg *seg, unsigned flags, kvbm_report_fn fn, void *arg)
{
	struct ck c = {.seg = seg, .flags = flags, .fn = fn, .arg = arg};
	uint32_t nreset = 0, on_lru = 0;
	int64_t ninactive = 0;

	c.nslots = seg->hdr->config.block_count;
	c.maxp = seg->hdr->config.max_procs;
	if (c.maxp > KVBM_MAX_PROCS)
		return KVBM_ECORRUPT;
	kvbm_index_view(&c.ix, seg->buckets, kvbm_index_buckets(c.nslots), seg->slots, c.nslots);
	uint32_t *dupcnt = calloc(c.nslots, sizeof(*dupcnt));
	if (!dupcnt)
		return -ENOMEM;
	for (uint32_t p = 0; p < c.maxp; p++) {
		const struct kvbm_shm_proc *e = &seg->procs[p];
		c.pst[p] = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
		if (c.pst[p] > KVBM_PROC_RECLAIMING)
			bad(&c, "process entry %u: invalid state %u", p, c.pst[p]);
		c.dead[p] = (flags & KVBM_CK_LIVENESS) && c.pst[p] == KVBM_PROC_ACTIVE &&
			    p != seg->self && kvbm_proc_liveness(seg->fd, p, e) != KVBM_ALIVE;
		if ((flags & KVBM_CK_LOCKED) && c.pst[p] == KVBM_PROC_RECLAIMING)
			bad(&c, "process entry %u: left RECLAIMING", p);
	}
	for (uint32_t s = 0; s < c.nslots; s++) {
		const struct kvbm_shm_slot *sl = &seg->slots[s];
		uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_ACQUIRE);
		uint64_t h = __atomic_load_n(&sl->holders, __ATOMIC_ACQUIRE);
		uint32_t st = kvbm_slot_state(w);

		if (st > KVBM_SLOT_EVICTING) {
			bad(&c, "slot %u: invalid state %u", s, st);
			continue;
		}
		check_holders(&c, s, st, w, h);
		ninactive += (h & KVBM_HOLD_INACTIVE) != 0;
		if (flags & KVBM_CK_LOCKED)
			on_lru += sl->list >= KVBM_LIST_LRU;
		switch (st) {
		case KVBM_SLOT_RESET:
			nreset++;
			if (h & KVBM_HOLD_INACTIVE)
				bad(&c, "slot %u: RESET but counted inactive", s);
			break;
		case KVBM_SLOT_MUTABLE:
		case KVBM_SLOT_STAGED: {
			uint32_t o = kvbm_slot_owner(w);
			if (o >= c.maxp || c.pst[o] == KVBM_PROC_FREE)
				bad(&c, "slot %u: %s, owned by free process entry %u", s,
				    state_name(st), o);
			else if (c.dead[o])
				bad(&c, "slot %u: %s, owned by dead process entry %u, not reaped", s,
				    state_name(st), o);
			if ((flags & KVBM_CK_LOCKED) && sl->list != KVBM_LIST_NONE)
				bad(&c, "slot %u: %s but on pool list %u", s, state_name(st),
				    sl->list);
			break;
		}
		case KVBM_SLOT_EVICTING:
			if (flags & KVBM_CK_LOCKED)
				bad(&c, "slot %u: left EVICTING", s);
			break;
		default:
			check_registered(&c, s, w, h, dupcnt);
		}
	}
	if (flags & KVBM_CK_LOCKED) {
		for (uint32_t s = 0; s < c.nslots; s++) {
			const struct kvbm_shm_slot *sl = &seg->slots[s];
			uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_ACQUIRE);
			if (kvbm_slot_state(w) == KVBM_SLOT_REGISTERED &&
			    (kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY) && sl->dups != dupcnt[s])
				bad(&c, "slot %u: counts %u duplicates, %u point at it", s, sl->dups,
				    dupcnt[s]);
		}
		check_free_list(&c, nreset);
		check_order(&c, on_lru);
		check_index(&c);
	}
	if (flags & KVBM_CK_QUIESCENT) {
		int64_t counted = __atomic_load_n(&seg->ctl->inactive, __ATOMIC_RELAXED);
		if (counted != ninactive)
			bad(&c, "inactive count %lld, %lld slots marked inactive", (long long)counted,
			    (long long)ninactive);
	}
	free(dupcnt);
	if (c.n > MAX_REPORTS && fn) {
		char msg[64];
		snprintf(msg, sizeof(msg), "... %ld violations in all", c.n);
		fn(msg, arg);
	}
	return c.n;
}

long kvbm_pool_check(struct kvbm_pool *p, unsigned flags, kvbm_report_fn report, void *arg)
{
	unsigned ck = KVBM_CK_LIVENESS;
	long r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	if (flags & ~(KVBM_CHECK_LOCK | KVBM_CHECK_QUIESCENT))
		return -EINVAL;
	if (flags & KVBM_CHECK_QUIESCENT)
		ck |= KVBM_CK_QUIESCENT;
	if (flags & KVBM_CHECK_LOCK) {
		r = kvbm_store_lock(p, KVBM_OP_NONE, 0);
		if (r < 0)
			return r;
		/* the dead are reaped first: until then their holds are theirs,
		 * which no invariant forbids, and a reap is what they wait for */
		r = kvbm_proc_reap_locked(&p->seg);
		kvbm_store_op(p, KVBM_OP_NONE, 0);
		if (r < 0) {
			kvbm_store_unlock(p);
			return r;
		}
		ck |= KVBM_CK_LOCKED;
	}
	r = kvbm_check_seg(&p->seg, ck, report, arg);
	if (flags & KVBM_CHECK_LOCK)
		kvbm_store_unlock(p);
	return r;
}
