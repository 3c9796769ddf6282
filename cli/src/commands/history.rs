//! `kiln history`: the builds recorded in this store, newest first, as
//! `docker buildx history ls` lists them (with each build's steps and how many were cached).
//! `--format json` prints the records themselves, for tools.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_cache::Store;
use kiln_solver::{BuildRecord, BuildStatus};

use super::du::{now, open_store, write_stdout};
use crate::args::{HistoryArgs, UsageFormat};
use crate::format::{human_duration, table};

/// The builds recorded in `store`, oldest first; a record this version cannot read is
/// skipped with a warning.
pub(crate) fn load_builds(store: &Store) -> anyhow::Result<Vec<BuildRecord>> {
    let stored = store.build_records().context("reading the build records")?;
    Ok(stored
        .into_iter()
        .filter_map(|b| match BuildRecord::from_json(&b.bytes) {
            Ok(record) => Some(record),
            Err(error) => {
                tracing::warn!(build = %b.id, %error, "skipping an unreadable build record");
                None
            }
        })
        .collect())
}

/// buildx's words for how a build ended.
pub(crate) fn status_text(status: BuildStatus) -> &'static str {
    match status {
        BuildStatus::Completed => "Completed",
        BuildStatus::Failed => "Error",
    }
}

/// A duration as buildx shows one: `1.4s`, `2m 3s`.
pub(crate) fn duration_text(ms: u64) -> String {
    if ms < 60_000 {
        return format!("{:.1}s", ms as f64 / 1000.0);
    }
    let seconds = ms / 1000;
    match seconds {
        s if s < 3600 => format!("{}m {:2}s", s / 60, s % 60),
        s => format!("{}h {:2}m", s / 3600, (s % 3600) / 60),
    }
}

pub(crate) fn run(root: &Path, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(root)?;
    let mut builds = load_builds(&store)?;
    builds.reverse();
    if args.format == UsageFormat::Json {
        let mut text = serde_json::to_string_pretty(&builds).context("writing the records")?;
        text.push('\n');
        return write_stdout(&text);
    }
    let now = now();
    let mut rows = vec![
        [
            "BUILD ID",
            "NAME",
            "STATUS",
            "CREATED AT",
            "DURATION",
            "STEPS",
            "CACHED",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for build in &builds {
        rows.push(vec![
            build.id.clone(),
            build.name.clone(),
            status_text(build.status).to_owned(),
            format!("{} ago", human_duration(now.saturating_sub(build.created))),
            duration_text(build.duration_ms),
            build.steps.len().to_string(),
            build.cached_steps().to_string(),
        ]);
    }
    write_stdout(&table(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_buildx_shows_them() {
        assert_eq!(duration_text(1_449), "1.4s");
        assert_eq!(duration_text(123_000), "2m  3s");
        assert_eq!(duration_text(3_720_000), "1h  2m");
    }
}
