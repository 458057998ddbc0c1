//! The ranking model as data: a signed package of an inference graph, a
//! training-step graph, a manifest and the weights (`models/README.md`).
//!
//! A package is accepted only when, in this order: the manifest's Ed25519
//! signature verifies under a trusted key, every file has the size and
//! SHA-256 the manifest gives, the manifest's feature schema is the one
//! `features` makes, the weights' layout adds up, the graphs use only known
//! ops and declare the inputs and outputs the manifest lists, and tract builds
//! and runs both. Each failure has its own [`ModelRejection`].
//!
//! Verified plans are built once per package (optimized, with the candidate
//! count `N` and history length `K` symbolic) and shared, behind an `Arc`, by
//! every call and thread. Weights are graph inputs held as shared tensors, so
//! a federated update swaps a weight vector, not a plan.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use log::{debug, info, warn};
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::Deserialize;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::crypto::sha256_hex;
use crate::error::{Error, Result};
use crate::features::{CATEGORY_BUCKETS, CONTEXT_WIDTH, ID_ROWS, ITEM_WIDTH, USER_WIDTH};

/// The package that ships inside the library.
pub(crate) const BUILTIN_MANIFEST: &[u8] = include_bytes!("../../models/ranker-v1/manifest.json");
const BUILTIN_SIGNATURE: &[u8] = include_bytes!("../../models/ranker-v1/manifest.sig");
const BUILTIN_INFERENCE: &[u8] = include_bytes!("../../models/ranker-v1/inference.onnx");
const BUILTIN_TRAIN_STEP: &[u8] = include_bytes!("../../models/ranker-v1/train_step.onnx");
const BUILTIN_WEIGHTS: &[u8] = include_bytes!("../../models/ranker-v1/weights.bin");
/// Hearth's release key (Ed25519, hex), which signs the built-in package.
/// Always trusted; apps add their coordinator's key in `HearthConfig`.
pub const RELEASE_MODEL_KEY: &str = include_str!("../../models/release-key.pub");

/// The file names of a package on disk.
pub const PACKAGE_FILES: [&str; 5] =
    ["manifest.json", "manifest.sig", "inference.onnx", "train_step.onnx", "weights.bin"];

/// Ops a graph may use: the ones tract is known to run for these graphs.
const KNOWN_OPS: &[&str] = &[
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Sigmoid",
    "Softplus",
    "Greater",
    "Equal",
    "Cast",
    "Transpose",
    "ReduceSum",
    "ReduceMean",
    "Squeeze",
    "Unsqueeze",
    "Shape",
    "Gather",
    "Concat",
    "Reshape",
    "Expand",
    "Range",
    "Where",
    "Neg",
    "Exp",
    "Log",
];
const MODEL_NAME: &str = "hearth-ranker";
const MANIFEST_FORMAT: u32 = 1;
/// Larger packages are refused before anything is parsed.
const MAX_PACKAGE_BYTES: usize = 16 << 20;

/// A model package as bytes, as an app downloads it or a coordinator
/// publishes it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ModelPackage {
    /// `manifest.json`, byte for byte as signed.
    pub manifest: Vec<u8>,
    /// `manifest.sig`: the 64-byte Ed25519 signature of `manifest`.
    pub signature: Vec<u8>,
    pub inference: Vec<u8>,
    pub train_step: Vec<u8>,
    pub weights: Vec<u8>,
}

impl ModelPackage {
    /// The package built into the library (signed by the release key).
    pub fn builtin() -> ModelPackage {
        ModelPackage {
            manifest: BUILTIN_MANIFEST.to_vec(),
            signature: BUILTIN_SIGNATURE.to_vec(),
            inference: BUILTIN_INFERENCE.to_vec(),
            train_step: BUILTIN_TRAIN_STEP.to_vec(),
            weights: BUILTIN_WEIGHTS.to_vec(),
        }
    }

    fn files(&self) -> [&[u8]; 5] {
        [&self.manifest, &self.signature, &self.inference, &self.train_step, &self.weights]
    }

    /// Reads the five files of a package directory.
    pub(crate) fn read_dir(dir: &Path) -> Result<ModelPackage> {
        let read = |name: &str| std::fs::read(dir.join(name));
        Ok(ModelPackage {
            manifest: read(PACKAGE_FILES[0])?,
            signature: read(PACKAGE_FILES[1])?,
            inference: read(PACKAGE_FILES[2])?,
            train_step: read(PACKAGE_FILES[3])?,
            weights: read(PACKAGE_FILES[4])?,
        })
    }

    /// Writes the package into `dir` (replaced as a whole, through a
    /// temporary directory and renames).
    pub(crate) fn write_dir(&self, dir: &Path) -> Result<()> {
        let parent = dir.parent().ok_or_else(|| Error::Internal("model directory has no parent".into()))?;
        let tmp = parent.join("model.partial");
        let old = parent.join("model.old");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        for (name, bytes) in PACKAGE_FILES.iter().zip(self.files()) {
            let path = tmp.join(name);
            std::fs::write(&path, bytes)?;
            std::fs::File::open(&path)?.sync_all()?;
        }
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(dir, &old)?;
        }
        std::fs::rename(&tmp, dir)?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }
}

