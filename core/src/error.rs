//! Errors. Two types, one mapping place (the habit of application-services):
//!
//! * [`Error`] is what the modules inside the crate return. It carries the
//!   underlying causes (`rusqlite`, `std::io`, `serde_json`) for logging.
//! * [`HearthError`] is what apps see, through Rust, Kotlin and Swift. Every
//!   variant is something an app can act on, and no message ever contains an
//!   item id, a title, a category, a timestamp or a path.
//!
//! `impl From<Error> for HearthError` is the only place that maps one to the
//! other, and it is also where failures are logged.

use log::{error, warn};

/// Errors inside the crate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the root key does not open this store")]
    WrongKey,
    #[error("the key provider could not supply the key: {0}")]
    KeyUnavailable(String),
    #[error("the platform invalidated the key")]
    KeyInvalidated,
    #[error("a sealed record in `{table}` failed authentication")]
    Integrity { table: &'static str },
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: String, reason: String },
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    #[error("store schema version {found} is newer than this library ({supported})")]
    NewerSchema { found: u32, supported: u32 },
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    #[error("model rejected ({kind:?}): {reason}")]
    Model { kind: ModelRejection, reason: String },
    #[error("federated round failed ({kind:?}): {reason}")]
    Federated { kind: FederatedFailure, reason: String },
    #[error("internal: {0}")]
    Internal(String),
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a model package was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ModelRejection {
    /// The signature does not verify under any trusted key.
    BadSignature,
    /// A file is shorter than the manifest says (an interrupted download).
    Truncated,
    /// A file's size or SHA-256 differs from the manifest.
    DigestMismatch,
    /// The manifest or a graph cannot be parsed.
    Malformed,
    /// The manifest's format, name, features or hashing differ from what this
    /// library computes.
    SchemaMismatch,
    /// A graph input, output or weight has another shape or type than
    /// expected.
    WrongShape,
    /// A graph uses an op outside the known set.
    UnknownOp,
    /// The package is older than the model in use.
    Stale,
}

impl ModelRejection {
    pub(crate) fn err(self, reason: impl Into<String>) -> Error {
        Error::Model { kind: self, reason: reason.into() }
    }
}

/// What kind of failure ended a federated round, as apps see it (in
/// `HearthError::Federated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FederatedFailure {
    /// No answer in time, after the retries.
    Timeout,
    /// The coordinator answered with an HTTP error.
    Http,
    /// The coordinator refused this device.
    Rejected,
    /// The connection failed.
    Network,
    /// A reply that breaks the protocol (undecodable, wrong content hash,
    /// unexpected shapes).
    Protocol,
    /// A reply above the device's size limits.
    TooLarge,
    /// The device's node key could not be made or used.
    Key,
    /// Local training failed or gave an update the device refused to send.
    Update,
    /// The app cancelled the round (`cancel_participation`).
    Cancelled,
    /// The device refused a secure-aggregation round or one of its stages
    /// (the coordinator asked for less protection than the device requires,
    /// or broke the protocol); the device sent nothing more in the round.
    Refused,
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput { field: field.into(), reason: reason.into() }
    }
}

