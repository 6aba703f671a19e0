/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-bench - the performance suite, on the workloads the reference crate
 * was measured on (issue 6): (a) allocate/stage/register/release cycles,
 * (b) prefix match of active blocks, (c) of inactive ones (resurrection),
 * (d) eviction pressure, (e) hashing against the raw XXH3 floor, (f) two
 * worker processes, (g) match latency while another process evicts, (h)
 * segment bytes per block, (i) a request driven through SchedulableSequence
 * (kvbm_sequence.h) against the raw block calls it makes.
 *
 *   kvbm-bench [--quick] [--json] [WORKLOAD...]    WORKLOAD: a b c d e f g h i
 *
 * Every pool workload runs in worker processes attached to one pool in
 * $KVBM_SHM_DIR (default /dev/shm), so one worker and two are measured the
 * same way. Each figure is the median of several samples (5 with --quick,
 * 9 without), printed with its min and max.
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
#include <xxhash.h>

#include "kvbm.h"
#include "kvbm_sequence.h"
#include "bench.h"
#include "json.h"
#include "stop.h"
#include "version.h"

#define POOL_BLOCKS 16384
#define BS 16
#define SALT 42
#define RING_A 65536
#define SEQ 64   /* blocks per sequence in (b), (c), (d) */
#define RING_D 1024
#define BACKGROUND 255

static int quick;
static double sample_secs; /* timed part of one sample */
static int nsamples;

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void die(const char *what, int r)
{
	fprintf(stderr, "kvbm-bench: %s: %s\n", what, kvbm_strerror(r));
	exit(1);
}

static uint32_t base(uint32_t t, uint32_t p)
{
	return (4 * p + t) << 26;
}

/* PLHs of the @n blocks of tokens first, first + 1, ... */
static void seq_hashes(uint32_t first, uint32_t n, struct kvbm_plh *out)
{
	uint32_t *tok = malloc(sizeof(*tok) * n * BS);
	struct kvbm_block_hashes *bh = malloc(sizeof(*bh) * n);

	for (uint32_t i = 0; i < n * BS; i++)
		tok[i] = first + i;
	if (kvbm_hash_tokens(tok, (size_t)n * BS, BS, SALT, bh, n) != (long)n)
		die("hash", -EINVAL);
	for (uint32_t i = 0; i < n; i++)
		out[i] = bh[i].plh;
	free(tok);
	free(bh);
}

static void register_seq(struct kvbm_pool *q, const struct kvbm_plh *h, uint32_t n,
			 struct kvbm_block *out)
{
	int r = kvbm_allocate_blocks(q, n, out, NULL, NULL);

	if (r < 0)
		die("allocate", r);
	for (uint32_t i = 0; i < n; i++)
		if ((r = kvbm_stage_block(q, &out[i], h[i], BS)) < 0)
			die("stage", r);
	if ((r = kvbm_register_blocks(q, out, n)) < 0)
		die("register", r);
}

static void release(struct kvbm_pool *q, const struct kvbm_block *b, uint32_t n)
{
	int r = kvbm_release_blocks(q, b, n);

	if (r < 0)
		die("release", r);
}

/* ---- pools and workers ------------------------------------------------------ */

/* kvbm_pool_open() flags of the workers: KVBM_OPEN_ONE_THREAD for the
 * one-thread rows of (b) and (c) */
static unsigned worker_open_flags;

static char pool_name[64];
uint32_t event_ring = 4096; /* --event-ring N (0: no events) */
uint64_t bench_fixed_ops;

struct kvbm_pool *fresh_pool(void)
{
	struct kvbm_config cfg;
	struct kvbm_pool *p;

	snprintf(pool_name, sizeof(pool_name), "bench-%d", (int)getpid());
	kvbm_pool_destroy(pool_name, KVBM_DESTROY_FORCE);
	stop_removes_pool(pool_name);
	kvbm_config_init(&cfg);
	cfg.block_count = POOL_BLOCKS;
	cfg.block_size = BS;
	cfg.event_ring = event_ring;
	int r = kvbm_pool_open(pool_name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &p);
	if (r < 0)
		die("create pool", r);
	return p;
}

void drop_pool(struct kvbm_pool *p)
{
	kvbm_pool_close(p);
	kvbm_pool_destroy(pool_name, KVBM_DESTROY_FORCE);
	stop_forget_pool();
}

/* The shared prefix of (b) and (c): 255 background sequences, inactive. */
void background(struct kvbm_pool *p)
{
	struct kvbm_plh h[SEQ];
	struct kvbm_block b[SEQ];

	for (uint32_t s = 0; s < BACKGROUND; s++) {
		seq_hashes(base(0, 2) + 1024 * s, SEQ, h);
		register_seq(p, h, SEQ, b);
		release(p, b, SEQ);
	}
}

static const uint32_t *e_tokens(void)
{
	static uint32_t tok[4096];
	uint64_t x = 1;

	for (int i = 0; i < 4096; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		tok[i] = (uint32_t)((x >> 33) % 128256);
	}
	return tok;
}

