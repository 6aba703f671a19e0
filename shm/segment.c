/* SPDX-License-Identifier: Apache-2.0 */
/*
 * segment.c - see segment.h for the protocol.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/membarrier.h>
#include <sched.h>

#include "failpoint.h"
#include "liveness.h"
#include "mutex.h"
#include "segment.h"

unsigned kvbm_fork_gen;

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_child(void)
{
	/* the child inherits the mappings and fds but is not an attacher */
	__atomic_add_fetch(&kvbm_fork_gen, 1, __ATOMIC_RELAXED);
}

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, atfork_child);
}

uint64_t kvbm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

const char *kvbm_shm_dir(void)
{
	const char *d = getenv("KVBM_SHM_DIR");

	return d && *d ? d : "/dev/shm";
}

int kvbm_seg_path(const char *name, char *path, size_t pathlen, char *bare, int allow_path)
{
	if (!name)
		return KVBM_ENAME;
	if (allow_path && strchr(name + (name[0] == '/'), '/')) {
		if (strlen(name) >= pathlen)
			return KVBM_ENAME;
		strcpy(path, name);
		const char *b = strrchr(name, '/') + 1;
		snprintf(bare, KVBM_NAME_MAX + 1, "%s", strncmp(b, "kvbm.", 5) ? b : b + 5);
		return 0;
	}
	if (name[0] == '/')
		name++;
	size_t n = strlen(name);
	if (n == 0 || n > KVBM_NAME_MAX || name[0] == '.')
		return KVBM_ENAME;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return KVBM_ENAME;
	}
	if ((size_t)snprintf(path, pathlen, "%s/kvbm.%s", kvbm_shm_dir(), name) >= pathlen)
		return KVBM_ENAME;
	strcpy(bare, name);
	return 0;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static int config_sane(const struct kvbm_shm_config *cfg)
{
	if (cfg->block_count == 0 || cfg->block_count > KVBM_MAX_BLOCKS)
		return 0;
	if (cfg->block_size == 0 || cfg->block_size > 1024 ||
	    (cfg->block_size & (cfg->block_size - 1)))
		return 0;
	if (cfg->max_procs == 0 || cfg->max_procs > KVBM_MAX_PROCS)
		return 0;
	if ((cfg->mode & ~0777u) || (cfg->mode & 0600) != 0600)
		return 0;
	if (cfg->flags & ~(KVBM_CFG_HUGEPAGES | KVBM_CFG_ALLOW_OTHERS | KVBM_CFG_KEEP_TOKENS))
		return 0;
	if (cfg->sketch_log2 && (cfg->sketch_log2 < 8 || cfg->sketch_log2 > 24))
		return 0;
	if (cfg->event_log2 > 22 || cfg->pin_share > 100)
		return 0;
	if (cfg->dup_policy > KVBM_DUP_REJECT || cfg->backend >= KVBM_BACKEND_COUNT ||
	    cfg->reset_on_release > 1 || memchr(cfg->tier, '\0', sizeof(cfg->tier)) == NULL)
		return 0;
	return 1;
}

int kvbm_seg_layout(const struct kvbm_shm_config *cfg, struct kvbm_shm_region *regions,
		    uint64_t *total)
{
	uint64_t off = sizeof(struct kvbm_shm_header);

	if (!config_sane(cfg))
		return -EINVAL;
	memset(regions, 0, sizeof(*regions) * KVBM_REGION_MAX);
	regions[KVBM_REGION_CONTROL].offset = off;
	regions[KVBM_REGION_CONTROL].size = sizeof(struct kvbm_shm_control);
	off = align_up(off + regions[KVBM_REGION_CONTROL].size, KVBM_CACHELINE);
	regions[KVBM_REGION_PROCS].offset = off;
	regions[KVBM_REGION_PROCS].size = (uint64_t)cfg->max_procs * sizeof(struct kvbm_shm_proc);
	off = align_up(off + regions[KVBM_REGION_PROCS].size, KVBM_CACHELINE);
	regions[KVBM_REGION_SLOTS].offset = off;
	regions[KVBM_REGION_SLOTS].size = (uint64_t)cfg->block_count * sizeof(struct kvbm_shm_slot);
	off = align_up(off + regions[KVBM_REGION_SLOTS].size, KVBM_CACHELINE);
	regions[KVBM_REGION_REGISTRY].offset = off;
	regions[KVBM_REGION_REGISTRY].size = kvbm_index_region_size(cfg->block_count);
	off = align_up(off + regions[KVBM_REGION_REGISTRY].size, KVBM_CACHELINE);
	regions[KVBM_REGION_HOLDERS].offset = off;
	regions[KVBM_REGION_HOLDERS].size = (uint64_t)cfg->max_procs * kvbm_holder_stride(cfg);
	off = align_up(off + regions[KVBM_REGION_HOLDERS].size, KVBM_CACHELINE);
	regions[KVBM_REGION_METRICS].offset = off;
	regions[KVBM_REGION_METRICS].size =
		(uint64_t)cfg->max_procs * sizeof(struct kvbm_shm_metrics);
	off = align_up(off + regions[KVBM_REGION_METRICS].size, KVBM_CACHELINE);
	struct kvbm_evict_geom g;
	kvbm_evict_geometry(cfg, &g);
	regions[KVBM_REGION_EVICT].offset = off;
	regions[KVBM_REGION_EVICT].size = g.size;
	off = align_up(off + g.size, KVBM_CACHELINE);
	/* before the ring and the kept tokens, whose sizes vary with the
	 * config the most: the ring stays the file's end (its readers'
	 * damage tests rely on it) */
	regions[KVBM_REGION_PINS].offset = off;
	regions[KVBM_REGION_PINS].size = kvbm_pins_region_size(cfg);
	off = align_up(off + regions[KVBM_REGION_PINS].size, KVBM_CACHELINE);
	regions[KVBM_REGION_EVENTS].offset = off;
	regions[KVBM_REGION_EVENTS].size = kvbm_events_region_size(cfg);
	off = align_up(off + regions[KVBM_REGION_EVENTS].size, KVBM_CACHELINE);
	regions[KVBM_REGION_TOKENS].offset = off;
	regions[KVBM_REGION_TOKENS].size = kvbm_tokens_region_size(cfg);
	off = align_up(off + regions[KVBM_REGION_TOKENS].size, KVBM_CACHELINE);
	*total = align_up(off, (cfg->flags & KVBM_CFG_HUGEPAGES) ? KVBM_HUGEPAGE : KVBM_PAGE);
	return 0;
}

