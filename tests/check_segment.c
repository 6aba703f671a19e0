/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_segment.c - segment lifecycle, validation errors, the creation race,
 * a creator killed mid-initialisation, permissions, /dev/shm full, hugepages,
 * and who may touch a pool (squatters, foreign owners, modes, namespaces).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/pool.h"
#include "../shm/failpoint.h"
#include "../shm/layout.h"
#include "../shm/liveness.h"
#include "../shm/segment.h"

static int open_attach(const char *name, unsigned timeout_ms, struct kvbm_pool **p)
{
	struct kvbm_config cfg = t_cfg();

	cfg.open_timeout_ms = timeout_ms;
	return kvbm_pool_open(name, &cfg, 0, p);
}

START_TEST(test_create_attach_detach_destroy)
{
	T_NAME(name);
	struct kvbm_pool *a = t_create(name, NULL), *b;
	struct kvbm_pool_info ia, ib;
	char path[256];

	ck_assert_int_eq(kvbm_pool_info(a, &ia), 0);
	ck_assert_int_eq(ia.initialized_by_me, 1);
	ck_assert_uint_ne(ia.instance_id, 0);
	ck_assert_uint_eq(ia.config.block_count, 256);
	ck_assert_uint_eq(ia.procs_attached, 1);

	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &b), 0);
	ck_assert_int_eq(kvbm_pool_info(b, &ib), 0);
	ck_assert_int_eq(ib.initialized_by_me, 0);
	ck_assert_uint_eq(ib.instance_id, ia.instance_id);
	ck_assert_uint_ne(ib.attach_gen, ia.attach_gen);
	ck_assert_uint_ne(ib.proc_index, ia.proc_index);
	ck_assert_uint_eq(ib.procs_attached, 2);

	ck_assert_int_eq(kvbm_pool_close(b), 0);
	ck_assert_int_eq(kvbm_pool_info(a, &ia), 0);
	ck_assert_uint_eq(ia.procs_attached, 1);
	ck_assert_int_eq(kvbm_pool_close(a), 0);

	/* a pool outlives its attachers until destroyed */
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &b), 0);
	ck_assert_int_eq(kvbm_pool_info(b, &ib), 0);
	ck_assert_uint_eq(ib.instance_id, ia.instance_id);
	ck_assert_int_eq(kvbm_pool_close(b), 0);

	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
	ck_assert_int_eq(access(t_path(name, path, sizeof(path)), F_OK), -1);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &b), -ENOENT);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), -ENOENT);
}
END_TEST

START_TEST(test_open_missing_and_exclusive_create)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p;

	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), -ENOENT);
	ck_assert_ptr_null(p);
	p = t_create(name, NULL);
	struct kvbm_pool *q;
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &q),
			 -EEXIST);
	/* CREATE without EXCL attaches to the existing pool */
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &q), 0);
	struct kvbm_pool_info info;
	kvbm_pool_info(q, &info);
	ck_assert_int_eq(info.initialized_by_me, 0);
	kvbm_pool_close(q);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_invalid_names)
{
	static const char *const bad[] = {"", "a/b", ".hidden", "has space", "semi;colon", "ä"};
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p;
	char longname[KVBM_NAME_MAX + 2];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_int_eq(kvbm_pool_open(bad[i], &cfg, KVBM_OPEN_CREATE, &p), KVBM_ENAME);
	ck_assert_int_eq(kvbm_pool_open(NULL, &cfg, KVBM_OPEN_CREATE, &p), KVBM_ENAME);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	ck_assert_int_eq(kvbm_pool_open(longname, &cfg, KVBM_OPEN_CREATE, &p), KVBM_ENAME);
	ck_assert_int_eq(kvbm_pool_destroy("a/b", 0), KVBM_ENAME);
}
END_TEST

