//! The session's part in federated rounds: eligibility from the store, one
//! round through the Fleet client with the device trainer, the privacy
//! ledger, and the methods apps call. What a round is made of (outcomes,
//! reasons, the app's transport) is in `crate::federated::participation`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use log::{info, warn};
use ring::rand::{SecureRandom, SystemRandom};

use super::{Hearth, shield};
use crate::audience::segments::SegmentReportOutcome;
use crate::error::{Error, HearthError, Result};
use crate::experiments::gate::GATE_METRICS;
use crate::federated::accountant::DistributedGaussian;
use crate::federated::fleet::{
    ClientOptions, FleetClient, HttpTransport, LocalResult, RoundOutcome, TrainInstruction, Trainer, Transport,
};
use crate::federated::ledger::{self, LedgerEntry, NoiseMode, PrivacyLedger, RoundTask, RoundTerms, UploadStatus};
use crate::federated::participation::{
    DeclineReason, DeviceConditions, Eligibility, FederatedState, FleetTransport, ForeignTransport, HOUR_MS,
    IneligibleReason, ParticipationOutcome, ROUNDS_KEPT, STATE,
};
use crate::federated::{Aggregation, ConfigValue, FederatedFailure, FleetError, NodeKey};
use crate::model::training::{RoundSettings, l2};
use crate::model::{Model, ModelPackage};
use crate::store::history::now_ms;

