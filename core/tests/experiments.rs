//! Experiments on the device: the arm is stable and private, the rows obey
//! it, and the log of what was shown and done is sealed, bounded, exported,
//! forgotten and deleted with the rest of the history.

mod common;

use std::path::Path;

use common::*;
use hearth_core::*;

fn ctx() -> RankContext {
    RankContext { device: DeviceClass::Tv, local_hour: 21, locale: Some("en-GB".into()) }
}

fn experiment(id: &str, arms: &[(&str, ArmTreatment)]) -> Experiment {
    Experiment {
        id: id.into(),
        arms: arms
            .iter()
            .map(|(name, treatment)| ExperimentArm { name: (*name).into(), share: 1.0, treatment: treatment.clone() })
            .collect(),
    }
}

/// An experiment whose every arm is `treatment`, so the test knows what
/// the install gets whatever it draws.
fn only(id: &str, treatment: ArmTreatment) -> Experiment {
    experiment(id, &[("first", treatment.clone()), ("second", treatment)])
}

/// A store with a catalog of 60 items and some history.
fn store(dir: &Path) -> std::sync::Arc<Hearth> {
    let h = open(dir, KEY_A).unwrap();
    let items: Vec<CatalogItem> = (0..60)
        .map(|i| {
            let mut it = item(&format!("secret-title-{i:02}"), &format!("Title {i}"), &["drama"]);
            it.popularity = i as f64;
            it
        })
        .collect();
    h.upsert_catalog(items).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for i in 0..10 {
        h.record(event(&format!("secret-title-{i:02}"), EventKind::Complete, now - 3_600_000 + i)).unwrap();
    }
    h
}

fn with_experiment(options: RankOptions, id: &str) -> RankOptions {
    RankOptions { experiment: Some(id.into()), ..options }
}

#[test]
fn the_arm_is_stable_across_restarts_and_new_after_delete_all() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..8).map(|i| format!("exp-{i}")).collect();
    let eight: Vec<(String, ArmTreatment)> = (0..8).map(|i| (format!("arm{i}"), ArmTreatment::Model)).collect();
    let define = |h: &Hearth| -> Vec<String> {
        ids.iter()
            .map(|id| {
                let arms: Vec<(&str, ArmTreatment)> = eight.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
                h.define_experiment(experiment(id, &arms)).unwrap()
            })
            .collect()
    };
    let h = open(dir.path(), KEY_A).unwrap();
    let first = define(&h);
    assert_eq!(ids.iter().map(|id| h.experiment_arm(id.clone()).unwrap()).collect::<Vec<_>>(), first);
    drop(h);
    let h = open(dir.path(), KEY_A).unwrap();
    assert_eq!(ids.iter().map(|id| h.experiment_arm(id.clone()).unwrap()).collect::<Vec<_>>(), first);
    // A new root key re-seals the secret; the arms stay.
    h.rekey(keys(KEY_B)).unwrap();
    assert_eq!(ids.iter().map(|id| h.experiment_arm(id.clone()).unwrap()).collect::<Vec<_>>(), first);
    h.delete_all().unwrap();
    assert!(h.experiments().unwrap().is_empty(), "delete_all removes the definitions");
    // Eight experiments of eight arms: the same draw again by chance is 8^-8.
    assert_ne!(define(&h), first, "delete_all draws a new secret");

    // The secret is the install's own: another store under the same root
    // key draws other arms.
    let other = tempfile::tempdir().unwrap();
    let h2 = open(other.path(), KEY_B).unwrap();
    assert_ne!(define(&h2), define(&h));
}

#[test]
fn bad_definitions_and_unknown_experiments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    let bad = experiment("x", &[("only", ArmTreatment::Model)]);
    assert!(matches!(h.define_experiment(bad), Err(HearthError::InvalidInput { .. })));
    assert!(h.experiments().unwrap().is_empty());
    assert!(matches!(h.experiment_arm("nope".into()), Err(HearthError::InvalidInput { .. })));
    let options = with_experiment(RankOptions::new(ctx()), "nope");
    assert!(matches!(h.rank_catalog(options), Err(HearthError::InvalidInput { .. })));
    assert!(matches!(
        h.log_outcome("nope".into(), "a".into(), OutcomeKind::Play),
        Err(HearthError::InvalidInput { .. })
    ));
    for i in 0..MAX_EXPERIMENTS {
        h.define_experiment(only(&format!("e{i}"), ArmTreatment::Model)).unwrap();
    }
    assert!(matches!(
        h.define_experiment(only("one-too-many", ArmTreatment::Model)),
        Err(HearthError::InvalidInput { .. })
    ));
    assert!(h.remove_experiment("e0".into()).unwrap());
    assert!(!h.remove_experiment("e0".into()).unwrap());
    h.define_experiment(only("one-more", ArmTreatment::Model)).unwrap();
}

