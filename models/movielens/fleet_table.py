#!/usr/bin/env python3
"""The docs/federated.md block of fleet.sh: NDCG@10 against epsilon for
simulated fleets, one record (`hearth simulate --json`) per fleet.

Usage: fleet_table.py RECORD... --epsilons 1,2,4,8 --command CMD [--page docs/federated.md] [--chart F.svg]

Each fleet's records hold a run without noise and one run per target
epsilon between them: fleet.sh splits a fleet's runs over processes, and the
records of one fleet (the same N and K) are merged, the run without noise
first, then by epsilon. Prints the block; with --page, rewrites the text between
<!-- fleet-movielens:begin --> and <!-- fleet-movielens:end -->; with
--chart, also draws NDCG@10 against epsilon, one line per fleet, as an SVG
(the block links it). Standard library only.
"""

import argparse
import json
from pathlib import Path

from federated_table import eps, last_measured, recipe, replace_block, wrap

def markers(name):
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def points(record):
    """(epsilon, NDCG@10) of each noised run, and the run without noise's
    NDCG@10."""
    runs = [last_measured(run) for run in record["runs"]]
    base = runs[0]["ndcg_at_10"] if runs and runs[0] else None
    return [(r["epsilon"], r["ndcg_at_10"]) for r in runs[1:] if r and r["epsilon"]], base


def chart(records, path):
    """NDCG@10 against epsilon (log scale), a line per fleet ending at its
    run without noise, the popularity fallback and the built-in model as
    dashed lines: an SVG drawn by hand."""
    import math

    w, h, left, right, top, bottom = 720, 420, 70, 150, 30, 50
    series = [points(r) for r in records]
    eps_all = [e for pts, _ in series for e, _ in pts]
    lo, hi = math.log2(min(eps_all)), math.log2(max(eps_all)) + 1  # one step more for "no noise"
    first = records[0]
    refs = [("popularity (fallback)", first["popularity"][0]), ("built-in model", first["initial"][0])]
    values = [v for pts, b in series for _, v in pts] + [b for _, b in series if b] + [v for _, v in refs]
    top_v = max(values) * 1.1

    def x(e):
        return left + (math.log2(e) - lo) / (hi - lo) * (w - left - right)

    def y(v):
        return top + (1 - v / top_v) * (h - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{left}" y1="{y(0)}" x2="{w - right}" y2="{y(0)}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y(0)}" stroke="black"/>',
           f'<text x="{(left + w - right) / 2}" y="{h - 10}" text-anchor="middle">epsilon (whole training, log scale)</text>',
           f'<text x="15" y="{(top + h - bottom) / 2}" transform="rotate(-90 15 {(top + h - bottom) / 2})" '
           'text-anchor="middle">NDCG@10 (test item)</text>']
    # One tick per target epsilon: the accountant spends each to within
    # about 1e-5, so the measured values round to it.
    ticks = sorted({round(e, 2) for e in eps_all})
    for e in ticks:
        out.append(f'<text x="{x(e):.1f}" y="{y(0) + 18:.1f}" text-anchor="middle">{e:g}</text>')
    out.append(f'<text x="{x(2 ** hi):.1f}" y="{y(0) + 18:.1f}" text-anchor="middle">no noise</text>')
    for i in range(6):
        v = top_v * i / 5
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3f}</text>')
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{w - right}" y2="{y(v):.1f}" stroke="#ddd"/>')
    last_label = None
    for (label, v), dash in zip(refs, ("6,4", "2,3")):
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{w - right}" y2="{y(v):.1f}" stroke="gray" '
                   f'stroke-dasharray="{dash}"/>')
        at = y(v) + 4
        if last_label is not None and abs(at - last_label) < 14:  # keep close labels apart
            at = last_label + (14 if at >= last_label else -14)
        last_label = at
        out.append(f'<text x="{w - right + 6}" y="{at:.1f}" fill="gray">{label}</text>')
    for i, (r, (pts, base)) in enumerate(zip(records, series)):
        colour = COLOURS[i % len(COLOURS)]
        xy = [(x(e), y(v)) for e, v in sorted(pts)]
        if base is not None:
            xy.append((x(2 ** hi), y(base)))
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                   + " ".join(f"{a:.1f},{b:.1f}" for a, b in xy) + '"/>')
        for a, b in xy:
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>')
        n, k = r.get("population", r["devices"]), r.get("cohort", "-")
        out.append(f'<text x="{w - right + 6}" y="{top + 16 * i + 4}" fill="{colour}">N = {n:,}, K = {k:,}</text>')
    out.append("</svg>")
    Path(path).write_text("\n".join(out) + "\n")


def merged(records):
    """One record per fleet: the runs of records with the same N and K
    together, the run without noise first, then by epsilon (the run's last
    measured one)."""
    fleets = {}
    for r in records:
        key = (r.get("population", r["devices"]), r.get("cohort"))
        if key in fleets:
            fleets[key]["runs"] += r["runs"]
        else:
            fleets[key] = dict(r, runs=list(r["runs"]))

    def order(run):
        last = last_measured(run)
        e = last["epsilon"] if last else None
        return (run["noise_multiplier"] != 0, e if e is not None else float("inf"))

    for r in fleets.values():
        r["runs"].sort(key=order)
    return list(fleets.values())


def block(records, command, chart_link=None, name="fleet-movielens"):
    first = records[0]
    rounds = len(first["runs"][0]["rounds"])
    begin, end = markers(name)
    lines = [
        begin,
        "",
        f"{first['source'].split(' (')[0]}, the 943 real devices training "
        f"({first['sampling'].replace('Fixed(', '').rstrip(')')} drawn a round, {rounds} rounds from the built-in "
        f"model, {recipe(first)}), standing for fleets of N devices with "
        "cohorts of K: the coordinator's noise on the mean is z C / K and the accountant's sampling rate K / N, "
        "at delta = 1/N^1.1. Each z spends the row's epsilon over the rounds exactly"
        + (":" if first["noise_mode"] == "central" else
           f" (distributed mode: {first['noise_mode']}, the accountant amplifying by the devices' coins only):"),
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
    if chart_link:
        lines += ["", f"![NDCG@10 against epsilon for each fleet]({chart_link})"]
    lines += ["", f"Reproduce: `{command}`.", "", end]
    return wrap(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("records", nargs="+")
    p.add_argument("--epsilons", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--page")
    p.add_argument("--block", default="fleet-movielens", help="the block's marker name")
    p.add_argument("--chart", help="write the SVG chart here (linked from the block relative to --page)")
    a = p.parse_args()
    records = merged([json.load(open(r)) for r in a.records])
    link = None
    if a.chart:
        chart(records, a.chart)
        import os
        link = os.path.relpath(Path(a.chart).resolve(), Path(a.page).resolve().parent if a.page else Path.cwd())
    text = block(records, a.command, link, a.block)
    print(text)
    if a.page:
        replace_block(Path(a.page), *markers(a.block), text)


if __name__ == "__main__":
    main()
