/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_kvbmd.c - kvbmd, the service, run as an operator runs it: the real
 * binary from $KVBM_BIN on a loopback port it picks (--listen 127.0.0.1:0,
 * the port read back from its log), /metrics fetched with a plain socket,
 * pools opened by this process alongside it. Correctness only: the reaping
 * latency is kvbm-reap-bench's (make reap-bench), not a timed test.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "../shm/failpoint.h"
#include "../lib/pool.h"

static char text[262144];

struct kd {
	pid_t pid;
	unsigned port;
	char log[512];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void nap_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* The whole of file @path into text[] (NUL-terminated). */
static const char *slurp(const char *path)
{
	int fd = open(path, O_RDONLY);
	ssize_t n = fd < 0 ? 0 : read(fd, text, sizeof(text) - 1);

	text[n > 0 ? n : 0] = '\0';
	if (fd >= 0)
		close(fd);
	return text;
}

static void write_file(const char *path, const char *content)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	ck_assert_int_ge(fputs(content, f), 0);
	ck_assert_int_eq(fclose(f), 0);
}

/* A file in the test's private segment directory. */
static const char *t_file(char *buf, size_t len, const char *what)
{
	static unsigned seq;

	snprintf(buf, len, "%s/kvbmd-%d-%u.%s", getenv("KVBM_SHM_DIR"), getpid(), seq++, what);
	return buf;
}

/* Starts kvbmd with @argv (NULL-terminated, without argv[0]), its stdout
 * and stderr into k->log. Returns 0 once it listens, or its exit code when
 * it stops first. */
static int kd_start(struct kd *k, const char *const *args)
{
	const char *argv[32];
	char path[512];
	int n = 0;

	snprintf(path, sizeof(path), "%s/kvbmd",
		 getenv("KVBM_BIN") ? getenv("KVBM_BIN") : "build/bin");
	if (!k->log[0])
		t_file(k->log, sizeof(k->log), "log");
	argv[n++] = "kvbmd";
	while (args && *args && n < 31)
		argv[n++] = *args++;
	argv[n] = NULL;
	/* emptied here, not in the child: a reused log's old "listening"
	 * line must not be read before the child truncates it */
	write_file(k->log, "");
	k->pid = fork();
	ck_assert_int_ge(k->pid, 0);
	if (k->pid == 0) {
		int fd = open(k->log, O_WRONLY | O_APPEND);
		if (fd < 0)
			_exit(126);
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		int st;
		const char *l = strstr(slurp(k->log), "listening on port ");

		if (l) {
			k->port = (unsigned)atoi(l + strlen("listening on port "));
			return 0;
		}
		if (waitpid(k->pid, &st, WNOHANG) == k->pid) {
			k->pid = 0;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		nap_ms(10);
	}
	kill(k->pid, SIGKILL);
	ck_abort_msg("kvbmd did not start within 10 s: %s", slurp(k->log));
	return -1;
}

/* Signals kvbmd and returns its exit code. */
static int kd_stop(struct kd *k, int sig)
{
	int rc;

	if (k->pid <= 0)
		return -1;
	kill(k->pid, sig);
	rc = t_wait(k->pid);
	k->pid = 0;
	return rc;
}

/* GET @path from kvbmd: the body into text[], the status returned. */
static int http_get(const struct kd *k, const char *path)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)k->port)};
	char req[256];
	size_t got = 0;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0), status = -1;

	ck_assert_int_ge(fd, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect :%u: %s",
		      k->port, strerror(errno));
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	ck_assert_int_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while (got < sizeof(text) - 1 && (n = read(fd, text + got, sizeof(text) - 1 - got)) > 0)
		got += (size_t)n;
	close(fd);
	text[got] = '\0';
	sscanf(text, "HTTP/1.%*d %d", &status);
	char *body = strstr(text, "\r\n\r\n");
	if (body)
		memmove(text, body + 4, strlen(body + 4) + 1);
	return status;
}

/* The value of the sample whose line starts with @series (name and
 * labels, e.g. `kvbm_allocations_total{pool="G1"`), or -1 when absent. */
static double sample(const char *series)
{
	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (!strncmp(l, series, strlen(series))) {
			const char *sp = strchr(l, ' ');
			return sp ? atof(sp + 1) : -1;
		}
	}
	return -1;
}

static double scrape(const struct kd *k, const char *series)
{
	ck_assert_int_eq(http_get(k, "/metrics"), 200);
	return sample(series);
}

/* Scrapes until @series reads @want (bounded: 5 s). */
static void scrape_until(const struct kd *k, const char *series, double want)
{
	double v = -1;

	for (int i = 0; i < 500 && (v = scrape(k, series)) != want; i++)
		nap_ms(10);
	ck_assert_msg(v == want, "%s: %g, want %g", series, v, want);
}

/* No family has two HELP or two TYPE lines (the text format's rule). */
static void assert_families_once(void)
{
	char *copy = strdup(text), *save = NULL;
	char seen[256][128];
	size_t n = 0;

	ck_assert_ptr_nonnull(copy);
	for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char name[128];
		if (strncmp(l, "# HELP ", 7) || sscanf(l + 7, "%127s", name) != 1)
			continue;
		for (size_t i = 0; i < n; i++)
			ck_assert_msg(strcmp(seen[i], name), "family %s appears twice", name);
		ck_assert_uint_lt(n, 256);
		snprintf(seen[n++], sizeof(seen[0]), "%s", name);
	}
	free(copy);
	ck_assert_uint_gt(n, 20);
}

/* A pool section for @name in tier @tier. */
static void pool_arg(char *buf, size_t len, const char *name, const char *tier)
{
	snprintf(buf, len, "%s,tier=%s,blocks=64,block_size=4", name, tier);
}

START_TEST(test_kvbmd_version_and_help)
{
	char out[4096];

	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbmd", "--version", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "kvbmd kvbm-shm 0."));
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbmd", "--help", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "--config FILE"));
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbmd", "--bogus", NULL), 2);
	/* no pool at all is a configuration error, not a daemon doing nothing */
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbmd", NULL), 2);
}
END_TEST

START_TEST(test_kvbmd_metrics_follow_the_pools)
{
	T_NAME(g1);
	T_NAME(g2);
	char conf[512], body[1024];
	struct kd k = {0};

	t_file(conf, sizeof(conf), "conf");
	snprintf(body, sizeof(body),
		 "# two tiers, labels for the cluster\n"
		 "listen = 127.0.0.1:0\n"
		 "instance_id = node-7   # the node\n"
		 "worker_id = 3\n"
		 "stats_interval_ms = 50\n"
		 "\n[pool %s]\ntier = G1\nblocks = 64\nblock_size = 4\n"
		 "[pool %s]\ntier = G2\nblocks = 32\nblock_size = 4\nbackend = lru\n",
		 g1, g2);
	write_file(conf, body);
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--config", conf, NULL}), 0);

	const char *alloc1 = "kvbm_allocations_total{pool=\"G1\",instance_id=\"node-7\",worker_id=\"3\"}";
	const char *alloc2 = "kvbm_allocations_total{pool=\"G2\",instance_id=\"node-7\",worker_id=\"3\"}";
	ck_assert(scrape(&k, alloc1) == 0);
	assert_families_once();
	ck_assert(sample(alloc2) == 0);
	ck_assert(sample("kvbm_blocks{pool=\"G1\"") == 64);
	ck_assert(sample("kvbm_blocks{pool=\"G2\"") == 32);
	ck_assert(sample("kvbm_attached_processes{pool=\"G1\"") == 1); /* kvbmd */
	ck_assert(sample("kvbm_poisoned{pool=\"G1\"") == 0);
	ck_assert(sample("kvbm_reset_pool_size{pool=\"G1\"") == 64);
	ck_assert(sample("kvbm_index_full_total{pool=\"G2\"") == 0);
	ck_assert(sample("kvbm_recounts_deferred_total{pool=\"G2\"") == 0);
	ck_assert(sample("kvbm_reaps_total{pool=\"G1\"") == 0);
	ck_assert(sample("kvbm_recoveries_total{pool=\"G1\"") == 0);
	ck_assert(sample("kvbmd_build_info{instance_id=\"node-7\"") == 1);

	/* this process works on G1: G1's samples move, G2's do not */
	struct kvbm_pool *p;
	struct kvbm_plh h[3];
	struct kvbm_block b[3];
	ck_assert_int_eq(kvbm_pool_open(g1, NULL, 0, &p), 0);
	t_seq_hashes(100, 3, 4, h);
	t_register(p, h, 3, b);
	ck_assert(scrape(&k, alloc1) == 3);
	ck_assert(sample(alloc2) == 0);
	ck_assert(sample("kvbm_registrations_total{pool=\"G1\"") == 3);
	ck_assert(sample("kvbm_inflight_immutable{pool=\"G1\"") == 3);
	ck_assert(sample("kvbm_attached_processes{pool=\"G1\"") == 2);
	ck_assert(sample("kvbm_attached_processes{pool=\"G2\"") == 1);
	t_release(p, b, 3);
	ck_assert_int_eq(kvbm_match_blocks(p, h, 3, b), 3);
	ck_assert(scrape(&k, "kvbm_match_blocks_returned_total{pool=\"G1\"") == 3);
	t_release(p, b, 3);
	ck_assert(scrape(&k, "kvbm_inactive_pool_size{pool=\"G1\"") == 3);
	/* the stats collector samples every 50 ms: a hit ratio shows up */
	for (int i = 0; i < 100 && scrape(&k, "kvbm_match_hit_ratio{pool=\"G1\"") < 0; i++)
		nap_ms(20);
	ck_assert(sample("kvbm_match_hit_ratio{pool=\"G1\"") >= 0);
	ck_assert(sample("kvbm_allocation_rate{pool=\"G2\"") >= 0);
	assert_families_once();
	ck_assert_int_eq(kvbm_pool_close(p), 0);

	ck_assert_int_eq(http_get(&k, "/nothing"), 404);
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	kvbm_pool_destroy(g1, 0);
	kvbm_pool_destroy(g2, 0);
}
END_TEST

