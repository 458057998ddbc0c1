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
//!
//! A package carries each graph twice: as ONNX (`inference.onnx`,
//! `train_step.onnx`, what `models/build.py` writes) and as tract's NNEF
//! (`*.nnef.tar`, converted from the ONNX by `hearth model nnef`). A library
//! loads one format, chosen at build time by the cargo feature `onnx`
//! (tract-onnx) or `nnef` (tract-nnef alone, which leaves the protobuf parser
//! and ONNX's op set out of the library); with both on (a workspace build
//! unifies the CLI's `onnx` with the bindings' `nnef`), ONNX is loaded. The
//! other format's files are optional, and checked against the manifest when
//! present.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use log::{debug, info, warn};
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::Deserialize;
#[cfg(not(feature = "onnx"))]
use tract_nnef::prelude::*;
#[cfg(feature = "onnx")]
use tract_onnx::prelude::*;

use crate::crypto::sha256_hex;
use crate::error::{Error, Result};
use crate::features::{CATEGORY_BUCKETS, CONTEXT_WIDTH, ID_ROWS, ITEM_WIDTH, USER_WIDTH};

#[cfg(not(any(feature = "onnx", feature = "nnef")))]
compile_error!("hearth-core loads model graphs from ONNX or NNEF: enable the feature `onnx` or `nnef`");

#[cfg(not(feature = "onnx"))]
use nnef_graphs::{Graph, bake_weights, build_plan, build_shaped_plan, check_graph};
#[cfg(feature = "onnx")]
use onnx_graphs::{Graph, bake_weights, build_plan, build_shaped_plan, check_graph};

/// The package that ships inside the library.
pub(crate) const BUILTIN_MANIFEST: &[u8] = include_bytes!("../../models/ranker-v1/manifest.json");
const BUILTIN_SIGNATURE: &[u8] = include_bytes!("../../models/ranker-v1/manifest.sig");
const BUILTIN_WEIGHTS: &[u8] = include_bytes!("../../models/ranker-v1/weights.bin");
// Only the graphs of the format this library loads are built in.
#[cfg(feature = "onnx")]
const BUILTIN_ONNX: [&[u8]; 2] =
    [include_bytes!("../../models/ranker-v1/inference.onnx"), include_bytes!("../../models/ranker-v1/train_step.onnx")];
#[cfg(not(feature = "onnx"))]
const BUILTIN_ONNX: [&[u8]; 2] = [&[], &[]];
#[cfg(not(feature = "onnx"))]
const BUILTIN_NNEF: [&[u8]; 2] = [
    include_bytes!("../../models/ranker-v1/inference.nnef.tar"),
    include_bytes!("../../models/ranker-v1/train_step.nnef.tar"),
];
#[cfg(feature = "onnx")]
const BUILTIN_NNEF: [&[u8]; 2] = [&[], &[]];
/// Hearth's release key (Ed25519, hex), which signs the built-in package.
/// Always trusted; apps add their coordinator's key in `HearthConfig`.
pub const RELEASE_MODEL_KEY: &str = include_str!("../../models/release-key.pub");

/// The file names of a package on disk, in the order of [`ModelPackage`]'s
/// fields.
pub const PACKAGE_FILES: [&str; 7] = [
    "manifest.json",
    "manifest.sig",
    "inference.onnx",
    "train_step.onnx",
    "weights.bin",
    "inference.nnef.tar",
    "train_step.nnef.tar",
];

/// The graph files (indices into [`PACKAGE_FILES`]) of the format this
/// library loads; a package must have them. The other format's are optional.
#[cfg(feature = "onnx")]
const LOADED_GRAPHS: [usize; 2] = [2, 3];
#[cfg(not(feature = "onnx"))]
const LOADED_GRAPHS: [usize; 2] = [5, 6];
const GRAPH_FILES: [usize; 4] = [2, 3, 5, 6];

/// ONNX ops a graph may use: the ones tract is known to run for these graphs.
#[cfg(feature = "onnx")]
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
    /// `inference.onnx` (may be empty for a library that loads NNEF).
    pub inference: Vec<u8>,
    /// `train_step.onnx` (may be empty for a library that loads NNEF).
    pub train_step: Vec<u8>,
    pub weights: Vec<u8>,
    /// `inference.nnef.tar`: the inference graph in tract's NNEF (may be
    /// empty for a library that loads ONNX).
    #[uniffi(default)]
    pub inference_nnef: Vec<u8>,
    /// `train_step.nnef.tar` (may be empty for a library that loads ONNX).
    #[uniffi(default)]
    pub train_step_nnef: Vec<u8>,
}

