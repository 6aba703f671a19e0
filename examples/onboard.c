/* SPDX-License-Identifier: Apache-2.0 */
/*
 * onboard.c - onboarding a request's cached blocks from G2 (host) into G1
 * (device) while another process keeps evicting in both tiers.
 *
 *   cc onboard.c -o onboard $(pkg-config --cflags --libs kvbm)
 *   ./onboard [POOL] [ROUNDS]
 *
 * Two pools, POOL-g1 (tier G1) and POOL-g2 (tier G2), name the blocks of
 * two KV arrays this program keeps itself: shared memory mapped before
 * fork(), one block of BLOCK_BYTES bytes per block id in each tier (a real
 * engine has device memory for G1, pinned host memory for G2).
 *
 * The parent serves requests. For each one it first "offloads" the blocks
 * G2 lacks (writes their bytes, registers them: an engine does this when
 * G1 evicts), asks which tiers hold the request's blocks
 * (kvbm_tiers_presence), then plans the onboarding (kvbm_onboard_plan: the
 * G2 blocks G1 lacks, each paired with a G1 block, all held), copies the
 * bytes pair by pair, checks them, and completes the plan (the G1 blocks
 * are registered and matchable by every engine on the node). Each request
 * comes twice in a row: the second time G1 mostly has it already (the
 * plan's matched prefix), unless the other engines evicted it meanwhile.
 *
 * The child plays the other engines: it allocates blocks in both pools
 * all the time, fills them with its own bytes and registers them. Once the
 * free blocks are gone every allocation evicts someone's inactive blocks,
 * the parent's among them; but never a block a plan holds: the parent
 * checks every copied block's bytes, in G2 before and in G1 after.
 *
 * Exit 0 when every copy was verified and at least one block was onboarded
 * with evictions going on, 1 otherwise. The pools are destroyed at the end.
 */
#define _DEFAULT_SOURCE
#include <kvbm.h>
#include <kvbm_tier.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define BS 16            /* tokens per block */
#define BLOCK_BYTES 256  /* KV bytes per block in this example */
#define G1_BLOCKS 48
#define G2_BLOCKS 64
#define NBLK 8           /* blocks per request */
#define NREQ 4           /* distinct requests, each served twice in a row */

struct shared {
	volatile int stop;
	unsigned char g1[G1_BLOCKS][BLOCK_BYTES];
	unsigned char g2[G2_BLOCKS][BLOCK_BYTES];
};

static int fail(const char *who, const char *what, long r)
{
	fprintf(stderr, "onboard: %s: %s: %s\n", who, what,
		r < 0 ? kvbm_strerror((int)r) : "unexpected result");
	return 1;
}

/* The KV bytes of the block with hash @h: a function of its sequence
 * hash, so any copy can be checked. */
static void kv_bytes(struct kvbm_plh h, unsigned char *out)
{
	uint64_t x = kvbm_plh_current(h);

	for (int i = 0; i < BLOCK_BYTES; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		out[i] = (unsigned char)(x >> 56);
	}
}

static int kv_check(struct kvbm_plh h, const unsigned char *have)
{
	unsigned char want[BLOCK_BYTES];

	kv_bytes(h, want);
	return memcmp(want, have, BLOCK_BYTES) == 0;
}

static int open_tier(const char *base, const char *tier, uint32_t blocks, struct kvbm_pool **p)
{
	struct kvbm_config cfg;
	char name[KVBM_NAME_MAX + 1];

	kvbm_config_init(&cfg);
	cfg.block_count = blocks;
	cfg.block_size = BS;
	cfg.backend = KVBM_BACKEND_LRU;
	snprintf(cfg.tier, sizeof(cfg.tier), "%s", tier);
	snprintf(name, sizeof(name), "%s-%s", base, tier[1] == '1' ? "g1" : "g2");
	return kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, p);
}

