"""Helpers shared by the plugin's tests and its benchmark: an nbdkit server on a Unix
socket, an ext4 image of real files, checksums, and a small test runner.

Run with the system Python (/usr/bin/python3): Debian's libnbd binding (python3-libnbd)
is installed for it alone."""

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import traceback

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NBDKIT = os.environ.get("NBDKIT", "nbdkit")
PLUGIN = os.environ.get("NBDKIT_ZSMALLOC_PLUGIN", os.path.join(ROOT, "build", "nbdkit-zsmalloc-plugin.so"))
# nbdsh and nbdcopy run `python3 -m nbd` / use libnbd: the system's tools first.
TOOL_ENV = dict(os.environ, PATH="/usr/bin:/bin:/usr/sbin:/sbin:" + os.environ.get("PATH", ""))


class Server:
    """nbdkit serving `plugin` with `params` on a Unix socket in its own directory,
    in the foreground, until stop(). `options` go before the plugin (-D, -v)."""

    def __init__(self, *params, plugin=None, options=(), sock=None):
        self.dir = tempfile.mkdtemp(prefix="nbdkit-")
        self.sock = sock or os.path.join(self.dir, "sock")
        self.pidfile = os.path.join(self.dir, "pid")
        self.log = os.path.join(self.dir, "stderr")
        self.cmd = [NBDKIT, "-f", "-U", self.sock, "-P", self.pidfile, "--exit-with-parent",
                    *options, plugin or PLUGIN, *params]
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.pidfile):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nbdkit exited with {self.proc.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"nbdkit did not start: {self.stderr()}")
            time.sleep(0.01)
        self.uri = f"nbd+unix:///?socket={self.sock}"

    def stderr(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def connect(self, meta=False):
        import nbd

        h = nbd.NBD()
        if meta:
            h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        h.connect_uri(self.uri)
        return h

    def rss_kib(self):
        """The server's resident set (VmRSS), in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, timeout=20):
        """SIGTERM, as a service manager stops it; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("nbdkit did not stop on SIGTERM")
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def read_stats(path):
    """A stats=FILE file: {name: int}."""
    with open(path) as f:
        return {k: int(v) for k, v in (line.split() for line in f if line.strip())}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def nbdcopy(src, dst, *extra):
    """Runs nbdcopy; returns the seconds it took."""
    t = time.monotonic()
    subprocess.run(["nbdcopy", *extra, src, dst], check=True, env=TOOL_ENV)
    return time.monotonic() - t


def pick_files(roots, budget, max_file=16 << 20):
    """Regular files under `roots` (symlinks and unreadable files left out), in an
    order fixed by a hash of their path (a reproducible mix of every root), until
    `budget` bytes."""
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in filenames:
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if os.path.isfile(p) and not os.path.islink(p) and 0 < st.st_size <= max_file:
                    found.append((hashlib.sha1(p.encode()).digest(), p, st.st_size))
    found.sort()
    picked, total = [], 0
    for _, p, size in found:
        if total + size > budget:
            continue
        if not os.access(p, os.R_OK):
            continue
        picked.append(p)
        total += size
        if total >= budget - 4096:
            break
    return picked, total


DEFAULT_ROOTS = [ROOT + "/src", ROOT + "/c_tests", ROOT + "/python", "/usr/include", "/usr/share", "/usr/lib",
                 "/usr/bin"]


def make_ext4_image(path, size, data_bytes, workdir, roots=DEFAULT_ROOTS):
    """An ext4 image of `size` bytes made by `mkfs.ext4 -d` from a directory of real
    files copied from `roots` (about `data_bytes` of them); returns
    (files copied in the image as paths relative to its root, bytes of file data)."""
    tree = tempfile.mkdtemp(prefix="ext4-tree-", dir=workdir)
    try:
        files, total = pick_files([r for r in roots if os.path.isdir(r)], data_bytes)
        rel = []
        for i, src in enumerate(files):
            # Flattened into 64 directories: short names, no deep trees to recreate.
            d = f"d{i % 64:02d}"
            os.makedirs(os.path.join(tree, d), exist_ok=True)
            name = f"{d}/{i:06d}-{os.path.basename(src)[:40]}"
            shutil.copyfile(src, os.path.join(tree, name))
            rel.append(name)
        with open(path, "wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard", "-d", tree, path],
                       check=True, env=TOOL_ENV)
        return rel, total
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def run_tests(tests):
    """Runs each (name, function); prints one line per test and the summary line
    "N passed, M failed"; returns the exit status."""
    passed = failed = 0
    for name, fn in tests:
        t = time.monotonic()
        try:
            fn()
        except Exception:
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - t:.1f} s)", flush=True)
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name} ({time.monotonic() - t:.1f} s)", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0