START_TEST(test_invalid_configs)
{
	T_NAME(name);
	struct kvbm_pool *p;
	struct kvbm_config c;
	char path[256];

#define BAD(field, value)                                                                    \
	do {                                                                                 \
		c = t_cfg();                                                                 \
		c.field = value;                                                             \
		ck_assert_int_eq(kvbm_pool_open(name, &c, KVBM_OPEN_CREATE, &p), -EINVAL);   \
	} while (0)
	BAD(block_count, 0);
	BAD(block_count, KVBM_MAX_BLOCKS + 1);
	BAD(block_size, 0);
	BAD(block_size, 15);
	BAD(block_size, 2048);
	BAD(max_procs, 0);
	BAD(max_procs, KVBM_MAX_PROCS + 1);
	BAD(mode, 0400);
	BAD(mode, 01600);
	BAD(flags, 0x80);
	BAD(gid, -2);
#undef BAD
	ck_assert_int_eq(kvbm_pool_open(name, NULL, KVBM_OPEN_CREATE, &p), -EINVAL);
	c = t_cfg();
	ck_assert_int_eq(kvbm_pool_open(name, &c, 0x100, &p), -EINVAL);
	ck_assert_int_eq(kvbm_pool_open(name, &c, 0, NULL), -EINVAL);
	/* nothing was left behind by the refusals */
	ck_assert_int_eq(access(t_path(name, path, sizeof(path)), F_OK), -1);
}
END_TEST

START_TEST(test_attach_with_other_config_is_refused)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL), *q;
	struct kvbm_config c = t_cfg();

	c.block_count = 512;
	ck_assert_int_eq(kvbm_pool_open(name, &c, KVBM_OPEN_CREATE, &q), KVBM_EMISMATCH);
	c = t_cfg();
	c.max_procs = 8;
	ck_assert_int_eq(kvbm_pool_open(name, &c, 0, &q), KVBM_EMISMATCH);
	/* the refused attaches took no process-table entry */
	struct kvbm_pool_info info;
	kvbm_pool_info(p, &info);
	ck_assert_uint_eq(info.procs_attached, 1);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* Creates a pool, detaches, and returns its name with the file in place. */
static void make_closed_pool(const char *name)
{
	kvbm_pool_close(t_create(name, NULL));
}

START_TEST(test_bad_magic)
{
	T_NAME(name);
	char path[256], junk[8192];
	struct kvbm_pool *p;
	struct kvbm_config cfg = t_cfg();

	memset(junk, 'J', sizeof(junk));
	int fd = open(t_path(name, path, sizeof(path)), O_RDWR | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, junk, sizeof(junk)), sizeof(junk));
	close(fd);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), KVBM_EBADMAGIC);
	/* creating over a foreign file must not overwrite it */
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), KVBM_EBADMAGIC);
	fd = open(path, O_RDONLY);
	char first[8];
	ck_assert_int_eq(read(fd, first, 8), 8);
	close(fd);
	ck_assert_int_eq(memcmp(first, "JJJJJJJJ", 8), 0);
	unlink(path);
}
END_TEST

START_TEST(test_wrong_abi)
{
	T_NAME(name);
	struct kvbm_pool *p;
	uint16_t abi = KVBM_ABI_MAJOR + 1;

	make_closed_pool(name);
	t_patch(name, offsetof(struct kvbm_shm_header, abi_major), &abi, sizeof(abi));
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), KVBM_EABI);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_wrong_layout_hash)
{
	T_NAME(name);
	struct kvbm_pool *p;
	uint64_t h = kvbm_layout_hash() ^ 1;

	make_closed_pool(name);
	t_patch(name, offsetof(struct kvbm_shm_header, layout_hash), &h, sizeof(h));
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), KVBM_ELAYOUT);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_truncated_file)
{
	T_NAME(name);
	struct kvbm_pool *p;
	char path[256];

	make_closed_pool(name);
	t_path(name, path, sizeof(path));
	ck_assert_int_eq(truncate(path, 5000), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), KVBM_ETRUNCATED);
	/* shorter than a header */
	ck_assert_int_eq(truncate(path, 100), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), KVBM_ETRUNCATED);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
}
END_TEST

