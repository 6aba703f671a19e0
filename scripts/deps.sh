#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, when missing.
# As root it uses apt-get; otherwise it says what to install.
# The list is complete for a minimal Debian 12 (mmdebstrap --variant=minbase,
# scripts/fresh-machine.sh proves it): packages are installed without their
# recommends, so what gcc only recommends is named here: libc6-dev (the C
# headers and crt files). binutils (nm, for test-install.sh) comes with gcc;
# util-linux (mount namespaces of the tmpfs tests) and the shell tools the
# scripts use are in every Debian. clang and libclang-rt-14-dev (libFuzzer)
# run the segment fuzzer in make check (without them only its corpus is
# replayed). libmicrohttpd-dev serves kvbmd's /metrics; libzmq3-dev carries
# its vLLM-format KV events, and python3-zmq is the tests' independent
# subscriber; libnats-dev (cnats) carries Dynamo's event plane, and the
# tests start a real nats-server. python3-pytest runs the Python package's
# tests (make python-check; the package itself needs only python3's
# ctypes), python3-numpy the token arrays they pass, python3-xxhash the
# independent implementation the hash variants are checked against. With --interop it
# also installs prometheus (promtool and the server, for make interop),
# which is large and not needed by make check. groff-base renders the man
# pages, which make check lints, and man-db's man finds the installed ones
# (test-install.sh); gnuplot-nox draws the plots of scripts/plot-*.sh, which
# make check draws; tmux gives kvbm-top the terminal its live test drives.
# python3-numpy also runs the engine demo (make demo).
set -euo pipefail

pkgs=(make gcc libc6-dev pkg-config check libsubunit-dev liburcu-dev libxxhash-dev
      clang libclang-rt-14-dev
      libjemalloc-dev libmicrohttpd-dev libzmq3-dev libnats-dev nats-server util-linux
      python3 python3-msgpack python3-zmq python3-numpy python3-pytest python3-xxhash cppcheck
      groff-base man-db gnuplot-nox tmux)
if [ "${1:-}" = --interop ]; then
	pkgs+=(prometheus)
fi

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
	echo "deps: installing ${missing[*]} (sudo)"
	sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
else
	echo "deps: missing Debian packages: ${missing[*]}" >&2
	echo "deps: run as root: apt-get install ${missing[*]}" >&2
	exit 1
fi