START_TEST(test_kvbmd_unknown_config_key_names_file_and_line)
{
	T_NAME(name);
	char conf[512], body[512], want[700];
	struct kd k = {0};

	t_file(conf, sizeof(conf), "conf");
	snprintf(body, sizeof(body), "listen = 127.0.0.1:0\n\n[pool %s]\ntier = G1\nblokcs = 64\n",
		 name);
	write_file(conf, body);
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--config", conf, NULL}), 2);
	snprintf(want, sizeof(want), "%s:5: unknown key 'blokcs' in [pool %s]", conf, name);
	ck_assert_msg(strstr(slurp(k.log), want), "log: %s", text);
	/* nothing was created on a bad configuration */
	struct kvbm_pool *p;
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), -ENOENT);

	/* a global key, a bad value, a flag */
	write_file(conf, "listen = 127.0.0.1:0\ninstanceid = x\n");
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--config", conf, NULL}), 2);
	snprintf(want, sizeof(want), "%s:2: unknown key 'instanceid'", conf);
	ck_assert_msg(strstr(slurp(k.log), want), "log: %s", text);
	snprintf(body, sizeof(body), "[pool %s]\nblocks = many\n", name);
	write_file(conf, body);
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--config", conf, NULL}), 2);
	snprintf(want, sizeof(want), "%s:2: bad value 'many' for blocks", conf);
	ck_assert_msg(strstr(slurp(k.log), want), "log: %s", text);
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", "x,colour=red", NULL}), 2);
	ck_assert_ptr_nonnull(strstr(slurp(k.log), "unknown key 'colour' in [pool x]"));
}
END_TEST

/* Listens on a loopback port the kernel picks: the port, the socket in *fd. */
static unsigned hold_port(int *fd)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);

	*fd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(*fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(*fd, 1), 0);
	ck_assert_int_eq(getsockname(*fd, (struct sockaddr *)&sa, &sl), 0);
	return ntohs(sa.sin_port);
}

START_TEST(test_kvbmd_port_in_use_is_an_error)
{
	T_NAME(name);
	char listen_at[64], pool[256];
	struct kd k = {0};
	int fd;

	snprintf(listen_at, sizeof(listen_at), "127.0.0.1:%u", hold_port(&fd));
	pool_arg(pool, sizeof(pool), name, "G1");
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", pool, "--listen", listen_at,
							      NULL}),
			 1);
	ck_assert_msg(strstr(slurp(k.log), "cannot listen on") && strstr(text, "in use"),
		      "log: %s", text);
	/* the port is checked first: no pool was created */
	struct kvbm_pool *p;
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), -ENOENT);
	close(fd);
}
END_TEST

static void stop_keeps_pool(int sig)
{
	T_NAME(name);
	char pool[256];
	struct kd k = {0};
	struct kvbm_pool *p;
	struct kvbm_pool_info info;

	pool_arg(pool, sizeof(pool), name, "G3");
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", pool, "--listen",
							      "127.0.0.1:0", NULL}),
			 0);
	ck_assert(scrape(&k, "kvbm_blocks{pool=\"G3\"}") == 64);
	ck_assert_int_eq(kd_stop(&k, sig), 0);
	ck_assert_ptr_nonnull(strstr(slurp(k.log), "stopped; the pools stay"));
	/* the pool outlives kvbmd, valid, and kvbmd detached from it */
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	ck_assert_int_eq(kvbm_pool_info(p, &info), 0);
	ck_assert_uint_eq(info.procs_attached, 1);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}

START_TEST(test_kvbmd_sigterm_exits_clean_and_pools_stay)
{
	stop_keeps_pool(SIGTERM);
}
END_TEST

START_TEST(test_kvbmd_sigint_exits_clean_and_pools_stay)
{
	stop_keeps_pool(SIGINT);
}
END_TEST

START_TEST(test_kvbmd_adopts_an_existing_pool_and_refuses_a_mismatch)
{
	T_NAME(name);
	char pool[256];
	struct kd k = {0};
	struct kvbm_pool *p = t_pool(name, 128); /* block_size 4, tier G1 */

	/* adopted as it is: no sizes given */
	snprintf(pool, sizeof(pool), "%s,create=no", name);
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", pool, "--listen",
							      "127.0.0.1:0", NULL}),
			 0);
	ck_assert_ptr_nonnull(strstr(slurp(k.log), "adopted"));
	ck_assert(scrape(&k, "kvbm_blocks{pool=\"G1\"}") == 128);
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	/* a section that disagrees is an error naming the key */
	snprintf(pool, sizeof(pool), "%s,blocks=256", name);
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", pool, "--listen",
							      "127.0.0.1:0", NULL}),
			 1);
	ck_assert_msg(strstr(slurp(k.log), "has another blocks"), "log: %s", text);
	t_done(p, name);
	/* create=no and no pool */
	snprintf(pool, sizeof(pool), "%s,create=no", name);
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", pool, "--listen",
							      "127.0.0.1:0", NULL}),
			 1);
	ck_assert_msg(strstr(slurp(k.log), "kvbmd only adopts it"), "log: %s", text);
}
END_TEST

START_TEST(test_kvbmd_refuses_two_pools_of_one_tier)
{
	T_NAME(a);
	T_NAME(b);
	char pa[256], pb[256];
	struct kd k = {0};
	struct kvbm_pool *p;

	/* one `pool` label per tier, or a family would get two equal samples */
	pool_arg(pa, sizeof(pa), a, "G2");
	pool_arg(pb, sizeof(pb), b, "G2");
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", pa, "--pool", pb, "--listen",
							      "127.0.0.1:0", NULL}),
			 2);
	ck_assert_msg(strstr(slurp(k.log), "have the same tier G2"), "log: %s", text);
	/* a configuration error: nothing was created */
	ck_assert_int_eq(kvbm_pool_open(a, NULL, 0, &p), -ENOENT);
	/* an adopted pool's tier is known once open: exit 1, kvbmd detached */
	p = t_pool(a, 32); /* tier G1 */
	snprintf(pa, sizeof(pa), "%s,create=no", a);
	pool_arg(pb, sizeof(pb), b, "G1");
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", pa, "--pool", pb, "--listen",
							      "127.0.0.1:0", NULL}),
			 1);
	ck_assert_msg(strstr(slurp(k.log), "have the same tier G1"), "log: %s", text);
	struct kvbm_pool_info info;
	ck_assert_int_eq(kvbm_pool_info(p, &info), 0);
	ck_assert_uint_eq(info.procs_attached, 1);
	t_done(p, a);
	kvbm_pool_destroy(b, 0);
}
END_TEST

