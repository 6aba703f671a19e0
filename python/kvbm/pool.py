# SPDX-License-Identifier: Apache-2.0
"""Pool: one process's attachment to a shared kvbm pool."""

import ctypes
import errno as _errno
import math
import struct
import time
import weakref
from collections import namedtuple
from itertools import repeat

from . import _lib
from ._lib import BLOCK_SIZE, PLH_SIZE, fn
from .blocks import Block, Blocks, buf_type, make
from .errors import (ForeignHandle, Forked, Initializing, InvalidArgument, Mismatch, NoSpace,
                     NotRegistered, PoolClosed, WrongSize, BadReleaseHint, raise_rc)
from .hashing import Hashes, check_u64, tokens_u32

BACKENDS = ("lru", "fifo", "multi-lru", "lineage", "lineage-fifo", "lfru", "s3fifo", "arc",
            "w-tinylfu", "lecar", "adapt")
DUP_POLICIES = {"allow": 0, "reject": 1}
HINTS = _lib.HINTS  # release hints, in the order of enum kvbm_release_hint
BLOCK_STATES = ("reset", "mutable", "staged", "registered", "evicting")
EVENT_KINDS = {1: "stored", 2: "removed", 3: "resync", 4: "cleared"}

#: one event of the pool's ring: kind is "stored", "removed", "resync" or
#: "cleared"; plh the 16-byte wire form of the block's PLH (None without);
#: tokens a list of token ids (STORED with tokens) or None
Event = namedtuple("Event", "seq kind plh seq_hash position tokens")

_OPEN_SLICE_MS = 50  # how long one open attempt may wait for a creator
_EBUSY = -_errno.EBUSY
_HANDLE = struct.Struct("=QI4xQ")


def destroy(name, force=False):
    """Removes the pool @name (KVBM_DESTROY_FORCE with @force)."""
    r = fn.pool_destroy(_name_bytes(name), _lib.DESTROY_FORCE if force else 0)
    if r < 0:
        raise_rc(r, "kvbm_pool_destroy", "pool %r" % name)


def _name_bytes(name):
    if not isinstance(name, str):
        raise TypeError("pool name must be a str, not %s" % type(name).__name__)
    b = name.encode()
    if b"\0" in b:
        raise InvalidArgument("pool name contains a NUL character", InvalidArgument.code, None)
    return b


def _uint(what, v, lo=0, hi=0xFFFFFFFF):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("%s must be an int, not %s" % (what, type(v).__name__))
    if not lo <= v <= hi:
        raise InvalidArgument("%s = %d is out of range %d..%d" % (what, v, lo, hi),
                              InvalidArgument.code, None)
    return v


def _hint_code(hint):
    # by name; an int passes through, so that the library, not this
    # package, judges a value it may know and we do not
    if isinstance(hint, str):
        if hint not in _lib.HINTS:
            raise BadReleaseHint("release hint %r: one of %s" % (hint, ", ".join(_lib.HINTS)),
                                 BadReleaseHint.code, "kvbm_release_blocks_hint")
        return _lib.HINTS.index(hint)
    return _uint("release hint", hint, 0, 0xFFFFFFFF)


def _closed(*_):
    raise PoolClosed("the Pool is closed", PoolClosed.code, None)


