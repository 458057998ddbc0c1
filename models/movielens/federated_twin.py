#!/usr/bin/env python3
"""A numpy twin of `hearth simulate --movielens`, for tuning a federated recipe.

`hearth simulate` trains every device through tract, one example per call:
a round of 100 devices costs about 3 s of a core here (it was 7 to 30 s for
30 devices before the training graph gave the id tables' gradients as rows).
This twin runs the same rounds in numpy (models/build.py's forward and
backward of the same graphs, evaluate.py's data and metrics) in about 0.7 s
for 100 devices, so a recipe can be tried over hundreds of rounds in
minutes. It measures on the *validation*
item (each user's second-to-last interaction) by default, so the test item
the README reports stays unseen while tuning; the numbers that count are
`hearth simulate`'s (federated.sh).

What a simulated device does, as `hearth-core` does (core/src/training.rs):
its newest 500 positives at most; each an example with uniform negatives
from the items it has not rated; SGD over batches of 16 examples at
`lr * mean` of their gradients; `--examples then` (the default, what the
device does) gives each example the user features and history as they stood
just before it, `--examples now` the whole history minus the item (what the
device did before 2026-11-25); the delta `local - global` clipped to C; a
device whose update is not finite (its training diverged) sends nothing, as
the simulator leaves it out.
The server: the unweighted mean, then FedAvg (`--server avg`, with
`--momentum` for FedAvgM) or FedAdam (`--server adam`: b1 0.9, b2 0.99,
tau 1e-6 unless `--tau`, bias-corrected, as cli/src/fedavg.rs), its rate
falling linearly to `--server-lr-final` when given. `--noise z` adds the
coordinator's Gaussian noise, std z*C/n, to the mean, or z*C/K with
`--cohort K` (a fleet-scale run's noise; no accountant: the twin is for the
optimisation, models/movielens/match_epsilon.py gives z for an epsilon).

Usage (models/movielens/run.sh makes the venv and fetches the data):
  ~/.cache/hearth/movielens-venv/bin/python models/movielens/federated_twin.py \\
      --rounds 400 --clients 100 --lr 0.3 --clip 10 --server adam --server-lr 0.1 --server-lr-final 0.01
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import evaluate as E  # noqa: E402  (imports build, which pins the numeric kernels first)
import build  # noqa: E402
import numpy as np  # noqa: E402

NEWEST = 500  # the device's cap on positives per round
ID_TABLES = ("id_bias", "emb_item", "emb_history")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache/hearth/data/ml-100k")
    ap.add_argument("--phase", choices=("val", "test"), default="val")
    ap.add_argument("--examples", choices=("then", "now"), default="then")
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.3, help="local SGD learning rate")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--clip", type=float, default=10.0)
    ap.add_argument("--negatives", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--server", choices=("adam", "avg"), default="adam")
    ap.add_argument("--server-lr", type=float, default=0.1)
    ap.add_argument("--server-lr-final", type=float, default=None)
    ap.add_argument("--momentum", type=float, default=0.0, help="FedAvgM's server momentum (--server avg)")
    ap.add_argument("--tau", type=float, default=1e-6, help="FedAdam's tau (the simulator's: 1e-6)")
    ap.add_argument("--id-server", choices=("same", "avg"), default="same",
                    help="the server update of the id tables (id_bias, emb_item, emb_history): the towers' "
                         "(same), or FedAvg(M) at --id-server-lr with --id-momentum, which moves a row whose "
                         "mean is mostly noise by that noise times the rate rather than by about the rate")
    ap.add_argument("--id-server-lr", type=float, default=1.0)
    ap.add_argument("--id-momentum", type=float, default=0.0)
    ap.add_argument("--noise-only", default=None,
                    help="comma-separated parameter names: add the noise to these alone (to see where it harms)")
    ap.add_argument("--beta1", type=float, default=0.9, help="FedAdam's first-moment decay")
    ap.add_argument("--tower-scale", type=float, default=1.0,
                    help="the device scales the towers' part of its update by this before clipping, and the "
                         "server divides the towers' mean by it: below 1, the id tables get more of the clip "
                         "norm (so more signal against the same noise) and the towers more noise; the SDK's "
                         "dense-weight (`hearth simulate --dense-weight`), towers meaning every parameter but "
                         "the id tables")
    ap.add_argument("--tau-noise", type=float, default=0.0,
                    help="FedAdam's tau raised by this many times the noise std on the mean, so a coordinate "
                         "whose mean is mostly noise moves less than the rate")
    ap.add_argument("--id-decay", type=float, default=0.0,
                    help="after each server step the id embeddings shrink by this fraction (decoupled weight "
                         "decay, post-processing): a row moved by noise alone drifts back, one with signal "
                         "settles where its steps balance the decay")
    ap.add_argument("--local-history", action="store_true",
                    help="emb_history is personal: each device keeps its own copy (the shipped one at first), "
                         "trains it on its own examples and never sends it, so it is neither averaged nor "
                         "noised; the shared model is the rest")
    ap.add_argument("--frozen-history", action="store_true",
                    help="emb_history stays as shipped (random codes of the history items): not trained, sent "
                         "or noised; emb_item learns to match them")
    ap.add_argument("--tie", action="store_true",
                    help="one id embedding table for both roles (emb_history is emb_item): each row gets the "
                         "gradients of both, and is sent and noised once")
    ap.add_argument("--gate", type=float, default=0.0,
                    help="FedAdam steps an id embedding row only where its squared norm exceeds GATE times "
                         "what the noise alone gives it (post-processing of the noised mean: no privacy cost)")
    ap.add_argument("--gate-on", choices=("momentum", "mean"), default="momentum",
                    help="what the gate measures: the row of Adam's bias-corrected first moment, or of the "
                         "round's noised mean")
    ap.add_argument("--norm-split", action="store_true",
                    help="at each evaluation, print how the devices' updates (before clipping) share their squared "
                         "norm: towers, id_bias, emb_item rows of the device's own positives and the rest, emb_history")
    ap.add_argument("--ema", default=None,
                    help="comma-separated decays: also evaluate exponential moving averages of the server's "
                         "model (post-processing, no privacy cost), e.g. 0.9,0.98")
    ap.add_argument("--noise", type=float, default=0.0,
                    help="noise multiplier z: the coordinator adds N(0, (z*C/n)^2) to each coordinate of the mean")
    ap.add_argument("--cohort", type=int, default=None,
                    help="fleet-scale noise: std z*C/K for a simulated cohort of K (as `hearth simulate --cohort`)")
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--vocab", type=int, default=None,
                    help="id rows only for the VOCAB most popular items of the catalog (by the popularity "
                         "the fallback ranks by), every other item sharing one more row; default: the "
                         "manifest's hashing")
    ap.add_argument("--id-rows", type=int, default=None,
                    help="hash the item ids into ID_ROWS rows instead of the manifest's (ignored with --vocab)")
    ap.add_argument("--id-dim", type=int, default=None,
                    help="train only the first ID_DIM columns of the id embeddings (the rest stay zero "
                         "and are neither sent nor noised), as a model with a smaller embedding would")
    args = ap.parse_args()

    S = E.Schema(json.loads((E.RANKER_DIR / "manifest.json").read_text()))
    data = E.load_movielens(args.data)
    ph = E.phase(data, E.split(data), args.phase)
    U, I = data["n_users"], data["n_items"]
    rows = np.array([S.row(E.item_id(i)) for i in range(I)], dtype=np.int64)
    if args.id_rows is not None:
        rows = np.array([build.fnv1a64(E.item_id(i)) % args.id_rows for i in range(I)], dtype=np.int64)
    if args.vocab is not None:
        by_popularity = sorted(range(I), key=lambda i: (-ph["counts"][i], i))
        rows = np.full(I, min(args.vocab, I), dtype=np.int64)
        rows[by_popularity[:args.vocab]] = np.arange(min(args.vocab, I))
    id_strings = [E.item_id(i).encode() for i in range(I)]
    id_rank = np.empty(I, dtype=np.int64)
    id_rank[sorted(range(I), key=lambda i: id_strings[i])] = np.arange(I)
    ctx = {"convention": "play", "cat_share": E.category_shares(S, data["meta"]), "rows": rows, "id_rank": id_rank}
    ex, q = E.make_hearth_data(S, data, ph, ctx)
    feats = E.item_features(S, data["meta"], ph["counts"], dt.datetime.now(dt.timezone.utc).year)
    p = E.load_weights(S, E.RANKER_DIR / "weights.bin")
    names = [n for n, _ in S.params]
    # What a device trains and sends: 1 where a value is a shared parameter.
    shared = {k: np.ones(p[k].shape) for k in names}
    if args.id_dim is not None:
        for k in ("emb_item", "emb_history"):
            shared[k][:, args.id_dim:] = 0.0
            p[k] = (p[k] * shared[k]).astype(np.float32)
    if args.tie:
        p["emb_history"] = p["emb_item"].copy()
    if args.local_history or args.frozen_history:
        shared["emb_history"][:] = 0.0  # never sent, so never noised
    sent = [k for k in names if not (args.tie and k == "emb_history")]
    by_user = [np.nonzero(ex["uid"] == u)[0][-NEWEST:] for u in range(U)]
    c = 1 + args.negatives

    split = {k: [] for k in ("towers", "id_bias", "emb_item own", "emb_item rest", "emb_history")}
    # --local-history: each device's own emb_history, once it has trained.
    personal = {}

    def quality(p):
        scores = E.score_all(p, q, feats, rows, S.history_eps)
        if personal:
            alpha = q["hist_w"] / (q["hist_w"].sum(axis=1, keepdims=True) + np.float32(S.history_eps))
            for u, table in personal.items():
                own = (alpha[u][:, None] * table[q["hist_rows"][u]]).sum(axis=0)
                shared_eu = (alpha[u][:, None] * p["emb_history"][q["hist_rows"][u]]).sum(axis=0)
                scores[u] += (own - shared_eu) @ p["emb_item"][rows].T
        return E.rank_metrics(scores, ph["target"], ph["seen"])

    def local(p, u, rng):
        idx = by_user[u]
        w = {k: v.copy() for k, v in p.items()}
        if args.local_history:
            w["emb_history"] = personal.get(u, p["emb_history"]).copy()
        seen = ph["seen"][u]
        for _ in range(args.epochs):
            order = rng.permutation(len(idx))
            for s in range(0, len(idx), args.batch):
                b = idx[order[s:s + args.batch]]
                pos = ex["item"][b]
                neg = E.sample_negatives(rng, np.broadcast_to(seen, (len(b), I)), I, args.negatives)
                cand = np.concatenate([pos[:, None], neg], axis=1)
                if args.examples == "then":
                    user, hr, hw = ex["user"][b], ex["hist_rows"][b], ex["hist_w"][b]
                else:
                    user = np.broadcast_to(q["user"][u], (len(b), S.user_width))
                    hr = np.broadcast_to(q["hist_rows"][u], (len(b), q["hist_rows"].shape[1])).copy()
                    hw = np.broadcast_to(q["hist_w"][u], (len(b), q["hist_w"].shape[1])).copy()
                    hw[hr == rows[pos][:, None]] = 0.0  # the item leaves its own history
                z = np.concatenate([user, ex["context"][b]], axis=1).astype(np.float32)
                labels = np.tile(np.eye(1, c, dtype=np.float32)[0], len(b))
                scores, cache = build.forward(w, z, feats[cand.ravel()], rows[cand.ravel()], hr, hw)
                _, gs = build.loss_and_dscores(scores, labels, np.ones_like(labels))
                g = build.backward(w, cache, gs.astype(np.float32))
                if args.tie:
                    g["emb_item"] = g["emb_history"] = g["emb_item"] + g["emb_history"]
                for k in names:
                    w[k] = (w[k] - args.lr * g[k]).astype(np.float32)
        if args.local_history:
            personal[u] = w["emb_history"]
        if args.local_history or args.frozen_history:
            w["emb_history"] = p["emb_history"]
        d = {k: (w[k].astype(np.float64) - p[k]) * (1.0 if k in ID_TABLES else args.tower_scale) for k in names}
        norm = float(np.sqrt(sum(float((d[k] ** 2).sum()) for k in sent)))
        if not np.isfinite(norm):
            return None, norm
        if norm > args.clip:
            d = {k: v * (args.clip / norm) for k, v in d.items()}
        if args.norm_split:
            own = np.zeros(d["emb_item"].shape[0], dtype=bool)
            own[rows[ex["item"][idx]]] = True
            sq = lambda a: float((a ** 2).sum())  # noqa: E731
            split["towers"].append(sum(sq(d[k]) for k in names if k not in ID_TABLES) / norm ** 2)
            split["id_bias"].append(sq(d["id_bias"]) / norm ** 2)
            split["emb_item own"].append(sq(d["emb_item"][own]) / norm ** 2)
            split["emb_item rest"].append(sq(d["emb_item"][~own]) / norm ** 2)
            split["emb_history"].append(sq(d["emb_history"]) / norm ** 2)
        return d, norm

    rng = np.random.default_rng(args.seed)
    noise_rng = np.random.default_rng(args.seed + 1)
    m1 = {k: np.zeros(p[k].shape) for k in names}
    m2 = {k: np.zeros(p[k].shape) for k in names}
    decays = [float(b) for b in args.ema.split(",")] if args.ema else []
    averages = {b: {k: p[k].astype(np.float64) for k in names} for b in decays}
    gated = {"emb_item": [], "emb_history": []}
    m0 = quality(p)
    print(f"round 0: NDCG@10 {m0['ndcg_at_10']:.4f} HR@10 {m0['hit_rate_at_10']:.4f} ({args.phase} item)", flush=True)
    t0 = time.perf_counter()
    for r in range(1, args.rounds + 1):
        total = {k: np.zeros(p[k].shape) for k in names}
        norms = []
        for u in rng.choice(U, size=args.clients, replace=False):
            d, norm = local(p, u, rng)
            if d is None:
                continue
            norms.append(norm)
            for k in names:
                total[k] += d[k]
        mean = {k: v / max(len(norms), 1) for k, v in total.items()}
        noise_std = args.noise * args.clip / (args.cohort or args.clients)
        if args.noise > 0:
            noised = set(args.noise_only.split(",")) if args.noise_only else set(names)
            mean = {k: v + noise_rng.normal(0.0, noise_std, size=v.shape) * shared[k] if k in noised else v
                    for k, v in mean.items()}
        if args.tie:
            mean["emb_history"] = mean["emb_item"]
        mean = {k: v if k in ID_TABLES else v / args.tower_scale for k, v in mean.items()}
        lr = args.server_lr
        if args.server_lr_final is not None and args.rounds > 1:
            lr += (args.server_lr_final - args.server_lr) * (r - 1) / (args.rounds - 1)
        for k in names:
            if args.id_server == "avg" and k in ID_TABLES:
                m1[k] = args.id_momentum * m1[k] + mean[k]
                p[k] = (p[k] + args.id_server_lr * m1[k]).astype(np.float32)
            elif args.server == "avg":
                m1[k] = args.momentum * m1[k] + mean[k]
                p[k] = (p[k] + lr * m1[k]).astype(np.float32)
            else:
                g = -mean[k]
                m1[k] = args.beta1 * m1[k] + (1 - args.beta1) * g
                m2[k] = 0.99 * m2[k] + 0.01 * g * g
                tau = args.tau + args.tau_noise * noise_std
                step = (m1[k] / (1 - args.beta1 ** r)) / (np.sqrt(m2[k] / (1 - 0.99 ** r)) + tau)
                if args.gate > 0 and noise_std > 0 and k in ("emb_item", "emb_history"):
                    if args.gate_on == "momentum":
                        x = m1[k] / (1 - args.beta1 ** r)
                        var = (noise_std ** 2 * (1 - args.beta1) ** 2 * (1 - args.beta1 ** (2 * r))
                               / (1 - args.beta1 ** 2) / (1 - args.beta1 ** r) ** 2)
                    else:
                        x, var = g, noise_std ** 2
                    live = (x ** 2).sum(axis=1) > args.gate * x.shape[1] * var
                    gated[k].append(float(live.mean()))
                    step = step * live[:, None]
                p[k] = (p[k] - lr * step).astype(np.float32)
            if args.id_decay and k in ("emb_item", "emb_history"):
                p[k] = (p[k] * (1.0 - args.id_decay)).astype(np.float32)
        for b, a in averages.items():
            for k in names:
                a[k] = b * a[k] + (1.0 - b) * p[k]
        if r % args.eval_every == 0 or r == args.rounds:
            m = quality(p)
            print(f"round {r}: NDCG@10 {m['ndcg_at_10']:.4f} HR@10 {m['hit_rate_at_10']:.4f}, mean norm before "
                  f"clip {np.mean(norms):.3f}, {len(norms)} of {args.clients} devices "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)
            if args.norm_split:
                print("  share of the squared norm: " + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in split.items()),
                      flush=True)
                for v in split.values():
                    v.clear()
            if args.gate > 0 and gated["emb_item"]:
                print("  rows stepped: " + ", ".join(f"{k} {np.mean(v[-args.eval_every:]):.3f}"
                                                    for k, v in gated.items()), flush=True)
            for b, a in averages.items():
                m = quality({k: v.astype(np.float32) for k, v in a.items()})
                print(f"  average {b}: NDCG@10 {m['ndcg_at_10']:.4f} HR@10 {m['hit_rate_at_10']:.4f}", flush=True)


if __name__ == "__main__":
    main()
