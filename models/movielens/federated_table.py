#!/usr/bin/env python3
"""The docs/federated.md block of the federated MovieLens run (federated.sh --update-docs).

Usage: federated_table.py NO_NOISE_JSON NOISE_JSON CENTRAL_JSON --command CMD [--page docs/federated.md]

NO_NOISE_JSON and NOISE_JSON are what federated.sh's two `hearth simulate
--json` wrote (the long run without noise, the noise sweep), CENTRAL_JSON
run.sh's results.json. Prints the block; with --page, rewrites the text between
<!-- federated-movielens:begin --> and <!-- federated-movielens:end -->.
Standard library only.
"""

import argparse
import json
import textwrap
from pathlib import Path

BEGIN = "<!-- federated-movielens:begin -->"
END = "<!-- federated-movielens:end -->"


def last_measured(run):
    rows = [r for r in run["rounds"] if r["ndcg_at_10"] is not None]
    return rows[-1] if rows else None


def best_measured(run):
    rows = [r for r in run["rounds"] if r["ndcg_at_10"] is not None]
    return max(rows, key=lambda r: r["ndcg_at_10"]) if rows else None


def eps(e):
    if e is None:
        return "∞"
    return f"{e:.3g}" if e < 1e4 else f"{e:.2e}"


def at_round(run, n):
    return next((r for r in run["rounds"] if r["round"] == n and r["ndcg_at_10"] is not None), None)


def recipe(record):
    """A fleet record's clip bound, dense weight (when one was set) and
    server optimizer, as a table caption names them."""
    weight = record.get("dense_weight")
    dense = (f", the dense parameters' part of each update weighted by {weight} before clipping"
             if weight not in (None, 1.0) else "")
    return f"C = {record['clip_norm']}{dense}, server {record['server_optimizer']}"


def fed_lr(record):
    """The server learning rate in a record's optimizer description."""
    text = record["server_optimizer"]
    at = text.find("lr: ")
    return text[at + 4:].split(",")[0].split(" ")[0] if at >= 0 else "?"


