//! Links Debian's liblc3 (`liblc3-dev`) through pkg-config, and passes its header
//! search path to the crate as `HARK_LC3_INCLUDE` (`:`-separated), which
//! `tests/ffi_signatures.rs` compiles the hand-written declarations against.
//!
//! libopus is linked by `opusic-sys` (no bundled copy: `default-features = false`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    const PACKAGE: &str = "lc3";
    let library = match pkg_config::Config::new().atleast_version("1.0").probe(PACKAGE) {
        Ok(library) => library,
        Err(error) => panic!(
            "hark-codec needs Debian's liblc3-dev (pkg-config `{PACKAGE}`) and libopus-dev; \
             run scripts/setup.sh as root. pkg-config said: {error}"
        ),
    };
    let include = library
        .include_paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    // pkg-config leaves out the default /usr/include; the test needs a value.
    let include = if include.is_empty() { "/usr/include".to_owned() } else { include };
    println!("cargo:rustc-env=HARK_LC3_INCLUDE={include}");
}
