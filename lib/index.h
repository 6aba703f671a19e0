/* SPDX-License-Identifier: Apache-2.0 */
/*
 * index.h - the registry index: 128-bit sequence hash -> primary slot.
 * PRIVATE.
 *
 * Concurrency rules (docs/PROTOCOL.md):
 *  - writers (insert, delete) hold the pool mutex;
 *  - readers (lookup) take no lock and make no syscall. Entries never
 *    move; a hit is validated against the slot's state word (REGISTERED,
 *    PRIMARY, generation) and full key, read between two loads of the
 *    state word, so a hit is never false. A key that stays registered
 *    during the whole lookup is always found;
 *  - an evictor commits the slot's new generation BEFORE it deletes the
 *    entry and clears the key (rule 5), so a reader that still finds the
 *    entry fails the generation check instead of reading a cleared key.
 * Works on any memory (a segment region or plain memory in tests).
 */
#ifndef KVBM_LIB_INDEX_H
#define KVBM_LIB_INDEX_H

#include <emmintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "kvbm.h"
#include "../shm/layout.h"

struct kvbm_index {
	struct kvbm_shm_bucket *buckets;
	uint32_t mask; /* buckets - 1 */
	struct kvbm_shm_slot *slots;
	uint32_t nslots;
	struct kvbm_shm_bucket *stash; /* KVBM_INDEX_STASH_BUCKETS after buckets */
	uint32_t *stash_used;          /* its entries (struct kvbm_shm_stash_head) */
};

/* @buckets: a registry region of kvbm_index_region_size() bytes, whose
 * table has @nbuckets buckets (a power of two). */
void kvbm_index_view(struct kvbm_index *ix, struct kvbm_shm_bucket *buckets, uint32_t nbuckets,
		     struct kvbm_shm_slot *slots, uint32_t nslots);

/* Writer, mutex held: adds @key -> (@slot, @gen), to the stash when both
 * candidate buckets are full. Returns 0, or -ENOSPC when the stash is full
 * too (the block is then not shareable). */
int kvbm_index_insert(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t slot,
		      uint64_t gen);
/* Writer, mutex held: removes the entry of @key that names @slot.
 * Returns 0 or -ENOENT. */
int kvbm_index_delete(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t slot);

struct kvbm_where {
	uint32_t b1, b2;
	uint32_t tag; /* 16 bits; a uint16_t here made gcc return the struct
		       * through a 16-bit store and a 32-bit load of the stack,
		       * a store-forwarding stall that cost 40% of a lookup */
};

