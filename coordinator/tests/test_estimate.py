"""Per-arm experiment estimates on the coordinator
(hearth_coordinator/estimate.py): the same estimates as the devices' crate
on the shared known answers, and 95% intervals that cover the devices' own
mean about 95% of the time (tests/federated/run.sh runs them; plain
asserts, no pytest)."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hearth_coordinator.estimate import METRICS, REPORT_METRICS, estimate_arms  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "core" / "tests" / "fixtures" / "experiment_estimates.json"


def test_the_known_answers_shared_with_the_device_crate_hold():
    cases = json.loads(FIXTURE.read_text())["cases"]
    assert len(cases) >= 6
    for case in cases:
        got = estimate_arms(case["sums"], case["sigma"], case["z"])
        assert len(got) == len(case["arms"]), case
        for g, w in zip(got, case["arms"]):
            assert g["arm_index"] == w["arm_index"] and abs(g["devices"] - w["devices"]) < 1e-12, case
            for m in METRICS:
                for end in ("estimate", "low", "high"):
                    assert abs(g[m][end] - w[m][end]) <= 1e-12 * max(abs(w[m][end]), 1.0), (m, end, case)


def test_ninety_five_percent_intervals_cover_about_ninety_five_percent_of_the_time():
    rng = np.random.default_rng(12)
    n, truth, sigma, trials = 400.0, 0.12, 8.0, 2000
    covered = 0
    for _ in range(trials):
        sums = [n + sigma * rng.standard_normal(), n * truth + sigma * rng.standard_normal(), 0.0, 0.0, 0.0]
        e = estimate_arms(sums, sigma)[0]["ndcg_at_10"]
        covered += e["low"] <= truth <= e["high"]
    assert abs(covered / trials - 0.95) < 0.02, covered / trials


def test_sums_that_are_not_whole_arms_are_refused():
    try:
        estimate_arms([1.0] * (REPORT_METRICS + 1), 1.0)
    except ValueError:
        pass
    else:
        raise AssertionError("a partial arm accepted")


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"  ok {name}")
