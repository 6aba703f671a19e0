/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_pins.c - pins held by the pool (kvbm_pin_prefix): they keep a
 * prefix unevictable until their TTL or an unpin, survive the process that
 * made them, are bounded by the pin share, expire at the first mutex
 * acquisition after their deadline, and a holder killed inside a pin, an
 * unpin or an expiry leaves a pool that recovers to every invariant.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/pool.h"

#define BS 4

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_until_ms(uint64_t t)
{
	for (uint64_t now = mono_ms(); now < t; now = mono_ms())
		usleep((useconds_t)((t - now) * 1000));
}

/* A pool of @blocks blocks with pins of @share percent. */
static struct kvbm_pool *pin_pool(const char *name, uint32_t blocks, uint32_t share)
{
	struct kvbm_config cfg = t_cfg();

	cfg.block_count = blocks;
	cfg.pin_share = share;
	return t_create(name, &cfg);
}

static struct kvbm_pins_info pins(struct kvbm_pool *p)
{
	struct kvbm_pins_info i;

	ck_assert_int_eq(kvbm_pins_info(p, &i), 0);
	return i;
}

/* Registers the @n blocks of @h and lets them go inactive. */
static void cached(struct kvbm_pool *p, const struct kvbm_plh *h, size_t n)
{
	struct kvbm_block b[64];

	ck_assert_uint_le(n, 64);
	t_register(p, h, n, b);
	t_release(p, b, n);
}

/* A pool of @blocks blocks with pins of @share percent, holding the @n
 * blocks of the chain from token @start inactive (hashes in @h). */
static struct kvbm_pool *prefix_pool(const char *name, uint32_t blocks, uint32_t share,
				     uint32_t start, struct kvbm_plh *h, size_t n)
{
	struct kvbm_pool *p = pin_pool(name, blocks, share);

	t_seq_hashes(start, n, BS, h);
	cached(p, h, n);
	return p;
}

/* Allocates every block an allocation can get (evicting whatever it may),
 * one at a time, then frees them all: the pressure a busy engine puts on
 * the pool. Returns how many it got. */
static uint32_t pressure(struct kvbm_pool *p)
{
	struct kvbm_block b[256];
	uint32_t n = 0;
	int r;

	while (n < 256 && (r = kvbm_allocate_blocks(p, 1, b + n, NULL, NULL)) == 0)
		n++;
	ck_assert_uint_lt(n, 256);
	ck_assert_int_eq(r, -ENOSPC);
	ck_assert_int_eq(kvbm_release_blocks(p, b, n), 0);
	return n;
}

static long present(struct kvbm_pool *p, const struct kvbm_plh *h, size_t n)
{
	uint8_t pr[64];

	return kvbm_check_presence(p, h, n, pr);
}

START_TEST(test_pin_keeps_prefix_through_pressure)
{
	T_NAME(name);
	struct kvbm_plh h[6];
	struct kvbm_pool *p = prefix_pool(name, 32, 50, 1, h, 6);

	ck_assert_int_eq(kvbm_available_blocks(p), 32);
	/* the first four: pinned, taken out of the inactive pool */
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 4, 60000, NULL), 4);
	ck_assert_int_eq(kvbm_available_blocks(p), 28);
	struct kvbm_pins_info i = pins(p);
	ck_assert_uint_eq(i.pins, 1);
	ck_assert_uint_eq(i.blocks, 4);
	ck_assert_uint_eq(i.capacity, 16);
	ck_assert_uint_le(i.next_expiry_ms, 60000);
	ck_assert_uint_gt(i.next_expiry_ms, 50000);
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_uint_eq(pressure(p), 28);
	/* the unpinned tail went, the pinned head stayed, and still matches */
	ck_assert_int_eq(present(p, h, 4), 4);
	ck_assert_int_eq(present(p, h + 4, 2), 0);
	struct kvbm_block m[4];
	ck_assert_int_eq(kvbm_match_blocks(p, h, 4, m), 4);
	t_release(p, m, 4); /* a process's holds on top of the pool's */
	ck_assert_int_eq(kvbm_available_blocks(p), 28);
	ck_assert_int_eq(t_check(p), 0);
	/* the list names them, the last as the pin's end */
	struct kvbm_pinned l[8];
	ck_assert_int_eq(kvbm_pins_list(p, l, 8), 4);
	ck_assert_int_eq(kvbm_pins_list(p, NULL, 0), 4);
	int tips = 0;
	for (int k = 0; k < 4; k++) {
		tips += l[k].tip;
		if (l[k].tip)
			ck_assert(kvbm_plh_eq(l[k].hash, h[3]));
	}
	ck_assert_int_eq(tips, 1);
	/* a drain of the inactive pool leaves them: they are in use */
	ck_assert_int_eq(kvbm_reset_inactive_pool(p), -EBUSY);
	ck_assert_int_eq(present(p, h, 4), 4);
	ck_assert_int_eq(t_check(p), 0);
	/* unpinned: inactive again, evictable */
	ck_assert_int_eq(kvbm_unpin_prefix(p, h, 4), 4);
	ck_assert_int_eq(kvbm_unpin_prefix(p, h, 4), 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 32);
	ck_assert_uint_eq(pins(p).blocks, 0);
	ck_assert_uint_eq(pins(p).pins, 0);
	ck_assert_uint_eq(pressure(p), 32);
	ck_assert_int_eq(present(p, h, 4), 0);
	t_done(p, name);
}
END_TEST

