//! How an app opens a store: `HearthConfig`.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::model::TrustedKey;
use crate::store::profile::DEFAULT_HALF_LIFE_DAYS;
use crate::store::{Durability, StoreOptions};

/// How to open a store.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct HearthConfig {
    /// A directory private to the app (for example `Context.noBackupFilesDir`
    /// on Android, Application Support on iOS). Created if missing.
    pub data_dir: String,
    pub durability: Durability,
    /// Cap on the store's size; recording past it fails with `StorageFull`.
    #[uniffi(default = None)]
    pub max_store_bytes: Option<u64>,
    /// Half-life of engagement in the profile, in days.
    #[uniffi(default = 30.0)]
    pub profile_half_life_days: f64,
    /// Ed25519 public keys (64 hex digits each) whose signatures on a model
    /// package are accepted: your federated coordinator's. Hearth's release
    /// key, which signs the built-in model, is always trusted.
    #[uniffi(default)]
    pub trusted_model_keys: Vec<String>,
    /// Federated learning: the epsilon this store may spend over its life
    /// (until `delete_all`); no round starts that would go above it.
    #[uniffi(default = 10.0)]
    pub federated_epsilon_budget: f64,
    /// The delta at which the ledger states epsilon (in (0, 0.01]).
    #[uniffi(default = 0.000001)]
    pub federated_delta: f64,
    /// Engagements (plays, completions, likes) recorded since the last
    /// contribution before the device takes part again.
    #[uniffi(default = 10)]
    pub federated_min_new_examples: u32,
    /// Hours from one contribution to the next (0 to 8760).
    #[uniffi(default = 24)]
    pub federated_min_interval_hours: u32,
    /// How long `participate` waits for a round to be offered (1 to 3600 s;
    /// in a secure round, for each of its stages).
    #[uniffi(default = 60)]
    pub federated_round_wait_seconds: u32,
    /// Secure aggregation: the fewest devices a round may start with (at
    /// least 3). The coordinator learns only the sum of a round's updates;
    /// the fewer they are, the less that sum hides each one.
    #[uniffi(default = 10)]
    pub federated_secure_min_cohort: u32,
    /// Secure aggregation: the smallest share threshold accepted, as a
    /// fraction of the device's neighbours (above 1/2 and at most 1). Above
    /// 1/2, no coordinator can obtain both shares of one device from honest
    /// neighbours.
    #[uniffi(default = 0.6666666666666666)]
    pub federated_secure_min_threshold: f64,
    /// Take part only in secure-aggregation rounds: a plain round (where the
    /// coordinator would receive this device's update itself) is declined.
    #[uniffi(default = false)]
    pub federated_require_secure_aggregation: bool,
    /// Distributed noise: the fraction of a round's cohort this device
    /// counts on to be honest and to finish the round (above 0, at most 1).
    /// When a secure round asks the devices for the noise, this device adds
    /// a share sized so that that fraction of the cohort alone carries the
    /// announced noise, and its ledger accounts with it.
    #[uniffi(default = 0.6666666666666666)]
    pub federated_honest_fraction: f64,
    /// Rounds answered under one node key (with an update, a refusal or a
    /// drop midway) before the device makes a fresh one (1: a new key for
    /// every round, so the coordinator cannot line up one device's rounds;
    /// 0: one key for good, as before). The key is the
    /// device's name to the SuperLink; the ledger keeps, for each round, a
    /// fingerprint of the key it used.
    #[uniffi(default = 1)]
    pub federated_node_key_rounds: u32,
}

impl HearthConfig {
    pub fn new(data_dir: impl Into<String>) -> Self {
        HearthConfig {
            data_dir: data_dir.into(),
            durability: Durability::Normal,
            max_store_bytes: None,
            profile_half_life_days: DEFAULT_HALF_LIFE_DAYS,
            trusted_model_keys: Vec::new(),
            federated_epsilon_budget: 10.0,
            federated_delta: 1e-6,
            federated_min_new_examples: 10,
            federated_min_interval_hours: 24,
            federated_round_wait_seconds: 60,
            federated_secure_min_cohort: 10,
            federated_secure_min_threshold: 2.0 / 3.0,
            federated_require_secure_aggregation: false,
            federated_honest_fraction: 2.0 / 3.0,
            federated_node_key_rounds: 1,
        }
    }

    /// What this store's device requires of a secure-aggregation round.
    pub(crate) fn secure_policy(&self) -> hearth_secagg::DevicePolicy {
        hearth_secagg::DevicePolicy {
            min_cohort: self.federated_secure_min_cohort,
            min_threshold_fraction: self.federated_secure_min_threshold,
            honest_fraction: self.federated_honest_fraction,
            ..hearth_secagg::DevicePolicy::default()
        }
    }

    pub(crate) fn model_keys(&self) -> Result<Vec<TrustedKey>> {
        let mut keys = vec![TrustedKey::release()];
        for k in &self.trusted_model_keys {
            keys.push(TrustedKey::from_hex("trusted_model_keys", k)?);
        }
        Ok(keys)
    }

    pub(crate) fn model_dir(&self) -> PathBuf {
        PathBuf::from(&self.data_dir).join("model")
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.data_dir.is_empty() {
            return Err(Error::invalid("data_dir", "must not be empty"));
        }
        if !(self.profile_half_life_days.is_finite() && self.profile_half_life_days > 0.0) {
            return Err(Error::invalid("profile_half_life_days", "must be a positive number"));
        }
        self.model_keys()?;
        if self.federated_epsilon_budget.is_nan() || self.federated_epsilon_budget <= 0.0 {
            return Err(Error::invalid("federated_epsilon_budget", "must be above 0 (infinity: no budget)"));
        }
        if !(self.federated_delta > 0.0 && self.federated_delta <= 0.01) {
            return Err(Error::invalid("federated_delta", "must be in (0, 0.01]"));
        }
        if self.federated_min_interval_hours > 8760 {
            return Err(Error::invalid("federated_min_interval_hours", "at most 8760 (a year)"));
        }
        if !(1..=3600).contains(&self.federated_round_wait_seconds) {
            return Err(Error::invalid("federated_round_wait_seconds", "must be 1 to 3600"));
        }
        if self.federated_secure_min_cohort < 3 {
            return Err(Error::invalid("federated_secure_min_cohort", "must be at least 3"));
        }
        if !(self.federated_secure_min_threshold > 0.5 && self.federated_secure_min_threshold <= 1.0) {
            return Err(Error::invalid("federated_secure_min_threshold", "must be above 1/2 and at most 1"));
        }
        if !(self.federated_honest_fraction > 0.0 && self.federated_honest_fraction <= 1.0) {
            return Err(Error::invalid("federated_honest_fraction", "must be above 0 and at most 1"));
        }
        Ok(())
    }

    pub(crate) fn store_options(&self) -> StoreOptions {
        StoreOptions { durability: self.durability, max_store_bytes: self.max_store_bytes }
    }
}
