#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Kernel/paradice/build.sh [KV] [OUTDIR] — builds paradice.ko out of tree and prints its path (last line).
#
#   KV      kernel release to build for (default: the driver VM's, .cache/drivervm/kv, else 6.1.0-57-amd64)
#   OUTDIR  where paradice.ko goes (default: .build/kernel/KV in the repository)
#
# Builds against /lib/modules/KV/build; when it is missing, installs linux-headers-KV with apt-get (root),
# as testbed/drivervm/setup.sh does for vkms. The sources are copied into OUTDIR/src, so the tree stays
# clean. Fails on any compiler warning; checks the vermagic; strips debug info. About 30 s (10 s with headers
# installed). Exit status nonzero on failure.
# Environment: PDK_JOBS (make -j, default 2).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
die() { echo "paradice build: $*" >&2; exit 1; }

KV=${1:-}
if [ -z "$KV" ]; then
  KV=$(cat "$REPO/.cache/drivervm/kv" 2>/dev/null || true)
  [ -n "$KV" ] || KV=6.1.0-57-amd64
fi
OUT=${2:-$REPO/.build/kernel/$KV}
KDIR=/lib/modules/$KV/build

if [ ! -e "$KDIR/Makefile" ]; then
  [ "$(id -u)" = 0 ] || die "no $KDIR and not root: install linux-headers-$KV"
  command -v apt-get >/dev/null || die "no $KDIR and no apt-get"
  echo "paradice build: installing linux-headers-$KV" >&2
  apt-get install -y -qq --no-install-recommends "linux-headers-$KV" make >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "linux-headers-$KV" make >/dev/null; } ||
    die "apt-get install linux-headers-$KV failed"
  [ -e "$KDIR/Makefile" ] || die "linux-headers-$KV gave no $KDIR"
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SRC=$OUT/src
rm -rf "$SRC"
mkdir -p "$SRC"
cp "$HERE"/*.c "$HERE"/*.h "$HERE"/Kbuild "$SRC"/
LOG=$OUT/build.log
if ! make -C "$KDIR" M="$SRC" PDK_INCLUDE="$REPO/Sources/CParadice/include" -j"${PDK_JOBS:-2}" modules >"$LOG" 2>&1; then
  tail -n 30 "$LOG" >&2
  die "build failed (log: $LOG)"
fi
if grep -q 'warning:' "$LOG"; then
  grep -A3 'warning:' "$LOG" >&2
  die "build has warnings (log: $LOG)"
fi
magic=$(modinfo -F vermagic "$SRC/paradice.ko")
case "$magic" in "$KV "*) ;; *) die "paradice.ko has vermagic '$magic', not $KV" ;; esac
strip --strip-debug -o "$OUT/paradice.ko" "$SRC/paradice.ko"
echo "$OUT/paradice.ko"