static void request_hashes(int req, uint32_t *tok, struct kvbm_plh *h)
{
	struct kvbm_block_hashes bh[NBLK];

	for (int i = 0; i < NBLK * BS; i++)
		tok[i] = 100000u * (uint32_t)(req + 1) + (uint32_t)i;
	kvbm_hash_tokens(tok, NBLK * BS, BS, 0, bh, NBLK);
	for (int i = 0; i < NBLK; i++)
		h[i] = bh[i].plh;
}

/* The other engines: allocate, write, register, release, in both tiers. */
static int evictor(const char *base, struct shared *sh)
{
	struct kvbm_pool *p[2];
	struct kvbm_block b[4];
	struct kvbm_plh h[4];
	uint32_t tok[4 * BS];
	int r;

	if ((r = open_tier(base, "G1", G1_BLOCKS, &p[0])) < 0 ||
	    (r = open_tier(base, "G2", G2_BLOCKS, &p[1])) < 0)
		return fail("evictor", "open", r);
	for (uint32_t round = 0; !sh->stop; round++) {
		for (int j = 0; j < 2; j++) {
			struct kvbm_block_hashes bh[4];
			if (kvbm_allocate_blocks(p[j], 4, b, NULL, NULL) < 0)
				continue; /* the planner holds most of this tier now */
			for (int i = 0; i < 4 * BS; i++)
				tok[i] = 7u << 28 | (round % 100000) << 6 | (uint32_t)i;
			kvbm_hash_tokens(tok, 4 * BS, BS, 0, bh, 4);
			for (int i = 0; i < 4; i++) {
				h[i] = bh[i].plh;
				/* its own bytes: what a plan must never see */
				memset(j ? sh->g2[b[i].id] : sh->g1[b[i].id], 0xee, BLOCK_BYTES);
			}
			if ((r = kvbm_stage_blocks(p[j], b, h, 4, BS, NULL)) < 0 ||
			    (r = kvbm_register_blocks(p[j], b, 4)) < 0 ||
			    (r = kvbm_release_blocks(p[j], b, 4)) < 0)
				return fail("evictor", "register", r);
		}
		usleep(200);
	}
	kvbm_pool_close(p[0]);
	kvbm_pool_close(p[1]);
	return 0;
}

/* The blocks of the request G2 lacks: written and registered there. */
static int offload(struct kvbm_pool *g2, struct shared *sh, const struct kvbm_plh *h)
{
	struct kvbm_block hit[NBLK], b[NBLK];
	long k = kvbm_match_blocks(g2, h, NBLK, hit);
	uint32_t miss;
	int r;

	if (k < 0)
		return (int)k;
	miss = NBLK - (uint32_t)k;
	if (miss && (r = kvbm_allocate_blocks(g2, miss, b, NULL, NULL)) == 0) {
		for (uint32_t i = 0; i < miss; i++)
			kv_bytes(h[k + i], sh->g2[b[i].id]);
		if ((r = kvbm_stage_blocks(g2, b, h + k, miss, BS, NULL)) < 0 ||
		    (r = kvbm_register_blocks(g2, b, miss)) < 0)
			return r;
		kvbm_release_blocks(g2, b, miss);
	}
	kvbm_release_blocks(g2, hit, (uint32_t)k);
	return 0; /* G2 full of held blocks (-ENOSPC): the plan gets fewer */
}

