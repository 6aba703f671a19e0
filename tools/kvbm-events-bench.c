/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-events-bench - how fast kvbmd publishes a pool's KV events to ZMQ,
 * and how long a registration takes to reach a subscriber. It creates a
 * pool, starts kvbmd (--kvbmd PATH) publishing it on a loopback port, and
 * subscribes itself:
 *   throughput: a thread registers and evicts blocks as fast as it can
 *     for --seconds; the figure is events received per second (the
 *     subscriber's first to last), with the seq gaps it saw (a gap means
 *     the ring lapped kvbmd or a queue was full: a resync followed);
 *   latency: one block registered every 1/--rate s; for each, the time
 *     from just before kvbm_register_blocks_tokens() to the subscriber
 *     holding its BlockStored (p50/p99/max), matched by the block's hash.
 *     A registration that finds the registry index full makes no
 *     BlockStored (the block is not a primary: nobody can match it, so a
 *     router must not hear of it): it is counted apart, not as lost.
 *
 * Not a test: the figures depend on the machine's load (BENCHMARKS.md).
 * `make events-bench` runs it. Exit: 0 measured, 1 a failure (a
 * BlockStored made and not received included), 2 usage.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "kvbm.h"

#define BS 16
#define BATCH 256
#define MAX_LAT 200000

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void nap_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

	nanosleep(&ts, NULL);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct run {
	struct kvbm_pool *p;
	double seconds;
	unsigned rate;
	uint64_t next_id;   /* unique block hashes */
	int stop;           /* atomic */
	uint64_t reg_ns[MAX_LAT]; /* latency phase: when block k was registered */
	uint64_t reg_hash[MAX_LAT]; /* and its router hash */
	uint64_t nreg;      /* atomic: blocks stamped in the latency phase */
	int fail;
};

/* Registers @n root blocks with fresh hashes and releases them (the pool
 * evicts the oldest once full: REMOVED events). */
static int register_n(struct run *R, uint32_t n, uint64_t *stamp)
{
	static uint32_t tokens[BATCH * BS];
	struct kvbm_block b[BATCH];

	if (kvbm_allocate_blocks(R->p, n, b, NULL, NULL) < 0)
		return -1;
	struct kvbm_plh h = {0, 0};

	for (uint32_t i = 0; i < n; i++) {
		uint64_t id = ++R->next_id;
		for (uint32_t t = 0; t < BS; t++)
			tokens[i * BS + t] = (uint32_t)(id * BS + t);
		if (kvbm_plh_make(kvbm_block_hash(tokens + i * BS, BS, 1337), NULL, 0, &h) < 0 ||
		    kvbm_stage_block(R->p, &b[i], h, BS) < 0)
			return -1;
	}
	if (stamp) {
		R->reg_hash[R->nreg] = kvbm_plh_router_hash(h);
		*stamp = now_ns();
		/* counted before the registration, not after it returns: the
		 * subscriber may hold the event first, and a sample whose
		 * registration it did not know of yet was dropped (99,998 of
		 * 100,000 received). Release: pairs with its acquire load */
		__atomic_store_n(&R->nreg, R->nreg + 1, __ATOMIC_RELEASE);
	}
	if (kvbm_register_blocks_tokens(R->p, b, n, tokens) < 0)
		return -1;
	return kvbm_release_blocks(R->p, b, n) < 0 ? -1 : 0;
}

