# SPDX-License-Identifier: Apache-2.0
"""Token hashing: block hashes, sequence hashes and PLHs, computed by
libkvbm itself (bit-identical to the C library and to kvbm-logical)."""

import ctypes
import struct
import sys
from array import array

from ._lib import HASHES_SIZE, PLH_SIZE, fn
from .errors import InvalidArgument, raise_rc

try:  # optional
    import numpy as _np
except ImportError:  # pragma: no cover - numpy is a test dependency
    _np = None

assert array("I").itemsize == 4 and sys.byteorder == "little"

_U32_MAX = 0xFFFFFFFF
_INT_CODES = "bBhHiIlLqQ"


def _bad_token(seq):
    """The first element of @seq that is not a u32, as a ValueError/TypeError."""
    for i, v in enumerate(seq):
        if isinstance(v, bool) or not isinstance(v, int):
            try:
                v = v.__index__()
            except (AttributeError, TypeError):
                return TypeError("tokens[%d] = %r is not an integer" % (i, v))
        if not 0 <= v <= _U32_MAX:
            return ValueError("tokens[%d] = %d does not fit in a u32 token id" % (i, v))
    return TypeError("tokens are not u32 token ids")


def tokens_u32(tokens):
    """@tokens as a contiguous buffer of native u32 and its address and
    length: (keepalive, address, count). Accepts a list/tuple/range of ints,
    an array.array of an integer type, a numpy integer array, or a
    bytes-like object holding u32 values (its length a multiple of 4)."""
    if isinstance(tokens, array):
        if tokens.typecode == "I":
            a = tokens
        elif tokens.typecode in _INT_CODES:
            try:
                a = array("I", tokens)
            except OverflowError:
                raise _bad_token(tokens) from None
        else:
            raise TypeError("tokens: array of typecode %r is not integer" % tokens.typecode)
        addr, n = a.buffer_info()
        return a, addr, n
    if _np is not None and isinstance(tokens, _np.ndarray):
        if tokens.dtype.kind not in "iu":
            raise TypeError("tokens: numpy dtype %s is not an integer type" % tokens.dtype)
        if tokens.ndim != 1:
            raise ValueError("tokens: numpy array must be 1-dimensional, not %d" % tokens.ndim)
        if tokens.dtype != _np.uint32:
            if tokens.size and (tokens.min() < 0 or tokens.max() > _U32_MAX):
                bad = int(_np.nonzero((tokens < 0) | (tokens > _U32_MAX))[0][0])
                raise ValueError("tokens[%d] = %d does not fit in a u32 token id"
                                 % (bad, int(tokens[bad])))
            tokens = tokens.astype(_np.uint32)
        tokens = _np.ascontiguousarray(tokens)
        return tokens, tokens.ctypes.data, tokens.size
    if isinstance(tokens, (bytes, bytearray, memoryview)):
        mv = memoryview(tokens)
        if mv.format not in ("B", "b", "c", "I", "=I", "<I", "@I"):
            try:
                return tokens_u32(array("I", mv.tolist()))
            except TypeError:
                raise TypeError("tokens: buffer of format %r is not integer" % mv.format)
        if mv.nbytes % 4:
            raise ValueError("tokens: a bytes-like object of u32 needs a length that is a "
                             "multiple of 4, not %d" % mv.nbytes)
        a = array("I")
        a.frombytes(mv.cast("B") if mv.format != "B" else mv)
        addr, n = a.buffer_info()
        return a, addr, n
    if isinstance(tokens, str):
        raise TypeError("tokens: a str is not a sequence of token ids")
    try:
        a = array("I", tokens)
    except (OverflowError, TypeError):
        try:
            seq = list(tokens)
        except TypeError:
            raise TypeError("tokens: %s is not a sequence of token ids"
                            % type(tokens).__name__) from None
        raise _bad_token(seq) from None
    addr, n = a.buffer_info()
    return a, addr, n


def check_block_size(block_size):
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError("block_size must be an int, not %s" % type(block_size).__name__)
    if not 1 <= block_size <= 1024 or block_size & (block_size - 1):
        raise InvalidArgument("block_size must be a power of two 1..1024, not %d" % block_size,
                              InvalidArgument.code, None)


