/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pins.c - pins held by the pool, not by a process (docs/EVICTION.md,
 * "Pins"): a deadline per slot in the pin region and the POOL holder bit.
 *
 * The deadline word is the truth, the bit, the counts and the expiry heap
 * are derived: every change is made under the pool mutex, deadline first
 * when pinning and when unpinning, so a holder killed between the two
 * leaves a word and a bit that disagree, and recovery (kvbm_pins_rebuild)
 * puts the bit back where the word says. The bit is no process's, so the reaper never clears
 * it; it sits in KVBM_HOLD_PROCS, so the evictor's handshake, settle and
 * recovery keep the slot active as they would for any holder.
 *
 * Expiry is exact without a clock read on the common path: pins->due is a
 * tick of the mutex's hold clock a little before the earliest deadline,
 * and kvbm_seg_lock() calls the expire hook once its tick passes it.
 *
 * Expiry costs what it expires, not the pool's size (a critical section
 * is bounded by its work): a min-heap of (deadline, slot) in the pin
 * region, one entry per pinned block, kept by pin, renew, unpin and
 * expiry after the word is written. The heap is derived like the bit:
 * a holder killed inside a heap update leaves entries the words
 * contradict, and recovery rebuilds it from the words. Its bytes are
 * trusted for nothing: every index is bounds-checked, every walk is as
 * deep as the heap's capacity allows, and an entry found disagreeing
 * with its word sends this expiry to the full scan and the pool to
 * repair at unlock (kvbm_store_corrupt).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "pool.h"
#include "../shm/failpoint.h"
#include "../shm/mutex.h"

static uint64_t *deadlines(const struct kvbm_pool *p)
{
	return (uint64_t *)(p->seg.pins + 1);
}

#ifdef KVBM_FAILPOINTS
uint64_t kvbm_pins_expire_visits;
/* relaxed, atomic: a process's pool handles each have their own view of
 * the mutex, and a test reads the sum after the fact */
#define VISIT(n) __atomic_fetch_add(&kvbm_pins_expire_visits, (n), __ATOMIC_RELAXED)
#else
#define VISIT(n) ((void)0)
#endif

static struct kvbm_shm_pin_ent *heap(const struct kvbm_pool *p)
{
	return (struct kvbm_shm_pin_ent *)((uint8_t *)p->seg.pins +
					   kvbm_pins_heap_off(&p->seg.cfg));
}

