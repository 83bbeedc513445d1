//! The timeline of a minimal case: steps across; per document the
//! runtime's seq, the checkpoint, the Khala and Convex versions, each cell
//! marked against the oracle; flag flips, sink-mode switches, rollbacks,
//! faults and auditor cycles marked. Built from the driver's trace, kept in
//! the report as data, and drawn as SVG so a reader sees where the stores
//! diverge.

use crate::check::invariants::differing_keys;
use crate::model::case::{Case, ConvexFault, EntityRef, KhalaFault, Outage, RollbackSwitch, Step};
use crate::model::observation::document_seq;
use crate::model::trace::StepTrace;
use crate::oracle::{Oracle, semantic_part};
use khala_runtime::SinkMode;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeline {
    pub steps: Vec<TimelineStep>,
    pub documents: Vec<DocumentTrack>,
    /// Where the first violation's divergence began, and where it was seen.
    pub first_step: Option<usize>,
    pub detected_step: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineStep {
    pub index: usize,
    pub label: String,
    pub marker: Option<Marker>,
    /// The sink mode after the step.
    pub sink_mode: SinkMode,
    /// A fault is active after the step.
    pub fault_active: bool,
    /// `(sampled, mismatches)` of the auditor cycle the step ran.
    pub auditor: Option<(u64, u64)>,
}

/// The events a reader looks for first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Marker {
    Fault,
    Heal,
    Quiesce,
    FlagFlip,
    SinkMode,
    Rollback,
    Auditor,
    Delivery,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentTrack {
    pub document_id: String,
    /// `runtime`, `checkpoint`, `khala`, `convex`, then (worker documents)
    /// one row per client lane: `surface/user`.
    pub rows: Vec<TrackRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackRow {
    pub store: String,
    /// One per step, in order.
    pub cells: Vec<Cell>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    /// The seq (Khala: `doc_version`) the store holds, if it holds one.
    pub seq: Option<i64>,
    pub state: CellState,
    /// Client rows: the lane the view came through (`khala` or `polling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Cell {
    fn absent() -> Cell {
        Cell {
            seq: None,
            state: CellState::Absent,
            source: None,
        }
    }
}

/// A cell against the oracle after the same step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    /// The entity does not exist yet.
    Absent,
    /// As the oracle predicts.
    Match,
    /// Present, but not as predicted.
    Differs,
    /// Absent where the sink mode writes it.
    Missing,
    /// The sink mode does not write this store.
    Unwritten,
}

fn marker_of(step: &Step) -> Option<Marker> {
    Some(match step {
        Step::BreakConvex { .. } | Step::BreakKhala { .. } | Step::ConvexOutage { .. } => {
            Marker::Fault
        }
        Step::Heal => Marker::Heal,
        Step::Quiesce => Marker::Quiesce,
        Step::SetClientFlag { .. } | Step::SetRolloutStage { .. } => Marker::FlagFlip,
        Step::SwitchSinkMode { .. } => Marker::SinkMode,
        Step::Rollback { .. } => Marker::Rollback,
        Step::AuditorCycle => Marker::Auditor,
        Step::RunRetention
        | Step::RunRetentionAtRow { .. }
        | Step::RunRetentionAtCursor
        | Step::DisconnectClient { .. }
        | Step::ReconnectClient { .. }
        | Step::RestartSyncServer
        | Step::AdvanceTime { .. }
        | Step::ReloadShippedClient { .. } => Marker::Delivery,
        _ => return None,
    })
}

impl Timeline {
    /// Replays the oracle along the trace and places every store against it.
    pub fn from_trace(case: &Case, trace: &[StepTrace]) -> Timeline {
        let namespace = trace.first().map_or("", |entry| entry.namespace.as_str());
        let mut oracle = Oracle::at_start(case.ids, &case.start).in_namespace(namespace);
        let mut steps = Vec::new();
        let mut documents: Vec<DocumentTrack> = Vec::new();
        let mut fault_active = false;
        for (position, entry) in trace.iter().enumerate() {
            oracle.apply(&entry.step);
            match entry.step {
                Step::BreakConvex { .. } | Step::BreakKhala { .. } | Step::ConvexOutage { .. } => {
                    fault_active = true
                }
                Step::Heal | Step::Quiesce => fault_active = false,
                _ => {}
            }
            let mode = oracle.sink_mode();
            steps.push(TimelineStep {
                index: entry.index,
                label: short_label(&entry.step),
                marker: marker_of(&entry.step),
                sink_mode: mode,
                fault_active,
                auditor: entry
                    .auditor
                    .as_ref()
                    .map(|summary| (summary.sampled, summary.mismatches)),
            });
            let observation = &entry.observation;
            for entity in oracle.entities() {
                let document_id = oracle.document_id(entity);
                let runtime_seq = oracle.latest_seq(entity);
                let expected = oracle.expected_document(entity);
                let against_oracle =
                    |written: bool, seq: Option<i64>, document: Option<&serde_json::Value>| {
                        let state = match (written, document) {
                            (false, _) => CellState::Unwritten,
                            (true, None) => CellState::Missing,
                            (true, Some(document)) => match &expected {
                                Some(expected)
                                    if differing_keys(expected, &semantic_part(document))
                                        .is_empty() =>
                                {
                                    CellState::Match
                                }
                                _ => CellState::Differs,
                            },
                        };
                        Cell {
                            seq,
                            state,
                            source: None,
                        }
                    };
                let khala = observation.khala.get(&document_id);
                let convex = observation.convex.get(&document_id);
                let checkpoint = observation.checkpoints.get(&document_id);
                let mut cells = vec![
                    (
                        "runtime".to_owned(),
                        Cell {
                            seq: Some(runtime_seq),
                            state: CellState::Match,
                            source: None,
                        },
                    ),
                    (
                        "checkpoint".to_owned(),
                        Cell {
                            seq: checkpoint.map(|checkpoint| checkpoint.last_runtime_seq),
                            state: match checkpoint {
                                None => CellState::Missing,
                                Some(checkpoint) if checkpoint.last_runtime_seq == runtime_seq => {
                                    CellState::Match
                                }
                                Some(_) => CellState::Differs,
                            },
                            source: None,
                        },
                    ),
                    (
                        "khala".to_owned(),
                        against_oracle(
                            mode.writes_khala(),
                            khala.map(|(version, _)| *version),
                            khala.map(|(_, payload)| payload),
                        ),
                    ),
                    (
                        "convex".to_owned(),
                        against_oracle(mode.writes_convex(), convex.and_then(document_seq), convex),
                    ),
                ];
                // Client lanes follow the worker topic only (§9.1).
                if matches!(entity, EntityRef::Worker(_))
                    && let Some(clients) = &entry.clients
                {
                    for lane in &clients.lanes {
                        let seq = lane.view.get(&document_id).copied();
                        let state = match seq {
                            None => CellState::Missing,
                            Some(seq) if seq == runtime_seq => CellState::Match,
                            Some(_) => CellState::Differs,
                        };
                        cells.push((
                            format!("{}/{}", lane.surface.as_str(), lane.user.as_str()),
                            Cell {
                                seq,
                                state,
                                source: Some(lane.source.as_str().to_owned()),
                            },
                        ));
                    }
                }
                let track = match documents
                    .iter()
                    .position(|track| track.document_id == document_id)
                {
                    Some(found) => &mut documents[found],
                    None => {
                        documents.push(DocumentTrack {
                            document_id: document_id.clone(),
                            rows: Vec::new(),
                        });
                        documents.last_mut().expect("just pushed")
                    }
                };
                for (store, cell) in cells {
                    let row = match track.rows.iter().position(|row| row.store == store) {
                        Some(found) => &mut track.rows[found],
                        None => {
                            track.rows.push(TrackRow {
                                store,
                                cells: Vec::new(),
                            });
                            track.rows.last_mut().expect("just pushed")
                        }
                    };
                    row.cells.resize(position, Cell::absent());
                    row.cells.push(cell);
                }
            }
        }
        for track in &mut documents {
            for row in &mut track.rows {
                row.cells.resize(steps.len(), Cell::absent());
            }
        }
        Timeline {
            steps,
            documents,
            first_step: None,
            detected_step: None,
        }
    }
}

const LABEL_WIDTH: usize = 230;
const COLUMN_WIDTH: usize = 66;
const HEADER_HEIGHT: usize = 70;
const ROW_HEIGHT: usize = 18;
const TITLE_HEIGHT: usize = 22;
const LEGEND_HEIGHT: usize = 64;
const MIN_WIDTH: usize = 800;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fill(state: CellState) -> &'static str {
    match state {
        CellState::Absent => "#ffffff",
        CellState::Match => "#c8e6c9",
        CellState::Differs => "#ffcdd2",
        CellState::Missing => "#e57373",
        CellState::Unwritten => "#eeeeee",
    }
}

