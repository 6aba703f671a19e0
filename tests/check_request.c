/* SPDX-License-Identifier: Apache-2.0 */
#include "helpers.h"
#include "kvbm_sequence.h"

Suite *make_request_suite(void)
{
	return suite_create("request");
}
