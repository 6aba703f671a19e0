/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check.c - the invariants of docs/CRASH-SAFETY.md, checked against the
 * slot array (the source of truth): by kvbm-shm-dump --check, by the crash
 * and torture tests, and by recovery before it declares a repaired segment
 * consistent.
 *
 * A check may report only a state that no legal interleaving produces. So
 * what may be checked depends on who else is running:
 *  - always (even lock-free, on a live pool): a state word holds a valid
 *    state; no holder bit, holder entry or MUTABLE slot belongs to a free
 *    process-table entry (lock-free, only if no attach happened meanwhile);
 *  - KVBM_CK_LOCKED (the mutex is held): everything written under it -
 *    lists, index, dups, EVICTING, list membership - is exact;
 *  - KVBM_CK_QUIESCENT (nobody else runs): what live processes change
 *    lock-free is exact too: a holder bit has a non-zero entry behind it,
 *    no entry is tentative, no bit sits on a slot that is not REGISTERED
 *    (a pin about to undo itself), no release is unsettled, the inactive
 *    count is the marks' count, and (with KVBM_CK_LIVENESS) no dead process
 *    still holds anything: a death is legal at any moment, and until the
 *    next reap its holds are its own.
 *
 * The segment is untrusted (any attached process can write any byte): every
 * index read from it is bounds-checked against the config, which is read
 * once and checked against the mapping and the file first, and every walk
 * is bounded, a cycle being a violation. Recovery runs this under the mutex,
 * where nothing may be allocated: the checker uses no heap at all (counts
 * are compared as sums, see check_refs).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "pool.h"
#include "evict.h"
#include "../shm/liveness.h"
#include "../shm/proctable.h"

#define MAX_REPORTS 64 /* then one summary line: a broken pool has thousands */
/* Naming the target whose count is wrong costs a pass over every referrer
 * per window of targets (counters on the stack): the passes stop after
 * this many referrer visits, so a huge broken pool costs seconds at most */
#define LOCALISE_WINDOW 256u
#define LOCALISE_BUDGET (1ull << 27)

struct ck {
	const struct kvbm_seg *seg;
	struct kvbm_shm_config cfg; /* read once: every bound below comes from it */
	struct kvbm_evict_geom g;
	unsigned flags;
	kvbm_report_fn fn;
	void *arg;
	long n;
	uint32_t nslots, maxp;
	uint32_t pst[KVBM_MAX_PROCS];
	int dead[KVBM_MAX_PROCS];
	uint64_t attach_gen; /* control.attach_gen before pst[] was read */
	struct kvbm_index ix;
	/* the lineage forest (lineage backends) */
	const struct kvbm_shm_lnode *ln;
	const uint64_t *gpfrag;
	const uint32_t *heads;
	const struct kvbm_shm_hent *heap;
	int chains_ok; /* hash chains verified: parent lookups are bounded */
};

__attribute__((format(printf, 2, 3))) static void bad(struct ck *c, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (c->fn && c->n < MAX_REPORTS) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		c->fn(msg, c->arg);
	}
	c->n++;
}

static const kvbm_hold_t *htab(const struct ck *c, uint32_t proc)
{
	return (const kvbm_hold_t *)(c->seg->holders +
				     (uint64_t)proc * kvbm_holder_stride(&c->cfg));
}

static const char *state_name(uint32_t st)
{
	static const char *const names[] = {"RESET", "MUTABLE", "STAGED", "REGISTERED",
					    "EVICTING"};

	return st < 5 ? names[st] : "invalid";
}

/*
 * The mapping is what @cfg lays out, and the file still backs all of it. A
 * peer may rewrite the header after attach validated it, or truncate the
 * file (every later read past the new end would be SIGBUS): neither may
 * turn into a read outside the mapping. One fstat, bounded, is the only
 * syscall of a check without KVBM_CK_LIVENESS.
 */
