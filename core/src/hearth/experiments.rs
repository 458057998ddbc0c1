//! The session's part in experiments, and the methods apps call for them.
//! The definitions, the assignment and the log are in `crate::experiments`.

use log::{debug, warn};

use super::{Hearth, Session, shield};
use crate::error::{Error, HearthError, Result};
use crate::experiments::evaluation::{self, DeviceEvaluation, Rankers};
use crate::experiments::log::{self as experiment_log, ExperimentLogRecord, LogEntry, MAX_EXPOSED_ITEMS, OutcomeKind};
use crate::experiments::report::{self, ExperimentReport};
use crate::experiments::{self, Experiment, ExperimentArm, assignment};
use crate::model::{Model, ModelPackage};
use crate::ranking::RankResult;
use crate::store::history::{Catalog, Event, MAX_ID_BYTES, now_ms};
use crate::store::settings::PrivacySettings;

/// What `log_outcome` did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum OutcomeLogged {
    /// Logged; `position` is where the experiment's latest row showed the
    /// item (0 = first), when it did within the attribution window.
    Logged { position: Option<u32> },
    /// History is paused: nothing was logged.
    Paused,
    /// Personalization is off, so no arm applies: nothing was logged.
    PersonalizationOff,
}

/// An experiment as this device sees it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ExperimentStatus {
    pub experiment_id: String,
    /// The arm this install is in.
    pub arm: String,
    /// Rows the experiment ranked that the log holds.
    pub exposures: u64,
    /// Outcomes the log holds.
    pub outcomes: u64,
    /// False while history is paused or personalization is off: the log
    /// does not grow then.
    pub logging: bool,
}

/// An experiment's arm for this install, as the export lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExperimentAssignment {
    pub experiment: String,
    pub arm: String,
}

/// The experiments part of an export.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExperimentsExport {
    pub definitions: Vec<Experiment>,
    /// This install's arm in each (absent before any experiment asked).
    pub assignments: Vec<ExperimentAssignment>,
    /// Oldest first.
    pub log: Vec<ExperimentLogRecord>,
}

impl Session {
    /// The experiment `id` and the index of the arm it puts this install
    /// in, drawing the install's secret on first use.
    fn assigned(&mut self, id: &str) -> Result<(Experiment, usize)> {
        let experiment = experiments::find(&self.store, id)?;
        let secret = assignment::secret(&mut self.store)?;
        let index = assignment::arm_index(&secret, &experiment);
        Ok((experiment, index))
    }

    /// The arm `id` puts this install in.
    pub(crate) fn experiment_arm(&mut self, id: &str) -> Result<(Experiment, ExperimentArm)> {
        let (experiment, index) = self.assigned(id)?;
        let arm = experiment.arms[index].clone();
        Ok((experiment, arm))
    }

    /// The log grows only while the user lets history be kept and
    /// personalized.
    fn experiment_logging(&self) -> bool {
        !self.settings.history_paused && self.settings.personalization_enabled
    }

    pub(crate) fn log_exposure(&mut self, experiment: &str, arm: &str, row: &RankResult) -> Result<()> {
        if !self.experiment_logging() || row.items.is_empty() {
            return Ok(());
        }
        let items = row.items.iter().take(MAX_EXPOSED_ITEMS as usize).map(|i| i.item_id.clone()).collect();
        let record = ExperimentLogRecord {
            experiment: experiment.into(),
            arm: arm.into(),
            at_ms: now_ms(),
            entry: LogEntry::Exposure { items },
        };
        experiment_log::append(&mut self.store, &record)?;
        self.latest_exposure.insert(experiment.into(), Some(record));
        Ok(())
    }

    /// The newest exposure of `experiment` in the log.
    fn latest_exposure(&mut self, experiment: &str) -> Result<Option<ExperimentLogRecord>> {
        if let Some(cached) = self.latest_exposure.get(experiment) {
            return Ok(cached.clone());
        }
        let found = experiment_log::latest_exposure(&self.store, experiment)?;
        self.latest_exposure.insert(experiment.into(), found.clone());
        Ok(found)
    }

    /// Removes every log record of `experiment`.
    fn clear_experiment_log(&mut self, experiment: &str) -> Result<u64> {
        self.latest_exposure.remove(experiment);
        experiment_log::clear(&mut self.store, experiment)
    }