START_TEST(test_kvbmd_sighup_reloads_labels)
{
	T_NAME(name);
	char conf[512], body[512];
	struct kd k = {0};

	t_file(conf, sizeof(conf), "conf");
	snprintf(body, sizeof(body), "listen = 127.0.0.1:0\ninstance_id = before\n[pool %s]\n"
		 "tier = G2\nblocks = 16\nblock_size = 4\n", name);
	write_file(conf, body);
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--config", conf, NULL}), 0);
	ck_assert(scrape(&k, "kvbm_blocks{pool=\"G2\",instance_id=\"before\"}") == 16);
	snprintf(body, sizeof(body), "listen = 127.0.0.1:0\ninstance_id = after\nworker_id = w9\n"
		 "[pool %s]\ntier = G2\nblocks = 16\nblock_size = 4\n", name);
	write_file(conf, body);
	kill(k.pid, SIGHUP);
	scrape_until(&k, "kvbm_blocks{pool=\"G2\",instance_id=\"after\",worker_id=\"w9\"}", 16);
	/* a pool's size cannot change under its users: said, not done */
	snprintf(body, sizeof(body), "listen = 127.0.0.1:0\ninstance_id = after\nworker_id = w9\n"
		 "[pool %s]\ntier = G2\nblocks = 32\nblock_size = 4\n", name);
	write_file(conf, body);
	kill(k.pid, SIGHUP);
	for (int i = 0; i < 500 && !strstr(slurp(k.log), "pools changed"); i++)
		nap_ms(10);
	ck_assert_msg(strstr(text, "the pools changed: ignored until a restart"), "log: %s", text);
	ck_assert(scrape(&k, "kvbm_blocks{pool=\"G2\",instance_id=\"after\"") == 16);
	/* a broken file on SIGHUP keeps what runs */
	write_file(conf, "listen = 127.0.0.1:0\nbogus = 1\n");
	kill(k.pid, SIGHUP);
	for (int i = 0; i < 500 && !strstr(slurp(k.log), "keeping the running"); i++)
		nap_ms(10);
	ck_assert_msg(strstr(text, "unknown key 'bogus'"), "log: %s", text);
	ck_assert(scrape(&k, "kvbm_blocks{pool=\"G2\",instance_id=\"after\"") == 16);
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/*
 * The pool mutex's hold time, from every process's critical sections, is
 * a Prometheus histogram on /metrics that promtool accepts: a registrar
 * stopped inside its critical section (SIGSTOP at a failpoint under the
 * mutex, for 50 ms) is a hold past the last bucket, and the sum is at
 * least that long; the short holds of this process fill the first ones.
 */
START_TEST(test_kvbmd_metrics_mutex_hold_histogram)
{
	T_NAME(name);
	char pool[256], path[512], cmd[700];
	struct kd k = {0};
	struct kvbm_pool *p;
	struct kvbm_block b[4];
	struct kvbm_plh h[4];
	int st;

	pool_arg(pool, sizeof(pool), name, "G1");
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", pool, "--listen",
							      "127.0.0.1:0", NULL}),
			 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	pid_t child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		struct kvbm_pool *cp;
		T_CHILD_CHECK(kvbm_pool_open(name, NULL, 0, &cp) == 0, 3);
		T_CHILD_CHECK(kvbm_allocate_blocks(cp, 4, b, NULL, NULL) == 0, 4);
		t_seq_hashes(31, 4, 4, h);
		for (int i = 0; i < 4; i++)
			T_CHILD_CHECK(kvbm_stage_block(cp, &b[i], h[i], 4) == 0, 5);
		kvbm_fp_arm("events.append.written:1=stop"); /* under the mutex */
		T_CHILD_CHECK(kvbm_register_blocks(cp, b, 4) == 0, 6);
		T_CHILD_CHECK(kvbm_release_blocks(cp, b, 4) == 0, 7);
		kvbm_pool_close(cp);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(child, &st, WUNTRACED), child);
	ck_assert(WIFSTOPPED(st));
	nap_ms(50);
	kill(child, SIGCONT);
	ck_assert_int_eq(t_wait(child), 0);
	for (int r = 0; r < 20; r++) { /* short holds */
		ck_assert_int_eq(kvbm_allocate_blocks(p, 4, b, NULL, NULL), 0);
		t_release(p, b, 4);
	}

	double count = scrape(&k, "kvbm_mutex_hold_seconds_count{pool=\"G1\"}");
	double sum = sample("kvbm_mutex_hold_seconds_sum{pool=\"G1\"}");
	double inf = sample("kvbm_mutex_hold_seconds_bucket{pool=\"G1\",le=\"+Inf\"}");
	double last = sample("kvbm_mutex_hold_seconds_bucket{pool=\"G1\",le=\"0.000256\"}");
	double first = sample("kvbm_mutex_hold_seconds_bucket{pool=\"G1\",le=\"1e-06\"}");
	ck_assert_msg(count >= 40 && inf == count, "count %g, +Inf %g", count, inf);
	ck_assert_msg(last >= 0 && last <= count - 1, "256 us bucket %g of %g", last, count);
	ck_assert_msg(first >= 0 && first <= last, "1 us bucket %g", first);
	ck_assert_msg(sum >= 0.05 && sum < 5, "sum %g s", sum);
	/* the library's own struct says the same */
	struct kvbm_metrics m;
	ck_assert_int_eq(kvbm_metrics_snapshot(p, &m), 0);
	ck_assert_uint_ge(m.mutex_hold_count, (uint64_t)count);
	ck_assert_uint_ge(m.mutex_hold_ns, 50000000);
	for (int i = 1; i < 5; i++)
		ck_assert_uint_le(m.mutex_hold_le[i - 1], m.mutex_hold_le[i]);
	ck_assert_uint_lt(m.mutex_hold_le[4], m.mutex_hold_count);
	if (system("command -v promtool >/dev/null 2>&1") == 0) {
		ck_assert_int_eq(http_get(&k, "/metrics"), 200);
		write_file(t_file(path, sizeof(path), "prom"), text);
		snprintf(cmd, sizeof(cmd), "promtool check metrics < '%s' >/dev/null", path);
		ck_assert_msg(system(cmd) == 0, "promtool check metrics failed on kvbmd's /metrics");
		unlink(path);
	}
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	t_done(p, name);
}
END_TEST

/*
 * The periodic reap is turned off (an hour): only kvbmd's pidfd watch can
 * give the killed holder's blocks back, and this process never takes the
 * mutex while it waits (kvbm_available_blocks reads a counter), so no
 * other reaper runs. Generous bound: correctness, not speed.
 */
/* kvbmd on pool @name (tier G1) that reaps only on pidfd events and scans
 * for attachers every 10 ms; @pool receives its --pool argument. */
static void kd_start_quiet(struct kd *k, const char *name, char *pool, size_t len)
{
	pool_arg(pool, len, name, "G1");
	ck_assert_int_eq(kd_start(k, (const char *const[]){"--pool", pool, "--listen",
							     "127.0.0.1:0", "--set",
							     "reap_interval_ms=3600000", "--set",
							     "scan_interval_ms=10", NULL}),
			 0);
}

START_TEST(test_kvbmd_reaps_a_killed_holder_at_once)
{
	T_NAME(name);
	char pool[256];
	struct kd k = {0};
	struct kvbm_pool *p;
	int ready[2];
	char c;

	kd_start_quiet(&k, name, pool, sizeof(pool));
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	ck_assert_int_eq(pipe(ready), 0);
	pid_t holder = fork();
	if (holder == 0) {
		struct kvbm_pool *hp;
		struct kvbm_block b[8];
		struct kvbm_plh h[4];

		T_CHILD_CHECK(kvbm_pool_open(name, NULL, 0, &hp) == 0, 3);
		T_CHILD_CHECK(kvbm_allocate_blocks(hp, 8, b, NULL, NULL) == 0, 4);
		t_seq_hashes(7, 4, 4, h);
		for (int i = 0; i < 4; i++)
			T_CHILD_CHECK(kvbm_stage_block(hp, &b[i], h[i], 4) == 0, 5);
		T_CHILD_CHECK(kvbm_register_blocks(hp, b, 4) == 0, 6);
		t_send(ready[1], "r", 1);
		for (;;)
			pause();
	}
	close(ready[1]);
	ck_assert_int_eq(t_recv(ready[0], &c, 1), 0);
	close(ready[0]);
	ck_assert_int_eq(kvbm_available_blocks(p), 64 - 8);
	scrape_until(&k, "kvbmd_watched_processes{pool=\"G1\"}", 2); /* us and the holder */

	kill(holder, SIGKILL);
	long avail = 0;
	for (int i = 0; i < 2000 && (avail = kvbm_available_blocks(p)) != 64; i++)
		nap_ms(1);
	ck_assert_msg(avail == 64, "the killed holder's blocks are not back after 2 s: %ld", avail);
	ck_assert_int_eq(t_wait(holder), 128 + SIGKILL);
	ck_assert(scrape(&k, "kvbmd_pidfd_reaps_total{pool=\"G1\"}") == 1);
	ck_assert(sample("kvbm_reaps_total{pool=\"G1\"}") == 1);
	scrape_until(&k, "kvbmd_watched_processes{pool=\"G1\"}", 1);
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	t_done(p, name);
}
END_TEST

/* A pin's deadline on a quiet pool: nobody takes the mutex, kvbmd's timer
 * ends it (the test reads the counts without the mutex, which would). */
START_TEST(test_kvbmd_expires_pins_on_time)
{
	T_NAME(name);
	char pool[256];
	struct kd k = {0};
	struct kvbm_pool *p;
	struct kvbm_block b[4];
	struct kvbm_plh h[4];

	kd_start_quiet(&k, name, pool, sizeof(pool));
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	t_seq_hashes(11, 4, 4, h);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 4, b, NULL, NULL), 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(kvbm_stage_block(p, &b[i], h[i], 4), 0);
	ck_assert_int_eq(kvbm_register_blocks(p, b, 4), 0);
	ck_assert_int_eq(kvbm_release_blocks(p, b, 4), 0);
	uint64_t t0 = now_ns();
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 4, 300, NULL), 4);
	if (_i) { /* a peer's bytes: kvbmd's backstop expires them anyway */
		__atomic_store_n(&p->seg.pins->next_ns, UINT64_MAX, __ATOMIC_RELAXED);
		__atomic_store_n(&p->seg.pins->due, UINT64_MAX, __ATOMIC_RELAXED);
	}
	scrape_until(&k, "kvbm_pinned_blocks{pool=\"G1\"}", 4);
	uint32_t left = 4;
	for (int i = 0; i < 3000 && (left = __atomic_load_n(&p->seg.pins->blocks,
							     __ATOMIC_RELAXED)) != 0; i++)
		nap_ms(1);
	uint64_t t1 = now_ns();
	ck_assert_msg(left == 0, "the pins are still there 3 s after their 300 ms TTL");
	ck_assert_uint_ge(t1 - t0, 300000000ull); /* not before their deadline */
	ck_assert(scrape(&k, "kvbm_pin_expirations_total{pool=\"G1\"}") == 4);
	ck_assert(sample("kvbm_pins_active{pool=\"G1\"}") == 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 64);
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	t_done(p, name);
}
END_TEST

