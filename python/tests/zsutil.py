"""Helpers shared by the tests."""

import contextlib
import os

import zsmalloc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, os.pardir, os.pardir))
HEADER = os.path.join(ROOT, "include", "zsmalloc.h")
LIB = zsmalloc._lib


@contextlib.contextmanager
def counts_misuse(pool, n=1):
    """Asserts that the block makes the pool count exactly `n` misuse events."""
    before = pool.info()["misuse_events"]
    yield
    after = pool.info()["misuse_events"]
    assert after - before == n, f"misuse_events went {before} -> {after}, expected +{n}"


def payload(rng, n):
    return rng.randbytes(n)


def class_indices(pool):
    """Every (merged) class index, from the sizes 1..4096."""
    return sorted({pool.lookup_class_index(s) for s in range(1, zsmalloc.MAX_ALLOC_SIZE + 1)})
