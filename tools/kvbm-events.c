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
#include <nats/nats.h>
#include <zmq.h>

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
			kve_router_event(&o->m, &o->src, o->router_id++, &ev[i], 1);
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

/* ---- --zmq: a subscriber of vLLM's ZMQ KV events --------------------------- */

/* A msgpack reader over one message: just what printing a KVEventBatch
 * takes. A malformed message sets bad and reads as nil from then on. */
struct rd {
	const uint8_t *p, *end;
	int bad;
};

enum { V_NIL, V_BOOL, V_UINT, V_INT, V_FLOAT, V_STR, V_BIN, V_ARRAY, V_MAP };

struct val {
	int t;
	uint64_t u; /* V_UINT, V_BOOL; the count of V_ARRAY/V_MAP; the length of V_STR/V_BIN */
	int64_t i;
	double f;
	const char *s;
};

static uint64_t rd_be(struct rd *r, int n)
{
	uint64_t v = 0;

	if (r->bad || r->end - r->p < n) {
		r->bad = 1;
		return 0;
	}
	for (int k = 0; k < n; k++)
		v = v << 8 | *r->p++;
	return v;
}

static struct val rd_val(struct rd *r)
{
	struct val v = {.t = V_NIL};
	uint8_t b = (uint8_t)rd_be(r, 1);

	if (r->bad)
		return v;
	if (b <= 0x7f || b >= 0xe0) {
		v.t = b <= 0x7f ? V_UINT : V_INT;
		v.u = b;
		v.i = (int8_t)b;
	} else if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
		v.t = (b & 0xf0) == 0x80 ? V_MAP : V_ARRAY;
		v.u = b & 0x0f;
	} else if ((b & 0xe0) == 0xa0) {
		v.t = V_STR;
		v.u = b & 0x1f;
	} else {
		switch (b) {
		case 0xc0: break;
		case 0xc2: case 0xc3: v.t = V_BOOL; v.u = b & 1; break;
		case 0xc4: case 0xc5: case 0xc6: v.t = V_BIN; v.u = rd_be(r, 1 << (b - 0xc4)); break;
		case 0xca: { uint32_t x = (uint32_t)rd_be(r, 4); float f; memcpy(&f, &x, 4);
			v.t = V_FLOAT; v.f = f; break; }
		case 0xcb: { uint64_t x = rd_be(r, 8); v.t = V_FLOAT; memcpy(&v.f, &x, 8); break; }
		case 0xcc: case 0xcd: case 0xce: case 0xcf:
			v.t = V_UINT; v.u = rd_be(r, 1 << (b - 0xcc)); break;
		case 0xd0: v.t = V_INT; v.i = (int8_t)rd_be(r, 1); break;
		case 0xd1: v.t = V_INT; v.i = (int16_t)rd_be(r, 2); break;
		case 0xd2: v.t = V_INT; v.i = (int32_t)rd_be(r, 4); break;
		case 0xd3: v.t = V_INT; v.i = (int64_t)rd_be(r, 8); break;
		case 0xd9: case 0xda: case 0xdb: v.t = V_STR; v.u = rd_be(r, 1 << (b - 0xd9)); break;
		case 0xdc: case 0xdd: v.t = V_ARRAY; v.u = rd_be(r, 2 << (b - 0xdc)); break;
		case 0xde: case 0xdf: v.t = V_MAP; v.u = rd_be(r, 2 << (b - 0xde)); break;
		default: r->bad = 1; /* ext types: not in these formats */
		}
	}
	if (v.t == V_INT && v.i >= 0) { /* one integer kind for hashes */
		v.t = V_UINT;
		v.u = (uint64_t)v.i;
	}
	if (v.t == V_INT) /* signed producers' hashes are u64 to Dynamo */
		v.u = (uint64_t)v.i;
	if (v.t == V_STR || v.t == V_BIN) {
		if ((uint64_t)(r->end - r->p) < v.u) {
			r->bad = 1;
			v.t = V_NIL;
			return v;
		}
		v.s = (const char *)r->p;
		r->p += v.u;
	}
	return v;
}

