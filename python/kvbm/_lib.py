# SPDX-License-Identifier: Apache-2.0
"""libkvbm through ctypes: finding the library, its structs, its signatures.

Everything here mirrors include/kvbm.h; python/tests/test_binding_layout.py
compiles a C program that prints the C sizes and offsets and compares them
with these Structures, so a header change that is not carried over fails
a test instead of corrupting memory.

A `struct kvbm_plh` passed by value is declared as two uint64 arguments
(hi, lo): on x86-64 System V, the only target libkvbm builds for, a
16-byte struct of two INTEGER eightbytes travels in two registers exactly
like two uint64 arguments, and ctypes then needs no Structure object per
call (the stage loop makes one call per block).
"""

import ctypes
import os
from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_int, c_int64, c_long,
                    c_size_t, c_uint, c_uint8, c_uint32, c_uint64, c_void_p)

u32 = c_uint32
u64 = c_uint64


def _candidates():
    env = os.environ.get("KVBM_LIB")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    # the build tree: python/kvbm -> build/lib
    out.append(os.path.join(here, "..", "..", "build", "lib", "libkvbm.so.0"))
    # installed: PREFIX/lib/python3*/{dist,site}-packages/kvbm -> PREFIX/lib
    out.append(os.path.join(here, "..", "..", "..", "libkvbm.so.0"))
    out.append("libkvbm.so.0")  # the system's loader path
    return out


def _load():
    errors = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            errors.append("%s: not found" % os.path.normpath(path))
            continue
        try:
            # CDLL: every call releases the GIL. Calls may take the pool's
            # process-shared mutex, and check() calls back into Python under
            # it: a thread holding the GIL while it waits for that mutex
            # (PyDLL) could deadlock against such a callback.
            return ctypes.CDLL(os.path.normpath(path) if os.sep in path else path), path
        except OSError as e:
            errors.append(str(e))
    raise ImportError("kvbm: cannot load libkvbm (set KVBM_LIB to its path, or run `make`):\n  "
                      + "\n  ".join(errors))


lib, lib_path = _load()
# Calls that never wait for the pool mutex and never call back (hashing,
# strerror, staging: a stripe spinlock held for a few stores) keep the GIL,
# which saves its release and re-acquisition (~30 ns) on the per-block
# stage loop.
plib = ctypes.PyDLL(lib._name)


class Plh(Structure):
    _fields_ = [("hi", u64), ("lo", u64)]


class BlockHashes(Structure):
    _fields_ = [("block_hash", u64), ("seq_hash", u64), ("plh", Plh)]


class Block(Structure):
    _fields_ = [("pool", u64), ("id", u32), ("gen", u64)]


class OnboardPair(Structure):
    _fields_ = [("position", c_size_t), ("hash", Plh), ("src", Block), ("dst", Block)]


class Config(Structure):
    _fields_ = [("block_count", u32), ("block_size", u32), ("max_procs", u32), ("mode", u32),
                ("gid", c_int64), ("flags", u32), ("open_timeout_ms", u32),
                ("dup_policy", u32), ("backend", u32), ("reset_on_release", u32),
                ("tier", c_char * 16), ("mlru_thresholds", c_uint8 * 3), ("tinylfu", u32),
                ("uid", c_int64), ("event_ring", u32), ("pin_share", u32)]


class PoolInfo(Structure):
    _fields_ = [("name", c_char * 129), ("instance_id", u64), ("segment_size", u64),
                ("config", Config), ("proc_index", u32), ("procs_attached", u32),
                ("attach_gen", u64), ("initialized_by_me", c_int), ("recoveries", u64)]


class BlockInfo(Structure):
    _fields_ = [("state", u32), ("primary", c_int), ("inactive", c_int),
                ("reset_on_release", c_int), ("holds", u32), ("holder_procs", u32),
                ("hash", Plh)]


# enum kvbm_release_hint, in order
HINTS = ("none", "continues", "oneshot")


class HintStats(Structure):
    _fields_ = [("reused", u32 * 3), ("unused", u32 * 3), ("boost", u64 * 3),
                ("horizon", u64), ("weight_permille", u32 * 3)]


class Event(Structure):
    _fields_ = [("seq", u64), ("kind", u32), ("ntokens", u32), ("hash", Plh),
                ("tokens", POINTER(u32))]


METRIC_FIELDS = ("allocations", "allocations_from_reset", "evictions", "registrations",
                 "duplicate_blocks", "registration_dedup", "stagings", "match_hashes_requested",
                 "match_blocks_returned", "scan_hashes_requested", "scan_blocks_returned",
                 "eager_primary_to_inactive", "allocate_atomic_rollback",
                 "release_primary_noop", "release_duplicate_noop", "inflight_mutable",
                 "inflight_immutable", "reset_pool_size", "inactive_pool_size", "index_full",
                 "recounts_deferred", "mutex_hold_count", "mutex_hold_ns", "mutex_hold_le",
                 "pins_active", "pinned_blocks", "pin_capacity", "pin_expirations")
