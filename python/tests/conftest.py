# SPDX-License-Identifier: Apache-2.0
"""pytest setup for the kvbm binding tests: the package from this tree
(python/), pools in a private KVBM_SHM_DIR, one pool name per test."""

import itertools
import os
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
# every pool of the run lives here, not in /dev/shm (libkvbm reads the
# variable at each open, so subprocesses inherit it)
if not os.environ.get("KVBM_TEST_KEEP_SHM_DIR"):
    os.environ["KVBM_SHM_DIR"] = tempfile.mkdtemp(prefix="kvbm-pytest-")

import kvbm  # noqa: E402

_seq = itertools.count()


@pytest.fixture
def pool_name(request):
    """A pool name unique to this test (and this run); the pool is
    destroyed after it."""
    name = "py%d-%d-%s" % (os.getpid(), next(_seq), request.node.name[:40])
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    yield name
    try:
        kvbm.destroy(name, force=True)
    except kvbm.NoSuchPool:
        pass


@pytest.fixture
def pool(pool_name):
    """A fresh pool: 64 blocks of 4 tokens, an event ring keeping tokens."""
    with kvbm.Pool(pool_name, create=True, exclusive=True, block_count=64, block_size=4,
                   event_ring=256, keep_tokens=True) as p:
        yield p


def toks(n, start=1):
    """@n distinct token ids."""
    return list(range(start, start + n))
