//! Graphs from tract's NNEF (`*.nnef.tar`) with tract-nnef alone.

use super::*;
use tract_nnef::ast::{Assignment, Invocation, LValue, Literal, RValue, Subscript};

/// A checked graph, typed (not yet optimized).
pub(super) type Graph = TypedModel;

/// The element type of a manifest dtype.
fn datum_type(dtype: &str) -> Option<DatumType> {
    match dtype {
        "float32" => Some(DatumType::F32),
        "int64" => Some(DatumType::I64),
        _ => None,
    }
}

/// NNEF operations a graph may use: the ones tract writes for the ONNX
/// ops of `KNOWN_OPS` (after decluttering), plus the declarations of
/// inputs and constant tensors.
const KNOWN_NNEF_OPS: &[&str] = &[
    "external",
    "tract_core_external",
    "variable",
    "matmul",
    "add",
    "sub",
    "mul",
    "div",
    "max",
    "min",
    "neg",
    "recip",
    "exp",
    "log",
    "sigmoid",
    "relu",
    "gt",
    "lt",
    "eq",
    "select",
    "tract_core_cast",
    "transpose",
    "sum_reduce",
    "mean_reduce",
    "squeeze",
    "unsqueeze",
    "reshape",
    "slice",
    "concat",
    "tract_core_gather",
    "tract_core_range",
    "tract_core_broadcast",
];
/// The one fragment tract writes into a graph: the model's properties.
const PROPERTIES_FRAGMENT: &str = "tract_core_properties";

/// Every invocation in `rvalue`.
fn invoked<'a>(rvalue: &'a RValue, out: &mut Vec<&'a Invocation>) {
    match rvalue {
        RValue::Identifier(_) | RValue::Literal(_) => {}
        RValue::Binary(a, _, b) => {
            invoked(a, out);
            invoked(b, out);
        }
        RValue::Unary(_, a) => invoked(a, out),
        RValue::Tuple(items) | RValue::Array(items) => items.iter().for_each(|i| invoked(i, out)),
        RValue::Subscript(a, sub) => {
            invoked(a, out);
            match &**sub {
                Subscript::Single(i) => invoked(i, out),
                Subscript::Range(from, to) => from.iter().chain(to.iter()).for_each(|i| invoked(i, out)),
            }
        }
        RValue::Comprehension(c) => {
            c.loop_iters.iter().for_each(|(_, i)| invoked(i, out));
            c.filter.iter().for_each(|i| invoked(i, out));
            invoked(&c.yields, out);
        }
        RValue::IfThenElse(c) => {
            invoked(&c.cond, out);
            invoked(&c.then, out);
            invoked(&c.otherwise, out);
        }
        RValue::Invocation(call) => {
            out.push(call);
            call.arguments.iter().for_each(|a| invoked(&a.rvalue, out));
        }
    }
}

/// The ops check, on the parsed document: known operations only, no
/// fragments of the package's own (they could define any op), no
/// registries beyond tract-core's, no quantization.
fn check_ops<'a>(what: &str, proto: &'a tract_nnef::ProtoModel) -> Result<()> {
    let unknown = |detail: String| Err(ModelRejection::UnknownOp.err(format!("{what}: {detail}")));
    let doc = &proto.doc;
    for (id, value) in &doc.extension {
        let ok = match id.0.as_str() {
            "tract_registry" => value.trim() == "tract_core",
            "tract_symbol" => true,
            _ => false,
        };
        if !ok {
            return unknown(format!("extension {} {value}", id.0));
        }
    }
    if proto.quantization.as_ref().is_some_and(|q| !q.is_empty()) {
        return unknown("quantized tensors".into());
    }
    let mut bodies: Vec<&'a [Assignment]> = vec![&doc.graph_def.body];
    for fragment in &doc.fragments {
        if fragment.decl.id.0 != PROPERTIES_FRAGMENT {
            return unknown(format!("fragment {:?}", fragment.decl.id.0));
        }
        bodies.push(fragment.body.as_deref().unwrap_or_default());
    }
    let mut calls = Vec::new();
    for a in bodies.into_iter().flatten() {
        // tract names a node after the first identifier assigned, and
        // panics when there is none: `() = ...` is refused here.
        let name = |l: &LValue| matches!(l, LValue::Identifier(id) if !id.0.is_empty());
        let named = match &a.left {
            LValue::Identifier(_) => name(&a.left),
            LValue::Tuple(items) | LValue::Array(items) => !items.is_empty() && items.iter().all(name),
        };
        if !named {
            return Err(ModelRejection::Malformed.err(format!("{what}: an assignment to no name")));
        }
        invoked(&a.right, &mut calls);
    }
    let known: HashSet<&str> = KNOWN_NNEF_OPS.iter().copied().collect();
    if let Some(op) = calls.iter().find(|c| !known.contains(c.id.0.as_str())) {
        return unknown(format!("op {:?}", op.id.0));
    }
    for call in calls.iter().filter(|c| c.id.0 == "transpose") {
        if !is_permutation(argument(call, "axes", 1)) {
            return Err(ModelRejection::Malformed.err(format!("{what}: a transpose whose axes are not a permutation")));
        }
    }
    Ok(())
}

