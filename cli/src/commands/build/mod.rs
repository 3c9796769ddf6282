//! `kiln build`: solves a build graph in-process and exports the result.
//!
//! # Overview
//! 1. Read the flags ([`flags`]): refuse the ones that do not go together, answer
//!    `--call=targets`, read the outputs, locals, secrets and SSH agents.
//! 2. Open the store and take a lease on it; start opening the `--cache-from` caches
//!    ([`caches`]); read the Dockerfile.
//! 3. Convert the Dockerfile with its frontend ([`convert`]), or load the `--llb` Definition;
//!    `--call=check` stops after the conversion, `--print-llb` prints its Definition.
//! 4. Solve the Definition in a session over the store, its progress shown.
//! 5. Export the result and the cache, then record the build and report it ([`report`]).
//!
//! A build of several platforms ([`platforms`]) converts each platform, solves them together
//! and exports one index. `kiln --host ADDR build` ([`remote`]) hands the same flags to a
//! daemon instead.

mod attest;
mod caches;
mod check;
mod convert;
mod dockerfile;
mod exec;
mod flags;
mod gateway;
mod metadata;
mod platforms;
pub(crate) mod remote;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use kiln_cache::{BuildKeys, CacheExportRequest, CacheImportRequest, PullOptions, Store};
use kiln_llb::LoadedDefinition;
use kiln_solver::{BuildRecord, BuildStatus, Recorder, Session, SessionConfig};

use crate::args::BuildArgs;
use crate::config::Config;
use crate::progress::Progress;
use caches::CacheImports;
use flags::Inputs;
use report::{finish, note_export, report_build, store_build, write_reports};

/// Applies the garbage collection policies of `[gc]` (BuildKit's defaults without any).
fn collect_garbage(store: &Store, gc: &kiln_cache::GcConfig) -> anyhow::Result<()> {
    let reports = store
        .apply_gc_config(gc)
        .context("collecting garbage after the build")?;
    let freed: u64 = reports.iter().map(|r| r.gc.freed).sum();
    tracing::info!(
        policies = reports.len(),
        freed,
        "applied the garbage collection policies"
    );
    Ok(())
}

/// Passes the build's events on to its progress, once that is shown (the build's record
/// starts before).
#[derive(Default)]
struct Forward(std::sync::OnceLock<Arc<dyn kiln_solver::Reporter>>);

impl kiln_solver::Reporter for Forward {
    fn event(&self, event: kiln_solver::Event) {
        if let Some(next) = self.0.get() {
            next.event(event);
        }
    }
}

/// What the build's record needs from the build, and whether it was stored.
struct Noted {
    forward: Arc<Forward>,
    recorder: Arc<Recorder>,
    /// The store, once the build opened it.
    store: Option<Arc<Store>>,
    /// Whether the record was stored.
    stored: bool,
}

impl Noted {
    /// Shows the build's events on `progress` from now on.
    fn show_on(&self, progress: &Progress) {
        let _ = self.forward.0.set(progress.reporter());
    }
}

pub(crate) fn run(root: &Path, config: &Config, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let forward = Arc::new(Forward::default());
    let mut noted = Noted {
        recorder: Arc::new(Recorder::new(forward.clone())),
        forward,
        store: None,
        stored: false,
    };
    let result = build(root, config, args, &mut noted);
    // A build that failed before its steps were solved (its Dockerfile, its frontend) is
    // recorded too, as buildx's history keeps it; one refused before it opened the store
    // (its flags) is not.
    if let (Err(_), false, Some(store)) = (&result, noted.stored, &noted.store) {
        let context = args
            .context
            .as_deref()
            .and_then(|c| fs_err::canonicalize(c).ok());
        if let Ok(record) = report_build(
            &noted.recorder,
            args,
            context.as_deref(),
            BuildStatus::Failed,
            None,
        ) {
            // Best effort: the build's own error is the one to report.
            let _ = write_reports(args, &record);
            store_build(store, &record);
        }
    }
    result
}

fn build(
    root: &Path,
    config: &Config,
    args: &BuildArgs,
    noted: &mut Noted,
) -> anyhow::Result<ExitCode> {
    let call = flags::call(args)?;
    if call == check::Call::Targets {
        return check::list_targets(args);
    }
    let inputs = Inputs::read(args)?;
    let store = Arc::new(
        Store::open(root)
            .with_context(|| format!("opening the store at {}", root.display()))?
            .with_unpack_limits(config.cache.unpack),
    );
    noted.store = Some(store.clone());
    // Everything the build reads and writes is held until its outputs are exported: a
    // `kiln prune` meanwhile removes none of it, and a killed build's lease is void.
    let lease = store.lease().context("taking a lease on the store")?;
    let (mut build, mut imports) = Build::start(args, config, store, inputs)?;
    if call == check::Call::Check {
        return convert::check(&build);
    }
    build.serve_dockerfile_dir()?;
    let platforms = dockerfile::platforms(args)?;
    if platforms.len() > 1 {
        return platforms::build(&build, &platforms, imports, noted, lease);
    }
    let Some(mut converted) = convert::single(&build, &mut imports, noted)? else {
        // `--print-llb` printed the Definition.
        return Ok(ExitCode::SUCCESS);
    };
    let session = match converted.session.take() {
        Some(session) => session,
        None => build.session(&mut imports)?,
    };
    let progress = match converted.progress.take() {
        Some(progress) => progress,
        None => show_progress(args, noted)?,
    };
    let solved = build.solve(converted.definition.as_ref(), &session, &noted.recorder);
    progress.finish();
    convert::show_warnings(args, &converted.warnings);
    let context = build.inputs.context.as_deref();
    let status = status(&solved);
    let record = report_build(&noted.recorder, args, context, status, Some(&progress))?;
    build.end(record, noted, lease, |record| {
        build.export(solved, converted, record)
    })
}

