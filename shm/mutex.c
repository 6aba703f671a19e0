/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mutex.c - see mutex.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "failpoint.h"
#include "mutex.h"
#include "proctable.h"
#include "segment.h"

/* glibc's encoding of the robust mutex word (nptl/pthreadP.h, linux/futex.h) */
#define FUTEX_WAITERS_BIT 0x80000000u
#define FUTEX_OWNER_DIED_BIT 0x40000000u
#define FUTEX_TID_BITS 0x3fffffffu
#define GLIBC_MUTEX_INCONSISTENT INT_MAX
#define GLIBC_MUTEX_NOTRECOVERABLE (INT_MAX - 1)

int kvbm_mutex_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	int r;

	r = pthread_mutexattr_init(&a);
	if (r)
		return -r;
	/* NORMAL type and no priority inheritance: PI futexes and the
	 * errorcheck TID comparisons misbehave across PID namespaces */
	r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (!r)
		r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (!r)
		r = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_NORMAL);
	if (!r)
		r = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return -r;
}

int kvbm_mutex_kind(void)
{
	pthread_mutex_t m;

	/* what kvbm_mutex_init writes into glibc's kind word on this build */
	if (kvbm_mutex_init(&m) < 0)
		return -1;
	int kind = m.__data.__kind;
	pthread_mutex_destroy(&m);
	return kind;
}

/*
 * A mutex word whose owner TID names no thread (a peer's bytes: a real
 * owner's death is reported by the kernel, which sets OWNER_DIED) would
 * keep every locker waiting forever. Do what the kernel does for a dead
 * owner: mark the word OWNER_DIED (keeping the waiters bit) and wake a
 * waiter, whose lock then returns EOWNERDEAD and recovers. Proof, not a
 * timeout: only ESRCH from kill(tid, 0) in our PID namespace (attach
 * checked it is the pool's) counts.
 */
