#!/usr/bin/env python3
"""The docs/federated.md block of distributed.sh: central against
distributed noise at the same noise on the mean, run by run.

Usage: distributed_table.py CENTRAL_JSON DISTRIBUTED_JSON [--same-epsilon] --command CMD [--page docs/federated.md]

The two JSON files are what distributed.sh's `hearth simulate --json` runs
wrote, their runs in the same order. Prints the block; with --page,
rewrites the text between <!-- distributed-movielens:begin --> and
<!-- distributed-movielens:end -->. With --same-epsilon, the block of
distributed.sh --same-epsilon instead (between the
distributed-epsilon markers): the distributed record's runs (devices'
coins over the whole fleet) each paired with the central run of the
epsilon it was matched to. Standard library only.
"""

import argparse
import json
from pathlib import Path

from federated_table import eps, last_measured, replace_block, wrap

BEGIN = "<!-- distributed-movielens:begin -->"
END = "<!-- distributed-movielens:end -->"


def block(central, distributed, command):
    pairs = list(zip(central["runs"], distributed["runs"]))
    if not pairs or len(central["runs"]) != len(distributed["runs"]):
        raise SystemExit("distributed_table.py: the two records have different runs")
    rounds = len(pairs[0][0]["rounds"])
    lines = [
        BEGIN,
        "",
        f"{central['source'].split(' (')[0]}, {central['devices']} devices, the noise sweep's settings "
        f"({central['sampling'].replace('Fixed(', '').rstrip(')')} devices a round, C = {central['clip_norm']}, "
        f"{rounds} rounds from the built-in model, the same samples); distributed mode at "
        f"{distributed['noise_mode'].removeprefix('distributed').strip(' ()')}. Each distributed run's z is the central one's times sqrt(67/100), "
        "so the 100 shares put the same noise on the mean as the coordinator's Gaussian:",
        "",
        "| noise std on the mean | central NDCG@10 | distributed NDCG@10 | distributed / central | "
        "central epsilon | distributed epsilon |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c, d in pairs:
        lc, ld = last_measured(c), last_measured(d)
        if lc is None or ld is None:
            continue
        ratio = ld["ndcg_at_10"] / lc["ndcg_at_10"] if lc["ndcg_at_10"] else float("nan")
        lines.append(
            f"| {lc['noise_std']:.2e} | {lc['ndcg_at_10']:.4f} | {ld['ndcg_at_10']:.4f} | {ratio:.3f} | "
            f"{eps(lc['epsilon'])} | {eps(ld['epsilon'])} |"
        )
    lines += [
        "",
        "Central epsilon is the RDP accountant's with the coordinator's sampling "
        f"(q = {central['sampling_rate']:.4f}); distributed epsilon is the distributed discrete "
        "Gaussian's without sampling amplification (no coordinator's sampling is trusted), "
        f"counting only 67 of 100 shares, at delta = {central['delta']:.3g}.",
        "",
        f"Reproduce: `{command}`.",
        "",
        END,
    ]
    return wrap(lines)


EPSILON_BEGIN = "<!-- distributed-epsilon:begin -->"
EPSILON_END = "<!-- distributed-epsilon:end -->"


def same_epsilon_block(central, coin, command):
    """Each coin run beside the central run whose final epsilon it matches
    (to 1%; both infinite without noise)."""
    def final_eps(run):
        return run["rounds"][-1]["epsilon"] if run["rounds"] else None

    lines = [
        EPSILON_BEGIN,
        "",
        f"{central['source'].split(' (')[0]}, {central['devices']} devices, {len(coin['runs'][0]['rounds'])} "
        f"rounds, C = {central['clip_norm']}, the same recipe as above. Central: "
        f"{central['sampling'].replace('Fixed(', '').rstrip(')')} devices drawn a round by the coordinator "
        f"(q = {central['sampling_rate']:.4f}, trusted for amplification). Distributed: every device in "
        f"every round's cohort, each keeping its update by its own coin at rate {central['sampling_rate']:.4f} "
        "(so about as many updates a round), every device adding its share, at the z that spends the "
        "same epsilon:",
        "",
        "| epsilon (central / distributed) | central z | distributed z | noise std on the mean (central / distributed) "
        "| central NDCG@10 | distributed NDCG@10 | distributed / central |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d in coin["runs"]:
        ed = final_eps(d)
        match = [c for c in central["runs"]
                 if len(c["rounds"]) == len(d["rounds"])
                 and ((ed is None and final_eps(c) is None)
                      or (ed is not None and final_eps(c) is not None and abs(final_eps(c) / ed - 1) < 0.01))]
        if not match:
            raise SystemExit(f"distributed_table.py: no central run spends {ed}")
        c = match[0]
        lc, ld = last_measured(c), last_measured(d)
        ratio = ld["ndcg_at_10"] / lc["ndcg_at_10"] if lc["ndcg_at_10"] else float("nan")
        lines.append(
            f"| {eps(final_eps(c))} / {eps(ed)} | {c['noise_multiplier']:.3g} | {d['noise_multiplier']:.4g} | "
            f"{lc['noise_std']:.2e} / {ld['noise_std']:.2e} | {lc['ndcg_at_10']:.4f} | {ld['ndcg_at_10']:.4f} | "
            f"{ratio:.3f} |"
        )
    lines += [
        "",
        f"At delta = {central['delta']:.3g}; distributed epsilon counts only 2/3 of the cohort's shares "
        "and is amplified by the devices' coins alone (Zhu and Wang's general bound).",
        "",
        f"Reproduce: `{command}`.",
        "",
        EPSILON_END,
    ]
    return wrap(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("central")
    p.add_argument("distributed")
    p.add_argument("--same-epsilon", action="store_true")
    p.add_argument("--command", required=True)
    p.add_argument("--page")
    a = p.parse_args()
    central, distributed = json.load(open(a.central)), json.load(open(a.distributed))
    if a.same_epsilon:
        text, begin, end = same_epsilon_block(central, distributed, a.command), EPSILON_BEGIN, EPSILON_END
    else:
        text, begin, end = block(central, distributed, a.command), BEGIN, END
    print(text)
    if a.page:
        replace_block(Path(a.page), begin, end, text)

if __name__ == "__main__":
    main()
