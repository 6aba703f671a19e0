/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_mproc.c - the block store across processes (fork): one process
 * registers and the others match; pins race evictions; processes race for
 * all the blocks at once; a dead holder's blocks come back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdint.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "../shm/failpoint.h"
#include "../shm/segment.h"

#define BS 4

/* kvbm_pool_open() flags of the children a test forks, and whether their
 * handles are made thread-safe (shared) before use */
static unsigned attach_flags;
static int attach_shared;

static void *call_once(void *arg)
{
	return (void *)(intptr_t)kvbm_total_blocks(arg);
}

static struct kvbm_pool *attach(const char *name)
{
	struct kvbm_pool *p = NULL;
	pthread_t t;
	void *r;

	if (kvbm_pool_open(name, NULL, attach_flags, &p) != 0)
		_exit(90);
	/* another thread's first call revokes the bias: from then on the
	 * handle takes the atomic (CAS and stripe lock) paths */
	if (attach_shared && (pthread_create(&t, NULL, call_once, p) != 0 ||
			      pthread_join(t, &r) != 0 || (intptr_t)r <= 0))
		_exit(91);
	return p;
}

/* Every block free or inactive, no hold and no mutable block left. */
static void assert_quiescent(struct kvbm_pool *p, long total)
{
	ck_assert_int_eq(t_check(p), 0);
	struct kvbm_metrics m = t_metrics(p);

	ck_assert_int_eq(kvbm_available_blocks(p), total);
	ck_assert_int_eq(m.reset_pool_size + m.inactive_pool_size, total);
	ck_assert_int_eq(m.inflight_immutable, 0);
	ck_assert_int_eq(m.inflight_mutable, 0);
	ck_assert_int_eq(t_check(p), 0);
}

