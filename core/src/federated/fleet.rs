//! The Fleet API over a [`Transport`], and one round of federated training
//! as a device takes part in it.
//!
//! The calls, in the order a round makes them (all `POST /v1/fleet/<name>`,
//! `content-type: application/protobuf`, signed as [`super::node_key`] says):
//!
//! 1. `activate-node` (public key, heartbeat interval) gives the node id;
//!    when the SuperLink does not know the key (HTTP 412) the device first
//!    calls `register-node` with it.
//! 2. `pull-messages` until a message arrives or the wait is over. A message
//!    comes as metadata plus an object tree rooted at the message id.
//! 3. `pull-object` for each object of the tree (an object may be "found but
//!    not yet available": asked again for up to `object_wait`), each checked against
//!    its id; then `confirm-message-received`.
//! 4. Local training through the caller's [`Trainer`], with heartbeats sent
//!    from a second thread meanwhile.
//! 5. `send-node-heartbeat`, then `push-messages` with the reply's metadata
//!    (its content an empty RecordDict: the field must be present)
//!    and object tree; the SuperLink answers with the ids it lacks and a
//!    session id, and each of those objects goes up with `push-object`.
//!    When the message is not a train message, or training fails, or the
//!    update breaks its bound, the reply is an error (code 2, a fixed
//!    reason) so the ServerApp need not wait for its timeout.
//! 6. `deactivate-node`, whatever happened after step 1 (after a reply, an
//!    error one too, only once [`ClientOptions::linger`] has passed).
//!
//! A secure-aggregation round (`secure.rs`) goes through steps 2, 3 and 5
//! once for each of its four stages, training (step 4) at the third.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearth_secagg::DevicePolicy;
use prost::Message;

use super::ledger::Aggregation;
use super::objects::{self, ConfigValue, F32Array, Limits, Record};
use super::proto;
use super::{FleetError, NodeKey};

mod instruction;
mod secure;

pub use instruction::{DistributedNoise, LocalResult, MAX_EXAMPLES_PER_ROUND, TrainInstruction, Trainer};
use instruction::{check_update, instruction};

/// A message as pulled: its metadata and its records.
type Pulled = (proto::Metadata, Vec<(String, Record)>);

/// The SuperLink's own node id (flwr's SUPERLINK_NODE_ID).
pub const SUPERLINK_NODE_ID: u64 = 1;

/// flwr's `ErrorCode.CLIENT_APP_RAISED_EXCEPTION`, the code of an error reply.
pub const CLIENT_APP_RAISED_EXCEPTION: i64 = 2;

pub use super::transport::{HttpTransport, Transport, TransportError, retry_after};

/// Timeouts, retries and bounds of a [`FleetClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// One HTTP exchange.
    pub call_timeout: Duration,
    /// Tries per call (1 = no retry). Timeouts, network errors, 429 and 5xx
    /// are retried; other statuses are not. A 429 or 503 with a
    /// `Retry-After` waits that long before the next try (at least the
    /// backoff), unless the wait would take the call past
    /// [`ClientOptions::call_bound`]: then the call fails at once.
    pub attempts: u32,
    /// Pause before the first retry, doubled each time up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Between two `pull-messages` while waiting for a round.
    pub poll_interval: Duration,
    /// How long to wait for an object of a message that the SuperLink knows
    /// but does not hold yet (the ServerApp pushes a message before its
    /// objects; sending to a cohort of hundreds takes it seconds to
    /// minutes). Asked again after a pause that grows to `poll_interval`.
    pub object_wait: Duration,
    /// Seconds the SuperLink may go without hearing from the node before it
    /// counts it offline (flwr accepts 10 to 1800).
    pub heartbeat_interval: f64,
    /// How long the node stays active after its last reply before it
    /// deactivates. A SuperLink answers a ServerApp's pull for a node that
    /// is offline with a "node unavailable" error even when the node's reply
    /// is stored, and flwr's ServerApp pulls every 3 s: deactivating at once
    /// would lose the reply. With a cohort of hundreds, Hearth's secure
    /// ServerApp pulls a stage's replies minutes after they arrive: raise
    /// it (the coordinator's `round-gap` must stay longer, or it samples
    /// lingering nodes that never answer).
    pub linger: Duration,
    pub limits: Limits,
    /// Set from another thread to stop the round: the client gives up
    /// before its next call and wakes from any pause (a call in flight
    /// finishes or times out first), with [`FleetError::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
    /// What the device requires of a secure-aggregation round (cohort,
    /// threshold, neighbours), whatever the coordinator announces.
    pub secure: DevicePolicy,
    /// For tests only: each secure round's quantized update, as the device
    /// made it before masking, is copied here (with the node id and round),
    /// so a test can check the coordinator's sum without trusting it.
    #[doc(hidden)]
    pub secure_witness: Option<Arc<std::sync::Mutex<Vec<SecureWitness>>>>,
}

