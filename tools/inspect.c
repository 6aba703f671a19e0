/* SPDX-License-Identifier: Apache-2.0 */
/*
 * inspect.c - see inspect.h.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "inspect.h"
#include "../lib/pool.h"

int kvbm_inspect_open(struct kvbm_inspect *in, const char *name_or_path)
{
	int r;

	memset(in, 0, sizeof(*in));
	r = kvbm_seg_open_ro(&in->seg, name_or_path, &in->hdr, &in->valid);
	if (r < 0)
		return r;
	/* a file shorter than a header is judged "truncated" before its magic
	 * is read: without our magic it is no pool at all (/etc/passwd) */
	if (in->valid == KVBM_ETRUNCATED && in->hdr.magic != KVBM_SHM_MAGIC)
		in->valid = KVBM_EBADMAGIC;
	/* everything below reads the mapping within bounds derived from the
	 * header copy validated at open: the mapping must be what that copy
	 * lays out (the file may have changed between the read and the map) */
	if (in->valid == 0)
		in->valid = kvbm_check_mapping(&in->seg, &in->hdr.config);
	in->state_rc = kvbm_seg_check_state(in->hdr.state);
	return 0;
}

void kvbm_inspect_close(struct kvbm_inspect *in)
{
	kvbm_seg_close(&in->seg);
}

int kvbm_inspect_verdict(const struct kvbm_inspect *in)
{
	return in->valid ? in->valid : in->state_rc;
}

uint32_t kvbm_inspect_proc(const struct kvbm_inspect *in, uint32_t i, struct kvbm_shm_proc *out,
			   enum kvbm_liveness *live)
{
	const struct kvbm_shm_proc *e = &in->seg.procs[i];
	uint32_t st = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);

	memcpy(out, e, sizeof(*out));
	*live = st == KVBM_PROC_ACTIVE ? kvbm_proc_liveness(in->seg.fd, i, out) : KVBM_ALIVE;
	return st;
}

uint32_t kvbm_inspect_live_procs(const struct kvbm_inspect *in)
{
	uint32_t n = 0;

	if (in->valid)
		return 0;
	for (uint32_t i = 0; i < in->hdr.config.max_procs; i++) {
		struct kvbm_shm_proc e;
		enum kvbm_liveness l;

		if (kvbm_inspect_proc(in, i, &e, &l) == KVBM_PROC_ACTIVE && l == KVBM_ALIVE)
			n++;
	}
	return n;
}

uint32_t kvbm_inspect_unreaped_procs(const struct kvbm_inspect *in)
{
	uint32_t n = 0;

	if (in->valid)
		return 0;
	for (uint32_t i = 0; i < in->hdr.config.max_procs; i++) {
		struct kvbm_shm_proc e;
		enum kvbm_liveness l;
		uint32_t st = kvbm_inspect_proc(in, i, &e, &l);

		if (st != KVBM_PROC_FREE && !(st == KVBM_PROC_ACTIVE && l == KVBM_ALIVE))
			n++;
	}
	return n;
}

const char *kvbm_shm_dir_missing(char *buf, size_t len)
{
	const char *dir = kvbm_shm_dir();
	struct stat st;

	if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
		return NULL;
	snprintf(buf, len, "the pool directory %s does not exist%s", dir,
		 getenv("KVBM_SHM_DIR") ? " (set by KVBM_SHM_DIR)" : "");
	return buf;
}

const char *kvbm_proc_state_name(uint32_t state)
{
	switch (state) {
	case KVBM_PROC_FREE:
		return "free";
	case KVBM_PROC_ACTIVE:
		return "active";
	case KVBM_PROC_RECLAIMING:
		return "reclaiming";
	}
	return "?";
}

const char *kvbm_op_name(uint32_t op)
{
	switch (op) {
	case KVBM_OP_NONE:
		return "none";
	case KVBM_OP_ATTACH:
		return "attach";
	case KVBM_OP_DETACH:
		return "detach";
	case KVBM_OP_REAP:
		return "reap";
	case KVBM_OP_ALLOCATE:
		return "allocate";
	case KVBM_OP_REGISTER:
		return "register";
	case KVBM_OP_RELEASE:
		return "release";
	case KVBM_OP_EVICT:
		return "evict";
	case KVBM_OP_PIN:
		return "pin";
	}
	return "unknown";
}

