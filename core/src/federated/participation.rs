//! Taking part in a federated round as the product does: the user's consent
//! and the host's report of the device's state first, then one round over
//! the Fleet API with this store's node key, training from the round's
//! global model, and an entry in the privacy ledger for every update.
//!
//! Order of a round (each step can end it, and nothing is uploaded unless
//! all before it passed):
//!
//! 1. eligibility ([`Eligibility`]): federated opt-in, charging, unmetered
//!    network, idle, enough new examples since the last contribution, the
//!    configured period since it, epsilon left in the budget;
//! 2. the train message: it must announce the round's noise multiplier and
//!    sampling rate (`noise-multiplier`, `sampling-rate`; the ledger cannot
//!    account for a round without them), be a round this device has not
//!    answered, and keep the epsilon spent within the budget once this
//!    round is added; otherwise the device declines (an error reply with a
//!    fixed reason, no update);
//! 3. the global model: a signed manifest in the round's config
//!    (`model-manifest`, `model-signature`) is verified before the device
//!    trains from it, and installed once training from it succeeds, unless
//!    `model-release` says `"candidate"` (then it is trained from and never
//!    ranks here; `"published"`, or no entry, installs); a bad one is
//!    `ModelRejected` and nothing is uploaded. Without one the device trains
//!    from the round's arrays, which must match the active model's layout;
//! 4. training (SGD from the global weights with the round's epochs and
//!    learning rate), the delta clipped to the round's C;
//! 5. the ledger entry is written (`Pending`), then the update is pushed and
//!    the entry marked `Sent` (or `Unconfirmed` when the push failed).
//!
//! The node key (P-256) is made once per store and kept sealed in it; it
//! goes with `delete_all`.
//!
//! This module holds what a round is made of (the app's view of it, the
//! state kept between rounds); the session drives a round in
//! `crate::hearth::federated`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fleet::{Transport, TransportError};
use super::ledger::LedgerEntry;
use super::{FederatedFailure, FleetError};

/// What the host app reports about the device right now (from
/// `BatteryManager`/`ConnectivityManager` on Android, `ProcessInfo` and
/// `NWPathMonitor` on iOS, or the scheduler's constraints that started it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct DeviceConditions {
    pub charging: bool,
    /// Wi-Fi or Ethernet, not a metered or roaming cellular link.
    pub unmetered_network: bool,
    /// The user is not using the device (screen off, or the OS's idle
    /// constraint).
    pub idle: bool,
}

/// Why a device does not take part now. Shown to the user as is: nothing
/// here is an inference about them.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum IneligibleReason {
    /// The user has not opted in to federated learning.
    NotOptedIn,
    NotCharging,
    MeteredNetwork,
    NotIdle,
    /// Fewer new engagements than the store's minimum since the last
    /// contribution.
    TooFewNewExamples {
        have: u32,
        need: u32,
    },
    /// The last contribution was too recent; the next one may start then.
    TooSoon {
        next_allowed_ms: i64,
    },
    /// The privacy budget is spent.
    BudgetSpent {
        spent: f64,
        budget: f64,
    },
}

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Eligibility {
    Eligible,
    /// Every reason that applies, in the order above.
    NotEligible {
        reasons: Vec<IneligibleReason>,
    },
}

/// Why a device that was eligible declined the round it was offered.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum DeclineReason {
    /// The round did not announce its noise multiplier and sampling rate.
    PrivacyTermsMissing,
    /// Taking part would take the epsilon spent to `epsilon_after`, above
    /// the budget.
    OverBudget { epsilon_after: f64, budget: f64 },
    /// This device already answered this round.
    AlreadyTookPart,
    /// The round's terms give no finite epsilon (no noise, or a noise
    /// multiplier or sampling rate out of range): a device never sends an
    /// update without a privacy guarantee, whatever its budget.
    NoPrivacyGuarantee { noise_multiplier: f64, sampling_rate: f64 },
    /// The round was plain (the coordinator would receive this device's
    /// update itself) and the store requires secure aggregation.
    SecureAggregationRequired,
}

/// How a call to `participate` ended (failures are errors instead).
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum ParticipationOutcome {
    /// Nothing was contacted.
    NotEligible { reasons: Vec<IneligibleReason> },
    /// No round was offered within the wait.
    NoRound,
    /// A round was offered and declined; no update left the device.
    Declined { reason: DeclineReason },
    /// An update left the device; its ledger entry.
    Contributed { entry: LedgerEntry },
}

