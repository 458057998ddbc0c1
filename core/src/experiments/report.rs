//! What one device reports for an experiment: per-device means over its
//! newest rows, for its own arm, each in [0, 1], so that one device moves
//! any sum by at most 1 per metric whatever its history.
//!
//! For each exposure (a row the experiment ranked), its *engagement* is the
//! first `Play` or `Complete` outcome after it and before the experiment's
//! next exposure. The row's NDCG@10 is 1 / log2(2 + p) when the engaged item
//! was at position p < 10 of the row (one relevant item, so the ideal DCG is
//! 1), else 0; its hit@10 is whether p < 10; it was *engaged* when there is
//! an engagement at all, and *completed* when an item it showed was
//! completed before the next exposure. A device's report is the mean of
//! each over its newest `MAX_REPORT_EXPOSURES` exposures.

use super::log::{ExperimentLogRecord, LogEntry, OutcomeKind};

/// Rows a report counts: the newest, at most this many.
pub const MAX_REPORT_EXPOSURES: u32 = 20;
/// The values one device adds per arm: [reported, NDCG@10, hit@10,
/// engaged, completed]; the first is 1 for a device with at least one row,
/// the others are its means.
pub const REPORT_METRICS: u32 = 5;

/// The bound on a contribution's L2 norm, sqrt(REPORT_METRICS): the unit of
/// an experiment-report round's noise.
pub fn report_bound() -> f64 {
    f64::from(REPORT_METRICS).sqrt()
}

/// A device's report for one experiment.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ExperimentReport {
    pub experiment_id: String,
    /// This install's arm, and its index in the experiment's arms.
    pub arm: String,
    pub arm_index: u32,
    /// Rows counted (0 to `MAX_REPORT_EXPOSURES`); the means are 0 when 0.
    pub exposures: u32,
    pub ndcg_at_10: f64,
    pub hit_rate_at_10: f64,
    pub engaged_rate: f64,
    pub completion_rate: f64,
}

impl ExperimentReport {
    /// The device's contribution to the per-arm sums: `REPORT_METRICS`
    /// values per arm, all zero but its own arm's (all zero when it has no
    /// row). Its L2 norm is at most sqrt(REPORT_METRICS).
    pub fn contribution(&self, arms: usize) -> Vec<f64> {
        let mut out = vec![0.0; arms * REPORT_METRICS as usize];
        if self.exposures > 0 && (self.arm_index as usize) < arms {
            let at = self.arm_index as usize * REPORT_METRICS as usize;
            out[at..at + REPORT_METRICS as usize].copy_from_slice(&[
                1.0,
                self.ndcg_at_10.clamp(0.0, 1.0),
                self.hit_rate_at_10.clamp(0.0, 1.0),
                self.engaged_rate.clamp(0.0, 1.0),
                self.completion_rate.clamp(0.0, 1.0),
            ]);
        }
        out
    }
}

/// Per-row results, in time order.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Row {
    dcg: f64,
    hit: bool,
    engaged: bool,
    completed: bool,
}

