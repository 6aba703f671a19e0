/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench.h - what kvbm-bench.c shares with bench_peer.c (its fixed-op-count,
 * side-by-side and instruction-count modes). PRIVATE to kvbm-bench.
 */
#ifndef KVBM_TOOLS_BENCH_H
#define KVBM_TOOLS_BENCH_H

#include <stdint.h>

#include "kvbm.h"

enum wl { WL_A_FRESH, WL_A_STEADY, WL_B, WL_C, WL_D, WL_B_SAME, WL_E, WL_G_EVICTOR };

struct result {
	double ops;      /* cycles, match ops, iterations or hash runs */
	double blocks;
	double secs;
	double cpu_secs; /* the timed part's on-CPU time (thread_cpu_ns) */
	double split1_ns, split2_ns; /* (b)/(c): lookup, release totals */
};

/* kvbm-bench.c */
extern uint64_t bench_fixed_ops; /* run_loop: this many ops, not a deadline (0) */
extern uint32_t event_ring;
uint64_t now_ns(void);
void die(const char *what, int r);
struct kvbm_pool *fresh_pool(void);
void drop_pool(struct kvbm_pool *p);
void background(struct kvbm_pool *p);
void run_loop(struct kvbm_pool *q, enum wl w, uint32_t t, struct result *res);

/* bench_peer.c: --ops, --peer, --instructions. Runs the named workloads
 * (argv[first..argc)), or the default set, and returns the exit status. */
struct bench_peer_opts {
	uint64_t ops;       /* --ops N: in-process, fixed op count */
	const char *peer;   /* --peer PATH: alternate with the Rust harness */
	int instructions;   /* --instructions: both sides under callgrind */
	int rounds;         /* alternated runs per side (--rounds, 5) */
	const char *self;   /* argv[0], to run ourselves as the C side */
};
/* On-CPU ns of the calling thread, what the Rust harness reads from
 * /proc/thread-self/schedstat: a busy machine's preemptions left out. */
uint64_t thread_cpu_ns(void);
/* The pool's accounting after workload @w on a fresh pool of @blocks: every
 * allocation past the pool's size evicted once, no duplicate, no key the
 * index refused. Returns 0, or -1 after printing what is off. */
int bench_check_accounting(struct kvbm_pool *p, uint32_t blocks);
int bench_peer_main(const struct bench_peer_opts *o, char **wls, int nwl);

#endif /* KVBM_TOOLS_BENCH_H */
