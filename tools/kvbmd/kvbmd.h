/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbmd.h - the kvbm service: shared definitions of its parts.
 *
 *   config.c  the `key = value` file with [pool NAME] sections, and flags
 *   pools.c   creating or adopting the pools, the read-only views of them
 *   reaper.c  a pidfd per attached process: reap the moment one exits
 *   expo.c    merging Prometheus expositions (one family, many pools)
 *   http.c    the listening socket and /metrics (libmicrohttpd)
 *   publish.c the drain threads: event rings to vLLM's ZMQ format and to
 *             Dynamo's event plane over NATS
 *   pubstate.c where a publisher stands (seq, ring cursors), kept across
 *             restarts
 *   main.c    flags, signals, the main loop
 *
 * Threads: the main thread owns the pools' lifetimes, the reaper and the
 * stats sampling; libmicrohttpd's thread only reads (metrics snapshots,
 * stats, the read-only views, counters below marked atomic). The pool set
 * is fixed from start to exit, so the HTTP thread needs no lock for it;
 * the labels a SIGHUP may change are copied under kvbmd.lock.
 */
#ifndef KVBMD_H
#define KVBMD_H

#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "kvbm.h"
#include "../inspect.h"

#define KVBMD_MAX_POOLS 8
#define KVBMD_LABEL_MAX 128
#define KVBMD_ERR_MAX 512
#define KVBMD_ENDPOINT_MAX 256

/* Exit codes: 0 clean stop; 1 a runtime failure (a pool, the port); 2 bad
 * usage or configuration. */
enum { KVBMD_EXIT_OK = 0, KVBMD_EXIT_FAIL = 1, KVBMD_EXIT_CONFIG = 2 };

/* struct kvbmd_pool_cfg.set: the keys a section gave, which an adopted
 * pool must agree with */
enum {
	KVBMD_SET_BLOCKS = 1u << 0,
	KVBMD_SET_BLOCK_SIZE = 1u << 1,
	KVBMD_SET_MAX_PROCS = 1u << 2,
	KVBMD_SET_TIER = 1u << 3,
	KVBMD_SET_BACKEND = 1u << 4,
	KVBMD_SET_DUP = 1u << 5,
	KVBMD_SET_RESET = 1u << 6,
};

struct kvbmd_pool_cfg {
	char name[KVBM_NAME_MAX + 1];
	struct kvbm_config cfg;
	unsigned set;    /* KVBMD_SET_* */
	int create;      /* create the pool when it does not exist (1) */
	char where[256]; /* "FILE:LINE" or "--pool": where it was defined */
};

struct kvbmd_config {
	char listen[128]; /* HOST:PORT */
	char instance_id[KVBMD_LABEL_MAX];
	char worker_id[KVBMD_LABEL_MAX];
	uint32_t scan_ms;  /* re-scan of the process tables */
	uint32_t reap_ms;  /* backstop kvbm_reap() of every pool */
	uint32_t stats_ms; /* stats collector sampling */
	uint32_t stats_window;
	/* vLLM's ZMQ KV events (publish.c); zmq_endpoint "" = off */
	char zmq_endpoint[KVBMD_ENDPOINT_MAX];
	char zmq_replay_endpoint[KVBMD_ENDPOINT_MAX];
	char zmq_topic[KVBMD_LABEL_MAX];
	char zmq_bind[8];          /* auto (vLLM's rule), yes, no */
	uint32_t dp_rank;          /* data-parallel rank: endpoint port offset */
	uint32_t zmq_hwm;          /* messages queued per subscriber */
	uint32_t zmq_buffer_steps; /* batches kept for replay */
	uint32_t event_window_ms;  /* a batch waits at most this long */
	uint32_t event_batch_max;  /* events per batch */
	/* Dynamo's event plane over NATS (publish.c); nats_url "" = off */
	char nats_url[KVBMD_ENDPOINT_MAX];
	char nats_router_subject[KVBMD_LABEL_MAX]; /* kv-events */
	char nats_kvbm_subject[KVBMD_LABEL_MAX];   /* kvbm.events */
	uint32_t nats_reconnect_buffer;            /* bytes kept while the server is away */
	uint32_t nats_reconnect_wait_ms;
	struct kvbmd_pool_cfg pools[KVBMD_MAX_POOLS];
	size_t npools;
};

