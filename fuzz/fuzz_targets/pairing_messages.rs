//! Sync pairing's messages where they arrive, through a relay no device
//! trusts: the first byte picks the receiver (0 a device answering a
//! commitment, 1 an inviter taking an answer, 2 a joiner taking a reveal,
//! 3 a joiner taking a welcome), whose honest counterpart ran the steps
//! before; the rest is decoded and, when it is a message, taken. Anything
//! may be refused; nothing may panic, and no welcome may open for a reveal
//! the joiner did not check.
#![no_main]

use hearth_core::sync::pairing::{GroupKey, Inviter, Joiner, PairingMessage};
use libfuzzer_sys::fuzz_target;

fn group() -> GroupKey {
    GroupKey { group_id: [7; 16], profile_key: [9; 32] }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let Ok(message) = PairingMessage::decode(body) else { return };
    let Ok((mut inviter, commit)) = Inviter::start(group()) else { return };
    match (which % 4, message) {
        (0, PairingMessage::Commit(c)) => {
            let _ = Joiner::answer(c);
        }
        (1, PairingMessage::Answer(a)) => {
            if inviter.reveal(&a).is_ok() {
                let _ = inviter.welcome(true);
            }
        }
        (2, PairingMessage::Reveal(r)) => {
            let Ok((mut joiner, _)) = Joiner::answer(commit) else { return };
            let _ = joiner.check(&r);
        }
        (3, PairingMessage::Welcome(w)) => {
            let Ok((mut joiner, answer)) = Joiner::answer(commit) else { return };
            let Ok((reveal, _)) = inviter.reveal(&answer) else { return };
            if joiner.check(&reveal).is_ok() {
                // A fresh pairing's welcome key: a forged welcome opens with
                // probability 2^-128.
                assert!(joiner.accept(&w, true).is_err(), "a forged welcome opened");
            }
        }
        _ => {}
    }
});
