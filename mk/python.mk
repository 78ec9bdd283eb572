# The Python binding (python/zsmalloc), its tests (python/tests) and the Python example.
#
#   make test-python            pytest on python/tests against the release library
#   make test-examples-python   runs examples/python/compressed_cache.py
#
# Both use the local virtual environment; pytest is installed into it only when it is
# missing. pytest's exit status is passed through, so a run that collects no test
# (status 5) fails the target like any failure.

PY_REQS     := python/requirements-dev.txt
PY_TESTS    := python/tests
PY_EXAMPLE  := examples/python/compressed_cache.py
PY_LIB_ENV  := ZSMALLOC_LIB=$(abspath $(LIB_SO))
PYTEST_ARGS ?= -q

.PHONY: test-python test-examples-python

test-python: build $(VPY)
	@$(VPY) -c "import pytest" 2>/dev/null || $(call venv_install,$(PY_REQS))
	$(PY_LIB_ENV) $(VPY) -m pytest -p no:cacheprovider $(PYTEST_ARGS) $(PY_TESTS)

test-examples-python: build $(VPY)
	$(PY_LIB_ENV) $(VPY) $(PY_EXAMPLE)

TEST_TARGETS += test-python test-examples-python
