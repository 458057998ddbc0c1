//! Taking part in a federated round through `Hearth`: eligibility (consent,
//! the host's conditions, new examples, the period, the budget), what a
//! device declines, the privacy ledger, the sealed node key, and what goes
//! over the wire, against the scripted SuperLink of `common::superlink`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::superlink::*;
use common::*;
use hearth_core::federated::accountant::RdpAccountant;
use hearth_core::federated::objects;
use hearth_core::federated::proto;
use hearth_core::federated::*;
use hearth_core::*;
use prost::Message;

const DAY: i64 = 86_400_000;

fn good() -> DeviceConditions {
    DeviceConditions { charging: true, unmetered_network: true, idle: true }
}

fn quick() -> ClientOptions {
    ClientOptions {
        call_timeout: Duration::from_millis(300),
        attempts: 2,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(40),
        poll_interval: Duration::from_millis(10),
        linger: Duration::ZERO,
        ..ClientOptions::default()
    }
}

/// The built-in model's weights as the coordinator sends them.
fn model_arrays() -> Vec<(String, F32Array)> {
    let package = ModelPackage::builtin();
    let manifest: serde_json::Value = serde_json::from_slice(&package.manifest).unwrap();
    let weights: Vec<f32> =
        package.weights.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    manifest["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let (offset, count) = (p["offset"].as_u64().unwrap() as usize / 4, p["count"].as_u64().unwrap() as usize);
            let shape = p["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            (
                p["name"].as_str().unwrap().to_string(),
                F32Array { shape, data: weights[offset..offset + count].to_vec() },
            )
        })
        .collect()
}

/// A round's config with the privacy terms announced.
fn config(clip: f64, z: f64, q: f64, round: i64) -> Vec<(String, ConfigValue)> {
    vec![
        ("clip-norm".into(), ConfigValue::Double(clip)),
        ("local-epochs".into(), ConfigValue::Int(1)),
        ("server-round".into(), ConfigValue::Int(round)),
        ("noise-multiplier".into(), ConfigValue::Double(z)),
        ("sampling-rate".into(), ConfigValue::Double(q)),
    ]
}

fn link(z: f64, q: f64, round: i64) -> FakeLink {
    FakeLink::with_config(model_arrays(), config(1.0, z, q, round))
}

/// An opted-in device with 20 plays of distinctive items; returns the
/// strings of its history.
fn device(dir: &std::path::Path, tune: impl FnOnce(&mut HearthConfig)) -> (Arc<Hearth>, Vec<String>) {
    let mut config = HearthConfig::new(dir.to_str().unwrap());
    config.federated_min_interval_hours = 0;
    tune(&mut config);
    let h = open_with(config, KEY_A).unwrap();
    let genres = ["drama", "comedy", "kids"];
    let catalog: Vec<CatalogItem> = (0..60)
        .map(|i| item(&format!("secret-item-{i:04}"), &format!("Secret Title {i:04}"), &[genres[i % 3]]))
        .collect();
    h.upsert_catalog(catalog).unwrap();
    let now = common_now();
    let mut secrets = Vec::new();
    let events: Vec<Event> = (0..20)
        .map(|k| {
            let i = k * 3;
            secrets.push(format!("secret-item-{i:04}"));
            secrets.push(format!("Secret Title {i:04}"));
            event(&format!("secret-item-{i:04}"), EventKind::Complete, now - DAY + k as i64 * 60_000)
        })
        .collect();
    h.record_batch(events).unwrap();
    h.set_federated_opt_in(true).unwrap();
    (h, secrets)
}

fn common_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn pushes(log: &Log) -> usize {
    log.lock().unwrap().iter().filter(|(p, _)| p.ends_with("/push-object")).count()
}

/// The error reasons of the replies pushed.
fn error_replies(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.ends_with("/push-messages"))
        .filter_map(|(_, body)| {
            let req = proto::PushMessagesRequest::decode(body.as_slice()).unwrap();
            req.messages_list[0].error.as_ref().map(|e| e.reason.clone())
        })
        .collect()
}

/// Whether any pushed object is an array (an update).
fn pushed_arrays(log: &Log) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.ends_with("/push-object"))
        .filter(|(_, body)| {
            let req = proto::PushObjectRequest::decode(body.as_slice()).unwrap();
            objects::parse(&req.object_content).unwrap().kind == "ArrayChunk"
        })
        .count()
}

#[test]
fn a_device_without_consent_on_a_metered_network_or_busy_contacts_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |_| {});
    h.set_federated_opt_in(false).unwrap();
    let l = link(1.0, 0.01, 1);
    let log = l.log.clone();
    let bad = DeviceConditions { charging: false, unmetered_network: false, idle: false };
    let outcome = h.participate_using(l, bad, quick()).unwrap();
    assert_eq!(
        outcome,
        ParticipationOutcome::NotEligible {
            reasons: vec![
                IneligibleReason::NotOptedIn,
                IneligibleReason::NotCharging,
                IneligibleReason::MeteredNetwork,
                IneligibleReason::NotIdle,
            ]
        }
    );
    assert!(log.lock().unwrap().is_empty(), "nothing was contacted");

    h.set_federated_opt_in(true).unwrap();
    let metered = DeviceConditions { unmetered_network: false, ..good() };
    assert_eq!(
        h.federated_eligibility(metered).unwrap(),
        Eligibility::NotEligible { reasons: vec![IneligibleReason::MeteredNetwork] }
    );
    assert_eq!(h.federated_eligibility(good()).unwrap(), Eligibility::Eligible);
}

#[test]
fn a_device_with_too_little_new_history_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |c| c.federated_min_new_examples = 25);
    assert_eq!(
        h.federated_eligibility(good()).unwrap(),
        Eligibility::NotEligible { reasons: vec![IneligibleReason::TooFewNewExamples { have: 20, need: 25 }] }
    );
}