/* ---- KV events over ZMQ (vLLM's format, spec 5.3) ------------------------ */

/* The endpoint after @key ("on " or "replay ") in kvbmd's zmq log line. */
static void zmq_endpoint_of(const struct kd *k, const char *key, char *out, size_t len)
{
	const char *l = strstr(slurp(k->log), "zmq: publishing");

	ck_assert_msg(l, "no zmq line: %s", text);
	l = strstr(l, key);
	ck_assert_ptr_nonnull(l);
	l += strlen(key);
	size_t n = strcspn(l, " \n");
	ck_assert_uint_lt(n, len);
	memcpy(out, l, n);
	out[n] = '\0';
}

/* Starts kvbmd on pool @name publishing on loopback ports it picks, with
 * one more global key @set; the PUB and replay endpoints into @pub, @rep
 * (300 bytes each). */
static void kd_start_zmq(struct kd *k, const char *name, const char *set, char *pub, char *rep)
{
	char pool[256];

	snprintf(pool, sizeof(pool), "%s,create=no", name);
	ck_assert_int_eq(kd_start(k, (const char *const[]){
				 "--pool", pool, "--listen", "127.0.0.1:0",
				 "--set", "zmq_endpoint=tcp://127.0.0.1:*",
				 "--set", "zmq_replay_endpoint=tcp://127.0.0.1:*",
				 "--set", set, NULL}),
			 0);
	for (int i = 0; i < 200 && !strstr(slurp(k->log), "zmq: publishing"); i++)
		nap_ms(10);
	zmq_endpoint_of(k, " on ", pub, 300);
	zmq_endpoint_of(k, " replay ", rep, 300);
}

/* Runs `sh -c @cmd` in the background; its output goes to @log. */
static pid_t spawn_sh(const char *cmd, const char *log)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0)
			_exit(126);
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* Registers @n blocks of the chain at @h (token ids from @tok) and
 * releases them to the inactive pool (where allocations evict them). */
static void register_chain(struct kvbm_pool *p, const struct kvbm_plh *h, size_t n,
			   const uint32_t *tok, uint32_t bs, struct kvbm_block *b)
{
	ck_assert_int_eq(kvbm_allocate_blocks(p, (uint32_t)n, b, NULL, NULL), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(kvbm_stage_block(p, &b[i], h[i], bs), 0);
	ck_assert_int_eq(kvbm_register_blocks_tokens(p, b, (uint32_t)n, tok), 0);
	t_release(p, b, n);
}

/* Appends to @want (at @w, of @cap) the registered set of @h[0..n) in @p
 * as the subscribers' expected JSON members: `"blocks": [router hashes],
 * "plhs": [hex PLHs]`. Returns the new length; *@np: how many are
 * registered. */
static size_t expected_members(struct kvbm_pool *p, const struct kvbm_plh *h, size_t n,
			       char *want, size_t w, size_t cap, long *np)
{
	static uint8_t present[4096];

	ck_assert_uint_le(n, sizeof(present));
	*np = kvbm_check_presence(p, h, (uint32_t)n, present);
	ck_assert_int_ge(*np, 0);
	w += (size_t)snprintf(want + w, cap - w, "\"blocks\": [");
	for (size_t i = 0, c = 0; i < n; i++)
		if (present[i])
			w += (size_t)snprintf(want + w, cap - w, "%s%llu", c++ ? "," : "",
					      (unsigned long long)kvbm_plh_router_hash(h[i]));
	/* and the PLHs, for kvbm-logical's own stream */
	w += (size_t)snprintf(want + w, cap - w, "], \"plhs\": [");
	for (size_t i = 0, c = 0; i < n; i++)
		if (present[i])
			w += (size_t)snprintf(want + w, cap - w, "%s\"%016llx%016llx\"",
					      c++ ? "," : "", (unsigned long long)h[i].hi,
					      (unsigned long long)h[i].lo);
	w += (size_t)snprintf(want + w, cap - w, "]");
	ck_assert_uint_lt(w, cap);
	return w;
}

/* @json into file @path atomically (whole or absent: the subscribers poll
 * for it). */
static void write_atomically(const char *path, const char *json)
{
	char tmp[520];

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	write_file(tmp, json);
	ck_assert_int_eq(rename(tmp, path), 0);
}

/* The registered set of @h[0..n) as the subscribers' expected JSON, into
 * file @path. Returns how many are registered. */
static long write_expected(struct kvbm_pool *p, const struct kvbm_plh *h, size_t n, uint32_t bs,
			   const char *path)
{
	static char want[4096 * 60 + 64];
	long np;
	size_t w = (size_t)snprintf(want, sizeof(want), "{\"block_size\": %u, ", bs);

	w = expected_members(p, h, n, want, w, sizeof(want) - 1, &np);
	strcpy(want + w, "}");
	write_atomically(path, want);
	return np;
}

/*
 * kvbmd publishes a pool's ring in vLLM's ZMQ format, and independent
 * subscribers (tests/kv_events_zmq.py, python3-zmq) rebuild the set of
 * cached blocks from it: one that subscribed before the registrations
 * (through a ring that laps kvbmd: a gap and a snapshot resync), one that
 * came after them all and has only the replay ROUTER, and kvbm-events
 * --zmq, which must see every event published.
 */
START_TEST(test_kvbmd_zmq_subscribers_converge_on_the_registered_set)
{
	T_NAME(name);
	enum { BLOCKS = 256, N1 = 100, N2 = 200, N3 = 100, STEP = 20, BS4 = 4, NH = N1 + N2 + N3 };
	struct kvbm_config cfg = t_cfg();
	static struct kvbm_plh h[NH];
	static struct kvbm_block b[NH];
	static uint32_t tok[NH * BS4];
	char pool[256], pub[300], rep[300], expect[512], log1[512], log2[512], log3[512];
	char cmd[2048];
	struct kd k = {0};

	cfg.block_count = BLOCKS;
	cfg.event_ring = 64; /* N2 in one call laps it */
	struct kvbm_pool *p = t_create(name, &cfg);
	snprintf(pool, sizeof(pool), "%s,create=no", name);
	ck_assert_int_eq(kd_start(&k, (const char *const[]){
				 "--pool", pool, "--listen", "127.0.0.1:0", "--worker-id", "7",
				 "--set", "zmq_endpoint=tcp://127.0.0.1:*",
				 "--set", "zmq_replay_endpoint=tcp://127.0.0.1:*",
				 "--set", "zmq_topic=kv-events", NULL}),
			 0);
	for (int i = 0; i < 200 && !strstr(slurp(k.log), "zmq: publishing"); i++)
		nap_ms(10);
	zmq_endpoint_of(&k, " on ", pub, sizeof(pub));
	zmq_endpoint_of(&k, " replay ", rep, sizeof(rep));
	t_file(expect, sizeof(expect), "expect");
	unlink(expect);
	snprintf(cmd, sizeof(cmd), "exec /usr/bin/python3 tests/kv_events_zmq.py --pub %s "
		 "--replay %s --topic kv-events --expect %s --timeout 30", pub, rep, expect);
	pid_t early = spawn_sh(cmd, t_file(log1, sizeof(log1), "sub1"));
	nap_ms(300); /* it subscribed; it would replay what it missed anyway */

	for (uint32_t i = 0; i < NH * BS4; i++)
		tok[i] = 11 + i;
	t_seq_hashes(11, NH, BS4, h);
	register_chain(p, h, N1, tok, BS4, b);
	nap_ms(50);
	/* 200 more in a 256-block pool evict 44 of the first; one call
	 * appends 244 events to a 64-entry ring */
	register_chain(p, h + N1, N2, tok + N1 * BS4, BS4, b + N1);
	/* then steps the ring holds (20 evictions and 20 stores each), read
	 * live: removes and stores alternate, batches must not mix them */
	for (int i = N1 + N2; i < NH; i += STEP) {
		nap_ms(30);
		register_chain(p, h + i, STEP, tok + i * BS4, BS4, b + i);
	}

	/* the registered set at quiescence, for the subscribers */
	ck_assert_int_eq(write_expected(p, h, NH, BS4, expect), BLOCKS);

	snprintf(cmd, sizeof(cmd), "exec /usr/bin/python3 tests/kv_events_zmq.py --pub %s "
		 "--replay %s --topic kv-events --expect %s --timeout 30 --catch-up", pub, rep,
		 expect);
	pid_t late = spawn_sh(cmd, t_file(log2, sizeof(log2), "sub2"));
	ck_assert_msg(t_wait(early) == 0, "early subscriber: %s", slurp(log1));
	ck_assert_msg(t_wait(late) == 0, "late subscriber: %s", slurp(log2));

	/* every event published reaches kvbm-events through the replay */
	/* both registrations lapped the ring: the subscribers converged
	 * through resyncs */
	ck_assert_int_ge(scrape(&k, "kvbmd_event_gaps_total{pool=\"G1\""), 1);
	double published = scrape(&k, "kvbmd_events_published_total{pool=\"G1\"");
	ck_assert_msg(published >= NH + 144, "published %g", published);
	snprintf(cmd, sizeof(cmd), "exec timeout 20 '%s/kvbm-events' --zmq %s --replay %s "
		 "--topic kv-events --from-start --count %.0f 2>/dev/null", getenv("KVBM_BIN"), pub,
		 rep, published);
	pid_t ke = spawn_sh(cmd, t_file(log3, sizeof(log3), "kve"));
	ck_assert_msg(t_wait(ke) == 0, "kvbm-events --zmq: %s", slurp(log3));
	long lines = 0, stored = 0;
	for (const char *l = slurp(log3); (l = strchr(l, '\n')); l++)
		lines++;
	for (const char *l = text; (l = strstr(l, " BlockStored ")); l++)
		stored++;
	ck_assert_msg(lines == (long)published && stored >= NH, "%ld lines, %ld stored: %s",
		      lines, stored, text);
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	unlink(expect);
	unlink(log1);
	unlink(log2);
	unlink(log3);
	t_done(p, name);
}
END_TEST

/*
 * A subscriber that stops reading never blocks kvbmd or the pool: once its
 * queue (zmq_hwm = 1) and the socket buffers are full, kvbmd refuses
 * batches and counts them, the registrations go on at full speed, and a
 * subscriber that reads converges through the replay of what was refused.
 */
START_TEST(test_kvbmd_zmq_slow_subscriber_is_dropped_and_counted)
{
	T_NAME(name);
	enum { BLOCKS = 2048, STEP = 1000, ROUNDS = 40, BSZ = 256, NH = 4 * STEP };
	struct kvbm_config cfg = t_cfg();
	static struct kvbm_plh h[NH];
	static struct kvbm_block b[STEP];
	static uint32_t tok[STEP * BSZ];
	char pub[300], rep[300], expect[512], log1[512], log2[512], cmd[2048];
	struct kd k = {0};

	cfg.block_count = BLOCKS;
	cfg.block_size = BSZ;
	cfg.event_ring = 4096;
	struct kvbm_pool *p = t_create(name, &cfg);
	kd_start_zmq(&k, name, "zmq_hwm=1", pub, rep);
	/* subscribes, takes one message, then reads nothing */
	snprintf(cmd, sizeof(cmd), "exec /usr/bin/python3 -c 'import time, zmq; "
		 "s = zmq.Context().socket(zmq.SUB); s.setsockopt(zmq.RCVHWM, 1); "
		 "s.setsockopt(zmq.SUBSCRIBE, b\"\"); s.connect(\"%s\"); time.sleep(60)'", pub);
	pid_t slow = spawn_sh(cmd, t_file(log1, sizeof(log1), "slow"));
	nap_ms(500);

	/* large token lists: megabytes per round, more than the kernel
	 * buffers between kvbmd and the stalled subscriber can hold */
	uint64_t t0 = now_ns();
	for (int r = 0; r < ROUNDS; r++) {
		for (uint32_t i = 0; i < STEP * BSZ; i++)
			tok[i] = 70000 + (uint32_t)r * STEP * BSZ + i;
		/* the hashes of the last 4 rounds: more than the pool holds */
		struct kvbm_plh *hr = h + (r % 4) * STEP;
		for (uint32_t i = 0; i < STEP; i++)
			ck_assert_int_eq(kvbm_plh_make(kvbm_block_hash(tok + i * BSZ, BSZ, 1337), NULL, 0,
						       &hr[i]), 0);
		register_chain(p, hr, STEP, tok, BSZ, b);
		nap_ms(5);
	}
	uint64_t took = now_ns() - t0;
	double dropped = -1;
	for (int i = 0; i < 500 && (dropped = scrape(&k, "kvbmd_events_dropped_total{pool=\"G1\"")) <= 0;
	     i++)
		nap_ms(10);
	ck_assert_msg(dropped > 0, "kvbmd_events_dropped_total: %g", dropped);
	/* the pool never waited: 40000 registrations with tokens in well
	 * under the time a blocked publisher would have stalled them */
	ck_assert_msg(took < 20000000000ull, "registrations took %llu ms",
		      (unsigned long long)(took / 1000000));

	t_file(expect, sizeof(expect), "expect");
	ck_assert_int_eq(write_expected(p, h, NH, BSZ, expect), BLOCKS);
	snprintf(cmd, sizeof(cmd), "exec /usr/bin/python3 tests/kv_events_zmq.py --pub %s "
		 "--replay %s --expect %s --timeout 30 --catch-up", pub, rep, expect);
	pid_t late = spawn_sh(cmd, t_file(log2, sizeof(log2), "sub"));
	ck_assert_msg(t_wait(late) == 0, "subscriber: %s", slurp(log2));
	kill(slow, SIGKILL);
	t_wait(slow);
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	unlink(expect);
	unlink(log1);
	unlink(log2);
	t_done(p, name);
}
END_TEST

/* A chain of CHAIN_N blocks of 4 tokens: start, start+1, ... */
enum { CHAIN_N = 225 };
struct chain {
	struct kvbm_plh h[CHAIN_N];
	struct kvbm_block b[CHAIN_N];
	uint32_t tok[CHAIN_N * 4];
};

static void chain_init(struct chain *c, uint32_t start)
{
	for (uint32_t i = 0; i < CHAIN_N * 4; i++)
		c->tok[i] = start + i;
	t_seq_hashes(start, CHAIN_N, 4, c->h);
}

/* Starts nats-server on 127.0.0.1:@port; returns once it accepts. */
static pid_t nats_start(unsigned port, const char *log)
{
	char cmd[512];
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

	snprintf(cmd, sizeof(cmd), "exec nats-server -a 127.0.0.1 -p %u", port);
	pid_t pid = spawn_sh(cmd, log);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < 500; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
		ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(fd);
		if (ok)
			return pid;
		nap_ms(10);
	}
	ck_abort_msg("nats-server did not start: %s", slurp(log));
	return -1;
}

