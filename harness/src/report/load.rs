//! Reading a report file back (the `report` subcommand): the schema, the
//! shape (every reason class is one of `model::reason`'s), every
//! scenario's thresholds, and a failure names the offending key.

use super::model::{REPORT_SCHEMA, Report, ShardSection};
use std::path::{Path, PathBuf};

/// A report file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("read report {}: key `{key}`: {message}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    /// A JSON path such as `gate.checks[0].outcome`, or `.` for the file.
    pub key: String,
    pub message: String,
}

/// Parses and checks a report's text.
pub fn parse(path: &Path, text: &str) -> Result<Report, LoadError> {
    let error = |key: String, message: String| LoadError {
        path: path.to_owned(),
        key,
        message,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let report: Report = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|failure| error(failure.path().to_string(), failure.inner().to_string()))?;
    deserializer
        .end()
        .map_err(|failure| error(".".to_owned(), failure.to_string()))?;
    if report.schema != REPORT_SCHEMA {
        return Err(error(
            "schema".to_owned(),
            format!("expected {REPORT_SCHEMA:?}, found {:?}", report.schema),
        ));
    }
    for (index, scenario) in report.scenarios.iter().enumerate() {
        scenario.thresholds.validate().map_err(|failure| {
            error(
                format!("scenarios[{index}].thresholds.{}", failure.key),
                failure.kind.to_string(),
            )
        })?;
    }
    for (index, violation) in report.violations.iter().enumerate() {
        if violation
            .finding
            .is_some_and(|finding| finding >= report.findings.len())
        {
            return Err(error(
                format!("violations[{index}].finding"),
                format!("there are {} finding(s)", report.findings.len()),
            ));
        }
    }
    for (index, finding) in report.findings.iter().enumerate() {
        if finding
            .defect
            .is_some_and(|defect| defect >= report.defects.len())
        {
            return Err(error(
                format!("findings[{index}].defect"),
                format!("there are {} defect(s)", report.defects.len()),
            ));
        }
    }
    for (index, defect) in report.defects.iter().enumerate() {
        if let Some(finding) = defect
            .findings
            .iter()
            .find(|finding| **finding >= report.findings.len())
        {
            return Err(error(
                format!("defects[{index}].findings"),
                format!(
                    "finding {finding}: there are {} finding(s)",
                    report.findings.len()
                ),
            ));
        }
    }
    if let Some(section) = &report.shard {
        check_shard(section, &report).map_err(|(key, message)| error(key, message))?;
    }
    Ok(report)
}

/// A shard section must describe the report's own scenarios and findings.
fn check_shard(section: &ShardSection, report: &Report) -> Result<(), (String, String)> {
    if section.scenarios.len() != report.scenarios.len() {
        return Err((
            "shard.scenarios".to_owned(),
            format!(
                "{} entries for the report's {} scenario(s)",
                section.scenarios.len(),
                report.scenarios.len()
            ),
        ));
    }
    for (index, (entry, summary)) in section.scenarios.iter().zip(&report.scenarios).enumerate() {
        if entry.name != summary.name {
            return Err((
                format!("shard.scenarios[{index}].name"),
                format!(
                    "{:?}, but scenarios[{index}] is {:?}",
                    entry.name, summary.name
                ),
            ));
        }
        let findings = report
            .findings
            .iter()
            .filter(|finding| finding.scenario == entry.name)
            .count();
        if entry.findings.len() != findings {
            return Err((
                format!("shard.scenarios[{index}].findings"),
                format!(
                    "{} entries for the {findings} finding(s) of {}",
                    entry.findings.len(),
                    entry.name
                ),
            ));
        }
    }
    let shard = section.shard;
    if shard.count == 0 || !(1..=shard.count).contains(&shard.index) {
        return Err((
            "shard.shard".to_owned(),
            format!("{}/{} is not a shard", shard.index, shard.count),
        ));
    }
    Ok(())
}

/// Reads and checks a report file.
pub fn load(path: &Path) -> Result<Report, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|failure| LoadError {
        path: path.to_owned(),
        key: ".".to_owned(),
        message: failure.to_string(),
    })?;
    parse(path, &text)
}
