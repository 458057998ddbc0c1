//! Results that must not depend on the CPU: the built-in model's scores,
//! loss and gradients on fixed inputs, against the x86_64 results committed
//! in `fixtures/model-x86_64.json`. Run on x86_64, aarch64 and armv7 (the
//! last two under qemu, `tests/run.sh cross`).
//!
//! Tolerance: |got - want| <= 1e-5 + 1e-4 * |want| per value. tract picks
//! other kernels per architecture (AVX2/FMA here, NEON on ARM), so sums are
//! taken in other orders; float32 rounding stays far below this.
//!
//! Regenerate (x86_64 only, after a model change):
//! `HEARTH_UPDATE_FIXTURES=1 cargo test -p hearth-core --test cross_arch`.

use hearth_core::testing::{Inference, InferenceInputs};
use serde_json::{Value, json};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/model-x86_64.json");
const N: usize = 12;
const K: usize = 7;
const SEED: u64 = 20261125;
/// Gradient elements kept per parameter: a stride through the whole tensor.
const SAMPLES: usize = 48;

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 + 1e-4 * want.abs()
}

fn results() -> Value {
    let model = Inference::builtin();
    let inputs = InferenceInputs::synthetic(N, K, SEED);
    let labels: Vec<f32> = (0..N).map(|i| (i % 4 == 0) as u8 as f32).collect();
    let weights: Vec<f32> = (0..N).map(|i| 0.5 + (i % 3) as f32 * 0.25).collect();
    let step = model.train_step(&inputs, &labels, &weights);
    let gradients: serde_json::Map<String, Value> = step
        .gradients
        .iter()
        .map(|(name, g)| {
            let stride = (g.len() / SAMPLES).max(1);
            let nonzero: Vec<(usize, f32)> = g.iter().copied().enumerate().filter(|(_, v)| *v != 0.0).collect();
            let sampled: Vec<Value> = (0..g.len()).step_by(stride).map(|i| json!([i, g[i]])).collect();
            // The id tables are sparse: keep their non-zero entries instead.
            let kept = if nonzero.len() * 4 < g.len() {
                nonzero.iter().take(SAMPLES * 4).map(|(i, v)| json!([i, v])).collect()
            } else {
                sampled
            };
            let norm: f64 = g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            (name.clone(), json!({ "len": g.len(), "l2": norm, "nonzero": nonzero.len(), "values": kept }))
        })
        .collect();
    json!({
        "inputs": { "n": N, "k": K, "seed": SEED },
        "scores": model.score(&inputs),
        "train_step": { "loss": step.loss, "scores": step.scores, "gradients": gradients },
    })
}

#[test]
fn scores_and_gradients_match_the_x86_64_fixture() {
    let got = results();
    if std::env::var_os("HEARTH_UPDATE_FIXTURES").is_some() {
        assert_eq!(std::env::consts::ARCH, "x86_64", "the fixture is x86_64's");
        std::fs::write(FIXTURE, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(FIXTURE).expect("fixture present")).unwrap();
    assert_eq!(got["inputs"], want["inputs"]);
    let floats = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    let mut compared = 0;
    for (g, w) in [(&got["scores"], &want["scores"]), (&got["train_step"]["scores"], &want["train_step"]["scores"])] {
        for (a, b) in floats(g).iter().zip(floats(w)) {
            assert!(close(*a, b), "score {a} vs x86_64 {b}");
            compared += 1;
        }
    }
    let (loss, want_loss) = (got["train_step"]["loss"].as_f64().unwrap(), want["train_step"]["loss"].as_f64().unwrap());
    assert!(close(loss, want_loss), "loss {loss} vs x86_64 {want_loss}");
    let got_grads = got["train_step"]["gradients"].as_object().unwrap();
    let want_grads = want["train_step"]["gradients"].as_object().unwrap();
    assert_eq!(got_grads.len(), want_grads.len());
    for (name, w) in want_grads {
        let g = &got_grads[name];
        assert_eq!(g["len"], w["len"], "{name}");
        assert_eq!(g["nonzero"], w["nonzero"], "{name}: non-zero count");
        let (gl, wl) = (g["l2"].as_f64().unwrap(), w["l2"].as_f64().unwrap());
        assert!(close(gl, wl), "{name}: norm {gl} vs x86_64 {wl}");
        // Look each wanted element up in the full gradient: recompute it.
        let wanted: Vec<(usize, f64)> = w["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap()))
            .collect();
        let have: std::collections::HashMap<usize, f64> = g["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap()))
            .collect();
        for (i, want_v) in wanted {
            let got_v = *have.get(&i).unwrap_or_else(|| panic!("{name}[{i}] missing"));
            assert!(close(got_v, want_v), "{name}[{i}]: {got_v} vs x86_64 {want_v}");
            compared += 1;
        }
    }
    assert!(compared > 300, "only {compared} values compared");
}