int kvbm_seg_check_header(const struct kvbm_shm_header *hdr, uint64_t file_size)
{
	struct kvbm_shm_region want[KVBM_REGION_MAX];
	uint64_t total;

	if (file_size < sizeof(*hdr))
		return KVBM_ETRUNCATED;
	if (hdr->magic != KVBM_SHM_MAGIC)
		return KVBM_EBADMAGIC;
	if (hdr->abi_major != KVBM_ABI_MAJOR)
		return KVBM_EABI;
	if (hdr->header_size != sizeof(*hdr) || hdr->layout_hash != kvbm_layout_hash())
		return KVBM_ELAYOUT;
	if (hdr->segment_size != file_size)
		return KVBM_ETRUNCATED;
	/* the region table must be exactly what this build computes for the
	 * stored config: every later index into the segment relies on it */
	if (hdr->nregions != KVBM_REGION_NUSED || kvbm_seg_layout(&hdr->config, want, &total) < 0)
		return KVBM_ECORRUPT;
	if (total != hdr->segment_size || memcmp(want, hdr->regions, sizeof(want)) != 0)
		return KVBM_ECORRUPT;
	if (memchr(hdr->name, '\0', sizeof(hdr->name)) == NULL)
		return KVBM_ECORRUPT;
	return 0;
}

int kvbm_seg_check_state(uint32_t state)
{
	switch (state) {
	case KVBM_SEG_READY:
		return 0;
	case KVBM_SEG_EMPTY:
	case KVBM_SEG_INITIALIZING:
		return KVBM_EINITIALIZING;
	case KVBM_SEG_POISONED:
		return KVBM_EPOISONED;
	}
	return KVBM_ECORRUPT;
}

const char *kvbm_seg_state_name(uint32_t state)
{
	switch (state) {
	case KVBM_SEG_EMPTY:
		return "EMPTY";
	case KVBM_SEG_INITIALIZING:
		return "INITIALIZING";
	case KVBM_SEG_READY:
		return "READY";
	case KVBM_SEG_POISONED:
		return "POISONED";
	}
	return "UNKNOWN";
}

/*
 * Biased handles. The opening thread runs hold operations as the only
 * writer of our holder entries (lib/hold.c) until another thread calls.
 * That thread revokes the bias, a Dekker handshake with the owner's
 * kvbm_st_enter (lib/pool.h), whose side has no fence:
 *
 *   owner:   st_busy = 1; compiler barrier; r = st_revoke; (fast if !r)
 *   revoker: st_revoke = 1; membarrier(); wait until st_busy == 0
 *
 * MEMBARRIER_CMD_PRIVATE_EXPEDITED runs a full barrier on every CPU that
 * runs one of our threads, which makes the owner's compiler barrier a
 * fence for this pairing (liburcu's memb flavour): either the owner sees
 * the request and takes the shared paths, or the revoker sees it busy and
 * waits for its release of st_busy, after which every later owner
 * operation sees the request. Then the handle is SHARED for good.
 */
static int membarrier(int cmd)
{
	return (int)syscall(__NR_membarrier, cmd, 0u, 0);
}

