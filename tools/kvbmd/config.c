/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.c - kvbmd's configuration: a file of `key = value` lines, global
 * keys first, then one [pool NAME] section per pool, and the same keys
 * given as flags. An unknown key or a bad value is an error naming the
 * file, the line and the key: a typo must never silently fall back to a
 * default (a pool created with 1024 blocks instead of 65536 stays so).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvbmd.h"

static void fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* The publishing keys are the fields from zmq_endpoint to
 * nats_reconnect_wait_ms, one run of struct kvbmd_config. Both sides are
 * built from zeroed memory by the same setters, so equal keys are equal
 * bytes (a key set twice to different lengths at worst reads as changed,
 * which only restarts the publishers). */
#define PUB_FIRST offsetof(struct kvbmd_config, zmq_endpoint)
#define PUB_END (offsetof(struct kvbmd_config, nats_reconnect_wait_ms) + sizeof(uint32_t))
_Static_assert(PUB_FIRST < PUB_END && PUB_END <= offsetof(struct kvbmd_config, pools),
	       "the publishing keys are one run of struct kvbmd_config");

int kvbmd_config_publish_differs(const struct kvbmd_config *a, const struct kvbmd_config *b)
{
	return memcmp((const char *)a + PUB_FIRST, (const char *)b + PUB_FIRST,
		      PUB_END - PUB_FIRST) != 0;
}

void kvbmd_config_publish_copy(struct kvbmd_config *dst, const struct kvbmd_config *src)
{
	memcpy((char *)dst + PUB_FIRST, (const char *)src + PUB_FIRST, PUB_END - PUB_FIRST);
}

void kvbmd_config_init(struct kvbmd_config *c)
{
	memset(c, 0, sizeof(*c));
	/* loopback by default: the metrics say what a node caches, which is
	 * not for every host that can reach the port (docs/KVBMD.md) */
	snprintf(c->listen, sizeof(c->listen), "127.0.0.1:9470");
	c->scan_ms = 100;
	c->reap_ms = 1000;
	c->stats_ms = 1000;
	c->stats_window = 60;
	/* vLLM's defaults (spec 5.3), and Dynamo's 10 ms coalescing window */
	snprintf(c->zmq_bind, sizeof(c->zmq_bind), "auto");
	c->zmq_hwm = 100000;
	c->zmq_buffer_steps = 10000;
	c->event_window_ms = 10;
	c->event_batch_max = 512;
	/* Dynamo's subjects (spec 5.1, 5.2); cnats's reconnect buffer */
	snprintf(c->nats_router_subject, sizeof(c->nats_router_subject), "kv-events");
	snprintf(c->nats_kvbm_subject, sizeof(c->nats_kvbm_subject), "kvbm.events");
	c->nats_reconnect_buffer = 8u << 20;
	c->nats_reconnect_wait_ms = 1000;
}

/* A whole-string unsigned number in [lo, hi] (base 0: 0660 is octal). */
static int parse_u32(const char *v, int base, uint32_t lo, uint32_t hi, uint32_t *out)
{
	char *end;
	unsigned long n;

	if (!*v || *v == '-')
		return -1;
	errno = 0;
	n = strtoul(v, &end, base);
	if (errno || *end || n < lo || n > hi)
		return -1;
	*out = (uint32_t)n;
	return 0;
}