#[test]
fn a_round_sends_only_the_clipped_update_and_writes_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let (h, secrets) = device(dir.path(), |c| c.federated_min_interval_hours = 6);
    let l = link(1.1, 0.01, 1);
    let log = l.log.clone();
    let before = common_now();
    let outcome = h.participate_using(l, good(), quick()).unwrap();
    let ParticipationOutcome::Contributed { entry } = outcome else { panic!("{outcome:?}") };
    assert_eq!((entry.run_id, entry.round, entry.status), (5, Some(1), UploadStatus::Sent));
    assert!(entry.at_ms >= before);
    assert!(entry.norm_after_clip <= 1.0 && entry.norm_after_clip > 0.0);
    assert!(entry.norm_before_clip >= entry.norm_after_clip);
    assert_eq!((entry.clip_norm, entry.noise_multiplier, entry.sampling_rate), (1.0, 1.1, 0.01));
    let mut accountant = RdpAccountant::new();
    accountant.compose(1.1, 0.01, 1).unwrap();
    assert_eq!(entry.epsilon_total, accountant.epsilon(1e-6).unwrap());

    // What left the device: the update (arrays) and request metadata; no
    // item id or title of the history, in any body.
    let sent: u64 = log.lock().unwrap().iter().map(|(_, b)| b.len() as u64).sum();
    let raw: usize = model_arrays().iter().map(|(_, a)| a.data.len() * 4).sum();
    assert!(entry.bytes_sent as usize > raw && entry.bytes_sent <= sent, "{} of {sent}", entry.bytes_sent);
    assert!(pushed_arrays(&log) > 0);
    for (path, body) in log.lock().unwrap().iter() {
        for s in &secrets {
            assert!(!contains(body, s.as_bytes()), "{s} in a {path} request");
        }
    }

    let ledger = h.privacy_ledger().unwrap();
    assert_eq!(ledger.entries, vec![entry.clone()]);
    assert_eq!((ledger.epsilon_spent, ledger.delta, ledger.epsilon_budget), (entry.epsilon_total, 1e-6, 10.0));

    // Right after: too soon, and no new examples.
    let Eligibility::NotEligible { reasons } = h.federated_eligibility(good()).unwrap() else { panic!() };
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(matches!(reasons[0], IneligibleReason::TooFewNewExamples { have: 0, need: 10 }));
    assert!(
        matches!(reasons[1], IneligibleReason::TooSoon { next_allowed_ms } if next_allowed_ms == entry.at_ms + 6 * 3_600_000)
    );

    // The ledger is in the export, and survives an import elsewhere.
    let doc: serde_json::Value = serde_json::from_str(&h.export_json().unwrap()).unwrap();
    assert_eq!(doc["privacy_ledger"][0]["epsilon_total"].as_f64(), Some(entry.epsilon_total));
    let other = tempfile::tempdir().unwrap();
    let h2 = open(other.path(), KEY_B).unwrap();
    h2.import_json(h.export_json().unwrap()).unwrap();
    assert_eq!(h2.privacy_ledger().unwrap().entries, vec![entry]);
    h2.import_json(h.export_json().unwrap()).unwrap();
    assert_eq!(h2.privacy_ledger().unwrap().entries.len(), 1, "imported twice, counted once");
}

#[test]
fn the_same_round_is_answered_once() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |c| c.federated_min_new_examples = 0);
    assert!(matches!(
        h.participate_using(link(1.0, 0.01, 3), good(), quick()).unwrap(),
        ParticipationOutcome::Contributed { .. }
    ));
    let l = link(1.0, 0.01, 3);
    let log = l.log.clone();
    assert_eq!(
        h.participate_using(l, good(), quick()).unwrap(),
        ParticipationOutcome::Declined { reason: DeclineReason::AlreadyTookPart }
    );
    assert_eq!(pushed_arrays(&log), 0, "no update the second time");
    assert_eq!(error_replies(&log), vec!["local training failed on the device".to_string()]);
    assert_eq!(h.privacy_ledger().unwrap().entries.len(), 1);
}

#[test]
fn a_store_that_requires_secure_aggregation_declines_a_plain_round() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |c| {
        c.federated_min_new_examples = 0;
        c.federated_require_secure_aggregation = true;
    });
    let l = link(1.0, 0.01, 3);
    let log = l.log.clone();
    assert_eq!(
        h.participate_using(l, good(), quick()).unwrap(),
        ParticipationOutcome::Declined { reason: DeclineReason::SecureAggregationRequired }
    );
    assert_eq!(pushed_arrays(&log), 0, "the plain round got no update");
    assert!(h.privacy_ledger().unwrap().entries.is_empty());
    // Without the requirement, the same round takes the update, recorded as
    // a plain upload.
    let other = tempfile::tempdir().unwrap();
    let (h, _) = device(other.path(), |c| c.federated_min_new_examples = 0);
    let ParticipationOutcome::Contributed { entry } = h.participate_using(link(1.0, 0.01, 3), good(), quick()).unwrap()
    else {
        panic!("no contribution");
    };
    assert_eq!(entry.aggregation, Aggregation::Plain);
}

#[test]
fn the_budget_stops_a_round_before_it_is_spent_and_then_stops_asking() {
    let dir = tempfile::tempdir().unwrap();
    let rounds = |n| {
        let mut a = RdpAccountant::new();
        a.compose(1.0, 1.0, n).unwrap();
        a.epsilon(1e-6).unwrap()
    };
    let one_round = rounds(1);
    // Room for one round at z = 1, q = 1, not two.
    let budget = (one_round + rounds(2)) / 2.0;
    let (h, _) = device(dir.path(), |c| {
        c.federated_epsilon_budget = budget;
        c.federated_min_new_examples = 0;
    });
    let first = h.participate_using(link(1.0, 1.0, 1), good(), quick()).unwrap();
    assert!(matches!(first, ParticipationOutcome::Contributed { .. }), "{first:?}");
    let l = link(1.0, 1.0, 2);
    let log = l.log.clone();
    let second = h.participate_using(l, good(), quick()).unwrap();
    let ParticipationOutcome::Declined { reason: DeclineReason::OverBudget { epsilon_after, budget: b } } = second
    else {
        panic!("{second:?}")
    };
    assert!(epsilon_after > budget && b == budget);
    assert_eq!(pushed_arrays(&log), 0);
    assert_eq!(h.privacy_ledger().unwrap().entries.len(), 1);
    drop(h);

    // A smaller budget (an app update): spent; nothing is contacted.
    let (h, _) = device(dir.path(), |c| c.federated_epsilon_budget = one_round * 0.5);
    let l = link(1.0, 0.01, 3);
    let log = l.log.clone();
    let outcome = h.participate_using(l, good(), quick()).unwrap();
    let ParticipationOutcome::NotEligible { reasons } = outcome else { panic!("{outcome:?}") };
    assert!(reasons.iter().any(|r| matches!(r, IneligibleReason::BudgetSpent { spent, .. } if *spent == one_round)));
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn a_round_may_cap_the_examples_or_weight_the_dense_part_and_a_bad_setting_is_a_protocol_error() {
    let cases = [
        ("max-examples", ConfigValue::Int(5), true),
        ("max-examples", ConfigValue::Int(0), false),
        ("max-examples", ConfigValue::Double(2.5), false),
        ("local-epochs", ConfigValue::Int(2), true),
        ("local-epochs", ConfigValue::Int(21), false),
        ("local-epochs", ConfigValue::String("2".into()), false),
        ("dense-weight", ConfigValue::Double(0.1), true),
        ("dense-weight", ConfigValue::Int(1), true),
        ("dense-weight", ConfigValue::Double(1e-6), true),
        ("dense-weight", ConfigValue::Double(0.0), false),
        // Positive, but an f32 weight would be zero.
        ("dense-weight", ConfigValue::Double(1e-300), false),
        ("dense-weight", ConfigValue::Double(1.5), false),
        ("dense-weight", ConfigValue::Double(f64::NAN), false),
        ("dense-weight", ConfigValue::String("0.1".into()), false),
    ];
    for (key, cap, ok) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = device(dir.path(), |_| {});
        let mut cfg = config(1.0, 1.1, 0.01, 1);
        cfg.retain(|(k, _)| k != key);
        cfg.push((key.into(), cap.clone()));
        let l = FakeLink::with_config(model_arrays(), cfg);
        let log = l.log.clone();
        let got = h.participate_using(l, good(), quick());
        if ok {
            assert!(matches!(got, Ok(ParticipationOutcome::Contributed { .. })), "{key} {cap:?}: {got:?}");
        } else {
            assert!(
                matches!(got, Err(HearthError::Federated { kind: FederatedFailure::Protocol, .. })),
                "{key} {cap:?}: {got:?}"
            );
            assert_eq!(pushed_arrays(&log), 0, "nothing uploaded");
            assert!(h.privacy_ledger().unwrap().entries.is_empty());
        }
    }
}