int kvbm_seg_bias(struct kvbm_seg *seg)
{
	/* per open, not once: a forked child has a fresh registration */
	if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0)
		return -errno; /* (seccomp, old kernel): the handle stays SHARED */
	seg->thread = pthread_self();
	seg->one_thread = KVBM_SEG_ST_BIASED;
	return 0;
}

static __attribute__((noinline)) int seg_unbias(struct kvbm_seg *seg)
{
	/* every revoker runs all of it: idempotent, so several may race */
	__atomic_store_n(&seg->st_revoke, 1, __ATOMIC_SEQ_CST);
	if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0)
		return KVBM_ETHREAD; /* refused after the registration succeeded: never seen */
	/* acquire: pairs with the owner's release in kvbm_st_leave; its
	 * plain entry updates happen before our atomic ones */
	for (unsigned spins = 0; __atomic_load_n(&seg->st_busy, __ATOMIC_ACQUIRE); spins++) {
		if (spins > 1000)
			sched_yield(); /* the owner was preempted inside one */
		else
			__builtin_ia32_pause();
	}
	__atomic_store_n(&seg->one_thread, KVBM_SEG_ST_SHARED, __ATOMIC_RELEASE);
	return 0;
}

int kvbm_seg_check(struct kvbm_seg *seg)
{
	if (__atomic_load_n(&kvbm_fork_gen, __ATOMIC_RELAXED) != seg->fork_gen)
		return KVBM_EFORKED;
	/* the one-writer hold paths rely on it (hold.c): checked, not trusted.
	 * Relaxed: only a revoker changes it, and only a thread other than
	 * @thread may find it changed */
	int st = __atomic_load_n(&seg->one_thread, __ATOMIC_RELAXED);
	if (st != KVBM_SEG_ST_SHARED && !pthread_equal(pthread_self(), seg->thread)) {
		if (st == KVBM_SEG_ST_FIXED)
			return KVBM_ETHREAD;
		int r = seg_unbias(seg);
		if (r < 0)
			return r;
	}
	/* acquire: pairs with the release store of POISONED in mutex.c */
	if (__atomic_load_n(&seg->hdr->state, __ATOMIC_ACQUIRE) == KVBM_SEG_POISONED)
		return KVBM_EPOISONED;
	return kvbm_seg_check_entry(seg);
}

int kvbm_seg_check_entry(const struct kvbm_seg *seg)
{
	if (seg->self >= KVBM_MAX_PROCS)
		return 0; /* not attached (yet) */
	const struct kvbm_shm_proc *e = &seg->procs[seg->self];
	/* relaxed: a reaper frees or re-claims our entry under the mutex;
	 * it did so on a wrong proof, or a peer wrote it. Either way our
	 * holder table and bit may be someone else's now: refuse every call
	 * rather than write into an entry that is no longer ours. A reap
	 * that races this call is caught by the next one */
	if (__atomic_load_n(&e->state, __ATOMIC_RELAXED) != KVBM_PROC_ACTIVE ||
	    __atomic_load_n(&e->attach_gen, __ATOMIC_RELAXED) != seg->attach_gen)
		return KVBM_EREAPED;
	return 0;
}

/* Same inode at @path as behind @fd? Guards against a name that was
 * destroyed (or destroyed and re-created) while we waited for a lock. */
static int same_file(int fd, const char *path)
{
	struct stat a, b;

	if (fstat(fd, &a) < 0 || stat(path, &b) < 0)
		return 0;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/*
 * Whether a segment file owned by @uid may be used: the caller's, root's
 * (who could do anything to us anyway), or the owner the caller's own
 * config names. Anyone else may have created the name in a world-writable
 * directory before us, or prepared the bytes we would map; the owner
 * recorded in the header is theirs to write, so it proves nothing.
 */
static int owner_trusted(uid_t uid, const struct kvbm_shm_config *cfg)
{
	return uid == geteuid() || uid == 0 ||
	       (cfg && cfg->uid != UINT32_MAX && uid == (uid_t)cfg->uid);
}

static int check_owner(int fd, const struct kvbm_shm_config *cfg)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	return owner_trusted(st.st_uid, cfg) ? 0 : KVBM_EOWNER;
}

/* A file whose mode grants more than @mode (what the pool was configured
 * with) was widened behind the creator's back: whoever gained access
 * could write the live pool. Narrower is fine. */
static int check_mode(int fd, uint32_t mode)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	return (st.st_mode & 0777 & ~mode) ? KVBM_EMODE : 0;
}

/*
 * Gives a file we created or re-initialise the configured owner, group
 * and mode (open() applied the umask, and a leftover may have another
 * mode). chmod last: chown may clear mode bits. -EPERM when the file is
 * not ours to change (a trusted owner's leftover we may only write).
 */