START_TEST(test_grown_file)
{
	T_NAME(name);
	struct kvbm_pool *p;
	char path[256];
	struct stat st;

	make_closed_pool(name);
	t_path(name, path, sizeof(path));
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(truncate(path, st.st_size + 4096), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), KVBM_ETRUNCATED);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_corrupt_region_table)
{
	T_NAME(name);
	struct kvbm_pool *p;
	uint64_t off = 12345;
	uint32_t procs = 0;

	make_closed_pool(name);
	t_patch(name,
		offsetof(struct kvbm_shm_header, regions) +
			KVBM_REGION_PROCS * sizeof(struct kvbm_shm_region),
		&off, sizeof(off));
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), KVBM_ECORRUPT);
	kvbm_pool_destroy(name, 0);

	make_closed_pool(name);
	t_patch(name, offsetof(struct kvbm_shm_header, config.max_procs), &procs, sizeof(procs));
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), KVBM_ECORRUPT);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_stuck_initializing_is_reinitialised)
{
	T_NAME(name);
	struct kvbm_pool *p;
	struct kvbm_pool_info info;
	uint32_t st = KVBM_SEG_INITIALIZING;
	struct kvbm_config cfg = t_cfg();

	make_closed_pool(name);
	t_patch(name, offsetof(struct kvbm_shm_header, state), &st, sizeof(st));
	/* attach-only cannot finish someone else's initialisation */
	ck_assert_int_eq(open_attach(name, 0, &p), KVBM_EINITIALIZING);
	ck_assert_int_eq(open_attach(name, 50, &p), KVBM_EINITIALIZING);
	/* nobody holds the init lock: the creator is dead, start over */
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), 0);
	kvbm_pool_info(p, &info);
	ck_assert_int_eq(info.initialized_by_me, 1);
	kvbm_pool_close(p);
	ck_assert_int_eq(open_attach(name, 0, &p), 0);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_live_creator_makes_attachers_wait)
{
	T_NAME(name);
	struct kvbm_pool *p;
	struct kvbm_config cfg = t_cfg();
	char path[256];
	int hold[2];

	/* a "creator" that holds the init write lock and never finishes */
	ck_assert_int_eq(pipe(hold), 0);
	int fd = open(t_path(name, path, sizeof(path)), O_RDWR | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	pid_t pid = fork();
	if (pid == 0) {
		char c;
		close(hold[1]);
		/* its own open file description: an inherited fd would share
		 * the parent's, and OFD locks do not conflict within one */
		int cfd = open(path, O_RDWR);
		T_CHILD_CHECK(kvbm_ofd_trylock(cfd, KVBM_LOCK_INIT_BYTE, F_WRLCK) == 0, 2);
		T_CHILD_CHECK(read(hold[0], &c, 1) >= 0, 3);
		_exit(0);
	}
	close(hold[0]);
	/* wait until the child holds the lock */
	while (kvbm_ofd_probe(fd, KVBM_LOCK_INIT_BYTE) != 1)
		usleep(1000);
	cfg.open_timeout_ms = 100;
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, 0, &p), KVBM_EINITIALIZING);
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), KVBM_EINITIALIZING);
	/* the creator goes away: the next opener initialises */
	close(hold[1]);
	ck_assert_int_eq(t_wait(pid), 0);
	close(fd);
	cfg.open_timeout_ms = 5000;
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), 0);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* The creator dies at each failpoint of initialisation. */
static const char *const init_points[] = {"shm.init.header", "shm.init.regions",
					  "shm.init.ready"};

START_TEST(test_creator_killed_mid_init)
{
	T_NAME(name);
	const char *fp = init_points[_i];
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p;
	struct kvbm_pool_info info;

	pid_t pid = fork();
	if (pid == 0) {
		kvbm_fp_arm(fp);
		kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p);
		_exit(1); /* not reached: the failpoint kills us */
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	if (_i < 2) {
		/* never became READY: attachers are told, creators redo it */
		ck_assert_int_eq(open_attach(name, 0, &p), KVBM_EINITIALIZING);
		ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), 0);
		kvbm_pool_info(p, &info);
		ck_assert_int_eq(info.initialized_by_me, 1);
	} else {
		/* READY was stored: the pool is complete, adopt it */
		ck_assert_int_eq(open_attach(name, 0, &p), 0);
		kvbm_pool_info(p, &info);
		ck_assert_int_eq(info.initialized_by_me, 0);
	}
	ck_assert_uint_eq(info.procs_attached, 1);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* 8 processes create one name at the same moment, many rounds: exactly one
 * initialises, all attach to the same instance. */
