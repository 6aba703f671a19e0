/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-demo - several inference processes sharing one KV-cache block pool.
 *
 * Worker 0 prefills a prompt: it hashes the tokens, allocates blocks,
 * stages and registers them. Workers 1 and 2 get the same prompt and find
 * every block already cached (match_blocks: no lock, no recompute), then
 * allocate blocks of their own for generation. Worker 1 is SIGKILLed while
 * holding blocks; the pool proves it dead, reaps it and gets every block
 * back, while the others keep theirs. kvbm-shm-dump shows each step.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvbm.h"
#include "stop.h"
#include "version.h"

#define WORKERS 3
#define PROMPT_BLOCKS 8
#define GEN_BLOCKS 4

static char dump_path[PATH_MAX];


static void dump(const char *pool, int summary)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		execl(dump_path, "kvbm-shm-dump", summary ? "--summary" : pool,
		      summary ? pool : (char *)NULL, (char *)NULL);
		perror("exec kvbm-shm-dump");
		_exit(127);
	}
	waitpid(pid, NULL, 0);
}

static void die(int id, const char *what, int r)
{
	fprintf(stderr, "worker %d: %s: %s\n", id, what, kvbm_strerror(r));
	_exit(1);
}

/* The shared system prompt: PROMPT_BLOCKS blocks of the pool's block size. */
static long prompt_hashes(uint32_t bs, struct kvbm_plh *out)
{
	uint32_t tok[PROMPT_BLOCKS * 1024];
	struct kvbm_block_hashes h[PROMPT_BLOCKS];
	size_t n = (size_t)PROMPT_BLOCKS * bs;

	for (size_t i = 0; i < n; i++)
		tok[i] = (uint32_t)(1000 + i * 7919 % 32000);
	long nb = kvbm_hash_tokens(tok, n, bs, 0, h, PROMPT_BLOCKS);
	for (long i = 0; i < nb; i++)
		out[i] = h[i].plh;
	return nb;
}

/* Each step waits for the parent's go byte; EOF means "release and detach". */
static int step(int go_fd)
{
	char c;

	fflush(stdout);
	return read(go_fd, &c, 1) == 1;
}

static void worker(const char *name, int id, int ready_fd, int go_fd)
{
	struct kvbm_pool *pool;
	struct kvbm_pool_info info;
	struct kvbm_plh h[PROMPT_BLOCKS];
	struct kvbm_block blk[PROMPT_BLOCKS], gen[GEN_BLOCKS];
	long n;
	int r = kvbm_pool_open(name, NULL, 0, &pool);

	if (r < 0)
		die(id, "open", r);
	kvbm_pool_info(pool, &info);
	n = prompt_hashes(info.config.block_size, h);
	if (id == 0) {
		/* prefill: compute the KV (not here: we are the logical layer),
		 * then publish the blocks under their sequence hashes */
		r = kvbm_allocate_blocks(pool, PROMPT_BLOCKS, blk, NULL, NULL);
		if (r < 0)
			die(id, "allocate", r);
		for (long i = 0; i < n; i++) {
			r = kvbm_stage_block(pool, &blk[i], h[i], info.config.block_size);
			if (r < 0)
				die(id, "stage", r);
		}
		r = kvbm_register_blocks(pool, blk, PROMPT_BLOCKS);
		if (r < 0)
			die(id, "register", r);
		printf("  worker 0 (pid %d) prefilled the prompt: registered blocks %u..%u\n",
		       getpid(), blk[0].id, blk[n - 1].id);
	} else {
		long hit = kvbm_match_blocks(pool, h, (size_t)n, blk);
		if (hit < 0)
			die(id, "match", (int)hit);
		r = kvbm_allocate_blocks(pool, GEN_BLOCKS, gen, NULL, NULL);
		if (r < 0)
			die(id, "allocate", r);
		printf("  worker %d (pid %d) matched %ld/%ld prompt blocks (ids %u..%u), "
		       "computed none; allocated %d for generation\n",
		       id, getpid(), hit, n, blk[0].id, blk[hit - 1].id, GEN_BLOCKS);
	}
	if (write(ready_fd, "r", 1) != 1)
		_exit(1);
	step(go_fd);
	r = kvbm_release_blocks(pool, blk, PROMPT_BLOCKS);
	if (r == 0 && id != 0)
		r = kvbm_release_blocks(pool, gen, GEN_BLOCKS);
	if (r == 0)
		r = kvbm_pool_close(pool);
	_exit(r < 0 ? 1 : 0);
}

