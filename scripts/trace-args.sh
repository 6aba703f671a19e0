# Sourced by the table scripts: checks their TRACE... arguments and that
# kvbm-replay is built. Needs $build; $1 is the script's name, then its
# usage line, then the traces.
check_trace_args() {
	local me=$1 usage=$2
	shift 2
	if [ $# -eq 0 ]; then
		echo "usage: scripts/$me TRACE... ($usage)" >&2
		exit 2
	fi
	for t in "$@"; do
		if [ ! -r "$t" ]; then
			echo "$me: no trace to read at $t" >&2
			exit 1
		fi
	done
	if [ ! -x "$build/bin/kvbm-replay" ]; then
		echo "$me: $build/bin/kvbm-replay is not built: run make first" >&2
		exit 1
	fi
}
