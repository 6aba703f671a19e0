/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_tools.c - kvbm-shm-dump, kvbm-pool and kvbm-demo, run as a user
 * would run them (from $KVBM_BIN), their output and exit codes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"
#include "../shm/layout.h"

static char out[65536];

/* Pipes @json into python3 with the assertion @expr over `d`. */
static int json_check(const char *json, const char *expr)
{
	char prog[1024];
	int p[2];

	snprintf(prog, sizeof(prog), "import json,sys; d=json.load(sys.stdin); assert %s, d",
		 expr);
	ck_assert_int_eq(pipe(p), 0);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(p[0], 0);
		close(p[0]);
		close(p[1]);
		execlp("python3", "python3", "-c", prog, (char *)NULL);
		_exit(127);
	}
	close(p[0]);
	ck_assert_int_eq(write(p[1], json, strlen(json)), (ssize_t)strlen(json));
	close(p[1]);
	return t_wait(pid);
}

/* kvbm-pool destroy takes kvbmd's stream state of the pool with it, unless
 * a running kvbmd holds it (its flock) */
START_TEST(test_pool_tool_destroy_removes_kvbmd_state)
{
	T_NAME(name);
	char buf[4096], state[PATH_MAX];
	struct kvbm_config cfg;
	struct kvbm_pool *p;
	int fd;

	kvbm_config_init(&cfg);
	cfg.block_count = 16;
	snprintf(state, sizeof(state), "%s/kvbmd.%s.zmq-state", getenv("KVBM_SHM_DIR"), name);
	for (int held = 1; held >= 0; held--) {
		ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), 0);
		ck_assert_int_eq(kvbm_pool_close(p), 0);
		fd = open(state, O_RDWR | O_CREAT, 0600);
		ck_assert_int_ge(fd, 0);
		if (held)
			ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
		ck_assert_int_eq(t_run_tool(buf, sizeof(buf), "kvbm-pool", "destroy", name, NULL),
				 0);
		ck_assert_int_eq(access(state, F_OK) == 0, held);
		close(fd);
	}
	ck_assert_ptr_nonnull(strstr(buf, "removed kvbmd's stream state"));
}
END_TEST

START_TEST(test_dump_valid_pool)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);
	char pid[32], expr[512];

	snprintf(pid, sizeof(pid), "%d", getpid());
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", name, NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "state      READY"));
	ck_assert_ptr_nonnull(strstr(out, "blocks=256 block_size=4 max_procs=16 mode=0600"));
	ck_assert_ptr_nonnull(strstr(out, "mutex      unlocked"));
	ck_assert_ptr_nonnull(strstr(out, "processes  1 of 16 entries in use"));
	ck_assert_ptr_nonnull(strstr(out, pid));
	ck_assert_ptr_nonnull(strstr(out, "alive"));

	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--json", name, NULL), 0);
	snprintf(expr, sizeof(expr),
		 "d['valid'] and d['header']['state']=='READY' and d['config']['block_count']==256"
		 " and len(d['processes'])==1 and d['processes'][0]['pid']==%d"
		 " and d['processes'][0]['alive'] and d['mutex']['recoveries']==0"
		 " and [r['name'] for r in d['regions']]==['control','procs','slots','registry','holders','metrics','evict','events','tokens','pins']",
		 getpid());
	ck_assert_int_eq(json_check(out, expr), 0);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_dump_works_when_every_process_is_dead)
{
	T_NAME(name);

	pid_t pid = fork();
	if (pid == 0) {
		struct kvbm_pool *p;
		struct kvbm_config cfg = t_cfg();
		if (kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p) == 0)
			raise(SIGKILL);
		_exit(1);
	}
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", name, NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "dead (liveness lock free)"));
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--json", name, NULL), 0);
	ck_assert_int_eq(json_check(out, "d['valid'] and not d['processes'][0]['alive']"), 0);
	/* --check --lock attaches, which reaps the dead creator: said, not silent */
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", "--lock", name,
				    NULL), 0);
	ck_assert_msg(strstr(out, "check: attaching reaped 1 dead process (holds dropped"), "%s",
		      out);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--check", "--lock", name,
				    NULL), 0);
	ck_assert_ptr_null(strstr(out, "reaped"));
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_dump_missing_and_invalid)
{
	T_NAME(name);
	char path[256];

	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", name, NULL), 3);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", NULL), 2);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--bogus", name, NULL),
			 2);

	/* a file that is not a pool, by path */
	int fd = open(t_path(name, path, sizeof(path)), O_RDWR | O_CREAT, 0600);
	ck_assert_int_eq(write(fd, "not a pool at all", 17), 17);
	close(fd);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", path, NULL), 1);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--json", path, NULL), 1);
	/* shorter than a header, but no magic either: not "truncated" */
	ck_assert_int_eq(json_check(out, "not d['valid'] and 'not a kvbm' in d['error']"), 0);
	unlink(path);

	/* a pool with the wrong ABI: the header is shown, the verdict says why */
	struct kvbm_pool *p = t_create(name, NULL);
	kvbm_pool_close(p);
	uint16_t abi = 77;
	t_patch(name, offsetof(struct kvbm_shm_header, abi_major), &abi, sizeof(abi));
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--json", name, NULL), 1);
	ck_assert_int_eq(
		json_check(out, "not d['valid'] and 'ABI' in d['error'] and d['header']['abi_major']==77"),
		0);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* Damaged counters are called damaged, not printed negative. */
