//! `kiln explain [BUILD]`: why each step of a build ran instead of coming from the cache,
//! from the build's record (`kiln history`): the first reason the scheduler found for each,
//! with the steps, files, build args and images it concerns named as the build named them.
//! `--format json` prints the same for tools: each step with its reason as the solver's
//! `MissReason` and the sentence shown.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kiln_solver::{BuildRecord, DefinitionChange, FileChange, MissReason, StepStatus};

use super::du::{open_store, write_stdout};
use super::history::{duration_text, load_builds, status_text};
use crate::args::{ExplainArgs, UsageFormat};

pub(crate) fn run(root: &Path, args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(root)?;
    let builds = load_builds(&store)?;
    let build = select(&builds, args.build.as_deref())?;
    let text = match args.format {
        UsageFormat::Json => {
            let mut text =
                serde_json::to_string_pretty(&to_json(build)).context("writing the explanation")?;
            text.push('\n');
            text
        }
        UsageFormat::Table => render(build),
    };
    write_stdout(&text)
}

/// The build `wanted` names among `builds` (oldest first): the last without a name, `^N` the
/// Nth before it, else the one whose id is or starts with it.
pub(crate) fn select<'a>(
    builds: &'a [BuildRecord],
    wanted: Option<&str>,
) -> anyhow::Result<&'a BuildRecord> {
    let Some(wanted) = wanted else {
        return builds
            .last()
            .context("no build is recorded in this store (kiln history lists them)");
    };
    if let Some(back) = wanted.strip_prefix('^') {
        let back: usize = back
            .parse()
            .with_context(|| format!("invalid build {wanted:?}: expected ^N"))?;
        return builds
            .len()
            .checked_sub(back + 1)
            .map(|n| &builds[n])
            .with_context(|| format!("there are only {} recorded builds", builds.len()));
    }
    let found: Vec<&BuildRecord> = builds.iter().filter(|b| b.id.starts_with(wanted)).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => bail!("no build {wanted:?} is recorded in this store (kiln history lists them)"),
        _ => bail!("{wanted:?} names several builds; give more of the id"),
    }
}

/// Why a step ran, in a sentence; `build` names the inputs and build args it mentions.
pub(crate) fn explain(reason: &MissReason, build: &BuildRecord) -> String {
    match reason {
        MissReason::Ignored => {
            "the cache was not used for it (--no-cache, --no-cache-filter, or a step below it ran again so)"
                .to_owned()
        }
        MissReason::NoRecord => "no earlier build of this step is recorded in this store".to_owned(),
        MissReason::ContentChanged {
            file: Some(file),
            change,
            ..
        } => match change {
            Some(FileChange::Added { size, .. }) => {
                format!("the file {file:?} was added ({size} bytes)")
            }
            Some(FileChange::Removed { .. }) => format!("the file {file:?} was removed"),
            Some(FileChange::ModeChanged { old_mode, new_mode }) => format!(
                "the mode of the file {file:?} changed ({:o} -> {:o})",
                old_mode & 0o7777,
                new_mode & 0o7777
            ),
            Some(FileChange::Modified {
                old_size,
                new_size,
                old_sha256,
                new_sha256,
            }) => format!(
                "the file {file:?} changed ({old_size} -> {new_size} bytes, {} -> {})",
                short(old_sha256),
                short(new_sha256)
            ),
            None => format!("the file {file:?} changed (modified, added or removed)"),
        },
        MissReason::ContentChanged { file: None, .. } => "its files changed".to_owned(),
        MissReason::InputChanged { input, vertex, .. } => match build.step(vertex) {
            Some(step) if !step.name.is_empty() => format!("its input {:?} changed", step.name),
            _ => format!("its input {input} ({vertex}) changed"),
        },
        MissReason::Pruned => "its cached result was removed (pruned)".to_owned(),
        MissReason::DefinitionChanged { changes } if changes.is_empty() => {
            "its definition changed".to_owned()
        }
        MissReason::DefinitionChanged { changes } => changes
            .iter()
            .map(|change| explain_change(change, build))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// `sha256:` and the first 12 hex digits, as docker shortens ids.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn explain_change(change: &DefinitionChange, build: &BuildRecord) -> String {
    match change {
        DefinitionChange::Env { name, old, new } => {
            let what = if build.build_args.iter().any(|a| a == name) {
                "build arg"
            } else {
                "environment variable"
            };
            let how = match (old, new) {
                (None, _) => "was set",
                (_, None) => "was unset",
                _ => "changed",
            };
            format!("{what} {name} {how}")
        }
        DefinitionChange::Image {
            reference,
            old,
            new,
        } => format!("base image {reference} changed from {old} to {new}"),
        DefinitionChange::Field { name, old, new } => match (old, new) {
            (Some(old), Some(new)) => format!("its {name} changed from {old} to {new}"),
            (None, Some(new)) => format!("its {name} was added: {new}"),
            (Some(old), None) => format!("its {name} was removed (it was {old})"),
            (None, None) => format!("its {name} changed"),
        },
    }
}

/// The steps that ran, each with its reason, in the order they started (those that never
/// did last).
fn ran(build: &BuildRecord) -> Vec<(&kiln_solver::StepRecord, &MissReason)> {
    let mut ran: Vec<_> = build
        .steps
        .iter()
        .filter(|s| s.status != StepStatus::Cached)
        .filter_map(|s| s.miss.as_ref().map(|m| (s, m)))
        .collect();
    ran.sort_by_key(|(s, _)| (s.started_ms.unwrap_or(u64::MAX), s.queued_ms));
    ran
}

pub(crate) fn render(build: &BuildRecord) -> String {
    let ran = ran(build);
    let mut out = format!(
        "Build {} ({}): {} in {}, {} steps, {} cached, {} ran\n",
        build.id,
        build.name,
        status_text(build.status),
        duration_text(build.duration_ms),
        build.steps.len(),
        build.cached_steps(),
        ran.len(),
    );
    if build.steps.is_empty() {
        out.push_str("No step was solved.\n");
    } else if ran.is_empty() {
        out.push_str("Nothing ran: every step came from the cache.\n");
    }
    for (step, reason) in ran {
        let name = if step.name.is_empty() {
            &step.vertex
        } else {
            &step.name
        };
        out.push_str(&format!("{name}\n  ran: {}\n", explain(reason, build)));
    }
    out
}

fn to_json(build: &BuildRecord) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = ran(build)
        .into_iter()
        .map(|(step, reason)| {
            serde_json::json!({
                "vertex": step.vertex,
                "name": step.name,
                "status": step.status,
                "reason": reason,
                "explanation": explain(reason, build),
            })
        })
        .collect();
    serde_json::json!({
        "id": build.id,
        "name": build.name,
        "status": build.status,
        "created": build.created,
        "duration_ms": build.duration_ms,
        "steps_total": build.steps.len(),
        "cached": build.cached_steps(),
        "steps": steps,
    })
}

