/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_audit.c - the reference's audit counters as this design has them
 * (eager_primary_to_inactive is always 0 here, the three others count),
 * the registry's frequency touch and registered_count.
 *
 * The interleavings are made deterministic the way the reference's pause
 * hooks make them: a process stops itself at a failpoint (=stop) and the
 * test runs the other side before it continues.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "../shm/failpoint.h"

#define BS 4

static struct kvbm_pool *attach(const char *name)
{
	struct kvbm_pool *p = NULL;

	if (kvbm_pool_open(name, NULL, 0, &p) != 0)
		_exit(90);
	return p;
}

static void wait_stopped(pid_t pid)
{
	siginfo_t si;

	ck_assert_int_eq(waitid(P_PID, (id_t)pid, &si, WSTOPPED), 0);
	ck_assert_int_eq(si.si_code, CLD_STOPPED);
}

/*
 * The reference's eager_primary_to_inactive_is_deterministic_with_pause_hook:
 * the last holder of a primary is paused between dropping its hold and
 * settling the block; a lookup of the hash then gets the block. The
 * reference's lookup moves it to inactive and resurrects it (eager 1); ours
 * takes the hold directly (eager stays 0, as its help text says); in both
 * the paused release then finds nothing to do (release_primary_noop 1), and
 * a later ordinary release counts nothing.
 */
START_TEST(test_late_primary_release_is_a_noop_and_nothing_is_eager)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 16);
	struct kvbm_plh h;
	struct kvbm_block b, m;

	h = t_hash1(10, BS);
	t_register(p, &h, 1, &b);
	t_release(p, &b, 1);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = attach(name);
		struct kvbm_block c;
		T_CHILD_CHECK(kvbm_match_blocks(q, &h, 1, &c) == 1, 10);
		kvbm_fp_arm("hold.unpin.bit=stop"); /* its bit is off, not settled */
		T_CHILD_CHECK(kvbm_release_blocks(q, &c, 1) == 0, 11);
		kvbm_pool_close(q);
		T_CHILD_OK();
	}
	wait_stopped(pid);
	ck_assert_int_eq(kvbm_match_blocks(p, &h, 1, &m), 1);
	ck_assert_uint_eq(m.id, b.id);
	ck_assert_int_eq(kill(pid, SIGCONT), 0);
	ck_assert_int_eq(t_wait(pid), 0);
	struct kvbm_metrics mt = t_metrics(p);
	ck_assert_uint_eq(mt.eager_primary_to_inactive, 0);
	ck_assert_uint_eq(mt.release_primary_noop, 1);
	ck_assert_uint_eq(mt.release_duplicate_noop, 0);
	struct kvbm_block_info bi;
	ck_assert_int_eq(kvbm_block_info(p, &m, &bi), 0);
	ck_assert_int_eq(bi.inactive, 0); /* ours: active */
	t_release(p, &m, 1);
	ck_assert_int_eq(kvbm_block_info(p, &m, &bi), 0);
	ck_assert_int_eq(bi.inactive, 1);
	mt = t_metrics(p);
	ck_assert_uint_eq(mt.release_primary_noop, 1);
	ck_assert_uint_eq(mt.eager_primary_to_inactive, 0);
	t_done(p, name);
}
END_TEST

/* The same for a duplicate: held again (through a weak handle naming it)
 * between its last unpin and its settle, the release frees nothing. */
