#!/usr/bin/env python3
"""MovieLens-100K: popularity, matrix factorization and Hearth's ranker, leave-last-out.

Protocol (see README.md beside this file): every rating is an interaction;
per user, interactions sorted by (timestamp, item id), the last is held out
(test) and the one before it is the validation item; candidates are every
item the user has not interacted with in training; NDCG@10 and HR@10 averaged
over all users, ties between scores broken uniformly at random (the expected
value is computed exactly).

Rows of the table:
  popularity       train-set interaction counts
  BPR, ALS         `implicit`, a small grid tuned on the validation item, refit
                   on all training interactions, evaluated on the test item
  Hearth (numpy)   ranker-v1 (models/build.py's numpy model, the shipped graphs)
                   trained centrally on the examples a device would make, early
                   stopping on the validation item, refit on all training data
                   for the chosen number of epochs
  Hearth (device)  the same weights through `hearth evaluate`: events recorded
                   into encrypted stores, features from the profile, ranked
                   through the on-device path (pending until that command exists)

Usage: evaluate.py --data DIR [--out DIR] [--hearth CMD | --no-device] [--update-docs]
(models/movielens/run.sh makes the venv, fetches the data and calls this.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent
REPO = MODELS.parent
sys.path.insert(0, str(MODELS))

# build.py pins the numeric kernels (one BLAS thread, fixed kernel family)
# before numpy loads; importing it first gives this script the same numerics.
import build  # noqa: E402

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402

import numpy as np  # noqa: E402

RANKER_DIR = MODELS / "ranker-v1"
DOCS_PAGE = REPO / "docs" / "ranking.md"
README_BEGIN = "<!-- movielens:begin -->"
README_END = "<!-- movielens:end -->"
DAY_S = 86_400
DAY_MS = 86_400_000
TOP_K = 10
SEED = 20251125
DEVICE = "phone"

# Hearth events made from one rating (see README.md, "Conventions").
EVENT_CONVENTIONS = {
    # every rating: one `play`; rating >= 4 also a `complete` at the same timestamp
    "play+complete": "one `play` per rating, plus a `complete` at the same timestamp when the rating is >= 4",
    # every rating: one `play`
    "play": "one `play` per rating",
}
ENGAGEMENT = {"play": 1.0, "complete": 2.0}  # core/src/profile.rs engagement_weight


def log(msg):
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


T0 = time.perf_counter()

# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def read_table(path: Path):
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    rows = [ln.split("\t") for ln in lines[1:] if ln]
    return header, rows


def load_movielens(data_dir: Path):
    header, rows = read_table(data_dir / "ml-100k.inter")
    col = {h: i for i, h in enumerate(header)}
    users = np.array([int(r[col["user_id"]]) for r in rows])
    items = np.array([int(r[col["item_id"]]) for r in rows])
    ratings = np.array([float(r[col["rating"]]) for r in rows])
    ts = np.array([int(float(r[col["timestamp"]])) for r in rows], dtype=np.int64)

    header, rows = read_table(data_dir / "ml-100k.item")
    col = {h: i for i, h in enumerate(header)}
    meta = {}
    for r in rows:
        iid = int(r[col["item_id"]])
        year = r[col["release_year"]].strip()
        # MovieLens's "unknown" genre means no genre; two items have it.
        genres = [g for g in r[col["class"]].split(" ") if g and g != "unknown"]
        meta[iid] = {
            "title": r[col["movie_title"]].strip() or f"movie {iid}",
            "year": int(year) if year.isdigit() and 1850 <= int(year) <= 2200 else None,
            "genres": genres,
        }
    n_users, n_items = users.max(), max(meta)
    assert sorted(set(users.tolist())) == list(range(1, n_users + 1)), "user ids are not 1..U"
    assert sorted(meta) == list(range(1, n_items + 1)), "item ids are not 1..I"
    assert items.max() <= n_items
    return {"u": users - 1, "i": items - 1, "r": ratings, "t": ts, "meta": [meta[k + 1] for k in range(n_items)],
            "n_users": int(n_users), "n_items": int(n_items)}


def item_id(i: int) -> str:
    """The app's id string of item index i (MovieLens id i + 1)."""
    return f"movie:{i + 1}"


def split(data):
    """Per user, interactions sorted by (timestamp, item id): a list of index
    arrays into the rating arrays. The last is the test item, the one before it
    the validation item."""
    order = np.lexsort((data["i"], data["t"], data["u"]))
    u_sorted = data["u"][order]
    bounds = np.flatnonzero(np.diff(u_sorted)) + 1
    seqs = np.split(order, bounds)
    assert len(seqs) == data["n_users"] and all(len(s) >= 3 for s in seqs)
    return seqs


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------

GAIN = np.array([0.0] + [1.0 / math.log2(r + 1) for r in range(1, TOP_K + 1)])
CUM_GAIN = np.cumsum(GAIN)  # CUM_GAIN[r] = sum of gains of ranks 1..r


