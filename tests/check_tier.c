/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_tier.c - tiers (kvbm_config.tier, kvbm_tier.h): the tier of a pool,
 * one process on several tiers, presence across tiers, onboarding plans
 * (complete, abort, errors), a plan made while another process evicts in
 * both pools, and a planner SIGKILLed at each point of a plan.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "helpers.h"
#include "kvbm_tier.h"
#include "../shm/failpoint.h"

#define BS 4

static struct kvbm_pool *tier_pool(const char *name, const char *tier, uint32_t blocks)
{
	struct kvbm_config cfg = t_cfg();

	cfg.block_count = blocks;
	snprintf(cfg.tier, sizeof(cfg.tier), "%s", tier);
	return t_create(name, &cfg);
}

static struct kvbm_pool *tier_attach(const char *name)
{
	struct kvbm_pool *p = NULL;

	return kvbm_pool_open(name, NULL, 0, &p) == 0 ? p : NULL;
}

/* Tokens of the test request: block i is [1000 + 4i, ..., 1003 + 4i]. */
static void req_tokens(uint32_t *t, size_t nblocks)
{
	for (size_t i = 0; i < nblocks * BS; i++)
		t[i] = 1000 + (uint32_t)i;
}

static void req_hashes(struct kvbm_plh *h, size_t nblocks)
{
	t_seq_hashes(1000, nblocks, BS, h);
}

/* Registers blocks [from, to) of the request in @p and releases them
 * (cached, inactive). */
static void cache(struct kvbm_pool *p, const struct kvbm_plh *h, size_t from, size_t to)
{
	struct kvbm_block b[64];

	t_register(p, h + from, to - from, b);
	t_release(p, b, to - from);
}

START_TEST(test_tier_names_and_parse)
{
	static const char *const g[] = {"G1", "G2", "G3", "G4"};
	static const char *const st[] = {"device", "host_pinned", "disk", "external"};
	static const char *const bad[] = {"", "g1", "G0", "G5", "G9", "gpu", "host", "G1 "};
	struct kvbm_config cfg;
	const char *why;

	for (int t = 1; t <= 4; t++) {
		ck_assert_int_eq(kvbm_tier_parse(g[t - 1]), t);
		ck_assert_int_eq(kvbm_tier_parse(st[t - 1]), t);
		ck_assert_str_eq(kvbm_tier_name((uint32_t)t), g[t - 1]);
		ck_assert_str_eq(kvbm_tier_storage((uint32_t)t), st[t - 1]);
	}
	ck_assert_ptr_null(kvbm_tier_name(0));
	ck_assert_ptr_null(kvbm_tier_name(5));
	ck_assert_ptr_null(kvbm_tier_storage(KVBM_TIER_COUNT));
	ck_assert_int_eq(kvbm_tier_parse(NULL), -EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(kvbm_tier_parse(bad[i]), -EINVAL);
		kvbm_config_init(&cfg);
		snprintf(cfg.tier, sizeof(cfg.tier), "%s", bad[i]);
		ck_assert_int_eq(kvbm_config_check(&cfg, &why), -EINVAL);
		ck_assert_ptr_nonnull(strstr(why, "tier must be G1, G2, G3, G4"));
	}
}
END_TEST

/* The tier is set at creation, spelled either way, stored as its G name;
 * an attacher naming another tier gets KVBM_EMISMATCH, and the same tier
 * in its other spelling agrees. */
START_TEST(test_tier_set_at_creation)
{
	T_NAME(name);
	struct kvbm_pool *p = tier_pool(name, "host_pinned", 32), *q = NULL;
	struct kvbm_pool_info info;
	struct kvbm_config cfg = t_cfg();
	struct kvbm_config_diff d;

	ck_assert_int_eq(kvbm_pool_tier(p), KVBM_TIER_G2);
	ck_assert_int_eq(kvbm_pool_info(p, &info), 0);
	ck_assert_str_eq(info.config.tier, "G2");
	cfg.block_count = 32;
	snprintf(cfg.tier, sizeof(cfg.tier), "G2");
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, 0, &q), 0);
	ck_assert_int_eq(kvbm_pool_tier(q), KVBM_TIER_G2);
	ck_assert_int_eq(kvbm_pool_close(q), 0);
	snprintf(cfg.tier, sizeof(cfg.tier), "device");
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, 0, &q), KVBM_EMISMATCH);
	ck_assert_int_eq(kvbm_config_diff(name, &cfg, &d), 1);
	ck_assert_str_eq(d.field, "tier");
	ck_assert_str_eq(d.pool, "G2");
	ck_assert_str_eq(d.config, "G1");
	ck_assert_int_eq(kvbm_pool_tier(NULL), -EINVAL);
	t_done(p, name);
}
END_TEST

