//! Hearth's on-device core.
//!
//! An app holds one [`Hearth`]: it records the user's events into an
//! encrypted SQLite store, keeps a profile current, and honours the user's
//! privacy controls (pause, forget, export, delete all). See
//! `docs/privacy.md` for the privacy model.
//!
//! The modules, from the bottom up (none depends on one above it;
//! `tests/architecture.rs` checks):
//!
//! * `error`, `logging`, `random`: leaves.
//! * `store`: the encrypted SQLite store (`crypto`, the sealed tables), the
//!   history and catalog types, the profile, the privacy settings.
//! * `model`: model packages (verification, tract plans), the features made
//!   on the device, and the training step.
//! * `ranking`: candidates to a ranked row with reasons, or the fallback.
//! * `audience`: segments and notification decisions.
//! * `experiments`: experiment arms, this install's assignment, and the
//!   sealed log of what they showed.
//! * `federated`: the Fleet client, rounds, the ledger and its accountant.
//! * `hearth`: the facade apps hold, which owns the session (the open store
//!   and what is derived from it) and hands each subsystem its part.
//!
//! The public types carry UniFFI derives, so the Kotlin and Swift APIs are
//! generated from these very declarations (the `hearth-ffi` crate bundles
//! them into one native library).

mod audience;
mod error;
mod experiments;
pub mod federated;
mod hearth;
mod logging;
mod model;
mod random;
mod ranking;
pub(crate) mod store;
pub mod sync;

pub use audience::notify::{
    NotificationCandidate, NotificationDecision, NotificationKind, NotificationPolicy, NotifyReason, Urgency,
};
pub use audience::report::{
    SegmentEstimate, estimate_segment_sizes, membership_bits, pack_bits, simulated_report, unpack_bits,
};
pub use audience::segments::{
    CategoryStrength, Daypart, EngagementLevel, LifecycleStage, SESSION_GAP_MINUTES, SESSION_RETENTION_DAYS,
    SegmentConfig, SegmentReport, SegmentReportOutcome, Segments,
};
pub use error::HearthError;
pub use experiments::estimate::{ArmEstimate, MetricEstimate, estimate as estimate_arms};
pub use experiments::evaluation::{DeviceEvaluation, HELD_OUT_MAX};
pub use experiments::gate::{
    Comparison, Evaluation, GATE_METRICS, GateDecision, contribution_bound as gate_contribution_bound,
    decide as gate_decision,
};
pub use experiments::log::{
    ATTRIBUTION_WINDOW_MS, ExperimentLogRecord, LogEntry, MAX_EXPOSED_ITEMS, MAX_LOG_RECORDS, OutcomeKind,
};
pub use experiments::report::{
    ExperimentReport, MAX_REPORT_EXPOSURES, REPORT_METRICS, report_bound as experiment_report_bound,
};
pub use experiments::{ArmTreatment, Experiment, ExperimentArm, MAX_ARMS, MAX_EXPERIMENT_NAME, MAX_EXPERIMENTS};
pub use federated::{
    Aggregation, DeclineReason, DeviceConditions, Eligibility, FederatedFailure, FleetTransport, HttpHeader,
    IneligibleReason, LedgerEntry, ParticipationOutcome, PrivacyLedger, TransportFailure, UploadStatus,
};
pub use hearth::experiments::{ExperimentAssignment, ExperimentStatus, ExperimentsExport, OutcomeLogged};
pub use hearth::export::{
    EXPORT_FORMAT, EXPORT_FORMAT_VERSION, ExportDocument, ExportedEvent, ExportedSyncDevice, ExportedSyncGroup,
    ImportSummary,
};
pub use hearth::sync::{
    InviteReply, RefusalKind, RefusedRecord, SyncBlob, SyncDevice, SyncGroupInfo, SyncOptions, SyncReport, SyncStatus,
    SyncTransport, SyncTransportError,
};
pub use hearth::{Hearth, HearthConfig, destroy_store};
pub use logging::{HearthLogger, LogLevel, set_logger};
pub use model::features::RankContext;
pub use model::{ModelInfo, ModelPackage, ModelRejection, PACKAGE_FILES, RELEASE_MODEL_KEY};
pub use ranking::{
    Candidate, Diversity, FallbackReason, MAX_CANDIDATES, MAX_EXPLORATION_SHARE, MAX_LIMIT, RankOptions, RankResult,
    RankedItem, Ranker, Reason,
};
pub use store::crypto::{
    FixedKeyProvider, KeyError, KeyProvider, PASSPHRASE_ITERATIONS, PASSPHRASE_SALT_FILE, PassphraseKeyProvider,
    ROOT_KEY_LEN,
};
pub use store::history::{CatalogItem, DeviceClass, Event, EventContext, EventKind};
pub use store::profile::{CategoryAffinity, DeviceShare, ProfileSummary};
pub use store::settings::{PrivacySettings, RecordOutcome};
pub use store::{DB_FILE, Durability, SCHEMA_VERSION};

/// Internals exposed for the workspace's own tests and benchmarks only.
#[doc(hidden)]
pub mod testing;

uniffi::setup_scaffolding!("hearth");
