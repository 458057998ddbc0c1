#!/usr/bin/env python3
"""The docs/federated.md block of distributed.sh: central against
distributed noise at the same noise on the mean, run by run.

Usage: distributed_table.py CENTRAL_JSON DISTRIBUTED_JSON --command CMD [--page docs/federated.md]

The two JSON files are what distributed.sh's `hearth simulate --json` runs
wrote, their runs in the same order. Prints the block; with --page,
rewrites the text between <!-- distributed-movielens:begin --> and
<!-- distributed-movielens:end -->. Standard library only.
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("central")
    p.add_argument("distributed")
    p.add_argument("--command", required=True)
    p.add_argument("--page")
    a = p.parse_args()
    text = block(json.load(open(a.central)), json.load(open(a.distributed)), a.command)
    print(text)
    if a.page:
        replace_block(Path(a.page), BEGIN, END, text)

if __name__ == "__main__":
    main()