/* A pin taken while a process holds the blocks: the process's release
 * leaves them active (the pool holds them), the pin's end settles them. */
START_TEST(test_pin_over_process_holds)
{
	T_NAME(name);
	struct kvbm_pool *p = pin_pool(name, 16, 50);
	struct kvbm_plh h[3];
	struct kvbm_block b[3];

	t_seq_hashes(7, 3, BS, h);
	t_register(p, h, 3, b);
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 3, 60000, NULL), 3);
	t_release(p, b, 3);
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 13);
	struct kvbm_block_info bi;
	ck_assert_int_eq(kvbm_block_info(p, &b[0], &bi), 0);
	ck_assert_int_eq(bi.inactive, 0);
	ck_assert_uint_eq(bi.holder_procs, 0); /* the pool is no process */
	ck_assert_int_eq(kvbm_unpin_prefix(p, h, 3), 3);
	ck_assert_int_eq(kvbm_available_blocks(p), 16);
	ck_assert_int_eq(kvbm_block_info(p, &b[0], &bi), 0);
	ck_assert_int_eq(bi.inactive, 1);
	t_done(p, name);
}
END_TEST

START_TEST(test_pin_expires_at_next_lock)
{
	T_NAME(name);
	struct kvbm_plh h[4];
	struct kvbm_pool *p = prefix_pool(name, 16, 50, 20, h, 4);

	uint64_t t0 = mono_ms();
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 4, 100, NULL), 4);
	ck_assert_int_eq(kvbm_available_blocks(p), 12);
	sleep_until_ms(t0 + 150);
	/* nothing took the mutex since: the pins are still there... */
	ck_assert_uint_eq(p->seg.pins->blocks, 4);
	/* ...until an allocation takes it, which finds them expired first
	 * and may then evict them */
	struct kvbm_block b[16];
	ck_assert_int_eq(kvbm_allocate_blocks(p, 16, b, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_release_blocks(p, b, 16), 0);
	struct kvbm_metrics m = t_metrics(p);
	ck_assert_int_eq(m.pinned_blocks, 0);
	ck_assert_int_eq(m.pins_active, 0);
	ck_assert_uint_eq(m.pin_expirations, 4);
	ck_assert_int_eq(m.pin_capacity, 8);
	ck_assert_uint_eq(pins(p).next_expiry_ms, UINT64_MAX);
	ck_assert_uint_eq(p->seg.pins->due, UINT64_MAX);
	t_done(p, name);
}
END_TEST

/* kvbmd's path: kvbm_pins_expire ends what is due, and only that. */
START_TEST(test_pins_expire_call)
{
	T_NAME(name);
	struct kvbm_plh h[4];
	struct kvbm_pool *p = prefix_pool(name, 16, 100, 30, h, 4);

	ck_assert_int_eq(kvbm_pin_prefix(p, h, 2, 60000, NULL), 2);
	ck_assert_int_eq(kvbm_pin_prefix(p, h + 2, 2, 50, NULL), 2);
	ck_assert_uint_eq(pins(p).pins, 2);
	ck_assert_int_eq(kvbm_pins_expire(p), 0);
	usleep(100000);
	/* a lock may have expired them already (the call counts those too) */
	ck_assert_int_eq(kvbm_pins_expire(p), 2);
	ck_assert_int_eq(kvbm_pins_expire(p), 0);
	struct kvbm_pins_info i = pins(p);
	ck_assert_uint_eq(i.blocks, 2);
	ck_assert_uint_eq(i.pins, 1);
	ck_assert_uint_eq(i.expirations, 2);
	ck_assert_int_eq(kvbm_available_blocks(p), 14);
	t_done(p, name);
}
END_TEST

/* After @ms, kvbm_pins_expire ends @expired blocks and leaves @left
 * pinned, the pool checks clean; the pool goes. */
static void expire_after(struct kvbm_pool *p, const char *name, uint64_t ms, long expired,
			 uint32_t left)
{
	sleep_until_ms(mono_ms() + ms);
	ck_assert_int_eq(kvbm_pins_expire(p), expired);
	ck_assert_uint_eq(pins(p).blocks, left);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}

/* next_ns is any peer's to write: one set too late kept every pin past its
 * TTL (the lock hook, kvbm_pins_expire and kvbmd all trusted it) and the
 * checker saw nothing (review F2, failed before): the expiry call reads
 * the heap's top instead, and sets the word right. */
START_TEST(test_pin_expiry_survives_a_late_next_word)
{
	T_NAME(name);
	struct kvbm_plh h[4];
	struct kvbm_pool *p = prefix_pool(name, 16, 50, 20, h, 4);

	ck_assert_int_eq(kvbm_pin_prefix(p, h, 4, 50, NULL), 4);
	__atomic_store_n(&p->seg.pins->next_ns, UINT64_MAX, __ATOMIC_RELAXED);
	__atomic_store_n(&p->seg.pins->due, UINT64_MAX, __ATOMIC_RELAXED);
	expire_after(p, name, 200, 4, 0);
}
END_TEST

/* A peer files a pin below the heap's top later than its word: the lock's
 * check sees only the top, so that pin outlived its TTL until the top's
 * own deadline (a minute here; review, failed before). The explicit
 * expiry call (kvbmd's, once a second) checks the whole heap. */
