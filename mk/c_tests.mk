# The C conformance tests (c_tests/*.c) against include/zsmalloc.h and the shared library.
#
#   make test-c-asan      built with AddressSanitizer + UndefinedBehaviorSanitizer, run
#   make test-c-valgrind  built normally (-O2), run under valgrind's memcheck
#   make header-compile   the header compiles as C11 and as C++17, warnings as errors,
#                         and its declarations link against the library from both
#   make test-c-helgrind  test_torture under valgrind's race detector, against a build
#                         of the library that declares its orderings to it
#   make test-torture-long  the torture tests (Rust and C) for longer (ZS_TORTURE_MS,
#                         default 30000 per layout); not part of `make test`
#
# One program per concern: test_api (every function's contract), test_misuse (the
# misuse table and ZSMALLOC_ABORT_ON_MISUSE), test_threads (four threads on shared
# classes), test_compaction (zs_compact, alone and against three busy threads) and
# test_migration (census, adjacency, defragmentation), test_torture (every thread-safe
# call against every other), test_contend (threads freeing, mapping, reading and writing
# the same handles at once, beside compaction, migration and the checker).
# Each prints "N passed, M failed"
# and exits non-zero on any failure. Binaries go to build/c_tests/{asan,valgrind}/.
#
# Also: test_hostile (the misuse suite: every entry point with every kind of bad
# argument, and pools' lifetimes) and test_faults (mmap, mprotect and madvise made to
# fail through the library's test-only hook).
#
#   make test-c-native    test_hostile built without sanitizers and run natively: its
#                         address-reuse rows need freed memory to come back, which
#                         ASan's quarantine and valgrind's free queue prevent
#   make test-c-frames    every C test built without sanitizers and run natively with
#                         frames of 16 and 64 KiB (ZS_TEST_FRAME_SIZE, $(FRAME_SIZES));
#                         the runs above are at the system's page

CXX ?= g++
VALGRIND ?= valgrind

CT_DIR      := $(BUILD)/c_tests
CT_TESTS    := test_api test_misuse test_threads test_compaction test_migration test_torture
CT_TESTS    += test_hostile test_faults test_contend
CT_NATIVE_TESTS := test_hostile
CT_WARN     := -std=c11 -Wall -Wextra -Werror -pedantic
CT_CFLAGS   := $(CT_WARN) -D_POSIX_C_SOURCE=200809L -pthread -Iinclude
CT_LDLIBS   := -L$(LIBDIR) -lzsmalloc -Wl,-rpath,$(abspath $(LIBDIR)) -pthread
CT_ASAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1

CT_LIST = tests="$(CT_TESTS)"

# Any ASan, LeakSanitizer or UBSan report ends the run with a failure. Leak checking
# covers the library too: its allocations go through the intercepted malloc.
CT_ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:strict_init_order=1:check_initialization_order=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

# memcheck: any error fails the run (--error-exitcode), and so does a definite leak
# (--errors-for-leak-kinds=definite). "Still reachable" (and "possibly lost") blocks do
# not: at exit they are crossbeam-epoch's global collector and its per-thread
# registrations, and zspage descriptors retired to it that it has not collected yet,
# all reachable from its statics (some 30 to 90 KB in these runs); they are not leaks,
# and what a destroyed pool must not leave, a definite leak, fails the run. No
# suppression file is needed.
# The pools the tests work in are created with max_pages (see c_tests/check.h): a pool
# without a limit reserves PROT_NONE address space sized to physical memory, which can
# pass valgrind's fixed address-space ceiling (about 128 GiB) on large machines.
# valgrind prints "set address range perms: large range" warnings for those PROT_NONE
# reservations; its log goes to a file, shown when a run fails. Forked children are
# not traced (test_misuse's abort checks exec themselves: they must run natively to
# be observed as one stderr line and SIGABRT). valgrind runs one thread at a time;
# --fair-sched=yes hands the CPU round in turn, so every worker of the thread tests
# makes progress.
CT_VALGRIND_FLAGS := --tool=memcheck --error-exitcode=1 --leak-check=full \
	--errors-for-leak-kinds=definite --show-leak-kinds=definite \
	--child-silent-after-fork=yes --trace-children=no --fair-sched=yes

