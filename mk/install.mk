# Installation, with a pkg-config file.
#
#   make install [PREFIX=/usr/local] [DESTDIR=]   the shared and static libraries, the
#                                                 header, and zsmalloc.pc
#   make uninstall [PREFIX=...] [DESTDIR=]        removes what install put there
#   make test-install                             installs into a temporary prefix and
#                                                 builds and runs a program with
#                                                 pkg-config's flags (shared and static)
#
# Layout: $(INSTALL_LIBDIR) (default PREFIX/lib) gets the shared library as
# libzsmalloc.so.$(ZS_VERSION) with the links libzsmalloc.so.$(ZS_SOMAJOR) (its soname,
# what programs load) and libzsmalloc.so (what -lzsmalloc finds when linking), and
# libzsmalloc.a and pkgconfig/zsmalloc.pc; $(INSTALL_INCLUDEDIR) (default
# PREFIX/include) gets zsmalloc.h. DESTDIR is prepended to every path written and
# appears in none of the files. Installed as root into the system (no DESTDIR), install
# runs ldconfig so that the loader finds the new soname without an rpath.

PREFIX             ?= /usr/local
DESTDIR            ?=
INSTALL            ?= install
INSTALL_LIBDIR     ?= $(PREFIX)/lib
INSTALL_INCLUDEDIR ?= $(PREFIX)/include
INSTALL_PCDIR      ?= $(INSTALL_LIBDIR)/pkgconfig
PKG_CONFIG         ?= pkg-config

