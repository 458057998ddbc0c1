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
