use super::*;
use crate::store::history::{DeviceClass, EventContext, EventKind};

fn event(item: &str, at: i64) -> Event {
    Event {
        item_id: item.into(),
        kind: EventKind::Play,
        timestamp_ms: at,
        position_ms: None,
        duration_ms: None,
        context: EventContext { device: DeviceClass::Tv, local_hour: 20, locale: None },
    }
}

#[test]
fn changes_pack_into_bounded_bodies_that_decode_in_order() {
    let changes: Vec<Change> = (0..5_000)
        .map(|i| Change::Event { seq: i, event: event(&format!("item-{i:0>200}"), 1_700_000_000_000 + i) })
        .collect();
    let bodies = pack(&changes).unwrap();
    assert!(bodies.len() > 1);
    let mut back = Vec::new();
    for packed in &bodies {
        assert!(packed.body.len() + SIGNATURE_LEN <= MAX_BODY, "{}", packed.body.len());
        let decoded = Body::decode(&packed.body).unwrap().changes;
        assert_eq!(packed.events, decoded.len() as u64);
        back.extend(decoded);
    }
    assert_eq!(back, changes);
    assert!(pack(&[]).unwrap().is_empty());
}

#[test]
fn a_body_with_an_unknown_change_or_field_is_refused() {
    for bad in [
        &br#"{"changes":[{"kind":"wipe"}]}"#[..],
        br#"{"changes":[{"kind":"purge","before_ms":1,"extra":2}]}"#,
        br#"{"changes":[],"more":1}"#,
        br#"{"changes":[{"kind":"purge","before_ms":"1"}]}"#,
        b"",
        b"\xff",
    ] {
        assert!(Body::decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
    assert_eq!(
        Body::decode(br#"{"changes":[{"kind":"purge","before_ms":5}]}"#).unwrap().changes,
        vec![Change::Purge { before_ms: 5 }]
    );
}

#[test]
fn the_clock_only_moves_forward_and_ties_break_by_device() {
    let mut a = SyncState::new("aa");
    let first = a.tick(1_000);
    let same_ms = a.tick(1_000);
    let clock_back = a.tick(500);
    assert!(first < same_ms && same_ms < clock_back);
    a.observe(&Stamp { ms: 9_000, n: 4, device: "bb".into() });
    let after = a.tick(2_000);
    assert_eq!((after.ms, after.n, after.device.as_str()), (9_000, 5, "aa"));
    let b = Stamp { ms: 9_000, n: 5, device: "bb".into() };
    assert!(after < b);
}

#[test]
fn tombstones_cover_what_they_name_and_only_that() {
    let mut s = SyncState::new("aa");
    s.forget("x", 2_000);
    s.forget("x", 1_000);
    s.purge_before = 100;
    assert!(s.is_dropped(&event("x", 2_000)));
    assert!(!s.is_dropped(&event("x", 2_001)));
    assert!(!s.is_dropped(&event("y", 1_000)));
    assert!(s.is_dropped(&event("y", 99)));
}

/// A record's signature, made independently (Python's `cryptography`,
/// Ed25519 with the seed 00 01 .. 1f) over the message `signed_message`
/// lays out, after a record whose chain value is 22 22 .. 22: it checks,
/// and leads to the chain value SHA-256 gives; no other group, epoch,
/// name, predecessor or body checks.
#[test]
fn a_record_signature_checks_against_the_known_answer() {
    let public = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
    let signature = "d679ddeea509476c8ce3e4c555ec73b032d2f680134248bac523c292200258c7\
                     0442185c0ae673e8b63ea4f5ab0ced1fa76e140cab5c9a807085fb3b151d290e";
    let unhex = |h: &str| -> Vec<u8> {
        (0..h.len() / 2).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap()).collect()
    };
    let signature = unhex(&signature.replace(' ', ""));
    let json = br#"{"changes":[{"kind":"purge","before_ms":1600000000000}]}"#;
    let name = "0d0d0d0d0d0d0d0d-0000000002";
    let prev = [0x22; 32];
    let plain = [&signature[..], json].concat();
    let (body, after) = open_body(&plain, &[0x11; 16], 3, name, &prev, Some(public)).unwrap();
    assert_eq!(body.changes, vec![Change::Purge { before_ms: 1_600_000_000_000 }]);
    assert_eq!(after.to_vec(), unhex("6870b632cc154237aade162daabb78f2d19554183a6dd8273628e8cfa1f9f408"));
    let refused = |group: [u8; 16], epoch: u32, name: &str, prev: [u8; 32], plain: &[u8]| {
        open_body(plain, &group, epoch, name, &prev, Some(public)).map(|_| ())
    };
    assert_eq!(refused([0x12; 16], 3, name, prev, &plain), Err(RecordError::BadSignature));
    assert_eq!(refused([0x11; 16], 2, name, prev, &plain), Err(RecordError::BadSignature));
    assert_eq!(refused([0x11; 16], 3, "0d0d0d0d0d0d0d0d-0000000003", prev, &plain), Err(RecordError::BadSignature));
    assert_eq!(refused([0x11; 16], 3, name, CHAIN_START, &plain), Err(RecordError::BadSignature));
    // The body changed by one digit (before_ms 1700000000000).
    let mut changed = plain.clone();
    let at = 64 + json.iter().position(|&b| b == b'6').unwrap();
    changed[at] = b'7';
    assert_eq!(refused([0x11; 16], 3, name, prev, &changed), Err(RecordError::BadSignature));
    // Unknown writer, and no announcement in the body: refused.
    assert_eq!(open_body(&plain, &[0x11; 16], 3, name, &prev, None).map(|_| ()), Err(RecordError::BadSignature));
    // Signed and checked by a device's own keys, round trip, chained.
    let keys = DeviceKeys::generate().unwrap();
    let (_, signing) = keys.public();
    let (plain, after) = sign_body(&keys, &[0x11; 16], 3, name, &prev, json);
    assert_eq!(open_body(&plain, &[0x11; 16], 3, name, &prev, Some(&signing)).unwrap().1, after);
    assert_eq!(after, chain(&prev, &plain[..64]));
    assert_eq!(
        open_body(&plain, &[0x11; 16], 3, name, &prev, Some(public)).map(|_| ()),
        Err(RecordError::BadSignature)
    );
}
