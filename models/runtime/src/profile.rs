//! The two behaviours of the models: `legacy` reproduces the 2026-02 system
//! with its known defects (spec §15), `hardened` fixes each one. Every defect
//! on the projection path has its own named switch so a test can turn one on
//! alone.

use std::fmt;
use std::str::FromStr;

/// Which system the models behave as; chosen once, at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Legacy,
    Hardened,
}

impl Profile {
    pub const ALL: [Profile; 2] = [Profile::Legacy, Profile::Hardened];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Legacy => "legacy",
            Profile::Hardened => "hardened",
        }
    }

    /// The switches of this profile: all defects on for `legacy`, all off for
    /// `hardened`.
    pub fn switches(self) -> Switches {
        match self {
            Profile::Legacy => Switches::LEGACY,
            Profile::Hardened => Switches::HARDENED,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// An unknown profile name; lists the valid ones.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown profile `{given}` (valid: legacy, hardened)")]
pub struct UnknownProfile {
    pub given: String,
}

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "legacy" => Ok(Profile::Legacy),
            "hardened" => Ok(Profile::Hardened),
            other => Err(UnknownProfile {
                given: other.to_owned(),
            }),
        }
    }
}

/// One flag per defect of spec §15 on the projection and delivery paths.
/// `true` means the model behaves as the original did (the defect is present).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Switches {
    /// B1: the fanout calls sinks in configured order and never compensates;
    /// a failure after an external sink leaves that sink ahead. Fix: run the
    /// transactional sinks (Khala) first, external ones last, and record the
    /// failed projection for a repair pass.
    pub b1_fanout_partial_success: bool,
    /// B3: a sink-mode switch does not backfill; entities whose seq did not
    /// move stay `idempotent` and never reach the new sink. Fix: a switch that
    /// adds a target re-projects every entity.
    pub b3_sink_switch_skips_backfill: bool,
    /// B4: `run.finished` / `worker.stopped` (ingest) is appended, and so
    /// projected, before the terminal status is stored on the row. Fix: store
    /// the status first.
    pub b4_terminal_status_after_event: bool,
    /// B5: the summary is built before the checkpoint lock, so an older build
    /// can commit last at the same seq. Fix: build it under the lock.
    pub b5_summary_built_before_lock: bool,
    /// B6: with no checkpoint row nothing is locked; concurrent first
    /// projections both write and the second checkpoint insert raises. Fix: a
    /// transaction-scoped advisory lock per entity and an upsert.
    pub b6_first_projection_unlocked: bool,
    /// B7: a checkpoint ahead of the authority skips every write until a
    /// rebuild. Fix: the authority wins; the projection is written and the
    /// checkpoint reset to the real seq.
    pub b7_checkpoint_ahead_skips: bool,
    /// B8: a projection-version bump rewrites documents lazily, only on
    /// each entity's next projection. Fix: the bump re-projects every entity.
    pub b8_version_bump_lazy: bool,
    /// B9: when retention prunes a topic's whole journal, `oldest` is nil, the
    /// stale floor reads 0 and no cursor is ever stale, so clients inside the
    /// pruned range silently miss events (deletion by `inserted_at` can also
    /// leave holes above the oldest retained row). Fix: retention records a
    /// per-topic `pruned_through` watermark (`runtime.sync_retention_floors`)
    /// and the floor is `max(oldest − 1, pruned_through, 0)`.
    pub b9_full_prune_floor_zero: bool,
    /// B10: the stale check only looks at topics with a `resume_after` entry,
    /// so a subscribe without a cursor replays whatever is retained with no
    /// signal that older events were pruned: documents whose rows were
    /// pruned never reach the client. Fix: a topic without any cursor whose
    /// retention floor is above 0 is answered with a snapshot of every
    /// read-model row (updates at the floor's watermark) and then the
    /// journal after the floor, so the shipped client, which clears its
    /// cursor on `stale_cursor` and subscribes again without one, converges
    /// unchanged. A cursor below the floor is still `stale_cursor`.
    pub b10_stale_check_only_with_cursor: bool,
    /// B11: the Khala sink wakes subscribers inside the open transaction. Fix:
    /// wake them after commit.
    pub b11_wake_before_commit: bool,
    /// B12 on the server side: when the channel stops a client that sent
    /// no heartbeat (`phx_close`), the socket stays open until its idle
    /// timeout, a minute later (facts §3). The shipped client ignores
    /// `phx_close` and notices only a closed socket, so it hears nothing
    /// for that minute. Fix: the socket closes with the channel, so the
    /// unchanged shipped client reconnects on its first backoff (1 s) and
    /// resumes from its watermark.
    pub b12_socket_outlives_channel: bool,
    /// B16: the read-model upsert has no version guard. Fix: a lower
    /// `doc_version` never overwrites a higher one.
    pub b16_no_version_guard: bool,
    /// B17: reprojection deletes the checkpoint outside the projector
    /// transaction. Fix: delete and re-project in one transaction.
    pub b17_reprojection_gap: bool,
    /// B20: a cursor above the topic's head (after a restore or a counter
    /// reset) gets no replay and keeps its cursor, so new events at or below
    /// it are never delivered. Fix: such a cursor is answered with
    /// `stale_cursor` (with the head), like one below the floor.
    pub b20_cursor_ahead_of_head: bool,
    /// B21: `resume_after` keys are not trimmed while topics are, so a key with
    /// stray whitespace is ignored and the topic replays from the socket
    /// cursor or 0 (and skips the stale check). Fix: trim the keys too.
    pub b21_resume_keys_untrimmed: bool,
    /// B2: the parity auditor never reads Convex; it compares the checkpoint
    /// (what was last sent) with the Khala read model, so a Convex document
    /// that drifted (B1 partial fanout, a direct overwrite) is reported `ok`.
    /// Fix: the auditor also reads each sampled Convex document and reports
    /// `convex_missing`, `convex_hash_mismatch` or `convex_lag_drift` when it
    /// disagrees with the checkpoint.
    pub b2_auditor_blind_to_convex: bool,
    /// B18: the auditor samples only the `sample_size` most recently updated
    /// checkpoints, so quiet entities are never re-checked. Fix: a cursor in
    /// the auditor sweeps every checkpoint in a stable order, `sample_size`
    /// per cycle, wrapping around.
    pub b18_sampling_most_recent_only: bool,
    /// Issue 14: the projection hands every summary to the sinks whatever
    /// its values, so a value Convex refuses (a non-ASCII field name, a
    /// document past a limit) is written to Khala alone, and an integer
    /// beyond ±2^53 is held by Convex as another number than Khala holds.
    /// Fix: the projector refuses a summary Convex cannot hold exactly
    /// (`ProjectionError::ConvexValueRefused`), before any store is written.
    pub convex_values_unguarded: bool,
}