static uint32_t *heap_pos(const struct kvbm_pool *p)
{
	return (uint32_t *)((uint8_t *)p->seg.pins + kvbm_pins_pos_off(&p->seg.cfg));
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	/* the vDSO: no syscall under the mutex */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t when(uint64_t v)
{
	return v & ~KVBM_PIN_TIP;
}

/* Sets the due tick for the earliest deadline (mutex held). relaxed: read
 * by lockers as a hint only, each store made under the mutex. */
static void schedule(struct kvbm_pool *p, uint64_t now)
{
	struct kvbm_shm_pins *h = p->seg.pins;
	uint64_t next = h->next_ns;
	uint64_t due = next == UINT64_MAX ? UINT64_MAX : kvbm_mutex_due(next > now ? next - now : 0);

	__atomic_store_n(&h->due, due, __ATOMIC_RELAXED);
}

/* ---- the expiry heap (mutex held) ---------------------------------------- */

/* Entries in the heap: past its capacity is a peer's bytes. The capacity
 * is this process's config, never a shared byte. */
static uint32_t heap_len(struct kvbm_pool *p)
{
	uint32_t n = p->seg.pins->heap_len;

	if (n <= kvbm_pin_cap(&p->seg.cfg))
		return n;
	kvbm_store_corrupt(p);
	return 0;
}

/* Puts @e at @i and records its place (a slot out of range: repair). */
static void heap_put(struct kvbm_pool *p, uint32_t i, struct kvbm_shm_pin_ent e)
{
	heap(p)[i] = e;
	if (e.slot < p->nslots)
		heap_pos(p)[e.slot] = i;
	else
		kvbm_store_corrupt(p);
	KVBM_FAILPOINT("pins.heap.put");
}

/* Moves the entry at @i to its place among @n entries, up first unless
 * @down_only (Floyd's heapify: the entries above are not a heap yet):
 * each step halves or doubles @i, so no content makes it loop. */
static void heap_sift(struct kvbm_pool *p, uint32_t i, uint32_t n, int down_only)
{
	struct kvbm_shm_pin_ent *a = heap(p);
	struct kvbm_shm_pin_ent e = a[i];

	while (!down_only && i > 0 && a[(i - 1) / 2].when > e.when) {
		heap_put(p, i, a[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	for (;;) {
		uint64_t c = 2ull * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && a[c + 1].when < a[c].when)
			c++;
		if (a[c].when >= e.when)
			break;
		heap_put(p, i, a[c]);
		i = (uint32_t)c;
	}
	heap_put(p, i, e);
}

/* The heap index of pinned slot @s, or UINT32_MAX (after marking the pool
 * for repair) if the heap does not hold it where it says. */
static uint32_t heap_find(struct kvbm_pool *p, uint32_t s, uint32_t n)
{
	uint32_t i = heap_pos(p)[s];

	if (i < n && heap(p)[i].slot == s)
		return i;
	kvbm_store_corrupt(p);
	return UINT32_MAX;
}

/* Files newly pinned slot @s under @t. A full heap means counts that lie
 * (pin_prefix admits no more than the cap): the repair rebuilds it. */
static void heap_add(struct kvbm_pool *p, uint32_t s, uint64_t t)
{
	uint32_t n = heap_len(p);

	if (n >= kvbm_pin_cap(&p->seg.cfg)) {
		kvbm_store_corrupt(p);
		return;
	}
	heap(p)[n] = (struct kvbm_shm_pin_ent){.when = t, .slot = s};
	p->seg.pins->heap_len = n + 1;
	heap_sift(p, n, n + 1, 0);
}

/* Refiles pinned slot @s under its later deadline @t. */
static void heap_move(struct kvbm_pool *p, uint32_t s, uint64_t t)
{
	uint32_t n = heap_len(p), i = heap_find(p, s, n);

	if (i == UINT32_MAX)
		return;
	heap(p)[i].when = t;
	heap_sift(p, i, n, 0);
}

/* Takes slot @s's entry out: the last entry fills its place. */
static void heap_del(struct kvbm_pool *p, uint32_t s)
{
	uint32_t n = heap_len(p), i = heap_find(p, s, n);

	if (i == UINT32_MAX)
		return;
	p->seg.pins->heap_len = --n;
	if (i < n) {
		heap(p)[i] = heap(p)[n];
		heap_sift(p, i, n, 0);
	}
}

/* The slot with the earliest deadline, checked against its word: 1 and
 * *@s, *@t set; 0: the heap is empty; -1: the heap lies (the pool is
 * marked for repair). */
static int heap_top(struct kvbm_pool *p, uint32_t *s, uint64_t *t)
{
	uint32_t n = heap_len(p);

	if (n != p->seg.pins->blocks) {
		/* both change in one critical section: a peer's bytes */
		kvbm_store_corrupt(p);
		return -1;
	}
	if (n == 0)
		return 0;
	struct kvbm_shm_pin_ent e = heap(p)[0];
	VISIT(1);
	if (e.slot >= p->nslots || !deadlines(p)[e.slot] ||
	    (deadlines(p)[e.slot] & ~KVBM_PIN_TIP) != e.when || heap_pos(p)[e.slot] != 0) {
		kvbm_store_corrupt(p);
		return -1;
	}
	*s = e.slot;
	*t = e.when;
	return 1;
}

/* Ends slot @s's pin (mutex held, op record written): the word, then the
 * bit, then the slot settles if nobody else holds it. */
static void unpin_slot(struct kvbm_pool *p, uint32_t s)
{
	struct kvbm_shm_pins *h = p->seg.pins;
	uint64_t *d = &deadlines(p)[s];
	uint64_t v = *d;

	/* relaxed: the counts and words are the mutex's; metric scrapes read
	 * them as snapshots */
	__atomic_store_n(d, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&h->blocks, h->blocks - 1, __ATOMIC_RELAXED);
	if (v & KVBM_PIN_TIP)
		__atomic_store_n(&h->tips, h->tips - 1, __ATOMIC_RELAXED);
	KVBM_FAILPOINT("pins.unpin.word");
	heap_del(p, s);
	/* seq_cst: as a process's unpin (hold.c), one RMW of the mask, so a
	 * process dropping its own last bit at the same time sees ours gone
	 * or we see its bit gone: exactly one of us settles */
	uint64_t old = __atomic_fetch_and(&kvbm_slot(p, s)->holders, ~KVBM_HOLD_POOL,
					  __ATOMIC_SEQ_CST);
	KVBM_FAILPOINT("pins.unpin.bit");
	if (!(old & KVBM_HOLD_PROCBITS))
		kvbm_store_settle(p, s);
}

/* Pins slot @s until @until (mutex held, op record written); @tip: it
 * ends the caller's prefix. */
static void pin_slot(struct kvbm_pool *p, uint32_t s, uint64_t until, int tip)
{
	struct kvbm_shm_pins *h = p->seg.pins;
	struct kvbm_shm_slot *sl = kvbm_slot(p, s);
	uint64_t *d = &deadlines(p)[s];
	uint64_t v = *d;
	uint64_t nv = (when(v) > until ? when(v) : until) | (v & KVBM_PIN_TIP) |
		      (tip ? KVBM_PIN_TIP : 0);

	if (!v)
		__atomic_store_n(&h->blocks, h->blocks + 1, __ATOMIC_RELAXED);
	if ((nv & KVBM_PIN_TIP) && !(v & KVBM_PIN_TIP))
		__atomic_store_n(&h->tips, h->tips + 1, __ATOMIC_RELAXED);
	__atomic_store_n(d, nv, __ATOMIC_RELAXED);
	/* relaxed: kvbmd reads it from its view, lock-free, as a hint */
	if (when(nv) < h->next_ns)
		__atomic_store_n(&h->next_ns, when(nv), __ATOMIC_RELAXED);
	KVBM_FAILPOINT("pins.pin.word");
	if (v) {
		if (when(nv) != when(v))
			heap_move(p, s, when(nv));
		return; /* the bit is there already */
	}
	heap_add(p, s, when(nv));
	/* seq_cst: the pool's hold is a holder bit like a process's, against
	 * the evictor's handshake; but the evictor holds the mutex we hold,
	 * so no eviction is in flight. The mark: whoever's RMW clears it
	 * lowers the count (PROTOCOL.md), a resurrecting reader or us */
	uint64_t old = __atomic_fetch_or(&sl->holders, KVBM_HOLD_POOL, __ATOMIC_SEQ_CST);
	KVBM_FAILPOINT("pins.pin.bit");
	if ((old & KVBM_HOLD_INACTIVE) &&
	    (__atomic_fetch_and(&sl->holders, ~KVBM_HOLD_INACTIVE, __ATOMIC_SEQ_CST) &
	     KVBM_HOLD_INACTIVE))
		/* seq_cst: pairs with the recount (none runs: we hold the
		 * mutex) and the pinners' decrements, as take_from_inactive */
		__atomic_fetch_sub(&p->seg.ctl->inactive, 1, __ATOMIC_SEQ_CST);
}

/* Ends every pin due by @now the slow way, looking at every word: for a
 * heap found lying, whose repair at unlock rebuilds it. Sets *@next to
 * the earliest deadline left. */
static uint32_t expire_scan(struct kvbm_pool *p, uint64_t now, uint64_t *next)
{
	uint64_t *d = deadlines(p);
	uint32_t n = 0;

	*next = UINT64_MAX;
	VISIT(p->nslots);
	for (uint32_t s = 0; s < p->nslots; s++) {
		uint64_t v = d[s];
		if (!v)
			continue;
		if (when(v) <= now) {
			kvbm_store_op(p, KVBM_OP_PIN, s);
			unpin_slot(p, s);
			n++;
		} else if (when(v) < *next) {
			*next = when(v);
		}
	}
	return n;
}

/* Ends every pin whose deadline is at most @now and sets the next due
 * tick (mutex held): the heap's top while it is due, each check and
 * removal O(log pins). Returns the blocks expired. */
static uint32_t expire_locked(struct kvbm_pool *p, uint64_t now)
{
	struct kvbm_shm_pins *h = p->seg.pins;
	uint64_t next = UINT64_MAX, t;
	uint32_t n = 0, s;
	int r;

	/* not next_ns: a peer's bytes, and one too late would keep every pin
	 * (the lock hook, kvbm_pins_expire and kvbmd all read it); the heap's
	 * top, checked against its slot's word, is O(1) and sets it right */
	/* each round takes one entry out, so the capacity bounds the rounds
	 * whatever the bytes say */
	for (uint32_t left = kvbm_pin_cap(&p->seg.cfg); (r = heap_top(p, &s, &t)) > 0; left--) {
		if (t > now || left == 0) {
			next = t;
			break;
		}
		kvbm_store_op(p, KVBM_OP_PIN, s);
		unpin_slot(p, s);
		n++;
	}
	if (r < 0)
		n += expire_scan(p, now, &next);
	__atomic_store_n(&h->next_ns, next, __ATOMIC_RELAXED);
	__atomic_store_n(&h->expired, h->expired + n, __ATOMIC_RELAXED);
	schedule(p, now);
	return n;
}

/* Blocks the expire hook ended in this thread's last lock: the hook runs
 * in the locking thread, so kvbm_pins_expire counts what its own lock
 * expired, whatever other threads of the process do meanwhile. */
static _Thread_local uint32_t expired_by_lock;

/* The hook of kvbm_seg_lock: its own op record, cleared before the caller
 * writes its own. */
static void expire_hook(struct kvbm_seg *seg, void *arg)
{
	struct kvbm_pool *p = arg;

	(void)seg;
	KVBM_FAILPOINT("pins.expire.begin");
	expired_by_lock = expire_locked(p, mono_ns());
	/* release: as kvbm_store_unlock's clear */
	__atomic_store_n(&p->seg.ctl->op.op, KVBM_OP_NONE, __ATOMIC_RELEASE);
}

void kvbm_pins_hooks(struct kvbm_pool *p)
{
	p->seg.expire = expire_hook;
	p->seg.expire_arg = p;
}

/*
 * Recovery (mutex held, before the eviction order and the inactive count
 * are rebuilt): a word only on a registered primary, the POOL bit exactly
 * where a word is, a pinned slot not marked inactive, and the counts and
 * the next deadline recomputed from the words.
 */
void kvbm_pins_rebuild(struct kvbm_pool *p)
{
	struct kvbm_shm_pins *h = p->seg.pins;
	uint64_t *d = deadlines(p);
	uint64_t next = UINT64_MAX;
	/* no call pins for longer: a later word is bytes a peer wrote */
	uint64_t latest = mono_ns() + KVBM_PIN_TTL_MAX_MS * 1000000ull;
	uint32_t blocks = 0, tips = 0, cap = kvbm_pin_cap(&p->seg.cfg);
	struct kvbm_shm_pin_ent *a = heap(p);

	for (uint32_t s = 0; s < p->nslots; s++) {
		struct kvbm_shm_slot *sl = kvbm_slot(p, s);
		uint64_t w = sl->state;
		/* one read: a peer writing the word meanwhile must not take
		 * the count past the heap's room (a[] below) */
		uint64_t v = __atomic_load_n(&d[s], __ATOMIC_RELAXED);
		if (v && (kvbm_slot_state(w) != KVBM_SLOT_REGISTERED ||
			  !(kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY) || when(v) > latest ||
			  blocks >= cap)) {
			/* bytes a peer wrote: no pin outlives its block, and
			 * no call pins past the share */
			__atomic_store_n(&d[s], 0, __ATOMIC_RELAXED);
			v = 0;
		}
		/* RMWs, seq_cst: live pinners' bits stay, as in the reaper */
		if (v) {
			__atomic_fetch_or(&sl->holders, KVBM_HOLD_POOL, __ATOMIC_SEQ_CST);
			/* the recount that follows lowers the count */
			__atomic_fetch_and(&sl->holders, ~KVBM_HOLD_INACTIVE, __ATOMIC_SEQ_CST);
			a[blocks] = (struct kvbm_shm_pin_ent){.when = when(v), .slot = s};
			heap_pos(p)[s] = blocks;
			blocks++;
			tips += (v & KVBM_PIN_TIP) != 0;
			if (when(v) < next)
				next = when(v);
		} else {
			__atomic_fetch_and(&sl->holders, ~KVBM_HOLD_POOL, __ATOMIC_SEQ_CST);
		}
	}
	/* Floyd's heapify: O(pins), entries all in range */
	h->heap_len = blocks;
	for (uint32_t i = blocks / 2; i-- > 0;)
		heap_sift(p, i, blocks, 1);
	/* relaxed: read lock-free by scrapes and kvbmd, as snapshots */
	__atomic_store_n(&h->blocks, blocks, __ATOMIC_RELAXED);
	__atomic_store_n(&h->tips, tips, __ATOMIC_RELAXED);
	h->cap = kvbm_pin_cap(&p->seg.cfg);
	__atomic_store_n(&h->next_ns, next, __ATOMIC_RELAXED);
	/* the first locker after the repair looks (the deadlines may have
	 * passed while the pool was down) */
	__atomic_store_n(&h->due, next == UINT64_MAX ? UINT64_MAX : 0, __ATOMIC_RELAXED);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* The registered primary of @key (mutex held: exact), or UINT32_MAX. */
static uint32_t find_primary(struct kvbm_pool *p, struct kvbm_plh key)
{
	uint32_t s;
	uint64_t g;

	if (!kvbm_index_lookup(&p->ix, key, &s, &g))
		return UINT32_MAX;
	uint64_t w = __atomic_load_n(&kvbm_slot(p, s)->state, __ATOMIC_RELAXED);
	if (kvbm_slot_state(w) != KVBM_SLOT_REGISTERED || kvbm_slot_gen(w) != g ||
	    !(kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY))
		return UINT32_MAX;
	return s;
}

long kvbm_pin_prefix(struct kvbm_pool *p, const struct kvbm_plh *hashes, size_t n,
		     uint64_t ttl_ms, size_t *failed)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	if (!hashes || n == 0 || ttl_ms == 0 || ttl_ms > KVBM_PIN_TTL_MAX_MS)
		return -EINVAL;
	uint32_t cap = kvbm_pin_cap(&p->seg.cfg);
	/* not against the share yet: a hash given twice is one block */
	if (n > p->nslots)
		return -EINVAL;
	/* before the mutex: nothing is allocated under it */
	uint32_t *slots = malloc(n * sizeof(*slots)), *sorted = malloc(n * sizeof(*sorted));
	if (!slots || !sorted) {
		free(slots);
		free(sorted);
		return -ENOMEM;
	}
	r = kvbm_store_lock(p, KVBM_OP_PIN, UINT32_MAX);
	if (r < 0)
		goto out;
	uint64_t now = mono_ns();
	const uint64_t *d = deadlines(p);
	for (size_t i = 0; i < n; i++) {
		slots[i] = sorted[i] = find_primary(p, hashes[i]);
		if (slots[i] == UINT32_MAX) {
			if (failed)
				*failed = i;
			r = KVBM_ENOTREG;
			goto unlock;
		}
	}
	/* the share counts blocks, each once: a hash given twice is one */
	qsort(sorted, n, sizeof(*sorted), cmp_u32);
	uint32_t fresh = 0, pinned = p->seg.pins->blocks;
	for (size_t i = 0; i < n; i++)
		fresh += (i == 0 || sorted[i] != sorted[i - 1]) && d[sorted[i]] == 0;
	if (pinned > cap) {
		/* a count no pin made (a peer's bytes): the words decide now,
		 * and the repair at unlock rebuilds the counts (shm/mutex.c) */
		pinned = 0;
		for (uint32_t s = 0; s < p->nslots; s++)
			pinned += d[s] != 0;
		kvbm_store_corrupt(p);
	}
	if ((uint64_t)pinned + fresh > cap) {
		r = KVBM_EPINSHARE;
		goto unlock;
	}
	/* even: bit 0 is the tip mark */
	uint64_t until = (now + ttl_ms * 1000000ull) & ~KVBM_PIN_TIP;
	for (size_t i = 0; i < n; i++) {
		kvbm_store_op(p, KVBM_OP_PIN, slots[i]);
		pin_slot(p, slots[i], until, i == n - 1);
	}
	schedule(p, now);
	r = (int)fresh;
unlock:
	kvbm_store_unlock(p);
out:
	free(slots);
	free(sorted);
	return r;
}

long kvbm_unpin_prefix(struct kvbm_pool *p, const struct kvbm_plh *hashes, size_t n)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;
	long k = 0;

	if (r < 0)
		return r;
	if (!hashes || n == 0)
		return -EINVAL;
	r = kvbm_store_lock(p, KVBM_OP_PIN, UINT32_MAX);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		uint32_t s = find_primary(p, hashes[i]);
		if (s == UINT32_MAX || !deadlines(p)[s])
			continue;
		kvbm_store_op(p, KVBM_OP_PIN, s);
		unpin_slot(p, s);
		k++;
	}
	/* the earliest deadline may have gone: the heap's top is the next
	 * (a lying heap: the repair at unlock recomputes it) */
	uint64_t t;
	uint32_t top;
	int e = heap_top(p, &top, &t);
	if (e >= 0) {
		__atomic_store_n(&p->seg.pins->next_ns, e ? t : UINT64_MAX, __ATOMIC_RELAXED);
		schedule(p, mono_ns());
	}
	kvbm_store_unlock(p);
	return k;
}

/* Whether every heap entry names a pinned slot under its word, at the place
 * the slot records, not before its parent (mutex held): O(pins), for the
 * explicit expiry call, since the lock's check sees only the top and a lie
 * below it would keep that pin until the top reached it. */
static int heap_valid(struct kvbm_pool *p)
{
	uint32_t n = heap_len(p);
	const struct kvbm_shm_pin_ent *a = heap(p);
	const uint64_t *d = deadlines(p);

	if (n != p->seg.pins->blocks)
		return 0;
	for (uint32_t i = 0; i < n; i++) {
		struct kvbm_shm_pin_ent e = a[i];
		if (e.slot >= p->nslots || !d[e.slot] || when(d[e.slot]) != e.when ||
		    heap_pos(p)[e.slot] != i || (i && a[(i - 1) / 2].when > e.when))
			return 0;
	}
	return 1;
}

long kvbm_pins_expire(struct kvbm_pool *p)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	/* the lock itself may expire what is due (its hook): counted too */
	expired_by_lock = 0;
	r = kvbm_store_lock(p, KVBM_OP_PIN, UINT32_MAX);
	if (r < 0)
		return r;
	uint64_t now = mono_ns(), next = UINT64_MAX;
	long k = expired_by_lock;
	if (heap_valid(p)) {
		k += expire_locked(p, now);
	} else {
		/* the words decide, and the repair at unlock rebuilds the heap */
		kvbm_store_corrupt(p);
		uint32_t n = expire_scan(p, now, &next);
		struct kvbm_shm_pins *h = p->seg.pins;
		__atomic_store_n(&h->next_ns, next, __ATOMIC_RELAXED);
		__atomic_store_n(&h->expired, h->expired + n, __ATOMIC_RELAXED);
		schedule(p, now);
		k += n;
	}
	kvbm_store_unlock(p);
	return k;
}

