#!/usr/bin/env bash
# What a user meets around the tools, outside the Check suites: every tool
# has a man page that groff renders without a warning and whose OPTIONS
# list the options the tool's --help lists; the scripts' errors on a
# missing input; kvbm-bench and kvbm-demo as a user runs them (without a
# pool directory, interrupted, into a file). Prints only failures and one
# summary.
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

# kvbm-bench: (e) needs no pool, so no pool directory either; Ctrl-C
# (SIGINT) or SIGTERM in the middle of a run leaves no pool behind.
check_bench_without_dir_and_on_signal() {
	local out rc=0 dir pid i
	out=$(KVBM_SHM_DIR=/nonexistent "$bin/kvbm-bench" --quick --json e 2>&1) || rc=$?
	[ "$rc" = 0 ] || failed "kvbm-bench e with KVBM_SHM_DIR=/nonexistent exits $rc: $out"
	for sig in INT TERM; do
		dir=$(mktemp -d)
		# a background job starts with SIGINT ignored: restore it, as on a terminal
		env --default-signal=INT KVBM_SHM_DIR="$dir" "$bin/kvbm-bench" --quick a >/dev/null 2>&1 &
		pid=$!
		for i in $(seq 400); do
			compgen -G "$dir/kvbm.bench-*" >/dev/null && break
			sleep 0.05
		done
		compgen -G "$dir/kvbm.bench-*" >/dev/null || failed "kvbm-bench made no pool in $dir"
		kill -"$sig" "$pid"
		wait "$pid" 2>/dev/null || true
		sleep 0.3 # orphaned workers finish their sample
		if compgen -G "$dir/kvbm.*" >/dev/null; then
			failed "kvbm-bench left a pool behind after SIG$sig: $(ls "$dir")"
		fi
		rm -rf "$dir"
	done
}

# kvbm-demo: --help explains instead of running; its lines keep their order
# in a file (the workers' and kvbm-shm-dump's lines among its own).
check_demo() {
	local out dir got want
	out=$("$bin/kvbm-demo" --help) || failed "kvbm-demo --help failed"
	grep -q '^usage: kvbm-demo' <<<"$out" || failed "kvbm-demo --help printed: $out"
	grep -q '^==' <<<"$out" && failed "kvbm-demo --help ran the demo"
	dir=$(mktemp -d)
	KVBM_SHM_DIR=$dir "$bin/kvbm-demo" >"$dir/out" 2>&1 || failed "kvbm-demo failed: $(cat "$dir/out")"
	got=$(grep -oE '^== [A-Za-z0-9_()]+|^  worker [0-9]|^pool ' "$dir/out" | tr '\n' '|')
	want='== creating|== 3|  worker 0|  worker 1|  worker 2|== the|pool |== SIGKILL|== kvbm_reap()|pool |== workers|  worker 0|  worker 2|== nobody|pool |== pool|'
	[ "$got" = "$want" ] || failed "kvbm-demo's lines out of order in a file: $got"
	rm -rf "$dir"
}