/// An invocation's argument by name, or else at its position.
fn argument<'a>(call: &'a Invocation, name: &str, position: usize) -> Option<&'a RValue> {
    match call.arguments.iter().find(|a| a.id.as_ref().is_some_and(|id| id.0 == name)) {
        Some(a) => Some(&a.rvalue),
        None => call.arguments.get(position).filter(|a| a.id.is_none()).map(|a| &a.rvalue),
    }
}

/// Whether `axes` is written out as a permutation of 0..n: tract's
/// transpose loops, allocating without end, on one with an axis twice.
fn is_permutation(axes: Option<&RValue>) -> bool {
    let number = |l: &Literal| match l {
        Literal::Numeric(n) => n.parse::<usize>().ok(),
        _ => None,
    };
    let numbers: Option<Vec<usize>> = match axes {
        Some(RValue::Literal(Literal::Array(items))) => items.iter().map(number).collect(),
        Some(RValue::Array(items)) => items
            .iter()
            .map(|r| match r {
                RValue::Literal(l) => number(l),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    numbers.is_some_and(|mut axes| {
        axes.sort_unstable();
        axes.iter().enumerate().all(|(i, &a)| i == a)
    })
}

/// A tensor's shape as the manifest writes it: sizes as numbers, the
/// symbols `N` and `K` as their names.
fn dims(fact: &TypedFact) -> Vec<serde_json::Value> {
    fact.shape
        .iter()
        .map(|d| match d.to_i64() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::from(d.to_string()),
        })
        .collect()
}

fn matches(model: &TypedModel, outlets: &[OutletId], want: &[TensorSpec], name: impl Fn(OutletId) -> String) -> bool {
    outlets.len() == want.len()
        && outlets.iter().zip(want).all(|(&o, w)| {
            model
                .outlet_fact(o)
                .is_ok_and(|f| name(o) == w.name && Some(f.datum_type) == datum_type(&w.dtype) && dims(f) == w.shape)
        })
}

/// Brackets nested deeper than this are refused; tract's own graphs reach 4.
const MAX_NESTING: usize = 8;

/// The archive and its `graph.nnef` as text, before tract's parser sees
/// them. That parser backtracks, and its time grows exponentially with
/// nested brackets or runs of operators: 68 `+` in a row (a finding of the
/// `nnef_graph` fuzz target) or 40 nested brackets did not finish in
/// minutes, which would hold a device's install for good. Refused here:
/// entries other than `graph.nnef` and `.dat` tensors, nesting deeper than
/// [`MAX_NESTING`], two operators in a row (but `->` and `= -`), the `if`
/// and `for` forms, comments and single quotes, none of which tract's
/// writer produces.
fn check_archive(what: &str, bytes: &[u8]) -> Result<()> {
    let malformed = |detail: &str| Err(ModelRejection::Malformed.err(format!("{what}: {detail}")));
    let not_archive = |e: std::io::Error| ModelRejection::Malformed.err(format!("{what}: not an NNEF archive ({e})"));
    let mut graph = None;
    for entry in tar::Archive::new(bytes).entries().map_err(not_archive)? {
        let mut entry = entry.map_err(not_archive)?;
        let path = entry.path().map_err(not_archive)?.to_string_lossy().into_owned();
        if path == "graph.nnef" && graph.is_none() {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).map_err(not_archive)?;
            graph = Some(text);
        } else if !path.ends_with(".dat") {
            return malformed(&format!("an archive entry {path:?}"));
        }
    }
    let Some(text) = graph else { return malformed("no graph.nnef in the archive") };
    match check_text(&text) {
        Some(detail) => malformed(detail),
        None => Ok(()),
    }
}

/// What makes `text` one to refuse (see [`check_archive`]), if anything.
fn check_text(text: &str) -> Option<&'static str> {
    const OPERATORS: &str = "+-*/^!<>=&|?";
    let (mut depth, mut string) = (0usize, false);
    let mut operator: Option<char> = None;
    let mut word = String::new();
    for c in text.chars() {
        if string {
            string = c != '"';
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            operator = None;
            continue;
        }
        if word == "if" || word == "for" {
            return Some("an if or for form");
        }
        word.clear();
        match c {
            '"' => {
                string = true;
                operator = None;
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some("brackets nested too deep");
                }
                operator = None;
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                operator = None;
            }
            '#' | '\'' => return Some("a comment or a single quote"),
            c if OPERATORS.contains(c) => {
                if operator.is_some_and(|p| !matches!((p, c), ('-', '>') | ('=', '-'))) {
                    return Some("two operators in a row");
                }
                operator = Some(c);
            }
            c if c.is_whitespace() => {}
            _ => operator = None,
        }
    }
    None
}