# fields that are arrays in struct kvbm_metrics: name -> length
METRIC_ARRAYS = {"mutex_hold_le": 5}
_SIGNED_METRICS = {"inflight_mutable", "inflight_immutable", "reset_pool_size",
                   "inactive_pool_size", "pins_active", "pinned_blocks", "pin_capacity"}


class Metrics(Structure):
    _fields_ = [(f, u64 * METRIC_ARRAYS[f] if f in METRIC_ARRAYS else
                 c_int64 if f in _SIGNED_METRICS else u64) for f in METRIC_FIELDS]


class PinsInfo(Structure):
    _fields_ = [("pins", u32), ("blocks", u32), ("capacity", u32), ("pin_share", u32),
                ("expirations", u64), ("next_expiry_ms", u64)]


class Pinned(Structure):
    _fields_ = [("hash", Plh), ("block", u32), ("tip", c_int), ("remaining_ms", u64)]


class StatsSnapshot(Structure):
    _fields_ = [("t_ns", u64), ("allocation_rate", c_double), ("eviction_rate", c_double),
                ("match_hit_rate", c_double), ("scan_hit_rate", c_double),
                ("allocation_gradient", c_double), ("eviction_gradient", c_double),
                ("inflight_mutable", c_int64), ("inflight_immutable", c_int64),
                ("reset_pool_size", c_int64), ("inactive_pool_size", c_int64)]


REPORT_FN = ctypes.CFUNCTYPE(None, c_char_p, c_void_p)
EVENT_FN = ctypes.CFUNCTYPE(None, POINTER(Event), c_void_p)

P = c_void_p  # every pointer is passed as an address (int) or a ctypes object

_SIGS = {
    # name: (restype, argtypes, keeps the GIL)
    "kvbm_strerror": (c_char_p, [c_int], True),
    "kvbm_version": (c_char_p, [], True),
    "kvbm_backend_name": (c_char_p, [u32], True),
    "kvbm_backend_parse": (c_int, [c_char_p], True),
    "kvbm_config_init": (None, [P], True),
    "kvbm_config_check": (c_int, [P, POINTER(c_char_p)], True),
    "kvbm_pool_open": (c_int, [c_char_p, P, c_uint, POINTER(c_void_p)], False),
    "kvbm_pool_close": (c_int, [P], False),
    "kvbm_pool_destroy": (c_int, [c_char_p, c_uint], False),
    "kvbm_reap": (c_int, [P], False),
    "kvbm_pool_check": (c_long, [P, c_uint, REPORT_FN, P], False),
    "kvbm_pool_info": (c_int, [P, P], False),
    "kvbm_block_hash": (u64, [P, c_size_t, u64], True),
    "kvbm_chain_hash": (u64, [u64, u64], True),
    "kvbm_salt_hash": (u64, [c_char_p, c_char_p], True),
    "kvbm_plh_make": (c_int, [u64, P, u32, P], True),
    "kvbm_plh_extend": (c_int, [u64, u64, u64, P], True),
    "kvbm_plh_position": (u32, [u64, u64], True),
    "kvbm_plh_mode": (c_uint, [u64, u64], True),
    "kvbm_plh_current": (u64, [u64, u64], True),
    "kvbm_plh_parent_fragment": (u64, [u64, u64], True),
    "kvbm_plh_router_hash": (u64, [u64, u64], True),
    "kvbm_plh_to_bytes": (None, [u64, u64, P], True),
    "kvbm_hash_tokens": (c_long, [P, c_size_t, u32, u64, P, c_size_t], True),
    "kvbm_tokens_new": (c_int, [u32, u64, POINTER(c_void_p)], True),
    "kvbm_tokens_free": (None, [P], True),
    "kvbm_tokens_extend": (c_int, [P, P, c_size_t, POINTER(c_size_t), POINTER(c_size_t)],
                           True),
    "kvbm_tokens_total": (c_size_t, [P], True),
    "kvbm_tokens_blocks": (c_size_t, [P], True),
    "kvbm_tokens_block_size": (u32, [P], True),
    "kvbm_tokens_block": (P, [P, c_size_t], True),
    "kvbm_allocate_blocks": (c_int, [P, u32, P, P, POINTER(u32)], False),
    "kvbm_stage_block": (c_int, [P, P, u64, u64, u32], True),
    "kvbm_unstage_block": (c_int, [P, P], True),
    "kvbm_register_blocks": (c_int, [P, P, u32], False),
    "kvbm_register_blocks_tokens": (c_int, [P, P, u32, P], False),
    "kvbm_release_blocks": (c_int, [P, P, u32], False),
    "kvbm_release_blocks_hint": (c_int, [P, P, u32, u32], False),
    "kvbm_hint_stats": (c_int, [P, P], False),
    "kvbm_clone_block": (c_int, [P, P, P], False),
    "kvbm_set_reset_on_release": (c_int, [P, P, c_int], False),
    "kvbm_block_info": (c_int, [P, P, P], False),
    "kvbm_events_head": (c_int, [P, POINTER(u64)], False),
    "kvbm_events_read": (c_long, [P, POINTER(u64), P, c_size_t, P, c_size_t], False),
    "kvbm_events_snapshot": (c_long, [P, POINTER(u64), EVENT_FN, P], False),
    "kvbm_match_blocks": (c_long, [P, P, c_size_t, P], False),
    "kvbm_match_blocks_scattered": (c_long, [P, P, c_size_t, P, P], False),
    "kvbm_scan_matches": (c_long, [P, P, c_size_t, c_uint, P], False),
    "kvbm_frequency_estimate": (c_long, [P, u64, u64], False),
    "kvbm_check_presence": (c_long, [P, P, c_size_t, P], False),
    "kvbm_frequency_touch": (c_long, [P, u64, u64], False),
    "kvbm_registered_count": (c_long, [P], False),
    "kvbm_tier_parse": (c_int, [c_char_p], True),
    "kvbm_tier_name": (c_char_p, [u32], True),
    "kvbm_tier_storage": (c_char_p, [u32], True),
    "kvbm_pool_tier": (c_int, [P], False),
    "kvbm_tiers_presence": (c_long, [P, c_size_t, P, c_size_t, P], False),
    "kvbm_onboard_plan": (c_int, [P, P, P, c_size_t, POINTER(c_void_p)], False),
    "kvbm_onboard_matched": (c_size_t, [P], True),
    "kvbm_onboard_count": (c_size_t, [P], True),
    "kvbm_onboard_get": (c_int, [P, c_size_t, P], True),
    "kvbm_onboard_complete": (c_long, [P, P, P, c_size_t], False),
    "kvbm_onboard_abort": (c_int, [P], False),
    "kvbm_onboard_free": (None, [P], False),
    "kvbm_available_blocks": (c_long, [P], False),
    "kvbm_total_blocks": (c_long, [P], False),
    "kvbm_reset_inactive_pool": (c_int, [P], False),
    "kvbm_pin_prefix": (c_long, [P, P, c_size_t, u64, POINTER(c_size_t)], False),
    "kvbm_unpin_prefix": (c_long, [P, P, c_size_t], False),
    "kvbm_pins_info": (c_int, [P, P], False),
    "kvbm_pins_list": (c_long, [P, P, c_size_t], False),
    "kvbm_pins_expire": (c_long, [P], False),
    "kvbm_metrics_snapshot": (c_int, [P, P], False),
    "kvbm_metrics_prometheus": (c_long, [P, c_char_p, P, c_size_t, P, c_size_t], True),
    "kvbm_stats_new": (c_int, [P, u32, POINTER(c_void_p)], False),
    "kvbm_stats_free": (None, [P], False),
    "kvbm_stats_set_enabled": (None, [P, c_int], False),
    "kvbm_stats_is_enabled": (c_int, [P], False),
    "kvbm_stats_sample": (c_int, [P], False),
    "kvbm_stats_sample_at": (c_int, [P, P, u64], False),
    "kvbm_stats_latest": (c_int, [P, P], False),
    "kvbm_stats_window": (c_size_t, [P, c_size_t, P], False),
}


