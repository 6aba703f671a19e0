# SPDX-License-Identifier: Apache-2.0
"""vLLM v1's ``BlockPool``, backed by one shared kvbm pool.

Swap it in for ``vllm.v1.core.block_pool.BlockPool`` and every vLLM process
on the node that names the same pool shares one prefix cache: a prompt
prefix one process computed is a cache hit in the others (docs/VLLM.md).

What vLLM sees is unchanged: ``KVCacheBlock``-like objects with
``block_id``, ``ref_cnt``, ``block_hash`` and ``is_null``, the same public
methods, ``ValueError`` when ``get_new_blocks`` cannot be served, and
vLLM-shaped KV events. Underneath:

- a block id is the kvbm block id, the index into the KV storage every
  process on the pool maps (it must be one storage, shared: CUDA IPC, or a
  shared-memory array as in python/examples/);
- ``ref_cnt`` counts this process's uses; while it is above zero the
  process holds the block in the pool, so no process can evict it;
- ``get_cached_block`` takes a hold at once (a *lookup hold*), so that the
  block it returns cannot be evicted by another process before ``touch``.
  ``touch`` turns the lookup hold into a use. Lookups that vLLM abandons
  (the request was not scheduled, or only part of the hit was used) are
  given back at the next ``touch`` or by ``release_lookups()``;
- block hashes become kvbm PLHs (see ``hash_mode``);
- ``reserve(n)`` makes vLLM's check-then-allocate race-free against the
  other processes (docs/VLLM.md, "Swapping it into a vLLM fork").

Not thread-safe, like vLLM's own BlockPool (one scheduler thread).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NewType, Optional, Union

import kvbm

logger = logging.getLogger(__name__)

__all__ = [
    "BlockPool", "KVCacheBlock", "BlockHash", "BlockHashWithGroupId",
    "make_block_hash_with_group_id", "get_block_hash", "get_group_id",
    "request_block_hasher", "plh_of_vllm_hash", "BlockStored", "BlockRemoved",
    "AllBlocksCleared", "KVCacheEvent", "MEDIUM_GPU",
]

# ---- vLLM's hash types (kv_cache_utils.py): bytes, group id appended ------

BlockHash = NewType("BlockHash", bytes)
BlockHashWithGroupId = NewType("BlockHashWithGroupId", bytes)
ExternalBlockHash = Union[bytes, int]


def make_block_hash_with_group_id(block_hash: bytes, group_id: int) -> BlockHashWithGroupId:
    """vLLM's key: the hash followed by the group id, 4 bytes big-endian."""
    return BlockHashWithGroupId(bytes(block_hash) + group_id.to_bytes(4, "big", signed=False))


def get_block_hash(key: bytes) -> BlockHash:
    return BlockHash(key[:-4])


def get_group_id(key: bytes) -> int:
    return int.from_bytes(key[-4:], "big", signed=False)


# ---- KV events: vLLM's classes when vLLM is importable, else the same shape

MEDIUM_GPU = "GPU"
_TIER_MEDIUM = {"G1": "GPU", "G2": "CPU", "G3": "DISK"}

try:  # pragma: no cover - exercised only inside a vLLM install
    from vllm.distributed.kv_events import (  # type: ignore
        AllBlocksCleared, BlockRemoved, BlockStored, KVCacheEvent)
except ImportError:
    class KVCacheEvent:
        """Base of the events (vllm.distributed.kv_events.KVCacheEvent)."""

    @dataclass
    class BlockStored(KVCacheEvent):
        block_hashes: list
        parent_block_hash: Optional[ExternalBlockHash]
        token_ids: list
        block_size: int
        lora_id: Optional[int] = None
        medium: Optional[str] = MEDIUM_GPU
        lora_name: Optional[str] = None

    @dataclass
    class BlockRemoved(KVCacheEvent):
        block_hashes: list
        medium: Optional[str] = MEDIUM_GPU

    @dataclass
    class AllBlocksCleared(KVCacheEvent):
        pass


# ---- PLH packing (include/kvbm.h: [mode:2][position:P][current:64][parent:R])

_M64 = (1 << 64) - 1


def _r_bits(position: int) -> int:
    return 54 if position < (1 << 8) else 46 if position < (1 << 16) else 38


def _plh_pack(current: int, parent_fragment: int, position: int) -> bytes:
    if not 0 <= position < (1 << 24):
        raise ValueError(f"PLH position {position} out of range 0..2^24-1")
    r = _r_bits(position)
    mode = (54 - r) // 8
    x = (mode << 126) | (position << (64 + r)) | ((current & _M64) << r) | (
        parent_fragment & ((1 << r) - 1))
    return x.to_bytes(16, "big")


def _plh_unpack(plh: bytes) -> tuple[int, int, int]:
    """(position, current, parent fragment) of a PLH's 16-byte wire form."""
    x = int.from_bytes(plh, "big")
    mode = x >> 126
    if mode > 2:
        raise ValueError(f"not a kvbm PLH (mode {mode}): {bytes(plh).hex()}")
    r = 54 - 8 * mode
    return (x >> (64 + r)) & ((1 << (62 - r)) - 1), (x >> r) & _M64, x & ((1 << r) - 1)


def _router_hash(plh: bytes) -> int:
    """kvbm_plh_router_hash: what a router and kvbmd call the block."""
    pos, cur, _ = _plh_unpack(plh)
    return cur & ((1 << _r_bits(pos + 1)) - 1)


