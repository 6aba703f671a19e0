/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_events.c - the event ring (issue 15, part 1): what changes of the
 * registered set emit (kvbm-logical's rules, spec section 5.1), readers
 * that fall behind (KVBM_EGAP, then a snapshot), a reader in another
 * process rebuilding the registered set while writers work and die, and a
 * writer killed while it appends.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/index.h"
#include "../shm/failpoint.h"

#define BS 4

/* A reader's view: the set of hashes it believes registered. */
struct view {
	struct kvbm_plh *h;
	size_t n, cap;
	uint64_t cursor;
	long resyncs, gaps, resync_events;
};

static long view_find(const struct view *v, struct kvbm_plh h)
{
	for (size_t i = 0; i < v->n; i++)
		if (kvbm_plh_eq(v->h[i], h))
			return (long)i;
	return -1;
}

static void view_apply(const struct kvbm_event *ev, void *arg)
{
	struct view *v = arg;
	long i;

	switch (ev->kind) {
	case KVBM_EVENT_CLEARED:
		v->n = 0;
		break;
	case KVBM_EVENT_STORED:
		if (view_find(v, ev->hash) >= 0)
			break; /* a snapshot and the stream may both say it */
		if (v->n == v->cap) {
			v->cap = v->cap ? 2 * v->cap : 64;
			v->h = realloc(v->h, v->cap * sizeof(*v->h));
		}
		v->h[v->n++] = ev->hash;
		break;
	case KVBM_EVENT_REMOVED:
		i = view_find(v, ev->hash);
		if (i >= 0) /* an unknown remove is ignored, as Dynamo does */
			v->h[i] = v->h[--v->n];
		break;
	}
}

/* Reads everything new into @v, resyncing on a gap or a RESYNC event. */
static void view_drain(struct kvbm_pool *p, struct view *v)
{
	struct kvbm_event ev[32];
	uint32_t tok[32 * BS];

	for (;;) {
		long n = kvbm_events_read(p, &v->cursor, ev, 32, tok, 32 * BS);
		int resync = n == KVBM_EGAP;
		ck_assert_msg(n >= 0 || resync, "read: %s", kvbm_strerror((int)n));
		for (long i = 0; i < n; i++) {
			if (ev[i].kind == KVBM_EVENT_RESYNC) {
				resync = 1;
				v->resync_events++;
			}
			else
				view_apply(&ev[i], v);
		}
		if (resync) {
			v->resyncs++;
			v->gaps += n == KVBM_EGAP;
			ck_assert_int_ge(kvbm_events_snapshot(p, &v->cursor, view_apply, v), 0);
			continue;
		}
		if (n == 0)
			return;
	}
}

/* The view equals the registered primaries (a snapshot, nothing in flight). */
static void assert_view_exact(struct kvbm_pool *p, const struct view *v)
{
	struct view truth = {0};
	uint64_t c;

	ck_assert_int_ge(kvbm_events_snapshot(p, &c, view_apply, &truth), 0);
	ck_assert_uint_eq(truth.n, v->n);
	for (size_t i = 0; i < truth.n; i++)
		ck_assert_msg(view_find(v, truth.h[i]) >= 0, "registered block %zu missing", i);
	free(truth.h);
}

static struct kvbm_pool *events_pool(const char *name, uint32_t blocks, uint32_t ring,
				     enum kvbm_dup_policy dup)
{
	struct kvbm_config cfg = t_cfg();

	cfg.block_count = blocks;
	cfg.event_ring = ring;
	cfg.dup_policy = dup;
	return t_create(name, &cfg);
}

/* Reads exactly @want events (no more) into @ev. */
static void read_n(struct kvbm_pool *p, uint64_t *cursor, struct kvbm_event *ev, long want,
		   uint32_t *tok, size_t ntok)
{
	long n = kvbm_events_read(p, cursor, ev, 64, tok, ntok);
	ck_assert_int_eq(n, want);
}

START_TEST(test_events_follow_the_registered_set)
{
	T_NAME(name);
	struct kvbm_pool *p = events_pool(name, 8, 64, KVBM_DUP_ALLOW);
	struct kvbm_plh h[3];
	struct kvbm_block b[3], d, m[3], all[8];
	struct kvbm_event ev[64];
	uint32_t tokens[3 * BS], tok[64 * BS];
	uint64_t c;

	ck_assert_int_eq(kvbm_events_head(p, &c), 0);
	ck_assert_uint_eq(c, 0);
	for (uint32_t i = 0; i < 3 * BS; i++)
		tokens[i] = 1000 + i;
	t_seq_hashes(1, 3, BS, h);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 3, b, NULL, NULL), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(kvbm_stage_block(p, &b[i], h[i], BS), 0);
	ck_assert_int_eq(kvbm_register_blocks_tokens(p, b, 3, tokens), 0);
	read_n(p, &c, ev, 3, tok, sizeof(tok) / 4);
	for (int i = 0; i < 3; i++) {
		ck_assert_uint_eq(ev[i].kind, KVBM_EVENT_STORED);
		ck_assert_uint_eq(ev[i].seq, (uint64_t)i);
		ck_assert(kvbm_plh_eq(ev[i].hash, h[i]));
		ck_assert_uint_eq(ev[i].ntokens, BS);
		ck_assert_uint_eq(ev[i].tokens[0], 1000 + (uint32_t)i * BS);
		ck_assert_uint_eq(ev[i].tokens[BS - 1], 1000 + (uint32_t)i * BS + BS - 1);
	}
	/* a duplicate, a release, a resurrection: the set is the same */
	t_register(p, &h[1], 1, &d);
	t_release(p, &d, 1);
	t_release(p, b, 3);
	ck_assert_int_eq(kvbm_match_blocks(p, h, 3, m), 3);
	t_release(p, m, 3);
	read_n(p, &c, ev, 0, tok, sizeof(tok) / 4);
	/* eviction removes them: 5 free, then the 3 primaries */
	ck_assert_int_eq(kvbm_allocate_blocks(p, 8, all, NULL, NULL), 0);
	read_n(p, &c, ev, 3, tok, sizeof(tok) / 4);
	for (int i = 0; i < 3; i++) {
		ck_assert_uint_eq(ev[i].kind, KVBM_EVENT_REMOVED);
		ck_assert_uint_eq(ev[i].ntokens, 0);
	}
	t_release(p, all, 8);
	/* reset on release and kvbm_reset_inactive_pool remove too */
	t_register(p, h, 2, b);
	ck_assert_int_eq(kvbm_set_reset_on_release(p, &b[0], 1), 0);
	t_release(p, b, 2);
	ck_assert_int_eq(kvbm_reset_inactive_pool(p), 0);
	read_n(p, &c, ev, 4, tok, sizeof(tok) / 4);
	ck_assert_uint_eq(ev[0].kind, KVBM_EVENT_STORED);
	ck_assert_uint_eq(ev[0].ntokens, 0); /* registered without tokens */
	ck_assert_uint_eq(ev[1].kind, KVBM_EVENT_STORED);
	ck_assert_uint_eq(ev[2].kind, KVBM_EVENT_REMOVED);
	ck_assert(kvbm_plh_eq(ev[2].hash, h[0]));
	ck_assert_uint_eq(ev[3].kind, KVBM_EVENT_REMOVED);
	ck_assert(kvbm_plh_eq(ev[3].hash, h[1]));
	t_done(p, name);
}
END_TEST

