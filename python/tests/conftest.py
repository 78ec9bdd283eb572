"""Shared fixtures: pools that are checked (zs_pool_check) and closed after each test.

The package under test is whichever `import zsmalloc` finds: `make test-python`
installs the wheel into a fresh virtual environment and runs these tests from outside
the checkout; from a checkout, put python/ on PYTHONPATH. With ZS_TEST_INSTALLED=1 the
run refuses a package or library that is not the installed one."""

import os
import random

import pytest

import zsmalloc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, os.pardir, os.pardir))

if os.environ.get("ZS_TEST_INSTALLED") == "1":
    _pkg = os.path.dirname(os.path.abspath(zsmalloc.__file__))
    assert not _pkg.startswith(os.path.join(ROOT, "python") + os.sep), f"zsmalloc was imported from the checkout: {_pkg}"
    assert "ZSMALLOC_LIB" not in os.environ, "ZSMALLOC_LIB would override the bundled library"
    assert os.path.dirname(zsmalloc.library_path) == _pkg, f"not the bundled library: {zsmalloc.library_path}"

LAYOUTS = ("dense", "kernel")


@pytest.fixture(params=LAYOUTS)
def layout(request):
    return request.param


@pytest.fixture
def make_pool():
    """Pool factory: every pool made is checked (zs_pool_check) and closed at the end."""
    pools = []

    def make(*args, **kwargs):
        # At the suites' frame size (ZS_TEST_FRAME_SIZE; make test runs the suites at
        # several), unless the test asks for one.
        kwargs.setdefault("frame_size", int(os.environ.get("ZS_TEST_FRAME_SIZE", "0")))
        p = zsmalloc.Pool(*args, **kwargs)
        pools.append(p)
        return p

    yield make
    for p in pools:
        if not p.closed:
            p.check()
            p.close()


@pytest.fixture
def pool(make_pool, layout):
    return make_pool("test-" + layout, layout=layout)


@pytest.fixture
def dense_pool(make_pool):
    return make_pool("test-dense")


@pytest.fixture
def rng():
    return random.Random(0x25A11C)
