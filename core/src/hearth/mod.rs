//! `Hearth`: the one object an app holds.
//!
//! Thread-safe: every method takes `&self` and may be called from any thread;
//! calls are serialized on one lock. Calls touch the disk and can take
//! milliseconds (export, forget, delete-all and rekey take longer): call them
//! off the UI thread. Every method returns `Result<_, HearthError>`; a panic
//! inside a call is caught, reported as `HearthError::Internal`, and the store
//! is reopened from disk on the next call.

mod audience;
mod config;
pub(crate) mod experiments;
pub(crate) mod export;
mod federated;
mod session;
pub(crate) mod sync;

pub use config::HearthConfig;
pub(crate) use session::Session;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use log::{info, warn};

use crate::error::{Error, HearthError, Result};
use crate::experiments::{ArmTreatment, ExperimentArm};
use crate::model::training::{self, LocalUpdate, RoundSettings, TrainingPlan};
use crate::model::{self, Model, ModelInfo, ModelPackage, ModelRejection, Weights};
use crate::ranking::{self, Candidate, RankOptions, RankResult};
use crate::store;
use crate::store::crypto::{KeyProvider, RootKey, fetch_root_key};
use crate::store::history::{CatalogItem, Event, now_ms};
use crate::store::profile::ProfileSummary;
use crate::store::settings::{PrivacySettings, RecordOutcome};
use export::{ExportDocument, ImportSummary};

enum State {
    Open(Box<Session>),
    /// A call failed half-way (a panic, or delete-all could not reopen); the
    /// next call reopens from disk.
    NeedsReopen,
    Closed,
}

/// The model ranking uses; loaded on first use.
#[derive(Default)]
enum ModelSlot {
    #[default]
    NotLoaded,
    Active {
        model: Arc<Model>,
        builtin: bool,
    },
    /// Neither an installed nor the built-in package verified.
    None,
}

/// An open Hearth store. See the module documentation for threading.
#[derive(uniffi::Object)]
pub struct Hearth {
    pub(crate) config: HearthConfig,
    /// Replaced by `rekey`.
    keys: RwLock<Arc<dyn KeyProvider>>,
    state: Mutex<State>,
    /// Not store data: the model is shared, read-mostly, and used outside
    /// the session lock.
    model: RwLock<ModelSlot>,
    /// Held for the whole of a federated round: one at a time per store.
    pub(crate) round_lock: Mutex<()>,
    /// Set by `cancel_participation`; cleared when a round starts.
    pub(crate) round_cancel: Arc<AtomicBool>,
    /// A sync pairing under way (in memory only).
    pairing: Mutex<Option<sync::Pairing>>,
    /// One sync at a time.
    sync_lock: Mutex<()>,
}

impl std::fmt::Debug for Hearth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hearth").finish_non_exhaustive()
    }
}

/// Drops an open session that a panic may have left half-updated, without
/// writing its in-memory state, so the next call reopens it from disk.
fn abandon(state: &mut State) {
    if let State::Open(session) = std::mem::replace(state, State::NeedsReopen) {
        let mut session = *session;
        session.unflushed = 0;
        session.profile.dirty_count = 0;
        drop(session);
    }
}

/// Runs `f`, turning a panic into `HearthError::Internal`.
pub(crate) fn shield<T>(f: impl FnOnce() -> Result<T, HearthError>) -> Result<T, HearthError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(HearthError::Internal { reason: "panic caught".into() }))
}

impl Hearth {
    /// The active model: the installed package if it verifies, else the
    /// built-in one. Loaded once; `None` when neither verifies.
    pub(crate) fn active_model(&self) -> Option<(Arc<Model>, bool)> {
        if let ModelSlot::Active { model, builtin } = &*self.model.read().unwrap_or_else(|p| p.into_inner()) {
            return Some((model.clone(), *builtin));
        }
        let mut slot = self.model.write().unwrap_or_else(|p| p.into_inner());
        if let ModelSlot::NotLoaded = *slot {
            *slot = self.load_model();
        }
        match &*slot {
            ModelSlot::Active { model, builtin } => Some((model.clone(), *builtin)),
            _ => None,
        }
    }

    fn load_model(&self) -> ModelSlot {
        let dir = self.config.model_dir();
        if dir.exists() {
            let loaded = self.config.model_keys().and_then(|keys| Model::load(&ModelPackage::read_dir(&dir)?, &keys));
            match loaded {
                Ok(m) => return ModelSlot::Active { model: m, builtin: false },
                Err(e) => warn!("installed model not usable, using the built-in one: {e}"),
            }
        }
        match model::builtin() {
            Ok(m) => ModelSlot::Active { model: m, builtin: true },
            Err(e) => {
                warn!("no usable model; ranking falls back to popularity: {e}");
                ModelSlot::None
            }
        }
    }

