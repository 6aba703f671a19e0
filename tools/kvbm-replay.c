/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-replay - replays a Mooncake-format prefix trace through a real pool
 * in a real segment and reports the prefix-cache hit ratio.
 *
 * One request at a time, in file order: hits = the longest prefix of its
 * hash_ids that kvbm_match_blocks finds; blocks are allocated for the rest
 * (evicting as the backend chooses), staged and registered; then all of the
 * request's blocks are released tail first (its last block becomes the
 * oldest, as vLLM frees them). Each hash id is one pool block; the pool
 * holds floor(F x unique ids) blocks. --procs N spreads the requests over
 * N attached processes running at once. --oracle adds, with the same
 * semantics and no pool, exact LRU and the offline optimum (Belady: evict
 * the resident block whose next use is farthest, ties to the deeper one).
 *
 * --hint-window T releases each request with a release hint derived from
 * the trace, as a serving layer that knows its sessions would: CONTINUES
 * when its next turn (a later request whose hash_ids start with all but
 * possibly the last of its blocks) arrives within T seconds, else ONESHOT
 * (or NONE, --hint-other none). --hint-noise F flips a fraction F of the
 * hints, chosen from --hint-seed, so their worth is measured when wrong.
 * --key-salt N changes the keys the ids map to: lineage's and lru's order
 * does not depend on key values (lfru's sketch collisions do), only which
 * releases the hints' control sample picks (by the key of a release's
 * first block) does, so it shows how far a hinted result depends on that
 * sample.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvbm.h"
#include "json.h"
#include "version.h"

struct trace {
	uint32_t nreq;
	uint64_t nblocks;    /* sum of request lengths */
	uint32_t nids;       /* unique ids: max id + 1 after remapping */
	uint64_t *start;     /* request i = ids[start[i] .. start[i+1]) */
	uint32_t *ids;       /* remapped to 0..nids-1 */
	uint32_t *depth;     /* per id: its position */
	struct kvbm_plh *plh; /* per id */
	uint32_t maxlen;
	double *ts;          /* per request: "timestamp" (ms), NAN if none */
};

static void vsay(const char *fmt, va_list ap)
{
	fprintf(stderr, "kvbm-replay: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

/* A failure: the input, the system (exit 1). */
__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	exit(1);
}

/* A usage error: an option or its value (exit 2). */
__attribute__((format(printf, 1, 2), noreturn)) static void usage_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	exit(2);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		die("%s", "out of memory");
	return p;
}

/* ---- loading --------------------------------------------------------------------- */

/* Pulls the integers of the "hash_ids" array out of one JSON line: NULL,
 * or what is wrong with the line. */
static const char *parse_line(const char *line, uint64_t **v, size_t *n, size_t *cap)
{
	const char *s = strstr(line, "\"hash_ids\"");

	if (!s)
		return "no \"hash_ids\"";
	if (!(s = strchr(s, '[')))
		return "\"hash_ids\" is not an array";
	*n = 0;
	for (s++;;) {
		while (*s == ' ' || *s == ',' || *s == '\t')
			s++;
		if (*s == ']')
			return NULL;
		if (*s < '0' || *s > '9') /* strtoull would take "-3" as 2^64 - 3 */
			return "a hash id that is not a non-negative integer";
		char *end;
		errno = 0;
		unsigned long long x = strtoull(s, &end, 10);
		if (errno)
			return "a hash id past 2^64";
		if (*n == *cap) {
			*cap = *cap ? 2 * *cap : 256;
			*v = xrealloc(*v, *cap * sizeof(**v));
		}
		(*v)[(*n)++] = x;
		s = end;
	}
}

/* id -> dense index, open addressing */
struct idmap {
	uint64_t *key;
	uint32_t *val;
	size_t cap, n;
};

static uint32_t *idmap_slot(struct idmap *m, uint64_t k)
{
	for (size_t b = (k * 0x9e3779b97f4a7c15ull) >> 20;; b++) {
		size_t i = b & (m->cap - 1);
		if (!m->val[i] || m->key[i] == k) {
			m->key[i] = k;
			return &m->val[i];
		}
	}
}

