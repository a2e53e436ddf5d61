//! Checks hand-written `extern "C"` declarations against the installed C headers,
//! for the crates that bind C libraries without bindgen (liblc3, PocketSphinx).
//!
//! [`declarations`] reads a Rust source's `extern "C"` block; [`c_check`] turns
//! each declaration into a C function-pointer type and writes `TYPE check =
//! function;` for it; [`compile`] compiles that with the system C compiler (`$CC`,
//! default `cc`). Any difference in a parameter or return type (including `const`)
//! is an incompatible-pointer error, so the compile fails. Each crate supplies the
//! C spelling of its own types and its headers.

use std::path::Path;
use std::process::Command;

/// One `pub fn` of an `extern "C"` block.
#[derive(Clone, Debug)]
pub struct Decl {
    /// The C function's name.
    pub name: String,
    /// Rust parameter types, in order.
    pub params: Vec<String>,
    /// Rust return type; `None` for `()`.
    pub ret: Option<String>,
}

/// Every `pub fn` in `source`'s `extern "C" { … }` block (comments removed).
/// Panics unless every declaration was understood.
pub fn declarations(source: &str) -> Vec<Decl> {
    let start = source.find("extern \"C\" {").expect("the source has an extern \"C\" block");
    let body = &source[start + "extern \"C\" {".len()..];
    let end = body.find('}').expect("extern block is closed");
    let block = body[..end]
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let decls: Vec<Decl> = block
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
        .collect();
    assert_eq!(decls.len(), block.matches("pub fn ").count(), "a declaration was skipped");
    decls
}

/// The C spelling of a Rust FFI type: pointers here, `base` for the rest.
pub fn c_type(rust: &str, base: &dyn Fn(&str) -> String) -> String {
    let rust = rust.trim();
    if let Some(inner) = rust.strip_prefix("*mut ") {
        return format!("{} *", c_type(inner, base));
    }
    if let Some(inner) = rust.strip_prefix("*const ") {
        return format!("{} const *", c_type(inner, base));
    }
    base(rust)
}

/// C source: `prelude` (includes, static asserts), then one function-pointer
/// check per declaration.
pub fn c_check(prelude: &str, decls: &[Decl], base: &dyn Fn(&str) -> String) -> String {
    let mut c = prelude.to_owned();
    for d in decls {
        let ret = d.ret.as_deref().map_or("void".to_owned(), |r| c_type(r, base));
        let params = if d.params.is_empty() {
            "void".to_owned()
        } else {
            d.params.iter().map(|p| c_type(p, base)).collect::<Vec<_>>().join(", ")
        };
        c.push_str(&format!("{ret} (*const check_{name})({params}) = {name};\n", name = d.name));
    }
    c
}

/// Compiles `source` (saved as `dir/<tag>.c`) with `-std=<std>` and the include
/// directories; `Err(compiler output)` when it does not compile.
pub fn compile(
    dir: &Path,
    tag: &str,
    source: &str,
    std: &str,
    includes: &[&str],
) -> Result<(), String> {
    let file = dir.join(format!("{tag}.c"));
    std::fs::write(&file, source).map_err(|e| format!("{}: {e}", file.display()))?;
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let mut command = Command::new(&compiler);
    command.args([
        &format!("-std={std}"),
        "-fsyntax-only",
        "-Werror=incompatible-pointer-types",
        "-Werror=int-conversion",
        "-Werror=implicit-function-declaration",
    ]);
    for include in includes.iter().filter(|i| !i.is_empty()) {
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
