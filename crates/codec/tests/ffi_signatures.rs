//! Checks the hand-written liblc3 declarations in `src/lc3/ffi.rs` against the
//! installed `lc3.h`.
//!
//! The test reads the `extern "C"` block, turns each declaration into a C
//! function-pointer type, and compiles `TYPE check = function;` for each with the
//! system C compiler (`$CC`, default `cc`) against the header pkg-config names.
//! Any difference in a parameter or return type (including `const`) is an
//! incompatible-pointer error, so the compile fails. A second test feeds it wrong
//! declarations to prove it can fail.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = include_str!("../src/lc3/ffi.rs");

#[derive(Clone, Debug)]
struct Decl {
    name: String,
    params: Vec<String>,
    ret: Option<String>,
}

/// The text inside `extern "C" { … }`, comments removed.
fn extern_block(source: &str) -> String {
    let start = source.find("extern \"C\" {").expect("src/lc3/ffi.rs has an extern \"C\" block");
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
    match rust {
        "c_int" => "int",
        "c_uint" => "unsigned",
        "c_void" => "void",
        "lc3_decoder" => "struct lc3_decoder",
        "lc3_encoder" => "struct lc3_encoder",
        "lc3_pcm_format" => "enum lc3_pcm_format",
        other => panic!("no C spelling for Rust type `{other}`: extend c_type()"),
    }
    .to_owned()
}

fn c_check(decls: &[Decl]) -> String {
    let mut c = String::from("#include <lc3.h>\n\n");
    // `enum lc3_pcm_format` must be the unsigned int the Rust side passes.
    c.push_str("_Static_assert(sizeof(enum lc3_pcm_format) == sizeof(unsigned), \"enum size\");\n");
    c.push_str("_Static_assert(LC3_PCM_FORMAT_S16 == 0, \"S16 is 0\");\n");
    c.push_str(
        "_Static_assert(_Generic((enum lc3_pcm_format)0, unsigned: 1, default: 0), \"enum is unsigned\");\n",
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
    let file = dir.join(format!("lc3_signatures_{tag}.c"));
    std::fs::write(&file, source).map_err(|e| format!("{}: {e}", file.display()))?;
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let mut command = Command::new(&compiler);
    command.args([
        "-std=c11",
        "-fsyntax-only",
        "-Werror=incompatible-pointer-types",
        "-Werror=int-conversion",
        "-Werror=implicit-function-declaration",
    ]);
    for include in env!("HARK_LC3_INCLUDE").split(':') {
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
