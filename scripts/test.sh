#!/usr/bin/env bash
# Runs the unit tests, then the integration tests, from a build's bin folder,
# and ends with one summary line. Exit code 0 only when everything passed.
#   scripts/test.sh [--unit-only] BINDIR [cmocka test filter]
set -uo pipefail

unit_only=0
if [ "${1:-}" = "--unit-only" ]; then unit_only=1; shift; fi
bindir=${1:?usage: scripts/test.sh [--unit-only] BINDIR}
filter=${2:-}

passed=0
failed=0
broken=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# CHATQ_WRAP (e.g. valgrind) prefixes the unit tests and, through the
# integration harness, our binaries. ASan's leak checker is on; UBSan stops at
# the first error.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run() {
    local name=$1; shift
    echo "== $name"
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local p f
    p=$(grep -oE '\[  PASSED  \] [0-9]+' "$log" | awk '{s+=$4} END {print s+0}')
    f=$(grep -oE '\[  FAILED  \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        # A crash or sanitizer report outside any test still fails the run.
        failed=$((failed + 1))
    fi
    [ "$rc" -eq 0 ] || broken+=("$name")
}

for t in "$bindir"/tests/test_*; do
    [ -x "$t" ] || continue
    # shellcheck disable=SC2086 # CHATQ_WRAP is a command prefix, split on purpose
    run "$(basename "$t")" ${CHATQ_WRAP:-} "$t"
done

# Integration groups three at a time (tests/integration/main.c): they mostly wait.
jobs=${CHATQ_TEST_JOBS:-3}
if [ "$unit_only" -eq 0 ]; then
    if [ -n "$filter" ]; then
        run integration env CHATQ_BIN_DIR="$bindir" "$bindir/tests/integration" -j "$jobs" "$filter"
    else
        run integration env CHATQ_BIN_DIR="$bindir" "$bindir/tests/integration" -j "$jobs"
    fi
fi

echo
[ ${#broken[@]} -eq 0 ] || echo "failing: ${broken[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ ${#broken[@]} -eq 0 ]
