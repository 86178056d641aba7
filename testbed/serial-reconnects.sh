#!/bin/bash
# Sessions handed over on the driver VM's virtio-serial port as fast as a client can make them: N times
# `paradice run --backend serial:DIR/serial.sock -- v4l2-ctl --all` (two sessions each: the launcher's, then
# the program's, which connects a moment after the launcher's connection closed). A run that does not end
# within 15 s lost a handshake for good; for it this prints the port's state in the VM (debugfs), the backend's
# threads, both ends of the client's chardev connection on this machine, and the backend's log since.
#
#   testbed/serial-reconnects.sh [N]     (default 100; prints "ok=K failed=F handshakes made again=A",
#                                         exits 1 if F > 0)
#
# A frontend says PD_HELLO again on a new connection when one got no answer for 2 s (PD_HELLO_SILENCE_MS):
# each such run is named with the frontend's line.
#
# Environment: PARADICE (default .build/release/paradice, built with --static-swift-stdlib beside its
# preload), DVM_BACKEND (the backend the VM runs), DVM_QEMU_EXTRA (e.g. QEMU -trace options).
# Not part of the test suite: it measures how often a handover loses a first frame (docs/transports.md,
# "Waiting for bytes").
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DVM="python3 $REPO/testbed/drivervm/dvmctl.py"
PARADICE=${PARADICE:-$REPO/.build/release/paradice}
runs=${1:-100}
[ -x "$PARADICE" ] || { echo "serial-reconnects: no $PARADICE (swift build -c release --static-swift-stdlib --product paradice)" >&2; exit 2; }
out=$($DVM --port auto boot) || { echo "serial-reconnects: boot failed" >&2; exit 1; }
dir=$(printf '%s\n' "$out" | sed -n 's/^dir=//p')
trap '$DVM --dir "$dir" stop > /dev/null 2>&1' EXIT
$DVM --dir "$dir" exec --init 'mount -t debugfs none /sys/kernel/debug 2> /dev/null; true'
ok=0 failed=0 again=0
for i in $(seq 1 "$runs"); do
  logged=$(wc -l < "$dir/share/backend.log")
  timeout 20 "$PARADICE" run --backend "serial:$dir/serial.sock" -- v4l2-ctl -d /dev/video0 --all > /dev/null 2> "$dir/client.err" &
  p=$!
  for t in $(seq 1 150); do kill -0 $p 2> /dev/null || break; sleep 0.1; done
  if kill -0 $p 2> /dev/null; then
    echo "run $i: no answer after 15 s"
    $DVM --dir "$dir" exec --init 'for f in /sys/kernel/debug/virtio-ports/*; do grep -q "name: paradice$" $f && cat $f; done
      b=$(pidof paradice-backend); for t in /proc/$b/task/*; do echo "thread $(cat $t/wchan): syscall $(cut -d" " -f1-4 $t/syscall)"; done'
    c=$(pgrep -P $p)
    [ -n "$c" ] && for t in /proc/$c/task/*; do echo "client $(cat /proc/$c/comm): $(cat $t/wchan), syscall $(cut -d' ' -f1 $t/syscall)"; done
    for inode in $(ls -l /proc/$c/fd 2> /dev/null | sed -n 's/.*socket:\[\([0-9]*\)\]/\1/p'); do ss -xp | grep -w "$inode"; done
    tail -n +$((logged + 1)) "$dir/share/backend.log" | sed 's/identity=.*session=/session=/' | cut -c1-200
  fi
  if wait $p; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
  grep -q "connecting again" "$dir/client.err" && { again=$((again + 1)); echo "run $i: $(grep "connecting again" "$dir/client.err" | head -1)"; }
done
echo "ok=$ok failed=$failed handshakes made again=$again"
[ "$failed" = 0 ]
