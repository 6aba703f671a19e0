/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_peer.c - kvbm-bench's figures as ratios to the reference, measured
 * side by side (issue 18). Three modes, on the workloads the Rust harness
 * of ../shared/peer runs, by its names (a-fresh a-steady b c d e2):
 *
 *   --ops N           one workload in this process, N ops, no fork: one
 *                     line of key=value, the harness's format (and what
 *                     callgrind can count);
 *   --peer PATH       each workload alternately here (ourselves with
 *                     --ops, in a fresh process) and in the harness at
 *                     PATH, --rounds times each: both medians, the Rust/C
 *                     ratio of wall and of on-CPU time, the load average;
 *   --instructions    both sides (the peer's with --peer) under callgrind
 *                     at two op counts: instructions per block, the
 *                     difference divided by the difference in blocks, so
 *                     that setup drops out. Exact whatever the load.
 *
 * Every --ops run checks the pool's accounting afterwards (evictions =
 * allocations - pool size, no duplicate, no key the index refused), as the
 * reference harness does, and fails if it is off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define POOL_BLOCKS 16384

struct wl_def {
	const char *name;
	enum wl w;
	uint32_t blocks_per_op;
	uint64_t peer_ops;  /* --peer without --ops: about 0.1-0.3 s a run */
	uint64_t n1, n2;    /* --instructions: the two op counts */
};

static const struct wl_def wls_all[] = {
	{"a-fresh", WL_A_FRESH, 1, POOL_BLOCKS, 2000, 6000},
	{"a-steady", WL_A_STEADY, 1, 400000, 20000, 60000},
	{"b", WL_B, 64, 150000, 1000, 3000},
	{"c", WL_C, 64, 25000, 300, 900},
	{"d", WL_D, 64, 6000, 100, 300},
	{"e2", WL_E, 256, 80000, 200, 600},
};
static const char *const wls_default[] = {"a-steady", "b", "c", "d"};

static const struct wl_def *wl_find(const char *name)
{
	for (size_t i = 0; i < sizeof(wls_all) / sizeof(wls_all[0]); i++)
		if (!strcmp(wls_all[i].name, name))
			return &wls_all[i];
	return NULL;
}