START_TEST(test_concurrent_create_8_processes)
{
	enum { N = 8, ROUNDS = 25 };

	for (int round = 0; round < ROUNDS; round++) {
		T_NAME(name);
		struct t_gate start, leave;
		int rep[2];
		pid_t pids[N];

		t_gate_init(&start);
		t_gate_init(&leave);
		ck_assert_int_eq(pipe(rep), 0);
		for (int i = 0; i < N; i++) {
			pids[i] = fork();
			if (pids[i] == 0) {
				struct kvbm_config cfg = t_cfg();
				struct kvbm_pool *p;
				struct kvbm_pool_info info = {0};
				int64_t msg[3];

				close(rep[0]);
				t_gate_wait(&start);
				msg[0] = kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p);
				if (msg[0] == 0)
					kvbm_pool_info(p, &info);
				msg[1] = info.initialized_by_me;
				msg[2] = (int64_t)info.instance_id;
				t_send(rep[1], msg, sizeof(msg));
				t_gate_wait(&leave);
				_exit(msg[0] == 0 && kvbm_pool_close(p) == 0 ? 0 : 1);
			}
		}
		close(rep[1]);
		t_gate_open(&start);
		int inits = 0;
		int64_t id = 0;
		for (int i = 0; i < N; i++) {
			int64_t msg[3];
			ck_assert_int_eq(t_recv(rep[0], msg, sizeof(msg)), 0);
			ck_assert_msg(msg[0] == 0, "round %d: open: %s", round,
				      kvbm_strerror((int)msg[0]));
			inits += (int)msg[1];
			if (i == 0)
				id = msg[2];
			ck_assert_int_eq(msg[2], id);
		}
		close(rep[0]);
		ck_assert_int_eq(inits, 1);
		t_gate_open(&leave);
		for (int i = 0; i < N; i++)
			ck_assert_int_eq(t_wait(pids[i]), 0);
		ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
	}
}
END_TEST

START_TEST(test_file_mode_and_group)
{
	T_NAME(name);
	T_NAME(name2);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p;
	char path[256];
	struct stat st;

	mode_t old = umask(0077); /* the config's mode wins over the umask */
	cfg.mode = 0660;
	p = t_create(name, &cfg);
	umask(old);
	ck_assert_int_eq(stat(t_path(name, path, sizeof(path)), &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0660);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);

	p = t_create(name2, NULL);
	ck_assert_int_eq(stat(t_path(name2, path, sizeof(path)), &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name2, 0);

	if (t_is_root()) {
		cfg.gid = 65534;
		p = t_create(name, &cfg);
		ck_assert_int_eq(stat(t_path(name, path, sizeof(path)), &st), 0);
		ck_assert_uint_eq(st.st_gid, 65534);
		kvbm_pool_close(p);
		kvbm_pool_destroy(name, 0);
	}
}
END_TEST

/* Runs an attach as uid/gid 65534 (nobody/nogroup); returns its result. */
static int open_as_nobody(const char *name)
{
	int rep[2];
	int r;

	ck_assert_int_eq(pipe(rep), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *p;
		close(rep[0]);
		if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
		    setresuid(65534, 65534, 65534) < 0)
			_exit(3);
		r = kvbm_pool_open(name, NULL, 0, &p);
		t_send(rep[1], &r, sizeof(r));
		if (r == 0)
			kvbm_pool_close(p);
		_exit(0);
	}
	close(rep[1]);
	ck_assert_int_eq(t_wait(pid), 0);
	ck_assert_int_eq(t_recv(rep[0], &r, sizeof(r)), 0);
	close(rep[0]);
	return r;
}

START_TEST(test_other_user_cannot_open_0600)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();

	if (!t_is_root()) {
		fprintf(stderr, "test_other_user_cannot_open_0600: needs root to switch users\n");
		return;
	}
	struct kvbm_pool *p = t_create(name, NULL);
	ck_assert_int_eq(open_as_nobody(name), -EACCES);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);

	/* group access opens it to the group */
	cfg.mode = 0660;
	cfg.gid = 65534;
	p = t_create(name, &cfg);
	ck_assert_int_eq(open_as_nobody(name), 0);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/*
 * Who may touch a pool. Another local user can create kvbm.NAME in a
 * world-writable directory (the test directory is 1777, like /dev/shm)
 * before we do, or prepare a pool image there: we must neither build our
 * pool in their file nor map their bytes.
 */

/* Runs @fn(@name) in a child as uid/gid 65534 (nobody/nogroup); returns
 * its exit code (90: could not switch users). */
static int run_as_nobody(int (*fn)(const char *), const char *name)
{
	pid_t pid = fork();

	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
		    setresuid(65534, 65534, 65534) < 0)
			_exit(90);
		_exit(fn(name));
	}
	return t_wait(pid);
}

