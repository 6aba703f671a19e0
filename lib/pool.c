/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pool.c - public attach/detach API over shm/.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "../shm/mutex.h"
#include "../shm/proctable.h"

void kvbm_config_init(struct kvbm_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->block_count = 1024;
	cfg->block_size = 16;
	cfg->max_procs = 16;
	cfg->mode = 0600;
	cfg->gid = -1;
	cfg->uid = -1;
	cfg->open_timeout_ms = 10000;
	cfg->dup_policy = KVBM_DUP_ALLOW;
	cfg->backend = KVBM_BACKEND_LINEAGE;
	strcpy(cfg->tier, "G1");
	cfg->mlru_thresholds[0] = 3;
	cfg->mlru_thresholds[1] = 8;
	cfg->mlru_thresholds[2] = 15;
	cfg->event_ring = 4096;
	cfg->pin_share = 25;
}

int kvbm_config_check(const struct kvbm_config *cfg, const char **why)
{
	const char *w = NULL;

	if (!cfg)
		w = "config is required";
	else if (cfg->block_count == 0)
		w = "block_count must be greater than 0";
	else if (cfg->block_count > KVBM_MAX_BLOCKS)
		w = "block_count must be at most 2^28";
	else if (cfg->block_size == 0 || cfg->block_size > 1024 ||
		 (cfg->block_size & (cfg->block_size - 1)))
		w = "block_size must be a power of two between 1 and 1024";
	else if (cfg->max_procs == 0 || cfg->max_procs > KVBM_MAX_PROCS)
		w = "max_procs must be between 1 and 62";
	else if ((cfg->mode & ~0777u) || (cfg->mode & 0600) != 0600)
		w = "mode must be a permission mode including 0600";
	else if (cfg->gid < -1 || cfg->gid >= (int64_t)UINT32_MAX)
		w = "gid must be -1 or a group id";
	else if (cfg->uid < -1 || cfg->uid >= (int64_t)UINT32_MAX)
		w = "uid must be -1 or a user id";
	else if (cfg->flags & ~(KVBM_CFG_HUGEPAGES | KVBM_CFG_ALLOW_OTHERS | KVBM_CFG_KEEP_TOKENS))
		w = "unknown flags";
	else if ((cfg->flags & KVBM_CFG_KEEP_TOKENS) && !cfg->event_ring)
		w = "KVBM_CFG_KEEP_TOKENS needs an event ring";
	else if (cfg->dup_policy > KVBM_DUP_REJECT)
		w = "dup_policy must be KVBM_DUP_ALLOW or KVBM_DUP_REJECT";
	else if (cfg->backend >= KVBM_BACKEND_COUNT)
		w = "unknown backend";
	else if (cfg->tinylfu > KVBM_TINYLFU_LARGE)
		w = "unknown tinylfu capacity";
	else if (cfg->backend == KVBM_BACKEND_MULTI_LRU && cfg->tinylfu == KVBM_TINYLFU_NONE)
		w = "multi-lru requires frequency tracking (tinylfu)";
	else if (cfg->backend == KVBM_BACKEND_LFRU && cfg->tinylfu == KVBM_TINYLFU_NONE)
		w = "lfru requires frequency tracking (tinylfu)";
	else if (cfg->backend == KVBM_BACKEND_WTINYLFU && cfg->tinylfu == KVBM_TINYLFU_NONE)
		w = "w-tinylfu requires frequency tracking (tinylfu)";
	else if (cfg->backend == KVBM_BACKEND_LECAR && cfg->tinylfu == KVBM_TINYLFU_NONE)
		w = "lecar requires frequency tracking (tinylfu)";
	else if (cfg->backend == KVBM_BACKEND_ADAPT && cfg->tinylfu == KVBM_TINYLFU_NONE)
		w = "adapt requires frequency tracking (tinylfu)";
	else if (cfg->mlru_thresholds[2] > 15)
		w = "frequency thresholds must be <= 15";
	else if (cfg->mlru_thresholds[0] < 1)
		w = "frequency thresholds must be >= 1";
	else if (cfg->mlru_thresholds[0] >= cfg->mlru_thresholds[1] ||
		 cfg->mlru_thresholds[1] >= cfg->mlru_thresholds[2])
		w = "frequency thresholds must be in ascending order";
	else if (cfg->reset_on_release > 1)
		w = "reset_on_release must be 0 or 1";
	else if (cfg->event_ring && (cfg->event_ring < 64 || cfg->event_ring > (1u << 22) ||
				     (cfg->event_ring & (cfg->event_ring - 1))))
		w = "event_ring must be 0 or a power of two between 64 and 4194304";
	else if (memchr(cfg->tier, '\0', sizeof(cfg->tier)) == NULL ||
		 kvbm_tier_parse(cfg->tier) < 0)
		w = "tier must be G1, G2, G3, G4 or device, host_pinned, disk, external";
	else if (cfg->pin_share > 100)
		w = "pin_share must be a percentage, 0 to 100";
	if (why)
		*why = w;
	return w ? -EINVAL : 0;
}