TEST_TARGETS += test-c-asan test-c-valgrind header-compile test-c-native test-c-helgrind
TEST_TARGETS += test-c-frames

.PHONY: test-c-asan test-c-valgrind header-compile test-c-native test-c-helgrind test-torture-long
.PHONY: test-c-frames

test-c-asan: build
	@mkdir -p $(CT_DIR)/asan
	@$(CT_LIST); set -e; \
	for t in $$tests; do \
		echo "$(CC) $(CT_CFLAGS) $(CT_ASAN) -o $(CT_DIR)/asan/$$t c_tests/$$t.c $(CT_LDLIBS)"; \
		$(CC) $(CT_CFLAGS) $(CT_ASAN) -o $(CT_DIR)/asan/$$t c_tests/$$t.c $(CT_LDLIBS); \
		nm $(CT_DIR)/asan/$$t | grep -q __asan_init || { echo "$$t: the ASan runtime is not linked in"; exit 1; }; \
		nm $(CT_DIR)/asan/$$t | grep -q __ubsan_handle || { echo "$$t: the UBSan runtime is not linked in"; exit 1; }; \
	done; \
	fail=0; \
	for t in $$tests; do \
		echo "== $$t (ASan + UBSan)"; \
		$(CT_ASAN_ENV) $(CT_DIR)/asan/$$t || { echo "$$t: FAILED"; fail=1; }; \
	done; \
	exit $$fail

test-c-valgrind: build
	@command -v $(VALGRIND) >/dev/null || { echo "valgrind not found: install it (apt-get install valgrind)"; exit 1; }
	@mkdir -p $(CT_DIR)/valgrind
	@$(CT_LIST); set -e; \
	for t in $$tests; do \
		echo "$(CC) $(CT_CFLAGS) -O2 -g -o $(CT_DIR)/valgrind/$$t c_tests/$$t.c $(CT_LDLIBS)"; \
		$(CC) $(CT_CFLAGS) -O2 -g -o $(CT_DIR)/valgrind/$$t c_tests/$$t.c $(CT_LDLIBS); \
	done; \
	fail=0; \
	for t in $$tests; do \
		echo "== $$t (valgrind memcheck)"; \
		log=$(CT_DIR)/valgrind/$$t.log; \
		if ZS_TEST_VALGRIND=1 $(VALGRIND) $(CT_VALGRIND_FLAGS) --log-file=$$log $(CT_DIR)/valgrind/$$t; then \
			grep -E 'definitely lost|ERROR SUMMARY' $$log | sed 's/^==[0-9]*== */   valgrind: /'; \
		else \
			echo "$$t: FAILED under valgrind; its log:"; grep -v 'set address range perms' $$log; fail=1; \
		fi; \
	done; \
	exit $$fail

# The header alone, as C11 and C++17; the same file then links against the library
# from both languages (a C++ caller must see unmangled names).
header-compile: build
	@mkdir -p $(CT_DIR)/header
	$(CC) $(CT_WARN) -Iinclude -o $(CT_DIR)/header/c c_tests/header_compile.c $(CT_LDLIBS)
	$(CXX) -std=c++17 -Wall -Wextra -Werror -pedantic -Iinclude -x c++ -o $(CT_DIR)/header/cxx \
		c_tests/header_compile.c -x none $(CT_LDLIBS)
	$(CT_DIR)/header/c
	$(CT_DIR)/header/cxx

test-c-native: build
	@mkdir -p $(CT_DIR)/native
	@set -e; for t in $(CT_NATIVE_TESTS); do \
		echo "$(CC) $(CT_CFLAGS) -O2 -g -o $(CT_DIR)/native/$$t c_tests/$$t.c $(CT_LDLIBS)"; \
		$(CC) $(CT_CFLAGS) -O2 -g -o $(CT_DIR)/native/$$t c_tests/$$t.c $(CT_LDLIBS); \
	done; \
	fail=0; \
	for t in $(CT_NATIVE_TESTS); do \
		echo "== $$t (native)"; \
		$(CT_DIR)/native/$$t || { echo "$$t: FAILED"; fail=1; }; \
	done; \
	exit $$fail

