/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_corpus.c - writes the seed corpus of the segment fuzzer into the
 * directory given (tests/corpus/ is what it wrote; `make fuzz-corpus` runs
 * it again): small real pools made by the library, one per eviction
 * backend, with cached, held, duplicate and MUTABLE blocks, each saved as
 * it is and damaged in the ways a buggy peer or a bad disk damages one:
 * random tail, random slot array, a cycle in a list, out-of-range links,
 * bad lineage nodes, bad process entries, a rewritten config, a truncated
 * file. Deterministic (fixed seeds), so the corpus only changes when the
 * layout does.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/pool.h"

#define BS 4

static const char *outdir;

static void die(const char *what, int r)
{
	fprintf(stderr, "fuzz_corpus: %s: %s\n", what, kvbm_strerror(r));
	exit(1);
}

static void save(const char *name, const uint8_t *img, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(img, 1, len, f) != len || fclose(f) != 0)
		die(path, -1);
}

static void hashes(uint32_t start, size_t n, struct kvbm_plh *out)
{
	uint32_t tok[64 * BS];
	struct kvbm_block_hashes h[64];

	for (size_t i = 0; i < n * BS; i++)
		tok[i] = start + (uint32_t)i;
	if (kvbm_hash_tokens(tok, n * BS, BS, 42, h, n) != (long)n)
		die("hash", -1);
	for (size_t i = 0; i < n; i++)
		out[i] = h[i].plh;
}

static void reg(struct kvbm_pool *p, const struct kvbm_plh *h, uint32_t n, struct kvbm_block *b)
{
	int r = kvbm_allocate_blocks(p, n, b, NULL, NULL);

	if (r < 0)
		die("allocate", r);
	for (uint32_t i = 0; i < n; i++)
		if ((r = kvbm_stage_block(p, &b[i], h[i], BS)) < 0)
			die("stage", r);
	if ((r = kvbm_register_blocks(p, b, n)) < 0)
		die("register", r);
}

/*
 * A 16-block pool with @backend: chains of cached blocks released parent
 * first (ghosts in a lineage forest), two held blocks, a duplicate and a
 * MUTABLE block, and a pool-held pin on three cached blocks; the image is
 * taken while attached, so it has a live-looking process entry and holds. Returns the image (malloc'd) and its size.
 */
static uint8_t *make_pool(enum kvbm_backend backend, size_t *len, struct kvbm_shm_header *hdr)
{
	struct kvbm_config cfg;
	struct kvbm_pool *p;
	struct kvbm_plh h[10], x[4];
	struct kvbm_block b[10], y[4], d, m;
	int r;

	kvbm_config_init(&cfg);
	cfg.block_count = 16;
	cfg.block_size = BS;
	cfg.max_procs = 2;
	cfg.backend = backend;
	kvbm_pool_destroy("corpus", KVBM_DESTROY_FORCE);
	r = kvbm_pool_open("corpus", &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &p);
	if (r < 0)
		die("create", r);
	hashes(1, 10, h);
	hashes(900, 4, x);
	reg(p, h, 10, b);
	reg(p, x, 4, y);
	reg(p, h + 2, 1, &d); /* a duplicate of h[2], held */
	if ((r = kvbm_allocate_blocks(p, 1, &m, NULL, NULL)) < 0)
		die("allocate", r);
	/* parents first: their children end up under ghosts */
	if ((r = kvbm_release_blocks(p, b, 9)) < 0 || (r = kvbm_release_blocks(p, y + 2, 2)) < 0)
		die("release", r);
	if ((r = (int)kvbm_pin_prefix(p, h, 3, 3600000, NULL)) < 0)
		die("pin", r);
	if (kvbm_pool_check(p, KVBM_CHECK_LOCK, NULL, NULL) != 0)
		die("check", -1);
	*len = p->seg.size;
	uint8_t *img = malloc(*len);
	if (!img)
		die("malloc", -1);
	memcpy(img, p->seg.base, *len);
	memcpy(hdr, img, sizeof(*hdr));
	/* the held blocks stay held in the image: close without releasing */
	kvbm_pool_close(p);
	kvbm_pool_destroy("corpus", KVBM_DESTROY_FORCE);
	return img;
}

static void scribble(uint8_t *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(rand_r(&seed) >> 5);
}

static struct kvbm_shm_slot *slot_at(uint8_t *img, const struct kvbm_shm_header *h, uint32_t s)
{
	return (struct kvbm_shm_slot *)(img + h->regions[KVBM_REGION_SLOTS].offset) + s;
}

static struct kvbm_shm_control *ctl_at(uint8_t *img, const struct kvbm_shm_header *h)
{
	return (struct kvbm_shm_control *)(img + h->regions[KVBM_REGION_CONTROL].offset);
}

