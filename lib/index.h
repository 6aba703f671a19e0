/* SPDX-License-Identifier: Apache-2.0 */
/*
 * index.h - the registry index: 128-bit sequence hash -> primary slot.
 * PRIVATE.
 *
 * Concurrency rules (ARCHITECTURE section 4):
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

#include <stdint.h>

#include "kvbm.h"
#include "../shm/layout.h"

struct kvbm_index {
	struct kvbm_shm_bucket *buckets;
	uint32_t mask; /* buckets - 1 */
	struct kvbm_shm_slot *slots;
	uint32_t nslots;
};

void kvbm_index_view(struct kvbm_index *ix, struct kvbm_shm_bucket *buckets, uint32_t nbuckets,
		     struct kvbm_shm_slot *slots, uint32_t nslots);

/* Writer, mutex held: adds @key -> (@slot, @gen). Returns 0, or -ENOSPC
 * when both candidate buckets are full (the block is then not shareable). */
int kvbm_index_insert(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t slot,
		      uint32_t gen);
/* Writer, mutex held: removes the entry of @key that names @slot.
 * Returns 0 or -ENOENT. */
int kvbm_index_delete(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t slot);

/* Reader, lock-free: 1 and (*slot, *gen) of the REGISTERED primary holding
 * @key, or 0. The result is a candidate to pin, not a reference. */
int kvbm_index_lookup(const struct kvbm_index *ix, struct kvbm_plh key, uint32_t *slot,
		      uint32_t *gen);

/* Checker: entry @i of bucket @b. 0 valid, 1 empty, -1 names no
 * REGISTERED primary of its generation, -2 in a bucket or with a tag its
 * key would not have, -3 not what a lookup of its key finds. */
int kvbm_index_entry_check(const struct kvbm_index *ix, uint32_t b, int i);

#endif /* KVBM_LIB_INDEX_H */
