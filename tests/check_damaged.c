/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_damaged.c - damaged and hostile segment bytes (issue 14): the
 * checker and kvbm-shm-dump report them and never crash, hang or read past
 * the mapping; a file truncated under an attached process is reported, not
 * a SIGBUS; and what is legal is not called a violation (a primary kept
 * alive by a live duplicate, a dead holder nobody has reaped yet).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/pool.h"
#include "../shm/failpoint.h"

#define BS 4

/* A lineage pool of 64 blocks with chains of cached blocks (a forest with
 * ghosts and leaves), a duplicate, left with nobody attached. */
static void cached_pool(const char *name, enum kvbm_backend backend)
{
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[24], x[8];
	struct kvbm_block b[24], d, y[8];

	cfg.block_count = 64;
	cfg.max_procs = 4;
	cfg.backend = backend;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, 24, BS, h);
	t_seq_hashes(500, 8, BS, x);
	t_register(p, h, 24, b);
	t_register(p, h + 3, 1, &d);
	t_register(p, x, 8, y);
	t_release(p, &d, 1);
	/* parents first out: their children hang under ghosts */
	t_release(p, b, 24);
	t_release(p, y + 4, 4);
	ck_assert_int_eq(t_check(p), 0);
	kvbm_pool_close(p);
}

/* Reads [off, off + len) of the pool file into @buf. */
static void peek(const char *name, off_t off, void *buf, size_t len)
{
	char path[512];
	int fd = open(t_path(name, path, sizeof(path)), O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, buf, len, off), (ssize_t)len);
	close(fd);
}

static struct kvbm_shm_header read_header(const char *name)
{
	struct kvbm_shm_header hdr;

	peek(name, 0, &hdr, sizeof(hdr));
	return hdr;
}

