/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-demo - several processes sharing one pool.
 *
 * Creates a pool, starts worker processes that attach to it, shows the
 * process table with kvbm-shm-dump, SIGKILLs one worker, shows that the pool
 * proves it dead, reaps it, and lets the others detach cleanly.
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

#define WORKERS 3

static char dump_path[PATH_MAX];

static void dump(const char *pool)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		execl(dump_path, "kvbm-shm-dump", pool, (char *)NULL);
		perror("exec kvbm-shm-dump");
		_exit(127);
	}
	waitpid(pid, NULL, 0);
}

/* Worker: attach, say so, wait for the word to leave (a byte or EOF). */
static void worker(const char *name, int id, int ready_fd, int go_fd)
{
	struct kvbm_pool *pool;
	struct kvbm_pool_info info;
	char c;
	int r = kvbm_pool_open(name, NULL, 0, &pool);

	if (r < 0) {
		fprintf(stderr, "worker %d: open: %s\n", id, kvbm_strerror(r));
		_exit(1);
	}
	kvbm_pool_info(pool, &info);
	printf("  worker %d (pid %d) attached as process-table entry %u\n", id, getpid(),
	       info.proc_index);
	fflush(stdout);
	if (write(ready_fd, "r", 1) != 1)
		_exit(1);
	if (read(go_fd, &c, 1) < 0)
		_exit(1);
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

	(void)argc;
	(void)argv;
	/* kvbm-shm-dump sits next to this binary */
	ssize_t n = readlink("/proc/self/exe", dump_path, sizeof(dump_path) - 32);
	if (n <= 0)
		return 1;
	dump_path[n] = '\0';
	strcpy(strrchr(dump_path, '/') + 1, "kvbm-shm-dump");
	snprintf(name, sizeof(name), "demo-%d", getpid());

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
	printf("== starting %d worker processes\n", WORKERS);
	for (int i = 0; i < WORKERS; i++) {
		if (pipe(go[i]) < 0)
			return 1;
		fflush(stdout);
		pids[i] = fork();
		if (pids[i] == 0) {
			/* keep only our own read end: EOF on it means "detach" */
			for (int k = 0; k <= i; k++)
				close(go[k][1]);
			close(ready[0]);
			worker(name, i, ready[1], go[i][0]);
		}
	}
	for (int i = 0; i < WORKERS; i++)
		if (read(ready[0], &c, 1) != 1)
			return 1;

	printf("\n== the pool, as kvbm-shm-dump sees it\n");
	dump(name);

	printf("\n== SIGKILL worker 1 (pid %d)\n", pids[1]);
	kill(pids[1], SIGKILL);
	waitpid(pids[1], NULL, 0);
	dump(name);

	r = kvbm_reap(pool);
	printf("\n== kvbm_reap(): %d dead process reaped; the others are untouched\n", r);
	dump(name);

	printf("\n== workers 0 and 2 detach\n");
	for (int i = 0; i < WORKERS; i++) {
		if (i == 1)
			continue;
		close(go[i][1]);
		int st;
		waitpid(pids[i], &st, 0);
		printf("  worker %d exited with %d\n", i, WEXITSTATUS(st));
	}
	kvbm_pool_close(pool);
	r = kvbm_pool_destroy(name, 0);
	printf("== pool destroyed: %s\n", kvbm_strerror(r));
	return r < 0 ? 1 : 0;
}
