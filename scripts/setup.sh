#!/usr/bin/env bash
# Installs Paradice and runs its main job: prove every spec against the installed headers, then serve
# this machine's device files to a guest and show one forwarded call.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
echo "building paradice (release, Swift runtime linked in: half the start-up time, runs without a toolchain)…"
swift build -c release --static-swift-stdlib --product paradice 2>&1 | tail -1
swift build -c release --static-swift-stdlib --product paradice-backend 2>&1 | tail -1
swift build -c release --static-swift-stdlib --product paradice-bench 2>&1 | tail -1
swift build -c release --product ParadicePreload 2>&1 | tail -1
install -D -m 0755 .build/release/paradice /usr/local/bin/paradice
install -D -m 0755 .build/release/paradice-backend /usr/local/bin/paradice-backend
install -D -m 0755 .build/release/paradice-bench /usr/local/bin/paradice-bench
install -D -m 0755 .build/release/libParadicePreload.so /usr/local/lib/paradice/libParadicePreload.so
mkdir -p /usr/local/share/paradice
rm -rf /usr/local/share/paradice/Specs && cp -r Specs /usr/local/share/paradice/Specs
echo "installed /usr/local/bin/paradice, paradice-backend and paradice-bench, specs in /usr/local/share/paradice/Specs"
export PARADICE_SPECS=/usr/local/share/paradice/Specs
paradice spec list
paradice spec verify

echo
echo "== a backend serving this machine's ptys, kvm and loop devices on unix:/run/paradice.sock"
rm -f /run/paradice.sock
paradice-backend --listen unix:/run/paradice.sock --device /dev/ptmx --device '/dev/pts/*' \
  --device /dev/kvm --device /dev/loop-control --log-level warning &
backend=$!
trap 'kill $backend 2>/dev/null' EXIT
for _ in $(seq 50); do paradice devices --backend unix:/run/paradice.sock >/dev/null 2>&1 && break; sleep 0.1; done
paradice devices --backend unix:/run/paradice.sock
echo "== an unmodified program on a forwarded pty: stty sets 100x40 through Paradice"
# A pty held open for the demo by a small local process; stty reaches it through the backend.
ptyname=$(mktemp)
python3 -c 'import os, pty, sys, time
m, s = pty.openpty()
open(sys.argv[1], "w").write(os.ttyname(s))
time.sleep(30)' "$ptyname" &
holder=$!
trap 'kill $backend $holder 2>/dev/null; rm -f "$ptyname"' EXIT
for _ in $(seq 50); do [ -s "$ptyname" ] && break; sleep 0.1; done
pty=$(cat "$ptyname")
paradice run --backend unix:/run/paradice.sock -- stty -F "$pty" cols 100 rows 40
echo "stty size of $pty, asked through Paradice: $(paradice run --backend unix:/run/paradice.sock -- stty -F "$pty" size)"
echo "== forwarded vs native, measured now:"
paradice-bench --iterations 5000 --bulk-bytes 8388608

echo
echo "== a camera in the driver VM (vivid), captured here through Paradice by an unmodified v4l2-ctl"
bash testbed/drivervm/setup.sh
python3 testbed/drivervm/dvmctl.py --dir "$PWD/.cache/drivervm/demo" stop >/dev/null 2>&1 || true
vm=$(DVM_BACKEND_ARGS="--plugins v4l2 --tree /sys" \
     python3 testbed/drivervm/dvmctl.py --port auto --dir "$PWD/.cache/drivervm/demo" boot)
endpoint=$(echo "$vm" | grep '^tcp://')
trap 'kill $backend $holder 2>/dev/null; rm -f "$ptyname"; python3 testbed/drivervm/dvmctl.py --dir "$PWD/.cache/drivervm/demo" stop >/dev/null 2>&1' EXIT
echo "driver VM up ($(echo "$vm" | grep boot_s)), backend at $endpoint"
paradice run --backend "$endpoint" --plain-tcp -- v4l2-ctl -d /dev/video0 --set-fmt-video=width=640,height=360,pixelformat=YUYV
paradice run --backend "$endpoint" --plain-tcp -- v4l2-ctl -d /dev/video0 --stream-mmap --stream-count=5 --stream-to=/tmp/paradice-frames.raw
python3 scripts/frame2png.py /tmp/paradice-frames.raw 640 360 "$PWD/paradice-frame.png" 4
rm -f /tmp/paradice-frames.raw
echo "saved frame 5 of the VM's camera as $PWD/paradice-frame.png"