static void rd_skip(struct rd *r)
{
	struct val v = rd_val(r);
	uint64_t n = v.t == V_ARRAY ? v.u : v.t == V_MAP ? 2 * v.u : 0;

	for (uint64_t i = 0; i < n && !r->bad; i++)
		rd_skip(r);
}

static int str_is(const struct val *v, const char *s)
{
	return v->t == V_STR && v->u == strlen(s) && !memcmp(v->s, s, v->u);
}

/* What is printed of one event: either form (map or positional). */
struct zev {
	char type[32];
	uint64_t hashes[8];
	size_t nhashes; /* all of them; the first 8 kept */
	int has_parent;
	uint64_t parent;
	uint64_t ntokens;
	char medium[16];
};

static void rd_hashes(struct rd *r, struct zev *e)
{
	struct val v = rd_val(r);

	if (v.t != V_ARRAY) {
		r->bad |= v.t != V_NIL;
		return;
	}
	for (uint64_t i = 0; i < v.u && !r->bad; i++) {
		struct val h = rd_val(r);
		if (e->nhashes < 8)
			e->hashes[e->nhashes] = h.u;
		e->nhashes++;
	}
}

static void rd_field(struct rd *r, struct zev *e, const char *key)
{
	if (!strcmp(key, "block_hashes")) {
		rd_hashes(r, e);
	} else if (!strcmp(key, "parent_block_hash")) {
		struct val v = rd_val(r);
		e->has_parent = v.t == V_UINT || v.t == V_INT;
		e->parent = v.u;
	} else if (!strcmp(key, "token_ids")) {
		struct val v = rd_val(r);
		e->ntokens = v.t == V_ARRAY ? v.u : 0;
		for (uint64_t i = 0; i < e->ntokens && !r->bad; i++)
			rd_skip(r);
	} else if (!strcmp(key, "medium")) {
		struct val v = rd_val(r);
		if (v.t == V_STR)
			snprintf(e->medium, sizeof(e->medium), "%.*s", (int)v.u, v.s);
	} else {
		rd_skip(r);
	}
}

static int rd_event(struct rd *r, struct zev *e)
{
	static const char *const stored_pos[] = {"type", "block_hashes", "parent_block_hash",
						 "token_ids"};
	static const char *const removed_pos[] = {"type", "block_hashes", "medium"};
	struct val v = rd_val(r);

	memset(e, 0, sizeof(*e));
	if (v.t == V_MAP) { /* vLLM's new encoding: by field name */
		for (uint64_t i = 0; i < v.u && !r->bad; i++) {
			struct val k = rd_val(r);
			char key[32];
			if (k.t != V_STR)
				return -1;
			snprintf(key, sizeof(key), "%.*s", (int)k.u, k.s);
			if (!strcmp(key, "type")) {
				struct val t = rd_val(r);
				if (t.t == V_STR)
					snprintf(e->type, sizeof(e->type), "%.*s", (int)t.u, t.s);
			} else {
				rd_field(r, e, key);
			}
		}
	} else if (v.t == V_ARRAY && v.u > 0) { /* the old array_like encoding */
		struct val t = rd_val(r);
		if (t.t != V_STR)
			return -1;
		snprintf(e->type, sizeof(e->type), "%.*s", (int)t.u, t.s);
		int st = !strcmp(e->type, "BlockStored");
		for (uint64_t i = 1; i < v.u && !r->bad; i++) {
			if (st && i < 4)
				rd_field(r, e, stored_pos[i]);
			else if (st && i == 6)
				rd_field(r, e, "medium");
			else if (!st && i < 3)
				rd_field(r, e, removed_pos[i]);
			else
				rd_skip(r);
		}
	} else {
		return -1;
	}
	return r->bad || !e->type[0] ? -1 : 0;
}

struct zsub {
	void *sub, *dealer;
	const char *topic;
	int json;
	long printed, limit;
	int have_last;
	uint64_t last;
	int64_t replayed; /* the highest seq a replay gave, until live passes it */
	uint64_t gaps, replays, restarts;
};

