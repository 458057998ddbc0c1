//! The CLI's MovieLens reader: the item file, a 0 byte, the ratings file.
#![no_main]

#[allow(dead_code)]
#[path = "../../cli/src/movielens.rs"]
mod movielens;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (item, inter) = text.split_once('\0').unwrap_or((text, ""));
    let _ = movielens::MovieLens::parse(item, inter, 1_800_000_000_000);
});
