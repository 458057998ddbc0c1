//! The package as bytes: its files, the one built into the library, and the
//! release key that signs it.

use super::*;

/// The package that ships inside the library.
pub(crate) const BUILTIN_MANIFEST: &[u8] = include_bytes!("../../../models/ranker-v1/manifest.json");
pub(super) const BUILTIN_SIGNATURE: &[u8] = include_bytes!("../../../models/ranker-v1/manifest.sig");
pub(super) const BUILTIN_WEIGHTS: &[u8] = include_bytes!("../../../models/ranker-v1/weights.bin");
// Only the graphs of the format this library loads are built in.
#[cfg(feature = "onnx")]
pub(super) const BUILTIN_ONNX: [&[u8]; 2] = [
    include_bytes!("../../../models/ranker-v1/inference.onnx"),
    include_bytes!("../../../models/ranker-v1/train_step.onnx"),
];
#[cfg(not(feature = "onnx"))]
pub(super) const BUILTIN_ONNX: [&[u8]; 2] = [&[], &[]];
#[cfg(not(feature = "onnx"))]
pub(super) const BUILTIN_NNEF: [&[u8]; 2] = [
    include_bytes!("../../../models/ranker-v1/inference.nnef.tar"),
    include_bytes!("../../../models/ranker-v1/train_step.nnef.tar"),
];
#[cfg(feature = "onnx")]
pub(super) const BUILTIN_NNEF: [&[u8]; 2] = [&[], &[]];
/// Hearth's release key (Ed25519, hex), which signs the built-in package.
/// Always trusted; apps add their coordinator's key in `HearthConfig`.
pub const RELEASE_MODEL_KEY: &str = include_str!("../../../models/release-key.pub");

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
pub(super) const LOADED_GRAPHS: [usize; 2] = [2, 3];
#[cfg(not(feature = "onnx"))]
pub(super) const LOADED_GRAPHS: [usize; 2] = [5, 6];
pub(super) const GRAPH_FILES: [usize; 4] = [2, 3, 5, 6];

/// ONNX ops a graph may use: the ones tract is known to run for these graphs.
#[cfg(feature = "onnx")]
pub(super) const KNOWN_OPS: &[&str] = &[
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
pub(super) const MODEL_NAME: &str = "hearth-ranker";
pub(super) const MANIFEST_FORMAT: u32 = 1;
/// Larger packages are refused before anything is parsed.
pub(super) const MAX_PACKAGE_BYTES: usize = 16 << 20;

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

    pub(super) fn files(&self) -> [&[u8]; 7] {
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
