//! A document given to `import_json`, parsed and validated as it is before
//! anything is stored.
#![no_main]

use hearth_core::testing::parse_export;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_export(text);
    }
});
