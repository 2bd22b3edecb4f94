#!/bin/sh
# Runs the busted specs on LuaJIT, one busted process per *_spec.lua file (a
# crash, a hang or a leaked global in one file cannot take the others down),
# and sums the results.  The last line is always
#     N passed, N failed[, N skipped]
# and the exit status is non-zero when anything failed or nothing ran.
#
#   sh spec/support/run_specs.sh [SPEC_PATH...]        (default: spec)
#
# Environment: SWITCHYARD_BUILD (default build) is passed to the specs;
# SY_SPEC_TIMEOUT (seconds, default 600) bounds each file; SY_SPEC_VERBOSE=1
# also lists the tests that passed; SY_BUSTED overrides the busted command.
set -u

cd "$(dirname "$0")/../.." || exit 2
root=$(pwd)

SWITCHYARD_BUILD=${SWITCHYARD_BUILD:-build}
SWITCHYARD_ROOT=${SWITCHYARD_ROOT:-$root}
export SWITCHYARD_BUILD SWITCHYARD_ROOT
sy_path="./spec/?.lua;./lua/?.lua;./policies/?.lua;./lua/?/init.lua;./policies/?/init.lua"
LUA_PATH="$sy_path;${LUA_PATH:-;}"
export LUA_PATH

# A sanitizer build (make test SANITIZE=1) is loaded into LuaJIT through
# the FFI, so the sanitizer runtimes must be in the process from its start.
# Any report aborts the spec's process, which counts as a failure.  Leak
# detection stays on for the C programs specs run, off for LuaJIT itself
# (the interpreter and busted keep memory until exit by design).
if [ "${SANITIZE:-}" = 1 ]; then
    LD_PRELOAD="$(cc -print-file-name=libasan.so) $(cc -print-file-name=libubsan.so)"
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
    export LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS
fi

timeout_s=${SY_SPEC_TIMEOUT:-600}
busted_cmd=${SY_BUSTED:-luajit /usr/bin/busted}
handler=spec/support/summary_output.lua

logdir="$SWITCHYARD_BUILD/spec-logs"
case "$logdir" in /*) ;; *) logdir="$root/$logdir" ;; esac
mkdir -p "$logdir" || exit 2

[ $# -eq 0 ] && set -- spec

files=$(mktemp) || exit 2
trap 'rm -f "$files"' EXIT
for p in "$@"; do
    if [ -d "$p" ]; then
        find "$p" -type f -name '*_spec.lua' | sort >>"$files"
    elif [ -f "$p" ]; then
        echo "$p" >>"$files"
    else
        echo "run_specs: no such spec path: $p" >&2
        echo "0 passed, 1 failed"
        exit 1
    fi
done

now() { date +%s.%N; }
count() { grep -c "^$1 " "$2" 2>/dev/null || true; }
field() { sed -n "s/^SY-SUMMARY .*$1=\([0-9]*\).*/\1/p" "$2" | tail -n 1; }

passed=0 failed=0 skipped=0 nfiles=0
suite_start=$(now)
while IFS= read -r f; do
    [ -n "$f" ] || continue
    nfiles=$((nfiles + 1))
    log="$logdir/$(echo "$f" | sed 's|^\./||; s|/|__|g').log"
    start=$(now)
    # Output goes to a file, not a pipe: a process a spec leaked can never
    # keep the runner waiting for an end of file.
    # shellcheck disable=SC2086
    timeout -k 15 "$timeout_s" $busted_cmd --lpath="$sy_path" -o "$handler" "$f" >"$log" 2>&1 </dev/null
    rc=$?
    secs=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')

    if grep -q '^SY-SUMMARY ' "$log"; then
        p=$(field passed "$log"); fl=$(field failed "$log"); e=$(field errors "$log"); s=$(field skipped "$log")
        fl=$((fl + e))
        note=""
    else
        # Crashed, killed or timed out: count what it reported, plus one failure.
        p=$(count SY-OK "$log"); fl=$(( $(count SY-FAIL "$log") + 1 )); s=$(count SY-SKIP "$log")
        case $rc in
            124|137) note="timed out after ${timeout_s}s" ;;
            *) note="ended without a summary (exit $rc)" ;;
        esac
        last=$(sed -n 's/^SY-RUN //p' "$log" | tail -n 1)
        [ -n "$last" ] && note="$note while running: $last"
    fi
    if [ "$rc" -ne 0 ] && [ "$fl" -eq 0 ]; then
        fl=1
        note="exited with status $rc"
    fi
    passed=$((passed + p)); failed=$((failed + fl)); skipped=$((skipped + s))

    status=ok
    [ "$fl" -gt 0 ] && status=FAIL
    extra=""
    [ "$s" -gt 0 ] && extra=", $s skipped"
    printf '%-4s %-60s %3d passed, %d failed%s  %6ss\n' "$status" "$f" "$p" "$fl" "$extra" "$secs"
    if [ "${SY_SPEC_VERBOSE:-0}" = 1 ]; then
        sed -n 's/^SY-OK /       ok  /p; s/^SY-SKIP /       skip /p' "$log"
    fi
    if [ "$fl" -gt 0 ]; then
        sed -n 's/^! /       /p' "$log"
        if [ -n "$note" ]; then
            echo "       $note (output: $log)"
            grep -v '^SY-\|^! ' "$log" | tail -n 25 | sed 's/^/       | /'
        else
            echo "       full output: $log"
        fi
    fi
done <"$files"

total_secs=$(awk -v a="$suite_start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
if [ $((passed + failed)) -eq 0 ]; then
    echo "no spec ran ($nfiles files) in ${total_secs}s"
    failed_or_empty=1
else
    echo "$nfiles spec file(s) in ${total_secs}s"
    failed_or_empty=$failed
fi
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed_or_empty" -eq 0 ]
