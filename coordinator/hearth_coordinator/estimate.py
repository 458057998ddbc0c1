"""Per-arm estimates of an experiment, coordinator side: from the noisy
per-arm sums of an experiment-report round, each arm's metrics with
intervals.

The same rule as the devices' crate (`core/src/experiments/estimate.rs`,
`estimate_arms`), read from the same known answers
(`core/tests/fixtures/experiment_estimates.json`, checked by both test
suites). Each device adds REPORT_METRICS values in its own arm's place:
1 (it reported), its NDCG@10, hit@10, engaged and completed rates, each a
mean over its newest rows in [0, 1]; every sum carries Gaussian noise of
std sigma. An arm's metric is S / N; its standard error from the noise,
by the delta method, sigma sqrt(1 + (S/N)^2) / N; the interval is the
estimate plus or minus z of them, cut to [0, 1], and the whole range when
N is under 3 sigma.
"""

from __future__ import annotations

import math

REPORT_METRICS = 5
REPORT_BOUND = math.sqrt(REPORT_METRICS)
METRICS = ("ndcg_at_10", "hit_rate_at_10", "engaged_rate", "completion_rate")


def _clamp(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def _ratio(total: float, count: float, sigma: float, z: float) -> dict:
    if not (count > 3.0 * sigma and count > 0.0):
        r = _clamp(total / count) if count > 0.0 else 0.0
        return {"estimate": r, "low": 0.0, "high": 1.0}
    r = total / count
    se = sigma * math.sqrt(1.0 + r * r) / count
    return {"estimate": _clamp(r), "low": _clamp(r - z * se), "high": _clamp(r + z * se)}


def estimate_arms(sums: list[float], sigma: float, z: float = 1.96) -> list[dict]:
    """Per-arm estimates from `sums` (REPORT_METRICS values per arm, in the
    devices' order), each with noise of std `sigma`, at `z` standard
    errors."""
    if len(sums) % REPORT_METRICS != 0:
        raise ValueError(f"{len(sums)} sums are not whole arms of {REPORT_METRICS}")
    out = []
    for arm in range(len(sums) // REPORT_METRICS):
        s = sums[arm * REPORT_METRICS : (arm + 1) * REPORT_METRICS]
        est = {"arm_index": arm, "devices": float(s[0])}
        for name, total in zip(METRICS, s[1:]):
            est[name] = _ratio(float(total), float(s[0]), sigma, z)
        out.append(est)
    return out