/// Why a model package was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ModelRejection {
    /// The signature does not verify under any trusted key.
    BadSignature,
    /// A file is shorter than the manifest says (an interrupted download).
    Truncated,
    /// A file's size or SHA-256 differs from the manifest.
    DigestMismatch,
    /// The manifest or a graph cannot be parsed.
    Malformed,
    /// The manifest's format, name, features or hashing differ from what this
    /// library computes.
    SchemaMismatch,
    /// A graph input, output or weight has another shape or type than
    /// expected.
    WrongShape,
    /// A graph uses an op outside the known set.
    UnknownOp,
    /// The package is older than the model in use.
    Stale,
}

impl ModelRejection {
    pub(crate) fn err(self, reason: impl Into<String>) -> Error {
        Error::Model { kind: self, reason: reason.into() }
    }
}

// ---------------------------------------------------------------------------
// The manifest (the parts the device acts on; the rest documents).
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Manifest {
    pub manifest_format: u32,
    pub name: String,
    pub version: u64,
    pub files: Files,
    pub graphs: Graphs,
    pub parameters: Vec<Parameter>,
    pub weights: WeightsLayout,
    pub features: Features,
    pub hashing: Hashing,
    pub training: Training,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Files {
    pub inference: FileEntry,
    pub train_step: FileEntry,
    pub weights: FileEntry,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FileEntry {
    pub bytes: usize,
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Graphs {
    pub inference: GraphIo,
    pub train_step: GraphIo,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GraphIo {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TensorSpec {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Parameter {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub offset: usize,
    pub count: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WeightsLayout {
    pub dtype: String,
    pub byte_order: String,
    pub total_count: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Features {
    pub user: Width,
    pub context: Width,
    pub items: Width,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Width {
    pub width: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Hashing {
    pub category_buckets: usize,
    pub id_rows: u64,
    pub offset_basis: String,
    pub prime: String,
}

/// The round's defaults for on-device training (issue: federated).
#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code)] // read by on-device training, which lands with the federated issue
pub(crate) struct Training {
    pub batch_examples: usize,
    pub learning_rate: f64,
    pub negatives_per_positive: usize,
    pub max_history: usize,
}

pub(crate) fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// A trusted Ed25519 public key (32 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustedKey(pub Vec<u8>);

impl TrustedKey {
    pub(crate) fn from_hex(field: &str, text: &str) -> Result<TrustedKey> {
        match parse_hex(text) {
            Some(k) if k.len() == 32 => Ok(TrustedKey(k)),
            _ => Err(Error::invalid(field, "an Ed25519 public key is 64 hex digits")),
        }
    }

    pub(crate) fn release() -> TrustedKey {
        TrustedKey(parse_hex(RELEASE_MODEL_KEY).expect("models/release-key.pub holds 64 hex digits"))
    }
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

fn verify_signature(package: &ModelPackage, keys: &[TrustedKey]) -> Result<()> {
    if package.signature.len() != 64 {
        return Err(ModelRejection::BadSignature.err(format!("{} bytes, not 64", package.signature.len())));
    }
    let ok = keys
        .iter()
        .any(|k| UnparsedPublicKey::new(&ED25519, &k.0).verify(&package.manifest, &package.signature).is_ok());
    if ok { Ok(()) } else { Err(ModelRejection::BadSignature.err("no trusted key verifies the manifest")) }
}

fn check_file(what: &str, bytes: &[u8], entry: &FileEntry) -> Result<()> {
    if bytes.len() < entry.bytes {
        return Err(ModelRejection::Truncated.err(format!("{what}: {} of {} bytes", bytes.len(), entry.bytes)));
    }
    if bytes.len() != entry.bytes {
        return Err(ModelRejection::DigestMismatch.err(format!(
            "{what}: {} bytes, manifest says {}",
            bytes.len(),
            entry.bytes
        )));
    }
    if sha256_hex(bytes) != entry.sha256.to_ascii_lowercase() {
        return Err(ModelRejection::DigestMismatch.err(format!("{what}: SHA-256 differs from the manifest")));
    }
    Ok(())
}

impl Manifest {
    fn check_schema(&self) -> Result<()> {
        let schema =
            |ok: bool, what: &str| if ok { Ok(()) } else { Err(ModelRejection::SchemaMismatch.err(what.to_string())) };
        schema(self.manifest_format == MANIFEST_FORMAT, "unknown manifest_format")?;
        schema(self.name == MODEL_NAME, "not a hearth-ranker model")?;
        schema(self.features.user.width == USER_WIDTH, "user feature width")?;
        schema(self.features.context.width == CONTEXT_WIDTH, "context feature width")?;
        schema(self.features.items.width == ITEM_WIDTH, "item feature width")?;
        schema(self.hashing.category_buckets == CATEGORY_BUCKETS, "category buckets")?;
        schema(self.hashing.id_rows == ID_ROWS, "id rows")?;
        schema(
            self.hashing.offset_basis == "0xcbf29ce484222325" && self.hashing.prime == "0x100000001b3",
            "hash function",
        )?;
        schema(self.training.batch_examples > 0 && self.training.max_history > 0, "training defaults")?;
        schema(self.training.learning_rate.is_finite() && self.training.learning_rate > 0.0, "learning rate")?;

        let shape = |ok: bool, what: String| if ok { Ok(()) } else { Err(ModelRejection::WrongShape.err(what)) };
        shape(
            self.weights.dtype == "float32" && self.weights.byte_order == "little",
            "weights must be float32 LE".into(),
        )?;
        let mut offset = 0;
        for p in &self.parameters {
            let count: usize = p.shape.iter().product();
            shape(p.dtype == "float32", format!("parameter {} dtype", p.name))?;
            shape(p.count == count && p.offset == offset, format!("parameter {} layout", p.name))?;
            offset += count * 4;
        }
        shape(offset == self.files.weights.bytes && offset == self.weights.total_count * 4, "weights size".into())?;
        // The data inputs the device feeds, in order, then one input per
        // parameter.
        let data: [(&str, &str, Vec<serde_json::Value>); 6] = [
            ("user", "float32", vec![USER_WIDTH.into()]),
            ("context", "float32", vec![CONTEXT_WIDTH.into()]),
            ("items", "float32", vec!["N".into(), ITEM_WIDTH.into()]),
            ("item_ids", "int64", vec!["N".into()]),
            ("history_ids", "int64", vec!["K".into()]),
            ("history_weights", "float32", vec!["K".into()]),
        ];
        for (graph, io, extra) in [
            ("inference", &self.graphs.inference, vec![]),
            ("train_step", &self.graphs.train_step, vec!["labels", "sample_weights"]),
        ] {
            let expected: Vec<(String, String, Vec<serde_json::Value>)> = data
                .iter()
                .map(|(n, d, s)| (n.to_string(), d.to_string(), s.clone()))
                .chain(extra.iter().map(|n| (n.to_string(), "float32".to_string(), vec!["N".into()])))
                .chain(
                    self.parameters
                        .iter()
                        .map(|p| (p.name.clone(), "float32".to_string(), p.shape.iter().map(|&d| d.into()).collect())),
                )
                .collect();
            let got: Vec<(String, String, Vec<serde_json::Value>)> =
                io.inputs.iter().map(|t| (t.name.clone(), t.dtype.clone(), t.shape.clone())).collect();
            shape(got == expected, format!("{graph} inputs differ from the device's feature tensors"))?;
        }
        let out = &self.graphs.inference.outputs;
        shape(
            out.len() == 1 && out[0].name == "scores" && out[0].shape == vec![serde_json::Value::from("N")],
            "inference outputs".into(),
        )?;
        let train_out: Vec<String> = self.graphs.train_step.outputs.iter().map(|t| t.name.clone()).collect();
        let mut expected = vec!["loss".to_string()];
        expected.extend(self.parameters.iter().map(|p| format!("grad_{}", p.name)));
        expected.push("scores".into());
        shape(train_out == expected, "train_step outputs".into())?;
        Ok(())
    }
}

fn dims_of(v: &tract_onnx::pb::ValueInfoProto) -> Option<(i32, Vec<serde_json::Value>)> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
    use tract_onnx::pb::type_proto::Value as Type;
    let Some(Type::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let dims = t
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Dim::DimValue(n)) => serde_json::Value::from(*n),
            Some(Dim::DimParam(s)) => serde_json::Value::from(s.clone()),
            None => serde_json::Value::Null,
        })
        .collect();
    Some((t.elem_type, dims))
}

/// Parses a graph and checks its ops and its declared inputs and outputs
/// against the manifest.
fn check_graph(what: &str, bytes: &[u8], io: &GraphIo) -> Result<ModelProto> {
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| ModelRejection::Malformed.err(format!("{what}: not an ONNX model ({e})")))?;
    let graph = proto.graph.as_ref().ok_or_else(|| ModelRejection::Malformed.err(format!("{what}: no graph")))?;
    if !proto.functions.is_empty() {
        return Err(ModelRejection::UnknownOp.err(format!("{what}: model-local functions")));
    }
    let known: HashSet<&str> = KNOWN_OPS.iter().copied().collect();
    for node in &graph.node {
        let standard = node.domain.is_empty() || node.domain == "ai.onnx";
        if !standard || !known.contains(node.op_type.as_str()) {
            return Err(
                ModelRejection::UnknownOp.err(format!("{what}: op {:?} (domain {:?})", node.op_type, node.domain))
            );
        }
    }
    let elem = |dtype: &str| match dtype {
        "float32" => 1,
        "int64" => 7,
        _ => -1,
    };
    let matches = |got: &[tract_onnx::pb::ValueInfoProto], want: &[TensorSpec]| {
        got.len() == want.len()
            && got.iter().zip(want).all(|(g, w)| {
                g.name == w.name && dims_of(g).is_some_and(|(e, dims)| e == elem(&w.dtype) && dims == w.shape)
            })
    };
    if !matches(&graph.input, &io.inputs) {
        return Err(ModelRejection::WrongShape.err(format!("{what}: graph inputs differ from the manifest")));
    }
    if !matches(&graph.output, &io.outputs) {
        return Err(ModelRejection::WrongShape.err(format!("{what}: graph outputs differ from the manifest")));
    }
    Ok(proto)
}

type Plan = Arc<TypedRunnableModel>;

/// The inference graph with the weights moved from inputs into initializers:
/// tract then folds what depends only on weights and packs the matrices
/// once, at plan time. Ranking uses it; training, which changes the
/// weights, uses the graph with weight inputs.
fn bake_weights(proto: &ModelProto, manifest: &Manifest, weights: &[u8]) -> Result<ModelProto> {
    let mut baked = proto.clone();
    let graph = baked.graph.as_mut().ok_or_else(|| ModelRejection::Malformed.err("no graph"))?;
    for p in &manifest.parameters {
        let at = graph
            .input
            .iter()
            .position(|i| i.name == p.name)
            .ok_or_else(|| ModelRejection::WrongShape.err(format!("no input for parameter {}", p.name)))?;
        graph.input.remove(at);
        graph.initializer.push(tract_onnx::pb::TensorProto {
            name: p.name.clone(),
            dims: p.shape.iter().map(|&d| d as i64).collect(),
            data_type: 1, // FLOAT
            raw_data: weights[p.offset..p.offset + p.count * 4].to_vec(),
            ..Default::default()
        });
    }
    Ok(baked)
}

/// Ranking plans specialised to one candidate count and history length.
/// tract optimizes a graph whose shapes are all known further than one where
/// they are the symbols `N` and `K` (1.3 to 1.6 times faster per call here),
/// and such a plan builds in about 5 ms; an app ranks rows of a few sizes for
/// a user whose history length (at most 50) rarely changes, again and again.
/// So a pair of counts gets its own plan the second time it comes, and the
/// most recently used few are kept (each holds its own packed copy of the
/// weights, ~0.6 MB).
#[derive(Default)]
struct ShapedPlans {
    /// Most recent first.
    plans: Vec<((usize, usize), Plan)>,
    /// Counts seen once since, most recent first.
    seen: Vec<(usize, usize)>,
}

const SHAPED_PLANS: usize = 4;
const SHAPED_SEEN: usize = 16;

/// The baked inference graph planned for exactly `n` candidates and `k`
/// history items.
fn build_shaped_plan(baked: &ModelProto, n: usize, k: usize) -> TractResult<Plan> {
    let mut model = tract_onnx::onnx().model_for_proto_model(baked)?;
    model.set_input_fact(0, f32::fact([USER_WIDTH]).into())?;
    model.set_input_fact(1, f32::fact([CONTEXT_WIDTH]).into())?;
    model.set_input_fact(2, f32::fact([n, ITEM_WIDTH]).into())?;
    model.set_input_fact(3, i64::fact([n]).into())?;
    model.set_input_fact(4, i64::fact([k]).into())?;
    model.set_input_fact(5, f32::fact([k]).into())?;
    model.into_optimized()?.into_runnable()
}

fn build_plan(what: &str, proto: &ModelProto) -> Result<Plan> {
    let build =
        || -> TractResult<Plan> { tract_onnx::onnx().model_for_proto_model(proto)?.into_optimized()?.into_runnable() };
    build().map_err(|e| ModelRejection::Malformed.err(format!("{what}: tract cannot build the graph ({e})")))
}

/// Inputs of one scoring call.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScoreInputs {
    pub user: Vec<f32>,
    pub context: Vec<f32>,
    /// `N * ITEM_WIDTH`, row-major.
    pub items: Vec<f32>,
    pub item_ids: Vec<i64>,
    pub history_ids: Vec<i64>,
    pub history_weights: Vec<f32>,
}

impl ScoreInputs {
    fn tensors(&self) -> Result<TVec<TValue>> {
        let n = self.item_ids.len();
        let k = self.history_ids.len();
        if n == 0 || k == 0 || self.items.len() != n * ITEM_WIDTH || self.history_weights.len() != k {
            return Err(Error::Internal(format!("model inputs of inconsistent sizes (n {n}, k {k})")));
        }
        let t = |r: TractResult<Tensor>| r.map(TValue::from).map_err(|e| Error::Internal(format!("tensor: {e}")));
        Ok(tvec![
            t(Tensor::from_shape(&[USER_WIDTH], &self.user))?,
            t(Tensor::from_shape(&[CONTEXT_WIDTH], &self.context))?,
            t(Tensor::from_shape(&[n, ITEM_WIDTH], &self.items))?,
            t(Tensor::from_shape(&[n], &self.item_ids))?,
            t(Tensor::from_shape(&[k], &self.history_ids))?,
            t(Tensor::from_shape(&[k], &self.history_weights))?,
        ])
    }
}

/// One parameter vector of a model (the global one, or a device's local copy
/// during training), as shared tensors in manifest order.
#[derive(Debug, Clone)]
pub(crate) struct Weights {
    pub tensors: Vec<TValue>,
}

impl Weights {
    fn from_bytes(manifest: &Manifest, bytes: &[u8]) -> Result<Weights> {
        let mut tensors = Vec::with_capacity(manifest.parameters.len());
        for p in &manifest.parameters {
            let raw = &bytes[p.offset..p.offset + p.count * 4];
            let values: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(ModelRejection::Malformed.err(format!("parameter {} holds a non-finite value", p.name)));
            }
            let t = Tensor::from_shape(&p.shape, &values).map_err(|e| ModelRejection::WrongShape.err(e.to_string()))?;
            tensors.push(TValue::from(t));
        }
        Ok(Weights { tensors })
    }

    /// All parameters, flattened in manifest order (the layout of weights.bin).
    #[allow(dead_code)] // on-device training
    pub(crate) fn flat(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for t in &self.tensors {
            if let Ok(view) = t.to_plain_array_view::<f32>() {
                out.extend(view.iter().copied());
            }
        }
        out
    }

    /// The inverse of `flat`.
    #[allow(dead_code)] // on-device training
    pub(crate) fn from_flat(model: &Model, flat: &[f32]) -> Result<Weights> {
        let mut tensors = Vec::with_capacity(model.manifest.parameters.len());
        let mut at = 0;
        for p in &model.manifest.parameters {
            let values = flat.get(at..at + p.count).ok_or_else(|| Error::Internal("flat weights too short".into()))?;
            at += p.count;
            tensors
                .push(TValue::from(Tensor::from_shape(&p.shape, values).map_err(|e| Error::Internal(e.to_string()))?));
        }
        Ok(Weights { tensors })
    }
}

/// A verified model: its manifest, its plans, its global weights.
pub(crate) struct Model {
    pub manifest: Manifest,
    /// Hex SHA-256 of the manifest: the identity of this package.
    pub digest: String,
    pub weights: Weights,
    /// Inference with the package's own weights as constants, for any
    /// candidate count.
    ranking: Plan,
    /// The same graph, for which plans of one candidate count are built.
    baked: ModelProto,
    shaped: Mutex<ShapedPlans>,
    /// Inference with the weights as inputs.
    inference: Plan,
    train_step: Plan,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("version", &self.manifest.version).field("digest", &self.digest).finish()
    }
}

/// Loss and gradients of one training-step call.
#[derive(Debug, Clone)]
pub(crate) struct StepOutput {
    pub loss: f32,
    /// One flat gradient per parameter, in manifest order.
    pub gradients: Vec<Vec<f32>>,
    pub scores: Vec<f32>,
}

fn floats(t: &TValue) -> Result<Vec<f32>> {
    Ok(t.to_plain_array_view::<f32>().map_err(|e| Error::Internal(format!("output: {e}")))?.iter().copied().collect())
}

type ModelCache = Mutex<Vec<(String, Weak<Model>)>>;

/// Verified models by manifest digest, so that every store of a process
/// (and every reopen) shares one set of plans per package.
fn cache() -> &'static ModelCache {
    static CACHE: OnceLock<ModelCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Vec::new()))
}

impl Model {
    /// Verifies a package and returns its model, building the plans unless
    /// this process already holds the same package. The signature and the
    /// file digests are checked on every call.
    pub(crate) fn load(package: &ModelPackage, keys: &[TrustedKey]) -> Result<Arc<Model>> {
        verify_signature(package, keys)?;
        let key = sha256_hex(&package.manifest);
        let cached = {
            let mut entries = cache().lock().unwrap_or_else(|p| p.into_inner());
            entries.retain(|(_, w)| w.strong_count() > 0);
            entries.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade())
        };
        if let Some(model) = cached {
            // The manifest is the signed one; the files must still be its.
            check_file("inference.onnx", &package.inference, &model.manifest.files.inference)?;
            check_file("train_step.onnx", &package.train_step, &model.manifest.files.train_step)?;
            check_file("weights.bin", &package.weights, &model.manifest.files.weights)?;
            return Ok(model);
        }
        let model = Arc::new(Model::build(package, key.clone())?);
        cache().lock().unwrap_or_else(|p| p.into_inner()).push((key, Arc::downgrade(&model)));
        Ok(model)
    }

    /// Checks a package whose signature `load` verified, and builds its
    /// plans; `digest` is the manifest's SHA-256.
    fn build(package: &ModelPackage, digest: String) -> Result<Model> {
        let total: usize = package.files().iter().map(|f| f.len()).sum();
        if total > MAX_PACKAGE_BYTES {
            return Err(ModelRejection::Malformed.err(format!("package of {total} bytes is over the limit")));
        }
        let manifest: Manifest = serde_json::from_slice(&package.manifest)
            .map_err(|e| ModelRejection::Malformed.err(format!("manifest: {e}")))?;
        check_file("inference.onnx", &package.inference, &manifest.files.inference)?;
        check_file("train_step.onnx", &package.train_step, &manifest.files.train_step)?;
        check_file("weights.bin", &package.weights, &manifest.files.weights)?;
        manifest.check_schema()?;
        let inference = check_graph("inference", &package.inference, &manifest.graphs.inference)?;
        let train_step = check_graph("train_step", &package.train_step, &manifest.graphs.train_step)?;
        let weights = Weights::from_bytes(&manifest, &package.weights)?;
        let baked = bake_weights(&inference, &manifest, &package.weights)?;
        let model = Model {
            digest,
            ranking: build_plan("inference", &baked)?,
            baked,
            shaped: Mutex::default(),
            inference: build_plan("inference", &inference)?,
            train_step: build_plan("train_step", &train_step)?,
            manifest,
            weights,
        };
        // A graph can declare the right shapes and still compute something
        // else: run it once on a tiny input.
        let probe = ScoreInputs {
            user: vec![0.0; USER_WIDTH],
            context: vec![0.0; CONTEXT_WIDTH],
            items: vec![0.0; 2 * ITEM_WIDTH],
            item_ids: vec![0, 1],
            history_ids: vec![0],
            history_weights: vec![0.0],
        };
        let probe_failed = |e: Error| ModelRejection::WrongShape.err(format!("probe run failed: {e}"));
        let scores = model.score(&probe).map_err(probe_failed)?;
        let with_inputs = model.score_with(&model.weights, &probe).map_err(probe_failed)?;
        if scores.len() != 2 || scores.iter().chain(&with_inputs).any(|s| !s.is_finite()) {
            return Err(ModelRejection::WrongShape.err("probe run gave no finite score per candidate"));
        }
        info!("model {} v{} loaded ({})", model.manifest.name, model.manifest.version, &model.digest[..12]);
        Ok(model)
    }

    pub(crate) fn version(&self) -> u64 {
        self.manifest.version
    }

    /// The ranking plan for `n` candidates and `k` history items: the one
    /// built for those counts when there is one, else the symbolic one (and
    /// a plan for them is built the second time they come).
    fn ranking_plan(&self, n: usize, k: usize) -> Plan {
        let n = (n, k);
        {
            let mut shaped = self.shaped.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = shaped.plans.iter().position(|(count, _)| *count == n) {
                let entry = shaped.plans.remove(at);
                let plan = entry.1.clone();
                shaped.plans.insert(0, entry);
                return plan;
            }
            match shaped.seen.iter().position(|count| *count == n) {
                Some(at) => {
                    shaped.seen.remove(at);
                }
                None => {
                    shaped.seen.insert(0, n);
                    shaped.seen.truncate(SHAPED_SEEN);
                    return self.ranking.clone();
                }
            }
        }
        // Built outside the lock: other threads score meanwhile (two may
        // build the same plan once; the last one in stays).
        let plan = match build_shaped_plan(&self.baked, n.0, n.1) {
            Ok(plan) => plan,
            Err(e) => {
                warn!("no plan for {} candidates, the symbolic one serves: {e}", n.0);
                return self.ranking.clone();
            }
        };
        let mut shaped = self.shaped.lock().unwrap_or_else(|p| p.into_inner());
        shaped.plans.retain(|(count, _)| *count != n);
        shaped.plans.insert(0, (n, plan.clone()));
        shaped.plans.truncate(SHAPED_PLANS);
        debug!("ranking plan built for {} candidates and {} history items", n.0, n.1);
        plan
    }

    /// One score per candidate, with the model's global weights.
    pub(crate) fn score(&self, inputs: &ScoreInputs) -> Result<Vec<f32>> {
        let plan = self.ranking_plan(inputs.item_ids.len(), inputs.history_ids.len());
        let out = plan.run(inputs.tensors()?).map_err(|e| Error::Internal(format!("inference failed: {e}")))?;
        let scores = floats(&out[0])?;
        if scores.len() != inputs.item_ids.len() {
            return Err(Error::Internal("inference returned the wrong number of scores".into()));
        }
        Ok(scores)
    }

    pub(crate) fn score_with(&self, weights: &Weights, inputs: &ScoreInputs) -> Result<Vec<f32>> {
        let mut tensors = inputs.tensors()?;
        tensors.extend(weights.tensors.iter().cloned());
        let out = self.inference.run(tensors).map_err(|e| Error::Internal(format!("inference failed: {e}")))?;
        let scores = floats(&out[0])?;
        if scores.len() != inputs.item_ids.len() {
            return Err(Error::Internal("inference returned the wrong number of scores".into()));
        }
        Ok(scores)
    }

    /// The training-step graph: loss and every gradient at `weights`.
    pub(crate) fn step(
        &self,
        weights: &Weights,
        inputs: &ScoreInputs,
        labels: &[f32],
        sample_weights: &[f32],
    ) -> Result<StepOutput> {
        let n = inputs.item_ids.len();
        if labels.len() != n || sample_weights.len() != n {
            return Err(Error::Internal("labels and sample weights must have one value per candidate".into()));
        }
        let mut tensors = inputs.tensors()?;
        let t = |v: &[f32]| Tensor::from_shape(&[n], v).map(TValue::from).map_err(|e| Error::Internal(e.to_string()));
        tensors.push(t(labels)?);
        tensors.push(t(sample_weights)?);
        tensors.extend(weights.tensors.iter().cloned());
        let out = self.train_step.run(tensors).map_err(|e| Error::Internal(format!("training step failed: {e}")))?;
        let p = self.manifest.parameters.len();
        if out.len() != p + 2 {
            return Err(Error::Internal("training step returned the wrong number of outputs".into()));
        }
        let loss = floats(&out[0])?.first().copied().unwrap_or(f32::NAN);
        let gradients = out[1..=p].iter().map(floats).collect::<Result<Vec<_>>>()?;
        Ok(StepOutput { loss, gradients, scores: floats(&out[p + 1])? })
    }
}