impl ModelPackage {
    /// The package built into the library (signed by the release key).
    pub fn builtin() -> ModelPackage {
        ModelPackage {
            manifest: BUILTIN_MANIFEST.to_vec(),
            signature: BUILTIN_SIGNATURE.to_vec(),
            inference: BUILTIN_ONNX[0].to_vec(),
            train_step: BUILTIN_ONNX[1].to_vec(),
            weights: BUILTIN_WEIGHTS.to_vec(),
            inference_nnef: BUILTIN_NNEF[0].to_vec(),
            train_step_nnef: BUILTIN_NNEF[1].to_vec(),
        }
    }

    fn files(&self) -> [&[u8]; 7] {
        [
            &self.manifest,
            &self.signature,
            &self.inference,
            &self.train_step,
            &self.weights,
            &self.inference_nnef,
            &self.train_step_nnef,
        ]
    }

    /// Reads a package directory: a missing graph file of the format this
    /// library does not load reads as empty.
    pub(crate) fn read_dir(dir: &Path) -> Result<ModelPackage> {
        let read = |at: usize| match std::fs::read(dir.join(PACKAGE_FILES[at])) {
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && !LOADED_GRAPHS.contains(&at)
                    && GRAPH_FILES.contains(&at) =>
            {
                Ok(Vec::new())
            }
            other => other,
        };
        Ok(ModelPackage {
            manifest: read(0)?,
            signature: read(1)?,
            inference: read(2)?,
            train_step: read(3)?,
            weights: read(4)?,
            inference_nnef: read(5)?,
            train_step_nnef: read(6)?,
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
        for (at, (name, bytes)) in PACKAGE_FILES.iter().zip(self.files()).enumerate() {
            if bytes.is_empty() && GRAPH_FILES.contains(&at) {
                continue;
            }
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
    /// Packages made before NNEF have none.
    #[serde(default)]
    pub inference_nnef: Option<FileEntry>,
    #[serde(default)]
    pub train_step_nnef: Option<FileEntry>,
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
    /// For an id table: the graph input (`item_ids` or `history_ids`) whose
    /// ids place the rows of its gradient output `grad_<name>_rows`: row i
    /// belongs to the table's row `ids[i]`, every other row's gradient is
    /// zero. None: the output `grad_<name>` holds the whole gradient.
    #[serde(default)]
    pub gradient_rows_of: Option<String>,
}

impl Parameter {
    /// The name of the train_step output holding this parameter's gradient.
    fn gradient_output(&self) -> String {
        match self.gradient_rows_of {
            Some(_) => format!("grad_{}_rows", self.name),
            None => format!("grad_{}", self.name),
        }
    }
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

/// Every file of the package against the manifest's size and SHA-256: the
/// weights and the graphs this library loads always, the other format's
/// graphs when the package has them.
fn check_files(package: &ModelPackage, files: &Files) -> Result<()> {
    let graphs = [
        (2, &package.inference, Some(&files.inference)),
        (3, &package.train_step, Some(&files.train_step)),
        (5, &package.inference_nnef, files.inference_nnef.as_ref()),
        (6, &package.train_step_nnef, files.train_step_nnef.as_ref()),
    ];
    for (at, bytes, entry) in graphs {
        let name = PACKAGE_FILES[at];
        let loaded = LOADED_GRAPHS.contains(&at);
        match entry {
            Some(entry) if loaded || !bytes.is_empty() => check_file(name, bytes, entry)?,
            Some(_) => {}
            None if loaded => {
                return Err(
                    ModelRejection::Malformed.err(format!("the manifest lists no {name}, which this library loads"))
                );
            }
            None if !bytes.is_empty() => {
                return Err(ModelRejection::DigestMismatch.err(format!("{name}: not listed in the manifest")));
            }
            None => {}
        }
    }
    check_file("weights.bin", &package.weights, &files.weights)
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
            if let Some(ids) = &p.gradient_rows_of {
                shape(
                    matches!(ids.as_str(), "item_ids" | "history_ids") && p.shape.first() == Some(&(ID_ROWS as usize)),
                    format!("parameter {}: gradient rows of {ids}", p.name),
                )?;
            }
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
        expected.extend(self.parameters.iter().map(Parameter::gradient_output));
        expected.push("scores".into());
        shape(train_out == expected, "train_step outputs".into())?;
        Ok(())
    }
}

type Plan = Arc<TypedRunnableModel>;

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

/// Graphs from ONNX (`inference.onnx`, `train_step.onnx`) with tract-onnx.
#[cfg(feature = "onnx")]
mod onnx_graphs {
    use super::*;
    use tract_onnx::pb::ModelProto;

    /// A checked graph, as parsed.
    pub(super) type Graph = ModelProto;

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
    pub(super) fn check_graph(what: &str, bytes: &[u8], io: &GraphIo) -> Result<ModelProto> {
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

    /// The inference graph with the weights moved from inputs into
    /// initializers: tract then folds what depends only on weights and packs
    /// the matrices once, at plan time. Ranking uses it; training, which
    /// changes the weights, uses the graph with weight inputs.
    pub(super) fn bake_weights(proto: &ModelProto, manifest: &Manifest, weights: &Weights) -> Result<ModelProto> {
        let mut baked = proto.clone();
        let graph = baked.graph.as_mut().ok_or_else(|| ModelRejection::Malformed.err("no graph"))?;
        for (p, values) in manifest.parameters.iter().zip(&weights.tensors) {
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
                raw_data: float_slice(values)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            });
        }
        Ok(baked)
    }

    /// The baked inference graph planned for exactly `n` candidates and `k`
    /// history items.
    pub(super) fn build_shaped_plan(baked: &ModelProto, n: usize, k: usize) -> TractResult<Plan> {
        let mut model = tract_onnx::onnx().model_for_proto_model(baked)?;
        model.set_input_fact(0, f32::fact([USER_WIDTH]).into())?;
        model.set_input_fact(1, f32::fact([CONTEXT_WIDTH]).into())?;
        model.set_input_fact(2, f32::fact([n, ITEM_WIDTH]).into())?;
        model.set_input_fact(3, i64::fact([n]).into())?;
        model.set_input_fact(4, i64::fact([k]).into())?;
        model.set_input_fact(5, f32::fact([k]).into())?;
        model.into_optimized()?.into_runnable()
    }

    pub(super) fn build_plan(what: &str, proto: &ModelProto) -> Result<Plan> {
        let build = || -> TractResult<Plan> {
            tract_onnx::onnx().model_for_proto_model(proto)?.into_optimized()?.into_runnable()
        };
        build().map_err(|e| ModelRejection::Malformed.err(format!("{what}: tract cannot build the graph ({e})")))
    }
}

/// Graphs from tract's NNEF (`inference.nnef.tar`, `train_step.nnef.tar`)
/// with tract-nnef alone. `hearth model nnef` writes them from the ONNX
/// graphs, typed and decluttered, so they hold tract-core ops only.
#[cfg(not(feature = "onnx"))]
mod nnef_graphs {
    use super::*;
    use tract_nnef::ast::{Assignment, RValue, Subscript};

    /// A checked graph, typed (not yet optimized).
    pub(super) type Graph = TypedModel;

    /// The element type of a manifest dtype.
    fn datum_type(dtype: &str) -> Option<DatumType> {
        match dtype {
            "float32" => Some(DatumType::F32),
            "int64" => Some(DatumType::I64),
            _ => None,
        }
    }

    /// NNEF operations a graph may use: the ones tract writes for the ONNX
    /// ops of `KNOWN_OPS` (after decluttering), plus the declarations of
    /// inputs and constant tensors.
    const KNOWN_NNEF_OPS: &[&str] = &[
        "external",
        "tract_core_external",
        "variable",
        "matmul",
        "add",
        "sub",
        "mul",
        "div",
        "max",
        "min",
        "neg",
        "recip",
        "exp",
        "log",
        "sigmoid",
        "relu",
        "gt",
        "lt",
        "eq",
        "select",
        "tract_core_cast",
        "transpose",
        "sum_reduce",
        "mean_reduce",
        "squeeze",
        "unsqueeze",
        "reshape",
        "slice",
        "concat",
        "tract_core_gather",
        "tract_core_range",
        "tract_core_broadcast",
    ];
    /// The one fragment tract writes into a graph: the model's properties.
    const PROPERTIES_FRAGMENT: &str = "tract_core_properties";

    /// Every operation invoked in `rvalue`.
    fn invoked<'a>(rvalue: &'a RValue, out: &mut Vec<&'a str>) {
        match rvalue {
            RValue::Identifier(_) | RValue::Literal(_) => {}
            RValue::Binary(a, _, b) => {
                invoked(a, out);
                invoked(b, out);
            }
            RValue::Unary(_, a) => invoked(a, out),
            RValue::Tuple(items) | RValue::Array(items) => items.iter().for_each(|i| invoked(i, out)),
            RValue::Subscript(a, sub) => {
                invoked(a, out);
                match &**sub {
                    Subscript::Single(i) => invoked(i, out),
                    Subscript::Range(from, to) => from.iter().chain(to.iter()).for_each(|i| invoked(i, out)),
                }
            }
            RValue::Comprehension(c) => {
                c.loop_iters.iter().for_each(|(_, i)| invoked(i, out));
                c.filter.iter().for_each(|i| invoked(i, out));
                invoked(&c.yields, out);
            }
            RValue::IfThenElse(c) => {
                invoked(&c.cond, out);
                invoked(&c.then, out);
                invoked(&c.otherwise, out);
            }
            RValue::Invocation(call) => {
                out.push(&call.id.0);
                call.arguments.iter().for_each(|a| invoked(&a.rvalue, out));
            }
        }
    }

    /// The ops check, on the parsed document: known operations only, no
    /// fragments of the package's own (they could define any op), no
    /// registries beyond tract-core's, no quantization.
    fn check_ops(what: &str, proto: &tract_nnef::ProtoModel) -> Result<()> {
        let unknown = |detail: String| Err(ModelRejection::UnknownOp.err(format!("{what}: {detail}")));
        let doc = &proto.doc;
        for (id, value) in &doc.extension {
            let ok = match id.0.as_str() {
                "tract_registry" => value.trim() == "tract_core",
                "tract_symbol" => true,
                _ => false,
            };
            if !ok {
                return unknown(format!("extension {} {value}", id.0));
            }
        }
        if proto.quantization.as_ref().is_some_and(|q| !q.is_empty()) {
            return unknown("quantized tensors".into());
        }
        let mut calls = Vec::new();
        let mut body = |assignments: &'_ [Assignment]| {
            for a in assignments {
                let mut found = Vec::new();
                invoked(&a.right, &mut found);
                calls.extend(found.into_iter().map(str::to_string));
            }
        };
        for fragment in &doc.fragments {
            if fragment.decl.id.0 != PROPERTIES_FRAGMENT {
                return unknown(format!("fragment {:?}", fragment.decl.id.0));
            }
            body(fragment.body.as_deref().unwrap_or_default());
        }
        body(&doc.graph_def.body);
        let known: HashSet<&str> = KNOWN_NNEF_OPS.iter().copied().collect();
        match calls.iter().find(|c| !known.contains(c.as_str())) {
            Some(op) => unknown(format!("op {op:?}")),
            None => Ok(()),
        }
    }

    /// A tensor's shape as the manifest writes it: sizes as numbers, the
    /// symbols `N` and `K` as their names.
    fn dims(fact: &TypedFact) -> Vec<serde_json::Value> {
        fact.shape
            .iter()
            .map(|d| match d.to_i64() {
                Ok(n) => serde_json::Value::from(n),
                Err(_) => serde_json::Value::from(d.to_string()),
            })
            .collect()
    }

    fn matches(
        model: &TypedModel,
        outlets: &[OutletId],
        want: &[TensorSpec],
        name: impl Fn(OutletId) -> String,
    ) -> bool {
        outlets.len() == want.len()
            && outlets.iter().zip(want).all(|(&o, w)| {
                model.outlet_fact(o).is_ok_and(|f| {
                    name(o) == w.name && Some(f.datum_type) == datum_type(&w.dtype) && dims(f) == w.shape
                })
            })
    }

    /// Parses a graph, checks its ops, types it, and checks its inputs and
    /// outputs against the manifest.
    pub(super) fn check_graph(what: &str, bytes: &[u8], io: &GraphIo) -> Result<TypedModel> {
        let nnef = tract_nnef::nnef();
        let proto = nnef
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| ModelRejection::Malformed.err(format!("{what}: not an NNEF archive ({e})")))?;
        check_ops(what, &proto)?;
        let model = nnef
            .model_for_proto_model(&proto)
            .map_err(|e| ModelRejection::Malformed.err(format!("{what}: tract cannot build the graph ({e})")))?;
        if !matches(&model, &model.inputs, &io.inputs, |o| model.node(o.node).name.clone()) {
            return Err(ModelRejection::WrongShape.err(format!("{what}: graph inputs differ from the manifest")));
        }
        let output_name =
            |o: OutletId| model.outlet_label(o).map(str::to_string).unwrap_or_else(|| model.node(o.node).name.clone());
        if !matches(&model, &model.outputs, &io.outputs, output_name) {
            return Err(ModelRejection::WrongShape.err(format!("{what}: graph outputs differ from the manifest")));
        }
        Ok(model)
    }