/* The dense index of trace id @k (value + 1 stored, 0 = empty). */
static uint32_t idmap_get(struct idmap *m, uint64_t k, int *fresh)
{
	if (2 * (m->n + 1) > m->cap) {
		struct idmap o = *m;
		m->cap = o.cap ? 2 * o.cap : 1024;
		m->key = calloc(m->cap, sizeof(*m->key));
		m->val = calloc(m->cap, sizeof(*m->val));
		if (!m->key || !m->val)
			die("%s", "out of memory");
		for (size_t i = 0; i < o.cap; i++)
			if (o.val[i])
				*idmap_slot(m, o.key[i]) = o.val[i];
		free(o.key);
		free(o.val);
	}
	uint32_t *v = idmap_slot(m, k);
	*fresh = !*v;
	if (!*v)
		*v = (uint32_t)++m->n;
	return *v - 1;
}

/* --key-salt: 0 keeps the keys every earlier figure was measured with */
static uint64_t key_salt;

static void load(const char *path, struct trace *t)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t lcap = 0, vcap = 0, n, icap = 0, rcap = 0, ucap = 0;
	uint64_t *v = NULL;
	struct idmap m = {0};
	uint32_t *parent = NULL;

	if (!f)
		die("cannot open the trace %s: %s", path, strerror(errno));
	memset(t, 0, sizeof(*t));
	size_t lineno = 0;
	while (getline(&line, &lcap, f) > 0) {
		const char *why;
		lineno++;
		if (line[strspn(line, " \t\r\n")] == '\0')
			continue;
		if ((why = parse_line(line, &v, &n, &vcap)))
			die("%s:%zu: %s: %.60s", path, lineno, why, line);
		if (t->nreq + 2 > rcap) {
			rcap = rcap ? 2 * rcap : 4096;
			t->start = xrealloc(t->start, rcap * sizeof(*t->start));
		}
		t->ts = xrealloc(t->ts, rcap * sizeof(*t->ts));
		const char *tsp = strstr(line, "\"timestamp\"");
		t->ts[t->nreq] = NAN;
		if (tsp && (tsp = strchr(tsp, ':'))) {
			char *end;
			double x = strtod(tsp + 1, &end);
			if (end != tsp + 1 && isfinite(x))
				t->ts[t->nreq] = x;
		}
		t->start[t->nreq++] = t->nblocks;
		for (size_t j = 0; j < n; j++) {
			int fresh;
			uint32_t id = idmap_get(&m, v[j], &fresh);
			if (fresh) {
				if (id >= ucap) {
					ucap = ucap ? 2 * ucap : 4096;
					t->depth = xrealloc(t->depth, ucap * sizeof(*t->depth));
					parent = xrealloc(parent, ucap * sizeof(*parent));
				}
				t->depth[id] = (uint32_t)j;
				parent[id] = j ? t->ids[t->nblocks - 1] : UINT32_MAX;
			}
			if (t->nblocks == icap) {
				icap = icap ? 2 * icap : 65536;
				t->ids = xrealloc(t->ids, icap * sizeof(*t->ids));
			}
			t->ids[t->nblocks++] = id;
		}
		if (n > t->maxlen)
			t->maxlen = (uint32_t)n;
	}
	if (t->nreq == 0)
		die("%s: no requests", path);
	t->start[t->nreq] = t->nblocks;
	t->nids = (uint32_t)m.n;
	/* a lineage hash chain per id: its parent's, extended (ids come
	 * after their parents, so one pass in id order suffices) */
	t->plh = xrealloc(NULL, t->nids * sizeof(*t->plh));
	for (uint32_t id = 0; id < t->nids; id++) {
		uint64_t cur = ((uint64_t)id + 1) * 0x9e3779b97f4a7c15ull ^ 0x5851f42d4c957f2dull ^
			       key_salt * 0xd6e8feb86659fd93ull;
		if (parent[id] == UINT32_MAX) {
			(void)kvbm_plh_make(cur, NULL, 0, &t->plh[id]);
		} else {
			uint64_t pc = kvbm_plh_current(t->plh[parent[id]]);
			(void)kvbm_plh_make(cur, &pc, t->depth[id], &t->plh[id]);
		}
	}
	free(parent);
	free(m.key);
	free(m.val);
	free(v);
	free(line);
	fclose(f);
}

