/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_attach.c - attachments and touch callbacks, ported from
 * kvbm-logical's registry tests (attachments, touch callbacks), plus their
 * lifetime in a shared pool and a threaded race.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define BS 4
enum { TYPE_A = 1, TYPE_B = 2, TYPE_C = 3 };

static int freed;
static void count_free(void *v)
{
	(void)v;
	__atomic_fetch_add(&freed, 1, __ATOMIC_RELAXED);
}

static void sum_values(void *v, void *arg)
{
	*(long *)arg += *(int *)v;
}

static void add_ten(void *v, void *arg)
{
	(void)arg;
	*(int *)v += 10;
}

/* One registered block under hash @h, released: it stays inactive. */
static struct kvbm_plh registered(struct kvbm_pool *p, uint32_t id)
{
	struct kvbm_plh h = t_hash1(id, BS);
	struct kvbm_block b;

	t_register(p, &h, 1, &b);
	t_release(p, &b, 1);
	return h;
}

START_TEST(test_type_tracking_enforcement)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h = registered(p, 1);
	int a = 1, b = 2;

	ck_assert_int_eq(kvbm_attach_unique(p, h, TYPE_A, &a, NULL), 0);
	ck_assert_int_eq(kvbm_attach_multiple(p, h, TYPE_A, &b, NULL), KVBM_EUNIQUE);
	ck_assert_int_eq(kvbm_attach_multiple(p, h, TYPE_B, &a, NULL), 0);
	ck_assert_int_eq(kvbm_attach_unique(p, h, TYPE_B, &b, NULL), KVBM_EMULTIPLE);
	ck_assert_int_eq(kvbm_attachment_kind(p, h, TYPE_A), 1);
	ck_assert_int_eq(kvbm_attachment_kind(p, h, TYPE_B), 2);
	ck_assert_int_eq(kvbm_attachment_kind(p, h, TYPE_C), 0);
	/* the failed attaches changed nothing */
	long sum = 0;
	ck_assert_int_eq(kvbm_attachments_each(p, h, TYPE_A, sum_values, &sum), 1);
	ck_assert_int_eq(sum, 1);
	t_done(p, name);
}
END_TEST

START_TEST(test_different_types_usage)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h = registered(p, 1);
	int u = 5, m1 = 1, m2 = 2, m3 = 3;
	long sum = 0;

	ck_assert_int_eq(kvbm_attach_unique(p, h, TYPE_A, &u, NULL), 0);
	ck_assert_int_eq(kvbm_attach_multiple(p, h, TYPE_B, &m1, NULL), 0);
	ck_assert_int_eq(kvbm_attach_multiple(p, h, TYPE_B, &m2, NULL), 0);
	ck_assert_int_eq(kvbm_attach_multiple(p, h, TYPE_B, &m3, NULL), 0);
	ck_assert_int_eq(kvbm_attachments_each(p, h, TYPE_A, sum_values, &sum), 1);
	ck_assert_int_eq(sum, 5);
	sum = 0;
	ck_assert_int_eq(kvbm_attachments_each(p, h, TYPE_B, sum_values, &sum), 3);
	ck_assert_int_eq(sum, 6);
	ck_assert_int_eq(kvbm_attachments_each(p, h, TYPE_C, sum_values, &sum), 0);
	t_done(p, name);
}
END_TEST

/* with_unique_mut, and attach_unique replacing (and dropping) the old value */
START_TEST(test_mutable_access)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h = registered(p, 1);
	int *v1 = malloc(sizeof(int)), *v2 = malloc(sizeof(int));
	long sum = 0;

	*v1 = 1;
	*v2 = 2;
	freed = 0;
	ck_assert_int_eq(kvbm_attach_unique(p, h, TYPE_A, v1, free), 0);
	ck_assert_int_eq(kvbm_attachments_each(p, h, TYPE_A, add_ten, NULL), 1);
	ck_assert_int_eq(kvbm_attachments_each(p, h, TYPE_A, sum_values, &sum), 1);
	ck_assert_int_eq(sum, 11);
	ck_assert_int_eq(kvbm_attach_unique(p, h, TYPE_A, v2, free), 0); /* v1 freed */
	sum = 0;
	ck_assert_int_eq(kvbm_attachments_each(p, h, TYPE_A, sum_values, &sum), 1);
	ck_assert_int_eq(sum, 2);
	t_done(p, name); /* v2 freed at close (ASan would see a leak) */
}
END_TEST

