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

/* Every process that maps the segment must order its loads and stores as
 * x86-64 does (TSO): the lock-free readers' seqlock-style key reads and
 * the one-writer hold paths have no fences of their own (see kvbm.h). */
#if !defined(__x86_64__)
#error "kvbm-shm supports x86-64 only (its lock-free paths rely on TSO)"
#endif

#define KVBM_SHM_MAGIC 0x00314d48534d424bull /* "KBMSHM1\0" little-endian */
/* 2: resurrection windows in the metric shards, index alternate bucket
 * 3: eviction region (TinyLFU sketch, lineage forest), four eviction lists
 * 7: control.recounts_deferred and recount_pending (in the layout hash);
 *    header.pidns and config.uid in what were reserved words
 * 8: the index's key hash (lib/index.h, kvbm_index_hash) and its stash
 * 9: pins held by the pool (lib/pins.c): the pin region, config.pin_share
 *    in what was reserved_cfg, the POOL holder bit (KVBM_MAX_PROCS 62)
 * 10: release hints: the hint kind in a slot's tick, their accuracy counters
 *    in the eviction header's second line
 * 11: lineage nodes carry a parent hint (32 bytes), evict.twins
 * 12: the pin region's expiry heap: (deadline, slot) entries, one per
 *     pinned block, and each slot's place in it (pins.heap_len); adapt's
 *     miniature simulations in the eviction region; hint record's seen
 * 13: lineage (Tick) leaves in insertion order sit in the run,
 *     control.lists[0], ahead of the heap (lnode.hpos KVBM_LN_RUN)
 * 14: adapt's six miniatures (lfru's clock, the clock filter's uses, ARC's
 *     target and second history), its heap order in evict.qtarget
 * 15: lineage hash chains are doubly linked (lnode.hprev, was reserved),
 *     two chain heads per block (were one)
 * 16: the hint record counts releases (a third line; the evict header four) */
#define KVBM_ABI_MAJOR 16
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
	KVBM_REGION_EVICT = 6,   /* TinyLFU sketch and lineage forest (lib/evict.c) */
	KVBM_REGION_EVENTS = 7,  /* the event ring (lib/events.c) */
	KVBM_REGION_TOKENS = 8,  /* kept token ids per slot (KVBM_CFG_KEEP_TOKENS) */
	KVBM_REGION_PINS = 9,    /* pins held by the pool: deadlines per slot (lib/pins.c) */
	KVBM_REGION_NUSED = 10,  /* regions this ABI defines */
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
	uint8_t mlru_thresholds[4];  /* multi-level LRU: 3 ascending, 4th 0 */
	uint32_t sketch_log2;        /* TinyLFU capacity 2^n counters, 0 = none */
	uint32_t uid; /* owner the creator gave the file, UINT32_MAX: itself. A
		       * record only: trust comes from the attacher's own config */
	uint32_t event_log2; /* event ring of 2^n entries, 0 = no events */
	uint32_t pin_share;  /* percent of block_count pins may hold, 0..100 */
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
	/* inode of the creator's /proc/self/ns/pid (0 = unknown): pids and
	 * start times in the process table mean something only there */
	uint32_t pidns;
	char name[KVBM_NAME_MAX + 8];
	struct kvbm_shm_config config;
	struct kvbm_shm_region regions[KVBM_REGION_MAX];
	uint8_t pad[KVBM_PAGE - 64 - (KVBM_NAME_MAX + 8) - sizeof(struct kvbm_shm_config) -
		    16 * KVBM_REGION_MAX];
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
	KVBM_OP_PIN = 8, /* pin, unpin or expiry (lib/pins.c); arg0 = slot */
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
	/* eviction lists (lib/evict.c): LRU and FIFO use list 0, multi-level
	 * LRU lists 0-3 (cold to very hot), lineage the Fifo leaf order in 0.
	 * Entries may be stale (resurrected): allocation drops them lazily */
	struct kvbm_shm_list {
		uint32_t head, tail, len;
	} lists[4];
	uint64_t tick;                 /* insertion counter of the eviction order */
	uint64_t index_full;           /* registrations that found no index entry */
	/* recounts of the inactive pool given up because a live process sat
	 * in a resurrection window past the wait's bound (stopped, preempted:
	 * lib/store.c); the count stays over by what the dead left, and the
	 * next reap or short allocation tries again while pending is set */
	uint64_t recounts_deferred;
	uint32_t recount_pending;
	uint32_t reserved_ctl;
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
 * Slot state word (one 64-bit atomic): generation (48) | owner process (8)
 * | flags (4) | state (4). The generation increments on every return to
 * RESET, so a handle or index entry (slot, generation) goes stale the
 * moment its slot is recycled; it doubles as the seqcount that makes a
 * reader's key read untorn. 48 bits: a slot reused as fast as the mutex
 * allows (15 M times a second measured) wraps after 200 days, where 32
 * bits wrapped after 5 minutes and let a kept stale handle validate.
 */