START_TEST(test_pin_expiry_survives_a_lie_below_the_top)
{
	T_NAME(name);
	struct kvbm_plh h[2];
	struct kvbm_pool *p = prefix_pool(name, 16, 50, 20, h, 2);

	ck_assert_int_eq(kvbm_pin_prefix(p, h + 1, 1, 60000, NULL), 1); /* B: a minute */
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 1, 50, NULL), 1);        /* A: 50 ms */
	struct kvbm_shm_pin_ent *a =
		(void *)((uint8_t *)p->seg.pins + kvbm_pins_heap_off(&p->seg.cfg));
	uint32_t *pos = (void *)((uint8_t *)p->seg.pins + kvbm_pins_pos_off(&p->seg.cfg));
	struct kvbm_shm_pin_ent ea = a[0], eb = a[1];
	ea.when = eb.when + 2;
	a[0] = eb;
	a[1] = ea;
	pos[eb.slot] = 0;
	pos[ea.slot] = 1;
	expire_after(p, name, 300, 1, 1);
}
END_TEST

START_TEST(test_pin_renewal_extends_never_shortens)
{
	T_NAME(name);
	struct kvbm_plh h[3];
	struct kvbm_pool *p = prefix_pool(name, 16, 50, 40, h, 3);

	uint64_t t0 = mono_ms();
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 3, 400, NULL), 3);
	/* renewed with more: the deadline moves; nothing newly pinned */
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 3, 60000, NULL), 0);
	ck_assert_uint_gt(pins(p).next_expiry_ms, 50000);
	/* renewed with less: the later deadline stays */
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 3, 10, NULL), 0);
	ck_assert_uint_gt(pins(p).next_expiry_ms, 50000);
	sleep_until_ms(t0 + 500); /* past the first TTL */
	ck_assert_int_eq(kvbm_pins_expire(p), 0);
	ck_assert_uint_eq(pins(p).blocks, 3);
	ck_assert_uint_eq(pins(p).pins, 1); /* one prefix, pinned three times */
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_int_eq(kvbm_unpin_prefix(p, h, 3), 3);
	t_done(p, name);
}
END_TEST

START_TEST(test_pin_share_bound)
{
	T_NAME(name);
	struct kvbm_pool *p = pin_pool(name, 16, 25); /* 4 blocks */
	struct kvbm_plh h[8];

	t_seq_hashes(50, 8, BS, h);
	cached(p, h, 8);
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 3, 60000, NULL), 3);
	/* one more block fits, two do not: the call changes nothing */
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 5, 60000, NULL), KVBM_EPINSHARE);
	ck_assert_uint_eq(pins(p).blocks, 3);
	ck_assert_uint_eq(pins(p).pins, 1);
	ck_assert_int_eq(kvbm_available_blocks(p), 13);
	ck_assert_int_eq(t_check(p), 0);
	/* renewing what is pinned costs nothing against the share, and a
	 * hash given twice is one block */
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 3, 60000, NULL), 0);
	struct kvbm_plh twice[3] = {h[3], h[3], h[0]};
	ck_assert_int_eq(kvbm_pin_prefix(p, twice, 3, 60000, NULL), 1);
	ck_assert_uint_eq(pins(p).blocks, 4);
	ck_assert_int_eq(kvbm_pin_prefix(p, h + 4, 1, 60000, NULL), KVBM_EPINSHARE);
	/* more blocks than the share holds */
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 5, 60000, NULL), KVBM_EPINSHARE);
	/* more hashes than the share holds, naming no more blocks than it:
	 * counted as blocks (was refused before looking: review F3) */
	struct kvbm_plh again[5] = {h[0], h[1], h[2], h[3], h[3]};
	ck_assert_int_eq(kvbm_pin_prefix(p, again, 5, 60000, NULL), 0);
	ck_assert_uint_eq(pins(p).blocks, 4);
	ck_assert_str_eq(kvbm_strerror(KVBM_EPINSHARE),
			 "pinning these blocks would pass the pool's pin share "
			 "(kvbm_config.pin_share)");
	/* allocation still gets every unpinned block */
	ck_assert_uint_eq(pressure(p), 12);
	ck_assert_int_eq(present(p, h, 4), 4);
	ck_assert_int_eq(kvbm_unpin_prefix(p, h, 8), 4);
	t_done(p, name);
}
END_TEST

START_TEST(test_pin_share_zero_and_config)
{
	T_NAME(name);
	struct kvbm_plh h[2];
	struct kvbm_config cfg = t_cfg();
	struct kvbm_config_diff d;
	const char *why = NULL;
	struct kvbm_pool *p = prefix_pool(name, 16, 0, 60, h, 2);

	ck_assert_int_eq(kvbm_pin_prefix(p, h, 1, 1000, NULL), KVBM_EPINSHARE);
	ck_assert_uint_eq(pins(p).capacity, 0);
	/* the default, the bound, and an opener that disagrees */
	ck_assert_uint_eq(cfg.pin_share, 25);
	cfg.pin_share = 101;
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
	ck_assert_str_eq(why, "pin_share must be a percentage, 0 to 100");
	cfg.block_count = 16;
	cfg.pin_share = 30;
	struct kvbm_pool *q = NULL;
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, 0, &q), KVBM_EMISMATCH);
	ck_assert_int_eq(kvbm_config_diff(name, &cfg, &d), 1);
	ck_assert_str_eq(d.field, "pin_share");
	ck_assert_str_eq(d.pool, "0%");
	ck_assert_str_eq(d.config, "30%");
	t_done(p, name);
}
END_TEST