/* The tools take a tier by either name and show both; kvbmd sees
 * "host_pinned" and "G2" as one tier (one metrics label each). */
START_TEST(test_tier_in_the_tools)
{
	T_NAME(name);
	T_NAME(other);
	char out[8192], a[160], b[160];

	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-pool", "create", name, "--blocks",
					"16", "--tier", "host_pinned", NULL),
			 0);
	ck_assert_msg(strstr(out, "tier G2 (host_pinned)"), "%s", out);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "info", name, NULL), 0);
	ck_assert_msg(strstr(out, "tier      G2 (host_pinned)\n"), "%s", out);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", name, NULL), 0);
	ck_assert_msg(strstr(out, "tier=G2 (host_pinned)"), "%s", out);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--json", name, NULL), 0);
	ck_assert_msg(strstr(out, "\"tier\":\"G2\",\"storage_tier\":\"host_pinned\""), "%s", out);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "info", "--json", name, NULL), 0);
	ck_assert_msg(strstr(out, "\"tier\":\"G2\",\"storage_tier\":\"host_pinned\""), "%s", out);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-pool", "create", other, "--tier",
					"gpu", NULL),
			 2);
	ck_assert_msg(strstr(out, "--tier 'gpu': not one of G1, G2, G3, G4"), "%s", out);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);

	snprintf(a, sizeof(a), "%s,tier=G2,blocks=16", name);
	snprintf(b, sizeof(b), "%s,tier=host_pinned,blocks=16", other);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbmd", "--pool", a, "--pool", b,
					"--listen", "127.0.0.1:0", NULL),
			 2);
	ck_assert_msg(strstr(out, "have the same tier G2"), "%s", out);
	snprintf(b, sizeof(b), "%s,tier=gpu,blocks=16", other);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbmd", "--pool", b, "--listen",
					"127.0.0.1:0", NULL),
			 2);
	ck_assert_msg(strstr(out, "bad value 'gpu' for tier"), "%s", out);
}
END_TEST

/* One process attaches G1, G2 and G3 pools at once and asks which tiers
 * hold each hash of a batch in one call. */
START_TEST(test_tiers_presence_one_process_three_tiers)
{
	T_NAME(n1);
	T_NAME(n2);
	T_NAME(n3);
	struct kvbm_pool *p[3] = {tier_pool(n1, "G1", 64), tier_pool(n2, "G2", 64),
				  tier_pool(n3, "G3", 64)};
	struct kvbm_plh h[10];
	uint8_t mask[10];
	static const uint8_t want[10] = {7, 7, 6, 6, 4, 4, 4, 0, 0, 0};

	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(kvbm_pool_tier(p[i]), i + 1);
	req_hashes(h, 10);
	cache(p[0], h, 0, 2); /* G1: 0-1 */
	cache(p[1], h, 0, 4); /* G2: 0-3 */
	cache(p[2], h, 0, 7); /* G3: 0-6 */
	memset(mask, 0xee, sizeof(mask));
	ck_assert_int_eq(kvbm_tiers_presence(p, 3, h, 10, mask), 7);
	for (int i = 0; i < 10; i++)
		ck_assert_msg(mask[i] == want[i], "hash %d: mask %u, want %u", i, mask[i], want[i]);
	/* a non-prefix: only the hash itself counts */
	ck_assert_int_eq(kvbm_tiers_presence(p + 1, 2, h + 5, 1, mask), 1);
	ck_assert_uint_eq(mask[0], 2); /* p[2] is bit 1 of this call */
	ck_assert_int_eq(kvbm_tiers_presence(p, 3, h, 0, NULL), 0);

	/* more than one chunk of the internal buffer */
	enum { N = 600 };
	struct kvbm_plh *many = malloc(N * sizeof(*many));
	uint8_t *m = malloc(N);
	for (int i = 0; i < N; i++)
		many[i] = h[i % 10];
	ck_assert_int_eq(kvbm_tiers_presence(p, 3, many, N, m), N / 10 * 7);
	for (int i = 0; i < N; i++)
		ck_assert_uint_eq(m[i], want[i % 10]);
	free(many);
	free(m);

	/* bad input: nothing written */
	struct kvbm_pool *nine[9] = {p[0], p[1], p[2], p[0], p[1], p[2], p[0], p[1], p[2]};
	struct kvbm_pool *holed[2] = {p[0], NULL};
	ck_assert_int_eq(kvbm_tiers_presence(nine, 9, h, 10, mask), -EINVAL);
	ck_assert_int_eq(kvbm_tiers_presence(p, 0, h, 10, mask), -EINVAL);
	ck_assert_int_eq(kvbm_tiers_presence(NULL, 1, h, 10, mask), -EINVAL);
	ck_assert_int_eq(kvbm_tiers_presence(holed, 2, h, 10, mask), -EINVAL);
	ck_assert_int_eq(kvbm_tiers_presence(p, 3, NULL, 10, mask), -EINVAL);
	ck_assert_int_eq(kvbm_tiers_presence(p, 3, h, 10, NULL), -EINVAL);
	/* up to 8 pools (the same one twice is allowed: each is a bit) */
	ck_assert_int_eq(kvbm_tiers_presence(nine, 8, h, 10, mask), 7);
	ck_assert_uint_eq(mask[0], 0xff);
	t_done(p[0], n1);
	t_done(p[1], n2);
	t_done(p[2], n3);
}
END_TEST