def block(fed, sweep, central, command, from_central=None):
    c = (central.get("device") or {}).get("metrics") or central["hearth"]["test"]
    cn, ch = c["ndcg_at_10"], c["hit_rate_at_10"]
    base = fed["runs"][0]
    runs = sweep["runs"]
    rounds = max((len(r["rounds"]) for r in runs), default=0)
    lines = [BEGIN, ""]
    sampling = fed["sampling"]
    if sampling.startswith("Fixed("):
        drawn = f"Every round {sampling[len('Fixed('):-1]} devices are drawn uniformly"
    else:
        drawn = f"Every round each device takes part with probability {sampling[len('Poisson('):-1]}"
    server = fed["server_optimizer"]
    applied = (f"applies it with server-side Adam (FedAdam, `{server}`)" if server.startswith("Adam")
               else f"adds it to the global weights (FedAvg, `{server}`)")
    if fed.get("server_lr_final") is not None:
        applied += (f", its learning rate falling linearly from {fed_lr(fed)} to {fed['server_lr_final']:g} over "
                    f"the {max(r['round'] for r in base['rounds'])} rounds")
    lines.append(
        f"{fed['devices']} simulated devices, one per MovieLens user, each with its own encrypted store holding "
        f"that user's training ratings; the same held-out items and candidates as the table above. {drawn}; "
        f"each trains the global model "
        f"on its own store (`hearth-core`'s training step through tract: SGD, learning rate "
        f"{fed['learning_rate']}, {fed['local_epochs']} local epoch, {fed['negatives_per_positive']} negatives per "
        f"positive, its newest 500 positives at most, each with the profile and history as they stood just before "
        f"it) and sends only its update clipped to L2 norm "
        f"C = {fed['clip_norm']:g}; the coordinator averages, adds Gaussian noise of std z·C/n per coordinate, "
        f"{applied}, signs the model, and every "
        f"device installs it before it trains or ranks. Quality is measured every few rounds on all "
        f"{fed['ranked']} devices; epsilon by the RDP accountant at q = {fed['sampling_rate']:.4f}, "
        f"δ = {fed['delta']:.2e} (1/N^1.1).")
    lines.append("")
    lines.append("| ranker | NDCG@10 | HR@10 | NDCG vs central |")
    lines.append("| --- | ---: | ---: | ---: |")
    pn, ph = fed["popularity"]
    inn, ih = fed["initial"]
    lines.append(f"| popularity (the fallback ranker, on the device) | {pn:.4f} | {ph:.4f} | {pn / cn:.2f} |")
    lines.append(f"| built-in ranker-v1 (where federated training starts) | {inn:.4f} | {ih:.4f} | {inn / cn:.2f} |")
    lines.append(f"| central: same model, Adam, on-device path (table above) | {cn:.4f} | {ch:.4f} | 1.00 |")
    def row(label, r):
        lines.append(f"| {label} | {r['ndcg_at_10']:.4f} | {r['hit_rate_at_10']:.4f} | {r['ndcg_at_10'] / cn:.2f} |")

    last, best = last_measured(base), best_measured(base)
    if last is not None:
        row(f"federated, no noise, after round {last['round']}", last)
    if best is not None and best is not last:
        row(f"federated, no noise, best measured round ({best['round']})", best)
    if from_central is not None:
        for r in from_central["runs"][0]["rounds"]:
            if r["ndcg_at_10"] is not None:
                row(f"federated from the central model (check), after round {r['round']}", r)
        i0 = from_central["initial"]
        lines.append("")
        lines.append(f"The check starts the same training from the central model (re-signed by the coordinator and "
                     f"installed on every device): at round 0 the simulator measures NDCG@10 {i0[0]:.4f}, HR@10 "
                     f"{i0[1]:.4f}, the central row, so the simulator ranks exactly as `hearth evaluate` does.")
    lines.append("")
    own_base = next((r for r in runs if r["noise_multiplier"] == 0), None)
    if own_base is not None:
        # The sweep has its own z = 0 run (its C differs from the run above).
        rounds = max(max(x["round"] for x in r["rounds"]) for r in runs)
        schedule = (f", the server rate falling from {fed_lr(sweep)} to {sweep['server_lr_final']:g} over them"
                    if sweep.get("server_lr_final") is not None else "")
        lines.append(f"Noise: {rounds} rounds each, the same devices and samples, each run from the built-in model "
                     f"with C = {sweep['clip_norm']:g} (near the updates' norms, where the noise std z·C/n is "
                     f"smallest for a given z){schedule}; only the noise multiplier differs:")
    else:
        lines.append(f"Noise: the first {rounds} rounds, the same devices and samples, each run from the built-in "
                     f"model; only the noise multiplier differs (z = 0 is the run above at round {rounds}):")
    lines.append("")
    lines.append(f"| noise multiplier z | noise std per coordinate | NDCG@10 at round {rounds} | HR@10 | vs no noise "
                 f"| epsilon after {rounds} rounds |")
    lines.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
    if own_base is not None:
        b = last_measured(own_base)
        prepend = []
    else:
        b = at_round(base, rounds)
        prepend = [{"noise_multiplier": 0.0, "rounds": [b]}] if b else []
    base_n = b["ndcg_at_10"] if b else None
    for r in prepend + runs:
        last = last_measured(r)
        if last is None:
            continue
        std = max((x["noise_std"] for x in r["rounds"]), default=0.0)
        rel = f"{last['ndcg_at_10'] / base_n:.2f}" if base_n else "-"
        lines.append(f"| {r['noise_multiplier']:g} | {std:.2e} | {last['ndcg_at_10']:.4f} | "
                     f"{last['hit_rate_at_10']:.4f} | {rel} | {eps(last['epsilon'])} |")
    lines.append("")
    lines.append("![NDCG@10 against federated rounds](../models/movielens/federated-ndcg.png)")
    lines.append("")
    lines.append(f"Reproduce: `{command}` (about 21 minutes on this 2-core machine, with other work on it; "
                 "`models/movielens/README.md`, \"Federated\").")
    lines.append("")
    lines.append(END)
    return wrap(lines)


def wrap(lines):
    """The block's text: prose wrapped as the rest of the page; tables,
    images and markers as they are."""
    return "\n".join(ln if ln.startswith(("|", "<!--", "![")) or len(ln) <= 78
                     else textwrap.fill(ln, 78, break_long_words=False, break_on_hyphens=False) for ln in lines)


def replace_block(page, begin, end, text):
    """Rewrites the text of `page` between the `begin` and `end` markers."""
    doc = page.read_text()
    a, b = doc.find(begin), doc.find(end)
    if a < 0 or b < a:
        print(f"{page}: no {begin} ... {end} markers; not changed")
        return
    page.write_text(doc[:a] + text + doc[b + len(end):])
    print(f"updated {page}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("no_noise", type=Path)
    ap.add_argument("noise", type=Path)
    ap.add_argument("central", type=Path)
    ap.add_argument("--command", required=True)
    ap.add_argument("--page", type=Path)
    ap.add_argument("--from-central", type=Path, help="the check run's JSON (training started from the central model)")
    args = ap.parse_args()
    text = block(json.loads(args.no_noise.read_text()), json.loads(args.noise.read_text()),
                 json.loads(args.central.read_text()), args.command,
                 json.loads(args.from_central.read_text()) if args.from_central else None)
    print(text)
    if args.page:
        replace_block(args.page, BEGIN, END, text)


if __name__ == "__main__":
    main()
