//! Reading a report file back (the `report` subcommand): the schema, the
//! shape (every reason class is one of `model::reason`'s), every
//! scenario's thresholds, and a failure names the offending key.

use super::model::{REPORT_SCHEMA, Report};
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
    Ok(report)
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
