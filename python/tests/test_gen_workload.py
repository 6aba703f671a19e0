# SPDX-License-Identifier: Apache-2.0
"""scripts/gen-workload.py: every shape is deterministic from its seed and
writes what kvbm-replay reads (the Mooncake trace format, a prefix tree)."""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GEN = os.path.join(ROOT, "scripts", "gen-workload.py")
SHAPES = subprocess.run([sys.executable, GEN, "--list"], check=True, capture_output=True,
                        text=True).stdout.split()


def gen(shape, seed, n=300):
    return subprocess.run([sys.executable, GEN, shape, "--seed", str(seed), "--requests", str(n)],
                          check=True, capture_output=True, text=True).stdout


def test_the_five_shapes():
    assert SHAPES == ["multi-tenant", "agentic", "scan-heavy", "rag", "code"]


@pytest.mark.parametrize("shape", SHAPES)
def test_deterministic_from_the_seed(shape):
    a = gen(shape, 7)
    assert a == gen(shape, 7)
    assert a != gen(shape, 8)


@pytest.mark.parametrize("shape", SHAPES)
def test_mooncake_format_and_prefix_tree(shape):
    lines = gen(shape, 3).splitlines()
    assert len(lines) == 300
    parent, pos, last_t, shared = {}, {}, 0, 0
    for line in lines:
        r = json.loads(line)
        assert set(r) == {"timestamp", "input_length", "output_length", "hash_ids"}
        assert r["timestamp"] >= last_t
        last_t = r["timestamp"]
        ids = r["hash_ids"]
        assert len(ids) == math.ceil(r["input_length"] / 512) > 0
        for k, i in enumerate(ids):
            p = ids[k - 1] if k else None
            if i in parent:  # equal ids: equal parent and position
                assert parent[i] == p and pos[i] == k
                shared += 1
            parent[i], pos[i] = p, k
    assert shared > 0  # prefixes are reused


def test_bad_arguments():
    r = subprocess.run([sys.executable, GEN, "nosuch"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown shape 'nosuch'" in r.stderr
    r = subprocess.run([sys.executable, GEN, "rag", "--requests", "0"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--requests must be at least 1" in r.stderr
