#!/usr/bin/env bash
# What a user meets around the tools, outside the Check suites: the
# scripts' errors on a missing input. Prints only failures and one summary.
# Usage: scripts/test-tools.sh (BUILD=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
bin=$build/bin
fails=0
failed() { echo "test-tools: FAIL $*" >&2; fails=$((fails + 1)); }

# scripts/eviction-table.sh without its trace: one line naming it, exit 1
check_eviction_table_missing_trace() {
	local out rc=0
	out=$(BUILD=$build scripts/eviction-table.sh /nonexistent/trace.jsonl 2>&1) || rc=$?
	[ "$rc" = 1 ] || failed "eviction-table.sh without a trace exits $rc, not 1"
	[ "$(wc -l <<<"$out")" = 1 ] || failed "eviction-table.sh without a trace prints $(wc -l <<<"$out") lines, not 1"
	grep -q '/nonexistent/trace.jsonl' <<<"$out" || failed "eviction-table.sh does not name the missing trace: $out"
}

check_eviction_table_missing_trace

if [ "$fails" -ne 0 ]; then
	echo "test-tools: $fails failed" >&2
	exit 1
fi
echo "test-tools: OK"
