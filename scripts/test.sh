#!/usr/bin/env bash
# The test suite: unit and device tests (swift test), then the header verification of every spec.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build --build-tests 2>&1 | tail -3
swift test --skip-build 2>&1
echo "== paradice spec verify"
.build/debug/paradice spec verify