#[test]
fn a_round_without_privacy_terms_is_declined() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |_| {});
    let l = FakeLink::new(model_arrays(), 1.0);
    let log = l.log.clone();
    assert_eq!(
        h.participate_using(l, good(), quick()).unwrap(),
        ParticipationOutcome::Declined { reason: DeclineReason::PrivacyTermsMissing }
    );
    assert_eq!(pushed_arrays(&log), 0);
    assert!(h.privacy_ledger().unwrap().entries.is_empty());
}

#[test]
fn a_global_model_with_a_bad_signature_is_rejected_and_nothing_is_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |_| {});
    let mut cfg = config(1.0, 1.0, 0.01, 1);
    cfg.push(("model-manifest".into(), ConfigValue::Bytes(ModelPackage::builtin().manifest)));
    cfg.push(("model-signature".into(), ConfigValue::Bytes(vec![7; 64])));
    let l = FakeLink::with_config(model_arrays(), cfg);
    let log = l.log.clone();
    let err = h.participate_using(l, good(), quick()).unwrap_err();
    assert!(matches!(err, HearthError::ModelRejected { kind: ModelRejection::BadSignature, .. }), "{err:?}");
    assert_eq!(pushed_arrays(&log), 0);
    assert!(h.privacy_ledger().unwrap().entries.is_empty());
    let context = RankContext { device: DeviceClass::Tv, local_hour: 21, locale: Some("en-GB".into()) };
    assert!(h.rank_catalog(RankOptions::new(context)).unwrap().personalized, "ranking goes on");
}

#[test]
fn arrays_of_another_layout_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |_| {});
    let l = FakeLink::with_config(small_arrays(), config(1.0, 1.0, 0.01, 1));
    let log = l.log.clone();
    let err = h.participate_using(l, good(), quick()).unwrap_err();
    assert!(matches!(&err, HearthError::InvalidInput { field, .. } if field == "global weights"), "{err:?}");
    assert_eq!(pushed_arrays(&log), 0);
}

#[test]
fn a_stalling_coordinator_is_a_typed_timeout_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |_| {});
    let mut l = link(1.0, 0.01, 1);
    l.stall = true;
    let options = quick();
    let bound = options.call_bound();
    let start = Instant::now();
    let err = h.participate_using(l, good(), options).unwrap_err();
    assert!(matches!(err, HearthError::Federated { kind: FederatedFailure::Timeout, .. }), "{err:?}");
    // Activation times out (its retries included), then the deactivation.
    assert!(start.elapsed() <= bound * 2 + Duration::from_millis(500), "{:?}", start.elapsed());
    assert!(h.privacy_ledger().unwrap().entries.is_empty());
}

#[test]
fn a_coordinator_url_must_be_plain_http_and_an_unreachable_one_is_a_network_error() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |_| {});
    for url in ["https://coordinator.example", "", "ftp://x", "http://", "http://a b"] {
        let err = h.participate(url.into(), good()).unwrap_err();
        assert!(
            matches!(&err, HearthError::InvalidInput { field, .. } if field == "coordinator_url"),
            "{url}: {err:?}"
        );
    }
    // A closed port on this machine.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = h.participate(format!("http://127.0.0.1:{port}"), good()).unwrap_err();
    assert!(matches!(err, HearthError::Federated { kind: FederatedFailure::Network, .. }), "{err:?}");
}

/// An app's HTTP stack, here a pass-through to the scripted SuperLink.
struct AppTransport(FakeLink);

impl FleetTransport for AppTransport {
    fn post(
        &self,
        path: String,
        headers: Vec<HttpHeader>,
        body: Vec<u8>,
        timeout_ms: u64,
    ) -> Result<Vec<u8>, TransportFailure> {
        let headers: Vec<(String, String)> = headers.into_iter().map(|h| (h.name, h.value)).collect();
        self.0.post(&path, &headers, &body, Duration::from_millis(timeout_ms)).map_err(|e| match e {
            TransportError::Timeout => TransportFailure::Timeout,
            TransportError::Status(code) => TransportFailure::Status { code },
            TransportError::Throttled { status, retry_after } => {
                TransportFailure::Throttled { code: status, retry_after_ms: retry_after.as_millis() as u64 }
            }
            TransportError::TooLarge => TransportFailure::TooLarge,
            TransportError::Io(reason) => TransportFailure::Io { reason },
        })
    }
}

#[test]
fn an_app_brings_its_own_http_stack() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |_| {});
    let l = link(1.0, 0.01, 1);
    let log = l.log.clone();
    let outcome = h.participate_via(Arc::new(AppTransport(l)), good()).unwrap();
    assert!(matches!(outcome, ParticipationOutcome::Contributed { .. }), "{outcome:?}");
    assert!(pushes(&log) > 0);

    /// A server answering every call with 403.
    struct Forbidden;
    impl FleetTransport for Forbidden {
        fn post(&self, _: String, _: Vec<HttpHeader>, _: Vec<u8>, _: u64) -> Result<Vec<u8>, TransportFailure> {
            Err(TransportFailure::Status { code: 403 })
        }
    }
    let (h, _) = device(tempfile::tempdir().unwrap().path(), |_| {});
    let err = h.participate_via(Arc::new(Forbidden), good()).unwrap_err();
    assert!(matches!(err, HearthError::Federated { kind: FederatedFailure::Rejected, .. }), "{err:?}");
}

/// The DER prefix of every P-256 PKCS#8 key ring makes (version, the EC
/// algorithm and curve identifiers).
const P256_PKCS8_PREFIX: [u8; 26] = [
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
    0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
];

/// The public key a device activated with.
fn activation_key(log: &Log) -> Vec<u8> {
    let log = log.lock().unwrap();
    let (_, body) = log.iter().find(|(p, _)| p.ends_with("/activate-node")).unwrap();
    proto::ActivateNodeRequest::decode(body.as_slice()).unwrap().public_key
}

#[test]
fn the_node_key_is_kept_sealed_and_goes_with_delete_all() {
    let dir = tempfile::tempdir().unwrap();
    // One key for good (federated_node_key_rounds = 0), as an app may ask.
    let keep = |c: &mut HearthConfig| {
        c.federated_min_new_examples = 0;
        c.federated_node_key_rounds = 0;
    };
    let (h, _) = device(dir.path(), keep);
    let l = link(1.0, 0.01, 1);
    let first = l.log.clone();
    h.participate_using(l, good(), quick()).unwrap();
    h.close().unwrap();
    drop(h);
    for (file, bytes) in dir_bytes(dir.path()) {
        assert!(!contains(&bytes, &P256_PKCS8_PREFIX), "a private key in clear in {file}");
        assert!(!contains(&bytes, b"PRIVATE KEY"), "a PEM private key in {file}");
    }

    let (h, _) = device(dir.path(), keep);
    let l = link(1.0, 0.01, 2);
    let second = l.log.clone();
    h.participate_using(l, good(), quick()).unwrap();
    assert_eq!(activation_key(&first), activation_key(&second), "the same node across restarts");

    h.delete_all().unwrap();
    assert!(h.privacy_ledger().unwrap().entries.is_empty());
    let (h, _) = device(dir.path(), keep);
    let l = link(1.0, 0.01, 3);
    let third = l.log.clone();
    h.participate_using(l, good(), quick()).unwrap();
    assert_ne!(activation_key(&first), activation_key(&third), "a new key after delete_all");
}

