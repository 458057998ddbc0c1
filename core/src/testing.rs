//! Internals exposed for the workspace's own tests and benchmarks only (not
//! part of the API; hidden from the docs).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::model::features::{CONTEXT_WIDTH, ID_ROWS, ITEM_WIDTH, USER_WIDTH};
use crate::model::{self, Model, ScoreInputs};
use crate::random::SplitMix;
use crate::{SyncBlob, SyncTransport, SyncTransportError};

pub use crate::store::schema::V1 as SCHEMA_V1_SQL;

/// The inputs of one inference call, as the graph takes them.
#[derive(Debug, Clone)]
pub struct InferenceInputs(ScoreInputs);

impl InferenceInputs {
    /// Deterministic inputs for `n` candidates and `k` history slots, every
    /// feature group populated with values in the ranges the device makes.
    pub fn synthetic(n: usize, k: usize, seed: u64) -> Self {
        let mut rng = SplitMix::new(seed);
        let mut u = move |lo: f32, hi: f32| lo + (hi - lo) * (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        let mut user: Vec<f32> = (0..USER_WIDTH).map(|_| u(0.0, 1.0)).collect();
        let s: f32 = user[..32].iter().sum();
        user[..32].iter_mut().for_each(|x| *x /= s);
        let context = (0..CONTEXT_WIDTH).map(|_| u(-1.0, 1.0)).collect();
        let items = (0..n * ITEM_WIDTH)
            .map(|i| if i % ITEM_WIDTH < 32 { (u(0.0, 1.0) > 0.9) as u8 as f32 } else { u(0.0, 1.0) })
            .collect();
        let item_ids = (0..n).map(|_| (u(0.0, 1.0) * ID_ROWS as f32) as i64 % ID_ROWS as i64).collect();
        let history_ids = (0..k).map(|_| (u(0.0, 1.0) * ID_ROWS as f32) as i64 % ID_ROWS as i64).collect();
        let history_weights = (0..k).map(|_| u(0.0, 3.0)).collect();
        InferenceInputs(ScoreInputs { user, context, items, item_ids, history_ids, history_weights })
    }

    /// Writes each input as a `.npy` file (`user.npy`, `items.npy`, ...).
    pub fn write_npy(&self, dir: &Path) -> std::io::Result<()> {
        let i = &self.0;
        let n = i.item_ids.len();
        let k = i.history_ids.len();
        write_npy(&dir.join("user.npy"), "<f4", &[USER_WIDTH], &le_f32(&i.user))?;
        write_npy(&dir.join("context.npy"), "<f4", &[CONTEXT_WIDTH], &le_f32(&i.context))?;
        write_npy(&dir.join("items.npy"), "<f4", &[n, ITEM_WIDTH], &le_f32(&i.items))?;
        write_npy(&dir.join("item_ids.npy"), "<i8", &[n], &le_i64(&i.item_ids))?;
        write_npy(&dir.join("history_ids.npy"), "<i8", &[k], &le_i64(&i.history_ids))?;
        write_npy(&dir.join("history_weights.npy"), "<f4", &[k], &le_f32(&i.history_weights))
    }
}

fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn le_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a NumPy `.npy` file (version 1.0; the encoder Flower objects use).
pub fn write_npy(path: &Path, dtype: &str, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, crate::federated::objects::npy(dtype, shape, data))
}

/// The built-in model's inference plan, for benchmarks.
pub struct Inference(Arc<Model>);

impl Inference {
    pub fn builtin() -> Inference {
        Inference(model::builtin().expect("the built-in model loads"))
    }

    pub fn score(&self, inputs: &InferenceInputs) -> Vec<f32> {
        self.0.score(&inputs.0).expect("inference runs")
    }
}

/// Loss, gradients (flat, per parameter in manifest order, with names) and
/// scores of one training step of the built-in model at its shipped weights.
pub struct StepResult {
    pub loss: f32,
    pub scores: Vec<f32>,
    pub gradients: Vec<(String, Vec<f32>)>,
}

impl Inference {
    pub fn train_step(&self, inputs: &InferenceInputs, labels: &[f32], sample_weights: &[f32]) -> StepResult {
        let out = self.0.step(&self.0.weights, &inputs.0, labels, sample_weights).expect("training step runs");
        let names = self.0.manifest.parameters.iter().map(|p| p.name.clone());
        StepResult { loss: out.loss, scores: out.scores, gradients: names.zip(out.gradients).collect() }
    }
}

