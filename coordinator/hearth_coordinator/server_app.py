"""The ServerApp: FedAvg rounds over Hearth devices.

Every train message carries, besides the global arrays (weights.bin's
parameters, in manifest order, named and shaped as the manifest says), a
config of: `clip-norm` (C), `local-epochs`, `learning-rate` and
`max-examples` (when set),
`server-round` (FedAvg's), the privacy terms devices account for in their
ledgers and refuse to train without (`noise-multiplier` z, the std of the
noise on the sum of updates in units of C, and `sampling-rate` q, the
probability that a given device is in a round), `segment-report-labels` when
the run asks devices for randomized segment reports, and, with a signing key, `model-manifest` and
`model-signature`: the manifest of the global model being sent, signed with
Ed25519, so a device verifies it before it trains from it, with
`model-release` (the run config's, "published" by default): a device installs
a published model once it has trained from it, and only trains from a
candidate, ranking with what it had.

With `release-gate = true` (secure rounds only), each training round's
model is evaluated by the devices before anyone ranks with it
(`evaluation.py`): a model-evaluation round after every training round
scores the new model against the published one and the fallback, and the
gate (`gate.py`, at `gate-z` standard errors) publishes it only when it
beats both by more than the interval. A training round then sends its
model as "published" only when it is the last one the gate passed, and as
"candidate" (trained from, never installed) otherwise; `model-release` is
the gate's to set.

With `experiment-report = "id:arm,arm,..."` (secure rounds), the run ends
with an experiment-report round: the devices' reports of that experiment
(its arms by name, in the order the devices define them), summed with
noise, give per-arm estimates with intervals (`estimate.py`; `gate-z`
standard errors either side).

With `out-dir`, the weights and the summary are written after every round
and at the end, also when the run fails, with `report.html` (`output.py`).
"""

from __future__ import annotations

import math
import time
from logging import ERROR

from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from . import model
from .adaptive_clip import AdaptiveClip
from .output import RunOutput
from .evaluation import evaluation_round, experiment_report_round, parse_experiment
from .secure import SecureTerms, secure_round
from .server_opt import ServerOptimizer
from .strategy import MAX_NOISE_RATIO, HearthFedAvg, from_arrays, to_arrays

app = ServerApp()

# What a device does with a round's signed model: install it once it has
# trained from it, or only train from it.
RELEASES = ("published", "candidate")