/* Waits (bounded: 10 s) until file @path contains @what. */
static void wait_for_text(const char *path, const char *what)
{
	for (int i = 0; i < 1000 && !strstr(slurp(path), what); i++)
		nap_ms(10);
	ck_assert_msg(strstr(slurp(path), what), "no '%s' in %s: %s", what, path, text);
}

/* Starts the NATS test subscriber (tests/kv_events_nats.py) on the server
 * at @port, its output into a new log @slog; returns once it subscribed. */
static pid_t nats_sub_start(unsigned port, const char *expect, int timeout, char *slog,
			    size_t len)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "exec /usr/bin/python3 tests/kv_events_nats.py --url "
		 "nats://127.0.0.1:%u --expect %s --timeout %d", port, expect, timeout);
	pid_t pid = spawn_sh(cmd, t_file(slog, len, "sub"));
	wait_for_text(slog, "subscribed 1");
	return pid;
}

/*
 * Dynamo's event plane over a real nats-server: kvbmd starts while the
 * server is down (and waits for it), publishes RouterEvents in the
 * envelope on kv-events and kvbm-logical's stream on kvbm.events; the
 * server is SIGKILLed mid-run and restarted, and an independent
 * subscriber (tests/kv_events_nats.py, NATS's text protocol on a plain
 * socket) still converges on the registered set: kvbmd buffers what fits
 * (1 KiB here) while the server is away, drops and counts the rest, and
 * sends a snapshot once it is back.
 */
START_TEST(test_kvbmd_nats_survives_a_server_restart)
{
	T_NAME(name);
	enum { BLOCKS = 128, STEP = 50, NH = CHAIN_N, BS4 = 4 };
	static struct chain c;
	struct kvbm_config cfg = t_cfg();
	char pool[256], url[128], nlog[512], slog[512], expect[512], cmd[1024];
	struct kd k = {0};
	int fd;
	unsigned port = hold_port(&fd);

	close(fd); /* nats-server takes it later: kvbmd must start without it */
	cfg.block_count = BLOCKS;
	struct kvbm_pool *p = t_create(name, &cfg);
	snprintf(pool, sizeof(pool), "%s,create=no", name);
	snprintf(url, sizeof(url), "nats_url=nats://127.0.0.1:%u", port);
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", pool, "--listen",
							      "127.0.0.1:0", "--worker-id", "5",
							      "--set", url, "--set",
							      "nats_reconnect_wait_ms=100", "--set",
							      "nats_reconnect_buffer=1024", NULL}),
			 0);
	wait_for_text(k.log, "is not reachable yet");
	pid_t ns = nats_start(port, t_file(nlog, sizeof(nlog), "nats"));
	t_file(expect, sizeof(expect), "expect");
	pid_t sub = nats_sub_start(port, expect, 40, slog, sizeof(slog));
	wait_for_text(k.log, "nats: connected");

	chain_init(&c, 5);
	register_chain(p, c.h, STEP, c.tok, BS4, c.b);
	nap_ms(100);
	/* the server dies; the pool goes on (evictions too); kvbmd buffers
	 * 1 KiB of it and drops the rest, counted */
	kill(ns, SIGKILL);
	t_wait(ns);
	/* what cnats sends before it notices is lost with the server's
	 * socket, uncounted: the registrations come once it knows */
	wait_for_text(k.log, "nats: disconnected");
	register_chain(p, c.h + STEP, 2 * STEP, c.tok + STEP * BS4, BS4, c.b + STEP);
	nap_ms(100);
	/* the subscriber must be back before kvbmd, or NATS (which keeps
	 * nothing) has no one to hand the snapshot to: hold kvbmd still */
	kill(k.pid, SIGSTOP);
	ns = nats_start(port, nlog);
	wait_for_text(slog, "subscribed 2");
	kill(k.pid, SIGCONT);
	register_chain(p, c.h + 3 * STEP, STEP, c.tok + 3 * STEP * BS4, BS4, c.b + 3 * STEP);
	ck_assert_int_eq(write_expected(p, c.h, NH, BS4, expect), BLOCKS);
	ck_assert_msg(t_wait(sub) == 0, "subscriber: %s", slurp(slog));
	ck_assert_int_ge(scrape(&k, "kvbmd_events_published_total{pool=\"G1\",worker_id=\"5\","
				    "transport=\"nats\""), BLOCKS); /* the snapshot at least */
	/* started without the server, then two connections */
	ck_assert_int_eq(scrape(&k, "kvbmd_nats_connections_total{worker_id=\"5\"}"), 2);

	/* kvbm-events --nats prints what follows: 25 evictions, then a chain
	 * of 25 stores, coalesced as Dynamo's publisher does (a chain of
	 * stores is one router event, a batch's removes one too; a read
	 * that caught the registration half-appended splits it) */
	char klog[512], kerr[520];
	t_file(klog, sizeof(klog), "kve");
	snprintf(kerr, sizeof(kerr), "%s.err", klog);
	snprintf(cmd, sizeof(cmd), "exec timeout 3 '%s/kvbm-events' --nats nats://127.0.0.1:%u "
		 "--json 2>'%s'", getenv("KVBM_BIN"), port, kerr);
	pid_t ke = spawn_sh(cmd, klog);
	wait_for_text(kerr, "subscribed to kv-events");
	register_chain(p, c.h + 4 * STEP, 25, c.tok + 4 * STEP * BS4, BS4, c.b + 4 * STEP);
	ck_assert_int_eq(t_wait(ke), 124); /* timeout's: it ran until told to stop */
	long lines[2] = {0}, blocks[2] = {0};
	for (const char *l = slurp(klog); l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		int st = !strncmp(strstr(l, "\"type\":\"") + 8, "stored", 6);
		const char *nb = strstr(l, "\"blocks\":");
		ck_assert_ptr_nonnull(nb);
		lines[st]++;
		blocks[st] += atol(nb + 9);
	}
	ck_assert_msg(blocks[0] == 25 && blocks[1] == 25, "%ld removed, %ld stored: %.300s", blocks[0],
		      blocks[1], text);
