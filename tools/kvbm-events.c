/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-events - reads a pool's event ring and prints the events for
 * people (default), one JSON object per line (--json), or encoded in a
 * wire format that existing consumers read (--format kvbm|vllm|router:
 * each message framed as a 4-byte big-endian length and the msgpack
 * bytes). A reader that falls behind resyncs from a snapshot and says so.
 *
 *   kvbm-events [--from SEQ | --from-start] [--follow] [--count N]
 *               [--json | --format F] [--worker-id N] [--dp-rank N] POOL
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvbm.h"
#include "kvevents.h"
#include "msgpack.h"

enum fmt { F_TEXT, F_JSON, F_KVBM, F_VLLM, F_ROUTER };

struct out {
	enum fmt fmt;
	struct kve_source src;
	struct mp m;
	uint64_t router_id; /* the router's per-worker event counter */
	long printed, limit;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static const char *kind_name(uint32_t k)
{
	switch (k) {
	case KVBM_EVENT_STORED:
		return "STORED";
	case KVBM_EVENT_REMOVED:
		return "REMOVED";
	case KVBM_EVENT_RESYNC:
		return "RESYNC";
	case KVBM_EVENT_CLEARED:
		return "CLEARED";
	}
	return "?";
}

static void frame(struct out *o)
{
	uint8_t len[4] = {(uint8_t)(o->m.len >> 24), (uint8_t)(o->m.len >> 16),
			  (uint8_t)(o->m.len >> 8), (uint8_t)o->m.len};

	if (!mp_ok(&o->m)) {
		fprintf(stderr, "kvbm-events: out of memory encoding a message\n");
		exit(1);
	}
	if (fwrite(len, 1, 4, stdout) != 4 || fwrite(o->m.buf, 1, o->m.len, stdout) != o->m.len) {
		fprintf(stderr, "kvbm-events: write: %s\n", strerror(errno));
		exit(1);
	}
	mp_reset(&o->m);
}

static void print_one(struct out *o, const struct kvbm_event *e)
{
	struct kvbm_plh h = e->hash;

	if (o->fmt == F_TEXT) {
		printf("%" PRIu64 " %-8s", e->seq, kind_name(e->kind));
		if (e->kind == KVBM_EVENT_STORED || e->kind == KVBM_EVENT_REMOVED)
			printf(" pos %u plh %016" PRIx64 "%016" PRIx64 " router %" PRIu64, kvbm_plh_position(h),
			       h.hi, h.lo, kvbm_plh_router_hash(h));
		if (e->ntokens)
			printf(" tokens %u", e->ntokens);
		printf("\n");
		return;
	}
	printf("{\"seq\":%" PRIu64 ",\"kind\":\"%s\"", e->seq, kind_name(e->kind));
	if (e->kind == KVBM_EVENT_STORED || e->kind == KVBM_EVENT_REMOVED)
		printf(",\"plh\":\"%016" PRIx64 "%016" PRIx64 "\",\"position\":%u,\"router_hash\":%" PRIu64
		       ",\"parent_fragment\":%" PRIu64,
		       h.hi, h.lo, kvbm_plh_position(h), kvbm_plh_router_hash(h),
		       kvbm_plh_parent_fragment(h));
	printf(",\"tokens\":[");
	for (uint32_t i = 0; i < e->ntokens; i++)
		printf("%s%u", i ? "," : "", e->tokens[i]);
	printf("]}\n");
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Prints @n events, batched by kind where the format batches. */
static void emit(struct out *o, const struct kvbm_event *ev, size_t n)
{
	for (size_t i = 0; i < n && (o->limit < 0 || o->printed < o->limit);) {
		size_t j = i + 1;
		if (ev[i].kind == KVBM_EVENT_RESYNC) {
			i++; /* the caller resyncs; nothing on the wire */
			continue;
		}
		if (o->fmt == F_KVBM || o->fmt == F_VLLM)
			while (j < n && ev[j].kind == ev[i].kind && ev[j].kind != KVBM_EVENT_CLEARED)
				j++;
		if (o->limit >= 0 && (long)(j - i) > o->limit - o->printed)
			j = i + (size_t)(o->limit - o->printed);
		switch (o->fmt) {
		case F_TEXT:
		case F_JSON:
			print_one(o, &ev[i]);
			j = i + 1;
			break;
		case F_KVBM:
			/* kvbm-logical's stream has no "cleared": a snapshot is
			 * its Creates alone */
			if (ev[i].kind != KVBM_EVENT_CLEARED) {
				kve_kvbm_batch(&o->m, &o->src, &ev[i], j - i);
				frame(o);
			}
			break;
		case F_VLLM:
			kve_vllm_batch(&o->m, &o->src, now_s(), &ev[i], j - i);
			frame(o);
			break;
		case F_ROUTER:
			kve_router_event(&o->m, &o->src, o->router_id++, &ev[i]);
			frame(o);
			j = i + 1;
			break;
		}
		o->printed += (long)(j - i);
		i = j;
	}
	fflush(stdout);
}

static void on_snapshot(const struct kvbm_event *ev, void *arg)
{
	emit(arg, ev, 1);
}

static int usage(FILE *f, int code)
{
	fprintf(f, "usage: kvbm-events [--from SEQ | --from-start] [--follow] [--count N]\n"
		   "                   [--json | --format text|json|kvbm|vllm|router]\n"
		   "                   [--worker-id N] [--dp-rank N] POOL\n"
		   "Reads POOL's event ring from now on (or SEQ, or the oldest kept) and prints\n"
		   "each event; with --format kvbm|vllm|router, each message is a 4-byte\n"
		   "big-endian length and msgpack bytes. A reader that fell behind resyncs\n"
		   "from a snapshot (CLEARED, then every registered block).\n");
	return code;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"from", required_argument, NULL, 'f'},  {"from-start", no_argument, NULL, 's'},
		{"follow", no_argument, NULL, 'F'},      {"count", required_argument, NULL, 'n'},
		{"json", no_argument, NULL, 'j'},        {"format", required_argument, NULL, 'o'},
		{"worker-id", required_argument, NULL, 'w'}, {"dp-rank", required_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},        {"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	struct out o = {.fmt = F_TEXT, .limit = -1};
	int follow = 0, from_start = 0, have_from = 0, c;
	uint64_t cursor = 0;

	mp_init(&o.m);
	while ((c = getopt_long(argc, argv, "f:sFn:jo:w:r:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			cursor = strtoull(optarg, NULL, 10);
			have_from = 1;
			break;
		case 's':
			from_start = 1;
			break;
		case 'F':
			follow = 1;
			break;
		case 'n':
			o.limit = strtol(optarg, NULL, 10);
			break;
		case 'j':
			o.fmt = F_JSON;
			break;
		case 'o':
			if (!strcmp(optarg, "text"))
				o.fmt = F_TEXT;
			else if (!strcmp(optarg, "json"))
				o.fmt = F_JSON;
			else if (!strcmp(optarg, "kvbm"))
				o.fmt = F_KVBM;
			else if (!strcmp(optarg, "vllm"))
				o.fmt = F_VLLM;
			else if (!strcmp(optarg, "router"))
				o.fmt = F_ROUTER;
			else {
				fprintf(stderr, "kvbm-events: unknown format '%s' "
						"(text, json, kvbm, vllm, router)\n", optarg);
				return 2;
			}
			break;
		case 'w':
			o.src.worker_id = strtoull(optarg, NULL, 10);
			break;
		case 'r':
			o.src.dp_rank = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 'h':
			return usage(stdout, 0);
		case 'V':
			printf("kvbm-events %s\n", kvbm_version());
			return 0;
		default:
			return usage(stderr, 2);
		}
	}
	if (optind + 1 != argc)
		return usage(stderr, 2);

	struct kvbm_pool *p;
	struct kvbm_pool_info pi;
	int r = kvbm_pool_open(argv[optind], NULL, 0, &p);
	if (r < 0) {
		fprintf(stderr, "kvbm-events: %s: %s\n", argv[optind], kvbm_strerror(r));
		return 1;
	}
	kvbm_pool_info(p, &pi);
	o.src.instance_id = pi.instance_id;
	o.src.block_size = pi.config.block_size;
	o.src.tier = pi.config.tier;
	if (!have_from && !from_start && (r = kvbm_events_head(p, &cursor)) < 0) {
		fprintf(stderr, "kvbm-events: %s: %s\n", argv[optind], kvbm_strerror(r));
		kvbm_pool_close(p);
		return 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	size_t cap = 256, tcap = cap * pi.config.block_size;
	struct kvbm_event *ev = calloc(cap, sizeof(*ev));
	uint32_t *tok = calloc(tcap, sizeof(*tok));
	if (!ev || !tok) {
		fprintf(stderr, "kvbm-events: out of memory\n");
		return 1;
	}
	int code = 0;
	while (!stop && (o.limit < 0 || o.printed < o.limit)) {
		long n = kvbm_events_read(p, &cursor, ev, cap, tok, tcap);
		int resync = n == KVBM_EGAP;
		if (n < 0 && !resync) {
			fprintf(stderr, "kvbm-events: read: %s\n", kvbm_strerror((int)n));
			code = 1;
			break;
		}
		if (n > 0) {
			emit(&o, ev, (size_t)n);
			resync = ev[n - 1].kind == KVBM_EVENT_RESYNC;
		}
		if (resync) {
			if (o.fmt == F_TEXT)
				fprintf(stderr, "kvbm-events: %s: resyncing from a snapshot\n",
					n == KVBM_EGAP ? "fell behind the ring" : "the pool recovered");
			long k = kvbm_events_snapshot(p, &cursor, on_snapshot, &o);
			if (k < 0) {
				fprintf(stderr, "kvbm-events: snapshot: %s\n", kvbm_strerror((int)k));
				code = 1;
				break;
			}
			continue;
		}
		if (n == 0) {
			if (!follow)
				break;
			usleep(1000); /* polling a ring in memory: no wakeup to wait for */
		}
	}
	free(ev);
	free(tok);
	mp_free(&o.m);
	kvbm_pool_close(p);
	return code;
}
