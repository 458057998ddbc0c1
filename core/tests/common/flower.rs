//! Devices for the rounds against a real SuperLink and Hearth's ServerApp
//! (tests/federated/run.sh runs them): stores with distinctive histories, a
//! transport that records every request body, and the curious
//! coordinator's reading of what it received.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_core::federated::objects;
use hearth_core::federated::proto;
use hearth_core::federated::*;
use hearth_core::*;

use super::superlink::Log;
use super::*;

/// Records every request body, then passes it on.
pub struct Recording {
    pub inner: HttpTransport,
    pub log: Log,
    /// The first request to this call is delivered but its response lost
    /// (as on a flaky network): the client retries it.
    pub lose_first_response: Option<&'static str>,
    pub lost: Arc<std::sync::atomic::AtomicBool>,
}

impl Transport for Recording {
    fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let mut signed = Vec::new();
        for (k, v) in headers {
            signed.extend_from_slice(k.as_bytes());
            signed.extend_from_slice(v.as_bytes());
        }
        let mut log = self.log.lock().unwrap();
        log.push((path.to_string(), body.to_vec()));
        log.push((format!("{path} (headers)"), signed));
        drop(log);
        let reply = self.inner.post(path, headers, body, timeout);
        if let (true, Ok(bytes)) = (path.ends_with("/pull-messages"), &reply) {
            // What the coordinator sent, to compare the replies with.
            self.log.lock().unwrap().push((format!("{path} (reply)"), bytes.clone()));
        }
        if self.lose_first_response.is_some_and(|call| path.ends_with(call))
            && !self.lost.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return Err(TransportError::Timeout);
        }
        reply
    }
}

pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

pub const DAY: i64 = 86_400_000;

/// The item a device's history leaves out (same genre as its history): the
/// global model should rank it higher than the initial one did.
pub fn held_out(n: usize) -> String {
    format!("hearth-item-{:05}", (30 * 6 + n % 6 + 6 * n) % 240)
}

/// A device with its own history: distinctive ids and titles, so any of them
/// in a request body would be found. Every device of genre `n % 6` watched
/// 30 items of that genre.
pub fn device(dir: &std::path::Path, n: usize, trusted: &str) -> (Arc<Hearth>, Vec<String>) {
    let mut config = HearthConfig::new(dir.to_str().unwrap());
    if !trusted.is_empty() {
        config.trusted_model_keys = vec![trusted.to_string()];
    }
    // Every round, whatever it costs: this test checks the ledger's sums.
    config.federated_epsilon_budget = f64::INFINITY;
    config.federated_min_new_examples = 0;
    config.federated_min_interval_hours = 0;
    config.federated_round_wait_seconds = env("HEARTH_ROUND_WAIT_S", "300").parse().unwrap();
    let h = open_with(config, [n as u8 + 1; 32]).unwrap();
    let genres = ["drama", "comedy", "horror", "kids", "news", "sport"];
    let catalog: Vec<CatalogItem> = (0..240)
        .map(|i| item(&format!("hearth-item-{i:05}"), &format!("The Private Title {i:05}"), &[genres[i % 6]]))
        .collect();
    h.upsert_catalog(catalog).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let t = now - 10 * DAY;
    let mut secrets = Vec::new();
    let events: Vec<Event> = (0..30)
        .flat_map(|k| {
            let i = (k * 6 + n % 6 + 6 * n) % 240;
            secrets.push(format!("hearth-item-{i:05}"));
            secrets.push(format!("The Private Title {i:05}"));
            let id = format!("hearth-item-{i:05}");
            let at = t + k as i64 * 3_600_000;
            [event(&id, EventKind::Play, at), event(&id, EventKind::Complete, at + 1)]
        })
        .collect();
    h.record_batch(events).unwrap();
    h.set_federated_opt_in(true).unwrap();
    h.set_segment_reports_opt_in(true).unwrap();
    // Category names of five letters and more (shorter ones would match
    // random bytes of the arrays now and then).
    secrets.extend(["drama", "comedy", "horror", "sport"].map(String::from));
    (h, secrets)
}

/// The epsilon of `entries` at `delta`, composed by the accountant from
/// each entry's own terms (central or distributed), as a ledger should say.
pub fn accounted_epsilon(entries: &[LedgerEntry], delta: f64) -> f64 {
    let mut accountant = accountant::RdpAccountant::new();
    for e in entries {
        match e.noise_mode {
            NoiseMode::Central => accountant.compose(e.noise_multiplier, e.sampling_rate, 1).unwrap(),
            NoiseMode::Distributed => {
                let honest = (e.honest_fraction * e.cohort as f64).ceil() as u32;
                let round = accountant::DistributedGaussian {
                    noise_multiplier: e.noise_multiplier,
                    honest,
                    clip_norm: e.clip_norm,
                    scale: e.scale,
                    dimension: e.dimension,
                    sampling_rate: e.sampling_rate,
                };
                accountant.compose_distributed(&round, 1).unwrap()
            }
        }
    }
    accountant.epsilon(delta).unwrap()
}

