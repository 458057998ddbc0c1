//! A two-arm experiment in simulation (`hearth simulate --experiment-seeds
//! S`): on every device, for each of S experiments (one per seed, so each
//! draws its own arms), the device ranks its candidates in its arm (the
//! model or the fallback), the row is logged, the held-out item is logged
//! as played, and the device builds its report. The reports are summed per
//! arm with Gaussian noise of std z * sqrt(5) on every sum (the report's L2
//! bound), and each arm's NDCG@10 is estimated with a 95% interval, which
//! is checked against the true value: the mean over the arm's devices of
//! their own reports, without noise.

use anyhow::Result;
use hearth_core::federated::accountant::RdpAccountant;
use hearth_core::{
    ArmTreatment, CatalogItem, Diversity, Event, Experiment, ExperimentArm, ExperimentReport, Hearth, OutcomeKind,
    REPORT_METRICS, RankContext, RankOptions, estimate_arms,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::evaluate::unseen_candidates;
use crate::fedavg::normal;

/// The arms, in order.
const ARMS: [&str; 2] = ["model", "fallback"];
/// Standard errors of the intervals (95%).
const Z_95: f64 = 1.96;

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub seeds: u32,
    /// The noise multiplier of one report: noise std z * sqrt(5) per sum.
    pub noise_multiplier: f64,
}

fn experiment(seed: u32) -> Experiment {
    let arm = |name: &str, treatment| ExperimentArm { name: name.into(), share: 1.0, treatment };
    Experiment {
        id: format!("simulated-ab-{seed}"),
        arms: vec![arm(ARMS[0], ArmTreatment::Model), arm(ARMS[1], ArmTreatment::Fallback)],
    }
}

/// One device's reports, one per seed.
pub fn device_reports(
    h: &Hearth,
    catalog: &[CatalogItem],
    history: &[Event],
    held_out: &str,
    context: &RankContext,
    seeds: u32,
) -> Result<Vec<ExperimentReport>> {
    let candidates = unseen_candidates(catalog, history);
    let mut out = Vec::with_capacity(seeds as usize);
    for seed in 0..seeds {
        let e = experiment(seed);
        let id = e.id.clone();
        h.define_experiment(e)?;
        let options = RankOptions {
            diversity: Diversity::Off,
            exclude_completed: false,
            experiment: Some(id.clone()),
            ..RankOptions::new(context.clone())
        };
        h.rank(candidates.clone(), options)?;
        h.log_outcome(id.clone(), held_out.to_string(), OutcomeKind::Play)?;
        out.push(h.experiment_report(id.clone())?);
        h.remove_experiment(id)?;
    }
    Ok(out)
}

/// One arm of one seed.
#[derive(Debug, Clone, Serialize)]
pub struct ArmResult {
    pub seed: u32,
    pub arm: &'static str,
    pub devices: usize,
    pub true_ndcg_at_10: f64,
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    pub covered: bool,
}

/// Every seed's per-arm results, and what one report costs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub noise_multiplier: f64,
    pub noise_std: f64,
    pub delta: f64,
    /// Epsilon of one report (one Gaussian release of sensitivity
    /// sqrt(5), every device reporting).
    pub epsilon_per_report: f64,
    pub arms: Vec<ArmResult>,
    pub covered: usize,
}

/// Sums each seed's reports per arm, noises, estimates and checks.
/// `reports[d][s]` is device d's report for seed s.
pub fn summarize(reports: &[Vec<ExperimentReport>], settings: Settings, delta: f64, seed: u64) -> Result<Summary> {
    let width = ARMS.len() * REPORT_METRICS as usize;
    let sigma = settings.noise_multiplier * (REPORT_METRICS as f64).sqrt();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6578_7065_7269_6d65);
    let mut arms = Vec::new();
    for s in 0..settings.seeds as usize {
        let mut sums = vec![0.0; width];
        for device in reports {
            for (sum, c) in sums.iter_mut().zip(device[s].contribution(ARMS.len())) {
                *sum += c;
            }
        }
        let noisy: Vec<f64> = sums.iter().map(|v| v + sigma * normal(&mut rng)).collect();
        for (a, e) in estimate_arms(&noisy, sigma, Z_95).into_iter().enumerate() {
            let at = a * REPORT_METRICS as usize;
            let devices = sums[at].round() as usize;
            let truth = if devices > 0 { sums[at + 1] / sums[at] } else { 0.0 };
            arms.push(ArmResult {
                seed: s as u32,
                arm: ARMS[a],
                devices,
                true_ndcg_at_10: truth,
                estimate: e.ndcg_at_10.estimate,
                low: e.ndcg_at_10.low,
                high: e.ndcg_at_10.high,
                covered: e.ndcg_at_10.covers(truth),
            });
        }
    }
    let epsilon_per_report = if settings.noise_multiplier > 0.0 {
        let mut accountant = RdpAccountant::new();
        accountant.compose(settings.noise_multiplier, 1.0, 1)?;
        accountant.epsilon(delta)?
    } else {
        f64::INFINITY
    };
    let covered = arms.iter().filter(|a| a.covered).count();
    Ok(Summary {
        noise_multiplier: settings.noise_multiplier,
        noise_std: sigma,
        delta,
        epsilon_per_report,
        arms,
        covered,
    })
}

/// The summary as the simulation prints it.
pub fn print(summary: &Summary) {
    println!(
        "  experiment        model vs fallback, {} seeds (one experiment each, arms drawn on the devices); \
         each report's sums noised with std {:.3} (z = {}, epsilon {:.2} at delta = {:.3e})",
        summary.arms.len() / ARMS.len(),
        summary.noise_std,
        summary.noise_multiplier,
        summary.epsilon_per_report,
        summary.delta
    );
    println!("    seed  arm        devices  true NDCG@10  estimate  95% interval        covered");
    for a in &summary.arms {
        println!(
            "    {:4}  {:<9}  {:7}  {:12.4}  {:8.4}  [{:.4}, {:.4}]  {}",
            a.seed,
            a.arm,
            a.devices,
            a.true_ndcg_at_10,
            a.estimate,
            a.low,
            a.high,
            if a.covered { "yes" } else { "NO" }
        );
    }
    println!("    intervals covering the true value: {} of {}", summary.covered, summary.arms.len());
}
