# SPDX-License-Identifier: Apache-2.0
"""The ctypes Structures of kvbm._lib against the C compiler's view of
include/kvbm.h: every size and field offset. A header change that is not
carried over to the binding fails here instead of corrupting memory."""

import ctypes
import os
import re
import shutil
import subprocess

import pytest

from kvbm import _lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STRUCTS = {
    "kvbm_plh": _lib.Plh, "kvbm_block_hashes": _lib.BlockHashes, "kvbm_block": _lib.Block,
    "kvbm_config": _lib.Config, "kvbm_pool_info": _lib.PoolInfo,
    "kvbm_block_info": _lib.BlockInfo, "kvbm_event": _lib.Event,
    "kvbm_metrics": _lib.Metrics, "kvbm_stats_snapshot": _lib.StatsSnapshot,
    "kvbm_pins_info": _lib.PinsInfo, "kvbm_pinned": _lib.Pinned,
    "kvbm_hint_stats": _lib.HintStats,
}


def test_struct_layouts_match_the_header(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <kvbm.h>",
             "int main(void) {"]
    for cname, st in STRUCTS.items():
        lines.append('printf("%s %%zu\\n", sizeof(struct %s));' % (cname, cname))
        for f, _ in st._fields_:
            lines.append('printf("%s.%s %%zu\\n", offsetof(struct %s, %s));'
                         % (cname, f, cname, f))
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-I", os.path.join(ROOT, "include"), str(src), "-o", str(exe)],
                   check=True)
    got = dict(line.split() for line in subprocess.run(
        [str(exe)], check=True, capture_output=True, text=True).stdout.splitlines())
    for cname, st in STRUCTS.items():
        assert int(got[cname]) == ctypes.sizeof(st), cname
        for f, _ in st._fields_:
            assert int(got["%s.%s" % (cname, f)]) == getattr(st, f).offset, (cname, f)


def test_metrics_fields_are_the_headers_in_order():
    text = open(os.path.join(ROOT, "include", "kvbm.h")).read()
    body = text[text.index("struct kvbm_metrics {"):]
    body = body[:body.index("};")]
    fields = re.findall(r"^\s*u?int64_t (\w+)(?:\[(\d+)\])?;", body, re.M)
    assert tuple(name for name, _ in fields) == _lib.METRIC_FIELDS
    assert {name: int(n) for name, n in fields if n} == _lib.METRIC_ARRAYS


def test_header_constants():
    text = open(os.path.join(ROOT, "include", "kvbm.h")).read()
    def define(name):
        return int(re.search(r"#define %s (\w+)" % name, text).group(1).rstrip("u"), 0)

    assert define("KVBM_OPEN_CREATE") == _lib.OPEN_CREATE
    assert define("KVBM_OPEN_EXCL") == _lib.OPEN_EXCL
    assert define("KVBM_OPEN_ONE_THREAD") == _lib.OPEN_ONE_THREAD
    assert define("KVBM_CHECK_LOCK") == _lib.CHECK_LOCK
    assert define("KVBM_CHECK_QUIESCENT") == _lib.CHECK_QUIESCENT
    assert define("KVBM_CFG_KEEP_TOKENS") == _lib.CFG_KEEP_TOKENS
    assert define("KVBM_DESTROY_FORCE") == _lib.DESTROY_FORCE
    assert define("KVBM_SCAN_TOUCH") == _lib.SCAN_TOUCH
