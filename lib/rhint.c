/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rhint.c - release hints (kvbm_release_blocks_hint): how far a hinted
 * block moves in the eviction order, from how often its kind was right.
 *
 * Under the pool mutex, except kvbm_hint_stats's callers' copy. The hint of
 * a block is the low bits of its slot tick (layout.h, KVBM_TICK_HINT), so
 * a recovery, which reinserts the inactive blocks in tick order, keeps it.
 *
 * Weight by accuracy: acting on a hint hides the evidence against it (a
 * ONESHOT block evicted first is never seen hit again), so the record is
 * kept on a control sample: one hinted release in 16, picked by the key of
 * its first block, inserts its blocks as if unhinted (a flag in the tick
 * says so), and their outcomes (hit again while inactive, or evicted
 * unused) count for their kind. Unhinted blocks count too, from the pool's
 * first hinted release on (before it, nothing is counted). The releases
 * behind those outcomes are counted as well: a release's blocks are hit
 * or evicted together, so a count's noise is that of so many releases,
 * not of the blocks. From these the pool knows each kind's reuse by age
 * beside the pooled one:
 *  - ONESHOT moves a block ahead by the number of eighths of the horizon
 *    (how long an unhinted block lasts), counted from the edge, that
 *    gains most: an eighth gains the hits that the blocks at the edge get
 *    in it and costs those its kind gets at that age; but by no more
 *    than its kind is hit less often in the older half of the horizon
 *    than the pool allows: none if as often;
 *  - CONTINUES moves it back by how many times more often its kind is
 *    hit in the older half of the horizon than the pool, less one, in
 *    horizons: none if they come back no more often than the rest.
 * A hint that is no better than none gets no weight, so wrong hints cost
 * at most the sample's noise and the window it takes to notice.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "pool.h"
#include "evict.h"
#include "rhint.h"
#include "../shm/failpoint.h"

/* outcomes per kind before both counts are halved: recent behaviour wins,
 * and a count is never far from the window a clamp allows */
#define WINDOW 8192u
/* outcomes of a kind before its weight is trusted at all */
#define MIN_SAMPLE 64u
/* eighths of the horizon, counted back from the edge, that CONTINUES is
 * judged on: the older half, not the last eighth alone (see weight_eighths) */
#define OLDER 4u
/* CONTINUES's margin, in tenths of a deviation counted in releases (see
 * continues_eighths) */
#define CONT_DEV_TENTHS 4u

static uint32_t clamp_count(uint32_t v)
{
	return v < WINDOW ? v : WINDOW;
}

int kvbm_rhint_control(struct kvbm_plh key)
{
	return (kvbm_evict_mix(key, 0xc2b2ae3d27d4eb4full) >> 60) == 0;
}

uint32_t kvbm_rhint_for_release(struct kvbm_pool *p, uint32_t s, uint32_t hint)
{
	/* a whole release, not single blocks or the batches it is settled
	 * in: with lru a control block in the middle of a hinted chain would
	 * go first and strand the rest. The key is read without the mutex:
	 * it only picks the sample, and any value is a legal pick.
	 * Unhinted blocks all count (they are ordered as unhinted anyway):
	 * sampled too, a pool's fixed hot set could leave no hit at the edge
	 * in the record, and no hint would earn weight */
	if (hint == KVBM_HINT_NONE || s >= p->nslots)
		return hint;
	return kvbm_rhint_control(kvbm_slot_key(kvbm_slot(p, s))) ? hint | KVBM_TICK_CONTROL : hint;
}

uint32_t kvbm_rhint_placed(struct kvbm_pool *p, uint32_t s)
{
	uint64_t t = kvbm_slot(p, s)->tick;
	uint32_t k = (uint32_t)(t & KVBM_TICK_HINT);

	if (k >= KVBM_HINT_COUNT || (t & KVBM_TICK_CONTROL))
		return KVBM_HINT_NONE;
	return k;
}

