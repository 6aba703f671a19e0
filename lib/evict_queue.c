/* SPDX-License-Identifier: Apache-2.0 */
/*
 * evict_queue.c - the published policies as backends, adapted to a prefix
 * cache: S3-FIFO (Yang et al., SOSP'23), ARC (Megiddo and Modha, FAST'03),
 * W-TinyLFU (Einziger et al.; Caffeine's window, SLRU and admission) and
 * LeCaR (Vietri et al., HotStorage'18: LRU and LFU experts weighted by
 * regret; its LFU order is the forest's leaf heap, by sketch estimate).
 * All under the pool mutex.
 *
 * Every inactive block is in one of the backend's queues (control.lists,
 * linked through the slots) and in the lineage forest (evict.c), which
 * says whether it still has children cached. Adapted to the prefix tree:
 *  - only a leaf is evicted: evicting a parent would strand its cached
 *    children, which no prefix match can reach. A head that cannot go yet
 *    (it has children, or is held again) goes to its queue's tail with its
 *    bits, the second chance CLOCK gives; a pass over a queue is bounded
 *    by its length, and when no queue yields a leaf the first head is
 *    returned for the caller to drop, so progress is certain;
 *  - a hit is the release of a block still listed (a pin took it out of
 *    the inactive pool lazily): S3-FIFO counts it, ARC and W-TinyLFU move
 *    it, as they do on a hit;
 *  - a request's blocks are released together, so they arrive in a queue
 *    together, its last block first.
 *
 * A slot's tick is (queue tick << 4 | frequency << 2 | queue): see
 * KVBM_QT_* in layout.h. Recovery reinserts the inactive blocks in tick
 * order (store.c), which rebuilds every queue in its order with its bits;
 * the ghost table and ARC's target survive as they are, any content of
 * theirs being legal. The checker (check.c) verifies the queues, their
 * ticks and the forest beside them.
 */
#define _GNU_SOURCE
#include <emmintrin.h>
#include <string.h>

#include "pool.h"
#include "evict.h"
#include "../shm/failpoint.h"

static uint32_t nqueues(const struct kvbm_pool *p)
{
	return p->backend == KVBM_BACKEND_WTINYLFU ? 3 : p->backend == KVBM_BACKEND_LECAR ? 1 : 2;
}

static struct kvbm_shm_list *Q(struct kvbm_pool *p, uint32_t q)
{
	return &p->seg.ctl->lists[q & 3];
}

/* A queue's length, bounded by the pool: it bounds the walks below. */
static uint32_t qlen(struct kvbm_pool *p, uint32_t q)
{
	uint32_t n = Q(p, q)->len;

	if (n <= p->nslots)
		return n;
	kvbm_store_corrupt(p);
	return p->nslots;
}

static uint32_t q_head(struct kvbm_pool *p, uint32_t q)
{
	uint32_t h = Q(p, q)->head;

	if (!h)
		return UINT32_MAX;
	if (h - 1 < p->nslots)
		return h - 1;
	kvbm_store_corrupt(p);
	return UINT32_MAX;
}

static uint32_t tick_queue(uint64_t t)
{
	return (uint32_t)t & KVBM_QT_QUEUE;
}

/* a queue tick's frequency bits, in place */
#define KVBM_QT_FREQ (3ull << KVBM_QT_FREQ_SHIFT)

static uint32_t tick_freq(uint64_t t)
{
	return (uint32_t)(t >> KVBM_QT_FREQ_SHIFT) & 3;
}

/* @s to the tail of queue @q, with frequency @f and a new queue tick. */
static void q_push(struct kvbm_pool *p, uint32_t s, uint32_t q, uint32_t f)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	sl->tick = p->ev->qtick++ << KVBM_QT_SHIFT | (uint64_t)f << KVBM_QT_FREQ_SHIFT | q;
	sl->list = KVBM_LIST_LRU + q;
	kvbm_evlist_append(p, Q(p, q), s);
}

/* @s, the head of queue @from, to the tail of @q. */
static void q_move(struct kvbm_pool *p, uint32_t s, uint32_t from, uint32_t q, uint32_t f)
{
	kvbm_evlist_unlink(p, Q(p, from), s);
	KVBM_FAILPOINT("evict.queue.move");
	q_push(p, s, q, f);
}

