#!/usr/bin/env python3
"""Builds the Hearth ranker, version 1: the model as data.

Writes into ranker-v1/ (or --out DIR):
  inference.onnx   scores for N candidate items of one user (opset 17)
  train_step.onnx  the same forward pass plus loss and one gradient per parameter
  weights.bin      initial parameters, pre-trained on synthetic data
  inference.nnef.tar, train_step.nnef.tar
                   the two graphs in tract's NNEF, converted from the ONNX by
                   `hearth model nnef` (--hearth BINARY; models/check.sh
                   builds it), for libraries that load NNEF
  manifest.json    schema, feature slots, hashing, parameter layout, hashes

Both graphs take every parameter as a graph input, so a federated round ships
a new weights.bin and never a new graph. Gradients are derived by hand in
plain ONNX ops, because tract runs graphs but has no autograd.

The script fails loudly (non-zero exit) when its own checks fail:
  1. the numpy forward pass equals onnx.reference's run of inference.onnx;
  2. every gradient output of train_step.onnx matches central finite
     differences of a float64 numpy loss (random inputs with repeated ids and
     zero-weight history padding);
  3. the loss output equals the numpy loss.

Only numpy, onnx and the standard library are used. Running it twice gives
byte-identical files (fixed seeds, pinned numeric kernels, canonical JSON).
"""

from __future__ import annotations

import os

# The pretrained weights must be the same bytes on every x86-64 machine. Float
# results depend on which kernels run: pin BLAS to one thread and one kernel
# family, and keep numpy on its baseline SIMD paths (its AVX2/AVX-512 loops
# round some functions differently). This must happen before numpy loads.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["OPENBLAS_CORETYPE"] = "Haswell"
os.environ["NPY_DISABLE_CPU_FEATURES"] = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

# ---------------------------------------------------------------------------
# Sizes and constants. Everything the device must agree on ends up in the
# manifest, generated from these values.
# ---------------------------------------------------------------------------

MODEL_NAME = "hearth-ranker"
MODEL_VERSION = 1
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17

CATEGORY_BUCKETS = 32  # hashed category slots in `user` and `items`
ID_ROWS = 4096  # rows of the id embedding tables (item ids hashed into them)
EMBED_DIM = 16  # width of the id embeddings
HIDDEN = 64  # hidden width of both towers
TOWER_DIM = 32  # output width of both towers

HISTORY_EPS = 1e-6  # weighted mean of history rows: sum(w * row) / (sum(w) + eps)
LOSS_EPS = 1e-6  # weighted mean loss: sum(sw * l) / (sum(sw) + eps)

DEVICE_CLASSES = ["phone", "tablet", "tv", "car", "speaker"]  # core's DeviceClass order

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3

SEED = 20251125

# The ops a graph may use: those tract 0.23 is known to run.
ALLOWED_OPS = {
    "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Softplus", "Greater",
    "Equal", "Cast", "Transpose", "ReduceSum", "ReduceMean", "Squeeze", "Unsqueeze",
    "Shape", "Gather", "Concat", "Reshape", "Expand", "Range", "Where", "Neg", "Exp", "Log",
}

# ---------------------------------------------------------------------------
# Feature slots. Each group: name, slot names, and how the device computes it.
# ---------------------------------------------------------------------------

USER_GROUPS = [
    {
        "group": "category_affinity",
        "slots": [f"category_affinity_{b:02d}" for b in range(CATEGORY_BUCKETS)],
        "compute": (
            "From the profile's per-category affinity (decayed engagement, may be negative): "
            "keep categories whose affinity is > 0, add each one's affinity into slot "
            "category_bucket(category), then divide every slot by the sum of the kept "
            "affinities. All zeros when nothing is kept."
        ),
    },
    {
        "group": "device_mix",
        "slots": [f"device_mix_{d}" for d in DEVICE_CLASSES],
        "compute": (
            "The profile's decayed device-class counts (order phone, tablet, tv, car, speaker) "
            "divided by their sum; all zeros when the sum is 0."
        ),
    },
    {
        "group": "completion_rate",
        "slots": ["completion_rate"],
        "compute": "min(1, complete events / play events); 0 when there is no play event.",
    },
    {
        "group": "skip_rate",
        "slots": ["skip_rate"],
        "compute": "skip events / (play events + skip events); 0 when both are 0.",
    },
    {
        "group": "log_event_count",
        "slots": ["log_event_count"],
        "compute": "ln(1 + number of events folded into the profile, all kinds) / 10.",
    },
]

CONTEXT_GROUPS = [
    {
        "group": "device",
        "slots": [f"device_{d}" for d in DEVICE_CLASSES],
        "compute": "One-hot of the device class of the request (phone, tablet, tv, car, speaker).",
    },
    {
        "group": "hour",
        "slots": ["hour_sin", "hour_cos"],
        "compute": "sin(2*pi*h/24) and cos(2*pi*h/24), h = the user's local hour 0..23.",
    },
]

ITEM_GROUPS = [
    {
        "group": "category",
        "slots": [f"category_{b:02d}" for b in range(CATEGORY_BUCKETS)],
        "compute": (
            "Multi-hot: 1.0 in slot category_bucket(c) for every category c of the item "
            "(a slot hit twice is still 1.0); all zeros when the item has no category."
        ),
    },
    {
        "group": "log_popularity",
        "slots": ["log_popularity"],
        "compute": (
            "ln(1 + popularity) / ln(1 + max_popularity), where max_popularity is the largest "
            "popularity among the items of the device's catalog cache; 0 when that max is <= 0."
        ),
    },
    {
        "group": "age",
        "slots": ["age"],
        "compute": (
            "clamp((current UTC year - release_year) / 50, 0, 2); 0 when release_year is unknown."
        ),
    },
    {
        "group": "log_duration",
        "slots": ["log_duration"],
        "compute": "ln(1 + duration in minutes) / 5; 0 when the duration is unknown.",
    },
    {
        "group": "language_match",
        "slots": ["language_match"],
        "compute": (
            "Compare the primary subtags (text before the first '-' or '_', ASCII "
            "case-insensitive) of the item's language and the request's locale: 1 if equal, "
            "0 if different, 0.5 if either is unknown."
        ),
    },
    {
        "group": "release_year_missing",
        "slots": ["release_year_missing"],
        "compute": "1 when release_year is unknown, else 0.",
    },
    {
        "group": "duration_missing",
        "slots": ["duration_missing"],
        "compute": "1 when the duration is unknown, else 0.",
    },
]


def slot_names(groups):
    return [s for g in groups for s in g["slots"]]


USER_SLOTS = slot_names(USER_GROUPS)
CONTEXT_SLOTS = slot_names(CONTEXT_GROUPS)
ITEM_SLOTS = slot_names(ITEM_GROUPS)
U_DIM, X_DIM, F_DIM = len(USER_SLOTS), len(CONTEXT_SLOTS), len(ITEM_SLOTS)
Z_DIM = U_DIM + X_DIM
SLOT = {name: i for i, name in enumerate(ITEM_SLOTS)}

# Parameters in manifest (and weights.bin) order.
PARAMS = [
    ("user_w1", (Z_DIM, HIDDEN)),
    ("user_b1", (HIDDEN,)),
    ("user_w2", (HIDDEN, TOWER_DIM)),
    ("user_b2", (TOWER_DIM,)),
    ("item_w1", (F_DIM, HIDDEN)),
    ("item_b1", (HIDDEN,)),
    ("item_w2", (HIDDEN, TOWER_DIM)),
    ("item_b2", (TOWER_DIM,)),
    ("item_linear", (F_DIM,)),
    ("global_bias", (1,)),
    ("id_bias", (ID_ROWS,)),
    ("emb_history", (ID_ROWS, EMBED_DIM)),
    ("emb_item", (ID_ROWS, EMBED_DIM)),
]
PARAM_NAMES = [n for n, _ in PARAMS]
PARAM_SHAPES = dict(PARAMS)
# The id tables (rows indexed by hashed item ids), each with the data input
# that picks its rows. Their gradients leave train_step as rows, one per id of
# that input: row i is added to the table's row ids[i] (a repeated id adds
# twice). Every other row's gradient is zero, so the device adds 33 rows
# instead of 4,096.
ID_TABLES = {"id_bias": "item_ids", "emb_history": "history_ids", "emb_item": "item_ids"}


def grad_output(name):
    """The train_step output that holds parameter `name`'s gradient."""
    return f"grad_{name}_rows" if name in ID_TABLES else f"grad_{name}"


def grad_output_shape(name):
    if name not in ID_TABLES:
        return list(PARAM_SHAPES[name])
    count = "N" if ID_TABLES[name] == "item_ids" else "K"
    return [count] + list(PARAM_SHAPES[name][1:])