#if defined(__SANITIZE_THREAD__)
	/* TSan's instrumented appends are many times slower, and the
	 * lock-free reader catches the registration half-appended more
	 * often (a CI run split the 25 stores in four) */
	enum { SPLIT = 6 };
#else
	enum { SPLIT = 3 };
#endif
	ck_assert_msg(lines[1] <= SPLIT && lines[0] <= SPLIT, "not coalesced: %ld stored, %ld "
		      "removed router events: %.300s", lines[1], lines[0], text);
	unlink(klog);
	unlink(kerr);
	ck_assert_int_gt(scrape(&k, "kvbmd_events_dropped_total{pool=\"G1\",worker_id=\"5\","
				    "transport=\"nats\""), 0);
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	kill(ns, SIGKILL);
	t_wait(ns);
	unlink(expect);
	unlink(slog);
	unlink(nlog);
	t_done(p, name);
}
END_TEST

/*
 * Two nodes, one event plane (Dynamo's deployment across nodes): two pools
 * of the same name in two segment directories (two "nodes"), each with its
 * kvbmd (worker_id 1 and 2) publishing into one nats-server, and one
 * subscriber that keeps a view per worker, as a router does. Both nodes
 * cache the same prefix first, then each registers its own chain and
 * evicts; node 1 evicts the whole shared prefix while node 2 keeps part
 * of it, so a Removed of one worker must not touch the other's copy of
 * the same block hash. At quiescence each worker's view equals the
 * registered set of its pool, and kvbm.events carries both pools'
 * instances, each with exactly its pool's PLHs (nothing was dropped).
 */
START_TEST(test_kvbmd_nats_two_nodes_one_subscriber)
{
	T_NAME(name);
	enum { BLOCKS = 64, BS4 = 4, SHARED = 20, STEP = 20 };
	static const size_t own_n[2] = {100, 60}; /* evict 56 and 16 */
	static struct chain shared, own[2];
	static struct kvbm_plh h[2][SHARED + CHAIN_N];
	static char want[2 * (SHARED + CHAIN_N) * 60 + 512];
	static uint8_t present[SHARED];
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool_info info;
	struct kvbm_pool *p[2];
	struct kd k[2] = {{0}};
	uint64_t instance[2];
	char root[512], dir[2][600], pool[256], url[128], wid[2][16], iid[2][16], series[160];
	char nlog[512], slog[512], expect[512];
	int fd;
	unsigned port = hold_port(&fd);

	close(fd);
	snprintf(root, sizeof(root), "%s", getenv("KVBM_SHM_DIR"));
	pid_t ns = nats_start(port, t_file(nlog, sizeof(nlog), "nats"));
	t_file(expect, sizeof(expect), "expect");
	t_file(k[0].log, sizeof(k[0].log), "log");
	t_file(k[1].log, sizeof(k[1].log), "log");
	/* subscribed before either kvbmd connects: NATS keeps nothing */
	pid_t sub = nats_sub_start(port, expect, 15, slog, sizeof(slog));

	cfg.block_count = BLOCKS;
	snprintf(pool, sizeof(pool), "%s,create=no", name);
	snprintf(url, sizeof(url), "nats_url=nats://127.0.0.1:%u", port);
	for (int i = 0; i < 2; i++) {
		snprintf(dir[i], sizeof(dir[i]), "%s/node%d-%d", root, i + 1, getpid());
		ck_assert_int_eq(mkdir(dir[i], 0700), 0);
		/* the node's pool and its kvbmd (which inherits the directory) */
		setenv("KVBM_SHM_DIR", dir[i], 1);
		p[i] = t_create(name, &cfg);
		ck_assert_int_eq(kvbm_pool_info(p[i], &info), 0);
		instance[i] = info.instance_id;
		snprintf(wid[i], sizeof(wid[i]), "%d", i + 1);
		snprintf(iid[i], sizeof(iid[i]), "node%d", i + 1);
		ck_assert_int_eq(kd_start(&k[i], (const char *const[]){
					 "--pool", pool, "--listen", "127.0.0.1:0", "--worker-id",
					 wid[i], "--instance-id", iid[i], "--set", url, NULL}),
				 0);
		/* the server is up: connected before this line */
		wait_for_text(k[i].log, "nats: publishing 1 pool");
	}
	setenv("KVBM_SHM_DIR", root, 1);
	ck_assert_uint_ne(instance[0], instance[1]);

	chain_init(&shared, 100);
	chain_init(&own[0], 2000);
	chain_init(&own[1], 3000);
	for (int i = 0; i < 2; i++) {
		register_chain(p[i], shared.h, SHARED, shared.tok, BS4, shared.b);
		memcpy(h[i], shared.h, sizeof(shared.h[0]) * SHARED);
		memcpy(h[i] + SHARED, own[i].h, sizeof(own[i].h[0]) * own_n[i]);
	}
	/* node 2's stores of the prefix reach the subscriber before node 1's
	 * removes of it (two publishers are ordered by nothing else) */
	nap_ms(50);
	/* the two nodes interleaved, as a cluster runs */
	for (size_t j = 0; j < own_n[0]; j += STEP)
		for (int i = 0; i < 2; i++)
			if (j < own_n[i])
				register_chain(p[i], own[i].h + j, STEP, own[i].tok + j * BS4, BS4,
					       own[i].b + j);
	/* the case a router keyed by block hash alone gets wrong */
	ck_assert_int_eq(kvbm_check_presence(p[0], shared.h, SHARED, present), 0);
	ck_assert_int_gt(kvbm_check_presence(p[1], shared.h, SHARED, present), 0);

	/* the registered set of each node at quiescence, by worker_id */
	size_t w = (size_t)snprintf(want, sizeof(want), "{\"block_size\": %d, \"workers\": {", BS4);
	for (int i = 0; i < 2; i++) {
		long np;
		w += (size_t)snprintf(want + w, sizeof(want) - w,
				      "%s\"%d\": {\"instance\": \"%016llx%016llx\", ", i ? ", " : "",
				      i + 1, 0ull, (unsigned long long)instance[i]);
		w = expected_members(p[i], h[i], SHARED + own_n[i], want, w, sizeof(want) - 4, &np);
		ck_assert_int_eq(np, BLOCKS);
		w += (size_t)snprintf(want + w, sizeof(want) - w, "}");
	}
	strcpy(want + w, "}}");
	write_atomically(expect, want);
	ck_assert_msg(t_wait(sub) == 0, "subscriber: %s", slurp(slog));
	ck_assert_msg(strstr(slurp(slog), " 2 workers, 2 instances, 2 publishers,"), "%s", text);

	for (int i = 0; i < 2; i++) {
		snprintf(series, sizeof(series), "kvbmd_events_dropped_total{pool=\"G1\","
			 "instance_id=\"node%d\",worker_id=\"%d\",transport=\"nats\"", i + 1, i + 1);
		ck_assert_int_eq(scrape(&k[i], series), 0);
		ck_assert_int_eq(kd_stop(&k[i], SIGTERM), 0);
		setenv("KVBM_SHM_DIR", dir[i], 1);
		t_done(p[i], name);
		ck_assert_int_eq(rmdir(dir[i]), 0);
		unlink(k[i].log);
	}
	setenv("KVBM_SHM_DIR", root, 1);
	kill(ns, SIGKILL);
	t_wait(ns);
	unlink(expect);
	unlink(slog);
	unlink(nlog);
}
END_TEST

