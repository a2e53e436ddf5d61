//! Checks the hand-written liblc3 declarations in `src/lc3/ffi.rs` against the
//! installed `lc3.h`.
//!
//! `hark_fakes::ffi` does the checking (see there); this file gives the C spelling
//! of liblc3's types and its header. A second test feeds it wrong declarations to
//! prove it can fail.

use std::path::Path;

use hark_fakes::ffi::{self, Decl};

const SOURCE: &str = include_str!("../src/lc3/ffi.rs");

/// The C spelling of a Rust type that is not a pointer.
fn base(rust: &str) -> String {
    match rust {
        "c_int" => "int",
        "c_uint" => "unsigned",
        "c_void" => "void",
        "lc3_decoder" => "struct lc3_decoder",
        "lc3_encoder" => "struct lc3_encoder",
        "lc3_pcm_format" => "enum lc3_pcm_format",
        other => panic!("no C spelling for Rust type `{other}`: extend base()"),
    }
    .to_owned()
}

/// `#include <lc3.h>`, and the enum the Rust side passes as an unsigned int.
const PRELUDE: &str = "#include <lc3.h>\n\n\
    _Static_assert(sizeof(enum lc3_pcm_format) == sizeof(unsigned), \"enum size\");\n\
    _Static_assert(LC3_PCM_FORMAT_S16 == 0, \"S16 is 0\");\n\
    _Static_assert(_Generic((enum lc3_pcm_format)0, unsigned: 1, default: 0), \"enum is unsigned\");\n";

fn c_check(decls: &[Decl]) -> String {
    ffi::c_check(PRELUDE, decls, &base)
}

fn compile(tag: &str, source: &str) -> Result<(), String> {
    let includes: Vec<&str> = env!("HARK_LC3_INCLUDE").split(':').collect();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    ffi::compile(dir, &format!("lc3_signatures_{tag}"), source, "c11", &includes)
}

fn declarations() -> Vec<Decl> {
    ffi::declarations(SOURCE)
}

#[test]
fn declarations_match_the_header() {
    let decls = declarations();
    for needed in [
        "lc3_frame_samples",
        "lc3_decoder_size",
        "lc3_setup_decoder",
        "lc3_decode",
        "lc3_encoder_size",
        "lc3_setup_encoder",
        "lc3_encode",
    ] {
        assert!(decls.iter().any(|d| d.name == needed), "{needed} not declared");
    }
    let source = c_check(&decls);
    if let Err(errors) = compile("actual", &source) {
        panic!("declarations in src/lc3/ffi.rs do not match lc3.h:\n{errors}\n{source}");
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
        ("return type", mutate("lc3_decoder_size", &|d| d.ret = Some("c_int".into()))),
        ("parameter type", mutate("lc3_decode", &|d| d.params[3] = "c_int".into())),
        ("constness", mutate("lc3_decode", &|d| d.params[1] = "*mut c_void".into())),
        ("handle type", mutate("lc3_encode", &|d| d.params[0] = "*mut lc3_decoder".into())),
        (
            "missing parameter",
            mutate("lc3_setup_decoder", &|d| {
                d.params.remove(2);
            }),
        ),
        ("no such function", mutate("lc3_decode", &|d| d.name = "lc3_decode_frame".into())),
    ];
    for (what, (name, wrong)) in cases {
        match compile("wrong", &c_check(&wrong)) {
            Ok(()) => panic!("a wrong {what} compiled:\n{}", c_check(&wrong)),
            // It failed on the declaration we broke, not on something else.
            Err(errors) => assert!(errors.contains(&name), "{what}: {errors}"),
        }
    }
}