int kvbm_check_mapping(const struct kvbm_seg *seg, const struct kvbm_shm_config *cfg)
{
	struct kvbm_shm_region want[KVBM_REGION_MAX];
	uint64_t total;
	struct stat st;

	if (!seg->base || seg->size < sizeof(struct kvbm_shm_header))
		return KVBM_ECORRUPT;
	if (kvbm_seg_layout(cfg, want, &total) < 0 || total != seg->size)
		return KVBM_ECORRUPT;
	const uint8_t *b = seg->base;
	if ((const uint8_t *)seg->ctl != b + want[KVBM_REGION_CONTROL].offset ||
	    (const uint8_t *)seg->procs != b + want[KVBM_REGION_PROCS].offset ||
	    (const uint8_t *)seg->slots != b + want[KVBM_REGION_SLOTS].offset ||
	    (const uint8_t *)seg->buckets != b + want[KVBM_REGION_REGISTRY].offset ||
	    seg->holders != b + want[KVBM_REGION_HOLDERS].offset ||
	    (const uint8_t *)seg->metrics != b + want[KVBM_REGION_METRICS].offset ||
	    (const uint8_t *)seg->evict != b + want[KVBM_REGION_EVICT].offset ||
	    (const uint8_t *)seg->pins != b + want[KVBM_REGION_PINS].offset)
		return KVBM_ECORRUPT;
	if (seg->fd >= 0 && fstat(seg->fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    (uint64_t)st.st_size < seg->size)
		return KVBM_ETRUNCATED;
	return 0;
}

/* The config, read once, and the mapping it must describe. */
static int check_mapping(struct ck *c)
{
	const struct kvbm_seg *seg = c->seg;
	int r = KVBM_ECORRUPT;

	if (seg->base && seg->size >= sizeof(struct kvbm_shm_header)) {
		memcpy(&c->cfg, &seg->hdr->config, sizeof(c->cfg));
		r = kvbm_check_mapping(seg, &c->cfg);
	}
	if (r == KVBM_ETRUNCATED) {
		bad(c, "segment file truncated, %zu bytes mapped: another process shrank it",
		    seg->size);
		return -1;
	}
	if (r < 0) {
		bad(c, "header: its config does not lay out the %zu bytes mapped (rewritten?)",
		    seg->size);
		return -1;
	}
	c->nslots = c->cfg.block_count;
	c->maxp = c->cfg.max_procs;
	kvbm_evict_geometry(&c->cfg, &c->g);
	return 0;
}

/* Whether process entry @p was FREE the whole time. Under the mutex pst[]
 * cannot move (attach, detach and reap hold it). Without it, an attach
 * after pst[] was read would make a legal bit look like a free entry's:
 * attach bumps control.attach_gen before its entry goes ACTIVE, and
 * anything of the new process we saw (acquire) was written after that. */
static int proc_free(const struct ck *c, uint32_t p)
{
	if (p >= c->maxp)
		return 1;
	if (c->pst[p] != KVBM_PROC_FREE)
		return 0;
	if (c->flags & KVBM_CK_LOCKED)
		return 1;
	/* after the acquire loads of the bit or entry in question, so it
	 * sees the attach that preceded their writer's store */
	return __atomic_load_n(&c->seg->ctl->attach_gen, __ATOMIC_ACQUIRE) == c->attach_gen;
}

/* Whether slot @s still has state word @w: without the mutex, a relation
 * between @w and a later load holds only if @w held across it (the
 * generation moves on every return to RESET, so RESET cannot come back). */
static int slot_stable(const struct ck *c, uint32_t s, uint64_t w)
{
	if (c->flags & KVBM_CK_LOCKED)
		return 1;
	/* program order after the acquire loads it is compared with */
	return __atomic_load_n(&c->seg->slots[s].state, __ATOMIC_ACQUIRE) == w;
}

/*
 * Holder bits and holder-table entries of slot @s. A live process keeps
 * "bit set => entry non-zero" at every instant (entry before bit on a pin,
 * bit before entry on an unpin), but the two are separate words: a reader
 * that loads the mask and then the entry can see the bit from before an
 * unpin and the entry from after it, and no re-read rules that out (a pin
 * and an unpin in between bring back the same bits). So that relation is
 * checked only when nobody runs. A free entry's bits and entries are
 * another matter: no interleaving makes them.
 */
static void check_holders(struct ck *c, uint32_t s, uint32_t st, uint64_t w, uint64_t h)
{
	/* the POOL bit is no process's: check_pin's */
	uint64_t pb = h & KVBM_HOLD_PROCBITS;
	int quiet = (c->flags & KVBM_CK_QUIESCENT) != 0;

	if (c->maxp < KVBM_MAX_PROCS && (pb >> c->maxp))
		bad(c, "slot %u: holder bits 0x%llx past the %u process entries", s,
		    (unsigned long long)pb, c->maxp);
	for (uint32_t p = 0; p < c->maxp; p++) {
		uint64_t bit = 1ull << p;
		kvbm_hold_t v = __atomic_load_n(&htab(c, p)[s], __ATOMIC_ACQUIRE);
		if (pb & bit) {
			if (proc_free(c, p))
				bad(c, "slot %u: holder bit of free process entry %u", s, p);
			else if (c->dead[p])
				bad(c, "slot %u: held by dead process entry %u, not reaped", s, p);
			else if (v == 0 && quiet)
				bad(c, "slot %u: process %u's holder bit set, its holder entry 0", s, p);
		}
		if (v == 0)
			continue;
		if (proc_free(c, p)) {
			bad(c, "process entry %u is free but its holder entry for slot %u is 0x%x", p,
			    s, v);
			continue;
		}
		if (!quiet)
			continue;
		if (v & KVBM_HOLD_TENT)
			bad(c, "slot %u: process %u left a tentative hold", s, p);
		if ((v & KVBM_HOLD_COUNT) && !(pb & bit))
			bad(c, "slot %u: process %u counts %u holds without its holder bit", s, p,
			    v & KVBM_HOLD_COUNT);
		int owns = (st == KVBM_SLOT_MUTABLE || st == KVBM_SLOT_STAGED) &&
			   kvbm_slot_owner(w) == p;
		if (!!(v & KVBM_HOLD_OWNED) != owns)
			bad(c, "slot %u: process %u's OWNED mark disagrees with the %s slot", s, p,
			    state_name(st));
	}
	if (pb && st != KVBM_SLOT_REGISTERED && st != KVBM_SLOT_EVICTING && quiet)
		bad(c, "slot %u: %s with holder bits 0x%llx", s, state_name(st),
		    (unsigned long long)pb);
}

/*
 * The pool's pin on slot @s: its deadline word and its POOL holder bit
 * change together under the mutex (lib/pins.c), so only a locked check
 * may compare them; @pinned and @tips count the words for the totals. A
 * bit on a slot that left REGISTERED is wrong at any time: a pinned slot
 * cannot be evicted, and the unpin clears the bit before it settles.
 */
static void check_pin(struct ck *c, uint32_t s, uint32_t st, uint64_t w, uint64_t h,
		      uint32_t *pinned, uint32_t *tips)
{
	const uint64_t *d = (const uint64_t *)(c->seg->pins + 1);
	uint64_t v = __atomic_load_n(&d[s], __ATOMIC_RELAXED);

	if ((h & KVBM_HOLD_POOL) && st != KVBM_SLOT_REGISTERED && st != KVBM_SLOT_EVICTING &&
	    slot_stable(c, s, w))
		bad(c, "slot %u: %s with the pool's pin bit", s, state_name(st));
	if (!(c->flags & KVBM_CK_LOCKED))
		return;
	*pinned += v != 0;
	*tips += (v & KVBM_PIN_TIP) != 0;
	if (v && (st != KVBM_SLOT_REGISTERED || !(kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY)))
		bad(c, "slot %u: pinned by the pool but %s%s", s, state_name(st),
		    st == KVBM_SLOT_REGISTERED ? ", a duplicate" : "");
	if (!v != !(h & KVBM_HOLD_POOL))
		bad(c, "slot %u: pool pin deadline %s but its POOL holder bit %s", s,
		    v ? "set" : "0", (h & KVBM_HOLD_POOL) ? "set" : "clear");
	if (v && (h & KVBM_HOLD_INACTIVE))
		bad(c, "slot %u: pinned by the pool and counted inactive", s);
}

/*
 * The expiry heap against the words (mutex held): one entry per pinned
 * block, each under its word's deadline, at the place its slot records
 * (so no slot twice), none earlier than its parent. A heap that fails
 * still expires nothing wrongly (lib/pins.c checks the top against its
 * word) but may expire late until a repair rebuilds it.
 */
static void check_pin_heap(struct ck *c, uint32_t pinned)
{
	const uint8_t *r = (const uint8_t *)c->seg->pins;
	const uint64_t *d = (const uint64_t *)(c->seg->pins + 1);
	const struct kvbm_shm_pin_ent *a =
		(const struct kvbm_shm_pin_ent *)(r + kvbm_pins_heap_off(&c->cfg));
	const uint32_t *pos = (const uint32_t *)(r + kvbm_pins_pos_off(&c->cfg));
	uint32_t n = c->seg->pins->heap_len;

	if (n != pinned) {
		bad(c, "pins: expiry heap of %u entries, %u deadlines set", n, pinned);
		if (n > kvbm_pin_cap(&c->cfg))
			return; /* past its room: not read */
	}
	for (uint32_t i = 0; i < n; i++) {
		struct kvbm_shm_pin_ent e = a[i];
		if (e.slot >= c->nslots) {
			bad(c, "pins: expiry heap entry %u names slot %u of %u", i, e.slot,
			    c->nslots);
			continue;
		}
		uint64_t v = d[e.slot];
		if ((v & ~KVBM_PIN_TIP) != e.when || !v)
			bad(c, "pins: expiry heap entry %u: slot %u at %llu, its deadline %llu", i,
			    e.slot, (unsigned long long)e.when, (unsigned long long)v);
		if (pos[e.slot] != i)
			bad(c, "pins: expiry heap entry %u: slot %u says it is at %u", i, e.slot,
			    pos[e.slot]);
		if (i && a[(i - 1) / 2].when > e.when)
			bad(c, "pins: expiry heap entry %u earlier than its parent", i);
	}
}

/* The pin region's counts against the words (mutex held). */
static void check_pin_totals(struct ck *c, uint32_t pinned, uint32_t tips)
{
	const struct kvbm_shm_pins *h = c->seg->pins;
	uint32_t cap = kvbm_pin_cap(&c->cfg);

	if (h->blocks != pinned)
		bad(c, "pins: %u blocks counted pinned, %u deadlines set", h->blocks, pinned);
	if (h->tips != tips)
		bad(c, "pins: %u pins counted, %u deadlines marked as a pin's end", h->tips, tips);
	if (pinned > cap)
		bad(c, "pins: %u blocks pinned, past the pin share's %u", pinned, cap);
	check_pin_heap(c, pinned);
}

/* The primary that duplicate @s (REGISTERED, not PRIMARY) names, if it is
 * one of its hash (mutex held), or UINT32_MAX. */
static uint32_t dup_primary(const struct ck *c, uint32_t s)
{
	const struct kvbm_shm_slot *sl = &c->seg->slots[s];
	uint32_t pr = sl->primary;

	if (pr == 0 || pr > c->nslots)
		return UINT32_MAX;
	const struct kvbm_shm_slot *ps = &c->seg->slots[pr - 1];
	uint64_t pw = __atomic_load_n(&ps->state, __ATOMIC_ACQUIRE);
	if (kvbm_slot_state(pw) != KVBM_SLOT_REGISTERED ||
	    !(kvbm_slot_flags(pw) & KVBM_SLOT_F_PRIMARY) ||
	    !kvbm_plh_eq(kvbm_slot_key(ps), kvbm_slot_key(sl)))
		return UINT32_MAX;
	return pr - 1;
}

/* A REGISTERED slot: primary in the index, duplicate pointing at one. */
static void check_registered(struct ck *c, uint32_t s, uint64_t w, uint64_t h)
{
	const struct kvbm_shm_slot *sl = &c->seg->slots[s];
	struct kvbm_plh key = kvbm_slot_key(sl);
	int locked = c->flags & KVBM_CK_LOCKED;
	int quiet = c->flags & KVBM_CK_QUIESCENT;
	int primary = (kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY) != 0;
	uint32_t fs;
	uint64_t fg;

	if (primary) {
		if (locked && (!kvbm_index_lookup(&c->ix, key, &fs, &fg) || fs != s ||
			       fg != kvbm_slot_gen(w)))
			bad(c, "slot %u: registered primary not found in the registry index", s);
		/* a pin in flight may have had it dropped, and will settle it */
		if ((h & KVBM_HOLD_INACTIVE) && locked && quiet && sl->list < KVBM_LIST_LRU)
			bad(c, "slot %u: inactive but not in the eviction order", s);
		if ((h & KVBM_HOLD_INACTIVE) && locked && sl->dups)
			bad(c, "slot %u: inactive with %u live duplicates", s, sl->dups);
		if ((h & KVBM_HOLD_INACTIVE) && (h & KVBM_HOLD_PROCS) && quiet)
			bad(c, "slot %u: counted inactive while held", s);
	} else {
		if ((h & KVBM_HOLD_INACTIVE) && locked)
			bad(c, "slot %u: a duplicate counted inactive", s);
		if (locked && sl->primary && dup_primary(c, s) == UINT32_MAX)
			bad(c, "slot %u: duplicate of slot %u, which is no primary of its hash", s,
			    sl->primary - 1);
	}
	/* a primary nobody holds stays active while a live duplicate of it
	 * does (settle leaves it alone): that is not an unsettled release */
	if (!(h & KVBM_HOLD_PROCS) && !(h & KVBM_HOLD_INACTIVE) && quiet &&
	    !(primary && sl->dups))
		bad(c, "slot %u: released by everyone but neither inactive nor freed", s);
}

/*
 * Reference counts without scratch memory. The counts the targets claim
 * and the references the items make are compared as two sums, of ones and
 * of a 64-bit mix of the target: they agree whenever every count is right,
 * and a wrong one makes them differ but with a chance of 2^-64. Only then
 * is the culprit looked for, a window of targets at a time, with counters
 * on the stack and a bounded number of item visits.
 */
struct refs {
	uint32_t nitems, ntargets;
	/* the target item @i refers to, or UINT32_MAX */
	uint32_t (*ref)(const struct ck *c, uint32_t i);
	/* 1 and *count when target @t keeps a count of its referrers */
	int (*claim)(const struct ck *c, uint32_t t, uint32_t *count);
	void (*report)(struct ck *c, uint32_t t, uint32_t claimed, uint32_t found);
	const char *what;
};

static uint64_t ref_mix(uint32_t t)
{
	return kvbm_index_mix((uint64_t)t + 0x9e3779b97f4a7c15ull);
}

static void check_refs(struct ck *c, const struct refs *r)
{
	uint64_t nref = 0, href = 0, nclaim = 0, hclaim = 0, budget = LOCALISE_BUDGET;
	uint32_t cnt[LOCALISE_WINDOW], k;
	long before = c->n;

	for (uint32_t i = 0; i < r->nitems; i++) {
		uint32_t t = r->ref(c, i);
		if (t < r->ntargets) {
			nref++;
			href += ref_mix(t);
		}
	}
	for (uint32_t t = 0; t < r->ntargets; t++)
		if (r->claim(c, t, &k)) {
			nclaim += k;
			hclaim += k * ref_mix(t);
		}
	if (nref == nclaim && href == hclaim)
		return;
	for (uint32_t t0 = 0; t0 < r->ntargets && c->n - before < MAX_REPORTS;
	     t0 += LOCALISE_WINDOW) {
		uint32_t end = r->ntargets - t0 < LOCALISE_WINDOW ? r->ntargets : t0 + LOCALISE_WINDOW;
		if (budget < r->nitems)
			break;
		budget -= r->nitems;
		memset(cnt, 0, sizeof(cnt));
		for (uint32_t i = 0; i < r->nitems; i++) {
			uint32_t t = r->ref(c, i);
			if (t >= t0 && t < end)
				cnt[t - t0]++;
		}
		for (uint32_t t = t0; t < end; t++)
			if (r->claim(c, t, &k) && k != cnt[t - t0])
				r->report(c, t, k, cnt[t - t0]);
	}
	if (c->n == before)
		bad(c, "%s: %llu counted, %llu references (not localised)", r->what,
		    (unsigned long long)nclaim, (unsigned long long)nref);
}

static uint32_t dup_ref(const struct ck *c, uint32_t s)
{
	uint64_t w = __atomic_load_n(&c->seg->slots[s].state, __ATOMIC_ACQUIRE);

	if (kvbm_slot_state(w) != KVBM_SLOT_REGISTERED || (kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY))
		return UINT32_MAX;
	return dup_primary(c, s);
}

static int dup_claim(const struct ck *c, uint32_t s, uint32_t *count)
{
	const struct kvbm_shm_slot *sl = &c->seg->slots[s];
	uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_ACQUIRE);

	if (kvbm_slot_state(w) != KVBM_SLOT_REGISTERED || !(kvbm_slot_flags(w) & KVBM_SLOT_F_PRIMARY))
		return 0;
	*count = sl->dups;
	return 1;
}

