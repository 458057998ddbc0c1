"""Secure aggregation rounds: the coordinator learns the sum of the
cohort's updates, never one device's.

Each round runs four stages over the Grid (Flower's Message API; every
message is a `train` message to one node, so the SuperLink needs nothing
new). What a stage carries is made and read by `hearth_secagg`, the Rust
module shared with the devices (coordinator/secagg-py); this file only
routes its bytes:

* setup: the round's terms (bits, scale, C, cohort, threshold) and each
  device's neighbours; a device answers with two public keys;
* share-keys: its neighbours' keys; it answers with Shamir shares of its
  secrets, sealed for each neighbour (opaque here);
* masked-input: the shares sealed for it, with the global arrays and the
  train config (as in a plain round); it answers with its quantized update,
  masked;
* unmask: which of its neighbours survived; it answers with the shares that
  remove the masks left in the sum.

A message is `{"hearth.secagg": ConfigRecord({"stage": bytes})}` (plus
`"arrays"` and `"config"` at the masked-input stage); a reply is
`{"hearth.secagg": ConfigRecord({"reply": bytes})}`. A device that does
not answer a stage in time, or answers with an error or anything else, is
dropped from the round and logged; the round goes on while enough
survive. The unmasked sum over the survivors is divided by their number
(times the devices' coin rate, in distributed mode with a coin) and ends
the round as a plain round's mean does
(`HearthFedAvg.close_round`: the noise, the server optimizer, the summary).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from .strategy import HearthFedAvg, to_arrays

SECAGG_KEY = "hearth.secagg"
STAGES = ("setup", "share-keys", "masked-input", "unmask")


@dataclass
class SecureTerms:
    """What the coordinator announces for secure rounds (run config keys
    `secagg-*`)."""

    # Integers modulo 2^bits; the scale is the largest at which max_cohort
    # updates clipped to C cannot wrap.
    bits: int = 20
    # Neighbours per device (a complete graph below degree + 1 devices).
    degree: int = 40
    # A device's threshold as a fraction of its neighbours (devices refuse
    # less than 2/3 by default).
    threshold_fraction: float = 2.0 / 3.0
    # The most devices a round may sum (0: the round's cohort).
    max_cohort: int = 0
    # Seconds each stage waits for replies.
    stage_timeout: float = 600.0
    # Where the noise is added: "central" (by this coordinator, to the sum)
    # or "distributed" (each device adds a share before masking, sized so
    # the honest fraction of the cohort carries noise-multiplier * C).
    noise_mode: str = "central"
    # The fraction of the cohort assumed honest and surviving (distributed
    # mode: the wrap margin and the fewest survivors unmasked).
    honest_fraction: float = 2.0 / 3.0
    # Distributed mode: the probability of each device's own coin putting
    # its update in the sum (1.0: no coin). The coin is flipped on the
    # device, after setup: a device left out still trains and sends its
    # noise share over zeros, so no one here can tell which devices are in,
    # and the devices account the round at this rate.
    device_sampling_rate: float = 1.0

    @property
    def distributed(self) -> bool:
        return self.noise_mode == "distributed"

    @property
    def coin(self) -> float:
        """The rate of the devices' own coin: device-sampling-rate in
        distributed mode, 1 (no coin) otherwise."""
        return self.device_sampling_rate if self.distributed and self.device_sampling_rate < 1.0 else 1.0


def stage_reply(msg: Message) -> tuple[int | None, bytes | None, str]:
    """(node, the reply's bytes, "") or (node, None, why it is not one).
    Never raises."""
    try:
        node = int(msg.metadata.src_node_id)
    except Exception:
        return None, None, "a reply without a source node"
    try:
        if msg.has_error():
            return node, None, f"an error reply (code {msg.error.code}): {msg.error.reason}"
        if not msg.has_content():
            return node, None, "an empty reply"
        content = msg.content
        if set(content.keys()) != {SECAGG_KEY}:
            return node, None, f"records {sorted(content.keys())[:5]}, not [{SECAGG_KEY!r}]"
        record = content[SECAGG_KEY]
        if not isinstance(record, ConfigRecord) or set(record.keys()) != {"reply"}:
            return node, None, f"{SECAGG_KEY!r} is not a ConfigRecord with one 'reply'"
        data = record["reply"]
        if not isinstance(data, bytes):
            return node, None, f"'reply' is a {type(data).__name__}, not bytes"
        return node, data, ""
    except Exception as e:  # a shape of reply no check above foresaw
        return node, None, f"unreadable ({type(e).__name__}: {e})"


def exchange(
    grid: Grid, messages: list[Message], timeout: float, on_reply, poll: float = 1.0, batch: int = 16
) -> None:
    """Pushes `messages` and hands each reply to `on_reply` as soon as it is
    pulled, until every message is answered or `timeout` passes. Unlike
    `Grid.send_and_receive`, which returns every reply at once, no more
    than one pull's replies are held: with the masked vectors summed as
    they come, the ServerApp's memory follows the model, not the cohort.

    Messages go out `batch` at a time with a pull between batches: pushing
    to hundreds of nodes takes the SuperLink tens of seconds, and a device
    that answered early stays online only a few seconds after its reply (a
    SuperLink answers a pull for an offline node with "node unavailable",
    even when its reply is stored)."""
    ids: set[str] = set()
    end = time.monotonic() + timeout

    def pull() -> None:
        for reply in grid.pull_messages(list(ids)):
            ids.discard(reply.metadata.reply_to_message_id)
            on_reply(reply)

    for at in range(0, len(messages), batch):
        ids.update(grid.push_messages(messages[at : at + batch]))
        if ids:
            pull()
    del messages
    while ids and time.monotonic() < end:
        time.sleep(poll)
        pull()


class RoundFailed(Exception):
    """The protocol cannot go on (too few devices left, a mask that cannot
    be removed): the round ends with no update."""


def _protocol(step):
    """Runs a step of `hearth_secagg.Round`, whose RuntimeError says why the
    round cannot go on; any other error is a bug and propagates."""
    try:
        return step()
    except RuntimeError as e:
        raise RoundFailed(str(e)) from None


def parameter_count(params: list[tuple[str, np.ndarray]]) -> int:
    return sum(int(a.size) for _, a in params)


def unflatten(flat: np.ndarray, like: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    out, at = [], 0
    for name, a in like:
        out.append((name, flat[at : at + a.size].reshape(a.shape)))
        at += a.size
    return out


def sample_cohort(grid: Grid, strategy: HearthFedAvg) -> list[int]:
    """As the plain rounds: every connected node, once at least min-nodes
    are."""
    wanted = max(len(list(grid.get_node_ids())), strategy.min_train_nodes)
    node_ids, _ = sample_nodes(grid, strategy.min_available_nodes, wanted)
    return sorted(node_ids)


def run_stages(
    grid: Grid,
    rnd,
    server_round: int,
    params: list[tuple[str, np.ndarray]] | None,
    config: ConfigRecord,
    terms: SecureTerms,
    summary: dict,
):
    """Runs `rnd` (a `hearth_secagg.Round`) through its four stages, the
    masked-input messages carrying `params` (when not None) and `config`; its aggregate, or
    None when the round failed (why, and the reasons replies were dropped,
    go in `summary`)."""
    failures: dict[str, int] = {}
    aggregate = None
    try:
        for stage in STAGES:
            outgoing = _protocol(rnd.advance)
            # One copy of the model for every masked-input message (their
            # objects are the same on the wire): a copy each held the
            # cohort times the model, 888 MB at 1,000 devices.
            # No model at all in a round of metrics that needs none.
            arrays = to_arrays(params) if stage == "masked-input" and params is not None else None
            messages = []
            for node, data in outgoing:
                content = RecordDict({SECAGG_KEY: ConfigRecord({"stage": data})})
                if stage == "masked-input":
                    if arrays is not None:
                        content["arrays"] = arrays
                    content["config"] = config
                messages.append(
                    Message(content=content, dst_node_id=node, message_type="train", group_id=str(server_round))
                )

            def take(msg: Message, stage: str = stage) -> None:
                node, data, why = stage_reply(msg)
                if data is not None and node is not None:
                    why = rnd.receive(node, data) or ""
                if why:
                    key = f"{stage}: {why.split(':')[0]}"
                    failures[key] = failures.get(key, 0) + 1
                    log(WARNING, "round %s, %s: the reply of node %s dropped: %s", server_round, stage, node, why)

            exchange(grid, messages, terms.stage_timeout, take)
        aggregate = _protocol(rnd.finish)
    except RoundFailed as e:
        summary["failed"] = str(e)
        log(WARNING, "round %s: secure aggregation failed: %s", server_round, e)
    if failures:
        summary["drop_reasons"] = failures
    return aggregate


def record_sum(summary: dict, aggregate: dict) -> list[int]:
    """Puts who is in the sum and a digest of the sum modulo 2^bits in
    `summary` (tests check them against the devices' own records; the
    coordinator knows both); gives the survivors."""
    survivors = list(aggregate["survivors"])
    dropped = aggregate["dropped"]
    summary["participants"] = len(survivors)
    summary["survivors"] = survivors
    summary["sum_sha256"] = hashlib.sha256(aggregate["sum_integers"]).hexdigest()
    summary["dropped_at"] = {stage: len(nodes) for stage, nodes in zip(STAGES, dropped)}
    summary["dropped"] = sum(len(nodes) for nodes in dropped[:3])
    return survivors


def open_round(
    grid: Grid,
    strategy: HearthFedAvg,
    terms: SecureTerms,
    summary: dict,
    *,
    secagg_round: int,
    bound: float,
    vector_len: int,
    task: str = "train",
    count_weight: float = 0.0,
):
    """Samples a cohort and sets up a secure round of `task` over it: the
    devices' vectors have `vector_len` values of L2 norm at most `bound`,
    and in distributed mode the devices add noise of the run's multiplier
    times `bound`. Puts the round's terms in `summary`; the
    `hearth_secagg.Round`, or None when its terms are refused (why is in
    `summary`)."""
    import hearth_secagg  # the Rust extension (coordinator/secagg-py)

    node_ids = sample_cohort(grid, strategy)
    max_cohort = terms.max_cohort or len(node_ids)
    summary.update({
        "mode": "secure",
        "sampled": len(node_ids),
        "bits": terms.bits,
        "degree": terms.degree,
        "threshold_fraction": terms.threshold_fraction,
        "max_cohort": max_cohort,
        "noise_mode": terms.noise_mode,
    })
    if terms.distributed:
        summary["honest_fraction"] = terms.honest_fraction
        summary["device_sampling_rate"] = terms.coin
    try:
        rnd = hearth_secagg.Round(
            run_id=grid.run.run_id,
            round=secagg_round,
            bits=terms.bits,
            clip_norm=bound,
            max_cohort=max_cohort,
            degree=terms.degree,
            threshold_fraction=terms.threshold_fraction,
            vector_len=vector_len,
            cohort=node_ids,
            noise_multiplier=strategy.noise_multiplier if terms.distributed else 0.0,
            honest_fraction=terms.honest_fraction,
            sampling_rate=terms.coin,
            count_weight=count_weight,
            task=task,
        )
    except ValueError as e:
        summary["failed"] = f"the round's terms: {e}"
        return None
    summary["scale"] = rnd.scale
    return rnd


def device_noise_share(strategy: HearthFedAvg, bound: float, rnd) -> float:
    """Distributed mode: the std of each device's noise share, sized so the
    round's honest devices (`rnd.honest`) carry z times `bound`."""
    return strategy.noise_multiplier * bound / math.sqrt(rnd.honest)


def secure_round(
    grid: Grid,
    strategy: HearthFedAvg,
    server_round: int,
    params: list[tuple[str, np.ndarray]],
    config: ConfigRecord,
    terms: SecureTerms,
) -> list[tuple[str, np.ndarray]]:
    """One secure round from `params`; the parameters it leaves (the same
    when the round fails)."""
    strategy.current = params
    started = time.monotonic()
    summary: dict = {"round": server_round}
    if "model-release" in config:
        # What devices do with the model this round sends.
        summary["model_release"] = config["model-release"]
    distributed, coin = terms.distributed, terms.coin
    # Adaptive clipping: each device's bit rides in the sum as one more
    # value, beta (bit - 1/2), and the vector's bound is C sqrt(1 + t^2).
    adaptive = strategy.adaptive
    count_weight, bound = 0.0, strategy.clip_norm
    if adaptive is not None:
        count_weight = adaptive.count_weight(strategy.noise_multiplier)
        bound = strategy.clip_norm * adaptive.stretch(strategy.noise_multiplier)
        summary["count_weight"] = count_weight
    config["clip-norm"] = strategy.clip_norm
    rnd = open_round(
        grid, strategy, terms, summary, secagg_round=server_round, bound=bound,
        vector_len=parameter_count(params) + (1 if adaptive is not None else 0), count_weight=count_weight,
    )
    if rnd is None:
        strategy.close_round(server_round, summary, None, 0)
        return params
    aggregate = run_stages(grid, rnd, server_round, params, config, terms, summary)
    summary["seconds"] = round(time.monotonic() - started, 3)
    if aggregate is None:
        strategy.close_round(server_round, summary, None, 0)
        return params
    survivors = record_sum(summary, aggregate)
    total = np.frombuffer(aggregate["sum"], dtype="<f8")
    # With a coin, about coin * survivors updates are in the sum (which ones
    # and how many, no one here knows): the mean is over that many.
    denominator = coin * len(survivors)
    count = None
    if adaptive is not None:
        # The last value: beta times the included devices' (bit - 1/2),
        # with the devices' noise (distributed) or this coordinator's, of
        # std z times the vector's bound: sigma_b on the count.
        last = float(total[-1])
        if not distributed and strategy.noise_multiplier > 0:
            last += strategy.noise_multiplier * bound * float(strategy.rng.normal())
        count = last / count_weight + denominator / 2
        total = total[:-1]
    mean = unflatten(total / denominator, params)
    log(INFO, "round %s: secure sum of %s devices (dropped: %s)", server_round, len(survivors), summary["dropped_at"])
    devices_noise = None
    if distributed:
        # The devices' shares in the mean: each (z C)^2 / honest in
        # variance, over the survivors.
        share = device_noise_share(strategy, bound, rnd)
        summary["noise_share_std"] = share
        devices_noise = share * math.sqrt(len(survivors)) / denominator
    strategy.close_round(
        server_round, summary, mean, len(survivors), devices_noise=devices_noise, unclipped_count=count,
        count_of=denominator,
    )
    return strategy.current
