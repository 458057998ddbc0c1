//! Flower's content-addressed objects (flwr 1.42,
//! `flwr/supercore/inflatable/` and `flwr/app/message/`): a message's content
//! travels as a tree of objects, each pulled or pushed on its own and named
//! by the SHA-256 (lower-case hex) of its bytes.
//!
//! An object is `"<Type> <child id>,<child id>... <body length>" 0x00 <body>`:
//!
//! | type | children | body |
//! | --- | --- | --- |
//! | `Message` | the RecordDict (none for an error reply) | protobuf `flwr.proto.Message` with metadata only, `message_id` empty |
//! | `RecordDict` | its records (distinct ids, in order) | JSON `{"name": "<record id>", ...}` |
//! | `ArrayRecord` | its arrays (distinct ids, in order) | JSON `{"name": "<array id>", ...}` |
//! | `Array` | its chunks (distinct ids, in order) | JSON `{"dtype", "shape", "stype", "arraychunk_ids"}`, the last indexing the head's children, one per chunk |
//! | `ArrayChunk` | none | up to 5 MiB of the array's data |
//! | `ConfigRecord`, `MetricRecord` | none | protobuf `flwr.proto.ConfigRecord` / `MetricRecord` |
//!
//! An array's data with `stype` `numpy.ndarray` is a `.npy` file (what
//! `numpy.save` writes). Only little-endian float32 arrays are read or made
//! here: the model's parameters.

use std::collections::HashMap;

use prost::Message as _;
use serde_json::Value;

use super::FleetError;
use super::proto;

/// What flwr splits an array's data into (its FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE).
pub const ARRAY_CHUNK_BYTES: usize = 5 * 1024 * 1024;
pub const NUMPY_STYPE: &str = "numpy.ndarray";

/// Bounds on what a device accepts from a server.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// One object's bytes.
    pub max_object_bytes: usize,
    /// All objects of one message.
    pub max_message_bytes: usize,
    pub max_objects: usize,
    /// Elements of one array.
    pub max_array_elements: usize,
    /// Elements of all the arrays of one message once expanded, counted
    /// from the arrays' declared shapes before any data is read: an
    /// ArrayRecord may name one small object many times (content-addressed
    /// objects are sent once), so the bytes pulled do not bound it.
    pub max_message_elements: usize,
    /// The parameters the device expects, in order (names and shapes from
    /// its model's manifest). When set, an ArrayRecord must name exactly
    /// these, each of its shape, before anything is expanded.
    pub expected_arrays: Option<Vec<(String, Vec<usize>)>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_bytes: 8 << 20,
            max_message_bytes: 64 << 20,
            max_objects: 4096,
            max_array_elements: 4 << 20,
            max_message_elements: 16 << 20,
            expected_arrays: None,
        }
    }
}

impl Limits {
    /// These limits for a model whose parameters are `expected` (name and
    /// shape, in order): a message may expand to those arrays and nothing more.
    pub fn for_parameters(self, expected: Vec<(String, Vec<usize>)>) -> Limits {
        let total: usize = expected.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        Limits { max_message_elements: total.min(self.max_message_elements), expected_arrays: Some(expected), ..self }
    }
}

/// Lower-case hex SHA-256 of an object's bytes: its id.
pub fn object_id(content: &[u8]) -> String {
    crate::store::crypto::sha256_hex(content)
}

fn is_object_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An object in bytes, with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub id: String,
    pub content: Vec<u8>,
}

impl Object {
    pub fn new(kind: &str, children: &[String], body: &[u8]) -> Object {
        let mut content = format!("{kind} {} {}", children.join(","), body.len()).into_bytes();
        content.push(0);
        content.extend_from_slice(body);
        Object { id: object_id(&content), content }
    }
}

/// An object's head and body, checked for form.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub kind: &'a str,
    pub children: Vec<&'a str>,
    pub body: &'a [u8],
}

