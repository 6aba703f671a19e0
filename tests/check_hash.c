/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_hash.c - hashing, bit for bit against the reference's test vectors
 * (spec section 4.6) and the benchmark's check values.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "../lib/pool.h"

static struct kvbm_plh plh(uint64_t hi, uint64_t lo)
{
	struct kvbm_plh h = {hi, lo};
	return h;
}

#define ck_assert_plh_eq(a, b)                                                               \
	do {                                                                                 \
		struct kvbm_plh _a = (a), _b = (b);                                          \
		ck_assert_msg(kvbm_plh_eq(_a, _b), "PLH %016lx%016lx != %016lx%016lx",      \
			      (unsigned long)_a.hi, (unsigned long)_a.lo,                    \
			      (unsigned long)_b.hi, (unsigned long)_b.lo);                   \
	} while (0)

static const uint32_t toks12[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

/* upstream test_validate_hash_constants: salt 1337, block size 4 */
START_TEST(test_validate_hash_constants)
{
	struct kvbm_block_hashes b[3];

	ck_assert_int_eq(kvbm_hash_tokens(toks12, 12, 4, 1337, b, 3), 3);
	ck_assert_uint_eq(b[0].block_hash, 14643705804678351452ull);
	ck_assert_uint_eq(b[1].block_hash, 16777012769546811212ull);
	ck_assert_uint_eq(b[2].block_hash, 483935686894639516ull);
	ck_assert_uint_eq(b[0].seq_hash, 14643705804678351452ull);
	ck_assert_uint_eq(b[1].seq_hash, 4945711292740353085ull);
	ck_assert_uint_eq(b[2].seq_hash, 12583592247330656132ull);
	ck_assert_plh_eq(b[0].plh, plh(0x0032ce3935fecb72ull, 0x9700000000000000ull));
	ck_assert_plh_eq(b[1].plh, plh(0x005128ac8de75b4full, 0x0f78e4d7fb2dca5cull));
	ck_assert_plh_eq(b[2].plh, plh(0x00aba8799e9b2033ull, 0xe122b2379d6d3c3dull));
	ck_assert_uint_eq(kvbm_plh_router_hash(b[0].plh), 16014214978980444ull);
	ck_assert_uint_eq(kvbm_plh_router_hash(b[1].plh), 9766101142289469ull);
}
END_TEST

/* salt 0 tells the current chain rule (seed 1337) from the legacy one */
START_TEST(test_salt_zero_vectors)
{
	struct kvbm_block_hashes b[3];

	ck_assert_int_eq(kvbm_hash_tokens(toks12, 12, 4, 0, b, 3), 3);
	ck_assert_uint_eq(b[0].block_hash, 8052976908588476977ull);
	ck_assert_uint_eq(b[1].block_hash, 13852901005659965728ull);
	ck_assert_uint_eq(b[2].block_hash, 12087364272738490135ull);
	ck_assert_uint_eq(b[0].seq_hash, 8052976908588476977ull);
	ck_assert_uint_eq(b[1].seq_hash, 17538018756801271241ull);
	ck_assert_uint_eq(b[2].seq_hash, 70629693063532910ull);
	ck_assert_plh_eq(b[0].plh, plh(0x001bf07af53d35baull, 0x8c40000000000000ull));
	ck_assert_plh_eq(b[1].plh, plh(0x007cd8e3c8e3d1c5ull, 0x7241ebd4f4d6ea31ull));
	ck_assert_plh_eq(b[2].plh, plh(0x00803ebb55396964ull, 0x5ba38f238f4715c9ull));
}
END_TEST

START_TEST(test_other_vectors)
{
	static const uint32_t t0123[4] = {0, 1, 2, 3}, t13[4] = {13, 14, 15, 16};

	ck_assert_uint_eq(kvbm_block_hash(t0123, 4, 42), 9654674667387326307ull);
	/* the router's LocalBlockHash is the block hash with seed 1337 */
	ck_assert_uint_eq(kvbm_block_hash(t13, 4, 1337), 135165725823939817ull);
	ck_assert_uint_eq(kvbm_salt_hash(NULL, "alpha-7b"), 723495307357893745ull);
	ck_assert_uint_eq(kvbm_salt_hash("tenant-a", NULL), 1948188790972764086ull);
	ck_assert_uint_eq(kvbm_salt_hash(NULL, NULL), 1337);
	ck_assert_uint_eq(kvbm_salt_hash("", ""), 1337);
}
END_TEST

START_TEST(test_plh_new_vectors)
{
	struct kvbm_plh h;
	uint64_t parent;

	parent = 0x1234567890ABCDEFull;
	ck_assert_int_eq(kvbm_plh_make(0xABCDEF0123456789ull, &parent, 256, &h), 0);
	ck_assert_plh_eq(h, plh(0x40402af37bc048d1ull, 0x59e2567890abcdefull));
	parent = 0x1111222233334444ull;
	ck_assert_int_eq(kvbm_plh_make(0x5555666677778888ull, &parent, 65536, &h), 0);
	ck_assert_plh_eq(h, plh(0x804000155559999dull, 0xdde2222233334444ull));
	parent = 0x11;
	ck_assert_int_eq(kvbm_plh_make(0xAA, &parent, 5, &h), 0);
	ck_assert_plh_eq(h, plh(0x0140000000000000ull, 0x2a80000000000011ull));
}
END_TEST

/* upstream test_positional_lineage_hash: widths and accessors per mode */
START_TEST(test_positional_lineage_hash)
{
	const uint64_t cur = 0x1234567890ABCDEFull, par = 0xFEDCBA9876543210ull;
	static const struct {
		uint32_t pos;
		unsigned mode, bits;
	} cases[] = {{0, 0, 54},     {100, 0, 54},    {255, 0, 54},    {256, 1, 46},
		     {1000, 1, 46},  {65535, 1, 46},  {65536, 2, 38},  {100000, 2, 38},
		     {KVBM_PLH_MAX_POSITION, 2, 38}};
	struct kvbm_plh h;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_int_eq(kvbm_plh_make(cur, &par, cases[i].pos, &h), 0);
		ck_assert_uint_eq(kvbm_plh_mode(h), cases[i].mode);
		ck_assert_uint_eq(kvbm_plh_position(h), cases[i].pos);
		ck_assert_uint_eq(kvbm_plh_current(h), cur);
		ck_assert_uint_eq(kvbm_plh_parent_fragment(h),
				  par & ((1ull << cases[i].bits) - 1));
	}
	ck_assert_int_eq(kvbm_plh_make(cur, NULL, 0, &h), 0);
	ck_assert_uint_eq(kvbm_plh_parent_fragment(h), 0);
	ck_assert_int_eq(kvbm_plh_make(cur, &par, KVBM_PLH_MAX_POSITION + 1, &h), -ERANGE);
}
END_TEST