static uint64_t remaining_ms(uint64_t until, uint64_t now)
{
	return until > now ? (until - now + 999999) / 1000000 : 0;
}

int kvbm_pins_info(struct kvbm_pool *p, struct kvbm_pins_info *out)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	if (!out)
		return -EINVAL;
	r = kvbm_store_lock(p, KVBM_OP_PIN, UINT32_MAX);
	if (r < 0)
		return r;
	const struct kvbm_shm_pins *h = p->seg.pins;
	out->pins = h->tips;
	out->blocks = h->blocks;
	out->capacity = kvbm_pin_cap(&p->seg.cfg);
	out->pin_share = p->seg.cfg.pin_share;
	out->expirations = h->expired;
	out->next_expiry_ms = UINT64_MAX;
	uint64_t now = mono_ns(), t;
	uint32_t top;
	int e = heap_top(p, &top, &t);
	if (e > 0)
		out->next_expiry_ms = remaining_ms(t, now);
	for (uint32_t s = 0; e < 0 && s < p->nslots; s++) {
		/* a lying heap (repaired at unlock): the words */
		uint64_t v = deadlines(p)[s];
		uint64_t ms = v ? remaining_ms(when(v), now) : UINT64_MAX;
		if (ms < out->next_expiry_ms)
			out->next_expiry_ms = ms;
	}
	kvbm_store_unlock(p);
	return 0;
}