def dense_grad(name, out, feeds):
    """Parameter `name`'s gradient as a full array, from train_step's outputs."""
    if name not in ID_TABLES:
        return out[grad_output(name)]
    rows = out[grad_output(name)]
    g = np.zeros(PARAM_SHAPES[name], dtype=rows.dtype)
    np.add.at(g, feeds[ID_TABLES[name]], rows)
    return g
USER_TOWER = {"user_w1", "user_b1", "user_w2", "user_b2"}
ITEM_TOWER = {"item_w1", "item_b1", "item_w2", "item_b2"}

PARAM_DOC = {
    "user_w1": "user tower, layer 1 weights; input is concat(user, context)",
    "user_b1": "user tower, layer 1 bias",
    "user_w2": "user tower, layer 2 weights (linear output)",
    "user_b2": "user tower, layer 2 bias",
    "item_w1": "item tower, layer 1 weights; input is one row of items",
    "item_b1": "item tower, layer 1 bias",
    "item_w2": "item tower, layer 2 weights (linear output)",
    "item_b2": "item tower, layer 2 bias",
    "item_linear": "direct linear term on the item features",
    "global_bias": "constant added to every score",
    "id_bias": "per item-id-row bias",
    "emb_history": "embeddings of history items (the user side of the collaborative term)",
    "emb_item": "embeddings of candidate items (the item side of the collaborative term)",
}

# ---------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------


def fnv1a64(text: str) -> int:
    """FNV-1a, 64 bit, over the UTF-8 bytes of `text`."""
    h = FNV_OFFSET
    for byte in text.encode("utf-8"):
        h ^= byte
        h = (h * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def category_bucket(category: str) -> int:
    return fnv1a64(category) % CATEGORY_BUCKETS


def item_row(item_id: str) -> int:
    return fnv1a64(item_id) % ID_ROWS


# ---------------------------------------------------------------------------
# The model in numpy: forward, loss and backward, for a batch of B queries
# (a query = one user, one context, one history) with C candidate rows each.
# The graphs compute the case B = 1, C = N. Gradients here use scatter-adds
# into full tables; the graph gives the id tables' gradients as rows (the
# device adds them in), and the checks add them in the same way to compare.
# ---------------------------------------------------------------------------


def relu(x):
    return np.maximum(x, 0)


def softplus(x):
    return np.logaddexp(0, x)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def forward(p, z, items, rows, hist_rows, hist_w):
    """Scores of B*C candidate rows.

    z [B, Z] (user ++ context), items [B*C, F], rows [B*C] (id rows of the
    candidates), hist_rows [B, K], hist_w [B, K]. Candidates of query b are
    rows b*C .. b*C+C-1. Returns (scores [B*C], cache for backward).
    """
    b = z.shape[0]
    c = items.shape[0] // b
    ua1 = z @ p["user_w1"] + p["user_b1"]
    uh1 = relu(ua1)
    u = uh1 @ p["user_w2"] + p["user_b2"]
    alpha = hist_w / (hist_w.sum(axis=1, keepdims=True) + HISTORY_EPS)
    ph = p["emb_history"][hist_rows]
    eu = (alpha[:, :, None] * ph).sum(axis=1)
    ia1 = items @ p["item_w1"] + p["item_b1"]
    ih1 = relu(ia1)
    v = ih1 @ p["item_w2"] + p["item_b2"]
    qi = p["emb_item"][rows]
    u_rows = np.repeat(u, c, axis=0)
    eu_rows = np.repeat(eu, c, axis=0)
    scores = (
        (v * u_rows).sum(axis=1)
        + (qi * eu_rows).sum(axis=1)
        + items @ p["item_linear"]
        + p["id_bias"][rows]
        + p["global_bias"][0]
    )
    cache = dict(z=z, items=items, rows=rows, hist_rows=hist_rows, ua1=ua1, uh1=uh1, u=u,
                 alpha=alpha, eu=eu, ia1=ia1, ih1=ih1, v=v, qi=qi, b=b, c=c)
    return scores, cache


def loss_and_dscores(scores, labels, weights):
    """Weighted mean binary cross-entropy with logits, and its derivative."""
    den = weights.sum() + LOSS_EPS
    loss = (weights * (softplus(scores) - labels * scores)).sum() / den
    return loss, weights * (sigmoid(scores) - labels) / den


def backward(p, cache, gs, only=None):
    """Gradients of the loss for the parameters in `only` (all by default)."""
    names = PARAM_NAMES if only is None else only
    k = cache
    b, c = k["b"], k["c"]
    g = {}
    gcol = gs[:, None]
    if "global_bias" in names:
        g["global_bias"] = np.array([gs.sum()], dtype=gs.dtype)
    if "id_bias" in names:
        g["id_bias"] = np.zeros(ID_ROWS, dtype=gs.dtype)
        np.add.at(g["id_bias"], k["rows"], gs)
    if "item_linear" in names:
        g["item_linear"] = k["items"].T @ gs
    if "emb_item" in names:
        g["emb_item"] = np.zeros((ID_ROWS, EMBED_DIM), dtype=gs.dtype)
        np.add.at(g["emb_item"], k["rows"], gcol * np.repeat(k["eu"], c, axis=0))
    if "emb_history" in names:
        geu = (gcol * k["qi"]).reshape(b, c, EMBED_DIM).sum(axis=1)
        gph = k["alpha"][:, :, None] * geu[:, None, :]
        g["emb_history"] = np.zeros((ID_ROWS, EMBED_DIM), dtype=gs.dtype)
        np.add.at(g["emb_history"], k["hist_rows"].ravel(), gph.reshape(-1, EMBED_DIM))
    if ITEM_TOWER & set(names):
        gv = gcol * np.repeat(k["u"], c, axis=0)
        g["item_w2"] = k["ih1"].T @ gv
        g["item_b2"] = gv.sum(axis=0)
        ga = (gv @ p["item_w2"].T) * (k["ia1"] > 0)
        g["item_w1"] = k["items"].T @ ga
        g["item_b1"] = ga.sum(axis=0)
    if USER_TOWER & set(names):
        gu = (gcol * k["v"]).reshape(b, c, TOWER_DIM).sum(axis=1)
        g["user_w2"] = k["uh1"].T @ gu
        g["user_b2"] = gu.sum(axis=0)
        ga = (gu @ p["user_w2"].T) * (k["ua1"] > 0)
        g["user_w1"] = k["z"].T @ ga
        g["user_b1"] = ga.sum(axis=0)
    return {n: g[n] for n in names}


def single_query(p, inputs, dtype=np.float64):
    """Forward for the graphs' own inputs (one user, N candidates)."""
    z = np.concatenate([inputs["user"], inputs["context"]]).astype(dtype)[None, :]
    return forward(
        {n: a.astype(dtype, copy=False) for n, a in p.items()},
        z,
        inputs["items"].astype(dtype, copy=False),
        inputs["item_ids"],
        inputs["history_ids"][None, :],
        inputs["history_weights"].astype(dtype, copy=False)[None, :],
    )


# ---------------------------------------------------------------------------
# The ONNX graphs
# ---------------------------------------------------------------------------


class Graph:
    """A small helper to write a graph node by node; node name = output name."""

    def __init__(self, elem):
        self.elem = elem
        self.np_dtype = np.float32 if elem == TensorProto.FLOAT else np.float64
        self.nodes = []
        self.initializers = []

    def const(self, name, value, dtype=None):
        arr = np.asarray(value, dtype=dtype or self.np_dtype)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attrs))
        return output


def data_inputs(train: bool):
    """(name, onnx elem type or None for the float type, shape, doc) of the data inputs."""
    out = [
        ("user", None, [U_DIM], "user features from the profile; slots in features.user"),
        ("context", None, [X_DIM], "request context; slots in features.context"),
        ("items", None, ["N", F_DIM], "one row of item features per candidate; slots in features.items"),
        ("item_ids", TensorProto.INT64, ["N"], "item_row(candidate item id), each in [0, H)"),
        ("history_ids", TensorProto.INT64, ["K"], "item_row(history item id), each in [0, H); padding: 0"),
        ("history_weights", None, ["K"], "engagement weight >= 0 of each history slot; padding: 0"),
    ]
    if train:
        out += [
            ("labels", None, ["N"], "1 for a positive candidate, 0 for a negative one"),
            ("sample_weights", None, ["N"], "weight >= 0 of each candidate in the loss"),
        ]
    return out


