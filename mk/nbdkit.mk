# The nbdkit plugin: a compressed RAM disk served from a pool (nbdkit/).
#
#   make nbdkit-plugin   build/nbdkit-zsmalloc-plugin.so, the library linked into it
#                        (target/release/libzsmalloc.a; NBD_LINK=shared links
#                        target/release/libzsmalloc.so instead, rpath there)
#   make test-nbdkit     the plugin through real clients: nbdcopy, nbdsh, fio (about
#                        half a minute; part of `make test`)
#   make test-nbdkit-valgrind  the same tests but the timing-bound one, each server
#                        under valgrind's memcheck (some minutes; not in `make test`)
#   make bench-nbd       the plugin against nbdkit's memory plugin on an ext4 image of
#                        real files; writes bench/results/nbdkit.md (some minutes)
#   make hot-text        regenerates link/hot-text.ld, the order of the shared library's
#                        text (build.rs), from callgrind profiles of a small disk's fill
#                        (bench/nbd_fill.py) and of the plugin's tests
#   make lz4-accel       lz4's instructions (cachegrind) and bytes stored at each
#                        acceleration of LZ4_ACCELS, over every eighth unit of the image
#                        bench/nbd_fill.py makes (run it first; NBD_IMAGE to choose)
#   make install         also installs the plugin into NBDKIT_PLUGINDIR (linked with
#                        NBD_LINK=shared: relinked with an rpath to INSTALL_LIBDIR so that
#                        it finds the installed library)
#
# It needs nbdkit's plugin header and the lz4 and zstd libraries (Debian: nbdkit
# nbdkit-plugin-dev liblz4-dev libzstd-dev); the tests also libnbd-bin,
# python3-libnbd, fio and e2fsprogs. The tests and the benchmark run with the
# system's Python, for which Debian installs the libnbd binding (the `nbd` module).

NBDKIT     ?= nbdkit
SYS_PYTHON ?= /usr/bin/python3

NBD_SRC    := nbdkit/zsmalloc-plugin.c
NBD_OBJ    := $(BUILD)/nbdkit-zsmalloc-plugin.o
NBD_PLUGIN := $(BUILD)/nbdkit-zsmalloc-plugin.so
NBD_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror -fPIC -Iinclude
# liblz4 is opened by the plugin for lz4 disks only (dlopen; -ldl where glibc is older
# than 2.34), so a zstd disk does not map it.
NBD_SYSLIBS := -lzstd -pthread -Wl,--push-state,--as-needed -lrt -lm -ldl -Wl,--pop-state

# How the plugin gets the library (docs/nbdkit.md, "One file of code"). `static`, the
# default where the Rust toolchain has its lld: the static library linked into the
# plugin, so that a server maps one file of code rather than two, and needs no
# libzsmalloc.so at run time. Linked as the shared library is: by rust-lld, with the
# same order of the text (link/hot-text.ld, which puts the plugin's own code first),
# the unwinder linked in (-static-libgcc), what nothing calls left out (--gc-sections),
# and no symbol of the library exported (--exclude-libs): the plugin's dynamic symbols
# are nbdkit's entry point and the tests' hook. Its relative relocations packed
# (DT_RELR, where glibc is 2.36 or later: 0.3 KiB instead of 23) and its unwinding tables after the text
# (link/plugin-eh.ld), so that the first segment holds the headers, the dynamic
# symbols, the relocations and .rodata alone, in 44 KiB; each segment aligned to 64
# KiB in the file and in memory (glibc maps the file so aligned), so that the kernel's
# 64 KiB windows around a fault start where the segments do and the text a disk runs
# takes two of them. `shared`: linked with target/release/libzsmalloc.so, rpath to it
# (or to INSTALL_LIBDIR when installed).
RUSTC         ?= rustc
NBD_LLD_DIR    = $(shell $(RUSTC) --print sysroot 2>/dev/null)/lib/rustlib/$(shell $(RUSTC) -vV 2>/dev/null | sed -n 's/^host: //p')/bin/gcc-ld
NBD_LLD        = $(if $(wildcard $(NBD_LLD_DIR)/ld.lld),-B$(NBD_LLD_DIR) -fuse-ld=lld)
NBD_LINK      ?= $(if $(NBD_LLD),static,shared)
# Packed relocations only where the C library reads them (glibc 2.36 and later): an
# older dynamic loader refuses a plugin that has them.
NBD_GLIBC_MINOR := $(shell getconf GNU_LIBC_VERSION 2>/dev/null | sed -n 's/^glibc 2\.\([0-9]*\).*/\1/p')
NBD_RELR       = $(if $(shell test "$(NBD_GLIBC_MINOR)" -ge 36 2>/dev/null && echo y),-Wl$(nbd_comma)-z$(nbd_comma)pack-relative-relocs)
NBD_LIBS_static = $(LIB_A) $(NBD_LLD) -static-libgcc -Wl,--gc-sections -Wl,--exclude-libs,ALL \
	$(NBD_RELR) -Wl,-z,separate-loadable-segments -Wl,-z,max-page-size=65536 \
	-Wl,-T,link/hot-text.ld -Wl,-T,link/plugin-eh.ld
