//! One federated round on the device: local training over a store holding
//! 1,000 positives, then the update's clipping and its Fleet encoding
//! (`.npy` arrays in Flower's content-addressed objects), and the bytes a
//! round uploads against the raw f32 size of the weights (printed before
//! the timings).
//!
//! Then the same round under secure aggregation: what the device adds to
//! it (its shares for k neighbours, sealed; the quantized update masked
//! k + 1 times; the shares it reveals) at k = 10, 40 (the coordinator's
//! default degree), 100 and 1,000 neighbours, and the bytes of its four
//! replies against the plain reply's.
//!
//! `cargo bench -p hearth-core --bench round`. One thread: training runs on
//! the calling thread.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use hearth_core::federated::objects::{self, ConfigValue, Deflated, F32Array, Record};
use hearth_core::federated::proto;
use hearth_core::testing::{RoundSettings, local_update_with};
use hearth_core::*;
use hearth_secagg::keys::{self, AgreementKey, Purpose, RoundId};
use hearth_secagg::wire::{PeerKeys, PublicKeys, Reply, ReplyBody, SealedShare, Setup, SharePair, Unmask};
use hearth_secagg::{DevicePolicy, DeviceRound, Quantization};
use prost::Message;

const CATALOG: usize = 5000;
const POSITIVES: usize = 1000;

fn store(dir: &std::path::Path) -> Arc<Hearth> {
    let h = common::open_store(dir);
    h.upsert_catalog(common::catalog(CATALOG)).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    // 1,000 distinct items played, then completed: 1,000 positives.
    let events: Vec<Event> = (0..POSITIVES)
        .flat_map(|i| {
            let item = format!("catalog-item-{}", (i * 7919) % CATALOG);
            let t = now - 60 * 86_400_000 + i as i64 * 5_000_000;
            let context = EventContext { device: DeviceClass::Tv, local_hour: (i % 24) as u8, locale: None };
            [EventKind::Play, EventKind::Complete].map(|kind| Event {
                item_id: item.clone(),
                kind,
                timestamp_ms: t + (kind == EventKind::Complete) as i64 * 2_700_000,
                position_ms: None,
                duration_ms: Some(2_700_000),
                context: context.clone(),
            })
        })
        .collect();
    h.record_batch(events).unwrap();
    h.flush().unwrap();
    h
}

/// The built-in model's parameters: (name, shape), in weights.bin's order.
fn parameters() -> Vec<(String, Vec<usize>)> {
    let manifest: serde_json::Value = serde_json::from_slice(&ModelPackage::builtin().manifest).unwrap();
    manifest["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let shape = p["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            (p["name"].as_str().unwrap().to_string(), shape)
        })
        .collect()
}

/// The reply a device pushes: the delta as one array per parameter and the
/// coarse example count, deflated into Flower objects.
fn encode(delta: &[f32], params: &[(String, Vec<usize>)]) -> (Deflated, proto::Metadata) {
    let mut at = 0;
    let arrays: Vec<(String, F32Array)> = params
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data = delta[at..at + n].to_vec();
            at += n;
            (name.clone(), F32Array { shape: shape.clone(), data })
        })
        .collect();
    let content = vec![
        ("arrays".to_string(), Record::Arrays(arrays)),
        ("metrics".to_string(), Record::Metrics(vec![("num-examples".into(), 500.0)])),
    ];
    deflate_reply(&content)
}

/// A reply with `content` as the Fleet client makes it: its metadata, and
/// its content split into Flower's objects.
fn deflate_reply(content: &[(String, Record)]) -> (Deflated, proto::Metadata) {
    let meta = proto::Metadata {
        run_id: 5,
        src_node_id: 1_234_567_890,
        dst_node_id: 1,
        reply_to_message_id: "0".repeat(64),
        group_id: "1".into(),
        ttl: 600.0,
        message_type: "train".into(),
        created_at: 1.8e9,
        ..Default::default()
    };
    let d = objects::deflate_message(&meta, content);
    let meta = proto::Metadata { message_id: d.message_id().to_string(), ..meta };
    (d, meta)
}

