/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_invariants.c - the invariant checker catches each kind of damage:
 * a pool with every kind of block is corrupted in one way, the checker
 * (library call and kvbm-shm-dump --check) must name it, and the segment is
 * then restored byte for byte.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "../lib/pool.h"

#define BS 4

struct fixture {
	struct kvbm_pool *p;
	struct kvbm_block held[2], dup, mut;
	struct kvbm_plh h[6];
	uint8_t *saved;
};

/* 4 inactive primaries, 2 held ones, a duplicate of h[4], a MUTABLE block. */
static void setup(struct fixture *f, const char *name)
{
	struct kvbm_block b[4];

	f->p = t_pool(name, 16);
	t_seq_hashes(1, 6, BS, f->h);
	t_register(f->p, f->h, 4, b);
	t_release(f->p, b, 4);
	t_register(f->p, f->h + 4, 2, f->held);
	t_register(f->p, f->h + 4, 1, &f->dup);
	ck_assert_int_eq(kvbm_allocate_blocks(f->p, 1, &f->mut, NULL, NULL), 0);
	ck_assert_int_eq(t_check(f->p), 0);
	f->saved = malloc(f->p->seg.size);
	memcpy(f->saved, f->p->seg.base, f->p->seg.size);
}

static void teardown(struct fixture *f, const char *name)
{
	memcpy(f->p->seg.base, f->saved, f->p->seg.size);
	free(f->saved);
	ck_assert_int_eq(t_check(f->p), 0);
	t_release(f->p, f->held, 2);
	t_release(f->p, &f->dup, 1);
	t_release(f->p, &f->mut, 1);
	t_done(f->p, name);
}

static struct kvbm_shm_slot *slot_of(struct fixture *f, uint32_t id)
{
	return &f->p->seg.slots[id];
}

static uint32_t inactive_slot(struct fixture *f)
{
	for (uint32_t s = 0; s < f->p->nslots; s++)
		if (slot_of(f, s)->holders & KVBM_HOLD_INACTIVE)
			return s;
	ck_abort_msg("no inactive slot");
	return 0;
}

/* The last process-table entry: free, and not the one an attaching
 * kvbm-shm-dump --lock claims. */
static uint32_t free_proc(struct fixture *f)
{
	return f->p->seg.hdr->config.max_procs - 1;
}

struct damage {
	const char *what;  /* expected in a report line */
	void (*apply)(struct fixture *f);
	int in_flight;     /* only a violation when nothing is in flight */
};

static void bad_state(struct fixture *f) { slot_of(f, f->held[0].id)->state |= 0xf; }
static void free_count(struct fixture *f) { f->p->seg.ctl->free_count++; }
static void free_link(struct fixture *f) { f->p->seg.ctl->free_head = f->held[0].id + 1; }
static void lru_out(struct fixture *f) { slot_of(f, inactive_slot(f))->list = KVBM_LIST_NONE; }
static void lru_prev(struct fixture *f) { slot_of(f, f->p->seg.ctl->lists[0].tail - 1)->prev = 0; }
static void index_lost(struct fixture *f)
{
	ck_assert_int_eq(kvbm_index_delete(&f->p->ix, f->h[5], f->held[1].id), 0);
}
static void index_stale(struct fixture *f)
{
	/* the entry of h[5] now names an inactive block */
	struct kvbm_shm_bucket *b = f->p->seg.buckets;
	for (uint32_t i = 0; i <= f->p->ix.mask; i++)
		for (int e = 0; e < KVBM_BUCKET_ENTRIES; e++)
			if (b[i].slot[e] == f->held[1].id + 1)
				b[i].slot[e] = inactive_slot(f) + 1;
}
static void stash_count(struct fixture *f) { (*f->p->ix.stash_used)++; }
static void two_primaries(struct fixture *f)
{
	struct kvbm_shm_slot *d = slot_of(f, f->dup.id);
	d->state |= (uint64_t)KVBM_SLOT_F_PRIMARY << 4;
}
static void dups_count(struct fixture *f) { slot_of(f, f->held[0].id)->dups++; }
static void bit_of_free_proc(struct fixture *f)
{
	slot_of(f, f->held[0].id)->holders |= 1ull << free_proc(f);
}
static void entry_of_free_proc(struct fixture *f)
{
	kvbm_hold_t *ht = (kvbm_hold_t *)(f->p->seg.holders +
					  free_proc(f) * kvbm_holder_stride(&f->p->seg.hdr->config));
	ht[3] = 1;
}
static void inactive_count(struct fixture *f) { f->p->seg.ctl->inactive++; }
static void orphan_mutable(struct fixture *f)
{
	struct kvbm_shm_slot *sl = slot_of(f, f->mut.id);
	sl->state = kvbm_slot_word(kvbm_slot_gen(sl->state), free_proc(f), 0, KVBM_SLOT_MUTABLE);
}
static void left_evicting(struct fixture *f)
{
	struct kvbm_shm_slot *sl = slot_of(f, inactive_slot(f));
	sl->state = (sl->state & ~0xfull) | KVBM_SLOT_EVICTING;
}
static void unsettled(struct fixture *f)
{
	slot_of(f, inactive_slot(f))->holders &= ~KVBM_HOLD_INACTIVE;
}
static void tentative(struct fixture *f) { f->p->ht[f->held[0].id] |= KVBM_HOLD_TENT; }