NBD_LIBS_shared = -L$(LIBDIR) -lzsmalloc
# $(call nbd_link,OUT,RPATH): the plugin linked from $(NBD_OBJ) as NBD_LINK says; RPATH
# the directory of the shared library when it is linked with it. nbd_link_as takes the
# link (static or shared) as a third argument.
nbd_comma := ,
nbd_link_as = $(CC) -shared -o $(1) $(NBD_OBJ) $(NBD_LIBS_$(3)) $(NBD_SYSLIBS) \
	$(if $(filter shared,$(3)),-Wl$(nbd_comma)-rpath$(nbd_comma)$(2))
nbd_link = $(call nbd_link_as,$(1),$(2),$(NBD_LINK))

# nbdkit's own plugin directory, where `nbdkit zsmalloc` looks. A system prefix installs
# there; any other prefix (a user's, a staging one) keeps the plugin under its own
# lib/, where nbdkit takes it by path.
NBDKIT_SYSTEM_PLUGINDIR = $(shell $(NBDKIT) --dump-config 2>/dev/null | sed -n 's/^plugindir=//p')
NBDKIT_PLUGINDIR ?= $(or $(if $(filter /usr /usr/local,$(PREFIX)),$(NBDKIT_SYSTEM_PLUGINDIR)),$(INSTALL_LIBDIR)/nbdkit/plugins)

NBD_HEADERS_OK = printf '\#include <nbdkit-plugin.h>\n\#include <lz4.h>\n\#include <zstd.h>\n' | \
	$(CC) -E -x c - >/dev/null 2>&1
NBD_NEED := the nbdkit plugin needs nbdkit-plugin.h, lz4.h and zstd.h: apt-get install nbdkit-plugin-dev liblz4-dev libzstd-dev

TEST_TARGETS += test-nbdkit

.PHONY: nbdkit-plugin test-nbdkit test-nbdkit-valgrind bench-nbd hot-text lz4-accel install-nbdkit-plugin uninstall-nbdkit-plugin

# Built every time (one file): its inputs come from `build`, which always runs.
nbdkit-plugin: build
	@$(NBD_HEADERS_OK) || { echo "$(NBD_NEED)"; exit 1; }
	@case "$(NBD_LINK)" in static|shared) ;; *) echo "NBD_LINK is static or shared"; exit 1;; esac
	@mkdir -p $(BUILD)
	$(CC) $(NBD_CFLAGS) -c -o $(NBD_OBJ) $(NBD_SRC)
	$(call nbd_link,$(NBD_PLUGIN),$(abspath $(LIBDIR)))

test-nbdkit: nbdkit-plugin
	@for t in $(NBDKIT) nbdcopy nbdsh fio mkfs.ext4; do \
		command -v $$t >/dev/null || { echo "test-nbdkit needs $$t: apt-get install nbdkit libnbd-bin python3-libnbd fio e2fsprogs"; exit 1; }; \
	done
	@$(SYS_PYTHON) -c "import nbd" 2>/dev/null || { echo "test-nbdkit needs $(SYS_PYTHON) with the nbd module: apt-get install python3-libnbd"; exit 1; }
	cd nbdkit/tests && NBD_LINK=$(NBD_LINK) $(SYS_PYTHON) test_plugin.py

# Every test but the concurrent one, which counts rounds done in a fixed time, and the
# one that measures the server's RSS (valgrind's malloc keeps what it frees).
NBD_VALGRIND_TESTS := image variants nbdsh fio mem_limit auto_compaction restart bad_parameters \
	compressor stats concurrent_flushes extents out_of_range lz4_units zstd_default_unit \
	zstd_units_split_in_two zstd_frames_without_magic only_the_disks_compressor

test-nbdkit-valgrind: nbdkit-plugin
	@command -v $(VALGRIND) >/dev/null || { echo "valgrind not found: apt-get install valgrind"; exit 1; }
	@set -e; logs=$$(mktemp -d); trap 'rm -rf "$$logs"' EXIT; \
	cd nbdkit/tests && NBD_LINK=$(NBD_LINK) VALGRIND_LOGS=$$logs NBDKIT=$(abspath nbdkit/tests/valgrind-nbdkit.sh) \
		$(SYS_PYTHON) test_plugin.py $(NBD_VALGRIND_TESTS); \
	bad=$$(find $$logs -name 'vg.*.log' -size +0); \
	if [ -n "$$bad" ]; then cat $$bad; echo "memcheck reported errors"; exit 1; fi; \
	echo "memcheck: $$(ls $$logs | wc -l) servers, no error"

bench-nbd: nbdkit-plugin
	cd nbdkit/tests && $(SYS_PYTHON) ../../bench/nbd_bench.py --out $(abspath bench/results/nbdkit.md)