static int apply_owner_mode(int fd, const struct kvbm_shm_config *cfg)
{
	uid_t uid = cfg->uid == UINT32_MAX ? (uid_t)-1 : (uid_t)cfg->uid;
	gid_t gid = cfg->gid == UINT32_MAX ? (gid_t)-1 : (gid_t)cfg->gid;

	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) < 0)
		return -errno;
	return fchmod(fd, cfg->mode) < 0 ? -errno : 0;
}

/*
 * Inode of our PID namespace, 0 when /proc cannot tell (not mounted): the
 * check is then skipped, as for a segment that recorded none. Namespace
 * inodes are 32-bit (the kernel's proc_inum), so the header keeps 32.
 */
static uint32_t pidns_inode(void)
{
	struct stat st;

	return stat("/proc/self/ns/pid", &st) == 0 ? (uint32_t)st.st_ino : 0;
}

static int read_header(int fd, struct kvbm_shm_header *hdr, uint64_t *file_size)
{
	struct stat st;
	ssize_t n;

	if (fstat(fd, &st) < 0)
		return -errno;
	*file_size = (uint64_t)st.st_size;
	memset(hdr, 0, sizeof(*hdr));
	n = pread(fd, hdr, sizeof(*hdr), 0);
	if (n < 0)
		return -errno;
	return 0;
}

/* Whether transparent hugepages can back files in directory @dir. */
static int thp_available(const char *dir)
{
	char buf[512], best_opts[512] = "";
	size_t best_len = 0;
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");

	if (f) {
		char *s = fgets(buf, sizeof(buf), f);
		fclose(f);
		if (s && strstr(buf, "[deny]"))
			return 0;
		if (s && strstr(buf, "[force]"))
			return 1;
	}
	/* otherwise the tmpfs mount's own huge= option decides */
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return 0;
	while (fgets(buf, sizeof(buf), f)) {
		char mnt[256], fstype[64], opts[256];
		char *sep = strstr(buf, " - ");

		if (!sep || sscanf(buf, "%*s %*s %*s %*s %255s", mnt) != 1 ||
		    sscanf(sep + 3, "%63s %*s %255s", fstype, opts) != 2)
			continue;
		size_t l = strlen(mnt);
		if (strncmp(dir, mnt, l) != 0 || (dir[l] != '/' && dir[l] != '\0' && l != 1))
			continue;
		if (l >= best_len) {
			best_len = l;
			snprintf(best_opts, sizeof(best_opts), "%s %s", fstype, opts);
		}
	}
	fclose(f);
	return strncmp(best_opts, "tmpfs ", 6) == 0 &&
	       (strstr(best_opts, "huge=always") || strstr(best_opts, "huge=within_size") ||
		strstr(best_opts, "huge=advise"));
}

/* Points into the mapping by the region table of @h, a header already
 * validated (a copy the caller holds, or one it just wrote), and keeps its
 * config: a peer may rewrite the mapping's header afterwards, and every
 * bound this process walks by must stay the one validated. */
static void seg_set_regions(struct kvbm_seg *seg, const struct kvbm_shm_header *h)
{
	seg->cfg = h->config;
	seg->ctl = (struct kvbm_shm_control *)(seg->base + h->regions[KVBM_REGION_CONTROL].offset);
	seg->procs = (struct kvbm_shm_proc *)(seg->base + h->regions[KVBM_REGION_PROCS].offset);
	seg->slots = (struct kvbm_shm_slot *)(seg->base + h->regions[KVBM_REGION_SLOTS].offset);
	seg->buckets =
		(struct kvbm_shm_bucket *)(seg->base + h->regions[KVBM_REGION_REGISTRY].offset);
	seg->holders = seg->base + h->regions[KVBM_REGION_HOLDERS].offset;
	seg->metrics =
		(struct kvbm_shm_metrics *)(seg->base + h->regions[KVBM_REGION_METRICS].offset);
	seg->evict = (struct kvbm_shm_evict *)(seg->base + h->regions[KVBM_REGION_EVICT].offset);
	seg->pins = (struct kvbm_shm_pins *)(seg->base + h->regions[KVBM_REGION_PINS].offset);
	seg->tokens = h->regions[KVBM_REGION_TOKENS].size
			      ? (uint32_t *)(seg->base + h->regions[KVBM_REGION_TOKENS].offset)
			      : NULL;
	seg->events = h->regions[KVBM_REGION_EVENTS].size
			      ? (struct kvbm_shm_events *)(seg->base +
							   h->regions[KVBM_REGION_EVENTS].offset)
			      : NULL;
}

/* Every slot RESET (generation 0) on the free list, in block id order: the
 * reference's free list starts as 0..N-1. */