/// What the steps of a build share once its store is open.
struct Build<'a> {
    args: &'a BuildArgs,
    config: &'a Config,
    inputs: Inputs,
    store: Arc<Store>,
    /// Base images are pulled lazily: their layers are downloaded only when a step runs on
    /// them or an output reads them.
    pull: PullOptions,
    runtime: tokio::runtime::Runtime,
    cache_to: Vec<CacheExportRequest>,
    /// The Dockerfile (none for an LLB Definition).
    source: Option<dockerfile::Source>,
    /// Where a Dockerfile from standard input is written for a frontend image to read.
    _stdin_dir: Option<tempfile::TempDir>,
}

/// A solved build: its result, and its cache keys when it exports a cache.
type Solved = anyhow::Result<(kiln_solver::Ref, Option<BuildKeys>)>;

impl<'a> Build<'a> {
    /// Starts the build over `store`: its runtime, the `--cache-from` caches it starts
    /// opening (read while the Dockerfile is converted, which resolves its base images), and
    /// its Dockerfile.
    fn start(
        args: &'a BuildArgs,
        config: &'a Config,
        store: Arc<Store>,
        inputs: Inputs,
    ) -> anyhow::Result<(Self, CacheImports)> {
        let pull = PullOptions {
            config: config.cache.clone(),
            prefer_local: !args.pull,
            lazy: true,
            ..PullOptions::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let cache_to = CacheExportRequest::parse_all(&args.cache_to).context("--cache-to")?;
        let cache_from = CacheImportRequest::parse_all(&args.cache_from).context("--cache-from")?;
        let imports = CacheImports::open(&cache_from, &pull, &runtime);
        let source = match &inputs.context {
            Some(dir) => Some(dockerfile::read_dockerfile(args, dir)?),
            None => None,
        };
        let build = Self {
            args,
            config,
            inputs,
            store,
            pull,
            runtime,
            cache_to,
            source,
            _stdin_dir: None,
        };
        Ok((build, imports))
    }

    /// The context and Dockerfile of a Dockerfile build.
    fn dockerfile(&self) -> Option<(&Path, &dockerfile::Source)> {
        self.inputs.context.as_deref().zip(self.source.as_ref())
    }

    /// Serves the Dockerfile's directory as the local `dockerfile`; a Dockerfile from standard
    /// input is written where a frontend image can read it.
    fn serve_dockerfile_dir(&mut self) -> anyhow::Result<()> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        let dir = if source.path == Path::new("-") {
            let dir = gateway::stdin_dockerfile(&source.bytes)?;
            let path = dir.path().to_owned();
            self._stdin_dir = Some(dir);
            path
        } else {
            let parent = source.path.parent().filter(|p| !p.as_os_str().is_empty());
            fs_err::canonicalize(parent.unwrap_or(Path::new(".")))
                .context("opening the Dockerfile's directory")?
        };
        self.inputs.locals.insert("dockerfile".to_owned(), dir);
        Ok(())
    }

    /// A solver session over the store with the build's locals, secrets, SSH agents and the
    /// `--cache-from` caches that could be read.
    fn session(&self, imports: &mut CacheImports) -> anyhow::Result<Arc<Session>> {
        let inputs = &self.inputs;
        Ok(Arc::new(Session::new(
            SessionConfig {
                store: self.store.clone(),
                executor: kiln_engine::executor(PathBuf::from(kiln_engine::RUNNER_STATE)),
                pull: self.pull.clone(),
                locals: inputs.locals.clone(),
                local_dirs: None,
                secrets: inputs.secrets.clone(),
                ssh: inputs.ssh.clone(),
                no_cache: self.args.no_cache,
                entitlements: inputs.entitlements,
                cache_imports: imports.get(&self.runtime)?,
            },
            None,
        )))
    }

    /// Solves `definition` (none: `scratch`, the empty file system), with its cache keys when
    /// a `--cache-to` will export them.
    async fn solve_one(
        &self,
        definition: Option<&LoadedDefinition>,
        session: Arc<Session>,
        recorder: Arc<Recorder>,
    ) -> Solved {
        Ok(match definition {
            Some(definition) if !self.cache_to.is_empty() => {
                session.solve_keyed(definition, recorder).await?
            }
            Some(definition) => (session.solve(definition, recorder).await?, None),
            None => (kiln_solver::Ref::scratch(), None),
        })
    }

