#!/usr/bin/env bash
# The test suite: unit and device tests (swift test), then the header verification of every spec.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The driver VM (V4L2, DRM, ALSA, evdev drivers under QEMU) and the backend that runs inside it: a
# release build with the Swift runtime linked in, since the VM has only the host's /usr.
bash testbed/drivervm/setup.sh
swift build -c release --static-swift-stdlib --product paradice-backend 2>&1 | tail -1
swift build --build-tests 2>&1 | tail -3
swift test --skip-build 2>&1
echo "== paradice spec verify"
.build/debug/paradice spec verify