def plh_of_vllm_hash(block_hash: Union[bytes, int]) -> bytes:
    """The PLH that stands for one of vLLM's own block hashes (hash_mode
    'vllm'): a root (position 0) whose current is the hash's low 64 bits,
    which is exactly vLLM's int form of the hash
    (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES), and whose parent fragment holds
    the next 54 bits: 118 bits of the hash decide a hit."""
    if isinstance(block_hash, int):
        v = block_hash & ((1 << 118) - 1)
    elif isinstance(block_hash, (bytes, bytearray, memoryview)):
        b = bytes(block_hash)
        if not b:
            raise ValueError("empty block hash")
        v = int.from_bytes(b, "big") & ((1 << 118) - 1)
    else:
        raise TypeError(f"block hash must be bytes or int, not {type(block_hash).__name__}")
    return _plh_pack(v & _M64, v >> 64, 0)


def _group_plh(plh: bytes, group_id: int) -> bytes:
    """Group g > 0's key for the block group 0 keys as @plh: a root of its
    own, so that groups never hit each other's blocks."""
    d = hashlib.blake2b(plh + group_id.to_bytes(4, "big"), digest_size=16,
                        person=b"kvbm.vllm.group").digest()
    v = int.from_bytes(d, "big") & ((1 << 118) - 1)
    return _plh_pack(v & _M64, v >> 64, 0)


# The placeholder every adapter shares as vLLM's null block: registered
# under this hash and held by every live adapter, so it is never allocated
# to a request and is block 0 when an adapter creates the pool.
_NULL_PLH = _plh_pack(int.from_bytes(hashlib.blake2b(
    b"kvbm.vllm null block", digest_size=8).digest(), "big"), 0x2A, 0)


# ---- vLLM's request hasher, producing PLHs (hash_mode 'plh') ---------------

def _request_salt(request: Any) -> int:
    """The request's kvbm salt: cache_salt and the LoRA name, as Dynamo
    salts (kvbm.salt_hash); multimodal inputs are folded into the
    namespace so that two images behind the same placeholder tokens never
    share a block."""
    ns = getattr(request, "cache_salt", None) or ""
    lora = getattr(request, "lora_request", None)
    lora_name = (getattr(lora, "lora_name", None) or getattr(lora, "name", None)) if lora else None
    mm = []
    for f in getattr(request, "mm_features", None) or ():
        ident = getattr(f, "identifier", None) or getattr(f, "mm_hash", None)
        pos = getattr(f, "mm_position", None)
        mm.append(f"{ident}@{getattr(pos, 'offset', '')}")
    for h in getattr(request, "mm_hashes", None) or ():
        mm.append(str(h))
    if mm:
        ns = ns + "\x00mm:" + ",".join(mm)
    if getattr(request, "prompt_embeds", None) is not None:
        raise ValueError("kvbm.vllm: requests with prompt_embeds cannot be hashed from "
                         "tokens; use hash_mode='vllm' with vLLM's own hasher")
    return kvbm.salt_hash(ns or None, lora_name or None)


def request_block_hasher(block_size: int):
    """A drop-in for vLLM's ``get_request_block_hasher(block_size, fn)``:
    returns ``hasher(request) -> list[BlockHash]`` with the hashes of the
    request's newly completed blocks, each the 16-byte kvbm PLH (xxh3 of the
    tokens, salted by cache_salt/LoRA/multimodal inputs): the same in every
    process, bit-identical to kvbm's C library and Dynamo's router."""
    if block_size <= 0 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")

    # one growing kvbm.Tokens per live request: a decode step that
    # completes a block hashes that block, not the whole prefix again
    seqs: "weakref.WeakKeyDictionary[Any, kvbm.Tokens]" = weakref.WeakKeyDictionary()

    def hasher(request: Any) -> list:
        start = len(request.block_hashes)
        tokens = request.all_token_ids
        n_full = len(tokens) // block_size
        if n_full <= start:
            return []
        try:
            seq = seqs.get(request)
        except TypeError:  # not weak-referenceable: hash the prefix afresh
            hs = kvbm.hash_tokens(list(tokens[:n_full * block_size]), block_size,
                                  _request_salt(request))
            return [BlockHash(hs.plh_bytes(i)) for i in range(start, n_full)]
        if seq is None or seq.total > len(tokens):
            seq = kvbm.Tokens(block_size, _request_salt(request))
            seqs[request] = seq
        seq.extend(list(tokens[seq.total:]))
        return [BlockHash(b) for b in seq.hashes(start, n_full).plh_bytes_list()]

    return hasher


# ---- the block --------------------------------------------------------------

