/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics.c - the reference's 19 metrics (kvbm-logical BlockPoolMetrics):
 * counters and the two inflight gauges are per-process shards in the
 * segment, summed here; the pool-size gauges are the store's own counts.
 * Prometheus text exposition with the reference's names.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "pool.h"
#include "../shm/mutex.h"

int kvbm_metrics_snapshot(struct kvbm_pool *p, struct kvbm_metrics *out)
{
	uint64_t v[KVBM_M_HOLD_END] = {0}; /* unsigned: a peer's bytes may wrap the sum */
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	if (!out)
		return -EINVAL;
	/* every shard, FREE entries too: shards are never zeroed, so the sum
	 * keeps what detached and dead processes counted */
	for (uint32_t i = 0; i < p->seg.cfg.max_procs; i++)
		for (int k = 0; k < KVBM_M_HOLD_END; k++)
			v[k] += (uint64_t)__atomic_load_n(&p->seg.metrics[i].v[k], __ATOMIC_RELAXED);
	memset(out, 0, sizeof(*out));
	out->allocations = (uint64_t)v[KVBM_M_ALLOCATIONS];
	out->allocations_from_reset = (uint64_t)v[KVBM_M_ALLOCATIONS_FROM_RESET];
	out->evictions = (uint64_t)v[KVBM_M_EVICTIONS];
	out->registrations = (uint64_t)v[KVBM_M_REGISTRATIONS];
	out->duplicate_blocks = (uint64_t)v[KVBM_M_DUPLICATE_BLOCKS];
	out->registration_dedup = (uint64_t)v[KVBM_M_REGISTRATION_DEDUP];
	out->stagings = (uint64_t)v[KVBM_M_STAGINGS];
	out->match_hashes_requested = (uint64_t)v[KVBM_M_MATCH_HASHES_REQUESTED];
	out->match_blocks_returned = (uint64_t)v[KVBM_M_MATCH_BLOCKS_RETURNED];
	out->scan_hashes_requested = (uint64_t)v[KVBM_M_SCAN_HASHES_REQUESTED];
	out->scan_blocks_returned = (uint64_t)v[KVBM_M_SCAN_BLOCKS_RETURNED];
	out->eager_primary_to_inactive = (uint64_t)v[KVBM_M_EAGER_PRIMARY_TO_INACTIVE];
	out->allocate_atomic_rollback = (uint64_t)v[KVBM_M_ALLOCATE_ATOMIC_ROLLBACK];
	out->release_primary_noop = (uint64_t)v[KVBM_M_RELEASE_PRIMARY_NOOP];
	out->release_duplicate_noop = (uint64_t)v[KVBM_M_RELEASE_DUPLICATE_NOOP];
	kvbm_seg_inflight(&p->seg, &out->inflight_mutable, &out->inflight_immutable);
	out->reset_pool_size = __atomic_load_n(&p->seg.ctl->free_count, __ATOMIC_RELAXED);
	int64_t inactive = __atomic_load_n(&p->seg.ctl->inactive, __ATOMIC_RELAXED);
	out->inactive_pool_size = inactive > 0 ? inactive : 0;
	out->index_full = __atomic_load_n(&p->seg.ctl->index_full, __ATOMIC_RELAXED);
	out->recounts_deferred = __atomic_load_n(&p->seg.ctl->recounts_deferred, __ATOMIC_RELAXED);
	/* relaxed: gauges the mutex holder writes, each a snapshot */
	out->pins_active = __atomic_load_n(&p->seg.pins->tips, __ATOMIC_RELAXED);
	out->pinned_blocks = __atomic_load_n(&p->seg.pins->blocks, __ATOMIC_RELAXED);
	out->pin_capacity = kvbm_pin_cap(&p->seg.cfg);
	out->pin_expirations = __atomic_load_n(&p->seg.pins->expired, __ATOMIC_RELAXED);
	out->mutex_hold_ns = (uint64_t)((double)v[KVBM_M_HOLD_TICKS] * kvbm_mutex_ns_per_tick());
	for (int b = 0; b < 6; b++) {
		uint64_t upto = v[KVBM_M_HOLD_LE + b] + (b ? out->mutex_hold_le[b - 1] : 0);
		if (b < 5)
			out->mutex_hold_le[b] = upto;
		else
			out->mutex_hold_count = upto;
	}
	return 0;
}

