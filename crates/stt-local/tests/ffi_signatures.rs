//! Checks the hand-written C declarations in `src/sphinx.rs` against the
//! installed PocketSphinx headers.
//!
//! The test reads the `extern "C"` block, turns each declaration into a C
//! function-pointer type, and compiles `TYPE check = function;` for each with
//! the system C compiler (`$CC`, default `cc`) against the header pkg-config
//! names. Any difference in a parameter or return type (including `const`) is
//! an incompatible-pointer error, so the compile fails. A second test feeds it
//! wrong declarations to prove it can fail.
#![cfg(feature = "pocketsphinx")]

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = include_str!("../src/sphinx.rs");

/// Opaque C types the declarations may name, spelled as in C.
const OPAQUE: &[&str] = &["ps_decoder_t", "ps_seg_t", "cmd_ln_t", "arg_t", "cmn_t", "FILE"];

#[derive(Clone, Debug)]
struct Decl {
    name: String,
    params: Vec<String>,
    ret: Option<String>,
}

/// The text inside `extern "C" { … }`, comments removed.
fn extern_block(source: &str) -> String {
    let start = source.find("extern \"C\" {").expect("src/sphinx.rs has an extern \"C\" block");
    let body = &source[start + "extern \"C\" {".len()..];
    let end = body.find('}').expect("extern block is closed");
    body[..end]
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse(block: &str) -> Vec<Decl> {
    block
        .split(';')
        .map(|item| item.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|item| !item.is_empty())
        .map(|item| {
            let rest = item
                .strip_prefix("pub fn ")
                .unwrap_or_else(|| panic!("not a `pub fn` declaration: {item}"));
            let (name, rest) = rest.split_once('(').expect("parameter list");
            let (params, rest) = rest.rsplit_once(')').expect("parameter list end");
            let params = params
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (_, ty) = p.split_once(':').unwrap_or_else(|| panic!("{p}: no type"));
                    ty.trim().to_owned()
                })
                .collect();
            let ret = rest.trim().strip_prefix("->").map(|ty| ty.trim().to_owned());
            Decl { name: name.trim().to_owned(), params, ret }
        })
        .collect()
}

/// The C spelling of a Rust FFI type.
fn c_type(rust: &str) -> String {
    let rust = rust.trim();
    if let Some(inner) = rust.strip_prefix("*mut ") {
        return format!("{} *", c_type(inner));
    }
    if let Some(inner) = rust.strip_prefix("*const ") {
        return format!("{} const *", c_type(inner));
    }
    let base = match rust {
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
        other => panic!("no C spelling for Rust type `{other}`: extend c_type()"),
    };
    base.to_owned()
}

fn c_check(decls: &[Decl]) -> String {
    let mut c = String::from(
        "#include <stdio.h>\n#include <pocketsphinx.h>\n#include <sphinxbase/err.h>\n\
         #include <sphinxbase/cmn.h>\n#include \"hark_ps.h\"\n\n",
    );
    for d in decls {
        let ret = d.ret.as_deref().map_or("void".to_owned(), c_type);
        let params = if d.params.is_empty() {
            "void".to_owned()
        } else {
            d.params.iter().map(|p| c_type(p)).collect::<Vec<_>>().join(", ")
        };
        c.push_str(&format!("{ret} (*const check_{name})({params}) = {name};\n", name = d.name));
    }
    c
}

/// Compiles `source`; `Err(compiler output)` when it does not compile.
fn compile(tag: &str, source: &str) -> Result<(), String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("ffi_signatures_{tag}.c"));
    std::fs::write(&file, source).map_err(|e| format!("{}: {e}", file.display()))?;
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let mut command = Command::new(&compiler);
    command.args([
        "-std=c99",
        "-fsyntax-only",
        "-Werror=incompatible-pointer-types",
        "-Werror=int-conversion",
        "-Werror=implicit-function-declaration",
    ]);
    command.arg(concat!("-I", env!("CARGO_MANIFEST_DIR"), "/csrc"));
    for include in env!("HARK_POCKETSPHINX_INCLUDE").split(':') {
        command.arg(format!("-I{include}"));
    }
    let output = command
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("running C compiler `{compiler}`: {e}"));
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn declarations() -> Vec<Decl> {
    let block = extern_block(SOURCE);
    let decls = parse(&block);
    // Every declaration was understood (none skipped by the parser).
    assert_eq!(decls.len(), block.matches("pub fn ").count());
    decls
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
