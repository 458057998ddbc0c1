//! End-to-end encrypted sync between one person's devices (issue 20):
//! the devices share their history with each other and with no one else;
//! the app's backend only relays sealed bytes.
//!
//! `pairing`: how a second device joins the person's sync group, the group
//! key passing only between the two devices, authenticated by digits the
//! person compares on both screens. A Rust API for now; the store's group
//! key, the sync itself and the Kotlin and Swift calls build on it.

pub mod pairing;
