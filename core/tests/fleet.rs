//! The Fleet API client: against a fake SuperLink that misbehaves (wrong
//! content hashes, oversized arrays, a server that stalls, updates above the
//! bound), and, `#[ignore]`d by default, whole rounds against a real
//! SuperLink and Hearth's ServerApp (`tests/federated/run.sh` runs those).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use hearth_core::federated::objects::{self, Deflated};
use hearth_core::federated::proto;
use hearth_core::federated::*;
use hearth_core::*;
use prost::Message;

type Log = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A train message as a SuperLink would hold it.
fn train_message(node_id: u64, arrays: Vec<(String, F32Array)>, clip: f64) -> (proto::Metadata, Deflated) {
    let mut meta = proto::Metadata {
        run_id: 5,
        src_node_id: 1,
        dst_node_id: node_id,
        group_id: "1".into(),
        ttl: 600.0,
        message_type: "train".into(),
        created_at: now_secs(),
        ..Default::default()
    };
    let content = vec![
        ("arrays".to_string(), Record::Arrays(arrays)),
        (
            "config".to_string(),
            Record::Config(vec![
                ("clip-norm".into(), ConfigValue::Double(clip)),
                ("local-epochs".into(), ConfigValue::Int(1)),
                ("server-round".into(), ConfigValue::Int(1)),
            ]),
        ),
    ];
    let d = objects::deflate_message(&meta, &content);
    meta.message_id = d.message_id().to_string();
    (meta, d)
}

fn small_arrays() -> Vec<(String, F32Array)> {
    vec![
        ("w".into(), F32Array { shape: vec![3, 2], data: vec![0.5; 6] }),
        ("b".into(), F32Array { shape: vec![2], data: vec![0.1, 0.2] }),
    ]
}

/// A scripted SuperLink: one train message for node 42, objects served from
/// `objects` (which a test may tamper with), every request logged.
struct FakeLink {
    meta: proto::Metadata,
    tree: proto::ObjectTree,
    objects: HashMap<String, Vec<u8>>,
    log: Log,
    stall: bool,
}

impl FakeLink {
    fn new(arrays: Vec<(String, F32Array)>, clip: f64) -> FakeLink {
        let (meta, d) = train_message(42, arrays, clip);
        let objects = d.objects.iter().map(|o| (o.id.clone(), o.content.clone())).collect();
        FakeLink { meta, tree: d.tree, objects, log: Arc::default(), stall: false }
    }

    fn paths(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
    }
}

impl Transport for FakeLink {
    fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        assert_eq!(headers.len(), 3, "every request is signed");
        self.log.lock().unwrap().push((path.to_string(), body.to_vec()));
        if self.stall {
            std::thread::sleep(timeout);
            return Err(TransportError::Timeout);
        }
        let name = path.strip_prefix("/v1/fleet/").unwrap();
        Ok(match name {
            "activate-node" => proto::ActivateNodeResponse { node_id: 42 }.encode_to_vec(),
            "deactivate-node" | "confirm-message-received" => Vec::new(),
            "send-node-heartbeat" => proto::SendNodeHeartbeatResponse { success: true }.encode_to_vec(),
            "pull-messages" => proto::PullMessagesResponse {
                reconnect: None,
                messages_list: vec![proto::ProtoMessage {
                    metadata: Some(self.meta.clone()),
                    content: None,
                    error: None,
                }],
                message_object_trees: vec![self.tree.clone()],
            }
            .encode_to_vec(),
            "pull-object" => {
                let req = proto::PullObjectRequest::decode(body).unwrap();
                let content = self.objects.get(&req.object_id).cloned();
                proto::PullObjectResponse {
                    object_found: content.is_some(),
                    object_available: content.is_some(),
                    object_content: content.unwrap_or_default(),
                }
                .encode_to_vec()
            }
            "push-messages" => {
                let req = proto::PushMessagesRequest::decode(body).unwrap();
                let mut ids = Vec::new();
                let mut stack = vec![&req.message_object_trees[0]];
                while let Some(t) = stack.pop() {
                    ids.push(t.object_id.clone());
                    stack.extend(t.children.iter());
                }
                proto::PushMessagesResponse { objects_to_push: ids, session_id: "s".into(), ..Default::default() }
                    .encode_to_vec()
            }
            "push-object" => proto::PushObjectResponse { stored: true }.encode_to_vec(),
            other => panic!("unexpected call {other}"),
        })
    }
}

fn client(link: FakeLink, options: ClientOptions) -> FleetClient<FakeLink> {
    FleetClient::new(link, NodeKey::generate().unwrap(), options)
}