/* @x into the max-heap (on the block id) @out[0..m) at hole @i, down. */
static void list_sift(struct kvbm_pinned *out, size_t m, size_t i, struct kvbm_pinned x)
{
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= m)
			break;
		if (c + 1 < m && out[c + 1].block > out[c].block)
			c++;
		if (out[c].block <= x.block)
			break;
		out[i] = out[c];
		i = c;
	}
	out[i] = x;
}

/* Pinned block @s (deadline word @v) into @out, kept as a max-heap on the
 * block id while it holds @max: the @max lowest ids stay, whatever the
 * order they come in. @k: how many came before. */
static void list_add(struct kvbm_pool *p, struct kvbm_pinned *out, size_t max, long k,
		     uint32_t s, uint64_t v, uint64_t now)
{
	if ((size_t)k >= max && (!max || s > out[0].block))
		return;
	struct kvbm_pinned x = {.hash = kvbm_slot_key(kvbm_slot(p, s)),
				.block = s,
				.tip = (v & KVBM_PIN_TIP) != 0,
				.remaining_ms = remaining_ms(when(v), now)};
	if ((size_t)k >= max) {
		list_sift(out, max, 0, x);
		return;
	}
	size_t i = (size_t)k;
	for (; i > 0 && out[(i - 1) / 2].block < s; i = (i - 1) / 2)
		out[i] = out[(i - 1) / 2];
	out[i] = x;
}

