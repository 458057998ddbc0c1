//! Shamir sharing of 32-byte secrets (a self-mask seed, an X25519 secret
//! key), t of n, for up to [`MAX_SHARES`] holders.
//!
//! The arithmetic is vsss-rs's (audited) over the prime field of order
//! p = 2^130 - 5, which `ff`'s derive implements; a secret is two field
//! elements, its two 16-byte halves (each below 2^128 < p), each shared
//! with its own random polynomial of degree t - 1. A share is the holder's
//! index x (1 to n) and the two values f(x), 17 bytes each, little end
//! first. Fewer than t shares are uniformly distributed whatever the
//! secret.
//!
//! Why not GF(2^8): it has 255 non-zero points, so at most 255 holders,
//! and a round may give a device up to 1,000 neighbours.

use ff::PrimeField;
use rand_core::CryptoRng;
use vsss_rs::{DefaultShare, IdentifierPrimeField, ReadableShareSet, shamir};

/// The most holders a secret is shared among.
pub const MAX_SHARES: usize = 1024;

/// Bytes of one share's value (two field elements).
pub const SHARE_VALUE_BYTES: usize = 2 * ELEMENT_BYTES;

const ELEMENT_BYTES: usize = 17;

/// The field of order 2^130 - 5 (the Poly1305 prime), generator 2 (a
/// primitive root, checked with sympy's `is_primitive_root`).
#[derive(PrimeField)]
#[PrimeFieldModulus = "1361129467683753853853498429727072845819"]
#[PrimeFieldGenerator = "2"]
#[PrimeFieldReprEndianness = "little"]
struct Fp([u64; 3]);

type Element = IdentifierPrimeField<Fp>;
type FieldShare = DefaultShare<Element, Element>;

/// Why a split or a combine failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    #[error("a threshold of {threshold} of {count} holders is not 2 <= t <= n <= {MAX_SHARES}")]
    Terms { threshold: usize, count: usize },
    #[error("{0} shares where the threshold is {1}")]
    TooFew(usize, usize),
    #[error("two shares with the same index, or an index of 0 or above {MAX_SHARES}")]
    Index,
    #[error("a share's value is not two elements of the field")]
    Value,
    #[error("the shares did not combine")]
    Combine,
}

/// One holder's share of a 32-byte secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretShare {
    /// The holder's point x, 1 to n.
    pub index: u32,
    pub value: [u8; SHARE_VALUE_BYTES],
}

impl std::fmt::Debug for SecretShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretShare({}, ..)", self.index)
    }
}

fn element(bytes: &[u8]) -> Option<Fp> {
    let mut repr = <Fp as PrimeField>::Repr::default();
    repr.as_mut()[..bytes.len()].copy_from_slice(bytes);
    Option::from(Fp::from_repr(repr))
}

fn element_bytes(e: &Fp) -> [u8; ELEMENT_BYTES] {
    let repr = e.to_repr();
    let mut out = [0u8; ELEMENT_BYTES];
    out.copy_from_slice(&repr.as_ref()[..ELEMENT_BYTES]);
    out
}

fn check_terms(threshold: usize, count: usize) -> Result<(), ShamirError> {
    if threshold < 2 || threshold > count || count > MAX_SHARES {
        return Err(ShamirError::Terms { threshold, count });
    }
    Ok(())
}

/// Shares of `secret` for holders 1 to `count`, any `threshold` of which
/// rebuild it.
pub fn split(
    secret: &[u8; 32],
    threshold: usize,
    count: usize,
    rng: &mut impl CryptoRng,
) -> Result<Vec<SecretShare>, ShamirError> {
    check_terms(threshold, count)?;
    let mut halves = Vec::with_capacity(2);
    for half in secret.chunks_exact(16) {
        let value = element(half).expect("16 bytes are below the modulus");
        let shares = shamir::split_secret::<FieldShare>(threshold, count, &IdentifierPrimeField(value), &mut *rng)
            .map_err(|_| ShamirError::Terms { threshold, count })?;
        halves.push(shares);
    }
    let mut out = Vec::with_capacity(count);
    for (low, high) in halves[0].iter().zip(&halves[1]) {
        let index = element_bytes(&low.identifier.0);
        debug_assert_eq!(low.identifier, high.identifier);
        let index = u32::from_le_bytes(index[..4].try_into().expect("four bytes"));
        let mut value = [0u8; SHARE_VALUE_BYTES];
        value[..ELEMENT_BYTES].copy_from_slice(&element_bytes(&low.value.0));
        value[ELEMENT_BYTES..].copy_from_slice(&element_bytes(&high.value.0));
        out.push(SecretShare { index, value });
    }
    Ok(out)
}

