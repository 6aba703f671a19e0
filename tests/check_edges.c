/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_edges.c - crash safety at the edges of the slot protocol.
 */
#define _GNU_SOURCE
#include "helpers.h"

Suite *make_edges_suite(void)
{
	Suite *s = suite_create("edges");
	TCase *tc = tcase_create("edges");

	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}
