/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-reap-bench - how long a SIGKILLed holder's blocks stay lost while
 * kvbmd runs: the time from kill(2) to the pool's available blocks being
 * back to what they were, over many kills. It creates a pool, starts kvbmd
 * (--kvbmd PATH) on it, and per round forks a holder that attaches,
 * allocates and registers blocks, and waits; once kvbmd watches it, the
 * holder is killed and the pool polled every few microseconds.
 *
 * Not a test: the figure depends on the machine's load. `make reap-bench`
 * runs it; the target is p99 <= 10 ms.
 *
 * Exit: 0 measured, 1 a failure (a round timed out), 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvbm.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void nap_us(long us)
{
	struct timespec ts = {0, us * 1000};

	nanosleep(&ts, NULL);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The holder: attach, take @hold blocks (half registered), tell the parent
 * its pid is in the process table, wait to be killed. */
static void holder(const char *name, uint32_t hold, int ready_fd)
{
	struct kvbm_pool *p;
	struct kvbm_block blk[256];
	struct kvbm_pool_info info;

	if (kvbm_pool_open(name, NULL, 0, &p) < 0 || kvbm_pool_info(p, &info) < 0)
		_exit(3);
	if (kvbm_allocate_blocks(p, hold, blk, NULL, NULL) < 0)
		_exit(4);
	for (uint32_t i = 0; i < hold / 2; i++) {
		struct kvbm_plh h;
		uint64_t cur = ((uint64_t)getpid() << 20) ^ i;
		if (kvbm_plh_make(cur, NULL, 0, &h) < 0 ||
		    kvbm_stage_block(p, &blk[i], h, info.config.block_size) < 0)
			_exit(5);
	}
	if (hold / 2 && kvbm_register_blocks(p, blk, hold / 2) < 0)
		_exit(6);
	if (write(ready_fd, "r", 1) != 1)
		_exit(7);
	for (;;)
		pause();
}

/* Scrapes nothing: waits until kvbmd's log line says it listens. */
static pid_t start_kvbmd(const char *bin, const char *name, const char *log)
{
	char pool[256];
	pid_t pid;

	snprintf(pool, sizeof(pool), "%s,tier=G1", name);
	pid = fork();
	if (pid == 0) {
		if (!freopen(log, "w", stderr) || !freopen("/dev/null", "w", stdout))
			_exit(127);
		execl(bin, "kvbmd", "--pool", pool, "--listen", "127.0.0.1:0", "--set",
		      "scan_interval_ms=5", "--set", "reap_interval_ms=3600000", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		char line[512];
		FILE *f = fopen(log, "r");
		int up = 0;
		while (f && fgets(line, sizeof(line), f))
			up |= strstr(line, "listening on port") != NULL;
		if (f)
			fclose(f);
		if (up)
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		nap_us(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"kvbmd", required_argument, NULL, 'k'},
		{"rounds", required_argument, NULL, 'r'},
		{"hold", required_argument, NULL, 'H'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	const char *bin = "build/bin/kvbmd";
	uint32_t rounds = 200, hold = 64;
	int json = 0, c, rc = 1;
	char name[64], log[128];
	struct kvbm_config cfg;
	struct kvbm_pool *p;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'V':
			printf("kvbm-reap-bench kvbm-shm %s\n", kvbm_version());
			return 0;
		case 'k':
			bin = optarg;
			break;
		case 'r':
			rounds = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 'H':
			hold = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			printf("usage: kvbm-reap-bench [--kvbmd PATH] [--rounds N] [--hold B] [--json]\n");
			return 0;
		default:
			fprintf(stderr, "usage: kvbm-reap-bench [--kvbmd PATH] [--rounds N] [--hold B] "
				"[--json]\n");
			return 2;
		}
	}
	if (rounds == 0 || rounds > 100000 || hold == 0 || hold > 256) {
		fprintf(stderr, "kvbm-reap-bench: rounds 1..100000, hold 1..256\n");
		return 2;
	}
	snprintf(name, sizeof(name), "reapbench-%d", getpid());
	snprintf(log, sizeof(log), "/tmp/kvbm-reap-bench-%d.log", getpid());
	kvbm_config_init(&cfg);
	cfg.block_count = 4096;
	int r = kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &p);
	if (r < 0) {
		fprintf(stderr, "kvbm-reap-bench: create %s: %s\n", name, kvbm_strerror(r));
		return 1;
	}
	pid_t kvbmd = start_kvbmd(bin, name, log);
	if (kvbmd < 0) {
		fprintf(stderr, "kvbm-reap-bench: kvbmd (%s) did not start; its log: %s\n", bin, log);
		goto out;
	}
	uint64_t *lat = calloc(rounds, sizeof(*lat));
	long total = kvbm_total_blocks(p);
	for (uint32_t i = 0; lat && i < rounds; i++) {
		int fd[2];
		char ch;

		if (pipe(fd) < 0)
			goto out_kvbmd;
		pid_t h = fork();
		if (h == 0) {
			close(fd[0]);
			holder(name, hold, fd[1]);
		}
		close(fd[1]);
		if (read(fd[0], &ch, 1) != 1) {
			fprintf(stderr, "kvbm-reap-bench: holder failed (%d)\n", h);
			close(fd[0]);
			goto out_kvbmd;
		}
		close(fd[0]);
		/* kvbmd re-scans every 5 ms: give it 3 scans to open the
		 * pidfd, so the figure is the reaping, not the discovery */
		nap_us(15000);
		if (kvbm_available_blocks(p) != total - hold) {
			fprintf(stderr, "kvbm-reap-bench: holder's blocks not taken\n");
			goto out_kvbmd;
		}
		uint64_t t0 = now_ns(), deadline = t0 + 5000000000ull;
		kill(h, SIGKILL);
		/* not waitpid() first: a zombie has exited already, and
		 * kvbmd must not wait for its parent to notice */
		while (kvbm_available_blocks(p) != total && now_ns() < deadline)
			nap_us(20);
		lat[i] = now_ns() - t0;
		waitpid(h, NULL, 0);
		if (kvbm_available_blocks(p) != total) {
			fprintf(stderr, "kvbm-reap-bench: round %u: blocks not back after 5 s\n", i);
			goto out_kvbmd;
		}
	}
	if (!lat)
		goto out_kvbmd;
	qsort(lat, rounds, sizeof(*lat), cmp_u64);
	double p50 = (double)lat[rounds / 2] / 1e6;
	double p99 = (double)lat[(size_t)((rounds - 1) * 0.99)] / 1e6;
	double max = (double)lat[rounds - 1] / 1e6;
	if (json)
		printf("{\"rounds\":%u,\"hold\":%u,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
		       rounds, hold, p50, p99, max);
	else
		printf("SIGKILL to blocks free, kvbmd running: %u rounds of %u blocks held: "
		       "p50 %.3f ms, p99 %.3f ms, max %.3f ms (target p99 <= 10 ms)\n",
		       rounds, hold, p50, p99, max);
	rc = 0;
out_kvbmd:
	free(lat);
	kill(kvbmd, SIGTERM);
	waitpid(kvbmd, NULL, 0);
	if (rc == 0)
		unlink(log);
out:
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, KVBM_DESTROY_FORCE);
	return rc;
}
