/* SPDX-License-Identifier: Apache-2.0 */
/*
 * torture.c - kvbm-torture: worker processes hammer one pool with random
 * operations while a killer SIGKILLs random workers at random moments and
 * starts replacements; the invariants are checked under the mutex as it
 * runs and exactly at the end, when every block must be accounted for.
 *
 *   kvbm-torture [--duration S] [--workers N] [--blocks B] [--seed X] [--yield]
 *                [--keep NAME]
 *   kvbm-torture recovery [--blocks N]
 *
 * The first prints `kills=K ops=N violations=V leaked=L` and exits 0 only
 * when V and L are 0 and no worker saw a wrong block. The second measures
 * how long the pool takes to get back the blocks of a process that died
 * holding N of them: by reaping it, and by recovering after it died holding
 * the pool mutex. Linked against the test library: --yield arms yields in
 * the pin/evict handshake (shm/failpoint.h) to widen its windows.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvbm.h"
#include "../shm/failpoint.h"

#define BS 16
#define CHAINS 256
#define DEPTH 8
#define MAX_WORKERS 32
#define MAX_HELD 64

/* Shared with the workers (MAP_SHARED): survives their deaths. */
struct shared {
	uint64_t ops[MAX_WORKERS];
	uint64_t wrong[MAX_WORKERS]; /* held blocks that were not what we held */
	int stop;
};

static struct kvbm_plh chain[CHAINS][DEPTH];

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void make_chains(void)
{
	uint32_t tok[DEPTH * BS];
	struct kvbm_block_hashes bh[DEPTH];

	for (int c = 0; c < CHAINS; c++) {
		for (int i = 0; i < DEPTH * BS; i++)
			tok[i] = (uint32_t)(c * 100000 + i);
		/* a few chains share their first blocks, like prompts sharing a
		 * system prompt */
		if (c % 4)
			for (int i = 0; i < 2 * BS; i++)
				tok[i] = (uint32_t)((c & ~3) * 100000 + i);
		if (kvbm_hash_tokens(tok, DEPTH * BS, BS, 42, bh, DEPTH) != DEPTH)
			abort();
		for (int i = 0; i < DEPTH; i++)
			chain[c][i] = bh[i].plh;
	}
}

struct held {
	struct kvbm_block b;
	struct kvbm_plh h;
};

/* A held block must still be the registered block of its hash. */
static int verify(struct kvbm_pool *q, const struct held *x)
{
	struct kvbm_block_info info;

	return kvbm_block_info(q, &x->b, &info) == 0 && info.state == KVBM_BLOCK_REGISTERED &&
	       info.holds > 0 && kvbm_plh_eq(info.hash, x->h);
}