START_TEST(test_late_duplicate_release_is_a_noop)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h = t_hash1(20, BS);
	struct kvbm_block prim, dup;
	int fd[2], go[2];
	char c = 'g';

	cfg.block_count = 16;
	cfg.dup_policy = KVBM_DUP_ALLOW;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_register(p, &h, 1, &prim);
	ck_assert_int_eq(pipe(fd), 0);
	ck_assert_int_eq(pipe(go), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = attach(name);
		struct kvbm_block d;
		T_CHILD_CHECK(kvbm_allocate_blocks(q, 1, &d, NULL, NULL) == 0, 20);
		T_CHILD_CHECK(kvbm_stage_block(q, &d, h, BS) == 0, 21);
		T_CHILD_CHECK(kvbm_register_blocks(q, &d, 1) == 0, 22);
		t_send(fd[1], &d, sizeof(d));
		T_CHILD_CHECK(t_recv(go[0], &c, 1) == 0, 23);
		kvbm_fp_arm("hold.unpin.bit=stop");
		T_CHILD_CHECK(kvbm_release_blocks(q, &d, 1) == 0, 24);
		kvbm_pool_close(q);
		T_CHILD_OK();
	}
	ck_assert_int_eq(t_recv(fd[0], &dup, sizeof(dup)), 0);
	ck_assert_uint_ne(dup.id, prim.id);
	t_send(go[1], "g", 1);
	wait_stopped(pid);
	struct kvbm_weak w = {dup, h};
	struct kvbm_block again;
	ck_assert_int_eq(kvbm_upgrade_block(p, &w, &again), 1);
	ck_assert_uint_eq(again.id, dup.id);
	ck_assert_int_eq(kill(pid, SIGCONT), 0);
	ck_assert_int_eq(t_wait(pid), 0);
	struct kvbm_metrics mt = t_metrics(p);
	ck_assert_uint_eq(mt.release_duplicate_noop, 1);
	ck_assert_uint_eq(mt.release_primary_noop, 0);
	struct kvbm_block_info bi;
	ck_assert_int_eq(kvbm_block_info(p, &again, &bi), 0);
	ck_assert_uint_eq(bi.state, KVBM_BLOCK_REGISTERED);
	ck_assert_int_eq(bi.primary, 0);
	t_release(p, &again, 1); /* its last release frees it */
	ck_assert_int_eq(kvbm_block_info(p, &again, &bi), KVBM_ESTALE);
	t_release(p, &prim, 1);
	ck_assert_uint_eq(t_metrics(p).release_duplicate_noop, 1);
	close(fd[0]);
	close(fd[1]);
	close(go[0]);
	close(go[1]);
	t_done(p, name);
}
END_TEST

/*
 * allocate_atomic_rollback_total: a matcher stopped inside its resurrection
 * window (the block's INACTIVE mark cleared, the inactive count not yet
 * lowered) makes the count promise one block more than the eviction order
 * has. An allocation of everything counted then finds one victim short,
 * puts everything back (all or nothing) and counts the rollback.
 */
START_TEST(test_allocate_atomic_rollback_counts)
{
	T_NAME(name);
	enum { N = 8 };
	struct kvbm_pool *p = t_pool(name, N);
	struct kvbm_plh h[N];
	struct kvbm_block b[N];

	t_seq_hashes(1, N, BS, h);
	t_register(p, h, N, b);
	t_release(p, b, N);
	ck_assert_uint_eq(t_metrics(p).allocate_atomic_rollback, 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = attach(name);
		struct kvbm_block m;
		kvbm_fp_arm("hold.pin.taken=stop");
		T_CHILD_CHECK(kvbm_match_blocks(q, h, 1, &m) == 1, 30);
		T_CHILD_CHECK(kvbm_release_blocks(q, &m, 1) == 0, 31);
		kvbm_pool_close(q);
		T_CHILD_OK();
	}
	wait_stopped(pid);
	ck_assert_int_eq(kvbm_available_blocks(p), N); /* the stale promise */
	ck_assert_int_eq(kvbm_allocate_blocks(p, N, b, NULL, NULL), -ENOSPC);
	ck_assert_uint_eq(t_metrics(p).allocate_atomic_rollback, 1);
	/* nothing was taken: every block but the one being matched is still
	 * cached and evictable */
	ck_assert_int_eq(kvbm_allocate_blocks(p, N - 1, b, NULL, NULL), 0);
	t_release(p, b, N - 1);
	ck_assert_int_eq(kill(pid, SIGCONT), 0);
	ck_assert_int_eq(t_wait(pid), 0);
	ck_assert_int_eq(kvbm_allocate_blocks(p, N, b, NULL, NULL), 0);
	t_release(p, b, N);
	ck_assert_uint_eq(t_metrics(p).allocate_atomic_rollback, 1);
	t_done(p, name);
}
END_TEST

