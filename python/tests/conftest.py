"""Shared fixtures: the package from this checkout, and pools that are checked
(zs_pool_check) and closed after each test."""

import os
import random
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, os.pardir, os.pardir))
sys.path.insert(0, os.path.join(ROOT, "python"))

import zsmalloc  # noqa: E402

LAYOUTS = ("dense", "kernel")


@pytest.fixture(params=LAYOUTS)
def layout(request):
    return request.param


@pytest.fixture
def make_pool():
    """Pool factory: every pool made is checked (zs_pool_check) and closed at the end."""
    pools = []

    def make(*args, **kwargs):
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
