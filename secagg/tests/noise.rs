//! The discrete Gaussian sampler against the distribution it claims:
//! goodness of fit to the exact probabilities at small and large
//! variances, and the sum of a cohort's shares against the discrete
//! Gaussian of the summed variance (what the accountant assumes).

use chacha20::ChaCha20Rng;
use hearth_secagg::noise::{DiscreteGaussian, RandomBits, Sampler};
use hearth_secagg::testing::stressed_sampler;
use rand_core::SeedableRng;

/// P(x) of the discrete Gaussian of variance parameter s2, for |x| <= r.
fn pmf(s2: f64, r: i64) -> Vec<f64> {
    let w: Vec<f64> = (-r..=r).map(|x| (-(x as f64).powi(2) / (2.0 * s2)).exp()).collect();
    let total: f64 = w.iter().sum();
    w.into_iter().map(|v| v / total).collect()
}

/// Pearson's chi-square of `samples` against the discrete Gaussian of
/// variance s2, over bins of `width` integers merged until each expects
/// at least 20; the statistic and its degrees of freedom.
fn chi_square(samples: &[i64], s2: f64, width: i64) -> (f64, usize) {
    let r = (12.0 * s2.sqrt()).ceil() as i64 + width;
    let p = pmf(s2, r);
    let n = samples.len() as f64;
    let bin = |x: i64| ((x.clamp(-r, r) + r) / width) as usize;
    let bins = bin(r) + 1;
    let mut expected = vec![0.0; bins];
    for (i, q) in p.iter().enumerate() {
        expected[bin(i as i64 - r)] += q * n;
    }
    let mut observed = vec![0.0; bins];
    for &x in samples {
        observed[bin(x)] += 1.0;
    }
    // Merge sparse bins into their neighbours.
    let (mut e, mut o, mut stat, mut df) = (0.0, 0.0, 0.0, 0usize);
    for (ei, oi) in expected.iter().zip(&observed) {
        e += ei;
        o += oi;
        if e >= 20.0 {
            stat += (o - e).powi(2) / e;
            df += 1;
            e = 0.0;
            o = 0.0;
        }
    }
    if e > 0.0 {
        stat += (o - e).powi(2) / e.max(1e-9);
        df += 1;
    }
    (stat, df.saturating_sub(1))
}

/// The chi-square statistic is within 5 standard deviations of its mean
/// (p about 1e-5 or less of failing by chance; the seeds are fixed).
fn fits(stat: f64, df: usize) -> bool {
    stat < df as f64 + 5.0 * (2.0 * df as f64).sqrt()
}

fn draws(sample: impl Fn(&mut RandomBits) -> i64, n: usize, seed: u8) -> Vec<i64> {
    let mut bits = RandomBits::new(ChaCha20Rng::from_seed([seed; 32]));
    (0..n).map(|_| sample(&mut bits)).collect()
}

/// 200,000 draws fit sigma^2 = num / den: chi-square, variance and mean.
fn assert_fits(xs: &[i64], num: u64, den: u64, width: i64, what: &str) {
    let s2 = num as f64 / den as f64;
    let (stat, df) = chi_square(xs, s2, width);
    assert!(fits(stat, df), "{what}, sigma^2 = {num}/{den}: chi-square {stat:.1} on {df} degrees of freedom");
    let mean = xs.iter().sum::<i64>() as f64 / xs.len() as f64;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    // The variance of the discrete Gaussian is below sigma^2 and close
    // to it once sigma is past 1.
    let exact: f64 = {
        let r = (12.0 * s2.sqrt()).ceil() as i64 + 2;
        pmf(s2, r).iter().enumerate().map(|(i, q)| q * ((i as i64 - r) as f64).powi(2)).sum()
    };
    let sd_of_var = exact * (2.0 / xs.len() as f64).sqrt();
    assert!((var - exact).abs() < 5.0 * sd_of_var, "{what}, sigma^2 = {num}/{den}: variance {var} vs {exact}");
    assert!(mean.abs() < 5.0 * (exact / xs.len() as f64).sqrt(), "{what}, sigma^2 = {num}/{den}: mean {mean}");
}

#[test]
fn both_samplers_fit_the_discrete_gaussian_at_small_and_large_variances() {
    for (num, den, width, seed) in
        [(1u64, 2u64, 1i64, 1u8), (2, 1, 1, 2), (25, 1, 1, 3), (10_000, 3, 4, 4), (1_000_000, 1, 50, 5)]
    {
        let g = DiscreteGaussian::new(num, den).unwrap();
        let sampler = g.sampler();
        assert!(matches!(sampler, Sampler::Table(_)), "sigma^2 = {num}/{den} has a table");
        assert_fits(&draws(|b| sampler.sample(b), 200_000, seed), num, den, width, "table");
        assert_fits(&draws(|b| g.sample_by_rejection(b), 200_000, seed), num, den, width, "rejection");
    }
    // Beyond the table's reach (sigma 10,000) the sampler is the rejection one.
    let g = DiscreteGaussian::new(100_000_000, 1).unwrap();
    let sampler = g.sampler();
    assert!(matches!(sampler, Sampler::Rejection(_)));
    assert_fits(&draws(|b| sampler.sample(b), 200_000, 6), 100_000_000, 1, 500, "beyond the table");
}

