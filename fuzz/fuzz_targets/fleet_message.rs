//! A train message's object tree as the device inflates it (see
//! `hearth_core::testing::fleet_frames` for the input's form), with the
//! default limits and with a model's parameters expected.
#![no_main]

use hearth_core::federated::objects::{self, Limits};
use hearth_core::testing::fleet_frames;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    let Some((message_id, objects)) = fleet_frames::decode(data) else { return };
    for content in objects.values() {
        let _ = objects::parse(content);
    }
    let limits = if mode & 1 == 0 {
        Limits::default()
    } else {
        Limits::default().for_parameters(vec![("w".into(), vec![3, 2]), ("b".into(), vec![2])])
    };
    let _ = objects::inflate_content(&message_id, &objects, &limits);
});
