/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dump.c - see dump.h: what kvbm-shm-dump prints, apart from its command
 * line, so that the segment fuzzer (tests/fuzz_segment.c) runs the same
 * code over damaged segments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"
#include "json.h"

static const char *const region_names[KVBM_REGION_NUSED] = {"control", "procs", "slots", "registry",
								   "holders", "metrics", "evict", "events", "tokens",
								   "pins"};

static void mutex_text(const struct kvbm_inspect *in, char *buf, size_t len)
{
	struct kvbm_mutex_view v;
	const struct kvbm_shm_control *c = in->seg.ctl;

	kvbm_mutex_view(&c->mutex, &v);
	if (v.notrecoverable)
		snprintf(buf, len, "not recoverable (owner died, repair failed)");
	else if (v.owner_died)
		snprintf(buf, len, "owner died (last owner pid %u); next locker recovers",
			 c->owner_pid);
	else if (v.locked)
		snprintf(buf, len, "locked by tid %u (pid %u)%s%s", v.tid, c->owner_pid,
			 v.inconsistent ? ", recovering" : "", v.waiters ? ", waiters" : "");
	else
		snprintf(buf, len, "unlocked");
}

/* A count the pool's processes only ever raise, summed over their shards
 * (or a gauge that cannot be negative): a negative sum is damage, which a
 * peer's bytes can cause, and is said rather than printed as a number. */
static const char *fmt_count(int64_t v, char buf[40])
{
	if (v < 0)
		snprintf(buf, 40, "damaged (0x%016" PRIx64 ")", (uint64_t)v);
	else
		snprintf(buf, 40, "%" PRId64, v);
	return buf;
}