/* Under KVBM_DUP_REJECT a registration that returns the existing primary
 * changes nothing; a pool without a ring says so. */
START_TEST(test_events_dedup_silent_and_ring_optional)
{
	T_NAME(name);
	T_NAME(name2);
	struct kvbm_pool *p = events_pool(name, 8, 64, KVBM_DUP_REJECT);
	struct kvbm_plh h = t_hash1(5, BS);
	struct kvbm_block a, b;
	struct kvbm_event ev[4];
	uint64_t c = 0;

	t_register(p, &h, 1, &a);
	t_register(p, &h, 1, &b);
	ck_assert_uint_eq(a.id, b.id);
	ck_assert_int_eq(kvbm_events_read(p, &c, ev, 4, NULL, 0), 1);
	t_release(p, &a, 1);
	t_release(p, &b, 1);
	ck_assert_int_eq(kvbm_events_read(p, &c, ev, 4, NULL, 0), 0);
	c = 99;
	ck_assert_int_eq(kvbm_events_read(p, &c, ev, 4, NULL, 0), -ERANGE);
	t_done(p, name);
	struct kvbm_pool *q = events_pool(name2, 8, 0, KVBM_DUP_ALLOW);
	ck_assert_int_eq(kvbm_events_head(q, &c), -EOPNOTSUPP);
	t_done(q, name2);
}
END_TEST

/*
 * A reader that falls more than the ring's size behind gets KVBM_EGAP,
 * never a wrong event, and a snapshot (then the stream from its cursor)
 * gives it the registered set exactly.
 */
