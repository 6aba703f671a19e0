/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm-shm-dump - prints a pool segment: header, config, region table,
 * process table with each entry's liveness, and the mutex state. Maps the
 * segment read-only and takes no lock, so it works on a pool whose every
 * process is dead.
 *
 * --check verifies the invariants of docs/CRASH-SAFETY.md and prints
 * each violation; exact when no live process is attached, else only what
 * holds while others work, unless --lock attaches and takes the mutex.
 *
 * Exit: 0 valid and READY (and, with --check, every invariant holds); 1
 * invalid, poisoned, not initialised or a violation (the reason on
 * stderr); 2 usage; 3 missing or unreadable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"
#include "version.h"

static sigjmp_buf bus_env;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_env, 1);
}

/* A peer that truncates the file while we read it makes our next read past
 * the new end a SIGBUS, whatever we checked before: reported as what it is. */
static void catch_sigbus(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigbus;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}

/* A tool owns its stderr: what the library logs (a failed repair when
 * --lock's attach recovers the pool) is said there. */
static void log_stderr(int level, const char *msg, void *arg)
{
	(void)level;
	(void)arg;
	fprintf(stderr, "kvbm-shm-dump: %s\n", msg);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: kvbm-shm-dump [--json | --summary] POOL\n"
		   "       kvbm-shm-dump --check [--lock] POOL\n"
		   "  POOL      a pool name (in $KVBM_SHM_DIR, default /dev/shm) or a path\n"
		   "  --json    print one JSON document\n"
		   "  --summary only blocks, metrics and processes\n"
		   "  --check   verify the pool's invariants; exit 0 only when all hold\n"
		   "  --lock    with --check: attach and hold the pool mutex for an exact\n"
		   "            snapshot of a live pool\n"
		   "  --help, --version\n"
		   "Exit: 0 valid and READY (and every invariant holds); 1 invalid, or a\n"
		   "violation; 2 usage; 3 missing or unreadable.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"summary", no_argument, NULL, 's'},
		{"check", no_argument, NULL, 'c'},
		{"lock", no_argument, NULL, 'l'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	struct kvbm_inspect in;
	struct kvbm_dump_opts o = {0, 0, 0, 0};
	int c, r;

	while ((c = getopt_long(argc, argv, "jshclV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o.check = 1;
			break;
		case 'l':
			o.lock = 1;
			break;
		case 'j':
			o.json = 1;
			break;
		case 's':
			o.summary = 1;
			break;
		case 'V':
			return tool_version("kvbm-shm-dump");
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1 || (o.lock && !o.check) || (o.check && (o.json || o.summary))) {
		usage(stderr);
		return 2;
	}
	kvbm_set_log(log_stderr, NULL);
	r = kvbm_inspect_open(&in, argv[optind]);
	char why[PATH_MAX + 64];
	if (r == -ENOENT && !strchr(argv[optind], '/') && kvbm_shm_dir_missing(why, sizeof(why))) {
		fprintf(stderr, "kvbm-shm-dump: %s: %s\n", argv[optind], why);
		return 3;
	}
	if (r < 0) {
		fprintf(stderr, "kvbm-shm-dump: %s: %s\n", argv[optind], kvbm_strerror(r));
		if (r == -ENOENT)
			fprintf(stderr, "kvbm-shm-dump: 'kvbm-pool list' shows the pools there are\n");
		return 3;
	}
	if (sigsetjmp(bus_env, 1)) {
		fflush(stdout);
		fprintf(stderr, "kvbm-shm-dump: %s: the segment file shrank while being read "
				"(truncated by another process?)\n", argv[optind]);
		return 1;
	}
	catch_sigbus();
	r = kvbm_dump_run(&in, argv[optind], &o);
	kvbm_inspect_close(&in);
	return r;
}
