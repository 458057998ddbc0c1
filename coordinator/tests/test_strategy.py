"""Checks of the coordinator's aggregation and model handling, without a
SuperLink (tests/federated/run.sh runs them; plain asserts, no pytest)."""

import sys
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hearth_coordinator import model, server_opt, strategy  # noqa: E402

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


def test_fedavg_at_rate_one_adds_the_noisy_mean():
    g = [("a", np.array([1.0, 2.0], np.float32)), ("b", np.array([0.5], np.float32))]
    deltas = [[("a", np.array([0.1, -0.2], np.float32)), ("b", np.array([0.3], np.float32))],
              [("a", np.array([0.3, 0.0], np.float32)), ("b", np.array([-0.1], np.float32))]]
    new, _ = strategy.aggregate(g, deltas, 1.0, 0.0, np.random.default_rng(0), server_opt.ServerOptimizer())
    assert np.allclose(new[0][1], [1.2, 1.9]) and np.allclose(new[1][1], [0.6])
    assert all(a.dtype == np.float32 for _, a in new)
    half = server_opt.ServerOptimizer(kind="fedavg", lr=0.5)
    assert np.allclose(strategy.aggregate(g, deltas, 1.0, 0.0, np.random.default_rng(0), half)[0][0][1], [1.1, 1.95])


def test_fedavgm_accumulates_a_velocity():
    opt = server_opt.ServerOptimizer(kind="fedavgm", lr=1.0, momentum=0.9)
    w = [("w", np.zeros(3, np.float32))]
    d = [("w", np.array([0.1, 0.0, -0.2]))]
    w = opt.step(w, d)
    assert np.allclose(w[0][1], [0.1, 0.0, -0.2])
    w = opt.step(w, d)  # v = 0.9 d + d
    assert np.allclose(w[0][1], [0.1 + 0.19, 0.0, -0.2 - 0.38])


def test_fedadam_moves_each_weight_by_about_its_rate_whatever_the_scale():
    opt = server_opt.ServerOptimizer(kind="fedadam", lr=0.02)
    w = [("w", np.zeros(4, np.float32))]
    # Large, tiny, negative and zero means: Adam's first step is lr * sign.
    d = [("w", np.array([0.5, 1e-3, -3e-3, 0.0]))]
    w = opt.step(w, d)
    assert np.allclose(w[0][1], [0.02, 0.02, -0.02, 0.0], atol=1e-4)
    # A steady direction keeps the same step (bias correction): after 3 steps, 3 lr.
    w = opt.step(opt.step(w, d), d)
    assert np.allclose(w[0][1], [0.06, 0.06, -0.06, 0.0], atol=1e-3)
    # By hand, step 4 with the mean flipped: m = 0.9^4-weighted history.
    m1 = sum(0.1 * 0.9 ** k * (-0.5) for k in range(1, 4)) + 0.1 * 0.5
    m2 = sum(0.01 * 0.99 ** k * 0.25 for k in range(0, 4))
    expect = 0.06 - 0.02 * (m1 / (1 - 0.9**4)) / (np.sqrt(m2 / (1 - 0.99**4)) + 1e-6)
    w = opt.step(w, [("w", np.array([-0.5, 0.0, 0.0, 0.0]))])
    assert abs(float(w[0][1][0]) - expect) < 1e-6, (float(w[0][1][0]), expect)


def test_the_server_rate_can_fall_linearly_over_the_rounds():
    opt = server_opt.ServerOptimizer(kind="fedavg", lr=0.1, lr_final=0.01, rounds=4)
    assert [round(opt.rate(k), 10) for k in (1, 2, 3, 4, 5)] == [0.1, 0.07, 0.04, 0.01, 0.01]
    w = [("w", np.zeros(1, np.float32))]
    for _ in range(4):
        w = opt.step(w, [("w", np.ones(1))])
    assert abs(float(w[0][1][0]) - (0.1 + 0.07 + 0.04 + 0.01)) < 1e-6
    assert server_opt.ServerOptimizer(lr=0.3).rate(50) == 0.3


def test_a_bad_server_optimizer_is_refused():
    for bad in (dict(kind="sgd"), dict(lr=0.0), dict(lr=float("nan")), dict(kind="fedavgm", momentum=1.0),
                dict(lr_final=-1.0), dict(rounds=0)):
        try:
            server_opt.ServerOptimizer(**bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"  ok {name}")
