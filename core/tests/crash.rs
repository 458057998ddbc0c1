//! Crash tests: a child process works on a store and is killed with SIGKILL
//! at random moments; the parent reopens the store and checks what survived.
//!
//! `harness = false`: this binary is both the parent (no arguments) and the
//! child (`child-record DIR` / `child-rekey DIR` / `child-sync DIR BACKEND K`).

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::sync_backend::{DirBackend, pair};
use common::*;
use hearth_core::*;
use rand::{Rng, SeedableRng};

const RECORD_KILLS: usize = 50;
const REKEY_KILLS: usize = 12;
const REKEY_EVENTS: i64 = 20_000;
const SYNC_KILLS: usize = 50;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("child-record") => child_record(Path::new(&args[2])),
        Some("child-rekey") => child_rekey(Path::new(&args[2])),
        Some("child-sync") => child_sync(Path::new(&args[2]), Path::new(&args[3]), args[4].parse().unwrap()),
        _ => parent(&args),
    }
}

fn parent(args: &[String]) {
    // Honour a name filter the way libtest does, so `cargo test NAME` works.
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let tests: [(&str, fn()); 3] = [
        ("record_survives_sigkill", record_survives_sigkill),
        ("rekey_survives_sigkill", rekey_survives_sigkill),
        ("sync_survives_sigkill", sync_survives_sigkill),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        match std::panic::catch_unwind(test) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1}s)", started.elapsed().as_secs_f64());
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    println!("crash: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// This binary as a child process. Under user-mode emulation (the ARM lane)
/// the kernel cannot exec an ARM binary itself, so `HEARTH_TEST_RUNNER`
/// names the emulator to put in front.
fn spawn(mode: &str, dir: &Path) -> Child {
    spawn_with(mode, &[dir.to_str().unwrap()])
}

fn spawn_with(mode: &str, args: &[&str]) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match std::env::var("HEARTH_TEST_RUNNER").ok().filter(|r| !r.trim().is_empty()) {
        Some(runner) => {
            let mut parts = runner.split_whitespace();
            let mut c = Command::new(parts.next().unwrap());
            c.args(parts).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.arg(mode).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap()
}

/// Forwards the child's stdout lines to a channel.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Records events one by one, forever, printing each sequence number after
/// `record` has returned.
fn child_record(dir: &Path) {
    let h = open(dir, KEY_A).unwrap();
    let start = h.event_count().unwrap() as i64;
    let mut out = std::io::stdout().lock();
    for seq in start.. {
        let e = event(&format!("crash-{seq}"), EventKind::Play, T0 + seq);
        if seq % 7 == 0 {
            h.record_batch(vec![e.clone(), e]).unwrap();
        } else {
            h.record(e).unwrap();
        }
        writeln!(out, "{seq}").unwrap();
        out.flush().unwrap();
    }
}

fn record_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut acknowledged: HashSet<i64> = HashSet::new();
    for round in 0..RECORD_KILLS {
        let mut child = spawn("child-record", dir.path());
        let rx = lines(&mut child);
        // Wait for the first acknowledgement, then kill at a random moment.
        let first = rx.recv_timeout(Duration::from_secs(30)).expect("child made no progress");
        acknowledged.insert(first.parse().unwrap());
        std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            acknowledged.insert(line.parse().unwrap());
        }

        let h = open(dir.path(), KEY_A).unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        assert_eq!(h.integrity_check().unwrap(), "ok", "round {round}");
        let doc: ExportDocument = serde_json::from_str(&h.export_json().unwrap()).unwrap();
        let present: HashSet<i64> =
            doc.events.iter().map(|e| e.event.item_id["crash-".len()..].parse().unwrap()).collect();
        let missing: Vec<_> = acknowledged.iter().filter(|s| !present.contains(s)).collect();
        assert!(missing.is_empty(), "round {round}: acknowledged events lost: {missing:?}");
        // The profile caught up with everything stored.
        assert_eq!(h.profile().unwrap().event_count, doc.events.len() as u64, "round {round}");
    }
    assert!(acknowledged.len() > RECORD_KILLS, "the children recorded too little to mean anything");
}

