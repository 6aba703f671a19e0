/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pins.c - kvbmd's timer for the pools' pins (lib/pins.c). A pin ends at
 * the first pool-mutex acquisition after its deadline; on a quiet pool
 * nobody takes the mutex, and a pinned prefix would stay unevictable (and
 * counted) past its TTL. kvbmd reads each pool's earliest deadline from its
 * read-only view, wakes for it and calls kvbm_pins_expire().
 */
#define _GNU_SOURCE
#include "kvbmd.h"

int kvbmd_pins_tick(struct kvbmd *d, uint64_t now_ns)
{
	int64_t next = -1;

	for (size_t k = 0; k < d->npools; k++) {
		struct kvbmd_pool *p = &d->pools[k];
		if (!p->view_ok)
			continue;
		/* relaxed: a hint the mutex holder writes; early (an unpin
		 * leaves it) costs one call, late is corrected by whoever
		 * pins, and our wait is bounded by the scan interval */
		uint64_t due = __atomic_load_n(&p->view.seg.pins->next_ns, __ATOMIC_RELAXED);
		/* once a second, whatever next_ns and the pinned count say:
		 * both are any peer's to write, and a late next_ns would keep
		 * every pin (the expiry call checks the heap and the words) */
		int backstop = now_ns >= p->pins_backstop_ns;
		if (backstop)
			p->pins_backstop_ns = now_ns + 1000000000ull;
		if (due == UINT64_MAX && !backstop)
			continue;
		if (due <= now_ns || backstop) {
			long r = kvbm_pins_expire(p->h);
			if (r > 0 && d->verbose)
				kvbmd_log("pool %s: %ld pinned block%s expired", p->name, r,
					  r == 1 ? "" : "s");
			due = __atomic_load_n(&p->view.seg.pins->next_ns, __ATOMIC_RELAXED);
			if (due == UINT64_MAX)
				continue;
			if (due <= now_ns) /* a clock apart from ours: next loop */
				due = now_ns + 1000000;
		}
		int64_t ms = (int64_t)((due - now_ns + 999999) / 1000000);
		if (ms > 1000) /* the backstop's next round */
			ms = 1000;
		if (next < 0 || ms < next)
			next = ms;
	}
	return (int)(next > 1 << 30 ? 1 << 30 : next);
}
