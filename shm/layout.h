/* SPDX-License-Identifier: Apache-2.0 */
/*
 * layout.h - the shared-memory layout of a kvbm pool segment. PRIVATE.
 *
 * Every struct in this file is ABI: it is what several processes, possibly
 * built at different times, read and write at once. Rules:
 *  - no pointers, only 32/64-bit indices and offsets, bounds-checked on read;
 *  - every size and offset is pinned below with a static assert, and folded
 *    into the layout hash stored in the header (kvbm_layout_hash());
 *  - a change here bumps KVBM_ABI_MAJOR (incompatible) or _MINOR (additive).
 *
 * Segment map (each region 64-byte aligned; the header has its own page):
 *   header | control block | process table | ... (regions added by lib/)
 */
#ifndef KVBM_SHM_LAYOUT_H
#define KVBM_SHM_LAYOUT_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>

#include "kvbm.h"

#define KVBM_SHM_MAGIC 0x00314d48534d424bull /* "KBMSHM1\0" little-endian */
/* 2: resurrection windows in the metric shards, index alternate bucket */
#define KVBM_ABI_MAJOR 2
#define KVBM_ABI_MINOR 0
#define KVBM_CACHELINE 64
#define KVBM_PAGE 4096
#define KVBM_HUGEPAGE (2u << 20)

/* header.state: READY is release-stored last by the creator */
enum kvbm_seg_state {
	KVBM_SEG_EMPTY = 0, /* zero-filled, nothing written yet */
	KVBM_SEG_INITIALIZING = 0x494e4954, /* "INIT" */
	KVBM_SEG_READY = 0x52454459,        /* "READY" */
	KVBM_SEG_POISONED = 0x504f4953,     /* "POIS": repair failed, refuse all */
};

/* region table indices */
enum kvbm_region {
	KVBM_REGION_CONTROL = 0,
	KVBM_REGION_PROCS = 1,
	KVBM_REGION_SLOTS = 2,
	KVBM_REGION_REGISTRY = 3,
	KVBM_REGION_HOLDERS = 4, /* per-process holder tables */
	KVBM_REGION_METRICS = 5, /* per-process metric shards */
	KVBM_REGION_NUSED = 6,   /* regions this ABI defines */
	KVBM_REGION_MAX = 16,  /* room in the header */
};

/* OFD lock bytes of the segment file (see shm/segment.c) */
#define KVBM_LOCK_INIT_BYTE 0          /* write: initialising; read: attached */
#define KVBM_LOCK_LIVENESS_BASE 1      /* + proc index: held by that attacher */

struct kvbm_shm_config {
	uint32_t block_count;
	uint32_t block_size;
	uint32_t max_procs;
	uint32_t mode;
	uint32_t gid;   /* UINT32_MAX: creator's */
	uint32_t flags; /* KVBM_CFG_* */
	uint32_t dup_policy;       /* KVBM_DUP_* */
	uint32_t backend;          /* KVBM_BACKEND_* */
	uint32_t reset_on_release; /* pool-wide default of the per-slot flag */
	char tier[KVBM_TIER_MAX + 1]; /* metrics `pool` label */
	uint32_t reserved[3];
};

struct kvbm_shm_region {
	uint64_t offset;
	uint64_t size;
};

struct kvbm_shm_header {
	uint64_t magic;
	uint16_t abi_major;
	uint16_t abi_minor;
	uint32_t header_size;
	uint64_t layout_hash;
	uint64_t segment_size;
	uint64_t instance_id; /* random per (re)initialisation */
	uint32_t state;       /* enum kvbm_seg_state; atomic */
	uint32_t nregions;
	uint64_t created_ns;  /* CLOCK_REALTIME at initialisation */
	uint32_t creator_pid;
	uint32_t reserved0;
	char name[KVBM_NAME_MAX + 8];
	struct kvbm_shm_config config;
	struct kvbm_shm_region regions[KVBM_REGION_MAX];
	uint8_t pad[KVBM_PAGE - 64 - (KVBM_NAME_MAX + 8) - 64 - 16 * KVBM_REGION_MAX];
};