/* The squatter: an empty file under the pool's name, writable by all. */
static int squat_empty(const char *name)
{
	char path[256];
	int fd = open(t_path(name, path, sizeof(path)), O_RDWR | O_CREAT | O_EXCL, 0666);

	if (fd < 0 || fchmod(fd, 0666) < 0)
		return 1;
	close(fd);
	return 0;
}

/* A pool image another user prepared (a real pool, owned by them). */
static int create_closed_pool(const char *name)
{
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p;

	if (kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &p) != 0)
		return 1;
	return kvbm_pool_close(p) == 0 ? 0 : 2;
}

START_TEST(test_create_refuses_squatted_file)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p;
	char path[256];
	struct stat st;

	if (!t_is_root()) {
		fprintf(stderr, "test_create_refuses_squatted_file: needs root to switch users\n");
		return;
	}
	ck_assert_int_eq(run_as_nobody(squat_empty, name), 0);
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), KVBM_EOWNER);
	ck_assert_ptr_null(p);
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &p),
			 -EEXIST);
	/* nothing was built in their file */
	ck_assert_int_eq(stat(t_path(name, path, sizeof(path)), &st), 0);
	ck_assert_int_eq(st.st_size, 0);
	ck_assert_uint_eq(st.st_uid, 65534);
	ck_assert_uint_eq(st.st_mode & 07777, 0666);
	unlink(path);
	/* our own leftover (a creator that died before writing anything)
	 * is still ours to initialise */
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), 0);
	kvbm_pool_close(p);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
}
END_TEST

START_TEST(test_attach_refuses_foreign_owner)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p;

	if (!t_is_root()) {
		fprintf(stderr, "test_attach_refuses_foreign_owner: needs root to switch users\n");
		return;
	}
	ck_assert_int_eq(run_as_nobody(create_closed_pool, name), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), KVBM_EOWNER);
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, 0, &p), KVBM_EOWNER);
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), KVBM_EOWNER);
	/* unless the caller names that user as the pool's owner */
	cfg.uid = 65534;
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, 0, &p), 0);
	kvbm_pool_close(p);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
}
END_TEST

START_TEST(test_create_gives_file_to_configured_owner)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p, *q;
	char path[256];
	struct stat st;

	if (!t_is_root()) {
		fprintf(stderr, "test_create_gives_file_to_configured_owner: needs root\n");
		return;
	}
	cfg.uid = 65534;
	p = t_create(name, &cfg);
	ck_assert_int_eq(stat(t_path(name, path, sizeof(path)), &st), 0);
	ck_assert_uint_eq(st.st_uid, 65534);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	/* that user attaches as the owner it is */
	ck_assert_int_eq(open_as_nobody(name), 0);
	/* an attacher that did not name the owner trusts only itself and root */
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &q), KVBM_EOWNER);
	/* unless it says it takes whatever it was pointed at (an operator's
	 * tool); never to create */
	ck_assert_int_eq(kvbm_pool_open(name, NULL, KVBM_OPEN_ANY_OWNER, &q), 0);
	kvbm_pool_close(q);
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_ANY_OWNER | KVBM_OPEN_CREATE, &q),
			 -EINVAL);
	char out[4096];
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", "--lock", name,
				    (char *)NULL),
			 0);
	kvbm_pool_close(p);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
}
END_TEST

START_TEST(test_attach_refuses_wider_mode)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p;
	char path[256];

	make_closed_pool(name); /* 0600 */
	t_path(name, path, sizeof(path));
	ck_assert_int_eq(chmod(path, 0660), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), KVBM_EMODE);
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), KVBM_EMODE);
	ck_assert_int_eq(chmod(path, 0606), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), KVBM_EMODE);
	ck_assert_int_eq(chmod(path, 0600), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);

	/* narrower than configured is fine: less access, not more */
	cfg.mode = 0660;
	kvbm_pool_close(t_create(name, &cfg));
	ck_assert_int_eq(chmod(path, 0600), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_create_refuses_others_mode)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p;
	char path[256], out[512];
	struct stat st;

	t_path(name, path, sizeof(path));
	static const uint32_t modes[] = {0666, 0604, 0601, 0602, 0664};
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		cfg.mode = modes[i];
		ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), KVBM_EOTHERS);
		ck_assert_int_eq(access(path, F_OK), -1);
	}
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "create", name, "--mode",
				    "0666", NULL),
			 1);
	ck_assert_int_eq(access(path, F_OK), -1);

	/* forced: the operator asked for it in so many words */
	cfg.mode = 0604;
	cfg.flags = KVBM_CFG_ALLOW_OTHERS;
	p = t_create(name, &cfg);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0604);
	kvbm_pool_close(p);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	kvbm_pool_close(p);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "create", name, "--mode",
				    "0666", "--allow-others", NULL),
			 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0666);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
}
END_TEST