static void zprint(struct zsub *z, uint64_t seq, const struct zev *e, uint64_t rank)
{
	size_t shown = e->nhashes < 8 ? e->nhashes : 8;

	if (z->json) {
		printf("{\"seq\":%" PRIu64 ",\"type\":\"%s\",\"block_hashes\":[", seq, e->type);
		for (size_t i = 0; i < shown; i++)
			printf("%s%" PRIu64, i ? "," : "", e->hashes[i]);
		printf("],\"parent_block_hash\":");
		if (e->has_parent)
			printf("%" PRIu64, e->parent);
		else
			printf("null");
		printf(",\"ntokens\":%" PRIu64 ",\"medium\":\"%s\",\"dp_rank\":%" PRIu64 "}\n",
		       e->ntokens, e->medium, rank);
	} else {
		printf("%" PRIu64 " %s", seq, e->type);
		for (size_t i = 0; i < shown; i++)
			printf(" %" PRIu64, e->hashes[i]);
		if (e->nhashes > shown)
			printf(" (+%zu)", e->nhashes - shown);
		if (e->has_parent)
			printf(" parent %" PRIu64, e->parent);
		if (e->ntokens)
			printf(" tokens %" PRIu64, e->ntokens);
		if (e->medium[0])
			printf(" medium %s", e->medium);
		printf("\n");
	}
	z->printed++;
}

/* Prints the events of one KVEventBatch (array or map envelope). */
static int zbatch(struct zsub *z, uint64_t seq, const void *p, size_t len)
{
	struct rd r = {p, (const uint8_t *)p + len, 0};
	struct val env = rd_val(&r), n = {.t = V_NIL};
	uint64_t rank = 0;
	const uint8_t *events = NULL;

	if (env.t == V_ARRAY && env.u >= 2) {
		rd_skip(&r); /* ts */
		events = r.p;
		n = rd_val(&r);
		for (uint64_t i = 0; i < n.u && !r.bad; i++)
			rd_skip(&r);
		if (env.u > 2) {
			struct val rk = rd_val(&r);
			rank = rk.t == V_UINT ? rk.u : 0;
		}
	} else if (env.t == V_MAP) {
		for (uint64_t i = 0; i < env.u && !r.bad; i++) {
			struct val k = rd_val(&r);
			if (str_is(&k, "events")) {
				events = r.p;
				n = rd_val(&r);
				for (uint64_t j = 0; j < n.u && !r.bad; j++)
					rd_skip(&r);
			} else if (str_is(&k, "data_parallel_rank")) {
				struct val rk = rd_val(&r);
				rank = rk.t == V_UINT ? rk.u : 0;
			} else {
				rd_skip(&r);
			}
		}
	}
	if (r.bad || !events || n.t != V_ARRAY)
		return -1;
	r.p = events;
	rd_val(&r);
	for (uint64_t i = 0; i < n.u && (z->limit < 0 || z->printed < z->limit); i++) {
		struct zev e;
		if (rd_event(&r, &e) < 0)
			return -1;
		zprint(z, seq, &e, rank);
	}
	fflush(stdout);
	return 0;
}

static uint64_t get_be64(const uint8_t *b)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

/* Receives the frames of one message (at most @max; the rest dropped). */
static int zrecv(void *s, zmq_msg_t *m, int max)
{
	int n = 0, more = 1;

	while (more) {
		zmq_msg_t x;
		zmq_msg_init(&x);
		if (zmq_msg_recv(&x, s, 0) < 0) {
			zmq_msg_close(&x);
			return -1;
		}
		more = zmq_msg_more(&x);
		if (n < max)
			zmq_msg_move(&m[n], &x);
		zmq_msg_close(&x);
		n++;
	}
	return n;
}

static void zclose(zmq_msg_t *m, int n)
{
	for (int i = 0; i < n; i++)
		zmq_msg_close(&m[i]);
}

