//! What a build says of itself when it is over, from its record: the summary under
//! `--progress=plain`, why its steps ran (`--explain`), a Chrome trace (`--trace FILE`, for
//! ui.perfetto.dev or chrome://tracing) and the graph in Graphviz DOT (`--dot FILE`); and the
//! end of a build: its record stored in the store's history, its export's time and phases,
//! the id files and `-q`'s image id.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use kiln_cache::Store;
use kiln_solver::{BuildRecord, BuildStatus, PhaseRecord, Recorder, StepRecord, StepStatus};

use super::{Noted, collect_garbage, metadata, warn};
use crate::args::BuildArgs;
use crate::config::Config;
use crate::progress::Progress;

/// The plain progress's last lines: total time, time on the critical path, the three slowest
/// steps (each as `label` names it) and how many steps came from the cache.
pub(super) fn summary(record: &BuildRecord, label: impl Fn(&StepRecord) -> String) -> String {
    let seconds = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
    let (critical, path) = record.critical_path();
    let total = record.steps.len();
    let cached = record.cached_steps();
    let ratio = match total {
        0 => 0,
        n => cached * 100 / n,
    };
    let steps = match path.len() {
        1 => "1 step".to_owned(),
        n => format!("{n} steps"),
    };
    let mut out = format!(
        "#summary {} total, {} on the critical path ({steps}), {cached}/{total} steps cached ({ratio}%)\n",
        seconds(record.duration_ms),
        seconds(critical),
    );
    let mut ran: Vec<_> = record
        .steps
        .iter()
        .filter(|s| s.status != StepStatus::Cached && s.ran_ms() > 0)
        .collect();
    ran.sort_by_key(|s| std::cmp::Reverse(s.ran_ms()));
    for step in ran.iter().take(3) {
        let _ = writeln!(
            out,
            "#summary slow: {} {}",
            seconds(step.ran_ms()),
            label(step)
        );
    }
    out
}

/// The Chrome trace-event document: per step a thread named after it with one span for the
/// whole step, and inside it a `queued` span (until it started), a `running` span and a span
/// for each phase its op reported (`pull`, `unpack`, `checksum`, `transfer`, `mounts`, `run`,
/// `commit`, `files`, with the bytes it counted); then the export (`exporting`) on a track of
/// its own, with its phases (`compress`, `diff`, `push`). Counters: the bytes each kind of
/// phase moved so far, and the processes running at once.
pub(super) fn trace(record: &BuildRecord) -> serde_json::Value {
    let us = |ms: u64| ms * 1000;
    let mut events = vec![serde_json::json!({
        "name": "process_name", "ph": "M", "pid": 1, "tid": 0,
        "args": { "name": format!("kiln build {} ({})", record.id, record.name) },
    })];
    for (n, step) in record.steps.iter().enumerate() {
        let tid = n + 1;
        let end = step
            .completed_ms
            .unwrap_or(record.duration_ms)
            .max(step.queued_ms);
        events.push(serde_json::json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": tid,
            "args": { "name": step.name },
        }));
        events.push(serde_json::json!({
            "name": step.name, "cat": "vertex", "ph": "X", "pid": 1, "tid": tid,
            "ts": us(step.queued_ms), "dur": us(end - step.queued_ms),
            "args": { "vertex": step.vertex, "status": step.status, "miss": step.miss },
        }));
        if let Some(started) = step.started_ms {
            let started = started.clamp(step.queued_ms, end);
            for (name, from, to) in [
                ("queued", step.queued_ms, started),
                ("running", started, end),
            ] {
                events.push(serde_json::json!({
                    "name": name, "cat": "phase", "ph": "X", "pid": 1, "tid": tid,
                    "ts": us(from), "dur": us(to - from),
                }));
            }
        }
        events.extend(step.phases.iter().map(|p| phase_span(p, tid)));
    }
    // The export, after the steps: on a track of its own.
    if let Some(ms) = record.export_ms {
        let tid = record.steps.len() + 1;
        events.push(serde_json::json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": tid,
            "args": { "name": "export" },
        }));
        events.push(serde_json::json!({
            "name": "exporting", "cat": "export", "ph": "X", "pid": 1, "tid": tid,
            "ts": us(record.duration_ms), "dur": us(ms),
        }));
        events.extend(record.export_phases.iter().map(|p| phase_span(p, tid)));
    }
    events.extend(counters(record).into_iter().map(|(ms, name, args)| {
        serde_json::json!({ "name": name, "ph": "C", "pid": 1, "ts": us(ms), "args": args })
    }));
    serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}

