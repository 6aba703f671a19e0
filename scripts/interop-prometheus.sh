#!/usr/bin/env bash
# Interop with the real Prometheus (Debian's prometheus package, big, so
# not in make check): kvbmd serves two pools on loopback, a process
# allocates 5 blocks in G1 through libkvbm, `promtool check metrics` checks
# kvbmd's exposition, and a Prometheus server started here scrapes kvbmd
# every second until its HTTP API answers kvbm_allocations_total{pool="G1"}
# with 5. Everything runs on 127.0.0.1 and is stopped at the end.
# Usage: scripts/interop-prometheus.sh (BUILD=build by default); `make interop`.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
for tool in prometheus promtool python3; do
	if ! command -v "$tool" >/dev/null; then
		echo "interop: $tool is missing: scripts/deps.sh --interop (apt-get install prometheus)" >&2
		exit 1
	fi
done
dir=$(mktemp -d /dev/shm/kvbm-interop-XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$dir"
}
trap cleanup EXIT
export KVBM_SHM_DIR=$dir

# a line matching $2 in file $1 within 30 s, or fail showing the file
wait_for() {
	for _ in $(seq 300); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "interop: no '$2' in $1:" >&2
	cat "$1" >&2
	exit 1
}

"$build/bin/kvbmd" --pool interop-g1,tier=G1,blocks=64 --pool interop-g2,tier=G2,blocks=32 \
	--listen 127.0.0.1:0 --instance-id interop --worker-id 0 >"$dir/kvbmd.log" 2>&1 &
pids+=($!)
wait_for "$dir/kvbmd.log" "listening on port"
port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$dir/kvbmd.log" | head -1)
echo "interop: kvbmd on 127.0.0.1:$port"

# a real attacher: 5 blocks allocated in G1 through the shared library
python3 - "$build/lib/libkvbm.so" <<'PY'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
class Block(ctypes.Structure):
    _fields_ = [("pool", ctypes.c_uint64), ("id", ctypes.c_uint32), ("gen", ctypes.c_uint64)]
pool = ctypes.c_void_p()
r = lib.kvbm_pool_open(b"interop-g1", None, 0, ctypes.byref(pool))
assert r == 0, r
blocks = (Block * 5)()
r = lib.kvbm_allocate_blocks(pool, 5, blocks, None, None)
assert r == 0, r
assert lib.kvbm_pool_close(pool) == 0
PY

python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode())" \
	>"$dir/metrics.txt"
promtool check metrics <"$dir/metrics.txt"
echo "interop: promtool check metrics: ok ($(grep -c '^# HELP' "$dir/metrics.txt") families)"

pport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: kvbmd
    static_configs:
      - targets: ["127.0.0.1:$port"]
YML
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
	--web.listen-address="127.0.0.1:$pport" >"$dir/prometheus.log" 2>&1 &
pids+=($!)
wait_for "$dir/prometheus.log" "Server is ready to receive web requests"

python3 - "$pport" <<'PY'
import json, sys, time, urllib.parse, urllib.request
q = urllib.parse.urlencode({"query": 'kvbm_allocations_total{pool="G1"}'})
url = "http://127.0.0.1:%s/api/v1/query?%s" % (sys.argv[1], q)
for _ in range(300):
    d = json.load(urllib.request.urlopen(url))
    res = d["data"]["result"]
    if res:
        m, v = res[0]["metric"], res[0]["value"][1]
        assert d["status"] == "success" and len(res) == 1, d
        assert m["instance_id"] == "interop" and m["job"] == "kvbmd", m
        assert v == "5", res
        print("interop: prometheus answers kvbm_allocations_total{pool=\"G1\"} = %s (%s)" % (v, m))
        sys.exit(0)
    time.sleep(0.1)
sys.exit("interop: prometheus never returned kvbm_allocations_total{pool=\"G1\"}")
PY
echo "interop: passed"
