//! Where sync records are kept: the [`SyncTransport`] the app implements
//! over its own backend, or [`super::webdav::WebDavTransport`] over a
//! standard storage protocol for apps that have none.

/// One blob the backend holds.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncBlob {
    pub name: String,
    pub size: u64,
}

/// Why the backend could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum SyncTransportError {
    /// Unreachable, timed out, or failed: try again later.
    #[error("the sync backend is unavailable: {reason}")]
    Unavailable { reason: String },
    /// The backend refused the request (full, forbidden).
    #[error("the sync backend refused: {reason}")]
    Refused { reason: String },
}

/// An app's transport that threw something else than a
/// [`SyncTransportError`] (a Kotlin `IOException`, a Swift error of its
/// own): the backend is taken as unavailable, and the sync stops with what
/// it did kept.
impl From<uniffi::UnexpectedUniFFICallbackError> for SyncTransportError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        let first: String = e.reason.lines().next().unwrap_or("").trim().chars().take(160).collect();
        SyncTransportError::Unavailable { reason: format!("the app's transport failed: {first}") }
    }
}

/// The app's storage for the person's sync group: a flat set of opaque
/// blobs under names Hearth chooses. Over the app's own backend (scoped to
/// the signed-in person) or a standard storage protocol; it only ever
/// stores and returns bytes sealed on the devices.
///
/// Kotlin and Swift implement it over their own HTTP stack (OkHttp,
/// URLSession); Hearth calls it from the thread that called `sync`, one
/// call at a time. Each call should give up within the app's own timeout
/// with `Unavailable`.
#[uniffi::export(with_foreign)]
pub trait SyncTransport: Send + Sync {
    /// Stores `blob` under `name`, replacing what was there.
    fn put(&self, name: String, blob: Vec<u8>) -> std::result::Result<(), SyncTransportError>;
    /// Every blob held: names and sizes.
    fn list(&self) -> std::result::Result<Vec<SyncBlob>, SyncTransportError>;
    /// The blob under `name`; None when there is none.
    fn get(&self, name: String) -> std::result::Result<Option<Vec<u8>>, SyncTransportError>;
    /// Removes the blob under `name` (nothing when there is none).
    fn delete(&self, name: String) -> std::result::Result<(), SyncTransportError>;
}
