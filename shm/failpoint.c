/* SPDX-License-Identifier: Apache-2.0 */
/*
 * failpoint.c - see failpoint.h. Only compiled into test builds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "failpoint.h"

#ifdef KVBM_FAILPOINTS

#define FP_MAX 16
#define FP_NAME 64

enum fp_action { FP_KILL, FP_YIELD, FP_DELAY, FP_STOP };

struct fp {
	char name[FP_NAME];
	unsigned long nth; /* kill, stop: at this hit (1 = first); yield, delay: every nth */
	unsigned long hits;
	enum fp_action action;
};

static struct fp fps[FP_MAX];
static int nfps;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static int armed_by_call;

static int parse(const char *spec)
{
	char buf[FP_MAX * (FP_NAME + 16)];
	char *save = NULL;
	int n = 0;

	nfps = 0;
	if (!spec || !*spec)
		return 0;
	if (strlen(spec) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, spec);
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		enum fp_action action = FP_KILL;
		unsigned long nth = 1;

		if (n == FP_MAX)
			return -EINVAL;
		if (eq) {
			*eq = '\0';
			if (!strcmp(eq + 1, "yield"))
				action = FP_YIELD;
			else if (!strcmp(eq + 1, "delay"))
				action = FP_DELAY;
			else if (!strcmp(eq + 1, "stop"))
				action = FP_STOP;
			else if (strcmp(eq + 1, "kill") != 0)
				return -EINVAL;
		}
		char *colon = strchr(tok, ':');
		if (colon) {
			char *end;

			*colon = '\0';
			nth = strtoul(colon + 1, &end, 10);
			if (*end || nth == 0)
				return -EINVAL;
		}
		if (!*tok || strlen(tok) >= FP_NAME)
			return -EINVAL;
		strcpy(fps[n].name, tok);
		fps[n].nth = nth;
		fps[n].hits = 0;
		fps[n].action = action;
		n++;
	}
	nfps = n;
	return 0;
}

static void parse_env(void)
{
	if (!armed_by_call && parse(getenv("KVBM_FAILPOINTS")) < 0)
		nfps = 0;
}

int kvbm_fp_arm(const char *spec)
{
	armed_by_call = 1;
	pthread_once(&env_once, parse_env);
	return parse(spec);
}

void kvbm_fp_hit(const char *name)
{
	pthread_once(&env_once, parse_env);
	for (int i = 0; i < nfps; i++) {
		if (strcmp(fps[i].name, name) != 0)
			continue;
		unsigned long h = __atomic_add_fetch(&fps[i].hits, 1, __ATOMIC_RELAXED);
		if (fps[i].action == FP_YIELD) {
			/* widens the window at this point for the stress tests */
			if (h % fps[i].nth == 0)
				sched_yield();
		} else if (fps[i].action == FP_DELAY) {
			/* wider still: long enough for another thread to act */
			if (h % fps[i].nth == 0)
				nanosleep(&(struct timespec){0, 20000}, NULL);
		} else if (h == fps[i].nth) {
			/* stop: a process descheduled at this point for as long
			 * as the test likes (SIGCONT resumes it) */
			raise(fps[i].action == FP_STOP ? SIGSTOP : SIGKILL);
		}
	}
}

#endif /* KVBM_FAILPOINTS */