enum kvbm_slot_state {
	KVBM_SLOT_RESET = 0,
	KVBM_SLOT_MUTABLE = 1,    /* allocated, owned, being filled */
	KVBM_SLOT_STAGED = 2,     /* key set, owned, not in the registry */
	KVBM_SLOT_REGISTERED = 3, /* matchable; active iff holders != 0 */
	KVBM_SLOT_EVICTING = 4,   /* transient, mutex held */
};
#define KVBM_SLOT_F_PRIMARY 0x1u /* the registry's entry for its key */

#define KVBM_GEN_MASK ((1ull << 48) - 1)
static inline uint64_t kvbm_slot_word(uint64_t gen, uint32_t owner, uint32_t flags,
				      uint32_t state)
{
	return (gen & KVBM_GEN_MASK) << 16 | (uint64_t)(owner & 0xff) << 8 | (flags & 0xf) << 4 |
	       (state & 0xf);
}
static inline uint64_t kvbm_slot_gen(uint64_t w) { return w >> 16; }
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
/*
 * KVBM_HOLD_POOL: the pool holds the slot (a pin with a deadline, lib/pins.c).
 * It stands for no process, so no reaper ever clears it: only the mutex
 * holder sets and clears it, and it is set exactly while the slot's
 * deadline in the pin region is not 0. It is in KVBM_HOLD_PROCS, the bits
 * that keep a slot active: the evictor's handshake, settle and recovery
 * treat it as one more holder; what walks process entries uses
 * KVBM_HOLD_PROCBITS.
 */
#define KVBM_HOLD_POOL (1ull << 62)
#define KVBM_HOLD_PROCS (KVBM_HOLD_INACTIVE - 1)
#define KVBM_HOLD_PROCBITS (KVBM_HOLD_POOL - 1)

/* slot.list: which pool structure the slot is in; mutex */
enum kvbm_slot_list {
	KVBM_LIST_NONE = 0,
	KVBM_LIST_FREE = 1,
	KVBM_LIST_LRU = 2,     /* + level (0-3): control.lists[level] */
	KVBM_LIST_LINEAGE = 6, /* a node of the lineage forest */
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
	/* how long this process held the pool mutex (shm/mutex.c): the sum
	 * in its clock's ticks (kvbm_mutex_ns_per_tick), and how many
	 * critical sections took at most 1, 4, 16, 64, 256 us and longer
	 * (each bucket alone, not cumulative: their sum is the count);
	 * written by the holder only. Room the shards had: KVBM_M_NSHARD,
	 * and so the layout hash, is unchanged */
	KVBM_M_HOLD_TICKS,
	KVBM_M_HOLD_LE,
	KVBM_M_HOLD_END = KVBM_M_HOLD_LE + 6,
};
struct kvbm_shm_metrics {
	int64_t v[24];
};

/*
 * Registry index bucket: 8 entries {tag, slot + 1, low 16 bits of the
 * slot's generation at registration}. Two candidate buckets per key, no
 * displacement, load <= 25%, and a stash (below): entries never move, so a
 * lock-free reader needs no retry loop. slot == 0 marks an empty entry.
 */
#define KVBM_BUCKET_ENTRIES 8
struct kvbm_shm_bucket {
	uint16_t tag[KVBM_BUCKET_ENTRIES];
	uint32_t slot[KVBM_BUCKET_ENTRIES];
	uint16_t gen_lo[KVBM_BUCKET_ENTRIES];
};

/* Buckets for @blocks keys: a power of two with 8 * buckets >= 4 * blocks
 * (load <= 25%), at least 2 so that a key's two buckets differ. Without
 * displacement a key finds both its buckets full with the chance that two
 * independent 8-entry buckets are: at 35% load (50% rounded down by the
 * power of two) that was 11 registrations in 186,638 of a trace replay,
 * each a block nobody could match; at 25% it is about 50 times rarer. */