/* Overwrites [off, off + len) of the pool file with bytes from @seed. */
static void scribble(const char *name, uint64_t off, uint64_t len, unsigned seed)
{
	uint8_t *buf = malloc(len);

	ck_assert_ptr_nonnull(buf);
	for (uint64_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(rand_r(&seed) >> 7);
	t_patch(name, (off_t)off, buf, len);
	free(buf);
}

/* Every mode of the tool ends with a verdict, never a signal. */
static void dump_survives(const char *name, int must_find)
{
	static const char *const modes[][2] = {
		{"--check", NULL}, {"--json", NULL}, {"--summary", NULL}, {NULL, NULL}};
	char out[65536];

	for (int m = 0; m < 4; m++) {
		int rc = modes[m][0] ? t_run_tool(out, sizeof(out), "kvbm-shm-dump", modes[m][0],
						  name, (char *)NULL)
				     : t_run_tool(out, sizeof(out), "kvbm-shm-dump", name, (char *)NULL);
		ck_assert_msg(rc == 0 || rc == 1, "kvbm-shm-dump %s: exit %d\n%s",
			      modes[m][0] ? modes[m][0] : "", rc, out);
		if (m == 0 && must_find)
			ck_assert_msg(rc == 1 && strstr(out, "violation"), "--check: exit %d\n%s", rc,
				      out);
	}
}

/* A child that may hang ends alone after @s seconds: Check's own SIGALRM
 * handler, inherited, would kill the whole process group. */
static void child_alarm(unsigned s)
{
	signal(SIGALRM, SIG_DFL);
	alarm(s);
}

/* The attacher @pid exited 0 (a hang shows as 142); the pool goes. */
static void attacher_done(pid_t pid, const char *name)
{
	int st = t_wait(pid);
	ck_assert_msg(st == 0, "attacher ended with %d (128 + signal; 142 = hung)", st);
	ck_assert_int_eq(kvbm_pool_destroy(name, KVBM_DESTROY_FORCE), 0);
}

/* Runs 0-23: random bytes over the eviction region (the pool's tail),
 * then over the slot array, then over everything after the header, with
 * each lineage backend, LRU and each queued backend (queues, forest and
 * ghost table). */
#define NDAMAGED_BACKENDS 9
START_TEST(test_dump_survives_random_bytes)
{
	static const enum kvbm_backend backends[NDAMAGED_BACKENDS] = {
		KVBM_BACKEND_LINEAGE, KVBM_BACKEND_LINEAGE_FIFO, KVBM_BACKEND_LFRU,
		KVBM_BACKEND_LRU,     KVBM_BACKEND_S3FIFO,	 KVBM_BACKEND_ARC,
		KVBM_BACKEND_WTINYLFU, KVBM_BACKEND_LECAR, KVBM_BACKEND_ADAPT};
	T_NAME(name);

	cached_pool(name, backends[_i % NDAMAGED_BACKENDS]);
	struct kvbm_shm_header hdr = read_header(name);
	const struct kvbm_shm_region *r = hdr.regions;
	for (unsigned seed = 1; seed <= 6; seed++) {
		uint64_t off, len;
		switch (_i / NDAMAGED_BACKENDS) {
		case 0:
			off = r[KVBM_REGION_EVICT].offset;
			len = hdr.segment_size - off;
			break;
		case 1:
			off = r[KVBM_REGION_SLOTS].offset;
			len = r[KVBM_REGION_SLOTS].size;
			break;
		default:
			off = sizeof(hdr);
			len = hdr.segment_size - off;
		}
		scribble(name, off, len, seed * 7919u + (unsigned)_i);
		dump_survives(name, 1);
	}
	ck_assert_int_eq(kvbm_pool_destroy(name, KVBM_DESTROY_FORCE), 0);
}
END_TEST

/* A lineage hash chain that loops and a node that names a ghost outside
 * the ghost range: reported, no hang, no read past the arrays. */
START_TEST(test_checker_bounds_lineage_links)
{
	T_NAME(name);
	char out[65536];

	cached_pool(name, KVBM_BACKEND_LINEAGE);
	struct kvbm_shm_header hdr = read_header(name);
	struct kvbm_evict_geom g;
	kvbm_evict_geometry(&hdr.config, &g);
	uint64_t ev = hdr.regions[KVBM_REGION_EVICT].offset;
	/* slot 0's node: a ghost (which reads the pfrag array by its index
	 * minus the slot count) linked under its parent */
	struct kvbm_shm_lnode nd = {.frag = 1, .pos_fl = 5 | KVBM_LN_USED | KVBM_LN_GHOST | KVBM_LN_LINKED};
	t_patch(name, (off_t)(ev + g.nodes_off), &nd, sizeof(nd));
	int rc = t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", name, (char *)NULL);
	ck_assert_msg(rc == 1 && strstr(out, "lineage"), "exit %d\n%s", rc, out);
	/* every hash head names node 1, whose chain link names itself */
	uint32_t one = 1;
	for (uint32_t b = 0; b < g.buckets; b++)
		t_patch(name, (off_t)(ev + g.heads_off + 4 * b), &one, 4);
	rc = t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", name, (char *)NULL);
	ck_assert_msg(rc == 1 && strstr(out, "lineage"), "exit %d\n%s", rc, out);
	dump_survives(name, 1);
	ck_assert_int_eq(kvbm_pool_destroy(name, KVBM_DESTROY_FORCE), 0);
}
END_TEST

/* The free list and an eviction list that loop: a cycle is corruption. */
START_TEST(test_checker_reports_list_cycles)
{
	T_NAME(name);
	char out[65536];

	cached_pool(name, KVBM_BACKEND_LRU);
	struct kvbm_shm_header hdr = read_header(name);
	uint64_t slots = hdr.regions[KVBM_REGION_SLOTS].offset;
	struct kvbm_pool *p = NULL;
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	uint32_t head = p->seg.ctl->free_head, lru = p->seg.ctl->lists[0].head;
	ck_assert_uint_ne(head, 0);
	ck_assert_uint_ne(lru, 0);
	kvbm_pool_close(p);
	/* each list's first entry links back to itself */
	t_patch(name, (off_t)(slots + (head - 1) * 64 + offsetof(struct kvbm_shm_slot, next)),
		&head, 4);
	t_patch(name, (off_t)(slots + (lru - 1) * 64 + offsetof(struct kvbm_shm_slot, next)),
		&lru, 4);
	int rc = t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", name, (char *)NULL);
	ck_assert_msg(rc == 1 && strstr(out, "free list") && strstr(out, "eviction list"),
		      "exit %d\n%s", rc, out);
	ck_assert_int_eq(kvbm_pool_destroy(name, KVBM_DESTROY_FORCE), 0);
}
END_TEST

/* Damage to the eviction order, as a peer could write it. */
static void damage_order(const char *name, int kind)
{
	struct kvbm_shm_header hdr = read_header(name);
	struct kvbm_evict_geom g;
	uint64_t ev = hdr.regions[KVBM_REGION_EVICT].offset;
	uint64_t slots = hdr.regions[KVBM_REGION_SLOTS].offset;
	uint64_t ctl = hdr.regions[KVBM_REGION_CONTROL].offset;
	struct kvbm_shm_control c;
	char path[512];
	int fd = open(t_path(name, path, sizeof(path)), O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &c, sizeof(c), (off_t)ctl), (ssize_t)sizeof(c));
	close(fd);
	kvbm_evict_geometry(&hdr.config, &g);
	if (kind == 0) {
		/* the LRU list's first entry links back to itself */
		uint32_t head = c.lists[0].head;
		ck_assert_uint_ne(head, 0);
		t_patch(name, (off_t)(slots + (head - 1) * 64 + offsetof(struct kvbm_shm_slot, next)),
			&head, 4);
	} else if (kind == 1) {
		/* every lineage hash chain is a loop through nodes 0 and 1 */
		uint32_t one = 1, two = 2;
		for (uint32_t b = 0; b < g.buckets; b++)
			t_patch(name, (off_t)(ev + g.heads_off + 4 * b), &one, 4);
		t_patch(name, (off_t)(ev + g.nodes_off + offsetof(struct kvbm_shm_lnode, hnext)), &two, 4);
		t_patch(name, (off_t)(ev + g.nodes_off + sizeof(struct kvbm_shm_lnode) + offsetof(struct kvbm_shm_lnode, hnext)),
			&one, 4);
	} else if (kind == 2) {
		/* every real node flagged a ghost: ghosts index their parent
		 * fragments by node - slots */
		for (uint32_t n = 0; n < hdr.config.block_count; n++) {
			uint32_t fl;
			off_t at = (off_t)(ev + g.nodes_off + sizeof(struct kvbm_shm_lnode) * n + offsetof(struct kvbm_shm_lnode, pos_fl));
			fd = open(path, O_RDONLY);
			ck_assert_int_eq(pread(fd, &fl, 4, at), 4);
			close(fd);
			if (fl & KVBM_LN_USED) {
				fl |= KVBM_LN_GHOST | KVBM_LN_LINKED;
				t_patch(name, at, &fl, 4);
			}
		}
	} else {
		/* a leaf heap longer than the array, of nodes past the slots */
		uint32_t big = 0xfffffff0u;
		t_patch(name, (off_t)(ev + offsetof(struct kvbm_shm_evict, nheap)), &big, 4);
		for (uint32_t i = 0; i < hdr.config.block_count; i++) {
			uint32_t node = 0x10000u + i * 977u;
			t_patch(name, (off_t)(ev + g.heap_off + 16 * i + offsetof(struct kvbm_shm_hent, node)),
				&node, 4);
		}
		uint32_t hpos = 0x7ffffff0u;
		for (uint32_t n = 0; n < hdr.config.block_count; n++)
			t_patch(name, (off_t)(ev + g.nodes_off + sizeof(struct kvbm_shm_lnode) * n + offsetof(struct kvbm_shm_lnode, hpos)),
				&hpos, 4);
	}
}