#[test]
fn the_tail_and_the_exact_decision_keep_the_distribution() {
    // Rare in use (a draw past 7 sigma, or a uniform within 2^-60 of the
    // acceptance bound): here the body is cut at 1 or 2 sigma, so up to a
    // third of the draws come from the tail, and the bounds are cut to 8,
    // 4 or 1 bits, so the exact decision settles one draw in 100 or more
    // (with 1 bit, about half).
    for (num, den, cut, coarse, width, seed) in [
        (25u64, 1u64, 5u64, 56u32, 1i64, 11u8),
        (10_000, 3, 115, 56, 4, 12),
        (1, 2, 0, 60, 1, 13),
        (400, 1, 20, 0, 1, 14),
        (40, 1, 40, 63, 1, 15),
    ] {
        let sampler = stressed_sampler(num, den, cut, coarse);
        assert_fits(&draws(|b| sampler.sample(b), 200_000, seed), num, den, width, "stressed");
    }
}

#[test]
fn a_cohorts_shares_sum_to_the_discrete_gaussian_of_the_summed_variance() {
    // Ten devices, each sigma^2 = 40 (sigma about 6.3): the sum is close to
    // the discrete Gaussian of 400 (Kairouz et al., theorem 1: here the gap
    // is below 1e-300 in the divergence), which the accountant assumes.
    let sampler = DiscreteGaussian::new(40, 1).unwrap().sampler();
    let mut rngs: Vec<RandomBits> =
        (0..10).map(|d| RandomBits::new(ChaCha20Rng::from_seed([100 + d as u8; 32]))).collect();
    let sums: Vec<i64> = (0..100_000).map(|_| rngs.iter_mut().map(|r| sampler.sample(r)).sum()).collect();
    let (stat, df) = chi_square(&sums, 400.0, 2);
    assert!(fits(stat, df), "chi-square {stat:.1} on {df} degrees of freedom");
    let var = sums.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / sums.len() as f64;
    assert!((var - 400.0).abs() < 5.0 * 400.0 * (2.0 / sums.len() as f64).sqrt(), "variance {var}");
}

#[test]
fn noise_is_added_modulo_two_to_the_bits() {
    let g = DiscreteGaussian::new(1_000_000, 1).unwrap();
    let mut bits = RandomBits::new(ChaCha20Rng::from_seed([9; 32]));
    let mut acc = vec![0u32; 50_000];
    g.add_to(&mut bits, &mut acc, 16);
    assert!(acc.iter().all(|&v| v < 1 << 16));
    // Read back as signed values modulo 2^16, the noise is centred with
    // standard deviation about 1000.
    let signed: Vec<f64> = acc.iter().map(|&v| if v >= 1 << 15 { v as f64 - 65536.0 } else { v as f64 }).collect();
    let var = signed.iter().map(|v| v * v).sum::<f64>() / signed.len() as f64;
    assert!((var.sqrt() - 1000.0).abs() < 20.0, "{}", var.sqrt());
    let mut again = RandomBits::new(ChaCha20Rng::from_seed([9; 32]));
    let sampler = g.sampler();
    let first: Vec<i64> = (0..3).map(|_| sampler.sample(&mut again)).collect();
    assert_eq!(first.iter().map(|&x| x as i32 as u32 & 0xffff).collect::<Vec<_>>(), acc[..3]);
}

#[test]
fn parallel_noise_gives_each_slice_its_own_stream() {
    let g = DiscreteGaussian::new(10_000, 1).unwrap();
    let seeds = [21u8, 22, 23, 24];
    let mut next = seeds.iter();
    let mut acc = vec![5u32; 10_001];
    g.add_to_parallel(&mut acc, 20, 4, || {
        Ok::<_, ()>(RandomBits::new(ChaCha20Rng::from_seed([*next.next().unwrap(); 32])))
    })
    .unwrap();
    // Slices of ceil(10,001 / 4) values, each as one thread's add_to with
    // the next stream.
    let mut want = vec![5u32; 10_001];
    for (part, seed) in want.chunks_mut(2501).zip(seeds) {
        g.add_to(&mut RandomBits::new(ChaCha20Rng::from_seed([seed; 32])), part, 20);
    }
    assert_eq!(acc, want);
    // A stream that cannot be had is the caller's error, and nothing is added.
    let mut untouched = vec![0u32; 8];
    assert_eq!(
        g.add_to_parallel(&mut untouched, 20, 2, || Err::<RandomBits, _>("no randomness")),
        Err("no randomness")
    );
    assert_eq!(untouched, vec![0; 8]);
    // No values, no threads.
    g.add_to_parallel(&mut [], 20, 3, || Ok::<_, ()>(RandomBits::new(ChaCha20Rng::from_seed([1; 32])))).unwrap();
}
