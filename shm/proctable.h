/* SPDX-License-Identifier: Apache-2.0 */
/*
 * proctable.h - the process table: one entry per attached process. PRIVATE.
 *
 * Entries are claimed, freed and reaped only under the pool mutex. An entry
 * is ACTIVE only while its process holds the entry's OFD liveness lock: the
 * lock is taken before the entry turns ACTIVE, and dropped (by close or by
 * death) only after it is FREE or when the process is gone, so a reaper
 * that sees ACTIVE with the lock free has proof of death.
 */
#ifndef KVBM_SHM_PROCTABLE_H
#define KVBM_SHM_PROCTABLE_H

#include <stdint.h>

#include "segment.h"

/* Claims an entry for this process (reaping dead ones first).
 * Returns 0, KVBM_EPROCFULL or another negative code. */
int kvbm_proc_attach(struct kvbm_seg *seg);
/* Frees this process's entry. */
int kvbm_proc_detach(struct kvbm_seg *seg);
/* Reaps every provably dead process. Returns how many, or a negative code.
 * The liveness probes (syscalls) run before the mutex is taken. */
int kvbm_proc_reap(struct kvbm_seg *seg);
/* The same with the mutex held, probing under it: for recovery and the
 * checker's locked mode only (at most max_procs probes, each an fcntl and
 * a read of /proc/PID/stat). */
int kvbm_proc_reap_locked(struct kvbm_seg *seg);

/* The entries proven dead by a probe made without the mutex, with the
 * attachment each proof is about. */
struct kvbm_proc_dead {
	uint64_t mask;
	uint64_t gen[KVBM_MAX_PROCS];
};
/* Probes every other ACTIVE entry (no lock; syscalls). */
void kvbm_proc_probe(const struct kvbm_seg *seg, struct kvbm_proc_dead *d);
/* Mutex held: reaps the entries @d proved dead that still belong to the
 * attachment probed, and any reap left half-done. No syscall. */
int kvbm_proc_reap_proven(struct kvbm_seg *seg, const struct kvbm_proc_dead *d);
/* On EOWNERDEAD: finishes or undoes an ATTACH/DETACH/REAP the dead owner
 * left in the op record. Other ops are left to the recovery hook. */
int kvbm_proc_recover_op(struct kvbm_seg *seg, const struct kvbm_shm_op *op);
/* Number of ACTIVE entries (a snapshot; no lock). */
uint32_t kvbm_proc_count_active(const struct kvbm_seg *seg);

#endif /* KVBM_SHM_PROCTABLE_H */