/// The request bodies of one upload: push-messages with the object tree,
/// then push-object for every object (a SuperLink that already holds none).
fn upload_bytes(d: &Deflated, meta: proto::Metadata) -> (usize, usize) {
    let node = Some(proto::Node { node_id: 1_234_567_890 });
    let push = proto::PushMessagesRequest {
        node: node.clone(),
        messages_list: vec![proto::ProtoMessage {
            metadata: Some(meta),
            content: Some(proto::RecordDict {}),
            error: None,
        }],
        message_object_trees: vec![d.tree.clone()],
        clientapp_runtime_list: vec![1.0],
    };
    let objects: usize = d
        .objects
        .iter()
        .map(|o| {
            proto::PushObjectRequest {
                node: node.clone(),
                run_id: 5,
                object_id: o.id.clone(),
                object_content: o.content.clone(),
                session_id: "s".repeat(32),
            }
            .encoded_len()
        })
        .sum();
    (push.encoded_len(), objects)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    let params = parameters();
    let weights: usize = params.iter().map(|(_, s)| s.iter().product::<usize>()).sum();

    let mut group = c.benchmark_group("round");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    // The default cap (the newest 500 positives), then every one of the
    // 1,000 (a coordinator's max-examples).
    for (negatives, max_examples, name) in [
        (4usize, None, "local_update_4_negatives"),
        (32, None, "local_update_32_negatives"),
        (4, Some(POSITIVES), "local_update_4_negatives_all_1000_positives"),
    ] {
        let settings =
            RoundSettings { negatives_per_positive: Some(negatives), max_examples, ..RoundSettings::new(1.0, 7) };
        let u = local_update_with(&h, &settings, None).unwrap();
        eprintln!(
            "local round, {negatives} negatives per positive: {} examples trained (of {POSITIVES} positives), {} SGD steps, update norm {:.3} before clipping",
            u.examples, u.steps, u.norm_before_clip
        );
        group.bench_function(name, |b| b.iter(|| local_update_with(&h, &settings, None).unwrap()));
    }

    let delta = local_update_with(&h, &RoundSettings::new(1e9, 7), None).unwrap().delta;
    assert_eq!(delta.len(), weights);
    group.sample_size(50).measurement_time(Duration::from_secs(5));
    group.bench_function("clip", |b| {
        b.iter_batched_ref(|| delta.clone(), |d| hearth_core::testing::clip(d, 0.1), criterion::BatchSize::LargeInput)
    });
    group.bench_function("encode_fleet_reply", |b| b.iter(|| encode(&delta, &params)));
    group.finish();

    let (d, meta) = encode(&delta, &params);
    let (push, objects) = upload_bytes(&d, meta);
    let raw = weights * 4;
    let kind_bytes = |kind: &str| -> usize {
        let head = format!("{kind} ");
        d.objects.iter().filter(|o| o.content.starts_with(head.as_bytes())).map(|o| o.content.len()).sum()
    };
    eprintln!(
        "upload per round: {weights} weights, raw f32 {raw} B; Flower objects {} B in {} objects \
         (array data chunks {} B, array heads {} B, the rest {} B); request bodies {} B \
         (push-messages {push} B + push-object {objects} B) = {:.4}x raw",
        d.objects.iter().map(|o| o.content.len()).sum::<usize>(),
        d.objects.len(),
        kind_bytes("ArrayChunk"),
        kind_bytes("Array"),
        d.objects.iter().map(|o| o.content.len()).sum::<usize>() - kind_bytes("ArrayChunk") - kind_bytes("Array"),
        push + objects,
        (push + objects) as f64 / raw as f64
    );
}

/// A device's secure stages against `k` neighbours: its round after setup,
/// its neighbours' keys, and the shares they sealed for it (made as real
/// neighbours would, with their own channel keys).
struct SecureFixture {
    peers: Vec<PeerKeys>,
    channels: Vec<AgreementKey>,
    setup: Setup,
}

const ME: u64 = 1;

impl SecureFixture {
    fn new(k: usize, len: usize) -> Self {
        let ids: Vec<u64> = (2..2 + k as u64).collect();
        let channels: Vec<AgreementKey> = ids.iter().map(|_| AgreementKey::generate().unwrap()).collect();
        let peers = ids
            .iter()
            .zip(&channels)
            .map(|(&node, channel)| PeerKeys {
                node,
                keys: Some(PublicKeys {
                    channel: channel.public().to_vec(),
                    mask: AgreementKey::generate().unwrap().public().to_vec(),
                }),
            })
            .collect();
        let cohort = k as u32 + 1;
        let setup = Setup {
            run_id: 5,
            round: 1,
            bits: 20,
            scale: Quantization::largest_scale(20, 1.0, cohort),
            clip_norm: 1.0,
            max_cohort: cohort,
            cohort,
            threshold: (2 * k).div_ceil(3) as u32,
            neighbours: ids,
            vector_len: len as u64,
            noise_multiplier: 0.0,
            sampling_rate: 0.0,
            count_weight: 0.0,
            task: 0,
        };
        SecureFixture { peers, channels, setup }
    }