/* Whether slot @sl may go now as far as its slot says: nobody holds it,
 * no duplicate keeps it active. A filter: the caller's handshake decides. */
static inline __attribute__((always_inline)) int q_free(const struct kvbm_shm_slot *sl)
{
	uint64_t h = __atomic_load_n(&sl->holders, __ATOMIC_RELAXED);

	return !(h & KVBM_HOLD_PROCS) && (h & KVBM_HOLD_INACTIVE) && !sl->dups;
}

/* ... and no child of it is cached. */
static inline __attribute__((always_inline)) int q_ready(struct kvbm_pool *p, uint32_t s)
{
	return q_free(kvbm_slot(p, s)) && kvbm_lin_children(p, s) == 0;
}

/* Heads a scan looks at before the policy tries its other queue: a
 * queue whose head region is all parents of cached blocks (a hot prefix)
 * would otherwise cost a walk of the queue per eviction. A scan with no
 * budget (last resort) is bounded by the queue's length. */
#define SCAN_BUDGET 64u

/*
 * The first block of queue @q that may go and that @keep keeps as the
 * victim (NULL: any), in at most @passes passes (and p->scan_budget heads
 * when that is set). A block that may not go rotates to the tail with a
 * new queue tick; so does one that @keep sends once more around its own
 * queue (@keep returns 0 when it moved the head itself, to another
 * queue). The heads that rotate are spliced to the tail once per run, in
 * their order, with the ticks one move each would have given them: a run
 * of parents of cached blocks (a hot prefix) costs a tick store each, not
 * an unlink and an append.
 */
/* What a run of a scan reads of the pool, in locals: a tick store may
 * alias what is read through p. */
struct q_run {
	struct kvbm_shm_slot *slots;
	const struct kvbm_shm_lnode *ln;
	uint32_t nslots, nodes;
	int bad; /* a link or a node out of range: the caller flags the segment */
};

/*
 * One run of a scan, from head @s, at most @m heads: each that may not go
 * gets tick @nt (+ 1 << KVBM_QT_SHIFT for the next), its count bits kept,
 * or one count less when @dec (S3-FIFO's M: a used leaf goes around once
 * more). Returns how many it ticked; *at is the head that may go, or
 * UINT32_MAX at the run's end or a broken link; *last the last ticked.
 * Not in q_scan_run(), for its registers: this loop is what a hot
 * prefix's parents cost per eviction.
 */
static __attribute__((noinline)) uint32_t q_run(struct q_run *r, uint32_t s, uint64_t m,
						uint64_t nt, int dec, uint32_t *at, uint32_t *last)
{
	struct kvbm_shm_slot *const slots = r->slots;
	const struct kvbm_shm_lnode *const ln = r->ln;
	const uint32_t nslots = r->nslots, nodes = r->nodes;
	uint32_t k = 0, prev = UINT32_MAX;

	for (;;) {
		struct kvbm_shm_slot *sl = &slots[s];
		uint64_t t = sl->tick;
		/* q_ready(): no child cached (a node out of range counts as
		 * none, as kvbm_lin_children() has it; first: what keeps a
		 * hot prefix's parents), holders exactly INACTIVE (nobody
		 * holds it), no duplicate */
		if ((s < nodes ? ln[s].nchild : (r->bad = 1, 0)) == 0 &&
		    __atomic_load_n(&sl->holders, __ATOMIC_RELAXED) == KVBM_HOLD_INACTIVE &&
		    !sl->dups) {
			if (!dec || !(t & KVBM_QT_FREQ)) {
				*at = s;
				break;
			}
			t -= 1ull << KVBM_QT_FREQ_SHIFT;
		}
		sl->tick = nt | (t & KVBM_QT_FREQ);
		nt += 1ull << KVBM_QT_SHIFT;
		prev = s;
		k++;
		uint32_t nx = sl->next;
		s = nx - 1;
		if (s >= nslots || k == m) {
			if (s >= nslots && nx)
				r->bad = 1;
			*at = UINT32_MAX;
			break;
		}
	}
	*last = prev;
	return k;
}

