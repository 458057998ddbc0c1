//! An in-process federated coordinator for `hearth simulate --rounds R`:
//! FedAvg over the devices' clipped updates, with the server-side Gaussian
//! noise of `coordinator/hearth_coordinator/strategy.py`, each new global
//! model signed with a coordinator key made for the run and installed by
//! every device through `Hearth::install_model`, exactly as a downloaded one
//! would be.
//!
//! With [`NoiseMode::Distributed`] the noise is the devices' instead, as in
//! a secure round (issue 17): each update is quantized with conditional
//! rounding, gets its discrete Gaussian share, and the coordinator only
//! dequantizes the sum modulo 2^bits (the masks of secure aggregation
//! cancel in that sum, so they are left out here; `hearth-secagg`'s tests
//! and the Flower lane check they do).
//!
//! The devices train with the same code a phone runs (`hearth-core`'s
//! training step through tract); what reaches this coordinator is only each
//! device's clipped weight delta.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use hearth_core::testing::{MIN_DENSE_WEIGHT, RoundSettings};
use hearth_core::{Hearth, ModelPackage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ring::digest::{SHA256, digest};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use chacha20::ChaCha20Rng;
use hearth_secagg::Quantization;
use hearth_secagg::noise::{DiscreteGaussian, NoiseTerms, RandomBits};

use crate::adaptive_clip::AdaptiveClip;
use crate::model_cmd::hex;

/// How devices are drawn for a round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every device with probability q, independently (what the privacy
    /// accountant assumes).
    Poisson(f64),
    /// K devices drawn uniformly without replacement.
    Fixed(usize),
}

impl Sampling {
    /// The sampling rate the accountant is given: q, or K / N for a fixed
    /// size (the usual approximation; fixed-size sampling is not exactly
    /// the Poisson sampling the RDP bound is proved for).
    pub fn rate(&self, devices: usize) -> f64 {
        match *self {
            Sampling::Poisson(q) => q,
            Sampling::Fixed(k) => (k.min(devices) as f64 / devices.max(1) as f64).min(1.0),
        }
    }

    /// The indices of the devices drawn from `devices`.
    pub fn draw(&self, devices: usize, rng: &mut StdRng) -> Vec<usize> {
        match *self {
            Sampling::Poisson(q) if q >= 1.0 => (0..devices).collect(),
            Sampling::Poisson(q) => (0..devices).filter(|_| rng.random::<f64>() < q).collect(),
            Sampling::Fixed(k) => {
                let mut all: Vec<usize> = (0..devices).collect();
                let k = k.min(devices);
                for i in 0..k {
                    let j = rng.random_range(i..devices);
                    all.swap(i, j);
                }
                all.truncate(k);
                all.sort_unstable();
                all
            }
        }
    }
}

/// How the server applies the (noised) mean update. The noise is added to
/// the mean before any of this, so the optimizer is post-processing and
/// changes no privacy guarantee.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServerOptimizer {
    /// FedAvg (momentum 0, lr 1) or FedAvgM: `v = m v + mean`, `w += lr v`.
    Momentum { lr: f64, momentum: f64 },
    /// FedAdam (Reddi et al., "Adaptive Federated Optimization", 2021) on
    /// the pseudo-gradient `-mean`, with Adam's bias correction: `m = b1 m
    /// + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`, `w -= lr m^ / (sqrt(v^) + tau)`.
    Adam { lr: f64, beta1: f64, beta2: f64, tau: f64 },
}

impl ServerOptimizer {
    pub fn lr(&self) -> f64 {
        match *self {
            ServerOptimizer::Momentum { lr, .. } | ServerOptimizer::Adam { lr, .. } => lr,
        }
    }

    pub fn adam(lr: f64) -> ServerOptimizer {
        ServerOptimizer::Adam { lr, beta1: 0.9, beta2: 0.99, tau: 1e-6 }
    }

    fn check(&self) -> Result<()> {
        let ok = match *self {
            ServerOptimizer::Momentum { lr, momentum } => lr.is_finite() && lr > 0.0 && (0.0..1.0).contains(&momentum),
            ServerOptimizer::Adam { lr, beta1, beta2, tau } => {
                lr.is_finite()
                    && lr > 0.0
                    && (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && tau.is_finite()
                    && tau > 0.0
            }
        };
        if ok { Ok(()) } else { Err(anyhow!("server optimizer out of range: {self:?}")) }
    }
}

/// Where a round's noise is added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseMode {
    /// By the coordinator, to the mean: Gaussian of std z C / n.
    Central,
    /// By the devices, before the sum: each quantizes its update to
    /// integers modulo 2^bits at the largest scale with room for the noise
    /// and adds a discrete Gaussian share sized so the `honest_fraction` of
    /// the cohort alone sums to noise of std z C. With `sampling_rate`
    /// below 1, each device's own coin puts its update in the sum with
    /// that probability (a left-out device sends its share over zeros)
    /// and the mean is over `sampling_rate` times the cohort.
    Distributed { bits: u32, honest_fraction: f64, sampling_rate: f64 },
}

/// The terms of a distributed round of `cohort` devices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistributedRound {
    pub quantization: Quantization,
    pub noise: NoiseTerms,
    /// The devices' coin (1: none).
    pub sampling_rate: f64,
}

impl DistributedRound {
    /// As the coordinator's secure round sets them (`hearth_secagg`'s
    /// Python `Round` with no scale given): the largest scale at which the
    /// cohort's sum, with every device's share, cannot wrap.
    pub fn new(
        bits: u32,
        honest_fraction: f64,
        sampling_rate: f64,
        clip: f64,
        z: f64,
        cohort: u32,
    ) -> Result<DistributedRound> {
        let noise = NoiseTerms { multiplier: z, honest_fraction };
        if !noise.valid() {
            return Err(anyhow!("distributed noise terms out of range: z {z}, honest fraction {honest_fraction}"));
        }
        if !(sampling_rate > 0.0 && sampling_rate <= 1.0) {
            return Err(anyhow!("the devices' sampling rate must be in (0, 1], got {sampling_rate}"));
        }
        let scale = noise.largest_scale(bits, clip, cohort, cohort);
        let quantization = Quantization { bits, scale, clip_norm: clip, max_cohort: cohort };
        noise.check_room(&quantization, cohort).map_err(|e| anyhow!("distributed round of {cohort}: {e}"))?;
        Ok(DistributedRound { quantization, noise, sampling_rate })
    }