static void trace_free(struct trace *t)
{
	free(t->start);
	free(t->ids);
	free(t->depth);
	free(t->plh);
	free(t->ts);
}

/* ---- release hints from the trace ---------------------------------------------------- */

struct hintopt {
	double window; /* seconds; < 0: no hints */
	double noise;  /* fraction flipped */
	uint64_t seed;
	uint32_t other; /* the hint of a request that does not continue */
};

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Per request: CONTINUES if a later request extends all but possibly its
 * last block within the window, else @o->other; a fraction @o->noise of
 * them flipped (request i flips when a hash of (seed, i) falls below it,
 * so the same requests flip whatever the backend). Returns the hints and
 * *ncont, the requests hinted CONTINUES before the noise. */
static uint8_t *derive_hints(const struct trace *t, const struct hintopt *o, uint32_t *ncont)
{
	uint8_t *hint = xrealloc(NULL, t->nreq);
	uint32_t *next = xrealloc(NULL, (size_t)t->nids * sizeof(*next));

	for (uint32_t id = 0; id < t->nids; id++)
		next[id] = UINT32_MAX; /* the first request after, holding the id */
	*ncont = 0;
	for (uint32_t i = t->nreq; i-- > 0;) {
		uint32_t n = (uint32_t)(t->start[i + 1] - t->start[i]);
		const uint32_t *ids = t->ids + t->start[i];
		int cont = 0;
		if (n) {
			/* ids name prefixes: holding block n-2's id is
			 * starting with the first n-1 blocks */
			uint32_t nx = next[ids[n >= 2 ? n - 2 : 0]];
			if (nx != UINT32_MAX) {
				if (isnan(t->ts[i]) || isnan(t->ts[nx]))
					die("request %u or %u has no \"timestamp\": --hint-window "
					    "needs them",
					    i + 1, nx + 1);
				cont = (t->ts[nx] - t->ts[i]) / 1000.0 <= o->window;
			}
		}
		*ncont += (uint32_t)cont;
		uint32_t h = cont ? KVBM_HINT_CONTINUES : o->other;
		uint64_t r = splitmix(o->seed * 0x100000001b3ull ^ i);
		if ((double)(r >> 11) * 0x1p-53 < o->noise)
			h = h == KVBM_HINT_CONTINUES ? o->other : KVBM_HINT_CONTINUES;
		hint[i] = (uint8_t)h;
		for (uint32_t j = 0; j < n; j++)
			next[ids[j]] = i;
	}
	free(next);
	return hint;
}

/* ---- the replay through a pool ----------------------------------------------------- */

struct result {
	uint64_t hits, blocks, requests, errors;
};

static void progress(uint32_t done, uint32_t total, int tty)
{
	if (!tty || (done % 64 && done != total))
		return;
	int w = 40, k = (int)((uint64_t)done * w / total);
	fprintf(stderr, "\r[%.*s%*s] %3u%%", k, "########################################", w - k,
		"", (unsigned)((uint64_t)done * 100 / total));
	if (done == total)
		fputs("\r\033[K", stderr);
}

