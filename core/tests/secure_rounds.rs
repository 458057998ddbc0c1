//! Secure-aggregation rounds against a real SuperLink and Hearth's
//! ServerApp in secure mode (`#[ignore]`d; tests/federated/run.sh runs it):
//! devices drop out at each stage in different rounds; every device's
//! quantized update is kept in a test-only record (never sent) so the lane
//! checks the coordinator's sum against the devices, not the coordinator;
//! and the curious coordinator's attack on what it received, which reads a
//! plain upload's history (tests/fleet.rs), reads nothing here.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::flower::*;
use common::superlink::Log;
use hearth_core::federated::objects::{ConfigValue, Record};
use hearth_core::federated::proto;
use hearth_core::federated::*;
use hearth_core::*;
use hearth_secagg::wire::{self, Reply, ReplyBody};
use hearth_secagg::{Quantization, quantize};
use prost::Message;

/// (round, device, replies before it drops): one drop at each stage, in
/// different rounds (with 10 devices, a threshold of 6 of 9 neighbours
/// leaves room for two a round).
const DROPS: [(usize, usize, usize); 4] = [(1, 2, 1), (2, 3, 2), (3, 4, 3), (3, 5, 1)];

#[test]
#[ignore = "needs a SuperLink and the ServerApp in secure mode: tests/federated/run.sh"]
fn devices_take_part_in_secure_rounds_and_the_coordinator_reads_nothing() {
    let link = env("HEARTH_SUPERLINK", "http://127.0.0.1:9092");
    let devices: usize = env("HEARTH_DEVICES", "10").parse().unwrap();
    let rounds: usize = env("HEARTH_ROUNDS", "3").parse().unwrap();
    let trusted = env("HEARTH_COORDINATOR_PUBKEY", "");
    let witness_dir = env("HEARTH_WITNESS_DIR", "");
    // The ServerApp's noise-mode: the ledgers must say the same.
    let distributed = env("HEARTH_NOISE_MODE", "central") == "distributed";
    // And its device-sampling-rate: each device's own coin.
    let coin: f64 = env("HEARTH_DEVICE_SAMPLING_RATE", "1.0").parse().unwrap();
    // And its adaptive-clip-quantile: each device's bit rides as one more
    // value after its update.
    let count = usize::from(env("HEARTH_ADAPTIVE_CLIP", "0") == "1");
    let root = tempfile::tempdir().unwrap();
    let witness: Arc<Mutex<Vec<SecureWitness>>> = Arc::default();
    let started = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..devices)
            .map(|n| {
                let (link, trusted, root, witness) = (&link, &trusted, root.path(), &witness);
                s.spawn(move || {
                    let (h, _) = device(&root.join(format!("d{n}")), n, trusted);
                    let log: Log = Arc::default();
                    let mut outcomes = Vec::new();
                    for round in 1..=rounds {
                        let after = DROPS.iter().find(|(r, d, _)| *r == round && *d == n).map(|(_, _, a)| *a);
                        let recording = Recording {
                            inner: HttpTransport::new(link),
                            log: log.clone(),
                            lose_first_response: None,
                            lost: Arc::default(),
                        };
                        let transport = Dropping::new(recording, after);
                        let options = ClientOptions {
                            poll_interval: Duration::from_millis(200),
                            attempts: 2,
                            secure_witness: Some(Arc::clone(witness)),
                            ..ClientOptions::default()
                        };
                        let outcome = h.participate_using(transport, READY, options);
                        outcomes.push((round, after, outcome));
                        if after.is_some() {
                            // The app comes back later, once the coordinator
                            // has moved on (a stage message of the round it
                            // left would be refused, as it should).
                            std::thread::sleep(Duration::from_secs(15));
                        }
                    }
                    let ledger = h.privacy_ledger().unwrap();
                    let log = log.lock().unwrap().clone();
                    (outcomes, ledger, log)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a device thread panicked")).collect()
    });

    let (masked_offset, emb_len) = parameter_span("emb_history");
    let total_len: usize = parameter_span("emb_item").0 + parameter_span("emb_item").1 + count;
    let witness = witness.lock().unwrap().clone();
    let mut residues = vec![0u64; 64];
    // Rounds whose coin left the update out, and kept it.
    let mut kept = [0usize; 2];
    let mut uploads = 0;
    for (n, (outcomes, ledger, log)) in results.iter().enumerate() {
        for (round, after, outcome) in outcomes {
            match (after, outcome) {
                (None, Ok(ParticipationOutcome::Contributed { entry })) => {
                    assert_eq!(entry.aggregation, Aggregation::Secure, "device {n}, round {round}");
                    assert_eq!(entry.status, UploadStatus::Sent);
                    assert_eq!(entry.segment_report_epsilon, 0.0, "no segment report goes with a masked update");
                    if distributed {
                        assert_eq!(entry.noise_mode, NoiseMode::Distributed, "device {n}, round {round}");
                        assert_eq!((entry.cohort, entry.sampling_rate), (devices as u32, coin));
                        assert_eq!(entry.included.is_some(), coin < 1.0, "device {n}, round {round}");
                        kept[usize::from(entry.included == Some(true))] += 1;
                        assert!((entry.honest_fraction - 2.0 / 3.0).abs() < 1e-12);
                        let honest = (2.0 * devices as f64 / 3.0).ceil();
                        let want = entry.noise_multiplier / honest.sqrt();
                        assert!((entry.noise_share / want - 1.0).abs() < 1e-6, "{} vs {want}", entry.noise_share);
                    } else {
                        assert_eq!(entry.noise_mode, NoiseMode::Central);
                    }
                }
                (Some(_), Err(HearthError::Federated { kind, .. })) => {
                    assert!(matches!(kind, FederatedFailure::Network | FederatedFailure::Timeout), "{kind:?}");
                }
                (after, other) => panic!("device {n}, round {round} (drop after {after:?}): {other:?}"),
            }
        }
        // A device that dropped after sending its masked vector was
        // charged for it (it may be in the sum); the others were not.
        let charged: Vec<u64> = ledger.entries.iter().filter_map(|e| e.round).collect();
        let expected: Vec<u64> = outcomes
            .iter()
            .filter(|(_, after, _)| after.is_none_or(|a| a >= 3))
            .map(|(round, _, _)| *round as u64)
            .collect();
        assert_eq!(charged, expected, "device {n}: ledger rounds");
        // Unlinkable rounds: a fresh node key each round, and nothing of
        // the device's clock or training time in what it sent.
        let keys: BTreeSet<Vec<u8>> = log
            .iter()
            .filter(|(p, _)| p.ends_with("/activate-node"))
            .map(|(_, b)| proto::ActivateNodeRequest::decode(b.as_slice()).unwrap().public_key)
            .collect();
        assert_eq!(keys.len(), rounds, "device {n}: one node key per round");
        let fingerprints: BTreeSet<&str> = ledger.entries.iter().map(|e| e.node_key.as_str()).collect();
        assert_eq!(fingerprints.len(), ledger.entries.len(), "device {n}: the ledger names a key per round");
        let mut sent: std::collections::HashMap<String, (f64, f64)> = std::collections::HashMap::new();
        for (_, body) in log.iter().filter(|(p, _)| p.ends_with("/pull-messages (reply)")) {
            for m in proto::PullMessagesResponse::decode(body.as_slice()).unwrap().messages_list {
                let meta = m.metadata.unwrap();
                sent.insert(meta.message_id, (meta.created_at, meta.ttl));
            }
        }
        let mut replies = 0;
        for (_, body) in log.iter().filter(|(p, _)| p.ends_with("/push-messages")) {
            let push = proto::PushMessagesRequest::decode(body.as_slice()).unwrap();
            assert!(push.clientapp_runtime_list.iter().all(|&t| t == 0.0), "device {n}: a training time was sent");
            for m in push.messages_list {
                let meta = m.metadata.unwrap();
                let asked = sent.get(&meta.reply_to_message_id).expect("a reply to a message the device pulled");
                assert_eq!((meta.created_at, meta.ttl), *asked, "device {n}: a reply with the device's clock");
                replies += 1;
            }
        }
        assert!(replies > 0);
        for (path, signed) in log.iter().filter(|(p, _)| p.ends_with(" (headers)")) {
            let text = String::from_utf8_lossy(signed);
            let at = text.find("0.000000+00:00");
            assert!(at.is_some(), "device {n}: {path} signed a timestamp finer than 10 s: {text}");
        }
        // The ledger's epsilon is the accountant's over its entries.
        let want = accounted_epsilon(&ledger.entries, ledger.delta);
        assert!((ledger.epsilon_spent - want).abs() <= 1e-9 * want, "device {n}: {} vs {want}", ledger.epsilon_spent);

        // The curious coordinator, with everything this device sent it.
        let bits = witness.first().map(|w| w.bits).expect("a witness");
        let scale = Quantization::largest_scale(bits, 1.0, devices as u32);
        for content in pushed_replies(log) {
            assert_eq!(content.len(), 1, "device {n}: a secure reply has one record");
            let (name, Record::Config(values)) = &content[0] else { panic!("device {n}: not a ConfigRecord") };
            assert_eq!(name, "hearth.secagg");
            let [(key, ConfigValue::Bytes(bytes))] = &values[..] else { panic!("device {n}: not one bytes value") };
            assert_eq!(key, "reply");
            let reply: Reply = wire::decode(bytes, usize::MAX).unwrap();
            let Some(ReplyBody::Masked(masked)) = reply.body else { continue };
            let values = quantize::unpack(&masked.packed, bits, total_len).unwrap();
            // The attack that reads a plain upload: rows of emb_history
            // that are not zero, and (here) also within the clip bound as
            // a real update's are.
            let half = 1i64 << (bits - 1);
            let signed = |v: u32| if v as i64 >= half { v as i64 - (1 << bits) } else { v as i64 };
            let touched: BTreeSet<usize> = values[masked_offset..masked_offset + emb_len]
                .chunks(16)
                .enumerate()
                .filter(|(_, row)| {
                    row.iter().any(|v| *v != 0) && row.iter().all(|v| signed(*v).unsigned_abs() as f64 <= scale + 1.0)
                })
                .map(|(i, _)| i)
                .collect();
            let (tpr, fpr) = history_read(&touched, n);
            assert!((tpr - fpr).abs() < 0.2, "device {n}: the masked upload reads {tpr} / {fpr}");
            // Any row, any bound: with every row of the vector non-zero the
            // read is everything, as good as guessing.
            let any: BTreeSet<usize> = values[masked_offset..masked_offset + emb_len]
                .chunks(16)
                .enumerate()
                .filter(|(_, row)| row.iter().any(|v| *v != 0))
                .map(|(i, _)| i)
                .collect();
            let (tpr_any, fpr_any) = history_read(&any, n);
            assert!((tpr_any - fpr_any).abs() < 0.2, "device {n}: {tpr_any} / {fpr_any}");
            for v in &values {
                residues[(*v >> (bits - 6)) as usize] += 1;
            }
            uploads += 1;
        }
    }
    // The masked vectors' residues are uniform modulo 2^bits (chi-square
    // over the top 6 bits, 63 degrees of freedom: 99.99% point about 112).
    let count: u64 = residues.iter().sum();
    let expected = count as f64 / 64.0;
    let chi2: f64 = residues.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
    println!("secure: {uploads} masked uploads, {count} values, residues chi-square {chi2:.1} (64 bins)");
    assert!(chi2 < 112.0, "masked residues are not uniform: chi-square {chi2}");

    // The devices' own record of what they quantized, for the lane to
    // check the coordinator's sums against.
    // What each summed (its quantized update with its noise share, if
    // any), the update without the noise, and the global parameters each
    // round started from.
    if !witness_dir.is_empty() {
        let dir = std::path::Path::new(&witness_dir);
        let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for w in &witness {
            let name = format!("r{}-n{}-b{}", w.round.unwrap_or(0), w.node_id, w.bits);
            std::fs::write(dir.join(format!("{name}.u32")), u32s(&w.noised)).unwrap();
            std::fs::write(dir.join(format!("{name}.clean.u32")), u32s(&w.quantized)).unwrap();
            let global: Vec<u8> = w.global.iter().flat_map(|x| x.to_le_bytes()).collect();
            std::fs::write(dir.join(format!("g{}.f32", w.round.unwrap_or(0))), global).unwrap();
        }
    }
    println!(
        "secure: {devices} devices x {rounds} rounds in {:.1} s, drops {DROPS:?}, {} quantized updates recorded",
        started.elapsed().as_secs_f64(),
        witness.len()
    );
    if coin < 1.0 {
        // Each device's coin, at the rate the coordinator announced: not
        // every update kept, not every one left out.
        println!("secure: the devices' coins at {coin}: {} updates kept, {} left out", kept[1], kept[0]);
        assert!(kept[0] > 0 && kept[1] > 0, "coins {kept:?} at {coin}");
    }
}
