/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_proctable.c - attach entries, liveness proofs, reaping, the process
 * table filling up, forked children, and attach/detach killed half-way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/pool.h"
#include "../shm/failpoint.h"
#include "../shm/liveness.h"
#include "../shm/mutex.h"
#include "../shm/proctable.h"

static struct kvbm_shm_proc *entry(struct kvbm_pool *p, uint32_t i)
{
	return &p->seg.procs[i];
}

START_TEST(test_attach_records_pid_starttime_and_generation)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL), *q;
	struct kvbm_pool_info a, b;
	uint64_t st;

	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &q), 0);
	kvbm_pool_info(p, &a);
	kvbm_pool_info(q, &b);
	struct kvbm_shm_proc *e = entry(p, a.proc_index);
	ck_assert_uint_eq(e->state, KVBM_PROC_ACTIVE);
	ck_assert_uint_eq(e->pid, (uint32_t)getpid());
	ck_assert_int_eq(kvbm_proc_starttime(getpid(), &st), 0);
	ck_assert_uint_eq(e->starttime, st);
	ck_assert_uint_eq(e->attach_gen, a.attach_gen);
	ck_assert_uint_gt(b.attach_gen, a.attach_gen);
	/* q's liveness lock is held through q's own open file description;
	 * p probes it from another one */
	ck_assert_int_eq(kvbm_proc_liveness(p->seg.fd, b.proc_index, entry(p, b.proc_index)),
			 KVBM_ALIVE);
	kvbm_pool_close(q);
	ck_assert_uint_eq(entry(p, b.proc_index)->state, KVBM_PROC_FREE);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* Forks @n children that attach and wait; returns 0 when all attached. */
static int attach_children(const char *name, int n, pid_t *pids, struct t_gate *leave)
{
	int rep[2];

	ck_assert_int_eq(pipe(rep), 0);
	for (int i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct kvbm_pool *p;
			close(rep[0]);
			int r = kvbm_pool_open(name, NULL, 0, &p);
			t_send(rep[1], &r, sizeof(r));
			if (r < 0)
				_exit(1);
			t_gate_wait(leave);
			_exit(kvbm_pool_close(p) == 0 ? 0 : 2);
		}
	}
	close(rep[1]);
	int bad = 0;
	for (int i = 0; i < n; i++) {
		int r;
		ck_assert_int_eq(t_recv(rep[0], &r, sizeof(r)), 0);
		bad += r != 0;
	}
	close(rep[0]);
	return bad;
}

START_TEST(test_process_table_full_at_configured_max)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct t_gate leave;
	pid_t pids[2];
	struct kvbm_pool *p, *q;

	cfg.max_procs = 3;
	p = t_create(name, &cfg);
	t_gate_init(&leave);
	ck_assert_int_eq(attach_children(name, 2, pids, &leave), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &q), KVBM_EPROCFULL);
	t_gate_open(&leave);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(t_wait(pids[i]), 0);
	/* entries freed by detach are reused */
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &q), 0);
	kvbm_pool_close(q);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_attacher_past_max_procs_is_refused)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct t_gate leave;
	pid_t pids[KVBM_MAX_PROCS];
	struct kvbm_pool *q;

	cfg.max_procs = KVBM_MAX_PROCS;
	kvbm_pool_close(t_create(name, &cfg));
	t_gate_init(&leave);
	ck_assert_int_eq(attach_children(name, KVBM_MAX_PROCS, pids, &leave), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &q), KVBM_EPROCFULL);
	t_gate_open(&leave);
	for (int i = 0; i < KVBM_MAX_PROCS; i++)
		ck_assert_int_eq(t_wait(pids[i]), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &q), 0);
	kvbm_pool_close(q);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* A child attaches and dies without detaching. */
static void attach_and_die(const char *name)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct kvbm_pool *p;
		if (kvbm_pool_open(name, NULL, 0, &p) == 0)
			raise(SIGKILL);
		_exit(1);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
}