pub const READY: DeviceConditions = DeviceConditions { charging: true, unmetered_network: true, idle: true };

/// Every reply a device pushed, inflated from its request bodies as the
/// SuperLink (and so the ServerApp) received them: what a curious
/// coordinator holds of that device.
pub fn pushed_replies(log: &[(String, Vec<u8>)]) -> Vec<Vec<(String, objects::Record)>> {
    use prost::Message;
    let mut objects = std::collections::HashMap::new();
    let mut messages = Vec::new();
    for (path, body) in log {
        if path.ends_with("/push-object") {
            let req = proto::PushObjectRequest::decode(body.as_slice()).unwrap();
            objects.insert(req.object_id, req.object_content);
        } else if path.ends_with("/push-messages") {
            let req = proto::PushMessagesRequest::decode(body.as_slice()).unwrap();
            for m in req.messages_list {
                let id = m.metadata.map(|m| m.message_id).unwrap_or_default();
                if m.error.is_none() && !messages.contains(&id) {
                    messages.push(id);
                }
            }
        }
    }
    messages
        .iter()
        .filter_map(|id| objects::inflate_content(id, &objects, &objects::Limits::default()).ok())
        .map(|(_, content)| content)
        .collect()
}

/// The manifest's item hashing (FNV-1a 64 of the id, mod 4096): public,
/// as anyone holding the manifest computes it.
pub fn item_row(id: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % 4096) as usize
}

/// The catalog every test device holds (public).
pub fn catalog() -> Vec<String> {
    (0..240).map(|i| format!("hearth-item-{i:05}")).collect()
}

/// Device `n`'s history, as [`device`] records it.
pub fn history(n: usize) -> std::collections::BTreeSet<String> {
    (0..30).map(|k| format!("hearth-item-{:05}", (k * 6 + n % 6 + 6 * n) % 240)).collect()
}

/// How well a coordinator that takes the catalog items whose hashed row
/// is `touched` for device `n`'s history does: (true-positive rate,
/// false-positive rate). Chance gives the two equal.
pub fn history_read(touched: &std::collections::BTreeSet<usize>, n: usize) -> (f64, f64) {
    let truth = history(n);
    let catalog = catalog();
    let guessed: Vec<&String> = catalog.iter().filter(|id| touched.contains(&item_row(id))).collect();
    let tp = guessed.iter().filter(|id| truth.contains(**id)).count() as f64;
    let fp = guessed.len() as f64 - tp;
    (tp / truth.len() as f64, fp / (catalog.len() - truth.len()) as f64)
}

/// The offset and length of a parameter in the flattened update (the
/// manifest's order, public).
pub fn parameter_span(name: &str) -> (usize, usize) {
    let manifest: serde_json::Value = serde_json::from_slice(&ModelPackage::builtin().manifest).unwrap();
    let mut at = 0;
    for p in manifest["parameters"].as_array().unwrap() {
        let len: usize = p["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).product();
        if p["name"] == name {
            return (at, len);
        }
        at += len;
    }
    panic!("no parameter {name}")
}

/// A device that stops answering after its `after`-th reply of a round (1:
/// after its keys, 2: after its shares, 3: after its masked vector), as a
/// phone whose app is killed: once that reply is whole (its objects
/// pushed), its pulls and pushes fail, and only its heartbeats and its
/// deactivation go through (so the SuperLink counts it offline and the
/// coordinator's stage ends without waiting for it).
pub struct Dropping<T: Transport> {
    pub inner: T,
    pub after: Option<usize>,
    pub replies: std::sync::atomic::AtomicUsize,
}

impl<T: Transport> Dropping<T> {
    pub fn new(inner: T, after: Option<usize>) -> Self {
        Dropping { inner, after, replies: std::sync::atomic::AtomicUsize::new(0) }
    }
}

impl<T: Transport> Transport for Dropping<T> {
    fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        use std::sync::atomic::Ordering;
        let gone = self.after.is_some_and(|after| self.replies.load(Ordering::Relaxed) >= after);
        if gone && (path.ends_with("/pull-messages") || path.ends_with("/push-messages")) {
            return Err(TransportError::Io("the app was killed".into()));
        }
        let reply = self.inner.post(path, headers, body, timeout);
        if path.ends_with("/push-messages") && reply.is_ok() {
            self.replies.fetch_add(1, Ordering::Relaxed);
        }
        reply
    }
}