/* A process attaches to a pool whose eviction order a peer damaged, and
 * allocates every block (evicting through the damage) and frees them: it
 * gets blocks or an error, never a crash, a wild write or an endless walk
 * under the mutex. Runs 0-3: an LRU list that loops, lineage hash chains
 * that loop, real lineage nodes flagged ghosts, a damaged leaf heap. */
START_TEST(test_library_survives_damaged_eviction_order)
{
	T_NAME(name);

	cached_pool(name, _i == 0 ? KVBM_BACKEND_LRU : KVBM_BACKEND_LINEAGE);
	damage_order(name, _i);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = NULL;
		struct kvbm_block b[64];
		child_alarm(20);
		if (kvbm_pool_open(name, NULL, 0, &q) != 0)
			_exit(0);
		for (int round = 0; round < 4; round++) {
			uint32_t n = round == 3 ? 64 : 12;
			if (kvbm_allocate_blocks(q, n, b, NULL, NULL) == 0)
				(void)kvbm_release_blocks(q, b, n);
		}
		kvbm_pool_close(q);
		_exit(0);
	}
	attacher_done(pid, name);
}
END_TEST

/*
 * A peer scribbles over the pins' expiry heap (lib/pins.c). Runs 0-4:
 * random bytes over the heap, its length and the slots' places; a length
 * past the heap's room; entries naming slots past the pool; every entry
 * naming one slot; a heap out of order. kvbm-shm-dump --check reports
 * each and survives; a process then pins, unpins, lists and expires
 * through the damage without a crash, a hang or a write outside the
 * region, and where the damage shows at the heap's top (runs 0-3) its
 * lock repairs the heap from the deadline words: the pool checks clean
 * and the short pins end on time.
 */
