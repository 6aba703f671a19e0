/* SPDX-License-Identifier: Apache-2.0 */
/*
 * helpers.h - shared test helpers: unique pool names in a private segment
 * directory, fork/wait with bounded waits, pipe barriers, file patching.
 */
#ifndef KVBM_TESTS_HELPERS_H
#define KVBM_TESTS_HELPERS_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kvbm.h"

Suite *make_errors_suite(void);
Suite *make_hash_suite(void);
Suite *make_index_suite(void);
Suite *make_segment_suite(void);
Suite *make_proctable_suite(void);
Suite *make_mutex_suite(void);
Suite *make_log_suite(void);
Suite *make_tools_suite(void);
Suite *make_block_suite(void);
Suite *make_match_suite(void);
Suite *make_mproc_suite(void);
Suite *make_attach_suite(void);
Suite *make_invariants_suite(void);
Suite *make_evict_suite(void);
Suite *make_hints_suite(void);
Suite *make_misuse_suite(void);
Suite *make_edges_suite(void);
Suite *make_hostile_suite(void);
Suite *make_recovery_load_suite(void);
Suite *make_noalloc_suite(void);
Suite *make_damaged_suite(void);
Suite *make_events_suite(void);
Suite *make_kvbmd_suite(void);
Suite *make_kvbmd_events_suite(void);
Suite *make_tier_suite(void);
Suite *make_audit_suite(void);
Suite *make_pins_suite(void);

/* A pool name unique in this test run. */
const char *t_name(char *buf, size_t len);
#define T_NAME(var) char var##_buf[64]; const char *var = t_name(var##_buf, sizeof(var##_buf))
/* Path of pool @name's file in the test segment directory. */
const char *t_path(const char *name, char *buf, size_t len);
/* Defaults for tests: small pool, short open timeout. */
struct kvbm_config t_cfg(void);
/* Creates pool @name with t_cfg() (or @cfg), attached. Fails the test on error. */
struct kvbm_pool *t_create(const char *name, const struct kvbm_config *cfg);

/* Waits (bounded: fails the test after 60 s) and returns the exit code, or
 * 128 + the signal number. */
int t_wait(pid_t pid);
/* Exit status helpers for children: never run atexit handlers of Check. */
#define T_CHILD_OK() _exit(0)
#define T_CHILD_CHECK(cond, code) do { if (!(cond)) _exit(code); } while (0)

/* Pipe barrier: N children block in t_gate_wait() until t_gate_open(). */
struct t_gate { int fd[2]; };
void t_gate_init(struct t_gate *g);
void t_gate_wait(struct t_gate *g);  /* child: after fork */
void t_gate_open(struct t_gate *g);  /* parent */
/* One-byte message pipe helpers. */
void t_send(int fd, const void *buf, size_t len);
int t_recv(int fd, void *buf, size_t len); /* 0 or -1 on EOF */

/* Writes @len bytes at @off of pool @name's file. */
void t_patch(const char *name, off_t off, const void *buf, size_t len);
/* Runs a tool from $KVBM_BIN with args; captures stdout into @out (NUL-terminated,
 * truncated to @outlen) and returns its exit code. */
int t_run_tool(char *out, size_t outlen, const char *tool, ...);
/* The same with the tool's stderr in @out too, for its messages. */
int t_run_tool_all(char *out, size_t outlen, const char *tool, ...);
/* Whether we may switch users and mount (root in the initial namespace). */
int t_is_root(void);

/* ---- blocks (the reference's testing module: salt 42) ---- */
#define T_SALT 42
/* PLH of the one-block sequence [id, id+1, ..., id+bs-1] (tokens_for_id). */
struct kvbm_plh t_hash1(uint32_t id, uint32_t bs);
/* Chained PLHs of the n blocks of tokens start, start+1, ... */
void t_seq_hashes(uint32_t start, size_t n, uint32_t bs, struct kvbm_plh *out);
/* Allocates, stages and registers n blocks under @hashes. */
void t_register(struct kvbm_pool *p, const struct kvbm_plh *hashes, size_t n,
		struct kvbm_block *out);
void t_release(struct kvbm_pool *p, const struct kvbm_block *blks, size_t n);
struct kvbm_metrics t_metrics(struct kvbm_pool *p);
/* t_cfg() with @blocks blocks, created; closed and destroyed by t_done(). */
struct kvbm_pool *t_pool(const char *name, uint32_t blocks);
/* Every invariant, under the mutex, nothing in flight: the violations
 * (printed to stderr). */
long t_check(struct kvbm_pool *p);
/* Checks the invariants, closes and destroys. */
void t_done(struct kvbm_pool *p, const char *name);

#endif /* KVBM_TESTS_HELPERS_H */
