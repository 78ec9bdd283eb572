//! Generates include/zsmalloc.h from the C ABI (src/ffi/) with cbindgen, and rewrites it
//! only when its text changes (so a build never dirties an unchanged checkout; CI
//! compares the committed header with a fresh generation). Gives the shared library its
//! soname.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");

    let v = |k: &str| std::env::var(k).unwrap();

    // The shared library's soname names the ABI's major version, so that a program
    // records libzsmalloc.so.0 and a later incompatible release (libzsmalloc.so.1)
    // cannot be loaded in its place. While the crate is 0.x its major stays 0: the
    // ABI is one series until 1.0. macOS names libraries by install name instead.
    let target_os = v("CARGO_CFG_TARGET_OS");
    if v("CARGO_CFG_TARGET_FAMILY").split(',').any(|f| f == "unix") && target_os != "macos" && target_os != "ios" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libzsmalloc.so.{}", v("CARGO_PKG_VERSION_MAJOR"));
    }

    // The code that runs first in the shared library's text (link/hot-text.ld, made by
    // tools/hot_text.py; docs/nbdkit.md, "The library's code"): the kernel maps 64 KiB
    // of a file around each fault on it, and with the functions that run spread over
    // the text, all of it was resident, the standard library's backtrace printing
    // (half of it, run only by a panic) too. The script adds to the linker's own
    // layout (INSERT), which GNU ld and lld read alike.
    let script = dir.join("link").join("hot-text.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if target_os == "linux" && script.exists() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{}", script.display());
    }

    // The unwinder linked in (libgcc_eh.a, as -static-libgcc does for C), not
    // libgcc_s.so.1 loaded beside the library: only a panic unwinds, and the loaded
    // library's constructor and relocations kept 80 to 100 KiB of it resident in every
    // process. Not bundled into the static library, whose users link their own. Where
    // the compiler has no libgcc_eh.a (clang alone, musl), or when cross-compiling
    // (the host's compiler would name the host's), libgcc_s stays.
    println!("cargo:rerun-if-env-changed=CC");
    if target_os == "linux" && v("CARGO_CFG_TARGET_ENV") == "gnu" && v("HOST") == v("TARGET") {
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        if let Ok(out) = std::process::Command::new(cc).arg("-print-file-name=libgcc_eh.a").output() {
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if let (true, true, Some(libdir)) = (path.is_absolute(), path.exists(), path.parent()) {
                println!("cargo:rustc-link-search=native={}", libdir.display());
                println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
            }
        }
    }

    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(format!(
        r#"
#define ZSMALLOC_VERSION_MAJOR {major}
#define ZSMALLOC_VERSION_MINOR {minor}
#define ZSMALLOC_VERSION_PATCH {patch}
#define ZSMALLOC_VERSION_STRING "{major}.{minor}.{patch}"

/* Whether a handle returned by zs_malloc() is an error (the kernel's IS_ERR_VALUE). */
#define ZS_IS_ERR(h) ((unsigned long)(h) >= (unsigned long)-4095)
/* The errno value of an error handle, positive. */
#define ZS_ERR(h) ((int)-(long)(h))"#,
        major = v("CARGO_PKG_VERSION_MAJOR"),
        minor = v("CARGO_PKG_VERSION_MINOR"),
        patch = v("CARGO_PKG_VERSION_PATCH"),
    ));
    // cbindgen follows the module's `mod` declarations to the files of the C ABI, in
    // their order, which is the header's.
    let bindings = match cbindgen::Builder::new()
        .with_src(dir.join("src").join("ffi").join("mod.rs"))
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            panic!("cbindgen: {e}");
        }
    };
    let mut text = Vec::new();
    bindings.write(&mut text);
    let path = dir.join("include").join("zsmalloc.h");
    if std::fs::read(&path).ok().as_deref() != Some(&text[..]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).expect("write include/zsmalloc.h");
    }
}