START_TEST(test_dump_damaged_counters)
{
	T_NAME(name);

	struct kvbm_pool *p = t_create(name, NULL);
	struct kvbm_shm_header h;
	char seg[512];
	int fd = open(t_path(name, seg, sizeof(seg)), O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	close(fd);
	int64_t bad = INT64_MIN + 5;
	t_patch(name,
		(off_t)(h.regions[KVBM_REGION_METRICS].offset + KVBM_M_ALLOCATIONS * sizeof(int64_t)),
		&bad, sizeof(bad));
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", name, NULL), 0);
	ck_assert_msg(strstr(out, "allocations damaged (0x8000000000000005)"), "%s", out);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

/* Runs kvbm-pool with @args as user nobody (root only), stdout and stderr in
 * out[]; returns its exit code. */
/* kvbm-pool copied where user nobody may run it: the build tree may sit in
 * a directory only its owner can enter (a clone in /root: execl failed
 * with 127 on a fresh machine). */
static char nobody_dir[] = "/tmp/kvbm-nobody-XXXXXX";
static char nobody_bin[sizeof(nobody_dir) + 16];

static void nobody_bin_make(void)
{
	char src[512], buf[65536];
	ssize_t k;

	snprintf(src, sizeof(src), "%s/kvbm-pool", getenv("KVBM_BIN") ? getenv("KVBM_BIN")
									 : "build/bin");
	ck_assert_ptr_nonnull(mkdtemp(nobody_dir));
	ck_assert_int_eq(chmod(nobody_dir, 0755), 0);
	snprintf(nobody_bin, sizeof(nobody_bin), "%s/kvbm-pool", nobody_dir);
	int in = open(src, O_RDONLY | O_CLOEXEC);
	int out_fd = open(nobody_bin, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
	ck_assert_int_ge(in, 0);
	ck_assert_int_ge(out_fd, 0);
	while ((k = read(in, buf, sizeof(buf))) > 0)
		ck_assert_int_eq(write(out_fd, buf, (size_t)k), k);
	ck_assert_int_eq(k, 0);
	close(in);
	ck_assert_int_eq(close(out_fd), 0);
}

static void nobody_bin_drop(void)
{
	unlink(nobody_bin);
	rmdir(nobody_dir);
}

static int pool_as_nobody(const char *a1, const char *a2)
{
	int p[2];

	ck_assert_int_eq(pipe(p), 0);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		close(p[0]);
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(126);
		/* a sanitizer build's options name files in the tree (TSan's
		 * suppressions) that nobody cannot read: TSan then exits 66
		 * before main; this single-threaded run needs none of them */
		unsetenv("TSAN_OPTIONS");
		execl(nobody_bin, "kvbm-pool", a1, a2, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	size_t got = 0;
	ssize_t k;
	while (got < sizeof(out) - 1 && (k = read(p[0], out + got, sizeof(out) - 1 - got)) > 0)
		got += (size_t)k;
	out[got] = '\0';
	close(p[0]);
	return t_wait(pid);
}

/* What another user meets: a pool it cannot read is listed as such, and a
 * directory it cannot write is named, not blamed on a pool's owner. */
START_TEST(test_pool_cli_permissions)
{
	if (!t_is_root())
		return; /* needs another user */
	char dir[] = "/dev/shm/kvbm-perm-XXXXXX";
	char *old = strdup(getenv("KVBM_SHM_DIR") ? getenv("KVBM_SHM_DIR") : "/dev/shm");
	struct kvbm_config cfg;
	struct kvbm_pool *p;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(chmod(dir, 0755), 0);
	nobody_bin_make();
	setenv("KVBM_SHM_DIR", dir, 1);
	kvbm_config_init(&cfg);
	ck_assert_int_eq(kvbm_pool_open("secret", &cfg, KVBM_OPEN_CREATE, &p), 0);
	kvbm_pool_close(p);
	ck_assert_int_eq(pool_as_nobody("list", NULL), 0);
	ck_assert_msg(strstr(out, "secret") && strstr(out, "UNREADABLE") &&
			      strstr(out, "permission denied"),
		      "%s", out);
	ck_assert_int_eq(pool_as_nobody("create", "mine"), 1);
	ck_assert_msg(strstr(out, "kvbm-pool: create mine: no permission to create files in "),
		      "%s", out);
	ck_assert_ptr_null(strstr(out, "owner"));
	ck_assert_int_eq(kvbm_pool_destroy("secret", 0), 0);
	rmdir(dir);
	nobody_bin_drop();
	setenv("KVBM_SHM_DIR", old, 1);
	free(old);
}
END_TEST

/* A missing pool directory is named, not reported as a missing pool. */
START_TEST(test_missing_pool_dir_is_named)
{
	const char *want = "the pool directory /nonexistent-kvbm does not exist (set by "
			   "KVBM_SHM_DIR)\n";
	char *old = strdup(getenv("KVBM_SHM_DIR") ? getenv("KVBM_SHM_DIR") : "/dev/shm");

	setenv("KVBM_SHM_DIR", "/nonexistent-kvbm", 1);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-shm-dump", "g1", NULL), 3);
	ck_assert_msg(strstr(out, want), "%s", out);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-pool", "create", "g1", NULL), 1);
	ck_assert_msg(strstr(out, want), "%s", out);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-pool", "info", "g1", NULL), 1);
	ck_assert_msg(strstr(out, want), "%s", out);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-pool", "list", NULL), 1);
	ck_assert_msg(strstr(out, want), "%s", out);
	setenv("KVBM_SHM_DIR", old, 1);
	free(old);
}
END_TEST

START_TEST(test_pool_cli_lifecycle)
{
	T_NAME(name);
	char expr[512];

	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "create", name, "--blocks",
				    "4096", "--block-size", "32", "--max-procs", "8", "--mode",
				    "0660", NULL),
			 0);
	ck_assert_ptr_nonnull(strstr(out, "4096 blocks x 32 tokens"));
	/* created, then detached: the pool persists with nobody attached */
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "info", name, NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "attached  0 of 8 processes"));
	ck_assert_ptr_nonnull(strstr(out, "mode      0660"));
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "info", "--json", name, NULL), 0);
	ck_assert_int_eq(json_check(out, "d['valid'] and d['block_count']==4096 and "
					 "d['block_size']==32 and d['attached']==0"),
			 0);

	struct kvbm_pool *p;
	ck_assert_int_eq(kvbm_pool_open(name, NULL, 0, &p), 0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "list", "--json", NULL), 0);
	snprintf(expr, sizeof(expr),
		 "[x['attached'] for x in d if x['name']=='%s']==[1]", name);
	ck_assert_int_eq(json_check(out, expr), 0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "list", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, name));

	/* refusals say why, with a non-zero exit */
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "create", name, NULL), 1);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "destroy", name, NULL), 1);
	kvbm_pool_close(p);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "destroy", name, NULL), 0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "info", name, NULL), 1);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "destroy", name, NULL), 1);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "create", name,
				    "--block-size", "15", NULL),
			 2);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "create", name, "--blocks",
				    "many", NULL),
			 2);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "frobnicate", NULL), 2);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", NULL), 2);
}
END_TEST

