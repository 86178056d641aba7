#!/bin/bash
# The guest kernel's module and paradice-guestd in one driver VM: the daemon serves the VM's own backend
# (tcp://127.0.0.1:7000) as nodes under /dev/pdk/, and real clients on those nodes must print what they
# print on the real ones (the forwarded node's path put back). Exits nonzero on any mismatch.
#
#   testbed/guestd-smoke.sh [--keep]     (--keep: leave the VM running and print its dir)
#
# Environment: GUESTD (default .build/debug/paradice-guestd), MODULE (default Kernel/paradice/build.sh's output),
# DVM_BACKEND (the backend the VM runs; default: dvmctl's), PARADICE_CLI (a `paradice` built with
# --static-swift-stdlib: start through `paradice guest` instead of insmod and the daemon by hand).
# The pieces are functions another script can source (GUESTD_SMOKE_LIB=1): guestd_boot, guestd_start,
# guestd_compare, guestd_stop.
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DVM="python3 $REPO/testbed/drivervm/dvmctl.py"
GUESTD=${GUESTD:-$REPO/.build/debug/paradice-guestd}
MODULE=${MODULE:-$REPO/.build/kernel/$(cat "$REPO/.cache/drivervm/kv" 2>/dev/null || echo 6.1.0-57-amd64)/paradice.ko}
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
  vm --init --timeout 30 '[ -e /dev/paradice ] || insmod /share/paradice.ko' || { log "insmod failed"; return 1; }
  local args="" m
  for m in "$@"; do args="$args --map $m"; done
  vm --timeout 30 "setsid /share/paradice-guestd --backend ${GUESTD_BACKEND:-tcp://127.0.0.1:7000} --plain-tcp $args > /share/guestd.log 2>&1 < /dev/null &" || return 1
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

# The same through `paradice guest` (a build with --static-swift-stdlib: the VM has no Swift runtime), which
# loads the module beside it with finit_module and detaches the daemon once its nodes are there.
guestd_start_cli() {
  cp "$MODULE" "$VMDIR/share/paradice.ko" && cp "$GUESTD" "$VMDIR/share/paradice-guestd" && cp "$PARADICE_CLI" "$VMDIR/share/paradice" || return 1
  local args="" m
  for m in "$@"; do args="$args --map $m"; done
  vm --timeout 200 "/share/paradice guest --backend tcp://127.0.0.1:7000 --plain-tcp $args" >&2 || { log "paradice guest failed"; return 1; }
  vm --timeout 30 '/share/paradice guest status' >&2 || return 1
  vm --timeout 10 'cp /run/paradice/guestd-*.log /share/guestd.log' || true
}

# guestd_compare NAME FORWARDED NATIVE 'COMMAND with @DEV@' [FILTER]: the command's output and status on
# the forwarded node (its path then written as the native one) must equal those on the native node.
guestd_compare() {
  local name=$1 forwarded=$2 native=$3 command=$4 filter=${5:-cat}
  local a b ra rb
  a=$(mktemp) b=$(mktemp)
  vm --timeout 120 "${command//@DEV@/$forwarded} 2>&1" > "$a"; ra=$?
  vm --timeout 120 "${command//@DEV@/$native} 2>&1" > "$b"; rb=$?
  sed -i "s#$forwarded#$native#g" "$a"
  if diff <(eval "$filter" < "$a") <(eval "$filter" < "$b") > "$a.diff" && [ "$ra" == "$rb" ]; then
    log "ok   $name (status $ra, $(wc -l < "$b") lines)"
  else
    log "FAIL $name: status $ra forwarded, $rb native; diff (forwarded < > native):"
    head -40 "$a.diff" >&2
    failures=$((failures + 1))
  fi
  rm -f "$a" "$b" "$a.diff"
}

# guestd_expect NAME 'COMMAND' : a command in the VM that must succeed.
guestd_expect() {
  if out=$(vm --timeout 60 "$2" 2>&1); then log "ok   $1"; else log "FAIL $1: $out"; failures=$((failures + 1)); fi
}

guestd_stop() {
  [ -n "$VMDIR" ] || return 0
  [ -f "$VMDIR/share/guestd.log" ] && { log "daemon log:"; tail -40 "$VMDIR/share/guestd.log" >&2; }
  $DVM --dir "$VMDIR" stop >/dev/null 2>&1
}