static __attribute__((noinline)) uint32_t
q_scan_run(struct kvbm_pool *p, uint32_t q, uint32_t passes,
	   int (*keep)(struct kvbm_pool *, uint32_t, uint32_t))
{
	uint64_t n = (uint64_t)qlen(p, q) * passes, i = 0;

	if (p->scan_budget && n > p->scan_budget)
		n = p->scan_budget;

	while (i < n) {
		uint32_t s = q_head(p, q), len = qlen(p, q), last = UINT32_MAX, k = 0;
		uint64_t qt = p->ev->qtick, m = n - i < len ? n - i : len;
		struct q_run r = {p->seg.slots, p->ln, p->nslots, p->lin_nodes, 0};
		if (m && s != UINT32_MAX)
			k = q_run(&r, s, m, qt << KVBM_QT_SHIFT | q, keep && q != 0, &s, &last);
		else
			s = UINT32_MAX;
		if (r.bad)
			kvbm_store_corrupt(p);
		i += k;
		p->ev->qtick = qt + k;
		if (last != UINT32_MAX) {
			KVBM_FAILPOINT("evict.queue.move");
			kvbm_evlist_rotate(p, Q(p, q), last);
		}
		if (s == UINT32_MAX) {
			if (last == UINT32_MAX)
				break; /* empty, or a broken link */
			continue;
		}
		i++;
		if (!keep || keep(p, s, q))
			return s;
	}
	return UINT32_MAX;
}

/* The scan, in the caller when the head is the victim (most evictions:
 * a queue's head is usually a leaf nobody holds), which rotates nothing.
 * @keep keeps a victim whose count is 0 (s3_keep() does). */
static inline __attribute__((always_inline)) uint32_t
q_scan(struct kvbm_pool *p, uint32_t q, uint32_t passes,
       int (*keep)(struct kvbm_pool *, uint32_t, uint32_t))
{
	uint32_t s = q_head(p, q);

	if (s != UINT32_MAX && qlen(p, q) && q_ready(p, s) &&
	    (!keep || !(kvbm_slot(p, s)->tick & KVBM_QT_FREQ)))
		return s;
	return q_scan_run(p, q, passes, keep);
}

/* No queue yields a leaf nobody holds: the first head, which the caller
 * drops from the order (held) or evicts, either way one entry fewer. */
static uint32_t fallback(struct kvbm_pool *p)
{
	if (p->scan_budget)
		return UINT32_MAX; /* the full scans come next */
	for (uint32_t q = 0; q < nqueues(p); q++) {
		uint32_t s = q_head(p, q);
		if (s != UINT32_MAX)
			return s;
	}
	return UINT32_MAX;
}

/* ---- the ghost table (S3-FIFO's G, ARC's B1 and B2, LeCaR's histories) --------------------------------- */

/* not the sketch's hash: a ghost bucket and a sketch word of one key
 * would otherwise be picked by the same bits */
static uint64_t g_hash(struct kvbm_plh k)
{
	return kvbm_evict_mix(k, 0xc2b2ae3d27d4eb4full);
}

/* How many of the latest evictions into list @l it remembers: S3-FIFO's
 * G as many as M holds (90% of the pool); ARC's B1 what T1 leaves of the
 * pool, B2 what T2 leaves (|T1| + |B1| <= c, the four <= 2c); LeCaR's
 * two histories half the pool each (together the pool, as in LeCaR). */
static inline __attribute__((always_inline)) uint32_t g_window(struct kvbm_pool *p, uint32_t l)
{
	uint32_t c = p->nslots;

	if (p->backend == KVBM_BACKEND_S3FIFO)
		return c - c / 10;
	if (p->backend == KVBM_BACKEND_LECAR)
		return c / 2 ? c / 2 : 1;
	if (p->backend == KVBM_BACKEND_ADAPT)
		return kvbm_adapt_window(p, l);
	uint32_t t = qlen(p, l);
	return c > t ? c - t : 0;
}

/* What a bucket scan needs of the lists, read once (a window costs a
 * division or a queue length): two, three for adapt's histories. */
struct g_lists {
	uint32_t stamp[3], window[3], nl;
};