START_TEST(test_with_all_mut_multiple)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h = registered(p, 1);
	int m[3] = {1, 2, 3};
	long sum = 0;

	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(kvbm_attach_multiple(p, h, TYPE_B, &m[i], NULL), 0);
	ck_assert_int_eq(kvbm_attachments_each(p, h, TYPE_B, add_ten, NULL), 3);
	ck_assert_int_eq(m[0] + m[1] + m[2], 36);
	ck_assert_int_eq(kvbm_attachments_each(p, h, TYPE_B, sum_values, &sum), 3);
	ck_assert_int_eq(sum, 36);
	t_done(p, name);
}
END_TEST

START_TEST(test_with_all_mut_no_attachments)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h = registered(p, 1);

	ck_assert_int_eq(kvbm_attachments_each(p, h, TYPE_A, add_ten, NULL), 0);
	ck_assert_int_eq(kvbm_attachment_kind(p, h, TYPE_A), 0);
	ck_assert_int_eq(kvbm_attachments_clear(p, h), -ENOENT);
	ck_assert_int_eq(kvbm_attachments_each(p, h, TYPE_A, NULL, NULL), -EINVAL);
	t_done(p, name);
}
END_TEST

START_TEST(test_attachment_error_display)
{
	ck_assert_str_eq(kvbm_strerror(KVBM_EMULTIPLE),
			 "type already registered as multiple attachment");
	ck_assert_str_eq(kvbm_strerror(KVBM_EUNIQUE),
			 "type already registered as unique attachment");
}
END_TEST

struct touch_rec {
	int calls;
	struct kvbm_plh last;
};
static void on_touch_rec(struct kvbm_plh h, void *arg)
{
	struct touch_rec *r = arg;
	__atomic_fetch_add(&r->calls, 1, __ATOMIC_RELAXED);
	r->last = h;
}

START_TEST(test_touch_callback_fires)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h = registered(p, 1);
	struct touch_rec r = {0};

	ck_assert_int_eq(kvbm_on_touch(p, h, on_touch_rec, &r), 0);
	ck_assert_int_eq(kvbm_touch(p, h), 1);
	ck_assert_int_eq(r.calls, 1);
	kvbm_touch(p, h);
	kvbm_touch(p, h);
	ck_assert_int_eq(r.calls, 3);
	t_done(p, name);
}
END_TEST

START_TEST(test_touch_multiple_callbacks)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h = registered(p, 1);
	struct touch_rec r1 = {0}, r2 = {0};

	ck_assert_int_eq(kvbm_on_touch(p, h, on_touch_rec, &r1), 0);
	ck_assert_int_eq(kvbm_on_touch(p, h, on_touch_rec, &r2), 0);
	ck_assert_int_eq(kvbm_touch(p, h), 2);
	ck_assert_int_eq(r1.calls, 1);
	ck_assert_int_eq(r2.calls, 1);
	t_done(p, name);
}
END_TEST

START_TEST(test_touch_no_callbacks_is_noop)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h = registered(p, 1);

	ck_assert_int_eq(kvbm_touch(p, h), 0);
	/* an unregistered hash is an error, not a silent no-op */
	ck_assert_int_eq(kvbm_touch(p, t_hash1(99, BS)), -ENOENT);
	ck_assert_int_eq(kvbm_on_touch(p, t_hash1(99, BS), on_touch_rec, NULL), -ENOENT);
	ck_assert_int_eq(kvbm_attach_unique(p, t_hash1(99, BS), TYPE_A, &freed, NULL), -ENOENT);
	t_done(p, name);
}
END_TEST