# not in every libkvbm: None when the loaded one lacks it
_OPTIONAL = {
    # the batched stage: one call for a batch instead of one a block
    "kvbm_stage_blocks": (c_int, [P, P, P, u32, u32, POINTER(u32)], True),
}


class _Funcs:
    pass


fn = _Funcs()
for _name, (_res, _args, _gil) in _SIGS.items():
    _f = getattr(plib if _gil else lib, _name)
    _f.restype = _res
    _f.argtypes = _args
    setattr(fn, _name[5:], _f)
for _name, (_res, _args, _gil) in _OPTIONAL.items():
    try:
        _f = getattr(plib if _gil else lib, _name)
    except AttributeError:
        setattr(fn, _name[5:], None)
        continue
    _f.restype = _res
    _f.argtypes = _args
    setattr(fn, _name[5:], _f)
del _name, _res, _args, _gil, _f

# constants of kvbm.h used by the package
EBASE = -16384
OPEN_CREATE, OPEN_EXCL, OPEN_ONE_THREAD, OPEN_ANY_OWNER = 0x1, 0x2, 0x4, 0x8
DESTROY_FORCE = 0x1
CHECK_LOCK, CHECK_QUIESCENT = 0x1, 0x2
SCAN_TOUCH = 0x1
CFG_HUGEPAGES, CFG_ALLOW_OTHERS, CFG_KEEP_TOKENS = 0x1, 0x2, 0x4
MAX_BLOCKS = 1 << 28
PIN_TTL_MAX_MS = 366 * 24 * 3600 * 1000
BLOCK_SIZE = ctypes.sizeof(Block)        # 24
HASHES_SIZE = ctypes.sizeof(BlockHashes)  # 32
PLH_SIZE = ctypes.sizeof(Plh)             # 16