static inline __attribute__((always_inline)) struct g_lists g_lists(struct kvbm_pool *p)
{
	const struct kvbm_shm_ghosthdr *gh = p->ghdr;
	struct g_lists gl = {{gh->stamp[0], gh->stamp[1], gh->stamp[2]}, {0, 0, 0}, 2};

	/* g_window() once per backend, not per list: S3-FIFO's and LeCaR's
	 * two windows are one */
	switch (p->backend) {
	case KVBM_BACKEND_S3FIFO:
	case KVBM_BACKEND_LECAR:
		gl.window[0] = gl.window[1] = g_window(p, 0);
		break;
	case KVBM_BACKEND_ADAPT:
		gl.nl = 3;
		for (uint32_t l = 0; l < 3; l++)
			gl.window[l] = g_window(p, l);
		break;
	default:
		gl.window[0] = g_window(p, 0);
		gl.window[1] = g_window(p, 1);
	}
	return gl;
}

/* How many evictions into its list ago entry @e was made, or UINT32_MAX
 * (empty, or no list of ours). */
static uint32_t g_age(const struct g_lists *gl, uint64_t e)
{
	uint32_t l = (uint32_t)(e >> 32) & 3;

	if (!e || l >= gl->nl)
		return UINT32_MAX;
	return gl->stamp[l] - (uint32_t)e; /* >= 1 for a live entry */
}

static int g_live(const struct g_lists *gl, uint64_t e)
{
	uint32_t age = g_age(gl, e);

	/* age != UINT32_MAX: the list is below nl */
	return age != UINT32_MAX && age - 1 < gl->window[(uint32_t)(e >> 32) & 3];
}

static uint64_t *g_bucket(struct kvbm_pool *p, uint64_t h)
{
	return p->gtab[h & (p->gbuckets - 1)].e; /* ours, not the segment's */
}

static uint64_t g_fp(uint64_t h)
{
	uint64_t f = h >> 34;

	return f ? f : 1;
}

/* Remembers @key's eviction from list @l (0 or 1): in the first entry
 * that is dead or @key's, else in the oldest. */
static inline __attribute__((always_inline)) void ghost_put(struct kvbm_pool *p,
							    struct kvbm_plh key, uint32_t l)
{
	if (!p->gtab)
		return;
	uint64_t h = g_hash(key), fp = g_fp(h), *b = g_bucket(p, h);
	uint32_t pick = 0, oldest = 0;
	struct g_lists gl = g_lists(p);

	for (uint32_t i = 0; i < 8; i++) {
		uint64_t e = b[i];
		uint32_t el = (uint32_t)(e >> 32) & 3, age;
		/* g_live() and g_age() in one: an age of UINT32_MAX is past
		 * any window (a window is at most the pool) */
		if (!e || el >= gl.nl || e >> 34 == fp ||
		    (age = gl.stamp[el] - (uint32_t)e) - 1 >= gl.window[el]) {
			pick = i;
			break;
		}
		if (age > oldest) {
			oldest = age;
			pick = i;
		}
	}
	b[pick] = fp << 34 | (uint64_t)l << 32 | p->ghdr->stamp[l & 3]++;
}

/* The entries of bucket @b whose fingerprint is @fp, a bit each (entry
 * i: bit 8i + 4): most keys taken match none, and SSE2 compares the
 * eight high words, their list bits masked off, in four steps. */
static inline __attribute__((always_inline)) uint64_t g_match(const uint64_t *b, uint64_t fp)
{
	const __m128i want = _mm_set1_epi64x((long long)(fp << 34));
	const __m128i mask = _mm_set1_epi64x((long long)(~0ull << 34));
	uint64_t m = 0;

#pragma GCC unroll 4
	for (uint32_t j = 0; j < 4; j++) {
		__m128i v = _mm_and_si128(
			_mm_loadu_si128((const __m128i *)(const void *)(b + 2 * j)), mask);
		/* low words: 0 == 0; high words: the fingerprints */
		m |= (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi32(v, want)) << (16 * j);
	}
	return m & 0x1010101010101010ull;
}

/* 1 + the list (of the mask @lists) that remembers @key, forgetting it
 * (@age: how many evictions into that list since), or 0. */