START_TEST(test_library_survives_damaged_pin_heap)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[16];
	struct kvbm_block b[16];

	cfg.block_count = 64;
	cfg.pin_share = 50;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(40, 16, BS, h);
	t_register(p, h, 16, b);
	t_release(p, b, 16);
	/* 8 short pins, then 8 long ones, deadlines all different */
	for (uint32_t i = 0; i < 16; i++)
		ck_assert_int_eq(kvbm_pin_prefix(p, h + i, 1, i < 8 ? 100 + 10 * i : 60000 + i, NULL),
				 1);
	ck_assert_int_eq(t_check(p), 0);
	kvbm_pool_close(p);

	struct kvbm_shm_header hdr = read_header(name);
	uint64_t reg = hdr.regions[KVBM_REGION_PINS].offset;
	uint64_t heap = reg + kvbm_pins_heap_off(&hdr.config);
	uint64_t pos = reg + kvbm_pins_pos_off(&hdr.config);
	uint32_t cap = kvbm_pin_cap(&hdr.config), len = 16;
	struct kvbm_shm_pin_ent e[32];
	switch (_i) {
	case 0:
		scribble(name, heap, kvbm_pins_region_size(&hdr.config) - kvbm_pins_heap_off(&hdr.config),
			 4242);
		len = 0x9e3779b9u;
		break;
	case 1:
		len = UINT32_MAX;
		break;
	case 2:
	case 3:
		for (uint32_t i = 0; i < cap; i++)
			e[i] = (struct kvbm_shm_pin_ent){.when = i, .slot = _i == 2 ? 64 + i : 5};
		t_patch(name, (off_t)heap, e, sizeof(e[0]) * cap);
		len = cap;
		break;
	default:
		/* the top swapped with the last entry: a late top, an early leaf */
		peek(name, (off_t)heap, e, sizeof(e[0]) * 16);
		struct kvbm_shm_pin_ent t = e[0];
		e[0] = e[15];
		e[15] = t;
		t_patch(name, (off_t)heap, e, sizeof(e[0]) * 16);
		t_patch(name, (off_t)(pos + 4ull * e[0].slot), &(uint32_t){0}, 4);
		t_patch(name, (off_t)(pos + 4ull * e[15].slot), &(uint32_t){15}, 4);
	}
	t_patch(name, (off_t)(reg + offsetof(struct kvbm_shm_pins, heap_len)), &len, 4);
	char out[65536];
	int rc = t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", name, (char *)NULL);
	ck_assert_msg(rc == 1 && strstr(out, "expiry heap"), "exit %d\n%s", rc, out);
	dump_survives(name, 1);

	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	struct kvbm_pins_info info;
	struct kvbm_pinned l[32];
	ck_assert_int_eq(kvbm_pins_info(p, &info), 0);
	ck_assert_int_ge(kvbm_pins_list(p, l, 32), 0);
	ck_assert_int_ge(kvbm_unpin_prefix(p, h + 15, 1), 0);
	ck_assert_int_ge(kvbm_pin_prefix(p, h + 15, 1, 60000, NULL), 0);
	usleep(250000);
	ck_assert_int_ge(kvbm_pins_expire(p), 0);
	ck_assert_int_ge(kvbm_pins_list(p, l, 32), 0);
	if (_i < 4) {
		ck_assert_int_eq(t_check(p), 0);
		/* every short pin ended, every long one is there */
		ck_assert_int_eq(kvbm_pins_info(p, &info), 0);
		ck_assert_uint_eq(info.blocks, 8);
		ck_assert_uint_eq(info.next_expiry_ms > 59000, 1);
	}
	kvbm_pool_close(p);
	ck_assert_int_eq(kvbm_pool_destroy(name, KVBM_DESTROY_FORCE), 0);
}
END_TEST

static char reports[8192];
static void collect(const char *msg, void *arg)
{
	(void)arg;
	strncat(reports, msg, sizeof(reports) - strlen(reports) - 2);
	strcat(reports, "\n");
}

/* A peer truncates the file under an attached process: the checker reads
 * nothing past the end (SIGBUS) and says what happened. */
START_TEST(test_checker_reports_truncated_file)
{
	T_NAME(name);
	char path[512];
	struct kvbm_pool *p = t_pool(name, 256);
	size_t size = p->seg.size;
	int fd = open(t_path(name, path, sizeof(path)), O_RDWR);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 3 * 4096), 0);
	reports[0] = 0;
	long n = kvbm_pool_check(p, 0, collect, NULL);
	ck_assert_msg(n > 0 && strstr(reports, "truncated"), "%ld: %s", n, reports);
	/* the tool refuses the file before it maps it */
	char out[4096];
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", name, (char *)NULL),
			 1);
	ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
	close(fd);
	kvbm_pool_close(p);
	ck_assert_int_eq(kvbm_pool_destroy(name, KVBM_DESTROY_FORCE), 0);
}
END_TEST

/* A primary whose holders let go while a duplicate of it lives stays
 * active (settle leaves it alone): not a violation, and not inactive. */
START_TEST(test_primary_kept_alive_by_duplicate)
{
	T_NAME(name);
	struct kvbm_plh h;
	struct kvbm_block a, d;
	char out[8192];

	t_seq_hashes(1, 1, BS, &h);
	struct kvbm_pool *p = t_pool(name, 16);
	t_register(p, &h, 1, &a);
	t_register(p, &h, 1, &d);
	t_release(p, &a, 1);
	ck_assert_int_eq(t_check(p), 0);
	ck_assert_int_eq(t_metrics(p).inactive_pool_size, 0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--summary", name, (char *)NULL),
			 0);
	ck_assert_msg(strstr(out, "16: 14 free, 0 inactive, 2 in use"), "%s", out);
	ck_assert_msg(strstr(out, "1 registered held, 1 duplicate"), "%s", out);
	t_release(p, &d, 1);
	t_done(p, name);
}
END_TEST

/* A holder that died a moment ago is legal until the next reap: only a
 * quiescent check (nobody else runs, the dead reaped first) may call its
 * holds a violation. */