/* The start gate of run_workers: ready is written, go read until EOF. */
static int gate_ready = -1, gate_go = -1;

/* Called by each worker between its setup and its clock. */
static void gate_wait(void)
{
	char c = 1;

	if (gate_ready < 0)
		return;
	if (write(gate_ready, &c, 1) != 1 || read(gate_go, &c, 1) < 0)
		_exit(2); /* the gate opens with EOF */
}

/* One worker's timed loop of workload @w as worker @t. */
void run_loop(struct kvbm_pool *q, enum wl w, uint32_t t, struct result *res)
{
	struct kvbm_plh *ring = NULL, target[SEQ];
	struct kvbm_block b[SEQ], held[SEQ];
	uint64_t ops = 0, s1 = 0, s2 = 0, t0, deadline;
	uint32_t g = 0;
	int r;

	memset(res, 0, sizeof(*res));
	switch (w) {
	case WL_A_FRESH:
	case WL_A_STEADY:
		ring = malloc(sizeof(*ring) * RING_A);
		for (uint32_t i = 0; i < RING_A; i++)
			seq_hashes(base(t, 0) + 16 * i, 1, &ring[i]);
		if (w == WL_A_STEADY)
			for (; g < RING_A; g++) {
				register_seq(q, &ring[g], 1, b);
				release(q, b, 1);
			}
		break;
	case WL_B:
	case WL_C:
		seq_hashes(base(t, 3), SEQ, target);
		register_seq(q, target, SEQ, held);
		if (w == WL_C)
			release(q, held, SEQ);
		break;
	case WL_B_SAME:
		seq_hashes(base(0, 3), SEQ, target);
		break;
	case WL_D:
	case WL_G_EVICTOR:
		ring = malloc(sizeof(*ring) * RING_D * SEQ);
		for (uint32_t s = 0; s < RING_D; s++)
			seq_hashes(base(t, 1) + 1024 * s, SEQ, ring + (size_t)s * SEQ);
		for (g = 0; g < RING_D; g++) {
			register_seq(q, ring + (size_t)g * SEQ, SEQ, b);
			release(q, b, SEQ);
		}
		break;
	case WL_E:
		break;
	}
	const uint32_t *etok = e_tokens();
	struct kvbm_block_hashes eh[256];
	/* every worker's setup (the warm-ups of a-steady and d are long) is
	 * done before any worker's clock starts */
	gate_wait();
	uint64_t cpu0 = thread_cpu_ns();
	t0 = now_ns();
	deadline = t0 + (uint64_t)(sample_secs * 1e9);
	for (;;) {
		/* check the clock every 64 ops: its cost stays out of the figure */
		for (int k = 0; k < 64; k++, ops++) {
			if (bench_fixed_ops && ops == bench_fixed_ops)
				goto done; /* --ops N (bench_peer.c) */
			switch (w) {
			case WL_A_FRESH:
				if (ops == POOL_BLOCKS)
					goto done; /* the pool is full: no more fresh cycles */
				/* fall through */
			case WL_A_STEADY:
				register_seq(q, &ring[g++ % RING_A], 1, b);
				release(q, b, 1);
				break;
			case WL_B:
			case WL_C:
			case WL_B_SAME: {
				long n = kvbm_match_blocks(q, target, SEQ, b);
				if (n != SEQ)
					die("match", n < 0 ? (int)n : -ENOENT);
				release(q, b, SEQ);
				break;
			}
			case WL_D:
			case WL_G_EVICTOR:
				register_seq(q, ring + (size_t)(g++ % RING_D) * SEQ, SEQ, b);
				release(q, b, SEQ);
				break;
			case WL_E:
				if (kvbm_hash_tokens(etok, 4096, BS, SALT, eh, 256) != 256)
					die("hash", -EINVAL);
				break;
			}
		}
		if (!bench_fixed_ops && now_ns() >= deadline)
			break;
	}
done:
	res->secs = (double)(now_ns() - t0) / 1e9;
	res->cpu_secs = (double)(thread_cpu_ns() - cpu0) / 1e9;
	res->ops = (double)ops;
	res->blocks = (double)ops * (w == WL_A_FRESH || w == WL_A_STEADY ? 1 : w == WL_E ? 256 : SEQ);
	if ((w == WL_B || w == WL_C || w == WL_B_SAME) && !bench_fixed_ops) {
		/* the split: the same op, timed per phase (the clock reads cost
		 * a little, so the two do not add up to the total exactly) */
		uint64_t n = ops / 4 + 1;
		for (uint64_t i = 0; i < n; i++) {
			uint64_t a = now_ns();
			r = (int)kvbm_match_blocks(q, target, SEQ, b);
			uint64_t m = now_ns();
			release(q, b, (uint32_t)r);
			s1 += m - a;
			s2 += now_ns() - m;
		}
		res->split1_ns = (double)s1 / (double)n / SEQ;
		res->split2_ns = (double)s2 / (double)n / SEQ;
	}
	if (w == WL_B)
		release(q, held, SEQ);
	free(ring);
}