impl Hearth {
    pub(crate) fn federated_state(&self) -> std::result::Result<FederatedState, HearthError> {
        self.with(|s| match s.store.get_state(STATE)? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes)?),
            None => Ok(FederatedState::default()),
        })
    }

    fn save_federated_state(&self, state: &FederatedState) -> std::result::Result<(), HearthError> {
        self.with(|s| s.store.put_state(STATE, &serde_json::to_vec(state)?))
    }

    pub(crate) fn ledger_entries(&self) -> std::result::Result<Vec<LedgerEntry>, HearthError> {
        self.with(|s| s.ledger_entries())
    }

    fn save_ledger(&self, entries: &[LedgerEntry]) -> std::result::Result<(), HearthError> {
        self.with(|s| s.save_ledger(entries))
    }

    /// The epsilon the person has spent: `entries` (this device's), the
    /// entries of the person's other devices that sync brought here, and,
    /// when given, one more round of `next` and `next_local` of local DP.
    fn epsilon_spent(
        &self,
        entries: &[LedgerEntry],
        next: Option<RoundTerms>,
        next_local: f64,
    ) -> std::result::Result<f64, HearthError> {
        let peers: Vec<LedgerEntry> =
            self.with(|s| Ok(s.sync_state()?.map(|st| st.peer_entries().cloned().collect()).unwrap_or_default()))?;
        let all: Vec<LedgerEntry> = entries.iter().chain(&peers).cloned().collect();
        ledger::epsilon(&all, next, next_local, self.config.federated_delta)
            .map_err(|e| Error::invalid("privacy terms", e.to_string()).into())
    }

    /// The node key `state` holds, made and sealed in the store (with
    /// `state`) on first use.
    /// A key that has answered `federated_node_key_rounds` rounds is
    /// replaced by a fresh one first (never, when that is 0).
    fn node_key(&self, state: &mut FederatedState) -> std::result::Result<NodeKey, HearthError> {
        let rounds = self.config.federated_node_key_rounds;
        let spent = rounds > 0 && state.node_key_rounds >= rounds;
        if let (Some(pkcs8), false) = (&state.node_key, spent) {
            return NodeKey::from_pkcs8(pkcs8).map_err(|e| HearthError::from(Error::from(e)));
        }
        let key = NodeKey::generate().map_err(Error::from)?;
        state.node_key = Some(key.pkcs8().to_vec());
        state.node_key_rounds = 0;
        self.save_federated_state(state)?;
        info!("federated node key made");
        Ok(key)
    }

    fn ineligible_reasons(
        &self,
        state: &FederatedState,
        c: &DeviceConditions,
    ) -> std::result::Result<Vec<IneligibleReason>, HearthError> {
        let entries = self.ledger_entries()?;
        let (opted_in, new_examples) = self.with(|s| {
            let mut n = 0u32;
            s.store.scan_events(state.examples_watermark, |_, e| {
                if let Ok(e) = e
                    && e.kind.is_engagement()
                {
                    n = n.saturating_add(1);
                }
                Ok(())
            })?;
            Ok((s.settings.federated_opt_in, n))
        })?;
        let mut reasons = Vec::new();
        if !opted_in {
            reasons.push(IneligibleReason::NotOptedIn);
        }
        if !c.charging {
            reasons.push(IneligibleReason::NotCharging);
        }
        if !c.unmetered_network {
            reasons.push(IneligibleReason::MeteredNetwork);
        }
        if !c.idle {
            reasons.push(IneligibleReason::NotIdle);
        }
        let need = self.config.federated_min_new_examples;
        if new_examples < need {
            reasons.push(IneligibleReason::TooFewNewExamples { have: new_examples, need });
        }
        if let Some(last) = state.last_contribution_ms {
            let next = last.saturating_add(self.config.federated_min_interval_hours as i64 * HOUR_MS);
            if now_ms() < next {
                reasons.push(IneligibleReason::TooSoon { next_allowed_ms: next });
            }
        }
        let spent = self.epsilon_spent(&entries, None, 0.0)?;
        let budget = self.config.federated_epsilon_budget;
        if spent >= budget {
            reasons.push(IneligibleReason::BudgetSpent { spent, budget });
        }
        Ok(reasons)
    }

    /// Takes part in one round over `transport` (the Rust API behind
    /// `participate` and `participate_via`; tests and the simulator bring
    /// their own transport and client options).
    ///
    /// Blocks for at most the store's `federated_round_wait_seconds`, plus
    /// local training, plus [`ClientOptions::call_bound`] for each Fleet call
    /// after the wait (about a dozen, and one per object of the model), plus
    /// the client's linger. Call it from a background worker.
    pub fn participate_using<T: Transport>(
        &self,
        transport: T,
        conditions: DeviceConditions,
        options: ClientOptions,
    ) -> std::result::Result<ParticipationOutcome, HearthError> {
        shield(|| {
            let Ok(_one_round) = self.round_lock.try_lock() else {
                return Err(Error::invalid("participate", "a round is already in progress on this store").into());
            };
            self.round_cancel.store(false, Ordering::Relaxed);
            let mut options = ClientOptions {
                cancel: Some(self.round_cancel.clone()),
                secure: self.config.secure_policy(),
                ..options
            };
            // A train message may expand to the model's parameters and no
            // more: names and shapes are checked before any array is.
            if let Some((model, _)) = self.active_model() {
                let expected = model.manifest.parameters.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
                options.limits = options.limits.for_parameters(expected);
            }
            let mut state = self.federated_state()?;
            let reasons = self.ineligible_reasons(&state, &conditions)?;
            if !reasons.is_empty() {
                info!("not eligible for a federated round: {reasons:?}");
                return Ok(ParticipationOutcome::NotEligible { reasons });
            }
            let key = self.node_key(&mut state)?;
            let watermark = self.with(|s| s.store.last_event_id())?;
            let mut trainer = DeviceTrainer::new(self, state.rounds_taken.clone(), key.fingerprint())?;
            let wait = Duration::from_secs(self.config.federated_round_wait_seconds as u64);
            let mut client = FleetClient::new(transport, key, options);
            let outcome = client.participate(wait, &mut trainer);
            // A round answered in any way (an update, a refusal, a drop
            // midway) showed the coordinator this key with it.
            let engaged = !matches!(outcome, Ok(RoundOutcome::NoMessage));
            if engaged {
                state.node_key_rounds = state.node_key_rounds.saturating_add(1);
            }
            let mut charged = trainer.charged.take();
            let result = match outcome {
                Ok(RoundOutcome::NoMessage) => Ok(ParticipationOutcome::NoRound),
                Ok(RoundOutcome::Done(report)) => match charged.take() {
                    Some((index, mut entry)) => {
                        entry.status = UploadStatus::Sent;
                        entry.bytes_sent = report.bytes_sent;
                        self.update_entry(index, &entry)?;
                        // An evaluation or a report trained on nothing: what
                        // is held out stays held out until a training round,
                        // and it does not count as a round taken.
                        if entry.task == RoundTask::Training {
                            state.last_contribution_ms = Some(entry.at_ms);
                            state.examples_watermark = watermark;
                        }
                        if let Some(round) = entry.round.filter(|_| entry.task == RoundTask::Training) {
                            state.rounds_taken.push((entry.run_id, round));
                            let excess = state.rounds_taken.len().saturating_sub(ROUNDS_KEPT);
                            state.rounds_taken.drain(..excess);
                        }
                        self.save_federated_state(&state)?;
                        info!("federated round {:?} of run {} ({:?}): sent", entry.round, entry.run_id, entry.task);
                        Ok(ParticipationOutcome::Contributed { entry })
                    }
                    None => Err(Error::Internal("a round ended without its ledger entry".into()).into()),
                },
                Err(e) => {
                    if let Some(reason) = trainer.declined.take() {
                        info!("federated round declined: {reason:?}");
                        Ok(ParticipationOutcome::Declined { reason })
                    } else if let Some(rejected) = trainer.rejected.take() {
                        Err(rejected)
                    } else if let FleetError::Parameters(why) = e {
                        // Global weights of another layout, as local_update
                        // says of them: refused before they were expanded.
                        Err(Error::invalid("global weights", why).into())
                    } else {
                        Err(HearthError::from(Error::from(e)))
                    }
                }
            };
            if let Some((index, mut entry)) = charged {
                // Charged but not confirmed: it counts, marked so.
                entry.status = UploadStatus::Unconfirmed;
                if let Err(e) = self.update_entry(index, &entry) {
                    warn!("ledger entry not updated after a failed push: {e}");
                }
            }
            if engaged
                && !matches!(result, Ok(ParticipationOutcome::Contributed { .. }))
                && let Err(e) = self.save_federated_state(&state)
            {
                warn!("the node key's round count not saved: {e}");
            }
            result
        })
    }

    fn update_entry(&self, index: usize, entry: &LedgerEntry) -> std::result::Result<(), HearthError> {
        let mut entries = self.ledger_entries()?;
        match entries.get_mut(index) {
            Some(e) => *e = entry.clone(),
            // delete_all ran meanwhile: the entry went with everything else.
            None => return Ok(()),
        }
        self.save_ledger(&entries)
    }
}