static inline uint32_t kvbm_index_buckets(uint32_t blocks)
{
	uint32_t n = 2;

	while ((uint64_t)n * KVBM_BUCKET_ENTRIES < 4ull * blocks)
		n <<= 1;
	return n;
}

/*
 * The stash: KVBM_INDEX_STASH_BUCKETS more buckets after the table, for the
 * keys whose two buckets were full, and one line whose first word counts
 * the entries in them. Readers search it only when both buckets miss and
 * the count is not 0; its entries never move either. Without it a key had
 * a chance in about a million to find both buckets full at 25% load, and
 * such a block was registered but never matched (issue 18).
 */
#define KVBM_INDEX_STASH_BUCKETS 8
struct kvbm_shm_stash_head {
	uint32_t used; /* stash entries; mutex holders write it */
	uint32_t pad[15];
};

/* Bytes of the registry region for @blocks: table, stash, stash head. */
static inline uint64_t kvbm_index_region_size(uint32_t blocks)
{
	return ((uint64_t)kvbm_index_buckets(blocks) + KVBM_INDEX_STASH_BUCKETS) *
		       sizeof(struct kvbm_shm_bucket) +
	       sizeof(struct kvbm_shm_stash_head);
}

_Static_assert(sizeof(struct kvbm_shm_stash_head) == KVBM_CACHELINE, "stash head is one line");
_Static_assert(sizeof(struct kvbm_shm_config) == 72, "config size");
_Static_assert(sizeof(struct kvbm_shm_slot) == KVBM_CACHELINE, "slot is one line");
_Static_assert(offsetof(struct kvbm_shm_slot, holders) == 8, "slot.holders");
_Static_assert(offsetof(struct kvbm_shm_slot, key_hi) == 16, "slot.key");
_Static_assert(sizeof(struct kvbm_shm_bucket) == KVBM_CACHELINE, "bucket is one line");
_Static_assert(sizeof(struct kvbm_shm_header) == KVBM_PAGE, "header is one page");
_Static_assert(offsetof(struct kvbm_shm_header, state) == 40, "header.state");
_Static_assert(offsetof(struct kvbm_shm_header, pidns) == 60, "header.pidns");
_Static_assert(offsetof(struct kvbm_shm_header, name) == 64, "header.name");
_Static_assert(offsetof(struct kvbm_shm_config, uid) == 60, "config.uid");
_Static_assert(offsetof(struct kvbm_shm_header, config) == 200, "header.config");
_Static_assert(offsetof(struct kvbm_shm_header, regions) == 272, "header.regions");
_Static_assert(sizeof(struct kvbm_shm_op) == 32, "op record");
_Static_assert(sizeof(struct kvbm_shm_control) % KVBM_CACHELINE == 0, "control lines");
_Static_assert(offsetof(struct kvbm_shm_control, owner_pid) % KVBM_CACHELINE == 0,
	       "mutex on its own line");
_Static_assert(sizeof(struct kvbm_shm_proc) == KVBM_CACHELINE, "proc entry is one line");
_Static_assert(KVBM_MAX_PROCS <= 62, "holder mask: 62 process bits + POOL + INACTIVE");
_Static_assert(sizeof(struct kvbm_shm_metrics) == 3 * KVBM_CACHELINE, "metric shard lines");
_Static_assert(KVBM_M_HOLD_END <= 24, "metric shard room");
_Static_assert(offsetof(struct kvbm_shm_control, inactive) % KVBM_CACHELINE == 0,
	       "inactive count on its own line");

/*
 * Eviction region: a header, the TinyLFU sketch (sketch_words u64, 16
 * 4-bit counters each), then for the lineage backends the forest: one node
 * per slot (node s = slot s, while inactive) plus ghost nodes (parents
 * known only by key), hash chains by (position, fragment) and the 4-ary
 * heap of leaves by priority (children of i at 4i+1..4i+4, one cache line:
 * half the levels of a binary heap, and each level one line). All under the pool mutex except the sketch,
 * which any process touches lock-free.
 */