uint64_t thread_cpu_ns(void)
{
	/* the schedstat figure the harness reads, without its tick-sized
	 * steps (it is brought up to date only at scheduler events) */
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void loadavg(char *out, size_t len)
{
	double a = 0, b = 0, c = 0;
	FILE *f = fopen("/proc/loadavg", "r");

	if (f) {
		if (fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
			a = b = c = 0;
		fclose(f);
	}
	snprintf(out, len, "%.2f,%.2f,%.2f", a, b, c);
}

int bench_check_accounting(struct kvbm_pool *p, uint32_t blocks)
{
	struct kvbm_metrics m;
	int r = kvbm_metrics_snapshot(p, &m);

	if (r < 0) {
		fprintf(stderr, "kvbm-bench: metrics: %s\n", kvbm_strerror(r));
		return -1;
	}
	/* nothing in these workloads frees a registered block (no
	 * reset-on-release, no duplicates): each allocation past the pool's
	 * size is one eviction */
	uint64_t want = m.allocations > blocks ? m.allocations - blocks : 0;
	if (m.evictions == want && m.duplicate_blocks == 0 && m.index_full == 0)
		return 0;
	fprintf(stderr,
		"kvbm-bench: accounting: evictions %llu, allocations %llu - %u blocks = %llu; "
		"duplicates %llu, index_full %llu\n",
		(unsigned long long)m.evictions, (unsigned long long)m.allocations, blocks,
		(unsigned long long)want, (unsigned long long)m.duplicate_blocks,
		(unsigned long long)m.index_full);
	return -1;
}

/* --ops: @d in this process, @ops ops, on a fresh pool. */
static int run_ops(const struct wl_def *d, uint64_t ops)
{
	struct kvbm_pool *p = fresh_pool();
	struct result res;
	char la[64];

	if (d->w == WL_B || d->w == WL_C)
		background(p);
	if (d->w == WL_A_FRESH && ops > POOL_BLOCKS)
		ops = POOL_BLOCKS; /* a fresh cycle needs a free block */
	bench_fixed_ops = ops;
	run_loop(p, d->w, 0, &res);
	int bad = bench_check_accounting(p, POOL_BLOCKS);
	drop_pool(p);
	loadavg(la, sizeof(la));
	printf("impl=c wl=%s T=1 ops=%llu blocks=%llu wall_s=%.6f ns_per_block=%.3f "
	       "cpu_ns_per_block=%.3f load=%s accounting=%s\n",
	       d->name, (unsigned long long)res.ops, (unsigned long long)res.blocks, res.secs,
	       res.secs * 1e9 / res.blocks, res.cpu_secs * 1e9 / res.blocks, la,
	       bad ? "off" : "ok");
	return bad ? 1 : 0;
}

/* The value of key @k in a line of key=value pairs, or -1. */
static double field(const char *line, const char *k)
{
	size_t n = strlen(k);

	for (const char *s = line; (s = strstr(s, k)); s += n)
		if ((s == line || s[-1] == ' ') && s[n] == '=')
			return strtod(s + n + 1, NULL);
	return -1;
}

/* Runs @cmd (a shell command) and returns its first output line that
 * holds @key (stdout and stderr both), or NULL. */
static char *run_line(const char *cmd, const char *key)
{
	static char line[4096];
	char *found = NULL;
	FILE *f = popen(cmd, "r");

	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f))
		if (!found && strstr(line, key)) {
			found = strdup(line);
		}
	int st = pclose(f);
	if (st != 0 && found) {
		fprintf(stderr, "kvbm-bench: '%s' exited with status %d\n", cmd, st);
		free(found);
		found = NULL;
	}
	return found;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_dbl);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The shell command of one side: ourselves (@self) or the harness. */
static void side_cmd(char *buf, size_t len, const char *prefix, const char *self,
		     const char *peer, const struct wl_def *d, uint64_t ops)
{
	if (peer)
		snprintf(buf, len, "%s'%s' %s --ops %llu", prefix, peer, d->name,
			 (unsigned long long)ops);
	else
		snprintf(buf, len, "%s'%s' --ops %llu %s", prefix, self, (unsigned long long)ops,
			 d->name);
}

/* --peer: the two sides alternated, the first side switching each round. */
static int run_peer(const struct bench_peer_opts *o, const char *self, const struct wl_def *d)
{
	enum { MAXR = 64 };
	double w[2][MAXR], c[2][MAXR];
	uint64_t ops = o->ops ? o->ops : d->peer_ops;
	int rounds = o->rounds < 1 ? 1 : o->rounds > MAXR ? MAXR : o->rounds;
	char cmd[8192], la0[64], la1[64];

	loadavg(la0, sizeof(la0));
	for (int r = 0; r < rounds; r++)
		for (int k = 0; k < 2; k++) {
			int side = (r + k) % 2; /* 0: C, 1: Rust */
			side_cmd(cmd, sizeof(cmd), "", self, side ? o->peer : NULL, d, ops);
			char *line = run_line(cmd, "ns_per_block=");
			if (!line) {
				fprintf(stderr, "kvbm-bench: no figure from: %s\n", cmd);
				return 1;
			}
			w[side][r] = field(line, "ns_per_block");
			c[side][r] = field(line, "cpu_ns_per_block");
			free(line);
		}
	loadavg(la1, sizeof(la1));
	double wc = median(w[0], rounds), wr = median(w[1], rounds);
	double cc = median(c[0], rounds), cr = median(c[1], rounds);
	printf("%-9s %10.2f %10.2f %10.2f %10.2f %8.2fx %8.2fx  %s -> %s\n", d->name, wc, cc, wr,
	       cr, wr / wc, cr / cc, la0, la1);
	return 0;
}

