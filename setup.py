"""Builds the Python package: python/zsmalloc, a pure-ctypes binding, with the Rust
library inside it as zsmalloc/libzsmalloc.so (where the binding looks first).

setuptools-rust builds the crate's cdylib with cargo. Two things differ from a Python
extension module, because ctypes loads the library by path and the binding calls no
Python C API:
- the file keeps its plain name, without the interpreter's extension suffix
  (.cpython-311-x86_64-linux-gnu.so), and
- the wheel is tagged py3-none-<platform>: any Python 3 on the platform can load it,
  and it holds native code, so it is not py3-none-any.

cargo builds into target/python (or $CARGO_TARGET_DIR): setuptools-rust asks for the
cdylib alone, and sharing target/release with `make`, which builds all three crate
types, would make each rebuild the crate after the other.
"""

import os
import re

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools_rust import Binding, RustExtension, Strip, build_rust

ROOT = os.path.dirname(os.path.abspath(__file__))
LIB_NAME = "libzsmalloc.so"


def cargo_version():
    """The version of Cargo.toml's [package] table: the library's and the package's."""
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        package = f.read().split("[package]", 1)[1].split("\n[", 1)[0]
    return re.search(r'^version\s*=\s*"([^"]+)"', package, re.M).group(1)


class BuildRust(build_rust):
    def get_dylib_ext_path(self, ext, target_fname):
        return os.path.join(os.path.dirname(super().get_dylib_ext_path(ext, target_fname)), LIB_NAME)


class BdistWheel(bdist_wheel):
    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(
    version=cargo_version(),
    rust_extensions=[
        RustExtension(
            "zsmalloc.libzsmalloc",
            path="Cargo.toml",
            binding=Binding.NoBinding,
            py_limited_api=False,
            debug=False,
            strip=Strip.Debug,  # the release profile keeps line tables, for the benchmarks
            env=dict(os.environ, CARGO_TARGET_DIR=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target", "python"))),
        )
    ],
    cmdclass={"build_rust": BuildRust, "bdist_wheel": BdistWheel},
)