START_TEST(test_dead_unreaped_holder_is_legal_while_others_run)
{
	T_NAME(name);
	struct kvbm_plh h[4];
	struct kvbm_block b[4];

	t_seq_hashes(1, 4, BS, h);
	struct kvbm_pool *p = t_pool(name, 16);
	t_register(p, h, 4, b);
	t_release(p, b, 4);
	int fd[2];
	ck_assert_int_eq(pipe(fd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = NULL;
		struct kvbm_block m[4];
		if (kvbm_pool_open(name, NULL, 0, &q) != 0 || kvbm_match_blocks(q, h, 4, m) != 4)
			_exit(70);
		t_send(fd[1], "x", 1);
		pause();
		_exit(71);
	}
	char c;
	ck_assert_int_eq(t_recv(fd[0], &c, 1), 0);
	kill(pid, SIGKILL);
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	reports[0] = 0;
	long n = kvbm_pool_check(p, 0, collect, NULL);
	ck_assert_msg(n == 0, "lock-free check while others run: %s", reports);
	/* the quiescent check reaps first, and then all is well */
	ck_assert_int_eq(t_check(p), 0);
	t_done(p, name);
}
END_TEST

/* A peer wrote a later slot's key over with an earlier primary's: two
 * primaries of one key. The recovery that follows a death under the mutex
 * must end with the pool repaired, never spin: the index
 * rebuild once took the other primary's slot for its loop counter and went
 * back to it forever. */
START_TEST(test_recovery_ends_with_two_primaries_of_one_key)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[2], g[2];
	struct kvbm_block b[2];

	cfg.block_count = 16;
	cfg.max_procs = 4;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, 2, BS, h);
	t_seq_hashes(700, 2, BS, g);
	t_register(p, &h[0], 1, &b[0]);
	t_register(p, &g[0], 1, &b[1]);
	t_release(p, b, 2);
	kvbm_pool_close(p);
	uint32_t lo = b[0].id < b[1].id ? b[0].id : b[1].id;
	uint32_t hi = b[0].id < b[1].id ? b[1].id : b[0].id;
	struct kvbm_shm_header hdr = read_header(name);
	uint64_t slots = hdr.regions[KVBM_REGION_SLOTS].offset;
	uint64_t key[2];
	char path[512];
	int fd = open(t_path(name, path, sizeof(path)), O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, key, 16,
			       (off_t)(slots + (uint64_t)lo * 64 + offsetof(struct kvbm_shm_slot, key_hi))),
			 16);
	close(fd);
	t_patch(name, (off_t)(slots + (uint64_t)hi * 64 + offsetof(struct kvbm_shm_slot, key_hi)),
		key, 16);

	/* a registrar dies under the mutex: the next locker recovers */
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = NULL;
		struct kvbm_block m[2];
		if (kvbm_pool_open(name, NULL, 0, &q) != 0 ||
		    kvbm_allocate_blocks(q, 2, m, NULL, NULL) != 0 ||
		    kvbm_stage_block(q, &m[0], t_hash1(900, BS), BS) != 0 ||
		    kvbm_stage_block(q, &m[1], t_hash1(901, BS), BS) != 0)
			_exit(70);
		kvbm_fp_arm("block.register.batch");
		(void)kvbm_register_blocks(q, m, 2);
		_exit(71);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	pid = fork();
	if (pid == 0) {
		struct kvbm_pool *q = NULL;
		struct kvbm_block m[4];
		child_alarm(20);
		if (kvbm_pool_open(name, NULL, 0, &q) != 0)
			_exit(72);
		/* repaired: one primary keeps the key, the other is no
		 * longer shareable, and the checker agrees */
		if (kvbm_allocate_blocks(q, 4, m, NULL, NULL) != 0)
			_exit(73);
		if (kvbm_release_blocks(q, m, 4) != 0 || kvbm_pool_check(q, 0, NULL, NULL) != 0)
			_exit(74);
		kvbm_pool_close(q);
		_exit(0);
	}
	attacher_done(pid, name);
}
END_TEST

/* A lineage pool of 16 blocks, all inactive: chains A, B, C and D of 4
 * (hashes from @seed), released in that order, their blocks in @b. */
static void four_chains(const char *name, uint32_t seed, struct kvbm_block b[4][4])
{
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[4][4];

	cfg.block_count = 16;
	cfg.backend = KVBM_BACKEND_LINEAGE;
	struct kvbm_pool *p = t_create(name, &cfg);
	for (int k = 0; k < 4; k++) {
		t_seq_hashes(seed + 100 * (uint32_t)k, 4, BS, h[k]);
		t_register(p, h[k], 4, b[k]);
		t_release(p, b[k], 4);
	}
	ck_assert_int_eq(t_check(p), 0);
	kvbm_pool_close(p);
}

/* A process allocates the damaged pool's 16 blocks, @first of them first:
 * the pool checks clean after that lock (its repair), every block comes
 * back, and it checks clean again once they are released. */