/// A phase's span on the track `tid`, with its bytes.
fn phase_span(phase: &PhaseRecord, tid: usize) -> serde_json::Value {
    let ended = phase.ended_ms.max(phase.started_ms);
    serde_json::json!({
        "name": phase.name, "cat": "phase", "ph": "X", "pid": 1, "tid": tid,
        "ts": phase.started_ms * 1000, "dur": (ended - phase.started_ms) * 1000,
        "args": { "bytes": phase.bytes },
    })
}

/// The trace's counters, in time order: after each phase that counted bytes, the bytes of
/// its kind so far (`bytes`); at each start and end of a `run` phase, the processes running
/// (`processes`).
fn counters(record: &BuildRecord) -> Vec<(u64, &'static str, serde_json::Value)> {
    use std::collections::BTreeMap;
    let phases = || {
        record
            .steps
            .iter()
            .flat_map(|s| &s.phases)
            .chain(&record.export_phases)
    };
    let mut out = Vec::new();
    let mut moved: Vec<_> = phases().filter(|p| p.bytes.is_some()).collect();
    moved.sort_by_key(|p| p.ended_ms);
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for phase in moved {
        *totals.entry(&phase.name).or_default() += phase.bytes.unwrap_or(0);
        out.push((phase.ended_ms, "bytes", serde_json::json!(totals)));
    }
    let mut changes: Vec<(u64, i64)> = phases()
        .filter(|p| p.name == "run")
        .flat_map(|p| [(p.started_ms, 1), (p.ended_ms.max(p.started_ms), -1)])
        .collect();
    // At one instant, ends before starts: a process that ended is not counted beside the
    // next one.
    changes.sort();
    let mut running = 0;
    for (ms, change) in changes {
        running += change;
        out.push((ms, "processes", serde_json::json!({ "processes": running })));
    }
    out.sort_by_key(|(ms, _, _)| *ms);
    out
}

/// The build's graph: a node per step, coloured by what became of it (grey: cached, green:
/// ran, red: failed, white: canceled), an edge from each input.
pub(super) fn dot(record: &BuildRecord) -> String {
    use kiln_llb::dump::dot_string;
    let mut out = String::from("digraph build {\n  node [shape=box style=filled];\n");
    for step in &record.steps {
        let colour = match step.status {
            StepStatus::Cached => "lightgrey",
            StepStatus::Completed => "palegreen",
            StepStatus::Failed => "salmon",
            StepStatus::Canceled => "white",
        };
        let _ = writeln!(
            out,
            "  {} [label={} fillcolor={}];",
            dot_string(&step.vertex),
            dot_string(&step.name),
            dot_string(colour)
        );
    }
    for step in &record.steps {
        for input in step.inputs.iter().filter(|i| record.step(i).is_some()) {
            let _ = writeln!(
                out,
                "  {} -> {};",
                dot_string(input),
                dot_string(&step.vertex)
            );
        }
    }
    out.push_str("}\n");
    out
}

