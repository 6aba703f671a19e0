/* SPDX-License-Identifier: Apache-2.0 */
/*
 * watch_metrics.c - attach to a running pool and print its metrics.
 *
 *   cc watch_metrics.c -o watch_metrics $(pkg-config --cflags --libs kvbm)
 *   ./watch_metrics POOL [COUNT [INTERVAL_MS]]
 *
 * Attaches to the existing pool POOL whatever its configuration (a NULL
 * config), then every INTERVAL_MS (1000) prints one line: the pool's
 * counters and gauges (kvbm_metrics_snapshot) and, from the second line
 * on, the rates and hit ratio the stats collector computes between
 * samples. COUNT lines (0, the default: until interrupted). Watching takes
 * a process-table entry but no block and no lock.
 * Exit 0, 1 when the pool cannot be opened, 2 on a usage error.
 */
#define _POSIX_C_SOURCE 200809L
#include <kvbm.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
	struct kvbm_pool *pool;
	struct kvbm_stats *st;
	long count = argc > 2 ? atol(argv[2]) : 0;
	long interval_ms = argc > 3 ? atol(argv[3]) : 1000;
	int r;

	if (argc < 2 || argc > 4 || count < 0 || interval_ms <= 0) {
		fprintf(stderr, "usage: watch_metrics POOL [COUNT [INTERVAL_MS]]\n");
		return 2;
	}
	r = kvbm_pool_open(argv[1], NULL, 0, &pool); /* attach only, any configuration */
	if (r < 0) {
		fprintf(stderr, "watch_metrics: %s: %s\n", argv[1], kvbm_strerror(r));
		return 1;
	}
	if ((r = kvbm_stats_new(pool, 0, &st)) < 0) {
		fprintf(stderr, "watch_metrics: stats: %s\n", kvbm_strerror(r));
		kvbm_pool_close(pool);
		return 1;
	}
	kvbm_stats_set_enabled(st, 1); /* a collector starts disabled */
	for (long i = 0; count == 0 || i < count; i++) {
		struct kvbm_metrics m;
		struct kvbm_stats_snapshot s;

		if (i > 0) {
			struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
			nanosleep(&ts, NULL);
		}
		if ((r = kvbm_metrics_snapshot(pool, &m)) < 0 || (r = kvbm_stats_sample(st)) < 0) {
			fprintf(stderr, "watch_metrics: %s\n", kvbm_strerror(r));
			break;
		}
		printf("allocations %llu registrations %llu evictions %llu "
		       "free %lld inactive %lld held %lld",
		       (unsigned long long)m.allocations, (unsigned long long)m.registrations,
		       (unsigned long long)m.evictions, (long long)m.reset_pool_size,
		       (long long)m.inactive_pool_size, (long long)m.inflight_immutable);
		if (i > 0 && kvbm_stats_latest(st, &s) == 1)
			printf(" | alloc/s %.1f evict/s %.1f match hit %.2f", s.allocation_rate,
			       s.eviction_rate, s.match_hit_rate);
		printf("\n");
		fflush(stdout);
	}
	kvbm_stats_free(st);
	kvbm_pool_close(pool);
	return r < 0 ? 1 : 0;
}
