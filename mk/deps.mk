# The Debian packages the tests and the benchmarks use.
#
#   make deps   as root on Debian: installs those of $(DEB_DEPS) that are missing
#               (apt-get); elsewhere, or not as root, names them and what to run
#
# valgrind, pkg-config, g++ and zlib1g-dev serve the C tests, the install test and the
# C example; libjemalloc2 and libmimalloc2.0 put jemalloc and mimalloc beside glibc
# malloc in `make run` and `make bench`; python3-venv is needed only where the Python
# is Debian's own (its venv module is split out). The nbdkit plugin builds against
# nbdkit-plugin-dev, liblz4-dev and libzstd-dev, and its tests drive it with nbdkit,
# nbdcopy and nbdsh (libnbd-bin, python3-libnbd for the system Python), fio and
# mkfs.ext4 (e2fsprogs).

DEB_DEPS := valgrind pkg-config g++ zlib1g-dev binutils libjemalloc2 libmimalloc2.0 \
	nbdkit nbdkit-plugin-dev libnbd-bin python3-libnbd fio liblz4-dev libzstd-dev e2fsprogs

.PHONY: deps

deps:
	@need=""; \
	for p in $(DEB_DEPS); do \
		dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || need="$$need $$p"; \
	done; \
	$(PYTHON) -c "import ensurepip" 2>/dev/null || need="$$need python3-venv"; \
	if [ -z "$$need" ]; then echo "make deps: every package is installed"; exit 0; fi; \
	if [ ! -r /etc/debian_version ] || ! command -v apt-get >/dev/null; then \
		echo "make deps: not a Debian system; install the equivalents of:$$need"; exit 1; \
	fi; \
	if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root (sudo make deps) to install:$$need"; exit 1; fi; \
	echo "make deps: installing$$need"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need >/dev/null
