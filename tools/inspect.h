/* SPDX-License-Identifier: Apache-2.0 */
/*
 * inspect.h - a read-only, lock-free view of a pool segment for the tools.
 * Works when every process that used the segment is dead; a live pool may
 * be changing underneath (each field is read once, atomically where shared).
 */
#ifndef KVBM_TOOLS_INSPECT_H
#define KVBM_TOOLS_INSPECT_H

#include "../shm/liveness.h"
#include "../shm/mutex.h"
#include "../shm/segment.h"

struct kvbm_inspect {
	struct kvbm_seg seg;
	struct kvbm_shm_header hdr; /* the header bytes as read */
	int valid;                  /* kvbm_seg_check_header() verdict */
	int state_rc;               /* kvbm_seg_check_state() verdict */
};

/* Returns 0 when the file could be read (see ->valid), else a negative errno
 * or KVBM_ENAME. */
int kvbm_inspect_open(struct kvbm_inspect *in, const char *name_or_path);
void kvbm_inspect_close(struct kvbm_inspect *in);
/* 0 when the segment is valid and READY, else the first problem. */
int kvbm_inspect_verdict(const struct kvbm_inspect *in);

/* Process entry @i: its state, copied, and its liveness (ACTIVE only). */
uint32_t kvbm_inspect_proc(const struct kvbm_inspect *in, uint32_t i, struct kvbm_shm_proc *out,
			   enum kvbm_liveness *live);
/* ACTIVE entries whose process is alive. */
uint32_t kvbm_inspect_live_procs(const struct kvbm_inspect *in);
/* Entries in use whose process is not known alive: what a reap may free. */
uint32_t kvbm_inspect_unreaped_procs(const struct kvbm_inspect *in);
const char *kvbm_proc_state_name(uint32_t state);
const char *kvbm_op_name(uint32_t op);
/* When the pools' directory ($KVBM_SHM_DIR, default /dev/shm) does not
 * exist, a sentence that says so, naming it, in @buf; else NULL. A missing
 * pool there is then not the point. */
const char *kvbm_shm_dir_missing(char *buf, size_t len);
/* Formats a CLOCK_REALTIME ns value as UTC ISO 8601 into buf. */
const char *kvbm_fmt_time(uint64_t ns, char *buf, size_t len);
/* The tier label of @cfg, terminated whatever the header holds, into
 * @out; *@storage gets its storage name, NULL for a label that names no
 * tier (a pool made before tiers were checked). Returns @out. */
const char *kvbm_inspect_tier(const struct kvbm_shm_config *cfg, char out[KVBM_TIER_MAX + 1],
			      const char **storage);

/* Blocks by state, as the slot array says (a lock-free snapshot). */
struct kvbm_census {
	uint32_t total, free, mutable_, staged;
	uint32_t active;   /* registered primaries a process or a live duplicate holds */
	uint32_t inactive; /* registered primaries nothing holds */
	uint32_t dups;     /* registered duplicates */
	uint32_t evicting;
	uint32_t holds[KVBM_MAX_PROCS]; /* blocks carrying each process's bit */
	uint32_t pinned; /* blocks carrying the pool's pin bit (lib/pins.c) */
	uint32_t pin_blocks, pin_tips; /* the pin region's counts */
	uint64_t pin_expired;
	int64_t metrics[KVBM_M_NSHARD]; /* shard sums */
	int64_t inflight_mutable, inflight_immutable;
	uint32_t free_count;    /* the store's own counts */
	int64_t inactive_count;
};
void kvbm_inspect_census(const struct kvbm_inspect *in, struct kvbm_census *c);

/* The invariant checker on the read-only mapping, without the mutex:
 * @exact when nobody can be writing (no live attacher, mutex not held by
 * a dead owner). Returns the number of violations. */
long kvbm_inspect_check(const struct kvbm_inspect *in, int exact, kvbm_report_fn fn, void *arg);

#endif /* KVBM_TOOLS_INSPECT_H */
