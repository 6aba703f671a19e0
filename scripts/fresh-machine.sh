#!/usr/bin/env bash
# Proves the README's two commands on a fresh machine: builds a minimal
# Debian 12 root (mmdebstrap --variant=minbase bookworm, from Debian's
# archive), copies this repository into it (and ../shared beside it when
# present), then runs the two commands of the README's "Two commands" block,
# verbatim, as root in a chroot with its own /proc, /sys, a tmpfs on /dev/shm
# and devpts. Each command runs in a mount namespace of its own, so nothing
# is mounted on the host and nothing outlives the run. Prints pass/fail and
# the time of each; exit 0 only when both pass.
#
# Not run by CI: it downloads about 100 MB of packages and takes a few
# minutes on 2 cores (idle: root 20 s, first command 15 s, make check
# 2.5 min). Needs root (mount, chroot); installs mmdebstrap with apt-get
# when it is missing. By default / in the chroot is a mount point, as on a
# real machine or container, so the private-tmpfs tests run rather than skip.
#
# Usage: scripts/fresh-machine.sh [--keep] [--tarball FILE] [--verbose] [--plain-chroot]
#   --keep          leave the root and the logs in the work directory
#   --tarball FILE  reuse the minimal root in FILE, or build it there the
#                   first time (mmdebstrap writes a tarball); without it the
#                   root is built anew on every run
#   --verbose       stream each command's output (it always goes to a log)
#   --plain-chroot  do not make the root a mount point: / in the chroot is
#                   then no mount, and the tests that mount a private tmpfs
#                   (unshare + make / private) cannot, as in a bare chroot
# Environment: MIRROR (an apt line or URL for mmdebstrap; default its own
# for bookworm), FRESH_WORKDIR (default a new directory in /var/tmp).
set -euo pipefail
# all in main: bash reads the whole script before it runs, so an edit of
# this file during a long run cannot derail it
main() {
repo=$(cd "$(dirname "$0")/.." && pwd)
keep=0 tarball='' verbose=0 rootmount=1
while [ $# -gt 0 ]; do
	case $1 in
	--keep) keep=1 ;;
	--tarball) tarball=$2; shift ;;
	--verbose) verbose=1 ;;
	--plain-chroot) rootmount=0 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "fresh-machine: unknown argument $1 (--help)" >&2; exit 2 ;;
	esac
	shift
done