# kvbm-top, as a user sees it: in a terminal (tmux), a pool, then a live
# process and activity, then that process killed, then q.
check_top() {
	local dir sess out wpid i seen_rate=0 seen_dead=0
	dir=$(mktemp -d)
	KVBM_SHM_DIR=$dir "$bin/kvbm-pool" create top1 --blocks 256 >/dev/null
	out=$(KVBM_SHM_DIR=$dir "$bin/kvbm-top" --once --interval 100) ||
		failed "kvbm-top --once failed: $out"
	grep -q '^top1  tier G1  256 blocks x 16 tokens  READY' <<<"$out" ||
		failed "kvbm-top --once does not show the pool: $out"
	if ! command -v tmux >/dev/null; then
		echo "test-tools: no tmux: kvbm-top's live view not checked" >&2
		rm -rf "$dir"
		return
	fi
	sess=kvbm-top-test-$$
	tmux new-session -d -s "$sess" -x 150 -y 40 \
		"env KVBM_SHM_DIR=$dir $bin/kvbm-top --interval 100"
	KVBM_SHM_DIR=$dir "$build/examples/watch_metrics" top1 0 100 >/dev/null &
	wpid=$!
	for i in $(seq 30); do # activity: allocations, registrations, matches
		KVBM_SHM_DIR=$dir "$build/examples/basic" top1 >/dev/null
		out=$(tmux capture-pane -p -t "$sess")
		grep -qE 'alloc/s [1-9]' <<<"$out" && seen_rate=1 && break
		sleep 0.05
	done
	[ "$seen_rate" = 1 ] || failed "kvbm-top shows no allocation rate: $out"
	grep -qE "^  [0-9]+ +$wpid +alive" <<<"$out" || failed "kvbm-top does not show pid $wpid alive: $out"
	kill -9 "$wpid"
	wait "$wpid" 2>/dev/null || true
	for i in $(seq 40); do
		out=$(tmux capture-pane -p -t "$sess")
		grep -qE "^  [0-9]+ +$wpid +dead" <<<"$out" && seen_dead=1 && break
		sleep 0.05
	done
	[ "$seen_dead" = 1 ] || failed "kvbm-top does not show pid $wpid dead: $out"
	tmux send-keys -t "$sess" q
	for i in $(seq 40); do
		tmux has-session -t "$sess" 2>/dev/null || break
		sleep 0.05
	done
	if tmux has-session -t "$sess" 2>/dev/null; then
		failed "kvbm-top did not quit on q"
		tmux kill-session -t "$sess"
	fi
	rm -rf "$dir"
}

# The plots: an SVG that parses, with the curves (bars) it announces.
check_plots() {
	local dir out
	dir=$(mktemp -d)
	python3 - "$dir/trace.jsonl" <<'PY'
import random, sys
random.seed(7)
with open(sys.argv[1], "w") as f:
    for t in range(300):
        p = random.randrange(12)  # 12 shared prefixes of 4 blocks, then 2 blocks of its own
        ids = [p * 10 + i for i in range(4)] + [1000 + 2 * t, 1001 + 2 * t]
        f.write('{"timestamp": %d, "hash_ids": %s}\n' % (t, ids))
PY
	out=$(KVBM_SHM_DIR=$dir BUILD=$build scripts/plot-eviction.sh --backends lru,lfru \
		--fracs "0.1 0.5" "$dir/trace.jsonl" "$dir/ev.svg" 2>&1) || failed "plot-eviction.sh: $out"
	python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$dir/ev.svg" ||
		failed "plot-eviction.sh wrote no SVG"
	for t in '>lru<' '>lfru<' '>exact LRU (oracle)<' '>Belady (optimum)<'; do
		grep -qF "$t" "$dir/ev.svg" || failed "plot-eviction.sh's SVG has no curve $t"
	done
	out=$(scripts/plot-eviction.sh /nonexistent.jsonl "$dir/x.svg" 2>&1) && failed "plot-eviction.sh without a trace succeeded"
	KVBM_SHM_DIR=$dir "$bin/kvbm-bench" --quick --json h >"$dir/run.json"
	out=$(scripts/plot-bench.sh "$dir/run.json" "$dir/bench.svg" 2>&1) || failed "plot-bench.sh: $out"
	python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$dir/bench.svg" ||
		failed "plot-bench.sh wrote no SVG"
	grep -q 'h_bytes_per_block' "$dir/bench.svg" || failed "plot-bench.sh's SVG has no bar for (h)"
	rm -rf "$dir"
}

check_eviction_table_missing_trace
check_man_pages
check_plots
check_top
check_bench_without_dir_and_on_signal
check_demo

if [ "$fails" -ne 0 ]; then
	echo "test-tools: $fails failed" >&2
	exit 1
fi
echo "test-tools: OK"
