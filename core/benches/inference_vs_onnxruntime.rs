//! Bare inference of the built-in model, tract beside onnxruntime: same
//! graph file, same weights, same inputs, same machine, one run, one thread
//! each. Prints p50/p90 per candidate count and the ratio tract/onnxruntime,
//! against onnxruntime fed the weights as inputs and against onnxruntime
//! with them made initializers (tract's plan has them baked in).
//!
//! Run it with `models/bench/vs-onnxruntime.sh` (which makes the Python venv
//! with onnxruntime and passes its interpreter in HEARTH_BENCH_PYTHON).

use std::process::Command;
use std::time::Instant;

use hearth_core::testing::{Inference, InferenceInputs};

const RUNS: usize = 2000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` it is
    // absent, and the binary only checks that the plan runs.
    if !std::env::args().any(|a| a == "--bench") {
        let scores = Inference::builtin().score(&InferenceInputs::synthetic(500, 50, 1));
        assert!(scores.len() == 500 && scores.iter().all(|s| s.is_finite()));
        println!("inference_vs_onnxruntime: smoke run ok (use models/bench/vs-onnxruntime.sh to measure)");
        return;
    }
    let python = std::env::var("HEARTH_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/bench/onnxruntime_bench.py");
    let package = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/ranker-v1");
    let model = Inference::builtin();
    // onnxruntime twice: fed the weights as inputs (the graph as shipped),
    // and with them made initializers, as tract has them baked in.
    println!(
        "{:>6} {:>12} {:>12} {:>12} {:>12} {:>8} {:>14} {:>8}",
        "N", "tract p50", "tract p90", "ort p50", "ort p90", "ratio", "ort baked p50", "ratio"
    );
    for n in [100usize, 500, 2000] {
        let inputs = InferenceInputs::synthetic(n, 50, 1);
        let dir = tempfile::tempdir().unwrap();
        inputs.write_npy(dir.path()).unwrap();
        let scores = model.score(&inputs);
        let tract_scores: Vec<u8> = scores.iter().flat_map(|s| s.to_le_bytes()).collect();
        hearth_core::testing::write_npy(&dir.path().join("tract_scores.npy"), "<f4", &[n], &tract_scores).unwrap();
        for _ in 0..100 {
            model.score(&inputs);
        }
        let mut times: Vec<f64> = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(model.score(&inputs));
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let out = Command::new(&python)
            .args([script, package, dir.path().to_str().unwrap(), &RUNS.to_string()])
            .output()
            .expect("running the onnxruntime side");
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            panic!("onnxruntime side failed");
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let ort: serde_json::Value = serde_json::from_str(text.trim()).expect("onnxruntime side prints JSON");
        let (p50, p90) = (percentile(&times, 0.5), percentile(&times, 0.9));
        let (op50, op90) = (ort["p50_us"].as_f64().unwrap(), ort["p90_us"].as_f64().unwrap());
        assert!(ort["max_abs_diff"].as_f64().unwrap() < 1e-3, "onnxruntime and tract disagree: {ort}");
        let baked = ort["baked_p50_us"].as_f64().unwrap();
        println!(
            "{n:>6} {p50:>10.1}us {p90:>10.1}us {op50:>10.1}us {op90:>10.1}us {:>8.2} {baked:>12.1}us {:>8.2}",
            p50 / op50,
            p50 / baked
        );
    }
}
