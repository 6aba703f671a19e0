/* SPDX-License-Identifier: Apache-2.0 */
/*
 * liveness.h - OFD byte locks and proof of process death. PRIVATE.
 *
 * Each attacher holds an OFD write lock on byte KVBM_LOCK_LIVENESS_BASE + its
 * process-table index of the segment file. The kernel drops it when the last
 * fd of that open file description closes, i.e. when the process dies.
 * A process is declared dead only on proof: its lock is free, or its pid no
 * longer exists with the start time recorded at attach, or is a zombie (the
 * second check covers a forked child that inherited the fd and so keeps
 * the lock alive). A failure to read /proc proves nothing: alive.
 *
 * OFD locks do not conflict with locks of the same open file description:
 * a process must never probe its own entry through its own fd.
 */
#ifndef KVBM_SHM_LIVENESS_H
#define KVBM_SHM_LIVENESS_H

#include <stdint.h>
#include <sys/types.h>

#include "layout.h"

/* Takes an OFD lock (F_RDLCK/F_WRLCK) on one byte without waiting.
 * Returns 0, -EAGAIN when another open file description holds a
 * conflicting lock, or another negative errno. */
int kvbm_ofd_trylock(int fd, off_t byte, short type);
int kvbm_ofd_unlock(int fd, off_t byte);
/* Returns 1 if another open file description holds a lock on the byte that
 * conflicts with a write lock, 0 if none does, or a negative errno. */
int kvbm_ofd_probe(int fd, off_t byte);

/* Start time (clock ticks since boot) and state letter (R, S, Z...) of
 * @pid. Returns 0, -ESRCH when the pid does not exist (the only proof of
 * death), or another negative errno when /proc could not tell (EMFILE,
 * EACCES under hidepid, an unparsable line: -EIO). */
int kvbm_proc_stat(pid_t pid, uint64_t *starttime, char *state);
/* kvbm_proc_stat() without the state. */
int kvbm_proc_starttime(pid_t pid, uint64_t *starttime);

enum kvbm_liveness {
	KVBM_ALIVE = 0,
	KVBM_DEAD_LOCK_FREE = 1, /* its liveness lock is free */
	KVBM_DEAD_PID_GONE = 2,  /* pid gone or reused (start time differs) */
	KVBM_DEAD_ZOMBIE = 3,    /* exited, not yet waited for by its parent */
};

/* Decides whether the process of entry @idx is alive, probing through @fd
 * (which must not be that entry's own). Errors count as alive: death is
 * decided only on proof. */
enum kvbm_liveness kvbm_proc_liveness(int fd, uint32_t idx, const struct kvbm_shm_proc *e);
const char *kvbm_liveness_name(enum kvbm_liveness l);

#endif /* KVBM_SHM_LIVENESS_H */