START_TEST(test_events_lapped_reader_resyncs)
{
	T_NAME(name);
	enum { N = 200 };
	struct kvbm_pool *p = events_pool(name, 256, 64, KVBM_DUP_ALLOW);
	static struct kvbm_plh h[N];
	static struct kvbm_block b[N];
	struct view v = {0};
	struct kvbm_event ev[4];

	t_seq_hashes(1, N, BS, h);
	t_register(p, h, N, b);
	t_release(p, b, N);
	ck_assert_int_eq(kvbm_events_read(p, &v.cursor, ev, 4, NULL, 0), KVBM_EGAP);
	view_drain(p, &v);
	ck_assert_int_eq(v.gaps, 1);
	ck_assert_uint_eq(v.n, N);
	/* evictions after the snapshot reach it through the stream */
	ck_assert_int_eq(kvbm_allocate_blocks(p, 100, b, NULL, NULL), 0);
	view_drain(p, &v);
	assert_view_exact(p, &v);
	t_release(p, b, 100);
	free(v.h);
	t_done(p, name);
}
END_TEST

/* A writer process: random chains registered, released, evicted. */
static int writer(const char *name, unsigned seed, int rounds, const char *die_at)
{
	struct kvbm_pool *q = NULL;

	if (kvbm_pool_open(name, NULL, 0, &q) != 0)
		return 90;
	if (die_at)
		kvbm_fp_arm(die_at);
	for (int r = 0; r < rounds; r++) {
		struct kvbm_plh h[4];
		struct kvbm_block b[4], m[4];
		uint32_t start = 1 + (uint32_t)(rand_r(&seed) % 64) * 10;
		t_seq_hashes(start, 4, BS, h);
		long k = kvbm_match_blocks(q, h, 4, m);
		if (k < 0)
			return 91;
		uint32_t rest = 4 - (uint32_t)k;
		if (rest && kvbm_allocate_blocks(q, rest, b, NULL, NULL) == 0) {
			for (uint32_t i = 0; i < rest; i++)
				if (kvbm_stage_block(q, &b[i], h[k + i], BS) != 0)
					return 92;
			if (kvbm_register_blocks(q, b, rest) != 0)
				return 93;
			if (kvbm_release_blocks(q, b, rest) != 0)
				return 94;
		}
		if (k > 0 && kvbm_release_blocks(q, m, (uint32_t)k) != 0)
			return 95;
	}
	kvbm_pool_close(q);
	return die_at ? 77 : 0;
}

/*
 * Two writer processes churn a small pool (evictions all the time) while
 * this process reads the ring (64 entries: it is lapped now and then).
 * Then, with nothing else running, a third writer is killed inside the
 * mutex at one of the points of a registration or eviction: the recovery
 * appends RESYNC, and the reader, resyncing, again sees exactly the
 * registered set (without it, a block published but not yet announced is
 * missing from the view). Runs: the points.
 */
static const char *const die_points[] = {
	"block.register.published", "store.evict.committed", "events.append.written",
	"block.allocate.victims",
};

START_TEST(test_events_reader_converges_across_processes_and_crashes)
{
	T_NAME(name);
	struct kvbm_pool *p = events_pool(name, 48, 64, KVBM_DUP_ALLOW);
	struct view v = {0};
	pid_t w[3];

	ck_assert_int_eq(kvbm_events_head(p, &v.cursor), 0);
	for (int i = 0; i < 2; i++) {
		w[i] = fork();
		if (w[i] == 0)
			_exit(writer(name, 17u + (unsigned)i, 3000, NULL));
	}
	for (int done = 0; done < 100; done++) {
		view_drain(p, &v);
		usleep(500);
	}
	ck_assert_int_eq(t_wait(w[0]), 0);
	ck_assert_int_eq(t_wait(w[1]), 0);
	view_drain(p, &v);
	assert_view_exact(p, &v);
	long before = v.resync_events;
	w[2] = fork();
	if (w[2] == 0)
		_exit(writer(name, 99, 3000, die_points[_i]));
	ck_assert_int_eq(t_wait(w[2]), 128 + SIGKILL);
	ck_assert_int_ge(kvbm_reap(p), 0);
	view_drain(p, &v);
	assert_view_exact(p, &v);
	ck_assert_int_eq(v.resync_events, before + 1); /* the recovery said so */
	ck_assert_int_eq(t_check(p), 0);
	free(v.h);
	t_done(p, name);
}
END_TEST

/* A peer scribbles over the ring: readers get KVBM_EGAP or events, never
 * a crash, and a snapshot still tells the truth. */
