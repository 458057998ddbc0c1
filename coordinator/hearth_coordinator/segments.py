"""Segment sizes from devices' randomized segment reports.

Each device sends its segment memberships as bits, every bit kept with
probability p = e^b / (1 + e^b) and flipped otherwise, where b is the
report's `bit_epsilon` (hearth-core, core/src/segments.rs). With n reports
of which c_j have bit j set, the number of reporting devices in segment j is
estimated by

    size_j = (c_j - n (1 - p)) / (2p - 1),

unbiased because E[c_j] = s_j p + (n - s_j)(1 - p). Every reported bit is
Bernoulli with variance p (1 - p) whether its true value is 0 or 1, so the
standard error is sqrt(n p (1 - p)) / (2p - 1) for every segment, whatever
its size. The estimate may fall outside [0, n]; clip it for display only
(clipping biases it).

The same estimator is in Rust (`hearth_core::estimate_segment_sizes`) for the
device-side simulation test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


@dataclass(frozen=True)
class SegmentEstimate:
    labels: list[str]
    reports: int
    sizes: list[float]
    std_error: float

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.labels, self.sizes))

    def within(self, truth: Sequence[float], z: float) -> bool:
        """Whether every estimate is within z standard errors of `truth`."""
        return all(abs(s - t) <= z * self.std_error for s, t in zip(self.sizes, truth))


def keep_probability(bit_epsilon: float) -> float:
    # e^b / (1 + e^b), written so that a large b does not overflow exp.
    return 1.0 / (1.0 + math.exp(-bit_epsilon))


def unpack_bits(packed: bytes | Sequence[int], n: int) -> list[int]:
    """The n bits packed eight to a byte, least significant first."""
    data = bytes(packed)
    if len(data) != (n + 7) // 8:
        raise ValueError("bits do not match the labels")
    return [(data[i // 8] >> (i % 8)) & 1 for i in range(n)]


def estimate(reports: Iterable[Mapping]) -> SegmentEstimate:
    """Estimates segment sizes from reports shaped as the device makes them:
    mappings with `labels` (list of str), `bits` (packed bytes or a list of
    byte values) and `bit_epsilon`. All reports must share labels and
    bit_epsilon (a round collects one schema at one epsilon)."""
    labels: list[str] | None = None
    bit_epsilon: float | None = None
    counts: list[int] = []
    n = 0
    for r in reports:
        if labels is None:
            labels, bit_epsilon = list(r["labels"]), float(r["bit_epsilon"])
            if not bit_epsilon > 0.0:
                raise ValueError("bit_epsilon must be positive")
            counts = [0] * len(labels)
        elif list(r["labels"]) != labels:
            raise ValueError("labels differ between reports")
        elif float(r["bit_epsilon"]) != bit_epsilon:
            raise ValueError("bit_epsilon differs between reports")
        for j, b in enumerate(unpack_bits(r["bits"], len(labels))):
            counts[j] += b
        n += 1
    if labels is None or bit_epsilon is None:
        raise ValueError("no reports")
    p = keep_probability(bit_epsilon)
    sizes = [(c - n * (1.0 - p)) / (2.0 * p - 1.0) for c in counts]
    return SegmentEstimate(labels, n, sizes, math.sqrt(n * p * (1.0 - p)) / (2.0 * p - 1.0))