static void dup_report(struct ck *c, uint32_t s, uint32_t claimed, uint32_t found)
{
	bad(c, "slot %u: counts %u duplicates, %u point at it", s, claimed, found);
}

static void check_free_list(struct ck *c, uint32_t nreset)
{
	const struct kvbm_shm_control *ctl = c->seg->ctl;
	uint32_t k = 0, last = 0;

	for (uint32_t s1 = ctl->free_head; s1; s1 = c->seg->slots[s1 - 1].next) {
		if (s1 > c->nslots || k >= c->nslots) {
			bad(c, "free list: broken link %u after %u entries (or a cycle)", s1, k);
			return;
		}
		const struct kvbm_shm_slot *sl = &c->seg->slots[s1 - 1];
		uint32_t st = kvbm_slot_state(__atomic_load_n(&sl->state, __ATOMIC_ACQUIRE));
		if (st != KVBM_SLOT_RESET || sl->list != KVBM_LIST_FREE)
			bad(c, "free list: slot %u is %s (list %u)", s1 - 1, state_name(st), sl->list);
		last = s1;
		k++;
	}
	if (last != ctl->free_tail)
		bad(c, "free list: tail %u, last entry %u", ctl->free_tail, last);
	if (k != ctl->free_count)
		bad(c, "free list: %u entries, free count %u", k, ctl->free_count);
	if (k != nreset)
		bad(c, "free list: %u entries, %u RESET slots", k, nreset);
}