fn quick() -> ClientOptions {
    ClientOptions {
        call_timeout: Duration::from_millis(200),
        attempts: 3,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(40),
        poll_interval: Duration::from_millis(10),
        linger: Duration::ZERO,
        ..ClientOptions::default()
    }
}

/// Delta of a fixed direction scaled to norm `norm`.
fn trainer(norm: f32) -> impl FnMut(&TrainInstruction) -> Result<LocalResult, String> {
    move |ins: &TrainInstruction| {
        let n = ins.flat().len();
        let v = norm / (n as f32).sqrt();
        Ok(LocalResult { delta: vec![v * 0.999_99; n], examples: 37 })
    }
}

/// Sum of squares of every ArrayChunk's `.npy` pushed, per push-messages.
fn pushed_norms(log: &[(String, Vec<u8>)]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for (path, body) in log {
        if path.ends_with("/push-messages") {
            out.push(0.0);
        } else if path.ends_with("/push-object") {
            let req = proto::PushObjectRequest::decode(body.as_slice()).unwrap();
            let parsed = objects::parse(&req.object_content).unwrap();
            if parsed.kind == "ArrayChunk" {
                let a = objects::parse_npy_f32(parsed.body, &Limits::default()).unwrap();
                *out.last_mut().unwrap() += a.data.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
            }
        }
    }
    out.into_iter().map(f64::sqrt).collect()
}

#[test]
fn a_round_pulls_trains_and_pushes_the_clipped_delta() {
    let mut c = client(FakeLink::new(small_arrays(), 0.5), quick());
    let mut seen = None;
    let mut t = trainer(0.5);
    let mut record = |ins: &TrainInstruction| {
        seen = Some((ins.clip_norm, ins.epochs, ins.round, ins.arrays.clone()));
        t(ins)
    };
    let RoundOutcome::Done(report) = c.participate(Duration::from_secs(1), &mut record).unwrap() else {
        panic!("no round")
    };
    assert_eq!(seen.unwrap(), (0.5, 1, Some(1), small_arrays()));
    assert_eq!(report.node_id, 42);
    assert_eq!(report.examples_reported, 20, "37 examples are reported as 20");
    assert!(report.norm <= 0.5);
    let paths = c.transport().paths();
    assert_eq!(paths.first().unwrap(), "/v1/fleet/activate-node");
    assert_eq!(paths.last().unwrap(), "/v1/fleet/deactivate-node");
    let norms = pushed_norms(&c.transport().log.lock().unwrap());
    assert_eq!(norms.len(), 1);
    assert!(norms[0] <= 0.5 && norms[0] > 0.49, "{norms:?}");
}

#[test]
fn the_node_keeps_sending_heartbeats_while_it_trains() {
    let options = ClientOptions { heartbeat_interval: 3.0, ..quick() };
    let mut c = client(FakeLink::new(small_arrays(), 0.5), options);
    let mut inner = trainer(0.5);
    let mut slow = |ins: &TrainInstruction| {
        std::thread::sleep(Duration::from_millis(1300));
        inner(ins)
    };
    assert!(matches!(c.participate(Duration::from_secs(1), &mut slow).unwrap(), RoundOutcome::Done(_)));
    let paths = c.transport().paths();
    let confirmed = paths.iter().position(|p| p.ends_with("/confirm-message-received")).unwrap();
    let pushed = paths.iter().position(|p| p.ends_with("/push-messages")).unwrap();
    let beats = paths[confirmed..pushed].iter().filter(|p| p.ends_with("/send-node-heartbeat")).count();
    assert!(beats >= 2, "one beat while training, one before the push: {paths:?}");
}

#[test]
fn a_wrong_content_hash_is_a_typed_error_and_nothing_is_pushed() {
    let mut link = FakeLink::new(small_arrays(), 0.5);
    let chunk = link.objects.iter().find(|(_, c)| c.starts_with(b"ArrayChunk ")).unwrap().0.clone();
    let tampered = link.objects.get_mut(&chunk).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x40;
    let mut c = client(link, quick());
    let err = c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap_err();
    assert!(matches!(&err, FleetError::Protocol(why) if why.contains("does not match its id")), "{err:?}");
    let paths = c.transport().paths();
    assert!(!paths.iter().any(|p| p.contains("push")), "nothing is pushed: {paths:?}");
    assert_eq!(paths.last().unwrap(), "/v1/fleet/deactivate-node", "the node is deactivated after a failure");
}