static void unstick(pthread_mutex_t *m)
{
	unsigned w = (unsigned)__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED);
	pid_t tid = (pid_t)(w & FUTEX_TID_BITS);

	if (!tid || (w & FUTEX_OWNER_DIED_BIT) || kill(tid, 0) == 0 || errno != ESRCH)
		return;
	int want = (int)((w & FUTEX_WAITERS_BIT) | FUTEX_OWNER_DIED_BIT);
	int old = (int)w;
	/* seq_cst CAS: against the owner's own unlock (which would have
	 * changed the word) and the kernel's robust-list handling */
	if (__atomic_compare_exchange_n(&m->__data.__lock, &old, want, 0, __ATOMIC_SEQ_CST,
					__ATOMIC_RELAXED))
		syscall(SYS_futex, &m->__data.__lock, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static pid_t self_tid(void)
{
	static _Thread_local pid_t tid;

	if (!tid)
		tid = gettid();
	return tid;
}

static void poison(struct kvbm_seg *seg)
{
	/* release: pairs with the acquire load in kvbm_seg_check() */
	__atomic_store_n(&seg->hdr->state, KVBM_SEG_POISONED, __ATOMIC_RELEASE);
	seg->ctl->owner_pid = 0;
	seg->lock_tid = 0;
	/* unlocking without pthread_mutex_consistent() leaves the mutex
	 * ENOTRECOVERABLE for every later locker */
	pthread_mutex_unlock(&seg->ctl->mutex);
}

/* We own the mutex after its previous owner died mid-section. */
static int recover(struct kvbm_seg *seg)
{
	struct kvbm_shm_control *ctl = seg->ctl;
	struct kvbm_shm_op op = ctl->op;
	int r;

	KVBM_FAILPOINT("shm.recover.begin");
	r = kvbm_proc_recover_op(seg, &op);
	if (r == 0 && seg->recover)
		r = seg->recover(seg, &op, seg->recover_arg);
	if (r < 0)
		return r;
	memset(&ctl->op, 0, sizeof(ctl->op));
	r = kvbm_proc_reap_locked(seg);
	if (r < 0)
		return r;
	ctl->recoveries++;
	ctl->last_recovery_ns = kvbm_now_ns();
	KVBM_FAILPOINT("shm.recover.end");
	return 0;
}

/*
 * pthread_mutex_lock with bounded sleeps. Once, in a torture run, two
 * waiters slept in futex_wait on a mutex whose word had moved on (a ptrace
 * attach, which restarts the wait, freed both at once): a wake-up was lost
 * while workers were being SIGKILLed around the mutex. The exact kernel
 * path is not pinned down (a killed waiter's pending robust op is woken
 * for by the kernel, and a test of that case passes without this), so
 * the wait is made robust to any lost wake-up: sleeping at most 20 ms at a
 * time makes one cost 20 ms. timedlock, not clocklock: ThreadSanitizer
 * intercepts the former only.
 */
static int lock_bounded(pthread_mutex_t *m)
{
	int r = pthread_mutex_trylock(m);

	for (unsigned slices = 0; r == EBUSY || r == ETIMEDOUT; slices++) {
		if (slices % 50 == 49)
			unstick(m); /* a second without the owner letting go */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		r = pthread_mutex_timedlock(m, &ts);
	}
	return r;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * The hold time's clock. On x86 the TSC: rdtsc is one instruction where a
 * vDSO clock_gettime is some sixty, and the pool takes its mutex about
 * twice per block operation (a-steady: +6.5% instructions with
 * clock_gettime). Its rate is calibrated once per process against
 * CLOCK_MONOTONIC (constant_tsc: one rate, every core). Elsewhere
 * CLOCK_MONOTONIC itself, one tick a nanosecond.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
/* a hold keeps the low half (a difference, and 2^32 ticks, a second and
 * more, is past the last bucket anyway); the pins' due word is compared
 * with all of it */
static inline uint64_t ticks64(void)
{
	return __rdtsc();
}
#else
static inline uint64_t ticks64(void)
{
	return mono_ns();
}
#endif
static inline uint32_t ticks(void)
{
	return (uint32_t)ticks64();
}

static double ns_per_tick = 1.0;
static int calibrated; /* ns_per_tick measured: a due tick can be computed */
/* ticks to quarter microseconds, 32.32 fixed point: a bucket is then a
 * multiply, a shift and a bit scan, the same few instructions whatever
 * the time (under callgrind too) */
static uint64_t qus_per_tick = (4ull << 32) / 1000;

__attribute__((constructor)) static void calibrate(void)
{
#if defined(__x86_64__) || defined(__i386__)
	/* 20 us of both clocks: both advance through a preemption, and a
	 * few tens of ns of jitter is 0.2% of the rate */
	uint64_t m0 = mono_ns(), m1;
	uint32_t t0 = ticks();
	do
		m1 = mono_ns();
	while (m1 - m0 < 20000);
	double per_ns = (double)(uint32_t)(ticks() - t0) / (double)(m1 - m0);
	if (per_ns < 0.01 || per_ns > 100)
		return; /* not a TSC we understand: the metric reads in ticks */
	ns_per_tick = 1.0 / per_ns;
	qus_per_tick = (uint64_t)(4.0 * 4294967296.0 / (1000.0 * per_ns));
	calibrated = 1;
#else
	calibrated = 1; /* the clock is CLOCK_MONOTONIC itself */
#endif
}

/*
 * The tick from which a mutex holder should look at the pins again, for
 * a deadline @in_ns from now. A sixty-fourth early: every process
 * calibrates its own rate (a few tenths of a percent apart), and the
 * expiry reads CLOCK_MONOTONIC before it ends anything, so an early look
 * costs one clock read and a new due tick, a late one an inexact expiry.
 * Uncalibrated: 0, every acquisition looks (only while pins exist).
 */
uint64_t kvbm_mutex_due(uint64_t in_ns)
{
	if (!calibrated)
		return 0;
	double t = (double)(in_ns - in_ns / 64) / ns_per_tick;

	if (t > 9.0e18) /* centuries: never, in practice */
		return UINT64_MAX - 1;
	return ticks64() + (uint64_t)t;
}

double kvbm_mutex_ns_per_tick(void)
{
	return ns_per_tick;
}



void kvbm_mutex_hold_to(struct kvbm_seg *seg, int64_t *v)
{
	_Static_assert(KVBM_M_HOLD_LE == KVBM_M_HOLD_TICKS + 1, "the buckets follow the sum");
	seg->hold_v = v + 1;
}

/* Adds the critical section ending now to our shard's hold-time counters.
 * Only mutex holders write them, so the mutex orders the writers: a
 * relaxed load and store (untorn for the summing readers), no locked add. */
static void hold_record(struct kvbm_seg *seg)
{
	int64_t *v = seg->hold_v; /* the buckets; the sum is v[-1] */
	uint32_t dt = ticks() - seg->hold_t0;
	/* bucket b holds [4^(b-1), 4^b) us: with x in quarter microseconds,
	 * x < 4 is bucket 0, x < 16 bucket 1, x < 64 bucket 2...: half the
	 * index of x's top bit */
	uint64_t x = (uint64_t)dt * qus_per_tick >> 32;

	if (x > 1024) /* 256 us and more: the last bucket, 1024's */
		x = 1024;
	unsigned b = (unsigned)(31 - __builtin_clz((uint32_t)x | 1)) >> 1;
	__atomic_store_n(&v[-1], __atomic_load_n(&v[-1], __ATOMIC_RELAXED) + dt, __ATOMIC_RELAXED);
	__atomic_store_n(&v[b], __atomic_load_n(&v[b], __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

int kvbm_seg_lock(struct kvbm_seg *seg)
{
	int r = kvbm_seg_check(seg);

	return r < 0 ? r : kvbm_seg_lock_checked(seg);
}

int kvbm_seg_lock_checked(struct kvbm_seg *seg)
{
	struct kvbm_proc_dead dead;
	int r;

	if (__atomic_load_n(&seg->lock_tid, __ATOMIC_RELAXED) == self_tid())
		return KVBM_EDEADLK;
	/* glibc's kind word steers how it locks: a peer's bytes there (an
	 * elision bit, a PI type) make pthread_mutex_lock fault or misbehave
	 * in every process. Relaxed: only the creator's init writes it */
	if (__atomic_load_n(&seg->ctl->mutex.__data.__kind, __ATOMIC_RELAXED) != seg->mutex_kind)
		return KVBM_ECORRUPT;
	/* periodic reaping: without it a dead process's holds would wait for
	 * the next attach, short allocation or kvbm_reap(). About every
	 * KVBM_REAP_INTERVAL acquisitions (relaxed: a guess at the count we
	 * are about to take) the locker probes every attached process's
	 * liveness, before the mutex: no syscall is made under it */
	int periodic = seg->self != UINT32_MAX &&
		       (__atomic_load_n(&seg->ctl->lock_count, __ATOMIC_RELAXED) + 1) %
				       KVBM_REAP_INTERVAL == 0;
	if (periodic)
		kvbm_proc_probe(seg, &dead);
	r = lock_bounded(&seg->ctl->mutex);
	if (r == EOWNERDEAD) {
		seg->ctl->owner_pid = (uint32_t)seg->pid;
		seg->lock_tid = self_tid();
		r = recover(seg);
		if (r < 0) {
			poison(seg);
			return KVBM_EPOISONED;
		}
		pthread_mutex_consistent(&seg->ctl->mutex);
	} else if (r == ENOTRECOVERABLE) {
		/* a recoverer unlocked without consistent (it failed repair, or
		 * poisoned before us): make every other process see it too.
		 * release: pairs with the acquire in kvbm_seg_check() */
		__atomic_store_n(&seg->hdr->state, KVBM_SEG_POISONED, __ATOMIC_RELEASE);
		return KVBM_EPOISONED;
	} else if (r != 0) {
		return -r;
	}
	/* the segment may have been poisoned while we waited */
	if (__atomic_load_n(&seg->hdr->state, __ATOMIC_ACQUIRE) == KVBM_SEG_POISONED) {
		pthread_mutex_unlock(&seg->ctl->mutex);
		return KVBM_EPOISONED;
	}
	seg->ctl->owner_pid = (uint32_t)seg->pid;
	seg->ctl->owner_proc = seg->self;
	/* relaxed: read before the mutex by the next locker's periodic guess
	 * (above), which needs no order, only an untorn value */
	__atomic_store_n(&seg->ctl->lock_count, seg->ctl->lock_count + 1, __ATOMIC_RELAXED);
	/* process-local and relaxed: only the thread that stored its own tid
	 * can ever read it back equal, and that read is program-ordered */
	__atomic_store_n(&seg->lock_tid, self_tid(), __ATOMIC_RELAXED);
	/* the hold starts here, after a recovery (which kvbm_recoveries_total
	 * counts): any clock read before this point, even on the recovery's
	 * rare path, makes the compiler shuffle the common path's registers
	 * (a-steady +0.3% instructions) */
	uint64_t now = ticks64();
	seg->hold_t0 = (uint32_t)now;
	/* pins: the first acquisition after a deadline ends it (lib/pins.c).
	 * One relaxed load and a compare while none is due: the word changes
	 * only under the mutex we hold, and is UINT64_MAX without pins. Before
	 * the reap, so that the tick lives across no call. Measured: a-steady
	 * (three acquisitions a cycle) 3,469 -> 3,487 instructions a cycle
	 * (+0.5%), d unchanged (1,906; kvbm-bench --instructions) */
	if (__builtin_expect(now >= __atomic_load_n(&seg->pins->due, __ATOMIC_RELAXED), 0) &&
	    seg->expire)
		seg->expire(seg, seg->expire_arg);
	/* a failure here is not the caller's: the REAP op record lets the
	 * next locker finish it */
	if (periodic)
		(void)kvbm_proc_reap_proven(seg, &dead);
	return 0;
}

/*
 * A derived structure (a list, the forest, a count) held an index out of
 * range or a cycle: a peer wrote bytes it should not have, or died in a
 * way the op record does not cover. The recovery hook rebuilds all of it
 * from the slot array and runs the checker, as after an owner's death; if
 * that fails too the pool is poisoned rather than left for the next
 * process to trip over.
 */
static void repair(struct kvbm_seg *seg)
{
	struct kvbm_shm_op op = {0};
	int r = -EINVAL;

	seg->corrupt = 0;
	if (seg->recover)
		r = seg->recover(seg, &op, seg->recover_arg);
	if (r == 0 && !seg->corrupt) {
		seg->ctl->recoveries++;
		seg->ctl->last_recovery_ns = kvbm_now_ns();
		return;
	}
	seg->corrupt = 0;
	/* release: pairs with the acquire load in kvbm_seg_check() */
	__atomic_store_n(&seg->hdr->state, KVBM_SEG_POISONED, __ATOMIC_RELEASE);
}

int kvbm_seg_repair(struct kvbm_seg *seg)
{
	if (!seg->corrupt)
		return 0;
	repair(seg);
	return __atomic_load_n(&seg->hdr->state, __ATOMIC_ACQUIRE) == KVBM_SEG_POISONED
		       ? KVBM_EPOISONED
		       : 1;
}

void kvbm_seg_unlock(struct kvbm_seg *seg)
{
	if (seg->corrupt)
		repair(seg);
	seg->ctl->owner_pid = 0;
	seg->ctl->owner_proc = UINT32_MAX;
	__atomic_store_n(&seg->lock_tid, 0, __ATOMIC_RELAXED);
	hold_record(seg);
	pthread_mutex_unlock(&seg->ctl->mutex);
}

void kvbm_mutex_view(const pthread_mutex_t *m, struct kvbm_mutex_view *v)
{
	unsigned word = (unsigned)__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED);
	int owner = __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED);

	memset(v, 0, sizeof(*v));
	v->tid = word & FUTEX_TID_BITS;
	v->owner_died = (word & FUTEX_OWNER_DIED_BIT) != 0;
	v->waiters = (word & FUTEX_WAITERS_BIT) != 0;
	v->locked = v->tid != 0;
	v->inconsistent = owner == GLIBC_MUTEX_INCONSISTENT;
	v->notrecoverable = owner == GLIBC_MUTEX_NOTRECOVERABLE;
}