def build_graph(train: bool, elem=TensorProto.FLOAT) -> onnx.ModelProto:
    g = Graph(elem)
    ax0 = g.const("axes_0", [0], np.int64)
    ax1 = g.const("axes_1", [1], np.int64)
    hist_eps = g.const("history_eps", [HISTORY_EPS])

    # User tower on concat(user, context), as a [1, Z] row.
    z = g.op("Concat", ["user", "context"], "z", axis=0)
    z_row = g.op("Unsqueeze", [z, ax0], "z_row")
    ua1 = g.op("Add", [g.op("MatMul", [z_row, "user_w1"], "user_mm1"), "user_b1"], "user_a1")
    uh1 = g.op("Relu", [ua1], "user_h1")
    u = g.op("Add", [g.op("MatMul", [uh1, "user_w2"], "user_mm2"), "user_b2"], "user_vec")

    # Item tower on every candidate row: [N, D].
    ia1 = g.op("Add", [g.op("MatMul", ["items", "item_w1"], "item_mm1"), "item_b1"], "item_a1")
    ih1 = g.op("Relu", [ia1], "item_h1")
    u_t = g.op("Transpose", [u], "user_vec_t", perm=[1, 0])

    # Collaborative term: weighted mean of history rows, dotted with candidate rows.
    wsum = g.op("ReduceSum", ["history_weights", ax0], "history_wsum", keepdims=1)
    alpha = g.op("Div", ["history_weights", g.op("Add", [wsum, hist_eps], "history_den")], "history_alpha")
    alpha_row = g.op("Unsqueeze", [alpha, ax0], "history_alpha_row")
    ph = g.op("Gather", ["emb_history", "history_ids"], "history_emb", axis=0)
    eu = g.op("MatMul", [alpha_row, ph], "user_emb")
    eu_t = g.op("Transpose", [eu], "user_emb_t", perm=[1, 0])

    lin = g.op("MatMul", ["items", g.op("Unsqueeze", ["item_linear", ax1], "item_linear_col")], "linear")
    if train:
        # The sums as written (the weights are inputs, changing every step):
        # item vectors v [N, D], and the candidates' id rows gathered.
        v = g.op("Add", [g.op("MatMul", [ih1, "item_w2"], "item_mm2"), "item_b2"], "item_vec")
        content = g.op("MatMul", [v, u_t], "content")
        qi = g.op("Gather", ["emb_item", "item_ids"], "cand_emb", axis=0)
        cf = g.op("MatMul", [qi, eu_t], "collab")
        col = g.op("Add", [g.op("Add", [content, cf], "content_collab"), lin], "score_col")
        flat = g.op("Squeeze", [col, ax1], "score_flat")
        bias = g.op("Gather", ["id_bias", "item_ids"], "cand_bias", axis=0)
        scores = g.op("Add", [g.op("Add", [flat, bias], "score_biased"), "global_bias"], "scores")
    else:
        # The same sums in the order that is cheaper once the weights are
        # baked into the plan: content = ih1 . (W2 u^T) + b2 . u (no [N, D]
        # item vectors), and every id row's score emb_item . e_user + id_bias
        # [H] from one product with the pre-packed table, then the
        # candidates' entries gathered.
        w_u = g.op("MatMul", ["item_w2", u_t], "item_w2_user")
        c0 = g.op("MatMul", [g.op("Unsqueeze", ["item_b2", ax0], "item_b2_row"), u_t], "item_b2_user")
        content = g.op("Add", [g.op("MatMul", [ih1, w_u], "content_mm"), c0], "content")
        table = g.op("Squeeze", [g.op("MatMul", ["emb_item", eu_t], "collab_table_col"), ax1], "collab_table")
        id_part = g.op("Gather", [g.op("Add", [table, "id_bias"], "id_table"), "item_ids"], "cand_id_score", axis=0)
        col = g.op("Add", [content, lin], "score_col")
        flat = g.op("Squeeze", [col, ax1], "score_flat")
        scores = g.op("Add", [g.op("Add", [flat, id_part], "score_biased"), "global_bias"], "scores")

    outputs = [("scores", ["N"])]
    if train:
        zero = g.const("zero", 0.0)
        loss_eps = g.const("loss_eps", LOSS_EPS)
        per = g.op("Sub", [g.op("Softplus", [scores], "softplus"),
                           g.op("Mul", ["labels", scores], "label_score")], "bce")
        num = g.op("ReduceSum", [g.op("Mul", ["sample_weights", per], "bce_weighted"), ax0],
                   "loss_num", keepdims=0)
        den = g.op("Add", [g.op("ReduceSum", ["sample_weights", ax0], "weight_sum", keepdims=0),
                           loss_eps], "loss_den")
        g.op("Div", [num, den], "loss")

        err = g.op("Sub", [g.op("Sigmoid", [scores], "prob"), "labels"], "err")
        # d loss / d scores, which is also id_bias's gradient row per candidate.
        gs = g.op("Div", [g.op("Mul", ["sample_weights", err], "err_weighted"), den], "grad_id_bias_rows")
        gs_row = g.op("Unsqueeze", [gs, ax0], "g_scores_row")  # [1, N]
        gs_col = g.op("Unsqueeze", [gs, ax1], "g_scores_col")  # [N, 1]

        g.op("ReduceSum", [gs, ax0], "grad_global_bias", keepdims=1)
        items_t = g.op("Transpose", ["items"], "items_t", perm=[1, 0])
        g.op("Squeeze", [g.op("MatMul", [items_t, gs_col], "g_item_linear_col"), ax1], "grad_item_linear")

        # Collaborative term. The id tables' gradients are rows (ID_TABLES):
        # d loss / d id_bias[item_ids[i]] += d loss / d scores[i], and so on.
        g.op("Mul", [gs_col, eu], "grad_emb_item_rows")  # [N, E]
        g_eu = g.op("MatMul", [gs_row, qi], "g_user_emb")  # [1, E]
        g.op("Mul", [g.op("Unsqueeze", [alpha, ax1], "history_alpha_col"), g_eu], "grad_emb_history_rows")  # [K, E]

        # Content term: scores += v . u
        g_v = g.op("Mul", [gs_col, u], "g_item_vec")  # [N, D]
        g_u = g.op("MatMul", [gs_row, v], "g_user_vec")  # [1, D]

        def tower_grads(prefix, x_t, h1, a1, w2, g_out):
            g.op("MatMul", [g.op("Transpose", [h1], f"{prefix}_h1_t", perm=[1, 0]), g_out], f"grad_{prefix}_w2")
            g.op("ReduceSum", [g_out, ax0], f"grad_{prefix}_b2", keepdims=0)
            g_h1 = g.op("MatMul", [g_out, g.op("Transpose", [w2], f"{prefix}_w2_t", perm=[1, 0])], f"g_{prefix}_h1")
            mask = g.op("Cast", [g.op("Greater", [a1, zero], f"{prefix}_active_b")], f"{prefix}_active", to=elem)
            g_a1 = g.op("Mul", [g_h1, mask], f"g_{prefix}_a1")
            g.op("MatMul", [x_t, g_a1], f"grad_{prefix}_w1")
            g.op("ReduceSum", [g_a1, ax0], f"grad_{prefix}_b1", keepdims=0)

        tower_grads("item", items_t, ih1, ia1, "item_w2", g_v)
        z_col = g.op("Unsqueeze", [z, ax1], "z_col")  # [Z, 1] = z_row transposed
        tower_grads("user", z_col, uh1, ua1, "user_w2", g_u)

        outputs = [("loss", [])] + [(grad_output(n), grad_output_shape(n)) for n in PARAM_NAMES] + outputs

    inputs = [helper.make_tensor_value_info(n, t if t is not None else elem, s)
              for n, t, s, _ in data_inputs(train)]
    inputs += [helper.make_tensor_value_info(n, elem, list(s)) for n, s in PARAMS]
    outs = [helper.make_tensor_value_info(n, elem, s) for n, s in outputs]
    kind = "train_step" if train else "inference"
    graph = helper.make_graph(g.nodes, f"{MODEL_NAME}_v{MODEL_VERSION}_{kind}", inputs, outs,
                              initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="hearth-models/build.py", producer_version=str(MODEL_VERSION))
    model.ir_version = IR_VERSION
    model.model_version = MODEL_VERSION
    model.doc_string = (f"{MODEL_NAME} v{MODEL_VERSION} {kind}: parameters are graph inputs; "
                        "see manifest.json for the schema.")
    onnx.checker.check_model(model, full_check=True)
    used = {i for n in g.nodes for i in n.input}
    unused = [t.name for t in g.initializers if t.name not in used]
    assert not unused, f"unused initializers in {kind}: {unused}"
    return model


def graph_ops(model):
    return sorted({n.op_type for n in model.graph.node})


# ---------------------------------------------------------------------------
# Synthetic world: a catalog, users with tastes, and their events.
# ---------------------------------------------------------------------------

