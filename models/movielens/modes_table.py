#!/usr/bin/env python3
"""The docs/federated.md block of modes.sh: distributed against central
mode at fleet scale and the same epsilon, over seeds.

Usage: modes_table.py SEED_DIR... --fleet N:K --command CMD [--page docs/federated.md]

Each SEED_DIR holds fleet/N-K.json (central) and fleet/N-K-distributed.json
(fleet.sh's records, one run per target epsilon, in the same order). A
seed's two runs are paired (same devices drawn, same local randomness, and
with `--paired-noise` the same noise draws at each mode's size), so the
table gives each seed's ratio and their mean with its standard error.
Standard library only.
"""

import argparse
import json
import math
import statistics
from pathlib import Path

from federated_table import eps, last_measured, recipe, replace_block, wrap

BEGIN, END = "<!-- modes-movielens:begin -->", "<!-- modes-movielens:end -->"


def load(seed_dir, n, k):
    central = json.loads((Path(seed_dir) / "fleet" / f"{n}-{k}.json").read_text())
    distributed = json.loads((Path(seed_dir) / "fleet" / f"{n}-{k}-distributed.json").read_text())
    return central, distributed


def mean_se(values):
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return m, se


def by_seed(rows):
    return ", ".join(f"{r['ndcg_at_10']:.4f}" for r in rows)


def block(seeds, fleet, command):
    n, k = (int(v) for v in fleet.split(":"))
    pairs = [(Path(d).name.removeprefix("seed-"), *load(d, n, k)) for d in seeds]
    first_c, first_d = pairs[0][1], pairs[0][2]
    rounds = len(first_c["runs"][0]["rounds"])
    paired = all(c.get("paired_noise") and d.get("paired_noise") for _, c, d in pairs)
    same = ("same devices, train them with the same local randomness and add the same noise draws, each at its "
            "mode's size" if paired else "same devices and train them with the same local randomness")
    lines = [
        BEGIN,
        "",
        f"{first_c['source'].split(' (')[0]}, the 943 real devices training for a fleet of N = {n:,} with cohorts "
        f"of K = {k:,} ({rounds} rounds, {recipe(first_c)}), "
        f"central mode against {first_d['noise_mode']} at the same epsilon, over {len(pairs)} seeds (seeds {', '.join(s for s, _, _ in pairs)}). "
        f"A seed's two runs draw the {same}; the last column is the mean of the seeds' ratios, with its standard "
        "error:",
        "",
        "| epsilon | z (central / distributed) | noise std on the mean (central / distributed) | central NDCG@10 "
        "by seed | distributed NDCG@10 by seed | distributed / central |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for j in range(len(first_c["runs"])):
        c_runs = [c["runs"][j] for _, c, _ in pairs]
        d_runs = [d["runs"][j] for _, _, d in pairs]
        c_last = [last_measured(r) for r in c_runs]
        d_last = [last_measured(r) for r in d_runs]
        if any(x is None for x in c_last + d_last):
            continue
        ratios = [d["ndcg_at_10"] / c["ndcg_at_10"] for c, d in zip(c_last, d_last)]
        m, se = mean_se(ratios)
        lines.append(
            f"| {eps(c_last[0]['epsilon'])} | {c_runs[0]['noise_multiplier']:.3g} / {d_runs[0]['noise_multiplier']:.3g} "
            f"| {c_last[0]['noise_std']:.2e} / {d_last[0]['noise_std']:.2e} "
            f"| {by_seed(c_last)} | {by_seed(d_last)} "
            f"| {m:.3f} ± {se:.3f} |"
        )
    lines += ["", f"Reproduce: `{command}`.", "", END]
    return wrap(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("seeds", nargs="+")
    p.add_argument("--fleet", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--page")
    a = p.parse_args()
    text = block(a.seeds, a.fleet, a.command)
    print(text)
    if a.page:
        replace_block(Path(a.page), BEGIN, END, text)


if __name__ == "__main__":
    main()
