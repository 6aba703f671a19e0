/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stop.c - removes a tool's temporary pool when a signal stops the tool.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "stop.h"
#include "../shm/segment.h"

/* The file, resolved beforehand: the handler may only unlink() it (a
 * destroy is not async-signal-safe). Empty: nothing to remove. */
static char pool_path[PATH_MAX];
static pid_t owner;

static void on_stop(int sig)
{
	if (getpid() == owner && pool_path[0])
		unlink(pool_path);
	signal(sig, SIG_DFL);
	raise(sig);
}

void stop_removes_pool(const char *name)
{
	char bare[KVBM_NAME_MAX + 1];

	if (kvbm_seg_path(name, pool_path, sizeof(pool_path), bare, 0) < 0)
		pool_path[0] = '\0';
	owner = getpid();
	signal(SIGINT, on_stop);
	signal(SIGTERM, on_stop);
}

void stop_forget_pool(void)
{
	pool_path[0] = '\0';
}