/* Every config field has a flag, and info shows each one back. */
START_TEST(test_pool_create_every_field)
{
	T_NAME(name);

	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "create", name, "--blocks", "512",
				    "--block-size", "8", "--max-procs", "5", "--mode", "0640",
				    "--backend", "multi-lru", "--dup-policy", "reject", "--tier", "G3",
				    "--reset-on-release", "--tinylfu", "small", "--mlru-thresholds",
				    "2,5,9", "--event-ring", "128", "--keep-tokens", NULL),
			 0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "info", "--json", name, NULL), 0);
	ck_assert_int_eq(json_check(out, "d['block_count']==512 and d['block_size']==8 and "
					 "d['max_procs']==5 and d['mode']==0o640 and "
					 "d['backend']=='multi-lru' and d['dup_policy']=='reject' and "
					 "d['tier']=='G3' and d['storage_tier']=='disk' and "
					 "d['reset_on_release'] and "
					 "d['tinylfu_counters']==2**18 and d['mlru_thresholds']==[2,5,9] "
					 "and d['event_ring']==128 and d['keep_tokens'] and "
					 "not d['hugepages'] and not d['allow_others'] and 'uid' in d"),
			 0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "info", name, NULL), 0);
	const char *lines[] = {"tier      G3 (disk)\n", "backend   multi-lru\n", "dup policy reject\n",
			       "reset on release yes\n", "tinylfu   2^18 counters\n",
			       "mlru thresholds 2,5,9\n", "event ring 128 entries, token ids kept\n",
			       "hugepages no\n", "allow others no\n"};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		ck_assert_msg(strstr(out, lines[i]), "no '%s' in:\n%s", lines[i], out);

	/* --exist-ok: the same configuration is success, another names the field */
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "create", name, "--blocks", "512",
				    "--block-size", "8", "--max-procs", "5", "--mode", "0640",
				    "--backend", "multi-lru", "--dup-policy", "reject", "--tier", "G3",
				    "--reset-on-release", "--tinylfu", "small", "--mlru-thresholds",
				    "2,5,9", "--event-ring", "128", "--keep-tokens", "--exist-ok",
				    NULL),
			 0);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-pool", "create", name, "--blocks", "512",
				    "--block-size", "8", "--max-procs", "5", "--backend", "lru",
				    "--exist-ok", NULL),
			 1);
	ck_assert_msg(strstr(out, "the pool exists with dup_policy reject, not allow"), "%s", out);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), 0);
}
END_TEST