/* Every block of the request is held by the plan in one pool or the other:
 * the G1 prefix and the G2 sources are REGISTERED under their hashes, the
 * G1 destinations MUTABLE. */
static void assert_plan_held(struct kvbm_pool *g1, struct kvbm_pool *g2, struct kvbm_onboard *o,
			     const struct kvbm_plh *h)
{
	struct kvbm_onboard_pair pr;
	struct kvbm_block_info bi;

	for (size_t i = 0; i < kvbm_onboard_count(o); i++) {
		ck_assert_int_eq(kvbm_onboard_get(o, i, &pr), 1);
		ck_assert_uint_eq(pr.position, kvbm_onboard_matched(o) + i);
		ck_assert(kvbm_plh_eq(pr.hash, h[pr.position]));
		ck_assert_int_eq(kvbm_block_info(g2, &pr.src, &bi), 0);
		ck_assert_uint_eq(bi.state, KVBM_BLOCK_REGISTERED);
		ck_assert(kvbm_plh_eq(bi.hash, h[pr.position]));
		ck_assert_uint_ge(bi.holds, 1);
		ck_assert_int_eq(kvbm_block_info(g1, &pr.dst, &bi), 0);
		ck_assert_uint_eq(bi.state, KVBM_BLOCK_MUTABLE);
	}
}

