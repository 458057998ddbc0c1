//! Writes the seed corpora of the fuzz targets (`fuzz/`): real messages,
//! packages and documents as the library and its tests make them, one
//! folder per target.
//!
//!     cargo run -p hearth-core --example fuzz_seeds -- DIR

use std::path::Path;
use std::sync::Arc;

use hearth_core::federated::objects::{self, ConfigValue, F32Array, Record};
use hearth_core::federated::proto;
use hearth_core::testing::fleet_frames;
use hearth_core::*;
use prost::Message;

/// The NNEF graphs as committed: a build with the `onnx` feature (this
/// example's default) has no NNEF graphs built in, and the fuzz targets
/// are built with `nnef`.
const INFERENCE_NNEF: &[u8] = include_bytes!("../../models/ranker-v1/inference.nnef.tar");
const TRAIN_STEP_NNEF: &[u8] = include_bytes!("../../models/ranker-v1/train_step.nnef.tar");

/// Writes one seed. An empty seed is refused: it would leave a target to
/// find its format from nothing.
fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Err(std::io::Error::other(format!("the seed {target}/{name} is empty")));
    }
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)
}

fn train_message(config: Vec<(String, ConfigValue)>) -> objects::Deflated {
    let meta = proto::Metadata {
        run_id: 5,
        src_node_id: 1,
        dst_node_id: 42,
        group_id: "1".into(),
        ttl: 600.0,
        message_type: "train".into(),
        ..Default::default()
    };
    let arrays = vec![
        ("w".to_string(), F32Array { shape: vec![3, 2], data: vec![0.5, -1.0, 2.0, 0.0, 1e-3, 7.0] }),
        ("b".to_string(), F32Array { shape: vec![2], data: vec![0.1, 0.2] }),
    ];
    let content = vec![
        ("arrays".to_string(), Record::Arrays(arrays)),
        ("config".to_string(), Record::Config(config)),
        ("metrics".to_string(), Record::Metrics(vec![("num-examples".into(), 50.0)])),
    ];
    objects::deflate_message(&meta, &content)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: fuzz_seeds DIR")?;
    let dir = Path::new(&dir);
    let package = ModelPackage::builtin();

    // Fleet: a train message (as frames), and the replies a SuperLink sends.
    let config = vec![
        ("clip-norm".to_string(), ConfigValue::Double(1.0)),
        ("local-epochs".into(), ConfigValue::Int(1)),
        ("server-round".into(), ConfigValue::Int(3)),
        ("noise-multiplier".into(), ConfigValue::Double(1.1)),
        ("sampling-rate".into(), ConfigValue::Double(0.01)),
        ("segment-report-labels".into(), ConfigValue::String("lifecycle.new,device.tv".into())),
    ];
    let plain = train_message(config.clone());
    write(dir, "fleet_message", "train", &fleet_frames::encode(&plain.objects))?;
    let mut signed = config;
    signed.push(("model-manifest".into(), ConfigValue::Bytes(package.manifest.clone())));
    signed.push(("model-signature".into(), ConfigValue::Bytes(package.signature.clone())));
    write(dir, "fleet_message", "train-signed", &fleet_frames::encode(&train_message(signed).objects))?;

    let message = proto::ProtoMessage {
        metadata: Some(proto::Metadata {
            run_id: 5,
            message_id: plain.message_id().to_string(),
            message_type: "train".into(),
            ..Default::default()
        }),
        content: None,
        error: None,
    };
    let pull = proto::PullMessagesResponse {
        reconnect: None,
        messages_list: vec![message],
        message_object_trees: vec![plain.tree.clone()],
    };
    write(dir, "fleet_replies", "pull-messages", &[[0u8].as_slice(), &pull.encode_to_vec()].concat())?;
    let object = proto::PullObjectResponse {
        object_found: true,
        object_available: true,
        object_content: plain.objects[0].content.clone(),
    };
    write(dir, "fleet_replies", "pull-object", &[[1u8].as_slice(), &object.encode_to_vec()].concat())?;
    let push = proto::PushMessagesResponse {
        objects_to_push: vec![plain.message_id().to_string()],
        session_id: "s".into(),
        ..Default::default()
    };
    write(dir, "fleet_replies", "push-messages", &[[2u8].as_slice(), &push.encode_to_vec()].concat())?;
    let activate = proto::ActivateNodeResponse { node_id: 42 };
    write(dir, "fleet_replies", "activate-node", &[[3u8].as_slice(), &activate.encode_to_vec()].concat())?;

    // .npy arrays.
    write(dir, "npy", "matrix", &objects::npy_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))?;
    write(dir, "npy", "vector", &objects::npy_f32(&[1], &[7.0]))?;

    // Model packages: the manifest, the NNEF inference graph.
    write(dir, "model_manifest", "builtin", &package.manifest)?;
    write(dir, "nnef_graph", "inference", INFERENCE_NNEF)?;
    // Refused by the inference graph's checks, but a whole archive to
    // mutate.
    write(dir, "nnef_graph", "train-step", TRAIN_STEP_NNEF)?;

    // An export document of a small store.
    let data = tempfile::tempdir()?;
    let keys: Arc<dyn KeyProvider> = Arc::new(FixedKeyProvider::new([7; 32]));
    let h = Hearth::open(HearthConfig::new(data.path().to_str().ok_or("path")?), keys)?;
    h.upsert_catalog(vec![CatalogItem {
        id: "m42".into(),
        title: "The Silent Harbor".into(),
        categories: vec!["drama".into()],
        language: Some("en".into()),
        duration_ms: Some(5_400_000),
        release_year: Some(2019),
        popularity: 12.0,
        content_rating: Some("PG-13".into()),
    }])?;
    let event = Event {
        item_id: "m42".into(),
        kind: EventKind::Complete,
        timestamp_ms: 1_795_000_000_000,
        position_ms: Some(5_400_000),
        duration_ms: Some(5_400_000),
        context: EventContext { device: DeviceClass::Tv, local_hour: 21, locale: Some("en-GB".into()) },
    };
    h.record(event.clone())?;
    let export = h.export_json()?;
    write(dir, "export_document", "small", export.as_bytes())?;

    // Sealed records: the plaintexts the store seals, table byte first.
    write(dir, "sealed_record", "event", &[[0u8].as_slice(), &serde_json::to_vec(&event)?].concat())?;
    let doc: serde_json::Value = serde_json::from_str(&export)?;
    write(dir, "sealed_record", "catalog", &[[1u8].as_slice(), doc["catalog"][0].to_string().as_bytes()].concat())?;
    write(dir, "sealed_record", "settings", &[[2u8].as_slice(), doc["settings"].to_string().as_bytes()].concat())?;
    let ledger = r#"[{"run_id":1,"round":2,"at_ms":0,"status":"Sent","bytes_sent":9,"norm_before_clip":2.0,"norm_after_clip":1.0,"clip_norm":1.0,"noise_multiplier":1.1,"sampling_rate":0.01,"epsilon_total":"inf","segment_report_epsilon":0.5}]"#;
    write(dir, "sealed_record", "ledger", &[[2u8].as_slice(), ledger.as_bytes()].concat())?;

    // Secure aggregation: each stage's message to a device, and each
    // device's honest reply to the coordinator (the first byte as the
    // target reads it: the stage, plus 4 for a reply).
    for stage in 0..4u8 {
        let mut h = hearth_secagg::testing::honest(4, stage as usize);
        let message = h.messages[&hearth_secagg::testing::TARGET].clone();
        write(dir, "secagg_messages", &format!("stage-{stage}"), &[[stage].as_slice(), &message].concat())?;
        let reply = h.answer(hearth_secagg::testing::TARGET, &message).map_err(|e| e.to_string())?;
        write(dir, "secagg_messages", &format!("reply-{stage}"), &[[stage | 4].as_slice(), &reply].concat())?;
    }

    // Sync pairing: each message of an honest pairing, at the step it is
    // taken (the first byte as the target reads it).
    {
        use hearth_core::sync::pairing::{GroupKey, Inviter, Joiner, PairingMessage};
        let (mut inviter, commit) = Inviter::start(GroupKey { group_id: [7; 16], profile_key: [9; 32] })?;
        let (mut joiner, answer) = Joiner::answer(commit.clone())?;
        let (reveal, _) = inviter.reveal(&answer)?;
        joiner.check(&reveal)?;
        let welcome = inviter.welcome(true)?;
        let messages = [
            PairingMessage::Commit(commit),
            PairingMessage::Answer(answer),
            PairingMessage::Reveal(reveal),
            PairingMessage::Welcome(welcome),
        ];
        for (step, (m, name)) in messages.iter().zip(["commit", "answer", "reveal", "welcome"]).enumerate() {
            write(dir, "pairing_messages", name, &[[step as u8].as_slice(), &m.encode()].concat())?;
        }
    }

    // Sync records: an honest body, as another device of the group seals
    // it (odd first byte), and a blob sealed under another group's key, as
    // the backend could return it (even).
    {
        use hearth_core::sync::changes::{Change, Stamp, pack};
        use hearth_core::sync::pairing::GroupKey;
        use hearth_core::sync::records::{RecordKey, RecordName};
        let at = Stamp { ms: 1_700_000_000_000, n: 0, device: "0d0d0d0d0d0d0d0d".into() };
        let changes = [
            Change::Event {
                seq: 1,
                event: Event {
                    item_id: "film-1".into(),
                    kind: EventKind::Play,
                    timestamp_ms: 1_700_000_000_000,
                    position_ms: Some(1_000),
                    duration_ms: Some(5_000),
                    context: EventContext { device: DeviceClass::Tv, local_hour: 20, locale: Some("en-GB".into()) },
                },
            },
            Change::Setting {
                field: "blocked_categories".into(),
                value: serde_json::json!(["horror"]),
                at: at.clone(),
            },
            Change::Forget { item_id: "film-2".into(), through_ms: 1_700_000_000_000 },
            Change::Purge { before_ms: 1_600_000_000_000 },
            Change::ExperimentSecret { secret: "ab".repeat(32), at },
        ];
        let body = pack(&changes).map_err(|e| e.to_string())?.remove(0).body;
        write(dir, "sync_records", "body", &[[1u8].as_slice(), &body].concat())?;
        let other = RecordKey::new(&GroupKey { group_id: [1; 16], profile_key: [2; 32] }, 1);
        let blob = other.seal(&RecordName { device: [0x0d; 8], seq: 1 }, &body, [0; 12]).map_err(|e| e.to_string())?;
        write(dir, "sync_records", "blob", &[[0u8].as_slice(), &blob].concat())?;
    }

    // A WebDAV listing, as lighttpd answers it.
    write(
        dir,
        "webdav_listing",
        "lighttpd",
        b"HTTP/1.0 207 Multi-Status\r\nContent-Type: application/xml; charset=\"utf-8\"\r\n\r\n\
          <?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">\n<D:response>\n\
          <D:href>/</D:href>\n<D:propstat>\n<D:prop>\n<D:getcontentlength>4096</D:getcontentlength>\
          <D:resourcetype><D:collection/></D:resourcetype></D:prop>\n</D:propstat>\n</D:response>\n<D:response>\n\
          <D:href>/0d0d0d0d0d0d0d0d-0000000001</D:href>\n<D:propstat>\n<D:prop>\n\
          <D:getcontentlength>1057</D:getcontentlength><D:resourcetype/></D:prop>\n</D:propstat>\n</D:response>\n\
          </D:multistatus>",
    )?;

    // MovieLens: the item file, a 0 byte, the ratings file.
    let item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n\
                1\tToy Story\t1995\tAnimation Children's Comedy\n2\tGoldenEye\t1995\tAction\n10\tOdd\t\tunknown\n";
    let inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n\
                 1\t2\t3\t3600\n1\t10\t5\t7200\n1\t1\t4\t7200\n2\t1\t2\t100\n2\t2\t2\t200\n";
    write(dir, "movielens", "small", format!("{item}\0{inter}").as_bytes())?;
    Ok(())
}
