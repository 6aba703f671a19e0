#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Synthetic prefix-cache workloads in the Mooncake trace format.

Each output line is one request, in arrival order:
  {"timestamp": ms, "input_length": tokens, "output_length": tokens,
   "hash_ids": [...]}
with one hash id per 512-token block of the prompt; equal ids have equal
parents and positions (a prefix tree), as in the Mooncake project's
published traces, so kvbm-replay reads them unchanged.

Every shape is deterministic from --seed (Python's random.Random, no other
source of randomness). docs/EVICTION.md says what each shape models and
why. Usage:
  scripts/gen-workload.py SHAPE [--seed N] [--requests N] [-o FILE]
  scripts/gen-workload.py --list
"""
import argparse
import heapq
import json
import math
import random
import sys

BLOCK = 512


class Tree:
    """Assigns prefix-tree block ids: a block's id is fixed by its parent's
    id and its own content label, so equal prefixes get equal ids."""

    def __init__(self):
        self.ids = {}

    def path(self, labels):
        out, parent = [], -1
        for lab in labels:
            key = (parent, lab)
            i = self.ids.get(key)
            if i is None:
                i = len(self.ids)
                self.ids[key] = i
            out.append(i)
            parent = i
        return out


class Zipf:
    """Ranks 0..n-1 with P(k) ~ 1/(k+1)^s, by inverse CDF."""

    def __init__(self, n, s):
        w = [1.0 / (k + 1) ** s for k in range(n)]
        tot = sum(w)
        acc, self.cdf = 0.0, []
        for x in w:
            acc += x / tot
            self.cdf.append(acc)

    def draw(self, rng):
        u = rng.random()
        lo, hi = 0, len(self.cdf) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.cdf[mid] < u:
                lo = mid + 1
            else:
                hi = mid
        return lo


class Events:
    """Arrival-ordered requests: (time ms, seq, labels, output tokens)."""

    def __init__(self):
        self.q, self.n = [], 0

    def push(self, t, fn):
        heapq.heappush(self.q, (t, self.n, fn))
        self.n += 1

    def run(self, limit):
        done = 0
        while self.q and done < limit:
            t, _, fn = heapq.heappop(self.q)
            for item in fn(t) or ():
                yield item
                done += 1


def emit(out, tree, t, labels, rng, out_tokens):
    ids = tree.path(labels)
    # the last block is partial, as in the published traces
    n_tok = (len(ids) - 1) * BLOCK + rng.randint(1, BLOCK)
    out.write(json.dumps({"timestamp": int(t), "input_length": n_tok,
                          "output_length": out_tokens, "hash_ids": ids},
                         separators=(", ", ": ")) + "\n")


def uniq(rng, tag, n):
    """@n blocks of content nobody else sends."""
    u = rng.getrandbits(48)
    return [(tag, u, k) for k in range(n)]


# ---- multi-tenant -----------------------------------------------------------

def multi_tenant(rng, nreq):
    """Hundreds of tenants' system prompts under a Zipf popularity whose
    ranking drifts; multi-turn chats and one-shot API calls."""
    tenants = 400
    sys_len = [rng.randint(2, 12) for _ in range(tenants)]
    rank = list(range(tenants))
    rng.shuffle(rank)
    zipf = Zipf(tenants, 1.0)
    ev = Events()
    state = {"n": 0}

    def drift():
        # every 200 requests, a few tenants trade places in the ranking:
        # yesterday's busy tenant fades, a new one ramps up
        for _ in range(8):
            a, b = rng.randrange(tenants), rng.randrange(tenants)
            rank[a], rank[b] = rank[b], rank[a]

    def turn(conv, history, left):
        def fire(t):
            msg = uniq(rng, "user", rng.randint(1, 3))
            labels = history + msg
            if len(labels) > 160:
                return ()
            if left > 1:
                # the answer becomes part of the next turn's prefix
                nxt = labels + uniq(rng, "answer", rng.randint(1, 2))
                think = rng.expovariate(1 / 45000.0) + 5000
                ev.push(t + think, turn(conv, nxt, left - 1))
            return [(t, labels, rng.randint(100, 800))]
        return fire

    def arrival(t):
        state["n"] += 1
        if state["n"] % 200 == 0:
            drift()
        ev.push(t + rng.expovariate(1 / 250.0), arrival)
        ten = rank[zipf.draw(rng)]
        sysp = [("sys", ten, k) for k in range(sys_len[ten])]
        if rng.random() < 0.45:
            # a chat: 1 to ~10 turns, geometric
            turns = 1
            while turns < 12 and rng.random() < 0.7:
                turns += 1
            return turn(ten, sysp, turns)(t)
        # a one-shot API call: the tenant's prompt and a payload
        return [(t, sysp + uniq(rng, "api", rng.randint(1, 10)), rng.randint(20, 300))]

    ev.push(0, arrival)
    return ev.run(nreq)


# ---- agentic ------------------------------------------------------------------

def agentic(rng, nreq):
    """Agent sessions: a framework's long tool definitions, a task, and a
    context re-sent at every step; fan-out to sub-agents; human pauses."""
    frameworks = [[("tools", f, k) for k in range(rng.randint(8, 24))] for f in range(6)]
    fzipf = Zipf(len(frameworks), 0.8)
    ev = Events()

    def step(ctx, left, depth, on_done):
        def fire(t):
            labels = ctx
            if left <= 0 or len(labels) > 200:
                if on_done:
                    on_done(t, ctx)
                return ()
            gap = rng.uniform(2000, 20000)        # the model's turn and the tool's latency
            if depth == 0 and rng.random() < 0.08:
                gap += rng.expovariate(1 / 240000.0)  # a human reviews
            nxt = labels + uniq(rng, "obs", rng.randint(1, 4))
            if depth == 0 and rng.random() < 0.12:
                # fan-out: k sub-agents each start from the whole context
                k = rng.randint(2, 5)
                pending = {"n": k, "ctx": nxt}

                def joined(tj, sub_ctx):
                    pending["n"] -= 1
                    pending["ctx"] = pending["ctx"] + uniq(rng, "result", 1)
                    if pending["n"] == 0:
                        ev.push(tj + rng.uniform(500, 3000),
                                step(pending["ctx"], left - 1, depth, on_done))
                for i in range(k):
                    sub = nxt + uniq(rng, "subtask", rng.randint(1, 2))
                    ev.push(t + gap + rng.uniform(0, 500),
                            step(sub, rng.randint(2, 8), depth + 1, joined))
            else:
                ev.push(t + gap, step(nxt, left - 1, depth, on_done))
            return [(t, labels, rng.randint(50, 600))]
        return fire

    def arrival(t):
        ev.push(t + rng.expovariate(1 / 1200.0), arrival)
        fw = frameworks[fzipf.draw(rng)]
        task = uniq(rng, "task", rng.randint(2, 6))
        return step(fw + task, rng.randint(4, 30), 0, None)(t)

    ev.push(0, arrival)
    return ev.run(nreq)


# ---- scan-heavy batch -----------------------------------------------------------

def scan_heavy(rng, nreq):
    """A hot set of documents asked about again and again (Zipf), mixed
    with bursts of one-shot long documents (batch jobs) never seen again."""
    docs = 300
    doc_len = [rng.randint(4, 32) for _ in range(docs)]
    zipf = Zipf(docs, 0.9)
    sysp = [("sys", 0, k) for k in range(3)]
    ev = Events()
    state = {"burst": 0}

    def interactive(t):
        ev.push(t + rng.expovariate(1 / 300.0), interactive)
        d = zipf.draw(rng)
        labels = sysp + [("doc", d, k) for k in range(doc_len[d])] + uniq(rng, "q", 1)
        return [(t, labels, rng.randint(50, 400))]

    def batch(t):
        # a burst every ~2 minutes: 100-600 long one-shot documents,
        # 20 a second
        ev.push(t + rng.expovariate(1 / 120000.0), batch)
        n = rng.randint(100, 600)
        for i in range(n):
            ev.push(t + i * 50.0, lambda tt: [(tt, sysp + uniq(rng, "batch",
                                                               rng.randint(16, 96)),
                                               rng.randint(100, 500))])
        return ()

    ev.push(0, interactive)
    ev.push(rng.uniform(0, 60000), batch)
    return ev.run(nreq)


# ---- RAG --------------------------------------------------------------------------

def rag(rng, nreq):
    """Retrieval-augmented generation: a fixed instruction prompt, then the
    top-k chunks of a shared corpus for the query's topic, then the query.
    Popular topics retrieve the same chunks in the same order, so whole
    prefixes repeat; different topics share only the instruction prompt and
    whichever chunks happen to lead their lists."""
    chunks = 6000
    topics = 3000
    czipf = Zipf(chunks, 0.7)
    tzipf = Zipf(topics, 1.0)
    topic_chunks = []
    for _ in range(topics):
        k = rng.randint(3, 10)
        lst = []
        while len(lst) < k:
            c = czipf.draw(rng)
            if c not in lst:
                lst.append(c)
        topic_chunks.append(lst)
    clen = [rng.randint(1, 3) for _ in range(chunks)]
    sysp = [("sys", 0, k) for k in range(6)]
    ev = Events()

    def arrival(t):
        ev.push(t + rng.expovariate(1 / 300.0), arrival)
        tp = tzipf.draw(rng)
        labels = list(sysp)
        for c in topic_chunks[tp]:
            labels += [("chunk", c, k) for k in range(clen[c])]
        return [(t, labels + uniq(rng, "query", 1), rng.randint(100, 500))]

    ev.push(0, arrival)
    return ev.run(nreq)


# ---- code assistant -------------------------------------------------------------

def code(rng, nreq):
    """Code assistants: a repository's files as context, in a fixed order,
    then the cursor's context. Editing file j changes every block from j's
    position on, so a session's prefix is reused up to its last edit."""
    repos = 400
    rzipf = Zipf(repos, 0.8)
    files = [[rng.randint(1, 6) for _ in range(rng.randint(4, 14))] for _ in range(repos)]
    version = [[0] * len(f) for f in files]
    sysp = [("sys", 0, k) for k in range(4)]
    ev = Events()

    def context(r):
        labels = list(sysp)
        for j, n in enumerate(files[r]):
            labels += [("file", r, j, version[r][j], k) for k in range(n)]
        return labels

    def request(r, left):
        def fire(t):
            if left <= 0:
                return ()
            if rng.random() < 0.3:
                # an edit, more often near the end of the context
                j = len(files[r]) - 1 - min(int(rng.expovariate(0.5)), len(files[r]) - 1)
                version[r][j] += 1
            ev.push(t + rng.expovariate(1 / 8000.0) + 500, request(r, left - 1))
            return [(t, context(r) + uniq(rng, "cursor", rng.randint(1, 2)),
                     rng.randint(10, 200))]
        return fire

    def arrival(t):
        ev.push(t + rng.expovariate(1 / 600.0), arrival)
        return request(rzipf.draw(rng), rng.randint(3, 40))(t)

    ev.push(0, arrival)
    return ev.run(nreq)


SHAPES = {"multi-tenant": multi_tenant, "agentic": agentic, "scan-heavy": scan_heavy,
          "rag": rag, "code": code}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", nargs="?", help="one of: " + ", ".join(SHAPES))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--requests", type=int, default=12000)
    ap.add_argument("-o", "--output", help="file to write (default: stdout)")
    ap.add_argument("--list", action="store_true", help="print the shapes")
    a = ap.parse_args()
    if a.list:
        print("\n".join(SHAPES))
        return 0
    if a.shape not in SHAPES:
        ap.error("unknown shape %r: one of %s" % (a.shape, ", ".join(SHAPES)))
    if a.requests < 1:
        ap.error("--requests must be at least 1")
    rng = random.Random(a.seed)
    tree = Tree()
    out = open(a.output, "w") if a.output else sys.stdout
    last = 0
    for t, labels, out_tok in SHAPES[a.shape](rng, a.requests):
        last = max(last, t)  # arrival order: the event queue never goes back
        emit(out, tree, last, labels, rng, out_tok)
    if a.output:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
