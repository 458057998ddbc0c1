//! A person's sync group on two stores: pairing through a relay that sees
//! every byte, the group key sealed in each store, and what refuses.

mod common;

use std::sync::Arc;

use common::*;
use hearth_core::*;

fn store(dir: &std::path::Path, key: [u8; 32]) -> Arc<Hearth> {
    open(dir, key).unwrap()
}

/// The relay's view: every message between the two devices.
fn pair(phone: &Hearth, tv: &Hearth, log: &mut Vec<Vec<u8>>) -> (String, String, Option<Vec<u8>>) {
    let invitation = phone.invite_device().unwrap();
    let answer = tv.join_device(invitation.clone()).unwrap();
    let InviteReply { message: reveal, digits: on_phone } = phone.invite_answer(answer.clone()).unwrap();
    let on_tv = tv.join_reveal(reveal.clone()).unwrap();
    let welcome = phone.invite_confirm(on_phone == on_tv).unwrap();
    log.extend([invitation, answer, reveal]);
    log.extend(welcome.clone());
    (on_phone, on_tv, welcome)
}

#[test]
fn a_second_device_joins_the_group_and_its_key_is_sealed_in_both_stores() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let phone = store(a.path(), KEY_A);
    let tv = store(b.path(), KEY_B);
    assert_eq!(phone.sync_group().unwrap(), None);
    let created = phone.create_sync_group().unwrap();
    let mut relayed = Vec::new();
    let (on_phone, on_tv, welcome) = pair(&phone, &tv, &mut relayed);
    assert_eq!(on_phone, on_tv, "both screens show the same digits");
    assert!(on_phone.len() == 6 && on_phone.bytes().all(|b| b.is_ascii_digit()), "{on_phone}");
    let joined = tv.join_finish(welcome.expect("confirmed"), true).unwrap();
    assert_eq!(joined.group_id, created.group_id);
    assert_ne!(joined.device_id, created.device_id);
    // Reopened, the group is still there; nothing of it is on disk in clear.
    drop(tv);
    let tv = store(b.path(), KEY_B);
    assert_eq!(tv.sync_group().unwrap(), Some(joined.clone()));
    let id_bytes: Vec<u8> =
        (0..16).map(|i| u8::from_str_radix(&created.group_id[2 * i..2 * i + 2], 16).unwrap()).collect();
    for dir in [a.path(), b.path()] {
        for needle in [created.group_id.as_bytes(), &id_bytes] {
            assert!(files_containing(dir, needle).is_empty(), "the group id in clear on disk");
        }
    }
    // The relay saw 50 + 66 + 66 + 66 bytes; the group id only inside the
    // invitation (it names the group), never the key.
    assert_eq!(relayed.iter().map(Vec::len).collect::<Vec<_>>(), vec![50, 66, 66, 66]);
    assert!(contains(&relayed[0], &id_bytes));
    assert!(relayed[1..].iter().all(|m| !contains(m, &id_bytes)), "the group id beyond the invitation");
    // A device in a group neither joins another nor starts one.
    assert!(matches!(tv.join_device(phone.invite_device().unwrap()), Err(HearthError::InvalidInput { .. })));
    assert!(matches!(tv.create_sync_group(), Err(HearthError::InvalidInput { .. })));
    // Leaving, or deleting everything, forgets it.
    assert!(tv.leave_sync_group().unwrap());
    assert_eq!(tv.sync_group().unwrap(), None);
    phone.delete_all().unwrap();
    assert_eq!(phone.sync_group().unwrap(), None);
}

#[test]
fn without_the_persons_confirmation_or_with_a_tampered_message_nothing_is_joined() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let phone = store(a.path(), KEY_A);
    let tv = store(b.path(), KEY_B);
    phone.create_sync_group().unwrap();
    // The person says the digits differ: no welcome, and the TV's own
    // confirmation cannot be had without one.
    let invitation = phone.invite_device().unwrap();
    let answer = tv.join_device(invitation).unwrap();
    let InviteReply { message: reveal, .. } = phone.invite_answer(answer).unwrap();
    tv.join_reveal(reveal).unwrap();
    assert_eq!(phone.invite_confirm(false).unwrap(), None);
    assert!(phone.invite_confirm(true).is_err(), "the pairing is over");
    // A welcome the TV's person did not confirm: nothing stored.
    let invitation = phone.invite_device().unwrap();
    let answer = tv.join_device(invitation).unwrap();
    let InviteReply { message: reveal, .. } = phone.invite_answer(answer).unwrap();
    tv.join_reveal(reveal).unwrap();
    let welcome = phone.invite_confirm(true).unwrap().unwrap();
    assert!(tv.join_finish(welcome, false).is_err());
    assert_eq!(tv.sync_group().unwrap(), None);
    // A reveal changed by the relay ends the pairing on the TV.
    let invitation = phone.invite_device().unwrap();
    let answer = tv.join_device(invitation).unwrap();
    let InviteReply { message: mut reveal, .. } = phone.invite_answer(answer).unwrap();
    reveal[10] ^= 1;
    assert!(matches!(tv.join_reveal(reveal.clone()), Err(HearthError::InvalidInput { .. })));
    reveal[10] ^= 1;
    assert!(tv.join_reveal(reveal).is_err(), "no second try");
    // Garbage where an answer should be ends the phone's invitation.
    phone.invite_device().unwrap();
    assert!(phone.invite_answer(b"garbage".to_vec()).is_err());
    assert!(phone.invite_confirm(true).is_err());
    // A device in no group invites no one.
    assert!(matches!(tv.invite_device(), Err(HearthError::InvalidInput { .. })));
    assert_eq!(tv.sync_group().unwrap(), None);
}
