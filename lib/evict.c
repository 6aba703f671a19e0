/* SPDX-License-Identifier: Apache-2.0 */
/*
 * evict.c - which inactive block allocation evicts next, for every
 * backend, inside the segment; and the TinyLFU frequency sketch.
 *
 * Everything but the sketch runs under the pool mutex. The structures are
 * lazy: a pin resurrects a block without the mutex, so an entry may name a
 * slot that is held again. kvbm_evict_first() may return such a slot; the
 * caller (pick_victims) removes it and asks again. Whoever leaves a slot
 * marked INACTIVE but outside the structure settles it (see settle in
 * store.c): that is the invariant the checker verifies when quiescent.
 *
 * Backends:
 *  - LRU, FIFO: one list in order of insertion (control.lists[0]); the
 *    reference's two evict in this same order, a hit leaving the pool.
 *  - multi-level LRU: four lists; the level is fixed at insertion from the
 *    sketch's estimate; level 0 drains first.
 *  - lineage (Tick, Fifo) and lfru: a forest of the inactive blocks keyed
 *    by (position, fragment): only leaves are evicted. Node s is slot s;
 *    ghost nodes stand for parents known only by key. Nodes find their
 *    parent by key, so turning a node into a ghost never touches its
 *    children. Pruning walks up iteratively. Leaves are ordered by a
 *    binary heap on a priority (Tick: the insertion tick, kept when a
 *    parent becomes a leaf again; lfru: tick plus one pool's worth of
 *    ticks per doubling of the frequency estimate) or, for Fifo, by the
 *    list in control.lists[0] (a node that becomes a leaf goes to the tail).
 *    Tick keeps the run beside its heap (see "the run" below).
 */
#define _GNU_SOURCE
#include <limits.h>
#include <string.h>

#include "pool.h"
#include "evict.h"
#include "rhint.h"
#include "../shm/failpoint.h"

/* ---- TinyLFU sketch (lock-free, any process) -------------------------------- */

/* One word per key holds its four 4-bit counters: one CAS per touch. The
 * reference spreads them over four words; a word here is picked by a
 * 64-bit mix of the 128-bit key and the four nibbles by its low 16 bits.
 * An estimate is the minimum of the four, as there. */
static uint64_t sketch_hash(struct kvbm_plh k)
{
	return kvbm_evict_mix(k, 0x9e3779b97f4a7c15ull);
}

/* The key's four counters: bit 4i set for each counter i it picks, a
 * counter picked twice counted once (an OR), so a touch adds one to each
 * picked counter with one add, whatever the duplicates. */
static uint64_t picks(uint64_t h)
{
	return 1ull << (4 * (h & 15)) | 1ull << (4 * (h >> 4 & 15)) |
	       1ull << (4 * (h >> 8 & 15)) | 1ull << (4 * (h >> 12 & 15));
}

/* Counter @i (a nibble index, 0..15) of word @w. */
static unsigned nibble(uint64_t w, uint64_t i)
{
	return (unsigned)(w >> (4 * (i & 15))) & 15;
}

uint32_t kvbm_sketch_estimate(const struct kvbm_pool *p, struct kvbm_plh key)
{
	if (!p->sketch)
		return 0;
	uint64_t h = sketch_hash(key);
	uint64_t w = __atomic_load_n(&p->sketch[(h >> 32) & (p->sketch_words - 1)],
				     __ATOMIC_RELAXED);

	/* a counter picked twice only repeats a term of the minimum; the
	 * four unrolled, as a tree: lfru asks on every leaf, and the loop
	 * took twice the instructions */
	unsigned a = nibble(w, h), b = nibble(w, h >> 4), c = nibble(w, h >> 8),
		 d = nibble(w, h >> 12);
	a = a < b ? a : b;
	c = c < d ? c : d;
	return a < c ? a : c;
}

/* Asks for @key's counters ahead of an estimate. */
static void sketch_prefetch(const struct kvbm_pool *p, struct kvbm_plh key)
{
	if (p->sketch)
		__builtin_prefetch(&p->sketch[(sketch_hash(key) >> 32) & (p->sketch_words - 1)]);
}

/* Halves every counter (the reference's reset): concurrent touches may
 * land on either side of a word's halving, which only blurs counts. */