/* Asks the replay socket for every batch from @start; prints them. */
static int zreplay(struct zsub *z, uint64_t start)
{
	uint8_t req[8];

	for (int i = 0; i < 8; i++)
		req[i] = (uint8_t)(start >> (56 - 8 * i));
	z->replays++;
	if (zmq_send(z->dealer, "", 0, ZMQ_SNDMORE) < 0 || zmq_send(z->dealer, req, 8, 0) < 0)
		return -1;
	for (;;) {
		zmq_pollitem_t it = {.socket = z->dealer, .events = ZMQ_POLLIN};
		zmq_msg_t m[3];
		int n;

		if (zmq_poll(&it, 1, 5000) <= 0) {
			fprintf(stderr, "kvbm-events: no answer from the replay socket\n");
			return -1;
		}
		for (int i = 0; i < 3; i++)
			zmq_msg_init(&m[i]);
		/* the DEALER sees [empty, seq, payload] */
		n = zrecv(z->dealer, m, 3);
		if (n != 3 || zmq_msg_size(&m[1]) != 8) {
			zclose(m, 3);
			fprintf(stderr, "kvbm-events: a malformed replay message\n");
			return -1;
		}
		uint64_t seq = get_be64(zmq_msg_data(&m[1]));
		if (seq == UINT64_MAX) { /* END_SEQ */
			zclose(m, 3);
			return 0;
		}
		if (!z->have_last || seq > z->last) {
			if (z->limit < 0 || z->printed < z->limit)
				zbatch(z, seq, zmq_msg_data(&m[2]), zmq_msg_size(&m[2]));
			z->have_last = 1;
			z->last = seq;
		}
		if ((int64_t)seq > z->replayed)
			z->replayed = (int64_t)seq;
		zclose(m, 3);
	}
}

static int zmq_main(const char *pub, const char *rep, const char *topic, int from_start,
		    int json, long limit)
{
	struct zsub z = {.topic = topic, .json = json, .limit = limit, .replayed = -1};
	void *ctx = zmq_ctx_new();
	int code = 0, zero = 0;

	z.sub = zmq_socket(ctx, ZMQ_SUB);
	zmq_setsockopt(z.sub, ZMQ_SUBSCRIBE, topic, strlen(topic));
	zmq_setsockopt(z.sub, ZMQ_LINGER, &zero, sizeof(zero));
	if (zmq_connect(z.sub, pub) < 0) {
		fprintf(stderr, "kvbm-events: --zmq %s: %s\n", pub, zmq_strerror(zmq_errno()));
		return 2;
	}
	if (rep) {
		z.dealer = zmq_socket(ctx, ZMQ_DEALER);
		zmq_setsockopt(z.dealer, ZMQ_LINGER, &zero, sizeof(zero));
		if (zmq_connect(z.dealer, rep) < 0) {
			fprintf(stderr, "kvbm-events: --replay %s: %s\n", rep,
				zmq_strerror(zmq_errno()));
			return 2;
		}
	}
	if (from_start && z.dealer) {
		usleep(200000); /* subscribed: what follows the replay arrives live */
		if (zreplay(&z, 0) < 0)
			code = 1;
	}
	while (!stop && code == 0 && (z.limit < 0 || z.printed < z.limit)) {
		zmq_pollitem_t it = {.socket = z.sub, .events = ZMQ_POLLIN};
		zmq_msg_t m[3];

		if (zmq_poll(&it, 1, 100) <= 0)
			continue;
		for (int i = 0; i < 3; i++)
			zmq_msg_init(&m[i]);
		int n = zrecv(z.sub, m, 3);
		/* Dynamo's listener drops anything but [topic, seq(8), payload] */
		if (n != 3 || zmq_msg_size(&m[1]) != 8) {
			fprintf(stderr, "kvbm-events: dropped a message of %d frames\n", n);
			zclose(m, 3);
			continue;
		}
		uint64_t seq = get_be64(zmq_msg_data(&m[1])), next = z.have_last ? z.last + 1 : 0;
		if (z.have_last && seq == z.last) {
			/* a kvbmd killed between sending a batch and recording it
			 * sends it again, same seq: printed once */
			zclose(m, 3);
			continue;
		}
		if (seq < next && (int64_t)seq > z.replayed) {
			/* a publisher's seq never goes back: it restarted (a kvbmd
			 * whose state file went, a vLLM engine); start over */
			z.restarts++;
			fprintf(stderr, "kvbm-events: seq %" PRIu64 " after %" PRIu64
				": the publisher restarted\n", seq, z.last);
			z.have_last = 0;
			z.replayed = -1;
			next = 0;
		}
		if (seq > next) {
			z.gaps++;
			fprintf(stderr, "kvbm-events: seq %" PRIu64 " after %s%" PRIu64 ": %s\n", seq,
				z.have_last ? "" : "nothing, expected ", z.have_last ? z.last : 0,
				z.dealer ? "asking for a replay" : "a gap (no --replay)");
			if (z.dealer && zreplay(&z, next) < 0)
				code = 1;
		}
		if ((!z.have_last || seq > z.last) && (z.limit < 0 || z.printed < z.limit)) {
			if (zbatch(&z, seq, zmq_msg_data(&m[2]), zmq_msg_size(&m[2])) < 0)
				fprintf(stderr, "kvbm-events: seq %" PRIu64 ": not a KVEventBatch\n", seq);
			z.have_last = 1;
			z.last = seq;
			if ((int64_t)seq > z.replayed)
				z.replayed = -1; /* live again: the replay's overlap is over */
		}
		zclose(m, 3);
	}
	zmq_close(z.sub);
	if (z.dealer)
		zmq_close(z.dealer);
	zmq_ctx_term(ctx);
	return code;
}

