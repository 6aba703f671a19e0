/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_noalloc.c - recovery and the checker allocate nothing (issue 14,
 * defect 3): under a memory limit a recovery that needed the heap would
 * poison a sound pool for every process.
 *
 * The test binary interposes malloc, calloc and realloc (forwarding to
 * glibc's own) so that a test can make every allocation fail and count the
 * attempts. Sanitizer builds bring their own allocator, which must not be
 * bypassed: there the tests say so and pass.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "helpers.h"
#include "../shm/failpoint.h"

#define BS 4

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define T_INTERPOSED 0
#else
#define T_INTERPOSED 1
#endif

static int fail_allocs;
static long alloc_attempts;

#if T_INTERPOSED
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);

static int refuse(void)
{
	if (!__atomic_load_n(&fail_allocs, __ATOMIC_RELAXED))
		return 0;
	__atomic_add_fetch(&alloc_attempts, 1, __ATOMIC_RELAXED);
	errno = ENOMEM;
	return 1;
}

void *malloc(size_t n)
{
	return refuse() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
	return refuse() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
	return refuse() ? NULL : __libc_realloc(p, n);
}
#endif

static void no_heap(int on)
{
	__atomic_store_n(&alloc_attempts, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&fail_allocs, on, __ATOMIC_RELAXED);
}

/* A lineage pool with chains, a duplicate, inactive and held blocks: every
 * structure the checker walks is populated. */
static struct kvbm_pool *busy_pool(const char *name, struct kvbm_block *held,
				   struct kvbm_block *dup)
{
	enum { TOTAL = 2048, N = 512 };
	struct kvbm_config cfg = t_cfg();
	static struct kvbm_plh h[N];
	static struct kvbm_block b[N];

	cfg.block_count = TOTAL;
	cfg.backend = KVBM_BACKEND_LINEAGE;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, N, BS, h);
	t_register(p, h, N, b);
	t_release(p, b + 8, N - 8);
	for (int i = 0; i < 8; i++)
		held[i] = b[i];
	t_register(p, h, 1, dup); /* a duplicate of h[0], held */
	return p;
}

START_TEST(test_checker_allocates_nothing)
{
	T_NAME(name);
	struct kvbm_block held[8], dup;

	if (!T_INTERPOSED) {
		fprintf(stderr, "test_checker_allocates_nothing: sanitizer build, not run\n");
		return;
	}
	struct kvbm_pool *p = busy_pool(name, held, &dup);
	no_heap(1);
	long n = kvbm_pool_check(p, KVBM_CHECK_LOCK | KVBM_CHECK_QUIESCENT, NULL, NULL);
	long tries = alloc_attempts;
	no_heap(0);
	ck_assert_msg(n == 0, "check without a heap: %ld", n);
	ck_assert_int_eq(tries, 0);
	t_release(p, held, 8);
	t_release(p, &dup, 1);
	t_done(p, name);
}
END_TEST

/* A victim dies holding the mutex; the recovery runs with every allocation
 * failing, must not try one, and must not poison the pool. */
START_TEST(test_recovery_allocates_nothing)
{
	T_NAME(name);
	struct kvbm_block held[8], dup;
	struct kvbm_pool_info pi;

	if (!T_INTERPOSED) {
		fprintf(stderr, "test_recovery_allocates_nothing: sanitizer build, not run\n");
		return;
	}
	struct kvbm_pool *p = busy_pool(name, held, &dup);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = NULL;
		struct kvbm_block v[4];
		if (kvbm_pool_open(name, NULL, 0, &q) != 0)
			_exit(70);
		kvbm_fp_arm("block.allocate.victims");
		(void)kvbm_allocate_blocks(q, 4, v, NULL, NULL);
		_exit(71);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	no_heap(1);
	int r = kvbm_reap(p);
	long tries = alloc_attempts;
	no_heap(0);
	ck_assert_msg(r >= 0, "recovery without a heap: %s", kvbm_strerror(r));
	ck_assert_int_eq(tries, 0);
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	ck_assert_uint_eq(pi.recoveries, 1);
	t_release(p, held, 8);
	t_release(p, &dup, 1);
	t_done(p, name);
}
END_TEST

Suite *make_noalloc_suite(void)
{
	Suite *s = suite_create("noalloc");
	TCase *tc = tcase_create("noalloc");

	tcase_add_test(tc, test_checker_allocates_nothing);
	tcase_add_test(tc, test_recovery_allocates_nothing);
	suite_add_tcase(s, tc);
	return s;
}
