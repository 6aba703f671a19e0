/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvevents.h - the wire formats of KV events that existing consumers read
 * (spec: shared/spec/kvbm-logical.md section 5; docs/EVENTS.md), encoded
 * from the pool's ring events:
 *  - kvbm-logical's own stream: [{"Create"|"Remove": [plh...]}, instance];
 *  - vLLM's KVEventBatch: [ts, [event maps...], dp_rank], block hashes the
 *    PLH's router projection (as Dynamo's KVBM consolidator publishes);
 *  - Dynamo's RouterEvent (named maps) for the event plane.
 * A batch is homogeneous (one kind); the caller splits on kind changes.
 */
#ifndef KVBM_TOOLS_KVEVENTS_H
#define KVBM_TOOLS_KVEVENTS_H

#include "kvbm.h"
#include "msgpack.h"

/* Where the blocks live, for vLLM's medium and Dynamo's storage_tier. */
struct kve_source {
	uint64_t instance_id; /* the pool's */
	uint64_t worker_id;   /* the router's worker (config) */
	uint32_t dp_rank;
	uint32_t block_size;
	const char *tier;     /* the pool's tier label: G1, G2, G3 */
};

/* "GPU" for G1, "CPU" for G2, "DISK" for G3, else NULL (no medium). */
const char *kve_medium(const char *tier);
/* "device", "host_pinned", "disk", "external" */
const char *kve_storage_tier(const char *tier);

/* kvbm-logical: one message for @n STORED (Create) or REMOVED (Remove)
 * events, or "Shutdown" when @n is 0. */
void kve_kvbm_batch(struct mp *m, const struct kve_source *src, const struct kvbm_event *ev,
		    size_t n);
/* vLLM KVEventBatch at time @ts: one BlockStored / BlockRemoved /
 * AllBlocksCleared event map per ring event. */
void kve_vllm_batch(struct mp *m, const struct kve_source *src, double ts,
		    const struct kvbm_event *ev, size_t n);
/* Dynamo RouterEvent with router event id @event_id for @n ring events of
 * one kind: a "stored" of @n blocks (a chain: each the child of the one
 * before it, as kve_router_chains() makes them), a "removed" of @n
 * hashes, or "cleared" (@n = 1). */
void kve_router_event(struct mp *m, const struct kve_source *src, uint64_t event_id,
		      const struct kvbm_event *ev, size_t n);
/*
 * Dynamo's publisher coalesces adjacent compatible events into one router
 * event. Groups the batch @ev[0..n) (one kind; stores ascending by
 * position) into runs, copied one after the other into @out: each run of
 * stores is a chain (position +1 and parent fragment = the previous
 * block's router hash), a parent's run before its children's; removes
 * are one run. @len gets each run's length (room for @n). Returns the
 * number of runs.
 */
size_t kve_router_chains(const struct kvbm_event *ev, size_t n, struct kvbm_event *out,
			 uint32_t *len);

#endif /* KVBM_TOOLS_KVEVENTS_H */
