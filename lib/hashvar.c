/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hashvar.c - the block-hash variants of the reference other than plain
 * tokens (spec sections 4.4 and 4.5): multimodal blocks as dynamo-tokens
 * frames them, and the kv-router's own block hash with its multimodal and
 * EAGLE forms. Chain and PLH are hash.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "kvbm.h"

static int run_cmp(const void *a, const void *b)
{
	const struct kvbm_mm_run *x = a, *y = b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* validate_and_sort_mm_info: non-empty, no overflow, within the tokens,
 * no overlap; sorted by offset into @sorted. */
static int sort_runs(const struct kvbm_mm_run *runs, size_t nruns, size_t n,
		     struct kvbm_mm_run *sorted)
{
	size_t prev_end = 0;

	if (nruns == 0)
		return 0;
	memcpy(sorted, runs, nruns * sizeof(*runs));
	qsort(sorted, nruns, sizeof(*sorted), run_cmp);
	for (size_t i = 0; i < nruns; i++) {
		const struct kvbm_mm_run *r = &sorted[i];
		if (r->length == 0 || r->offset > SIZE_MAX - r->length ||
		    r->offset + r->length > n || r->offset < prev_end)
			return -EINVAL;
		prev_end = r->offset + r->length;
	}
	return 0;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* The 13-byte frames of the block at @off (compute_block_bytes_with_mm);
 * @run: the first run not ended before @off. */
static size_t mm_frames(const uint32_t *tokens, size_t off, uint32_t bs,
			const struct kvbm_mm_run *runs, size_t nruns, size_t run,
			unsigned char *buf)
{
	unsigned char *p = buf;

	for (size_t g = off; g < off + bs; g++, p += 13) {
		while (run < nruns && runs[run].offset + runs[run].length <= g)
			run++;
		if (run < nruns && runs[run].offset <= g) {
			p[0] = 0x01;
			put_le32(p + 1, (uint32_t)(g - runs[run].offset));
			put_le64(p + 5, runs[run].mm_hash);
		} else {
			p[0] = 0x00;
			put_le32(p + 1, tokens[g]);
			put_le64(p + 5, 0);
		}
	}
	return (size_t)(p - buf);
}

long kvbm_hash_tokens_mm(const uint32_t *tokens, size_t n, uint32_t block_size, uint64_t salt,
			 const struct kvbm_mm_run *runs, size_t nruns,
			 struct kvbm_block_hashes *out, size_t max)
{
	struct kvbm_mm_run *sorted;
	unsigned char *buf;
	size_t nblocks, run = 0;
	uint64_t prev = 0;
	long r;

	if (block_size == 0 || block_size > 1024 || (block_size & (block_size - 1)) ||
	    (n && !tokens) || (nruns && !runs) || (max && !out))
		return -EINVAL;
	nblocks = n / block_size;
	if (nblocks > (size_t)KVBM_PLH_MAX_POSITION + 1)
		return -ERANGE;
	sorted = malloc((nruns ? nruns : 1) * sizeof(*sorted));
	buf = malloc((size_t)block_size * 13);
	if (!sorted || !buf) {
		r = -ENOMEM;
		goto out;
	}
	r = sort_runs(runs, nruns, n, sorted);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < nblocks && i < max; i++) {
		size_t off = i * block_size;
		uint64_t b;
		while (run < nruns && sorted[run].offset + sorted[run].length <= off)
			run++;
		/* sorted and disjoint: the first run not ended is the only one
		 * that can start inside the block */
		if (run < nruns && sorted[run].offset < off + block_size)
			b = XXH3_64bits_withSeed(
				buf, mm_frames(tokens, off, block_size, sorted, nruns, run, buf), salt);
		else
			b = kvbm_block_hash(tokens + off, block_size, salt);
		uint64_t s = i ? kvbm_chain_hash(prev, b) : b;
		out[i].block_hash = b;
		out[i].seq_hash = s;
		kvbm_plh_make(s, i ? &prev : NULL, (uint32_t)i, &out[i].plh);
		prev = s;
	}
	r = (long)nblocks;
out:
	free(sorted);
	free(buf);
	return r;
}

long kvbm_router_block_hashes(const uint32_t *tokens, size_t n, uint32_t block_size, uint64_t seed,
			      const struct kvbm_router_mm *mm, size_t nmm, unsigned flags,
			      uint64_t *out, size_t max)
{
	size_t window, count, most = 0;
	unsigned char *buf;
	uint64_t *sorted;

	if (block_size == 0 || (flags & ~KVBM_ROUTER_EAGLE) || (n && !tokens) || (nmm && !mm) ||
	    (max && !out))
		return -EINVAL;
	for (size_t i = 0; i < nmm; i++) {
		if (mm[i].n && !mm[i].mm_hashes)
			return -EINVAL;
		most = mm[i].n > most ? mm[i].n : most;
	}
	window = (size_t)block_size + ((flags & KVBM_ROUTER_EAGLE) ? 1 : 0);
	count = n >= window ? (n - window) / block_size + 1 : 0;
	if (most > (SIZE_MAX / 2 - window * 4) / 8)
		return -ENOMEM;
	buf = malloc(window * 4 + most * 8 + 1);
	sorted = malloc(most * sizeof(*sorted) + 1);
	if (!buf || !sorted) {
		free(buf);
		free(sorted);
		return -ENOMEM;
	}
	for (size_t i = 0; i < count && i < max; i++) {
		const uint32_t *chunk = tokens + i * block_size;
		if (i < nmm && mm[i].n) {
			size_t len = window * 4;
			memcpy(sorted, mm[i].mm_hashes, mm[i].n * sizeof(*sorted));
			qsort(sorted, mm[i].n, sizeof(*sorted), u64_cmp);
			for (size_t k = 0; k < window; k++)
				put_le32(buf + 4 * k, chunk[k]);
			for (size_t k = 0; k < mm[i].n; k++, len += 8)
				put_le64(buf + len, sorted[k]);
			out[i] = XXH3_64bits_withSeed(buf, len, seed);
		} else {
			out[i] = XXH3_64bits_withSeed(chunk, window * 4, seed);
		}
	}
	free(buf);
	free(sorted);
	return (long)count;
}

uint32_t kvbm_mm_pad_value(uint64_t mm_hash)
{
	return (uint32_t)(1000000u + (mm_hash & ((1ull << 30) - 1)));
}