static inline __attribute__((always_inline)) uint32_t
ghost_take(struct kvbm_pool *p, struct kvbm_plh key, uint32_t lists, uint32_t *age)
{
	if (!p->gtab)
		return 0;
	uint64_t h = g_hash(key), fp = g_fp(h), *b = g_bucket(p, h);

	for (uint64_t m = g_match(b, fp); m; m &= m - 1) {
		uint32_t i = (uint32_t)__builtin_ctzll(m) >> 3, l = (uint32_t)(b[i] >> 32) & 3;
		if (!(lists >> l & 1))
			continue;
		struct g_lists gl = g_lists(p); /* a fingerprint's match: rare */
		if (g_live(&gl, b[i])) {
			*age = g_age(&gl, b[i]);
			b[i] = 0;
			return l + 1;
		}
	}
	return 0;
}

/* ---- S3-FIFO: S (queue 0, 10%), M (queue 1, CLOCK with 2-bit counts), G -------------- */

static int s3_keep(struct kvbm_pool *p, uint32_t s, uint32_t q)
{
	uint32_t f = tick_freq(kvbm_slot(p, s)->tick);

	if (!f)
		return 1;
	/* used while in S: on to M, its count cleared; in M: once more
	 * around, one count less */
	q_move(p, s, q, 1, q == 0 ? 0 : f - 1);
	return 0;
}

static uint32_t s3fifo_first(struct kvbm_pool *p)
{
	uint32_t small = p->nslots / 10 ? p->nslots / 10 : 1, s = UINT32_MAX;

	if (qlen(p, 0) >= small || !qlen(p, 1))
		s = q_scan(p, 0, 1, s3_keep);
	if (s == UINT32_MAX) /* four passes: a count of 3 takes four */
		s = q_scan(p, 1, 4, s3_keep);
	if (s == UINT32_MAX)
		s = q_scan(p, 0, 1, s3_keep);
	if (s == UINT32_MAX)
		return fallback(p);
	if (tick_queue(kvbm_slot(p, s)->tick) == 0)
		ghost_put(p, kvbm_slot_key(kvbm_slot(p, s)), 0);
	return s;
}

/* ---- ARC: T1 (queue 0), T2 (queue 1), ghosts B1, B2; target of T1 ---------------------- */

static uint32_t arc_target(struct kvbm_pool *p)
{
	uint32_t t = p->ev->qtarget;

	return t <= p->nslots ? t : p->nslots; /* any process may write it */
}

/* A miss remembered in B1 (@l 0: T1 was too small) or B2 (1). */
static void arc_adapt(struct kvbm_pool *p, uint32_t l)
{
	uint32_t b1 = p->ghdr->stamp[0], b2 = p->ghdr->stamp[1], t = arc_target(p);
	uint32_t w1 = g_window(p, 0), w2 = g_window(p, 1);

	b1 = b1 < w1 ? b1 : w1;
	b2 = b2 < w2 ? b2 : w2;
	if (l == 0) {
		uint32_t d = b1 && b2 / b1 > 1 ? b2 / b1 : 1;
		p->ev->qtarget = p->nslots - t > d ? t + d : p->nslots;
	} else {
		uint32_t d = b2 && b1 / b2 > 1 ? b1 / b2 : 1;
		p->ev->qtarget = t > d ? t - d : 0;
	}
}

static uint32_t arc_first(struct kvbm_pool *p)
{
	uint32_t t1 = qlen(p, 0), t2 = qlen(p, 1);
	uint32_t q = t1 && (t1 > arc_target(p) || !t2) ? 0 : 1;
	uint32_t s = q_scan(p, q, 1, NULL);

	if (s == UINT32_MAX)
		s = q_scan(p, q = !q, 1, NULL);
	if (s == UINT32_MAX)
		return fallback(p);
	ghost_put(p, kvbm_slot_key(kvbm_slot(p, s)), q);
	return s;
}

/* ---- W-TinyLFU: window (queue 0, 1%), probation (1), protected (2, 80% of main) ------- */

static uint32_t wt_window(const struct kvbm_pool *p)
{
	return p->nslots / 100 ? p->nslots / 100 : 1;
}