static void check_list(struct ck *c, uint32_t lv, uint32_t want_list, uint32_t *listed)
{
	const struct kvbm_shm_list *l = &c->seg->ctl->lists[lv];
	uint32_t k = 0, prev = 0;

	for (uint32_t s1 = l->head; s1; s1 = c->seg->slots[s1 - 1].next) {
		if (s1 > c->nslots || k >= c->nslots) {
			bad(c, "eviction list %u: broken link %u after %u entries (or a cycle)", lv, s1,
			    k);
			return;
		}
		const struct kvbm_shm_slot *sl = &c->seg->slots[s1 - 1];
		if (sl->list != want_list || sl->prev != prev)
			bad(c, "eviction list %u: slot %u has list %u, prev %u (expected %u)", lv,
			    s1 - 1, sl->list, sl->prev, prev);
		/* lru keeps a list per release hint (lib/evict.c, lru_first):
		 * recovery puts a block back in the one its tick names */
		if (c->cfg.backend == KVBM_BACKEND_LRU && lv &&
		    (lv >= KVBM_HINT_COUNT || (sl->tick & KVBM_TICK_HINT) != lv ||
		     (sl->tick & KVBM_TICK_CONTROL)))
			bad(c, "eviction list %u: slot %u's tick names hint %u%s", lv, s1 - 1,
			    (unsigned)(sl->tick & KVBM_TICK_HINT),
			    sl->tick & KVBM_TICK_CONTROL ? " (control sample)" : "");
		prev = s1;
		k++;
	}
	if (prev != l->tail)
		bad(c, "eviction list %u: tail %u, last entry %u", lv, l->tail, prev);
	if (k != l->len)
		bad(c, "eviction list %u: %u entries, length %u", lv, k, l->len);
	*listed += k;
}

