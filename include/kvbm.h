/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm.h - kvbm-shm: a KV-cache block pool shared by many processes.
 *
 * A pool is one named shared-memory segment. Every inference process on the
 * node attaches to it with kvbm_pool_open() and gets a per-process handle.
 *
 * Rules a caller must keep:
 *  - Every call returns 0 (or a count) on success and a negative KVBM_E* code
 *    on failure; kvbm_strerror() names it. Codes above KVBM_EBASE are plain
 *    negated errno values (-ENOENT, -EACCES, -ENOSPC, ...). Each function
 *    below lists its errors. "The handle errors" are those every call on a
 *    struct kvbm_pool may return: -EINVAL (a NULL handle or required
 *    pointer), KVBM_EFORKED, KVBM_ETHREAD (a KVBM_OPEN_ONE_THREAD handle in
 *    another thread), KVBM_EPOISONED and KVBM_EREAPED. "The mutex errors"
 *    are those of a call that takes the pool mutex: KVBM_EDEADLK (called
 *    with the mutex held, from a callback) and KVBM_ECORRUPT (the mutex's
 *    bytes were damaged); a recovery that fails poisons the pool
 *    (KVBM_EPOISONED).
 *  - Pools live in the directory $KVBM_SHM_DIR (default /dev/shm; a tmpfs)
 *    as files named kvbm.NAME. Every process of a pool must see the same
 *    directory: set the variable alike for all of them, or for none.
 *  - A handle belongs to the process that opened it. After fork() the child
 *    must not use it: every call fails with KVBM_EFORKED, and
 *    kvbm_pool_close() in the child only frees the child's copy (the
 *    parent's attachment is untouched). Open the pool again in the child.
 *  - All attachers must share one PID namespace, one glibc ABI and one
 *    build of the shared layout (checked at attach: KVBM_EPIDNS, KVBM_EABI,
 *    KVBM_ELAYOUT).
 *  - A pool is trusted only when its file is owned by the caller, root or
 *    the owner the caller's config names (kvbm_config.uid), and its mode is
 *    no wider than the one it was created with (KVBM_EOWNER, KVBM_EMODE).
 *  - A handle may be used by several threads of its process at once.
 *  - Never truncate or overwrite a pool's file while it is attached.
 *  - Linux on x86-64 only: the lock-free paths rely on x86's total store
 *    order (the seqlock-style key reads, the one-writer holds) and use its
 *    pause instruction. Another architecture is refused at build time.
 */
#ifndef KVBM_H
#define KVBM_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KVBM_API __attribute__((visibility("default")))
#else
#define KVBM_API
#endif

#define KVBM_VERSION_MAJOR 0
#define KVBM_VERSION_MINOR 1
#define KVBM_VERSION_PATCH 0

/*
 * Error codes: our own band lies below KVBM_EBASE so it never collides with
 * a negated errno value (errno values are < 4096 on Linux).
 */
#define KVBM_EBASE (-16384)
enum kvbm_error {
	KVBM_EBADMAGIC = KVBM_EBASE - 1,     /* the file is not a kvbm pool segment */
	KVBM_EABI = KVBM_EBASE - 2,          /* segment built for another ABI major version */
	KVBM_ELAYOUT = KVBM_EBASE - 3,       /* segment layout differs from this build's */
	KVBM_ETRUNCATED = KVBM_EBASE - 4,    /* file size differs from the segment size */
	KVBM_EINITIALIZING = KVBM_EBASE - 5, /* segment not (yet) initialised */
	KVBM_EPOISONED = KVBM_EBASE - 6,     /* segment marked unusable after failed repair */
	KVBM_EPROCFULL = KVBM_EBASE - 7,     /* every process-table entry is in use */
	KVBM_EFORKED = KVBM_EBASE - 8,       /* handle used in a forked child */
	KVBM_ECORRUPT = KVBM_EBASE - 9,      /* header or region table inconsistent */
	KVBM_EMISMATCH = KVBM_EBASE - 10,    /* pool exists with another configuration */
	KVBM_ENOHUGE = KVBM_EBASE - 11,      /* hugepages requested but unavailable */
	KVBM_ESTALE = KVBM_EBASE - 12,       /* handle names a recycled slot/attachment */
	KVBM_EFOREIGN = KVBM_EBASE - 13,     /* handle belongs to another pool */
	KVBM_ENAME = KVBM_EBASE - 14,        /* invalid pool name */
	KVBM_EDEADLK = KVBM_EBASE - 15,      /* caller already holds the pool mutex */
	KVBM_ENOTHELD = KVBM_EBASE - 16,     /* block not held by this process (double release?) */
	KVBM_ESIZE = KVBM_EBASE - 17,        /* token count differs from the pool's block size */
	KVBM_ESTATE = KVBM_EBASE - 18,       /* block is in the wrong state for this call */
	KVBM_ENOTOWNER = KVBM_EBASE - 19,    /* mutable/staged block of another process */
	KVBM_EUNIQUE = KVBM_EBASE - 20,      /* attachment type already used as unique */
	KVBM_EMULTIPLE = KVBM_EBASE - 21,    /* attachment type already used as multiple */
	KVBM_ETHREAD = KVBM_EBASE - 22,      /* KVBM_OPEN_ONE_THREAD handle used by another thread */
	/* who may touch a pool (kvbm_pool_open) */
	KVBM_EOWNER = KVBM_EBASE - 23,  /* segment file owned by an untrusted user (squatted?) */
	KVBM_EMODE = KVBM_EBASE - 24,   /* file mode grants more than the pool was created with */
	KVBM_EOTHERS = KVBM_EBASE - 25, /* mode gives others access, KVBM_CFG_ALLOW_OTHERS unset */
	KVBM_EPIDNS = KVBM_EBASE - 26,  /* caller in another PID namespace than the pool's */
	KVBM_EREAPED = KVBM_EBASE - 27,  /* our process-table entry was reaped: reopen */
	KVBM_EGAP = KVBM_EBASE - 28,     /* events were overwritten before this reader read them */
	/* sequences and schedules (kvbm_sequence.h) */
	KVBM_EORDER = KVBM_EBASE - 29,     /* a known block id after a new one */
	KVBM_EPOSITION = KVBM_EBASE - 30,  /* a block's PLH position is not its index */
	KVBM_EDUPID = KVBM_EBASE - 31,     /* block id already present, or given twice */
	KVBM_EHASHMISMATCH = KVBM_EBASE - 32, /* a matched block is not the one expected there */
	KVBM_ENOTIDLE = KVBM_EBASE - 33,   /* schedule while a schedule is pending */
	KVBM_EOVERRUN = KVBM_EBASE - 34,   /* prefill chunk past the prompt */
	KVBM_EPREFILLDONE = KVBM_EBASE - 35,    /* prefill already complete */
	KVBM_EPREFILLPENDING = KVBM_EBASE - 36, /* decode before the prefill completed */
	KVBM_EGENDONE = KVBM_EBASE - 37,   /* max_output_tokens already generated */
	KVBM_EDANGLING = KVBM_EBASE - 38,  /* not exactly one token without KV */
	KVBM_ESEQSTATE = KVBM_EBASE - 39,  /* apply/revert/release in the wrong state */
	KVBM_ETOKENCHUNK = KVBM_EBASE - 40, /* a token on a non-final prefill chunk */
	KVBM_ENOTOKEN = KVBM_EBASE - 41,   /* final prefill chunk without its token */
	KVBM_EACCEPTED = KVBM_EBASE - 42,  /* more tokens accepted than drafted */
	KVBM_EAPPEND = KVBM_EBASE - 43,    /* more tokens appended than the budget left */
	KVBM_EPINSHARE = KVBM_EBASE - 44,  /* pins would pass the pool's pin_share */
	KVBM_ENOTREG = KVBM_EBASE - 45,    /* a hash to pin is not registered */
	KVBM_EHINT = KVBM_EBASE - 46,      /* a release hint that is not a KVBM_HINT_* */
	KVBM_ELAST = KVBM_EBASE - 47,
};

/* Returns a static, human-readable description of any kvbm return code
 * (an unknown one included). Never fails. */
KVBM_API const char *kvbm_strerror(int err);

/* Returns the library version as "MAJOR.MINOR.PATCH". Never fails. */
KVBM_API const char *kvbm_version(void);

