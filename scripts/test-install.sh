#!/usr/bin/env bash
# Installs into a temporary prefix and builds a user's program against it
# the way the README says: cc prog.c $(pkg-config --cflags --libs kvbm).
# Also checks that libkvbm exports nothing but the kvbm_ API.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -s install PREFIX="$tmp/prefix" >/dev/null

cat >"$tmp/prog.c" <<'C'
#include <kvbm.h>
#include <stdio.h>

int main(void)
{
	struct kvbm_config cfg;
	struct kvbm_pool *pool;
	struct kvbm_pool_info info;
	int r;

	kvbm_config_init(&cfg);
	r = kvbm_pool_open("install-test", &cfg, KVBM_OPEN_CREATE | KVBM_OPEN_EXCL, &pool);
	if (r < 0) {
		fprintf(stderr, "open: %s\n", kvbm_strerror(r));
		return 1;
	}
	if (kvbm_pool_info(pool, &info) < 0 || info.config.block_count != 1024)
		return 2;
	if (kvbm_pool_close(pool) < 0 || kvbm_pool_destroy("install-test", 0) < 0)
		return 3;
	printf("linked against libkvbm %s\n", kvbm_version());
	return 0;
}
C

export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
mkdir -p "$tmp/shm"
# shellcheck disable=SC2046
cc -Wall -Werror "$tmp/prog.c" -o "$tmp/prog" $(pkg-config --cflags --libs kvbm)
LD_LIBRARY_PATH="$tmp/prefix/lib" KVBM_SHM_DIR="$tmp/shm" "$tmp/prog"
# shellcheck disable=SC2046
cc -Wall -Werror -static-libgcc "$tmp/prog.c" -o "$tmp/prog-static" \
	$(pkg-config --cflags kvbm) "$tmp/prefix/lib/libkvbm.a" $(pkg-config --libs --static kvbm | sed 's/-lkvbm//')
KVBM_SHM_DIR="$tmp/shm" "$tmp/prog-static" >/dev/null

# the shared library's dynamic symbols: the public API only
bad=$(nm -D --defined-only "$tmp/prefix/lib/libkvbm.so" | awk '{print $3}' | grep -v '^kvbm_' || true)
if [ -n "$bad" ]; then
	echo "test-install: libkvbm.so exports non-API symbols:" >&2
	echo "$bad" >&2
	exit 1
fi
for t in kvbm-shm-dump kvbm-pool kvbm-demo; do
	[ -x "$tmp/prefix/bin/$t" ] || { echo "test-install: $t not installed" >&2; exit 1; }
done

# the Python package, imported from where make install put it (run from
# $tmp: the build tree's python/ must not be the one found), finds the
# installed libkvbm.so.0 by itself and works
pydir=$(dirname "$(find "$tmp/prefix/lib" -path '*-packages/kvbm/__init__.py' | head -1)")
[ -f "$pydir/pool.py" ] || { echo "test-install: the kvbm Python package is not installed" >&2; exit 1; }
(cd "$tmp" && KVBM_LIB= PYTHONPATH="$(dirname "$pydir")" KVBM_SHM_DIR="$tmp/shm" PREFIX="$tmp/prefix" \
	/usr/bin/python3 - <<'PY'
import os
import kvbm

lib = os.path.realpath(kvbm.lib_path)
assert lib.startswith(os.path.realpath(os.environ["PREFIX"])), lib
assert os.path.realpath(kvbm.__file__).startswith(os.path.realpath(os.environ["PREFIX"]))
h = kvbm.hash_tokens(list(range(1, 13)), 4, 1337)
assert h.seq_hashes[2] == 12583592247330656132
with kvbm.Pool("install-test-py", create=True, exclusive=True, block_count=16,
               block_size=4) as p:
    b = p.allocate(3)
    p.stage(b, h)
    p.register(b)
    p.release(b)
    m = p.match(h)
    assert m.ids == b.ids
    p.release(m)
    assert p.check(lock=True) == []
kvbm.destroy("install-test-py")
print("python: kvbm %s from %s, libkvbm %s" % (kvbm.__version__, os.path.dirname(kvbm.__file__), lib))
PY
)

# An installed example, built and run as the README tells a user: with
# pkg-config alone, no LD_LIBRARY_PATH (kvbm.pc's rpath finds the library).
check_installed_example() {
	local src="$tmp/prefix/share/doc/kvbm/examples/basic.c" out
	[ -r "$src" ] || { echo "test-install: $src not installed" >&2; exit 1; }
	# shellcheck disable=SC2046
	cc -Wall -Werror "$src" -o "$tmp/basic" $(pkg-config --cflags --libs kvbm)
	out=$(env -u LD_LIBRARY_PATH KVBM_SHM_DIR="$tmp/shm" "$tmp/basic" example-install) || {
		echo "test-install: the installed examples/basic.c failed to run: $out" >&2
		exit 1
	}
	grep -q '^matched 4 of 4 blocks' <<<"$out" || {
		echo "test-install: examples/basic.c printed: $out" >&2
		exit 1
	}
	# onboard.c includes kvbm_tier.h: the installed headers are complete
	src="$tmp/prefix/share/doc/kvbm/examples/onboard.c"
	# shellcheck disable=SC2046
	cc -Wall -Werror "$src" -o "$tmp/onboard" $(pkg-config --cflags --libs kvbm)
	out=$(env -u LD_LIBRARY_PATH KVBM_SHM_DIR="$tmp/shm" "$tmp/onboard" onboard-install 20) || {
		echo "test-install: the installed examples/onboard.c failed: $out" >&2
		exit 1
	}
}
check_installed_example

# Every installed tool answers --version with "NAME kvbm-shm VERSION".
check_tool_versions() {
	local t name out want version
	version=$(pkg-config --modversion kvbm)
	for t in "$tmp/prefix/bin"/*; do
		name=${t##*/}
		want="$name kvbm-shm $version"
		out=$("$t" --version 2>&1) || { echo "test-install: $name --version failed: $out" >&2; exit 1; }
		[ "$out" = "$want" ] || { echo "test-install: $name --version printed '$out', not '$want'" >&2; exit 1; }
	done
}
check_tool_versions

# Every installed tool has its man page where man finds it, and so has the library.
check_installed_man_pages() {
	local t name
	for t in "$tmp/prefix/bin"/* libkvbm; do
		name=${t##*/}
		MANPATH="$tmp/prefix/share/man" man -w "$name" >/dev/null 2>&1 ||
			{ echo "test-install: no installed man page for $name" >&2; exit 1; }
	done
}
check_installed_man_pages

echo "test-install: install, pkg-config build (shared and static), exported symbols, an installed example, every tool's --version and man page, and the Python package OK"
