/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reaper.c - instant reaping. Without kvbmd a dead attacher's blocks come
 * back when some process next attaches, allocates short or passes the
 * periodic reap (every 1024 mutex acquisitions): on a quiet pool, never.
 * kvbmd holds a pidfd (pidfd_open(2)) on every attached process; a pidfd
 * polls readable once its process has exited, by which time the kernel
 * has closed its files and so dropped its liveness lock, so kvbm_reap()
 * proves it dead and releases what it held at once.
 *
 * Who is attached comes from the read-only view of the process table,
 * re-scanned every scan_interval_ms for new attachers. A pid read there
 * may have been reused by the time we open the pidfd: the entry's start
 * time tells (a mismatch means the attacher is gone, so we reap at once).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kvbmd.h"
#include "../../shm/liveness.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* x86-64, Linux 5.3 */
#endif

#define RETRY_NS 2000000ull /* a reap that found the process alive: again in 2 ms */
#define RETRY_MAX 500       /* then leave it to the periodic reap (1 s) */

/* An entry's identity, read consistently: 0 when ACTIVE, -1 otherwise (or
 * when it changed under us: the next scan sees it settled). */
static int entry_read(const struct kvbmd_pool *p, uint32_t i, struct kvbm_shm_proc *out)
{
	const struct kvbm_shm_proc *e = &p->view.seg.procs[i];
	/* the attacher writes pid, start time and generation before it
	 * release-stores ACTIVE: acquire pairs with that store */
	uint32_t st = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);

	if (st != KVBM_PROC_ACTIVE)
		return -1;
	out->pid = __atomic_load_n(&e->pid, __ATOMIC_RELAXED);
	out->starttime = __atomic_load_n(&e->starttime, __ATOMIC_RELAXED);
	out->attach_gen = __atomic_load_n(&e->attach_gen, __ATOMIC_RELAXED);
	/* a reap and a new attach in between would change the generation */
	if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) != KVBM_PROC_ACTIVE ||
	    __atomic_load_n(&e->attach_gen, __ATOMIC_ACQUIRE) != out->attach_gen)
		return -1;
	return 0;
}

static void watch_close(struct kvbmd_pool *p, uint32_t i)
{
	if (p->w[i].fd >= 0) {
		close(p->w[i].fd);
		p->w[i].fd = -1;
		__atomic_fetch_sub(&p->nwatch, 1, __ATOMIC_RELAXED);
	}
}

/* kvbm_reap(), then forget the pending entries that are gone. */
static void reap_pending(struct kvbmd_pool *p, uint64_t now)
{
	uint64_t t0 = kvbmd_now_ns();
	int r = kvbm_reap(p->h);
	uint64_t t1 = kvbmd_now_ns();

	if (r == KVBM_EPOISONED) {
		if (!p->poison_logged)
			kvbmd_log("pool %s: POISONED, nothing to reap (docs/CRASH-SAFETY.md)",
				  p->name);
		p->poison_logged = 1;
		p->pending = 0;
		return;
	}
	if (r < 0)
		kvbmd_log("pool %s: reap: %s", p->name, kvbm_strerror(r));
	if (r > 0) {
		__atomic_fetch_add(&p->pidfd_reaps, (uint64_t)r, __ATOMIC_RELAXED);
		kvbmd_log("pool %s: reaped %d exited process%s in %.2f ms", p->name, r,
			  r == 1 ? "" : "es", (double)(t1 - t0) / 1e6);
	}
	for (uint32_t i = 0; i < KVBM_MAX_PROCS; i++) {
		struct kvbm_shm_proc e;

		if (!(p->pending & (1ull << i)))
			continue;
		if (entry_read(p, i, &e) < 0 || e.attach_gen != p->w[i].gen)
			p->pending &= ~(1ull << i);
	}
	if (!p->pending) {
		p->retries = 0;
		return;
	}
	if (++p->retries > RETRY_MAX) {
		kvbmd_log("pool %s: an exited process is not provably dead yet; the periodic "
			  "reap will take it", p->name);
		p->pending = 0;
		p->retries = 0;
		return;
	}
	p->retry_ns = now + RETRY_NS;
}

/* Watches entry @i (ACTIVE as @e), or reaps at once when its process is
 * already gone. */
