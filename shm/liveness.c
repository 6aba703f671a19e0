/* SPDX-License-Identifier: Apache-2.0 */
/*
 * liveness.c - see liveness.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "failpoint.h"
#include "liveness.h"

static int ofd_cmd(int fd, int cmd, off_t byte, short type, struct flock *out)
{
	struct flock fl = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
		.l_pid = 0, /* must be 0 for OFD locks */
	};

	if (fcntl(fd, cmd, &fl) < 0)
		return -errno;
	if (out)
		*out = fl;
	return 0;
}

int kvbm_ofd_trylock(int fd, off_t byte, short type)
{
	int r = ofd_cmd(fd, F_OFD_SETLK, byte, type, NULL);

	return r == -EACCES ? -EAGAIN : r;
}

int kvbm_ofd_unlock(int fd, off_t byte)
{
	return ofd_cmd(fd, F_OFD_SETLK, byte, F_UNLCK, NULL);
}

int kvbm_ofd_probe(int fd, off_t byte)
{
	struct flock fl = {0};
	int r = ofd_cmd(fd, F_OFD_GETLK, byte, F_WRLCK, &fl);

	if (r < 0)
		return r;
	return fl.l_type != F_UNLCK;
}

int kvbm_proc_stat(pid_t pid, uint64_t *starttime, char *state)
{
	char path[64], buf[1024];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		/* only the pid's absence is proof; EMFILE, ENFILE, ENOMEM,
		 * EACCES (hidepid) say nothing about the process */
		return errno == ENOENT || errno == ESRCH ? -ESRCH : -errno;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	int err = n < 0 ? errno : 0;
	close(fd);
	if (n < 0)
		return err == ESRCH ? -ESRCH : -err; /* ESRCH: it died since the open */
	if (n == 0)
		return -ESRCH; /* an exited task reads empty */
	buf[n] = '\0';

	/* field 2 (comm) may hold spaces and ')': scan from the last ')' */
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2])
		return -EIO;
	*state = p[2]; /* field 3 */
	p++;
	/* after ')' come fields 3..; starttime is field 22 */
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EIO;
	}
	char *end;
	unsigned long long v = strtoull(p + 1, &end, 10);
	if (end == p + 1)
		return -EIO;
	*starttime = v;
	return 0;
}

int kvbm_proc_starttime(pid_t pid, uint64_t *starttime)
{
	char state;

	return kvbm_proc_stat(pid, starttime, &state);
}

enum kvbm_liveness kvbm_proc_liveness(int fd, uint32_t idx, const struct kvbm_shm_proc *e)
{
	uint64_t st;
	char state;
	KVBM_FAILPOINT("shm.liveness.probe");
	int held = kvbm_ofd_probe(fd, KVBM_LOCK_LIVENESS_BASE + idx);

	if (held == 0)
		return KVBM_DEAD_LOCK_FREE;
	/* held, or the probe failed: the pid decides, on proof only */
	int r = kvbm_proc_stat((pid_t)e->pid, &st, &state);
	if (r == -ESRCH || (r == 0 && st != e->starttime))
		return KVBM_DEAD_PID_GONE;
	/* a zombie (or a task being torn down) runs no more code: a forked
	 * child that inherited the segment fd keeps the lock held, and a
	 * parent that never waits (PID 1 of some containers) keeps the pid */
	if (r == 0 && (state == 'Z' || state == 'X' || state == 'x'))
		return KVBM_DEAD_ZOMBIE;
	return KVBM_ALIVE; /* alive, or unknown (r < 0): never reaped on doubt */
}

const char *kvbm_liveness_name(enum kvbm_liveness l)
{
	switch (l) {
	case KVBM_ALIVE:
		return "alive";
	case KVBM_DEAD_LOCK_FREE:
		return "dead (liveness lock free)";
	case KVBM_DEAD_PID_GONE:
		return "dead (pid gone)";
	case KVBM_DEAD_ZOMBIE:
		return "dead (zombie)";
	}
	return "?";
}