static int replay_part(struct kvbm_pool *p, const struct trace *t, const uint8_t *hint,
		       uint32_t proc, uint32_t nprocs, struct result *res, int tty)
{
	struct kvbm_plh *h = xrealloc(NULL, t->maxlen * sizeof(*h));
	struct kvbm_block *b = xrealloc(NULL, t->maxlen * sizeof(*b));
	struct kvbm_block *rev = xrealloc(NULL, t->maxlen * sizeof(*rev));
	uint32_t bs = 16;
	int r = 0;

	for (uint32_t i = proc; i < t->nreq; i += nprocs) {
		uint32_t n = (uint32_t)(t->start[i + 1] - t->start[i]);
		const uint32_t *ids = t->ids + t->start[i];
		for (uint32_t j = 0; j < n; j++)
			h[j] = t->plh[ids[j]];
		long k = kvbm_match_blocks(p, h, n, b);
		if (k < 0) {
			r = (int)k;
			break;
		}
		res->requests++;
		res->blocks += n;
		res->hits += (uint64_t)k;
		if ((uint32_t)k < n) {
			r = kvbm_allocate_blocks(p, n - (uint32_t)k, b + k, NULL, NULL);
			if (r == -ENOSPC && nprocs > 1) {
				/* the others hold the rest right now: skip it */
				res->errors++;
				kvbm_release_blocks(p, b, (size_t)k);
				r = 0;
				continue;
			}
			if (r < 0)
				break;
			for (uint32_t j = (uint32_t)k; j < n && r == 0; j++)
				r = kvbm_stage_block(p, &b[j], h[j], bs);
			if (r == 0)
				r = kvbm_register_blocks(p, b + k, n - (uint32_t)k);
			if (r < 0)
				break;
		}
		for (uint32_t j = 0; j < n; j++)
			rev[j] = b[n - 1 - j];
		r = kvbm_release_blocks_hint(p, rev, n, hint ? hint[i] : KVBM_HINT_NONE);
		if (r < 0)
			break;
		progress(i + 1, t->nreq, tty && proc == 0);
	}
	free(h);
	free(b);
	free(rev);
	return r;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU seconds of this process and its reaped children: on a shared
 * machine the replay's own cost, which others' load does not inflate
 * as it does the wall clock */
static double cpu_s(void)
{
	struct rusage self, kids;

	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &kids);
	return (double)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec +
			kids.ru_stime.tv_sec) +
	       (double)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec +
			kids.ru_stime.tv_usec) / 1e6;
}

static uint32_t tinylfu = KVBM_TINYLFU_AUTO;

static int replay(const struct trace *t, const uint8_t *hint, uint32_t capacity, int backend,
		  uint32_t nprocs, struct result *res, double *secs, double *cpu,
		  struct kvbm_hint_stats *hs)
{
	char name[64];
	struct kvbm_config cfg;
	struct kvbm_pool *p;
	int tty = isatty(2);

	snprintf(name, sizeof(name), "replay-%d", (int)getpid());
	kvbm_config_init(&cfg);
	cfg.block_count = capacity;
	cfg.backend = (uint32_t)backend;
	cfg.max_procs = nprocs + 1;
	cfg.tinylfu = tinylfu;
	int r = kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &p);
	if (r < 0) {
		fprintf(stderr, "kvbm-replay: create pool: %s\n", kvbm_strerror(r));
		return r;
	}
	memset(res, 0, sizeof(*res));
	double t0 = now_s(), c0 = cpu_s();
	if (nprocs == 1) {
		r = replay_part(p, t, hint, 0, 1, res, tty);
	} else {
		struct result *shared = mmap(NULL, nprocs * sizeof(*shared), PROT_READ | PROT_WRITE,
					     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		pid_t *pids = xrealloc(NULL, nprocs * sizeof(*pids));
		if (shared == MAP_FAILED)
			die("%s", "mmap failed");
		memset(shared, 0, nprocs * sizeof(*shared));
		t0 = now_s();
		for (uint32_t w = 0; w < nprocs; w++) {
			pids[w] = fork();
			if (pids[w] == 0) {
				struct kvbm_pool *q;
				int rr = kvbm_pool_open(name, NULL, 0, &q);
				if (rr == 0)
					rr = replay_part(q, t, hint, w, nprocs, &shared[w], tty);
				if (rr == 0)
					kvbm_pool_close(q);
				_exit(rr == 0 ? 0 : 1);
			}
		}
		for (uint32_t w = 0; w < nprocs; w++) {
			int st;
			waitpid(pids[w], &st, 0);
			if (!WIFEXITED(st) || WEXITSTATUS(st))
				r = -EIO;
			res->hits += shared[w].hits;
			res->blocks += shared[w].blocks;
			res->requests += shared[w].requests;
			res->errors += shared[w].errors;
		}
		free(pids);
		munmap(shared, nprocs * sizeof(*shared));
	}
	*secs = now_s() - t0;
	*cpu = cpu_s() - c0;
	if (r < 0)
		fprintf(stderr, "kvbm-replay: replay failed: %s\n", kvbm_strerror(r));
	int rs = kvbm_hint_stats(p, hs);
	if (rs < 0 && r == 0)
		r = rs;
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, KVBM_DESTROY_FORCE);
	return r;
}