/// The key fingerprint the ledger keeps: SHA-256 of the PEM, 8 bytes.
fn fingerprint(pem: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, pem).as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn rounds_are_taken_under_fresh_node_keys_and_the_ledger_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |c| c.federated_min_new_examples = 0);
    let mut keys = Vec::new();
    for round in 1..=3 {
        let l = link(1.0, 0.01, round);
        let (log, message) = (l.log.clone(), l.meta.clone());
        assert!(matches!(h.participate_using(l, good(), quick()).unwrap(), ParticipationOutcome::Contributed { .. }));
        keys.push(activation_key(&log));
        // The reply carries the message's own time and TTL, not the
        // device's clock, and no training time.
        let log = log.lock().unwrap();
        let (_, body) = log.iter().find(|(p, _)| p.ends_with("/push-messages")).unwrap();
        let push = proto::PushMessagesRequest::decode(body.as_slice()).unwrap();
        assert_eq!(push.clientapp_runtime_list, vec![0.0]);
        let meta = push.messages_list[0].metadata.as_ref().unwrap();
        assert_eq!((meta.created_at, meta.ttl), (message.created_at, message.ttl));
    }
    assert_eq!(keys.iter().collect::<std::collections::BTreeSet<_>>().len(), 3, "a fresh key each round");
    let ledger = h.privacy_ledger().unwrap();
    let noted: Vec<String> = ledger.entries.iter().map(|e| e.node_key.clone()).collect();
    assert_eq!(noted, keys.iter().map(|k| fingerprint(k)).collect::<Vec<_>>());

    // Every two rounds, when the app says so.
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |c| {
        c.federated_min_new_examples = 0;
        c.federated_node_key_rounds = 2;
    });
    let mut keys = Vec::new();
    for round in 1..=3 {
        let l = link(1.0, 0.01, round);
        let log = l.log.clone();
        h.participate_using(l, good(), quick()).unwrap();
        keys.push(activation_key(&log));
    }
    assert!(keys[0] == keys[1] && keys[1] != keys[2], "two rounds a key");
}

#[test]
fn bad_federated_settings_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    type Tune = Box<dyn Fn(&mut HearthConfig)>;
    let cases: Vec<(&str, Tune)> = vec![
        ("federated_epsilon_budget", Box::new(|c| c.federated_epsilon_budget = 0.0)),
        ("federated_epsilon_budget", Box::new(|c| c.federated_epsilon_budget = f64::NAN)),
        ("federated_delta", Box::new(|c| c.federated_delta = 0.5)),
        ("federated_min_interval_hours", Box::new(|c| c.federated_min_interval_hours = 9000)),
        ("federated_round_wait_seconds", Box::new(|c| c.federated_round_wait_seconds = 0)),
        ("federated_secure_min_cohort", Box::new(|c| c.federated_secure_min_cohort = 2)),
        // At 1/2 or below, a coordinator could get both shares of a device
        // from honest neighbours.
        ("federated_secure_min_threshold", Box::new(|c| c.federated_secure_min_threshold = 0.5)),
        ("federated_secure_min_threshold", Box::new(|c| c.federated_secure_min_threshold = 1.5)),
        ("federated_secure_min_threshold", Box::new(|c| c.federated_secure_min_threshold = f64::NAN)),
        ("federated_honest_fraction", Box::new(|c| c.federated_honest_fraction = 0.0)),
        ("federated_honest_fraction", Box::new(|c| c.federated_honest_fraction = 1.5)),
        ("federated_honest_fraction", Box::new(|c| c.federated_honest_fraction = f64::NAN)),
    ];
    for (field, tune) in cases {
        let mut config = HearthConfig::new(path);
        tune(&mut config);
        let err = open_with(config, KEY_A).unwrap_err();
        assert!(matches!(&err, HearthError::InvalidInput { field: f, .. } if f == field), "{err:?}");
    }
    let mut config = HearthConfig::new(path);
    config.federated_epsilon_budget = f64::INFINITY;
    open_with(config, KEY_A).expect("an infinite budget is no budget");
}

/// The kinds of the objects pushed.
fn pushed_kinds(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.ends_with("/push-object"))
        .map(|(_, body)| {
            let req = proto::PushObjectRequest::decode(body.as_slice()).unwrap();
            objects::parse(&req.object_content).unwrap().kind.to_string()
        })
        .collect()
}

fn asking_for_segments(h: &Hearth, round: i64, labels: Option<String>) -> FakeLink {
    let mut cfg = config(1.0, 1.1, 0.01, round);
    let labels = labels.unwrap_or_else(|| h.segment_config().unwrap().report_labels().join(","));
    cfg.push(("segment-report-labels".into(), ConfigValue::String(labels)));
    FakeLink::with_config(model_arrays(), cfg)
}

#[test]
fn a_segment_report_goes_with_the_update_only_with_consent_and_is_in_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let (h, secrets) = device(dir.path(), |c| c.federated_min_new_examples = 0);
    let report_epsilon = h.segment_config().unwrap().report_epsilon;

    // Asked, but the user has not agreed: the update alone.
    let l = asking_for_segments(&h, 1, None);
    let log = l.log.clone();
    let ParticipationOutcome::Contributed { entry } = h.participate_using(l, good(), quick()).unwrap() else {
        panic!()
    };
    assert_eq!(entry.segment_report_epsilon, 0.0);
    assert!(!pushed_kinds(&log).contains(&"ConfigRecord".to_string()));

    // Agreed: the randomized report goes too, and its epsilon is charged.
    h.set_segment_reports_opt_in(true).unwrap();
    let l = asking_for_segments(&h, 2, None);
    let log = l.log.clone();
    let ParticipationOutcome::Contributed { entry } = h.participate_using(l, good(), quick()).unwrap() else {
        panic!()
    };
    assert_eq!(entry.segment_report_epsilon, report_epsilon);
    assert!(pushed_kinds(&log).contains(&"ConfigRecord".to_string()));
    for (path, body) in log.lock().unwrap().iter() {
        for s in secrets.iter().map(String::as_bytes).chain([b"drama".as_slice(), b"comedy", b"kids"]) {
            assert!(!contains(body, s), "{} in a {path} request", String::from_utf8_lossy(s));
        }
    }
    let ledger = h.privacy_ledger().unwrap();
    let mut accountant = RdpAccountant::new();
    accountant.compose(1.1, 0.01, 2).unwrap();
    let expected = accountant.epsilon(1e-6).unwrap() + report_epsilon;
    assert!((ledger.epsilon_spent - expected).abs() < 1e-9, "{} vs {expected}", ledger.epsilon_spent);
    assert_eq!(entry.epsilon_total, ledger.epsilon_spent);

    // Unchanged memberships: the same report again, nothing more spent.
    let ParticipationOutcome::Contributed { entry } =
        h.participate_using(asking_for_segments(&h, 3, None), good(), quick()).unwrap()
    else {
        panic!()
    };
    assert_eq!(entry.segment_report_epsilon, 0.0);

    // Labels this device does not report: no report.
    let l = asking_for_segments(&h, 4, Some("lifecycle.new,something.else".into()));
    let log = l.log.clone();
    let ParticipationOutcome::Contributed { entry } = h.participate_using(l, good(), quick()).unwrap() else {
        panic!()
    };
    assert_eq!(entry.segment_report_epsilon, 0.0);
    assert!(!pushed_kinds(&log).contains(&"ConfigRecord".to_string()));
}

