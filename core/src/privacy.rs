//! The user's controls and the export document.
//!
//! The export format is documented in `docs/export-format.md`; its
//! `format` and `format_version` fields name it, and a change that is not
//! backwards compatible bumps the version.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::federated::ledger::LedgerEntry;
use crate::history::{CatalogItem, Event};
use crate::profile::ProfileSummary;

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

/// The name in the `format` field of an export.
pub const EXPORT_FORMAT: &str = "hearth.export";
/// The version of the export format this library writes and reads.
pub const EXPORT_FORMAT_VERSION: u32 = 1;

/// An event as exported, with its store id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedEvent {
    pub id: i64,
    #[serde(flatten)]
    pub event: Event,
}

/// Everything Hearth holds about the user, as one JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportDocument {
    pub format: String,
    pub format_version: u32,
    pub exported_at_ms: i64,
    pub settings: PrivacySettings,
    /// Oldest first.
    pub events: Vec<ExportedEvent>,
    /// Sorted by id.
    pub catalog: Vec<CatalogItem>,
    /// Derived from the events; informative, ignored on import.
    pub profile: ProfileSummary,
    /// Every federated update that left the device (absent in exports made
    /// before the ledger existed). Merged on import, never dropped.
    #[serde(default)]
    pub privacy_ledger: Vec<LedgerEntry>,
}

impl ExportDocument {
    pub(crate) fn parse(json: &str) -> Result<ExportDocument> {
        let doc: ExportDocument = serde_json::from_str(json)?;
        if doc.format != EXPORT_FORMAT {
            return Err(Error::invalid("format", format!("expected \"{EXPORT_FORMAT}\"")));
        }
        if doc.format_version != EXPORT_FORMAT_VERSION {
            return Err(Error::invalid(
                "format_version",
                format!("this library reads version {EXPORT_FORMAT_VERSION}"),
            ));
        }
        doc.settings.validate()?;
        Ok(doc)
    }
}

/// What `import_json` brought in.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ImportSummary {
    pub events: u64,
    pub catalog_items: u64,
}