/*
 * Runs @w in @n worker processes on the current pool (workers 0..n-1 with
 * distinct keys), started together after their setup. Sums their results.
 */
static void run_workers(enum wl w, int n, struct result *sum)
{
	int ready[2], go[2], out[2];
	pid_t pids[8];

	if (pipe(ready) || pipe(go) || pipe(out))
		die("pipe", -errno);
	for (int i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct kvbm_pool *q = NULL;
			struct result res;
			/* (e) hashes only: no pool, so it runs whatever the directory */
			int r = w == WL_E ? 0 : kvbm_pool_open(pool_name, NULL, worker_open_flags, &q);
			if (r < 0)
				die("attach", r);
			close(go[1]);
			gate_ready = ready[1];
			gate_go = go[0];
			run_loop(q, w, (uint32_t)i, &res);
			if (write(out[1], &res, sizeof(res)) != sizeof(res))
				_exit(3);
			if (q)
				kvbm_pool_close(q);
			_exit(0);
		}
	}
	close(go[0]);
	/* our write ends closed: a worker that dies is an EOF, not a hang */
	close(ready[1]);
	close(out[1]);
	for (int i = 0; i < n; i++) {
		char c;
		if (read(ready[0], &c, 1) != 1)
			die("worker", -EPIPE);
	}
	close(go[1]); /* EOF opens the gate for all */
	memset(sum, 0, sizeof(*sum));
	for (int i = 0; i < n; i++) {
		struct result r;
		if (read(out[0], &r, sizeof(r)) != sizeof(r))
			die("worker result", -EPIPE);
		sum->ops += r.ops / r.secs;     /* rates: summed over workers */
		sum->blocks += r.blocks / r.secs;
		sum->split1_ns += r.split1_ns / n;
		sum->split2_ns += r.split2_ns / n;
		sum->secs = 1;
	}
	for (int i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
	close(ready[0]);
	close(out[0]);
}

/* One sample: a fresh pool, its shared setup, @n workers. */
static void sample(enum wl w, int n, struct result *res)
{
	struct kvbm_pool *p = fresh_pool();
	struct kvbm_block held[SEQ];
	struct kvbm_plh target[SEQ];

	if (w == WL_B || w == WL_C || w == WL_B_SAME)
		background(p);
	if (w == WL_B_SAME) {
		seq_hashes(base(0, 3), SEQ, target);
		register_seq(p, target, SEQ, held);
	}
	run_workers(w, n, res);
	if (bench_check_accounting(p, POOL_BLOCKS))
		exit(1); /* a figure of a pool that lost blocks is no figure */
	if (w == WL_B_SAME)
		release(p, held, SEQ);
	drop_pool(p);
}

/* ---- statistics and output ----------------------------------------------------- */

struct fig {
	const char *key;  /* --json key */
	const char *what; /* table label */
	const char *unit;
	int dir;          /* the target: 1 at least, -1 at most, 0 none */
	double target;
	double med, min, max;
	int have, shown;
};

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void summarize(struct fig *f, double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_dbl);
	f->min = v[0];
	f->max = v[n - 1];
	f->med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	f->have = 1;
}

enum figure {
	F_A_FRESH, F_A_STEADY, F_B, F_B_LOOKUP, F_B_RELEASE, F_B1, F_B1_LOOKUP, F_B1_RELEASE, F_C,
	F_C_LOOKUP, F_C_RELEASE, F_C1, F_C1_LOOKUP, F_C1_RELEASE, F_D,
	F_E, F_E_FLOOR, F_E_RATIO, F_F_A, F_F_A_SCALING, F_F_B, F_F_B_SCALING, F_F_B_SAME,
	F_F_B_SAME_SCALING, F_F_C, F_F_C_SCALING, F_F_D, F_F_D_SCALING, F_F_E_SCALING, F_G_P50,
	F_G_P99, F_G_P999, F_H, F_I_SCHED, F_I_RAW, F_I_RATIO, F_I_POOL, F_I_POOL_RATIO, F_N
};