/*
 * Op record: written by the mutex holder before a multi-step update and
 * cleared after it, so that the next locker, on EOWNERDEAD, knows what the
 * dead owner was doing and can finish or undo it.
 */
enum kvbm_op {
	KVBM_OP_NONE = 0,
	KVBM_OP_ATTACH = 1, /* arg0 = proc index being claimed */
	KVBM_OP_DETACH = 2, /* arg0 = proc index being freed */
	KVBM_OP_REAP = 3,   /* arg0 = proc index being reaped */
	/* block operations: every one leaves the slot array consistent at each
	 * step; recovery rebuilds the derived state (lists, counts, index)
	 * from it, so arg0 only says which slot the owner was working on */
	KVBM_OP_ALLOCATE = 4,
	KVBM_OP_REGISTER = 5,
	KVBM_OP_RELEASE = 6,
	KVBM_OP_EVICT = 7,
};

struct kvbm_shm_op {
	uint32_t op;
	uint32_t step;
	uint32_t proc; /* index of the process that wrote it */
	uint32_t arg0;
	uint64_t arg1;
	uint64_t arg2;
};

struct kvbm_shm_control {
	_Alignas(KVBM_CACHELINE) pthread_mutex_t mutex; /* robust, pshared, NORMAL, no PI */
	/* below, on their own lines: written only by the mutex holder */
	_Alignas(KVBM_CACHELINE) uint32_t owner_pid; /* diagnostics: 0 = none */
	uint32_t owner_proc; /* its process-table index */
	uint64_t lock_count; /* acquisitions, drives periodic reaping */
	struct kvbm_shm_op op;
	uint64_t recoveries;       /* EOWNERDEAD recoveries completed */
	uint64_t last_recovery_ns; /* CLOCK_REALTIME of the last one */
	uint64_t reaps;            /* dead processes reaped */
	uint64_t attach_gen;       /* last attach generation handed out */
	/* pool lists, links in the slots (slot + 1, 0 = none); mutex */
	uint32_t free_head, free_tail; /* RESET slots, FIFO */
	uint32_t free_count;           /* read lock-free (relaxed) for gauges */
	uint32_t lru_head, lru_tail;   /* eviction order: oldest release first */
	uint32_t lru_len;              /* entries, stale ones included */
	uint64_t tick;                 /* insertion counter of the eviction order */
	uint64_t index_full;           /* registrations that found no index entry */
	/* slots counted inactive (holders == KVBM_HOLD_INACTIVE): raised under
	 * the mutex, lowered lock-free by the pin that resurrects one */
	_Alignas(KVBM_CACHELINE) int64_t inactive;
};

enum kvbm_proc_state {
	KVBM_PROC_FREE = 0,
	KVBM_PROC_ACTIVE = 1,
	KVBM_PROC_RECLAIMING = 2, /* being reaped (under the mutex) */
};

/* One process-table entry, one cache line. Written under the pool mutex. */
struct kvbm_shm_proc {
	uint32_t state; /* enum kvbm_proc_state; atomic */
	uint32_t pid;
	uint64_t starttime;  /* /proc/<pid>/stat field 22, clock ticks since boot */
	uint64_t attach_gen; /* control.attach_gen at attach: unique per attach */
	uint64_t attach_ns;  /* CLOCK_REALTIME at attach */
	uint32_t uid;
	uint32_t reserved[7];
};

/*
 * Slot state word (one 64-bit atomic): generation (32) | reserved (16) |
 * owner process (8) | flags (4) | state (4). The generation increments on
 * every return to RESET, so a handle or index entry (slot, generation)
 * goes stale the moment its slot is recycled; it doubles as the seqcount
 * that makes a reader's key read untorn.
 */
enum kvbm_slot_state {
	KVBM_SLOT_RESET = 0,
	KVBM_SLOT_MUTABLE = 1,    /* allocated, owned, being filled */
	KVBM_SLOT_STAGED = 2,     /* key set, owned, not in the registry */
	KVBM_SLOT_REGISTERED = 3, /* matchable; active iff holders != 0 */
	KVBM_SLOT_EVICTING = 4,   /* transient, mutex held */
};
#define KVBM_SLOT_F_PRIMARY 0x1u /* the registry's entry for its key */