struct kvbm_shm_evict {
	_Alignas(KVBM_CACHELINE) uint64_t sketch_size; /* increments since the last
							* halving; atomic */
	uint64_t sketch_limit; /* halve at this many (10 x capacity) */
	uint32_t sketch_words;
	uint32_t lin_nodes;    /* slots + ghosts */
	uint32_t lin_buckets;  /* hash heads, a power of two */
	uint32_t ghost_free;   /* free ghost nodes, chained by hnext (node + 1) */
	uint32_t nghosts;      /* ghosts in use */
	uint32_t nheap;        /* leaves in the heap */
	uint32_t orphans;      /* nodes left without their parent since the forest
				* was last emptied (ghosts ran out): child counts
				* are then approximate, which only blurs the order */
	uint32_t nreal;        /* real nodes in the forest: with no ghosts either,
				* it is empty and the orphans are gone */
	/* queue backends (lib/evict_queue.c) */
	uint64_t qtick;        /* their own insertion counter (slot ticks carry
				* queue bits, see KVBM_QT_*) */
	uint32_t qtarget;      /* ARC: the target size of T1, 0..block_count;
				* LeCaR: the LRU expert's weight, 0..KVBM_LECAR_ONE;
				* adapt: its leaf heap's order (bit 0: lfru's,
				* else LFU's) and the pool turnover it last
				* changed in (the rest), any value legal */
	uint32_t twins;        /* nonzero once two nodes shared a key (distinct
				* hashes may) since the forest was last empty:
				* while clear, a node with a key is the only
				* one, so a hint that has the key is exact */
	/* release hints (lib/rhint.c): how each kind fared on a control
	 * sample of the hinted blocks ordered as if unhinted. Any content is
	 * legal: every read is clamped, and a wrong count only misweighs
	 * hints until the halving washes it out */
	_Alignas(KVBM_CACHELINE) struct kvbm_shm_hintstat {
		/* per KVBM_HINT_*: hit again while inactive, by age then in
		 * eighths of the horizon (the last: 7/8 and older) */
		uint32_t reused[KVBM_HINT_COUNT][8];
		uint32_t unused[3]; /* per KVBM_HINT_*: evicted without a hit */
		/* per KVBM_HINT_*: the releases those outcomes come from,
		 * counted as they enter the order (a release's blocks are hit
		 * or evicted together, so the counts vary as draws of this
		 * many, not of the blocks) */
		uint32_t releases[3];
		uint32_t seen;      /* nonzero once a release was hinted: until
				     * then nothing is counted, so a pool that
				     * never hints pays nothing per block */
		uint64_t horizon;   /* age at eviction of a block in the unhinted
				     * order, in ticks x 16, a running mean */
		uint64_t outcomes;  /* outcomes counted, ever (diagnostics) */
	} hint;
};

/* Flags share the word of the position (24 bits: KVBM_PLH_MAX_POSITION). */
#define KVBM_LN_POS 0xffffffu
#define KVBM_LN_USED (0x1u << 24)   /* in the forest */
#define KVBM_LN_GHOST (0x2u << 24)  /* a parent known by key only */
#define KVBM_LN_LINKED (0x4u << 24) /* counted in its parent's nchild */

/*
 * A real node (node s = slot s) keeps no copy of what its slot has: its
 * parent fragment comes from the slot's key, its priority from the slot's
 * tick. A ghost's parent fragment is in the ghost's entry of the pfrag
 * array. Nodes find their parent by key; par remembers where the parent
 * was, and is used only while that node still has the parent's key and
 * evict.twins is clear (then it is the node a lookup would find), so any
 * content is legal and a node turned ghost never touches its children.
 * 32 bytes: no node straddles a cache line.
 */
struct kvbm_shm_lnode {
	uint64_t frag;   /* key: the fragment its children carry */
	uint32_t pos_fl; /* position | KVBM_LN_* flags */
	uint32_t nchild; /* nodes keyed under it */
	uint32_t hnext;  /* hash chain or ghost free list: node + 1 */
	uint32_t hpos;   /* heap index + 1 while a leaf in the heap, or KVBM_LN_RUN */
	uint32_t par;    /* a hint: its parent's node + 1, or 0 */
	uint32_t hprev;  /* the node before it in its hash chain + 1, or 0: its head */
};

/* hpos of a lineage (Tick) leaf in the run, control.lists[0]: never a heap
 * index + 1, which stays <= the slot count (lib/evict.c, "the run") */
#define KVBM_LN_RUN UINT32_MAX

