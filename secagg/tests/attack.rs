//! A curious coordinator with everything it received in a round (every
//! key, sealed share, masked vector and revealed share) tries to read one
//! device's update, as it would read a watch history: from which rows of
//! the update are non-zero (the items trained on). On what a plain upload
//! shows (the quantized update itself) it reads them exactly; on what
//! secure aggregation sends, even after removing every mask it can
//! rebuild, it does no better than chance, and the values are uniform.

mod common;

use std::collections::BTreeMap;

use common::{LEN, config, run_with};
use hearth_secagg::keys::{self, MaskSign};
use hearth_secagg::quantize;
use hearth_secagg::shamir::{self, SecretShare};
use hearth_secagg::wire::{self, Reply, ReplyBody, ShareKind};

const N: usize = 20;
const BITS: u32 = 20;

/// Node `node`'s update: non-zero on 30 of the 300 rows, which rows
/// depending on the node (its "history").
fn sparse_update(node: u64) -> Vec<f32> {
    (0..LEN).map(|i| if (i as u64 * 7 + node) % 10 == 0 { 0.05 } else { 0.0 }).collect()
}

fn support(node: u64) -> Vec<bool> {
    sparse_update(node).iter().map(|&v| v != 0.0).collect()
}

/// The attacker's guess of the support from a vector of residues: a row is
/// guessed non-zero if its residue is not 0 and, read as a signed integer,
/// small (as the quantized update's rows are: at most C * scale).
fn guess(values: &[u32], scale: f64) -> Vec<bool> {
    let half = 1i64 << (BITS - 1);
    values
        .iter()
        .map(|&v| {
            let v = v as i64;
            let signed = if v >= half { v - (1 << BITS) } else { v };
            signed != 0 && (signed.unsigned_abs() as f64) <= 1.0 * scale + 1.0
        })
        .collect()
}

/// True-positive rate minus false-positive rate of a guess: 1 for a
/// perfect reading, about 0 for chance.
fn advantage(guess: &[bool], truth: &[bool]) -> f64 {
    let positives = truth.iter().filter(|t| **t).count() as f64;
    let negatives = truth.len() as f64 - positives;
    let tp = guess.iter().zip(truth).filter(|(g, t)| **g && **t).count() as f64;
    let fp = guess.iter().zip(truth).filter(|(g, t)| **g && !**t).count() as f64;
    tp / positives - fp / negatives
}

#[test]
fn the_coordinator_reads_nothing_from_what_it_receives() {
    let outcome = run_with(N, 100, &BTreeMap::new(), &sparse_update);
    let aggregate = outcome.result.as_ref().unwrap();
    let q = config(N, 100).quantization;
    assert_eq!(aggregate.survivors.len(), N);

    // The plain path's baseline: the quantized update gives the rows away.
    for (&node, values) in &outcome.quantized {
        assert_eq!(advantage(&guess(values, q.scale), &support(node)), 1.0, "plain, node {node}");
    }

    // What the coordinator holds: masked vectors, and the shares revealed
    // at the end, from which it rebuilds every survivor's self-mask seed.
    let mut masked = BTreeMap::new();
    let mut self_shares: BTreeMap<u64, Vec<SecretShare>> = BTreeMap::new();
    for (stage, node, bytes) in &outcome.received {
        let reply: Reply = wire::decode(bytes, usize::MAX).unwrap();
        match (stage, reply.body.unwrap()) {
            (2, ReplyBody::Masked(m)) => {
                masked.insert(*node, quantize::unpack(&m.packed, BITS, LEN).unwrap());
            }
            (3, ReplyBody::Revealed(r)) => {
                for s in r.shares {
                    assert_eq!(s.kind, ShareKind::SelfMask as i32, "no mask key is revealed when no one drops");
                    let value = s.value.as_slice().try_into().unwrap();
                    self_shares.entry(s.owner).or_default().push(SecretShare { index: s.index, value });
                }
            }
            _ => {}
        }
    }
    let mut residues = Vec::new();
    for (&node, values) in &masked {
        // Every mask the coordinator can take out: the self mask.
        let seed = shamir::combine(&self_shares[&node], outcome.thresholds[&node]).unwrap();
        let mut unmasked = values.clone();
        keys::apply_mask(&seed, BITS, &mut unmasked, MaskSign::Subtract);
        let adv = advantage(&guess(&unmasked, q.scale), &support(node));
        // 300 rows, 30 positives: chance gives an advantage with a standard
        // deviation of about 0.06; the plain path gives 1.
        assert!(adv.abs() < 0.25, "node {node}: advantage {adv}");
        residues.extend(unmasked);
    }
    // The residues are uniform modulo 2^20: a chi-square test over their
    // top 6 bits (64 bins, 6,000 values; the 99.99% point of chi-square
    // with 63 degrees of freedom is about 112).
    let mut bins = [0u32; 64];
    for r in &residues {
        bins[(r >> (BITS - 6)) as usize] += 1;
    }
    let expected = residues.len() as f64 / 64.0;
    let chi2: f64 = bins.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
    assert!(chi2 < 112.0, "chi-square {chi2}");
    // And a masked vector taken alone says no more than that.
    let mut alone = 0.0f64;
    for (&node, values) in &masked {
        alone = alone.max(advantage(&guess(values, q.scale), &support(node)).abs());
    }
    assert!(alone < 0.25, "masked vectors alone: advantage {alone}");
}