#[test]
fn rows_follow_the_arm_and_are_labelled() {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    h.define_experiment(only("model", ArmTreatment::Model)).unwrap();
    h.define_experiment(only("fallback", ArmTreatment::Fallback)).unwrap();
    h.define_experiment(only(
        "capped",
        ArmTreatment::ModelWithDiversity { diversity: Diversity::CategoryCap { max_per_category: 3 } },
    ))
    .unwrap();

    let plain = h.rank_catalog(RankOptions::new(ctx())).unwrap();
    assert_eq!(plain.experiment_arm, None);
    let model = h.rank_catalog(with_experiment(RankOptions::new(ctx()), "model")).unwrap();
    assert!(model.personalized);
    assert_eq!(model.items, plain.items, "the model arm ranks as without an experiment");
    assert!(model.experiment_arm.is_some());

    let fallback = h.rank_catalog(with_experiment(RankOptions::new(ctx()), "fallback")).unwrap();
    assert!(!fallback.personalized);
    assert_eq!(fallback.ranker, Ranker::Fallback { why: FallbackReason::ExperimentArm });

    // The cap replaces the request's diversity: every item is drama, so 3
    // items fill the row before the rest (past the cap) do.
    let capped = h.rank_catalog(with_experiment(RankOptions::new(ctx()), "capped")).unwrap();
    let capped_direct = h
        .rank_catalog(RankOptions {
            diversity: Diversity::CategoryCap { max_per_category: 3 },
            ..RankOptions::new(ctx())
        })
        .unwrap();
    assert_eq!(capped.items, capped_direct.items);

    // The user's choice comes first: with personalization off, every arm
    // gets the fallback labelled as the user's choice, and nothing is logged.
    let before = h.experiment_status("fallback".into()).unwrap().exposures;
    h.set_personalization(false).unwrap();
    let off = h.rank_catalog(with_experiment(RankOptions::new(ctx()), "fallback")).unwrap();
    assert_eq!(off.ranker, Ranker::Fallback { why: FallbackReason::PersonalizationOff });
    assert_eq!(off.experiment_arm, None, "no arm applied");
    assert_eq!(h.experiment_status("fallback".into()).unwrap().exposures, before);
    assert!(!h.experiment_status("fallback".into()).unwrap().logging);
}

#[test]
fn outcomes_carry_the_position_the_row_showed() {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    h.define_experiment(only("home", ArmTreatment::Model)).unwrap();
    // Before any row: logged without a position.
    assert_eq!(
        h.log_outcome("home".into(), "secret-title-40".into(), OutcomeKind::Click).unwrap(),
        OutcomeLogged::Logged { position: None }
    );
    let row = h.rank_catalog(with_experiment(RankOptions { limit: 30, ..RankOptions::new(ctx()) }, "home")).unwrap();
    let third = row.items[2].item_id.clone();
    assert_eq!(
        h.log_outcome("home".into(), third.clone(), OutcomeKind::Play).unwrap(),
        OutcomeLogged::Logged { position: Some(2) }
    );
    // Past the exposure's top: no position.
    let deep = row.items[25].item_id.clone();
    assert_eq!(
        h.log_outcome("home".into(), deep, OutcomeKind::Play).unwrap(),
        OutcomeLogged::Logged { position: None }
    );
    let status = h.experiment_status("home".into()).unwrap();
    assert_eq!((status.exposures, status.outcomes), (1, 3));

    h.set_history_paused(true).unwrap();
    assert_eq!(h.log_outcome("home".into(), third, OutcomeKind::Complete).unwrap(), OutcomeLogged::Paused);
    h.rank_catalog(with_experiment(RankOptions::new(ctx()), "home")).unwrap();
    let status = h.experiment_status("home".into()).unwrap();
    assert_eq!((status.exposures, status.outcomes), (1, 3), "nothing is logged while paused");
}

#[test]
fn the_log_is_sealed_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    h.define_experiment(experiment(
        "needle-experiment",
        &[("needle-arm-model", ArmTreatment::Model), ("needle-arm-fallback", ArmTreatment::Fallback)],
    ))
    .unwrap();
    h.upsert_catalog(vec![item("needle-item-7f3a", "Needle", &["drama"])]).unwrap();
    for _ in 0..5 {
        h.rank_catalog(with_experiment(RankOptions { limit: 80, ..RankOptions::new(ctx()) }, "needle-experiment"))
            .unwrap();
        h.log_outcome("needle-experiment".into(), "needle-item-7f3a".into(), OutcomeKind::Complete).unwrap();
    }
    assert_eq!(h.experiment_status("needle-experiment".into()).unwrap().outcomes, 5);
    h.flush().unwrap();
    // Neither the ids, the arm names nor an exposure's structure appear in
    // any file of the store (main file, WAL, journal), before or after a
    // checkpoint.
    for phase in ["live", "closed"] {
        for needle in
            ["needle-experiment", "needle-arm", "needle-item-7f3a", "secret-title-", "exposure", "outcome", "\"items\""]
        {
            assert!(
                files_containing(dir.path(), needle.as_bytes()).is_empty(),
                "{phase}: {needle} in {:?}",
                files_containing(dir.path(), needle.as_bytes())
            );
        }
        if phase == "live" {
            h.close().unwrap();
        }
    }
}

