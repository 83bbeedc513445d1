//! The delivery and client checks (X3, X4, D2, D3, D7, R1) on the clients'
//! observation after a step: what each lane shows and received, what each
//! subscribe was answered, and what a retention run did.

use super::invariants::{Recorder, differing_keys};
use crate::model::case::Surface;
use crate::model::observation::{Observation, document_seq};
use crate::model::reason::{DeliveryClass, JournalClass, LaneClass};
use crate::model::trace::{
    ClientsObservation, LaneKind, LaneObservation, LaneSource, RetentionRun,
};
use crate::model::violation::Violation;
use crate::oracle::{Oracle, semantic_part};
use std::collections::{BTreeMap, BTreeSet};

fn lane_name(lane: &LaneObservation) -> String {
    let kind = match lane.kind {
        LaneKind::Today => "",
        LaneKind::Shipped => "shipped-client ",
    };
    format!(
        "{} {kind}lane of user {}",
        lane.surface.as_str(),
        lane.user.as_str()
    )
}

/// Every client check after step `step_index`; the convergence parts (X3,
/// the D7 cache) only when `quiescent`. `previous` is the clients'
/// observation after the step before, if they were running then.
pub fn check_clients(
    oracle: &Oracle,
    current: &Observation,
    previous: Option<&ClientsObservation>,
    clients: &ClientsObservation,
    step_index: usize,
    quiescent: bool,
) -> Vec<Violation> {
    let mut recorder = Recorder::new(step_index, current);
    check_flags_read(&mut recorder, oracle, clients);
    for lane in &clients.lanes {
        let before =
            previous.and_then(|previous| previous.lane_of(lane.surface, lane.user, lane.kind));
        // A shipped client whose flag is off is not in use (spec §9.1: the
        // surface constructs none), so what it would show is nobody's
        // view: a reload replaces it with one that never starts.
        let in_use = lane.kind == LaneKind::Today || lane.source == LaneSource::Khala;
        if in_use {
            check_view_flicker(&mut recorder, lane);
        }
        if let Some(before) = before.filter(|_| in_use) {
            check_view_monotone(&mut recorder, before, lane);
            check_watermark_monotone(&mut recorder, before, lane);
        }
        check_deliveries(&mut recorder, lane);
        check_subscribes(&mut recorder, current, lane);
        check_liveness_gap(&mut recorder, lane);
        if quiescent && lane.online {
            check_view_converged(&mut recorder, oracle, current, lane);
            if lane.source == LaneSource::Khala {
                check_cache_converged(&mut recorder, current, lane);
                check_liveness(&mut recorder, current, clients, lane);
            }
        }
    }
    if let Some(run) = &clients.retention {
        let topics: BTreeSet<&String> = clients.topics.keys().collect();
        check_retention(&mut recorder, run, &topics);
    }
    recorder.found
}

/// X3 (every step): each online lane runs Khala iff its surface's flag
/// variable, as written, selects it under spec §9.1 (the oracle's reading),
/// and so does each desktop user's connectivity provider. An offline
/// surface keeps its lane until it is back.
fn check_flags_read(recorder: &mut Recorder<'_>, oracle: &Oracle, clients: &ClientsObservation) {
    let value = |surface, user| {
        oracle
            .flag_value(surface, user)
            .map_or_else(|| "unset".to_owned(), |value| format!("{value:?}"))
    };
    for lane in clients.lanes.iter().filter(|lane| lane.online) {
        let expected = oracle.flag(lane.surface, lane.user);
        if (lane.source == LaneSource::Khala) != expected {
            let detail = format!(
                "the {} reads {:?} with `{}` = {}, where the flag selects {}",
                lane_name(lane),
                lane.source,
                lane.surface.flag_name(),
                value(lane.surface, lane.user),
                if expected { "khala" } else { "polling" }
            );
            recorder.record(LaneClass::LaneFlagMisread, None, detail, None);
        }
    }
    for (user, provider) in &clients.desktop {
        let expected = if oracle.flag(Surface::Desktop, *user) {
            "khala"
        } else {
            "convex"
        };
        if *provider != expected {
            let detail = format!(
                "the desktop of user {} probes {provider} with `{}` = {}, where the flag selects {expected}",
                user.as_str(),
                Surface::Desktop.flag_name(),
                value(Surface::Desktop, *user)
            );
            recorder.record(LaneClass::LaneFlagMisread, None, detail, None);
        }
    }
}

/// X4 within the step: no batch showed a document at a lower version than
/// it showed before (a flicker a later batch of the same step may hide).
fn check_view_flicker(recorder: &mut Recorder<'_>, lane: &LaneObservation) {
    for regression in &lane.regressed_in_step {
        let detail = format!(
            "a batch put the {} back from version {} to {} during the step",
            lane_name(lane),
            regression.from,
            regression.to
        );
        recorder.record(
            LaneClass::ViewRegressed,
            Some(&regression.doc_key),
            detail,
            None,
        );
    }
}