START_TEST(test_registered_in_one_process_matched_by_others)
{
	T_NAME(name);
	enum { N = 8, READERS = 4 };
	struct kvbm_pool *p = t_create(name, NULL);
	struct kvbm_plh h[N];
	struct t_gate go;
	int fd[2];
	pid_t pids[READERS + 1];

	t_seq_hashes(123, N, BS, h);
	ck_assert_int_eq(pipe(fd), 0);
	t_gate_init(&go);
	pids[0] = fork();
	if (pids[0] == 0) {
		struct kvbm_pool *q = attach(name);
		struct kvbm_block b[N];
		t_register(q, h, N, b);
		t_send(fd[1], b, sizeof(b)); /* tell the parent which blocks */
		t_gate_wait(&go);            /* hold them until the readers are done */
		T_CHILD_CHECK(kvbm_release_blocks(q, b, N) == 0, 2);
		T_CHILD_CHECK(kvbm_pool_close(q) == 0, 3);
		T_CHILD_OK();
	}
	struct kvbm_block reg[N];
	ck_assert_int_eq(t_recv(fd[0], reg, sizeof(reg)), 0);
	for (int r = 0; r < READERS; r++) {
		pids[r + 1] = fork();
		if (pids[r + 1] == 0) {
			struct kvbm_pool *q = attach(name);
			struct kvbm_block out[N];
			T_CHILD_CHECK(kvbm_match_blocks(q, h, N, out) == N, 10);
			for (int i = 0; i < N; i++)
				T_CHILD_CHECK(out[i].id == reg[i].id && out[i].gen == reg[i].gen, 11);
			T_CHILD_CHECK(kvbm_release_blocks(q, out, N) == 0, 12);
			T_CHILD_CHECK(kvbm_pool_close(q) == 0, 13);
			T_CHILD_OK();
		}
	}
	for (int r = 1; r <= READERS; r++)
		ck_assert_int_eq(t_wait(pids[r]), 0);
	t_gate_open(&go);
	ck_assert_int_eq(t_wait(pids[0]), 0);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_uint_eq(m.match_blocks_returned, N * READERS);
	ck_assert_uint_eq(m.registrations, N);
	ck_assert_int_eq(m.inactive_pool_size, N);
	/* the parent, which never saw them registered, matches them too */
	struct kvbm_block out[N];
	ck_assert_int_eq(kvbm_match_blocks(p, h, N, out), N);
	t_release(p, out, N);
	assert_quiescent(p, 256);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/*
 * Readers pin inactive blocks while evictors allocate every block (evicting
 * them all) and register new ones. A reader that holds a block checks, for
 * as long as it holds it, that the slot still carries the generation and
 * key it matched: no pin survives an eviction.
 */
static int stress_reader(const char *name, const struct kvbm_plh *h, int nh, unsigned seed,
			 int rounds)
{
	struct kvbm_pool *q = attach(name);
	struct kvbm_block out[8];
	struct kvbm_block_info info;

	for (int r = 0; r < rounds; r++) {
		int k = (int)(rand_r(&seed) % (unsigned)(nh - 8));
		long n = kvbm_match_blocks(q, h + k, 8, out);
		if (n < 0)
			return 20;
		for (int spin = 0; spin < 3; spin++)
			for (long i = 0; i < n; i++) {
				if (kvbm_block_info(q, &out[i], &info) != 0)
					return 21; /* generation moved while held */
				if (info.state != KVBM_BLOCK_REGISTERED || info.holds < 1 ||
				    !kvbm_plh_eq(info.hash, h[k + i]))
					return 22;
			}
		/* a second hold on each and back: the count's fast paths (with
		 * KVBM_OPEN_ONE_THREAD, a plain load and store) while the
		 * evictors race for the slots */
		for (long i = 0; i < n; i++) {
			struct kvbm_block c;
			if (kvbm_clone_block(q, &out[i], &c) != 0 || kvbm_release_blocks(q, &c, 1) != 0)
				return 25;
		}
		if (kvbm_release_blocks(q, out, (uint32_t)n) != 0)
			return 23;
	}
	return kvbm_pool_close(q) == 0 ? 0 : 24;
}

static int stress_evictor(const char *name, const struct kvbm_plh *h, int nh, int total,
			  unsigned seed, int rounds)
{
	struct kvbm_pool *q = attach(name);
	struct kvbm_block *b = malloc(sizeof(*b) * (size_t)total);

	for (int r = 0; r < rounds; r++) {
		uint32_t n = 1 + rand_r(&seed) % (uint32_t)(total / 2);
		int e = kvbm_allocate_blocks(q, n, b, NULL, NULL);
		if (e == -ENOSPC)
			continue;
		if (e != 0)
			return 30;
		for (uint32_t i = 0; i < n; i++)
			if (kvbm_stage_block(q, &b[i], h[rand_r(&seed) % (unsigned)nh], BS) != 0)
				return 31;
		if (kvbm_register_blocks(q, b, n) != 0)
			return 32;
		if (kvbm_release_blocks(q, b, n) != 0)
			return 33;
	}
	free(b);
	return kvbm_pool_close(q) == 0 ? 0 : 34;
}

START_TEST(test_pin_vs_evict_stress)
{
	T_NAME(name);
	enum { TOTAL = 64, NH = 96, READERS = 3, EVICTORS = 2, ROUNDS = 3000 };
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[NH];
	struct kvbm_block b[TOTAL];
	pid_t pids[READERS + EVICTORS];

	/* runs 6-11: 0-5 again over S3-FIFO, ARC, W-TinyLFU, LeCaR and adapt,
	 * whose lazy queues race the pins as the default backend's forest does */
	static const enum kvbm_backend queued[] = {KVBM_BACKEND_S3FIFO, KVBM_BACKEND_ARC,
						   KVBM_BACKEND_WTINYLFU, KVBM_BACKEND_LECAR,
						   KVBM_BACKEND_ADAPT};
	int run = _i % 6;
	cfg.block_count = TOTAL;
	if (_i >= 6)
		cfg.backend = queued[_i % 5];
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, NH, BS, h);
	t_register(p, h, TOTAL, b);
	t_release(p, b, TOTAL);
	/* runs 2 and 3: the workers attach with KVBM_OPEN_ONE_THREAD; 0 and 1
	 * with biased handles (one writer while one thread calls); 4 and 5
	 * with handles made thread-safe, whose holds are CASes */
	attach_flags = run & 2 ? KVBM_OPEN_ONE_THREAD : 0;
	attach_shared = (run & 4) != 0;
	ck_assert_int_eq(kvbm_fp_arm("a=bogus"), -EINVAL);
	ck_assert_int_eq(kvbm_fp_arm("a:3=yield,b=kill"), 0);
	ck_assert_int_eq(kvbm_fp_arm(NULL), 0);
	for (int i = 0; i < READERS + EVICTORS; i++) {
		pids[i] = fork();
		if (pids[i] == 0 && (run & 1))
			/* second run: yield inside both halves of the pin/evict
			 * handshake, so the narrow interleavings happen */
			kvbm_fp_arm("hold.pin.tentative=yield,hold.pin.bit=yield,"
				    "store.evict.marked=yield,hold.unpin.tentative=yield,"
				    "hold.unpin.bit=yield,store.settle.counted=yield");
		if (pids[i] == 0)
			_exit(i < READERS ? stress_reader(name, h, NH, 7u * (unsigned)i + 1, ROUNDS)
					  : stress_evictor(name, h, NH, TOTAL, 13u * (unsigned)i + 5,
							   ROUNDS / 4));
	}
	for (int i = 0; i < READERS + EVICTORS; i++)
		ck_assert_int_eq(t_wait(pids[i]), 0);
	attach_flags = 0;
	attach_shared = 0;
	assert_quiescent(p, TOTAL);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_uint_gt(m.evictions, 0);
	ck_assert_uint_gt(m.match_blocks_returned, 0);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_allocate_atomic_no_over_commit_under_contention)
{
	T_NAME(name);
	enum { PROCS = 6, TOTAL = 32 };
	struct kvbm_config cfg = t_cfg();
	struct t_gate go, hold;
	int fd[2];
	pid_t pids[PROCS];

	cfg.block_count = TOTAL;
	struct kvbm_pool *p = t_create(name, &cfg);
	ck_assert_int_eq(pipe(fd), 0);
	t_gate_init(&go);
	t_gate_init(&hold);
	for (int i = 0; i < PROCS; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct kvbm_pool *q = attach(name);
			struct kvbm_block b[TOTAL];
			close(hold.fd[1]);
			t_gate_wait(&go);
			int r = kvbm_allocate_blocks(q, TOTAL, b, NULL, NULL);
			char won = r == 0;
			T_CHILD_CHECK(r == 0 || r == -ENOSPC, 40);
			t_send(fd[1], &won, 1);
			t_gate_wait(&hold); /* keep them until every racer has tried */
			if (won)
				T_CHILD_CHECK(kvbm_release_blocks(q, b, TOTAL) == 0, 41);
			T_CHILD_CHECK(kvbm_pool_close(q) == 0, 42);
			T_CHILD_OK();
		}
	}
	t_gate_open(&go);
	int winners = 0;
	for (int i = 0; i < PROCS; i++) {
		char won;
		ck_assert_int_eq(t_recv(fd[0], &won, 1), 0);
		winners += won;
	}
	ck_assert_int_eq(winners, 1);
	t_gate_open(&hold);
	for (int i = 0; i < PROCS; i++)
		ck_assert_int_eq(t_wait(pids[i]), 0);
	assert_quiescent(p, TOTAL);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* A child that takes @n blocks (registered and held, or MUTABLE) and waits
 * to be killed. Returns its pid once it holds them. */
