"""Checks of the coordinator's aggregation and model handling, without a
SuperLink (tests/federated/run.sh runs them; plain asserts, no pytest)."""

import io
import json
import logging
import random
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, Metadata, MetricRecord, RecordDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hearth_coordinator import model, server_app, server_opt, strategy  # noqa: E402

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


# ---- Replies as the SuperLink hands them to the ServerApp (issue 21) ----

SHAPES = [("w", (3, 4)), ("b", (4,))]
LABELS = list("abcdefghij")  # 10 labels: 2 bytes of bits, the last 6 unused
BITS = b"\x05\x02"


def metadata(node):
    return Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0, reply_to_message_id="m",
                    group_id="1", created_at=0.0, ttl=600.0, message_type="train")


def reply_of(content, node=7):
    return Message(content=content, metadata=metadata(node))


def force(record, key, value):
    """Sets a value the record's own checks would refuse (what a peer's
    bytes may decode to)."""
    record.__dict__["_data"][key] = value


def a_delta(nrng, shapes=SHAPES, scale=0.1):
    return [(n, (nrng.standard_normal(shape) * scale).astype(np.float32)) for n, shape in shapes]


def valid_content(delta, examples=5.0, report=True):
    rd = RecordDict({"arrays": strategy.to_arrays(delta), "metrics": MetricRecord({"num-examples": examples})})
    if report:
        rd["segment-report"] = ConfigRecord({"bits": BITS, "bit-epsilon": 1.0})
    return rd


def make(**kw):
    with Logged():  # FedAvg warns that it evaluates on no device
        return strategy.HearthFedAvg(**kw)


def hearth(**kw):
    s = make(clip_norm=1.0, noise_multiplier=0.0, min_nodes=1, seed=0, segment_labels=LABELS, **kw)
    s.current = [(n, np.zeros(shape, np.float32)) for n, shape in SHAPES]
    return s


def mean_of(deltas):
    return [np.mean([d[i][1].astype(np.float64) for d in deltas], axis=0) for i in range(len(deltas[0]))]