static void allocate_through(const char *name, uint32_t first)
{
	const unsigned exact = KVBM_CHECK_LOCK | KVBM_CHECK_QUIESCENT;
	pid_t pid = fork();

	if (pid == 0) {
		struct kvbm_pool *q = NULL;
		struct kvbm_block m[16];
		child_alarm(20);
		if (kvbm_pool_open(name, NULL, 0, &q) != 0)
			_exit(72);
		if (kvbm_allocate_blocks(q, first, m, NULL, NULL) != 0)
			_exit(73);
		if (kvbm_pool_check(q, exact, NULL, NULL) != 0)
			_exit(74); /* the damage was written through, not repaired */
		if (first < 16 && kvbm_allocate_blocks(q, 16 - first, m + first, NULL, NULL) != 0)
			_exit(75); /* a block lost to the damage */
		if (kvbm_release_blocks(q, m, 16) != 0 || kvbm_pool_check(q, exact, NULL, NULL) != 0)
			_exit(76);
		kvbm_pool_close(q);
		_exit(0);
	}
	attacher_done(pid, name);
}

/*
 * Tick's run (lib/evict.c): leaves in insertion order in control.lists[0].
 * A pool of 16 holds chains A, B, C and D of 4; one allocation evicts A's
 * leaf, so A's next block, older than the other leaves, is a leaf in the
 * heap and B's, C's and D's leaves are the run. Run 0: a peer marks A's
 * leaf as in the run (it is not; unlinking it on that word would take the
 * run's head and lose the run). Run 1: the run's ticks out of order. Run
 * 2: A's leaf claims three children (its chain never has a leaf again). The
 * checker names each; a process then allocates the whole pool through it:
 * every block comes back, and the pool checks clean after the lock's
 * repair.
 */
START_TEST(test_damaged_run_is_repaired)
{
	T_NAME(name);
	struct kvbm_block b[4][4], one;

	four_chains(name, 700, b);
	struct kvbm_pool *p = NULL;
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &one, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_release_blocks(p, &one, 1), 0);
	ck_assert_int_eq(t_check(p), 0);
	uint32_t a2 = b[0][2].id, b3 = b[1][3].id, c3 = b[2][3].id;
	kvbm_pool_close(p);

	struct kvbm_shm_header hdr = read_header(name);
	struct kvbm_evict_geom g;
	kvbm_evict_geometry(&hdr.config, &g);
	uint64_t ev = hdr.regions[KVBM_REGION_EVICT].offset;
	uint64_t slots = hdr.regions[KVBM_REGION_SLOTS].offset;
	uint64_t ctl = hdr.regions[KVBM_REGION_CONTROL].offset;
	struct kvbm_shm_control c;
	struct kvbm_shm_lnode na;
	peek(name, (off_t)ctl, &c, sizeof(c));
	peek(name, (off_t)(ev + g.nodes_off + sizeof(na) * a2), &na, sizeof(na));
	/* as built: B's, C's and D's leaves in the run, A's in the heap */
	ck_assert_uint_eq(c.lists[0].head, b3 + 1);
	ck_assert_uint_eq(c.lists[0].len, 3);
	ck_assert_uint_eq(na.hpos, 1);
	if (_i == 0) {
		uint32_t run = KVBM_LN_RUN;
		t_patch(name, (off_t)(ev + g.nodes_off + sizeof(na) * a2 +
				      offsetof(struct kvbm_shm_lnode, hpos)),
			&run, 4);
	} else if (_i == 2) {
		/* A's leaf, a2, says it has three children: evicted, it
		 * leaves a ghost that keeps a1, and so a0, from ever being
		 * leaves, and nothing walks into the lie: without the check
		 * of a dry order (lib/block.c) every allocation of the pool
		 * failed with -ENOSPC */
		uint32_t three = 3;
		t_patch(name, (off_t)(ev + g.nodes_off + sizeof(na) * a2 +
				      offsetof(struct kvbm_shm_lnode, nchild)),
			&three, 4);
	} else {
		uint64_t t0 = 0;
		t_patch(name, (off_t)(slots + (uint64_t)c3 * 64 + offsetof(struct kvbm_shm_slot, tick)),
			&t0, 8);
	}
	char out[8192];
	int rc = t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", name, (char *)NULL);
	ck_assert_msg(rc == 1 && strstr(out, _i == 0   ? "does not point back"
					     : _i == 1 ? "lineage run:"
						       : "children"),
		      "exit %d\n%s", rc, out);
	allocate_through(name, 16);
}
END_TEST

/*
 * The lineage hash chains' back links (lnode.hprev, lib/evict.c), which
 * unlink a node without a walk. A pool of 16 holds chains A, B, C and D
 * of 4, released; a peer rewrites the back link of A's leaf, the first
 * block allocation evicts: run 0 past every node, run 1 to B's first
 * node, in range but no node before it (a write through it would cut B's
 * chain). The checker names the link; a process then allocates the whole
 * pool through it, A's leaf first: every block comes back, and the pool
 * checks clean after the lock's repair.
 */
