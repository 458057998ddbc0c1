//! The manifest (the parts the device acts on; the rest documents), the
//! trusted keys, and the checks a package passes before it is loaded.

use super::*;

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
    pub(super) fn gradient_output(&self) -> String {
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

pub(super) fn verify_signature(package: &ModelPackage, keys: &[TrustedKey]) -> Result<()> {
    if package.signature.len() != 64 {
        return Err(ModelRejection::BadSignature.err(format!("{} bytes, not 64", package.signature.len())));
    }
    let ok = keys
        .iter()
        .any(|k| UnparsedPublicKey::new(&ED25519, &k.0).verify(&package.manifest, &package.signature).is_ok());
    if ok { Ok(()) } else { Err(ModelRejection::BadSignature.err("no trusted key verifies the manifest")) }
}

pub(super) fn check_file(what: &str, bytes: &[u8], entry: &FileEntry) -> Result<()> {
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
pub(super) fn check_files(package: &ModelPackage, files: &Files) -> Result<()> {
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
    pub(super) fn check_schema(&self) -> Result<()> {
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
