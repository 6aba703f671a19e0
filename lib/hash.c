/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hash.c - block, sequence and positional lineage hashes, bit-identical to
 * the reference (spec section 4): XXH3-64 over little-endian integers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* inlined: the block hash is 64 bytes and the chain hash 16, sizes the
 * compiler specialises XXH3 for; a call into libxxhash costs more than the
 * chain hash itself */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "kvbm.h"
#include "grow.h"
#include "pool.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "tokens are hashed as little-endian u32 straight from memory");

typedef unsigned __int128 u128;

static u128 to_u128(struct kvbm_plh h)
{
	return ((u128)h.hi << 64) | h.lo;
}

/* The common block size gets a constant length, which XXH3 specialises. */
static inline uint64_t block_hash(const uint32_t *tokens, size_t n, uint64_t salt)
{
	if (n == 16)
		return XXH3_64bits_withSeed(tokens, 16 * sizeof(uint32_t), salt);
	return XXH3_64bits_withSeed(tokens, n * sizeof(uint32_t), salt);
}

uint64_t kvbm_block_hash(const uint32_t *tokens, size_t n, uint64_t salt)
{
	return block_hash(tokens, n, salt);
}

static inline __attribute__((always_inline)) uint64_t chain_hash(uint64_t parent, uint64_t block)
{
	uint64_t buf[2] = {parent, block};

	return XXH3_64bits_withSeed(buf, sizeof(buf), KVBM_CHAIN_SEED);
}

uint64_t kvbm_chain_hash(uint64_t parent_seq_hash, uint64_t block_hash)
{
	return chain_hash(parent_seq_hash, block_hash);
}

uint64_t kvbm_salt_hash(const char *cache_namespace, const char *lora_name)
{
	uint64_t seed = KVBM_CHAIN_SEED;

	/* wrapping adds, lora first, as compute_salt_hash does */
	if (lora_name && *lora_name)
		seed += XXH3_64bits_withSeed(lora_name, strlen(lora_name), 0);
	if (cache_namespace && *cache_namespace)
		seed += XXH3_64bits_withSeed(cache_namespace, strlen(cache_namespace), 1);
	return seed;
}

static unsigned mode_of(uint32_t pos)
{
	return pos < (1u << 8) ? 0 : pos < (1u << 16) ? 1 : 2;
}

static unsigned pos_bits(unsigned mode)
{
	static const unsigned p[3] = {8, 16, 24};
	return p[mode];
}

static unsigned parent_bits(unsigned mode)
{
	static const unsigned r[3] = {54, 46, 38};
	return r[mode];
}

static uint64_t low_mask(unsigned bits)
{
	return bits >= 64 ? ~0ull : (1ull << bits) - 1;
}

/* [mode:2][position:P][current:64][parent fragment:R]; position checked.
 * P + R = 62 and 0 < R < 64 in every mode, so two 64-bit words and plain
 * shifts do it: a variable 128-bit shift costs a branch per block on the
 * hashing path (issue 6 (e)). */
static inline __attribute__((always_inline)) struct kvbm_plh plh_pack(uint64_t current,
								    uint64_t parent,
								    uint32_t position)
{
	uint64_t mode = position < (1u << 8) ? 0 : position < (1u << 16) ? 1 : 2;
	unsigned r = 54 - 8 * (unsigned)mode;
	struct kvbm_plh h;

	h.hi = mode << 62 | (uint64_t)position << r | current >> (64 - r);
	h.lo = current << r | (parent & ((1ull << r) - 1));
	return h;
}

int kvbm_plh_make(uint64_t current, const uint64_t *parent, uint32_t position,
		  struct kvbm_plh *out)
{
	if (position > KVBM_PLH_MAX_POSITION)
		return -ERANGE;
	*out = plh_pack(current, parent ? *parent : 0, position);
	return 0;
}

unsigned kvbm_plh_mode(struct kvbm_plh h)
{
	return (unsigned)(h.hi >> 62);
}