class SigningFedAvg(HearthFedAvg):
    """Puts the signed manifest of each round's global model in its config."""

    def __init__(self, *, manifest: dict, key, release: str = "published", **kw) -> None:
        super().__init__(**kw)
        if release not in RELEASES:
            raise ValueError(f"model-release must be one of {RELEASES}, not {release!r}")
        self.manifest = manifest
        self.key = key
        self.release = release
        self.base_version = int(manifest["version"])

    def sign_into(self, config: ConfigRecord, server_round: int, params, release: str | None = None) -> None:
        """The manifest of `params` as the model of round `server_round`
        (its version: the base's plus the round), signed, and what devices
        do with it (`release`; the run's when None)."""
        if self.key is not None:
            weights = model.weights_bytes(params)
            data, sig = model.signed_manifest(self.manifest, self.base_version + server_round, weights, self.key)
            config["model-manifest"] = data
            config["model-signature"] = sig
            config["model-release"] = release or self.release

    def configure_train(self, server_round, arrays, config, grid):
        self.sign_into(config, server_round, from_arrays(arrays))
        return super().configure_train(server_round, arrays, config, grid)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    if not cfg.get("model-dir"):
        raise ValueError("run config model-dir is required (the model package directory)")
    manifest, params = model.load(str(cfg["model-dir"]))
    clip = float(cfg["clip-norm"])
    noise = float(cfg["noise-multiplier"])
    sampling_rate = float(cfg["sampling-rate"])
    if not 0.0 < sampling_rate <= 1.0:
        raise ValueError("run config sampling-rate must be in (0, 1]")
    train_config = ConfigRecord(
        {
            "clip-norm": clip,
            "local-epochs": int(cfg["local-epochs"]),
            "noise-multiplier": noise,
            "sampling-rate": sampling_rate,
        }
    )
    labels = [l for l in str(cfg.get("segment-report-labels", "")).split(",") if l]
    if labels:
        train_config["segment-report-labels"] = ",".join(labels)
    if float(cfg["learning-rate"]) > 0:
        train_config["learning-rate"] = float(cfg["learning-rate"])
    if int(cfg.get("max-examples", 0)) > 0:
        train_config["max-examples"] = int(cfg["max-examples"])
    dense_weight = float(cfg.get("dense-weight", 1.0))
    if dense_weight != 1.0:
        # Secure rounds send train_config as it is; plain ones through
        # HearthFedAvg.configure_train, which sets the same.
        train_config["dense-weight"] = dense_weight
    optimizer = ServerOptimizer(
        kind=str(cfg.get("server-optimizer", "fedavg")),
        lr=float(cfg.get("server-learning-rate", 1.0)),
        momentum=float(cfg.get("server-momentum", 0.9)),
        lr_final=float(cfg["server-learning-rate-final"]) if float(cfg.get("server-learning-rate-final", 0)) > 0
        else None,
        rounds=int(cfg["num-server-rounds"]),
    )
    out = None
    if cfg.get("out-dir"):
        out = RunOutput(
            str(cfg["out-dir"]),
            {"clip_norm": clip, "noise_multiplier": noise, "server_optimizer": optimizer.kind,
             "server_learning_rate": optimizer.lr},
        )
    last = {"params": params}

    def on_round(rounds: list[dict], new_params) -> None:
        last["params"] = new_params
        if out is not None:
            out.checkpoint(rounds, new_params)

    adaptive = None
    quantile = float(cfg.get("adaptive-clip-quantile", 0.0))
    if quantile != 0.0:
        count_noise = float(cfg.get("clip-count-noise", 0.0)) or int(cfg["min-nodes"]) / 20
        adaptive = AdaptiveClip(
            clip=clip,
            quantile=quantile,
            learning_rate=float(cfg.get("clip-learning-rate", 0.2)),
            count_noise=count_noise,
        )
        if out is not None:
            out.header["adaptive_clip"] = {"quantile": quantile, "learning_rate": adaptive.learning_rate,
                                           "count_noise": count_noise}
    strategy = SigningFedAvg(
        manifest=manifest,
        key=model.load_signing_key(str(cfg.get("signing-key", ""))),
        release=str(cfg.get("model-release", "published")),
        clip_norm=clip,
        noise_multiplier=noise,
        min_nodes=int(cfg["min-nodes"]),
        seed=int(cfg["noise-seed"]),
        segment_labels=labels,
        optimizer=optimizer,
        noise_check=str(cfg.get("noise-check", "warn")),
        max_noise_ratio=float(cfg.get("max-noise-ratio", MAX_NOISE_RATIO)),
        on_round=on_round,
        round_gap=float(cfg.get("round-gap", 8.0)),
        adaptive=adaptive,
        dense_weight=dense_weight,
        dense_names=[p["name"] for p in manifest["parameters"] if p.get("gradient_rows_of") is None],
    )
    # With n = min-nodes, the fewest a round waits for; each round checks
    # again with the n it kept.
    strategy.check_noise(int(cfg["min-nodes"]), params, "at start, with min-nodes devices a round")
    secure = bool(cfg.get("secure-aggregation", True))
    terms = SecureTerms(
        bits=int(cfg.get("secagg-bits", 20)),
        degree=int(cfg.get("secagg-degree", 40)),
        threshold_fraction=float(cfg.get("secagg-threshold", 2.0 / 3.0)),
        max_cohort=int(cfg.get("secagg-max-cohort", 0)),
        stage_timeout=float(cfg["round-timeout"]),
        noise_mode=str(cfg.get("noise-mode", "central")),
        honest_fraction=float(cfg.get("secagg-honest-fraction", 2.0 / 3.0)),
        device_sampling_rate=float(cfg.get("device-sampling-rate", 1.0)),
    )
    if not 0.0 < terms.device_sampling_rate <= 1.0:
        raise ValueError(f"device-sampling-rate must be in (0, 1], not {terms.device_sampling_rate}")
    if terms.device_sampling_rate < 1.0 and terms.noise_mode != "distributed":
        raise ValueError("device-sampling-rate below 1 needs noise-mode = distributed")
    if terms.noise_mode not in ("central", "distributed"):
        raise ValueError(f"noise-mode must be central or distributed, not {terms.noise_mode!r}")
    if terms.noise_mode == "distributed" and not secure:
        raise ValueError("noise-mode = distributed needs secure-aggregation = true")
    release_gate = bool(cfg.get("release-gate", False))
    gate_z = float(cfg.get("gate-z", 1.96))
    if release_gate and not secure:
        raise ValueError("release-gate = true needs secure-aggregation = true")
    if release_gate and strategy.key is None:
        raise ValueError("release-gate = true needs a signing-key (devices evaluate only signed candidates)")
    if not (math.isfinite(gate_z) and gate_z > 0):
        raise ValueError(f"gate-z must be a positive number, not {gate_z}")
    experiment = parse_experiment(str(cfg.get("experiment-report", "")))
    if experiment is not None and not secure:
        raise ValueError("experiment-report needs secure-aggregation = true")
    if out is not None:
        out.header["mode"] = "secure" if secure else "plain"
        if experiment is not None:
            out.experiment_reports = []
        if release_gate:
            out.header["release_gate"] = {"z": gate_z, "published_version": strategy.base_version}
            out.evaluations = []
    try:
        if secure:
            current = params
            # The parameters devices rank with (the shipped model at first).
            published = params
            for server_round in range(1, int(cfg["num-server-rounds"]) + 1):
                if server_round > 1:
                    # As HearthFedAvg.configure_train waits in plain rounds.
                    time.sleep(strategy.round_gap)
                config = ConfigRecord(dict(train_config))
                config["server-round"] = server_round
                release = None
                if release_gate:
                    release = "published" if current is published else "candidate"
                strategy.sign_into(config, server_round, current, release)
                before = current
                current = secure_round(grid, strategy, server_round, current, config, terms)
                if release_gate and current is not before:
                    time.sleep(strategy.round_gap)
                    config = ConfigRecord(dict(train_config))
                    # Signed as the next round will send it.
                    strategy.sign_into(config, server_round + 1, current, "candidate")
                    evaluation = evaluation_round(grid, strategy, server_round, current, config, terms, gate_z)
                    if evaluation.get("gate", {}).get("publish"):
                        published = current
                        evaluation["published_version"] = strategy.base_version + server_round + 1
                    if out is not None:
                        out.evaluations.append(evaluation)
                        if published is current:
                            out.header["release_gate"]["published_version"] = evaluation["published_version"]
                            out.publish(current)
                        out.checkpoint(strategy.rounds, current)
            if experiment is not None:
                # The devices' reports of the experiment, after the last round.
                time.sleep(strategy.round_gap)
                final_round = int(cfg["num-server-rounds"])
                config = ConfigRecord(dict(train_config))
                report = experiment_report_round(grid, strategy, final_round, *experiment, config, terms, gate_z)
                if out is not None:
                    out.experiment_reports.append(report)
                    out.checkpoint(strategy.rounds, current)
        else:
            strategy.start(
                grid=grid,
                initial_arrays=to_arrays(params),
                num_rounds=int(cfg["num-server-rounds"]),
                timeout=float(cfg["round-timeout"]),
                train_config=train_config,
            )
    except BaseException as e:
        log(ERROR, "the run stopped after %s rounds: %r", len(strategy.rounds), e)
        if out is not None:
            try:
                out.finish(strategy.rounds, last["params"], error=repr(e))
            except Exception as write_error:
                log(ERROR, "the summary of the stopped run was not written: %r", write_error)
        raise
    if out is not None:
        out.finish(strategy.rounds, last["params"])