/* ---- the lineage forest ------------------------------------------------------ */

/* Node @n's parent key fragment: a real node's (n < slots) from its slot's
 * key, a ghost's (the rest of the nodes) from the pfrag array. By range,
 * never by the flags, which may lie. */
static uint64_t node_pfrag(const struct ck *c, uint32_t n)
{
	if (n >= c->nslots)
		return c->gpfrag[n - c->nslots];
	return kvbm_plh_parent_fragment(kvbm_slot_key(&c->seg->slots[n]));
}

/* The node a lookup of linked node @n's parent key finds (lin_find: a real
 * one first, else the last ghost), or UINT32_MAX. Only once the chains are
 * verified: each walk is then as long as its chain at most. */
static uint32_t node_parent(const struct ck *c, uint32_t n)
{
	const struct kvbm_shm_lnode *nd = &c->ln[n];
	uint32_t pos = nd->pos_fl & KVBM_LN_POS, par = UINT32_MAX;

	if (!c->chains_ok || !(nd->pos_fl & KVBM_LN_USED) || !(nd->pos_fl & KVBM_LN_LINKED) ||
	    pos == 0)
		return UINT32_MAX;
	uint64_t pfrag = node_pfrag(c, n);
	uint32_t b = kvbm_lineage_bucket(pos - 1, pfrag, c->g.buckets);
	for (uint32_t m1 = c->heads[b], k = 0; m1 && m1 <= c->g.nodes && k < c->g.nodes;
	     m1 = c->ln[m1 - 1].hnext, k++) {
		const struct kvbm_shm_lnode *pm = &c->ln[m1 - 1];
		if ((pm->pos_fl & KVBM_LN_POS) != pos - 1 || pm->frag != pfrag)
			continue;
		if (!(pm->pos_fl & KVBM_LN_GHOST))
			return m1 - 1;
		par = m1 - 1;
	}
	return par;
}

static uint32_t kid_ref(const struct ck *c, uint32_t n)
{
	return node_parent(c, n);
}

static int kid_claim(const struct ck *c, uint32_t n, uint32_t *count)
{
	if (!(c->ln[n].pos_fl & KVBM_LN_USED))
		return 0;
	*count = c->ln[n].nchild;
	return 1;
}

static void kid_report(struct ck *c, uint32_t n, uint32_t claimed, uint32_t found)
{
	bad(c, "lineage: node %u counts %u children, %u are linked to it", n, claimed, found);
}

/* Every used node in the chain of its own key, once: then the chains are
 * disjoint and hold at most one entry per node, and a parent lookup is
 * bounded. Returns the entries seen. */
static uint32_t check_chains(struct ck *c)
{
	uint32_t hashed = 0;

	c->chains_ok = 1;
	for (uint32_t b = 0; b < c->g.buckets; b++)
		for (uint32_t n1 = c->heads[b], prev = 0; n1; prev = n1, n1 = c->ln[n1 - 1].hnext) {
			if (n1 > c->g.nodes || hashed >= c->g.nodes) {
				bad(c, "lineage: hash chain %u broken at node %u (or a cycle)", b, n1);
				c->chains_ok = 0;
				return hashed;
			}
			const struct kvbm_shm_lnode *nd = &c->ln[n1 - 1];
			if (!(nd->pos_fl & KVBM_LN_USED) ||
			    kvbm_lineage_bucket(nd->pos_fl & KVBM_LN_POS, nd->frag, c->g.buckets) != b) {
				bad(c, "lineage: node %u in hash chain %u is no node keyed there", n1 - 1,
				    b);
				c->chains_ok = 0;
				return hashed;
			}
			/* the back link unlinks without a walk (lib/evict.c) */
			if (nd->hprev != prev)
				bad(c, "lineage: node %u in hash chain %u has back link %u, not %u "
				       "(node + 1, 0 for the chain's first)",
				    n1 - 1, b, nd->hprev, prev);
			hashed++;
		}
	return hashed;
}

/* While evict.twins is clear the forest trusts a hint that has a key to be
 * the only node with it: no two nodes of a chain may then share a key.
 * Only once the chains are verified: each walk is as long as its chain. */
static void check_twins(struct ck *c)
{
	if (!c->chains_ok || c->seg->evict->twins)
		return;
	for (uint32_t b = 0; b < c->g.buckets; b++)
		for (uint32_t n1 = c->heads[b]; n1; n1 = c->ln[n1 - 1].hnext) {
			const struct kvbm_shm_lnode *nd = &c->ln[n1 - 1];
			for (uint32_t m1 = nd->hnext; m1; m1 = c->ln[m1 - 1].hnext) {
				const struct kvbm_shm_lnode *md = &c->ln[m1 - 1];
				if (((md->pos_fl ^ nd->pos_fl) & KVBM_LN_POS) == 0 && md->frag == nd->frag)
					bad(c, "lineage: nodes %u and %u share a key, key twins not marked",
					    n1 - 1, m1 - 1);
			}
		}
}

/* The free ghosts: a chain through hnext of unused ghost-range nodes. */
static void check_ghost_free(struct ck *c, uint32_t nghosts)
{
	const struct kvbm_shm_evict *e = c->seg->evict;
	uint32_t k = 0;

	for (uint32_t g1 = e->ghost_free; g1; g1 = c->ln[g1 - 1].hnext, k++) {
		if (g1 <= c->nslots || g1 > c->g.nodes || k >= c->g.ghosts) {
			bad(c, "lineage: free ghost list broken at %u after %u (or a cycle)", g1, k);
			return;
		}
		if (c->ln[g1 - 1].pos_fl & KVBM_LN_USED)
			bad(c, "lineage: node %u is used and on the free ghost list", g1 - 1);
	}
	if (k + nghosts != c->g.ghosts)
		bad(c, "lineage: %u free ghosts and %u used, of %u", k, nghosts, c->g.ghosts);
}