static void init_slots(struct kvbm_seg *seg)
{
	uint32_t n = seg->cfg.block_count;

	for (uint32_t i = 0; i < n; i++) {
		seg->slots[i].next = i + 1 < n ? i + 2 : 0;
		seg->slots[i].prev = i;
		seg->slots[i].list = KVBM_LIST_FREE;
	}
	seg->ctl->free_head = 1;
	seg->ctl->free_tail = n;
	seg->ctl->free_count = n;
	kvbm_evict_init(seg);
	seg->pins->due = UINT64_MAX;
	seg->pins->next_ns = UINT64_MAX;
	seg->pins->cap = kvbm_pin_cap(&seg->cfg);
	if (seg->events) {
		seg->events->cap = 1u << seg->cfg.event_log2;
		seg->events->entry_size = kvbm_event_entry_size(&seg->cfg);
	}
}

void kvbm_evict_init(struct kvbm_seg *seg)
{
	const struct kvbm_shm_config *cfg = &seg->cfg;
	struct kvbm_shm_evict *e = seg->evict;
	struct kvbm_evict_geom g;

	kvbm_evict_geometry(cfg, &g);
	e->sketch_words = g.sketch_words;
	e->sketch_limit = 10ull * g.sketch_words * 4;
	e->lin_nodes = g.nodes;
	e->lin_buckets = g.buckets;
	e->nheap = 0;
	e->nghosts = 0;
	e->orphans = 0;
	e->nreal = 0;
	e->twins = 0;
	e->ghost_free = 0;
	if (!g.nodes)
		return;
	struct kvbm_shm_lnode *nd = (struct kvbm_shm_lnode *)((uint8_t *)e + g.nodes_off);
	memset(nd, 0, (uint64_t)g.nodes * sizeof(*nd));
	memset((uint8_t *)e + g.heads_off, 0, (uint64_t)g.buckets * 4);
	for (uint32_t i = g.nodes; i-- > cfg->block_count;) {
		nd[i].hnext = e->ghost_free;
		e->ghost_free = i + 1;
	}
}

