/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_index.c - the lock-free registry index, in plain memory and shared
 * between a writer and reader processes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/index.h"

struct tiny {
	struct kvbm_shm_slot slots[8];
	/* 2, the minimum (every key collides), then the stash */
	struct kvbm_shm_bucket buckets[2 + KVBM_INDEX_STASH_BUCKETS];
	struct kvbm_shm_stash_head stash_head;
};

static struct kvbm_index view(struct tiny *t)
{
	struct kvbm_index ix;

	kvbm_index_view(&ix, t->buckets, 2, t->slots, 8);
	return ix;
}

static struct kvbm_plh key(uint64_t n)
{
	struct kvbm_plh k = {n * 0x9e3779b97f4a7c15ull, ~n};
	return k;
}

/* What register does to a slot before inserting it (mutex held). */
static void publish(struct kvbm_shm_slot *s, struct kvbm_plh k, uint64_t gen, int primary)
{
	__atomic_store_n(&s->key_hi, k.hi, __ATOMIC_RELAXED);
	__atomic_store_n(&s->key_lo, k.lo, __ATOMIC_RELAXED);
	__atomic_store_n(&s->state,
			 kvbm_slot_word(gen, 0, primary ? KVBM_SLOT_F_PRIMARY : 0,
					KVBM_SLOT_REGISTERED),
			 __ATOMIC_RELEASE);
}

/* What eviction does, in the order of rule 5: new generation, then the
 * entry, then the key. */
static void retire(const struct kvbm_index *ix, struct kvbm_shm_slot *s, uint32_t idx)
{
	uint64_t w = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
	struct kvbm_plh k = {s->key_hi, s->key_lo};

	__atomic_store_n(&s->state, kvbm_slot_word(kvbm_slot_gen(w), 0, 0, KVBM_SLOT_EVICTING),
			 __ATOMIC_SEQ_CST);
	__atomic_store_n(&s->state, kvbm_slot_word(kvbm_slot_gen(w) + 1, 0, 0, KVBM_SLOT_RESET),
			 __ATOMIC_RELEASE);
	kvbm_index_delete(ix, k, idx);
	__atomic_store_n(&s->key_hi, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&s->key_lo, 0, __ATOMIC_RELAXED);
}

START_TEST(test_insert_lookup_delete)
{
	struct tiny *t = calloc(1, sizeof(*t));
	struct kvbm_index ix = view(t);
	uint32_t s;
	uint64_t g;

	ck_assert_int_eq(kvbm_index_lookup(&ix, key(1), &s, &g), 0);
	publish(&t->slots[3], key(1), 7, 1);
	ck_assert_int_eq(kvbm_index_insert(&ix, key(1), 3, 7), 0);
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(1), &s, &g), 1);
	ck_assert_uint_eq(s, 3);
	ck_assert_uint_eq(g, 7);
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(2), &s, &g), 0);
	ck_assert_int_eq(kvbm_index_delete(&ix, key(1), 3), 0);
	ck_assert_int_eq(kvbm_index_delete(&ix, key(1), 3), -ENOENT);
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(1), &s, &g), 0);
	free(t);
}
END_TEST

