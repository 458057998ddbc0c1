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

use log::warn;
use serde::{Deserialize, Serialize};

use super::accountant::{AccountantError, DistributedGaussian, RdpAccountant};

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

/// How an update was protected on its way to the coordinator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, uniffi::Enum)]
pub enum Aggregation {
    /// The coordinator received the clipped update itself (and is trusted
    /// to add the noise it announced): entries written before secure
    /// aggregation existed read as this.
    #[default]
    Plain,
    /// The update left the device quantized and masked (secure
    /// aggregation): the coordinator could read only the sum of the round's
    /// updates, never this one.
    Secure,
}

/// Where a round's differential-privacy noise was added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, uniffi::Enum)]
pub enum NoiseMode {
    /// By the coordinator, to the sum (central DP): the epsilon holds if it
    /// added the noise it announced, which the device cannot check. Entries
    /// written before distributed noise existed read as this.
    #[default]
    Central,
    /// By the devices, each adding a share to its quantized update before
    /// masking (distributed DP): the noise is in the sum whatever the
    /// coordinator does, as long as the honest fraction of the cohort the
    /// device assumed took part.
    Distributed,
}

/// What a round's contribution was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, uniffi::Enum)]
pub enum RoundTask {
    /// A model update from local training. Entries written before
    /// evaluation rounds existed read as this.
    #[default]
    Training,
    /// The device's evaluation of a candidate model for the release gate
    /// (a few bounded metrics, in a secure sum with noise): charged to the
    /// same budget as training.
    Evaluation,
    /// The device's metric report of an experiment's arm (bounded per-arm
    /// values, in a secure sum with noise): charged the same way.
    ExperimentReport,
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
    #[serde(with = "float_text")]
    pub norm_before_clip: f64,
    #[serde(with = "float_text")]
    pub norm_after_clip: f64,
    #[serde(with = "float_text")]
    pub clip_norm: f64,
    /// As the coordinator announced them for this round.
    #[serde(with = "float_text")]
    pub noise_multiplier: f64,
    #[serde(with = "float_text")]
    pub sampling_rate: f64,
    /// The epsilon spent over all entries up to and including this one, at
    /// the ledger's delta.
    #[serde(with = "float_text")]
    pub epsilon_total: f64,
    /// The local-DP epsilon of the segment report sent with the update: 0
    /// without one, and for a report repeated unchanged.
    #[serde(default, with = "float_text")]
    pub segment_report_epsilon: f64,
    /// How the update was protected in transit.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Where the round's noise was added. For a distributed round,
    /// `noise_multiplier` is the std of the honest devices' summed noise in
    /// clip norms and `sampling_rate` the probability of the device's own
    /// coin (`included`), never the coordinator's sampling: 1 when the
    /// round had no coin (no amplification is assumed).
    #[serde(default)]
    pub noise_mode: NoiseMode,
    /// Distributed rounds with a local coin: whether this device's coin put
    /// its update in the sum (it trained and added its noise share either
    /// way, so the coordinator cannot tell). None (and absent from the
    /// JSON) without a coin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[uniffi(default = None)]
    pub included: Option<bool>,
    /// Distributed rounds: this device's own share of the noise (its std, in
    /// clip norms), the cohort the round started with, the honest fraction
    /// this device assumed, and the integers' scale and count, from which
    /// the round's epsilon follows. Zero for central rounds.
    #[serde(default, with = "float_text")]
    pub noise_share: f64,
    #[serde(default)]
    pub cohort: u32,
    #[serde(default, with = "float_text")]
    pub honest_fraction: f64,
    #[serde(default, with = "float_text")]
    pub scale: f64,
    #[serde(default)]
    pub dimension: u64,
    /// Which node key the round used: the first 8 bytes of the SHA-256 of
    /// its public key, in hex (kept here, never sent; empty in entries
    /// from before keys rotated).
    #[serde(default)]
    pub node_key: String,
    /// What the round asked for: training or an evaluation.
    #[serde(default)]
    pub task: RoundTask,
}