    /// The std of the noise on each coordinate of the mean when all
    /// `cohort` devices add their share: z C sqrt(cohort / honest) over
    /// the mean's denominator, the sampling rate times the cohort.
    pub fn mean_noise_std(&self, cohort: u32) -> f64 {
        self.noise.sum_std(cohort, cohort) * self.quantization.clip_norm / (self.sampling_rate * cohort as f64)
    }
}

/// The devices taking part in a round a fleet-scale run stands for: K / rate
/// (rounded up), so the coins keep about K.
pub fn fleet_setup_cohort(k: u64, rate: f64) -> u64 {
    (k as f64 / rate).ceil() as u64
}

/// The fewest grid steps the devices' summed noise may span for paired
/// noise to round a normal deviate in place of the discrete Gaussian: at
/// this sigma the two are within 1e-3 of each other in total variation.
const PAIRED_MIN_SIGMA: f64 = 30.0;

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

pub struct Coordinator {
    key: Ed25519KeyPair,
    base: ModelPackage,
    pub weights: Vec<f32>,
    pub version: u64,
    clip: f64,
    noise_multiplier: f64,
    noise_mode: NoiseMode,
    optimizer: ServerOptimizer,
    /// The optimizer's state: momentum's velocity or Adam's first moment,
    /// Adam's second moment, and the step count.
    first: Vec<f64>,
    second: Vec<f64>,
    steps: u64,
    rng: StdRng,
    /// Threads the devices' noise shares are drawn on (`set_threads`).
    threads: usize,
    /// Central noise sized for this many devices instead of the updates
    /// averaged (`set_noise_cohort`).
    noise_cohort: Option<u64>,
    /// Adaptive clipping, its state in the run (each run starts again from
    /// `clip`).
    adaptive: Option<AdaptiveClip>,
    /// Paired noise (`set_paired_noise`): the stream of normal deviates
    /// the noise is made from.
    paired: Option<StdRng>,
    /// The devices' weight on the dense parameters (`set_dense_weight`)
    /// and where those are in the flat weights.
    dense: Option<(f64, Vec<std::ops::Range<usize>>)>,
}

/// What one aggregation did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Standard deviation of the noise added to each coordinate of the mean.
    pub noise_std: f64,
    /// The terms of a distributed round.
    pub distributed: Option<DistributedRound>,
}

impl Coordinator {
    /// Starts from the built-in model; noise of `noise_multiplier * clip / n`
    /// per coordinate of the mean of n updates, drawn from `seed`.
    pub fn new(clip: f64, noise_multiplier: f64, optimizer: ServerOptimizer, seed: u64) -> Result<Coordinator> {
        Coordinator::from_package(ModelPackage::builtin(), clip, noise_multiplier, optimizer, seed)
    }