/*
 * The library never writes to the host's stderr. What it has to say that
 * no return code carries (a repair that failed after a process died
 * holding the pool mutex: one line per violation found, before the pool
 * is poisoned and calls fail with KVBM_EPOISONED) goes to the log function
 * installed here, from the thread that met it, or nowhere. Process-wide;
 * NULL uninstalls. @fn must not call the library. Never fails.
 */
enum kvbm_log_level {
	KVBM_LOG_ERROR = 0,
	KVBM_LOG_WARNING = 1,
};
typedef void (*kvbm_log_fn)(int level, const char *msg, void *arg);
KVBM_API void kvbm_set_log(kvbm_log_fn fn, void *arg);

/* ---- pool configuration ------------------------------------------------- */

#define KVBM_MAX_PROCS 62     /* process bits of the per-slot holder mask (one more
			       * bit stands for the pool's own pins) */
#define KVBM_NAME_MAX 128     /* longest pool name, without terminator */
#define KVBM_MAX_BLOCKS (1u << 28)
#define KVBM_TIER_MAX 15      /* longest tier label */

/* kvbm_config.dup_policy: what registering an already registered hash does */
enum kvbm_dup_policy {
	KVBM_DUP_ALLOW = 0,  /* the newcomer becomes a duplicate of the primary */
	KVBM_DUP_REJECT = 1, /* the primary is returned, the newcomer freed */
};

/* kvbm_config.backend: which inactive block allocation evicts first */
enum kvbm_backend {
	KVBM_BACKEND_LRU = 0,  /* least recently released first */
	KVBM_BACKEND_FIFO = 1, /* oldest insertion first (the reference's HashMap) */
	KVBM_BACKEND_MULTI_LRU = 2, /* 4 LRU levels by TinyLFU estimate, coldest first */
	KVBM_BACKEND_LINEAGE = 3,   /* leaves only, earliest inserted first (Tick) */
	KVBM_BACKEND_LINEAGE_FIFO = 4, /* leaves only, in the order they became leaves */
	KVBM_BACKEND_LFRU = 5, /* ours: leaves only, by recency plus one pool's worth
				* of insertions per doubling of frequency */
	/* published policies, adapted to the prefix tree (leaves only) */
	KVBM_BACKEND_S3FIFO = 6,   /* S3-FIFO (SOSP'23): small FIFO, main CLOCK, ghosts */
	KVBM_BACKEND_ARC = 7,      /* ARC (FAST'03): recency and frequency lists, adaptive */
	KVBM_BACKEND_WTINYLFU = 8, /* W-TinyLFU (Caffeine): window, SLRU, sketch admission */
	KVBM_BACKEND_LECAR = 9,    /* LeCaR (HotStorage'18): LRU and LFU, weights by regret */
	KVBM_BACKEND_ADAPT = 10,   /* ours: LRU, filter, LFU, lfru, CLOCK and ARC experts,
				    * the one whose miniature simulation hits most, LRU
				    * unless beaten (lib/evict_adapt.c) */
	KVBM_BACKEND_COUNT
};

/* kvbm_config.tinylfu: the frequency sketch's capacity (counters) */
enum kvbm_tinylfu {
	KVBM_TINYLFU_AUTO = 0,   /* none, or 16 x the block count rounded up to a
				  * power of two (2^12..2^24) for backends that
				  * use it */
	KVBM_TINYLFU_NONE = 1,   /* no sketch: touches do nothing */
	KVBM_TINYLFU_SMALL = 2,  /* 2^18 */
	KVBM_TINYLFU_MEDIUM = 3, /* 2^21, the reference's default (4 MiB) */
	KVBM_TINYLFU_LARGE = 4,  /* 2^24 */
};

/* Name of backend @b ("lru", "fifo", "multi-lru", "lineage",
 * "lineage-fifo", "lfru", "s3fifo", "arc", "w-tinylfu", "lecar",
 * "adapt"), or NULL. */
KVBM_API const char *kvbm_backend_name(uint32_t b);
/* The backend named @name, or -EINVAL (NULL or an unknown name). */
KVBM_API int kvbm_backend_parse(const char *name);

/*
 * kvbm_config.tier: where a pool's blocks live, as Dynamo's KVBM numbers
 * its tiers and its router names their storage (RouterEvent.storage_tier).
 * One pool is one tier; a node runs one pool per tier, and a process
 * attaches each one it moves blocks between (kvbm_tier.h).
 */
enum kvbm_tier {
	KVBM_TIER_NONE = 0, /* a pool made before tiers were checked (any label) */
	KVBM_TIER_G1 = 1,   /* "device": accelerator memory */
	KVBM_TIER_G2 = 2,   /* "host_pinned": host memory */
	KVBM_TIER_G3 = 3,   /* "disk": local disk */
	KVBM_TIER_G4 = 4,   /* "external": remote or shared storage */
	KVBM_TIER_COUNT
};
/* The tier named @label: its G name ("G2") or its storage name
 * ("host_pinned"), exactly (case matters). Returns 1..4, or -EINVAL (NULL
 * or any other text). */
KVBM_API int kvbm_tier_parse(const char *label);
/* "G1".."G4" / "device", "host_pinned", "disk", "external" for tier @t;
 * NULL for any other value. */
KVBM_API const char *kvbm_tier_name(uint32_t t);
KVBM_API const char *kvbm_tier_storage(uint32_t t);

/* kvbm_config.flags */
#define KVBM_CFG_HUGEPAGES 0x1u /* back the segment with transparent hugepages */
/* Let a creating open give "others" (mode bits 0007) access: any local user
 * could then read or write the live pool. Without it such a mode is
 * refused with KVBM_EOTHERS. */
#define KVBM_CFG_ALLOW_OTHERS 0x2u
/* Keep each registered block's token ids in the segment (block_size x 4
 * bytes a block, when given at registration), so that an event snapshot's
 * STORED events carry them: a router indexes a store only with its tokens.
 * Needs an event ring. */
#define KVBM_CFG_KEEP_TOKENS 0x4u

struct kvbm_config {
	uint32_t block_count;     /* blocks in the pool, 1..KVBM_MAX_BLOCKS */
	uint32_t block_size;      /* tokens per block: power of two 1..1024 (16) */
	uint32_t max_procs;       /* concurrent attachers, 1..KVBM_MAX_PROCS = 62 (16) */
	uint32_t mode;            /* file mode of the segment (0600); bits for
				   * others need KVBM_CFG_ALLOW_OTHERS */
	int64_t gid;              /* group owning the segment, -1 = creator's */
	uint32_t flags;           /* KVBM_CFG_* */
	uint32_t open_timeout_ms; /* how long an attacher waits for a creator (10000) */
	uint32_t dup_policy;      /* enum kvbm_dup_policy (ALLOW) */
	uint32_t backend;         /* enum kvbm_backend (LINEAGE) */
	uint32_t reset_on_release; /* 1: released primaries skip the inactive pool (0) */
	char tier[KVBM_TIER_MAX + 1]; /* the pool's tier (enum kvbm_tier), also
				       * its metrics `pool` label: "G1".."G4", or a
				       * storage name ("host_pinned"), stored as its
				       * G name ("G1") */
	uint8_t mlru_thresholds[3]; /* multi-level LRU: TinyLFU estimates that
				     * start levels 1-3, ascending, 1..15 ({3, 8, 15}) */
	uint32_t tinylfu;           /* enum kvbm_tinylfu (AUTO) */
	int64_t uid; /* the segment's owner, -1 = the creator (-1). Creating with
		      * another user's id needs root (as with gid). Attaching
		      * trusts a segment file owned by the caller, root or this
		      * user, and refuses any other owner (KVBM_EOWNER) */
	uint32_t event_ring; /* entries of the event ring: 0 (no events) or a
			      * power of two 64..2^22 (4096); each holds one
			      * event with room for a block's token ids */
	uint32_t pin_share; /* percent of block_count that pins held by the pool
			     * (kvbm_pin_prefix) may keep unevictable, 0..100
			     * (25); 0: no pins. Appended in 0.1: rebuild */
};

/* Fills *cfg with the defaults noted above (block_count 1024). Never fails. */
KVBM_API void kvbm_config_init(struct kvbm_config *cfg);

/* Validates @cfg with the reference's rules. Returns 0, or -EINVAL with
 * *why (may be NULL) set to a static reason such as "block_count must be
 * greater than 0". */
KVBM_API int kvbm_config_check(const struct kvbm_config *cfg, const char **why);

