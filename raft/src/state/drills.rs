//! The recent drills' reports (records in [`crate::records`]).
//!
//! Keys: `Z` + sequence (u64 BE) [`DrillReportRecord`]. The sequence
//! follows the last key kept, so key order is the order the reports were
//! recorded in, and at most [`DRILL_REPORTS_KEPT`] stay: recording one
//! more drops the oldest in the same step.

use super::{Changes, StateError, StateRead};
use crate::command::*;

pub const DRILL_PREFIX: &[u8] = b"Z";

pub fn drill_key(seq: u64) -> Vec<u8> {
    let mut k = DRILL_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Option<u64> {
    key.strip_prefix(DRILL_PREFIX).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
}

pub(crate) fn record(state: &impl StateRead, ch: &mut Changes, rec: &DrillReportRecord) -> Result<MetaResponse, StateError> {
    if let Err(why) = rec.check_bounds() {
        return Ok(MetaResponse::Refused(why.to_string()));
    }
    let kept = state.scan_raw(DRILL_PREFIX)?;
    let next = kept.last().and_then(|(k, _)| seq_of(k)).map_or(0, |s| s + 1);
    ch.put(drill_key(next), rec);
    let over = (kept.len() + 1).saturating_sub(DRILL_REPORTS_KEPT);
    for (k, _) in kept.into_iter().take(over) {
        ch.delete(k);
    }
    Ok(MetaResponse::Done)
}

/// The reports kept, newest first.
pub fn reports(state: &impl StateRead) -> Result<Vec<DrillReportRecord>, StateError> {
    let mut out: Vec<DrillReportRecord> = state.scan(DRILL_PREFIX)?;
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemState;

    fn report(target: &str) -> DrillReportRecord {
        DrillReportRecord {
            kind: DrillKind::Region,
            by: "admin".into(),
            started_ms: 1,
            ended_ms: 2,
            target: target.into(),
            nodes: vec![3],
            figures_json: "{}".into(),
        }
    }

    #[test]
    fn the_newest_reports_are_kept_newest_first() {
        let s = MemState::default();
        for i in 0..DRILL_REPORTS_KEPT + 3 {
            assert_eq!(s.run(MetaCommand::RecordDrill(report(&format!("r{i}")))), MetaResponse::Done);
        }
        let kept = reports(&s).unwrap();
        assert_eq!(kept.len(), DRILL_REPORTS_KEPT, "the oldest are dropped");
        assert_eq!(kept[0].target, format!("r{}", DRILL_REPORTS_KEPT + 2), "newest first");
        assert_eq!(kept.last().unwrap().target, "r3");
    }

    #[test]
    fn a_report_out_of_bounds_is_refused_and_changes_nothing() {
        let s = MemState::default();
        let big = DrillReportRecord { figures_json: "x".repeat(DRILL_FIGURES_MAX + 1), ..report("eu") };
        let backwards = DrillReportRecord { started_ms: 5, ended_ms: 4, ..report("eu") };
        for bad in [report(""), report(&"e".repeat(DRILL_TARGET_MAX + 1)), report("e\nu"), big, backwards] {
            assert!(matches!(s.run(MetaCommand::RecordDrill(bad)), MetaResponse::Refused(_)));
        }
        assert!(reports(&s).unwrap().is_empty());
    }
}
