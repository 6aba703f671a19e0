# SPDX-License-Identifier: Apache-2.0
"""kvbm: Python binding of libkvbm, a KV-cache block pool shared by many
processes through one shared-memory segment (docs/PYTHON.md)."""

from ._lib import fn as _fn, lib_path
from .blocks import Block, Blocks
from .errors import *  # noqa: F401,F403 - one class per return code
from .errors import CODES, CODE_NAMES, KvbmError, PoolClosed, error_class
from .hashing import Hashes, Tokens, hash_tokens, salt_hash
from .pool import BACKENDS, HINTS, Event, Pool, Stats, destroy
from .tiers import TIERS, Onboarding, tiers_presence

__version__ = _fn.version().decode()


def strerror(code):
    """The library's description of return code @code."""
    return _fn.strerror(code).decode()


__all__ = ["__version__", "Block", "Blocks", "Event", "Hashes", "Onboarding", "Pool", "Stats",
           "TIERS", "Tokens", "tiers_presence",
           "KvbmError", "PoolClosed", "CODES", "CODE_NAMES", "BACKENDS", "HINTS", "destroy",
           "error_class", "hash_tokens", "lib_path", "salt_hash", "strerror"] + \
    [c.__name__ for c in CODES.values()]
