"""Federated evaluation: rounds in which the devices send bounded metrics
instead of an update, through secure aggregation, and the coordinator
learns only their noisy sums.

* Model evaluation: the devices score a candidate model against the model
  they rank with and the fallback, on engagements they held out of
  training; the release gate (`gate.py`) decides whether the candidate is
  published.
* Experiment reports: the devices send their report of an experiment
  (REPORT_METRICS values in their own arm's place, zeros elsewhere;
  `task = experiment-report`, no model in the masked-input stage, the
  config naming the experiment and its arms, clip norm sqrt(5)); the
  per-arm estimates with intervals come from `estimate.py`.

An evaluation round is a secure round (`secure.py`, the same four stages
over the Grid) whose setup says `task = evaluate-model`: each device's
vector is its GATE_METRICS-value contribution (bounded by sqrt(6), the
round's clip norm), and the masked-input stage carries the candidate's
arrays and its signed manifest with `model-release = "candidate"`, so no
device installs it. The noise is the run's noise multiplier z times that
bound on each sum: added here in central mode, by the devices before
masking in distributed mode. Devices charge each evaluation to the same
privacy budget as their training rounds; a device with nothing held out
sends zeros (and is charged), so the coordinator cannot tell who had
anything to evaluate.
"""

from __future__ import annotations

import math
import time
from logging import INFO

import numpy as np

from flwr.app import ConfigRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from . import estimate, gate
from .secure import SecureTerms, device_noise_share, open_round, record_sum, run_stages
from .strategy import HearthFedAvg

# The secure-aggregation round ids of the evaluation of round r's candidate
# and of an experiment report after round r (keys and sealed shares are
# bound to them): apart from every training round's and each other's. The
# devices' config says `server-round` r.
EVALUATION_ROUND_BASE = 1 << 32
EXPERIMENT_ROUND_BASE = 2 << 32
# Arms an experiment has at most (the devices' MAX_ARMS).
MAX_ARMS = 8


def _metrics_round(
    grid: Grid,
    strategy: HearthFedAvg,
    server_round: int,
    secagg_round: int,
    task: str,
    vector_len: int,
    bound: float,
    params: list[tuple[str, np.ndarray]] | None,
    config: ConfigRecord,
    terms: SecureTerms,
    summary: dict,
) -> float | None:
    """A secure round of `task` whose devices each sum `vector_len` bounded
    metrics (L2 norm at most `bound`, the round's clip norm), its noisy sums
    in `summary["sums"]`; their noise's std, or None when the round failed
    (why is in `summary`)."""
    started = time.monotonic()
    summary.update({
        "round": server_round,
        "task": task,
        "noise_multiplier": strategy.noise_multiplier,
        "clip_norm": bound,
    })
    config["clip-norm"] = bound
    config["server-round"] = server_round
    rnd = open_round(
        grid, strategy, terms, summary, secagg_round=secagg_round, bound=bound, vector_len=vector_len, task=task
    )
    if rnd is None:
        return None
    aggregate = run_stages(grid, rnd, server_round, params, config, terms, summary)
    summary["seconds"] = round(time.monotonic() - started, 3)
    if aggregate is None:
        return None
    survivors = record_sum(summary, aggregate)
    sums = np.frombuffer(aggregate["sum"], dtype="<f8").copy()
    if terms.distributed:
        # Every survivor's share is in the sums, whoever its coin left out.
        sigma = device_noise_share(strategy, bound, rnd) * math.sqrt(len(survivors))
    else:
        sigma = strategy.noise_multiplier * bound
        sums += sigma * strategy.rng.standard_normal(vector_len)
    summary["sums"] = [float(v) for v in sums]
    summary["sigma"] = sigma
    return sigma


def evaluation_round(
    grid: Grid,
    strategy: HearthFedAvg,
    server_round: int,
    candidate: list[tuple[str, np.ndarray]],
    config: ConfigRecord,
    terms: SecureTerms,
    z: float = 1.96,
) -> dict:
    """Evaluates `candidate` (the parameters training round `server_round`
    left; `config` already holds its signed manifest) on the devices; the
    evaluation's summary, with the gate's decision under `"gate"` (no
    decision when the round failed)."""
    summary: dict = {}
    sigma = _metrics_round(
        grid, strategy, server_round, EVALUATION_ROUND_BASE + server_round, "evaluate-model", gate.GATE_METRICS,
        gate.CONTRIBUTION_BOUND, candidate, config, terms, summary,
    )
    if sigma is not None:
        summary["gate"] = gate.decide(summary["sums"], sigma, z)
        log(INFO, "round %s: evaluation of the candidate by %s devices: %s", server_round,
            summary["participants"], summary["gate"])
    return summary


def experiment_report_round(
    grid: Grid,
    strategy: HearthFedAvg,
    server_round: int,
    experiment: str,
    arms: list[str],
    config: ConfigRecord,
    terms: SecureTerms,
    z: float = 1.96,
) -> dict:
    """Asks the devices for their reports of `experiment` (its `arms`, by
    name and in order, as the devices defined it); the round's summary,
    with the per-arm estimates under `"arms"` (none when the round
    failed). The masked-input stage carries no model."""
    config["experiment-id"] = experiment
    config["experiment-arms"] = ",".join(arms)
    summary: dict = {"experiment": experiment}
    sigma = _metrics_round(
        grid, strategy, server_round, EXPERIMENT_ROUND_BASE + server_round, "experiment-report",
        estimate.REPORT_METRICS * len(arms), estimate.REPORT_BOUND, None, config, terms, summary,
    )
    if sigma is not None:
        summary["arms"] = [
            {"arm": name, **est} for name, est in zip(arms, estimate.estimate_arms(summary["sums"], sigma, z))
        ]
        log(INFO, "round %s: reports of %s from %s devices: %s", server_round, experiment,
            summary["participants"], summary["arms"])
    return summary


def parse_experiment(spec: str) -> tuple[str, list[str]] | None:
    """The run config's `experiment-report`, "id:arm,arm,...": the id and
    the arms; None when empty. ValueError when it is not one."""
    if not spec:
        return None
    experiment, _, names = spec.partition(":")
    arms = [a for a in names.split(",") if a]
    if not experiment or not 2 <= len(arms) <= MAX_ARMS or len(set(arms)) != len(arms):
        raise ValueError(f"experiment-report must be 'id:arm,arm,...' with 2 to {MAX_ARMS} distinct arms, not {spec!r}")
    return experiment, arms
