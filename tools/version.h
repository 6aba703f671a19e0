/* SPDX-License-Identifier: Apache-2.0 */
/* --version, the same in every tool: which tool, of which product and
 * release (the library's, which the tool is linked with). */
#ifndef KVBM_TOOLS_VERSION_H
#define KVBM_TOOLS_VERSION_H

#include <stdio.h>

#include "kvbm.h"

static inline int tool_version(const char *tool)
{
	printf("%s kvbm-shm %s\n", tool, kvbm_version());
	return 0;
}

#endif