CATEGORY_VOCAB = [
    # MovieLens-like genres, then TV, music, podcast and sports topics: enough
    # names that every one of the 32 hashed buckets is used by several.
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western", "News", "Sports", "Football", "Basketball", "Tennis",
    "Motorsport", "Kids", "Anime", "Reality", "Talk Show", "Cooking", "Travel", "Nature",
    "History", "Science", "True Crime", "Stand-up", "Pop", "Rock", "Jazz", "Classical",
    "Hip-Hop", "Electronic", "Country", "Metal", "Folk", "Podcast", "Audiobook", "Business",
    "Technology", "Health", "Fitness", "Gaming", "K-Drama", "Bollywood", "Telenovela",
    "Soap", "Game Show", "Politics", "Economics", "Religion", "Art", "Fashion", "Cars",
    "Home", "Lo-fi", "Superhero", "Spy", "Heist", "Biography", "Sitcom", "Period Drama", "Legal",
    "Medical", "Martial Arts", "Disaster", "Zombie", "Space", "Time Travel", "Mockumentary", "Satire",
    "Parody", "Noir", "Coming of Age", "Family", "Teen", "Dance", "Opera", "Blues", "Reggae", "R&B",
    "Soul", "Indie", "Punk", "Ambient", "Latin", "Afrobeats", "K-Pop", "J-Pop", "Chanson", "Schlager",
    "Meditation", "Sleep", "Language Learning", "Parenting", "Comedy Podcast", "Interview", "Esports",
    "Cricket", "Rugby", "Cycling", "Golf", "Baseball", "Hockey", "Boxing", "Wrestling", "Olympics",
    "Weather", "Finance", "Crafts", "Gardening", "Pets", "Wildlife", "Ocean", "Space Science",
    "Mathematics", "Philosophy", "Poetry", "Short Film", "Silent Film", "Christmas", "Courtroom",
    "Techno", "Cartoon", "Gospel", "Reality TV",
]
LANGUAGES = ["en", "es", "fr", "de", "ja"]
LANGUAGE_P = [0.62, 0.12, 0.09, 0.09, 0.08]
FORMATS = ["film", "episode", "short", "track"]
FORMAT_MINUTES = {"film": (85, 180), "episode": (20, 60), "short": (1, 12), "track": (2, 7)}
# How much each device class likes each format (rows: DEVICE_CLASSES, cols: FORMATS).
DEVICE_FORMAT = np.array([
    [-0.4, 0.2, 0.8, 0.2],   # phone
    [0.2, 0.4, 0.3, 0.0],    # tablet
    [0.8, 0.5, -0.6, -0.8],  # tv
    [-2.5, -2.5, -1.2, 1.2],  # car
    [-2.5, -2.5, -1.2, 1.2],  # speaker
])
REFERENCE_YEAR = 2025
HALF_LIFE_DAYS = 30.0
MAX_HISTORY = 50
NEGATIVES = 4
N_CLUSTERS = 16
LATENT = 8
N_ITEMS = 1200
N_USERS = 2500
N_TEST_USERS = 500
TEST_EVENTS_PER_USER = 5
TASTE_WEIGHT = 0.5  # utility = taste * user.item latent + popularity * log popularity + ...
POPULARITY_WEIGHT = 1.4


def hour_features(hour):
    a = 2.0 * np.pi * np.asarray(hour, dtype=np.float64) / 24.0
    return np.sin(a), np.cos(a)


def make_world(rng):
    """The catalog, the users and their event streams."""
    n_cat = len(CATEGORY_VOCAB)
    cat_bucket = np.array([category_bucket(c) for c in CATEGORY_VOCAB])
    centroids = rng.normal(size=(N_CLUSTERS, LATENT))
    cluster_cats = np.stack([rng.choice(n_cat, size=4, replace=False) for _ in range(N_CLUSTERS)])
    cluster_fmt = np.full((N_CLUSTERS, len(FORMATS)), 0.1)
    cluster_fmt[np.arange(N_CLUSTERS), np.arange(N_CLUSTERS) % len(FORMATS)] = 0.7

    # Items.
    it_cluster = rng.integers(N_CLUSTERS, size=N_ITEMS)
    it_latent = centroids[it_cluster] + 0.7 * rng.normal(size=(N_ITEMS, LATENT))
    it_cats = np.zeros((N_ITEMS, n_cat), dtype=bool)
    for i in range(N_ITEMS):
        for _ in range(1 + rng.binomial(2, 0.4)):
            if rng.random() < 0.8:
                it_cats[i, cluster_cats[it_cluster[i], rng.integers(4)]] = True
            else:
                it_cats[i, rng.integers(n_cat)] = True
    it_fmt = np.array([rng.choice(len(FORMATS), p=cluster_fmt[c]) for c in it_cluster])
    it_logpop = rng.normal(size=N_ITEMS)
    it_pop = np.round(np.exp(5.0 + 1.3 * it_logpop))
    it_lang = rng.choice(len(LANGUAGES), size=N_ITEMS, p=LANGUAGE_P)
    it_lang_known = rng.random(N_ITEMS) >= 0.03
    it_year = REFERENCE_YEAR - np.minimum(rng.exponential(12.0, size=N_ITEMS).astype(int), 95)
    it_year_known = rng.random(N_ITEMS) >= 0.05
    lo = np.array([FORMAT_MINUTES[FORMATS[f]][0] for f in it_fmt])
    hi = np.array([FORMAT_MINUTES[FORMATS[f]][1] for f in it_fmt])
    it_minutes = lo + (hi - lo) * rng.random(N_ITEMS)
    it_dur_known = rng.random(N_ITEMS) >= 0.05

    # Item feature rows (language_match is filled in per user).
    base = np.zeros((N_ITEMS, F_DIM))
    for i in range(N_ITEMS):
        for c in np.flatnonzero(it_cats[i]):
            base[i, cat_bucket[c]] = 1.0
    base[:, SLOT["log_popularity"]] = np.log1p(it_pop) / np.log1p(it_pop.max())
    base[:, SLOT["age"]] = np.where(it_year_known, np.clip((REFERENCE_YEAR - it_year) / 50.0, 0, 2), 0)
    base[:, SLOT["log_duration"]] = np.where(it_dur_known, np.log1p(it_minutes) / 5.0, 0)
    base[:, SLOT["release_year_missing"]] = ~it_year_known
    base[:, SLOT["duration_missing"]] = ~it_dur_known
    rows = np.array([item_row(f"syn-item-{i:05d}") for i in range(N_ITEMS)])

    # Users.
    us_latent = np.zeros((N_USERS, LATENT))
    for u in range(N_USERS):
        k = 1 if rng.random() < 0.6 else 2
        us_latent[u] = centroids[rng.choice(N_CLUSTERS, size=k, replace=False)].mean(axis=0)
    us_latent += 0.5 * rng.normal(size=(N_USERS, LATENT))
    us_lang = rng.choice(len(LANGUAGES), size=N_USERS, p=LANGUAGE_P)
    us_devmix = rng.dirichlet(np.full(len(DEVICE_CLASSES), 0.4), size=N_USERS)
    us_peak = rng.integers(24, size=N_USERS)
    us_skip = rng.beta(1.2, 8.0, size=N_USERS)
    us_complete = rng.beta(3.0, 2.0, size=N_USERS)
    us_events = np.clip(np.round(np.exp(rng.normal(3.3, 0.6, size=N_USERS))), 6, 120).astype(int)

    # Fixed part of each user's utility for each item.
    same = us_lang[:, None] == it_lang[None, :]
    lang_term = np.where(same, 0.0, np.where(it_lang[None, :] == 0, -1.5, -3.0))
    util_base = TASTE_WEIGHT * us_latent @ it_latent.T + POPULARITY_WEIGHT * it_logpop[None, :] + lang_term
    film_hour = np.zeros((len(FORMATS), 24))
    _, evening = hour_features(np.arange(24) - 21)
    film_hour[0] = 0.5 * evening
    film_hour[2] = -0.3 * evening
    pop_p = it_pop / it_pop.sum()

    # Events, all users in lock step.
    t_max = us_events.max()
    ev = {k: np.zeros((N_USERS, t_max), dtype=dt) for k, dt in [
        ("item", np.int64), ("skip", bool), ("device", np.int64), ("hour", np.int64),
        ("weight", np.float64), ("complete", bool), ("count", np.int64), ("day", np.float64)]}
    consumed = np.zeros((N_USERS, N_ITEMS), dtype=bool)
    day = np.zeros(N_USERS)
    for t in range(t_max):
        act = np.flatnonzero(us_events > t)
        n = len(act)
        dev = (rng.random(n)[:, None] > np.cumsum(us_devmix[act], axis=1)[:, :-1]).sum(axis=1)
        hour = (us_peak[act] + np.round(rng.normal(0, 3.0, size=n)).astype(int)) % 24
        skip = rng.random(n) < us_skip[act]
        util = util_base[act] + DEVICE_FORMAT[dev][:, it_fmt] + film_hour.T[hour][:, it_fmt]
        util = util + rng.gumbel(size=(n, N_ITEMS))
        util[consumed[act]] = -np.inf
        chosen = util.argmax(axis=1)
        pushed = rng.choice(N_ITEMS, size=n, p=pop_p)
        item = np.where(skip, pushed, chosen)
        consumed[act[~skip], chosen[~skip]] = True
        complete = (~skip) & (rng.random(n) < us_complete[act])
        liked = (~skip) & (rng.random(n) < 0.12)
        day += rng.exponential(1.5, size=N_USERS)
        ev["item"][act, t] = item
        ev["skip"][act, t] = skip
        ev["device"][act, t] = dev
        ev["hour"][act, t] = hour
        ev["weight"][act, t] = np.where(skip, -1.0, 1.0 + 2.0 * complete + 3.0 * liked)
        ev["complete"][act, t] = complete
        # Events the device folds per item: impression + play (+ progress, complete, like) or impression + skip.
        ev["count"][act, t] = np.where(skip, 2, 2 + rng.integers(1, 4, size=n) + complete + liked)
        ev["day"][act, t] = day[act]
    return dict(cat_bucket=cat_bucket, it_cats=it_cats, it_pop=it_pop, it_lang=it_lang,
                it_lang_known=it_lang_known, base=base, rows=rows, us_lang=us_lang,
                us_events=us_events, ev=ev)


