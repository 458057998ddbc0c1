//! Graphs from ONNX (`inference.onnx`, `train_step.onnx`) with tract-onnx.

use super::*;
use tract_onnx::pb::ModelProto;

/// A checked graph, as parsed.
pub(super) type Graph = ModelProto;

fn dims_of(v: &tract_onnx::pb::ValueInfoProto) -> Option<(i32, Vec<serde_json::Value>)> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
    use tract_onnx::pb::type_proto::Value as Type;
    let Some(Type::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let dims = t
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Dim::DimValue(n)) => serde_json::Value::from(*n),
            Some(Dim::DimParam(s)) => serde_json::Value::from(s.clone()),
            None => serde_json::Value::Null,
        })
        .collect();
    Some((t.elem_type, dims))
}

/// Parses a graph and checks its ops and its declared inputs and outputs
/// against the manifest.
pub(super) fn check_graph(what: &str, bytes: &[u8], io: &GraphIo) -> Result<ModelProto> {
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| ModelRejection::Malformed.err(format!("{what}: not an ONNX model ({e})")))?;
    let graph = proto.graph.as_ref().ok_or_else(|| ModelRejection::Malformed.err(format!("{what}: no graph")))?;
    if !proto.functions.is_empty() {
        return Err(ModelRejection::UnknownOp.err(format!("{what}: model-local functions")));
    }
    let known: HashSet<&str> = KNOWN_OPS.iter().copied().collect();
    for node in &graph.node {
        let standard = node.domain.is_empty() || node.domain == "ai.onnx";
        if !standard || !known.contains(node.op_type.as_str()) {
            return Err(
                ModelRejection::UnknownOp.err(format!("{what}: op {:?} (domain {:?})", node.op_type, node.domain))
            );
        }
    }
    let elem = |dtype: &str| match dtype {
        "float32" => 1,
        "int64" => 7,
        _ => -1,
    };
    let matches = |got: &[tract_onnx::pb::ValueInfoProto], want: &[TensorSpec]| {
        got.len() == want.len()
            && got.iter().zip(want).all(|(g, w)| {
                g.name == w.name && dims_of(g).is_some_and(|(e, dims)| e == elem(&w.dtype) && dims == w.shape)
            })
    };
    if !matches(&graph.input, &io.inputs) {
        return Err(ModelRejection::WrongShape.err(format!("{what}: graph inputs differ from the manifest")));
    }
    if !matches(&graph.output, &io.outputs) {
        return Err(ModelRejection::WrongShape.err(format!("{what}: graph outputs differ from the manifest")));
    }
    Ok(proto)
}

/// The inference graph with the weights moved from inputs into
/// initializers: tract then folds what depends only on weights and packs
/// the matrices once, at plan time. Ranking uses it; training, which
/// changes the weights, uses the graph with weight inputs.
pub(super) fn bake_weights(proto: &ModelProto, manifest: &Manifest, weights: &Weights) -> Result<ModelProto> {
    let mut baked = proto.clone();
    let graph = baked.graph.as_mut().ok_or_else(|| ModelRejection::Malformed.err("no graph"))?;
    for (p, values) in manifest.parameters.iter().zip(&weights.tensors) {
        let at = graph
            .input
            .iter()
            .position(|i| i.name == p.name)
            .ok_or_else(|| ModelRejection::WrongShape.err(format!("no input for parameter {}", p.name)))?;
        graph.input.remove(at);
        graph.initializer.push(tract_onnx::pb::TensorProto {
            name: p.name.clone(),
            dims: p.shape.iter().map(|&d| d as i64).collect(),
            data_type: 1, // FLOAT
            raw_data: float_slice(values)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
    }
    Ok(baked)
}

/// The baked inference graph planned for exactly `n` candidates and `k`
/// history items.
pub(super) fn build_shaped_plan(baked: &ModelProto, n: usize, k: usize) -> TractResult<Plan> {
    let mut model = tract_onnx::onnx().model_for_proto_model(baked)?;
    model.set_input_fact(0, f32::fact([USER_WIDTH]).into())?;
    model.set_input_fact(1, f32::fact([CONTEXT_WIDTH]).into())?;
    model.set_input_fact(2, f32::fact([n, ITEM_WIDTH]).into())?;
    model.set_input_fact(3, i64::fact([n]).into())?;
    model.set_input_fact(4, i64::fact([k]).into())?;
    model.set_input_fact(5, f32::fact([k]).into())?;
    model.into_optimized()?.into_runnable()
}

pub(super) fn build_plan(what: &str, proto: &ModelProto) -> Result<Plan> {
    in_tract(what, || tract_onnx::onnx().model_for_proto_model(proto)?.into_optimized()?.into_runnable())
}
