/* SPDX-License-Identifier: Apache-2.0 */
/*
 * log.h - what the library has to say beyond a return code goes to the
 * host's log function (kvbm_set_log), never to its stderr.
 */
#ifndef KVBM_LIB_LOG_H
#define KVBM_LIB_LOG_H

#include "kvbm.h"

__attribute__((format(printf, 2, 3))) void kvbm_log(int level, const char *fmt, ...);

#endif