/* config.c */
void kvbmd_config_init(struct kvbmd_config *c);
/* Reads @path into @c (on top of what it holds). Returns 0, or -1 with a
 * message "FILE:LINE: ..." in @err. */
int kvbmd_config_load(struct kvbmd_config *c, const char *path, char *err, size_t errlen);
/* One global `key=value` (a flag): 0, or -1 with @err. */
int kvbmd_config_set(struct kvbmd_config *c, const char *kv, const char *where, char *err,
		     size_t errlen);
/* --pool NAME[,key=value...]: 0, or -1 with @err. */
int kvbmd_config_pool_arg(struct kvbmd_config *c, const char *arg, char *err, size_t errlen);

/* One attached process, watched through a pidfd. */
struct kvbmd_watch {
	int fd;       /* pidfd, -1 = none */
	uint32_t pid;
	uint64_t gen; /* attach generation of the entry it watches */
};

struct kvbmd_pool {
	char name[KVBM_NAME_MAX + 1];
	char tier[KVBM_TIER_MAX + 1];
	struct kvbm_pool *h;
	struct kvbm_inspect view; /* read-only map: process table, reaps, state */
	int view_open; /* view mapped (close it) */
	int view_ok;   /* and valid: read it */
	struct kvbm_stats *stats;
	uint32_t self;            /* our process-table entry */
	struct kvbmd_watch w[KVBM_MAX_PROCS];
	uint32_t nwatch;          /* atomic: read by the HTTP thread */
	uint64_t pidfd_reaps;     /* atomic: processes reaped on a pidfd event */
	uint64_t pending;         /* entries whose process exited, not yet reaped */
	uint64_t retry_ns;        /* CLOCK_MONOTONIC of the next reap of them */
	uint32_t retries;
	int poison_logged;
	uint64_t pins_backstop_ns; /* CLOCK_MONOTONIC of the next expiry call
				    * made whatever next_ns says (pins.c) */
	/* the publisher thread's counters; atomic: read by the HTTP thread */
	uint64_t ev_published_zmq; /* events sent on the PUB socket */
	uint64_t batches_zmq;
	uint64_t ev_dropped;       /* events of batches a full subscriber refused */
	uint64_t ev_gaps;          /* times the ring lapped the publisher */
	uint64_t ev_resyncs;       /* RESYNC events (the pool recovered) */
	uint64_t ev_published_nats; /* router events accepted by cnats */
	uint64_t ev_dropped_nats;  /* router events cnats refused (buffer full) */
	uint64_t batches_nats;     /* kvbm-logical messages accepted */
	uint64_t kvbm_dropped_nats; /* kvbm-logical messages refused */
};

struct kvbmd {
	struct kvbmd_config cfg; /* main thread; labels copied under lock */
	pthread_mutex_t lock;    /* guards the two labels below */
	char instance_id[KVBMD_LABEL_MAX];
	char worker_id[KVBMD_LABEL_MAX];
	struct kvbmd_pool pools[KVBMD_MAX_POOLS];
	size_t npools;
	void *http; /* struct MHD_Daemon */
	int listen_fd;
	int verbose;
	uint64_t replays; /* atomic: replay requests answered */
	/* kvbmd_publish_start: resume the ZMQ stream where the last kvbmd
	 * left it (at start), or snapshot every pool (after a reload, whose
	 * endpoints may have new subscribers) */
	int pub_resume;
	uint64_t nats_reconnects; /* atomic: connections to NATS made */
};

/* pools.c */
/* Opens (creating or adopting) every pool of d->cfg. 0, or -1 with a
 * message on stderr (everything opened is closed again). */
int kvbmd_pools_open(struct kvbmd *d);
void kvbmd_pools_close(struct kvbmd *d);
/* Whether the pool's segment is POISONED (from the read-only view). */
int kvbmd_pool_poisoned(const struct kvbmd_pool *p);
/* Dead processes reaped in the pool so far (control.reaps). */
uint64_t kvbmd_pool_reaps(const struct kvbmd_pool *p);

/* publish.c */
/* Opens the ZMQ sockets and starts draining the pools' rings: 0 (also
 * when zmq_endpoint is unset), or -1 with a message on stderr. */
int kvbmd_publish_start(struct kvbmd *d);
/* Whether the publishing keys of @a and @b differ; copies them. */
int kvbmd_config_publish_differs(const struct kvbmd_config *a, const struct kvbmd_config *b);
void kvbmd_config_publish_copy(struct kvbmd_config *dst, const struct kvbmd_config *src);
/* Stops the drain thread (the last batches are sent) and closes. */
void kvbmd_publish_stop(struct kvbmd *d);