def make_examples(world, users):
    """One example per positive event of `users`: the profile as it stood just
    before the event, the event's context, and the history before it."""
    ev = world["ev"]
    it_cats = world["it_cats"].astype(np.float64)
    n_cats = it_cats.sum(axis=1)
    bucket_of = np.zeros((len(CATEGORY_VOCAB), CATEGORY_BUCKETS))
    bucket_of[np.arange(len(CATEGORY_VOCAB)), world["cat_bucket"]] = 1.0
    out = {k: [] for k in ("user", "context", "hist_rows", "hist_w", "item", "lang", "uid", "pos_in_user")}
    for u in users:
        n = world["us_events"][u]
        item = ev["item"][u, :n]
        skip = ev["skip"][u, :n]
        w = ev["weight"][u, :n]
        day = ev["day"][u, :n]
        decay = np.tril(0.5 ** ((day[:, None] - day[None, :]) / HALF_LIFE_DAYS), -1)  # [j, k], k < j
        cat_contrib = it_cats[item] * (w / n_cats[item])[:, None]
        aff = np.maximum(decay @ cat_contrib, 0) @ bucket_of
        s = aff.sum(axis=1, keepdims=True)
        aff = np.where(s > 0, aff / np.where(s > 0, s, 1), 0)
        dev_onehot = np.eye(len(DEVICE_CLASSES))[ev["device"][u, :n]]
        mix = decay @ dev_onehot
        s = mix.sum(axis=1, keepdims=True)
        mix = np.where(s > 0, mix / np.where(s > 0, s, 1), 0)

        def before(x):
            return np.concatenate([[0], np.cumsum(x)[:-1]])

        plays = before(~skip)
        completes = before(ev["complete"][u, :n])
        skips = before(skip)
        count = before(ev["count"][u, :n])
        completion = np.where(plays > 0, np.minimum(completes / np.maximum(plays, 1), 1), 0)
        skip_rate = np.where(plays + skips > 0, skips / np.maximum(plays + skips, 1), 0)
        user = np.concatenate([aff, mix, completion[:, None], skip_rate[:, None],
                               (np.log1p(count) / 10.0)[:, None]], axis=1)
        hs, hc = hour_features(ev["hour"][u, :n])
        context = np.concatenate([np.eye(len(DEVICE_CLASSES))[ev["device"][u, :n]],
                                  hs[:, None], hc[:, None]], axis=1)
        positives = np.flatnonzero(~skip)
        for rank, j in enumerate(positives):
            prior = positives[positives < j][::-1][:MAX_HISTORY]  # most recent first
            hr = np.zeros(MAX_HISTORY, dtype=np.int64)
            hw = np.zeros(MAX_HISTORY)
            hr[:len(prior)] = world["rows"][item[prior]]
            hw[:len(prior)] = w[prior] * decay[j, prior]
            out["user"].append(user[j])
            out["context"].append(context[j])
            out["hist_rows"].append(hr)
            out["hist_w"].append(hw)
            out["item"].append(item[j])
            out["lang"].append(world["us_lang"][u])
            out["uid"].append(u)
            out["pos_in_user"].append(rank - len(positives))  # -1 = the user's last positive
    return {k: np.array(v) for k, v in out.items()}


def item_rows_for(world, items, user_lang):
    """Item feature rows for candidate `items` [B, C] shown to users of language `user_lang` [B]."""
    feats = world["base"][items]
    match = (world["it_lang"][items] == user_lang[:, None]).astype(np.float64)
    feats[..., SLOT["language_match"]] = np.where(world["it_lang_known"][items], match, 0.5)
    return feats


# ---------------------------------------------------------------------------
# Pretraining and evaluation
# ---------------------------------------------------------------------------


def init_params(rng):
    p = {}
    for name, shape in PARAMS:
        if name in ("user_w1", "item_w1"):
            p[name] = rng.normal(0, math.sqrt(2.0 / shape[0]), size=shape)
        elif name in ("user_w2", "item_w2"):
            p[name] = rng.normal(0, math.sqrt(1.0 / shape[0]), size=shape)
        elif name in ("emb_history", "emb_item"):
            p[name] = rng.normal(0, 0.05, size=shape)
        else:
            p[name] = np.zeros(shape)
    return {n: a.astype(np.float32) for n, a in p.items()}


def train(p, trainable, world, ex, epochs, lr, batch, rng):
    """Adam on the examples; negatives sampled uniformly from the catalog."""
    m = {n: np.zeros_like(p[n]) for n in trainable}
    v = {n: np.zeros_like(p[n]) for n in trainable}
    b1, b2, eps = 0.9, 0.999, 1e-8
    step = 0
    n_ex = len(ex["item"])
    c = 1 + NEGATIVES
    labels = np.tile(np.eye(1, c, dtype=np.float32)[0], batch)
    for _ in range(epochs):
        order = rng.permutation(n_ex)
        total = 0.0
        for start in range(0, n_ex - batch + 1, batch):
            idx = order[start:start + batch]
            pos = ex["item"][idx]
            neg = rng.integers(N_ITEMS, size=(batch, NEGATIVES))
            neg = np.where(neg == pos[:, None], (neg + 1) % N_ITEMS, neg)
            cand = np.concatenate([pos[:, None], neg], axis=1)
            items = item_rows_for(world, cand, ex["lang"][idx]).reshape(-1, F_DIM).astype(np.float32)
            z = np.concatenate([ex["user"][idx], ex["context"][idx]], axis=1).astype(np.float32)
            scores, cache = forward(p, z, items, world["rows"][cand.ravel()], ex["hist_rows"][idx],
                                    ex["hist_w"][idx].astype(np.float32))
            loss, gs = loss_and_dscores(scores, labels, np.ones_like(labels))
            total += float(loss)
            grads = backward(p, cache, gs.astype(np.float32), only=trainable)
            step += 1
            corr1, corr2 = 1 - b1 ** step, 1 - b2 ** step
            for n in trainable:
                m[n] = b1 * m[n] + (1 - b1) * grads[n]
                v[n] = b2 * v[n] + (1 - b2) * grads[n] * grads[n]
                p[n] = (p[n] - lr * (m[n] / corr1) / (np.sqrt(v[n] / corr2) + eps)).astype(np.float32)
    return p