START_TEST(test_events_damaged_ring_never_crashes_a_reader)
{
	T_NAME(name);
	struct kvbm_pool *p = events_pool(name, 64, 64, KVBM_DUP_ALLOW);
	struct kvbm_plh h[16];
	struct kvbm_block b[16];
	struct kvbm_event ev[64];
	uint32_t tok[64 * BS];
	struct view v = {0};
	char path[256];

	t_seq_hashes(1, 16, BS, h);
	t_register(p, h, 16, b);
	int fd = open(t_path(name, path, sizeof(path)), O_RDWR);
	ck_assert_int_ge(fd, 0);
	struct kvbm_pool_info pi;
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	uint8_t *m = mmap(NULL, pi.segment_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	ck_assert_ptr_ne(m, MAP_FAILED);
	/* the ring is the last region: its entries end the file's data */
	uint64_t seed = 7;
	for (uint64_t off = pi.segment_size - 64 * 48; off + 8 <= pi.segment_size; off += 8) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		if (seed >> 62)
			memcpy(m + off, &seed, 8);
	}
	for (int i = 0; i < 4; i++) {
		uint64_t c = (uint64_t)i * 5;
		long n = kvbm_events_read(p, &c, ev, 64, tok, 64 * BS);
		ck_assert_msg(n >= 0 || n == KVBM_EGAP, "%s", kvbm_strerror((int)n));
		for (long k = 0; k < n; k++)
			ck_assert_uint_le(ev[k].ntokens, BS);
	}
	munmap(m, pi.segment_size);
	ck_assert_int_eq(kvbm_events_snapshot(p, &v.cursor, view_apply, &v), 16);
	t_release(p, b, 16);
	free(v.h);
	t_done(p, name);
}
END_TEST

/* What a snapshot's STORED event carries with KVBM_CFG_KEEP_TOKENS. */
struct kept_view {
	struct kvbm_plh h[64];
	uint32_t tok[64][BS];
	uint32_t ntok[64];
	int n;
};

static void kept_apply(const struct kvbm_event *ev, void *arg)
{
	struct kept_view *k = arg;

	if (ev->kind != KVBM_EVENT_STORED || k->n == 64)
		return;
	k->h[k->n] = ev->hash;
	k->ntok[k->n] = ev->ntokens;
	for (uint32_t i = 0; i < ev->ntokens && i < BS; i++)
		k->tok[k->n][i] = ev->tokens[i];
	k->n++;
}

/*
 * With KVBM_CFG_KEEP_TOKENS a snapshot's STORED events carry the token ids
 * given at registration (a router indexes a store only with them), and a
 * slot registered again without tokens carries none, never the old ones.
 */
START_TEST(test_snapshot_carries_kept_tokens)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[8], x = t_hash1(900, BS);
	struct kvbm_block b[8], all[8], y;
	uint32_t tokens[8 * BS];
	struct kept_view k = {0};
	uint64_t c;

	cfg.block_count = 8;
	cfg.event_ring = 64;
	cfg.flags |= KVBM_CFG_KEEP_TOKENS;
	struct kvbm_pool *p = t_create(name, &cfg);
	for (uint32_t i = 0; i < 8 * BS; i++)
		tokens[i] = 500 + i;
	t_seq_hashes(500, 8, BS, h);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 8, b, NULL, NULL), 0);
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(kvbm_stage_block(p, &b[i], h[i], BS), 0);
	ck_assert_int_eq(kvbm_register_blocks_tokens(p, b, 8, tokens), 0);
	ck_assert_int_eq(kvbm_events_snapshot(p, &c, kept_apply, &k), 8);
	for (int i = 0; i < 8; i++) {
		ck_assert(kvbm_plh_eq(k.h[i], h[i])); /* chain order */
		ck_assert_uint_eq(k.ntok[i], BS);
		ck_assert_uint_eq(k.tok[i][0], 500 + (uint32_t)i * BS);
		ck_assert_uint_eq(k.tok[i][BS - 1], 500 + (uint32_t)i * BS + BS - 1);
	}
	/* every slot evicted, one registered anew without tokens */
	t_release(p, b, 8);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 8, all, NULL, NULL), 0);
	t_release(p, all, 8);
	t_register(p, &x, 1, &y);
	k.n = 0;
	ck_assert_int_eq(kvbm_events_snapshot(p, &c, kept_apply, &k), 1);
	ck_assert_uint_eq(k.ntok[0], 0);
	t_release(p, &y, 1);
	/* the flag needs a ring */
	const char *why;
	cfg.event_ring = 0;
	ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
	t_done(p, name);
}
END_TEST

