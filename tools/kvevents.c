/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvevents.c - see kvevents.h.
 */
#include <string.h>

#include "kvevents.h"

/* Our tiers as vLLM's medium and Dynamo's storage_tier (Dynamo maps
 * mediums to tiers the same way, spec 5.3: GPU device, CPU host_pinned,
 * DISK disk); any other label is someone else's storage */
static const struct {
	const char *tier, *medium, *storage;
} tiers[] = {
	{"G1", "GPU", "device"},
	{"G2", "CPU", "host_pinned"},
	{"G3", "DISK", "disk"},
};

static int tier_index(const char *tier)
{
	for (int i = 0; i < (int)(sizeof(tiers) / sizeof(tiers[0])); i++)
		if (!strcmp(tier, tiers[i].tier))
			return i;
	return -1;
}

const char *kve_medium(const char *tier)
{
	int i = tier_index(tier);

	return i < 0 ? NULL : tiers[i].medium;
}

const char *kve_storage_tier(const char *tier)
{
	int i = tier_index(tier);

	return i < 0 ? "external" : tiers[i].storage;
}

/* A u128 as 16 bytes big-endian, msgpack bin 8 (spec 4.2's serde form). */
static void bin128(struct mp *m, uint64_t hi, uint64_t lo)
{
	uint8_t b[16];

	for (int i = 0; i < 8; i++) {
		b[i] = (uint8_t)(hi >> (56 - 8 * i));
		b[8 + i] = (uint8_t)(lo >> (56 - 8 * i));
	}
	mp_bin(m, b, 16);
}

void kve_kvbm_batch(struct mp *m, const struct kve_source *src, const struct kvbm_event *ev,
		    size_t n)
{
	/* rmp_serde's compact form: [events, instance_id], the events an
	 * externally tagged enum: {"Create": [...]}, or "Shutdown" */
	mp_array(m, 2);
	if (n == 0) {
		mp_str(m, "Shutdown");
	} else {
		mp_map(m, 1);
		mp_str(m, ev[0].kind == KVBM_EVENT_STORED ? "Create" : "Remove");
		mp_array(m, (uint32_t)n);
		for (size_t i = 0; i < n; i++)
			bin128(m, ev[i].hash.hi, ev[i].hash.lo);
	}
	bin128(m, 0, src->instance_id);
}

/* The router's u64 for a block, and its parent's (nil at position 0). */
static void parent_hash(struct mp *m, struct kvbm_plh h)
{
	if (kvbm_plh_position(h) == 0)
		mp_nil(m);
	else
		mp_uint(m, kvbm_plh_parent_fragment(h));
}

static void vllm_event(struct mp *m, const struct kve_source *src, const struct kvbm_event *e)
{
	const char *medium = kve_medium(src->tier);
	uint32_t extra = medium ? 1 : 0;

	switch (e->kind) {
	case KVBM_EVENT_STORED:
		/* the new (map) encoding of vLLM PR #42892, which Dynamo's
		 * tolerant decoder reads by field name */
		mp_map(m, 5 + extra);
		mp_str(m, "type");
		mp_str(m, "BlockStored");
		mp_str(m, "block_hashes");
		mp_array(m, 1);
		mp_uint(m, kvbm_plh_router_hash(e->hash));
		mp_str(m, "parent_block_hash");
		parent_hash(m, e->hash);
		mp_str(m, "token_ids");
		mp_array(m, e->ntokens);
		for (uint32_t i = 0; i < e->ntokens; i++)
			mp_uint(m, e->tokens[i]);
		mp_str(m, "block_size");
		mp_uint(m, src->block_size);
		break;
	case KVBM_EVENT_REMOVED:
		mp_map(m, 2 + extra);
		mp_str(m, "type");
		mp_str(m, "BlockRemoved");
		mp_str(m, "block_hashes");
		mp_array(m, 1);
		mp_uint(m, kvbm_plh_router_hash(e->hash));
		break;
	default: /* CLEARED (a snapshot's start); RESYNC is never sent */
		mp_map(m, 1);
		mp_str(m, "type");
		mp_str(m, "AllBlocksCleared");
		return;
	}
	if (medium) {
		mp_str(m, "medium");
		mp_str(m, medium);
	}
}

void kve_vllm_batch(struct mp *m, const struct kve_source *src, double ts,
		    const struct kvbm_event *ev, size_t n)
{
	/* the envelope stays the array [ts, events, data_parallel_rank] that
	 * every consumer reads (spec 5.3) */
	mp_array(m, 3);
	mp_f64(m, ts);
	mp_array(m, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		vllm_event(m, src, &ev[i]);
	mp_uint(m, src->dp_rank);
}

void kve_router_event(struct mp *m, const struct kve_source *src, uint64_t event_id,
		      const struct kvbm_event *e)
{
	mp_map(m, 3);
	mp_str(m, "worker_id");
	mp_uint(m, src->worker_id);
	mp_str(m, "storage_tier");
	mp_str(m, kve_storage_tier(src->tier));
	mp_str(m, "event");
	mp_map(m, 3);
	mp_str(m, "event_id");
	mp_uint(m, event_id);
	mp_str(m, "data");
	if (e->kind == KVBM_EVENT_STORED) {
		mp_map(m, 1);
		mp_str(m, "stored");
		mp_map(m, 3);
		mp_str(m, "parent_hash");
		parent_hash(m, e->hash);
		mp_str(m, "start_position");
		mp_uint(m, kvbm_plh_position(e->hash));
		mp_str(m, "blocks");
		mp_array(m, 1);
		mp_map(m, 3);
		mp_str(m, "block_hash");
		mp_uint(m, kvbm_plh_router_hash(e->hash));
		/* the router recomputes its content hash from the tokens with
		 * the canonical salt (1337 without namespace or LoRA, spec
		 * 4.1): that is what it compares, whatever salt the pool's
		 * own hashes used */
		mp_str(m, "tokens_hash");
		mp_uint(m, e->ntokens ? kvbm_block_hash(e->tokens, e->ntokens, 1337) : 0);
		mp_str(m, "mm_extra_info");
		mp_nil(m);
	} else if (e->kind == KVBM_EVENT_REMOVED) {
		mp_map(m, 1);
		mp_str(m, "removed");
		mp_map(m, 1);
		mp_str(m, "block_hashes");
		mp_array(m, 1);
		mp_uint(m, kvbm_plh_router_hash(e->hash));
	} else {
		mp_str(m, "cleared");
	}
	mp_str(m, "dp_rank");
	mp_uint(m, src->dp_rank);
}