static pid_t holder_child(const char *name, uint32_t n, int registered)
{
	int fd[2];
	char c = 1;

	ck_assert_int_eq(pipe(fd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = attach(name);
		struct kvbm_block *b = calloc(n, sizeof(*b));
		struct kvbm_plh *h = calloc(n, sizeof(*h));
		if (registered) {
			t_seq_hashes(7000, n, BS, h);
			t_register(q, h, n, b);
		} else {
			T_CHILD_CHECK(kvbm_allocate_blocks(q, n, b, NULL, NULL) == 0, 50);
		}
		t_send(fd[1], &c, 1);
		pause();
		_exit(53);
	}
	ck_assert_int_eq(t_recv(fd[0], &c, 1), 0);
	close(fd[0]);
	close(fd[1]);
	return pid;
}

/* An allocation that comes up short reaps first: the dead child's blocks
 * are what it needs. */
START_TEST(test_short_allocation_reaps_dead)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_block b[16];
	struct kvbm_pool_info pi;

	cfg.block_count = 16;
	struct kvbm_pool *p = t_create(name, &cfg);
	pid_t pid = holder_child(name, 12, _i);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 16, b, NULL, NULL), -ENOSPC);
	kill(pid, SIGKILL);
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 16, b, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	ck_assert_uint_eq(pi.procs_attached, 1);
	t_release(p, b, 16);
	assert_quiescent(p, 16);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* Nobody calls kvbm_reap(), nobody attaches, nothing runs short: the pool
 * mutex's acquisitions alone reap a dead holder within one interval. */
