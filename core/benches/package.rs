//! What taking a model package costs on the device: checking one graph
//! (parsed, its ops and inputs checked, planned by tract; what the
//! `nnef_graph` fuzz target runs on every input) and the whole package
//! after its signature (files, graphs, weights, plans, probe run).
//!
//! `cargo bench -p hearth-core --bench package` measures the ONNX loader;
//! `cargo bench -p hearth-core --no-default-features --features nnef
//! --bench package` the NNEF one that `libhearth` ships.

use criterion::{Criterion, criterion_group, criterion_main};
use hearth_core::ModelPackage;
use hearth_core::testing::{build_unsigned_package, check_inference_graph};

fn package(c: &mut Criterion) {
    let builtin = ModelPackage::builtin();
    // The graph of the format this build loads.
    let (format, graph) = if builtin.inference.is_empty() {
        ("nnef", builtin.inference_nnef.clone())
    } else {
        ("onnx", builtin.inference.clone())
    };
    let mut g = c.benchmark_group("package");
    g.bench_function(format!("check the inference graph ({format})"), |b| {
        b.iter(|| check_inference_graph(&graph).unwrap())
    });
    g.sample_size(20);
    g.bench_function(format!("build the built-in package ({format})"), |b| {
        b.iter(|| build_unsigned_package(&builtin).unwrap())
    });
    g.finish();
}

criterion_group!(benches, package);
criterion_main!(benches);
