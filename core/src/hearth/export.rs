//! The export document: everything Hearth holds about the user, as one
//! JSON document (`export_json`, `import_json`).
//!
//! The format is documented in `docs/export-format.md`; its `format` and
//! `format_version` fields name it, and a change that is not backwards
//! compatible bumps the version.

use serde::{Deserialize, Serialize};

use super::experiments::ExperimentsExport;
use crate::error::{Error, Result};
use crate::federated::ledger::LedgerEntry;
use crate::store::history::{CatalogItem, Event};
use crate::store::profile::ProfileSummary;
use crate::store::settings::PrivacySettings;

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
    /// The experiments defined here, this install's arms, and the log of
    /// what they showed and what the user did. About this device only:
    /// ignored on import.
    #[serde(default)]
    pub experiments: ExperimentsExport,
    /// The sync group this device is in, and its devices as known here;
    /// never a key. About this device only: ignored on import (a device
    /// joins a group by pairing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_group: Option<ExportedSyncGroup>,
}

/// A device's sync group, as an export lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedSyncGroup {
    pub group_id: String,
    pub device_id: String,
    pub joined_ms: i64,
    /// The key epoch: 1, and one more for each device removed.
    pub key_epoch: u32,
    pub devices: Vec<ExportedSyncDevice>,
}

/// A device of the group, as an export lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedSyncDevice {
    pub device_id: String,
    pub joined_ms: i64,
    pub removed: bool,
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