    fn solve(
        &self,
        definition: Option<&LoadedDefinition>,
        session: &Arc<Session>,
        recorder: &Arc<Recorder>,
    ) -> Solved {
        self.runtime
            .block_on(self.solve_one(definition, session.clone(), recorder.clone()))
    }

    /// Makes the bytes of lazily pulled layers the outputs read (or the SBOM scans) local.
    fn realize(&self, results: &[&kiln_solver::Ref]) -> anyhow::Result<()> {
        Ok(self.runtime.block_on(kiln_engine::realize_results(
            &self.store,
            results,
            &self.inputs.outputs,
            self.inputs.attest.sbom,
            &self.pull,
        ))?)
    }

    /// The attestations the build asked for, with what its provenance says of the request
    /// (`frontend`: the frontend's facts of a Dockerfile build).
    fn attestations(
        &self,
        frontend: Option<attest::FrontendFacts>,
        record: &BuildRecord,
    ) -> kiln_exporters::Attestations {
        let inputs = &self.inputs;
        let facts = attest::request_facts(
            frontend,
            self.source.as_ref(),
            &inputs.locals,
            &inputs.secrets,
            &inputs.ssh,
        );
        kiln_engine::attestations(&inputs.attest, facts, record)
    }

    /// Exports the `solved` result of the single-platform build `converted`, then its cache.
    fn export(
        &self,
        solved: Solved,
        converted: convert::Converted,
        record: &BuildRecord,
    ) -> anyhow::Result<Vec<kiln_exporters::ExportResponse>> {
        let (result, keys) = solved.context("failed to solve")?;
        self.realize(&[&result])?;
        let inline = keys
            .as_ref()
            .filter(|_| self.cache_to.iter().any(kiln_engine::is_inline));
        let exported = kiln_engine::export(
            &self.store,
            &result,
            &self.inputs.outputs,
            converted.image_config.as_ref(),
            &self.pull,
            inline,
            self.attestations(converted.frontend, record),
            converted
                .definition
                .as_ref()
                .map(LoadedDefinition::definition),
        )?;
        self.export_caches(keys.as_ref())?;
        Ok(exported)
    }

    /// Exports what `export` makes of the build, notes the export in the build's `record`,
    /// and ends the build (`report::finish`).
    fn end(
        &self,
        mut record: BuildRecord,
        noted: &mut Noted,
        lease: kiln_cache::Lease,
        export: impl FnOnce(&BuildRecord) -> anyhow::Result<Vec<kiln_exporters::ExportResponse>>,
    ) -> anyhow::Result<ExitCode> {
        let started = Instant::now();
        let exported = export(&record);
        note_export(
            &mut record,
            &noted.recorder,
            started,
            self.exports(),
            &exported,
        );
        finish(
            &self.store,
            self.config,
            self.args,
            record,
            noted,
            lease,
            exported,
        )
    }

    fn export_caches(&self, keys: Option<&BuildKeys>) -> anyhow::Result<()> {
        caches::export(&self.store, keys, &self.cache_to, &self.pull, &self.runtime)
    }

    /// Whether the build exports anything (an output or a cache).
    fn exports(&self) -> bool {
        !self.inputs.outputs.is_empty() || !self.cache_to.is_empty()
    }
}

/// The build's status in its record.
fn status<T>(solved: &anyhow::Result<T>) -> BuildStatus {
    match solved {
        Ok(_) => BuildStatus::Completed,
        Err(_) => BuildStatus::Failed,
    }
}

/// The build's progress, shown from now on with the build's events.
fn show_progress(args: &BuildArgs, noted: &Noted) -> anyhow::Result<Progress> {
    let progress = Progress::stderr(progress_flag(args)?)?;
    noted.show_on(&progress);
    Ok(progress)
}

/// The `--progress` of a build, `quiet` under `-q` (which only `auto` and `quiet` go with, as
/// buildx says).
fn progress_flag(args: &BuildArgs) -> anyhow::Result<&str> {
    if !args.quiet {
        return Ok(&args.progress);
    }
    match args.progress.as_str() {
        "auto" | "quiet" => Ok("quiet"),
        other => bail!("progress={other} and quiet cannot be used together"),
    }
}

/// Prints a warning the build goes on after, as buildx does.
fn warn(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "WARNING: {message}");
}

/// `kiln build ARGV` as the command line parses it, for tests.
#[cfg(test)]
pub(crate) fn parse_build_args(argv: &[&str]) -> BuildArgs {
    use clap::Parser as _;
    let mut full = vec!["kiln", "build"];
    full.extend_from_slice(argv);
    match crate::args::Cli::parse_from(full).command {
        crate::args::Command::Build(b) => *b,
        _ => unreachable!("`kiln build` parses as the build command"),
    }
}