/// The report of `experiment` from its log records (oldest first; records
/// of other experiments are ignored).
pub(crate) fn build(
    experiment: &str,
    arm: &str,
    arm_index: usize,
    records: &[ExperimentLogRecord],
) -> ExperimentReport {
    let mut rows: Vec<Row> = Vec::new();
    // Whether the newest row already has its engagement.
    let mut settled = true;
    for r in records.iter().filter(|r| r.experiment == experiment) {
        match &r.entry {
            LogEntry::Exposure { .. } => {
                rows.push(Row::default());
                settled = false;
            }
            LogEntry::Outcome { kind, position, .. } => {
                let Some(row) = rows.last_mut() else { continue };
                let engagement = matches!(kind, OutcomeKind::Play | OutcomeKind::Complete);
                if engagement && !settled {
                    settled = true;
                    row.engaged = true;
                    if let Some(p) = position.filter(|&p| p < 10) {
                        row.hit = true;
                        row.dcg = 1.0 / (2.0 + p as f64).log2();
                    }
                }
                if *kind == OutcomeKind::Complete && position.is_some() {
                    row.completed = true;
                }
            }
        }
    }
    let newest = &rows[rows.len().saturating_sub(MAX_REPORT_EXPOSURES as usize)..];
    let n = newest.len();
    let mean = |f: fn(&Row) -> f64| if n == 0 { 0.0 } else { newest.iter().map(f).sum::<f64>() / n as f64 };
    ExperimentReport {
        experiment_id: experiment.into(),
        arm: arm.into(),
        arm_index: arm_index as u32,
        exposures: n as u32,
        ndcg_at_10: mean(|r| r.dcg),
        hit_rate_at_10: mean(|r| f64::from(u8::from(r.hit))),
        engaged_rate: mean(|r| f64::from(u8::from(r.engaged))),
        completion_rate: mean(|r| f64::from(u8::from(r.completed))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure(t: i64) -> ExperimentLogRecord {
        ExperimentLogRecord {
            experiment: "home".into(),
            arm: "model".into(),
            at_ms: t,
            entry: LogEntry::Exposure { items: vec!["a".into(), "b".into()] },
        }
    }

    fn outcome(t: i64, kind: OutcomeKind, position: Option<u32>) -> ExperimentLogRecord {
        ExperimentLogRecord {
            experiment: "home".into(),
            arm: "model".into(),
            at_ms: t,
            entry: LogEntry::Outcome { item_id: "a".into(), kind, position },
        }
    }

    #[test]
    fn each_row_counts_its_first_engagement() {
        let log = vec![
            // Before any row: ignored.
            outcome(0, OutcomeKind::Play, None),
            // Row 1: a click (not an engagement), then a play at 2, then a
            // play at 0 (not the first), then a completion it showed.
            exposure(1),
            outcome(2, OutcomeKind::Click, Some(0)),
            outcome(3, OutcomeKind::Play, Some(2)),
            outcome(4, OutcomeKind::Play, Some(0)),
            outcome(5, OutcomeKind::Complete, Some(0)),
            // Row 2: nothing.
            exposure(6),
            // Row 3: a play of something it did not show.
            exposure(7),
            outcome(8, OutcomeKind::Play, None),
            // Row 4: a play at 12 (past the top 10).
            exposure(9),
            outcome(10, OutcomeKind::Play, Some(12)),
        ];
        let r = build("home", "model", 1, &log);
        assert_eq!(r.exposures, 4);
        assert!((r.ndcg_at_10 - 0.5 / 4.0).abs() < 1e-12, "{}", r.ndcg_at_10); // 1/log2(4) = 0.5
        assert_eq!(r.hit_rate_at_10, 0.25);
        assert_eq!(r.engaged_rate, 0.75);
        assert_eq!(r.completion_rate, 0.25);
        let c = r.contribution(2);
        assert_eq!(&c[..5], &[0.0; 5]);
        assert_eq!(c[5], 1.0);
        assert!(c.iter().map(|v| v * v).sum::<f64>().sqrt() <= (REPORT_METRICS as f64).sqrt());
    }

    #[test]
    fn only_the_newest_rows_count_and_no_row_reports_nothing() {
        let mut log = Vec::new();
        for i in 0..50 {
            log.push(exposure(2 * i));
            // The old rows were all hits at position 0; the newest 20 none.
            if i < 30 {
                log.push(outcome(2 * i + 1, OutcomeKind::Play, Some(0)));
            }
        }
        let r = build("home", "model", 0, &log);
        assert_eq!(r.exposures, MAX_REPORT_EXPOSURES);
        assert_eq!(r.ndcg_at_10, 0.0);
        let none = build("other", "model", 0, &log);
        assert_eq!(none.exposures, 0);
        assert!(none.contribution(2).iter().all(|&v| v == 0.0));
    }
}
