# SPDX-License-Identifier: Apache-2.0
"""The README's Python example is the marked region of
python/examples/quickstart.py, and that program runs."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _region():
    with open(os.path.join(ROOT, "python", "examples", "quickstart.py")) as f:
        src = f.read()
    body = src.split("# README-BEGIN\n", 1)[1].split("    # README-END", 1)[0]
    return [line[4:] for line in body.splitlines()]


def test_readme_quotes_the_example():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1).splitlines()
    # the README's block ends with the example's region, indented by the with
    tail = [line[4:] for line in block[-len(_region()):]]
    assert tail == _region()


def test_quickstart_runs(pool_name):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "python", "examples", "quickstart.py"),
                          pool_name], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "second request: 4 blocks matched, 0 computed" in out.stdout
