/* SPDX-License-Identifier: Apache-2.0 */
/*
 * publish.c - drains every pool's event ring and publishes vLLM's ZMQ KV
 * events (spec 5.3): an XPUB socket sending [topic, seq (8 bytes BE),
 * KVEventBatch], and the replay ROUTER answering [client, "", start_seq]
 * with every buffered batch from start_seq on, then the end marker.
 *
 * One thread owns both sockets (a ZMQ socket belongs to one thread) and
 * every pool's cursor. It only reads the rings (kvbm_events_read and
 * kvbm_events_snapshot are lock-free): the pools never wait for it. It
 * never waits for a subscriber either: XPUB with NODROP refuses a batch
 * (EAGAIN) when a subscriber's queue is at its HWM instead of silently
 * losing it for that one subscriber, so the drop is counted; the batch
 * keeps its seq and stays in the replay buffer, and the subscriber sees
 * the gap and replays it.
 *
 * Batching is adaptive: a read that drains the ring sends the batch at
 * once, so a batch holds what accumulated while the previous one was being
 * sent (one event on a quiet pool, up to the cap under a flood). The
 * window (event_window_ms since the batch's first event), the size cap
 * (event_batch_max) and a change of kind close a batch before that; then
 * Creates go out ascending by position, Removes descending, so a
 * consumer never sees a child before its parent nor a parent go first.
 * A snapshot's AllBlocksCleared is a batch of its own.
 *
 * NATS (Dynamo's event plane) is a second publisher of the same kind, with
 * its own thread and cursors, so a slow or absent server never delays the
 * ZMQ stream: each batch becomes RouterEvents in the event-plane envelope
 * on `kv-events` (a chain of stores or the removes coalesced into one, as
 * Dynamo's publisher does), and kvbm-logical's own message on
 * `kvbm.events`. cnats buffers (boundedly) while the server is away and
 * refuses what does not fit: counted as dropped. After a reconnect every
 * pool is sent again as a snapshot, since NATS kept nothing for the
 * subscribers that reconnected too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <nats/nats.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <unistd.h>
#include <zmq.h>

#include "kvbmd.h"
#include "../kvevents.h"
#include "../msgpack.h"

/* vLLM's END_SEQ: -1 as an 8-byte signed big-endian integer */
static const uint8_t end_seq[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

struct replay_slot {
	uint64_t seq;
	uint8_t *p;
	size_t len;
};

/* One pool's cursor and the batch it is filling. */
struct drain {
	struct kvbmd_pool *pool;
	struct kve_source src;
	uint64_t cursor;
	int need_snapshot;
	struct kvbm_event *rd; /* what one read returns */
	uint32_t *rtok;
	struct kvbm_event *ev; /* the batch: one kind */
	struct kvbm_event *chains; /* T_NATS: the batch as router-event runs */
	uint32_t *runs;            /* and their lengths */
	uint32_t *tok;         /* its token ids (copied: rtok is reused) */
	size_t n, ntok, rcap, tcap;
	uint64_t t0;           /* CLOCK_MONOTONIC of the batch's first event */
	uint64_t lo, hi;       /* the ring range of a batch of ring events */
	int snapping;          /* the batch is a snapshot's, not a ring range */
	uint64_t until;        /* != 0: the first batch is exactly [cursor, until) */
};

enum { T_ZMQ, T_NATS, T_COUNT };

struct pub {
	struct kvbmd *d;
	int transport;                /* T_* */
	void *ctx, *xpub, *router;    /* T_ZMQ */
	natsOptions *opts;            /* T_NATS */
	natsConnection *nc;
	int reconnected;              /* atomic: set by cnats's thread */
	uint64_t publisher_id, env_seq, event_id;
	struct mp inner;
	pthread_t th;
	int stop; /* atomic: set by the main thread */
	uint64_t seq;                 /* the next batch's (T_ZMQ: st's, mirrored) */
	struct kvbmd_pubstate *st;    /* T_ZMQ: kept across restarts */
	int st_fd;
	struct replay_slot *ring; /* buffer_steps slots, seq % steps */
	struct mp m;
	struct drain dr[KVBMD_MAX_POOLS];
	size_t ndr;
};

static struct pub *pubs[T_COUNT];

static void be64(uint8_t *b, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (56 - 8 * i));
}