/* child.parent_fragment == parent.fragment_for_child(child.pos), also
 * across the mode boundaries 255->256 and 65535->65536 */
START_TEST(test_positional_lineage_hash_mode_boundary_alignment)
{
	static const uint32_t parents[] = {0, 254, 255, 256, 65534, 65535, 65536};
	struct kvbm_plh p, c;
	uint64_t pp = 0x0F1E2D3C4B5A6978ull;

	for (size_t i = 0; i < sizeof(parents) / sizeof(parents[0]); i++) {
		ck_assert_int_eq(kvbm_plh_make(0xDEADBEEFCAFEF00Dull, &pp, parents[i], &p), 0);
		ck_assert_int_eq(kvbm_plh_extend(p, 0x1234, &c), 0);
		ck_assert_uint_eq(kvbm_plh_position(c), parents[i] + 1);
		ck_assert_uint_eq(kvbm_plh_parent_fragment(c),
				  kvbm_plh_fragment_for_child(p, kvbm_plh_position(c)));
	}
}
END_TEST

/* upstream test_positional_lineage_hash_extend: root + extend equals the
 * PLHs built from token blocks */
START_TEST(test_positional_lineage_hash_extend)
{
	struct kvbm_block_hashes b[3];
	struct kvbm_plh h;

	kvbm_hash_tokens(toks12, 12, 4, 1337, b, 3);
	ck_assert_int_eq(kvbm_plh_make(b[0].block_hash, NULL, 0, &h), 0);
	ck_assert_plh_eq(h, b[0].plh);
	ck_assert_int_eq(kvbm_plh_extend(h, b[1].block_hash, &h), 0);
	ck_assert_plh_eq(h, b[1].plh);
	ck_assert_int_eq(kvbm_plh_extend(h, b[2].block_hash, &h), 0);
	ck_assert_plh_eq(h, b[2].plh);
}
END_TEST

