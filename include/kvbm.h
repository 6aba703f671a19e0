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
 *    negated errno values (-ENOENT, -EACCES, -ENOSPC, ...).
 *  - A handle belongs to the process that opened it. After fork() the child
 *    must not use it: every call fails with KVBM_EFORKED, and
 *    kvbm_pool_close() in the child only frees the child's copy (the
 *    parent's attachment is untouched). Open the pool again in the child.
 *  - All attachers must share one PID namespace, one glibc ABI and one
 *    build of the shared layout (checked at attach: KVBM_EABI, KVBM_ELAYOUT).
 *  - A handle may be used by several threads of its process at once.
 *  - Never truncate or overwrite a pool's file while it is attached.
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
	KVBM_ELAST = KVBM_EBASE - 16,
};

/* Returns a static, human-readable description of any kvbm return code. */
KVBM_API const char *kvbm_strerror(int err);

/* Returns the library version as "MAJOR.MINOR.PATCH". */
KVBM_API const char *kvbm_version(void);

/* ---- pool configuration ------------------------------------------------- */

#define KVBM_MAX_PROCS 64     /* width of the per-slot holder bitmask */
#define KVBM_NAME_MAX 128     /* longest pool name, without terminator */
#define KVBM_MAX_BLOCKS (1u << 28)

/* kvbm_config.flags */
#define KVBM_CFG_HUGEPAGES 0x1u /* back the segment with transparent hugepages */

struct kvbm_config {
	uint32_t block_count;     /* blocks in the pool, 1..KVBM_MAX_BLOCKS */
	uint32_t block_size;      /* tokens per block: power of two 1..1024 (16) */
	uint32_t max_procs;       /* concurrent attachers, 1..64 (16) */
	uint32_t mode;            /* file mode of the segment (0600) */
	int64_t gid;              /* group owning the segment, -1 = creator's */
	uint32_t flags;           /* KVBM_CFG_* */
	uint32_t open_timeout_ms; /* how long an attacher waits for a creator (10000) */
};

/* Fills *cfg with the defaults noted above (block_count 1024). */
KVBM_API void kvbm_config_init(struct kvbm_config *cfg);

/* ---- attach and detach -------------------------------------------------- */

struct kvbm_pool; /* opaque per-process attach handle */

/* kvbm_pool_open() flags */
#define KVBM_OPEN_CREATE 0x1u /* create the pool if it does not exist */
#define KVBM_OPEN_EXCL 0x2u   /* with CREATE: fail with -EEXIST if it exists */

/*
 * Attaches to the pool @name, creating it from @cfg when KVBM_OPEN_CREATE is
 * given and it does not exist (or its creator died mid-initialisation). Of
 * many processes creating one name at once exactly one initialises it; the
 * others wait (up to cfg->open_timeout_ms) and attach. When the pool exists,
 * a non-NULL @cfg must agree with it on block_count, block_size and
 * max_procs (else KVBM_EMISMATCH). @cfg may be NULL without CREATE.
 *
 * Returns 0 and *out, or: KVBM_ENAME, -EINVAL (bad config), -ENOENT,
 * -EEXIST, -EACCES, -ENOSPC (/dev/shm full), KVBM_ENOHUGE, KVBM_EBADMAGIC,
 * KVBM_EABI, KVBM_ELAYOUT, KVBM_ETRUNCATED, KVBM_ECORRUPT,
 * KVBM_EINITIALIZING, KVBM_EPOISONED, KVBM_EPROCFULL, KVBM_EMISMATCH,
 * -ENOMEM.
 */
KVBM_API int kvbm_pool_open(const char *name, const struct kvbm_config *cfg, unsigned flags,
			    struct kvbm_pool **out);

/*
 * Detaches: frees this process's table entry and unmaps the segment. The
 * pool lives on for other attachers. In a forked child it only frees the
 * child's copy of the handle. Returns 0 or a negative code (the handle is
 * freed either way).
 */
KVBM_API int kvbm_pool_close(struct kvbm_pool *pool);

/* kvbm_pool_destroy() flags */
#define KVBM_DESTROY_FORCE 0x1u /* remove the name even while processes are attached */

/*
 * Removes the pool's name. Attached processes keep working on their mapping
 * until they detach; new opens no longer find it. Returns 0, -ENOENT,
 * KVBM_ENAME, -EACCES, or -EBUSY when live processes are attached and
 * KVBM_DESTROY_FORCE is not given.
 */
KVBM_API int kvbm_pool_destroy(const char *name, unsigned flags);

/*
 * Frees the table entries of attached processes that are provably dead
 * (their liveness lock is free, or their pid + start time are gone). Live
 * processes are never touched. Returns the number reaped, or a negative code.
 */
KVBM_API int kvbm_reap(struct kvbm_pool *pool);

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

/* Fills *info for @pool. Returns 0 or a negative code. */
KVBM_API int kvbm_pool_info(struct kvbm_pool *pool, struct kvbm_pool_info *info);

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

KVBM_API uint64_t kvbm_block_hash(const uint32_t *tokens, size_t n, uint64_t salt);
KVBM_API uint64_t kvbm_chain_hash(uint64_t parent_seq_hash, uint64_t block_hash);
/* The canonical salt of a request (dynamo-kv-hashing compute_salt_hash):
 * NULL or "" means absent. */
KVBM_API uint64_t kvbm_salt_hash(const char *cache_namespace, const char *lora_name);

/* Builds PLH(current, parent, position); @parent NULL for the root.
 * Returns 0 or -ERANGE when position > KVBM_PLH_MAX_POSITION. */
KVBM_API int kvbm_plh_make(uint64_t current, const uint64_t *parent, uint32_t position,
			   struct kvbm_plh *out);
/* The PLH of the child block with block hash @child_block_hash. */
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
 * A growing token sequence (the reference's TokenBlockSequence): tokens are
 * appended, and every block they complete is hashed once. Not thread-safe.
 */
struct kvbm_tokens;
KVBM_API int kvbm_tokens_new(uint32_t block_size, uint64_t salt, struct kvbm_tokens **out);
KVBM_API void kvbm_tokens_free(struct kvbm_tokens *t);
/* Appends @n tokens. *first_new / *n_new (may be NULL) receive the range of
 * blocks they completed. Returns 0 or -ENOMEM / -ERANGE. */
KVBM_API int kvbm_tokens_extend(struct kvbm_tokens *t, const uint32_t *tokens, size_t n,
				size_t *first_new, size_t *n_new);
KVBM_API size_t kvbm_tokens_total(const struct kvbm_tokens *t);  /* incl. the partial block */
KVBM_API size_t kvbm_tokens_blocks(const struct kvbm_tokens *t); /* complete blocks */
KVBM_API const struct kvbm_block_hashes *kvbm_tokens_block(const struct kvbm_tokens *t, size_t i);

#ifdef __cplusplus
}
#endif
#endif /* KVBM_H */