START_TEST(test_onboard_plan_and_complete)
{
	T_NAME(n1);
	T_NAME(n2);
	struct kvbm_pool *g1 = tier_pool(n1, "G1", 32), *g2 = tier_pool(n2, "G2", 64);
	struct kvbm_plh h[8];
	uint32_t tok[8 * BS];
	struct kvbm_onboard *o = NULL;
	struct kvbm_block got[8], fill[64];
	struct kvbm_block_info bi;

	req_hashes(h, 8);
	req_tokens(tok, 8);
	cache(g1, h, 0, 2); /* G1 has 0-1 */
	cache(g2, h, 0, 6); /* G2 has 0-5 */
	ck_assert_int_eq(kvbm_onboard_plan(g1, g2, h, 8, &o), 0);
	ck_assert_uint_eq(kvbm_onboard_matched(o), 2);
	ck_assert_uint_eq(kvbm_onboard_count(o), 4);
	ck_assert_int_eq(kvbm_onboard_get(o, 4, NULL), 0);
	assert_plan_held(g1, g2, o, h);
	/* neither side can be evicted: take everything else each pool has */
	long a1 = kvbm_available_blocks(g1), a2 = kvbm_available_blocks(g2);
	ck_assert_int_eq(a1, 32 - 2 - 4);
	ck_assert_int_eq(a2, 64 - 4);
	ck_assert_int_eq(kvbm_allocate_blocks(g1, (uint32_t)a1, fill, NULL, NULL), 0);
	t_release(g1, fill, (size_t)a1);
	ck_assert_int_eq(kvbm_allocate_blocks(g2, (uint32_t)a2, fill, NULL, NULL), 0);
	t_release(g2, fill, (size_t)a2);
	assert_plan_held(g1, g2, o, h);
	ck_assert_int_eq(kvbm_onboard_complete(o, tok, got, 1), -ERANGE); /* changes nothing */
	assert_plan_held(g1, g2, o, h);

	ck_assert_int_eq(kvbm_onboard_complete(o, tok, got, 8), 6);
	for (int i = 0; i < 6; i++) {
		ck_assert_int_eq(kvbm_block_info(g1, &got[i], &bi), 0);
		ck_assert_uint_eq(bi.state, KVBM_BLOCK_REGISTERED);
		ck_assert(kvbm_plh_eq(bi.hash, h[i]));
		ck_assert_uint_eq(bi.holds, 1);
	}
	/* the sources are released: G2 is all available again */
	ck_assert_int_eq(kvbm_available_blocks(g2), 64);
	ck_assert_int_eq(kvbm_onboard_complete(o, tok, got, 8), KVBM_ESTATE);
	ck_assert_int_eq(kvbm_onboard_get(o, 0, NULL), 0);
	ck_assert_int_eq(kvbm_onboard_abort(o), 0); /* nothing left to give */
	kvbm_onboard_free(o);
	t_release(g1, got, 6);
	ck_assert_int_eq(kvbm_available_blocks(g1), 32);
	uint8_t pres[8];
	ck_assert_int_eq(kvbm_check_presence(g1, h, 8, pres), 6);

	/* now G1 has 0-5: a second plan has nothing to copy; @blks NULL
	 * releases the matched holds at once */
	ck_assert_int_eq(kvbm_onboard_plan(g1, g2, h, 8, &o), 0);
	ck_assert_uint_eq(kvbm_onboard_matched(o), 6);
	ck_assert_uint_eq(kvbm_onboard_count(o), 0);
	ck_assert_int_eq(kvbm_onboard_complete(o, NULL, NULL, 0), 6);
	kvbm_onboard_free(o);
	ck_assert_int_eq(kvbm_available_blocks(g1), 32);
	t_done(g1, n1);
	t_done(g2, n2);
}
END_TEST

/* Under KVBM_DUP_REJECT, a hash registered in G1 by someone else while the
 * plan copies comes back as that primary, and the copy is freed. */
START_TEST(test_onboard_complete_under_dup_reject)
{
	T_NAME(n1);
	T_NAME(n2);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[4];
	struct kvbm_onboard *o = NULL;
	struct kvbm_block got[4], other;
	struct kvbm_onboard_pair pr;

	cfg.block_count = 16;
	cfg.dup_policy = KVBM_DUP_REJECT;
	struct kvbm_pool *g1 = t_create(n1, &cfg), *g2 = tier_pool(n2, "G2", 16);
	req_hashes(h, 4);
	cache(g2, h, 0, 4);
	ck_assert_int_eq(kvbm_onboard_plan(g1, g2, h, 4, &o), 0);
	ck_assert_uint_eq(kvbm_onboard_count(o), 4);
	t_register(g1, h + 2, 1, &other); /* another engine computed block 2 */
	ck_assert_int_eq(kvbm_onboard_get(o, 2, &pr), 1);
	ck_assert_uint_ne(pr.dst.id, other.id);
	ck_assert_int_eq(kvbm_onboard_complete(o, NULL, got, 4), 4);
	ck_assert_uint_eq(got[2].id, other.id);
	struct kvbm_block_info bi;
	ck_assert_int_eq(kvbm_block_info(g1, &pr.dst, &bi), KVBM_ESTALE); /* freed */
	kvbm_onboard_free(o);
	t_release(g1, got, 4);
	t_release(g1, &other, 1);
	ck_assert_int_eq(kvbm_available_blocks(g1), 16);
	ck_assert_int_eq(kvbm_registered_count(g1), 4);
	t_done(g1, n1);
	t_done(g2, n2);
}
END_TEST

