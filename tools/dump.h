/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dump.h - kvbm-shm-dump's output (text, --summary, --json, --check) over a
 * segment opened with kvbm_inspect_open(). Every read of the segment stays
 * within the bounds of the header copy validated at open, whatever the
 * other bytes are; a file truncated under us is the caller's SIGBUS to
 * catch.
 */
#ifndef KVBM_TOOLS_DUMP_H
#define KVBM_TOOLS_DUMP_H

#include "inspect.h"

struct kvbm_dump_opts {
	int json, summary, check;
	int lock; /* with check: attach and hold the pool mutex */
};

/* Prints @in (pool name or path @pool) as @o says. Returns the tool's exit
 * code: 0 valid and READY (and every invariant holds), 1 otherwise. */
int kvbm_dump_run(struct kvbm_inspect *in, const char *pool, const struct kvbm_dump_opts *o);

#endif /* KVBM_TOOLS_DUMP_H */
