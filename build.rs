//! Generates include/zsmalloc.h from the C ABI (src/ffi.rs) with cbindgen, and rewrites it
//! only when its text changes (so a build never dirties an unchanged checkout; CI
//! compares the committed header with a fresh generation).

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");

    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let v = |k: &str| std::env::var(k).unwrap();
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
    let bindings =
        match cbindgen::Builder::new().with_src(dir.join("src").join("ffi.rs")).with_config(config).generate() {
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