/// A SuperLink with no round to offer: the device polls until its wait ends.
struct NoRounds;

impl Transport for NoRounds {
    fn post(&self, path: &str, _: &[(String, String)], _: &[u8], _: Duration) -> Result<Vec<u8>, TransportError> {
        Ok(match path.strip_prefix("/v1/fleet/").unwrap() {
            "activate-node" => proto::ActivateNodeResponse { node_id: 42 }.encode_to_vec(),
            "send-node-heartbeat" => proto::SendNodeHeartbeatResponse { success: true }.encode_to_vec(),
            _ => Vec::new(),
        })
    }
}

#[test]
fn the_app_can_cancel_a_round_and_the_next_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |c| c.federated_round_wait_seconds = 60);
    let start = Instant::now();
    let err = std::thread::scope(|s| {
        let round = s.spawn(|| h.participate_using(NoRounds, good(), quick()));
        std::thread::sleep(Duration::from_millis(300));
        h.cancel_participation();
        round.join().unwrap().unwrap_err()
    });
    assert!(matches!(err, HearthError::Federated { kind: FederatedFailure::Cancelled, .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}: not the 60 s wait", start.elapsed());
    // A cancel between rounds does not stop the next one.
    h.cancel_participation();
    let outcome = h.participate_using(link(1.0, 0.01, 1), good(), quick()).unwrap();
    assert!(matches!(outcome, ParticipationOutcome::Contributed { .. }), "{outcome:?}");
}

/// Hex of bytes.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The built-in model with `weights` (manifest order), signed by `key` as
/// `version`: the round's arrays and its config entries.
fn signed_global(
    weights: &[f32],
    version: u64,
    key: &ring::signature::Ed25519KeyPair,
) -> (Vec<(String, F32Array)>, Vec<(String, ConfigValue)>) {
    use ring::digest::{SHA256, digest};
    let package = ModelPackage::builtin();
    let bytes: Vec<u8> = weights.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut manifest: serde_json::Value = serde_json::from_slice(&package.manifest).unwrap();
    manifest["version"] = version.into();
    manifest["files"]["weights"]["bytes"] = bytes.len().into();
    manifest["files"]["weights"]["sha256"] = hex(digest(&SHA256, &bytes).as_ref()).into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let signature = key.sign(&manifest).as_ref().to_vec();
    let mut arrays = model_arrays();
    let mut at = 0;
    for (_, a) in arrays.iter_mut() {
        a.data = weights[at..at + a.data.len()].to_vec();
        at += a.data.len();
    }
    let config = vec![
        ("model-manifest".into(), ConfigValue::Bytes(manifest)),
        ("model-signature".into(), ConfigValue::Bytes(signature)),
    ];
    (arrays, config)
}

#[test]
fn a_round_without_noise_is_declined_whatever_the_budget_and_the_ledger_stays_readable() {
    // Before: z = 0 (or so small that epsilon overflows) to a device with an
    // infinite budget wrote epsilon = inf into the ledger as JSON null, and
    // from then on the ledger, the export and every round failed.
    for z in [0.0, 1e-300, -1.0, f64::NAN, f64::INFINITY] {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = device(dir.path(), |c| c.federated_epsilon_budget = f64::INFINITY);
        let l = link(z, 0.01, 1);
        let log = l.log.clone();
        match h.participate_using(l, good(), quick()).unwrap() {
            ParticipationOutcome::Declined { reason: DeclineReason::NoPrivacyGuarantee { .. } } => {}
            other => panic!("z = {z}: {other:?}"),
        }
        assert_eq!(pushed_arrays(&log), 0, "z = {z}: nothing uploaded");
        assert!(h.privacy_ledger().unwrap().entries.is_empty());
        h.export_json().unwrap();
        // The next round with noise goes ahead as usual.
        match h.participate_using(link(1.0, 0.01, 2), good(), quick()).unwrap() {
            ParticipationOutcome::Contributed { entry } => assert!(entry.epsilon_total.is_finite()),
            other => panic!("z = {z}, then 1: {other:?}"),
        }
        let ledger = h.privacy_ledger().unwrap();
        assert_eq!(ledger.entries.len(), 1);
        assert!(ledger.epsilon_spent.is_finite());
        let doc: serde_json::Value = serde_json::from_str(&h.export_json().unwrap()).unwrap();
        assert_eq!(doc["privacy_ledger"].as_array().unwrap().len(), 1);
    }
    // A sampling rate out of (0, 1] is no guarantee either.
    for q in [0.0, 1.5, f64::NAN] {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = device(dir.path(), |c| c.federated_epsilon_budget = f64::INFINITY);
        let got = h.participate_using(link(1.0, q, 1), good(), quick()).unwrap();
        assert!(
            matches!(got, ParticipationOutcome::Declined { reason: DeclineReason::NoPrivacyGuarantee { .. } }),
            "q = {q}: {got:?}"
        );
    }
}

#[test]
fn a_global_model_the_noise_wrecked_is_reported_and_the_last_good_one_kept() {
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap();
    use ring::signature::KeyPair;
    let trusted = hex(key.public_key().as_ref());
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |c| {
        c.trusted_model_keys = vec![trusted.clone()];
        c.federated_min_new_examples = 0;
    });
    let builtin: Vec<f32> = model_arrays().into_iter().flat_map(|(_, a)| a.data).collect();

    // Round 1: a sound global model (version 1000) is installed after training.
    let (arrays, extra) = signed_global(&builtin, 1000, &key);
    let mut cfg = config(1.0, 1.0, 0.01, 1);
    cfg.extend(extra);
    let got = h.participate_using(FakeLink::with_config(arrays, cfg), good(), quick()).unwrap();
    assert!(matches!(got, ParticipationOutcome::Contributed { .. }), "{got:?}");
    assert_eq!(h.model_info().unwrap().unwrap().version, 1000);

    // Round 2: what noise of z C / n = 0.5 on every coordinate (2 devices,
    // z = 1, C = 1) makes of it: it still scores (the probe passes), but
    // local training diverges from it.
    let wrecked: Vec<f32> = builtin.iter().enumerate().map(|(i, w)| w + if i % 2 == 0 { 0.5 } else { -0.5 }).collect();
    let (arrays, extra) = signed_global(&wrecked, 1001, &key);
    let mut cfg = config(1.0, 1.0, 0.01, 2);
    cfg.extend(extra);
    let l = FakeLink::with_config(arrays, cfg);
    let log = l.log.clone();
    match h.participate_using(l, good(), quick()).unwrap_err() {
        HearthError::Federated { kind: FederatedFailure::Update, reason } => {
            assert!(reason.contains("global model is unusable"), "{reason}")
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(pushed_arrays(&log), 0, "no update from a wrecked model");
    assert_eq!(error_replies(&log).len(), 1, "the coordinator hears that training failed");
    // The last good model still ranks, and is still the one on disk.
    assert_eq!(h.model_info().unwrap().unwrap().version, 1000);
    drop(h);
    let mut config = HearthConfig::new(dir.path().to_str().unwrap());
    config.trusted_model_keys = vec![trusted];
    let h = open_with(config, KEY_A).unwrap();
    assert_eq!(h.model_info().unwrap().unwrap().version, 1000);
}

#[test]
fn a_train_message_with_arrays_the_model_does_not_have_is_refused_before_expanding() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |_| {});
    // One array more than the manifest names.
    let mut arrays = model_arrays();
    arrays.push(("extra".into(), F32Array { shape: vec![4], data: vec![0.0; 4] }));
    let l = FakeLink::with_config(arrays, config(1.0, 1.0, 0.01, 1));
    let log = l.log.clone();
    match h.participate_using(l, good(), quick()).unwrap_err() {
        HearthError::InvalidInput { field, .. } if field == "global weights" => {}
        e => panic!("{e:?}"),
    }
    assert_eq!(pushed_arrays(&log), 0);
    // A parameter of another shape.
    let mut arrays = model_arrays();
    let (_, last) = arrays.last_mut().unwrap();
    last.data.push(0.0);
    let n = last.data.len();
    last.shape = vec![n];
    let got = h.participate_using(FakeLink::with_config(arrays, config(1.0, 1.0, 0.01, 1)), good(), quick());
    assert!(matches!(&got, Err(HearthError::InvalidInput { field, .. }) if field == "global weights"), "{got:?}");
    assert!(h.privacy_ledger().unwrap().entries.is_empty());
}

