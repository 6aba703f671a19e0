#!/usr/bin/env bash
# Torture run: kvbm-torture's workers share one pool while random ones are
# SIGKILLed and replaced; afterwards the library checks the pool exactly,
# and kvbm-shm-dump --check checks it again from outside.
# Usage: scripts/torture.sh [DURATION_SECONDS] (BUILD=build by default)
# Each run prints kills=K ops=N violations=V leaked=L; exit 0 only when every
# run had no violation, no leak and no wrong block.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
duration=${1:-60}
dir=$(mktemp -d /dev/shm/kvbm-torture-XXXXXX)
trap 'rm -rf "$dir"' EXIT
export KVBM_SHM_DIR=$dir

"$build/tests/kvbm-torture" --duration "$duration" --workers 6 --blocks 512 --keep torture
"$build/bin/kvbm-shm-dump" --check torture
"$build/bin/kvbm-pool" destroy torture
# with yields inside the pin/evict handshake, a fifth of the time
"$build/tests/kvbm-torture" --duration "$(( (duration + 4) / 5 ))" --workers 4 --blocks 64 --yield
# the queued policies (lib/evict_queue.c, lib/evict_adapt.c), a tenth of the time each
for b in s3fifo arc w-tinylfu lecar adapt; do
	"$build/tests/kvbm-torture" --duration "$(( (duration + 9) / 10 ))" --workers 4 --blocks 256 \
		--backend "$b" --keep "torture-$b"
	"$build/bin/kvbm-shm-dump" --check "torture-$b"
	"$build/bin/kvbm-pool" destroy "torture-$b"
done
# the recovery times after a holder of 65536 blocks dies, for the record
"$build/tests/kvbm-torture" recovery --blocks 65536