static uint32_t wt_estimate(struct kvbm_pool *p, uint32_t s)
{
	return kvbm_sketch_estimate(p, kvbm_slot_key(kvbm_slot(p, s)));
}

/*
 * The window's oldest leaf (the candidate) against probation's (the
 * victim): the sketch admits the candidate into probation only if it is
 * the more frequent, and the loser goes. Caffeine holds this duel on every
 * insertion past the window; here eviction comes first (an allocation,
 * before the new blocks are released), so the duel is held on every
 * eviction while the window holds a leaf. Insertion is forced (the block
 * is cached already), so an unadmitted block is simply the first to go.
 */
static uint32_t wtinylfu_first(struct kvbm_pool *p)
{
	if (!(qlen(p, 1) + qlen(p, 2))) {
		/* a cold pool, all in the window: what is past the window
		 * fills probation, as Caffeine's main fills while it has room */
		for (uint32_t n = qlen(p, 0); n > wt_window(p); n--) {
			uint32_t s = q_head(p, 0);
			if (s == UINT32_MAX)
				break;
			q_move(p, s, 0, 1, 0);
		}
	}
	uint32_t cand = q_scan(p, 0, 1, NULL), vict = q_scan(p, 1, 1, NULL);

	if (vict == UINT32_MAX)
		vict = q_scan(p, 2, 1, NULL);
	if (cand != UINT32_MAX && vict != UINT32_MAX) {
		if (wt_estimate(p, cand) <= wt_estimate(p, vict))
			return cand;
		q_move(p, cand, 0, 1, 0);
		return vict;
	}
	if (cand == UINT32_MAX && vict == UINT32_MAX)
		return fallback(p);
	return cand != UINT32_MAX ? cand : vict;
}

/* ---- LeCaR: an LRU expert (queue 0) and an LFU one (the leaf heap), weights by regret - */

/* The LRU expert's weight in [0, 1], stored as (weight - 1/2) x 2^20 so
 * that a new pool's zero is LeCaR's start, 1/2 each. */
static double lecar_weight(struct kvbm_pool *p)
{
	int32_t v = (int32_t)p->ev->qtarget;
	int32_t half = KVBM_LECAR_ONE / 2;

	v = v < -half ? -half : v > half ? half : v; /* any process may write it */
	return 0.5 + (double)v / KVBM_LECAR_ONE;
}

/* e^@y for y in [-6, 1], within 0.5%: (1 + y/4096)^4096, no libm */
static double exp_approx(double y)
{
	double x = 1.0 + y / 4096.0;

	for (int i = 0; i < 12; i++)
		x *= x;
	return x;
}

/* A miss on a block the expert @l (0 LRU, 1 LFU) evicted @age evictions
 * ago: the other expert gains, the more the fresher the mistake (LeCaR:
 * learning rate 0.45, discount 0.005^(1/N)). Kept within [2^-10, 1 -
 * 2^-10]: at 0 or 1 in fixed point an expert could never come back. */
static void lecar_regret(struct kvbm_pool *p, uint32_t l, uint32_t age)
{
	double wl = lecar_weight(p), wf = 1.0 - wl;
	double a = (double)age / (p->nslots ? p->nslots : 1);
	double r = exp_approx(-5.298317366548036 * (a < 1.0 ? a : 1.0)); /* 0.005^a */
	double g = exp_approx(0.45 * r);

	if (l == 0)
		wf *= g;
	else
		wl *= g;
	wl /= wl + wf;
	wl = wl < 1.0 / 1024 ? 1.0 / 1024 : wl > 1.0 - 1.0 / 1024 ? 1.0 - 1.0 / 1024 : wl;
	p->ev->qtarget = (uint32_t)(int32_t)((wl - 0.5) * KVBM_LECAR_ONE);
}

/* A deterministic draw in [0, 1): a mix of the counters that every
 * insertion and eviction moves (no state of its own to repair). */
static double lecar_draw(struct kvbm_pool *p)
{
	uint64_t x = p->ev->qtick * 0x9e3779b97f4a7c15ull + p->ghdr->stamp[0] * 0xbf58476d1ce4e5b9ull +
		     p->ghdr->stamp[1];

	x ^= x >> 31;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 29;
	return (double)(x >> 11) / 9007199254740992.0;
}