/* The max-heap list_add built, in ascending block order (a heapsort: in
 * place, nothing allocated). */
static void list_sort(struct kvbm_pinned *out, size_t m)
{
	while (m > 1) {
		struct kvbm_pinned top = out[0];
		m--;
		list_sift(out, m, 0, out[m]);
		out[m] = top;
	}
}

long kvbm_pins_list(struct kvbm_pool *p, struct kvbm_pinned *out, size_t max)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;
	long k = 0;

	if (r < 0)
		return r;
	if (max && !out)
		return -EINVAL;
	r = kvbm_store_lock(p, KVBM_OP_PIN, UINT32_MAX);
	if (r < 0)
		return r;
	uint64_t now = mono_ns();
	if (heap_valid(p)) {
		/* O(pins): the expiry heap names every pinned block once
		 * (checked above against the words, which decide) */
		const struct kvbm_shm_pin_ent *a = heap(p);
		uint32_t n = heap_len(p);
		VISIT(n);
		for (uint32_t i = 0; i < n; i++, k++)
			list_add(p, out, max, k, a[i].slot, deadlines(p)[a[i].slot], now);
	} else {
		/* a lying heap: the words, and the repair at unlock */
		kvbm_store_corrupt(p);
		VISIT(p->nslots);
		for (uint32_t s = 0; s < p->nslots; s++) {
			uint64_t v = deadlines(p)[s];
			if (v)
				list_add(p, out, max, k++, s, v, now);
		}
	}
	kvbm_store_unlock(p);
	list_sort(out, (size_t)k < max ? (size_t)k : max);
	return k;
}