/* Ticks an unhinted block lasts before eviction, bounded by the pool's
 * own counter (any content of the segment's word is legal). */
static uint64_t horizon(struct kvbm_pool *p)
{
	uint64_t h = p->ev->hint.horizon >> 4, cap = p->seg.ctl->tick;

	if (h == 0) /* nothing measured yet: one pool's worth */
		h = p->nslots;
	if (cap < p->nslots)
		cap = p->nslots;
	return h < cap ? h : cap;
}

/* floor(sqrt(@v)), @v below 2^40 (counts clamped to WINDOW, sums of them) */
static uint64_t isqrt(uint64_t v)
{
	uint64_t r = 0;

	for (uint64_t b = 1ull << 20; b; b >>= 1)
		if ((r + b) * (r + b) <= v)
			r += b;
	return r;
}

/* A kind's outcomes: hits by age (eighths of the horizon), and in all. */
static uint64_t kind_counts(const struct kvbm_shm_hintstat *st, uint32_t k, uint64_t re[8])
{
	uint64_t n = clamp_count(st->unused[k]);

	for (uint32_t j = 0; j < 8; j++)
		n += re[j] = clamp_count(st->reused[k][j]);
	return n;
}

/* A deviation of count @c of a kind's @n outcomes, their @r releases drawn
 * (@c x the blocks a release holds, under the root), in @tenths: the
 * blocks of a release are one draw. Without a release count (a record
 * written before any, or garbage) each block is one. */
static uint64_t dev_tenths(uint64_t c, uint64_t n, uint64_t r, uint64_t tenths)
{
	if (r == 0 || r > n)
		r = n ? n : 1;
	return isqrt(tenths * tenths * c * n / r) / 10;
}

/*
 * ONESHOT's move in eighths (0..8). The marginal argument: an eighth of a
 * horizon taken from a ONESHOT block costs the hits such blocks get at
 * that age, and gives the room to the blocks near the eviction edge,
 * which it buys the hits that blocks get there: the pool's hits per
 * eighth over the older half of the horizon (over every kind; the last
 * eighth alone holds a few requests' lumps, and a young record none). The
 * move is the number of eighths counted from the edge whose sum gains
 * most: summed, not eighth by eighth, since a release's blocks are hit
 * together and one request's lump in an eighth stopped a walk there (the
 * conversation trace at 5% settled at two levels by which releases formed
 * the control sample). A sum can as well run past eighths where the kind
 * is hit more than that, which costs where it is reused late (a hint
 * window shorter than the pool's horizon marks continuations ONESHOT; the
 * 7/8 bucket holds every older hit too), so the move is capped by the
 * kind's hits in the older half of the horizon, as CONTINUES is weighed:
 * 32 eighths times (1 - its rate there over the pool's). None for a kind
 * hit there as often as the rest; the full move once it is hit there less
 * than three quarters as often (16 times held it at half a horizon with
 * 20% of the hints wrong on check_tools' trace, where only a hot set comes
 * back and it is hit there 0.6-0.7 times as often). The rates as counted,
 * not a deviation against the kind: at 1-2% capacity few hits fall in the
 * older half at all, a deviation there was larger than the pool's rate,
 * and ONESHOT lost the move that is worth most there (its room keeps
 * continuations past the horizon, which the sample cannot see): the
 * conversation trace at 1% with a 300 s window fell from 0.113 to 0.061.
 */
static uint32_t oneshot_eighths(const uint64_t kre[8], uint64_t kall, uint64_t all, uint64_t older)
{
	/* gains cross-multiplied by all x kall x OLDER: below 2^40 each */
	int64_t best = 0, tail = 0;
	uint32_t m = 0;
	for (uint32_t i = 1; i <= 8; i++) {
		tail += (int64_t)kre[8 - i];
		int64_t net = (int64_t)(i * older * kall) - tail * (int64_t)(OLDER * all);
		if (net > best) {
			best = net;
			m = i;
		}
	}
	if (m == 0)
		return 0;
	/* 1 - (kold / kall) / (older / all), times 32 */
	uint64_t kold = 0;
	for (uint32_t j = 8 - OLDER; j < 8; j++)
		kold += kre[j];
	uint64_t pool = kall * older, cost = kold * all;
	if (cost >= pool)
		return 0;
	uint64_t cap = 32 * (pool - cost) / pool;
	return m < cap ? m : (uint32_t)cap;
}

