/* SPDX-License-Identifier: Apache-2.0 */
/*
 * proctable.c - see proctable.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "failpoint.h"
#include "liveness.h"
#include "mutex.h"
#include "proctable.h"

static void op_begin(struct kvbm_seg *seg, uint32_t op, uint32_t idx)
{
	struct kvbm_shm_op *o = &seg->ctl->op;

	o->proc = seg->self;
	o->arg0 = idx;
	o->step = 0;
	/* op last: a dead owner's record is read only under the mutex (which
	 * orders it), but a torn record must never name an op without its arg */
	__atomic_store_n(&o->op, op, __ATOMIC_RELEASE);
}

static void op_end(struct kvbm_seg *seg)
{
	__atomic_store_n(&seg->ctl->op.op, KVBM_OP_NONE, __ATOMIC_RELEASE);
}

static void entry_free(struct kvbm_shm_proc *e)
{
	/* relaxed, then the generation with release: kvbm_proc_probe reads
	 * pid and start time between two acquire loads of it */
	__atomic_store_n(&e->pid, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&e->starttime, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&e->attach_gen, 0, __ATOMIC_RELEASE);
	e->attach_ns = 0;
	e->uid = 0;
	/* release: a lock-free reader (dump, count) that sees FREE sees a
	 * cleared entry */
	__atomic_store_n(&e->state, KVBM_PROC_FREE, __ATOMIC_RELEASE);
}

/* Reaps entry @idx (RECLAIMING or ACTIVE and dead). Idempotent: a reaper
 * that dies half-way leaves the op record, and the next locker reruns it. */
static int reap_one(struct kvbm_seg *seg, uint32_t idx)
{
	struct kvbm_shm_proc *e = &seg->procs[idx];
	int r = 0;

	op_begin(seg, KVBM_OP_REAP, idx);
	/* release, after the op record: a reaper that dies from here on
	 * leaves REAP(idx) for the next locker, and an entry that is neither
	 * FREE nor ACTIVE, which every later reap pass also picks up */
	__atomic_store_n(&e->state, KVBM_PROC_RECLAIMING, __ATOMIC_RELEASE);
	KVBM_FAILPOINT("shm.reap.reclaiming");
	if (seg->reap)
		r = seg->reap(seg, idx, seg->reap_arg);
	if (r < 0)
		return r;
	entry_free(e);
	seg->ctl->reaps++;
	op_end(seg);
	return 0;
}

void kvbm_proc_probe(const struct kvbm_seg *seg, struct kvbm_proc_dead *d)
{
	uint32_t n = seg->cfg.max_procs;

	d->mask = 0;
	for (uint32_t i = 0; i < n && i < KVBM_MAX_PROCS; i++) {
		const struct kvbm_shm_proc *e = &seg->procs[i];
		struct kvbm_shm_proc snap = {0};
		if (i == seg->self)
			continue;
		/*
		 * Without the mutex the entry may be reaped and claimed by a
		 * new attacher while we read it: a pid of one attachment with
		 * the generation of another would prove the wrong process
		 * dead. So the fields are read between two acquire loads of
		 * the generation, which attach and entry_free store with
		 * release after the pid and start time (a seqlock whose
		 * counter is the generation): equal, the fields are that
		 * attachment's. The reaper compares it again under the mutex.
		 */
		uint64_t g1 = __atomic_load_n(&e->attach_gen, __ATOMIC_ACQUIRE);
		if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) != KVBM_PROC_ACTIVE)
			continue;
		snap.pid = __atomic_load_n(&e->pid, __ATOMIC_ACQUIRE);
		snap.starttime = __atomic_load_n(&e->starttime, __ATOMIC_ACQUIRE);
		snap.attach_gen = g1;
		KVBM_FAILPOINT("shm.probe.read"); /* the entry may change here */
		if (g1 == 0 || __atomic_load_n(&e->attach_gen, __ATOMIC_ACQUIRE) != g1)
			continue;
		if (kvbm_proc_liveness(seg->fd, i, &snap) == KVBM_ALIVE)
			continue;
		if (__atomic_load_n(&e->attach_gen, __ATOMIC_ACQUIRE) != g1)
			continue;
		d->mask |= 1ull << i;
		d->gen[i] = snap.attach_gen;
	}
}

int kvbm_proc_reap_proven(struct kvbm_seg *seg, const struct kvbm_proc_dead *d)
{
	uint32_t n = seg->cfg.max_procs;
	int reaped = 0;

	for (uint32_t i = 0; i < n && i < KVBM_MAX_PROCS; i++) {
		struct kvbm_shm_proc *e = &seg->procs[i];
		uint32_t st = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);

		if (st == KVBM_PROC_FREE || i == seg->self)
			continue;
		/* a death proven before the mutex stands while the entry is
		 * still that attachment's: the dead do not come back. A
		 * half-done reap (neither FREE nor ACTIVE) needs no proof */
		if (st == KVBM_PROC_ACTIVE &&
		    (!(d->mask & (1ull << i)) || e->attach_gen != d->gen[i]))
			continue;
		int r = reap_one(seg, i);
		if (r < 0)
			return r;
		reaped++;
	}
	return reaped;
}

