//! The workspace's `uniffi-bindgen`: UniFFI's own command line at the
//! workspace's UniFFI version, so the generated Kotlin and Swift always match
//! the scaffolding compiled into libhearth.
//!
//! One extra subcommand, `exports LIBRARY UNIFFI_TOML`, lists what the library
//! exports (functions, constructors, methods, foreign-trait methods, error
//! variants), read from the UniFFI metadata in the library itself, one per
//! line, with the name each one has in Kotlin and in Swift:
//!
//! ```text
//! KIND OWNER RUST_NAME KOTLIN_NAME SWIFT_NAME
//! method Hearth record_batch recordBatch recordBatch
//! method Hearth close closeStore close
//! variant HearthError WrongKey HearthException.WrongKey HearthError.WrongKey
//! ```
//!
//! `tests/bindings/run.sh` checks that each name is used by the Kotlin and
//! the Swift tests. The foreign names follow the generators' rules
//! (lowerCamelCase functions; Kotlin calls an error `FooError` `FooException`)
//! and the `[bindings.<language>.rename]` tables of the crate's `uniffi.toml`;
//! the script also checks that each name is declared in the generated code,
//! so a drift in those rules fails loudly rather than passing quietly.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Context;
use camino::Utf8Path;
use heck::ToLowerCamelCase;
use uniffi_meta::{EnumShape, Metadata};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("exports") {
        uniffi::uniffi_bindgen_main();
        return ExitCode::SUCCESS;
    }
    let [_, _, library, config] = args.as_slice() else {
        eprintln!("usage: uniffi-bindgen exports LIBRARY UNIFFI_TOML");
        return ExitCode::from(2);
    };
    match exports(Utf8Path::new(library), Utf8Path::new(config)) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("uniffi-bindgen exports: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `[bindings.<language>.rename]` table of a `uniffi.toml`: keys are
/// `Object.method`, `Enum.Variant` or a plain function name.
struct Renames(toml::Table);

impl Renames {
    fn load(config: &toml::Table, language: &str) -> Renames {
        let table = config
            .get("bindings")
            .and_then(|b| b.get(language))
            .and_then(|l| l.get("rename"))
            .and_then(|r| r.as_table())
            .cloned()
            .unwrap_or_default();
        Renames(table)
    }

    fn get<'a>(&'a self, path: &str, name: &'a str) -> &'a str {
        self.0.get(path).and_then(|v| v.as_str()).unwrap_or(name)
    }
}

fn exports(library: &Utf8Path, config: &Utf8Path) -> anyhow::Result<BTreeSet<String>> {
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(config).with_context(|| format!("reading {config}"))?)?;
    let (kotlin, swift) = (Renames::load(&config, "kotlin"), Renames::load(&config, "swift"));
    let metadata = uniffi_bindgen::macro_metadata::extract_from_library(library)?;
    let fn_names = |path: &str, name: &str| {
        (kotlin.get(path, name).to_lower_camel_case(), swift.get(path, name).to_lower_camel_case())
    };
    let mut out = BTreeSet::new();
    for item in metadata {
        match item {
            Metadata::Func(f) => {
                let (k, s) = fn_names(&f.name, &f.name);
                out.insert(format!("function - {} {k} {s}", f.name));
            }
            Metadata::Constructor(c) => {
                let (k, s) = fn_names(&format!("{}.{}", c.self_name, c.name), &c.name);
                out.insert(format!("constructor {0} {1} {0}.{k} {0}.{s}", c.self_name, c.name));
            }
            Metadata::Method(m) => {
                let (k, s) = fn_names(&format!("{}.{}", m.self_name, m.name), &m.name);
                out.insert(format!("method {} {} {k} {s}", m.self_name, m.name));
            }
            Metadata::TraitMethod(m) => {
                let (k, s) = fn_names(&format!("{}.{}", m.trait_name, m.name), &m.name);
                out.insert(format!("trait_method {} {} {k} {s}", m.trait_name, m.name));
            }
            Metadata::Enum(e) if matches!(e.shape, EnumShape::Error { .. }) => {
                let kotlin_class = match e.name.strip_suffix("Error") {
                    Some(stem) => format!("{stem}Exception"),
                    None => e.name.clone(),
                };
                for v in &e.variants {
                    let path = format!("{}.{}", e.name, v.name);
                    let (k, s) = (kotlin.get(&path, &v.name), swift.get(&path, &v.name));
                    out.insert(format!("variant {} {} {kotlin_class}.{k} {}.{s}", e.name, v.name, e.name));
                }
            }
            _ => {}
        }
    }
    anyhow::ensure!(!out.is_empty(), "no UniFFI exports found in {library} (a stripped library has no metadata)");
    Ok(out)
}
