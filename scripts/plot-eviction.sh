#!/usr/bin/env bash
# Plots the prefix hit ratio of eviction backends against the pool's
# capacity on a trace, with exact LRU and the offline optimum (Belady), as
# an SVG to open in a browser (gnuplot). The data come from kvbm-replay
# --json, one run per backend and capacity.
# Usage: scripts/plot-eviction.sh [--backends a,b,...] [--fracs "0.01 0.05 ..."]
#                                 TRACE OUT.svg          (BUILD=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
backends=lineage,lru,multi-lru,lfru
fracs="0.01 0.02 0.05 0.10 0.25 0.50"
while [ $# -gt 0 ]; do
	case $1 in
	--backends) backends=$2; shift 2 ;;
	--fracs) fracs=$2; shift 2 ;;
	-h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "plot-eviction.sh: unknown option $1 (--help)" >&2; exit 2 ;;
	*) break ;;
	esac
done
if [ $# -ne 2 ]; then
	echo "usage: scripts/plot-eviction.sh [--backends a,b] [--fracs \"F ...\"] TRACE OUT.svg" >&2
	exit 2
fi
trace=$1 out=$2
[ -r "$trace" ] || { echo "plot-eviction.sh: no trace to read at $trace" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "plot-eviction.sh: needs gnuplot (apt-get install gnuplot-nox)" >&2; exit 1; }
[ -x "$build/bin/kvbm-replay" ] || { echo "plot-eviction.sh: $build/bin/kvbm-replay is not built: run make" >&2; exit 1; }

# an SVG for a browser; a PNG (pngcairo) when OUT ends in .png
case $out in
*.png) term="pngcairo size 900,560 enhanced font 'sans,10'" ;;
*) term="svg size 900,560 dynamic enhanced font 'sans,12'" ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ratio() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
# one column per curve: capacity (%), then each backend, exact LRU, Belady
IFS=, read -ra bs <<<"$backends"
for f in $fracs; do
	row="$(python3 -c "print($f * 100)")"
	for b in "${bs[@]}"; do
		row+=" $("$build/bin/kvbm-replay" --trace "$trace" --capacity-frac "$f" --backend "$b" --json | ratio hit_ratio)"
	done
	o=$("$build/bin/kvbm-replay" --trace "$trace" --capacity-frac "$f" --backend lru --oracle --json)
	row+=" $(ratio lru_hit_ratio <<<"$o") $(ratio belady_hit_ratio <<<"$o")"
	echo "$row" >>"$tmp/data"
done
{
	echo "set terminal $term"
	echo "set output '$out'"
	echo "set title 'Prefix hit ratio against capacity: $(basename "$trace")' noenhanced"
	echo "set xlabel 'pool capacity (% of the trace''s unique blocks)'"
	echo "set ylabel 'prefix hit ratio'"
	echo "set logscale x; set grid; set key left top; set yrange [0:*]"
	printf "plot "
	col=2
	for b in "${bs[@]}"; do
		printf "'%s' using 1:%d with linespoints title '%s' noenhanced, " "$tmp/data" "$col" "$b"
		col=$((col + 1))
	done
	printf "'%s' using 1:%d with lines dashtype 2 lw 2 title 'exact LRU (oracle)', " "$tmp/data" "$col"
	printf "'%s' using 1:%d with lines dashtype 3 lw 2 title 'Belady (optimum)'\n" "$tmp/data" $((col + 1))
} >"$tmp/plot.gp"
gnuplot "$tmp/plot.gp"
echo "plot-eviction.sh: wrote $out"
