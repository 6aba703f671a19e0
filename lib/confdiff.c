/* SPDX-License-Identifier: Apache-2.0 */
/*
 * confdiff.c - which configuration field keeps an open from agreeing with
 * an existing pool: the one judge both kvbm_pool_open() (KVBM_EMISMATCH)
 * and kvbm_config_diff() (naming the field) ask, so they cannot disagree.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pool.h"

static const char *dup_name(uint32_t d)
{
	return d == KVBM_DUP_ALLOW ? "allow" : d == KVBM_DUP_REJECT ? "reject" : "?";
}

static void fmt_u32(char *buf, uint32_t v)
{
	snprintf(buf, KVBM_CONFIG_VALUE_MAX, "%u", v);
}

static void fmt_sketch(char *buf, uint32_t log2)
{
	if (log2)
		snprintf(buf, KVBM_CONFIG_VALUE_MAX, "2^%u counters", log2);
	else
		snprintf(buf, KVBM_CONFIG_VALUE_MAX, "none");
}

static void fmt_thresholds(char *buf, const uint8_t *t)
{
	snprintf(buf, KVBM_CONFIG_VALUE_MAX, "%u,%u,%u", t[0], t[1], t[2]);
}

int kvbm_shm_config_diff(const struct kvbm_shm_config *have, const struct kvbm_shm_config *want,
			 struct kvbm_config_diff *out)
{
	struct kvbm_config_diff d;

	memset(&d, 0, sizeof(d));
	if (have->block_count != want->block_count) {
		d.field = "block_count";
		fmt_u32(d.pool, have->block_count);
		fmt_u32(d.config, want->block_count);
	} else if (have->block_size != want->block_size) {
		d.field = "block_size";
		fmt_u32(d.pool, have->block_size);
		fmt_u32(d.config, want->block_size);
	} else if (have->max_procs != want->max_procs) {
		d.field = "max_procs";
		fmt_u32(d.pool, have->max_procs);
		fmt_u32(d.config, want->max_procs);
	} else if (have->dup_policy != want->dup_policy) {
		d.field = "dup_policy";
		snprintf(d.pool, sizeof(d.pool), "%s", dup_name(have->dup_policy));
		snprintf(d.config, sizeof(d.config), "%s", dup_name(want->dup_policy));
	} else if (have->backend != want->backend) {
		const char *h = kvbm_backend_name(have->backend), *w = kvbm_backend_name(want->backend);
		d.field = "backend";
		snprintf(d.pool, sizeof(d.pool), "%s", h ? h : "?");
		snprintf(d.config, sizeof(d.config), "%s", w ? w : "?");
	} else if (have->reset_on_release != want->reset_on_release) {
		d.field = "reset_on_release";
		fmt_u32(d.pool, have->reset_on_release);
		fmt_u32(d.config, want->reset_on_release);
	} else if (have->sketch_log2 != want->sketch_log2) {
		d.field = "tinylfu";
		fmt_sketch(d.pool, have->sketch_log2);
		fmt_sketch(d.config, want->sketch_log2);
	} else if (memcmp(have->mlru_thresholds, want->mlru_thresholds, 4) != 0) {
		d.field = "mlru_thresholds";
		fmt_thresholds(d.pool, have->mlru_thresholds);
		fmt_thresholds(d.config, want->mlru_thresholds);
	} else if (strncmp(have->tier, want->tier, sizeof(have->tier)) != 0) {
		d.field = "tier";
		snprintf(d.pool, sizeof(d.pool), "%.*s", (int)sizeof(have->tier), have->tier);
		snprintf(d.config, sizeof(d.config), "%.*s", (int)sizeof(want->tier), want->tier);
	} else if (have->pin_share != want->pin_share) {
		/* the share bounds every process's pins: two openers must not
		 * believe in two bounds */
		d.field = "pin_share";
		snprintf(d.pool, sizeof(d.pool), "%u%%", have->pin_share);
		snprintf(d.config, sizeof(d.config), "%u%%", want->pin_share);
	}
	if (out)
		*out = d;
	return d.field != NULL;
}

int kvbm_config_diff(const char *name, const struct kvbm_config *cfg,
		     struct kvbm_config_diff *out)
{
	struct kvbm_shm_config want;
	struct kvbm_shm_header hdr;
	struct kvbm_seg seg;
	int valid, r;

	if (!name || !cfg || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	r = kvbm_config_to_shm(cfg, &want);
	if (r < 0)
		return r;
	/* read-only and lock-free, as an inspection: no process-table entry
	 * is taken, no dead process reaped, nothing changes */
	memset(&seg, 0, sizeof(seg));
	r = kvbm_seg_open_ro(&seg, name, &hdr, &valid);
	if (r < 0)
		return r;
	kvbm_seg_close(&seg);
	if (valid)
		return valid;
	return kvbm_shm_config_diff(&hdr.config, &want, out);
}