/* A bad value: one line naming the option, the value and the one rule. */
START_TEST(test_pool_create_messages)
{
	static const char *const cases[][4] = {
		{"--blocks", "0", "kvbm-pool: --blocks 0: block_count must be greater than 0\n"},
		{"--mode", "0200", "kvbm-pool: --mode 0200: mode must be a permission mode including 0600\n"},
		{"--max-procs", "63", "kvbm-pool: --max-procs 63: max_procs must be between 1 and 62\n"},
		{"--block-size", "3", "kvbm-pool: --block-size 3: block_size must be a power of two "
				      "between 1 and 1024\n"},
		{"--group", "nosuchgroup", "kvbm-pool: --group 'nosuchgroup': no such group\n"},
		{"--blocks", "-5", "kvbm-pool: --blocks '-5': not a number of blocks (1..268435456)\n"},
		{"--backend", "belady", "kvbm-pool: --backend 'belady': not one of lru fifo multi-lru "
					"lineage lineage-fifo lfru s3fifo arc w-tinylfu lecar "
					"adapt\n"},
		{"--event-ring", "100", "kvbm-pool: --event-ring 100: event_ring must be 0 or a power "
					"of two between 64 and 4194304\n"},
		{"--bogus", NULL, "kvbm-pool create: unrecognized option '--bogus'\n"
				  "kvbm-pool create --help lists the options\n"},
	};
	T_NAME(name);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-pool", "create", name,
					      cases[i][0], cases[i][1], NULL),
				 2);
		ck_assert_str_eq(out, cases[i][2]);
	}
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "create", "--help", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "--reset-on-release"));
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-pool", "info", "--help", NULL), 0);
	ck_assert_int_eq(kvbm_pool_destroy(name, 0), -ENOENT);
}
END_TEST

