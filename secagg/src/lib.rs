//! Secure aggregation for Hearth: a coordinator learns the sum of a
//! cohort's updates and nothing about any one of them.
//!
//! The protocol is of the SecAgg+ family (Bonawitz et al., CCS 2017; Bell
//! et al., CCS 2020): each device quantizes its clipped update
//! ([`quantize`]), masks it with a mask shared with each of its neighbours
//! in a sparse random graph ([`graph`]; one adds the pair's mask, the other
//! subtracts it, so pairs cancel in the sum) and a self mask of its own;
//! t-of-k Shamir shares ([`shamir`]) of its self-mask seed and of its mask
//! key, sealed for its neighbours, let the survivors remove what a dropped
//! device left, and nothing more. [`device`] is the device's half,
//! [`coordinator`] the coordinator's, [`wire`] the messages between them.
//!
//! Every primitive comes from a reviewed crate: X25519 (x25519-dalek),
//! HKDF-SHA256 and AES-256-GCM (ring), AES-256-CTR for masks and ChaCha20
//! as the CSPRNG keyed from the system's (RustCrypto), Shamir arithmetic (vsss-rs over a
//! field from `ff`'s derive). Known-answer tests pin each against an
//! independent implementation.

pub mod coordinator;
pub mod csprng;
pub mod device;
pub mod graph;
pub mod keys;
pub mod noise;
pub mod quantize;
pub mod shamir;
#[doc(hidden)]
pub mod testing;
pub mod wire;

pub use coordinator::{Aggregate, CoordinatorRound, Rejected, RoundConfig, RoundError, RoundStage};
pub use device::{Coin, DevicePolicy, DeviceRound, Refusal};
pub use noise::NoiseTerms;
pub use quantize::Quantization;