/// The error every public Hearth call returns.
///
/// Messages are safe to log and to show: they never contain personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum HearthError {
    /// The key supplied does not open this store. Nothing was changed. If the
    /// key is gone for good, call `destroy_store` and open afresh.
    #[error("the key does not open this store")]
    WrongKey,
    /// The app's key provider could not hand over the key (for example the
    /// device is locked). Try again later.
    #[error("the key is not available: {reason}")]
    KeyUnavailable { reason: String },
    /// The platform invalidated the key for good (Android does this when the
    /// lock screen changes). The store cannot be read: destroy it and start
    /// again.
    #[error("the key was invalidated by the platform")]
    KeyInvalidated,
    /// A stored record failed authentication (tampered with or damaged). The
    /// read that met it fails; the rest of the store is still usable.
    #[error("a stored record failed its integrity check ({what})")]
    Integrity { what: String },
    /// The database file itself is damaged beyond a single record.
    #[error("the store is corrupt: {reason}")]
    CorruptStore { reason: String },
    /// The store reached its size limit or the disk is full. Nothing already
    /// stored was lost; the call that failed stored nothing.
    #[error("storage is full")]
    StorageFull,
    /// An argument was rejected. `field` names it; nothing was stored.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: String, reason: String },
    /// The store was written by a newer version of Hearth.
    #[error("the store has schema version {found}, this library knows up to {supported}")]
    StoreTooNew { found: u32, supported: u32 },
    /// The operating system refused a file operation.
    #[error("storage i/o error: {reason}")]
    Io { reason: String },
    /// `close` was called; open a new `Hearth`.
    #[error("the store is closed")]
    Closed,
    /// A model package was refused; `kind` says why. Ranking goes on with
    /// the model it used before (or the non-personalized ranker).
    #[error("model rejected ({kind:?}): {reason}")]
    ModelRejected { kind: ModelRejection, reason: String },
    /// A federated round failed; `kind` says how. No update was sent
    /// unless the privacy ledger has an entry for the round.
    #[error("federated round failed ({kind:?}): {reason}")]
    Federated { kind: FederatedFailure, reason: String },
    /// A bug in Hearth. The call failed; the object is still usable.
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl From<Error> for HearthError {
    fn from(e: Error) -> Self {
        match e {
            Error::Sqlite(err) => from_sqlite(err),
            Error::Io(err) => {
                if err.raw_os_error() == Some(28) {
                    warn!("disk full: {err}");
                    return HearthError::StorageFull;
                }
                error!("i/o error: {err}");
                HearthError::Io { reason: err.kind().to_string() }
            }
            Error::Json(err) => {
                // Only our own documents are parsed; the message names a line
                // and column, never a value.
                HearthError::InvalidInput {
                    field: "document".into(),
                    reason: format!(
                        "not valid JSON of the expected shape (line {}, column {})",
                        err.line(),
                        err.column()
                    ),
                }
            }
            Error::WrongKey => HearthError::WrongKey,
            Error::KeyUnavailable(reason) => HearthError::KeyUnavailable { reason },
            Error::KeyInvalidated => HearthError::KeyInvalidated,
            Error::Integrity { table } => {
                warn!("integrity failure in {table}");
                HearthError::Integrity { what: table.to_string() }
            }
            Error::InvalidInput { field, reason } => HearthError::InvalidInput { field, reason },
            Error::Corrupt(reason) => {
                error!("corrupt store: {reason}");
                HearthError::CorruptStore { reason }
            }
            Error::NewerSchema { found, supported } => HearthError::StoreTooNew { found, supported },
            Error::Crypto(what) => {
                error!("crypto failure: {what}");
                HearthError::Internal { reason: what.to_string() }
            }
            Error::Model { kind, reason } => {
                warn!("model rejected ({kind:?}): {reason}");
                HearthError::ModelRejected { kind, reason }
            }
            Error::Federated { kind, reason } => {
                warn!("federated round failed ({kind:?}): {reason}");
                HearthError::Federated { kind, reason }
            }
            Error::Internal(reason) => {
                error!("internal error: {reason}");
                HearthError::Internal { reason }
            }
        }
    }
}

fn from_sqlite(err: rusqlite::Error) -> HearthError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(f, _) = &err {
        match f.code {
            ErrorCode::DiskFull => {
                warn!("store full: {err}");
                return HearthError::StorageFull;
            }
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                error!("corrupt store: {err}");
                return HearthError::CorruptStore { reason: format!("{:?}", f.code) };
            }
            ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly | ErrorCode::SystemIoFailure => {
                error!("storage i/o error: {err}");
                return HearthError::Io { reason: format!("{:?}", f.code) };
            }
            _ => {}
        }
    }
    // SQL text and SQLite's own messages hold no user values (all values are
    // bound parameters), but keep the public message to the error code.
    error!("sqlite error: {err}");
    let reason = match &err {
        rusqlite::Error::SqliteFailure(f, _) => format!("sqlite {:?}", f.code),
        other => format!("sqlite: {}", short_kind(other)),
    };
    HearthError::Internal { reason }
}

fn short_kind(err: &rusqlite::Error) -> &'static str {
    match err {
        rusqlite::Error::QueryReturnedNoRows => "no rows",
        rusqlite::Error::InvalidColumnType(..) => "invalid column type",
        rusqlite::Error::ExecuteReturnedResults => "execute returned results",
        _ => "other",
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for HearthError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        let first: String = e.reason.lines().next().unwrap_or("").trim().chars().take(160).collect();
        HearthError::Internal { reason: format!("callback failed: {first}") }
    }
}
