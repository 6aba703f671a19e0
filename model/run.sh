#!/bin/sh
# Usage: model/run.sh NAME [-DNAME=VALUE ...]  (the shared run.sh, on pin_evict_ow.pml)
# Generates, compiles and runs an exhaustive safety verification of
# pin_evict_ow.pml with the given switches, in model/build/NAME/.
# Output: build/NAME/pan.out; on an error also build/NAME/trail.txt (the
# counterexample replayed by spin -t).  Env: PANFLAGS (extra run flags),
# CCFLAGS (extra compile flags), DEPTH (default 200000).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
name=$1; shift
dir="$here/build/$name"
rm -rf "$dir"; mkdir -p "$dir"
cp "$here/pin_evict_ow.pml" "$dir/"
cd "$dir"
echo "$*" > defines.txt
spin -a "$@" pin_evict_ow.pml > spin.out 2>&1
gcc -O2 -DSAFETY -DNOFAIR -DCOLLAPSE -DMEMLIM=18000 ${CCFLAGS:-} -o pan pan.c > gcc.out 2>&1
start=$(date +%s)
./pan -m"${DEPTH:-200000}" -w26 ${PANFLAGS:-} > pan.out 2>&1 || true
end=$(date +%s)
echo "wall_s $((end - start))" >> pan.out
errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.out | head -1)
states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' pan.out | head -1)
depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' pan.out | head -1)
viol=$(grep -m1 -E 'pan:1:|depth too small|out of memory|aborted|MEMLIM bound' pan.out || true)
if [ -f pin_evict_ow.pml.trail ]; then
  spin -t -p -g -l "$@" pin_evict_ow.pml > trail.txt 2>&1 || true
fi
case "$viol" in
  *'holders[gp_slot'*) prop=P1b ;;
  *'gen[gp_slot'*) prop=P1 ;;
  *'key[gp_slot'*) prop=P4 ;;
  *'mine'*) prop=P6 ;;
  *'ninact'*) prop=P7 ;;
  *'inact['*) prop=P8 ;;
  *'gp_slot[0]==s'*) prop=P3 ;;
  *'holders[s]==0'*) prop=P2 ;;
  *'invalid end state'*) prop=P5 ;;
  *'pan:1:'*) prop=other ;;
  '') prop=- ;;
  *) prop="INCOMPLETE" ;;
esac
wall=$(sed -n 's/^wall_s //p' pan.out)
printf '%-24s %-44s errors=%-2s fails=%-10s states=%-10s depth=%-5s wall_s=%s\n' \
  "$name" "$*" "${errors:-?}" "$prop" "${states:-?}" "${depth:-?}" "$wall" | tee result.txt