/* Tick's run (lib/evict.c): leaves in strictly increasing (tick, slot),
 * unhinted, each marked as in it; returns how many. */
static uint32_t check_run(struct ck *c)
{
	uint32_t inrun = 0, prev = 0;
	uint64_t pt = 0;

	check_list(c, 0, KVBM_LIST_LINEAGE, &inrun);
	if (inrun != c->seg->ctl->lists[0].len)
		return inrun; /* a broken list: check_list said so */
	for (uint32_t s1 = c->seg->ctl->lists[0].head, k = 0; s1 && k < inrun;
	     s1 = c->seg->slots[s1 - 1].next, k++) {
		/* read again: a peer may have written it since check_list() */
		if (s1 > c->nslots) {
			bad(c, "lineage run: broken link %u after %u entries", s1, k);
			break;
		}
		const struct kvbm_shm_slot *sl = &c->seg->slots[s1 - 1];
		uint64_t t = sl->tick >> KVBM_TICK_SHIFT;
		if (c->ln[s1 - 1].hpos != KVBM_LN_RUN)
			bad(c, "lineage run: slot %u is not marked as in it", s1 - 1);
		if (sl->tick & KVBM_TICK_HINT)
			bad(c, "lineage run: slot %u carries a hint", s1 - 1);
		if (prev && (t < pt || (t == pt && s1 <= prev)))
			bad(c, "lineage run: slot %u (tick %llu) after slot %u (tick %llu)", s1 - 1,
			    (unsigned long long)t, prev - 1, (unsigned long long)pt);
		prev = s1;
		pt = t;
	}
	return inrun;
}

/* The lineage forest: the leaf order holds exactly the childless real
 * nodes, every child count is what the keys say, ghosts are accounted. */
static void check_forest(struct ck *c, uint32_t *listed)
{
	const struct kvbm_shm_evict *e = c->seg->evict;
	const struct kvbm_evict_geom *g = &c->g;
	const uint8_t *base = (const uint8_t *)e;
	int fifo = c->cfg.backend == KVBM_BACKEND_LINEAGE_FIFO;
	int queued = kvbm_backend_is_queued(c->cfg.backend); /* the queues hold the order */
	int heap = kvbm_backend_has_heap(c->cfg.backend) && !fifo; /* leaves in the heap */
	uint32_t nghosts = 0, nleaves = 0, used = 0, listed0 = *listed;

	c->ln = (const void *)(base + g->nodes_off);
	c->heap = (const void *)(base + g->heap_off);
	c->gpfrag = (const void *)(base + g->pfrag_off);
	c->heads = (const void *)(base + g->heads_off);
	uint32_t hashed = check_chains(c);
	check_twins(c);
	for (uint32_t n = 0; n < g->nodes; n++) {
		const struct kvbm_shm_lnode *nd = &c->ln[n];
		if (!(nd->pos_fl & KVBM_LN_USED))
			continue;
		used++;
		int ghost = (nd->pos_fl & KVBM_LN_GHOST) != 0;
		if (ghost != (n >= c->nslots))
			bad(c, "lineage: node %u is %s in the %s range", n, ghost ? "a ghost" : "real",
			    n >= c->nslots ? "ghost" : "slot");
		nghosts += ghost;
		if (n < c->nslots && !ghost && !queued &&
		    c->seg->slots[n].list != KVBM_LIST_LINEAGE)
			bad(c, "lineage: node of slot %u, which is not marked in the forest", n);
		if (n < c->nslots && !ghost && queued &&
		    (c->seg->slots[n].list < KVBM_LIST_LRU ||
		     c->seg->slots[n].list >= KVBM_LIST_LRU + 4))
			bad(c, "lineage: node of slot %u, which is on no eviction queue", n);
		if (!ghost && !nd->nchild)
			nleaves++;
		if (ghost && !nd->nchild)
			bad(c, "lineage: ghost node %u has no children", n);
		if (!ghost && !heap && !fifo && nd->hpos)
			bad(c, "lineage: node %u has a leaf-order entry in a queued backend", n);
		if (!ghost && heap && (nd->nchild != 0) == (nd->hpos != 0))
			bad(c, "lineage: node %u has %u children and %s the leaf order", n, nd->nchild,
			    nd->hpos ? "is in" : "is not in");
		/* else an orphan: its parent went ghostless */
		if ((nd->pos_fl & KVBM_LN_LINKED) && (nd->pos_fl & KVBM_LN_POS) && c->chains_ok &&
		    !e->orphans && node_parent(c, n) == UINT32_MAX)
			bad(c, "lineage: node %u counted in a parent that is gone", n);
		if (!ghost)
			(*listed)++;
	}
	if (c->chains_ok && hashed != used)
		bad(c, "lineage: %u nodes in the hash chains, %u in the forest", hashed, used);
	if (c->chains_ok && !e->orphans) {
		const struct refs kids = {g->nodes, g->nodes, kid_ref, kid_claim, kid_report,
					  "lineage child counts"};
		check_refs(c, &kids);
	}
	check_ghost_free(c, nghosts);
	if (nghosts != e->nghosts)
		bad(c, "lineage: %u ghosts, %u counted", nghosts, e->nghosts);
	if (*listed - listed0 != e->nreal)
		bad(c, "lineage: %u real nodes, %u counted", *listed - listed0, e->nreal);
	if (!heap && !fifo) {
		if (e->nheap)
			bad(c, "lineage: %u heap entries in a backend without a heap", e->nheap);
	} else if (heap) {
		for (uint32_t i = 0; i < e->nheap && i < c->nslots; i++) {
			uint32_t n = c->heap[i].node;
			if (n >= c->nslots || c->ln[n].hpos != i + 1) {
				bad(c, "lineage: heap entry %u (node %u) does not point back", i, n);
				continue;
			}
			if (i && c->heap[i].prio < c->heap[(i - 1) / 4].prio)
				bad(c, "lineage: heap order broken at entry %u", i);
		}
		uint32_t inrun = 0;
		if (c->cfg.backend == KVBM_BACKEND_LINEAGE)
			inrun = check_run(c);
		if (e->nheap + inrun != nleaves)
			bad(c, "lineage: %u leaves, %u in the heap and %u in the run", nleaves,
			    e->nheap, inrun);
	} else {
		uint32_t inlist = 0;
		check_list(c, 0, KVBM_LIST_LINEAGE, &inlist);
		if (inlist != nleaves)
			bad(c, "lineage: %u leaves, %u in the leaf list", nleaves, inlist);
	}
}