/* ---- --nats: a subscriber of Dynamo's event plane ------------------------- */

/* Reads the map at @r: for each key, @fn(key, r, arg) reads its value (or
 * leaves it, then it is skipped). */
static void rd_map(struct rd *r, void (*fn)(const struct val *key, struct rd *r, void *arg),
		   void *arg)
{
	struct val m = rd_val(r);

	if (m.t != V_MAP) {
		r->bad = 1;
		return;
	}
	for (uint64_t i = 0; i < m.u && !r->bad; i++) {
		struct val k = rd_val(r);
		const uint8_t *before = r->p;
		fn(&k, r, arg);
		if (r->p == before)
			rd_skip(r);
	}
}

/* What is printed of one RouterEvent (spec 5.2). */
struct rev {
	uint64_t worker_id, event_id, dp_rank;
	char tier[16], type[16];
	struct zev blocks; /* hashes, and the parent of a store */
};

static void rev_hashes(struct rd *r, struct rev *e, int stored)
{
	struct val a = rd_val(r);

	for (uint64_t i = 0; a.t == V_ARRAY && i < a.u && !r->bad; i++) {
		if (stored) { /* {block_hash, tokens_hash, mm_extra_info} */
			struct val m = rd_val(r);
			for (uint64_t j = 0; m.t == V_MAP && j < m.u && !r->bad; j++) {
				struct val k = rd_val(r);
				if (str_is(&k, "block_hash")) {
					struct val h = rd_val(r);
					if (e->blocks.nhashes < 8)
						e->blocks.hashes[e->blocks.nhashes] = h.u;
					e->blocks.nhashes++;
				} else {
					rd_skip(r);
				}
			}
		} else {
			struct val h = rd_val(r);
			if (e->blocks.nhashes < 8)
				e->blocks.hashes[e->blocks.nhashes] = h.u;
			e->blocks.nhashes++;
		}
	}
}

static void on_store_key(const struct val *k, struct rd *r, void *arg)
{
	struct rev *e = arg;

	if (str_is(k, "parent_hash")) {
		struct val v = rd_val(r);
		e->blocks.has_parent = v.t == V_UINT;
		e->blocks.parent = v.u;
	} else if (str_is(k, "blocks") || str_is(k, "block_hashes")) {
		rev_hashes(r, e, str_is(k, "blocks"));
	}
}

static void on_data_key(const struct val *k, struct rd *r, void *arg)
{
	struct rev *e = arg;

	snprintf(e->type, sizeof(e->type), "%.*s", (int)(k->t == V_STR ? k->u : 0), k->s);
	rd_map(r, on_store_key, e);
}

static void on_event_key(const struct val *k, struct rd *r, void *arg)
{
	struct rev *e = arg;

	if (str_is(k, "event_id")) {
		e->event_id = rd_val(r).u;
	} else if (str_is(k, "dp_rank")) {
		e->dp_rank = rd_val(r).u;
	} else if (str_is(k, "data")) {
		/* "cleared", or {"stored": {...}} / {"removed": {...}} */
		const uint8_t *at = r->p;
		struct val v = rd_val(r);
		if (v.t == V_STR) {
			snprintf(e->type, sizeof(e->type), "%.*s", (int)v.u, v.s);
		} else {
			r->p = at;
			rd_map(r, on_data_key, e);
		}
	}
}