START_TEST(test_plh_bytes_and_order)
{
	struct kvbm_plh a = plh(0x0032ce3935fecb72ull, 0x9700000000000000ull), b;
	uint8_t bytes[16];
	static const uint8_t want[16] = {0x00, 0x32, 0xce, 0x39, 0x35, 0xfe, 0xcb, 0x72,
					 0x97, 0,    0,    0,    0,    0,    0,    0};

	kvbm_plh_to_bytes(a, bytes);
	ck_assert_mem_eq(bytes, want, 16);
	ck_assert_plh_eq(kvbm_plh_from_bytes(bytes), a);
	/* ordered by position first */
	uint64_t p = 1;
	kvbm_plh_make(0, &p, 1, &b);
	ck_assert_int_lt(kvbm_plh_cmp(a, b), 0);
	ck_assert_int_gt(kvbm_plh_cmp(b, a), 0);
	ck_assert_int_eq(kvbm_plh_cmp(a, a), 0);
}
END_TEST

/* the benchmark's (e) workload: LCG tokens, block size 16, salt 42 */
START_TEST(test_bench_e_check_values)
{
	uint32_t *tok = malloc(4096 * sizeof(*tok));
	struct kvbm_block_hashes *b = malloc(256 * sizeof(*b));
	uint64_t x = 1;

	for (int i = 0; i < 4096; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		tok[i] = (uint32_t)((x >> 33) % 128256);
	}
	ck_assert_int_eq(kvbm_hash_tokens(tok, 4096, 16, 42, b, 256), 256);
	ck_assert_uint_eq(b[0].block_hash, 0x8d1d79a1452142feull);
	ck_assert_uint_eq(b[255].seq_hash, 0xecce807585d8929full);
	ck_assert_plh_eq(b[0].plh, plh(0x0023475e68514850ull, 0xbf80000000000000ull));
	ck_assert_plh_eq(b[255].plh, plh(0x3ffb33a01d617624ull, 0xa7f2df90da178822ull));
	free(tok);
	free(b);
}
END_TEST

/* the fast paths (constant block size 16, a seeded secret, one loop per
 * PLH mode, extend in uneven pieces) against the one-block primitives,
 * across both mode boundaries (positions 256 and 65,536) */
static void check_against_primitives(uint32_t bs, size_t nblocks)
{
	size_t ntok = nblocks * bs + bs / 2;
	uint32_t *tok = malloc(ntok * sizeof(*tok));
	struct kvbm_block_hashes *b = malloc(nblocks * sizeof(*b));
	struct kvbm_tokens *t;
	uint64_t x = 7, seq = 0;

	for (size_t i = 0; i < ntok; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		tok[i] = (uint32_t)(x >> 33);
	}
	ck_assert_int_eq(kvbm_hash_tokens(tok, ntok, bs, 42, b, nblocks), (long)nblocks);
	ck_assert_int_eq(kvbm_tokens_new(bs, 42, &t), 0);
	for (size_t at = 0, step = 1; at < ntok; at += step, step = step * 3 % 1000 + 1)
		ck_assert_int_eq(kvbm_tokens_extend(t, tok + at, step < ntok - at ? step : ntok - at,
						    NULL, NULL), 0);
	ck_assert_uint_eq(kvbm_tokens_blocks(t), nblocks);
	for (size_t i = 0; i < nblocks; i++) {
		uint64_t bh = kvbm_block_hash(tok + i * bs, bs, 42), parent = seq;
		struct kvbm_plh want;
		seq = i ? kvbm_chain_hash(seq, bh) : bh;
		ck_assert_int_eq(kvbm_plh_make(seq, i ? &parent : NULL, (uint32_t)i, &want), 0);
		ck_assert_uint_eq(b[i].block_hash, bh);
		ck_assert_uint_eq(b[i].seq_hash, seq);
		ck_assert_plh_eq(b[i].plh, want);
		ck_assert_plh_eq(kvbm_tokens_block(t, i)->plh, want);
	}
	kvbm_tokens_free(t);
	free(tok);
	free(b);
}

