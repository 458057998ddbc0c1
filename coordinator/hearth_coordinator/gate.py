"""The release gate, coordinator side: from the noisy sums of a
model-evaluation round, whether the candidate beats both the published
model and the fallback by more than the uncertainty.

The same rule as the devices' crate (`core/src/experiments/gate.rs`,
`gate_decision`), read from the same known answers
(`core/tests/fixtures/gate_decisions.json`, checked by both test suites).
Each device contributes GATE_METRICS values, each in [0, 1]: 1 (it
reported), its NDCG@10 under the candidate, the published model and the
fallback, and the squares of the candidate's differences to the other two;
every sum carries Gaussian noise of std sigma. For each comparison the mean
difference is D = (S_c - S_x) / N, with variance s^2 / N from the devices'
spread (s^2 = S_sq / N - D^2) plus sigma^2 (2 + D^2) / N^2 from the noise;
the candidate passes when D - z se > 0 for both. With N under 3 sigma (or
under 2) nothing is published.
"""

from __future__ import annotations

import math

# Values per device, and the bound on a contribution's L2 norm (the unit
# of an evaluation round's noise).
GATE_METRICS = 6
CONTRIBUTION_BOUND = math.sqrt(GATE_METRICS)


def _compare(n: float, sum_c: float, sum_x: float, sum_sq: float, sigma: float, z: float) -> dict:
    d = (sum_c - sum_x) / n
    spread = max(sum_sq / n - d * d, 0.0)
    se = math.sqrt(spread / n + sigma * sigma * (2.0 + d * d) / (n * n))
    return {"difference": d, "low": d - z * se, "high": d + z * se}


def decide(sums: list[float], sigma: float, z: float = 1.96) -> dict:
    """The decision and its numbers from the GATE_METRICS noisy `sums`
    (each with noise of std `sigma`), at `z` standard errors. An interval
    that cannot be had (too few devices) is None at both ends."""
    if len(sums) != GATE_METRICS:
        raise ValueError(f"{len(sums)} sums, not {GATE_METRICS}")
    n = float(sums[0])
    if not (n > 3.0 * sigma and n >= 2.0):
        unknown = {"difference": 0.0, "low": None, "high": None}
        return {
            "publish": False,
            "devices": n,
            "candidate": 0.0,
            "published": 0.0,
            "fallback": 0.0,
            "against_published": unknown,
            "against_fallback": dict(unknown),
        }
    against_published = _compare(n, sums[1], sums[2], sums[4], sigma, z)
    against_fallback = _compare(n, sums[1], sums[3], sums[5], sigma, z)
    return {
        "publish": against_published["low"] > 0.0 and against_fallback["low"] > 0.0,
        "devices": n,
        "candidate": sums[1] / n,
        "published": sums[2] / n,
        "fallback": sums[3] / n,
        "against_published": against_published,
        "against_fallback": against_fallback,
    }