static void sketch_halve(struct kvbm_pool *p)
{
	uint64_t odd = 0;

	for (uint32_t i = 0; i < p->sketch_words; i++) {
		uint64_t w = __atomic_load_n(&p->sketch[i], __ATOMIC_RELAXED);
		while (!__atomic_compare_exchange_n(&p->sketch[i], &w,
						    (w >> 1) & 0x7777777777777777ull, 0,
						    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
			;
		odd += (uint64_t)__builtin_popcountll(w & 0x1111111111111111ull);
	}
	uint64_t limit = p->ev->sketch_limit;
	uint64_t keep = (limit >> 1) - (odd >> 2 < limit >> 1 ? odd >> 2 : limit >> 1);
	__atomic_fetch_sub(&p->ev->sketch_size, limit - keep, __ATOMIC_RELAXED);
}

void kvbm_sketch_touch(struct kvbm_pool *p, struct kvbm_plh key)
{
	if (!p->sketch)
		return;
	uint64_t h = sketch_hash(key);
	uint64_t *wp = &p->sketch[(h >> 32) & (p->sketch_words - 1)];
	uint64_t w = __atomic_load_n(wp, __ATOMIC_RELAXED), nw, ones = picks(h);

	do {
		/* bit 4i of sat: counter i is at 15, where it stays */
		uint64_t sat = w & w >> 1 & w >> 2 & w >> 3 & 0x1111111111111111ull;
		nw = w + (ones & ~sat);
		if (nw == w)
			return; /* saturated: not an increment */
	} while (!__atomic_compare_exchange_n(wp, &w, nw, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	/* every limit-th increment halves; one that died halving leaves
	 * the size past the limit, and the next multiple halves again */
	uint64_t limit = p->ev->sketch_limit;
	uint64_t sz = __atomic_add_fetch(&p->ev->sketch_size, 1, __ATOMIC_RELAXED);
	if (limit && sz >= limit && sz % limit == 0)
		sketch_halve(p);
}

/* ---- bounds ------------------------------------------------------------------
 *
 * Any attached process can write any byte of these structures. Every index
 * read from them goes through one of these: out of range, it is recorded
 * (kvbm_store_corrupt: the mutex holder repairs everything from the slot
 * array before it unlocks, or poisons the pool) and the access lands in a
 * process-local sink instead of outside the mapping. Walks are bounded by
 * the node count. The geometry used is this process's, never the
 * segment's copy.
 */
static struct kvbm_shm_lnode *LN(struct kvbm_pool *p, uint32_t n)
{
	if (n < p->lin_nodes)
		return &p->ln[n];
	kvbm_store_corrupt(p);
	return &p->sink.node;
}

static struct kvbm_shm_hent *HE(struct kvbm_pool *p, uint32_t i)
{
	if (i < p->nslots)
		return &p->heap[i];
	kvbm_store_corrupt(p);
	return &p->sink.hent;
}

static uint64_t *GPF(struct kvbm_pool *p, uint32_t n)
{
	if (n >= p->nslots && n < p->lin_nodes)
		return &p->gpfrag[n - p->nslots];
	kvbm_store_corrupt(p);
	return &p->sink.pfrag;
}

/* The slot a list link (slot + 1, not 0) names. */
static struct kvbm_shm_slot *SL(struct kvbm_pool *p, uint32_t link)
{
	if (link - 1 < p->nslots)
		return kvbm_slot(p, link - 1);
	kvbm_store_corrupt(p);
	return &p->sink.slot;
}

/* The heap's length, bounded by its room. */
static uint32_t heap_len(struct kvbm_pool *p)
{
	uint32_t n = p->ev->nheap;

	if (n <= p->nslots)
		return n;
	kvbm_store_corrupt(p);
	return p->ev->nheap = p->nslots;
}

/* ---- lists (LRU, FIFO, multi-level LRU, lineage Fifo leaves) ------------------ */

void kvbm_evlist_unlink(struct kvbm_pool *p, struct kvbm_shm_list *l, uint32_t s)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	if (sl->prev)
		SL(p, sl->prev)->next = sl->next;
	else
		l->head = sl->next;
	if (sl->next)
		SL(p, sl->next)->prev = sl->prev;
	else
		l->tail = sl->prev;
	sl->next = sl->prev = 0;
	l->len--;
}

void kvbm_evlist_append(struct kvbm_pool *p, struct kvbm_shm_list *l, uint32_t s)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	sl->prev = l->tail;
	sl->next = 0;
	if (l->tail)
		SL(p, l->tail)->next = s + 1;
	else
		l->head = s + 1;
	l->tail = s + 1;
	l->len++;
}

void kvbm_evlist_prepend(struct kvbm_pool *p, struct kvbm_shm_list *l, uint32_t s)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	sl->next = l->head;
	sl->prev = 0;
	if (l->head)
		SL(p, l->head)->prev = s + 1;
	else
		l->tail = s + 1;
	l->head = s + 1;
	l->len++;
}

void kvbm_evlist_rotate(struct kvbm_pool *p, struct kvbm_shm_list *l, uint32_t last)
{
	struct kvbm_shm_slot *ls = kvbm_slot(p, last);

	if (!ls->next)
		return; /* the whole list: its order is the same */
	uint32_t first = l->head, nh = ls->next;
	SL(p, nh)->prev = 0;
	SL(p, l->tail)->next = first;
	SL(p, first)->prev = l->tail;
	ls->next = 0;
	l->head = nh;
	l->tail = last + 1;
}

void kvbm_evlist_insert_before(struct kvbm_pool *p, struct kvbm_shm_list *l, uint32_t s,
			       uint32_t before)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s), *b = kvbm_slot(p, before);

	if (!b->prev) {
		kvbm_evlist_prepend(p, l, s);
		return;
	}
	sl->prev = b->prev;
	sl->next = before + 1;
	SL(p, b->prev)->next = s + 1;
	b->prev = s + 1;
	l->len++;
}

/* ---- the leaf heap -------------------------------------------------------------- */

static int hent_less(const struct kvbm_shm_hent *a, const struct kvbm_shm_hent *b)
{
	return a->prio < b->prio || (a->prio == b->prio && a->node < b->node);
}

/* @i < the heap's room (the sifts below keep every index under
 * heap_len(), itself bounded); the node an entry names is the segment's
 * word, so that one is checked */
static void heap_set(struct kvbm_pool *p, uint32_t i, struct kvbm_shm_hent e)
{
	p->heap[i] = e;
	(*LN(p, e.node)).hpos = i + 1;
}

/* 4-ary: the parent of i is (i - 1) / 4, its children 4i+1..4i+4 share a
 * cache line (layout.h), so a sift touches half the lines of a binary
 * heap's and each step compares within one line. Both take i < heap_len():
 * a parent's index is smaller, a child's is compared with the length */
static void heap_up(struct kvbm_pool *p, uint32_t i)
{
	struct kvbm_shm_hent e = p->heap[i];

	while (i > 0 && hent_less(&e, &p->heap[(i - 1) / 4])) {
		heap_set(p, i, p->heap[(i - 1) / 4]);
		i = (i - 1) / 4;
	}
	heap_set(p, i, e);
}

static void heap_down(struct kvbm_pool *p, uint32_t i)
{
	/* in locals: a store to the segment may alias anything read through p */
	struct kvbm_shm_hent *h = p->heap, e = h[i];
	const uint32_t len = heap_len(p);

	for (;;) {
		uint32_t c = 4 * i + 1, end = c + 4 < len ? c + 4 : len;
		if (c >= len)
			break;
		for (uint32_t k = c + 1; k < end; k++)
			c = hent_less(&h[k], &h[c]) ? k : c;
		if (!hent_less(&h[c], &e))
			break;
		h[i] = h[c];
		LN(p, h[i].node)->hpos = i + 1;
		i = c;
	}
	heap_set(p, i, e);
}

/* Entry @e into index @i < heap_len() (a hole, or the new last): up or
 * down as its neighbours say, which a set, an up and a down would do in
 * three calls. */
