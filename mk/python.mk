# The Python binding (python/zsmalloc), its tests (python/tests) and the Python example.
#
#   make wheel                  the package as a wheel in build/wheel: the binding with
#                               the library inside (pyproject.toml, setup.py); built
#                               from python/ too, which must give the same files
#   make test-python            installs that wheel into a fresh virtual environment
#                               (build/py-installed) and runs pytest on python/tests
#                               there, from a temporary folder outside the checkout
#   make test-python-frames     the same tests again in the venv test-python made, with
#                               frames of 16 and 64 KiB (ZS_TEST_FRAME_SIZE; tests
#                               whose figures are those of 4 KiB frames pin them)
#   make test-examples-python   runs examples/python/compressed_cache.py
#
# The build and test requirements are kept as wheels in build/wheelhouse, fetched once
# per change of their files; the build requirements (setuptools-rust) go from there
# into .venv, and the wheel is built without build isolation. After the first run
# these targets work offline. pytest's exit status is passed through, so a run that
# collects no test (status 5) fails the target like any failure.
#
# ZS_STATEFUL_PROFILE=long makes test_stateful.py run far longer sequences.

PY_REQS        := python/requirements-dev.txt
PY_BUILD_REQS  := python/requirements-build.txt
PY_TESTS       := python/tests
PY_EXAMPLE     := examples/python/compressed_cache.py
PY_LIB_ENV     := ZSMALLOC_LIB=$(abspath $(LIB_SO))
PY_WHEEL_DIR   := $(BUILD)/wheel
PY_WHEELHOUSE  := $(BUILD)/wheelhouse
PY_TEST_VENV   := $(BUILD)/py-installed
PYTEST_ARGS    ?= -q
# pytest on the installed package; the recipes run it from a temporary folder.
PY_PYTEST       = env -u ZSMALLOC_LIB ZS_TEST_INSTALLED=1 $(abspath $(PY_TEST_VENV))/bin/python -m pytest \
	-p no:cacheprovider $(PYTEST_ARGS) $(abspath $(PY_TESTS))

.PHONY: wheel test-python test-python-frames test-examples-python

# cargo builds the wheel's library in target/python (setup.py says why).
wheel: $(PY_WHEELHOUSE)/.done
	@$(VPY) -c "import setuptools_rust, setuptools.command.bdist_wheel" 2>/dev/null || \
		$(VPY) -m pip install --quiet --disable-pip-version-check --no-index --find-links $(PY_WHEELHOUSE) \
		-r $(PY_BUILD_REQS)
	@rm -rf $(PY_WHEEL_DIR) $(PY_WHEEL_DIR)-python
	$(VPY) -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		--wheel-dir $(PY_WHEEL_DIR) .
	$(VPY) -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		--wheel-dir $(PY_WHEEL_DIR)-python ./python
	@$(VPY) -c 'import sys, zipfile; a, b = ([n for n in zipfile.ZipFile(w).namelist() if not n.endswith("RECORD")] for w in sys.argv[1:]); sys.exit(0 if sorted(a) == sorted(b) else f"the wheels of . and ./python differ: {sorted(a)} {sorted(b)}")' \
		$(PY_WHEEL_DIR)/zsmalloc-*.whl $(PY_WHEEL_DIR)-python/zsmalloc-*.whl
	@ls $(PY_WHEEL_DIR)/zsmalloc-*-py3-none-*.whl

$(PY_WHEELHOUSE)/.done: $(PY_REQS) $(PY_BUILD_REQS) | $(VPY)
	@rm -rf $(PY_WHEELHOUSE)
	$(VPY) -m pip wheel --quiet --disable-pip-version-check --wheel-dir $(PY_WHEELHOUSE) \
		-r $(PY_REQS) -r $(PY_BUILD_REQS)
	@touch $@

test-python: wheel
	@rm -rf $(PY_TEST_VENV)
	$(PYTHON) -m venv $(PY_TEST_VENV)
	$(PY_TEST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-index \
		--find-links $(PY_WHEEL_DIR) --find-links $(PY_WHEELHOUSE) zsmalloc -r $(PY_REQS)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; cd "$$tmp" && $(PY_PYTEST)

test-python-frames: test-python
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; cd "$$tmp" && set -e && \
	for f in $(FRAME_SIZES); do \
		echo "== the Python suite with frames of $$f bytes"; \
		ZS_TEST_FRAME_SIZE=$$f $(PY_PYTEST); \
	done

test-examples-python: build $(VPY)
	$(PY_LIB_ENV) $(VPY) $(PY_EXAMPLE)

TEST_TARGETS += test-python test-examples-python