/*
 * What kvbm_config_diff() reports: the first field on which a config
 * disagrees with an existing pool, named as in struct kvbm_config
 * ("block_count", "block_size", "max_procs", "dup_policy", "backend",
 * "reset_on_release", "tinylfu", "mlru_thresholds", "tier", "pin_share"), with both
 * values as text ("lru", "reject", "2^18 counters", "3,8,15", ...).
 */
#define KVBM_CONFIG_VALUE_MAX 32
struct kvbm_config_diff {
	const char *field;                  /* static; NULL when they agree */
	char pool[KVBM_CONFIG_VALUE_MAX];   /* the existing pool's value */
	char config[KVBM_CONFIG_VALUE_MAX]; /* @cfg's value */
};

/*
 * After kvbm_pool_open(@name, @cfg, ...) failed with KVBM_EMISMATCH: which
 * field of @cfg differs from the pool's, by the same comparison the open
 * made. Reads the pool's header read-only, without attaching or locking.
 * Returns 1 and *out, 0 when they agree (the pool was re-created since),
 * or: -EINVAL (bad @cfg or NULL argument), KVBM_ENAME, -ENOENT, -EACCES,
 * KVBM_EBADMAGIC, KVBM_EABI, KVBM_ELAYOUT, KVBM_ETRUNCATED, KVBM_ECORRUPT.
 */
KVBM_API int kvbm_config_diff(const char *name, const struct kvbm_config *cfg,
			      struct kvbm_config_diff *out);

/* ---- attach and detach -------------------------------------------------- */

struct kvbm_pool; /* opaque per-process attach handle */

/* kvbm_pool_open() flags */
#define KVBM_OPEN_CREATE 0x1u /* create the pool if it does not exist */
#define KVBM_OPEN_EXCL 0x2u   /* with CREATE: fail with -EEXIST if it exists */
/*
 * The handle is used by the opening thread only (as in an inference
 * engine's single scheduler thread); every other thread's call fails with
 * KVBM_ETHREAD, kvbm_pool_close() excepted. Holds then cost no locked
 * instruction on this process's own holder entries, which have one writer.
 * Cross-process safety is the same. Without the flag a handle gets the same
 * speed while only its opening thread calls it; the first call from
 * another thread switches it, once, to thread-safe atomics (a few
 * microseconds; docs/PROTOCOL.md, "Biased handles").
 */
#define KVBM_OPEN_ONE_THREAD 0x4u
/* Attach (never create: -EINVAL with KVBM_OPEN_CREATE) whatever user owns
 * the file: for an operator's tool pointed at one pool by hand, such as
 * kvbm-shm-dump --check --lock run as root on a service user's pool. The
 * mode check stays. */
#define KVBM_OPEN_ANY_OWNER 0x8u

/*
 * Attaches to the pool @name, creating it from @cfg when KVBM_OPEN_CREATE is
 * given and it does not exist (or its creator died mid-initialisation). Of
 * many processes creating one name at once exactly one initialises it; the
 * others wait (up to cfg->open_timeout_ms) and attach. When the pool exists,
 * a non-NULL @cfg must agree with it on block_count, block_size,
 * max_procs, dup_policy, backend, reset_on_release, the TinyLFU capacity
 * it implies, mlru_thresholds, tier and pin_share (else KVBM_EMISMATCH, and
 * kvbm_config_diff() names the field). mode, gid, uid, flags and
 * open_timeout_ms are the creator's business. @cfg may be NULL without
 * CREATE: attach to whatever the pool is.
 *
 * Creating uses O_EXCL and O_NOFOLLOW; a file that already exists under the
 * name (a pool, or a dead creator's leftover to re-initialise) is used only
 * when owned by the caller, root or cfg->uid (KVBM_EOWNER: someone else
 * may have created the name first in a world-writable directory), with a
 * mode no wider than the pool's configured one (KVBM_EMODE). A creating
 * open whose cfg->mode has bits for others fails with KVBM_EOTHERS unless
 * cfg->flags has KVBM_CFG_ALLOW_OTHERS. A caller in another PID namespace
 * than the pool's creator gets KVBM_EPIDNS.
 *
 * Returns 0 and *out, or: KVBM_ENAME, -EINVAL (bad config or flags, NULL
 * @out, NULL @cfg with CREATE), -ENOENT (no such pool, or no
 * $KVBM_SHM_DIR), -EEXIST (with EXCL), -EACCES, -EPERM (cfg->uid or gid
 * not ours to give), -ENOSPC (the directory's tmpfs full), KVBM_ENOHUGE, KVBM_EBADMAGIC, KVBM_EABI, KVBM_ELAYOUT,
 * KVBM_ETRUNCATED, KVBM_ECORRUPT, KVBM_EINITIALIZING, KVBM_EPOISONED,
 * KVBM_EPROCFULL, KVBM_EMISMATCH, KVBM_EOWNER, KVBM_EMODE, KVBM_EOTHERS,
 * KVBM_EPIDNS, -ENOMEM.
 */
KVBM_API int kvbm_pool_open(const char *name, const struct kvbm_config *cfg, unsigned flags,
			    struct kvbm_pool **out);

/*
 * Detaches: frees this process's table entry and unmaps the segment. The
 * pool lives on for other attachers. In a forked child it only frees the
 * child's copy of the handle. Returns 0, -EINVAL (NULL), or an error of
 * the detach (KVBM_EREAPED: our entry was already reaped; the mutex
 * errors); the handle is freed either way. A poisoned pool detaches
 * without error.
 */
KVBM_API int kvbm_pool_close(struct kvbm_pool *pool);

/* kvbm_pool_destroy() flags */
/* remove the name even while processes are attached, or when what it
 * names is not a pool */
#define KVBM_DESTROY_FORCE 0x1u

/*
 * Removes the pool's name. Attached processes keep working on their mapping
 * until they detach; new opens no longer find it. Only a pool is removed (a
 * file starting with the pool magic, of any version, state or damage);
 * anything else under the name (another program's file, an empty leftover,
 * a symbolic link) is left alone with KVBM_EBADMAGIC unless
 * KVBM_DESTROY_FORCE is given, which removes a link, never its target.
 * Returns 0, -ENOENT, KVBM_ENAME, -EACCES, KVBM_EBADMAGIC, or -EBUSY when
 * live processes are attached and KVBM_DESTROY_FORCE is not given.
 */
KVBM_API int kvbm_pool_destroy(const char *name, unsigned flags);

/*
 * Frees the table entries of attached processes that are provably dead
 * (their liveness lock is free, or their pid + start time are gone). Live
 * processes are never touched. Returns the number reaped, or the handle
 * errors and the mutex errors.
 */
KVBM_API int kvbm_reap(struct kvbm_pool *pool);

/*
 * Checks the pool's invariants (docs/CRASH-SAFETY.md): every slot in one
 * valid state; the free list, eviction order and registry index agreeing
 * with the slot array (every index entry validates, every registered
 * primary is found, one primary per hash); no holder bit or holder-table
 * entry of a free or dead process-table entry; counts and gauges matching
 * the slots. Each violation is reported through @report (may be NULL) as
 * one line naming the slot or entry. With KVBM_CHECK_LOCK the pool mutex is
 * held for an exact snapshot, after reaping the processes that died; without
 * it the lists, index and counts are read while others change them and are
 * not checked, and a dead process not yet reaped is a violation. KVBM_CHECK_QUIESCENT:
 * the caller vouches that no other thread or process is using the pool, so
 * states that are only legal in flight (a tentative hold, an unsettled
 * release) count too. Returns the number of violations, or the handle
 * errors, the mutex errors (with KVBM_CHECK_LOCK) and -ENOMEM.
 */
#define KVBM_CHECK_LOCK 0x1u
#define KVBM_CHECK_QUIESCENT 0x2u
typedef void (*kvbm_report_fn)(const char *msg, void *arg);
KVBM_API long kvbm_pool_check(struct kvbm_pool *pool, unsigned flags, kvbm_report_fn report,
			      void *arg);

struct kvbm_pool_info {
	char name[KVBM_NAME_MAX + 1];
	uint64_t instance_id;  /* random per creation: this pool's global id */
	uint64_t segment_size; /* bytes */
	struct kvbm_config config;
	uint32_t proc_index;   /* this attachment's process-table entry */
	uint32_t procs_attached;
	uint64_t attach_gen;   /* unique per attachment of this pool */
	int initialized_by_me; /* this open created or re-initialised the pool */
	uint64_t recoveries;   /* mutex-owner-death recoveries so far */
};