#[test]
fn an_oversized_array_is_a_typed_error() {
    let big = vec![("w".to_string(), F32Array { shape: vec![1000], data: vec![0.0; 1000] })];
    let options = ClientOptions { limits: Limits { max_array_elements: 100, ..Limits::default() }, ..quick() };
    let mut c = client(FakeLink::new(big.clone(), 0.5), options);
    let err = c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap_err();
    assert!(matches!(err, FleetError::TooLarge(_)), "{err:?}");
    assert!(!c.transport().paths().iter().any(|p| p.contains("push")));

    let options = ClientOptions { limits: Limits { max_object_bytes: 1024, ..Limits::default() }, ..quick() };
    let mut c = client(FakeLink::new(big, 0.5), options);
    let err = c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap_err();
    assert!(matches!(err, FleetError::TooLarge(_)), "{err:?}");
}

#[test]
fn a_stalling_server_is_a_timeout_within_the_bound() {
    let mut link = FakeLink::new(small_arrays(), 0.5);
    link.stall = true;
    let options = quick();
    let bound = options.call_bound();
    let mut c = client(link, options);
    let start = Instant::now();
    let err = c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap_err();
    let took = start.elapsed();
    assert_eq!(err, FleetError::Timeout);
    assert!(took <= bound + Duration::from_millis(300), "{took:?} > {bound:?}");
    assert_eq!(c.transport().paths().len(), 3, "three attempts, then the typed error");
}

/// The kinds of the objects pushed, and the error of each reply pushed.
fn pushed(log: &[(String, Vec<u8>)]) -> (Vec<String>, Vec<Option<String>>) {
    let mut kinds = Vec::new();
    let mut errors = Vec::new();
    for (path, body) in log {
        if path.ends_with("/push-object") {
            let req = proto::PushObjectRequest::decode(body.as_slice()).unwrap();
            kinds.push(objects::parse(&req.object_content).unwrap().kind.to_string());
        } else if path.ends_with("/push-messages") {
            let req = proto::PushMessagesRequest::decode(body.as_slice()).unwrap();
            errors.push(req.messages_list[0].error.as_ref().map(|e| e.reason.clone()));
        }
    }
    (kinds, errors)
}

#[test]
fn an_update_above_the_bound_or_of_the_wrong_size_is_never_sent() {
    let mut c = client(FakeLink::new(small_arrays(), 0.5), quick());
    let err = c.participate(Duration::from_secs(1), &mut trainer(0.6)).unwrap_err();
    assert!(matches!(err, FleetError::Update(_)), "{err:?}");
    let mut short = |_: &TrainInstruction| Ok(LocalResult { delta: vec![0.0; 3], examples: 1 });
    let err = c.participate(Duration::from_secs(1), &mut short).unwrap_err();
    assert!(matches!(err, FleetError::Update(_)), "{err:?}");
    // The server hears that the device declined, and nothing else.
    let (kinds, errors) = pushed(&c.transport().log.lock().unwrap());
    assert_eq!(kinds, vec!["Message", "Message"]);
    assert_eq!(errors, vec![Some("the device refused its own update".to_string()); 2]);
}

#[test]
fn a_training_failure_is_answered_with_an_error_that_says_nothing_more() {
    let mut c = client(FakeLink::new(small_arrays(), 0.5), quick());
    let mut failing = |_: &TrainInstruction| Err("no engaged items in hearth-item-00042".to_string());
    let err = c.participate(Duration::from_secs(1), &mut failing).unwrap_err();
    assert_eq!(err, FleetError::Update("no engaged items in hearth-item-00042".into()));
    let log = c.transport().log.lock().unwrap().clone();
    assert!(!log.iter().any(|(_, body)| contains(body, b"hearth-item-00042")));
    let (kinds, errors) = pushed(&log);
    assert_eq!(kinds, vec!["Message"]);
    assert_eq!(errors, vec![Some("local training failed on the device".to_string())]);
}

#[test]
fn a_train_message_without_a_clip_norm_is_refused() {
    let mut link = FakeLink::new(small_arrays(), 0.5);
    let mut meta = link.meta.clone();
    let content = vec![("arrays".to_string(), Record::Arrays(small_arrays()))];
    let d = objects::deflate_message(&meta, &content);
    meta.message_id = d.message_id().to_string();
    link.meta = meta;
    link.tree = d.tree.clone();
    link.objects = d.objects.iter().map(|o| (o.id.clone(), o.content.clone())).collect();
    let mut c = client(link, quick());
    let err = c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap_err();
    assert!(matches!(&err, FleetError::Protocol(why) if why.contains("clip-norm")), "{err:?}");
}

// ---- against a real SuperLink (tests/federated/run.sh) ----