/// What local training produced (the clipped delta and its record).
pub use crate::model::training::LocalUpdate as UpdateReport;
pub use crate::model::training::{MIN_DENSE_WEIGHT, RoundSettings};

/// The device's clipping, for benchmarks and tests: scales `delta` so its
/// L2 norm is at most `c` and returns the norm before.
pub fn clip(delta: &mut [f32], c: f64) -> f64 {
    crate::model::training::clip(delta, c)
}

/// The clipped update local training makes on `hearth`'s history, from the
/// active model's weights.
pub fn local_update(
    hearth: &crate::Hearth,
    clip_norm: f64,
    epochs: u32,
    seed: u64,
) -> Result<UpdateReport, crate::HearthError> {
    hearth.local_update(&RoundSettings { epochs, ..RoundSettings::new(clip_norm, seed) }, None)
}

/// The clipped update from `global` (weights.bin's layout; the active
/// model's weights when `None`) with a round's settings.
pub fn local_update_with(
    hearth: &crate::Hearth,
    round: &RoundSettings,
    global: Option<&[f32]>,
) -> Result<UpdateReport, crate::HearthError> {
    hearth.local_update(round, global)
}

/// Damages a store as a torn or bit-flipped write can: sets the cell count
/// of `pages` leaf pages of the WITHOUT ROWID tables (the catalog's, in a
/// store with a large catalog) to 1. A scan then skips their rows with no
/// error; only SQLite's integrity check sees it. The store must be closed.
pub fn damage_index_leaves(db: &Path, pages: usize) -> std::io::Result<()> {
    let roots: Vec<i64> = (|| -> rusqlite::Result<Vec<i64>> {
        let c = rusqlite::Connection::open(db)?;
        let _: (i64, i64, i64) =
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let mut stmt = c.prepare("SELECT rootpage FROM sqlite_master WHERE rootpage > 0")?;
        stmt.query_map([], |r| r.get(0))?.collect()
    })()
    .map_err(std::io::Error::other)?;
    let mut bytes = std::fs::read(db)?;
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    // Index b-tree leaves (page type 0x0A) that are no table's root.
    let leaves: Vec<usize> =
        (2..=bytes.len() / page).filter(|n| !roots.contains(&(*n as i64)) && bytes[(n - 1) * page] == 0x0A).collect();
    if leaves.len() < pages * 2 {
        return Err(std::io::Error::other(format!("only {} leaf pages", leaves.len())));
    }
    for n in &leaves[leaves.len() / 2..leaves.len() / 2 + pages] {
        let at = (n - 1) * page;
        bytes[at + 3..at + 5].copy_from_slice(&1u16.to_be_bytes());
    }
    std::fs::write(db, bytes)
}

// ---- entry points for the fuzz targets (fuzz/): each decoder of input
// that comes from outside the process, as the library calls it.

/// A model package's checks after its signature (see `fuzz/`).
pub fn build_unsigned_package(package: &crate::ModelPackage) -> Result<(), crate::HearthError> {
    Ok(model::build_unsigned(package)?)
}

/// For fuzz targets that reach tract: puts the default panic hook back,
/// once, so that a panic the library catches on purpose (tract's, on a
/// malformed graph, answered as `Malformed`) is not made an abort by
/// libFuzzer's hook. A panic that escapes the target still aborts, in
/// libfuzzer-sys's wrapper.
pub fn unwind_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}

/// One graph file checked against the built-in manifest and planned.
pub fn check_inference_graph(bytes: &[u8]) -> Result<(), crate::HearthError> {
    Ok(model::check_inference_graph(bytes)?)
}

/// An export document as `import_json` reads it, before anything is stored.
pub fn parse_export(json: &str) -> Result<(), crate::HearthError> {
    let doc = crate::hearth::export::ExportDocument::parse(json)?;
    let now = crate::store::history::now_ms();
    for e in &doc.events {
        e.event.validate(now)?;
    }
    for i in &doc.catalog {
        i.validate()?;
    }
    Ok(())
}