/*
 * CONTINUES's move in eighths (0..32): its block stays longer by how much
 * more its kind is hit in the older half of the horizon than the pool:
 * (ratio - 1) horizons, at most four; its hits past the edge are not seen
 * on the sample, so the older half stands for them. Not the last eighth
 * alone: it holds few hits, and a release's blocks are hit together, so
 * one request's lump in it or out of it decided the weight. The ratio is
 * taken between the ends of CONT_DEV_TENTHS of a deviation counted in
 * releases that favour no boost: room held for a kind hit a few times more
 * by chance is what cost hits on traces where the hint was right but worth
 * little (EVICTION.md); a full deviation in releases held the weight back
 * on the conversation trace, where the hint is worth much (0.4: the
 * measured balance of the two). Judged with no hit at the edge yet too
 * (ONESHOT is not, its gain is the edge's hits): a young record often
 * has none there, and waiting for one left the conversation trace's
 * first 2,000 requests unhinted on some control samples.
 */
static uint32_t continues_eighths(const uint64_t kre[8], uint64_t kall, uint64_t krel, uint64_t all,
				  uint64_t rel, uint64_t older)
{
	uint64_t kold = 0;
	for (uint32_t j = 8 - OLDER; j < 8; j++)
		kold += kre[j];
	uint64_t dk = dev_tenths(kold, kall, krel, CONT_DEV_TENTHS);
	uint64_t dp = dev_tenths(older, all, rel, CONT_DEV_TENTHS);
	if (kold <= dk)
		return 0;
	/* (kold/kall) / (older/all) - 1, in eighths, at most 4 horizons */
	uint64_t num = (kold - dk) * all, den = (older + dp + 1) * kall;
	if (num <= den)
		return 0;
	uint64_t e = (num - den) * 8 / den;
	return e < 32 ? (uint32_t)e : 32;
}

/* How far a block of kind @k moves, in eighths of the horizon (0..8, or
 * for CONTINUES up to 32). */
static uint32_t weight_eighths(struct kvbm_pool *p, uint32_t k)
{
	const struct kvbm_shm_hintstat *st = &p->ev->hint;
	uint64_t kre[8], re[8], all = 0, rel = 0, edge = 0, older = 0;

	if (k == KVBM_HINT_NONE || k >= KVBM_HINT_COUNT)
		return 0;
	uint64_t kall = kind_counts(st, k, kre);
	if (kall < MIN_SAMPLE)
		return 0;
	for (uint32_t i = 0; i < KVBM_HINT_COUNT; i++) {
		all += kind_counts(st, i, re);
		rel += clamp_count(st->releases[i]);
		edge += re[7];
		for (uint32_t j = 8 - OLDER; j < 8; j++)
			older += re[j];
	}
	uint64_t krel = clamp_count(st->releases[k]);
	if (k == KVBM_HINT_ONESHOT)
		/* nothing hit at the edge: room buys nothing (seen so) */
		return edge ? oneshot_eighths(kre, kall, all, older) : 0;
	return continues_eighths(kre, kall, krel, all, rel, older);
}

static uint32_t weight_permille(struct kvbm_pool *p, uint32_t k)
{
	return weight_eighths(p, k) * 125;
}

uint64_t kvbm_rhint_boost(struct kvbm_pool *p, uint32_t k)
{
	uint32_t w = weight_eighths(p, k);

	return w ? horizon(p) * w / 8 : 0;
}

