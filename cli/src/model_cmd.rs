//! `hearth model ...`: keys and signatures for model packages.
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