/* Fills *info for @pool. Returns 0 or the handle errors. */
KVBM_API int kvbm_pool_info(struct kvbm_pool *pool, struct kvbm_pool_info *info);
/* The pool's tier (enum kvbm_tier: KVBM_TIER_NONE for a pool whose label
 * names none), or the handle errors. */
KVBM_API int kvbm_pool_tier(struct kvbm_pool *pool);

/* ---- hashing (bit-identical to dynamo-tokens / kvbm-logical 1.3) -------- */

/*
 * Block hash: XXH3-64 of the block's tokens as little-endian u32, seeded
 * with the salt. Sequence hash: S_0 = B_0, S_i = XXH3-64(LE64(S_{i-1}) ||
 * LE64(B_i), seed 1337). The positional lineage hash (PLH) packs
 * [mode:2][position:P][S_i:64][parent fragment:R] into 128 bits, with
 * (P, R) = (8, 54) below position 2^8, (16, 46) below 2^16, (24, 38) below
 * 2^24. Its wire form is 16 bytes big-endian.
 */
struct kvbm_plh {
	uint64_t hi; /* bits 127..64 */
	uint64_t lo; /* bits 63..0 */
};

#define KVBM_CHAIN_SEED 1337ull
#define KVBM_PLH_MAX_POSITION ((1u << 24) - 1)

/* The functions from here to kvbm_plh_from_bytes() compute values and
 * cannot fail, but for the two that say so. */
KVBM_API uint64_t kvbm_block_hash(const uint32_t *tokens, size_t n, uint64_t salt);
KVBM_API uint64_t kvbm_chain_hash(uint64_t parent_seq_hash, uint64_t block_hash);
/* The canonical salt of a request (dynamo-kv-hashing compute_salt_hash):
 * NULL or "" means absent. */
KVBM_API uint64_t kvbm_salt_hash(const char *cache_namespace, const char *lora_name);

/* Builds PLH(current, parent, position); @parent NULL for the root.
 * Returns 0 or -ERANGE when position > KVBM_PLH_MAX_POSITION. */
KVBM_API int kvbm_plh_make(uint64_t current, const uint64_t *parent, uint32_t position,
			   struct kvbm_plh *out);
/* The PLH of the child block with block hash @child_block_hash. Returns 0
 * or -ERANGE when the child's position would pass KVBM_PLH_MAX_POSITION. */
KVBM_API int kvbm_plh_extend(struct kvbm_plh parent, uint64_t child_block_hash,
			     struct kvbm_plh *out);
KVBM_API uint32_t kvbm_plh_position(struct kvbm_plh h);
KVBM_API unsigned kvbm_plh_mode(struct kvbm_plh h);
KVBM_API uint64_t kvbm_plh_current(struct kvbm_plh h);
KVBM_API uint64_t kvbm_plh_parent_fragment(struct kvbm_plh h);
/* current & (2^R(child) - 1): what a child at @child_position stores. */
KVBM_API uint64_t kvbm_plh_fragment_for_child(struct kvbm_plh h, uint32_t child_position);
/* The router's 64-bit projection: fragment_for_child(position + 1). */
KVBM_API uint64_t kvbm_plh_router_hash(struct kvbm_plh h);
KVBM_API int kvbm_plh_eq(struct kvbm_plh a, struct kvbm_plh b);
/* Ordering of the reference (#8687): position, then current, then raw. */
KVBM_API int kvbm_plh_cmp(struct kvbm_plh a, struct kvbm_plh b);
KVBM_API void kvbm_plh_to_bytes(struct kvbm_plh h, uint8_t out[16]);
KVBM_API struct kvbm_plh kvbm_plh_from_bytes(const uint8_t in[16]);

/*
 * The reference's display form of a PLH (PositionalLineageHash Display):
 * "POS:CURRENT" for the root, "POS:CURRENT:PARENT" otherwise, where CURRENT
 * is S_i and PARENT the parent fragment, each as 8 big-endian bytes in
 * base58 (Bitcoin alphabet, a leading zero byte is a '1'), e.g.
 * "0:EJ1p8dQtvBM". Writes it to @buf like snprintf and returns the length
 * it needs (at most KVBM_PLH_TEXT_MAX - 1). Never fails.
 */
#define KVBM_PLH_TEXT_MAX 40
KVBM_API int kvbm_plh_to_base58(struct kvbm_plh h, char *buf, size_t len);
/* Parses that form back, strictly: the canonical base58 of 8 bytes each,
 * a parent part exactly when POS > 0, a fragment within its mode's width.
 * Returns 0 and *@out, -EINVAL (NULL, or text that is not that form) or
 * -ERANGE (POS past KVBM_PLH_MAX_POSITION, a fragment too wide). */
KVBM_API int kvbm_plh_from_base58(const char *text, struct kvbm_plh *out);

/* Hashes of one complete block of a token sequence. */
struct kvbm_block_hashes {
	uint64_t block_hash;
	uint64_t seq_hash;
	struct kvbm_plh plh;
};

/*
 * Splits @n tokens into complete blocks of @block_size (a power of two,
 * 1..1024) and writes the hashes of at most @max blocks to @out. A trailing
 * partial block is not hashed. Returns the number of complete blocks (which
 * may exceed @max: only @max were written) or -EINVAL / -ERANGE.
 */
KVBM_API long kvbm_hash_tokens(const uint32_t *tokens, size_t n, uint32_t block_size,
			       uint64_t salt, struct kvbm_block_hashes *out, size_t max);

/*
 * Multimodal requests (dynamo-tokens TokenBlockSequence::new_with_mm, the
 * kv-hashing Request): a run of @length placeholder slots from token
 * position @offset stands for one multimodal object (an image) with hash
 * @mm_hash; the token ids at those slots are ignored. A block that no run
 * overlaps hashes as in kvbm_hash_tokens(); one that a run overlaps hashes
 * 13 bytes a slot: a token as 0x00, LE32(token), LE64(0); a placeholder as
 * 0x01, LE32(slot position - run offset), LE64(mm_hash).
 */
struct kvbm_mm_run {
	uint64_t mm_hash;
	size_t offset;
	size_t length;
};
/* kvbm_hash_tokens() with @nruns such runs (any order). A run that is
 * empty, overflows, ends past @n or overlaps another is -EINVAL (nothing
 * written); else as kvbm_hash_tokens(), and -ENOMEM. */
KVBM_API long kvbm_hash_tokens_mm(const uint32_t *tokens, size_t n, uint32_t block_size,
				  uint64_t salt, const struct kvbm_mm_run *runs, size_t nruns,
				  struct kvbm_block_hashes *out, size_t max);

/*
 * The router's block hashes (dynamo kv-router compute_block_hash_for_seq,
 * its LocalBlockHash): XXH3-64 seeded with @seed (kvbm_salt_hash(namespace,
 * lora): 1337 for neither) over each block's tokens as LE32, followed, for
 * a block with multimodal objects, by their hashes sorted ascending as
 * LE64. Blocks start every @block_size tokens; with KVBM_ROUTER_EAGLE each
 * covers one token more (EAGLE speculative decoding's window), so there
 * are (n - 1) / block_size complete ones. @mm (may be NULL) gives block i's
 * objects for i < @nmm. Writes at most @max hashes into @out and returns
 * how many complete blocks there are, or -EINVAL (@block_size 0, a NULL
 * pointer with a count, unknown @flags) or -ENOMEM.
 */
#define KVBM_ROUTER_EAGLE 0x1u
struct kvbm_router_mm {
	const uint64_t *mm_hashes; /* the block's objects, any order */
	size_t n;
};
KVBM_API long kvbm_router_block_hashes(const uint32_t *tokens, size_t n, uint32_t block_size,
				       uint64_t seed, const struct kvbm_router_mm *mm, size_t nmm,
				       unsigned flags, uint64_t *out, size_t max);
/* The token id a router puts in place of an image's tokens (sglang's
 * pad value): 1000000 + the low 30 bits of @mm_hash. */
KVBM_API uint32_t kvbm_mm_pad_value(uint64_t mm_hash);

/*
 * A growing token sequence (the reference's TokenBlockSequence): tokens are
 * appended, and every block they complete is hashed once. Not thread-safe.
 */
struct kvbm_tokens;
/* Returns 0 and *out, -EINVAL (@block_size not a power of two 1..1024,
 * NULL @out) or -ENOMEM. */