/// The end of a build whose steps were solved: stores its record (failed when its export
/// failed, as buildx's history says), releases its lease, applies the garbage collection
/// policies, writes `--iidfile`/`--metadata-file` and prints `-q`'s image id.
pub(super) fn finish(
    store: &Store,
    config: &Config,
    args: &BuildArgs,
    mut record: kiln_solver::BuildRecord,
    noted: &mut Noted,
    lease: kiln_cache::Lease,
    exported: anyhow::Result<Vec<kiln_exporters::ExportResponse>>,
) -> anyhow::Result<ExitCode> {
    if exported.is_err() {
        record.status = BuildStatus::Failed;
    }
    write_reports(args, &record)?;
    let build_id = store_build(store, &record);
    noted.stored = true;
    let exported = exported?;
    // What the build made is named by its records and outputs now; with `[gc] enabled`, the
    // policies then prune the cache down to their limits (a collection waits for leases).
    drop(lease);
    if config.cache.gc.enabled {
        collect_garbage(store, &config.cache.gc)?;
    }
    metadata::write_files(args, &exported, build_id.as_deref())?;
    print_image_id(args, &exported)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the build's trace and graph (`--trace`, `--dot`) once it has ended, its export
/// included.
pub(super) fn write_reports(
    args: &BuildArgs,
    record: &kiln_solver::BuildRecord,
) -> anyhow::Result<()> {
    if let Some(path) = &args.trace {
        let trace = serde_json::to_vec(&trace(record)).context("writing the --trace")?;
        fs_err::write(path, trace).context("writing the --trace")?;
    }
    if let Some(path) = &args.dot {
        fs_err::write(path, dot(record)).context("writing the --dot")?;
    }
    Ok(())
}

/// Notes the export begun at `started` in the build's record: how long it took, and the
/// phases of each output's export (when it exported anything and succeeded).
pub(super) fn note_export(
    record: &mut kiln_solver::BuildRecord,
    recorder: &Recorder,
    started: Instant,
    exports: bool,
    exported: &anyhow::Result<Vec<kiln_exporters::ExportResponse>>,
) {
    let Ok(responses) = exported else {
        return;
    };
    if !exports {
        return;
    }
    record.export_ms = Some(kiln_solver::millis(started.elapsed()));
    record.export_phases = responses
        .iter()
        .flat_map(|r| &r.phases)
        .map(|phase| kiln_solver::PhaseRecord {
            name: phase.name.to_owned(),
            started_ms: recorder.ms_at(phase.started),
            ended_ms: recorder.ms_at(phase.ended),
            bytes: phase.bytes,
        })
        .collect();
}

/// With `-q` or `--progress=quiet`, prints the image id alone, as buildx (nothing without
/// an image output).
pub(super) fn print_image_id(
    args: &BuildArgs,
    exported: &[kiln_exporters::ExportResponse],
) -> anyhow::Result<()> {
    if args.quiet || args.progress == "quiet" {
        if let Some(digest) = exported.iter().find_map(|r| r.image_digest.as_ref()) {
            use std::io::Write as _;
            writeln!(std::io::stdout().lock(), "{digest}").context("writing the image id")?;
        }
    }
    Ok(())
}

/// The build's record, once it is solved; says what the build asks for of it: the plain
/// progress's summary, why its steps ran (`--explain`), its trace and graph (`--trace`,
/// `--dot`).
pub(super) fn report_build(
    recorder: &Recorder,
    args: &BuildArgs,
    context: Option<&Path>,
    status: BuildStatus,
    progress: Option<&Progress>,
) -> anyhow::Result<kiln_solver::BuildRecord> {
    let name = match (&args.llb, context) {
        (Some(llb), _) => llb.display().to_string(),
        (None, Some(dir)) => {
            let base = dir.file_name().map_or_else(
                || dir.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            match &args.target {
                Some(target) => format!("{base} ({target})"),
                None => base,
            }
        }
        (None, None) => String::new(),
    };
    let build_args = args
        .build_arg
        .iter()
        .map(|a| a.split_once('=').map_or(a.as_str(), |(k, _)| k).to_owned())
        .collect();
    let record = recorder.finish(kiln_solver::new_build_id(), name, status, build_args);
    {
        use std::io::Write as _;
        let mut text = String::new();
        if let Some(Progress::Plain(plain)) = progress {
            // Steps by the numbers the progress gave them, as it shows them just above.
            text.push_str(&summary(&record, |step| {
                plain
                    .number_of(&step.vertex)
                    .map_or_else(|| step.name.clone(), |n| format!("#{n}"))
            }));
        }
        if args.explain {
            text.push_str(&crate::commands::explain::render(&record));
        }
        // Best effort, as the progress: a closed terminal must not fail the build.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    Ok(record)
}

/// Stores the build's record; returns its id (`None` if it could not be stored: a record is
/// not worth failing a build for).
pub(super) fn store_build(store: &Store, record: &kiln_solver::BuildRecord) -> Option<String> {
    let limits = kiln_cache::BuildHistoryLimits::default();
    match store.put_build_record(&record.id, &record.to_json(), limits) {
        Ok(()) => Some(record.id.clone()),
        Err(error) => {
            warn(&format!("could not record the build: {error}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_solver::{BuildStatus, MissReason, PhaseRecord};

    use super::*;

    fn phase(name: &str, started_ms: u64, ended_ms: u64, bytes: Option<u64>) -> PhaseRecord {
        PhaseRecord {
            name: name.into(),
            started_ms,
            ended_ms,
            bytes,
        }
    }

    fn record() -> BuildRecord {
        let step = |vertex: &str, status, times: Option<(u64, u64)>, inputs: &[&str]| StepRecord {
            vertex: vertex.into(),
            name: format!("step \"{vertex}\""),
            status,
            miss: (status != StepStatus::Cached).then_some(MissReason::NoRecord),
            queued_ms: 0,
            started_ms: times.map(|t| t.0),
            completed_ms: times.map(|t| t.1),
            error: None,
            inputs: inputs.iter().map(|i| (*i).to_owned()).collect(),
            phases: times
                .map(|(start, end)| {
                    vec![
                        phase("run", start, end - 100, None),
                        phase("commit", end - 100, end, Some(4096)),
                    ]
                })
                .unwrap_or_default(),
        };
        BuildRecord {
            id: "b1".into(),
            name: "ctx".into(),
            status: BuildStatus::Failed,
            created: 0,
            duration_ms: 4000,
            build_args: Vec::new(),
            steps: vec![
                step("base", StepStatus::Cached, None, &[]),
                step("make", StepStatus::Completed, Some((100, 3100)), &["base"]),
                step("lint", StepStatus::Completed, Some((100, 600)), &["base"]),
                step("test", StepStatus::Failed, Some((3100, 3900)), &["make"]),
            ],
            export_ms: Some(250),
            export_phases: vec![
                phase("compress", 4000, 4150, Some(1000)),
                phase("push", 4150, 4250, None),
            ],
        }
    }

    #[test]
    fn summary_names_the_critical_path_slowest_steps_and_hits() {
        assert_eq!(
            summary(&record(), |step| format!("<{}>", step.vertex)),
            "#summary 4.0s total, 3.8s on the critical path (3 steps), 1/4 steps cached (25%)\n\
             #summary slow: 3.0s <make>\n\
             #summary slow: 0.8s <test>\n\
             #summary slow: 0.5s <lint>\n"
        );
    }

    #[test]
    fn trace_has_a_span_per_step_and_its_phases() {
        let trace = trace(&record());
        let events = trace["traceEvents"].as_array().unwrap();
        let spans = |cat: &str| events.iter().filter(|e| e["cat"] == cat).count();
        assert_eq!(spans("vertex"), 4);
        // The export follows the steps, on its own track.
        let export = events.iter().find(|e| e["cat"] == "export").unwrap();
        assert_eq!(
            (
                &export["name"],
                export["ts"].as_u64(),
                export["dur"].as_u64()
            ),
            (
                &serde_json::json!("exporting"),
                Some(4_000_000),
                Some(250_000)
            )
        );
        // Its phases, inside it.
        let on_export: Vec<_> = events
            .iter()
            .filter(|e| e["cat"] == "phase" && e["tid"] == export["tid"])
            .map(|e| {
                (
                    e["name"].as_str().unwrap(),
                    e["ts"].as_u64().unwrap() / 1000,
                    e["dur"].as_u64().unwrap() / 1000,
                    e["args"]["bytes"].as_u64(),
                )
            })
            .collect();
        assert_eq!(
            on_export,
            [
                ("compress", 4000, 150, Some(1000)),
                ("push", 4150, 100, None)
            ]
        );
        // queued and running of each step that ran, and its op's two phases; the export's.
        assert_eq!(spans("phase"), 14);
        let commit = events
            .iter()
            .find(|e| e["name"] == "commit" && e["ts"] == 3_800_000)
            .unwrap();
        assert_eq!(commit["dur"], 100_000);
        assert_eq!(commit["args"]["bytes"], 4096);
        // Counters: bytes committed so far, processes running (`make` and `lint` at once).
        let counter = |name: &str| -> Vec<(u64, serde_json::Value)> {
            events
                .iter()
                .filter(|e| e["ph"] == "C" && e["name"] == name)
                .map(|e| (e["ts"].as_u64().unwrap(), e["args"].clone()))
                .collect()
        };
        let bytes: Vec<(u64, Option<u64>)> = counter("bytes")
            .iter()
            .map(|(_, args)| (args["commit"].as_u64().unwrap(), args["compress"].as_u64()))
            .collect();
        assert_eq!(
            bytes,
            [
                (4096, None),
                (8192, None),
                (12288, None),
                (12288, Some(1000))
            ]
        );
        let processes: Vec<(u64, i64)> = counter("processes")
            .into_iter()
            .map(|(ts, args)| (ts / 1000, args["processes"].as_i64().unwrap()))
            .collect();
        assert_eq!(
            processes,
            [
                (100, 1),
                (100, 2),
                (500, 1),
                (3000, 0),
                (3100, 1),
                (3800, 0)
            ]
        );
        let make = events
            .iter()
            .find(|e| e["cat"] == "vertex" && e["args"]["vertex"] == "make")
            .unwrap();
        assert_eq!(
            (make["ts"].as_u64(), make["dur"].as_u64()),
            (Some(0), Some(3_100_000))
        );
    }

    #[test]
    fn dot_colours_steps_by_status_and_links_inputs() {
        let dot = dot(&record());
        assert!(dot.starts_with("digraph build {\n"), "{dot}");
        assert!(
            dot.contains("  \"base\" [label=\"step \\\"base\\\"\" fillcolor=\"lightgrey\"];\n"),
            "{dot}"
        );
        assert!(dot.contains("fillcolor=\"salmon\""), "{dot}");
        assert!(dot.contains("  \"make\" -> \"test\";\n"), "{dot}");
        assert_eq!(dot.matches(" -> ").count(), 3);
    }
}
