/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pools.c - creating or adopting kvbmd's pools. A pool that exists is
 * adopted as it is, and must agree with the keys its section gave (a
 * mismatch is an error naming the key, never a silent reconfiguration:
 * the pool is shared by processes that sized their storage by it). A pool
 * that does not exist is created from its section. Beside the attached
 * handle kvbmd keeps a read-only mapping of the segment (tools/inspect.c)
 * for what the public API does not tell: who is attached (to watch them),
 * the reap count and the POISONED state.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kvbmd.h"

/* The first key the pool disagrees on, or NULL. */
static const char *disagreement(const struct kvbmd_pool_cfg *pc, const struct kvbm_config *have)
{
	const struct kvbm_config *want = &pc->cfg;

	if ((pc->set & KVBMD_SET_BLOCKS) && want->block_count != have->block_count)
		return "blocks";
	if ((pc->set & KVBMD_SET_BLOCK_SIZE) && want->block_size != have->block_size)
		return "block_size";
	if ((pc->set & KVBMD_SET_MAX_PROCS) && want->max_procs != have->max_procs)
		return "max_procs";
	if ((pc->set & KVBMD_SET_TIER) && strcmp(want->tier, have->tier))
		return "tier";
	if ((pc->set & KVBMD_SET_BACKEND) && want->backend != have->backend)
		return "backend";
	if ((pc->set & KVBMD_SET_DUP) && want->dup_policy != have->dup_policy)
		return "dup_policy";
	if ((pc->set & KVBMD_SET_RESET) && want->reset_on_release != have->reset_on_release)
		return "reset_on_release";
	return NULL;
}

static int pool_open(struct kvbmd_pool *p, const struct kvbmd_pool_cfg *pc, uint32_t window)
{
	struct kvbm_pool_info info;
	const char *why = NULL, *key;
	int r, created = 0;

	snprintf(p->name, sizeof(p->name), "%s", pc->name);
	r = kvbm_pool_open(pc->name, NULL, 0, &p->h);
	if (r == -ENOENT && pc->create) {
		if (kvbm_config_check(&pc->cfg, &why) < 0) {
			fprintf(stderr, "kvbmd: pool %s (%s): %s\n", pc->name, pc->where, why);
			return -1;
		}
		/* CREATE without EXCL: another creator may win the race, and
		 * the pool it made must then agree with ours (KVBM_EMISMATCH) */
		r = kvbm_pool_open(pc->name, &pc->cfg, KVBM_OPEN_CREATE, &p->h);
		created = 1;
	}
	if (r < 0) {
		fprintf(stderr, "kvbmd: pool %s (%s): %s%s\n", pc->name, pc->where, kvbm_strerror(r),
			r == -ENOENT ? " (create = no: kvbmd only adopts it)"
			: r == KVBM_EMISMATCH ? " (kvbm-pool info NAME shows its configuration)"
					      : "");
		p->h = NULL;
		return -1;
	}
	r = kvbm_pool_info(p->h, &info);
	if (r < 0) {
		fprintf(stderr, "kvbmd: pool %s: %s\n", pc->name, kvbm_strerror(r));
		return -1;
	}
	if ((key = disagreement(pc, &info.config)) != NULL) {
		fprintf(stderr,
			"kvbmd: pool %s (%s): the existing pool has another %s; fix the "
			"configuration or recreate the pool (kvbm-pool info %s shows it)\n",
			pc->name, pc->where, key, pc->name);
		return -1;
	}
	snprintf(p->tier, sizeof(p->tier), "%s", info.config.tier);
	p->self = info.proc_index;
	r = kvbm_inspect_open(&p->view, pc->name);
	p->view_open = r == 0;
	p->view_ok = r == 0 && p->view.valid == 0;
	if (!p->view_ok)
		fprintf(stderr, "kvbmd: pool %s: no read-only view (%s): attached processes are "
			"reaped only periodically\n", pc->name, kvbm_strerror(r < 0 ? r : p->view.valid));
	r = kvbm_stats_new(p->h, window, &p->stats);
	if (r == 0)
		kvbm_stats_set_enabled(p->stats, 1);
	else
		p->stats = NULL;
	for (size_t i = 0; i < KVBM_MAX_PROCS; i++)
		p->w[i].fd = -1;
	kvbmd_log("pool %s (tier %s): %s, %u blocks of %u tokens, %u process entries",
		  p->name, p->tier, created && info.initialized_by_me ? "created" : "adopted",
		  info.config.block_count, info.config.block_size, info.config.max_procs);
	return 0;
}

static void pool_close(struct kvbmd_pool *p)
{
	if (p->stats)
		kvbm_stats_free(p->stats);
	if (p->view_open)
		kvbm_inspect_close(&p->view);
	if (p->h) {
		int r = kvbm_pool_close(p->h);
		if (r < 0)
			fprintf(stderr, "kvbmd: closing pool %s: %s\n", p->name, kvbm_strerror(r));
	}
	memset(p, 0, sizeof(*p));
}

int kvbmd_pools_open(struct kvbmd *d)
{
	for (size_t i = 0; i < d->cfg.npools; i++) {
		struct kvbmd_pool *p = &d->pools[i];

		memset(p, 0, sizeof(*p));
		d->npools = i + 1;
		if (pool_open(p, &d->cfg.pools[i], d->cfg.stats_window) < 0) {
			kvbmd_pools_close(d);
			return -1;
		}
		for (size_t j = 0; j < i; j++)
			if (!strcmp(d->pools[j].tier, p->tier)) {
				/* one `pool` label per tier: two pools of one tier
				 * would give one family two equal samples */
				fprintf(stderr, "kvbmd: pools %s and %s have the same tier %s: give "
					"each its own (tier = ...)\n", d->pools[j].name, p->name, p->tier);
				kvbmd_pools_close(d);
				return -1;
			}
	}
	return 0;
}

void kvbmd_pools_close(struct kvbmd *d)
{
	for (size_t i = 0; i < d->npools; i++)
		pool_close(&d->pools[i]);
	d->npools = 0;
}

int kvbmd_pool_poisoned(const struct kvbmd_pool *p)
{
	if (!p->view_ok)
		return 0;
	/* pairs with the release store that poisons the segment */
	return __atomic_load_n(&p->view.seg.hdr->state, __ATOMIC_ACQUIRE) == KVBM_SEG_POISONED;
}

uint64_t kvbmd_pool_reaps(const struct kvbmd_pool *p)
{
	/* written by the mutex holder; a relaxed read is a gauge of it */
	return p->view_ok ? __atomic_load_n(&p->view.seg.ctl->reaps, __ATOMIC_RELAXED) : 0;
}