/* The eviction region's header: written at init and by recovery only. */
static void check_evict_header(struct ck *c)
{
	const struct kvbm_shm_evict *e = c->seg->evict;

	if (e->sketch_words != c->g.sketch_words || e->lin_nodes != c->g.nodes ||
	    e->lin_buckets != c->g.buckets)
		bad(c, "eviction region: %u sketch words, %u nodes in %u buckets; the config says "
		       "%u, %u in %u",
		    e->sketch_words, e->lin_nodes, e->lin_buckets, c->g.sketch_words, c->g.nodes,
		    c->g.buckets);
	if (!c->g.nodes && (e->nheap || e->nghosts || e->nreal || e->ghost_free || e->orphans))
		bad(c, "eviction region: a lineage forest in a pool without one");
}

/*
 * The queues of S3-FIFO, ARC, W-TinyLFU and LeCaR (evict_queue.c): only the
 * backend's own are used, every entry's tick names its queue, and the queue
 * ticks never decrease along a queue and are all below the counter, which
 * is what lets recovery rebuild each queue from the ticks alone.
 */
static void check_queues(struct ck *c)
{
	const struct kvbm_shm_evict *e = c->seg->evict;
	uint32_t nq = c->cfg.backend == KVBM_BACKEND_WTINYLFU ? 3
		      : c->cfg.backend == KVBM_BACKEND_LECAR  ? 1
							      : 2;

	for (uint32_t q = 0; q < 4; q++) {
		const struct kvbm_shm_list *l = &c->seg->ctl->lists[q];
		uint64_t last = 0;
		uint32_t k = 0;
		if (q >= nq && (l->head || l->len)) {
			bad(c, "eviction queue %u: used, the backend has %u", q, nq);
			continue;
		}
		/* check_list verified the links: this walk is as long as the list */
		for (uint32_t s1 = l->head; s1 && s1 <= c->nslots && k < c->nslots;
		     s1 = c->seg->slots[s1 - 1].next, k++) {
			uint64_t t = c->seg->slots[s1 - 1].tick, qt = t >> KVBM_QT_SHIFT;
			if ((t & KVBM_QT_QUEUE) != q)
				bad(c, "eviction queue %u: slot %u's tick names queue %u", q, s1 - 1,
				    (unsigned)(t & KVBM_QT_QUEUE));
			if (qt < last)
				bad(c, "eviction queue %u: slot %u's tick %llu after %llu", q, s1 - 1,
				    (unsigned long long)qt, (unsigned long long)last);
			if (qt >= e->qtick)
				bad(c, "eviction queue %u: slot %u's tick %llu, the counter is at %llu",
				    q, s1 - 1, (unsigned long long)qt, (unsigned long long)e->qtick);
			last = qt;
		}
	}
	if (c->cfg.backend == KVBM_BACKEND_ARC && e->qtarget > c->nslots)
		bad(c, "ARC: target %u past the pool's %u blocks", e->qtarget, c->nslots);
	if (c->cfg.backend == KVBM_BACKEND_LECAR &&
	    ((int32_t)e->qtarget > (int32_t)KVBM_LECAR_ONE / 2 ||
	     (int32_t)e->qtarget < -(int32_t)KVBM_LECAR_ONE / 2))
		bad(c, "LeCaR: LRU weight %d / 2^20 past one half either way", (int32_t)e->qtarget);
}

static void check_order(struct ck *c, uint32_t marked)
{
	uint32_t listed = 0;

	check_evict_header(c);
	if (kvbm_backend_is_lineage(c->cfg.backend))
		check_forest(c, &listed);
	else
		for (uint32_t lv = 0; lv < 4; lv++)
			check_list(c, lv, KVBM_LIST_LRU + lv, &listed);
	if (kvbm_backend_is_queued(c->cfg.backend)) {
		uint32_t inforest = 0;
		check_queues(c);
		check_forest(c, &inforest);
		if (inforest != listed)
			bad(c, "eviction order: %u queued, %u in the lineage forest", listed,
			    inforest);
	}
	if (listed != marked)
		bad(c, "eviction order: %u entries, %u slots marked", listed, marked);
}

static void check_index(struct ck *c)
{
	static const char *const why[] = {"", "names no registered primary of its generation",
					  "sits where its key does not hash",
					  "is not what a lookup of its key finds"};

	for (uint32_t b = 0; b <= c->ix.mask + KVBM_INDEX_STASH_BUCKETS; b++)
		for (int i = 0; i < KVBM_BUCKET_ENTRIES; i++) {
			int r = kvbm_index_entry_check(&c->ix, b, i);
			if (r < 0)
				bad(c, "registry index: bucket %u entry %d (slot %u) %s", b, i,
				    kvbm_index_bucket(&c->ix, b)->slot[i] - 1, why[-r]);
		}
	/* a count below the entries hides them from lookups; above, it
	 * only costs misses a search of the stash */
	uint32_t used = __atomic_load_n(c->ix.stash_used, __ATOMIC_RELAXED);
	uint32_t n = kvbm_index_stash_count(&c->ix);
	if (used != n)
		bad(c, "registry index: the stash counts %u entries and holds %u", used, n);
}