def rank_metrics(scores, target, exclude):
    """NDCG@10 and HR@10 of `target` [U] among the items not in `exclude` [U, I].

    Ties are broken uniformly at random; the expectation is exact: with G
    candidates scoring higher and T others scoring the same, the rank is
    uniform on G+1 .. G+1+T."""
    s = np.where(exclude, -np.inf, scores.astype(np.float64))
    n = len(target)
    ts = s[np.arange(n), target]
    assert np.isfinite(ts).all(), "a held-out item is excluded or scored non-finite"
    greater = (s > ts[:, None]).sum(axis=1)
    ties = (s == ts[:, None]).sum(axis=1) - 1
    lo, hi = greater + 1, greater + 1 + ties
    in_top = np.clip(np.minimum(hi, TOP_K) - lo + 1, 0, None)
    hr = in_top / (ties + 1)
    ndcg = np.where(lo <= TOP_K, CUM_GAIN[np.minimum(hi, TOP_K)] - CUM_GAIN[np.minimum(lo - 1, TOP_K)], 0.0) / (ties + 1)
    return {"ndcg_at_10": float(ndcg.mean()), "hit_rate_at_10": float(hr.mean())}


def fmt(m):
    return f"NDCG@10 {m['ndcg_at_10']:.4f}  HR@10 {m['hit_rate_at_10']:.4f}"


# ---------------------------------------------------------------------------
# Phases: "val" trains on all but the last two interactions of each user and
# scores the second-to-last; "test" trains on all but the last and scores it.
# ---------------------------------------------------------------------------


def phase(data, seqs, name):
    drop = 2 if name == "val" else 1
    train = [s[:-drop] for s in seqs]
    target_idx = np.array([s[-drop] for s in seqs])
    U, I = data["n_users"], data["n_items"]
    seen = np.zeros((U, I), dtype=bool)
    for u, s in enumerate(train):
        seen[u, data["i"][s]] = True
    counts = seen.sum(axis=0).astype(np.float64)
    return {"name": name, "train": train, "target": data["i"][target_idx], "target_idx": target_idx,
            "seen": seen, "counts": counts}


# ---------------------------------------------------------------------------
# Matrix factorization baselines (implicit)
# ---------------------------------------------------------------------------

# Grids centred (in development, on the validation item) where each model does
# best; every checkpoint of the iterations list is a grid point.
BPR_GRID = [dict(factors=f, learning_rate=lr, regularization=reg)
            for f in (64, 128) for lr in (0.01, 0.02) for reg in (0.01, 0.03)]
BPR_ITERS = (50, 100, 200, 400)
ALS_GRID = [dict(factors=f, regularization=reg, alpha=a)
            for f in (32, 64, 128) for reg in (0.3, 1.0, 3.0, 10.0) for a in (0.5, 1.0, 2.0, 5.0)]
ALS_ITERS = (3, 5, 10, 15)


def mf_fit(kind, params, ph, iters_list):
    """Fits on the phase's training interactions; yields (iterations, metrics) at each checkpoint."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    seen = ph["seen"]
    user_items = sp.csr_matrix(seen.astype(np.float32))
    cls = BayesianPersonalizedRanking if kind == "bpr" else AlternatingLeastSquares
    model = cls(**params, iterations=max(iters_list), random_state=SEED, num_threads=1)
    results = {}

    def callback(it, *rest):
        if it + 1 in iters_list:
            scores = model.user_factors @ model.item_factors.T
            results[it + 1] = rank_metrics(scores, ph["target"], seen)

    model.fit(user_items, show_progress=False, callback=callback)
    return results


def mf_baseline(kind, val, test):
    grid, iters = (BPR_GRID, BPR_ITERS) if kind == "bpr" else (ALS_GRID, ALS_ITERS)
    best = None
    for params in grid:
        for it, m in mf_fit(kind, params, val, iters).items():
            if best is None or m["ndcg_at_10"] > best[2]["ndcg_at_10"]:
                best = (params, it, m)
    params, it, vm = best
    tm = mf_fit(kind, params, test, (it,))[it]
    return {"params": {**params, "iterations": it}, "val": vm, "test": tm, "grid_size": len(grid) * len(iters)}


# ---------------------------------------------------------------------------
# Hearth's features, as the manifest describes them
# ---------------------------------------------------------------------------


class Schema:
    """What evaluate.py reads from manifest.json."""

    def __init__(self, manifest):
        self.manifest = manifest
        f = manifest["features"]
        self.user_width = f["user"]["width"]
        self.context_width = f["context"]["width"]
        self.item_width = f["items"]["width"]
        self.user = {g["group"]: (g["start"], g["len"]) for g in f["user"]["groups"]}
        self.context = {g["group"]: (g["start"], g["len"]) for g in f["context"]["groups"]}
        self.items = {g["group"]: (g["start"], g["len"]) for g in f["items"]["groups"]}
        self.context_slots = [s["name"] for s in f["context"]["slots"]]
        self.user_slots = [s["name"] for s in f["user"]["slots"]]
        h = manifest["hashing"]
        self.buckets, self.id_rows = h["category_buckets"], h["id_rows"]
        for v in h["test_vectors"]:  # our hashing is the manifest's
            hv = build.fnv1a64(v["text"])
            assert f"{hv:016x}" == v["fnv1a64"] and hv % self.buckets == v["category_bucket"] \
                and hv % self.id_rows == v["item_row"], f"hash test vector {v['text']!r} fails"
        t = manifest["training"]
        self.max_history = t["max_history"]
        self.half_life_days = t["history_half_life_days"]
        self.history_eps = f["constants"]["history_eps"]
        self.params = [(p["name"], tuple(p["shape"])) for p in manifest["parameters"]]

    def bucket(self, category):
        return build.fnv1a64(category) % self.buckets

    def row(self, item_id_str):
        return build.fnv1a64(item_id_str) % self.id_rows


def item_features(S: Schema, meta, popularity, year_now):
    """[I, items.width] per manifest features.items; language and duration unknown."""
    n = len(meta)
    f = np.zeros((n, S.item_width))
    c0, _ = S.items["category"]
    for i, m in enumerate(meta):
        for g in m["genres"]:
            f[i, c0 + S.bucket(g)] = 1.0
    mx = popularity.max()
    f[:, S.items["log_popularity"][0]] = np.log1p(popularity) / np.log1p(mx) if mx > 0 else 0.0
    year = np.array([m["year"] if m["year"] is not None else -1 for m in meta])
    known = year >= 0
    f[:, S.items["age"][0]] = np.where(known, np.clip((year_now - year) / 50.0, 0.0, 2.0), 0.0)
    f[:, S.items["log_duration"][0]] = 0.0  # duration unknown
    f[:, S.items["language_match"][0]] = 0.5  # item language and locale unknown
    f[:, S.items["release_year_missing"][0]] = (~known).astype(np.float64)
    f[:, S.items["duration_missing"][0]] = 1.0
    return f.astype(np.float32)


def category_shares(S: Schema, meta):
    """[I, buckets]: each of an item's categories adds 1/len(categories) to its bucket."""
    out = np.zeros((len(meta), S.buckets))
    for i, m in enumerate(meta):
        for g in m["genres"]:
            out[i, S.bucket(g)] += 1.0 / len(m["genres"])
    return out


