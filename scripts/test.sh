#!/usr/bin/env bash
# The test suite: unit, device, hostile-guest, driver-VM and guest-VM tests (swift test), the guest kernel
# module's interface test and the daemon's smoke test (each in a driver VM), the header verification
# of every spec, then the fuzz regression (committed findings replayed, each harness fuzzed briefly), the
# preload frontend under ASan/UBSan, and the suites that need no driver VM under ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The driver VM (V4L2, DRM, ALSA, evdev drivers under QEMU) and the backend that runs inside it: a
# release build with the Swift runtime linked in, since the VM has only the host's /usr. setup.sh also
# builds the Paradice kernel module for the guest VM.
bash testbed/drivervm/setup.sh
swift build -c release --static-swift-stdlib --product paradice-backend 2>&1 | tail -1
# The guest VM (the same kernel with the Paradice module, setup.sh builds it) runs the CLI and its daemon from
# its share: release builds that need nothing of the host beyond /usr.
swift build -c release --static-swift-stdlib --product paradice 2>&1 | tail -1
swift build -c release --product paradice-guestd 2>&1 | tail -1
# The preload for programs that the VMs run through `paradice run` from their share (C: libc alone).
swift build -c release --product ParadicePreload 2>&1 | tail -1
swift build --build-tests 2>&1 | tail -3
swift test --skip-build 2>&1
echo "== the Paradice module's interface (abi-test in a driver VM)"
bash Kernel/paradice/tests/run-in-vm.sh
echo "== paradice-guestd and the module against the driver VM's own backend"
DVM_BACKEND=$PWD/.build/release/paradice-backend bash testbed/guestd-smoke.sh
echo "== paradice spec verify"
.build/debug/paradice spec verify
echo "== fuzz regression"
bash scripts/fuzz.sh --seconds 30
echo "== preload frontend under ASan and UBSan"
bash scripts/sanitize-preload.sh
echo "== ThreadSanitizer"
bash scripts/tsan.sh
