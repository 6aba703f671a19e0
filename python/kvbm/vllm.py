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
- a lookup not answered by a block held here matches the rest of the
  request's hash chain (known to ``request_block_hasher``) in one pool
  call; vLLM's next lookups are answered from that batch, and what it does
  not touch goes back with the abandoned lookups;
- block hashes become kvbm PLHs (see ``hash_mode``);
- ``reserve(n)`` makes vLLM's check-then-allocate race-free against the
  other processes (docs/VLLM.md, "Swapping it into a vLLM fork").

Not thread-safe, like vLLM's own BlockPool (one scheduler thread).
"""

from __future__ import annotations

import hashlib
import struct
import logging
import os
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NewType, Optional, Union

import kvbm
from kvbm.blocks import from_ids as _from_ids

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


class _Chain:
    """The PLHs of one request's complete blocks, in order: what lets the
    adapter match the rest of a request's prefix in one pool call when
    vLLM asks for its first block (see BlockPool.get_cached_block)."""

    __slots__ = ("plhs", "buf")

    def __init__(self):
        self.plhs: list = []        # wire form, as vLLM holds them
        self.buf = bytearray()      # the same, native struct kvbm_plh

    def add(self, start: int, hs: "kvbm.Hashes", wire: list) -> None:
        if len(self.plhs) != start:  # the request's list was cut: follow it
            del self.plhs[start:]
            del self.buf[16 * start:]
            if len(self.plhs) != start:  # cannot: stop knowing this chain
                return
        self.plhs += wire
        self.buf += hs._plh_buf()
        _register_chain(self, wire)


# PLH -> the chain of the latest request hashed that has it. Two
# generations of at most _CHAINS_MAX entries each (the older dropped when
# the newer fills): bounded memory without a weak reference per hash, which
# cost as much as hashing the block. A finished request's chain may still be
# found: its hashes still name those blocks, and what a lookup matches past
# what vLLM asks for goes back at the next touch.
_CHAINS_MAX = 1 << 16
_chains_new: dict = {}
_chains_old: dict = {}


def _register_chain(chain: _Chain, wire: list) -> None:
    global _chains_new, _chains_old
    if len(_chains_new) + len(wire) > _CHAINS_MAX:
        _chains_old, _chains_new = _chains_new, {}
    _chains_new.update(dict.fromkeys(wire, chain))


def _chain_rest(plh: bytes):
    """(wire PLHs, native buffer) of @plh and the blocks after it in a
    request's chain, or None when no chain is known."""
    c = _chains_new.get(plh) or _chains_old.get(plh)
    if c is None:
        return None
    pos = _plh_unpack(plh)[0]
    plhs = c.plhs
    if pos >= len(plhs) or plhs[pos] != plh:
        return None
    return plhs[pos:], bytes(c.buf[16 * pos:])


def request_block_hasher(block_size: int):
    """A drop-in for vLLM's ``get_request_block_hasher(block_size, fn)``:
    returns ``hasher(request) -> list[BlockHash]`` with the hashes of the
    request's newly completed blocks, each the 16-byte kvbm PLH (xxh3 of the
    tokens, salted by cache_salt/LoRA/multimodal inputs): the same in every
    process, bit-identical to kvbm's C library and Dynamo's router.

    The hasher also remembers each live request's chain of hashes, so that
    a BlockPool asked for the request's first uncached-here block matches
    the whole rest of the prefix in one pool call."""
    if block_size <= 0 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")

    # one growing kvbm.Tokens (and chain) per live request: a decode step
    # that completes a block hashes that block, not the whole prefix again
    seqs: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()

    def hasher(request: Any) -> list:
        start = len(request.block_hashes)
        tokens = request.all_token_ids
        n_full = len(tokens) // block_size
        if n_full <= start:
            return []
        try:
            entry = seqs.get(request)
        except TypeError:  # not weak-referenceable: hash the prefix afresh
            hs = kvbm.hash_tokens(list(tokens[:n_full * block_size]), block_size,
                                  _request_salt(request))
            return [BlockHash(hs.plh_bytes(i)) for i in range(start, n_full)]
        if entry is None or entry[0].total > len(tokens):
            entry = seqs[request] = (kvbm.Tokens(block_size, _request_salt(request)), _Chain())
        seq, chain = entry
        seq.extend(list(tokens[seq.total:]))
        if len(chain.plhs) < start:  # blocks hashed before the chain was known
            head = seq.hashes(len(chain.plhs), start)
            chain.add(len(chain.plhs), head, head.plh_bytes_list())
        hs = seq.hashes(start, n_full)
        wire = hs.plh_bytes_list()
        chain.add(start, hs, wire)
        return wire

    return hasher


# ---- the block --------------------------------------------------------------

