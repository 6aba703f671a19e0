/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_recovery_load.c - recovery under load never poisons a sound pool
 * (issue 14, defect 1).
 *
 * Recovery ends with the invariant checker, under the mutex but while
 * other processes pin and unpin lock-free. Here workers match and release,
 * in a tight loop, blocks that the parent also holds (so each of their
 * pins and unpins flips their holder bit and entry, and no release ever
 * needs the mutex), while victims, one after another, are SIGKILLed
 * holding the mutex at the block store's failpoints and the parent
 * recovers. A checker that reads a holder bit and then an entry the worker
 * just cleared calls a legal interleaving corruption and poisons the pool:
 * the run counts poisonings, which must be 0.
 *
 * KVBM_LOAD_SECONDS (default 12) sets how long it runs; a longer soak is
 * one environment variable away.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "../shm/failpoint.h"

#define BS 4

enum { TOTAL = 64, HELD = 24, WORKERS = 2 };

/* Points under the mutex: the victim dies holding it at one of them. */
static const char *const mutex_points[] = {
	"block.allocate.popped",    "block.allocate.victims", "store.evict.marked",
	"store.evict.committed",    "store.evict.unindexed",  "block.register.published",
	"store.settle.counted",     "store.settle.inactive",  "store.free.owned",
};
#define NPOINTS (sizeof(mutex_points) / sizeof(mutex_points[0]))

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Matches and releases the parent's held blocks until killed: every
 * match sets this process's holder bit on each, every release clears it. */
static void worker(const char *name, const struct kvbm_plh *h)
{
	struct kvbm_pool *q = NULL;
	struct kvbm_block out[HELD];

	if (kvbm_pool_open(name, NULL, 0, &q) != 0)
		_exit(90);
	for (unsigned i = 0;; i++) {
		/* a different prefix length each time: the last pins move */
		uint32_t n = 1 + i % HELD;
		long k = kvbm_match_blocks(q, h, n, out);
		if (k == KVBM_EPOISONED)
			_exit(0); /* the parent counts it */
		if (k != (long)n)
			_exit(91);
		int r = kvbm_release_blocks(q, out, (uint32_t)k);
		if (r == KVBM_EPOISONED)
			_exit(0);
		if (r != 0)
			_exit(92);
	}
}

/* Takes the mutex for an allocation, a registration and releases, and is
 * killed at @point inside one of them. */
static int victim(const char *name, struct kvbm_plh key, const char *point)
{
	struct kvbm_pool *q = NULL;
	struct kvbm_block b[2];

	if (kvbm_pool_open(name, NULL, 0, &q) != 0)
		return 80;
	kvbm_fp_arm(point);
	if (kvbm_allocate_blocks(q, 2, b, NULL, NULL) != 0)
		return 81;
	if (kvbm_stage_block(q, &b[0], key, BS) != 0 || kvbm_register_blocks(q, b, 1) != 0)
		return 82;
	if (kvbm_release_blocks(q, b, 2) != 0)
		return 83;
	kvbm_pool_close(q);
	return 77; /* the point was not on the way */
}

struct load_result {
	long recoveries, poisoned, rounds;
};

/* One pool: workers start, victims die until @deadline or a poisoning. */
static void one_pool(double deadline, unsigned *seed, struct load_result *res)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[HELD];
	struct kvbm_block held[HELD];
	pid_t w[WORKERS];

	cfg.block_count = TOTAL;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, HELD, BS, h);
	t_register(p, h, HELD, held); /* held by us for the whole run */
	for (int i = 0; i < WORKERS; i++) {
		w[i] = fork();
		ck_assert_int_ge(w[i], 0);
		if (w[i] == 0)
			worker(name, h);
	}
	uint64_t before = 0;
	while (now_s() < deadline) {
		const char *point = mutex_points[rand_r(seed) % NPOINTS];
		struct kvbm_plh key = t_hash1(100000 + (uint32_t)(res->rounds % 4096), BS);
		pid_t v = fork();
		ck_assert_int_ge(v, 0);
		if (v == 0)
			_exit(victim(name, key, point));
		int st = t_wait(v);
		ck_assert_msg(st == 128 + SIGKILL || st == 77, "victim exit %d at %s", st, point);
		res->rounds++;
		/* the lock recovers from the victim's death (and reaps it) */
		int r = kvbm_reap(p);
		if (r == KVBM_EPOISONED) {
			res->poisoned++;
			res->recoveries++;
			break;
		}
		ck_assert_msg(r >= 0, "reap: %s", kvbm_strerror(r));
		struct kvbm_pool_info pi;
		ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
		res->recoveries += (long)(pi.recoveries - before);
		before = pi.recoveries;
	}
	for (int i = 0; i < WORKERS; i++) {
		kill(w[i], SIGKILL);
		int st = t_wait(w[i]);
		ck_assert_msg(st == 128 + SIGKILL || st == 0, "worker exit %d", st);
	}
	if (res->poisoned == 0) {
		/* a sound pool after all that: the workers' deaths reaped, the
		 * parent's holds intact, every invariant exact */
		ck_assert_int_ge(kvbm_reap(p), 0);
		t_release(p, held, HELD);
		ck_assert_int_eq(t_check(p), 0);
	}
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, KVBM_DESTROY_FORCE);
}

START_TEST(test_recovery_under_load_never_poisons)
{
	const char *env = getenv("KVBM_LOAD_SECONDS");
	double secs = env ? atof(env) : 12.0;
	double deadline = now_s() + secs;
	unsigned seed = (unsigned)getpid();
	struct load_result res = {0, 0, 0}, total = {0, 0, 0};

	/* a poisoned pool is replaced, so the rate can be measured */
	while (now_s() < deadline) {
		res = (struct load_result){0, 0, 0};
		one_pool(deadline, &seed, &res);
		total.recoveries += res.recoveries;
		total.poisoned += res.poisoned;
		total.rounds += res.rounds;
	}
	fprintf(stderr, "recovery under load: %ld victims, %ld recoveries, %ld poisoned (%.2f%%)\n",
		total.rounds, total.recoveries, total.poisoned,
		total.recoveries ? 100.0 * (double)total.poisoned / (double)total.recoveries : 0.0);
	ck_assert_int_gt(total.recoveries, 0);
	ck_assert_msg(total.poisoned == 0, "%ld of %ld recoveries poisoned a sound pool",
		      total.poisoned, total.recoveries);
}
END_TEST

Suite *make_recovery_load_suite(void)
{
	Suite *s = suite_create("recovery_load");
	TCase *tc = tcase_create("recovery_load");

	const char *env = getenv("KVBM_LOAD_SECONDS");

	/* the run is bounded by KVBM_LOAD_SECONDS; a minute more to end it */
	tcase_set_timeout(tc, (env ? atof(env) : 12.0) + 60.0);
	tcase_add_test(tc, test_recovery_under_load_never_poisons);
	suite_add_tcase(s, tc);
	return s;
}