static void heap_place(struct kvbm_pool *p, uint32_t i, struct kvbm_shm_hent e)
{
	struct kvbm_shm_hent *h = p->heap;

	if (i > 0 && hent_less(&e, &h[(i - 1) / 4])) {
		do {
			h[i] = h[(i - 1) / 4];
			LN(p, h[i].node)->hpos = i + 1;
			i = (i - 1) / 4;
		} while (i > 0 && hent_less(&e, &h[(i - 1) / 4]));
		heap_set(p, i, e);
		return;
	}
	h[i] = e;
	heap_down(p, i);
}

/* Removes the entry at index @i (its node's hpos already cleared). */
static void heap_del_at(struct kvbm_pool *p, uint32_t i)
{
	uint32_t len = heap_len(p);

	if (len == 0 || i >= len) {
		kvbm_store_corrupt(p); /* no such entry */
		return;
	}
	uint32_t last = --p->ev->nheap;
	if (i == last)
		return;
	heap_set(p, i, p->heap[last]);
	heap_up(p, i);
	/* where the moved entry went up to (its node's hpos, just set) */
	uint32_t at = (*LN(p, p->heap[i].node)).hpos - 1;
	if (at < last)
		heap_down(p, at);
	else
		kvbm_store_corrupt(p); /* two entries name one node */
}

static void heap_del(struct kvbm_pool *p, uint32_t n)
{
	uint32_t i = (*LN(p, n)).hpos - 1;

	(*LN(p, n)).hpos = 0;
	heap_del_at(p, i);
}

/* ---- the lineage forest ------------------------------------------------------------ */

static uint32_t ln_pos(const struct kvbm_shm_lnode *n)
{
	return n->pos_fl & KVBM_LN_POS;
}

static uint32_t key_bucket(const struct kvbm_pool *p, uint32_t pos, uint64_t frag)
{
	return kvbm_lineage_bucket(pos, frag, p->lin_buckets); /* ours, not the segment's */
}

/* The key of the parent a node is counted in: a real node's is in its
 * slot's key (stable while the slot is in the forest), a ghost's kept. */
static uint64_t ln_pfrag(struct kvbm_pool *p, uint32_t n)
{
	if (n >= p->nslots)
		return (*GPF(p, n));
	return kvbm_plh_parent_fragment(kvbm_slot_key(&p->seg.slots[n]));
}

/* A node keyed (@pos, @frag), a real one first: distinct hashes may share
 * a key, and the reference compares full hashes only on lookups by hash,
 * which the registry index serves here. */
static uint32_t lin_find_in(struct kvbm_pool *p, const uint32_t *head, uint32_t pos, uint64_t frag)
{
	const struct kvbm_shm_lnode *ln = p->ln;
	const uint32_t nodes = p->lin_nodes;
	uint32_t ghost = UINT32_MAX, steps = 0;

	for (uint32_t n1 = *head; n1; n1 = ln[n1 - 1].hnext) {
		if (n1 > nodes || ++steps > nodes) { /* out of range, or a cycle */
			kvbm_store_corrupt(p);
			break;
		}
		const struct kvbm_shm_lnode *n = &ln[n1 - 1];
		if (ln_pos(n) != pos || n->frag != frag)
			continue;
		if (!(n->pos_fl & KVBM_LN_GHOST))
			return n1 - 1;
		ghost = n1 - 1;
	}
	return ghost;
}

static uint32_t lin_find(struct kvbm_pool *p, uint32_t pos, uint64_t frag)
{
	return lin_find_in(p, &p->heads[key_bucket(p, pos, frag)], pos, frag);
}

/* Whether @h1 (node + 1, from a hint) is the node keyed (@pos, @frag):
 * while no two nodes share a key (evict.twins clear) it is then the only
 * one, the node lin_find() would return, and the lookup is not needed. */
static int lin_hint_ok(struct kvbm_pool *p, uint32_t h1, uint32_t pos, uint64_t frag)
{
	if (!h1 || h1 > p->lin_nodes || p->ev->twins)
		return 0;
	const struct kvbm_shm_lnode *n = &p->ln[h1 - 1];
	return (n->pos_fl & (KVBM_LN_USED | KVBM_LN_POS)) == (KVBM_LN_USED | pos) && n->frag == frag;
}

static uint32_t lin_find_hinted(struct kvbm_pool *p, uint32_t pos, uint64_t frag, uint32_t h1)
{
	return lin_hint_ok(p, h1, pos, frag) ? h1 - 1 : lin_find(p, pos, frag);
}

/* Node @n (at @nd) to the head of chain @head. */
static void chain_push(struct kvbm_pool *p, uint32_t *head, uint32_t n, struct kvbm_shm_lnode *nd)
{
	uint32_t h1 = *head;

	nd->hnext = h1;
	nd->hprev = 0;
	if (h1)
		LN(p, h1 - 1)->hprev = n + 1;
	*head = n + 1;
}

/* Node @n (at @nd) to the head of its key's chain. */
static void hash_add_at(struct kvbm_pool *p, uint32_t n, struct kvbm_shm_lnode *nd)
{
	chain_push(p, &p->heads[key_bucket(p, ln_pos(nd), nd->frag)], n, nd);
}

/*
 * The link (a chain head or a node's hnext) that names node @n, or NULL
 * (recorded: a used node outside its chain). The chains are doubly linked
 * so that this is one load where a walk from the head took one per node
 * before it, each a cache miss (6% of lineage's time on scan-heavy); the
 * back link is a peer's word, so it is believed only when the link it
 * names names @n.
 */
static uint32_t *hash_link(struct kvbm_pool *p, uint32_t n, const struct kvbm_shm_lnode *nd)
{
	uint32_t pv = nd->hprev, *link;

	if (!pv)
		link = &p->heads[key_bucket(p, ln_pos(nd), nd->frag)];
	else if (pv <= p->lin_nodes)
		link = &p->ln[pv - 1].hnext;
	else
		link = NULL;
	if (link && *link == n + 1)
		return link;
	kvbm_store_corrupt(p);
	return NULL;
}

/* The node after @nd in its chain, if any, now comes after @prev1 (a
 * node + 1, or 0: the head). */
