/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbmd - the kvbm service: creates or adopts a node's pools (one per tier),
 * reaps a dead attacher the moment it exits (a pidfd each), runs the stats
 * collector, serves Prometheus /metrics and publishes the pools' KV events
 * (vLLM's ZMQ format, Dynamo's event plane over NATS). Foreground; SIGTERM
 * or SIGINT stop it cleanly (pools closed, never destroyed), SIGHUP
 * re-reads the configuration file. docs/KVBMD.md is the operator's guide.
 *
 * Exit: 0 stopped by a signal; 1 a pool, the port or the system failed;
 * 2 bad flags or configuration.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kvbmd.h"

uint64_t kvbmd_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void kvbmd_log(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* one write per line: lines of two threads never interleave */
	fprintf(stderr, "kvbmd: %s\n", buf);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvbmd [--config FILE] [--pool NAME[,key=value...]]... [--listen HOST:PORT]\n"
		"             [--instance-id ID] [--worker-id ID] [--set key=value]... [--verbose]\n"
		"       kvbmd --version | --help\n"
		"\n"
		"Creates or adopts the pools (one per tier), reaps a dead attacher the moment it\n"
		"exits, and serves Prometheus metrics at http://HOST:PORT/metrics. Runs in the\n"
		"foreground: SIGTERM/SIGINT stop it (the pools stay), SIGHUP re-reads FILE.\n"
		"\n"
		"  --config FILE      `key = value` lines, then [pool NAME] sections\n"
		"  --pool NAME,...    a pool, with the keys of a section: tier=G1,blocks=65536,\n"
		"                     block_size=16,max_procs=16,mode=0660,group=G,backend=lineage,\n"
		"                     dup_policy=allow,reset_on_release=no,hugepages=no,create=yes\n"
		"  --listen HOST:PORT where /metrics is served (127.0.0.1:9470; port 0: any)\n"
		"  --instance-id ID, --worker-id ID   labels added to every sample\n"
		"  --set key=value    any global key (scan_interval_ms, reap_interval_ms,\n"
		"                     stats_interval_ms, stats_window, zmq_endpoint,\n"
		"                     zmq_replay_endpoint, zmq_topic, zmq_bind, dp_rank, zmq_hwm,\n"
		"                     zmq_buffer_steps, event_window_ms, event_batch_max, nats_url,\n"
		"                     nats_router_subject, nats_kvbm_subject, nats_reconnect_buffer,\n"
		"                     nats_reconnect_wait_ms);\n"
		"                     flags win over FILE\n"
		"  --verbose          log every exit seen\n"
		"\n"
		"Exit: 0 stopped by a signal, 1 failure (a pool, the port), 2 usage or config.\n"
		"docs/KVBMD.md has the details.\n");
}

/* What the flags said: applied on top of the file, at start and on SIGHUP. */
struct flags {
	const char *config;
	char *sets[64];
	size_t nsets;
	char *pools[KVBMD_MAX_POOLS + 1];
	size_t npools;
};

/* The file, then the flags. 0 or -1 with @err. */
static int config_build(const struct flags *fl, struct kvbmd_config *c, char *err, size_t len)
{
	kvbmd_config_init(c);
	if (fl->config && kvbmd_config_load(c, fl->config, err, len) < 0)
		return -1;
	for (size_t i = 0; i < fl->nsets; i++)
		if (kvbmd_config_set(c, fl->sets[i], "flag", err, len) < 0)
			return -1;
	for (size_t i = 0; i < fl->npools; i++)
		if (kvbmd_config_pool_arg(c, fl->pools[i], err, len) < 0)
			return -1;
	/* one `pool` label per tier: refused here, before anything is created,
	 * when the sections say so (an adopted pool's tier is checked once
	 * it is open) */
	for (size_t i = 0; i < c->npools; i++)
		for (size_t j = 0; j < i; j++)
			if ((c->pools[i].set & c->pools[j].set & KVBMD_SET_TIER) &&
			    !strcmp(c->pools[i].cfg.tier, c->pools[j].cfg.tier)) {
				snprintf(err, len, "pools %s (%s) and %s (%s) have the same tier %s: "
					 "give each its own", c->pools[j].name, c->pools[j].where,
					 c->pools[i].name, c->pools[i].where, c->pools[i].cfg.tier);
				return -1;
			}
	if (c->npools == 0) {
		snprintf(err, len, "no pool: give a [pool NAME] section or --pool NAME");
		return -1;
	}
	return 0;
}