START_TEST(test_damaged_chain_back_link_is_repaired)
{
	T_NAME(name);
	struct kvbm_block b[4][4];

	four_chains(name, 900, b);
	uint32_t a3 = b[0][3].id, b0 = b[1][0].id;

	struct kvbm_shm_header hdr = read_header(name);
	struct kvbm_evict_geom g;
	kvbm_evict_geometry(&hdr.config, &g);
	uint64_t ev = hdr.regions[KVBM_REGION_EVICT].offset;
	struct kvbm_shm_lnode na, nb;
	peek(name, (off_t)(ev + g.nodes_off + sizeof(na) * a3), &na, sizeof(na));
	peek(name, (off_t)(ev + g.nodes_off + sizeof(nb) * b0), &nb, sizeof(nb));
	ck_assert(na.pos_fl & KVBM_LN_USED);
	ck_assert_uint_ne(nb.hnext, a3 + 1); /* B's first is not before A's leaf */
	uint32_t lie = _i == 0 ? 0xfffffff0u : b0 + 1;
	t_patch(name, (off_t)(ev + g.nodes_off + sizeof(na) * a3 +
			      offsetof(struct kvbm_shm_lnode, hprev)),
		&lie, 4);
	char out[8192];
	int rc = t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", name, (char *)NULL);
	ck_assert_msg(rc == 1 && strstr(out, "back link"), "exit %d\n%s", rc, out);
	allocate_through(name, 1);
}
END_TEST

/* The checker's report callback (a peer's write, at the moment a racing
 * peer could make it): the run's head now names a link past the slots. */
struct run_race {
	struct kvbm_pool *p;
	uint32_t head;
	int fired;
};

static void break_run_on_report(const char *msg, void *arg)
{
	struct run_race *r = arg;

	if (r->fired || !strstr(msg, "eviction list 0"))
		return;
	r->fired = 1;
	r->p->seg.slots[r->head].next = 0x7ffffff0u;
}

/*
 * The checker walks Tick's run twice: check_list() bounds every link, then
 * check_run() walks it again for the ticks. A peer writes the run's links
 * between the two (the segment is any process's to write, and recovery
 * runs the checker under a mutex a hostile peer ignores): the second walk
 * must bound its links too, and report, not read past the slot array.
 */
START_TEST(test_checker_run_walk_bounds_links_again)
{
	T_NAME(name);
	struct kvbm_block b[4][4], one;
	struct kvbm_pool *p = NULL;

	four_chains(name, 1100, b);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &one, NULL, NULL), 0);
	ck_assert_int_eq(kvbm_release_blocks(p, &one, 1), 0);
	ck_assert_int_eq(t_check(p), 0);
	/* as in test_damaged_run_is_repaired: B's, C's and D's leaves */
	uint32_t b3 = b[1][3].id, d3 = b[3][3].id;
	ck_assert_uint_eq(p->seg.ctl->lists[0].head, b3 + 1);
	ck_assert_uint_eq(p->seg.ctl->lists[0].len, 3);
	/* a back link that lies: check_list() reports it and walks on */
	p->seg.slots[d3].prev = 0;
	struct run_race r = {p, b3, 0};
	long n = kvbm_pool_check(p, KVBM_CHECK_LOCK, break_run_on_report, &r);
	ck_assert_int_eq(r.fired, 1);
	ck_assert_int_gt(n, 0);
	kvbm_pool_close(p);
	ck_assert_int_eq(kvbm_pool_destroy(name, KVBM_DESTROY_FORCE), 0);
}
END_TEST

/* A ghost marked as in the run (or the Fifo list) with lists[0] naming it:
 * leaf_unlink() must not unlink it; the lie on ghost node 105 of a 64-block pool:
 * slot[105] is past the slot array, inside the holder tables. */