/// Opens the store under key A and re-keys it to key B.
fn child_rekey(dir: &Path) {
    let h = open(dir, KEY_A).unwrap();
    println!("begin");
    std::io::stdout().flush().unwrap();
    h.rekey(keys(KEY_B)).unwrap();
    println!("done");
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn rekey_in_progress(dir: &Path) -> bool {
    let c = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    c.query_row("SELECT count(*) FROM meta WHERE name = 'rekey_to'", [], |r| r.get::<_, i64>(0)).unwrap() > 0
}

fn rekey_survives_sigkill() {
    // A store with enough rows that a rekey takes a while.
    let template = tempfile::tempdir().unwrap();
    {
        let h = open(template.path(), KEY_A).unwrap();
        h.upsert_catalog((0..500).map(|i| item(&format!("k{i}"), "title", &["cat"])).collect()).unwrap();
        let events: Vec<Event> =
            (0..REKEY_EVENTS).map(|i| event(&format!("k{}", i % 500), EventKind::Play, T0 + i)).collect();
        h.record_batch(events).unwrap();
    }
    // How long an uninterrupted rekey takes, from the child's "begin".
    let full = {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let mut child = spawn("child-rekey", dir.path());
        let rx = lines(&mut child);
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), "begin");
        let t = Instant::now();
        assert_eq!(rx.recv_timeout(Duration::from_secs(120)).unwrap(), "done");
        let full = t.elapsed();
        assert!(child.wait().unwrap().success());
        full
    };

    let (mut under_old, mut under_new, mut interrupted) = (0, 0, 0);
    for k in 0..REKEY_KILLS {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let mut child = spawn("child-rekey", dir.path());
        let rx = lines(&mut child);
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), "begin");
        // Spread the kills over the rekey's duration.
        std::thread::sleep(full.mul_f64(k as f64 / REKEY_KILLS as f64));
        child.kill().unwrap();
        child.wait().unwrap();
        if rekey_in_progress(dir.path()) {
            interrupted += 1;
        }

        // It opens under one of the two keys with every event intact...
        let (h, new_key) = match open(dir.path(), KEY_A) {
            Ok(h) => {
                under_old += 1;
                (h, false)
            }
            Err(HearthError::WrongKey) => {
                under_new += 1;
                (open(dir.path(), KEY_B).expect("opens under the new key"), true)
            }
            Err(e) => panic!("kill {k}: {e}"),
        };
        assert_eq!(h.event_count().unwrap(), REKEY_EVENTS as u64, "kill {k}");
        assert_eq!(h.catalog_size().unwrap(), 500, "kill {k}");
        let doc: ExportDocument = serde_json::from_str(&h.export_json().unwrap()).unwrap();
        assert_eq!(doc.events.len(), REKEY_EVENTS as usize);
        // ...and the rekey completes when run again (opening under the new
        // key has already finished it).
        if !new_key {
            h.rekey(keys(KEY_B)).unwrap();
        }
        drop(h);
        assert!(!rekey_in_progress(dir.path()), "kill {k}: rekey left unfinished");
        assert_eq!(open(dir.path(), KEY_A).unwrap_err(), HearthError::WrongKey);
        let h = open(dir.path(), KEY_B).unwrap();
        assert_eq!(h.event_count().unwrap(), REKEY_EVENTS as u64);
        assert_eq!(h.integrity_check().unwrap(), "ok");
    }
    println!(
        "  rekey {:.0} ms uninterrupted; {REKEY_KILLS} kills: {under_old} reopened under the old key, {under_new} under the new, {interrupted} caught mid-rekey",
        full.as_secs_f64() * 1000.0
    );
    assert!(interrupted > 0, "no kill landed in the middle of a rekey");
}

/// The TV of a synced pair: syncs, then records a batch of 20 events
/// (printing their first timestamp once stored) and syncs, forever.
/// Incarnation `k` stamps its events from T0 + k * 10^6 on.
fn child_sync(dir: &Path, backend: &Path, k: i64) {
    let tv = open(dir, KEY_B).unwrap();
    let backend = Arc::new(DirBackend(backend.to_path_buf()));
    let mut out = std::io::stdout().lock();
    for batch in 0.. {
        tv.sync(backend.clone(), SyncOptions::default()).unwrap();
        let first = T0 + 1_000_000 * k + 100 * batch;
        tv.record_batch((0..20).map(|i| event(&format!("tv-{k}-{batch}"), EventKind::Play, first + i)).collect())
            .unwrap();
        writeln!(out, "{first}").unwrap();
        out.flush().unwrap();
    }
}

/// The phone's history written as many records; the TV, syncing and
/// recording, killed at random moments 50 times: afterwards both hold
/// every event once, what the TV acknowledged included.
fn sync_survives_sigkill() {
    let (phone_dir, tv_dir, backend_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backend = Arc::new(DirBackend(backend_dir.path().to_path_buf()));
    let phone = open(phone_dir.path(), KEY_A).unwrap();
    phone.create_sync_group().unwrap();
    {
        let tv = open(tv_dir.path(), KEY_B).unwrap();
        pair(&phone, &tv);
    }
    for batch in 0..60 {
        let first = T0 - 10_000_000 + 100 * batch;
        phone
            .record_batch((0..40).map(|i| event(&format!("phone-{batch}"), EventKind::Play, first + i)).collect())
            .unwrap();
        assert!(phone.sync(backend.clone(), SyncOptions::default()).unwrap().complete);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut acknowledged: Vec<i64> = Vec::new();
    for k in 0..SYNC_KILLS {
        let mut child = spawn_with(
            "child-sync",
            &[tv_dir.path().to_str().unwrap(), backend_dir.path().to_str().unwrap(), &k.to_string()],
        );
        let rx = lines(&mut child);
        // Kill at a random moment: often while it applies the phone's
        // records, later while it sends its own.
        std::thread::sleep(Duration::from_micros(rng.random_range(0..150_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            acknowledged.push(line.parse().unwrap());
        }
    }
    let tv = open(tv_dir.path(), KEY_B).unwrap();
    assert_eq!(tv.integrity_check().unwrap(), "ok");
    for device in [&tv, &phone, &tv] {
        let report = device.sync(backend.clone(), SyncOptions::default()).unwrap();
        assert!(report.complete && report.refused.is_empty(), "{report:?}");
    }
    let held = |h: &Hearth| {
        let mut stamps: Vec<i64> = h.recent_events(u32::MAX).unwrap().iter().map(|e| e.timestamp_ms).collect();
        stamps.sort();
        stamps
    };
    let (on_tv, on_phone) = (held(&tv), held(&phone));
    let unique: HashSet<i64> = on_tv.iter().copied().collect();
    assert_eq!(unique.len(), on_tv.len(), "an event held twice");
    assert_eq!(on_tv, on_phone);
    for first in &acknowledged {
        assert!((0..20).all(|i| unique.contains(&(first + i))), "acknowledged events lost from {first}");
    }
    assert!(on_tv.len() >= 60 * 40, "the phone's history did not all arrive");
    println!(
        "  {SYNC_KILLS} kills during sync: {} events on both, {} batches acknowledged by the TV",
        on_tv.len(),
        acknowledged.len()
    );
}
