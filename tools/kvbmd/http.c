/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http.c - /metrics over HTTP. kvbmd binds the socket itself, before any
 * thread starts, so a port in use is one clear message and exit 1 rather
 * than libmicrohttpd's generic failure; libmicrohttpd then serves on it
 * from its own thread.
 *
 * The exposition: each pool's library families (kvbm_metrics_prometheus,
 * `pool` = its tier, then instance_id and worker_id when set), kvbmd's own
 * per-pool families with the same labels, merged so that every family
 * appears once (expo.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvbmd.h"

int kvbmd_http_listen(struct kvbmd *d, unsigned *port)
{
	struct addrinfo hints, *ai = NULL;
	char host[128], *colon;
	const char *port_s;
	int fd = -1, one = 1, r;

	snprintf(host, sizeof(host), "%s", d->cfg.listen);
	colon = strrchr(host, ':');
	if (!colon) {
		fprintf(stderr, "kvbmd: listen '%s': expected HOST:PORT\n", d->cfg.listen);
		return -1;
	}
	*colon = '\0';
	port_s = colon + 1;
	char *h = host;
	if (h[0] == '[' && colon > host && colon[-1] == ']') { /* [::1]:9470 */
		colon[-1] = '\0';
		h++;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	r = getaddrinfo(*h ? h : NULL, port_s, &hints, &ai);
	if (r != 0) {
		fprintf(stderr, "kvbmd: listen '%s': %s\n", d->cfg.listen, gai_strerror(r));
		return -1;
	}
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0) {
		fprintf(stderr, "kvbmd: socket: %s\n", strerror(errno));
		goto fail;
	}
	/* a restarted kvbmd rebinds at once over its predecessor's TIME_WAIT
	 * connections; a port another process listens on stays refused */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
		int e = errno;
		fprintf(stderr, "kvbmd: cannot listen on %s: %s%s\n", d->cfg.listen, strerror(e),
			e == EADDRINUSE ? " (another kvbmd or exporter has the port: choose another "
					  "with --listen or `listen =`)" : "");
		goto fail;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char hbuf[NI_MAXHOST], sbuf[NI_MAXSERV];
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    getnameinfo((struct sockaddr *)&ss, sl, hbuf, sizeof(hbuf), sbuf, sizeof(sbuf),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		fprintf(stderr, "kvbmd: getsockname: %s\n", strerror(errno));
		goto fail;
	}
	*port = (unsigned)atoi(sbuf);
	freeaddrinfo(ai);
	d->listen_fd = fd;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return -1;
}

/* The label set of one pool's samples: pool="TIER",instance_id=..,worker_id=.. */
struct labels {
	const char *kv[4][2];
	size_t n;                /* after pool */
	char inst[KVBMD_LABEL_MAX], worker[KVBMD_LABEL_MAX];
};

static void labels_get(struct kvbmd *d, struct labels *l)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_lock(&d->lock);
	snprintf(l->inst, sizeof(l->inst), "%s", d->instance_id);
	snprintf(l->worker, sizeof(l->worker), "%s", d->worker_id);
	pthread_mutex_unlock(&d->lock);
	l->n = 0;
	if (l->inst[0]) {
		l->kv[l->n][0] = "instance_id";
		l->kv[l->n++][1] = l->inst;
	}
	if (l->worker[0]) {
		l->kv[l->n][0] = "worker_id";
		l->kv[l->n++][1] = l->worker;
	}
}

static void put_value(struct kvbmd_buf *b, const char *k, const char *v)
{
	kvbmd_buf_printf(b, "%s=\"", k);
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			kvbmd_buf_printf(b, "\\%c", *v);
		else if (*v == '\n')
			kvbmd_buf_printf(b, "\\n");
		else
			kvbmd_buf_put(b, v, 1);
	}
	kvbmd_buf_put(b, "\"", 1);
}

/* `{pool="G1",instance_id="..."}` as the library writes it */
static void put_labels(struct kvbmd_buf *b, const char *tier, const struct labels *l)
{
	kvbmd_buf_put(b, "{", 1);
	if (tier) {
		put_value(b, "pool", tier);
		if (l->n)
			kvbmd_buf_put(b, ",", 1);
	}
	for (size_t i = 0; i < l->n; i++) {
		if (i)
			kvbmd_buf_put(b, ",", 1);
		put_value(b, l->kv[i][0], l->kv[i][1]);
	}
	kvbmd_buf_put(b, "}", 1);
}

static void family(struct kvbmd_buf *b, const char *name, const char *type, const char *help,
		   const char *tier, const struct labels *l, double v)
{
	kvbmd_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s", name, help, name, type, name);
	put_labels(b, tier, l);
	if (isnan(v))
		kvbmd_buf_printf(b, " NaN\n");
	else if (isinf(v))
		kvbmd_buf_printf(b, " %sInf\n", v > 0 ? "+" : "-");
	else if (v == (double)(int64_t)v && fabs(v) < 9e15)
		kvbmd_buf_printf(b, " %lld\n", (long long)v);
	else
		kvbmd_buf_printf(b, " %.17g\n", v);
}

