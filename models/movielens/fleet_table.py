#!/usr/bin/env python3
"""The docs/federated.md block of fleet.sh: NDCG@10 against epsilon for
simulated fleets, one record (`hearth simulate --json`) per fleet.

Usage: fleet_table.py RECORD... --epsilons 1,2,4,8 --command CMD [--page docs/federated.md]

Each record holds a run without noise and one run per target epsilon (in
that order). Prints the block; with --page, rewrites the text between
<!-- fleet-movielens:begin --> and <!-- fleet-movielens:end -->. Standard
library only.
"""

import argparse
import json
from pathlib import Path

from federated_table import eps, last_measured, replace_block, wrap

BEGIN = "<!-- fleet-movielens:begin -->"
END = "<!-- fleet-movielens:end -->"


def block(records, command):
    first = records[0]
    rounds = len(first["runs"][0]["rounds"])
    lines = [
        BEGIN,
        "",
        f"{first['source'].split(' (')[0]}, the 943 real devices training "
        f"({first['sampling'].replace('Fixed(', '').rstrip(')')} drawn a round, {rounds} rounds from the built-in "
        f"model, C = {first['clip_norm']}, server {first['server_optimizer']}), standing for fleets of N devices with "
        "cohorts of K: the coordinator's noise on the mean is z C / K and the accountant's sampling rate K / N, "
        "at delta = 1/N^1.1. Each z spends the row's epsilon over the rounds exactly:",
        "",
        "| N | K | epsilon | z | noise std on the mean | NDCG@10 | of no noise | popularity |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        base = last_measured(r["runs"][0])
        for run in r["runs"]:
            last = last_measured(run)
            if last is None:
                continue
            share = last["ndcg_at_10"] / base["ndcg_at_10"] if base and base["ndcg_at_10"] else float("nan")
            lines.append(
                f"| {r.get('population', r['devices']):,} | {r.get('cohort', '-'):,} | {eps(last['epsilon'])} | "
                f"{run['noise_multiplier']:.3g} | {last['noise_std']:.2e} | {last['ndcg_at_10']:.4f} | "
                f"{share:.2f} | {r['popularity'][0]:.4f} |"
            )
    lines += ["", f"Reproduce: `{command}`.", "", END]
    return wrap(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("records", nargs="+")
    p.add_argument("--epsilons", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--page")
    a = p.parse_args()
    text = block([json.load(open(r)) for r in a.records], a.command)
    print(text)
    if a.page:
        replace_block(Path(a.page), BEGIN, END, text)


if __name__ == "__main__":
    main()