/// X4: a document a lane showed is still shown, at no lower seq.
fn check_view_monotone(
    recorder: &mut Recorder<'_>,
    before: &LaneObservation,
    lane: &LaneObservation,
) {
    for (key, seq_before) in &before.view {
        match lane.view.get(key) {
            None => {
                let detail = format!("the {} no longer shows it", lane_name(lane));
                recorder.record(LaneClass::ViewLostDocument, Some(key), detail, None);
            }
            Some(seq) if seq < seq_before => {
                let detail = format!(
                    "the {} went from seq {seq_before} to {seq}",
                    lane_name(lane)
                );
                recorder.record(LaneClass::ViewRegressed, Some(key), detail, None);
            }
            Some(_) => {}
        }
    }
}

/// D7 (every step): a lane's watermark never moves back.
fn check_watermark_monotone(
    recorder: &mut Recorder<'_>,
    before: &LaneObservation,
    lane: &LaneObservation,
) {
    if let Some(watermark_before) = before.watermark
        && lane
            .watermark
            .is_none_or(|watermark| watermark < watermark_before)
    {
        let detail = format!(
            "the {} went from watermark {watermark_before} to {:?}",
            lane_name(lane),
            lane.watermark
        );
        recorder.record(DeliveryClass::WatermarkRegressed, None, detail, None);
    }
}

/// D2: within one operation, deliveries continue from the stored watermark
/// (or, after a fresh start or a re-hydration, from the first delivered)
/// one watermark at a time.
fn check_deliveries(recorder: &mut Recorder<'_>, lane: &LaneObservation) {
    for run in &lane.deliveries {
        let mut reached = if run.rehydrated { None } else { run.from };
        for watermark in &run.watermarks {
            let class = match reached {
                Some(reached) if *watermark <= reached => Some(DeliveryClass::DeliveryDuplicate),
                Some(reached) if *watermark > reached + 1 => Some(DeliveryClass::DeliveryGap),
                _ => None,
            };
            if let Some(class) = class {
                let detail = format!(
                    "the {} at watermark {reached:?} received {watermark} (run from {:?}: {:?})",
                    lane_name(lane),
                    run.from,
                    run.watermarks
                );
                recorder.record(class, None, detail, None);
                break;
            }
            reached = Some(reached.map_or(*watermark, |reached| reached.max(*watermark)));
        }
    }
}

/// D3: a subscribe with a cursor is stale iff the cursor is below the floor
/// the harness tracked or above every allocated watermark. One without a
/// cursor is never stale (the shipped client clears its cursor on
/// `stale_cursor` and subscribes again without one, so refusing it strands
/// the client for good), and on a pruned topic it must leave the lane's doc
/// cache holding every read-model document at its version: the journal no
/// longer carries the pruned ones, so accepting it with only the retained
/// journal (legacy B10) silently loses them.
fn check_subscribes(recorder: &mut Recorder<'_>, current: &Observation, lane: &LaneObservation) {
    for attempt in &lane.subscribes {
        let below = attempt.cursor.is_some_and(|cursor| cursor < attempt.floor);
        let ahead = attempt.cursor.is_some_and(|cursor| cursor > attempt.head);
        let missing = || {
            current
                .khala
                .iter()
                .filter(|(key, _)| key.starts_with("runtime/codex_worker_summary:"))
                .filter(|(key, (version, _))| {
                    lane.cache
                        .get(*key)
                        .is_none_or(|cached| cached.doc_version < *version)
                })
                .map(|(key, _)| key.clone())
                .collect::<Vec<String>>()
        };
        let (class, missed) = match (attempt.stale, attempt.cursor) {
            (false, Some(_)) if below => (DeliveryClass::BelowFloorAccepted, Vec::new()),
            (false, _) if ahead => (DeliveryClass::AheadOfHeadAccepted, Vec::new()),
            (false, None) if attempt.floor > 0 => match missing() {
                missed if missed.is_empty() => continue,
                missed => (DeliveryClass::NoCursorAfterPruneAccepted, missed),
            },
            (true, None) => (DeliveryClass::NoCursorRefused, Vec::new()),
            (true, Some(_)) if !below && !ahead => (DeliveryClass::RefusedInRange, Vec::new()),
            _ => continue,
        };
        let detail = format!(
            "the {} resumed after {:?} with retention floor {} and head {}: {}{}",
            lane_name(lane),
            attempt.cursor,
            attempt.floor,
            attempt.head,
            if attempt.stale {
                "answered stale_cursor"
            } else {
                "accepted"
            },
            if missed.is_empty() {
                String::new()
            } else {
                format!(", and its cache lacks {}", missed.join(", "))
            }
        );
        recorder.record(class, None, detail, None);
    }
}

/// The X3 class of a lane reading `source`.
fn lane_class(source: LaneSource, khala: LaneClass, polling: LaneClass) -> LaneClass {
    match source {
        LaneSource::Khala => khala,
        LaneSource::Polling => polling,
    }
}

