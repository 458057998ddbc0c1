"""The release gate on the coordinator (hearth_coordinator/gate.py): the
same decisions as the devices' crate on the shared known answers, and the
rule's error rates on simulated cohorts (tests/federated/run.sh runs them;
plain asserts, no pytest)."""

import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hearth_coordinator.gate import CONTRIBUTION_BOUND, GATE_METRICS, decide  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "core" / "tests" / "fixtures" / "gate_decisions.json"


def close(got, want) -> bool:
    if want is None:
        return got is None
    return abs(got - want) <= 1e-12 * max(abs(want), 1.0)


def test_the_known_answers_shared_with_the_device_crate_hold():
    cases = json.loads(FIXTURE.read_text())["cases"]
    assert len(cases) >= 10
    assert any(c["decision"]["publish"] for c in cases) and not all(c["decision"]["publish"] for c in cases)
    for case in cases:
        got, want = decide(case["sums"], case["sigma"], case["z"]), case["decision"]
        assert got["publish"] == want["publish"], case
        for key in ("devices", "candidate", "published", "fallback"):
            assert close(got[key], want[key]), (key, case)
        for key in ("against_published", "against_fallback"):
            for end in ("difference", "low", "high"):
                assert close(got[key][end], want[key][end]), (key, end, case)


def contributions(rng, n: int, gain: float) -> np.ndarray:
    """n devices' contributions: NDCG@10 of a hit at position 0 to 14 with
    chance 0.10 (published), 0.09 (fallback), 0.10 + gain (candidate)."""

    def ndcg(p):
        hit = rng.random(n) < p
        pos = rng.integers(0, 15, n)
        return np.where(hit & (pos < 10), 1.0 / np.log2(pos + 2.0), 0.0)

    c, p, f = ndcg(0.10 + gain), ndcg(0.10), ndcg(0.09)
    return np.stack([np.ones(n), c, p, f, (c - p) ** 2, (c - f) ** 2], axis=1)


def test_no_better_is_rarely_published_and_clearly_better_is():
    rng = np.random.default_rng(5)
    sigma = 5.0

    def trial(n, gain):
        sums = contributions(rng, n, gain).sum(axis=0) + sigma * rng.standard_normal(GATE_METRICS)
        return decide(list(sums), sigma)["publish"]

    same = sum(trial(2000, 0.0) for _ in range(300))
    assert same <= 16, f"{same} of 300 published with no gain (2.5% by design)"
    assert not any(trial(2000, -0.05) for _ in range(100))
    better = sum(trial(20_000, 0.05) for _ in range(50))
    assert better >= 47, f"{better} of 50 clearly better candidates published"


def test_a_contribution_is_within_the_bound():
    rng = np.random.default_rng(6)
    rows = contributions(rng, 10_000, 0.3)
    assert rows.shape[1] == GATE_METRICS
    assert np.linalg.norm(rows, axis=1).max() <= CONTRIBUTION_BOUND
    assert math.isclose(CONTRIBUTION_BOUND, math.sqrt(6))


def test_too_few_devices_says_nothing():
    d = decide([20.0, 20.0, 0.0, 0.0, 20.0, 20.0], 10.0)
    assert not d["publish"] and d["against_published"]["low"] is None
    try:
        decide([1.0] * 5, 1.0)
    except ValueError:
        pass
    else:
        raise AssertionError("five sums accepted")


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"  ok {name}")
