//! Links PocketSphinx through pkg-config when the `pocketsphinx` feature is on;
//! without it this script does nothing and no C library is needed.
//!
//! It compiles `csrc/hark_ps.c` (a CMN reset the C API lacks) and
//! passes three facts about the installed package to the crate:
//! - `HARK_POCKETSPHINX_MODELDIR`: the packaged models (`pkg-config --variable=modeldir`);
//! - `HARK_POCKETSPHINX_DATADIR`: the package's data directory (test audio lives under it);
//! - `HARK_POCKETSPHINX_INCLUDE`: the header search path, `:`-separated, which
//!   `tests/ffi_signatures.rs` compiles the hand-written declarations against.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "pocketsphinx")]
    link_pocketsphinx();
}

#[cfg(feature = "pocketsphinx")]
fn link_pocketsphinx() {
    const PACKAGE: &str = "pocketsphinx";
    let library = match pkg_config::Config::new().atleast_version("5prealpha").probe(PACKAGE) {
        Ok(library) => library,
        Err(error) => panic!(
            "the `pocketsphinx` feature needs Debian's libpocketsphinx-dev \
             (pkg-config `{PACKAGE}`, `sphinxbase`); run scripts/setup.sh as root. \
             pkg-config said: {error}"
        ),
    };
    let include = library
        .include_paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    println!("cargo:rustc-env=HARK_POCKETSPHINX_INCLUDE={include}");

    println!("cargo:rerun-if-changed=csrc/hark_ps.c");
    println!("cargo:rerun-if-changed=csrc/hark_ps.h");
    cc::Build::new()
        .file("csrc/hark_ps.c")
        .includes(&library.include_paths)
        .warnings(true)
        .warnings_into_errors(true)
        .compile("hark_ps");
    for (variable, env) in
        [("modeldir", "HARK_POCKETSPHINX_MODELDIR"), ("datadir", "HARK_POCKETSPHINX_DATADIR")]
    {
        let value = pkg_config::get_variable(PACKAGE, variable)
            .unwrap_or_else(|error| panic!("pkg-config --variable={variable} {PACKAGE}: {error}"));
        println!("cargo:rustc-env={env}={value}");
    }
}