/* @n root keys whose two candidate buckets, in a pool of @blocks, are the
 * same two: the third of them on goes to the index's stash. */
static void same_pair_keys(uint32_t blocks, struct kvbm_plh *h, int n)
{
	struct kvbm_index ix = {.mask = kvbm_index_buckets(blocks) - 1};
	uint64_t x = 12345;
	uint32_t pair[2] = {0, 0};

	for (int got = 0; got < n;) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		struct kvbm_plh k;
		ck_assert_int_eq(kvbm_plh_make(x, NULL, 0, &k), 0);
		struct kvbm_where w = kvbm_index_locate(&ix, k);
		if (got == 0) {
			pair[0] = w.b1;
			pair[1] = w.b2;
		} else if (!((w.b1 == pair[0] && w.b2 == pair[1]) ||
			     (w.b1 == pair[1] && w.b2 == pair[0]))) {
			continue;
		}
		h[got++] = k;
	}
}

/*
 * A registration the registry index has no room for (both of its buckets
 * full: kvbm_index_full_total) makes a block nobody can match, so it emits
 * no STORED, and that block, which goes back to the free pool when
 * released, emits no REMOVED when it is allocated again: the stream keeps
 * equal to the set of registered primaries. (kvbm-events-bench once
 * counted such a registration as a lost event: 99,998 of 100,000.) Made
 * here with keys whose two candidate buckets are the same two, one more
 * than those buckets and the index's stash hold.
 */
START_TEST(test_events_index_full_registration_is_silent)
{
	T_NAME(name);
	enum {
		BLOCKS = 128,
		N = (2 + KVBM_INDEX_STASH_BUCKETS) * KVBM_BUCKET_ENTRIES + 1, /* buckets, stash, 1 */
	};
	struct kvbm_pool *p = events_pool(name, BLOCKS, 256, KVBM_DUP_ALLOW);
	struct kvbm_plh h[N];
	struct kvbm_block b[N], all[BLOCKS];
	struct kvbm_event ev[N];
	struct kvbm_metrics m;
	struct view v = {0};
	uint64_t cursor;

	same_pair_keys(BLOCKS, h, N);
	ck_assert_int_eq(kvbm_events_head(p, &cursor), 0);
	for (int i = 0; i < N; i++)
		t_register(p, &h[i], 1, &b[i]);
	ck_assert_int_eq(kvbm_metrics_snapshot(p, &m), 0);
	ck_assert_uint_eq(m.index_full, 1);
	long got = kvbm_events_read(p, &cursor, ev, N, NULL, 0);
	ck_assert_int_eq(got, N - 1);
	for (long i = 0; i < got; i++) {
		ck_assert_uint_eq(ev[i].kind, KVBM_EVENT_STORED);
		ck_assert(!kvbm_plh_eq(ev[i].hash, h[N - 1]));
	}
	t_release(p, b, N);
	/* the whole pool: the N - 1 primaries are evicted, the last block
	 * comes back from the free pool, silently */
	ck_assert_int_eq(kvbm_allocate_blocks(p, BLOCKS, all, NULL, NULL), 0);
	got = kvbm_events_read(p, &cursor, ev, N, NULL, 0);
	ck_assert_int_eq(got, N - 1);
	for (long i = 0; i < got; i++)
		ck_assert_uint_eq(ev[i].kind, KVBM_EVENT_REMOVED);
	v.cursor = cursor;
	view_drain(p, &v);
	assert_view_exact(p, &v);
	t_release(p, all, BLOCKS);
	free(v.h);
	t_done(p, name);
}
END_TEST

/*
 * A registrar SIGKILLed between putting its key in the index's stash and
 * counting it (index.stash.put, under the mutex) leaves the count one
 * short, which hides the entry from lookups; the recovery that follows
 * rebuilds the index (the stash recounted, the hidden entry dropped, the
 * registered primary inserted again): the block is matched again and the
 * count agrees with the entries. Seen failing (the pool poisoned) with
 * rebuild_index() keeping entries a lookup cannot find.
 */