    /// The inference graph with each weight input turned into a constant:
    /// tract then folds what depends only on weights and packs the matrices
    /// once, at plan time. Ranking uses it; training, which changes the
    /// weights, uses the graph with weight inputs.
    pub(super) fn bake_weights(model: &TypedModel, manifest: &Manifest, weights: &Weights) -> Result<TypedModel> {
        let mut baked = model.clone();
        for (p, values) in manifest.parameters.iter().zip(&weights.tensors) {
            let at = baked
                .inputs
                .iter()
                .position(|o| baked.node(o.node).name == p.name)
                .ok_or_else(|| ModelRejection::WrongShape.err(format!("no input for parameter {}", p.name)))?;
            let constant = || -> TractResult<(tract_core::ops::konst::Const, TypedFact)> {
                let tensor = values.clone().into_arc_tensor();
                Ok((tract_core::ops::konst::Const::new(tensor.clone())?, TypedFact::try_from(tensor)?))
            };
            let (op, fact) =
                constant().map_err(|e| ModelRejection::WrongShape.err(format!("parameter {}: {e}", p.name)))?;
            let outlet = baked.inputs.remove(at);
            let node = baked.node_mut(outlet.node);
            node.op = Box::new(op);
            node.outputs[0].fact = fact;
        }
        Ok(baked)
    }