/* A heap entry carries its priority, so sifting never leaves the heap. */
struct kvbm_shm_hent {
	uint64_t prio; /* lower goes first; ties to the lower node */
	uint32_t node;
	uint32_t reserved;
};
_Static_assert(sizeof(struct kvbm_shm_evict) == 4 * KVBM_CACHELINE, "evict header lines");
_Static_assert(sizeof(struct kvbm_shm_hintstat) <= 3 * KVBM_CACHELINE, "hint stats lines");
_Static_assert(KVBM_HINT_COUNT == 3, "a count per hint kind");
_Static_assert(offsetof(struct kvbm_shm_evict, hint) == KVBM_CACHELINE, "hint stats line");
_Static_assert(sizeof(struct kvbm_shm_lnode) == 32, "lineage node");
_Static_assert(sizeof(struct kvbm_shm_hent) == 16, "leaf heap entry");

static inline int kvbm_backend_is_lineage(uint32_t b)
{
	return b == KVBM_BACKEND_LINEAGE || b == KVBM_BACKEND_LINEAGE_FIFO ||
	       b == KVBM_BACKEND_LFRU;
}

/* The published policies adapted to the prefix tree (lib/evict_queue.c):
 * up to three queues of all inactive blocks in control.lists, the lineage
 * forest beside them to tell leaves, and (S3-FIFO, ARC) a ghost table. */
static inline int kvbm_backend_is_queued(uint32_t b)
{
	return b == KVBM_BACKEND_S3FIFO || b == KVBM_BACKEND_ARC || b == KVBM_BACKEND_WTINYLFU ||
	       b == KVBM_BACKEND_LECAR || b == KVBM_BACKEND_ADAPT;
}

/* A heap of the forest's leaves: lineage Tick and lfru by their priority,
 * LeCaR's LFU expert by frequency (lineage-fifo has it unused). */
static inline int kvbm_backend_has_heap(uint32_t b)
{
	return kvbm_backend_is_lineage(b) || b == KVBM_BACKEND_LECAR || b == KVBM_BACKEND_ADAPT;
}

static inline int kvbm_backend_has_forest(uint32_t b)
{
	return kvbm_backend_is_lineage(b) || kvbm_backend_is_queued(b);
}

/*
 * A queued block's slot tick: (queue tick << 4) | (frequency << 2) | queue.
 * The queue tick (evict.qtick) only grows, and a block gets a new one
 * whenever it moves to a queue's tail, so along each queue the ticks
 * increase: recovery, which reinserts the inactive blocks in tick order,
 * rebuilds every queue in its order, with its frequency bits.
 */
#define KVBM_LECAR_ONE (1u << 20)
/* The other backends' slot tick: (insertion counter << 3) | CONTROL |
 * release hint (KVBM_HINT_*, as it was when the block became inactive), so
 * that the hint survives a recovery with the order. CONTROL: the block is
 * in the control sample, ordered as if unhinted (lib/rhint.c). */
#define KVBM_TICK_HINT 0x3u
#define KVBM_TICK_CONTROL 0x4u
#define KVBM_TICK_SHIFT 3
#define KVBM_QT_QUEUE 0x3u
#define KVBM_QT_FREQ_SHIFT 2
#define KVBM_QT_SHIFT 4

/* The ghost table of S3-FIFO, ARC and LeCaR: buckets of eight entries (one cache
 * line), each (fingerprint 30 | list 2 | eviction stamp 32); an entry is
 * live while its list has had fewer than its window's evictions since.
 * Any content is legal: a wrong entry misplaces one insertion, no more. */
struct kvbm_shm_gbucket {
	uint64_t e[8];
};
struct kvbm_shm_ghosthdr {
	_Alignas(KVBM_CACHELINE) uint32_t stamp[4]; /* evictions into each list */
};

/* Hash chain of lineage key (@pos, @frag) among @buckets (a power of two). */
static inline uint32_t kvbm_lineage_bucket(uint32_t pos, uint64_t frag, uint32_t buckets)
{
	uint64_t h = (frag ^ ((uint64_t)pos << 40 | pos)) * 0x517cc1b727220a95ull;

	return (uint32_t)(h >> 32) & (buckets - 1);
}