#[cfg(test)]
mod tests {
    use kiln_solver::{BuildStatus, StepRecord};

    use super::*;

    fn step(vertex: &str, name: &str, miss: Option<MissReason>) -> StepRecord {
        StepRecord {
            vertex: vertex.into(),
            name: name.into(),
            status: match miss {
                Some(_) => StepStatus::Completed,
                None => StepStatus::Cached,
            },
            miss,
            queued_ms: 0,
            started_ms: None,
            completed_ms: None,
            error: None,
            phases: Vec::new(),
            inputs: Vec::new(),
        }
    }

    fn build(id: &str, steps: Vec<StepRecord>) -> BuildRecord {
        BuildRecord {
            id: id.into(),
            name: "app".into(),
            status: BuildStatus::Completed,
            created: 0,
            duration_ms: 1500,
            build_args: vec!["V".into()],
            steps,
            export_ms: None,
            export_phases: Vec::new(),
        }
    }

    #[test]
    fn reasons_name_the_input_step_the_file_and_the_build_arg() {
        let record = build(
            "abc",
            vec![
                step("s1", "[internal] load build context", None),
                step(
                    "s2",
                    "[stage 1/2] COPY . /src",
                    Some(MissReason::InputChanged {
                        input: 1,
                        vertex: "s1".into(),
                        old: "a".into(),
                        new: "b".into(),
                    }),
                ),
                step(
                    "s3",
                    "[stage 2/2] RUN make",
                    Some(MissReason::DefinitionChanged {
                        changes: vec![
                            DefinitionChange::Env {
                                name: "V".into(),
                                old: Some("x".into()),
                                new: Some("y".into()),
                            },
                            DefinitionChange::Env {
                                name: "PATH".into(),
                                old: None,
                                new: Some("z".into()),
                            },
                        ],
                    }),
                ),
            ],
        );
        let text = render(&record);
        assert_eq!(
            text,
            "Build abc (app): Completed in 1.5s, 3 steps, 1 cached, 2 ran\n\
             [stage 1/2] COPY . /src\n  ran: its input \"[internal] load build context\" changed\n\
             [stage 2/2] RUN make\n  ran: build arg V changed; environment variable PATH was set\n"
        );
        let json = to_json(&record);
        assert_eq!(json["steps"][0]["reason"]["kind"], "input-changed");
        assert_eq!(json["steps"][1]["reason"]["changes"][0]["name"], "V");
        let file = MissReason::ContentChanged {
            old: "a".into(),
            new: "b".into(),
            file: Some("src/main.c".into()),
            change: None,
        };
        assert_eq!(
            explain(&file, &record),
            "the file \"src/main.c\" changed (modified, added or removed)"
        );
        let modified = MissReason::ContentChanged {
            old: "a".into(),
            new: "b".into(),
            file: Some("app.txt".into()),
            change: Some(FileChange::Modified {
                old_size: 3,
                new_size: 4,
                old_sha256: format!("sha256:{}", "a".repeat(64)),
                new_sha256: format!("sha256:{}", "b".repeat(64)),
            }),
        };
        assert_eq!(
            explain(&modified, &record),
            "the file \"app.txt\" changed (3 -> 4 bytes, sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb)"
        );
        let chmod = MissReason::ContentChanged {
            old: "a".into(),
            new: "b".into(),
            file: Some("run.sh".into()),
            change: Some(FileChange::ModeChanged {
                old_mode: 0o100644,
                new_mode: 0o100755,
            }),
        };
        assert_eq!(
            explain(&chmod, &record),
            "the mode of the file \"run.sh\" changed (644 -> 755)"
        );
    }

    #[test]
    fn builds_are_chosen_by_id_prefix_or_position() {
        let builds = [
            build("abc1", vec![]),
            build("abd2", vec![]),
            build("xyz", vec![]),
        ];
        assert_eq!(select(&builds, None).unwrap().id, "xyz");
        assert_eq!(select(&builds, Some("^1")).unwrap().id, "abd2");
        assert_eq!(select(&builds, Some("abc")).unwrap().id, "abc1");
        let err = select(&builds, Some("ab")).unwrap_err().to_string();
        assert!(err.contains("several builds"), "{err}");
        let err = select(&builds, Some("^3")).unwrap_err().to_string();
        assert_eq!(err, "there are only 3 recorded builds");
        assert!(select(&[], None).is_err());
    }
}
