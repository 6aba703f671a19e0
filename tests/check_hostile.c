/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_hostile.c - the library over bytes a buggy or hostile peer wrote:
 * any region of a live pool overwritten with random bytes, then a process
 * attaches and works. It may get errors (KVBM_ECORRUPT, KVBM_EPOISONED,
 * -ENOSPC...), never a crash or a hang.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"
#include "../shm/layout.h"

#define BS 4
#define TOTAL 64

static uint64_t rng(uint64_t *s)
{
	/* splitmix64: reproducible from the seed a failure names */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Overwrites @len bytes at @off of the mapping with noise; with @sparse,
 * one word in eight (plausible-looking damage: most fields intact). */
static void scribble(uint8_t *m, uint64_t off, uint64_t len, uint64_t *seed, int sparse)
{
	for (uint64_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v = rng(seed);
		if (sparse && (v & 7))
			continue;
		if (sparse && (v & 8))
			v %= TOTAL + 2; /* a small index: in range or just past it */
		memcpy(m + off + i, &v, 8);
	}
}

static void count_event(const struct kvbm_event *ev, void *arg)
{
	(void)arg;
	if (ev->ntokens > BS || (ev->ntokens && !ev->tokens))
		abort(); /* never more ids than a block has */
}

/* Everything a process does with a pool; each call may fail. */
static void work(const char *name)
{
	struct kvbm_pool *q;
	struct kvbm_block b[TOTAL], m[8];
	struct kvbm_plh h[8];
	uint8_t found[8];

	int r = kvbm_pool_open(name, NULL, 0, &q);
	if (getenv("HOSTILE_VERBOSE"))
		fprintf(stderr, "open: %s\n", kvbm_strerror(r));
	if (r != 0)
		return;
	t_seq_hashes(1, 8, BS, h);
	(void)kvbm_pool_check(q, 0, NULL, NULL);
	long k = kvbm_match_blocks(q, h, 8, m);
	if (k > 0)
		(void)kvbm_release_blocks(q, m, (uint32_t)k);
	k = kvbm_match_blocks_scattered(q, h, 8, m, found);
	for (int i = 0; k > 0 && i < 8; i++)
		if (found[i])
			(void)kvbm_release_blocks(q, &m[i], 1);
	for (uint32_t n = TOTAL; n >= 1; n /= 2) {
		if (kvbm_allocate_blocks(q, n, b, NULL, NULL) != 0)
			continue;
		for (uint32_t i = 0; i < n && i < 8; i++)
			(void)kvbm_stage_block(q, &b[i], h[i], BS);
		(void)kvbm_register_blocks(q, b, n < 8 ? n : 8);
		(void)kvbm_release_blocks(q, b, n);
	}
	(void)kvbm_reset_inactive_pool(q);
	(void)kvbm_reap(q);
	struct kvbm_event ev[16];
	uint32_t tok[16 * BS];
	for (uint64_t c = 0; c < 64; c += 7) {
		uint64_t cur = c;
		(void)kvbm_events_read(q, &cur, ev, 16, tok, 16 * BS);
	}
	uint64_t cur;
	(void)kvbm_events_snapshot(q, &cur, count_event, NULL);
	(void)kvbm_available_blocks(q);
	struct kvbm_metrics mt;
	(void)kvbm_metrics_snapshot(q, &mt);
	long v = kvbm_pool_check(q, 0, NULL, NULL);
	if (getenv("HOSTILE_VERBOSE"))
		fprintf(stderr, "end: check %ld, available %ld\n", v, kvbm_available_blocks(q));
	kvbm_pool_close(q);
}

static const enum kvbm_region regions[] = {
	KVBM_REGION_CONTROL, KVBM_REGION_PROCS,   KVBM_REGION_SLOTS, KVBM_REGION_REGISTRY,
	KVBM_REGION_HOLDERS, KVBM_REGION_METRICS, KVBM_REGION_EVICT, KVBM_REGION_EVENTS,
	KVBM_REGION_TOKENS,
};
#define NREGIONS (int)(sizeof(regions) / sizeof(regions[0]))
#define SEEDS 6

/*
 * Run _i: region _i / (2 * SEEDS), dense or sparse noise, one seed. A pool
 * in use (held, inactive, mutable blocks, a duplicate) is damaged while
 * its creator stays attached, then a child attaches and works.
 */
START_TEST(test_hostile_region_bytes_never_crash)
{
	T_NAME(name);
	if (getenv("HOSTILE_RUN") && atoi(getenv("HOSTILE_RUN")) != _i)
		return;
	int region = regions[_i / (2 * SEEDS)], sparse = (_i / SEEDS) % 2;
	const uint64_t seed0 = 0x5eed0000u + (uint64_t)_i;
	uint64_t seed = seed0;
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[16];
	struct kvbm_block b[16], d, mu;
	char path[256];
	struct stat st;

	cfg.block_count = TOTAL;
	/* every run with LRU or lineage as before, and each third run's
	 * pool with a queued backend instead (queues, forest, ghost table) */
	static const enum kvbm_backend queued[] = {KVBM_BACKEND_S3FIFO, KVBM_BACKEND_ARC,
						   KVBM_BACKEND_WTINYLFU, KVBM_BACKEND_LECAR,
						   KVBM_BACKEND_ADAPT};
	cfg.backend = (_i % 2) ? KVBM_BACKEND_LINEAGE : KVBM_BACKEND_LRU;
	if (_i % 3 == 2)
		cfg.backend = queued[(_i / 3) % 5];
	cfg.flags |= KVBM_CFG_KEEP_TOKENS;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, 16, BS, h);
	t_register(p, h, 16, b);
	t_release(p, b, 12);
	t_register(p, &h[15], 1, &d);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &mu, NULL, NULL), 0);
	int fd = open(t_path(name, path, sizeof(path)), O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	uint8_t *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	ck_assert_ptr_ne(m, MAP_FAILED);
	const struct kvbm_shm_header *hdr = (const void *)m;
	uint64_t off = hdr->regions[region].offset, len = hdr->regions[region].size;
	if (region == KVBM_REGION_CONTROL) {
		/* past the mutex: glibc's own word is glibc's problem */
		off += 64;
		len -= 64;
	}
	scribble(m, off, len, &seed, sparse);
	pid_t pid = fork();
	if (pid == 0) {
		/* SIG_DFL: Check's inherited handler would kill the whole
		 * group, and a hang would read as the test's own signal 9 */
		signal(SIGALRM, SIG_DFL);
		alarm(30);
		work(name);
		work(name);
		_exit(0);
	}
	int r = t_wait(pid);
	ck_assert_msg(r == 0, "region %d %s seed %llx: the worker died (%d)", region,
		      sparse ? "sparse" : "dense", (unsigned long long)seed0, r);
	/* and the creator, still attached, survives its own calls */
	work(name);
	munmap(m, (size_t)st.st_size);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, KVBM_DESTROY_FORCE);
}
END_TEST

Suite *make_hostile_suite(void)
{
	Suite *s = suite_create("hostile");
	TCase *tc = tcase_create("hostile");

	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_hostile_region_bytes_never_crash, 0, NREGIONS * 2 * SEEDS);
	suite_add_tcase(s, tc);
	return s;
}
