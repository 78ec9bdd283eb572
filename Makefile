# One target per check, the same locally and in CI (.ci/run calls these).
#
#   make            release build: target/release/libzsmalloc.{so,a}, include/zsmalloc.h
#   make run        the main job: the benchmark harness on the bundled workloads
#   make test       every test: Rust (release and debug), loom, C (ASan/UBSan and valgrind),
#                   Python, examples
#   make lint       cargo fmt --check, clippy -D warnings, the header drift check, the
#                   exported symbols check
#   make deps       as root on Debian: the packages the tests and benchmarks use
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

TEST_TARGETS := test-rust test-loom test-debug
TEST_TARGETS += test-frames test-loom-frames test-debug-frames
TEST_TARGETS += test-python-frames

.PHONY: all build test lint fmt-check clippy header-check symbols-check test-rust test-loom test-debug venv clean test-frames test-loom-frames test-debug-frames

all: build

# The library's soname is libzsmalloc.so.0 (build.rs), so a program linked with
# -L<dir> -lzsmalloc needs that name beside the file cargo writes there: every build of
# the library into a cargo output folder runs $(call soname_link,<dir>).
soname_link = ln -sf libzsmalloc.so $(1)/libzsmalloc.so.0

build:
	$(CARGO) build --release --lib
	@$(call soname_link,$(LIBDIR))

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
LOOM_TEST := RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 $(CARGO) test --release --test loom --target-dir target/loom
test-loom:
	$(LOOM_TEST)

# The loom models again with frames of 16 and 64 KiB (ZS_TEST_FRAME_SIZE, which the
# models' pools read), every model at every size: the pools' figures are frames and
# objects of a frame, and the watch on the arena's bytes (a loom cell per 4 KiB) is
# checked to see a whole frame's bytes. The same build as test-loom: about a second
# more for both sizes.
test-loom-frames:
	set -e; for f in $(FRAME_SIZES); do \
		echo "== the loom models with frames of $$f bytes"; \
		ZS_TEST_FRAME_SIZE=$$f $(LOOM_TEST); \
	done

# The unit tests and the model-based tests in a debug build, where the allocator also
# checks its cheap invariants as it goes (debug_assert!: the frame equation, the free
# lists and holes of zspages, the list counts), not only through the checker.
test-debug:
	$(CARGO) test --lib --test model --test compact --test dense

# test-debug again with frames of 16 and 64 KiB: the model-based tests, and the unit
# tests that build whole pools or arenas (the deferred frees, a migration's list of
# objects, a compactor's wake-up, the arena's frame accounting), which read
# ZS_TEST_FRAME_SIZE too (Config::for_tests, FrameSource::new). The other unit tests
# are of structures whose figures are 4 KiB by construction (class tables, zspage
# descriptors, the free space of a dense zspage, the side table, segments) and run
# once, in test-debug. About 40 s a size, the proptest cases as at 4 KiB.
DEBUG_FRAME_UNITS := compact::auto migrate:: pool::deferred frames::tests frames::hot_tests frames::account_tests
test-debug-frames:
	set -e; for f in $(FRAME_SIZES); do \
		echo "== the debug build with frames of $$f bytes"; \
		ZS_TEST_FRAME_SIZE=$$f $(CARGO) test --test model --test compact --test dense; \
		ZS_TEST_FRAME_SIZE=$$f $(CARGO) test --lib -- $(DEBUG_FRAME_UNITS); \
	done

# The Rust suite again with frames of 16 and 64 KiB (ZS_TEST_FRAME_SIZE, which every
# test's pool constructor reads: tests/common/mod.rs), the torture tests and the limits
# (RLIMIT_AS, 20,000 live pools, the pool of 1 TiB of frames used at its top) included.
# Left out: the unit tests, which build their own arenas of 4 KiB frames, and
# tests/frame_size.rs and tests/kernel_table.rs, which cover every frame size in one
# run. The C and Python suites read the variable too, and run at these sizes in
# test-c-frames and test-python-frames.
FRAME_SIZES := 16384 65536
FRAME_TESTS := arrival auto compact dense ffi large limits migrate model pool rss threads torture
test-frames:
	set -e; for f in $(FRAME_SIZES); do \
		echo "== the Rust suite with frames of $$f bytes"; \
		ZS_TEST_FRAME_SIZE=$$f $(CARGO) test --release $(addprefix --test ,$(FRAME_TESTS)); \
	done

lint: fmt-check clippy header-check symbols-check

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# The committed header must equal a fresh generation (build.rs rewrites it when the
# sources say otherwise, and git then sees the difference).
header-check: build
	git diff --exit-code -- $(HEADER) || { echo "include/zsmalloc.h differs from a fresh generation: commit the regenerated header"; exit 1; }

# The shared library exports the functions of include/zsmalloc.h and nothing else: no
# symbol of the Rust runtime or of a dependency can clash with a program's own. The one
# exception is the fault-injection hooks of the C tests (zs_testonly_*, src/frames/os.rs),
# kept out of the header.
symbols-check: build
	@exported=$$(nm -D --defined-only $(LIB_SO) | awk '{print $$3}' | sort); \
	declared=$$(sed -n 's/.*[ *]\(zs_[a-z0-9_]*\)(.*/\1/p' $(HEADER) | sort -u); \
	test -n "$$declared" || { echo "symbols-check: no zs_ function found in $(HEADER)"; exit 1; }; \
	bad=0; \
	for s in $$exported; do case $$s in zs_testonly_*) continue;; esac; echo "$$declared" | grep -qx "$$s" || { echo "symbols-check: $(LIB_SO) exports $$s, not in $(HEADER)"; bad=1; }; done; \
	for s in $$declared; do echo "$$exported" | grep -qx "$$s" || { echo "symbols-check: $(LIB_SO) lacks $$s"; bad=1; }; done; \
	test $$bad = 0 || exit 1; \
	echo "symbols-check: $(LIB_SO) exports exactly the $$(echo "$$declared" | wc -l) zs_* functions of $(HEADER)"

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