/// The NNEF reader, made once per process: making one parses tract's
/// standard library of fragments, which took about half of checking a
/// graph.
fn reader() -> &'static tract_nnef::framework::Nnef {
    static READER: std::sync::OnceLock<tract_nnef::framework::Nnef> = std::sync::OnceLock::new();
    READER.get_or_init(tract_nnef::nnef)
}

/// Parses a graph, checks its ops, types it, and checks its inputs and
/// outputs against the manifest.
pub(super) fn check_graph(what: &str, bytes: &[u8], io: &GraphIo) -> Result<TypedModel> {
    check_archive(what, bytes)?;
    let nnef = reader();
    let proto = nnef
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| ModelRejection::Malformed.err(format!("{what}: not an NNEF archive ({e})")))?;
    check_ops(what, &proto)?;
    let model = in_tract(what, || nnef.model_for_proto_model(&proto))?;
    if !matches(&model, &model.inputs, &io.inputs, |o| model.node(o.node).name.clone()) {
        return Err(ModelRejection::WrongShape.err(format!("{what}: graph inputs differ from the manifest")));
    }
    let output_name =
        |o: OutletId| model.outlet_label(o).map(str::to_string).unwrap_or_else(|| model.node(o.node).name.clone());
    if !matches(&model, &model.outputs, &io.outputs, output_name) {
        return Err(ModelRejection::WrongShape.err(format!("{what}: graph outputs differ from the manifest")));
    }
    Ok(model)
}

/// The inference graph with each weight input turned into a constant:
/// tract then folds what depends only on weights and packs the matrices
/// once, at plan time. Ranking uses it; training, which changes the
/// weights, uses the graph with weight inputs.
pub(super) fn bake_weights(model: &TypedModel, manifest: &Manifest, weights: &Weights) -> Result<TypedModel> {
    let mut baked = model.clone();
    for (p, values) in manifest.parameters.iter().zip(&weights.tensors) {
        let at = baked
            .inputs
            .iter()
            .position(|o| baked.node(o.node).name == p.name)
            .ok_or_else(|| ModelRejection::WrongShape.err(format!("no input for parameter {}", p.name)))?;
        let constant = || -> TractResult<(tract_core::ops::konst::Const, TypedFact)> {
            let tensor = values.clone().into_arc_tensor();
            Ok((tract_core::ops::konst::Const::new(tensor.clone())?, TypedFact::try_from(tensor)?))
        };
        let (op, fact) =
            constant().map_err(|e| ModelRejection::WrongShape.err(format!("parameter {}: {e}", p.name)))?;
        let outlet = baked.inputs.remove(at);
        let node = baked.node_mut(outlet.node);
        node.op = Box::new(op);
        node.outputs[0].fact = fact;
    }
    Ok(baked)
}

/// The baked inference graph planned for exactly `n` candidates and `k`
/// history items: the symbols bound, then optimized.
pub(super) fn build_shaped_plan(baked: &TypedModel, n: usize, k: usize) -> TractResult<Plan> {
    let mut values = std::collections::HashMap::new();
    values.insert(baked.symbols.sym("N"), TDim::from(n as i64));
    values.insert(baked.symbols.sym("K"), TDim::from(k as i64));
    baked.set_symbols(&values)?.into_optimized()?.into_runnable()
}

pub(super) fn build_plan(what: &str, model: &TypedModel) -> Result<Plan> {
    in_tract(what, || model.clone().into_optimized()?.into_runnable())
}
