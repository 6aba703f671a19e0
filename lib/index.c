/* SPDX-License-Identifier: Apache-2.0 */
/*
 * index.c - see index.h. Two-choice buckets of 8, partial-key alternate
 * bucket (DPDK rte_hash's trick), no cuckoo displacement.
 */
#include <errno.h>

#include "index.h"

struct where {
	uint32_t b1, b2;
	uint32_t tag; /* 16 bits; a uint16_t here made gcc return the struct
		       * through a 16-bit store and a 32-bit load of the stack,
		       * a store-forwarding stall that cost 40% of a lookup */
};

static uint64_t mix64(uint64_t x)
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

static inline __attribute__((always_inline)) struct where locate(const struct kvbm_index *ix,
								 struct kvbm_plh key)
{
	uint64_t h = mix64(key.lo ^ (key.hi << 29 | key.hi >> 35) ^ key.hi);
	struct where w;
	uint32_t alt;

	w.tag = (uint16_t)(h >> 48);
	w.b1 = (uint32_t)h & ix->mask;
	/* the alternate bucket depends on the tag only, and always differs;
	 * a multiplicative hash of 16 bits is spread enough, and one full mix
	 * per lookup is what the match path can afford */
	alt = (uint32_t)(((w.tag | 0x10000ull) * 0x9e3779b97f4a7c15ull) >> 32) & ix->mask;
	w.b2 = w.b1 ^ (alt ? alt : 1);
	return w;
}

void kvbm_index_view(struct kvbm_index *ix, struct kvbm_shm_bucket *buckets, uint32_t nbuckets,
		     struct kvbm_shm_slot *slots, uint32_t nslots)
{
	ix->buckets = buckets;
	ix->mask = nbuckets - 1;
	ix->slots = slots;
	ix->nslots = nslots;
}

int kvbm_index_insert(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t slot,
		      uint32_t gen)
{
	struct where w = locate(ix, key);
	uint32_t bs[2] = {w.b1, w.b2};

	for (int k = 0; k < 2; k++) {
		struct kvbm_shm_bucket *b = &ix->buckets[bs[k]];
		for (int i = 0; i < KVBM_BUCKET_ENTRIES; i++) {
			if (__atomic_load_n(&b->slot[i], __ATOMIC_RELAXED) != 0)
				continue;
			__atomic_store_n(&b->gen_lo[i], (uint16_t)gen, __ATOMIC_RELAXED);
			__atomic_store_n(&b->tag[i], (uint16_t)w.tag, __ATOMIC_RELAXED);
			/* release: a reader that acquire-loads the slot sees the
			 * tag and gen_lo written above (and the slot's key and
			 * REGISTERED state, published before the insert) */
			__atomic_store_n(&b->slot[i], slot + 1, __ATOMIC_RELEASE);
			return 0;
		}
	}
	return -ENOSPC;
}

int kvbm_index_delete(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t slot)
{
	struct where w = locate(ix, key);
	uint32_t bs[2] = {w.b1, w.b2};

	for (int k = 0; k < 2; k++) {
		struct kvbm_shm_bucket *b = &ix->buckets[bs[k]];
		for (int i = 0; i < KVBM_BUCKET_ENTRIES; i++) {
			if (__atomic_load_n(&b->slot[i], __ATOMIC_RELAXED) != slot + 1 ||
			    __atomic_load_n(&b->tag[i], __ATOMIC_RELAXED) != w.tag)
				continue;
			/* release: pairs with the reader's acquire; a reader
			 * still holding the old value validates the slot */
			__atomic_store_n(&b->slot[i], 0, __ATOMIC_RELEASE);
			return 0;
		}
	}
	return -ENOENT;
}

/* Validates entry (@s1, @gl) against its slot; 1 on a hit. */
static int validate(const struct kvbm_index *ix, uint32_t s1, uint16_t gl, struct kvbm_plh key,
		    uint32_t *slot, uint32_t *gen)
{
	if (s1 == 0 || s1 > ix->nslots)
		return 0; /* every index read from the segment is bounds-checked */
	const struct kvbm_shm_slot *sl = &ix->slots[s1 - 1];
	/* acquire: pairs with the release that published REGISTERED; the
	 * key written before it is visible */
	uint64_t w1 = __atomic_load_n(&sl->state, __ATOMIC_ACQUIRE);
	if (kvbm_slot_state(w1) != KVBM_SLOT_REGISTERED ||
	    !(kvbm_slot_flags(w1) & KVBM_SLOT_F_PRIMARY) || (uint16_t)kvbm_slot_gen(w1) != gl)
		return 0;
	/* acquire on the key loads keeps the second state load after them
	 * (a seqlock reader without a fence, which TSan cannot model): an
	 * unchanged state word (the generation is a seqcount) proves the key
	 * was not cleared or rewritten in between */
	uint64_t hi = __atomic_load_n(&sl->key_hi, __ATOMIC_ACQUIRE);
	uint64_t lo = __atomic_load_n(&sl->key_lo, __ATOMIC_ACQUIRE);
	if (__atomic_load_n(&sl->state, __ATOMIC_RELAXED) != w1)
		return 0;
	if (hi != key.hi || lo != key.lo)
		return 0;
	*slot = s1 - 1;
	*gen = kvbm_slot_gen(w1);
	return 1;
}

int kvbm_index_lookup(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t *slot,
		      uint32_t *gen)
{
	struct where w = locate(ix, key);
	uint32_t bs[2] = {w.b1, w.b2};

	for (int k = 0; k < 2; k++) {
		const struct kvbm_shm_bucket *b = &ix->buckets[bs[k]];
		for (int i = 0; i < KVBM_BUCKET_ENTRIES; i++) {
			if (__atomic_load_n(&b->tag[i], __ATOMIC_RELAXED) != w.tag)
				continue;
			/* acquire: pairs with the insert's release store */
			uint32_t s1 = __atomic_load_n(&b->slot[i], __ATOMIC_ACQUIRE);
			uint16_t gl = __atomic_load_n(&b->gen_lo[i], __ATOMIC_RELAXED);
			if (validate(ix, s1, gl, key, slot, gen))
				return 1;
		}
	}
	return 0;
}

int kvbm_index_entry_check(const struct kvbm_index *ix, uint32_t b, int i)
{
	const struct kvbm_shm_bucket *bk = &ix->buckets[b];
	uint32_t s1 = __atomic_load_n(&bk->slot[i], __ATOMIC_ACQUIRE);
	uint32_t s, g;

	if (s1 == 0)
		return 1;
	if (s1 > ix->nslots)
		return -1;
	const struct kvbm_shm_slot *sl = &ix->slots[s1 - 1];
	struct kvbm_plh key = {__atomic_load_n(&sl->key_hi, __ATOMIC_ACQUIRE),
			       __atomic_load_n(&sl->key_lo, __ATOMIC_ACQUIRE)};
	if (!validate(ix, s1, __atomic_load_n(&bk->gen_lo[i], __ATOMIC_RELAXED), key, &s, &g))
		return -1;
	struct where w = locate(ix, key);
	if ((b != w.b1 && b != w.b2) || __atomic_load_n(&bk->tag[i], __ATOMIC_RELAXED) != w.tag)
		return -2;
	if (!kvbm_index_lookup(ix, key, &s, &g) || s != s1 - 1)
		return -3;
	return 0;
}
