/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_log.c - the library says what no return code carries through the
 * host's log function (kvbm_set_log), and never writes to its stderr.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/pool.h"
#include "../shm/mutex.h"

struct logged {
	int n, errors;
	char first[512];
};

static void collect(int level, const char *msg, void *arg)
{
	struct logged *l = arg;

	if (l->n++ == 0)
		snprintf(l->first, sizeof(l->first), "%s", msg);
	l->errors += level == KVBM_LOG_ERROR;
}

/* A pool whose slot 0 holds an impossible state word, whose mutex owner
 * then died: the next locker's repair fails, finding the slot. */
static struct kvbm_pool *damaged_then_owner_died(const char *name)
{
	struct kvbm_pool *p = t_create(name, NULL);

	__atomic_store_n(&kvbm_slot(p, 0)->state, ~0ull, __ATOMIC_RELAXED);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q;
		if (kvbm_pool_open(name, NULL, 0, &q) < 0 || kvbm_seg_lock(&q->seg) < 0)
			_exit(1);
		raise(SIGKILL);
		_exit(2);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	return p;
}

/* Runs the failing repair with stderr sent to a file; returns its size. */
static long repair_stderr_bytes(struct kvbm_pool *p)
{
	char path[] = "/tmp/kvbm-log-XXXXXX";
	int fd = mkstemp(path), saved = dup(2);

	ck_assert_int_ge(fd, 0);
	fflush(stderr);
	dup2(fd, 2);
	ck_assert_int_eq(kvbm_seg_lock(&p->seg), KVBM_EPOISONED);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	long n = lseek(fd, 0, SEEK_END);
	close(fd);
	unlink(path);
	return n;
}

START_TEST(test_failed_repair_goes_to_the_log)
{
	T_NAME(name);
	struct logged l = {0};
	struct kvbm_pool *p = damaged_then_owner_died(name);

	kvbm_set_log(collect, &l);
	ck_assert_int_eq(repair_stderr_bytes(p), 0);
	kvbm_set_log(NULL, NULL);
	ck_assert_int_ge(l.n, 1);
	ck_assert_int_eq(l.errors, l.n);
	ck_assert_msg(!strncmp(l.first, "repair failed: slot 0: ", 23), "%s", l.first);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_no_log_function_nothing_on_stderr)
{
	T_NAME(name);
	struct kvbm_pool *p = damaged_then_owner_died(name);

	ck_assert_int_eq(repair_stderr_bytes(p), 0);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

Suite *make_log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("log");

	tcase_add_test(tc, test_failed_repair_goes_to_the_log);
	tcase_add_test(tc, test_no_log_function_nothing_on_stderr);
	suite_add_tcase(s, tc);
	return s;
}