static void chain_relink_next(struct kvbm_pool *p, const struct kvbm_shm_lnode *nd, uint32_t prev1)
{
	if (nd->hnext)
		LN(p, nd->hnext - 1)->hprev = prev1;
}

/* Node @n (at @nd) out of its chain. */
static void hash_del(struct kvbm_pool *p, uint32_t n, struct kvbm_shm_lnode *nd)
{
	uint32_t *link = hash_link(p, n, nd);

	if (link) {
		*link = nd->hnext;
		KVBM_FAILPOINT("evict.lineage.unchain"); /* the next's back link stale */
		chain_relink_next(p, nd, nd->hprev);
	}
	nd->hnext = nd->hprev = 0;
}

/* Real node @s, keyed as ghost @g, takes @g's place in their chain. With
 * no other real node of that key (lin_find() returned @g), a place in the
 * chain is as good as another. */
static void hash_replace(struct kvbm_pool *p, uint32_t g, struct kvbm_shm_lnode *gn, uint32_t s,
			 struct kvbm_shm_lnode *sn)
{
	uint32_t *link = hash_link(p, g, gn);

	if (!link) {
		hash_add_at(p, s, sn); /* (recorded: repaired before the unlock) */
		return;
	}
	*link = s + 1;
	sn->hnext = gn->hnext;
	sn->hprev = gn->hprev;
	chain_relink_next(p, gn, s + 1);
	gn->hnext = gn->hprev = 0;
}

static int lin_fifo(const struct kvbm_pool *p)
{
	return p->backend == KVBM_BACKEND_LINEAGE_FIFO;
}

/* Computed when the node becomes a leaf, from its slot's insertion tick:
 * Tick keeps the order of insertion, lfru weighs in the frequency as it
 * is when the block becomes evictable. */
static uint64_t lin_prio(struct kvbm_pool *p, uint32_t s)
{
	const struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	if (p->backend == KVBM_BACKEND_ADAPT && kvbm_adapt_heap_lfru(p)) {
		/* adapt's lfru expert: lfru's order (below) in queue ticks */
		uint32_t f = kvbm_sketch_estimate(p, kvbm_slot_key(sl));
		return (sl->tick >> KVBM_QT_SHIFT) * 16 + (uint64_t)p->nslots * kvbm_lfru_weight(f);
	}
	if (p->backend == KVBM_BACKEND_LECAR || p->backend == KVBM_BACKEND_ADAPT)
		/* LFU: least frequent, then oldest */
		return (uint64_t)kvbm_sketch_estimate(p, kvbm_slot_key(sl)) << 58 |
		       (sl->tick >> KVBM_QT_SHIFT & ((1ull << 58) - 1));
	/* the insertion counter, moved by a release hint as far as the
	 * hint's record allows (rhint.c); unhinted blocks skip the calls */
	uint64_t t = sl->tick >> KVBM_TICK_SHIFT;
	if (sl->tick & KVBM_TICK_HINT)
		t = kvbm_rhint_prio(p, t, kvbm_rhint_placed(p, s));
	if (p->backend != KVBM_BACKEND_LFRU)
		return t;
	/* one pool's worth of insertions per doubling of the estimate: a
	 * block used twice as often may sit one pool turnover longer */
	uint32_t f = kvbm_sketch_estimate(p, kvbm_slot_key(sl));
	return t * 16 + (uint64_t)p->nslots * kvbm_lfru_weight(f);
}

/* ---- the run ---------------------------------------------------------------------
 *
 * Tick's leaves mostly arrive in order: a release inserts its blocks with
 * new ticks, so the leaf it makes is the newest, and a heap would sift
 * every such entry from its bottom to the root again when it is evicted
 * (about 600 instructions in a-steady, a cache miss per level). The
 * run, control.lists[0] through the slots' list links (free while a slot
 * is in the forest), takes a leaf whose unhinted priority, its tick, is
 * above the run's last: it stays sorted by construction, appends and
 * unlinks are O(1), and the least leaf is the lesser of the run's head
 * and the heap's root. The heap keeps the rest: parents that become
 * leaves again (older than the run's head), hinted leaves (their
 * priority moves with the hint's record, so it is kept in their heap
 * entry). Both order by (priority, node), so the eviction order is the
 * heap's alone, exactly. Recovery empties both and reinserts.
 */
static int run_takes(struct kvbm_pool *p, uint32_t n)
{
	if (p->backend != KVBM_BACKEND_LINEAGE || n >= p->nslots)
		return 0; /* (a ghost is never a leaf: the heap's path says so) */
	uint64_t t = kvbm_slot(p, n)->tick;
	if (t & KVBM_TICK_HINT)
		return 0;
	uint32_t tl = p->seg.ctl->lists[0].tail;
	if (!tl)
		return 1;
	uint64_t tt = SL(p, tl)->tick >> KVBM_TICK_SHIFT;
	t >>= KVBM_TICK_SHIFT;
	return t > tt || (t == tt && n > tl - 1);
}

/* The run's head if it comes before the heap's root @n (UINT32_MAX: none). */
static uint32_t run_first(struct kvbm_pool *p, uint32_t n)
{
	uint32_t h = p->seg.ctl->lists[0].head;

	if (!h)
		return n;
	const struct kvbm_shm_slot *sl = SL(p, h);
	if (sl == &p->sink.slot || sl->list != KVBM_LIST_LINEAGE || p->ln[h - 1].hpos != KVBM_LN_RUN) {
		kvbm_store_corrupt(p); /* not a leaf of the run */
		return n;
	}
	if (n == UINT32_MAX)
		return h - 1;
	uint64_t t = sl->tick >> KVBM_TICK_SHIFT, hp = (*HE(p, 0)).prio;
	return t < hp || (t == hp && h - 1 < n) ? h - 1 : n;
}

/* Whether a child of the root comes before @e. */
static int root_child_below(struct kvbm_pool *p, const struct kvbm_shm_hent *e)
{
	uint32_t len = heap_len(p);

	for (uint32_t k = 1; k < 5 && k < len; k++)
		if (hent_less(&p->heap[k], e))
			return 1;
	return 0;
}