START_TEST(test_pin_bad_input)
{
	T_NAME(name);
	struct kvbm_pool *p = pin_pool(name, 16, 50);
	struct kvbm_plh h[4];
	size_t failed = 99;

	t_seq_hashes(70, 4, BS, h);
	cached(p, h, 2); /* h[2], h[3] never registered */
	struct kvbm_plh mix[3] = {h[0], h[2], h[1]};
	ck_assert_int_eq(kvbm_pin_prefix(p, mix, 3, 1000, &failed), KVBM_ENOTREG);
	ck_assert_uint_eq(failed, 1);
	ck_assert_uint_eq(pins(p).blocks, 0); /* all or nothing */
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 0, 1000, NULL), -EINVAL);
	ck_assert_int_eq(kvbm_pin_prefix(p, NULL, 2, 1000, NULL), -EINVAL);
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 2, 0, NULL), -EINVAL);
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 2, KVBM_PIN_TTL_MAX_MS + 1, NULL), -EINVAL);
	ck_assert_int_eq(kvbm_pin_prefix(NULL, h, 2, 1000, NULL), -EINVAL);
	/* more hashes than the pool has blocks: refused before any work */
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 17, 1000, NULL), -EINVAL);
	ck_assert_int_eq(kvbm_unpin_prefix(p, h, 0), -EINVAL);
	ck_assert_int_eq(kvbm_unpin_prefix(p, NULL, 1), -EINVAL);
	ck_assert_int_eq(kvbm_unpin_prefix(p, h + 2, 2), 0); /* unregistered: skipped */
	ck_assert_int_eq(kvbm_pins_info(p, NULL), -EINVAL);
	ck_assert_int_eq(kvbm_pins_list(p, NULL, 1), -EINVAL);
	/* a duplicate of h[0] registered: the pin goes to the primary */
	struct kvbm_block dup;
	t_register(p, h, 1, &dup);
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 2, KVBM_PIN_TTL_MAX_MS, NULL), 2);
	ck_assert_int_eq(t_check(p), 0);
	t_release(p, &dup, 1);
	ck_assert_int_eq(kvbm_unpin_prefix(p, h, 2), 2);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * Processes: a pinner that exits and one SIGKILLed right after pinning
 * (reaped) leave their pins; another process's allocation pressure cannot
 * evict them; they expire on time, after which the same pressure does.
 */
START_TEST(test_pin_outlives_its_process)
{
	T_NAME(name);
	struct kvbm_plh h[8];
	struct kvbm_pool *p = prefix_pool(name, 64, 50, 80, h, 8);

	uint64_t t0 = mono_ms();
	for (int k = 0; k < 2; k++) {
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			struct kvbm_pool *q = NULL;
			T_CHILD_CHECK(kvbm_pool_open(name, NULL, 0, &q) == 0, 2);
			/* first prefix for 1.5 s, the second for 60 s */
			T_CHILD_CHECK(kvbm_pin_prefix(q, h + 4 * k, 4, k ? 60000 : 1500, NULL) == 4,
				      3);
			if (k)
				raise(SIGKILL);
			T_CHILD_OK(); /* exits without closing */
		}
		ck_assert_int_eq(t_wait(pid), k ? 128 + SIGKILL : 0);
	}
	ck_assert_int_ge(kvbm_reap(p), 0);
	ck_assert_uint_eq(pins(p).blocks, 8);
	ck_assert_int_eq(t_check(p), 0);
	/* pressure from another process */
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct kvbm_pool *q = NULL;
		struct kvbm_block b[64];
		T_CHILD_CHECK(kvbm_pool_open(name, NULL, 0, &q) == 0, 2);
		T_CHILD_CHECK(kvbm_available_blocks(q) == 56, 3);
		T_CHILD_CHECK(kvbm_allocate_blocks(q, 56, b, NULL, NULL) == 0, 4);
		T_CHILD_CHECK(kvbm_allocate_blocks(q, 1, b + 56, NULL, NULL) == -ENOSPC, 5);
		T_CHILD_CHECK(kvbm_release_blocks(q, b, 56) == 0, 6);
		T_CHILD_CHECK(kvbm_pool_close(q) == 0, 7);
		T_CHILD_OK();
	}
	ck_assert_int_eq(t_wait(pid), 0);
	ck_assert_int_eq(present(p, h, 8), 8);
	/* the first prefix's TTL passes: the next lock ends it */
	sleep_until_ms(t0 + 1600);
	ck_assert_uint_eq(pressure(p), 60);
	ck_assert_int_eq(present(p, h, 4), 0);
	ck_assert_int_eq(present(p, h + 4, 4), 4);
	ck_assert_uint_eq(pins(p).expirations, 4);
	ck_assert_int_eq(kvbm_unpin_prefix(p, h + 4, 4), 4);
	t_done(p, name);
}
END_TEST

/*
 * Crash points inside a pin, an unpin and an expiry: a child SIGKILLed
 * there holding the mutex; the parent's next call recovers, and then
 * every invariant holds, the pins agree with their words, and once they
 * are gone nothing is missing from the pool.
 */
enum crash_op { CR_PIN, CR_UNPIN, CR_EXPIRE };
struct crash_case {
	const char *fp;
	enum crash_op op;
	uint32_t pinned_after; /* blocks still pinned after recovery */
};

