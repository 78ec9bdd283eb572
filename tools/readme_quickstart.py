#!/usr/bin/env python3
"""Runs the README's quick starts as a reader would: every command and code block of
the "## Quick start" section, in order, as typed into a fresh shell.

Each "###" part (C, Rust, Python) becomes one bash script that starts in the checkout
with a new, empty HOME in a temporary folder and stops at the first failing command:
a ```sh block is its commands as written; a ```c, ```rust or ```python block whose
first line names a file (/* hello.c */, // src/main.rs, # hello.py) is saved under
that name in the shell's current folder, as a reader saves it in an editor. A ```c
block that names no file is a fragment: it must compile and run as the body of main()
with the quick start's headers. Blocks without a language (program output) are not
run.

Usage: readme_quickstart.py [--keep] [PART...]   (PART: C, Rust, Python; default all)

The environment may point the commands at local copies of what they would fetch
(PIP_NO_INDEX and PIP_FIND_LINKS for pip, CARGO_NET_OFFLINE for cargo): the Makefile's
test-readme does, so that the run needs no network once the caches are filled.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
README = os.path.join(ROOT, "README.md")
FILE_NAME = re.compile(r"^\s*(?:/\*|//|#)\s*([\w./-]+\.(?:c|rs|py))\s*(?:\*/)?\s*$")
FRAGMENT_MAIN = """#include <stdio.h>
#include <string.h>
#include <zsmalloc.h>

int main(void)
{{
{body}
    return 0;
}}
"""


def quick_start_parts(text):
    """{part name: [(language, code)]} for the "###" parts of "## Quick start"."""
    m = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.M | re.S)
    if not m:
        raise SystemExit("README.md has no '## Quick start' section")
    parts = {}
    name = None
    lines = m.group(1).split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        h = re.match(r"^### (.+)$", line)
        if h:
            name = h.group(1).strip()
            parts[name] = []
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            lang = fence.group(1)
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            if lang and name is not None:
                parts[name].append((lang, "\n".join(lines[i + 1 : j]) + "\n"))
            i = j
        i += 1
    return parts


def script_for(blocks, work):
    """The bash script that types `blocks` into a shell."""
    out = ["set -euo pipefail", f"cd {sh_quote(ROOT)}"]
    for n, (lang, code) in enumerate(blocks):
        if lang in ("sh", "bash", "shell", "console"):
            out.append(code)
            continue
        first = code.split("\n", 1)[0]
        m = FILE_NAME.match(first)
        if m:
            name = m.group(1)
        elif lang == "c":
            name = os.path.join(work, f"fragment{n}.c")
            code = FRAGMENT_MAIN.format(body=code)
            out.append(save(name, code))
            exe = os.path.join(work, f"fragment{n}")
            out.append(
                f"cc -std=c11 -Wall -Wextra -Wno-unused-variable -o {sh_quote(exe)} {sh_quote(name)} "
                "$(pkg-config --cflags --libs zsmalloc) -Wl,-rpath,$(pkg-config --variable=libdir zsmalloc)"
            )
            out.append(sh_quote(exe))
            continue
        else:
            raise SystemExit(f"a ```{lang} block of the quick start names no file on its first line:\n{code}")
        out.append(f"mkdir -p \"$(dirname {sh_quote(name)})\"")
        out.append(save(name, code))
    return "\n".join(out) + "\n"


def save(name, code):
    marker = "ZS_README_EOF"
    assert marker not in code
    return f"cat > {sh_quote(name)} <<'{marker}'\n{code}{marker}"


def sh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def main(argv):
    keep = "--keep" in argv
    wanted = [a for a in argv if a != "--keep"]
    with open(README) as f:
        parts = quick_start_parts(f.read())
    if not parts:
        raise SystemExit("no '###' part in the README's quick start")
    unknown = set(wanted) - set(parts)
    if unknown:
        raise SystemExit(f"no quick start part named {sorted(unknown)}; there are {sorted(parts)}")
    tmp = tempfile.mkdtemp(prefix="zs-readme-")
    failed = []
    try:
        for name, blocks in parts.items():
            if wanted and name not in wanted:
                continue
            if not blocks:
                raise SystemExit(f"the quick start part {name!r} has no block to run")
            work = os.path.join(tmp, name)
            home = os.path.join(work, "home")
            os.makedirs(home)
            script = script_for(blocks, work)
            with open(os.path.join(work, "quickstart.sh"), "w") as f:
                f.write(script)
            env = dict(os.environ, HOME=home)
            # Tools found through HOME keep theirs: the toolchain is not the reader's
            # to install again.
            env.setdefault("CARGO_HOME", os.path.join(os.path.expanduser("~"), ".cargo"))
            env.setdefault("RUSTUP_HOME", os.path.join(os.path.expanduser("~"), ".rustup"))
            # What a fresh shell would not have: a make that runs this one passes its own.
            for var in ("PKG_CONFIG_PATH", "VIRTUAL_ENV", "PYTHONPATH", "ZSMALLOC_LIB", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
                env.pop(var, None)
            print(f"== quick start: {name} ({len(blocks)} blocks)", flush=True)
            r = subprocess.run(["bash", "-x", os.path.join(work, "quickstart.sh")], env=env, cwd=ROOT)
            if r.returncode:
                print(f"quick start {name}: FAILED (exit {r.returncode}); script: {work}/quickstart.sh")
                failed.append(name)
    finally:
        if keep or failed:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp)
    ran = len([n for n in parts if not wanted or n in wanted])
    print(f"{ran - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