static uint32_t lecar_first(struct kvbm_pool *p)
{
	uint32_t lru = q_scan(p, 0, 1, NULL), lfu = kvbm_lin_least(p), pick;

	if (lfu != UINT32_MAX && !q_ready(p, lfu))
		lfu = UINT32_MAX; /* held: the heap keeps it, the caller drops it */
	if (lru == UINT32_MAX && lfu == UINT32_MAX)
		return fallback(p);
	int by_lru = lfu == UINT32_MAX || (lru != UINT32_MAX && lecar_draw(p) < lecar_weight(p));
	pick = by_lru ? lru : lfu;
	ghost_put(p, kvbm_slot_key(kvbm_slot(p, pick)), by_lru ? 0 : 1);
	return pick;
}

/* ---- the interface ------------------------------------------------------------------------ */

/* Released again while still listed: a hit. */
static void q_hit(struct kvbm_pool *p, uint32_t s, uint32_t q)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);

	switch (p->backend) {
	case KVBM_BACKEND_S3FIFO:
		if (tick_freq(sl->tick) < 3)
			sl->tick += 1ull << KVBM_QT_FREQ_SHIFT; /* stays where it is */
		return;
	case KVBM_BACKEND_ARC:
		q_move(p, s, q, 1, 0);
		return;
	case KVBM_BACKEND_LECAR:
		q_move(p, s, q, 0, 0);
		kvbm_lin_insert(p, s); /* its heap entry, at its frequency now */
		return;
	case KVBM_BACKEND_ADAPT:
		kvbm_adapt_hit(p, s, q);
		return;
	default:
		break;
	}
	if (q != 1) { /* window and protected: most recently used */
		q_move(p, s, q, q, 0);
		return;
	}
	q_move(p, s, 1, 2, 0);
	uint32_t c = p->nslots - wt_window(p), pmax = c - c / 5;
	if (qlen(p, 2) > pmax) { /* protected's oldest back to probation */
		uint32_t d = q_head(p, 2);
		if (d != UINT32_MAX)
			q_move(p, d, 2, 1, 0);
	}
}

static void q_new(struct kvbm_pool *p, uint32_t s)
{
	struct kvbm_plh key = kvbm_slot_key(kvbm_slot(p, s));
	uint32_t q = 0, g = 0, age;
	/* one ghost_take() in line: S3-FIFO asks G (list 0), ARC B1 and B2,
	 * LeCaR its two histories */
	uint32_t lists = 0;

	if (p->backend == KVBM_BACKEND_S3FIFO)
		lists = 1;
	else if (p->backend == KVBM_BACKEND_ARC || p->backend == KVBM_BACKEND_LECAR)
		lists = 3;
	if (lists)
		g = ghost_take(p, key, lists, &age);
	if (g && p->backend == KVBM_BACKEND_S3FIFO) {
		q = 1; /* evicted from S lately: straight to M */
	} else if (g && p->backend == KVBM_BACKEND_ARC) {
		arc_adapt(p, g - 1);
		q = 1;
	} else if (g) {
		lecar_regret(p, g - 1, age);
	} else if (p->backend == KVBM_BACKEND_ADAPT) {
		q = kvbm_adapt_new(p, key);
	}
	q_push(p, s, q, 0);
	KVBM_FAILPOINT("evict.queue.insert");
	kvbm_lin_insert(p, s); /* after the tick: LeCaR's heap orders by it */
}

/*
 * A victim back into queue @q before the first entry with a later queue
 * tick: usually the head (it was the head), but LeCaR's LFU expert takes
 * its victim from anywhere in the queue, and the ticks must not decrease
 * along it. Rare (an allocation rolling back), so a walk, bounded by the
 * queue's length.
 */