static void worker(const char *name, struct shared *sh, int slot, unsigned seed, int yield)
{
	struct kvbm_pool *q;
	struct held held[MAX_HELD];
	int n = 0;

	if (yield)
		kvbm_fp_arm("hold.pin.bit=yield,store.evict.marked=yield,hold.unpin.bit=yield,"
			    "store.settle.counted=yield");
	if (kvbm_pool_open(name, NULL, 0, &q) < 0)
		_exit(2);
	while (!__atomic_load_n(&sh->stop, __ATOMIC_RELAXED)) {
		int c = (int)(rand_r(&seed) % CHAINS);
		int op = (int)(rand_r(&seed) % 11);
		struct kvbm_block b[DEPTH];

		if (op < 3 && n + DEPTH <= MAX_HELD) {
			/* a request: match its prefix, compute and register the rest */
			long hit = kvbm_match_blocks(q, chain[c], DEPTH, b);
			if (hit < 0)
				_exit(3);
			for (long i = 0; i < hit; i++)
				held[n++] = (struct held){b[i], chain[c][i]};
			uint32_t rest = DEPTH - (uint32_t)hit;
			if (rest && kvbm_allocate_blocks(q, rest, b, NULL, NULL) == 0) {
				for (uint32_t i = 0; i < rest; i++) {
					int r = kvbm_stage_block(q, &b[i], chain[c][hit + i], BS);
					if (r < 0) {
						fprintf(stderr, "worker: stage: %s\n", kvbm_strerror(r));
						_exit(4);
					}
				}
				int r = kvbm_register_blocks(q, b, rest);
				if (r < 0) {
					fprintf(stderr, "worker: register: %s\n", kvbm_strerror(r));
					_exit(5);
				}
				for (uint32_t i = 0; i < rest; i++)
					held[n++] = (struct held){b[i], chain[c][hit + i]};
			}
		} else if (op < 5 && n) {
			/* finish a request: release from a random point, tail first */
			int from = (int)(rand_r(&seed) % (unsigned)n);
			while (n > from) {
				n--;
				if (!verify(q, &held[n]))
					sh->wrong[slot]++;
				if (kvbm_release_blocks(q, &held[n].b, 1) < 0)
					_exit(6);
			}
		} else if (op == 5 && n && n < MAX_HELD) {
			struct held *x = &held[rand_r(&seed) % (unsigned)n];
			struct kvbm_block cl;
			struct kvbm_weak wk;
			if (kvbm_clone_block(q, &x->b, &cl) < 0 || kvbm_downgrade_block(q, &cl, &wk) < 0)
				_exit(7);
			if (kvbm_release_blocks(q, &cl, 1) < 0)
				_exit(8);
			if (kvbm_upgrade_block(q, &wk, &cl) == 1)
				held[n++] = (struct held){cl, wk.hash};
		} else if (op == 6) {
			uint8_t found[DEPTH];
			long k = kvbm_match_blocks_scattered(q, chain[c], DEPTH, b, found);
			for (int i = 0; k > 0 && i < DEPTH; i++)
				if (found[i] && kvbm_release_blocks(q, &b[i], 1) < 0)
					_exit(9);
		} else if (op == 7) {
			/* a block that is never registered */
			if (kvbm_allocate_blocks(q, 1, b, NULL, NULL) == 0 &&
			    kvbm_release_blocks(q, b, 1) < 0)
				_exit(10);
		} else if (op == 8 && n) {
			struct held *x = &held[rand_r(&seed) % (unsigned)n];
			(void)kvbm_set_reset_on_release(q, &x->b, (int)(rand_r(&seed) % 8 == 0));
		} else if (op == 9) {
			/* the pool's own pins, for at most 50 ms: they outlive the
			 * killed, and a kill inside one recovers its words */
			long r;
			if (rand_r(&seed) % 3)
				r = kvbm_pin_prefix(q, chain[c], 1 + rand_r(&seed) % DEPTH,
						    1 + rand_r(&seed) % 50, NULL);
			else
				r = kvbm_unpin_prefix(q, chain[c], DEPTH);
			if (r < 0 && r != KVBM_ENOTREG && r != KVBM_EPINSHARE) {
				fprintf(stderr, "worker: pin: %s\n", kvbm_strerror((int)r));
				_exit(12);
			}
		} else {
			for (int i = 0; i < n; i++)
				if (!verify(q, &held[i]))
					sh->wrong[slot]++;
		}
		__atomic_fetch_add(&sh->ops[slot], 1, __ATOMIC_RELAXED);
	}
	for (int i = 0; i < n; i++)
		(void)kvbm_release_blocks(q, &held[i].b, 1);
	_exit(kvbm_pool_close(q) == 0 ? 0 : 11);
}

static void report(const char *msg, void *arg)
{
	(void)arg;
	fprintf(stderr, "violation: %s\n", msg);
}

static uint32_t backend = KVBM_BACKEND_LINEAGE; /* --backend */