int kvbm_proc_reap_locked(struct kvbm_seg *seg)
{
	uint32_t n = seg->cfg.max_procs;
	int reaped = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct kvbm_shm_proc *e = &seg->procs[i];
		uint32_t st = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);

		if (st == KVBM_PROC_FREE || i == seg->self)
			continue;
		if (st == KVBM_PROC_ACTIVE && kvbm_proc_liveness(seg->fd, i, e) == KVBM_ALIVE)
			continue;
		int r = reap_one(seg, i);
		if (r < 0)
			return r;
		reaped++;
	}
	return reaped;
}

int kvbm_proc_reap(struct kvbm_seg *seg)
{
	struct kvbm_proc_dead d;
	int r = kvbm_seg_check(seg);

	if (r < 0)
		return r;
	kvbm_proc_probe(seg, &d); /* the syscalls, before the mutex */
	r = kvbm_seg_lock(seg);
	if (r < 0)
		return r;
	r = kvbm_proc_reap_proven(seg, &d);
	kvbm_seg_unlock(seg);
	return r;
}

int kvbm_proc_recover_op(struct kvbm_seg *seg, const struct kvbm_shm_op *op)
{
	uint32_t idx = op->arg0;

	switch (op->op) {
	case KVBM_OP_ATTACH:
		/* the claimer died before holding anything: drop the entry */
		if (idx >= seg->cfg.max_procs || idx == seg->self)
			return KVBM_ECORRUPT;
		entry_free(&seg->procs[idx]);
		return 0;
	case KVBM_OP_DETACH:
		/* the leaver died releasing what it held: finish it as a reap */
	case KVBM_OP_REAP:
		if (idx >= seg->cfg.max_procs || idx == seg->self)
			return KVBM_ECORRUPT;
		return reap_one(seg, idx);
	default:
		return 0;
	}
}

static uint32_t proc_uid(void)
{
	return (uint32_t)getuid();
}

int kvbm_proc_attach(struct kvbm_seg *seg)
{
	uint32_t n = seg->cfg.max_procs;
	uint64_t starttime;
	int r;

	struct kvbm_proc_dead d;

	r = kvbm_proc_starttime(seg->pid, &starttime);
	if (r < 0)
		return r;
	kvbm_proc_probe(seg, &d);
	r = kvbm_seg_lock(seg);
	if (r < 0)
		return r;
	r = kvbm_proc_reap_proven(seg, &d);
	if (r < 0)
		goto out;
	r = KVBM_EPROCFULL;
	for (uint32_t i = 0; i < n; i++) {
		struct kvbm_shm_proc *e = &seg->procs[i];

		if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) != KVBM_PROC_FREE)
			continue;
		op_begin(seg, KVBM_OP_ATTACH, i);
		/* the liveness lock before ACTIVE: a reaper must never see an
		 * ACTIVE entry whose lock is free while its owner lives. It
		 * can fail when a forked child of a former owner still holds
		 * the inherited open file description: skip that entry. */
		if (kvbm_ofd_trylock(seg->fd, KVBM_LOCK_LIVENESS_BASE + i, F_WRLCK) < 0) {
			op_end(seg);
			continue;
		}
		KVBM_FAILPOINT("shm.attach.locked");
		/* the generation last, with release: see entry_free() */
		__atomic_store_n(&e->pid, (uint32_t)seg->pid, __ATOMIC_RELAXED);
		__atomic_store_n(&e->starttime, starttime, __ATOMIC_RELAXED);
		__atomic_store_n(&e->attach_gen, ++seg->ctl->attach_gen, __ATOMIC_RELEASE);
		e->attach_ns = kvbm_now_ns();
		e->uid = proc_uid();
		/* release: whoever acquire-loads ACTIVE sees the fields */
		__atomic_store_n(&e->state, KVBM_PROC_ACTIVE, __ATOMIC_RELEASE);
		KVBM_FAILPOINT("shm.attach.active");
		seg->self = i;
		kvbm_mutex_hold_to(seg, seg->metrics[i].v + KVBM_M_HOLD_TICKS);
		seg->attach_gen = e->attach_gen;
		seg->ctl->owner_proc = i;
		op_end(seg);
		r = 0;
		break;
	}
out:
	kvbm_seg_unlock(seg);
	return r;
}

int kvbm_proc_detach(struct kvbm_seg *seg)
{
	uint32_t idx = seg->self;
	int r;

	if (idx == UINT32_MAX)
		return 0;
	r = kvbm_seg_lock(seg);
	if (r < 0)
		return r;
	struct kvbm_shm_proc *e = &seg->procs[idx];
	/* a reaper may have freed us already if it (wrongly) proved us dead;
	 * never free an entry that another attach has claimed since */
	if (e->attach_gen == seg->attach_gen && e->pid == (uint32_t)seg->pid) {
		op_begin(seg, KVBM_OP_DETACH, idx);
		if (seg->reap)
			r = seg->reap(seg, idx, seg->reap_arg);
		KVBM_FAILPOINT("shm.detach.released");
		if (r == 0)
			entry_free(e);
		op_end(seg);
	}
	seg->self = UINT32_MAX;
	kvbm_seg_unlock(seg);
	/* the liveness lock goes with the fd, after the entry is FREE */
	kvbm_ofd_unlock(seg->fd, KVBM_LOCK_LIVENESS_BASE + idx);
	return r;
}

uint32_t kvbm_proc_count_active(const struct kvbm_seg *seg)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < seg->cfg.max_procs; i++)
		n += __atomic_load_n(&seg->procs[i].state, __ATOMIC_ACQUIRE) == KVBM_PROC_ACTIVE;
	return n;
}