static void flags_free(struct flags *fl)
{
	for (size_t i = 0; i < fl->nsets; i++)
		free(fl->sets[i]);
	fl->nsets = 0;
}

static int add_set(struct flags *fl, const char *key, const char *val)
{
	char *s;

	if (fl->nsets == sizeof(fl->sets) / sizeof(fl->sets[0]))
		return -1;
	if (asprintf(&s, "%s=%s", key, val) < 0)
		return -1;
	fl->sets[fl->nsets++] = s;
	return 0;
}

/* systemd's readiness protocol (Type=notify) without libsystemd: one
 * datagram to $NOTIFY_SOCKET; nothing when it is not set. */
static void sd_notify_msg(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, path, strlen(path));
	if (sa.sun_path[0] == '@') /* abstract namespace */
		sa.sun_path[0] = '\0';
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path))) < 0)
		kvbmd_log("sd_notify: %s", strerror(errno));
	close(fd);
}

/* New publishing keys (or worker_id, which the events carry): the
 * publishers stop (their last batches sent) and start again on the new
 * endpoints, each pool with a snapshot (new endpoints, new subscribers;
 * the ZMQ seq goes on). When the new ones cannot start (a port taken),
 * the old ones start again. */
static void reload_publishing(struct kvbmd *d, const struct kvbmd_config *c)
{
	struct kvbmd_config *old = malloc(sizeof(*old));

	if (!old) {
		kvbmd_log("SIGHUP: out of memory: publishing unchanged");
		return;
	}
	*old = d->cfg;
	kvbmd_publish_stop(d);
	kvbmd_config_publish_copy(&d->cfg, c);
	snprintf(d->cfg.worker_id, sizeof(d->cfg.worker_id), "%s", c->worker_id);
	d->pub_resume = 0;
	if (kvbmd_publish_start(d) == 0) {
		kvbmd_log("SIGHUP: publishing restarted: zmq '%s' replay '%s' topic '%s', nats '%s'",
			  d->cfg.zmq_endpoint, d->cfg.zmq_replay_endpoint, d->cfg.zmq_topic,
			  d->cfg.nats_url);
	} else {
		kvbmd_config_publish_copy(&d->cfg, old);
		if (kvbmd_publish_start(d) == 0)
			kvbmd_log("SIGHUP: the new publishing keys failed (above): keeping the "
				  "running ones");
		else
			kvbmd_log("SIGHUP: the new publishing keys failed and the running ones "
				  "could not start again: publishing stopped");
	}
	free(old);
}

/* SIGHUP: labels, intervals and the publishing keys take effect; the
 * pools and the port stay as they are (changing them needs a restart,
 * which says so). */