    /// The baked inference graph planned for exactly `n` candidates and `k`
    /// history items: the symbols bound, then optimized.
    pub(super) fn build_shaped_plan(baked: &TypedModel, n: usize, k: usize) -> TractResult<Plan> {
        let mut values = std::collections::HashMap::new();
        values.insert(baked.symbols.sym("N"), TDim::from(n as i64));
        values.insert(baked.symbols.sym("K"), TDim::from(k as i64));
        baked.set_symbols(&values)?.into_optimized()?.into_runnable()
    }

    pub(super) fn build_plan(what: &str, model: &TypedModel) -> Result<Plan> {
        let build = || -> TractResult<Plan> { model.clone().into_optimized()?.into_runnable() };
        build().map_err(|e| ModelRejection::Malformed.err(format!("{what}: tract cannot build the graph ({e})")))
    }
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
    pub(crate) fn flat(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.tensors.iter().map(|t| t.len()).sum());
        for t in &self.tensors {
            if let Ok(values) = t.try_as_plain_ram().and_then(|v| v.as_slice::<f32>()) {
                out.extend_from_slice(values);
            }
        }
        out
    }

    /// The inverse of `flat`.
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
    baked: Graph,
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
    Ok(float_slice(t)?.to_vec())
}

/// A float tensor's values in row-major order, without copying them.
fn float_slice(t: &TValue) -> Result<&[f32]> {
    t.try_as_plain_ram().and_then(|v| v.as_slice::<f32>()).map_err(|e| Error::Internal(format!("output: {e}")))
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
            check_files(package, &model.manifest.files)?;
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
        check_files(package, &manifest.files)?;
        manifest.check_schema()?;
        let files = package.files();
        let inference = check_graph("inference", files[LOADED_GRAPHS[0]], &manifest.graphs.inference)?;
        let train_step = check_graph("train_step", files[LOADED_GRAPHS[1]], &manifest.graphs.train_step)?;
        let weights = Weights::from_bytes(&manifest, &package.weights)?;
        let baked = bake_weights(&inference, &manifest, &weights)?;
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
        let out = self.run_step(weights, inputs, labels, sample_weights)?;
        let mut sum = vec![0f32; self.manifest.weights.total_count];
        self.add_gradients(&out, inputs, &mut sum)?;
        let gradients = self.manifest.parameters.iter().map(|p| sum[p.offset / 4..][..p.count].to_vec()).collect();
        let p = self.manifest.parameters.len();
        Ok(StepOutput { loss: step_loss(&out[0])?, gradients, scores: floats(&out[p + 1])? })
    }

    /// The training step for local SGD: adds every gradient into `sum` (all
    /// parameters flattened in manifest order, as `Weights::flat`) and
    /// returns the loss. No gradient is copied out of the graph's outputs.
    pub(crate) fn accumulate_step(
        &self,
        weights: &Weights,
        inputs: &ScoreInputs,
        labels: &[f32],
        sample_weights: &[f32],
        sum: &mut [f32],
    ) -> Result<f32> {
        let out = self.run_step(weights, inputs, labels, sample_weights)?;
        self.add_gradients(&out, inputs, sum)?;
        step_loss(&out[0])
    }

    /// Adds the gradients of a training step's outputs into `sum`: whole
    /// gradients element by element, an id table's rows at the rows their
    /// ids name.
    fn add_gradients(&self, out: &[TValue], inputs: &ScoreInputs, sum: &mut [f32]) -> Result<()> {
        let short = || Error::Internal("training step gradients do not fit the parameters".into());
        if sum.len() != self.manifest.weights.total_count {
            return Err(short());
        }
        for (p, g) in self.manifest.parameters.iter().zip(&out[1..]) {
            let g = float_slice(g)?;
            let dst = &mut sum[p.offset / 4..][..p.count];
            let ids = match p.gradient_rows_of.as_deref() {
                None => {
                    if g.len() != dst.len() {
                        return Err(short());
                    }
                    dst.iter_mut().zip(g).for_each(|(s, v)| *s += v);
                    continue;
                }
                Some("item_ids") => &inputs.item_ids,
                Some("history_ids") => &inputs.history_ids,
                Some(_) => return Err(short()),
            };
            let width = p.count / p.shape[0];
            if g.len() != ids.len() * width {
                return Err(short());
            }
            for (&id, row) in ids.iter().zip(g.chunks_exact(width)) {
                let at = usize::try_from(id).ok().filter(|&r| r < p.shape[0]).ok_or_else(short)? * width;
                dst[at..at + width].iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
        }
        Ok(())
    }

    fn run_step(
        &self,
        weights: &Weights,
        inputs: &ScoreInputs,
        labels: &[f32],
        sample_weights: &[f32],
    ) -> Result<TVec<TValue>> {
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
        if out.len() != self.manifest.parameters.len() + 2 {
            return Err(Error::Internal("training step returned the wrong number of outputs".into()));
        }
        Ok(out)
    }
}

fn step_loss(t: &TValue) -> Result<f32> {
    Ok(float_slice(t)?.first().copied().unwrap_or(f32::NAN))
}

/// The built-in package, verified and planned once per process.
/// What follows a package's signature check, without it (the signature
/// keeps everything else out; fuzzing looks behind it): the manifest, the
/// files against it, the graphs, the weights and the probe run.
pub(crate) fn build_unsigned(package: &ModelPackage) -> Result<()> {
    Model::build(package, sha256_hex(&package.manifest)).map(drop)
}

/// One graph file as this build's loader reads it (NNEF or ONNX), checked
/// against the built-in manifest's inference inputs and outputs, and planned.
pub(crate) fn check_inference_graph(bytes: &[u8]) -> Result<()> {
    let manifest: Manifest = serde_json::from_slice(&ModelPackage::builtin().manifest)?;
    let graph = check_graph("inference", bytes, &manifest.graphs.inference)?;
    build_plan("inference", &graph).map(drop)
}

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