static const char *const tier_names[KVBM_TIER_COUNT][2] = {
	{NULL, NULL}, {"G1", "device"}, {"G2", "host_pinned"}, {"G3", "disk"}, {"G4", "external"},
};

int kvbm_tier_parse(const char *label)
{
	for (int t = KVBM_TIER_G1; label && t < KVBM_TIER_COUNT; t++)
		if (!strcmp(label, tier_names[t][0]) || !strcmp(label, tier_names[t][1]))
			return t;
	return -EINVAL;
}

const char *kvbm_tier_name(uint32_t t)
{
	return t && t < KVBM_TIER_COUNT ? tier_names[t][0] : NULL;
}

const char *kvbm_tier_storage(uint32_t t)
{
	return t && t < KVBM_TIER_COUNT ? tier_names[t][1] : NULL;
}

static const char *const backend_names[KVBM_BACKEND_COUNT] = {
	"lru", "fifo", "multi-lru", "lineage", "lineage-fifo", "lfru",
	"s3fifo", "arc", "w-tinylfu", "lecar", /* lib/evict_queue.c */
	"adapt",                               /* lib/evict_adapt.c */
};

const char *kvbm_backend_name(uint32_t b)
{
	return b < KVBM_BACKEND_COUNT ? backend_names[b] : NULL;
}

int kvbm_backend_parse(const char *name)
{
	for (int b = 0; name && b < KVBM_BACKEND_COUNT; b++)
		if (strcmp(name, backend_names[b]) == 0)
			return b;
	return -EINVAL;
}

static uint32_t sketch_log2(const struct kvbm_config *cfg)
{
	static const uint32_t fixed[] = {0, 0, 18, 21, 24};
	uint32_t n = 12;

	if (cfg->tinylfu != KVBM_TINYLFU_AUTO)
		return fixed[cfg->tinylfu];
	if (cfg->backend != KVBM_BACKEND_MULTI_LRU && cfg->backend != KVBM_BACKEND_LFRU &&
	    cfg->backend != KVBM_BACKEND_WTINYLFU &&
	    cfg->backend != KVBM_BACKEND_LECAR &&
	    cfg->backend != KVBM_BACKEND_ADAPT) /* the backends that read the sketch */
		return 0;
	/* 16 counters (8 bytes) per block: four per key in one word, so
	 * collisions, not decay, are what blurs a small sketch (a trace
	 * replay at 5% capacity: 0.200 with one counter per block, 0.220
	 * with 16, the same as exact counts) */
	while (n < 24 && (1ull << n) < 16ull * cfg->block_count)
		n++;
	return n;
}