/// An experiment stays on the device: after rows ranked in it and outcomes
/// logged, no request of a round names the experiment, its arms or the
/// items its log holds beyond what the history already hides; and the arm
/// does not follow the node key, which is new every round.
#[test]
fn a_round_says_nothing_of_the_experiments_and_the_arm_outlives_the_node_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (h, secrets) = device(dir.path(), |c| c.federated_min_new_examples = 0);
    let arm = |name: &str, treatment| ExperimentArm { name: name.into(), share: 1.0, treatment };
    let drawn = h
        .define_experiment(Experiment {
            id: "needle-experiment-7c1".into(),
            arms: vec![arm("needle-arm-model", ArmTreatment::Model), arm("needle-arm-popular", ArmTreatment::Fallback)],
        })
        .unwrap();
    let context = RankContext { device: DeviceClass::Tv, local_hour: 21, locale: None };
    let row = h
        .rank_catalog(RankOptions { experiment: Some("needle-experiment-7c1".into()), ..RankOptions::new(context) })
        .unwrap();
    h.log_outcome("needle-experiment-7c1".into(), row.items[0].item_id.clone(), OutcomeKind::Play).unwrap();
    let mut keys = Vec::new();
    for round in 1..=3 {
        let l = link(1.0, 0.01, round);
        let log = l.log.clone();
        let outcome = h.participate_using(l, good(), quick()).unwrap();
        assert!(matches!(outcome, ParticipationOutcome::Contributed { .. }), "{outcome:?}");
        for (path, body) in log.lock().unwrap().iter() {
            for needle in ["needle-experiment-7c1", "needle-arm", "experiment", &drawn] {
                assert!(!contains(body, needle.as_bytes()), "{needle} in a {path} request");
            }
            for s in &secrets {
                assert!(!contains(body, s.as_bytes()), "{s} in a {path} request");
            }
        }
        keys.push(activation_key(&log));
        assert_eq!(h.experiment_arm("needle-experiment-7c1".into()).unwrap(), drawn, "round {round}");
    }
    assert!(keys[0] != keys[1] && keys[1] != keys[2], "a fresh node key each round");
}

/// The release gate's evaluation reads only engagements newer than the
/// last contribution: none right after a round, the new one after it.
#[test]
fn a_device_evaluates_a_candidate_on_engagements_it_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |_| {});
    let builtin = ModelPackage::builtin();
    // Before any round every first engagement is held out: the newest 10.
    let before = h.evaluate_candidate(&builtin).unwrap().expect("an evaluation");
    assert_eq!(before.engagements, HELD_OUT_MAX);
    let e = before.evaluation;
    assert_eq!(e.candidate, e.published, "the same model scores the same");
    for v in [e.candidate, e.published, e.fallback] {
        assert!((0.0..=1.0).contains(&v), "{e:?}");
    }
    let outcome = h.participate_using(link(1.1, 0.01, 1), good(), quick()).unwrap();
    assert!(matches!(outcome, ParticipationOutcome::Contributed { .. }), "{outcome:?}");
    assert_eq!(h.evaluate_candidate(&builtin).unwrap(), None, "everything was in the update");
    // A replay of an item already played is no first engagement; a new item is.
    let now = common_now();
    h.record(event("secret-item-0000", EventKind::Play, now)).unwrap();
    assert_eq!(h.evaluate_candidate(&builtin).unwrap(), None);
    h.record(event("secret-item-0001", EventKind::Play, now + 1)).unwrap();
    let after = h.evaluate_candidate(&builtin).unwrap().expect("an evaluation");
    assert_eq!(after.engagements, 1);
    // Personalization off: the device ranks with no model and says nothing.
    h.set_personalization(false).unwrap();
    assert_eq!(h.evaluate_candidate(&builtin).unwrap(), None);
    h.set_personalization(true).unwrap();
    // A candidate that does not verify is refused as an install would be.
    let mut forged = builtin.clone();
    forged.weights[0] ^= 1;
    assert!(matches!(h.evaluate_candidate(&forged), Err(HearthError::ModelRejected { .. })));
}

