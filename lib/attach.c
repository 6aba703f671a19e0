/* SPDX-License-Identifier: Apache-2.0 */
/*
 * attach.c - process-local attachments and touch callbacks keyed by
 * sequence hash (the reference's registration-handle attachments, spec 2.5).
 *
 * One liburcu lock-free hash table (cds_lfht) per attach handle maps a hash
 * to an entry; lookups run under the bulletproof RCU flavour (urcu-bp: no
 * thread registration, which a library cannot demand of its callers). An
 * entry carries its values behind its own mutex, and the registration it
 * belongs to: the (slot, generation) of the hash's primary when the entry
 * was made. The registry index says, lock-free, whether that is still the
 * hash's primary; once it is not, the entry is stale and whoever meets it
 * unlinks it.
 *
 * Lifetime: the table holds one reference on each linked entry and every
 * caller using an entry holds one more. Unlinking marks the entry dead under
 * its mutex (so nothing is attached to it afterwards), deletes the node,
 * waits for a grace period (after which no reader can find it, so no new
 * reference appears) and drops the table's reference; the last reference
 * frees it and calls the values' free functions. No call_rcu: its worker
 * threads would not survive the fork()s inference servers do, and the
 * table does not auto-resize for the same reason (its size is fixed from the
 * pool's block count; stale entries are swept when they pile up).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-bp.h>
#include <urcu/rculfhash.h>

#include "pool.h"

/*
 * ThreadSanitizer cannot see liburcu's publication and grace periods (they
 * are inline assembly in an uninstrumented library); these annotations tell
 * it what they guarantee: a node's fields are written before it is linked,
 * and a read-side critical section ends before the grace period that
 * follows it does.
 */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define TSAN_RELEASE(a) __tsan_release(a)
#define TSAN_ACQUIRE(a) __tsan_acquire(a)
#else
#define TSAN_RELEASE(a) ((void)(a))
#define TSAN_ACQUIRE(a) ((void)(a))
#endif
static char grace_token;

enum { KIND_UNIQUE = 1, KIND_MULTIPLE = 2 };

struct att_type {
	uint32_t type, kind, n, cap;
	void **vals;
	kvbm_value_free_fn *frees;
};

/* Touch callbacks: an append-only list; a node never changes once linked. */
struct att_cb {
	struct att_cb *next;
	kvbm_touch_fn fn;
	void *arg;
};

struct att_entry {
	struct cds_lfht_node node;
	struct kvbm_plh key;
	uint32_t slot;      /* the registration this entry belongs to */
	uint64_t gen;
	uint32_t refs;      /* the table's, if linked, + users'; atomic */
	pthread_mutex_t mu; /* guards everything below */
	int dead;           /* unlinked: attach nothing more */
	uint32_t ntypes, captypes;
	struct att_type *types;
	struct att_cb *cbs, *cbs_last;
	uint32_t ncbs;
	struct att_entry *gc_next; /* teardown's list */
};

struct kvbm_att {
	struct cds_lfht *ht; /* created on first use; atomic */
	pthread_mutex_t mu;  /* serialises that creation */
	unsigned long buckets;
	long count; /* linked entries; atomic */
};

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

/*
 * The entries this thread holds locked while it runs kvbm_attachments_each
 * callbacks, innermost first (a callback may call each() on another hash).
 * A callback may attach to another hash, which may sweep stale entries or
 * drop one: neither may wait for a lock this thread holds. The sweep only
 * tries locks (a busy entry waits for the next sweep); a call on a hash
 * whose entry this thread holds gets KVBM_EDEADLK.
 */
struct held {
	const struct att_entry *e;
	const struct held *up;
};
static __thread const struct held *held_by_me;

static int held_here(const struct att_entry *e)
{
	for (const struct held *h = held_by_me; h; h = h->up)
		if (h->e == e)
			return 1;
	return 0;
}

/* urcu-bp's fork hooks keep its registry consistent in a forked child
 * (liburcu's README: the one flavour made to survive fork). */
static void register_fork_hooks(void)
{
	(void)pthread_atfork(urcu_bp_before_fork, urcu_bp_after_fork_parent,
			     urcu_bp_after_fork_child);
}

