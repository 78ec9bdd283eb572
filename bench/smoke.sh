#!/bin/sh
# Smoke test of the benchmark harness (make test-bench): small runs of every workload on
# the library and on the malloc shim, each verified byte for byte; the verifier must
# catch a corrupted object; a comparison whose preload did not take must be refused;
# compare.py must merge the results; zshot (bench/hot.c) must run every figure.
#
# Environment: ZSBENCH, ZS_ON_MALLOC, PYTHON; JEMALLOC and ZSHOT (optional), TRACE_DIR.
set -u
: "${ZSBENCH:?}" "${ZS_ON_MALLOC:?}"
PYTHON=${PYTHON:-python3} JEMALLOC=${JEMALLOC:-} TRACE_DIR=${TRACE_DIR:-data/workloads}
node=$TRACE_DIR/node-heap-lz4.txt sqlite=$TRACE_DIR/sqlite-heap-lz4.txt
out=$(mktemp -d "${TMPDIR:-/tmp}/zsbench-smoke.XXXXXX")
trap 'rm -rf "$out"' EXIT
passed=0 failed=0

check() { # want-status description command...   ($WANT_TEXT: also a line of the output)
    want=$1 what=$2
    shift 2
    "$@" >"$out/log" 2>&1
    got=$?
    if [ "$got" -eq "$want" ] && { [ -z "${WANT_TEXT:-}" ] || grep -q -- "$WANT_TEXT" "$out/log"; }; then
        passed=$((passed + 1))
        echo "ok   $what"
    else
        failed=$((failed + 1))
        echo "FAIL $what (exit $got, wanted $want)"
        sed 's/^/     /' "$out/log"
    fi
}

zs() { "$ZSBENCH" --quiet "$@"; }
shim() { LD_PRELOAD=$ZS_ON_MALLOC "$ZSBENCH" --quiet "$@"; }

check 0 "zsmalloc dense: trace, 2 threads, verified, pool checked" \
    zs --expect zsmalloc --trace "$node" --objects 3000 --threads 2 --check --json "$out/a.json"
check 0 "zsmalloc kernel layout, chain 4: trace cycled past its length" \
    zs --expect zsmalloc --layout kernel --chain 4 --trace "$node" --objects 12k --check --json "$out/b.json"
check 0 "zsmalloc: size sweep" \
    zs --expect zsmalloc --workload sweep --sweep-step 64 --sweep-count 16 --check --json "$out/c.json"
check 0 "zsmalloc: churn workload, 2 threads" \
    zs --expect zsmalloc --workload churn --trace "$sqlite" --objects 2000 --threads 2 --check
for layout in dense kernel; do
    check 0 "zsmalloc $layout: the kernel's test workload at chain 4" \
        zs --expect zsmalloc --workload kernel-selftest --sweep-step 121 --sweep-count 8 --chain 4 --layout $layout --check
done
for order in ascending descending sawtooth by-size; do
    WANT_TEXT="sizes node-heap-lz4-$order" check 0 "zsmalloc: the trace in $order order" \
        "$ZSBENCH" --expect zsmalloc --trace "$node" --objects 2000 --order "$order" --check
done
check 0 "malloc shim: trace, 2 threads, verified" \
    shim --expect malloc --trace "$node" --objects 3000 --threads 2 --json "$out/d.json"
check 0 "malloc shim: size sweep and churn" \
    shim --expect malloc --workload churn --sweep-step 64 --sweep-count 16
check 0 "malloc shim: the kernel's test workload, by size" \
    shim --expect malloc --workload kernel-selftest --sweep-step 121 --sweep-count 8 --order by-size
WANT_TEXT="read back wrong bytes" check 1 "the verifier catches a changed byte (zsmalloc)" \
    zs --trace "$node" --objects 500 --inject-corruption
WANT_TEXT="mapped wrong bytes" check 1 "the verifier catches a changed byte (malloc shim)" \
    shim --trace "$node" --objects 500 --inject-corruption
WANT_TEXT="refusing to run" check 2 "--expect malloc refused without the preload" \
    zs --expect malloc --trace "$node" --objects 100
WANT_TEXT="refusing to run" check 2 "--expect zsmalloc refused under the malloc preload" \
    shim --expect zsmalloc --trace "$node" --objects 100
WANT_TEXT="refusing to run" check 2 "--expect mimalloc refused when mimalloc is not preloaded" \
    shim --expect mimalloc --trace "$node" --objects 100
if [ -n "$JEMALLOC" ]; then
    check 0 "jemalloc preload recognised" \
        env LD_PRELOAD="$ZS_ON_MALLOC $JEMALLOC" "$ZSBENCH" --quiet --expect jemalloc --trace "$node" --objects 1000
fi
check 0 "compare.py merges the results" "$PYTHON" bench/compare.py "$out"
if [ -n "${ZSHOT:-}" ]; then
    WANT_TEXT="shared objects, zs_compact running" check 0 "zshot: every fast path and the threads figure, briefly" \
        "$ZSHOT" --trace "$node" --rounds 1 --threads-max 2 --pairs 20000
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
