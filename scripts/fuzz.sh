#!/usr/bin/env bash
# libFuzzer harnesses: builds them (into .build-fuzz, never touching the normal build) and runs them.
#
#   scripts/fuzz.sh                     fuzz every harness for 10 minutes each, growing .build-fuzz/corpus
#   scripts/fuzz.sh --seconds 30        regression check (CI): replay the committed findings, then fuzz each
#                                       harness 30 s from its committed corpus; non-zero exit on any crash,
#                                       leak or timeout; prints the executions of each harness
#   scripts/fuzz.sh --build             build only
#   scripts/fuzz.sh [options] NAME…     only these harnesses (frames, planner, or a C harness's name)
#   scripts/fuzz.sh … -- ARGS           extra libFuzzer arguments (-jobs=2, -max_len=8192, …)
#
# Swift harnesses: Tests/Fuzz/<Name>/Harness.swift, products fuzz-<name> of Package.swift (present only
# when PARADICE_FUZZ is set), built with -sanitize=fuzzer,address. C harnesses: every Tests/Fuzz/C/*.c,
# built with clang -fsanitize=fuzzer,address,undefined and the include folders of CParadice and
# ParadiceFrontendCore; a line `// fuzz-build: ARGS` in the file adds compiler arguments (paths from the
# repository root), such as the sources the harness links. Seeds: Tests/Fuzz/corpus/<name>/. Inputs that
# once crashed a harness: Tests/Fuzz/crashes/<name>/ (replayed first, 300 times each; each must run clean).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=""
build_only=0
names=()
extra=()
while (($#)); do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        --build) build_only=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) names+=("$1"); shift ;;
    esac
done

swift_harnesses=()
for dir in Tests/Fuzz/*/; do
    [[ -f "$dir/Harness.swift" ]] && swift_harnesses+=("$(basename "$dir" | tr '[:upper:]' '[:lower:]')")
done
c_harnesses=()
for file in Tests/Fuzz/C/*.c; do
    [[ -f "$file" ]] && c_harnesses+=("$(basename "$file" .c)")
done
wanted() {
    ((${#names[@]} == 0)) && return 0
    local n
    for n in "${names[@]}"; do [[ "$n" == "$1" ]] && return 0; done
    return 1
}

scratch=.build-fuzz
mkdir -p "$scratch/c" "$scratch/logs"
declare -A binary

# Swift: one build for every product, so that the modules are compiled once.
products=()
for h in "${swift_harnesses[@]}"; do wanted "$h" && products+=(--product "fuzz-$h"); done
for ((i = 0; i < ${#products[@]}; i += 2)); do
    echo "== build ${products[i+1]}"
    PARADICE_FUZZ=1 swift build -c debug --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address "${products[i]}" "${products[i+1]}" \
        > "$scratch/logs/build-${products[i+1]}.log" 2>&1 \
        || { grep -v "Cannot export local symbol" "$scratch/logs/build-${products[i+1]}.log" | tail -30; exit 1; }
    binary[${products[i+1]#fuzz-}]="$scratch/debug/${products[i+1]}"
done
for h in "${c_harnesses[@]}"; do
    wanted "$h" || continue
    echo "== build $h (C)"
    src="Tests/Fuzz/C/$h.c"
    read -r -a own <<< "$(sed -n 's|^// fuzz-build: *||p' "$src" | tr '\n' ' ')"
    clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -I Sources/CParadice/include -I Sources/ParadiceFrontendCore/include -I Sources/ParadiceTLS/include -I Sources/ParadicePreload \
        "$src" ${own[@]+"${own[@]}"} -o "$scratch/c/$h" -ldl -lpthread > "$scratch/logs/build-$h.log" 2>&1 \
        || { grep -v "Cannot export local symbol" "$scratch/logs/build-$h.log" | tail -30; exit 1; }
    binary[$h]="$scratch/c/$h"
done
((build_only)) && exit 0

export SWIFT_BACKTRACE=enable=no   # the Swift runtime's crash handler and ASan's must not both run
export LSAN_OPTIONS="suppressions=$root/Tests/Fuzz/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# A single input may not take 10 s, grow the process past 2 GB, or allocate more than 160 MB at once
# (above every cap the planner applies to one call).
# Inputs up to 4 KB: a frame stream of that size already drives dozens of requests.
limits=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=160 -max_len=4096 -print_final_stats=1)

failed=()
summary=()
for h in "${swift_harnesses[@]}" "${c_harnesses[@]}"; do
    wanted "$h" || continue
    bin="${binary[$h]}"
    seeds="Tests/Fuzz/corpus/$h"
    log="$scratch/logs/$h.log"
    mkdir -p "$seeds"
    if [[ -n "$seconds" ]]; then
        # Findings first: each committed crash input must run clean now.
        shopt -s nullglob
        crashes=(Tests/Fuzz/crashes/"$h"/*)
        shopt -u nullglob
        if ((${#crashes[@]})); then
            # Each a few hundred times: a race between a session's threads shows within that, mostly.
            echo "== $h: replaying ${#crashes[@]} committed finding(s), 300 times each"
            if ! "$bin" "${limits[@]}" -runs=300 "${crashes[@]}" > "$log.replay" 2>&1; then
                grep -E "^(==|SUMMARY|Running:)|Fatal error|Precondition failed|#[0-9]+ 0x" "$log.replay" | head -30
                failed+=("$h (a committed finding crashes again; log: $log.replay)")
                continue
            fi
        fi
        work="$scratch/regression/$h"
        rm -rf "$work"; mkdir -p "$work" "$scratch/artifacts/$h"
        echo "== $h: fuzzing for $seconds s"
        if "$bin" "${limits[@]}" -max_total_time="$seconds" -artifact_prefix="$scratch/artifacts/$h/" ${extra[@]+"${extra[@]}"} \
            "$work" "$seeds" > "$log" 2>&1; then status=0; else status=$?; fi
    else
        work="$scratch/corpus/$h"
        mkdir -p "$work" "$scratch/artifacts/$h"
        echo "== $h: fuzzing for 600 s (corpus $work, findings in $scratch/artifacts/$h)"
        if "$bin" "${limits[@]}" -max_total_time=600 -artifact_prefix="$scratch/artifacts/$h/" ${extra[@]+"${extra[@]}"} \
            "$work" "$seeds" > "$log" 2>&1; then status=0; else status=$?; fi
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    summary+=("$(printf '%-16s %10s executions  %6s exec/s' "$h" "${runs:-?}" "${rate:-?}")")
    if ((status != 0)); then
        grep -E "^==[0-9]+==|SUMMARY|Fatal error|Precondition failed|^ +#[0-9]+ 0x|Test unit written|ERROR: libFuzzer" "$log" | head -40
        failed+=("$h (exit $status; log: $log)")
    fi
done

echo "== executions"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "== failed"
    printf '%s\n' "${failed[@]}"
    exit 1
fi
