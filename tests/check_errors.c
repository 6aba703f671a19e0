/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_errors.c - the error convention and the layout hash.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "helpers.h"
#include "../shm/layout.h"

START_TEST(test_strerror_every_code_has_its_own_text)
{
	for (int a = KVBM_EBASE - 1; a > KVBM_ELAST; a--) {
		const char *sa = kvbm_strerror(a);
		ck_assert_ptr_nonnull(sa);
		ck_assert_msg(strcmp(sa, "unknown kvbm error") != 0, "code %d has no text", a);
		for (int b = a - 1; b > KVBM_ELAST; b--)
			ck_assert_msg(strcmp(sa, kvbm_strerror(b)) != 0, "%d and %d share text", a,
				      b);
	}
}
END_TEST

START_TEST(test_strerror_errno_and_unknown)
{
	ck_assert_str_eq(kvbm_strerror(0), "success");
	ck_assert_str_eq(kvbm_strerror(-ENOENT), "No such file or directory");
	ck_assert_str_eq(kvbm_strerror(KVBM_ELAST), "unknown kvbm error");
	ck_assert_str_eq(kvbm_strerror(KVBM_EBASE), "unknown kvbm error");
	ck_assert_str_eq(kvbm_strerror(-100000), "unknown kvbm error");
	ck_assert_str_eq(kvbm_strerror(5), "unknown kvbm error");
}
END_TEST

START_TEST(test_own_codes_never_collide_with_errno)
{
	ck_assert_int_lt(KVBM_EBADMAGIC, -4096);
	ck_assert_int_lt(KVBM_ELAST, KVBM_EBADMAGIC);
}
END_TEST

START_TEST(test_layout_hash_is_deterministic)
{
	ck_assert_uint_ne(kvbm_layout_hash(), 0);
	ck_assert_uint_eq(kvbm_layout_hash(), kvbm_layout_hash());
}
END_TEST

START_TEST(test_version_string)
{
	ck_assert_str_eq(kvbm_version(), "0.1.0");
}
END_TEST

Suite *make_errors_suite(void)
{
	Suite *s = suite_create("errors");
	TCase *tc = tcase_create("errors");

	tcase_add_test(tc, test_strerror_every_code_has_its_own_text);
	tcase_add_test(tc, test_strerror_errno_and_unknown);
	tcase_add_test(tc, test_own_codes_never_collide_with_errno);
	tcase_add_test(tc, test_layout_hash_is_deterministic);
	tcase_add_test(tc, test_version_string);
	suite_add_tcase(s, tc);
	return s;
}