START_TEST(test_touch_callback_receives_correct_hash)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h1 = registered(p, 1), h2 = registered(p, 100);
	struct touch_rec r1 = {0}, r2 = {0};

	ck_assert_int_eq(kvbm_on_touch(p, h1, on_touch_rec, &r1), 0);
	ck_assert_int_eq(kvbm_on_touch(p, h2, on_touch_rec, &r2), 0);
	kvbm_touch(p, h2);
	ck_assert_int_eq(r1.calls, 0);
	ck_assert_int_eq(r2.calls, 1);
	ck_assert(kvbm_plh_eq(r2.last, h2));
	t_done(p, name);
}
END_TEST

/*
 * Attachments live exactly as long as their registration: a resurrection
 * keeps them, an eviction drops them (free functions called), and a new
 * registration of the same hash starts empty.
 */
START_TEST(test_attachment_lifetime_follows_registration)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 2);
	struct kvbm_plh h = registered(p, 1);
	struct kvbm_block b[2];
	int *v = malloc(sizeof(int));

	*v = 7;
	freed = 0;
	ck_assert_int_eq(kvbm_attach_unique(p, h, TYPE_A, v, count_free), 0);
	/* resurrect and release again: same registration */
	ck_assert_int_eq(kvbm_match_blocks(p, &h, 1, b), 1);
	t_release(p, b, 1);
	ck_assert_int_eq(kvbm_attachment_kind(p, h, TYPE_A), 1);
	ck_assert_int_eq(freed, 0);
	/* evict it: allocate the whole pool */
	ck_assert_int_eq(kvbm_allocate_blocks(p, 2, b, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_attachment_kind(p, h, TYPE_A), -ENOENT);
	ck_assert_int_eq(freed, 1);
	free(v); /* count_free does not free */
	t_release(p, b, 2);
	/* registered again: no attachments carried over */
	ck_assert(kvbm_plh_eq(registered(p, 1), h));
	ck_assert_int_eq(kvbm_attachment_kind(p, h, TYPE_A), 0);
	ck_assert_int_eq(kvbm_touch(p, h), 0);
	t_done(p, name);
}
END_TEST

START_TEST(test_attachments_sweep_and_clear)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 8);
	struct kvbm_plh h[4];
	static int vals[4];

	freed = 0;
	for (int i = 0; i < 4; i++) {
		h[i] = registered(p, 10 * (uint32_t)i + 1);
		ck_assert_int_eq(kvbm_attach_multiple(p, h[i], TYPE_B, &vals[i], count_free), 0);
		ck_assert_int_eq(kvbm_attach_multiple(p, h[i], TYPE_B, &vals[i], count_free), 0);
	}
	ck_assert_int_eq(kvbm_attachments_sweep(p), 0); /* all still registered */
	ck_assert_int_eq(kvbm_attachments_clear(p, h[0]), 2);
	ck_assert_int_eq(freed, 2);
	ck_assert_int_eq(kvbm_attachments_clear(p, h[0]), -ENOENT);
	/* evict everything: the sweep drops the three remaining entries */
	ck_assert_int_eq(kvbm_reset_inactive_pool(p), 0);
	ck_assert_int_eq(kvbm_attachments_sweep(p), 3);
	ck_assert_int_eq(freed, 8);
	ck_assert_int_eq(kvbm_attachments_sweep(p), 0);
	t_done(p, name);
}
END_TEST

/* Attachments are process-local: another process sees the hash registered
 * but none of our values, and its own live only in it. */
START_TEST(test_attachments_are_per_process)
{
	T_NAME(name);
	struct kvbm_pool *p = t_pool(name, 10);
	struct kvbm_plh h = registered(p, 1);
	int v = 1;

	ck_assert_int_eq(kvbm_attach_unique(p, h, TYPE_A, &v, NULL), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q;
		/* the parent's handle is unusable here, and closing it must not
		 * run the parent's free functions */
		T_CHILD_CHECK(kvbm_attachment_kind(p, h, TYPE_A) == KVBM_EFORKED, 2);
		T_CHILD_CHECK(kvbm_pool_open(name, NULL, 0, &q) == 0, 3);
		T_CHILD_CHECK(kvbm_attachment_kind(q, h, TYPE_A) == 0, 4);
		T_CHILD_CHECK(kvbm_attach_multiple(q, h, TYPE_A, &v, NULL) == 0, 5);
		T_CHILD_CHECK(kvbm_attachment_kind(q, h, TYPE_A) == 2, 6);
		kvbm_pool_close(q);
		T_CHILD_OK();
	}
	ck_assert_int_eq(t_wait(pid), 0);
	ck_assert_int_eq(kvbm_attachment_kind(p, h, TYPE_A), 1);
	t_done(p, name);
}
END_TEST

