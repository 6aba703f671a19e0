/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-top - a live view of kvbm pools on a terminal: blocks by state, the
 * allocation, eviction and event rates and the match hit ratio (the stats
 * collector's, over each refresh), the mutex's recoveries, and every
 * attached process with its liveness and holds. Refreshes once a second;
 * q quits. --once prints one view (rates over one interval) for scripts.
 *
 *   kvbm-top [--once] [--interval MS] [POOL...]     (no POOL: every pool)
 *
 * It reads the pools as kvbm-shm-dump does: a read-only mapping, no lock,
 * no process-table entry, so watching changes nothing and works on a pool
 * whose processes are all dead or stuck.
 *
 * Exit: 0 done; 1 a named pool cannot be read; 2 usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "inspect.h"
#include "version.h"

#define MAX_POOLS 64

struct watched {
	char name[KVBM_NAME_MAX + 1];
	struct kvbm_inspect in;
	int open_rc;              /* kvbm_inspect_open(): 0, or why not */
	struct kvbm_stats *stats; /* fed from the segment's metric shards */
	uint64_t events_prev, t_prev;
	double events_rate;
	int have_prev;
};

static struct watched pools[MAX_POOLS];
static int npools;
static volatile sig_atomic_t stop;
static struct termios saved_tty;
static int tty_raw;

static void usage(FILE *f)
{
	fprintf(f, "usage: kvbm-top [--once] [--interval MS] [POOL...]\n"
		   "A live view of the pools in $KVBM_SHM_DIR (default /dev/shm), or of\n"
		   "the POOLs named: blocks by state, allocation, eviction and event rates,\n"
		   "the match hit ratio, mutex recoveries, and each attached process with\n"
		   "its liveness and holds. Refreshes every MS milliseconds (1000); q quits.\n"
		   "  --once          print one view (rates over one interval) and exit\n"
		   "  --interval MS   the refresh interval, 100..60000 (1000)\n"
		   "  --help, --version\n"
		   "Exit: 0 done; 1 a named pool cannot be read; 2 usage.\n");
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void tty_restore(void)
{
	if (tty_raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
	tty_raw = 0;
}

/* Keys without Enter and without echo, so that q quits at once. */
static void tty_keys(void)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tty) < 0)
		return;
	t = saved_tty;
	t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) {
		tty_raw = 1;
		atexit(tty_restore);
	}
}

static struct watched *find(const char *name)
{
	for (int i = 0; i < npools; i++)
		if (!strcmp(pools[i].name, name))
			return &pools[i];
	return NULL;
}

static void watch(const char *name)
{
	struct watched *w;

	if (find(name) || npools == MAX_POOLS)
		return;
	w = &pools[npools++];
	memset(w, 0, sizeof(*w));
	snprintf(w->name, sizeof(w->name), "%s", name);
	w->open_rc = kvbm_inspect_open(&w->in, name);
	/* the collector computes rates from samples; it needs no handle */
	if (kvbm_stats_new(NULL, 0, &w->stats) == 0)
		kvbm_stats_set_enabled(w->stats, 1);
}

static int cmp_watched(const void *a, const void *b)
{
	return strcmp(((const struct watched *)a)->name, ((const struct watched *)b)->name);
}

static void unwatch(struct watched *w)
{
	if (w->open_rc == 0)
		kvbm_inspect_close(&w->in);
	kvbm_stats_free(w->stats);
	*w = pools[--npools];
}

/* A pool not (yet) valid is opened again: its creator may have finished
 * since, or someone re-created it. One whose file is gone is dropped when
 * @drop_gone (every pool of the directory), else shown as missing. */
static void refresh(int drop_gone)
{
	for (int i = 0; i < npools; i++) {
		struct watched *w = &pools[i];
		char path[PATH_MAX], bare[KVBM_NAME_MAX + 1];
		struct stat st;
		int gone = kvbm_seg_path(w->name, path, sizeof(path), bare, 1) < 0 ||
			   stat(path, &st) < 0;
		if (gone && drop_gone) {
			unwatch(w);
			i--;
			continue;
		}
		if (w->open_rc == 0 && !gone && kvbm_inspect_verdict(&w->in) == 0)
			continue;
		if (w->open_rc == 0)
			kvbm_inspect_close(&w->in);
		w->open_rc = kvbm_inspect_open(&w->in, w->name);
		w->have_prev = 0;
	}
}

