"""Checks of the coordinator's aggregation and model handling, without a
SuperLink (tests/federated/run.sh runs them; plain asserts, no pytest)."""

import sys
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hearth_coordinator import model, strategy  # noqa: E402

MODEL = Path(__file__).resolve().parents[2] / "models" / "ranker-v1"


def test_the_model_loads_in_manifest_order():
    manifest, params = model.load(MODEL)
    assert [n for n, _ in params] == [p["name"] for p in manifest["parameters"]]
    assert [list(a.shape) for _, a in params] == [p["shape"] for p in manifest["parameters"]]
    assert model.weights_bytes(params) == (MODEL / "weights.bin").read_bytes()


def test_the_manifest_is_signed_over_the_new_weights():
    manifest, params = model.load(MODEL)
    key = Ed25519PrivateKey.generate()
    weights = model.weights_bytes(params)
    data, sig = model.signed_manifest(manifest, 7, weights, key)
    key.public_key().verify(sig, data)
    import hashlib, json
    m = json.loads(data)
    assert m["version"] == 7 and m["files"]["weights"]["sha256"] == hashlib.sha256(weights).hexdigest()


def test_updates_above_the_bound_or_misshapen_are_refused():
    shapes = [("a", (2, 2)), ("b", (3,))]
    ok = [("a", np.full((2, 2), 0.1, np.float32)), ("b", np.zeros(3, np.float32))]
    assert strategy.check_delta(ok, shapes, 1.0)[0]
    big = [("a", np.full((2, 2), 1.0, np.float32)), ("b", np.zeros(3, np.float32))]
    accepted, norm, _ = strategy.check_delta(big, shapes, 1.0)
    assert not accepted and abs(norm - 2.0) < 1e-9
    assert not strategy.check_delta([("a", np.zeros((4,), np.float32)), ok[1]], shapes, 1.0)[0]
    assert not strategy.check_delta([ok[1], ok[0]], shapes, 1.0)[0]
    nan = [("a", np.full((2, 2), np.nan, np.float32)), ok[1]]
    assert not strategy.check_delta(nan, shapes, 1.0)[0]


def test_the_mean_is_unweighted_and_the_noise_is_calibrated_to_c_over_n():
    g = [("w", np.zeros(200_000, np.float32))]
    deltas = [[("w", np.full(200_000, v, np.float32))] for v in (0.0, 0.001, 0.002, 0.003)]
    new, std = strategy.aggregate(g, deltas, 1.0, 0.0, np.random.default_rng(1))
    assert std == 0.0 and np.allclose(new[0][1], 0.0015)
    new, std = strategy.aggregate(g, deltas, 2.0, 1.5, np.random.default_rng(1))
    assert std == 1.5 * 2.0 / 4
    assert abs(float(np.std(new[0][1] - 0.0015)) - std) < 0.01 * std


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"  ok {name}")
