# SPDX-License-Identifier: Apache-2.0
"""Engine processes that reuse each other's KV cache through one kvbm pool.

Runs the same chat workload twice with N engine processes (engine.py): once
with the prefix cache off (every prompt token computed), once sharing KV
through the pool, and prints what sharing saved, measured. Both runs must
produce the same replies bit for bit; the pool must check clean at the end.

    PYTHONPATH=python /usr/bin/python3 python/examples/demo.py [--engines 4]
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import kvbm  # noqa: E402
from engine import (SharedKV, kv_path, load_result, make_workload,  # noqa: E402
                    result_path)
from tinylm import Config  # noqa: E402


def engine_env():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    py = os.path.dirname(HERE)                       # python/, holding kvbm/
    env["PYTHONPATH"] = os.pathsep.join(
        [py, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("KVBM_ENGINE_DIE", None)
    return env


def start_engine(wfile, pool, out, i, n, share, extra_env=None):
    cmd = [sys.executable, os.path.join(HERE, "engine.py"), "--workload", wfile,
           "--pool", pool, "--out", out, "--worker", str(i), "--workers", str(n)]
    if not share:
        cmd.append("--no-share")
    return subprocess.Popen(cmd, env=dict(engine_env(), **(extra_env or {})))


def run_engines(workload, pool, n, share, workdir, kill_after=(), kill_progress=(), die=None,
                timeout=300):
    """Runs n engines on the workload to the end; returns (wall s, results, kills).

    Every engine that dies of SIGKILL is restarted (it resumes with the
    turns whose results do not exist yet). kill_after: times (s) at which
    a random live engine is SIGKILLed; kill_progress: the same when these
    fractions of the requests are done. die: {engine: ["point:n", ...]},
    the KVBM_ENGINE_DIE of that engine's first, second... incarnation
    (engine.py); random kills spare an incarnation that has one."""
    out = tempfile.mkdtemp(prefix="out-", dir=workdir)
    wfile = os.path.join(workdir, "workload.json")
    with open(wfile, "w") as f:
        json.dump(workload, f)
    t0 = time.perf_counter()
    die = die or {}
    incarnation = [0] * n

    def start(i):
        specs = die.get(i, [])
        env = ({"KVBM_ENGINE_DIE": specs[incarnation[i]]}
               if incarnation[i] < len(specs) else None)
        return start_engine(wfile, pool, out, i, n, share, env)

    def doomed(i):
        return incarnation[i] < len(die.get(i, []))

    procs = [start(i) for i in range(n)]
    kills, pending, progress = [], sorted(kill_after), sorted(kill_progress)
    requests = sum(len(c) for c in workload["chats"])
    try:
        while any(p.poll() is None or p.returncode == -signal.SIGKILL for p in procs):
            now = time.perf_counter() - t0
            due = pending and now > pending[0]
            if not due and progress:
                done = sum(f.endswith(".npz") for f in os.listdir(out))
                due = done >= progress[0] * requests
            # (never an incarnation that is to die at its own point; a kill
            # with no victim now waits for one)
            live = [i for i, p in enumerate(procs) if p.poll() is None and not doomed(i)]
            if due and live:
                (pending if pending and now > pending[0] else progress).pop(0)
                victim = random.choice(live)
                procs[victim].send_signal(signal.SIGKILL)
                kills.append((victim, procs[victim].pid, now))
            for i, p in enumerate(procs):
                if p.poll() == -signal.SIGKILL:
                    if p.pid not in {k[1] for k in kills}:
                        kills.append((i, p.pid, die[i][incarnation[i]] if doomed(i) else "?"))
                    incarnation[i] += 1
                    procs[i] = start(i)
                elif p.poll() not in (None, 0):
                    raise RuntimeError(f"engine {i} (pid {p.pid}) failed with status {p.returncode}")
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"the engines did not finish in {timeout} s")
            time.sleep(0.01)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    wall = time.perf_counter() - t0
    results = {}
    for c, turns in enumerate(workload["chats"]):
        for t in range(len(turns)):
            results[c, t] = load_result(result_path(out, c, t))
    return wall, results, kills


def per_engine(results, n):
    rows = []
    for i in range(n):
        rs = [r for r in results.values() if int(r["worker"]) == i]
        rows.append(dict(
            engine=i, pids=sorted({int(r["pid"]) for r in rs}), requests=len(rs),
            prompt=sum(len(r["prompt"]) for r in rs),
            computed=sum(int(r["computed"]) for r in rs),
            cached=sum(int(r["cached"]) for r in rs),
            others=sum(int(r["from_others"]) for r in rs),
            hits=sum(int(r["cached"]) > 0 for r in rs),
            prefill=sum(float(r["prefill_s"]) for r in rs)))
    return rows


def fmt_table(rows, base_rows):
    out = [f"{'engine':>6} {'pid':>8} {'requests':>8} {'prompt tokens':>13} {'computed':>9} "
           f"{'reused':>8} {'by others':>9} {'saved':>6} {'hits':>5} {'prefill s':>10} "
           f"{'(cache off)':>11}"]
    tot = {k: 0 for k in ("requests", "prompt", "computed", "cached", "others", "hits",
                          "prefill")}
    base_total = 0.0
    for r, b in zip(rows, base_rows):
        for k in tot:
            tot[k] += r[k]
        base_total += b["prefill"]
        out.append(f"{r['engine']:>6} {','.join(map(str, r['pids'])):>8} {r['requests']:>8} "
                   f"{r['prompt']:>13,} {r['computed']:>9,} {r['cached']:>8,} {r['others']:>9,} "
                   f"{r['cached'] / max(r['prompt'], 1):>6.0%} {r['hits']:>5} "
                   f"{r['prefill']:>10.2f} {b['prefill']:>11.2f}")
    out.append(f"{'total':>6} {'':>8} {tot['requests']:>8} {tot['prompt']:>13,} "
               f"{tot['computed']:>9,} {tot['cached']:>8,} {tot['others']:>9,} "
               f"{tot['cached'] / max(tot['prompt'], 1):>6.0%} {tot['hits']:>5} "
               f"{tot['prefill']:>10.2f} {base_total:>11.2f}")
    return "\n".join(out), tot, base_total


def destroy_pool(name):
    try:
        kvbm.destroy(name)
    except kvbm.KvbmError:   # already gone (or never made)
        pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=int, default=4, help="engine processes (4)")
    ap.add_argument("--chats", type=int, default=16, help="chat sessions (16)")
    ap.add_argument("--turns", type=int, default=4, help="turns per chat (4)")
    ap.add_argument("--system", type=int, default=256, help="system prompt tokens (256)")
    ap.add_argument("--new", type=int, default=16, help="tokens generated per turn (16)")
    ap.add_argument("--block-size", type=int, default=16, help="tokens per KV block (16)")
    ap.add_argument("--blocks", type=int, default=1024, help="blocks in the pool (1024)")
    ap.add_argument("--kill", action="store_true",
                    help="SIGKILL one engine mid-run in the shared run, and restart it")
    a = ap.parse_args(argv)
    for opt in ("engines", "chats", "turns", "new", "block_size", "blocks"):
        if getattr(a, opt) < 1:
            ap.error(f"--{opt.replace('_', '-')} must be at least 1")
    if a.system < 0:
        ap.error("--system must be at least 0")
    if a.block_size & (a.block_size - 1) or a.block_size > 1024:
        ap.error(f"--block-size {a.block_size}: a power of two, 1..1024")
    cfg = Config()
    wl = make_workload(chats=a.chats, turns=a.turns, system_len=a.system, n_new=a.new,
                       block_size=a.block_size, block_count=a.blocks, model=cfg)
    # the longest request: the last turn of the longest chat, with its reply
    longest = max(a.system + sum(map(len, c)) + a.turns * a.new for c in wl["chats"])
    if longest > cfg.max_positions:
        ap.error(f"the longest chat reaches {longest} tokens, more than the model's "
                 f"{cfg.max_positions} positions: fewer --turns or a shorter --system")
    per_request = -(-longest // a.block_size)
    if a.blocks < a.engines * per_request:
        ap.error(f"--blocks {a.blocks} is too few: {a.engines} engines may each hold "
                 f"{per_request} blocks of {a.block_size} tokens at once (the longest request "
                 f"has {longest} tokens); give at least {a.engines * per_request}")
    name = f"engine-demo-{os.getpid()}"
    workdir = tempfile.mkdtemp(prefix="kvbm-engine-demo-")
    kv_mib = a.blocks * np.prod(cfg.kv_block_shape(a.block_size)) * 4 / 2**20
    print(f"kvbm engine demo: {a.engines} inference processes share one KV cache.\n"
          f"  model   tiny transformer in numpy: {cfg.n_layers} layers, d_model {cfg.d_model}, "
          f"{cfg.n_heads} heads, vocab {cfg.vocab}, fixed random weights\n"
          f"  cache   kvbm pool '{name}': {a.blocks} blocks of {a.block_size} tokens; "
          f"the KV itself in {kv_path(name)} ({kv_mib:.0f} MiB)\n"
          f"  load    {a.chats} chats x {a.turns} turns, all starting with one {a.system}-token "
          f"system prompt;\n"
          f"          each turn re-sends the chat's history and gets {a.new} new tokens; turn t of "
          f"chat c\n"
          f"          goes to engine (c+t) % {a.engines}, so a history's KV was computed by "
          f"another process")
    try:
        print("\nrun 1: prefix cache off (every prompt token computed) ...", flush=True)
        base_pool = name + "-off"
        with kvbm.Pool(base_pool, create=True, block_count=a.blocks, block_size=a.block_size):
            base_wall, base, _ = run_engines(wl, base_pool, a.engines, False, workdir)
        destroy_pool(base_pool)
        SharedKV.remove(base_pool)
        print(f"       {base_wall:.1f} s")
        print("run 2: sharing KV through the kvbm pool ...", flush=True)
        with kvbm.Pool(name, create=True, block_count=a.blocks, block_size=a.block_size) as pool:
            wall, res, kills = run_engines(wl, name, a.engines, True, workdir,
                                           kill_progress=([0.4] if a.kill else []))
            for v, pid, at in kills:
                print(f"       engine {v} (pid {pid}) SIGKILLed at {at:.1f} s mid-run, restarted: "
                      f"it resumed with the turns it had not finished")
            print(f"       {wall:.1f} s\n")
            table, tot, base_prefill = fmt_table(per_engine(res, a.engines),
                                                 per_engine(base, a.engines))
            print(table)
            print("  computed: prompt tokens the engine ran through the model; reused: prompt "
                  "tokens whose KV\n  it read from blocks in the pool instead, 'by others' "
                  "from blocks another engine process\n  computed; hits: requests that reused "
                  "at least one block. Each engine still computes\n  the block holding the "
                  "prompt's last token (it needs that token's logits).")
            same = all(np.array_equal(res[k]["tokens"], base[k]["tokens"]) and
                       np.array_equal(res[k]["logits"], base[k]["logits"]) for k in res)
            print(f"\nprefill tokens: {tot['computed']:,} computed, {tot['cached']:,} reused "
                  f"from the pool ({tot['cached'] / tot['prompt']:.0%} of {tot['prompt']:,}; "
                  f"{tot['others']:,} computed by another process); {tot['hits']} of "
                  f"{tot['requests']} requests hit")
            print(f"prefill time (sum over engines, measured): {base_prefill:.2f} s with the "
                  f"cache off, {tot['prefill']:.2f} s shared: {base_prefill - tot['prefill']:.2f} "
                  f"s saved")
            print(f"wall time of the whole run (measured): {base_wall:.1f} s cache off, "
                  f"{wall:.1f} s shared: {base_wall - wall:.1f} s saved "
                  f"({1 - wall / base_wall:.0%}; load average {os.getloadavg()[0]:.1f})")
            print(f"replies: {'all' if same else 'NOT all'} {len(res)} identical bit for bit "
                  f"(tokens and logits) between the two runs")
            m = pool.metrics()
            keys = ("match_hashes_requested", "match_blocks_returned", "registrations",
                    "duplicate_blocks", "allocations", "evictions", "inflight_mutable",
                    "inflight_immutable", "inactive_pool_size", "reset_pool_size")
            print("pool metrics: " + ", ".join(f"{k} {m[k]}" for k in keys if k in m))
            bad = pool.check(lock=True)
            print("pool.check(lock=True): " + ("clean" if not bad else "; ".join(bad)))
            if not same or bad:
                return 1
        return 0
    finally:
        destroy_pool(name)
        destroy_pool(name + "-off")
        SharedKV.remove(name)
        SharedKV.remove(name + "-off")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