/* Every pool of the directory: new ones are watched from their first view. */
static void scan_dir(void)
{
	DIR *d = opendir(kvbm_shm_dir());
	struct dirent *de;

	refresh(1);
	if (!d)
		return;
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, "kvbm.", 5) && de->d_name[5] && !find(de->d_name + 5))
			watch(de->d_name + 5);
	closedir(d);
	qsort(pools, (size_t)npools, sizeof(pools[0]), cmp_watched);
}

/* One sample of pool @w's metrics into its collector, and its event rate. */
static void sample(struct watched *w, const struct kvbm_census *k, uint64_t t)
{
	struct kvbm_metrics m;

	memset(&m, 0, sizeof(m));
	m.allocations = (uint64_t)k->metrics[KVBM_M_ALLOCATIONS];
	m.evictions = (uint64_t)k->metrics[KVBM_M_EVICTIONS];
	m.registrations = (uint64_t)k->metrics[KVBM_M_REGISTRATIONS];
	m.match_hashes_requested = (uint64_t)k->metrics[KVBM_M_MATCH_HASHES_REQUESTED];
	m.match_blocks_returned = (uint64_t)k->metrics[KVBM_M_MATCH_BLOCKS_RETURNED];
	m.scan_hashes_requested = (uint64_t)k->metrics[KVBM_M_SCAN_HASHES_REQUESTED];
	m.scan_blocks_returned = (uint64_t)k->metrics[KVBM_M_SCAN_BLOCKS_RETURNED];
	m.inflight_mutable = k->inflight_mutable;
	m.inflight_immutable = k->inflight_immutable;
	m.reset_pool_size = k->free;
	m.inactive_pool_size = k->inactive;
	kvbm_stats_sample_at(w->stats, &m, t);

	const struct kvbm_shm_events *ev = w->in.seg.events;
	uint64_t head = ev ? __atomic_load_n(&ev->head, __ATOMIC_ACQUIRE) : 0;
	if (w->have_prev && t > w->t_prev)
		w->events_rate = (double)(head - w->events_prev) * 1e9 / (double)(t - w->t_prev);
	w->events_prev = head;
	w->t_prev = t;
	w->have_prev = 1;
}

static void sample_all(void)
{
	uint64_t t = now_ns();

	for (int i = 0; i < npools; i++) {
		struct watched *w = &pools[i];
		struct kvbm_census k;
		if (w->open_rc < 0 || kvbm_inspect_verdict(&w->in))
			continue;
		kvbm_inspect_census(&w->in, &k);
		sample(w, &k, t);
	}
}

static void bar(uint32_t part, uint32_t total, int width, char c, char *out, int *pos)
{
	int n = total ? (int)((uint64_t)part * (uint64_t)width / total) : 0;

	if (part && !n)
		n = 1;
	for (int i = 0; i < n && *pos < width; i++)
		out[(*pos)++] = c;
}