# A backend on the same machine over a unix socket with --share-mappings: an mmap of a forwarded node maps
# the device itself into the caller (PDK_MMAP_DEVICE: no area, no mirror), and the clients see what they
# see natively. (The VM's own backend listens on TCP only.) Needs V, the forwarded capture node.
guestd_shared_mappings() {
SHARE_SOCK=/run/pd-share.sock
vm --timeout 30 "set -f; rm -f $SHARE_SOCK; setsid /share/bin/paradice-backend --listen unix:$SHARE_SOCK --share-mappings \
  --specs /share/Specs --device /dev/video0 --device '/dev/media*' --device '/dev/dri/*' --plugins v4l2,drm --tree /sys \
  > /share/backend-share.log 2>&1 < /dev/null & for i in \$(seq 1 100); do [ -S $SHARE_SOCK ] && break; sleep 0.2; done; [ -S $SHARE_SOCK ]" ||
  { log "FAIL the sharing backend did not start:"; cat "$VMDIR/share/backend-share.log" >&2; failures=$((failures + 1)); }
VKMS=$(vm --timeout 10 'for c in /sys/class/drm/card[0-9]; do case $(readlink -f $c/device) in */vkms) echo /dev/dri/${c##*/};; esac; done | head -1')
cc -O -o "$VMDIR/share/drmscanout" "$REPO/Tests/ParadiceEngineTests/Programs/drmscanout.c" -I/usr/include/libdrm -ldrm ||
  failures=$((failures + 1))
if GUESTD_BACKEND=unix:$SHARE_SOCK guestd_start $V=/dev/video0 /dev/pdk/dri/vkms=$VKMS; then
  guestd_compare "v4l2-ctl --stream-mmap, the device mapped itself" $V /dev/video0 \
    'v4l2-ctl -d @DEV@ --stream-mmap --stream-count=3 --stream-to=/tmp/frames && md5sum < /tmp/frames && wc -c < /tmp/frames' \
    "tr -d '<'"
  guestd_compare "drmscanout on vkms, dumb buffers mapped from the device" /dev/pdk/dri/vkms $VKMS '/share/drmscanout @DEV@'
  # a streaming caller's buffers are mappings of the device file itself (its path in /proc/PID/maps), and
  # the daemon holds no area (mirror) for them
  local what="the caller's mappings are the device's own, the daemon has no mirror" out
  if out=$(vm --timeout 60 'v4l2-ctl -d /dev/video9 --stream-mmap --stream-count=100000 > /dev/null 2>&1 < /dev/null & p=$!; sleep 4
     m=$(grep -c " /dev/video0\$" /proc/$p/maps); f=$(grep -c /dev/video9 /proc/$p/maps); st=$(cat /run/paradice/guest-*.status)
     kill $p; echo "device mappings $m, node mappings $f"; echo "$st" | grep "^mappings\|^shared"
     [ "$m" -ge 1 ] && [ "$f" = 0 ] && echo "$st" | grep -qx "mappings 0" && ! echo "$st" | grep -qx "shared 0"' 2>&1)
  then log "ok   $what: $(echo $out)"; else log "FAIL $what: $out"; failures=$((failures + 1)); fi
  vm --timeout 20 'p=$(sed -n "s/^pid //p" /run/paradice/guest-*.status); kill -TERM $p; for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /dev/video9 ] || break; sleep 1; done' || true
else
  failures=$((failures + 1))
fi
}

[ "${GUESTD_SMOKE_LIB:-0}" = 1 ] && return 0

keep=0
[ "${1:-}" = --keep ] && keep=1
[ -x "$GUESTD" ] || { log "no daemon at $GUESTD (swift build --product paradice-guestd)"; exit 2; }
[ -f "$MODULE" ] || { log "no module at $MODULE (Kernel/paradice/build.sh)"; exit 2; }
[ $keep = 1 ] || trap guestd_stop EXIT
guestd_boot || exit 1
# v4l-utils classifies a node by its uevent's DEVNAME ("video" and a digit), so the forwarded capture node
# gets a free /dev/videoN; the others go under /dev/pdk/.
V=/dev/video9
MAPS="$V=/dev/video0 /dev/media9=/dev/media0 /dev/pdk/input/event0=/dev/input/event0 /dev/pdk/dri/card0=/dev/dri/card0"
if [ -n "${PARADICE_CLI:-}" ]; then
  guestd_start_cli $MAPS || exit 1
else
  guestd_start $MAPS || exit 1
fi
vm --timeout 10 "ls -l $V /dev/pdk/*" >&2

# --all: the media controller is found through the node's parent device (PDK_SET_PARENT), so the media
# node is forwarded too; but its topology names the interfaces by the backend's numbers, which the
# forwarded nodes cannot have here (the driver VM holds them): the interface and entity part, found by
# number, is left out. Volatile controls change between two reads.
guestd_compare "v4l2-ctl --all" $V /dev/video0 'v4l2-ctl -d @DEV@ --all' \
  "grep -v '^FAIL: could not find device .* in topology' | awk '/^(Interface|Entity) Info:/ { skip = 1; next } skip && /^[^\t]/ { skip = 0 } !skip' | sed '/volatile/s/value=[-0-9]*//'"
# Frames through mmap'ed buffers (select() for each: PDK_OP_WATCH), the vivid pattern without its
# on-screen text (time stamps), byte for byte.
vm --timeout 30 'v4l2-ctl -d /dev/video0 -c osd_text_mode=2' || failures=$((failures + 1))
guestd_compare "v4l2-ctl --stream-mmap" $V /dev/video0 \
  'v4l2-ctl -d @DEV@ --stream-mmap --stream-count=3 --stream-to=/tmp/frames && md5sum < /tmp/frames && wc -c < /tmp/frames' \
  "tr -d '<'"
guestd_compare "v4l2-ctl --stream-mmap --stream-poll" $V /dev/video0 \
  'v4l2-ctl -d @DEV@ --stream-mmap --stream-poll --stream-count=3 --stream-to=/tmp/frames && md5sum < /tmp/frames' \
  "tr -d '<'"
guestd_compare "v4l2-ctl read()" $V /dev/video0 \
  'v4l2-ctl -d @DEV@ --stream-count=2 --stream-to=/tmp/frames && md5sum < /tmp/frames' "tr -d '<'"
guestd_compare "evtest (description)" /dev/pdk/input/event0 /dev/input/event0 'timeout 3 evtest @DEV@' "grep -v '^Testing'"
guestd_compare "evtest --query" /dev/pdk/input/event0 /dev/input/event0 'evtest --query @DEV@ EV_KEY KEY_A; echo $?'
guestd_compare "modetest -c" /dev/pdk/dri/card0 /dev/dri/card0 'modetest -D @DEV@ -c'
guestd_compare "modetest -e -p" /dev/pdk/dri/card0 /dev/dri/card0 'modetest -D @DEV@ -e -p'

# A caller's argument address is the caller's, even when it equals an address of the daemon's own view of
# a module area (where it keeps a mirror): EFAULT, as natively (a streaming v4l2-ctl holds the mappings).
vm --timeout 10 'setsid v4l2-ctl -d /dev/video9 --stream-mmap --stream-count=100000 > /dev/null 2>&1 < /dev/null & echo $! > /tmp/holder.pid'
sleep 4
cp "$REPO/testbed/guestd-view-address.py" "$VMDIR/share/"
guestd_compare "an argument at a daemon view's address" $V /dev/video0 'python3 /share/guestd-view-address.py @DEV@'
vm --timeout 10 'kill $(cat /tmp/holder.pid); sleep 2'

# A signal with a handler ends a blocked read as it ends a local driver's wait (EINTR to the handler's
# program): the daemon interrupts the backend's call (PD_INTERRUPT), when the backend can.
INTERRUPTED='python3 -c "
import os, signal
def alarm(*_): raise InterruptedError
signal.signal(signal.SIGALRM, alarm)
fd = os.open(\"@DEV@\", os.O_RDONLY)
signal.alarm(2)
try: os.read(fd, 24); print(\"read\")
except InterruptedError: print(\"EINTR\")
"'
if grep -q "cannot end a call early" "$VMDIR/share/guestd.log"; then
  log "skip a signal ends a blocked read: the backend has no PD_INTERRUPT (DVM_BACKEND of this branch)"
else
  guestd_compare "a signal ends a blocked read" /dev/pdk/input/event0 /dev/input/event0 "timeout 20 $INTERRUPTED"
fi

# Calls that block hold their threads: with more blocked readers than the pool's first threads, the pool
# grows and other calls are still served.
vm --timeout 10 'for i in 1 2 3 4 5 6 7 8; do setsid timeout 15 cat /dev/pdk/input/event0 > /dev/null 2>&1 < /dev/null & done'
sleep 3
guestd_compare "evtest --query beside 8 blocked readers" /dev/pdk/input/event0 /dev/input/event0 'evtest --query @DEV@ EV_KEY KEY_A; echo $?'
guestd_expect "the pool grew past 8 busy threads" \
  'grep "^threads" /run/paradice/guest-*.status; set -- $(sed -n "s/^threads //p" /run/paradice/guest-*.status); [ "$1" -gt 8 ] && [ "$2" -ge 8 ]'
vm --timeout 30 'sleep 14'

# Every file the clients opened was released (RELEASE closed the backend's file). (No awk in the VM's
# chroot: /etc/alternatives is the host's.)
guestd_expect "every node has no open file left" \
  'st=$(cat /run/paradice/guest-*.status); ! echo "$st" | grep "^node" | grep -qv " 0\$" || { echo "$st"; exit 1; }'
# SIGTERM: the nodes go, the daemon says so and exits 0.
guestd_expect "SIGTERM removes the nodes" \
  'p=$(sed -n "s/^pid //p" /run/paradice/guest-*.status); kill -TERM $p; for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /dev/video9 ] || break; sleep 1; done; ! [ -e /dev/video9 ] && ! [ -e /dev/pdk/dri/card0 ] && cat /share/guestd.log /run/paradice/guestd-*.log 2>/dev/null | grep -q "signal 15: leaving"'
# The backend's end: a call in flight and new calls fail with EIO, the daemon exits 1 and the nodes go. The
# call surely in flight is a read of an input node that has no events; a streaming v4l2-ctl must end too (its
# DQBUF or, if the backend went between two frames, its QBUF fails: v4l2-ctl names errno only for the first).
guestd_start $V=/dev/video0 /dev/pdk/input/event0=/dev/input/event0 || exit 1
vm --timeout 10 'setsid v4l2-ctl -d /dev/video9 --stream-mmap --stream-count=100000 > /tmp/stream.out 2>&1 < /dev/null & echo $! > /tmp/stream.pid'
vm --timeout 10 "setsid python3 -c '
import errno, os, sys
fd = os.open(\"/dev/pdk/input/event0\", os.O_RDONLY)
print(\"reading\", flush=True)
try: os.read(fd, 24); print(\"read\")
except OSError as e: print(errno.errorcode[e.errno])
' > /tmp/blocked.out 2>&1 < /dev/null &"
vm --timeout 30 'for i in $(seq 1 100); do grep -q reading /tmp/blocked.out && break; sleep 0.2; done; grep -q reading /tmp/blocked.out' ||
  { log "FAIL the blocked reader did not start"; failures=$((failures + 1)); }
sleep 3
vm --init --timeout 10 'kill $(pidof paradice-backend)'
guestd_expect "a lost backend: the call in flight fails with EIO, the clients end, the daemon exits, the nodes go" \
  'for i in $(seq 1 30); do [ -e /dev/video9 ] || ! kill -0 $(cat /tmp/stream.pid) 2>/dev/null || { sleep 1; continue; }; break; done
   for i in $(seq 1 30); do [ -e /dev/video9 ] || break; sleep 1; done
   for i in $(seq 1 30); do [ $(wc -l < /tmp/blocked.out) -ge 2 ] && break; sleep 1; done
   ! kill -0 $(cat /tmp/stream.pid) 2>/dev/null && ! [ -e /dev/video9 ] && ! [ -e /dev/pdk/input/event0 ] &&
     grep -q "is gone" /share/guestd.log && [ "$(tail -1 /tmp/blocked.out)" = EIO ] &&
     grep -q "Input/output error\|qbuf error" /tmp/stream.out || { tail -3 /tmp/stream.out; cat /tmp/blocked.out; exit 1; }'

guestd_shared_mappings

[ $keep = 1 ] && log "VM left running: $VMDIR"
if [ $failures = 0 ]; then log "all comparisons match"; else log "$failures comparison(s) differ"; fi
exit $((failures > 0))