/*
 * Threads attach, read, touch and sweep while others evict and re-register
 * the same hashes: every value is freed exactly once (counted against what
 * was attached), nothing is read after its free (ASan), and TSan sees the
 * RCU publication and grace periods through their annotations.
 */
#define RACE_HASHES 8
#define RACE_ITERS 3000
struct race_ctx {
	struct kvbm_pool *p;
	struct kvbm_plh h[RACE_HASHES];
	int attached;
	int stop;
};

static void race_free(void *v)
{
	free(v);
	__atomic_fetch_add(&freed, 1, __ATOMIC_RELAXED);
}

static void race_read(void *v, void *arg)
{
	*(long *)arg += *(int *)v;
}

static void *race_attacher(void *arg)
{
	struct race_ctx *c = arg;
	unsigned seed = (unsigned)(uintptr_t)&seed;

	for (int i = 0; i < RACE_ITERS; i++) {
		struct kvbm_plh h = c->h[rand_r(&seed) % RACE_HASHES];
		int *v = malloc(sizeof(int));
		*v = 1;
		if (kvbm_attach_multiple(c->p, h, TYPE_B, v, race_free) == 0)
			__atomic_fetch_add(&c->attached, 1, __ATOMIC_RELAXED);
		else
			free(v);
		long sum = 0;
		long n = kvbm_attachments_each(c->p, h, TYPE_B, race_read, &sum);
		if (n >= 0 && sum != n)
			abort(); /* a value read after its free, or torn */
		(void)kvbm_touch(c->p, h);
		if (i % 97 == 0)
			(void)kvbm_attachments_sweep(c->p);
		if (i % 131 == 0)
			(void)kvbm_attachments_clear(c->p, h);
	}
	return NULL;
}

static void *race_evictor(void *arg)
{
	struct race_ctx *c = arg;

	while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED)) {
		struct kvbm_block b[RACE_HASHES];
		/* everything inactive is evicted, then registered anew */
		int r = kvbm_reset_inactive_pool(c->p);
		if (r < 0 && r != -EBUSY) /* EBUSY: the hash the test holds */
			abort();
		for (int i = 0; i < RACE_HASHES; i++) {
			if (kvbm_allocate_blocks(c->p, 1, &b[i], NULL, NULL) < 0 ||
			    kvbm_stage_block(c->p, &b[i], c->h[i], BS) < 0 ||
			    kvbm_register_blocks(c->p, &b[i], 1) < 0)
				abort();
		}
		if (kvbm_release_blocks(c->p, b, RACE_HASHES) < 0)
			abort();
	}
	return NULL;
}

START_TEST(test_attachments_thread_race)
{
	T_NAME(name);
	struct race_ctx c = {.p = t_pool(name, 64)};
	pthread_t att[2], ev;

	freed = 0;
	for (int i = 0; i < RACE_HASHES; i++)
		c.h[i] = registered(c.p, 100 * (uint32_t)i + 1);
	/* one hash stays registered throughout (we hold it), so some attaches
	 * succeed however the threads are scheduled; on a loaded machine the
	 * evictor could otherwise keep every other hash away from them */
	struct kvbm_block keep;
	ck_assert_int_eq(kvbm_match_blocks(c.p, &c.h[0], 1, &keep), 1);
	pthread_create(&ev, NULL, race_evictor, &c);
	for (int i = 0; i < 2; i++)
		pthread_create(&att[i], NULL, race_attacher, &c);
	for (int i = 0; i < 2; i++)
		pthread_join(att[i], NULL);
	__atomic_store_n(&c.stop, 1, __ATOMIC_RELAXED);
	pthread_join(ev, NULL);
	t_release(c.p, &keep, 1);
	ck_assert_int_gt(c.attached, 0);
	t_done(c.p, name);
	/* close dropped the rest: every attached value freed exactly once */
	ck_assert_int_eq(freed, c.attached);
}
END_TEST

