/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tier.c - presence across tiers and onboarding plans (kvbm_tier.h): the
 * calls that take several pools at once. Everything here goes through the
 * public calls of each pool, so a plan holds in each pool what any caller
 * could hold, and a dead planner's holds are reaped like any others.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvbm_tier.h"
#include "kvbm_sequence.h"
#include "../shm/failpoint.h"

long kvbm_tiers_presence(struct kvbm_pool *const *pools, size_t npools,
			 const struct kvbm_plh *hashes, size_t n, uint8_t *mask)
{
	uint8_t found[256];
	long any = 0;

	if (!pools || npools == 0 || npools > KVBM_TIERS_MAX || (n && (!hashes || !mask)))
		return -EINVAL;
	for (size_t j = 0; j < npools; j++)
		if (!pools[j])
			return -EINVAL;
	if (n)
		memset(mask, 0, n);
	/* a stack buffer in chunks: presence is called per scheduling step,
	 * where an allocation per call would cost more than the lookups */
	for (size_t off = 0; off < n; off += sizeof(found)) {
		size_t k = n - off < sizeof(found) ? n - off : sizeof(found);
		for (size_t j = 0; j < npools; j++) {
			long r = kvbm_check_presence(pools[j], hashes + off, k, found);
			if (r < 0)
				return r;
			for (size_t i = 0; i < k; i++)
				mask[off + i] |= (uint8_t)(found[i] ? 1u << j : 0);
		}
	}
	for (size_t i = 0; i < n; i++)
		any += mask[i] != 0;
	return any;
}

enum onboard_state { OB_OPEN, OB_DONE };

struct kvbm_onboard {
	struct kvbm_pool *dst, *src;
	uint32_t block_size;
	int state;
	size_t matched, count;
	struct kvbm_plh *hashes;     /* positions 0 .. matched+count-1 */
	struct kvbm_block *dst_held; /* matched holds in dst */
	struct kvbm_onboard_pair *pairs;
};

size_t kvbm_onboard_matched(const struct kvbm_onboard *o)
{
	return o ? o->matched : 0;
}

size_t kvbm_onboard_count(const struct kvbm_onboard *o)
{
	return o ? o->count : 0;
}

int kvbm_onboard_get(const struct kvbm_onboard *o, size_t i, struct kvbm_onboard_pair *out)
{
	if (!o || o->state != OB_OPEN || i >= o->count)
		return 0;
	if (out)
		*out = o->pairs[i];
	return 1;
}

/* Gives back what a plan holds; returns the first error. */
static int onboard_release(struct kvbm_onboard *o)
{
	int first = 0, r;

	for (size_t i = 0; i < o->count; i++) {
		r = kvbm_release_blocks(o->src, &o->pairs[i].src, 1);
		if (r < 0 && !first)
			first = r;
		r = kvbm_release_blocks(o->dst, &o->pairs[i].dst, 1);
		if (r < 0 && !first)
			first = r;
	}
	if (o->matched) {
		r = kvbm_release_blocks(o->dst, o->dst_held, (uint32_t)o->matched);
		if (r < 0 && !first)
			first = r;
	}
	return first;
}

/*
 * Pairs the sources (assigned from position @o->matched in a source-side
 * assignment) with the destinations (pending after the matched prefix in a
 * destination-side one) the way the reference plans it:
 * zip_assigned_pending over the two identity-level assignments.
 */