def engagement(ratings, convention):
    """(engagement weight, events, completes) per rating under the convention."""
    liked = ratings >= 4
    if convention == "play+complete":
        return (ENGAGEMENT["play"] + ENGAGEMENT["complete"] * liked, 1 + liked.astype(np.int64),
                liked.astype(np.int64))
    return np.full(len(ratings), ENGAGEMENT["play"]), np.ones(len(ratings), dtype=np.int64), \
        np.zeros(len(ratings), dtype=np.int64)


def hour_of(ts_s):
    return (np.asarray(ts_s) // 3600) % 24


def examples_for_user(S: Schema, ctx, items, ts, ratings):
    """One row per position j of the user's sequence: the profile, context and
    history as they stood just before interaction j (positions < j folded in,
    decayed to j's time). Returns a dict of arrays with len(items) rows."""
    m = len(items)
    w, nev, compl = engagement(ratings, ctx["convention"])
    dt_days = (ts[:, None] - ts[None, :]) / DAY_S
    earlier = np.tri(m, m, -1, dtype=bool)  # [j, k]: k < j
    decay = np.where(earlier, 0.5 ** (np.maximum(dt_days, 0) / S.half_life_days), 0.0)

    user = np.zeros((m, S.user_width))
    a0, alen = S.user["category_affinity"]
    aff = decay @ (w[:, None] * ctx["cat_share"][items])  # all engagement is > 0 here
    s = aff.sum(axis=1, keepdims=True)
    user[:, a0:a0 + alen] = np.where(s > 0, aff / np.where(s > 0, s, 1.0), 0.0)
    d0, _ = S.user["device_mix"]
    user[1:, d0 + build.DEVICE_CLASSES.index(DEVICE)] = 1.0  # every event is on the phone
    plays = np.arange(m)
    completes = np.cumsum(compl) - compl
    user[:, S.user["completion_rate"][0]] = np.where(plays > 0, np.minimum(completes / np.maximum(plays, 1), 1.0), 0)
    user[:, S.user["skip_rate"][0]] = 0.0  # no skip events
    user[:, S.user["log_event_count"][0]] = np.log1p(np.cumsum(nev) - nev) / 10.0

    context = np.zeros((m, S.context_width))
    context[:, S.context["device"][0] + build.DEVICE_CLASSES.index(DEVICE)] = 1.0
    hs, hc = build.hour_features(hour_of(ts))
    h0, _ = S.context["hour"]
    context[:, h0], context[:, h0 + 1] = hs, hc

    # History: earlier items, most recent first (ties: item id bytes ascending),
    # at most max_history; weight = engagement decayed to j's time.
    order = np.lexsort((ctx["id_rank"][items], -ts))
    recency = np.empty(m, dtype=np.int64)
    recency[order] = np.arange(m)
    key = np.where(earlier, recency[None, :], m + 1)
    K = S.max_history
    pick = np.argsort(key, axis=1, kind="stable")[:, :K]  # [m, <=K]
    valid = np.take_along_axis(earlier, pick, axis=1)
    hist_rows = np.zeros((m, K), dtype=np.int64)
    hist_w = np.zeros((m, K))
    kk = pick.shape[1]
    hist_rows[:, :kk] = np.where(valid, ctx["rows"][items[pick]], 0)
    hist_w[:, :kk] = np.where(valid, w[pick] * np.take_along_axis(decay, pick, axis=1), 0.0)
    return {"user": user.astype(np.float32), "context": context.astype(np.float32), "hist_rows": hist_rows,
            "hist_w": hist_w.astype(np.float32), "item": items}


def make_hearth_data(S: Schema, data, ph, ctx):
    """Training examples (every training position of every user) and one query
    per user (the phase's target, with the whole training history)."""
    parts, queries = [], []
    for u, s in enumerate(ph["train"]):
        seq = np.concatenate([s, [ph["target_idx"][u]]])
        ex = examples_for_user(S, ctx, data["i"][seq], data["t"][seq], data["r"][seq])
        ex["uid"] = np.full(len(seq), u)
        parts.append({k: v[:-1] for k, v in ex.items()})
        queries.append({k: v[-1:] for k, v in ex.items()})
    cat = lambda xs: {k: np.concatenate([x[k] for x in xs]) for k in xs[0]}  # noqa: E731
    return cat(parts), cat(queries)


# ---------------------------------------------------------------------------
# Hearth's model: scoring and training (build.py's numpy forward/backward)
# ---------------------------------------------------------------------------


def score_all(p, q, feats, rows, eps):
    """Scores [U, I] of every item for each query, float32, as the graph computes them."""
    z = np.concatenate([q["user"], q["context"]], axis=1)
    u = build.relu(z @ p["user_w1"] + p["user_b1"]) @ p["user_w2"] + p["user_b2"]
    v = build.relu(feats @ p["item_w1"] + p["item_b1"]) @ p["item_w2"] + p["item_b2"]
    alpha = q["hist_w"] / (q["hist_w"].sum(axis=1, keepdims=True) + np.float32(eps))
    eu = (alpha[:, :, None] * p["emb_history"][q["hist_rows"]]).sum(axis=1)
    fixed = feats @ p["item_linear"] + p["id_bias"][rows] + p["global_bias"][0]
    return u @ v.T + eu @ p["emb_item"][rows].T + fixed[None, :]


def load_weights(S: Schema, path: Path):
    raw = np.frombuffer(path.read_bytes(), dtype="<f4")
    p, off = {}, 0
    for name, shape in S.params:
        n = int(np.prod(shape))
        p[name] = raw[off:off + n].reshape(shape).astype(np.float32)
        off += n
    assert off == len(raw)
    return p


def sample_negatives(rng, seen_u, n_items, count):
    """Uniform over the items each row's user has not interacted with in training."""
    neg = rng.integers(n_items, size=(seen_u.shape[0], count))
    bad = np.take_along_axis(seen_u, neg, axis=1)
    while bad.any():
        neg[bad] = rng.integers(n_items, size=int(bad.sum()))
        bad = np.take_along_axis(seen_u, neg, axis=1)
    return neg


def train_hearth(S, p, ex, ph, feats, rows, hp, epochs, rng, eval_fn=None, patience=None):
    """Adam on every parameter. Each example: its positive and hp['negatives']
    uniform negatives, labels [1, 0, ...], sample weights 1. Returns the
    parameters after each epoch's evaluation, with the best kept when eval_fn is given."""
    names = [n for n, _ in S.params]
    m = {n: np.zeros_like(p[n]) for n in names}
    v = {n: np.zeros_like(p[n]) for n in names}
    b1, b2, eps = 0.9, 0.999, 1e-8
    lr, batch, negs = hp["lr"], hp["batch"], hp["negatives"]
    n_ex = len(ex["item"])
    c = 1 + negs
    labels = np.tile(np.eye(1, c, dtype=np.float32)[0], batch)
    weights = np.ones_like(labels)
    step = 0
    history, best = [], None
    for epoch in range(1, epochs + 1):
        t_ep = time.perf_counter()
        order = rng.permutation(n_ex)
        total, nb = 0.0, 0
        for start in range(0, n_ex - batch + 1, batch):
            idx = order[start:start + batch]
            pos = ex["item"][idx]
            neg = sample_negatives(rng, ph["seen"][ex["uid"][idx]], len(rows), negs)
            cand = np.concatenate([pos[:, None], neg], axis=1)
            z = np.concatenate([ex["user"][idx], ex["context"][idx]], axis=1)
            scores, cache = build.forward(p, z, feats[cand.ravel()], rows[cand.ravel()], ex["hist_rows"][idx],
                                          ex["hist_w"][idx])
            loss, gs = build.loss_and_dscores(scores, labels, weights)
            grads = build.backward(p, cache, gs.astype(np.float32))
            total += float(loss)
            nb += 1
            step += 1
            corr1, corr2 = 1 - b1 ** step, 1 - b2 ** step
            for n in names:
                g = grads[n]
                m[n] = b1 * m[n] + (1 - b1) * g
                v[n] = b2 * v[n] + (1 - b2) * g * g
                p[n] = (p[n] - lr * (m[n] / corr1) / (np.sqrt(v[n] / corr2) + eps)).astype(np.float32)
        msg = f"  epoch {epoch:2d}: loss {total / max(nb, 1):.4f} ({time.perf_counter() - t_ep:.1f}s)"
        if eval_fn is not None:
            met = eval_fn(p)
            history.append(met)
            msg += f", validation {fmt(met)}"
            if best is None or met["ndcg_at_10"] > best[1]["ndcg_at_10"]:
                best = (epoch, met)
            log(msg)
            if patience is not None and epoch - best[0] >= patience:
                break
        else:
            log(msg)
    return p, best, history


# ---------------------------------------------------------------------------
# The model package and the on-device path
# ---------------------------------------------------------------------------


def write_package(S: Schema, p, out: Path, description):
    out.mkdir(parents=True, exist_ok=True)
    for f in ("inference.onnx", "train_step.onnx"):
        shutil.copyfile(RANKER_DIR / f, out / f)
    weights = b"".join(p[n].astype("<f4").tobytes(order="C") for n, _ in S.params)
    (out / "weights.bin").write_bytes(weights)
    manifest = json.loads((RANKER_DIR / "manifest.json").read_text())
    manifest["files"]["weights"]["sha256"] = hashlib.sha256(weights).hexdigest()
    manifest["files"]["weights"]["bytes"] = len(weights)
    manifest["pretraining"] = description
    (out / "manifest.json").write_bytes(build.canonical_json(manifest))
    stale = out / "manifest.sig"
    if stale.exists():
        stale.unlink()
    return manifest


def check_against_graph(S, p, q, feats, rows, scores, users):
    """The batch scoring equals onnx.reference's run of the shipped inference.onnx."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    ev = ReferenceEvaluator(onnx.load(str(RANKER_DIR / "inference.onnx")))
    worst = 0.0
    for u in users:
        feeds = {"user": q["user"][u], "context": q["context"][u], "items": feats,
                 "item_ids": rows.astype(np.int64), "history_ids": q["hist_rows"][u],
                 "history_weights": q["hist_w"][u], **p}
        (got,) = ev.run(None, feeds)
        err = float(np.max(np.abs(got - scores[u])))
        worst = max(worst, err)
        assert np.allclose(got, scores[u], rtol=1e-4, atol=1e-4), f"user {u}: numpy vs inference.onnx differ by {err}"
    return worst


def device_input(data, ph, meta, popularity, convention, shift_ms):
    """INPUT.json for `hearth evaluate`: the catalog and, per user, the training
    events (CatalogItem and Event in their serde JSON forms) and the held-out item."""
    catalog = []
    for i, m in enumerate(meta):
        item = {"id": item_id(i), "title": m["title"], "categories": m["genres"], "popularity": float(popularity[i])}
        if m["year"] is not None:
            item["release_year"] = m["year"]
        catalog.append(item)
    users = []
    for u, s in enumerate(ph["train"]):
        events = []
        for k in s:
            t_ms = int(data["t"][k]) * 1000 + shift_ms
            context = {"device": DEVICE, "local_hour": int(hour_of(data["t"][k]))}
            events.append({"item_id": item_id(int(data["i"][k])), "kind": "play", "timestamp_ms": t_ms,
                           "context": context})
            if convention == "play+complete" and data["r"][k] >= 4:
                events.append({"item_id": item_id(int(data["i"][k])), "kind": "complete", "timestamp_ms": t_ms,
                               "context": context})
        tk = ph["target_idx"][u]
        users.append({"events": events, "held_out": item_id(int(data["i"][tk])),
                      "context": {"device": DEVICE, "local_hour": int(hour_of(data["t"][tk]))}})
    return {"catalog": catalog, "users": users}


def check_device_input(doc, now_ms):
    """The limits core/src/history.rs validates, so that no record() is refused."""
    for c in doc["catalog"]:
        assert 1 <= len(c["id"].encode()) <= 256 and 1 <= len(c["title"].encode()) <= 1024, c
        assert not any(unicodedata.category(ch) == "Cc" for ch in c["title"]), c  # Rust char::is_control
        assert len(c["categories"]) <= 32 and all(1 <= len(g.encode()) <= 64 for g in c["categories"]), c
        assert c.get("release_year") is None or 1850 <= c["release_year"] <= 2200, c
        assert c["popularity"] >= 0 and math.isfinite(c["popularity"]), c
    for u in doc["users"]:
        assert u["events"] and u["held_out"] not in {e["item_id"] for e in u["events"]}
        for e in u["events"]:
            assert 946_684_800_000 <= e["timestamp_ms"] <= now_ms + DAY_MS and 0 <= e["context"]["local_hour"] <= 23, e


def feature_sample(S, p, q, feats, rows, ph, users, k=TOP_K):
    """The numpy side's inputs and top-k for a few users, to compare with the device."""
    scores = score_all(p, {n: a[users] for n, a in q.items()}, feats, rows, S.history_eps)
    out = []
    for j, u in enumerate(users):
        s = np.where(ph["seen"][u], -np.inf, scores[j])
        top = np.argsort(-s, kind="stable")[:k]
        used = q["hist_w"][u] > 0
        out.append({"user_index": int(u), "user": q["user"][u].tolist(), "context": q["context"][u].tolist(),
                    "history_ids": q["hist_rows"][u][used].tolist(), "history_weights": q["hist_w"][u][used].tolist(),
                    "held_out": item_id(int(ph["target"][u])), "held_out_score": float(scores[j, ph["target"][u]]),
                    "top": [{"item_id": item_id(int(i)), "score": float(s[i])} for i in top]})
    return out


def run_device(cmd, pkg: Path, input_path: Path, workdir: Path):
    """keygen, sign, evaluate. Returns (metrics or None, note)."""
    def run(args, check=True):
        r = subprocess.run(cmd + args, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"`{' '.join(shlex.quote(a) for a in cmd + args)}` exited {r.returncode}: "
                               f"{(r.stderr or r.stdout).strip()[-800:]}")
        return r

    helps = {}
    for probe in (["evaluate", "--help"], ["model", "keygen", "--help"], ["model", "sign", "--help"]):
        try:
            r = run(probe, check=False)
        except OSError as e:
            return None, f"cannot run {cmd[0]}: {e}"
        if r.returncode != 0:
            return None, f"`hearth {' '.join(probe[:-1])}` is not in this build of the CLI yet"
        helps[probe[0]] = r.stdout
    key = workdir / "movielens-eval.pk8"
    r = run(["model", "keygen", "--out", str(key)])
    hexes = [tok for tok in r.stdout.split() if len(tok) == 64 and all(ch in "0123456789abcdefABCDEF" for ch in tok)]
    if not hexes:
        raise RuntimeError(f"`hearth model keygen` printed no 64-digit public key hex: {r.stdout.strip()[-300:]}")
    run(["model", "sign", "--key", str(key), str(pkg)])
    t = time.perf_counter()
    threads = ["--threads", os.environ.get("HEARTH_EVAL_THREADS", "1")] if "--threads" in helps["evaluate"] else []
    r = run(["evaluate", "--input", str(input_path), "--model", str(pkg), "--trust-key", hexes[-1], *threads])
    secs = time.perf_counter() - t
    text = r.stdout.strip()
    start = text.rfind("\n{")
    obj = json.loads(text[start + 1:] if start >= 0 else text)
    note = f"`hearth evaluate` took {secs:.1f}s"
    if obj.get("fallback_rows"):
        note += f"; {obj['fallback_rows']} users ranked by the fallback ranker"
    return obj, note


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------


def table(res):
    pop = res["popularity"]["ndcg_at_10"]

    def row(label, m):
        if m is None:
            return f"| {label} | pending | pending | |"
        return (f"| {label} | {m['ndcg_at_10']:.4f} | {m['hit_rate_at_10']:.4f} | "
                f"{m['ndcg_at_10'] / pop:.2f}x |")

    bpr, als, h = res["bpr"], res["als"], res["hearth"]
    bp, ap = bpr["params"], als["params"]
    lines = [
        "| ranker | NDCG@10 | HR@10 | NDCG vs popularity |",
        "| --- | ---: | ---: | ---: |",
        row("popularity (training interaction counts)", res["popularity"]),
        row(f"BPR, `implicit` ({bp['factors']} factors, lr {bp['learning_rate']:g}, reg {bp['regularization']:g}, "
            f"{bp['iterations']} iterations)", bpr["test"]),
        row(f"ALS, `implicit` ({ap['factors']} factors, reg {ap['regularization']:g}, alpha {ap['alpha']:g}, "
            f"{ap['iterations']} iterations)", als["test"]),
        row("Hearth ranker-v1 trained centrally, scored in numpy", h["test"]),
        row("same weights, on-device path (`hearth evaluate`: encrypted store, profile, tract)",
            res["device"]["metrics"]),
    ]
    return lines


def readme_block(res):
    d = res["data"]
    h = res["hearth"]
    wrap = lambda text: textwrap.fill(text, width=78, break_long_words=False, break_on_hyphens=False)  # noqa: E731
    lines = [README_BEGIN, "", wrap(
             f"MovieLens-100K ({d['users']} users, {d['items']} movies, {d['ratings']:,} ratings), every rating an "
             "interaction; per user the last one by time is held out and ranked against every movie the user has "
             f"not rated before it (mean {d['mean_candidates']:.0f} candidates). Reproduce with "
             "`models/movielens/run.sh` (data fetched at run time, never committed; protocol and conventions in "
             "`models/movielens/README.md`)."), ""]
    lines += table(res)
    start = "the shipped ranker-v1 weights" if h["init"] == "shipped" else "a fresh initialization"
    lines += ["", wrap(
              "The hyperparameters of every trained row (BPR's and ALS's grids, Hearth's number of epochs) were chosen "
              "on each user's second-to-last interaction; the models were then refit on all training interactions. "
              f"Hearth's model: all {h['param_count']:,} parameters (id tables included) trained centrally from "
              f"{start} with Adam, {h['hp']['negatives']} uniform negatives per positive, {h['epochs']} epochs; the "
              "on-device row ranks with those weights in a signed package, from each user's events recorded into an "
              "encrypted store."), "", README_END]
    return "\n".join(lines)


def update_readme(path: Path, block):
    text = path.read_text()
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        return False
    path.write_text(text[:a] + block + text[b + len(README_END):])
    return True


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache/hearth/data/ml-100k")
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache/hearth/movielens-out",
                    help="where the trained model package, INPUT.json and results.json go")
    ap.add_argument("--hearth", default=os.environ.get("HEARTH_BIN"),
                    help="command that runs the hearth CLI (e.g. target/release/hearth); absent: device row pending")
    ap.add_argument("--no-device", action="store_true", help="skip the on-device path")
    ap.add_argument("--device-note", default="", help="why the device row is pending (from run.sh)")
    ap.add_argument("--update-docs", action="store_true")
    ap.add_argument("--docs-page", type=Path, default=DOCS_PAGE, help="the page whose movielens block --update-docs rewrites")
    # Defaults chosen on the validation item (README.md, "Hearth's training").
    ap.add_argument("--events", choices=sorted(EVENT_CONVENTIONS), default="play")
    ap.add_argument("--init", choices=("shipped", "fresh"), default="shipped")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--negatives", type=int, default=32)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=6, help="epochs without a better validation NDCG before stopping")
    ap.add_argument("--skip-mf", action="store_true", help="(development) no BPR/ALS grid")
    args = ap.parse_args()
    timings = {}

    manifest = json.loads((RANKER_DIR / "manifest.json").read_text())
    S = Schema(manifest)
    data = load_movielens(args.data)
    seqs = split(data)
    U, I = data["n_users"], data["n_items"]
    val, test = phase(data, seqs, "val"), phase(data, seqs, "test")
    mean_cand = float((~test["seen"]).sum(axis=1).mean())
    log(f"MovieLens-100K: {U} users, {I} items, {len(data['r'])} ratings; mean candidates per user {mean_cand:.0f}")
    res = {"data": {"users": U, "items": I, "ratings": int(len(data["r"])), "mean_candidates": mean_cand}}

    # Popularity.
    t = time.perf_counter()
    res["popularity"] = rank_metrics(np.broadcast_to(test["counts"], (U, I)), test["target"], test["seen"])
    res["popularity_val"] = rank_metrics(np.broadcast_to(val["counts"], (U, I)), val["target"], val["seen"])
    log(f"popularity: {fmt(res['popularity'])} (validation {fmt(res['popularity_val'])})")

    # Matrix factorization.
    for kind in ("bpr", "als"):
        t = time.perf_counter()
        if args.skip_mf:
            res[kind] = {"params": {"factors": 0, "learning_rate": 0, "regularization": 0, "alpha": 0,
                                    "iterations": 0}, "val": None, "test": None}
            continue
        res[kind] = mf_baseline(kind, val, test)
        timings[kind] = time.perf_counter() - t
        log(f"{kind.upper()}: best on validation {res[kind]['params']} ({fmt(res[kind]['val'])}); "
            f"test {fmt(res[kind]['test'])} [{res[kind]['grid_size']} grid points, {timings[kind]:.0f}s]")

    # Hearth's model.
    t = time.perf_counter()
    year_now = dt.datetime.now(dt.timezone.utc).year
    rows = np.array([S.row(item_id(i)) for i in range(I)], dtype=np.int64)
    id_strings = [item_id(i).encode() for i in range(I)]
    id_rank = np.empty(I, dtype=np.int64)
    id_rank[sorted(range(I), key=lambda i: id_strings[i])] = np.arange(I)
    ctx = {"convention": args.events, "cat_share": category_shares(S, data["meta"]), "rows": rows,
           "id_rank": id_rank}
    hp = {"lr": args.lr, "batch": args.batch, "negatives": args.negatives}
    init = (lambda: load_weights(S, RANKER_DIR / "weights.bin")) if args.init == "shipped" else \
        (lambda: build.init_params(np.random.default_rng(SEED)))

    ex_v, q_v = make_hearth_data(S, data, val, ctx)
    feats_v = item_features(S, data["meta"], val["counts"], year_now)
    log(f"Hearth: {len(ex_v['item'])} validation-phase training examples ({args.events}); "
        f"id rows used {len(set(rows.tolist()))} of {S.id_rows} by {I} items")
    p0 = init()
    res["hearth_untrained"] = rank_metrics(score_all(p0, q_v, feats_v, rows, S.history_eps), val["target"],
                                           val["seen"])
    log(f"  starting weights on validation: {fmt(res['hearth_untrained'])}")
    _, best, _ = train_hearth(S, p0, ex_v, val, feats_v, rows, hp, args.max_epochs, np.random.default_rng(SEED),
                              eval_fn=lambda p: rank_metrics(score_all(p, q_v, feats_v, rows, S.history_eps),
                                                             val["target"], val["seen"]),
                              patience=args.patience)
    epochs, val_metrics = best
    log(f"  best validation epoch {epochs}: {fmt(val_metrics)}; refitting on all training interactions")
    ex_t, q_t = make_hearth_data(S, data, test, ctx)
    feats_t = item_features(S, data["meta"], test["counts"], year_now)
    p, _, _ = train_hearth(S, init(), ex_t, test, feats_t, rows, hp, epochs, np.random.default_rng(SEED + 1))
    scores = score_all(p, q_t, feats_t, rows, S.history_eps)
    test_metrics = rank_metrics(scores, test["target"], test["seen"])
    worst = check_against_graph(S, p, q_t, feats_t, rows, scores, users=[0, U // 2, U - 1])
    timings["hearth"] = time.perf_counter() - t
    log(f"Hearth numpy: test {fmt(test_metrics)} ({test_metrics['ndcg_at_10'] / res['popularity']['ndcg_at_10']:.2f}x "
        f"popularity NDCG); inference.onnx agrees to {worst:.1e} [{timings['hearth']:.0f}s]")
    res["hearth"] = {"val": val_metrics, "test": test_metrics, "epochs": epochs, "hp": hp, "init": args.init,
                     "events": args.events, "train_examples": int(len(ex_t["item"])), "year": year_now,
                     "param_count": int(sum(a.size for a in p.values()))}

    # The package and the device input.
    pkg = args.out / "ranker-movielens"
    description = {
        "data": {"dataset": "MovieLens-100K", "users": U, "items": I, "train_examples": res["hearth"]["train_examples"],
                 "events": EVENT_CONVENTIONS[args.events], "seed": SEED},
        "held_out": {"popularity": {k: round(v, 4) for k, v in res["popularity"].items()},
                     "trained": {k: round(v, 4) for k, v in test_metrics.items()}},
        "metric": "NDCG@10 and HR@10 of each user's last interaction by time, ranked against every item the user "
                  "had not interacted with before it",
        "shipped_weights": (
            f"ranker-v1's graphs; every parameter (id tables included) trained centrally on MovieLens-100K by "
            f"models/movielens/evaluate.py from the {args.init} ranker-v1 weights: Adam, learning rate {hp['lr']:g}, "
            f"batch {hp['batch']}, {hp['negatives']} uniform negatives per positive, {epochs} epochs "
            f"(chosen on the second-to-last interaction). Item ids are 'movie:<MovieLens id>'. Not for shipping."),
    }
    write_package(S, p, pkg, description)
    shift_ms = ((int(time.time() * 1000) - 2 * DAY_MS - int(data["t"].max()) * 1000) // DAY_MS) * DAY_MS
    doc = device_input(data, test, data["meta"], test["counts"], args.events, shift_ms)
    check_device_input(doc, int(time.time() * 1000))
    (args.out / "features-sample.json").write_text(json.dumps(
        feature_sample(S, p, q_t, feats_t, rows, test, [0, 1, 2]), indent=1) + "\n")
    input_path = args.out / "movielens-input.json"
    input_path.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    log(f"wrote {pkg} and {input_path} ({sum(len(u['events']) for u in doc['users']):,} events; timestamps "
        f"shifted by {shift_ms // DAY_MS} days)")

    device = {"metrics": None, "note": "skipped (--no-device)" if args.no_device else
              (args.device_note or "no hearth CLI given")}
    if not args.no_device and args.hearth:
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                metrics, note = run_device(shlex.split(args.hearth), pkg, input_path, Path(tmp))
            except Exception as e:  # a failing run is reported, never hidden
                metrics, note = None, f"failed: {e}"
        timings["device"] = time.perf_counter() - t
        if metrics is not None:
            if metrics.get("users") != U:
                note += f"; WARNING: evaluated {metrics.get('users')} users, expected {U}"
            metrics = {"ndcg_at_10": float(metrics["ndcg_at_10"]), "hit_rate_at_10": float(metrics["hit_rate_at_10"])}
            d = abs(metrics["ndcg_at_10"] - test_metrics["ndcg_at_10"])
            note += f"; |NDCG device - numpy| = {d:.4f}"
        device = {"metrics": metrics, "note": note}
    res["device"] = device
    log(f"device path: {fmt(device['metrics']) if device['metrics'] else 'pending'} ({device['note']})")

    res["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    res["total_s"] = round(time.perf_counter() - T0, 1)
    (args.out / "results.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    print()
    print("\n".join(table(res)))
    print()
    print(f"(device row: {device['note']})")
    print(f"evaluate.py took {res['total_s']:.0f}s; results in {args.out / 'results.json'}")
    if args.update_docs:
        if update_readme(args.docs_page, readme_block(res)):
            print(f"updated the generated block of {args.docs_page}")
        else:
            print(f"{args.docs_page}: no {README_BEGIN} ... {README_END} markers; not changed")


if __name__ == "__main__":
    main()