static int torture(double duration, int nworkers, uint32_t blocks, unsigned seed, int yield,
		   const char *keep)
{
	char name[64];
	struct kvbm_config cfg;
	struct kvbm_pool *p;
	pid_t pids[MAX_WORKERS];
	long kills = 0, violations = 0, failed = 0;

	snprintf(name, sizeof(name), "%s", keep ? keep : "torture");
	if (!keep)
		snprintf(name, sizeof(name), "torture-%d", (int)getpid());
	kvbm_config_init(&cfg);
	cfg.block_count = blocks;
	cfg.max_procs = (uint32_t)nworkers + 2;
	cfg.backend = backend;
	int r = kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &p);
	if (r < 0) {
		fprintf(stderr, "kvbm-torture: create %s: %s\n", name, kvbm_strerror(r));
		return 2;
	}
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 2;
	make_chains();
	for (int i = 0; i < nworkers; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			worker(name, sh, i, seed + 7919u * (unsigned)i, yield);
	}
	uint64_t end = now_ns() + (uint64_t)(duration * 1e9), next_check = now_ns();
	while (now_ns() < end) {
		/* a kill every 0-20 ms, at whatever the victim is doing */
		struct timespec ts = {0, (long)(rand_r(&seed) % 20000000u)};
		nanosleep(&ts, NULL);
		int v = (int)(rand_r(&seed) % (unsigned)nworkers);
		kill(pids[v], SIGKILL);
		int st;
		waitpid(pids[v], &st, 0);
		if (WIFEXITED(st)) {
			fprintf(stderr, "kvbm-torture: worker %d exited %d before its kill\n", v,
				WEXITSTATUS(st));
			failed++;
		}
		kills++;
		pids[v] = fork();
		if (pids[v] == 0)
			worker(name, sh, v, seed + (unsigned)kills * 104729u, yield);
		if (now_ns() >= next_check) {
			/* live: what must hold while others work */
			long k = kvbm_pool_check(p, KVBM_CHECK_LOCK, report, NULL);
			violations += k > 0 ? k : 0;
			next_check = now_ns() + 1000000000ull;
		}
	}
	__atomic_store_n(&sh->stop, 1, __ATOMIC_RELAXED);
	/* bounded: a worker that does not finish within 30 s is hung, which
	 * is a failure to report, not a CI job to stall */
	uint64_t limit = now_ns() + 30000000000ull;
	for (int i = 0; i < nworkers; i++) {
		int st = 0;
		while (waitpid(pids[i], &st, WNOHANG) == 0) {
			if (now_ns() > limit) {
				fprintf(stderr, "kvbm-torture: worker %d (pid %d) hung; killing it\n", i,
					(int)pids[i]);
				kill(pids[i], SIGKILL);
				waitpid(pids[i], &st, 0);
				failed++;
				break;
			}
			struct timespec ts = {0, 1000000};
			nanosleep(&ts, NULL);
		}
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "kvbm-torture: worker %d ended with status 0x%x\n", i, st);
			failed++;
		}
	}
	/* everyone has detached: exact checks, and every block accounted for
	 * once the last pins (50 ms at most) have expired */
	(void)kvbm_reap(p);
	struct timespec pin_ttl = {0, 60000000};
	nanosleep(&pin_ttl, NULL);
	struct kvbm_pins_info pins = {0};
	(void)kvbm_pins_info(p, &pins); /* takes the mutex: expires them */
	long k = kvbm_pool_check(p, KVBM_CHECK_LOCK | KVBM_CHECK_QUIESCENT, report, NULL);
	violations += k > 0 ? k : 0;
	struct kvbm_pool_info pi;
	kvbm_pool_info(p, &pi);
	long avail = kvbm_available_blocks(p);
	long leaked = (long)blocks - avail;
	struct kvbm_block *all = calloc(blocks, sizeof(*all));
	if (kvbm_allocate_blocks(p, blocks, all, NULL, NULL) != 0)
		leaked += leaked ? 0 : 1; /* the counts lie: something is lost */
	else
		kvbm_release_blocks(p, all, blocks);
	free(all);
	uint64_t ops = 0, wrong = 0;
	for (int i = 0; i < MAX_WORKERS; i++) {
		ops += sh->ops[i];
		wrong += sh->wrong[i];
	}
	struct kvbm_metrics m;
	kvbm_metrics_snapshot(p, &m);
	kvbm_pool_close(p);
	if (!keep)
		kvbm_pool_destroy(name, KVBM_DESTROY_FORCE);
	fprintf(stderr,
		"kvbm-torture: %.0f s, %d workers, %u blocks: %llu evictions, %llu matched, "
		"%llu recoveries, procs attached at the end %u, wrong blocks %llu, "
		"pinned blocks expired %llu (%u left)\n",
		duration, nworkers, blocks, (unsigned long long)m.evictions,
		(unsigned long long)m.match_blocks_returned, (unsigned long long)pi.recoveries,
		pi.procs_attached, (unsigned long long)wrong,
		(unsigned long long)pins.expirations, pins.blocks);
	printf("kills=%ld ops=%llu violations=%ld leaked=%ld\n", kills, (unsigned long long)ops,
	       violations, leaked);
	if (violations || leaked || wrong || failed || pins.blocks)
		return 1;
	return pi.procs_attached != 1 ? 1 : 0;
}

/* A child registers and holds @n blocks, then is killed (optionally inside
 * the pool mutex); we time how long getting them back takes. */
