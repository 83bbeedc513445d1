//! One finding per defect: the engine shrinks each failure signature
//! (invariant, reason class) on its own, so one root defect that breaks
//! several checks yields several minimal cases. Two of them stand for one
//! defect when, under one profile,
//! - their minimal cases are equal or one contains the other (same start,
//!   and the steps of one are a subsequence of the other's), or
//! - they first diverge from the oracle at the same step under the same
//!   active faults (the fault steps not yet healed when it ran).
//!
//! Grouping takes the transitive closure of that relation. It is pure and
//! depends only on the findings in their report order, so a merged sharded
//! run groups exactly as the unsharded run.

use crate::model::case::{Case, Step};

/// What grouping needs of one finding.
#[derive(Clone, Copy, Debug)]
pub struct DefectInput<'a> {
    /// The minimal case.
    pub case: &'a Case,
    /// The step after which the first violation was seen, if any.
    pub first_step: Option<usize>,
}

/// The defect of each finding, numbered by first appearance: `result[i]`
/// is the defect of `findings[i]`, and defect `d` first appears before
/// defect `d + 1`.
pub fn group(findings: &[DefectInput]) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..findings.len()).collect();
    for right in 0..findings.len() {
        for left in 0..right {
            if same_defect(&findings[left], &findings[right]) {
                let (a, b) = (root(&mut parent, left), root(&mut parent, right));
                // The earlier finding is the root, so numbering follows it.
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut numbers: Vec<Option<usize>> = vec![None; findings.len()];
    let mut next = 0;
    (0..findings.len())
        .map(|index| {
            let root = root(&mut parent, index);
            *numbers[root].get_or_insert_with(|| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

fn root(parent: &mut [usize], mut index: usize) -> usize {
    while parent[index] != index {
        parent[index] = parent[parent[index]];
        index = parent[index];
    }
    index
}

/// Whether two findings come from one root cause (see the module doc).
pub fn same_defect(left: &DefectInput, right: &DefectInput) -> bool {
    if left.case.profile != right.case.profile {
        return false;
    }
    let same_start = left.case.start == right.case.start && left.case.ids == right.case.ids;
    if same_start
        && (is_subsequence(&left.case.steps, &right.case.steps)
            || is_subsequence(&right.case.steps, &left.case.steps))
    {
        return true;
    }
    match (divergence(left), divergence(right)) {
        (Some(left), Some(right)) => left == right,
        _ => false,
    }
}

/// The step a finding first diverges at, with the faults active then.
fn divergence<'a>(finding: &DefectInput<'a>) -> Option<(&'a Step, Vec<&'a Step>)> {
    let index = finding.first_step?;
    let steps = &finding.case.steps;
    let step = steps.get(index)?;
    Some((step, active_faults(&steps[..index])))
}

/// The fault steps among `steps` that no later `Heal` or `Quiesce` ended.
pub fn active_faults(steps: &[Step]) -> Vec<&Step> {
    let mut active = Vec::new();
    for step in steps {
        match step {
            Step::BreakConvex { .. } | Step::BreakKhala { .. } | Step::ConvexOutage { .. } => {
                active.push(step);
            }
            Step::Heal | Step::Quiesce => active.clear(),
            _ => {}
        }
    }
    active
}

/// Which defect switches a failure comes from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// It needs each of these on: turning any one off ends it.
    Each(Vec<String>),
    /// Any one of these on suffices: only turning all of them off ends it
    /// (two defects that lose the same data).
    AnyOf(Vec<String>),
    /// It shows with every switch off: not a defect the switches name.
    NoSwitch,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Each(switches) => formatter.write_str(&switches.join(" + ")),
            Cause::AnyOf(switches) => formatter.write_str(&switches.join(" | ")),
            Cause::NoSwitch => formatter.write_str("no switch"),
        }
    }
}

/// Which of `candidates` (all on to begin with) a failure comes from.
/// `fails(off)` plays the failure's case with the switches `off` turned
/// off, the others on, and says whether it still shows.
///
/// First the switches it needs, by adaptive group testing: a set whose
/// removal leaves the failure showing holds no needed switch; one whose
/// removal ends it is halved until single switches remain, so a failure
/// needing `k` of `n` switches costs about `1 + 2k·log2(n)` plays instead
/// of `n`. When it needs none alone, yet all off end it, the switches that
/// each suffice are found by putting them back one at a time (`n` plays):
/// a smallest set whose removal still ends it.
pub fn cause<E>(
    candidates: &[String],
    mut fails: impl FnMut(&[String]) -> Result<bool, E>,
) -> Result<Cause, E> {
    if fails(candidates)? {
        return Ok(Cause::NoSwitch);
    }
    let mut needed = Vec::new();
    let (left, right) = candidates.split_at(candidates.len() / 2);
    // Popped left first, so the result keeps the candidates' order.
    let mut pending = vec![right, left];
    while let Some(set) = pending.pop() {
        if set.is_empty() || fails(set)? {
            continue;
        }
        if let [switch] = set {
            needed.push(switch.clone());
            continue;
        }
        let (left, right) = set.split_at(set.len() / 2);
        pending.push(right);
        pending.push(left);
    }
    if !needed.is_empty() {
        return Ok(Cause::Each(needed));
    }
    let mut off = candidates.to_vec();
    for switch in candidates {
        let without: Vec<String> = off.iter().filter(|s| *s != switch).cloned().collect();
        if !fails(&without)? {
            off = without;
        }
    }
    Ok(Cause::AnyOf(off))
}

fn is_subsequence(small: &[Step], large: &[Step]) -> bool {
    let mut large = large.iter();
    small.iter().all(|step| large.any(|other| other == step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::case::{
        CASE_SCHEMA, ConvexFault, IdStyle, RunEventType, Start, TerminalStatus,
    };
    use khala_runtime::{Profile, SinkMode};

    fn case(steps: Vec<Step>) -> Case {
        Case {
            schema: CASE_SCHEMA.to_owned(),
            profile: Profile::Legacy,
            start: Start::new(SinkMode::Dual),
            ids: IdStyle::Plain,
            steps,
            origin: None,
        }
    }

    fn started(run: u8) -> Step {
        Step::AppendRunEvent {
            run,
            event_type: RunEventType::Started,
        }
    }

    fn finished(run: u8) -> Step {
        Step::FinishRun {
            run,
            status: TerminalStatus::Succeeded,
            reason: Default::default(),
        }
    }

    fn input(case: &Case, first_step: usize) -> DefectInput<'_> {
        DefectInput {
            case,
            first_step: Some(first_step),
        }
    }

    #[test]
    fn contained_minimal_cases_are_one_defect_and_others_are_not() {
        let small = case(vec![finished(0)]);
        let large = case(vec![started(0), finished(0)]);
        let other = case(vec![started(0), Step::BumpProjectionVersion]);
        let findings = [input(&small, 0), input(&other, 1), input(&large, 1)];
        assert_eq!(group(&findings), vec![0, 1, 0]);
    }

    #[test]
    fn the_same_first_divergent_step_under_the_same_faults_is_one_defect() {
        let broken = Step::BreakConvex {
            fault: ConvexFault::Timeout,
        };
        let one = case(vec![broken.clone(), started(1), finished(0)]);
        let two = case(vec![started(2), broken.clone(), finished(0)]);
        let healed = case(vec![broken, Step::Heal, finished(0)]);
        assert!(same_defect(&input(&one, 2), &input(&two, 2)));
        assert!(!same_defect(&input(&one, 2), &input(&healed, 2)));
        assert!(!same_defect(&input(&one, 2), &input(&two, 1)));
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    /// Plays of a failure that needs every switch of `needs` on, with the
    /// number of plays counted.
    fn needing<'a>(
        needs: &'a [&str],
        plays: &'a mut u32,
    ) -> impl FnMut(&[String]) -> Result<bool, ()> + 'a {
        move |off| {
            *plays += 1;
            Ok(!off.iter().any(|switch| needs.contains(&switch.as_str())))
        }
    }

    #[test]
    fn the_switches_a_failure_needs_are_found_in_few_plays() {
        let candidates: Vec<String> = (0..21).map(|n| format!("b{n}")).collect();
        let mut plays = 0;
        let found = cause(&candidates, needing(&["b7"], &mut plays));
        assert_eq!(found, Ok(Cause::Each(names(&["b7"]))));
        assert!(plays <= 11, "{plays} plays");
        let mut plays = 0;
        let found = cause(&candidates, needing(&["b1", "b3", "b20"], &mut plays));
        assert_eq!(found, Ok(Cause::Each(names(&["b1", "b3", "b20"]))));
        let mut plays = 0;
        assert_eq!(
            cause(&candidates, needing(&[], &mut plays)),
            Ok(Cause::NoSwitch)
        );
        assert_eq!(plays, 1);
    }

    #[test]
    fn either_of_two_causes_is_named_and_errors_stop_the_search() {
        let candidates = names(&["b1", "b2", "b3", "b4", "b5"]);
        // Fails while b2 or b4 is on.
        let either = |off: &[String]| -> Result<bool, ()> {
            let on = |name: &str| !off.iter().any(|switch| switch == name);
            Ok(on("b2") || on("b4"))
        };
        assert_eq!(
            cause(&candidates, either),
            Ok(Cause::AnyOf(names(&["b2", "b4"])))
        );
        assert_eq!(
            cause(&candidates, |_: &[String]| Err("backend down")),
            Err("backend down")
        );
        assert_eq!(Cause::AnyOf(names(&["b2", "b4"])).to_string(), "b2 | b4");
        assert_eq!(Cause::Each(names(&["b1", "b2"])).to_string(), "b1 + b2");
    }

    #[test]
    fn profiles_never_share_a_defect_and_grouping_is_transitive() {
        let legacy = case(vec![finished(0)]);
        let hardened = Case {
            profile: Profile::Hardened,
            ..legacy.clone()
        };
        assert!(!same_defect(&input(&legacy, 0), &input(&hardened, 0)));
        let a = case(vec![finished(0)]);
        let b = case(vec![finished(0), started(1)]);
        let c = case(vec![started(1)]);
        // a ⊂ b and c ⊂ b: all one, though a and c share nothing.
        let findings = [input(&a, 0), input(&c, 0), input(&b, 0)];
        assert_eq!(group(&findings), vec![0, 0, 0]);
    }
}
