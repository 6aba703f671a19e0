# SPDX-License-Identifier: Apache-2.0
"""BENCH ONLY: kvbm.vllm.BlockPool and vLLM's own pure-Python BlockPool, run
side by side on the same call sequences, in the same minutes.

    cd python && python3 bench/vllm_side_by_side.py --vllm-src /path/to/vllm

--vllm-src is a vLLM source checkout (its vllm/v1/core/block_pool.py and
kv_cache_utils.py are used as they are; nothing of vLLM is shipped here).
When vLLM is installed, it is imported instead and --vllm-src is not needed.

vLLM's block pool pulls in most of vLLM through its imports (torch, config,
the scheduler's Request...), none of which the block pool's logic uses. So
when vLLM is not installed, this script STUBS THE IMPORTS ONLY:
- vllm.logger.init_logger is logging.getLogger, vllm.envs has
  VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES = False, the KV event classes are
  kvbm.vllm's dataclasses of the same shape, KVCacheMetricsCollector and
  Request are bare names (annotations only);
- from kv_cache_utils.py it executes only the definitions block_pool.py
  imports (hash helpers, KVCacheBlock, FreeKVCacheBlockQueue, ...), as
  written there; the module's other imports are not executed.
The logic measured is vLLM's, unchanged. Both pools get the same 16-byte
block hashes (kvbm.vllm.request_block_hasher's), which vLLM's pool uses
as opaque dict keys, as it does its own sha256 bytes.
"""

import argparse
import ast
import importlib.util
import logging
import os
import platform
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import kvbm  # noqa: E402
import kvbm.vllm as kv  # noqa: E402

# what block_pool.py imports from kv_cache_utils.py
_NEEDED = {"BlockHash", "BlockHashWithGroupId", "ExternalBlockHash", "BlockHashList",
           "BlockHashListWithBlockSize", "make_block_hash_with_group_id", "get_block_hash",
           "get_group_id", "maybe_convert_block_hash", "KVCacheBlock", "FreeKVCacheBlockQueue",
           "logger"}


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def _defined_names(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    if isinstance(node, ast.TypeAlias):  # pragma: no cover - 3.12 'type X = ...'
        return {node.name.id}
    return set()


def _is_vllm_import(node):
    return (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vllm") \
        or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "vllm"
                                                  for a in node.names))


def load_vllm_block_pool(src):
    """vLLM's BlockPool class: the installed vLLM's, else the one in @src
    with its imports stubbed (see the module docstring)."""
    try:
        from vllm.v1.core.block_pool import BlockPool  # type: ignore
        return BlockPool, "installed vllm"
    except ImportError:
        pass
    if not src:
        raise SystemExit("vLLM is not installed: give --vllm-src DIR (a vLLM source checkout)")
    core = os.path.join(src, "vllm", "v1", "core")
    # the imports' stubs (names only; no logic of vLLM is replaced)
    _module("vllm", __path__=[])
    _module("vllm.envs", VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=False)
    sys.modules["vllm"].envs = sys.modules["vllm.envs"]
    _module("vllm.logger", init_logger=logging.getLogger)
    _module("vllm.distributed", __path__=[])
    _module("vllm.distributed.kv_events", MEDIUM_GPU=kv.MEDIUM_GPU,
            AllBlocksCleared=kv.AllBlocksCleared, BlockRemoved=kv.BlockRemoved,
            BlockStored=kv.BlockStored, KVCacheEvent=kv.KVCacheEvent)
    _module("vllm.v1", __path__=[])
    _module("vllm.v1.core", __path__=[core])
    _module("vllm.v1.core.kv_cache_metrics", KVCacheMetricsCollector=type(
        "KVCacheMetricsCollector", (), {}))
    _module("vllm.v1.request", Request=type("Request", (), {}))
    # kv_cache_utils.py: the definitions block_pool.py needs, as written
    path = os.path.join(core, "kv_cache_utils.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    body = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if not _is_vllm_import(node):
                body.append(node)  # the standard library's
        elif _defined_names(node) & _NEEDED:
            body.append(node)
    utils = _module("vllm.v1.core.kv_cache_utils", __file__=path,
                    envs=sys.modules["vllm.envs"], init_logger=logging.getLogger)
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), utils.__dict__)
    for name in ("BlockHashList", "BlockHashListWithBlockSize"):
        # used only when a group's block size differs from the hash block
        # size; older vLLMs do not have them
        if not hasattr(utils, name):
            setattr(utils, name, list)
    spec = importlib.util.spec_from_file_location("vllm.v1.core.block_pool",
                                                  os.path.join(core, "block_pool.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.BlockPool, "source " + os.path.abspath(src)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm-src", default=os.environ.get("VLLM_SRC"))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    VllmBlockPool, where = load_vllm_block_pool(args.vllm_src)
    load0 = os.getloadavg()
    hasher = kv.request_block_hasher(kv.BENCH_BS)
    r = kv.BenchRequest(hasher, None)
    name = "kvbm-side-by-side-%d" % os.getpid()
    ours, theirs = {}, {}
    vbp = VllmBlockPool(kv.BENCH_BLOCKS, True, kv.BENCH_BS, False)
    try:
        with kv.BlockPool(kv.BENCH_BLOCKS, True, kv.BENCH_BS, False, pool_name=name) as bp:
            for k in range(args.rounds):  # interleaved: the same minutes for both
                others = [kv.BenchRequest(hasher, f"{k}-{i}") for i in range(100)]
                kv.bench_round(bp, r, others, ours)
                kv.bench_round(vbp, r, others, theirs)
    finally:
        kvbm.destroy(name, force=True)
    load1 = os.getloadavg()
    print("kvbm %s, Python %s, %s, %d cpus; vLLM BlockPool from %s"
          % (kvbm.__version__, platform.python_version(), platform.processor() or
             platform.machine(), os.cpu_count(), where))
    print("command: python3 bench/vllm_side_by_side.py --rounds %d; best of %d rounds, "
          "64-block requests, 1024-block pools" % (args.rounds, args.rounds))
    print("%-18s %14s %14s %8s" % ("sequence", "kvbm.vllm", "vLLM BlockPool", "ratio"))
    for key in ("hit_unused", "hit_in_use", "batch_hit_unused", "new_cache_free"):
        o = ours.get(key)
        t = theirs.get(key, theirs.get("hit_unused") if key == "batch_hit_unused" else None)
        print("%-18s %10.2f M/s %10.2f M/s %7.2fx" % (key, o / 1e6, t / 1e6, o / t))
    print("(batch_hit_unused: vLLM's pool has no batch lookup; compared with its hit_unused)")
    print("load average before %.2f %.2f %.2f, after %.2f %.2f %.2f" % (load0 + load1))


if __name__ == "__main__":
    main()