# From Cargo.toml's [package] table; the soname's number is the major (build.rs).
ZS_VERSION     := $(shell sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
ZS_SOMAJOR     := $(firstword $(subst ., ,$(ZS_VERSION)))
ZS_SONAME      := libzsmalloc.so.$(ZS_SOMAJOR)
ZS_REALNAME    := libzsmalloc.so.$(ZS_VERSION)
LDCONFIG       ?= ldconfig
ZS_DESCRIPTION := $(shell sed -n '/^\[package\]/,/^\[/s/^description *= *"\([^"]*\)".*/\1/p' Cargo.toml)
# What a static link of the Rust staticlib needs besides libc (rustc's
# --print native-static-libs for the x86_64/aarch64 Linux GNU targets).
ZS_LIBS_PRIVATE := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

# Paths under the prefix are written relative to it (${prefix}/lib), so that
# `pkg-config --define-prefix` and `--define-variable=prefix=` can relocate the install.
ZS_PC_LIBDIR     = $(patsubst $(PREFIX)/%,$${prefix}/%,$(INSTALL_LIBDIR))
ZS_PC_INCLUDEDIR = $(patsubst $(PREFIX)/%,$${prefix}/%,$(INSTALL_INCLUDEDIR))

TEST_TARGETS += test-install

.PHONY: install uninstall test-install

$(BUILD)/zsmalloc.pc: zsmalloc.pc.in Cargo.toml FORCE_PC
	@mkdir -p $(@D)
	sed -e "s|@PREFIX@|$(PREFIX)|g" \
	    -e 's|@LIBDIR@|$(ZS_PC_LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(ZS_PC_INCLUDEDIR)|g' \
	    -e "s|@VERSION@|$(ZS_VERSION)|g" \
	    -e "s|@DESCRIPTION@|$(ZS_DESCRIPTION)|g" \
	    -e "s|@LIBS_PRIVATE@|$(ZS_LIBS_PRIVATE)|g" \
	    zsmalloc.pc.in > $@
	@! grep -n '@[A-Z_]*@' $@ || { echo "$@: a field of zsmalloc.pc.in was left unfilled"; exit 1; }

# The .pc depends on PREFIX and the directories, which make cannot see: always redo it.
.PHONY: FORCE_PC
FORCE_PC:

install: build $(BUILD)/zsmalloc.pc
	@test -n "$(ZS_VERSION)" || { echo "no version found in Cargo.toml"; exit 1; }
	$(INSTALL) -d $(DESTDIR)$(INSTALL_LIBDIR) $(DESTDIR)$(INSTALL_INCLUDEDIR) $(DESTDIR)$(INSTALL_PCDIR)
	$(INSTALL) -m 0755 $(LIB_SO) $(DESTDIR)$(INSTALL_LIBDIR)/$(ZS_REALNAME)
	ln -sf $(ZS_REALNAME) $(DESTDIR)$(INSTALL_LIBDIR)/$(ZS_SONAME)
	ln -sf $(ZS_SONAME) $(DESTDIR)$(INSTALL_LIBDIR)/libzsmalloc.so
	$(INSTALL) -m 0644 $(LIB_A) $(DESTDIR)$(INSTALL_LIBDIR)/libzsmalloc.a
	$(INSTALL) -m 0644 $(HEADER) $(DESTDIR)$(INSTALL_INCLUDEDIR)/zsmalloc.h
	$(INSTALL) -m 0644 $(BUILD)/zsmalloc.pc $(DESTDIR)$(INSTALL_PCDIR)/zsmalloc.pc
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v $(LDCONFIG) >/dev/null; then $(LDCONFIG); fi

uninstall:
	rm -f $(DESTDIR)$(INSTALL_LIBDIR)/libzsmalloc.so $(DESTDIR)$(INSTALL_LIBDIR)/$(ZS_SONAME) \
	      $(DESTDIR)$(INSTALL_LIBDIR)/$(ZS_REALNAME) $(DESTDIR)$(INSTALL_LIBDIR)/libzsmalloc.a \
	      $(DESTDIR)$(INSTALL_INCLUDEDIR)/zsmalloc.h $(DESTDIR)$(INSTALL_PCDIR)/zsmalloc.pc

# 1. PREFIX=<tmp>/prefix: the files are where they should be (the real file and its two
#    links), the library's soname is libzsmalloc.so.N, pkg-config finds the package and
#    its version, and c_tests/install_smoke.c builds with exactly
#    `pkg-config --cflags --libs zsmalloc` (plus an rpath to pkg-config's libdir),
#    records the soname as what it needs, loads it from the prefix and runs.
# 2. DESTDIR=<tmp>/stage PREFIX=/opt/zsmalloc: everything lands under the stage, the
#    .pc names /opt/zsmalloc and never the stage; relocated with --define-prefix, and
#    with the shared library removed, `pkg-config --static` links the static library
#    into a program that runs without libzsmalloc.so.
# 3. uninstall removes every file.
test-install: build
	@command -v $(PKG_CONFIG) >/dev/null || { echo "pkg-config not found: install it (apt-get install pkg-config)"; exit 1; }
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "== make install PREFIX=$$tmp/prefix"; \
	$(MAKE) --no-print-directory -s install PREFIX=$$tmp/prefix >/dev/null; \
	for f in lib/$(ZS_REALNAME) lib/libzsmalloc.a include/zsmalloc.h lib/pkgconfig/zsmalloc.pc; do \
		test -f $$tmp/prefix/$$f -a ! -L $$tmp/prefix/$$f || { echo "missing after install: $$f"; exit 1; }; \
	done; \
	test "$$(readlink $$tmp/prefix/lib/$(ZS_SONAME))" = $(ZS_REALNAME) || { echo "lib/$(ZS_SONAME) is not a link to $(ZS_REALNAME)"; exit 1; }; \
	test "$$(readlink $$tmp/prefix/lib/libzsmalloc.so)" = $(ZS_SONAME) || { echo "lib/libzsmalloc.so is not a link to $(ZS_SONAME)"; exit 1; }; \
	soname=$$(readelf -d $$tmp/prefix/lib/$(ZS_REALNAME) | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p'); \
	test "$$soname" = $(ZS_SONAME) || { echo "the library's soname is '$$soname', not $(ZS_SONAME)"; exit 1; }; \
	cmp -s $(HEADER) $$tmp/prefix/include/zsmalloc.h || { echo "installed header differs"; exit 1; }; \
	export PKG_CONFIG_PATH=$$tmp/prefix/lib/pkgconfig; \
	$(PKG_CONFIG) --exists --print-errors zsmalloc; \
	v=$$($(PKG_CONFIG) --modversion zsmalloc); \
	test "$$v" = "$(ZS_VERSION)" || { echo "pkg-config says version $$v, Cargo.toml $(ZS_VERSION)"; exit 1; }; \
	libdir=$$($(PKG_CONFIG) --variable=libdir zsmalloc); \
	test "$$libdir" = "$$tmp/prefix/lib" || { echo "pkg-config libdir is $$libdir"; exit 1; }; \
	flags="$$($(PKG_CONFIG) --cflags --libs zsmalloc)"; \
	echo "pkg-config --cflags --libs zsmalloc: $$flags"; \
	$(CC) -std=c11 -Wall -Wextra -Werror -pedantic -o $$tmp/smoke c_tests/install_smoke.c \
		$$flags -Wl,-rpath,$$libdir; \
	needed=$$(readelf -d $$tmp/smoke | sed -n 's/.*(NEEDED).*\[\(libzsmalloc[^]]*\)\]/\1/p'); \
	test "$$needed" = $(ZS_SONAME) || { echo "smoke records '$$needed' as needed, not $(ZS_SONAME)"; exit 1; }; \
	$$tmp/smoke; \
	ldd $$tmp/smoke | grep -q "$(ZS_SONAME) => $$libdir/$(ZS_SONAME)" || { echo "smoke did not load the installed library"; ldd $$tmp/smoke; exit 1; }; \
	echo "== make install DESTDIR=$$tmp/stage PREFIX=/opt/zsmalloc"; \
	$(MAKE) --no-print-directory -s install DESTDIR=$$tmp/stage PREFIX=/opt/zsmalloc >/dev/null; \
	pc=$$tmp/stage/opt/zsmalloc/lib/pkgconfig/zsmalloc.pc; \
	test -f $$tmp/stage/opt/zsmalloc/include/zsmalloc.h; \
	grep -qx 'prefix=/opt/zsmalloc' $$pc || { echo "$$pc: wrong prefix"; cat $$pc; exit 1; }; \
	! grep -q "$$tmp" $$pc || { echo "$$pc names the staging directory"; exit 1; }; \
	test "$$(readlink $$tmp/stage/opt/zsmalloc/lib/$(ZS_SONAME))" = $(ZS_REALNAME); \
	rm $$tmp/stage/opt/zsmalloc/lib/libzsmalloc.so*; \
	export PKG_CONFIG_PATH=$$tmp/stage/opt/zsmalloc/lib/pkgconfig; \
	sflags="$$($(PKG_CONFIG) --define-variable=prefix=$$tmp/stage/opt/zsmalloc --static --cflags --libs zsmalloc)"; \
	echo "pkg-config --static --cflags --libs zsmalloc: $$sflags"; \
	$(CC) -std=c11 -Wall -Wextra -Werror -pedantic -o $$tmp/smoke-static c_tests/install_smoke.c $$sflags; \
	$$tmp/smoke-static; \
	! ldd $$tmp/smoke-static | grep -q libzsmalloc || { echo "the static link still needs libzsmalloc.so"; exit 1; }; \
	$(MAKE) --no-print-directory -s uninstall PREFIX=$$tmp/prefix; \
	left=$$(find $$tmp/prefix -type f -o -type l); \
	test -z "$$left" || { echo "left after uninstall: $$left"; exit 1; }; \
	echo "test-install: ok"
