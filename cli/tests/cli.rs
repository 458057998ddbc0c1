//! The `hearth` binary end to end: simulate a few devices, then inspect and
//! export one; the bytes it wrote hold no history in clear.

use std::path::Path;
use std::process::Command;

fn hearth(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .env("HEARTH_PASSPHRASE", "correct horse")
        .output()
        .expect("hearth runs");
    assert!(out.status.success(), "hearth {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { all_files(&p, out) } else { out.push(p) }
    }
}

#[test]
fn simulate_inspect_export() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    let out = hearth(&["simulate", "--devices", "4", "--items", "300", "--data", d, "--seed", "9"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("devices           4"), "{text}");
    // It ends with one person's device: a home row of ten, each with a
    // reason, two of them explored; the store read as bytes gives nothing
    // away; nothing was sent.
    let person = &text[text.find("One person's device").expect("the person's section")..];
    let rows: Vec<&str> =
        person.lines().filter(|l| l.trim_start().split('.').next().is_some_and(|n| n.parse::<u32>().is_ok())).collect();
    assert_eq!(rows.len(), 10, "{person}");
    assert_eq!(rows.iter().filter(|l| l.ends_with("[explored]")).count(), 2, "{person}");
    assert!(person.contains("ranked by model v1") && person.contains("personalized"), "{person}");
    assert!(person.contains("Because you watched") || person.contains("Popular"), "{person}");
    let read = person.lines().find(|l| l.contains("read as bytes")).unwrap();
    assert!(read.contains(" 0 of the "), "{read}");
    assert!(person.contains("sent              nothing"), "{person}");

    // The public catalog: an object with `items`, each with id and title.
    let catalog: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.path().join("catalog.json")).unwrap()).unwrap();
    let items = catalog["items"].as_array().unwrap();
    assert_eq!(items.len(), 300);
    assert!(items.iter().all(|i| i["id"].is_string() && i["title"].is_string()));

    // Each device's directory: no item id, title or category in clear.
    let mut needles: Vec<String> = items.iter().map(|i| i["title"].as_str().unwrap().to_string()).collect();
    needles.push("item-0".into());
    needles.extend(["drama", "comedy", "documentary", "timestamp"].map(String::from));
    for n in 0..4 {
        let dir = data.path().join("devices").join(n.to_string());
        let mut files = Vec::new();
        all_files(&dir, &mut files);
        assert!(files.iter().any(|f| f.ends_with("hearth.db")));
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            for needle in &needles {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} in {}", f.display());
            }
        }
    }

    // Inspect and export open the store with the passphrase.
    let dev = data.path().join("devices/1");
    let text = String::from_utf8(hearth(&["inspect", dev.to_str().unwrap()]).stdout).unwrap();
    assert!(text.contains("integrity         ok"), "{text}");
    let out_file = data.path().join("export.json");
    hearth(&["export", dev.to_str().unwrap(), "--out", out_file.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(doc["format"], "hearth.export");
    assert!(!doc["events"].as_array().unwrap().is_empty());
    assert_eq!(doc["catalog"].as_array().unwrap().len(), 300);

    // A wrong passphrase is refused with a clear message.
    let bad = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["inspect", dev.to_str().unwrap(), "--passphrase", "wrong"])
        .env_remove("HEARTH_PASSPHRASE")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("the key does not open this store"));
}