START_TEST(test_destroy_refuses_non_pool)
{
	T_NAME(name);
	T_NAME(target);
	char path[256], tpath[256], junk[8192], out[1024];

	memset(junk, 'J', sizeof(junk));
	int fd = open(t_path(name, path, sizeof(path)), O_RDWR | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, junk, sizeof(junk)), sizeof(junk));
	close(fd);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), KVBM_EBADMAGIC);
	ck_assert_int_eq(access(path, F_OK), 0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "destroy", name, NULL), 1);
	ck_assert_int_eq(access(path, F_OK), 0);
	/* forced, and the tool says what it removed */
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "destroy", name, "--force",
				    NULL),
			 0);
	ck_assert_msg(strstr(out, "not a kvbm pool") != NULL, "%s", out);
	ck_assert_int_eq(access(path, F_OK), -1);

	/* empty: nothing of ours was ever written */
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), KVBM_EBADMAGIC);
	ck_assert_int_eq(kvbm_pool_destroy(name, KVBM_DESTROY_FORCE), 0);
	ck_assert_int_eq(access(path, F_OK), -1);

	/* a symbolic link: removing it leaves its target alone */
	make_closed_pool(target);
	ck_assert_int_eq(symlink(t_path(target, tpath, sizeof(tpath)), path), 0);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), KVBM_EBADMAGIC);
	ck_assert_int_eq(kvbm_pool_destroy(name, KVBM_DESTROY_FORCE), 0);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(access(tpath, F_OK), 0);
	ck_assert_int_eq(kvbm_pool_destroy(target, 0), 0);
}
END_TEST

START_TEST(test_attach_refuses_other_pidns)
{
	T_NAME(name);
	struct kvbm_pool *p;
	int rep[2];

	if (!t_is_root()) {
		fprintf(stderr, "test_attach_refuses_other_pidns: needs root for a PID namespace\n");
		return;
	}
	p = t_create(name, NULL);
	ck_assert_int_eq(pipe(rep), 0);
	pid_t pid = fork();
	if (pid == 0) {
		/* unshare moves our children, not us, into the new namespace */
		if (unshare(CLONE_NEWPID) < 0)
			_exit(77);
		pid_t g = fork();
		if (g == 0) {
			struct kvbm_config cfg = t_cfg();
			struct kvbm_pool *q;
			int r[2];
			r[0] = kvbm_pool_open(name, NULL, 0, &q);
			r[1] = kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &q);
			t_send(rep[1], r, sizeof(r));
			_exit(0);
		}
		int st;
		_exit(g > 0 && waitpid(g, &st, 0) == g && WIFEXITED(st) ? WEXITSTATUS(st) : 2);
	}
	close(rep[1]);
	int code = t_wait(pid);
	if (code == 77) {
		fprintf(stderr, "test_attach_refuses_other_pidns: skipped: unshare(CLONE_NEWPID) "
				"refused here\n");
	} else {
		int r[2];
		ck_assert_int_eq(code, 0);
		ck_assert_int_eq(t_recv(rep[0], r, sizeof(r)), 0);
		ck_assert_int_eq(r[0], KVBM_EPIDNS);
		ck_assert_int_eq(r[1], KVBM_EPIDNS);
	}
	close(rep[0]);
	/* the refusals took no process-table entry */
	struct kvbm_pool_info info;
	kvbm_pool_info(p, &info);
	ck_assert_uint_eq(info.procs_attached, 1);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_check_size_notices_truncation)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);
	char path[256];

	ck_assert_int_eq(kvbm_seg_check_size(&p->seg), 0);
	/* one byte short: the page stays mapped, so nothing faults while the
	 * check reports what a longer cut would make a SIGBUS */
	t_path(name, path, sizeof(path));
	ck_assert_int_eq(truncate(path, (off_t)p->seg.size - 1), 0);
	ck_assert_int_eq(kvbm_seg_check_size(&p->seg), KVBM_ETRUNCATED);
	ck_assert_int_eq(truncate(path, (off_t)p->seg.size), 0);
	ck_assert_int_eq(kvbm_seg_check_size(&p->seg), 0);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* What in_private_tmpfs() returns when the environment cannot give a
 * private tmpfs: a chroot's "/" is no mount point, so making it private
 * fails; a container may refuse unshare or mount. The test cannot run
 * there, which is not a failure of the code under test. */