/*
 * adapt's miniature simulations (evict_adapt.c): one small cache per
 * expert, fed the hash-sampled 1/KVBM_MINI_RATE of the blocks and sized
 * 1/KVBM_MINI_RATE of the pool (SHARDS), so that their hit counts say
 * which expert the pool should follow. An entry is on one list (free, S,
 * M, S's history, M's history (ARC's), or LFU's and lfru's M of its
 * frequency); the table maps a sampled key to its entry.
 * Any content is legal: every index read is bounded, a walk never runs
 * past the entries, a mini found inconsistent is emptied, and recovery
 * empties them all. They only steer the choice of victim.
 */
#define KVBM_MINI_RATE 8u
#define KVBM_MINI_NONE UINT32_MAX
enum { KVBM_MINI_FREE, KVBM_MINI_S, KVBM_MINI_M, KVBM_MINI_G, KVBM_MINI_G2, KVBM_MINI_F0,
       KVBM_MINI_LISTS = KVBM_MINI_F0 + 16 }; /* LFU's M: one list per frequency */
struct kvbm_shm_ment {
	uint64_t key;
	uint32_t prev, next; /* entry indexes, KVBM_MINI_NONE at the ends */
	uint8_t list, freq;
	uint8_t uses, pad; /* the clock filter's count of uses in M, 0..3 */
	uint32_t tick; /* the mini's clock at its last use (lfru's order) */
};
struct kvbm_shm_mini {
	_Alignas(KVBM_CACHELINE) uint32_t ents, tslots, built; /* built: ents, 0 = never */
	uint32_t head[KVBM_MINI_LISTS], tail[KVBM_MINI_LISTS], len[KVBM_MINI_LISTS];
	uint64_t hits;  /* decayed hits, 16 fractional bits */
	uint32_t clock;  /* accesses, for lfru's order (wraps) */
	uint32_t target; /* ARC's: the size S is evicted down to */
};

/* Where things are in the eviction region (offsets from its start). */
struct kvbm_evict_geom {
	uint64_t sketch_off, nodes_off, pfrag_off, heads_off, heap_off, gtab_off, mini_off, size;
	uint32_t sketch_words, nodes, ghosts, buckets;
	uint32_t gbuckets; /* ghost table buckets (S3-FIFO, ARC), a power of two */
	uint32_t mini_ents, mini_tslots; /* per miniature (adapt): entries, table (power of two) */
};

/* adapt's miniatures, one per expert (lib/evict.h): headers, then each
 * one's entries and table. */
#define KVBM_MINIS 6u
static inline uint64_t kvbm_mini_bytes(uint32_t ents, uint32_t tslots)
{
	uint64_t b = (uint64_t)ents * sizeof(struct kvbm_shm_ment) + (uint64_t)tslots * 4;

	return (b + KVBM_CACHELINE - 1) & ~(uint64_t)(KVBM_CACHELINE - 1);
}

static inline void kvbm_evict_geometry(const struct kvbm_shm_config *cfg,
				       struct kvbm_evict_geom *g)
{
	uint64_t off = sizeof(struct kvbm_shm_evict);