impl Switches {
    pub const LEGACY: Switches = Switches {
        b1_fanout_partial_success: true,
        b3_sink_switch_skips_backfill: true,
        b4_terminal_status_after_event: true,
        b5_summary_built_before_lock: true,
        b6_first_projection_unlocked: true,
        b7_checkpoint_ahead_skips: true,
        b8_version_bump_lazy: true,
        b9_full_prune_floor_zero: true,
        b10_stale_check_only_with_cursor: true,
        b11_wake_before_commit: true,
        b12_socket_outlives_channel: true,
        b16_no_version_guard: true,
        b17_reprojection_gap: true,
        b20_cursor_ahead_of_head: true,
        b21_resume_keys_untrimmed: true,
        b2_auditor_blind_to_convex: true,
        b18_sampling_most_recent_only: true,
        convex_values_unguarded: true,
    };

    pub const HARDENED: Switches = Switches {
        b1_fanout_partial_success: false,
        b3_sink_switch_skips_backfill: false,
        b4_terminal_status_after_event: false,
        b5_summary_built_before_lock: false,
        b6_first_projection_unlocked: false,
        b7_checkpoint_ahead_skips: false,
        b8_version_bump_lazy: false,
        b9_full_prune_floor_zero: false,
        b10_stale_check_only_with_cursor: false,
        b11_wake_before_commit: false,
        b12_socket_outlives_channel: false,
        b16_no_version_guard: false,
        b17_reprojection_gap: false,
        b20_cursor_ahead_of_head: false,
        b21_resume_keys_untrimmed: false,
        b2_auditor_blind_to_convex: false,
        b18_sampling_most_recent_only: false,
        convex_values_unguarded: false,
    };
}

impl Default for Switches {
    fn default() -> Self {
        Switches::LEGACY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_round_trip_and_unknown_names_list_the_valid_ones() {
        for profile in Profile::ALL {
            assert_eq!(profile.as_str().parse::<Profile>(), Ok(profile));
        }
        let error = "strict".parse::<Profile>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown profile `strict` (valid: legacy, hardened)"
        );
    }

    #[test]
    fn legacy_has_every_defect_and_hardened_none() {
        let legacy = serde_json::to_value(Profile::Legacy.switches()).unwrap();
        let hardened = serde_json::to_value(Profile::Hardened.switches()).unwrap();
        let legacy = legacy.as_object().unwrap();
        assert!(legacy.values().all(|on| on == true));
        assert!(hardened.as_object().unwrap().values().all(|on| on == false));
        assert_eq!(legacy.len(), 18);
    }
}