test-c-frames: build
	@mkdir -p $(CT_DIR)/frames
	@$(CT_LIST); set -e; \
	for t in $$tests; do \
		echo "$(CC) $(CT_CFLAGS) -O2 -g -o $(CT_DIR)/frames/$$t c_tests/$$t.c $(CT_LDLIBS)"; \
		$(CC) $(CT_CFLAGS) -O2 -g -o $(CT_DIR)/frames/$$t c_tests/$$t.c $(CT_LDLIBS); \
	done; \
	fail=0; \
	for f in $(FRAME_SIZES); do \
		for t in $$tests; do \
			echo "== $$t (native, frames of $$f bytes)"; \
			ZS_TEST_FRAME_SIZE=$$f $(CT_DIR)/frames/$$t || { echo "$$t at $$f: FAILED"; fail=1; }; \
		done; \
	done; \
	exit $$fail

# helgrind sees pthread's locks and nothing else: not atomics, not parking_lot's
# futex-based locks, not crossbeam-epoch. So the library is built once more, into
# target/helgrind, with --cfg zs_valgrind, which makes it declare every ordering it
# relies on (src/sync.rs, `hg`: lock and unlock, each Release/Acquire pair of its
# protocols, the epoch's guards before deferred frees) and which memory is only ever
# accessed atomically; objects' bytes and every structure behind a lock are checked.
# c_tests/helgrind.supp suppresses what helgrind reports inside parking_lot and
# crossbeam-epoch themselves (each suppression says why). Any other report fails.
HG_TARGET_DIR := target/helgrind
HG_LIBDIR     := $(HG_TARGET_DIR)/release
CT_HELGRIND_FLAGS := --tool=helgrind --error-exitcode=1 --fair-sched=yes \
	--suppressions=c_tests/helgrind.supp --child-silent-after-fork=yes --trace-children=no

test-c-helgrind: build
	@command -v $(VALGRIND) >/dev/null || { echo "valgrind not found: install it (apt-get install valgrind)"; exit 1; }
	RUSTFLAGS="--cfg zs_valgrind" $(CARGO) build --release --lib --target-dir $(HG_TARGET_DIR)
	@$(call soname_link,$(HG_LIBDIR))
	@mkdir -p $(CT_DIR)/helgrind
	$(CC) $(CT_CFLAGS) -O2 -g -o $(CT_DIR)/helgrind/test_torture c_tests/test_torture.c \
		-L$(HG_LIBDIR) -lzsmalloc -Wl,-rpath,$(abspath $(HG_LIBDIR)) -pthread
	@echo "== test_torture (valgrind helgrind)"; \
	log=$(CT_DIR)/helgrind/test_torture.log; \
	if ZS_TEST_VALGRIND=1 $(VALGRIND) $(CT_HELGRIND_FLAGS) --log-file=$$log $(CT_DIR)/helgrind/test_torture; then \
		grep -E 'ERROR SUMMARY' $$log | sed 's/^==[0-9]*== */   helgrind: /'; \
	else \
		echo "test_torture: FAILED under helgrind; its log:"; grep -v 'set address range perms' $$log; exit 1; \
	fi

ZS_TORTURE_MS ?= 30000

test-torture-long: build
	ZS_TORTURE_MS=$(ZS_TORTURE_MS) $(CARGO) test --release --test torture -- --nocapture
	@mkdir -p $(CT_DIR)/plain
	$(CC) $(CT_CFLAGS) -O2 -g -o $(CT_DIR)/plain/test_torture c_tests/test_torture.c $(CT_LDLIBS)
	ZS_TORTURE_MS=$(ZS_TORTURE_MS) $(CT_DIR)/plain/test_torture
