"""FedAvg over Hearth devices' clipped updates, with Gaussian noise.

What a device replies (core/src/federated/mod.rs says the same):
* `"arrays"`: an ArrayRecord of the clipped *delta* `local - global`, one
  float32 array per parameter, named and shaped as the global arrays sent;
  its L2 norm over all arrays is at most C (`clip-norm`);
* `"metrics"`: a MetricRecord with a coarse `"num-examples"`;
* `"segment-report"`, when the round asked for one (`segment-report-labels`)
  and the device's user agreed: a ConfigRecord with the randomized segment
  memberships (`"bits"`, packed) and `"bit-epsilon"`. Their sizes are
  estimated per round (`segments.estimate`), never per device.

Aggregation: updates of the wrong names or shapes, not finite, or with a
norm above C are dropped (a device that breaks the bound is not trusted to
be averaged). The mean of the n kept deltas is unweighted, so one device
moves it by at most C / n; Gaussian noise of std `noise_multiplier * C / n`
is added to every coordinate of the mean. The server optimizer
(`server_opt`: FedAvg by default, FedAvgM or FedAdam) then moves the global
weights by that noisy mean; it only post-processes what the noise protects.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np

from . import segments
from .server_opt import ServerOptimizer
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

# f32 rounding on the device may leave a clipped norm a hair above C.
NORM_TOLERANCE = 1e-5


def to_arrays(params: list[tuple[str, np.ndarray]]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(a, dtype=np.float32)) for name, a in params})


def from_arrays(record: ArrayRecord) -> list[tuple[str, np.ndarray]]:
    return [(name, arr.numpy()) for name, arr in record.items()]


def check_delta(
    delta: list[tuple[str, np.ndarray]], shapes: list[tuple[str, tuple[int, ...]]], clip: float
) -> tuple[bool, float, str]:
    """(accepted, norm, why not)."""
    if [n for n, _ in delta] != [n for n, _ in shapes]:
        return False, float("nan"), "parameter names differ"
    for (_, a), (_, shape) in zip(delta, shapes):
        if tuple(a.shape) != tuple(shape) or a.dtype != np.float32:
            return False, float("nan"), "a shape or dtype differs"
        if not np.all(np.isfinite(a)):
            return False, float("nan"), "a value is not finite"
    norm = float(np.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for _, a in delta)))
    if norm > clip * (1 + NORM_TOLERANCE):
        return False, norm, f"norm {norm:.6f} above C = {clip}"
    return True, norm, ""


def noisy_mean(
    deltas: list[list[tuple[str, np.ndarray]]],
    clip: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> tuple[list[tuple[str, np.ndarray]], float]:
    """The unweighted mean of the deltas with Gaussian noise of std
    `noise_multiplier * clip / n` on every coordinate, and that std."""
    n = len(deltas)
    std = noise_multiplier * clip / n
    out = []
    for i, (name, _) in enumerate(deltas[0]):
        mean = np.mean([d[i][1].astype(np.float64) for d in deltas], axis=0)
        if std > 0:
            mean = mean + rng.normal(0.0, std, size=mean.shape)
        out.append((name, mean))
    return out, std


def aggregate(
    global_params: list[tuple[str, np.ndarray]],
    deltas: list[list[tuple[str, np.ndarray]]],
    clip: float,
    noise_multiplier: float,
    rng: np.random.Generator,
    optimizer: ServerOptimizer | None = None,
) -> tuple[list[tuple[str, np.ndarray]], float]:
    """New global parameters and the noise std used (plain FedAvg unless an
    optimizer is given)."""
    mean, std = noisy_mean(deltas, clip, noise_multiplier, rng)
    return (optimizer or ServerOptimizer()).step(global_params, mean), std


class HearthFedAvg(FedAvg):
    """FedAvg whose replies are clipped deltas, averaged unweighted, noised."""

    def __init__(
        self,
        *,
        clip_norm: float,
        noise_multiplier: float,
        min_nodes: int,
        seed: int,
        segment_labels: list[str] | None = None,
        optimizer: ServerOptimizer | None = None,
    ) -> None:
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=min_nodes,
            min_evaluate_nodes=0,
            min_available_nodes=min_nodes,
        )
        self.clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier
        self.segment_labels = segment_labels or []
        self.rng = np.random.default_rng(seed)
        self.optimizer = optimizer or ServerOptimizer()
        self.current: list[tuple[str, np.ndarray]] = []
        self.rounds: list[dict] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current = from_arrays(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        shapes = [(n, tuple(a.shape)) for n, a in self.current]
        deltas, norms, dropped, examples, reports = [], [], 0, 0, []
        for msg in replies:
            if msg.has_error():
                dropped += 1
                log(WARNING, "round %s: an error reply: %s", server_round, msg.error.reason)
                continue
            record = msg.content.array_records.get("arrays")
            if record is None:
                dropped += 1
                continue
            delta = from_arrays(record)
            ok, norm, why = check_delta(delta, shapes, self.clip_norm)
            if not ok:
                dropped += 1
                log(WARNING, "round %s: an update dropped: %s", server_round, why)
                continue
            deltas.append(delta)
            norms.append(norm)
            metrics = msg.content.metric_records.get("metrics")
            if metrics is not None:
                examples += int(metrics.get("num-examples", 0))
            report = msg.content.config_records.get("segment-report")
            if report is not None and self.segment_labels:
                reports.append(
                    {"labels": self.segment_labels, "bits": report["bits"], "bit_epsilon": report["bit-epsilon"]}
                )
        if not deltas:
            log(WARNING, "round %s: no usable update; the global model is unchanged", server_round)
            return None, None
        new, std = aggregate(self.current, deltas, self.clip_norm, self.noise_multiplier, self.rng, self.optimizer)
        summary = {
            "round": server_round,
            "participants": len(deltas),
            "dropped": dropped,
            "max_norm": max(norms),
            "mean_norm": float(np.mean(norms)),
            "noise_std": std,
            "examples": examples,
        }
        if reports:
            try:
                est = segments.estimate(reports)
                summary["segments"] = {"reports": est.reports, "std_error": est.std_error, "sizes": est.as_dict()}
            except ValueError as e:
                log(WARNING, "round %s: segment reports not estimated: %s", server_round, e)
        self.rounds.append(summary)
        log(INFO, "round %s: %s", server_round, summary)
        return to_arrays(new), MetricRecord(
            {k: float(v) for k, v in summary.items() if k not in ("round", "segments")}
        )