static void reload(struct kvbmd *d, const struct flags *fl)
{
	struct kvbmd_config *c = malloc(sizeof(*c));
	char err[KVBMD_ERR_MAX];

	sd_notify_msg("RELOADING=1");
	if (!c || config_build(fl, c, err, sizeof(err)) < 0) {
		kvbmd_log("SIGHUP: %s; keeping the running configuration",
			  c ? err : "out of memory");
		free(c);
		sd_notify_msg("READY=1");
		return;
	}
	int pools_changed = c->npools != d->cfg.npools;
	for (size_t i = 0; !pools_changed && i < c->npools; i++)
		pools_changed = strcmp(c->pools[i].name, d->cfg.pools[i].name) ||
				memcmp(&c->pools[i].cfg, &d->cfg.pools[i].cfg, sizeof(c->pools[i].cfg)) ||
				c->pools[i].create != d->cfg.pools[i].create;
	if (pools_changed)
		kvbmd_log("SIGHUP: the pools changed: ignored until a restart");
	if (strcmp(c->listen, d->cfg.listen))
		kvbmd_log("SIGHUP: listen changed: ignored until a restart");
	if (c->stats_window != d->cfg.stats_window)
		kvbmd_log("SIGHUP: stats_window changed: ignored until a restart");
	if (kvbmd_config_publish_differs(&d->cfg, c) || strcmp(c->worker_id, d->cfg.worker_id))
		reload_publishing(d, c);
	pthread_mutex_lock(&d->lock);
	snprintf(d->instance_id, sizeof(d->instance_id), "%s", c->instance_id);
	snprintf(d->worker_id, sizeof(d->worker_id), "%s", c->worker_id);
	pthread_mutex_unlock(&d->lock);
	d->cfg.scan_ms = c->scan_ms;
	d->cfg.reap_ms = c->reap_ms;
	d->cfg.stats_ms = c->stats_ms;
	snprintf(d->cfg.instance_id, sizeof(d->cfg.instance_id), "%s", c->instance_id);
	snprintf(d->cfg.worker_id, sizeof(d->cfg.worker_id), "%s", c->worker_id);
	kvbmd_log("SIGHUP: reloaded (instance_id '%s', worker_id '%s', scan %u ms, reap %u ms, "
		  "stats %u ms)", c->instance_id, c->worker_id, c->scan_ms, c->reap_ms, c->stats_ms);
	free(c);
	sd_notify_msg("READY=1");
}

static int ms_until(uint64_t deadline, uint64_t now)
{
	return deadline <= now ? 0 : (int)((deadline - now + 999999) / 1000000);
}