KVBM_API int kvbm_tokens_new(uint32_t block_size, uint64_t salt, struct kvbm_tokens **out);
KVBM_API void kvbm_tokens_free(struct kvbm_tokens *t);
/* Appends @n tokens. *first_new / *n_new (may be NULL) receive the range of
 * blocks they completed. Returns 0, -EINVAL (NULL @t, or NULL @tokens with
 * @n > 0), -ENOMEM, or -ERANGE (past KVBM_PLH_MAX_POSITION blocks). */
KVBM_API int kvbm_tokens_extend(struct kvbm_tokens *t, const uint32_t *tokens, size_t n,
				size_t *first_new, size_t *n_new);
/* These four cannot fail; kvbm_tokens_block() is NULL past the last
 * complete block. */
KVBM_API size_t kvbm_tokens_total(const struct kvbm_tokens *t);  /* incl. the partial block */
KVBM_API size_t kvbm_tokens_blocks(const struct kvbm_tokens *t); /* complete blocks */
KVBM_API uint32_t kvbm_tokens_block_size(const struct kvbm_tokens *t);
KVBM_API const struct kvbm_block_hashes *kvbm_tokens_block(const struct kvbm_tokens *t, size_t i);

/* ---- blocks ------------------------------------------------------------ */

/*
 * A block handle names one block of one pool: the pool's instance id, the
 * block id (an index into the caller's own KV storage, 0..block_count-1)
 * and the generation of the slot when the handle was made. It is a plain
 * value: copy it freely, send it to another process. Every call validates
 * it: a handle of another pool gets KVBM_EFOREIGN, one whose slot has been
 * recycled since gets KVBM_ESTALE. The generation has 48 bits: a stale
 * handle validates again only after 2^48 reuses of its slot, years at the
 * fastest a slot can be reused (a 32-bit one took minutes).
 *
 * What a handle allows depends on the block's state:
 *  - MUTABLE (from kvbm_allocate_blocks) and STAGED (after kvbm_stage_block
 *    or kvbm_complete_block) blocks belong to the allocating process alone;
 *  - REGISTERED blocks are shared: each successful match, clone, pin,
 *    upgrade or registration gives the calling process one *hold*, and
 *    every hold is given back with kvbm_release_blocks(). A process's holds
 *    on one block are counted, not told apart: releasing the same handle
 *    twice gives back a hold obtained through another handle, as an
 *    unbalanced refcount would; releasing more holds than the process has
 *    gets KVBM_ENOTHELD. A process's holds die with it.
 * A registered block with holds is "active"; with none it is "inactive":
 * still matchable, and evictable when allocation needs room.
 */
struct kvbm_block {
	uint64_t pool; /* instance id of the pool */
	uint32_t id;   /* block id */
	uint64_t gen;  /* slot generation (48 bits: it never wraps in practice) */
};

/*
 * Allocates @n blocks, all or nothing: from the free (reset) pool first, in
 * FIFO order, then by evicting inactive blocks in the backend's order. The
 * blocks come back MUTABLE in @out. When @evicted is not NULL it receives
 * the sequence hashes of the evicted blocks (room for @n) and *n_evicted
 * their number. Returns 0 (n == 0 included), -ENOSPC when free + inactive
 * blocks are fewer than @n (nothing is taken, after reaping the dead), or
 * the handle errors and the mutex errors.
 */
KVBM_API int kvbm_allocate_blocks(struct kvbm_pool *pool, uint32_t n, struct kvbm_block *out,
				  struct kvbm_plh *evicted, uint32_t *n_evicted);

/* MUTABLE -> STAGED under @hash. @block_size must equal the pool's, else
 * KVBM_ESIZE and the block stays MUTABLE. Errors (here and in every call
 * on an owned block): the handle errors, KVBM_EFOREIGN (another pool's
 * handle), -EINVAL (a block id out of range), KVBM_ESTALE (the slot was
 * recycled), KVBM_ESTATE (not MUTABLE), KVBM_ENOTOWNER (another process's
 * block). */
KVBM_API int kvbm_stage_block(struct kvbm_pool *pool, const struct kvbm_block *blk,
			      struct kvbm_plh hash, uint32_t block_size);
/* MUTABLE -> STAGED under the hash of block @index of @seq (its token count
 * is @seq's block size: KVBM_ESIZE and the block untouched if it differs
 * from the pool's; -ERANGE if @index is not a complete block; -EINVAL for
 * a NULL @seq; else kvbm_stage_block()'s errors). */
KVBM_API int kvbm_complete_block(struct kvbm_pool *pool, const struct kvbm_block *blk,
				 const struct kvbm_tokens *seq, size_t index);
/* STAGED -> MUTABLE (the reference's CompleteBlock::reset). Errors as
 * kvbm_stage_block()'s (KVBM_ESTATE: not STAGED). */
KVBM_API int kvbm_unstage_block(struct kvbm_pool *pool, const struct kvbm_block *blk);
/*
 * kvbm_stage_block() for @n blocks: @blks[i] under @hashes[i], all or
 * nothing. On the first error the blocks already staged are unstaged,
 * *@failed (may be NULL) gets the index of the block that failed, and its
 * error is returned. One call for a batch: a caller that pays for every
 * call (a Python binding, about 300 ns a call) stages 64 blocks in one.
 */
KVBM_API int kvbm_stage_blocks(struct kvbm_pool *pool, const struct kvbm_block *blks,
			       const struct kvbm_plh *hashes, uint32_t n, uint32_t block_size,
			       uint32_t *failed);

/*
 * Registers @n STAGED blocks, in order, in one critical section. Each
 * handle in @blks is updated in place to a hold on the registered block:
 * the same block, which becomes the primary for its hash or, under
 * KVBM_DUP_ALLOW when the hash is already registered, a duplicate (kept
 * out of the registry; it keeps the primary active while it lives and is
 * freed on its last release). Under KVBM_DUP_REJECT the existing primary
 * (resurrected if inactive) is returned instead and the candidate goes back
 * to the free pool. Returns 0 or a negative code: the errors of
 * kvbm_stage_block() (KVBM_ESTATE: not STAGED), -EINVAL (NULL @blks with
 * @n > 0) and the mutex errors (then nothing is
 * registered: every handle is checked before the first registration;
 * only another thread of this process releasing or registering one of
 * them during the call can make it stop part-way, with those before it
 * registered).
 */
KVBM_API int kvbm_register_blocks(struct kvbm_pool *pool, struct kvbm_block *blks, uint32_t n);
/* kvbm_register_blocks() with the blocks' token ids (@n x the pool's block
 * size, block after block; NULL: none), which the STORED events carry (a
 * router recomputes its content hashes from them). Errors as
 * kvbm_register_blocks()'s. */
KVBM_API int kvbm_register_blocks_tokens(struct kvbm_pool *pool, struct kvbm_block *blks,
					 uint32_t n, const uint32_t *tokens);

/*
 * Gives back @n handles of any kind: a MUTABLE or STAGED block returns to
 * the free pool; a hold on a REGISTERED block is dropped, and the block's
 * last hold (over every process) moves a primary to the inactive pool, or
 * straight to the free pool with reset-on-release, and frees a duplicate.
 * Handles are processed in order; on the first bad one the call stops and
 * returns its error (the ones before it are released): the handle errors,
 * KVBM_EFOREIGN, -EINVAL (a block id out of range), KVBM_ESTALE,
 * KVBM_ENOTOWNER (another process's MUTABLE/STAGED block), KVBM_ENOTHELD
 * (a REGISTERED block this process holds no more), the mutex errors.
 */
KVBM_API int kvbm_release_blocks(struct kvbm_pool *pool, const struct kvbm_block *blks,
				 uint32_t n);

/*
 * What the caller knows of a sequence it releases (kvbm_release_blocks_hint).
 * A hint is advice, weighed by how often it has been right: the pool counts,
 * per kind, on a control sample of one hinted release in 16 whose blocks it
 * orders as if unhinted, how many were hit again before eviction (and how
 * late) and how many went unused, and moves a hinted block only as far as
 * that record beats the unhinted blocks' (docs/EVICTION.md, "Hints"). A
 * hint that is always wrong ends up ignored.
 */
enum kvbm_release_hint {
	KVBM_HINT_NONE = 0,      /* no advice: the backend's own order */
	KVBM_HINT_CONTINUES = 1, /* the sequence will continue (a conversation's
				  * next turn, an agent's next step): keep its
				  * blocks longer, up to a pool turnover */
	KVBM_HINT_ONESHOT = 2,   /* it will not be reused: evict these first */
	KVBM_HINT_COUNT
};