/// The device's side of one round, as the Fleet client calls it.
struct DeviceTrainer<'a> {
    hearth: &'a Hearth,
    rounds_taken: Vec<(u64, u64)>,
    /// The node key's fingerprint, for the ledger.
    node_key: String,
    seed: u64,
    declined: Option<DeclineReason>,
    rejected: Option<HearthError>,
    /// The ledger entry written before the update was handed over.
    charged: Option<(usize, LedgerEntry)>,
}

impl<'a> DeviceTrainer<'a> {
    fn new(hearth: &'a Hearth, rounds_taken: Vec<(u64, u64)>, node_key: String) -> Result<Self> {
        let mut seed = [0u8; 8];
        SystemRandom::new().fill(&mut seed).map_err(|_| Error::Crypto("no randomness"))?;
        Ok(DeviceTrainer {
            hearth,
            rounds_taken,
            node_key,
            seed: u64::from_le_bytes(seed),
            declined: None,
            rejected: None,
            charged: None,
        })
    }

    fn decline(&mut self, reason: DeclineReason) -> String {
        let text = format!("declined: {reason:?}");
        self.declined = Some(reason);
        text
    }

    fn reject(&mut self, e: HearthError) -> String {
        let text = e.to_string();
        self.rejected = Some(e);
        text
    }
}

fn config_f64(ins: &TrainInstruction, key: &str) -> Option<f64> {
    ins.config(key).and_then(ConfigValue::as_f64)
}

