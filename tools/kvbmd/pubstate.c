/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pubstate.c - where a publisher stands, kept across kvbmd restarts: the
 * next batch seq of its stream and, per pool, the ring position after the
 * last event it sent. A restarted kvbmd (SIGKILLed included) continues
 * the seq and resumes each ring from there, so a subscriber sees neither
 * a gap nor a seq that goes back, and misses nothing made while no kvbmd
 * ran (the ring kept it).
 *
 * The state is a small file beside the pools ($KVBM_SHM_DIR, /dev/shm by
 * default: it lives as long as they do), mapped shared: a store to it is
 * in the page cache the moment it is made, so a SIGKILL loses nothing
 * written. A batch from the ring is a contiguous run of ring events; the
 * publisher records it as in flight (its seq and ring range) before
 * sending it and commits it after. A kvbmd killed between the two sends
 * that exact batch again under the same seq: a duplicate at worst, never a
 * seq reused for other events. A snapshot's batches are not ring ranges:
 * each takes its seq before it is sent, and the pool is marked
 * unresumable until the snapshot's last batch is out, so a kill
 * mid-snapshot is followed by a new snapshot, never by half of one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvbmd.h"

#define PUBSTATE_MAGIC 0x6b76626d64707332ull /* "kvbmdps2" */

struct pubstate_pool {
	uint64_t instance_id; /* the pool's: a recreated pool does not resume */
	uint64_t cursor;      /* ring position after the last batch committed */
	uint64_t valid;       /* 0: unknown or mid-snapshot: snapshot again */
};

struct kvbmd_pubstate {
	uint64_t magic;
	uint64_t seq; /* the next batch's */
	/* the batch being sent: pending while its seq is still the next */
	uint64_t fl_seq, fl_instance, fl_start, fl_end;
	struct pubstate_pool pool[KVBMD_MAX_POOLS];
};

/* Why map_file() refused an existing file, for the log (NULL: errno's). */
static const char *refused;

static struct kvbmd_pubstate *map_file(const char *path, int *fd_out)
{
	int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	struct kvbmd_pubstate *s;
	struct stat st;

	refused = NULL;
	if (fd < 0)
		return NULL;
	/*
	 * The file is mapped shared: whoever else may write it could truncate
	 * it under us, and our next store would be a SIGBUS. So only a regular
	 * file of our own user that nobody else may write (0600 when we made
	 * it; a pre-made one in a world-writable /dev/shm may be anything).
	 */
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 077)) {
		refused = "not a regular file of kvbmd's user with mode 0600";
		close(fd);
		return NULL;
	}
	/* a second kvbmd on the same pools must not interleave its seq */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0 || ftruncate(fd, sizeof(*s)) < 0) {
		close(fd);
		return NULL;
	}
	s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (s == MAP_FAILED) {
		close(fd);
		return NULL;
	}
	*fd_out = fd;
	return s;
}

struct kvbmd_pubstate *kvbmd_pubstate_open(const char *first_pool, const char *transport,
					   int *fd)
{
	const char *dir = getenv("KVBM_SHM_DIR");
	char path[512], name[KVBM_NAME_MAX + 1];
	struct kvbmd_pubstate *s;

	snprintf(name, sizeof(name), "%s", first_pool);
	for (char *c = name; *c; c++)
		if (*c == '/')
			*c = '_';
	snprintf(path, sizeof(path), "%s/kvbmd.%s.%s-state", dir && *dir ? dir : "/dev/shm", name,
		 transport);
	s = map_file(path, fd);
	if (!s) {
		kvbmd_log("%s: %s: the stream restarts at seq 0 with each kvbmd", path,
			  refused                ? refused
			  : errno == EWOULDBLOCK ? "another kvbmd publishes these pools"
						 : strerror(errno));
		*fd = -1;
		s = calloc(1, sizeof(*s)); /* this run's only */
		if (s)
			s->magic = PUBSTATE_MAGIC;
		return s;
	}
	if (s->magic != PUBSTATE_MAGIC) /* new, or not ours: start afresh */
		*s = (struct kvbmd_pubstate){.magic = PUBSTATE_MAGIC};
	return s;
}

void kvbmd_pubstate_close(struct kvbmd_pubstate *s, int fd)
{
	if (!s)
		return;
	if (fd < 0) {
		free(s);
		return;
	}
	munmap(s, sizeof(*s));
	close(fd);
}

uint64_t kvbmd_pubstate_seq(const struct kvbmd_pubstate *s)
{
	return s->seq;
}

static struct pubstate_pool *find(struct kvbmd_pubstate *s, uint64_t instance)
{
	for (size_t i = 0; i < KVBMD_MAX_POOLS; i++)
		if (s->pool[i].instance_id == instance)
			return &s->pool[i];
	return NULL;
}

static struct pubstate_pool *slot(struct kvbmd_pubstate *s, uint64_t instance)
{
	struct pubstate_pool *p = find(s, instance);

	if (!p)
		p = find(s, 0);
	return p ? p : &s->pool[0]; /* more pools than slots over time */
}

int kvbmd_pubstate_resume(struct kvbmd_pubstate *s, uint64_t instance, uint64_t head,
			  uint64_t *cursor, uint64_t *until)
{
	struct pubstate_pool *p = find(s, instance);

	*until = 0;
	if (!p || !p->valid)
		return 0;
	*cursor = p->cursor;
	if (s->fl_seq == s->seq && s->fl_instance == instance && s->fl_start < s->fl_end) {
		/* killed while sending it: the same batch again, same seq */
		*cursor = s->fl_start;
		*until = s->fl_end;
	}
	/* a lapped cursor is the reader's KVBM_EGAP: a snapshot then */
	return *cursor <= head && *until <= head;
}

void kvbmd_pubstate_begin(struct kvbmd_pubstate *s, uint64_t instance, uint64_t start,
			  uint64_t end)
{
	/* the seq last: what makes the record pending */
	s->fl_seq = UINT64_MAX;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	s->fl_instance = instance;
	s->fl_start = start;
	s->fl_end = end;
	/* the order of these stores is what a SIGKILL leaves: keep it */
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	s->fl_seq = s->seq;
}

void kvbmd_pubstate_commit(struct kvbmd_pubstate *s, uint64_t instance, uint64_t end)
{
	struct pubstate_pool *p = slot(s, instance);

	/* the cursor before the seq: a kill between them leaves the record
	 * pending, which resumes at its start, not at this cursor */
	p->instance_id = instance;
	p->cursor = end;
	p->valid = 1;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	s->seq++;
}

uint64_t kvbmd_pubstate_take(struct kvbmd_pubstate *s)
{
	return s->seq++;
}

void kvbmd_pubstate_mark(struct kvbmd_pubstate *s, uint64_t instance, uint64_t cursor, int valid)
{
	struct pubstate_pool *p = slot(s, instance);

	p->valid = 0;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	p->instance_id = instance;
	p->cursor = cursor;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	p->valid = (uint64_t)valid;
}
