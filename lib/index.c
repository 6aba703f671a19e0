/* SPDX-License-Identifier: Apache-2.0 */
/*
 * index.c - see index.h. Two-choice buckets of 8, partial-key alternate
 * bucket (DPDK rte_hash's trick), no cuckoo displacement (readers would
 * need a retry loop), and a stash for the keys whose two buckets are full.
 */
#include <errno.h>

#include "index.h"
#include "../shm/failpoint.h"

void kvbm_index_view(struct kvbm_index *ix, struct kvbm_shm_bucket *buckets, uint32_t nbuckets,
		     struct kvbm_shm_slot *slots, uint32_t nslots)
{
	ix->buckets = buckets;
	ix->mask = nbuckets - 1;
	ix->slots = slots;
	ix->nslots = nslots;
	ix->stash = buckets + nbuckets;
	ix->stash_used = &((struct kvbm_shm_stash_head *)(ix->stash + KVBM_INDEX_STASH_BUCKETS))->used;
}

/* An empty entry of bucket @b taken for @key (mutex held): 0, or -ENOSPC. */
static inline __attribute__((always_inline)) int put(struct kvbm_shm_bucket *b, uint32_t tag,
						     uint32_t slot, uint64_t gen)
{
	for (int i = 0; i < KVBM_BUCKET_ENTRIES; i++) {
		/* relaxed: mutex held, and only its holders write entries */
		if (__atomic_load_n(&b->slot[i], __ATOMIC_RELAXED) != 0)
			continue;
		/* relaxed: published by the slot's release store below */
		__atomic_store_n(&b->gen_lo[i], (uint16_t)gen, __ATOMIC_RELAXED);
		__atomic_store_n(&b->tag[i], (uint16_t)tag, __ATOMIC_RELAXED);
		/* release: pairs with kvbm_index_find's acquire load of the
		 * slot, which then sees gen_lo (the tag, read before it, is a
		 * filter) and the slot's key and REGISTERED word, stored
		 * before the insert (register_one, rebuild_index) */
		__atomic_store_n(&b->slot[i], slot + 1, __ATOMIC_RELEASE);
		return 0;
	}
	return -ENOSPC;
}

/* Clears the entry of bucket @b naming @slot with @tag (mutex held): 0, or
 * -ENOENT. */
static inline __attribute__((always_inline)) int take(struct kvbm_shm_bucket *b, uint32_t tag,
						      uint32_t slot)
{
	for (int i = 0; i < KVBM_BUCKET_ENTRIES; i++) {
		/* relaxed: mutex held, and only its holders write entries */
		if (__atomic_load_n(&b->slot[i], __ATOMIC_RELAXED) != slot + 1 ||
		    __atomic_load_n(&b->tag[i], __ATOMIC_RELAXED) != tag)
			continue;
		/* release: keeps the evictor's new generation before the
		 * entry goes (rule 5, kvbm_store_evict_commit). A reader's
		 * acquire that loads 0 skips the entry; one that loads the
		 * old value is refused by the generation check or its pin */
		__atomic_store_n(&b->slot[i], 0, __ATOMIC_RELEASE);
		return 0;
	}
	return -ENOENT;
}

uint32_t kvbm_index_stash_count(const struct kvbm_index *ix)
{
	uint32_t n = 0;

	for (uint32_t b = 0; b < KVBM_INDEX_STASH_BUCKETS; b++)
		for (int i = 0; i < KVBM_BUCKET_ENTRIES; i++)
			n += __atomic_load_n(&ix->stash[b].slot[i], __ATOMIC_RELAXED) != 0;
	return n;
}