/// A round this device agreed to: the noise it accounts by, the ledger as
/// it was, and the epsilon spent once the round is charged.
struct Admitted {
    noise_multiplier: f64,
    sampling_rate: f64,
    terms: RoundTerms,
    entries: Vec<LedgerEntry>,
    epsilon_after: f64,
}

impl DeviceTrainer<'_> {
    /// The privacy checks every round passes before the device computes
    /// anything from its data: terms that give a guarantee, secure
    /// aggregation when the app requires it, a training round not taken
    /// before, and room in the budget.
    fn admit(&mut self, ins: &TrainInstruction, task: RoundTask) -> std::result::Result<Admitted, String> {
        let h = self.hearth;
        // A round whose devices add the noise is accounted by what this
        // device added; otherwise by what the coordinator announces.
        let (z, q, terms) = match &ins.distributed {
            Some(d) => {
                let round = DistributedGaussian::for_cohort(
                    d.noise_multiplier,
                    d.honest_fraction,
                    d.cohort,
                    ins.clip_norm,
                    d.scale,
                    d.dimension,
                );
                // Amplified only by the device's own coin.
                let q = d.coin.map_or(1.0, |c| c.rate);
                (d.noise_multiplier, q, RoundTerms::Distributed(round.with_sampling_rate(q)))
            }
            None => {
                let (Some(z), Some(q)) = (config_f64(ins, "noise-multiplier"), config_f64(ins, "sampling-rate")) else {
                    return Err(self.decline(DeclineReason::PrivacyTermsMissing));
                };
                (z, q, RoundTerms::Central { noise_multiplier: z, sampling_rate: q })
            }
        };
        let no_guarantee = DeclineReason::NoPrivacyGuarantee { noise_multiplier: z, sampling_rate: q };
        if !(z.is_finite() && z > 0.0 && q > 0.0 && q <= 1.0) {
            return Err(self.decline(no_guarantee));
        }
        if ins.aggregation == Aggregation::Plain && h.config.federated_require_secure_aggregation {
            return Err(self.decline(DeclineReason::SecureAggregationRequired));
        }
        // An evaluation or a report is not a training round taken: it may
        // come under the number of a training round, and each one is
        // charged.
        if task == RoundTask::Training
            && let Some(round) = ins.round
            && self.rounds_taken.contains(&(ins.run_id, round))
        {
            return Err(self.decline(DeclineReason::AlreadyTookPart));
        }
        let entries = h.ledger_entries().map_err(|e| self.reject(e))?;
        let epsilon_after = match h.epsilon_spent(&entries, Some(terms), 0.0) {
            Ok(e) => e,
            Err(e) => return Err(self.reject(e)),
        };
        // So little noise that the epsilon overflows is no noise.
        if !epsilon_after.is_finite() {
            return Err(self.decline(no_guarantee));
        }
        let budget = h.config.federated_epsilon_budget;
        if epsilon_after > budget {
            return Err(self.decline(DeclineReason::OverBudget { epsilon_after, budget }));
        }
        Ok(Admitted { noise_multiplier: z, sampling_rate: q, terms, entries, epsilon_after })
    }

    /// The round's signed model, from the manifest and signature in its
    /// config and its arrays, verified; None when the round sends no
    /// manifest.
    fn signed_model(
        &mut self,
        ins: &TrainInstruction,
    ) -> std::result::Result<Option<(ModelPackage, Arc<Model>)>, String> {
        let (Some(ConfigValue::Bytes(manifest)), Some(ConfigValue::Bytes(signature))) =
            (ins.config("model-manifest"), ins.config("model-signature"))
        else {
            return Ok(None);
        };
        let weights: Vec<u8> = ins.flat().iter().flat_map(|x| x.to_le_bytes()).collect();
        let package = ModelPackage {
            manifest: manifest.clone(),
            signature: signature.clone(),
            weights,
            ..ModelPackage::builtin()
        };
        let model = self.hearth.verify_package(&package).map_err(|e| self.reject(e.into()))?;
        Ok(Some((package, model)))
    }

    /// The ledger entry of a round about to send `norm`'s contribution,
    /// written before it leaves (charged).
    fn charge(
        &mut self,
        ins: &TrainInstruction,
        admitted: Admitted,
        task: RoundTask,
        norms: (f64, f64),
        segment_report_epsilon: f64,
    ) -> std::result::Result<(), String> {
        let entry = LedgerEntry {
            run_id: ins.run_id,
            round: ins.round,
            at_ms: now_ms(),
            status: UploadStatus::Pending,
            bytes_sent: 0,
            norm_before_clip: norms.0,
            norm_after_clip: norms.1,
            clip_norm: ins.clip_norm,
            noise_multiplier: admitted.noise_multiplier,
            sampling_rate: admitted.sampling_rate,
            epsilon_total: admitted.epsilon_after + segment_report_epsilon,
            segment_report_epsilon,
            aggregation: ins.aggregation,
            noise_mode: if ins.distributed.is_some() { NoiseMode::Distributed } else { NoiseMode::Central },
            noise_share: ins.distributed.map_or(0.0, |d| d.share),
            cohort: ins.distributed.map_or(0, |d| d.cohort),
            honest_fraction: ins.distributed.map_or(0.0, |d| d.honest_fraction),
            scale: ins.distributed.map_or(0.0, |d| d.scale),
            dimension: ins.distributed.map_or(0, |d| d.dimension),
            included: ins.distributed.and_then(|d| d.coin).map(|c| c.included),
            node_key: self.node_key.clone(),
            task,
        };
        let mut all = admitted.entries;
        all.push(entry.clone());
        self.hearth.save_ledger(&all).map_err(|e| self.reject(e))?;
        self.charged = Some((all.len() - 1, entry));
        Ok(())
    }
}