	*g = (struct kvbm_evict_geom){0};
	g->sketch_words = cfg->sketch_log2 ? (1u << cfg->sketch_log2) / 4 : 0;
	g->sketch_off = off;
	off += (uint64_t)g->sketch_words * 8;
	if (kvbm_backend_has_forest(cfg->backend)) {
		/* ghosts: parents known only by key. Half the slots covers any
		 * forest whose ghosts have two or more real descendants; past
		 * that a node goes without its parent (order only, no harm) */
		g->ghosts = cfg->block_count / 2 + 16;
		g->nodes = cfg->block_count + g->ghosts;
		/* two chain heads per block: a lookup of a key not there
		 * (every new block's parent, released after it) walks its
		 * chain, a cache miss per node. Lineage on scan-heavy
		 * replayed 7.62, 7.98 and 8.17 M blocks per CPU second with
		 * one, two and four heads a block: two reach the 0.7x of lru
		 * asked of every backend for 4 bytes a block, four would
		 * cost 12 of the segment's bytes a block for 2% more */
		g->buckets = 16;
		while (g->buckets < 2ull * cfg->block_count)
			g->buckets <<= 1;
		g->nodes_off = off;
		off += (uint64_t)g->nodes * sizeof(struct kvbm_shm_lnode);
		g->pfrag_off = off;
		off += (uint64_t)g->ghosts * 8;
		g->heads_off = off;
		off += (uint64_t)g->buckets * 4;
		/* one entry short of a line boundary, so that every group
		 * of siblings 4i+1..4i+4 fills exactly one cache line */
		off = (off + KVBM_CACHELINE - 1) & ~(uint64_t)(KVBM_CACHELINE - 1);
		if (kvbm_backend_has_heap(cfg->backend)) {
			g->heap_off = off + KVBM_CACHELINE - sizeof(struct kvbm_shm_hent);
			off += KVBM_CACHELINE +
			       (uint64_t)cfg->block_count * sizeof(struct kvbm_shm_hent);
		}
	}
	if (cfg->backend == KVBM_BACKEND_S3FIFO || cfg->backend == KVBM_BACKEND_ARC ||
	    cfg->backend == KVBM_BACKEND_LECAR || cfg->backend == KVBM_BACKEND_ADAPT) {
		/* four entries per block: two windows of up to a pool each,
		 * at half load so that a bucket rarely drops a live entry */
		g->gbuckets = 16;
		while ((uint64_t)g->gbuckets * 8 < 4ull * cfg->block_count)
			g->gbuckets <<= 1;
		off = (off + KVBM_CACHELINE - 1) & ~(uint64_t)(KVBM_CACHELINE - 1);
		g->gtab_off = off;
		off += sizeof(struct kvbm_shm_ghosthdr) +
		       (uint64_t)g->gbuckets * sizeof(struct kvbm_shm_gbucket);
	}
	if (cfg->backend == KVBM_BACKEND_ADAPT) {
		/* a mini holds up to its share of the pool plus a history of
		 * half that; the table at most half full (six minis: a
		 * quarter cost 9-18 bytes a block more, and changed no cell) */
		uint32_t m = cfg->block_count / KVBM_MINI_RATE;
		g->mini_ents = (m < 8 ? 8 : m) * 3 / 2 + 2;
		g->mini_tslots = 16;
		while (g->mini_tslots < 2ull * g->mini_ents)
			g->mini_tslots <<= 1;
		off = (off + KVBM_CACHELINE - 1) & ~(uint64_t)(KVBM_CACHELINE - 1);
		g->mini_off = off;
		off += KVBM_MINIS * (sizeof(struct kvbm_shm_mini) +
				     kvbm_mini_bytes(g->mini_ents, g->mini_tslots));
	}
	g->size = (off + KVBM_CACHELINE - 1) & ~(uint64_t)(KVBM_CACHELINE - 1);
}

/*
 * The event ring (lib/events.c): every change of the set of registered
 * primaries, appended by the mutex holder, read lock-free by any number of
 * readers with cursors of their own. Entry i holds the event with
 * sequence number s where s % cap == i; an entry's seq word is written last
 * (release) and is the reader's proof that the entry is the one it wants.
 */
enum kvbm_shm_event_kind {
	KVBM_SHM_EV_STORED = 1,  /* a new primary was registered */
	KVBM_SHM_EV_REMOVED = 2, /* a primary left the registry (evicted, reset) */
	KVBM_SHM_EV_RESYNC = 3,  /* the writer lost track (a recovery): resync */
};
#define KVBM_SHM_EV_SEQ_BUSY UINT64_MAX /* an entry being rewritten */

struct kvbm_shm_events {
	_Alignas(KVBM_CACHELINE) uint64_t head; /* next sequence number; mutex
						 * writes, readers acquire */
	uint32_t cap;        /* entries, a power of two */
	uint32_t entry_size; /* bytes per entry */
	uint64_t resyncs;    /* RESYNC events written (recoveries) */
	uint64_t reserved[5];
};

struct kvbm_shm_event {
	uint64_t seq; /* written last (release); KVBM_SHM_EV_SEQ_BUSY while rewritten */
	uint32_t kind;
	uint32_t ntok; /* token ids that follow (0 or block_size) */
	uint64_t key_hi, key_lo;
	uint32_t tokens[]; /* block_size entries of room */
};

_Static_assert(sizeof(struct kvbm_shm_events) == KVBM_CACHELINE, "event ring header");
_Static_assert(sizeof(struct kvbm_shm_event) == 32, "event entry header");

static inline uint32_t kvbm_event_entry_size(const struct kvbm_shm_config *cfg)
{
	return (uint32_t)((sizeof(struct kvbm_shm_event) + 4ull * cfg->block_size + 7) & ~7ull);
}