impl LedgerEntry {
    /// The round's terms as the accountant composes them.
    pub(crate) fn terms(&self) -> RoundTerms {
        match self.noise_mode {
            NoiseMode::Central => {
                RoundTerms::Central { noise_multiplier: self.noise_multiplier, sampling_rate: self.sampling_rate }
            }
            NoiseMode::Distributed => RoundTerms::Distributed(
                DistributedGaussian::for_cohort(
                    self.noise_multiplier,
                    self.honest_fraction,
                    self.cohort,
                    self.clip_norm,
                    self.scale,
                    self.dimension,
                )
                .with_sampling_rate(self.sampling_rate),
            ),
        }
    }
}

/// The privacy terms of one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RoundTerms {
    /// The coordinator adds Gaussian noise of std z C to the sum of a
    /// Poisson sample of rate q.
    Central { noise_multiplier: f64, sampling_rate: f64 },
    /// The devices add it, in discrete shares (amplified only by the
    /// device's own coin).
    Distributed(DistributedGaussian),
}

impl RoundTerms {
    fn compose(&self, accountant: &mut RdpAccountant) -> Result<(), AccountantError> {
        match self {
            RoundTerms::Central { noise_multiplier, sampling_rate } => {
                accountant.compose(*noise_multiplier, *sampling_rate, 1)
            }
            RoundTerms::Distributed(round) => accountant.compose_distributed(round, 1),
        }
    }
}

/// The ledger as the privacy screen shows it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct PrivacyLedger {
    /// Oldest first.
    pub entries: Vec<LedgerEntry>,
    /// Over every entry, and the person's other devices' entries that sync
    /// brought here, at `delta`. Infinite after a round without noise.
    pub epsilon_spent: f64,
    pub delta: f64,
    /// The store's budget: no round starts that would take the epsilon
    /// spent above it.
    pub epsilon_budget: f64,
}

/// The epsilon spent by `entries` plus, when given, one more round of
/// `next`'s terms and `next_local` of local DP.
///
/// A stored entry whose terms the accountant cannot compose (a noise
/// multiplier or sampling rate out of range, as an entry recovered from a
/// damaged ledger has) makes the epsilon infinite: what it spent is not
/// known, so nothing is assumed. The terms of `next` must be valid.
pub(crate) fn epsilon(
    entries: &[LedgerEntry],
    next: Option<RoundTerms>,
    next_local: f64,
    delta: f64,
) -> Result<f64, AccountantError> {
    let mut accountant = RdpAccountant::new();
    for e in entries {
        if e.terms().compose(&mut accountant).is_err() {
            if let Some(next) = next {
                next.compose(&mut RdpAccountant::new())?;
            }
            return Ok(f64::INFINITY);
        }
    }
    if let Some(next) = next {
        next.compose(&mut accountant)?;
    }
    let local: f64 = entries.iter().map(|e| e.segment_report_epsilon).sum::<f64>() + next_local;
    Ok(accountant.epsilon(delta)? + local)
}

/// The ledger as stored (sealed in the `state` table): a JSON array of
/// entries.
pub(crate) fn encode(entries: &[LedgerEntry]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(entries)
}

/// Reads the stored ledger, entry by entry: an entry that does not parse is
/// kept as [`unreadable_entry`] (it counts, and what it spent is not known)
/// instead of making the whole ledger, and with it the export and every
/// later round, unreadable. A document that is not an array at all becomes
/// one such entry.
pub(crate) fn decode(bytes: &[u8]) -> Vec<LedgerEntry> {
    let values: Vec<serde_json::Value> = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(_) => {
            warn!("the privacy ledger is not a JSON array; kept as one entry of unknown cost");
            return vec![unreadable_entry(&serde_json::Value::Null)];
        }
    };
    let mut bad = 0;
    let entries = values
        .iter()
        .map(|v| {
            LedgerEntry::deserialize(v).unwrap_or_else(|_| {
                bad += 1;
                unreadable_entry(v)
            })
        })
        .collect();
    if bad > 0 {
        warn!("{bad} privacy ledger entries did not parse; kept as entries of unknown cost");
    }
    entries
}