impl Trainer for DeviceTrainer<'_> {
    fn train(&mut self, ins: &TrainInstruction) -> std::result::Result<LocalResult, String> {
        let h = self.hearth;
        let admitted = self.admit(ins, RoundTask::Training)?;
        let budget = h.config.federated_epsilon_budget;
        // The round's global model is verified now but installed only once
        // local training from it succeeds: a model the noise has wrecked
        // (training diverges from it) is reported unusable, and ranking
        // keeps the last good one.
        // A model the coordinator sends as a candidate (`model-release`) is
        // trained from but never ranks here: it is released, if ever, by a
        // later round that sends it as published.
        let install = match ins.config("model-release") {
            None => true,
            Some(ConfigValue::String(r)) if r == "published" => true,
            Some(ConfigValue::String(r)) if r == "candidate" => false,
            Some(_) => {
                return Err(self.reject(
                    Error::invalid("model-release", "must be the string \"published\" or \"candidate\"").into(),
                ));
            }
        };
        let candidate = self.signed_model(ins)?;
        let settings = RoundSettings {
            clip_norm: ins.clip_norm,
            epochs: ins.epochs,
            learning_rate: ins.learning_rate,
            negatives_per_positive: None,
            max_examples: ins.max_examples,
            dense_weight: ins.dense_weight,
            seed: self.seed ^ ins.round.unwrap_or(0),
        };
        let update = match h.local_update_from(candidate.as_ref().map(|(_, m)| m.clone()), &settings, Some(&ins.flat()))
        {
            Ok(u) => u,
            Err(HearthError::Federated { kind: FederatedFailure::Update, reason }) if candidate.is_some() => {
                warn!("the round's global model is unusable ({reason}); the installed model is kept");
                return Err(self.reject(HearthError::Federated {
                    kind: FederatedFailure::Update,
                    reason: format!("the round's global model is unusable ({reason}); the installed model is kept"),
                }));
            }
            // Too little to learn from, or training failed: the reply says
            // only that it failed; the caller gets the typed error.
            Err(e) => return Err(self.reject(e)),
        };
        if let Some((package, model)) = candidate
            && install
        {
            h.install_verified(package, model).map_err(|e| self.reject(e.into()))?;
        }
        // A secure round sends the masked update alone.
        let (segment_report, segment_report_epsilon) = match ins.aggregation {
            Aggregation::Secure => (None, 0.0),
            Aggregation::Plain => match self.segment_report(ins, &admitted.entries, admitted.terms, budget) {
                Ok(r) => r,
                Err(e) => return Err(self.reject(e)),
            },
        };
        let norms = (update.norm_before_clip, update.norm);
        self.charge(ins, admitted, RoundTask::Training, norms, segment_report_epsilon)?;
        Ok(LocalResult { delta: update.delta, examples: update.examples, segment_report })
    }

    /// A model-evaluation round: the candidate the round sends (signed;
    /// verified, never installed) scored against the installed model and
    /// the fallback on what this device held out of training
    /// (`Hearth::evaluate_candidate`). A device with nothing held out
    /// sends zeros (its "1, it reported" is 0, so it adds nothing to the
    /// gate's sums) and is charged as any other: whether it had anything to
    /// evaluate is not for the coordinator to learn.
    fn evaluate(&mut self, ins: &TrainInstruction) -> std::result::Result<Vec<f32>, String> {
        let admitted = self.admit(ins, RoundTask::Evaluation)?;
        let Some((_, candidate)) = self.signed_model(ins)? else {
            return Err(self.reject(
                Error::invalid("evaluation round", "no signed candidate model (model-manifest, model-signature)")
                    .into(),
            ));
        };
        let evaluation = self.hearth.evaluate_verified(&candidate).map_err(|e| self.reject(e))?;
        let values: Vec<f32> =
            evaluation.map_or([0.0; GATE_METRICS], |e| e.evaluation.contribution()).iter().map(|v| *v as f32).collect();
        let norm = l2(&values);
        self.charge(ins, admitted, RoundTask::Evaluation, (norm, norm), 0.0)?;
        Ok(values)
    }

    /// An experiment-report round: this install's report of the experiment
    /// the round names (`Hearth::experiment_report`), as its contribution
    /// to the per-arm sums (all zero but its own arm's; all zero when no
    /// row of the experiment was shown yet, so the coordinator cannot tell).
    /// The round's arms must be this device's, by name and in order.
    fn report(&mut self, ins: &TrainInstruction, arms: usize) -> std::result::Result<Vec<f32>, String> {
        let admitted = self.admit(ins, RoundTask::ExperimentReport)?;
        let h = self.hearth;
        let (Some(ConfigValue::String(id)), Some(ConfigValue::String(names))) =
            (ins.config("experiment-id"), ins.config("experiment-arms"))
        else {
            let why = "an experiment-report round without experiment-id and experiment-arms";
            return Err(self.reject(Error::invalid("experiment report", why).into()));
        };
        let experiments = h.experiments().map_err(|e| self.reject(e))?;
        let Some(experiment) = experiments.into_iter().find(|e| &e.id == id) else {
            return Err(self.reject(Error::invalid("experiment-id", "no such experiment on this device").into()));
        };
        let ours: Vec<&str> = experiment.arms.iter().map(|a| a.name.as_str()).collect();
        if names.split(',').collect::<Vec<_>>() != ours || ours.len() != arms {
            let why = "not this device's arms of the experiment, in order";
            return Err(self.reject(Error::invalid("experiment-arms", why).into()));
        }
        let report = h.experiment_report(id.clone()).map_err(|e| self.reject(e))?;
        let values: Vec<f32> = report.contribution(arms).iter().map(|v| *v as f32).collect();
        let norm = l2(&values);
        self.charge(ins, admitted, RoundTask::ExperimentReport, (norm, norm), 0.0)?;
        Ok(values)
    }
}

