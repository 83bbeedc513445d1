//! Writing a report's artifacts to a folder: `report.json`, `report.txt`
//! (the human text without colour), `metrics.prom`, `drill.md` and one
//! `timeline-N.svg` per finding with a timeline.

use super::model::Report;
use super::{drill, human, prometheus};
use std::path::{Path, PathBuf};

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("write {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes every artifact; returns the paths written, in a fixed order.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, WriteError> {
    std::fs::create_dir_all(dir).map_err(|source| WriteError {
        path: dir.to_owned(),
        source,
    })?;
    let json = serde_json::to_string_pretty(report).map_err(|error| WriteError {
        path: dir.join("report.json"),
        source: std::io::Error::other(error),
    })?;
    let mut files = vec![
        ("report.json".to_owned(), json + "\n"),
        ("report.txt".to_owned(), human::render(report, false)),
        ("metrics.prom".to_owned(), prometheus::render(report)),
        ("drill.md".to_owned(), drill::render(report)),
    ];
    for (index, finding) in report.findings.iter().enumerate() {
        if let Some(timeline) = &finding.timeline {
            let title = format!(
                "finding {}: {} {} ({})",
                index + 1,
                finding.invariant,
                finding.reason_class,
                finding.scenario
            );
            files.push((drill::timeline_file(index), timeline.to_svg(&title)));
        }
    }
    let mut written = Vec::new();
    for (name, contents) in files {
        // Written aside and renamed over, so a reader (a Prometheus
        // scraper during `audit --watch`) never sees half a file.
        let path = dir.join(&name);
        let partial = dir.join(format!(".{name}.partial"));
        std::fs::write(&partial, contents)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|source| WriteError {
                path: path.clone(),
                source,
            })?;
        written.push(path);
    }
    Ok(written)
}