class KVCacheBlock:
    """vLLM's KVCacheBlock: one per block id, per process.

    ``ref_cnt`` is this process's uses (other processes' holds are not in
    it: a block with ref_cnt 0 may still be in use elsewhere).
    ``block_hash`` is what this process last knew the block to hold; on a
    block this process does not hold it is advisory (another process may
    have evicted it since).
    """

    __slots__ = ("block_id", "ref_cnt", "_block_hash", "is_null", "_handle", "_plh",
                 "prev_free_block", "next_free_block")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_cnt = 0
        self._block_hash: Optional[bytes] = None
        self.is_null = False
        self._handle = None   # kvbm.Blocks of one: this process's hold
        self._plh: Optional[bytes] = None
        # vLLM's free-queue links; this pool keeps no such list
        self.prev_free_block = None
        self.next_free_block = None

    @property
    def block_hash(self) -> Optional[BlockHashWithGroupId]:
        return self._block_hash

    @block_hash.setter
    def block_hash(self, block_hash: BlockHashWithGroupId) -> None:
        if self._block_hash is not None:
            raise ValueError(f"block {self.block_id} already has a hash")
        self._block_hash = block_hash

    def reset_hash(self) -> None:
        self._block_hash = None

    def __repr__(self) -> str:
        return (f"KVCacheBlock(block_id={self.block_id}, ref_cnt={self.ref_cnt}, "
                f"block_hash={self._block_hash!r}, is_null={self.is_null})")


def _key(block_hash, group_id: int):
    """vLLM's cache key of a block: BlockHashWithGroupId for bytes hashes,
    (hash, group) for the int hashes of older vLLMs."""
    if isinstance(block_hash, (bytes, bytearray)):
        return make_block_hash_with_group_id(block_hash, group_id)
    return (block_hash, group_id)


def _flatten(blocks) -> list:
    if not blocks:
        return []
    first = blocks[0]
    if isinstance(first, KVCacheBlock):
        return list(blocks)
    return [b for group in blocks for b in group]


def _ours(pool: "BlockPool", blocks: Iterable, what: str) -> list:
    """@blocks as a list, each checked to be one of @pool's blocks."""
    out = list(blocks)
    for b in out:
        if not isinstance(b, KVCacheBlock):
            raise TypeError(f"{what}: expected KVCacheBlock, got {type(b).__name__}")
        if not (0 <= b.block_id < len(pool.blocks)) or pool.blocks[b.block_id] is not b:
            raise ValueError(f"{what}: block {b.block_id} belongs to another BlockPool")
    return out


# ---- the pool ---------------------------------------------------------------