# The functions of the library that run, gathered at the start of its text: the kernel
# maps 64 KiB of a file around each fault, so functions spread over the text made all
# of it resident (docs/nbdkit.md, "The library's code"). Run after changes that add or
# rename functions that run; the profiled library names their symbols. First come the
# functions of a disk's life (bench/nbd_fill.py on a small image: filled, flushed,
# compacted, copied out, with zstd and with lz4), then those of the tests. The tests
# that count time or RSS are left out (callgrind runs a server some 50 times slower).
# The servers run a plugin linked with the shared library (NBD_LINK=shared), whose
# functions the profiles name by the library's file; the plugin's own code is first
# in the text whatever the profiles (link/hot-text.ld).
HOT_TEXT_TESTS := image variants nbdsh mem_limit restart auto_compaction stats concurrent_flushes \
	extents out_of_range lz4_units zstd_default_unit zstd_units_split_in_two zstd_frames_without_magic
hot-text: nbdkit-plugin
	@command -v $(VALGRIND) >/dev/null || { echo "valgrind not found: apt-get install valgrind"; exit 1; }
	@set -e; prof=$$(mktemp -d); trap 'rm -rf "$$prof"' EXIT; \
	cp $(LIB_SO) $$prof/libzsmalloc.so; \
	$(call nbd_link_as,$$prof/nbdkit-zsmalloc-plugin.so,$(abspath $(LIBDIR)),shared); \
	export NBDKIT_ZSMALLOC_PLUGIN=$$prof/nbdkit-zsmalloc-plugin.so; \
	printf '#!/bin/sh\nexec $(VALGRIND) --tool=callgrind --demangle=no --compress-strings=no --callgrind-out-file=%s/cg.%%p.out $(NBDKIT) "$$@"\n' "$$prof" >$$prof/nbdkit; \
	chmod +x $$prof/nbdkit; \
	(cd nbdkit/tests && NBDKIT=$$prof/nbdkit $(SYS_PYTHON) ../../bench/nbd_fill.py --workdir $$prof/life \
		--image-mib 96 --data-mib 40 plugin:compressor=zstd plugin:compressor=lz4 >/dev/null); \
	mv $$prof/cg.*.out $$prof/life/; \
	(cd nbdkit/tests && NBD_LINK=shared NBDKIT=$$prof/nbdkit $(SYS_PYTHON) test_plugin.py $(HOT_TEXT_TESTS)); \
	$(SYS_PYTHON) tools/hot_text.py link/hot-text.ld $$prof/libzsmalloc.so $$prof/life/cg.*.out --then $$prof/cg.*.out

# Acceleration 0 is the loop without compression: subtract its count from the others'.
NBD_IMAGE  ?= /tmp/nbd-fill/image-736-500.ext4
LZ4_ACCELS ?= 0 1 4 5 6 8
lz4-accel:
	@test -f $(NBD_IMAGE) || { echo "$(NBD_IMAGE): run bench/nbd_fill.py first (see docs/nbdkit.md)"; exit 1; }
	@mkdir -p $(BUILD)
	$(CC) -std=gnu11 -O2 -Wall -Wextra -Werror -o $(BUILD)/lz4_accel bench/lz4_accel.c -llz4
	@for a in $(LZ4_ACCELS); do \
		$(VALGRIND) --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
			$(BUILD)/lz4_accel $(NBD_IMAGE) $$a 8 2>&1 | grep -E '^acceleration|I +refs'; \
	done

# Part of `make install` where the headers are there; skipped with a note otherwise, so
# that the library installs on a machine without nbdkit.
install: install-nbdkit-plugin
uninstall: uninstall-nbdkit-plugin

install-nbdkit-plugin: build
	@if ! $(NBD_HEADERS_OK); then echo "nbdkit plugin not installed: $(NBD_NEED)"; exit 0; fi; \
	set -e; mkdir -p $(BUILD)/nbdkit-install; \
	echo "$(CC) ... -o $(BUILD)/nbdkit-install/nbdkit-zsmalloc-plugin.so (NBD_LINK=$(NBD_LINK))"; \
	$(CC) $(NBD_CFLAGS) -c -o $(NBD_OBJ) $(NBD_SRC); \
	$(call nbd_link,$(BUILD)/nbdkit-install/nbdkit-zsmalloc-plugin.so,$(INSTALL_LIBDIR)); \
	$(INSTALL) -d $(DESTDIR)$(NBDKIT_PLUGINDIR); \
	$(INSTALL) -m 0755 $(BUILD)/nbdkit-install/nbdkit-zsmalloc-plugin.so \
		$(DESTDIR)$(NBDKIT_PLUGINDIR)/nbdkit-zsmalloc-plugin.so

uninstall-nbdkit-plugin:
	rm -f $(DESTDIR)$(NBDKIT_PLUGINDIR)/nbdkit-zsmalloc-plugin.so
