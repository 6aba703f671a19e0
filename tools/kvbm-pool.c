/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-pool - create, destroy, list and describe kvbm pools.
 *
 *   kvbm-pool create NAME [--blocks N] [--block-size B] [--max-procs P]
 *                         [--mode 0660] [--group GROUP] [--owner USER]
 *                         [--allow-others] [--hugepages] [--pin-share PCT] ...
 *   kvbm-pool destroy NAME [--force]
 *   kvbm-pool list [--json]
 *   kvbm-pool info NAME [--json]
 *
 * Exit: 0 done; 1 the operation failed (the reason on stderr); 2 usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inspect.h"
#include "json.h"
#include "version.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvbm-pool create NAME [OPTION...]\n"
		"       kvbm-pool destroy NAME [--force]\n"
		"       kvbm-pool list [--json]\n"
		"       kvbm-pool info NAME [--json]\n"
		"       kvbm-pool --help | --version\n"
		"create options (defaults in parentheses):\n"
		"  --blocks N            blocks in the pool, 1..2^28 (1024)\n"
		"  --block-size B        tokens per block, a power of two 1..1024 (16)\n"
		"  --max-procs P         processes attached at once, 1..62 (16)\n"
		"  --mode MODE           file mode, octal, including 0600 (0600)\n"
		"  --group GROUP         group of the file, a name or id (the creator's)\n"
		"  --owner USER          owner of the file, a name or id; root only (the creator)\n"
		"  --allow-others        let --mode give bits to others (any local user)\n"
		"  --hugepages           back the segment with transparent hugepages\n"
		"  --backend NAME        eviction order: lru, fifo, multi-lru, lineage,\n"
		"                        lineage-fifo, lfru, s3fifo, arc, w-tinylfu,\n"
		"                        lecar, adapt (lineage)\n"
		"  --dup-policy POLICY   registering a registered hash: allow (a duplicate)\n"
		"                        or reject (the primary is returned) (allow)\n"
		"  --tier TIER           G1, G2, G3, G4, or its storage name: device,\n"
		"                        host_pinned, disk, external; also the metrics'\n"
		"                        pool label (G1)\n"
		"  --reset-on-release    released blocks go straight back to the free pool\n"
		"  --tinylfu SIZE        frequency sketch: auto, none, small, medium, large (auto)\n"
		"  --mlru-thresholds A,B,C  multi-lru level thresholds, ascending 1..15 (3,8,15)\n"
		"  --event-ring N        event ring entries: 0 or a power of two 64..2^22 (4096)\n"
		"  --keep-tokens         keep each block's token ids for event snapshots\n"
		"  --pin-share PCT       percent of the blocks that pins held by the pool\n"
		"                        (kvbm_pin_prefix) may keep, 0..100; 0: no pins (25)\n"
		"  --exist-ok            an existing pool with this configuration is success\n"
		"Pools live in $KVBM_SHM_DIR (default /dev/shm) as kvbm.NAME.\n"
		"Exit: 0 done; 1 failed (the reason on stderr); 2 usage.\n");
}

/* Whether the pools' directory is missing or closed to us: then that, not
 * the pool, is what a failure is about. */
static int dir_problem(const char *what, const char *name, int r)
{
	const char *dir = kvbm_shm_dir();
	char why[PATH_MAX + 64];

	if (r != -ENOENT && r != -EACCES)
		return 0;
	if (kvbm_shm_dir_missing(why, sizeof(why))) {
		fprintf(stderr, "kvbm-pool: %s %s: %s\n", what, name, why);
		return 1;
	}
	if (r == -EACCES && !strcmp(what, "create") && access(dir, W_OK | X_OK) < 0) {
		fprintf(stderr, "kvbm-pool: create %s: no permission to create files in %s%s\n",
			name, dir, getenv("KVBM_SHM_DIR") ? " (set by KVBM_SHM_DIR)" : "");
		return 1;
	}
	return 0;
}

