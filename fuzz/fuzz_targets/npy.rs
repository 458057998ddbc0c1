//! An array's `.npy` bytes as the device reads the global model's parameters.
#![no_main]

use hearth_core::federated::objects::{Limits, parse_npy_f32};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_npy_f32(data, &Limits::default());
});