START_TEST(test_lookup_validates_against_the_slot)
{
	struct tiny *t = calloc(1, sizeof(*t));
	struct kvbm_index ix = view(t);
	uint32_t s;
	uint64_t g;

	publish(&t->slots[0], key(5), 1, 1);
	ck_assert_int_eq(kvbm_index_insert(&ix, key(5), 0, 1), 0);
	/* recycled slot (new generation) behind a stale entry: miss */
	t->slots[0].state = kvbm_slot_word(2, 0, KVBM_SLOT_F_PRIMARY, KVBM_SLOT_REGISTERED);
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(5), &s, &g), 0);
	/* a duplicate (not PRIMARY) is never the registry's answer */
	t->slots[0].state = kvbm_slot_word(1, 0, 0, KVBM_SLOT_REGISTERED);
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(5), &s, &g), 0);
	/* mid-eviction or staged: miss */
	t->slots[0].state = kvbm_slot_word(1, 0, KVBM_SLOT_F_PRIMARY, KVBM_SLOT_EVICTING);
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(5), &s, &g), 0);
	t->slots[0].state = kvbm_slot_word(1, 0, KVBM_SLOT_F_PRIMARY, KVBM_SLOT_STAGED);
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(5), &s, &g), 0);
	/* the slot now holds another key: the full key decides */
	publish(&t->slots[0], key(6), 1, 1);
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(5), &s, &g), 0);
	/* a corrupt entry pointing outside the slot array is ignored */
	for (int i = 0; i < KVBM_BUCKET_ENTRIES; i++)
		if (t->buckets[0].slot[i] || t->buckets[1].slot[i])
			t->buckets[0].slot[i] = t->buckets[1].slot[i] = 9999;
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(6), &s, &g), 0);
	free(t);
}
END_TEST

START_TEST(test_full_buckets_stash_then_refuse_and_never_false_hit)
{
	struct tiny *t = calloc(1, sizeof(*t));
	struct kvbm_index ix = view(t);
	uint32_t s;
	uint64_t g;

	/* 2 buckets x 8 entries: 16 keys fill both (8 slots, so entries name
	 * slots at generations they do not have: stale, never hits) */
	for (uint32_t n = 0; n < 16; n++)
		ck_assert_int_eq(kvbm_index_insert(&ix, key(100 + n), n % 8, n), 0);
	/* a key whose two buckets are full goes to the stash and is found
	 * (before the stash, this insert was refused: a registered block
	 * that nobody could match) */
	publish(&t->slots[7], key(300), 1000, 1);
	ck_assert_int_eq(kvbm_index_insert(&ix, key(300), 7, 1000), 0);
	ck_assert_uint_eq(t->stash_head.used, 1);
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(300), &s, &g), 1);
	ck_assert_uint_eq(s, 7);
	ck_assert_uint_eq(g, 1000);
	ck_assert_int_eq(kvbm_index_entry_check(&ix, 2, 0), 0); /* the stash's first */
	ck_assert_int_eq(kvbm_index_delete(&ix, key(300), 7), 0);
	ck_assert_uint_eq(t->stash_head.used, 0);
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(300), &s, &g), 0);
	/* a count of 0 over stash entries (a damaged segment) hides them:
	 * a miss, never a wrong hit; the checker and the rebuild recount */
	ck_assert_int_eq(kvbm_index_insert(&ix, key(300), 7, 1000), 0);
	t->stash_head.used = 0;
	ck_assert_int_eq(kvbm_index_lookup(&ix, key(300), &s, &g), 0);
	ck_assert_uint_eq(kvbm_index_stash_count(&ix), 1);
	t->stash_head.used = 1;
	ck_assert_int_eq(kvbm_index_delete(&ix, key(300), 7), 0);
	/* the stash's 64 entries, then a refusal */
	for (uint32_t n = 0; n < 8 * KVBM_INDEX_STASH_BUCKETS; n++)
		ck_assert_int_eq(kvbm_index_insert(&ix, key(400 + n), n % 8, n + 16), 0);
	ck_assert_uint_eq(t->stash_head.used, 8 * KVBM_INDEX_STASH_BUCKETS);
	ck_assert_int_eq(kvbm_index_insert(&ix, key(200), 0, 0), -ENOSPC);
	/* every entry's tag meets many other keys: with 16-bit tags about
	 * 120 of these lookups reach the slot check; none may hit */
	for (uint32_t n = 0; n < 100000; n++)
		ck_assert_int_eq(kvbm_index_lookup(&ix, key(1000 + n), &s, &g), 0);
	free(t);
}
END_TEST

/*
 * One writer process registers and evicts keys on slots 1..7 as fast as it
 * can, in the protocol's order; slot 0 holds one key throughout. Readers in
 * two other processes look keys up: the permanent key must always be found
 * (no false miss), and any hit must be on a slot that, while still at the
 * generation returned, holds the key looked up (no false hit).
 */