int kvbm_config_to_shm(const struct kvbm_config *cfg, struct kvbm_shm_config *out)
{
	struct kvbm_shm_region regions[KVBM_REGION_MAX];
	uint64_t total;

	memset(out, 0, sizeof(*out));
	if (kvbm_config_check(cfg, NULL) < 0)
		return -EINVAL;
	out->block_count = cfg->block_count;
	out->block_size = cfg->block_size;
	out->max_procs = cfg->max_procs;
	out->mode = cfg->mode;
	out->gid = cfg->gid < 0 ? UINT32_MAX : (uint32_t)cfg->gid;
	out->uid = cfg->uid < 0 ? UINT32_MAX : (uint32_t)cfg->uid;
	out->flags = cfg->flags;
	out->dup_policy = cfg->dup_policy;
	out->backend = cfg->backend;
	out->reset_on_release = cfg->reset_on_release;
	/* one spelling per tier in the segment, so that "host_pinned" and
	 * "G2" agree at attach and a tier has one metrics label */
	snprintf(out->tier, sizeof(out->tier), "%s",
		 kvbm_tier_name((uint32_t)kvbm_tier_parse(cfg->tier)));
	memcpy(out->mlru_thresholds, cfg->mlru_thresholds, 3);
	out->sketch_log2 = sketch_log2(cfg);
	out->event_log2 = cfg->event_ring ? (uint32_t)__builtin_ctz(cfg->event_ring) : 0;
	out->pin_share = cfg->pin_share;
	/* the layout computation is the one judge of a valid config */
	return kvbm_seg_layout(out, regions, &total);
}


/* Process-local copies of what every call needs from the header. */
static void setup_view(struct kvbm_pool *p)
{
	const struct kvbm_shm_header *h = p->seg.hdr;

	p->id = h->instance_id;
	p->nslots = p->seg.cfg.block_count;
	p->block_size = p->seg.cfg.block_size;
	p->dup_policy = p->seg.cfg.dup_policy;
	p->ror_default = p->seg.cfg.reset_on_release;
	kvbm_evict_setup(p);
	kvbm_events_setup(p);
	kvbm_index_view(&p->ix, p->seg.buckets, kvbm_index_buckets(p->nslots), p->seg.slots,
			p->nslots);
}