struct family {
	const char *name;
	const char *type;
	const char *help;
};

/* In struct kvbm_metrics order. */
static const struct family families[] = {
	{"kvbm_allocations_total", "counter", "Blocks allocated"},
	{"kvbm_allocations_from_reset_total", "counter", "Blocks allocated from the reset pool"},
	{"kvbm_evictions_total", "counter", "Inactive blocks evicted by allocation"},
	{"kvbm_registrations_total", "counter", "Blocks registered"},
	{"kvbm_duplicate_blocks_total", "counter", "Registrations that made a duplicate"},
	{"kvbm_registration_dedup_total", "counter", "Registrations rejected as duplicates"},
	{"kvbm_stagings_total", "counter", "Blocks staged"},
	{"kvbm_match_hashes_requested_total", "counter", "Hashes asked for by match calls"},
	{"kvbm_match_blocks_returned_total", "counter", "Blocks returned by match calls"},
	{"kvbm_scan_hashes_requested_total", "counter", "Hashes asked for by scan calls"},
	{"kvbm_scan_blocks_returned_total", "counter", "Blocks returned by scan calls"},
	/* the reference's eager path does not exist here: a lookup takes its
	 * hold lock-free on the slot whatever its last release is doing */
	{"kvbm_eager_primary_to_inactive_total", "counter",
	 "Always 0 in kvbm-shm: a lookup that meets a primary whose last release has not "
	 "settled takes its hold directly and never moves it to inactive (the late release "
	 "is counted in kvbm_release_primary_noop_total)"},
	{"kvbm_allocate_atomic_rollback_total", "counter",
	 "All-or-nothing allocations rolled back: an inactive block counted was being "
	 "resurrected by a lock-free match"},
	{"kvbm_release_primary_noop_total", "counter",
	 "Last releases of a primary that found nothing to do: held again or settled by "
	 "another release first"},
	{"kvbm_release_duplicate_noop_total", "counter",
	 "Last releases of a duplicate that found nothing to do: held again first"},
	{"kvbm_inflight_mutable", "gauge", "Blocks allocated and not yet staged"},
	{"kvbm_inflight_immutable", "gauge", "Holds on registered blocks"},
	{"kvbm_reset_pool_size", "gauge", "Blocks in the reset (free) pool"},
	{"kvbm_inactive_pool_size", "gauge", "Registered blocks nobody holds"},
	{"kvbm_index_full_total", "counter", "Registrations the registry index had no room for"},
	{"kvbm_recounts_deferred_total", "counter",
	 "Inactive-pool recounts given up on a process stuck in a resurrection window"},
	{"kvbm_pins_active", "gauge", "Pins held by the pool (prefixes pinned with a TTL)"},
	{"kvbm_pinned_blocks", "gauge", "Blocks the pool's pins keep unevictable"},
	{"kvbm_pin_capacity_blocks", "gauge", "Most blocks pins may hold (the pool's pin share)"},
	{"kvbm_pin_expirations_total", "counter", "Pinned blocks whose TTL expired"},
};

struct out {
	char *buf;
	size_t len, used;
};

static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	char *dst = o->used < o->len ? o->buf + o->used : NULL;
	size_t room = o->used < o->len ? o->len - o->used : 0;

	va_start(ap, fmt);
	int n = vsnprintf(dst, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->used += (size_t)n;
}

/* Label values escape backslash, quote and newline (exposition format). */
static void put_label(struct out *o, int first, const char *k, const char *v)
{
	put(o, "%s%s=\"", first ? "" : ",", k);
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			put(o, "\\%c", *v);
		else if (*v == '\n')
			put(o, "\\n");
		else
			put(o, "%c", *v);
	}
	put(o, "\"");
}

