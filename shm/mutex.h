/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mutex.h - the pool's robust, process-shared mutex. PRIVATE.
 *
 * Rules:
 *  - critical sections are short: no logging, no allocation, no blocking
 *    syscall under the lock (attach's OFD lock is the one rare exception);
 *  - never unmap the segment or exec while holding it (the kernel walks the
 *    robust list through the owner's mappings: glibc BZ 14485);
 *  - a multi-step update writes the op record (control.op) first and clears
 *    it last, so that on EOWNERDEAD the next locker can finish or undo it.
 *
 * On EOWNERDEAD kvbm_seg_lock() repairs the process table, calls the
 * segment's recovery hook with the dead owner's op record, reaps dead
 * processes and only then marks the mutex consistent. If the hook fails the
 * segment is marked POISONED and the mutex left unrecoverable: every process
 * gets KVBM_EPOISONED instead of corrupt data.
 */
#ifndef KVBM_SHM_MUTEX_H
#define KVBM_SHM_MUTEX_H

#include <pthread.h>
#include <stdint.h>

struct kvbm_seg;

int kvbm_mutex_init(pthread_mutex_t *m);
/* The kind word kvbm_mutex_init() leaves in glibc's mutex on this build:
 * the lock refuses a pool whose mutex says otherwise (KVBM_ECORRUPT). */
int kvbm_mutex_kind(void);

/* The hold-time clock's ns per tick (the KVBM_M_HOLD_TICKS shard sums). */
double kvbm_mutex_ns_per_tick(void);
/* The tick (of the clock kvbm_seg_lock compares pins->due with) a little
 * before @in_ns from now; 0 when this process could not calibrate it. */
uint64_t kvbm_mutex_due(uint64_t in_ns);
/* Where the holds of @seg's mutex are counted from now on: @v is the sum,
 * the buckets follow (a metric shard from KVBM_M_HOLD_TICKS, or the
 * segment's scratch before it has a shard). A detached process keeps its
 * old shard: its last hold lands there, which nobody zeroes, ordered by
 * the mutex before the next owner's. */
void kvbm_mutex_hold_to(struct kvbm_seg *seg, int64_t *v);

/* Returns 0 (after a recovery too), KVBM_EFORKED, KVBM_EPOISONED,
 * KVBM_EDEADLK (this thread holds it already) or a negative errno. */
int kvbm_seg_lock(struct kvbm_seg *seg);
/* The same, for a caller whose kvbm_seg_check() passed earlier in the same
 * call (a pool operation's entry): a reap or poison since then is caught
 * as kvbm_seg_check() documents, by the next call (poison: after the
 * mutex is taken, below, too). Three acquisitions a cycle paid 39
 * instructions each for the second check (a-steady). */
int kvbm_seg_lock_checked(struct kvbm_seg *seg);
void kvbm_seg_unlock(struct kvbm_seg *seg);
/* With the mutex held: repairs now what kvbm_seg_unlock() would (a
 * derived structure found damaged), so the caller can retry its work.
 * Returns 1 if it repaired, 0 if nothing was damaged, KVBM_EPOISONED if
 * the repair failed (the pool is then poisoned). */
int kvbm_seg_repair(struct kvbm_seg *seg);

/* Describes the mutex word for diagnostics (glibc layout): 0 unlocked,
 * else fills *tid (0 if the owner died) and the flags. */
struct kvbm_mutex_view {
	int locked;
	int owner_died;     /* FUTEX_OWNER_DIED set, not yet recovered */
	int inconsistent;   /* taken after owner death, consistent not yet called */
	int notrecoverable; /* unlocked without consistent: permanently broken */
	int waiters;
	unsigned tid;
};
void kvbm_mutex_view(const pthread_mutex_t *m, struct kvbm_mutex_view *v);

#endif /* KVBM_SHM_MUTEX_H */