/*
 * kvbm_release_blocks() with a hint for the blocks whose last hold this call
 * drops: they enter the inactive pool with @hint, which the backend keeps
 * with the block (a recovery too) until it is evicted or hit again. A
 * release that leaves another hold changes nothing: the hint is the one of
 * the release that makes the block inactive. Honoured by `lineage`, `lfru`
 * and `lru`; the other backends order as without it. Errors: KVBM_EHINT
 * (@hint is not a KVBM_HINT_*; nothing is released), else those of
 * kvbm_release_blocks().
 */
KVBM_API int kvbm_release_blocks_hint(struct kvbm_pool *pool, const struct kvbm_block *blks,
				      uint32_t n, uint32_t hint);

/* The pool's record of release hints (kvbm_hint_stats): per KVBM_HINT_*,
 * over its control sample (recent outcomes: halved as they accumulate). */
struct kvbm_hint_stats {
	uint32_t reused[KVBM_HINT_COUNT]; /* hit again while inactive */
	uint32_t unused[KVBM_HINT_COUNT]; /* evicted without a hit */
	/* how far a hinted block moves now, in ticks (one tick per block
	 * that enters the inactive pool): CONTINUES later, ONESHOT earlier */
	uint64_t boost[KVBM_HINT_COUNT];
	uint64_t horizon; /* ticks an unhinted block lasts before eviction (mean) */
	uint32_t weight_permille[KVBM_HINT_COUNT]; /* boost / horizon, in thousandths:
						    * ONESHOT up to 1000, CONTINUES 4000 */
};
/* Fills @out. Errors: the handle errors, -EINVAL (NULL @out), the mutex
 * errors (it reads under the pool mutex). */
KVBM_API int kvbm_hint_stats(struct kvbm_pool *pool, struct kvbm_hint_stats *out);

/* One more hold on the REGISTERED block @blk (held by this process).
 * Errors (here and in kvbm_pin_block, kvbm_downgrade_block and
 * kvbm_set_reset_on_release): the handle errors, KVBM_EFOREIGN, -EINVAL
 * (a block id out of range, NULL @out), KVBM_ESTALE, KVBM_ESTATE (not
 * REGISTERED), KVBM_ENOTHELD (this process holds none), -EOVERFLOW (this
 * process's holds on the block are at their maximum). */
KVBM_API int kvbm_clone_block(struct kvbm_pool *pool, const struct kvbm_block *blk,
			      struct kvbm_block *out);

/* Per-block reset-on-release (REGISTERED, held): 1 = the last release
 * bypasses the inactive pool. Last writer wins; survives resurrection;
 * forgotten when the slot is evicted or reallocated; ignored for
 * duplicates, which always go back to the free pool. Errors as
 * kvbm_clone_block()'s. */
KVBM_API int kvbm_set_reset_on_release(struct kvbm_pool *pool, const struct kvbm_block *blk,
				       int on);

/*
 * A pin: one hold plus the block's global logical address, (pool instance
 * id, block id, sequence hash). Give it back with kvbm_release_blocks(&pin->block, 1).
 * Errors as kvbm_clone_block()'s.
 */
struct kvbm_pin {
	struct kvbm_block block;
	struct kvbm_plh hash;
};
KVBM_API int kvbm_pin_block(struct kvbm_pool *pool, const struct kvbm_block *blk,
			    struct kvbm_pin *out);

/* A weak handle: names a registered block without holding it. */
struct kvbm_weak {
	struct kvbm_block block;
	struct kvbm_plh hash;
};
/* Makes a weak handle from a held REGISTERED block. Errors as
 * kvbm_clone_block()'s (no hold is taken). */
KVBM_API int kvbm_downgrade_block(struct kvbm_pool *pool, const struct kvbm_block *blk,
				  struct kvbm_weak *out);
/* Takes a hold through @weak: on the same block if it still holds the hash
 * (resurrecting it if inactive), else on whichever block is now registered
 * under the hash. Returns 1 and *out, 0 once the hash is gone, or: the
 * handle errors, -EINVAL (NULL @weak or @out, a block id out of range),
 * KVBM_EFOREIGN, -EOVERFLOW. */
KVBM_API int kvbm_upgrade_block(struct kvbm_pool *pool, const struct kvbm_weak *weak,
				struct kvbm_block *out);

/* What kvbm_block_info() reports about a block. */
enum kvbm_block_state {
	KVBM_BLOCK_RESET = 0,
	KVBM_BLOCK_MUTABLE = 1,
	KVBM_BLOCK_STAGED = 2,
	KVBM_BLOCK_REGISTERED = 3,
	KVBM_BLOCK_EVICTING = 4,
};
struct kvbm_block_info {
	uint32_t state;      /* enum kvbm_block_state */
	int primary;         /* REGISTERED: the registry's block for its hash */
	int inactive;        /* in the inactive pool: REGISTERED, no hold anywhere, no live
			      * duplicate keeping it active (evictable) */
	int reset_on_release;
	uint32_t holds;      /* this process's holds */
	uint32_t holder_procs; /* processes holding it */
	struct kvbm_plh hash; /* STAGED, REGISTERED */
};
/* Describes block @blk (a snapshot). Returns 0, or: the handle errors,
 * -EINVAL (NULL @info, a block id out of range), KVBM_EFOREIGN,
 * KVBM_ESTALE (its generation moved on). */
KVBM_API int kvbm_block_info(struct kvbm_pool *pool, const struct kvbm_block *blk,
			     struct kvbm_block_info *info);

/* ---- events (lib/events.c) ----------------------------------------------- */

/*
 * Every change of the set of registered primaries is an event in the
 * pool's ring (when cfg->event_ring is not 0), appended by whoever makes
 * the change, under the pool mutex: STORED when a block becomes the
 * primary for its hash (a registration that was deduplicated, made a
 * duplicate or resurrected a block emits nothing), REMOVED when a primary
 * leaves the registry (evicted, reset on release, kvbm_reset_inactive_pool),
 * RESYNC when a recovery rebuilt the pool and the stream may have missed
 * changes. Readers take no lock and never slow a writer: each keeps its own
 * cursor (a sequence number) and reads with kvbm_events_read(); one that
 * falls more than the ring's size behind gets KVBM_EGAP, never a silently
 * lost event, and resyncs with kvbm_events_snapshot(), as after RESYNC.
 * The parent and position of a block are in its PLH (kvbm_plh_position,
 * kvbm_plh_parent_fragment); the tier is the pool's (kvbm_pool_info).
 */
enum kvbm_event_kind {
	KVBM_EVENT_STORED = 1,
	KVBM_EVENT_REMOVED = 2,
	KVBM_EVENT_RESYNC = 3,  /* resync: kvbm_events_snapshot() */
	KVBM_EVENT_CLEARED = 4, /* first event of a snapshot: forget every block */
};
struct kvbm_event {
	uint64_t seq;          /* its sequence number in the ring (snapshots: the cursor) */
	uint32_t kind;         /* enum kvbm_event_kind */
	uint32_t ntokens;      /* token ids at tokens (STORED with tokens: block_size) */
	struct kvbm_plh hash;  /* STORED, REMOVED */
	const uint32_t *tokens; /* into the caller's token buffer */
};

/* The sequence number the next event will get: a reader that starts here
 * sees every change from now on. Returns 0, -EOPNOTSUPP (no ring), or the
 * handle errors. */
KVBM_API int kvbm_events_head(struct kvbm_pool *pool, uint64_t *head);

/*
 * Reads up to @max events from *@cursor on into @out, and their token ids
 * into @tokens (room for @ntokens; a STORED event whose tokens do not fit
 * is left for the next call), and advances *@cursor past them. Lock-free,
 * syscall-free. Returns how many (0: nothing new), KVBM_EGAP when the
 * event at *@cursor was overwritten (resync with kvbm_events_snapshot()),
 * -ERANGE for a cursor past the head, -EOPNOTSUPP (no ring), or the
 * handle errors.
 */
KVBM_API long kvbm_events_read(struct kvbm_pool *pool, uint64_t *cursor, struct kvbm_event *out,
			       size_t max, uint32_t *tokens, size_t ntokens);

/*
 * A snapshot of the registry for a reader that resyncs: @fn gets one
 * CLEARED event, then a STORED event (without tokens) for every registered
 * primary, in chain order (position ascending). *@cursor is set to where
 * the ring stood before the snapshot: reading on from there may repeat a
 * STORED the snapshot had, or remove a block it did not (both harmless to
 * a consumer that keeps a set), and misses nothing. Lock-free; allocates.
 * Returns the number of STORED events, or: the handle errors,
 * -EOPNOTSUPP (no ring), -ENOMEM.
 */