START_TEST(test_periodic_reaping)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);
	struct kvbm_pool_info pi;
	struct kvbm_block b;

	pid_t pid = holder_child(name, 8, 1);
	kill(pid, SIGKILL);
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	ck_assert_uint_eq(pi.procs_attached, 2); /* dead, not reaped yet */
	for (uint32_t i = 0; i < KVBM_REAP_INTERVAL; i++) {
		ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &b, NULL, NULL), 0);
		t_release(p, &b, 1);
	}
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	ck_assert_uint_eq(pi.procs_attached, 1);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_int_eq(m.inactive_pool_size, 8); /* its blocks stay cached */
	assert_quiescent(p, 256);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_dead_holder_blocks_come_back)
{
	T_NAME(name);
	enum { N = 6 };
	struct kvbm_pool *p = t_create(name, NULL);
	struct kvbm_plh h[N];
	struct kvbm_block mine[N], out[N];
	int fd[2];

	t_seq_hashes(50, N, BS, h);
	t_register(p, h, 2, mine); /* we hold 2 of them too */
	ck_assert_int_eq(pipe(fd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = attach(name);
		struct kvbm_block b[N], m[4];
		t_register(q, h + 2, N - 2, b);
		T_CHILD_CHECK(kvbm_match_blocks(q, h, 2, b + N - 2) == 2, 50);
		T_CHILD_CHECK(kvbm_allocate_blocks(q, 4, m, NULL, NULL) == 0, 51);
		T_CHILD_CHECK(kvbm_stage_block(q, &m[0], t_hash1(9999, BS), BS) == 0, 52);
		char c = 1;
		t_send(fd[1], &c, 1);
		pause(); /* killed holding 4 registered, 2 matched, 4 owned */
		_exit(53);
	}
	char c;
	ck_assert_int_eq(t_recv(fd[0], &c, 1), 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 256 - N - 4);
	kill(pid, SIGKILL);
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	ck_assert_int_eq(kvbm_reap(p), 1);
	/* its registered blocks are inactive (still matchable), its owned ones
	 * free; ours are untouched */
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_int_eq(m.inactive_pool_size, N - 2);
	ck_assert_int_eq(m.reset_pool_size, 256 - N);
	ck_assert_int_eq(m.inflight_mutable, 0);
	ck_assert_int_eq(m.inflight_immutable, 2);
	struct kvbm_block_info info;
	ck_assert_int_eq(kvbm_block_info(p, &mine[0], &info), 0);
	ck_assert_uint_eq(info.holds, 1);
	ck_assert_uint_eq(info.holder_procs, 1);
	ck_assert_int_eq(kvbm_match_blocks(p, h, N, out), N);
	t_release(p, out, N);
	t_release(p, mine, 2);
	assert_quiescent(p, 256);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/*
 * race_regression_tests: active_lookup_concurrent_with_last_drop. One
 * process keeps dropping the last hold on a primary (it goes inactive) and
 * taking it back while another looks the hash up: every lookup hits the one
 * primary or misses cleanly, never a second block; totals are conserved.
 */
START_TEST(test_active_lookup_concurrent_with_last_drop)
{
	T_NAME(name);
	enum { ROUNDS = 100000 };
	struct kvbm_pool *p = t_create(name, NULL);
	struct kvbm_plh h = t_hash1(7, BS);
	struct kvbm_block b, out;
	struct t_gate go;

	t_register(p, &h, 1, &b);
	t_gate_init(&go);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q;
		t_gate_wait(&go);
		T_CHILD_CHECK(kvbm_pool_open(name, NULL, 0, &q) == 0, 2);
		for (int i = 0; i < ROUNDS; i++) {
			long n = kvbm_match_blocks(q, &h, 1, &out);
			T_CHILD_CHECK(n == 1, 3); /* registered throughout */
			T_CHILD_CHECK(out.id == b.id, 4);
			T_CHILD_CHECK(kvbm_release_blocks(q, &out, 1) == 0, 5);
		}
		kvbm_pool_close(q);
		T_CHILD_OK();
	}
	t_gate_open(&go);
	for (int i = 0; i < ROUNDS; i++) {
		t_release(p, &b, 1); /* perhaps the last hold: to inactive */
		ck_assert_int_eq(kvbm_match_blocks(p, &h, 1, &b), 1);
	}
	ck_assert_int_eq(t_wait(pid), 0);
	t_release(p, &b, 1);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_int_eq(m.inactive_pool_size, 1);
	assert_quiescent(p, 256);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/*
 * eviction_concurrent_with_reregister_preserves_presence: a one-block pool
 * cycled between two hashes by two processes. Whenever a process has just
 * registered its hash, that hash is present and the other one absent.
 */
START_TEST(test_eviction_concurrent_with_reregister_preserves_presence)
{
	T_NAME(name);
	enum { ROUNDS = 2000 };
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[2] = {t_hash1(1, BS), t_hash1(100, BS)};
	struct t_gate go;
	pid_t pids[2];

	cfg.block_count = 1;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_gate_init(&go);
	for (int w = 0; w < 2; w++) {
		pids[w] = fork();
		if (pids[w] == 0) {
			struct kvbm_pool *q;
			struct kvbm_block b;
			uint8_t present[2];
			int done = 0;
			t_gate_wait(&go);
			T_CHILD_CHECK(kvbm_pool_open(name, NULL, 0, &q) == 0, 2);
			while (done < ROUNDS) {
				int r = kvbm_allocate_blocks(q, 1, &b, NULL, NULL);
				if (r == -ENOSPC)
					continue; /* the other one holds the block */
				T_CHILD_CHECK(r == 0, 3);
				T_CHILD_CHECK(kvbm_stage_block(q, &b, h[w], BS) == 0, 4);
				T_CHILD_CHECK(kvbm_register_blocks(q, &b, 1) == 0, 5);
				T_CHILD_CHECK(kvbm_check_presence(q, h, 2, present) == 1, 6);
				T_CHILD_CHECK(present[w] && !present[!w], 7);
				T_CHILD_CHECK(kvbm_release_blocks(q, &b, 1) == 0, 8);
				done++;
			}
			kvbm_pool_close(q);
			T_CHILD_OK();
		}
	}
	t_gate_open(&go);
	for (int w = 0; w < 2; w++)
		ck_assert_int_eq(t_wait(pids[w]), 0);
	uint8_t present[2];
	ck_assert_int_eq(kvbm_check_presence(p, h, 2, present), 1);
	assert_quiescent(p, 1);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* Threads of one process share one holder bit (rule 2): two threads pin
 * and unpin the same blocks while another process evicts. */
struct thr_arg {
	struct kvbm_pool *p;
	const struct kvbm_plh *h;
	int rounds;
	int err;
};

/*
 * An evictor walks past an inactive slot whose pin is in flight (the
 * pinner's bit set, the INACTIVE mark not yet cleared; here the pinner died
 * there). The walk takes it off the eviction order and evicts the next one.
 * The pin may still miss and drop its bit (here: the pinner's reaper drops
 * it), leaving the slot marked and on no order: whoever does so settles it,
 * which puts it back, so it is evictable again and never counted inactive
 * with nothing able to evict it.
 */
START_TEST(test_inflight_pin_keeps_slot_in_eviction_order)
{
	T_NAME(name);
	enum { TOTAL = 4 };
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[TOTAL];
	struct kvbm_block b[TOTAL], m;

	cfg.block_count = TOTAL;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, TOTAL, BS, h);
	t_register(p, h, TOTAL, b);
	t_release(p, b, TOTAL); /* all inactive, h[0] at the head */
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = attach(name);
		kvbm_fp_arm("hold.pin.bit");
		(void)kvbm_match_blocks(q, h, 1, &m);
		_exit(70);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	/* the walk meets h[0] with the dead pinner's bit and takes the next */
	struct kvbm_block a;
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &a, NULL, NULL), 0);
	ck_assert_uint_ne(a.id, b[0].id);
	ck_assert_int_eq(kvbm_reap(p), 1);
	ck_assert_int_eq(t_check(p), 0);
	/* every inactive block, h[0] included, can be evicted */
	struct kvbm_block rest[TOTAL - 1];
	ck_assert_int_eq(kvbm_allocate_blocks(p, TOTAL - 1, rest, NULL, NULL), 0);
	t_release(p, rest, TOTAL - 1);
	t_release(p, &a, 1);
	assert_quiescent(p, TOTAL);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

static void *thr_pin(void *a)
{
	struct thr_arg *t = a;
	struct kvbm_block out[4];
	struct kvbm_block_info info;

	for (int r = 0; r < t->rounds && !t->err; r++) {
		long n = kvbm_match_blocks(t->p, t->h, 4, out);
		if (n < 0)
			t->err = 60;
		for (long i = 0; i < n; i++) {
			int e = kvbm_block_info(t->p, &out[i], &info);
			if (e != 0 || !kvbm_plh_eq(info.hash, t->h[i])) {
				fprintf(stderr, "thr_pin: block %u gen %llu: info %d state %u holds %u\n",
					out[i].id, (unsigned long long)out[i].gen, e, info.state, info.holds);
				t->err = 61;
			}
		}
		int rr = n > 0 ? kvbm_release_blocks(t->p, out, (uint32_t)n) : 0;
		if (rr != 0) {
			fprintf(stderr, "thr_pin: release: %s\n", kvbm_strerror(rr));
			t->err = 62;
		}
	}
	return NULL;
}

START_TEST(test_threads_share_one_bit_against_evictor)
{
	T_NAME(name);
	enum { TOTAL = 8, NH = 12 };
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[NH];
	struct kvbm_block b[TOTAL];

	cfg.block_count = TOTAL;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, NH, BS, h);
	t_register(p, h, TOTAL, b);
	t_release(p, b, TOTAL);
	pid_t pid = fork();
	if (pid == 0)
		_exit(stress_evictor(name, h, NH, TOTAL, 99, 3000));
	pthread_t th[3];
	struct thr_arg a[3];
	for (int i = 0; i < 3; i++) {
		a[i] = (struct thr_arg){p, h, 20000, 0};
		ck_assert_int_eq(pthread_create(&th[i], NULL, thr_pin, &a[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(a[i].err, 0);
	}
	ck_assert_int_eq(t_wait(pid), 0);
	assert_quiescent(p, TOTAL);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/*
 * Biased handles (shm/segment.c): the opening thread updates its holder
 * entries with plain stores until another thread calls, which revokes
 * that while the owner is busy. Each round opens a fresh handle; the owner
 * clones, matches and releases its blocks, with a sleep inside every fourth
 * of its load-store pairs, while a second thread starts doing the same. An update lost across the revocation leaves a count
 * wrong, or a release finds no hold.
 */
struct bias_arg {
	struct kvbm_pool *p;
	const struct kvbm_block *b;
	const struct kvbm_plh *h;
	int go, started, stop, err;
};

/* Two extra holds on each block at a time, one by clone and one by match
 * (their fast paths differ), so a lost increment shows. */
static int clone_release(struct kvbm_pool *p, const struct kvbm_block *b, const struct kvbm_plh *h)
{
	struct kvbm_block c[8];

	for (int i = 0; i < 4; i++)
		if (kvbm_clone_block(p, &b[i], &c[i]) != 0)
			return 1;
	if (kvbm_match_blocks(p, h, 4, c + 4) != 4)
		return 1;
	return kvbm_release_blocks(p, c, 8) != 0;
}

static void *bias_other(void *arg)
{
	struct bias_arg *a = arg;

	while (!__atomic_load_n(&a->go, __ATOMIC_ACQUIRE))
		;
	/* until the owner is done: busy whenever the owner's sleep ends */
	while (!a->err && !__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
		a->err = clone_release(a->p, a->b, a->h);
		__atomic_store_n(&a->started, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

START_TEST(test_biased_handle_revoked_while_owner_pins)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[4];
	struct kvbm_block b[4], m[4];
	struct kvbm_block_info info;

	cfg.block_count = 8;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, 4, BS, h);
	t_register(p, h, 4, b);
	kvbm_fp_arm("hold.fast:4=delay");
	for (int round = 0; round < 20; round++) {
		struct kvbm_pool *q = attach(name);
		ck_assert_int_eq(kvbm_match_blocks(q, h, 4, m), 4);
		struct bias_arg a = {q, m, h, 0, 0, 0, 0};
		pthread_t t;
		ck_assert_int_eq(pthread_create(&t, NULL, bias_other, &a), 0);
		__atomic_store_n(&a.go, 1, __ATOMIC_RELEASE);
		/* the owner keeps going until it has overlapped the other */
		int err = 0;
		for (int k = 0; k < 50 && !err; k++) {
			err = clone_release(q, m, h);
			if (!__atomic_load_n(&a.started, __ATOMIC_ACQUIRE))
				k = 0;
		}
		__atomic_store_n(&a.stop, 1, __ATOMIC_RELEASE);
		pthread_join(t, NULL);
		ck_assert_int_eq(err, 0);
		ck_assert_int_eq(a.err, 0);
		for (int i = 0; i < 4; i++) {
			ck_assert_int_eq(kvbm_block_info(q, &m[i], &info), 0);
			ck_assert_uint_eq(info.holds, 1);
		}
		ck_assert_int_eq(kvbm_release_blocks(q, m, 4), 0);
		ck_assert_int_eq(kvbm_release_blocks(q, m, 1), KVBM_ENOTHELD);
		ck_assert_int_eq(kvbm_pool_close(q), 0);
	}
	kvbm_fp_arm(NULL);
	t_release(p, b, 4);
	assert_quiescent(p, 8);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/*
 * Crash tests: a victim process is SIGKILLed at each failpoint of the block
 * protocols (lock-free pin and unpin; allocate, evict, register and reap
 * under the mutex, so the next locker recovers) while the parent holds
 * blocks. Afterwards the parent's blocks are intact and, once it lets go,
 * every block is accounted for: nothing lost, nothing leaked.
 */
static const char *const block_points[] = {
	"block.allocate.popped",  "store.evict.marked",      "block.allocate.victims",
	"store.evict.committed",  "store.evict.unindexed",   "block.stage.keyed",
	"block.register.published", "block.register.batch",  "block.register.duplicate",
	"store.free.owned",       "hold.pin.tentative",      "hold.pin.bit",
	"hold.pin.commit",        "hold.unpin.tentative",    "hold.unpin.bit",
	"store.settle.counted",   "store.settle.inactive",   "store.reap.bits",
	"store.reap.freed",
	/* the third of the match's four resurrections: its window is open
	 * with two decrements of the inactive count still pending */
	"hold.pin.taken:3",
};
/* inside the lineage forest's updates (default backend) */
static const char *const lineage_points[] = {
	"evict.lineage.unparent", "evict.lineage.link", "evict.lineage.unghost",
	"evict.lineage.ghost", "evict.lineage.unchain",
};
/* inside Tick's run (lib/evict.c): lineage alone keeps one */
static const char *const run_points[] = {"evict.lineage.run", "evict.lineage.unrun"};
#define NRUN_POINTS (int)(sizeof(run_points) / sizeof(run_points[0]))
/* inside the queue updates of every queued backend */
static const char *const queue_points[] = {
	"evict.queue.insert",
	"evict.queue.move",
};
static const enum kvbm_backend queued_backends[] = {KVBM_BACKEND_S3FIFO, KVBM_BACKEND_ARC,
						    KVBM_BACKEND_WTINYLFU, KVBM_BACKEND_LECAR,
						    KVBM_BACKEND_ADAPT};
#define NQUEUED (int)(sizeof(queued_backends) / sizeof(queued_backends[0]))
/* inside adapt's own updates (lib/evict_adapt.c) */
static const char *const adapt_points[] = {
	"evict.adapt.ghost",
	"evict.adapt.hit",
};
#define NBLOCK_POINTS (int)(sizeof(block_points) / sizeof(block_points[0]))
#define NQUEUE_POINTS (int)(sizeof(queue_points) / sizeof(queue_points[0]))
#define NLINEAGE_POINTS (int)(sizeof(lineage_points) / sizeof(lineage_points[0]))

/* Evicts 4 inactive blocks, registers new ones as a batch and one more as
 * a duplicate, returns a MUTABLE block, resurrects 4 inactive blocks (one
 * of them to be reset on release: with lineage, an interior node leaves
 * its children under a ghost), releases everything, the batch tail first
 * (ghost parents), detaches: every point above is on the way. */
static int victim(const char *name, const struct kvbm_plh *h, const struct kvbm_plh *hv,
		  const char *point)
{
	struct kvbm_pool *q = attach(name);
	struct kvbm_block b[4], m[4], d, x;

	kvbm_fp_arm(point);
	if (kvbm_allocate_blocks(q, 4, b, NULL, NULL) != 0)
		return 70;
	for (int i = 0; i < 4; i++)
		if (kvbm_stage_block(q, &b[i], hv[i], BS) != 0)
			return 71;
	if (kvbm_register_blocks(q, b, 4) != 0)
		return 72;
	if (kvbm_allocate_blocks(q, 1, &d, NULL, NULL) != 0 ||
	    kvbm_stage_block(q, &d, hv[0], BS) != 0 || kvbm_register_blocks(q, &d, 1) != 0)
		return 73;
	if (kvbm_allocate_blocks(q, 1, &x, NULL, NULL) != 0 || kvbm_release_blocks(q, &x, 1) != 0)
		return 74;
	if (kvbm_match_blocks(q, h + 10, 4, m) != 4 || kvbm_set_reset_on_release(q, &m[1], 1) != 0)
		return 75;
	if (kvbm_clone_block(q, &m[2], &x) != 0 || kvbm_release_blocks(q, &x, 1) != 0)
		return 75; /* a hold's fast paths, count 1 -> 2 -> 1 */
	if (kvbm_release_blocks(q, &d, 1) != 0 || kvbm_release_blocks(q, m, 4) != 0)
		return 76;
	for (int i = 4; i-- > 0;)
		if (kvbm_release_blocks(q, &b[i], 1) != 0)
			return 76;
	kvbm_pool_close(q);
	return 77; /* the failpoint never fired */
}

/* The victim dies at @point in a pool with @backend. */
static void victim_killed_at(const char *name, const char *point, enum kvbm_backend backend)
{
	enum { TOTAL = 32, KEEP = 4 };
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[TOTAL], hv[4];
	struct kvbm_block b[TOTAL];
	struct kvbm_block_info info;

	cfg.block_count = TOTAL;
	cfg.backend = backend;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, TOTAL, BS, h);
	t_seq_hashes(100000, 4, BS, hv);
	t_register(p, h, TOTAL, b);
	/* the pool is full: inactive blocks, the last KEEP held by us */
	t_release(p, b, TOTAL - KEEP);
	pid_t pid = fork();
	if (pid == 0)
		_exit(victim(name, h, hv, point));
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	/* reaping takes the mutex: a victim that died holding it is recovered
	 * (and reaped) by that lock already, else reaped here */
	struct kvbm_pool_info pi;
	int r = kvbm_reap(p);
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	ck_assert_int_eq(r + (int)pi.recoveries, 1);
	ck_assert_uint_eq(pi.procs_attached, 1);
	/* pins, unpins and staging take no mutex: nothing to recover */
	int lockfree = !strncmp(point, "hold.", 5) || !strcmp(point, "block.stage.keyed");
	ck_assert_int_eq(pi.recoveries == 1, !lockfree);
	for (int i = TOTAL - KEEP; i < TOTAL; i++) {
		ck_assert_int_eq(kvbm_block_info(p, &b[i], &info), 0);
		ck_assert_uint_eq(info.state, KVBM_BLOCK_REGISTERED);
		ck_assert_uint_eq(info.holds, 1);
		ck_assert_uint_eq(info.holder_procs, 1);
		ck_assert(kvbm_plh_eq(info.hash, h[i]));
	}
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_int_eq(m.inflight_mutable, 0);
	ck_assert_int_eq(m.inflight_immutable, KEEP);
	ck_assert_int_eq(m.reset_pool_size + m.inactive_pool_size, TOTAL - KEEP);
	t_release(p, b + TOTAL - KEEP, KEEP);
	assert_quiescent(p, TOTAL);
	/* no leak: every block can be allocated again, then freed */
	struct kvbm_block all[TOTAL];
	ck_assert_int_eq(kvbm_allocate_blocks(p, TOTAL, all, NULL, NULL), 0);
	t_release(p, all, TOTAL);
	assert_quiescent(p, TOTAL);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}

START_TEST(test_victim_killed_at_block_failpoint)
{
	T_NAME(name);
	victim_killed_at(name, block_points[_i], KVBM_BACKEND_LRU);
}
END_TEST

/* The same with the default backend, at every point and inside the forest. */
START_TEST(test_victim_killed_at_failpoint_lineage)
{
	T_NAME(name);
	const char *point = _i < NBLOCK_POINTS ? block_points[_i]
			    : _i < NBLOCK_POINTS + NLINEAGE_POINTS
				    ? lineage_points[_i - NBLOCK_POINTS]
				    : run_points[_i - NBLOCK_POINTS - NLINEAGE_POINTS];
	victim_killed_at(name, point, KVBM_BACKEND_LINEAGE);
}
END_TEST

/* And with each queued backend (they keep the lineage forest too): every
 * point, then inside the forest, then inside the queues. */
START_TEST(test_victim_killed_at_failpoint_queued)
{
	T_NAME(name);
	enum { NP = NBLOCK_POINTS + NLINEAGE_POINTS + NQUEUE_POINTS };
	int k = _i % NP;
	const char *point = k < NBLOCK_POINTS ? block_points[k]
			    : k < NBLOCK_POINTS + NLINEAGE_POINTS
				    ? lineage_points[k - NBLOCK_POINTS]
				    : queue_points[k - NBLOCK_POINTS - NLINEAGE_POINTS];
	victim_killed_at(name, point, queued_backends[_i / NP]);
}
END_TEST

/* And inside adapt's own updates: its victim remembered by its expert's
 * history, and a hit moved to M before its heap entry is refreshed. */
START_TEST(test_victim_killed_at_failpoint_adapt)
{
	T_NAME(name);
	victim_killed_at(name, adapt_points[_i], KVBM_BACKEND_ADAPT);
}
END_TEST

/*
 * Killed inside a miniature's update (lib/evict_mini.c), which only a
 * sampled block reaches: the victim registers new blocks one at a time
 * into a full pool until it dies. Recovery empties the miniatures; the
 * pool checks clean, every block comes back, and traffic goes on.
 */
static int mini_victim(const char *name)
{
	struct kvbm_pool *q = attach(name);

	kvbm_fp_arm("evict.adapt.mini");
	for (uint32_t i = 0; i < 1024; i++) {
		struct kvbm_plh h;
		struct kvbm_block b;
		t_seq_hashes(200000 + 10 * i, 1, BS, &h);
		if (kvbm_allocate_blocks(q, 1, &b, NULL, NULL) != 0 ||
		    kvbm_stage_block(q, &b, h, BS) != 0 || kvbm_register_blocks(q, &b, 1) != 0 ||
		    kvbm_release_blocks(q, &b, 1) != 0)
			return 70;
	}
	return 77; /* the failpoint never fired */
}

START_TEST(test_victim_killed_in_adapt_miniature)
{
	T_NAME(name);
	enum { TOTAL = 32 };
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[TOTAL];
	struct kvbm_block b[TOTAL];
	struct kvbm_pool_info pi;

	cfg.block_count = TOTAL;
	cfg.backend = KVBM_BACKEND_ADAPT;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, TOTAL, BS, h);
	t_register(p, h, TOTAL, b);
	t_release(p, b, TOTAL);
	pid_t pid = fork();
	if (pid == 0)
		_exit(mini_victim(name));
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	int r = kvbm_reap(p);
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	ck_assert_int_eq(r + (int)pi.recoveries, 1);
	ck_assert_uint_eq(pi.recoveries, 1);
	assert_quiescent(p, TOTAL);
	for (uint32_t i = 0; i < 4 * TOTAL; i++) { /* evictions, the minis at work again */
		struct kvbm_block x;
		t_seq_hashes(900000 + 10 * i, 1, BS, &h[0]);
		t_register(p, h, 1, &x);
		t_release(p, &x, 1);
	}
	assert_quiescent(p, TOTAL);
	t_done(p, name);
}
END_TEST

/* The victim attached with KVBM_OPEN_ONE_THREAD, whose holds skip the
 * stripe locks and count without RMWs: the reaper must find the same. */
START_TEST(test_victim_killed_one_thread)
{
	T_NAME(name);
	attach_flags = KVBM_OPEN_ONE_THREAD;
	victim_killed_at(name, block_points[_i], KVBM_BACKEND_LINEAGE);
	attach_flags = 0;
}
END_TEST

/*
 * A recoverer dies inside its recovery: the first victim died holding the
 * mutex mid-allocation, the second dies repairing after it. The next locker
 * repairs both; nothing is lost.
 */
static const char *const recovery_points[] = {
	"shm.recover.begin", "store.recover.indexed", "shm.recover.end",
};

START_TEST(test_victim_killed_in_recovery)
{
	T_NAME(name);
	enum { TOTAL = 32, KEEP = 4 };
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[TOTAL];
	struct kvbm_block b[TOTAL], m[KEEP];
	struct kvbm_pool_info pi;

	cfg.block_count = TOTAL;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, TOTAL, BS, h);
	t_register(p, h, TOTAL, b);
	t_release(p, b, TOTAL - KEEP);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = attach(name);
		kvbm_fp_arm("block.allocate.victims");
		(void)kvbm_allocate_blocks(q, 8, b, NULL, NULL);
		_exit(70);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q;
		kvbm_fp_arm(recovery_points[_i]);
		(void)kvbm_pool_open(name, NULL, 0, &q); /* locks: recovers, dies */
		_exit(71);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	ck_assert_int_eq(kvbm_reap(p), 0); /* its recovery reaped the first victim */
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	/* "end" is past the counter: that recovery counts, and so does ours */
	ck_assert_uint_eq(pi.recoveries, _i == 2 ? 2 : 1);
	ck_assert_uint_eq(pi.procs_attached, 1);
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_int_eq(kvbm_match_blocks(p, h + TOTAL - KEEP, KEEP, m), KEEP);
	for (int i = 0; i < KEEP; i++)
		ck_assert_uint_eq(m[i].id, b[TOTAL - KEEP + i].id);
	t_release(p, m, KEEP);
	t_release(p, b + TOTAL - KEEP, KEEP);
	ck_assert_int_eq(kvbm_allocate_blocks(p, TOTAL, b, NULL, NULL), 0);
	t_release(p, b, TOTAL);
	assert_quiescent(p, TOTAL);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/*
 * A reaper dies reaping a third process: the third died holding registered
 * and MUTABLE blocks; the victim's attach reaps it and is killed midway.
 * The next locker finishes that reap from the op record.
 */
static const char *const reap_points[] = {
	"shm.reap.reclaiming", "store.reap.bits", "store.free.owned", "store.reap.freed",
};

/*
 * Recovery rebuilds the eviction order from the slots' ticks (sorted in
 * place: it may not allocate). Eight one-block sequences are released in
 * an order unlike their slot order, a victim dies holding the mutex, and
 * after the recovery allocations must evict in release order. Runs 0-8:
 * lru, fifo, lineage, lfru, s3fifo, arc, w-tinylfu, lecar, adapt (whose
 * queues are rebuilt from the ticks' queue bits; the experts of LeCaR and
 * adapt agree here, every block used once).
 */
START_TEST(test_recovery_keeps_the_eviction_order)
{
	T_NAME(name);
	enum { N = 8, TOTAL = 12 };
	static const enum kvbm_backend backends[] = {
		KVBM_BACKEND_LRU, KVBM_BACKEND_FIFO,	 KVBM_BACKEND_LINEAGE,
		KVBM_BACKEND_LFRU, KVBM_BACKEND_S3FIFO, KVBM_BACKEND_ARC,
		KVBM_BACKEND_WTINYLFU, KVBM_BACKEND_LECAR, KVBM_BACKEND_ADAPT};
	static const int order[N] = {5, 2, 7, 0, 3, 6, 1, 4};
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[N], hv = t_hash1(900, BS);
	struct kvbm_block b[N], x[TOTAL];
	struct kvbm_pool_info pi;

	cfg.block_count = TOTAL;
	cfg.backend = backends[_i];
	struct kvbm_pool *p = t_create(name, &cfg);
	for (int i = 0; i < N; i++) {
		h[i] = t_hash1(100 + 10 * (uint32_t)i, BS);
		t_register(p, &h[i], 1, &b[i]);
	}
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(kvbm_release_blocks(p, &b[order[i]], 1), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = attach(name);
		struct kvbm_block v;
		kvbm_fp_arm("block.register.published");
		if (kvbm_allocate_blocks(q, 1, &v, NULL, NULL) != 0 ||
		    kvbm_stage_block(q, &v, hv, BS) != 0)
			_exit(70);
		kvbm_register_blocks(q, &v, 1);
		_exit(77);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	ck_assert_int_eq(kvbm_reap(p) >= 0, 1);
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	ck_assert_uint_eq(pi.recoveries, 1);
	ck_assert_int_eq(t_check(p), 0);
	/* the free blocks first (the victim's block is inactive now, the
	 * newest), then one eviction per allocation */
	int nfree = (int)t_metrics(p).reset_pool_size, k = 0;
	ck_assert_int_eq(nfree, TOTAL - N - 1);
	if (backends[_i] == KVBM_BACKEND_WTINYLFU) {
		/* the victim's block, alone in the window, loses its duel
		 * (a tie) against probation's oldest: it goes first */
		struct kvbm_plh ev;
		struct kvbm_block xv;
		uint32_t nev;
		ck_assert_int_eq(kvbm_allocate_blocks(p, (uint32_t)nfree, x, NULL, NULL), 0);
		ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &xv, &ev, &nev), 0);
		ck_assert_uint_eq(nev, 1);
		ck_assert(kvbm_plh_eq(ev, hv));
		x[TOTAL - 1] = xv; /* released with the others below */
	} else {
		ck_assert_int_eq(kvbm_allocate_blocks(p, (uint32_t)nfree, x, NULL, NULL), 0);
	}
	for (int i = 0; i < N; i++) {
		uint8_t present[N];
		ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &x[nfree + i], NULL, NULL), 0);
		ck_assert_int_eq(kvbm_check_presence(p, h, N, present), N - 1 - i);
		ck_assert_int_eq(present[order[i]], 0);
		k += present[order[i]];
	}
	ck_assert_int_eq(k, 0);
	t_release(p, x, (size_t)nfree + N);
	if (backends[_i] == KVBM_BACKEND_WTINYLFU)
		t_release(p, &x[TOTAL - 1], 1);
	ck_assert_int_eq(t_check(p), 0);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_victim_killed_reaping_a_third)
{
	T_NAME(name);
	enum { N = 6 };
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool_info pi;
	struct kvbm_plh h[N];
	struct kvbm_block b[64];

	cfg.block_count = 64;
	struct kvbm_pool *p = t_create(name, &cfg);
	pid_t third = holder_child(name, N, 1);
	kill(third, SIGKILL);
	ck_assert_int_eq(t_wait(third), 128 + SIGKILL);
	third = holder_child(name, 3, 0); /* and one dead with MUTABLE blocks */
	kill(third, SIGKILL);
	ck_assert_int_eq(t_wait(third), 128 + SIGKILL);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q;
		kvbm_fp_arm(reap_points[_i]);
		(void)kvbm_pool_open(name, NULL, 0, &q); /* reaps the dead, dies */
		_exit(72);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	(void)kvbm_reap(p);
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	ck_assert_uint_eq(pi.recoveries, 1);
	ck_assert_uint_eq(pi.procs_attached, 1);
	ck_assert_int_eq(t_check(p), 0);
	/* the dead holder's registered blocks are cached, nothing leaked */
	t_seq_hashes(7000, N, BS, h);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_int_eq(m.inactive_pool_size, N);
	ck_assert_int_eq(m.reset_pool_size, 64 - N);
	ck_assert_int_eq(kvbm_match_blocks(p, h, N, b), N);
	t_release(p, b, N);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 64, b, NULL, NULL), 0);
	t_release(p, b, 64);
	assert_quiescent(p, 64);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