/* Instructions of one run of @cmd under callgrind, or -1. */
static double instructions(const char *cmd)
{
	char *line = run_line(cmd, "I   refs:");
	double v = -1;

	if (line) {
		char digits[64];
		size_t n = 0;
		for (const char *s = strstr(line, "refs:"); *s && n + 1 < sizeof(digits); s++)
			if (*s >= '0' && *s <= '9')
				digits[n++] = *s; /* 65,654,838 */
		digits[n] = 0;
		v = n ? strtod(digits, NULL) : -1;
		free(line);
	}
	return v;
}

static double instr_per_block(const char *self, const char *peer, const struct wl_def *d)
{
	const char *vg = "valgrind --tool=callgrind --callgrind-out-file=/dev/null ";
	char cmd[8192];
	double i[2];
	uint64_t n[2] = {d->n1, d->n2};

	for (int k = 0; k < 2; k++) {
		side_cmd(cmd, sizeof(cmd), vg, self, peer, d, n[k]);
		/* callgrind's summary is on stderr, the figures' line on stdout */
		strncat(cmd, " 2>&1 >/dev/null", sizeof(cmd) - strlen(cmd) - 1);
		i[k] = instructions(cmd);
		if (i[k] < 0) {
			fprintf(stderr, "kvbm-bench: no instruction count from: %s\n", cmd);
			return -1;
		}
	}
	return (i[1] - i[0]) / ((double)(n[1] - n[0]) * d->blocks_per_op);
}

static int run_instructions(const struct bench_peer_opts *o, const char *self,
			    const struct wl_def *d)
{
	double c = instr_per_block(self, NULL, d);

	if (c < 0)
		return 1;
	if (!o->peer) {
		printf("%-9s %12.1f\n", d->name, c);
		return 0;
	}
	double r = instr_per_block(self, o->peer, d);
	if (r < 0)
		return 1;
	printf("%-9s %12.1f %12.1f %8.2f\n", d->name, c, r, c / r);
	return 0;
}

int bench_peer_main(const struct bench_peer_opts *o, char **names, int nwl)
{
	const struct wl_def *sel[16];
	char self[4096];
	int n = 0, bad = 0;

	if (nwl == 0)
		for (size_t i = 0; i < sizeof(wls_default) / sizeof(wls_default[0]); i++)
			sel[n++] = wl_find(wls_default[i]);
	for (int i = 0; i < nwl && n < 16; i++) {
		if (!(sel[n++] = wl_find(names[i]))) {
			fprintf(stderr,
				"kvbm-bench: unknown workload '%s' with --ops, --peer or "
				"--instructions (a-fresh a-steady b c d e2)\n",
				names[i]);
			return 64;
		}
	}
	/* the C side is this very binary, found through /proc */
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (len <= 0) {
		fprintf(stderr, "kvbm-bench: /proc/self/exe: %s\n", strerror(errno));
		return 1;
	}
	self[len] = 0;
	if (o->peer && access(o->peer, X_OK) != 0) {
		fprintf(stderr, "kvbm-bench: --peer %s: %s\n", o->peer, strerror(errno));
		return 64;
	}
	if (o->instructions) {
		if (o->peer)
			printf("%-9s %12s %12s %8s\n", "workload", "C instr/blk", "Rust instr/blk",
			       "C/Rust");
		else
			printf("%-9s %12s\n", "workload", "C instr/blk");
		for (int i = 0; i < n && !bad; i++)
			bad = run_instructions(o, self, sel[i]);
		return bad;
	}
	if (o->peer) {
		printf("%-9s %10s %10s %10s %10s %9s %9s  %s\n", "workload", "C ns/blk", "C cpu",
		       "Rust ns", "Rust cpu", "wall R/C", "cpu R/C", "load before -> after");
		for (int i = 0; i < n && !bad; i++)
			bad = run_peer(o, self, sel[i]);
		return bad;
	}
	for (int i = 0; i < n && !bad; i++)
		bad = run_ops(sel[i], o->ops);
	return bad;
}