KVBM_API long kvbm_events_snapshot(struct kvbm_pool *pool, uint64_t *cursor,
				   void (*fn)(const struct kvbm_event *ev, void *arg), void *arg);

/* ---- matching (lock-free: no lock, no syscall) --------------------------- */

/*
 * Prefix match: walks @hashes in order and stops at the first one that is
 * registered neither as an active nor as an inactive block. Each hit is one
 * hold (an inactive hit is resurrected by the hold itself) written to
 * @out. Returns the number of hits, or the handle errors (-EINVAL: NULL
 * @hashes or @out with @n > 0). A block whose holds by this process are
 * at their maximum ends the prefix there.
 */
KVBM_API long kvbm_match_blocks(struct kvbm_pool *pool, const struct kvbm_plh *hashes, size_t n,
				struct kvbm_block *out);
/* Like kvbm_match_blocks(), but never stops: @out[i] is a hold for
 * @hashes[i] and @found[i] says whether it hit. Repeated hashes each take a
 * hold on the same block. Returns the number of hits, or the handle
 * errors and -ENOMEM. */
KVBM_API long kvbm_match_blocks_scattered(struct kvbm_pool *pool, const struct kvbm_plh *hashes,
					  size_t n, struct kvbm_block *out, uint8_t *found);
/* kvbm_scan_matches() flags. */
#define KVBM_SCAN_TOUCH 1u /* count each hit in the TinyLFU sketch, as a match does */
/* Holds on the blocks of every DISTINCT hash of @hashes that is registered,
 * in order of first occurrence, into @out (room for @n). @flags is 0 or
 * KVBM_SCAN_TOUCH (the reference's `touch`). Returns how many, or the
 * handle errors, -EINVAL (unknown @flags), -E2BIG (@n past 2^30) and
 * -ENOMEM. */
KVBM_API long kvbm_scan_matches(struct kvbm_pool *pool, const struct kvbm_plh *hashes, size_t n,
				unsigned flags, struct kvbm_block *out);
/* The TinyLFU estimate (0..15) of @hash: how often it was registered new or
 * matched recently. 0 when the pool keeps no sketch (KVBM_TINYLFU_NONE, or
 * AUTO with a backend that needs none). Returns it, or the handle errors. */
KVBM_API long kvbm_frequency_estimate(struct kvbm_pool *pool, struct kvbm_plh hash);
/* Counts @hash once in the TinyLFU sketch without matching anything (the
 * reference registry's `touch`; kvbm_touch() is another thing: it runs a
 * hash's touch callbacks). Lock-free. Returns the estimate after the
 * touch (0 without a sketch: then it does nothing), or the handle errors. */
KVBM_API long kvbm_frequency_touch(struct kvbm_pool *pool, struct kvbm_plh hash);
/* How many hashes are registered (the reference's registered_count): one
 * primary each, active or inactive; duplicates do not count. A lock-free
 * snapshot, O(block_count). Returns it, or the handle errors. */
KVBM_API long kvbm_registered_count(struct kvbm_pool *pool);
/* @present[i] = whether @hashes[i] is registered (active or inactive).
 * Takes no hold. Returns the number present, or the handle errors. */
KVBM_API long kvbm_check_presence(struct kvbm_pool *pool, const struct kvbm_plh *hashes,
				  size_t n, uint8_t *present);

/* Free + inactive blocks: what an allocation can get now. These two return
 * the count, or the handle errors. */
KVBM_API long kvbm_available_blocks(struct kvbm_pool *pool);
KVBM_API long kvbm_total_blocks(struct kvbm_pool *pool);
/*
 * Evicts every inactive block to the free pool (no eviction is counted).
 * Then returns 0 if every block is free, or -EBUSY when some are still in
 * use (the drain has happened regardless), or the handle errors and the
 * mutex errors.
 */
KVBM_API int kvbm_reset_inactive_pool(struct kvbm_pool *pool);

/* ---- pins held by the pool (lib/pins.c) ---------------------------------- */

/*
 * A pin held by the pool, not by a process: the blocks registered under
 * @hashes (a prefix's sequence hashes, or any registered hashes) stay
 * unevictable until @ttl_ms milliseconds from now, or until
 * kvbm_unpin_prefix() names them. The pin survives the death of the process
 * that made it (no reaper drops it) and any allocation pressure. It is
 * kept per block: a block's pin ends at the latest deadline any call gave
 * it (pinning again renews it: the deadline never moves earlier), or when
 * an unpin names it. Expiry is exact: the first pool-mutex acquisition (by
 * any process) after a deadline ends it, and kvbmd ends due pins on its
 * timer (kvbm_pins_expire).
 *
 * All or nothing: nothing changes unless every hash is registered and the
 * pool's pinned blocks stay within pin_share percent of the pool. Returns
 * the number of blocks that were not pinned before, or: the handle errors,
 * -EINVAL (NULL @hashes, @n == 0 or more than the pool's block count,
 * @ttl_ms 0 or above KVBM_PIN_TTL_MAX_MS),
 * KVBM_ENOTREG (@hashes[*@failed] is not registered; @failed may be NULL),
 * KVBM_EPINSHARE (the pins would pass the share, or pin_share is 0), the
 * mutex errors.
 */
#define KVBM_PIN_TTL_MAX_MS (366ull * 24 * 3600 * 1000) /* a year */
KVBM_API long kvbm_pin_prefix(struct kvbm_pool *pool, const struct kvbm_plh *hashes, size_t n,
			      uint64_t ttl_ms, size_t *failed);
/* Ends the pool's pins on the blocks registered under @hashes. Hashes that
 * are not registered or not pinned are skipped. Returns the number of
 * blocks unpinned, or: the handle errors, -EINVAL (NULL @hashes, @n == 0),
 * the mutex errors. */
KVBM_API long kvbm_unpin_prefix(struct kvbm_pool *pool, const struct kvbm_plh *hashes, size_t n);

/* The pool's pins (exact: read under the mutex, after expiring due ones). */
struct kvbm_pins_info {
	uint32_t pins;     /* pinned blocks that ended a pin call: the prefixes */
	uint32_t blocks;   /* pinned blocks */
	uint32_t capacity; /* most blocks pins may hold: pin_share % of the pool */
	uint32_t pin_share;
	uint64_t expirations;    /* blocks whose pin expired, since creation */
	uint64_t next_expiry_ms; /* until the earliest deadline; UINT64_MAX: none */
};
/* Returns 0 and *out, or the handle errors, -EINVAL, the mutex errors. */
KVBM_API int kvbm_pins_info(struct kvbm_pool *pool, struct kvbm_pins_info *out);
/* One pinned block. */
struct kvbm_pinned {
	struct kvbm_plh hash;
	uint32_t block;        /* block id */
	int tip;               /* it ended a pin call */
	uint64_t remaining_ms; /* until its deadline, rounded up */
};
/* Lists up to @max pinned blocks, in block id order, into @out (NULL with
 * @max 0: count only). Returns how many blocks are pinned (more than @max
 * when @out was too small), or the handle errors, -EINVAL, the mutex
 * errors. */
KVBM_API long kvbm_pins_list(struct kvbm_pool *pool, struct kvbm_pinned *out, size_t max);
/* Ends every pin whose deadline has passed (what kvbmd's timer calls; any
 * mutex acquisition does it too). Returns the blocks expired by this call,
 * or the handle errors and the mutex errors. */
KVBM_API long kvbm_pins_expire(struct kvbm_pool *pool);

/* ---- attachments and touch callbacks (process-local) ------------------- */

/*
 * A process can hang its own values and callbacks on a registered sequence
 * hash (the reference's registration-handle attachments). They live in this
 * process only (pointers mean nothing elsewhere) and exactly as long as the
 * registration they were made on: while @hash stays registered on the same
 * primary block, resurrections included. Once that block is evicted or
 * reset, the next call on the hash, kvbm_attachments_sweep() or
 * kvbm_pool_close() drops them, calling each value's @free_fn (may be NULL)
 * and forgetting the callbacks; a later registration of the hash starts
 * empty. (Unlike the reference, a weak handle does not keep them alive.)
 *
 * Values are grouped by a caller-chosen @type. A type is used either as a
 * unique value (kvbm_attach_unique replaces the previous one) or as a list
 * (kvbm_attach_multiple appends), never both: KVBM_EUNIQUE / KVBM_EMULTIPLE.
 * Attaching to a hash that is not registered gets -ENOENT.
 *
 * Lookups are lock-free (a liburcu hash table read under RCU); each hash's
 * values are guarded by their own mutex. Callbacks and free functions must
 * not call the attachment functions for the same hash.
 *
 * Errors of every function of this section: the handle errors, -ENOENT
 * (the hash is not registered), -ENOMEM, KVBM_EDEADLK (called on @hash
 * from one of its own callbacks), and for the attach calls KVBM_EUNIQUE /
 * KVBM_EMULTIPLE.
 */