/* Writes the image and its damaged variants under @tag: all of them when
 * @full, else the few that reach what is particular to @backend (the fuzzer
 * finds the rest from there; the corpus stays small). */
static void variants(const char *tag, enum kvbm_backend backend, int full)
{
	struct kvbm_shm_header h;
	size_t len;
	uint8_t *base = make_pool(backend, &len, &h), *img = malloc(len);
	const struct kvbm_shm_region *rg = h.regions;
	char name[128];
	struct kvbm_evict_geom g;

	if (!img)
		die("malloc", -1);
	kvbm_evict_geometry(&h.config, &g);
#define VARIANT(what, code) VARIANT_IF(1, what, code)
#define VARIANT_IF(cond, what, code)                                                           \
	do {                                                                                   \
		if (!(cond))                                                                   \
			break;                                                                 \
		memcpy(img, base, len);                                                        \
		code;                                                                          \
		snprintf(name, sizeof(name), "%s-%s", tag, what);                              \
		save(name, img, len);                                                          \
	} while (0)
	VARIANT("clean", (void)0);
	VARIANT("random-tail", scribble(img + rg[KVBM_REGION_EVICT].offset,
					len - rg[KVBM_REGION_EVICT].offset, 1));
	VARIANT("random-slots", scribble(img + rg[KVBM_REGION_SLOTS].offset,
					 rg[KVBM_REGION_SLOTS].size, 2));
	VARIANT_IF(full, "random-registry", scribble(img + rg[KVBM_REGION_REGISTRY].offset,
					    rg[KVBM_REGION_REGISTRY].size, 3));
	VARIANT_IF(full, "random-holders", scribble(img + rg[KVBM_REGION_HOLDERS].offset,
					   rg[KVBM_REGION_HOLDERS].size, 4));
	VARIANT_IF(full, "random-procs", scribble(img + rg[KVBM_REGION_PROCS].offset,
					 rg[KVBM_REGION_PROCS].size, 5));
	VARIANT_IF(full, "metrics-overflow", {
		struct kvbm_shm_metrics *m = (void *)(img + rg[KVBM_REGION_METRICS].offset);
		for (uint32_t i = 0; i < h.config.max_procs; i++)
			for (int k = 0; k < 24; k++)
				m[i].v[k] = INT64_MAX - k;
	});
	VARIANT_IF(full, "random-control",
		scribble(img + rg[KVBM_REGION_CONTROL].offset + KVBM_CACHELINE,
			 rg[KVBM_REGION_CONTROL].size - KVBM_CACHELINE, 6));
	/* what tests/corpus/fuzz-available-overflow (a fuzzer find, of an
	 * older ABI) reached: free count + inactive count past INT64_MAX */
	VARIANT_IF(full, "inactive-overflow", ctl_at(img, &h)->inactive = INT64_MAX);
	VARIANT("free-cycle", {
		struct kvbm_shm_control *c = ctl_at(img, &h);
		if (c->free_head)
			slot_at(img, &h, c->free_head - 1)->next = c->free_head;
	});
	VARIANT("list-cycle", {
		struct kvbm_shm_control *c = ctl_at(img, &h);
		if (c->lists[0].head)
			slot_at(img, &h, c->lists[0].head - 1)->next = c->lists[0].head;
		c->lists[1].head = 3;
	});
	VARIANT_IF(full, "links-out-of-range", {
		struct kvbm_shm_control *c = ctl_at(img, &h);
		c->free_head = 0xfffffff0u;
		c->lists[0].tail = 9999;
		for (uint32_t s = 0; s < h.config.block_count; s++) {
			slot_at(img, &h, s)->primary = 0x7fffffffu + s;
			slot_at(img, &h, s)->prev = 17 + s;
		}
		slot_at(img, &h, 3)->next = 0xffffffffu;
	});
	VARIANT_IF(full, "bad-states", {
		for (uint32_t s = 0; s < h.config.block_count; s++)
			slot_at(img, &h, s)->state ^= (uint64_t)(s * 0x1111u) | 0xffull << 8;
	});
	if (g.nodes) {
		uint8_t *ev = img + rg[KVBM_REGION_EVICT].offset;
		VARIANT("lineage-ghost-flags", {
			struct kvbm_shm_lnode *ln = (void *)(ev + g.nodes_off);
			for (uint32_t n = 0; n < g.nodes; n++)
				ln[n].pos_fl ^= KVBM_LN_GHOST | KVBM_LN_USED;
		});
		VARIANT("lineage-chain-cycle", {
			uint32_t *heads = (void *)(ev + g.heads_off);
			struct kvbm_shm_lnode *ln = (void *)(ev + g.nodes_off);
			for (uint32_t b = 0; b < g.buckets; b++)
				heads[b] = 1 + b % 3;
			ln[0].hnext = 2;
			ln[1].hnext = 1;
			ln[2].hnext = g.nodes + 7;
		});
		VARIANT("lineage-back-links", {
			/* every node's back link a lie: past the nodes,
			 * itself, or its neighbour, whose hnext names
			 * another (an unlink must not write through it) */
			struct kvbm_shm_lnode *ln = (void *)(ev + g.nodes_off);
			for (uint32_t n = 0; n < g.nodes; n++)
				ln[n].hprev = n % 3 == 0 ? g.nodes + 1 + n : n % 3 == 1 ? n + 1 : n;
		});
		VARIANT("lineage-heap", {
			struct kvbm_shm_evict *e = (void *)ev;
			struct kvbm_shm_hent *heap = (void *)(ev + g.heap_off);
			e->nheap = 0xffffffffu;
			e->ghost_free = 3;
			for (uint32_t i = 0; i < h.config.block_count; i++)
				heap[i].node = i * 0x10001u;
		});
		VARIANT("lineage-run-lies", {
			/* every node marked as in Tick's run, every tick
			 * backwards: the run out of order, heap leaves
			 * claiming it */
			struct kvbm_shm_lnode *ln = (void *)(ev + g.nodes_off);
			for (uint32_t n = 0; n < g.nodes; n++)
				ln[n].hpos = KVBM_LN_RUN;
			for (uint32_t s = 0; s < h.config.block_count; s++)
				slot_at(img, &h, s)->tick = (uint64_t)(h.config.block_count - s)
							    << KVBM_TICK_SHIFT;
		});
		VARIANT("lineage-counts", {
			struct kvbm_shm_lnode *ln = (void *)(ev + g.nodes_off);
			for (uint32_t n = 0; n < g.nodes; n++)
				ln[n].nchild += n % 3;
			((struct kvbm_shm_evict *)ev)->lin_buckets = 0x80000000u;
		});
	}
	VARIANT_IF(full, "random-pins", scribble(img + rg[KVBM_REGION_PINS].offset,
						 rg[KVBM_REGION_PINS].size, 7));
	VARIANT("pins-words-bits-apart", {
		/* a deadline on every slot, the POOL bit on none, counts past
		 * any bound, and a due tick that fires at once */
		struct kvbm_shm_pins *ph = (void *)(img + rg[KVBM_REGION_PINS].offset);
		uint64_t *d = (uint64_t *)(ph + 1);
		for (uint32_t s = 0; s < h.config.block_count; s++) {
			d[s] = 1000ull * s + (s & 1);
			slot_at(img, &h, s)->holders &= ~KVBM_HOLD_POOL;
		}
		ph->blocks = 0xfffffff0u;
		ph->tips = 7;
		ph->due = 0;
		ph->next_ns = 0;
	});
	VARIANT("pins-heap-lies", {
		/* the expiry heap full of entries naming slots past the pool
		 * and one slot many times, its places all 0, a due top */
		struct kvbm_shm_pins *ph = (void *)(img + rg[KVBM_REGION_PINS].offset);
		struct kvbm_shm_pin_ent *e =
			(void *)((uint8_t *)ph + kvbm_pins_heap_off(&h.config));
		uint32_t cap = kvbm_pin_cap(&h.config);
		for (uint32_t i = 0; i < cap; i++) {
			e[i].when = i;
			e[i].slot = i & 1 ? 3 : ~i;
		}
		memset((uint8_t *)ph + kvbm_pins_pos_off(&h.config), 0, 4ull * h.config.block_count);
		ph->heap_len = cap;
		ph->due = 0;
		ph->next_ns = 0;
	});
	VARIANT_IF(full, "config-rewritten", ((struct kvbm_shm_header *)img)->config.block_count = 4096);
	VARIANT_IF(full, "regions-rewritten",
		((struct kvbm_shm_header *)img)->regions[KVBM_REGION_SLOTS].offset += 64);
	memcpy(img, base, len);
	snprintf(name, sizeof(name), "%s-truncated", tag);
	save(name, img, len / 2);
#undef VARIANT
#undef VARIANT_IF
	free(img);
	free(base);
}

int main(int argc, char **argv)
{
	char dir[] = "/dev/shm/kvbm-corpus-XXXXXX";

	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_corpus OUTDIR\n");
		return 64;
	}
	outdir = argv[1];
	if (!mkdtemp(dir))
		die("mkdtemp", -1);
	setenv("KVBM_SHM_DIR", dir, 1);
	variants("lineage", KVBM_BACKEND_LINEAGE, 1);
	variants("lineage-fifo", KVBM_BACKEND_LINEAGE_FIFO, 0);
	variants("lfru", KVBM_BACKEND_LFRU, 0);
	variants("lru", KVBM_BACKEND_LRU, 1);
	variants("mlru", KVBM_BACKEND_MULTI_LRU, 0);
	rmdir(dir);
	return 0;
}
