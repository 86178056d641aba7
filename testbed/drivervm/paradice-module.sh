#!/usr/bin/env bash
# The Paradice kernel module (Kernel/paradice) built for the VM kernel, once per state of its sources:
# prints the path of the cached paradice.ko, building it first (Kernel/paradice/build.sh KV OUTDIR) when
# no module of these sources is cached. Exit status 3 when the repository has no module sources.
#
#   testbed/drivervm/paradice-module.sh [KV]      (KV: default the kernel setup.sh chose, $DVM_CACHE/kv)
#
# The cache key hashes every source file of Kernel/paradice and the header it shares with the daemon, so an
# edit there gives a fresh build (the module of the previous sources is deleted then).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${DVM_CACHE:-$REPO/.cache/drivervm}
SRC=$REPO/Kernel/paradice
die() { echo "paradice-module: error: $*" >&2; exit 1; }

KV=${1:-$(cat "$CACHE/kv" 2>/dev/null || true)}
[ -n "$KV" ] || die "no kernel chosen yet: run testbed/drivervm/setup.sh"
[ -x "$SRC/build.sh" ] || { echo "paradice-module: no module sources in $SRC" >&2; exit 3; }

# Sources only: what a build leaves behind in the tree does not change the key.
hash=$( cd "$REPO" && { find Kernel/paradice -type f ! -name '*.o' ! -name '*.ko' ! -name '*.mod' ! -name '*.mod.c' \
          ! -name '.*.cmd' ! -name 'Module.symvers' ! -name 'modules.order' -print0 | sort -z | xargs -0 sha256sum
        sha256sum Sources/CParadice/include/paradice_kernel.h; } | sha256sum | cut -c1-16 )
KO=$CACHE/paradice-$KV-$hash.ko
if [ ! -f "$KO" ]; then
  OUT=$CACHE/paradice-build
  rm -rf "$OUT"; mkdir -p "$OUT"
  echo "paradice-module: building Kernel/paradice for $KV" >&2
  "$SRC/build.sh" "$KV" "$OUT" > "$OUT/build.log" 2>&1 || { tail -n 30 "$OUT/build.log" >&2; die "module build failed (log: $OUT/build.log)"; }
  built=$(find "$OUT" -name paradice.ko | head -n 1)
  [ -n "$built" ] || die "Kernel/paradice/build.sh left no paradice.ko in $OUT"
  magic=$(modinfo -F vermagic "$built")
  case "$magic" in "$KV "*) ;; *) die "paradice.ko has vermagic '$magic', not $KV" ;; esac
  rm -f "$CACHE"/paradice-"$KV"-*.ko                 # one module per kernel: the one of the current sources
  strip --strip-debug -o "$KO.tmp" "$built"
  mv "$KO.tmp" "$KO"
  rm -rf "$OUT"
fi
echo "$KO"