static struct fig figs[F_N] = {
	[F_A_FRESH] = {"a_fresh_cycles_per_s", "(a) cycle, fresh pool", "cycles/s"},
	[F_A_STEADY] = {"a_steady_cycles_per_s", "(a) cycle, every allocation evicts", "cycles/s", 1,
			2.5e6},
	[F_I_SCHED] = {"i_sched_us_per_request", "(i) request via kvbm_sched (4096 + 256 tokens)",
		       "us/request"},
	[F_I_RAW] = {"i_raw_us_per_request", "    the same block calls by hand + kvbm_tokens",
		     "us/request"},
	[F_I_RATIO] = {"i_sched_over_raw", "    ratio sched / raw", "x", -1, 1.5},
	[F_I_POOL] = {"i_pool_us_per_request", "    the block calls alone (hashes precomputed)",
		      "us/request"},
	[F_I_POOL_RATIO] = {"i_sched_over_pool", "    ratio sched / block calls alone", "x"},
	[F_B] = {"b_ns_per_block", "(b) match 64 active + release", "ns/block", -1, 8},
	[F_B_LOOKUP] = {"b_lookup_ns_per_block", "    lookup alone", "ns/block"},
	[F_B_RELEASE] = {"b_release_ns_per_block", "    release alone", "ns/block"},
	[F_B1] = {"b_one_thread_ns_per_block", "(b) the same, KVBM_OPEN_ONE_THREAD", "ns/block"},
	[F_B1_LOOKUP] = {"b_one_thread_lookup_ns_per_block", "    lookup alone", "ns/block"},
	[F_B1_RELEASE] = {"b_one_thread_release_ns_per_block", "    release alone", "ns/block"},
	[F_C] = {"c_ns_per_block", "(c) match 64 inactive + release", "ns/block", -1, 40},
	[F_C_LOOKUP] = {"c_lookup_ns_per_block", "    resurrect alone", "ns/block"},
	[F_C_RELEASE] = {"c_release_ns_per_block", "    release alone", "ns/block"},
	[F_C1] = {"c_one_thread_ns_per_block", "(c) the same, KVBM_OPEN_ONE_THREAD", "ns/block"},
	[F_C1_LOOKUP] = {"c_one_thread_lookup_ns_per_block", "    resurrect alone", "ns/block"},
	[F_C1_RELEASE] = {"c_one_thread_release_ns_per_block", "    release alone", "ns/block"},
	[F_D] = {"d_blocks_per_s", "(d) eviction pressure, 64-block batches", "blocks/s", 1, 4e6},
	[F_E] = {"e_ns_per_block", "(e) hashing: block, sequence, PLH", "ns/block"},
	[F_E_FLOOR] = {"e_xxh3_floor_ns_per_block", "    raw XXH3 of the block bytes", "ns/block"},
	[F_E_RATIO] = {"e_ratio_to_floor", "    ratio to the floor", "x", -1, 1.3},
	[F_F_A] = {"f_a_steady_cycles_per_s", "(f) a-steady, 2 processes", "cycles/s"},
	[F_F_A_SCALING] = {"f_a_scaling", "    ratio to 1 process", "x", 1, 1},
	[F_F_B] = {"f_b_blocks_per_s", "(f) b, 2 processes, own prefixes", "blocks/s"},
	[F_F_B_SCALING] = {"f_b_scaling", "    ratio to 1 process", "x"},
	[F_F_B_SAME] = {"f_b_same_blocks_per_s", "(f) b, 2 processes, same prefix", "blocks/s"},
	[F_F_B_SAME_SCALING] = {"f_b_same_scaling", "    ratio to 1 process", "x"},
	[F_F_C] = {"f_c_blocks_per_s", "(f) c, 2 processes", "blocks/s"},
	[F_F_C_SCALING] = {"f_c_scaling", "    ratio to 1 process", "x"},
	[F_F_D] = {"f_d_blocks_per_s", "(f) d, 2 processes", "blocks/s"},
	[F_F_D_SCALING] = {"f_d_scaling", "    ratio to 1 process", "x", 1, 1},
	[F_F_E_SCALING] = {"f_e_scaling", "(f) e, 2 processes: ratio (calibration)", "x"},
	[F_G_P50] = {"g_p50_ns", "(g) match 64 while another evicts: p50", "ns"},
	[F_G_P99] = {"g_p99_ns", "    p99", "ns", -1, 5000},
	[F_G_P999] = {"g_p999_ns", "    p99.9", "ns"},
	[F_H] = {"h_bytes_per_block", "(h) segment bytes per block", "B/block", -1, 128},
};

/* Medians of a pool workload with 1 (and, for (f), 2) workers. */
static void bench_pool_wl(enum wl w, int workers, enum figure rate, enum figure s1, enum figure s2,
			  int per_block_ns)
{
	double v[16] = {0}, a[16] = {0}, b[16] = {0};
	struct result r;

	for (int i = 0; i < nsamples; i++) {
		sample(w, workers, &r);
		v[i] = per_block_ns ? 1e9 / r.blocks : (w == WL_A_FRESH || w == WL_A_STEADY ? r.ops
											   : r.blocks);
		a[i] = r.split1_ns;
		b[i] = r.split2_ns;
	}
	summarize(&figs[rate], v, nsamples);
	if (s1 != F_N) {
		summarize(&figs[s1], a, nsamples);
		summarize(&figs[s2], b, nsamples);
	}
}

