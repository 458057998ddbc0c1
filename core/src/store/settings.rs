//! The user's privacy controls, as the store keeps them, and what `record`
//! answers under them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The end user's privacy choices. Kept sealed in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, uniffi::Record)]
pub struct PrivacySettings {
    /// Rank for this user (on) or answer with the non-personalized ranker.
    pub personalization_enabled: bool,
    /// While paused, record calls store nothing and say so.
    pub history_paused: bool,
    /// Take part in federated learning. Off until the user opts in.
    pub federated_opt_in: bool,
    /// Categories never to be ranked or recommended.
    pub blocked_categories: Vec<String>,
    /// Events older than this many days are deleted (none: kept until the
    /// user deletes them).
    pub retention_days: Option<u32>,
    /// The user's notification toggle: off, `should_notify` holds every
    /// message. On by default (absent in settings stored before it existed).
    #[serde(default = "enabled")]
    #[uniffi(default = true)]
    pub notifications_enabled: bool,
    /// Let segment reports (randomized on the device) leave it. Off until
    /// the user opts in.
    #[serde(default)]
    #[uniffi(default = false)]
    pub segment_reports_opt_in: bool,
}

fn enabled() -> bool {
    true
}

impl Default for PrivacySettings {
    fn default() -> Self {
        PrivacySettings {
            personalization_enabled: true,
            history_paused: false,
            federated_opt_in: false,
            blocked_categories: Vec::new(),
            retention_days: None,
            notifications_enabled: true,
            segment_reports_opt_in: false,
        }
    }
}

/// Longest retention window accepted (10 years).
pub const MAX_RETENTION_DAYS: u32 = 3650;

impl PrivacySettings {
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(d) = self.retention_days
            && !(1..=MAX_RETENTION_DAYS).contains(&d)
        {
            return Err(Error::invalid("retention_days", format!("must be 1 to {MAX_RETENTION_DAYS}")));
        }
        if self.blocked_categories.len() > 1000 {
            return Err(Error::invalid("blocked_categories", "more than 1000"));
        }
        for c in &self.blocked_categories {
            if c.is_empty() || c.len() > 64 || c.chars().any(char::is_control) {
                return Err(Error::invalid("blocked_categories", "each must be 1 to 64 bytes of text"));
            }
        }
        Ok(())
    }
}

/// What `record` did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum RecordOutcome {
    /// The events are stored; `count` of them.
    Stored { count: u32 },
    /// History is paused: nothing was stored.
    Paused,
}