/*
 * @hole (index + 1, or 0) is the heap entry of a leaf just taken out, left
 * in place for the parent it uncovered: evicting the oldest leaf of a chain
 * makes its parent, older still, the next leaf, and putting that into the
 * root's place costs no sift where a delete and an add cost two, each a
 * cache miss per level. Consumed (zeroed) when used.
 */
static void leaf_add_at(struct kvbm_pool *p, uint32_t n, uint32_t *hole)
{
	if (kvbm_backend_is_queued(p->backend) && !kvbm_backend_has_heap(p->backend))
		return; /* their queues order every block; the forest only counts */
	if (lin_fifo(p)) {
		kvbm_evlist_append(p, &p->seg.ctl->lists[0], n);
		(*LN(p, n)).hpos = 1;
		return;
	}
	if (run_takes(p, n)) {
		/* an unused @hole stays the caller's to delete */
		kvbm_evlist_append(p, &p->seg.ctl->lists[0], n);
		KVBM_FAILPOINT("evict.lineage.run"); /* listed, not marked */
		(*LN(p, n)).hpos = KVBM_LN_RUN;
		return;
	}
	struct kvbm_shm_hent e = {.prio = lin_prio(p, n), .node = n};
	uint32_t i;
	if (hole && *hole) {
		i = *hole - 1; /* a node's hpos: the segment's word */
		*hole = 0;
		if (i < heap_len(p)) {
			/* Tick: an unhinted priority is an insertion tick,
			 * one per insertion, so nothing lies strictly between
			 * the root just taken out, t, and t + 1, and a parent
			 * at t + 1 (released right after its child, the usual
			 * order) is the least. A hinted leaf's priority is
			 * moved (rhint.c) and may tie it: the root's children,
			 * one cache line, say whether one does */
			if (i == 0 && p->backend == KVBM_BACKEND_LINEAGE &&
			    e.prio == p->heap[0].prio + 1 && !root_child_below(p, &e)) {
				heap_set(p, 0, e);
				return;
			}
			heap_place(p, i, e);
			return;
		}
		kvbm_store_corrupt(p);
	}
	i = heap_len(p);
	if (i >= p->nslots) {
		kvbm_store_corrupt(p); /* more leaves than real nodes */
		return;
	}
	p->ev->nheap++;
	heap_place(p, i, e);
}

static void leaf_add(struct kvbm_pool *p, uint32_t n)
{
	leaf_add_at(p, n, NULL);
}

/* Leaf @n out of control.lists[0] (Fifo's leaves, Tick's run), once its
 * neighbours say it is in it: a mark that lies would otherwise unlink the
 * list's head and lose every entry behind it. */
static void leaf_unlink(struct kvbm_pool *p, uint32_t n)
{
	struct kvbm_shm_list *l = &p->seg.ctl->lists[0];
	const struct kvbm_shm_slot *sl = SL(p, n + 1);

	if (sl == &p->sink.slot || (sl->prev ? SL(p, sl->prev)->next : l->head) != n + 1 ||
	    (sl->next ? SL(p, sl->next)->prev : l->tail) != n + 1) {
		kvbm_store_corrupt(p);
		return;
	}
	kvbm_evlist_unlink(p, l, n);
}

static void leaf_del(struct kvbm_pool *p, uint32_t n)
{
	uint32_t hp = (*LN(p, n)).hpos;

	if (!hp)
		return;
	if (lin_fifo(p) || hp == KVBM_LN_RUN) {
		leaf_unlink(p, n);
		KVBM_FAILPOINT("evict.lineage.unrun"); /* unlisted, still marked */
		(*LN(p, n)).hpos = 0;
		return;
	}
	heap_del(p, n);
}

/* A ghost keyed (@pos, @frag) at the head of chain @head (its key's). */
static uint32_t ghost_new_at(struct kvbm_pool *p, uint32_t *head, uint32_t pos, uint64_t frag,
			     uint64_t pfrag)
{
	uint32_t g1 = p->ev->ghost_free;

	if (!g1 || g1 - 1 < p->nslots || g1 > p->lin_nodes) {
		/* out of ghosts: the child goes unparented (the checker then
		 * stops asking for exact child counts, see orphans) */
		p->ev->orphans++;
		return UINT32_MAX;
	}
	struct kvbm_shm_lnode *g = &p->ln[g1 - 1]; /* in range: checked above */
	p->ev->ghost_free = g->hnext;
	*g = (struct kvbm_shm_lnode){.frag = frag, .pos_fl = pos | KVBM_LN_USED | KVBM_LN_GHOST};
	chain_push(p, head, g1 - 1, g);
	p->gpfrag[g1 - 1 - p->nslots] = pfrag;
	p->ev->nghosts++;
	return g1 - 1;
}

static uint32_t ghost_new(struct kvbm_pool *p, uint32_t pos, uint64_t frag, uint64_t pfrag)
{
	return ghost_new_at(p, &p->heads[key_bucket(p, pos, frag)], pos, frag, pfrag);
}

/* Ghost @g, out of its chain, back to the free list. */
static void ghost_release(struct kvbm_pool *p, uint32_t g)
{
	if (p->lin_ghost_hint == g + 1)
		p->lin_ghost_hint = 0;
	*GPF(p, g) = 0; /* checks @g: a ghost's index */
	p->ln[g] = (struct kvbm_shm_lnode){.hnext = p->ev->ghost_free};
	p->ev->ghost_free = g + 1;
	p->ev->nghosts--;
}

static void ghost_free(struct kvbm_pool *p, uint32_t g)
{
	hash_del(p, g, LN(p, g));
	ghost_release(p, g);
}

/* A node keyed under (@pos - 1, @pfrag) left (@par: its parent hint): its
 * parent may become a leaf, or, a ghost with no children left, go too;
 * and so on up, iteratively (a chain may be as deep as the pool). */
