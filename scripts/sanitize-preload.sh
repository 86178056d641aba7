#!/usr/bin/env bash
# The preload frontend's tests (real programs under `paradice run`) with the frontend built by clang under
# AddressSanitizer and UndefinedBehaviorSanitizer. Any sanitizer report fails the run, whether or not the
# program's exit status shows it: reports go to files, which must stay empty.
#   scripts/sanitize-preload.sh [test filter]     (default: the preload, round-trip, conformance, remote-memory and interrupt suites)
set -euo pipefail
cd "$(dirname "$0")/.."
filter="${1:-PreloadTests|PreloadRoundTripTests|ConformanceTests|RemoteMemoryTests|InterruptTests}"
out=.build/sanitize
reports="$out/reports"
rm -rf "$reports"
mkdir -p "$out" "$reports"

clang -shared -fPIC -g -O1 -fno-omit-frame-pointer -shared-libsan \
    -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -I Sources/CParadice/include -I Sources/ParadiceFrontendCore/include -I Sources/ParadiceTLS/include -I Sources/ParadicePreload \
    -o "$out/libParadicePreload.so" Sources/ParadicePreload/*.c Sources/ParadiceFrontendCore/*.c Sources/ParadiceTLS/tls.c \
    Sources/CParadice/*.c -ldl -lpthread -lssl -lcrypto
# The runtime the library was linked against: it must come first in LD_PRELOAD.
runtime=$(clang -print-file-name="$(readelf -d "$out/libParadicePreload.so" | sed -n 's/.*Shared library: \[\(libclang_rt.asan[^]]*\)\].*/\1/p')")
[ -f "$runtime" ] || { echo "sanitize-preload: no ASan runtime found for $out/libParadicePreload.so" >&2; exit 1; }

# ASan refuses C11's aligned_alloc of a size that is not a multiple of the alignment, which glibc (C17)
# allows and coreutils' dd does: ahead of the runtime, such calls go to memalign, which ASan serves.
printf '%s\n' '#include <malloc.h>' \
    'void *aligned_alloc(size_t alignment, size_t size) { return memalign(alignment, size); }' > "$out/aligned_alloc.c"
clang -shared -fPIC -O1 -o "$out/libaligned_alloc.so" "$out/aligned_alloc.c"

swift build --build-tests 2>&1 | tail -1
export PARADICE_PRELOAD_LIBRARY="$PWD/$out/libaligned_alloc.so:$runtime:$PWD/$out/libParadicePreload.so"
# Programs built on the frontend core itself (RemoteMemoryTests, InterruptTests) are compiled with the same sanitizers.
export PARADICE_SANITIZE_CORE=1
# Leaks are not checked: the programs run (python, ip, stty) are not ours, nor their exits.
export ASAN_OPTIONS="detect_leaks=0:verify_asan_link_order=0:log_path=$PWD/$reports/asan:abort_on_error=0:exitcode=86"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$PWD/$reports/ubsan"
status=0
swift test --skip-build --filter "$filter" || status=$?
if compgen -G "$reports/*" > /dev/null; then
    echo "== sanitizer reports" >&2
    cat "$reports"/* >&2
    exit 1
fi
exit $status
