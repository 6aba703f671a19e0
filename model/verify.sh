#!/bin/sh
# Runs the table of model/README.md on pin_evict_ow.pml, into model/build/.
# Expected failures are searched breadth-first (shortest counterexample).
# Writes build/results.txt. About 25 minutes on 2 cores; needs spin
# (apt-get install spin) and ../shared beside the project only for
# comparison with the shared model's own table.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
mkdir -p build
FIX="-DFASTGEN=1 -DREGLOCK=1 -DEVFIX=1 -DKEYRECHECK=1"
OW="-DNOSEQ=1 -DHOLD2=1 -DONEWRITER=1"
pass() { ./run.sh "$@"; }
# revoke.pml is small: each run takes a second
revoke() {
  name=$1; shift
  d="build/$name"; rm -rf "$d"; mkdir -p "$d"; cp revoke.pml "$d/"
  (cd "$d" && spin -a "$@" revoke.pml > spin.out 2>&1 &&
   gcc -O2 -DSAFETY -o pan pan.c > gcc.out 2>&1 && ./pan > pan.out 2>&1)
  printf '%-24s %-44s errors=%s\n' "$name" "revoke.pml $*" \
    "$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$d/pan.out" | head -1)"
}
fail() { CCFLAGS=-DBFS ./run.sh "$@"; }
{
# biased handles: the revocation, and each of its three parts dropped
revoke R1_design            -DK=3
revoke R2_nowait            -DNOWAIT=1
revoke R3_nocheck           -DNOCHECK=1
revoke R4_nobarrier         -DNOBARRIER=1
# the match path as built: one writer, no seqlock re-read, holds on holds
pass W1_cfg1                -DCFG=1 $FIX $OW
pass W2_cfg1_ownerdeath     -DCFG=1 $FIX $OW -DACRASH=1
pass W3_cfg1_wrap           -DCFG=1 $FIX $OW -DGMOD=2 -DACRASH=1
pass W4_cfg4                -DCFG=4 $FIX $OW -DACRASH=1
pass W5_cfg1_ns2            -DCFG=1 $FIX $OW -DNS=2 -DCYCLES=1
# threads that share a process's entries must not trust a count above 0
fail W6_cfg2_onewriter      -DCFG=2 $FIX $OW -DMAXCRASH=0
pass W7_cfg2_shared         -DCFG=2 $FIX -DNOSEQ=1 -DHOLD2=1 -DMAXCRASH=0
# without the seqlock re-read the pin's generation check proves the hit,
# and with generation wrap the key re-read (FIX D), as before
pass W8_cfg1_noseq_nokeyck  -DCFG=1 -DFASTGEN=1 -DREGLOCK=1 -DEVFIX=1 -DNOSEQ=1 -DACRASH=1
fail W9_cfg1_noseq_wrap     -DCFG=1 -DFASTGEN=1 -DREGLOCK=1 -DEVFIX=1 -DNOSEQ=1 -DGMOD=2 -DMAXCRASH=0
# bit 63 and the inactive count: settle, take, evict, reap and recount
pass X1_inact               -DCFG=1 $FIX $OW -DLISTLOCK=1 -DINACT=1
pass X3_inact_ownerdeath    -DCFG=1 $FIX $OW -DLISTLOCK=1 -DINACT=1 -DACRASH=1
fail X2_inact_nowin         -DCFG=1 $FIX $OW -DLISTLOCK=1 -DINACT=1 -DNOWIN=1
} 2>&1 | tee build/results.txt