static int fail(const char *what, const char *name, int r)
{
	if (dir_problem(what, name, r))
		return 1;
	fprintf(stderr, "kvbm-pool: %s %s: %s\n", what, name, kvbm_strerror(r));
	if (r == -EEXIST)
		fprintf(stderr, "kvbm-pool: remove it first with 'kvbm-pool destroy %s'\n", name);
	else if (r == -EBUSY)
		fprintf(stderr, "kvbm-pool: processes are attached; --force removes the name anyway\n");
	else if (r == -ENOENT)
		fprintf(stderr, "kvbm-pool: 'kvbm-pool list' shows the pools there are\n");
	else if (r == -EACCES)
		fprintf(stderr, "kvbm-pool: run as the pool's owner or a member of its group\n");
	else if (r == KVBM_EOTHERS)
		fprintf(stderr, "kvbm-pool: --allow-others creates it anyway: any local user "
				"could then read or write the pool\n");
	else if (r == KVBM_EOWNER)
		fprintf(stderr, "kvbm-pool: someone else created that name first; see who with "
				"'ls -l %s/kvbm.%s'\n",
			kvbm_shm_dir(), name);
	return 1;
}

/*
 * What lies under pool @name's path, for a destroy that refuses or forces:
 * "a kvbm pool", or what else it is (a link, a file of so many bytes and
 * whose). Fills @buf, returns it.
 */
static const char *describe(const char *name, char *buf, size_t len)
{
	char path[PATH_MAX], bare[KVBM_NAME_MAX + 1], target[PATH_MAX];
	uint64_t magic = 0;
	struct stat st;

	if (kvbm_seg_path(name, path, sizeof(path), bare, 0) < 0 || lstat(path, &st) < 0) {
		snprintf(buf, len, "nothing");
		return buf;
	}
	if (S_ISLNK(st.st_mode)) {
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		target[n < 0 ? 0 : n] = '\0';
		snprintf(buf, len, "not a kvbm pool: %s is a symbolic link to %s", path, target);
		return buf;
	}
	FILE *f = S_ISREG(st.st_mode) ? fopen(path, "re") : NULL;
	if (f) {
		if (fread(&magic, sizeof(magic), 1, f) != 1)
			magic = 0;
		fclose(f);
	}
	if (magic == KVBM_SHM_MAGIC)
		snprintf(buf, len, "a kvbm pool");
	else
		snprintf(buf, len,
			 "not a kvbm pool: %s is a %s of %jd bytes, owner uid %u, mode %04o",
			 path, S_ISREG(st.st_mode) ? "file" : "special file",
			 (intmax_t)st.st_size, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
	return buf;
}

/* @what says what a valid value is, for the message. */
static int parse_u32(const char *s, const char *opt, uint32_t *out, int base, const char *what)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, base);

	if (errno || *end || !*s || v > UINT32_MAX || s[0] == '-' || s[0] == '+' ||
	    s[0] == ' ') {
		fprintf(stderr, "kvbm-pool: %s '%s': not %s\n", opt, s, what);
		return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

/* The option that sets the field kvbm_config_check() names, and its value. */
static void explain_invalid(const struct kvbm_config *cfg, const char *why)
{
	static const struct {
		const char *prefix, *opt;
	} map[] = {
		{"block_count", "--blocks"},   {"block_size", "--block-size"},
		{"max_procs", "--max-procs"},  {"mode", "--mode"},
		{"gid", "--group"},            {"uid", "--owner"},
		{"KVBM_CFG_KEEP_TOKENS", "--keep-tokens"},
		{"dup_policy", "--dup-policy"}, {"unknown backend", "--backend"},
		{"unknown tinylfu", "--tinylfu"}, {"multi-lru", "--tinylfu"},
		{"lfru", "--tinylfu"},         {"w-tinylfu", "--tinylfu"},
		{"lecar", "--tinylfu"},        {"adapt", "--tinylfu"},
		{"frequency thresholds", "--mlru-thresholds"},
		{"reset_on_release", "--reset-on-release"},
		{"event_ring", "--event-ring"}, {"tier", "--tier"},
		{"pin_share", "--pin-share"},
	};
	const char *opt = NULL;
	char val[64] = "";

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]) && !opt; i++)
		if (strncmp(why, map[i].prefix, strlen(map[i].prefix)) == 0)
			opt = map[i].opt;
	if (!opt) {
		fprintf(stderr, "kvbm-pool: invalid configuration: %s\n", why);
		return;
	}
	if (!strcmp(opt, "--blocks"))
		snprintf(val, sizeof(val), " %u", cfg->block_count);
	else if (!strcmp(opt, "--block-size"))
		snprintf(val, sizeof(val), " %u", cfg->block_size);
	else if (!strcmp(opt, "--max-procs"))
		snprintf(val, sizeof(val), " %u", cfg->max_procs);
	else if (!strcmp(opt, "--mode"))
		snprintf(val, sizeof(val), " %04o", cfg->mode);
	else if (!strcmp(opt, "--event-ring"))
		snprintf(val, sizeof(val), " %u", cfg->event_ring);
	else if (!strcmp(opt, "--pin-share"))
		snprintf(val, sizeof(val), " %u", cfg->pin_share);
	else if (!strcmp(opt, "--mlru-thresholds"))
		snprintf(val, sizeof(val), " %u,%u,%u", cfg->mlru_thresholds[0],
			 cfg->mlru_thresholds[1], cfg->mlru_thresholds[2]);
	else if (!strcmp(opt, "--tier"))
		snprintf(val, sizeof(val), " '%.15s'", cfg->tier);
	else if (!strcmp(opt, "--tinylfu") && cfg->backend < KVBM_BACKEND_COUNT &&
		 (!strncmp(why, "multi-lru", 9) || !strncmp(why, "lfru", 4)))
		snprintf(val, sizeof(val), " none with --backend %s", kvbm_backend_name(cfg->backend));
	else if (!strcmp(opt, "--keep-tokens"))
		snprintf(val, sizeof(val), " with --event-ring 0");
	fprintf(stderr, "kvbm-pool: %s%s: %s\n", opt, val, why);
}