/// A header of a Fleet request.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// How an app's [`FleetTransport`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum TransportFailure {
    #[error("timed out")]
    Timeout,
    /// The server answered with a non-2xx status.
    #[error("HTTP {code}")]
    Status { code: u16 },
    /// The server answered 429 or 503 with a `Retry-After` of this many
    /// milliseconds (its delay-seconds form; a date may be left as `Status`).
    #[error("HTTP {code}, retry after {retry_after_ms} ms")]
    Throttled { code: u16, retry_after_ms: u64 },
    /// The reply was larger than the transport accepts.
    #[error("reply too large")]
    TooLarge,
    /// Connection-level failure (DNS, TLS, refused, reset).
    #[error("{reason}")]
    Io { reason: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for TransportFailure {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        let first: String = e.reason.lines().next().unwrap_or("").trim().chars().take(160).collect();
        TransportFailure::Io { reason: format!("transport failed: {first}") }
    }
}

/// The app's own HTTP stack for the Fleet API (OkHttp, URLSession: TLS,
/// proxies and certificate pinning as the platform does them).
///
/// `post` sends `body` to the coordinator's base URL joined with `path`
/// (such as `/v1/fleet/pull-messages`) with the given headers plus
/// `content-type: application/protobuf`, and returns the body of a 2xx
/// reply, all within `timeout_ms`. Hearth calls it from the thread that
/// called `participate_via`, and from one helper thread of its own for
/// heartbeats while it trains.
#[uniffi::export(with_foreign)]
pub trait FleetTransport: Send + Sync {
    fn post(
        &self,
        path: String,
        headers: Vec<HttpHeader>,
        body: Vec<u8>,
        timeout_ms: u64,
    ) -> std::result::Result<Vec<u8>, TransportFailure>;
}

/// A [`FleetTransport`] as the Fleet client's [`Transport`].
pub(crate) struct ForeignTransport(pub(crate) Arc<dyn FleetTransport>);

impl Transport for ForeignTransport {
    fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> std::result::Result<Vec<u8>, TransportError> {
        let headers = headers.iter().map(|(name, value)| HttpHeader { name: name.clone(), value: value.clone() });
        let timeout_ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        self.0.post(path.to_string(), headers.collect(), body.to_vec(), timeout_ms).map_err(|e| match e {
            TransportFailure::Timeout => TransportError::Timeout,
            TransportFailure::Status { code } => TransportError::Status(code),
            TransportFailure::Throttled { code, retry_after_ms } => {
                TransportError::Throttled { status: code, retry_after: Duration::from_millis(retry_after_ms) }
            }
            TransportFailure::TooLarge => TransportError::TooLarge,
            TransportFailure::Io { reason } => TransportError::Io(reason),
        })
    }
}

/// The store's federated bookkeeping (sealed, state `federated`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FederatedState {
    /// PKCS#8 of the node key.
    pub(crate) node_key: Option<Vec<u8>>,
    /// Rounds answered under it (an update, a refusal or a drop midway).
    #[serde(default)]
    pub(crate) node_key_rounds: u32,
    pub(crate) last_contribution_ms: Option<i64>,
    /// Events up to this store id were there at the last contribution.
    pub(crate) examples_watermark: i64,
    /// (run, round) pairs answered, the most recent last.
    pub(crate) rounds_taken: Vec<(u64, u64)>,
}

pub(crate) const STATE: &str = "federated";
pub(crate) const LEDGER: &str = "ledger";
/// Rounds remembered for "at most once per round".
pub(crate) const ROUNDS_KEPT: usize = 256;
pub(crate) const HOUR_MS: i64 = 3_600_000;

impl From<&FleetError> for FederatedFailure {
    fn from(e: &FleetError) -> Self {
        match e {
            FleetError::Timeout => FederatedFailure::Timeout,
            FleetError::Http(_) => FederatedFailure::Http,
            FleetError::Rejected(_) => FederatedFailure::Rejected,
            FleetError::Network(_) => FederatedFailure::Network,
            FleetError::Decode(_) | FleetError::Protocol(_) | FleetError::Parameters(_) => FederatedFailure::Protocol,
            FleetError::TooLarge(_) => FederatedFailure::TooLarge,
            FleetError::Key(_) => FederatedFailure::Key,
            FleetError::Update(_) => FederatedFailure::Update,
            FleetError::Cancelled => FederatedFailure::Cancelled,
            FleetError::Refused(_) => FederatedFailure::Refused,
        }
    }
}
