//! The coordinator's side of a secure round at fleet size: 1,000 devices
//! at the default degree (40), each sending the built-in model's 144,935
//! values at 20 bits, 5% of them dropping after their shares (so their
//! pair masks must be rebuilt and removed). Times what the coordinator
//! does with the replies: adding each masked vector as it arrives, then
//! unmasking (rebuilding every survivor's self-mask seed and every dropped
//! device's mask key from the shares, and expanding their masks).
//!
//! A bench binary (the devices' work before it takes minutes, so once, not
//! sampled): `cargo bench -p hearth-secagg --bench unmask`, or
//! `-- --devices 200` for a quicker run.

use std::collections::BTreeMap;
use std::time::Instant;

use hearth_secagg::wire::{self, Reply, ReplyBody, Stage, StageBody};
use hearth_secagg::{CoordinatorRound, DevicePolicy, DeviceRound, Quantization, RoundConfig};
use prost::Message;

const LEN: usize = 144_935;

fn reply(body: ReplyBody) -> Vec<u8> {
    Reply { body: Some(body) }.encode_to_vec()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let devices: usize = args
        .iter()
        .position(|a| a == "--devices")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    if !args.iter().any(|a| a == "--bench") {
        // Not `cargo bench` (`cargo test --all-targets` runs bench targets
        // too): a small round, as a test of this binary.
        return run(30, 1_000);
    }
    run(devices, LEN);
}

fn run(devices: usize, len: usize) {
    let bits = 20;
    let q = Quantization {
        bits,
        scale: Quantization::largest_scale(bits, 1.0, devices as u32),
        clip_norm: 1.0,
        max_cohort: devices as u32,
    };
    let config = RoundConfig {
        run_id: 1,
        round: 1,
        quantization: q,
        degree: 40,
        threshold_fraction: 2.0 / 3.0,
        vector_len: len,
        noise: RoundConfig::NO_NOISE,
        sampling_rate: 0.0,
        count_weight: 0.0,
        task: hearth_secagg::wire::Task::Train,
    };
    let cohort: Vec<u64> = (1..=devices as u64).map(|i| i * 7 + 100).collect();
    let dropped: Vec<u64> = cohort.iter().copied().step_by(20).collect();
    let mut coordinator = CoordinatorRound::new(config, &cohort).unwrap();
    let policy = DevicePolicy { min_cohort: 2, ..DevicePolicy::default() };
    let update: Vec<f32> = (0..len).map(|i| ((i % 17) as f32 - 8.0) / (8.0 * (len as f32).sqrt())).collect();
    let mut rounds: BTreeMap<u64, DeviceRound> = BTreeMap::new();
    let started = Instant::now();

    // Setup and share-keys: the devices' work.
    for (node, bytes) in coordinator.advance().unwrap() {
        let Some(StageBody::Setup(setup)) = wire::decode::<Stage>(&bytes, usize::MAX).unwrap().body else { panic!() };
        let (round, keys) = DeviceRound::setup(&policy, node, len, &setup).unwrap();
        rounds.insert(node, round);
        coordinator.receive(node, &reply(ReplyBody::Keys(keys))).unwrap();
    }
    for (node, bytes) in coordinator.advance().unwrap() {
        let Some(StageBody::ShareKeys(keys)) = wire::decode::<Stage>(&bytes, usize::MAX).unwrap().body else {
            panic!()
        };
        let shares = rounds.get_mut(&node).unwrap().share_keys(&keys.peers).unwrap();
        coordinator.receive(node, &reply(ReplyBody::Shares(shares))).unwrap();
    }
    // Masked input: the devices mask (not timed); the coordinator adds each
    // reply as it comes (timed).
    let mut receiving = std::time::Duration::ZERO;
    let mut packed_bytes = 0;
    for (node, bytes) in coordinator.advance().unwrap() {
        if dropped.contains(&node) {
            continue;
        }
        let Some(StageBody::MaskedInput(shares)) = wire::decode::<Stage>(&bytes, usize::MAX).unwrap().body else {
            panic!()
        };
        let masked = rounds.get_mut(&node).unwrap().masked_input(&shares.shares, &update).unwrap();
        let bytes = reply(ReplyBody::Masked(masked));
        packed_bytes = bytes.len();
        let t = Instant::now();
        coordinator.receive(node, &bytes).unwrap();
        receiving += t.elapsed();
    }
    let mut revealing = Vec::new();
    for (node, bytes) in coordinator.advance().unwrap() {
        let Some(StageBody::Unmask(unmask)) = wire::decode::<Stage>(&bytes, usize::MAX).unwrap().body else { panic!() };
        revealing.push((node, reply(ReplyBody::Revealed(rounds.get_mut(&node).unwrap().unmask(&unmask).unwrap()))));
    }
    let devices_time = started.elapsed() - receiving;
    let t = Instant::now();
    for (node, bytes) in revealing {
        coordinator.receive(node, &bytes).unwrap();
    }
    let aggregate = coordinator.finish().unwrap();
    let unmasking = t.elapsed();
    assert_eq!(aggregate.survivors.len(), devices - dropped.len());
    // The sum is the survivors' update times their number, within rounding.
    let n = aggregate.survivors.len() as f64;
    let sum = aggregate.dequantized(&q);
    let worst = sum.iter().zip(&update).map(|(s, u)| (s - n * *u as f64).abs()).fold(0.0, f64::max);
    assert!(worst <= n / q.scale, "sum off by {worst}");
    println!(
        "coordinator, {devices} devices x {len} values at {bits} bits, degree 40, {} dropped after sharing: \
         adding the masked vectors {:.2} s ({:.2} ms each, {packed_bytes} B), unmasking {:.2} s \
         (self masks of {} survivors, pair masks of {} dropped devices); the devices' own work took {:.1} s",
        dropped.len(),
        receiving.as_secs_f64(),
        receiving.as_secs_f64() * 1000.0 / n,
        unmasking.as_secs_f64(),
        aggregate.survivors.len(),
        dropped.len(),
        devices_time.as_secs_f64()
    );
}