/// The items of a ConfigRecord.
type ConfigItems = Vec<(String, ConfigValue)>;

impl DeviceTrainer<'_> {
    /// The segment report to send with the update, and the local epsilon it
    /// spends: only when the round asks for one with the labels this device
    /// reports, the user agreed, and the budget has room for a new one.
    fn segment_report(
        &self,
        ins: &TrainInstruction,
        entries: &[LedgerEntry],
        terms: RoundTerms,
        budget: f64,
    ) -> std::result::Result<(Option<ConfigItems>, f64), HearthError> {
        let Some(ConfigValue::String(wanted)) = ins.config("segment-report-labels") else {
            return Ok((None, 0.0));
        };
        let h = self.hearth;
        let config = h.segment_config()?;
        if config.report_labels().join(",") != *wanted {
            info!("the round asks for segment labels this device does not report; none sent");
            return Ok((None, 0.0));
        }
        let worst = h.epsilon_spent(entries, Some(terms), config.report_epsilon)?;
        if worst > budget {
            info!("no segment report this round: it could take the epsilon spent above the budget");
            return Ok((None, 0.0));
        }
        match h.segment_report()? {
            SegmentReportOutcome::NoConsent => Ok((None, 0.0)),
            SegmentReportOutcome::Report { report } => Ok((
                Some(vec![
                    ("bits".into(), ConfigValue::Bytes(report.bits)),
                    ("bit-epsilon".into(), ConfigValue::Double(report.bit_epsilon)),
                ]),
                report.epsilon_spent,
            )),
        }
    }
}