int main(int argc, char **argv)
{
	char name[64];
	struct kvbm_config cfg;
	struct kvbm_pool *pool;
	pid_t pids[WORKERS];
	int ready[2], go[WORKERS][2];
	char c;
	int r;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: kvbm-demo [--help | --version]\n"
		       "Runs the multi-process demo: three worker processes share one pool in\n"
		       "$KVBM_SHM_DIR (default /dev/shm), one is killed holding blocks, and the\n"
		       "pool gets them back. It explains each step as it goes.\n");
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "--version"))
		return tool_version("kvbm-demo");
	if (argc > 1) {
		fprintf(stderr, "kvbm-demo: unexpected argument '%s'\nusage: kvbm-demo [--help | "
				"--version]\n", argv[1]);
		return 2;
	}
	/* one line at a time, so that the workers' lines and kvbm-shm-dump's
	 * come out in the order they happen when stdout is a file or a pipe */
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* kvbm-shm-dump sits next to this binary */
	ssize_t n = readlink("/proc/self/exe", dump_path, sizeof(dump_path) - 32);
	if (n <= 0)
		return 1;
	dump_path[n] = '\0';
	strcpy(strrchr(dump_path, '/') + 1, "kvbm-shm-dump");
	snprintf(name, sizeof(name), "demo-%d", getpid());
	stop_removes_pool(name);

	kvbm_config_init(&cfg);
	cfg.block_count = 4096;
	cfg.max_procs = 8;
	printf("== creating pool '%s' (%u blocks of %u tokens)\n", name, cfg.block_count,
	       cfg.block_size);
	r = kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &pool);
	if (r < 0) {
		fprintf(stderr, "kvbm-demo: create: %s\n", kvbm_strerror(r));
		return 1;
	}
	if (pipe(ready) < 0)
		return 1;
	printf("== %d worker processes get the same %d-block prompt, one after the other\n",
	       WORKERS, PROMPT_BLOCKS);
	for (int i = 0; i < WORKERS; i++) {
		if (pipe(go[i]) < 0)
			return 1;
		fflush(stdout);
		pids[i] = fork();
		if (pids[i] == 0) {
			for (int k = 0; k <= i; k++)
				close(go[k][1]);
			close(ready[0]);
			worker(name, i, ready[1], go[i][0]);
		}
		if (read(ready[0], &c, 1) != 1)
			return 1;
	}

	printf("\n== the pool, as kvbm-shm-dump sees it\n");
	dump(name, 0);

	printf("\n== SIGKILL worker 1 (pid %d) while it holds %d blocks and owns %d\n", pids[1],
	       PROMPT_BLOCKS, GEN_BLOCKS);
	kill(pids[1], SIGKILL);
	waitpid(pids[1], NULL, 0);
	r = kvbm_reap(pool);
	printf("== kvbm_reap(): %d dead process reaped: its holds dropped, its %d blocks freed;"
	       " workers 0 and 2 keep theirs\n",
	       r, GEN_BLOCKS);
	dump(name, 1);

	printf("\n== workers 0 and 2 finish and detach\n");
	for (int i = 0; i < WORKERS; i++) {
		if (i == 1)
			continue;
		close(go[i][1]);
		int st;
		waitpid(pids[i], &st, 0);
		printf("  worker %d exited with %d\n", i, WEXITSTATUS(st));
	}
	struct kvbm_plh h[PROMPT_BLOCKS];
	struct kvbm_block b[PROMPT_BLOCKS];
	long nb = prompt_hashes(cfg.block_size, h);
	long hit = kvbm_match_blocks(pool, h, (size_t)nb, b);
	printf("== nobody holds the prompt now, yet it stays cached (inactive): a new request "
	       "matches %ld/%ld blocks\n",
	       hit, nb);
	if (hit > 0)
		kvbm_release_blocks(pool, b, (uint32_t)hit);
	dump(name, 1);
	kvbm_pool_close(pool);
	r = kvbm_pool_destroy(name, 0);
	stop_forget_pool();
	printf("== pool destroyed: %s\n", kvbm_strerror(r));
	return r < 0 || hit != nb ? 1 : 0;
}