static void bench_e(int workers, double *out_rate)
{
	double v[16], fl[16];
	const uint32_t *tok = e_tokens();
	struct kvbm_block_hashes bh[256];

	/* the check values of the issue: a wrong hash is no benchmark */
	if (kvbm_hash_tokens(tok, 4096, BS, SALT, bh, 256) != 256 ||
	    bh[0].block_hash != 0x8d1d79a1452142feull || bh[255].seq_hash != 0xecce807585d8929full ||
	    bh[0].plh.hi != 0x0023475e68514850ull || bh[0].plh.lo != 0xbf80000000000000ull ||
	    bh[255].plh.hi != 0x3ffb33a01d617624ull || bh[255].plh.lo != 0xa7f2df90da178822ull)
		die("hash check values", -EINVAL);
	for (int i = 0; i < nsamples; i++) {
		struct result r;
		run_workers(WL_E, workers, &r);
		v[i] = workers == 1 ? 1e9 / r.blocks : r.blocks;
		if (workers > 1)
			continue;
		/* the floor: XXH3 over the same 64-byte blocks, nothing else */
		uint64_t n = 0, acc = 0, t0 = now_ns(), dl = t0 + (uint64_t)(sample_secs * 1e9);
		while (now_ns() < dl)
			for (int k = 0; k < 64; k++, n++)
				for (int blk = 0; blk < 256; blk++)
					acc += XXH3_64bits_withSeed(tok + blk * BS, BS * 4, SALT);
		fl[i] = (double)(now_ns() - t0) / (double)(n * 256);
		if (acc == 42)
			fputc(' ', stderr); /* keeps the loop from being optimised out */
	}
	if (workers == 1) {
		summarize(&figs[F_E], v, nsamples);
		summarize(&figs[F_E_FLOOR], fl, nsamples);
		double ratio = figs[F_E].med / figs[F_E_FLOOR].med;
		summarize(&figs[F_E_RATIO], &ratio, 1);
	} else {
		qsort(v, (size_t)nsamples, sizeof(*v), cmp_dbl);
		*out_rate = v[nsamples / 2];
	}
}

static void set_ratio(enum figure f, double two, double one)
{
	double r = two / one;

	summarize(&figs[f], &r, 1);
}

static void bench_g(void)
{
	struct kvbm_pool *p = fresh_pool();
	struct kvbm_plh target[SEQ];
	struct kvbm_block held[SEQ], b[SEQ];
	size_t cap = 1 << 22, n = 0;
	uint64_t *lat = malloc(sizeof(*lat) * cap);
	int go[2];

	seq_hashes(base(0, 3), SEQ, target);
	register_seq(p, target, SEQ, held);
	if (pipe(go))
		die("pipe", -errno);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q;
		struct result r;
		char c;
		if (kvbm_pool_open(pool_name, NULL, 0, &q) < 0)
			_exit(2);
		close(go[1]);
		if (read(go[0], &c, 1) < 0)
			_exit(3);
		sample_secs *= (double)nsamples;
		run_loop(q, WL_G_EVICTOR, 1, &r); /* warms up, then evicts for the run */
		kvbm_pool_close(q);
		_exit(0);
	}
	close(go[0]);
	close(go[1]);
	/* let the evictor finish its warm-up pass before measuring */
	struct timespec ts = {0, 300000000};
	nanosleep(&ts, NULL);
	uint64_t dl = now_ns() + (uint64_t)(sample_secs * (double)nsamples * 0.8e9);
	while (now_ns() < dl && n < cap) {
		uint64_t t0 = now_ns();
		long k = kvbm_match_blocks(p, target, SEQ, b);
		lat[n++] = now_ns() - t0;
		if (k != SEQ)
			die("match", -ENOENT);
		release(p, b, SEQ);
	}
	waitpid(pid, NULL, 0);
	double *d = malloc(sizeof(*d) * n);
	for (size_t i = 0; i < n; i++)
		d[i] = (double)lat[i];
	qsort(d, n, sizeof(*d), cmp_dbl);
	double q50 = d[n / 2], q99 = d[(size_t)((double)n * 0.99)], q999 = d[(size_t)((double)n * 0.999)];
	summarize(&figs[F_G_P50], &q50, 1);
	summarize(&figs[F_G_P99], &q99, 1);
	summarize(&figs[F_G_P999], &q999, 1);
	release(p, held, SEQ);
	drop_pool(p);
	free(lat);
	free(d);
}

static void bench_h(void)
{
	struct kvbm_pool *p = fresh_pool();
	struct kvbm_pool_info pi;

	kvbm_pool_info(p, &pi);
	double v = (double)pi.segment_size / POOL_BLOCKS;
	summarize(&figs[F_H], &v, 1);
	drop_pool(p);
}

/*
 * (i) One request as an engine runs it: a 4,096-token prompt prefilled in
 * 512-token chunks, then 256 decode steps, then freed; driven through
 * kvbm_sched_*, against the same pool calls made by hand (allocate, stage
 * the batch, register with tokens, release all), hashing with kvbm_tokens
 * ("raw"), and against the pool calls alone with every hash computed
 * beforehand ("pool"). Every request has its own tokens (no prefix hits);
 * run in this process.
 */
#define I_PROMPT 4096
#define I_CHUNK 512
#define I_DECODE 256
#define I_BLOCKS (I_PROMPT / BS + I_DECODE / BS + 1)