    pub(crate) fn install(&self, package: ModelPackage) -> Result<ModelInfo> {
        let model = self.verify_package(&package)?;
        self.install_verified(package, model)
    }

    /// Loads `package` under the trusted keys and checks it is not older
    /// than the installed model; installs nothing.
    pub(crate) fn verify_package(&self, package: &ModelPackage) -> Result<Arc<Model>> {
        let keys = self.config.model_keys()?;
        let model = Model::load(package, &keys)?;
        if let Some((active, builtin)) = self.active_model()
            && !builtin
            && model.version() < active.version()
        {
            return Err(ModelRejection::Stale.err(format!(
                "version {} is older than the installed {}",
                model.version(),
                active.version()
            )));
        }
        Ok(model)
    }

    /// Writes a package `verify_package` accepted and makes it the active model.
    pub(crate) fn install_verified(&self, package: ModelPackage, model: Arc<Model>) -> Result<ModelInfo> {
        std::fs::create_dir_all(&self.config.data_dir)?;
        package.write_dir(&self.config.model_dir())?;
        let info = model_info(&model, false);
        info!("model v{} installed", model.version());
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = ModelSlot::Active { model, builtin: false };
        Ok(info)
    }

    /// Ranks what `prepare` resolved: as `arm` says when the request named
    /// an experiment (whose row is then labelled and logged, unless the user
    /// turned personalization off), else as asked.
    fn rank_prepared(
        &self,
        prepared: ranking::Prepared,
        options: &RankOptions,
        arm: Option<(String, ExperimentArm)>,
    ) -> RankResult {
        let Some((experiment, arm)) = arm else {
            let model = if prepared.personalization { self.active_model() } else { None };
            let scores = ranking::score(&prepared, model.as_ref().map(|(m, _)| m.as_ref()), &options.context);
            return ranking::finish(&prepared, scores, options);
        };
        let personalization = prepared.personalization;
        let mut row = match &arm.treatment {
            ArmTreatment::Fallback if prepared.personalization => {
                ranking::finish(&prepared, ranking::Scores::Fallback(ranking::FallbackReason::ExperimentArm), options)
            }
            ArmTreatment::ModelWithDiversity { diversity } => {
                let options = RankOptions { diversity: diversity.clone(), ..options.clone() };
                self.rank_prepared(prepared, &options, None)
            }
            _ => self.rank_prepared(prepared, options, None),
        };
        // With personalization off no arm applies: the row is the user's
        // choice, not the experiment's, and is neither labelled nor logged.
        if personalization {
            row.experiment_arm = Some(arm.name.clone());
            self.log_exposure(&experiment, &arm.name, &row);
        }
        row
    }

    /// Prepares a ranking under the session's lock: the candidates
    /// resolved and filtered, and the experiment arm the options name.
    fn prepare_rank(
        &self,
        candidates: impl FnOnce(&Session) -> Vec<Candidate>,
        options: &RankOptions,
    ) -> Result<(ranking::Prepared, Option<(String, ExperimentArm)>), HearthError> {
        self.with(|s| {
            let arm = match &options.experiment {
                Some(id) => Some((id.clone(), s.experiment_arm(id)?.1)),
                None => None,
            };
            let candidates = candidates(s);
            let prepared =
                ranking::prepare(candidates, options, &s.settings, &s.profile, &s.catalog, s.max_popularity, now_ms())?;
            Ok((prepared, arm))
        })
    }

    /// Trains on this device's history from `global` (the active model's
    /// weights when `None`; else a flat vector in weights.bin's layout) and
    /// returns the clipped update.
    pub(crate) fn local_update(
        &self,
        round: &RoundSettings,
        global: Option<&[f32]>,
    ) -> Result<LocalUpdate, HearthError> {
        self.local_update_from(None, round, global)
    }

