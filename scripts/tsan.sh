#!/usr/bin/env bash
# The suites that need no driver VM, under ThreadSanitizer: the test process and every backend it
# starts are instrumented, and a report from any of them fails the run. Run after the ordinary debug
# build (scripts/test.sh makes it): the preload library is taken from there, since an instrumented one
# cannot load into the uninstrumented programs the preload tests run (stty, dd, python3: it needs
# __tsan_init). The C frontend is checked under ASan/UBSan instead. The hostile-guest suite is left out:
# in two of five CI runs the TSan runtime itself died in the test process (SEGV at 0x1048, "nested bug
# in the same thread") right after its controlling-terminal test; the ordinary run covers that suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=.build-tsan
swift build --build-tests --sanitize=thread --scratch-path "$scratch" 2>&1 | tail -1
test -f .build/debug/libParadicePreload.so || swift build --product ParadicePreload 2>&1 | tail -1
cp .build/debug/libParadicePreload.so "$scratch/debug/libParadicePreload.so"
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
status=0
PARADICE_TEST_SANITIZED=thread TSAN_OPTIONS="log_path=$reports/report ${TSAN_OPTIONS:-}" \
    swift test --skip-build --sanitize=thread --scratch-path "$scratch" --skip DriverVMSuites --skip HostileGuest 2>&1 || status=$?
if compgen -G "$reports/report.*" > /dev/null; then
    echo "== ThreadSanitizer reports"
    cat "$reports"/report.*
    exit 1
fi
exit "$status"