/* ---- the oracles: same semantics, no pool ------------------------------------------ */

/* Exact LRU: a doubly linked list of the inactive ids, oldest first. */
/* The oracles' hits for one request: its longest prefix still resident. */
static uint32_t resident_prefix(const uint8_t *in, const uint32_t *ids, uint32_t n)
{
	uint32_t k = 0;

	while (k < n && in[ids[k]])
		k++;
	return k;
}

static double oracle_lru(const struct trace *t, uint32_t cap)
{
	uint32_t *next = calloc(t->nids + 1, sizeof(*next)), *prev = calloc(t->nids + 1, 4);
	uint8_t *in = calloc(t->nids, 1);
	uint32_t head = 0, tail = 0, freecnt = cap; /* links are id + 1 */
	uint64_t hits = 0;

	if (!next || !prev || !in)
		die("%s", "out of memory");
#define UNLINK(x)                                                                  \
	do {                                                                       \
		uint32_t _x = (x);                                                 \
		if (prev[_x]) next[prev[_x]] = next[_x]; else head = next[_x];     \
		if (next[_x]) prev[next[_x]] = prev[_x]; else tail = prev[_x];     \
		in[_x - 1] = 0;                                                    \
	} while (0)
	for (uint32_t i = 0; i < t->nreq; i++) {
		const uint32_t *ids = t->ids + t->start[i];
		uint32_t n = (uint32_t)(t->start[i + 1] - t->start[i]);
		uint32_t k = resident_prefix(in, ids, n);
		hits += k;
		for (uint32_t j = 0; j < k; j++)
			UNLINK(ids[j] + 1);
		for (uint32_t need = n - k; freecnt < need; freecnt++)
			UNLINK(head);
		freecnt -= n - k;
		for (uint32_t j = k; j < n; j++)
			if (in[ids[j]]) { /* registering it again resurrects it */
				UNLINK(ids[j] + 1);
				freecnt++;
			}
		for (uint32_t j = n; j-- > 0;) {
			uint32_t x = ids[j] + 1;
			prev[x] = tail;
			next[x] = 0;
			if (tail) next[tail] = x; else head = x;
			tail = x;
			in[ids[j]] = 1;
		}
	}
#undef UNLINK
	free(next);
	free(prev);
	free(in);
	return (double)hits / (double)t->nblocks;
}

struct hent {
	uint64_t key; /* (next use << 20 | (0xfffff - depth)) inverted: max first */
	uint32_t id;
	uint32_t stamp;
};

