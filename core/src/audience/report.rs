//! The segment report: the device's memberships as bits over a public
//! schema, each kept or flipped at random (local differential privacy), the
//! memo that repeats a report while the memberships hold, and the
//! coordinator's estimate of segment sizes from many reports.

use serde::{Deserialize, Serialize};

use super::segments::{SegmentConfig, SegmentReport, Segments, keep_probability};
use crate::error::{Error, HearthError, Result};
use crate::random::SystemWords;
use crate::store::Store;

/// Reports remembered (one per distinct set of memberships).
const MAX_MEMOS: usize = 32;
const MEMO_KEY: &str = "segments.report_memo";

/// The true membership vector of `segments` under `config`'s schema (one
/// bool per label). Stays on the device.
pub fn membership_bits(segments: &Segments, config: &SegmentConfig) -> Vec<bool> {
    let mut bits = Vec::with_capacity(config.report_labels().len());
    let one_of = |n: usize, i: Option<usize>| (0..n).map(move |k| Some(k) == i);
    bits.extend(one_of(4, Some(segments.lifecycle as usize)));
    bits.extend(one_of(3, Some(segments.engagement as usize)));
    bits.extend(one_of(4, segments.daypart.map(|d| d as usize)));
    bits.extend(one_of(5, segments.primary_device.map(|d| d.index())));
    bits.push(segments.binge_watcher);
    bits.push(segments.abandoner);
    for c in &config.report_categories {
        bits.push(segments.top_categories.iter().any(|t| &t.category == c));
    }
    bits
}

/// Packs bits eight to a byte, least significant first.
pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, b) in bits.iter().enumerate() {
        if *b {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// The `n` bits packed in `bytes`.
pub fn unpack_bits(bytes: &[u8], n: usize) -> Vec<bool> {
    (0..n).map(|i| bytes.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1)).collect()
}

/// Randomized response over `truth`: each bit kept with probability
/// `keep_probability(epsilon / sensitivity)`, flipped otherwise, with
/// uniform draws from `next_u64`.
pub(crate) fn randomize(truth: &[bool], config: &SegmentConfig, mut next_u64: impl FnMut() -> u64) -> SegmentReport {
    let bit_epsilon = config.report_epsilon / config.report_sensitivity() as f64;
    let keep = keep_probability(bit_epsilon);
    let noisy: Vec<bool> = truth
        .iter()
        .map(|b| {
            let u = (next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if u < keep { *b } else { !*b }
        })
        .collect();
    SegmentReport {
        labels: config.report_labels(),
        bits: pack_bits(&noisy),
        epsilon: config.report_epsilon,
        bit_epsilon,
        keep_probability: keep,
        epsilon_spent: config.report_epsilon,
    }
}

/// The report of `segments` under `config` with draws from a seeded
/// generator: for simulations and tests only (a device's report must use
/// unpredictable randomness, as `Hearth::segment_report` does).
pub fn simulated_report(segments: &Segments, config: &SegmentConfig, seed: u64) -> SegmentReport {
    let mut rng = crate::random::SplitMix::new(seed);
    randomize(&membership_bits(segments, config), config, || rng.next_u64())
}

/// Segment sizes estimated from many devices' reports, with the standard
/// error of each.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentEstimate {
    pub labels: Vec<String>,
    pub reports: u64,
    /// Unbiased estimates of how many of the reporting devices are in each
    /// segment (may fall outside 0..=reports).
    pub sizes: Vec<f64>,
    /// `sqrt(n p (1 - p)) / (2p - 1)`: the exact standard deviation of each
    /// estimate, whatever the true size.
    pub std_error: f64,
}

/// The coordinator's estimator (the same as
/// `coordinator/hearth_coordinator/segments.py`): with `n` reports, `c_j`
/// of which have bit `j` set, and keep probability `p`,
/// `size_j = (c_j - n (1 - p)) / (2p - 1)`. Each reported bit is set with
/// probability `p` when true and `1 - p` when not, so `E[c_j] = s_j p +
/// (n - s_j)(1 - p)` and the estimate is unbiased; its variance is
/// `n p (1 - p) / (2p - 1)^2` whatever `s_j`. Reports must share labels and
/// `bit_epsilon`.
pub fn estimate_segment_sizes(reports: &[SegmentReport]) -> Result<SegmentEstimate, HearthError> {
    let Some(first) = reports.first() else {
        return Err(Error::invalid("reports", "none given").into());
    };
    let d = first.labels.len();
    let mut counts = vec![0u64; d];
    for r in reports {
        if r.labels != first.labels {
            return Err(Error::invalid("reports", "labels differ between reports").into());
        }
        if r.bit_epsilon != first.bit_epsilon {
            return Err(Error::invalid("reports", "bit_epsilon differs between reports").into());
        }
        if r.bits.len() != d.div_ceil(8) {
            return Err(Error::invalid("reports", "bits do not match the labels").into());
        }
        for (j, b) in unpack_bits(&r.bits, d).into_iter().enumerate() {
            counts[j] += b as u64;
        }
    }
    let p = keep_probability(first.bit_epsilon);
    let n = reports.len() as f64;
    Ok(SegmentEstimate {
        labels: first.labels.clone(),
        reports: reports.len() as u64,
        sizes: counts.iter().map(|c| (*c as f64 - n * (1.0 - p)) / (2.0 * p - 1.0)).collect(),
        std_error: (n * p * (1.0 - p)).sqrt() / (2.0 * p - 1.0),
    })
}

/// A remembered randomization: the key binds schema, epsilon and the true
/// vector (sealed in the store, never sent).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Memo {
    key: String,
    bits: Vec<u8>,
}

