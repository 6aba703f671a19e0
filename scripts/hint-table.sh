#!/usr/bin/env bash
# Prints docs/EVICTION.md's "Hints" tables: the hit ratio of the backends
# that honour release hints (lineage, lfru, lru) on each trace at 1, 2, 5,
# 10, 25 and 50% capacity, without hints and with hints derived from the
# trace (kvbm-replay --hint-window) that are right, 10% wrong and 20% wrong.
# Usage: scripts/hint-table.sh TRACE... (Mooncake-format JSON lines with
#        timestamps; `make workloads` writes ours to build/workloads/)
# WINDOWS="300 inf" (seconds), OTHERS="oneshot none", BACKENDS, FRACS;
# BUILD=build; every replay's JSON goes to $BUILD/hints/*.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
. scripts/trace-args.sh
check_trace_args hint-table.sh "Mooncake-format, with timestamps" "$@"
fracs=${FRACS:-"0.01 0.02 0.05 0.10 0.25 0.50"}
backends=${BACKENDS:-"lineage lfru lru"}
windows=${WINDOWS:-"300 inf"}
others=${OTHERS:-"oneshot none"}
out=$build/hints
mkdir -p "$out"
for t in "$@"; do
	name=$(basename "$t" .jsonl)
	res=$out/$name.jsonl
	: >"$res"
	for b in $backends; do
		for f in $fracs; do
			"$build/bin/kvbm-replay" --trace "$t" --capacity-frac "$f" --backend "$b" --json >>"$res"
			echo >>"$res"
			for w in $windows; do
				for o in $others; do
					for nz in 0 0.1 0.2; do
						"$build/bin/kvbm-replay" --trace "$t" --capacity-frac "$f" \
							--backend "$b" --hint-window "$w" --hint-other "$o" \
							--hint-noise "$nz" --json >>"$res"
						echo >>"$res"
					done
				done
			done
		done
	done
	/usr/bin/python3 - "$res" "$name" "$fracs" <<'PY'
import json, sys
path, name, fracs = sys.argv[1], sys.argv[2], [float(x) for x in sys.argv[3].split()]
rows = {}
for line in open(path):
    line = line.strip()
    if not line:
        continue
    d = json.loads(line)
    if "hint_window" in d:
        w = "inf" if d["hint_window"] < 0 else "%g" % d["hint_window"]
        key = (d["backend"], "T=%s, else %s, %d%% wrong" % (w, d["hint_other"], round(100 * d["hint_noise"])))
    else:
        key = (d["backend"], "no hints")
    rows.setdefault(key, {})[d["capacity_frac"]] = d["hit_ratio"]
print("### %s\n" % name)
print("| backend | hints | " + " | ".join("%g%%" % (100 * f) for f in fracs) + " |")
print("|---|---|" + "---:|" * len(fracs))
for (b, h), v in rows.items():
    base = rows[(b, "no hints")]
    cells = []
    for f in fracs:
        x = v.get(f)
        if x is None:
            cells.append("")
        elif h == "no hints":
            cells.append("%.4f" % x)
        else:
            # below the same backend without hints: marked
            cells.append("%.4f%s" % (x, " (below)" if x < base[f] - 1e-9 else ""))
    print("| %s | %s | %s |" % (b, h, " | ".join(cells)))
print()
PY
done