/* pubstate.c: one publisher's position, in a file beside the pools */
struct kvbmd_pubstate;
/* Maps the state of the publisher of @transport for the pools whose first
 * is @first_pool (*@fd: its file, -1 when it could not be had: then a
 * private state, seq from 0, said in the log). NULL: out of memory. */
struct kvbmd_pubstate *kvbmd_pubstate_open(const char *first_pool, const char *transport,
					   int *fd);
void kvbmd_pubstate_close(struct kvbmd_pubstate *s, int fd);
/* The seq the next batch gets. */
uint64_t kvbmd_pubstate_seq(const struct kvbmd_pubstate *s);
/* Where pool @instance resumes (ring head @head): 1 with *@cursor, and
 * *@until != 0 when the batch [cursor, until) was being sent when the
 * last kvbmd died (send exactly it first, with the next seq); 0: snapshot. */
int kvbmd_pubstate_resume(struct kvbmd_pubstate *s, uint64_t instance, uint64_t head,
			  uint64_t *cursor, uint64_t *until);
/* A ring batch [start, end) of pool @instance is about to go out with the
 * next seq; after it did, commit it (the seq advances). */
void kvbmd_pubstate_begin(struct kvbmd_pubstate *s, uint64_t instance, uint64_t start,
			  uint64_t end);
void kvbmd_pubstate_commit(struct kvbmd_pubstate *s, uint64_t instance, uint64_t end);
/* A snapshot batch takes its seq before it is sent: returns it. */
uint64_t kvbmd_pubstate_take(struct kvbmd_pubstate *s);
/* Pool @instance resumes at @cursor (@valid), or not at all (a snapshot is
 * going out). */
void kvbmd_pubstate_mark(struct kvbmd_pubstate *s, uint64_t instance, uint64_t cursor, int valid);

/* reaper.c */
/* Brings the pidfd watches in line with the process tables. */
void kvbmd_reaper_scan(struct kvbmd *d);
/* Adds the watches' pidfds to @fds (room for KVBM_MAX_PROCS per pool);
 * @owner[i] = pool index << 8 | entry. Returns how many. */
size_t kvbmd_reaper_fds(struct kvbmd *d, struct pollfd *fds, uint32_t *owner);
/* A watched pidfd became readable: its process exited. */
void kvbmd_reaper_exited(struct kvbmd *d, uint32_t owner);
/* Retries due now; returns the ms until the next one (-1 none). */
int kvbmd_reaper_retry(struct kvbmd *d, uint64_t now_ns);
/* kvbm_reap() on every pool (the backstop). */
void kvbmd_reaper_reap_all(struct kvbmd *d);
void kvbmd_reaper_close(struct kvbmd *d);

/* pins.c: expires the pools' pins whose deadline passed; returns the ms
 * until the next deadline (-1 none). */
int kvbmd_pins_tick(struct kvbmd *d, uint64_t now_ns);

/* expo.c: a growable text buffer, and the merge */
struct kvbmd_buf {
	char *p;
	size_t len, cap;
	int oom;
};
void kvbmd_buf_printf(struct kvbmd_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void kvbmd_buf_put(struct kvbmd_buf *b, const char *s, size_t n);
void kvbmd_buf_free(struct kvbmd_buf *b);
/*
 * Merges @n Prometheus text expositions into one in which each metric
 * family appears once: its HELP and TYPE (the first seen) then every
 * sample of it, in the order the texts give them. Families keep the order
 * in which they first appear. Returns 0 or -ENOMEM.
 */
int kvbmd_expo_merge(const char *const *texts, size_t n, struct kvbmd_buf *out);

/* http.c */
/* Binds and listens on d->cfg.listen: 0, or -1 with a message on stderr.
 * *port gets the port bound (for a port of 0). */
int kvbmd_http_listen(struct kvbmd *d, unsigned *port);
/* Starts serving on the bound socket: 0 or -1 (message on stderr). */
int kvbmd_http_start(struct kvbmd *d);
void kvbmd_http_stop(struct kvbmd *d);
/* The whole /metrics exposition, into @out (for the HTTP thread). */
int kvbmd_metrics_text(struct kvbmd *d, struct kvbmd_buf *out);

uint64_t kvbmd_now_ns(void);
void kvbmd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* KVBMD_H */