static void on_router_key(const struct val *k, struct rd *r, void *arg)
{
	struct rev *e = arg;

	if (str_is(k, "worker_id")) {
		e->worker_id = rd_val(r).u;
	} else if (str_is(k, "storage_tier")) {
		struct val v = rd_val(r);
		if (v.t == V_STR)
			snprintf(e->tier, sizeof(e->tier), "%.*s", (int)v.u, v.s);
	} else if (str_is(k, "event")) {
		rd_map(r, on_event_key, e);
	}
}

struct envelope {
	uint64_t publisher_id, sequence;
	const void *payload;
	size_t len;
};

static void on_envelope_key(const struct val *k, struct rd *r, void *arg)
{
	struct envelope *env = arg;

	if (str_is(k, "publisher_id")) {
		env->publisher_id = rd_val(r).u;
	} else if (str_is(k, "sequence")) {
		env->sequence = rd_val(r).u;
	} else if (str_is(k, "payload")) {
		struct val v = rd_val(r);
		if (v.t == V_BIN) {
			env->payload = v.s;
			env->len = v.u;
		}
	}
}

static void print_router(const struct rev *e, int json)
{
	size_t shown = e->blocks.nhashes < 8 ? e->blocks.nhashes : 8;

	if (json) {
		printf("{\"event_id\":%" PRIu64 ",\"type\":\"%s\",\"block_hashes\":[", e->event_id,
		       e->type);
		for (size_t i = 0; i < shown; i++)
			printf("%s%" PRIu64, i ? "," : "", e->blocks.hashes[i]);
		printf("],\"blocks\":%zu,\"worker_id\":%" PRIu64 ",\"storage_tier\":\"%s\","
		       "\"dp_rank\":%" PRIu64 "}\n",
		       e->blocks.nhashes, e->worker_id, e->tier, e->dp_rank);
		return;
	}
	printf("%" PRIu64 " %s", e->event_id, e->type);
	for (size_t i = 0; i < shown; i++)
		printf(" %" PRIu64, e->blocks.hashes[i]);
	if (e->blocks.nhashes > shown)
		printf(" (+%zu)", e->blocks.nhashes - shown);
	if (e->blocks.has_parent)
		printf(" parent %" PRIu64, e->blocks.parent);
	printf(" worker %" PRIu64 " %s\n", e->worker_id, e->tier);
}

static int nats_main(const char *url, const char *subject, int json, long limit)
{
	natsConnection *nc = NULL;
	natsSubscription *sub = NULL;
	natsStatus st;
	uint64_t publisher = 0, next = 0, gaps = 0;
	int have = 0, code = 0;
	long printed = 0;

	if ((st = natsConnection_ConnectTo(&nc, url)) != NATS_OK ||
	    (st = natsConnection_SubscribeSync(&sub, nc, subject)) != NATS_OK ||
	    (st = natsConnection_Flush(nc)) != NATS_OK) {
		fprintf(stderr, "kvbm-events: --nats %s: %s\n", url, natsStatus_GetText(st));
		natsConnection_Destroy(nc);
		return 2;
	}
	/* tests wait for this line: from here on nothing is missed */
	fprintf(stderr, "kvbm-events: subscribed to %s on %s\n", subject, url);
	while (!stop && (limit < 0 || printed < limit)) {
		natsMsg *msg = NULL;
		st = natsSubscription_NextMsg(&msg, sub, 100);
		if (st == NATS_TIMEOUT)
			continue;
		if (st != NATS_OK) {
			fprintf(stderr, "kvbm-events: nats: %s\n", natsStatus_GetText(st));
			code = 1;
			break;
		}
		struct envelope env = {0};
		struct rd r = {(const uint8_t *)natsMsg_GetData(msg),
			       (const uint8_t *)natsMsg_GetData(msg) + natsMsg_GetDataLength(msg), 0};
		rd_map(&r, on_envelope_key, &env);
		struct rev e = {0};
		struct rd pr = {env.payload, (const uint8_t *)env.payload + env.len, 0};
		if (!r.bad && env.payload)
			rd_map(&pr, on_router_key, &e);
		if (r.bad || !env.payload || pr.bad || !e.type[0]) {
			fprintf(stderr, "kvbm-events: not an event-plane RouterEvent: skipped\n");
		} else {
			/* NATS keeps nothing to replay: say what was lost; the
			 * publisher's next snapshot restores the view */
			if (have && env.publisher_id == publisher && env.sequence != next) {
				gaps++;
				fprintf(stderr, "kvbm-events: sequence %" PRIu64 " after %" PRIu64
					": %" PRIu64 " lost\n", env.sequence, next - 1,
					env.sequence - next);
			} else if (have && env.publisher_id != publisher) {
				fprintf(stderr, "kvbm-events: a new publisher %" PRIu64 "\n",
					env.publisher_id);
			}
			have = 1;
			publisher = env.publisher_id;
			next = env.sequence + 1;
			print_router(&e, json);
			fflush(stdout);
			printed++;
		}
		natsMsg_Destroy(msg);
	}
	natsSubscription_Destroy(sub);
	natsConnection_Destroy(nc);
	nats_Close();
	return code;
}

