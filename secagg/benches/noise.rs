//! A device's share of a round's noise: one discrete Gaussian value for
//! each of the built-in model's 144,935 parameters, sampled exactly and
//! added modulo 2^20 (`cargo bench -p hearth-secagg --bench noise`). The
//! variances are a device's share for cohorts of 10, 100 and 1,000 at the
//! largest no-wrap scale for 20 bits, noise multiplier 1, clip norm 1 and
//! two thirds of the cohort honest. `share` is what a device does on one
//! core (the table built, then every value drawn), `parallel` the same on
//! up to `NOISE_THREADS` threads (as many as this machine has), `table`
//! the table alone, and `rejection` the table-free sampler of Canonne,
//! Kamath and Steinke on one core, for comparison.

use std::time::Duration;

use chacha20::ChaCha20Rng;
use criterion::{Criterion, criterion_group, criterion_main};
use hearth_secagg::Quantization;
use hearth_secagg::device::NOISE_THREADS;
use hearth_secagg::noise::{DiscreteGaussian, RandomBits, Sampler};
use rand_core::SeedableRng;

const LEN: usize = 144_935;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("noise");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    for cohort in [10u32, 100, 1000] {
        let scale = Quantization::largest_scale(20, 1.0, cohort);
        let variance = scale * scale / (cohort as f64 * 2.0 / 3.0);
        let g = DiscreteGaussian::new(variance.round() as u64, 1).unwrap();
        let mut bits = RandomBits::new(ChaCha20Rng::from_seed([1; 32]));
        let mut acc = vec![0u32; LEN];
        eprintln!("noise share, cohort {cohort}: sigma {:.1} (quantized units, scale {scale:.1})", variance.sqrt());
        group.bench_function(format!("share_{LEN}_values_cohort_{cohort}"), |b| {
            b.iter(|| g.add_to(&mut bits, &mut acc, 20))
        });
        group.bench_function(format!("table_cohort_{cohort}"), |b| b.iter(|| g.sampler()));
        let rejection = Sampler::Rejection(g);
        group.bench_function(format!("rejection_{LEN}_values_cohort_{cohort}"), |b| {
            b.iter(|| rejection.add_to(&mut bits, &mut acc, 20))
        });
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(NOISE_THREADS));
        let mut seed = 0u8;
        group.bench_function(format!("share_{LEN}_values_cohort_{cohort}_parallel_{threads}"), |b| {
            b.iter(|| {
                g.add_to_parallel(&mut acc, 20, threads, || {
                    seed = seed.wrapping_add(1);
                    Ok::<_, ()>(RandomBits::new(ChaCha20Rng::from_seed([seed; 32])))
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
