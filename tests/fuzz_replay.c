/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_replay.c - runs the segment fuzz target (tests/fuzz_segment.c) once
 * over each file or directory of files named on the command line: the
 * corpus replay of `make check` where clang's libFuzzer is not available.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long runs;

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
		goto fail;
	buf = malloc((size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		goto fail;
	fclose(f);
	LLVMFuzzerTestOneInput(buf, (size_t)n);
	free(buf);
	runs++;
	return 0;
fail:
	fprintf(stderr, "fuzz_replay: cannot read %s\n", path);
	free(buf);
	if (f)
		fclose(f);
	return -1;
}

int main(int argc, char **argv)
{
	int bad = 0;

	LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			DIR *d = opendir(argv[i]);
			struct dirent *e;
			while (d && (e = readdir(d)) != NULL) {
				char path[4096];
				if (e->d_name[0] == '.')
					continue;
				snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
				bad |= replay_file(path) < 0;
			}
			if (d)
				closedir(d);
		} else {
			bad |= replay_file(argv[i]) < 0;
		}
	}
	fprintf(stderr, "fuzz_replay: %ld inputs, no crash\n", runs);
	return bad;
}
