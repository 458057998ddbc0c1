//! The Fleet API client: against a fake SuperLink that misbehaves (wrong
//! content hashes, oversized arrays, a server that stalls, updates above the
//! bound), and, `#[ignore]`d by default, whole rounds against a real
//! SuperLink and Hearth's ServerApp (`tests/federated/run.sh` runs those).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::flower::*;
use common::superlink::*;
use common::*;
use hearth_core::federated::objects;
use hearth_core::federated::proto;
use hearth_core::federated::*;
use hearth_core::*;
use prost::Message;

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
        Ok(LocalResult { delta: vec![v * 0.999_99; n], examples: 37, segment_report: None })
    }
}

/// Sum of squares of every ArrayChunk's `.npy` pushed, per push-messages.
fn pushed_norms(log: &[(String, Vec<u8>)]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    let mut last_push: Option<&[u8]> = None;
    let mut objects_seen = std::collections::HashSet::new();
    for (path, body) in log {
        if path.ends_with("/push-messages") {
            // A push retried after its response was lost repeats its body.
            if last_push != Some(body.as_slice()) {
                out.push(0.0);
                objects_seen.clear();
            }
            last_push = Some(body.as_slice());
        } else if path.ends_with("/push-object") {
            let req = proto::PushObjectRequest::decode(body.as_slice()).unwrap();
            if !objects_seen.insert(req.object_id.clone()) {
                continue;
            }
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

#[test]
fn objects_the_coordinator_is_still_uploading_are_waited_for_up_to_the_object_wait() {
    // The ServerApp of a large cohort pushes each message before its
    // objects: a device that pulls early is told "found, not uploaded yet"
    // for seconds. It waits (here 60 answers, polling every 10 ms), beating
    // its heartbeat meanwhile, and takes part.
    let link = FakeLink::new(small_arrays(), 0.5);
    link.uploading.store(60, std::sync::atomic::Ordering::Relaxed);
    let options = ClientOptions { heartbeat_interval: 0.3, ..quick() };
    let mut c = client(link, options);
    assert!(matches!(c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap(), RoundOutcome::Done(_)));
    let paths = c.transport().paths();
    let confirmed = paths.iter().position(|p| p.ends_with("/confirm-message-received")).unwrap();
    assert!(paths[..confirmed].iter().filter(|p| p.ends_with("/pull-object")).count() > 60);
    assert!(paths[..confirmed].iter().any(|p| p.ends_with("/send-node-heartbeat")), "{paths:?}");

    // An object never uploaded is a timeout after the object wait, and
    // nothing is pushed.
    let link = FakeLink::new(small_arrays(), 0.5);
    link.uploading.store(usize::MAX, std::sync::atomic::Ordering::Relaxed);
    let options = ClientOptions { object_wait: Duration::from_millis(300), ..quick() };
    let mut c = client(link, options);
    let start = Instant::now();
    let err = c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap_err();
    assert_eq!(err, FleetError::Timeout);
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert!(!c.transport().paths().iter().any(|p| p.contains("push")));
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
fn a_reply_taken_before_its_retried_push_still_sends_its_objects() {
    // The first push-messages arrives but its answer is lost; by the retry
    // the ServerApp has taken the message, and the SuperLink asks for no
    // object. The device pushes the whole reply without a session id (the
    // first session still waits for it), and nothing more than the reply.
    let mut link = FakeLink::new(small_arrays(), 0.5);
    link.taken_before_retry = true;
    let mut c = client(link, quick());
    let RoundOutcome::Done(report) = c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap() else {
        panic!("no round")
    };
    let log = c.transport().log.lock().unwrap().clone();
    let pushes: Vec<proto::PushObjectRequest> = log
        .iter()
        .filter(|(p, _)| p.ends_with("/push-object"))
        .map(|(_, b)| proto::PushObjectRequest::decode(b.as_slice()).unwrap())
        .collect();
    assert_eq!(log.iter().filter(|(p, _)| p.ends_with("/push-messages")).count(), 2);
    assert!(!pushes.is_empty());
    assert!(pushes.iter().all(|p| p.session_id.is_empty()), "pushed under the lost session");
    let mut ids: Vec<_> = pushes.iter().map(|p| p.object_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), pushes.len(), "each object once");
    let norm = pushed_norms(&log)[0];
    assert!((norm - report.norm).abs() < 1e-4, "{norm} vs {}", report.norm);
    assert!(norm > 0.0);
}

#[test]
fn an_update_above_the_bound_or_of_the_wrong_size_is_never_sent() {
    let mut c = client(FakeLink::new(small_arrays(), 0.5), quick());
    let err = c.participate(Duration::from_secs(1), &mut trainer(0.6)).unwrap_err();
    assert!(matches!(err, FleetError::Update(_)), "{err:?}");
    let mut short = |_: &TrainInstruction| Ok(LocalResult { delta: vec![0.0; 3], examples: 1, segment_report: None });
    let err = c.participate(Duration::from_secs(1), &mut short).unwrap_err();
    assert!(matches!(err, FleetError::Update(_)), "{err:?}");
    // The server hears that the device declined, and nothing else.
    let (kinds, errors) = pushed(&c.transport().log.lock().unwrap());
    assert_eq!(kinds, vec!["Message", "Message"]);
    assert_eq!(errors, vec![Some("the device refused its own update".to_string()); 2]);
}

/// A fake SuperLink whose one message is a secure-aggregation stage.
fn secure_link(body: hearth_secagg::wire::StageBody) -> FakeLink {
    let stage = hearth_secagg::wire::Stage { body: Some(body) }.encode_to_vec();
    FakeLink::with_content(vec![(
        "hearth.secagg".into(),
        objects::Record::Config(vec![("stage".into(), ConfigValue::Bytes(stage))]),
    )])
}

fn setup(cohort: u32, threshold: u32) -> hearth_secagg::wire::Setup {
    hearth_secagg::wire::Setup {
        run_id: 5,
        round: 1,
        bits: 16,
        scale: 100.0,
        clip_norm: 1.0,
        max_cohort: cohort,
        cohort,
        threshold,
        neighbours: (100..100 + cohort as u64 - 1).collect(),
        vector_len: 8,
        noise_multiplier: 0.0,
        sampling_rate: 0.0,
        count_weight: 0.0,
        task: 0,
    }
}

#[test]
fn a_secure_round_below_the_devices_policy_is_refused_and_nothing_is_sent() {
    use hearth_secagg::wire::StageBody;
    // A cohort of 3 (the policy asks for 10); a threshold of 2 of 9
    // neighbours (below 2/3).
    for (stage, why) in [(setup(3, 2), "3 devices"), (setup(10, 2), "threshold")] {
        let mut c = client(secure_link(StageBody::Setup(stage)), quick());
        let err = c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap_err();
        assert!(matches!(&err, FleetError::Refused(r) if r.contains(why)), "{err:?}");
        let log = c.transport().log.lock().unwrap().clone();
        let (kinds, errors) = pushed(&log);
        // One error reply of a fixed reason, and no key, share or update.
        assert_eq!(kinds, vec!["Message"]);
        assert_eq!(errors, vec![Some("the device refused a stage of secure aggregation".to_string())]);
    }
    // The same terms within a policy the app lowered are taken: the device
    // answers setup with its keys (and then waits for the next stage).
    let policy = DevicePolicy { min_cohort: 3, ..DevicePolicy::default() };
    let mut c = client(secure_link(StageBody::Setup(setup(3, 2))), ClientOptions { secure: policy, ..quick() });
    let _ = c.participate(Duration::from_millis(300), &mut trainer(0.5));
    let (kinds, errors) = pushed(&c.transport().log.lock().unwrap());
    assert_eq!(errors.first(), Some(&None), "the keys went as a reply, not an error");
    assert!(kinds.contains(&"ConfigRecord".to_string()), "{kinds:?}");
}

#[test]
fn a_secure_round_that_does_not_begin_with_setup_is_refused() {
    use hearth_secagg::wire::{StageBody, Unmask};
    let unmask = Unmask { survivors: vec![1, 2, 3], dropped: vec![4] };
    let mut c = client(secure_link(StageBody::Unmask(unmask)), quick());
    let err = c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap_err();
    assert!(matches!(&err, FleetError::Protocol(_)), "{err:?}");
    let (kinds, errors) = pushed(&c.transport().log.lock().unwrap());
    assert_eq!(kinds, vec!["Message"]);
    assert_eq!(errors, vec![Some("the device refused a stage of secure aggregation".to_string())]);
    // Bytes that are not a stage at all.
    let link = FakeLink::with_content(vec![(
        "hearth.secagg".into(),
        objects::Record::Config(vec![("stage".into(), ConfigValue::Bytes(vec![0xff; 9]))]),
    )]);
    let mut c = client(link, quick());
    assert!(matches!(c.participate(Duration::from_secs(1), &mut trainer(0.5)), Err(FleetError::Protocol(_))));
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

#[test]
#[ignore = "needs a SuperLink and the ServerApp: tests/federated/run.sh"]
fn devices_take_part_in_rounds_against_a_superlink() {
    let link = env("HEARTH_SUPERLINK", "http://127.0.0.1:9092");
    let devices: usize = env("HEARTH_DEVICES", "3").parse().unwrap();
    let rounds: usize = env("HEARTH_ROUNDS", "3").parse().unwrap();
    let trusted = env("HEARTH_COORDINATOR_PUBKEY", "");
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..devices)
            .map(|n| {
                let (link, trusted, root) = (&link, &trusted, root.path());
                s.spawn(move || {
                    let (h, secrets) = device(&root.join(format!("d{n}")), n, trusted);
                    let log: Log = Arc::default();
                    let lost = Arc::default();
                    // Device 0 loses its first push-messages response, device 1
                    // its first push-object response; both retry (flwr 1.42
                    // takes the same message or object again, and when the
                    // ServerApp took the message before the retry, the device
                    // pushes its objects to the first, lost session).
                    let lose_first_response = [Some("/push-messages"), Some("/push-object")].get(n).copied().flatten();
                    let mut entries = Vec::new();
                    // The product's path, one call per round, as a phone's
                    // background worker would make it.
                    for round in 1..=rounds {
                        let transport = Recording {
                            inner: HttpTransport::new(link),
                            log: log.clone(),
                            lose_first_response,
                            lost: Arc::clone(&lost),
                        };
                        let options =
                            ClientOptions { poll_interval: Duration::from_millis(200), ..ClientOptions::default() };
                        match h.participate_using(transport, READY, options) {
                            Ok(ParticipationOutcome::Contributed { entry }) => entries.push(entry),
                            other => panic!("device {n}, round {round}: {other:?}"),
                        }
                    }
                    let ledger = h.privacy_ledger().unwrap();
                    let log = log.lock().unwrap().clone();
                    (entries, ledger, secrets, log)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a device thread panicked")).collect()
    });
    let secrets: Vec<String> = results.iter().flat_map(|(_, _, s, _)| s.clone()).collect();
    let (mut requests, mut bytes) = (0, 0);
    for (n, (entries, ledger, _, log)) in results.iter().enumerate() {
        assert_eq!(entries.len(), rounds);
        let norms = pushed_norms(log);
        assert_eq!(norms.len(), rounds, "device {n}: one reply per round");
        for (e, norm) in entries.iter().zip(&norms) {
            assert!(*norm <= e.clip_norm, "device {n}: pushed norm {norm} above C = {}", e.clip_norm);
            assert!(*norm > 0.0);
            assert!((norm - e.norm_after_clip).abs() < 1e-4, "device {n}: the ledger's norm is the one sent");
        }
        // The ledger: every round, with the terms the coordinator announced,
        // and the epsilon the accountant gives for them.
        assert_eq!(&ledger.entries, entries);
        let mut accountant = hearth_core::federated::accountant::RdpAccountant::new();
        for e in entries {
            assert_eq!(e.status, UploadStatus::Sent);
            accountant.compose(e.noise_multiplier, e.sampling_rate, 1).unwrap();
        }
        // A segment report went with the first update; the same one (its
        // memberships unchanged) with the next, spending nothing more.
        assert!(entries[0].segment_report_epsilon > 0.0, "device {n}: no segment report in round 1");
        assert!(entries[1..].iter().all(|e| e.segment_report_epsilon == 0.0));
        let local: f64 = entries.iter().map(|e| e.segment_report_epsilon).sum();
        assert_eq!(ledger.epsilon_spent, accountant.epsilon(ledger.delta).unwrap() + local);
        for (path, body) in log.iter().filter(|(path, _)| !path.ends_with(" (reply)")) {
            for s in &secrets {
                assert!(!contains(body, s.as_bytes()), "device {n}: a history item is in a {path} request");
            }
            requests += 1;
            bytes += body.len();
        }
        // What the coordinator reads from this device's plain uploads, with
        // the public catalog and the manifest's hashing: the rows of
        // emb_history that are not zero are the rows of the items watched.
        // The baseline secure aggregation removes (tests/secure_rounds.rs).
        for content in pushed_replies(log) {
            let Some((_, objects::Record::Arrays(arrays))) = content.iter().find(|(name, _)| name == "arrays") else {
                panic!("device {n}: a plain reply without arrays");
            };
            let (_, emb) = arrays.iter().find(|(name, _)| name == "emb_history").unwrap();
            let touched =
                emb.data.chunks(16).enumerate().filter(|(_, row)| row.iter().any(|x| *x != 0.0)).map(|(i, _)| i);
            let (tpr, fpr) = history_read(&touched.collect(), n);
            println!("device {n}: plain upload read as a history: true positives {tpr:.3}, false positives {fpr:.3}");
            assert!(tpr >= 0.9 && fpr <= 0.05, "device {n}: the plain baseline reads {tpr} / {fpr}");
        }
        let rounds_seen: Vec<_> = entries.iter().map(|e| e.round).collect();
        println!(
            "device {n}: rounds {rounds_seen:?}, norms {norms:.4?}, sent {} B, epsilon {:.3} (segment report {:.2}; z {}, q {}, delta {:e})",
            entries.iter().map(|e| e.bytes_sent).sum::<u64>(),
            ledger.epsilon_spent,
            local,
            entries[0].noise_multiplier,
            entries[0].sampling_rate,
            ledger.delta
        );
    }
    println!(
        "{devices} devices x {rounds} rounds in {:.1} s; {requests} requests, {bytes} bytes checked for {} history strings",
        started.elapsed().as_secs_f64(),
        secrets.len()
    );
}

/// The 1-based rank of each device's held-out item in its home row (the
/// whole catalog, watched items excluded).
fn held_out_ranks(root: &std::path::Path, devices: usize, trusted: &str, package: Option<&ModelPackage>) -> Vec<usize> {
    (0..devices)
        .map(|n| {
            let dir = root.join(format!("e{n}"));
            let (h, _) = device(&dir, n, trusted);
            if let Some(p) = package {
                h.install_model(p.clone()).unwrap();
            }
            let context = RankContext { device: DeviceClass::Tv, local_hour: 21, locale: Some("en-GB".into()) };
            let options = RankOptions { limit: 240, ..RankOptions::new(context) };
            let result = h.rank_catalog(options).unwrap();
            assert!(result.personalized);
            let target = held_out(n);
            let rank = result.items.iter().position(|i| i.item_id == target).expect("the held-out item is ranked");
            h.close().unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            rank + 1
        })
        .collect()
}

#[test]
#[ignore = "needs the coordinator's final weights: tests/federated/run.sh"]
fn the_global_model_ranks_held_out_items_better_than_the_initial_one() {
    use ring::signature::Ed25519KeyPair;
    let devices: usize = env("HEARTH_DEVICES", "3").parse().unwrap();
    let weights = std::fs::read(env("HEARTH_GLOBAL_WEIGHTS", "")).expect("HEARTH_GLOBAL_WEIGHTS");
    let key = std::fs::read(env("HEARTH_COORDINATOR_KEY", "")).expect("HEARTH_COORDINATOR_KEY");
    let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key).expect("an Ed25519 PKCS#8 key");
    let trusted = env("HEARTH_COORDINATOR_PUBKEY", "");
    // The coordinator's final model, packaged as its next round would send it.
    let base = ModelPackage::builtin();
    let mut manifest: serde_json::Value = serde_json::from_slice(&base.manifest).unwrap();
    manifest["version"] = (manifest["version"].as_u64().unwrap() + 1000).into();
    manifest["files"]["weights"]["bytes"] = weights.len().into();
    let digest = ring::digest::digest(&ring::digest::SHA256, &weights);
    manifest["files"]["weights"]["sha256"] =
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>().into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let signature = key.sign(&manifest).as_ref().to_vec();
    let global = ModelPackage { manifest, signature, weights, ..base };

    let root = tempfile::tempdir().unwrap();
    let before = held_out_ranks(root.path(), devices, &trusted, None);
    let after = held_out_ranks(root.path(), devices, &trusted, Some(&global));
    let mean = |r: &[usize]| r.iter().sum::<usize>() as f64 / r.len() as f64;
    let mrr = |r: &[usize]| r.iter().map(|x| 1.0 / *x as f64).sum::<f64>() / r.len() as f64;
    println!("held-out rank per device, initial model: {before:?}");
    println!("held-out rank per device, global model:  {after:?}");
    println!(
        "mean rank {:.1} -> {:.1} of 210; MRR {:.4} -> {:.4}",
        mean(&before),
        mean(&after),
        mrr(&before),
        mrr(&after)
    );
    assert!(mean(&after) < mean(&before), "the global model ranks held-out items better");
}

/// A SuperLink that answers the first `throttled` calls with 503 and a
/// `Retry-After`, and logs when each call came.
struct Throttling {
    link: FakeLink,
    throttled: std::sync::Mutex<u32>,
    retry_after: Duration,
    calls: std::sync::Mutex<Vec<Instant>>,
}

impl Transport for Throttling {
    fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        self.calls.lock().unwrap().push(Instant::now());
        let mut left = self.throttled.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return Err(TransportError::Throttled { status: 503, retry_after: self.retry_after });
        }
        drop(left);
        self.link.post(path, headers, body, timeout)
    }
}

fn throttling(retry_after: Duration) -> Throttling {
    Throttling {
        link: FakeLink::new(small_arrays(), 0.5),
        throttled: std::sync::Mutex::new(1),
        retry_after,
        calls: Default::default(),
    }
}

#[test]
fn retry_after_is_honoured_within_the_call_bound() {
    // quick(): three tries of 200 ms, backoff 20 then 40 ms: a bound of 660 ms.
    let mut c = FleetClient::new(throttling(Duration::from_millis(300)), NodeKey::generate().unwrap(), quick());
    assert!(matches!(c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap(), RoundOutcome::Done(_)));
    let calls = c.transport().calls.lock().unwrap().clone();
    let gap = calls[1] - calls[0];
    assert!(gap >= Duration::from_millis(300), "the next try came after {gap:?}, not the 300 ms asked");

    // A pause the bound cannot hold: the call fails at once, without coming
    // back early.
    let options = quick();
    let mut c = FleetClient::new(throttling(Duration::from_secs(30)), NodeKey::generate().unwrap(), options.clone());
    let start = Instant::now();
    let err = c.participate(Duration::from_secs(1), &mut trainer(0.5)).unwrap_err();
    assert_eq!(err, FleetError::Http(503));
    assert!(start.elapsed() < options.call_bound(), "{:?}", start.elapsed());
    assert_eq!(c.transport().calls.lock().unwrap().len(), 1, "one try, no retry before the time asked");
}

#[test]
fn retry_after_is_read_in_seconds_and_dates_are_left_to_the_backoff() {
    use hearth_core::federated::fleet::retry_after;
    assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
    assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
    assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    assert_eq!(retry_after("-5"), None);
    assert_eq!(retry_after(""), None);
    assert_eq!(retry_after("99999999999999999999999"), Some(Duration::from_secs(86_400)));
}