pub(crate) fn memo_key(config: &SegmentConfig, truth: &[bool]) -> String {
    let mut bytes = Vec::new();
    for l in config.report_labels() {
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(0);
    }
    bytes.extend_from_slice(&config.report_epsilon.to_le_bytes());
    bytes.extend_from_slice(&pack_bits(truth));
    bytes.extend_from_slice(&(truth.len() as u64).to_le_bytes());
    crate::store::crypto::sha256_hex(&bytes)
}

/// The randomized report of `segments` under `config`: the one sent before
/// when the memberships are unchanged (spending nothing), else a new one,
/// remembered in the store before it is handed out.
pub(crate) fn report(store: &mut Store, segments: &Segments, config: &SegmentConfig) -> Result<SegmentReport> {
    let truth = membership_bits(segments, config);
    let key = memo_key(config, &truth);
    let mut memos: Vec<Memo> = store.get_json(MEMO_KEY)?.unwrap_or_default();
    let bit_epsilon = config.report_epsilon / config.report_sensitivity() as f64;
    if let Some(pos) = memos.iter().position(|m| m.key == key) {
        let memo = memos.remove(pos);
        let report = SegmentReport {
            labels: config.report_labels(),
            bits: memo.bits.clone(),
            epsilon: config.report_epsilon,
            bit_epsilon,
            keep_probability: keep_probability(bit_epsilon),
            epsilon_spent: 0.0,
        };
        // Most recently used last.
        memos.push(memo);
        store.put_json(MEMO_KEY, &memos)?;
        return Ok(report);
    }
    let mut words = SystemWords::new();
    let report = randomize(&truth, config, || words.next_u64());
    if words.failed() {
        return Err(Error::Crypto("the system random generator failed"));
    }
    memos.push(Memo { key, bits: report.bits.clone() });
    if memos.len() > MAX_MEMOS {
        memos.drain(..memos.len() - MAX_MEMOS);
    }
    // Remembered before it is handed out: a report the app sends is always
    // one the device will repeat.
    store.put_json(MEMO_KEY, &memos)?;
    // Sent in a federated round, its epsilon_spent goes in the privacy
    // ledger with the update (federated/participation.rs).
    Ok(report)
}