static const char *const tinylfu_names[] = {"auto", "none", "small", "medium", "large"};

static int parse_word(const char *s, const char *opt, const char *const *words, uint32_t n,
		      uint32_t *out)
{
	for (uint32_t i = 0; i < n; i++)
		if (!strcmp(s, words[i])) {
			*out = i;
			return 0;
		}
	fprintf(stderr, "kvbm-pool: %s '%s': not one of", opt, s);
	for (uint32_t i = 0; i < n; i++)
		fprintf(stderr, "%s %s", i ? (i == n - 1 ? " or" : ",") : "", words[i]);
	fprintf(stderr, "\n");
	return -1;
}

static int parse_thresholds(const char *s, uint8_t out[3])
{
	unsigned a, b, c;
	char tail;

	if (sscanf(s, "%u,%u,%u%c", &a, &b, &c, &tail) != 3 || a > 255 || b > 255 || c > 255 ||
	    s[0] == '-') {
		fprintf(stderr, "kvbm-pool: --mlru-thresholds '%s': not three numbers A,B,C\n", s);
		return -1;
	}
	out[0] = (uint8_t)a;
	out[1] = (uint8_t)b;
	out[2] = (uint8_t)c;
	return 0;
}

/* An existing pool: the same configuration (0) or the first difference. */
static int create_exist_ok(const char *name, const struct kvbm_config *cfg)
{
	struct kvbm_config_diff d;
	int r = kvbm_config_diff(name, cfg, &d);

	if (r < 0)
		return fail("create", name, r);
	if (r > 0) {
		fprintf(stderr, "kvbm-pool: create %s: the pool exists with %s %s, not %s\n", name,
			d.field, d.pool, d.config);
		return 1;
	}
	printf("pool %s exists with this configuration\n", name);
	return 0;
}

