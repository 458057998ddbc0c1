//! Ranking through the public API: filtering, diversity, exploration, the
//! fallback, and every way a model package is refused.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use hearth_core::*;
#[cfg(feature = "onnx")]
use prost::Message;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

const DAY: i64 = 86_400_000;
const GENRES: [&str; 6] = ["drama", "comedy", "horror", "kids", "sport", "news"];

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn builtin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/ranker-v1")
}

fn builtin_package() -> ModelPackage {
    let read = |f: &str| std::fs::read(builtin_dir().join(f)).unwrap();
    ModelPackage {
        manifest: read("manifest.json"),
        signature: read("manifest.sig"),
        inference: read("inference.onnx"),
        train_step: read("train_step.onnx"),
        weights: read("weights.bin"),
        inference_nnef: read("inference.nnef.tar"),
        train_step_nnef: read("train_step.nnef.tar"),
    }
}

/// The inference graph this build of the library loads (ONNX or NNEF, by
/// the core's features).
fn loaded_inference(p: &mut ModelPackage) -> &mut Vec<u8> {
    if cfg!(not(feature = "onnx")) { &mut p.inference_nnef } else { &mut p.inference }
}

fn loaded_train_step(p: &mut ModelPackage) -> &mut Vec<u8> {
    if cfg!(not(feature = "onnx")) { &mut p.train_step_nnef } else { &mut p.train_step }
}

fn ctx() -> RankContext {
    RankContext { device: DeviceClass::Tv, local_hour: 21, locale: Some("en-GB".into()) }
}

fn options() -> RankOptions {
    RankOptions::new(ctx())
}

/// 120 items, 20 per genre; drama and comedy half in English, half French.
fn catalog() -> Vec<CatalogItem> {
    (0..120)
        .map(|i| {
            let genre = GENRES[i % GENRES.len()];
            let mut it = item(&format!("item-{i:03}"), &format!("Title {i}"), &[genre]);
            it.popularity = (i * 7 % 50) as f64;
            it.language = Some(if i % 4 < 2 { "en" } else { "fr" }.into());
            it.release_year = Some(1990 + (i % 37) as u16);
            it
        })
        .collect()
}

fn ids_of(genre: &str, catalog: &[CatalogItem]) -> Vec<String> {
    catalog.iter().filter(|i| i.categories[0] == genre).map(|i| i.id.clone()).collect()
}

/// A store whose user watches drama and horror, recently.
fn store_with_history(dir: &Path) -> (Arc<Hearth>, Vec<CatalogItem>) {
    let h = open(dir, KEY_A).unwrap();
    let cat = catalog();
    h.upsert_catalog(cat.clone()).unwrap();
    let mut events = Vec::new();
    let t = now() - 10 * DAY;
    for (n, id) in ids_of("drama", &cat).iter().take(8).chain(ids_of("horror", &cat).iter().take(6)).enumerate() {
        events.push(event(id, EventKind::Play, t + n as i64 * 3_600_000));
        events.push(event(id, EventKind::Complete, t + n as i64 * 3_600_000 + 1_000));
    }
    h.record_batch(events).unwrap();
    (h, cat)
}

fn category_of(cat: &[CatalogItem], id: &str) -> String {
    cat.iter().find(|i| i.id == id).map(|i| i.categories[0].clone()).unwrap_or_default()
}

fn longest_run(cats: &[String]) -> usize {
    let mut best = 0;
    let mut run = 0;
    for (i, c) in cats.iter().enumerate() {
        run = if i > 0 && cats[i - 1] == *c { run + 1 } else { 1 };
        best = best.max(run);
    }
    best
}