static void i_tokens(uint32_t req, uint32_t *t)
{
	for (uint32_t k = 0; k < I_PROMPT + I_DECODE + 1; k++)
		t[k] = req * 8192u + k;
}

static void i_sched(struct kvbm_pool *p, const uint32_t *t)
{
	struct kvbm_sched *s;
	int r = kvbm_sched_new(p, t, I_PROMPT, I_DECODE + 1, BS, SALT, NULL, NULL, &s);

	if (r < 0)
		die("kvbm_sched_new", r);
	for (uint32_t c = 0; c < I_PROMPT / I_CHUNK; c++) {
		int last = c + 1 == I_PROMPT / I_CHUNK;
		if ((r = kvbm_sched_schedule_prefill(s, I_CHUNK, NULL)) < 0 ||
		    (r = kvbm_sched_apply_prefill(s, last, t[I_PROMPT], NULL)) < 0)
			die("prefill", r);
	}
	for (uint32_t k = 1; k <= I_DECODE; k++)
		if ((r = kvbm_sched_schedule_decode(s, NULL)) < 0 ||
		    (r = kvbm_sched_apply_decode(s, t[I_PROMPT + k], NULL)) < 0)
			die("decode", r);
	kvbm_sched_free(s);
}

/* The same pool calls by hand; @pre: every block's PLH computed already
 * (NULL: hash with kvbm_tokens as the request goes). */
static void i_raw(struct kvbm_pool *p, const uint32_t *t, const struct kvbm_plh *pre)
{
	static struct kvbm_block b[I_BLOCKS];
	static struct kvbm_plh h[I_BLOCKS];
	struct kvbm_tokens *seq = NULL;
	uint32_t nb = 0, held = 0;
	size_t first, nnew;
	int r;

	if (!pre) {
		if ((r = kvbm_tokens_new(BS, SALT, &seq)) < 0 ||
		    (r = kvbm_tokens_extend(seq, t, I_PROMPT, NULL, NULL)) < 0)
			die("kvbm_tokens", r);
	}
	for (uint32_t c = 0; c < I_PROMPT / I_CHUNK; c++, nb += I_CHUNK / BS) {
		uint32_t n = I_CHUNK / BS;
		for (uint32_t i = 0; i < n; i++)
			h[nb + i] = pre ? pre[nb + i] : kvbm_tokens_block(seq, nb + i)->plh;
		if ((r = kvbm_allocate_blocks(p, n, b + nb, NULL, NULL)) < 0 ||
		    (r = kvbm_stage_blocks(p, b + nb, h + nb, n, BS, NULL)) < 0 ||
		    (r = kvbm_register_blocks_tokens(p, b + nb, n, t + (size_t)nb * BS)) < 0)
			die("raw prefill", r);
	}
	held = nb;
	for (uint32_t k = 1; k <= I_DECODE; k++) {
		if (held == nb && (r = kvbm_allocate_blocks(p, 1, b + held++, NULL, NULL)) < 0)
			die("raw allocate", r);
		nnew = 0;
		if (!pre && (r = kvbm_tokens_extend(seq, t + I_PROMPT + k - 1, 1, &first, &nnew)) < 0)
			die("kvbm_tokens", r);
		if (pre ? (I_PROMPT + k) % BS == 0 : nnew) {
			h[nb] = pre ? pre[nb] : kvbm_tokens_block(seq, first)->plh;
			if ((r = kvbm_stage_blocks(p, b + nb, h + nb, 1, BS, NULL)) < 0 ||
			    (r = kvbm_register_blocks_tokens(p, b + nb, 1, t + (size_t)nb * BS)) < 0)
				die("raw decode", r);
			nb++;
		}
	}
	if ((r = kvbm_release_blocks(p, b, held)) < 0)
		die("raw release", r);
	kvbm_tokens_free(seq);
}

static void bench_i(void)
{
	struct kvbm_pool *p = fresh_pool();
	static uint32_t t[I_PROMPT + I_DECODE + 1];
	static struct kvbm_block_hashes pre[I_BLOCKS];
	static struct kvbm_plh preh[I_BLOCKS];
	double v[3][16];
	uint32_t req = 0;

	for (int s = 0; s < nsamples; s++)
		for (int mode = 0; mode < 3; mode++) { /* interleaved: same pool state */
			uint64_t t0 = now_ns(), dl = t0 + (uint64_t)(sample_secs * 1e9 / 3);
			uint64_t n = 0, spent = 0;
			while (now_ns() < dl) {
				i_tokens(req++, t);
				if (mode == 2) { /* hashing outside the clock */
					kvbm_hash_tokens(t, I_PROMPT + I_DECODE + 1, BS, SALT, pre, I_BLOCKS);
					for (int k = 0; k < I_BLOCKS; k++)
						preh[k] = pre[k].plh;
				}
				uint64_t a = now_ns();
				if (mode == 0)
					i_sched(p, t);
				else
					i_raw(p, t, mode == 2 ? preh : NULL);
				spent += now_ns() - a;
				n++;
			}
			v[mode][s] = (double)spent / (double)n / 1e3;
		}
	summarize(&figs[F_I_SCHED], v[0], nsamples);
	summarize(&figs[F_I_RAW], v[1], nsamples);
	summarize(&figs[F_I_POOL], v[2], nsamples);
	set_ratio(F_I_RATIO, figs[F_I_SCHED].med, figs[F_I_RAW].med);
	set_ratio(F_I_POOL_RATIO, figs[F_I_SCHED].med, figs[F_I_POOL].med);
	drop_pool(p);
}

