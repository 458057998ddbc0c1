use super::*;

const GROUP: [u8; 16] = [0x11; 16];

fn device(secret: u8) -> DeviceKeys {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    DeviceKeys::from_parts([secret; 32], pkcs8.as_ref()).unwrap()
}

/// The phone's rotation to epoch 2, removing a lost tablet.
fn removing_the_tablet() -> Rotation {
    Rotation {
        keys: BTreeMap::new(),
        removed_chains: BTreeMap::new(),
        epoch: 2,
        by: "phone".into(),
        removed: BTreeMap::from([("lost-tablet".to_string(), 4)]),
        wraps: vec![],
        earlier: String::new(),
    }
}

/// The wrap and the earlier keys against values computed independently
/// (Python's `cryptography`: X25519, HKDF-SHA256 and AESGCM over the same
/// inputs).
#[test]
fn a_wrap_and_the_earlier_keys_seal_to_the_known_answers() {
    let tv = device(0x21);
    assert_eq!(tv.public().0, "7d34a4815fa6b982535e60af3bd9b49556816080f1641ff81d2b7c8ae8268a44");
    let public: [u8; 32] = unhex(&tv.public().0).unwrap();
    let wrap = wrap_key(&GROUP, 2, "0d0d0d0d0d0d0d0d", &public, [0x42; 32], &[0x77; 32]);
    assert_eq!(wrap.ephemeral, "132c442be010fbd57e72603328aa76e71fccc1503aae219327d14d9c9993f472");
    assert_eq!(
        wrap.sealed,
        "bc8c3293ce0f95f7ece5503cb4b9fb4ca990bfdbb8c54fa2ed5523d2e42356d821610ddc1a3e61e1b033ab7a06b4d13c"
    );
    assert_eq!(tv.unwrap_key(&GROUP, 2, "0d0d0d0d0d0d0d0d", &wrap).unwrap(), [0x77; 32]);
    let earlier = BTreeMap::from([(1u32, [0x66u8; 32])]);
    let rotation = removing_the_tablet();
    assert_eq!(rotation.header(), br#"[2,"phone",{"lost-tablet":4}]"#);
    let sealed = seal_earlier(&GROUP, 2, &[0x77; 32], &earlier, &rotation.header());
    assert_eq!(
        sealed,
        "750a6faf25ee01bbc41700b9955a8bd22d09f6ad34fc0ee8c23c1b08b29cbcbb\
         47226508fa1bfe9ddd51954607a1fa917db1ac2e"
    );
    assert_eq!(open_earlier(&GROUP, 2, &[0x77; 32], &sealed, &rotation.header()).unwrap(), earlier);
    assert_eq!(open_earlier(&GROUP, 2, &[0x77; 32], &sealed, b"[2,\"phone\",{}]"), Err(RecordError::Unsealed));
}

#[test]
fn a_wrap_opens_only_for_its_device_epoch_and_group() {
    let (tv, removed) = (device(0x21), device(0x31));
    let public: [u8; 32] = unhex(&tv.public().0).unwrap();
    let wrap = wrap_key(&GROUP, 2, "aa", &public, [0x42; 32], &[0x77; 32]);
    assert_eq!(removed.unwrap_key(&GROUP, 2, "aa", &wrap), Err(RecordError::Unsealed));
    assert_eq!(tv.unwrap_key(&GROUP, 3, "aa", &wrap), Err(RecordError::Unsealed));
    assert_eq!(tv.unwrap_key(&GROUP, 2, "bb", &wrap), Err(RecordError::Unsealed));
    assert_eq!(tv.unwrap_key(&[0x12; 16], 2, "aa", &wrap), Err(RecordError::Unsealed));
    let sealed = seal_earlier(&GROUP, 2, &[0x77; 32], &BTreeMap::new(), b"");
    assert_eq!(open_earlier(&GROUP, 2, &[0x78; 32], &sealed, b""), Err(RecordError::Unsealed));
}

#[test]
fn a_rotation_opens_only_under_its_signers_key_and_group() {
    let (phone, other) = (device(1), device(2));
    let rotation = removing_the_tablet();
    let blob = rotation.sign(&GROUP, &phone);
    let signer = |keys: &DeviceKeys| {
        let public = keys.public().1;
        move |by: &str| (by == "phone").then(|| public.clone())
    };
    assert_eq!(Rotation::open(&GROUP, &blob, signer(&phone)).unwrap(), rotation);
    assert_eq!(Rotation::open(&GROUP, &blob, signer(&other)), Err(RecordError::Unsealed));
    assert_eq!(Rotation::open(&[0x12; 16], &blob, signer(&phone)), Err(RecordError::Unsealed));
    assert_eq!(Rotation::open(&GROUP, &blob, |_| None), Err(RecordError::Unsealed));
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x04;
        assert!(Rotation::open(&GROUP, &bad, signer(&phone)).is_err(), "byte {i}");
    }
    assert!(Rotation::open(&GROUP, &blob[..60], signer(&phone)).is_err());
}