uint32_t kvbm_plh_position(struct kvbm_plh h)
{
	unsigned mode = kvbm_plh_mode(h);
	if (mode > 2)
		return 0;
	unsigned p = pos_bits(mode);
	unsigned r = parent_bits(mode);

	return (uint32_t)((to_u128(h) >> (64 + r)) & low_mask(p));
}

uint64_t kvbm_plh_current(struct kvbm_plh h)
{
	unsigned mode = kvbm_plh_mode(h);

	return mode > 2 ? 0 : (uint64_t)(to_u128(h) >> parent_bits(mode));
}

uint64_t kvbm_plh_parent_fragment(struct kvbm_plh h)
{
	unsigned mode = kvbm_plh_mode(h);

	return mode > 2 ? 0 : h.lo & low_mask(parent_bits(mode));
}

uint64_t kvbm_plh_fragment_for_child(struct kvbm_plh h, uint32_t child_position)
{
	return kvbm_plh_current(h) & low_mask(parent_bits(mode_of(child_position)));
}

uint64_t kvbm_plh_router_hash(struct kvbm_plh h)
{
	return kvbm_plh_fragment_for_child(h, kvbm_plh_position(h) + 1);
}

/* The lineage forest's key of @h (position and router hash) and its
 * parent's fragment, the three functions above at once: a forest insertion
 * took 75 instructions for them as three calls. */
void kvbm_plh_lineage_key(struct kvbm_plh h, uint32_t *pos, uint64_t *frag, uint64_t *pfrag)
{
	unsigned mode = kvbm_plh_mode(h);

	if (mode > 2) {
		*pos = 0;
		*frag = *pfrag = 0;
		return;
	}
	/* the tables above as arithmetic: R = 54 - 8 mode, P = 62 - R */
	unsigned r = 54 - 8 * mode;
	uint32_t ps = (uint32_t)(h.hi >> r) & ((1u << (62 - r)) - 1);
	uint64_t cur = h.lo >> r | h.hi << (64 - r);
	unsigned cr = ps + 1 < (1u << 8) ? 54 : ps + 1 < (1u << 16) ? 46 : 38;

	*pos = ps;
	*frag = cur & ((1ull << cr) - 1);
	*pfrag = h.lo & ((1ull << r) - 1);
}

int kvbm_plh_extend(struct kvbm_plh parent, uint64_t child_block_hash, struct kvbm_plh *out)
{
	uint64_t cur = kvbm_plh_current(parent);

	return kvbm_plh_make(kvbm_chain_hash(cur, child_block_hash), &cur,
			     kvbm_plh_position(parent) + 1, out);
}

int kvbm_plh_eq(struct kvbm_plh a, struct kvbm_plh b)
{
	return a.hi == b.hi && a.lo == b.lo;
}

int kvbm_plh_cmp(struct kvbm_plh a, struct kvbm_plh b)
{
	uint32_t pa = kvbm_plh_position(a), pb = kvbm_plh_position(b);
	uint64_t ca = kvbm_plh_current(a), cb = kvbm_plh_current(b);

	if (pa != pb)
		return pa < pb ? -1 : 1;
	if (ca != cb)
		return ca < cb ? -1 : 1;
	if (a.hi != b.hi)
		return a.hi < b.hi ? -1 : 1;
	if (a.lo != b.lo)
		return a.lo < b.lo ? -1 : 1;
	return 0;
}

void kvbm_plh_to_bytes(struct kvbm_plh h, uint8_t out[16])
{
	for (int i = 0; i < 8; i++) {
		out[i] = (uint8_t)(h.hi >> (56 - 8 * i));
		out[8 + i] = (uint8_t)(h.lo >> (56 - 8 * i));
	}
}

struct kvbm_plh kvbm_plh_from_bytes(const uint8_t in[16])
{
	struct kvbm_plh h = {0, 0};

	for (int i = 0; i < 8; i++) {
		h.hi = (h.hi << 8) | in[i];
		h.lo = (h.lo << 8) | in[8 + i];
	}
	return h;
}