#[test]
fn the_builtin_model_ranks_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let (h, cat) = store_with_history(dir.path());
    let info = h.model_info().unwrap().expect("the built-in model verifies");
    assert!(info.builtin);
    assert_eq!((info.name.as_str(), info.version, info.digest.len()), ("hearth-ranker", 1, 64));
    let row = h.rank_catalog(RankOptions { limit: 30, ..options() }).unwrap();
    assert!(matches!(&row.ranker, Ranker::Model { version: 1, .. }), "{:?}", row.ranker);
    assert!(row.personalized);
    assert_eq!(row.items.len(), 30);
    // Completed items are excluded by default.
    assert_eq!(row.filtered, 14);
    for w in row.items.windows(2) {
        assert!(w[0].score >= w[1].score, "score order");
    }
    assert!(row.items.iter().all(|i| !i.reason_text.is_empty() && !i.explored));
    // The history changes the order: the same catalog for a user with no
    // history ranks differently.
    let cold_dir = tempfile::tempdir().unwrap();
    let cold = open(cold_dir.path(), KEY_A).unwrap();
    cold.upsert_catalog(cat.clone()).unwrap();
    let cold_row = cold.rank_catalog(RankOptions { limit: 30, ..options() }).unwrap();
    assert!(cold_row.personalized);
    let ids = |r: &RankResult| r.items.iter().map(|i| i.item_id.clone()).collect::<Vec<_>>();
    assert_ne!(ids(&row), ids(&cold_row));
    let because = row.items.iter().filter(|i| matches!(i.reason, Reason::BecauseYouWatched { .. })).count();
    assert!(because >= 5, "{:?}", row.items.iter().map(|i| &i.reason_text).collect::<Vec<_>>());
    for i in &row.items {
        if let Reason::BecauseYouWatched { item_id, title } = &i.reason {
            // The named item is one the user watched, in the same category.
            assert_eq!(category_of(&cat, item_id), category_of(&cat, &i.item_id));
            assert_eq!(i.reason_text, format!("Because you watched {title}"));
        }
    }
}

#[test]
fn blocked_categories_and_dislikes_never_appear() {
    let dir = tempfile::tempdir().unwrap();
    let (h, cat) = store_with_history(dir.path());
    let disliked = ids_of("drama", &cat)[12].clone();
    h.record(event(&disliked, EventKind::Dislike, now() - DAY)).unwrap();
    h.set_blocked_categories(vec!["Horror".into(), "kids".into()]).unwrap();
    let all: Vec<Candidate> = cat.iter().map(|i| Candidate::id(i.id.clone())).collect();
    for personalization in [true, false] {
        h.set_personalization(personalization).unwrap();
        for diversity in
            [Diversity::Off, Diversity::Mmr { lambda: 0.5 }, Diversity::CategoryCap { max_per_category: 2 }]
        {
            for seed in 0..5 {
                let o = RankOptions {
                    limit: 200,
                    exploration_share: 0.5,
                    seed: Some(seed),
                    exclude_completed: false,
                    diversity: diversity.clone(),
                    ..options()
                };
                let row = h.rank(all.clone(), o).unwrap();
                assert_eq!(row.items.len(), 120 - 40 - 1);
                for i in &row.items {
                    let c = category_of(&cat, &i.item_id);
                    assert!(c != "horror" && c != "kids", "blocked {c} ranked");
                    assert_ne!(i.item_id, disliked, "disliked item ranked");
                }
            }
        }
    }
    // No reason names a watched item of a blocked category (horror was
    // watched, then blocked).
    h.set_personalization(true).unwrap();
    let row = h.rank(all.clone(), RankOptions { limit: 200, ..options() }).unwrap();
    for i in &row.items {
        if let Reason::BecauseYouWatched { item_id, .. } = &i.reason {
            assert_ne!(category_of(&cat, item_id), "horror", "a reason names a blocked item");
        }
    }
    // Inline metadata is filtered the same way.
    let inline = Candidate { item_id: "new-1".into(), item: Some(item("new-1", "Fresh", &["HORROR"])) };
    let row = h.rank(vec![inline, Candidate::id("item-001")], options()).unwrap();
    assert_eq!(row.items.iter().map(|i| i.item_id.as_str()).collect::<Vec<_>>(), vec!["item-001"]);
    assert_eq!(row.filtered, 1);
}