/// A round may send its signed global model as a candidate: the device
/// trains from it but keeps ranking with what it had, until a round sends a
/// model as published (what the release gate needs of the device).
#[test]
fn a_candidate_model_is_trained_from_and_never_installed() {
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap();
    use ring::signature::KeyPair;
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = device(dir.path(), |c| {
        c.trusted_model_keys = vec![hex(key.public_key().as_ref())];
        c.federated_min_new_examples = 0;
    });
    let builtin: Vec<f32> = model_arrays().into_iter().flat_map(|(_, a)| a.data).collect();
    let round = |version: u64, n: i64, release: Option<ConfigValue>| {
        let (arrays, extra) = signed_global(&builtin, version, &key);
        let mut cfg = config(1.0, 1.0, 0.01, n);
        cfg.extend(extra);
        cfg.extend(release.map(|r| ("model-release".to_string(), r)));
        FakeLink::with_config(arrays, cfg)
    };
    let candidate = Some(ConfigValue::String("candidate".into()));
    let got = h.participate_using(round(1000, 1, candidate), good(), quick()).unwrap();
    assert!(matches!(got, ParticipationOutcome::Contributed { .. }), "{got:?}");
    assert!(h.model_info().unwrap().unwrap().builtin, "a candidate never ranks");
    let published = Some(ConfigValue::String("published".into()));
    let got = h.participate_using(round(1001, 2, published), good(), quick()).unwrap();
    assert!(matches!(got, ParticipationOutcome::Contributed { .. }), "{got:?}");
    assert_eq!(h.model_info().unwrap().unwrap().version, 1001);
    // Anything else is refused before training, and nothing is uploaded.
    let l = round(1002, 3, Some(ConfigValue::Int(1)));
    let log = l.log.clone();
    match h.participate_using(l, good(), quick()).unwrap_err() {
        HearthError::InvalidInput { field, .. } if field == "model-release" => {}
        e => panic!("{e:?}"),
    }
    assert_eq!(pushed_arrays(&log), 0);
    assert_eq!(h.model_info().unwrap().unwrap().version, 1001);
}

/// A secure round of `task` with 10 devices in process (the Hearth device
/// among nine honest ones that each sum `others`), bounded by `bound`, the
/// masked-input message carrying `content`.
fn metrics_round(
    task: hearth_secagg::wire::Task,
    bound: f64,
    others: &[f32],
    content: Vec<(String, objects::Record)>,
) -> (common::secure_round::SecureRound, hearth_secagg::Quantization) {
    use hearth_secagg::{Quantization, RoundConfig};
    let quantization =
        Quantization { bits: 20, scale: Quantization::largest_scale(20, bound, 10), clip_norm: bound, max_cohort: 10 };
    let round = RoundConfig {
        run_id: 3,
        round: (1 << 32) + 1,
        quantization,
        degree: 40,
        threshold_fraction: 2.0 / 3.0,
        vector_len: others.len(),
        noise: RoundConfig::NO_NOISE,
        sampling_rate: 0.0,
        count_weight: 0.0,
        task,
    };
    (common::secure_round::SecureRound::new(round, 10, others.to_vec(), content), quantization)
}

/// A model-evaluation round (`metrics_round`): the candidate is the
/// built-in model's weights times 1.1, signed as `version`, with the
/// round's `clip` and privacy terms.
fn evaluation_round(
    key: &ring::signature::Ed25519KeyPair,
    version: u64,
    clip: f64,
    z: f64,
) -> (common::secure_round::SecureRound, ModelPackage, hearth_secagg::Quantization) {
    let weights: Vec<f32> = model_arrays().into_iter().flat_map(|(_, a)| a.data).map(|w| w * 1.1).collect();
    let (arrays, extra) = signed_global(&weights, version, key);
    let package = match (&extra[0].1, &extra[1].1) {
        (ConfigValue::Bytes(manifest), ConfigValue::Bytes(signature)) => ModelPackage {
            manifest: manifest.clone(),
            signature: signature.clone(),
            weights: weights.iter().flat_map(|w| w.to_le_bytes()).collect(),
            ..ModelPackage::builtin()
        },
        _ => unreachable!(),
    };
    let mut cfg = config(clip, z, 0.01, 1);
    cfg.extend(extra);
    cfg.push(("model-release".into(), ConfigValue::String("candidate".into())));
    let content = vec![
        ("arrays".to_string(), objects::Record::Arrays(arrays)),
        ("config".to_string(), objects::Record::Config(cfg)),
    ];
    let (round, quantization) =
        metrics_round(hearth_secagg::wire::Task::EvaluateModel, gate_contribution_bound(), &OTHERS, content);
    (round, package, quantization)
}

/// What each honest device of `evaluation_round` sums.
const OTHERS: [f32; GATE_METRICS] = [1.0, 0.5, 0.25, 0.125, 0.0625, 0.140625];

fn gate_device(dir: &std::path::Path, budget: f64) -> (Arc<Hearth>, Vec<String>, ring::signature::Ed25519KeyPair) {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap();
    let (h, secrets) = device(dir, |c| {
        c.trusted_model_keys = vec![hex(key.public_key().as_ref())];
        c.federated_epsilon_budget = budget;
    });
    (h, secrets, key)
}

/// The release gate's evaluation round, end to end on the device: only
/// the masked metrics leave it, the coordinator's sum holds exactly its
/// evaluation of the candidate, the candidate is never installed, and the
/// round is charged like a training round without moving what is held out.
#[test]
fn an_evaluation_round_sends_only_masked_metrics_and_is_charged_like_training() {
    let dir = tempfile::tempdir().unwrap();
    let (h, secrets, key) = gate_device(dir.path(), 10.0);
    let (round, package, quantization) = evaluation_round(&key, 1000, gate_contribution_bound(), 1.0);
    let expected = h.evaluate_candidate(&package).unwrap().expect("20 plays held out");
    assert_eq!(expected.engagements, HELD_OUT_MAX);
    let mut options = quick();
    options.call_timeout = Duration::from_secs(5);
    let outcome = h.participate_using(round.clone(), good(), options).unwrap();
    let ParticipationOutcome::Contributed { entry } = outcome else { panic!("{outcome:?}") };
    assert_eq!(
        (entry.task, entry.aggregation, entry.status),
        (RoundTask::Evaluation, Aggregation::Secure, UploadStatus::Sent)
    );
    assert_eq!(entry.clip_norm, gate_contribution_bound());
    assert_eq!((entry.noise_multiplier, entry.sampling_rate), (1.0, 0.01));
    // The coordinator's sum less the nine honest devices' is this device's
    // evaluation, to the quantization's step.
    let aggregate = round.aggregate().expect("the round finished");
    assert_eq!(aggregate.survivors.len(), 10);
    let sum = aggregate.dequantized(&quantization);
    let own = expected.evaluation.contribution();
    for (i, (s, o)) in sum.iter().zip(own).enumerate() {
        let got = s - 9.0 * f64::from(OTHERS[i]);
        assert!((got - o).abs() <= 10.0 / quantization.scale, "value {i}: {got} for {o}");
    }
    assert_eq!(own[0], 1.0, "the device reported");
    // Nothing of the history in any request; the replies are the four
    // stages' bytes alone.
    let log = round.log.lock().unwrap().clone();
    for (path, body) in &log {
        for s in &secrets {
            assert!(!contains(body, s.as_bytes()), "{s} in a {path} request");
        }
    }
    let replies = common::flower::pushed_replies(&log);
    assert_eq!(replies.len(), 4);
    assert!(replies.iter().all(|c| c.len() == 1 && c[0].0 == "hearth.secagg"), "{replies:?}");
    // Never installed; charged; what was held out still is.
    assert!(h.model_info().unwrap().unwrap().builtin, "a candidate never ranks");
    let ledger = h.privacy_ledger().unwrap();
    assert_eq!(ledger.entries.len(), 1);
    let mut accountant = RdpAccountant::new();
    accountant.compose(1.0, 0.01, 1).unwrap();
    assert!((ledger.epsilon_spent - accountant.epsilon(ledger.delta).unwrap()).abs() < 1e-9);
    assert_eq!(h.evaluate_candidate(&package).unwrap(), Some(expected), "held out as before");
    // And it is not a round taken: a training round of the same number is not declined.
    let got = h.participate_using(link(1.0, 0.01, 1), good(), quick()).unwrap();
    assert!(matches!(got, ParticipationOutcome::Contributed { .. }), "{got:?}");
}

