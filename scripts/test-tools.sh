#!/usr/bin/env bash
# What a user meets around the tools, outside the Check suites: every tool
# has a man page that groff renders without a warning and whose OPTIONS
# list the options the tool's --help lists; the scripts' errors on a
# missing input. Prints only failures and one summary.
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

# The options a tool's --help names, and those its page's OPTIONS section
# tags (.TP then .B/.BI/.BR \-\-name), each set sorted; --help and
# --version are left out of both (every tool has them).
help_options() {
	"$1" --help 2>&1 | grep -oE -- '--[a-z][a-z0-9-]*' | grep -vxE -- '--(help|version)' | sort -u
}
page_options() {
	awk '/^\.SH /{opts = ($2 == "OPTIONS")} opts && prev == ".TP" {print} {prev = $0}' "$1" |
		sed 's/\\-/-/g' | grep -oE -- '--[a-z][a-z0-9-]*' | grep -vxE -- '--(help|version)' |
		sort -u
}

check_man_pages() {
	local t name page warn
	for t in "$bin"/*; do
		name=${t##*/}
		page=$(ls docs/man/"$name".[18] 2>/dev/null | head -1) || true
		if [ -z "$page" ]; then
			failed "$name has no man page (docs/man/$name.1 or .8)"
			continue
		fi
		if ! diff <(help_options "$t") <(page_options "$page") >/dev/null; then
			failed "$page's OPTIONS differ from '$name --help' (< --help, > page):"
			diff <(help_options "$t") <(page_options "$page") | grep '^[<>]' >&2 || true
		fi
	done
	for page in docs/man/*.[138]; do
		warn=$(groff -man -Tutf8 -ww -z "$page" 2>&1) || failed "groff cannot render $page"
		[ -z "$warn" ] || failed "groff warns on $page: $warn"
	done
	[ -e docs/man/libkvbm.3 ] || failed "no libkvbm(3) page"
}

check_eviction_table_missing_trace
check_man_pages

if [ "$fails" -ne 0 ]; then
	echo "test-tools: $fails failed" >&2
	exit 1
fi
echo "test-tools: OK"