static void q_restore(struct kvbm_pool *p, uint32_t s, uint32_t q, uint64_t qt)
{
	uint32_t e = q_head(p, q), n = qlen(p, q);

	for (uint32_t k = 0; e != UINT32_MAX && k < n; k++) {
		const struct kvbm_shm_slot *el = kvbm_slot(p, e);
		if (el->tick >> KVBM_QT_SHIFT > qt) {
			kvbm_evlist_insert_before(p, Q(p, q), s, e);
			return;
		}
		if (!el->next || el->next - 1 >= p->nslots)
			break;
		e = el->next - 1;
	}
	kvbm_evlist_append(p, Q(p, q), s);
}

void kvbm_queue_insert(struct kvbm_pool *p, uint32_t s, enum kvbm_qi how)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);
	uint32_t nq = nqueues(p);

	if (how == KVBM_QI_NEW) {
		if (sl->list >= KVBM_LIST_LRU && sl->list < KVBM_LIST_LRU + nq) {
			q_hit(p, s, sl->list - KVBM_LIST_LRU);
			return;
		}
		if (sl->list >= KVBM_LIST_LRU) /* a list evict.c knows: drop it */
			kvbm_evict_remove(p, s);
		q_new(p, s);
		return;
	}
	/* back where its tick says, with its bits */
	uint64_t t = sl->tick, qt = t >> KVBM_QT_SHIFT;
	uint32_t q = tick_queue(t);
	if (q >= nq) /* any process may write a tick */
		t &= ~(uint64_t)KVBM_QT_QUEUE, q = 0;
	sl->tick = t;
	sl->list = KVBM_LIST_LRU + q;
	kvbm_lin_insert(p, s);
	if (how == KVBM_QI_RESTORE)
		q_restore(p, s, q, qt);
	else
		kvbm_evlist_append(p, Q(p, q), s);
	if (qt >= p->ev->qtick)
		p->ev->qtick = qt + 1;
}

static uint32_t policy_first(struct kvbm_pool *p)
{
	switch (p->backend) {
	case KVBM_BACKEND_S3FIFO:
		return s3fifo_first(p);
	case KVBM_BACKEND_ARC:
		return arc_first(p);
	case KVBM_BACKEND_LECAR:
		return lecar_first(p);
	case KVBM_BACKEND_ADAPT:
		return kvbm_adapt_first(p);
	default:
		return wtinylfu_first(p);
	}
}

uint32_t kvbm_queue_first(struct kvbm_pool *p)
{
	/* the policy with short scans; if they find no leaf, with full ones */
	p->scan_budget = SCAN_BUDGET;
	uint32_t s = policy_first(p);
	p->scan_budget = 0;
	if (s == UINT32_MAX || !q_ready(p, s))
		s = policy_first(p);
	return s;
}

/* ---- for evict_adapt.c ----------------------------------------------------------------- */

uint32_t kvbm_q_len(struct kvbm_pool *p, uint32_t q)
{
	return qlen(p, q);
}

uint32_t kvbm_q_head(struct kvbm_pool *p, uint32_t q)
{
	return q_head(p, q);
}

void kvbm_q_move(struct kvbm_pool *p, uint32_t s, uint32_t from, uint32_t q, uint32_t f)
{
	q_move(p, s, from, q, f);
}

int kvbm_q_ready(struct kvbm_pool *p, uint32_t s)
{
	return q_ready(p, s);
}

uint32_t kvbm_q_scan(struct kvbm_pool *p, uint32_t q)
{
	return q_scan(p, q, 1, NULL);
}

static int keep_any(struct kvbm_pool *p, uint32_t s, uint32_t q)
{
	(void)p, (void)s, (void)q;
	return 1;
}

uint32_t kvbm_q_scan_clock(struct kvbm_pool *p, uint32_t q)
{
	return q_scan(p, q, 4, keep_any);
}

uint32_t kvbm_q_fallback(struct kvbm_pool *p)
{
	return fallback(p);
}

void kvbm_ghost_put(struct kvbm_pool *p, struct kvbm_plh key, uint32_t l)
{
	ghost_put(p, key, l);
}

uint32_t kvbm_ghost_take(struct kvbm_pool *p, struct kvbm_plh key, uint32_t lists, uint32_t *age)
{
	return ghost_take(p, key, lists, age);
}

double kvbm_q_draw(struct kvbm_pool *p)
{
	return lecar_draw(p);
}

double kvbm_exp_approx(double y)
{
	return exp_approx(y);
}
