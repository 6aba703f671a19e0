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
    router, th, kvbm = set(), {}, set()
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
                router_apply(router, th, msgpack.unpackb(env["payload"], raw=False))
            else:
                msg = msgpack.unpackb(payload, raw=False)
                assert isinstance(msg, list) and len(msg) == 2
                if msg[0] != "Shutdown":
                    (kind, plhs), = msg[0].items()
                    for plh in plhs:
                        assert isinstance(plh, bytes) and len(plh) == 16
                        (kvbm.add if kind == "Create" else kvbm.discard)(plh.hex())
            continue
        if want is None and os.path.exists(a.expect):
            with open(a.expect) as f:
                want = json.load(f)
        if want is not None and router == set(want["blocks"]) and \
                set(want["plhs"]) <= kvbm:
            print("converged: %d blocks, %d messages, %d subscriptions, %d sequence gaps"
                  % (len(router), msgs, subscribed, gaps), flush=True)
            return 0
    exp = set(want["blocks"]) if want else set()
    print("did not converge: %d blocks, expected %d; %d messages, %d subscriptions, %d gaps"
          % (len(router), len(exp), msgs, subscribed, gaps))
    print("missing:", sorted(exp - router)[:8])
    print("extra:", sorted(router - exp)[:8])
    if want:
        print("kvbm stream missing:", sorted(set(want["plhs"]) - kvbm)[:8])
    return 1


if __name__ == "__main__":
    sys.exit(main())
