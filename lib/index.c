/* SPDX-License-Identifier: Apache-2.0 */
/*
 * index.c - see index.h. Two-choice buckets of 8, partial-key alternate
 * bucket (DPDK rte_hash's trick), no cuckoo displacement.
 */
#include <errno.h>

#include "index.h"

void kvbm_index_view(struct kvbm_index *ix, struct kvbm_shm_bucket *buckets, uint32_t nbuckets,
		     struct kvbm_shm_slot *slots, uint32_t nslots)
{
	ix->buckets = buckets;
	ix->mask = nbuckets - 1;
	ix->slots = slots;
	ix->nslots = nslots;
}

int kvbm_index_insert(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t slot,
		      uint64_t gen)
{
	struct kvbm_where w = kvbm_index_locate(ix, key);
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
	struct kvbm_where w = kvbm_index_locate(ix, key);
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

int kvbm_index_lookup(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t *slot,
		      uint64_t *gen)
{
	struct kvbm_hit f = kvbm_index_find(ix, key, 1);

	if (!f.s1)
		return 0;
	*slot = f.s1 - 1;
	*gen = f.gen;
	return 1;
}

int kvbm_index_entry_check(const struct kvbm_index *ix, uint32_t b, int i)
{
	const struct kvbm_shm_bucket *bk = &ix->buckets[b];
	uint32_t s1 = __atomic_load_n(&bk->slot[i], __ATOMIC_ACQUIRE);
	uint32_t s;
	uint64_t g;

	if (s1 == 0)
		return 1;
	if (s1 > ix->nslots)
		return -1;
	const struct kvbm_shm_slot *sl = &ix->slots[s1 - 1];
	struct kvbm_plh key = {__atomic_load_n(&sl->key_hi, __ATOMIC_ACQUIRE),
			       __atomic_load_n(&sl->key_lo, __ATOMIC_ACQUIRE)};
	if (!kvbm_index_validate(ix, s1, __atomic_load_n(&bk->gen_lo[i], __ATOMIC_RELAXED), key, 1)
		     .s1)
		return -1;
	struct kvbm_where w = kvbm_index_locate(ix, key);
	if ((b != w.b1 && b != w.b2) || __atomic_load_n(&bk->tag[i], __ATOMIC_RELAXED) != w.tag)
		return -2;
	if (!kvbm_index_lookup(ix, key, &s, &g) || s != s1 - 1)
		return -3;
	return 0;
}