/*
 * Kept tokens (KVBM_CFG_KEEP_TOKENS): per slot, a tag word then block_size
 * token ids. The tag is 1 + the low 32 bits of the generation of the
 * registration they belong to (0: none), written with the ids under the
 * mutex before the slot is published REGISTERED; a reader takes them only
 * when the tag matches a state word it reads again unchanged afterwards.
 */
static inline uint64_t kvbm_tokens_stride(const struct kvbm_shm_config *cfg)
{
	return 1ull + cfg->block_size; /* in uint32 words */
}

static inline uint64_t kvbm_tokens_region_size(const struct kvbm_shm_config *cfg)
{
	if (!(cfg->flags & KVBM_CFG_KEEP_TOKENS))
		return 0;
	return 4ull * kvbm_tokens_stride(cfg) * cfg->block_count;
}

static inline uint64_t kvbm_events_region_size(const struct kvbm_shm_config *cfg)
{
	if (!cfg->event_log2)
		return 0;
	return sizeof(struct kvbm_shm_events) +
	       ((uint64_t)1 << cfg->event_log2) * kvbm_event_entry_size(cfg);
}

/*
 * The pin region (lib/pins.c): a header line, then one deadline word per
 * slot: 0 = not pinned by the pool, else CLOCK_MONOTONIC ns (even) at which
 * the pin ends, | KVBM_PIN_TIP when the block ended a pin call (counted as
 * one pin). The deadlines are the truth: the POOL holder bit, the counts
 * and the expiry heap are derived from them, and recovery rebuilds them.
 * Mutex holders write everything; `due` is read by every locker
 * (shm/mutex.c), the counts by metric scrapes, lock-free.
 *
 * After the words: the expiry heap, a binary min-heap by deadline of
 * heap_len entries, one per pinned block, room for the pin share's
 * blocks (kvbm_pin_cap), so that expiry costs what it expires, not the
 * pool's size; then each slot's index in it (meaningful only while the
 * slot is pinned). Readers trust no byte of either: every index is
 * bounds-checked and an entry that disagrees with its word is repaired.
 */
#define KVBM_PIN_TIP 1ull
struct kvbm_shm_pins {
	_Alignas(KVBM_CACHELINE) uint64_t due; /* the hold clock's tick (mutex.c)
						* from which the next locker
						* expires pins; UINT64_MAX: none */
	uint64_t next_ns;   /* earliest deadline, UINT64_MAX: none */
	uint32_t blocks;    /* pinned blocks */
	uint32_t tips;      /* pins: pinned blocks with KVBM_PIN_TIP */
	uint32_t cap;       /* most blocks pins may hold (pin_share) */
	uint32_t heap_len;  /* entries in the expiry heap */
	uint64_t expired;   /* blocks whose pin expired, ever */
	uint64_t reserved2[3];
};
_Static_assert(sizeof(struct kvbm_shm_pins) == KVBM_CACHELINE, "pin header line");

/* An expiry heap entry: the deadline (without the tip mark) it was filed
 * under, and the slot. */
struct kvbm_shm_pin_ent {
	uint64_t when;
	uint32_t slot;
	uint32_t pad;
};
_Static_assert(sizeof(struct kvbm_shm_pin_ent) == 16, "pin heap entry");

/* Blocks pins may hold in a pool of @cfg. */
static inline uint32_t kvbm_pin_cap(const struct kvbm_shm_config *cfg)
{
	return (uint32_t)((uint64_t)cfg->block_count * cfg->pin_share / 100);
}

/* Offsets in the pin region: the heap after the words, the slots'
 * places in it after the heap (8-byte aligned: 16-byte entries). */
static inline uint64_t kvbm_pins_heap_off(const struct kvbm_shm_config *cfg)
{
	return sizeof(struct kvbm_shm_pins) + 8ull * cfg->block_count;
}

static inline uint64_t kvbm_pins_pos_off(const struct kvbm_shm_config *cfg)
{
	return kvbm_pins_heap_off(cfg) + sizeof(struct kvbm_shm_pin_ent) * kvbm_pin_cap(cfg);
}

static inline uint64_t kvbm_pins_region_size(const struct kvbm_shm_config *cfg)
{
	return kvbm_pins_pos_off(cfg) + 4ull * cfg->block_count;
}


/* Hash over every size/offset above plus the ABI facts they depend on. */
uint64_t kvbm_layout_hash(void);

#endif /* KVBM_SHM_LAYOUT_H */