static void lin_unparent(struct kvbm_pool *p, uint32_t pos, uint64_t pfrag, uint32_t par1,
			 uint32_t *hole)
{
	for (uint32_t steps = 0; pos > 0; steps++) {
		if (steps > p->lin_nodes) {
			kvbm_store_corrupt(p);
			return;
		}
		uint32_t par = lin_find_hinted(p, pos - 1, pfrag, par1);
		if (par == UINT32_MAX || (*LN(p, par)).nchild == 0)
			return;
		struct kvbm_shm_lnode *pn = &(*LN(p, par));
		KVBM_FAILPOINT("evict.lineage.unparent");
		if (--pn->nchild)
			return;
		if (!(pn->pos_fl & KVBM_LN_GHOST)) {
			/* Tick: back at its original priority */
			leaf_add_at(p, par, hole);
			return;
		}
		uint32_t linked = pn->pos_fl & KVBM_LN_LINKED;
		pos = ln_pos(pn);
		pfrag = (*GPF(p, par));
		par1 = pn->par;
		ghost_free(p, par);
		if (!linked)
			return;
	}
}

/* Links node @n (a real one, keyed at @pos > 0) under its parent's key. */
static void lin_link(struct kvbm_pool *p, struct kvbm_shm_lnode *n, uint32_t pos, uint64_t pfrag,
		     uint32_t *head)
{
	/* released parent first (recovery, in tick order), the parent is
	 * the node inserted just before */
	uint32_t par = p->lin_last_hint - 1;

	if (!lin_hint_ok(p, par + 1, pos - 1, pfrag)) {
		par = lin_find_in(p, head, pos - 1, pfrag);
		if (par == UINT32_MAX) {
			/* its own parent unknown: unlinked */
			par = ghost_new_at(p, head, pos - 1, pfrag, 0);
			if (par == UINT32_MAX)
				return;
			/* released last block first, the next insertion is
			 * this parent, which will take the ghost's place */
			p->lin_ghost_hint = par + 1;
		}
	}
	KVBM_FAILPOINT("evict.lineage.link");
	if (LN(p, par)->nchild++ == 0)
		leaf_del(p, par);
	n->pos_fl |= KVBM_LN_LINKED;
	n->par = par + 1;
}

static void lin_insert(struct kvbm_pool *p, uint32_t s)
{
	struct kvbm_shm_lnode *n = &(*LN(p, s));

	if (n->pos_fl & KVBM_LN_USED) {
		/* still here from before its resurrection: a new insertion */
		leaf_del(p, s);
		if (!n->nchild)
			leaf_add(p, s);
		p->lin_last_hint = s + 1;
		return;
	}
	p->ev->nreal++;
	uint32_t pos;
	uint64_t frag, pfrag;
	kvbm_plh_lineage_key(kvbm_slot_key(kvbm_slot(p, s)), &pos, &frag, &pfrag);
	/* the chains of its key and its parent's, and lfru's counters: each
	 * a cache miss, asked for at once rather than one after the other */
	uint32_t *own = &p->heads[key_bucket(p, pos, frag)];
	uint32_t *up = &p->heads[key_bucket(p, pos ? pos - 1 : 0, pfrag)];
	__builtin_prefetch(own);
	__builtin_prefetch(up);
	if (p->backend == KVBM_BACKEND_LFRU)
		sketch_prefetch(p, kvbm_slot_key(kvbm_slot(p, s)));
	*n = (struct kvbm_shm_lnode){.frag = frag, .pos_fl = pos | KVBM_LN_USED};
	/* a ghost of its key takes it in (its children came first); a real
	 * node of its key makes key twins, after which hints are not used */
	uint32_t g = p->lin_ghost_hint - 1;
	struct kvbm_shm_lnode *gn = NULL;
	if (lin_hint_ok(p, g + 1, pos, frag) && (p->ln[g].pos_fl & KVBM_LN_GHOST)) {
		gn = &p->ln[g];
	} else {
		g = lin_find_in(p, own, pos, frag);
		if (g != UINT32_MAX) {
			gn = LN(p, g);
			if (!(gn->pos_fl & KVBM_LN_GHOST)) {
				p->ev->twins = 1;
				gn = NULL;
			}
		}
	}
	if (gn) {
		/* its children came first: it takes the ghost's place, and
		 * its link, when both name the same parent key */
		uint64_t gp = *GPF(p, g);
		uint32_t glinked = gn->pos_fl & KVBM_LN_LINKED, gpar = gn->par;
		n->nchild = gn->nchild;
		gn->pos_fl &= ~KVBM_LN_LINKED;
		hash_replace(p, g, gn, s, n);
		/* the child inserted just before made the ghost: its hint
		 * follows the parent (other children's go stale and look up) */
		uint32_t c1 = p->lin_last_hint;
		if (c1 && c1 <= p->nslots && p->ln[c1 - 1].par == g + 1)
			p->ln[c1 - 1].par = s + 1;
		ghost_release(p, g);
		KVBM_FAILPOINT("evict.lineage.unghost");
		if (glinked && gp == pfrag) {
			n->pos_fl |= KVBM_LN_LINKED;
			n->par = gpar;
		} else if (glinked) {
			lin_unparent(p, pos, gp, gpar, NULL); /* a key twin: not its parent */
		}
	} else {
		chain_push(p, own, s, n);
	}
	if (pos > 0 && !(n->pos_fl & KVBM_LN_LINKED))
		lin_link(p, n, pos, pfrag, up);
	p->lin_last_hint = s + 1;
	if (!n->nchild)
		leaf_add(p, s);
}