static int map_segment(struct kvbm_seg *seg, uint64_t size, int prot, int populate)
{
	void *p = mmap(NULL, size, prot, MAP_SHARED | (populate ? MAP_POPULATE : 0), seg->fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	seg->base = p;
	seg->size = size;
	seg->hdr = p;
	return 0;
}

static void unmap_segment(struct kvbm_seg *seg)
{
	if (seg->base)
		munmap(seg->base, seg->size);
	seg->base = NULL;
	seg->hdr = NULL;
	seg->ctl = NULL;
	seg->procs = NULL;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Reserves every page now, so a full /dev/shm fails at creation with
 * ENOSPC instead of as SIGBUS in some attacher later. */
static int reserve_small(struct kvbm_seg *seg, uint64_t total)
{
	int r = posix_fallocate(seg->fd, 0, (off_t)total);

	if (r != 0)
		return -r;
	return map_segment(seg, total, PROT_READ | PROT_WRITE, 1);
}

/* Hugepage variant: on a huge=advise tmpfs only a VM_HUGEPAGE mapping gets
 * huge pages, so advise first, then populate through the mapping.
 * MADV_POPULATE_WRITE reports a full tmpfs as an error where touching the
 * pages would raise SIGBUS. */
static int reserve_huge(struct kvbm_seg *seg, uint64_t total)
{
	int r = map_segment(seg, total, PROT_READ | PROT_WRITE, 0);

	if (r < 0)
		return r;
	if (madvise(seg->base, total, MADV_HUGEPAGE) < 0)
		return KVBM_ENOHUGE;
	if (madvise(seg->base, total, MADV_POPULATE_WRITE) < 0)
		return errno == EINVAL ? KVBM_ENOHUGE : -ENOSPC;
	return 0;
}

/*
 * Builds a fresh segment in @seg->fd. Caller holds the init write lock, so
 * no one else reads the file until READY is stored and the lock downgraded.
 * A crash anywhere in here leaves state != READY with the write lock
 * dropped by the kernel: the next opener initialises again.
 */
static int seg_initialize(struct kvbm_seg *seg, const struct kvbm_shm_config *cfg)
{
	struct kvbm_shm_region regions[KVBM_REGION_MAX];
	uint64_t total, id = 0;
	int r;

	r = kvbm_seg_layout(cfg, regions, &total);
	if (r < 0)
		return r;
	if ((cfg->flags & KVBM_CFG_HUGEPAGES) && !thp_available(kvbm_shm_dir()))
		return KVBM_ENOHUGE;
	/* truncate to 0 first: a dead creator's half-written bytes go away */
	if (ftruncate(seg->fd, 0) < 0 || ftruncate(seg->fd, (off_t)total) < 0)
		return -errno;
	r = (cfg->flags & KVBM_CFG_HUGEPAGES) ? reserve_huge(seg, total) : reserve_small(seg, total);
	if (r < 0)
		goto fail;

	struct kvbm_shm_header *h = seg->hdr;
	h->magic = KVBM_SHM_MAGIC;
	h->abi_major = KVBM_ABI_MAJOR;
	h->abi_minor = KVBM_ABI_MINOR;
	h->header_size = sizeof(*h);
	h->layout_hash = kvbm_layout_hash();
	h->segment_size = total;
	h->state = KVBM_SEG_INITIALIZING;
	h->nregions = KVBM_REGION_NUSED;
	h->created_ns = kvbm_now_ns();
	h->creator_pid = (uint32_t)getpid();
	h->pidns = pidns_inode();
	snprintf(h->name, sizeof(h->name), "%s", seg->name);
	h->config = *cfg;
	memcpy(h->regions, regions, sizeof(regions));
	seg_set_regions(seg, h);
	KVBM_FAILPOINT("shm.init.header");

	r = kvbm_mutex_init(&seg->ctl->mutex);
	if (r < 0)
		goto fail;
	init_slots(seg);
	KVBM_FAILPOINT("shm.init.regions");

	while (id == 0) {
		if (getrandom(&id, sizeof(id), 0) != sizeof(id)) {
			r = -errno;
			goto fail;
		}
	}
	h->instance_id = id;
	/* release: every initialising store above is visible to whoever
	 * acquire-loads READY (attachers also synchronise through the lock) */
	__atomic_store_n(&h->state, KVBM_SEG_READY, __ATOMIC_RELEASE);
	KVBM_FAILPOINT("shm.init.ready");
	seg->initialized_by_me = 1;
	return 0;
fail:
	unmap_segment(seg);
	return r;
}

/* Maps a READY segment whose init lock we hold (read or write). */
static int seg_attach_map(struct kvbm_seg *seg)
{
	struct kvbm_shm_header hdr;
	uint64_t fsize;
	int r;

	r = read_header(seg->fd, &hdr, &fsize);
	if (r < 0)
		return r;
	r = kvbm_seg_check_header(&hdr, fsize);
	if (r < 0)
		return r;
	r = kvbm_seg_check_state(hdr.state);
	if (r < 0)
		return r;
	r = check_mode(seg->fd, hdr.config.mode);
	if (r < 0)
		return r;
	/* pids and start times in the process table are the creator's
	 * namespace's: from another one every peer would look dead to us,
	 * and we to them */
	uint32_t ns = pidns_inode();
	if (hdr.pidns && ns && hdr.pidns != ns)
		return KVBM_EPIDNS;
	int huge = (hdr.config.flags & KVBM_CFG_HUGEPAGES) != 0;
	r = map_segment(seg, hdr.segment_size, PROT_READ | PROT_WRITE, !huge);
	if (r < 0)
		return r;
	/* truncated since we read the size: touching the header would fault */
	r = kvbm_seg_check_size(seg);
	if (r < 0) {
		unmap_segment(seg);
		return r;
	}
	if (huge) {
		/* advise before faulting, or the mapping gets small PTEs */
		(void)madvise(seg->base, seg->size, MADV_HUGEPAGE);
		(void)madvise(seg->base, seg->size, MADV_POPULATE_WRITE);
	}
	/* re-check on the mapping, through a copy: the header we validated is
	 * the one we use, whatever a peer writes into the mapping's meanwhile */
	struct kvbm_shm_header copy;
	memcpy(&copy, seg->hdr, sizeof(copy));
	r = kvbm_seg_check_header(&copy, fsize);
	if (r == 0)
		r = kvbm_seg_check_state(__atomic_load_n(&seg->hdr->state, __ATOMIC_ACQUIRE));
	if (r < 0) {
		unmap_segment(seg);
		return r;
	}
	seg_set_regions(seg, &copy);
	return 0;
}

/* Opens the file; *created tells whether this call created it. */
static int open_file(struct kvbm_seg *seg, const struct kvbm_shm_config *cfg, unsigned flags,
		     int *created)
{
	int fd;

	*created = 0;
	if (flags & KVBM_OPEN_CREATE) {
		/* O_EXCL: a file we did not create is never taken for ours;
		 * O_NOFOLLOW: nor is a link to someone else's file */
		fd = open(seg->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
			  cfg->mode);
		if (fd >= 0) {
			*created = 1;
			int e = apply_owner_mode(fd, cfg);
			if (e < 0) {
				unlink(seg->path);
				close(fd);
				return e;
			}
			return fd;
		}
		if (errno != EEXIST)
			return -errno;
		if (flags & KVBM_OPEN_EXCL)
			return -EEXIST;
	}
	/* someone else's creation, or a leftover: usable only if a user we
	 * trust made it, before we lock, read or (re-)initialise anything */
	fd = open(seg->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	int r = (flags & KVBM_OPEN_ANY_OWNER) ? 0 : check_owner(fd, cfg);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

/*
 * We hold the init write lock: nobody is attached. Adopt a READY segment,
 * or (with CREATE) initialise an empty one or one a dead creator left
 * INITIALIZING. Returns 0 still holding the write lock, -EAGAIN to retry
 * later (attach-only opener on a segment nobody has initialised yet), or an
 * error.
 */
static int seg_sole_open(struct kvbm_seg *seg, const struct kvbm_shm_config *cfg, unsigned flags)
{
	struct kvbm_shm_header hdr;
	uint64_t fsize;
	int r;

	r = read_header(seg->fd, &hdr, &fsize);
	if (r < 0)
		return r;
	if (hdr.magic == KVBM_SHM_MAGIC && hdr.state == KVBM_SEG_READY)
		return seg_attach_map(seg);
	if (hdr.magic == KVBM_SHM_MAGIC && hdr.state == KVBM_SEG_POISONED)
		return KVBM_EPOISONED;
	if (hdr.magic != KVBM_SHM_MAGIC && hdr.magic != 0)
		return KVBM_EBADMAGIC; /* not ours: never overwrite it */
	if (!(flags & KVBM_OPEN_CREATE) || !cfg)
		return -EAGAIN;
	/* a dead creator's leftover (EMPTY or INITIALIZING) becomes the pool
	 * we were asked for: our owner and mode, or, when a trusted owner's
	 * file is not ours to chmod, no wider than asked */
	r = apply_owner_mode(seg->fd, cfg);
	if (r == -EPERM)
		r = check_mode(seg->fd, cfg->mode);
	if (r < 0)
		return r;
	r = seg_initialize(seg, cfg);
	if (r < 0 && same_file(seg->fd, seg->path)) {
		/* leave no unusable file behind; openers queued on it notice
		 * the unlink through same_file() and start over */
		unlink(seg->path);
	}
	return r;
}

/* Polls for the init read lock until @deadline (ms, monotonic). */
static int wait_read_lock(int fd, uint64_t deadline)
{
	struct timespec ts = {0, 200000};

	for (;;) {
		int r = kvbm_ofd_trylock(fd, KVBM_LOCK_INIT_BYTE, F_RDLCK);
		if (r != -EAGAIN)
			return r;
		if (mono_ms() >= deadline)
			return -ETIMEDOUT;
		nanosleep(&ts, NULL);
		if (ts.tv_nsec < 8000000)
			ts.tv_nsec *= 2;
	}
}

static int seg_open_once(struct kvbm_seg *seg, const struct kvbm_shm_config *cfg,
			 unsigned flags, uint64_t deadline)
{
	int created, r;

	r = open_file(seg, cfg, flags, &created);
	if (r < 0)
		return r;
	seg->fd = r;

	r = kvbm_ofd_trylock(seg->fd, KVBM_LOCK_INIT_BYTE, F_WRLCK);
	if (r == 0) {
		if (!same_file(seg->fd, seg->path))
			return -EAGAIN;
		r = seg_sole_open(seg, cfg, flags);
		if (r < 0)
			return r;
		/* downgrade write -> read: atomic for one open file description */
		return kvbm_ofd_trylock(seg->fd, KVBM_LOCK_INIT_BYTE, F_RDLCK);
	}
	if (r != -EAGAIN)
		return r;

	/* someone is attached, or a creator is initialising: queue */
	r = wait_read_lock(seg->fd, deadline);
	if (r < 0)
		return r == -ETIMEDOUT ? KVBM_EINITIALIZING : r;
	if (!same_file(seg->fd, seg->path))
		return -EAGAIN;
	r = seg_attach_map(seg);
	/* not READY although nobody holds the write lock: its creator died */
	return r == KVBM_EINITIALIZING ? -EAGAIN : r;
}

int kvbm_seg_open(struct kvbm_seg *seg, const char *name, const struct kvbm_shm_config *cfg,
		  unsigned flags, unsigned timeout_ms)
{
	uint64_t deadline = mono_ms() + timeout_ms;
	struct timespec pause = {0, 1000000};
	int r;

	memset(seg, 0, sizeof(*seg));
	seg->fd = -1;
	seg->self = UINT32_MAX;
	kvbm_mutex_hold_to(seg, seg->hold_scratch);
	seg->mutex_kind = kvbm_mutex_kind();
	pthread_once(&atfork_once, register_atfork);
	r = kvbm_seg_path(name, seg->path, sizeof(seg->path), seg->name, 0);
	if (r < 0)
		return r;
	if ((flags & KVBM_OPEN_CREATE) && !cfg)
		return -EINVAL;
	/* any local user could read or write the live pool: only on request */
	if ((flags & KVBM_OPEN_CREATE) && (cfg->mode & 0007) &&
	    !(cfg->flags & KVBM_CFG_ALLOW_OTHERS))
		return KVBM_EOTHERS;
	seg->pid = getpid();
	seg->fork_gen = __atomic_load_n(&kvbm_fork_gen, __ATOMIC_RELAXED);

	for (;;) {
		r = seg_open_once(seg, cfg, flags, deadline);
		if (r != -EAGAIN)
			break;
		/* the file was replaced, or no creator has finished it yet */
		kvbm_seg_close(seg);
		if (mono_ms() >= deadline) {
			r = KVBM_EINITIALIZING;
			break;
		}
		nanosleep(&pause, NULL);
	}
	if (r < 0) {
		kvbm_seg_close(seg);
		return r;
	}
	return 0;
}

int kvbm_seg_open_ro(struct kvbm_seg *seg, const char *name, struct kvbm_shm_header *hdr_copy,
		     int *valid)
{
	uint64_t fsize;
	int r;

	memset(seg, 0, sizeof(*seg));
	seg->self = UINT32_MAX;
	kvbm_mutex_hold_to(seg, seg->hold_scratch);
	seg->read_only = 1;
	r = kvbm_seg_path(name, seg->path, sizeof(seg->path), seg->name, 1);
	if (r < 0)
		return r;
	seg->fd = open(seg->path, O_RDONLY | O_CLOEXEC);
	if (seg->fd < 0)
		return -errno;
	r = read_header(seg->fd, hdr_copy, &fsize);
	if (r < 0) {
		kvbm_seg_close(seg);
		return r;
	}
	*valid = kvbm_seg_check_header(hdr_copy, fsize);
	if (*valid == 0) {
		r = map_segment(seg, fsize, PROT_READ, 0);
		if (r < 0) {
			kvbm_seg_close(seg);
			return r;
		}
		seg_set_regions(seg, hdr_copy);
	}
	return 0;
}

void kvbm_seg_close(struct kvbm_seg *seg)
{
	unmap_segment(seg);
	if (seg->fd >= 0)
		close(seg->fd);
	seg->fd = -1;
}

/* Whether the file starts with our magic: a pool of any ABI, in any state
 * or damage, but not an empty file nor anyone else's bytes. */
static int is_pool_file(int fd)
{
	uint64_t magic = 0;

	return pread(fd, &magic, sizeof(magic), 0) == sizeof(magic) && magic == KVBM_SHM_MAGIC;
}

int kvbm_seg_destroy(const char *name, unsigned flags)
{
	char path[PATH_MAX], bare[KVBM_NAME_MAX + 1];
	int fd, r;

	r = kvbm_seg_path(name, path, sizeof(path), bare, 0);
	if (r < 0)
		return r;
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ELOOP) {
		/* a symbolic link is no pool; forced, the link goes, never
		 * what it points to */
		if (!(flags & KVBM_DESTROY_FORCE))
			return KVBM_EBADMAGIC;
		return unlink(path) < 0 ? -errno : 0;
	}
	if (fd < 0)
		return -errno;
	/* the name may hold anything (a squatter's file, someone's data):
	 * remove only a pool, whatever its version or damage, unless forced */
	if (!(flags & KVBM_DESTROY_FORCE) && !is_pool_file(fd)) {
		close(fd);
		return KVBM_EBADMAGIC;
	}
	/* holding the init write lock proves no one is attached, and keeps
	 * anyone from attaching until the name is gone */
	r = kvbm_ofd_trylock(fd, KVBM_LOCK_INIT_BYTE, F_WRLCK);
	if (r == -EAGAIN && !(flags & KVBM_DESTROY_FORCE)) {
		close(fd);
		return -EBUSY;
	}
	if (r < 0 && r != -EAGAIN) {
		close(fd);
		return r;
	}
	r = unlink(path) < 0 ? -errno : 0;
	close(fd);
	return r;
}

int kvbm_seg_check_size(const struct kvbm_seg *seg)
{
	struct stat st;

	if (fstat(seg->fd, &st) < 0)
		return -errno;
	return (uint64_t)st.st_size == seg->size ? 0 : KVBM_ETRUNCATED;
}

void kvbm_seg_inflight(const struct kvbm_seg *seg, int64_t *mut, int64_t *imm)
{
	const struct kvbm_shm_config *cfg = &seg->cfg;
	int64_t m = 0, h = 0;

	for (uint32_t s = 0; s < cfg->block_count; s++)
		m += kvbm_slot_state(__atomic_load_n(&seg->slots[s].state, __ATOMIC_RELAXED)) ==
		     KVBM_SLOT_MUTABLE;
	for (uint32_t p = 0; p < cfg->max_procs; p++) {
		const kvbm_hold_t *t =
			(const kvbm_hold_t *)(seg->holders + (uint64_t)p * kvbm_holder_stride(cfg));
		for (uint32_t s = 0; s < cfg->block_count; s++)
			h += __atomic_load_n(&t[s], __ATOMIC_RELAXED) & KVBM_HOLD_COUNT;
	}
	*mut = m;
	*imm = h;
}