#[test]
fn simulate_ranks_and_runs_federated_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("ndcg.png");
    let json = dir.path().join("rounds.json");
    let out = hearth(&[
        "simulate",
        "--devices",
        "6",
        "--items",
        "300",
        "--seed",
        "3",
        "--rounds",
        "2",
        "--clip",
        "0.05",
        "--noise-multiplier",
        "0,0.5",
        "--sample-rate",
        "1",
        "--chart",
        chart.to_str().unwrap(),
        "--reference",
        "central=0.3",
        "--json",
        json.to_str().unwrap(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("model (built-in)") && text.contains("popularity"), "{text}");
    // Two runs (no noise, z = 0.5), each a header, round 0 and rounds 1 and 2.
    let headers: Vec<usize> =
        text.lines().enumerate().filter(|(_, l)| l.contains("round  participants")).map(|(i, _)| i).collect();
    assert_eq!(headers.len(), 2, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    for (run, &h) in headers.iter().enumerate() {
        for line in &lines[h + 2..h + 4] {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let participants: usize = cols[1].parse().unwrap();
            assert_eq!(participants, 6, "{line}");
            let norm: f64 = cols[2].parse().unwrap();
            assert!(norm > 0.0, "{line}");
            let ndcg: f64 = cols[3].parse().unwrap();
            assert!((0.0..=1.0).contains(&ndcg), "{line}");
            if run == 0 {
                assert_eq!(cols[5], "inf", "no noise, no bound: {line}");
            } else {
                let epsilon: f64 = cols[5].parse().unwrap();
                assert!(epsilon > 0.0 && epsilon.is_finite(), "{line}");
            }
        }
    }
    // What left the person's device: one line per run, the update's norms
    // within C, the noisy run's epsilon bounded.
    let sent: Vec<&str> = text.lines().filter(|l| l.contains("sent (in process)")).collect();
    assert_eq!(sent.len(), 2, "{text}");
    assert!(sent[0].contains("2 of its rounds") && sent[0].contains("unbounded"), "{}", sent[0]);
    let norms = sent[1].split("norms ").nth(1).unwrap().split(';').next().unwrap();
    assert!(norms.split_whitespace().all(|n| n.parse::<f64>().unwrap() <= 0.05 + 1e-6), "{}", sent[1]);
    assert!(sent[1].contains("epsilon ") && !sent[1].contains("unbounded"), "{}", sent[1]);
    let png = std::fs::read(&chart).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(record["runs"].as_array().unwrap().len(), 2);
    assert_eq!(record["runs"][1]["noise_multiplier"], 0.5);
    // std = z * C / n = 0.5 * 0.05 / 6.
    let std = record["runs"][1]["rounds"][0]["noise_std"].as_f64().unwrap();
    assert!((std - 0.5 * 0.05 / 6.0).abs() < 1e-12, "{std}");

    // `hearth chart` draws the same record (twice over: two records merge).
    let merged = dir.path().join("merged.png");
    let (j, m) = (json.to_str().unwrap(), merged.to_str().unwrap());
    hearth(&["chart", "--json", j, "--json", j, "--reference", "central=0.3", "--out", m]);
    assert_eq!(&std::fs::read(&merged).unwrap()[..4], b"\x89PNG");
}

#[test]
fn simulate_starts_from_a_given_model_package() {
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/ranker-v1");
    let args = ["simulate", "--devices", "3", "--items", "200", "--seed", "5", "--rounds", "1", "--clip", "0.05"];
    let builtin = String::from_utf8(hearth(&args).stdout).unwrap();
    let mut with = args.to_vec();
    with.extend(["--initial-model", package.to_str().unwrap()]);
    let given = String::from_utf8(hearth(&with).stdout).unwrap();
    // The shipped package re-signed by the coordinator ranks as the built-in one.
    let row = |text: &str, label: &str| -> String {
        let line = text.lines().find(|l| l.contains(label)).unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().rev().take(2).collect::<Vec<_>>().join(" ")
    };
    assert_eq!(row(&builtin, "model (built-in)"), row(&given, "model (initial)"), "{given}");
}

#[test]
fn model_keys_sign_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pk8");
    let public = String::from_utf8(hearth(&["model", "keygen", "--out", key.to_str().unwrap()]).stdout).unwrap();
    let public = public.trim();
    assert_eq!(public.len(), 64);
    // A copy of the built-in package, re-signed with the new key.
    let package = dir.path().join("pkg");
    std::fs::create_dir(&package).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/ranker-v1");
    for f in ["manifest.json", "inference.onnx", "train_step.onnx", "weights.bin"] {
        std::fs::copy(src.join(f), package.join(f)).unwrap();
    }
    let signed =
        String::from_utf8(hearth(&["model", "sign", "--key", key.to_str().unwrap(), package.to_str().unwrap()]).stdout)
            .unwrap();
    assert!(signed.contains(public));
    assert_eq!(std::fs::read(package.join("manifest.sig")).unwrap().len(), 64);

    // A two-user evaluation through the on-device path with that package.
    let item = |id: &str, cat: &str| serde_json::json!({"id": id, "title": id, "categories": [cat], "popularity": 1.0});
    let catalog: Vec<serde_json::Value> =
        (0..30).map(|i| item(&format!("i{i}"), if i % 2 == 0 { "a" } else { "b" })).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let ev = |id: &str, t: i64| serde_json::json!({"item_id": id, "kind": "play", "timestamp_ms": t, "context": {"device": "phone", "local_hour": 20}});
    let input = serde_json::json!({
        "catalog": catalog,
        "users": [
            {"events": [ev("i0", now - 5000), ev("i2", now - 4000)], "held_out": "i4"},
            {"events": [ev("i1", now - 5000)], "held_out": "i3", "context": {"device": "tv", "local_hour": 9}},
        ],
    });
    let input_path = dir.path().join("input.json");
    std::fs::write(&input_path, input.to_string()).unwrap();
    let args = [
        "evaluate",
        "--input",
        input_path.to_str().unwrap(),
        "--model",
        package.to_str().unwrap(),
        "--trust-key",
        public,
    ];
    let metrics: serde_json::Value = serde_json::from_slice(&hearth(&args).stdout).unwrap();
    assert_eq!(metrics["users"], 2);
    assert_eq!(metrics["fallback_rows"], 0);
    assert!((0.0..=1.0).contains(&metrics["ndcg_at_10"].as_f64().unwrap()));
    // Without trusting the key the package is refused, and the run fails.
    let refused = Command::new(env!("CARGO_BIN_EXE_hearth")).args(&args[..5]).output().unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("BadSignature"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn a_damaged_store_fails_inspect_and_export_and_a_closed_pipe_is_no_panic() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    hearth(&["simulate", "--devices", "2", "--items", "1500", "--data", d, "--seed", "3"]);
    let dev = data.path().join("devices/0");
    let dev = dev.to_str().unwrap();

    // `hearth export | head`, `hearth inspect | head`: the reader is gone
    // before the first write; the command ends quietly.
    for args in [["export", dev], ["inspect", dev]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(args)
            .env("HEARTH_PASSPHRASE", "correct horse")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
    }

    // A page of the catalog damaged: inspect shows the failed check and
    // exits non-zero; export refuses to write a partial document.
    hearth_core::testing::damage_index_leaves(&Path::new(dev).join(hearth_core::DB_FILE), 10).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(args)
            .env("HEARTH_PASSPHRASE", "correct horse")
            .output()
            .unwrap()
    };
    let out = run(&["inspect", dev]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("integrity") && !text.contains("integrity         ok"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("integrity check"));
    let file = data.path().join("export.json");
    let out = run(&["export", dev, "--out", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the store is corrupt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file.exists(), "no partial export written");
}

/// A two-arm experiment (model against the fallback) over 20 seeds: the
/// arms split the devices, and the noisy estimates' 95% intervals cover the
/// devices' own NDCG@10 about as often as they should (at least 32 of 40:
/// below that happens by chance once in about 10^4 runs).
#[test]
fn simulate_estimates_a_two_arm_experiment_within_its_intervals() {
    let out = hearth(&[
        "simulate",
        "--devices",
        "120",
        "--items",
        "300",
        "--seed",
        "5",
        "--experiment-seeds",
        "20",
        "--experiment-noise",
        "1",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() >= 7 && (w[1] == "model" || w[1] == "fallback") && w[0].parse::<u32>().is_ok())
        .collect();
    assert_eq!(rows.len(), 40, "{text}");
    for seed in rows.chunks(2) {
        let devices: usize = seed.iter().map(|w| w[2].parse::<usize>().unwrap()).sum();
        assert_eq!(devices, 120, "every device is in one arm: {seed:?}");
        assert!(seed.iter().all(|w| w[2].parse::<usize>().unwrap() > 30), "arms of about half: {seed:?}");
    }
    let line = text.lines().find(|l| l.contains("intervals covering the true value")).expect("summary line");
    let covered: usize = line.split_whitespace().rev().nth(2).unwrap().parse().unwrap();
    assert!(covered >= 32, "{line}");
    assert!(text.contains("epsilon"), "{text}");
}

/// The release gate after federated rounds, from a weak starting model (the
/// built-in one's weights scaled by 0.1, about as good as the fallback):
/// training without noise improves on it and the gate publishes the
/// result; training under noise that wrecks the model (z = 20) ends below
/// the fallback, and the gate keeps the published model. The gate's own
/// sums are noised at z = 1 in both.
#[test]
fn the_gate_publishes_what_training_improved_and_keeps_what_noise_made_worse() {
    let dir = tempfile::tempdir().unwrap();
    let weak = dir.path().join("weak");
    std::fs::create_dir(&weak).unwrap();
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/ranker-v1");
    for entry in std::fs::read_dir(&builtin).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if path.file_name().unwrap() == "weights.bin" {
            for w in bytes.chunks_exact_mut(4) {
                let x = f32::from_le_bytes([w[0], w[1], w[2], w[3]]) * 0.1;
                w.copy_from_slice(&x.to_le_bytes());
            }
        }
        std::fs::write(weak.join(path.file_name().unwrap()), bytes).unwrap();
    }
    let json = dir.path().join("gate.json");
    let recipe = "simulate --devices 120 --items 300 --seed 5 --rounds 10 --clip 0.1 --lr 0.3 --negatives 32 \
                  --server-opt adam --server-lr 0.1 --sample-rate 1 --noise-multiplier 0,20 --gate-noise 1";
    let mut args: Vec<&str> = recipe.split_whitespace().collect();
    args.extend(["--initial-model", weak.to_str().unwrap(), "--json", json.to_str().unwrap()]);
    let out = hearth(&args);
    let text = String::from_utf8(out.stdout).unwrap();
    let decisions: Vec<&str> = text.lines().filter(|l| l.contains("decision:")).collect();
    assert_eq!(decisions.len(), 2, "{text}");
    assert!(decisions[0].contains("publish the candidate"), "{text}");
    assert!(decisions[1].contains("keep the published model"), "{text}");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let gate = |run: usize| record["runs"][run]["gate"].clone();
    let truth = |run: usize, i: usize| gate(run)["true_ndcg_at_10"][i].as_f64().unwrap();
    assert_eq!(gate(0)["publish"], true);
    assert_eq!(gate(0)["devices"], 120, "every device has a held-out item");
    // The devices' own values agree: clean training beat both...
    assert!(truth(0, 0) > truth(0, 1) + 0.02 && truth(0, 0) > truth(0, 2) + 0.02, "{}", gate(0));
    // ...and the noisy model is below the fallback, which the gate saw.
    assert_eq!(gate(1)["publish"], false);
    assert!(truth(1, 0) < truth(1, 2), "{}", gate(1));
    assert!(gate(1)["against_fallback"]["low"].as_f64().unwrap() < 0.0, "{}", gate(1));
    let epsilon = gate(0)["epsilon"].as_f64().unwrap();
    assert!(epsilon > 0.0 && epsilon.is_finite());
}
