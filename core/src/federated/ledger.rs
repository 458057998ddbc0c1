//! The privacy ledger: one entry per update that left the device, kept
//! sealed in the store, shown on the user's privacy screen and included in
//! the export.
//!
//! An entry is written *before* the update is pushed (charged as
//! `Pending`), then marked `Sent` with the bytes that went, or `Unconfirmed`
//! when the push failed part-way. Every entry counts towards the epsilon
//! spent whatever its status: a push that failed may still have delivered
//! the update, and a device that crashed between the two writes must not
//! forget it.
//!
//! The epsilon is the [`RdpAccountant`]'s over all entries, each one round
//! of the subsampled Gaussian mechanism with the noise multiplier and the
//! sampling rate the coordinator announced for it, converted at the delta
//! of the store's [`crate::HearthConfig`], plus the epsilon of every segment
//! report sent with an update (pure local DP, randomized on the device;
//! basic composition: the guarantees add). That is the guarantee for the
//! user's contributions (user-level DP: a device sends one update per
//! round), *if* the coordinator adds the noise it announces: central DP
//! trusts the coordinator to do so, and the device cannot check it.

use serde::{Deserialize, Serialize};

use super::accountant::{AccountantError, RdpAccountant};

/// Where an update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, uniffi::Enum)]
pub enum UploadStatus {
    /// Charged, about to be pushed (a crash left it so).
    Pending,
    /// Pushed; the SuperLink stored it.
    Sent,
    /// The push failed part-way: the update may or may not have arrived.
    Unconfirmed,
}

/// One update that left (or may have left) the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct LedgerEntry {
    /// The coordinator's run and round.
    pub run_id: u64,
    pub round: Option<u64>,
    /// When the update was made (ms since the epoch).
    pub at_ms: i64,
    pub status: UploadStatus,
    /// Request bodies sent in the round, in bytes (0 until sent).
    pub bytes_sent: u64,
    /// The update's L2 norm before and after clipping to `clip_norm`.
    pub norm_before_clip: f64,
    pub norm_after_clip: f64,
    pub clip_norm: f64,
    /// As the coordinator announced them for this round.
    pub noise_multiplier: f64,
    pub sampling_rate: f64,
    /// The epsilon spent over all entries up to and including this one, at
    /// the ledger's delta.
    pub epsilon_total: f64,
    /// The local-DP epsilon of the segment report sent with the update: 0
    /// without one, and for a report repeated unchanged.
    #[serde(default)]
    pub segment_report_epsilon: f64,
}

/// The ledger as the privacy screen shows it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct PrivacyLedger {
    /// Oldest first.
    pub entries: Vec<LedgerEntry>,
    /// Over every entry, at `delta`. Infinite after a round without noise.
    pub epsilon_spent: f64,
    pub delta: f64,
    /// The store's budget: no round starts that would take the epsilon
    /// spent above it.
    pub epsilon_budget: f64,
}

/// The epsilon spent by `entries` plus, when given, one more round of
/// `(noise multiplier, sampling rate)` and `next_local` of local DP.
pub(crate) fn epsilon(
    entries: &[LedgerEntry],
    next: Option<(f64, f64)>,
    next_local: f64,
    delta: f64,
) -> Result<f64, AccountantError> {
    let mut accountant = RdpAccountant::new();
    for e in entries {
        accountant.compose(e.noise_multiplier, e.sampling_rate, 1)?;
    }
    if let Some((z, q)) = next {
        accountant.compose(z, q, 1)?;
    }
    let local: f64 = entries.iter().map(|e| e.segment_report_epsilon).sum::<f64>() + next_local;
    Ok(accountant.epsilon(delta)? + local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(z: f64, q: f64) -> LedgerEntry {
        LedgerEntry {
            run_id: 1,
            round: Some(1),
            at_ms: 0,
            status: UploadStatus::Sent,
            bytes_sent: 0,
            norm_before_clip: 2.0,
            norm_after_clip: 1.0,
            clip_norm: 1.0,
            noise_multiplier: z,
            sampling_rate: q,
            epsilon_total: 0.0,
            segment_report_epsilon: 0.0,
        }
    }

    #[test]
    fn the_ledger_composes_rounds_as_the_accountant_does() {
        let entries = vec![entry(1.1, 0.01), entry(1.1, 0.01), entry(2.0, 0.05)];
        let mut a = RdpAccountant::new();
        a.compose(1.1, 0.01, 2).unwrap();
        a.compose(2.0, 0.05, 1).unwrap();
        assert_eq!(epsilon(&entries, None, 0.0, 1e-6).unwrap(), a.epsilon(1e-6).unwrap());
        let next = epsilon(&entries, Some((1.1, 0.01)), 0.0, 1e-6).unwrap();
        assert!(next > epsilon(&entries, None, 0.0, 1e-6).unwrap());
        assert_eq!(epsilon(&[], None, 0.0, 1e-6).unwrap(), 0.0);
        assert!(epsilon(&[entry(0.0, 1.0)], None, 0.0, 1e-6).unwrap().is_infinite(), "no noise: no guarantee");
        // Segment reports add their local epsilon.
        let mut with_report = entries.clone();
        with_report[1].segment_report_epsilon = 0.5;
        let base = epsilon(&entries, None, 0.0, 1e-6).unwrap();
        assert!((epsilon(&with_report, None, 0.0, 1e-6).unwrap() - (base + 0.5)).abs() < 1e-12);
        assert!((epsilon(&entries, None, 0.25, 1e-6).unwrap() - (base + 0.25)).abs() < 1e-12);
    }
}