static int onboard_pair(struct kvbm_onboard *o, const struct kvbm_block *srcb,
			const struct kvbm_block *dstb)
{
	struct kvbm_xassign *xs = NULL, *xd = NULL;
	uint64_t *ids = NULL;
	struct kvbm_zip *zip = NULL;
	size_t total = o->matched + o->count;
	int r = -ENOMEM;

	ids = malloc((total ? total : 1) * sizeof(*ids));
	zip = malloc((o->count ? o->count : 1) * sizeof(*zip));
	if (!ids || !zip || kvbm_xassign_new(o->matched, &xs) < 0 ||
	    kvbm_xassign_new(0, &xd) < 0)
		goto out;
	for (size_t i = 0; i < o->count; i++)
		ids[i] = srcb[i].id;
	r = (int)kvbm_xassign_extend_assigned(xs, ids, o->hashes + o->matched, o->count, NULL);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < o->matched; i++)
		ids[i] = o->dst_held[i].id;
	r = (int)kvbm_xassign_extend_assigned(xd, ids, o->hashes, o->matched, NULL);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < o->count; i++)
		ids[o->matched + i] = dstb[i].id;
	r = kvbm_xassign_extend_block_ids(xd, ids, total, NULL);
	if (r < 0)
		goto out;
	if (kvbm_zip_assigned_pending(xs, xd, zip, o->count) != o->count) {
		r = -EPROTO; /* cannot happen: both sides cover the same positions */
		goto out;
	}
	/* ids are unique within a pool, so each maps back to its handle */
	for (size_t i = 0; i < o->count; i++) {
		size_t k = zip[i].position - o->matched;
		if (srcb[k].id != zip[i].a || dstb[k].id != zip[i].b) {
			r = -EPROTO;
			goto out;
		}
		o->pairs[i] = (struct kvbm_onboard_pair){
			.position = zip[i].position,
			.hash = o->hashes[zip[i].position],
			.src = srcb[k],
			.dst = dstb[k],
		};
	}
	r = 0;
out:
	kvbm_xassign_free(xs);
	kvbm_xassign_free(xd);
	free(ids);
	free(zip);
	return r;
}

static int onboard_check(struct kvbm_pool *dst, struct kvbm_pool *src,
			 const struct kvbm_plh *hashes, size_t n, uint32_t *block_size)
{
	struct kvbm_pool_info a, b;
	int r;

	if (!dst || !src || dst == src || (n && !hashes) || n > KVBM_PLH_MAX_POSITION + 1ull)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (kvbm_plh_position(hashes[i]) != i)
			return -EINVAL;
	r = kvbm_pool_info(dst, &a);
	if (r < 0)
		return r;
	r = kvbm_pool_info(src, &b);
	if (r < 0)
		return r;
	if (a.instance_id == b.instance_id)
		return KVBM_EFOREIGN;
	if (a.config.block_size != b.config.block_size)
		return KVBM_ESIZE;
	*block_size = a.config.block_size;
	return 0;
}

int kvbm_onboard_plan(struct kvbm_pool *dst, struct kvbm_pool *src, const struct kvbm_plh *hashes,
		      size_t n, struct kvbm_onboard **out)
{
	struct kvbm_onboard *o;
	struct kvbm_block *srcb = NULL, *dstb = NULL;
	long k, m = 0;
	int r;

	if (!out)
		return -EINVAL;
	*out = NULL;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	r = onboard_check(dst, src, hashes, n, &o->block_size);
	if (r < 0) {
		free(o);
		return r;
	}
	o->dst = dst;
	o->src = src;
	o->dst_held = malloc((n ? n : 1) * sizeof(*o->dst_held));
	srcb = malloc((n ? n : 1) * sizeof(*srcb));
	if (!o->dst_held || !srcb) {
		r = -ENOMEM;
		goto fail;
	}
	k = kvbm_match_blocks(dst, hashes, n, o->dst_held);
	if (k < 0) {
		r = (int)k;
		goto fail;
	}
	o->matched = (size_t)k;
	if ((size_t)k < n) {
		m = kvbm_match_blocks(src, hashes + k, n - (size_t)k, srcb);
		if (m < 0) {
			r = (int)m;
			goto fail;
		}
	}
	o->count = (size_t)m;
	o->hashes = malloc((o->matched + o->count + 1) * sizeof(*o->hashes));
	o->pairs = malloc((o->count + 1) * sizeof(*o->pairs));
	dstb = malloc((o->count + 1) * sizeof(*dstb));
	if (!o->hashes || !o->pairs || !dstb) {
		r = -ENOMEM;
		goto fail_src;
	}
	if (o->matched + o->count)
		memcpy(o->hashes, hashes, (o->matched + o->count) * sizeof(*hashes));
	r = kvbm_allocate_blocks(dst, (uint32_t)o->count, dstb, NULL, NULL);
	if (r < 0)
		goto fail_src;
	KVBM_FAILPOINT("tier.plan.held"); /* both sides held, nothing paired */
	r = onboard_pair(o, srcb, dstb);
	if (r < 0) {
		kvbm_release_blocks(dst, dstb, (uint32_t)o->count);
		goto fail_src;
	}
	free(srcb);
	free(dstb);
	*out = o;
	return 0;
fail_src:
	if (m > 0)
		kvbm_release_blocks(src, srcb, (uint32_t)m);
fail:
	if (o->matched)
		kvbm_release_blocks(dst, o->dst_held, (uint32_t)o->matched);
	free(srcb);
	free(dstb);
	free(o->dst_held);
	free(o->hashes);
	free(o->pairs);
	free(o);
	return r;
}

