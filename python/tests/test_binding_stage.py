# SPDX-License-Identifier: Apache-2.0
"""Pool.stage() both ways: one kvbm_stage_block call a block, and the
batched kvbm_stage_blocks (one call) when libkvbm has it. Without it in
the library under test, the batched path runs against the same function
compiled here from its proposed source, so both paths keep the same
contract: all or nothing, the failing block named, the pool intact."""

import ctypes
import os
import shutil
import subprocess

import pytest

import kvbm
import kvbm.pool as kp
from kvbm import _lib

BS = 4
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STAGE_BLOCKS_C = r"""
#include <errno.h>
#include <kvbm.h>
int kvbm_stage_blocks(struct kvbm_pool *p, const struct kvbm_block *blks,
		      const struct kvbm_plh *hashes, uint32_t n, uint32_t block_size,
		      uint32_t *failed);
int kvbm_stage_blocks(struct kvbm_pool *p, const struct kvbm_block *blks,
		      const struct kvbm_plh *hashes, uint32_t n, uint32_t block_size,
		      uint32_t *failed)
{
	if (n && (!blks || !hashes))
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		int r = kvbm_stage_block(p, &blks[i], hashes[i], block_size);
		if (r < 0) {
			for (uint32_t j = 0; j < i; j++)
				(void)kvbm_unstage_block(p, &blks[j]);
			if (failed)
				*failed = i;
			return r;
		}
	}
	return 0;
}
"""


@pytest.fixture(scope="module")
def batched_stage(tmp_path_factory):
    if _lib.fn.stage_blocks is not None:
        return _lib.fn.stage_blocks
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build kvbm_stage_blocks")
    d = tmp_path_factory.mktemp("stage")
    (d / "stage.c").write_text(STAGE_BLOCKS_C)
    so = d / "libstage.so"
    libdir = os.path.dirname(os.path.realpath(_lib.lib_path))
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-Wall", "-Werror",
                    "-I", os.path.join(ROOT, "include"), str(d / "stage.c"), "-o", str(so),
                    os.path.realpath(_lib.lib_path), "-Wl,-rpath," + libdir], check=True)
    f = ctypes.PyDLL(str(so)).kvbm_stage_blocks
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_uint32] * 2 + [ctypes.POINTER(ctypes.c_uint32)]
    return f


@pytest.fixture(params=["per-block", "batched"])
def path(request, monkeypatch, batched_stage):
    monkeypatch.setattr(kp, "_stage_blocks", None if request.param == "per-block"
                        else batched_stage)
    return request.param


def states(pool, blocks):
    return [pool.block_info(b)["state"] for b in blocks]


def test_stage_then_register_and_match(pool, path):
    t = list(range(1, 1 + 5 * BS))
    h = kvbm.hash_tokens(t, BS)
    b = pool.allocate(5)
    pool.stage(b, h)
    assert states(pool, b) == ["staged"] * 5
    assert [pool.block_info(x)["hash"] for x in b] == h.plh_bytes_list()
    pool.register(b, t)
    pool.release(b)
    m = pool.match(h)
    assert m.ids == b.ids
    pool.release(m)
    pool.stage(pool.allocate(0), h[:0])  # nothing to stage
    assert pool.check(lock=True) == []


def test_stage_failure_names_the_block_and_unstages_the_rest(pool, path):
    h = kvbm.hash_tokens(list(range(1, 1 + 4 * BS)), BS)
    b = pool.allocate(4)
    pool.stage(b[2:3], h[2:3])
    with pytest.raises(kvbm.WrongState, match=r"block 2 \(id %d\)" % b.ids[2]):
        pool.stage(b, h)
    assert states(pool, b) == ["mutable", "mutable", "staged", "mutable"]
    with pytest.raises(kvbm.WrongSize):
        pool.stage(b[:2], h[:2], block_size=2 * BS)
    assert states(pool, b[:2]) == ["mutable", "mutable"]
    pool.release(b)
    assert pool.check(lock=True) == []


def test_interrupt_after_stage_unstages(pool, path, monkeypatch):
    """A KeyboardInterrupt once the last block is staged (raised where a
    signal handler would raise it): stage() leaves every block MUTABLE."""
    h = kvbm.hash_tokens(list(range(1, 1 + 3 * BS)), BS)
    b = pool.allocate(3)
    name = "_stage" if path == "per-block" else "_stage_blocks"
    real = getattr(kp, name)
    calls = []

    def interrupted(*args):
        r = real(*args)
        calls.append(r)
        if path == "batched" or len(calls) == 3:
            raise KeyboardInterrupt
        return r

    monkeypatch.setattr(kp, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        pool.stage(b, h)
    monkeypatch.undo()
    assert calls == ([0] if path == "batched" else [0, 0, 0])
    assert states(pool, b) == ["mutable"] * 3
    pool.release(b)
    assert pool.check(lock=True) == []
