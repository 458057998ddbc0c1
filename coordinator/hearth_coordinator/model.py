"""The model as data: weights.bin split into named arrays by the manifest, and
each new global model's manifest, signed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def load(model_dir: str | Path) -> tuple[dict, list[tuple[str, np.ndarray]]]:
    """The manifest and the parameters, named and shaped, in manifest order."""
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_bytes())
    flat = np.frombuffer((model_dir / manifest["weights"]["file"]).read_bytes(), dtype="<f4")
    if flat.size != manifest["weights"]["total_count"]:
        raise ValueError("weights.bin does not match the manifest")
    params = []
    for p in manifest["parameters"]:
        start = p["offset"] // 4
        params.append((p["name"], flat[start : start + p["count"]].reshape(p["shape"]).astype(np.float32)))
    return manifest, params


def weights_bytes(params: list[tuple[str, np.ndarray]]) -> bytes:
    """weights.bin: the parameters concatenated, little-endian float32."""
    return b"".join(np.ascontiguousarray(a, dtype="<f4").tobytes() for _, a in params)


def signed_manifest(
    manifest: dict, version: int, weights: bytes, key: Ed25519PrivateKey | None
) -> tuple[bytes, bytes]:
    """The manifest of a new version over `weights`, and its Ed25519
    signature (empty without a key)."""
    m = json.loads(json.dumps(manifest))
    m["version"] = version
    m["files"]["weights"]["bytes"] = len(weights)
    m["files"]["weights"]["sha256"] = hashlib.sha256(weights).hexdigest()
    data = json.dumps(m, sort_keys=True).encode("utf-8")
    return data, (key.sign(data) if key is not None else b"")


def load_signing_key(path: str) -> Ed25519PrivateKey | None:
    """An Ed25519 key from PKCS#8 DER (what `hearth model keygen` and ring
    write), or None for an empty path."""
    if not path:
        return None
    key = serialization.load_der_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key is not Ed25519")
    return key
