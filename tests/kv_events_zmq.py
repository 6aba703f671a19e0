#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A vLLM KV-events subscriber written from the consumers' specification
(spec 5.3, Dynamo's zmq listener and tolerant decoder), not from kvbmd's
encoder: Debian's python3-zmq and python3-msgpack. It subscribes to the PUB
socket, keeps the set of cached blocks, and asks the replay ROUTER (a
DEALER sending [b"", start_seq]) for what it missed: on a seq gap, on a
cold start whose first seq is not 0, and with --catch-up at once. A seq
that goes back (and is not one a replay gave) means the publisher
restarted: it starts over from the new publisher's seq 0. It exits
0 when its set equals the expected one (a JSON file the test writes at
quiescence: {"blocks": [router hashes], "block_size": N}), 1 with the
difference at the deadline.

usage: kv_events_zmq.py --pub EP [--replay EP] [--topic T] --expect FILE
                        [--timeout S] [--catch-up]
"""
import argparse
import json
import os
import struct
import sys
import time

import zmq

from kv_events_decode import u64, vllm_envelope, vllm_event

END_SEQ = b"\xff" * 8


class View:
    def __init__(self):
        self.blocks = set()
        self.last = None
        self.batches = self.gaps = self.replays = self.events = self.restarts = 0
        self.cold = self.dups = self.unfilled = 0
        self.replayed = -1  # the highest seq a replay gave
        self.block_size = None

    def apply_batch(self, raw):
        events = vllm_envelope(raw)
        kinds, stored = set(), set()
        for ev in events:
            kind, hashes, tokens, bs = vllm_event(ev)
            kinds.add(kind)
            if kind == "BlockStored":
                parent = ev.get("parent_block_hash") if isinstance(ev, dict) else ev[2]
                # Creates ascend by position: a parent stored in this
                # batch came before its child
                if parent is not None and u64(parent) in self.batch_all(events):
                    assert u64(parent) in stored, "child %r before its parent" % hashes
                if self.block_size is not None:
                    assert bs == self.block_size, "block_size %r" % bs
                assert len(tokens) in (0, bs * len(hashes)), "token_ids length"
                stored.update(u64(h) for h in hashes)
                self.blocks.update(u64(h) for h in hashes)
            elif kind == "BlockRemoved":
                self.blocks.difference_update(u64(h) for h in hashes)
            elif kind == "AllBlocksCleared":
                self.blocks.clear()
            else:
                raise AssertionError("unknown event type %r" % kind)
            self.events += 1
        assert len(kinds) <= 1, "a batch mixes kinds: %r" % kinds
        self.batches += 1

    @staticmethod
    def batch_all(events):
        out = set()
        for ev in events:
            kind, hashes, _, _ = vllm_event(ev)
            if kind == "BlockStored":
                out.update(u64(h) for h in hashes)
        return out


def replay(dealer, view, start, deadline):
    """Asks for every batch from @start on; applies them in order. A
    publisher killed between taking the request and answering it never
    sends the end marker: after 2 s of silence the request is sent again
    (from what has arrived since), as a consumer of a restarting publisher
    must."""
    view.replays += 1

    def ask():
        frm = start if view.last is None or view.last < start else view.last + 1
        dealer.send_multipart([b"", struct.pack(">Q", frm)])
        return time.time()

    asked = ask()
    while time.time() < deadline:
        if not dealer.poll(500):
            if time.time() - asked > 2.0:
                asked = ask()
            continue
        frames = dealer.recv_multipart()
        asked = time.time()
        # the DEALER sees [empty, seq, payload]
        assert len(frames) == 3 and frames[0] == b"", "replay frames %d" % len(frames)
        if frames[1] == END_SEQ:
            return
        (seq,) = struct.unpack(">Q", frames[1])
        if view.last is None or seq > view.last:
            view.apply_batch(frames[2])
            view.last = seq
        view.replayed = max(view.replayed, seq)
    raise AssertionError("no end marker from the replay socket")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pub", required=True)
    ap.add_argument("--replay")
    ap.add_argument("--topic", default="")
    ap.add_argument("--expect", required=True)
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--catch-up", action="store_true")
    a = ap.parse_args()
    deadline = time.time() + a.timeout
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, a.topic.encode())
    sub.connect(a.pub)
    dealer = None
    if a.replay:
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(a.replay)
    # a test that publishes only once (nothing later would reveal a gap)
    # waits for this line before it makes events
    print("connected", flush=True)
    view = View()
    if a.catch_up and dealer is not None:
        time.sleep(0.2)  # the SUB joined: what follows arrives there
        replay(dealer, view, 0, deadline)
    want = None
    while time.time() < deadline:
        if sub.poll(100):
            frames = sub.recv_multipart()
            # Dynamo's listener drops anything else; we fail on it
            assert len(frames) == 3, "message of %d frames" % len(frames)
            topic, seqb, payload = frames
            assert topic == a.topic.encode(), "topic %r" % topic
            assert len(seqb) == 8, "seq of %d bytes" % len(seqb)
            (seq,) = struct.unpack(">Q", seqb)
            expected_next = 0 if view.last is None else view.last + 1
            if seq < expected_next and seq <= view.replayed:
                continue  # had it from a replay
            if view.last is not None and seq == view.last:
                # a publisher killed between sending a batch and recording
                # it sends it again: the same events, harmless to a set
                view.dups += 1
                view.apply_batch(payload)
                continue
            if seq < expected_next:
                # a publisher's seq never goes back: it restarted (a
                # kvbmd starts at 0 with a snapshot); start over
                view.restarts += 1
                view.last, view.replayed = None, -1
                expected_next = 0
            if seq > expected_next:
                if view.last is None:
                    view.cold += 1  # joined late: the replay has the start
                else:
                    view.gaps += 1
                if dealer is not None:
                    replay(dealer, view, expected_next, deadline)
                if view.last is not None and view.last + 1 < seq:
                    view.unfilled += 1  # lost: not even the replay had it
                if view.last is not None and seq <= view.last:
                    continue
            view.apply_batch(payload)
            view.last = seq
            if seq > view.replayed:
                view.replayed = -1  # live again: the replay's overlap is over
            continue
        if want is None and os.path.exists(a.expect):
            with open(a.expect) as f:
                want = json.load(f)
            view.block_size = want["block_size"]
        if want is not None and view.blocks == set(want["blocks"]):
            print("converged: %d blocks, last seq %s, %d batches, %d events, %d gaps, "
                  "%d replays, %d restarts, %d cold starts, %d duplicates, %d unfilled"
                  % (len(view.blocks), view.last, view.batches, view.events, view.gaps,
                     view.replays, view.restarts, view.cold, view.dups, view.unfilled))
            return 0
    exp = set(want["blocks"]) if want else set()
    print("did not converge: %d blocks, expected %d; last seq %s, %d batches, %d gaps, "
          "%d replays" % (len(view.blocks), len(exp), view.last, view.batches, view.gaps,
                          view.replays))
    print("missing:", sorted(exp - view.blocks)[:8])
    print("extra:", sorted(view.blocks - exp)[:8])
    return 1


if __name__ == "__main__":
    sys.exit(main())