/// The secret that `threshold` of `shares` (the first that many) rebuild.
/// Shares with the same index, or an index out of range, are refused.
pub fn combine(shares: &[SecretShare], threshold: usize) -> Result<[u8; 32], ShamirError> {
    check_terms(threshold, MAX_SHARES)?;
    if shares.len() < threshold {
        return Err(ShamirError::TooFew(shares.len(), threshold));
    }
    let used = &shares[..threshold];
    let mut seen = std::collections::BTreeSet::new();
    if used.iter().any(|s| s.index == 0 || s.index as usize > MAX_SHARES || !seen.insert(s.index)) {
        return Err(ShamirError::Index);
    }
    let mut secret = [0u8; 32];
    for half in 0..2 {
        let mut set = Vec::with_capacity(threshold);
        for share in used {
            let value =
                element(&share.value[half * ELEMENT_BYTES..(half + 1) * ELEMENT_BYTES]).ok_or(ShamirError::Value)?;
            let index = Fp::from(u64::from(share.index));
            set.push(FieldShare { identifier: IdentifierPrimeField(index), value: IdentifierPrimeField(value) });
        }
        let value = set.combine().map_err(|_| ShamirError::Combine)?;
        let bytes = element_bytes(&value.0);
        // A secret's half is below 2^128: anything above is a wrong share.
        if bytes[16] != 0 {
            return Err(ShamirError::Combine);
        }
        secret[half * 16..(half + 1) * 16].copy_from_slice(&bytes[..16]);
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn secret(byte: u8) -> [u8; 32] {
        std::array::from_fn(|i| byte.wrapping_add(i as u8))
    }

    #[test]
    fn any_threshold_of_the_shares_rebuilds_the_secret() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        for (t, n) in [(2, 2), (2, 3), (3, 5), (7, 10), (27, 40), (67, 100)] {
            let s = secret(t as u8);
            let shares = split(&s, t, n, &mut rng).unwrap();
            assert_eq!(shares.iter().map(|s| s.index).collect::<Vec<_>>(), (1..=n as u32).collect::<Vec<_>>());
            // The first t, the last t, and every other one.
            assert_eq!(combine(&shares, t).unwrap(), s, "{t} of {n}");
            assert_eq!(combine(&shares[n - t..], t).unwrap(), s, "{t} of {n}");
            let spread: Vec<SecretShare> = shares.iter().rev().step_by(1).take(t).cloned().collect();
            assert_eq!(combine(&spread, t).unwrap(), s);
            // t - 1 shares are refused, and as a threshold of t - 1 they
            // give something else.
            assert_eq!(combine(&shares[..t - 1], t), Err(ShamirError::TooFew(t - 1, t)));
            if t > 2 {
                assert_ne!(combine(&shares[..t - 1], t - 1).ok(), Some(s));
            }
        }
    }

    #[test]
    fn a_thousand_holders_at_two_thirds() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let s = secret(9);
        let shares = split(&s, 667, 1000, &mut rng).unwrap();
        assert_eq!(combine(&shares[333..], 667).unwrap(), s);
    }

    #[test]
    fn fewer_than_the_threshold_say_nothing_of_the_secret() {
        // t = 3: any two shares of secret A are distributed as any two of
        // secret B (uniformly). Count the low byte of both shares' values
        // over many splits of two very different secrets, and compare each
        // to uniform with a chi-square test (255 degrees of freedom: the
        // 99.99% point is about 330).
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        for s in [[0u8; 32], [0xff; 32]] {
            let mut counts = [[0u32; 256]; 2];
            let runs = 20_000;
            for _ in 0..runs {
                let shares = split(&s, 3, 5, &mut rng).unwrap();
                for (k, share) in shares[..2].iter().enumerate() {
                    counts[k][share.value[0] as usize] += 1;
                }
            }
            for c in counts {
                let expected = runs as f64 / 256.0;
                let chi2: f64 = c.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
                assert!(chi2 < 330.0, "chi-square {chi2}");
            }
        }
    }

    #[test]
    fn a_hand_computed_sharing_combines() {
        // f(x) = s + a x + b x^2 over p = 2^130 - 5 for each half, computed
        // with Python integers: s_low = 1, s_high = 2, a = 2^129, b = 3.
        // f(1) = 2^129 + 4 (+1 for the high half), f(2) = 2^130 + 13 =
        // 18 mod p (+1), f(3) = 3 * 2^129 + 28 = 2^129 + 33 mod p (+1).
        fn value(low: u128, low_top: u8, high: u128, high_top: u8) -> [u8; SHARE_VALUE_BYTES] {
            let mut v = [0u8; SHARE_VALUE_BYTES];
            v[..16].copy_from_slice(&low.to_le_bytes());
            v[16] = low_top;
            v[17..33].copy_from_slice(&high.to_le_bytes());
            v[33] = high_top;
            v
        }
        let shares = vec![
            SecretShare { index: 1, value: value(4, 2, 5, 2) },
            SecretShare { index: 2, value: value(18, 0, 19, 0) },
            SecretShare { index: 3, value: value(33, 2, 34, 2) },
        ];
        let mut want = [0u8; 32];
        want[0] = 1;
        want[16] = 2;
        assert_eq!(combine(&shares, 3).unwrap(), want);
    }

    #[test]
    fn bad_shares_and_terms_are_refused() {
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        assert_eq!(split(&secret(1), 1, 3, &mut rng), Err(ShamirError::Terms { threshold: 1, count: 3 }));
        assert_eq!(split(&secret(1), 4, 3, &mut rng), Err(ShamirError::Terms { threshold: 4, count: 3 }));
        assert!(split(&secret(1), 2, MAX_SHARES + 1, &mut rng).is_err());
        let shares = split(&secret(1), 2, 3, &mut rng).unwrap();
        let twice = vec![shares[0].clone(), shares[0].clone()];
        assert_eq!(combine(&twice, 2), Err(ShamirError::Index));
        let zero = vec![SecretShare { index: 0, ..shares[0].clone() }, shares[1].clone()];
        assert_eq!(combine(&zero, 2), Err(ShamirError::Index));
        // A value at or above p is not an element.
        let mut big = shares[0].clone();
        big.value[..ELEMENT_BYTES].fill(0xff);
        assert_eq!(combine(&[big, shares[1].clone()], 2), Err(ShamirError::Value));
    }
}