int kvbm_index_insert(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t slot,
		      uint64_t gen)
{
	struct kvbm_where w = kvbm_index_locate(ix, key);

	if (!put(&ix->buckets[w.b1], w.tag, slot, gen) || !put(&ix->buckets[w.b2], w.tag, slot, gen))
		return 0;
	for (uint32_t b = 0; b < KVBM_INDEX_STASH_BUCKETS; b++)
		if (!put(&ix->stash[b], w.tag, slot, gen)) {
			/* an inserter killed here leaves the count one short:
			 * the entry stays hidden until the recovery that follows
			 * (the mutex is held) rebuilds the index: rebuild_index()
			 * recounts the stash and re-inserts registered primaries */
			KVBM_FAILPOINT("index.stash.put");
			/* after the entry (release, as the entry's): a reader
			 * that sees the count sees the entry; a key in the stash
			 * during a whole lookup is counted during all of it */
			__atomic_store_n(ix->stash_used, __atomic_load_n(ix->stash_used,
									 __ATOMIC_RELAXED) + 1,
					 __ATOMIC_RELEASE);
			return 0;
		}
	return -ENOSPC;
}

int kvbm_index_delete(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t slot)
{
	struct kvbm_where w = kvbm_index_locate(ix, key);

	if (!take(&ix->buckets[w.b1], w.tag, slot) || !take(&ix->buckets[w.b2], w.tag, slot))
		return 0;
	for (uint32_t b = 0; b < KVBM_INDEX_STASH_BUCKETS; b++)
		if (!take(&ix->stash[b], w.tag, slot)) {
			/* relaxed: only a filter that lets readers skip the
			 * stash; the count of a damaged segment is what the
			 * checker and the rebuild recount */
			uint32_t n = __atomic_load_n(ix->stash_used, __ATOMIC_RELAXED);
			__atomic_store_n(ix->stash_used, n ? n - 1 : 0, __ATOMIC_RELAXED);
			return 0;
		}
	return -ENOENT;
}

struct kvbm_hit kvbm_index_find_alt(const struct kvbm_index *ix, uint32_t b1, uint32_t tag,
				    uint64_t key_hi, uint64_t key_lo, int exact)
{
	struct kvbm_plh key = {key_hi, key_lo};
	__m128i tags = kvbm_index_tags(tag);
	struct kvbm_hit f = kvbm_index_scan(ix, &ix->buckets[kvbm_index_alt(ix, b1, tag)], tags, key,
					    exact);

	/* acquire: pairs with kvbm_index_insert's release of the count. A
	 * count of 0 skips the stash: read from the segment, it is only a
	 * filter, and the walk is bounded by the stash's size whatever it
	 * says */
	if (f.s1 || !__atomic_load_n(ix->stash_used, __ATOMIC_ACQUIRE))
		return f;
	for (uint32_t b = 0; b < KVBM_INDEX_STASH_BUCKETS && !f.s1; b++)
		f = kvbm_index_scan(ix, &ix->stash[b], tags, key, exact);
	return f;
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
	const struct kvbm_shm_bucket *bk = kvbm_index_bucket(ix, b);
	/* acquire: pairs with kvbm_index_insert's release, as in
	 * kvbm_index_find: gen_lo, tag and key are the inserter's or newer */
	uint32_t s1 = __atomic_load_n(&bk->slot[i], __ATOMIC_ACQUIRE);
	uint32_t s;
	uint64_t g;

	if (s1 == 0)
		return 1;
	if (s1 > ix->nslots)
		return -1;
	const struct kvbm_shm_slot *sl = &ix->slots[s1 - 1];
	/* acquire pairs with nothing here (the key is stored relaxed, see
	 * kvbm_slot_key()): the slot's acquire above orders these loads, and
	 * the validation re-reads the key between two state loads */
	struct kvbm_plh key = {__atomic_load_n(&sl->key_hi, __ATOMIC_ACQUIRE),
			       __atomic_load_n(&sl->key_lo, __ATOMIC_ACQUIRE)};
	/* relaxed, gen_lo and the tag: read after the slot's acquire */
	if (!kvbm_index_validate(ix, s1, __atomic_load_n(&bk->gen_lo[i], __ATOMIC_RELAXED), key, 1)
		     .s1)
		return -1;
	struct kvbm_where w = kvbm_index_locate(ix, key);
	/* a stash entry may be any key's */
	if ((b != w.b1 && b != w.b2 && b <= ix->mask) ||
	    __atomic_load_n(&bk->tag[i], __ATOMIC_RELAXED) != w.tag)
		return -2;
	if (!kvbm_index_lookup(ix, key, &s, &g) || s != s1 - 1)
		return -3;
	return 0;
}
