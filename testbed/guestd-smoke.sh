#!/bin/bash
# The guest kernel's module and paradice-guestd in one driver VM: the daemon serves the VM's own backend
# (tcp://127.0.0.1:7000) as nodes under /dev/pdk/, and real clients on those nodes must print what they
# print on the real ones (the forwarded node's path put back). Exits nonzero on any mismatch.
#
#   testbed/guestd-smoke.sh [--keep]     (--keep: leave the VM running and print its dir)
#
# Environment: GUESTD (default .build/debug/paradice-guestd), MODULE (default Kernel/paradice/build.sh's output),
# DVM_BACKEND (the backend the VM runs; default: dvmctl's), DVM_DIR / --port auto as dvmctl.py takes them.
# The pieces are functions another script can source (GUESTD_SMOKE_LIB=1): guestd_boot, guestd_start,
# guestd_compare, guestd_stop.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
DVM="python3 $REPO/testbed/drivervm/dvmctl.py"
GUESTD=${GUESTD:-$REPO/.build/debug/paradice-guestd}
MODULE=${MODULE:-$REPO/.build/kernel/6.1.0-57-amd64/paradice.ko}
VMDIR=""
failures=0

log() { echo "guestd-smoke: $*" >&2; }

vm() { $DVM --dir "$VMDIR" exec "$@"; }

guestd_boot() {
  [ -d "$REPO/.cache/drivervm" ] || { log "no driver VM cache (testbed/drivervm/setup.sh)"; return 1; }
  local out
  out=$($DVM --port auto boot) || { log "boot failed"; return 1; }
  VMDIR=$(printf '%s\n' "$out" | sed -n 's/^dir=//p')
  log "VM up: $(printf '%s' "$out" | tr '\n' ' ')"
}

# Loads the module and starts the daemon with the given --map arguments; waits for its status to be ready.
guestd_start() {
  cp "$MODULE" "$VMDIR/share/paradice.ko" && cp "$GUESTD" "$VMDIR/share/paradice-guestd" || return 1
  vm --init --timeout 30 'insmod /share/paradice.ko && ls -l /dev/paradice' || { log "insmod failed"; return 1; }
  local args="" m
  for m in "$@"; do args="$args --map $m"; done
  vm --timeout 30 "setsid /share/paradice-guestd --backend tcp://127.0.0.1:7000 $args > /share/guestd.log 2>&1 < /dev/null &" || return 1
  local i
  for i in $(seq 1 120); do
    if vm --timeout 10 'grep -qx "state ready" /run/paradice/guest-*.status' 2>/dev/null; then
      vm --timeout 10 'cat /run/paradice/guest-*.status' >&2
      return 0
    fi
    sleep 1
  done
  log "the daemon is not ready; its log:"; cat "$VMDIR/share/guestd.log" >&2
  return 1
}

# guestd_compare NAME FORWARDED NATIVE 'COMMAND with @DEV@' [FILTER]: the command's output and status on
# the forwarded node (its path then written as the native one) must equal those on the native node.
guestd_compare() {
  local name=$1 forwarded=$2 native=$3 command=$4 filter=${5:-cat}
  local a b ra rb
  a=$(vm --timeout 120 "${command//@DEV@/$forwarded} 2>&1" | sed "s#$forwarded#$native#g" | eval "$filter"); ra=${PIPESTATUS[0]}
  b=$(vm --timeout 120 "${command//@DEV@/$native} 2>&1" | eval "$filter"); rb=${PIPESTATUS[0]}
  if [ "$a" == "$b" ] && [ "$ra" == "$rb" ]; then
    log "ok   $name (status $ra, $(printf '%s' "$b" | wc -l) lines)"
  else
    log "FAIL $name: status $ra forwarded, $rb native; diff (forwarded < > native):"
    diff <(printf '%s\n' "$a") <(printf '%s\n' "$b") | head -40 >&2
    failures=$((failures + 1))
  fi
}

guestd_stop() {
  [ -n "$VMDIR" ] || return 0
  [ -f "$VMDIR/share/guestd.log" ] && { log "daemon log:"; tail -40 "$VMDIR/share/guestd.log" >&2; }
  $DVM --dir "$VMDIR" stop >/dev/null 2>&1
}

[ "${GUESTD_SMOKE_LIB:-0}" = 1 ] && return 0

keep=0
[ "${1:-}" = --keep ] && keep=1
[ -x "$GUESTD" ] || { log "no daemon at $GUESTD (swift build --product paradice-guestd)"; exit 2; }
[ -f "$MODULE" ] || { log "no module at $MODULE (Kernel/paradice/build.sh)"; exit 2; }
[ $keep = 1 ] || trap guestd_stop EXIT
guestd_boot || exit 1
guestd_start /dev/pdk/video0=/dev/video0 /dev/pdk/input/event0=/dev/input/event0 /dev/pdk/dri/card0=/dev/dri/card0 || exit 1
vm --timeout 10 'ls -l /dev/pdk /dev/pdk/*' >&2

guestd_compare "v4l2-ctl --all" /dev/pdk/video0 /dev/video0 'v4l2-ctl -d @DEV@ --all'
# Frames: three through mmap'ed buffers, each the size of the native one's.
guestd_compare "v4l2-ctl --stream-mmap" /dev/pdk/video0 /dev/video0 \
  'v4l2-ctl -d @DEV@ --stream-mmap --stream-count=3 --stream-to=/tmp/frames && wc -c < /tmp/frames' \
  "grep -v '^<*$' | tr -d '<'"
guestd_compare "evtest (description)" /dev/pdk/input/event0 /dev/input/event0 'timeout 3 evtest @DEV@' "grep -v '^Testing'"
guestd_compare "modetest -c" /dev/pdk/dri/card0 /dev/dri/card0 'modetest -D @DEV@ -c'
[ $keep = 1 ] && log "VM left running: $VMDIR"
[ $failures = 0 ] && log "all comparisons match" || log "$failures comparison(s) differ"
exit $((failures > 0))