/// What stands for an entry that cannot be read: its run, round and time
/// when those still parse, `Unconfirmed`, and no noise, so the epsilon
/// spent becomes infinite (the device takes part in no round under a
/// finite budget afterwards: it cannot show what that entry spent).
pub(crate) fn unreadable_entry(raw: &serde_json::Value) -> LedgerEntry {
    LedgerEntry {
        run_id: raw["run_id"].as_u64().unwrap_or(0),
        round: raw["round"].as_u64(),
        at_ms: raw["at_ms"].as_i64().unwrap_or(0),
        status: UploadStatus::Unconfirmed,
        bytes_sent: raw["bytes_sent"].as_u64().unwrap_or(0),
        norm_before_clip: f64::NAN,
        norm_after_clip: f64::NAN,
        clip_norm: f64::NAN,
        noise_multiplier: f64::NAN,
        sampling_rate: f64::NAN,
        epsilon_total: f64::INFINITY,
        segment_report_epsilon: 0.0,
        aggregation: Aggregation::Plain,
        noise_mode: NoiseMode::Central,
        noise_share: 0.0,
        cohort: 0,
        honest_fraction: 0.0,
        scale: 0.0,
        dimension: 0,
        included: None,
        node_key: String::new(),
        task: RoundTask::default(),
    }
}