static unsigned long key_hash(struct kvbm_plh k)
{
	uint64_t x = k.hi ^ (k.lo * 0x9e3779b97f4a7c15ull);

	/* murmur3's finaliser: the table buckets by the low bits */
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return (unsigned long)x;
}

static int key_match(struct cds_lfht_node *node, const void *key)
{
	struct att_entry *e = caa_container_of(node, struct att_entry, node);

	TSAN_ACQUIRE(e);
	return kvbm_plh_eq(e->key, *(const struct kvbm_plh *)key);
}

int kvbm_att_setup(struct kvbm_pool *p)
{
	struct kvbm_att *a = calloc(1, sizeof(*a));
	unsigned long b = 64;

	if (!a)
		return -ENOMEM;
	pthread_mutex_init(&a->mu, NULL);
	/* about one bucket per two blocks: a hash has at most one entry per
	 * registration, and registrations are bounded by the block count */
	while (b < p->nslots / 2 && b < (1ul << 20))
		b <<= 1;
	a->buckets = b;
	p->att = a;
	return 0;
}

static struct cds_lfht *table(struct kvbm_att *a, int create)
{
	struct cds_lfht *ht = __atomic_load_n(&a->ht, __ATOMIC_ACQUIRE);

	if (ht || !create)
		return ht;
	pthread_once(&fork_once, register_fork_hooks);
	pthread_mutex_lock(&a->mu);
	ht = a->ht;
	if (!ht) {
		ht = cds_lfht_new_flavor(a->buckets, a->buckets, a->buckets, 0, &urcu_bp_flavor,
					 NULL);
		/* release: the table is initialised before others use it */
		__atomic_store_n(&a->ht, ht, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&a->mu);
	return ht;
}

static void entry_free(struct att_entry *e, int call_free)
{
	for (uint32_t t = 0; t < e->ntypes; t++) {
		struct att_type *ty = &e->types[t];
		for (uint32_t i = 0; i < ty->n; i++)
			if (call_free && ty->frees[i])
				ty->frees[i](ty->vals[i]);
		free(ty->vals);
		free(ty->frees);
	}
	free(e->types);
	for (struct att_cb *c = e->cbs, *next; c; c = next) {
		next = c->next;
		free(c);
	}
	pthread_mutex_destroy(&e->mu);
	free(e);
}

static void entry_put(struct att_entry *e)
{
	/* acq_rel: every user's accesses happen before the free */
	if (__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0)
		entry_free(e, 1);
}

/* The entry of @key with a reference taken, or NULL. */
static struct att_entry *entry_get(struct kvbm_att *a, struct kvbm_plh key)
{
	struct cds_lfht *ht = table(a, 0);
	struct cds_lfht_iter it;
	struct att_entry *e = NULL;