def evaluate(p, world, ex):
    """NDCG@10 and HR@10 over the whole catalog, already-engaged items excluded."""
    n = len(ex["item"])
    z = np.concatenate([ex["user"], ex["context"]], axis=1).astype(np.float32)
    ua1 = z @ p["user_w1"] + p["user_b1"]
    u = relu(ua1) @ p["user_w2"] + p["user_b2"]
    hw = ex["hist_w"].astype(np.float32)
    alpha = hw / (hw.sum(axis=1, keepdims=True) + HISTORY_EPS)
    eu = (alpha[:, :, None] * p["emb_history"][ex["hist_rows"]]).sum(axis=1)
    all_items = np.arange(N_ITEMS)
    per_lang = {}
    for lang in np.unique(ex["lang"]):
        f = item_rows_for(world, all_items[None, :], np.array([lang]))[0].astype(np.float32)
        vv = relu(f @ p["item_w1"] + p["item_b1"]) @ p["item_w2"] + p["item_b2"]
        per_lang[lang] = (vv, f @ p["item_linear"])
    rows = world["rows"]
    fixed = p["id_bias"][rows] + p["global_bias"][0]
    model_scores = eu @ p["emb_item"][rows].T + fixed[None, :]
    for lang, (vv, lin) in per_lang.items():
        sel = ex["lang"] == lang
        model_scores[sel] += u[sel] @ vv.T + lin[None, :]
    pop_scores = np.broadcast_to(np.log(world["it_pop"])[None, :], (n, N_ITEMS))

    # Items already engaged before each event are excluded from the ranking.
    seen = np.zeros((n, N_ITEMS), dtype=bool)
    ev = world["ev"]
    for k in range(n):
        u_id = ex["uid"][k]
        m = world["us_events"][u_id]
        items, skip = ev["item"][u_id, :m], ev["skip"][u_id, :m]
        pos = items[~skip]
        j = np.flatnonzero(pos == ex["item"][k])[0]
        seen[k, pos[:j]] = True

    def metrics(scores):
        s = np.where(seen, -np.inf, scores)
        target = s[np.arange(n), ex["item"]]
        rank = (s > target[:, None]).sum(axis=1)
        ndcg = np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)
        return {"ndcg_at_10": round(float(ndcg.mean()), 4), "hit_rate_at_10": round(float((rank < 10).mean()), 4)}

    return metrics(pop_scores), metrics(model_scores)


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

FORWARD_TOL = {"rtol": 1e-5, "atol": 1e-5}  # numpy float32 vs ReferenceEvaluator, scores
LOSS_TOL = {"rtol": 1e-5, "atol": 1e-6}
# |g_graph - g_fd| <= atol + rtol * |g_fd|, per element. Central differences in
# float64 with step FD_STEP; the float64 twin of the graph must be exact to
# FD noise, the shipped float32 graph to float32 rounding.
FD_STEP = 1e-6
FD_SAMPLE = 128  # entries per parameter differenced in the cases that do not take them all
GRAD_TOL_F64 = {"rtol": 1e-6, "atol": 1e-8}
GRAD_TOL_F32 = {"rtol": 2e-4, "atol": 1e-6}


class CheckFailed(Exception):
    pass


def fail_unless(ok, message):
    if not ok:
        raise CheckFailed(message)


def check_cases(rng):
    """Random graph inputs: repeated candidate ids, ids shared with the history,
    zero-weight history padding, an all-padding history, zero sample weights."""
    cases = []
    specs = [
        (7, 6, np.array([5, 17, 5, ID_ROWS - 1, 17, 0, 1234]), np.array([17, 0, 99, 17, 1234, 0]),
         np.array([0.7, 0.0, 2.0, 0.7, 1.3, 0.0])),
        (1, 1, np.array([42]), np.array([0]), np.array([0.0])),  # new user: history is padding only
        (12, 9, None, None, None),
    ]
    for n, k, ids, hids, hw in specs:
        if ids is None:
            ids = rng.integers(0, 6, size=n) * 700  # few distinct rows, many repeats
            hids = rng.integers(0, 6, size=k) * 700
            hw = np.where(rng.random(k) < 0.3, 0.0, rng.random(k) * 3)
        labels = (rng.random(n) < 0.4).astype(np.float64)
        labels[0] = 1.0
        sw = rng.random(n) + 0.5
        if n > 2:
            sw[2] = 0.0
        cases.append({
            "user": rng.random(U_DIM), "context": rng.normal(size=X_DIM), "items": rng.random((n, F_DIM)),
            "item_ids": ids.astype(np.int64), "history_ids": hids.astype(np.int64),
            "history_weights": hw.astype(np.float64), "labels": labels, "sample_weights": sw,
        })
    return cases


def feeds_for(case, params, dtype):
    f = {}
    for k, val in case.items():
        f[k] = val if val.dtype == np.int64 else val.astype(dtype)
    for n, a in params.items():
        f[n] = a.astype(dtype)
    return f


def numpy_loss(params64, case):
    scores, _ = single_query(params64, case)
    loss, _ = loss_and_dscores(scores, case["labels"], case["sample_weights"])
    return loss


def fd_indices(name, case, rng, every):
    """Which entries to difference. Of the id tables: every entry of every row
    the case touches, plus a few others. Of the other parameters: all entries
    when `every`, else a random sample of FD_SAMPLE."""
    shape = PARAM_SHAPES[name]
    size = int(np.prod(shape))
    if name not in ID_TABLES:
        return np.arange(size) if every or size <= FD_SAMPLE else np.sort(rng.choice(size, FD_SAMPLE, replace=False))
    touched = np.unique(np.concatenate([case["item_ids"], case["history_ids"]]))
    width = size // ID_ROWS
    idx = (touched[:, None] * width + np.arange(width)[None, :]).ravel()
    extra = rng.integers(size, size=8)
    return np.unique(np.concatenate([idx, extra]))


def run_checks(models, params32, rng):
    """The three build checks; returns the worst errors seen, for the report."""
    inf32, train32, train64 = (ReferenceEvaluator(m) for m in models)
    report = {"forward_max_abs_err": 0.0, "loss_max_abs_err": 0.0, "grad_max_err_f64": 0.0,
              "grad_max_err_f32": 0.0, "grad_max_abs_err_f32": 0.0, "fd_entries": 0, "cases": 0}
    train_outputs = [o.name for o in models[1].graph.output]
    random_params = {n: rng.normal(0, 0.3, size=s) for n, s in PARAMS}
    param_sets = [("pretrained", {n: a.astype(np.float64) for n, a in params32.items()}),
                  ("random", random_params)]
    for pname, p64 in param_sets:
        p32 = {n: a.astype(np.float32) for n, a in p64.items()}
        for ci, case in enumerate(check_cases(rng)):
            where = f"case {ci} with {pname} parameters"
            report["cases"] += 1
            fwd_in = {k: v for k, v in case.items() if k not in ("labels", "sample_weights")}
            # (1) forward: numpy (float32) vs the inference graph.
            ref, _ = single_query(p32, fwd_in, dtype=np.float32)
            (got,) = inf32.run(None, feeds_for(fwd_in, p32, np.float32))
            err = float(np.max(np.abs(got - ref)))
            fail_unless(got.shape == ref.shape and np.allclose(got, ref, **FORWARD_TOL),
                        f"check 1 failed ({where}): inference.onnx scores differ from numpy by {err:g}")
            report["forward_max_abs_err"] = max(report["forward_max_abs_err"], err)

            out32 = dict(zip(train_outputs, train32.run(None, feeds_for(case, p32, np.float32))))
            out64 = dict(zip(train_outputs, train64.run(None, feeds_for(case, p64, np.float64))))
            # The inference graph sums the same terms in another order (see
            # build_graph), so the two agree to float32 rounding, not bit for bit.
            fail_unless(np.allclose(out32["scores"], got, **FORWARD_TOL),
                        f"check 1 failed ({where}): train_step.onnx scores differ from inference.onnx")
            # (3) loss: graph vs numpy float64.
            loss64 = numpy_loss(p64, case)
            for label, out, tol in (("float32", out32, LOSS_TOL), ("float64 twin", out64, {"rtol": 1e-12, "atol": 0})):
                fail_unless(out["loss"].shape == () and np.allclose(out["loss"], loss64, **tol),
                            f"check 3 failed ({where}): {label} loss {out['loss']} != numpy {loss64}")
            report["loss_max_abs_err"] = max(report["loss_max_abs_err"], abs(float(out32["loss"]) - loss64))
            # (2) gradients: central differences of the float64 numpy loss.
            scores64, cache = single_query(p64, case)
            _, gs = loss_and_dscores(scores64, case["labels"], case["sample_weights"])
            analytic = backward(p64, cache, gs)
            for name in PARAM_NAMES:
                g32 = dense_grad(name, out32, case)
                g64 = dense_grad(name, out64, case)
                fail_unless(g32.shape == PARAM_SHAPES[name] and g64.shape == PARAM_SHAPES[name],
                            f"check 2 failed ({where}): grad_{name} has shape {g32.shape}")
                fail_unless(np.allclose(g64, analytic[name], rtol=1e-9, atol=1e-12),
                            f"check 2 failed ({where}): grad_{name} differs from the numpy backward pass")
                if name in ID_TABLES:
                    untouched = np.ones(ID_ROWS, dtype=bool)
                    untouched[case["item_ids"]] = False
                    untouched[case["history_ids"]] = False
                    fail_unless(not g32[untouched].any() and not g64[untouched].any(),
                                f"check 2 failed ({where}): grad_{name} is non-zero on rows no input uses")
                flat = p64[name].reshape(-1)
                fd = []
                idx = fd_indices(name, case, rng, every=(pname == "random" and ci == 0))
                for i in idx:
                    keep = flat[i]
                    flat[i] = keep + FD_STEP
                    up = numpy_loss(p64, case)
                    flat[i] = keep - FD_STEP
                    down = numpy_loss(p64, case)
                    flat[i] = keep
                    fd.append((up - down) / (2 * FD_STEP))
                fd = np.array(fd)
                for label, gval, tol, key in (("float64 twin", g64, GRAD_TOL_F64, "grad_max_err_f64"),
                                              ("float32", g32, GRAD_TOL_F32, "grad_max_err_f32")):
                    got_g = gval.reshape(-1)[idx].astype(np.float64)
                    excess = np.abs(got_g - fd) / (tol["atol"] + tol["rtol"] * np.abs(fd))
                    worst = int(np.argmax(excess))
                    fail_unless(excess[worst] <= 1.0,
                                f"check 2 failed ({where}): {label} grad_{name}[{idx[worst]}] = {got_g[worst]:.9g}, "
                                f"finite differences give {fd[worst]:.9g}")
                    report[key] = max(report[key], float(excess[worst]))
                report["grad_max_abs_err_f32"] = max(report["grad_max_abs_err_f32"],
                                                     float(np.max(np.abs(g32.reshape(-1)[idx] - fd))))
                report["fd_entries"] += len(idx)
    return report


