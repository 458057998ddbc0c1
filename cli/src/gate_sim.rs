//! The release gate in simulation (`hearth simulate --rounds R --gate-noise
//! z`): after each run, every device that has a held-out item evaluates the
//! run's final model (the candidate) against the model the run started
//! from (the published one) and the fallback, as a model-evaluation round
//! asks a real device to (`Hearth::evaluate_candidate`: the held-out item is
//! an engagement that came after everything the device trained on). The
//! devices' contributions are summed with Gaussian noise of std
//! z * sqrt(6) on every sum (the contribution's L2 bound), and
//! `gate_decision` publishes the candidate only if it beats both by more
//! than its 95% interval. Devices that are not told to install a model
//! keep ranking with the published one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use hearth_core::federated::accountant::RdpAccountant;
use hearth_core::{Event, GATE_METRICS, GateDecision, Hearth, ModelPackage, gate_decision};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::fedavg::normal;

/// Standard errors of the gate's intervals.
const Z_GATE: f64 = 1.96;

/// One comparison as the record keeps it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ComparisonRecord {
    pub difference: f64,
    pub low: f64,
    pub high: f64,
}

/// The gate's evaluation round and its decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateRecord {
    pub noise_multiplier: f64,
    /// Std of the noise on each sum.
    pub noise_std: f64,
    /// Epsilon of one device's evaluation (one Gaussian release of
    /// sensitivity sqrt(6), every device reporting), at the run's delta.
    pub epsilon: f64,
    /// Devices that evaluated (had a held-out engagement).
    pub devices: usize,
    /// The devices' own means, without noise.
    pub true_ndcg_at_10: [f64; 3],
    /// What the noisy sums say: candidate, published, fallback.
    pub estimated_ndcg_at_10: [f64; 3],
    pub against_published: ComparisonRecord,
    pub against_fallback: ComparisonRecord,
    pub publish: bool,
}

impl GateRecord {
    fn new(decision: &GateDecision, z: f64, sigma: f64, epsilon: f64, sums: &[f64; GATE_METRICS]) -> GateRecord {
        let n = sums[0].max(1.0);
        let cmp = |c: &hearth_core::Comparison| ComparisonRecord { difference: c.difference, low: c.low, high: c.high };
        GateRecord {
            noise_multiplier: z,
            noise_std: sigma,
            epsilon,
            devices: sums[0].round() as usize,
            true_ndcg_at_10: [sums[1] / n, sums[2] / n, sums[3] / n],
            estimated_ndcg_at_10: [decision.candidate, decision.published, decision.fallback],
            against_published: cmp(&decision.against_published),
            against_fallback: cmp(&decision.against_fallback),
            publish: decision.publish,
        }
    }
}

/// A device's part: its store, and its held-out engagement as an event
/// after its whole history.
pub struct Evaluator<'a> {
    pub hearth: &'a Hearth,
    pub held_out: Event,
}

/// Runs the evaluation round on `threads` threads and decides.
pub fn gate_round(
    evaluators: &[Evaluator<'_>],
    candidate: &ModelPackage,
    published: &ModelPackage,
    z: f64,
    delta: f64,
    seed: u64,
    threads: usize,
) -> Result<GateRecord> {
    let next = AtomicUsize::new(0);
    let sums = Mutex::new([0.0f64; GATE_METRICS]);
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let Some(d) = evaluators.get(next.fetch_add(1, Ordering::Relaxed)) else { return Ok(()) };
                        let found = d
                            .hearth
                            .evaluate_candidate_on(candidate, published, std::slice::from_ref(&d.held_out))
                            .context("a device's evaluation")?;
                        if let Some(found) = found {
                            let mut s = sums.lock().unwrap_or_else(|p| p.into_inner());
                            s.iter_mut().zip(found.evaluation.contribution()).for_each(|(s, c)| *s += c);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("an evaluation worker panicked"))??;
        }
        Ok(())
    })?;
    let sums = sums.into_inner().unwrap_or_else(|p| p.into_inner());
    let sigma = z * (GATE_METRICS as f64).sqrt();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6761_7465);
    let mut noisy = sums;
    noisy.iter_mut().for_each(|v| *v += sigma * normal(&mut rng));
    let decision = gate_decision(&noisy, sigma, Z_GATE);
    let epsilon = if z > 0.0 {
        let mut accountant = RdpAccountant::new();
        accountant.compose(z, 1.0, 1)?;
        accountant.epsilon(delta)?
    } else {
        f64::INFINITY
    };
    Ok(GateRecord::new(&decision, z, sigma, epsilon, &sums))
}

/// The gate's lines of a run.
pub fn print(g: &GateRecord) {
    println!(
        "    gate: {} devices evaluated the candidate on engagements held out of training; sums noised with std {:.3} \
         (z = {}, epsilon {:.2} per device)",
        g.devices, g.noise_std, g.noise_multiplier, g.epsilon
    );
    println!("          NDCG@10   candidate  published  fallback");
    let [c, p, f] = g.true_ndcg_at_10;
    println!("          devices'  {c:9.4}  {p:9.4}  {f:8.4}");
    let [c, p, f] = g.estimated_ndcg_at_10;
    println!("          noisy     {c:9.4}  {p:9.4}  {f:8.4}");
    for (name, x) in [("published", g.against_published), ("fallback", g.against_fallback)] {
        println!("          candidate - {name:<9} {:+.4}  95% interval [{:+.4}, {:+.4}]", x.difference, x.low, x.high);
    }
    println!(
        "          decision: {}",
        if g.publish {
            "publish the candidate (signed, installed by devices)"
        } else {
            "keep the published model (devices install nothing)"
        }
    );
}
