/* SPDX-License-Identifier: Apache-2.0 */
/*
 * basic.c - one process's life with a pool: create or attach, hash a
 * prompt, allocate blocks, stage and register them, match the prompt,
 * release, detach.
 *
 *   cc basic.c -o basic $(pkg-config --cflags --libs kvbm)
 *   ./basic [POOL]
 *
 * POOL ("example-basic") is created when it does not exist (256 blocks of
 * 16 tokens) and destroyed at the end only when this run created it. To
 * use an existing pool, create it with the same configuration (kvbm-pool
 * create POOL --blocks 256): an open that disagrees gets KVBM_EMISMATCH.
 * Exit 0 when every step did what the comments say, 1 otherwise.
 */
#include <kvbm.h>
#include <stdio.h>

#define NBLOCKS 4

static int fail(const char *what, long r)
{
	fprintf(stderr, "basic: %s: %s\n", what, r < 0 ? kvbm_strerror((int)r) : "unexpected result");
	return 1;
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "example-basic";
	uint32_t tokens[NBLOCKS * 16 + 5]; /* a prompt: 4 complete blocks and a partial one */
	size_t ntokens = sizeof(tokens) / sizeof(tokens[0]);

	for (size_t i = 0; i < ntokens; i++)
		tokens[i] = 1000 + (uint32_t)i;

	/* README-BEGIN */
	struct kvbm_config cfg;
	struct kvbm_pool *pool;
	struct kvbm_pool_info info;

	kvbm_config_init(&cfg); /* 1024 blocks x 16 tokens, 16 processes, mode 0600 */
	cfg.block_count = 256;
	int r = kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &pool); /* create or attach */
	if (r < 0)
		return fail("open", r);
	kvbm_pool_info(pool, &info);

	/* One hash per complete block, chained: equal prefixes give equal hashes.
	 * The trailing partial block is not hashed. */
	struct kvbm_block_hashes bh[NBLOCKS];
	struct kvbm_plh h[NBLOCKS];
	long nh = kvbm_hash_tokens(tokens, ntokens, cfg.block_size, 0, bh, NBLOCKS);
	if (nh != NBLOCKS)
		return fail("hash", nh);
	for (int i = 0; i < NBLOCKS; i++)
		h[i] = bh[i].plh;

	/* Allocate (all or nothing; may evict inactive blocks), fill the KV
	 * storage the block ids index (the caller's own), stage each block
	 * under its hash, then register: every process can now match them. */
	struct kvbm_block blk[NBLOCKS], hit[NBLOCKS];
	r = kvbm_allocate_blocks(pool, NBLOCKS, blk, NULL, NULL);
	if (r < 0)
		return fail("allocate", r);
	for (int i = 0; i < NBLOCKS; i++)
		if ((r = kvbm_stage_block(pool, &blk[i], h[i], cfg.block_size)) < 0)
			return fail("stage", r);
	if ((r = kvbm_register_blocks(pool, blk, NBLOCKS)) < 0)
		return fail("register", r);

	/* A later request with the same prompt: a lock-free prefix match, one
	 * hold per hit, in prefix order. */
	long n = kvbm_match_blocks(pool, h, NBLOCKS, hit);
	if (n < 0)
		return fail("match", n);
	printf("matched %ld of %d blocks (block ids", n, NBLOCKS);
	for (long i = 0; i < n; i++)
		printf(" %u", hit[i].id);
	printf(")\n");

	/* Give back every hold; the last one makes a block inactive: still
	 * matchable, evictable when an allocation needs room. */
	if ((r = kvbm_release_blocks(pool, hit, (uint32_t)n)) < 0 ||
	    (r = kvbm_release_blocks(pool, blk, NBLOCKS)) < 0)
		return fail("release", r);
	printf("available %ld of %ld blocks\n", kvbm_available_blocks(pool),
	       kvbm_total_blocks(pool));
	kvbm_pool_close(pool); /* detach; the pool lives on for the others */
	if (info.initialized_by_me && (r = kvbm_pool_destroy(name, 0)) < 0)
		return fail("destroy", r); /* -EBUSY while others are attached */
	/* README-END */
	return n == NBLOCKS ? 0 : fail("match", n);
}