uint64_t kvbm_rhint_prio(struct kvbm_pool *p, uint64_t t, uint32_t k)
{
	if (k == KVBM_HINT_NONE)
		return t;
	uint64_t b = kvbm_rhint_boost(p, k);
	if (k == KVBM_HINT_ONESHOT)
		return t > b ? t - b : 0;
	return t + b;
}

void kvbm_rhint_count(struct kvbm_pool *p, uint32_t s, int reused)
{
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);
	struct kvbm_shm_hintstat *st = &p->ev->hint;
	uint32_t k = (uint32_t)(sl->tick & KVBM_TICK_HINT);

	if (k >= KVBM_HINT_COUNT)
		k = KVBM_HINT_NONE;
	uint64_t now = p->seg.ctl->tick, t = sl->tick >> KVBM_TICK_SHIFT;
	uint64_t age = now > t ? now - t : 0;
	if (age > (1ull << 40))
		age = 1ull << 40;
	uint32_t *c = &st->unused[k];
	if (reused) {
		uint64_t e = age * 8 / horizon(p);
		c = &st->reused[k][e < 7 ? e : 7];
	}
	*c = clamp_count(*c) + 1;
	KVBM_FAILPOINT("evict.hint.outcome");
	/* the window, every 64 outcomes (a kind overshoots it by at most
	 * that, and reads clamp each count anyway): this runs per eviction */
	if ((++st->outcomes & 63) == 0)
		for (uint32_t i = 0; i < KVBM_HINT_COUNT; i++) {
			uint64_t re[8];
			if (kind_counts(st, i, re) < WINDOW)
				continue;
			for (uint32_t j = 0; j < 8; j++)
				st->reused[i][j] = (uint32_t)re[j] / 2;
			st->unused[i] = clamp_count(st->unused[i]) / 2;
			st->releases[i] = clamp_count(st->releases[i]) / 2;
		}
	if (reused)
		return;
	/* the horizon: a running mean (1/64) of the age at eviction of the
	 * blocks in the unhinted order, in 1/16 ticks */
	uint64_t hm = st->horizon;
	if (hm > (1ull << 44))
		hm = 0; /* not a value any update writes: start again */
	st->horizon = (uint64_t)((int64_t)hm + ((int64_t)(age << 4) - (int64_t)hm) / 64);
}

void kvbm_rhint_release(struct kvbm_pool *p, uint32_t s, uint32_t hint)
{
	const struct kvbm_shm_op *o = &p->seg.ctl->op;
	struct kvbm_shm_hintstat *st = &p->ev->hint;
	uint32_t k = hint & KVBM_TICK_HINT;

	/* a release settles its blocks under one operation record, named
	 * by its first settled block (block.c flush(); one a batch, so a
	 * release longer than a batch counts more, and one that also frees
	 * unregistered blocks, named first, not at all: either only moves
	 * the counts' noise). Outcomes count for unhinted blocks and the
	 * control sample only (rhint.h) */
	if (o->op != KVBM_OP_RELEASE || o->arg0 != s || k >= KVBM_HINT_COUNT ||
	    (k != KVBM_HINT_NONE && !(hint & KVBM_TICK_CONTROL)))
		return;
	st->releases[k] = clamp_count(st->releases[k]) + 1;
}

int kvbm_hint_stats(struct kvbm_pool *p, struct kvbm_hint_stats *out)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	if (!out)
		return -EINVAL;
	r = kvbm_store_lock(p, KVBM_OP_NONE, 0);
	if (r < 0)
		return r;
	memset(out, 0, sizeof(*out));
	for (uint32_t k = 0; k < KVBM_HINT_COUNT; k++) {
		uint64_t re[8];
		uint64_t n = kind_counts(&p->ev->hint, k, re);
		out->unused[k] = clamp_count(p->ev->hint.unused[k]);
		out->reused[k] = (uint32_t)(n - out->unused[k]);
		out->weight_permille[k] = weight_permille(p, k);
		out->boost[k] = kvbm_rhint_boost(p, k);
	}
	out->horizon = horizon(p);
	kvbm_store_unlock(p);
	return 0;
}