static void lin_remove(struct kvbm_pool *p, uint32_t s)
{
	struct kvbm_shm_lnode *n = &(*LN(p, s));

	if (!(n->pos_fl & KVBM_LN_USED))
		return;
	uint64_t pfrag = ln_pfrag(p, s);
	uint32_t hole = 0;
	if (!lin_fifo(p) && n->hpos && n->hpos != KVBM_LN_RUN) {
		/* a leaf's entry stays for a moment: its parent may take it */
		hole = n->hpos;
		n->hpos = 0;
	} else {
		leaf_del(p, s);
	}
	hash_del(p, s, n);
	p->ev->nreal--;
	if (n->nchild) {
		/* its children still hang under its key: a ghost keeps it */
		uint32_t g = ghost_new(p, ln_pos(n), n->frag, pfrag);
		KVBM_FAILPOINT("evict.lineage.ghost");
		if (g != UINT32_MAX) {
			struct kvbm_shm_lnode *gn = &p->ln[g]; /* ghost_new's: in range */
			gn->nchild = n->nchild;
			gn->pos_fl |= n->pos_fl & KVBM_LN_LINKED;
			gn->par = n->par;
			*n = (struct kvbm_shm_lnode){0};
			if (hole) /* only leaves have entries: never, but never leak one */
				heap_del_at(p, hole - 1);
			return;
		}
	}
	if (n->pos_fl & KVBM_LN_LINKED)
		lin_unparent(p, ln_pos(n), pfrag, n->par, &hole);
	if (hole)
		heap_del_at(p, hole - 1);
	*n = (struct kvbm_shm_lnode){0};
	if (!p->ev->nreal && !p->ev->nghosts)
		p->ev->orphans = p->ev->twins = 0; /* empty: every count is exact again */
}

void kvbm_lin_insert(struct kvbm_pool *p, uint32_t s)
{
	lin_insert(p, s);
}

void kvbm_lin_remove(struct kvbm_pool *p, uint32_t s)
{
	lin_remove(p, s);
}

/*
 * Every leaf's priority computed again (adapt's heap changed its order),
 * then the heap rebuilt bottom-up: O(leaves), bounded by the heap's room.
 * A crash half way leaves the order broken, which the checker reports and
 * recovery's reinsertion rebuilds.
 */
void kvbm_lin_reorder(struct kvbm_pool *p)
{
	uint32_t len = heap_len(p);

	for (uint32_t i = 0; i < len; i++) {
		uint32_t n = p->heap[i].node;
		if (n >= p->nslots) {
			kvbm_store_corrupt(p); /* only real nodes are leaves */
			return;
		}
		p->heap[i].prio = lin_prio(p, n);
		KVBM_FAILPOINT("evict.adapt.reorder");
	}
	for (uint32_t i = len > 1 ? (len - 2) / 4 + 1 : 0; i-- > 0;)
		heap_down(p, i);
}

uint32_t kvbm_lin_least(struct kvbm_pool *p)
{
	uint32_t n = heap_len(p) ? (*HE(p, 0)).node : UINT32_MAX;

	if (n == UINT32_MAX || n < p->nslots)
		return n;
	kvbm_store_corrupt(p); /* only real nodes are leaves */
	return UINT32_MAX;
}

/* ---- the backend interface -------------------------------------------------------- */

static uint32_t mlru_level(struct kvbm_pool *p, uint32_t s)
{
	uint32_t f = kvbm_sketch_estimate(p, kvbm_slot_key(kvbm_slot(p, s))), lv = 0;

	while (lv < 3 && f >= p->thresholds[lv])
		lv++;
	return lv;
}

int kvbm_evict_listed(const struct kvbm_pool *p, uint32_t s)
{
	return p->seg.slots[s].list >= KVBM_LIST_LRU;
}

void kvbm_evict_remove(struct kvbm_pool *p, uint32_t s)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	if (sl->list == KVBM_LIST_LINEAGE) {
		lin_remove(p, s);
	} else if (sl->list >= KVBM_LIST_LRU && sl->list < KVBM_LIST_LRU + 4) {
		kvbm_evlist_unlink(p, &p->seg.ctl->lists[sl->list - KVBM_LIST_LRU], s);
		if (kvbm_backend_is_queued(p->backend))
			lin_remove(p, s);
	} else {
		return;
	}
	sl->list = KVBM_LIST_NONE;
}

static void insert_at(struct kvbm_pool *p, uint32_t s, uint64_t tick, int front)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	sl->tick = tick;
	if (tick & KVBM_TICK_HINT)
		KVBM_FAILPOINT("evict.hint.insert");
	if (kvbm_backend_is_lineage(p->backend)) {
		sl->list = KVBM_LIST_LINEAGE;
		lin_insert(p, s);
		return;
	}
	/* lru: a list per hint, each in tick order (see lru_first) */
	uint32_t lv = p->backend == KVBM_BACKEND_MULTI_LRU ? mlru_level(p, s)
		      : p->backend == KVBM_BACKEND_LRU     ? kvbm_rhint_placed(p, s)
							   : 0;
	sl->list = KVBM_LIST_LRU + lv;
	if (front)
		kvbm_evlist_prepend(p, &p->seg.ctl->lists[lv], s);
	else
		kvbm_evlist_append(p, &p->seg.ctl->lists[lv], s);
}

/* Out of line and cold: a pool that never hinted counts nothing (rhint.h),
 * and inline the call cost every insertion its registers saved. The
 * release it enters with is counted here too, at its first block, and not
 * in the release's own path: there a test of the record cost every
 * release in pools that never hint (c: +1.1 instructions a block). */
static __attribute__((noinline, cold)) void count_hit(struct kvbm_pool *p, uint32_t s,
						      uint32_t hint)
{
	/* still in the order from its last stay: it was hit meanwhile */
	if (kvbm_evict_listed(p, s))
		kvbm_rhint_outcome(p, s, 1);
	kvbm_rhint_release(p, s, hint);
}

void kvbm_evict_insert_hint(struct kvbm_pool *p, uint32_t s, uint32_t hint)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	if (kvbm_backend_is_queued(p->backend)) {
		kvbm_queue_insert(p, s, KVBM_QI_NEW);
		return;
	}
	if (__builtin_expect(p->ev->hint.seen != 0, 0))
		count_hit(p, s, hint);
	if (sl->list != KVBM_LIST_LINEAGE) {
		kvbm_evict_remove(p, s); /* a stale list entry goes */
	} else if (kvbm_backend_is_lineage(p->backend)) {
		/* a stale lineage node is refreshed in place; an interior
		 * one (a matched prefix's blocks but its last) only takes
		 * its new tick, which is all lin_insert would do three calls
		 * down: no leaf-order entry moves (c 347 -> 311 instructions
		 * a block; a-steady and d +9, the registers it takes) */
		const struct kvbm_shm_lnode *n = LN(p, s);
		if ((n->pos_fl & KVBM_LN_USED) && n->nchild && !n->hpos) {
			uint64_t t = ++p->seg.ctl->tick << KVBM_TICK_SHIFT |
				     (hint & (KVBM_TICK_HINT | KVBM_TICK_CONTROL));
			sl->tick = t;
			if (t & KVBM_TICK_HINT)
				KVBM_FAILPOINT("evict.hint.insert");
			p->lin_last_hint = s + 1;
			return;
		}
	}
	insert_at(p, s,
		  ++p->seg.ctl->tick << KVBM_TICK_SHIFT |
			  (hint & (KVBM_TICK_HINT | KVBM_TICK_CONTROL)),
		  0);
}

