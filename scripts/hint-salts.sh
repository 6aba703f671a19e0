#!/usr/bin/env bash
# Prints docs/EVICTION.md's control-sample table: the hit ratio of right
# release hints (kvbm-replay --hint-window inf) on each trace at each
# capacity, with the trace's ids mapped to keys by SALTS salts
# (kvbm-replay --key-salt 0..SALTS-1), so by that many control samples
# (the releases whose blocks are ordered as if unhinted, picked by key).
# Usage: scripts/hint-salts.sh TRACE...
# SALTS=32, FRACS="0.05 0.10", BACKEND=lineage, WINDOW=inf, BUILD=build.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
. scripts/trace-args.sh
check_trace_args hint-salts.sh "Mooncake-format, with timestamps" "$@"
salts=${SALTS:-32}
fracs=${FRACS:-"0.05 0.10"}
backend=${BACKEND:-lineage}
window=${WINDOW:-inf}
for t in "$@"; do
	for f in $fracs; do
		for ((s = 0; s < salts; s++)); do
			"$build/bin/kvbm-replay" --trace "$t" --capacity-frac "$f" --backend "$backend" \
				--hint-window "$window" --key-salt "$s" --json
			echo
		done
	done
done | /usr/bin/python3 -c '
import json, sys
rows = {}
for line in sys.stdin:
    if line.strip():
        d = json.loads(line)
        rows.setdefault((d["trace"], d["capacity_frac"]), []).append(d["hit_ratio"])
print("| trace | capacity | salts | min | median | max | each, salt 0 first |")
print("|---|---:|---:|---:|---:|---:|---|")
for (t, f), v in rows.items():
    s = sorted(v)
    print("| %s | %g%% | %d | %.4f | %.4f | %.4f | %s |" % (t.split("/")[-1], 100 * f, len(v),
          s[0], s[len(s) // 2], s[-1], " ".join("%.4f" % x for x in v)))
'
