/* SPDX-License-Identifier: Apache-2.0 */
/*
 * segment.h - create, attach, validate and map a pool segment. PRIVATE.
 *
 * Concurrency rules (LMDB's lock-file protocol, with Linux OFD locks):
 *  - byte KVBM_LOCK_INIT_BYTE of the segment file is write-locked by the one
 *    process that initialises the segment, and read-locked by every attacher
 *    for as long as it is attached. Winning the write lock therefore proves
 *    nobody is attached: a segment found INITIALIZING then belongs to a dead
 *    creator and is initialised again;
 *  - the creator release-stores header.state = READY last; an attacher reads
 *    the header only once it holds the read lock, so it never sees a
 *    half-built segment;
 *  - a struct kvbm_seg belongs to the process that opened it; after fork()
 *    kvbm_seg_check() fails with KVBM_EFORKED in the child.
 */
#ifndef KVBM_SHM_SEGMENT_H
#define KVBM_SHM_SEGMENT_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "layout.h"

struct kvbm_seg;

/* Called by the mutex holder on EOWNERDEAD after the shm-level repair, with
 * the dead owner's op record. Returns 0, or a negative code to poison. */
typedef int (*kvbm_recover_fn)(struct kvbm_seg *seg, const struct kvbm_shm_op *op, void *arg);
/* Called by the mutex holder to release what dead process @idx held, before
 * its entry is freed. Must be idempotent (a reaper may die in it). */
typedef int (*kvbm_reap_fn)(struct kvbm_seg *seg, uint32_t idx, void *arg);
/* Called by a new mutex holder whose clock passed pins->due (mutex.c):
 * ends the pins whose deadline passed. Writes and clears its own op record. */
typedef void (*kvbm_expire_fn)(struct kvbm_seg *seg, void *arg);

struct kvbm_seg {
	int fd;
	int read_only;
	uint8_t *base;
	size_t size;
	struct kvbm_shm_header *hdr;
	struct kvbm_shm_config cfg; /* the header's, as validated at open: the
				     * bounds every walk uses */
	struct kvbm_shm_control *ctl;
	struct kvbm_shm_proc *procs;
	struct kvbm_shm_slot *slots;
	struct kvbm_shm_bucket *buckets;
	uint8_t *holders; /* holder tables, kvbm_holder_stride() bytes each */
	struct kvbm_shm_metrics *metrics;
	struct kvbm_shm_evict *evict;
	struct kvbm_shm_events *events; /* NULL: the pool has no event ring */
	uint32_t *tokens; /* kept token ids (KVBM_CFG_KEEP_TOKENS), or NULL */
	struct kvbm_shm_pins *pins; /* the pin region (header, then deadlines) */
	uint32_t self;       /* process-table index, UINT32_MAX if not attached */
	uint64_t attach_gen; /* of our entry */
	pid_t pid;           /* opener */
	unsigned fork_gen;   /* kvbm_fork_gen at open */
	int initialized_by_me;
	pid_t lock_tid;      /* thread holding the pool mutex through us, 0 = none */
	uint32_t hold_t0;    /* when it took the mutex, in mutex.c's ticks (holder only) */
	/* where the hold time goes (mutex.c): our metric shard's buckets
	 * (KVBM_M_HOLD_LE, the sum just before them) once attached, until
	 * then hold_scratch's; never NULL after open */
	int64_t *hold_v;
	int64_t hold_scratch[KVBM_M_HOLD_END - KVBM_M_HOLD_TICKS];
	/* KVBM_SEG_ST_*: whether hold operations may treat our holder entries
	 * as having one writer (lib/hold.c, lib/pool.h) */
	int mutex_kind;   /* kvbm_mutex_kind(), set at open */
	int one_thread;
	pthread_t thread; /* the one thread (FIXED), or the bias owner */
	int st_busy;      /* BIASED: the owner is inside a one-writer operation */
	int st_revoke;    /* BIASED: another thread wants the handle */
	/* set by the mutex holder that met an out-of-range index or a cycle
	 * in a derived structure; kvbm_seg_unlock() then repairs (recover)
	 * or poisons. Process-local, mutex holder only */
	int corrupt;
	kvbm_recover_fn recover;
	void *recover_arg;
	kvbm_reap_fn reap;
	void *reap_arg;
	kvbm_expire_fn expire;
	void *expire_arg;
	char name[KVBM_NAME_MAX + 1];
	char path[PATH_MAX];
};

enum {
	KVBM_SEG_ST_SHARED = 0, /* any thread, atomics throughout */
	KVBM_SEG_ST_FIXED = 1,  /* KVBM_OPEN_ONE_THREAD: other threads are refused */
	KVBM_SEG_ST_BIASED = 2, /* the opener's, until another thread calls */
};

/* Biases a handle to the calling thread when the kernel offers what
 * revoking it needs (membarrier); 0 or a negative errno. */
int kvbm_seg_bias(struct kvbm_seg *seg);

/* Every this many pool-mutex acquisitions, the locker reaps dead processes. */
#define KVBM_REAP_INTERVAL 1024u

/* Incremented in every forked child (pthread_atfork). */
extern unsigned kvbm_fork_gen;

