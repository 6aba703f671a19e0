#!/usr/bin/env bash
# Plots a kvbm-bench run against its targets, as an SVG to open in a
# browser (gnuplot): one bar per figure that has a target, its margin over
# the target (figure / target for an "at least" target, target / figure for
# an "at most" one), so that every bar at or above the line at 1 is met.
# Usage: scripts/plot-bench.sh RUN.json OUT.svg
#        (RUN.json: kvbm-bench --json [--quick] [WORKLOAD...] > RUN.json)
set -euo pipefail
if [ "${1:-}" = --help ] || [ "${1:-}" = -h ]; then
	sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
fi
if [ $# -ne 2 ]; then
	echo "usage: scripts/plot-bench.sh RUN.json OUT.svg" >&2
	exit 2
fi
run=$1 out=$2
[ -r "$run" ] || { echo "plot-bench.sh: no kvbm-bench --json output at $run" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "plot-bench.sh: needs gnuplot (apt-get install gnuplot-nox)" >&2; exit 1; }
# an SVG for a browser; a PNG (pngcairo) when OUT ends in .png
case $out in
*.png) term="pngcairo size 1000,600 enhanced font 'sans,10'" ;;
*) term="svg size 1000,600 dynamic enhanced font 'sans,11'" ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$run" >"$tmp/data" <<'PY' || { echo "plot-bench.sh: $run is not kvbm-bench --json output with targets" >&2; exit 1; }
import json, sys
d = json.load(open(sys.argv[1]))
for key, t in d["targets"].items():
    v = d[key]
    margin = v / t["target"] if t["at"] == "least" else (t["target"] / v if v else 0)
    label = "%s (%.4g %s, %s %.4g)" % (key, v, t["unit"], ">=" if t["at"] == "least" else "<=", t["target"])
    print('"%s" %.6g %d' % (label, margin, 1 if d["met"][key] else 2))
PY
[ -s "$tmp/data" ] || { echo "plot-bench.sh: $run has no figure with a target" >&2; exit 1; }
cat >"$tmp/plot.gp" <<GP
set terminal $term
set output '$out'
set title 'kvbm-bench against its targets: $(basename "$run")' noenhanced
set ylabel 'margin over the target (>= 1: met)'
set style fill solid 0.7
set boxwidth 0.6
set xtics rotate by -30 noenhanced
set grid ytics
set yrange [0:*]
set offsets 0,0,0.15,0
set key off
set palette defined (1 '#2e8b57', 2 '#c0392b')
unset colorbox
set cbrange [1:2]
plot '$tmp/data' using 0:2:3:xticlabels(1) with boxes lc palette, 1 with lines lw 2 dt 2 lc rgb 'black'
GP
gnuplot "$tmp/plot.gp"
echo "plot-bench.sh: wrote $out"
