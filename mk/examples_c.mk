# The C example: examples/c/page_store.c, a compressed page store (zlib + zsmalloc).
#
#   make test-examples-c   builds it against include/zsmalloc.h and the shared library,
#                          runs it (it exits non-zero on any mismatch)
#
# It needs zlib's header and library (Debian/Ubuntu: apt-get install zlib1g-dev).

EXC_DIR    := $(BUILD)/examples
EXC_CFLAGS := -std=c11 -Wall -Wextra -Werror -pedantic -O2 -g -Iinclude
EXC_LDLIBS := -L$(LIBDIR) -lzsmalloc -Wl,-rpath,$(abspath $(LIBDIR)) -lz

TEST_TARGETS += test-examples-c

.PHONY: test-examples-c zlib-check

zlib-check:
	@printf '#include <zlib.h>\nint main(void) { return zlibVersion() == 0; }\n' | \
		$(CC) -x c - -o /dev/null -lz >/dev/null 2>&1 || \
		{ echo "examples/c/page_store.c needs zlib (zlib.h and -lz): install zlib1g-dev (apt-get install zlib1g-dev)"; exit 1; }

# Built every time (one small file): its inputs come from `build`, which always runs.
test-examples-c: build zlib-check
	@mkdir -p $(EXC_DIR)
	$(CC) $(EXC_CFLAGS) -o $(EXC_DIR)/page_store examples/c/page_store.c $(EXC_LDLIBS)
	$(EXC_DIR)/page_store
