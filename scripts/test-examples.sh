#!/usr/bin/env bash
# Runs the programs of examples/ against a pool directory of its own and
# checks what they print and how they exit; then checks that the README's
# API block is, line for line, the region of examples/basic.c between
# README-BEGIN and README-END (one tab less indented), so it cannot drift.
# Usage: scripts/test-examples.sh (BUILD=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
ex=$build/examples
KVBM_SHM_DIR=$(mktemp -d)
export KVBM_SHM_DIR
trap 'rm -rf "$KVBM_SHM_DIR"' EXIT

fails=0
# expect NAME STATUS PATTERN CMD...: CMD exits STATUS and prints a line matching PATTERN
expect() {
	local name=$1 want=$2 pattern=$3 out rc=0
	shift 3
	out=$("$@" 2>&1) || rc=$?
	if [ "$rc" != "$want" ] || ! grep -Eq -- "$pattern" <<<"$out"; then
		echo "test-examples: FAIL $name: exit $rc (want $want), output:" >&2
		sed 's/^/    /' <<<"$out" >&2
		echo "    (wanted a line matching: $pattern)" >&2
		fails=$((fails + 1))
	fi
}

expect "basic creates, matches, destroys" 0 '^matched 4 of 4 blocks' "$ex/basic" ex-basic
expect "basic leaves every block available" 0 '^available 256 of 256 blocks$' "$ex/basic" ex-basic
[ ! -e "$KVBM_SHM_DIR/kvbm.ex-basic" ] || { echo "test-examples: FAIL basic left its pool" >&2; fails=$((fails + 1)); }

"$build/bin/kvbm-pool" create ex-shared --blocks 256 >/dev/null
expect "basic on an existing pool" 0 '^matched 4 of 4 blocks' "$ex/basic" ex-shared
[ -e "$KVBM_SHM_DIR/kvbm.ex-shared" ] || { echo "test-examples: FAIL basic destroyed a pool it did not create" >&2; fails=$((fails + 1)); }
expect "watch_metrics sees basic's work" 0 \
	'^allocations 4 registrations 4 evictions 0 free 252 inactive 4 held 0 \| alloc/s' \
	"$ex/watch_metrics" ex-shared 2 50
expect "watch_metrics without a pool" 1 'watch_metrics: ex-none: .*No such file' \
	"$ex/watch_metrics" ex-none 1
expect "watch_metrics usage" 2 '^usage: watch_metrics' "$ex/watch_metrics"

"$build/bin/kvbm-pool" create ex-small --blocks 128 >/dev/null
expect "basic on a pool of another configuration" 1 'basic: open: pool exists with' "$ex/basic" ex-small

expect "prefix_share reuses the prefix" 0 \
	'^parent [0-9]+: matched 4 of 6 blocks, held by 2 processes; computing 2$' "$ex/prefix_share" ex-share
[ ! -e "$KVBM_SHM_DIR/kvbm.ex-share" ] || { echo "test-examples: FAIL prefix_share left its pool" >&2; fails=$((fails + 1)); }

expect "onboard copies G2 blocks into G1 while another process evicts" 0 \
	'^onboarded [1-9][0-9]* blocks in [1-9][0-9]* plans \([0-9]+ already in G1\) while [1-9][0-9]* blocks were evicted; every copy verified$' \
	"$ex/onboard" ex-onboard 100
[ ! -e "$KVBM_SHM_DIR/kvbm.ex-onboard-g1" ] && [ ! -e "$KVBM_SHM_DIR/kvbm.ex-onboard-g2" ] ||
	{ echo "test-examples: FAIL onboard left its pools" >&2; fails=$((fails + 1)); }
expect "onboard usage" 2 '^usage: onboard' "$ex/onboard" ex-onboard 0

# the README quotes examples/basic.c
region=$(sed -n '/README-BEGIN/,/README-END/{/README-BEGIN/d;/README-END/d;s/^\t//;p}' examples/basic.c)
quoted=$(awk '/^<!-- quoted from examples\/basic.c/{q=1; next} q && /^```c$/{on=1; next} on && /^```$/{exit} on' README.md)
if [ -z "$region" ] || [ "$region" != "$quoted" ]; then
	echo "test-examples: FAIL the README's API block differs from examples/basic.c's README region:" >&2
	diff <(echo "$quoted") <(echo "$region") >&2 || true
	fails=$((fails + 1))
fi

if [ "$fails" -ne 0 ]; then
	echo "test-examples: $fails failed" >&2
	exit 1
fi
echo "test-examples: basic, prefix_share, watch_metrics, onboard and the README's quote OK"
