#!/bin/sh
# Smoke test of the benchmark harness (make test-bench): small runs of every workload on
# the library and on the malloc shim, each verified byte for byte; the verifier must
# catch a corrupted object; a comparison whose preload did not take must be refused;
# compare.py must merge the results; zshot (bench/hot.c) must run every figure, and
# hot_median.py take the medians of its runs; a pool
# of 32 KiB objects must take the 32 KiB unit trace, verified, at a density in range,
# in 4 KiB frames and in 64 KiB ones.
#
# Environment: ZSBENCH, ZS_ON_MALLOC, PYTHON; JEMALLOC and ZSHOT (optional), TRACE_DIR.
set -u
: "${ZSBENCH:?}" "${ZS_ON_MALLOC:?}"
PYTHON=${PYTHON:-python3} JEMALLOC=${JEMALLOC:-} TRACE_DIR=${TRACE_DIR:-data/workloads}
node=$TRACE_DIR/node-heap-lz4.txt sqlite=$TRACE_DIR/sqlite-heap-lz4.txt
units32=$TRACE_DIR/usr-ext4-lz4-32k.txt
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

# The density a phase's row of the table prints (its 11th column), within [lo, hi].
density_in() { # log phase lo hi
    awk -v ph="$2" -v lo="$3" -v hi="$4" '$1 == ph { found = 1; d = $11 }
        END { print ph " density " (found ? d : "missing") ", wanted " lo ".." hi; exit !(found && d >= lo && d <= hi) }' "$1"
}
# Every object of the 32 KiB unit trace written, read, mapped, compacted, churned and
# verified in a pool of 32 KiB objects, checked after each phase; the density after the
# fill and after the compaction at least lo-fill and lo-compact; more zsbench options
# after those (a run with them is another case, with its own result file).
large_units() { # layout lo-fill lo-compact [option value]
    lay=$1 lo_fill=$2 lo_compact=$3
    shift 3
    "$ZSBENCH" --expect zsmalloc --layout "$lay" --max-object-size 32768 --trace "$units32" --check "$@" \
        --json "$out/units-$lay${2:+-$2}.json" >"$out/units.log" || { cat "$out/units.log"; return 1; }
    density_in "$out/units.log" fill "$lo_fill" 1 && density_in "$out/units.log" compact "$lo_compact" 1
}
check 0 "zsmalloc dense, objects up to 32 KiB: 32 KiB units verified, density in range" \
    large_units dense 0.96 0.95
check 0 "zsmalloc kernel layout, objects up to 32 KiB: 32 KiB units verified, density in range" \
    large_units kernel 0.88 0.88
check 0 "zsmalloc dense, 64 KiB frames: 32 KiB units verified, density in range" \
    large_units dense 0.96 0.95 --frame-size 65536
WANT_TEXT="frame size 12288" check 1 "a frame size the library refuses is reported" \
    zs --frame-size 12288 --trace "$node"
check 0 "malloc shim, objects up to 32 KiB: 32 KiB units verified" \
    shim --expect malloc --max-object-size 32768 --trace "$units32" --objects 2000
WANT_TEXT="not a size in 1..4096" check 1 "a trace above the pool's object limit is refused" \
    zs --trace "$units32"
WANT_TEXT="max object size 70000" check 1 "a limit the library refuses is reported" \
    zs --max-object-size 70000 --trace "$units32"
check 0 "compare.py merges the results" "$PYTHON" bench/compare.py "$out"
if [ -n "${ZSHOT:-}" ]; then
    WANT_TEXT="shared objects, zs_compact running" check 0 "zshot: every fast path and the threads figure, briefly" \
        "$ZSHOT" --trace "$node" --rounds 1 --threads-max 2 --pairs 20000
    # bench-hot's medians over runs: three copies of that run, its first figure made
    # 100, 300 and 200 ns; and a run cut short, which must be refused.
    cp "$out/log" "$out/hot.txt"
    for v in 100.0 300.0 200.0; do
        awk -v v=$v '/^write\+read vs memcpy/ { $5 = v } { print }' "$out/hot.txt" >"$out/hot.$v.txt"
    done
    WANT_TEXT="^write+read vs memcpy in+out 200.0 " check 0 "hot_median.py: each figure the median of the runs'" \
        "$PYTHON" bench/hot_median.py "$out/hot.100.0.txt" "$out/hot.300.0.txt" "$out/hot.200.0.txt"
    head -n 5 "$out/hot.txt" >"$out/hot.cut.txt"
    WANT_TEXT="lines after their first" check 1 "hot_median.py: runs of different layouts refused" \
        "$PYTHON" bench/hot_median.py "$out/hot.txt" "$out/hot.cut.txt"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
