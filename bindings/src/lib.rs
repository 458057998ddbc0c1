//! `libhearth`: the one native library an app loads.
//!
//! It only re-exports `hearth-core`, whose public types carry the UniFFI
//! derives and whose `uniffi::setup_scaffolding!` defines the FFI symbols.
//! Re-exporting is what keeps those symbols in this cdylib / staticlib; the
//! Kotlin and Swift code is generated from this library's metadata (see
//! `bindings/README.md`). Later components are re-exported here too, so apps
//! keep loading a single library.

pub use hearth_core::*;