    fn log_outcome(&mut self, experiment_id: &str, item_id: &str, kind: OutcomeKind) -> Result<OutcomeLogged> {
        if item_id.is_empty() || item_id.len() > MAX_ID_BYTES {
            return Err(Error::invalid("item_id", format!("must be 1 to {MAX_ID_BYTES} bytes")));
        }
        let (experiment, arm) = self.experiment_arm(experiment_id)?;
        if self.settings.history_paused {
            return Ok(OutcomeLogged::Paused);
        }
        if !self.settings.personalization_enabled {
            return Ok(OutcomeLogged::PersonalizationOff);
        }
        let at_ms = now_ms();
        let latest = self.latest_exposure(&experiment.id)?;
        let position = experiment_log::position_in(latest.as_ref(), item_id, at_ms);
        let record = ExperimentLogRecord {
            experiment: experiment.id,
            arm: arm.name,
            at_ms,
            entry: LogEntry::Outcome { item_id: item_id.into(), kind, position },
        };
        experiment_log::append(&mut self.store, &record)?;
        Ok(OutcomeLogged::Logged { position })
    }

    /// What the export says about experiments.
    pub(crate) fn experiments_export(&self) -> Result<ExperimentsExport> {
        let definitions = experiments::load(&self.store)?;
        let assignments = match assignment::existing_secret(&self.store)? {
            Some(secret) => definitions
                .iter()
                .map(|e| ExperimentAssignment {
                    experiment: e.id.clone(),
                    arm: e.arms[assignment::arm_index(&secret, e)].name.clone(),
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(ExperimentsExport { definitions, assignments, log: experiment_log::records(&self.store)? })
    }
}

#[uniffi::export]
impl Hearth {
    /// Defines an experiment on this device (or replaces the one with its
    /// id) and returns the arm this install is in. Replacing it with
    /// different arms clears its log. A definition that does not validate
    /// fails with `InvalidInput` and changes nothing.
    pub fn define_experiment(&self, experiment: Experiment) -> Result<String, HearthError> {
        self.with(|s| {
            let id = experiment.id.clone();
            if experiments::define(&mut s.store, experiment)? {
                let cleared = s.clear_experiment_log(&id)?;
                debug!("experiment {id} redefined with new arms: {cleared} log records cleared");
            }
            Ok(s.experiment_arm(&id)?.1.name)
        })
    }

    /// Removes an experiment and its log; false when none had the id.
    pub fn remove_experiment(&self, experiment_id: String) -> Result<bool, HearthError> {
        self.with(|s| {
            if !experiments::remove(&mut s.store, &experiment_id)? {
                return Ok(false);
            }
            s.clear_experiment_log(&experiment_id)?;
            s.store.checkpoint()?;
            Ok(true)
        })
    }

    /// The experiments defined on this device.
    pub fn experiments(&self) -> Result<Vec<Experiment>, HearthError> {
        self.with(|s| experiments::load(&s.store))
    }

    /// The arm of `experiment_id` this install is in: stable across
    /// restarts, new after `delete_all`. An unknown id fails with
    /// `InvalidInput`.
    pub fn experiment_arm(&self, experiment_id: String) -> Result<String, HearthError> {
        self.with(|s| Ok(s.experiment_arm(&experiment_id)?.1.name))
    }

    /// Logs what the user did with an item, for `experiment_id`'s reports,
    /// with the position the experiment's latest row showed it at. Nothing
    /// is logged while history is paused or personalization is off.
    pub fn log_outcome(
        &self,
        experiment_id: String,
        item_id: String,
        kind: OutcomeKind,
    ) -> Result<OutcomeLogged, HearthError> {
        self.with(|s| s.log_outcome(&experiment_id, &item_id, kind))
    }

    /// This install's report for `experiment_id`: its arm and the means
    /// over its newest rows (`ExperimentReport`). It stays on the device:
    /// federated evaluation rounds send it, noised.
    pub fn experiment_report(&self, experiment_id: String) -> Result<ExperimentReport, HearthError> {
        self.with(|s| {
            let (experiment, index) = s.assigned(&experiment_id)?;
            let records = experiment_log::records(&s.store)?;
            Ok(report::build(&experiment.id, &experiment.arms[index].name, index, &records))
        })
    }

    /// This install's arm and what the log holds for `experiment_id`.
    pub fn experiment_status(&self, experiment_id: String) -> Result<ExperimentStatus, HearthError> {
        self.with(|s| {
            let (experiment, arm) = s.experiment_arm(&experiment_id)?;
            let (mut exposures, mut outcomes) = (0, 0);
            for r in experiment_log::records(&s.store)?.iter().filter(|r| r.experiment == experiment.id) {
                match r.entry {
                    LogEntry::Exposure { .. } => exposures += 1,
                    LogEntry::Outcome { .. } => outcomes += 1,
                }
            }
            Ok(ExperimentStatus {
                experiment_id: experiment.id,
                arm: arm.name,
                exposures,
                outcomes,
                logging: s.experiment_logging(),
            })
        })
    }
}

impl Hearth {
    /// Logs the row an experiment ranked; a failure is logged and does not
    /// fail the ranking.
    pub(crate) fn log_exposure(&self, experiment: &str, arm: &str, row: &RankResult) {
        if let Err(e) = self.with(|s| s.log_exposure(experiment, arm, row)) {
            warn!("experiment {experiment}: exposure not logged: {e}");
        }
    }
}

/// The store's side of an evaluation: what `evaluation::evaluate` reads,
/// copied out so that scoring runs outside the store's lock.
struct EvaluationInputs {
    history: Vec<Event>,
    held_out: Vec<Event>,
    half_life_days: f64,
    catalog: Catalog,
    settings: PrivacySettings,
    max_popularity: f64,
}

impl EvaluationInputs {
    fn run(&self, rankers: &Rankers<'_>) -> Option<DeviceEvaluation> {
        evaluation::evaluate(
            &self.history,
            &self.held_out,
            self.half_life_days,
            &self.catalog,
            &self.settings,
            self.max_popularity,
            rankers,
        )
    }
}

impl Hearth {
    /// The history split at store event id `watermark` (events after it
    /// held out), or whole with `upcoming` held out.
    fn evaluation_inputs(&self, watermark: i64, upcoming: &[Event]) -> Result<EvaluationInputs, HearthError> {
        self.with(|s| {
            let (mut history, mut held_out) = (Vec::new(), upcoming.to_vec());
            s.store.scan_events(0, |id, e| {
                if let Ok(e) = e {
                    if id > watermark { held_out.push(e) } else { history.push(e) }
                }
                Ok(())
            })?;
            Ok(EvaluationInputs {
                history,
                held_out,
                half_life_days: s.profile.half_life_days,
                catalog: s.catalog.clone(),
                settings: s.settings.clone(),
                max_popularity: s.max_popularity,
            })
        })
    }

    /// The release gate's evaluation on this device: `candidate` (verified
    /// as an install would verify it, not installed), the model ranking
    /// uses now and the fallback, each scored by NDCG@10 on the newest
    /// first engagements since this device's last federated contribution
    /// (so none was in an update it sent; see `crate::experiments::evaluation`).
    /// None when there is no such engagement or personalization is off.
    /// Nothing leaves the device: a model-evaluation round sends the
    /// result only inside its noisy sums.
    pub fn evaluate_candidate(&self, candidate: &ModelPackage) -> Result<Option<DeviceEvaluation>, HearthError> {
        shield(|| {
            let model = self.verify_package(candidate)?;
            self.evaluate_verified(&model)
        })
    }

    /// As [`Hearth::evaluate_candidate`], for a candidate already verified
    /// (a model-evaluation round verifies the one it receives once).
    pub(crate) fn evaluate_verified(&self, candidate: &Model) -> Result<Option<DeviceEvaluation>, HearthError> {
        let published = self.active_model().map(|(m, _)| m);
        let watermark = self.federated_state()?.examples_watermark;
        let inputs = self.evaluation_inputs(watermark, &[])?;
        Ok(inputs.run(&Rankers { candidate, published: published.as_deref() }))
    }

    /// For simulation: as [`Hearth::evaluate_candidate`], with `published`
    /// in place of the installed model and `upcoming` (events after the
    /// whole stored history, never recorded) as the held-out engagements.
    #[doc(hidden)]
    pub fn evaluate_candidate_on(
        &self,
        candidate: &ModelPackage,
        published: &ModelPackage,
        upcoming: &[Event],
    ) -> Result<Option<DeviceEvaluation>, HearthError> {
        shield(|| {
            let keys = self.config.model_keys()?;
            let (candidate, published) = (Model::load(candidate, &keys)?, Model::load(published, &keys)?);
            let inputs = self.evaluation_inputs(i64::MAX, upcoming)?;
            Ok(inputs.run(&Rankers { candidate: &candidate, published: Some(&published) }))
        })
    }
}