#define T_NO_TMPFS 77
static const char no_tmpfs_why[] =
	"cannot mount a private tmpfs here (a chroot, or a container without CAP_SYS_ADMIN)";

/*
 * Runs @fn in a child with KVBM_SHM_DIR on a private tmpfs mounted with
 * @opts (its own mount namespace). Returns the child's exit code, or
 * T_NO_TMPFS.
 */
static int in_private_tmpfs(const char *opts, int (*fn)(void))
{
	char dir[] = "/tmp/kvbm-mnt-XXXXXX";

	ck_assert_ptr_nonnull(mkdtemp(dir));
	pid_t pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWNS) < 0 ||
		    mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    mount("kvbm-test", dir, "tmpfs", 0, opts) < 0)
			_exit(T_NO_TMPFS);
		setenv("KVBM_SHM_DIR", dir, 1);
		_exit(fn());
	}
	int r = t_wait(pid);
	rmdir(dir);
	return r;
}

static int create_too_big(void)
{
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p;
	char path[512];

	cfg.block_count = 1;
	cfg.max_procs = KVBM_MAX_PROCS;
	cfg.flags = 0;
	cfg.event_ring = 0; /* the sizes below are without a ring */
	/* 8 KiB tmpfs: 63 process entries do not fit, 1 does */
	if (kvbm_pool_open("big", &cfg, KVBM_OPEN_CREATE, &p) != -ENOSPC)
		return 1;
	snprintf(path, sizeof(path), "%s/kvbm.big", getenv("KVBM_SHM_DIR"));
	if (access(path, F_OK) == 0)
		return 2; /* a failed creation leaves nothing behind */
	cfg.max_procs = 1;
	if (kvbm_pool_open("small", &cfg, KVBM_OPEN_CREATE, &p) != 0)
		return 3;
	return kvbm_pool_close(p) == 0 ? 0 : 4;
}

START_TEST(test_shm_full_fails_at_creation)
{
	if (!t_is_root()) {
		fprintf(stderr, "test_shm_full_fails_at_creation: needs root to mount a tmpfs\n");
		return;
	}
	int r = in_private_tmpfs("size=8k", create_too_big);
	if (r == T_NO_TMPFS) {
		fprintf(stderr, "test_shm_full_fails_at_creation: skipped: %s\n", no_tmpfs_why);
		return;
	}
	ck_assert_int_eq(r, 0);
}
END_TEST

START_TEST(test_hugepages_refused_without_thp)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p;
	char path[256];
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");

	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = '\0';
		fclose(f);
	}
	if (strstr(buf, "[force]"))
		return; /* every tmpfs has hugepages here */
	/* the test directory is a plain tmpfs (no huge= option) */
	cfg.flags = KVBM_CFG_HUGEPAGES;
	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), KVBM_ENOHUGE);
	ck_assert_int_eq(access(t_path(name, path, sizeof(path)), F_OK), -1);
}
END_TEST

static int create_huge(void)
{
	struct kvbm_config cfg = t_cfg();
	struct kvbm_pool *p, *q;
	char line[256];
	int pmd_kb = 0, in_map = 0;

	cfg.flags = KVBM_CFG_HUGEPAGES;
	if (kvbm_pool_open("huge", &cfg, KVBM_OPEN_CREATE, &p) != 0)
		return 1;
	if (p->seg.size % KVBM_HUGEPAGE != 0)
		return 2;
	/* a second attacher maps it the same way */
	if (kvbm_pool_open("huge", NULL, 0, &q) != 0)
		return 3;
	FILE *f = fopen("/proc/self/smaps", "r");
	unsigned long start = (unsigned long)p->seg.base;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		int kb;
		if (sscanf(line, "%lx-%lx ", &a, &b) == 2)
			in_map = a == start;
		else if (in_map && (sscanf(line, "ShmemPmdMapped: %d kB", &kb) == 1 ||
				    sscanf(line, "FilePmdMapped: %d kB", &kb) == 1))
			pmd_kb += kb;
	}
	if (f)
		fclose(f);
	kvbm_pool_close(q);
	kvbm_pool_close(p);
	return pmd_kb >= 2048 ? 0 : 4;
}