START_TEST(test_dead_process_reaped_on_attach)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p, *q;
	struct kvbm_pool_info info;

	cfg.max_procs = 1;
	kvbm_pool_close(t_create(name, &cfg));
	attach_and_die(name);
	/* the dead child still occupies the only entry until proven dead */
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	kvbm_pool_info(p, &info);
	ck_assert_uint_eq(p->seg.ctl->reaps, 1);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &q), KVBM_EPROCFULL);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_reap_frees_dead_and_never_touches_live)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);
	struct t_gate leave;
	pid_t live;

	t_gate_init(&leave);
	ck_assert_int_eq(attach_children(name, 1, &live, &leave), 0);
	attach_and_die(name);
	/* the second one's attach reaps the first */
	attach_and_die(name);
	ck_assert_uint_eq(p->seg.ctl->reaps, 1);
	ck_assert_int_eq(kvbm_proc_count_active(&p->seg), 3);
	ck_assert_int_eq(kvbm_reap(p), 1);
	ck_assert_int_eq(kvbm_reap(p), 0);
	ck_assert_int_eq(kvbm_proc_count_active(&p->seg), 2);
	/* the live child's entry is intact and it detaches normally */
	t_gate_open(&leave);
	ck_assert_int_eq(t_wait(live), 0);
	ck_assert_int_eq(kvbm_proc_count_active(&p->seg), 1);
	ck_assert_uint_eq(p->seg.ctl->reaps, 2);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* The liveness lock is held (as by a forked child that inherited the fd)
 * but the pid is gone: death is proven by pid + start time. */
START_TEST(test_dead_pid_with_lock_still_held)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);
	char path[256];
	uint32_t idx = 5;

	pid_t gone = fork();
	if (gone == 0)
		_exit(0);
	ck_assert_int_eq(t_wait(gone), 0);
	int fd = open(t_path(name, path, sizeof(path)), O_RDWR);
	ck_assert_int_eq(kvbm_ofd_trylock(fd, KVBM_LOCK_LIVENESS_BASE + idx, F_WRLCK), 0);
	struct kvbm_shm_proc *e = entry(p, idx);
	ck_assert_int_eq(kvbm_seg_lock(&p->seg), 0);
	e->pid = (uint32_t)gone;
	e->starttime = 1;
	e->attach_gen = 99;
	__atomic_store_n(&e->state, KVBM_PROC_ACTIVE, __ATOMIC_RELEASE);
	kvbm_seg_unlock(&p->seg);
	ck_assert_int_eq(kvbm_proc_liveness(p->seg.fd, idx, e), KVBM_DEAD_PID_GONE);

	/* same pid (ours) but another start time: a reused pid */
	e->pid = (uint32_t)getpid();
	ck_assert_int_eq(kvbm_proc_liveness(p->seg.fd, idx, e), KVBM_DEAD_PID_GONE);
	/* our real start time and the lock held: alive, never reaped */
	ck_assert_int_eq(kvbm_proc_starttime(getpid(), &e->starttime), 0);
	ck_assert_int_eq(kvbm_proc_liveness(p->seg.fd, idx, e), KVBM_ALIVE);
	ck_assert_int_eq(kvbm_reap(p), 0);
	e->pid = (uint32_t)gone;
	ck_assert_int_eq(kvbm_reap(p), 1);
	ck_assert_uint_eq(e->state, KVBM_PROC_FREE);
	close(fd);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_forked_child_cannot_use_handle)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);
	struct kvbm_pool_info before, after;

	kvbm_pool_info(p, &before);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool_info i;
		T_CHILD_CHECK(kvbm_pool_info(p, &i) == KVBM_EFORKED, 1);
		T_CHILD_CHECK(kvbm_reap(p) == KVBM_EFORKED, 2);
		T_CHILD_CHECK(kvbm_seg_lock(&p->seg) == KVBM_EFORKED, 3);
		/* close frees the child's copy only */
		T_CHILD_CHECK(kvbm_pool_close(p) == 0, 4);
		/* the child may attach on its own */
		struct kvbm_pool *q;
		T_CHILD_CHECK(kvbm_pool_open(name, NULL, 0, &q) == 0, 5);
		T_CHILD_CHECK(kvbm_pool_close(q) == 0, 6);
		_exit(0);
	}
	ck_assert_int_eq(t_wait(pid), 0);
	ck_assert_int_eq(kvbm_pool_info(p, &after), 0);
	ck_assert_uint_eq(after.proc_index, before.proc_index);
	ck_assert_uint_eq(after.procs_attached, 1);
	struct kvbm_shm_proc *e = entry(p, before.proc_index);
	ck_assert_uint_eq(e->state, KVBM_PROC_ACTIVE);
	ck_assert_uint_eq(e->pid, (uint32_t)getpid());
	ck_assert_uint_eq(e->attach_gen, before.attach_gen);
	ck_assert_int_eq(kvbm_pool_close(p), 0);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* The attacher dies at each failpoint of attach, holding the mutex. */