static double time_recovery(const char *name, uint32_t n, int in_mutex)
{
	struct kvbm_pool *p;
	int fd[2];
	char c = 0;

	if (kvbm_pool_open(name, NULL, 0, &p) < 0 || pipe(fd) < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q;
		struct kvbm_block *b = calloc(n, sizeof(*b));
		if (kvbm_pool_open(name, NULL, 0, &q) < 0 ||
		    kvbm_allocate_blocks(q, n, b, NULL, NULL) < 0)
			_exit(1);
		for (uint32_t i = 0; i < n; i++)
			if (kvbm_stage_block(q, &b[i], (struct kvbm_plh){i + 1, ~(uint64_t)i}, BS) <
			    0)
				_exit(2);
		if (kvbm_register_blocks(q, b, n) < 0)
			_exit(3);
		if (in_mutex)
			kvbm_fp_arm("block.allocate.victims");
		if (write(fd[1], &c, 1) != 1)
			_exit(4);
		if (in_mutex) {
			/* dies inside the mutex, one more allocation evicting */
			struct kvbm_block x;
			kvbm_release_blocks(q, b, 1);
			kvbm_allocate_blocks(q, 1, &x, NULL, NULL);
		}
		pause();
		_exit(5);
	}
	if (read(fd[0], &c, 1) != 1)
		return -1;
	if (!in_mutex)
		kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	uint64_t t0 = now_ns();
	int r = kvbm_reap(p);
	uint64_t t1 = now_ns();
	close(fd[0]);
	close(fd[1]);
	long avail = kvbm_available_blocks(p);
	kvbm_pool_close(p);
	if (r < 0 || avail < (long)n - 1) {
		fprintf(stderr, "kvbm-torture: recovery: reap %d, available %ld\n", r, avail);
		return -1;
	}
	return (double)(t1 - t0) / 1e6;
}

static int recovery(uint32_t n)
{
	char name[64];
	struct kvbm_config cfg;
	struct kvbm_pool *p;

	snprintf(name, sizeof(name), "torture-rec-%d", (int)getpid());
	kvbm_config_init(&cfg);
	cfg.block_count = n;
	if (kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &p) < 0)
		return 2;
	double reap = time_recovery(name, n, 0);
	kvbm_reset_inactive_pool(p);
	double owner = time_recovery(name, n, 1);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, KVBM_DESTROY_FORCE);
	if (reap < 0 || owner < 0)
		return 1;
	printf("recovery blocks=%u reap_ms=%.3f owner_death_ms=%.3f\n", n, reap, owner);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: kvbm-torture [--duration S] [--workers N] [--blocks B] [--seed X] "
		   "[--yield] [--keep NAME] [--backend NAME]\n"
		   "       kvbm-torture recovery [--blocks N]\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"duration", required_argument, NULL, 'd'},
		{"workers", required_argument, NULL, 'w'},
		{"blocks", required_argument, NULL, 'b'},
		{"seed", required_argument, NULL, 's'},
		{"yield", no_argument, NULL, 'y'},
		{"keep", required_argument, NULL, 'k'},
		{"backend", required_argument, NULL, 'B'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	double duration = 10;
	int workers = 6, yield = 0, c;
	unsigned long blocks = 512;
	unsigned seed = (unsigned)time(NULL);
	const char *keep = NULL;

	while ((c = getopt_long(argc, argv, "d:w:b:s:yk:B:h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			keep = optarg; /* name the pool, leave it for kvbm-shm-dump */
			break;
		case 'd':
			duration = atof(optarg);
			break;
		case 'w':
			workers = atoi(optarg);
			break;
		case 'b':
			blocks = strtoul(optarg, NULL, 10);
			break;
		case 's':
			seed = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'y':
			yield = 1;
			break;
		case 'B': {
			int b = kvbm_backend_parse(optarg);
			if (b < 0) {
				fprintf(stderr, "kvbm-torture: --backend '%s': no such backend\n", optarg);
				return 64;
			}
			backend = (uint32_t)b;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 64;
		}
	}
	if (optind < argc && !strcmp(argv[optind], "recovery"))
		return recovery((uint32_t)blocks);
	if (optind != argc || duration <= 0 || workers < 1 || workers > MAX_WORKERS ||
	    blocks < DEPTH || blocks > KVBM_MAX_BLOCKS) {
		usage(stderr);
		return 64;
	}
	fprintf(stderr, "kvbm-torture: seed %u\n", seed);
	return torture(duration, workers, (uint32_t)blocks, seed, yield, keep);
}