typedef void (*kvbm_value_free_fn)(void *value);
KVBM_API int kvbm_attach_unique(struct kvbm_pool *pool, struct kvbm_plh hash, uint32_t type,
				void *value, kvbm_value_free_fn free_fn);
KVBM_API int kvbm_attach_multiple(struct kvbm_pool *pool, struct kvbm_plh hash, uint32_t type,
				  void *value, kvbm_value_free_fn free_fn);
/*
 * Calls @fn(value, @arg) on the values of @type attached to @hash (the
 * unique one, or the list in attach order) while holding the hash's mutex,
 * so @fn may modify them (the reference's with_unique_mut/with_multiple_mut).
 * @fn may call the attachment functions on other hashes (and each() again);
 * on @hash itself they return KVBM_EDEADLK. Returns how many values it
 * visited (0 for none), or -ENOENT when the hash is not registered.
 */
KVBM_API long kvbm_attachments_each(struct kvbm_pool *pool, struct kvbm_plh hash, uint32_t type,
				    void (*fn)(void *value, void *arg), void *arg);
/* Reports how @type is used on @hash: 0 not at all, 1 unique, 2 multiple;
 * or -ENOENT. */
KVBM_API int kvbm_attachment_kind(struct kvbm_pool *pool, struct kvbm_plh hash, uint32_t type);
/* Drops every value and callback of @hash now. Returns how many values were
 * dropped, or -ENOENT when the hash has none. */
KVBM_API long kvbm_attachments_clear(struct kvbm_pool *pool, struct kvbm_plh hash);
/* Drops the attachments of every hash whose registration has ended.
 * Returns how many hashes were dropped. */
KVBM_API long kvbm_attachments_sweep(struct kvbm_pool *pool);

/* A touch callback: the reference's on_touch(). */
typedef void (*kvbm_touch_fn)(struct kvbm_plh hash, void *arg);
/* Adds @fn to the callbacks of the registered @hash. Returns 0 or -ENOENT. */
KVBM_API int kvbm_on_touch(struct kvbm_pool *pool, struct kvbm_plh hash, kvbm_touch_fn fn,
			   void *arg);
/* Calls every touch callback of @hash, in the order they were added (not
 * under any lock: a callback may add callbacks). Returns how many it
 * called, or -ENOENT when the hash is not registered. */
KVBM_API long kvbm_touch(struct kvbm_pool *pool, struct kvbm_plh hash);

/* ---- metrics ------------------------------------------------------------ */

/* The reference's 19 counters and gauges (kvbm-logical BlockPoolMetrics),
 * summed over every process that ever attached. */
struct kvbm_metrics {
	uint64_t allocations;
	uint64_t allocations_from_reset;
	uint64_t evictions;
	uint64_t registrations;
	uint64_t duplicate_blocks;
	uint64_t registration_dedup;
	uint64_t stagings;
	uint64_t match_hashes_requested;
	uint64_t match_blocks_returned;
	uint64_t scan_hashes_requested;
	uint64_t scan_blocks_returned;
	uint64_t eager_primary_to_inactive;
	uint64_t allocate_atomic_rollback;
	uint64_t release_primary_noop;
	uint64_t release_duplicate_noop;
	int64_t inflight_mutable;   /* MUTABLE blocks */
	int64_t inflight_immutable; /* holds on REGISTERED blocks */
	int64_t reset_pool_size;    /* free blocks */
	int64_t inactive_pool_size; /* inactive blocks */
	uint64_t index_full;        /* registrations the index had no room for */
	/* recounts of the inactive pool (after a reap or a recovery) given up
	 * because a live process stayed inside a resurrection window past
	 * the bound (stopped, or preempted); retried later */
	uint64_t recounts_deferred;
	/* How long the pool mutex was held, each critical section of every
	 * process: how many, their sum in ns, and how many took at most 1, 4,
	 * 16, 64 and 256 us (cumulative, as Prometheus buckets are). Appended
	 * in 0.1: the snapshot fills the whole struct, so a program built
	 * against an older kvbm.h must be rebuilt with this one. */
	uint64_t mutex_hold_count;
	uint64_t mutex_hold_ns;
	uint64_t mutex_hold_le[5];
	/* Pins held by the pool (kvbm_pin_prefix): pins (the blocks that
	 * ended a pin call), pinned blocks, the most blocks the pin share
	 * allows, and blocks whose pin expired. Appended in 0.1 (rebuild). */
	int64_t pins_active;
	int64_t pinned_blocks;
	int64_t pin_capacity;
	uint64_t pin_expirations;
};
/* Sums the pool's metrics into *out. Returns 0 or the handle errors. */
KVBM_API int kvbm_metrics_snapshot(struct kvbm_pool *pool, struct kvbm_metrics *out);

/*
 * Writes the Prometheus text exposition of @m (every family with the
 * reference's name, e.g. kvbm_allocations_total, labelled pool="@tier"
 * followed by the @nlabels (name, value) pairs of @labels) into @buf.
 * Returns the length it needs (like snprintf) or -EINVAL (NULL @m or
 * @tier, NULL @labels with @nlabels > 0, NULL @buf with @len > 0).
 */
KVBM_API long kvbm_metrics_prometheus(const struct kvbm_metrics *m, const char *tier,
				      const char *const (*labels)[2], size_t nlabels, char *buf,
				      size_t len);

/* ---- stats collector (kvbm-logical StatsCollector) ----------------------- */

/*
 * Rates, hit ratios and gradients computed from successive metric samples,
 * kept in a ring of the last window_size samples. Process-local; disabled
 * when created (sampling is then a no-op). The caller samples at its own
 * interval (the reference's default is 1 s). Thread-safe.
 */
struct kvbm_stats;
struct kvbm_stats_snapshot {
	uint64_t t_ns;              /* CLOCK_MONOTONIC of the sample */
	double allocation_rate;     /* allocations per second since the previous sample */
	double eviction_rate;
	double match_hit_rate;      /* delta returned / delta requested, 0 without requests */
	double scan_hit_rate;
	double allocation_gradient; /* change of the rate per second */
	double eviction_gradient;
	int64_t inflight_mutable;
	int64_t inflight_immutable;
	int64_t reset_pool_size;
	int64_t inactive_pool_size;
};
/* @window_size 0 means the reference's 60. Returns 0 and *out, -EINVAL
 * (NULL @out) or -ENOMEM. kvbm_stats_free, _set_enabled and _is_enabled
 * cannot fail. */
KVBM_API int kvbm_stats_new(struct kvbm_pool *pool, uint32_t window_size, struct kvbm_stats **out);
KVBM_API void kvbm_stats_free(struct kvbm_stats *st);
KVBM_API void kvbm_stats_set_enabled(struct kvbm_stats *st, int on);
KVBM_API int kvbm_stats_is_enabled(struct kvbm_stats *st);
/* Takes a sample of the pool's metrics now. Returns 1 sampled, 0 disabled,
 * or -EINVAL (NULL @st) and the handle errors. */
KVBM_API int kvbm_stats_sample(struct kvbm_stats *st);
/* The same from given metrics at a given time (deterministic, for tests
 * and replays). Returns 1, 0 or -EINVAL (NULL @st or @m). */
KVBM_API int kvbm_stats_sample_at(struct kvbm_stats *st, const struct kvbm_metrics *m,
				  uint64_t t_ns);
/* The newest sample: 1 and *out, 0 when there is none, -EINVAL (NULL). */
KVBM_API int kvbm_stats_latest(struct kvbm_stats *st, struct kvbm_stats_snapshot *out);
/* Up to @n newest samples, oldest first. Returns how many were written
 * (0 for NULL arguments). */
KVBM_API size_t kvbm_stats_window(struct kvbm_stats *st, size_t n,
				  struct kvbm_stats_snapshot *out);

#ifdef __cplusplus
}
#endif
#endif /* KVBM_H */