static const struct crash_case crash_cases[] = {
	{"pins.pin.word", CR_PIN, 1},   /* the first block's word, not its bit */
	{"pins.pin.bit", CR_PIN, 1},    /* its bit, not the inactive mark's clear */
	{"pins.pin.word:3", CR_PIN, 3}, /* mid-prefix: the first three */
	{"pins.unpin.word", CR_UNPIN, 3},
	{"pins.unpin.bit", CR_UNPIN, 3},
	{"pins.unpin.bit:4", CR_UNPIN, 0}, /* the last one's bit, not settled */
	{"pins.expire.begin", CR_EXPIRE, 0},
	/* the expiry's second block; the recovered pool expires the rest at
	 * once (their deadlines passed) */
	{"pins.unpin.word:2", CR_EXPIRE, 0},
};

/* A child opens pool @name, waits until @at_ms (0: at once), arms @fp
 * and runs @op on the @n blocks of @h (a pin for @ttl): SIGKILLed at the
 * failpoint, holding the mutex. */
static void crash_child(const char *name, const char *fp, enum crash_op op,
			const struct kvbm_plh *h, size_t n, uint64_t ttl, uint64_t at_ms)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct kvbm_pool *q = NULL;
		T_CHILD_CHECK(kvbm_pool_open(name, NULL, 0, &q) == 0, 2);
		sleep_until_ms(at_ms);
		kvbm_fp_arm(fp);
		if (op == CR_PIN)
			(void)kvbm_pin_prefix(q, h, n, ttl, NULL);
		else if (op == CR_UNPIN)
			(void)kvbm_unpin_prefix(q, h, n);
		else
			(void)kvbm_reap(q); /* any mutex acquisition expires */
		_exit(9); /* the failpoint did not fire */
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
}

START_TEST(test_pin_crash_points)
{
	const struct crash_case *cc = &crash_cases[_i];
	T_NAME(name);
	struct kvbm_plh h[4];
	struct kvbm_pool *p = prefix_pool(name, 16, 50, 90, h, 4);

	if (cc->op != CR_PIN)
		ck_assert_int_eq(kvbm_pin_prefix(p, h, 4, cc->op == CR_EXPIRE ? 50 : 60000, NULL),
				 4);
	if (cc->op == CR_EXPIRE)
		usleep(100000);
	uint64_t recoveries = p->seg.ctl->recoveries;
	crash_child(name, cc->fp, cc->op, h, 4, 60000, 0);
	/* what the dead owner was doing, as an operator sees it */
	char out[16384];
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", name, NULL), 0);
	ck_assert_msg(strstr(out, strcmp(cc->fp, "pins.expire.begin") ? "op record: pin"
								     : "op record: none"),
		      "%s", out);
	ck_assert_int_eq(t_check(p), 0); /* its lock recovers first */
	ck_assert_uint_eq(p->seg.ctl->recoveries, recoveries + 1);
	struct kvbm_pins_info i = pins(p);
	ck_assert_uint_eq(i.blocks, cc->pinned_after);
	ck_assert_int_eq(kvbm_available_blocks(p), 16 - (long)cc->pinned_after);
	ck_assert_int_eq(present(p, h, 4), 4);
	ck_assert_int_eq(kvbm_unpin_prefix(p, h, 4), (long)cc->pinned_after);
	ck_assert_int_eq(kvbm_available_blocks(p), 16);
	ck_assert_uint_eq(pressure(p), 16);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/* Distinct TTLs a second apart, in no order (940 and 997 are coprime). */
static uint64_t ttl_of(uint32_t i)
{
	return 60000 + (uint64_t)(i * 940u % 997u) * 1000u;
}

/*
 * Expiry under the mutex costs what it expires, not the pool's size: on
 * a pool of 1M blocks with 64 pins of different TTLs, the one that comes
 * due is found and ended looking at a handful of deadlines (the heap's
 * top), where a scan of the deadline words looked at all 1M.
 */
START_TEST(test_pin_expiry_visits_only_whats_due)
{
	T_NAME(name);
	enum { N = 64 };
	struct kvbm_plh h[N];
	struct kvbm_pool *p = pin_pool(name, 1u << 20, 1);

	t_seq_hashes(200, N, BS, h);
	cached(p, h, N);
	/* distinct TTLs a second apart, in no order, so the heap sifts both
	 * ways; block @first's is the shortest */
	uint32_t first = 1;
	for (uint32_t i = 1; i < N; i++) {
		ck_assert_int_eq(kvbm_pin_prefix(p, h + i, 1, ttl_of(i), NULL), 1);
		first = ttl_of(i) < ttl_of(first) ? i : first;
	}
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 1, 30, NULL), 1);
	usleep(60000);
	kvbm_pins_expire_visits = 0;
	ck_assert_int_eq(kvbm_pins_expire(p), 1);
	/* the due top, then the next top (not due): O(expired), whatever
	 * the number of blocks */
	ck_assert_uint_le(kvbm_pins_expire_visits, 4);
	ck_assert_uint_eq(pins(p).blocks, N - 1);
	uint64_t next = pins(p).next_expiry_ms;
	ck_assert_uint_le(next, ttl_of(first));
	ck_assert_uint_gt(next, ttl_of(first) - 500);
	/* an unpin of the earliest: the next deadline is the second's */
	ck_assert_int_eq(kvbm_unpin_prefix(p, h + first, 1), 1);
	ck_assert_uint_ge(pins(p).next_expiry_ms, next + 500);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * kvbm_pins_list walks the expiry heap, not the pool: on a pool of 2^20
 * blocks with 64 pinned (in no order of block id), listing them visits 64
 * entries of the pin region, and a short buffer gets the lowest block
 * ids, in order, with the count of all.
 */