START_TEST(test_fast_paths_equal_the_primitives)
{
	check_against_primitives(16, (1u << 16) + 300);
	check_against_primitives(4, 600);
	check_against_primitives(1, 3);
}
END_TEST

/* The forest's one-call key equals the three public functions, in every
 * mode, at the positions where the child's mode changes, and on a word
 * with an invalid mode (3). */
START_TEST(test_lineage_key_equals_the_three_functions)
{
	static const uint32_t pos[] = {0, 1, 254, 255, 256, 65534, 65535, 65536, KVBM_PLH_MAX_POSITION};
	uint64_t x = 0x9e3779b97f4a7c15ull;

	for (unsigned i = 0; i < sizeof(pos) / sizeof(pos[0]); i++)
		for (unsigned k = 0; k < 64; k++) {
			struct kvbm_plh h;
			uint64_t cur = x * (k + 1), par = ~x * (k + 3);
			ck_assert_int_eq(kvbm_plh_make(cur, &par, pos[i], &h), 0);
			if (k == 63)
				h.hi |= 3ull << 62;
			uint32_t ps;
			uint64_t frag, pfrag;
			kvbm_plh_lineage_key(h, &ps, &frag, &pfrag);
			ck_assert_uint_eq(ps, kvbm_plh_position(h));
			ck_assert_uint_eq(frag, kvbm_plh_router_hash(h));
			ck_assert_uint_eq(pfrag, kvbm_plh_parent_fragment(h));
			x = x * 6364136223846793005ull + 1442695040888963407ull;
		}
}
END_TEST

START_TEST(test_split_ignores_partial_block_and_validates)
{
	struct kvbm_block_hashes b[4];

	ck_assert_int_eq(kvbm_hash_tokens(toks12, 11, 4, 0, b, 4), 2);
	ck_assert_int_eq(kvbm_hash_tokens(toks12, 3, 4, 0, b, 4), 0);
	ck_assert_int_eq(kvbm_hash_tokens(toks12, 12, 4, 0, b, 1), 3); /* only 1 written */
	ck_assert_int_eq(kvbm_hash_tokens(toks12, 12, 3, 0, b, 4), -EINVAL);
	ck_assert_int_eq(kvbm_hash_tokens(toks12, 12, 0, 0, b, 4), -EINVAL);
	ck_assert_int_eq(kvbm_hash_tokens(toks12, 12, 2048, 0, b, 4), -EINVAL);
	ck_assert_int_eq(kvbm_hash_tokens(NULL, 12, 4, 0, b, 4), -EINVAL);
	for (uint32_t bs = 1; bs <= 1024; bs *= 2)
		ck_assert_int_ge(kvbm_hash_tokens(toks12, 12, bs, 0, b, 4), 0);
}
END_TEST

/* a growing sequence: extend reports the blocks it completed, and the
 * hashes equal those of the one-shot split */
START_TEST(test_tokens_extend_and_append)
{
	struct kvbm_tokens *t;
	struct kvbm_block_hashes b[3];
	size_t first, n;

	ck_assert_int_eq(kvbm_tokens_new(3, 0, &t), -EINVAL);
	ck_assert_int_eq(kvbm_tokens_new(4, 1337, &t), 0);
	ck_assert_int_eq(kvbm_tokens_extend(t, toks12, 3, &first, &n), 0);
	ck_assert_uint_eq(n, 0);
	ck_assert_uint_eq(kvbm_tokens_total(t), 3);
	ck_assert_int_eq(kvbm_tokens_extend(t, toks12 + 3, 6, &first, &n), 0);
	ck_assert_uint_eq(first, 0);
	ck_assert_uint_eq(n, 2);
	for (int i = 9; i < 12; i++) {
		ck_assert_int_eq(kvbm_tokens_extend(t, toks12 + i, 1, &first, &n), 0);
		ck_assert_uint_eq(n, i == 11 ? 1 : 0);
	}
	ck_assert_uint_eq(first, 2);
	ck_assert_uint_eq(kvbm_tokens_blocks(t), 3);
	kvbm_hash_tokens(toks12, 12, 4, 1337, b, 3);
	for (int i = 0; i < 3; i++)
		ck_assert_plh_eq(kvbm_tokens_block(t, (size_t)i)->plh, b[i].plh);
	ck_assert_ptr_null(kvbm_tokens_block(t, 3));
	kvbm_tokens_free(t);
}
END_TEST

