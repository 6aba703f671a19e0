# SPDX-License-Identifier: Apache-2.0
"""Every return code of kvbm.h has its exception class."""

import errno
import os
import re

import pytest

import kvbm

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include",
                      "kvbm.h")


def header_codes():
    text = open(HEADER).read()
    enum = text[text.index("enum kvbm_error {"):]
    enum = enum[:enum.index("};")]
    codes = {}
    for name, off in re.findall(r"(KVBM_E\w+)\s*=\s*KVBM_EBASE\s*-\s*(\d+)", enum):
        codes[name] = -16384 - int(off)
    return codes


def header_errnos():
    """The errno names the header says calls return (-ENOENT, ...)."""
    return set(re.findall(r"-(E[A-Z]+)\b", open(HEADER).read()))


def test_every_kvbm_code_has_its_own_class():
    codes = header_codes()
    codes.pop("KVBM_ELAST")
    assert len(codes) >= 28
    for name, code in codes.items():
        cls = kvbm.CODES.get(code)
        assert cls is not None, "%s (%d) has no exception class" % (name, code)
        assert cls is not kvbm.KvbmError and issubclass(cls, kvbm.KvbmError)
        assert kvbm.CODE_NAMES[code] == name
        assert cls.code == code
    # one class per code: no two codes share one
    own = [kvbm.CODES[c] for c in codes.values()]
    assert len(set(own)) == len(own)


def test_every_errno_the_header_names_has_a_class():
    for name in header_errnos():
        code = -getattr(errno, name)
        assert code in kvbm.CODES, "-%s has no exception class" % name


def test_named_classes():
    assert kvbm.StaleHandle.code == -16384 - 12
    assert kvbm.BadName.code == -16384 - 14
    assert kvbm.NoSpace.code == -errno.ENOSPC
    assert kvbm.NoSuchPool.code == -errno.ENOENT
    assert kvbm.PoolExists.code == -errno.EEXIST
    assert kvbm.Busy.code == -errno.EBUSY
    assert kvbm.OutOfRange.code == -errno.ERANGE
    assert issubclass(kvbm.InvalidArgument, ValueError)
    assert issubclass(kvbm.NoSuchPool, FileNotFoundError)
    assert issubclass(kvbm.PoolClosed, kvbm.KvbmError)
    for n in ("PoolPoisoned", "ForeignHandle", "NotHeld", "WrongSize", "WrongState",
              "NotOwner", "Forked", "Mismatch", "ProcTableFull", "Reaped", "EventGap",
              "BadMagic", "Corrupt", "Deadlock", "WrongThread", "PermissionDenied"):
        assert issubclass(getattr(kvbm, n), kvbm.KvbmError)


def test_error_carries_code_call_and_library_message(pool_name):
    with pytest.raises(kvbm.NoSuchPool) as ei:
        kvbm.Pool(pool_name)
    e = ei.value
    assert e.code == -errno.ENOENT and e.call == "kvbm_pool_open"
    assert "kvbm_pool_open" in str(e) and os.strerror(errno.ENOENT) in str(e)
    with pytest.raises(kvbm.BadName) as ei:
        kvbm.Pool("bad name/x", create=True)
    assert kvbm.strerror(kvbm.BadName.code) in str(ei.value)


def test_unknown_code_is_a_plain_kvbm_error():
    assert kvbm.error_class(-99999) is kvbm.KvbmError
