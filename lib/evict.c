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
 */
#define _GNU_SOURCE
#include <limits.h>
#include <string.h>

#include "pool.h"
#include "evict.h"
#include "../shm/failpoint.h"

/* ---- TinyLFU sketch (lock-free, any process) -------------------------------- */

/* One word per key holds its four 4-bit counters: one CAS per touch. The
 * reference spreads them over four words; a word here is picked by a
 * 64-bit mix of the 128-bit key and the four nibbles by its low 16 bits.
 * An estimate is the minimum of the four, as there. */
uint64_t kvbm_evict_mix(struct kvbm_plh k, uint64_t mult)
{
	uint64_t h = k.lo ^ (k.hi * mult);

	h ^= h >> 32;
	h *= 0xd6e8feb86659fd93ull;
	h ^= h >> 32;
	return h;
}

static uint64_t sketch_hash(struct kvbm_plh k)
{
	return kvbm_evict_mix(k, 0x9e3779b97f4a7c15ull);
}

static unsigned nibbles(uint64_t h, unsigned idx[4])
{
	unsigned n = 0;

	for (unsigned i = 0; i < 4; i++) {
		unsigned x = (unsigned)(h >> (4 * i)) & 15;
		unsigned dup = 0;
		for (unsigned j = 0; j < n; j++)
			dup |= idx[j] == x;
		if (!dup)
			idx[n++] = x;
	}
	return n;
}