static double now_real(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int by_position(const void *a, const void *b)
{
	const struct kvbm_event *x = a, *y = b;
	uint32_t px = kvbm_plh_position(x->hash), py = kvbm_plh_position(y->hash);
	int c = px < py ? -1 : px > py;

	if (x->kind == KVBM_EVENT_REMOVED)
		c = -c;
	/* the ring's order among equals: qsort is not stable */
	return c ? c : (x->seq < y->seq ? -1 : x->seq > y->seq);
}

static void count(uint64_t *c, uint64_t n)
{
	/* read by the HTTP thread */
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

/* ZMQ: the batch gets a seq, is kept for replay and published; the seq
 * and the ring position are recorded so that a restarted kvbmd goes on
 * from there (pubstate.c). */
static void send_zmq(struct pub *P, struct drain *dr)
{
	uint8_t seq[8];
	const char *topic = P->d->cfg.zmq_topic;

	mp_reset(&P->m);
	kve_vllm_batch(&P->m, &dr->src, now_real(), dr->ev, dr->n);
	if (!mp_ok(&P->m)) {
		kvbmd_log("zmq: out of memory encoding a batch of %zu events: dropped", dr->n);
		count(&dr->pool->ev_dropped, dr->n);
		return;
	}
	if (dr->snapping)
		P->seq = kvbmd_pubstate_take(P->st);
	else
		kvbmd_pubstate_begin(P->st, dr->src.instance_id, dr->lo, dr->hi);
	be64(seq, P->seq);
	struct replay_slot *s = &P->ring[P->seq % P->d->cfg.zmq_buffer_steps];
	uint8_t *copy = malloc(P->m.len);
	if (copy) {
		free(s->p);
		memcpy(copy, P->m.buf, P->m.len);
		*s = (struct replay_slot){.seq = P->seq, .p = copy, .len = P->m.len};
	}
	/* the first frame decides: NODROP refuses a whole message or none */
	if (zmq_send(P->xpub, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
		count(&dr->pool->ev_dropped, dr->n);
	} else {
		zmq_send(P->xpub, seq, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
		zmq_send(P->xpub, P->m.buf, P->m.len, ZMQ_DONTWAIT);
		count(&dr->pool->ev_published_zmq, dr->n);
		count(&dr->pool->batches_zmq, 1);
	}
	if (!dr->snapping)
		kvbmd_pubstate_commit(P->st, dr->src.instance_id, dr->hi);
	P->seq = kvbmd_pubstate_seq(P->st);
}

static uint64_t now_ms_real(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One message to NATS: 1 published, 0 refused (counted by the caller). */
static int nats_pub(struct pub *P, const char *subject, const struct mp *m)
{
	if (!mp_ok(m))
		return 0;
	/* never waits: cnats queues it (while away, up to the reconnect
	 * buffer) or refuses it */
	return natsConnection_Publish(P->nc, subject, m->buf, (int)m->len) == NATS_OK;
}

/* NATS: kvbm-logical's message for the batch, then its RouterEvents, one
 * per chain of stores (or for all its removes), each in the event-plane
 * envelope (Dynamo's router reads one per message). */
static void send_nats(struct pub *P, struct drain *dr)
{
	const struct kvbmd_config *c = &P->d->cfg;
	uint64_t ok = 0, refused = 0;

	/* kvbm-logical's stream has no "cleared": a snapshot is its Creates */
	if (dr->ev[0].kind != KVBM_EVENT_CLEARED) {
		mp_reset(&P->m);
		kve_kvbm_batch(&P->m, &dr->src, dr->ev, dr->n);
		if (nats_pub(P, c->nats_kvbm_subject, &P->m))
			count(&dr->pool->batches_nats, 1);
		else
			count(&dr->pool->kvbm_dropped_nats, 1);
	}
	/* a chain of stores, or the batch's removes, is one router event,
	 * as Dynamo's publisher coalesces them */
	size_t nruns = kve_router_chains(dr->ev, dr->n, dr->chains, dr->runs);
	const struct kvbm_event *run = dr->chains;
	for (size_t i = 0; i < nruns; run += dr->runs[i++]) {
		mp_reset(&P->inner);
		kve_router_event(&P->inner, &dr->src, P->event_id++, run, dr->runs[i]);
		mp_reset(&P->m);
		mp_map(&P->m, 5);
		mp_str(&P->m, "publisher_id");
		mp_uint(&P->m, P->publisher_id);
		mp_str(&P->m, "sequence");
		mp_uint(&P->m, P->env_seq++);
		mp_str(&P->m, "published_at");
		mp_uint(&P->m, now_ms_real());
		mp_str(&P->m, "topic");
		mp_str(&P->m, c->nats_router_subject);
		mp_str(&P->m, "payload");
		mp_bin(&P->m, P->inner.buf, (uint32_t)P->inner.len);
		if (mp_ok(&P->inner) && nats_pub(P, c->nats_router_subject, &P->m))
			ok += dr->runs[i];
		else
			refused += dr->runs[i];
	}
	count(&dr->pool->ev_published_nats, ok);
	count(&dr->pool->ev_dropped_nats, refused);
}

/* Sends the batch of @dr on the publisher's transport. */
static void flush(struct pub *P, struct drain *dr)
{
	if (dr->n == 0)
		return;
	if (dr->ev[0].kind != KVBM_EVENT_CLEARED)
		qsort(dr->ev, dr->n, sizeof(dr->ev[0]), by_position);
	if (P->transport == T_ZMQ)
		send_zmq(P, dr);
	else
		send_nats(P, dr);
	dr->n = dr->ntok = 0;
}

/* Adds one event to @dr's batch, sending the batch first when the event
 * cannot join it. */
static void add(struct pub *P, struct drain *dr, const struct kvbm_event *e)
{
	if (e->kind == KVBM_EVENT_RESYNC)
		return; /* the caller resyncs; nothing on the wire */
	if (dr->n && (dr->ev[0].kind != e->kind || e->kind == KVBM_EVENT_CLEARED ||
		      dr->n == dr->rcap || dr->ntok + e->ntokens > dr->tcap))
		flush(P, dr);
	if (dr->n == 0) {
		dr->t0 = kvbmd_now_ns();
		dr->lo = e->seq;
	}
	if (!dr->snapping)
		dr->hi = e->seq + 1;
	struct kvbm_event *b = &dr->ev[dr->n++];
	*b = *e;
	if (e->ntokens) {
		memcpy(dr->tok + dr->ntok, e->tokens, e->ntokens * sizeof(uint32_t));
		b->tokens = dr->tok + dr->ntok;
		dr->ntok += e->ntokens;
	}
	if (e->kind == KVBM_EVENT_CLEARED)
		flush(P, dr);
}

struct snap_arg {
	struct pub *P;
	struct drain *dr;
};

static void on_snapshot(const struct kvbm_event *ev, void *arg)
{
	struct snap_arg *a = arg;

	add(a->P, a->dr, ev);
}

static void resync(struct pub *P, struct drain *dr)
{
	struct snap_arg a = {P, dr};

	flush(P, dr);
	dr->until = 0;
	if (P->st)
		kvbmd_pubstate_mark(P->st, dr->src.instance_id, 0, 0);
	dr->snapping = 1;
	long k = kvbm_events_snapshot(dr->pool->h, &dr->cursor, on_snapshot, &a);
	if (k < 0) {
		/* tried again on the next round: the consumer's view waits */
		kvbmd_log("pool %s: events snapshot: %s", dr->pool->name, kvbm_strerror((int)k));
		dr->need_snapshot = 1;
		dr->snapping = 0;
		return;
	}
	dr->need_snapshot = 0;
	flush(P, dr);
	dr->snapping = 0;
	if (P->st)
		kvbmd_pubstate_mark(P->st, dr->src.instance_id, dr->cursor, 1);
}

/* Reads what is new in @dr's ring into its batch. Returns the events read. */
static long drain_once(struct pub *P, struct drain *dr)
{
	if (dr->need_snapshot) {
		resync(P, dr);
		return 1;
	}
	size_t max = dr->rcap;
	if (dr->until && dr->until - dr->cursor < max)
		max = (size_t)(dr->until - dr->cursor);
	long n = kvbm_events_read(dr->pool->h, &dr->cursor, dr->rd, max, dr->rtok, dr->tcap);
	if (n == KVBM_EGAP) {
		/* the ring lapped us: what was overwritten is lost, the
		 * registry is not */
		count(&dr->pool->ev_gaps, 1);
		kvbmd_log("pool %s: fell behind the event ring: resyncing from a snapshot",
			  dr->pool->name);
		resync(P, dr);
		return 1;
	}
	if (n < 0) {
		kvbmd_log("pool %s: events read: %s", dr->pool->name, kvbm_strerror((int)n));
		return 0;
	}
	for (long i = 0; i < n; i++)
		add(P, dr, &dr->rd[i]);
	if (n > 0 && dr->rd[n - 1].kind == KVBM_EVENT_RESYNC) {
		/* the pool recovered from a crash: its ring restarted */
		count(&dr->pool->ev_resyncs, 1);
		resync(P, dr);
	}
	/* a short read drained the ring: nothing more is coming now, so
	 * waiting out the window would only add latency. What a batch holds
	 * is what accumulated while the previous one was sent; under a flood
	 * every read is full and the size cap (or the window) closes it */
	if ((size_t)n < max || (dr->until && dr->cursor >= dr->until)) {
		flush(P, dr);
		dr->until = 0;
	}
	return n;
}

/* One replay request on the ROUTER. */
static void replay(struct pub *P)
{
	zmq_msg_t part[4];
	int np = 0, more = 1;

	while (more && np < 4) {
		zmq_msg_init(&part[np]);
		if (zmq_msg_recv(&part[np], P->router, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&part[np]);
			break;
		}
		more = zmq_msg_more(&part[np]);
		np++;
	}
	while (more) { /* too many frames: not a request; discard the rest */
		zmq_msg_t x;
		zmq_msg_init(&x);
		if (zmq_msg_recv(&x, P->router, ZMQ_DONTWAIT) < 0)
			more = 0;
		else
			more = zmq_msg_more(&x);
		zmq_msg_close(&x);
	}
	/* [client_id, empty, start_seq]; a REQ-less client's [client_id,
	 * start_seq] is read the same way: the last frame is the request */
	if (np >= 2 && zmq_msg_size(&part[np - 1]) == 8) {
		const uint8_t *b = zmq_msg_data(&part[np - 1]);
		uint64_t start = 0;
		for (int i = 0; i < 8; i++)
			start = start << 8 | b[i];
		uint64_t steps = P->d->cfg.zmq_buffer_steps;
		uint64_t first = P->seq > steps ? P->seq - steps : 0;
		const void *id = zmq_msg_data(&part[0]);
		size_t idlen = zmq_msg_size(&part[0]);
		uint8_t seq[8];

		if (start < first)
			start = first;
		count(&P->d->replays, 1);
		/* a ROUTER drops what a slow client cannot take (DONTWAIT
		 * and its HWM): the client asks again */
		for (uint64_t s = start; s < P->seq; s++) {
			struct replay_slot *r = &P->ring[s % steps];
			if (!r->p || r->seq != s)
				continue;
			be64(seq, s);
			zmq_send(P->router, id, idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT);
			zmq_send(P->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
			zmq_send(P->router, seq, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
			zmq_send(P->router, r->p, r->len, ZMQ_DONTWAIT);
		}
		zmq_send(P->router, id, idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT);
		zmq_send(P->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
		zmq_send(P->router, end_seq, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
		zmq_send(P->router, "", 0, ZMQ_DONTWAIT);
	}
	for (int i = 0; i < np; i++)
		zmq_msg_close(&part[i]);
}

/* XPUB hands us subscriptions; we only need to take them off the queue. */
static void drain_subscriptions(struct pub *P)
{
	char buf[256];

	while (zmq_recv(P->xpub, buf, sizeof(buf), ZMQ_DONTWAIT) >= 0)
		;
}

static void *run(void *arg)
{
	struct pub *P = arg;
	uint64_t window = P->d->cfg.event_window_ms * 1000000ull;
	uint64_t hot_until = 0;

	/* the 100 us naps below are the latency's floor: the kernel's default
	 * timer slack (50 us) would stretch each by half */
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

	/* a restarted kvbmd's subscribers reconnect within their reconnect
	 * interval (ZMQ's default: 100 ms); what goes out before they are
	 * back is a gap they must replay. The ring keeps it meanwhile, so
	 * wait for the first subscription (500 ms at most), and a little for
	 * the others */
	int resumed = 0;
	for (size_t i = 0; i < P->ndr; i++)
		resumed |= !P->dr[i].need_snapshot;
	if (P->transport == T_ZMQ && resumed) {
		zmq_pollitem_t it = {.socket = P->xpub, .events = ZMQ_POLLIN};
		/* the subscriptions stay queued: drain_subscriptions takes them */
		if (zmq_poll(&it, 1, 500) > 0)
			nanosleep(&(struct timespec){0, 20000000}, NULL);
	}
	/* a batch the last kvbmd died sending goes out again first, with the
	 * seq it had: before any other pool's batch takes that seq */
	for (size_t i = 0; i < P->ndr; i++)
		if (P->dr[i].until)
			drain_once(P, &P->dr[i]);
	while (!__atomic_load_n(&P->stop, __ATOMIC_ACQUIRE)) {
		long got = 0;
		uint64_t now;

		for (size_t i = 0; i < P->ndr; i++)
			got += drain_once(P, &P->dr[i]);
		now = kvbmd_now_ns();
		/* the ring has no wakeup, so an idle publisher polls it: every
		 * 100 us for 50 ms after the last event (a flowing stream gets
		 * sub-millisecond latency: p99 1.5-4 ms at 100 k events/s with
		 * a 1 ms poll), then every millisecond (a quiet pool costs
		 * 1000 wakeups a second, not 10 000) */
		if (got)
			hot_until = now + 50000000ull;
		const struct timespec nap = {0, now < hot_until ? 100000 : 1000000};
		for (size_t i = 0; i < P->ndr; i++)
			if (P->dr[i].n && now - P->dr[i].t0 >= window)
				flush(P, &P->dr[i]);
		if (P->transport == T_NATS) {
			if (__atomic_exchange_n(&P->reconnected, 0, __ATOMIC_ACQUIRE))
				for (size_t i = 0; i < P->ndr; i++) {
					flush(P, &P->dr[i]);
					P->dr[i].need_snapshot = 1;
				}
			if (!got)
				nanosleep(&nap, NULL);
			continue;
		}
		zmq_pollitem_t items[2] = {
			{.socket = P->xpub, .events = ZMQ_POLLIN},
			{.socket = P->router, .events = ZMQ_POLLIN},
		};
		/* at once while busy; idle, the sockets wait as long as the
		 * nap above would (zmq_poll counts whole milliseconds) */
		int hot = nap.tv_nsec < 1000000;
		int r = zmq_poll(items, P->router ? 2 : 1, got || hot ? 0 : 1);
		if (!got && hot && r == 0)
			nanosleep(&nap, NULL);
		if (r > 0 && (items[0].revents & ZMQ_POLLIN))
			drain_subscriptions(P);
		if (r > 0 && P->router && (items[1].revents & ZMQ_POLLIN))
			replay(P);
	}
	for (size_t i = 0; i < P->ndr; i++)
		flush(P, &P->dr[i]);
	return NULL;
}

/* vLLM's offset of an endpoint by the data-parallel rank: the TCP port +
 * rank, inproc gets "_dp{rank}"; anything else cannot be offset. */
static int offset_endpoint(const char *in, uint32_t rank, char *out, size_t len)
{
	if (rank == 0 || !strncmp(in, "inproc://", 9)) {
		if (rank == 0)
			snprintf(out, len, "%s", in);
		else
			snprintf(out, len, "%s_dp%u", in, rank);
		return 0;
	}
	const char *colon = strrchr(in, ':');
	char *end;
	if (strncmp(in, "tcp://", 6) || !colon)
		return -1;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port + rank > 65535)
		return -1;
	snprintf(out, len, "%.*s:%lu", (int)(colon - in), in, port + rank);
	return 0;
}

/* vLLM binds when the endpoint says it listens (a wildcard, ::, ipc or
 * inproc) and connects otherwise; zmq_bind overrides. */
static int wants_bind(const char *ep, const char *mode)
{
	if (!strcmp(mode, "yes"))
		return 1;
	if (!strcmp(mode, "no"))
		return 0;
	return strchr(ep, '*') || strstr(ep, "::") || !strncmp(ep, "ipc://", 6) ||
	       !strncmp(ep, "inproc://", 9);
}

static void *open_socket(struct pub *P, int type, const char *base, char *where, size_t len)
{
	const struct kvbmd_config *c = &P->d->cfg;
	char ep[KVBMD_ENDPOINT_MAX + 16];
	void *s;
	int zero = 0, one = 1;
	/* a ROUTER drops what does not fit without a word, so a replay must
	 * fit whole: the buffer's batches and the end marker (the memory is
	 * the buffer's, already bounded) */
	int hwm = type == ZMQ_ROUTER ? (int)c->zmq_buffer_steps + 1 : (int)c->zmq_hwm;

	if (offset_endpoint(base, c->dp_rank, ep, sizeof(ep)) < 0) {
		fprintf(stderr, "kvbmd: zmq endpoint %s: dp_rank %u needs a tcp://HOST:PORT or "
			"inproc:// endpoint\n", base, c->dp_rank);
		return NULL;
	}
	s = zmq_socket(P->ctx, type);
	if (!s) {
		fprintf(stderr, "kvbmd: zmq socket: %s\n", zmq_strerror(zmq_errno()));
		return NULL;
	}
	zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm));
	zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
	if (type == ZMQ_XPUB)
		zmq_setsockopt(s, ZMQ_XPUB_NODROP, &one, sizeof(one));
	int bind = wants_bind(ep, c->zmq_bind);
	if ((bind ? zmq_bind(s, ep) : zmq_connect(s, ep)) < 0) {
		fprintf(stderr, "kvbmd: zmq %s %s: %s%s\n", bind ? "bind" : "connect", ep,
			zmq_strerror(zmq_errno()),
			zmq_errno() == EADDRINUSE ? " (another kvbmd or vLLM on this port?)" : "");
		zmq_close(s);
		return NULL;
	}
	size_t wl = len;
	if (!bind || zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, where, &wl) < 0)
		snprintf(where, len, "%s", ep);
	return s;
}

static int drain_init(struct pub *P, struct drain *dr, struct kvbmd_pool *p)
{
	struct kvbm_pool_info info;
	const struct kvbmd_config *c = &P->d->cfg;
	uint64_t head;

	if (kvbm_pool_info(p->h, &info) < 0 || kvbm_events_head(p->h, &head) < 0)
		return 0; /* no ring: nothing to publish from this pool */
	dr->pool = p;
	dr->src.instance_id = info.instance_id;
	dr->src.worker_id = strtoull(c->worker_id, NULL, 10);
	dr->src.dp_rank = c->dp_rank;
	dr->src.block_size = info.config.block_size;
	dr->src.tier = p->tier;
	dr->rcap = c->event_batch_max;
	dr->tcap = dr->rcap * info.config.block_size;
	dr->rd = calloc(dr->rcap, sizeof(*dr->rd));
	dr->ev = calloc(dr->rcap, sizeof(*dr->ev));
	dr->rtok = calloc(dr->tcap, sizeof(*dr->rtok));
	dr->tok = calloc(dr->tcap, sizeof(*dr->tok));
	if (P->transport == T_NATS) {
		dr->chains = calloc(dr->rcap, sizeof(*dr->chains));
		dr->runs = calloc(dr->rcap, sizeof(*dr->runs));
		if (!dr->chains || !dr->runs)
			return -1;
	}
	if (!dr->rd || !dr->ev || !dr->rtok || !dr->tok)
		return -1;
	if (P->st && P->d->pub_resume &&
	    kvbmd_pubstate_resume(P->st, info.instance_id, head, &dr->cursor, &dr->until)) {
		/* a restarted kvbmd: the stream goes on where the last one
		 * stopped, and the ring kept what it missed */
		kvbmd_log("pool %s: resuming the event stream at ring position %llu, seq %llu",
			  p->name, (unsigned long long)dr->cursor,
			  (unsigned long long)kvbmd_pubstate_seq(P->st));
		return 1;
	}
	/* a consumer knows nothing of what was registered before we came:
	 * start with a snapshot (AllBlocksCleared, then every block) */
	dr->need_snapshot = 1;
	return 1;
}

static void pub_free(struct pub *P)
{
	for (size_t i = 0; i < KVBMD_MAX_POOLS; i++) {
		free(P->dr[i].rd);
		free(P->dr[i].ev);
		free(P->dr[i].rtok);
		free(P->dr[i].tok);
		free(P->dr[i].chains);
		free(P->dr[i].runs);
	}
	if (P->ring)
		for (uint32_t i = 0; i < P->d->cfg.zmq_buffer_steps; i++)
			free(P->ring[i].p);
	free(P->ring);
	mp_free(&P->m);
	mp_free(&P->inner);
	if (P->nc) {
		/* what is still queued goes out if the server is there */
		natsConnection_FlushTimeout(P->nc, 1000);
		natsConnection_Destroy(P->nc);
	}
	if (P->opts)
		natsOptions_Destroy(P->opts);
	if (P->xpub)
		zmq_close(P->xpub);
	if (P->router)
		zmq_close(P->router);
	if (P->ctx)
		zmq_ctx_term(P->ctx);
	kvbmd_pubstate_close(P->st, P->st_fd);
	free(P);
}

/* A publisher with its drains: NULL (message on stderr) on failure. */
static struct pub *pub_new(struct kvbmd *d, int transport)
{
	struct pub *P = calloc(1, sizeof(*P));

	if (!P) {
		fprintf(stderr, "kvbmd: out of memory for a publisher\n");
		return NULL;
	}
	P->d = d;
	P->transport = transport;
	mp_init(&P->m);
	mp_init(&P->inner);
	/* NATS keeps nothing for its subscribers: a snapshot per connection
	 * serves them, so only the ZMQ stream continues across restarts */
	if (transport == T_ZMQ && d->npools) {
		P->st = kvbmd_pubstate_open(d->pools[0].name, "zmq", &P->st_fd);
		if (!P->st) {
			fprintf(stderr, "kvbmd: out of memory for the publisher state\n");
			free(P);
			return NULL;
		}
		P->seq = kvbmd_pubstate_seq(P->st);
	}
	for (size_t i = 0; i < d->npools; i++) {
		int r = drain_init(P, &P->dr[P->ndr], &d->pools[i]);
		if (r < 0) {
			fprintf(stderr, "kvbmd: out of memory for the event batches\n");
			pub_free(P);
			return NULL;
		}
		if (r == 0 && transport == T_ZMQ)
			kvbmd_log("pool %s has no event ring (event_ring = 0): nothing to publish",
				  d->pools[i].name);
		P->ndr += (size_t)r;
	}
	return P;
}

static int zmq_start(struct kvbmd *d)
{
	const struct kvbmd_config *c = &d->cfg;
	char where[KVBMD_ENDPOINT_MAX + 64], rwhere[KVBMD_ENDPOINT_MAX + 64] = "none";
	struct pub *P = pub_new(d, T_ZMQ);

	if (!P)
		return -1;
	if (!(P->ring = calloc(c->zmq_buffer_steps, sizeof(*P->ring)))) {
		fprintf(stderr, "kvbmd: out of memory for the zmq replay buffer\n");
		pub_free(P);
		return -1;
	}
	if (!(P->ctx = zmq_ctx_new()) ||
	    !(P->xpub = open_socket(P, ZMQ_XPUB, c->zmq_endpoint, where, sizeof(where))) ||
	    (c->zmq_replay_endpoint[0] &&
	     !(P->router = open_socket(P, ZMQ_ROUTER, c->zmq_replay_endpoint, rwhere,
				       sizeof(rwhere))))) {
		pub_free(P);
		return -1;
	}
	int r = pthread_create(&P->th, NULL, run, P);
	if (r) {
		fprintf(stderr, "kvbmd: publisher thread: %s\n", strerror(r));
		pub_free(P);
		return -1;
	}
	/* tests and scripts read the endpoints from this line */
	kvbmd_log("zmq: publishing %zu pool%s on %s replay %s topic '%s' dp_rank %u", P->ndr,
		  P->ndr == 1 ? "" : "s", where, rwhere, c->zmq_topic, c->dp_rank);
	pubs[T_ZMQ] = P;
	return 0;
}

static void on_nats_disconnected(natsConnection *nc, void *arg)
{
	(void)nc;
	(void)arg;
	kvbmd_log("nats: disconnected: buffering up to the reconnect buffer, then dropping");
}

static void on_nats_connected(natsConnection *nc, void *arg)
{
	struct pub *P = arg;

	(void)nc;
	count(&P->d->nats_reconnects, 1);
	/* the drain thread resyncs every pool (pairs with its exchange) */
	__atomic_store_n(&P->reconnected, 1, __ATOMIC_RELEASE);
	kvbmd_log("nats: connected to %s: every pool follows as a snapshot", P->d->cfg.nats_url);
}

static int nats_start(struct kvbmd *d)
{
	const struct kvbmd_config *c = &d->cfg;
	struct pub *P = pub_new(d, T_NATS);
	natsStatus st;

	if (!P)
		return -1;
	if (getrandom(&P->publisher_id, sizeof(P->publisher_id), 0) != sizeof(P->publisher_id))
		P->publisher_id = kvbmd_now_ns() ^ (uint64_t)getpid() << 32;
	if ((st = natsOptions_Create(&P->opts)) != NATS_OK ||
	    (st = natsOptions_SetURL(P->opts, c->nats_url)) != NATS_OK ||
	    (st = natsOptions_SetMaxReconnect(P->opts, -1)) != NATS_OK ||
	    (st = natsOptions_SetReconnectWait(P->opts, c->nats_reconnect_wait_ms)) != NATS_OK ||
	    (st = natsOptions_SetReconnectBufSize(P->opts, (int)c->nats_reconnect_buffer)) != NATS_OK ||
	    (st = natsOptions_SetDisconnectedCB(P->opts, on_nats_disconnected, P)) != NATS_OK ||
	    (st = natsOptions_SetReconnectedCB(P->opts, on_nats_connected, P)) != NATS_OK ||
	    /* a server that is down at start is waited for, as after a
	     * disconnection: kvbmd serves its pools meanwhile */
	    (st = natsOptions_SetRetryOnFailedConnect(P->opts, true, on_nats_connected, P)) != NATS_OK) {
		fprintf(stderr, "kvbmd: nats options: %s\n", natsStatus_GetText(st));
		pub_free(P);
		return -1;
	}
	st = natsConnection_Connect(&P->nc, P->opts);
	if (st != NATS_OK && st != NATS_NOT_YET_CONNECTED) {
		fprintf(stderr, "kvbmd: nats %s: %s\n", c->nats_url, natsStatus_GetText(st));
		pub_free(P);
		return -1;
	}
	if (st == NATS_NOT_YET_CONNECTED)
		kvbmd_log("nats: %s is not reachable yet: retrying every %u ms", c->nats_url,
			  c->nats_reconnect_wait_ms);
	int r = pthread_create(&P->th, NULL, run, P);
	if (r) {
		fprintf(stderr, "kvbmd: publisher thread: %s\n", strerror(r));
		pub_free(P);
		return -1;
	}
	kvbmd_log("nats: publishing %zu pool%s to %s: router events on '%s', kvbm stream on '%s'",
		  P->ndr, P->ndr == 1 ? "" : "s", c->nats_url, c->nats_router_subject,
		  c->nats_kvbm_subject);
	pubs[T_NATS] = P;
	return 0;
}

int kvbmd_publish_start(struct kvbmd *d)
{
	if (d->cfg.zmq_endpoint[0] && zmq_start(d) < 0)
		return -1;
	if (d->cfg.nats_url[0] && nats_start(d) < 0) {
		kvbmd_publish_stop(d);
		return -1;
	}
	return 0;
}

void kvbmd_publish_stop(struct kvbmd *d)
{
	(void)d;
	for (int t = 0; t < T_COUNT; t++) {
		struct pub *P = pubs[t];
		if (!P)
			continue;
		__atomic_store_n(&P->stop, 1, __ATOMIC_RELEASE);
		pthread_join(P->th, NULL);
		pub_free(P);
		pubs[t] = NULL;
		if (t == T_NATS)
			nats_Close(); /* cnats's own threads and caches */
	}
}