static const char *const attach_points[] = {"shm.attach.locked", "shm.attach.active"};

START_TEST(test_attacher_killed_mid_attach)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL), *q;

	pid_t pid = fork();
	if (pid == 0) {
		kvbm_fp_arm(attach_points[_i]);
		kvbm_pool_open(name, NULL, 0, &q);
		_exit(1);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	/* the next locker recovers the mutex and frees the half-claimed entry */
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &q), 0);
	ck_assert_uint_eq(p->seg.ctl->recoveries, 1);
	ck_assert_uint_eq(p->seg.ctl->op.op, KVBM_OP_NONE);
	ck_assert_uint_eq(kvbm_proc_count_active(&p->seg), 2);
	kvbm_pool_close(q);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_detacher_killed_mid_detach)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);

	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q;
		if (kvbm_pool_open(name, NULL, 0, &q) < 0)
			_exit(1);
		kvbm_fp_arm("shm.detach.released");
		kvbm_pool_close(q);
		_exit(2);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	ck_assert_int_eq(kvbm_reap(p), 0); /* recovery already finished it */
	ck_assert_uint_eq(p->seg.ctl->recoveries, 1);
	ck_assert_uint_eq(kvbm_proc_count_active(&p->seg), 1);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* A reaper dies half-way through reaping; the next locker finishes it. */
START_TEST(test_reaper_killed_mid_reap)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);

	attach_and_die(name);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q;
		kvbm_fp_arm("shm.reap.reclaiming");
		kvbm_pool_open(name, NULL, 0, &q); /* reaps on attach */
		_exit(1);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	/* our lock recovers: the op record names the half-reaped entry and
	 * recovery finishes it; the dead reaper had not claimed an entry */
	ck_assert_int_eq(kvbm_reap(p), 0);
	ck_assert_uint_eq(p->seg.ctl->recoveries, 1);
	ck_assert_uint_eq(p->seg.ctl->reaps, 1);
	ck_assert_uint_eq(kvbm_proc_count_active(&p->seg), 1);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

Suite *make_proctable_suite(void)
{
	Suite *s = suite_create("proctable");
	TCase *tc = tcase_create("entries");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_attach_records_pid_starttime_and_generation);
	tcase_add_test(tc, test_process_table_full_at_configured_max);
	tcase_add_test(tc, test_attacher_past_max_procs_is_refused);
	tcase_add_test(tc, test_forked_child_cannot_use_handle);
	suite_add_tcase(s, tc);

	tc = tcase_create("liveness_and_reaping");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_dead_process_reaped_on_attach);
	tcase_add_test(tc, test_reap_frees_dead_and_never_touches_live);
	tcase_add_test(tc, test_dead_pid_with_lock_still_held);
	suite_add_tcase(s, tc);

	tc = tcase_create("crash");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_attacher_killed_mid_attach, 0, 2);
	tcase_add_test(tc, test_detacher_killed_mid_detach);
	tcase_add_test(tc, test_reaper_killed_mid_reap);
	suite_add_tcase(s, tc);
	return s;
}