START_TEST(test_lying_ghost_mark_leaves_holders_alone)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_plh h[3], sib[3], x[20];
	struct kvbm_block b[3], s2, y[20];
	uint32_t tok[3 * BS];
	struct kvbm_block_hashes bh[3];

	cfg.block_count = 64;
	cfg.backend = _i ? KVBM_BACKEND_LINEAGE_FIFO : KVBM_BACKEND_LINEAGE;
	struct kvbm_pool *p = t_create(name, &cfg);
	t_seq_hashes(1, 3, BS, h);
	for (int i = 0; i < 3 * BS; i++)
		tok[i] = 1 + (uint32_t)i + (i >= 2 * BS ? 1000u : 0u);
	ck_assert_int_eq(kvbm_hash_tokens(tok, 3 * BS, BS, T_SALT, bh, 3), 3);
	for (int i = 0; i < 3; i++)
		sib[i] = bh[i].plh;
	t_register(p, h, 3, b);
	t_register(p, sib + 2, 1, &s2);
	t_seq_hashes(5000, 20, BS, x);
	t_register(p, x, 20, y); /* held: slots 4..23 */
	t_release(p, b + 2, 1);

	struct kvbm_shm_header hdr = read_header(name);
	struct kvbm_evict_geom g;
	kvbm_evict_geometry(&hdr.config, &g);
	uint64_t ev = hdr.regions[KVBM_REGION_EVICT].offset;
	uint64_t slots = hdr.regions[KVBM_REGION_SLOTS].offset;
	uint64_t ctl = hdr.regions[KVBM_REGION_CONTROL].offset;
	uint64_t hold = hdr.regions[KVBM_REGION_HOLDERS].offset;
	struct kvbm_shm_lnode nd;
	uint32_t G = UINT32_MAX, NG = 105;
	for (uint32_t n = 64; n < g.nodes; n++) {
		peek(name, (off_t)(ev + g.nodes_off + sizeof(nd) * n), &nd, sizeof(nd));
		if (nd.pos_fl & KVBM_LN_GHOST)
			G = n;
	}
	ck_assert_uint_eq(G, 64);
	peek(name, (off_t)(ev + g.nodes_off + sizeof(nd) * G), &nd, sizeof(nd));
	uint32_t bucket = UINT32_MAX;
	for (uint32_t bk = 0; bk < g.buckets; bk++) {
		uint32_t hd;
		peek(name, (off_t)(ev + g.heads_off + 4 * bk), &hd, 4);
		if (hd == G + 1)
			bucket = bk;
	}
	ck_assert_uint_ne(bucket, UINT32_MAX);
	nd.nchild = 0;
	nd.hpos = KVBM_LN_RUN;
	t_patch(name, (off_t)(ev + g.nodes_off + sizeof(nd) * NG), &nd, sizeof(nd));
	uint32_t ng1 = NG + 1;
	t_patch(name, (off_t)(ev + g.heads_off + 4 * bucket), &ng1, 4);
	off_t l0 = (off_t)(ctl + offsetof(struct kvbm_shm_control, lists));
	t_patch(name, l0 + offsetof(struct kvbm_shm_list, head), &ng1, 4);
	t_patch(name, l0 + offsetof(struct kvbm_shm_list, tail), &ng1, 4);
	uint64_t at = slots + (uint64_t)NG * sizeof(struct kvbm_shm_slot) + offsetof(struct kvbm_shm_slot, next);
	fprintf(stderr, "slot[%u].next at %llu: holders region %llu..%llu (byte %llu of it)\n", NG,
		(unsigned long long)at, (unsigned long long)hold,
		(unsigned long long)(hold + hdr.regions[KVBM_REGION_HOLDERS].size),
		(unsigned long long)(at - hold));
	uint16_t before[4], after[4];
	peek(name, (off_t)at, before, 8);
	t_release(p, &s2, 1); /* lin_link finds ghost 105 */
	peek(name, (off_t)at, after, 8);
	fprintf(stderr, "holder words there before %u %u %u %u, after %u %u %u %u\n", before[0],
		before[1], before[2], before[3], after[0], after[1], after[2], after[3]);
	struct kvbm_pool_info pi;
	int r = kvbm_pool_info(p, &pi);
	int rr = kvbm_release_blocks(p, y, 20);
	fprintf(stderr, "pool_info %d, release of the 20 held blocks: %d (%s)\n", r, rr, kvbm_strerror(rr));
	ck_assert_msg(!memcmp(before, after, 8), "holder table entries overwritten");
	kvbm_pool_close(p);
}
END_TEST

Suite *make_damaged_suite(void)
{
	Suite *s = suite_create("damaged");
	TCase *tc = tcase_create("damaged");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_dump_survives_random_bytes, 0, 3 * NDAMAGED_BACKENDS);
	tcase_add_test(tc, test_checker_bounds_lineage_links);
	tcase_add_test(tc, test_checker_reports_list_cycles);
	tcase_add_loop_test(tc, test_library_survives_damaged_eviction_order, 0, 4);
	tcase_add_loop_test(tc, test_library_survives_damaged_pin_heap, 0, 5);
	tcase_add_loop_test(tc, test_damaged_run_is_repaired, 0, 3);
	tcase_add_loop_test(tc, test_lying_ghost_mark_leaves_holders_alone, 0, 2);
	tcase_add_loop_test(tc, test_damaged_chain_back_link_is_repaired, 0, 2);
	tcase_add_test(tc, test_checker_run_walk_bounds_links_again);
	tcase_add_test(tc, test_checker_reports_truncated_file);
	tcase_add_test(tc, test_primary_kept_alive_by_duplicate);
	tcase_add_test(tc, test_dead_unreaped_holder_is_legal_while_others_run);
	tcase_add_test(tc, test_recovery_ends_with_two_primaries_of_one_key);
	suite_add_tcase(s, tc);
	return s;
}

