//! The sealed-record decoder with a valid key and arbitrary plaintext (the
//! first byte picks the table), and the input opened as sealed bytes.
#![no_main]

use hearth_core::HearthError;
use hearth_core::testing::decode_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&table, plaintext)) = data.split_first() else { return };
    if let Err(HearthError::Internal { reason }) = decode_record(table, plaintext) {
        panic!("{reason}");
    }
});
