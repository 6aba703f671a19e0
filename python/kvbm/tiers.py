# SPDX-License-Identifier: Apache-2.0
"""Several tiers at once (include/kvbm_tier.h, docs/TIERS.md): which tiers
hold each hash, and onboarding plans that copy a request's blocks from a
lower tier (G2) into an upper one (G1)."""

import ctypes

from . import _lib
from ._lib import fn
from .blocks import Block, buf_type, make
from .errors import raise_rc

#: the tiers by number (kvbm_config.tier): G name and Dynamo storage name
TIERS = {1: ("G1", "device"), 2: ("G2", "host_pinned"), 3: ("G3", "disk"),
         4: ("G4", "external")}


def tiers_presence(pools, hashes):
    """For each hash, a bitmask of the @pools (at most 8; bit j = pools[j])
    that have it registered. Lock-free, no hold taken."""
    pools = list(pools)
    if not pools:
        raise ValueError("tiers_presence: no pool")
    hashes = pools[0]._hashes(hashes)
    for p in pools[1:]:
        p._hashes(hashes)  # same block size everywhere
    arr = (ctypes.c_void_p * len(pools))(*[p._ptr() for p in pools])
    n = hashes._n
    out = ctypes.create_string_buffer(max(n, 1))
    r = fn.tiers_presence(arr, len(pools), hashes._plh_buf(), n, out)
    if r < 0:
        raise_rc(r, "kvbm_tiers_presence")
    return list(out.raw[:n])


class Onboarding:
    """An onboarding plan: the blocks of a request (its chained @hashes,
    position i at index i) that @src has and @dst lacks after @dst's own
    prefix, each paired with a @dst block; all held until complete() or
    abort(). A context manager: leaving it without complete() aborts.

        with kvbm.Onboarding(g1, g2, hashes) as plan:
            for position, src, dst in plan.pairs():
                g1_kv[dst.id] = g2_kv[src.id]
            blocks = plan.complete(tokens)  # held in g1: the request's prefix
    """

    def __init__(self, dst, src, hashes):
        self._dst, self._src = dst, src
        self._hashes = dst._hashes(hashes)
        src._hashes(hashes)
        h = ctypes.c_void_p()
        r = fn.onboard_plan(dst._ptr(), src._ptr(), self._hashes._plh_buf(), self._hashes._n,
                            ctypes.byref(h))
        if r < 0:
            raise_rc(r, "kvbm_onboard_plan")
        self._h = h.value
        self.matched = fn.onboard_matched(self._h)
        self.count = fn.onboard_count(self._h)

    def _handle(self):
        if not self._h:
            raise ValueError("the plan was freed")
        return self._h

    def pairs(self):
        """[(position, src Block, dst Block)]: the copies to make (empty
        once completed or aborted)."""
        out, pr = [], _lib.OnboardPair()
        for i in range(self.count):
            if not fn.onboard_get(self._handle(), i, ctypes.byref(pr)):
                break
            out.append((pr.position, Block(pr.src.id, pr.src.gen, pr.src.pool),
                        Block(pr.dst.id, pr.dst.gen, pr.dst.pool)))
        return out

    def complete(self, tokens=None, keep=True):
        """Registers the copied @dst blocks (with @tokens, the request's
        token ids from position 0, for the STORED events) and drops the
        @src holds. Returns the request's @dst blocks, positions 0 ..
        matched+count-1, as held kvbm.Blocks (keep=False: released,
        cached; returns None)."""
        total = self.matched + self.count
        toks = None
        if tokens is not None:
            need = total * self._dst.block_size
            toks = (ctypes.c_uint32 * max(need, 1))(*list(tokens)[:need])
            if len(tokens) < need:
                raise ValueError("complete: %d tokens, the plan's blocks need %d"
                                 % (len(tokens), need))
        buf = buf_type(max(total, 1))() if keep else None
        r = fn.onboard_complete(self._handle(), toks, buf, total if keep else 0)
        if r < 0:
            raise_rc(r, "kvbm_onboard_complete")
        return make(buf, 0, r, self._dst) if keep else None

    def abort(self):
        """Gives every hold and block of the plan back (idempotent)."""
        r = fn.onboard_abort(self._handle())
        if r < 0:
            raise_rc(r, "kvbm_onboard_abort")

    def close(self):
        """Aborts if still open and frees the plan."""
        if self._h:
            # a closed Pool's handle is gone, and so are its holds (the
            # detach gave them back): then the plan's memory is left
            if self._dst._p and self._src._p:
                fn.onboard_free(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_h", None):
            self.close()