/* Until SIGTERM or SIGINT. Returns the exit code. */
static int run(struct kvbmd *d, const struct flags *fl, int sfd)
{
	static struct pollfd fds[1 + KVBMD_MAX_POOLS * KVBM_MAX_PROCS];
	static uint32_t owner[KVBMD_MAX_POOLS * KVBM_MAX_PROCS];
	uint64_t now = kvbmd_now_ns();
	uint64_t next_scan = now, next_reap = now + d->cfg.reap_ms * 1000000ull;
	uint64_t next_stats = now;

	for (;;) {
		now = kvbmd_now_ns();
		if (now >= next_scan) {
			kvbmd_reaper_scan(d);
			next_scan = now + d->cfg.scan_ms * 1000000ull;
		}
		if (now >= next_reap) {
			kvbmd_reaper_reap_all(d);
			next_reap = now + d->cfg.reap_ms * 1000000ull;
		}
		if (now >= next_stats) {
			for (size_t i = 0; i < d->npools; i++)
				if (d->pools[i].stats)
					kvbm_stats_sample(d->pools[i].stats);
			next_stats = now + d->cfg.stats_ms * 1000000ull;
		}
		int timeout = ms_until(next_scan, now);
		if (ms_until(next_reap, now) < timeout)
			timeout = ms_until(next_reap, now);
		if (ms_until(next_stats, now) < timeout)
			timeout = ms_until(next_stats, now);
		int retry = kvbmd_reaper_retry(d, now);
		if (retry >= 0 && retry < timeout)
			timeout = retry;
		int pin = kvbmd_pins_tick(d, now);
		if (pin >= 0 && pin < timeout)
			timeout = pin;

		fds[0].fd = sfd;
		fds[0].events = POLLIN;
		fds[0].revents = 0;
		size_t n = 1 + kvbmd_reaper_fds(d, fds + 1, owner);
		int r = poll(fds, n, timeout);
		if (r < 0 && errno != EINTR) {
			kvbmd_log("poll: %s", strerror(errno));
			return KVBMD_EXIT_FAIL;
		}
		if (r <= 0)
			continue;
		/* exits first: they are what the latency target is about */
		for (size_t i = 1; i < n; i++)
			if (fds[i].revents)
				kvbmd_reaper_exited(d, owner[i - 1]);
		if (fds[0].revents) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
				continue;
			if (si.ssi_signo == SIGHUP) {
				reload(d, fl);
				continue;
			}
			kvbmd_log("%s: stopping", strsignal((int)si.ssi_signo));
			return KVBMD_EXIT_OK;
		}
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"pool", required_argument, NULL, 'p'},
		{"listen", required_argument, NULL, 'l'},
		{"instance-id", required_argument, NULL, 'i'},
		{"worker-id", required_argument, NULL, 'w'},
		{"set", required_argument, NULL, 's'},
		{"verbose", no_argument, NULL, 'v'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static struct kvbmd d;
	struct flags fl;
	char err[KVBMD_ERR_MAX];
	unsigned port = 0;
	int c, rc = KVBMD_EXIT_FAIL;

	memset(&fl, 0, sizeof(fl));
	d.listen_fd = -1;
	while ((c = getopt_long(argc, argv, "c:p:l:i:w:s:vVh", opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'c':
			fl.config = optarg;
			break;
		case 'p':
			if (fl.npools == KVBMD_MAX_POOLS)
				bad = 1;
			else
				fl.pools[fl.npools++] = optarg;
			break;
		case 'l':
			bad = add_set(&fl, "listen", optarg);
			break;
		case 'i':
			bad = add_set(&fl, "instance_id", optarg);
			break;
		case 'w':
			bad = add_set(&fl, "worker_id", optarg);
			break;
		case 's':
			bad = fl.nsets == sizeof(fl.sets) / sizeof(fl.sets[0]) ||
			      !(fl.sets[fl.nsets++] = strdup(optarg));
			break;
		case 'v':
			d.verbose = 1;
			break;
		case 'V':
			printf("kvbmd kvbm-shm %s\n", kvbm_version());
			flags_free(&fl);
			return 0;
		case 'h':
			usage(stdout);
			flags_free(&fl);
			return 0;
		default:
			usage(stderr);
			flags_free(&fl);
			return KVBMD_EXIT_CONFIG;
		}
		if (bad) {
			fprintf(stderr, "kvbmd: too many flags\n");
			flags_free(&fl);
			return KVBMD_EXIT_CONFIG;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvbmd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		flags_free(&fl);
		return KVBMD_EXIT_CONFIG;
	}
	if (config_build(&fl, &d.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "kvbmd: %s\n", err);
		flags_free(&fl);
		return KVBMD_EXIT_CONFIG;
	}
	/* the signals go to the signalfd, in every thread: block them before
	 * libmicrohttpd's thread inherits the mask */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	/* a scraper hanging up mid-response must not kill us */
	signal(SIGPIPE, SIG_IGN);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0) {
		fprintf(stderr, "kvbmd: signalfd: %s\n", strerror(errno));
		flags_free(&fl);
		return KVBMD_EXIT_FAIL;
	}
	pthread_mutex_init(&d.lock, NULL);
	snprintf(d.instance_id, sizeof(d.instance_id), "%s", d.cfg.instance_id);
	snprintf(d.worker_id, sizeof(d.worker_id), "%s", d.cfg.worker_id);
	/* the port before the pools: a second kvbmd started by mistake stops
	 * here without attaching anything */
	if (kvbmd_http_listen(&d, &port) < 0)
		goto out;
	if (kvbmd_pools_open(&d) < 0)
		goto out;
	d.pub_resume = 1;
	if (kvbmd_publish_start(&d) < 0)
		goto out_pools;
	if (kvbmd_http_start(&d) < 0)
		goto out_pub;
	/* tests and scripts read the port from this line (--listen HOST:0) */
	kvbmd_log("listening on port %u: http://%.*s:%u/metrics, %zu pool%s", port,
		  (int)(strrchr(d.cfg.listen, ':') - d.cfg.listen), d.cfg.listen, port, d.npools,
		  d.npools == 1 ? "" : "s");
	sd_notify_msg("READY=1");
	rc = run(&d, &fl, sfd);
	sd_notify_msg("STOPPING=1");
	kvbmd_http_stop(&d);
out_pub:
	kvbmd_publish_stop(&d);
out_pools:
	kvbmd_reaper_close(&d);
	kvbmd_pools_close(&d);
out:
	kvbmd_http_stop(&d);
	close(sfd);
	flags_free(&fl);
	if (rc == KVBMD_EXIT_OK)
		kvbmd_log("stopped; the pools stay");
	return rc;
}
