/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-pool - create, destroy, list and describe kvbm pools.
 *
 *   kvbm-pool create NAME [--blocks N] [--block-size B] [--max-procs P]
 *                         [--mode 0660] [--group GROUP] [--owner USER]
 *                         [--allow-others] [--hugepages]
 *   kvbm-pool destroy NAME [--force]
 *   kvbm-pool list [--json]
 *   kvbm-pool info NAME [--json]
 *
 * Exit: 0 done; 1 the operation failed (the reason on stderr); 2 usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inspect.h"
#include "json.h"
#include "version.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvbm-pool create NAME [--blocks N] [--block-size B] [--max-procs P]\n"
		"                             [--mode 0660] [--group GROUP] [--owner USER]\n"
		"                             [--allow-others] [--hugepages]\n"
		"       kvbm-pool destroy NAME [--force]\n"
		"       kvbm-pool list [--json]\n"
		"       kvbm-pool info NAME [--json]\n"
		"Pools live in $KVBM_SHM_DIR (default /dev/shm) as kvbm.NAME.\n");
}

static int fail(const char *what, const char *name, int r)
{
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

static int parse_u32(const char *s, const char *opt, uint32_t *out, int base)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, base);

	if (errno || *end || !*s || v > UINT32_MAX || s[0] == '-') {
		fprintf(stderr, "kvbm-pool: %s: not a number: '%s'\n", opt, s);
		return -1;
	}
	*out = (uint32_t)v;
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
		{NULL, 0, NULL, 0},
	};
	struct kvbm_config cfg;
	struct kvbm_pool *pool;
	struct kvbm_pool_info info;
	int c, r;

	kvbm_config_init(&cfg);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (parse_u32(optarg, "--blocks", &cfg.block_count, 10))
				return 2;
			break;
		case 'b':
			if (parse_u32(optarg, "--block-size", &cfg.block_size, 10))
				return 2;
			break;
		case 'p':
			if (parse_u32(optarg, "--max-procs", &cfg.max_procs, 10))
				return 2;
			break;
		case 'm':
			if (parse_u32(optarg, "--mode", &cfg.mode, 8))
				return 2;
			break;
		case 'g': {
			struct group *g = getgrnam(optarg);
			uint32_t gid;
			if (g)
				cfg.gid = g->gr_gid;
			else if (parse_u32(optarg, "--group", &gid, 10) == 0)
				cfg.gid = gid;
			else
				return 2;
			break;
		}
		case 'o': {
			struct passwd *pw = getpwnam(optarg);
			uint32_t uid;
			if (pw)
				cfg.uid = pw->pw_uid;
			else if (parse_u32(optarg, "--owner", &uid, 10) == 0)
				cfg.uid = uid;
			else
				return 2;
			break;
		}
		case 'A':
			cfg.flags |= KVBM_CFG_ALLOW_OTHERS;
			break;
		case 'H':
			cfg.flags |= KVBM_CFG_HUGEPAGES;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[optind];
	r = kvbm_pool_open(name, &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &pool);
	if (r == -EINVAL) {
		fprintf(stderr, "kvbm-pool: create %s: invalid configuration: blocks 1..%u, "
				"block size a power of two 1..1024, max procs 1..%u, mode with 0600\n",
			name, KVBM_MAX_BLOCKS, (unsigned)KVBM_MAX_PROCS);
		return 1;
	}
	if (r < 0)
		return fail("create", name, r);
	kvbm_pool_info(pool, &info);
	printf("created pool %s: %u blocks x %u tokens, up to %u processes, %" PRIu64
	       " bytes, mode %04o, instance 0x%016" PRIx64 "\n",
	       info.name, info.config.block_count, info.config.block_size,
	       info.config.max_procs, info.segment_size, info.config.mode, info.instance_id);
	r = kvbm_pool_close(pool);
	return r < 0 ? fail("create", name, r) : 0;
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
	if (strcmp(what, "a kvbm pool") == 0)
		printf("destroyed pool %s\n", name);
	else
		printf("removed %s (forced): %s\n", name, what);
	return 0;
}

static void info_json(struct json *j, const struct kvbm_inspect *in)
{
	int verdict = kvbm_inspect_verdict(in);

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
		fprintf(stderr, "kvbm-pool: list %s: %s\n", dir, strerror(errno));
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

		if (kvbm_inspect_open(&in, names[i]) < 0)
			continue; /* no permission, or gone meanwhile */
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
	/* subcommand options start after the subcommand */
	argc--;
	argv++;
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