/* The library names the field a KVBM_EMISMATCH open disagreed on. */
START_TEST(test_config_diff_names_the_field)
{
	T_NAME(name);
	struct kvbm_config cfg = t_cfg(), other;
	struct kvbm_config_diff d;
	struct kvbm_pool *p;

	ck_assert_int_eq(kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE, &p), 0);
	ck_assert_int_eq(kvbm_config_diff(name, &cfg, &d), 0);
	ck_assert_ptr_null(d.field);

	other = cfg;
	other.backend = cfg.backend == KVBM_BACKEND_LRU ? KVBM_BACKEND_FIFO : KVBM_BACKEND_LRU;
	struct kvbm_pool *q;
	ck_assert_int_eq(kvbm_pool_open(name, &other, 0, &q), KVBM_EMISMATCH);
	ck_assert_int_eq(kvbm_config_diff(name, &other, &d), 1);
	ck_assert_str_eq(d.field, "backend");
	ck_assert_str_eq(d.pool, kvbm_backend_name(cfg.backend));
	ck_assert_str_eq(d.config, kvbm_backend_name(other.backend));

	other = cfg;
	/* a storage name is its tier's G name: "disk" is G3 */
	snprintf(other.tier, sizeof(other.tier), "%s", strcmp(cfg.tier, "G3") ? "disk" : "device");
	ck_assert_int_eq(kvbm_pool_open(name, &other, 0, &q), KVBM_EMISMATCH);
	ck_assert_int_eq(kvbm_config_diff(name, &other, &d), 1);
	ck_assert_str_eq(d.field, "tier");
	ck_assert_str_eq(d.pool, cfg.tier);
	ck_assert_str_eq(d.config, strcmp(cfg.tier, "G3") ? "G3" : "G1");

	other = cfg;
	other.block_count = cfg.block_count * 2;
	other.max_procs = 3;
	ck_assert_int_eq(kvbm_config_diff(name, &other, &d), 1);
	ck_assert_str_eq(d.field, "block_count"); /* the first that differs */

	other = cfg;
	other.tinylfu = KVBM_TINYLFU_LARGE;
	ck_assert_int_eq(kvbm_pool_open(name, &other, 0, &q), KVBM_EMISMATCH);
	ck_assert_int_eq(kvbm_config_diff(name, &other, &d), 1);
	ck_assert_str_eq(d.field, "tinylfu");
	ck_assert_str_eq(d.config, "2^24 counters");

	/* mode and open_timeout_ms are not part of the agreement */
	other = cfg;
	other.open_timeout_ms = 5;
	ck_assert_int_eq(kvbm_config_diff(name, &other, &d), 0);
	other.block_count = 0;
	ck_assert_int_eq(kvbm_config_diff(name, &other, &d), -EINVAL);
	ck_assert_int_eq(kvbm_config_diff("no-such-pool-here", &cfg, &d), -ENOENT);
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_demo_runs)
{
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-demo", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "worker 2 (pid"));
	ck_assert_ptr_nonnull(strstr(out, "matched 8/8 prompt blocks (ids 0..7), computed none"));
	ck_assert_ptr_nonnull(strstr(out, "1 dead process reaped"));
	/* after the reap: the dead worker's 4 blocks are free again */
	ck_assert_ptr_nonnull(strstr(out, "4096: 4084 free, 0 inactive, 12 in use"));
	ck_assert_ptr_nonnull(strstr(out, "a new request matches 8/8 blocks"));
	ck_assert_ptr_nonnull(strstr(out, "4096: 4088 free, 8 inactive, 0 in use"));
	ck_assert_ptr_nonnull(strstr(out, "pool destroyed: success"));
}
END_TEST

START_TEST(test_dump_counts_blocks)
{
	T_NAME(name);
	struct kvbm_pool *p = t_create(name, NULL);
	struct kvbm_plh h[3];
	struct kvbm_block b[3], m;

	t_seq_hashes(1, 3, 4, h);
	t_register(p, h, 3, b);
	t_release(p, b, 2);
	ck_assert_int_eq(kvbm_allocate_blocks(p, 1, &m, NULL, NULL), 0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--json", name, NULL), 0);
	ck_assert_int_eq(json_check(out, "d['blocks']['free']==252 and d['blocks']['inactive']==2"
				   " and d['blocks']['active']==1 and d['blocks']['mutable']==1"
				   " and d['blocks']['inactive_count']==2"
				   " and d['processes'][0]['holds']==1"
				   " and d['metrics']['registrations']==3"),
			 0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-shm-dump", "--summary", name, NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "256: 252 free, 2 inactive, 2 in use"));
	ck_assert_ptr_null(strstr(out, "regions"));
	kvbm_pool_close(p);
	kvbm_pool_destroy(name, 0);
}
END_TEST

START_TEST(test_hash_cli)
{
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-hash", "--block-size", "4", "--salt",
				    "1337", "1", "2", "3", "4", "5", "6", "7", "8", "9", NULL),
			 0);
	/* two complete blocks; the trailing token is not hashed */
	ck_assert_ptr_nonnull(strstr(out, "0        0xcb38e4d7fb2dca5c 0xcb38e4d7fb2dca5c "
					  "0032ce3935fecb729700000000000000 0x0038e4d7fb2dca5c"));
	ck_assert_ptr_nonnull(strstr(out, "005128ac8de75b4f0f78e4d7fb2dca5c"));
	ck_assert_ptr_null(strstr(out, "00aba8799e9b2033"));
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-hash", "--json", "-b", "4", "-s",
				    "1337", "1", "2", "3", "4", NULL),
			 0);
	ck_assert_int_eq(
		json_check(out, "d['blocks'][0]['plh']=='0032ce3935fecb729700000000000000' and "
				"int(d['blocks'][0]['router_hash'],16)==16014214978980444 and "
				"int(d['salt'],16)==1337"),
		0);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-hash", "-b", "3", "1", NULL), 2);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-hash", "12x", NULL), 1);
	/* less than a block: said, not an empty success */
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-hash", "1", "2", "3", NULL), 1);
	ck_assert_str_eq(out, "kvbm-hash: 3 tokens make no complete block of 16 (a partial block "
			      "is not hashed)\n");
}
END_TEST

