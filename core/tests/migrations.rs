//! Every older schema version, kept as an SQL fixture, upgrades to the
//! current one with its data intact.
//!
//! Fixtures live in `tests/fixtures/schema-vN.sql`, sealed under `KEY_A`.
//! They were written once by `write_fixture_v1` (ignored; run it only to
//! re-create a lost fixture with the code of that version).

mod common;

use std::path::Path;

use common::*;
use hearth_core::*;
use rusqlite::Connection;

fn fixture(version: u32) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/schema-v{version}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(dir: &Path, sql: &str) {
    let c = Connection::open(dir.join(DB_FILE)).unwrap();
    c.execute_batch(sql).unwrap();
}

#[test]
fn every_old_schema_upgrades_with_its_data() {
    // v1: meta, events, state; no catalog cache.
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), &fixture(1));
    let v: u32 =
        Connection::open(dir.path().join(DB_FILE)).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 1);

    let h = open(dir.path(), KEY_A).unwrap();
    assert_eq!(h.event_count().unwrap(), 40);
    let recent = h.recent_events(2).unwrap();
    assert_eq!(item_ids(&recent), vec!["fixture-39", "fixture-38"]);
    assert!(h.settings().unwrap().federated_opt_in);
    // The profile was rebuilt in the new layout.
    assert_eq!(h.profile().unwrap().event_count, 40);
    assert_eq!(h.profile().unwrap().items_seen, 40);
    // What v2 added works.
    h.upsert_catalog(vec![item("fixture-1", "One", &["drama"])]).unwrap();
    assert_eq!(h.catalog_item("fixture-1".into()).unwrap().unwrap().title, "One");
    assert!(h.profile().unwrap().top_categories.iter().any(|c| c.category == "drama"));
    drop(h);
    let v: u32 =
        Connection::open(dir.path().join(DB_FILE)).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn the_v1_fixture_has_the_v1_shape() {
    let sql = fixture(1);
    for stmt in hearth_core::testing::SCHEMA_V1_SQL.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        assert!(sql.contains(stmt), "fixture lacks: {stmt}");
    }
    assert!(!sql.contains("catalog"));
}

/// Writes `tests/fixtures/schema-v1.sql`: a store as v1 left it.
#[test]
#[ignore]
fn write_fixture_v1() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    let events: Vec<Event> = (0..40).map(|i| event(&format!("fixture-{i}"), EventKind::Play, T0 + i * 1000)).collect();
    h.record_batch(events).unwrap();
    h.set_federated_opt_in(true).unwrap();
    drop(h);
    let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
    c.execute_batch("DROP TABLE catalog; PRAGMA user_version = 1;").unwrap();
    let mut sql = String::from("-- Hearth store, schema v1, sealed under the test key KEY_A.\n");
    sql.push_str(hearth_core::testing::SCHEMA_V1_SQL.trim());
    sql.push('\n');
    for (table, cols) in [("meta", "name, value"), ("events", "id, sealed"), ("state", "name, sealed")] {
        let mut stmt = c.prepare(&format!("SELECT {cols} FROM {table} ORDER BY 1")).unwrap();
        let rows = stmt
            .query_map([], |r| {
                let key = match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                    rusqlite::types::ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t)),
                    other => panic!("{other:?}"),
                };
                let blob: Vec<u8> = r.get(1)?;
                Ok((key, blob))
            })
            .unwrap();
        for row in rows {
            let (key, blob) = row.unwrap();
            let hex: String = blob.iter().map(|b| format!("{b:02X}")).collect();
            sql.push_str(&format!("INSERT INTO {table} ({cols}) VALUES ({key}, X'{hex}');\n"));
        }
    }
    sql.push_str("PRAGMA user_version = 1;\n");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema-v1.sql");
    std::fs::write(out, sql).unwrap();
}
