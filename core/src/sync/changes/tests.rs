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
        assert!(packed.body.len() <= MAX_BODY, "{}", packed.body.len());
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