START_TEST(test_pins_list_visits_only_pins)
{
	T_NAME(name);
	enum { N = 64, M = 16 };
	struct kvbm_plh h[N];
	struct kvbm_pinned all[N], few[M];
	struct kvbm_pool *p = pin_pool(name, 1u << 20, 1);

	t_seq_hashes(300, N, BS, h);
	cached(p, h, N);
	for (uint32_t i = 0; i < N; i++) {
		uint32_t j = i * 37 % N; /* pinned in no order of block id */
		ck_assert_int_eq(kvbm_pin_prefix(p, h + j, 1, ttl_of(j), NULL), 1);
	}
	kvbm_pins_expire_visits = 0;
	ck_assert_int_eq(kvbm_pins_list(p, few, M), N);
	ck_assert_uint_le(kvbm_pins_expire_visits, N);
	ck_assert_int_eq(kvbm_pins_list(p, all, N), N);
	for (uint32_t i = 1; i < N; i++)
		ck_assert_uint_lt(all[i - 1].block, all[i].block);
	for (uint32_t i = 0; i < M; i++) {
		ck_assert_uint_eq(few[i].block, all[i].block);
		ck_assert(kvbm_plh_eq(few[i].hash, all[i].hash));
		ck_assert_uint_gt(few[i].remaining_ms, 59000);
	}
	ck_assert_int_eq(kvbm_pins_list(p, NULL, 0), N);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * Crash points inside the expiry heap's updates: a child SIGKILLed in the
 * middle of a sift (the 2nd entry moved) while pinning a block that goes
 * to the top, unpinning the top, and expiring the top. The heap is left
 * half-sifted; the parent's lock recovers it from the deadline words, and
 * from then on every pin ends on time: after each expiry no pin whose
 * deadline passed is left, and none whose deadline is ahead is gone.
 */
enum { HC = 16 }; /* pins before the crash, deadlines 400-1000 ms */

static uint64_t hc_ttl(uint32_t i)
{
	return i == HC ? 300 : 400 + 40 * (uint64_t)(HC - 1 - i);
}

START_TEST(test_pin_heap_crash_points)
{
	static const enum crash_op ops[] = {CR_PIN, CR_UNPIN, CR_EXPIRE};
	enum crash_op op = ops[_i];
	T_NAME(name);
	struct kvbm_plh h[HC + 1];
	struct kvbm_pool *p = prefix_pool(name, 64, 50, 700, h, HC + 1);

	uint64_t t0 = mono_ms();
	for (uint32_t i = 0; i < HC; i++) /* each goes to the top */
		ck_assert_int_eq(kvbm_pin_prefix(p, h + i, 1, hc_ttl(i), NULL), 1);
	ck_assert_int_eq(t_check(p), 0);
	uint64_t recoveries = p->seg.ctl->recoveries;
	/* the pin adds block HC, the unpin takes HC - 1 (the top), the
	 * expiry comes once the top is due */
	crash_child(name, "pins.heap.put:2", op, h + (op == CR_PIN ? HC : HC - 1), 1, hc_ttl(HC),
		    op == CR_EXPIRE ? t0 + hc_ttl(HC - 1) + 5 : 0);
	ck_assert_int_eq(t_check(p), 0); /* its lock recovers first */
	ck_assert_uint_eq(p->seg.ctl->recoveries, recoveries + 1);
	int gone = op == CR_UNPIN ? HC - 1 : -1; /* the unpin's word went first */
	uint32_t pinned = pins(p).blocks;
	ck_assert_uint_eq(pinned, op == CR_PIN ? HC + 1 : op == CR_UNPIN ? HC - 1 : pinned);
	for (int round = 0; round < 200 && pinned; round++) {
		uint64_t before = mono_ms();
		(void)kvbm_pins_expire(p);
		struct kvbm_pinned l[HC + 1];
		long k = kvbm_pins_list(p, l, HC + 1);
		uint64_t after = mono_ms();
		ck_assert_int_ge(k, 0);
		/* none overdue left (its deadline is at most now + remaining) */
		for (long j = 0; j < k; j++)
			ck_assert_uint_ge(after + l[j].remaining_ms + 1, before);
		/* none ended early: a deadline ahead of now is still pinned */
		uint32_t ahead = 0;
		for (uint32_t i = 0; i <= HC; i++)
			ahead += (i < HC || op == CR_PIN) && (int)i != gone && t0 + hc_ttl(i) > after;
		ck_assert_uint_ge((uint64_t)k, ahead);
		pinned = (uint32_t)k;
		usleep(20000);
	}
	ck_assert_uint_eq(pinned, 0);
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_int_eq(present(p, h, HC + 1), HC + 1);
	ck_assert_uint_eq(pressure(p), 64);
	t_done(p, name);
}
END_TEST

/* The checker sees a pin word and a POOL bit that disagree, a pinned
 * block counted inactive, and counts that do not match the words. */
START_TEST(test_pin_checker_sees_damage)
{
	T_NAME(name);
	struct kvbm_pool *p = pin_pool(name, 16, 50);
	struct kvbm_plh h[4];
	struct kvbm_block b[4];

	t_seq_hashes(100, 4, BS, h);
	t_register(p, h, 4, b);
	t_release(p, b, 4);
	ck_assert_int_eq(kvbm_pin_prefix(p, h, 2, 60000, NULL), 2);
	ck_assert_int_eq(t_check(p), 0);
	uint64_t *d = (uint64_t *)(p->seg.pins + 1);
	struct kvbm_shm_slot *pinned = &p->seg.slots[b[0].id];
	/* a bit without its word */
	pinned->holders &= ~KVBM_HOLD_POOL;
	ck_assert_int_gt(t_check(p), 0);
	pinned->holders |= KVBM_HOLD_POOL;
	ck_assert_int_eq(t_check(p), 0);
	/* a word without its bit (and a count that misses it) */
	uint64_t saved = d[b[3].id];
	d[b[3].id] = 12345678;
	ck_assert_int_gt(t_check(p), 0);
	d[b[3].id] = saved;
	/* the counts */
	p->seg.pins->blocks++;
	ck_assert_int_gt(t_check(p), 0);
	p->seg.pins->blocks--;
	ck_assert_int_eq(t_check(p), 0);
	/* a count past the share (a peer's bytes) does not refuse pins for
	 * ever: the words decide, and the lock's repair rebuilds the count */
	uint64_t recoveries = p->seg.ctl->recoveries;
	p->seg.pins->blocks = 0xfffffff0u;
	ck_assert_int_eq(kvbm_pin_prefix(p, h + 2, 1, 60000, NULL), 1);
	ck_assert_uint_eq(p->seg.ctl->recoveries, recoveries + 1);
	ck_assert_uint_eq(pins(p).blocks, 3);
	ck_assert_int_eq(t_check(p), 0);
	/* a deadline no call could have given (past a year) is dropped by
	 * a recovery, not kept as a pin */
	d[b[0].id] = (d[b[0].id] & KVBM_PIN_TIP) | (UINT64_MAX - 1);
	kvbm_store_corrupt(p); /* what a damaged structure makes the lock do */
	ck_assert_int_eq(kvbm_pins_info(p, &(struct kvbm_pins_info){0}), 0);
	ck_assert_uint_eq(pins(p).blocks, 2);
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_int_eq(kvbm_unpin_prefix(p, h, 3), 2);
	t_done(p, name);
}
END_TEST

/* The dump shows the pins. */
START_TEST(test_pin_dump)
{
	T_NAME(name);
	struct kvbm_plh h[3];
	char out[16384];
	struct kvbm_pool *p = prefix_pool(name, 16, 50, 110, h, 3);

	ck_assert_int_eq(kvbm_pin_prefix(p, h, 3, 60000, NULL), 3);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", name, NULL), 0);
	ck_assert_msg(strstr(out, "pins       3 pinned blocks (counted 3, 1 pins), cap 8 "
				  "(pin_share 50%), 0 expired"), "%s", out);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--json", name, NULL), 0);
	ck_assert_msg(strstr(out, "\"pinned_blocks\":3"), "%s", out);
	ck_assert_int_eq(kvbm_unpin_prefix(p, h, 3), 3);
	t_done(p, name);
}
END_TEST

/*
 * Pins, unpins and expiries racing lock-free matchers (a thread of this
 * process and other processes) and allocations that evict: the pool's
 * pins meet every path that touches a holder mask. Run under TSan for
 * the in-process races; the invariants are checked after.
 */
#define STRESS_CHAINS 8
#define STRESS_LEN 6
struct stress {
	const char *name;
	struct kvbm_plh h[STRESS_CHAINS][STRESS_LEN];
	uint64_t end_ms; /* everyone stops then */
	long matched;
};

/* Matches chains, holds, releases; allocates what it can and frees it. */
static long stress_matcher(struct kvbm_pool *q, struct stress *st, unsigned seed)
{
	struct kvbm_block b[STRESS_LEN], a[4];
	long got = 0;

	while (mono_ms() < st->end_ms) {
		seed = seed * 1103515245u + 12345u;
		long n = kvbm_match_blocks(q, st->h[(seed >> 8) % STRESS_CHAINS], STRESS_LEN, b);
		if (n < 0)
			return -1;
		got += n;
		if (n && kvbm_release_blocks(q, b, (uint32_t)n) != 0)
			return -2;
		if ((seed >> 16) % 4 == 0 && kvbm_allocate_blocks(q, 4, a, NULL, NULL) == 0 &&
		    kvbm_release_blocks(q, a, 4) != 0)
			return -3;
	}
	return got;
}

static void *stress_thread(void *arg)
{
	struct stress *st = arg;
	struct kvbm_pool *q = NULL;

	if (kvbm_pool_open(st->name, NULL, 0, &q) == 0) {
		st->matched = stress_matcher(q, st, 7);
		kvbm_pool_close(q);
	} else {
		st->matched = -4;
	}
	return NULL;
}

/* A sibling thread on the test's own handle: expiries and listings. */
struct sibling {
	struct kvbm_pool *p;
	uint64_t end_ms;
	long bad;
};

static void *sibling_thread(void *arg)
{
	struct sibling *sb = arg;
	struct kvbm_pinned l[16];
	struct kvbm_pins_info i;

	while (mono_ms() < sb->end_ms)
		if (kvbm_pins_expire(sb->p) < 0 || kvbm_pins_info(sb->p, &i) < 0 ||
		    kvbm_pins_list(sb->p, l, 16) < 0)
			sb->bad++;
	return NULL;
}

START_TEST(test_pin_races_matchers_and_evictions)
{
	T_NAME(name);
	struct kvbm_pool *p = pin_pool(name, 64, 50);
	struct stress st = {.name = name};
	pid_t kids[2];
	pthread_t th;

	long pinned = 0;

	st.end_ms = mono_ms() + 1000;
	for (int c = 0; c < STRESS_CHAINS; c++) {
		t_seq_hashes(1000 + 100 * (uint32_t)c, STRESS_LEN, BS, st.h[c]);
		cached(p, st.h[c], STRESS_LEN);
	}
	for (int k = 0; k < 2; k++) {
		kids[k] = fork();
		ck_assert_int_ge(kids[k], 0);
		if (kids[k] == 0) {
			struct kvbm_pool *q = NULL;
			T_CHILD_CHECK(kvbm_pool_open(name, NULL, 0, &q) == 0, 2);
			T_CHILD_CHECK(stress_matcher(q, &st, (unsigned)getpid()) >= 0, 3);
			T_CHILD_CHECK(kvbm_pool_close(q) == 0, 4);
			T_CHILD_OK();
		}
	}
	ck_assert_int_eq(pthread_create(&th, NULL, stress_thread, &st), 0);
	struct sibling sb = {p, st.end_ms, 0};
	pthread_t th2;
	ck_assert_int_eq(pthread_create(&th2, NULL, sibling_thread, &sb), 0);
	for (unsigned i = 0; mono_ms() < st.end_ms; i++) {
		const struct kvbm_plh *h = st.h[i % STRESS_CHAINS];
		long r = kvbm_pin_prefix(p, h, 1 + i % STRESS_LEN, 1 + i % 5, NULL);
		/* a chain's tail may be evicted by then: not registered */
		ck_assert_msg(r >= 0 || r == KVBM_ENOTREG || r == KVBM_EPINSHARE, "%s",
			      kvbm_strerror((int)r));
		pinned += r > 0 ? r : 0;
		if (i % 3 == 0)
			ck_assert_int_ge(kvbm_unpin_prefix(p, h, STRESS_LEN), 0);
		if (i % 7 == 0)
			ck_assert_int_ge(kvbm_pins_expire(p), 0);
		if (i % 5 == 0) /* the evicted come back */
			for (int k = 0; k < STRESS_LEN; k++) {
				struct kvbm_block b;
				if (kvbm_check_presence(p, &h[k], 1, (uint8_t[1]){0}) == 0 &&
				    kvbm_allocate_blocks(p, 1, &b, NULL, NULL) == 0) {
					ck_assert_int_eq(kvbm_stage_block(p, &b, h[k], BS), 0);
					ck_assert_int_eq(kvbm_register_blocks(p, &b, 1), 0);
					ck_assert_int_eq(kvbm_release_blocks(p, &b, 1), 0);
				}
			}
	}
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_int_eq(pthread_join(th2, NULL), 0);
	ck_assert_int_eq(sb.bad, 0);
	ck_assert_int_gt(st.matched, 0); /* it did run against them */
	ck_assert_int_gt(pinned, 0);
	for (int k = 0; k < 2; k++)
		ck_assert_int_eq(t_wait(kids[k]), 0);
	ck_assert_int_ge(kvbm_reap(p), 0);
	usleep(10000); /* every TTL was at most 5 ms */
	ck_assert_int_ge(kvbm_pins_expire(p), 0);
	ck_assert_uint_eq(pins(p).blocks, 0);
	ck_assert_int_eq(kvbm_available_blocks(p), 64);
	t_done(p, name);
}
END_TEST

/* kvbm-pool create --pin-share: the bound is checked and shown. */
START_TEST(test_pin_share_flag)
{
	T_NAME(name);
	char out[8192];

	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-pool", "create", name, "--blocks",
					"64", "--pin-share", "101", NULL),
			 2);
	ck_assert_msg(strstr(out, "kvbm-pool: --pin-share 101: pin_share must be a percentage, "
				  "0 to 100\n"), "%s", out);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-pool", "create", name, "--blocks",
					"64", "--pin-share", "10", NULL),
			 0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "info", name, NULL), 0);
	ck_assert_msg(strstr(out, "pin share 10% (6 blocks)"), "%s", out);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
}
END_TEST

