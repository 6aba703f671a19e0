/* SPDX-License-Identifier: Apache-2.0 */
/*
 * helpers.c - see helpers.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

static unsigned name_seq;

const char *t_name(char *buf, size_t len)
{
	snprintf(buf, len, "t%d-%u", getpid(), name_seq++);
	return buf;
}

const char *t_path(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/kvbm.%s", getenv("KVBM_SHM_DIR"), name);
	return buf;
}

struct kvbm_config t_cfg(void)
{
	struct kvbm_config cfg;

	kvbm_config_init(&cfg);
	cfg.block_count = 256;
	cfg.block_size = 4;
	cfg.max_procs = 16;
	cfg.open_timeout_ms = 5000;
	cfg.backend = KVBM_BACKEND_LRU; /* the reference's test manager's */
	return cfg;
}

struct kvbm_pool *t_create(const char *name, const struct kvbm_config *cfg)
{
	struct kvbm_config c = cfg ? *cfg : t_cfg();
	struct kvbm_pool *p = NULL;
	int r = kvbm_pool_open(name, &c, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &p);

	ck_assert_msg(r == 0, "create %s: %s", name, kvbm_strerror(r));
	return p;
}

int t_wait(pid_t pid)
{
	struct timespec ts = {0, 1000000};
	int st;

	for (int i = 0; i < 60000; i++) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		ck_assert_msg(r == 0, "waitpid: %s", strerror(errno));
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	ck_abort_msg("child %d did not finish within 60 s (deadlock?)", pid);
	return -1;
}

void t_gate_init(struct t_gate *g)
{
	ck_assert_int_eq(pipe(g->fd), 0);
}

void t_gate_wait(struct t_gate *g)
{
	char c;

	close(g->fd[1]);
	/* EOF once every copy of the write end is closed: the parent's
	 * t_gate_open() and the death of siblings */
	while (read(g->fd[0], &c, 1) > 0)
		;
	close(g->fd[0]);
}

void t_gate_open(struct t_gate *g)
{
	close(g->fd[0]);
	close(g->fd[1]);
}

void t_send(int fd, const void *buf, size_t len)
{
	if (write(fd, buf, len) != (ssize_t)len)
		_exit(99);
}

int t_recv(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

void t_patch(const char *name, off_t off, const void *buf, size_t len)
{
	char path[512];
	int fd = open(t_path(name, path, sizeof(path)), O_RDWR);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, buf, len, off), (ssize_t)len);
	close(fd);
}

static int run_tool(char *out, size_t outlen, int with_stderr, const char *tool, va_list ap)
{
	const char *argv[32];
	char path[512];
	int p[2], n = 0;

	snprintf(path, sizeof(path), "%s/%s", getenv("KVBM_BIN") ? getenv("KVBM_BIN") : "build/bin",
		 tool);
	argv[n++] = tool;
	while (n < 31 && (argv[n] = va_arg(ap, const char *)) != NULL)
		n++;
	argv[n] = NULL;
	ck_assert_int_eq(pipe(p), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(p[1], 1);
		if (with_stderr) {
			dup2(p[1], 2);
		} else if (getenv("KVBM_TOOL_STDERR")) {
			/* expected errors out of make check's output, kept for a look */
			int e = open(getenv("KVBM_TOOL_STDERR"), O_WRONLY | O_CREAT | O_APPEND, 0644);
			if (e >= 0)
				dup2(e, 2);
		}
		close(p[0]);
		close(p[1]);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	size_t got = 0;
	ssize_t k;
	while ((k = read(p[0], out + got, outlen - 1 - got)) > 0 && got < outlen - 1)
		got += (size_t)k;
	out[got] = '\0';
	close(p[0]);
	return t_wait(pid);
}

int t_run_tool(char *out, size_t outlen, const char *tool, ...)
{
	va_list ap;

	va_start(ap, tool);
	int r = run_tool(out, outlen, 0, tool, ap);
	va_end(ap);
	return r;
}

int t_run_tool_all(char *out, size_t outlen, const char *tool, ...)
{
	va_list ap;

	va_start(ap, tool);
	int r = run_tool(out, outlen, 1, tool, ap);
	va_end(ap);
	return r;
}

int t_is_root(void)
{
	return geteuid() == 0;
}

struct kvbm_plh t_hash1(uint32_t id, uint32_t bs)
{
	uint32_t tok[1024];
	struct kvbm_block_hashes h;

	for (uint32_t i = 0; i < bs; i++)
		tok[i] = id + i;
	ck_assert_int_eq(kvbm_hash_tokens(tok, bs, bs, T_SALT, &h, 1), 1);
	return h.plh;
}

void t_seq_hashes(uint32_t start, size_t n, uint32_t bs, struct kvbm_plh *out)
{
	uint32_t *tok = malloc(sizeof(*tok) * n * bs);
	struct kvbm_block_hashes *h = malloc(sizeof(*h) * n);

	ck_assert_ptr_nonnull(tok);
	ck_assert_ptr_nonnull(h);
	for (size_t i = 0; i < n * bs; i++)
		tok[i] = start + (uint32_t)i;
	ck_assert_int_eq(kvbm_hash_tokens(tok, n * bs, bs, T_SALT, h, n), (long)n);
	for (size_t i = 0; i < n; i++)
		out[i] = h[i].plh;
	free(tok);
	free(h);
}

void t_register(struct kvbm_pool *p, const struct kvbm_plh *hashes, size_t n,
		struct kvbm_block *out)
{
	struct kvbm_pool_info info;
	int r;

	ck_assert_int_eq(kvbm_pool_info(p, &info), 0);
	r = kvbm_allocate_blocks(p, (uint32_t)n, out, NULL, NULL);
	ck_assert_msg(r == 0, "allocate %zu: %s", n, kvbm_strerror(r));
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(kvbm_stage_block(p, &out[i], hashes[i], info.config.block_size), 0);
	r = kvbm_register_blocks(p, out, (uint32_t)n);
	ck_assert_msg(r == 0, "register: %s", kvbm_strerror(r));
}

void t_release(struct kvbm_pool *p, const struct kvbm_block *blks, size_t n)
{
	int r = kvbm_release_blocks(p, blks, (uint32_t)n);

	ck_assert_msg(r == 0, "release: %s", kvbm_strerror(r));
}

struct kvbm_metrics t_metrics(struct kvbm_pool *p)
{
	struct kvbm_metrics m;

	ck_assert_int_eq(kvbm_metrics_snapshot(p, &m), 0);
	return m;
}

struct kvbm_pool *t_pool(const char *name, uint32_t blocks)
{
	struct kvbm_config cfg = t_cfg();

	cfg.block_count = blocks;
	return t_create(name, &cfg);
}

static void t_report(const char *msg, void *arg)
{
	(void)arg;
	fprintf(stderr, "invariant violated: %s\n", msg);
}

long t_check(struct kvbm_pool *p)
{
	return kvbm_pool_check(p, KVBM_CHECK_LOCK | KVBM_CHECK_QUIESCENT, t_report, NULL);
}

void t_done(struct kvbm_pool *p, const char *name)
{
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_int_eq(kvbm_pool_close(p), 0);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
}
