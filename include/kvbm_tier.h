/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvbm_tier.h - working across a node's tiers: one pool per tier (G1
 * device, G2 host, G3 disk, G4 external; kvbm_config.tier), all attached
 * by the same process.
 *
 *  - kvbm_tiers_presence  which tiers hold each hash of a batch, in one call;
 *  - kvbm_onboard_*       an onboarding plan: the blocks of a request that
 *                         a lower tier (G2) has and the upper one (G1)
 *                         lacks, each paired with an upper-tier destination
 *                         block, all held while the caller copies the bytes;
 *                         completing registers the destinations, aborting
 *                         gives everything back.
 *
 * Conventions are kvbm.h's: 0 or a count on success, a negative code on
 * failure (kvbm_strerror() names it), and a call that fails changes
 * nothing. A plan is process-local and not thread-safe (one scheduler
 * thread); what it holds is held by this process in each pool, so a
 * process that dies with a plan open leaks nothing: the pools' reaping
 * gives its holds and blocks back as for any dead attacher.
 */
#ifndef KVBM_TIER_H
#define KVBM_TIER_H

#include "kvbm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most pools kvbm_tiers_presence() takes: one bit each in a byte. */
#define KVBM_TIERS_MAX 8

/*
 * For each of the @n hashes, @mask[i] gets bit j set when @pools[j] has
 * @hashes[i] registered (active or inactive), as kvbm_check_presence()
 * would say; bits from @npools up are 0. Lock-free, takes no hold, touches
 * no frequency. A snapshot: another process may evict or register a hash
 * right after. Returns how many hashes at least one pool holds, or:
 * -EINVAL (NULL @pools, a NULL pool, @npools 0 or past KVBM_TIERS_MAX,
 * NULL @hashes or @mask with @n > 0), and the handle errors of any pool.
 */
KVBM_API long kvbm_tiers_presence(struct kvbm_pool *const *pools, size_t npools,
				  const struct kvbm_plh *hashes, size_t n, uint8_t *mask);

/* One copy of an onboarding: the block of sequence position @position
 * (hash @hash) is read from @src (a hold in the source pool) into @dst (a
 * MUTABLE block of the destination pool, this process's). Their ids are
 * indices into the caller's own storage of each tier. */
struct kvbm_onboard_pair {
	size_t position;
	struct kvbm_plh hash;
	struct kvbm_block src;
	struct kvbm_block dst;
};

struct kvbm_onboard;

/*
 * Plans the onboarding of a request whose complete blocks have the chained
 * PLHs @hashes[0..n) (position i at index i, e.g. kvbm_bseq_sequence_hashes)
 * from @src (G2) into @dst (G1):
 *  1. the prefix @dst already has is matched (holds: "matched");
 *  2. from there, the prefix @src has is matched (holds: the sources);
 *  3. as many @dst blocks are allocated (MUTABLE: the destinations), all
 *     or nothing;
 * and the sources are paired with the destinations by position
 * (kvbm_zip_assigned_pending of the two sides' assignments). Nothing of
 * either side can be evicted until the plan completes or aborts. The plan
 * covers the longest prefix the two tiers serve together, @dst's then
 * @src's: a position neither has ends it. A plan with no pair is valid.
 * Returns 0 and *@out, or: -EINVAL (a NULL argument, @src == @dst, NULL
 * @hashes with @n > 0, a hash whose position is not its index),
 * KVBM_EFOREIGN (the two handles attach the same pool), KVBM_ESIZE (the
 * pools' block sizes differ), -ENOSPC (@dst cannot give that many blocks
 * now: nothing is held), -ENOMEM, and the errors of kvbm_match_blocks()
 * and kvbm_allocate_blocks() on either pool (nothing is held).
 */
KVBM_API int kvbm_onboard_plan(struct kvbm_pool *dst, struct kvbm_pool *src,
			       const struct kvbm_plh *hashes, size_t n,
			       struct kvbm_onboard **out);
/* Blocks @dst already had (positions 0 .. matched-1). */
KVBM_API size_t kvbm_onboard_matched(const struct kvbm_onboard *o);
/* Copies to make (positions matched .. matched+count-1). */
KVBM_API size_t kvbm_onboard_count(const struct kvbm_onboard *o);
/* 1 and copy @i into *@out, or 0 past the last (or once completed or
 * aborted). */
KVBM_API int kvbm_onboard_get(const struct kvbm_onboard *o, size_t i,
			      struct kvbm_onboard_pair *out);
/*
 * After the caller copied every pair's bytes: stages and registers the
 * destinations under their hashes (with their token ids for @dst's STORED
 * events: @tokens holds the request's tokens from position 0, at least
 * (matched + count) x block_size of them; NULL: none), and drops the source
 * holds. The request's @dst blocks, positions 0 .. matched+count-1 (the
 * matched holds, then the registered destinations: under KVBM_DUP_REJECT a
 * destination whose hash another process registered meanwhile comes back
 * as that primary), become the caller's holds in @blks (room for @max);
 * with @blks NULL they are released (cached, inactive). Returns matched +
 * count, or: -EINVAL (NULL @o), KVBM_ESTATE (completed or aborted
 * already), -ERANGE (@max too small), and the errors of
 * kvbm_stage_blocks() and kvbm_register_blocks() (the plan is unchanged:
 * abort it, or retry).
 */
KVBM_API long kvbm_onboard_complete(struct kvbm_onboard *o, const uint32_t *tokens,
				    struct kvbm_block *blks, size_t max);
/* Gives every hold and block of the plan back (a plan already completed or
 * aborted: nothing). Returns 0 or the first release error (the others are
 * still released). */
KVBM_API int kvbm_onboard_abort(struct kvbm_onboard *o);
/* Aborts if still open, then frees. */
KVBM_API void kvbm_onboard_free(struct kvbm_onboard *o);

#ifdef __cplusplus
}
#endif
#endif /* KVBM_TIER_H */