    /// [`Hearth::local_update`] with `model` (verified, not yet installed)
    /// in place of the active one when given.
    pub(crate) fn local_update_from(
        &self,
        model: Option<Arc<Model>>,
        round: &RoundSettings,
        global: Option<&[f32]>,
    ) -> Result<LocalUpdate, HearthError> {
        let model = match model {
            Some(m) => m,
            None => self.active_model().map(|(m, _)| m).ok_or(HearthError::ModelRejected {
                kind: ModelRejection::Malformed,
                reason: "no model to train".into(),
            })?,
        };
        let global = match global {
            Some(flat) => {
                let expected: usize = model.manifest.parameters.iter().map(|p| p.count).sum();
                if flat.len() != expected || flat.iter().any(|w| !w.is_finite()) {
                    return Err(Error::invalid("global weights", format!("need {expected} finite values")).into());
                }
                Weights::from_flat(&model, flat)?
            }
            None => model.weights.clone(),
        };
        self.with(|s| {
            let mut events = Vec::new();
            s.store.scan_events(0, |_, e| {
                if let Ok(e) = e {
                    events.push(e);
                }
                Ok(())
            })?;
            let plan = TrainingPlan::for_round(&model, round);
            let examples = training::examples(&events, &s.profile, &s.catalog, plan.max_examples);
            training::train(&model, &global, &examples, &s.profile, &s.catalog, &plan, now_ms())
        })
    }

    fn root_key(&self) -> Result<RootKey> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        fetch_root_key(keys.as_ref())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                self.state.clear_poison();
                let mut g = poisoned.into_inner();
                abandon(&mut g);
                g
            }
        }
    }

    /// Runs `f` on the open session, reopening it first if a previous call
    /// left it in doubt.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Session) -> Result<T>) -> Result<T, HearthError> {
        shield(|| {
            let mut guard = self.lock();
            if let State::NeedsReopen = *guard {
                // The key provider is never called under the lock.
                drop(guard);
                let root = self.root_key()?;
                guard = self.lock();
                if let State::NeedsReopen = *guard {
                    *guard = State::Open(Box::new(Session::open(&self.config, &root)?));
                }
            }
            let State::Open(session) = &mut *guard else {
                return Err(HearthError::Closed);
            };
            match catch_unwind(AssertUnwindSafe(|| f(session))) {
                Ok(r) => r.map_err(HearthError::from),
                Err(_) => {
                    abandon(&mut guard);
                    Err(HearthError::Internal { reason: "panic caught; the store will be reopened".into() })
                }
            }
        })
    }
}

#[uniffi::export]
impl Hearth {
    /// Opens (or creates) the store in `config.data_dir` with the key the
    /// provider hands over. A wrong key fails with `WrongKey` and changes
    /// nothing; an interrupted `rekey` is finished here.
    #[uniffi::constructor]
    pub fn open(config: HearthConfig, keys: Arc<dyn KeyProvider>) -> Result<Arc<Hearth>, HearthError> {
        shield(|| {
            config.validate()?;
            let root = fetch_root_key(keys.as_ref())?;
            let session = Session::open(&config, &root)?;
            info!("store opened");
            Ok(Arc::new(Hearth {
                config,
                keys: RwLock::new(keys),
                state: Mutex::new(State::Open(Box::new(session))),
                model: RwLock::new(ModelSlot::NotLoaded),
                round_lock: Mutex::new(()),
                round_cancel: Arc::default(),
                pairing: Mutex::new(None),
                sync_lock: Mutex::new(()),
            }))
        })
    }

    /// Records one event. Returns `Paused` (and stores nothing) while history
    /// is paused. When this returns `Stored`, the event survives the app
    /// being killed.
    pub fn record(&self, event: Event) -> Result<RecordOutcome, HearthError> {
        self.with(|s| s.record(std::slice::from_ref(&event)))
    }

    /// Records events in one transaction: all or none.
    pub fn record_batch(&self, events: Vec<Event>) -> Result<RecordOutcome, HearthError> {
        self.with(|s| s.record(&events))
    }

    /// Adds or replaces items in the catalog cache.
    pub fn upsert_catalog(&self, items: Vec<CatalogItem>) -> Result<(), HearthError> {
        self.with(|s| s.upsert_catalog(&items))
    }

    pub fn catalog_item(&self, item_id: String) -> Result<Option<CatalogItem>, HearthError> {
        self.with(|s| Ok(s.catalog.get(&item_id).map(|i| CatalogItem::clone(i))))
    }

    pub fn catalog_size(&self) -> Result<u64, HearthError> {
        self.with(|s| Ok(s.catalog.len() as u64))
    }

    /// The newest `limit` events, newest first.
    pub fn recent_events(&self, limit: u32) -> Result<Vec<Event>, HearthError> {
        self.with(|s| Ok(s.store.recent_events(limit)?.into_iter().map(|(_, e)| e).collect()))
    }

    pub fn event_count(&self) -> Result<u64, HearthError> {
        self.with(|s| s.store.event_count())
    }

    /// What the profile says: top categories, completion rate, device and
    /// hour mix.
    pub fn profile(&self) -> Result<ProfileSummary, HearthError> {
        self.with(|s| Ok(s.profile.summary(10)))
    }

