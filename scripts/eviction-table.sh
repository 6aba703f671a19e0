#!/usr/bin/env bash
# Prints docs/EVICTION.md's tables: the hit ratio of every backend on each
# trace at 1, 2, 5, 10, 25 and 50% capacity, next to exact LRU and Belady,
# then the replay speed of every backend on each trace at 5%: blocks per
# CPU second (which other processes' load does not inflate as it does the
# wall clock), the best of SPEED_RUNS (5) runs, and as a multiple of lru's.
# Usage: scripts/eviction-table.sh TRACE... (Mooncake-format JSON lines;
#        `make workloads` writes ours to build/workloads/)
# BUILD=build by default; every replay's JSON goes to $BUILD/eviction/*.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
. scripts/trace-args.sh
check_trace_args eviction-table.sh "a Mooncake trace, JSON lines; make workloads writes ours to $build/workloads" "$@"
fracs="0.01 0.02 0.05 0.10 0.25 0.50"
out=$build/eviction
mkdir -p "$out"
for t in "$@"; do
	res=$out/$(basename "$t" .jsonl).jsonl
	: >"$res"
	for b in $("$build/bin/kvbm-replay" --list-backends); do
		for f in $fracs; do
			"$build/bin/kvbm-replay" --trace "$t" --capacity-frac "$f" --backend "$b" --json >>"$res"
			echo >>"$res"
		done
	done
	for f in $fracs; do
		"$build/bin/kvbm-replay" --trace "$t" --capacity-frac "$f" --backend lru --oracle --json |
			/usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); d["backend"]="oracle"; print(json.dumps(d))' >>"$res"
	done
	/usr/bin/python3 - "$res" "$fracs" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fracs = [float(f) for f in sys.argv[2].split()]
trace = rows[0]["trace"].rsplit("/", 1)[-1]
print("\n#### %s (%d unique blocks, %d requested)\n" % (trace, rows[0]["unique_blocks"], rows[0]["blocks"]))
print("| backend | " + " | ".join("%g%%" % (f * 100) for f in fracs) + " |")
print("|---|" + "---:|" * len(fracs))
cell = {}
for r in rows:
    cell[(r["backend"], r["capacity_frac"])] = r
names = []
for r in rows:
    if r["backend"] != "oracle" and r["backend"] not in names:
        names.append(r["backend"])
for b in names:
    print("| %s | " % b + " | ".join("%.4f" % cell[(b, f)]["hit_ratio"] for f in fracs) + " |")
for k, lab in (("lru_hit_ratio", "exact LRU (oracle)"), ("belady_hit_ratio", "Belady (oracle)")):
    print("| %s | " % lab + " | ".join("%.4f" % cell[("oracle", f)][k] for f in fracs) + " |")
EOF
	spd=$out/$(basename "$t" .jsonl).speed.jsonl
	: >"$spd"
	for k in $(seq "${SPEED_RUNS:-5}"); do
		for b in $("$build/bin/kvbm-replay" --list-backends); do
			"$build/bin/kvbm-replay" --trace "$t" --capacity-frac 0.05 --backend "$b" --json >>"$spd"
			echo >>"$spd"
		done
	done
	/usr/bin/python3 - "$spd" <<'EOF'
import json, sys
best = {}
for l in open(sys.argv[1]):
    if l.strip():
        r = json.loads(l)
        best[r["backend"]] = max(best.get(r["backend"], 0), r["blocks_per_cpu_s"])
base = best["lru"]
print("\nReplay speed at 5%, M blocks per CPU second (x lru): " +
      ", ".join("%s %.2f (%.2fx)" % (b, v / 1e6, v / base) for b, v in best.items()))
EOF
done