#[test]
fn the_log_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    h.define_experiment(only("home", ArmTreatment::Model)).unwrap();
    for i in 0..MAX_LOG_RECORDS + 50 {
        h.log_outcome("home".into(), format!("item-{i}"), OutcomeKind::Play).unwrap();
    }
    assert_eq!(h.experiment_status("home".into()).unwrap().outcomes, MAX_LOG_RECORDS as u64);
    let doc: serde_json::Value = serde_json::from_str(&h.export_json().unwrap()).unwrap();
    let log = doc["experiments"]["log"].as_array().unwrap();
    assert_eq!(log.len(), MAX_LOG_RECORDS as usize);
    // The oldest went.
    assert_eq!(log[0]["entry"]["item_id"], "item-50");
}

#[test]
fn export_forget_and_delete_all_cover_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    let arm = h.define_experiment(only("home", ArmTreatment::Model)).unwrap();
    let row = h.rank_catalog(with_experiment(RankOptions::new(ctx()), "home")).unwrap();
    let top = row.items[0].item_id.clone();
    let second = row.items[1].item_id.clone();
    h.log_outcome("home".into(), top.clone(), OutcomeKind::Play).unwrap();
    h.log_outcome("home".into(), second.clone(), OutcomeKind::Play).unwrap();

    let doc: serde_json::Value = serde_json::from_str(&h.export_json().unwrap()).unwrap();
    let exported = &doc["experiments"];
    assert_eq!(exported["definitions"][0]["id"], "home");
    assert_eq!(exported["assignments"][0]["arm"], arm.as_str());
    let log = exported["log"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["entry"]["type"], "exposure");
    assert_eq!(log[0]["entry"]["items"][0], top.as_str());
    assert_eq!(log[1]["entry"]["item_id"], top.as_str());
    assert_eq!(log[1]["entry"]["position"], 0);
    // The document still imports (the experiments part is ignored).
    let other = tempfile::tempdir().unwrap();
    open(other.path(), KEY_A).unwrap().import_json(h.export_json().unwrap()).unwrap();

    // Forgetting the top item removes its outcome and empties its slot in
    // the exposure; the others keep their positions.
    h.forget_item(top.clone()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&h.export_json().unwrap()).unwrap();
    let log = doc["experiments"]["log"].as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["entry"]["items"][0], "");
    assert_eq!(log[0]["entry"]["items"][1], second.as_str());
    assert_eq!(log[1]["entry"]["item_id"], second.as_str());
    assert_eq!(log[1]["entry"]["position"], 1);
    assert!(files_containing(dir.path(), top.as_bytes()).is_empty());
    // The forgotten item no longer has a position in the row.
    assert_eq!(h.log_outcome("home".into(), top, OutcomeKind::Play).unwrap(), OutcomeLogged::Logged { position: None });

    h.delete_all().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&h.export_json().unwrap()).unwrap();
    assert!(doc["experiments"]["log"].as_array().unwrap().is_empty());
    assert!(doc["experiments"]["definitions"].as_array().unwrap().is_empty());
    assert!(doc["experiments"]["assignments"].as_array().unwrap().is_empty());
}

#[test]
fn redefining_with_new_arms_clears_the_log_and_rekey_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    h.define_experiment(only("home", ArmTreatment::Model)).unwrap();
    h.rank_catalog(with_experiment(RankOptions::new(ctx()), "home")).unwrap();
    h.log_outcome("home".into(), "secret-title-01".into(), OutcomeKind::Play).unwrap();
    // The same definition again keeps the log.
    h.define_experiment(only("home", ArmTreatment::Model)).unwrap();
    h.rekey(keys(KEY_B)).unwrap();
    drop(h);
    let h = open(dir.path(), KEY_B).unwrap();
    let status = h.experiment_status("home".into()).unwrap();
    assert_eq!((status.exposures, status.outcomes), (1, 1));
    h.define_experiment(only("home", ArmTreatment::Fallback)).unwrap();
    let status = h.experiment_status("home".into()).unwrap();
    assert_eq!((status.exposures, status.outcomes), (0, 0));
}
