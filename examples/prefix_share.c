/* SPDX-License-Identifier: Apache-2.0 */
/*
 * prefix_share.c - two processes share a prompt prefix through one pool.
 *
 *   cc prefix_share.c -o prefix_share $(pkg-config --cflags --libs kvbm)
 *   ./prefix_share [POOL]
 *
 * The program forks before it opens anything (a pool handle does not
 * survive fork(): the child would get KVBM_EFORKED), then each process
 * opens the pool itself. The child plays the engine that computed a
 * system prompt: it registers the prompt's 4 blocks and keeps holding
 * them. The parent plays a second engine whose request starts with the
 * same system prompt followed by its own 2 blocks: it matches the shared
 * 4 blocks instead of recomputing them, sees both processes holding them,
 * and allocates and registers only its own 2. POOL ("example-share") is
 * created by the child and destroyed by the parent at the end.
 * Exit 0 when the parent reused exactly the shared prefix, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L
#include <kvbm.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define BS 16      /* tokens per block */
#define SHARED 4   /* blocks of the system prompt */
#define OWN 2      /* blocks of the parent's own request after it */

static int fail(const char *who, const char *what, long r)
{
	fprintf(stderr, "prefix_share: %s: %s: %s\n", who, what,
		r < 0 ? kvbm_strerror((int)r) : "unexpected result");
	return 1;
}

/* The tokens of a request: the system prompt, then @extra blocks of its own. */
static size_t request(uint32_t *tok, int extra)
{
	size_t n = 0;
	for (; n < SHARED * BS; n++)
		tok[n] = 7000 + (uint32_t)n;
	for (int i = 0; i < extra * BS; i++, n++)
		tok[n] = 9000 + (uint32_t)i;
	return n;
}

static int hashes(const uint32_t *tok, size_t n, struct kvbm_plh *h)
{
	struct kvbm_block_hashes bh[SHARED + OWN];
	long nb = kvbm_hash_tokens(tok, n, BS, 0, bh, SHARED + OWN);
	for (long i = 0; i < nb; i++)
		h[i] = bh[i].plh;
	return (int)nb;
}

static int open_pool(const char *name, struct kvbm_pool **pool)
{
	struct kvbm_config cfg;
	kvbm_config_init(&cfg);
	cfg.block_count = 64;
	cfg.block_size = BS;
	return kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, pool);
}

/* The first engine: registers the system prompt and holds it until told. */
static int first_engine(const char *name, int ready_fd, int done_fd)
{
	uint32_t tok[(SHARED + OWN) * BS];
	struct kvbm_plh h[SHARED + OWN];
	struct kvbm_block blk[SHARED];
	struct kvbm_pool *pool;
	char c = 'r';
	int r;

	if ((r = open_pool(name, &pool)) < 0)
		return fail("child", "open", r);
	hashes(tok, request(tok, 0), h);
	if ((r = kvbm_allocate_blocks(pool, SHARED, blk, NULL, NULL)) < 0)
		return fail("child", "allocate", r);
	for (int i = 0; i < SHARED; i++)
		if ((r = kvbm_stage_block(pool, &blk[i], h[i], BS)) < 0)
			return fail("child", "stage", r);
	if ((r = kvbm_register_blocks(pool, blk, SHARED)) < 0)
		return fail("child", "register", r);
	printf("child %d: registered the system prompt's %d blocks\n", (int)getpid(), SHARED);
	fflush(stdout);
	if (write(ready_fd, &c, 1) != 1 || read(done_fd, &c, 1) != 1)
		return fail("child", "pipe", 0);
	kvbm_release_blocks(pool, blk, SHARED); /* now inactive: cached, evictable */
	kvbm_pool_close(pool);
	return 0;
}

/* The second engine: reuses the prefix, computes only its own blocks. */
static int second_engine(const char *name)
{
	uint32_t tok[(SHARED + OWN) * BS];
	struct kvbm_plh h[SHARED + OWN];
	struct kvbm_block hit[SHARED + OWN], own[OWN];
	struct kvbm_block_info bi;
	struct kvbm_pool *pool;
	int nb, r;

	if ((r = open_pool(name, &pool)) < 0)
		return fail("parent", "open", r);
	nb = hashes(tok, request(tok, OWN), h);
	long n = kvbm_match_blocks(pool, h, (size_t)nb, hit);
	if (n < 0)
		return fail("parent", "match", n);
	if ((r = kvbm_block_info(pool, &hit[0], &bi)) < 0)
		return fail("parent", "block info", r);
	printf("parent %d: matched %ld of %d blocks, held by %u processes; computing %ld\n",
	       (int)getpid(), n, nb, bi.holder_procs, nb - n);
	if (n != SHARED || bi.holder_procs != 2)
		return fail("parent", "match", 0);
	if ((r = kvbm_allocate_blocks(pool, OWN, own, NULL, NULL)) < 0)
		return fail("parent", "allocate", r);
	for (int i = 0; i < OWN; i++)
		if ((r = kvbm_stage_block(pool, &own[i], h[SHARED + i], BS)) < 0)
			return fail("parent", "stage", r);
	if ((r = kvbm_register_blocks(pool, own, OWN)) < 0)
		return fail("parent", "register", r);
	printf("parent %d: registered its own %d blocks after the prefix\n", (int)getpid(), OWN);
	kvbm_release_blocks(pool, hit, (uint32_t)n);
	kvbm_release_blocks(pool, own, OWN);
	kvbm_pool_close(pool);
	return 0;
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "example-share";
	int ready[2], done[2], status, rc;
	char c = 'd';

	if (pipe(ready) < 0 || pipe(done) < 0) {
		perror("prefix_share: pipe");
		return 1;
	}
	fflush(stdout);
	pid_t pid = fork(); /* before any kvbm call: each process opens the pool itself */
	if (pid < 0) {
		perror("prefix_share: fork");
		return 1;
	}
	if (pid == 0)
		_exit(first_engine(name, ready[1], done[0]));
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1) { /* the child failed before registering */
		waitpid(pid, &status, 0);
		return 1;
	}
	rc = second_engine(name);
	c = 'd';
	if (write(done[1], &c, 1) != 1)
		rc = 1;
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		rc = 1;
	int r = kvbm_pool_destroy(name, 0);
	if (r < 0)
		rc = fail("parent", "destroy", r);
	return rc;
}
