//! The on-disk store: one SQLite database in the data directory, every row of
//! which is a sealed record (see `crypto`). Nothing personal is in clear: not
//! an item id, a title, a category or a timestamp, in the main file, the WAL
//! or any journal. The only clear values are the `meta` rows: the schema's
//! own bookkeeping (salt, wrapped data keys, key epoch).
//!
//! Tables:
//! * `meta(name, value)`: `salt`, `epoch`, `data_key.<epoch>`, `rekey_to`.
//! * `events(id, sealed)`: the history, one sealed event per row.
//! * `catalog(lookup, sealed)`: the catalog cache; `lookup` is an HMAC of the
//!   item id under a key derived from the data key (a blind index).
//! * `state(name, sealed)`: `settings`, `profile` (the aggregates).
//! * `profile_items(lookup, sealed)`: the profile's per-item state, with a
//!   blind index of its own.
//! * `experiment_log(id, sealed)`: what experiments showed and what the user
//!   did with it, one sealed record per row, bounded (`crate::experiments`).

pub(crate) mod crypto;
pub(crate) mod history;
pub(crate) mod profile;
pub(crate) mod settings;

use std::path::{Path, PathBuf};

use log::{debug, info, warn};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::error::{Error, Result};
use crate::store::history::{CatalogItem, Event};
use crypto::{DataKey, KeyRing, RootKey, Table, Wrapper};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "hearth.db";
/// Files SQLite may keep beside the database.
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];
/// The schema version this library writes.
pub const SCHEMA_VERSION: u32 = 3;
/// The state record of the largest event id ever given (written when
/// events are deleted).
const EVENTS_HIGH: &str = "events_high";
/// Rows re-sealed per transaction during `rekey`.
const REKEY_BATCH: usize = 256;
const PAGE_SIZE: u64 = 4096;

/// How hard a commit works to survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, uniffi::Enum)]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: a committed event survives the app being
    /// killed; the last few may be lost if the device loses power.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is flushed to storage (slower).
    Full,
}

pub(crate) struct StoreOptions {
    pub durability: Durability,
    pub max_store_bytes: Option<u64>,
}

pub(crate) struct Store {
    conn: Connection,
    keys: KeyRing,
    data_keys: Vec<(u32, DataKey)>,
    next_event_id: i64,
}

/// All paths the store may have written in `dir`.
pub(crate) fn store_files(dir: &Path) -> Vec<PathBuf> {
    let db = dir.join(DB_FILE);
    let mut files = vec![db.clone()];
    for s in SIDE_FILES {
        let mut p = db.clone().into_os_string();
        p.push(s);
        files.push(PathBuf::from(p));
    }
    files
}