say() { printf 'fresh-machine: %s\n' "$*"; }
die() { say "$*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }

[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap, mount, chroot)"
for t in unshare chroot mount git tar; do
	command -v "$t" >/dev/null || die "needs $t"
done

# The README's two commands: the first ```sh block after "## Two commands";
# a line that starts with neither a blank nor # is a command, and what
# follows "  #" on it is its comment.
mapfile -t cmds < <(awk '
	/^## Two commands/ { sect = 1; next }
	sect && /^## / { exit }
	sect && !inb && /^```sh/ { inb = 1; next }
	inb && /^```/ { exit }
	inb && /^[^ \t#]/ { sub(/[ \t]+#.*$/, ""); print }' "$repo/README.md")
[ ${#cmds[@]} -eq 2 ] ||
	die "expected two commands in README.md's \"Two commands\" block, found ${#cmds[@]}"

if ! command -v mmdebstrap >/dev/null; then
	say "installing mmdebstrap"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi

work=${FRESH_WORKDIR:-$(mktemp -d /var/tmp/kvbm-fresh-XXXXXX)}
mkdir -p "$work"
root=$work/root
cleanup() {
	if [ "$keep" -eq 1 ]; then
		say "kept $work (root: $root)"
	else
		rm -rf --one-file-system "$work"
	fi
}
trap cleanup EXIT
[ ! -e "$root" ] || die "$root exists already"

# 1. the minimal Debian 12 root
t0=$(now)
mmdeb=(mmdebstrap --variant=minbase --mode=root bookworm)
if [ -n "$tarball" ] && [ -s "$tarball" ]; then
	say "root: reusing $tarball"
else
	out=$root
	[ -n "$tarball" ] && out=$tarball
	say "root: ${mmdeb[*]} $out (log: $work/mmdebstrap.log)"
	if ! "${mmdeb[@]}" "$out" ${MIRROR:+"$MIRROR"} >"$work/mmdebstrap.log" 2>&1; then
		tail -n 30 "$work/mmdebstrap.log" >&2
		die "mmdebstrap failed"
	fi
fi
if [ -n "$tarball" ]; then
	mkdir -p "$root"
	tar -C "$root" -xpf "$tarball"
fi
t_root=$(secs "$t0" "$(now)")
say "root: minbase bookworm ready in ${t_root} s, $(chroot "$root" dpkg-query -W | wc -l) packages"
for t in make gcc cc; do
	! chroot "$root" sh -c "command -v $t" >/dev/null ||
		die "the minimal root already has $t: it would prove nothing"
done

# 2. the repository as git tracks it (with uncommitted changes to tracked
# files), and ../shared beside it: the tests and models may read it
dest=$root/root/kvbm-shm
mkdir -p "$dest"
git -C "$repo" ls-files -z | tar -C "$repo" --null -T - -cf - | tar -C "$dest" -xpf -
desc=$(git -C "$repo" rev-parse --short HEAD)
git -C "$repo" diff --quiet HEAD || desc="$desc + uncommitted changes"
say "repo: $repo at $desc -> /root/kvbm-shm"
if [ -d "$repo/../shared" ]; then
	cp -aL "$repo/../shared" "$root/root/shared"
	say "repo: ../shared copied beside it"
fi

# Runs "$1" in the root, from the repository, as root, in a new mount
# namespace: / a mount point (as on a real machine; the tmpfs tests make it
# private), /proc, /sys, a fresh tmpfs /dev/shm and devpts. The device nodes
# are mmdebstrap's (it populates /dev as root), or the host's /dev bound in.
in_root() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	unshare --mount --propagation private -- env ROOT="$root" CMD="$1" \
		DIR=/root/kvbm-shm TERM="${TERM:-dumb}" ROOTMOUNT=$rootmount bash -c '
		set -e
		[ "$ROOTMOUNT" = 0 ] || mount --bind "$ROOT" "$ROOT"
		mount -t proc proc "$ROOT/proc"
		mount -t sysfs -o ro sysfs "$ROOT/sys"
		[ -c "$ROOT/dev/null" ] || mount --rbind /dev "$ROOT/dev"
		mkdir -p "$ROOT/dev/shm" "$ROOT/dev/pts"
		mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$ROOT/dev/shm"
		mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$ROOT/dev/pts"
		exec chroot "$ROOT" /usr/bin/env -i HOME=/root TERM="$TERM" \
			PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			/bin/bash -c "cd \"$DIR\" && $CMD"' </dev/null
}

# Processes left running in the root after a command (none should be):
# reported, then ended by pid
strays() {
	local p pids=()
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && pids+=("${p#/proc/}")
	done
	[ ${#pids[@]} -eq 0 ] && return 0
	say "  left running in the root: $(for p in "${pids[@]}"; do
		printf '%s(%s) ' "$p" "$(cat "/proc/$p/comm" 2>/dev/null)"; done)- killed"
	kill -KILL "${pids[@]}" 2>/dev/null || true
}

# 3. the README's two commands, in order, on the same root
results=() fails=0 i=0
for cmd in "${cmds[@]}"; do
	i=$((i + 1))
	log=$work/command-$i.log
	say "command $i/2: \`$cmd\` (log: $log)"
	t0=$(now)
	set +e
	if [ "$verbose" -eq 1 ]; then
		in_root "$cmd" 2>&1 | tee "$log"
		rc=${PIPESTATUS[0]}
	else
		in_root "$cmd" >"$log" 2>&1
		rc=$?
	fi
	set -e
	dt=$(secs "$t0" "$(now)")
	strays
	if [ "$rc" -eq 0 ]; then
		results+=("PASS  ${dt} s  \`$cmd\`")
	else
		fails=$((fails + 1))
		results+=("FAIL  ${dt} s  \`$cmd\` (exit $rc, log $log)")
		[ "$verbose" -eq 1 ] || { echo "--- last lines of $log:"; tail -n 40 "$log"; echo "---"; }
		grep -E '^[^:]+:[0-9]+:[EF]:' "$log" | head -n 40 || true
	fi
done

[ "$fails" -eq 0 ] || keep=1
say "result on minbase Debian 12 (root ready in ${t_root} s):"
for r in "${results[@]}"; do
	say "  $r"
done
if [ "$fails" -ne 0 ]; then
	say "$fails of 2 commands failed"
	exit 1
fi
say "both commands passed"
}

main "$@"
