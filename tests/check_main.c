/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_main.c - runs every Check suite. Segments go to a private directory
 * (KVBM_SHM_DIR) that is removed at the end, so a crashed test leaks
 * nothing and no test touches a real pool.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

/* kvbm_sequence.h's suites */
Suite *make_sequence_suite(void);
Suite *make_request_suite(void);

int main(void)
{
	char dir[] = "/dev/shm/kvbm-test-XXXXXX";
	char cmd[128];
	int failed;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	/* like /dev/shm itself: the permission tests open it as another user */
	chmod(dir, 01777);
	setenv("KVBM_SHM_DIR", dir, 1);

	SRunner *sr = srunner_create(make_errors_suite());
	srunner_add_suite(sr, make_hash_suite());
	srunner_add_suite(sr, make_index_suite());
	srunner_add_suite(sr, make_segment_suite());
	srunner_add_suite(sr, make_proctable_suite());
	srunner_add_suite(sr, make_mutex_suite());
	srunner_add_suite(sr, make_log_suite());
	srunner_add_suite(sr, make_tools_suite());
	srunner_add_suite(sr, make_block_suite());
	srunner_add_suite(sr, make_match_suite());
	srunner_add_suite(sr, make_mproc_suite());
	srunner_add_suite(sr, make_attach_suite());
	srunner_add_suite(sr, make_invariants_suite());
	srunner_add_suite(sr, make_evict_suite());
	srunner_add_suite(sr, make_hints_suite());
	srunner_add_suite(sr, make_misuse_suite());
	srunner_add_suite(sr, make_edges_suite());
	srunner_add_suite(sr, make_recovery_load_suite());
	srunner_add_suite(sr, make_noalloc_suite());
	srunner_add_suite(sr, make_damaged_suite());
	srunner_add_suite(sr, make_hostile_suite());
	srunner_add_suite(sr, make_events_suite());
	srunner_add_suite(sr, make_kvbmd_suite());
	srunner_add_suite(sr, make_kvbmd_events_suite());
	srunner_add_suite(sr, make_sequence_suite());
	srunner_add_suite(sr, make_request_suite());
	srunner_add_suite(sr, make_tier_suite());
	srunner_add_suite(sr, make_audit_suite());
	srunner_add_suite(sr, make_pins_suite());
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
