//! Which arm this install is in.
//!
//! The arm is a keyed hash: HMAC-SHA256 under a 32-byte secret drawn from
//! the system's CSPRNG the first time an experiment asks, kept sealed in the
//! store (state record `experiment_secret`), of the experiment's id. The
//! first 8 bytes of the tag, big-endian, give u = (tag >> 11) / 2^53 in
//! [0, 1), and the arm is the first whose cumulative share, over the total,
//! exceeds u. So the arm is stable across restarts and app updates, uniform
//! over installs in proportion to the shares, independent between
//! experiments, and unrelated to the node key or anything else that leaves
//! the device; `delete_all` draws a new secret, and with it new arms.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::Experiment;
use crate::error::{Error, Result};
use crate::store::Store;

/// The state record holding the secret.
pub(crate) const SECRET: &str = "experiment_secret";
const SECRET_LEN: usize = 32;
/// Domain separation of the hashed message.
const DOMAIN: &[u8] = b"hearth/v1/experiment-arm\0";

/// This install's secret, drawn and stored on first use.
pub(crate) fn secret(store: &mut Store) -> Result<[u8; SECRET_LEN]> {
    if let Some(secret) = existing_secret(store)? {
        return Ok(secret);
    }
    let mut secret = [0u8; SECRET_LEN];
    SystemRandom::new().fill(&mut secret).map_err(|_| Error::Crypto("no randomness"))?;
    store.put_state(SECRET, &secret)?;
    Ok(secret)
}

/// This install's secret, if an experiment has drawn it.
pub(crate) fn existing_secret(store: &Store) -> Result<Option<[u8; SECRET_LEN]>> {
    store
        .get_state(SECRET)?
        .map(|bytes| bytes.as_slice().try_into().map_err(|_| Error::Integrity { table: "state" }))
        .transpose()
}

/// The position in [0, 1) this install draws for `experiment_id`.
pub(crate) fn draw(secret: &[u8; SECRET_LEN], experiment_id: &str) -> f64 {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(DOMAIN);
    ctx.update(experiment_id.as_bytes());
    let tag = ctx.sign();
    let mut first = [0u8; 8];
    first.copy_from_slice(&tag.as_ref()[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// The index of the arm a draw `u` in [0, 1) falls in.
pub(crate) fn arm_at(experiment: &Experiment, u: f64) -> usize {
    let total: f64 = experiment.arms.iter().map(|a| a.share).sum();
    let target = u * total;
    let mut cumulative = 0.0;
    for (i, arm) in experiment.arms.iter().enumerate() {
        cumulative += arm.share;
        if target < cumulative {
            return i;
        }
    }
    experiment.arms.len() - 1
}

/// The arm of `experiment` this install is in.
pub(crate) fn arm_index(secret: &[u8; SECRET_LEN], experiment: &Experiment) -> usize {
    arm_at(experiment, draw(secret, &experiment.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::{ArmTreatment, ExperimentArm};

    fn arms(shares: &[f64]) -> Experiment {
        Experiment {
            id: "home-row".into(),
            arms: shares
                .iter()
                .enumerate()
                .map(|(i, &share)| ExperimentArm { name: format!("arm{i}"), share, treatment: ArmTreatment::Model })
                .collect(),
        }
    }

    /// Known answers, computed independently with Python's `hmac` module:
    /// `hmac.new(bytes([7]) * 32, b"hearth/v1/experiment-arm\0" + id,
    /// "sha256").digest()[:8]`, big-endian, shifted right by 11.
    #[test]
    fn draws_match_known_answers() {
        let secret = [7u8; SECRET_LEN];
        let known: [(&str, u64); 3] = [
            ("home-row", 830_559_991_536_529),
            ("a", 2_327_659_518_320_190),
            ("continue-watching.v2", 3_502_350_623_622_347),
        ];
        for (id, top53) in known {
            assert_eq!(draw(&secret, id), top53 as f64 / (1u64 << 53) as f64, "{id}");
        }
    }

    #[test]
    fn arms_follow_the_cumulative_shares() {
        let e = arms(&[1.0, 3.0]);
        assert_eq!(arm_at(&e, 0.0), 0);
        assert_eq!(arm_at(&e, 0.2499), 0);
        assert_eq!(arm_at(&e, 0.25), 1);
        assert_eq!(arm_at(&e, 0.999_999), 1);
        let e = arms(&[2.0, 2.0, 4.0]);
        assert_eq!(arm_at(&e, 0.26), 1);
        assert_eq!(arm_at(&e, 0.5), 2);
    }

    #[test]
    fn installs_spread_over_arms_by_share() {
        // 20,000 random secrets; each arm's count within 4.5 binomial
        // standard deviations of its share.
        let e = arms(&[1.0, 1.0, 2.0]);
        let n = 20_000usize;
        let mut counts = [0usize; 3];
        let rng = SystemRandom::new();
        for _ in 0..n {
            let mut s = [0u8; SECRET_LEN];
            rng.fill(&mut s).unwrap();
            counts[arm_index(&s, &e)] += 1;
        }
        for (count, p) in counts.iter().zip([0.25, 0.25, 0.5]) {
            let mean = n as f64 * p;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!((*count as f64 - mean).abs() < 4.5 * sd, "{counts:?}");
        }
    }
}