class Stats:
    """Rates and hit ratios from successive metric samples (kvbm_stats);
    made by Pool.stats(). Usable while its Pool is open."""

    def __init__(self, pool, window, enabled):
        h = ctypes.c_void_p()
        r = fn.stats_new(pool._ptr(), _uint("window", window), ctypes.byref(h))
        if r < 0:
            raise_rc(r, "kvbm_stats_new")
        self._h = h.value
        self._pool = pool
        fn.stats_set_enabled(self._h, 1 if enabled else 0)

    def _handle(self):
        if not self._h:
            raise PoolClosed("Stats: closed (or its Pool was)", PoolClosed.code, None)
        self._pool._ptr()
        return self._h

    @property
    def enabled(self):
        return bool(fn.stats_is_enabled(self._handle()))

    @enabled.setter
    def enabled(self, on):
        fn.stats_set_enabled(self._handle(), 1 if on else 0)

    def sample(self):
        """Takes a sample now; True if sampled (False: disabled)."""
        r = fn.stats_sample(self._handle())
        if r < 0:
            raise_rc(r, "kvbm_stats_sample")
        return bool(r)

    def sample_at(self, metrics, t_ns):
        """A sample from a metrics dict (as Pool.metrics() gives) at @t_ns."""
        m = _lib.Metrics(**{k: (_lib.u64 * _lib.METRIC_ARRAYS[k])(*metrics.get(k, ()))
                            if k in _lib.METRIC_ARRAYS else metrics.get(k, 0)
                            for k in _lib.METRIC_FIELDS})
        r = fn.stats_sample_at(self._handle(), ctypes.byref(m), check_u64("t_ns", t_ns))
        if r < 0:
            raise_rc(r, "kvbm_stats_sample_at")
        return bool(r)

    def latest(self):
        """The newest sample as a dict, or None."""
        s = _lib.StatsSnapshot()
        if fn.stats_latest(self._handle(), ctypes.byref(s)) <= 0:
            return None
        return _struct_dict(s)

    def window(self, n=None):
        """Up to @n newest samples (all kept by default), oldest first."""
        h = self._handle()
        if n is None:
            n = 1 << 16
        n = _uint("n", n, 0, 1 << 20)
        cap = min(n, 4096)
        arr = (_lib.StatsSnapshot * max(cap, 1))()
        got = fn.stats_window(h, cap, arr)
        return [_struct_dict(arr[i]) for i in range(got)]

    def close(self):
        if self._h:
            fn.stats_free(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _out(cls):
    """An output struct for the library to fill, with room to spare: a
    libkvbm newer than this package may have appended fields (as 0.1 did
    to struct kvbm_metrics), and writing them past a buffer of the old size
    would corrupt the interpreter's heap. The spare bytes are ignored."""
    return cls.from_buffer(bytearray(ctypes.sizeof(cls) + 1024))


def _struct_dict(s):
    return {f: _value(getattr(s, f)) for f, _ in s._fields_}


def _value(v):
    # a ctypes array field (struct kvbm_metrics.mutex_hold_le) as a list
    return list(v) if isinstance(v, ctypes.Array) else v


def _config_dict(c):
    d = _struct_dict(c)
    d["tier"] = c.tier.decode()
    d["mlru_thresholds"] = list(c.mlru_thresholds)
    d["backend"] = BACKENDS[c.backend] if c.backend < len(BACKENDS) else c.backend
    d["dup_policy"] = {0: "allow", 1: "reject"}.get(c.dup_policy, c.dup_policy)
    d["keep_tokens"] = bool(c.flags & _lib.CFG_KEEP_TOKENS)
    return d


class Pool:
    """One process's attachment to the shared pool @name.

    Pool(name) attaches to an existing pool; with create=True it is created
    from the keyword config when it does not exist (exclusive=True: fail
    with PoolExists if it does). A context manager; close() is idempotent.
    Handles (Blocks) belong to this Pool object: another Pool refuses them
    with ForeignHandle. After os.fork() the child must open its own Pool:
    every call on the parent's gets Forked there."""

    def __init__(self, name, *, create=False, exclusive=False, block_count=None,
                 block_size=None, max_procs=None, backend=None, dup_policy=None, tier=None,
                 event_ring=None, keep_tokens=False, reset_on_release=None, mode=None,
                 open_timeout_ms=None, one_thread=False, pin_share=None):
        self._p = None
        self._stats = weakref.WeakSet()
        bname = _name_bytes(name)
        given = {}
        cfg = _lib.Config()
        fn.config_init(ctypes.byref(cfg))
        if block_count is not None:
            cfg.block_count = given["block_count"] = _uint("block_count", block_count, 1,
                                                           _lib.MAX_BLOCKS)
        if block_size is not None:
            cfg.block_size = given["block_size"] = _uint("block_size", block_size, 1, 1024)
        if max_procs is not None:
            cfg.max_procs = given["max_procs"] = _uint("max_procs", max_procs, 1, 64)
        if backend is not None:
            if backend not in BACKENDS:
                raise InvalidArgument("backend %r: one of %s" % (backend, ", ".join(BACKENDS)),
                                      InvalidArgument.code, None)
            cfg.backend = BACKENDS.index(backend)
            given["backend"] = backend
        if dup_policy is not None:
            if dup_policy not in DUP_POLICIES:
                raise InvalidArgument("dup_policy %r: 'allow' or 'reject'" % (dup_policy,),
                                      InvalidArgument.code, None)
            cfg.dup_policy = DUP_POLICIES[dup_policy]
            given["dup_policy"] = dup_policy
        if tier is not None:
            t = fn.tier_parse(tier.encode()) if isinstance(tier, str) and "\0" not in tier \
                else -1
            if t < 0:
                raise InvalidArgument("tier %r: G1, G2, G3, G4 or device, host_pinned, disk, "
                                      "external" % (tier,), InvalidArgument.code, None)
            # its G name: what the pool stores and reports
            cfg.tier = fn.tier_name(t)
            given["tier"] = cfg.tier.decode()
        if event_ring is not None:
            cfg.event_ring = given["event_ring"] = _uint("event_ring", event_ring)
        if keep_tokens:
            cfg.flags |= _lib.CFG_KEEP_TOKENS
            given["keep_tokens"] = True
        if reset_on_release is not None:
            cfg.reset_on_release = 1 if reset_on_release else 0
            given["reset_on_release"] = cfg.reset_on_release
        if mode is not None:
            cfg.mode = _uint("mode", mode, 0, 0o777)
        if pin_share is not None:
            cfg.pin_share = given["pin_share"] = _uint("pin_share", pin_share, 0, 100)
        timeout = cfg.open_timeout_ms
        if open_timeout_ms is not None:
            timeout = _uint("open_timeout_ms", open_timeout_ms)
        flags = (_lib.OPEN_CREATE if create else 0) | \
            (_lib.OPEN_EXCL if create and exclusive else 0) | \
            (_lib.OPEN_ONE_THREAD if one_thread else 0)
        if create:
            why = ctypes.c_char_p()
            r = fn.config_check(ctypes.byref(cfg), ctypes.byref(why))
            if r < 0:
                raise_rc(r, "kvbm_config_check", why.value.decode() if why.value else None)
        self._open(bname, cfg if create else None, flags, timeout)
        try:
            self._load_info()
            if not create:
                have = self.info()["config"]
                for k, v in given.items():
                    if have.get(k) != v:
                        raise Mismatch("pool %r has %s=%r, not %r" % (name, k, have.get(k), v),
                                       Mismatch.code, "kvbm_pool_open")
        except BaseException:
            self.close()
            raise

    def _open(self, bname, cfg, flags, timeout):
        """kvbm_pool_open, waiting for a creator in short slices so that a
        KeyboardInterrupt is seen within one slice (the library waits in
        C, where Python cannot interrupt it). Without a config (attach
        only) the library's own 10 s wait applies in one piece."""
        out = ctypes.c_void_p()
        deadline = time.monotonic() + timeout / 1000.0
        pcfg = None if cfg is None else ctypes.byref(cfg)
        while True:
            if cfg is not None:
                left = max(0, int((deadline - time.monotonic()) * 1000))
                cfg.open_timeout_ms = min(left, _OPEN_SLICE_MS)
            try:
                r = fn.pool_open(bname, pcfg, flags, ctypes.byref(out))
            except BaseException:
                # the call returned and the interrupt was raised after it:
                # the attachment it made must not leak
                if out.value:
                    fn.pool_close(out.value)
                raise
            if r == Initializing.code and cfg is not None and time.monotonic() < deadline:
                continue
            if r < 0:
                raise_rc(r, "kvbm_pool_open", "pool %r" % bname.decode())
            self._p = out.value
            return

    def _load_info(self):
        i = self._info_struct()
        self.name = i.name.decode()
        self.block_size = i.config.block_size
        self.block_count = i.config.block_count
        self.tier = i.config.tier.decode()
        t = fn.pool_tier(self._p)
        #: Dynamo's storage name of the tier ("device", "host_pinned", ...;
        #: None for a pool made before tiers were checked)
        self.storage_tier = fn.tier_storage(t).decode() if t > 0 else None
        self.instance_id = i.instance_id
        self._keep_tokens = bool(i.config.flags & _lib.CFG_KEEP_TOKENS)
        self._config = _config_dict(i.config)

    # the pool's configuration, read from its header at open (an attach
    # without keywords gets the creator's): fixed for the pool's life
    backend = property(lambda self: self._config["backend"],
                       doc="The eviction backend: one of BACKENDS.")
    dup_policy = property(lambda self: self._config["dup_policy"],
                          doc="'allow' or 'reject'.")
    max_procs = property(lambda self: self._config["max_procs"],
                         doc="How many processes may attach at once.")
    event_ring = property(lambda self: self._config["event_ring"],
                          doc="Slots of the event ring (0: no events).")
    keep_tokens = property(lambda self: self._keep_tokens,
                           doc="Whether the pool keeps each block's token ids for events.")
    reset_on_release = property(lambda self: bool(self._config["reset_on_release"]),
                                doc="Whether every block is reset on its last release.")
    mode = property(lambda self: self._config["mode"], doc="The segment's file mode.")
    uid = property(lambda self: self._config["uid"], doc="The owner the creator asked for (-1: "
                   "its own).")
    gid = property(lambda self: self._config["gid"], doc="The group the creator asked for (-1: "
                   "its own).")
    tinylfu = property(lambda self: self._config["tinylfu"],
                       doc="The frequency sketch's capacity (enum kvbm_tinylfu).")
    mlru_thresholds = property(lambda self: list(self._config["mlru_thresholds"]),
                               doc="The TinyLFU estimates that move a block up a multi-lru level.")
    config = property(lambda self: dict(self._config, mlru_thresholds=list(
        self._config["mlru_thresholds"])), doc="The whole configuration as a dict "
                      "(info()['config'] without a call).")

    def _ptr(self):
        p = self._p
        if not p:
            _closed()
        return p

    def _info_struct(self):
        i = _out(_lib.PoolInfo)
        r = fn.pool_info(self._ptr(), ctypes.byref(i))
        if r < 0:
            raise_rc(r, "kvbm_pool_info")
        return i

    # ---- lifetime ----------------------------------------------------------

    @property
    def closed(self):
        return not self._p

    def close(self):
        """Detaches (gives back every hold this attachment has). Idempotent.
        In a forked child it only frees the child's copy of the handle."""
        p = self._p
        if not p:
            return
        for st in list(self._stats):
            st.close()
        self._p = None
        r = fn.pool_close(p)
        if r < 0 and r != Forked.code:
            raise_rc(r, "kvbm_pool_close")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        if not self._p:
            return "<kvbm.Pool closed>"
        return "<kvbm.Pool %r: %d blocks of %d tokens>" % (self.name, self.block_count,
                                                           self.block_size)

    def info(self):
        """kvbm_pool_info as a dict (config as a nested dict)."""
        i = self._info_struct()
        d = _struct_dict(i)
        d["name"] = i.name.decode()
        d["config"] = _config_dict(i.config)
        d["initialized_by_me"] = bool(i.initialized_by_me)
        return d

    def reap(self):
        """Frees the entries of dead processes; returns how many."""
        r = fn.reap(self._ptr())
        if r < 0:
            raise_rc(r, "kvbm_reap")
        return r

    def check(self, lock=False, quiescent=False):
        """The pool's invariant violations, one line each ([] when sound).
        lock=True checks an exact snapshot under the pool mutex."""
        p = self._ptr()
        lines = []

        def report(msg, _arg):
            lines.append(msg.decode(errors="replace"))

        cb = _lib.REPORT_FN(report)
        flags = (_lib.CHECK_LOCK if lock else 0) | (_lib.CHECK_QUIESCENT if quiescent else 0)
        r = fn.pool_check(p, flags, cb, None)
        if r < 0:
            raise_rc(r, "kvbm_pool_check")
        if r and not lines:
            lines.append("%d violations" % r)
        return lines

    # ---- validation helpers -------------------------------------------------

    def _own(self, blocks, what="blocks"):
        """@blocks as a Blocks of this Pool (a Block or a list of Blocks
        values is converted). An empty Blocks is accepted whatever made
        it: it names no block, so it cannot be foreign."""
        if type(blocks) is Blocks:
            if blocks._pool is not self and blocks._n:
                raise ForeignHandle(
                    "%s belong to another Pool object%s" % (
                        what, "" if blocks._pool is not None else " (or none)"),
                    ForeignHandle.code, None)
            return blocks
        if isinstance(blocks, Block):
            blocks = [blocks]
        if isinstance(blocks, (list, tuple)):
            b = Blocks.from_handles(blocks, self)
            for h in blocks:
                if h.pool != self.instance_id:
                    raise ForeignHandle("%s: block %d belongs to another pool" % (what, h.id),
                                        ForeignHandle.code, None)
            return b
        raise TypeError("%s: need kvbm.Blocks (or Block values), not %s"
                        % (what, type(blocks).__name__))

    def _hashes(self, hashes, what="hashes"):
        if type(hashes) is not Hashes:
            if isinstance(hashes, (list, tuple)) and all(
                    isinstance(h, (bytes, bytearray)) for h in hashes):
                return Hashes.from_plh_bytes(hashes)
            raise TypeError("%s: need kvbm.Hashes, not %s" % (what, type(hashes).__name__))
        if hashes._bs is not None and hashes._bs != self.block_size:
            raise WrongSize("%s were hashed with block size %d, the pool's is %d"
                            % (what, hashes._bs, self.block_size), WrongSize.code, None)
        return hashes

    def _salvage(self, buf, n):
        """After an interrupt raised between a C call that filled @buf and
        our use of its result: give back every handle it holds (a zeroed
        entry has pool id 0)."""
        mv = memoryview(buf).cast("B")
        for i in range(n):
            pool, _, _ = _HANDLE.unpack_from(mv, i * BLOCK_SIZE)
            if pool:
                fn.release_blocks(self._p, ctypes.addressof(buf) + i * BLOCK_SIZE, 1)

    # ---- blocks ------------------------------------------------------------

    def allocate(self, n, evicted=False):
        """@n MUTABLE blocks, all or nothing (NoSpace when free + inactive
        blocks are fewer). evicted=True: (Blocks, Hashes of the blocks
        evicted to make room)."""
        p = self._p or _closed()
        if type(n) is not int or n < 0 or n > self.block_count:
            _uint("n", n)
            # more than the pool has: refused before a buffer that size is made
            raise NoSpace("kvbm_allocate_blocks: %d blocks, the pool has %d"
                          % (n, self.block_count), NoSpace.code, "kvbm_allocate_blocks")
        buf = buf_type(n)()
        ev = nev = None
        if evicted:
            ev = ctypes.create_string_buffer(max(n, 1) * PLH_SIZE)
            nev = ctypes.c_uint32()
        try:
            r = _allocate(p, n, buf, ev, nev)
        except BaseException:
            self._salvage(buf, n)
            raise
        if r < 0:
            raise_rc(r, "kvbm_allocate_blocks", "%d blocks" % n)
        b = make(buf, 0, n, self)
        if evicted:
            return b, Hashes(None, ev.raw[:nev.value * PLH_SIZE], nev.value)
        return b

    def stage(self, blocks, hashes, block_size=None):
        """Stages blocks[i] under hashes[i] (MUTABLE -> STAGED). All or
        nothing: on an error the ones already staged are unstaged."""
        p = self._p or _closed()
        blocks = self._own(blocks)
        hashes = self._hashes(hashes)
        n = blocks._n
        if hashes._n != n:
            raise InvalidArgument("stage: %d blocks but %d hashes" % (n, hashes._n),
                                  InvalidArgument.code, None)
        bs = self.block_size if block_size is None else _uint("block_size", block_size)
        plh = hashes._plh or hashes._plh_buf()
        if _stage_blocks is not None:
            failed = ctypes.c_uint32()
            try:
                r = _stage_blocks(p, blocks._addr, plh, n, bs, failed)
            except BaseException:
                self._unstage_quietly(p, blocks, None)
                raise
            if r < 0:
                i = failed.value
                raise_rc(r, "kvbm_stage_blocks", "block %d (id %d)" % (i, blocks[i].id))
            return
        # one call a block: this libkvbm has no kvbm_stage_blocks
        q = memoryview(plh).cast("Q")
        a = blocks._addr
        try:
            rcs = list(map(_stage, repeat(p, n), range(a, a + n * BLOCK_SIZE, BLOCK_SIZE),
                           q[0::2], q[1::2], repeat(bs, n)))
        except BaseException:
            self._unstage_quietly(p, blocks, None)
            raise
        if any(rcs):
            self._unstage_quietly(p, blocks, rcs)
            i = next(i for i, r in enumerate(rcs) if r)
            raise_rc(rcs[i], "kvbm_stage_block", "block %d (id %d)" % (i, blocks[i].id))

    @staticmethod
    def _unstage_quietly(p, blocks, rcs):
        a = blocks._addr
        for i in range(blocks._n):
            if rcs is None or rcs[i] == 0:
                fn.unstage_block(p, a + i * BLOCK_SIZE)

    def unstage(self, blocks):
        """STAGED -> MUTABLE."""
        p = self._p or _closed()
        blocks = self._own(blocks)
        a = blocks._addr
        for i in range(blocks._n):
            r = fn.unstage_block(p, a + i * BLOCK_SIZE)
            if r < 0:
                raise_rc(r, "kvbm_unstage_block", "block %d (id %d)" % (i, blocks[i].id))

    def register(self, blocks, tokens=None):
        """Registers STAGED @blocks in one critical section; each handle is
        updated in place to a hold on the registered block (under
        dup_policy='reject', possibly the existing primary). @tokens: the
        blocks' token ids (len(blocks) x block_size), carried by events.
        Returns @blocks."""
        p = self._p or _closed()
        blocks = self._own(blocks)
        n = blocks._n
        if tokens is None:
            r = _register(p, blocks._addr, n)
        else:
            keep, addr, nt = tokens_u32(tokens)
            if nt != n * self.block_size:
                raise WrongSize("register: %d tokens for %d blocks of %d (need %d)"
                                % (nt, n, self.block_size, n * self.block_size),
                                WrongSize.code, None)
            r = fn.register_blocks_tokens(p, blocks._addr, n, addr)
            del keep
        if r < 0:
            raise_rc(r, "kvbm_register_blocks")
        return blocks

    def release(self, blocks, hint=None):
        """Gives back every handle of @blocks (a hold, or a MUTABLE/STAGED
        block). On a bad handle the ones before it are released and the
        error raised (NotHeld for a double release).

        @hint tells the pool what comes of the blocks whose last hold this
        drops (kvbm_release_blocks_hint): "continues" (the sequence goes on:
        keep them longer), "oneshot" (never reused: evict them first) or
        "none". The pool weighs it by how often that kind of hint has been
        right (hint_stats()). Anything else raises BadReleaseHint before
        a block is released."""
        p = self._p or _closed()
        if type(blocks) is not Blocks or blocks._pool is not self:
            blocks = self._own(blocks)
        if hint is None:
            r = _release(p, blocks._addr, blocks._n)
        else:
            r = _release_hint(p, blocks._addr, blocks._n, _hint_code(hint))
        if r:
            raise_rc(r, "kvbm_release_blocks_hint" if hint is not None else
                     "kvbm_release_blocks")

    def hint_stats(self):
        """The pool's record of release hints (kvbm_hint_stats): per hint
        ("none", "continues", "oneshot"), the control sample's blocks hit
        again and evicted unused, and how far such a block moves now (boost,
        in ticks; weight, a fraction of the horizon), with the horizon."""
        s = _out(_lib.HintStats)
        r = fn.hint_stats(self._p or _closed(), ctypes.byref(s))
        if r < 0:
            raise_rc(r, "kvbm_hint_stats")
        out = {h: {"reused": s.reused[k], "unused": s.unused[k], "boost": s.boost[k],
                   "weight": s.weight_permille[k] / 1000.0}
               for k, h in enumerate(_lib.HINTS)}
        out["horizon"] = s.horizon
        return out

    def clone(self, blocks):
        """One more hold on each REGISTERED block of @blocks."""
        p = self._p or _closed()
        blocks = self._own(blocks)
        n = blocks._n
        out = buf_type(n)()
        o = ctypes.addressof(out)
        for i in range(n):
            try:
                r = fn.clone_block(p, blocks._addr + i * BLOCK_SIZE, o + i * BLOCK_SIZE)
            except BaseException:
                self._salvage(out, n)
                raise
            if r < 0:
                self._salvage(out, n)
                raise_rc(r, "kvbm_clone_block", "block %d (id %d)" % (i, blocks[i].id))
        return make(out, 0, n, self)

    def set_reset_on_release(self, blocks, on=True):
        p = self._p or _closed()
        blocks = self._own(blocks)
        for i in range(blocks._n):
            r = fn.set_reset_on_release(p, blocks._addr + i * BLOCK_SIZE, 1 if on else 0)
            if r < 0:
                raise_rc(r, "kvbm_set_reset_on_release", "block %d" % i)

    def block_info(self, block):
        """kvbm_block_info of one block (a Block value, or a Blocks of one)."""
        p = self._p or _closed()
        b = self._own(block, "block")
        if b._n != 1:
            raise InvalidArgument("block_info: one block, not %d" % b._n,
                                  InvalidArgument.code, None)
        i = _out(_lib.BlockInfo)
        r = fn.block_info(p, b._addr, ctypes.byref(i))
        if r < 0:
            raise_rc(r, "kvbm_block_info")
        d = _struct_dict(i)
        d["state"] = BLOCK_STATES[i.state] if i.state < len(BLOCK_STATES) else i.state
        for k in ("primary", "inactive", "reset_on_release"):
            d[k] = bool(d[k])
        d["hash"] = struct.pack(">QQ", i.hash.hi, i.hash.lo) if i.state in (2, 3) else None
        return d

    # ---- matching ----------------------------------------------------------

    def match(self, hashes):
        """Prefix match: a hold on the block of each hash, in order, up to
        the first hash not registered."""
        p = self._p or _closed()
        if type(hashes) is not Hashes or hashes._bs not in (None, self.block_size):
            hashes = self._hashes(hashes)
        n = hashes._n
        buf = buf_type(n)()
        try:
            r = _match(p, hashes._plh or hashes._plh_buf(), n, buf)
        except BaseException:
            self._salvage(buf, n)
            raise
        if r < 0:
            raise_rc(r, "kvbm_match_blocks")
        return make(buf, 0, r, self)

    def match_scattered(self, hashes):
        """Holds on every hash that hits, wherever it is: (Blocks of the
        hits in order, found: a list of bool per hash)."""
        p = self._p or _closed()
        hashes = self._hashes(hashes)
        n = hashes._n
        buf = buf_type(n)()
        found = ctypes.create_string_buffer(max(n, 1))
        try:
            r = fn.match_blocks_scattered(p, hashes._plh_buf(), n, buf, found)
        except BaseException:
            self._salvage(buf, n)
            raise
        if r < 0:
            raise_rc(r, "kvbm_match_blocks_scattered")
        hit = [bool(x) for x in found.raw[:n]]
        if r == n:
            return make(buf, 0, n, self), hit
        out = buf_type(r)()
        o, a, j = ctypes.addressof(out), ctypes.addressof(buf), 0
        for i in range(n):
            if hit[i]:
                ctypes.memmove(o + j * BLOCK_SIZE, a + i * BLOCK_SIZE, BLOCK_SIZE)
                j += 1
        return make(out, 0, r, self), hit

    def scan(self, hashes, touch=False):
        """Holds on the blocks of every distinct registered hash of
        @hashes, in order of first occurrence."""
        p = self._p or _closed()
        hashes = self._hashes(hashes)
        n = hashes._n
        buf = buf_type(n)()
        try:
            r = fn.scan_matches(p, hashes._plh_buf(), n, _lib.SCAN_TOUCH if touch else 0, buf)
        except BaseException:
            self._salvage(buf, n)
            raise
        if r < 0:
            raise_rc(r, "kvbm_scan_matches")
        return make(buf, 0, r, self)

    def presence(self, hashes):
        """Whether each hash is registered (no hold taken)."""
        p = self._p or _closed()
        hashes = self._hashes(hashes)
        n = hashes._n
        out = ctypes.create_string_buffer(max(n, 1))
        r = fn.check_presence(p, hashes._plh_buf(), n, out)
        if r < 0:
            raise_rc(r, "kvbm_check_presence")
        return [bool(x) for x in out.raw[:n]]

    def frequency(self, hashes):
        """The TinyLFU estimate (0..15) of each hash."""
        p = self._p or _closed()
        hashes = self._hashes(hashes)
        out = []
        for hi, lo in hashes._pairs():
            r = fn.frequency_estimate(p, hi, lo)
            if r < 0:
                raise_rc(r, "kvbm_frequency_estimate")
            out.append(r)
        return out

    def frequency_touch(self, hashes):
        """Counts each hash once in the TinyLFU sketch, without matching
        (the reference registry's touch); returns the estimates after."""
        p = self._p or _closed()
        hashes = self._hashes(hashes)
        out = []
        for hi, lo in hashes._pairs():
            r = fn.frequency_touch(p, hi, lo)
            if r < 0:
                raise_rc(r, "kvbm_frequency_touch")
            out.append(r)
        return out

    def registered_count(self):
        """How many hashes are registered (primaries, active or inactive)."""
        r = fn.registered_count(self._p or _closed())
        if r < 0:
            raise_rc(r, "kvbm_registered_count")
        return r

    def available(self):
        """Free + inactive blocks: what an allocation can get now."""
        r = _available(self._p or _closed())
        if r < 0:
            raise_rc(r, "kvbm_available_blocks")
        return r

    def total(self):
        r = fn.total_blocks(self._p or _closed())
        if r < 0:
            raise_rc(r, "kvbm_total_blocks")
        return r

    def reset_inactive(self):
        """Evicts every inactive block. True when every block is then free,
        False when some are still in use (the drain happened anyway)."""
        r = fn.reset_inactive_pool(self._p or _closed())
        if r == _EBUSY:
            return False
        if r < 0:
            raise_rc(r, "kvbm_reset_inactive_pool")
        return True

    # ---- pins held by the pool ----------------------------------------------

    def pin_prefix(self, hashes, ttl):
        """Keeps the blocks registered under @hashes unevictable for @ttl
        seconds (rounded up to a millisecond, at most a year), held by the
        pool: the pin outlives this process and this Pool. Pinning again
        renews (a block keeps its latest deadline). All or nothing: raises
        NotRegistered naming the first hash that is not registered,
        PinShareExceeded when the pool's pins would pass its pin_share.
        Returns how many blocks were not pinned before."""
        p = self._p or _closed()
        hashes = self._hashes(hashes)
        if (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0
                or not math.isfinite(ttl)):
            raise InvalidArgument("ttl %r: a finite number of seconds > 0" % (ttl,),
                                  InvalidArgument.code, None)
        ms = -(-ttl * 1000 // 1)  # ceil, also for floats
        if ms > _lib.PIN_TTL_MAX_MS:
            raise InvalidArgument("ttl %r: at most a year (%d s)" % (ttl, _lib.PIN_TTL_MAX_MS //
                                                                     1000),
                                  InvalidArgument.code, None)
        failed = ctypes.c_size_t(0)
        r = fn.pin_prefix(p, hashes._plh_buf(), hashes._n, int(ms), ctypes.byref(failed))
        if r == NotRegistered.code:
            raise_rc(r, "kvbm_pin_prefix", "hashes[%d] is not registered" % failed.value)
        if r < 0:
            raise_rc(r, "kvbm_pin_prefix", "%d hashes" % hashes._n)
        return r

    def unpin_prefix(self, hashes):
        """Ends the pool's pins on the blocks registered under @hashes
        (others are skipped); returns how many blocks were unpinned."""
        p = self._p or _closed()
        hashes = self._hashes(hashes)
        r = fn.unpin_prefix(p, hashes._plh_buf(), hashes._n)
        if r < 0:
            raise_rc(r, "kvbm_unpin_prefix", "%d hashes" % hashes._n)
        return r

    def pins(self):
        """The pool's pins: pins (prefixes), blocks, capacity, pin_share,
        expirations, next_expiry (seconds, None without pins)."""
        i = _out(_lib.PinsInfo)
        r = fn.pins_info(self._p or _closed(), ctypes.byref(i))
        if r < 0:
            raise_rc(r, "kvbm_pins_info")
        d = _struct_dict(i)
        ms = d.pop("next_expiry_ms")
        d["next_expiry"] = None if ms == 2 ** 64 - 1 else ms / 1000
        return d

    def pinned(self):
        """Every pinned block: dicts of hash (16 bytes), block (id), tip
        (it ended a pin call) and remaining (seconds)."""
        p = self._p or _closed()
        while True:
            n = fn.pins_list(p, None, 0)
            if n < 0:
                raise_rc(n, "kvbm_pins_list")
            arr = (_lib.Pinned * max(n, 1))()
            got = fn.pins_list(p, arr, n)
            if got < 0:
                raise_rc(got, "kvbm_pins_list")
            if got <= n:  # else pinned meanwhile: again, with room
                return [{"hash": struct.pack(">QQ", e.hash.hi, e.hash.lo), "block": e.block, "tip": bool(e.tip),
                         "remaining": e.remaining_ms / 1000} for e in arr[:got]]

    def expire_pins(self):
        """Ends the pins whose deadline passed (any mutex acquisition
        does too); returns how many blocks this call expired."""
        r = fn.pins_expire(self._p or _closed())
        if r < 0:
            raise_rc(r, "kvbm_pins_expire")
        return r

    # ---- metrics -------------------------------------------------------------

    def _metrics_struct(self):
        m = _out(_lib.Metrics)
        r = fn.metrics_snapshot(self._p or _closed(), ctypes.byref(m))
        if r < 0:
            raise_rc(r, "kvbm_metrics_snapshot")
        return m

    def metrics(self):
        """The pool's counters and gauges (struct kvbm_metrics) by name."""
        return _struct_dict(self._metrics_struct())

    def prometheus(self, labels=None):
        """The Prometheus text exposition of metrics() (label pool=<tier>
        plus @labels, a dict or (name, value) pairs)."""
        m = self._metrics_struct()
        pairs = list(labels.items()) if isinstance(labels, dict) else list(labels or ())
        enc = []
        for k, v in pairs:
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("labels: names and values must be str")
            enc.append((k.encode(), v.encode()))
        arr = ((ctypes.c_char_p * 2) * max(len(enc), 1))()
        for i, (k, v) in enumerate(enc):
            arr[i][0], arr[i][1] = k, v
        tier = self.tier.encode()
        need = fn.metrics_prometheus(ctypes.byref(m), tier, arr, len(enc), None, 0)
        if need < 0:
            raise_rc(need, "kvbm_metrics_prometheus", "labels %r" % (pairs,))
        buf = ctypes.create_string_buffer(need + 1)
        r = fn.metrics_prometheus(ctypes.byref(m), tier, arr, len(enc), buf, need + 1)
        if r < 0:
            raise_rc(r, "kvbm_metrics_prometheus")
        return buf.value.decode()

    def stats(self, window=0, enabled=True):
        """A Stats collector over this pool (window 0: 60 samples)."""
        st = Stats(self, window, enabled)
        self._stats.add(st)
        return st

    # ---- events --------------------------------------------------------------

    def events_head(self):
        """The sequence number the next event will get."""
        h = ctypes.c_uint64()
        r = fn.events_head(self._p or _closed(), ctypes.byref(h))
        if r < 0:
            raise_rc(r, "kvbm_events_head")
        return h.value

    def read_events(self, cursor, max=256):
        """Up to @max events from @cursor on: (list of Event, new cursor).
        EventGap when the reader fell behind the ring (resync with
        events_snapshot())."""
        p = self._p or _closed()
        check_u64("cursor", cursor)
        max = _uint("max", max, 1, 1 << 20)
        c = ctypes.c_uint64(cursor)
        out = (_lib.Event * max)()
        ntok = max * self.block_size if self._keep_tokens else 0
        toks = (ctypes.c_uint32 * (ntok or 1))()
        r = fn.events_read(p, ctypes.byref(c), out, max, toks, ntok)
        if r < 0:
            raise_rc(r, "kvbm_events_read", "cursor %d" % cursor)
        return [_event(out[i]) for i in range(r)], c.value

    def events_snapshot(self):
        """The registry as events (CLEARED, then one STORED per primary)
        and the cursor to read on from: (events, cursor)."""
        p = self._p or _closed()
        evs = []

        def cb(ev, _arg):
            evs.append(_event(ev.contents))

        c = ctypes.c_uint64()
        r = fn.events_snapshot(p, ctypes.byref(c), _lib.EVENT_FN(cb), None)
        if r < 0:
            raise_rc(r, "kvbm_events_snapshot")
        return evs, c.value


def _event(e):
    kind = EVENT_KINDS.get(e.kind, e.kind)
    if e.kind in (1, 2):
        hi, lo = e.hash.hi, e.hash.lo
        plh = struct.pack(">QQ", hi, lo)
        seq, pos = fn.plh_current(hi, lo), fn.plh_position(hi, lo)
    else:
        plh = seq = pos = None
    toks = e.tokens[:e.ntokens] if e.ntokens and e.tokens else None
    return Event(e.seq, kind, plh, seq, pos, toks)


# the hot calls, looked up once
_allocate = fn.allocate_blocks
_stage = fn.stage_block
_stage_blocks = fn.stage_blocks  # None without it
_register = fn.register_blocks
_release = fn.release_blocks
_release_hint = fn.release_blocks_hint
_match = fn.match_blocks
_available = fn.available_blocks