Suite *make_pins_suite(void)
{
	Suite *s = suite_create("pins");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_pin_keeps_prefix_through_pressure);
	tcase_add_test(tc, test_pin_over_process_holds);
	tcase_add_test(tc, test_pin_expires_at_next_lock);
	tcase_add_test(tc, test_pins_expire_call);
	tcase_add_test(tc, test_pin_expiry_survives_a_late_next_word);
	tcase_add_test(tc, test_pin_expiry_survives_a_lie_below_the_top);
	tcase_add_test(tc, test_pin_renewal_extends_never_shortens);
	tcase_add_test(tc, test_pin_share_bound);
	tcase_add_test(tc, test_pin_share_zero_and_config);
	tcase_add_test(tc, test_pin_bad_input);
	tcase_add_test(tc, test_pin_outlives_its_process);
	tcase_add_loop_test(tc, test_pin_crash_points, 0,
			    sizeof(crash_cases) / sizeof(crash_cases[0]));
	tcase_add_loop_test(tc, test_pin_heap_crash_points, 0, 3);
	tcase_add_test(tc, test_pin_checker_sees_damage);
	tcase_add_test(tc, test_pin_expiry_visits_only_whats_due);
	tcase_add_test(tc, test_pins_list_visits_only_pins);
	tcase_add_test(tc, test_pin_dump);
	tcase_add_test(tc, test_pin_share_flag);
	tcase_add_test(tc, test_pin_races_matchers_and_evictions);
	suite_add_tcase(s, tc);
	return s;
}