# ---------------------------------------------------------------------------
# Output files
# ---------------------------------------------------------------------------


def canonical_json(obj) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2, separators=(",", ": "), ensure_ascii=True) + "\n").encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def io_schema(model, train):
    docs = {n: d for n, _, _, d in data_inputs(train)}
    docs.update({n: f"parameter {n} (see parameters)" for n in PARAM_NAMES})
    docs["scores"] = "one logit per candidate; higher ranks first; sigmoid(score) = P(engage)"
    docs["loss"] = "scalar: sum(sample_weights * (softplus(s) - labels * s)) / (sum(sample_weights) + loss_eps)"
    docs.update({grad_output(n): f"d loss / d {n}" for n in PARAM_NAMES if n not in ID_TABLES})
    docs.update({grad_output(n): f"d loss / d {n}, as rows: row i is added to {n}'s row {ids}[i] (a repeated id "
                                 f"adds up); every other row's gradient is 0"
                 for n, ids in ID_TABLES.items()})

    def describe(vi):
        t = vi.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        return {"name": vi.name, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                "shape": dims, "doc": docs[vi.name]}

    return {"inputs": [describe(v) for v in model.graph.input],
            "outputs": [describe(v) for v in model.graph.output]}


def feature_schema(groups, width):
    out, start = [], 0
    for g in groups:
        out.append({"group": g["group"], "start": start, "len": len(g["slots"]), "compute": g["compute"]})
        start += len(g["slots"])
    assert start == width
    return {"width": width, "groups": out,
            "slots": [{"index": i, "name": s} for i, s in enumerate(slot_names(groups))]}


def hashing_spec():
    vectors = []
    for text in ["", "a", "Comedy", "Sci-Fi", "Children's", "movie:242"]:
        h = fnv1a64(text)
        vectors.append({"text": text, "fnv1a64": f"{h:016x}", "category_bucket": h % CATEGORY_BUCKETS,
                        "item_row": h % ID_ROWS})
    return {
        "function": "FNV-1a 64-bit over the UTF-8 bytes of the string, with no normalization "
                    "(no trimming, no case folding): h = offset_basis; for each byte b: "
                    "h = (h XOR b) * prime mod 2^64",
        "offset_basis": f"0x{FNV_OFFSET:016x}",
        "prime": f"0x{FNV_PRIME:x}",
        "category_bucket": f"fnv1a64(category) mod {CATEGORY_BUCKETS}",
        "item_row": f"fnv1a64(item_id) mod {ID_ROWS}, as int64; item_id is the app's id string",
        "category_buckets": CATEGORY_BUCKETS,
        "id_rows": ID_ROWS,
        "test_vectors": vectors,
    }


def parameters_layout(params):
    out, offset = [], 0
    for name, shape in PARAMS:
        count = int(np.prod(shape))
        out.append({"name": name, "shape": list(shape), "dtype": "float32", "offset": offset,
                    "count": count, "bytes": 4 * count, "doc": PARAM_DOC[name],
                    "indexed_by_item_row": name in ID_TABLES, "gradient_rows_of": ID_TABLES.get(name)})
        offset += 4 * count
    return out, offset


def training_defaults():
    return {
        "optimizer": "sgd",
        "learning_rate": 0.1,
        "local_epochs": 1,
        "batch_examples": 16,
        "negatives_per_positive": NEGATIVES,
        "max_history": MAX_HISTORY,
        "history_half_life_days": HALF_LIFE_DAYS,
        "max_examples_per_round": 500,
        "example": (
            "One train_step call per positive (an item the user engaged with, engagement > 0): "
            f"candidates = [the positive, {NEGATIVES} negatives drawn uniformly from catalog items the user "
            "has not engaged with], labels [1, 0, ...], sample_weights all 1. user = the profile's features "
            "(ideally as they stood before the event); context = the event's device class and local hour; "
            "history = the user's history as for ranking, minus the positive item itself (else the model "
            "learns to recommend what was just watched). Skipped or disliked items may be added as extra "
            "negatives (label 0) of a call with the same context."
        ),
        "update": (
            "Average the gradients of batch_examples calls, then p -= learning_rate * mean_grad, for every "
            "parameter. delta = local - global is computed over weights.bin's layout."
        ),
    }


# The graph files in tract's NNEF, beside the ONNX they are converted from.
NNEF_FILES = (("inference_nnef", "inference.onnx", "inference.nnef.tar"),
              ("train_step_nnef", "train_step.onnx", "train_step.nnef.tar"))


def nnef_graphs(hearth: Path, onnx_blobs: dict) -> dict:
    """Runs `hearth model nnef` on the ONNX graphs in a scratch folder and
    returns the NNEF archives it writes (deterministic: same ONNX, same bytes).
    The command also checks that tract gives the same outputs from both."""
    with tempfile.TemporaryDirectory() as tmp:
        for _, onnx_name, _ in NNEF_FILES:
            (Path(tmp) / onnx_name).write_bytes(onnx_blobs[onnx_name])
        run = subprocess.run([str(hearth), "model", "nnef", tmp], capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"BUILD FAILED: hearth model nnef: {run.stderr.strip()}")
        return {nnef_name: (Path(tmp) / nnef_name).read_bytes() for _, _, nnef_name in NNEF_FILES}


