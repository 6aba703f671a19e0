/* SPDX-License-Identifier: Apache-2.0 */
/*
 * wire_vectors.c - the KV event encoders (tools/kvevents.c) against the
 * exact bytes the specification gives (shared/spec/kvbm-logical.md 5.1:
 * kvbm-logical's Create and Shutdown messages, computed with rmp_serde)
 * and the router projections of 4.6. A standalone program: it links the
 * tools' encoders, which the Check suites do not. Exit 0 when all match.
 */
#include <stdio.h>
#include <string.h>

#include "kvbm.h"
#include "../tools/kvevents.h"

static int failed;

static void expect_hex(const char *what, const struct mp *m, const char *hex)
{
	char got[1024];
	size_t n = 0;

	for (size_t i = 0; i < m->len && n + 3 < sizeof(got); i++)
		n += (size_t)snprintf(got + n, sizeof(got) - n, "%02x", m->buf[i]);
	got[n] = '\0';
	if (strcmp(got, hex) != 0) {
		fprintf(stderr, "wire-vectors: %s:\n  got  %s\n  want %s\n", what, got, hex);
		failed = 1;
	}
}

/*
 * Router events coalesce as Dynamo's publisher does: a chain of stores is
 * one "stored". A batch ascending by position interleaves two chains
 * (A: 4 blocks, B: 3) and a fork (a child of A1 that comes before A2):
 * three runs, in the order of their heads, each a chain: A0 A1 fork, B,
 * then A2 A3 (whose parent went out in the first run).
 */
static void coalescing(void)
{
	struct kvbm_plh a[4], b[3], fork;
	struct kvbm_event ev[8], out[8];
	uint32_t len[8];
	size_t n = 0;

	kvbm_plh_make(100, NULL, 0, &a[0]);
	kvbm_plh_make(200, NULL, 0, &b[0]);
	for (int i = 1; i < 4; i++)
		kvbm_plh_extend(a[i - 1], 100 + (uint64_t)i, &a[i]);
	for (int i = 1; i < 3; i++)
		kvbm_plh_extend(b[i - 1], 200 + (uint64_t)i, &b[i]);
	kvbm_plh_extend(a[1], 999, &fork);
	const struct kvbm_plh *order[8] = {&a[0], &b[0], &a[1], &b[1], &fork, &a[2], &b[2], &a[3]};
	for (; n < 8; n++)
		ev[n] = (struct kvbm_event){.seq = n, .kind = KVBM_EVENT_STORED, .hash = *order[n]};
	size_t runs = kve_router_chains(ev, n, out, len);
	const struct kvbm_plh *want[8] = {&a[0], &a[1], &fork, &b[0], &b[1], &b[2], &a[2], &a[3]};
	int ok = runs == 3 && len[0] == 3 && len[1] == 3 && len[2] == 2;
	for (size_t i = 0; ok && i < 8; i++)
		ok = out[i].hash.hi == want[i]->hi && out[i].hash.lo == want[i]->lo;
	if (!ok) {
		fprintf(stderr, "wire-vectors: router chains: %zu runs (%u %u %u), want 3 (3 3 2)\n",
			runs, len[0], runs > 1 ? len[1] : 0, runs > 2 ? len[2] : 0);
		failed = 1;
	}
	/* removes are one run */
	for (size_t i = 0; i < n; i++)
		ev[i].kind = KVBM_EVENT_REMOVED;
	if (kve_router_chains(ev, n, out, len) != 1 || len[0] != 8) {
		fprintf(stderr, "wire-vectors: removes are not one router event\n");
		failed = 1;
	}
}

int main(void)
{
	/* PLH of block 0 of 4.6 (tokens 1..4, salt 1337) */
	struct kvbm_plh plh = {0x0032ce3935fecb72ull, 0x9700000000000000ull};
	struct kve_source src = {.instance_id = 12345, .block_size = 4, .tier = "G1"};
	struct kvbm_event ev = {.kind = KVBM_EVENT_STORED, .hash = plh};
	struct mp m;

	mp_init(&m);
	kve_kvbm_batch(&m, &src, &ev, 1);
	expect_hex("Create([plh0]), instance 12345", &m,
		   "9281a6437265617465" "91c4100032ce3935fecb729700000000000000"
		   "c41000000000000000000000000000003039");
	mp_reset(&m);
	kve_kvbm_batch(&m, &src, NULL, 0);
	expect_hex("Shutdown, instance 12345", &m,
		   "92a853687574646f776e" "c41000000000000000000000000000003039");
	/* router projections of 4.6 */
	struct kvbm_plh plh1 = {0x005128ac8de75b4full, 0x0f78e4d7fb2dca5cull};
	if (kvbm_plh_router_hash(plh) != 16014214978980444ull ||
	    kvbm_plh_router_hash(plh1) != 9766101142289469ull) {
		fprintf(stderr, "wire-vectors: router_block_hash differs from 4.6\n");
		failed = 1;
	}
	/* router LocalBlockHash of tokens 13..16, seed 1337 (4.6): the
	 * tokens_hash a router event carries */
	uint32_t tok[4] = {13, 14, 15, 16};
	if (kvbm_block_hash(tok, 4, 1337) != 135165725823939817ull) {
		fprintf(stderr, "wire-vectors: tokens_hash differs from 4.6\n");
		failed = 1;
	}
	coalescing();
	mp_free(&m);
	if (!failed)
		printf("wire-vectors: kvbm-logical messages and router hashes match the spec\n");
	return failed;
}