#[test]
fn diversity_cuts_same_category_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (h, cat) = store_with_history(dir.path());
    let plain = h.rank_catalog(RankOptions { limit: 24, ..options() }).unwrap();
    let cats = |row: &RankResult| row.items.iter().map(|i| category_of(&cat, &i.item_id)).collect::<Vec<_>>();
    let plain_run = longest_run(&cats(&plain));
    assert!(plain_run >= 3, "the undiversified row should cluster: {:?}", cats(&plain));

    let mmr =
        h.rank_catalog(RankOptions { limit: 24, diversity: Diversity::Mmr { lambda: 0.3 }, ..options() }).unwrap();
    assert!(longest_run(&cats(&mmr)) < plain_run, "{:?}", cats(&mmr));
    assert_eq!(mmr.items.len(), 24);

    let capped = h
        .rank_catalog(RankOptions { limit: 12, diversity: Diversity::CategoryCap { max_per_category: 2 }, ..options() })
        .unwrap();
    let mut counts = std::collections::HashMap::new();
    for c in cats(&capped) {
        *counts.entry(c).or_insert(0) += 1;
    }
    assert!(counts.values().all(|&n| n <= 2), "{counts:?}");
    assert_eq!(capped.items.len(), 12);
}

#[test]
fn exploration_slots_are_marked_seeded_and_never_first() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = store_with_history(dir.path());
    let o = RankOptions { limit: 10, exploration_share: 0.3, seed: Some(7), ..options() };
    let a = h.rank_catalog(o.clone()).unwrap();
    let b = h.rank_catalog(o.clone()).unwrap();
    // Same seed, same row (the scores move in their last digits as the
    // profile's recency decays between the two calls).
    let row = |r: &RankResult| {
        r.items.iter().map(|i| (i.item_id.clone(), i.explored, i.reason_text.clone())).collect::<Vec<_>>()
    };
    assert_eq!(row(&a), row(&b), "same seed, same row");
    let explored: Vec<&RankedItem> = a.items.iter().filter(|i| i.explored).collect();
    assert_eq!(explored.len(), 3);
    assert!(!a.items[0].explored);
    assert!(explored.iter().all(|i| i.reason == Reason::SomethingDifferent));
    // Explored items come from below the cut of the plain row.
    let plain = h.rank_catalog(RankOptions { limit: 7, ..options() }).unwrap();
    for e in explored {
        assert!(!plain.items.iter().any(|p| p.item_id == e.item_id));
    }
    let other = h.rank_catalog(RankOptions { seed: Some(8), ..o }).unwrap();
    assert_ne!(a.items, other.items, "another seed, another draw");
}

#[test]
fn watched_and_completed_exclusions() {
    let dir = tempfile::tempdir().unwrap();
    let (h, cat) = store_with_history(dir.path());
    let started = ids_of("comedy", &cat)[0].clone();
    h.record(event(&started, EventKind::Play, now() - DAY)).unwrap();
    let all: Vec<Candidate> = cat.iter().map(|i| Candidate::id(i.id.clone())).collect();
    let limit = 200;
    let keep_all = h.rank(all.clone(), RankOptions { limit, exclude_completed: false, ..options() }).unwrap();
    assert_eq!(keep_all.items.len(), 120);
    let no_completed = h.rank(all.clone(), RankOptions { limit, ..options() }).unwrap();
    assert_eq!(no_completed.items.len(), 120 - 14);
    assert!(no_completed.items.iter().any(|i| i.item_id == started));
    let no_watched = h.rank(all, RankOptions { limit, exclude_watched: true, ..options() }).unwrap();
    assert_eq!(no_watched.items.len(), 120 - 15);
}

#[test]
fn the_fallback_answers_labelled_when_personalization_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let (h, cat) = store_with_history(dir.path());
    h.set_personalization(false).unwrap();
    let row = h.rank_catalog(RankOptions { limit: 20, ..options() }).unwrap();
    assert_eq!(row.ranker, Ranker::Fallback { why: FallbackReason::PersonalizationOff });
    assert!(!row.personalized);
    // Popularity by language: English items lead, no reason names history.
    for i in &row.items {
        assert!(matches!(i.reason, Reason::PopularInYourLanguage { .. } | Reason::Popular), "{:?}", i.reason);
    }
    let lang = |id: &str| cat.iter().find(|i| i.id == id).unwrap().language.clone().unwrap();
    assert!(row.items.iter().take(10).all(|i| lang(&i.item_id) == "en"));
    assert_eq!(row.items[0].reason, Reason::PopularInYourLanguage { language: "en".into() });
    assert_eq!(row.items[0].reason_text, "Popular in English");
}

