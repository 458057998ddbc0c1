//! Experiments on the device: the arms an app defines, the arm this install
//! is in, and the sealed log of what an experiment's rows showed and what
//! the user did with them.
//!
//! Nothing here leaves the device. The arm comes from a keyed hash of a
//! random secret kept sealed in the store (`assignment`), not from anything
//! the coordinator or the app's backend knows; the log (`log`) is bounded,
//! exported, forgotten with an item, trimmed by retention and destroyed by
//! `delete_all` like the history. A device's report (`report`) is a few
//! bounded per-device means for its own arm; many devices' reports, summed
//! with noise, give per-arm estimates with intervals (`estimate`); devices'
//! evaluations of a candidate model, summed the same way, decide whether it
//! is published (`gate`).

pub(crate) mod assignment;
pub(crate) mod estimate;
pub(crate) mod evaluation;
pub(crate) mod gate;
pub(crate) mod log;
pub(crate) mod report;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ranking::Diversity;
use crate::store::Store;

/// How many experiments a device holds at once.
pub const MAX_EXPERIMENTS: u32 = 8;
/// How many arms an experiment has at most (and at least 2).
pub const MAX_ARMS: u32 = 8;
/// The longest experiment id or arm name, in bytes.
pub const MAX_EXPERIMENT_NAME: u32 = 64;
/// The largest share an arm may be given (shares are relative).
const MAX_SHARE: f64 = 1e6;

/// The state record holding the definitions.
pub(crate) const DEFINITIONS: &str = "experiments";

/// An experiment: named arms, each with its share of installs and what it
/// changes in ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct Experiment {
    /// 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`.
    pub id: String,
    /// 2 to 8 arms with distinct names.
    pub arms: Vec<ExperimentArm>,
}

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct ExperimentArm {
    /// Same rules as an experiment id.
    pub name: String,
    /// This arm's share of installs, relative to the others' (finite,
    /// greater than 0, at most 10^6; the shares need not add up to 1).
    pub share: f64,
    pub treatment: ArmTreatment,
}

/// What an arm changes in the rows it ranks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Enum)]
pub enum ArmTreatment {
    /// The model ranks, as without an experiment.
    Model,
    /// The non-personalized fallback ranks (labelled
    /// `FallbackReason::ExperimentArm`).
    Fallback,
    /// The model ranks, spread by this diversity instead of the request's.
    ModelWithDiversity { diversity: Diversity },
}

fn check_name(field: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_EXPERIMENT_NAME as usize
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("must be 1 to {MAX_EXPERIMENT_NAME} bytes of [A-Za-z0-9._-]")))
    }
}

impl Experiment {
    pub(crate) fn validate(&self) -> Result<()> {
        check_name("experiment.id", &self.id)?;
        if self.arms.len() < 2 || self.arms.len() > MAX_ARMS as usize {
            return Err(Error::invalid("experiment.arms", format!("must be 2 to {MAX_ARMS}")));
        }
        for (i, arm) in self.arms.iter().enumerate() {
            check_name("experiment.arms.name", &arm.name)?;
            if self.arms[..i].iter().any(|a| a.name == arm.name) {
                return Err(Error::invalid("experiment.arms.name", format!("\"{}\" is named twice", arm.name)));
            }
            if !(arm.share.is_finite() && arm.share > 0.0 && arm.share <= MAX_SHARE) {
                return Err(Error::invalid("experiment.arms.share", "must be finite, above 0 and at most 10^6"));
            }
            if let ArmTreatment::ModelWithDiversity { diversity } = &arm.treatment {
                diversity.validate()?;
            }
        }
        Ok(())
    }
}

/// The experiments defined on this device, in the order they were defined.
pub(crate) fn load(store: &Store) -> Result<Vec<Experiment>> {
    Ok(store.get_json(DEFINITIONS)?.unwrap_or_default())
}

pub(crate) fn save(store: &mut Store, experiments: &[Experiment]) -> Result<()> {
    store.put_json(DEFINITIONS, experiments)
}

/// Adds `experiment`, or replaces the one with its id; returns whether an
/// earlier definition with different arms was replaced (its log is then
/// stale: the caller clears it).
pub(crate) fn define(store: &mut Store, experiment: Experiment) -> Result<bool> {
    experiment.validate()?;
    let mut all = load(store)?;
    let changed = match all.iter_mut().find(|e| e.id == experiment.id) {
        Some(old) => {
            let changed = old.arms != experiment.arms;
            *old = experiment;
            changed
        }
        None => {
            if all.len() >= MAX_EXPERIMENTS as usize {
                return Err(Error::invalid("experiment", format!("at most {MAX_EXPERIMENTS} experiments at once")));
            }
            all.push(experiment);
            false
        }
    };
    save(store, &all)?;
    Ok(changed)
}

/// Removes the experiment `id`; false when none had it.
pub(crate) fn remove(store: &mut Store, id: &str) -> Result<bool> {
    let mut all = load(store)?;
    let before = all.len();
    all.retain(|e| e.id != id);
    if all.len() == before {
        return Ok(false);
    }
    save(store, &all)?;
    Ok(true)
}

/// The definition of `id`, or `InvalidInput` naming it.
pub(crate) fn find(store: &Store, id: &str) -> Result<Experiment> {
    load(store)?
        .into_iter()
        .find(|e| e.id == id)
        .ok_or_else(|| Error::invalid("experiment", format!("no experiment \"{id}\" is defined on this device")))
}

/// A standard normal draw (Box-Muller), for the tests of `estimate` and
/// `gate`.
#[cfg(test)]
pub(crate) fn standard_normal(rng: &mut rand::rngs::StdRng) -> f64 {
    use rand::Rng;
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_arms(id: &str) -> Experiment {
        Experiment {
            id: id.into(),
            arms: vec![
                ExperimentArm { name: "model".into(), share: 1.0, treatment: ArmTreatment::Model },
                ExperimentArm { name: "fallback".into(), share: 1.0, treatment: ArmTreatment::Fallback },
            ],
        }
    }

    #[test]
    fn definitions_are_checked() {
        assert!(two_arms("home-row.v1").validate().is_ok());
        let bad_id = |id: &str| two_arms(id).validate().is_err();
        assert!(bad_id(""));
        assert!(bad_id("has space"));
        assert!(bad_id(&"x".repeat(65)));
        assert!(bad_id("é"));
        let mut e = two_arms("x");
        e.arms.truncate(1);
        assert!(e.validate().is_err(), "one arm");
        let mut e = two_arms("x");
        e.arms[1].name = "model".into();
        assert!(e.validate().is_err(), "duplicate arm");
        for share in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e6] {
            let mut e = two_arms("x");
            e.arms[0].share = share;
            assert!(e.validate().is_err(), "share {share}");
        }
        let mut e = two_arms("x");
        e.arms[0].treatment = ArmTreatment::ModelWithDiversity { diversity: Diversity::Mmr { lambda: 2.0 } };
        assert!(e.validate().is_err(), "bad diversity");
        let mut e = two_arms("x");
        e.arms = (0..9).map(|i| ExperimentArm { name: format!("a{i}"), ..e.arms[0].clone() }).collect();
        assert!(e.validate().is_err(), "nine arms");
    }
}
