//! The release gate against a real SuperLink and Hearth's ServerApp with
//! `release-gate = true` (`#[ignore]`d; tests/federated/run.sh runs it):
//! after each secure training round the devices evaluate the round's model
//! in a model-evaluation round, on an engagement each recorded after it
//! trained (held out), and send only their masked contribution. Each
//! device keeps a test-only record of what it quantized (never sent) so
//! the lane checks the coordinator's sums against the devices; the ledger
//! charges every evaluation; and what the coordinator received reads as
//! noise. The run ends with an experiment-report round: each device's
//! report of the experiment it is in, masked, in its own arm's place.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::flower::*;
use common::superlink::Log;
use common::*;
use hearth_core::federated::objects::{ConfigValue, Record};
use hearth_core::federated::*;
use hearth_core::*;
use hearth_secagg::quantize;
use hearth_secagg::wire::{self, Reply, ReplyBody};

#[test]
#[ignore = "needs a SuperLink and the ServerApp with the release gate: tests/federated/run.sh"]
fn devices_evaluate_each_candidate_and_the_coordinator_reads_only_sums() {
    let link = env("HEARTH_SUPERLINK", "http://127.0.0.1:9092");
    let devices: usize = env("HEARTH_DEVICES", "10").parse().unwrap();
    let rounds: usize = env("HEARTH_ROUNDS", "2").parse().unwrap();
    let trusted = env("HEARTH_COORDINATOR_PUBKEY", "");
    let witness_dir = env("HEARTH_WITNESS_DIR", "");
    let root = tempfile::tempdir().unwrap();
    let witness: Arc<Mutex<Vec<SecureWitness>>> = Arc::default();
    let started = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..devices)
            .map(|n| {
                let (link, trusted, root, witness) = (&link, &trusted, root.path(), &witness);
                s.spawn(move || {
                    let (h, mut secrets) = device(&root.join(format!("d{n}")), n, trusted);
                    // An experiment this install is in: one row shown in its
                    // arm, one item of it played.
                    let arm = |name: &str, treatment| ExperimentArm { name: name.into(), share: 1.0, treatment };
                    let arms = vec![arm("model", ArmTreatment::Model), arm("popular", ArmTreatment::Fallback)];
                    h.define_experiment(Experiment { id: "home-row.v1".into(), arms }).unwrap();
                    let context = RankContext { device: DeviceClass::Tv, local_hour: 21, locale: None };
                    let options = RankOptions { experiment: Some("home-row.v1".into()), ..RankOptions::new(context) };
                    let row = h.rank_catalog(options).unwrap();
                    h.log_outcome("home-row.v1".into(), row.items[n % 5].item_id.clone(), OutcomeKind::Play).unwrap();
                    let log: Log = Arc::default();
                    let mut outcomes = Vec::new();
                    let take_part = |outcomes: &mut Vec<_>| {
                        let transport = Recording {
                            inner: HttpTransport::new(link),
                            log: log.clone(),
                            lose_first_response: None,
                            lost: Arc::default(),
                        };
                        let options = ClientOptions {
                            poll_interval: Duration::from_millis(200),
                            attempts: 2,
                            secure_witness: Some(Arc::clone(witness)),
                            ..ClientOptions::default()
                        };
                        outcomes.push(h.participate_using(transport, READY, options));
                    };
                    for round in 1..=rounds {
                        take_part(&mut outcomes);
                        // After training: an unwatched item of the device's
                        // genre, played through (held out of what it sent).
                        let i = ((30 + round) * 6 + n % 6 + 6 * n) % 240;
                        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
                        let id = format!("hearth-item-{i:05}");
                        secrets.extend([id.clone(), format!("The Private Title {i:05}")]);
                        h.record_batch(vec![
                            event(&id, EventKind::Play, now),
                            event(&id, EventKind::Complete, now + 1),
                        ])
                        .unwrap();
                        take_part(&mut outcomes);
                    }
                    // The experiment-report round that ends the run.
                    take_part(&mut outcomes);
                    let ledger = h.privacy_ledger().unwrap();
                    let log = log.lock().unwrap().clone();
                    (outcomes, ledger, log, secrets)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a device thread panicked")).collect()
    });

    let witness = witness.lock().unwrap().clone();
    let mut residues = [0u64; 8];
    let mut evaluations = 0;
    for (n, (outcomes, ledger, log, secrets)) in results.iter().enumerate() {
        // No id, title or genre of the history in any request body.
        for (path, body) in log {
            for s in secrets {
                assert!(!contains(body, s.as_bytes()), "device {n}: {s} in a {path} request");
            }
        }
        // Training and evaluation in turn, each sent masked and charged.
        let tasks: Vec<RoundTask> = outcomes
            .iter()
            .map(|o| match o {
                Ok(ParticipationOutcome::Contributed { entry }) => {
                    assert_eq!(entry.aggregation, Aggregation::Secure, "device {n}");
                    assert_eq!(entry.status, UploadStatus::Sent, "device {n}");
                    assert_eq!(entry.noise_mode, NoiseMode::Distributed, "device {n}");
                    entry.task
                }
                other => panic!("device {n}: {other:?}"),
            })
            .collect();
        let want: Vec<RoundTask> = (0..rounds)
            .flat_map(|_| [RoundTask::Training, RoundTask::Evaluation])
            .chain([RoundTask::ExperimentReport])
            .collect();
        assert_eq!(tasks, want, "device {n}");
        assert_eq!(ledger.entries.iter().map(|e| e.task).collect::<Vec<_>>(), want, "device {n}: ledger");
        for e in ledger.entries.iter().filter(|e| e.task == RoundTask::Evaluation) {
            assert_eq!(e.clip_norm, gate_contribution_bound(), "device {n}");
            assert_eq!(e.dimension as usize, GATE_METRICS, "device {n}");
            assert!(e.norm_after_clip <= gate_contribution_bound());
        }
        let want = accounted_epsilon(&ledger.entries, ledger.delta);
        assert!((ledger.epsilon_spent - want).abs() <= 1e-9 * want, "device {n}: {} vs {want}", ledger.epsilon_spent);

        // The curious coordinator, with every reply this device sent: an
        // evaluation's masked vector is uniform modulo 2^bits like an
        // update's (the top 3 bits of each value, over every device).
        let bits = witness.first().map(|w| w.bits).expect("a witness");
        for content in pushed_replies(log) {
            let (_, Record::Config(values)) = &content[0] else { panic!("device {n}: not a ConfigRecord") };
            let [(_, ConfigValue::Bytes(bytes))] = &values[..] else { panic!("device {n}: not one bytes value") };
            let reply: Reply = wire::decode(bytes, usize::MAX).unwrap();
            let Some(ReplyBody::Masked(masked)) = reply.body else { continue };
            if masked.packed.len() != (GATE_METRICS * bits as usize).div_ceil(8) {
                continue; // an update
            }
            let values = quantize::unpack(&masked.packed, bits, GATE_METRICS).unwrap();
            for v in values {
                residues[(v >> (bits - 3)) as usize] += 1;
            }
            evaluations += 1;
        }
    }
    assert_eq!(evaluations, devices * rounds, "every evaluation reply read");
    // Chi-square over 8 bins, 7 degrees of freedom: the 99.99% point is
    // about 29.9.
    let count: u64 = residues.iter().sum();
    let expected = count as f64 / 8.0;
    let chi2: f64 = residues.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
    println!("evaluation: {evaluations} masked evaluations, {count} values, residues chi-square {chi2:.1} (8 bins)");
    assert!(chi2 < 29.9, "masked evaluations are not uniform: {residues:?}");

    // What each device put in the evaluations' sums, with and without its
    // noise share, for the lane to check the coordinator's sums against.
    let evaluated: Vec<&SecureWitness> = witness.iter().filter(|w| w.quantized.len() == GATE_METRICS).collect();
    assert_eq!(evaluated.len(), devices * rounds);
    // And what each put in the experiment's per-arm sums (two arms).
    let reported: Vec<&SecureWitness> =
        witness.iter().filter(|w| w.quantized.len() == 2 * REPORT_METRICS as usize).collect();
    assert_eq!(reported.len(), devices);
    if !witness_dir.is_empty() {
        let dir = std::path::Path::new(&witness_dir);
        let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let named = evaluated.iter().map(|w| ("e", w)).chain(reported.iter().map(|w| ("x", w)));
        for (kind, w) in named {
            let name = format!("{kind}{}-n{}-b{}", w.round.unwrap_or(0), w.node_id, w.bits);
            std::fs::write(dir.join(format!("{name}.u32")), u32s(&w.noised)).unwrap();
            std::fs::write(dir.join(format!("{name}.clean.u32")), u32s(&w.quantized)).unwrap();
        }
    }
    println!(
        "evaluation: {devices} devices x {rounds} rounds, each followed by an evaluation, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
