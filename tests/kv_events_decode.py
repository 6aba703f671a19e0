#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""An independent decoder of the KV event wire formats kvbm-events writes
(length-prefixed msgpack messages), written from the specification of the
consumers, not from our encoder: kvbm-logical's own stream (spec 5.1),
vLLM's KVEventBatch as Dynamo's tolerant decoder reads it (5.3: the
envelope as an array or a map, events as maps or positional arrays), and
Dynamo's RouterEvent (5.2). It rebuilds the set of cached blocks and
compares it with the expected one.

usage: kv_events_decode.py FORMAT FILE EXPECTED_JSON
  EXPECTED_JSON: {"blocks": [...], "block_size": N, "tokens_hash": {hash: th}}
  (blocks: router u64 hashes for vllm/router, 32-hex-digit PLHs for kvbm)
Exit 0 when the decoded set equals the expected one, 1 with the difference.
"""
import json
import struct
import sys

import msgpack


def frames(path):
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off < len(data):
        (n,) = struct.unpack(">I", data[off:off + 4])
        yield data[off + 4:off + 4 + n]
        off += 4 + n


def u64(v):
    # Dynamo normalises signed producers' hashes to u64
    return v & 0xFFFFFFFFFFFFFFFF


def vllm_event(ev):
    """(kind, hashes, token_ids, block_size) from a map or positional event."""
    if isinstance(ev, dict):
        return (ev["type"], ev.get("block_hashes", []), ev.get("token_ids") or [],
                ev.get("block_size"))
    tag = ev[0]
    if tag == "BlockStored":
        return tag, ev[1], ev[3] if len(ev) > 3 else [], ev[4] if len(ev) > 4 else None
    if tag == "BlockRemoved":
        return tag, ev[1], [], None
    return tag, [], [], None


def vllm_envelope(raw):
    """The events of a KVEventBatch: an array [ts, events, rank] or a map."""
    batch = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    if isinstance(batch, dict):
        ts, events, rank = batch["ts"], batch["events"], batch.get("data_parallel_rank")
    else:
        ts, events, rank = batch[0], batch[1], batch[2] if len(batch) > 2 else None
    assert isinstance(ts, float), "ts is a float64"
    assert rank is None or isinstance(rank, int), "data_parallel_rank"
    return events


def decode_vllm(msgs, want):
    blocks = set()
    for raw in msgs:
        for ev in vllm_envelope(raw):
            kind, hashes, tokens, bs = vllm_event(ev)
            if kind == "BlockStored":
                # Dynamo indexes a store only with its tokens, in blocks of bs
                assert bs == want["block_size"], "block_size %r" % bs
                assert len(tokens) in (0, bs * len(hashes)), "token_ids length"
                blocks.update(u64(h) for h in hashes)
            elif kind == "BlockRemoved":
                blocks.difference_update(u64(h) for h in hashes)
            elif kind == "AllBlocksCleared":
                blocks.clear()
            else:
                raise AssertionError("unknown event type %r" % kind)
    return sorted(blocks)


def decode_kvbm(msgs, want):
    blocks = set()
    for raw in msgs:
        msg = msgpack.unpackb(raw, raw=False)
        assert isinstance(msg, list) and len(msg) == 2
        events, instance = msg
        assert isinstance(instance, bytes) and len(instance) == 16, "instance: bin 16"
        if events == "Shutdown":
            continue
        (kind, plhs), = events.items()
        for plh in plhs:
            assert isinstance(plh, bytes) and len(plh) == 16, "plh: 16 bytes big-endian"
            if kind == "Create":
                blocks.add(plh.hex())
            elif kind == "Remove":
                blocks.discard(plh.hex())
            else:
                raise AssertionError("unknown kind %r" % kind)
    return sorted(blocks)


def router_apply(blocks, th, ev):
    """Applies one RouterEvent (a named map, spec 5.2) to the set @blocks;
    records tokens_hash by block hash in @th. Returns the event id."""
    assert set(ev) >= {"worker_id", "storage_tier", "event"}
    assert ev["storage_tier"] in ("device", "host_pinned", "disk", "external")
    inner = ev["event"]
    data = inner["data"]
    if data == "cleared":
        blocks.clear()
    elif "stored" in data:
        for b in data["stored"]["blocks"]:
            blocks.add(b["block_hash"])
            th[str(b["block_hash"])] = b["tokens_hash"]
    elif "removed" in data:
        blocks.difference_update(data["removed"]["block_hashes"])
    else:
        raise AssertionError("unknown data %r" % data)
    return inner["event_id"]


def decode_router(msgs, want):
    blocks, last_id, th = set(), None, {}
    for raw in msgs:
        event_id = router_apply(blocks, th, msgpack.unpackb(raw, raw=False))
        if last_id is not None and event_id != 0:  # 0: a new publisher
            assert event_id == last_id + 1, "event ids count up"
        last_id = event_id
    for h, t in want.get("tokens_hash", {}).items():
        assert th.get(h) == t, "tokens_hash of %s: %r, want %r" % (h, th.get(h), t)
    return sorted(blocks)


def main():
    fmt, path, want = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    decode = {"vllm": decode_vllm, "kvbm": decode_kvbm, "router": decode_router}[fmt]
    got = decode(frames(path), want)
    exp = sorted(want["blocks"])
    if got != exp:
        print("decoded %d blocks, expected %d" % (len(got), len(exp)))
        print("missing:", sorted(set(exp) - set(got))[:8])
        print("extra:", sorted(set(got) - set(exp))[:8])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