/* "met", "MISSED", or "" without a target; the target as text in @t. */
static const char *verdict(const struct fig *f, char *t, size_t len)
{
	if (!f->dir) {
		snprintf(t, len, "-");
		return "";
	}
	snprintf(t, len, "%s %.4g", f->dir > 0 ? ">=" : "<=", f->target);
	return (f->dir > 0 ? f->med >= f->target : f->med <= f->target) ? "met" : "MISSED";
}

static void print_table(void)
{
	char t[32];

	printf("%-44s %14s %14s %14s  %-9s %-12s %s\n", "workload", "median", "min", "max", "unit",
	       "target", "verdict");
	for (int i = 0; i < F_N; i++) {
		const struct fig *f = &figs[i];
		if (!f->have)
			continue;
		const char *v = verdict(f, t, sizeof(t));
		printf("%-44s %14.4g %14.4g %14.4g  %-9s %-12s %s\n", f->what, f->med, f->min, f->max,
		       f->unit, t, v);
	}
}

/* On a terminal, a line per figure as soon as it is measured, so a run
 * of a minute or more shows where it is. */
static int progress;

static void report_progress(void)
{
	char t[32];

	for (int i = 0; progress && i < F_N; i++) {
		struct fig *f = &figs[i];
		if (!f->have || f->shown)
			continue;
		f->shown = 1;
		const char *v = verdict(f, t, sizeof(t));
		fprintf(stderr, "kvbm-bench: %-44s %12.4g %-9s %s%s%s\n", f->what, f->med, f->unit,
			f->dir ? t : "", f->dir ? " " : "", v);
	}
}