static void print_text(const struct kvbm_inspect *in, int summary)
{
	const struct kvbm_shm_header *h = &in->hdr;
	const struct kvbm_shm_control *c = in->seg.ctl;
	const struct kvbm_shm_config *cfg = &h->config;
	char t[64], m[160], tier[KVBM_TIER_MAX + 1];
	const char *storage;

	printf("pool       %s  (%s)\n", in->seg.name, in->seg.path);
	printf("state      %s\n", kvbm_seg_state_name(h->state));
	if (summary)
		goto blocks;
	printf("abi        %u.%u  layout 0x%016" PRIx64 " (matches this build)\n", h->abi_major,
	       h->abi_minor, h->layout_hash);
	printf("instance   0x%016" PRIx64 "\n", h->instance_id);
	printf("size       %" PRIu64 " bytes\n", h->segment_size);
	printf("created    %s by pid %u\n", kvbm_fmt_time(h->created_ns, t, sizeof(t)),
	       h->creator_pid);
	printf("config     blocks=%u block_size=%u max_procs=%u mode=%04o", cfg->block_count,
	       cfg->block_size, cfg->max_procs, cfg->mode);
	if (cfg->gid != UINT32_MAX)
		printf(" gid=%u", cfg->gid);
	printf("%s\n", (cfg->flags & KVBM_CFG_HUGEPAGES) ? " hugepages" : "");
	kvbm_inspect_tier(cfg, tier, &storage);
	printf("           duplicates=%s eviction=%s reset_on_release=%u tier=%s (%s)\n",
	       cfg->dup_policy == KVBM_DUP_REJECT ? "reject" : "allow",
	       kvbm_backend_name(cfg->backend) ? kvbm_backend_name(cfg->backend) : "?", cfg->reset_on_release,
	       tier, storage ? storage : "no tier");
	printf("regions\n");
	for (uint32_t i = 0; i < h->nregions && i < KVBM_REGION_NUSED; i++)
		printf("  %-9s offset %-10" PRIu64 " size %" PRIu64 "\n", region_names[i],
		       h->regions[i].offset, h->regions[i].size);
	mutex_text(in, m, sizeof(m));
	printf("mutex      %s\n", m);
	printf("           acquisitions %" PRIu64 ", recoveries %" PRIu64 " (last %s), reaps %" PRIu64
	       "\n",
	       c->lock_count, c->recoveries, kvbm_fmt_time(c->last_recovery_ns, t, sizeof(t)),
	       c->reaps);
	printf("           op record: %s", kvbm_op_name(c->op.op));
	if (c->op.op != KVBM_OP_NONE)
		printf(" (proc %u, arg %u, step %u)", c->op.proc, c->op.arg0, c->op.step);
	printf("\n");

blocks:;
	struct kvbm_census k;
	kvbm_inspect_census(in, &k);
	printf("blocks     %u: %u free, %u inactive, %u in use (%u mutable, %u staged, "
	       "%u registered held, %u duplicate)%s\n",
	       k.total, k.free, k.inactive, k.total - k.free - k.inactive, k.mutable_, k.staged,
	       k.active, k.dups, k.evicting ? ", EVICTING slots present" : "");
	/* modulo 2^64: the inactive count is whatever a peer wrote (the
	 * checker says when it is wrong), and a signed overflow is undefined */
	printf("           available %" PRId64 " (free list %u + inactive %" PRId64 ")\n",
	       (int64_t)((uint64_t)k.free_count + (uint64_t)k.inactive_count), k.free_count,
	       k.inactive_count);
	/* the census's count of POOL bits, and the region's own counts */
	printf("pins       %u pinned blocks (counted %u, %u pins), cap %u (pin_share %u%%), "
	       "%" PRIu64 " expired\n",
	       k.pinned, k.pin_blocks, k.pin_tips, kvbm_pin_cap(cfg), cfg->pin_share, k.pin_expired);
	char cnt[6][40];
	printf("metrics    allocations %s (evictions %s), registrations %s, matched %s/%s hashes, "
	       "holds %s\n",
	       fmt_count(k.metrics[KVBM_M_ALLOCATIONS], cnt[0]),
	       fmt_count(k.metrics[KVBM_M_EVICTIONS], cnt[1]),
	       fmt_count(k.metrics[KVBM_M_REGISTRATIONS], cnt[2]),
	       fmt_count(k.metrics[KVBM_M_MATCH_BLOCKS_RETURNED], cnt[3]),
	       fmt_count(k.metrics[KVBM_M_MATCH_HASHES_REQUESTED], cnt[4]),
	       fmt_count(k.inflight_immutable, cnt[5]));

	uint32_t used = 0;
	for (uint32_t i = 0; i < cfg->max_procs; i++)
		used += in->seg.procs[i].state != KVBM_PROC_FREE;
	printf("processes  %u of %u entries in use\n", used, cfg->max_procs);
	if (used)
		printf("  %-4s %-8s %-11s %-26s %-7s %-10s %s\n", "idx", "pid", "state", "liveness",
		       "holds", "attach_gen", "attached");
	for (uint32_t i = 0; i < cfg->max_procs; i++) {
		struct kvbm_shm_proc e;
		enum kvbm_liveness l;
		uint32_t st = kvbm_inspect_proc(in, i, &e, &l);

		if (st == KVBM_PROC_FREE)
			continue;
		printf("  %-4u %-8u %-11s %-26s %-7u %-10" PRIu64 " %s\n", i, e.pid,
		       kvbm_proc_state_name(st),
		       st == KVBM_PROC_ACTIVE ? kvbm_liveness_name(l) : "-", k.holds[i], e.attach_gen,
		       kvbm_fmt_time(e.attach_ns, t, sizeof(t)));
	}
}