	if (!ht)
		return NULL;
	urcu_bp_read_lock();
	cds_lfht_lookup(ht, key_hash(key), key_match, &key, &it);
	struct cds_lfht_node *n = cds_lfht_iter_get_node(&it);
	if (n) {
		e = caa_container_of(n, struct att_entry, node);
		/* the table's reference is dropped only after a grace period
		 * that this read-side section delays: refs is >= 1 here */
		__atomic_fetch_add(&e->refs, 1, __ATOMIC_RELAXED);
	}
	TSAN_RELEASE(&grace_token);
	urcu_bp_read_unlock();
	return e;
}

/*
 * Unlinks the @n entries of @es (each referenced by the caller), each once
 * over all threads, and drops the table's references after one grace
 * period. With @try, skips an entry whose lock is taken. Moves the ones it unlinked to the front of @es (the caller still
 * owns a reference on every element). Not in a read-side critical section.
 * Returns how many it unlinked.
 */
static size_t entries_unlink(struct kvbm_att *a, struct att_entry **es, size_t n, int try)
{
	struct cds_lfht *ht = table(a, 0);
	size_t k = 0;

	urcu_bp_read_lock();
	for (size_t i = 0; i < n; i++) {
		struct att_entry *e = es[i];
		if (try) {
			if (pthread_mutex_trylock(&e->mu) != 0)
				continue; /* busy (maybe ours): the next sweep */
		} else {
			pthread_mutex_lock(&e->mu);
		}
		int mine = !e->dead;
		if (mine) {
			e->dead = 1;
			(void)cds_lfht_del(ht, &e->node);
		}
		pthread_mutex_unlock(&e->mu);
		if (mine) {
			es[i] = es[k];
			es[k++] = e;
		}
	}
	TSAN_RELEASE(&grace_token);
	urcu_bp_read_unlock();
	if (!k)
		return 0;
	urcu_bp_synchronize_rcu();
	TSAN_ACQUIRE(&grace_token);
	for (size_t i = 0; i < k; i++)
		entry_put(es[i]);
	__atomic_fetch_sub(&a->count, (long)k, __ATOMIC_RELAXED);
	return k;
}

/* Whether @e's registration is still the hash's primary (lock-free). */
static int entry_live(struct kvbm_pool *p, const struct att_entry *e)
{
	uint32_t s;
	uint64_t g;

	return kvbm_index_lookup(&p->ix, e->key, &s, &g) && s == e->slot && g == e->gen;
}

long kvbm_attachments_sweep(struct kvbm_pool *p)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;
	struct cds_lfht *ht;
	struct cds_lfht_iter it;
	struct att_entry *e, **stale;
	size_t n = 0, cap;

	if (r < 0)
		return r;
	ht = table(p->att, 0);
	if (!ht)
		return 0;
	cap = (size_t)__atomic_load_n(&p->att->count, __ATOMIC_RELAXED) + 16;
	stale = malloc(cap * sizeof(*stale));
	if (!stale)
		return -ENOMEM;
	urcu_bp_read_lock();
	cds_lfht_for_each_entry(ht, &it, e, node) {
		TSAN_ACQUIRE(e);
		if (n < cap && !entry_live(p, e)) {
			__atomic_fetch_add(&e->refs, 1, __ATOMIC_RELAXED);
			stale[n++] = e;
		}
	}
	TSAN_RELEASE(&grace_token);
	urcu_bp_read_unlock();
	long k = n ? (long)entries_unlink(p->att, stale, n, 1) : 0;
	for (size_t i = 0; i < n; i++)
		entry_put(stale[i]);
	free(stale);
	return k;
}

/*
 * A live entry of @key with a reference taken. Without @create: 0 when the
 * hash is registered but has no entry. -ENOENT when it is not registered.
 */
static int entry_acquire(struct kvbm_pool *p, struct kvbm_plh key, int create,
			 struct att_entry **out)
{
	struct kvbm_att *a = p->att;
	uint32_t s;
	uint64_t g;

	for (;;) {
		struct att_entry *e = entry_get(a, key);
		if (e && held_here(e)) {
			entry_put(e); /* a callback of ours on this very hash */
			return KVBM_EDEADLK;
		}
		if (e) {
			if (entry_live(p, e)) {
				*out = e;
				return 1;
			}
			struct att_entry *one = e;
			entries_unlink(a, &one, 1, 0);
			entry_put(e);
			continue;
		}
		if (!kvbm_index_lookup(&p->ix, key, &s, &g))
			return -ENOENT;
		if (!create)
			return 0;
		struct cds_lfht *ht = table(a, 1);
		if (!ht)
			return -ENOMEM;
		if (__atomic_load_n(&a->count, __ATOMIC_RELAXED) > (long)a->buckets * 4)
			(void)kvbm_attachments_sweep(p);
		e = calloc(1, sizeof(*e));
		if (!e)
			return -ENOMEM;
		e->key = key;
		e->slot = s;
		e->gen = g;
		e->refs = 2; /* the table's and ours */
		pthread_mutex_init(&e->mu, NULL);
		cds_lfht_node_init(&e->node);
		TSAN_RELEASE(e);
		urcu_bp_read_lock();
		struct cds_lfht_node *n = cds_lfht_add_unique(ht, key_hash(key), key_match, &key,
							      &e->node);
		TSAN_RELEASE(&grace_token);
		urcu_bp_read_unlock();
		if (n == &e->node) {
			__atomic_fetch_add(&a->count, 1, __ATOMIC_RELAXED);
			*out = e;
			return 1;
		}
		entry_free(e, 0); /* lost the race to another thread: use its entry */
	}
}