/// An `f64` that may not be finite, in JSON: a number when finite, else the
/// string `"inf"`, `"-inf"` or `"nan"` (JSON has no number for them, and
/// serde_json writes them as `null`). Reading also takes `null`, as stores
/// written before this encoding hold it for an infinite epsilon: read back
/// as infinity, the larger (safer) reading of a privacy cost.
pub(crate) mod float_text {
    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else if x.is_nan() {
            s.serialize_str("nan")
        } else if *x > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = f64;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, \"inf\", \"-inf\" or \"nan\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
                match v {
                    "inf" => Ok(f64::INFINITY),
                    "-inf" => Ok(f64::NEG_INFINITY),
                    "nan" => Ok(f64::NAN),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
                Ok(f64::INFINITY)
            }
            fn visit_none<E: de::Error>(self) -> Result<f64, E> {
                Ok(f64::INFINITY)
            }
        }
        d.deserialize_any(V)
    }
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
            aggregation: Aggregation::Plain,
            noise_mode: NoiseMode::Central,
            noise_share: 0.0,
            cohort: 0,
            honest_fraction: 0.0,
            scale: 0.0,
            dimension: 0,
            included: None,
            node_key: String::new(),
            task: RoundTask::Training,
        }
    }

    fn central(z: f64, q: f64) -> Option<RoundTerms> {
        Some(RoundTerms::Central { noise_multiplier: z, sampling_rate: q })
    }

    #[test]
    fn distributed_entries_are_composed_with_the_distributed_accountant() {
        let mut d = entry(1.0, 1.0);
        d.aggregation = Aggregation::Secure;
        d.noise_mode = NoiseMode::Distributed;
        d.cohort = 100;
        d.honest_fraction = 2.0 / 3.0;
        d.scale = 4828.0;
        d.dimension = 144_935;
        d.noise_share = (1.0f64 / 67.0).sqrt();
        let round = DistributedGaussian {
            noise_multiplier: 1.0,
            honest: 67,
            clip_norm: 1.0,
            scale: 4828.0,
            dimension: 144_935,
            sampling_rate: 1.0,
        };
        let mut a = RdpAccountant::new();
        a.compose(1.1, 0.01, 1).unwrap();
        a.compose_distributed(&round, 2).unwrap();
        let entries = vec![entry(1.1, 0.01), d.clone()];
        assert_eq!(
            epsilon(&entries, Some(RoundTerms::Distributed(round)), 0.0, 1e-6).unwrap(),
            a.epsilon(1e-6).unwrap()
        );
        // A round with the device's coin is composed at the coin's rate,
        // whether or not the coin put the update in.
        let mut coin = d.clone();
        coin.sampling_rate = 0.25;
        coin.included = Some(false);
        let mut a = RdpAccountant::new();
        a.compose(1.1, 0.01, 1).unwrap();
        a.compose_distributed(&round.with_sampling_rate(0.25), 1).unwrap();
        let entries = vec![entry(1.1, 0.01), coin.clone()];
        assert_eq!(epsilon(&entries, None, 0.0, 1e-6).unwrap(), a.epsilon(1e-6).unwrap());
        assert_eq!(decode(&encode(&[coin.clone()]).unwrap()), vec![coin]);
        // It round-trips, and an entry from before the fields existed reads
        // as central.
        assert_eq!(decode(&encode(&[d.clone()]).unwrap()), vec![d]);
        let mut old = serde_json::to_value(entry(1.1, 0.01)).unwrap();
        for field in
            ["noise_mode", "noise_share", "cohort", "honest_fraction", "scale", "dimension", "included", "node_key"]
        {
            old.as_object_mut().unwrap().remove(field);
        }
        assert_eq!(decode(&serde_json::to_vec(&vec![old]).unwrap()), vec![entry(1.1, 0.01)]);
    }

    #[test]
    fn the_ledger_composes_rounds_as_the_accountant_does() {
        let entries = vec![entry(1.1, 0.01), entry(1.1, 0.01), entry(2.0, 0.05)];
        let mut a = RdpAccountant::new();
        a.compose(1.1, 0.01, 2).unwrap();
        a.compose(2.0, 0.05, 1).unwrap();
        assert_eq!(epsilon(&entries, None, 0.0, 1e-6).unwrap(), a.epsilon(1e-6).unwrap());
        let next = epsilon(&entries, central(1.1, 0.01), 0.0, 1e-6).unwrap();
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

    #[test]
    fn non_finite_values_round_trip_and_a_bad_entry_spoils_only_itself() {
        let mut e = entry(0.0, 1.0);
        e.epsilon_total = f64::INFINITY;
        e.norm_before_clip = f64::NAN;
        e.norm_after_clip = f64::NEG_INFINITY;
        let ok = entry(1.1, 0.01);
        let bytes = encode(&[ok.clone(), e.clone()]).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"epsilon_total\":\"inf\"") && !text.contains("null"), "{text}");
        let back = decode(&bytes);
        assert_eq!(back[0], ok);
        assert_eq!(back[1].epsilon_total, f64::INFINITY);
        assert!(back[1].norm_before_clip.is_nan());
        assert_eq!(back[1].norm_after_clip, f64::NEG_INFINITY);

        // What serde_json wrote before: null for the infinite epsilon.
        let legacy = text.replace("\"inf\"", "null").replace("\"nan\"", "null").replace("\"-inf\"", "null");
        let back = decode(legacy.as_bytes());
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], ok);
        assert_eq!((back[1].run_id, back[1].epsilon_total), (1, f64::INFINITY));

        // An entry that does not parse: the others stay; it counts as unknown.
        let mangled = format!("[{}, {{\"run_id\": 9, \"round\": \"x\"}}]", serde_json::to_string(&ok).unwrap());
        let back = decode(mangled.as_bytes());
        assert_eq!(back[0], ok);
        assert_eq!((back[1].run_id, back[1].status), (9, UploadStatus::Unconfirmed));
        assert!(epsilon(&back, None, 0.0, 1e-6).unwrap().is_infinite());
        assert!(epsilon(&back[..1], None, 0.0, 1e-6).unwrap().is_finite());
        // The next round's terms are still checked.
        assert!(epsilon(&back, central(-1.0, 0.5), 0.0, 1e-6).is_err());
        assert_eq!(decode(b"{not json").len(), 1);
    }
}
