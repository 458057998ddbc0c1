use ring::digest::{SHA256, digest};

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn group(id: u8) -> GroupKey {
    GroupKey { group_id: [id; 16], profile_key: [0x66; 32] }
}

fn name(seq: u64) -> RecordName {
    RecordName { device: [0xab; 8], seq }
}

/// The blob against one sealed independently (Python's `cryptography`:
/// HKDF-SHA256 and AESGCM over the same inputs, padding and additional
/// data).
#[test]
fn a_record_seals_to_the_known_answer() {
    let key = RecordKey::new(&group(0x11), 3);
    let body = br#"{"changes":[]}"#;
    let blob = key.seal(&name(42), body, [0x5a; 12]).unwrap();
    assert_eq!(name(42).encode(), "abababababababab-0000000042");
    assert_eq!(blob.len(), 1057);
    assert_eq!(
        hex(digest(&SHA256, &blob).as_ref()),
        "3cda2aec9012630ca91312796ad3c187ebf4bd83cf0baa1bfb48a4b92a977a6a"
    );
    assert_eq!(
        hex(&blob[blob.len() - 48..]),
        "e7c5cec7c9de57fc77cfdb0705da64c6e94d4daf59c1ff9874dc4ad8f9b14058\
         1e71c4065570b13f277acc19912fbe44"
    );
    assert_eq!(key.open(&name(42), &blob).unwrap(), body);
}

#[test]
fn sizes_come_only_from_the_buckets() {
    let key = RecordKey::new(&group(1), 1);
    let mut seen = std::collections::BTreeSet::new();
    for len in [0, 1, 1020, 1021, 4092, 4093, 20_000, 70_000, MAX_BODY] {
        let body = vec![b'x'; len];
        let blob = key.seal(&name(1), &body, [0; 12]).unwrap();
        assert!(BLOB_SIZES.contains(&blob.len()), "{len} -> {}", blob.len());
        assert_eq!(key.open(&name(1), &blob).unwrap(), body);
        seen.insert(blob.len());
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(
        key.seal(&name(1), &vec![0; MAX_BODY + 1], [0; 12]),
        Err(RecordError::TooLarge { size: MAX_BODY as u64 + 1 })
    );
}

#[test]
fn a_changed_moved_or_foreign_blob_is_refused() {
    let key = RecordKey::new(&group(1), 1);
    let blob = key.seal(&name(7), b"what the person did", [3; 12]).unwrap();
    // Every byte flipped, one at a time.
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        let err = key.open(&name(7), &bad).unwrap_err();
        assert!(
            matches!(err, RecordError::Unsealed | RecordError::Malformed(_) | RecordError::UnknownEpoch { .. }),
            "byte {i}: {err:?}"
        );
    }
    // Truncated, extended, renamed, another group's, another epoch's.
    for cut in [0, 1, HEADER_LEN, blob.len() - 1] {
        assert!(matches!(key.open(&name(7), &blob[..cut]), Err(RecordError::Malformed(_))), "{cut}");
    }
    let mut longer = blob.clone();
    longer.push(0);
    assert!(matches!(key.open(&name(7), &longer), Err(RecordError::Malformed(_))));
    assert_eq!(key.open(&name(8), &blob), Err(RecordError::Unsealed));
    assert_eq!(key.open(&RecordName { device: [0xac; 8], seq: 7 }, &blob), Err(RecordError::Unsealed));
    assert_eq!(RecordKey::new(&group(2), 1).open(&name(7), &blob), Err(RecordError::Unsealed));
    let other_key = GroupKey { group_id: [1; 16], profile_key: [0x67; 32] };
    assert_eq!(RecordKey::new(&other_key, 1).open(&name(7), &blob), Err(RecordError::Unsealed));
    assert_eq!(RecordKey::new(&group(1), 2).open(&name(7), &blob), Err(RecordError::UnknownEpoch { epoch: 1 }));
    let huge = vec![VERSION; MAX_BLOB + 1];
    assert_eq!(blob_epoch(&huge), Err(RecordError::TooLarge { size: MAX_BLOB as u64 + 1 }));
}

#[test]
fn names_parse_only_in_their_one_form() {
    for n in [name(1), name(RecordName::MAX_SEQ), RecordName { device: [0; 8], seq: 12 }] {
        assert_eq!(RecordName::parse(&n.encode()), Ok(n));
    }
    for bad in [
        "",
        "abababababababab",
        "abababababababab-",
        "abababababababab-0000000000",
        "abababababababab-000000001",
        "abababababababab-00000000001",
        "ABABABABABABABAB-0000000001",
        "abababababababa-0000000001",
        "ababababababababa-000000001",
        "abababababababab-+000000001",
        "abababababababag-0000000001",
        "../etc/passwd",
        "abababababababab-00000000é1",
        "aéababababababa-0000000001",
    ] {
        assert!(RecordName::parse(bad).is_err(), "{bad:?}");
    }
}