    pub fn settings(&self) -> Result<PrivacySettings, HearthError> {
        self.with(|s| Ok(s.settings.clone()))
    }

    /// Replaces all settings at once.
    pub fn set_settings(&self, settings: PrivacySettings) -> Result<(), HearthError> {
        self.with(|s| {
            let retention_changed = settings.retention_days != s.settings.retention_days;
            s.save_settings(settings)?;
            if retention_changed {
                s.purge_expired()?;
            }
            Ok(())
        })
    }

    pub fn set_personalization(&self, enabled: bool) -> Result<(), HearthError> {
        self.with(|s| s.save_settings(PrivacySettings { personalization_enabled: enabled, ..s.settings.clone() }))
    }

    pub fn set_history_paused(&self, paused: bool) -> Result<(), HearthError> {
        self.with(|s| s.save_settings(PrivacySettings { history_paused: paused, ..s.settings.clone() }))
    }

    pub fn set_federated_opt_in(&self, opt_in: bool) -> Result<(), HearthError> {
        self.with(|s| s.save_settings(PrivacySettings { federated_opt_in: opt_in, ..s.settings.clone() }))
    }

    pub fn set_blocked_categories(&self, categories: Vec<String>) -> Result<(), HearthError> {
        self.with(|s| s.save_settings(PrivacySettings { blocked_categories: categories, ..s.settings.clone() }))
    }

    /// Sets the retention window and deletes what falls outside it now.
    pub fn set_retention_days(&self, days: Option<u32>) -> Result<(), HearthError> {
        self.with(|s| {
            s.save_settings(PrivacySettings { retention_days: days, ..s.settings.clone() })?;
            s.purge_expired()?;
            Ok(())
        })
    }

    /// Deletes events past the retention window now; returns how many.
    pub fn purge_expired(&self) -> Result<u64, HearthError> {
        self.with(|s| s.purge_expired())
    }

    /// Everything held about the user as one JSON document
    /// (`docs/export-format.md`). Fails rather than export something
    /// partial: `Integrity` when a record does not pass its integrity check,
    /// `CorruptStore` when the database file fails SQLite's.
    pub fn export_json(&self) -> Result<String, HearthError> {
        self.with(|s| Ok(serde_json::to_string_pretty(&s.export()?)?))
    }

    /// Brings in a document written by `export_json` (for example from the
    /// user's previous device): its events are appended, its catalog items
    /// upserted and its settings applied.
    pub fn import_json(&self, document: String) -> Result<ImportSummary, HearthError> {
        self.with(|s| {
            let doc = ExportDocument::parse(&document)?;
            let now = now_ms();
            let events: Vec<Event> = doc.events.into_iter().map(|e| e.event).collect();
            for e in &events {
                e.validate(now)?;
            }
            for i in &doc.catalog {
                i.validate()?;
            }
            s.upsert_catalog(&doc.catalog)?;
            for chunk in events.chunks(10_000) {
                s.store_events(chunk)?;
            }
            s.save_settings(doc.settings)?;
            // The epsilon the user's data has cost goes with it: entries not
            // already here are added (never removed), oldest first.
            let mut ledger = s.ledger_entries()?;
            let before = ledger.len();
            for e in doc.privacy_ledger {
                if !ledger.contains(&e) {
                    ledger.push(e);
                }
            }
            if ledger.len() > before {
                ledger.sort_by_key(|e| e.at_ms);
                s.save_ledger(&ledger)?;
            }
            Ok(ImportSummary { events: events.len() as u64, catalog_items: doc.catalog.len() as u64 })
        })
    }

    /// Deletes every event about one item and recomputes the profile, and
    /// removes the item from the experiment log. Returns how many events
    /// went.
    pub fn forget_item(&self, item_id: String) -> Result<u64, HearthError> {
        self.with(|s| {
            if item_id.is_empty() {
                return Err(Error::invalid("item_id", "must not be empty"));
            }
            if item_id.len() > crate::store::history::MAX_ID_BYTES {
                return Err(Error::invalid("item_id", "longer than 256 bytes: no event has such an id"));
            }
            s.forget_item(&item_id, None)
        })
    }

    /// Deletes everything: history, catalog cache, profile and settings. The
    /// store's files are overwritten and removed, and a new, empty store (new
    /// data key) takes their place.
    pub fn delete_all(&self) -> Result<(), HearthError> {
        shield(|| {
            let root = self.root_key()?;
            let mut guard = self.lock();
            if let State::Closed = *guard {
                return Err(HearthError::Closed);
            }
            abandon(&mut guard);
            store::shred_files(&PathBuf::from(&self.config.data_dir))?;
            *guard = State::Open(Box::new(Session::open(&self.config, &root)?));
            info!("all data deleted");
            Ok(())
        })
    }

