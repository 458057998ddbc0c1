//! Secure aggregation's messages where they arrive: the first byte picks
//! the stage (0 setup, 1 share-keys, 2 masked-input, 3 unmask) of a small
//! honest round (hearth_secagg::testing) and the side: a stage message to a
//! device (bit 2 clear), or a device's reply to the coordinator (bit 2 set),
//! after which the round is finished honestly. A device must refuse what it
//! cannot accept; the coordinator must drop a bad reply and go on; neither
//! may panic.
#![no_main]

use hearth_secagg::testing::{self, TARGET};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let mut h = testing::honest(4, (which % 4) as usize);
    if which & 4 == 0 {
        let _ = h.answer(TARGET, body);
    } else {
        let _ = h.coordinator.receive(TARGET, body);
        let _ = h.finish_without(TARGET);
    }
});