static int cmd_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{"blocks", required_argument, NULL, 'n'},
		{"block-size", required_argument, NULL, 'b'},
		{"max-procs", required_argument, NULL, 'p'},
		{"mode", required_argument, NULL, 'm'},
		{"group", required_argument, NULL, 'g'},
		{"owner", required_argument, NULL, 'o'},
		{"allow-others", no_argument, NULL, 'A'},
		{"hugepages", no_argument, NULL, 'H'},
		{"backend", required_argument, NULL, 'B'},
		{"dup-policy", required_argument, NULL, 'D'},
		{"tier", required_argument, NULL, 'T'},
		{"reset-on-release", no_argument, NULL, 'R'},
		{"tinylfu", required_argument, NULL, 'F'},
		{"mlru-thresholds", required_argument, NULL, 'M'},
		{"event-ring", required_argument, NULL, 'E'},
		{"keep-tokens", no_argument, NULL, 'K'},
		{"pin-share", required_argument, NULL, 'S'},
		{"exist-ok", no_argument, NULL, 'X'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static const char *const dup_names[] = {"allow", "reject"};
	struct kvbm_config cfg;
	struct kvbm_pool *pool;
	struct kvbm_pool_info info;
	const char *why;
	int c, r, exist_ok = 0;

	kvbm_config_init(&cfg);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (parse_u32(optarg, "--blocks", &cfg.block_count, 10,
				      "a number of blocks (1..268435456)"))
				return 2;
			break;
		case 'b':
			if (parse_u32(optarg, "--block-size", &cfg.block_size, 10,
				      "a number of tokens (a power of two 1..1024)"))
				return 2;
			break;
		case 'p':
			if (parse_u32(optarg, "--max-procs", &cfg.max_procs, 10,
				      "a number of processes (1..62)"))
				return 2;
			break;
		case 'm':
			if (parse_u32(optarg, "--mode", &cfg.mode, 8, "an octal mode such as 0660"))
				return 2;
			break;
		case 'g': {
			struct group *g = getgrnam(optarg);
			uint32_t gid;
			if (g)
				cfg.gid = g->gr_gid;
			else if (optarg[0] >= '0' && optarg[0] <= '9' &&
				 parse_u32(optarg, "--group", &gid, 10, "a group name or id") == 0)
				cfg.gid = gid;
			else {
				fprintf(stderr, "kvbm-pool: --group '%s': no such group\n", optarg);
				return 2;
			}
			break;
		}
		case 'o': {
			struct passwd *pw = getpwnam(optarg);
			uint32_t uid;
			if (pw)
				cfg.uid = pw->pw_uid;
			else if (optarg[0] >= '0' && optarg[0] <= '9' &&
				 parse_u32(optarg, "--owner", &uid, 10, "a user name or id") == 0)
				cfg.uid = uid;
			else {
				fprintf(stderr, "kvbm-pool: --owner '%s': no such user\n", optarg);
				return 2;
			}
			break;
		}
		case 'A':
			cfg.flags |= KVBM_CFG_ALLOW_OTHERS;
			break;
		case 'H':
			cfg.flags |= KVBM_CFG_HUGEPAGES;
			break;
		case 'B':
			r = kvbm_backend_parse(optarg);
			if (r < 0) {
				fprintf(stderr, "kvbm-pool: --backend '%s': not one of", optarg);
				for (uint32_t b = 0; kvbm_backend_name(b); b++)
					fprintf(stderr, " %s", kvbm_backend_name(b));
				fprintf(stderr, "\n");
				return 2;
			}
			cfg.backend = (uint32_t)r;
			break;
		case 'D':
			if (parse_word(optarg, "--dup-policy", dup_names, 2, &cfg.dup_policy))
				return 2;
			break;
		case 'T':
			r = kvbm_tier_parse(optarg);
			if (r < 0) {
				fprintf(stderr, "kvbm-pool: --tier '%s': not one of G1, G2, G3, G4, "
						"device, host_pinned, disk, external\n", optarg);
				return 2;
			}
			snprintf(cfg.tier, sizeof(cfg.tier), "%s", kvbm_tier_name((uint32_t)r));
			break;
		case 'R':
			cfg.reset_on_release = 1;
			break;
		case 'S':
			if (parse_u32(optarg, "--pin-share", &cfg.pin_share, 10,
				      "a percentage (0..100)"))
				return 2;
			break;
		case 'F':
			if (parse_word(optarg, "--tinylfu", tinylfu_names, 5, &cfg.tinylfu))
				return 2;
			break;
		case 'M':
			if (parse_thresholds(optarg, cfg.mlru_thresholds))
				return 2;
			break;
		case 'E':
			if (parse_u32(optarg, "--event-ring", &cfg.event_ring, 10,
				      "a number of entries (0, or a power of two 64..4194304)"))
				return 2;
			break;
		case 'K':
			cfg.flags |= KVBM_CFG_KEEP_TOKENS;
			break;
		case 'X':
			exist_ok = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "kvbm-pool create --help lists the options\n");
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, optind == argc ? "kvbm-pool: create: a pool NAME is required\n"
					       : "kvbm-pool: create: one NAME only, got '%s' too\n",
			argv[argc - 1]);
		return 2;
	}
	const char *name = argv[optind];
	if (kvbm_config_check(&cfg, &why) < 0) {
		explain_invalid(&cfg, why);
		return 2;
	}
	r = kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &pool);
	if (r == -EEXIST && exist_ok)
		return create_exist_ok(name, &cfg);
	if (r < 0)
		return fail("create", name, r);
	kvbm_pool_info(pool, &info);
	printf("created pool %s: %u blocks x %u tokens, up to %u processes, %" PRIu64
	       " bytes, mode %04o, backend %s, tier %s (%s), instance 0x%016" PRIx64 "\n",
	       info.name, info.config.block_count, info.config.block_size,
	       info.config.max_procs, info.segment_size, info.config.mode,
	       kvbm_backend_name(info.config.backend), info.config.tier,
	       kvbm_tier_storage((uint32_t)kvbm_pool_tier(pool)), info.instance_id);
	r = kvbm_pool_close(pool);
	return r < 0 ? fail("create", name, r) : 0;
}

