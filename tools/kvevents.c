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

/* The first index of @ev[lo..n) (ascending by position) at position @pos
 * or above. */
static size_t first_at(const struct kvbm_event *ev, size_t lo, size_t n, uint32_t pos)
{
	size_t hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (kvbm_plh_position(ev[mid].hash) < pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

size_t kve_router_chains(const struct kvbm_event *ev, size_t n, struct kvbm_event *out,
			 uint32_t *len)
{
	size_t runs = 0, w = 0;

	if (n && ev[0].kind != KVBM_EVENT_STORED) {
		memcpy(out, ev, n * sizeof(*ev));
		len[0] = (uint32_t)n;
		return 1;
	}
	/* len[i] != 0 marks ev[i] as taken by a chain until len is filled
	 * with the run lengths: run r's length goes to len[r] once the event
	 * at head (>= r) has been handled, so only marks no longer read are
	 * overwritten */
	memset(len, 0, n * sizeof(*len));
	for (size_t head = 0; head < n; head++) {
		if (len[head])
			continue; /* a link of an earlier chain */
		size_t start = w, i = head + 1;
		struct kvbm_plh tail = ev[head].hash;
		out[w++] = ev[head];
		/* a child is one position on and names the tail as its parent;
		 * the first free one extends the chain (a fork's other branch
		 * starts a run of its own) */
		for (;;) {
			uint32_t next = kvbm_plh_position(tail) + 1;
			i = first_at(ev, i, n, next);
			while (i < n && kvbm_plh_position(ev[i].hash) == next &&
			       (len[i] || kvbm_plh_parent_fragment(ev[i].hash) !=
						  kvbm_plh_router_hash(tail)))
				i++;
			if (i == n || kvbm_plh_position(ev[i].hash) != next)
				break;
			len[i] = 1;
			out[w++] = ev[i];
			tail = ev[i].hash;
		}
		len[runs++] = (uint32_t)(w - start);
	}
	return runs;
}

void kve_router_event(struct mp *m, const struct kve_source *src, uint64_t event_id,
		      const struct kvbm_event *e, size_t n)
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
		mp_array(m, (uint32_t)n);
		for (size_t i = 0; i < n; i++) {
			mp_map(m, 3);
			mp_str(m, "block_hash");
			mp_uint(m, kvbm_plh_router_hash(e[i].hash));
			/* the router recomputes its content hash from the tokens
			 * with the canonical salt (1337 without namespace or
			 * LoRA, spec 4.1): that is what it compares, whatever
			 * salt the pool's own hashes used */
			mp_str(m, "tokens_hash");
			mp_uint(m, e[i].ntokens ? kvbm_block_hash(e[i].tokens, e[i].ntokens, 1337) : 0);
			mp_str(m, "mm_extra_info");
			mp_nil(m);
		}
	} else if (e->kind == KVBM_EVENT_REMOVED) {
		mp_map(m, 1);
		mp_str(m, "removed");
		mp_map(m, 1);
		mp_str(m, "block_hashes");
		mp_array(m, (uint32_t)n);
		for (size_t i = 0; i < n; i++)
			mp_uint(m, kvbm_plh_router_hash(e[i].hash));
	} else {
		mp_str(m, "cleared");
	}
	mp_str(m, "dp_rank");
	mp_uint(m, src->dp_rank);
}