    /// A fresh round of this device, and the shares its neighbours sealed
    /// for it (not timed: the neighbours' work).
    fn round(&self, len: usize) -> (DeviceRound, Vec<SealedShare>) {
        let policy = DevicePolicy { min_cohort: 2, ..DevicePolicy::default() };
        let (round, keys) = DeviceRound::setup(&policy, ME, len, &self.setup).unwrap();
        let my_channel: [u8; 32] = keys.channel.as_slice().try_into().unwrap();
        let rid = RoundId { run_id: 5, round: 1 };
        let shares = self
            .peers
            .iter()
            .zip(&self.channels)
            .map(|(p, channel)| {
                let key = channel.pair_secret(rid, p.node, ME, &my_channel, Purpose::ShareKey).unwrap();
                let pair = SharePair { src: p.node, dst: ME, index: 1, self_mask: vec![7; 34], mask_key: vec![9; 34] };
                SealedShare {
                    src: p.node,
                    dst: ME,
                    ciphertext: keys::seal_share(&key, rid, p.node, ME, &pair.encode_to_vec()),
                }
            })
            .collect();
        (round, shares)
    }
}

/// The request bodies of one secure reply (a ConfigRecord of bytes).
fn secure_reply_bytes(body: ReplyBody) -> usize {
    let bytes = Reply { body: Some(body) }.encode_to_vec();
    let content =
        vec![("hearth.secagg".to_string(), Record::Config(vec![("reply".into(), ConfigValue::Bytes(bytes))]))];
    let (d, meta) = deflate_reply(&content);
    let (push, objects) = upload_bytes(&d, meta);
    push + objects
}

fn bench_secure(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    let params = parameters();
    let len: usize = params.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    let delta = local_update_with(&h, &RoundSettings::new(1.0, 7), None).unwrap().delta;
    let (d, meta) = encode(&delta, &params);
    let (push, objects) = upload_bytes(&d, meta);
    let plain_bytes = push + objects;

    let mut group = c.benchmark_group("secure");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for k in [10usize, 40, 100, 1000] {
        let fixture = SecureFixture::new(k, len);
        // The bytes of the four replies.
        let (mut round, shares) = fixture.round(len);
        let keys = PublicKeys { channel: vec![0; 32], mask: vec![0; 32] };
        let sent_shares = round.share_keys(&fixture.peers).unwrap();
        let masked = round.masked_input(&shares, &delta).unwrap();
        let survivors: Vec<u64> = fixture.peers.iter().map(|p| p.node).collect();
        let revealed = round.unmask(&Unmask { survivors: survivors.clone(), dropped: vec![] }).unwrap();
        let bytes = [
            secure_reply_bytes(ReplyBody::Keys(keys)),
            secure_reply_bytes(ReplyBody::Shares(sent_shares)),
            secure_reply_bytes(ReplyBody::Masked(masked)),
            secure_reply_bytes(ReplyBody::Revealed(revealed)),
        ];
        let total: usize = bytes.iter().sum();
        eprintln!(
            "secure round, {k} neighbours: request bodies {total} B (keys {} B, shares {} B, masked update {} B, \
             revealed shares {} B) = {:.3}x the raw f32 weights ({} B), {:.3}x the plain reply ({plain_bytes} B)",
            bytes[0],
            bytes[1],
            bytes[2],
            bytes[3],
            total as f64 / (len * 4) as f64,
            len * 4,
            total as f64 / plain_bytes as f64
        );
        group.bench_function(format!("device_stages_{k}_neighbours"), |b| {
            b.iter_batched(
                || fixture.round(len),
                |(mut round, shares)| {
                    round.share_keys(&fixture.peers).unwrap();
                    round.masked_input(&shares, &delta).unwrap();
                    round.unmask(&Unmask { survivors: survivors.clone(), dropped: vec![] }).unwrap()
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_secure);
criterion_main!(benches);