#[test]
fn invalid_options_are_refused_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = store_with_history(dir.path());
    let field = |o: RankOptions| match h.rank_catalog(o) {
        Err(HearthError::InvalidInput { field, .. }) => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    assert_eq!(field(RankOptions { limit: 0, ..options() }), "limit");
    assert_eq!(field(RankOptions { limit: MAX_LIMIT + 1, ..options() }), "limit");
    assert_eq!(field(RankOptions { exploration_share: 0.9, ..options() }), "exploration_share");
    assert_eq!(field(RankOptions { exploration_share: f64::NAN, ..options() }), "exploration_share");
    assert_eq!(field(RankOptions { diversity: Diversity::Mmr { lambda: 1.5 }, ..options() }), "diversity.lambda");
    assert_eq!(
        field(RankOptions { diversity: Diversity::CategoryCap { max_per_category: 0 }, ..options() }),
        "diversity.max_per_category"
    );
    let mut o = options();
    o.context.local_hour = 24;
    assert_eq!(field(o), "context.local_hour");
    let empty = h.rank(vec![Candidate::id("")], options());
    assert!(matches!(empty, Err(HearthError::InvalidInput { .. })));
    let wrong_id = Candidate { item_id: "a".into(), item: Some(item("b", "B", &[])) };
    assert!(matches!(h.rank(vec![wrong_id], options()), Err(HearthError::InvalidInput { .. })));
    // An empty candidate list is an empty row, not an error.
    assert!(h.rank(vec![], options()).unwrap().items.is_empty());
}

// ---------------------------------------------------------------------------
// Model packages
// ---------------------------------------------------------------------------

struct Signer {
    pair: Ed25519KeyPair,
}

impl Signer {
    fn new() -> Signer {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Signer { pair: Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap() }
    }

