# The README's quick starts, run as a reader types them.
#
#   make test-readme   every command and code block of README.md's "Quick start" (C,
#                      Rust, Python), in order, each part in a fresh bash from the
#                      checkout with an empty HOME (tools/readme_quickstart.py)
#
# pip and cargo take what the commands would fetch from local copies: the wheelhouse
# of mk/python.mk and cargo's cache (filled by the builds before), so that the run
# needs no network.

TEST_TARGETS += test-readme

.PHONY: test-readme

test-readme: build $(PY_WHEELHOUSE)/.done
	PIP_NO_INDEX=1 PIP_FIND_LINKS=$(abspath $(PY_WHEELHOUSE)) CARGO_NET_OFFLINE=true \
		$(PYTHON) tools/readme_quickstart.py
