"""The example examples/python/compressed_cache.py: its dict interface, and its script
exits non-zero when a value reads back wrong."""

import importlib.util
import os
import subprocess
import sys

import pytest

from zsutil import ROOT

EXAMPLE = os.path.join(ROOT, "examples", "python", "compressed_cache.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("compressed_cache", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dict_interface(example, rng):
    with example.CompressedCache("t") as cache:
        values = {
            "text": b"abc " * 1000,
            "random": rng.randbytes(3000),
            "big-random": rng.randbytes(10000),  # over several objects
            "empty": b"",
            7: bytearray(b"x" * 50),
        }
        for k, v in values.items():
            cache[k] = v
        assert len(cache) == len(values)
        for k, v in values.items():
            assert k in cache and cache[k] == bytes(v)
        assert "missing" not in cache
        with pytest.raises(KeyError):
            cache["missing"]
        cache["text"] = b"replaced"
        assert cache["text"] == b"replaced" and len(cache) == len(values)
        cache.pool.check()
        for k in list(cache):
            del cache[k]
        with pytest.raises(KeyError):
            del cache["text"]
        assert len(cache) == 0 and cache.pool.total_pages == 0
        assert cache.stats()["stored_bytes"] == 0


def test_main_passes(example, capsys):
    assert example.main(300) == 0
    out = capsys.readouterr().out
    assert "entries:" in out and "density:" in out


def test_main_fails_on_a_mismatch(example, monkeypatch, capsys):
    real = example.CompressedCache.__getitem__
    flipped = []

    def corrupt(self, key):
        v = real(self, key)
        if flipped or not v:
            return v
        flipped.append(key)
        return bytes([v[0] ^ 1]) + v[1:]  # one bit of one value

    monkeypatch.setattr(example.CompressedCache, "__getitem__", corrupt)
    assert example.main(300) == 1
    assert f"MISMATCH for {flipped[0]}" in capsys.readouterr().err


def test_script_runs():
    r = subprocess.run([sys.executable, EXAMPLE, "200"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "all values read back intact" in r.stdout