void kvbm_evict_insert(struct kvbm_pool *p, uint32_t s)
{
	kvbm_evict_insert_hint(p, s, KVBM_HINT_NONE);
}

void kvbm_evict_restore(struct kvbm_pool *p, uint32_t s)
{
	if (kvbm_backend_is_queued(p->backend)) {
		kvbm_queue_insert(p, s, KVBM_QI_RESTORE);
		return;
	}
	insert_at(p, s, kvbm_slot(p, s)->tick, 1);
}

/* lru with hinted blocks: list k holds the blocks placed under hint k in
 * tick order, and a hint moves all of them alike, so each list stays in
 * priority order and the first block is the least of the three heads. */
static uint32_t lru_first(struct kvbm_pool *p)
{
	uint32_t best = UINT32_MAX;
	uint64_t bp = UINT64_MAX;

	for (uint32_t lv = 0; lv < 3; lv++) {
		uint32_t h = p->seg.ctl->lists[lv].head;
		if (!h)
			continue;
		if (h - 1 >= p->nslots) {
			kvbm_store_corrupt(p);
			continue;
		}
		uint64_t pr = kvbm_rhint_prio(p, kvbm_slot(p, h - 1)->tick >> KVBM_TICK_SHIFT, lv);
		if (pr < bp) {
			bp = pr;
			best = h - 1;
		}
	}
	return best;
}

uint32_t kvbm_evict_first(struct kvbm_pool *p)
{
	struct kvbm_shm_control *c = p->seg.ctl;

	if (kvbm_backend_is_queued(p->backend))
		return kvbm_queue_first(p);
	if (kvbm_backend_is_lineage(p->backend) && !lin_fifo(p))
	{
		uint32_t n = heap_len(p) ? (*HE(p, 0)).node : UINT32_MAX;
		if (n != UINT32_MAX && n >= p->nslots) {
			kvbm_store_corrupt(p); /* only real nodes are leaves */
			n = UINT32_MAX;
		}
		return p->backend == KVBM_BACKEND_LINEAGE ? run_first(p, n) : n;
	}
	if (p->backend == KVBM_BACKEND_LRU && (c->lists[1].len || c->lists[2].len))
		return lru_first(p);
	for (int lv = 0; lv < 4; lv++) {
		uint32_t h = c->lists[lv].head;
		if (h && h - 1 < p->nslots)
			return h - 1;
		if (h)
			kvbm_store_corrupt(p);
	}
	return UINT32_MAX;
}

void kvbm_evict_reinsert(struct kvbm_pool *p, uint32_t s)
{
	uint64_t t = kvbm_slot(p, s)->tick;

	if (kvbm_backend_is_queued(p->backend)) {
		p->seg.ctl->tick = t;
		kvbm_queue_insert(p, s, KVBM_QI_REINSERT);
		return;
	}
	p->seg.ctl->tick = t >> KVBM_TICK_SHIFT; /* the counter, without the hint */
	insert_at(p, s, t, 0);
}

void kvbm_evict_clear(struct kvbm_pool *p)
{
	memset(p->seg.ctl->lists, 0, sizeof(p->seg.ctl->lists));
	kvbm_evict_init(&p->seg);
	/* kept across a recovery, as the ghosts are: only what no update
	 * writes is repaired (reinsertion raises qtick past every tick) */
	if (p->backend == KVBM_BACKEND_ARC && p->ev->qtarget > p->nslots)
		p->ev->qtarget = p->nslots;
	if (p->backend == KVBM_BACKEND_LECAR &&
	    ((int32_t)p->ev->qtarget > (int32_t)KVBM_LECAR_ONE / 2 ||
	     (int32_t)p->ev->qtarget < -(int32_t)KVBM_LECAR_ONE / 2))
		p->ev->qtarget = 0; /* back to even weights */
	if (p->backend == KVBM_BACKEND_ADAPT)
		kvbm_adapt_recover(p); /* the miniatures start again, empty */
}

void kvbm_evict_setup(struct kvbm_pool *p)
{
	const struct kvbm_shm_config *cfg = &p->seg.cfg;
	uint8_t *base = (uint8_t *)p->seg.evict;
	struct kvbm_evict_geom g;

	kvbm_evict_geometry(cfg, &g);
	p->ev = p->seg.evict;
	p->backend = cfg->backend;
	memcpy(p->thresholds, cfg->mlru_thresholds, 3);
	p->sketch_words = g.sketch_words;
	p->sketch = g.sketch_words ? (uint64_t *)(base + g.sketch_off) : NULL;
	p->ln = g.nodes ? (struct kvbm_shm_lnode *)(base + g.nodes_off) : NULL;
	p->heads = g.nodes ? (uint32_t *)(base + g.heads_off) : NULL;
	p->heap = g.heap_off ? (struct kvbm_shm_hent *)(base + g.heap_off) : NULL;
	p->ghdr = g.gbuckets ? (struct kvbm_shm_ghosthdr *)(base + g.gtab_off) : NULL;
	p->gtab = g.gbuckets ? (struct kvbm_shm_gbucket *)(p->ghdr + 1) : NULL;
	p->gbuckets = g.gbuckets;
	p->mini = g.mini_off ? base + g.mini_off : NULL;
	p->mini_ents = g.mini_ents;
	p->mini_tslots = g.mini_tslots;
	p->gpfrag = g.nodes ? (uint64_t *)(base + g.pfrag_off) : NULL;
	p->lin_nodes = g.nodes;
	p->lin_buckets = g.buckets;
}