uint32_t kvbm_sketch_estimate(const struct kvbm_pool *p, struct kvbm_plh key)
{
	if (!p->sketch)
		return 0;
	uint64_t h = sketch_hash(key);
	uint64_t w = __atomic_load_n(&p->sketch[(h >> 32) & (p->sketch_words - 1)],
				     __ATOMIC_RELAXED);
	unsigned idx[4] = {0}, n = nibbles(h, idx), m = 15;

	for (unsigned i = 0; i < n; i++) {
		unsigned v = (unsigned)(w >> (4 * idx[i])) & 15;
		m = v < m ? v : m;
	}
	return m;
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
	uint64_t w = __atomic_load_n(wp, __ATOMIC_RELAXED), nw;
	unsigned idx[4] = {0}, n = nibbles(h, idx);

	do {
		nw = w;
		for (unsigned i = 0; i < n; i++)
			if (((w >> (4 * idx[i])) & 15) != 15)
				nw += 1ull << (4 * idx[i]);
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
	struct kvbm_shm_hent e = p->heap[i];
	uint32_t len = heap_len(p);

	for (;;) {
		uint32_t c = 4 * i + 1, end = c + 4 < len ? c + 4 : len;
		if (c >= len)
			break;
		for (uint32_t k = c + 1; k < end; k++)
			if (hent_less(&p->heap[k], &p->heap[c]))
				c = k;
		if (!hent_less(&p->heap[c], &e))
			break;
		heap_set(p, i, p->heap[c]);
		i = c;
	}
	heap_set(p, i, e);
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
static uint32_t lin_find(struct kvbm_pool *p, uint32_t pos, uint64_t frag)
{
	uint32_t ghost = UINT32_MAX;

	uint32_t steps = 0;

	for (uint32_t n1 = p->heads[key_bucket(p, pos, frag)]; n1; n1 = (*LN(p, n1 - 1)).hnext) {
		if (++steps > p->lin_nodes) { /* a cycle */
			kvbm_store_corrupt(p);
			break;
		}
		const struct kvbm_shm_lnode *n = &(*LN(p, n1 - 1));
		if (ln_pos(n) != pos || n->frag != frag)
			continue;
		if (!(n->pos_fl & KVBM_LN_GHOST))
			return n1 - 1;
		ghost = n1 - 1;
	}
	return ghost;
}

static void hash_add(struct kvbm_pool *p, uint32_t n)
{
	uint32_t *head = &p->heads[key_bucket(p, ln_pos(&(*LN(p, n))), (*LN(p, n)).frag)];

	(*LN(p, n)).hnext = *head;
	*head = n + 1;
}

static void hash_del(struct kvbm_pool *p, uint32_t n)
{
	uint32_t *link = &p->heads[key_bucket(p, ln_pos(&(*LN(p, n))), (*LN(p, n)).frag)];

	for (uint32_t steps = 0; *link && *link != n + 1; steps++) {
		if (steps > p->lin_nodes) {
			kvbm_store_corrupt(p); /* a cycle */
			return;
		}
		link = &(*LN(p, *link - 1)).hnext;
	}
	if (*link)
		*link = (*LN(p, n)).hnext;
	(*LN(p, n)).hnext = 0;
}

static int lin_fifo(const struct kvbm_pool *p)
{
	return p->backend == KVBM_BACKEND_LINEAGE_FIFO;
}

static uint64_t lfru_weight(uint32_t f)
{
	/* 16 x log2(f), rounded */
	static const uint8_t l16[16] = {0, 0, 16, 25, 32, 37, 41, 45, 48, 51, 53, 55, 57, 59, 61, 63};

	return l16[f & 15];
}

/* Computed when the node becomes a leaf, from its slot's insertion tick:
 * Tick keeps the order of insertion, lfru weighs in the frequency as it
 * is when the block becomes evictable. */
static uint64_t lin_prio(struct kvbm_pool *p, uint32_t s)
{
	const struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	if (p->backend == KVBM_BACKEND_LECAR || p->backend == KVBM_BACKEND_ADAPT)
		/* LFU: least frequent, then oldest */
		return (uint64_t)kvbm_sketch_estimate(p, kvbm_slot_key(sl)) << 58 |
		       (sl->tick >> KVBM_QT_SHIFT & ((1ull << 58) - 1));
	if (p->backend != KVBM_BACKEND_LFRU)
		return sl->tick;
	/* one pool's worth of insertions per doubling of the estimate: a
	 * block used twice as often may sit one pool turnover longer */
	uint32_t f = kvbm_sketch_estimate(p, kvbm_slot_key(sl));
	return sl->tick * 16 + (uint64_t)p->nslots * lfru_weight(f);
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
	struct kvbm_shm_hent e = {.prio = lin_prio(p, n), .node = n};
	uint32_t i;
	if (hole && *hole) {
		i = *hole - 1; /* a node's hpos: the segment's word */
		*hole = 0;
		if (i < heap_len(p)) {
			heap_set(p, i, e);
			heap_up(p, i);
			i = (*LN(p, n)).hpos - 1;
			if (i < heap_len(p))
				heap_down(p, i);
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
	heap_set(p, i, e);
	heap_up(p, i);
}

static void leaf_add(struct kvbm_pool *p, uint32_t n)
{
	leaf_add_at(p, n, NULL);
}

static void leaf_del(struct kvbm_pool *p, uint32_t n)
{
	if (!(*LN(p, n)).hpos)
		return;
	if (lin_fifo(p)) {
		kvbm_evlist_unlink(p, &p->seg.ctl->lists[0], n);
		(*LN(p, n)).hpos = 0;
		return;
	}
	heap_del(p, n);
}

static uint32_t ghost_new(struct kvbm_pool *p, uint32_t pos, uint64_t frag, uint64_t pfrag)
{
	uint32_t g1 = p->ev->ghost_free;

	if (!g1 || g1 - 1 < p->nslots || g1 > p->lin_nodes) {
		/* out of ghosts: the child goes unparented (the checker then
		 * stops asking for exact child counts, see orphans) */
		p->ev->orphans++;
		return UINT32_MAX;
	}
	struct kvbm_shm_lnode *g = &(*LN(p, g1 - 1));
	p->ev->ghost_free = g->hnext;
	*g = (struct kvbm_shm_lnode){.frag = frag, .pos_fl = pos | KVBM_LN_USED | KVBM_LN_GHOST};
	(*GPF(p, g1 - 1)) = pfrag;
	hash_add(p, g1 - 1);
	p->ev->nghosts++;
	return g1 - 1;
}

static void ghost_free(struct kvbm_pool *p, uint32_t g)
{
	hash_del(p, g);
	(*LN(p, g)) = (struct kvbm_shm_lnode){.hnext = p->ev->ghost_free};
	(*GPF(p, g)) = 0;
	p->ev->ghost_free = g + 1;
	p->ev->nghosts--;
}

/* A node keyed under (@pos - 1, @pfrag) left: its parent may become a
 * leaf, or, a ghost with no children left, go too; and so on up,
 * iteratively (a chain may be as deep as the pool). */
static void lin_unparent(struct kvbm_pool *p, uint32_t pos, uint64_t pfrag, uint32_t *hole)
{
	for (uint32_t steps = 0; pos > 0; steps++) {
		if (steps > p->lin_nodes) {
			kvbm_store_corrupt(p);
			return;
		}
		uint32_t par = lin_find(p, pos - 1, pfrag);
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
		ghost_free(p, par);
		if (!linked)
			return;
	}
}

/* Links node @s (a real one, keyed at @pos > 0) under its parent's key. */
static void lin_link(struct kvbm_pool *p, uint32_t s, uint32_t pos, uint64_t pfrag)
{
	uint32_t par = lin_find(p, pos - 1, pfrag);

	if (par == UINT32_MAX)
		par = ghost_new(p, pos - 1, pfrag, 0); /* its own parent unknown: unlinked */
	if (par == UINT32_MAX)
		return;
	KVBM_FAILPOINT("evict.lineage.link");
	if ((*LN(p, par)).nchild++ == 0)
		leaf_del(p, par);
	(*LN(p, s)).pos_fl |= KVBM_LN_LINKED;
}

static void lin_insert(struct kvbm_pool *p, uint32_t s)
{
	struct kvbm_shm_lnode *n = &(*LN(p, s));

	if (n->pos_fl & KVBM_LN_USED) {
		/* still here from before its resurrection: a new insertion */
		leaf_del(p, s);
		if (!n->nchild)
			leaf_add(p, s);
		return;
	}
	p->ev->nreal++;
	struct kvbm_plh key = kvbm_slot_key(kvbm_slot(p, s));
	uint32_t pos = kvbm_plh_position(key);
	uint64_t frag = kvbm_plh_router_hash(key), pfrag = kvbm_plh_parent_fragment(key);
	*n = (struct kvbm_shm_lnode){.frag = frag, .pos_fl = pos | KVBM_LN_USED};
	/* only a ghost matters here, and blocks that come parent first
	 * (the usual order) leave none: skip the search then */
	uint32_t g = p->ev->nghosts ? lin_find(p, pos, frag) : UINT32_MAX;
	if (g != UINT32_MAX && ((*LN(p, g)).pos_fl & KVBM_LN_GHOST)) {
		/* its children came first: it takes the ghost's place, and
		 * its link, when both name the same parent key */
		uint64_t gp = (*GPF(p, g));
		uint32_t glinked = (*LN(p, g)).pos_fl & KVBM_LN_LINKED;
		n->nchild = (*LN(p, g)).nchild;
		(*LN(p, g)).pos_fl &= ~KVBM_LN_LINKED;
		ghost_free(p, g);
		KVBM_FAILPOINT("evict.lineage.unghost");
		if (glinked && gp == pfrag)
			n->pos_fl |= KVBM_LN_LINKED;
		else if (glinked)
			lin_unparent(p, pos, gp, NULL); /* a key twin: not its parent */
	}
	hash_add(p, s);
	if (pos > 0 && !(n->pos_fl & KVBM_LN_LINKED))
		lin_link(p, s, pos, pfrag);
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
	if (!lin_fifo(p) && n->hpos) {
		/* a leaf's entry stays for a moment: its parent may take it */
		hole = n->hpos;
		n->hpos = 0;
	} else {
		leaf_del(p, s);
	}
	hash_del(p, s);
	p->ev->nreal--;
	if (n->nchild) {
		/* its children still hang under its key: a ghost keeps it */
		uint32_t g = ghost_new(p, ln_pos(n), n->frag, pfrag);
		KVBM_FAILPOINT("evict.lineage.ghost");
		if (g != UINT32_MAX) {
			(*LN(p, g)).nchild = n->nchild;
			(*LN(p, g)).pos_fl |= n->pos_fl & KVBM_LN_LINKED;
			*n = (struct kvbm_shm_lnode){0};
			if (hole) /* only leaves have entries: never, but never leak one */
				heap_del_at(p, hole - 1);
			return;
		}
	}
	if (n->pos_fl & KVBM_LN_LINKED)
		lin_unparent(p, ln_pos(n), pfrag, &hole);
	if (hole)
		heap_del_at(p, hole - 1);
	*n = (struct kvbm_shm_lnode){0};
	if (!p->ev->nreal && !p->ev->nghosts)
		p->ev->orphans = 0; /* empty: every count is exact again */
}

void kvbm_lin_insert(struct kvbm_pool *p, uint32_t s)
{
	lin_insert(p, s);
}

void kvbm_lin_remove(struct kvbm_pool *p, uint32_t s)
{
	lin_remove(p, s);
}

uint32_t kvbm_lin_children(struct kvbm_pool *p, uint32_t s)
{
	return (*LN(p, s)).nchild;
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
	if (kvbm_backend_is_lineage(p->backend)) {
		sl->list = KVBM_LIST_LINEAGE;
		lin_insert(p, s);
		return;
	}
	uint32_t lv = p->backend == KVBM_BACKEND_MULTI_LRU ? mlru_level(p, s) : 0;
	sl->list = KVBM_LIST_LRU + lv;
	if (front)
		kvbm_evlist_prepend(p, &p->seg.ctl->lists[lv], s);
	else
		kvbm_evlist_append(p, &p->seg.ctl->lists[lv], s);
}

void kvbm_evict_insert(struct kvbm_pool *p, uint32_t s)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	if (kvbm_backend_is_queued(p->backend)) {
		kvbm_queue_insert(p, s, KVBM_QI_NEW);
		return;
	}

	/* a stale list entry goes; a stale lineage node is refreshed in place */
	if (sl->list != KVBM_LIST_LINEAGE)
		kvbm_evict_remove(p, s);
	insert_at(p, s, ++p->seg.ctl->tick, 0);
}

void kvbm_evict_restore(struct kvbm_pool *p, uint32_t s)
{
	if (kvbm_backend_is_queued(p->backend)) {
		kvbm_queue_insert(p, s, KVBM_QI_RESTORE);
		return;
	}
	insert_at(p, s, kvbm_slot(p, s)->tick, 1);
}

uint32_t kvbm_evict_first(struct kvbm_pool *p)
{
	struct kvbm_shm_control *c = p->seg.ctl;

	if (kvbm_backend_is_queued(p->backend))
		return kvbm_queue_first(p);
	if (kvbm_backend_is_lineage(p->backend) && !lin_fifo(p))
	{
		uint32_t n = heap_len(p) ? (*HE(p, 0)).node : UINT32_MAX;
		if (n == UINT32_MAX || n < p->nslots)
			return n;
		kvbm_store_corrupt(p); /* only real nodes are leaves */
		return UINT32_MAX;
	}
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
	if (kvbm_backend_is_queued(p->backend)) {
		kvbm_queue_insert(p, s, KVBM_QI_REINSERT);
		return;
	}
	insert_at(p, s, kvbm_slot(p, s)->tick, 0);
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