/// Records every request body, then passes it on.
struct Recording {
    inner: HttpTransport,
    log: Log,
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
        self.inner.post(path, headers, body, timeout)
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

const DAY: i64 = 86_400_000;

/// A device with its own history: distinctive ids and titles, so any of them
/// in a request body would be found.
fn device(dir: &std::path::Path, n: usize, trusted: &str) -> (Arc<Hearth>, Vec<String>) {
    let mut config = HearthConfig::new(dir.to_str().unwrap());
    if !trusted.is_empty() {
        config.trusted_model_keys = vec![trusted.to_string()];
    }
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
    (h, secrets)
}

/// Installs the signed global model the coordinator sent, then trains on
/// the device's history through hearth-core's own training path.
fn hearth_trainer(h: Arc<Hearth>, seed: u64) -> impl FnMut(&TrainInstruction) -> Result<LocalResult, String> {
    move |ins: &TrainInstruction| {
        if let (Some(ConfigValue::Bytes(manifest)), Some(ConfigValue::Bytes(signature))) =
            (ins.config("model-manifest"), ins.config("model-signature"))
        {
            let weights: Vec<u8> = ins.flat().iter().flat_map(|x| x.to_le_bytes()).collect();
            let package = ModelPackage {
                manifest: manifest.clone(),
                signature: signature.clone(),
                weights,
                ..ModelPackage::builtin()
            };
            h.install_model(package).map_err(|e| format!("install: {e}"))?;
        }
        let u = hearth_core::testing::local_update(&h, ins.clip_norm, ins.epochs, seed ^ ins.round.unwrap_or(0))
            .map_err(|e| e.to_string())?;
        Ok(LocalResult { delta: u.delta, examples: u.examples })
    }
}

#[test]
#[ignore = "needs a SuperLink and the ServerApp: tests/federated/run.sh"]
fn devices_take_part_in_rounds_against_a_superlink() {
    let link = env("HEARTH_SUPERLINK", "http://127.0.0.1:9092");
    let devices: usize = env("HEARTH_DEVICES", "3").parse().unwrap();
    let rounds: usize = env("HEARTH_ROUNDS", "3").parse().unwrap();
    let trusted = env("HEARTH_COORDINATOR_PUBKEY", "");
    let wait = Duration::from_secs(env("HEARTH_ROUND_WAIT_S", "300").parse().unwrap());
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..devices)
            .map(|n| {
                let (link, trusted, root) = (&link, &trusted, root.path());
                s.spawn(move || {
                    let (h, secrets) = device(&root.join(format!("d{n}")), n, trusted);
                    let log: Log = Arc::default();
                    let transport = Recording { inner: HttpTransport::new(link), log: log.clone() };
                    let options =
                        ClientOptions { poll_interval: Duration::from_millis(200), ..ClientOptions::default() };
                    let mut c = FleetClient::new(transport, NodeKey::generate().unwrap(), options);
                    let mut train = hearth_trainer(h.clone(), 1000 + n as u64);
                    let outcomes = match c.participate_rounds(rounds, wait, &mut train) {
                        Ok(o) => o,
                        Err(e) => panic!("device {n}: {e}"),
                    };
                    let reports: Vec<RoundReport> = outcomes
                        .into_iter()
                        .map(|o| match o {
                            RoundOutcome::Done(r) => r,
                            RoundOutcome::NoMessage => panic!("device {n}: no train message within {wait:?}"),
                        })
                        .collect();
                    let log = log.lock().unwrap().clone();
                    (reports, secrets, log)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a device thread panicked")).collect()
    });
    let secrets: Vec<String> = results.iter().flat_map(|(_, s, _)| s.clone()).collect();
    let (mut requests, mut bytes) = (0, 0);
    for (n, (reports, _, log)) in results.iter().enumerate() {
        assert_eq!(reports.len(), rounds);
        let norms = pushed_norms(log);
        assert_eq!(norms.len(), rounds, "device {n}: one reply per round");
        for (r, norm) in reports.iter().zip(&norms) {
            assert!(*norm <= r.clip_norm, "device {n}: pushed norm {norm} above C = {}", r.clip_norm);
            assert!(*norm > 0.0);
        }
        for (path, body) in log {
            for s in &secrets {
                assert!(!contains(body, s.as_bytes()), "device {n}: a history item is in a {path} request");
            }
            requests += 1;
            bytes += body.len();
        }
        let rounds_seen: Vec<_> = reports.iter().map(|r| r.round).collect();
        println!(
            "device {n}: rounds {rounds_seen:?}, norms {norms:.4?}, sent {} B",
            reports.iter().map(|r| r.bytes_sent).sum::<u64>()
        );
    }
    println!(
        "{devices} devices x {rounds} rounds in {:.1} s; {requests} requests, {bytes} bytes checked for {} history strings",
        started.elapsed().as_secs_f64(),
        secrets.len()
    );
}
