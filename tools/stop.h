/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stop.h - a tool's own temporary pool goes when Ctrl-C or SIGTERM stops
 * the tool, as it goes when the tool ends.
 */
#ifndef KVBM_TOOLS_STOP_H
#define KVBM_TOOLS_STOP_H

/* From now on SIGINT and SIGTERM remove pool @name's file (in this
 * process only, not in its forked workers, which die of the signal) and
 * then end the process as the signal would. Call again for a new pool. */
void stop_removes_pool(const char *name);
/* The pool is gone (destroyed by the tool): nothing to remove any more. */
void stop_forget_pool(void);

#endif