/*
 * Validates @name and builds the segment's path: $KVBM_SHM_DIR (default
 * /dev/shm) + "/kvbm." + name. A leading '/' is accepted and dropped; a
 * name holding '/' is taken as a path (read-only inspection only).
 * Returns 0 or KVBM_ENAME.
 */
int kvbm_seg_path(const char *name, char *path, size_t pathlen, char *bare, int allow_path);

/* Bytes of one process's holder table (a kvbm_hold_t per slot, padded). */
/* Empties the eviction region (init and recovery; mutex held or no one
 * attached): sketch sizes, an empty forest, every ghost free. */
void kvbm_evict_init(struct kvbm_seg *seg);

static inline uint64_t kvbm_holder_stride(const struct kvbm_shm_config *cfg)
{
	/* plus two guard lines: when one process's hot entries end its
	 * table and another's begin the next one, the prefetchers pull each
	 * one's line into the other's cache, and both stores then wait for
	 * the line (two processes matching cost 40% of their speed each) */
	return ((uint64_t)cfg->block_count * sizeof(kvbm_hold_t) + KVBM_CACHELINE - 1) /
		       KVBM_CACHELINE * KVBM_CACHELINE +
	       2 * KVBM_CACHELINE;
}

/*
 * The reference's inflight gauges, derived: *mut = MUTABLE slots, *imm =
 * holds over every holder table. A lock-free snapshot, exact whenever no
 * operation is in flight; O(blocks x max_procs), meant for scrapes.
 */
void kvbm_seg_inflight(const struct kvbm_seg *seg, int64_t *mut, int64_t *imm);

/* Size and region table of a segment for @cfg. Returns 0 or -EINVAL. */
int kvbm_seg_layout(const struct kvbm_shm_config *cfg, struct kvbm_shm_region *regions,
		    uint64_t *total);

/*
 * Opens (and with KVBM_OPEN_CREATE creates or re-initialises) segment @name
 * and maps it read-write, holding the attach read lock. Does not claim a
 * process-table entry (kvbm_proc_attach() does). @cfg may be NULL without
 * CREATE. A file it did not create itself (O_EXCL) must be owned by the
 * caller, root or @cfg->uid (KVBM_EOWNER) and no wider in mode than the
 * pool's config (KVBM_EMODE); the caller must share the creator's PID
 * namespace (KVBM_EPIDNS). Returns 0 or a negative KVBM_E* / errno code.
 */
int kvbm_seg_open(struct kvbm_seg *seg, const char *name, const struct kvbm_shm_config *cfg,
		  unsigned flags, unsigned timeout_ms);

/*
 * Opens @name (or a path) read-only for inspection, without any lock: works
 * when every process that used it is dead. Fills *hdr_copy with whatever
 * header bytes the file holds. Returns 0 when the file could be opened
 * (then *valid is the validation verdict, 0 when the segment is structurally
 * valid and mapped at seg->base) or a negative errno.
 */
int kvbm_seg_open_ro(struct kvbm_seg *seg, const char *name, struct kvbm_shm_header *hdr_copy,
		     int *valid);

/* Unmaps and closes (drops every OFD lock of this open). */
void kvbm_seg_close(struct kvbm_seg *seg);

/* Unlinks segment @name: KVBM_EBADMAGIC when it is no pool (no magic, or a
 * symbolic link) and -EBUSY while attached, unless KVBM_DESTROY_FORCE. */
int kvbm_seg_destroy(const char *name, unsigned flags);

/*
 * Structural validation of a header against the file size, in the order of
 * the distinct errors: KVBM_ETRUNCATED (shorter than a header),
 * KVBM_EBADMAGIC, KVBM_EABI, KVBM_ELAYOUT, KVBM_ETRUNCATED (size differs),
 * KVBM_ECORRUPT (config or region table). The state is not looked at.
 */
int kvbm_seg_check_header(const struct kvbm_shm_header *hdr, uint64_t file_size);
/* Verdict on header.state: 0 READY, KVBM_EINITIALIZING, KVBM_EPOISONED, KVBM_ECORRUPT. */
int kvbm_seg_check_state(uint32_t state);

/*
 * Whether the file still has the size we mapped: a peer that truncated it
 * has made every touch of the lost pages a SIGBUS. One fstat, no lock, so
 * a checker or inspector can call it before walking the mapping. Returns 0,
 * KVBM_ETRUNCATED or a negative errno.
 */
int kvbm_seg_check_size(const struct kvbm_seg *seg);

/* Fails with KVBM_EFORKED in a forked child, KVBM_EPOISONED when poisoned,
 * KVBM_EREAPED when our process-table entry is no longer ours. */
int kvbm_seg_check(struct kvbm_seg *seg);
/* KVBM_EREAPED when our entry was freed or re-claimed since we attached. */
int kvbm_seg_check_entry(const struct kvbm_seg *seg);

const char *kvbm_seg_state_name(uint32_t state);
/* Directory holding the segments: $KVBM_SHM_DIR, default /dev/shm. */
const char *kvbm_shm_dir(void);
uint64_t kvbm_now_ns(void);

#endif /* KVBM_SHM_SEGMENT_H */
