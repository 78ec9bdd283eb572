# One target per check, the same locally and in CI (.ci/run calls these).
#
#   make            release build: target/release/libzsmalloc.{so,a}, include/zsmalloc.h
#   make run        the main job: the benchmark harness on the bundled workloads
#   make test       every test: Rust, loom, C (ASan/UBSan and valgrind), Python, examples
#   make lint       cargo fmt --check, clippy -D warnings, the header drift check
#
# Area-specific rules live in mk/*.mk; each adds its test target to TEST_TARGETS.

CARGO   ?= cargo
CC      ?= cc
PYTHON  ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
BUILD   := build
LIBDIR  := target/release
LIB_SO  := $(LIBDIR)/libzsmalloc.so
LIB_A   := $(LIBDIR)/libzsmalloc.a
HEADER  := include/zsmalloc.h

TEST_TARGETS := test-rust test-loom

.PHONY: all build test lint fmt-check clippy header-check test-rust test-loom venv clean

all: build

build:
	$(CARGO) build --release --lib

$(LIB_SO) $(LIB_A) $(HEADER): build

# A local virtual environment for the Python tests, examples and charts; each area
# names its requirements file and installs it with $(call venv_install,FILE).
$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

venv: $(VPY)

define venv_install
$(VPY) -m pip install --quiet --disable-pip-version-check -r $(1)
endef

include $(sort $(wildcard mk/*.mk))

test: $(TEST_TARGETS)

test-rust:
	$(CARGO) test --release

# The loom models (tests/loom.rs): the slot protocol, and whole pools built on loom's
# stand-ins (src/sync.rs), every interleaving up to three preemptions.
test-loom:
	RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 $(CARGO) test --release --test loom --target-dir target/loom

lint: fmt-check clippy header-check

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# The committed header must equal a fresh generation (build.rs rewrites it when the
# sources say otherwise, and git then sees the difference).
header-check: build
	git diff --exit-code -- $(HEADER) || { echo "include/zsmalloc.h differs from a fresh generation: commit the regenerated header"; exit 1; }

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
