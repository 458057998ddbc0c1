"""The onnxruntime side of core/benches/inference_vs_onnxruntime.rs.

usage: onnxruntime_bench.py PACKAGE_DIR INPUTS_DIR RUNS

Loads PACKAGE_DIR/inference.onnx with the weights of PACKAGE_DIR/weights.bin
(laid out as PACKAGE_DIR/manifest.json says), feeds the .npy inputs the Rust
side wrote, times RUNS calls on one thread and prints one JSON line: p50 and
p90 in microseconds, and the largest difference from tract's scores.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    package, inputs_dir, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    manifest = json.load(open(f"{package}/manifest.json"))
    raw = np.fromfile(f"{package}/weights.bin", dtype="<f4")
    feeds = {}
    for p in manifest["parameters"]:
        start = p["offset"] // 4
        feeds[p["name"]] = raw[start:start + p["count"]].reshape(p["shape"])
    for name in ("user", "context", "items", "item_ids", "history_ids", "history_weights"):
        feeds[name] = np.load(f"{inputs_dir}/{name}.npy")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(f"{package}/inference.onnx", options, providers=["CPUExecutionProvider"])
    scores = session.run(["scores"], feeds)[0]
    for _ in range(100):
        session.run(["scores"], feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(["scores"], feeds)
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    tract = np.load(f"{inputs_dir}/tract_scores.npy")
    print(json.dumps({
        "p50_us": times[len(times) // 2],
        "p90_us": times[int(len(times) * 0.9)],
        "max_abs_diff": float(np.abs(tract - scores).max()),
        "onnxruntime": ort.__version__,
    }))


if __name__ == "__main__":
    main()
