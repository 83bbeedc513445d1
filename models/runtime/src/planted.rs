//! Defects the harness's tests plant in the runtime model, to show that the
//! engine's default scenarios catch them. None is a defect of the original
//! (spec §15), none is on in either profile, and nothing but a test sets
//! one: they are one-line slips a maintainer could make, each revealed only
//! by an input the generators once never produced.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde_json::Value;

/// The planted defects; all off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedDefects {
    /// The projector takes `event_count` as `latest_seq` (and so as
    /// `runtime_source.seq`) where spec §2.3 says the last event's seq. The
    /// two differ only once event rows are removed.
    pub latest_seq_from_event_count: bool,
    /// The retention job also deletes the rows inserted exactly at its
    /// cutoff (`<=` for spec §7.6's `<`). Only a cutoff that lands on a
    /// row's `inserted_at` tells them apart.
    pub retention_cutoff_inclusive: bool,
    /// The retention job's cutoff is `now + horizon` (for `now − horizon`):
    /// every row is pruned, whatever the horizon. Only a run that should
    /// keep some rows tells them apart.
    pub retention_cutoff_ahead: bool,
    /// The projector trims the run's `terminal_reason` (spec §2.4 copies
    /// the row's string as it is). Only a reason with leading or trailing
    /// whitespace tells them apart.
    pub terminal_reason_trimmed: bool,
}

impl PlantedDefects {
    /// The summary as the planted projector builds it.
    pub fn summary(&self, mut summary: Value) -> Value {
        if self.latest_seq_from_event_count {
            let count = summary["event_count"].clone();
            summary["latest_seq"] = count.clone();
            summary["runtime_source"]["seq"] = count;
        }
        if self.terminal_reason_trimmed
            && let Some(reason) = summary["terminal_reason"].as_str()
        {
            summary["terminal_reason"] = Value::String(reason.trim().to_owned());
        }
        summary
    }

    /// The cutoff the planted retention job uses in place of the spec's
    /// (`now − horizon`). Kept here, out of `sync::retention`, so that a
    /// mutation tool mutates only the spec's arithmetic there.
    pub fn retention_cutoff(
        &self,
        spec_cutoff: NaiveDateTime,
        now: DateTime<Utc>,
        horizon: TimeDelta,
    ) -> NaiveDateTime {
        if self.retention_cutoff_ahead {
            (now + horizon).naive_utc()
        } else {
            spec_cutoff
        }
    }

    /// The comparison the planted retention job deletes rows by: the
    /// spec's `<`, or `<=`.
    pub fn retention_older_than(&self) -> &'static str {
        if self.retention_cutoff_inclusive {
            "<="
        } else {
            "<"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_planted_retention_job_moves_its_cutoff_or_its_comparison() {
        let now = DateTime::from_timestamp(1_771_531_200, 0).expect("time");
        let horizon = TimeDelta::seconds(60);
        let spec = (now - horizon).naive_utc();
        let clean = PlantedDefects::default();
        assert_eq!(clean.retention_cutoff(spec, now, horizon), spec);
        assert_eq!(clean.retention_older_than(), "<");
        let planted = PlantedDefects {
            retention_cutoff_ahead: true,
            retention_cutoff_inclusive: true,
            ..PlantedDefects::default()
        };
        assert_eq!(
            planted.retention_cutoff(spec, now, horizon),
            (now + horizon).naive_utc()
        );
        assert_eq!(planted.retention_older_than(), "<=");
    }

    #[test]
    fn only_the_planted_projector_takes_the_count_for_the_seq() {
        let summary = json!({"latest_seq": 5, "event_count": 2, "runtime_source": {"seq": 5}});
        assert_eq!(PlantedDefects::default().summary(summary.clone()), summary);
        let planted = PlantedDefects {
            latest_seq_from_event_count: true,
            ..PlantedDefects::default()
        };
        assert_eq!(
            planted.summary(summary),
            json!({"latest_seq": 2, "event_count": 2, "runtime_source": {"seq": 2}})
        );
    }

    #[test]
    fn only_the_planted_projector_trims_the_terminal_reason() {
        let summary = json!({"terminal_reason": " padded\t\n"});
        assert_eq!(PlantedDefects::default().summary(summary.clone()), summary);
        let planted = PlantedDefects {
            terminal_reason_trimmed: true,
            ..PlantedDefects::default()
        };
        assert_eq!(
            planted.summary(summary),
            json!({"terminal_reason": "padded"})
        );
        let null = json!({"terminal_reason": null});
        assert_eq!(planted.summary(null.clone()), null);
    }
}