/* The reference registry's touch: counts a hash in the sketch without a
 * match, a registration, a hold or a callback. */
START_TEST(test_frequency_touch)
{
	T_NAME(name);
	T_NAME(none);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h = t_hash1(30, BS), other = t_hash1(40, BS);
	uint8_t present;

	cfg.block_count = 16;
	cfg.tinylfu = KVBM_TINYLFU_SMALL;
	struct kvbm_pool *p = t_create(name, &cfg);
	ck_assert_int_eq(kvbm_frequency_estimate(p, h), 0);
	ck_assert_int_eq(kvbm_frequency_touch(p, h), 1);
	ck_assert_int_eq(kvbm_frequency_touch(p, h), 2);
	ck_assert_int_eq(kvbm_frequency_touch(p, h), 3);
	ck_assert_int_eq(kvbm_frequency_estimate(p, h), 3);
	ck_assert_int_eq(kvbm_frequency_estimate(p, other), 0);
	for (int i = 0; i < 20; i++)
		kvbm_frequency_touch(p, h);
	ck_assert_int_eq(kvbm_frequency_estimate(p, h), 15); /* 4-bit counters */
	ck_assert_int_eq(kvbm_check_presence(p, &h, 1, &present), 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 16);
	ck_assert_int_eq(kvbm_touch(p, h), -ENOENT); /* the callbacks: another call */
	ck_assert_int_eq(kvbm_frequency_touch(NULL, h), -EINVAL);
	t_done(p, name);

	cfg.tinylfu = KVBM_TINYLFU_NONE;
	p = t_create(none, &cfg);
	ck_assert_int_eq(kvbm_frequency_touch(p, h), 0);
	ck_assert_int_eq(kvbm_frequency_estimate(p, h), 0);
	t_done(p, none);
}
END_TEST

/* The number of registered hashes: primaries, active or inactive; not
 * duplicates; gone with eviction and reset. */
START_TEST(test_registered_count)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 16);
	struct kvbm_plh h[4];
	struct kvbm_block b[4], d, all[16];

	ck_assert_int_eq(kvbm_registered_count(p), 0);
	t_seq_hashes(1, 4, BS, h);
	t_register(p, h, 4, b);
	ck_assert_int_eq(kvbm_registered_count(p), 4);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &d, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_stage_block(p, &d, h[0], BS), 0); /* t_cfg: DUP_ALLOW */
	ck_assert_int_eq(kvbm_registered_count(p), 4);
	ck_assert_int_eq(kvbm_register_blocks(p, &d, 1), 0);
	ck_assert_int_eq(kvbm_registered_count(p), 4); /* a duplicate */
	t_release(p, &d, 1);
	t_release(p, b, 4);
	ck_assert_int_eq(kvbm_registered_count(p), 4); /* inactive still count */
	ck_assert_int_eq(kvbm_allocate_blocks(p, 14, all, NULL, NULL), 0); /* evicts 2 */
	ck_assert_int_eq(kvbm_registered_count(p), 2);
	t_release(p, all, 14);
	ck_assert_int_eq(kvbm_reset_inactive_pool(p), 0);
	ck_assert_int_eq(kvbm_registered_count(p), 0);
	ck_assert_int_eq(kvbm_registered_count(NULL), -EINVAL);
	t_done(p, name);
}
END_TEST

Suite *make_audit_suite(void)
{
	Suite *s = suite_create("audit");
	TCase *tc = tcase_create("audit");

	tcase_add_test(tc, test_late_primary_release_is_a_noop_and_nothing_is_eager);
	tcase_add_test(tc, test_late_duplicate_release_is_a_noop);
	tcase_add_test(tc, test_allocate_atomic_rollback_counts);
	tcase_add_test(tc, test_frequency_touch);
	tcase_add_test(tc, test_registered_count);
	suite_add_tcase(s, tc);
	return s;
}