/* What the callback of test_attach_from_each_callback does, and saw. */
struct reenter {
	struct kvbm_pool *p;
	struct kvbm_block held;
	struct kvbm_plh self, other;
	int r_self, r_other, r_clear;
};

static void reenter_cb(void *v, void *arg)
{
	struct reenter *x = arg;
	static int w = 7;

	(void)v;
	/* our own entry goes stale under us: a sweep would want its lock */
	t_release(x->p, &x->held, 1);
	(void)kvbm_reset_inactive_pool(x->p); /* -EBUSY: others are held */
	x->r_self = kvbm_attach_multiple(x->p, x->self, 1, &w, NULL);
	x->r_clear = (int)kvbm_attachments_clear(x->p, x->self);
	/* the table is over its sweep threshold: this attach sweeps */
	x->r_other = kvbm_attach_multiple(x->p, x->other, 1, &w, NULL);
}

/*
 * A kvbm_attachments_each callback attaches to another hash, which sweeps
 * the stale entries, its own (made stale by the callback) among them; and
 * calls on its own hash. No self-deadlock: the sweep skips the entry the
 * callback runs under, the calls on it get KVBM_EDEADLK.
 */
START_TEST(test_attach_from_each_callback)
{
	T_NAME(name);
	enum { STALE = 300, TOTAL = 512 };
	struct kvbm_pool *p = t_pool(name, TOTAL);
	static int vals[STALE];
	struct reenter x = {.p = p};
	int v = 1;

	/* more stale entries than the smallest table's sweep threshold */
	for (uint32_t i = 0; i < STALE; i++)
		ck_assert_int_eq(kvbm_attach_unique(p, registered(p, 10 * i + 5), 1, &vals[i], NULL),
				 0);
	ck_assert_int_eq(kvbm_reset_inactive_pool(p), 0);
	x.self = t_hash1(90001, BS);
	struct kvbm_block ob;
	x.other = t_hash1(90011, BS);
	t_register(p, &x.other, 1, &ob); /* held: the callback's reset spares it */
	t_register(p, &x.self, 1, &x.held);
	ck_assert_int_eq(kvbm_attach_multiple(p, x.self, 1, &v, NULL), 0);
	ck_assert_int_eq(kvbm_attachments_each(p, x.self, 1, reenter_cb, &x), 1);
	ck_assert_int_eq(x.r_self, KVBM_EDEADLK);
	ck_assert_int_eq(x.r_clear, KVBM_EDEADLK);
	ck_assert_int_eq(x.r_other, 0);
	/* the entry left stale goes with a later sweep */
	ck_assert_int_ge(kvbm_attachments_sweep(p), 1);
	ck_assert_int_eq(kvbm_attachments_each(p, x.self, 1, reenter_cb, &x), -ENOENT);
	t_release(p, &ob, 1);
	t_done(p, name);
}
END_TEST

Suite *make_attach_suite(void)
{
	Suite *s = suite_create("attach");
	TCase *tc = tcase_create("registry");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_type_tracking_enforcement);
	tcase_add_test(tc, test_different_types_usage);
	tcase_add_test(tc, test_mutable_access);
	tcase_add_test(tc, test_with_all_mut_multiple);
	tcase_add_test(tc, test_with_all_mut_no_attachments);
	tcase_add_test(tc, test_attachment_error_display);
	tcase_add_test(tc, test_touch_callback_fires);
	tcase_add_test(tc, test_touch_multiple_callbacks);
	tcase_add_test(tc, test_touch_no_callbacks_is_noop);
	tcase_add_test(tc, test_touch_callback_receives_correct_hash);
	tcase_add_test(tc, test_attachment_lifetime_follows_registration);
	tcase_add_test(tc, test_attachments_sweep_and_clear);
	tcase_add_test(tc, test_attachments_are_per_process);
	tcase_add_test(tc, test_attachments_thread_race);
	tcase_add_test(tc, test_attach_from_each_callback);
	suite_add_tcase(s, tc);
	return s;
}