    /// Starts from `base`'s weights (its graphs and manifest, re-signed by
    /// this coordinator under newer versions).
    pub fn from_package(
        base: ModelPackage,
        clip: f64,
        noise_multiplier: f64,
        optimizer: ServerOptimizer,
        seed: u64,
    ) -> Result<Coordinator> {
        if !(clip.is_finite() && clip > 0.0) {
            return Err(anyhow!("the clipping norm must be a positive number"));
        }
        if !(noise_multiplier.is_finite() && noise_multiplier >= 0.0) {
            return Err(anyhow!("the noise multiplier must be a number >= 0"));
        }
        optimizer.check()?;
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| anyhow!("key generation failed"))?;
        let key = Ed25519KeyPair::from_pkcs8(der.as_ref()).map_err(|_| anyhow!("generated key unreadable"))?;
        let weights: Vec<f32> =
            base.weights.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let manifest: serde_json::Value = serde_json::from_slice(&base.manifest)?;
        let version = manifest["version"].as_u64().ok_or_else(|| anyhow!("manifest without a version"))?;
        let expected: u64 = manifest["parameters"]
            .as_array()
            .ok_or_else(|| anyhow!("manifest without parameters"))?
            .iter()
            .map(|p| p["count"].as_u64().unwrap_or(0))
            .sum();
        if weights.len() as u64 != expected || base.weights.len() % 4 != 0 {
            return Err(anyhow!("weights.bin holds {} values, the manifest {expected}", weights.len()));
        }
        let first = vec![0.0; weights.len()];
        let second = vec![0.0; weights.len()];
        Ok(Coordinator {
            key,
            base,
            weights,
            version,
            clip,
            noise_multiplier,
            noise_mode: NoiseMode::Central,
            optimizer,
            first,
            second,
            steps: 0,
            rng: StdRng::seed_from_u64(seed ^ 0x6e6f_6973_6500),
            threads: 1,
            noise_cohort: None,
            adaptive: None,
            paired: None,
            dense: None,
        })
    }

    /// Adaptive clipping (central mode): the clip norm starts at the
    /// coordinator's (whatever `adaptive.clip` says) and follows
    /// `adaptive`'s quantile ([`Self::adapt_clip`] after each round); the
    /// update's noise multiplier leaves the count's share of z. Each run
    /// starts again from the coordinator's clip norm.
    pub fn set_adaptive_clip(&mut self, adaptive: Option<AdaptiveClip>) -> Result<()> {
        if let Some(a) = &adaptive {
            if self.noise_mode != NoiseMode::Central {
                return Err(anyhow!("adaptive clipping is simulated in central mode only"));
            }
            a.update_noise_multiplier(self.noise_multiplier)?;
        }
        self.adaptive = adaptive.map(|a| AdaptiveClip { clip: self.clip, ..a });
        Ok(())
    }

    /// The clip norm of the round under way.
    pub fn clip(&self) -> f64 {
        self.adaptive.map_or(self.clip, |a| a.clip)
    }

    /// After a round: moves an adaptive clip norm by the cohort's norms
    /// before clipping (the devices' bits, counted with noise). Returns the
    /// noisy share of unclipped updates, None without adaptive clipping.
    pub fn adapt_clip(&mut self, norms: &[f64]) -> Option<f64> {
        self.adaptive.as_mut()?.update(norms, &mut self.rng)
    }

    /// Fleet-scale simulation (McMahan et al., ICLR 2018): the central
    /// noise on the mean is z C / `cohort` whatever the number of updates
    /// averaged, as if the mean of the real updates were that of a cohort
    /// of this size. None: z C / n, the updates' own count.
    pub fn set_noise_cohort(&mut self, cohort: Option<u64>) {
        self.noise_cohort = cohort;
    }

    /// Draws each device's noise share on up to `threads` threads (a
    /// distributed round over a whole fleet draws hundreds of shares of
    /// the model's size); a run repeats for the same count.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Paired noise, for comparing the two noise modes at fleet scale
    /// (`hearth simulate --paired-noise`): with `Some(seed)`, each
    /// coordinate's noise is made from one normal deviate of a stream
    /// seeded by `seed` alone, in either mode and in the same order: the
    /// central noise is the deviate times its std, the devices' summed
    /// noise the deviate times its std on their integer grid, rounded. Two
    /// runs with the same seed then add the same draws, each at its own
    /// mode's size, so their difference is what the mode changes rather
    /// than where the noise fell. The devices' summed noise has a standard
    /// deviation of thousands of grid steps at fleet scale, where a rounded
    /// normal and a discrete Gaussian of the same variance are within
    /// about 1/sigma^2 of each other in total variation. Only for fleet-scale
    /// distributed rounds (`set_noise_cohort`); a round of real shares
    /// refuses it.
    pub fn set_paired_noise(&mut self, seed: Option<u64>) {
        self.paired = seed.map(StdRng::seed_from_u64);
    }

    /// The weight in [1e-6, 1] the devices put on the dense parameters' part
    /// of their updates before clipping (`RoundSettings::dense_weight`;
    /// None or 1: none). The mean, noise included, is divided by it on
    /// those parameters before the optimizer, so they move as their
    /// updates said and carry 1 / weight times the noise.
    pub fn set_dense_weight(&mut self, weight: Option<f64>) -> Result<()> {
        let Some(w) = weight.filter(|w| *w != 1.0) else {
            self.dense = None;
            return Ok(());
        };
        if !(w.is_finite() && (MIN_DENSE_WEIGHT..=1.0).contains(&w)) {
            return Err(anyhow!("the dense weight must be in [1e-6, 1], as the devices check"));
        }
        let manifest: serde_json::Value = serde_json::from_slice(&self.base.manifest)?;
        let mut ranges = Vec::new();
        let mut at = 0usize;
        for p in manifest["parameters"].as_array().ok_or_else(|| anyhow!("manifest without parameters"))? {
            let count = p["count"].as_u64().ok_or_else(|| anyhow!("a parameter without a count"))? as usize;
            if p["gradient_rows_of"].is_null() {
                ranges.push(at..at + count);
            }
            at += count;
        }
        self.dense = Some((w, ranges));
        Ok(())
    }

    /// The key devices must trust (hex).
    pub fn public_key(&self) -> String {
        hex(self.key.public_key().as_ref())
    }

    /// Sets the server learning rate (for a schedule across rounds).
    pub fn set_server_lr(&mut self, rate: f64) -> Result<()> {
        let optimizer = match self.optimizer {
            ServerOptimizer::Momentum { momentum, .. } => ServerOptimizer::Momentum { lr: rate, momentum },
            ServerOptimizer::Adam { beta1, beta2, tau, .. } => ServerOptimizer::Adam { lr: rate, beta1, beta2, tau },
        };
        optimizer.check()?;
        self.optimizer = optimizer;
        Ok(())
    }

    /// The starting weights, signed as the next version: what devices
    /// install when the run starts from another model than their built-in one.
    pub fn start(&mut self) -> Result<ModelPackage> {
        self.version += 1;
        self.package()
    }

    /// Back to the starting weights (no optimizer state) with another noise
    /// multiplier; returns them signed as the next version, which devices
    /// accept (a package must be newer than the one installed).
    pub fn restart(&mut self, noise_multiplier: f64) -> Result<ModelPackage> {
        if !(noise_multiplier.is_finite() && noise_multiplier >= 0.0) {
            return Err(anyhow!("the noise multiplier must be a number >= 0"));
        }
        if let Some(a) = &mut self.adaptive {
            a.update_noise_multiplier(noise_multiplier)?;
            a.clip = self.clip;
        }
        self.noise_multiplier = noise_multiplier;
        self.weights =
            self.base.weights.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        self.first.iter_mut().for_each(|v| *v = 0.0);
        self.second.iter_mut().for_each(|v| *v = 0.0);
        self.steps = 0;
        self.version += 1;
        self.package()
    }

    /// Where the noise of the following rounds is added.
    pub fn set_noise_mode(&mut self, mode: NoiseMode) -> Result<()> {
        if let NoiseMode::Distributed { bits, honest_fraction, sampling_rate } = mode {
            // Checked as a round of one would be.
            DistributedRound::new(bits, honest_fraction, sampling_rate, self.clip, self.noise_multiplier, 1)?;
        }
        self.noise_mode = mode;
        Ok(())
    }

    /// The terms a distributed round of `cohort` devices has (`None` in
    /// central mode). At fleet scale (`set_noise_cohort`), the round the
    /// real devices stand for: K / rate devices take part, of which the
    /// coins keep about K.
    fn distributed_round(&self, cohort: usize) -> Result<Option<DistributedRound>> {
        match self.noise_mode {
            NoiseMode::Central => Ok(None),
            NoiseMode::Distributed { bits, honest_fraction, sampling_rate } => {
                let cohort = match self.noise_cohort {
                    Some(k) => fleet_setup_cohort(k, sampling_rate),
                    None => cohort as u64,
                };
                let cohort = u32::try_from(cohort).map_err(|_| anyhow!("a cohort of {cohort}"))?;
                DistributedRound::new(bits, honest_fraction, sampling_rate, self.clip, self.noise_multiplier, cohort)
                    .map(Some)
            }
        }
    }

    /// The devices' coins of a distributed round over `cohort` (device
    /// indices): the ones whose coin keeps their update, and how many it
    /// leaves out (every one with no coin). Drawn from this coordinator's
    /// generator, so a run repeats; before training, so a simulation need
    /// not train a device whose update is left out (a real device trains
    /// either way, and the coordinator cannot tell).
    pub fn flip_coins(&mut self, cohort: &[usize]) -> (Vec<usize>, usize) {
        if self.noise_cohort.is_some() {
            // At fleet scale the real devices stand for the ones the coins
            // keep.
            return (cohort.to_vec(), 0);
        }
        let rate = match self.noise_mode {
            NoiseMode::Distributed { sampling_rate, .. } if sampling_rate < 1.0 => sampling_rate,
            _ => return (cohort.to_vec(), 0),
        };
        let kept: Vec<usize> = cohort.iter().copied().filter(|_| self.rng.random::<f64>() < rate).collect();
        let left_out = cohort.len() - kept.len();
        (kept, left_out)
    }

    /// The unweighted mean of the n updates, with Gaussian noise of std
    /// `z * C / n` on each coordinate (as `strategy.py`), applied by the
    /// server optimizer (plain FedAvg adds it). In distributed mode the
    /// mean is instead the dequantized sum of the devices' quantized and
    /// noised updates, over n. Returns the signed package of the new
    /// version.
    /// In a distributed round whose devices' coins (`flip_coins`) left
    /// `left_out` more devices' updates out (0 otherwise), each of them
    /// adds its noise share over zeros, and the mean is over the rate times
    /// the whole cohort.
    pub fn aggregate(&mut self, updates: &[Vec<f32>], left_out: usize) -> Result<(ModelPackage, Aggregate)> {
        if updates.is_empty() && left_out == 0 {
            return Err(anyhow!("no updates this round"));
        }
        if left_out > 0 && self.noise_mode == NoiseMode::Central {
            return Err(anyhow!("devices left out by a coin in a central round"));
        }
        if let Some(u) = updates.iter().find(|u| u.len() != self.weights.len()) {
            return Err(anyhow!("an update of {} values for {} weights", u.len(), self.weights.len()));
        }
        let n = updates.len() as f64;
        let distributed = self.distributed_round(updates.len() + left_out)?;
        let (mean, std) = match &distributed {
            None => {
                let mut mean = vec![0f64; self.weights.len()];
                for u in updates {
                    for (m, d) in mean.iter_mut().zip(u) {
                        *m += *d as f64;
                    }
                }
                let z = match &self.adaptive {
                    Some(a) => a.update_noise_multiplier(self.noise_multiplier)?,
                    None => self.noise_multiplier,
                };
                let std = z * self.clip() / self.noise_cohort.map_or(n, |k| k as f64);
                let rng = self.paired.as_mut().unwrap_or(&mut self.rng);
                for m in mean.iter_mut() {
                    *m /= n;
                    if std > 0.0 {
                        *m += std * normal(rng);
                    }
                }
                (mean, std)
            }
            Some(round) if self.noise_cohort.is_some() => {
                (self.fleet_distributed_mean(round, updates)?, round.mean_noise_std(round.quantization.max_cohort))
            }
            Some(round) => {
                let mean = self.distributed_mean(round, updates, left_out)?;
                (mean, round.mean_noise_std((updates.len() + left_out) as u32))
            }
        };
        let mut mean = mean;
        if let Some((w, ranges)) = &self.dense {
            for r in ranges {
                mean[r.clone()].iter_mut().for_each(|m| *m /= w);
            }
        }
        self.steps += 1;
        match self.optimizer {
            ServerOptimizer::Momentum { lr, momentum } => {
                for ((w, v), m) in self.weights.iter_mut().zip(self.first.iter_mut()).zip(&mean) {
                    *v = momentum * *v + m;
                    *w = (*w as f64 + lr * *v) as f32;
                }
            }
            ServerOptimizer::Adam { lr, beta1, beta2, tau } => {
                let c1 = 1.0 - beta1.powf(self.steps as f64);
                let c2 = 1.0 - beta2.powf(self.steps as f64);
                for (((w, m1), m2), d) in
                    self.weights.iter_mut().zip(self.first.iter_mut()).zip(self.second.iter_mut()).zip(&mean)
                {
                    let g = -d;
                    *m1 = beta1 * *m1 + (1.0 - beta1) * g;
                    *m2 = beta2 * *m2 + (1.0 - beta2) * g * g;
                    *w = (*w as f64 - lr * (*m1 / c1) / ((*m2 / c2).sqrt() + tau)) as f32;
                }
            }
        }
        self.version += 1;
        Ok((self.package()?, Aggregate { noise_std: std, distributed }))
    }

    /// What a secure round's sum gives the coordinator in distributed
    /// mode, over n: each device's update quantized (conditional
    /// randomized rounding) with its discrete Gaussian share added modulo
    /// 2^bits, the shares summed modulo 2^bits and read back as floats.
    /// The `left_out` devices whose coin left their update out add their
    /// share over zeros, and the sum is over the rate times the cohort.
    /// Every random draw comes from this coordinator's seeded generator,
    /// so a run repeats (a device draws from its CSPRNG).
    fn distributed_mean(
        &mut self,
        round: &DistributedRound,
        updates: &[Vec<f32>],
        left_out: usize,
    ) -> Result<Vec<f64>> {
        if self.paired.is_some() {
            return Err(anyhow!("paired noise is for fleet-scale rounds; these devices draw their own shares"));
        }
        let q = &round.quantization;
        let cohort = (updates.len() + left_out) as u32;
        let share = if self.noise_multiplier > 0.0 {
            Some(
                DiscreteGaussian::at_least(round.noise.share_variance(q.clip_norm, q.scale, cohort))
                    .map_err(|e| anyhow!("the devices' noise share: {e}"))?,
            )
        } else {
            None
        };
        let mut sum = vec![0u32; self.weights.len()];
        for u in updates.iter().map(Some).chain(std::iter::repeat_n(None, left_out)) {
            // Zeros quantize to zeros whatever the rounding draws.
            let mut v = match u {
                Some(u) => {
                    q.quantize_with(u, || self.rng.random()).map_err(|e| anyhow!("quantizing an update: {e}"))?
                }
                None => vec![0u32; self.weights.len()],
            };
            if let Some(share) = &share {
                let rng = &mut self.rng;
                share.add_to_parallel(&mut v, q.bits, self.threads, || {
                    Ok::<_, std::convert::Infallible>(RandomBits::new(
                        <ChaCha20Rng as rand_core::SeedableRng>::from_seed(rng.random()),
                    ))
                })?;
            }
            q.add_into(&mut sum, &v);
        }
        let n = round.sampling_rate * cohort as f64;
        Ok(q.dequantize_sum(&sum).into_iter().map(|x| x / n).collect())
    }

    /// A distributed round at fleet scale: the n real updates stand for the
    /// K the devices' coins keep out of the round's K / rate devices. Each
    /// real update is quantized as a device would (so the rounding is in
    /// it), on a grid finer by sqrt(K / n): the rounding errors of K
    /// devices average over K, and n updates at the round's own grid
    /// would carry sqrt(K / n) times the rounding noise the fleet's mean
    /// has (10 times at K = 10,000 and 100 real updates), as the noise too
    /// is sized for K. Their mean stands for the K devices' mean, and the noise is
    /// every device's share summed: one discrete Gaussian of the summed
    /// variance per coordinate (a sum of discrete Gaussians is within a
    /// negligible distance of it at these variances, Kairouz et al.
    /// theorem 1), over the rate times the cohort.
    fn fleet_distributed_mean(&mut self, round: &DistributedRound, updates: &[Vec<f32>]) -> Result<Vec<f64>> {
        let q = &round.quantization;
        let cohort = q.max_cohort;
        let n = updates.len().max(1) as f64;
        // n real updates at the finer grid sum without wrapping: n C s
        // sqrt(K / n) = sqrt(n K) C s, within the room the round's scale s
        // leaves for K / rate updates.
        let kept = round.sampling_rate * cohort as f64;
        let fine =
            Quantization { scale: q.scale * (kept / n).max(1.0).sqrt(), max_cohort: updates.len().max(1) as u32, ..*q };
        let mut sum = vec![0u32; self.weights.len()];
        for u in updates {
            let v = fine.quantize_with(u, || self.rng.random()).map_err(|e| anyhow!("quantizing an update: {e}"))?;
            fine.add_into(&mut sum, &v);
        }
        let mut mean: Vec<f64> = fine.dequantize_sum(&sum).into_iter().map(|x| x / n).collect();
        if self.noise_multiplier > 0.0 {
            let summed = round.noise.share_variance(q.clip_norm, q.scale, cohort) * cohort as f64;
            let sampler = DiscreteGaussian::at_least(summed).map_err(|e| anyhow!("the devices' summed noise: {e}"))?;
            let denominator = q.scale * round.sampling_rate * cohort as f64;
            if let Some(paired) = self.paired.as_mut() {
                let sigma = sampler.variance().sqrt();
                if sigma < PAIRED_MIN_SIGMA {
                    return Err(anyhow!(
                        "paired noise needs the devices' summed noise to span at least {PAIRED_MIN_SIGMA} grid steps \
                         (it spans {sigma:.1}): more --secagg-bits"
                    ));
                }
                for m in mean.iter_mut() {
                    *m += (sigma * normal(paired)).round() / denominator;
                }
            } else {
                let mut bits = RandomBits::new(<ChaCha20Rng as rand_core::SeedableRng>::from_seed(self.rng.random()));
                let sampler = sampler.sampler();
                for m in mean.iter_mut() {
                    *m += sampler.sample(&mut bits) as f64 / denominator;
                }
            }
        }
        Ok(mean)
    }

    fn package(&self) -> Result<ModelPackage> {
        let weights: Vec<u8> = self.weights.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut manifest: serde_json::Value = serde_json::from_slice(&self.base.manifest)?;
        manifest["version"] = self.version.into();
        manifest["files"]["weights"]["bytes"] = weights.len().into();
        manifest["files"]["weights"]["sha256"] = hex(digest(&SHA256, &weights).as_ref()).into();
        let manifest = serde_json::to_vec(&manifest)?;
        let signature = self.key.sign(&manifest).as_ref().to_vec();
        Ok(ModelPackage { manifest, signature, weights, ..self.base.clone() })
    }
}

