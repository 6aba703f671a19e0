#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A subscriber of Dynamo's event plane over NATS, written from the
specification (spec 5.1, 5.2) and NATS's text protocol, not from kvbmd's
encoder: a plain socket (Debian has no Python NATS client) and Debian's
python3-msgpack. It subscribes to `kv-events` (RouterEvents in the
event-plane envelope {publisher_id, sequence, published_at, topic,
payload}) and `kvbm.events` (kvbm-logical's own stream), reconnects when
the server goes away (printing "subscribed N" each time it is subscribed),
and exits 0 once the router view equals the expected set (a JSON file the
test writes at quiescence: {"blocks": [router hashes], "plhs": [hex]}) and
the kvbm view holds every expected PLH; 1 with the difference at the
deadline.

The views are kept per worker (RouterEvent.worker_id; a "cleared" clears
only its worker's blocks, as Dynamo's router does) and per instance (the
second element of a kvbm-logical message). An expectation of the form
{"workers": {"ID": {"instance": hex, "blocks": [...], "plhs": [...]}}}
(several nodes publishing into one server) must match per worker: each
worker's router set equal to its blocks, no other worker with a block, and
each instance's kvbm set equal to its plhs (the kvbm stream has no
"cleared", so this holds only without a lost message); the plain form
compares the union of the workers' sets.

usage: kv_events_nats.py --url nats://HOST:PORT --expect FILE [--timeout S]
"""
import argparse
import json
import os
import socket
import sys
import time

import msgpack

from kv_events_decode import router_apply


class Conn:
    """NATS's client protocol: INFO, CONNECT, SUB, MSG, PING/PONG."""

    def __init__(self, host, port):
        self.s = socket.create_connection((host, port), timeout=1)
        self.buf = b""
        line = self.line()
        assert line.startswith(b"INFO "), line
        self.s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"kv_events_nats"}\r\n'
                       b"SUB kv-events 1\r\nSUB kvbm.events 2\r\nPING\r\n")
        while self.line() != b"PONG":  # the server has the subscriptions
            pass
        self.s.settimeout(0.1)

    def fill(self):
        d = self.s.recv(1 << 16)
        if not d:
            raise ConnectionError("server closed")
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def next(self):
        """(subject, payload) of the next message, or None on a timeout."""
        while True:
            try:
                line = self.line()
            except socket.timeout:
                return None
            if line == b"PING":
                self.s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                parts = line.split()
                n = int(parts[-1])
                while len(self.buf) < n + 2:
                    try:
                        self.fill()
                    except socket.timeout:
                        continue
                payload, self.buf = self.buf[:n], self.buf[n + 2:]
                return parts[1].decode(), payload
            elif line.startswith(b"-ERR"):
                raise ConnectionError(line.decode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--expect", required=True)
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    host, port = a.url.split("://", 1)[1].rsplit(":", 1)
    deadline = time.time() + a.timeout
    routers, th, kvbms = {}, {}, {}
    seqs, gaps, subscribed, msgs = {}, 0, 0, 0
    conn, want = None, None
    while time.time() < deadline:
        if conn is None:
            try:
                conn = Conn(host, int(port))
                subscribed += 1
                print("subscribed %d" % subscribed, flush=True)
            except (OSError, ConnectionError, AssertionError):
                conn = None
                time.sleep(0.02)
                continue
        try:
            m = conn.next()
        except (OSError, ConnectionError):
            conn = None
            continue
        if m is not None:
            subject, payload = m
            msgs += 1
            if subject == "kv-events":
                env = msgpack.unpackb(payload, raw=False)
                assert set(env) == {"publisher_id", "sequence", "published_at", "topic",
                                    "payload"}, env.keys()
                assert env["topic"] == "kv-events" and isinstance(env["payload"], bytes)
                last = seqs.get(env["publisher_id"])
                if last is not None and env["sequence"] != last + 1:
                    gaps += 1  # lost while the server was away
                seqs[env["publisher_id"]] = env["sequence"]
                ev = msgpack.unpackb(env["payload"], raw=False)
                router_apply(routers.setdefault(str(ev["worker_id"]), set()), th, ev)
            else:
                msg = msgpack.unpackb(payload, raw=False)
                assert isinstance(msg, list) and len(msg) == 2
                assert isinstance(msg[1], bytes) and len(msg[1]) == 16, "instance: bin 16"
                kvbm = kvbms.setdefault(msg[1].hex(), set())
                if msg[0] != "Shutdown":
                    (kind, plhs), = msg[0].items()
                    for plh in plhs:
                        assert isinstance(plh, bytes) and len(plh) == 16
                        (kvbm.add if kind == "Create" else kvbm.discard)(plh.hex())
            continue
        if want is None and os.path.exists(a.expect):
            with open(a.expect) as f:
                want = json.load(f)
        if want is not None and not diff(want, routers, kvbms):
            print("converged: %d blocks, %d workers, %d instances, %d publishers, "
                  "%d messages, %d subscriptions, %d sequence gaps"
                  % (sum(len(r) for r in routers.values()), len(routers), len(kvbms),
                     len(seqs), msgs, subscribed, gaps), flush=True)
            return 0
    print("did not converge: %d messages, %d subscriptions, %d gaps; workers %s, instances %s"
          % (msgs, subscribed, gaps, sorted(routers), sorted(kvbms)))
    for line in diff(want, routers, kvbms) if want else ["no expectation file"]:
        print(line)
    return 1


def differ(what, got, exp):
    """Lines saying how set @got differs from set @exp (none when equal)."""
    if got == exp:
        return []
    return ["%s: %d, expected %d; missing %s; extra %s"
            % (what, len(got), len(exp), sorted(exp - got)[:8], sorted(got - exp)[:8])]


def diff(want, routers, kvbms):
    """How the views differ from the expectation (an empty list: converged)."""
    if "workers" not in want:
        union = set().union(*routers.values())
        kvbm = set().union(*kvbms.values())
        return differ("blocks", union, set(want["blocks"])) + \
            differ("kvbm stream (its missing ones)", kvbm & set(want["plhs"]), set(want["plhs"]))
    out = []
    for w in sorted(set(routers) | set(want["workers"])):
        exp = want["workers"].get(w, {"blocks": [], "plhs": []})
        out += differ("worker %s blocks" % w, routers.get(w, set()), set(exp["blocks"]))
        if "instance" in exp:
            out += differ("worker %s instance %s kvbm stream" % (w, exp["instance"]),
                          kvbms.get(exp["instance"], set()), set(exp["plhs"]))
    instances = {e["instance"] for e in want["workers"].values() if "instance" in e}
    if instances:
        out += differ("instances on kvbm.events", set(kvbms), instances)
    return out


if __name__ == "__main__":
    sys.exit(main())