pub fn parse(content: &[u8]) -> Result<Parsed<'_>, FleetError> {
    let bad = |why: &str| FleetError::Decode(format!("object: {why}"));
    let split = content.iter().position(|b| *b == 0).ok_or_else(|| bad("no head"))?;
    let head = std::str::from_utf8(&content[..split]).map_err(|_| bad("head is not UTF-8"))?;
    let body = &content[split + 1..];
    let parts: Vec<&str> = head.split(' ').collect();
    let [kind, children, len] = parts[..] else { return Err(bad("head is not three fields")) };
    let len: usize = len.parse().map_err(|_| bad("body length is not a number"))?;
    if len != body.len() {
        return Err(bad("body length differs from the head's"));
    }
    let children: Vec<&str> = if children.is_empty() { Vec::new() } else { children.split(',').collect() };
    if !children.iter().all(|c| is_object_id(c)) {
        return Err(bad("a child id is not a SHA-256"));
    }
    Ok(Parsed { kind, children, body })
}

/// A float32 array in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl F32Array {
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A config value a server may send (the kinds a device reads).
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigValue {
    Double(f64),
    Int(i64),
    Uint(u64),
    Bool(bool),
    String(String),
    Bytes(Vec<u8>),
    /// A list of any kind (not read by the device).
    List,
}

impl ConfigValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ConfigValue::Double(v) => Some(*v),
            ConfigValue::Int(v) => Some(*v as f64),
            ConfigValue::Uint(v) => Some(*v as f64),
            _ => None,
        }
    }
}

/// A record of a RecordDict.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Arrays(Vec<(String, F32Array)>),
    Config(Vec<(String, ConfigValue)>),
    Metrics(Vec<(String, f64)>),
}

// ---- .npy ----

/// `.npy` version 1.0 of an array in C order: `descr` is numpy's dtype
/// string (`<f4`, `<i8`), `data` the elements' bytes in that type.
pub fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n', padded to 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// `.npy` version 1.0 of a float32 array (little-endian, C order).
pub fn npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    npy("<f4", shape, &bytes)
}