static struct att_type *find_type(struct att_entry *e, uint32_t type)
{
	for (uint32_t t = 0; t < e->ntypes; t++)
		if (e->types[t].type == type)
			return &e->types[t];
	return NULL;
}

static int add_type(struct att_entry *e, uint32_t type, uint32_t kind, struct att_type **out)
{
	if (e->ntypes == e->captypes) {
		uint32_t cap = e->captypes ? e->captypes * 2 : 2;
		struct att_type *t = realloc(e->types, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		e->types = t;
		e->captypes = cap;
	}
	*out = &e->types[e->ntypes++];
	**out = (struct att_type){.type = type, .kind = kind};
	return 0;
}

static int push_value(struct att_type *ty, void *value, kvbm_value_free_fn free_fn)
{
	if (ty->n == ty->cap) {
		uint32_t cap = ty->cap ? ty->cap * 2 : 1;
		void **v = realloc(ty->vals, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		ty->vals = v;
		kvbm_value_free_fn *f = realloc(ty->frees, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		ty->frees = f;
		ty->cap = cap;
	}
	ty->vals[ty->n] = value;
	ty->frees[ty->n++] = free_fn;
	return 0;
}

/* Locks the live entry of @key (creating it when @create). Returns 1 with
 * *out locked and referenced, 0 (no entry), or a negative code. */
static int entry_lock(struct kvbm_pool *p, struct kvbm_plh key, int create, struct att_entry **out)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;

	while (r >= 0) {
		r = entry_acquire(p, key, create, out);
		if (r <= 0)
			return r;
		pthread_mutex_lock(&(*out)->mu);
		if (!(*out)->dead)
			return 1;
		/* unlinked between our lookup and lock: find its successor */
		pthread_mutex_unlock(&(*out)->mu);
		entry_put(*out);
	}
	return r;
}

static void entry_unlock(struct att_entry *e)
{
	pthread_mutex_unlock(&e->mu);
	entry_put(e);
}

static int attach(struct kvbm_pool *p, struct kvbm_plh key, uint32_t type, uint32_t kind,
		  void *value, kvbm_value_free_fn free_fn)
{
	struct att_entry *e;
	struct att_type *ty;
	void *old = NULL;
	kvbm_value_free_fn old_free = NULL;
	int r;

	r = entry_lock(p, key, 1, &e);
	if (r <= 0)
		return r;
	ty = find_type(e, type);
	if (ty && ty->kind != kind) {
		r = ty->kind == KIND_UNIQUE ? KVBM_EUNIQUE : KVBM_EMULTIPLE;
	} else if (!ty && (r = add_type(e, type, kind, &ty)) < 0) {
		/* nothing added */
	} else if (kind == KIND_UNIQUE && ty->n) {
		old = ty->vals[0];
		old_free = ty->frees[0];
		ty->vals[0] = value;
		ty->frees[0] = free_fn;
	} else {
		r = push_value(ty, value, free_fn);
	}
	entry_unlock(e);
	/* the replaced value is dropped outside the entry's lock */
	if (old_free)
		old_free(old);
	return r < 0 ? r : 0;
}

int kvbm_attach_unique(struct kvbm_pool *p, struct kvbm_plh hash, uint32_t type, void *value,
		       kvbm_value_free_fn free_fn)
{
	return attach(p, hash, type, KIND_UNIQUE, value, free_fn);
}

int kvbm_attach_multiple(struct kvbm_pool *p, struct kvbm_plh hash, uint32_t type, void *value,
			 kvbm_value_free_fn free_fn)
{
	return attach(p, hash, type, KIND_MULTIPLE, value, free_fn);
}

long kvbm_attachments_each(struct kvbm_pool *p, struct kvbm_plh hash, uint32_t type,
			   void (*fn)(void *value, void *arg), void *arg)
{
	struct att_entry *e;
	long k = 0;

	if (!p || !fn)
		return -EINVAL;
	int r = entry_lock(p, hash, 0, &e);
	if (r <= 0)
		return r;
	struct att_type *ty = find_type(e, type);
	struct held me = {e, held_by_me};
	held_by_me = &me;
	for (uint32_t i = 0; ty && i < ty->n; i++, k++)
		fn(ty->vals[i], arg);
	held_by_me = me.up;
	entry_unlock(e);
	return k;
}

int kvbm_attachment_kind(struct kvbm_pool *p, struct kvbm_plh hash, uint32_t type)
{
	struct att_entry *e;

	int r = entry_lock(p, hash, 0, &e);
	if (r <= 0)
		return r;
	struct att_type *ty = find_type(e, type);
	r = ty ? (int)ty->kind : 0;
	entry_unlock(e);
	return r;
}

long kvbm_attachments_clear(struct kvbm_pool *p, struct kvbm_plh hash)
{
	int r = p ? kvbm_seg_check(&p->seg) : -EINVAL;
	long k = 0;

	if (r < 0)
		return r;
	struct att_entry *e = entry_get(p->att, hash);
	if (!e)
		return -ENOENT;
	if (held_here(e)) {
		entry_put(e); /* from a callback of ours on this very hash */
		return KVBM_EDEADLK;
	}
	pthread_mutex_lock(&e->mu);
	for (uint32_t t = 0; t < e->ntypes; t++)
		k += e->types[t].n;
	pthread_mutex_unlock(&e->mu);
	struct att_entry *one = e;
	if (!entries_unlink(p->att, &one, 1, 0))
		k = -ENOENT; /* someone else dropped it first */
	entry_put(e);
	return k;
}

int kvbm_on_touch(struct kvbm_pool *p, struct kvbm_plh hash, kvbm_touch_fn fn, void *arg)
{
	struct att_entry *e;

	if (!fn)
		return -EINVAL;
	int r = entry_lock(p, hash, 1, &e);
	if (r <= 0)
		return r;
	struct att_cb *c = malloc(sizeof(*c));
	if (c) {
		*c = (struct att_cb){NULL, fn, arg};
		if (e->cbs_last)
			e->cbs_last->next = c;
		else
			e->cbs = c;
		e->cbs_last = c;
		e->ncbs++;
	}
	entry_unlock(e);
	return c ? 0 : -ENOMEM;
}

long kvbm_touch(struct kvbm_pool *p, struct kvbm_plh hash)
{
	struct att_entry *e;

	int r = entry_lock(p, hash, 0, &e);
	if (r <= 0)
		return r;
	/* the first ncbs nodes never change and live as long as the entry,
	 * which our reference keeps: call them without the lock */
	struct att_cb *c = e->cbs;
	uint32_t n = e->ncbs;
	pthread_mutex_unlock(&e->mu);
	for (uint32_t i = 0; i < n; i++, c = c->next)
		c->fn(hash, c->arg);
	entry_put(e);
	return n;
}

void kvbm_att_teardown(struct kvbm_pool *p, int forked)
{
	struct kvbm_att *a = p->att;
	struct cds_lfht_iter it;
	struct att_entry *e;

	if (!a)
		return;
	/* no other thread may use a handle being closed: no grace period is
	 * needed. In a forked child the values are the parent's business:
	 * their free functions are not called there. */
	if (a->ht) {
		struct att_entry *gc = NULL;
		urcu_bp_read_lock();
		cds_lfht_for_each_entry(a->ht, &it, e, node) {
			(void)cds_lfht_del(a->ht, &e->node);
			e->gc_next = gc; /* freed after the walk, which still reads it */
			/* cppcheck-suppress uninitvar ; set by the iteration macro */
			gc = e;
		}
		urcu_bp_read_unlock();
		while ((e = gc)) {
			gc = e->gc_next;
			entry_free(e, !forked);
		}
		(void)cds_lfht_destroy(a->ht, NULL);
	}
	pthread_mutex_destroy(&a->mu);
	free(a);
	p->att = NULL;
}