/// A secure round's quantized update, as [`ClientOptions::secure_witness`]
/// records it.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub struct SecureWitness {
    pub node_id: u64,
    pub run_id: u64,
    pub round: Option<u64>,
    pub bits: u32,
    /// The quantized update, before any noise.
    pub quantized: Vec<u32>,
    /// With this device's noise share (the same without distributed noise):
    /// what the masks cover, and what the round's sum adds up.
    pub noised: Vec<u32>,
    /// The global parameters the round sent.
    pub global: Vec<f32>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            call_timeout: Duration::from_secs(30),
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            poll_interval: Duration::from_secs(1),
            object_wait: Duration::from_secs(60),
            heartbeat_interval: 60.0,
            linger: Duration::from_secs(6),
            limits: Limits::default(),
            cancel: None,
            secure: DevicePolicy::default(),
            secure_witness: None,
        }
    }
}

impl ClientOptions {
    /// The longest one call can take, retries and pauses included.
    pub fn call_bound(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut pause = self.backoff;
        for i in 0..self.attempts.max(1) {
            total += self.call_timeout;
            if i + 1 < self.attempts {
                total += pause;
                pause = (pause * 2).min(self.max_backoff);
            }
        }
        total
    }
}

/// One round the device took part in.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundReport {
    pub node_id: u64,
    pub run_id: u64,
    pub round: Option<u64>,
    pub clip_norm: f64,
    /// L2 norm of the update sent.
    pub norm: f64,
    pub examples_reported: u64,
    /// Request bodies sent and reply bodies received, in bytes.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RoundOutcome {
    /// No train message came within the wait.
    NoMessage,
    Done(RoundReport),
}

