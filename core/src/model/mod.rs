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

pub(crate) mod features;
mod manifest;
#[cfg(not(feature = "onnx"))]
mod nnef_graphs;
#[cfg(feature = "onnx")]
mod onnx_graphs;
mod package;
pub(crate) mod training;

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

pub use crate::error::ModelRejection;
use crate::error::{Error, Result};
use crate::model::features::{CATEGORY_BUCKETS, CONTEXT_WIDTH, ID_ROWS, ITEM_WIDTH, USER_WIDTH};
use crate::store::crypto::sha256_hex;
pub(crate) use manifest::*;
use package::*;
pub use package::{ModelPackage, PACKAGE_FILES, RELEASE_MODEL_KEY};

#[cfg(not(any(feature = "onnx", feature = "nnef")))]
compile_error!("hearth-core loads model graphs from ONNX or NNEF: enable the feature `onnx` or `nnef`");

#[cfg(not(feature = "onnx"))]
use nnef_graphs::{Graph, bake_weights, build_plan, build_shaped_plan, check_graph};
#[cfg(feature = "onnx")]
use onnx_graphs::{Graph, bake_weights, build_plan, build_shaped_plan, check_graph};

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

/// Runs tract on a package's graph. tract panics on some malformed graphs
/// (an axis beyond a tensor's rank, found by fuzzing): such a panic is the
/// package's fault, a `Malformed` package, not the device's. The library
/// unwinds on panic (the workspace's release profile), so it is caught here.
pub(super) fn in_tract<T>(what: &str, f: impl FnOnce() -> TractResult<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(ModelRejection::Malformed.err(format!("{what}: tract cannot build the graph ({e})"))),
        Err(_) => Err(ModelRejection::Malformed.err(format!("{what}: tract failed on the graph (a panic, caught)"))),
    }
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
    use crate::random::SplitMix;

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