fn marker_shape(marker: Marker, x: usize, y: usize) -> String {
    let (cx, cy) = (x + COLUMN_WIDTH / 2, y);
    match marker {
        Marker::Fault => format!(
            r##"<path d="M{} {} L{} {} L{} {} Z" fill="#ef6c00"><title>fault</title></path>"##,
            cx,
            cy - 6,
            cx - 6,
            cy + 5,
            cx + 6,
            cy + 5
        ),
        Marker::Heal | Marker::Quiesce => format!(
            r##"<circle cx="{cx}" cy="{cy}" r="5" fill="#2e7d32"><title>{}</title></circle>"##,
            if marker == Marker::Heal {
                "heal"
            } else {
                "quiesce"
            }
        ),
        Marker::FlagFlip => format!(
            r##"<rect x="{}" y="{}" width="10" height="10" fill="#1565c0"><title>flag flip</title></rect>"##,
            cx - 5,
            cy - 5
        ),
        Marker::SinkMode => format!(
            r##"<path d="M{} {} L{} {} L{} {} L{} {} Z" fill="#6a1b9a"><title>sink-mode switch</title></path>"##,
            cx,
            cy - 6,
            cx + 6,
            cy,
            cx,
            cy + 6,
            cx - 6,
            cy
        ),
        Marker::Rollback => format!(
            r##"<rect x="{}" y="{}" width="10" height="10" fill="#c62828"><title>rollback</title></rect>"##,
            cx - 5,
            cy - 5
        ),
        Marker::Auditor => format!(
            r##"<circle cx="{cx}" cy="{cy}" r="5" fill="none" stroke="#455a64" stroke-width="2"><title>auditor cycle</title></circle>"##
        ),
        Marker::Delivery => format!(
            r##"<rect x="{}" y="{}" width="10" height="6" fill="#78909c"><title>delivery event</title></rect>"##,
            cx - 5,
            cy - 3
        ),
    }
}