/* A process registering and releasing the chain @c (4 tokens a block) in
 * steps of 5 for @rounds passes, a short nap between steps: evictions and
 * stores keep flowing. Exits 0, or the step that failed. */
static pid_t churn(const char *name, const struct chain *c, int rounds)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid)
		return pid;
	struct kvbm_pool *p;
	struct kvbm_block b[5];
	T_CHILD_CHECK(kvbm_pool_open(name, NULL, 0, &p) == 0, 3);
	for (int r = 0; r < rounds; r++)
		for (int i = 0; i + 5 <= CHAIN_N; i += 5) {
			T_CHILD_CHECK(kvbm_allocate_blocks(p, 5, b, NULL, NULL) == 0, 4);
			for (int j = 0; j < 5; j++)
				T_CHILD_CHECK(kvbm_stage_block(p, &b[j], c->h[i + j], 4) == 0, 5);
			T_CHILD_CHECK(kvbm_register_blocks_tokens(p, b, 5, c->tok + i * 4) == 0, 6);
			T_CHILD_CHECK(kvbm_release_blocks(p, b, 5) == 0, 7);
			nap_ms(2);
		}
	kvbm_pool_close(p);
	_exit(0);
}

/*
 * kvbmd SIGKILLed and restarted on the same endpoints, again and again,
 * while a process keeps registering and evicting: each new kvbmd goes on
 * with the next seq from the ring position where the killed one stopped
 * (its state beside the pool), so a subscriber that stayed connected sees
 * no gap and no restart, nothing lost (changes made while no kvbmd ran
 * included), and converges on the registered set.
 */
START_TEST(test_kvbmd_zmq_restarted_kvbmd_subscriber_converges)
{
	T_NAME(name);
	enum { BLOCKS = 128, NH = CHAIN_N, BS4 = 4, KILLS = 6 };
	struct kvbm_config cfg = t_cfg();
	static struct chain c;
	char pool[256], ep[96], rep[96], pubset[128], repset[128], expect[512], slog[512];
	char cmd[1024];
	struct kd k = {0};
	int fd1, fd2;
	unsigned p1 = hold_port(&fd1), p2 = hold_port(&fd2);

	close(fd1);
	close(fd2);
	cfg.block_count = BLOCKS;
	struct kvbm_pool *p = t_create(name, &cfg);
	snprintf(pool, sizeof(pool), "%s,create=no", name);
	snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%u", p1);
	snprintf(rep, sizeof(rep), "tcp://127.0.0.1:%u", p2);
	snprintf(pubset, sizeof(pubset), "zmq_endpoint=%s", ep);
	snprintf(repset, sizeof(repset), "zmq_replay_endpoint=%s", rep);
	const char *const args[] = {"--pool", pool, "--listen", "127.0.0.1:0", "--set", pubset,
				    "--set", repset, "--set", "zmq_bind=yes", NULL};
	ck_assert_int_eq(kd_start(&k, args), 0);
	t_file(expect, sizeof(expect), "expect");
	snprintf(cmd, sizeof(cmd), "exec /usr/bin/python3 tests/kv_events_zmq.py --pub %s "
		 "--replay %s --expect %s --timeout 40", ep, rep, expect);
	pid_t sub = spawn_sh(cmd, t_file(slog, sizeof(slog), "sub"));
	nap_ms(300);

	chain_init(&c, 3);
	pid_t writer = churn(name, &c, 16);
	for (int i = 0; i < KILLS; i++) {
		nap_ms(60 + 37 * i);
		ck_assert_int_eq(kd_stop(&k, SIGKILL), 128 + SIGKILL);
		nap_ms(20); /* changes no kvbmd sees: the ring keeps them */
		ck_assert_int_eq(kd_start(&k, args), 0);
		ck_assert_msg(strstr(slurp(k.log), "resuming the event stream"), "%s", text);
	}
	ck_assert_int_eq(t_wait(writer), 0);
	ck_assert_int_eq(write_expected(p, c.h, NH, BS4, expect), BLOCKS);
	ck_assert_msg(t_wait(sub) == 0, "subscriber: %s", slurp(slog));
	/* a gap here is a batch sent before the subscriber had reconnected
	 * to the new kvbmd: the replay fills it; a seq gone back or a gap
	 * the replay cannot fill would be the restart showing */
	ck_assert_msg(strstr(slurp(slog), " 0 restarts") && strstr(text, " 0 unfilled"), "%s", text);
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	unlink(expect);
	unlink(slog);
	t_done(p, name);
}
END_TEST

/*
 * kvbmd maps its stream state file shared: a file others may write (a
 * pre-made 0666 one in a world-writable /dev/shm) could be truncated under
 * it, a SIGBUS at its next store. Such a file is left alone, with the
 * reason in the log, and the stream keeps its state in memory.
 */
START_TEST(test_kvbmd_refuses_a_state_file_others_may_write)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	char pub[300], rep[300], state[PATH_MAX];
	struct kd k = {0};
	struct stat st;

	cfg.block_count = 64;
	struct kvbm_pool *p = t_create(name, &cfg);
	snprintf(state, sizeof(state), "%s/kvbmd.%s.zmq-state", getenv("KVBM_SHM_DIR"), name);
	int fd = open(state, O_RDWR | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fchmod(fd, 0666), 0);
	close(fd);
	kd_start_zmq(&k, name, "event_window_ms=0", pub, rep);
	wait_for_text(k.log, "not a regular file of kvbmd's user with mode 0600");
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	ck_assert_int_eq(stat(state, &st), 0);
	ck_assert_int_eq(st.st_size, 0); /* never resized, never mapped */
	unlink(state);
	t_done(p, name);
}
END_TEST

/*
 * Batching is adaptive: a batch that a drained ring leaves open goes out at
 * once, the window is only an upper bound. With a 10 s window, a few
 * stores of one kind (nothing closes their batch: no kind change, far
 * below the size cap) must reach a subscriber whose deadline is 5 s.
 */
START_TEST(test_kvbmd_zmq_quiet_ring_publishes_before_the_window)
{
	T_NAME(name);
	enum { BLOCKS = 64, N = 8, BS4 = 4 };
	struct kvbm_config cfg = t_cfg();
	static struct chain c;
	char pub[300], rep[300], expect[512], slog[512], cmd[2048];
	struct kd k = {0};

	cfg.block_count = BLOCKS;
	struct kvbm_pool *p = t_create(name, &cfg);
	kd_start_zmq(&k, name, "event_window_ms=10000", pub, rep);
	t_file(expect, sizeof(expect), "expect");
	chain_init(&c, 9);
	snprintf(cmd, sizeof(cmd), "exec /usr/bin/python3 tests/kv_events_zmq.py --pub %s "
		 "--replay %s --expect %s --timeout 5", pub, rep, expect);
	pid_t sub = spawn_sh(cmd, t_file(slog, sizeof(slog), "sub"));
	/* one burst and nothing after it: a subscriber that joined late would
	 * see no later batch to reveal the gap (a slow python start under TSan
	 * and a loaded machine missed it), so wait until it has connected */
	wait_for_text(slog, "connected");
	nap_ms(300);
	register_chain(p, c.h, N, c.tok, BS4, c.b);
	ck_assert_int_eq(write_expected(p, c.h, N, BS4, expect), N);
	ck_assert_msg(t_wait(sub) == 0, "subscriber: %s", slurp(slog));
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	unlink(expect);
	unlink(slog);
	t_done(p, name);
}
END_TEST