/// Seals `plaintext` as a record of `table` (0 events, 1 catalog, 2 state,
/// 3 profile items; others: 0) under a fixed data key, opens it as the
/// store does, and parses it as that table's records are parsed; then opens
/// `plaintext` itself as if it were sealed bytes (which must fail).
pub fn decode_record(table: u8, plaintext: &[u8]) -> Result<(), crate::HearthError> {
    use crate::error::Error;
    use crate::store::crypto::{DataKey, KeyRing, Table};
    let ring = &KeyRing::new(0, vec![(0, DataKey::from_bytes([9; 32]))]);
    let tables = [Table::Events, Table::Catalog, Table::State, Table::ProfileItems, Table::ExperimentLog];
    let table = tables[table as usize % tables.len()];
    if ring.open(table, b"row", plaintext).is_ok() {
        return Err(Error::Internal("bytes that were never sealed opened".into()).into());
    }
    let sealed = ring.seal(table, b"row", plaintext)?;
    let plain = ring.open(table, b"row", &sealed)?;
    if plain != plaintext {
        return Err(Error::Internal("a record opened to other bytes".into()).into());
    }
    match table {
        Table::Events => drop(serde_json::from_slice::<crate::Event>(&plain).map_err(Error::from)?),
        Table::Catalog => drop(serde_json::from_slice::<crate::CatalogItem>(&plain).map_err(Error::from)?),
        Table::ProfileItems => {
            drop(serde_json::from_slice::<crate::store::profile::ItemState>(&plain).map_err(Error::from)?)
        }
        Table::State => {
            // The state records: the ledger (read entry by entry), the
            // settings, the profile's aggregate, the experiments.
            drop(crate::federated::ledger::decode(&plain));
            let _ = serde_json::from_slice::<crate::PrivacySettings>(&plain);
            let _ = serde_json::from_slice::<crate::store::profile::Profile>(&plain);
            let _ = serde_json::from_slice::<Vec<crate::Experiment>>(&plain);
        }
        Table::ExperimentLog => {
            drop(serde_json::from_slice::<crate::ExperimentLogRecord>(&plain).map_err(Error::from)?)
        }
    }
    Ok(())
}

/// A Flower message's objects in a form a fuzzer can mutate: object ids are
/// SHA-256 digests no mutation can forge, so objects refer to earlier ones
/// by index and are named when decoded.
///
/// Each frame is `[kind u8][n u8][n child indexes u8][body length u32 LE][body]`.
/// Kinds 0 to 6 are Message, RecordDict, ArrayRecord, Array, ArrayChunk,
/// ConfigRecord, MetricRecord, and get the head `"<Kind> <child ids> <len>"`;
/// any other kind takes the body as the object's whole content. In a body,
/// `#k` (then a non-digit) stands for the id of object k. A child index
/// names one of the objects before it (modulo their count). The last object
/// is the message.
pub mod fleet_frames {
    use std::collections::HashMap;

    use crate::federated::objects::{Object, object_id, parse};

    const KINDS: [&str; 7] =
        ["Message", "RecordDict", "ArrayRecord", "Array", "ArrayChunk", "ConfigRecord", "MetricRecord"];

    /// The message id and its objects by id (None when no frame parses).
    pub fn decode(mut data: &[u8]) -> Option<(String, HashMap<String, Vec<u8>>)> {
        let mut ids: Vec<String> = Vec::new();
        let mut objects = HashMap::new();
        while data.len() >= 2 {
            let (kind, n) = (data[0], data[1] as usize);
            data = &data[2..];
            if data.len() < n + 4 {
                break;
            }
            let children: Vec<String> = if ids.is_empty() {
                Vec::new()
            } else {
                data[..n].iter().map(|i| ids[*i as usize % ids.len()].clone()).collect()
            };
            data = &data[n..];
            let len = (u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize).min(data.len() - 4);
            let body = named(&data[4..4 + len], &ids);
            data = &data[4 + len..];
            let content = match KINDS.get(kind as usize) {
                Some(k) => Object::new(k, &children, &body).content,
                None => body,
            };
            let id = object_id(&content);
            ids.push(id.clone());
            objects.insert(id, content);
        }
        Some((ids.pop()?, objects))
    }

    /// `#k` replaced by the id of object k.
    fn named(body: &[u8], ids: &[String]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len());
        let mut i = 0;
        while i < body.len() {
            if body[i] == b'#' {
                let digits = body[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count().min(6);
                if digits > 0 {
                    let k: usize =
                        std::str::from_utf8(&body[i + 1..i + 1 + digits]).unwrap_or("0").parse().unwrap_or(0);
                    if let Some(id) = ids.get(k) {
                        out.extend_from_slice(id.as_bytes());
                        i += 1 + digits;
                        continue;
                    }
                }
            }
            out.push(body[i]);
            i += 1;
        }
        out
    }

