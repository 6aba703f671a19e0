/* SPDX-License-Identifier: Apache-2.0 */
/*
 * log.c - the host's log function: one per process, installed and read
 * under a lock of its own (logging is rare: a failed repair), so that a
 * message never meets the function of one installation and the argument
 * of another.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include "log.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static kvbm_log_fn log_fn;
static void *log_arg;

void kvbm_set_log(kvbm_log_fn fn, void *arg)
{
	pthread_mutex_lock(&lock);
	log_fn = fn;
	log_arg = arg;
	pthread_mutex_unlock(&lock);
}

void kvbm_log(int level, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	pthread_mutex_lock(&lock);
	if (log_fn) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		log_fn(level, msg, log_arg);
	}
	pthread_mutex_unlock(&lock);
}
