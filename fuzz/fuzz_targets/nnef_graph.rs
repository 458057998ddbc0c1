//! An NNEF graph archive (tar) as the library loads a package's graphs,
//! checked against the built-in manifest and planned.
#![no_main]

use hearth_core::testing::{check_inference_graph, unwind_caught_panics};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    unwind_caught_panics();
    let _ = check_inference_graph(data);
});