long kvbm_onboard_complete(struct kvbm_onboard *o, const uint32_t *tokens, struct kvbm_block *blks,
			   size_t max)
{
	struct kvbm_block *d;
	struct kvbm_plh *h;
	size_t total;
	int r;

	if (!o)
		return -EINVAL;
	if (o->state != OB_OPEN)
		return KVBM_ESTATE;
	total = o->matched + o->count;
	if (blks && max < total)
		return -ERANGE;
	d = malloc((o->count + 1) * sizeof(*d));
	h = malloc((o->count + 1) * sizeof(*h));
	if (!d || !h) {
		free(d);
		free(h);
		return -ENOMEM;
	}
	for (size_t i = 0; i < o->count; i++) {
		d[i] = o->pairs[i].dst;
		h[i] = o->pairs[i].hash;
	}
	r = kvbm_stage_blocks(o->dst, d, h, (uint32_t)o->count, o->block_size, NULL);
	if (r < 0)
		goto out;
	KVBM_FAILPOINT("tier.complete.staged");
	r = kvbm_register_blocks_tokens(o->dst, d, (uint32_t)o->count,
					tokens ? tokens + o->matched * o->block_size : NULL);
	if (r < 0) {
		/* back to MUTABLE, as planned: the caller may retry or abort */
		for (size_t i = 0; i < o->count; i++)
			kvbm_unstage_block(o->dst, &d[i]);
		goto out;
	}
	KVBM_FAILPOINT("tier.complete.registered"); /* sources still held */
	o->state = OB_DONE;
	for (size_t i = 0; i < o->count; i++)
		kvbm_release_blocks(o->src, &o->pairs[i].src, 1);
	if (blks) {
		memcpy(blks, o->dst_held, o->matched * sizeof(*blks));
		memcpy(blks + o->matched, d, o->count * sizeof(*blks));
	} else {
		if (o->matched)
			kvbm_release_blocks(o->dst, o->dst_held, (uint32_t)o->matched);
		kvbm_release_blocks(o->dst, d, (uint32_t)o->count);
	}
	r = (int)total;
out:
	free(d);
	free(h);
	return r;
}

int kvbm_onboard_abort(struct kvbm_onboard *o)
{
	if (!o)
		return -EINVAL;
	if (o->state != OB_OPEN)
		return 0;
	o->state = OB_DONE;
	return onboard_release(o);
}

void kvbm_onboard_free(struct kvbm_onboard *o)
{
	if (!o)
		return;
	kvbm_onboard_abort(o);
	free(o->dst_held);
	free(o->hashes);
	free(o->pairs);
	free(o);
}
