# SPDX-License-Identifier: Apache-2.0
"""One exception class per libkvbm return code.

Every negative code a call returns becomes an instance of the class
`CODES` maps it to (a KvbmError subclass), carrying `.code`, `.call`
(the C function) and the library's own message (kvbm_strerror).
"""

import errno as _errno

from ._lib import EBASE, fn


class KvbmError(Exception):
    """A libkvbm call failed. `.code` is its negative return code, `.call`
    the C function that returned it."""

    code = None

    def __init__(self, message, code=None, call=None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.call = call


# (code, class name, extra bases)
_OWN = [
    ("EBADMAGIC", 1, "BadMagic"),
    ("EABI", 2, "AbiMismatch"),
    ("ELAYOUT", 3, "LayoutMismatch"),
    ("ETRUNCATED", 4, "Truncated"),
    ("EINITIALIZING", 5, "Initializing"),
    ("EPOISONED", 6, "PoolPoisoned"),
    ("EPROCFULL", 7, "ProcTableFull"),
    ("EFORKED", 8, "Forked"),
    ("ECORRUPT", 9, "Corrupt"),
    ("EMISMATCH", 10, "Mismatch"),
    ("ENOHUGE", 11, "NoHugepages"),
    ("ESTALE", 12, "StaleHandle"),
    ("EFOREIGN", 13, "ForeignHandle"),
    ("ENAME", 14, "BadName"),
    ("EDEADLK", 15, "Deadlock"),
    ("ENOTHELD", 16, "NotHeld"),
    ("ESIZE", 17, "WrongSize"),
    ("ESTATE", 18, "WrongState"),
    ("ENOTOWNER", 19, "NotOwner"),
    ("EUNIQUE", 20, "AttachedUnique"),
    ("EMULTIPLE", 21, "AttachedMultiple"),
    ("ETHREAD", 22, "WrongThread"),
    ("EOWNER", 23, "UntrustedOwner"),
    ("EMODE", 24, "ModeTooWide"),
    ("EOTHERS", 25, "OthersAccess"),
    ("EPIDNS", 26, "OtherPidNamespace"),
    ("EREAPED", 27, "Reaped"),
    ("EGAP", 28, "EventGap"),
    # sequences and schedules (kvbm_sequence.h)
    ("EORDER", 29, "OrderingViolation"),
    ("EPOSITION", 30, "PositionMismatch"),
    ("EDUPID", 31, "DuplicateBlockId"),
    ("EHASHMISMATCH", 32, "SequenceHashMismatch"),
    ("ENOTIDLE", 33, "NotIdle"),
    ("EOVERRUN", 34, "PrefillOverrun"),
    ("EPREFILLDONE", 35, "PrefillComplete"),
    ("EPREFILLPENDING", 36, "PrefillNotComplete"),
    ("EGENDONE", 37, "GenerationComplete"),
    ("EDANGLING", 38, "WrongDanglingCount"),
    ("ESEQSTATE", 39, "WrongScheduleState"),
    ("ETOKENCHUNK", 40, "TokenOnNonFinalChunk"),
    ("ENOTOKEN", 41, "MissingTokenOnFinalChunk"),
    ("EACCEPTED", 42, "AcceptedExceedsScheduled"),
    ("EAPPEND", 43, "AppendExceedsRemaining"),
    # pins held by the pool (kvbm_pin_prefix)
    ("EPINSHARE", 44, "PinShareExceeded"),
    ("ENOTREG", 45, "NotRegistered"),
    ("EHINT", 46, "BadReleaseHint"),
]

_ERRNO = [
    ("ENOENT", "NoSuchPool", (FileNotFoundError,)),
    ("EEXIST", "PoolExists", (FileExistsError,)),
    ("EACCES", "PermissionDenied", (PermissionError,)),
    ("EBUSY", "Busy", ()),
    ("EINVAL", "InvalidArgument", (ValueError,)),
    ("ERANGE", "OutOfRange", (ValueError,)),
    ("ENOSPC", "NoSpace", ()),
    ("ENOMEM", "OutOfMemory", (MemoryError,)),
    ("EOPNOTSUPP", "NotSupported", ()),
    ("EAGAIN", "TryAgain", ()),
    ("EOVERFLOW", "TooManyHolds", (OverflowError,)),
]

#: negative code -> exception class
CODES = {}
#: the kvbm.h name of each code ("KVBM_ESTALE", "ENOENT")
CODE_NAMES = {}
__all__ = ["KvbmError", "PoolClosed", "CODES", "CODE_NAMES", "error_class", "check_rc", "raise_rc"]


def _define(name, code, bases, cname):
    cls = type(name, (KvbmError,) + bases, {"code": code, "__module__": __name__,
                                           "__doc__": "%s (%d)" % (cname, code)})
    CODES[code] = cls
    CODE_NAMES[code] = cname
    globals()[name] = cls
    __all__.append(name)
    return cls


for _c, _off, _n in _OWN:
    _define(_n, EBASE - _off, (), "KVBM_" + _c)
for _c, _n, _b in _ERRNO:
    _define(_n, -getattr(_errno, _c), _b, _c)
# EPERM (a uid/gid not ours to give) reads like EACCES
CODES[-_errno.EPERM] = CODES[-_errno.EACCES]
CODE_NAMES[-_errno.EPERM] = "EPERM"
del _c, _off, _n, _b


class PoolClosed(KvbmError, ValueError):
    """The Pool was closed (or never opened): nothing is passed to C."""

    code = -_errno.EBADF


def error_class(code):
    """The exception class of a negative return code."""
    return CODES.get(code, KvbmError)


def strerror(code):
    s = fn.strerror(code)
    return s.decode() if s else "unknown error"


def raise_rc(code, call, detail=None):
    """Raises the exception of return code @code from C function @call."""
    msg = "%s: %s" % (call, strerror(code))
    if detail:
        msg += " (%s)" % detail
    raise error_class(code)(msg, code, call)


def check_rc(code, call, detail=None):
    if code < 0:
        raise_rc(code, call, detail)
    return code