START_TEST(test_same_tokens_same_hash_different_tokens_differ)
{
	static const uint32_t a[4] = {7, 7, 7, 7}, b[4] = {7, 7, 7, 8};

	ck_assert_uint_eq(kvbm_block_hash(a, 4, 42), kvbm_block_hash(a, 4, 42));
	ck_assert_uint_ne(kvbm_block_hash(a, 4, 42), kvbm_block_hash(b, 4, 42));
	ck_assert_uint_ne(kvbm_block_hash(a, 4, 42), kvbm_block_hash(a, 4, 43));
}
END_TEST

/* The display form (spec 4.2) of the spec 4.6 PLHs; the strings come from
 * python/tests/test_binding_hash_variants.py's implementation (Python's integers
 * and python3-xxhash, written from the spec text), which also compares
 * the two on random values. */
START_TEST(test_plh_base58_display_vectors)
{
	static const struct {
		uint64_t hi, lo;
		const char *text;
	} v[] = {
		{0x0032ce3935fecb72ull, 0x9700000000000000ull, "0:azWbh91idkf"},
		{0x005128ac8de75b4full, 0x0f78e4d7fb2dca5cull, "1:CUrLYDFnmBa:13A3sGnbCSf"},
		{0x00aba8799e9b2033ull, 0xe122b2379d6d3c3dull, "2:WD9tZKnMfx7:12KG5vAW7Me"},
		{0x40402af37bc048d1ull, 0x59e2567890abcdefull, "256:VjieuTM37VA:11CC1kyMLa"},
		{0x804000155559999dull, 0xdde2222233334444ull, "65536:FGqt29cP6R5:1114rnyoym"},
		{0x0140000000000000ull, 0x2a80000000000011ull, "5:11111113w:1111111J"},
	};
	char buf[KVBM_PLH_TEXT_MAX];
	struct kvbm_plh back;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		int n = kvbm_plh_to_base58(plh(v[i].hi, v[i].lo), buf, sizeof(buf));
		ck_assert_str_eq(buf, v[i].text);
		ck_assert_int_eq(n, (int)strlen(v[i].text));
		ck_assert_int_eq(kvbm_plh_from_base58(v[i].text, &back), 0);
		ck_assert_plh_eq(back, plh(v[i].hi, v[i].lo));
	}
	/* the longest: position 2^24 - 1, every hash bit set */
	uint64_t all = ~0ull;
	struct kvbm_plh big;
	ck_assert_int_eq(kvbm_plh_make(all, &all, KVBM_PLH_MAX_POSITION, &big), 0);
	ck_assert_int_lt(kvbm_plh_to_base58(big, buf, sizeof(buf)), KVBM_PLH_TEXT_MAX);
	ck_assert_int_eq(kvbm_plh_from_base58(buf, &back), 0);
	ck_assert_plh_eq(back, big);
	/* truncation works like snprintf */
	ck_assert_int_eq(kvbm_plh_to_base58(plh(v[1].hi, v[1].lo), buf, 4), 25);
	ck_assert_str_eq(buf, "1:C");
	/* not the form: a parent on the root, none on a child, bad digits,
	 * non-canonical leading '1's, a fragment past the mode's width */
	static const char *const bad[] = {"", "0", "0:", ":azWbh91idkf", "0:azWbh91idkf:1",
					  "1:CUrLYDFnmBa", "0:azWbh91idk0", "0:1azWbh91idkf",
					  "01:CUrLYDFnmBa:13A3sGnbCSf", "0:zzzzzzzzzzz"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(kvbm_plh_from_base58(bad[i], &back) == -EINVAL, "%s", bad[i]);
	ck_assert_int_eq(kvbm_plh_from_base58("16777216:CUrLYDFnmBa:13A3sGnbCSf", &back), -ERANGE);
	ck_assert_int_eq(kvbm_plh_from_base58("1:CUrLYDFnmBa:13RfkhhsepP", &back), -ERANGE);
	ck_assert_int_eq(kvbm_plh_from_base58(NULL, &back), -EINVAL);
}
END_TEST