/// The built-in package, verified and planned once per process.
pub(crate) fn builtin() -> Result<Arc<Model>> {
    static BUILTIN: OnceLock<std::result::Result<Arc<Model>, String>> = OnceLock::new();
    BUILTIN
        .get_or_init(|| {
            Model::load(&ModelPackage::builtin(), &[TrustedKey::release()]).map_err(|e| {
                warn!("the built-in model does not load: {e}");
                e.to_string()
            })
        })
        .clone()
        .map_err(Error::Internal)
}

/// What is known about the model ranking uses, for the app's settings
/// screen.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ModelInfo {
    pub name: String,
    pub version: u64,
    /// SHA-256 of the manifest, hex.
    pub digest: String,
    /// True for the package built into the library.
    pub builtin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranking::SplitMix;

    fn uniform(rng: &mut SplitMix, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A batch with every feature group populated.
    fn batch(rng: &mut SplitMix, n: usize, k: usize) -> (ScoreInputs, Vec<f32>, Vec<f32>) {
        let mut v = |len: usize, lo: f32, hi: f32| (0..len).map(|_| uniform(rng, lo, hi)).collect::<Vec<f32>>();
        let inputs = ScoreInputs {
            user: v(USER_WIDTH, 0.0, 0.3),
            context: v(CONTEXT_WIDTH, -1.0, 1.0),
            items: v(n * ITEM_WIDTH, 0.0, 1.0),
            item_ids: (0..n as i64).map(|i| (i * 977 + 13) % ID_ROWS as i64).collect(),
            history_ids: (0..k as i64).map(|i| (i * 389 + 7) % ID_ROWS as i64).collect(),
            history_weights: v(k, 0.1, 2.0),
        };
        let labels = (0..n).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
        let sample_weights = v(n, 0.5, 1.5);
        (inputs, labels, sample_weights)
    }

    #[test]
    fn a_plan_for_one_candidate_count_scores_as_the_symbolic_one() {
        let model = builtin().unwrap();
        let mut rng = SplitMix::new(11);
        for (n, k) in [(3, 1), (37, 50), (500, 20)] {
            let (inputs, _, _) = batch(&mut rng, n, k);
            let symbolic = model.ranking.run(inputs.tensors().unwrap()).unwrap();
            let symbolic = floats(&symbolic[0]).unwrap();
            let first = model.score(&inputs).unwrap();
            assert_eq!(first, symbolic, "the first call of a count uses the symbolic plan");
            let second = model.score(&inputs).unwrap();
            assert!(model.shaped.lock().unwrap().plans.iter().any(|(c, _)| *c == (n, k)), "a plan for {n} now");
            for (a, b) in second.iter().zip(&symbolic) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "n {n}: {a} vs {b}");
            }
            // Another history length: the symbolic plan, then its own.
            let (mut other, _, _) = batch(&mut rng, n, 5);
            other.items = inputs.items.clone();
            let symbolic = floats(&model.ranking.run(other.tensors().unwrap()).unwrap()[0]).unwrap();
            assert_eq!(model.score(&other).unwrap(), symbolic);
            for (a, b) in model.score(&other).unwrap().iter().zip(&symbolic) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "n {n}, k 5: {a} vs {b}");
            }
        }
        let counts = (0..10).map(|i| 100 + i);
        for n in counts {
            let (inputs, _, _) = batch(&mut rng, n, 3);
            model.score(&inputs).unwrap();
            model.score(&inputs).unwrap();
        }
        assert_eq!(model.shaped.lock().unwrap().plans.len(), SHAPED_PLANS, "only the most recent few are kept");
    }

    fn softplus(x: f64) -> f64 {
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }

    /// The training loss computed from the inference graph's scores.
    fn loss_via_inference(model: &Model, w: &Weights, inputs: &ScoreInputs, labels: &[f32], sw: &[f32]) -> f64 {
        let scores = model.score_with(w, inputs).unwrap();
        let den: f64 = sw.iter().map(|&x| x as f64).sum::<f64>() + 1e-6;
        scores
            .iter()
            .zip(labels)
            .zip(sw)
            .map(|((&s, &y), &q)| q as f64 * (softplus(s as f64) - y as f64 * s as f64))
            .sum::<f64>()
            / den
    }

    fn with_value(model: &Model, flat: &[f32], at: usize, value: f32) -> Weights {
        let mut flat = flat.to_vec();
        flat[at] = value;
        Weights::from_flat(model, &flat).unwrap()
    }

    /// Every gradient output of the training graph against central finite
    /// differences of the loss computed through the inference graph, both in
    /// tract. Dense parameters: a spread of elements each; id tables: every
    /// row the batch touches plus untouched rows (gradient exactly 0).
    #[test]
    fn training_gradients_match_finite_differences_through_inference() {
        let model = builtin().expect("built-in model loads");
        let mut rng = SplitMix::new(0x5eed);
        // Move the weights off their shipped values so that the id tables
        // (zeros as shipped) and every ReLU see non-trivial inputs.
        let flat: Vec<f32> = model.weights.flat().iter().map(|&x| x + uniform(&mut rng, -0.05, 0.05)).collect();
        let w = Weights::from_flat(&model, &flat).unwrap();
        let (inputs, labels, sw) = batch(&mut rng, 6, 4);
        let out = model.step(&w, &inputs, &labels, &sw).unwrap();
        let direct = loss_via_inference(&model, &w, &inputs, &labels, &sw);
        assert!((out.loss as f64 - direct).abs() < 1e-5, "loss {} vs {direct}", out.loss);
        let scores = model.score_with(&w, &inputs).unwrap();
        for (a, b) in out.scores.iter().zip(&scores) {
            assert!((a - b).abs() < 1e-5);
        }

        let h = 2e-3f32;
        let base = direct;
        let mut checked = 0;
        let mut kinks = 0;
        for (p, param) in model.manifest.parameters.iter().enumerate() {
            let grad = &out.gradients[p];
            assert_eq!(grad.len(), param.count, "grad_{} size", param.name);
            let rows_indexed = param.shape[0] == ID_ROWS as usize;
            let width = param.count / param.shape[0];
            let indices: Vec<usize> = if rows_indexed {
                let mut rows: Vec<i64> = inputs.item_ids.iter().chain(&inputs.history_ids).copied().collect();
                rows.extend([1, 2047, 4095]); // untouched rows
                rows.iter().flat_map(|&r| (0..width).map(move |c| r as usize * width + c)).collect()
            } else {
                let stride = (param.count / 40).max(1);
                (0..param.count).step_by(stride).collect()
            };
            for i in indices {
                let at = param.offset / 4 + i;
                let x = flat[at];
                let up = loss_via_inference(&model, &with_value(&model, &flat, at, x + h), &inputs, &labels, &sw);
                let down = loss_via_inference(&model, &with_value(&model, &flat, at, x - h), &inputs, &labels, &sw);
                let fd = (up - down) / (2.0 * h as f64);
                // A ReLU kink inside [x - h, x + h] makes the two one-sided
                // slopes disagree; the derivative is not defined there.
                let (right, left) = ((up - base) / h as f64, (base - down) / h as f64);
                if (right - left).abs() > 1e-3 + 0.1 * fd.abs() {
                    kinks += 1;
                    continue;
                }
                let g = grad[i] as f64;
                assert!(
                    (g - fd).abs() <= 2e-4 + 2e-2 * fd.abs(),
                    "grad_{}[{i}]: graph {g:.6} vs finite difference {fd:.6}",
                    param.name
                );
                checked += 1;
            }
        }
        assert!(checked > 500, "only {checked} elements checked");
        assert!(kinks * 20 < checked, "{kinks} elements skipped at ReLU kinks of {checked}");
    }

    #[test]
    fn the_builtin_package_verifies_and_scores() {
        let model = builtin().unwrap();
        assert_eq!(model.manifest.name, "hearth-ranker");
        let mut rng = SplitMix::new(1);
        let (inputs, _, _) = batch(&mut rng, 500, 50);
        let scores = model.score(&inputs).unwrap();
        assert_eq!(scores.len(), 500);
        // The plan with the weights baked in agrees with the one taking them
        // as inputs.
        let with_inputs = model.score_with(&model.weights, &inputs).unwrap();
        for (a, b) in scores.iter().zip(&with_inputs) {
            assert!((a - b).abs() <= 1e-5 + 1e-5 * b.abs(), "{a} vs {b}");
        }
        assert!(scores.iter().all(|s| s.is_finite()));
        // Scores vary with the item features.
        let spread = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
            - scores.iter().fold(f32::INFINITY, |a, &b| a.min(b));
        assert!(spread > 1e-3);
    }
}