/// Reads a `.npy` of little-endian float32 in C order; anything else is a
/// typed error.
pub fn parse_npy_f32(bytes: &[u8], limits: &Limits) -> Result<F32Array, FleetError> {
    let bad = |why: &str| FleetError::Decode(format!(".npy: {why}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("no magic"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(bad("unknown version")),
    };
    let end = start.checked_add(header_len).filter(|e| *e <= bytes.len()).ok_or_else(|| bad("short header"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not text"))?;
    let field = |name: &str| -> Option<&str> {
        let at = header.find(&format!("'{name}'"))? + name.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or_else(|| bad("no descr"))?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        return Err(FleetError::Protocol("an array is not little-endian float32".into()));
    }
    if !field("fortran_order").ok_or_else(|| bad("no fortran_order"))?.starts_with("False") {
        return Err(FleetError::Protocol("an array is in Fortran order".into()));
    }
    let shape = field("shape").ok_or_else(|| bad("no shape"))?;
    let close = shape.find(')').ok_or_else(|| bad("shape"))?;
    let inner = shape.strip_prefix('(').ok_or_else(|| bad("shape"))?;
    let mut dims = Vec::new();
    for d in inner[..close - 1].split(',').map(str::trim).filter(|d| !d.is_empty()) {
        dims.push(d.parse::<usize>().map_err(|_| bad("shape"))?);
    }
    let count = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or_else(|| bad("shape overflows"))?;
    if count > limits.max_array_elements {
        return Err(FleetError::TooLarge(format!("an array of {count} elements")));
    }
    let data = &bytes[end..];
    if data.len() != count * 4 {
        return Err(bad("data length differs from the shape"));
    }
    let data = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(F32Array { shape: dims, data })
}

// ---- deflating (device to server) ----

/// The objects of one message, children before parents, the Message last.
#[derive(Debug, Clone)]
pub struct Deflated {
    pub objects: Vec<Object>,
    pub tree: proto::ObjectTree,
}

impl Deflated {
    pub fn message_id(&self) -> &str {
        &self.tree.object_id
    }

    pub fn get(&self, id: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.id == id)
    }
}

struct Node {
    object: Object,
    children: Vec<Node>,
}

impl Node {
    fn tree(&self) -> proto::ObjectTree {
        proto::ObjectTree {
            object_id: self.object.id.clone(),
            children: self.children.iter().map(Node::tree).collect(),
        }
    }

    fn flatten(self, out: &mut Vec<Object>) {
        for c in self.children {
            c.flatten(out);
        }
        if !out.iter().any(|o| o.id == self.object.id) {
            out.push(self.object);
        }
    }
}

/// Distinct children in first-seen order (as a Python dict keyed by id keeps them).
fn distinct(nodes: Vec<Node>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    for n in nodes {
        if !out.iter().any(|o| o.object.id == n.object.id) {
            out.push(n);
        }
    }
    out
}

fn ids(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(|n| n.object.id.clone()).collect()
}

/// `{"a": "x", "b": "y"}` as Python's `json.dumps` writes it.
fn json_refs(refs: &[(String, String)]) -> Vec<u8> {
    let items: Vec<String> =
        refs.iter().map(|(k, v)| format!("{}: {}", Value::String(k.clone()), Value::String(v.clone()))).collect();
    format!("{{{}}}", items.join(", ")).into_bytes()
}

fn array_node(a: &F32Array) -> Node {
    let data = npy_f32(&a.shape, &a.data);
    let chunks: Vec<Node> = data
        .chunks(ARRAY_CHUNK_BYTES)
        .map(|c| Node { object: Object::new("ArrayChunk", &[], c), children: Vec::new() })
        .collect();
    let order: Vec<String> = ids(&chunks);
    let unique = distinct(chunks);
    let unique_ids = ids(&unique);
    let index: Vec<String> =
        order.iter().map(|id| unique_ids.iter().position(|u| u == id).unwrap_or(0).to_string()).collect();
    let shape: Vec<String> = a.shape.iter().map(|d| d.to_string()).collect();
    let body = format!(
        "{{\"dtype\": \"float32\", \"shape\": [{}], \"stype\": \"{NUMPY_STYPE}\", \"arraychunk_ids\": [{}]}}",
        shape.join(", "),
        index.join(", ")
    );
    Node { object: Object::new("Array", &unique_ids, body.as_bytes()), children: unique }
}

fn record_node(record: &Record) -> Node {
    match record {
        Record::Arrays(arrays) => {
            let nodes: Vec<Node> = arrays.iter().map(|(_, a)| array_node(a)).collect();
            let refs: Vec<(String, String)> =
                arrays.iter().zip(&nodes).map(|((n, _), node)| (n.clone(), node.object.id.clone())).collect();
            let unique = distinct(nodes);
            Node { object: Object::new("ArrayRecord", &ids(&unique), &json_refs(&refs)), children: unique }
        }
        Record::Config(items) => {
            use proto::config_value::Value as V;
            let items = items
                .iter()
                .map(|(k, v)| proto::ConfigRecordItem {
                    key: k.clone(),
                    value: Some(proto::ConfigRecordValue {
                        value: Some(match v {
                            ConfigValue::Double(x) => V::Double(*x),
                            ConfigValue::Int(x) => V::Sint64(*x),
                            ConfigValue::Uint(x) => V::Uint64(*x),
                            ConfigValue::Bool(x) => V::Bool(*x),
                            ConfigValue::String(x) => V::String(x.clone()),
                            ConfigValue::Bytes(x) => V::Bytes(x.clone()),
                            ConfigValue::List => V::StringList(proto::StringList { vals: Vec::new() }),
                        }),
                    }),
                })
                .collect();
            let body = proto::ConfigRecord { items }.encode_to_vec();
            Node { object: Object::new("ConfigRecord", &[], &body), children: Vec::new() }
        }
        Record::Metrics(items) => {
            let items = items
                .iter()
                .map(|(k, v)| proto::MetricRecordItem {
                    key: k.clone(),
                    value: Some(proto::MetricRecordValue { value: Some(proto::metric_value::Value::Double(*v)) }),
                })
                .collect();
            let body = proto::MetricRecord { items }.encode_to_vec();
            Node { object: Object::new("MetricRecord", &[], &body), children: Vec::new() }
        }
    }
}

/// Deflates a message with `content` and `metadata` (whose `message_id` is
/// ignored: a message's id is its object's id, which the caller then sets).
pub fn deflate_message(metadata: &proto::Metadata, content: &[(String, Record)]) -> Deflated {
    let nodes: Vec<Node> = content.iter().map(|(_, r)| record_node(r)).collect();
    let refs: Vec<(String, String)> =
        content.iter().zip(&nodes).map(|((n, _), node)| (n.clone(), node.object.id.clone())).collect();
    let unique = distinct(nodes);
    let record_dict = Node { object: Object::new("RecordDict", &ids(&unique), &json_refs(&refs)), children: unique };
    let mut meta = metadata.clone();
    meta.message_id = String::new();
    let body = proto::ProtoMessage { metadata: Some(meta), content: None, error: None }.encode_to_vec();
    let message = Node {
        object: Object::new("Message", std::slice::from_ref(&record_dict.object.id), &body),
        children: vec![record_dict],
    };
    let tree = message.tree();
    let mut objects = Vec::new();
    message.flatten(&mut objects);
    Deflated { objects, tree }
}

/// Deflates an error reply: a Message object with no children.
pub fn deflate_error_message(metadata: &proto::Metadata, error: &proto::ProtoError) -> Deflated {
    let mut meta = metadata.clone();
    meta.message_id = String::new();
    let body = proto::ProtoMessage { metadata: Some(meta), content: None, error: Some(error.clone()) }.encode_to_vec();
    let object = Object::new("Message", &[], &body);
    let tree = proto::ObjectTree { object_id: object.id.clone(), children: Vec::new() };
    Deflated { objects: vec![object], tree }
}

// ---- inflating (server to device) ----

/// Reads the content of a message from its objects, each already checked
/// against its id. Every reference must resolve, every type must be the one
/// expected at its place.
pub fn inflate_content(
    message_id: &str,
    objects: &HashMap<String, Vec<u8>>,
    limits: &Limits,
) -> Result<(proto::Metadata, Vec<(String, Record)>), FleetError> {
    let get = |id: &str, kind: &str| -> Result<Parsed<'_>, FleetError> {
        let content = objects.get(id).ok_or_else(|| FleetError::Protocol(format!("object {id} was not sent")))?;
        let p = parse(content)?;
        if p.kind != kind {
            return Err(FleetError::Protocol(format!("expected a {kind}, got a {}", p.kind)));
        }
        Ok(p)
    };
    let message = get(message_id, "Message")?;
    let proto_message = proto::ProtoMessage::decode(message.body).map_err(|e| FleetError::Decode(e.to_string()))?;
    let metadata = proto_message.metadata.unwrap_or_default();
    if proto_message.error.is_some() {
        return Err(FleetError::Protocol("the server sent an error message".into()));
    }
    let [record_dict_id] = message.children[..] else {
        return Err(FleetError::Protocol("a message without exactly one RecordDict".into()));
    };
    let record_dict = get(record_dict_id, "RecordDict")?;
    check_expansion(record_dict.body, &record_dict.children, objects, limits)?;
    let mut content = Vec::new();
    for (name, rid) in json_refs_of(record_dict.body, &record_dict.children)? {
        let content_of = objects.get(&rid).ok_or_else(|| FleetError::Protocol("a record was not sent".into()))?;
        let p = parse(content_of)?;
        let record = match p.kind {
            "ArrayRecord" => {
                let mut arrays = Vec::new();
                for (aname, aid) in json_refs_of(p.body, &p.children)? {
                    arrays.push((aname, inflate_array(&aid, objects, limits)?));
                }
                Record::Arrays(arrays)
            }
            "ConfigRecord" => {
                if !p.children.is_empty() {
                    return Err(FleetError::Protocol("a ConfigRecord with children".into()));
                }
                let r = proto::ConfigRecord::decode(p.body).map_err(|e| FleetError::Decode(e.to_string()))?;
                Record::Config(r.items.into_iter().map(|i| (i.key, config_value(i.value))).collect())
            }
            "MetricRecord" => {
                let r = proto::MetricRecord::decode(p.body).map_err(|e| FleetError::Decode(e.to_string()))?;
                use proto::metric_value::Value as V;
                Record::Metrics(
                    r.items
                        .into_iter()
                        .filter_map(|i| match i.value?.value? {
                            V::Double(x) => Some((i.key, x)),
                            V::Sint64(x) => Some((i.key, x as f64)),
                            V::Uint64(x) => Some((i.key, x as f64)),
                            _ => None,
                        })
                        .collect(),
                )
            }
            other => return Err(FleetError::Protocol(format!("a record of unknown type {other}"))),
        };
        content.push((name, record));
    }
    Ok((metadata, content))
}

/// Walks the arrays a RecordDict names, reading only their heads, and
/// refuses the message before anything is expanded when the arrays, counted
/// once per reference, exceed `max_message_elements`, or differ from
/// `expected_arrays`.
fn check_expansion(
    body: &[u8],
    children: &[&str],
    objects: &HashMap<String, Vec<u8>>,
    limits: &Limits,
) -> Result<(), FleetError> {
    let mut total = 0usize;
    let mut array_records = 0;
    for (_, rid) in json_refs_of(body, children)? {
        let record = objects.get(&rid).ok_or_else(|| FleetError::Protocol("a record was not sent".into()))?;
        let p = parse(record)?;
        if p.kind != "ArrayRecord" {
            continue;
        }
        array_records += 1;
        let refs = json_refs_of(p.body, &p.children)?;
        if let Some(expected) = &limits.expected_arrays {
            let names: Vec<&str> = refs.iter().map(|(n, _)| n.as_str()).collect();
            let want: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
            if names != want {
                return Err(FleetError::Parameters("other names or order".into()));
            }
        }
        for (i, (_, aid)) in refs.iter().enumerate() {
            let shape = array_head(aid, objects)?.shape;
            if let Some(expected) = &limits.expected_arrays
                && expected[i].1 != shape
            {
                return Err(FleetError::Parameters("an array of another shape".into()));
            }
            let count = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
            total = count.and_then(|c| total.checked_add(c)).unwrap_or(usize::MAX);
            if total > limits.max_message_elements {
                return Err(FleetError::TooLarge(format!(
                    "a message whose arrays expand to more than {} elements",
                    limits.max_message_elements
                )));
            }
        }
    }
    if array_records > 1 {
        return Err(FleetError::Protocol("more than one ArrayRecord".into()));
    }
    Ok(())
}

/// An Array object's head, read without its chunks.
struct ArrayHead<'a> {
    parsed: Parsed<'a>,
    shape: Vec<usize>,
    chunk_indexes: Vec<usize>,
}

