"""The onnxruntime side of core/benches/inference_vs_onnxruntime.rs.

usage: onnxruntime_bench.py PACKAGE_DIR INPUTS_DIR RUNS

Loads PACKAGE_DIR/inference.onnx with the weights of PACKAGE_DIR/weights.bin
(laid out as PACKAGE_DIR/manifest.json says), feeds the .npy inputs the Rust
side wrote, times RUNS calls on one thread and prints one JSON line: p50 and
p90 in microseconds, and the largest difference from tract's scores. Two
sessions are timed: the graph as shipped, the weights fed as inputs
(`p50_us`, `p90_us`), and the same graph with the weights made initializers,
so that onnxruntime may fold and pre-pack them as tract does with the
weights baked into its plan (`baked_p50_us`, `baked_p90_us`).
"""
import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def timed(session, feeds, runs):
    for _ in range(100):
        session.run(["scores"], feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(["scores"], feeds)
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.9)]


def main():
    package, inputs_dir, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    manifest = json.load(open(f"{package}/manifest.json"))
    raw = np.fromfile(f"{package}/weights.bin", dtype="<f4")
    weights = {}
    for p in manifest["parameters"]:
        start = p["offset"] // 4
        weights[p["name"]] = raw[start:start + p["count"]].reshape(p["shape"])
    data = {name: np.load(f"{inputs_dir}/{name}.npy")
            for name in ("user", "context", "items", "item_ids", "history_ids", "history_weights")}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    model = onnx.load(f"{package}/inference.onnx")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {**data, **weights}
    scores = session.run(["scores"], feeds)[0]
    p50, p90 = timed(session, feeds, runs)

    data_inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(data_inputs)
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in weights.items())
    baked = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    baked_scores = baked.run(["scores"], data)[0]
    baked_p50, baked_p90 = timed(baked, data, runs)

    tract = np.load(f"{inputs_dir}/tract_scores.npy")
    print(json.dumps({
        "p50_us": p50,
        "p90_us": p90,
        "baked_p50_us": baked_p50,
        "baked_p90_us": baked_p90,
        "max_abs_diff": float(max(np.abs(tract - scores).max(), np.abs(tract - baked_scores).max())),
        "onnxruntime": ort.__version__,
    }))


if __name__ == "__main__":
    main()
