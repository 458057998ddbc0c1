//! A model package's manifest with the built-in package's files, checked as
//! after a valid signature (the files against it, the graphs, the weights,
//! the probe run).
#![no_main]

use hearth_core::ModelPackage;
use hearth_core::testing::{build_unsigned_package, unwind_caught_panics};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    unwind_caught_panics();
    let package = ModelPackage { manifest: data.to_vec(), ..ModelPackage::builtin() };
    let _ = build_unsigned_package(&package);
});