static void hpush(struct hent *h, uint64_t *n, struct hent e)
{
	uint64_t i = (*n)++;

	while (i > 0 && h[(i - 1) / 2].key < e.key) {
		h[i] = h[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h[i] = e;
}

static struct hent hpop(struct hent *h, uint64_t *n)
{
	struct hent top = h[0], e = h[--*n];
	uint64_t i = 0;

	for (;;) {
		uint64_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && h[c + 1].key > h[c].key)
			c++;
		if (h[c].key <= e.key)
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = e;
	return top;
}

/* Belady: evict the inactive block used again farthest ahead (never: the
 * farthest of all), ties to the deeper block. A heap with lazy deletion. */
static double oracle_belady(const struct trace *t, uint32_t cap)
{
	uint32_t *nextuse = malloc(t->nblocks * sizeof(*nextuse));
	uint32_t *last = malloc(t->nids * sizeof(*last));
	uint32_t *stamp = calloc(t->nids, sizeof(*stamp));
	uint8_t *in = calloc(t->nids, 1);
	struct hent *heap = malloc(t->nblocks * sizeof(*heap));
	uint64_t nh = 0, hits = 0;
	uint32_t freecnt = cap;

	if (!nextuse || !last || !stamp || !in || !heap)
		die("%s", "out of memory");
	for (uint32_t id = 0; id < t->nids; id++)
		last[id] = UINT32_MAX;
	for (uint32_t i = t->nreq; i-- > 0;)
		for (uint64_t x = t->start[i]; x < t->start[i + 1]; x++) {
			nextuse[x] = last[t->ids[x]];
			last[t->ids[x]] = i;
		}
	for (uint32_t i = 0; i < t->nreq; i++) {
		const uint32_t *ids = t->ids + t->start[i];
		uint32_t n = (uint32_t)(t->start[i + 1] - t->start[i]);
		uint32_t k = resident_prefix(in, ids, n);
		hits += k;
		for (uint32_t j = 0; j < k; j++)
			in[ids[j]] = 0;
		while (freecnt < n - k) {
			struct hent e = hpop(heap, &nh);
			if (!in[e.id] || stamp[e.id] != e.stamp)
				continue;
			in[e.id] = 0;
			freecnt++;
		}
		freecnt -= n - k;
		for (uint32_t j = k; j < n; j++)
			if (in[ids[j]]) {
				in[ids[j]] = 0;
				freecnt++;
			}
		for (uint32_t j = n; j-- > 0;) {
			uint32_t id = ids[j];
			uint64_t nu = nextuse[t->start[i] + j];
			in[id] = 1;
			stamp[id]++;
			hpush(heap, &nh,
			      (struct hent){(nu == UINT32_MAX ? 0xffffffffull : nu) << 20 |
						    (j < 0xfffff ? j : 0xfffff),
					    id, stamp[id]});
		}
	}
	free(nextuse);
	free(last);
	free(stamp);
	free(in);
	free(heap);
	return (double)hits / (double)t->nblocks;
}

/* ---- main ---------------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fputs("usage: kvbm-replay --trace FILE --capacity-frac F [--backend NAME] [--procs N]\n"
	      "                   [--tinylfu auto|none|small|medium|large] [--oracle] [--json]\n"
	      "                   [--hint-window SECONDS [--hint-other oneshot|none]\n"
	      "                    [--hint-noise F] [--hint-seed N]] [--key-salt N]\n"
	      "       kvbm-replay --list-backends\n"
	      "Replays a Mooncake-format trace (one JSON object per line with hash_ids)\n"
	      "through a pool of floor(F x unique blocks) blocks and prints the prefix hit\n"
	      "ratio; --oracle adds exact LRU and the offline optimum (Belady).\n"
	      "--hint-window releases a request with KVBM_HINT_CONTINUES when its next\n"
	      "turn arrives within SECONDS (inf: ever), else ONESHOT (or NONE);\n"
	      "--hint-noise flips a fraction F of those hints (seed N, default 1).\n"
	      "--key-salt changes the blocks' keys (default 0): which releases form\n"
	      "the hints' control sample, and lfru's sketch collisions.\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"trace", required_argument, NULL, 't'},
		{"capacity-frac", required_argument, NULL, 'c'},
		{"backend", required_argument, NULL, 'b'},
		{"procs", required_argument, NULL, 'p'},
		{"oracle", no_argument, NULL, 'o'},
		{"json", no_argument, NULL, 'j'},
		{"list-backends", no_argument, NULL, 'l'},
		{"tinylfu", required_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{"hint-window", required_argument, NULL, 'w'},
		{"hint-noise", required_argument, NULL, 'n'},
		{"hint-seed", required_argument, NULL, 's'},
		{"hint-other", required_argument, NULL, 'x'},
		{"key-salt", required_argument, NULL, 'k'},
		{NULL, 0, NULL, 0},
	};
	const char *path = NULL;
	double frac = -1;
	int backend = KVBM_BACKEND_LINEAGE, oracle = 0, json = 0, c;
	long procs = 1;
	struct hintopt ho = {.window = -1, .noise = 0, .seed = 1, .other = KVBM_HINT_ONESHOT};
	int hint_opts = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end;
		switch (c) {
		case 't':
			path = optarg;
			break;
		case 'c':
			frac = strtod(optarg, &end);
			if (*end || !(frac > 0 && frac <= 1))
				usage_die("--capacity-frac: a fraction in (0, 1], not '%s'", optarg);
			break;
		case 'b':
			backend = kvbm_backend_parse(optarg);
			if (backend < 0)
				usage_die("unknown backend '%s' (see --list-backends)", optarg);
			break;
		case 'p':
			procs = strtol(optarg, &end, 10);
			if (*end || procs < 1 || procs > 32)
				usage_die("--procs: 1..32, not '%s'", optarg);
			break;
		case 'o':
			oracle = 1;
			break;
		case 'w':
			ho.window = strtod(optarg, &end);
			if (*end || !(ho.window >= 0))
				usage_die("--hint-window: seconds >= 0 (or inf), not '%s'", optarg);
			break;
		case 'n':
			ho.noise = strtod(optarg, &end);
			if (*end || !(ho.noise >= 0 && ho.noise <= 1))
				usage_die("--hint-noise: a fraction in [0, 1], not '%s'", optarg);
			hint_opts = 1;
			break;
		case 's': {
			errno = 0;
			unsigned long long v = strtoull(optarg, &end, 10);
			if (*end || errno || optarg[0] == '-' || !optarg[0])
				usage_die("--hint-seed: a non-negative integer, not '%s'", optarg);
			ho.seed = v;
			hint_opts = 1;
			break;
		}
		case 'k': {
			errno = 0;
			unsigned long long v = strtoull(optarg, &end, 10);
			if (*end || errno || optarg[0] == '-' || !optarg[0])
				usage_die("--key-salt: a non-negative integer, not '%s'", optarg);
			key_salt = v;
			break;
		}
		case 'x':
			if (!strcmp(optarg, "oneshot"))
				ho.other = KVBM_HINT_ONESHOT;
			else if (!strcmp(optarg, "none"))
				ho.other = KVBM_HINT_NONE;
			else
				usage_die("--hint-other: oneshot or none, not '%s'", optarg);
			hint_opts = 1;
			break;
		case 'f': {
			static const char *const caps[] = {"auto", "none", "small", "medium", "large"};
			uint32_t k = 0;
			while (k < 5 && strcmp(optarg, caps[k]))
				k++;
			if (k == 5)
				usage_die("--tinylfu: auto, none, small, medium or large, not '%s'", optarg);
			tinylfu = k;
			break;
		}
		case 'j':
			json = 1;
			break;
		case 'l':
			for (uint32_t b = 0; kvbm_backend_name(b); b++)
				puts(kvbm_backend_name(b));
			return 0;
		case 'V':
			return tool_version("kvbm-replay");
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!path)
		usage_die("--trace FILE is required (kvbm-replay --help)");
	if (frac < 0)
		usage_die("--capacity-frac F is required (kvbm-replay --help)");
	if (optind != argc)
		usage_die("unexpected argument '%s' (kvbm-replay --help)", argv[optind]);
	if (hint_opts && ho.window < 0)
		usage_die("--hint-noise, --hint-seed and --hint-other need --hint-window");
	struct trace t;
	load(path, &t);
	uint32_t cap = (uint32_t)(frac * t.nids); /* floor: both positive */
	if (cap < t.maxlen * (uint32_t)procs) {
		fprintf(stderr,
			"kvbm-replay: capacity %u blocks is less than %ld x the longest request (%u)\n",
			cap, procs, t.maxlen);
		trace_free(&t);
		return 2;
	}
	struct result res;
	struct kvbm_hint_stats hs;
	double secs, cpu;
	uint32_t ncont = 0;
	uint8_t *hint = ho.window >= 0 ? derive_hints(&t, &ho, &ncont) : NULL;
	if (replay(&t, hint, cap, backend, (uint32_t)procs, &res, &secs, &cpu, &hs) < 0) {
		free(hint);
		trace_free(&t);
		return 1;
	}
	free(hint);
	double ratio = res.blocks ? (double)res.hits / (double)res.blocks : 0;
	double lru = oracle ? oracle_lru(&t, cap) : 0, bel = oracle ? oracle_belady(&t, cap) : 0;
	if (json) {
		struct json j;
		json_init(&j, stdout);
		json_obj_begin(&j, NULL);
		json_str(&j, "trace", path);
		json_str(&j, "backend", kvbm_backend_name((uint32_t)backend));
		json_dbl(&j, "capacity_frac", frac);
		json_u64(&j, "capacity", cap);
		json_u64(&j, "unique_blocks", t.nids);
		json_u64(&j, "procs", (uint64_t)procs);
		json_dbl(&j, "hit_ratio", ratio);
		json_u64(&j, "requests", res.requests);
		json_u64(&j, "blocks", res.blocks);
		json_u64(&j, "hits", res.hits);
		json_u64(&j, "skipped", res.errors);
		json_dbl(&j, "seconds", secs);
		json_dbl(&j, "requests_per_s", res.requests / secs);
		json_dbl(&j, "blocks_per_s", res.blocks / secs);
		json_dbl(&j, "cpu_seconds", cpu);
		json_dbl(&j, "blocks_per_cpu_s", cpu > 0 ? res.blocks / cpu : 0);
		if (oracle) {
			json_dbl(&j, "lru_hit_ratio", lru);
			json_dbl(&j, "belady_hit_ratio", bel);
		}
		json_u64(&j, "key_salt", key_salt);
		if (ho.window >= 0) {
			json_dbl(&j, "hint_window", isinf(ho.window) ? -1 : ho.window);
			json_dbl(&j, "hint_noise", ho.noise);
			json_u64(&j, "hint_seed", ho.seed);
			json_str(&j, "hint_other", ho.other == KVBM_HINT_NONE ? "none" : "oneshot");
			json_dbl(&j, "hint_continues_frac", (double)ncont / t.nreq);
			json_u64(&j, "hint_weight_continues", hs.weight_permille[KVBM_HINT_CONTINUES]);
			json_u64(&j, "hint_weight_oneshot", hs.weight_permille[KVBM_HINT_ONESHOT]);
			json_u64(&j, "hint_horizon", hs.horizon);
		}
		json_obj_end(&j);
		json_finish(&j);
		trace_free(&t);
		return 0;
	}
	printf("trace %s: %u requests, %llu blocks, %u unique\n", path, t.nreq,
	       (unsigned long long)t.nblocks, t.nids);
	printf("pool of %u blocks (%.4g%% of unique), backend %s, %ld process%s\n", cap,
	       frac * 100, kvbm_backend_name((uint32_t)backend), procs, procs > 1 ? "es" : "");
	printf("hit ratio %.4f  (%llu of %llu blocks)\n", ratio, (unsigned long long)res.hits,
	       (unsigned long long)res.blocks);
	if (res.errors)
		printf("skipped   %llu requests (the pool was held by the others)\n",
		       (unsigned long long)res.errors);
	printf("speed     %.0f requests/s, %.2f M blocks/s (%.3f s; %.3f s of CPU, %.2f M blocks per "
	       "CPU second)\n",
	       res.requests / secs, res.blocks / secs / 1e6, secs, cpu,
	       cpu > 0 ? res.blocks / cpu / 1e6 : 0);
	if (ho.window >= 0) {
		printf("hints     window %gs, %.1f%% of requests continue, %.0f%% flipped; other: %s\n",
		       ho.window, 100.0 * ncont / t.nreq, 100 * ho.noise,
		       ho.other == KVBM_HINT_NONE ? "none" : "oneshot");
		for (uint32_t k = 0; k < KVBM_HINT_COUNT; k++)
			printf("          %-9s control sample: %u hit again, %u evicted unused; "
			       "weight %.3f of a %llu-tick horizon\n",
			       k == KVBM_HINT_NONE	  ? "none"
			       : k == KVBM_HINT_CONTINUES ? "continues"
							  : "oneshot",
			       hs.reused[k], hs.unused[k], hs.weight_permille[k] / 1000.0,
			       (unsigned long long)hs.horizon);
	}
	if (oracle) {
		printf("exact LRU %.4f\n", lru);
		printf("Belady    %.4f\n", bel);
	}
	trace_free(&t);
	return 0;
}