int kvbm_pool_open(const char *name, const struct kvbm_config *cfg, unsigned flags,
		   struct kvbm_pool **out)
{
	struct kvbm_shm_config scfg;
	unsigned timeout = 10000;
	struct kvbm_pool *p;
	int r;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (flags & ~(KVBM_OPEN_CREATE | KVBM_OPEN_EXCL | KVBM_OPEN_ONE_THREAD |
		      KVBM_OPEN_ANY_OWNER) ||
	    ((flags & KVBM_OPEN_ANY_OWNER) && (flags & KVBM_OPEN_CREATE)))
		return -EINVAL;
	if (cfg) {
		r = kvbm_config_to_shm(cfg, &scfg);
		if (r < 0)
			return r;
		timeout = cfg->open_timeout_ms;
	} else if (flags & KVBM_OPEN_CREATE) {
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	r = kvbm_seg_open(&p->seg, name, cfg ? &scfg : NULL, flags, timeout);
	if (r < 0)
		goto fail;
	if (cfg && kvbm_shm_config_diff(&p->seg.cfg, &scfg, NULL)) {
		r = KVBM_EMISMATCH;
		goto fail_close;
	}
	setup_view(p);
	/* hooks before attach: attaching reaps, and may recover */
	kvbm_store_hooks(p);
	r = kvbm_proc_attach(&p->seg);
	if (r < 0)
		goto fail_close;
	r = kvbm_hold_setup(p);
	if (r < 0)
		goto fail_detach;
	/* after the hold setup: an expiry settles, which needs our shard */
	kvbm_pins_hooks(p);
	r = kvbm_att_setup(p);
	if (r < 0) {
		kvbm_hold_teardown(p);
		goto fail_detach;
	}
	if (flags & KVBM_OPEN_ONE_THREAD) {
		p->seg.thread = pthread_self();
		p->seg.one_thread = KVBM_SEG_ST_FIXED;
	} else {
		(void)kvbm_seg_bias(&p->seg); /* it may stay SHARED: correct, slower */
	}
	*out = p;
	return 0;
fail_detach:
	kvbm_proc_detach(&p->seg);
fail_close:
	kvbm_seg_close(&p->seg);
fail:
	free(p);
	return r;
}

/*
 * Detaching gives back everything we still hold, exactly as a reaper would
 * after our death (the same code): holds, owned blocks, then the entry.
 */
static int detach(struct kvbm_pool *p)
{
	int r = kvbm_seg_lock(&p->seg);

	if (r < 0)
		return r;
	r = p->seg.reap(&p->seg, p->seg.self, p);
	kvbm_seg_unlock(&p->seg);
	if (r < 0)
		return r;
	return kvbm_proc_detach(&p->seg);
}

int kvbm_pool_close(struct kvbm_pool *pool)
{
	int r = 0;

	if (!pool)
		return -EINVAL;
	/* any thread may close a one-thread handle: it becomes the closer's */
	pool->seg.thread = pthread_self();
	int forked = kvbm_seg_check(&pool->seg) == KVBM_EFORKED;
	/* attachments first: their free functions may still look at the pool */
	kvbm_att_teardown(pool, forked);
	/* in a forked child: free our copy only, the entry is the parent's */
	if (!forked)
		r = detach(pool);
	kvbm_seg_close(&pool->seg);
	kvbm_hold_teardown(pool);
	free(pool);
	return r == KVBM_EPOISONED ? 0 : r;
}

int kvbm_pool_destroy(const char *name, unsigned flags)
{
	if (flags & ~KVBM_DESTROY_FORCE)
		return -EINVAL;
	return kvbm_seg_destroy(name, flags);
}

int kvbm_reap(struct kvbm_pool *pool)
{
	if (!pool)
		return -EINVAL;
	return kvbm_proc_reap(&pool->seg);
}

int kvbm_pool_info(struct kvbm_pool *pool, struct kvbm_pool_info *info)
{
	const struct kvbm_shm_header *h;
	int r;

	if (!pool || !info)
		return -EINVAL;
	r = kvbm_seg_check(&pool->seg);
	if (r < 0)
		return r;
	h = pool->seg.hdr;
	memset(info, 0, sizeof(*info));
	snprintf(info->name, sizeof(info->name), "%s", pool->seg.name);
	info->instance_id = h->instance_id;
	info->segment_size = h->segment_size;
	info->config.block_count = pool->seg.cfg.block_count;
	info->config.block_size = pool->seg.cfg.block_size;
	info->config.max_procs = pool->seg.cfg.max_procs;
	info->config.mode = pool->seg.cfg.mode;
	info->config.gid = pool->seg.cfg.gid == UINT32_MAX ? -1 : (int64_t)pool->seg.cfg.gid;
	info->config.uid = pool->seg.cfg.uid == UINT32_MAX ? -1 : (int64_t)pool->seg.cfg.uid;
	info->config.flags = pool->seg.cfg.flags;
	info->config.dup_policy = pool->seg.cfg.dup_policy;
	info->config.backend = pool->seg.cfg.backend;
	info->config.reset_on_release = pool->seg.cfg.reset_on_release;
	memcpy(info->config.tier, pool->seg.cfg.tier, sizeof(info->config.tier));
	info->config.event_ring = pool->seg.cfg.event_log2 ? 1u << pool->seg.cfg.event_log2 : 0;
	info->config.pin_share = pool->seg.cfg.pin_share;
	info->proc_index = pool->seg.self;
	info->procs_attached = kvbm_proc_count_active(&pool->seg);
	info->attach_gen = pool->seg.attach_gen;
	info->initialized_by_me = pool->seg.initialized_by_me;
	info->recoveries = __atomic_load_n(&pool->seg.ctl->recoveries, __ATOMIC_RELAXED);
	return 0;
}

int kvbm_pool_tier(struct kvbm_pool *pool)
{
	int r;

	if (!pool)
		return -EINVAL;
	r = kvbm_seg_check(&pool->seg);
	if (r < 0)
		return r;
	r = kvbm_tier_parse(pool->seg.cfg.tier); /* NUL-terminated: checked at attach */
	return r < 0 ? KVBM_TIER_NONE : r;
}