/// X3: at quiescence the lane shows every worker document as predicted,
/// wherever its source (the Khala read model, for both lane kinds) is
/// written and holds it correctly.
fn check_view_converged(
    recorder: &mut Recorder<'_>,
    oracle: &Oracle,
    current: &Observation,
    lane: &LaneObservation,
) {
    if !oracle.sink_mode().writes_khala() {
        return;
    }
    for (key, expected) in oracle.client_documents() {
        let source_right = current.khala.get(&key).is_some_and(|(_, payload)| {
            differing_keys(&expected, &semantic_part(payload)).is_empty()
        });
        if !source_right {
            continue;
        }
        let shown = lane.documents.get(&key);
        if shown.is_none() && holds_pointer_at(lane, &key, current) {
            continue;
        }
        let class = match shown {
            None => lane_class(
                lane.source,
                LaneClass::KhalaLaneMissing,
                LaneClass::PollingLaneMissing,
            ),
            Some(document) => {
                let differing = differing_keys(&expected, &semantic_part(document));
                if differing.is_empty() {
                    continue;
                }
                let expected_seq = document_seq(&expected);
                if document_seq(document) < expected_seq {
                    lane_class(
                        lane.source,
                        LaneClass::KhalaLaneStale,
                        LaneClass::PollingLaneStale,
                    )
                } else {
                    lane_class(
                        lane.source,
                        LaneClass::KhalaLaneWrong,
                        LaneClass::PollingLaneWrong,
                    )
                }
            }
        };
        let detail = format!(
            "the {} shows {:?} where the read model holds seq {:?}",
            lane_name(lane),
            shown.and_then(document_seq),
            document_seq(&expected)
        );
        recorder.record(class, Some(&key), detail, Some(expected));
    }
}

/// The shipped client holds `key` as a pointer (no payload) at the read
/// model's version: in pointer mode (spec §7.3) that is all the client
/// itself keeps (facts §2, `payload: null, hydration_required: true`); the
/// surface above it fetches the document over HTTP (spec §9.1), which
/// today's lane of the same surface models and is judged on.
fn holds_pointer_at(lane: &LaneObservation, key: &str, current: &Observation) -> bool {
    lane.kind == LaneKind::Shipped
        && lane.cache.get(key).is_some_and(|cached| {
            cached.payload.is_none()
                && current
                    .khala
                    .get(key)
                    .is_some_and(|(version, _)| cached.doc_version == *version)
        })
}

/// D7 (at quiescence): a settled Khala lane's doc cache holds every
/// read-model row of its topic at the row's version, with its payload (a
/// shipped client may hold a pointer instead, see `holds_pointer_at`).
fn check_cache_converged(
    recorder: &mut Recorder<'_>,
    current: &Observation,
    lane: &LaneObservation,
) {
    let rows: BTreeMap<&String, &(i64, serde_json::Value)> = current
        .khala
        .iter()
        .filter(|(key, _)| key.starts_with("runtime/codex_worker_summary:"))
        .collect();
    for (key, (version, payload)) in rows {
        let class = match lane.cache.get(key) {
            None => DeliveryClass::CacheMissing,
            Some(cached) if cached.doc_version < *version => DeliveryClass::CacheStale,
            Some(cached) if cached.doc_version > *version => DeliveryClass::CacheDiverged,
            Some(cached)
                if cached.payload.as_ref() != Some(payload)
                    && !holds_pointer_at(lane, key, current) =>
            {
                DeliveryClass::CacheDiverged
            }
            Some(_) => continue,
        };
        let detail = format!(
            "the {} caches {:?} where the read model holds version {version}",
            lane_name(lane),
            lane.cache.get(key).map(|cached| cached.doc_version)
        );
        recorder.record(class, Some(key), detail, None);
    }
}

/// L1 (at quiescence, after the bounded wait the harness let pass): a
/// Khala lane whose channel is still not live missed the bound; one that is
/// live and has reached the journal head will receive nothing more until
/// documents change, so any read-model row its cache lacks (or holds at an
/// older version) is one it never converges to. A live lane short of the
/// head is stalled: the harness read everything its channel was pushed
/// after the server handled every wake-up, so nothing more comes until the
/// topic is woken again (B11: a wake-up sent before the commit).
fn check_liveness(
    recorder: &mut Recorder<'_>,
    current: &Observation,
    clients: &ClientsObservation,
    lane: &LaneObservation,
) {
    let waited = clients.liveness_wait_seconds.unwrap_or(0);
    if !lane.live {
        let detail = format!(
            "the {} has no live channel after {waited} s of advanced time",
            lane_name(lane)
        );
        recorder.record(DeliveryClass::NotLiveWithinBound, None, detail, None);
        return;
    }
    let journal_head = clients
        .topics
        .get(WORKER_TOPIC)
        .map_or(0, |truth| truth.journal_head);
    if lane.watermark.unwrap_or(0) < journal_head {
        let detail = format!(
            "the {} is live at watermark {:?} below the journal head {journal_head}, and the server has handled every wake-up: nothing brings it on until the topic is woken again",
            lane_name(lane),
            lane.watermark
        );
        recorder.record(DeliveryClass::StalledBelowHead, None, detail, None);
        return;
    }
    for (key, (version, _)) in current
        .khala
        .iter()
        .filter(|(key, _)| key.starts_with("runtime/codex_worker_summary:"))
    {
        let cached = lane.cache.get(key).map(|cached| cached.doc_version);
        if cached.is_some_and(|cached| cached >= *version) {
            continue;
        }
        let detail = format!(
            "the {} is live at the journal head {journal_head} but caches {cached:?} where the read model holds version {version}",
            lane_name(lane)
        );
        recorder.record(DeliveryClass::NeverConverges, Some(key), detail, None);
    }
}