/// Overwrites the store's files with zeros, flushes, and removes them.
/// Encryption already makes the bytes useless without the key (and the data
/// keys are gone with the file); overwriting also removes them from the
/// directory's files.
pub(crate) fn shred_files(dir: &Path) -> Result<()> {
    use std::io::Write;
    for path in store_files(dir) {
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        {
            let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
            let zeros = vec![0u8; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            f.sync_all()?;
        }
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with the root key.
    /// A wrong key fails with `WrongKey` before anything is written.
    pub(crate) fn open(dir: &Path, root: &RootKey, opts: &StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        // SQLite reads an empty file as an empty database: a store truncated
        // to nothing (a restore or copy cut short) would otherwise open as a
        // new one without a word. What it held is gone either way; say so.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            warn!("{DB_FILE} was an empty file: opening it as a new, empty store (anything it held is gone)");
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn, opts)?;
        let mut store = Store { conn, keys: KeyRing::new(0, vec![]), data_keys: vec![], next_event_id: 1 };
        store.migrate(root)?;
        let (epoch, keys) = store.load_keys(root)?;
        store.set_keys(epoch, keys);
        let newest: i64 = store.conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
        let given = match store.get_state(EVENTS_HIGH)? {
            Some(bytes) => i64::from_le_bytes(bytes.try_into().map_err(|_| Error::Integrity { table: "state" })?),
            None => 0,
        };
        store.next_event_id = newest.max(given) + 1;
        if store.rekey_target()?.is_some() {
            info!("resuming an interrupted rekey");
            store.finish_rekey()?;
        }
        Ok(store)
    }

    /// Creates or upgrades the schema in one IMMEDIATE transaction.
    fn migrate(&mut self, root: &RootKey) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(Error::NewerSchema { found: version, supported: SCHEMA_VERSION });
        }
        if version == 0 {
            let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            if tables != 0 {
                return Err(Error::Corrupt("tables present but no schema version".into()));
            }
            schema::init(&tx)?;
            init_keys(&tx, root)?;
            info!("created store schema v{SCHEMA_VERSION}");
        } else if version < SCHEMA_VERSION {
            for from in version..SCHEMA_VERSION {
                schema::upgrade_from(&tx, from)?;
            }
            info!("upgraded store schema v{version} -> v{SCHEMA_VERSION}");
        }
        if version != SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn load_keys(&self, root: &RootKey) -> Result<(u32, Vec<(u32, DataKey)>)> {
        let salt: Vec<u8> = meta_get(&self.conn, "salt")?.ok_or_else(|| Error::Corrupt("no salt".into()))?;
        let epoch = meta_epoch(&self.conn)?;
        let wrapper = Wrapper::new(root, &salt);
        let mut stmt = self.conn.prepare("SELECT name, value FROM meta WHERE name LIKE 'data_key.%'")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        let mut keys = Vec::new();
        for row in rows {
            let (name, wrapped) = row?;
            let e: u32 = name["data_key.".len()..].parse().map_err(|_| Error::Corrupt("bad key name".into()))?;
            keys.push((e, wrapper.unwrap(e, &wrapped)?));
        }
        if !keys.iter().any(|(e, _)| *e == epoch) {
            return Err(Error::Corrupt("no data key for the current epoch".into()));
        }
        Ok((epoch, keys))
    }

    // ----- events -----

    /// Stores events in one transaction; returns the id of the first.
    pub(crate) fn insert_events(&mut self, events: &[Event]) -> Result<i64> {
        let first = self.next_event_id;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_events_tx(&tx, &self.keys, first, events)?;
        tx.commit()?;
        self.next_event_id = first + events.len() as i64;
        Ok(first)
    }

    pub(crate) fn event_count(&self) -> Result<u64> {
        Ok(self.conn.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// The newest `limit` events, newest first. A record that fails its
    /// integrity check fails the call.
    pub(crate) fn recent_events(&self, limit: u32) -> Result<Vec<(i64, Event)>> {
        let mut stmt = self.conn.prepare_cached("SELECT id, sealed FROM events ORDER BY id DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, sealed) = row?;
            out.push((id, self.open_event(id, &sealed)?));
        }
        Ok(out)
    }

    fn open_event(&self, id: i64, sealed: &[u8]) -> Result<Event> {
        let plain = self.keys.open(Table::Events, &id.to_le_bytes(), sealed)?;
        serde_json::from_slice(&plain).map_err(|_| Error::Integrity { table: "events" })
    }

    /// Visits every event with id > `after`, in id order. Records that fail
    /// their integrity check are passed to `f` as errors.
    pub(crate) fn scan_events(&self, after: i64, mut f: impl FnMut(i64, Result<Event>) -> Result<()>) -> Result<()> {
        let mut stmt = self.conn.prepare_cached("SELECT id, sealed FROM events WHERE id > ?1 ORDER BY id")?;
        let mut rows = stmt.query([after])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let sealed: Vec<u8> = row.get(1)?;
            f(id, self.open_event(id, &sealed))?;
        }
        Ok(())
    }

    /// Visits every event with id > `after`, in id order, as the JSON it
    /// was sealed from (an event imported by sync carries its origin
    /// there). Records that fail their integrity check are passed as errors.
    pub(crate) fn scan_event_json(
        &self,
        after: i64,
        mut f: impl FnMut(i64, Result<Vec<u8>>) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached("SELECT id, sealed FROM events WHERE id > ?1 ORDER BY id")?;
        let mut rows = stmt.query([after])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let sealed: Vec<u8> = row.get(1)?;
            f(id, self.keys.open(Table::Events, &id.to_le_bytes(), &sealed))?;
        }
        Ok(())
    }

    /// Stores events (each serializable as an `Event`, perhaps with more
    /// fields) and state records in one transaction; returns the id of the
    /// first event.
    pub(crate) fn insert_events_with_state<T: serde::Serialize>(
        &mut self,
        events: &[T],
        states: &[(&str, Vec<u8>)],
    ) -> Result<i64> {
        let first = self.next_event_id;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_events_tx(&tx, &self.keys, first, events)?;
        for (name, value) in states {
            put_state_tx(&tx, &self.keys, name, value)?;
        }
        tx.commit()?;
        self.next_event_id = first + events.len() as i64;
        Ok(first)
    }

    /// The largest event id stored (0 when none).
    pub(crate) fn last_event_id(&self) -> Result<i64> {
        Ok(self.conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Deletes events by id in one transaction. The caller truncates the WAL
    /// (`checkpoint`) once it has also rewritten what derives from them.
    pub(crate) fn delete_events(&mut self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM events WHERE id = ?1")?;
            for id in ids {
                stmt.execute([id])?;
            }
        }
        // Ids are never given twice, even once the newest events are gone
        // and the store reopens: sync numbers a device's events by id.
        put_state_tx(&tx, &self.keys, EVENTS_HIGH, &(self.next_event_id - 1).to_le_bytes())?;
        tx.commit()?;
        Ok(())
    }

    // ----- the experiment log: rows by id, like events -----

    /// Appends a sealed record to the experiment log and keeps the newest
    /// `keep` rows, in one transaction; returns the new row's id.
    pub(crate) fn append_log(&mut self, plain: &[u8], keep: u64) -> Result<i64> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM experiment_log", [], |r| r.get(0))?;
        let sealed = self.keys.seal(Table::ExperimentLog, &id.to_le_bytes(), plain)?;
        tx.prepare_cached("INSERT INTO experiment_log (id, sealed) VALUES (?1, ?2)")?.execute(params![id, sealed])?;
        tx.prepare_cached("DELETE FROM experiment_log WHERE id <= ?1")?.execute([id - keep as i64])?;
        tx.commit()?;
        Ok(id)
    }

    /// Visits the experiment log in id order (newest first with `newest_first`),
    /// each record opened; `f` returns false to stop. A record that fails its
    /// integrity check is passed as an error.
    pub(crate) fn scan_log(
        &self,
        newest_first: bool,
        mut f: impl FnMut(i64, Result<Vec<u8>>) -> Result<bool>,
    ) -> Result<()> {
        let order = if newest_first { "DESC" } else { "ASC" };
        let mut stmt =
            self.conn.prepare_cached(&format!("SELECT id, sealed FROM experiment_log ORDER BY id {order}"))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let sealed: Vec<u8> = row.get(1)?;
            if !f(id, self.keys.open(Table::ExperimentLog, &id.to_le_bytes(), &sealed))? {
                break;
            }
        }
        Ok(())
    }

    /// Deletes and rewrites experiment log rows in one transaction.
    pub(crate) fn edit_log(&mut self, delete: &[i64], rewrite: &[(i64, Vec<u8>)]) -> Result<()> {
        if delete.is_empty() && rewrite.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut del = tx.prepare_cached("DELETE FROM experiment_log WHERE id = ?1")?;
            for id in delete {
                del.execute([id])?;
            }
            let mut update = tx.prepare_cached("UPDATE experiment_log SET sealed = ?2 WHERE id = ?1")?;
            for (id, plain) in rewrite {
                update.execute(params![id, self.keys.seal(Table::ExperimentLog, &id.to_le_bytes(), plain)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    // ----- keyed tables: catalog, profile_items -----

    /// Adds or replaces catalog items.
    pub(crate) fn upsert_catalog(&mut self, items: &[CatalogItem]) -> Result<()> {
        let rows = items.iter().map(|i| Ok((i.id.clone(), serde_json::to_vec(i)?))).collect::<Result<Vec<_>>>()?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        upsert_keyed_tx(&tx, &self.keys, Table::Catalog, &rows)?;
        tx.commit()?;
        Ok(())
    }

    /// Every catalog item. Items that fail their integrity check are skipped
    /// (and logged).
    pub(crate) fn load_catalog(&self) -> Result<Vec<CatalogItem>> {
        self.load_keyed(Table::Catalog)
    }

    /// Every row of a keyed table, opened and parsed; bad rows are skipped.
    pub(crate) fn load_keyed<T: serde::de::DeserializeOwned>(&self, table: Table) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare(&format!("SELECT lookup, sealed FROM {}", table.name()))?;
        let mut rows = stmt.query([])?;
        let (mut out, mut bad) = (Vec::new(), 0);
        while let Some(row) = rows.next()? {
            let lookup: Vec<u8> = row.get(0)?;
            let sealed: Vec<u8> = row.get(1)?;
            match self.keys.open(table, &lookup, &sealed).and_then(|p| Ok(serde_json::from_slice(&p)?)) {
                Ok(v) => out.push(v),
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            warn!("{bad} rows of {} failed their integrity check and were skipped", table.name());
        }
        Ok(out)
    }

    /// Writes the profile: its aggregate record and the item rows that
    /// changed (`replace_all`: the item rows are exactly `items`), atomically.
    pub(crate) fn write_profile(
        &mut self,
        aggregate: &[u8],
        items: &[(String, Vec<u8>)],
        replace_all: bool,
    ) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if replace_all {
            tx.execute("DELETE FROM profile_items", [])?;
        }
        upsert_keyed_tx(&tx, &self.keys, Table::ProfileItems, items)?;
        put_state_tx(&tx, &self.keys, "profile", aggregate)?;
        tx.commit()?;
        Ok(())
    }

    // ----- state -----

    pub(crate) fn put_state(&mut self, name: &str, value: &[u8]) -> Result<()> {
        put_state_tx(&self.conn, &self.keys, name, value)
    }

    /// Writes several state records in one transaction.
    pub(crate) fn put_states(&mut self, states: &[(&str, Vec<u8>)]) -> Result<()> {
        self.write_states(states, &[])
    }

    /// Writes some state records and removes others, in one transaction.
    pub(crate) fn write_states(&mut self, put: &[(&str, Vec<u8>)], delete: &[&str]) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (name, value) in put {
            put_state_tx(&tx, &self.keys, name, value)?;
        }
        for name in delete {
            tx.execute("DELETE FROM state WHERE name = ?1", [name])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes state records (nothing for those there are not), in one
    /// transaction.
    pub(crate) fn delete_states(&mut self, names: &[&str]) -> Result<()> {
        self.write_states(&[], names)
    }

    pub(crate) fn get_state(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let sealed: Option<Vec<u8>> =
            self.conn.query_row("SELECT sealed FROM state WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        sealed.map(|s| self.keys.open(Table::State, name.as_bytes(), &s)).transpose()
    }

    /// A state record kept as JSON; one that opens but does not parse as
    /// `T` is an integrity failure.
    pub(crate) fn get_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.get_state(name)?
            .map(|bytes| serde_json::from_slice(&bytes).map_err(|_| Error::Integrity { table: "state" }))
            .transpose()
    }

    pub(crate) fn put_json<T: serde::Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        self.put_state(name, &serde_json::to_vec(value)?)
    }

    /// Moves the WAL's content into the database and truncates the WAL file.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let (busy, _, _): (i64, i64, i64) =
            self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        if busy != 0 {
            warn!("wal checkpoint could not complete (busy)");
        }
        Ok(())
    }

    /// The rows a table holds (readable or not).
    pub(crate) fn row_count(&self, table: Table) -> Result<u64> {
        Ok(self.conn.query_row(&format!("SELECT count(*) FROM {}", table.name()), [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// SQLite's `PRAGMA integrity_check`: "ok", or its first findings, one a line.
    pub(crate) fn integrity_check(&self) -> Result<String> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check(20)")?;
        let lines = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(lines.join("\n"))
    }

    // ----- rekey -----

    fn rekey_target(&self) -> Result<Option<u32>> {
        meta_get(&self.conn, "rekey_to")?.map(|v| epoch_from(&v)).transpose()
    }

    /// Step 1 of re-sealing everything under a new data key wrapped by `new_root`.
    ///
    /// Step 1 (one transaction) makes a new epoch and wraps every live data
    /// key under the new root key; from then on the store opens only under
    /// the new key, and can read records of both epochs. Step 2 re-seals the
    /// rows in small transactions. Step 3 drops the old data key. Killed at
    /// any point, the store opens under the old key (before step 1) or the new
    /// one (after), with every record readable, and opening it finishes the
    /// job.
    pub(crate) fn begin_rekey(&mut self, new_root: &RootKey) -> Result<()> {
        let salt: Vec<u8> = meta_get(&self.conn, "salt")?.ok_or_else(|| Error::Corrupt("no salt".into()))?;
        let wrapper = Wrapper::new(new_root, &salt);
        let target = match self.rekey_target()? {
            Some(t) => t,
            None => self.keys.current_epoch() + 1,
        };
        let mut live = self.data_keys.clone();
        if !live.iter().any(|(e, _)| *e == target) {
            live.push((target, DataKey::generate()?));
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (e, k) in &live {
            meta_put(&tx, &format!("data_key.{e}"), &wrapper.wrap(*e, k)?)?;
        }
        meta_put(&tx, "epoch", &target.to_le_bytes())?;
        meta_put(&tx, "rekey_to", &target.to_le_bytes())?;
        tx.commit()?;
        info!("rekey: epoch {target} begun");
        self.set_keys(target, live);
        Ok(())
    }

    fn set_keys(&mut self, current: u32, keys: Vec<(u32, DataKey)>) {
        self.keys = KeyRing::new(current, keys.clone());
        self.data_keys = keys;
    }

    /// Steps 2 and 3 of `rekey`: re-seal what is not yet under the current
    /// epoch, then forget the old data keys.
    pub(crate) fn finish_rekey(&mut self) -> Result<()> {
        let target = self.keys.current_epoch();
        let stale = |sealed: &[u8]| crypto::record_epoch(sealed) != Some(target);

        // Tables of rows by id, a batch per transaction.
        let mut resealed = 0usize;
        for table in [Table::Events, Table::ExperimentLog] {
            let mut after = 0i64;
            loop {
                let batch: Vec<(i64, Vec<u8>)> = {
                    let mut stmt = self.conn.prepare_cached(&format!(
                        "SELECT id, sealed FROM {} WHERE id > ?1 ORDER BY id LIMIT ?2",
                        table.name()
                    ))?;
                    let rows = stmt.query_map(params![after, REKEY_BATCH as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                let Some((last, _)) = batch.last() else { break };
                after = *last;
                let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut update =
                        tx.prepare_cached(&format!("UPDATE {} SET sealed = ?2 WHERE id = ?1", table.name()))?;
                    for (id, sealed) in batch.iter().filter(|(_, s)| stale(s)) {
                        let row = id.to_le_bytes();
                        let plain = self.keys.open(table, &row, sealed)?;
                        update.execute(params![id, self.keys.seal(table, &row, &plain)?])?;
                        resealed += 1;
                    }
                }
                tx.commit()?;
            }
        }

        // Keyed rows change their blind index with the epoch.
        for table in [Table::Catalog, Table::ProfileItems] {
            let rows: Vec<(Vec<u8>, Vec<u8>)> = {
                let mut stmt = self.conn.prepare(&format!("SELECT lookup, sealed FROM {}", table.name()))?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let stale_rows: Vec<_> = rows.into_iter().filter(|(_, s)| stale(s)).collect();
            for chunk in stale_rows.chunks(REKEY_BATCH) {
                let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let delete = format!("DELETE FROM {} WHERE lookup = ?1", table.name());
                let mut moved = Vec::with_capacity(chunk.len());
                for (lookup, sealed) in chunk {
                    let plain = self.keys.open(table, lookup, sealed)?;
                    let KeyedId { id } = serde_json::from_slice(&plain)?;
                    tx.execute(&delete, [lookup])?;
                    moved.push((id, plain));
                }
                upsert_keyed_tx(&tx, &self.keys, table, &moved)?;
                tx.commit()?;
                resealed += moved.len();
            }
        }

        // State rows, and the end of the rekey, in one transaction.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let states: Vec<(String, Vec<u8>)> = {
            let mut stmt = tx.prepare("SELECT name, sealed FROM state")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (name, sealed) in states.iter().filter(|(_, s)| stale(s)) {
            let plain = self.keys.open(Table::State, name.as_bytes(), sealed)?;
            put_state_tx(&tx, &self.keys, name, &plain)?;
            resealed += 1;
        }
        for (e, _) in self.data_keys.iter().filter(|(e, _)| *e != target) {
            tx.execute("DELETE FROM meta WHERE name = ?1", [format!("data_key.{e}")])?;
        }
        tx.execute("DELETE FROM meta WHERE name = 'rekey_to'", [])?;
        tx.commit()?;
        let current: Vec<_> = self.data_keys.iter().filter(|(e, _)| *e == target).cloned().collect();
        self.set_keys(target, current);
        self.checkpoint()?;
        info!("rekey: epoch {target} complete, {resealed} records re-sealed");
        Ok(())
    }
}

/// The SQLite settings every connection gets.
fn configure(conn: &Connection, opts: &StoreOptions) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Internal(format!("journal mode {mode} instead of wal")));
    }
    let sync = match opts.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cell_size_check", "ON")?;
    conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)?;
    if let Some(max) = opts.max_store_bytes {
        let pages = (max / PAGE_SIZE).max(16);
        let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get(0))?;
    }
    debug!("store configured: wal, synchronous={sync}, secure_delete");
    Ok(())
}

fn init_keys(tx: &Transaction, root: &RootKey) -> Result<()> {
    let salt = crypto::random_bytes(16)?;
    let wrapper = Wrapper::new(root, &salt);
    let dk = DataKey::generate()?;
    meta_put(tx, "salt", &salt)?;
    meta_put(tx, "epoch", &1u32.to_le_bytes())?;
    meta_put(tx, "data_key.1", &wrapper.wrap(1, &dk)?)?;
    Ok(())
}

fn insert_events_tx<T: serde::Serialize>(conn: &Connection, keys: &KeyRing, first: i64, events: &[T]) -> Result<()> {
    let mut stmt = conn.prepare_cached("INSERT INTO events (id, sealed) VALUES (?1, ?2)")?;
    for (i, ev) in events.iter().enumerate() {
        let id = first + i as i64;
        let sealed = keys.seal(Table::Events, &id.to_le_bytes(), &serde_json::to_vec(ev)?)?;
        stmt.execute(params![id, sealed])?;
    }
    Ok(())
}

fn upsert_keyed_tx(conn: &Connection, keys: &KeyRing, table: Table, rows: &[(String, Vec<u8>)]) -> Result<()> {
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO {} (lookup, sealed) VALUES (?1, ?2) ON CONFLICT(lookup) DO UPDATE SET sealed = excluded.sealed",
        table.name()
    ))?;
    for (id, plain) in rows {
        let lookup = keys.blind_index(table, id);
        stmt.execute(params![lookup, keys.seal(table, &lookup, plain)?])?;
    }
    Ok(())
}

/// The id inside a keyed table's record (catalog items and profile items
/// both carry one).
#[derive(serde::Deserialize)]
struct KeyedId {
    id: String,
}

fn put_state_tx(conn: &Connection, keys: &KeyRing, name: &str, value: &[u8]) -> Result<()> {
    let sealed = keys.seal(Table::State, name.as_bytes(), value)?;
    conn.prepare_cached(
        "INSERT INTO state (name, sealed) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed",
    )?
    .execute(params![name, sealed])?;
    Ok(())
}

fn meta_get(conn: &Connection, name: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get(0)).optional()?)
}