static void *flood(void *arg)
{
	struct run *R = arg;
	uint64_t end = now_ns() + (uint64_t)(R->seconds * 1e9);

	while (now_ns() < end)
		if (register_n(R, BATCH, NULL) < 0) {
			R->fail = 1;
			break;
		}
	__atomic_store_n(&R->stop, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void *paced(void *arg)
{
	struct run *R = arg;
	uint64_t period = 1000000000ull / R->rate, t = now_ns();
	uint64_t n = (uint64_t)(R->seconds * R->rate);

	for (uint64_t k = 0; k < n && k < MAX_LAT; k++) {
		t += period;
		if (register_n(R, 1, &R->reg_ns[k]) < 0) {
			R->fail = 1;
			break;
		}
		uint64_t now = now_ns();
		if (t > now)
			nap_us((long)((t - now) / 1000));
	}
	__atomic_store_n(&R->stop, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* A msgpack unsigned integer at @p (before @end) into *@v: 1, or 0. */
static int mp_read_uint(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
	static const int len[4] = {1, 2, 4, 8}; /* 0xcc..0xcf */

	if (p >= end)
		return 0;
	if (*p < 0x80) {
		*v = *p;
		return 1;
	}
	if (*p < 0xcc || *p > 0xcf || end - p <= len[*p - 0xcc])
		return 0;
	*v = 0;
	for (int i = 1; i <= len[*p - 0xcc]; i++)
		*v = *v << 8 | p[i];
	return 1;
}

#define MAX_STORED 1024 /* per message: event_batch_max is 512 by default */

/* The number of events in a KVEventBatch [ts, [events...], rank], and of
 * BlockStored among them (the type strings: every event map has one),
 * with their first block hash into @hashes (room for MAX_STORED). */
static uint32_t batch_events(const uint8_t *p, size_t len, uint32_t *stored, uint64_t *hashes)
{
	static const char tag[] = "\xab" "BlockStored";
	static const char key[] = "\xac" "block_hashes";
	uint32_t n = 0;

	*stored = 0;
	if (len < 11 || p[0] != 0x93 || p[1] != 0xcb)
		return 0;
	p += 10;
	if ((p[0] & 0xf0) == 0x90)
		n = p[0] & 0x0f;
	else if (p[0] == 0xdc)
		n = (uint32_t)p[1] << 8 | p[2];
	else if (p[0] == 0xdd)
		n = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
	for (const uint8_t *q = p, *end = p + len - 10;
	     (q = memmem(q, (size_t)(end - q), tag, sizeof(tag) - 1)); q++) {
		/* the map's block_hashes: [h] (a fixarray of one) */
		const uint8_t *k = memmem(q, (size_t)(end - q), key, sizeof(key) - 1);
		uint64_t h = 0;
		if (*stored < MAX_STORED && k && k + sizeof(key) < end && k[sizeof(key) - 1] == 0x91)
			mp_read_uint(k + sizeof(key), end, &h);
		if (*stored < MAX_STORED)
			hashes[*stored] = h;
		(*stored)++;
	}
	return n;
}

struct sub {
	void *s;
	uint64_t next_seq, gaps, events, stored, first_ns, last_ns;
	int seen;
	uint64_t hashes[MAX_STORED]; /* the last message's BlockStored hashes */
	uint32_t nhashes;
};

/* One message, waiting at most @ms. Returns 1, or 0 on nothing. */
static int recv_one(struct sub *S, int ms)
{
	zmq_pollitem_t it = {.socket = S->s, .events = ZMQ_POLLIN};
	zmq_msg_t m[3];
	int n = 0, more = 1;

	if (zmq_poll(&it, 1, ms) <= 0)
		return 0;
	for (int i = 0; i < 3; i++)
		zmq_msg_init(&m[i]);
	while (more) {
		zmq_msg_t x;
		zmq_msg_init(&x);
		if (zmq_msg_recv(&x, S->s, 0) < 0) {
			zmq_msg_close(&x);
			break;
		}
		more = zmq_msg_more(&x);
		if (n < 3)
			zmq_msg_move(&m[n], &x);
		zmq_msg_close(&x);
		n++;
	}
	if (n == 3 && zmq_msg_size(&m[1]) == 8) {
		const uint8_t *b = zmq_msg_data(&m[1]);
		uint64_t seq = 0;
		uint32_t st;
		for (int i = 0; i < 8; i++)
			seq = seq << 8 | b[i];
		/* the first message may be past 0: the start snapshot went out
		 * before we joined (ZMQ's slow joiner), not a gap */
		if (S->seen && seq != S->next_seq)
			S->gaps++;
		S->seen = 1;
		S->next_seq = seq + 1;
		S->events += batch_events(zmq_msg_data(&m[2]), zmq_msg_size(&m[2]), &st, S->hashes);
		S->stored += st;
		S->nhashes = st < MAX_STORED ? st : MAX_STORED;
		S->last_ns = now_ns();
		if (!S->first_ns)
			S->first_ns = S->last_ns;
	}
	for (int i = 0; i < 3; i++)
		zmq_msg_close(&m[i]);
	return 1;
}

static pid_t start_kvbmd(const char *bin, const char *name, const char *log, unsigned window,
			 char *ep, size_t eplen)
{
	char pool[256], win[64];
	pid_t pid;

	snprintf(pool, sizeof(pool), "%s,create=no", name);
	snprintf(win, sizeof(win), "event_window_ms=%u", window);
	pid = fork();
	if (pid == 0) {
		if (!freopen(log, "w", stderr) || !freopen("/dev/null", "w", stdout))
			_exit(127);
		execl(bin, "kvbmd", "--pool", pool, "--listen", "127.0.0.1:0", "--set",
		      "zmq_endpoint=tcp://127.0.0.1:*", "--set", win, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		char line[512];
		FILE *f = fopen(log, "r");
		const char *on = NULL;
		while (f && fgets(line, sizeof(line), f))
			if (strstr(line, "zmq: publishing") && (on = strstr(line, " on ")))
				break;
		if (f)
			fclose(f);
		if (on) {
			snprintf(ep, eplen, "%.*s", (int)strcspn(on + 4, " \n"), on + 4);
			return pid;
		}
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		nap_us(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

/* Takes everything until @ms of quiet. */
static void settle(struct sub *S, int ms)
{
	while (recv_one(S, ms))
		;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"kvbmd", required_argument, NULL, 'k'}, {"seconds", required_argument, NULL, 's'},
		{"rate", required_argument, NULL, 'r'},  {"window-ms", required_argument, NULL, 'w'},
		{"help", no_argument, NULL, 'h'},        {"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	static struct run R;
	const char *bin = NULL;
	unsigned window = 10;
	char name[64], log[128], ep[256];
	int c, rc = 1;

	R.seconds = 3;
	R.rate = 1000;
	while ((c = getopt_long(argc, argv, "k:s:r:w:h", opts, NULL)) != -1) {
		switch (c) {
		case 'V': printf("kvbm-events-bench kvbm-shm %s\n", kvbm_version()); return 0;
		case 'k': bin = optarg; break;
		case 's': R.seconds = atof(optarg); break;
		case 'r': R.rate = (unsigned)atoi(optarg); break;
		case 'w': window = (unsigned)atoi(optarg); break;
		default:
			fprintf(c == 'h' ? stdout : stderr,
				"usage: kvbm-events-bench --kvbmd PATH [--seconds S] [--rate N] "
				"[--window-ms W]\n");
			return c == 'h' ? 0 : 2;
		}
	}
	if (!bin || R.rate == 0 || R.seconds <= 0)
		return fprintf(stderr, "kvbm-events-bench: --kvbmd PATH is required\n"), 2;

	struct kvbm_config cfg;
	kvbm_config_init(&cfg);
	cfg.block_count = 16384;
	cfg.block_size = BS;
	cfg.event_ring = 1u << 22; /* the flood must not lap kvbmd: it measures kvbmd */
	snprintf(name, sizeof(name), "kvbm-events-bench-%d", getpid());
	snprintf(log, sizeof(log), "/tmp/%s.log", name);
	int r = kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &R.p);
	if (r < 0)
		return fprintf(stderr, "kvbm-events-bench: %s: %s\n", name, kvbm_strerror(r)), 1;
	pid_t kd = start_kvbmd(bin, name, log, window, ep, sizeof(ep));
	if (kd < 0) {
		fprintf(stderr, "kvbm-events-bench: kvbmd did not start (%s)\n", log);
		goto out;
	}
	void *ctx = zmq_ctx_new();
	struct sub S = {.s = zmq_socket(ctx, ZMQ_SUB)};
	int hwm = 0; /* unbounded: the subscriber must not be what drops */
	zmq_setsockopt(S.s, ZMQ_RCVHWM, &hwm, sizeof(hwm));
	zmq_setsockopt(S.s, ZMQ_SUBSCRIBE, "", 0);
	zmq_connect(S.s, ep);
	settle(&S, 500); /* joined; the start snapshot, if we caught it */

	/* throughput */
	pthread_t th;
	uint64_t head0, head1;
	kvbm_events_head(R.p, &head0);
	struct kvbm_metrics f0, f1;
	kvbm_metrics_snapshot(R.p, &f0);
	S.events = S.stored = S.gaps = S.first_ns = S.last_ns = 0;
	uint64_t t0 = now_ns();
	pthread_create(&th, NULL, flood, &R);
	while (!__atomic_load_n(&R.stop, __ATOMIC_ACQUIRE))
		recv_one(&S, 10);
	pthread_join(th, NULL);
	kvbm_events_head(R.p, &head1);
	kvbm_metrics_snapshot(R.p, &f1);
	settle(&S, 500);
	double secs = (double)(S.last_ns - t0) / 1e9;
	printf("throughput: %llu events made in %.2f s (%.0f/s); %llu received by the subscriber "
	       "in %.2f s: %.0f events/s; %llu seq gaps; %llu of %llu registrations found the "
	       "index full\n",
	       (unsigned long long)(head1 - head0), R.seconds, (double)(head1 - head0) / R.seconds,
	       (unsigned long long)S.events, secs, (double)S.events / secs,
	       (unsigned long long)S.gaps, (unsigned long long)(f1.index_full - f0.index_full),
	       (unsigned long long)(f1.registrations - f0.registrations));

	/* latency */
	R.stop = 0;
	S.stored = S.gaps = 0;
	struct kvbm_metrics m0, m1;
	kvbm_metrics_snapshot(R.p, &m0);
	uint64_t *lat = calloc(MAX_LAT, sizeof(*lat)), nlat = 0;
	pthread_create(&th, NULL, paced, &R);
	uint64_t next_k = 0; /* the first registration not matched yet */
	for (;;) {
		int stopped = __atomic_load_n(&R.stop, __ATOMIC_ACQUIRE);
		S.nhashes = 0;
		int got = recv_one(&S, stopped ? 500 : 10);
		uint64_t t = now_ns(), n = __atomic_load_n(&R.nreg, __ATOMIC_ACQUIRE);
		/* events come in registration order; a registration skipped
		 * here made none (the index was full) */
		for (uint32_t i = 0; got && i < S.nhashes; i++) {
			uint64_t k = next_k;
			while (k < n && R.reg_hash[k] != S.hashes[i])
				k++;
			if (k < n) {
				lat[nlat++] = t - R.reg_ns[k];
				next_k = k + 1;
			}
		}
		if (stopped && !got)
			break;
	}
	pthread_join(th, NULL);
	kvbm_metrics_snapshot(R.p, &m1);
	if (nlat) {
		qsort(lat, nlat, sizeof(*lat), cmp_u64);
		printf("latency at %u registrations/s, window %u ms: %llu of %llu BlockStored made "
		       "received, p50 %.2f ms p99 %.2f ms max %.2f ms; %llu seq gaps; %llu "
		       "registrations found the index full and made none\n",
		       R.rate, window, (unsigned long long)nlat,
		       (unsigned long long)(R.nreg - (m1.index_full - m0.index_full)),
		       (double)lat[nlat / 2] / 1e6, (double)lat[nlat * 99 / 100] / 1e6,
		       (double)lat[nlat - 1] / 1e6, (unsigned long long)S.gaps,
		       (unsigned long long)(m1.index_full - m0.index_full));
	}
	free(lat);
	uint64_t made = R.nreg - (m1.index_full - m0.index_full);
	if (nlat != made)
		fprintf(stderr, "kvbm-events-bench: %llu BlockStored made, %llu received: lost\n",
			(unsigned long long)made, (unsigned long long)nlat);
	rc = R.fail || !nlat || nlat != made;
	zmq_close(S.s);
	zmq_ctx_term(ctx);
	kill(kd, SIGTERM);
	waitpid(kd, NULL, 0);
	/* how often the flood lapped kvbmd's cursor (each a snapshot resync) */
	FILE *f = fopen(log, "r");
	char line[512];
	unsigned lapped = 0;
	while (f && fgets(line, sizeof(line), f))
		lapped += strstr(line, "fell behind the event ring") != NULL;
	if (f)
		fclose(f);
	printf("kvbmd resynced from a snapshot %u times (the flood lapped its cursor)\n", lapped);
out:
	kvbm_pool_close(R.p);
	kvbm_pool_destroy(name, 0);
	unlink(log);
	/* kvbmd's publishing state beside the pool (docs/KVBMD.md): the
	 * pool is gone, so is its stream */
	char state[512];
	const char *dir = getenv("KVBM_SHM_DIR");
	snprintf(state, sizeof(state), "%s/kvbmd.%s.zmq-state", dir && *dir ? dir : "/dev/shm",
		 name);
	unlink(state);
	return rc;
}