START_TEST(test_concurrent_churn_no_false_hits_or_misses)
{
	enum { READERS = 2, WRITES = 200000, LOOKUPS = 400000, KEYS = 32 };
	struct tiny *t = mmap(NULL, sizeof(*t), PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct kvbm_index ix = view(t);
	struct t_gate start;
	pid_t pids[READERS + 1];

	ck_assert_ptr_ne(t, MAP_FAILED);
	publish(&t->slots[0], key(0), 1, 1);
	ck_assert_int_eq(kvbm_index_insert(&ix, key(0), 0, 1), 0);
	t_gate_init(&start);
	pids[0] = fork();
	if (pids[0] == 0) {
		unsigned seed = 1;
		uint64_t gens[8] = {0};
		t_gate_wait(&start);
		for (int n = 0; n < WRITES; n++) {
			uint32_t s = 1 + (uint32_t)rand_r(&seed) % 7;
			uint64_t w = t->slots[s].state;
			if (kvbm_slot_state(w) == KVBM_SLOT_REGISTERED) {
				retire(&ix, &t->slots[s], s);
				continue;
			}
			/* key k lives on slot 1 + k % 7 only: never two at once */
			uint64_t k = s + 7 * ((uint64_t)rand_r(&seed) % (KEYS / 7));
			gens[s] = kvbm_slot_gen(w);
			publish(&t->slots[s], key(1 + k), gens[s], 1);
			if (kvbm_index_insert(&ix, key(1 + k), s, gens[s]) < 0)
				_exit(2);
		}
		_exit(0);
	}
	for (int r = 1; r <= READERS; r++) {
		pids[r] = fork();
		if (pids[r] == 0) {
			unsigned seed = (unsigned)r;
			uint32_t s;
			uint64_t g;
			long hits = 0;
			t_gate_wait(&start);
			/* until a first hit: on a busy machine a reader may run
			 * all of its lookups before the writer publishes a key
			 * (after it, keys stay registered, so this ends) */
			for (int n = 0; n < LOOKUPS || (!hits && n < 100 * LOOKUPS); n++) {
				if (n % 4 == 0) {
					if (!kvbm_index_lookup(&ix, key(0), &s, &g) || s != 0)
						_exit(3); /* false miss */
					continue;
				}
				uint64_t q = 1 + (uint64_t)rand_r(&seed) % KEYS;
				if (!kvbm_index_lookup(&ix, key(q), &s, &g))
					continue;
				uint64_t hi = __atomic_load_n(&t->slots[s].key_hi, __ATOMIC_ACQUIRE);
				uint64_t lo = __atomic_load_n(&t->slots[s].key_lo, __ATOMIC_ACQUIRE);
				uint64_t w = __atomic_load_n(&t->slots[s].state, __ATOMIC_RELAXED);
				if (kvbm_slot_gen(w) == g &&
				    kvbm_slot_state(w) == KVBM_SLOT_REGISTERED &&
				    (hi != key(q).hi || lo != key(q).lo))
					_exit(4); /* false hit */
				hits++;
			}
			_exit(hits > 0 ? 0 : 5);
		}
	}
	t_gate_open(&start);
	for (int i = 0; i <= READERS; i++)
		ck_assert_int_eq(t_wait(pids[i]), 0);
	munmap(t, sizeof(*t));
}
END_TEST

Suite *make_index_suite(void)
{
	Suite *s = suite_create("index");
	TCase *tc = tcase_create("registry_index");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_insert_lookup_delete);
	tcase_add_test(tc, test_lookup_validates_against_the_slot);
	tcase_add_test(tc, test_full_buckets_stash_then_refuse_and_never_false_hit);
	tcase_add_test(tc, test_concurrent_churn_no_false_hits_or_misses);
	suite_add_tcase(s, tc);
	return s;
}