/* Multimodal blocks (spec 4.4): tokens 1..12, block size 4, salt 1337, one
 * image of 5 placeholder slots at positions 2..6 (hash 0xDEADBEEF): blocks
 * 0 and 1 hash as 13-byte frames, block 2 as plain tokens. Values from
 * python/tests/test_binding_hash_variants.py's independent implementation. */
START_TEST(test_multimodal_block_hash_vectors)
{
	static const uint32_t t[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
	static const struct kvbm_block_hashes want[3] = {
		{12808560556892575242u, 12808560556892575242u, {0x002c70497daf6a55ull, 0x8280000000000000ull}},
		{16442471055028056711u, 16248155270022346924u, {0x00785f42c86d44aeull, 0x2b0125f6bda9560aull}},
		{483935686894639516u, 18124031415708836028u, {0x00bee15fa307d618ull, 0x2f3d0b21b512b8acull}},
	};
	struct kvbm_mm_run run = {0xDEADBEEF, 2, 5};
	struct kvbm_block_hashes got[3], plain[3];

	ck_assert_int_eq(kvbm_hash_tokens_mm(t, 12, 4, 1337, &run, 1, got, 3), 3);
	for (int i = 0; i < 3; i++) {
		ck_assert_uint_eq(got[i].block_hash, want[i].block_hash);
		ck_assert_uint_eq(got[i].seq_hash, want[i].seq_hash);
		ck_assert_plh_eq(got[i].plh, want[i].plh);
	}
	/* block 2 has no placeholder: the plain hash (the upstream constant) */
	ck_assert_uint_eq(got[2].block_hash, 483935686894639516u);
	/* no run: exactly kvbm_hash_tokens() */
	ck_assert_int_eq(kvbm_hash_tokens_mm(t, 12, 4, 1337, NULL, 0, got, 3), 3);
	ck_assert_int_eq(kvbm_hash_tokens(t, 12, 4, 1337, plain, 3), 3);
	ck_assert_int_eq(memcmp(got, plain, sizeof(got)), 0);
	/* placeholder token ids are ignored */
	uint32_t t2[12];
	memcpy(t2, t, sizeof(t2));
	t2[3] = 999;
	ck_assert_int_eq(kvbm_hash_tokens_mm(t2, 12, 4, 1337, &run, 1, got, 3), 3);
	ck_assert_uint_eq(got[0].block_hash, want[0].block_hash);
	/* bad runs: empty, past the end, overlapping, overflowing */
	struct kvbm_mm_run bad[][2] = {{{1, 0, 0}, {0, 0, 0}}, {{1, 10, 3}, {0, 0, 0}},
				       {{1, 2, 3}, {2, 4, 2}}, {{1, SIZE_MAX, 2}, {0, 0, 0}}};
	size_t nbad[] = {1, 1, 2, 1};
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(kvbm_hash_tokens_mm(t, 12, 4, 0, bad[i], nbad[i], got, 3), -EINVAL);
	ck_assert_int_eq(kvbm_hash_tokens_mm(t, 12, 3, 0, NULL, 0, got, 3), -EINVAL);
}
END_TEST

/* The router's block hashes (spec 4.5): the spec's vector, multimodal
 * objects appended sorted, EAGLE's one-token-wider windows. */
START_TEST(test_router_block_hash_variants)
{
	uint32_t t[16];
	uint64_t out[4];
	static const uint64_t objs[3] = {3, 1, 2};
	struct kvbm_router_mm mm[2] = {{NULL, 0}, {objs, 3}};

	for (int i = 0; i < 16; i++)
		t[i] = (uint32_t)i + 1;
	ck_assert_int_eq(kvbm_router_block_hashes(t + 12, 4, 4, 1337, NULL, 0, 0, out, 4), 1);
	ck_assert_uint_eq(out[0], 135165725823939817u);
	ck_assert_int_eq(kvbm_router_block_hashes(t, 12, 4, 1337, mm, 2, 0, out, 4), 3);
	ck_assert_uint_eq(out[0], 14643705804678351452u); /* no objects: the plain hash */
	ck_assert_uint_eq(out[1], 10564800369018489465u);
	ck_assert_uint_eq(out[2], 483935686894639516u);
	ck_assert_int_eq(kvbm_router_block_hashes(t, 12, 4, 1337, NULL, 0, KVBM_ROUTER_EAGLE, out, 4),
			 2);
	ck_assert_uint_eq(out[0], 1914873892905420881u);
	ck_assert_uint_eq(out[1], 1929047464662796003u);
	ck_assert_int_eq(kvbm_router_block_hashes(t, 13, 4, 1337, NULL, 0, KVBM_ROUTER_EAGLE, out, 4),
			 3);
	ck_assert_int_eq(kvbm_router_block_hashes(t, 0, 4, 1337, NULL, 0, KVBM_ROUTER_EAGLE, out, 4),
			 0);
	/* the count even when @max is smaller */
	ck_assert_int_eq(kvbm_router_block_hashes(t, 16, 4, 1337, NULL, 0, 0, out, 1), 4);
	ck_assert_int_eq(kvbm_router_block_hashes(t, 16, 0, 1337, NULL, 0, 0, out, 4), -EINVAL);
	ck_assert_int_eq(kvbm_router_block_hashes(t, 16, 4, 1337, NULL, 0, 2, out, 4), -EINVAL);
	mm[1].mm_hashes = NULL;
	ck_assert_int_eq(kvbm_router_block_hashes(t, 16, 4, 1337, mm, 2, 0, out, 4), -EINVAL);
	ck_assert_uint_eq(kvbm_mm_pad_value(0x40000005ull), 1000005u);
}
END_TEST

/* The kv-router's test of the same name: EAGLE windows of 6 tokens at
 * block size 2 are [0,1,2] and [2,3,4] (2 blocks, not 3), each hashed as a
 * sequence of its own, and differ from the plain first block. */
START_TEST(test_compute_block_hash_for_seq_eagle_windows)
{
	static const uint32_t t[6] = {0, 1, 2, 3, 4, 5};
	uint64_t plain[4], eagle[4], first, second;

	ck_assert_int_eq(kvbm_router_block_hashes(t, 6, 2, 1337, NULL, 0, 0, plain, 4), 3);
	ck_assert_int_eq(kvbm_router_block_hashes(t, 6, 2, 1337, NULL, 0, KVBM_ROUTER_EAGLE, eagle,
						  4),
			 2);
	ck_assert_int_eq(kvbm_router_block_hashes(t, 3, 2, 1337, NULL, 0, KVBM_ROUTER_EAGLE, &first,
						  1),
			 1);
	ck_assert_int_eq(kvbm_router_block_hashes(t + 2, 3, 2, 1337, NULL, 0, KVBM_ROUTER_EAGLE,
						  &second, 1),
			 1);
	ck_assert_uint_eq(eagle[0], first);
	ck_assert_uint_eq(eagle[1], second);
	ck_assert_uint_ne(plain[0], eagle[0]);
}
END_TEST

Suite *make_hash_suite(void)
{
	Suite *s = suite_create("hash");
	TCase *tc = tcase_create("vectors");

	tcase_add_test(tc, test_validate_hash_constants);
	tcase_add_test(tc, test_salt_zero_vectors);
	tcase_add_test(tc, test_other_vectors);
	tcase_add_test(tc, test_plh_new_vectors);
	tcase_add_test(tc, test_positional_lineage_hash);
	tcase_add_test(tc, test_positional_lineage_hash_mode_boundary_alignment);
	tcase_add_test(tc, test_positional_lineage_hash_extend);
	tcase_add_test(tc, test_plh_bytes_and_order);
	tcase_add_test(tc, test_bench_e_check_values);
	tcase_add_test(tc, test_plh_base58_display_vectors);
	tcase_add_test(tc, test_multimodal_block_hash_vectors);
	tcase_add_test(tc, test_router_block_hash_variants);
	tcase_add_test(tc, test_compute_block_hash_for_seq_eagle_windows);
	suite_add_tcase(s, tc);
	tc = tcase_create("sequences");
	tcase_add_test(tc, test_split_ignores_partial_block_and_validates);
	tcase_add_test(tc, test_tokens_extend_and_append);
	tcase_add_test(tc, test_fast_paths_equal_the_primitives);
	tcase_add_test(tc, test_lineage_key_equals_the_three_functions);
	tcase_add_test(tc, test_same_tokens_same_hash_different_tokens_differ);
	suite_add_tcase(s, tc);
	return s;
}