    fn public_hex(&self) -> String {
        self.pair.public_key().as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sign(&self, mut p: ModelPackage) -> ModelPackage {
        p.signature = self.pair.sign(&p.manifest).as_ref().to_vec();
        p
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Edits the manifest JSON and keeps its file entries true to the files.
fn with_manifest(p: &ModelPackage, edit: impl FnOnce(&mut serde_json::Value)) -> ModelPackage {
    let mut m: serde_json::Value = serde_json::from_slice(&p.manifest).unwrap();
    for (key, bytes) in [
        ("inference", &p.inference),
        ("train_step", &p.train_step),
        ("weights", &p.weights),
        ("inference_nnef", &p.inference_nnef),
        ("train_step_nnef", &p.train_step_nnef),
    ] {
        m["files"][key]["bytes"] = bytes.len().into();
        m["files"][key]["sha256"] = sha256_hex(bytes).into();
    }
    edit(&mut m);
    ModelPackage { manifest: serde_json::to_vec(&m).unwrap(), ..p.clone() }
}

fn open_trusting(dir: &Path, signer: &Signer) -> Arc<Hearth> {
    let config =
        HearthConfig { trusted_model_keys: vec![signer.public_hex()], ..HearthConfig::new(dir.to_str().unwrap()) };
    open_with(config, KEY_A).unwrap()
}

fn rejection(r: Result<ModelInfo, HearthError>) -> ModelRejection {
    match r {
        Err(HearthError::ModelRejected { kind, reason }) => {
            assert!(!reason.is_empty());
            kind
        }
        other => panic!("expected ModelRejected, got {other:?}"),
    }
}

#[cfg(feature = "onnx")]
fn edit_inference_graph(p: &ModelPackage, edit: impl FnOnce(&mut tract_onnx::pb::ModelProto)) -> ModelPackage {
    let mut proto = tract_onnx::pb::ModelProto::decode(&p.inference[..]).unwrap();
    edit(&mut proto);
    ModelPackage { inference: proto.encode_to_vec(), ..p.clone() }
}

/// Rewrites `graph.nnef` in the NNEF inference archive, the other entries
/// kept.
#[cfg(not(feature = "onnx"))]
fn edit_nnef_text(p: &ModelPackage, edit: impl FnOnce(String) -> String) -> ModelPackage {
    let mut archive = tar::Archive::new(&p.inference_nnef[..]);
    let mut out = tar::Builder::new(Vec::new());
    let mut edit = Some(edit);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        if path == Path::new("graph.nnef") {
            let text = (edit.take().unwrap())(String::from_utf8(bytes).unwrap());
            bytes = text.into_bytes();
        }
        let mut header = entry.header().clone();
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        out.append(&header, &bytes[..]).unwrap();
    }
    assert!(edit.is_none(), "no graph.nnef in the archive");
    ModelPackage { inference_nnef: out.into_inner().unwrap(), ..p.clone() }
}

#[test]
fn every_malformed_package_is_rejected_with_its_own_error_and_ranking_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new();
    let h = open_trusting(dir.path(), &signer);
    h.upsert_catalog(catalog()).unwrap();
    let good = builtin_package();
    // A v2 of the same model, signed by the app's coordinator key.
    let v2 = signer.sign(with_manifest(&good, |m| m["version"] = 2.into()));
    let info = h.install_model(v2.clone()).unwrap();
    assert_eq!((info.version, info.builtin), (2, false));

    let mut cases: Vec<(&str, ModelPackage, ModelRejection)> = Vec::new();
    let mut bad_sig = v2.clone();
    bad_sig.signature[10] ^= 1;
    cases.push(("flipped signature bit", bad_sig, ModelRejection::BadSignature));
    cases.push(("signed by an unknown key", Signer::new().sign(v2.clone()), ModelRejection::BadSignature));
    cases.push((
        "short signature",
        ModelPackage { signature: vec![1; 12], ..v2.clone() },
        ModelRejection::BadSignature,
    ));
    let mut tampered_manifest = v2.clone();
    tampered_manifest.manifest[40] ^= 0x20;
    cases.push(("manifest changed after signing", tampered_manifest, ModelRejection::BadSignature));
    let mut truncated = v2.clone();
    truncated.weights.truncate(1000);
    cases.push(("truncated weights", truncated, ModelRejection::Truncated));
    let mut truncated_graph = v2.clone();
    loaded_inference(&mut truncated_graph).truncate(100);
    cases.push(("truncated graph", truncated_graph, ModelRejection::Truncated));
    let mut flipped = v2.clone();
    flipped.weights[5000] ^= 0x01;
    cases.push(("flipped weight byte", flipped, ModelRejection::DigestMismatch));
    let mut longer = v2.clone();
    loaded_train_step(&mut longer).push(0);
    cases.push(("extra bytes", longer, ModelRejection::DigestMismatch));
    cases.push((
        "manifest not JSON",
        signer.sign(ModelPackage { manifest: b"{nope".to_vec(), ..v2.clone() }),
        ModelRejection::Malformed,
    ));
    let mut garbage = v2.clone();
    *loaded_inference(&mut garbage) = vec![0xff; 2428];
    cases.push((
        "graph not ONNX (or not NNEF)",
        signer.sign(with_manifest(&garbage, |m| m["version"] = 3.into())),
        ModelRejection::Malformed,
    ));
    let nan = {
        let mut p = v2.clone();
        p.weights[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        signer.sign(with_manifest(&p, |m| m["version"] = 3.into()))
    };
    cases.push(("NaN weight", nan, ModelRejection::Malformed));
    cases.push((
        "another feature width",
        signer.sign(with_manifest(&v2, |m| m["features"]["user"]["width"] = 41.into())),
        ModelRejection::SchemaMismatch,
    ));
    cases.push((
        "another hash",
        signer.sign(with_manifest(&v2, |m| m["hashing"]["id_rows"] = 8192.into())),
        ModelRejection::SchemaMismatch,
    ));
    cases.push((
        "manifest declares another input shape",
        signer.sign(with_manifest(&v2, |m| m["graphs"]["inference"]["inputs"][0]["shape"] = serde_json::json!([41]))),
        ModelRejection::WrongShape,
    ));
    cases.push((
        "parameter shape disagrees with the layout",
        signer.sign(with_manifest(&v2, |m| m["parameters"][0]["shape"] = serde_json::json!([47, 63]))),
        ModelRejection::WrongShape,
    ));
    let table = |m: &mut serde_json::Value, name: &str| -> usize {
        m["parameters"].as_array().unwrap().iter().position(|p| p["name"] == name).unwrap()
    };
    cases.push((
        "an id table's gradient rows placed by an input that holds no ids",
        signer.sign(with_manifest(&v2, |m| {
            let i = table(m, "emb_item");
            m["parameters"][i]["gradient_rows_of"] = "labels".into();
        })),
        ModelRejection::WrongShape,
    ));
    cases.push((
        "a whole gradient declared where the graph gives rows",
        signer.sign(with_manifest(&v2, |m| {
            let i = table(m, "id_bias");
            m["parameters"][i]["gradient_rows_of"] = serde_json::Value::Null;
        })),
        ModelRejection::WrongShape,
    ));
    #[cfg(feature = "onnx")]
    {
        let reshaped = edit_inference_graph(&v2, |proto| {
            let input = &mut proto.graph.as_mut().unwrap().input[0];
            use tract_onnx::pb::tensor_shape_proto::dimension::Value;
            use tract_onnx::pb::type_proto::Value as T;
            if let Some(T::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() {
                t.shape.as_mut().unwrap().dim[0].value = Some(Value::DimValue(41));
            }
        });
        cases.push((
            "graph input of another shape",
            signer.sign(with_manifest(&reshaped, |_| ())),
            ModelRejection::WrongShape,
        ));
        let unknown = edit_inference_graph(&v2, |proto| {
            let node = proto.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type == "Relu").unwrap();
            node.op_type = "Elu".into();
        });
        cases.push(("unknown op", signer.sign(with_manifest(&unknown, |_| ())), ModelRejection::UnknownOp));
        let twice = edit_inference_graph(&v2, |proto| {
            let node = proto.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type == "Transpose").unwrap();
            node.attribute.iter_mut().find(|a| a.name == "perm").unwrap().ints = vec![1, 1];
        });
        cases.push((
            "transpose with an axis twice",
            signer.sign(with_manifest(&twice, |_| ())),
            ModelRejection::Malformed,
        ));
        let custom_domain = edit_inference_graph(&v2, |proto| {
            proto.graph.as_mut().unwrap().node[0].domain = "com.example".into();
        });
        cases.push((
            "op from another domain",
            signer.sign(with_manifest(&custom_domain, |_| ())),
            ModelRejection::UnknownOp,
        ));
    }
    // The same three edits of the NNEF graph: an input declared with
    // another shape, an op tract has but the known set has not, and ops from
    // another registry.
    #[cfg(not(feature = "onnx"))]
    {
        let reshaped =
            edit_nnef_text(&v2, |t| t.replacen("user = external(shape = [40]);", "user = external(shape = [41]);", 1));
        cases.push((
            "graph input of another shape",
            signer.sign(with_manifest(&reshaped, |_| ())),
            ModelRejection::WrongShape,
        ));
        let unknown = edit_nnef_text(&v2, |t| t.replacen("= max(item_a1, ", "= elu(item_a1, ", 1));
        cases.push(("unknown op", signer.sign(with_manifest(&unknown, |_| ())), ModelRejection::UnknownOp));
        let custom_domain = edit_nnef_text(&v2, |t| {
            t.replacen("extension tract_registry tract_core;", "extension tract_registry tract_onnx;", 1)
        });
        cases.push((
            "op from another domain",
            signer.sign(with_manifest(&custom_domain, |_| ())),
            ModelRejection::UnknownOp,
        ));
        // Found by the nnef_graph fuzz target, each stopping a device inside
        // tract: a transpose with an axis twice allocated without end and
        // aborted the process; an assignment to no name panicked; the
        // parser takes exponential time in runs of operators and in nesting
        // (68 `+` after a call, 40 nested brackets did not finish in
        // minutes), refused before it runs; a reduction over an axis beyond
        // the tensor's rank panicked (tract's panics are caught as the
        // package's fault).
        let line = "user_mm1_concat_einsum_k_40__47_1 = squeeze(user_mm1_concat_einsum_k_40__47, axes = [0]);";
        let reduce = "history_wsum = sum_reduce(history_weights, axes = [0]);";
        let edited = [
            (
                "transpose with an axis twice",
                edit_nnef_text(&v2, |t| {
                    t.replacen(
                        "transpose(item_b2_user, axes = [1, 2, 0])",
                        "transpose(item_b2_user, axes = [1, 1, 0])",
                        1,
                    )
                }),
            ),
            (
                "assignment to no name",
                edit_nnef_text(&v2, |t| {
                    t.replacen("\n  item_ids = tract_core_external(", "\n   = tract_core_external(", 1)
                }),
            ),
            (
                "68 operators in a row",
                edit_nnef_text(&v2, |t| t.replacen(line, &line.replace("]);", &format!("]){};", "+".repeat(68))), 1)),
            ),
            (
                "40 nested brackets",
                edit_nnef_text(&v2, |t| {
                    t.replacen(
                        line,
                        &line.replace("axes = [0]", &format!("axes = {}0{}", "[".repeat(40), "]".repeat(40))),
                        1,
                    )
                }),
            ),
            ("reduce over axis 5 of 1", edit_nnef_text(&v2, |t| t.replacen(reduce, &reduce.replace("[0]", "[5]"), 1))),
        ];
        for (what, package) in edited {
            assert_ne!(package.inference_nnef, v2.inference_nnef, "{what}");
            cases.push((what, signer.sign(with_manifest(&package, |_| ())), ModelRejection::Malformed));
        }
    }
    cases.push(("older version", good.clone(), ModelRejection::Stale));

    let mut kinds = std::collections::HashSet::new();
    for (what, package, expected) in cases {
        let got = rejection(h.install_model(package));
        assert_eq!(got, expected, "{what}");
        kinds.insert(got);
        // Ranking still uses v2.
        let row = h.rank_catalog(options()).unwrap();
        assert!(matches!(row.ranker, Ranker::Model { version: 2, .. }), "{what}: {:?}", row.ranker);
        assert_eq!(h.model_info().unwrap().unwrap().version, 2);
    }
    assert_eq!(kinds.len(), 8, "every rejection kind was exercised: {kinds:?}");

    // The installed package survives a reopen; a damaged copy on disk falls
    // back to the built-in model.
    h.close().unwrap();
    let h = open_trusting(dir.path(), &signer);
    assert_eq!(h.model_info().unwrap().unwrap().version, 2);
    h.close().unwrap();
    let weights = dir.path().join("model").join("weights.bin");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&weights, bytes).unwrap();
    let h = open_trusting(dir.path(), &signer);
    let info = h.model_info().unwrap().unwrap();
    assert!(info.builtin, "a damaged installed package gives way to the built-in one");
    assert!(matches!(h.rank_catalog(options()).unwrap().ranker, Ranker::Model { version: 1, .. }));
}