    /// Re-seals everything under the key `new_keys` hands over. Resumable:
    /// if the process dies part-way, the store opens under the old key
    /// (nothing changed yet) or the new one (and finishes on open).
    pub fn rekey(&self, new_keys: Arc<dyn KeyProvider>) -> Result<(), HearthError> {
        shield(|| {
            let new_root = fetch_root_key(new_keys.as_ref())?;
            self.with(|s| {
                s.store.begin_rekey(&new_root)?;
                // From here the store opens only under the new key.
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = new_keys.clone();
                s.store.finish_rekey()
            })
        })
    }

    /// Writes state kept behind (the profile) to the store now. Apps call it
    /// when they go to the background; it also happens on its own every 30 s
    /// of recording and on close.
    pub fn flush(&self) -> Result<(), HearthError> {
        self.with(|s| s.flush_profile(false))
    }

    /// Runs SQLite's integrity check: "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String, HearthError> {
        self.with(|s| s.store.integrity_check())
    }

    /// Orders `candidates` for this user: filtered (blocked categories and
    /// disliked items never appear), scored by the model or, when
    /// personalization is off or no model verifies, by popularity, then
    /// diversified and explained per `options`. Scoring runs outside the
    /// store's lock.
    ///
    /// With `options.experiment`, the row is ranked as this install's arm
    /// says, `RankResult.experiment_arm` names the arm, and the row's top
    /// is logged (sealed) for the experiment's reports; with
    /// personalization off the row is the fallback and carries no arm. An
    /// unknown experiment fails with `InvalidInput`.
    pub fn rank(&self, candidates: Vec<Candidate>, options: RankOptions) -> Result<RankResult, HearthError> {
        let (prepared, arm) = self.prepare_rank(|_| candidates, &options)?;
        shield(|| Ok(self.rank_prepared(prepared, &options, arm)))
    }

    /// Ranks every item of the catalog cache (a home screen's row).
    pub fn rank_catalog(&self, options: RankOptions) -> Result<RankResult, HearthError> {
        let (prepared, arm) = self.prepare_rank(
            |s| {
                let mut ids: Vec<&String> = s.catalog.keys().collect();
                ids.sort();
                ids.into_iter().map(|id| Candidate::id(id.clone())).collect()
            },
            &options,
        )?;
        shield(|| Ok(self.rank_prepared(prepared, &options, arm)))
    }

    /// Verifies a model package (signature by a trusted key, digests,
    /// schema, known ops, shapes) and makes it the one ranking uses; it is
    /// kept in `data_dir` for later sessions. A refused package fails with
    /// `ModelRejected` and changes nothing.
    pub fn install_model(&self, package: ModelPackage) -> Result<ModelInfo, HearthError> {
        shield(|| self.install(package).map_err(HearthError::from))
    }

    /// `install_model` from a directory holding the package's files
    /// (`PACKAGE_FILES`; the graphs of the format this library loads are
    /// required, the other format's are optional).
    pub fn install_model_from_dir(&self, dir: String) -> Result<ModelInfo, HearthError> {
        shield(|| {
            let package = ModelPackage::read_dir(std::path::Path::new(&dir)).map_err(|e| match e {
                Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                    ModelRejection::Truncated.err("a package file is missing")
                }
                other => other,
            })?;
            self.install(package).map_err(HearthError::from)
        })
    }

    /// The model ranking uses, or `None` when no package verifies.
    pub fn model_info(&self) -> Result<Option<ModelInfo>, HearthError> {
        shield(|| Ok(self.active_model().map(|(m, builtin)| model_info(&m, builtin))))
    }

    /// Writes pending state and releases the store's files. Later calls fail
    /// with `Closed`.
    pub fn close(&self) -> Result<(), HearthError> {
        shield(|| {
            let mut guard = self.lock();
            *guard = State::Closed;
            Ok(())
        })
    }
}

fn model_info(model: &Model, builtin: bool) -> ModelInfo {
    ModelInfo { name: model.manifest.name.clone(), version: model.version(), digest: model.digest.clone(), builtin }
}

/// Destroys the store in `data_dir` without opening it: for when the key is
/// lost for good (`WrongKey`, `KeyInvalidated`). The files are overwritten
/// and removed; open a new store afterwards.
#[uniffi::export]
pub fn destroy_store(data_dir: String) -> Result<(), HearthError> {
    shield(|| {
        if data_dir.is_empty() {
            return Err(Error::invalid("data_dir", "must not be empty").into());
        }
        store::shred_files(&PathBuf::from(data_dir))?;
        Ok(())
    })
}
