/* SPDX-License-Identifier: Apache-2.0 */
/*
 * layout.c - the layout hash: FNV-1a over every size and offset of the
 * shared structs and the ABI facts they rest on (LMDB's MDB_LOCK_FORMAT
 * idea). Two builds that would disagree on any byte of the segment get
 * different hashes, and attach refuses with KVBM_ELAYOUT.
 */
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

#define F(type, field) offsetof(type, field), sizeof(((type *)0)->field)

static const uint64_t layout_facts[] = {
	KVBM_ABI_MAJOR,
	KVBM_CACHELINE,
	KVBM_MAX_PROCS,
	KVBM_REGION_MAX,
	sizeof(void *),
	sizeof(pthread_mutex_t),
	_Alignof(pthread_mutex_t),
	sizeof(struct kvbm_shm_header),
	F(struct kvbm_shm_header, magic),
	F(struct kvbm_shm_header, state),
	F(struct kvbm_shm_header, name),
	F(struct kvbm_shm_header, config),
	F(struct kvbm_shm_header, regions),
	sizeof(struct kvbm_shm_config),
	sizeof(struct kvbm_shm_control),
	F(struct kvbm_shm_control, owner_pid),
	F(struct kvbm_shm_control, op),
	F(struct kvbm_shm_control, recoveries),
	F(struct kvbm_shm_control, attach_gen),
	F(struct kvbm_shm_control, recounts_deferred),
	sizeof(struct kvbm_shm_op),
	sizeof(struct kvbm_shm_proc),
	F(struct kvbm_shm_proc, starttime),
	F(struct kvbm_shm_proc, attach_gen),
	sizeof(struct kvbm_shm_slot),
	F(struct kvbm_shm_slot, holders),
	F(struct kvbm_shm_slot, key_hi),
	F(struct kvbm_shm_slot, next),
	F(struct kvbm_shm_slot, tick),
	F(struct kvbm_shm_slot, dups),
	F(struct kvbm_shm_slot, list),
	F(struct kvbm_shm_slot, reset_on_release),
	F(struct kvbm_shm_control, free_head),
	F(struct kvbm_shm_control, lists),
	F(struct kvbm_shm_config, mlru_thresholds),
	F(struct kvbm_shm_config, sketch_log2),
	F(struct kvbm_shm_config, event_log2),
	sizeof(struct kvbm_shm_events),
	sizeof(struct kvbm_shm_event),
	sizeof(struct kvbm_shm_evict),
	F(struct kvbm_shm_evict, nheap),
	F(struct kvbm_shm_evict, hint),
	F(struct kvbm_shm_hintstat, horizon),
	F(struct kvbm_shm_hintstat, releases),
	sizeof(struct kvbm_shm_lnode),
	F(struct kvbm_shm_lnode, hpos),
	F(struct kvbm_shm_lnode, par),
	F(struct kvbm_shm_evict, twins),
	sizeof(struct kvbm_shm_hent),
	KVBM_REGION_NUSED,
	F(struct kvbm_shm_control, inactive),
	F(struct kvbm_shm_config, dup_policy),
	F(struct kvbm_shm_config, tier),
	sizeof(kvbm_hold_t),
	KVBM_HOLD_OWNED,
	sizeof(struct kvbm_shm_metrics),
	KVBM_M_NSHARD,
	sizeof(struct kvbm_shm_bucket),
	F(struct kvbm_shm_bucket, slot),
	F(struct kvbm_shm_bucket, gen_lo),
	KVBM_BUCKET_ENTRIES,
	F(struct kvbm_shm_config, pin_share),
	sizeof(struct kvbm_shm_pins),
	F(struct kvbm_shm_pins, blocks),
	F(struct kvbm_shm_pins, heap_len),
	sizeof(struct kvbm_shm_pin_ent),
	KVBM_HOLD_POOL,
	KVBM_PIN_TIP,
};

uint64_t kvbm_layout_hash(void)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < sizeof(layout_facts) / sizeof(layout_facts[0]); i++) {
		for (int b = 0; b < 8; b++) {
			h ^= (layout_facts[i] >> (8 * b)) & 0xff;
			h *= 0x100000001b3ull;
		}
	}
	return h;
}