static void print_json(void)
{
	struct json j;

	json_init(&j, stdout);
	json_obj_begin(&j, NULL);
	json_bool(&j, "quick", quick);
	json_u64(&j, "samples", (uint64_t)nsamples);
	for (int i = 0; i < F_N; i++)
		if (figs[i].have)
			json_dbl(&j, figs[i].key, figs[i].med);
	/* each figure with a target: whether it met it */
	json_obj_begin(&j, "met");
	for (int i = 0; i < F_N; i++)
		if (figs[i].have && figs[i].dir) {
			char t[32];
			json_bool(&j, figs[i].key, !strcmp(verdict(&figs[i], t, sizeof(t)), "met"));
		}
	json_obj_end(&j);
	/* and the targets themselves, for a plot against them */
	json_obj_begin(&j, "targets");
	for (int i = 0; i < F_N; i++)
		if (figs[i].have && figs[i].dir) {
			json_obj_begin(&j, figs[i].key);
			json_dbl(&j, "target", figs[i].target);
			json_str(&j, "at", figs[i].dir > 0 ? "least" : "most");
			json_str(&j, "unit", figs[i].unit);
			json_obj_end(&j);
		}
	json_obj_end(&j);
	json_obj_end(&j);
	json_finish(&j);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"quick", no_argument, NULL, 'q'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{"event-ring", required_argument, NULL, 'E'},
		{"ops", required_argument, NULL, 'O'},
		{"peer", required_argument, NULL, 'P'},
		{"instructions", no_argument, NULL, 'I'},
		{"rounds", required_argument, NULL, 'R'},
		{NULL, 0, NULL, 0},
	};
	struct bench_peer_opts po = {.rounds = 5, .self = argv[0]};
	int json = 0, c;
	char want[256] = {0};

	while ((c = getopt_long(argc, argv, "qjhVE:", opts, NULL)) != -1) {
		switch (c) {
		case 'E':
			event_ring = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 'O':
			po.ops = strtoull(optarg, NULL, 10);
			break;
		case 'P':
			po.peer = optarg;
			break;
		case 'I':
			po.instructions = 1;
			break;
		case 'R':
			po.rounds = atoi(optarg);
			break;
		case 'q':
			quick = 1;
			break;
		case 'j':
			json = 1;
			break;
		case 'V':
			return tool_version("kvbm-bench");
		case 'h':
			printf("usage: kvbm-bench [--quick] [--json] [--event-ring N] [WORKLOAD...]\n"
			       "       kvbm-bench --ops N | --peer PATH | --instructions [WL...]\n"
			       "Measures the pool on these workloads (all of them by default), each in\n"
			       "worker processes on one pool in $KVBM_SHM_DIR (default /dev/shm):\n"
			       "  a  allocate, stage, register and release cycles (one process)\n"
			       "  b  prefix match of active (held) blocks\n"
			       "  c  prefix match of inactive blocks (resurrection)\n"
			       "  d  allocation under eviction pressure\n"
			       "  e  hashing, against the raw XXH3 floor (no pool)\n"
			       "  f  a and d in two processes at once\n"
			       "  g  match latency while another process evicts\n"
			       "  h  segment bytes per block\n"
			       "  i  one request through kvbm_sched against the same block calls by hand\n"
			       "  --quick         5 samples of each figure instead of 9\n"
			       "  --json          one JSON document of the medians\n"
			       "  --event-ring N  the pool's event ring (4096; 0: no events)\n"
			       "Against the Rust reference (WL: a-fresh a-steady b c d e2):\n"
			       "  --ops N [WL...]       in this process, N ops, one line of key=value\n"
			       "  --peer PATH [WL...]   alternate with the Rust harness: medians, ratio\n"
			       "  --instructions [--peer PATH] [WL...]  instructions per block (callgrind)\n"
			       "  --rounds N            runs per side with --peer (5)\n"
			       "  --help, --version\n"
			       "Exit: 0 measured, 1 a failure, 2 usage.\n");
			return 0;
		default:
			fprintf(stderr, "usage: kvbm-bench [--quick] [--json] [--event-ring N] "
					"[WORKLOAD...] (kvbm-bench --help)\n");
			return 2;
		}
	}
	if (po.ops || po.peer || po.instructions)
		return bench_peer_main(&po, argv + optind, argc - optind);
	for (int i = optind; i < argc; i++) {
		if (strlen(argv[i]) != 1 || argv[i][0] < 'a' || argv[i][0] > 'i') {
			fprintf(stderr, "kvbm-bench: unknown workload '%s' (a..i: kvbm-bench --help)\n",
				argv[i]);
			return 2;
		}
		want[(unsigned char)argv[i][0]] = 1;
	}
	if (optind == argc)
		for (int k = 'a'; k <= 'i'; k++)
			want[k] = 1;
	nsamples = quick ? 5 : 9;
	sample_secs = quick ? 0.12 : 0.4;
	signal(SIGPIPE, SIG_IGN);
	progress = isatty(STDERR_FILENO);
	if (progress) {
		fprintf(stderr, "kvbm-bench: workloads");
		for (int k = 'a'; k <= 'i'; k++)
			if (want[k])
				fprintf(stderr, " %c", k);
		fprintf(stderr, ", %d samples each; a line per figure as it is measured\n",
			nsamples);
	}

	if (want['a']) {
		bench_pool_wl(WL_A_FRESH, 1, F_A_FRESH, F_N, F_N, 0);
		bench_pool_wl(WL_A_STEADY, 1, F_A_STEADY, F_N, F_N, 0);
		report_progress();
	}
	if (want['b'])
		bench_pool_wl(WL_B, 1, F_B, F_B_LOOKUP, F_B_RELEASE, 1);
	report_progress();
	if (want['c'])
		bench_pool_wl(WL_C, 1, F_C, F_C_LOOKUP, F_C_RELEASE, 1);
	report_progress();
	worker_open_flags = KVBM_OPEN_ONE_THREAD;
	if (want['b'])
		bench_pool_wl(WL_B, 1, F_B1, F_B1_LOOKUP, F_B1_RELEASE, 1);
	report_progress();
	if (want['c'])
		bench_pool_wl(WL_C, 1, F_C1, F_C1_LOOKUP, F_C1_RELEASE, 1);
	report_progress();
	worker_open_flags = 0;
	if (want['d'])
		bench_pool_wl(WL_D, 1, F_D, F_N, F_N, 0);
	report_progress();
	if (want['e'])
		bench_e(1, NULL);
	report_progress();
	if (want['f']) {
		/* the one-worker rates these ratios need, measured in this run */
		struct { enum wl w; enum figure two, ratio; } f[] = {
			{WL_A_STEADY, F_F_A, F_F_A_SCALING}, {WL_B, F_F_B, F_F_B_SCALING},
			{WL_B_SAME, F_F_B_SAME, F_F_B_SAME_SCALING}, {WL_C, F_F_C, F_F_C_SCALING},
			{WL_D, F_F_D, F_F_D_SCALING},
		};
		for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
			struct fig one;
			bench_pool_wl(f[i].w, 1, f[i].two, F_N, F_N, 0);
			one = figs[f[i].two];
			bench_pool_wl(f[i].w, 2, f[i].two, F_N, F_N, 0);
			set_ratio(f[i].ratio, figs[f[i].two].med, one.med);
		}
		double e2;
		bench_e(1, NULL);
		double e1 = 1e9 / figs[F_E].med; /* blocks/s of one process */
		bench_e(2, &e2);
		set_ratio(F_F_E_SCALING, e2, e1);
		report_progress();
	}
	if (want['g'])
		bench_g();
	report_progress();
	if (want['h'])
		bench_h();
	if (want['i'])
		bench_i();
	report_progress();
	if (json)
		print_json();
	else
		print_table();
	return 0;
}
