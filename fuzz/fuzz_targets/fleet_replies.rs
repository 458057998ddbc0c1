//! The SuperLink's replies to the Fleet calls a device makes, as protobuf
//! bodies (the first byte picks the call).
#![no_main]

use hearth_core::federated::proto;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    match which % 6 {
        0 => drop(proto::PullMessagesResponse::decode(body)),
        1 => drop(proto::PullObjectResponse::decode(body)),
        2 => drop(proto::PushMessagesResponse::decode(body)),
        3 => drop(proto::ActivateNodeResponse::decode(body)),
        4 => drop(proto::SendNodeHeartbeatResponse::decode(body)),
        _ => drop(proto::ConfigRecord::decode(body)),
    }
});