/// What one device sends: its clipped delta, and (kept by the simulation
/// for the table, not part of a real reply) its norm before clipping.
pub struct DeviceUpdate {
    pub delta: Vec<f32>,
    pub norm_before_clip: f64,
}

/// One device's part of a round: train on its own history from its active
/// (the installed global) model.
pub fn local_round(hearth: &Arc<Hearth>, settings: &RoundSettings) -> Result<Option<DeviceUpdate>> {
    match hearth_core::testing::local_update_with(hearth, settings, None) {
        Ok(u) => Ok(Some(DeviceUpdate { delta: u.delta, norm_before_clip: u.norm_before_clip })),
        // Nothing engaged to learn from: the device sits the round out.
        Err(hearth_core::HearthError::InvalidInput { field, .. }) if field == "history" => Ok(None),
        // Its training diverged (too high a learning rate for its history):
        // a real device sends nothing and the round goes on without it.
        Err(hearth_core::HearthError::Federated { kind: hearth_core::FederatedFailure::Update, reason }) => {
            log::warn!("a device's local training diverged; it sits the round out ({reason})");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads a model package directory (the files of `hearth_core::PACKAGE_FILES`).
pub fn read_package(dir: &std::path::Path) -> Result<ModelPackage> {
    let read =
        |name: &str| std::fs::read(dir.join(name)).with_context(|| format!("reading {}", dir.join(name).display()));
    let optional = |name: &str| match std::fs::read(dir.join(name)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        other => other.with_context(|| format!("reading {}", dir.join(name).display())),
    };
    Ok(ModelPackage {
        manifest: read("manifest.json")?,
        signature: read("manifest.sig").unwrap_or_default(),
        inference: read("inference.onnx")?,
        train_step: read("train_step.onnx")?,
        weights: read("weights.bin")?,
        // The NNEF graphs, when the package has them (libraries built with the
        // core's `nnef` feature load those).
        inference_nnef: optional("inference.nnef.tar")?,
        train_step_nnef: optional("train_step.nnef.tar")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEDAVG: ServerOptimizer = ServerOptimizer::Momentum { lr: 1.0, momentum: 0.0 };

    #[test]
    fn adam_moves_each_weight_by_about_its_learning_rate() {
        let mut c = Coordinator::new(1.0, 0.0, ServerOptimizer::adam(0.01), 3).unwrap();
        let start = c.weights.clone();
        let mut u = vec![1e-4f32; start.len()];
        u[0] = -0.5;
        c.aggregate(&[u], 0).unwrap();
        // The first bias-corrected step is lr * sign(mean), whatever its size.
        assert!((c.weights[1] - start[1] - 0.01).abs() < 1e-4);
        assert!((c.weights[0] - start[0] + 0.01).abs() < 1e-4);
    }

    #[test]
    fn sampling_draws_what_it_says() {
        let mut rng = StdRng::seed_from_u64(1);
        let fixed = Sampling::Fixed(10).draw(100, &mut rng);
        assert_eq!(fixed.len(), 10);
        assert!(fixed.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Sampling::Fixed(500).draw(20, &mut rng).len(), 20);
        assert_eq!(Sampling::Poisson(1.0).draw(7, &mut rng), (0..7).collect::<Vec<_>>());
        let drawn: usize = (0..200).map(|_| Sampling::Poisson(0.1).draw(100, &mut rng).len()).sum();
        assert!((1800..2200).contains(&drawn), "{drawn}");
        assert_eq!(Sampling::Fixed(10).rate(100), 0.1);
    }

    #[test]
    fn the_mean_moves_the_weights_and_the_noise_has_its_std() {
        let mut quiet = Coordinator::new(1.0, 0.0, FEDAVG, 3).unwrap();
        let start = quiet.weights.clone();
        let updates = vec![vec![0.5f32; start.len()], vec![-0.1f32; start.len()]];
        let (_, a) = quiet.aggregate(&updates, 0).unwrap();
        assert_eq!(a.noise_std, 0.0);
        assert!(quiet.weights.iter().zip(&start).all(|(w, s)| ((w - s) - 0.2).abs() < 1e-5));

        let mut noisy = Coordinator::new(2.0, 1.0, FEDAVG, 3).unwrap();
        let zeros = vec![vec![0f32; start.len()]; 4];
        let (package, a) = noisy.aggregate(&zeros, 0).unwrap();
        assert_eq!(a.noise_std, 0.5);
        let d: Vec<f64> = noisy.weights.iter().zip(&start).map(|(w, s)| (w - s) as f64).collect();
        let var = d.iter().map(|x| x * x).sum::<f64>() / d.len() as f64;
        assert!((var.sqrt() - 0.5).abs() < 0.01, "std {}", var.sqrt());
        assert!(package.weights.len() == start.len() * 4);
    }

    #[test]
    fn distributed_rounds_sum_the_devices_quantized_noised_updates() {
        let distributed = NoiseMode::Distributed { bits: 20, honest_fraction: 2.0 / 3.0, sampling_rate: 1.0 };
        let mut quiet = Coordinator::new(1.0, 0.0, FEDAVG, 3).unwrap();
        quiet.set_noise_mode(distributed).unwrap();
        let start = quiet.weights.clone();
        // Clipped updates (norm 0.9 and 0.18): the quantized sum is their
        // sum to within the rounding, a few millionths here.
        let a = 0.9 / (start.len() as f32).sqrt();
        let updates = vec![vec![a; start.len()], vec![-a / 5.0; start.len()]];
        let (_, agg) = quiet.aggregate(&updates, 0).unwrap();
        assert_eq!(agg.noise_std, 0.0);
        let terms = agg.distributed.unwrap();
        assert_eq!(terms.quantization.max_cohort, 2);
        assert!(quiet.weights.iter().zip(&start).all(|(w, s)| ((w - s) - 0.4 * a).abs() < 1e-5));

        // Every device's share: the mean carries z C sqrt(n / honest) / n,
        // with 3 of 4 counted on.
        let mut noisy = Coordinator::new(2.0, 1.0, FEDAVG, 3).unwrap();
        noisy.set_noise_mode(distributed).unwrap();
        let zeros = vec![vec![0f32; start.len()]; 4];
        let (_, agg) = noisy.aggregate(&zeros, 0).unwrap();
        let want = 2.0 * (4.0f64 / 3.0).sqrt() / 4.0;
        assert!((agg.noise_std - want).abs() < 1e-12, "{}", agg.noise_std);
        let d: Vec<f64> = noisy.weights.iter().zip(&start).map(|(w, s)| (w - s) as f64).collect();
        let var = d.iter().map(|x| x * x).sum::<f64>() / d.len() as f64;
        assert!((var.sqrt() / want - 1.0).abs() < 0.01, "std {} for {want}", var.sqrt());

        // An update past the clip norm is not quantized; nothing changes.
        let before = noisy.weights.clone();
        assert!(noisy.aggregate(&[vec![3.0f32; start.len()]], 0).is_err());
        assert_eq!(noisy.weights, before);
        // Terms no round could use are refused.
        let bad = NoiseMode::Distributed { bits: 20, honest_fraction: 0.0, sampling_rate: 1.0 };
        assert!(Coordinator::new(1.0, 1.0, FEDAVG, 3).unwrap().set_noise_mode(bad).is_err());
        for rate in [0.0, 1.5, f64::NAN] {
            let bad = NoiseMode::Distributed { bits: 20, honest_fraction: 2.0 / 3.0, sampling_rate: rate };
            assert!(Coordinator::new(1.0, 1.0, FEDAVG, 3).unwrap().set_noise_mode(bad).is_err(), "{rate}");
        }
    }

    #[test]
    fn with_a_coin_about_the_rate_of_the_updates_are_summed_and_the_mean_is_over_that_many() {
        let coin = NoiseMode::Distributed { bits: 24, honest_fraction: 2.0 / 3.0, sampling_rate: 0.25 };
        let mut c = Coordinator::new(1.0, 0.0, FEDAVG, 5).unwrap();
        c.set_noise_mode(coin).unwrap();
        let start = c.weights.clone();
        let a = 0.5 / (start.len() as f32).sqrt();
        // 400 devices with the same update: the coin keeps Binomial(400,
        // 1/4) of them (100 +- 8.7), and the mean over 100 is near a.
        let (kept, left_out) = c.flip_coins(&(0..400).collect::<Vec<_>>());
        assert_eq!(kept.len() + left_out, 400);
        let updates = vec![vec![a; start.len()]; kept.len()];
        let (_, agg) = c.aggregate(&updates, left_out).unwrap();
        assert_eq!(agg.distributed.unwrap().sampling_rate, 0.25);
        let steps: Vec<f64> = c.weights.iter().zip(&start).map(|(w, s)| ((w - s) / a) as f64).collect();
        let moved = steps.iter().sum::<f64>() / steps.len() as f64;
        assert!((0.7..1.3).contains(&moved), "{moved}");
        // The kept updates over a quarter of the cohort.
        assert!((moved - kept.len() as f64 / 100.0).abs() < 0.01, "{moved} for {} kept", kept.len());
        // Every weight moved by the same count of kept updates, to within
        // the rounding of 400 values.
        assert!(steps.iter().all(|x| (x - moved).abs() < 0.05), "{moved}");
        // Without a coin every device is kept; a central round has none.
        let mut central = Coordinator::new(1.0, 0.0, FEDAVG, 5).unwrap();
        assert_eq!(central.flip_coins(&[3, 4, 9]), (vec![3, 4, 9], 0));
        assert!(central.aggregate(&[vec![0.0; start.len()]], 2).is_err());
    }

    #[test]
    fn a_simulated_cohort_sizes_the_central_noise() {
        let mut c = Coordinator::new(2.0, 1.0, FEDAVG, 3).unwrap();
        c.set_noise_cohort(Some(10_000));
        let start = c.weights.clone();
        let zeros = vec![vec![0f32; start.len()]; 4];
        let (_, a) = c.aggregate(&zeros, 0).unwrap();
        assert_eq!(a.noise_std, 2.0 / 10_000.0);
        let d: Vec<f64> = c.weights.iter().zip(&start).map(|(w, s)| (w - s) as f64).collect();
        let std = (d.iter().map(|x| x * x).sum::<f64>() / d.len() as f64).sqrt();
        assert!((std / a.noise_std - 1.0).abs() < 0.01, "std {std}");
    }

    #[test]
    fn a_simulated_fleet_in_distributed_mode_sums_every_devices_share() {
        // K = 10,000 kept by coins of 0.1: rounds of 100,000 devices at 32
        // bits. The real updates (all the same here) stand for the kept
        // ones; the noise is z C sqrt(S / honest) / K.
        let mut c = Coordinator::new(0.5, 1.0, FEDAVG, 3).unwrap();
        c.set_noise_mode(NoiseMode::Distributed { bits: 32, honest_fraction: 2.0 / 3.0, sampling_rate: 0.1 }).unwrap();
        c.set_noise_cohort(Some(10_000));
        // No coin is flipped on the real devices.
        assert_eq!(c.flip_coins(&[4, 5, 6]), (vec![4, 5, 6], 0));
        let start = c.weights.clone();
        let updates = vec![vec![1e-3f32; start.len()]; 4];
        let (_, a) = c.aggregate(&updates, 0).unwrap();
        let terms = a.distributed.unwrap();
        assert_eq!(terms.quantization.max_cohort, 100_000);
        let honest = (2.0f64 / 3.0 * 100_000.0).ceil();
        let want = 0.5 * (100_000.0 / honest).sqrt() / 10_000.0;
        assert!((a.noise_std / want - 1.0).abs() < 1e-9, "{} vs {want}", a.noise_std);
        // FedAvg at rate 1: the update's mean plus noise of that std.
        let d: Vec<f64> = c.weights.iter().zip(&start).map(|(w, s)| (w - s) as f64 - 1e-3).collect();
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let std = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d.len() as f64).sqrt();
        assert!(mean.abs() < 5.0 * want / (d.len() as f64).sqrt() + 1e-7, "mean {mean}");
        assert!((std / want - 1.0).abs() < 0.02, "std {std} vs {want}");
        assert_eq!(fleet_setup_cohort(10_000, 0.3), 33_334);
    }

    /// One round's noise on the weights of a FedAvg coordinator at rate 1
    /// whose devices all sent zeros.
    fn fleet_noise(mode: NoiseMode, seed: u64, paired: Option<u64>) -> (Vec<f64>, f64) {
        let mut c = Coordinator::new(0.5, 1.0, FEDAVG, seed).unwrap();
        c.set_noise_mode(mode).unwrap();
        c.set_noise_cohort(Some(10_000));
        c.set_paired_noise(paired);
        let start = c.weights.clone();
        let (_, a) = c.aggregate(&vec![vec![0f32; start.len()]; 4], 0).unwrap();
        (c.weights.iter().zip(&start).map(|(w, s)| (w - s) as f64).collect(), a.noise_std)
    }

    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
        dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
    }

    #[test]
    fn paired_noise_adds_the_same_draws_in_either_mode_at_its_own_size() {
        let distributed = NoiseMode::Distributed { bits: 32, honest_fraction: 2.0 / 3.0, sampling_rate: 0.1 };
        // Other seeds for everything else the coordinators draw.
        let (central, central_std) = fleet_noise(NoiseMode::Central, 3, Some(9));
        let (shares, shares_std) = fleet_noise(distributed, 4, Some(9));
        assert!(shares_std > central_std);
        // The same deviates: the devices' noise is the central noise scaled
        // (and rounded to the grid, thousands of steps to a std).
        assert!(correlation(&central, &shares) > 0.9999, "{}", correlation(&central, &shares));
        let rms = |d: &[f64]| (d.iter().map(|x| x * x).sum::<f64>() / d.len() as f64).sqrt();
        assert!((rms(&central) / central_std - 1.0).abs() < 0.02);
        assert!((rms(&shares) / shares_std - 1.0).abs() < 0.02);
        // Another stream is another draw; without pairing, the exact sampler.
        let (other, _) = fleet_noise(distributed, 4, Some(10));
        assert!(correlation(&shares, &other).abs() < 0.02);
        let (exact, exact_std) = fleet_noise(distributed, 4, None);
        assert_eq!(exact_std, shares_std);
        assert!(correlation(&shares, &exact).abs() < 0.02);
        assert!((rms(&exact) / exact_std - 1.0).abs() < 0.02);
        // A round of real shares (no simulated cohort) refuses pairing.
        let mut c = Coordinator::new(0.5, 1.0, FEDAVG, 3).unwrap();
        c.set_noise_mode(distributed).unwrap();
        c.set_paired_noise(Some(9));
        let zeros = vec![vec![0f32; c.weights.len()]; 4];
        assert!(c.aggregate(&zeros, 0).unwrap_err().to_string().contains("paired noise"));
    }

    #[test]
    fn a_simulated_fleet_rounds_as_its_k_devices_would() {
        // No noise, K = 10,000 kept by coins of 0.1, 4 real updates: the
        // rounding noise on the mean is the one K devices' mean has, about
        // the grid step over sqrt(K), not over sqrt(4).
        let mut c = Coordinator::new(0.5, 0.0, FEDAVG, 3).unwrap();
        c.set_noise_mode(NoiseMode::Distributed { bits: 32, honest_fraction: 2.0 / 3.0, sampling_rate: 0.1 }).unwrap();
        c.set_noise_cohort(Some(10_000));
        let start = c.weights.clone();
        let updates = vec![vec![1e-3f32; start.len()]; 4];
        let (_, a) = c.aggregate(&updates, 0).unwrap();
        let step = 1.0 / a.distributed.unwrap().quantization.scale;
        let d: Vec<f64> = c.weights.iter().zip(&start).map(|(w, s)| (w - s) as f64 - 1e-3).collect();
        let rms = (d.iter().map(|x| x * x).sum::<f64>() / d.len() as f64).sqrt();
        // 1e-3 sits 0.94 of a step past a grid point: one device's rounding
        // std is 0.24 steps, so 4 devices' mean at the round's grid has
        // 0.12 steps; K devices' 0.0024. (f32 weights add about 1e-8.)
        assert!(rms < 0.01 * step, "rms {rms} for a step of {step}");
    }

    #[test]
    fn a_dense_weight_is_divided_out_of_the_dense_parameters_only() {
        let mut c = Coordinator::new(1.0, 0.0, FEDAVG, 3).unwrap();
        assert!(c.set_dense_weight(Some(0.0)).is_err() && c.set_dense_weight(Some(1.5)).is_err());
        c.set_dense_weight(Some(0.25)).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&ModelPackage::builtin().manifest).unwrap();
        let dense: Vec<bool> = manifest["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| std::iter::repeat_n(p["gradient_rows_of"].is_null(), p["count"].as_u64().unwrap() as usize))
            .collect();
        assert!(dense.iter().any(|d| *d) && dense.iter().any(|d| !*d));
        let start = c.weights.clone();
        c.aggregate(&[vec![0.01f32; start.len()]], 0).unwrap();
        for ((w, s), d) in c.weights.iter().zip(&start).zip(&dense) {
            let want = if *d { 0.04 } else { 0.01 };
            assert!(((w - s) - want).abs() < 1e-5, "{} vs {want}", w - s);
        }
    }

    #[test]
    fn momentum_accumulates() {
        let mut c = Coordinator::new(1.0, 0.0, ServerOptimizer::Momentum { lr: 1.0, momentum: 0.5 }, 3).unwrap();
        let start = c.weights[0];
        let u = vec![vec![0.1f32; c.weights.len()]];
        c.aggregate(&u, 0).unwrap();
        c.aggregate(&u, 0).unwrap();
        // 0.1, then 0.5 * 0.1 + 0.1.
        assert!((c.weights[0] - start - 0.25).abs() < 1e-5);
    }
}