static const struct damage damages[] = {
	{"invalid state", bad_state, 0},
	{"free count", free_count, 0},
	{"free list", free_link, 0},
	{"eviction order", lru_out, 0},
	{"prev", lru_prev, 0},
	{"not found in the registry index", index_lost, 0},
	{"registry index: bucket", index_stale, 0},
	{"registry index", two_primaries, 0},
	{"the stash counts 1 entries and holds 0", stash_count, 0},
	{"duplicates,", dups_count, 0},
	{"holder bit of free process entry", bit_of_free_proc, 0},
	{"process entry", entry_of_free_proc, 0},
	{"inactive count", inactive_count, 1},
	{"owned by free process entry", orphan_mutable, 0},
	{"left EVICTING", left_evicting, 0},
	{"neither inactive nor freed", unsettled, 1},
	{"tentative", tentative, 1},
};

static char reports[4096];
static void collect(const char *msg, void *arg)
{
	(void)arg;
	strncat(reports, msg, sizeof(reports) - strlen(reports) - 2);
	strcat(reports, "\n");
}

START_TEST(test_checker_names_each_damage)
{
	T_NAME(name);
	struct fixture f;
	const struct damage *d = &damages[_i];

	setup(&f, name);
	d->apply(&f);
	reports[0] = 0;
	long n = kvbm_pool_check(f.p, KVBM_CHECK_LOCK | KVBM_CHECK_QUIESCENT, collect, NULL);
	ck_assert_msg(n > 0, "damage '%s' not detected", d->what);
	ck_assert_msg(strstr(reports, d->what), "damage '%s' reported as:\n%s", d->what, reports);
	/* the tool sees it too, under the mutex (we are attached, so what is
	 * legal in flight is not its to judge) */
	char out[8192];
	int rc = t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", "--lock", name,
			    (char *)NULL);
	ck_assert_int_eq(rc, d->in_flight ? 0 : 1);
	ck_assert_msg(d->in_flight || strstr(out, d->what), "tool output:\n%s", out);
	teardown(&f, name);
}
END_TEST

/* A clean pool passes the tool in both modes, and it says what it did. */
START_TEST(test_tool_check_clean_pool)
{
	T_NAME(name);
	struct fixture f;
	char out[8192];

	setup(&f, name);
	int rc = t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", name, (char *)NULL);
	ck_assert_msg(rc == 0, "%s", out);
	ck_assert(strstr(out, "check: all invariants hold"));
	ck_assert(strstr(out, "live processes attached"));
	rc = t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", "--lock", name, (char *)NULL);
	ck_assert_msg(rc == 0, "%s", out);
	ck_assert(strstr(out, "under the pool mutex"));
	ck_assert(strstr(out, "free 8 + inactive 4 + in use 4"));
	teardown(&f, name);
}
END_TEST

Suite *make_invariants_suite(void)
{
	Suite *s = suite_create("invariants");
	TCase *tc = tcase_create("checker");

	tcase_add_loop_test(tc, test_checker_names_each_damage, 0,
			    (int)(sizeof(damages) / sizeof(damages[0])));
	tcase_add_test(tc, test_tool_check_clean_pool);
	suite_add_tcase(s, tc);
	return s;
}