static void watch_open(struct kvbmd_pool *p, uint32_t i, const struct kvbm_shm_proc *e)
{
	uint64_t st = 0;
	int fd = (int)syscall(SYS_pidfd_open, (pid_t)e->pid, 0);

	p->w[i].gen = e->attach_gen;
	p->w[i].pid = e->pid;
	if (fd < 0 && errno != ESRCH) {
		kvbmd_log("pool %s: pidfd_open(%u): %s (Linux >= 5.3 needed); reaping "
			  "periodically", p->name, e->pid, strerror(errno));
		p->pending |= 1ull << i; /* never retried past RETRY_MAX */
		return;
	}
	/* the pid names our attacher only while its start time matches (a
	 * zombie still has its /proc entry, and its pidfd is readable). A
	 * start time we cannot read (a /proc mounted with hidepid) proves
	 * nothing: the pidfd is kept, or we would reap a live process in a
	 * loop; if the pid was reused, the periodic reap takes the dead one */
	if (fd >= 0 && kvbm_proc_starttime((pid_t)e->pid, &st) == 0 && st != e->starttime) {
		close(fd);
		fd = -1;
	}
	if (fd < 0) {
		p->pending |= 1ull << i;
		reap_pending(p, kvbmd_now_ns());
		return;
	}
	p->w[i].fd = fd;
	__atomic_fetch_add(&p->nwatch, 1, __ATOMIC_RELAXED);
}

static void scan_pool(struct kvbmd_pool *p)
{
	uint32_t n = p->view.hdr.config.max_procs;

	for (uint32_t i = 0; i < n && i < KVBM_MAX_PROCS; i++) {
		struct kvbm_shm_proc e;
		int active = i != p->self && entry_read(p, i, &e) == 0;

		if (active && p->w[i].gen == e.attach_gen && (p->w[i].fd >= 0 || (p->pending & (1ull << i))))
			continue; /* watched already, or being reaped */
		watch_close(p, i);
		p->pending &= ~(1ull << i);
		if (active)
			watch_open(p, i, &e);
	}
}

void kvbmd_reaper_scan(struct kvbmd *d)
{
	for (size_t k = 0; k < d->npools; k++)
		if (d->pools[k].view_ok)
			scan_pool(&d->pools[k]);
}

size_t kvbmd_reaper_fds(struct kvbmd *d, struct pollfd *fds, uint32_t *owner)
{
	size_t n = 0;

	for (size_t k = 0; k < d->npools; k++)
		for (uint32_t i = 0; i < KVBM_MAX_PROCS; i++)
			if (d->pools[k].w[i].fd >= 0) {
				fds[n].fd = d->pools[k].w[i].fd;
				fds[n].events = POLLIN;
				fds[n].revents = 0;
				owner[n++] = (uint32_t)k << 8 | i;
			}
	return n;
}

void kvbmd_reaper_exited(struct kvbmd *d, uint32_t owner)
{
	struct kvbmd_pool *p = &d->pools[owner >> 8];
	uint32_t i = owner & 0xff;

	if (d->verbose)
		kvbmd_log("pool %s: pid %u exited", p->name, p->w[i].pid);
	watch_close(p, i);
	p->pending |= 1ull << i;
	reap_pending(p, kvbmd_now_ns());
}

int kvbmd_reaper_retry(struct kvbmd *d, uint64_t now_ns)
{
	int64_t next = -1;

	for (size_t k = 0; k < d->npools; k++) {
		struct kvbmd_pool *p = &d->pools[k];

		if (!p->pending)
			continue;
		if (p->retry_ns <= now_ns)
			reap_pending(p, now_ns);
		if (!p->pending)
			continue;
		int64_t ms = (int64_t)((p->retry_ns > now_ns ? p->retry_ns - now_ns : 0) / 1000000) + 1;
		if (next < 0 || ms < next)
			next = ms;
	}
	return (int)next;
}

void kvbmd_reaper_reap_all(struct kvbmd *d)
{
	for (size_t k = 0; k < d->npools; k++) {
		struct kvbmd_pool *p = &d->pools[k];
		int r = kvbm_reap(p->h);

		if (r > 0)
			kvbmd_log("pool %s: periodic reap took %d dead process%s", p->name, r,
				  r == 1 ? "" : "es");
		else if (r == KVBM_EPOISONED && !p->poison_logged) {
			kvbmd_log("pool %s: POISONED (docs/CRASH-SAFETY.md)", p->name);
			p->poison_logged = 1;
		}
	}
}

void kvbmd_reaper_close(struct kvbmd *d)
{
	for (size_t k = 0; k < d->npools; k++)
		for (uint32_t i = 0; i < KVBM_MAX_PROCS; i++)
			watch_close(&d->pools[k], i);
}