/* kvbm-bench runs (no figure is asserted: speed is the benchmark's to
 * report, not a test's) and prints the JSON keys of issue 6. */
START_TEST(test_bench_smoke)
{
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-bench", "--quick", "--json", "e", "h",
				    NULL),
			 0);
	ck_assert_msg(strstr(out, "\"e_ns_per_block\":") && strstr(out, "\"h_bytes_per_block\":") &&
			      strstr(out, "\"e_xxh3_floor_ns_per_block\":"),
		      "%s", out);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-bench", "z", NULL), 2);
}
END_TEST

/* A trace small enough to work out by hand: 10 blocks, 5 unique; with
 * room for all, every reuse of a prefix hits (2 + 3 of 10). */
START_TEST(test_replay_small_trace)
{
	char path[] = "/tmp/kvbm-trace-XXXXXX";
	int fd = mkstemp(path);
	static const char trace[] =
		"{\"timestamp\": 0, \"input_length\": 1500, \"hash_ids\": [1, 2, 3]}\n"
		"{\"timestamp\": 1, \"input_length\": 1500, \"hash_ids\": [1, 2, 4]}\n"
		"{\"timestamp\": 2, \"input_length\": 2000, \"hash_ids\": [1, 2, 3, 5]}\n";

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, trace, sizeof(trace) - 1), (ssize_t)sizeof(trace) - 1);
	close(fd);
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-replay", "--list-backends", NULL), 0);
	ck_assert_str_eq(out, "lru\nfifo\nmulti-lru\nlineage\nlineage-fifo\nlfru\ns3fifo\narc\nw-tinylfu\nlecar\n"
				  "adapt\n");
	for (uint32_t b = 0; b < KVBM_BACKEND_COUNT; b++) {
		ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-replay", "--trace", path,
					    "--capacity-frac", "1", "--backend", kvbm_backend_name(b),
					    "--oracle", "--json", NULL),
				 0);
		ck_assert_int_eq(json_check(out, "d['hit_ratio']==0.5 and d['requests']==3 and "
						 "d['blocks']==10 and d['capacity']==5 and "
						 "d['lru_hit_ratio']==0.5 and d['belady_hit_ratio']==0.5 "
						 "and d['blocks_per_s']>0"),
				 0);
	}
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-replay", "--trace", path,
				    "--capacity-frac", "0.5", NULL),
			 2); /* 2 blocks cannot hold a 4-block request */
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-replay", "--trace", path,
				    "--capacity-frac", "1", "--backend", "belady", NULL),
			 2);
	/* what is missing or wrong is named: the option, the file's reason, the line */
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-replay", "--capacity-frac", "1",
					NULL),
			 2);
	ck_assert_str_eq(out, "kvbm-replay: --trace FILE is required (kvbm-replay --help)\n");
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-replay", "--trace",
					"/nonexistent/t.jsonl", "--capacity-frac", "1", NULL),
			 1);
	ck_assert_str_eq(out, "kvbm-replay: cannot open the trace /nonexistent/t.jsonl: No such "
			      "file or directory\n");
	fd = open(path, O_WRONLY | O_APPEND);
	ck_assert_int_ge(fd, 0);
	static const char bad[] = "{\"timestamp\": 3, \"hash_ids\": [1, -3]}\n";
	ck_assert_int_eq(write(fd, bad, sizeof(bad) - 1), (ssize_t)sizeof(bad) - 1);
	close(fd);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-replay", "--trace", path,
					"--capacity-frac", "1", NULL),
			 1);
	ck_assert_msg(strstr(out, ":4: a hash id that is not a non-negative integer"), "%s", out);
	unlink(path);
}
END_TEST

