//! Defects the harness's tests plant in the runtime model, to show that the
//! engine's default scenarios catch them. None is a defect of the original
//! (spec §15), none is on in either profile, and nothing but a test sets
//! one: they are one-line slips a maintainer could make, each revealed only
//! by an input the generators once never produced.

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
}

impl PlantedDefects {
    /// The summary as the planted projector builds it.
    pub fn summary(&self, mut summary: Value) -> Value {
        if self.latest_seq_from_event_count {
            let count = summary["event_count"].clone();
            summary["latest_seq"] = count.clone();
            summary["runtime_source"]["seq"] = count;
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