static int serve(const char *base, struct shared *sh, int rounds)
{
	struct kvbm_pool *g1, *g2;
	long copied = 0, plans = 0, g1_hits = 0;
	int r;

	if ((r = open_tier(base, "G1", G1_BLOCKS, &g1)) < 0 ||
	    (r = open_tier(base, "G2", G2_BLOCKS, &g2)) < 0)
		return fail("planner", "open", r);
	for (int round = 0; round < rounds; round++) {
		uint32_t tok[NBLK * BS];
		struct kvbm_plh h[NBLK];
		struct kvbm_pool *tiers[2] = {g1, g2};
		uint8_t mask[NBLK];
		struct kvbm_onboard *o;
		struct kvbm_onboard_pair pr;
		struct kvbm_block got[NBLK];

		request_hashes(round / 2 % NREQ, tok, h); /* the second time: in G1 */
		if ((r = offload(g2, sh, h)) < 0)
			return fail("planner", "offload", r);
		long any = kvbm_tiers_presence(tiers, 2, h, NBLK, mask);
		if (any < 0)
			return fail("planner", "presence", any);
		if (round == 0) {
			printf("request 0: tiers holding each block (1 = G1, 2 = G2):");
			for (int i = 0; i < NBLK; i++)
				printf(" %u", mask[i]);
			printf("\n");
		}
		r = kvbm_onboard_plan(g1, g2, h, NBLK, &o);
		if (r == -ENOSPC) /* the other engines hold G1's blocks: later */
			continue;
		if (r < 0)
			return fail("planner", "plan", r);
		size_t n = kvbm_onboard_count(o);
		for (size_t i = 0; i < n; i++) {
			kvbm_onboard_get(o, i, &pr);
			if (!kv_check(pr.hash, sh->g2[pr.src.id]))
				return fail("planner", "G2 bytes before the copy", 0);
			memcpy(sh->g1[pr.dst.id], sh->g2[pr.src.id], BLOCK_BYTES);
			if (i == n / 2)
				usleep(200); /* a slow copy: the evictor runs */
		}
		for (size_t i = 0; i < n; i++) {
			kvbm_onboard_get(o, i, &pr);
			if (!kv_check(pr.hash, sh->g1[pr.dst.id]) ||
			    !kv_check(pr.hash, sh->g2[pr.src.id]))
				return fail("planner", "bytes after the copy", 0);
		}
		size_t matched = kvbm_onboard_matched(o);
		long total = kvbm_onboard_complete(o, tok, got, NBLK);
		kvbm_onboard_free(o);
		if (total < 0)
			return fail("planner", "complete", total);
		/* what the request now holds in G1: the prefix G1 had and the
		 * blocks just onboarded, all with the right bytes */
		for (long i = 0; i < total; i++)
			if (!kv_check(h[i], sh->g1[got[i].id]))
				return fail("planner", "G1 bytes", 0);
		kvbm_release_blocks(g1, got, (uint32_t)total);
		copied += (long)n;
		g1_hits += (long)matched;
		plans++;
		usleep(300);
	}
	struct kvbm_metrics m1, m2;
	kvbm_metrics_snapshot(g1, &m1);
	kvbm_metrics_snapshot(g2, &m2);
	printf("onboarded %ld blocks in %ld plans (%ld already in G1) while %llu blocks "
	       "were evicted; every copy verified\n",
	       copied, plans, g1_hits, (unsigned long long)(m1.evictions + m2.evictions));
	kvbm_pool_close(g1);
	kvbm_pool_close(g2);
	return copied > 0 && m1.evictions + m2.evictions > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *base = argc > 1 ? argv[1] : "example-onboard";
	int rounds = argc > 2 ? atoi(argv[2]) : 200, status, rc;
	char name[KVBM_NAME_MAX + 1];

	if (rounds <= 0 || strlen(base) > KVBM_NAME_MAX - 3) {
		fprintf(stderr, "usage: onboard [POOL] [ROUNDS]\n");
		return 2;
	}
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("onboard: mmap");
		return 1;
	}
	fflush(stdout);
	pid_t pid = fork(); /* before any kvbm call: each process opens the pools */
	if (pid < 0) {
		perror("onboard: fork");
		return 1;
	}
	if (pid == 0)
		_exit(evictor(base, sh));
	rc = serve(base, sh, rounds);
	sh->stop = 1;
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		rc = 1;
	for (int i = 1; i <= 2; i++) {
		snprintf(name, sizeof(name), "%s-g%d", base, i);
		kvbm_pool_destroy(name, 0);
	}
	return rc;
}