static int valid_block_size(uint32_t bs)
{
	return bs >= 1 && bs <= 1024 && (bs & (bs - 1)) == 0;
}

/* Hashes block @i given the previous block's hashes (NULL for block 0). */
static int hash_block(const uint32_t *tokens, uint32_t bs, uint64_t salt, size_t i,
		      const struct kvbm_block_hashes *prev, struct kvbm_block_hashes *out)
{
	out->block_hash = kvbm_block_hash(tokens, bs, salt);
	if (!prev) {
		out->seq_hash = out->block_hash;
		return kvbm_plh_make(out->seq_hash, NULL, 0, &out->plh);
	}
	if (i > KVBM_PLH_MAX_POSITION)
		return -ERANGE;
	out->seq_hash = kvbm_chain_hash(prev->seq_hash, out->block_hash);
	return kvbm_plh_make(out->seq_hash, &prev->seq_hash, (uint32_t)i, &out->plh);
}

/*
 * XXH3's seeded short hash mixes each 16-byte lane as
 * (in_lo ^ (secret_lo + seed)) * (in_hi ^ (secret_hi - seed)), and the
 * unseeded one with a custom secret as (in_lo ^ s_lo) * (in_hi ^ s_hi): a
 * secret with the seed folded in once gives the same hash with 16 fewer
 * instructions per block. Only the 64-byte block (block size 16) uses it;
 * the check values of issue 6 (e) and check_hash pin the equality.
 */
struct seeded_secret {
	_Alignas(64) uint8_t b[XXH3_SECRET_SIZE_MIN + 8];
};

static void seed_secret(struct seeded_secret *ss, uint64_t seed)
{
	memcpy(ss->b, XXH3_kSecret, sizeof(ss->b));
	for (int w = 0; w < 8; w++) {
		uint64_t v;
		memcpy(&v, ss->b + 8 * w, 8);
		v = (w & 1) ? v - seed : v + seed;
		memcpy(ss->b + 8 * w, &v, 8);
	}
}

static inline __attribute__((always_inline)) uint64_t
block_hash_at(const uint32_t *tokens, uint32_t bs, uint64_t salt, const struct seeded_secret *ss)
{
	if (bs == 16)
		return XXH3_64bits_withSecret(tokens, 64, ss->b, sizeof(ss->b));
	return XXH3_64bits_withSeed(tokens, bs * sizeof(uint32_t), salt);
}

/*
 * Blocks [from, to), all of PLH mode @mode, software-pipelined: block i+1
 * is hashed while the chain hash of block i, one long dependency through
 * the whole sequence, is still in flight. @seq is the sequence hash before
 * @from, @next the block hash of @from; both are carried to the next run.
 */
static inline __attribute__((always_inline)) void
hash_run(const uint32_t *tokens, size_t from, size_t to, size_t nblocks, uint32_t bs,
	 uint64_t salt, const struct seeded_secret *ss, uint64_t mode, uint64_t *seq,
	 uint64_t *next, struct kvbm_block_hashes *out)
{
	const unsigned r = 54 - 8 * (unsigned)mode;
	uint64_t sq = *seq, nx = *next;

	for (size_t i = from; i < to; i++) {
		struct kvbm_block_hashes *o = &out[i];
		uint64_t parent = sq;
		o->block_hash = nx;
		if (i + 1 < nblocks)
			nx = block_hash_at(tokens + (i + 1) * bs, bs, salt, ss);
		sq = i ? chain_hash(parent, o->block_hash) : o->block_hash;
		o->seq_hash = sq;
		/* plh_pack with the mode a constant */
		o->plh.hi = mode << 62 | (uint64_t)i << r | sq >> (64 - r);
		o->plh.lo = sq << r | (parent & ((1ull << r) - 1));
	}
	*seq = sq;
	*next = nx;
}

