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

Every reply is checked whole before any of it is used (`check_reply`): an
error or empty reply, a record that is not one of these three or not of its
type, arrays of other names, dtype or shapes, data that is not a `.npy` of
them, values that are not finite, a norm above C, a `num-examples` that is
not a finite whole number in [0, MAX_EXAMPLES], a segment report without
`bits` as bytes of the labels' length or without a finite positive
`bit-epsilon`, or any other key. A reply failing any check is dropped whole
and logged with its reason (a device that breaks the protocol is not trusted
to be averaged), and the round goes on with the others.

Aggregation: the mean of the n kept deltas is unweighted, so one device
moves it by at most C / n; Gaussian noise of std `noise_multiplier * C / n`
is added to every coordinate of the mean. The server optimizer
(`server_opt`: FedAvg by default, FedAvgM or FedAdam) then moves the global
weights by that noisy mean; it only post-processes what the noise protects.

Before a round's mean is applied, `noise_ratio` compares the noise's
expected L2 norm, `z C / n * sqrt(d)` over the d coordinates, with the size
of the global model, `max(||w||, C)`. Above `max_noise_ratio` the round's
noise is large against the model it is added to (with few devices the noise
of one round can be several times the whole model, and devices then diverge
training from it): a WARNING is logged, and with `noise_check="refuse"` the
round's update is not applied (the global weights stay as they were).
README.md explains the default of 0.5.
"""

from __future__ import annotations

import math
import numbers
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np

from . import segments
from .adaptive_clip import AdaptiveClip, unclipped
from .server_opt import ServerOptimizer
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

# f32 rounding on the device may leave a clipped norm a hair above C.
NORM_TOLERANCE = 1e-5
# A device reports its examples rounded down to 1, 2, 5, ..., 500
# (core/src/federated/fleet.rs, coarse_count); anything above this is not a
# count a device makes.
MAX_EXAMPLES = 1_000_000
NUMPY_STYPE = "numpy.ndarray"
NOISE_CHECKS = ("warn", "refuse")
# The default bound on noise_ratio (README.md, "Noise against the model").
MAX_NOISE_RATIO = 0.5


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


class BadReply(ValueError):
    """Why a reply is dropped."""


@dataclass
class Reply:
    """A reply that passed every check."""

    delta: list[tuple[str, np.ndarray]]
    norm: float
    examples: int
    report: dict | None  # as segments.estimate takes it


def _number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def read_delta(record: object, shapes: list[tuple[str, tuple[int, ...]]], clip: float) -> tuple[list, float]:
    """The delta of an `"arrays"` record and its norm, or BadReply."""
    if not isinstance(record, ArrayRecord):
        raise BadReply(f"'arrays' is a {type(record).__name__}, not an ArrayRecord")
    names = list(record.keys())
    expected = [n for n, _ in shapes]
    if names != expected:
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        if missing or extra:
            raise BadReply(f"arrays missing {missing[:5]}, unexpected {extra[:5]}")
        raise BadReply("arrays out of order")
    delta = []
    for name, shape in shapes:
        arr = record[name]
        if not isinstance(arr, Array):
            raise BadReply(f"array {name!r} is a {type(arr).__name__}")
        if arr.stype != NUMPY_STYPE or arr.dtype != "float32":
            raise BadReply(f"array {name!r} is {arr.stype!r} of {arr.dtype!r}, not {NUMPY_STYPE!r} of 'float32'")
        if tuple(arr.shape) != tuple(shape):
            raise BadReply(f"array {name!r} has shape {tuple(arr.shape)}, not {tuple(shape)}")
        try:
            a = arr.numpy()
        except Exception as e:  # np.load raises ValueError, EOFError, OSError, ... on bad bytes
            raise BadReply(f"array {name!r} is not valid .npy data ({type(e).__name__}: {e})") from None
        if not isinstance(a, np.ndarray):
            raise BadReply(f"array {name!r} decodes to a {type(a).__name__}, not an array")
        if a.dtype != np.float32 or tuple(a.shape) != tuple(shape):
            raise BadReply(f"array {name!r}'s data is {a.dtype} {tuple(a.shape)}, not its declared float32 {shape}")
        delta.append((name, a))
    ok, norm, why = check_delta(delta, shapes, clip)
    if not ok:
        raise BadReply(why)
    return delta, norm


def read_examples(record: object) -> int:
    """The `num-examples` of a `"metrics"` record, or BadReply."""
    if not isinstance(record, MetricRecord):
        raise BadReply(f"'metrics' is a {type(record).__name__}, not a MetricRecord")
    keys = set(record.keys())
    if keys != {"num-examples"}:
        raise BadReply(f"metrics has keys {sorted(keys)[:5]}, not ['num-examples']")
    v = record["num-examples"]
    if not _number(v):
        raise BadReply(f"num-examples is a {type(v).__name__}, not a number")
    if not math.isfinite(v) or v < 0 or v != math.floor(v) or v > MAX_EXAMPLES:
        raise BadReply(f"num-examples {v!r} is not a whole number in [0, {MAX_EXAMPLES}]")
    return int(v)


def read_report(record: object, labels: list[str]) -> dict:
    """A `"segment-report"` as segments.estimate takes it, or BadReply."""
    if not isinstance(record, ConfigRecord):
        raise BadReply(f"'segment-report' is a {type(record).__name__}, not a ConfigRecord")
    keys = set(record.keys())
    if keys != {"bits", "bit-epsilon"}:
        raise BadReply(f"segment-report has keys {sorted(keys)[:5]}, not ['bit-epsilon', 'bits']")
    bits = record["bits"]
    if not isinstance(bits, bytes):
        raise BadReply(f"segment-report bits is a {type(bits).__name__}, not bytes")
    if len(bits) != (len(labels) + 7) // 8:
        raise BadReply(f"segment-report bits has {len(bits)} bytes, not {(len(labels) + 7) // 8} for {len(labels)} labels")
    if len(labels) % 8 and bits[-1] >> (len(labels) % 8):
        raise BadReply("segment-report bits sets bits past the labels")
    eps = record["bit-epsilon"]
    if not _number(eps):
        raise BadReply(f"segment-report bit-epsilon is a {type(eps).__name__}, not a number")
    if not (math.isfinite(eps) and eps > 0):
        # At 0 a bit is kept with probability 1/2: it says nothing, and the
        # estimator divides by 2p - 1.
        raise BadReply(f"segment-report bit-epsilon {eps!r} is not finite and positive")
    return {"labels": list(labels), "bits": bits, "bit_epsilon": float(eps)}


def read_reply(
    msg: Message, shapes: list[tuple[str, tuple[int, ...]]], clip: float, labels: list[str]
) -> Reply:
    """Every field of a train reply checked; BadReply says what is wrong."""
    if msg.has_error():
        raise BadReply(f"an error reply (code {msg.error.code}): {msg.error.reason}")
    if not msg.has_content():
        raise BadReply("an empty reply (no content)")
    content = msg.content
    if not isinstance(content, RecordDict):
        raise BadReply(f"content is a {type(content).__name__}, not a RecordDict")
    keys = set(content.keys())
    if not keys:
        raise BadReply("an empty reply (no records)")
    allowed = {"arrays", "metrics"} | ({"segment-report"} if labels else set())
    if keys - allowed:
        raise BadReply(f"unexpected records {sorted(keys - allowed)[:5]}")
    for required in ("arrays", "metrics"):
        if required not in keys:
            raise BadReply(f"no {required!r} record")
    delta, norm = read_delta(content["arrays"], shapes, clip)
    examples = read_examples(content["metrics"])
    report = read_report(content["segment-report"], labels) if "segment-report" in keys else None
    return Reply(delta, norm, examples, report)


def check_reply(
    msg: Message, shapes: list[tuple[str, tuple[int, ...]]], clip: float, labels: list[str]
) -> tuple[Reply | None, str]:
    """(the checked reply, "") or (None, why it is dropped). Never raises:
    whatever a reply holds, the round goes on without it."""
    try:
        return read_reply(msg, shapes, clip, labels), ""
    except BadReply as e:
        return None, str(e)
    except Exception as e:  # a shape of reply no check above foresaw
        return None, f"unreadable ({type(e).__name__}: {e})"


def add_noise(
    mean: list[tuple[str, np.ndarray]], std: float, rng: np.random.Generator
) -> list[tuple[str, np.ndarray]]:
    """The mean with Gaussian noise of `std` on every coordinate."""
    if std <= 0:
        return mean
    return [(name, m + rng.normal(0.0, std, size=m.shape)) for name, m in mean]


def mean_of(deltas: list[list[tuple[str, np.ndarray]]]) -> list[tuple[str, np.ndarray]]:
    """The unweighted mean of the deltas, array by array, in float64."""
    return [(name, np.mean([d[i][1].astype(np.float64) for d in deltas], axis=0)) for i, (name, _) in enumerate(deltas[0])]


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
    return add_noise(mean_of(deltas), std, rng), std


def noise_ratio(noise_multiplier: float, clip: float, n: int, params: list[tuple[str, np.ndarray]]) -> float:
    """The expected L2 norm of a round's noise over n updates,
    `z C / n * sqrt(d)`, over the size of the model it is added to,
    `max(||w||, C)` (C, the most a round's mean moves the weights, for a
    model still at zero). Infinite for n = 0 with noise."""
    if noise_multiplier <= 0:
        return 0.0
    if n <= 0:
        return math.inf
    d = sum(int(a.size) for _, a in params)
    weights = math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for _, a in params))
    return noise_multiplier * clip / n * math.sqrt(d) / max(weights, clip)


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
        noise_check: str = "warn",
        max_noise_ratio: float = MAX_NOISE_RATIO,
        on_round: Callable[[list[dict], list[tuple[str, np.ndarray]]], None] | None = None,
        round_gap: float = 0.0,
        adaptive: AdaptiveClip | None = None,
        dense_weight: float = 1.0,
        dense_names: Iterable[str] = (),
    ) -> None:
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=min_nodes,
            min_evaluate_nodes=0,
            min_available_nodes=min_nodes,
        )
        if noise_check not in NOISE_CHECKS:
            raise ValueError(f"noise-check must be one of {', '.join(NOISE_CHECKS)}, not {noise_check!r}")
        if not (math.isfinite(max_noise_ratio) and max_noise_ratio > 0):
            raise ValueError("max-noise-ratio must be a positive number")
        # The devices refuse a weight below 1e-6 (an f32 weight would round
        # towards zero, and the dense parameters carry 1 / weight times the
        # noise).
        if not (math.isfinite(dense_weight) and 1e-6 <= dense_weight <= 1.0):
            raise ValueError(f"dense-weight must be in [1e-6, 1], not {dense_weight}")
        # The devices scale the dense parameters' part of their update by
        # this weight before clipping (sent as `dense-weight`); the noised
        # mean is divided by it on those parameters before the optimizer.
        self.dense_weight = dense_weight
        self.dense_names = frozenset(dense_names)
        self.clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier
        # Adaptive clipping: clip_norm follows it round by round, and the
        # update's own noise multiplier leaves the count its share of z.
        self.adaptive = adaptive
        if adaptive is not None:
            adaptive.clip = clip_norm
            adaptive.update_noise_multiplier(noise_multiplier)  # ValueError when sigma_b cannot carry z
        self.segment_labels = segment_labels or []
        self.rng = np.random.default_rng(seed)
        self.optimizer = optimizer or ServerOptimizer()
        self.noise_check = noise_check
        self.max_noise_ratio = max_noise_ratio
        # Called after every round with the summaries so far and the global
        # parameters the round leaves (server_app writes them out).
        self.on_round = on_round
        self.current: list[tuple[str, np.ndarray]] = []
        self.rounds: list[dict] = []
        # Seconds between rounds (plain and secure): a device stays online a
        # few seconds after its reply (6 s by default) and, with a fresh node
        # key each round, comes back as another node; sampled again, the old
        # one is gone (in a secure round, costing its neighbours a share).
        self.round_gap = round_gap

    @property
    def update_multiplier(self) -> float:
        """The noise multiplier on the update itself: z, or a little more
        with adaptive clipping (the count takes the rest of z)."""
        if self.adaptive is None:
            return self.noise_multiplier
        return self.adaptive.update_noise_multiplier(self.noise_multiplier)

    def check_noise(self, n: int, params: list[tuple[str, np.ndarray]], when: str) -> tuple[float, bool]:
        """(noise_ratio with n updates, whether it is above the bound),
        logging a WARNING when it is."""
        ratio = noise_ratio(self.update_multiplier, self.clip_norm, n, params)
        too_much = ratio > self.max_noise_ratio
        if too_much:
            std = self.update_multiplier * self.clip_norm / n if n > 0 else math.inf
            log(
                WARNING,
                "%s: the noise is large against the model: std z*C/n = %s*%s/%s = %.4g on each of the %s "
                "coordinates, an expected norm %.4g times the model's (max(||w||, C)), above max-noise-ratio "
                "%s; %s. More devices per round, a smaller noise-multiplier or a larger model norm lower it.",
                when, self.update_multiplier, self.clip_norm, n, std,
                sum(int(a.size) for _, a in params), ratio, self.max_noise_ratio,
                "the round's update is not applied (noise-check = refuse)" if self.noise_check == "refuse"
                else "devices may diverge training from the noisy model",
            )
        return ratio, too_much

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current = from_arrays(arrays)
        if server_round > 1:
            time.sleep(self.round_gap)
        # The round's C (adaptive clipping moves it between rounds).
        config["clip-norm"] = self.clip_norm
        if self.dense_weight != 1.0:
            config["dense-weight"] = self.dense_weight
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        shapes = [(n, tuple(a.shape)) for n, a in self.current]
        kept: list[Reply] = []
        reasons: list[str] = []
        for msg in list(replies):
            reply, why = check_reply(msg, shapes, self.clip_norm, self.segment_labels)
            if reply is None:
                reasons.append(why)
                try:
                    node = msg.metadata.src_node_id
                except Exception:
                    node = "?"
                log(WARNING, "round %s: the reply of node %s dropped: %s", server_round, node, why)
                continue
            kept.append(reply)
        norms = [r.norm for r in kept]
        summary: dict = {
            "round": server_round,
            "mode": "plain",
            "participants": len(kept),
            "dropped": len(reasons),
            "max_norm": max(norms) if norms else None,
            "mean_norm": float(np.mean(norms)) if norms else None,
            "examples": sum(r.examples for r in kept),
        }
        if reasons:
            summary["drop_reasons"] = dict(Counter(reasons))
        mean = mean_of([r.delta for r in kept]) if kept else None
        reports = [r.report for r in kept if r.report is not None]
        count = None
        if self.adaptive is not None:
            # This coordinator sees each clipped update: the count is its own
            # to take, and to noise.
            exact = sum(1 for r in kept if unclipped(r.norm, self.clip_norm))
            count = self.adaptive.noisy_count(exact, self.rng)
        return self.close_round(server_round, summary, mean, len(kept), reports, unclipped_count=count)

    def close_round(
        self,
        server_round: int,
        summary: dict,
        mean: list[tuple[str, np.ndarray]] | None,
        n: int,
        reports: list[dict] | None = None,
        devices_noise: float | None = None,
        unclipped_count: float | None = None,
        count_of: float | None = None,
    ) -> tuple[ArrayRecord | None, MetricRecord]:
        """Adds the noise (std z*C/n) to a round's unweighted `mean` of `n`
        updates (None: none usable), moves the global weights with the
        server optimizer, estimates segment sizes from `reports`, and
        records, logs and hands on the round's `summary`. Plain and secure
        rounds both end here. With `devices_noise` (distributed noise: the
        std the devices' shares put in the mean) nothing is added here.
        With adaptive clipping, `unclipped_count` (noised) of `count_of`
        updates (n when None) moves C for the next round."""
        summary["clip_norm"] = self.clip_norm
        if devices_noise is not None:
            summary["noise_std"] = devices_noise if n else None
        else:
            summary["noise_std"] = self.update_multiplier * self.clip_norm / n if n else None
        new = None
        if mean is None or n == 0:
            log(WARNING, "round %s: no usable update; the global model is unchanged", server_round)
            summary["applied"] = False
        else:
            ratio, too_much = self.check_noise(n, self.current, f"round {server_round}")
            summary["noise_ratio"] = ratio
            if too_much and self.noise_check == "refuse":
                summary["applied"] = False
                summary["refused"] = f"noise ratio {ratio:.4g} above max-noise-ratio {self.max_noise_ratio}"
            else:
                noisy = mean if devices_noise is not None else add_noise(mean, summary["noise_std"], self.rng)
                if self.dense_weight != 1.0:
                    noisy = [(k, a / self.dense_weight if k in self.dense_names else a) for k, a in noisy]
                    summary["dense_weight"] = self.dense_weight
                new = self.optimizer.step(self.current, noisy)
                summary["applied"] = True
        if self.adaptive is not None and unclipped_count is not None and n > 0:
            share = self.adaptive.update(unclipped_count, count_of or n)
            summary["unclipped_share"] = share
            summary["next_clip_norm"] = self.adaptive.clip
            self.clip_norm = self.adaptive.clip
        if reports:
            try:
                est = segments.estimate(reports)
                summary["segments"] = {"reports": est.reports, "std_error": est.std_error, "sizes": est.as_dict()}
            except Exception as e:  # e.g. reports at different bit-epsilons
                log(WARNING, "round %s: segment reports not estimated: %s", server_round, e)
        self.rounds.append(summary)
        log(INFO, "round %s: %s", server_round, summary)
        if self.on_round is not None:
            try:
                self.on_round(self.rounds, new if new is not None else self.current)
            except Exception as e:
                log(WARNING, "round %s: the round's summary was not written: %s", server_round, e)
        metrics = MetricRecord(
            {k: float(v) for k, v in summary.items() if _number(v) and k != "round"}
        )
        if new is not None:
            self.current = new
        return (to_arrays(new) if new is not None else None), metrics