static inline uint64_t kvbm_slot_word(uint32_t gen, uint32_t owner, uint32_t flags,
				      uint32_t state)
{
	return (uint64_t)gen << 32 | (uint64_t)(owner & 0xff) << 8 | (flags & 0xf) << 4 |
	       (state & 0xf);
}
static inline uint32_t kvbm_slot_gen(uint64_t w) { return (uint32_t)(w >> 32); }
static inline uint32_t kvbm_slot_owner(uint64_t w) { return (uint32_t)(w >> 8) & 0xff; }
static inline uint32_t kvbm_slot_flags(uint64_t w) { return (uint32_t)(w >> 4) & 0xf; }
static inline uint32_t kvbm_slot_state(uint64_t w) { return (uint32_t)w & 0xf; }

/*
 * holders: bit p (p < KVBM_MAX_PROCS) = attached process p holds the slot;
 * KVBM_HOLD_INACTIVE = the slot is counted in control.inactive. That bit is
 * set only under the mutex on a mask without process bits, and cleared by
 * whoever takes the slot out of the inactive pool (the pin that resurrects
 * it, or the evictor), the one whose RMW saw it set adjusting the count. It
 * takes no part in the pin/evict handshake, which looks at process bits only.
 */
#define KVBM_HOLD_INACTIVE (1ull << 63)
#define KVBM_HOLD_PROCS (KVBM_HOLD_INACTIVE - 1)

/* slot.list: which pool list the slot is on; mutex */
enum kvbm_slot_list {
	KVBM_LIST_NONE = 0,
	KVBM_LIST_FREE = 1,
	KVBM_LIST_LRU = 2,
};

/* One block slot, one cache line. */
struct kvbm_shm_slot {
	uint64_t state;   /* the state word above; atomic */
	uint64_t holders; /* process bits + KVBM_HOLD_INACTIVE; atomic */
	uint64_t key_hi;  /* the 128-bit sequence hash (PLH); written while */
	uint64_t key_lo;  /* MUTABLE/STAGED by its owner, stable while REGISTERED */
	uint32_t next;    /* pool list links (slot + 1, 0 = none); mutex */
	uint32_t prev;
	uint32_t primary; /* duplicates: slot + 1 of their primary; mutex */
	uint32_t dups;    /* primaries: live duplicates keeping it active; mutex */
	uint64_t tick;    /* eviction order; mutex */
	uint32_t list;    /* enum kvbm_slot_list; mutex */
	uint32_t reset_on_release; /* per-slot flag, last writer wins; atomic */
};

/*
 * Holder table entry of process p for slot s (u16, written only by p's
 * threads; read and cleared by the reaper after p's death). Carries, in one
 * word so that clearing one never drops another (rule 7): the count of
 * holds, OWNED (p allocated the slot and has not registered it yet) and
 * TENTATIVE (a thread of p is between its holder-bit fetch_or and the
 * commit or undo of a pin).
 */
typedef uint16_t kvbm_hold_t;
#define KVBM_HOLD_COUNT 0x3fffu /* holds by this process, saturating */
#define KVBM_HOLD_OWNED 0x4000u
#define KVBM_HOLD_TENT 0x8000u

/*
 * Metric shard: one per process-table entry, written lock-free by the
 * entry's current process only (the reaper adjusts a dead one's gauges
 * under the mutex). Shards are never zeroed: a snapshot sums them all.
 */
