use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fixed() -> ([u8; 16], Reveal, Answer) {
    let inviter = Reveal { public: [0x22; 32], nonce: [0x44; 32] };
    let joiner = Answer { public: [0x33; 32], nonce: [0x55; 32] };
    ([0x11; 16], inviter, joiner)
}

/// The derivations against values computed independently (Python's
/// hashlib and the `cryptography` package's HKDF and AESGCM, from the same
/// inputs).
#[test]
fn the_derivations_give_the_known_answers() {
    let (group_id, inviter, joiner) = fixed();
    assert_eq!(
        hex(&commitment(&inviter.public, &inviter.nonce)),
        "036abc8b870795e1e2bfb56dcc13780d0b82bccfc3cc7130f5885c2f86c49251"
    );
    let t = transcript(&group_id, &inviter, &joiner);
    assert_eq!(hex(&t), "dbe22fa6ae7468a5fcd47e14045fcdfc163eb1fe25ae4c6ce619b8e2e14e415b");
    let shared: [u8; 32] = std::array::from_fn(|i| i as u8);
    assert_eq!(sas_digits(&shared, &t), 719_154);
    let group = GroupKey { group_id, profile_key: [0x66; 32] };
    let welcome = seal_welcome(&shared, &t, &group);
    assert_eq!(
        hex(&welcome.sealed),
        "52cbee502e0e71fbcd93ff96f385c408fe2b53ba48f72f37dfb4600a5329eb17\
         38b224803b6613843ed080a32a449d17b4b3ebd157676c398de852e9cac14ed1"
    );
    assert_eq!(open_welcome(&shared, &t, &group_id, &welcome).unwrap(), group);
}

fn group() -> GroupKey {
    GroupKey { group_id: [7; 16], profile_key: [9; 32] }
}

#[test]
fn two_devices_show_the_same_digits_and_the_joiner_gets_the_group_key() {
    let (mut inviter, commit) = Inviter::start(group()).unwrap();
    let (mut joiner, answer) = Joiner::answer(commit).unwrap();
    let (reveal, shown_there) = inviter.reveal(&answer).unwrap();
    let shown_here = joiner.check(&reveal).unwrap();
    assert_eq!(shown_here, shown_there);
    assert!(shown_here < 1_000_000);
    let welcome = inviter.welcome(true).unwrap();
    // 48 bytes of key and group id, and the tag: nothing else.
    assert_eq!(welcome.sealed.len(), 16 + 32 + 16);
    for secret in [&group().profile_key[..], &group().group_id[..]] {
        assert!(!welcome.sealed.windows(8).any(|w| secret.windows(8).any(|s| s == w)), "the key in clear");
    }
    assert_eq!(joiner.accept(&welcome, true).unwrap(), group());
}

#[test]
fn nothing_is_sealed_or_opened_without_the_persons_confirmation() {
    let (mut inviter, commit) = Inviter::start(group()).unwrap();
    let (mut joiner, answer) = Joiner::answer(commit).unwrap();
    let (reveal, _) = inviter.reveal(&answer).unwrap();
    joiner.check(&reveal).unwrap();
    assert_eq!(inviter.welcome(false).unwrap_err(), PairingError::NotConfirmed);
    let (mut inviter, commit) = Inviter::start(group()).unwrap();
    let (mut joiner2, answer) = Joiner::answer(commit).unwrap();
    let (reveal, _) = inviter.reveal(&answer).unwrap();
    joiner2.check(&reveal).unwrap();
    let welcome = inviter.welcome(true).unwrap();
    assert!(joiner2.accept(&welcome, false).is_err());
    // And the first joiner cannot open the second pairing's welcome.
    assert!(joiner.accept(&welcome, true).is_err());
}