static inline uint64_t kvbm_index_mix(uint64_t x)
{
	/* murmur3 finaliser: PLH bits are structured (mode, position,
	 * shifted chain hash), the bucket bits must not be */
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static inline uint64_t kvbm_index_hash(struct kvbm_plh key)
{
	/* one folded 64x64->128 multiply (wyhash's "mum") over both halves:
	 * 5 instructions where the murmur finaliser of a 3-way combine took
	 * 20 per lookup. Real keys are XXH3 output already; the fold still
	 * spreads structured ones (small integers in either half, the same
	 * chain hash at other positions), and its high half carries every
	 * input bit into both the bucket (low bits) and the tag (high bits).
	 * Part of the segment format (KVBM_ABI_MAJOR 8). */
	__uint128_t m = (__uint128_t)(key.hi ^ 0x2d358dccaa6c78a5ull) *
			(key.lo ^ 0x8bb84b93962eacc9ull);

	return (uint64_t)m ^ (uint64_t)(m >> 64);
}

static inline uint32_t kvbm_index_tag(uint64_t h)
{
	return (uint16_t)(h >> 48);
}

/* The other bucket of a key with @tag in bucket @b: it depends on the tag
 * only, so an entry's two buckets are each other's alternate, and always
 * differ. A multiplicative hash of 16 bits is spread enough, and one full
 * mix per lookup is what the match path can afford; computed only when
 * the first bucket misses. */
static inline uint32_t kvbm_index_alt(const struct kvbm_index *ix, uint32_t b, uint32_t tag)
{
	uint32_t alt = (uint32_t)(((tag | 0x10000ull) * 0x9e3779b97f4a7c15ull) >> 32) & ix->mask;

	return b ^ (alt ? alt : 1);
}

static inline __attribute__((always_inline)) struct kvbm_where
kvbm_index_locate(const struct kvbm_index *ix, struct kvbm_plh key)
{
	uint64_t h = kvbm_index_hash(key);
	struct kvbm_where w;

	w.tag = kvbm_index_tag(h);
	w.b1 = (uint32_t)h & ix->mask;
	w.b2 = kvbm_index_alt(ix, w.b1, w.tag);
	return w;
}

/* A lookup's answer: slot + 1 (0: a miss) and its generation. Returned in
 * two registers (the functions are inline), never through the stack. */
struct kvbm_hit {
	uint64_t gen;
	uint32_t s1;
};
#define KVBM_INDEX_MISS ((struct kvbm_hit){0, 0})

/* The bits of a slot's state word that an index entry's validation
 * compares: the state, the PRIMARY flag and the generation's low 16 bits. */
#define KVBM_INDEX_VALID_MASK (0xfull | (uint64_t)KVBM_SLOT_F_PRIMARY << 4 | 0xffffull << 16)

/* Validates entry (@s1, @gl) against its slot: the hit, or a miss.
 * Without @exact the state word is not re-read after the key: a slot
 * changing meanwhile may yield a candidate that a later check has to
 * reject (see kvbm_index_find). */
static inline __attribute__((always_inline)) struct kvbm_hit
kvbm_index_validate(const struct kvbm_index *ix, uint32_t s1, uint16_t gl, struct kvbm_plh key,
		    int exact)
{
	/* every index read from the segment is bounds-checked; s1 == 0 (an
	 * empty entry whose stale tag matched) wraps around and fails too */
	if (s1 - 1 >= ix->nslots)
		return KVBM_INDEX_MISS;
	const struct kvbm_shm_slot *sl = &ix->slots[s1 - 1];
	/* acquire: pairs with the release that published REGISTERED
	 * (register_one in block.c, or kvbm_store_unevict and recovery
	 * restoring it): the key written before it is visible */
	uint64_t w1 = __atomic_load_n(&sl->state, __ATOMIC_ACQUIRE);
	/* REGISTERED, PRIMARY and the entry's generation in one compare (the
	 * owner byte and the other flags are not looked at) */
	if ((w1 ^ kvbm_slot_word(gl, 0, KVBM_SLOT_F_PRIMARY, KVBM_SLOT_REGISTERED)) &
	    KVBM_INDEX_VALID_MASK)
		return KVBM_INDEX_MISS;
	/* acquire on the key loads keeps the second state load after them
	 * (a seqlock reader without a fence, which TSan cannot model): an
	 * unchanged state word (the generation is a seqcount) proves the key
	 * was not cleared or rewritten in between. The writers store the key
	 * relaxed after the new generation (kvbm_store_evict_commit, then
	 * kvbm_store_fresh; a new owner's kvbm_stage_block): no release
	 * pairs with these loads, TSO orders those stores (kvbm.h) */
	uint64_t hi = __atomic_load_n(&sl->key_hi, __ATOMIC_ACQUIRE);
	uint64_t lo = __atomic_load_n(&sl->key_lo, __ATOMIC_ACQUIRE);
	/* relaxed: the acquires above keep it after the key loads */
	if ((exact && __atomic_load_n(&sl->state, __ATOMIC_RELAXED) != w1) || hi != key.hi ||
	    lo != key.lo)
		return KVBM_INDEX_MISS;
	return (struct kvbm_hit){kvbm_slot_gen(w1), s1};
}

/* The tag @tag in each of the 8 lanes of a bucket's tag array. */
static inline __m128i kvbm_index_tags(uint32_t tag)
{
	return _mm_set1_epi16((short)tag);
}

/*
 * Bit i set when entry i of @b has the tag in @tags (one compare of the
 * whole tag array, as F14 and Swiss tables do: a branch on a hit's place
 * in the bucket was the lookup's most taken branch). The 16-byte load is
 * an asm statement: the compiler must read the array once, as the relaxed
 * loads it replaces did, and x86 loads each aligned 16-bit lane whole. A
 * tag is only a filter (a stale one costs a validation that fails, or a
 * miss on an entry being changed), so the racing writers' stores need no
 * stronger read; ThreadSanitizer does not see it, as it sees no filter.
 */
static inline __attribute__((always_inline)) unsigned
kvbm_index_match_tags(const struct kvbm_shm_bucket *b, __m128i tags)
{
	__m128i v;

	__asm__("movdqu %1, %0" : "=x"(v) : "m"(*(const __m128i_u *)b->tag));
	v = _mm_cmpeq_epi16(v, tags);
	return (unsigned)_mm_movemask_epi8(_mm_packs_epi16(v, _mm_setzero_si128()));
}

/* The hit among bucket @b's entries tagged like @key, or a miss. At most
 * 8 validations: the walk is bounded by the bucket. */
static inline __attribute__((always_inline)) struct kvbm_hit
kvbm_index_scan(const struct kvbm_index *ix, const struct kvbm_shm_bucket *b, __m128i tags,
		struct kvbm_plh key, int exact)
{
	for (uint64_t m = kvbm_index_match_tags(b, tags); m; m &= m - 1) {
		uint32_t i = (uint32_t)__builtin_ctzll(m);
		/* acquire: pairs with kvbm_index_insert's release store
		 * of the slot: gen_lo (relaxed, below) and the slot's
		 * REGISTERED word and key are the inserter's or newer */
		uint32_t s1 = __atomic_load_n(&b->slot[i], __ATOMIC_ACQUIRE);
		uint16_t gl = __atomic_load_n(&b->gen_lo[i], __ATOMIC_RELAXED);
		struct kvbm_hit f = kvbm_index_validate(ix, s1, gl, key, exact);
		if (f.s1)
			return f;
	}
	return KVBM_INDEX_MISS;
}

/* kvbm_index_find's search of the alternate bucket of (@b1, @tag), then of
 * the stash when it has entries. */
struct kvbm_hit kvbm_index_find_alt(const struct kvbm_index *ix, uint32_t b1, uint32_t tag,
				    uint64_t key_hi, uint64_t key_lo, int exact);

/*
 * Reader, lock-free: the REGISTERED primary holding @key (slot + 1 and
 * generation), or a miss (s1 == 0). The result is a candidate to pin, not a
 * reference. Inline: it is most of a match.
 *
 * @exact re-reads the state word after the key (a seqlock read), so a hit
 * is never false. Without it (0.6 ns of a 7 ns match) a slot re-keyed
 * during the lookup may pass with a torn key, and the caller must prove
 * the hit: a pin that finds the slot still REGISTERED with that
 * generation and then re-reads the key (rules 1 and 6), or a hold of ours
 * that spans the lookup (the slot could not change under it). A key that
 * stays registered during the whole lookup is found either way.
 */
static inline __attribute__((always_inline)) struct kvbm_hit
kvbm_index_find(const struct kvbm_index *ix, struct kvbm_plh key, int exact)
{
	uint64_t h = kvbm_index_hash(key);
	uint32_t tag = kvbm_index_tag(h), bi = (uint32_t)h & ix->mask;
	struct kvbm_hit f = kvbm_index_scan(ix, &ix->buckets[bi], kvbm_index_tags(tag), key, exact);

	/* the alternate bucket is out of line: at <= 25% load nearly every
	 * key sits in its first one, and a prefix match's second bucket is
	 * searched once per call, for the key that ends the prefix */
	return f.s1 ? f : kvbm_index_find_alt(ix, bi, tag, key.hi, key.lo, exact);
}

/* The same, as 1 and (*slot, *gen), or 0. */
int kvbm_index_lookup(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t *slot,
		      uint64_t *gen);

/* Checker: entry @i of bucket @b (the stash's buckets follow the table's:
 * @b up to mask + KVBM_INDEX_STASH_BUCKETS). 0 valid, 1 empty, -1 names no
 * REGISTERED primary of its generation, -2 in a bucket or with a tag its
 * key would not have, -3 not what a lookup of its key finds. */
int kvbm_index_entry_check(const struct kvbm_index *ix, uint32_t b, int i);
/* The bucket the checker and the rebuild call @b: the table's, then the
 * stash's. */
static inline struct kvbm_shm_bucket *kvbm_index_bucket(const struct kvbm_index *ix, uint32_t b)
{
	return b <= ix->mask ? &ix->buckets[b] : &ix->stash[b - ix->mask - 1];
}
/* Entries in the stash, counted (mutex held, or a checker's snapshot). */
uint32_t kvbm_index_stash_count(const struct kvbm_index *ix);

#endif /* KVBM_LIB_INDEX_H */
