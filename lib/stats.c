/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stats.c - the stats collector (kvbm-logical metrics::StatsCollector):
 * rates and hit ratios from metric deltas between samples, gradients from
 * rate deltas, in a ring buffer of the last window_size samples.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool.h"

struct kvbm_stats {
	struct kvbm_pool *pool;
	pthread_mutex_t lock;
	int enabled;
	uint32_t cap, n, head; /* ring: head is the next write position */
	int have_prev;
	struct kvbm_metrics prev;
	struct kvbm_stats_snapshot *ring;
};

int kvbm_stats_new(struct kvbm_pool *pool, uint32_t window_size, struct kvbm_stats **out)
{
	struct kvbm_stats *st;

	if (!out)
		return -EINVAL;
	*out = NULL;
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->cap = window_size ? window_size : 60;
	st->ring = calloc(st->cap, sizeof(*st->ring));
	if (!st->ring) {
		free(st);
		return -ENOMEM;
	}
	st->pool = pool;
	pthread_mutex_init(&st->lock, NULL);
	*out = st;
	return 0;
}

void kvbm_stats_free(struct kvbm_stats *st)
{
	if (!st)
		return;
	pthread_mutex_destroy(&st->lock);
	free(st->ring);
	free(st);
}

void kvbm_stats_set_enabled(struct kvbm_stats *st, int on)
{
	pthread_mutex_lock(&st->lock);
	st->enabled = on != 0;
	pthread_mutex_unlock(&st->lock);
}

int kvbm_stats_is_enabled(struct kvbm_stats *st)
{
	pthread_mutex_lock(&st->lock);
	int on = st->enabled;
	pthread_mutex_unlock(&st->lock);
	return on;
}

static double ratio(uint64_t num, uint64_t den)
{
	return den ? (double)num / (double)den : 0.0;
}

static const struct kvbm_stats_snapshot *newest(const struct kvbm_stats *st)
{
	return st->n ? &st->ring[(st->head + st->cap - 1) % st->cap] : NULL;
}

int kvbm_stats_sample_at(struct kvbm_stats *st, const struct kvbm_metrics *m, uint64_t t_ns)
{
	struct kvbm_stats_snapshot s;

	if (!st || !m)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	if (!st->enabled) {
		pthread_mutex_unlock(&st->lock);
		return 0;
	}
	memset(&s, 0, sizeof(s));
	s.t_ns = t_ns;
	s.inflight_mutable = m->inflight_mutable;
	s.inflight_immutable = m->inflight_immutable;
	s.reset_pool_size = m->reset_pool_size;
	s.inactive_pool_size = m->inactive_pool_size;
	const struct kvbm_stats_snapshot *last = newest(st);
	/* the first sample, or one with no time elapsed, has no rates */
	if (st->have_prev && last && t_ns > last->t_ns) {
		double dt = (double)(t_ns - last->t_ns) / 1e9;
		const struct kvbm_metrics *p = &st->prev;
		s.allocation_rate = (double)(m->allocations - p->allocations) / dt;
		s.eviction_rate = (double)(m->evictions - p->evictions) / dt;
		s.match_hit_rate = ratio(m->match_blocks_returned - p->match_blocks_returned,
					 m->match_hashes_requested - p->match_hashes_requested);
		s.scan_hit_rate = ratio(m->scan_blocks_returned - p->scan_blocks_returned,
					m->scan_hashes_requested - p->scan_hashes_requested);
		s.allocation_gradient = (s.allocation_rate - last->allocation_rate) / dt;
		s.eviction_gradient = (s.eviction_rate - last->eviction_rate) / dt;
	}
	st->prev = *m;
	st->have_prev = 1;
	st->ring[st->head] = s;
	st->head = (st->head + 1) % st->cap;
	if (st->n < st->cap)
		st->n++;
	pthread_mutex_unlock(&st->lock);
	return 1;
}

int kvbm_stats_sample(struct kvbm_stats *st)
{
	struct kvbm_metrics m;
	struct timespec ts;
	int r;

	if (!st || !st->pool)
		return -EINVAL;
	if (!kvbm_stats_is_enabled(st))
		return 0;
	r = kvbm_metrics_snapshot(st->pool, &m);
	if (r < 0)
		return r;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return kvbm_stats_sample_at(st, &m, (uint64_t)ts.tv_sec * 1000000000ull +
						(uint64_t)ts.tv_nsec);
}

int kvbm_stats_latest(struct kvbm_stats *st, struct kvbm_stats_snapshot *out)
{
	if (!st || !out)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	const struct kvbm_stats_snapshot *s = newest(st);
	if (s)
		*out = *s;
	pthread_mutex_unlock(&st->lock);
	return s != NULL;
}

size_t kvbm_stats_window(struct kvbm_stats *st, size_t n, struct kvbm_stats_snapshot *out)
{
	if (!st || (n && !out))
		return 0;
	pthread_mutex_lock(&st->lock);
	size_t k = n < st->n ? n : st->n;
	for (size_t i = 0; i < k; i++)
		out[i] = st->ring[(st->head + st->cap - k + i) % st->cap];
	pthread_mutex_unlock(&st->lock);
	return k;
}
