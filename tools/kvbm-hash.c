/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-hash - prints the hashes of each complete block of a token sequence:
 * position, block hash, sequence hash, positional lineage hash (32 hex
 * digits, the 16-byte big-endian wire form) and the router's 64-bit hash.
 *
 *   kvbm-hash [--block-size B] [--salt S] [--json] [TOKEN...]
 *
 * Tokens come from the arguments, or from stdin (separated by white space
 * or commas) when there are none. Exit: 0 done, 1 bad input, 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "kvbm.h"
#include "version.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: kvbm-hash [--block-size B] [--salt S] [--json] [TOKEN...]\n"
		   "  --block-size B  tokens per block, a power of two 1..1024 (16)\n"
		   "  --salt S        64-bit salt seeding the block hashes (0)\n"
		   "  --json          one JSON document\n"
		   "Tokens (u32) come from the arguments, or stdin when there are none.\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-' || v > max)
		return -1;
	*out = v;
	return 0;
}

struct vec {
	uint32_t *v;
	size_t n, cap;
};

static int push(struct vec *t, const char *s)
{
	uint64_t v;

	if (parse_u64(s, UINT32_MAX, &v) < 0) {
		fprintf(stderr, "kvbm-hash: not a token id (u32): '%s'\n", s);
		return -1;
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 1024;
		uint32_t *nv = realloc(t->v, t->cap * sizeof(*nv));
		if (!nv)
			return -1;
		t->v = nv;
	}
	t->v[t->n++] = (uint32_t)v;
	return 0;
}

static int read_stdin(struct vec *t)
{
	char word[32];
	size_t len = 0;
	int c;

	while ((c = getchar()) != EOF) {
		if (c == ' ' || c == '\n' || c == '\t' || c == ',' || c == '\r' || c == '[' ||
		    c == ']') {
			if (len) {
				word[len] = '\0';
				if (push(t, word) < 0)
					return -1;
				len = 0;
			}
			continue;
		}
		if (len == sizeof(word) - 1) {
			fprintf(stderr, "kvbm-hash: token too long\n");
			return -1;
		}
		word[len++] = (char)c;
	}
	if (len) {
		word[len] = '\0';
		return push(t, word);
	}
	return 0;
}

static void plh_hex(struct kvbm_plh h, char out[33])
{
	snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, h.hi, h.lo);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"block-size", required_argument, NULL, 'b'},
		{"salt", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	uint64_t bs = 16, salt = 0;
	struct vec t = {0};
	int json = 0, c;

	while ((c = getopt_long(argc, argv, "b:s:jhV", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			if (parse_u64(optarg, 1024, &bs) < 0 || bs == 0 || (bs & (bs - 1))) {
				fprintf(stderr, "kvbm-hash: --block-size: a power of two 1..1024\n");
				return 2;
			}
			break;
		case 's':
			if (parse_u64(optarg, UINT64_MAX, &salt) < 0) {
				fprintf(stderr, "kvbm-hash: --salt: a 64-bit number\n");
				return 2;
			}
			break;
		case 'j':
			json = 1;
			break;
		case 'V':
			return tool_version("kvbm-hash");
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	for (int i = optind; i < argc; i++)
		if (push(&t, argv[i]) < 0)
			return 1;
	if (optind == argc && read_stdin(&t) < 0)
		return 1;

	long n = kvbm_hash_tokens(t.v, t.n, (uint32_t)bs, salt, NULL, 0);
	if (n < 0) {
		fprintf(stderr, "kvbm-hash: %s\n", kvbm_strerror((int)n));
		return 1;
	}
	if (n == 0) { /* silence would read as "hashed, nothing to show" */
		fprintf(stderr, "kvbm-hash: %zu token%s make no complete block of %u (a partial "
				"block is not hashed)\n", t.n, t.n == 1 ? "" : "s", (unsigned)bs);
		free(t.v);
		return 1;
	}
	struct kvbm_block_hashes *b = calloc((size_t)n + 1, sizeof(*b));
	if (!b)
		return 1;
	kvbm_hash_tokens(t.v, t.n, (uint32_t)bs, salt, b, (size_t)n);

	struct json j;
	char hex[33];
	if (json) {
		json_init(&j, stdout);
		json_obj_begin(&j, NULL);
		json_u64(&j, "block_size", bs);
		json_hex(&j, "salt", salt);
		json_u64(&j, "tokens", t.n);
		json_arr_begin(&j, "blocks");
	} else if (n) {
		printf("%-8s %-18s %-18s %-32s %s\n", "position", "block_hash", "sequence_hash",
		       "plh", "router_hash");
	}
	for (long i = 0; i < n; i++) {
		plh_hex(b[i].plh, hex);
		if (!json) {
			printf("%-8ld 0x%016" PRIx64 " 0x%016" PRIx64 " %s 0x%016" PRIx64 "\n", i,
			       b[i].block_hash, b[i].seq_hash, hex,
			       kvbm_plh_router_hash(b[i].plh));
			continue;
		}
		json_obj_begin(&j, NULL);
		json_u64(&j, "position", (uint64_t)i);
		json_hex(&j, "block_hash", b[i].block_hash);
		json_hex(&j, "sequence_hash", b[i].seq_hash);
		json_str(&j, "plh", hex);
		json_hex(&j, "router_hash", kvbm_plh_router_hash(b[i].plh));
		json_obj_end(&j);
	}
	if (json) {
		json_arr_end(&j);
		json_obj_end(&j);
		json_finish(&j);
	}
	free(b);
	free(t.v);
	return 0;
}