/// Before the device evaluates anything: a round that would take it past
/// its budget is declined and a round whose bound cannot hold a
/// contribution refused; neither is charged, and no masked vector leaves.
#[test]
fn an_evaluation_round_over_budget_or_under_the_bound_is_refused_before_evaluating() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _, key) = gate_device(dir.path(), 0.5);
    let (round, _, _) = evaluation_round(&key, 1000, gate_contribution_bound(), 1.0);
    let outcome = h.participate_using(round.clone(), good(), quick()).unwrap();
    assert!(
        matches!(outcome, ParticipationOutcome::Declined { reason: DeclineReason::OverBudget { .. } }),
        "{outcome:?}"
    );
    assert_eq!(round.reached().0, 2, "refused at the masked-input stage");
    assert!(round.aggregate().is_none());
    assert!(h.privacy_ledger().unwrap().entries.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let (h, _, key) = gate_device(dir.path(), 10.0);
    let (round, _, _) = evaluation_round(&key, 1000, 1.0, 1.0);
    match h.participate_using(round.clone(), good(), quick()) {
        Err(HearthError::Federated { kind: FederatedFailure::Protocol, reason }) => {
            assert!(reason.contains("below the contribution's bound"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(round.aggregate().is_none());
    assert!(h.privacy_ledger().unwrap().entries.is_empty());
}

/// An experiment with two arms, this install in one of them, one row shown
/// and one item of it played.
fn in_an_experiment(h: &Hearth) -> String {
    let arm = |name: &str, treatment| ExperimentArm { name: name.into(), share: 1.0, treatment };
    let drawn = h
        .define_experiment(Experiment {
            id: "home-row.v1".into(),
            arms: vec![arm("model", ArmTreatment::Model), arm("popular", ArmTreatment::Fallback)],
        })
        .unwrap();
    let context = RankContext { device: DeviceClass::Tv, local_hour: 21, locale: None };
    let row =
        h.rank_catalog(RankOptions { experiment: Some("home-row.v1".into()), ..RankOptions::new(context) }).unwrap();
    h.log_outcome("home-row.v1".into(), row.items[2].item_id.clone(), OutcomeKind::Play).unwrap();
    drawn
}

/// An experiment-report round for `arms` (names, in order) with the
/// round's `clip`: no arrays, only the config naming the experiment.
fn report_round(arms: &str, clip: f64) -> (common::secure_round::SecureRound, hearth_secagg::Quantization) {
    let mut cfg = config(clip, 1.0, 0.01, 1);
    cfg.push(("experiment-id".into(), ConfigValue::String("home-row.v1".into())));
    cfg.push(("experiment-arms".into(), ConfigValue::String(arms.into())));
    let others: Vec<f32> = [1.0, 0.25, 0.5, 0.75, 0.125].into_iter().chain([0.0; 5]).collect();
    let content = vec![("config".to_string(), objects::Record::Config(cfg))];
    metrics_round(hearth_secagg::wire::Task::ExperimentReport, experiment_report_bound(), &others, content)
}

/// An experiment's report leaves the device only as its masked share of
/// the per-arm sums: the coordinator's sum less the others' is exactly
/// this install's report in its own arm's place, and the round is charged.
#[test]
fn an_experiment_report_round_sends_only_the_arms_masked_sums_and_is_charged() {
    let dir = tempfile::tempdir().unwrap();
    let (h, secrets, _) = gate_device(dir.path(), 10.0);
    let drawn = in_an_experiment(&h);
    let report = h.experiment_report("home-row.v1".into()).unwrap();
    assert_eq!((report.arm.as_str(), report.exposures), (drawn.as_str(), 1));
    let (round, quantization) = report_round("model,popular", experiment_report_bound());
    let mut options = quick();
    options.call_timeout = Duration::from_secs(5);
    let outcome = h.participate_using(round.clone(), good(), options).unwrap();
    let ParticipationOutcome::Contributed { entry } = outcome else { panic!("{outcome:?}") };
    assert_eq!((entry.task, entry.aggregation), (RoundTask::ExperimentReport, Aggregation::Secure));
    assert_eq!(entry.clip_norm, experiment_report_bound());
    let sum = round.aggregate().expect("the round finished").dequantized(&quantization);
    let others = [1.0, 0.25, 0.5, 0.75, 0.125, 0.0, 0.0, 0.0, 0.0, 0.0];
    let own = report.contribution(2);
    for (i, s) in sum.iter().enumerate() {
        let got = s - 9.0 * others[i];
        assert!((got - own[i]).abs() <= 10.0 / quantization.scale, "value {i}: {got} for {}", own[i]);
    }
    assert_eq!(own[report.arm_index as usize * 5], 1.0, "the device's own arm");
    let log = round.log.lock().unwrap().clone();
    for (path, body) in &log {
        for needle in secrets.iter().map(String::as_str).chain(["home-row.v1", "popular", "model,"]) {
            assert!(!contains(body, needle.as_bytes()), "{needle} in a {path} request");
        }
    }
    let ledger = h.privacy_ledger().unwrap();
    assert_eq!(ledger.entries.iter().map(|e| e.task).collect::<Vec<_>>(), vec![RoundTask::ExperimentReport]);
    assert!(ledger.epsilon_spent > 0.0);
}

/// A round that names other arms than the device's (or another order) is
/// refused, uncharged; so is one whose bound cannot hold a report, and one
/// that would take the device past its budget is declined.
#[test]
fn an_experiment_report_round_for_other_arms_over_budget_or_under_the_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _, _) = gate_device(dir.path(), 10.0);
    in_an_experiment(&h);
    for arms in ["popular,model", "model,other"] {
        let (round, _) = report_round(arms, experiment_report_bound());
        match h.participate_using(round.clone(), good(), quick()) {
            Err(HearthError::InvalidInput { field, .. }) => assert_eq!(field, "experiment-arms"),
            other => panic!("{arms}: {other:?}"),
        }
        assert!(round.aggregate().is_none());
    }
    let (round, _) = report_round("model,popular", 2.0);
    match h.participate_using(round, good(), quick()) {
        Err(HearthError::Federated { kind: FederatedFailure::Protocol, reason }) => {
            assert!(reason.contains("below the contribution's bound"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(h.privacy_ledger().unwrap().entries.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let (h, _, _) = gate_device(dir.path(), 0.5);
    in_an_experiment(&h);
    let (round, _) = report_round("model,popular", experiment_report_bound());
    let outcome = h.participate_using(round.clone(), good(), quick()).unwrap();
    assert!(
        matches!(outcome, ParticipationOutcome::Declined { reason: DeclineReason::OverBudget { .. } }),
        "{outcome:?}"
    );
    assert!(round.aggregate().is_none());
    assert!(h.privacy_ledger().unwrap().entries.is_empty());
}