def check_u64(name, v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("%s must be an int, not %s" % (name, type(v).__name__))
    if not 0 <= v < 1 << 64:
        raise ValueError("%s = %d does not fit in a u64" % (name, v))
    return v


def salt_hash(cache_namespace=None, lora_name=None):
    """The canonical salt of a request (dynamo-kv-hashing compute_salt_hash):
    None or "" means absent."""
    for n, v in (("cache_namespace", cache_namespace), ("lora_name", lora_name)):
        if v is not None and not isinstance(v, str):
            raise TypeError("%s must be a str or None, not %s" % (n, type(v).__name__))
    enc = [None if v is None else v.encode() for v in (cache_namespace, lora_name)]
    for n, v in zip(("cache_namespace", "lora_name"), enc):
        if v is not None and b"\0" in v:
            raise ValueError("%s contains a NUL character" % n)
    return fn.salt_hash(enc[0], enc[1])


class Hashes:
    """The hashes of consecutive complete blocks, in one C buffer.

    Made by hash_tokens(), Tokens.hashes() or Hashes.from_plh_bytes().
    Immutable. A Hashes made from PLHs alone has no block hashes."""

    __slots__ = ("_full", "_plh", "_n", "_bs", "__weakref__")

    def __init__(self, full=None, plh=None, n=0, block_size=None):
        # _full: n x struct kvbm_block_hashes (bytes) or None;
        # _plh: n x struct kvbm_plh (bytes), built from _full on first use;
        # _bs: the block size they were hashed with (None: not known)
        # Every C call trusts n against these buffers, so a Hashes made by
        # hand with a wrong n would let the library read past them.
        if not isinstance(n, int) or n < 0:
            raise ValueError("Hashes: n must be an int >= 0, not %r" % (n,))
        if full is None and plh is None and n:
            raise ValueError("Hashes: %d hashes need their bytes" % n)
        for what, buf, size in (("full", full, HASHES_SIZE), ("plh", plh, PLH_SIZE)):
            if buf is not None and (not isinstance(buf, bytes) or len(buf) != n * size):
                raise ValueError("Hashes: %s must be %d bytes for %d hashes, not %s" %
                                 (what, n * size, n, len(buf) if isinstance(buf, bytes)
                                  else type(buf).__name__))
        self._full = full
        self._plh = plh
        self._n = n
        self._bs = block_size

    @property
    def block_size(self):
        """The block size the tokens were hashed with (None when unknown)."""
        return self._bs

    @classmethod
    def from_plh_bytes(cls, items):
        """From 16-byte big-endian PLHs (the wire form of plh_bytes()).

        One join, one byte swap of every 64-bit word (the wire's big-endian
        hi, lo to the native struct kvbm_plh), all in C: tens of ns a hash,
        so an adapter can build Hashes from a request's wire PLHs per call."""
        if isinstance(items, (bytes, bytearray)):
            raise TypeError("from_plh_bytes takes a list of 16-byte PLHs, not one bytes")
        if type(items) is not list and type(items) is not tuple:
            items = list(items)
        n = len(items)
        try:
            data = b"".join(items)
        except TypeError:
            data = None
        if data is None or len(data) != 16 * n or (n and set(map(len, items)) != {16}):
            for i, b in enumerate(items):
                if not isinstance(b, (bytes, bytearray, memoryview)) or len(b) != 16:
                    raise ValueError("PLH %d: need 16 bytes, got %r" % (i, b))
            raise ValueError("PLHs: need 16 bytes each")  # pragma: no cover
        a = array("Q")
        a.frombytes(data)
        a.byteswap()
        return cls(None, a.tobytes(), n)

    @classmethod
    def from_plhs(cls, pairs):
        """From (hi, lo) pairs of 64-bit ints."""
        out = bytearray()
        n = 0
        for hi, lo in pairs:
            out += struct.pack("=QQ", check_u64("hi", hi), check_u64("lo", lo))
            n += 1
        return cls(None, bytes(out), n)

    def __len__(self):
        return self._n

    def _plh_buf(self):
        if self._plh is None:
            q = memoryview(self._full).cast("Q")
            a = array("Q", bytes(PLH_SIZE * self._n))
            a[0::2] = array("Q", q[2::4])
            a[1::2] = array("Q", q[3::4])
            self._plh = a.tobytes()
        return self._plh

    def _pairs(self):
        q = memoryview(self._plh_buf()).cast("Q")
        return zip(q[0::2], q[1::2])

    @property
    def has_block_hashes(self):
        return self._full is not None

    def _need_full(self, what):
        if self._full is None:
            raise ValueError("%s: these Hashes were made from PLHs alone" % what)
        return memoryview(self._full).cast("Q")

    @property
    def block_hashes(self):
        return self._need_full("block_hashes")[0::4].tolist()

    @property
    def seq_hashes(self):
        if self._full is not None:
            return memoryview(self._full).cast("Q")[1::4].tolist()
        f = fn.plh_current
        return [f(hi, lo) for hi, lo in self._pairs()]

    @property
    def plhs(self):
        """(hi, lo) of each PLH."""
        return list(self._pairs())

    @property
    def router_hashes(self):
        f = fn.plh_router_hash
        return [f(hi, lo) for hi, lo in self._pairs()]

    @property
    def positions(self):
        f = fn.plh_position
        return [f(hi, lo) for hi, lo in self._pairs()]

    def plh_bytes(self, i):
        """The 16-byte big-endian wire form of PLH @i."""
        if not -self._n <= i < self._n:
            raise IndexError("Hashes index %d out of range (%d)" % (i, self._n))
        i %= self._n
        hi, lo = struct.unpack_from("=QQ", self._plh_buf(), i * PLH_SIZE)
        return struct.pack(">QQ", hi, lo)

    def plh_bytes_list(self):
        return [struct.pack(">QQ", hi, lo) for hi, lo in self._pairs()]

    def __getitem__(self, key):
        if isinstance(key, slice):
            idx = range(*key.indices(self._n))
            if idx.step == 1:
                a, b = idx.start, idx.stop if idx.stop > idx.start else idx.start
                full = None if self._full is None else \
                    self._full[a * HASHES_SIZE:b * HASHES_SIZE]
                plh = None if self._plh is None else self._plh[a * PLH_SIZE:b * PLH_SIZE]
                return Hashes(full, plh, b - a, self._bs)
            full = None if self._full is None else b"".join(
                self._full[i * HASHES_SIZE:(i + 1) * HASHES_SIZE] for i in idx)
            plh = None if self._plh is None or full is not None else b"".join(
                self._plh[i * PLH_SIZE:(i + 1) * PLH_SIZE] for i in idx)
            return Hashes(full, plh, len(idx), self._bs)
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError("Hashes indices must be int or slice, not %s" % type(key).__name__)
        return self[key:key + 1 if key != -1 else None] if -self._n <= key < self._n \
            else self._index_error(key)

    def _index_error(self, key):
        raise IndexError("Hashes index %d out of range (%d)" % (key, self._n))

    def __iter__(self):
        for i in range(self._n):
            yield self[i]

    def __add__(self, other):
        if not isinstance(other, Hashes):
            return NotImplemented
        bs = self._bs if self._bs == other._bs else None
        if self._full is not None and other._full is not None:
            return Hashes(self._full + other._full, None, self._n + other._n, bs)
        return Hashes(None, self._plh_buf() + other._plh_buf(), self._n + other._n, bs)

    def __eq__(self, other):
        if not isinstance(other, Hashes):
            return NotImplemented
        return self._n == other._n and self._plh_buf() == other._plh_buf()

    def __hash__(self):
        return hash(self._plh_buf())

    def __repr__(self):
        return "<kvbm.Hashes of %d block%s>" % (self._n, "" if self._n == 1 else "s")


def hash_tokens(tokens, block_size, salt=0):
    """The Hashes of every complete block of @tokens (a trailing partial
    block is not hashed)."""
    check_block_size(block_size)
    check_u64("salt", salt)
    keep, addr, n = tokens_u32(tokens)
    nb = n // block_size
    buf = ctypes.create_string_buffer(nb * HASHES_SIZE) if nb else None
    r = fn.hash_tokens(addr, n, block_size, salt, buf, nb)
    if r < 0:
        raise_rc(r, "kvbm_hash_tokens")
    del keep
    return Hashes(buf.raw if nb else b"", None, nb, block_size)


class Tokens:
    """A growing token sequence (kvbm_tokens): every block the appended
    tokens complete is hashed once."""

    def __init__(self, block_size, salt=0):
        check_block_size(block_size)
        check_u64("salt", salt)
        h = ctypes.c_void_p()
        r = fn.tokens_new(block_size, salt, ctypes.byref(h))
        if r < 0:
            raise_rc(r, "kvbm_tokens_new")
        self._h = h.value
        self._bs = block_size

    def _handle(self):
        if not self._h:
            raise ValueError("Tokens: closed")
        return self._h

    def extend(self, tokens):
        """Appends @tokens; returns the range of block indices they completed."""
        h = self._handle()
        keep, addr, n = tokens_u32(tokens)
        first, nnew = ctypes.c_size_t(), ctypes.c_size_t()
        r = fn.tokens_extend(h, addr, n, ctypes.byref(first), ctypes.byref(nnew))
        if r < 0:
            raise_rc(r, "kvbm_tokens_extend")
        del keep
        return range(first.value, first.value + nnew.value)

    def append(self, token):
        return self.extend([token])

    @property
    def block_size(self):
        return self._bs

    @property
    def total(self):
        """Tokens appended, the partial block included."""
        return fn.tokens_total(self._handle())

    def __len__(self):
        return fn.tokens_total(self._handle())

    @property
    def blocks(self):
        """Complete blocks."""
        return fn.tokens_blocks(self._handle())

    def hashes(self, start=0, stop=None):
        """The Hashes of complete blocks [start, stop)."""
        h = self._handle()
        nb = fn.tokens_blocks(h)
        start, stop, _ = slice(start, stop).indices(nb)
        stop = max(stop, start)
        if stop == start:
            return Hashes(b"", None, 0, self._bs)
        # the sequence keeps its blocks in one array (kvbm_tokens_block(t, i)
        # is &blocks[i]): one copy
        p0 = fn.tokens_block(h, start)
        return Hashes(ctypes.string_at(p0, (stop - start) * HASHES_SIZE), None, stop - start,
                      self._bs)

    def close(self):
        if self._h:
            fn.tokens_free(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["Hashes", "Tokens", "hash_tokens", "salt_hash", "tokens_u32"]