#[uniffi::export]
impl Hearth {
    /// Whether this device may take part in a federated round now, and if
    /// not, every reason why. Reads the store only; contacts nothing.
    pub fn federated_eligibility(&self, conditions: DeviceConditions) -> std::result::Result<Eligibility, HearthError> {
        shield(|| {
            let reasons = self.ineligible_reasons(&self.federated_state()?, &conditions)?;
            Ok(if reasons.is_empty() { Eligibility::Eligible } else { Eligibility::NotEligible { reasons } })
        })
    }

    /// Takes part in one federated round with the coordinator's SuperLink
    /// at `coordinator_url` (`http://host:port` of its Fleet API; plain
    /// HTTP, for a coordinator on a private network or a test: over the
    /// internet use `participate_via` with the platform's HTTPS stack).
    ///
    /// Blocking: waits up to the store's `federated_round_wait_seconds` for
    /// a round, then trains and uploads (see the README for the whole
    /// bound). Call it from a background worker (WorkManager,
    /// BGProcessingTask), never the main thread. Other calls on this store
    /// proceed meanwhile.
    pub fn participate(
        &self,
        coordinator_url: String,
        conditions: DeviceConditions,
    ) -> std::result::Result<ParticipationOutcome, HearthError> {
        let url = coordinator_url.trim_end_matches('/');
        if !url.starts_with("http://") || url.len() <= "http://".len() || url.chars().any(char::is_whitespace) {
            return Err(Error::invalid(
                "coordinator_url",
                "must be http://host:port (for HTTPS, use participate_via with the platform's HTTP stack)",
            )
            .into());
        }
        self.participate_using(HttpTransport::new(url), conditions, ClientOptions::default())
    }

    /// As `participate`, over the app's own HTTP stack.
    pub fn participate_via(
        &self,
        transport: Arc<dyn FleetTransport>,
        conditions: DeviceConditions,
    ) -> std::result::Result<ParticipationOutcome, HearthError> {
        self.participate_using(ForeignTransport(transport), conditions, ClientOptions::default())
    }

    /// Stops the federated round running on this store, if any (from the
    /// host's stop signal: WorkManager's `onStopped`, a BGTask's expiration
    /// handler). `participate` then returns `Federated { kind: Cancelled }`
    /// within about 50 ms of its current call (a call in flight on the
    /// app's own transport finishes or times out first; local training,
    /// about a second, is not interrupted). An update already charged stays
    /// in the ledger, marked `Unconfirmed`.
    pub fn cancel_participation(&self) {
        self.round_cancel.store(true, Ordering::Relaxed);
    }

    /// The privacy ledger: every update that left the device, and the
    /// epsilon the person spent (with their other devices' entries, once
    /// sync brought them).
    pub fn privacy_ledger(&self) -> std::result::Result<PrivacyLedger, HearthError> {
        shield(|| {
            let entries = self.ledger_entries()?;
            let epsilon_spent = self.epsilon_spent(&entries, None, 0.0)?;
            Ok(PrivacyLedger {
                entries,
                epsilon_spent,
                delta: self.config.federated_delta,
                epsilon_budget: self.config.federated_epsilon_budget,
            })
        })
    }
}