/* The process table; with LIVENESS and nobody else running, who is dead. */
static void read_procs(struct ck *c)
{
	const struct kvbm_seg *seg = c->seg;

	/* before the states: see proc_free() */
	c->attach_gen = __atomic_load_n(&seg->ctl->attach_gen, __ATOMIC_ACQUIRE);
	for (uint32_t p = 0; p < c->maxp; p++) {
		const struct kvbm_shm_proc *e = &seg->procs[p];
		c->pst[p] = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
		if (c->pst[p] > KVBM_PROC_RECLAIMING)
			bad(c, "process entry %u: invalid state %u", p, c->pst[p]);
		c->dead[p] = (c->flags & KVBM_CK_LIVENESS) && (c->flags & KVBM_CK_QUIESCENT) &&
			     c->pst[p] == KVBM_PROC_ACTIVE && p != seg->self &&
			     kvbm_proc_liveness(seg->fd, p, e) != KVBM_ALIVE;
		if ((c->flags & KVBM_CK_LOCKED) && c->pst[p] == KVBM_PROC_RECLAIMING)
			bad(c, "process entry %u: left RECLAIMING", p);
	}
}

/* An owned (MUTABLE or STAGED) slot's owner is attached. */
static void check_owned(struct ck *c, uint32_t s, uint32_t st, uint64_t w)
{
	uint32_t o = kvbm_slot_owner(w);

	if (proc_free(c, o) && slot_stable(c, s, w))
		bad(c, "slot %u: %s, owned by free process entry %u", s, state_name(st), o);
	else if (o < c->maxp && c->dead[o])
		bad(c, "slot %u: %s, owned by dead process entry %u, not reaped", s, state_name(st),
		    o);
	if ((c->flags & KVBM_CK_LOCKED) && c->seg->slots[s].list != KVBM_LIST_NONE)
		bad(c, "slot %u: %s but on pool list %u", s, state_name(st),
		    c->seg->slots[s].list);
}

long kvbm_check_seg(const struct kvbm_seg *seg, unsigned flags, kvbm_report_fn fn, void *arg)
{
	struct ck c = {.seg = seg, .flags = flags, .fn = fn, .arg = arg};
	uint32_t nreset = 0, on_lru = 0, pinned = 0, tips = 0;
	int64_t ninactive = 0;

	if (check_mapping(&c) < 0)
		goto out;
	kvbm_index_view(&c.ix, seg->buckets, kvbm_index_buckets(c.nslots), seg->slots, c.nslots);
	read_procs(&c);
	for (uint32_t s = 0; s < c.nslots; s++) {
		const struct kvbm_shm_slot *sl = &seg->slots[s];
		uint64_t w = __atomic_load_n(&sl->state, __ATOMIC_ACQUIRE);
		uint64_t h = __atomic_load_n(&sl->holders, __ATOMIC_ACQUIRE);
		uint32_t st = kvbm_slot_state(w);

		if (st > KVBM_SLOT_EVICTING) {
			bad(&c, "slot %u: invalid state %u", s, st);
			continue;
		}
		check_holders(&c, s, st, w, h);
		check_pin(&c, s, st, w, h, &pinned, &tips);
		ninactive += (h & KVBM_HOLD_INACTIVE) != 0;
		if (flags & KVBM_CK_LOCKED)
			on_lru += sl->list >= KVBM_LIST_LRU;
		switch (st) {
		case KVBM_SLOT_RESET:
			nreset++;
			if ((h & KVBM_HOLD_INACTIVE) && slot_stable(&c, s, w))
				bad(&c, "slot %u: RESET but counted inactive", s);
			break;
		case KVBM_SLOT_MUTABLE:
		case KVBM_SLOT_STAGED:
			check_owned(&c, s, st, w);
			break;
		case KVBM_SLOT_EVICTING:
			if (flags & KVBM_CK_LOCKED)
				bad(&c, "slot %u: left EVICTING", s);
			break;
		default:
			check_registered(&c, s, w, h);
		}
	}
	if (flags & KVBM_CK_LOCKED) {
		const struct refs dups = {c.nslots, c.nslots, dup_ref, dup_claim, dup_report,
					  "duplicate counts"};
		check_refs(&c, &dups);
		check_free_list(&c, nreset);
		check_order(&c, on_lru);
		check_index(&c);
		check_pin_totals(&c, pinned, tips);
	}
	if (flags & KVBM_CK_QUIESCENT) {
		int64_t counted = __atomic_load_n(&seg->ctl->inactive, __ATOMIC_RELAXED);
		if (counted != ninactive)
			bad(&c, "inactive count %lld, %lld slots marked inactive", (long long)counted,
			    (long long)ninactive);
	}
out:
	if (c.n > MAX_REPORTS && fn) {
		char msg[64];
		snprintf(msg, sizeof(msg), "... %ld violations in all", c.n);
		fn(msg, arg);
	}
	return c.n;
}

long kvbm_pool_check(struct kvbm_pool *p, unsigned flags, kvbm_report_fn report, void *arg)
{
	unsigned ck = KVBM_CK_LIVENESS;
	long r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	if (r < 0)
		return r;
	if (flags & ~(KVBM_CHECK_LOCK | KVBM_CHECK_QUIESCENT))
		return -EINVAL;
	if (flags & KVBM_CHECK_QUIESCENT)
		ck |= KVBM_CK_QUIESCENT;
	if (flags & KVBM_CHECK_LOCK) {
		r = kvbm_store_lock(p, KVBM_OP_NONE, 0);
		if (r < 0)
			return r;
		/* the dead are reaped first: until then their holds are theirs,
		 * which no invariant forbids, and a reap is what they wait for */
		r = kvbm_proc_reap_locked(&p->seg);
		kvbm_store_op(p, KVBM_OP_NONE, 0);
		if (r < 0) {
			kvbm_store_unlock(p);
			return r;
		}
		ck |= KVBM_CK_LOCKED;
	}
	r = kvbm_check_seg(&p->seg, ck, report, arg);
	if (flags & KVBM_CHECK_LOCK)
		kvbm_store_unlock(p);
	return r;
}
