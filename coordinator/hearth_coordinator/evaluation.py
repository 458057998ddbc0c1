"""Model-evaluation rounds: the devices score a candidate model against
the model they rank with and the fallback, on engagements they held out of
training, and the coordinator learns only the noisy sums, from which the
release gate (`gate.py`) decides whether the candidate is published.

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

from . import gate
from .secure import SecureTerms, record_sum, run_stages, sample_cohort
from .strategy import HearthFedAvg

# The secure-aggregation round id of the evaluation of round r's candidate
# (its keys and sealed shares are bound to it): apart from every training
# round's. The devices' config says `server-round` r.
EVALUATION_ROUND_BASE = 1 << 32


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
    import hearth_secagg  # the Rust extension (coordinator/secagg-py)

    started = time.monotonic()
    node_ids = sample_cohort(grid, strategy)
    max_cohort = terms.max_cohort or len(node_ids)
    distributed = terms.noise_mode == "distributed"
    coin = terms.device_sampling_rate if distributed and terms.device_sampling_rate < 1.0 else 1.0
    bound = gate.CONTRIBUTION_BOUND
    summary: dict = {
        "round": server_round,
        "task": "evaluate-model",
        "mode": "secure",
        "sampled": len(node_ids),
        "bits": terms.bits,
        "noise_mode": terms.noise_mode,
        "noise_multiplier": strategy.noise_multiplier,
        "clip_norm": bound,
    }
    if distributed:
        summary["honest_fraction"] = terms.honest_fraction
        summary["device_sampling_rate"] = coin
    config["clip-norm"] = bound
    config["server-round"] = server_round
    try:
        rnd = hearth_secagg.Round(
            run_id=grid.run.run_id,
            round=EVALUATION_ROUND_BASE + server_round,
            bits=terms.bits,
            clip_norm=bound,
            max_cohort=max_cohort,
            degree=terms.degree,
            threshold_fraction=terms.threshold_fraction,
            vector_len=gate.GATE_METRICS,
            cohort=node_ids,
            noise_multiplier=strategy.noise_multiplier if distributed else 0.0,
            honest_fraction=terms.honest_fraction,
            sampling_rate=coin,
            task="evaluate-model",
        )
    except ValueError as e:
        summary["failed"] = f"the round's terms: {e}"
        return summary
    summary["scale"] = rnd.scale
    aggregate = run_stages(grid, rnd, server_round, candidate, config, terms, summary)
    summary["seconds"] = round(time.monotonic() - started, 3)
    if aggregate is None:
        return summary
    survivors = record_sum(summary, aggregate)
    sums = np.frombuffer(aggregate["sum"], dtype="<f8").copy()
    if distributed:
        # Every survivor's share is in the sums, whoever its coin left out.
        share = strategy.noise_multiplier * bound / math.sqrt(rnd.honest)
        sigma = share * math.sqrt(len(survivors))
    else:
        sigma = strategy.noise_multiplier * bound
        sums += sigma * strategy.rng.standard_normal(gate.GATE_METRICS)
    summary["sums"] = [float(v) for v in sums]
    summary["sigma"] = sigma
    summary["gate"] = gate.decide(summary["sums"], sigma, z)
    log(INFO, "round %s: evaluation of the candidate by %s devices: %s", server_round, len(survivors), summary["gate"])
    return summary