/*
 * kvbmd keeps its ZMQ stream's position beside the pools it publishes
 * (kvbmd.<first pool>.zmq-state, docs/KVBMD.md); once the pool is gone the
 * file only piles up. A running kvbmd holds its flock: then it stays.
 * Returns 1 when a file was removed.
 */
static int remove_kvbmd_state(const char *name)
{
	char path[PATH_MAX];
	int fd, gone = 0;

	if (snprintf(path, sizeof(path), "%s/kvbmd.%s.zmq-state", kvbm_shm_dir(), name) >=
	    (int)sizeof(path))
		return 0;
	fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		gone = unlink(path) == 0;
	close(fd);
	return gone;
}

static int cmd_destroy(int argc, char **argv)
{
	static const struct option opts[] = {
		{"force", no_argument, NULL, 'f'},
		{NULL, 0, NULL, 0},
	};
	unsigned flags = 0;
	int c, r;

	while ((c = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
		if (c != 'f') {
			usage(stderr);
			return 2;
		}
		flags |= KVBM_DESTROY_FORCE;
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[optind];
	char what[2 * PATH_MAX + 256];
	/* before: once removed, there is nothing left to describe */
	describe(name, what, sizeof(what));
	r = kvbm_pool_destroy(name, flags);
	if (r == KVBM_EBADMAGIC) {
		fprintf(stderr, "kvbm-pool: destroy %s: %s\n", name, what);
		fprintf(stderr, "kvbm-pool: left in place; --force removes it anyway\n");
		return 1;
	}
	if (r < 0)
		return fail("destroy", name, r);
	if (remove_kvbmd_state(name))
		printf("removed kvbmd's stream state for %s\n", name);
	if (strcmp(what, "a kvbm pool") == 0)
		printf("destroyed pool %s\n", name);
	else
		printf("removed %s (forced): %s\n", name, what);
	return 0;
}

static void info_json(struct json *j, const struct kvbm_inspect *in)
{
	int verdict = kvbm_inspect_verdict(in);
	char tier[KVBM_TIER_MAX + 1];
	const char *storage;
	struct stat st;

	json_obj_begin(j, NULL);
	json_str(j, "name", in->seg.name);
	json_str(j, "path", in->seg.path);
	json_bool(j, "valid", verdict == 0);
	if (verdict)
		json_str(j, "error", kvbm_strerror(verdict));
	if (in->valid == 0) {
		json_str(j, "state", kvbm_seg_state_name(in->hdr.state));
		json_u64(j, "segment_size", in->hdr.segment_size);
		json_hex(j, "instance_id", in->hdr.instance_id);
		json_u64(j, "block_count", in->hdr.config.block_count);
		json_u64(j, "block_size", in->hdr.config.block_size);
		json_u64(j, "max_procs", in->hdr.config.max_procs);
		json_u64(j, "mode", in->hdr.config.mode);
		json_u64(j, "attached", kvbm_inspect_live_procs(in));
		const struct kvbm_shm_config *c = &in->hdr.config;
		const char *b = kvbm_backend_name(c->backend);
		json_str(j, "backend", b ? b : "?");
		json_str(j, "dup_policy", c->dup_policy == KVBM_DUP_REJECT ? "reject" : "allow");
		json_str(j, "tier", kvbm_inspect_tier(c, tier, &storage));
		if (storage)
			json_str(j, "storage_tier", storage);
		json_bool(j, "reset_on_release", c->reset_on_release != 0);
		json_u64(j, "tinylfu_counters", c->sketch_log2 ? 1ull << c->sketch_log2 : 0);
		json_arr_begin(j, "mlru_thresholds");
		for (int i = 0; i < 3; i++)
			json_u64(j, NULL, c->mlru_thresholds[i]);
		json_arr_end(j);
		json_u64(j, "event_ring", c->event_log2 ? 1ull << c->event_log2 : 0);
		json_u64(j, "pin_share", c->pin_share);
		json_bool(j, "keep_tokens", (c->flags & KVBM_CFG_KEEP_TOKENS) != 0);
		json_bool(j, "hugepages", (c->flags & KVBM_CFG_HUGEPAGES) != 0);
		json_bool(j, "allow_others", (c->flags & KVBM_CFG_ALLOW_OTHERS) != 0);
		if (in->seg.fd >= 0 && fstat(in->seg.fd, &st) == 0) {
			json_u64(j, "uid", st.st_uid);
			json_u64(j, "gid", st.st_gid);
		}
	}
	json_obj_end(j);
}

static void info_text(const struct kvbm_inspect *in, int long_form)
{
	int verdict = kvbm_inspect_verdict(in);

	if (!long_form) {
		if (in->valid)
			printf("%-24s %-12s %14s %9s  %s\n", in->seg.name, "INVALID", "-", "-",
			       kvbm_strerror(in->valid));
		else
			printf("%-24s %-12s %14" PRIu64 " %9u\n", in->seg.name,
			       kvbm_seg_state_name(in->hdr.state), in->hdr.segment_size,
			       kvbm_inspect_live_procs(in));
		return;
	}
	printf("pool      %s (%s)\n", in->seg.name, in->seg.path);
	if (in->valid) {
		printf("state     INVALID: %s\n", kvbm_strerror(in->valid));
		return;
	}
	printf("state     %s%s%s\n", kvbm_seg_state_name(in->hdr.state), verdict ? ": " : "",
	       verdict ? kvbm_strerror(verdict) : "");
	printf("instance  0x%016" PRIx64 "\n", in->hdr.instance_id);
	printf("size      %" PRIu64 " bytes\n", in->hdr.segment_size);
	printf("blocks    %u x %u tokens\n", in->hdr.config.block_count,
	       in->hdr.config.block_size);
	printf("attached  %u of %u processes\n", kvbm_inspect_live_procs(in),
	       in->hdr.config.max_procs);
	printf("mode      %04o\n", in->hdr.config.mode);

	const struct kvbm_shm_config *c = &in->hdr.config;
	const char *b = kvbm_backend_name(c->backend);
	char tier[KVBM_TIER_MAX + 1];
	const char *storage;
	struct stat st;
	if (in->seg.fd >= 0 && fstat(in->seg.fd, &st) == 0) {
		struct passwd *pw = getpwuid(st.st_uid);
		struct group *gr = getgrgid(st.st_gid);
		printf("owner     %s (uid %u), group %s (gid %u)\n", pw ? pw->pw_name : "?",
		       (unsigned)st.st_uid, gr ? gr->gr_name : "?", (unsigned)st.st_gid);
	}
	kvbm_inspect_tier(c, tier, &storage);
	printf("tier      %s (%s)\n", tier, storage ? storage : "no tier");
	printf("backend   %s\n", b ? b : "?");
	printf("dup policy %s\n", c->dup_policy == KVBM_DUP_REJECT ? "reject" : "allow");
	printf("reset on release %s\n", c->reset_on_release ? "yes" : "no");
	if (c->sketch_log2)
		printf("tinylfu   2^%u counters\n", c->sketch_log2);
	else
		printf("tinylfu   none\n");
	printf("mlru thresholds %u,%u,%u\n", c->mlru_thresholds[0], c->mlru_thresholds[1],
	       c->mlru_thresholds[2]);
	if (c->event_log2)
		printf("event ring %llu entries%s\n", 1ull << c->event_log2,
		       (c->flags & KVBM_CFG_KEEP_TOKENS) ? ", token ids kept" : "");
	else
		printf("event ring none\n");
	printf("pin share %u%% (%u blocks)\n", c->pin_share, kvbm_pin_cap(c));
	printf("hugepages %s\n", (c->flags & KVBM_CFG_HUGEPAGES) ? "yes" : "no");
	printf("allow others %s\n", (c->flags & KVBM_CFG_ALLOW_OTHERS) ? "yes" : "no");
}

static int parse_json_flag(int argc, char **argv, int *json)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{NULL, 0, NULL, 0},
	};
	int c;

	*json = 0;
	while ((c = getopt_long(argc, argv, "j", opts, NULL)) != -1) {
		if (c != 'j') {
			usage(stderr);
			return -1;
		}
		*json = 1;
	}
	return 0;
}