static size_t clampz(size_t v, size_t lo, size_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* Blocks [from, nblocks) of @tokens (block 0 at @tokens), @seq the
 * sequence hash of block from - 1 (unused when from is 0). */
static inline __attribute__((always_inline)) void
hash_all(const uint32_t *tokens, size_t from, size_t nblocks, uint32_t bs, uint64_t salt,
	 uint64_t seq, struct kvbm_block_hashes *out)
{
	struct seeded_secret ss;
	uint64_t next;
	size_t m1 = clampz(1u << 8, from, nblocks), m2 = clampz(1u << 16, from, nblocks);

	if (bs == 16)
		seed_secret(&ss, salt);
	next = block_hash_at(tokens + from * bs, bs, salt, &ss);
	if (from < m1)
		hash_run(tokens, from, m1, nblocks, bs, salt, &ss, 0, &seq, &next, out);
	if (m1 < m2)
		hash_run(tokens, m1, m2, nblocks, bs, salt, &ss, 1, &seq, &next, out);
	if (m2 < nblocks)
		hash_run(tokens, m2, nblocks, nblocks, bs, salt, &ss, 2, &seq, &next, out);
}

static void hash_blocks(const uint32_t *tokens, size_t from, size_t nblocks, uint32_t bs,
			uint64_t salt, uint64_t seq, struct kvbm_block_hashes *out)
{
	if (from >= nblocks)
		return;
	if (bs == 16) /* the common size, a constant */
		hash_all(tokens, from, nblocks, 16, salt, seq, out);
	else
		hash_all(tokens, from, nblocks, bs, salt, seq, out);
}

long kvbm_hash_tokens(const uint32_t *tokens, size_t n, uint32_t block_size, uint64_t salt,
		      struct kvbm_block_hashes *out, size_t max)
{
	struct kvbm_block_hashes prev, cur;

	if (!valid_block_size(block_size) || (n && !tokens) || (max && !out))
		return -EINVAL;
	size_t nblocks = n / block_size;
	if (nblocks > (size_t)KVBM_PLH_MAX_POSITION + 1)
		return -ERANGE;
	if (nblocks <= max) {
		hash_blocks(tokens, 0, nblocks, block_size, salt, 0, out);
		return (long)nblocks;
	}
	for (size_t i = 0; i < nblocks; i++) {
		int r = hash_block(tokens + i * block_size, block_size, salt, i, i ? &prev : NULL,
				   &cur);
		if (r < 0)
			return r;
		if (i < max)
			out[i] = cur;
		prev = cur;
	}
	return (long)nblocks;
}

struct kvbm_tokens {
	uint32_t block_size;
	uint64_t salt;
	uint32_t *tokens;
	size_t ntokens, cap_tokens;
	struct kvbm_block_hashes *blocks;
	size_t nblocks, cap_blocks;
};

int kvbm_tokens_new(uint32_t block_size, uint64_t salt, struct kvbm_tokens **out)
{
	if (!out || !valid_block_size(block_size))
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	(*out)->block_size = block_size;
	(*out)->salt = salt;
	return 0;
}

void kvbm_tokens_free(struct kvbm_tokens *t)
{
	if (!t)
		return;
	free(t->tokens);
	free(t->blocks);
	free(t);
}

int kvbm_tokens_extend(struct kvbm_tokens *t, const uint32_t *tokens, size_t n, size_t *first_new,
		       size_t *n_new)
{
	size_t before = t ? t->nblocks : 0;

	if (!t || (n && !tokens))
		return -EINVAL;
	size_t total = t->ntokens + n, nblocks = total / t->block_size;
	if (nblocks > (size_t)KVBM_PLH_MAX_POSITION + 1)
		return -ERANGE;
	if (kvbm_grow((void **)&t->tokens, &t->cap_tokens, total, sizeof(*t->tokens)) < 0 ||
	    kvbm_grow((void **)&t->blocks, &t->cap_blocks, nblocks, sizeof(*t->blocks)) < 0)
		return -ENOMEM;
	memcpy(t->tokens + t->ntokens, tokens, n * sizeof(*tokens));
	t->ntokens = total;
	hash_blocks(t->tokens, before, nblocks, t->block_size, t->salt,
		    before ? t->blocks[before - 1].seq_hash : 0, t->blocks);
	t->nblocks = nblocks;
	if (first_new)
		*first_new = before;
	if (n_new)
		*n_new = nblocks - before;
	return 0;
}

size_t kvbm_tokens_total(const struct kvbm_tokens *t)
{
	return t ? t->ntokens : 0;
}

size_t kvbm_tokens_blocks(const struct kvbm_tokens *t)
{
	return t ? t->nblocks : 0;
}

const struct kvbm_block_hashes *kvbm_tokens_block(const struct kvbm_tokens *t, size_t i)
{
	return t && i < t->nblocks ? &t->blocks[i] : NULL;
}

uint32_t kvbm_tokens_block_size(const struct kvbm_tokens *t)
{
	return t->block_size;
}

/* ---- the display form (base58) ------------------------------------------------ */

static const char b58_alphabet[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/* bs58's encoding of @v as 8 big-endian bytes: one '1' per leading zero
 * byte, then the rest's base-58 digits. At most 11 characters + NUL. */
static size_t b58_u64(uint64_t v, char out[12])
{
	char tmp[12] = {0};
	size_t n = 0, k = 0;
	int zeros = 0;

	for (int i = 7; i >= 0 && ((v >> (8 * i)) & 0xff) == 0; i--)
		zeros++;
	for (; v; v /= 58)
		tmp[n++] = b58_alphabet[v % 58];
	while (zeros--)
		out[k++] = '1';
	while (n)
		out[k++] = tmp[--n];
	out[k] = '\0';
	return k;
}

int kvbm_plh_to_base58(struct kvbm_plh h, char *buf, size_t len)
{
	char cur[12], par[12];
	uint32_t pos = kvbm_plh_position(h);

	b58_u64(kvbm_plh_current(h), cur);
	if (pos == 0)
		return snprintf(buf, len, "%u:%s", pos, cur);
	b58_u64(kvbm_plh_parent_fragment(h), par);
	return snprintf(buf, len, "%u:%s:%s", pos, cur, par);
}

/* Parses @n characters of base58 into *@v, requiring the canonical
 * encoding of 8 bytes (what b58_u64 writes). */
static int b58_parse(const char *s, size_t n, uint64_t *v)
{
	unsigned __int128 x = 0;
	char again[12];

	if (n == 0 || n > 11)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const char *d = memchr(b58_alphabet, s[i], 58);
		if (!d || !s[i])
			return -EINVAL;
		x = x * 58 + (unsigned)(d - b58_alphabet);
		if (x >> 64)
			return -EINVAL;
	}
	*v = (uint64_t)x;
	if (b58_u64(*v, again) != n || memcmp(again, s, n) != 0)
		return -EINVAL; /* a different number of leading '1's */
	return 0;
}

int kvbm_plh_from_base58(const char *text, struct kvbm_plh *out)
{
	const char *c1, *c2;
	uint64_t pos = 0, cur, par = 0;
	const char *p;

	if (!text || !out)
		return -EINVAL;
	c1 = strchr(text, ':');
	if (!c1 || c1 == text || c1 - text > 9)
		return -EINVAL;
	for (p = text; p < c1; p++) {
		if (*p < '0' || *p > '9' || (p == text && *p == '0' && c1 - text > 1))
			return -EINVAL;
		pos = pos * 10 + (uint64_t)(*p - '0');
	}
	c2 = strchr(c1 + 1, ':');
	if (b58_parse(c1 + 1, c2 ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1), &cur) < 0)
		return -EINVAL;
	if ((pos == 0) != (c2 == NULL))
		return -EINVAL; /* the root alone has no parent part */
	if (c2 && b58_parse(c2 + 1, strlen(c2 + 1), &par) < 0)
		return -EINVAL;
	if (pos > KVBM_PLH_MAX_POSITION)
		return -ERANGE;
	if (par & ~low_mask(parent_bits(mode_of((uint32_t)pos))))
		return -ERANGE;
	return kvbm_plh_make(cur, c2 ? &par : NULL, (uint32_t)pos, out);
}