START_TEST(test_onboard_abort_and_free_give_everything_back)
{
	T_NAME(n1);
	T_NAME(n2);
	struct kvbm_pool *g1 = tier_pool(n1, "G1", 32), *g2 = tier_pool(n2, "G2", 32);
	struct kvbm_plh h[6];
	struct kvbm_onboard *o = NULL;
	uint8_t pres[6];

	req_hashes(h, 6);
	cache(g1, h, 0, 1);
	cache(g2, h, 0, 5);
	ck_assert_int_eq(kvbm_onboard_plan(g1, g2, h, 6, &o), 0);
	ck_assert_uint_eq(kvbm_onboard_matched(o), 1);
	ck_assert_uint_eq(kvbm_onboard_count(o), 4);
	ck_assert_int_eq(kvbm_available_blocks(g1), 32 - 1 - 4);
	ck_assert_int_eq(kvbm_onboard_abort(o), 0);
	ck_assert_int_eq(kvbm_available_blocks(g1), 32);
	ck_assert_int_eq(kvbm_available_blocks(g2), 32);
	ck_assert_int_eq(kvbm_onboard_complete(o, NULL, NULL, 0), KVBM_ESTATE);
	ck_assert_int_eq(kvbm_onboard_abort(o), 0);
	kvbm_onboard_free(o);
	ck_assert_int_eq(kvbm_check_presence(g1, h, 6, pres), 1); /* nothing registered */

	/* free of an open plan aborts it */
	ck_assert_int_eq(kvbm_onboard_plan(g1, g2, h, 6, &o), 0);
	kvbm_onboard_free(o);
	ck_assert_int_eq(kvbm_available_blocks(g1), 32);
	ck_assert_int_eq(kvbm_available_blocks(g2), 32);
	t_done(g1, n1);
	t_done(g2, n2);
}
END_TEST