/// A relay in the middle, with its own keys towards each side: the digits
/// the two screens show differ (but for a 10^-6 chance), and a welcome the
/// person would not confirm could not be opened by the relay anyway.
#[test]
fn a_relay_in_the_middle_is_shown_up_by_the_digits() {
    let mut matched = 0;
    for _ in 0..50 {
        let (mut inviter, commit) = Inviter::start(group()).unwrap();
        // The relay commits to its own key towards the joiner and answers
        // the inviter with another of its own.
        let (mut relay_inviter, relay_commit) = Inviter::start(GroupKey { profile_key: [0; 32], ..group() }).unwrap();
        let (mut relay_joiner, relay_answer) = Joiner::answer(commit).unwrap();
        let (mut joiner, answer) = Joiner::answer(relay_commit).unwrap();
        let (relay_reveal, relay_digits_b) = relay_inviter.reveal(&answer).unwrap();
        let digits_b = joiner.check(&relay_reveal).unwrap();
        assert_eq!(digits_b, relay_digits_b);
        let (reveal, digits_a) = inviter.reveal(&relay_answer).unwrap();
        assert_eq!(relay_joiner.check(&reveal).unwrap(), digits_a);
        matched += usize::from(digits_a == digits_b);
        // Had the person confirmed anyway, the joiner would hold the
        // relay's key, not the group's.
        let welcome = relay_inviter.welcome(true).unwrap();
        assert_ne!(joiner.accept(&welcome, true).unwrap().profile_key, group().profile_key);
    }
    assert!(matched <= 1, "{matched} of 50 relays unseen");
}

#[test]
fn a_reveal_that_is_not_the_committed_key_or_a_bad_welcome_is_refused() {
    let (mut inviter, commit) = Inviter::start(group()).unwrap();
    let (mut joiner, answer) = Joiner::answer(commit).unwrap();
    let (mut reveal, _) = inviter.reveal(&answer).unwrap();
    reveal.nonce[0] ^= 1;
    assert_eq!(joiner.check(&reveal), Err(PairingError::NotCommitted));
    reveal.nonce[0] ^= 1;
    assert!(joiner.check(&reveal).is_err(), "once refused, the pairing is over");

    let (mut inviter, commit) = Inviter::start(group()).unwrap();
    let (mut joiner, answer) = Joiner::answer(commit).unwrap();
    let (reveal, _) = inviter.reveal(&answer).unwrap();
    assert!(inviter.reveal(&answer).is_err(), "answered once");
    joiner.check(&reveal).unwrap();
    let mut welcome = inviter.welcome(true).unwrap();
    welcome.sealed[3] ^= 1;
    assert_eq!(joiner.accept(&welcome, true).unwrap_err(), PairingError::Unsealed);
    // A low-order public key gives no secret: refused.
    let (mut inviter, _) = Inviter::start(group()).unwrap();
    assert_eq!(inviter.reveal(&Answer { public: [0; 32], nonce: [1; 32] }).unwrap_err(), PairingError::NotContributory);
}

#[test]
fn messages_travel_as_fixed_bytes_and_anything_else_is_refused() {
    let (mut inviter, commit) = Inviter::start(group()).unwrap();
    let (mut joiner, answer) = Joiner::answer(commit.clone()).unwrap();
    let (reveal, _) = inviter.reveal(&answer).unwrap();
    joiner.check(&reveal).unwrap();
    let welcome = inviter.welcome(true).unwrap();
    let all = [
        PairingMessage::Commit(commit),
        PairingMessage::Answer(answer),
        PairingMessage::Reveal(reveal),
        PairingMessage::Welcome(welcome),
    ];
    for (m, len) in all.iter().zip([50, 66, 66, 66]) {
        let bytes = m.encode();
        assert_eq!(bytes.len(), len);
        assert_eq!(&PairingMessage::decode(&bytes).unwrap(), m);
        // Every shorter or longer copy, another version, another kind.
        for cut in 0..bytes.len() {
            assert!(PairingMessage::decode(&bytes[..cut]).is_err(), "{cut} bytes of {m:?}");
        }
        assert!(PairingMessage::decode(&[bytes.as_slice(), &[0]].concat()).is_err());
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(matches!(PairingMessage::decode(&other), Err(PairingError::Malformed(_))));
        other[0] = 1;
        other[1] = 9;
        assert!(matches!(PairingMessage::decode(&other), Err(PairingError::Malformed(_))));
    }
}