class BlockPool:
    """vLLM v1 BlockPool over a shared kvbm pool.

    The first five arguments are vLLM's (``KVCacheCoordinator`` passes them
    by position or by name; ``prefer_low_id_allocations``, which some vLLM
    versions pass, is accepted and ignored: the pool picks blocks). The
    rest say which pool:

    - ``pool``: an open ``kvbm.Pool`` (the adapter does not close it), or
    - ``pool_name`` (default: $KVBM_VLLM_POOL, else "vllm-kv"): opened, and
      created when absent with ``num_gpu_blocks`` blocks of
      ``hash_block_size`` tokens, ``backend`` ('lru' evicts in vLLM's
      order), dup policy 'allow' (a block's id never changes once vLLM has
      it), an event ring keeping tokens when events are enabled.
    - ``reap_interval_s``: how often ``get_num_free_blocks`` reaps dead
      processes (their holds come back to the pool).
    - ``hash_mode``: 'plh' (the default) when vLLM's requests are hashed by
      ``request_block_hasher`` (their BlockHash is the 16-byte PLH); 'vllm'
      to keep vLLM's own hashes (sha256/xxhash bytes or ints), which must
      then be equal across processes (docs/VLLM.md).
    """

    def __init__(self, num_gpu_blocks: int, enable_caching: bool, hash_block_size: int,
                 enable_kv_cache_events: bool = False, metrics_collector: Any = None, *,
                 prefer_low_id_allocations: bool = False,
                 pool: Optional["kvbm.Pool"] = None, pool_name: Optional[str] = None,
                 hash_mode: str = "plh", backend: str = "lru", event_ring: int = 4096,
                 medium: Optional[str] = None, reap_interval_s: float = 1.0):
        if not isinstance(num_gpu_blocks, int) or num_gpu_blocks <= 1:
            raise ValueError(f"num_gpu_blocks must be an int > 1 (one is the null block), "
                             f"got {num_gpu_blocks!r}")
        if hash_mode not in ("plh", "vllm"):
            raise ValueError(f"hash_mode must be 'plh' or 'vllm', got {hash_mode!r}")
        self.num_gpu_blocks = num_gpu_blocks
        self.enable_caching = enable_caching
        self.hash_block_size = hash_block_size
        self.enable_kv_cache_events = enable_kv_cache_events
        self.metrics_collector = metrics_collector
        self.hash_mode = hash_mode
        self._reap_interval = reap_interval_s
        self._next_reap = 0.0
        self._own_pool = pool is None
        if pool is None:
            name = pool_name or os.environ.get("KVBM_VLLM_POOL") or "vllm-kv"
            kw = dict(create=True, block_count=num_gpu_blocks, block_size=hash_block_size,
                      backend=backend, dup_policy="allow")
            if enable_kv_cache_events:
                kw.update(event_ring=event_ring, keep_tokens=True)
            pool = kvbm.Pool(name, **kw)
        self.pool = pool
        try:
            self._check_pool()
            self.blocks: list[KVCacheBlock] = [KVCacheBlock(i) for i in range(num_gpu_blocks)]
            # block id -> lookup hold (None: the block's use here holds it)
            self._pending: dict[int, Any] = {}
            self._index: dict[bytes, int] = {}  # PLH -> block id, of blocks held here
            self._memo: dict[Any, Any] = {}     # (vLLM hash, group) -> (PLH, Hashes)
            self._reserve = kvbm.Blocks.concat()  # MUTABLE blocks set aside
            self._parents: dict[bytes, Optional[int]] = {}  # hash_mode 'vllm' events
            self.kv_event_queue: list = []
            self._cursor = None
            if enable_kv_cache_events:
                try:
                    self._cursor = self.pool.events_head()
                except kvbm.NotSupported:
                    raise ValueError("enable_kv_cache_events needs a pool with an event ring "
                                     f"(pool {self.pool.name!r} was created without one)") from None
            self.medium = medium or _TIER_MEDIUM.get(getattr(self.pool, "tier", "G1"), MEDIUM_GPU)
            self.null_block = self._take_null_block()
        except BaseException:
            if self._own_pool:
                self.pool.close()
            raise

    # -- setup ---------------------------------------------------------------

    def _check_pool(self) -> None:
        p = self.pool
        if p.block_count != self.num_gpu_blocks:
            raise ValueError(f"pool has {p.block_count} blocks, vLLM's KV cache has "
                             f"{self.num_gpu_blocks}: block ids would not index the same storage")
        if p.block_size != self.hash_block_size:
            raise ValueError(f"pool block size {p.block_size} differs from vLLM's "
                             f"hash_block_size {self.hash_block_size}")
        if p.info()["config"]["dup_policy"] != "allow":
            raise ValueError("the pool's dup_policy must be 'allow': under 'reject' a "
                             "registration can change a block's id under vLLM's block table")

    def _take_null_block(self) -> KVCacheBlock:
        """Hold the shared null block, registering it if no live process has."""
        null_h = kvbm.Hashes.from_plh_bytes([_NULL_PLH])
        for _ in range(8):
            got = self.pool.match(null_h)
            if len(got):
                break
            fresh = self.pool.allocate(1)
            try:
                self.pool.stage(fresh, null_h)
            except BaseException:
                self.pool.release(fresh)
                raise
            got = self.pool.register(fresh)
            if self.pool.block_info(got[0]).get("primary", True):
                break
            # another adapter registered it first: use theirs
            self.pool.release(got)
        else:
            raise kvbm.KvbmError("could not settle the shared null block")
        blk = self.blocks[got[0].id]
        blk.is_null = True
        blk._handle = got
        blk._plh = _NULL_PLH
        return blk

    def close(self) -> None:
        """Give back every hold of this process (uses, lookups, the null
        block) and detach when the adapter opened the pool."""
        if getattr(self, "pool", None) is None:
            return
        if self.pool.closed:  # a pool the caller gave us and closed: holds gone
            self.pool = None
            return
        try:
            held = [b._handle for b in self.blocks if b._handle is not None]
            held += list(self._pending.values()) + [self._reserve]
            held = [h for h in held if h is not None and len(h)]
            self._pending.clear()
            self._reserve = kvbm.Blocks.concat()
            if held:
                self.pool.release(kvbm.Blocks.concat(held))
            for b in self.blocks:
                b._handle = None
                b.ref_cnt = 0
        finally:
            if self._own_pool:
                self.pool.close()
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- hashes --------------------------------------------------------------

    def _plh(self, block_hash, group_id: int) -> bytes:
        if self.hash_mode == "plh":
            if not isinstance(block_hash, (bytes, bytearray)) or len(block_hash) != 16:
                raise ValueError(
                    f"hash_mode='plh' expects 16-byte PLH block hashes from "
                    f"kvbm.vllm.request_block_hasher, got {block_hash!r:.60}; hash with it, "
                    f"or use hash_mode='vllm'")
            plh = bytes(block_hash)
            if plh[0] >= 0xC0:  # mode 3 does not exist
                raise ValueError(f"not a kvbm PLH (mode 3): {plh.hex()}")
        else:
            plh = plh_of_vllm_hash(block_hash)
        if group_id < 0:
            raise ValueError(f"kv_cache_group_id must be >= 0, got {group_id}")
        return plh if group_id == 0 else _group_plh(plh, group_id)

    def _external(self, plh: bytes) -> ExternalBlockHash:
        """How an event names the block: the router projection of the PLH
        (as kvbmd publishes it) in 'plh' mode; vLLM's int form of its own
        hash in 'vllm' mode."""
        if self.hash_mode == "plh":
            return _router_hash(plh)
        return _plh_unpack(plh)[1]

    # -- vLLM's BlockPool API ------------------------------------------------

    def get_cached_block(self, block_hash: BlockHash,
                         kv_cache_group_ids: list[int]) -> Optional[list[KVCacheBlock]]:
        """The cached block for each group, or None if any group misses.
        Each hit is held for this process until ``touch`` takes it (or the
        lookup is abandoned), so no other process can evict it meanwhile.
        A hit on a block this process already holds costs no pool call."""
        out: list[KVCacheBlock] = []
        taken: list[int] = []
        pending = self._pending
        for gid in kv_cache_group_ids:
            plh, hs = self._lookup_key(block_hash, gid)
            bid = self._index.get(plh)
            if bid is not None:
                blk = self.blocks[bid]
                if blk._plh == plh and (blk.ref_cnt > 0 or pending.get(bid) is not None):
                    if bid not in pending:
                        pending[bid] = None  # its use holds it (free_blocks keeps it)
                        taken.append(bid)
                    out.append(blk)
                    continue
                del self._index[plh]  # stale
            got = self.pool.match(hs)
            if not len(got):
                self._drop_pending(taken)
                return None
            bid = got[0].id
            blk = self.blocks[bid]
            if bid in pending or blk.ref_cnt > 0:
                self.pool.release(got)  # held here already
                if bid not in pending:
                    pending[bid] = None
                    taken.append(bid)
            else:
                pending[bid] = got
                taken.append(bid)
            if blk._plh != plh:
                blk._plh = plh
                blk._block_hash = _key(block_hash, gid)
            self._index[plh] = bid
            out.append(blk)
        return out

    def longest_cache_hit(self, block_hashes: Sequence, max_blocks: Optional[int] = None,
                          kv_cache_group_id: int = 0) -> list[KVCacheBlock]:
        """vLLM's find_longest_cache_hit for one group, in one pool call:
        the blocks of the hashes in order up to the first miss (or
        @max_blocks), each with a lookup hold until ``touch``, as
        ``get_cached_block`` on each would give."""
        hashes = list(block_hashes[:max_blocks])
        plhs = [self._lookup_key(h, kv_cache_group_id)[0] for h in hashes]
        out: list[KVCacheBlock] = []
        # the head this process holds already: no pool call
        for plh in plhs:
            bid = self._index.get(plh)
            if bid is None:
                break
            blk = self.blocks[bid]
            if blk._plh != plh or not (blk.ref_cnt > 0 or self._pending.get(bid) is not None):
                break
            self._pending.setdefault(bid, None)
            out.append(blk)
        k = len(out)
        if k == len(plhs):
            return out
        got = self.pool.match(kvbm.Hashes.from_plh_bytes(plhs[k:]))
        extra = []
        for j, bid in enumerate(got.ids):
            i = k + j
            blk = self.blocks[bid]
            if bid in self._pending or blk.ref_cnt > 0:
                extra.append(got[j:j + 1])  # held here already
                self._pending.setdefault(bid, None)
            else:
                self._pending[bid] = got[j:j + 1]
            if blk._plh != plhs[i]:
                blk._plh = plhs[i]
                blk._block_hash = _key(hashes[i], kv_cache_group_id)
            self._index[plhs[i]] = bid
            out.append(blk)
        if extra:
            self.pool.release(kvbm.Blocks.concat(extra))
        return out

    def _lookup_key(self, block_hash, gid: int):
        """(PLH, kvbm.Hashes of it) for vLLM's hash in group @gid, memoized:
        a prefix is looked up again and again."""
        try:
            return self._memo[(block_hash, gid)]
        except KeyError:
            pass
        except TypeError:
            raise TypeError(f"block hash must be bytes or int, not "
                            f"{type(block_hash).__name__}") from None
        plh = self._plh(block_hash, gid)
        if len(self._memo) >= 1 << 16:
            self._memo.clear()
        m = self._memo[(bytes(block_hash) if isinstance(block_hash, bytearray) else block_hash,
                        gid)] = (plh, kvbm.Hashes.from_plh_bytes([plh]))
        return m

    def _forget(self, b: KVCacheBlock) -> None:
        """This process no longer holds @b: its hash leaves the index."""
        if b._plh is not None and self._index.get(b._plh) == b.block_id:
            del self._index[b._plh]

    def _drop_pending(self, ids: Iterable[int]) -> None:
        hs = []
        for i in ids:
            h = self._pending.pop(i, None)
            if h is not None:
                hs.append(h)
                if self.blocks[i].ref_cnt == 0:
                    self._forget(self.blocks[i])
        if hs:
            self.pool.release(kvbm.Blocks.concat(hs))

    def release_lookups(self) -> int:
        """Give back every lookup hold that ``touch`` has not taken (vLLM
        looked a request's prefix up and did not schedule it). Returns how
        many."""
        n = len(self._pending)
        self._drop_pending(list(self._pending))
        return n

    def touch(self, blocks: Union[Sequence[KVCacheBlock], Sequence[Sequence[KVCacheBlock]]]) -> None:
        """One more use of each block (a prefix hit joins a request).

        A block found by ``get_cached_block`` keeps its lookup hold; a block
        this process already uses needs none. Lookup holds of blocks not
        touched here belong to abandoned lookups and are given back."""
        flat = [b for b in _ours(self, _flatten(blocks), "touch()") if not b.is_null]
        for b in flat:
            if b.ref_cnt == 0 and self._pending.get(b.block_id) is None:
                self._retake(b)  # lookup hold gone (release_lookups): take one again
        for b in flat:
            if b.ref_cnt == 0:
                b._handle = self._pending.pop(b.block_id)
            b.ref_cnt += 1
            if self.metrics_collector is not None:
                self.metrics_collector.on_block_accessed(b)
        # what is left: lookups of blocks in use here (their use holds
        # them) and abandoned lookups
        self._drop_pending(list(self._pending))

    def _retake(self, b: KVCacheBlock) -> None:
        if b._plh is None:
            raise ValueError(f"touch(): block {b.block_id} is neither used by this process nor "
                             f"cached; touch blocks returned by get_cached_block()")
        got = self.pool.match(kvbm.Hashes.from_plh_bytes([b._plh]))
        if not len(got) or got[0].id != b.block_id:
            if len(got):
                self.pool.release(got)
            raise RuntimeError(
                f"touch(): block {b.block_id} was evicted by another process after its "
                f"lookup hold was given back; look the prefix up again")
        self._pending[b.block_id] = got
        self._index[b._plh] = b.block_id

    def free_blocks(self, ordered_blocks: Iterable[KVCacheBlock]) -> None:
        """One use less of each block, in eviction order (vLLM passes a
        request's blocks tail first). Blocks whose last use in this process
        ends are released to the pool in that order: under the 'lru' and
        'fifo' backends the first released is the first evicted. A block
        looked up meanwhile keeps its hold as the lookup's, for touch()."""
        blocks = [b for b in _ours(self, ordered_blocks, "free_blocks()") if not b.is_null]
        count: dict[int, int] = {}
        for b in blocks:
            count[b.block_id] = count.get(b.block_id, 0) + 1
        for bid, n in count.items():
            if self.blocks[bid].ref_cnt < n:
                raise ValueError(f"free_blocks(): block {bid} freed {n} times, but this process "
                                 f"uses it {self.blocks[bid].ref_cnt} times (freed twice?)")
        release = []
        for b in blocks:
            b.ref_cnt -= 1
            if b.ref_cnt == 0:
                if b.block_id in self._pending:  # looked up, not yet touched
                    self._pending[b.block_id] = b._handle
                else:
                    release.append(b._handle)
                    self._forget(b)
                b._handle = None
        if release:
            self.pool.release(kvbm.Blocks.concat(release))

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        """``num_blocks`` blocks for this process (ref_cnt 1, no hash): the
        ones ``reserve()`` set aside first, then from the pool's free
        blocks, then by evicting cached blocks no process uses. ValueError
        when the pool cannot serve them (another process may have taken
        what ``get_num_free_blocks`` counted: see ``reserve``)."""
        if not isinstance(num_blocks, int) or num_blocks < 0:
            raise ValueError(f"num_blocks must be an int >= 0, got {num_blocks!r}")
        if num_blocks == 0:
            return []
        k = min(num_blocks, len(self._reserve))
        got = self._reserve[:k]
        if k < num_blocks:
            try:
                got = kvbm.Blocks.concat(got, self._allocate(num_blocks - k))
            except kvbm.NoSpace:
                raise ValueError(f"Cannot get {num_blocks} free blocks from the pool") from None
        self._reserve = self._reserve[k:]
        out = []
        mc = self.metrics_collector
        for i, bid in enumerate(got.ids):
            b = self.blocks[bid]
            b._handle = got[i:i + 1]
            b.ref_cnt = 1
            if mc is not None:
                mc.on_block_allocated(b)
            out.append(b)
        return out

    def reserve(self, num_blocks: int) -> bool:
        """Set ``num_blocks`` blocks aside for this process's next
        ``get_new_blocks`` calls, or return False when the pool cannot.

        vLLM checks ``get_num_free_blocks()`` and then allocates; on a
        shared pool another process may take the blocks in between, and
        ``get_new_blocks`` would raise. A fork that replaces that check in
        ``KVCacheManager.allocate_slots`` with ``reserve()`` admits a
        request only with its blocks in hand (docs/VLLM.md). A surplus from
        an earlier call goes back to the pool."""
        if not isinstance(num_blocks, int) or num_blocks < 0:
            raise ValueError(f"num_blocks must be an int >= 0, got {num_blocks!r}")
        have = len(self._reserve)
        if have > num_blocks:
            self.pool.release(self._reserve[num_blocks:])
            self._reserve = self._reserve[:num_blocks]
        elif have < num_blocks:
            try:
                self._reserve = kvbm.Blocks.concat(self._reserve,
                                                   self._allocate(num_blocks - have))
            except kvbm.NoSpace:
                return False
        return True

    def _allocate(self, n: int):
        """pool.allocate(n), once more after a reap when it comes up short;
        the blocks' old cache metadata is dropped here (they were evicted)."""
        try:
            got = self.pool.allocate(n)
        except kvbm.NoSpace:
            if not self.pool.reap():
                raise
            got = self.pool.allocate(n)
        for bid in got.ids:
            b = self.blocks[bid]
            if b._plh is not None:  # it was cached: evicted now
                if self.metrics_collector is not None:
                    self.metrics_collector.on_block_evicted(b)
                self._forget(b)
                b._block_hash = None
                b._plh = None
        return got

    def cache_full_blocks(self, request: Any, blocks: list[KVCacheBlock], num_cached_blocks: int,
                          num_full_blocks: int, block_size: int, kv_cache_group_id: int) -> None:
        """Register ``blocks[num_cached_blocks:num_full_blocks]`` under the
        request's block hashes, with their tokens (events carry them). A
        hash some block already holds makes this block a duplicate: it
        keeps its id (vLLM's block tables are append-only) and is freed on
        its last release; lookups find the first one."""
        if num_cached_blocks >= num_full_blocks:
            return
        if block_size != self.hash_block_size:
            raise NotImplementedError(
                f"block_size {block_size} != hash_block_size {self.hash_block_size}: one kvbm "
                f"pool has one block size")
        hashes = request.block_hashes
        if len(hashes) < num_full_blocks:
            raise ValueError(f"request {getattr(request, 'request_id', '?')} has "
                             f"{len(hashes)} block hashes, {num_full_blocks} blocks to cache")
        todo = []
        _ours(self, blocks[num_cached_blocks:num_full_blocks], "cache_full_blocks()")
        for i in range(num_cached_blocks, num_full_blocks):
            b = blocks[i]
            if b.is_null:
                continue
            if b._block_hash is not None or b.ref_cnt < 1 or b._handle is None:
                raise ValueError(f"cache_full_blocks(): block {b.block_id} is not a new block "
                                 f"of this process (ref_cnt {b.ref_cnt}, hash {b._block_hash!r})")
            todo.append((i, b, self._plh(hashes[i], kv_cache_group_id)))
        if not todo:
            return
        tokens = request.all_token_ids
        if len(tokens) < num_full_blocks * block_size:
            raise ValueError(f"request {getattr(request, 'request_id', '?')} has {len(tokens)} "
                             f"tokens, not the {num_full_blocks * block_size} of "
                             f"{num_full_blocks} full blocks")
        if len(todo) == num_full_blocks - num_cached_blocks:  # no null block among them
            toks = tokens[num_cached_blocks * block_size:num_full_blocks * block_size]
        else:
            toks = []
            for i, _, _ in todo:
                toks.extend(tokens[i * block_size:(i + 1) * block_size])
        handles = kvbm.Blocks.concat([b._handle for _, b, _ in todo])
        self.pool.stage(handles, kvbm.Hashes.from_plh_bytes([p for _, _, p in todo]))
        try:
            reg = self.pool.register(handles, tokens=toks)
        except BaseException:
            self.pool.unstage(handles)
            raise
        for k, (i, b, plh) in enumerate(todo):
            b._handle = reg[k:k + 1]
            b._plh = plh
            self._index.setdefault(plh, b.block_id)
            b._block_hash = _key(hashes[i], kv_cache_group_id)
        if self.enable_kv_cache_events and self.hash_mode == "vllm":
            prev = self._external(self._plh(hashes[todo[0][0] - 1], kv_cache_group_id)) \
                if todo[0][0] > 0 else None
            for i, _, plh in todo:
                self._parents[plh] = prev
                prev = self._external(plh)

    def evict_blocks(self, block_ids: set[int]) -> None:
        """Drop the given blocks from the prefix cache (vLLM's KV connectors
        do after a failed load). A cached block no process uses is evicted
        now; one in use (here or elsewhere) leaves the cache on its last
        release. Blocks without a hash here are left alone."""
        for bid in block_ids:
            if not isinstance(bid, int) or not 0 <= bid < self.num_gpu_blocks:
                raise ValueError(f"evict_blocks(): invalid block id {bid!r} "
                                 f"(pool has {self.num_gpu_blocks})")
        for bid in sorted(block_ids):
            b = self.blocks[bid]
            if b.is_null or b._plh is None:
                continue
            if b._handle is not None or self._pending.get(bid) is not None:
                h = b._handle if b._handle is not None else self._pending[bid]
                self.pool.set_reset_on_release(h, True)
                self._forget(b)
            else:
                got = self.pool.match(kvbm.Hashes.from_plh_bytes([b._plh]))
                if len(got):
                    if got[0].id == bid:
                        self.pool.set_reset_on_release(got, True)
                    self.pool.release(got)
            b._block_hash = None
            b._plh = None

    def reset_prefix_cache(self) -> bool:
        """Forget every cached block, if no block of the pool is in use by
        any process (the null block aside). Returns whether it did."""
        self.release_lookups()
        self.reserve(0)
        used = self.pool.total() - self.pool.available() - 1
        if used != 0:
            logger.warning("Failed to reset prefix cache because some blocks (%d) are not "
                           "freed yet", used)
            return False
        if self.enable_kv_cache_events:
            self._drain_ring()
        self.pool.reset_inactive()  # False: the null block is held, by design
        if self.metrics_collector is not None:
            self.metrics_collector.reset()
        self._index.clear()
        for b in self.blocks:
            if not b.is_null:
                b._block_hash = None
                b._plh = None
        if self.enable_kv_cache_events:
            self.kv_event_queue.append(AllBlocksCleared())
            self._drain_ring(skip_removed=True)
        logger.info("Successfully reset prefix cache")
        return True

    def get_num_free_blocks(self) -> int:
        """Blocks an allocation can get now: free plus cached blocks no
        process uses (over the whole pool), plus this process's looked-up
        blocks that no request uses yet: vLLM counts those as free (its
        allocate_slots adds them to what it needs), and touch() turns their
        lookup hold into a use without taking a block.

        At most every ``reap_interval_s`` it first reaps dead processes:
        vLLM allocates only what this count allows, so the pool's own
        reap when an allocation comes up short would never run, and the
        blocks of a killed process would stay lost to a node without
        kvbmd."""
        now = time.monotonic()
        if now >= self._next_reap:
            self._next_reap = now + self._reap_interval
            self.pool.reap()
        return self.pool.available() + len(self._reserve) + sum(
            1 for i, h in self._pending.items() if h is not None and self.blocks[i].ref_cnt == 0)

    def get_usage(self) -> float:
        """Fraction of the pool in use by any process (the null block aside)."""
        total = self.num_gpu_blocks - 1
        return 1.0 - self.get_num_free_blocks() / total

    def take_events(self) -> list:
        """The pool's KV events since the last call, vLLM-shaped. Every
        adapter on the pool sees every process's events: one BlockStored
        when a block becomes cached (a duplicate registration emits none),
        one BlockRemoved when it leaves the cache."""
        if not self.enable_kv_cache_events:
            return []
        self._drain_ring()
        ev, self.kv_event_queue = self.kv_event_queue, []
        return ev

    # -- events --------------------------------------------------------------

    def _drain_ring(self, skip_removed: bool = False) -> None:
        while True:
            try:
                evs, self._cursor = self.pool.read_events(self._cursor, max=1024)
            except kvbm.EventGap:
                # overwritten before we read them: AllBlocksCleared, then
                # every cached block (without tokens), and read on
                logger.warning("kvbm.vllm: the event ring lapped this reader: resync")
                self._resync()
                continue
            if not evs:
                return
            for e in evs:
                if e.kind == "resync":  # a recovery rebuilt the pool
                    self._resync()
                    break
                self._translate(e, skip_removed)

    def _resync(self) -> None:
        evs, self._cursor = self.pool.events_snapshot()
        for e in evs:
            self._translate(e, False)

    def _translate(self, e, skip_removed: bool) -> None:
        kind = e.kind
        q = self.kv_event_queue
        if kind == "cleared":
            q.append(AllBlocksCleared())
            return
        plh = e.plh
        if plh == _NULL_PLH:
            return
        ext = self._external(plh)
        if kind == "stored":
            pos, _, pfrag = _plh_unpack(plh)
            if self.hash_mode == "plh":
                parent = pfrag if pos > 0 else None
            else:
                parent = self._parents.get(plh)
            toks = list(e.tokens or [])
            last = q[-1] if q else None
            # one BlockStored per chain, as vLLM emits one per cache_full_blocks
            if (isinstance(last, BlockStored) and last.block_hashes
                    and parent is not None and parent == last.block_hashes[-1]
                    and bool(toks) == bool(last.token_ids)):
                last.block_hashes.append(ext)
                last.token_ids.extend(toks)
                return
            q.append(BlockStored(block_hashes=[ext], parent_block_hash=parent, token_ids=toks,
                                 block_size=self.hash_block_size, lora_id=None,
                                 medium=self.medium, lora_name=None))
        elif kind == "removed":
            self._parents.pop(plh, None)
            if skip_removed:
                return
            last = q[-1] if q else None
            if isinstance(last, BlockRemoved):
                last.block_hashes.append(ext)
                return
            q.append(BlockRemoved(block_hashes=[ext], medium=self.medium))

    # -- extras --------------------------------------------------------------

    def metrics(self):
        """The pool's counters (all processes): kvbm.Pool.metrics()."""
        return self.pool.metrics()