/* kvbm-replay's hit ratio with @hint_args ("" for none: up to 6 words). */
static double replay_ratio(const char *path, const char *backend, const char *a0,
			   const char *a1, const char *a2, const char *a3)
{
	ck_assert_int_eq(t_run_tool(out, sizeof(out), "kvbm-replay", "--trace", path,
				    "--capacity-frac", "0.0262", "--backend", backend, "--json", a0,
				    a1, a2, a3, NULL),
			 0);
	const char *r = strstr(out, "\"hit_ratio\":");
	ck_assert_ptr_nonnull(r);
	return strtod(r + strlen("\"hit_ratio\":"), NULL);
}

/*
 * Hints derived by kvbm-replay move the hit ratio the way they should. A
 * trace of 2,400 seconds: each second a one-block request nobody sends
 * again, and one block of a hot set of 20 and one of 30 sent again every
 * 20 and 30 s. 64 blocks hold both hot sets only if the one-shot blocks go
 * first: without hints the 30-set always misses (LRU's cliff); with right
 * hints (window 100 s: the hot ones continue) the pool learns to evict the
 * one-shots first; with 20% wrong, less so but still more than none; with
 * every hint wrong (noise 1), the hints get no weight: as without.
 */
START_TEST(test_replay_hints_move_the_hit_ratio)
{
	char path[] = "/tmp/kvbm-trace-XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");

	ck_assert_ptr_nonnull(f);
	for (int r = 0; r < 2400; r++) {
		const int ids[3] = {100000 + r, 10 + r % 20, 1000 + r % 30};
		for (int k = 0; k < 3; k++)
			fprintf(f, "{\"timestamp\": %d, \"input_length\": 512, \"hash_ids\": [%d]}\n",
				r * 1000, ids[k]);
	}
	fclose(f);
	static const char *const backends[] = {"lineage", "lru"};
	for (int b = 0; b < 2; b++) {
		const char *be = backends[b];
		double none = replay_ratio(path, be, NULL, NULL, NULL, NULL);
		double right = replay_ratio(path, be, "--hint-window", "100", NULL, NULL);
		double noisy = replay_ratio(path, be, "--hint-window", "100", "--hint-noise", "0.2");
		double wrong = replay_ratio(path, be, "--hint-window", "100", "--hint-noise", "1");
		ck_assert_msg(none < 0.34 && right > none + 0.15 && noisy > none + 0.1 &&
				      wrong > none - 0.005,
			      "%s: no hints %.4f, right %.4f, 20%% wrong %.4f, all wrong %.4f", be,
			      none, right, noisy, wrong);
		ck_assert_ptr_nonnull(strstr(out, "\"hint_weight_oneshot\":0,"));
	}
	/* the options are checked, and a trace without timestamps named */
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-replay", "--trace", path,
					"--capacity-frac", "0.1", "--hint-noise", "0.2", NULL),
			 2);
	ck_assert_str_eq(out, "kvbm-replay: --hint-noise, --hint-seed and --hint-other need "
			      "--hint-window\n");
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-replay", "--trace", path,
					"--capacity-frac", "0.1", "--hint-window", "-3", NULL),
			 2);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-replay", "--trace", path,
					"--capacity-frac", "0.1", "--hint-window", "9",
					"--hint-other", "maybe", NULL),
			 2);
	ck_assert_str_eq(out, "kvbm-replay: --hint-other: oneshot or none, not 'maybe'\n");
	/* other keys change which releases form the control sample, not
	 * the unhinted order; a salt is a non-negative integer */
	double plain = replay_ratio(path, "lineage", NULL, NULL, NULL, NULL);
	ck_assert(plain == replay_ratio(path, "lineage", "--key-salt", "5", NULL, NULL));
	ck_assert_ptr_nonnull(strstr(out, "\"key_salt\":5"));
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-replay", "--trace", path,
					"--capacity-frac", "0.1", "--key-salt", "-1", NULL),
			 2);
	ck_assert_str_eq(out, "kvbm-replay: --key-salt: a non-negative integer, not '-1'\n");
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("{\"hash_ids\": [1, 2]}\n{\"hash_ids\": [1, 2, 3]}\n", f);
	fclose(f);
	ck_assert_int_eq(t_run_tool_all(out, sizeof(out), "kvbm-replay", "--trace", path,
					"--capacity-frac", "1", "--hint-window", "9", NULL),
			 1);
	ck_assert_msg(strstr(out, "has no \"timestamp\""), "%s", out);
	unlink(path);
}
END_TEST

Suite *make_tools_suite(void)
{
	Suite *s = suite_create("tools");
	TCase *tc = tcase_create("cli");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_dump_valid_pool);
	tcase_add_test(tc, test_pool_tool_destroy_removes_kvbmd_state);
	tcase_add_test(tc, test_dump_works_when_every_process_is_dead);
	tcase_add_test(tc, test_dump_missing_and_invalid);
	tcase_add_test(tc, test_dump_damaged_counters);
	tcase_add_test(tc, test_missing_pool_dir_is_named);
	tcase_add_test(tc, test_pool_cli_permissions);
	tcase_add_test(tc, test_pool_cli_lifecycle);
	tcase_add_test(tc, test_pool_create_every_field);
	tcase_add_test(tc, test_pool_create_messages);
	tcase_add_test(tc, test_config_diff_names_the_field);
	tcase_add_test(tc, test_demo_runs);
	tcase_add_test(tc, test_dump_counts_blocks);
	tcase_add_test(tc, test_hash_cli);
	tcase_add_test(tc, test_bench_smoke);
	tcase_add_test(tc, test_replay_small_trace);
	tcase_add_test(tc, test_replay_hints_move_the_hit_ratio);
	suite_add_tcase(s, tc);
	return s;
}