static int cmd_info(int argc, char **argv)
{
	struct kvbm_inspect in;
	int json, r;

	if (parse_json_flag(argc, argv, &json) < 0 || optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	r = kvbm_inspect_open(&in, argv[optind]);
	if (r < 0)
		return fail("info", argv[optind], r);
	if (json) {
		struct json j;
		json_init(&j, stdout);
		info_json(&j, &in);
		json_finish(&j);
	} else {
		info_text(&in, 1);
	}
	r = kvbm_inspect_verdict(&in);
	kvbm_inspect_close(&in);
	return r ? 1 : 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_list(int argc, char **argv)
{
	const char *dir = kvbm_shm_dir();
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	struct json j;
	int json;
	DIR *d;

	if (parse_json_flag(argc, argv, &json) < 0 || optind != argc) {
		usage(stderr);
		return 2;
	}
	d = opendir(dir);
	if (!d) {
		char why[PATH_MAX + 64];
		fprintf(stderr, "kvbm-pool: list: %s\n",
			errno == ENOENT && kvbm_shm_dir_missing(why, sizeof(why))
				? why
				: strerror(errno));
		return 1;
	}
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, "kvbm.", 5) != 0 || !de->d_name[5])
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			char **nn = realloc(names, cap * sizeof(*names));
			if (!nn)
				break;
			names = nn;
		}
		names[n] = strdup(de->d_name + 5);
		if (names[n])
			n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_names);

	if (json) {
		json_init(&j, stdout);
		json_arr_begin(&j, NULL);
	} else {
		printf("%-24s %-12s %14s %9s\n", "NAME", "STATE", "BYTES", "ATTACHED");
	}
	for (size_t i = 0; i < n; i++) {
		struct kvbm_inspect in;

		int r = kvbm_inspect_open(&in, names[i]);
		if (r == -ENOENT) { /* gone meanwhile */
			free(names[i]);
			continue;
		}
		if (r < 0) { /* listed, never silently left out */
			if (json) {
				json_obj_begin(&j, NULL);
				json_str(&j, "name", names[i]);
				json_bool(&j, "valid", 0);
				json_str(&j, "error", r == -EACCES ? "permission denied" : kvbm_strerror(r));
				json_obj_end(&j);
			} else {
				printf("%-24s %-12s %14s %9s  %s\n", names[i], "UNREADABLE", "-", "-",
				       r == -EACCES ? "permission denied" : kvbm_strerror(r));
			}
			free(names[i]);
			continue;
		}
		if (json)
			info_json(&j, &in);
		else
			info_text(&in, 0);
		kvbm_inspect_close(&in);
		free(names[i]);
	}
	free(names);
	if (json) {
		json_arr_end(&j);
		json_finish(&j);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	static char prog[64];
	/* subcommand options start after the subcommand; getopt's messages
	 * start with argv[0]: the tool and subcommand, as typed */
	argc--;
	argv++;
	snprintf(prog, sizeof(prog), "kvbm-pool %s", cmd);
	argv[0] = prog;
	if (strcmp(cmd, "create") != 0)
		for (int i = 1; i < argc; i++)
			if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
				usage(stdout);
				return 0;
			}
	if (!strcmp(cmd, "create"))
		return cmd_create(argc, argv);
	if (!strcmp(cmd, "destroy"))
		return cmd_destroy(argc, argv);
	if (!strcmp(cmd, "list"))
		return cmd_list(argc, argv);
	if (!strcmp(cmd, "info"))
		return cmd_info(argc, argv);
	if (!strcmp(cmd, "--version"))
		return tool_version("kvbm-pool");
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "kvbm-pool: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}