static void print_json(const struct kvbm_inspect *in, int verdict)
{
	const struct kvbm_shm_header *h = &in->hdr;
	struct json j;
	char t[64], m[160], tier[KVBM_TIER_MAX + 1];
	const char *storage;

	json_init(&j, stdout);
	json_obj_begin(&j, NULL);
	json_str(&j, "pool", in->seg.name);
	json_str(&j, "path", in->seg.path);
	json_bool(&j, "valid", verdict == 0);
	if (verdict) {
		json_str(&j, "error", kvbm_strerror(verdict));
		json_i64(&j, "code", verdict);
	}
	if (h->magic != KVBM_SHM_MAGIC) {
		json_obj_end(&j);
		json_finish(&j);
		return;
	}
	json_obj_begin(&j, "header");
	json_str(&j, "state", kvbm_seg_state_name(h->state));
	json_u64(&j, "abi_major", h->abi_major);
	json_u64(&j, "abi_minor", h->abi_minor);
	json_hex(&j, "layout_hash", h->layout_hash);
	json_hex(&j, "instance_id", h->instance_id);
	json_u64(&j, "segment_size", h->segment_size);
	json_str(&j, "created", kvbm_fmt_time(h->created_ns, t, sizeof(t)));
	json_u64(&j, "creator_pid", h->creator_pid);
	json_obj_end(&j);
	json_obj_begin(&j, "config");
	json_u64(&j, "block_count", h->config.block_count);
	json_u64(&j, "block_size", h->config.block_size);
	json_u64(&j, "max_procs", h->config.max_procs);
	json_u64(&j, "mode", h->config.mode);
	if (h->config.gid == UINT32_MAX)
		json_null(&j, "gid");
	else
		json_u64(&j, "gid", h->config.gid);
	json_bool(&j, "hugepages", (h->config.flags & KVBM_CFG_HUGEPAGES) != 0);
	json_str(&j, "tier", kvbm_inspect_tier(&h->config, tier, &storage));
	if (storage)
		json_str(&j, "storage_tier", storage);
	else
		json_null(&j, "storage_tier");
	json_obj_end(&j);
	if (in->valid) { /* the rest of the segment is not to be trusted */
		json_obj_end(&j);
		json_finish(&j);
		return;
	}
	json_arr_begin(&j, "regions");
	for (uint32_t i = 0; i < KVBM_REGION_NUSED; i++) {
		json_obj_begin(&j, NULL);
		json_str(&j, "name", region_names[i]);
		json_u64(&j, "offset", h->regions[i].offset);
		json_u64(&j, "size", h->regions[i].size);
		json_obj_end(&j);
	}
	json_arr_end(&j);

	const struct kvbm_shm_control *c = in->seg.ctl;
	struct kvbm_mutex_view v;
	kvbm_mutex_view(&c->mutex, &v);
	mutex_text(in, m, sizeof(m));
	json_obj_begin(&j, "mutex");
	json_str(&j, "status", m);
	json_bool(&j, "locked", v.locked);
	json_bool(&j, "owner_died", v.owner_died);
	json_bool(&j, "not_recoverable", v.notrecoverable);
	json_u64(&j, "owner_pid", c->owner_pid);
	json_u64(&j, "acquisitions", c->lock_count);
	json_u64(&j, "recoveries", c->recoveries);
	json_str(&j, "last_recovery", kvbm_fmt_time(c->last_recovery_ns, t, sizeof(t)));
	json_u64(&j, "reaps", c->reaps);
	json_str(&j, "op", kvbm_op_name(c->op.op));
	json_obj_end(&j);

	struct kvbm_census k;
	kvbm_inspect_census(in, &k);
	json_obj_begin(&j, "blocks");
	json_u64(&j, "total", k.total);
	json_u64(&j, "free", k.free);
	json_u64(&j, "mutable", k.mutable_);
	json_u64(&j, "staged", k.staged);
	json_u64(&j, "active", k.active);
	json_u64(&j, "inactive", k.inactive);
	json_u64(&j, "duplicates", k.dups);
	json_u64(&j, "evicting", k.evicting);
	json_u64(&j, "free_count", k.free_count);
	json_i64(&j, "inactive_count", k.inactive_count);
	json_obj_end(&j);
	json_obj_begin(&j, "pins");
	json_u64(&j, "pinned_blocks", k.pinned);
	json_u64(&j, "counted_blocks", k.pin_blocks);
	json_u64(&j, "pins", k.pin_tips);
	json_u64(&j, "capacity", kvbm_pin_cap(&h->config));
	json_u64(&j, "pin_share", h->config.pin_share);
	json_u64(&j, "expirations", k.pin_expired);
	json_obj_end(&j);
	json_obj_begin(&j, "metrics");
	json_i64(&j, "allocations", k.metrics[KVBM_M_ALLOCATIONS]);
	json_i64(&j, "evictions", k.metrics[KVBM_M_EVICTIONS]);
	json_i64(&j, "registrations", k.metrics[KVBM_M_REGISTRATIONS]);
	json_i64(&j, "match_hashes_requested", k.metrics[KVBM_M_MATCH_HASHES_REQUESTED]);
	json_i64(&j, "match_blocks_returned", k.metrics[KVBM_M_MATCH_BLOCKS_RETURNED]);
	json_i64(&j, "inflight_mutable", k.inflight_mutable);
	json_i64(&j, "inflight_immutable", k.inflight_immutable);
	json_obj_end(&j);

	json_arr_begin(&j, "processes");
	for (uint32_t i = 0; i < h->config.max_procs; i++) {
		struct kvbm_shm_proc e;
		enum kvbm_liveness l;
		uint32_t st = kvbm_inspect_proc(in, i, &e, &l);

		if (st == KVBM_PROC_FREE)
			continue;
		json_obj_begin(&j, NULL);
		json_u64(&j, "index", i);
		json_u64(&j, "pid", e.pid);
		json_str(&j, "state", kvbm_proc_state_name(st));
		json_bool(&j, "alive", st == KVBM_PROC_ACTIVE && l == KVBM_ALIVE);
		json_str(&j, "liveness", st == KVBM_PROC_ACTIVE ? kvbm_liveness_name(l) : "-");
		json_u64(&j, "attach_gen", e.attach_gen);
		json_u64(&j, "holds", k.holds[i]);
		json_u64(&j, "starttime", e.starttime);
		json_str(&j, "attached", kvbm_fmt_time(e.attach_ns, t, sizeof(t)));
		json_obj_end(&j);
	}
	json_arr_end(&j);
	json_obj_end(&j);
	json_finish(&j);
}

