//! Checks the hand-written C declarations in `src/sphinx.rs` against the
//! installed PocketSphinx headers.
//!
//! `hark_fakes::ffi` does the checking (see there); this file gives the C spelling
//! of PocketSphinx's types and its headers. A second test feeds it wrong
//! declarations to prove it can fail.
#![cfg(feature = "pocketsphinx")]

use std::path::Path;

use hark_fakes::ffi::{self, Decl};

const SOURCE: &str = include_str!("../src/sphinx.rs");

/// Opaque C types the declarations may name, spelled as in C.
const OPAQUE: &[&str] = &["ps_decoder_t", "ps_seg_t", "cmd_ln_t", "arg_t", "cmn_t", "FILE"];

/// The C spelling of a Rust type that is not a pointer.
fn base(rust: &str) -> String {
    match rust {
        "c_int" => "int",
        "c_char" => "char",
        "c_long" => "long",
        "c_void" => "void",
        // The header's own fixed-width names (sphinxbase/prim_type.h).
        "i32" => "int32",
        "i16" => "int16",
        "u8" => "uint8",
        "usize" => "size_t",
        "f64" => "double",
        // Where the header says `mfcc_t`, this holds only in a floating-point
        // build of sphinxbase (Debian's); a fixed-point one would fail here.
        "f32" => "float",
        other if OPAQUE.contains(&other) => other,
        other => panic!("no C spelling for Rust type `{other}`: extend base()"),
    }
    .to_owned()
}

const PRELUDE: &str =
    "#include <stdio.h>\n#include <pocketsphinx.h>\n#include <sphinxbase/err.h>\n\
    #include <sphinxbase/cmn.h>\n#include \"hark_ps.h\"\n\n";

fn c_check(decls: &[Decl]) -> String {
    ffi::c_check(PRELUDE, decls, &base)
}

fn compile(tag: &str, source: &str) -> Result<(), String> {
    let mut includes = vec![concat!(env!("CARGO_MANIFEST_DIR"), "/csrc")];
    includes.extend(env!("HARK_POCKETSPHINX_INCLUDE").split(':'));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    ffi::compile(dir, &format!("ffi_signatures_{tag}"), source, "c99", &includes)
}

fn declarations() -> Vec<Decl> {
    ffi::declarations(SOURCE)
}

#[test]
fn declarations_match_the_header() {
    let decls = declarations();
    for needed in [
        "ps_init",
        "ps_free",
        "cmd_ln_parse_r",
        "cmd_ln_free_r",
        "ps_start_utt",
        "ps_process_raw",
        "ps_end_utt",
        "ps_get_in_speech",
        "ps_seg_iter",
        "ps_seg_next",
        "ps_seg_word",
        "ps_seg_frames",
        "hark_ps_live_cmn",
    ] {
        assert!(decls.iter().any(|d| d.name == needed), "{needed} not declared");
    }
    let source = c_check(&decls);
    if let Err(errors) = compile("actual", &source) {
        panic!("declarations in src/sphinx.rs do not match the header:\n{errors}\n{source}");
    }
}

#[test]
fn a_wrong_declaration_is_caught() {
    let decls = declarations();
    let mutate = |name: &str, change: &dyn Fn(&mut Decl)| {
        let mut wrong = decls.clone();
        let decl = wrong.iter_mut().find(|d| d.name == name).unwrap();
        change(decl);
        (decl.name.clone(), wrong)
    };
    let cases: Vec<(&str, (String, Vec<Decl>))> = vec![
        ("return type", mutate("ps_get_in_speech", &|d| d.ret = Some("i32".into()))),
        ("parameter width", mutate("ps_process_raw", &|d| d.params[2] = "i32".into())),
        ("constness", mutate("ps_process_raw", &|d| d.params[1] = "*mut i16".into())),
        (
            "missing parameter",
            mutate("ps_seg_frames", &|d| {
                d.params.pop();
            }),
        ),
        ("no such function", mutate("ps_free", &|d| d.name = "ps_free_all".into())),
    ];
    for (what, (name, wrong)) in cases {
        match compile("wrong", &c_check(&wrong)) {
            Ok(()) => panic!("a wrong {what} compiled:\n{}", c_check(&wrong)),
            // It failed on the declaration we broke, not on something else.
            Err(errors) => assert!(errors.contains(&name), "{what}: {errors}"),
        }
    }
}
