"""Helpers shared by the tests."""

import contextlib
import os
import subprocess
import sys

import zsmalloc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, os.pardir, os.pardir))
HEADER = os.path.join(ROOT, "include", "zsmalloc.h")
LIB = zsmalloc._lib
# The folder the package under test was imported from: a child Python imports the
# same one (the installed package, or the checkout's python/).
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(zsmalloc.__file__)))


def run_python(code, cwd, timeout=60, **env):
    """Runs `code` in a child interpreter importing the package under test, from `cwd`
    (which "python -c" puts first on sys.path); returns the CompletedProcess."""
    full = dict(os.environ, PYTHONPATH=PKG_PARENT, **env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


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
    """Every (merged) class index, from the sizes 1..max_object_size."""
    return sorted({pool.lookup_class_index(s) for s in range(1, pool.max_object_size + 1)})


FRAME = 4096  # bytes per frame (PAGE_SIZE)


def dense_chain(pool, chain=0):
    """Frames of a dense zspage of `pool` asked for `chain` (0: the default, 16): a
    dense zspage keeps at most 64 KiB, whatever the frame size."""
    return min(chain or 16, 65536 // pool.frame_size)
KERNEL_HEADER = 8  # the kernel layout's in-object handle header (ZS_HANDLE_SIZE)


def lanes(pool):
    """A dense pool's lane indices: its "classes", 0..n-1 with n at most 16."""
    out = []
    for i in range(17):
        try:
            pool.class_info(i)
        except ValueError:
            break
        out.append(i)
    return out


def usable(pool, size):
    """Bytes an object of `size` bytes may be written and read with: exactly its size in
    the dense layout; its class's slot less the 8-byte header in the kernel layout (the
    whole slot in a huge class, which has no header)."""
    if pool.config["layout"] == "dense":
        return size
    c = pool.class_info(pool.lookup_class_index(size))
    huge = (c["pages_per_zspage"], c["objs_per_zspage"]) == (1, 1)
    return c["class_size"] - (0 if huge else KERNEL_HEADER)


def fullness_group(used, total):
    """The kernel's get_fullness_group() for `used` of `total` (objects of a kernel
    zspage, bytes of a dense one): 0 if empty, then 10% groups 1..10, 11 if full."""
    if used == 0:
        return 0
    if used == total:
        return zsmalloc.NR_FULLNESS_GROUPS - 1
    return 100 * used // total // 10 + 1