static int usage(FILE *f, int code)
{
	fprintf(f, "usage: kvbm-events [--from SEQ | --from-start] [--follow] [--count N]\n"
		   "                   [--json | --format text|json|kvbm|vllm|router]\n"
		   "                   [--worker-id N] [--dp-rank N] POOL\n"
		   "       kvbm-events --zmq ENDPOINT [--replay ENDPOINT] [--topic T]\n"
		   "                   [--from-start] [--count N] [--json]\n"
		   "       kvbm-events --nats URL [--topic SUBJECT] [--count N] [--json]\n"
		   "Reads POOL's event ring from now on (or SEQ, or the oldest kept) and prints\n"
		   "each event; with --format kvbm|vllm|router, each message is a 4-byte\n"
		   "big-endian length and msgpack bytes. A reader that fell behind resyncs\n"
		   "from a snapshot (CLEARED, then every registered block).\n"
		   "With --zmq it subscribes to vLLM's ZMQ KV events (kvbmd's or an engine's) and\n"
		   "prints each event; on a seq gap it asks --replay for what it missed\n"
		   "(--from-start: everything the publisher still buffers). With --nats it\n"
		   "subscribes to Dynamo's event plane (subject kv-events) and prints each\n"
		   "RouterEvent, reporting sequence gaps.\n");
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
		{"zmq", required_argument, NULL, 'Z'},   {"replay", required_argument, NULL, 'R'},
		{"topic", required_argument, NULL, 'T'}, {"nats", required_argument, NULL, 'N'},
		{NULL, 0, NULL, 0},
	};
	struct out o = {.fmt = F_TEXT, .limit = -1};
	int follow = 0, from_start = 0, have_from = 0, c;
	uint64_t cursor = 0;
	const char *zpub = NULL, *zrep = NULL, *ztopic = NULL, *nurl = NULL;

	mp_init(&o.m);
	while ((c = getopt_long(argc, argv, "f:sFn:jo:w:r:hVZ:R:T:N:", opts, NULL)) != -1) {
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
		case 'Z':
			zpub = optarg;
			break;
		case 'R':
			zrep = optarg;
			break;
		case 'T':
			ztopic = optarg;
			break;
		case 'N':
			nurl = optarg;
			break;
		case 'h':
			return usage(stdout, 0);
		case 'V':
			printf("kvbm-events kvbm-shm %s\n", kvbm_version());
			return 0;
		default:
			return usage(stderr, 2);
		}
	}
	if (zpub) {
		if (optind != argc)
			return usage(stderr, 2);
		signal(SIGINT, on_signal);
		signal(SIGTERM, on_signal);
		mp_free(&o.m);
		return zmq_main(zpub, zrep, ztopic ? ztopic : "", from_start, o.fmt == F_JSON,
				o.limit);
	}
	if (nurl) {
		if (optind != argc)
			return usage(stderr, 2);
		signal(SIGINT, on_signal);
		signal(SIGTERM, on_signal);
		mp_free(&o.m);
		return nats_main(nurl, ztopic ? ztopic : "kv-events", o.fmt == F_JSON, o.limit);
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