fn meta_put(conn: &Connection, name: &str, value: &[u8]) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )?;
    Ok(())
}

fn epoch_from(v: &[u8]) -> Result<u32> {
    Ok(u32::from_le_bytes(v.try_into().map_err(|_| Error::Corrupt("bad epoch".into()))?))
}

fn meta_epoch(conn: &Connection) -> Result<u32> {
    epoch_from(&meta_get(conn, "epoch")?.ok_or_else(|| Error::Corrupt("no epoch".into()))?)
}

/// Schema creation and upgrades. Each version's DDL is kept as it shipped.
pub mod schema {
    use super::*;

    /// v1: meta, events, state.
    pub const V1: &str = "
        CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE events (id INTEGER PRIMARY KEY, sealed BLOB NOT NULL);
        CREATE TABLE state (name TEXT PRIMARY KEY, sealed BLOB NOT NULL) WITHOUT ROWID;
    ";

    /// v1 -> v2: the catalog cache; the profile's item rows move out of the
    /// profile record into a table of their own.
    const V2: &str = "
        CREATE TABLE catalog (lookup BLOB PRIMARY KEY, sealed BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE profile_items (lookup BLOB PRIMARY KEY, sealed BLOB NOT NULL) WITHOUT ROWID;
    ";
    /// The v1 profile record held its items inline: drop it, and opening the
    /// store rebuilds the profile from the history.
    const V2_DATA: &str = "DELETE FROM state WHERE name = 'profile';";

    /// v2 -> v3: the experiment log.
    const V3: &str = "
        CREATE TABLE experiment_log (id INTEGER PRIMARY KEY, sealed BLOB NOT NULL);
    ";

    pub(crate) fn init(tx: &Transaction) -> Result<()> {
        tx.execute_batch(V1)?;
        tx.execute_batch(V2)?;
        tx.execute_batch(V3)?;
        Ok(())
    }

    pub(crate) fn upgrade_from(tx: &Transaction, version: u32) -> Result<()> {
        match version {
            1 => {
                tx.execute_batch(V2)?;
                tx.execute_batch(V2_DATA)?;
            }
            2 => tx.execute_batch(V3)?,
            v => return Err(Error::Internal(format!("no upgrade from schema v{v}"))),
        }
        Ok(())
    }
}