START_TEST(test_onboard_bad_input_holds_nothing)
{
	T_NAME(n1);
	T_NAME(n2);
	T_NAME(n8);
	struct kvbm_pool *g1 = tier_pool(n1, "G1", 8), *g2 = tier_pool(n2, "G2", 32), *again;
	struct kvbm_plh h[6], shifted[2];
	struct kvbm_onboard *o = (struct kvbm_onboard *)&o;
	struct kvbm_block fill[8];
	struct kvbm_config c8 = t_cfg();

	req_hashes(h, 6);
	cache(g2, h, 0, 6);
	ck_assert_int_eq(kvbm_onboard_plan(g1, g2, h, 6, NULL), -EINVAL);
	ck_assert_int_eq(kvbm_onboard_plan(g1, g1, h, 6, &o), -EINVAL);
	ck_assert_ptr_null(o);
	ck_assert_int_eq(kvbm_onboard_plan(NULL, g2, h, 6, &o), -EINVAL);
	ck_assert_int_eq(kvbm_onboard_plan(g1, g2, NULL, 6, &o), -EINVAL);
	shifted[0] = h[1]; /* position 1 at index 0 */
	shifted[1] = h[2];
	ck_assert_int_eq(kvbm_onboard_plan(g1, g2, shifted, 2, &o), -EINVAL);
	again = tier_attach(n2);
	ck_assert_ptr_nonnull(again);
	ck_assert_int_eq(kvbm_onboard_plan(again, g2, h, 6, &o), KVBM_EFOREIGN);
	kvbm_pool_close(again);
	c8.block_size = 8;
	c8.block_count = 8;
	struct kvbm_pool *big = t_create(n8, &c8);
	ck_assert_int_eq(kvbm_onboard_plan(big, g2, h, 6, &o), KVBM_ESIZE);
	t_done(big, n8);
	/* G1 cannot give 6 blocks while 3 are taken: nothing held anywhere */
	ck_assert_int_eq(kvbm_allocate_blocks(g1, 3, fill, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_onboard_plan(g1, g2, h, 6, &o), -ENOSPC);
	ck_assert_ptr_null(o);
	ck_assert_int_eq(kvbm_available_blocks(g2), 32);
	ck_assert_int_eq(kvbm_available_blocks(g1), 5);
	t_release(g1, fill, 3);
	/* an empty request is a plan with nothing in it */
	ck_assert_int_eq(kvbm_onboard_plan(g1, g2, h, 0, &o), 0);
	ck_assert_uint_eq(kvbm_onboard_count(o) + kvbm_onboard_matched(o), 0);
	ck_assert_int_eq(kvbm_onboard_complete(o, NULL, NULL, 0), 0);
	kvbm_onboard_free(o);
	ck_assert_int_eq(kvbm_onboard_abort(NULL), -EINVAL);
	ck_assert_int_eq(kvbm_onboard_complete(NULL, NULL, NULL, 0), -EINVAL);
	kvbm_onboard_free(NULL);
	t_done(g1, n1);
	t_done(g2, n2);
}
END_TEST

/* A process that fills both pools with chains of its own, registered and
 * released, until *@stop: once the free blocks are gone every allocation
 * evicts the least recently used inactive blocks, ours among them. */
static void evictor(const char *a, const char *b, volatile int *stop)
{
	struct kvbm_pool *p[2] = {tier_attach(a), tier_attach(b)};
	struct kvbm_block blk[8];
	struct kvbm_plh h[8];

	T_CHILD_CHECK(p[0] && p[1], 40);
	for (uint32_t r = 0; !*stop; r++)
		for (int j = 0; j < 2; j++) {
			/* the planner may hold most blocks now and then */
			if (kvbm_allocate_blocks(p[j], 8, blk, NULL, NULL) < 0)
				continue;
			t_seq_hashes(100000 + (r % 5000) * 64, 8, BS, h);
			T_CHILD_CHECK(kvbm_stage_blocks(p[j], blk, h, 8, BS, NULL) == 0, 41);
			T_CHILD_CHECK(kvbm_register_blocks(p[j], blk, 8) == 0, 42);
			T_CHILD_CHECK(kvbm_release_blocks(p[j], blk, 8) == 0, 43);
		}
	kvbm_pool_close(p[0]);
	kvbm_pool_close(p[1]);
	T_CHILD_OK();
}

/* Onboarding while another process evicts in G1 and G2 all the time:
 * every plan's blocks stay what they were planned as until completion,
 * and the completed blocks are registered under the request's hashes. */
START_TEST(test_mproc_onboard_with_concurrent_evictor)
{
	T_NAME(n1);
	T_NAME(n2);
	/* G1 small: the evictor's chains push ours out between rounds */
	struct kvbm_pool *g1 = tier_pool(n1, "G1", 24), *g2 = tier_pool(n2, "G2", 64);
	struct kvbm_plh h[8];
	uint32_t tok[8 * BS];
	struct kvbm_block got[8];
	struct kvbm_block_info bi;
	int planned = 0, copied = 0;
	volatile int *stop = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	ck_assert((void *)stop != MAP_FAILED);
	*stop = 0;
	req_hashes(h, 8);
	req_tokens(tok, 8);
	pid_t pid = fork();
	if (pid == 0)
		evictor(n1, n2, stop);
	for (int round = 0; round < 300; round++) {
		struct kvbm_onboard *o = NULL;
		long r;
		/* the evictor may have evicted G2's copy: register it again,
		 * held, unless the evictor holds every G2 block right now */
		struct kvbm_block keep[8];
		if (kvbm_allocate_blocks(g2, 8, keep, NULL, NULL) < 0)
			continue;
		ck_assert_int_eq(kvbm_stage_blocks(g2, keep, h, 8, BS, NULL), 0);
		ck_assert_int_eq(kvbm_register_blocks(g2, keep, 8), 0);
		r = kvbm_onboard_plan(g1, g2, h, 8, &o);
		t_release(g2, keep, 8);
		if (r == -ENOSPC) /* the evictor holds G1's blocks right now */
			continue;
		ck_assert_int_eq(r, 0);
		ck_assert_uint_eq(kvbm_onboard_matched(o) + kvbm_onboard_count(o), 8);
		copied += kvbm_onboard_count(o) > 0;
		assert_plan_held(g1, g2, o, h);
		usleep(200); /* the "copy": the evictor runs meanwhile */
		assert_plan_held(g1, g2, o, h);
		r = kvbm_onboard_complete(o, tok, got, 8);
		ck_assert_int_eq(r, 8);
		for (int i = 0; i < 8; i++) {
			ck_assert_int_eq(kvbm_block_info(g1, &got[i], &bi), 0);
			ck_assert_uint_eq(bi.state, KVBM_BLOCK_REGISTERED);
			ck_assert(kvbm_plh_eq(bi.hash, h[i]));
		}
		t_release(g1, got, 8);
		kvbm_onboard_free(o);
		planned++;
		usleep(500); /* the next request comes later */
	}
	*stop = 1;
	ck_assert_int_eq(t_wait(pid), 0);
	munmap((void *)stop, sizeof(int));
	/* most rounds ran, and the evictor took G1's copy before many */
	ck_assert_int_gt(planned, 150);
	ck_assert_int_gt(copied, 50);
	t_done(g1, n1);
	t_done(g2, n2);
}
END_TEST

/*
 * A planner SIGKILLed at each point of a plan: after taking the holds,
 * in the middle of its copy, between staging and registering, inside the
 * registration's critical section, after registering with the sources
 * still held. After the reap both pools check clean and every block is
 * available again (free, or cached inactive).
 */
static const char *const crash_points[] = {
	"tier.plan.held", "copy", "tier.complete.staged", "block.register.batch",
	"tier.complete.registered",
};

START_TEST(test_mproc_onboard_sigkill_leaks_nothing)
{
	T_NAME(n1);
	T_NAME(n2);
	struct kvbm_pool *g1 = tier_pool(n1, "G1", 32), *g2 = tier_pool(n2, "G2", 32);
	struct kvbm_plh h[8];
	uint32_t tok[8 * BS];
	const char *point = crash_points[_i];

	req_hashes(h, 8);
	req_tokens(tok, 8);
	cache(g1, h, 0, 2);
	cache(g2, h, 0, 8);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q1 = tier_attach(n1), *q2 = tier_attach(n2);
		struct kvbm_onboard *o = NULL;
		T_CHILD_CHECK(q1 && q2, 50);
		if (strcmp(point, "copy"))
			kvbm_fp_arm(point);
		T_CHILD_CHECK(kvbm_onboard_plan(q1, q2, h, 8, &o) == 0, 51);
		T_CHILD_CHECK(kvbm_onboard_count(o) == 6, 52);
		if (!strcmp(point, "copy"))
			raise(SIGKILL); /* three of six copied, say */
		kvbm_onboard_complete(o, tok, NULL, 0);
		_exit(53);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	/* in the mutex: the recovery of the next locker reaps it already */
	ck_assert_int_ge(kvbm_reap(g1), 0);
	ck_assert_int_eq(kvbm_reap(g2), 1);
	struct kvbm_pool_info pi;
	ck_assert_int_eq(kvbm_pool_info(g1, &pi), 0);
	ck_assert_uint_eq(pi.procs_attached, 1);
	ck_assert_int_eq(t_check(g1), 0);
	ck_assert_int_eq(t_check(g2), 0);
	ck_assert_int_eq(kvbm_available_blocks(g1), 32);
	ck_assert_int_eq(kvbm_available_blocks(g2), 32);
	/* and we can onboard the same request now */
	struct kvbm_onboard *o = NULL;
	ck_assert_int_eq(kvbm_onboard_plan(g1, g2, h, 8, &o), 0);
	ck_assert_uint_eq(kvbm_onboard_matched(o) + kvbm_onboard_count(o), 8);
	ck_assert_int_eq(kvbm_onboard_complete(o, tok, NULL, 0), 8);
	kvbm_onboard_free(o);
	t_done(g1, n1);
	t_done(g2, n2);
}
END_TEST

Suite *make_tier_suite(void)
{
	Suite *s = suite_create("tier");
	TCase *tc = tcase_create("tier");
	TCase *mp = tcase_create("mproc");

	tcase_add_test(tc, test_tier_names_and_parse);
	tcase_add_test(tc, test_tier_set_at_creation);
	tcase_add_test(tc, test_tier_in_the_tools);
	tcase_add_test(tc, test_tiers_presence_one_process_three_tiers);
	tcase_add_test(tc, test_onboard_plan_and_complete);
	tcase_add_test(tc, test_onboard_complete_under_dup_reject);
	tcase_add_test(tc, test_onboard_abort_and_free_give_everything_back);
	tcase_add_test(tc, test_onboard_bad_input_holds_nothing);
	suite_add_tcase(s, tc);
	tcase_set_timeout(mp, 120);
	tcase_add_test(mp, test_mproc_onboard_with_concurrent_evictor);
	tcase_add_loop_test(mp, test_mproc_onboard_sigkill_leaks_nothing, 0,
			    sizeof(crash_points) / sizeof(crash_points[0]));
	suite_add_tcase(s, mp);
	return s;
}