# ---- python3 -m kvbm.vllm: the adapter's speed (docs/VLLM.md, "Speed") ------

def _bench(pool_name: str = "kvbm-vllm-bench", rounds: int = 5) -> dict:
    """Blocks per second of vLLM's call sequences on a 1024-block pool
    (best of @rounds): a 64-block prefix hit (64 get_cached_block, touch,
    free_blocks) when no request uses it and when one in this process
    does; the unused hit through longest_cache_hit (one pool call); and a
    64-block request cached and freed while evicting."""
    bs, n = 16, 64

    class _Req:
        def __init__(self, salt):
            self.request_id, self.cache_salt, self.lora_request = "bench", salt, None
            self.all_token_ids, self.block_hashes = list(range(n * bs)), []
            self.block_hashes.extend(request_block_hasher(bs)(self))

    def hit(bp, r):  # as vLLM does: one get_cached_block per hash
        found = (bp.get_cached_block(h, [0]) for h in r.block_hashes)
        out = [g[0] for g in itertools.takewhile(lambda g: g is not None, found)]
        bp.touch((out,))
        bp.free_blocks(reversed(out))

    def hit_batch(bp, r):
        out = bp.longest_cache_hit(r.block_hashes)
        bp.touch((out,))
        bp.free_blocks(reversed(out))

    def cache(bp, r):
        blocks = bp.get_new_blocks(n)
        bp.cache_full_blocks(r, blocks, 0, n, bs, 0)
        bp.free_blocks(reversed(blocks))

    best = {"hit_unused": 0.0, "hit_in_use": 0.0, "batch_hit_unused": 0.0,
            "new_cache_free": 0.0}
    r = _Req(None)
    try:
        with BlockPool(1024, True, bs, False, pool_name=pool_name) as bp:
            for k in range(rounds):
                cache(bp, r)
                t = time.perf_counter()
                for _ in range(200):
                    hit(bp, r)
                best["hit_unused"] = max(best["hit_unused"], 200 * n / (time.perf_counter() - t))
                t = time.perf_counter()
                for _ in range(200):
                    hit_batch(bp, r)
                best["batch_hit_unused"] = max(best["batch_hit_unused"],
                                               200 * n / (time.perf_counter() - t))
                held = [b[0] for b in (bp.get_cached_block(h, [0]) for h in r.block_hashes)]
                bp.touch(held)
                t = time.perf_counter()
                for _ in range(200):
                    hit(bp, r)
                best["hit_in_use"] = max(best["hit_in_use"], 200 * n / (time.perf_counter() - t))
                bp.free_blocks(held)
                others = [_Req(f"{k}-{i}") for i in range(100)]
                t = time.perf_counter()
                for o in others:
                    cache(bp, o)
                best["new_cache_free"] = max(best["new_cache_free"],
                                             100 * n / (time.perf_counter() - t))
    finally:
        kvbm.destroy(pool_name, force=True)
    return best


if __name__ == "__main__":
    load = os.getloadavg()[0]
    for k, v in _bench().items():
        print(f"{k:16s} {v / 1e6:6.2f} M blocks/s")
    print(f"(load average {load:.2f})")