class Logged(logging.Handler):
    """The WARNINGs Flower's logger gets inside the block (its console
    handlers are set aside meanwhile)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        self.logger = logging.getLogger("flwr")
        self.saved = list(self.logger.handlers)
        for h in self.saved:
            self.logger.removeHandler(h)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        for h in self.saved:
            self.logger.addHandler(h)


def test_a_dense_weight_is_divided_out_of_the_dense_arrays_of_the_mean_only():
    s = hearth(dense_weight=0.25, dense_names=["w"])
    nrng = np.random.default_rng(3)
    deltas = [a_delta(nrng) for _ in range(3)]
    arrays, _ = s.aggregate_train(1, [reply_of(valid_content(d), node=i) for i, d in enumerate(deltas)])
    new = dict(strategy.from_arrays(arrays))
    want = mean_of(deltas)
    assert np.allclose(new["w"], want[0] / 0.25, atol=1e-6) and np.allclose(new["b"], want[1], atol=1e-6)
    assert s.rounds[-1]["dense_weight"] == 0.25
    plain = hearth()
    arrays, _ = plain.aggregate_train(1, [reply_of(valid_content(d), node=i) for i, d in enumerate(deltas)])
    assert np.allclose(dict(strategy.from_arrays(arrays))["w"], want[0], atol=1e-6)
    assert "dense_weight" not in plain.rounds[-1]
    for bad in (0.0, 1e-300, -1.0, 1.5, float("nan")):
        try:
            hearth(dense_weight=bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted dense-weight {bad}")


def test_a_reply_whose_num_examples_is_not_a_count_is_dropped_and_the_round_goes_on():
    nrng = np.random.default_rng(3)
    good = [a_delta(nrng) for _ in range(2)]
    for bad in (float("inf"), float("nan"), -5.0, 2.5, [5.0]):
        s = hearth()
        replies = [reply_of(valid_content(d)) for d in good]
        replies.insert(1, reply_of(valid_content(a_delta(nrng), examples=bad), node=9))
        with Logged() as logged:
            arrays, _ = s.aggregate_train(1, replies)
        r = s.rounds[-1]
        assert r["participants"] == 2 and r["dropped"] == 1 and r["examples"] == 10, (bad, r)
        assert any("node 9" in line and "num-examples" in line for line in logged.lines), (bad, logged.lines)
        got = strategy.from_arrays(arrays)
        assert all(np.allclose(g, m, atol=1e-7) for (_, g), m in zip(got, mean_of(good)))


def test_a_bad_segment_report_drops_its_reply_and_the_others_are_estimated():
    nrng = np.random.default_rng(4)
    bads = [
        {"bit-epsilon": 1.0},  # no bits
        {"bits": BITS},  # no bit-epsilon
        {"bits": "ab", "bit-epsilon": 1.0},
        {"bits": 7, "bit-epsilon": 1.0},
        {"bits": [5, 2], "bit-epsilon": 1.0},
        {"bits": b"\x05", "bit-epsilon": 1.0},  # a byte short for 10 labels
        {"bits": b"\x05\x06", "bit-epsilon": 1.0},  # a bit set past the labels
        {"bits": BITS, "bit-epsilon": float("nan")},
        {"bits": BITS, "bit-epsilon": float("inf")},
        {"bits": BITS, "bit-epsilon": -1.0},
        {"bits": BITS, "bit-epsilon": "1.0"},
        {"bits": BITS, "bit-epsilon": 1.0, "more": 1},
    ]
    for bad in bads:
        s = hearth()
        content = valid_content(a_delta(nrng), report=False)
        content["segment-report"] = ConfigRecord()
        for k, v in bad.items():
            force(content["segment-report"], k, v)
        replies = [reply_of(content, node=9)] + [reply_of(valid_content(a_delta(nrng))) for _ in range(2)]
        with Logged() as logged:
            arrays, _ = s.aggregate_train(1, replies)
        r = s.rounds[-1]
        assert arrays is not None and r["participants"] == 2 and r["dropped"] == 1, (bad, r)
        assert r["segments"]["reports"] == 2, (bad, r)
        assert any("node 9" in line and "segment-report" in line for line in logged.lines), (bad, logged.lines)


def npy(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def test_array_data_that_is_not_npy_of_its_declared_array_is_dropped():
    nrng = np.random.default_rng(5)
    good = npy(np.zeros((3, 4), np.float32))
    datas = [
        b"not npy at all",
        b"",
        good[:-5],  # truncated
        b"PK\x03\x04" + bytes(40),  # a zip's (npz) header
        npy(np.zeros((3, 4), np.float64)),  # declared float32
        npy(np.zeros((4, 3), np.float32)),  # declared (3, 4)
        npy(np.zeros((3, 4), ">f4")),  # big-endian
        npy(np.array([[None] * 4] * 3, dtype=object)),  # pickled objects
    ]
    for data in datas:
        s = hearth()
        content = valid_content(a_delta(nrng))
        force(content["arrays"], "w", Array("float32", (3, 4), "numpy.ndarray", data))
        replies = [reply_of(valid_content(a_delta(nrng))), reply_of(content, node=9)]
        with Logged() as logged:
            arrays, _ = s.aggregate_train(1, replies)
        r = s.rounds[-1]
        assert arrays is not None and r["participants"] == 1 and r["dropped"] == 1, (data[:20], r)
        assert any("node 9" in line and "'w'" in line for line in logged.lines), (data[:20], logged.lines)


def test_empty_and_error_replies_are_dropped_and_logged():
    nrng = np.random.default_rng(6)
    no_content = reply_of(RecordDict(), node=11)
    no_content.__dict__["_content"] = None  # neither content nor error
    replies = [
        Message(error=Error(code=3, reason="the device declined"), metadata=metadata(10)),
        no_content,
        reply_of(RecordDict(), node=12),
        reply_of(valid_content(a_delta(nrng))),
    ]
    s = hearth()
    with Logged() as logged:
        arrays, _ = s.aggregate_train(1, replies)
    assert arrays is not None and s.rounds[-1]["participants"] == 1 and s.rounds[-1]["dropped"] == 3
    for node, why in ((10, "declined"), (11, "empty"), (12, "empty")):
        assert any(f"node {node}" in line and why in line for line in logged.lines), (node, logged.lines)
    s = hearth()
    with Logged() as logged:
        assert s.aggregate_train(2, [replies[0], replies[2]])[0] is None
    assert s.rounds[-1]["participants"] == 0 and s.rounds[-1]["dropped"] == 2
    assert any("no usable update" in line for line in logged.lines)


# Mutations of a valid reply, each of which makes it one to drop.
def _arrays(rd):
    a = rd.get("arrays")
    return a if isinstance(a, ArrayRecord) else None


def _report(rd):
    r = rd.get("segment-report")
    if not isinstance(r, ConfigRecord):
        r = ConfigRecord({"bits": BITS, "bit-epsilon": 1.0})
        force(rd, "segment-report", r)
    return r


def _metrics(rd):
    m = rd.get("metrics")
    if not isinstance(m, MetricRecord):
        m = MetricRecord({"num-examples": 5.0})
        force(rd, "metrics", m)
    return m


def _fresh_arrays(rd, nrng):
    a = strategy.to_arrays(a_delta(nrng))
    force(rd, "arrays", a)
    return a


def mutate(rd, rng, nrng):
    """One random change that makes the reply bad; its name."""
    kind = rng.choice([
        "drop-record", "extra-record", "record-type", "not-a-record", "array-dropped", "array-extra",
        "array-renamed", "arrays-reordered", "array-shape", "array-declared-shape", "array-f64",
        "array-declared-dtype", "array-stype", "array-bad-npy", "array-not-finite", "array-over-norm",
        "array-not-an-array", "examples-value", "examples-missing", "metrics-extra", "bits-missing",
        "epsilon-missing", "bits-type", "bits-length", "bits-padding", "epsilon-value", "report-extra",
    ])
    name, shape = rng.choice(SHAPES)
    if kind == "drop-record":
        rd.__dict__["_data"].pop(rng.choice(["arrays", "metrics"]), None)
    elif kind == "extra-record":
        force(rd, rng.choice(["extra", "config", ""]), rng.choice([ConfigRecord({"x": 1}), MetricRecord({"x": 1.0})]))
    elif kind == "record-type":
        key = rng.choice(["arrays", "metrics", "segment-report"])
        other = {"arrays": MetricRecord({"num-examples": 5.0}), "metrics": ConfigRecord({"num-examples": 5.0}),
                 "segment-report": MetricRecord({"bit-epsilon": 1.0})}[key]
        force(rd, key, other)
    elif kind == "not-a-record":
        force(rd, rng.choice(["arrays", "metrics", "segment-report"]), rng.choice([None, b"x", "x", 3, [1.0]]))
    elif kind == "array-dropped":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        a.__dict__["_data"].pop(name, None)
    elif kind == "array-extra":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        force(a, rng.choice(["extra", "w2", "emb"]), Array(np.zeros(rng.choice([(2,), (3, 4)]), np.float32)))
    elif kind == "array-renamed":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        force(a, name.upper(), a.__dict__["_data"].pop(name, Array(np.zeros(shape, np.float32))))
    elif kind == "arrays-reordered":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        names = [n for n, _ in reversed(SHAPES)]  # not the order sent, whatever order it was in
        reordered = ArrayRecord()
        for n in [n for n in names if n in a] + [n for n in a if n not in names]:
            force(reordered, n, a[n])
        force(rd, "arrays", reordered)
    elif kind == "array-shape":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        force(a, name, Array(np.zeros(rng.choice([(12,), (4, 3), (3, 4, 1), (5,), ()]), np.float32)))
    elif kind == "array-declared-shape":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        force(a, name, Array("float32", rng.choice([(12,), (4, 3), (1,), ()]), "numpy.ndarray",
                             npy(np.zeros(shape, np.float32))))
    elif kind == "array-f64":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        force(a, name, Array(np.zeros(shape, rng.choice([np.float64, np.float16, np.int32]))))
    elif kind == "array-declared-dtype":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        force(a, name, Array(rng.choice(["float64", "int32", "", "f4"]), shape, "numpy.ndarray",
                             npy(np.zeros(shape, np.float32))))
    elif kind == "array-stype":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        force(a, name, Array("float32", shape, rng.choice(["torch.Tensor", "", "npy"]), npy(np.zeros(shape, np.float32))))
    elif kind == "array-bad-npy":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        good = npy(np.zeros(shape, np.float32))
        data = rng.choice([
            bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200))),
            good[: rng.randrange(0, len(good))],
            good[:10] + bytes(rng.randrange(256) for _ in range(60)),
            b"PK\x03\x04" + bytes(rng.randrange(256) for _ in range(60)),
            npy(np.full(shape, None, dtype=object)),
        ])
        force(a, name, Array("float32", shape, "numpy.ndarray", data))
    elif kind == "array-not-finite":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        v = np.zeros(shape, np.float32)
        v.flat[rng.randrange(v.size)] = rng.choice([np.nan, np.inf, -np.inf])
        force(a, name, Array(v))
    elif kind == "array-over-norm":
        force(rd, "arrays", strategy.to_arrays([(n, np.full(s, rng.uniform(0.3, 10.0), np.float32)) for n, s in SHAPES]))
    elif kind == "array-not-an-array":
        a = _arrays(rd) or _fresh_arrays(rd, nrng)
        force(a, name, rng.choice([np.zeros(shape, np.float32), b"\x00" * 48, None, 1.0]))
    elif kind == "examples-value":
        force(_metrics(rd), "num-examples", rng.choice(
            [float("nan"), float("inf"), -float("inf"), -1.0, -1, 0.5, 1e12, 10**7, [5.0], [], "5", None, True, b"5"]))
    elif kind == "examples-missing":
        _metrics(rd).__dict__["_data"].pop("num-examples", None)
    elif kind == "metrics-extra":
        force(_metrics(rd), rng.choice(["loss", "accuracy", ""]), 0.1)
    elif kind == "bits-missing":
        _report(rd).__dict__["_data"].pop("bits", None)
    elif kind == "epsilon-missing":
        _report(rd).__dict__["_data"].pop("bit-epsilon", None)
    elif kind == "bits-type":
        force(_report(rd), "bits", rng.choice(["ab", 5, 1.5, True, [5, 2], None, bytearray(BITS), [b"\x05", b"\x02"]]))
    elif kind == "bits-length":
        force(_report(rd), "bits", rng.choice([b"", b"\x05", b"\x05\x02\x00", bytes(16)]))
    elif kind == "bits-padding":
        force(_report(rd), "bits", bytes([rng.randrange(256), rng.randrange(4, 256)]))
    elif kind == "epsilon-value":
        force(_report(rd), "bit-epsilon", rng.choice(
            [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 0, "1.0", b"1", None, True, [1.0]]))
    elif kind == "report-extra":
        force(_report(rd), rng.choice(["labels", "epsilon", ""]), rng.choice([1, "x", b"x"]))
    return kind


def malformed(rng, nrng, node):
    """A reply made bad in one to three ways, or a whole reply of the wrong kind."""
    whole = rng.random()
    if whole < 0.05:
        return Message(error=Error(code=rng.randrange(5), reason="no"), metadata=metadata(node)), ["error"]
    if whole < 0.1:
        m = reply_of(RecordDict(), node)
        if rng.random() < 0.5:
            m.__dict__["_content"] = None
        return m, ["empty"]
    rd = valid_content(a_delta(nrng), report=rng.random() < 0.5)
    kinds = [mutate(rd, rng, nrng) for _ in range(rng.randint(1, 3))]
    return reply_of(rd, node), kinds


def test_random_malformed_replies_never_raise_and_only_the_good_ones_are_averaged():
    rng = random.Random(21)
    nrng = np.random.default_rng(21)
    seen = set()
    for case in range(600):
        s = hearth()
        good = [a_delta(nrng) for _ in range(rng.randint(0, 3))]
        with_report = [rng.random() < 0.7 for _ in good]
        replies = [reply_of(valid_content(d, report=w), node=100 + i) for i, (d, w) in enumerate(zip(good, with_report))]
        bad = [malformed(rng, nrng, node=200 + i) for i in range(rng.randint(1, 3))]
        for _, kinds in bad:
            seen.update(kinds)
        replies += [m for m, _ in bad]
        rng.shuffle(replies)
        with Logged() as logged:
            try:
                arrays, _ = s.aggregate_train(1, replies)
            except Exception as e:
                raise AssertionError(f"case {case}: {[k for _, k in bad]} raised {e!r}") from e
        r = s.rounds[-1]
        context = (case, [k for _, k in bad], r)
        assert r["participants"] == len(good) and r["dropped"] == len(bad), context
        assert r["examples"] == 5 * len(good), context
        assert sum(f"node {200 + i} " in line for line in logged.lines for i in range(len(bad))) == len(bad), context
        if not good:
            assert arrays is None, context
            continue
        got = strategy.from_arrays(arrays)
        assert all(np.allclose(g, m, atol=1e-7) for (_, g), m in zip(got, mean_of(good))), context
        if any(with_report):
            assert r["segments"]["reports"] == sum(with_report), context
    assert len(seen) >= 29, seen  # every mutation drawn at least once


# ---- Noise against the model (issue 21, defect 5) ----

def test_noise_large_against_the_model_is_warned_and_can_be_refused():
    _, params = model.load(MODEL)
    shapes = [(n, a.shape) for n, a in params]
    # The run of the issue: 2 devices, z = 1, C = 1, std 0.5 on each of the
    # 144,935 coordinates, a noise norm ~190 against a model norm ~41.
    assert 4.0 < strategy.noise_ratio(1.0, 1.0, 2, params) < 5.0
    # tests/federated/run.sh's run (10 devices, z = 0.05) and the CLI's (3).
    assert strategy.noise_ratio(0.05, 1.0, 10, params) < 0.05
    assert strategy.noise_ratio(0.05, 1.0, 3, params) < 0.2
    assert strategy.noise_ratio(0.0, 1.0, 2, params) == 0.0
    # A model at zero is measured against C: 1 * 1 / 4 * sqrt(100) / 1.
    assert strategy.noise_ratio(1.0, 1.0, 4, [("w", np.zeros(100, np.float32))]) == 2.5
    nrng = np.random.default_rng(7)
    for check, applied in (("warn", True), ("refuse", False)):
        s = make(clip_norm=1.0, noise_multiplier=1.0, min_nodes=2, seed=0, noise_check=check)
        s.current = params
        replies = [reply_of(valid_content(a_delta(nrng, shapes, 0.001), report=False)) for _ in range(2)]
        with Logged() as logged:
            arrays, _ = s.aggregate_train(1, replies)
        assert any("noise is large" in line and "z*C/n = 1.0*1.0/2" in line for line in logged.lines), logged.lines
        assert (arrays is not None) == applied and s.rounds[-1]["applied"] == applied, (check, s.rounds)
        assert s.rounds[-1]["participants"] == 2 and s.rounds[-1]["noise_ratio"] > 4.0
    s = make(clip_norm=1.0, noise_multiplier=0.05, min_nodes=10, seed=0, noise_check="refuse")
    s.current = params
    replies = [reply_of(valid_content(a_delta(nrng, shapes, 0.001), report=False)) for _ in range(10)]
    with Logged() as logged:
        arrays, _ = s.aggregate_train(1, replies)
    assert arrays is not None and s.rounds[-1]["applied"] and not logged.lines, logged.lines
    for bad in (dict(noise_check="ignore"), dict(max_noise_ratio=0.0), dict(max_noise_ratio=float("nan"))):
        try:
            make(clip_norm=1.0, noise_multiplier=1.0, min_nodes=2, seed=0, **bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


# ---- The ServerApp end to end, on a stand-in Grid ----

class FakeGrid:
    """What strategy.start asks of a Grid: node ids, and replies to the train
    messages (`answer(round, messages)`); the evaluate half sends none."""

    def __init__(self, nodes, answer):
        self.nodes, self.answer, self.round = nodes, answer, 0

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, timeout=None):
        messages = list(messages)
        if not messages:
            return []
        self.round += 1
        return self.answer(self.round, messages)


def run_server(out, answer, nodes=3, **config):
    from flwr.supercore.task_identity import TaskIdentity

    # What Flower sets in the process that runs a ServerApp (instruction
    # messages take their run id from it).
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    cfg = {
        "model-dir": str(MODEL), "clip-norm": 1.0, "noise-multiplier": 0.0, "sampling-rate": 1.0,
        "local-epochs": 1, "learning-rate": 0.0, "num-server-rounds": 3, "min-nodes": nodes, "noise-seed": 0,
        "secure-aggregation": False,
        "round-timeout": 1.0, "out-dir": str(out),
    }
    cfg.update(config)
    server_app.main(FakeGrid(range(1, nodes + 1), answer), SimpleNamespace(run_config=cfg))


def step_replies(messages, step=0.001, bad_node=None):
    """Every device sends `step` on every coordinate (norm 0.38 on the ranker)."""
    out = []
    for m in messages:
        delta = [(n, np.full(a.shape, step, np.float32)) for n, a in strategy.from_arrays(m.content["arrays"])]
        examples = float("inf") if m.metadata.dst_node_id == bad_node else 5.0
        out.append(Message(content=valid_content(delta, examples=examples, report=False), reply_to=m))
    return out


def test_the_summary_is_written_after_every_round_and_when_the_run_fails():
    _, params = model.load(MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        during = []

        def answer(rnd, messages):
            during.append((rnd, (out / "summary.json").exists(),
                           json.loads((out / "summary.partial.json").read_text()) if rnd > 1 else None))
            if rnd == 3:
                raise RuntimeError("the SuperLink went away")
            return step_replies(messages, bad_node=2 if rnd == 2 else None)

        with Logged() as logged:
            try:
                run_server(out, answer)
            except RuntimeError:
                pass
            else:
                raise AssertionError("the failure did not reach the caller")
        assert [d[1] for d in during] == [False, False, False], during
        assert [r["round"] for r in during[1][2]["rounds"]] == [1] and not during[1][2]["finished"]
        assert [r["round"] for r in during[2][2]["rounds"]] == [1, 2]
        summary = json.loads((out / "summary.json").read_text())
        assert not summary["finished"] and "went away" in summary["error"], summary
        assert [(r["participants"], r["dropped"]) for r in summary["rounds"]] == [(3, 0), (2, 1)], summary
        assert summary["rounds"][1]["drop_reasons"], summary
        weights = np.frombuffer((out / "weights.bin").read_bytes(), "<f4")
        expect = np.concatenate([a.ravel() for _, a in params]) + 0.002
        assert weights.shape == expect.shape and np.allclose(weights, expect, atol=1e-6)
        assert not (out / "summary.partial.json").exists() and not (out / "weights.partial.bin").exists()
        assert any("node 2" in line and "num-examples" in line for line in logged.lines), logged.lines
        assert any("stopped after 2 rounds" in line for line in logged.lines), logged.lines

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        with Logged():
            run_server(out, lambda rnd, messages: step_replies(messages), **{"num-server-rounds": 2})
        summary = json.loads((out / "summary.json").read_text())
        assert summary["finished"] and "error" not in summary and len(summary["rounds"]) == 2, summary
        assert sorted(p.name for p in out.iterdir()) == ["report.html", "summary.json", "weights.bin"]


def test_the_server_app_warns_of_noise_at_start_and_refuses_its_rounds_when_asked():
    _, params = model.load(MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        with Logged() as logged:
            run_server(out, lambda rnd, messages: step_replies(messages), nodes=2,
                       **{"noise-multiplier": 1.0, "noise-check": "refuse", "num-server-rounds": 2})
        assert any(line.startswith("at start") and "noise is large" in line for line in logged.lines), logged.lines
        assert sum(line.startswith("round ") and "noise is large" in line for line in logged.lines) == 2
        summary = json.loads((out / "summary.json").read_text())
        assert [r["applied"] for r in summary["rounds"]] == [False, False], summary
        assert (out / "weights.bin").read_bytes() == model.weights_bytes(params)


def test_a_signed_round_says_whether_its_model_is_published_or_a_candidate():
    manifest, params = model.load(MODEL)
    key = Ed25519PrivateKey.generate()
    for release in server_app.RELEASES:
        signing = server_app.SigningFedAvg(manifest=manifest, key=key, release=release, clip_norm=1.0,
                                           noise_multiplier=1.0, min_nodes=2, seed=0)
        config = ConfigRecord({})
        signing.sign_into(config, 3, params)
        assert config["model-release"] == release
        key.public_key().verify(config["model-signature"], config["model-manifest"])
    # Without a key nothing is signed, and nothing is said of a release.
    unsigned = server_app.SigningFedAvg(manifest=manifest, key=None, clip_norm=1.0, noise_multiplier=1.0,
                                        min_nodes=2, seed=0)
    config = ConfigRecord({})
    unsigned.sign_into(config, 3, params)
    assert "model-release" not in config and "model-manifest" not in config
    try:
        server_app.SigningFedAvg(manifest=manifest, key=key, release="maybe", clip_norm=1.0, noise_multiplier=1.0,
                                 min_nodes=2, seed=0)
    except ValueError as e:
        assert "model-release" in str(e)
    else:
        raise AssertionError("a bad model-release was accepted")


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"  ok {name}")