/// The coarse count a reply carries instead of the exact one.
pub fn coarse_count(n: usize) -> u64 {
    const BUCKETS: [u64; 9] = [500, 200, 100, 50, 20, 10, 5, 2, 1];
    BUCKETS.iter().copied().find(|b| n as u64 >= *b).unwrap_or(0)
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A device's connection to one SuperLink.
pub struct FleetClient<T: Transport> {
    transport: T,
    key: NodeKey,
    options: ClientOptions,
    sent: u64,
    received: u64,
    /// When this session last pushed a reply (the linger counts from it).
    replied_at: Option<Instant>,
    /// How many attempts the last call took.
    last_attempts: u32,
}

impl<T: Transport> FleetClient<T> {
    pub fn new(transport: T, key: NodeKey, options: ClientOptions) -> Self {
        FleetClient { transport, key, options, sent: 0, received: 0, replied_at: None, last_attempts: 0 }
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    fn cancelled(&self) -> bool {
        self.options.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Sleeps for `d`, waking early (with `Cancelled`) when the round is
    /// cancelled.
    fn pause(&self, d: Duration) -> Result<(), FleetError> {
        let until = Instant::now() + d;
        loop {
            if self.cancelled() {
                return Err(FleetError::Cancelled);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// One Fleet call: signed, bounded, retried.
    fn call<Req: Message, Resp: Message + Default>(&mut self, name: &str, req: &Req) -> Result<Resp, FleetError> {
        let path = format!("/v1/fleet/{name}");
        let body = req.encode_to_vec();
        let mut pause = self.options.backoff;
        let attempts = self.options.attempts.max(1);
        let deadline = Instant::now() + self.options.call_bound();
        let mut last = FleetError::Timeout;
        let mut asked: Option<Duration> = None;
        for attempt in 0..attempts {
            self.last_attempts = attempt + 1;
            if attempt > 0 {
                let wait = asked.take().map_or(pause, |a| a.max(pause));
                self.pause(wait)?;
                pause = (pause * 2).min(self.options.max_backoff);
            } else if self.cancelled() {
                return Err(FleetError::Cancelled);
            }
            let headers = self.key.auth_headers()?;
            self.sent += body.len() as u64;
            match self.transport.post(&path, &headers, &body, self.options.call_timeout) {
                Ok(reply) => {
                    self.received += reply.len() as u64;
                    return Resp::decode(reply.as_slice()).map_err(|e| FleetError::Decode(format!("{name}: {e}")));
                }
                Err(TransportError::Timeout) => last = FleetError::Timeout,
                Err(TransportError::Io(e)) => last = FleetError::Network(e),
                Err(TransportError::Status(s)) if s == 429 || s >= 500 => last = FleetError::Http(s),
                Err(TransportError::Throttled { status, retry_after }) => {
                    last = FleetError::Http(status);
                    // Honoured within the call's bound; past it, give up now
                    // rather than come back early.
                    let ends = Instant::now() + retry_after.max(pause) + self.options.call_timeout;
                    if attempt + 1 == attempts || ends > deadline {
                        log::debug!("fleet {name}: HTTP {status}, retry after {retry_after:?}: past the call's bound");
                        return Err(last);
                    }
                    asked = Some(retry_after);
                }
                Err(TransportError::Status(s)) if s == 401 || s == 403 => return Err(FleetError::Rejected(s)),
                Err(TransportError::Status(s)) => return Err(FleetError::Http(s)),
                Err(TransportError::TooLarge) => return Err(FleetError::TooLarge(format!("the reply to {name}"))),
            }
            log::debug!("fleet {name}: attempt {} failed: {last}", attempt + 1);
        }
        Err(last)
    }

    /// Activates the node (registering its key first if the SuperLink does
    /// not know it); returns the node id.
    pub fn activate(&mut self) -> Result<u64, FleetError> {
        let pem = self.key.public_key_pem().to_vec();
        let activate =
            proto::ActivateNodeRequest { public_key: pem.clone(), heartbeat_interval: self.options.heartbeat_interval };
        let reply: proto::ActivateNodeResponse = match self.call("activate-node", &activate) {
            Err(FleetError::Http(412)) => {
                let _: proto::RegisterNodeFleetResponse =
                    self.call("register-node", &proto::RegisterNodeFleetRequest { public_key: pem })?;
                self.call("activate-node", &activate)?
            }
            other => other?,
        };
        if reply.node_id == 0 {
            return Err(FleetError::Protocol("activation gave node id 0".into()));
        }
        Ok(reply.node_id)
    }

    pub fn deactivate(&mut self, node_id: u64) -> Result<(), FleetError> {
        let _: proto::DeactivateNodeResponse =
            self.call("deactivate-node", &proto::DeactivateNodeRequest { node_id })?;
        Ok(())
    }

    pub fn heartbeat(&mut self, node_id: u64) -> Result<bool, FleetError> {
        let req = proto::SendNodeHeartbeatRequest {
            node: Some(proto::Node { node_id }),
            heartbeat_interval: self.options.heartbeat_interval,
        };
        let reply: proto::SendNodeHeartbeatResponse = self.call("send-node-heartbeat", &req)?;
        Ok(reply.success)
    }

    /// Takes part in one round: waits up to `wait` for a train message,
    /// trains, replies, and deactivates the node in every case.
    pub fn participate(&mut self, wait: Duration, trainer: &mut dyn Trainer) -> Result<RoundOutcome, FleetError> {
        let mut outcomes = self.participate_rounds(1, wait, trainer)?;
        Ok(outcomes.pop().unwrap_or(RoundOutcome::NoMessage))
    }

    /// Takes part in up to `rounds` rounds in one session: activates once,
    /// stays online between rounds (a node that deactivates right after
    /// replying may be sampled for the next round while offline, and the
    /// SuperLink then answers for it with a "node unavailable" error), stops
    /// at the first wait without a message, and deactivates in every case.
    pub fn participate_rounds(
        &mut self,
        rounds: usize,
        wait: Duration,
        trainer: &mut dyn Trainer,
    ) -> Result<Vec<RoundOutcome>, FleetError> {
        let node_id = self.activate()?;
        self.replied_at = None;
        let mut outcomes = Vec::new();
        let mut result = Ok(());
        for _ in 0..rounds {
            let (sent, received) = (self.sent, self.received);
            match self.round(node_id, wait, trainer) {
                Ok(RoundOutcome::Done(mut r)) => {
                    r.bytes_sent = self.sent - sent;
                    r.bytes_received = self.received - received;
                    outcomes.push(RoundOutcome::Done(r));
                }
                Ok(RoundOutcome::NoMessage) => {
                    outcomes.push(RoundOutcome::NoMessage);
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Any reply, an error one too, is lost if the node goes offline
        // before the ServerApp has pulled it.
        if let Some(at) = self.replied_at.take() {
            // Cancelled while lingering: the reply is pushed; deactivate now.
            let _ = self.pause(self.options.linger.saturating_sub(at.elapsed()));
        }
        let deactivated = if self.cancelled() { Ok(()) } else { self.deactivate(node_id) };
        result?;
        deactivated?;
        Ok(outcomes)
    }

    /// Waits up to `wait` for the next message and pulls it whole: its
    /// metadata and its content, checked against the limits. None when no
    /// message came. A message that is not a train message is answered
    /// with an error and refused.
    fn next_message(&mut self, node_id: u64, wait: Duration) -> Result<Option<Pulled>, FleetError> {
        let node = Some(proto::Node { node_id });
        let start = Instant::now();
        let mut last_beat = Instant::now();
        let (message, tree) = loop {
            let reply: proto::PullMessagesResponse = self
                .call("pull-messages", &proto::PullMessagesRequest { node: node.clone(), message_ids: Vec::new() })?;
            if let (Some(m), Some(t)) =
                (reply.messages_list.into_iter().next(), reply.message_object_trees.into_iter().next())
            {
                break (m, t);
            }
            if start.elapsed() >= wait {
                return Ok(None);
            }
            if last_beat.elapsed().as_secs_f64() > self.options.heartbeat_interval / 3.0 {
                self.heartbeat(node_id)?;
                last_beat = Instant::now();
            }
            self.pause(self.options.poll_interval.min(wait.saturating_sub(start.elapsed())))?;
        };
        let meta = message.metadata.ok_or_else(|| FleetError::Protocol("a message without metadata".into()))?;
        if tree.object_id != meta.message_id {
            return Err(FleetError::Protocol("the object tree is not rooted at the message".into()));
        }
        if meta.message_type != "train" {
            self.push_error(node_id, &meta, "a Hearth device answers train messages only")?;
            return Err(FleetError::Protocol(format!("unsupported message type {:?}", meta.message_type)));
        }
        let objects = self.pull_objects(node_id, meta.run_id, &tree)?;
        let _: proto::ConfirmMessageReceivedResponse = self.call(
            "confirm-message-received",
            &proto::ConfirmMessageReceivedRequest {
                node: node.clone(),
                run_id: meta.run_id,
                message_object_id: meta.message_id.clone(),
            },
        )?;
        let (_, content) = objects::inflate_content(&meta.message_id, &objects, &self.options.limits)?;
        Ok(Some((meta, content)))
    }

    fn round(&mut self, node_id: u64, wait: Duration, trainer: &mut dyn Trainer) -> Result<RoundOutcome, FleetError> {
        let Some((meta, mut content)) = self.next_message(node_id, wait)? else {
            return Ok(RoundOutcome::NoMessage);
        };
        if let Some(stage) = secure::take_stage(&mut content) {
            return self.secure_round(node_id, wait, meta, stage, trainer);
        }
        let instruction = instruction(meta.run_id, content, true)?;
        let (result, norm) = self.train_checked(node_id, &meta, trainer, &instruction)?;

        let mut at = 0;
        let delta_arrays: Vec<(String, F32Array)> = instruction
            .arrays
            .iter()
            .map(|(name, a)| {
                let data = result.delta[at..at + a.len()].to_vec();
                at += a.len();
                (name.clone(), F32Array { shape: a.shape.clone(), data })
            })
            .collect();
        let examples = coarse_count(result.examples);
        let mut content = vec![
            ("arrays".to_string(), Record::Arrays(delta_arrays)),
            ("metrics".to_string(), Record::Metrics(vec![("num-examples".into(), examples as f64)])),
        ];
        if let Some(report) = result.segment_report {
            content.push(("segment-report".to_string(), Record::Config(report)));
        }
        let reply_meta = reply_metadata(node_id, &meta)?;
        let deflated = objects::deflate_message(&reply_meta, &content);
        self.push_reply(node_id, reply_meta, deflated, None)?;
        Ok(RoundOutcome::Done(RoundReport {
            node_id,
            run_id: meta.run_id,
            round: instruction.round,
            clip_norm: instruction.clip_norm,
            norm,
            examples_reported: examples,
            bytes_sent: 0,
            bytes_received: 0,
        }))
    }

    /// Trains and checks the update: (the result, its norm). On failure
    /// the server hears only that it failed (a fixed reason: the trainer's
    /// message may say more than should leave the device).
    fn train_checked(
        &mut self,
        node_id: u64,
        meta: &proto::Metadata,
        trainer: &mut dyn Trainer,
        instruction: &TrainInstruction,
    ) -> Result<(LocalResult, f64), FleetError> {
        let result = match self.train_online(node_id, trainer, instruction) {
            Ok(r) => r,
            Err(why) => {
                self.push_error(node_id, meta, "local training failed on the device")?;
                return Err(FleetError::Update(why));
            }
        };
        match check_update(instruction, &result) {
            Ok(norm) => Ok((result, norm)),
            Err(e) => {
                self.push_error(node_id, meta, "the device refused its own update")?;
                Err(e)
            }
        }
    }

    /// Runs the trainer while a second thread keeps the node online with
    /// heartbeats (a phone may train for minutes; a node silent for two
    /// intervals is offline to the SuperLink, and its reply then lost).
    fn train_online(
        &self,
        node_id: u64,
        trainer: &mut dyn Trainer,
        instruction: &TrainInstruction,
    ) -> Result<LocalResult, String> {
        self.online(node_id, || trainer.train(instruction))
    }

    /// Runs `work` while a second thread keeps the node online with
    /// heartbeats.
    pub(super) fn online<R>(&self, node_id: u64, work: impl FnOnce() -> R) -> R {
        let done = AtomicBool::new(false);
        let every = Duration::from_secs_f64((self.options.heartbeat_interval / 3.0).max(1.0));
        let req = proto::SendNodeHeartbeatRequest {
            node: Some(proto::Node { node_id }),
            heartbeat_interval: self.options.heartbeat_interval,
        }
        .encode_to_vec();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut last = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= every {
                        last = Instant::now();
                        // Best effort: a missed beat is retried at the next.
                        if let Ok(headers) = self.key.auth_headers() {
                            let _ = self.transport.post(
                                "/v1/fleet/send-node-heartbeat",
                                &headers,
                                &req,
                                self.options.call_timeout,
                            );
                        }
                    }
                }
            });
            let result = work();
            done.store(true, Ordering::Relaxed);
            result
        })
    }

    /// Replies to `to` with an error (no content) and `reason`.
    fn push_error(&mut self, node_id: u64, to: &proto::Metadata, reason: &str) -> Result<(), FleetError> {
        let meta = reply_metadata(node_id, to)?;
        let error = proto::ProtoError { code: CLIENT_APP_RAISED_EXCEPTION, reason: reason.into() };
        let deflated = objects::deflate_error_message(&meta, &error);
        self.push_reply(node_id, meta, deflated, Some(error))
    }

    /// `push-messages` with the reply's metadata and tree, then
    /// `push-object` for each object the SuperLink says it lacks.
    fn push_reply(
        &mut self,
        node_id: u64,
        mut meta: proto::Metadata,
        deflated: objects::Deflated,
        error: Option<proto::ProtoError>,
    ) -> Result<(), FleetError> {
        let node = Some(proto::Node { node_id });
        let run_id = meta.run_id;
        meta.message_id = deflated.message_id().to_string();
        self.heartbeat(node_id)?;
        let push = proto::PushMessagesRequest {
            node: node.clone(),
            // The content travels as objects, but the field must be present (an
            // empty RecordDict) in a reply without an error: flwr rebuilds a
            // Message from this proto and refuses one with neither.
            messages_list: vec![proto::ProtoMessage {
                metadata: Some(meta),
                content: if error.is_none() { Some(proto::RecordDict {}) } else { None },
                error,
            }],
            message_object_trees: vec![deflated.tree.clone()],
            // Flower wants the ClientApp's running time; the device's own
            // training time would say something of the device and its data
            // (and tell its rounds apart): 0 for every reply.
            clientapp_runtime_list: vec![0.0],
        };
        let pushed: proto::PushMessagesResponse = self.call("push-messages", &push)?;
        let mut wanted: Vec<&objects::Object> = Vec::with_capacity(pushed.objects_to_push.len());
        for id in &pushed.objects_to_push {
            wanted.push(
                deflated
                    .get(id)
                    .ok_or_else(|| FleetError::Protocol("the SuperLink asked for an object not in the reply".into()))?,
            );
        }
        let mut session_id = pushed.session_id.clone();
        if wanted.is_empty() && self.last_attempts > 1 && !deflated.objects.is_empty() {
            // The first push-messages reached the SuperLink but its answer was
            // lost. If the ServerApp took the message before the retry, flwr
            // (1.42) no longer stores it again and asks for nothing, while the
            // objects the first push registered still wait under the lost
            // session. Pushed without a session id, each is matched to the
            // session that waits for it (flwr's path for SuperNodes without
            // sessions); one nobody waits for is answered `stored: false`.
            log::debug!("push-messages was retried and asked for no object: pushing the reply's objects unasked");
            wanted = deflated.objects.iter().collect();
            session_id = String::new();
        }
        let mut stored = 0usize;
        for object in &wanted {
            let reply: proto::PushObjectResponse = self.call(
                "push-object",
                &proto::PushObjectRequest {
                    node: node.clone(),
                    run_id,
                    object_id: object.id.clone(),
                    object_content: object.content.clone(),
                    session_id: session_id.clone(),
                },
            )?;
            // A push-object retried after its answer was lost is answered
            // `stored: false` (the first one stored it): not an error.
            stored += usize::from(reply.stored);
        }
        if stored < wanted.len() {
            log::debug!("push-object: {stored} of {} objects stored as new", wanted.len());
        }
        self.replied_at = Some(Instant::now());
        Ok(())
    }

    /// Pulls every object of `tree`, each checked against its id, its
    /// head's children against the tree, and all against the limits.
    fn pull_objects(
        &mut self,
        node_id: u64,
        run_id: u64,
        tree: &proto::ObjectTree,
    ) -> Result<HashMap<String, Vec<u8>>, FleetError> {
        let limits = self.options.limits.clone();
        let mut order = Vec::new();
        let mut stack = vec![tree];
        let mut expected_children: HashMap<&str, HashSet<&str>> = HashMap::new();
        while let Some(t) = stack.pop() {
            if order.len() >= limits.max_objects {
                return Err(FleetError::TooLarge(format!("a message of more than {} objects", limits.max_objects)));
            }
            expected_children.entry(&t.object_id).or_default().extend(t.children.iter().map(|c| c.object_id.as_str()));
            order.push(t.object_id.as_str());
            stack.extend(t.children.iter());
        }
        let mut objects: HashMap<String, Vec<u8>> = HashMap::new();
        let mut total = 0usize;
        for id in order {
            if objects.contains_key(id) {
                continue;
            }
            let asked = Instant::now();
            let mut pause = self.options.poll_interval.min(Duration::from_millis(250));
            let mut last_beat = Instant::now();
            let content = loop {
                let reply: proto::PullObjectResponse = self.call(
                    "pull-object",
                    &proto::PullObjectRequest {
                        node: Some(proto::Node { node_id }),
                        run_id,
                        object_id: id.to_string(),
                    },
                )?;
                if !reply.object_found {
                    return Err(FleetError::Protocol("an object of the message is unknown to the SuperLink".into()));
                }
                if reply.object_available {
                    break reply.object_content;
                }
                if asked.elapsed() >= self.options.object_wait {
                    log::warn!("an object of the message was not uploaded in {:?}", self.options.object_wait);
                    return Err(FleetError::Timeout);
                }
                if last_beat.elapsed().as_secs_f64() > self.options.heartbeat_interval / 3.0 {
                    self.heartbeat(node_id)?;
                    last_beat = Instant::now();
                }
                self.pause(pause.min(self.options.object_wait.saturating_sub(asked.elapsed())))?;
                pause = (pause * 2).min(self.options.poll_interval.max(pause));
            };
            if content.len() > limits.max_object_bytes {
                return Err(FleetError::TooLarge(format!("an object of {} bytes", content.len())));
            }
            total += content.len();
            if total > limits.max_message_bytes {
                return Err(FleetError::TooLarge(format!("a message of more than {} bytes", limits.max_message_bytes)));
            }
            if objects::object_id(&content) != id {
                return Err(FleetError::Protocol("an object's content does not match its id".into()));
            }
            let parsed = objects::parse(&content)?;
            let head: HashSet<&str> = parsed.children.iter().copied().collect();
            if expected_children.get(id).is_some_and(|e| *e != head) {
                return Err(FleetError::Protocol("an object's children differ from the tree's".into()));
            }
            objects.insert(id.to_string(), content);
        }
        Ok(objects)
    }
}

/// The metadata of a reply to `to`, as flwr's `Message(reply_to=...)` makes
/// it: the TTL ends when the instruction's does.
fn reply_metadata(node_id: u64, to: &proto::Metadata) -> Result<proto::Metadata, FleetError> {
    if to.created_at + to.ttl <= now_secs() {
        return Err(FleetError::Protocol("the message expired before the reply".into()));
    }
    // The reply carries the message's own time and TTL, not the device's
    // clock: Flower needs a creation time and a TTL that ends no later than
    // the message's, and the device's clock (its skew, when it answered)
    // would tell the coordinator something of the device.
    Ok(proto::Metadata {
        run_id: to.run_id,
        message_id: String::new(),
        src_node_id: node_id,
        dst_node_id: to.src_node_id,
        reply_to_message_id: to.message_id.clone(),
        group_id: to.group_id.clone(),
        ttl: to.ttl,
        message_type: to.message_type.clone(),
        created_at: to.created_at,
        src_task_id: to.dst_task_id,
        dst_task_id: to.src_task_id,
    })
}
