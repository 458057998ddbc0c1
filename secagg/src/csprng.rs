//! The random generator every secret choice of a round draws from: the
//! Shamir polynomials, the self-mask seeds, the stochastic rounding, the
//! coordinator's neighbour graph. ChaCha20 (RustCrypto's `ChaCha20Rng`)
//! keyed by 256 bits from the system's CSPRNG (ring's `SystemRandom`): the
//! seeding is the one step that can fail, and it fails with a typed error
//! instead of a panic.

use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;
use ring::rand::{SecureRandom, SystemRandom};

/// The system's random generator could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomFailed;

/// A ChaCha20 generator keyed from the system's CSPRNG.
pub fn system_seeded() -> Result<ChaCha20Rng, RandomFailed> {
    Ok(ChaCha20Rng::from_seed(random_bytes()?))
}

/// 32 fresh bytes from the system's CSPRNG.
pub fn random_bytes() -> Result<[u8; 32], RandomFailed> {
    let mut seed = [0u8; 32];
    SystemRandom::new().fill(&mut seed).map_err(|_| RandomFailed)?;
    Ok(seed)
}

/// A uniform value in `0..n` (n > 0), without modulo bias.
pub(crate) fn below(rng: &mut ChaCha20Rng, n: u64) -> u64 {
    use rand_core::Rng;
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let v = rng.next_u64();
        if v < zone {
            return v % n;
        }
    }
}