enum kvbm_metric_idx {
	KVBM_M_ALLOCATIONS,
	KVBM_M_ALLOCATIONS_FROM_RESET,
	KVBM_M_EVICTIONS,
	KVBM_M_REGISTRATIONS,
	KVBM_M_DUPLICATE_BLOCKS,
	KVBM_M_REGISTRATION_DEDUP,
	KVBM_M_STAGINGS,
	KVBM_M_MATCH_HASHES_REQUESTED,
	KVBM_M_MATCH_BLOCKS_RETURNED,
	KVBM_M_SCAN_HASHES_REQUESTED,
	KVBM_M_SCAN_BLOCKS_RETURNED,
	KVBM_M_EAGER_PRIMARY_TO_INACTIVE,
	KVBM_M_ALLOCATE_ATOMIC_ROLLBACK,
	KVBM_M_RELEASE_PRIMARY_NOOP,
	KVBM_M_RELEASE_DUPLICATE_NOOP,
	/* the inflight gauges are not here: they are derived from the slot
	 * array and holder tables (kvbm_seg_inflight), so no crash window
	 * between a slot change and its metric update can skew them */
	KVBM_M_NSHARD,
	/* not metrics: this process's resurrection windows (lib/hold.c),
	 * begun and ended, which a recount of the inactive pool validates */
	KVBM_M_RES_BEGIN = KVBM_M_NSHARD,
	KVBM_M_RES_END,
};
struct kvbm_shm_metrics {
	int64_t v[24];
};

/*
 * Registry index bucket: 8 entries {tag, slot + 1, low 16 bits of the
 * slot's generation at registration}. Two candidate buckets per key, no
 * displacement, load <= 50%: entries never move, so a lock-free reader
 * needs no retry loop. slot == 0 marks an empty entry.
 */
#define KVBM_BUCKET_ENTRIES 8
struct kvbm_shm_bucket {
	uint16_t tag[KVBM_BUCKET_ENTRIES];
	uint32_t slot[KVBM_BUCKET_ENTRIES];
	uint16_t gen_lo[KVBM_BUCKET_ENTRIES];
};

/* Buckets for @blocks keys: a power of two with 8 * buckets >= 2 * blocks
 * (load <= 50%), at least 2 so that a key's two buckets differ. */
static inline uint32_t kvbm_index_buckets(uint32_t blocks)
{
	uint32_t n = 2;

	while ((uint64_t)n * KVBM_BUCKET_ENTRIES < 2ull * blocks)
		n <<= 1;
	return n;
}

_Static_assert(sizeof(struct kvbm_shm_config) == 64, "config size");
_Static_assert(sizeof(struct kvbm_shm_slot) == KVBM_CACHELINE, "slot is one line");
_Static_assert(offsetof(struct kvbm_shm_slot, holders) == 8, "slot.holders");
_Static_assert(offsetof(struct kvbm_shm_slot, key_hi) == 16, "slot.key");
_Static_assert(sizeof(struct kvbm_shm_bucket) == KVBM_CACHELINE, "bucket is one line");
_Static_assert(sizeof(struct kvbm_shm_header) == KVBM_PAGE, "header is one page");
_Static_assert(offsetof(struct kvbm_shm_header, state) == 40, "header.state");
_Static_assert(offsetof(struct kvbm_shm_header, name) == 64, "header.name");
_Static_assert(offsetof(struct kvbm_shm_header, config) == 200, "header.config");
_Static_assert(offsetof(struct kvbm_shm_header, regions) == 264, "header.regions");
_Static_assert(sizeof(struct kvbm_shm_op) == 32, "op record");
_Static_assert(sizeof(struct kvbm_shm_control) % KVBM_CACHELINE == 0, "control lines");
_Static_assert(offsetof(struct kvbm_shm_control, owner_pid) % KVBM_CACHELINE == 0,
	       "mutex on its own line");
_Static_assert(sizeof(struct kvbm_shm_proc) == KVBM_CACHELINE, "proc entry is one line");
_Static_assert(KVBM_MAX_PROCS <= 63, "holder mask: 63 process bits + INACTIVE");
_Static_assert(sizeof(struct kvbm_shm_metrics) == 3 * KVBM_CACHELINE, "metric shard lines");
_Static_assert(KVBM_M_RES_END < 24, "metric shard room");
_Static_assert(offsetof(struct kvbm_shm_control, inactive) % KVBM_CACHELINE == 0,
	       "inactive count on its own line");

/* Hash over every size/offset above plus the ABI facts they depend on. */
uint64_t kvbm_layout_hash(void);

#endif /* KVBM_SHM_LAYOUT_H */