/* Whether a TCP socket can bind 127.0.0.1:@port (nobody listens there). */
static int can_bind(unsigned port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/* kvbmd's configuration file for pool @name publishing on loopback ports
 * @pub and @rep, plus the lines @more. */
static void write_pub_conf(const char *conf, const char *name, unsigned pub, unsigned rep,
			   const char *more)
{
	char body[1024];

	snprintf(body, sizeof(body), "listen = 127.0.0.1:0\nzmq_bind = yes\n"
		 "zmq_endpoint = tcp://127.0.0.1:%u\nzmq_replay_endpoint = tcp://127.0.0.1:%u\n"
		 "%s[pool %s]\ncreate = no\n", pub, rep, more, name);
	write_file(conf, body);
}

/*
 * SIGHUP applies new publishing keys: kvbmd leaves its old ZMQ ports
 * (another process can bind them), publishes on the new ones with the new
 * topic, and connects to a NATS server it was not told of before; a
 * subscriber of each new stream converges on the registered set, blocks
 * registered before the reload included (each pool is sent as a
 * snapshot). A reload onto a port in use says so and keeps what runs.
 */
START_TEST(test_kvbmd_sighup_rebinds_zmq_and_nats)
{
	T_NAME(name);
	enum { BLOCKS = 64, BS4 = 4, N = 100 };
	static struct chain c;
	struct kvbm_config cfg = t_cfg();
	char conf[512], more[256], nlog[512], zlog[512], slog[512], expect[512], cmd[1024];
	unsigned port[5];
	int fd[5];
	struct kd k = {0};

	for (int i = 0; i < 5; i++)
		port[i] = hold_port(&fd[i]);
	for (int i = 0; i < 4; i++)
		close(fd[i]); /* fd[4] stays: the port in use */
	cfg.block_count = BLOCKS;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_file(conf, sizeof(conf), "conf");
	write_pub_conf(conf, name, port[0], port[1], "");
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--config", conf, NULL}), 0);
	chain_init(&c, 21);
	register_chain(p, c.h, 20, c.tok, BS4, c.b);

	/* a NATS server and its subscriber, which kvbmd knows nothing of yet */
	int nfd;
	unsigned nport = hold_port(&nfd);
	close(nfd);
	pid_t ns = nats_start(nport, t_file(nlog, sizeof(nlog), "nats"));
	t_file(expect, sizeof(expect), "expect");
	pid_t nsub = nats_sub_start(nport, expect, 30, slog, sizeof(slog));

	snprintf(more, sizeof(more), "zmq_topic = kv-two\nnats_url = nats://127.0.0.1:%u\n", nport);
	write_pub_conf(conf, name, port[2], port[3], more);
	kill(k.pid, SIGHUP);
	wait_for_text(k.log, "SIGHUP: publishing restarted");
	ck_assert_msg(can_bind(port[0]) && can_bind(port[1]), "the old ZMQ ports are still bound");
	snprintf(cmd, sizeof(cmd), "exec /usr/bin/python3 tests/kv_events_zmq.py --pub "
		 "tcp://127.0.0.1:%u --replay tcp://127.0.0.1:%u --topic kv-two --expect %s "
		 "--timeout 30 --catch-up", port[2], port[3], expect);
	pid_t zsub = spawn_sh(cmd, t_file(zlog, sizeof(zlog), "zsub"));
	nap_ms(300);
	for (int i = 20; i < N; i += 20) /* evicts 36 */
		register_chain(p, c.h + i, 20, c.tok + i * BS4, BS4, c.b + i);
	ck_assert_int_eq(write_expected(p, c.h, N, BS4, expect), BLOCKS);
	ck_assert_msg(t_wait(zsub) == 0, "zmq subscriber: %s", slurp(zlog));
	ck_assert_msg(t_wait(nsub) == 0, "nats subscriber: %s", slurp(slog));

	/* onto a port in use: said, and the running publishers stay */
	write_pub_conf(conf, name, port[4], port[3], more);
	kill(k.pid, SIGHUP);
	wait_for_text(k.log, "keeping the running ones");
	ck_assert_msg(strstr(text, "Address already in use"), "%s", text);
	ck_assert(!can_bind(port[2]));
	close(fd[4]);
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	kill(ns, SIGKILL);
	t_wait(ns);
	unlink(expect);
	unlink(slog);
	unlink(zlog);
	unlink(nlog);
	unlink(conf);
	t_done(p, name);
}
END_TEST

/*
 * A kvbmd killed between sending a batch and recording it sends that batch
 * again under the same seq (tools/kvbmd/pubstate.c). kvbm-events --zmq
 * prints it once and does not take it for a restarted publisher. The
 * publisher here is a few lines of python3-zmq sending seqs 0, 1, 1, 2.
 */
START_TEST(test_kvbm_events_zmq_prints_a_resent_batch_once)
{
	char cmd[2048], plog[512], klog[512], kerr[520];
	int fd;
	unsigned port = hold_port(&fd);

	close(fd);
	snprintf(cmd, sizeof(cmd), "exec /usr/bin/python3 -c 'import struct, time, zmq, msgpack\n"
		 "s = zmq.Context().socket(zmq.PUB); s.bind(\"tcp://127.0.0.1:%u\")\n"
		 "time.sleep(1.0)\n"
		 "for q in (0, 1, 1, 2):\n"
		 "    ev = {\"type\": \"BlockRemoved\", \"block_hashes\": [100 + q]}\n"
		 "    s.send_multipart([b\"kv\", struct.pack(\">Q\", q), msgpack.packb([1.0, [ev], 0])])\n"
		 "time.sleep(1.0)'", port);
	pid_t pub = spawn_sh(cmd, t_file(plog, sizeof(plog), "pub"));
	t_file(klog, sizeof(klog), "kve");
	snprintf(kerr, sizeof(kerr), "%s.err", klog);
	snprintf(cmd, sizeof(cmd), "exec timeout 3 '%s/kvbm-events' --zmq tcp://127.0.0.1:%u "
		 "--topic kv 2>'%s'", getenv("KVBM_BIN"), port, kerr);
	pid_t ke = spawn_sh(cmd, klog);
	ck_assert_int_eq(t_wait(pub), 0);
	ck_assert_int_eq(t_wait(ke), 124); /* timeout's: it ran until told to stop */
	long lines = 0;
	for (const char *l = slurp(klog); (l = strchr(l, '\n')); l++)
		lines++;
	ck_assert_msg(lines == 3 && strstr(text, " 101") && strstr(text, " 102"), "%s", text);
	ck_assert_msg(!strstr(slurp(kerr), "restarted"), "%s", text);
	unlink(plog);
	unlink(klog);
	unlink(kerr);
}
END_TEST

/* A dp_rank offsets the port (vLLM's rule) and a port in use is a clear
 * error, exit 1. */
START_TEST(test_kvbmd_zmq_dp_rank_offset_and_port_in_use)
{
	T_NAME(name);
	char pool[256], ep[128], want[160];
	struct kd k = {0};
	int fd;
	unsigned port = hold_port(&fd);
	pool_arg(pool, sizeof(pool), name, "G1");
	/* rank 2 of base port-2 lands on the port held above */
	snprintf(ep, sizeof(ep), "zmq_endpoint=tcp://127.0.0.1:%u", port - 2);
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", pool, "--listen",
							      "127.0.0.1:0", "--set", ep, "--set",
							      "zmq_bind=yes", "--set", "dp_rank=2",
							      NULL}),
			 1);
	snprintf(want, sizeof(want), "zmq bind tcp://127.0.0.1:%u: Address already in use", port);
	ck_assert_msg(strstr(slurp(k.log), want), "log: %s", text);
	close(fd);
	/* free now: the same flags start, publishing on the offset port */
	ck_assert_int_eq(kd_start(&k, (const char *const[]){"--pool", pool, "--listen",
							      "127.0.0.1:0", "--set", ep, "--set",
							      "zmq_bind=yes", "--set", "dp_rank=2",
							      NULL}),
			 0);
	for (int i = 0; i < 200 && !strstr(slurp(k.log), "zmq: publishing"); i++)
		nap_ms(10);
	snprintf(want, sizeof(want), "on tcp://127.0.0.1:%u replay none", port);
	ck_assert_msg(strstr(slurp(k.log), want), "log: %s", text);
	ck_assert_int_eq(kd_stop(&k, SIGTERM), 0);
	struct kvbm_pool *p;
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	t_done(p, name);
}
END_TEST

Suite *make_kvbmd_events_suite(void)
{
	Suite *s = suite_create("kvbmd_events");
	TCase *tc = tcase_create("kvbmd_events");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_kvbmd_zmq_subscribers_converge_on_the_registered_set);
	tcase_add_test(tc, test_kvbmd_zmq_dp_rank_offset_and_port_in_use);
	tcase_add_test(tc, test_kvbmd_zmq_slow_subscriber_is_dropped_and_counted);
	tcase_add_test(tc, test_kvbmd_nats_survives_a_server_restart);
	tcase_add_test(tc, test_kvbmd_nats_two_nodes_one_subscriber);
	tcase_add_test(tc, test_kvbmd_zmq_restarted_kvbmd_subscriber_converges);
	tcase_add_test(tc, test_kvbmd_zmq_quiet_ring_publishes_before_the_window);
	tcase_add_test(tc, test_kvbmd_refuses_a_state_file_others_may_write);
	tcase_add_test(tc, test_kvbmd_sighup_rebinds_zmq_and_nats);
	tcase_add_test(tc, test_kvbm_events_zmq_prints_a_resent_batch_once);
	suite_add_tcase(s, tc);
	return s;
}

Suite *make_kvbmd_suite(void)
{
	Suite *s = suite_create("kvbmd");
	TCase *tc = tcase_create("service");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_kvbmd_version_and_help);
	tcase_add_test(tc, test_kvbmd_metrics_follow_the_pools);
	tcase_add_test(tc, test_kvbmd_unknown_config_key_names_file_and_line);
	tcase_add_test(tc, test_kvbmd_port_in_use_is_an_error);
	tcase_add_test(tc, test_kvbmd_sigterm_exits_clean_and_pools_stay);
	tcase_add_test(tc, test_kvbmd_sigint_exits_clean_and_pools_stay);
	tcase_add_test(tc, test_kvbmd_adopts_an_existing_pool_and_refuses_a_mismatch);
	tcase_add_test(tc, test_kvbmd_refuses_two_pools_of_one_tier);
	tcase_add_test(tc, test_kvbmd_sighup_reloads_labels);
	tcase_add_test(tc, test_kvbmd_reaps_a_killed_holder_at_once);
	tcase_add_loop_test(tc, test_kvbmd_expires_pins_on_time, 0, 2);
	tcase_add_test(tc, test_kvbmd_metrics_mutex_hold_histogram);
	suite_add_tcase(s, tc);
	return s;
}