    /// The frames of a message's objects (children before parents, the
    /// message last, as `deflate_message` orders them).
    pub fn encode(objects: &[Object]) -> Vec<u8> {
        let mut out = Vec::new();
        let ids: Vec<&str> = objects.iter().map(|o| o.id.as_str()).collect();
        for o in objects {
            let Ok(p) = parse(&o.content) else { continue };
            let kind = KINDS.iter().position(|k| *k == p.kind).unwrap_or(255) as u8;
            let children: Vec<u8> =
                p.children.iter().map(|c| ids.iter().position(|i| i == c).unwrap_or(0) as u8).collect();
            let mut body = String::from_utf8_lossy(p.body).into_owned().into_bytes();
            if std::str::from_utf8(p.body).is_ok() {
                for (k, id) in ids.iter().enumerate() {
                    body = String::from_utf8(body).unwrap_or_default().replace(id, &format!("#{k}")).into_bytes();
                }
            } else {
                body = p.body.to_vec();
            }
            out.extend_from_slice(&[kind, children.len() as u8]);
            out.extend_from_slice(&children);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&body);
        }
        out
    }
}

/// The key of the sync group `hearth` is in: tests and fuzz targets use it
/// to write records as another device of the group would.
pub fn sync_group_key(hearth: &crate::Hearth) -> Option<crate::sync::pairing::GroupKey> {
    hearth.group_key().ok().flatten()
}

/// A record's plaintext as `hearth` writes it under key epoch `epoch`: the
/// body `json` signed with its own device key for the record `name`, after
/// the record whose chain value is `prev` (tests write what a device of the
/// group could, within its rights or not).
pub fn sync_signed_body(
    hearth: &crate::Hearth,
    epoch: u32,
    name: &str,
    prev: &[u8; 32],
    json: &[u8],
) -> Option<Vec<u8>> {
    hearth.signed_record_body(epoch, name, prev, json).ok().flatten()
}

/// The chain value after the newest record `hearth` wrote.
pub fn sync_own_chain(hearth: &crate::Hearth) -> Option<[u8; 32]> {
    hearth.with(|s| s.sync_state()).ok().flatten().map(|state| state.own_chain_value())
}

/// A sync backend in memory, as the app's backend would be: it stores the
/// blobs it is given and hands them back; tests read everything it holds as
/// an attacker would, and make it fail on demand.
#[derive(Default)]
pub struct MemoryBackend {
    pub blobs: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Calls left before every call fails (None: never).
    pub calls_left: Mutex<Option<usize>>,
    pub calls: Mutex<usize>,
}

impl MemoryBackend {
    fn call(&self) -> Result<(), SyncTransportError> {
        *self.calls.lock().unwrap() += 1;
        let mut left = self.calls_left.lock().unwrap();
        match left.as_mut() {
            Some(0) => Err(SyncTransportError::Unavailable { reason: "offline".into() }),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Every blob: name and bytes.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.blobs.lock().unwrap().clone()
    }

    pub fn fail_after(&self, calls: Option<usize>) {
        *self.calls_left.lock().unwrap() = calls;
    }
}

impl SyncTransport for MemoryBackend {
    fn put(&self, name: String, blob: Vec<u8>) -> Result<(), SyncTransportError> {
        self.call()?;
        self.blobs.lock().unwrap().insert(name, blob);
        Ok(())
    }

    fn list(&self) -> Result<Vec<SyncBlob>, SyncTransportError> {
        self.call()?;
        Ok(self.blobs.lock().unwrap().iter().map(|(n, b)| SyncBlob { name: n.clone(), size: b.len() as u64 }).collect())
    }

    fn get(&self, name: String) -> Result<Option<Vec<u8>>, SyncTransportError> {
        self.call()?;
        Ok(self.blobs.lock().unwrap().get(&name).cloned())
    }

    fn delete(&self, name: String) -> Result<(), SyncTransportError> {
        self.call()?;
        self.blobs.lock().unwrap().remove(&name);
        Ok(())
    }
}

/// The `i`th event of a synthetic history the benchmarks record: 5,000
/// items, a play or (every third) a completion, one a second.
pub fn bench_event(i: u64) -> crate::Event {
    crate::Event {
        item_id: format!("catalog-item-{}", i % 5000),
        kind: if i % 3 == 0 { crate::EventKind::Complete } else { crate::EventKind::Play },
        timestamp_ms: 1_700_000_000_000 + i as i64 * 1000,
        position_ms: Some(120_000),
        duration_ms: Some(2_700_000),
        context: crate::EventContext {
            device: crate::DeviceClass::Phone,
            local_hour: 20,
            locale: Some("en-US".into()),
        },
    }
}