/* One pool's exposition: the library's families, then ours. */
static void pool_text(struct kvbmd_pool *p, const struct labels *l, struct kvbmd_buf *b)
{
	struct kvbm_pool_info info;
	struct kvbm_metrics m;
	struct kvbm_stats_snapshot s;
	const char *t = p->tier;

	if (kvbm_metrics_snapshot(p->h, &m) == 0) {
		long need = kvbm_metrics_prometheus(&m, t, l->kv, l->n, NULL, 0);
		if (need > 0) {
			char *lib = malloc((size_t)need + 1);
			if (lib && kvbm_metrics_prometheus(&m, t, l->kv, l->n, lib,
							   (size_t)need + 1) == need)
				kvbmd_buf_put(b, lib, (size_t)need);
			else
				b->oom = 1;
			free(lib);
		}
	}
	family(b, "kvbm_poisoned", "gauge", "1 when the pool is POISONED (repair failed)", t, l,
	       kvbmd_pool_poisoned(p));
	if (kvbm_pool_info(p->h, &info) == 0) {
		family(b, "kvbm_attached_processes", "gauge",
		       "Processes attached to the pool, kvbmd included", t, l, info.procs_attached);
		family(b, "kvbm_recoveries_total", "counter",
		       "Recoveries from a process that died holding the pool mutex", t, l,
		       (double)info.recoveries);
		family(b, "kvbm_blocks", "gauge", "Blocks in the pool", t, l,
		       info.config.block_count);
	}
	family(b, "kvbm_reaps_total", "counter", "Dead processes reaped, by anyone", t, l,
	       (double)kvbmd_pool_reaps(p));
	family(b, "kvbmd_pidfd_reaps_total", "counter",
	       "Dead processes kvbmd reaped the moment their pidfd said they exited", t, l,
	       (double)__atomic_load_n(&p->pidfd_reaps, __ATOMIC_RELAXED));
	family(b, "kvbmd_watched_processes", "gauge", "Attached processes kvbmd holds a pidfd on",
	       t, l, __atomic_load_n(&p->nwatch, __ATOMIC_RELAXED));
	family(b, "kvbmd_event_gaps_total", "counter",
	       "Times the event ring lapped kvbmd's publisher (each followed by a resync)", t, l,
	       (double)__atomic_load_n(&p->ev_gaps, __ATOMIC_RELAXED));
	family(b, "kvbmd_event_resyncs_total", "counter",
	       "RESYNC events read (the pool recovered; a snapshot followed)", t, l,
	       (double)__atomic_load_n(&p->ev_resyncs, __ATOMIC_RELAXED));
	struct labels lz = *l;
	lz.kv[lz.n][0] = "transport";
	lz.kv[lz.n++][1] = "zmq";
	family(b, "kvbmd_events_published_total", "counter",
	       "KV events published, by transport", t, &lz,
	       (double)__atomic_load_n(&p->ev_published_zmq, __ATOMIC_RELAXED));
	family(b, "kvbmd_event_batches_published_total", "counter",
	       "KV event batches (messages) published, by transport", t, &lz,
	       (double)__atomic_load_n(&p->batches_zmq, __ATOMIC_RELAXED));
	family(b, "kvbmd_events_dropped_total", "counter",
	       "KV events not sent because a subscriber's queue was full (left for replay)", t,
	       &lz, (double)__atomic_load_n(&p->ev_dropped, __ATOMIC_RELAXED));
	struct labels ln = *l;
	ln.kv[ln.n][0] = "transport";
	ln.kv[ln.n++][1] = "nats";
	family(b, "kvbmd_events_published_total", "counter", "", t, &ln,
	       (double)__atomic_load_n(&p->ev_published_nats, __ATOMIC_RELAXED));
	family(b, "kvbmd_event_batches_published_total", "counter", "", t, &ln,
	       (double)__atomic_load_n(&p->batches_nats, __ATOMIC_RELAXED));
	family(b, "kvbmd_events_dropped_total", "counter", "", t, &ln,
	       (double)__atomic_load_n(&p->ev_dropped_nats, __ATOMIC_RELAXED));
	family(b, "kvbmd_event_batches_dropped_total", "counter",
	       "kvbm-logical stream messages the NATS client refused (its buffer was full)", t,
	       &ln, (double)__atomic_load_n(&p->kvbm_dropped_nats, __ATOMIC_RELAXED));
	if (p->stats && kvbm_stats_latest(p->stats, &s) == 1) {
		family(b, "kvbm_allocation_rate", "gauge",
		       "Blocks allocated per second over the last stats interval", t, l,
		       s.allocation_rate);
		family(b, "kvbm_eviction_rate", "gauge",
		       "Blocks evicted per second over the last stats interval", t, l,
		       s.eviction_rate);
		family(b, "kvbm_match_hit_ratio", "gauge",
		       "Blocks returned per hash requested by matches, last stats interval", t, l,
		       s.match_hit_rate);
		family(b, "kvbm_scan_hit_ratio", "gauge",
		       "Blocks returned per hash requested by scans, last stats interval", t, l,
		       s.scan_hit_rate);
		family(b, "kvbm_allocation_rate_gradient", "gauge",
		       "Change of the allocation rate per second", t, l, s.allocation_gradient);
		family(b, "kvbm_eviction_rate_gradient", "gauge",
		       "Change of the eviction rate per second", t, l, s.eviction_gradient);
	}
}

