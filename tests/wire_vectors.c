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
	mp_free(&m);
	if (!failed)
		printf("wire-vectors: kvbm-logical messages and router hashes match the spec\n");
	return failed;
}