#[test]
fn install_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    let info = h.install_model_from_dir(builtin_dir().to_str().unwrap().into()).unwrap();
    assert!(!info.builtin);
    assert_eq!(h.model_info().unwrap().unwrap(), info);
    for f in PACKAGE_FILES {
        assert!(dir.path().join("model").join(f).exists(), "{f}");
    }
    let partial = tempfile::tempdir().unwrap();
    for f in &PACKAGE_FILES[..4] {
        std::fs::copy(builtin_dir().join(f), partial.path().join(f)).unwrap();
    }
    assert_eq!(rejection(h.install_model_from_dir(partial.path().to_str().unwrap().into())), ModelRejection::Truncated);
    // The release key is always trusted; a malformed app key is refused at open.
    let bad =
        HearthConfig { trusted_model_keys: vec!["abc".into()], ..HearthConfig::new(dir.path().to_str().unwrap()) };
    h.close().unwrap();
    assert!(
        matches!(open_with(bad, KEY_A), Err(HearthError::InvalidInput { field, .. }) if field == "trusted_model_keys")
    );
}

#[test]
fn the_model_directory_holds_nothing_personal() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = store_with_history(dir.path());
    h.install_model(builtin_package()).unwrap();
    h.rank_catalog(options()).unwrap();
    h.close().unwrap();
    let model_dir = dir.path().join("model");
    let files: Vec<String> =
        std::fs::read_dir(&model_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(files.len(), PACKAGE_FILES.len(), "{files:?}");
    for (name, bytes) in dir_bytes(&model_dir) {
        for needle in [b"item-0".as_slice(), b"Title ", b"drama", b"horror"] {
            assert!(!contains(&bytes, needle), "{} in {name}", String::from_utf8_lossy(needle));
        }
        let builtin = std::fs::read(builtin_dir().join(Path::new(&name).file_name().unwrap())).unwrap();
        assert!(bytes == builtin, "{name} is the package as shipped, byte for byte");
    }
}

#[test]
fn rank_is_shared_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = store_with_history(dir.path());
    let expected = h.rank_catalog(options()).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10 {
                    assert_eq!(h.rank_catalog(options()).unwrap(), expected);
                }
            });
        }
    });
}