impl Timeline {
    /// The timeline as a standalone SVG document; the same data gives the
    /// same bytes.
    pub fn to_svg(&self, title: &str) -> String {
        let columns = self.steps.len();
        let rows: usize = self
            .documents
            .iter()
            .map(|track| TITLE_HEIGHT + track.rows.len() * ROW_HEIGHT)
            .sum();
        // Wide enough for the legend, however few the steps.
        let width = (LABEL_WIDTH + columns * COLUMN_WIDTH + 10).max(MIN_WIDTH);
        let body_top = HEADER_HEIGHT + 22;
        let height = body_top + rows + LEGEND_HEIGHT;
        let column_x = |position: usize| LABEL_WIDTH + position * COLUMN_WIDTH;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">"##
        );
        let _ = writeln!(svg, "<title>{}</title>", escape(title));
        let _ = writeln!(
            svg,
            r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<text x="8" y="16" font-size="13" font-weight="bold">{}</text>"##,
            escape(title)
        );
        // Fault spans behind everything.
        for (position, step) in self.steps.iter().enumerate() {
            if step.fault_active {
                let _ = writeln!(
                    svg,
                    r##"<rect x="{}" y="24" width="{COLUMN_WIDTH}" height="{}" fill="#fff3e0"><title>fault active</title></rect>"##,
                    column_x(position),
                    height - 24 - LEGEND_HEIGHT
                );
            }
        }
        let _ = writeln!(svg, r##"<text x="8" y="38">step</text>"##);
        let _ = writeln!(svg, r##"<text x="8" y="74">sink mode</text>"##);
        let _ = writeln!(
            svg,
            r##"<text x="8" y="88">auditor (mismatches/sampled)</text>"##
        );
        let mut previous_mode = None;
        for (position, step) in self.steps.iter().enumerate() {
            let x = column_x(position);
            let middle = x + COLUMN_WIDTH / 2;
            let _ = writeln!(
                svg,
                r##"<text x="{middle}" y="38" text-anchor="middle" font-weight="bold">{}</text>"##,
                step.index
            );
            let _ = writeln!(
                svg,
                r##"<text x="{middle}" y="50" text-anchor="middle" font-size="9">{}</text>"##,
                escape(&step.label)
            );
            if let Some(marker) = step.marker {
                svg.push_str(&marker_shape(marker, x, 59));
                svg.push('\n');
            }
            if previous_mode != Some(step.sink_mode) {
                let _ = writeln!(
                    svg,
                    r##"<text x="{middle}" y="74" text-anchor="middle" font-size="9" fill="#6a1b9a">{}</text>"##,
                    step.sink_mode
                );
                previous_mode = Some(step.sink_mode);
            }
            if let Some((sampled, mismatches)) = step.auditor {
                let colour = if mismatches > 0 { "#c62828" } else { "#2e7d32" };
                let _ = writeln!(
                    svg,
                    r##"<text x="{middle}" y="88" text-anchor="middle" font-size="9" fill="{colour}">{mismatches}/{sampled}</text>"##
                );
            }
        }
        let mut y = body_top;
        for track in &self.documents {
            let _ = writeln!(
                svg,
                r##"<text x="8" y="{}" font-weight="bold">{}</text>"##,
                y + 15,
                escape(&track.document_id)
            );
            y += TITLE_HEIGHT;
            for row in &track.rows {
                let _ = writeln!(
                    svg,
                    r##"<text x="20" y="{}">{}</text>"##,
                    y + 13,
                    escape(&row.store)
                );
                for (position, cell) in row.cells.iter().enumerate() {
                    let x = column_x(position);
                    let mut text = cell.seq.map_or("·".to_owned(), |seq| seq.to_string());
                    // A client view read over polling (flag off) is marked.
                    if cell.source.as_deref() == Some("polling") {
                        text.push_str(" p");
                    }
                    let _ = writeln!(
                        svg,
                        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="{}" stroke="#bdbdbd" stroke-width="0.5"><title>{} {}: {:?}</title></rect><text x="{}" y="{}" text-anchor="middle">{}</text>"##,
                        x + 1,
                        y + 1,
                        COLUMN_WIDTH - 2,
                        ROW_HEIGHT - 2,
                        fill(cell.state),
                        escape(&row.store),
                        self.steps.get(position).map_or(0, |step| step.index),
                        cell.state,
                        x + COLUMN_WIDTH / 2,
                        y + 13,
                        text
                    );
                }
                y += ROW_HEIGHT;
            }
        }
        let position_of = |index: usize| self.steps.iter().position(|step| step.index == index);
        for (step, colour, label, dash) in [
            (
                self.first_step,
                "#ef6c00",
                "diverges",
                " stroke-dasharray=\"4 3\"",
            ),
            (self.detected_step, "#c62828", "detected", ""),
        ] {
            if let Some(position) = step.and_then(position_of) {
                let x = column_x(position) + 1;
                let _ = writeln!(
                    svg,
                    r##"<line x1="{x}" y1="{}" x2="{x}" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}" fill="{colour}" font-size="9">{label}</text>"##,
                    body_top - 4,
                    x + 2,
                    body_top + 4
                );
            }
        }
        let legend_y = y + 20;
        let mut x = 8;
        for (state, label) in [
            (CellState::Match, "as the oracle"),
            (CellState::Differs, "differs"),
            (CellState::Missing, "missing"),
            (CellState::Unwritten, "not written by the sink mode"),
        ] {
            let _ = writeln!(
                svg,
                r##"<rect x="{x}" y="{}" width="12" height="12" fill="{}" stroke="#bdbdbd"/><text x="{}" y="{}">{label}</text>"##,
                legend_y - 10,
                fill(state),
                x + 16,
                legend_y
            );
            x += 22 + label.len() * 7;
        }
        let _ = writeln!(
            svg,
            r##"<text x="8" y="{}" font-size="9">▲ fault (orange band: active), ● heal/quiesce, ■ blue: flag flip, ◆ sink-mode switch, ■ red: rollback, ○ auditor cycle</text>"##,
            legend_y + 18
        );
        let _ = writeln!(
            svg,
            r##"<text x="8" y="{}" font-size="9">client rows: the seq each lane's user sees; “p”: read over polling (flag off)</text>"##,
            legend_y + 32
        );
        svg.push_str("</svg>\n");
        svg
    }
}

/// A step in a few characters, for a timeline column.
pub fn short_label(step: &Step) -> String {
    let entity = |entity: EntityRef| match entity {
        EntityRef::Run(index) => format!("r{index}"),
        EntityRef::Worker(index) => format!("w{index}"),
    };
    match step {
        Step::AppendRunEvent { run, event_type } => {
            let event = event_type.as_str().trim_start_matches("run.");
            format!("r{run} {event}")
        }
        Step::FinishRun {
            run,
            status,
            reason,
        } if reason.is_null() => format!("r{run} {}", status.as_str()),
        Step::FinishRun {
            run,
            status,
            reason,
        } => format!("r{run} {} {reason}", status.as_str()),
        Step::CreateWorker { worker, .. } => format!("w{worker} create"),
        Step::AppendWorkerEvent { worker, event_type } => {
            let event = event_type.as_str().trim_start_matches("worker.");
            format!("w{worker} {event}")
        }
        Step::StopWorker { worker, .. } => format!("w{worker} stop"),
        Step::ReportWorkerMetadata {
            worker,
            value,
            variant,
        } => format!("w{worker} meta {value}/{variant}"),
        Step::DuplicateDelivery { entity: target } => format!("dup {}", entity(*target)),
        Step::SwitchSinkMode { mode } => format!("sink {mode}"),
        Step::Reproject {
            entity: Some(target),
        } => format!("reproj {}", entity(*target)),
        Step::Reproject { entity: None } => "reproj all".to_owned(),
        Step::BumpProjectionVersion => "version+1".to_owned(),
        Step::BreakConvex { fault } => match fault {
            ConvexFault::Reset => "convex reset".to_owned(),
            ConvexFault::Timeout => "convex hang".to_owned(),
            ConvexFault::Delay => "convex slow".to_owned(),
            ConvexFault::FunctionError200 => "convex throws 200".to_owned(),
            ConvexFault::FunctionError560 => "convex throws 560".to_owned(),
        },
        Step::BreakKhala { fault } => match fault {
            KhalaFault::ReadModel => "khala down".to_owned(),
            KhalaFault::Allocator => "khala allocator down".to_owned(),
        },
        Step::ConvexOutage { outage } => match outage {
            Outage::Pause => "convex pause".to_owned(),
            Outage::Stop => "convex stop".to_owned(),
        },
        Step::SetClientFlag { surface, value } => match value.as_deref() {
            Some("true") => format!("{} on", surface.as_str()),
            None => format!("{} off", surface.as_str()),
            Some(value) => format!("{}={value:?}", surface.as_str()),
        },
        Step::SetRolloutStage { stage } => format!("stage {}", stage.as_str()),
        Step::Rollback { switch } => match switch {
            RollbackSwitch::ClientFlags => "rb flags".to_owned(),
            RollbackSwitch::RuntimeConvexOnly => "rb convex".to_owned(),
            RollbackSwitch::DisableAuditor => "rb auditor".to_owned(),
        },
        Step::AuditorCycle => "audit".to_owned(),
        Step::RunRetention => "retention".to_owned(),
        Step::RunRetentionAtRow { rank } => format!("retention @{rank}"),
        Step::RunRetentionAtCursor => "retention @cursor".to_owned(),
        Step::RemoveEvents {
            entity: target,
            count,
        } => format!("{} -{count} ev", entity(*target)),
        Step::DisconnectClient { surface } => format!("{} drop", surface.as_str()),
        Step::ReconnectClient { surface } => format!("{} resume", surface.as_str()),
        Step::RestartSyncServer => "sync restart".to_owned(),
        Step::AdvanceTime { seconds } => format!("+{seconds}s"),
        Step::ReloadShippedClient { surface } => format!("{} reload", surface.as_str()),
        Step::Heal => "heal".to_owned(),
        Step::Quiesce => "quiesce".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::case::{CASE_SCHEMA, IdStyle, RunEventType, Start};
    use crate::model::observation::Observation;
    use serde_json::json;

    fn case(steps: Vec<Step>) -> Case {
        Case {
            schema: CASE_SCHEMA.to_owned(),
            profile: khala_runtime::Profile::Legacy,
            start: Start::new(SinkMode::Dual),
            ids: IdStyle::Plain,
            steps,
            origin: None,
        }
    }

    /// A B1-like trace: Convex written, Khala never.
    fn partial_fanout() -> (Case, Vec<StepTrace>) {
        let steps = vec![
            Step::BreakKhala {
                fault: KhalaFault::ReadModel,
            },
            Step::AppendRunEvent {
                run: 0,
                event_type: RunEventType::Started,
            },
        ];
        let case = case(steps.clone());
        let mut oracle = Oracle::at_start(case.ids, &case.start);
        let mut trace = Vec::new();
        for (index, step) in steps.into_iter().chain([Step::Quiesce]).enumerate() {
            oracle.apply(&step);
            let mut observation = Observation::default();
            if index >= 1 {
                let entity = crate::model::case::EntityRef::Run(0);
                let mut document = oracle.expected_document(entity).unwrap();
                document["projected_at"] = json!("2026-02-19T20:00:00Z");
                observation
                    .convex
                    .insert(oracle.document_id(entity), document);
            }
            trace.push(StepTrace {
                namespace: String::new(),
                index,
                step,
                observation,
                auditor: None,
                clients: None,
                refused: Vec::new(),
            });
        }
        (case, trace)
    }

    #[test]
    fn cells_are_placed_against_the_oracle() {
        let (case, trace) = partial_fanout();
        let timeline = Timeline::from_trace(&case, &trace);
        assert_eq!(timeline.steps.len(), 3);
        assert_eq!(timeline.steps[0].marker, Some(Marker::Fault));
        assert!(timeline.steps[1].fault_active && !timeline.steps[2].fault_active);
        let track = &timeline.documents[0];
        assert_eq!(track.document_id, "runtime/run_summary:run_0");
        let states = |store: &str| -> Vec<CellState> {
            let row = track.rows.iter().find(|row| row.store == store).unwrap();
            row.cells.iter().map(|cell| cell.state).collect()
        };
        // The run exists from step 1; before that every row is absent.
        assert_eq!(
            states("runtime"),
            [CellState::Absent, CellState::Match, CellState::Match]
        );
        assert_eq!(
            states("khala"),
            [CellState::Absent, CellState::Missing, CellState::Missing]
        );
        assert_eq!(
            states("convex"),
            [CellState::Absent, CellState::Match, CellState::Match]
        );
        assert_eq!(states("checkpoint")[1], CellState::Missing);
    }

    #[test]
    fn the_svg_is_deterministic_and_escaped() {
        let (case, trace) = partial_fanout();
        let mut timeline = Timeline::from_trace(&case, &trace);
        timeline.first_step = Some(1);
        timeline.detected_step = Some(2);
        let svg = timeline.to_svg("X1 <khala_missing> & more");
        assert_eq!(svg, timeline.to_svg("X1 <khala_missing> & more"));
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("X1 &lt;khala_missing&gt; &amp; more"));
        assert!(svg.contains(">diverges<") && svg.contains(">detected<"));
        assert!(svg.contains(fill(CellState::Missing)));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