/// The longest a lane may go without a live channel, in advanced time:
/// one server heartbeat period. The hardened server closes a socket with
/// its channel, so the shipped client is back after its first backoff
/// (1 s); the original leaves the socket for its idle timeout, a minute.
pub const LIVENESS_GAP_BOUND_SECONDS: i64 = 15;

/// L1 (every step): the longest stretch the lane, online with its flag on,
/// had no live channel stays within `LIVENESS_GAP_BOUND_SECONDS`.
fn check_liveness_gap(recorder: &mut Recorder<'_>, lane: &LaneObservation) {
    if let Some(gap) = lane.liveness_gap_seconds
        && gap > LIVENESS_GAP_BOUND_SECONDS
    {
        let detail = format!(
            "the {} had no live channel for {gap} s of advanced time (bound {LIVENESS_GAP_BOUND_SECONDS} s)",
            lane_name(lane)
        );
        recorder.record(DeliveryClass::LivenessGap, None, detail, None);
    }
}

/// The topic every lane subscribes to.
const WORKER_TOPIC: &str = "runtime.codex_worker_summaries";

/// R1: the retention run's postcondition, from the journal before and
/// after it, judged by the cutoff spec §7.6 gives the job (the harness's
/// `now − horizon`), not by the one the job reports.
fn check_retention(recorder: &mut Recorder<'_>, run: &RetentionRun, topics: &BTreeSet<&String>) {
    if run.cutoff != run.expected_cutoff {
        let detail = format!(
            "the job reported cutoff {}, its clock's now less the horizon is {}",
            run.cutoff, run.expected_cutoff
        );
        recorder.record(JournalClass::RetentionCutoffWrong, None, detail, None);
    }
    let after: BTreeSet<(&str, i64)> = run
        .after
        .iter()
        .map(|stamp| (stamp.topic.as_str(), stamp.watermark))
        .collect();
    let mut removed = 0u64;
    for stamp in &run.before {
        let kept = after.contains(&(stamp.topic.as_str(), stamp.watermark));
        let old = stamp.inserted_at < run.expected_cutoff;
        removed += u64::from(!kept);
        let class = match (old, kept) {
            (true, true) => JournalClass::OldRowRetained,
            (false, false) => JournalClass::NewRowDeleted,
            _ => continue,
        };
        let detail = format!(
            "topic {} watermark {} inserted at {} with cutoff {}",
            stamp.topic, stamp.watermark, stamp.inserted_at, run.expected_cutoff
        );
        recorder.record(class, None, detail, None);
    }
    if removed != run.deleted {
        let detail = format!("the job reported {} deleted, {removed} were", run.deleted);
        recorder.record(JournalClass::DeletedCountWrong, None, detail, None);
    }
    let mut oldest: BTreeMap<&str, i64> = BTreeMap::new();
    for stamp in &run.after {
        let entry = oldest
            .entry(stamp.topic.as_str())
            .or_insert(stamp.watermark);
        *entry = (*entry).min(stamp.watermark);
    }
    for topic in topics {
        let actual = oldest.get(topic.as_str()).copied();
        let reported = run.oldest_retained.get(topic.as_str()).copied();
        if reported != Some(actual) {
            let detail = format!(
                "topic {topic}: the job reported oldest {reported:?}, the journal holds {actual:?}"
            );
            recorder.record(JournalClass::OldestRetainedWrong, None, detail, None);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each client invariant catches a planted defect; a consistent
    //! observation passes them all.

    use super::*;
    use crate::model::case::ClientUser;
    use crate::model::case::{Step, Surface, WorkerEventType};
    use crate::model::trace::{
        CachedDocument, DeliveryRun, JournalStamp, SubscribeAttempt, TopicTruth,
    };
    use chrono::{DateTime, NaiveDateTime};
    use khala_clients::lane::ViewRegression;
    use khala_runtime::SinkMode;
    use serde_json::Value;

    const KEY: &str = "runtime/codex_worker_summary:worker_0";
    const TOPIC: &str = "runtime.codex_worker_summaries";

    fn oracle(events: usize) -> Oracle {
        let mut oracle = Oracle::new(crate::model::case::IdStyle::Plain, SinkMode::KhalaOnly);
        // The web lanes read Khala, the mobile ones poll.
        oracle.apply(&Step::SetClientFlag {
            surface: Surface::Web,
            value: Some("true".to_owned()),
        });
        for _ in 0..events {
            oracle.apply(&Step::AppendWorkerEvent {
                worker: 0,
                event_type: WorkerEventType::Heartbeat,
            });
        }
        oracle
    }

    /// The read model holding the oracle's worker document at its seq.
    fn stores(oracle: &Oracle) -> (Observation, Value) {
        let mut document = oracle
            .client_documents()
            .remove(KEY)
            .expect("worker document");
        document["updated_at"] = "2026-02-19T20:00:00.000000Z".into();
        let seq = document_seq(&document).expect("seq");
        let mut observation = Observation::default();
        observation
            .khala
            .insert(KEY.into(), (seq, document.clone()));
        (observation, document)
    }

    /// A settled Khala lane showing and caching `document` at `watermark`.
    fn lane(document: &Value, watermark: i64) -> LaneObservation {
        let seq = document_seq(document).expect("seq");
        LaneObservation {
            surface: Surface::Web,
            user: ClientUser::Internal,
            kind: LaneKind::Today,
            live: true,
            source: LaneSource::Khala,
            online: true,
            watermark: Some(watermark),
            view: [(KEY.to_owned(), seq)].into(),
            documents: [(KEY.to_owned(), document.clone())].into(),
            cache: [(
                KEY.to_owned(),
                CachedDocument {
                    doc_version: seq,
                    payload: Some(document.clone()),
                },
            )]
            .into(),
            regressed_in_step: Vec::new(),
            deliveries: Vec::new(),
            subscribes: Vec::new(),
            liveness_gap_seconds: None,
        }
    }

    fn clients(lanes: Vec<LaneObservation>) -> ClientsObservation {
        ClientsObservation {
            liveness_wait_seconds: None,
            lanes,
            desktop: BTreeMap::new(),
            topics: [(TOPIC.to_owned(), TopicTruth::default())].into(),
            retention: None,
        }
    }

    fn ids(found: &[Violation]) -> Vec<(&'static str, String)> {
        found
            .iter()
            .map(|violation| {
                (
                    violation.invariant,
                    violation.reason_class.name().to_owned(),
                )
            })
            .collect()
    }

    fn check(
        oracle: &Oracle,
        current: &Observation,
        previous: Option<&ClientsObservation>,
        clients: &ClientsObservation,
    ) -> Vec<(&'static str, String)> {
        ids(&check_clients(oracle, current, previous, clients, 4, true))
    }

    #[test]
    fn a_settled_lane_passes_every_check() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let now = clients(vec![lane(&document, 2)]);
        assert_eq!(check(&oracle, &observation, Some(&now), &now), []);
    }

    #[test]
    fn x3_catches_a_lane_or_desktop_reading_its_raw_flag_unlike_spec_9_1() {
        let flagged = |surface, value: &str| {
            let mut oracle = Oracle::new(crate::model::case::IdStyle::Plain, SinkMode::KhalaOnly);
            oracle.apply(&Step::SetClientFlag {
                surface,
                value: Some(value.to_owned()),
            });
            oracle
        };
        let (observation, document) = stores(&oracle(1));
        let on = lane(&document, 1);
        // `" true"` is not `"true"`: the web lane must poll.
        let padded = flagged(Surface::Web, " true");
        assert_eq!(
            check(&padded, &observation, None, &clients(vec![on.clone()])),
            [("X3", "lane_flag_misread".into())]
        );
        let exact = flagged(Surface::Web, "true");
        assert_eq!(check(&exact, &observation, None, &clients(vec![on])), []);
        // The desktop: `1` is on for the config parser, so the legacy
        // preload reading it off (B23) is caught.
        let desktop = |provider| ClientsObservation {
            desktop: [(ClientUser::Internal, provider)].into(),
            ..clients(Vec::new())
        };
        let one = flagged(Surface::Desktop, "1");
        assert_eq!(check(&one, &observation, None, &desktop("khala")), []);
        assert_eq!(
            check(&one, &observation, None, &desktop("convex")),
            [("X3", "lane_flag_misread".into())]
        );
    }

    #[test]
    fn x4_and_d7_judge_a_shipped_client_only_while_its_flag_has_it_in_use() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let shipped = |source| LaneObservation {
            kind: LaneKind::Shipped,
            source,
            ..lane(&document, 2)
        };
        let before = clients(vec![shipped(LaneSource::Khala)]);
        // Reloaded with the flag off: a client that never starts.
        let mut reloaded = shipped(LaneSource::Polling);
        reloaded.surface = Surface::Mobile;
        reloaded.online = false;
        reloaded.view.clear();
        reloaded.documents.clear();
        reloaded.watermark = None;
        let mut before_mobile = before.clone();
        before_mobile.lanes[0].surface = Surface::Mobile;
        let now = clients(vec![reloaded.clone()]);
        assert_eq!(check(&oracle, &observation, Some(&before_mobile), &now), []);
        // The same loss on a client in use is X4 and D7.
        let mut in_use = reloaded;
        in_use.surface = Surface::Web;
        in_use.source = LaneSource::Khala;
        in_use.online = true;
        let now = clients(vec![in_use]);
        let found = check(&oracle, &observation, Some(&before), &now);
        assert!(
            found.contains(&("X4", "view_lost_document".into())),
            "{found:?}"
        );
        assert!(
            found.contains(&("D7", "watermark_regressed".into())),
            "{found:?}"
        );
    }

    /// `lane` of `kind` holding the document as a pointer update left it:
    /// its version, no payload, nothing shown in full.
    fn pointer_lane(document: &Value, kind: LaneKind, version: i64) -> LaneObservation {
        let mut lane = LaneObservation {
            kind,
            ..lane(document, 2)
        };
        lane.documents.clear();
        lane.view = [(KEY.to_owned(), version)].into();
        lane.cache = [(
            KEY.to_owned(),
            CachedDocument {
                doc_version: version,
                payload: None,
            },
        )]
        .into();
        lane
    }

    #[test]
    fn x3_and_d7_take_a_pointer_at_the_read_models_version_from_a_shipped_client_only() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let seq = document_seq(&document).expect("seq");
        let shipped = pointer_lane(&document, LaneKind::Shipped, seq);
        assert_eq!(
            check(&oracle, &observation, None, &clients(vec![shipped])),
            []
        );
        // Today's lane must reload a pointer over HTTP: holding one is X3
        // and D7.
        let today = pointer_lane(&document, LaneKind::Today, seq);
        let found = check(&oracle, &observation, None, &clients(vec![today]));
        assert!(
            found.contains(&("X3", "khala_lane_missing".into())),
            "{found:?}"
        );
        assert!(
            found.contains(&("D7", "cache_diverged".into())),
            "{found:?}"
        );
        // A shipped client's pointer at an older version is behind.
        let behind = pointer_lane(&document, LaneKind::Shipped, seq - 1);
        let found = check(&oracle, &observation, None, &clients(vec![behind]));
        assert!(
            found.contains(&("X3", "khala_lane_missing".into())),
            "{found:?}"
        );
        assert!(found.contains(&("D7", "cache_stale".into())), "{found:?}");
    }

    #[test]
    fn x3_catches_a_lane_missing_or_behind_a_document_its_source_holds() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let mut missing = lane(&document, 2);
        missing.documents.clear();
        missing.view.clear();
        missing.source = LaneSource::Polling;
        missing.surface = Surface::Mobile;
        assert_eq!(
            check(&oracle, &observation, None, &clients(vec![missing])),
            [("X3", "polling_lane_missing".into())]
        );
        let (_, older) = stores(&self::oracle(1));
        let mut behind = lane(&document, 2);
        behind.documents.insert(KEY.into(), older);
        assert_eq!(
            check(&oracle, &observation, None, &clients(vec![behind])),
            [("X3", "khala_lane_stale".into())]
        );
    }

    #[test]
    fn x3_skips_sources_the_sink_mode_does_not_write_and_wrong_sources() {
        let mut oracle = oracle(2);
        let (mut observation, document) = stores(&oracle);
        let mut missing = lane(&document, 2);
        missing.documents.clear();
        missing.source = LaneSource::Polling;
        missing.surface = Surface::Mobile;
        let lanes = clients(vec![missing]);
        observation.khala.get_mut(KEY).expect("row").1["status"] = "wrong".into();
        assert_eq!(check(&oracle, &observation, None, &lanes), []);
        let (observation, _) = stores(&oracle);
        oracle.apply(&Step::SwitchSinkMode {
            mode: SinkMode::ConvexOnly,
        });
        assert_eq!(check(&oracle, &observation, None, &lanes), []);
    }

    #[test]
    fn x4_catches_a_view_moving_backwards_or_losing_a_document() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let before = clients(vec![lane(&document, 2)]);
        let mut regressed = lane(&document, 2);
        regressed.view.insert(KEY.into(), 1);
        let found = check(
            &oracle,
            &observation,
            Some(&before),
            &clients(vec![regressed]),
        );
        assert!(
            found.contains(&("X4", "view_regressed".into())),
            "{found:?}"
        );
        let mut lost = lane(&document, 2);
        lost.view.clear();
        let found = check(&oracle, &observation, Some(&before), &clients(vec![lost]));
        assert!(
            found.contains(&("X4", "view_lost_document".into())),
            "{found:?}"
        );
        // A flicker during the step, hidden again by its end, even on the
        // step that started the lane (no observation before it).
        let mut flickered = lane(&document, 2);
        flickered.regressed_in_step.push(ViewRegression {
            doc_key: KEY.into(),
            from: 2,
            to: 1,
        });
        assert_eq!(
            check(&oracle, &observation, None, &clients(vec![flickered])),
            [("X4", "view_regressed".into())]
        );
    }

    #[test]
    fn d2_catches_a_gap_after_a_resume_and_a_duplicate_but_not_a_rehydrated_start() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let with_run = |from, rehydrated, watermarks: &[i64]| {
            let mut lane = lane(&document, 2);
            lane.deliveries.push(DeliveryRun {
                from,
                rehydrated,
                watermarks: watermarks.to_vec(),
            });
            clients(vec![lane])
        };
        assert_eq!(
            check(&oracle, &observation, None, &with_run(Some(1), false, &[3])),
            [("D2", "delivery_gap".into())]
        );
        assert_eq!(
            check(&oracle, &observation, None, &with_run(Some(2), false, &[2])),
            [("D2", "delivery_duplicate".into())]
        );
        assert_eq!(
            check(
                &oracle,
                &observation,
                None,
                &with_run(Some(1), true, &[3, 4])
            ),
            []
        );
        assert_eq!(
            check(&oracle, &observation, None, &with_run(None, false, &[3, 5])),
            [("D2", "delivery_gap".into())]
        );
        assert_eq!(
            check(
                &oracle,
                &observation,
                None,
                &with_run(Some(1), false, &[2, 3])
            ),
            []
        );
    }

    #[test]
    fn d3_catches_accepted_cursors_below_the_floor_and_refusals_in_range() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let with_attempt = |cursor, stale, cached: bool| {
            let mut lane = lane(&document, 2);
            if !cached {
                lane.cache.clear();
            }
            lane.subscribes.push(SubscribeAttempt {
                cursor,
                stale,
                floor: 2,
                head: 3,
            });
            clients(vec![lane])
        };
        let cases = [
            (Some(1), false, true, Some("below_floor_accepted")),
            (Some(4), false, true, Some("ahead_of_head_accepted")),
            (Some(2), true, true, Some("refused_in_range")),
            (Some(2), false, true, None),
            (Some(1), true, true, None),
            // Without a cursor: accepted is right when the lane then holds
            // every read-model document (a snapshot delivered the pruned
            // ones); a refusal strands the shipped client.
            (None, false, true, None),
            (None, false, false, Some("no_cursor_after_prune_accepted")),
            (None, true, true, Some("no_cursor_refused")),
        ];
        for (cursor, stale, cached, class) in cases {
            let mut expected: Vec<(&str, String)> = class
                .map(|class| ("D3", class.to_owned()))
                .into_iter()
                .collect();
            if !cached {
                // The quiescent cache check sees the same hole, and the lane
                // is at the head, so nothing will ever bring it (L1).
                expected.push(("D7", "cache_missing".to_owned()));
                expected.push(("L1", "never_converges".to_owned()));
            }
            assert_eq!(
                check(
                    &oracle,
                    &observation,
                    None,
                    &with_attempt(cursor, stale, cached)
                ),
                expected,
                "{cursor:?} {stale} {cached}"
            );
        }
        // Nothing pruned: a subscribe without cursor replays the whole
        // journal, so D3 has nothing to say about the cache.
        let mut lane = lane(&document, 2);
        lane.cache.clear();
        lane.subscribes.push(SubscribeAttempt {
            cursor: None,
            stale: false,
            floor: 0,
            head: 3,
        });
        assert_eq!(
            check(&oracle, &observation, None, &clients(vec![lane])),
            [
                ("D7", "cache_missing".to_owned()),
                ("L1", "never_converges".to_owned())
            ]
        );
    }

    #[test]
    fn l1_catches_a_lane_not_live_after_the_bound_and_one_stranded_at_the_head() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let mut stopped = lane(&document, 2);
        stopped.live = false;
        stopped.kind = LaneKind::Shipped;
        let mut found = clients(vec![stopped]);
        found.liveness_wait_seconds = Some(300);
        assert_eq!(
            check(&oracle, &observation, None, &found),
            [("L1", "not_live_within_bound".to_owned())]
        );
        // Live but short of the journal head, every wake-up handled:
        // stalled.
        let mut behind = lane(&document, 2);
        behind.cache.clear();
        let mut found = clients(vec![behind]);
        found.topics.insert(
            WORKER_TOPIC.to_owned(),
            TopicTruth {
                allocated_head: 5,
                journal_head: 5,
                pruned_through: 0,
            },
        );
        assert_eq!(
            check(&oracle, &observation, None, &found),
            [
                ("D7", "cache_missing".to_owned()),
                ("L1", "stalled_below_head".to_owned())
            ]
        );
    }

    #[test]
    fn l1_catches_a_lane_without_a_live_channel_for_longer_than_a_heartbeat_period() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let gap = |seconds| {
            let mut lane = lane(&document, 2);
            lane.kind = LaneKind::Shipped;
            lane.liveness_gap_seconds = Some(seconds);
            ids(&check_clients(
                &oracle,
                &observation,
                None,
                &clients(vec![lane]),
                4,
                false,
            ))
        };
        // The hardened shipped client: back after its first backoff.
        assert_eq!(gap(1), []);
        assert_eq!(gap(LIVENESS_GAP_BOUND_SECONDS), []);
        // The original's idle client: the socket closes a minute after the
        // channel stopped. Checked on every step, not only at quiescence.
        assert_eq!(gap(61), [("L1", "liveness_gap".to_owned())]);
    }

    #[test]
    fn d7_catches_a_cache_missing_a_row_and_a_watermark_moving_back() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let mut uncached = lane(&document, 2);
        uncached.cache.clear();
        assert_eq!(
            check(&oracle, &observation, None, &clients(vec![uncached])),
            [
                ("D7", "cache_missing".into()),
                ("L1", "never_converges".into())
            ]
        );
        let before = clients(vec![lane(&document, 3)]);
        assert_eq!(
            check(
                &oracle,
                &observation,
                Some(&before),
                &clients(vec![lane(&document, 2)])
            ),
            [("D7", "watermark_regressed".into())]
        );
        let mut polling = lane(&document, 2);
        polling.source = LaneSource::Polling;
        polling.surface = Surface::Mobile;
        polling.cache.clear();
        assert_eq!(
            check(&oracle, &observation, None, &clients(vec![polling])),
            [],
            "only Khala lanes cache"
        );
    }

    fn at(seconds: i64) -> NaiveDateTime {
        DateTime::from_timestamp(1_771_531_200 + seconds, 0)
            .expect("time")
            .naive_utc()
    }

    fn stamp(watermark: i64, seconds: i64) -> JournalStamp {
        JournalStamp {
            topic: TOPIC.into(),
            watermark,
            inserted_at: at(seconds),
        }
    }

    #[test]
    fn r1_catches_old_rows_kept_new_rows_deleted_and_wrong_reports() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let with_run = |after: Vec<JournalStamp>, deleted, oldest| {
            let mut observed = clients(vec![lane(&document, 2)]);
            observed.retention = Some(RetentionRun {
                expected_cutoff: at(100),
                cutoff: at(100),
                deleted,
                oldest_retained: [(TOPIC.to_owned(), oldest)].into(),
                before: vec![stamp(1, 10), stamp(2, 20), stamp(3, 200)],
                after,
            });
            observed
        };
        assert_eq!(
            check(
                &oracle,
                &observation,
                None,
                &with_run(vec![stamp(3, 200)], 2, Some(3))
            ),
            []
        );
        let found = check(
            &oracle,
            &observation,
            None,
            &with_run(vec![stamp(2, 20), stamp(3, 200)], 2, Some(3)),
        );
        assert_eq!(
            found,
            [
                ("R1", "old_row_retained".into()),
                ("R1", "deleted_count_wrong".into()),
                ("R1", "oldest_retained_wrong".into())
            ]
        );
        assert_eq!(
            check(&oracle, &observation, None, &with_run(vec![], 3, None)),
            [("R1", "new_row_deleted".into())]
        );
    }

    /// A run whose cutoff lands on row 2's `inserted_at` (20 s): row 1 goes,
    /// rows 2 and 3 stay.
    fn boundary_run(cutoff: NaiveDateTime, after: Vec<JournalStamp>) -> RetentionRun {
        let deleted = 3 - after.len() as u64;
        let oldest = after.first().map(|stamp| stamp.watermark);
        RetentionRun {
            expected_cutoff: at(20),
            cutoff,
            deleted,
            oldest_retained: [(TOPIC.to_owned(), oldest)].into(),
            before: vec![stamp(1, 10), stamp(2, 20), stamp(3, 200)],
            after,
        }
    }

    #[test]
    fn r1_keeps_the_row_at_the_cutoff_and_judges_by_the_harness_cutoff() {
        let oracle = oracle(2);
        let (observation, document) = stores(&oracle);
        let judge = |run: RetentionRun| {
            let mut observed = clients(vec![lane(&document, 2)]);
            observed.retention = Some(run);
            check(&oracle, &observation, None, &observed)
        };
        // The exact prune passes.
        assert_eq!(
            judge(boundary_run(at(20), vec![stamp(2, 20), stamp(3, 200)])),
            []
        );
        // `<=` at the cutoff: the row inserted at it is gone.
        assert_eq!(
            judge(boundary_run(at(20), vec![stamp(3, 200)])),
            [("R1", "new_row_deleted".into())]
        );
        // `now + horizon`: a cutoff far ahead prunes everything; judged by
        // the cutoff it reports, it would pass.
        assert_eq!(
            judge(boundary_run(at(1_000), vec![])),
            [
                ("R1", "retention_cutoff_wrong".into()),
                ("R1", "new_row_deleted".into()),
                ("R1", "new_row_deleted".into())
            ]
        );
    }
}