Suite *make_mproc_suite(void)
{
	Suite *s = suite_create("mproc");
	TCase *tc = tcase_create("mproc");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_registered_in_one_process_matched_by_others);
	tcase_add_loop_test(tc, test_pin_vs_evict_stress, 0, 12);
	tcase_add_test(tc, test_allocate_atomic_no_over_commit_under_contention);
	tcase_add_test(tc, test_dead_holder_blocks_come_back);
	tcase_add_loop_test(tc, test_short_allocation_reaps_dead, 0, 2);
	tcase_add_test(tc, test_periodic_reaping);
	tcase_add_test(tc, test_inflight_pin_keeps_slot_in_eviction_order);
	tcase_add_test(tc, test_threads_share_one_bit_against_evictor);
	tcase_add_test(tc, test_biased_handle_revoked_while_owner_pins);
	tcase_add_test(tc, test_active_lookup_concurrent_with_last_drop);
	tcase_add_test(tc, test_eviction_concurrent_with_reregister_preserves_presence);
	tcase_add_loop_test(tc, test_victim_killed_in_recovery, 0,
			    (int)(sizeof(recovery_points) / sizeof(recovery_points[0])));
	tcase_add_loop_test(tc, test_recovery_keeps_the_eviction_order, 0, 9);
	tcase_add_loop_test(tc, test_victim_killed_reaping_a_third, 0,
			    (int)(sizeof(reap_points) / sizeof(reap_points[0])));
	tcase_add_loop_test(tc, test_victim_killed_at_block_failpoint, 0, NBLOCK_POINTS);
	tcase_add_loop_test(tc, test_victim_killed_at_failpoint_lineage, 0,
			    NBLOCK_POINTS + NLINEAGE_POINTS + NRUN_POINTS);
	tcase_add_loop_test(tc, test_victim_killed_one_thread, 0, NBLOCK_POINTS);
	tcase_add_loop_test(tc, test_victim_killed_at_failpoint_queued, 0,
			    NQUEUED * (NBLOCK_POINTS + NLINEAGE_POINTS + NQUEUE_POINTS));
	tcase_add_loop_test(tc, test_victim_killed_at_failpoint_adapt, 0,
			    (int)(sizeof(adapt_points) / sizeof(adapt_points[0])));
	tcase_add_test(tc, test_victim_killed_in_adapt_miniature);
	suite_add_tcase(s, tc);
	return s;
}