fn array_head<'a>(id: &str, objects: &'a HashMap<String, Vec<u8>>) -> Result<ArrayHead<'a>, FleetError> {
    let content = objects.get(id).ok_or_else(|| FleetError::Protocol("an array was not sent".into()))?;
    let p = parse(content)?;
    if p.kind != "Array" {
        return Err(FleetError::Protocol(format!("expected an Array, got a {}", p.kind)));
    }
    let meta: Value = serde_json::from_slice(p.body).map_err(|e| FleetError::Decode(format!("array: {e}")))?;
    if meta["stype"].as_str() != Some(NUMPY_STYPE) {
        return Err(FleetError::Protocol("an array that is not a numpy array".into()));
    }
    if meta["dtype"].as_str() != Some("float32") {
        return Err(FleetError::Protocol("an array that is not float32".into()));
    }
    let shape: Vec<usize> = meta["shape"]
        .as_array()
        .ok_or_else(|| FleetError::Decode("array shape".into()))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| FleetError::Decode("array shape".into()))?;
    let chunk_indexes: Vec<usize> = meta["arraychunk_ids"]
        .as_array()
        .ok_or_else(|| FleetError::Decode("array chunks".into()))?
        .iter()
        .map(|i| i.as_u64().and_then(|i| usize::try_from(i).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| FleetError::Decode("array chunk index".into()))?;
    Ok(ArrayHead { parsed: p, shape, chunk_indexes })
}

