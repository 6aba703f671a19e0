# SPDX-License-Identifier: Apache-2.0
"""Blocks: a batch of block handles (struct kvbm_block) in one C buffer."""

import ctypes
import struct
from array import array
from collections import namedtuple

from ._lib import BLOCK_SIZE
from .errors import ForeignHandle

try:  # optional
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None

#: one block handle as a plain value: block id, slot generation, and the
#: instance id of the pool it belongs to
Block = namedtuple("Block", "id gen pool")

_HANDLE = struct.Struct("=QI4xQ")  # struct kvbm_block: pool, id, (pad), gen
_BUF_T = {}
_IDS_GENS = {}  # n -> struct.Struct of n handles' ids and gens


def buf_type(n):
    """The ctypes type of a zeroed buffer of @n handles (cached per n)."""
    t = _BUF_T.get(n)
    if t is None:
        t = _BUF_T[n] = ctypes.c_ubyte * (BLOCK_SIZE * n if n else 1)
    return t


class Blocks:
    """@n block handles of one Pool in one contiguous C buffer.

    Made by Pool calls; a Blocks remembers the Pool object that made it and
    is refused (ForeignHandle) by any other. Indexing gives a Block value,
    slicing a Blocks sharing the buffer."""

    __slots__ = ("_buf", "_off", "_n", "_pool", "_addr")

    def __len__(self):
        return self._n

    @property
    def pool(self):
        """The Pool object these handles belong to (None: not known)."""
        return self._pool

    def __getitem__(self, key):
        n = self._n
        if isinstance(key, slice):
            idx = range(*key.indices(n))
            if idx.step == 1:
                return make(self._buf, self._off + idx.start, max(0, len(idx)), self._pool)
            out = buf_type(len(idx))()
            for j, i in enumerate(idx):
                ctypes.memmove(ctypes.addressof(out) + j * BLOCK_SIZE,
                               self._addr + i * BLOCK_SIZE, BLOCK_SIZE)
            return make(out, 0, len(idx), self._pool)
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError("Blocks indices must be int or slice, not %s" % type(key).__name__)
        if not -n <= key < n:
            raise IndexError("Blocks index %d out of range (%d)" % (key, n))
        pool, bid, gen = _HANDLE.unpack_from(self._buf, (self._off + key % n) * BLOCK_SIZE)
        return Block(bid, gen, pool)

    def __iter__(self):
        mv = memoryview(self._buf).cast("B")[self._off * BLOCK_SIZE:
                                             (self._off + self._n) * BLOCK_SIZE]
        for pool, bid, gen in _HANDLE.iter_unpack(mv):
            yield Block(bid, gen, pool)

    @property
    def ids(self):
        """The block ids, as array('I')."""
        if not self._n:  # an empty Blocks may have a 1-byte buffer: no cast
            return array("I")
        q = memoryview(self._buf).cast("B").cast("I")
        s = self._off * 6 + 2
        return array("I", q[s:s + 6 * self._n:6])

    @property
    def gens(self):
        """The handles' slot generations, as array('Q') (with ids, what
        from_ids() needs to rebuild them)."""
        if not self._n:
            return array("Q")
        q = memoryview(self._buf).cast("B").cast("Q")
        s = self._off * 3 + 2
        return array("Q", q[s:s + 3 * self._n:3])

    def ids_gens(self):
        """(ids, gens): the block ids and generations as two tuples, from
        one unpack of the buffer (what from_ids() takes back)."""
        n = self._n
        st = _IDS_GENS.get(n)
        if st is None:
            st = struct.Struct("=" + "8xI4xQ" * n)
            if len(_IDS_GENS) < 4096:
                _IDS_GENS[n] = st
        t = st.unpack_from(self._buf, self._off * BLOCK_SIZE) if n else ()
        return t[0::2], t[1::2]

    def ids_numpy(self):
        """The block ids as a numpy uint32 array (a copy)."""
        if _np is None:
            raise ImportError("ids_numpy() needs numpy")
        if not self._n:
            return _np.zeros(0, dtype=_np.uint32)
        a = _np.frombuffer(self._buf, dtype=_np.uint32, count=6 * self._n,
                           offset=self._off * BLOCK_SIZE)
        return a[2::6].copy()

    def tobytes(self):
        """The raw struct kvbm_block array (24 bytes a handle)."""
        return ctypes.string_at(self._addr, self._n * BLOCK_SIZE)

    @staticmethod
    def concat(*parts):
        """One Blocks of @parts in order; they must come from one Pool.
        Empty parts belong to no Pool in particular; with no parts (or only
        empty ones without a Pool) the result is an empty Blocks that every
        Pool accepts as a no-op."""
        if len(parts) == 1 and not isinstance(parts[0], Blocks):
            parts = tuple(parts[0])
        for p in parts:
            if not isinstance(p, Blocks):
                raise TypeError("Blocks.concat takes Blocks, not %s" % type(p).__name__)
        pools = {id(p._pool): p._pool for p in parts if p._n}
        if len(pools) > 1:
            raise ForeignHandle("Blocks.concat: blocks of different Pool objects",
                                ForeignHandle.code, None)
        pool = next(iter(pools.values())) if pools else (parts[0]._pool if parts else None)
        total = sum(p._n for p in parts)
        out = buf_type(total)()
        at = ctypes.addressof(out)
        for p in parts:
            ctypes.memmove(at, p._addr, p._n * BLOCK_SIZE)
            at += p._n * BLOCK_SIZE
        return make(out, 0, total, pool)

    def __add__(self, other):
        if not isinstance(other, Blocks):
            return NotImplemented
        return Blocks.concat(self, other)

    @classmethod
    def from_handles(cls, handles, pool=None):
        """From Block values (id, gen, pool instance id); @pool the Pool
        object they belong to."""
        handles = list(handles)
        out = buf_type(len(handles))()
        for i, h in enumerate(handles):
            if not isinstance(h, Block):
                raise TypeError("handle %d: need a kvbm.Block, not %s" % (i, type(h).__name__))
            _HANDLE.pack_into(out, i * BLOCK_SIZE, h.pool, h.id, h.gen)
        return make(out, 0, len(handles), pool)

    @classmethod
    def from_ids(cls, ids, gens, pool):
        """The handles of blocks @ids with generations @gens (sequences of
        int) in @pool (a Pool): a caller that keeps (id, gen) per block
        rebuilds a batch with a few C-level array copies, no Python object
        per block."""
        n = len(ids)
        if len(gens) != n:
            raise ValueError("from_ids: %d ids but %d gens" % (n, len(gens)))
        try:
            if n and not 0 <= min(ids) <= max(ids) <= 0xFFFFFFFF:
                raise ValueError("from_ids: a block id does not fit in a u32")
            return from_ids(ids, gens, pool)
        except (OverflowError, TypeError):
            raise ValueError("from_ids: ids and gens must be u32 and u64 ints") from None

    def __eq__(self, other):
        if not isinstance(other, Blocks):
            return NotImplemented
        return self._n == other._n and self.tobytes() == other.tobytes()

    __hash__ = None

    def __repr__(self):
        ids = self.ids.tolist()
        shown = ids if len(ids) <= 8 else ids[:8] + ["..."]
        return "<kvbm.Blocks %d: ids %s>" % (self._n, ", ".join(map(str, shown)))


_new = object.__new__


def make(buf, off, n, pool):
    """A Blocks of @n handles from handle @off of @buf (a ctypes buffer,
    or an array('Q') of 3 words a handle)."""
    b = _new(Blocks)
    b._buf = buf
    b._off = off
    b._n = n
    b._pool = pool
    b._addr = (buf.buffer_info()[0] if type(buf) is array else ctypes.addressof(buf)) + \
        off * BLOCK_SIZE
    return b


def from_ids(ids, gens, pool):
    """Blocks.from_ids without its checks, for callers whose ids and gens
    came from the pool (the vLLM adapter): the handles are three u64 words
    (pool, id with a zero pad, gen) filled by three strided array copies."""
    n = len(ids)
    if not n:
        return make(buf_type(0)(), 0, 0, pool)
    a = array("Q", bytes(BLOCK_SIZE * n))
    a[0::3] = array("Q", (pool.instance_id,)) * n
    a[1::3] = array("Q", ids)
    a[2::3] = array("Q", gens)
    return make(a, 0, n, pool)