START_TEST(test_hugepages_on_huge_tmpfs)
{
	if (!t_is_root()) {
		fprintf(stderr, "test_hugepages_on_huge_tmpfs: needs root to mount a tmpfs\n");
		return;
	}
	int r = in_private_tmpfs("size=16m,huge=advise", create_huge);
	if (r == T_NO_TMPFS) {
		fprintf(stderr, "test_hugepages_on_huge_tmpfs: skipped: %s\n", no_tmpfs_why);
		return;
	}
	ck_assert_int_eq(r, 0);
}
END_TEST

START_TEST(test_destroy_while_attached)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL), *q;
	struct kvbm_pool_info a, b;

	ck_assert_int_eq(kvbm_pool_destroy(name, 0), -EBUSY);
	ck_assert_int_eq(kvbm_pool_destroy(name, KVBM_DESTROY_FORCE), 0);
	/* the attached process keeps working on its mapping */
	ck_assert_int_eq(kvbm_pool_info(p, &a), 0);
	ck_assert_int_eq(kvbm_reap(p), 0);
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &q), -ENOENT);
	/* a new pool under the same name is a different instance */
	q = t_create(name, NULL);
	ck_assert_int_eq(kvbm_pool_info(q, &b), 0);
	ck_assert_uint_ne(a.instance_id, b.instance_id);
	ck_assert_int_eq(kvbm_pool_close(p), 0);
	ck_assert_int_eq(kvbm_pool_close(q), 0);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
}
END_TEST

Suite *make_segment_suite(void)
{
	Suite *s = suite_create("segment");
	TCase *tc = tcase_create("lifecycle");

	tcase_add_test(tc, test_create_attach_detach_destroy);
	tcase_add_test(tc, test_open_missing_and_exclusive_create);
	tcase_add_test(tc, test_invalid_names);
	tcase_add_test(tc, test_invalid_configs);
	tcase_add_test(tc, test_attach_with_other_config_is_refused);
	tcase_add_test(tc, test_destroy_while_attached);
	suite_add_tcase(s, tc);

	tc = tcase_create("validation");
	tcase_add_test(tc, test_bad_magic);
	tcase_add_test(tc, test_wrong_abi);
	tcase_add_test(tc, test_wrong_layout_hash);
	tcase_add_test(tc, test_truncated_file);
	tcase_add_test(tc, test_grown_file);
	tcase_add_test(tc, test_corrupt_region_table);
	tcase_add_test(tc, test_stuck_initializing_is_reinitialised);
	suite_add_tcase(s, tc);

	tc = tcase_create("creation_race");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_live_creator_makes_attachers_wait);
	tcase_add_loop_test(tc, test_creator_killed_mid_init, 0, 3);
	tcase_add_test(tc, test_concurrent_create_8_processes);
	suite_add_tcase(s, tc);

	tc = tcase_create("resources");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_file_mode_and_group);
	tcase_add_test(tc, test_other_user_cannot_open_0600);
	tcase_add_test(tc, test_shm_full_fails_at_creation);
	tcase_add_test(tc, test_hugepages_refused_without_thp);
	tcase_add_test(tc, test_hugepages_on_huge_tmpfs);
	suite_add_tcase(s, tc);

	tc = tcase_create("access");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_create_refuses_squatted_file);
	tcase_add_test(tc, test_attach_refuses_foreign_owner);
	tcase_add_test(tc, test_create_gives_file_to_configured_owner);
	tcase_add_test(tc, test_attach_refuses_wider_mode);
	tcase_add_test(tc, test_create_refuses_others_mode);
	tcase_add_test(tc, test_destroy_refuses_non_pool);
	tcase_add_test(tc, test_attach_refuses_other_pidns);
	tcase_add_test(tc, test_check_size_notices_truncation);
	suite_add_tcase(s, tc);
	return s;
}
