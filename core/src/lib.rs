//! Hearth's on-device core.
//!
//! An app holds one [`Hearth`]: it records the user's events into an
//! encrypted SQLite store, keeps a profile current, and honours the user's
//! privacy controls (pause, forget, export, delete all). See the workspace
//! README for the privacy model.
//!
//! The public types carry UniFFI derives, so the Kotlin and Swift APIs are
//! generated from these very declarations (the `hearth-ffi` crate bundles
//! them into one native library).

mod crypto;
mod error;
mod features;
pub mod federated;
mod hearth;
mod history;
mod logging;
mod model;
mod notify;
mod privacy;
mod profile;
mod ranking;
mod segments;
pub(crate) mod store;
mod training;

pub use crypto::{
    FixedKeyProvider, KeyError, KeyProvider, PASSPHRASE_ITERATIONS, PASSPHRASE_SALT_FILE, PassphraseKeyProvider,
    ROOT_KEY_LEN,
};
pub use error::HearthError;
pub use features::RankContext;
pub use federated::{
    DeclineReason, DeviceConditions, Eligibility, FederatedFailure, FleetTransport, HttpHeader, IneligibleReason,
    LedgerEntry, ParticipationOutcome, PrivacyLedger, TransportFailure, UploadStatus,
};
pub use hearth::{Hearth, HearthConfig, destroy_store};
pub use history::{CatalogItem, DeviceClass, Event, EventContext, EventKind};
pub use logging::{HearthLogger, LogLevel, set_logger};
pub use model::{ModelInfo, ModelPackage, ModelRejection, PACKAGE_FILES, RELEASE_MODEL_KEY};
pub use notify::{
    NotificationCandidate, NotificationDecision, NotificationKind, NotificationPolicy, NotifyReason, Urgency,
};
pub use privacy::{
    EXPORT_FORMAT, EXPORT_FORMAT_VERSION, ExportDocument, ExportedEvent, ImportSummary, PrivacySettings, RecordOutcome,
};
pub use profile::{CategoryAffinity, DeviceShare, ProfileSummary};
pub use ranking::{
    Candidate, Diversity, FallbackReason, MAX_CANDIDATES, MAX_EXPLORATION_SHARE, MAX_LIMIT, RankOptions, RankResult,
    RankedItem, Ranker, Reason,
};
pub use segments::{
    CategoryStrength, Daypart, EngagementLevel, LifecycleStage, SESSION_GAP_MINUTES, SESSION_RETENTION_DAYS,
    SegmentConfig, SegmentEstimate, SegmentReport, SegmentReportOutcome, Segments, estimate_segment_sizes,
    membership_bits, pack_bits, simulated_report, unpack_bits,
};
pub use store::{DB_FILE, Durability, SCHEMA_VERSION};

/// Internals exposed for the workspace's own tests and benchmarks only.
#[doc(hidden)]
pub mod testing;

uniffi::setup_scaffolding!("hearth");
