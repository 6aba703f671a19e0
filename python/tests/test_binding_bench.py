# SPDX-License-Identifier: Apache-2.0
"""python -m kvbm.bench runs to the end (its numbers are not checked here:
speed is measured by the benchmark, never in a unit test)."""

import json
import os
import subprocess
import sys

import kvbm


def test_bench_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(kvbm.__file__)))
    env = dict(os.environ, PYTHONPATH=pkg)
    r = subprocess.run([sys.executable, "-m", "kvbm.bench", "--rounds", "3", "--repeats", "1",
                        "--json", str(out)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "match 64 active + release" in r.stdout and "load average" in r.stdout
    res = json.loads(out.read_text())
    names = [x["name"] for x in res["results"]]
    assert "allocate+stage+register+release" in names and res["evictions"] > 0
