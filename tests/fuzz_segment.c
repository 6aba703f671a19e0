/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_segment.c - fuzz target over the bytes of a pool segment file
 * (issue 14: any attached process can write any byte, and a file on disk
 * can be damaged).
 *
 * An input is a whole segment file: the corpus (tests/corpus/, made by
 * tests/fuzz_corpus.c from real pools of the library, then damaged) gives
 * the fuzzer valid images to mutate, so most inputs pass the header checks
 * and reach the checker. Each input is written to a file and opened the
 * way kvbm-shm-dump opens one; then everything the dump does runs over it
 * (text, --summary, --json, --check without --lock), and the checker
 * itself under every flag combination that needs no live mutex. None of it
 * may crash, hang or read outside the mapping (ASan, UBSan, libFuzzer's
 * timeout).
 *
 * Built by `make fuzz` (libFuzzer, clang) or, without clang, into a
 * replay driver (tests/fuzz_replay.c) that runs the corpus once.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/pool.h"
#include "../tools/dump.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char seg_path[128];
static char dir_path[64];

static void cleanup(void)
{
	unlink(seg_path);
	rmdir(dir_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(dir_path, sizeof(dir_path), "/dev/shm/kvbm-fuzz-XXXXXX");
	if (!mkdtemp(dir_path)) {
		perror("mkdtemp");
		exit(1);
	}
	/* a name holding '/' is taken as a path by the read-only open */
	snprintf(seg_path, sizeof(seg_path), "%s/kvbm.fuzz", dir_path);
	atexit(cleanup);
	/* what the dump prints is not what is tested: that it returns is */
	if (!freopen("/dev/null", "w", stdout))
		exit(1);
	return 0;
}

static void quiet(const char *msg, void *arg)
{
	(void)msg;
	(void)arg;
}

static int write_file(const uint8_t *data, size_t size)
{
	int fd = open(seg_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t off = 0;

	if (fd < 0)
		return -1;
	while (off < size) {
		ssize_t n = write(fd, data + off, size - off);
		if (n <= 0) {
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	close(fd);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct kvbm_dump_opts modes[] = {
		{0, 0, 0, 0}, /* text */
		{0, 1, 0, 0}, /* --summary */
		{1, 0, 0, 0}, /* --json */
		{0, 0, 1, 0}, /* --check, lock-free */
	};
	static const unsigned ckflags[] = {0, KVBM_CK_LOCKED, KVBM_CK_QUIESCENT,
					   KVBM_CK_LOCKED | KVBM_CK_QUIESCENT};
	struct kvbm_inspect in;

	if (write_file(data, size) < 0)
		return 0;
	if (kvbm_inspect_open(&in, seg_path) < 0)
		return 0;
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++)
		(void)kvbm_dump_run(&in, seg_path, &modes[m]);
	if (in.valid == 0)
		for (size_t f = 0; f < sizeof(ckflags) / sizeof(ckflags[0]); f++)
			(void)kvbm_check_seg(&in.seg, ckflags[f], quiet, NULL);
	kvbm_inspect_close(&in);
	return 0;
}