class KVCacheBlock:
    """vLLM's KVCacheBlock: one per block id, per process, made once by
    the BlockPool and reused (as vLLM does).

    ``ref_cnt`` is this process's uses (other processes' holds are not in
    it: a block with ref_cnt 0 may still be in use elsewhere).
    ``block_hash`` is what this process last knew the block to hold; on a
    block this process does not hold it is advisory (another process may
    have evicted it since).
    """

    __slots__ = ("block_id", "ref_cnt", "_block_hash", "is_null", "_gen", "_plh", "_look",
                 "prev_free_block", "next_free_block")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_cnt = 0
        self._block_hash: Optional[bytes] = None
        self.is_null = False
        # the slot generation of this process's one pool hold on the block
        # (a use, a lookup, or a new block's own), None when it holds none:
        # (block_id, _gen) is the handle, rebuilt in batches with
        # kvbm.Blocks.from_ids, so no per-block Python object is kept
        self._gen: Optional[int] = None
        self._plh: Optional[bytes] = None
        # 0: not looked up since the last touch; 1: returned by a lookup;
        # 2: matched ahead of vLLM's asking (the rest of a request's chain)
        self._look = 0
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


_G0 = [0]
_BYTES_ONLY = {bytes}
_EMPTY_L: list = []
_HANDLE = struct.Struct("=QI4xQ")  # struct kvbm_block: pool, id, (pad), gen
_ZERO4 = bytes(4)


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
    out = blocks if type(blocks) is list else list(blocks)
    mine = pool.blocks
    try:
        for b in out:
            if mine[b.block_id] is not b:
                break
        else:
            return out
    except (AttributeError, IndexError, TypeError):
        pass
    for b in out:
        if not isinstance(b, KVCacheBlock):
            raise TypeError(f"{what}: expected KVCacheBlock, got {type(b).__name__}")
        if not (0 <= b.block_id < len(mine)) or mine[b.block_id] is not b:
            raise ValueError(f"{what}: block {b.block_id} belongs to another BlockPool")
    return out  # pragma: no cover - the first loop found the bad one


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
            self._looked: list[KVCacheBlock] = []  # blocks with a pending lookup (_look)
            self._nlooked = 0  # how many of them still have it
            # (blocks, Blocks) of the last get_new_blocks until a free_blocks
            self._new: Optional[tuple] = None
            # the batch matched ahead (see get_cached_block): the chain's
            # PLHs, blocks and hold generations; vLLM asked for the first
            # _a_pos; this process holds the first _a_n (0: no batch)
            self._a_plhs: Sequence = _EMPTY_L
            self._a_blocks: list = _EMPTY_L
            self._a_gens: Sequence = _EMPTY_L
            self._a_pos = self._a_n = 0
            # PLH -> a block held here under it; stale entries are skipped
            # and dropped when it outgrows _index_cap
            self._index: dict[bytes, KVCacheBlock] = {}
            self._index_cap = 2 * num_gpu_blocks + 1024
            self._memo: dict[Any, Any] = {}     # (vLLM hash, group) -> (PLH, Hashes)
            self._reserve = kvbm.Blocks.concat()  # MUTABLE blocks set aside
            # 'plh' mode: a group-0 block hash is its own PLH, the index's key
            self._fast = hash_mode == "plh"
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
        if p.dup_policy != "allow":
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
        blk._gen = got.gens[0]
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
            held = [b for b in self.blocks if b._gen is not None]
            reserve, self._reserve = self._reserve, kvbm.Blocks.concat()
            ahead = self._take_ahead()
            self._new = None
            for b in self._looked:
                b._look = 0
            self._looked = []
            self._nlooked = 0
            self.pool.release(self._handles(held) + reserve + ahead)
            for b in self.blocks:
                b._gen = None
                b.ref_cnt = 0
        finally:
            if self._own_pool:
                self.pool.close()
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- holds ---------------------------------------------------------------
    #
    # This process holds a block in the pool at most once (b._gen set): for
    # its uses (ref_cnt > 0), for a lookup vLLM has not touched yet (_look),
    # or as a new block of its own. The one exception is the batch matched
    # ahead (_a_*): holds on the rest of a request's chain, kept apart,
    # each taken over by its block when touch() makes it a use; the others
    # are given back with the abandoned lookups.

    def _handles(self, blks: list) -> "kvbm.Blocks":
        """The pool handles of this process's holds on @blks, in order."""
        return _from_ids([b.block_id for b in blks], [b._gen for b in blks], self.pool)

    def _hold(self, b: KVCacheBlock) -> Optional["kvbm.Blocks"]:
        """This process's hold on @b as a kvbm.Blocks of one (None: none),
        for kvbm.Pool calls such as block_info()."""
        return None if b._gen is None else self._handles([b])

    def _index_put(self, plh: bytes, b: KVCacheBlock) -> None:
        """@b is held here under @plh. The index is cleaned lazily: an entry
        whose block is no longer held here under that PLH is stale."""
        index = self._index
        cur = index.get(plh)
        if cur is not None and cur is not b and cur._gen is not None and cur._plh == plh:
            return  # another block held here has it (a duplicate): keep the first
        if len(index) >= self._index_cap:
            self._index = index = {p: x for p, x in index.items()
                                   if x._gen is not None and x._plh == p}
        index[plh] = b

    def _look_up(self, b: KVCacheBlock) -> bool:
        """@b is looked up (vLLM will touch it, or abandon the lookup);
        whether it was not already."""
        if b._look:
            return False
        b._look = 1
        self._looked.append(b)
        self._nlooked += 1
        return True

    def _take_ahead(self) -> "kvbm.Blocks":
        """The holds of the batch matched ahead: the batch ends, the caller
        gives them back."""
        n = self._a_n
        ids = [b.block_id for b in self._a_blocks[:n]]
        gens = self._a_gens[:n]
        self._a_plhs = self._a_blocks = self._a_gens = _EMPTY_L
        self._a_pos = self._a_n = 0
        return _from_ids(ids, gens, self.pool)

    def _settle_batch(self) -> None:
        """The batch matched ahead ends before a touch (another chain is
        matched): the blocks vLLM asked for become ordinary lookups, each
        taking its hold from the batch; the other holds go back."""
        pos, n = self._a_pos, self._a_n
        A, G = self._a_blocks, self._a_gens
        ids = [b.block_id for b in A[pos:n]]
        gens = list(G[pos:n])
        for b, g in zip(A[:pos], G[:pos]):
            if b._gen is None:
                b._gen = g
            else:  # held here already: one hold is enough
                ids.append(b.block_id)
                gens.append(g)
            self._index_put(b._plh, b)
            self._look_up(b)
        self._a_plhs = self._a_blocks = self._a_gens = _EMPTY_L
        self._a_pos = self._a_n = 0
        if ids:
            self.pool.release(_from_ids(ids, gens, self.pool))

    def _release_unasked(self) -> None:
        """Gives back the holds of the batch matched ahead that vLLM has not
        asked for (an allocation needs them); the batch ends there."""
        pos, n = self._a_pos, self._a_n
        self._a_n = pos
        self.pool.release(_from_ids([b.block_id for b in self._a_blocks[pos:n]],
                                    self._a_gens[pos:n], self.pool))

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

    @staticmethod
    def _wire_plhs(hashes: list) -> Optional["kvbm.Hashes"]:
        """'plh' mode: vLLM's hashes are the PLHs. Checked (bytes, 16 each,
        mode < 3) and converted in one go; None when any is in doubt (the
        caller goes one by one, and _plh() says what is wrong)."""
        if not hashes:
            return kvbm.Hashes(None, b"", 0)
        if set(map(type, hashes)) != _BYTES_ONLY:
            return None
        try:
            hs = kvbm.Hashes.from_plh_bytes(hashes)
        except ValueError:
            return None
        if max(hs._plh[7::16]) >= 0xC0:  # the top byte of each hi, native order
            return None
        return hs

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

        A hit on a block this process holds costs no pool call. In 'plh'
        mode, a hash of a request hashed by ``request_block_hasher`` that
        is not held here matches the rest of the request's chain in one
        pool call; the blocks after it are held too (vLLM asks for them
        next), and those vLLM does not ask for are given back at the next
        ``touch``, as abandoned lookups are."""
        pos = self._a_pos
        if pos < self._a_n and self._a_plhs[pos] == block_hash and kv_cache_group_ids == _G0:
            # the next block of the batch matched ahead: its hold is there
            self._a_pos = pos + 1
            return [self._a_blocks[pos]]
        if self._fast and kv_cache_group_ids == _G0:
            try:
                b = self._index.get(block_hash)
            except TypeError:  # unhashable: the general path says why
                b = None
            if b is not None and b._gen is not None and b._plh == block_hash:
                if not b._look:
                    b._look = 1
                    self._looked.append(b)
                    self._nlooked += 1
                return [b]
        out: list[KVCacheBlock] = []
        taken: list[KVCacheBlock] = []
        batch = self._a_blocks
        for gid in kv_cache_group_ids:
            plh = self._lookup_key(block_hash, gid)[0]
            b = self._index.get(plh)
            if b is None or b._gen is None or b._plh != plh:
                b, new = self._match_from(block_hash, plh, gid)
                if b is None:
                    self._unlook(taken)
                    if self._a_blocks is not batch:  # a batch this call matched
                        self.pool.release(self._take_ahead())
                    return None
            else:
                new = self._look_up(b)
            if new:
                taken.append(b)  # a lookup of this call: undone on a miss
            out.append(b)
        return out

    def _match_from(self, block_hash, plh: bytes, gid: int):
        """Pool match of @plh, and of the rest of its request's chain when
        known (the batch matched ahead; an earlier batch is given back).
        (the block of @plh held as a lookup, whether it is a new lookup),
        or (None, False)."""
        rest = _chain_rest(plh) if self._fast and gid == 0 else None
        if rest is None:
            got = self.pool.match(self._lookup_key(block_hash, gid)[1])
            if not len(got):
                return None, False
            out, new = self._adopt(got, [plh], [block_hash], gid)
            return out[0], new
        plhs, buf = rest
        ahead = self._match_batch(plhs, kvbm.Hashes(None, buf, len(plhs)), 1)
        return (ahead[0], False) if ahead else (None, False)

    def _match_batch(self, plhs: list, hs: "kvbm.Hashes", asked: int) -> list:
        """Prefix match of @hs (the PLHs @plhs, 'plh' mode, group 0) in one
        pool call, as the batch matched ahead (an earlier one is given
        back), the first @asked counted as asked for. Its blocks."""
        if self._a_n:
            self._settle_batch()
        got = self.pool.match(hs)
        n = len(got)
        if not n:
            return _EMPTY_L
        ids, gens = got.ids_gens()
        blocks = self.blocks
        ahead = [blocks[i] for i in ids]
        plhs = plhs[:n]
        if [b._plh for b in ahead] != plhs:  # what the blocks hold, as far as we know
            for b, p in zip(ahead, plhs):
                if b._plh != p:
                    b._plh = p
                    b._block_hash = p + _ZERO4
        self._a_plhs, self._a_blocks, self._a_gens = plhs, ahead, gens
        self._a_pos, self._a_n = min(asked, n), n
        return ahead

    def _adopt(self, got, plhs: list, keys: Optional[list], gid: int):
        """Take the holds of pool match @got (the blocks of @plhs) as
        lookups: a block this process holds already keeps its one hold and
        the new one goes back. @keys: vLLM's hashes of the PLHs (None: the
        PLHs, 'plh' mode). (the blocks, whether the first is a new lookup)."""
        blocks = self.blocks
        index = self._index
        if len(got) == 1:  # no arrays for one
            _, bid, g = _HANDLE.unpack_from(got._buf, got._off * 24)
            out = [blocks[bid]]
            gens = (g,)
        else:
            out = [blocks[i] for i in got.ids]
            gens = got.gens
        extra = []
        first_new = not out[0]._look
        for j, (b, g, p) in enumerate(zip(out, gens, plhs)):
            if b._gen is not None:
                extra.append(b.block_id)
                extra.append(g)
            else:
                b._gen = g
            if b._plh != p:
                b._plh = p
                b._block_hash = p + _ZERO4 if keys is None else _key(keys[j], gid)
            if index.get(p) is not b:
                self._index_put(p, b)
            self._look_up(b)
        if extra:
            self.pool.release(_from_ids(extra[0::2], extra[1::2], self.pool))
        return out, first_new

    def longest_cache_hit(self, block_hashes: Sequence, max_blocks: Optional[int] = None,
                          kv_cache_group_id: int = 0) -> list[KVCacheBlock]:
        """vLLM's find_longest_cache_hit for one group, in one pool call:
        the blocks of the hashes in order up to the first miss (or
        @max_blocks), each with a lookup hold until ``touch``, as
        ``get_cached_block`` on each would give."""
        hashes = list(block_hashes[:max_blocks])
        gid = kv_cache_group_id
        plh_hs = self._wire_plhs(hashes) if self._fast and gid == 0 else None
        plhs = hashes if plh_hs is not None else [self._lookup_key(h, gid)[0] for h in hashes]
        out: list[KVCacheBlock] = []
        # the head this process holds already: no pool call
        index = self._index
        for plh in plhs:
            b = index.get(plh)
            if b is None or b._gen is None or b._plh != plh:
                break
            self._look_up(b)
            out.append(b)
        k = len(out)
        if k == len(plhs):
            return out
        if plh_hs is not None:  # the rest as a batch, all asked for
            return out + self._match_batch(plhs[k:], plh_hs[k:], len(plhs))
        got = self.pool.match(kvbm.Hashes.from_plh_bytes(plhs[k:]))
        if len(got):
            out += self._adopt(got, plhs[k:], hashes[k:], gid)[0]
        return out

    def _lookup_key(self, block_hash, gid: int):
        """(PLH, kvbm.Hashes of it) for vLLM's hash in group @gid, memoized:
        a prefix is looked up again and again."""
        try:
            return self._memo[(block_hash, gid)]
        except KeyError:
            pass
        except TypeError:
            if not isinstance(block_hash, bytearray):
                raise TypeError(f"block hash must be bytes or int, not "
                                f"{type(block_hash).__name__}") from None
            block_hash = bytes(block_hash)
            return self._lookup_key(block_hash, gid)
        plh = self._plh(block_hash, gid)
        if len(self._memo) >= 1 << 16:
            self._memo.clear()
        m = self._memo[(block_hash, gid)] = (plh, kvbm.Hashes.from_plh_bytes([plh]))
        return m

    def _unlook(self, blks: list) -> None:
        """The lookups of @blks are abandoned: their holds go back (those
        of blocks in use here stay, as the use's)."""
        if not blks:
            return
        for b in blks:
            b._look = 0
        self._nlooked -= len(blks)
        gone = set(map(id, blks))
        self._looked = [b for b in self._looked if id(b) not in gone]
        rel = [b for b in blks if b.ref_cnt == 0 and b._gen is not None]
        if rel:
            h = self._handles(rel)
            for b in rel:
                b._gen = None
            self.pool.release(h)

    def _drop_lookups(self) -> int:
        """Every pending lookup is abandoned, and the batch matched ahead
        ends: the holds of blocks not in use here go back, in one call.
        Returns how many lookups there were."""
        ids, gens = [], []
        n = self._nlooked
        if n:
            for b in self._looked:
                if b._look:
                    b._look = 0
                    if b.ref_cnt == 0 and b._gen is not None:
                        ids.append(b.block_id)
                        gens.append(b._gen)
                        b._gen = None
            self._nlooked = 0
        self._looked = []
        if self._a_n:
            n += self._a_pos  # asked for, not touched
            a = self._a_n
            ids += [b.block_id for b in self._a_blocks[:a]]
            gens += self._a_gens[:a]
            self._a_plhs = self._a_blocks = self._a_gens = _EMPTY_L
            self._a_pos = self._a_n = 0
        if ids:
            self.pool.release(_from_ids(ids, gens, self.pool))
        return n

    def release_lookups(self) -> int:
        """Give back every lookup hold that ``touch`` has not taken (vLLM
        looked a request's prefix up and did not schedule it). Returns how
        many."""
        return self._drop_lookups()

    def touch(self,
              blocks: Union[Sequence[KVCacheBlock], Sequence[Sequence[KVCacheBlock]]]) -> None:
        """One more use of each block (a prefix hit joins a request).

        A block found by ``get_cached_block`` keeps its lookup hold; a block
        this process already uses needs none. Lookup holds of blocks not
        touched here belong to abandoned lookups and are given back."""
        if not blocks:
            flat = []
        elif type(blocks[0]) is KVCacheBlock:
            flat = blocks
        else:
            flat = [b for group in blocks for b in group]
        if type(flat) is not list:
            flat = list(flat)
        n = self._a_n
        if not n:
            self._touch(flat, flat, None)
        else:
            A, G, pos = self._a_blocks, self._a_gens, self._a_pos
            k = len(flat) - pos
            if pos and k >= 0 and flat[k:] == A[:pos]:
                # vLLM touches what it asked of the batch, after any hits on
                # blocks held here: those take the batch's holds in one go
                self._touch(flat, flat[:k], None)
                extra = []
                nl = self._nlooked
                for b, g in zip(A[:pos], G[:pos]):
                    if b._gen is None:
                        b._gen = g
                    else:  # held here already: one hold is enough, and the
                        extra.append((b, g))  # next lookup finds it held here
                        self._index_put(b._plh, b)
                    b.ref_cnt += 1
                    if b._look:
                        b._look = 0
                        nl -= 1
                self._nlooked = nl
                # the batch's holds left (not asked for, and extras) go back
                rest = A[pos:n]
                gens = list(G[pos:n])
                for b, g in extra:
                    rest.append(b)
                    gens.append(g)
                # (PLHs None: the lookup fast path never hands them out)
                self._a_blocks, self._a_gens, self._a_plhs = rest, gens, [None] * len(rest)
                self._a_pos, self._a_n = 0, len(rest)
            else:
                holds = dict(zip([b.block_id for b in A[:n]], G[:n]))
                self._touch(flat, flat, holds)
        mc = self.metrics_collector
        if mc is not None:
            for b in flat:
                mc.on_block_accessed(b)
        # what is left: lookups of blocks in use here (their use holds
        # them), abandoned lookups, what was matched ahead and not touched
        if self._nlooked or self._a_n:
            self._drop_lookups()
        else:
            self._looked = []

    def _touch(self, flat: list, todo: list, holds: Optional[dict]) -> None:
        """touch() of @todo (part of @flat): ours, one use more each, their
        lookups taken. @holds: the batch's holds by block id, for the blocks
        to take over (the batch is then what is left of them)."""
        mine = self.blocks
        nl = self._nlooked
        extra = []
        i = 0
        try:
            for b in todo:
                if mine[b.block_id] is not b:
                    break
                if holds:
                    g = holds.pop(b.block_id, None)
                    if g is not None:  # matched ahead: that hold becomes the use's
                        if b._gen is None:
                            b._gen = g
                        else:  # held here already: one hold is enough, and
                            extra.append((b.block_id, g))  # the next lookup
                            self._index_put(b._plh, b)     # finds it held here
                if b._gen is None:
                    if b.is_null:
                        break
                    self._retake(b)  # its lookup hold went back: take one again
                b.ref_cnt += 1
                if b._look:
                    b._look = 0
                    nl -= 1
                i += 1
        except (AttributeError, IndexError, TypeError):
            pass
        except BaseException:  # the retake failed: the touches so far are undone
            self._untouch(todo[:i], nl, holds, extra)
            raise
        if i < len(todo):
            self._untouch(todo[:i], nl, holds, extra)
            _ours(self, flat, "touch()")
            raise ValueError(f"touch(): {todo[i]!r} cannot be touched")  # pragma: no cover
        self._nlooked = nl
        if holds is not None:
            self._set_batch(holds, extra)

    def _set_batch(self, holds: dict, extra: list) -> None:
        """The batch matched ahead is now @holds (block id -> generation)
        and @extra ((block id, generation) pairs), none asked for."""
        blocks = self.blocks
        ids = list(holds) + [i for i, _ in extra]
        self._a_blocks = [blocks[i] for i in ids]
        self._a_gens = list(holds.values()) + [g for _, g in extra]
        self._a_plhs = [None] * len(ids)  # never handed out by the fast path
        self._a_pos, self._a_n = 0, len(ids)

    def _untouch(self, done: list, nl: int, holds: Optional[dict], extra: list) -> None:
        """touch() failed after @done: their uses go back; those left
        unused keep their holds as lookups (a use's hold or the batch's
        that it took over), the batch keeps the rest."""
        self._nlooked = nl
        if holds is not None:
            self._set_batch(holds, extra)
        for b in done:
            b.ref_cnt -= 1
            if b.ref_cnt == 0 and not b._look:
                self._look_up(b)

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
        b._gen = got.gens[0]
        self._index_put(b._plh, b)

    def free_blocks(self, ordered_blocks: Iterable[KVCacheBlock]) -> None:
        """One use less of each block, in eviction order (vLLM passes a
        request's blocks tail first). Blocks whose last use in this process
        ends are released to the pool in that order, in one call: under
        the 'lru' and 'fifo' backends the first released is the first
        evicted. A block looked up meanwhile keeps its hold as the
        lookup's, for touch()."""
        blocks = ordered_blocks if type(ordered_blocks) is list else list(ordered_blocks)
        self._new = None  # their handles may go stale
        mine = self.blocks
        ids = []
        gens = []
        add_id = ids.append
        add_gen = gens.append
        done = len(blocks)
        dec = []  # the blocks decremented, once per decrement, for the undo
        add_dec = dec.append
        try:
            for i, b in enumerate(blocks):
                if mine[b.block_id] is not b:
                    done = i
                    break
                r = b.ref_cnt
                if r >= 1:
                    add_dec(b)
                if r == 1:
                    b.ref_cnt = 0
                    if not b._look and not b.is_null:  # its last use here: the hold goes back
                        add_id(b.block_id)
                        add_gen(b._gen)
                        b._gen = None
                elif r > 1:
                    b.ref_cnt = r - 1
                elif not b.is_null:
                    done = i
                    break
        except (AttributeError, IndexError, TypeError):
            done = i
        if done < len(blocks):  # a bad one: undo, then say what is wrong
            for b in dec:  # exactly what was taken (a null block at 0 was not)
                b.ref_cnt += 1
            for i, g in zip(ids, gens):
                mine[i]._gen = g
            _ours(self, blocks, "free_blocks()")
            b = blocks[done]
            raise ValueError(
                f"free_blocks(): block {b.block_id} freed {sum(x is b for x in blocks)} "
                f"times, but this process uses it {b.ref_cnt} times (freed twice?)")
        if ids:
            self.pool.release(_from_ids(ids, gens, self.pool))

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        """``num_blocks`` blocks for this process (ref_cnt 1, no hash): the
        ones ``reserve()`` set aside first, then from the pool's free
        blocks, then by evicting cached blocks no process uses. ValueError
        when the pool cannot serve them (another process may have taken
        what ``get_num_free_blocks`` counted: see ``reserve``)."""
        if type(num_blocks) is not int or num_blocks < 0:
            raise ValueError(f"num_blocks must be an int >= 0, got {num_blocks!r}")
        if num_blocks == 0:
            return []
        k = min(num_blocks, len(self._reserve))
        try:
            if not k:
                got = self._allocate(num_blocks)
            elif k < num_blocks:
                got = kvbm.Blocks.concat(self._reserve[:k], self._allocate(num_blocks - k))
            else:
                got = self._reserve[:k]
        except kvbm.NoSpace:
            raise ValueError(f"Cannot get {num_blocks} free blocks from the pool") from None
        if k:
            self._reserve = self._reserve[k:]
        self._new = None
        blocks = self.blocks
        ids, gens = got.ids_gens()
        out = [blocks[i] for i in ids]
        mc = self.metrics_collector
        if mc is None:
            for b, g in zip(out, gens):
                b._gen = g
                b.ref_cnt = 1
                if b._plh is not None:  # it was cached: evicted by this allocation
                    b._block_hash = None
                    b._plh = None
            self._new = (out, got)  # for cache_full_blocks, next
            return out
        for b, g in zip(out, gens):
            b._gen = g
            b.ref_cnt = 1
            if b._plh is not None:
                mc.on_block_evicted(b)
                b._block_hash = None
                b._plh = None
            mc.on_block_allocated(b)
        self._new = (out, got)
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
        """pool.allocate(n); when it comes up short, once more after giving
        back the batch matched ahead (holds vLLM does not know of), and
        after a reap."""
        try:
            return self.pool.allocate(n)
        except kvbm.NoSpace:
            if self._a_pos < self._a_n:
                self._release_unasked()
            elif not self.pool.reap():
                raise
        try:
            return self.pool.allocate(n)
        except kvbm.NoSpace:
            if not self.pool.reap():
                raise
        return self.pool.allocate(n)

    def cache_full_blocks(self, request: Any, blocks: list[KVCacheBlock], num_cached_blocks: int,
                          num_full_blocks: int, block_size: int, kv_cache_group_id: int) -> None:
        """Register ``blocks[num_cached_blocks:num_full_blocks]`` under the
        request's block hashes, with their tokens when the pool keeps them
        for events: one stage call and one register call for the lot. A
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
        gid = kv_cache_group_id
        span = blocks[num_cached_blocks:num_full_blocks]
        mine = self.blocks
        todo = span
        handles = None
        new, self._new = self._new, None
        if new is not None and span == new[0][:len(span)]:
            # the blocks of the last get_new_blocks, untouched since (no free
            # came between): theirs by construction, their handles at hand
            handles = new[1][:len(span)]
            span = _EMPTY_L
        try:
            for b in span:
                if mine[b.block_id] is not b or b._block_hash is not None or b.ref_cnt < 1 \
                        or b._gen is None:
                    todo = None
                    break
        except (AttributeError, IndexError, TypeError):
            todo = None
        if todo is None:  # a null block to skip, or a bad one to name
            todo, at = [], []
            for i, b in enumerate(_ours(self, span, "cache_full_blocks()"), num_cached_blocks):
                if b.is_null:
                    continue
                if b._block_hash is not None or b.ref_cnt < 1 or b._gen is None:
                    raise ValueError(
                        f"cache_full_blocks(): block {b.block_id} is not a new block of this "
                        f"process (ref_cnt {b.ref_cnt}, hash {b._block_hash!r})")
                todo.append(b)
                at.append(i)
            if not todo:
                return
            mine_hashes = [hashes[i] for i in at]
        else:
            at = None
            mine_hashes = hashes[num_cached_blocks:num_full_blocks]
        plh_hs = None
        if self._fast and gid == 0:
            plh_hs = self._wire_plhs(mine_hashes)
            plhs = mine_hashes if plh_hs is not None else \
                [self._plh(h, 0) for h in mine_hashes]
        else:
            plhs = [self._lookup_key(h, gid)[0] for h in mine_hashes]
        if plh_hs is None:
            plh_hs = kvbm.Hashes.from_plh_bytes(plhs)
        toks = None
        if self.pool.keep_tokens:
            tokens = request.all_token_ids
            if len(tokens) < num_full_blocks * block_size:
                raise ValueError(f"request {getattr(request, 'request_id', '?')} has "
                                 f"{len(tokens)} tokens, not the {num_full_blocks * block_size} "
                                 f"of {num_full_blocks} full blocks")
            if at is None:  # no null block among them
                toks = tokens[num_cached_blocks * block_size:num_full_blocks * block_size]
            else:
                toks = []
                for i in at:
                    toks.extend(tokens[i * block_size:(i + 1) * block_size])
        if handles is None:
            handles = self._handles(todo)
        self.pool.stage(handles, plh_hs)
        try:
            self.pool.register(handles, tokens=toks)
        except BaseException:
            self.pool.unstage(handles)
            raise
        # dup_policy 'allow': the ids stay; the holds' generations are read
        # back. The blocks join the index when first looked up (a pool
        # match finds them held here): most are never looked up while in use
        keys = [p + _ZERO4 for p in plhs] if self._fast and gid == 0 else \
            [_key(h, gid) for h in mine_hashes]
        for b, g, p, k in zip(todo, handles.ids_gens()[1], plhs, keys):
            b._gen = g
            b._plh = p
            b._block_hash = k
        if self.enable_kv_cache_events and self.hash_mode == "vllm":
            first = num_cached_blocks if at is None else at[0]
            prev = self._external(self._plh(hashes[first - 1], gid)) if first > 0 else None
            for plh in plhs:
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
            if b._gen is not None:
                self.pool.set_reset_on_release(self._handles([b]), True)
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
        lookup hold into a use without taking a block (the lookups it does
        not take go back to the pool).

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
            1 for b in self._looked if b._look and b.ref_cnt == 0 and b._gen is not None) + sum(
            1 for b in self._a_blocks[:self._a_n] if b._gen is None and b.ref_cnt == 0)

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

BENCH_BLOCKS, BENCH_BS, BENCH_N = 1024, 16, 64


class BenchRequest:
    """The parts of vLLM's Request the sequences use: 64 blocks of tokens,
    salted by @salt, hashed by @hasher (one per engine, as vLLM makes it)."""

    def __init__(self, hasher, salt):
        self.request_id, self.cache_salt, self.lora_request = "bench", salt, None
        self.all_token_ids, self.block_hashes = list(range(BENCH_N * BENCH_BS)), []
        self.block_hashes.extend(hasher(self))


def bench_round(bp, r, others, best: dict) -> None:
    """One round of vLLM's call sequences on @bp (this adapter, or any
    object with vLLM's BlockPool methods), keeping the best blocks/s in
    @best: a 64-block prefix hit (64 get_cached_block, touch, free_blocks,
    as vLLM's find_longest_cache_hit and allocate_slots make them) when no
    request uses it and when one does; the unused hit through
    longest_cache_hit when @bp has it; each of @others (requests not
    cached) allocated, cached and freed, evicting once the pool is full."""
    bs, n = BENCH_BS, BENCH_N
    hashes = r.block_hashes

    def hit():
        get = bp.get_cached_block
        out = []
        for h in hashes:
            g = get(h, [0])
            if g is None:
                break
            out.append(g[0])
        bp.touch(out)
        bp.free_blocks(reversed(out))

    def timed(key, fn, times, blocks):
        t = time.perf_counter()
        for _ in range(times):
            fn()
        best[key] = max(best.get(key, 0.0), times * blocks / (time.perf_counter() - t))

    new = bp.get_new_blocks(n)
    bp.cache_full_blocks(r, new, 0, n, bs, 0)
    bp.free_blocks(reversed(new))
    timed("hit_unused", hit, 200, n)
    if hasattr(bp, "longest_cache_hit"):
        def hit_batch():
            out = bp.longest_cache_hit(hashes)
            bp.touch(out)
            bp.free_blocks(reversed(out))
        timed("batch_hit_unused", hit_batch, 200, n)
    held = [bp.get_cached_block(h, [0])[0] for h in hashes]
    bp.touch(held)
    timed("hit_in_use", hit, 200, n)
    bp.free_blocks(held)
    it = iter(others)

    def cache():
        o = next(it)
        blocks = bp.get_new_blocks(n)
        bp.cache_full_blocks(o, blocks, 0, n, bs, 0)
        bp.free_blocks(reversed(blocks))
    timed("new_cache_free", cache, len(others), n)


def _bench(pool_name: str = "kvbm-vllm-bench", rounds: int = 5) -> dict:
    """Blocks per second of vLLM's call sequences (bench_round) on a
    1024-block pool, best of @rounds."""
    best: dict = {}
    hasher = request_block_hasher(BENCH_BS)
    r = BenchRequest(hasher, None)
    try:
        with BlockPool(BENCH_BLOCKS, True, BENCH_BS, False, pool_name=pool_name) as bp:
            for k in range(rounds):
                bench_round(bp, r, [BenchRequest(hasher, f"{k}-{i}") for i in range(100)], best)
    finally:
        kvbm.destroy(pool_name, force=True)
    return best


if __name__ == "__main__":
    load = os.getloadavg()[0]
    for k, v in _bench().items():
        print(f"{k:16s} {v / 1e6:6.2f} M blocks/s")
    print(f"(load average {load:.2f})")
