#!/usr/bin/env bash
# Installs Paradice and runs its main job: prove every spec against the installed headers, then serve
# this machine's device files to a guest and show one forwarded call.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
echo "building paradice (release, Swift runtime linked in: half the start-up time, runs without a toolchain)…"
swift build -c release --static-swift-stdlib --product paradice 2>&1 | tail -1
swift build -c release --static-swift-stdlib --product paradice-backend 2>&1 | tail -1
swift build -c release --product ParadicePreload 2>&1 | tail -1
install -D -m 0755 .build/release/paradice /usr/local/bin/paradice
install -D -m 0755 .build/release/paradice-backend /usr/local/bin/paradice-backend
install -D -m 0755 .build/release/libParadicePreload.so /usr/local/lib/paradice/libParadicePreload.so
mkdir -p /usr/local/share/paradice
rm -rf /usr/local/share/paradice/Specs && cp -r Specs /usr/local/share/paradice/Specs
echo "installed /usr/local/bin/paradice and paradice-backend, specs in /usr/local/share/paradice/Specs"
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
paradice bench --iterations 5000 --bulk-bytes 8388608
