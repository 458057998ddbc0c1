//! Secure aggregation (issue 16): the coordinator learns the sum of a
//! cohort's updates and nothing about any one of them.
//!
//! The protocol is of the SecAgg+ family (Bell et al., CCS 2020): each
//! device masks its quantized update (`super::quantize`) with a mask
//! shared pairwise with each of its neighbours (one adds it, the other
//! subtracts it, so pairs cancel in the sum) and a self mask of its own;
//! Shamir shares of its self-mask seed and of its key let the survivors
//! remove what a dropped device left. This module holds its cryptography so
//! far, every primitive from a reviewed crate: X25519 (x25519-dalek, whose
//! keys can serve several agreements), HKDF-SHA256 and AES-256-GCM (ring),
//! the ChaCha20 keystream (RustCrypto) for every mask, from a full 256-bit
//! seed. Known-answer tests pin each against an independent implementation
//! (Python's `cryptography`).

pub mod keys;
