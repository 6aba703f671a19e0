/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_mutex.c - the robust process-shared mutex: mutual exclusion across
 * processes, owner death (recovery hook runs once), a recoverer that dies
 * too, failed repair poisoning the segment.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/pool.h"
#include "../shm/failpoint.h"
#include "../shm/mutex.h"
#include "../shm/proctable.h"

static int hook_calls;
static uint32_t hook_seen_op;

static int counting_hook(struct kvbm_seg *seg, const struct kvbm_shm_op *op, void *arg)
{
	(void)seg;
	(void)arg;
	hook_calls++;
	hook_seen_op = op->op;
	return 0;
}

static int failing_hook(struct kvbm_seg *seg, const struct kvbm_shm_op *op, void *arg)
{
	(void)seg;
	(void)op;
	(void)arg;
	hook_calls++;
	return -EIO;
}

/* A child attaches, takes the mutex and dies holding it. */
static void die_holding_mutex(const char *name)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct kvbm_pool *q;
		if (kvbm_pool_open(name, NULL, 0, &q) < 0 || kvbm_seg_lock(&q->seg) < 0)
			_exit(1);
		raise(SIGKILL);
		_exit(2);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
}

START_TEST(test_mutex_owner_killed_next_locker_recovers_hook_once)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);
	struct kvbm_mutex_view v;

	die_holding_mutex(name);
	kvbm_mutex_view(&p->seg.ctl->mutex, &v);
	ck_assert_int_eq(v.owner_died, 1);
	hook_calls = 0;
	p->seg.recover = counting_hook;
	ck_assert_int_eq(kvbm_seg_lock(&p->seg), 0);
	ck_assert_int_eq(hook_calls, 1);
	ck_assert_uint_eq(hook_seen_op, KVBM_OP_NONE);
	ck_assert_uint_eq(p->seg.ctl->recoveries, 1);
	ck_assert_uint_ne(p->seg.ctl->last_recovery_ns, 0);
	/* the dead owner was reaped as part of the recovery */
	ck_assert_uint_eq(p->seg.ctl->reaps, 1);
	kvbm_seg_unlock(&p->seg);
	kvbm_mutex_view(&p->seg.ctl->mutex, &v);
	ck_assert_int_eq(v.locked, 0);
	ck_assert_int_eq(v.owner_died, 0);
	ck_assert_int_eq(v.notrecoverable, 0);
	/* consistent again: no second recovery */
	ck_assert_int_eq(kvbm_seg_lock(&p->seg), 0);
	kvbm_seg_unlock(&p->seg);
	ck_assert_int_eq(hook_calls, 1);
	ck_assert_uint_eq(p->seg.ctl->recoveries, 1);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_recoverer_killed_during_recovery)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);

	die_holding_mutex(name);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q;
		kvbm_fp_arm("shm.recover.begin");
		kvbm_pool_open(name, NULL, 0, &q); /* its attach locks and recovers */
		_exit(1);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	hook_calls = 0;
	p->seg.recover = counting_hook;
	ck_assert_int_eq(kvbm_seg_lock(&p->seg), 0);
	kvbm_seg_unlock(&p->seg);
	ck_assert_int_eq(hook_calls, 1);
	ck_assert_uint_eq(p->seg.ctl->recoveries, 1);
	ck_assert_uint_eq(kvbm_proc_count_active(&p->seg), 1);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_failed_repair_poisons_segment)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL), *q;
	struct kvbm_pool_info info;
	struct kvbm_config cfg = t_cfg();
	struct kvbm_mutex_view v;

	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &q), 0);
	die_holding_mutex(name);
	hook_calls = 0;
	p->seg.recover = failing_hook;
	ck_assert_int_eq(kvbm_seg_lock(&p->seg), KVBM_EPOISONED);
	ck_assert_int_eq(hook_calls, 1);
	ck_assert_uint_eq(p->seg.hdr->state, KVBM_SEG_POISONED);
	kvbm_mutex_view(&p->seg.ctl->mutex, &v);
	ck_assert_int_eq(v.notrecoverable, 1);
	/* every process, every call: a clear error, never corrupt data */
	ck_assert_int_eq(kvbm_pool_info(p, &info), KVBM_EPOISONED);
	ck_assert_int_eq(kvbm_reap(q), KVBM_EPOISONED);
	ck_assert_int_eq(kvbm_seg_lock(&q->seg), KVBM_EPOISONED);
	struct kvbm_pool *r;
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &r), KVBM_EPOISONED);
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &r), KVBM_EPOISONED);
	ck_assert_int_eq(kvbm_pool_close(q), 0);
	ck_assert_int_eq(kvbm_pool_close(p), 0);
	/* with every attacher gone it stays poisoned until destroyed */
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &r), KVBM_EPOISONED);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &r), 0);
	kvbm_pool_close(r);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_mutex_excludes_across_processes)
{
	enum { PROCS = 4, ITERS = 20000 };
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);
	/* a plain counter outside the pool: only the mutex protects it */
	volatile uint64_t *counter =
		mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct t_gate start;
	pid_t pids[PROCS];

	ck_assert_ptr_ne((void *)counter, MAP_FAILED);
	*counter = 0;
	t_gate_init(&start);
	for (int i = 0; i < PROCS; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct kvbm_pool *q;
			if (kvbm_pool_open(name, NULL, 0, &q) < 0)
				_exit(1);
			t_gate_wait(&start);
			for (int k = 0; k < ITERS; k++) {
				if (kvbm_seg_lock(&q->seg) < 0)
					_exit(2);
				uint64_t v = *counter;
				if (k % 64 == 0)
					sched_yield(); /* widen the window a lost update needs */
				*counter = v + 1;
				kvbm_seg_unlock(&q->seg);
			}
			_exit(kvbm_pool_close(q) == 0 ? 0 : 3);
		}
	}
	t_gate_open(&start);
	for (int i = 0; i < PROCS; i++)
		ck_assert_int_eq(t_wait(pids[i]), 0);
	ck_assert_uint_eq(*counter, (uint64_t)PROCS * ITERS);
	ck_assert_uint_eq(p->seg.ctl->recoveries, 0);
	munmap((void *)counter, 4096);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_relock_by_same_thread_is_refused)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);

	ck_assert_int_eq(kvbm_seg_lock(&p->seg), 0);
	ck_assert_int_eq(kvbm_seg_lock(&p->seg), KVBM_EDEADLK);
	kvbm_seg_unlock(&p->seg);
	ck_assert_int_eq(kvbm_seg_lock(&p->seg), 0);
	kvbm_seg_unlock(&p->seg);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

Suite *make_mutex_suite(void)
{
	Suite *s = suite_create("mutex");
	TCase *tc = tcase_create("robust");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_mutex_owner_killed_next_locker_recovers_hook_once);
	tcase_add_test(tc, test_recoverer_killed_during_recovery);
	tcase_add_test(tc, test_failed_repair_poisons_segment);
	tcase_add_test(tc, test_mutex_excludes_across_processes);
	tcase_add_test(tc, test_relock_by_same_thread_is_refused);
	suite_add_tcase(s, tc);
	return s;
}
