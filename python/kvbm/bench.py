# SPDX-License-Identifier: Apache-2.0
"""python -m kvbm.bench: the binding's speed, in blocks per second.

  match      64-block prefix match + release of registered, held (active)
             blocks, the hashes computed before the timed loop (as vLLM
             keeps them on its request)
  match-inactive  the same on inactive blocks (each match resurrects)
  cycle      allocate + stage + register + release of 64 blocks with new
             hashes, the pool full of inactive blocks (every allocation
             evicts: the steady state of a busy server)
  ffi        one call's overhead: Pool.available(), and the bare ctypes call
  batching   the match and the release done one block per call, against one
             call for all 64

Each figure is the best of --repeats runs of --rounds rounds (the best
run is the one least disturbed by other processes); the median run is
printed next to it.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

from . import Pool, __version__, destroy, hash_tokens
from ._lib import fn, lib_path

N = 64


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _runs(body, rounds, repeats):
    """Seconds per round of @body(rounds) over @repeats runs."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        body(rounds)
        out.append((time.perf_counter() - t) / rounds)
    return out


def _report(results, name, per_round, blocks, note=""):
    best, med = min(per_round), statistics.median(per_round)
    r = {"name": name, "us_per_round": best * 1e6, "us_per_round_median": med * 1e6}
    if blocks:
        r["blocks_per_s"] = blocks / best
        r["blocks_per_s_median"] = blocks / med
        line = "%-34s %8.2f M blocks/s  (median %6.2f)  %7.2f us per %d blocks" % (
            name, blocks / best / 1e6, blocks / med / 1e6, best * 1e6, blocks)
    else:
        line = "%-34s %8.0f ns per call  (median %6.0f)" % (name, best * 1e9, med * 1e9)
    print(line + ("  " + note if note else ""))
    results.append(r)


def bench(rounds, repeats, name):
    results = []
    with Pool(name, create=True, exclusive=True, block_count=4096, block_size=16,
              event_ring=0) as p:
        match, release = p.match, p.release

        # ---- match + release, active ------------------------------------
        h = hash_tokens(list(range(N * 16)), 16, 0)
        held = p.allocate(N)
        p.stage(held, h)
        p.register(held)
        m = match(h)
        assert len(m) == N
        release(m)

        def match_active(k):
            for _ in range(k):
                release(match(h))
        _report(results, "match 64 active + release", _runs(match_active, rounds, repeats), N)

        # ---- the same, one block a call (what batching saves) -----------
        singles = [h[i:i + 1] for i in range(N)]

        def match_single(k):
            for _ in range(k):
                for s in singles:
                    release(match(s))
        _report(results, "  one call per block (batching off)",
                _runs(match_single, max(1, rounds // 8), repeats), N)
        release(held)

        # ---- match + release, inactive (resurrection) ---------------------
        def match_inactive(k):
            for _ in range(k):
                release(match(h))
        assert p.block_info(held[0])["inactive"]
        _report(results, "match 64 inactive + release", _runs(match_inactive, rounds, repeats),
                N)

        # ---- allocate + stage + register + release, evicting --------------
        # 256 prompts of 64 blocks, 4 times the pool (4096 blocks): a
        # prompt's blocks are long evicted when it comes round again, so
        # every round registers new blocks and every allocation evicts
        nh = 256
        fresh = [hash_tokens(range(10**6 * (i + 1), 10**6 * (i + 1) + N * 16), 16, 0)
                 for i in range(nh)]
        for x in fresh:
            x._plh_buf()  # the PLH array a match/stage passes, made once per request
        while p.metrics()["reset_pool_size"] > 0:  # fill: every allocation evicts
            b = p.allocate(min(N, p.metrics()["reset_pool_size"]))
            p.stage(b, hash_tokens(list(range(5 * 10**7 + b.ids[0] * 16,
                                              5 * 10**7 + b.ids[0] * 16 + len(b) * 16)), 16))
            p.register(b)
            p.release(b)
        state = {"i": 0}
        allocate, stage, register = p.allocate, p.stage, p.register

        def cycle(k):
            i = state["i"]
            for _ in range(k):
                hh = fresh[i % nh]
                i += 1
                b = allocate(N)
                stage(b, hh)
                register(b)
                release(b)
            state["i"] = i
        cycle(nh)  # warm: every prompt once
        d0 = p.metrics()
        _report(results, "allocate+stage+register+release", _runs(cycle, rounds, repeats), N,
                "(every allocation evicts)" if p.metrics()["evictions"] else "")
        d1 = p.metrics()
        ev = d1["evictions"] - d0["evictions"]
        assert d1["registration_dedup"] == d0["registration_dedup"]
        assert d1["duplicate_blocks"] == d0["duplicate_blocks"]

        # ---- the parts of the cycle ---------------------------------------
        b = allocate(N)
        stage(b, fresh[0])
        t0 = time.perf_counter()
        reps = 200
        for _ in range(reps):
            p.unstage(b)
            stage(b, fresh[0])
        per_pair = (time.perf_counter() - t0) / reps / N
        release(b)
        print("%-34s %8.0f ns per block (one FFI call a block: libkvbm has no "
              "batched stage)" % ("  stage+unstage", per_pair * 1e9))
        results.append({"name": "stage+unstage per block", "ns": per_pair * 1e9})

        # ---- per-call overhead ------------------------------------------------
        avail = p.available
        raw = fn.available_blocks
        ptr = p._p

        def call_method(k):
            for _ in range(k):
                avail()

        def call_raw(k):
            for _ in range(k):
                raw(ptr)

        def loop_only(k):
            for _ in range(k):
                pass
        base = min(_runs(loop_only, rounds * 50, repeats))
        _report(results, "Pool.available()",
                [x - base for x in _runs(call_method, rounds * 50, repeats)], 0)
        _report(results, "ctypes kvbm_available_blocks()",
                [x - base for x in _runs(call_raw, rounds * 50, repeats)], 0)
        assert p.check(lock=True) == []
    destroy(name)
    return results, ev


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kvbm.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2000, help="rounds a run (2000)")
    ap.add_argument("--repeats", type=int, default=7, help="runs, the best is reported (7)")
    ap.add_argument("--quick", action="store_true", help="200 rounds, 3 runs")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.repeats = 200, 3
    print("kvbm %s (%s), Python %s, %s" % (__version__, os.path.realpath(lib_path),
                                          platform.python_version(), _cpu()))
    print("load average before: %.2f %.2f %.2f, cpus %d" % (os.getloadavg() + (os.cpu_count(),)))
    print("command: %s -m kvbm.bench %s" % (sys.executable, " ".join(argv or sys.argv[1:])))
    res, ev = bench(a.rounds, a.repeats, "kvbm-pybench-%d" % os.getpid())
    print("load average after:  %.2f %.2f %.2f" % os.getloadavg())
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cpu": _cpu(), "python": platform.python_version(),
                       "loadavg": os.getloadavg(), "evictions": ev, "results": res}, f,
                      indent=1)


if __name__ == "__main__":
    main()
