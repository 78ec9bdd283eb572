#!/bin/sh
# Runs one zsbench configuration under every implementation, REPEAT times (the
# implementations interleaved, so that a slow moment of a shared machine does not land
# on one of them), one JSON file per run in OUTDIR.
#
#   suite.sh OUTDIR NAME REPEAT [zsbench options...]
#
# Environment: ZSBENCH (the harness), ZS_ON_MALLOC (the zs_*-on-malloc library),
# JEMALLOC and MIMALLOC (their shared objects; empty: that implementation is skipped).
set -eu
out=$1 name=$2 repeat=$3
shift 3
: "${ZSBENCH:?}" "${ZS_ON_MALLOC:?}"
JEMALLOC=${JEMALLOC:-} MIMALLOC=${MIMALLOC:-}
mkdir -p "$out"

one() { # label expect preload [options...]
    label=$1 expect=$2 preload=$3
    shift 3
    LD_PRELOAD=$preload "$ZSBENCH" --quiet --expect "$expect" --label "$label" \
        --json "$out/$name.$label.$rep.json" "$@" || {
        echo "suite.sh: $name: $label failed (run $rep): $ZSBENCH $*" >&2
        exit 1
    }
}

impls="zsmalloc-dense zsmalloc-kernel malloc"
[ -z "$JEMALLOC" ] || impls="$impls jemalloc"
[ -z "$MIMALLOC" ] || impls="$impls mimalloc"
echo "  $name: $impls; $repeat run$( [ "$repeat" -eq 1 ] || echo s) each" >&2

rep=1
while [ "$rep" -le "$repeat" ]; do
    one zsmalloc-dense zsmalloc "" --layout dense "$@"
    one zsmalloc-kernel zsmalloc "" --layout kernel "$@"
    one malloc malloc "$ZS_ON_MALLOC" "$@"
    [ -z "$JEMALLOC" ] || one jemalloc jemalloc "$ZS_ON_MALLOC $JEMALLOC" "$@"
    [ -z "$MIMALLOC" ] || one mimalloc mimalloc "$ZS_ON_MALLOC $MIMALLOC" "$@"
    rep=$((rep + 1))
done