int kvbmd_metrics_text(struct kvbmd *d, struct kvbmd_buf *out)
{
	struct kvbmd_buf parts[KVBMD_MAX_POOLS + 1];
	const char *texts[KVBMD_MAX_POOLS + 1];
	struct labels l;
	int r = 0;

	labels_get(d, &l);
	memset(parts, 0, sizeof(parts));
	kvbmd_buf_printf(&parts[0], "# HELP kvbmd_build_info kvbmd's version\n"
			 "# TYPE kvbmd_build_info gauge\nkvbmd_build_info");
	struct labels lv = l;
	lv.kv[lv.n][0] = "version";
	lv.kv[lv.n++][1] = kvbm_version();
	put_labels(&parts[0], NULL, &lv);
	kvbmd_buf_printf(&parts[0], " 1\n");
	if (d->cfg.nats_url[0])
		family(&parts[0], "kvbmd_nats_connections_total", "counter",
		       "Connections to the NATS server made (each followed by a snapshot)", NULL, &l,
		       (double)__atomic_load_n(&d->nats_reconnects, __ATOMIC_RELAXED));
	for (size_t i = 0; i < d->npools; i++)
		pool_text(&d->pools[i], &l, &parts[i + 1]);
	for (size_t i = 0; i <= d->npools; i++) {
		texts[i] = parts[i].p ? parts[i].p : "";
		if (parts[i].oom)
			r = -ENOMEM;
	}
	if (r == 0)
		r = kvbmd_expo_merge(texts, d->npools + 1, out);
	for (size_t i = 0; i <= d->npools; i++)
		kvbmd_buf_free(&parts[i]);
	return r;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
			     char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result r;

	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	r = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return r;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_len, void **state)
{
	struct kvbmd *d = cls;
	static char text_plain[] = "text/plain; charset=utf-8";

	(void)version;
	(void)upload;
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text_plain,
			     (char *)"only GET\n", 9, MHD_RESPMEM_PERSISTENT);
	/* the first call only announces the request; answer on the second */
	if (*state == NULL) {
		*state = d;
		return MHD_YES;
	}
	if (*upload_len)
		return MHD_NO;
	if (!strcmp(url, "/metrics")) {
		struct kvbmd_buf b = {0};
		if (kvbmd_metrics_text(d, &b) < 0 || !b.p) {
			kvbmd_buf_free(&b);
			return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, text_plain,
				     (char *)"out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
		}
		/* the response frees the text */
		return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len,
			     MHD_RESPMEM_MUST_FREE);
	}
	if (!strcmp(url, "/") || !strcmp(url, "/healthz")) {
		static char body[] = "kvbmd: metrics at /metrics\n";
		return reply(c, MHD_HTTP_OK, text_plain, body, sizeof(body) - 1,
			     MHD_RESPMEM_PERSISTENT);
	}
	return reply(c, MHD_HTTP_NOT_FOUND, text_plain, (char *)"not found: try /metrics\n", 24,
		     MHD_RESPMEM_PERSISTENT);
}

static void mhd_log(void *arg, const char *fmt, va_list ap)
{
	(void)arg;
	fprintf(stderr, "kvbmd: http: ");
	vfprintf(stderr, fmt, ap);
}

int kvbmd_http_start(struct kvbmd *d)
{
	d->http = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
					   MHD_USE_POLL,
				   0, NULL, NULL, handle, d,
				   /* first, or MHD warns that it may log elsewhere */
				   MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				   MHD_OPTION_LISTEN_SOCKET, d->listen_fd,
				   MHD_OPTION_CONNECTION_TIMEOUT, 10u,
				   MHD_OPTION_CONNECTION_LIMIT, 64u,
				   MHD_OPTION_END);
	if (!d->http) {
		fprintf(stderr, "kvbmd: cannot start the HTTP server\n");
		return -1;
	}
	return 0;
}

void kvbmd_http_stop(struct kvbmd *d)
{
	if (d->http) {
		/* closes the listening socket too, and waits for its thread */
		MHD_stop_daemon(d->http);
		d->http = NULL;
		d->listen_fd = -1;
	}
	if (d->listen_fd >= 0) {
		close(d->listen_fd);
		d->listen_fd = -1;
	}
}
