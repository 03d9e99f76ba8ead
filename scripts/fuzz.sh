#!/usr/bin/env bash
# Runs every libFuzzer target in BINDIR/fuzz for SECONDS each, starting from the
# seed corpus in tests/fuzz/corpus/<name>/. New inputs go to build/fuzz/corpus/
# (the checked-in seeds stay as they are); a crashing input is written to
# build/fuzz/crash/<name>-... and the script fails, naming it.
#   scripts/fuzz.sh build/fuzz/bin 60
set -uo pipefail

bindir=${1:?usage: fuzz.sh BINDIR SECONDS}
seconds=${2:?usage: fuzz.sh BINDIR SECONDS}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$root/build/fuzz
mkdir -p "$work/crash" "$work/log"

failed=()
for bin in "$bindir"/fuzz/fuzz_*; do
    name=${bin##*/fuzz_}
    seeds=$root/tests/fuzz/corpus/$name
    corpus=$work/corpus/$name
    log=$work/log/$name.log
    mkdir -p "$corpus" "$seeds"
    # -timeout: one input taking a second is a hang here (all targets are pure).
    if "$bin" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$work/crash/$name-" \
        "$corpus" "$seeds" >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
        printf 'fuzz %-10s ok   %ss, %s runs, %s/s, %s\n' "$name" "$seconds" "$execs" "$rate" "$cov"
    else
        echo "fuzz $name FAILED (log: $log)"
        grep -E '^==[0-9]+==ERROR|SUMMARY|property broken|Test unit written' "$log" | head -8
        failed+=("$name")
    fi
done

[ ${#failed[@]} -eq 0 ] || { echo "fuzzers that failed: ${failed[*]}"; exit 1; }
