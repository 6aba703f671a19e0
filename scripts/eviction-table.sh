#!/usr/bin/env bash
# Prints docs/EVICTION.md's table: the hit ratio of every backend on a
# trace at 1, 2, 5, 10, 25 and 50% capacity, next to exact LRU and Belady.
# Usage: scripts/eviction-table.sh [TRACE] (BUILD=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
trace=${1:-../shared/traces/conversation_trace.jsonl}
if [ ! -r "$trace" ]; then
	echo "eviction-table.sh: no trace to read at $trace: give a Mooncake trace (JSON lines) as the argument" >&2
	exit 1
fi
if [ ! -x "$build/bin/kvbm-replay" ]; then
	echo "eviction-table.sh: $build/bin/kvbm-replay is not built: run make first" >&2
	exit 1
fi
fracs="0.01 0.02 0.05 0.10 0.25 0.50"
ratio() { python3 -c "import json,sys; d=json.load(sys.stdin); print('%.4f' % d[sys.argv[1]])" "$1"; }
printf '| backend |'; for f in $fracs; do printf ' %s%% |' "$(python3 -c "print(round($f*100))")"; done; echo
printf '|---|'; for f in $fracs; do printf -- '---:|'; done; echo
for b in $("$build/bin/kvbm-replay" --list-backends); do
	printf '| %s |' "$b"
	for f in $fracs; do
		printf ' %s |' "$("$build/bin/kvbm-replay" --trace "$trace" --capacity-frac "$f" --backend "$b" --json | ratio hit_ratio)"
	done
	echo
done
for o in lru belady; do
	printf '| %s (oracle) |' "$([ $o = lru ] && echo exact LRU || echo Belady)"
	for f in $fracs; do
		printf ' %s |' "$("$build/bin/kvbm-replay" --trace "$trace" --capacity-frac "$f" --backend lru --oracle --json | ratio ${o}_hit_ratio)"
	done
	echo
done
