//! Federated learning, device side: a native client of Flower's Fleet API
//! (pinned: flwr 1.42.0, protobuf over HTTP), so a device takes part in a
//! Flower round with no Python and no gRPC on it.
//!
//! * [`fleet`]: the [`Transport`] trait (an app may bring its own HTTP
//!   stack), [`HttpTransport`], and [`FleetClient`], which signs every
//!   request, bounds every call with a timeout and a few retries with
//!   backoff, and runs one round: activate (registering first if the
//!   SuperLink does not know the key), pull a train message and its objects
//!   (each checked against its SHA-256 id and the [`Limits`]), train through
//!   the caller's [`Trainer`], reply with the clipped update, deactivate.
//! * [`objects`]: Flower's content-addressed objects and `.npy` arrays.
//! * [`node_key`]: the device's P-256 node key and the signed headers.
//! * [`proto`]: the Fleet API's protobuf messages, written by hand.
//!
//! A round is plain or secure. In a secure round (the message carries the
//! ConfigRecord `"hearth.secagg"`: [`fleet`]'s `secure` module, protocol in
//! the `hearth-secagg` crate) the update leaves the device only quantized
//! and masked, over four stages, and every reply holds only that record.
//!
//! What a plain round's reply holds (the coordinator in `coordinator/`
//! expects exactly this): a RecordDict with
//! * `"arrays"`: an ArrayRecord of the *clipped delta* `local - global`, one
//!   float32 array per parameter, with the names and shapes of the arrays
//!   the server sent (weights.bin's parameters, in order); its L2 norm over
//!   all arrays is at most the round's clip norm C, checked here before
//!   anything is sent;
//! * `"metrics"`: a MetricRecord with `"num-examples"`, the count of local
//!   examples rounded down to a coarse bucket (1, 2, 5, 10, 20, 50, 100, 200,
//!   500);
//! * `"segment-report"`, only when the round asks for one
//!   (`segment-report-labels`, the labels joined with commas, equal to the
//!   device's) and the user agreed to segment reports: a ConfigRecord with
//!   `"bits"` (the randomized memberships, packed) and `"bit-epsilon"`.
//!
//! Nothing else leaves the device: no item id, title, category or
//! timestamp of the history (the node key's public half, the node id and the
//! message metadata Flower requires aside).

pub mod accountant;
pub mod fleet;
pub mod ledger;
pub mod node_key;
pub mod objects;
pub mod participation;
pub mod proto;
pub mod transport;

pub use crate::error::FederatedFailure;
pub use fleet::{
    ClientOptions, FleetClient, HttpTransport, LocalResult, RoundOutcome, RoundReport, SecureWitness, TrainInstruction,
    Trainer, Transport, TransportError,
};
pub use hearth_secagg::DevicePolicy;
pub use ledger::{Aggregation, LedgerEntry, NoiseMode, PrivacyLedger, RoundTask, UploadStatus};
pub use node_key::NodeKey;
pub use objects::{ConfigValue, F32Array, Limits, Record};
pub use participation::{
    DeclineReason, DeviceConditions, Eligibility, FleetTransport, HttpHeader, IneligibleReason, ParticipationOutcome,
    TransportFailure,
};

/// Why a Fleet call or a round failed. Messages carry no personal data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FleetError {
    /// No answer within the call's timeout, after every retry.
    #[error("the SuperLink did not answer in time")]
    Timeout,
    /// The SuperLink answered with this HTTP status.
    #[error("the SuperLink answered HTTP {0}")]
    Http(u16),
    /// The SuperLink refused the node (HTTP 401/403: bad signature, unknown
    /// node, run not running).
    #[error("the SuperLink refused this node (HTTP {0})")]
    Rejected(u16),
    /// The connection failed (refused, reset, DNS).
    #[error("network: {0}")]
    Network(String),
    /// A reply or an object that does not parse.
    #[error("undecodable reply: {0}")]
    Decode(String),
    /// A reply that parses but breaks the protocol (wrong content hash,
    /// missing object, unexpected types or shapes).
    #[error("protocol: {0}")]
    Protocol(String),
    /// A message whose arrays are not the parameters the device's model
    /// has (names, order, shapes), found before any array is expanded.
    #[error("the arrays are not the model's parameters: {0}")]
    Parameters(String),
    /// Something bigger than the [`Limits`] allow.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The node key could not be made, read or used.
    #[error("node key: {0}")]
    Key(String),
    /// Local training failed or gave an update this module refuses to send
    /// (wrong length, not finite, norm above C).
    #[error("local update: {0}")]
    Update(String),
    /// The round was cancelled from another thread.
    #[error("the round was cancelled")]
    Cancelled,
    /// The device refused a secure-aggregation round or one of its stages
    /// (terms below its policy, inconsistent neighbour lists, a request
    /// for both shares of one peer, ...).
    #[error("secure aggregation refused: {0}")]
    Refused(String),
}

impl From<FleetError> for crate::error::Error {
    fn from(e: FleetError) -> Self {
        crate::error::Error::Federated { kind: (&e).into(), reason: e.to_string() }
    }
}
