"""Checks of the segment-size estimator (tests/federated/run.sh runs them;
plain asserts, no pytest)."""

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hearth_coordinator import segments  # noqa: E402


def pack(bits):
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def test_a_hand_example_shared_with_the_rust_estimator():
    # bit_epsilon = ln 3: p = 3/4. Ten reports, bit 0 set in 3, bit 1 in 7:
    # (3 - 2.5) / 0.5 = 1 and (7 - 2.5) / 0.5 = 9 (core/src/segments.rs has
    # the same case).
    reports = [{"labels": ["x", "y"], "bits": pack([i < 3, i < 7]), "bit_epsilon": math.log(3)} for i in range(10)]
    est = segments.estimate(reports)
    assert abs(est.sizes[0] - 1.0) < 1e-9 and abs(est.sizes[1] - 9.0) < 1e-9, est.sizes
    assert abs(est.std_error - math.sqrt(10 * 0.75 * 0.25) / 0.5) < 1e-12
    assert est.as_dict() == {"x": est.sizes[0], "y": est.sizes[1]}


def simulate(rng, n, prevalence, bit_epsilon):
    truth = rng.random((n, len(prevalence))) < prevalence
    p = segments.keep_probability(bit_epsilon)
    flip = rng.random(truth.shape) >= p
    noisy = truth ^ flip
    labels = [f"s{j}" for j in range(len(prevalence))]
    reports = [{"labels": labels, "bits": list(np.packbits(row, bitorder="little")), "bit_epsilon": bit_epsilon} for row in noisy]
    return truth.sum(axis=0), reports


def test_ten_thousand_reports_are_within_four_standard_errors():
    rng = np.random.default_rng(20240310)
    prevalence = np.array([0.05, 0.2, 0.5, 0.8, 0.0, 1.0])
    truth, reports = simulate(rng, 10_000, prevalence, 4.0 / 15)
    est = segments.estimate(reports)
    assert est.reports == 10_000
    assert est.within(truth, 4.0), (est.sizes, truth, est.std_error)


def test_the_estimate_is_unbiased_over_repetitions():
    rng = np.random.default_rng(7)
    prevalence = np.array([0.1, 0.5, 0.9])
    reps, n = 60, 2_000
    errors = np.zeros(len(prevalence))
    sigma = None
    for _ in range(reps):
        truth, reports = simulate(rng, n, prevalence, 0.2)
        est = segments.estimate(reports)
        errors += (np.array(est.sizes) - truth) / reps
        sigma = est.std_error
    assert np.all(np.abs(errors) < 4 * sigma / math.sqrt(reps)), (errors, sigma)


def test_mixed_schemas_and_bad_bits_are_refused():
    a = {"labels": ["x"], "bits": b"\x01", "bit_epsilon": 0.5}
    for other in (
        {"labels": ["y"], "bits": b"\x01", "bit_epsilon": 0.5},
        {"labels": ["x"], "bits": b"\x01", "bit_epsilon": 0.4},
        {"labels": ["x"], "bits": b"\x01\x00", "bit_epsilon": 0.5},
    ):
        try:
            segments.estimate([a, other])
        except ValueError:
            continue
        raise AssertionError(f"accepted {other}")
    try:
        segments.estimate([])
    except ValueError:
        pass
    else:
        raise AssertionError("accepted no reports")


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
    print("segments: estimator checks passed")
