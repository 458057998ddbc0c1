//! `hearth model ...`: keys and signatures for model packages, and the NNEF
//! copies of their graphs.
//!
//! A package's manifest is signed with Ed25519; devices accept it when the
//! signature verifies under Hearth's release key or a key the app trusts in
//! `HearthConfig::trusted_model_keys` (a coordinator's).

use std::path::Path;

use anyhow::{Context, Result, bail};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn load_key(path: &Path) -> Result<Ed25519KeyPair> {
    let der = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|e| anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key: {e}", path.display()))
}

/// Writes a new PKCS#8 key to `out` (mode 0600) and returns its public key.
pub(crate) fn keygen(out: &Path) -> Result<String> {
    if out.exists() {
        bail!("{} exists; not overwriting a key", out.display());
    }
    let der =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| anyhow::anyhow!("key generation failed"))?;
    let pair = Ed25519KeyPair::from_pkcs8(der.as_ref()).map_err(|_| anyhow::anyhow!("generated key unreadable"))?;
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(out)?.write_all(der.as_ref())?;
    }
    Ok(hex(pair.public_key().as_ref()))
}

/// Signs `dir/manifest.json` into `dir/manifest.sig`; returns the public key.
pub(crate) fn sign(key: &Path, dir: &Path) -> Result<String> {
    let pair = load_key(key)?;
    let manifest =
        std::fs::read(dir.join("manifest.json")).with_context(|| format!("reading {}/manifest.json", dir.display()))?;
    std::fs::write(dir.join("manifest.sig"), pair.sign(&manifest).as_ref())?;
    Ok(hex(pair.public_key().as_ref()))
}

/// The public key of a private key file.
pub(crate) fn public(key: &Path) -> Result<String> {
    Ok(hex(load_key(key)?.public_key().as_ref()))
}

/// The graphs a package carries in both formats: (ONNX file, NNEF file).
pub(crate) const NNEF_GRAPHS: [(&str, &str); 2] =
    [("inference.onnx", "inference.nnef.tar"), ("train_step.onnx", "train_step.nnef.tar")];

/// Converts one ONNX graph into tract's NNEF (a tar of `graph.nnef` and any
/// constant tensors). The graph is typed and decluttered first, so the NNEF
/// holds tract-core ops only and a library with `tract-nnef` alone loads it.
/// The output depends only on the input bytes (sorted entries, fixed
/// timestamps), so `models/check.sh` can compare it byte for byte.
pub(crate) fn onnx_to_nnef(bytes: &[u8]) -> Result<Vec<u8>> {
    use tract_onnx::prelude::*;
    let typed = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .map_err(|e| anyhow::anyhow!("tract cannot type the ONNX graph: {e:#}"))?;
    tract_nnef::nnef()
        .write_to_tar_with_config(&typed, Vec::new(), false, true)
        .map_err(|e| anyhow::anyhow!("tract cannot write the graph as NNEF: {e:#}"))
}

/// Runs both graphs through tract on the same pseudo-random inputs (every
/// symbolic dimension set to a small count) and fails unless every output
/// agrees: the NNEF must compute what the ONNX does.
fn same_outputs(onnx_bytes: &[u8], nnef_bytes: &[u8]) -> Result<()> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::internal::DimLike;
    let from_onnx = tract_onnx::onnx().model_for_read(&mut &onnx_bytes[..])?.into_optimized()?.into_runnable()?;
    let typed = tract_nnef::nnef().model_for_read(&mut &nnef_bytes[..])?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut inputs: TVec<TValue> = tvec![];
    for outlet in &typed.inputs {
        let fact = typed.outlet_fact(*outlet)?;
        let shape = fact
            .shape
            .iter()
            .enumerate()
            .map(|(axis, d)| d.to_usize().or_else(|_| Ok::<usize, anyhow::Error>(3 + axis * 2)))
            .collect::<Result<Vec<usize>>>()?;
        let len: usize = shape.iter().product();
        let tensor = match fact.datum_type {
            DatumType::F32 => {
                let v: Vec<f32> = (0..len).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
                Tensor::from_shape(&shape, &v)?
            }
            // Ids: rows of the id tables.
            DatumType::I64 => {
                let v: Vec<i64> = (0..len).map(|_| (next() % 4096) as i64).collect();
                Tensor::from_shape(&shape, &v)?
            }
            other => bail!("input {} of type {other:?}", typed.node(outlet.node).name),
        };
        inputs.push(tensor.into_tvalue());
    }
    let from_nnef = typed.into_optimized()?.into_runnable()?;
    let want = from_onnx.run(inputs.clone())?;
    let got = from_nnef.run(inputs)?;
    if want.len() != got.len() {
        bail!("{} outputs from ONNX, {} from NNEF", want.len(), got.len());
    }
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        let (w, g) = (w.to_plain_array_view::<f32>()?, g.to_plain_array_view::<f32>()?);
        if w.shape() != g.shape() {
            bail!("output {i}: shape {:?} from ONNX, {:?} from NNEF", w.shape(), g.shape());
        }
        for (a, b) in w.iter().zip(g.iter()) {
            // A NaN on either side is not close.
            let close = (a - b).abs() <= 1e-5 + 1e-5 * a.abs();
            if !close {
                bail!("output {i}: {a} from ONNX, {b} from NNEF");
            }
        }
    }
    Ok(())
}

/// Writes `dir/<graph>.nnef.tar` beside each `dir/<graph>.onnx`, each checked
/// to give the ONNX graph's outputs; returns the files written.
pub(crate) fn nnef(dir: &Path) -> Result<Vec<String>> {
    let mut written = Vec::new();
    for (onnx, nnef) in NNEF_GRAPHS {
        let bytes = std::fs::read(dir.join(onnx)).with_context(|| format!("reading {}/{onnx}", dir.display()))?;
        let tar = onnx_to_nnef(&bytes).with_context(|| format!("converting {onnx}"))?;
        same_outputs(&bytes, &tar)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .with_context(|| format!("{nnef} does not compute what {onnx} does"))?;
        std::fs::write(dir.join(nnef), tar).with_context(|| format!("writing {}/{nnef}", dir.display()))?;
        written.push(nnef.to_string());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package_file(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/ranker-v1").join(name)).unwrap()
    }

    #[test]
    fn the_nnef_graphs_are_the_committed_ones_and_compute_the_same() {
        for (onnx, nnef) in NNEF_GRAPHS {
            let onnx = package_file(onnx);
            let tar = onnx_to_nnef(&onnx).unwrap();
            assert_eq!(tar, onnx_to_nnef(&onnx).unwrap(), "{nnef}: the same ONNX gives the same bytes");
            assert!(tar == package_file(nnef), "{nnef} differs from what `hearth model nnef` writes now");
            same_outputs(&onnx, &tar).unwrap();
        }
        // Another graph's NNEF does not pass for this one.
        let err = same_outputs(&package_file("inference.onnx"), &package_file("train_step.nnef.tar"));
        assert!(err.is_err());
    }
}