START_TEST(test_killed_stash_insert_is_recounted)
{
	T_NAME(name);
	enum { BLOCKS = 128, N = 2 * KVBM_BUCKET_ENTRIES + 1 };
	struct kvbm_pool *p = events_pool(name, BLOCKS, 256, KVBM_DUP_ALLOW);
	struct kvbm_plh h[N];
	struct kvbm_block b[N], hit;
	struct kvbm_pool_info pi;

	same_pair_keys(BLOCKS, h, N);
	for (int i = 0; i < N - 1; i++) /* both buckets full */
		t_register(p, &h[i], 1, &b[i]);
	t_release(p, b, N - 1);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q;
		if (kvbm_pool_open(name, NULL, 0, &q) != 0)
			_exit(70);
		kvbm_fp_arm("index.stash.put");
		t_register(q, &h[N - 1], 1, &b[N - 1]);
		_exit(77); /* the failpoint never fired */
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	ck_assert_int_eq(kvbm_reap(p), 0); /* the lock recovered it first */
	ck_assert_int_eq(kvbm_pool_info(p, &pi), 0);
	ck_assert_uint_eq(pi.recoveries, 1);
	ck_assert_int_eq(kvbm_match_blocks(p, &h[N - 1], 1, &hit), 1);
	t_release(p, &hit, 1);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/* ---- kept tokens across processes (KVBM_CFG_KEEP_TOKENS) --------------- */

/* A root block's tokens and its PLH, from @seed: the PLH is a function of
 * the tokens, so a snapshot's STORED event proves its ids its own. */
static struct kvbm_plh kept_block(unsigned *seed, uint32_t tok[BS])
{
	struct kvbm_plh h;

	for (int i = 0; i < BS; i++)
		tok[i] = (uint32_t)rand_r(seed);
	ck_assert_int_eq(kvbm_plh_make(kvbm_block_hash(tok, BS, 1337), NULL, 0, &h), 0);
	return h;
}

/* A registrar: @rounds of 1-8 fresh root blocks registered with their
 * tokens and released into a small pool (allocations evict all the time,
 * so slots and their kept ids are reused). With @die_at armed it is
 * SIGKILLed there. Exits 0, or the step that failed. */
static int kept_registrar(const char *name, unsigned seed, int rounds, const char *die_at)
{
	struct kvbm_pool *q;

	if (kvbm_pool_open(name, NULL, 0, &q) != 0)
		return 90;
	if (die_at)
		kvbm_fp_arm(die_at);
	for (int r = 0; r < rounds; r++) {
		struct kvbm_block b[8];
		uint32_t tok[8 * BS];
		uint32_t n = 1 + (uint32_t)(rand_r(&seed) % 8);
		if (kvbm_allocate_blocks(q, n, b, NULL, NULL) != 0)
			return 91;
		for (uint32_t i = 0; i < n; i++)
			if (kvbm_stage_block(q, &b[i], kept_block(&seed, tok + i * BS), BS) != 0)
				return 92;
		if (kvbm_register_blocks_tokens(q, b, n, tok) != 0)
			return 93;
		if (kvbm_release_blocks(q, b, n) != 0)
			return 94;
	}
	kvbm_pool_close(q);
	return 0;
}

/* A snapshot's verdict on the kept ids it hands out. */
struct kept_check {
	long stored, torn, without;
};

static void kept_check_one(const struct kvbm_event *ev, void *arg)
{
	struct kept_check *c = arg;
	struct kvbm_plh h;

	if (ev->kind != KVBM_EVENT_STORED)
		return;
	c->stored++;
	if (ev->ntokens == 0) {
		c->without++; /* every registration here gave its ids */
		return;
	}
	if (ev->ntokens != BS ||
	    kvbm_plh_make(kvbm_block_hash(ev->tokens, BS, 1337), NULL, 0, &h) != 0 ||
	    !kvbm_plh_eq(h, ev->hash))
		c->torn++;
}

static struct kvbm_pool *kept_pool(const char *name)
{
	struct kvbm_config cfg = t_cfg();

	cfg.block_count = 64;
	cfg.event_ring = 64;
	cfg.flags |= KVBM_CFG_KEEP_TOKENS;
	return t_create(name, &cfg);
}

/*
 * The kept-tokens tag protocol under a real race: three registrar
 * processes reuse the 64 slots of a pool over and over, each registration
 * with its own ids, while this process takes snapshots as fast as it can.
 * Every STORED event of every snapshot must carry ids that hash to its
 * block's PLH: never another registration's ids, never half of them, and
 * never none (every registration here gave ids).
 */
START_TEST(test_kept_tokens_snapshots_race_registrars)
{
	T_NAME(name);
	struct kvbm_pool *p = kept_pool(name);
	struct kept_check c = {0};
	pid_t w[3];
	long snaps = 0;
	int running = 3, st[3] = {-1, -1, -1};
	uint64_t cur;

	for (int i = 0; i < 3; i++) {
		w[i] = fork();
		ck_assert_int_ge(w[i], 0);
		if (w[i] == 0)
			_exit(kept_registrar(name, 31u + (unsigned)i, 60000, NULL));
	}
	while (running) {
		ck_assert_int_ge(kvbm_events_snapshot(p, &cur, kept_check_one, &c), 0);
		snaps++;
		running = 0;
		for (int i = 0; i < 3; i++) {
			if (st[i] == -1 && waitpid(w[i], &st[i], WNOHANG) == 0)
				st[i] = -1; /* still registering */
			running |= st[i] == -1;
		}
	}
	for (int i = 0; i < 3; i++)
		ck_assert_msg(WIFEXITED(st[i]) && WEXITSTATUS(st[i]) == 0, "registrar %d: status %#x", i,
			      st[i]);
	ck_assert_int_ge(kvbm_events_snapshot(p, &cur, kept_check_one, &c), 0);
	ck_assert_msg(c.torn == 0 && c.without == 0,
		      "%ld snapshots, %ld stored: %ld with ids not theirs, %ld without", snaps,
		      c.stored, c.torn, c.without);
	ck_assert_int_gt(c.stored, 1000);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * A registrar SIGKILLed inside its registration, at each point of it that
 * touches the kept ids or publishes them (runs: the points), while
 * another process takes snapshots: the pool's invariants hold after the
 * reap, and no snapshot before, during or after shows ids that are not
 * their block's. Each point is hit a few hundred times before the kill,
 * so the kill lands with the ring and the slots well used.
 */
static const char *const kept_die_points[] = {
	"events.keep.ids:300", "block.register.published:300", "events.append.written:600",
	"block.register.batch:100",
};

START_TEST(test_kept_tokens_survive_a_killed_registrar)
{
	T_NAME(name);
	struct kvbm_pool *p = kept_pool(name);
	struct kept_check c = {0};
	uint64_t cur;

	pid_t calm = fork();
	ck_assert_int_ge(calm, 0);
	if (calm == 0)
		_exit(kept_registrar(name, 5, 1000000, NULL));
	pid_t victim = fork();
	ck_assert_int_ge(victim, 0);
	if (victim == 0)
		_exit(kept_registrar(name, 6, 1000000, kept_die_points[_i]));
	int st;
	while (waitpid(victim, &st, WNOHANG) == 0)
		ck_assert_int_ge(kvbm_events_snapshot(p, &cur, kept_check_one, &c), 0);
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "victim: status %#x", st);
	kill(calm, SIGKILL); /* it has done its part: the pool is busy */
	waitpid(calm, NULL, 0);
	ck_assert_int_ge(kvbm_reap(p), 0);
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_int_ge(kvbm_events_snapshot(p, &cur, kept_check_one, &c), 0);
	ck_assert_msg(c.torn == 0, "%ld stored, %ld with ids not theirs", c.stored, c.torn);
	/* the pool goes on: a registrar after the crashes runs clean */
	pid_t after = fork();
	ck_assert_int_ge(after, 0);
	if (after == 0)
		_exit(kept_registrar(name, 7, 500, NULL));
	ck_assert_int_eq(t_wait(after), 0);
	ck_assert_int_ge(kvbm_events_snapshot(p, &cur, kept_check_one, &c), 0);
	ck_assert_msg(c.torn == 0, "after: %ld with ids not theirs", c.torn);
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/*
 * The wire formats, read by an independent decoder (tests/
 * kv_events_decode.py, Debian's python3-msgpack, written from the
 * consumers' specification): kvbm-events replays a ring that lapped it (so
 * it starts from a snapshot) and then the stream of more registrations
 * (with token ids) and evictions; the decoded set of blocks must be the
 * registered set, and the router's tokens_hash that of the tokens under
 * the canonical salt 1337. Runs: vllm, kvbm, router.
 */
static const char *const wire_formats[] = {"vllm", "kvbm", "router"};

START_TEST(test_wire_formats_decode_to_the_registered_set)
{
	T_NAME(name);
	enum { N = 96, MORE = 48 };
	struct kvbm_pool *p = events_pool(name, 128, 64, KVBM_DUP_ALLOW);
	static struct kvbm_plh h[N + MORE];
	static struct kvbm_block b[N + MORE];
	static uint32_t tokens[(N + MORE) * BS];
	const char *fmt = wire_formats[_i];
	char file[512], cmd[8192], want[6000];
	size_t w = 0;

	for (uint32_t i = 0; i < (N + MORE) * BS; i++)
		tokens[i] = 7 + i;
	t_seq_hashes(7, N + MORE, BS, h);
	/* the first N lap the 64-entry ring before anyone reads it: the
	 * reader starts from a snapshot */
	t_register(p, h, N, b);
	t_release(p, b, N);
	snprintf(file, sizeof(file), "%s/%s.%s", getenv("KVBM_SHM_DIR"), name, fmt);
	snprintf(cmd, sizeof(cmd), "'%s/kvbm-events' --from-start --format %s %s > '%s'",
		 getenv("KVBM_BIN"), fmt, name, file);
	ck_assert_int_eq(system(cmd), 0);
	uint64_t head;
	ck_assert_int_eq(kvbm_events_head(p, &head), 0);
	ck_assert_int_eq(kvbm_allocate_blocks(p, MORE, b + N, NULL, NULL), 0);
	for (int i = N; i < N + MORE; i++)
		ck_assert_int_eq(kvbm_stage_block(p, &b[i], h[i], BS), 0);
	/* allocating MORE evicted 16 of the first N: 32 blocks were free */
	ck_assert_int_eq(kvbm_register_blocks_tokens(p, b + N, MORE, tokens + N * BS), 0);
	uint8_t present[N + MORE];
	ck_assert_int_eq(kvbm_check_presence(p, h, N + MORE, present), N + MORE - 16);
	/* then the stream of what followed, tokens and evictions */
	snprintf(cmd, sizeof(cmd), "'%s/kvbm-events' --from %llu --format %s %s >> '%s'",
		 getenv("KVBM_BIN"), (unsigned long long)head, fmt, name, file);
	ck_assert_int_eq(system(cmd), 0);
	w += (size_t)snprintf(want + w, sizeof(want) - w, "{\"block_size\": %d, \"blocks\": [", BS);
	for (int i = 0, k = 0; i < N + MORE; i++) {
		if (!present[i])
			continue;
		if (!strcmp(fmt, "kvbm"))
			w += (size_t)snprintf(want + w, sizeof(want) - w, "%s\"%016llx%016llx\"",
					      k++ ? "," : "", (unsigned long long)h[i].hi,
					      (unsigned long long)h[i].lo);
		else
			w += (size_t)snprintf(want + w, sizeof(want) - w, "%s%llu", k++ ? "," : "",
					      (unsigned long long)kvbm_plh_router_hash(h[i]));
	}
	w += (size_t)snprintf(want + w, sizeof(want) - w, "], \"tokens_hash\": {");
	for (int i = N; i < N + 3; i++)
		w += (size_t)snprintf(want + w, sizeof(want) - w, "%s\"%llu\": %llu",
				      i > N ? "," : "",
				      (unsigned long long)kvbm_plh_router_hash(h[i]),
				      (unsigned long long)kvbm_block_hash(tokens + i * BS, BS, 1337));
	w += (size_t)snprintf(want + w, sizeof(want) - w, "}}");
	ck_assert_uint_lt(w, sizeof(want));
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 tests/kv_events_decode.py %s '%s' '%s'", fmt,
		 file, want);
	ck_assert_msg(system(cmd) == 0, "the %s decoder disagrees", fmt);
	unlink(file);
	t_release(p, b + N, MORE);
	t_done(p, name);
}
END_TEST

Suite *make_events_suite(void)
{
	Suite *s = suite_create("events");
	TCase *tc = tcase_create("events");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_events_follow_the_registered_set);
	tcase_add_test(tc, test_events_dedup_silent_and_ring_optional);
	tcase_add_test(tc, test_events_lapped_reader_resyncs);
	tcase_add_loop_test(tc, test_events_reader_converges_across_processes_and_crashes, 0,
			    (int)(sizeof(die_points) / sizeof(die_points[0])));
	tcase_add_test(tc, test_events_damaged_ring_never_crashes_a_reader);
	tcase_add_loop_test(tc, test_wire_formats_decode_to_the_registered_set, 0, 3);
	tcase_add_test(tc, test_snapshot_carries_kept_tokens);
	tcase_add_test(tc, test_kept_tokens_snapshots_race_registrars);
	tcase_add_test(tc, test_events_index_full_registration_is_silent);
	tcase_add_test(tc, test_killed_stash_insert_is_recounted);
	tcase_add_loop_test(tc, test_kept_tokens_survive_a_killed_registrar, 0,
			    (int)(sizeof(kept_die_points) / sizeof(kept_die_points[0])));
	suite_add_tcase(s, tc);
	return s;
}