fn config_value(v: Option<proto::ConfigRecordValue>) -> ConfigValue {
    use proto::config_value::Value as V;
    match v.and_then(|v| v.value) {
        Some(V::Double(x)) => ConfigValue::Double(x),
        Some(V::Sint64(x)) => ConfigValue::Int(x),
        Some(V::Uint64(x)) => ConfigValue::Uint(x),
        Some(V::Bool(x)) => ConfigValue::Bool(x),
        Some(V::String(x)) => ConfigValue::String(x),
        Some(V::Bytes(x)) => ConfigValue::Bytes(x),
        _ => ConfigValue::List,
    }
}

/// `{"name": "<id>", ...}` in the order written (the order of a model's
/// parameters), whose ids are all among the head's children.
fn json_refs_of(body: &[u8], children: &[&str]) -> Result<Vec<(String, String)>, FleetError> {
    let OrderedRefs(refs) =
        serde_json::from_slice(body).map_err(|e| FleetError::Decode(format!("record refs: {e}")))?;
    if refs.iter().any(|(_, id)| !children.contains(&id.as_str())) {
        return Err(FleetError::Protocol("a reference that is not a child of its object".into()));
    }
    Ok(refs)
}

/// A JSON object of strings, keys in document order (serde_json's `Map`
/// sorts them without its `preserve_order` feature).
struct OrderedRefs(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for OrderedRefs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedRefs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OrderedRefs, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    if out.iter().any(|(key, _): &(String, String)| *key == k) {
                        return Err(serde::de::Error::custom("a repeated key"));
                    }
                    out.push((k, v));
                }
                Ok(OrderedRefs(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn inflate_array(id: &str, objects: &HashMap<String, Vec<u8>>, limits: &Limits) -> Result<F32Array, FleetError> {
    let ArrayHead { parsed: p, shape: declared, chunk_indexes } = array_head(id, objects)?;
    let count = declared.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
    if count.is_none_or(|c| c > limits.max_array_elements) {
        return Err(FleetError::TooLarge("an array's declared shape".into()));
    }
    let mut data = Vec::new();
    for i in chunk_indexes {
        let cid = p.children.get(i).ok_or_else(|| FleetError::Protocol("an array chunk index out of range".into()))?;
        let chunk = objects.get(*cid).ok_or_else(|| FleetError::Protocol("an array chunk was not sent".into()))?;
        let c = parse(chunk)?;
        if c.kind != "ArrayChunk" || !c.children.is_empty() {
            return Err(FleetError::Protocol("expected an ArrayChunk".into()));
        }
        if data.len().saturating_add(c.body.len()) > limits.max_array_elements.saturating_mul(4).saturating_add(4096) {
            return Err(FleetError::TooLarge("an array's data".into()));
        }
        data.extend_from_slice(c.body);
    }
    let array = parse_npy_f32(&data, limits)?;
    if array.shape != declared {
        return Err(FleetError::Protocol("an array's .npy shape differs from its declared shape".into()));
    }
    Ok(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trips() {
        let a = npy_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(a.len() % 64, 24, "a 64-byte aligned header, then 6 floats");
        let back = parse_npy_f32(&a, &Limits::default()).unwrap();
        assert_eq!(back.shape, vec![2, 3]);
        assert_eq!(back.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let v = parse_npy_f32(&npy_f32(&[1], &[7.0]), &Limits::default()).unwrap();
        assert_eq!(v.shape, vec![1]);
    }

    #[test]
    fn a_message_deflates_and_inflates() {
        let meta = proto::Metadata { run_id: 7, message_type: "train".into(), ttl: 60.0, ..Default::default() };
        let arrays = vec![
            ("w".to_string(), F32Array { shape: vec![2, 2], data: vec![0.0; 4] }),
            ("v".to_string(), F32Array { shape: vec![2, 2], data: vec![0.0; 4] }),
        ];
        let content = vec![
            ("arrays".to_string(), Record::Arrays(arrays.clone())),
            ("config".to_string(), Record::Config(vec![("clip-norm".into(), ConfigValue::Double(1.5))])),
        ];
        let d = deflate_message(&meta, &content);
        // Identical arrays are one object, listed once.
        assert_eq!(d.objects.len(), 6);
        let objects: HashMap<String, Vec<u8>> = d.objects.iter().map(|o| (o.id.clone(), o.content.clone())).collect();
        let (m, back) = inflate_content(d.message_id(), &objects, &Limits::default()).unwrap();
        assert_eq!(m.run_id, 7);
        assert_eq!(back, content);
    }

    /// A train message whose ArrayRecord names one Array object `copies`
    /// times under different names: small on the wire, `copies` times the
    /// array once expanded.
    fn amplified(elements: usize, copies: usize) -> (String, HashMap<String, Vec<u8>>) {
        let meta = proto::Metadata { run_id: 7, message_type: "train".into(), ..Default::default() };
        let one = vec![("w".to_string(), F32Array { shape: vec![elements], data: vec![0.5; elements] })];
        let d = deflate_message(&meta, &[("arrays".to_string(), Record::Arrays(one))]);
        let mut objects: HashMap<String, Vec<u8>> =
            d.objects.iter().map(|o| (o.id.clone(), o.content.clone())).collect();
        let array = d.objects.iter().find(|o| parse(&o.content).unwrap().kind == "Array").unwrap().id.clone();
        let refs: Vec<(String, String)> = (0..copies).map(|i| (format!("w{i}"), array.clone())).collect();
        let record = Object::new("ArrayRecord", std::slice::from_ref(&array), &json_refs(&refs));
        let dict = Object::new(
            "RecordDict",
            std::slice::from_ref(&record.id),
            &json_refs(&[("arrays".to_string(), record.id.clone())]),
        );
        let body = proto::ProtoMessage { metadata: Some(meta), content: None, error: None }.encode_to_vec();
        let message = Object::new("Message", std::slice::from_ref(&dict.id), &body);
        let id = message.id.clone();
        for o in [record, dict, message] {
            objects.insert(o.id, o.content);
        }
        (id, objects)
    }

    #[test]
    fn one_array_named_many_times_is_refused_before_it_is_expanded() {
        // 100 names for one 4 MB array: 400 MB once expanded, 4 MB pulled.
        let (id, objects) = amplified(1 << 20, 100);
        let pulled: usize = objects.values().map(Vec::len).sum();
        assert!(pulled < 5 << 20, "{pulled}");
        let err = inflate_content(&id, &objects, &Limits::default()).unwrap_err();
        assert!(matches!(&err, FleetError::TooLarge(why) if why.contains("expand")), "{err:?}");

        // Named a few times within the bound, it inflates as before.
        let (id, objects) = amplified(16, 3);
        let (_, content) = inflate_content(&id, &objects, &Limits::default()).unwrap();
        let Record::Arrays(arrays) = &content[0].1 else { panic!() };
        assert_eq!(arrays.len(), 3);

        // With the model's parameters expected, the names must be theirs.
        let expected = vec![("w0".to_string(), vec![16]), ("w1".to_string(), vec![16]), ("w2".to_string(), vec![16])];
        let limits = Limits::default().for_parameters(expected.clone());
        assert_eq!(limits.max_message_elements, 48);
        inflate_content(&id, &objects, &limits).unwrap();
        let limits = Limits::default().for_parameters(expected[..2].to_vec());
        let err = inflate_content(&id, &objects, &limits).unwrap_err();
        assert!(matches!(&err, FleetError::Parameters(why) if why.contains("names")), "{err:?}");
        let mut other = expected.clone();
        other[1].1 = vec![4, 4];
        let err = inflate_content(&id, &objects, &Limits::default().for_parameters(other)).unwrap_err();
        assert!(matches!(&err, FleetError::Parameters(why) if why.contains("shape")), "{err:?}");
    }
}