static void print_violation(const char *msg, void *arg)
{
	(void)arg;
	printf("violation: %s\n", msg);
}

/* --check: lock-free on the read-only mapping, or attached under the mutex. */
static int run_check(struct kvbm_inspect *in, const char *pool, int lock)
{
	struct kvbm_mutex_view mv;
	uint32_t live = kvbm_inspect_live_procs(in);
	long v;

	kvbm_mutex_view(&in->seg.ctl->mutex, &mv);
	if (lock) {
		struct kvbm_pool *p;
		uint32_t dead = kvbm_inspect_unreaped_procs(in);
		/* the operator named this pool: whoever owns its file */
		int r = kvbm_pool_open(pool, NULL, KVBM_OPEN_ANY_OWNER, &p);
		if (r < 0) {
			fprintf(stderr, "kvbm-shm-dump: --lock: %s: %s\n", pool, kvbm_strerror(r));
			return 1;
		}
		/* attaching reaps: a changed pool is said, not silent */
		uint32_t left = kvbm_inspect_unreaped_procs(in);
		if (dead > left)
			printf("check: attaching reaped %u dead process%s (holds dropped, "
			       "unregistered blocks freed)\n",
			       dead - left, dead - left == 1 ? "" : "es");
		/* attaching reaped the dead; with nobody else attached we are
		 * the only writer and in-flight states are violations too */
		struct kvbm_pool_info pi;
		unsigned f = KVBM_CHECK_LOCK;
		if (kvbm_pool_info(p, &pi) == 0 && pi.procs_attached == 1)
			f |= KVBM_CHECK_QUIESCENT;
		v = kvbm_pool_check(p, f, print_violation, NULL);
		kvbm_pool_close(p);
		printf("check: under the pool mutex, %s\n",
		       (f & KVBM_CHECK_QUIESCENT) ? "no other process attached"
						  : "other processes attached");
	} else {
		/* nobody alive can be writing, unless a dead owner left the
		 * mutex mid-operation (its next locker repairs) */
		int exact = live == 0 && !mv.locked;
		/* a live pool moves under a lock-free reader: a violation must
		 * persist over five passes to count */
		for (int tries = 0;; tries++) {
			int last = exact || tries == 4;
			v = kvbm_inspect_check(in, exact, last ? print_violation : NULL, NULL);
			if (v <= 0 || last)
				break;
		}
		printf("check: lock-free, %s\n",
		       exact ? "no live process attached (exact)"
			     : mv.owner_died ? "mutex owner died mid-operation; the next locker "
					       "repairs (or use --lock)"
					     : "live processes attached (use --lock for an exact check)");
	}
	if (v < 0) {
		fprintf(stderr, "kvbm-shm-dump: --check: %s\n", kvbm_strerror((int)v));
		return 1;
	}
	struct kvbm_census k;
	kvbm_inspect_census(in, &k);
	printf("check: blocks total %u = free %u + inactive %u + in use %u\n", k.total, k.free,
	       k.inactive, k.total - k.free - k.inactive);
	if (v)
		printf("check: %ld violation%s\n", v, v == 1 ? "" : "s");
	else
		printf("check: all invariants hold\n");
	return v ? 1 : 0;
}

int kvbm_dump_run(struct kvbm_inspect *in, const char *pool, const struct kvbm_dump_opts *o)
{
	int verdict = kvbm_inspect_verdict(in);

	if (o->check && !verdict)
		return run_check(in, pool, o->lock);
	if (o->json)
		print_json(in, verdict);
	else if (in->valid == 0)
		print_text(in, o->summary);
	if (verdict)
		fprintf(stderr, "kvbm-shm-dump: %s: %s\n", pool, kvbm_strerror(verdict));
	return verdict ? 1 : 0;
}