const char *kvbm_fmt_time(uint64_t ns, char *buf, size_t len)
{
	time_t t = (time_t)(ns / 1000000000ull);
	struct tm tm;

	if (ns == 0 || !gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, len, "-");
	return buf;
}

/* Holds over every holder table: the inflight_immutable gauge. From the
 * validated header copy, never the mapping's header, which a peer may
 * rewrite under us. */
static int64_t census_holds(const struct kvbm_inspect *in)
{
	const struct kvbm_shm_config *cfg = &in->hdr.config;
	int64_t n = 0;

	for (uint32_t p = 0; p < cfg->max_procs; p++) {
		const kvbm_hold_t *t =
			(const kvbm_hold_t *)(in->seg.holders + (uint64_t)p * kvbm_holder_stride(cfg));
		for (uint32_t s = 0; s < cfg->block_count; s++)
			n += __atomic_load_n(&t[s], __ATOMIC_RELAXED) & KVBM_HOLD_COUNT;
	}
	return n;
}

void kvbm_inspect_census(const struct kvbm_inspect *in, struct kvbm_census *c)
{
	const struct kvbm_shm_config *cfg = &in->hdr.config;

	memset(c, 0, sizeof(*c));
	c->total = cfg->block_count;
	for (uint32_t s = 0; s < cfg->block_count; s++) {
		const struct kvbm_shm_slot *sl = &in->seg.slots[s];
		uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_ACQUIRE);
		uint64_t h = __atomic_load_n(&sl->holders, __ATOMIC_ACQUIRE);
		int primary = (kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY) != 0;

		switch (kvbm_slot_state(w)) {
		case KVBM_SLOT_RESET:
			c->free++;
			break;
		case KVBM_SLOT_MUTABLE:
			c->mutable_++;
			break;
		case KVBM_SLOT_STAGED:
			c->staged++;
			break;
		case KVBM_SLOT_REGISTERED:
			/* a live duplicate keeps its primary active (settle
			 * leaves it out of the inactive pool), holders or not */
			if (!primary)
				c->dups++;
			else if ((h & KVBM_HOLD_PROCS) || sl->dups)
				c->active++;
			else
				c->inactive++;
			break;
		default:
			c->evicting++;
			break;
		}
		for (uint32_t p = 0; p < cfg->max_procs; p++)
			if (h & (1ull << p))
				c->holds[p]++;
		c->pinned += (h & KVBM_HOLD_POOL) != 0;
	}
	c->pin_blocks = __atomic_load_n(&in->seg.pins->blocks, __ATOMIC_RELAXED);
	c->pin_tips = __atomic_load_n(&in->seg.pins->tips, __ATOMIC_RELAXED);
	c->pin_expired = __atomic_load_n(&in->seg.pins->expired, __ATOMIC_RELAXED);
	/* summed modulo 2^64: a shard holds whatever a peer wrote, and a
	 * signed overflow would be undefined */
	for (uint32_t i = 0; i < cfg->max_procs; i++)
		for (int k = 0; k < KVBM_M_NSHARD; k++)
			c->metrics[k] = (int64_t)((uint64_t)c->metrics[k] +
						  (uint64_t)__atomic_load_n(&in->seg.metrics[i].v[k],
									    __ATOMIC_RELAXED));
	c->inflight_mutable = c->mutable_;
	c->inflight_immutable = census_holds(in);
	c->free_count = __atomic_load_n(&in->seg.ctl->free_count, __ATOMIC_RELAXED);
	c->inactive_count = __atomic_load_n(&in->seg.ctl->inactive, __ATOMIC_RELAXED);
}

long kvbm_inspect_check(const struct kvbm_inspect *in, int exact, kvbm_report_fn fn, void *arg)
{
	unsigned flags = KVBM_CK_LIVENESS;

	if (exact)
		flags |= KVBM_CK_LOCKED | KVBM_CK_QUIESCENT;
	return kvbm_check_seg(&in->seg, flags, fn, arg);
}

const char *kvbm_inspect_tier(const struct kvbm_shm_config *cfg, char out[KVBM_TIER_MAX + 1],
			      const char **storage)
{
	snprintf(out, KVBM_TIER_MAX + 1, "%.*s", KVBM_TIER_MAX, cfg->tier);
	*storage = kvbm_tier_storage((uint32_t)kvbm_tier_parse(out));
	return out;
}