def write_outputs(out_dir: Path, models, params, summary, hearth: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    blobs = {
        "inference.onnx": models[0].SerializeToString(),
        "train_step.onnx": models[1].SerializeToString(),
        "weights.bin": b"".join(params[n].astype("<f4").tobytes(order="C") for n in PARAM_NAMES),
    }
    blobs.update(nnef_graphs(hearth, blobs))
    layout, total = parameters_layout(params)
    assert total == len(blobs["weights.bin"])
    manifest = {
        "manifest_format": 1,  # bumped when this file's structure changes
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "description": "Scores candidate media items for one user on the device; trained by federated learning.",
        "onnx": {"opset": OPSET, "ir_version": IR_VERSION},
        "files": {
            kind: {"path": path, "sha256": sha256(blobs[path]), "bytes": len(blobs[path])}
            for kind, path in (("inference", "inference.onnx"), ("train_step", "train_step.onnx"),
                               ("weights", "weights.bin"),
                               *((kind, nnef_name) for kind, _, nnef_name in NNEF_FILES))
        },
        "graphs": {
            "inference": {**io_schema(models[0], False), "ops": graph_ops(models[0])},
            "train_step": {**io_schema(models[1], True), "ops": graph_ops(models[1])},
            "parameter_inputs": "every parameter is also a graph input of the same name, after the data inputs",
        },
        "dims": {
            "N": "candidate count (symbolic, >= 1)",
            "K": "history length (symbolic, >= 1; pass one slot with id 0 and weight 0 when there is no history)",
            "H": ID_ROWS,
        },
        "features": {
            "user": feature_schema(USER_GROUPS, U_DIM),
            "context": feature_schema(CONTEXT_GROUPS, X_DIM),
            "items": feature_schema(ITEM_GROUPS, F_DIM),
            "history": (
                f"The profile's items with decayed engagement > 0, most recent last-engagement first "
                f"(ties: item id bytes ascending), at most max_history ({MAX_HISTORY}); history_ids = "
                "item_row(item_id), history_weights = the item's engagement decayed to now. Slots with "
                "weight 0 are ignored, so padding is (id 0, weight 0)."
            ),
            "item_ids": "item_row(item_id) of each candidate, in the same order as the rows of items.",
            "constants": {"history_eps": HISTORY_EPS, "loss_eps": LOSS_EPS},
        },
        "model": {
            "scores": (
                "s = item_tower(items) . user_tower(concat(user, context)) + emb_item[item_ids] . "
                "(sum_k w_k emb_history[history_ids_k] / (sum_k w_k + history_eps)) + items @ item_linear "
                "+ id_bias[item_ids] + global_bias; each tower = Linear -> ReLU -> Linear"
            ),
            "hidden": HIDDEN,
            "tower_dim": TOWER_DIM,
            "embed_dim": EMBED_DIM,
        },
        "hashing": hashing_spec(),
        "parameters": layout,
        "weights": {"file": "weights.bin", "dtype": "float32", "byte_order": "little", "order": "C",
                    "layout": "parameters concatenated in the order of `parameters`, no header, no padding",
                    "total_count": total // 4, "total_bytes": total},
        "training": training_defaults(),
        "pretraining": summary,
    }
    blobs["manifest.json"] = canonical_json(manifest)
    for name, data in blobs.items():
        (out_dir / name).write_bytes(data)
    return manifest, blobs


README_BEGIN = "<!-- begin: generated by build.py -->"
README_END = "<!-- end: generated by build.py -->"


def readme_block(manifest, check_report):
    lines = [README_BEGIN, "", "| parameter | shape | count | bytes |", "| --- | --- | ---: | ---: |"]
    for p in manifest["parameters"]:
        lines.append(f"| `{p['name']}` | {' x '.join(map(str, p['shape']))} | {p['count']:,} | {p['bytes']:,} |")
    w = manifest["weights"]
    lines.append(f"| **total** | | **{w['total_count']:,}** | **{w['total_bytes']:,}** |")
    pre = manifest["pretraining"]
    lines += ["", f"Pretraining on synthetic data ({pre['data']['test_events']} held-out events of "
              f"{pre['data']['test_users']} held-out users, whole catalog of {pre['data']['items']} items ranked, "
              "items already engaged excluded):", "",
              "| ranker | NDCG@10 | HR@10 |", "| --- | ---: | ---: |"]
    for key, label in (("popularity", "popularity"), ("shipped", "shipped weights (towers; id tables fresh)"),
                       ("with_id_tables", "same, id tables also trained (what federated rounds can reach)")):
        m = pre["held_out"][key]
        lines.append(f"| {label} | {m['ndcg_at_10']:.4f} | {m['hit_rate_at_10']:.4f} |")
    lines += ["", "Gradient check: every gradient output against central finite differences (step "
              f"{FD_STEP:g}) of a float64 numpy loss, {check_report['fd_entries']:,} entries over {check_report['cases']} cases; "
              f"pass when |g - fd| <= atol + rtol * |fd|: float64 twin of the graph rtol "
              f"{GRAD_TOL_F64['rtol']:g}, atol {GRAD_TOL_F64['atol']:g}; shipped float32 graph rtol "
              f"{GRAD_TOL_F32['rtol']:g}, atol {GRAD_TOL_F32['atol']:g}. Worst use of the tolerance: "
              f"{check_report['grad_max_err_f64']:.3f} (float64), {check_report['grad_max_err_f32']:.3f} (float32).",
              "", README_END]
    return "\n".join(lines)


def update_readme(path: Path, block: str):
    text = path.read_text()
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        raise SystemExit(f"{path}: generated-block markers not found")
    path.write_text(text[:a] + block + text[b + len(README_END):])


# ---------------------------------------------------------------------------


def main():
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=here / "ranker-v1", help="output folder")
    ap.add_argument("--readme", type=Path, default=here / "README.md",
                    help="README whose generated block to rewrite ('-' for none)")
    ap.add_argument("--hearth", type=Path, default=os.environ.get("HEARTH_BIN"),
                    help="the hearth CLI, which writes the NNEF graphs (default $HEARTH_BIN; models/check.sh "
                         "builds it and passes it)")
    args = ap.parse_args()
    if args.hearth is None or not args.hearth.is_file():
        raise SystemExit("build.py needs the hearth CLI for the NNEF graphs: --hearth BINARY or HEARTH_BIN "
                         "(models/check.sh builds it)")
    t0 = time.perf_counter()

    c0 = time.process_time()

    def log(msg):
        print(f"[{time.perf_counter() - t0:5.1f}s wall, {time.process_time() - c0:5.1f}s cpu] {msg}", flush=True)

    rng = np.random.default_rng(SEED)
    world = make_world(rng)
    buckets_used = len(set(world["cat_bucket"].tolist()))
    log(f"synthetic world: {N_ITEMS} items, {N_USERS} users, {int(world['us_events'].sum())} events, "
        f"{buckets_used}/{CATEGORY_BUCKETS} category buckets used")
    users = rng.permutation(N_USERS)
    test_users, train_users = np.sort(users[:N_TEST_USERS]), np.sort(users[N_TEST_USERS:])
    ex_train = make_examples(world, train_users)
    ex_all_test = make_examples(world, test_users)
    keep = ex_all_test["pos_in_user"] >= -TEST_EVENTS_PER_USER
    ex_test = {k: v[keep] for k, v in ex_all_test.items()}
    log(f"examples: {len(ex_train['item'])} train, {len(ex_test['item'])} held-out")

    params = init_params(rng)
    towers = [n for n in PARAM_NAMES if n not in ID_TABLES]
    params = train(params, towers, world, ex_train, epochs=6, lr=1e-2, batch=256, rng=rng)
    pop_metrics, shipped_metrics = evaluate(params, world, ex_test)
    log(f"held-out NDCG@10: popularity {pop_metrics['ndcg_at_10']:.4f}, shipped {shipped_metrics['ndcg_at_10']:.4f}")
    # Id tables trained too: a demonstration of what the collaborative part
    # adds; these rows belong to synthetic ids, so they are not shipped.
    full = train({n: a.copy() for n, a in params.items()}, PARAM_NAMES, world, ex_train,
                 epochs=3, lr=3e-3, batch=256, rng=rng)
    _, full_metrics = evaluate(full, world, ex_test)
    log(f"held-out NDCG@10 with id tables trained: {full_metrics['ndcg_at_10']:.4f}")

    summary = {
        "data": {"items": N_ITEMS, "train_users": N_USERS - N_TEST_USERS, "test_users": N_TEST_USERS,
                 "train_examples": int(len(ex_train["item"])), "test_events": int(len(ex_test["item"])),
                 "seed": SEED},
        "held_out": {"popularity": pop_metrics, "shipped": shipped_metrics, "with_id_tables": full_metrics},
        "shipped_weights": (
            "Towers, item_linear and global_bias trained on synthetic users (Adam); id_bias, emb_history and "
            "emb_item are left at their initialization (zeros; N(0, 0.05)), since rows trained for synthetic "
            "ids would be noise for real ones. Federated rounds train them."
        ),
        "metric": "NDCG@10 and HR@10 of the engaged item over the whole catalog, items engaged before excluded",
    }

    models = (build_graph(False), build_graph(True), build_graph(True, TensorProto.DOUBLE))
    for m in models[:2]:
        onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
        bad = set(graph_ops(m)) - ALLOWED_OPS
        if bad:
            raise SystemExit(f"graph {m.graph.name} uses ops outside the tract-safe list: {sorted(bad)}")
    try:
        report = run_checks(models, params, np.random.default_rng(SEED + 1))
    except CheckFailed as e:
        print(f"BUILD FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    log(f"checks passed: forward max abs err {report['forward_max_abs_err']:.2e}, loss max abs err "
        f"{report['loss_max_abs_err']:.2e}, {report['fd_entries']} gradient entries vs finite differences, "
        f"worst tolerance use {report['grad_max_err_f64']:.3f} (float64 twin) / {report['grad_max_err_f32']:.3f} "
        f"(float32, max abs err {report['grad_max_abs_err_f32']:.2e})")

    manifest, blobs = write_outputs(args.out, models, params, summary, args.hearth)
    if str(args.readme) != "-":
        update_readme(args.readme, readme_block(manifest, report))
    for name, data in sorted(blobs.items()):
        log(f"wrote {args.out / name} ({len(data):,} bytes, sha256 {sha256(data)[:16]}...)")
    log("done")


if __name__ == "__main__":
    main()
