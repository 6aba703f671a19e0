/* SPDX-License-Identifier: Apache-2.0 */
/*
 * error.c - kvbm_strerror(): one description per return code.
 */
#define _GNU_SOURCE
#include <string.h>

#include "kvbm.h"

static const char *const own_errors[] = {
	[-(KVBM_EBADMAGIC - KVBM_EBASE)] = "not a kvbm pool segment (bad magic)",
	[-(KVBM_EABI - KVBM_EBASE)] = "segment built for another ABI version",
	[-(KVBM_ELAYOUT - KVBM_EBASE)] = "segment layout differs from this build (layout hash)",
	[-(KVBM_ETRUNCATED - KVBM_EBASE)] = "segment file size differs from its header (truncated?)",
	[-(KVBM_EINITIALIZING - KVBM_EBASE)] =
		"segment not initialised (creator busy or died; open with create to re-initialise)",
	[-(KVBM_EPOISONED - KVBM_EBASE)] =
		"segment poisoned after a failed repair; destroy and re-create it",
	[-(KVBM_EPROCFULL - KVBM_EBASE)] = "process table full (max_procs attached)",
	[-(KVBM_EFORKED - KVBM_EBASE)] =
		"handle used in a forked child; open the pool again in the child",
	[-(KVBM_ECORRUPT - KVBM_EBASE)] = "segment header or region table is corrupt",
	[-(KVBM_EMISMATCH - KVBM_EBASE)] = "pool exists with a different configuration",
	[-(KVBM_ENOHUGE - KVBM_EBASE)] =
		"hugepages unavailable for the segment directory (tmpfs needs huge=advise)",
	[-(KVBM_ESTALE - KVBM_EBASE)] = "stale handle (its slot or attachment was recycled)",
	[-(KVBM_EFOREIGN - KVBM_EBASE)] = "handle belongs to another pool",
	[-(KVBM_ENAME - KVBM_EBASE)] =
		"invalid pool name (1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.')",
	[-(KVBM_EDEADLK - KVBM_EBASE)] = "this thread already holds the pool mutex",
	[-(KVBM_ENOTHELD - KVBM_EBASE)] =
		"block not held by this process (released twice?)",
	[-(KVBM_ESIZE - KVBM_EBASE)] = "token count differs from the pool's block size",
	[-(KVBM_ESTATE - KVBM_EBASE)] = "block is in the wrong state for this operation",
	[-(KVBM_ENOTOWNER - KVBM_EBASE)] = "mutable or staged block of another process",
	[-(KVBM_EUNIQUE - KVBM_EBASE)] = "type already registered as unique attachment",
	[-(KVBM_EMULTIPLE - KVBM_EBASE)] = "type already registered as multiple attachment",
	[-(KVBM_ETHREAD - KVBM_EBASE)] =
		"handle opened with KVBM_OPEN_ONE_THREAD used by another thread",
	[-(KVBM_EOWNER - KVBM_EBASE)] =
		"segment file is owned by another user (squatted?): only the caller's, root's or "
		"the configured owner's (kvbm_config.uid) are trusted; remove it as root",
	[-(KVBM_EMODE - KVBM_EBASE)] =
		"segment file's mode grants more access than the pool was created with "
		"(chmod'ed?); restore it with chmod or re-create the pool",
	[-(KVBM_EOTHERS - KVBM_EBASE)] =
		"mode gives users outside the owner and group access to the pool; use 0600 or 0660, "
		"or force with KVBM_CFG_ALLOW_OTHERS (kvbm-pool create --allow-others)",
	[-(KVBM_EPIDNS - KVBM_EBASE)] =
		"caller is in another PID namespace than the pool's creator (every peer would look "
		"dead); attach from the creator's namespace",
	[-(KVBM_EREAPED - KVBM_EBASE)] =
		"this process's attachment was reaped (declared dead by a peer); close and open "
		"the pool again",
	[-(KVBM_EGAP - KVBM_EBASE)] =
		"events were overwritten before this reader read them (it fell behind the ring); "
		"resync with kvbm_events_snapshot()",
	[-(KVBM_EORDER - KVBM_EBASE)] =
		"block id ordering violation: an id already known came after a new one (pass "
		"the request's full ordered id list)",
	[-(KVBM_EPOSITION - KVBM_EBASE)] = "a block's hash position is not its sequence position",
	[-(KVBM_EDUPID - KVBM_EBASE)] = "block id already present in the assignments, or given twice",
	[-(KVBM_EHASHMISMATCH - KVBM_EBASE)] =
		"a matched block's sequence hash is not the one expected at its position",
	[-(KVBM_ENOTIDLE - KVBM_EBASE)] = "sequence is not Idle: apply or revert its schedule first",
	[-(KVBM_EOVERRUN - KVBM_EBASE)] = "prefill chunk goes past the end of the prompt",
	[-(KVBM_EPREFILLDONE - KVBM_EBASE)] = "prefill already complete",
	[-(KVBM_EPREFILLPENDING - KVBM_EBASE)] = "prefill not yet complete",
	[-(KVBM_EGENDONE - KVBM_EBASE)] = "generation complete: max_output_tokens reached",
	[-(KVBM_EDANGLING - KVBM_EBASE)] =
		"decode needs exactly one token whose KV is not yet computed",
	[-(KVBM_ESEQSTATE - KVBM_EBASE)] = "sequence is in the wrong schedule state for this call",
	[-(KVBM_ETOKENCHUNK - KVBM_EBASE)] = "token provided but prefill not completing this chunk",
	[-(KVBM_ENOTOKEN - KVBM_EBASE)] = "final prefill chunk requires a generated token",
	[-(KVBM_EACCEPTED - KVBM_EBASE)] = "more tokens accepted than were scheduled as drafts",
	[-(KVBM_EAPPEND - KVBM_EBASE)] = "append exceeds the tokens left to generate",
	[-(KVBM_EPINSHARE - KVBM_EBASE)] =
		"pinning these blocks would pass the pool's pin share (kvbm_config.pin_share)",
	[-(KVBM_ENOTREG - KVBM_EBASE)] = "a hash to pin is not registered in the pool",
	[-(KVBM_EHINT - KVBM_EBASE)] =
		"release hint is not one of KVBM_HINT_NONE, KVBM_HINT_CONTINUES, KVBM_HINT_ONESHOT",
};

const char *kvbm_strerror(int err)
{
	if (err == 0)
		return "success";
	if (err < 0 && err > -4096) {
		/* strerrordesc_np: static strings, thread-safe unlike strerror */
		const char *s = strerrordesc_np(-err);
		return s ? s : "unknown error";
	}
	if (err < KVBM_EBASE && err > KVBM_ELAST) {
		const char *s = own_errors[-(err - KVBM_EBASE)];
		if (s)
			return s;
	}
	return "unknown kvbm error";
}

const char *kvbm_version(void)
{
#define STR2(x) #x
#define STR(x) STR2(x)
	return STR(KVBM_VERSION_MAJOR) "." STR(KVBM_VERSION_MINOR) "." STR(KVBM_VERSION_PATCH);
}