static void show_pool(const struct watched *w)
{
	if (w->open_rc < 0) {
		printf("%s: %s\n\n", w->name,
		       w->open_rc == -EACCES ? "permission denied" : kvbm_strerror(w->open_rc));
		return;
	}
	int verdict = kvbm_inspect_verdict(&w->in);
	if (verdict) {
		printf("%s: %s\n\n", w->name, kvbm_strerror(verdict));
		return;
	}
	const struct kvbm_shm_header *h = &w->in.hdr;
	struct kvbm_census k;
	struct kvbm_stats_snapshot s;
	char b[41];
	int pos = 0;

	kvbm_inspect_census(&w->in, &k);
	uint32_t held = k.total - k.free - k.inactive;
	printf("%s  tier %.*s  %u blocks x %u tokens  %s\n", w->name, KVBM_TIER_MAX, h->config.tier,
	       k.total, h->config.block_size, kvbm_seg_state_name(h->state));
	bar(held, k.total, 40, '#', b, &pos);
	bar(k.inactive, k.total, 40, '+', b, &pos);
	while (pos < 40)
		b[pos++] = '.';
	b[40] = '\0';
	printf("  [%s]  # in use %u (mutable %u, staged %u, held %u, duplicate %u)  + inactive %u"
	       "  . free %u\n",
	       b, held, k.mutable_, k.staged, k.active, k.dups, k.inactive, k.free);
	if (kvbm_stats_latest(w->stats, &s) == 1 && w->have_prev)
		printf("  alloc/s %-10.0f evict/s %-10.0f match hit %5.1f%%  events/s %.0f\n",
		       s.allocation_rate, s.eviction_rate, 100 * s.match_hit_rate, w->events_rate);
	const struct kvbm_shm_control *c = w->in.seg.ctl;
	printf("  mutex: %" PRIu64 " acquisitions, %" PRIu64 " recoveries, %" PRIu64
	       " reaps   events: %s%" PRIu64 "\n",
	       c->lock_count, c->recoveries, c->reaps, w->in.seg.events ? "" : "no ring ",
	       w->events_prev);
	printf("  %-4s %-8s %-26s %s\n", "proc", "pid", "liveness", "holds");
	for (uint32_t i = 0; i < h->config.max_procs; i++) {
		struct kvbm_shm_proc e;
		enum kvbm_liveness l;
		uint32_t st = kvbm_inspect_proc(&w->in, i, &e, &l);
		if (st == KVBM_PROC_FREE)
			continue;
		printf("  %-4u %-8u %-26s %u\n", i, e.pid,
		       st == KVBM_PROC_ACTIVE ? kvbm_liveness_name(l) : kvbm_proc_state_name(st),
		       k.holds[i]);
	}
	printf("\n");
}

static void show(int once, unsigned interval_ms)
{
	char t[64];
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (!once)
		printf("\033[H\033[2J"); /* home, clear */
	printf("kvbm-top  %s  %s  every %u ms%s\n\n",
	       kvbm_fmt_time((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec, t,
			     sizeof(t)),
	       kvbm_shm_dir(), interval_ms, once ? "" : "  (q quits)");
	if (npools == 0)
		printf("no pools in %s\n", kvbm_shm_dir());
	for (int i = 0; i < npools; i++)
		show_pool(&pools[i]);
	fflush(stdout);
}

/* Waits up to @ms for q (or a signal): 1 to quit. */
static int wait_key(unsigned ms)
{
	struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ull;

	while (!stop) {
		uint64_t now = now_ns();
		if (now >= end)
			return 0;
		int r = poll(tty_raw ? &p : NULL, tty_raw ? 1 : 0, (int)((end - now) / 1000000ull) + 1);
		if (r > 0) {
			char c;
			if (read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q'))
				return 1;
		}
	}
	return 1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"once", no_argument, NULL, 'o'},
		{"interval", required_argument, NULL, 'i'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	unsigned interval = 1000;
	int once = 0, c, rc = 0;
	char *end;

	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			once = 1;
			break;
		case 'i': {
			unsigned long v = strtoul(optarg, &end, 10);
			if (*end || !*optarg || optarg[0] == '-' || v < 100 || v > 60000) {
				fprintf(stderr, "kvbm-top: --interval '%s': not a number of "
						"milliseconds 100..60000\n", optarg);
				return 2;
			}
			interval = (unsigned)v;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			return tool_version("kvbm-top");
		default:
			fprintf(stderr, "kvbm-top --help lists the options\n");
			return 2;
		}
	}
	for (int i = optind; i < argc; i++) {
		watch(argv[i]);
		struct watched *w = find(argv[i]);
		if (w && w->open_rc < 0) {
			char why[PATH_MAX + 64];
			fprintf(stderr, "kvbm-top: %s: %s\n", argv[i],
				w->open_rc == -ENOENT && kvbm_shm_dir_missing(why, sizeof(why))
					? why
					: kvbm_strerror(w->open_rc));
			rc = 1;
		}
	}
	if (rc)
		return rc;
	int all = optind == argc;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (!once)
		tty_keys();
	for (;;) {
		if (all)
			scan_dir();
		else
			refresh(0);
		sample_all();
		if (once) {
			/* rates need two samples: one interval apart */
			if (wait_key(interval))
				break;
			sample_all();
			show(1, interval);
			break;
		}
		show(0, interval);
		if (wait_key(interval))
			break;
	}
	tty_restore();
	while (npools)
		unwatch(&pools[npools - 1]);
	return 0;
}