static int parse_bool(const char *v, uint32_t *out)
{
	if (!strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on"))
		*out = 1;
	else if (!strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off"))
		*out = 0;
	else
		return -1;
	return 0;
}

static const char *const global_keys =
	"listen, instance_id, worker_id, scan_interval_ms, reap_interval_ms, "
	"stats_interval_ms, stats_window, zmq_endpoint, zmq_replay_endpoint, zmq_topic, "
	"zmq_bind, dp_rank, zmq_hwm, zmq_buffer_steps, event_window_ms, event_batch_max, "
	"nats_url, nats_router_subject, nats_kvbm_subject, nats_reconnect_buffer, "
	"nats_reconnect_wait_ms";
static const char *const pool_keys =
	"tier, blocks, block_size, max_procs, mode, group, backend, dup_policy, "
	"reset_on_release, hugepages, allow_others, create";

/* 0 set, 1 unknown key, -1 bad value (@why says what is expected) */
static int set_global(struct kvbmd_config *c, const char *k, const char *v, const char **why)
{
	if (!strcmp(k, "listen")) {
		*why = "HOST:PORT, e.g. 127.0.0.1:9470 or [::1]:9470";
		if (!*v || strlen(v) >= sizeof(c->listen) || !strrchr(v, ':'))
			return -1;
		snprintf(c->listen, sizeof(c->listen), "%s", v);
		return 0;
	}
	if (!strcmp(k, "instance_id") || !strcmp(k, "worker_id")) {
		char *dst = k[0] == 'i' ? c->instance_id : c->worker_id;
		*why = "at most 127 characters";
		if (strlen(v) >= KVBMD_LABEL_MAX)
			return -1;
		snprintf(dst, KVBMD_LABEL_MAX, "%s", v);
		return 0;
	}
	if (!strcmp(k, "zmq_endpoint") || !strcmp(k, "zmq_replay_endpoint")) {
		char *dst = k[4] == 'e' ? c->zmq_endpoint : c->zmq_replay_endpoint;
		*why = "a ZMQ endpoint such as tcp://*:5557 or tcp://127.0.0.1:5557 (empty: off)";
		if (strlen(v) >= KVBMD_ENDPOINT_MAX || (*v && !strstr(v, "://")))
			return -1;
		snprintf(dst, KVBMD_ENDPOINT_MAX, "%s", v);
		return 0;
	}
	if (!strcmp(k, "nats_url")) {
		*why = "a NATS URL such as nats://127.0.0.1:4222 (empty: off)";
		if (strlen(v) >= KVBMD_ENDPOINT_MAX || (*v && !strstr(v, "://")))
			return -1;
		snprintf(c->nats_url, sizeof(c->nats_url), "%s", v);
		return 0;
	}
	if (!strcmp(k, "nats_router_subject") || !strcmp(k, "nats_kvbm_subject")) {
		char *dst = k[5] == 'r' ? c->nats_router_subject : c->nats_kvbm_subject;
		*why = "a NATS subject of 1 to 127 characters, no spaces";
		if (!*v || strlen(v) >= KVBMD_LABEL_MAX || strpbrk(v, " \t*>"))
			return -1;
		snprintf(dst, KVBMD_LABEL_MAX, "%s", v);
		return 0;
	}
	if (!strcmp(k, "nats_reconnect_buffer")) {
		*why = "bytes, 1024..1073741824";
		return parse_u32(v, 10, 1024, 1u << 30, &c->nats_reconnect_buffer);
	}
	if (!strcmp(k, "nats_reconnect_wait_ms")) {
		*why = "milliseconds, 10..600000";
		return parse_u32(v, 10, 10, 600000, &c->nats_reconnect_wait_ms);
	}
	if (!strcmp(k, "zmq_topic")) {
		*why = "at most 127 bytes";
		if (strlen(v) >= KVBMD_LABEL_MAX)
			return -1;
		snprintf(c->zmq_topic, sizeof(c->zmq_topic), "%s", v);
		return 0;
	}
	if (!strcmp(k, "zmq_bind")) {
		*why = "auto (bind on *, ::, ipc://, inproc://), yes or no";
		if (strcmp(v, "auto") && strcmp(v, "yes") && strcmp(v, "no"))
			return -1;
		snprintf(c->zmq_bind, sizeof(c->zmq_bind), "%s", v);
		return 0;
	}
	if (!strcmp(k, "dp_rank")) {
		*why = "a data-parallel rank, 0..65535";
		return parse_u32(v, 10, 0, 65535, &c->dp_rank);
	}
	if (!strcmp(k, "zmq_hwm")) {
		*why = "messages, 1..10000000";
		return parse_u32(v, 10, 1, 10000000, &c->zmq_hwm);
	}
	if (!strcmp(k, "zmq_buffer_steps")) {
		*why = "batches, 1..1000000";
		return parse_u32(v, 10, 1, 1000000, &c->zmq_buffer_steps);
	}
	if (!strcmp(k, "event_window_ms")) {
		*why = "milliseconds, 0..10000";
		return parse_u32(v, 10, 0, 10000, &c->event_window_ms);
	}
	if (!strcmp(k, "event_batch_max")) {
		*why = "events, 1..65536";
		return parse_u32(v, 10, 1, 65536, &c->event_batch_max);
	}
	*why = "milliseconds, 1..3600000";
	if (!strcmp(k, "scan_interval_ms"))
		return parse_u32(v, 10, 1, 3600000, &c->scan_ms);
	if (!strcmp(k, "reap_interval_ms"))
		return parse_u32(v, 10, 1, 3600000, &c->reap_ms);
	if (!strcmp(k, "stats_interval_ms"))
		return parse_u32(v, 10, 1, 3600000, &c->stats_ms);
	if (!strcmp(k, "stats_window")) {
		*why = "samples, 1..100000";
		return parse_u32(v, 10, 1, 100000, &c->stats_window);
	}
	return 1;
}

static int set_pool(struct kvbmd_pool_cfg *p, const char *k, const char *v, const char **why)
{
	struct kvbm_config *cfg = &p->cfg;
	uint32_t b;
	int r;

	if (!strcmp(k, "tier")) {
		*why = "G1, G2, G3, G4 or device, host_pinned, disk, external";
		r = kvbm_tier_parse(v);
		if (r < 0)
			return -1;
		/* its G name, as the pool stores it: "host_pinned" and "G2" are
		 * one tier to the duplicate check and to an adopted pool */
		snprintf(cfg->tier, sizeof(cfg->tier), "%s", kvbm_tier_name((uint32_t)r));
		p->set |= KVBMD_SET_TIER;
		return 0;
	}
	if (!strcmp(k, "blocks")) {
		*why = "a block count, 1..268435456";
		p->set |= KVBMD_SET_BLOCKS;
		return parse_u32(v, 10, 1, KVBM_MAX_BLOCKS, &cfg->block_count);
	}
	if (!strcmp(k, "block_size")) {
		*why = "tokens per block, a power of two 1..1024";
		p->set |= KVBMD_SET_BLOCK_SIZE;
		r = parse_u32(v, 10, 1, 1024, &cfg->block_size);
		return r < 0 || (cfg->block_size & (cfg->block_size - 1)) ? -1 : 0;
	}
	if (!strcmp(k, "max_procs")) {
		*why = "processes, 1..63";
		p->set |= KVBMD_SET_MAX_PROCS;
		return parse_u32(v, 10, 1, KVBM_MAX_PROCS, &cfg->max_procs);
	}
	if (!strcmp(k, "mode")) {
		*why = "an octal file mode such as 0660";
		return parse_u32(v, 8, 0, 0777, &cfg->mode);
	}
	if (!strcmp(k, "group")) {
		struct group *g = getgrnam(v);
		*why = "a group name or number";
		if (g) {
			cfg->gid = g->gr_gid;
			return 0;
		}
		if (parse_u32(v, 10, 0, UINT32_MAX - 1, &b) < 0)
			return -1;
		cfg->gid = b;
		return 0;
	}
	if (!strcmp(k, "backend")) {
		int n = kvbm_backend_parse(v);
		*why = "lru, fifo, multi-lru, lineage, lineage-fifo, lfru, s3fifo, arc, w-tinylfu, lecar or adapt";
		if (n < 0)
			return -1;
		cfg->backend = (uint32_t)n;
		p->set |= KVBMD_SET_BACKEND;
		return 0;
	}
	if (!strcmp(k, "dup_policy")) {
		*why = "allow or reject";
		p->set |= KVBMD_SET_DUP;
		if (!strcmp(v, "allow"))
			cfg->dup_policy = KVBM_DUP_ALLOW;
		else if (!strcmp(v, "reject"))
			cfg->dup_policy = KVBM_DUP_REJECT;
		else
			return -1;
		return 0;
	}
	*why = "yes or no";
	if (!strcmp(k, "reset_on_release")) {
		p->set |= KVBMD_SET_RESET;
		return parse_bool(v, &cfg->reset_on_release);
	}
	if (!strcmp(k, "hugepages") || !strcmp(k, "allow_others")) {
		uint32_t bit = k[0] == 'h' ? KVBM_CFG_HUGEPAGES : KVBM_CFG_ALLOW_OTHERS;
		if (parse_bool(v, &b) < 0)
			return -1;
		cfg->flags = b ? cfg->flags | bit : cfg->flags & ~bit;
		return 0;
	}
	if (!strcmp(k, "create")) {
		r = parse_bool(v, &b);
		p->create = (int)b;
		return r;
	}
	return 1;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static struct kvbmd_pool_cfg *pool_new(struct kvbmd_config *c, const char *name,
				       const char *where, char *err, size_t errlen)
{
	struct kvbmd_pool_cfg *p;

	if (!*name || strlen(name) > KVBM_NAME_MAX || strchr(name, '/')) {
		fail(err, errlen, "%s: bad pool name '%s' (1 to %d characters, no '/')", where,
		     name, KVBM_NAME_MAX);
		return NULL;
	}
	for (size_t i = 0; i < c->npools; i++)
		if (!strcmp(c->pools[i].name, name)) {
			fail(err, errlen, "%s: pool '%s' is already defined at %s", where, name,
			     c->pools[i].where);
			return NULL;
		}
	if (c->npools == KVBMD_MAX_POOLS) {
		fail(err, errlen, "%s: more than %d pools", where, KVBMD_MAX_POOLS);
		return NULL;
	}
	p = &c->pools[c->npools++];
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	snprintf(p->where, sizeof(p->where), "%s", where);
	kvbm_config_init(&p->cfg);
	p->create = 1;
	return p;
}

/* Applies `k = v` to the section @p (NULL: the global part). */
static int apply(struct kvbmd_config *c, struct kvbmd_pool_cfg *p, const char *k,
		 const char *v, const char *where, char *err, size_t errlen)
{
	const char *why = "";
	int r = p ? set_pool(p, k, v, &why) : set_global(c, k, v, &why);

	if (r == 1 && p) {
		fail(err, errlen, "%s: unknown key '%s' in [pool %s] (known keys: %s)", where, k,
		     p->name, pool_keys);
		return -1;
	}
	if (r == 1) {
		fail(err, errlen, "%s: unknown key '%s' (known keys: %s; pool keys go in a "
		     "[pool NAME] section)", where, k, global_keys);
		return -1;
	}
	if (r < 0) {
		fail(err, errlen, "%s: bad value '%s' for %s: expected %s", where, v, k, why);
		return -1;
	}
	return 0;
}

int kvbmd_config_load(struct kvbmd_config *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	struct kvbmd_pool_cfg *p = NULL;
	char line[1024], where[300];
	unsigned lineno = 0;
	int r = 0;

	if (!f) {
		fail(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (r == 0 && fgets(line, sizeof(line), f)) {
		char *s, *eq;

		lineno++;
		snprintf(where, sizeof(where), "%s:%u", path, lineno);
		if (!strchr(line, '\n') && !feof(f)) {
			fail(err, errlen, "%s: line longer than %zu characters", where,
			     sizeof(line) - 2);
			r = -1;
			break;
		}
		/* '#' starts a comment anywhere: label values never need one */
		if ((s = strchr(line, '#')) != NULL)
			*s = '\0';
		s = trim(line);
		if (!*s)
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');
			if (!end || end[1] || strncmp(s, "[pool", 5) || !isspace((unsigned char)s[5])) {
				fail(err, errlen, "%s: bad section '%s': expected [pool NAME]",
				     where, s);
				r = -1;
				break;
			}
			*end = '\0';
			p = pool_new(c, trim(s + 5), where, err, errlen);
			r = p ? 0 : -1;
			continue;
		}
		if (!(eq = strchr(s, '='))) {
			fail(err, errlen, "%s: expected 'key = value', got '%s'", where, s);
			r = -1;
			break;
		}
		*eq = '\0';
		r = apply(c, p, trim(s), trim(eq + 1), where, err, errlen);
	}
	if (r == 0 && ferror(f)) {
		fail(err, errlen, "%s: read error", path);
		r = -1;
	}
	fclose(f);
	return r;
}

int kvbmd_config_set(struct kvbmd_config *c, const char *kv, const char *where, char *err,
		     size_t errlen)
{
	char buf[512], *eq;

	snprintf(buf, sizeof(buf), "%s", kv);
	if (!(eq = strchr(buf, '='))) {
		fail(err, errlen, "%s: expected key=value, got '%s'", where, kv);
		return -1;
	}
	*eq = '\0';
	return apply(c, NULL, trim(buf), trim(eq + 1), where, err, errlen);
}

int kvbmd_config_pool_arg(struct kvbmd_config *c, const char *arg, char *err, size_t errlen)
{
	char buf[1024], *save = NULL, *tok;
	struct kvbmd_pool_cfg *p;

	snprintf(buf, sizeof(buf), "%s", arg);
	tok = strtok_r(buf, ",", &save);
	if (!tok) {
		fail(err, errlen, "--pool: expected NAME[,key=value...]");
		return -1;
	}
	if (!(p = pool_new(c, trim(tok), "--pool", err, errlen)))
		return -1;
	while ((tok = strtok_r(NULL, ",", &save)) != NULL) {
		char *eq = strchr(tok, '=');
		if (!eq) {
			fail(err, errlen, "--pool %s: expected key=value, got '%s'", p->name, tok);
			return -1;
		}
		*eq = '\0';
		if (apply(c, p, trim(tok), trim(eq + 1), "--pool", err, errlen) < 0)
			return -1;
	}
	return 0;
}