/* A sample's name@suffix{pool, labels[, le]} (the value follows). */
static void sample(struct out *o, const char *name, const char *suffix, const char *tier,
		   const char *const (*labels)[2], size_t nlabels, const char *le)
{
	put(o, "%s%s{", name, suffix);
	put_label(o, 1, "pool", tier);
	for (size_t l = 0; l < nlabels; l++)
		put_label(o, 0, labels[l][0], labels[l][1]);
	if (le)
		put_label(o, 0, "le", le);
	put(o, "}");
}

/* The mutex hold time as a histogram in seconds: the buckets of struct
 * kvbm_metrics (1, 4, 16, 64, 256 us), then +Inf = the count. */
static void hold_histogram(struct out *o, const struct kvbm_metrics *m, const char *tier,
			   const char *const (*labels)[2], size_t nlabels)
{
	static const char *const le[5] = {"1e-06", "4e-06", "1.6e-05", "6.4e-05", "0.000256"};
	static const char name[] = "kvbm_mutex_hold_seconds";

	put(o, "# HELP %s How long each critical section held the pool mutex\n"
	    "# TYPE %s histogram\n", name, name);
	for (int b = 0; b < 5; b++) {
		sample(o, name, "_bucket", tier, labels, nlabels, le[b]);
		put(o, " %llu\n", (unsigned long long)m->mutex_hold_le[b]);
	}
	sample(o, name, "_bucket", tier, labels, nlabels, "+Inf");
	put(o, " %llu\n", (unsigned long long)m->mutex_hold_count);
	sample(o, name, "_sum", tier, labels, nlabels, NULL);
	put(o, " %.9f\n", (double)m->mutex_hold_ns / 1e9);
	sample(o, name, "_count", tier, labels, nlabels, NULL);
	put(o, " %llu\n", (unsigned long long)m->mutex_hold_count);
}

long kvbm_metrics_prometheus(const struct kvbm_metrics *m, const char *tier,
			     const char *const (*labels)[2], size_t nlabels, char *buf, size_t len)
{
	struct out o = {buf, len, 0};
	int64_t v[sizeof(families) / sizeof(families[0])];

	if (!m || !tier || (nlabels && !labels) || (len && !buf))
		return -EINVAL;
	v[0] = (int64_t)m->allocations;
	v[1] = (int64_t)m->allocations_from_reset;
	v[2] = (int64_t)m->evictions;
	v[3] = (int64_t)m->registrations;
	v[4] = (int64_t)m->duplicate_blocks;
	v[5] = (int64_t)m->registration_dedup;
	v[6] = (int64_t)m->stagings;
	v[7] = (int64_t)m->match_hashes_requested;
	v[8] = (int64_t)m->match_blocks_returned;
	v[9] = (int64_t)m->scan_hashes_requested;
	v[10] = (int64_t)m->scan_blocks_returned;
	v[11] = (int64_t)m->eager_primary_to_inactive;
	v[12] = (int64_t)m->allocate_atomic_rollback;
	v[13] = (int64_t)m->release_primary_noop;
	v[14] = (int64_t)m->release_duplicate_noop;
	v[15] = m->inflight_mutable;
	v[16] = m->inflight_immutable;
	v[17] = m->reset_pool_size;
	v[18] = m->inactive_pool_size;
	v[19] = (int64_t)m->index_full;
	v[20] = (int64_t)m->recounts_deferred;
	v[21] = m->pins_active;
	v[22] = m->pinned_blocks;
	v[23] = m->pin_capacity;
	v[24] = (int64_t)m->pin_expirations;
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		const struct family *f = &families[i];
		put(&o, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
		sample(&o, f->name, "", tier, labels, nlabels, NULL);
		put(&o, " %lld\n", (long long)v[i]);
	}
	hold_histogram(&o, m, tier, labels, nlabels);
	if (o.used < len)
		buf[o.used] = '\0';
	else if (len)
		buf[len - 1] = '\0';
	return (long)o.used;
}
