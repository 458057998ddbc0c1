//! An in-process federated coordinator for `hearth simulate --rounds R`:
//! FedAvg over the devices' clipped updates, each new global model signed
//! with a coordinator key made for the run and installed by every device
//! through `Hearth::install_model`, exactly as a downloaded one would be.
//!
//! The devices train with the same code a phone runs (`hearth-core`'s
//! training step through tract); what reaches this coordinator is only each
//! device's clipped weight delta. No noise is added here (the privacy
//! ledger and DP noise land with the federated issue).

use std::sync::Arc;

use anyhow::{Result, anyhow};
use hearth_core::{Hearth, ModelPackage};
use ring::digest::{SHA256, digest};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::model_cmd::hex;

pub struct Coordinator {
    key: Ed25519KeyPair,
    base: ModelPackage,
    pub weights: Vec<f32>,
    pub version: u64,
}

impl Coordinator {
    pub fn new() -> Result<Coordinator> {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| anyhow!("key generation failed"))?;
        let key = Ed25519KeyPair::from_pkcs8(der.as_ref()).map_err(|_| anyhow!("generated key unreadable"))?;
        let base = ModelPackage::builtin();
        let weights = base.weights.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let manifest: serde_json::Value = serde_json::from_slice(&base.manifest)?;
        let version = manifest["version"].as_u64().ok_or_else(|| anyhow!("manifest without a version"))?;
        Ok(Coordinator { key, base, weights, version })
    }

    /// The key devices must trust (hex).
    pub fn public_key(&self) -> String {
        hex(self.key.public_key().as_ref())
    }

    /// FedAvg: the mean of the updates, added to the global weights; returns
    /// the signed package of the new version.
    pub fn aggregate(&mut self, updates: &[Vec<f32>]) -> Result<ModelPackage> {
        if updates.is_empty() {
            return Err(anyhow!("no updates this round"));
        }
        let scale = 1.0 / updates.len() as f32;
        for u in updates {
            if u.len() != self.weights.len() {
                return Err(anyhow!("an update of {} values for {} weights", u.len(), self.weights.len()));
            }
            for (w, d) in self.weights.iter_mut().zip(u) {
                *w += scale * d;
            }
        }
        self.version += 1;
        self.package()
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

/// One device's part of a round: train on its own history, return the
/// clipped delta and its norm before clipping.
pub fn local_round(hearth: &Arc<Hearth>, clip: f64, seed: u64) -> Result<Option<(Vec<f32>, f64)>> {
    match hearth_core::testing::local_update(hearth, clip, 1, seed) {
        Ok(u) => Ok(Some((u.delta, u.norm_before_clip))),
        // Nothing engaged to learn from: the device sits the round out.
        Err(hearth_core::HearthError::InvalidInput { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
