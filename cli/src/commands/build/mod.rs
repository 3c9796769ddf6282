//! `kiln build`: solves a build graph in-process and exports the result.

mod attest;
mod check;
mod dockerfile;
mod exec;
mod gateway;
mod metadata;
pub(crate) mod remote;
mod report;

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use kiln_cache::{CacheExportRequest, CacheImportRequest, PullOptions, Store};
use kiln_llb::LoadedDefinition;
use kiln_solver::{BuildStatus, Recorder, Session, SessionConfig};

use crate::args::BuildArgs;
use crate::config::Config;
use crate::progress::Progress;
use report::{finish, note_export, report_build, store_build, write_reports};

/// Parses `NAME=VALUE`.
fn pair<'a>(flag: &str, text: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .with_context(|| format!("invalid {flag} {text:?}: expected NAME=VALUE"))
}

/// Parses `id=ID,src=PATH` or `id=ID,env=VAR` into the secret's bytes.
fn parse_secret(text: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let mut id = None;
    let mut data = None;
    for part in text.split(',') {
        let (k, v) = pair("--secret", part)?;
        match k {
            "id" => id = Some(v.to_owned()),
            "src" | "source" => {
                data = Some(fs_err::read(v).with_context(|| format!("reading secret {v}"))?);
            }
            "env" => {
                data = Some(
                    std::env::var(v)
                        .with_context(|| format!("secret environment variable {v} is not set"))?
                        .into_bytes(),
                );
            }
            "type" => {}
            _ => bail!("unexpected key {k:?} in --secret {text:?}"),
        }
    }
    let id = id.with_context(|| format!("--secret {text:?} has no id=..."))?;
    let data = match data {
        Some(d) => d,
        None => std::env::var(&id)
            .map(String::into_bytes)
            .with_context(|| format!("--secret {text:?} has no src=... or env=..."))?,
    };
    Ok((id, data))
}

/// Parses `--ssh default|ID[=SOCKET|KEY[,KEY...]]` (docker buildx's form) into the id and the
/// agent socket; without a path, the agent is `$SSH_AUTH_SOCK`. Key files would need an agent
/// run by kiln itself, which it does not have: they are refused with a hint.
fn parse_ssh(text: &str) -> anyhow::Result<(String, PathBuf)> {
    let (id, paths) = match text.split_once('=') {
        Some((id, paths)) => (id, paths),
        None => (text, ""),
    };
    if id.is_empty() {
        bail!("invalid --ssh {text:?}: expected default|ID[=SOCKET]");
    }
    let paths: Vec<&str> = paths.split(',').filter(|p| !p.is_empty()).collect();
    let socket = match paths.as_slice() {
        [] => std::env::var_os("SSH_AUTH_SOCK")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .with_context(|| {
                format!(
                    "--ssh {text:?}: invalid empty ssh agent socket, make sure SSH_AUTH_SOCK is set"
                )
            })?,
        [one] => PathBuf::from(one),
        _ => bail!(
            "--ssh {text:?}: SSH key files are not supported (kiln cannot run an SSH agent in-process); \
             hint: load the keys with `ssh-add` into an ssh-agent and pass --ssh {id}=$SSH_AUTH_SOCK"
        ),
    };
    use std::os::unix::fs::FileTypeExt as _;
    let meta = fs_err::metadata(&socket).with_context(|| format!("--ssh {text:?}"))?;
    if !meta.file_type().is_socket() {
        bail!(
            "--ssh {text:?}: {} is not an agent socket; SSH key files are not supported (kiln cannot run an SSH agent in-process); \
             hint: load the key with `ssh-add` into an ssh-agent and pass --ssh {id}=$SSH_AUTH_SOCK",
            socket.display()
        );
    }
    Ok((id.to_owned(), socket))
}

fn read_definition(path: &Path) -> anyhow::Result<LoadedDefinition> {
    let bytes = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Definition from standard input")?;
        buf
    } else {
        fs_err::read(path)?
    };
    LoadedDefinition::from_bytes(&bytes)
        .with_context(|| format!("loading the LLB Definition {}", path.display()))
}

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

/// `--allow` values, as buildx names them.
fn parse_entitlements(values: &[String]) -> anyhow::Result<kiln_solver::Entitlements> {
    let mut entitlements = kiln_solver::Entitlements::default();
    for value in values {
        match value.as_str() {
            "network.host" => entitlements.network_host = true,
            "security.insecure" => entitlements.security_insecure = true,
            other => anyhow::bail!("invalid entitlement: {other}"),
        }
    }
    Ok(entitlements)
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
    if args.llb.is_some() && (!args.ulimit.is_empty() || args.cgroup_parent.is_some()) {
        bail!(
            "--ulimit and --cgroup-parent apply to the RUN steps of a Dockerfile; \
             an LLB Definition sets its own in each exec op (Meta.ulimit, Meta.cgroupParent)"
        );
    }
    if args.llb.is_some() {
        let given: Vec<&str> = [
            ("--label", !args.label.is_empty()),
            ("--add-host", !args.add_host.is_empty()),
            ("--network", args.network != "default"),
            ("--shm-size", args.shm_size.is_some()),
            ("--no-cache-filter", !args.no_cache_filter.is_empty()),
            ("--build-context", !args.build_context.is_empty()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if !given.is_empty() {
            bail!(
                "{} apply to a Dockerfile build; an LLB Definition sets its own in its ops",
                given.join(", ")
            );
        }
    }
    let call = check::Call::from_args(args)?;
    if call != check::Call::Build && args.llb.is_some() {
        bail!(
            "--call={} reads a Dockerfile; an LLB Definition has no build checks or targets",
            if args.check { "check" } else { &args.call }
        );
    }
    if call == check::Call::Targets {
        let dir = dockerfile::context_dir(args)?;
        let source = dockerfile::read_dockerfile(args, &dir)?;
        let options = dockerfile::options(args, &source, &dir)?;
        return check::targets(&source.bytes, &options.file_name);
    }
    if args.no_cache && !args.no_cache_filter.is_empty() {
        bail!("--no-cache and --no-cache-filter cannot currently be used together");
    }
    let outputs = kiln_exporters::outputs_from_args(&args.output, &args.tag, args.push)?;
    let attest = attest::requested(args, attest::pushes(&outputs))?;
    let mut locals = HashMap::new();
    let context = match &args.llb {
        Some(_) => None,
        None => Some(dockerfile::context_dir(args)?),
    };
    if let Some(dir) = &context {
        locals.insert("context".to_owned(), dir.clone());
        for named in dockerfile::named_contexts(args)?.1 {
            locals.insert(named.name, named.dir);
        }
    }
    for local in &args.local {
        let (name, dir) = pair("--local", local)?;
        let dir = fs_err::canonicalize(dir).with_context(|| format!("local source {name}"))?;
        locals.insert(name.to_owned(), dir);
    }
    let secrets = args
        .secret
        .iter()
        .map(|s| parse_secret(s))
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    let ssh = args
        .ssh
        .iter()
        .map(|s| parse_ssh(s))
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    let entitlements = parse_entitlements(&args.allow)?;
    let store = Arc::new(
        Store::open(root)
            .with_context(|| format!("opening the store at {}", root.display()))?
            .with_unpack_limits(config.cache.unpack),
    );
    noted.store = Some(store.clone());
    // Everything the build reads and writes is held until its outputs are exported: a
    // `kiln prune` meanwhile removes none of it, and a killed build's lease is void.
    let lease = store.lease().context("taking a lease on the store")?;
    // Base images are pulled lazily: their layers are downloaded only when a step runs on
    // them or an output reads them.
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
    // The caches are read while the Dockerfile is converted (which resolves its base images).
    let mut imports = CacheImports::Opening(Some({
        let (requests, pull) = (cache_from.clone(), pull.clone());
        runtime.spawn(async move { kiln_engine::open_cache_imports(&requests, &pull).await })
    }));
    let source = match &context {
        Some(dir) => Some(dockerfile::read_dockerfile(args, dir)?),
        None => None,
    };
    if call == check::Call::Check {
        let (Some(dir), Some(source)) = (&context, &source) else {
            unreachable!("a Dockerfile build has a context and a Dockerfile");
        };
        let mut options = dockerfile::options(args, source, dir)?;
        // As BuildKit's lint request: without a target, every stage is checked.
        options.all_stages = args.target.is_none();
        return match dockerfile::convert(source, &options, store.clone(), &pull, &runtime) {
            Ok(converted) => check::report(&converted.warnings, &source.bytes, None),
            Err(error) => match error.downcast_ref::<kiln_frontend::ConvertError>() {
                Some(kiln_frontend::ConvertError::Lint { rules, warnings }) => {
                    check::report(warnings, &source.bytes, Some(rules.as_slice()))
                }
                // The warnings found before the conversion failed, then the error.
                Some(kiln_frontend::ConvertError::Checked { warnings, .. }) => {
                    check::print_summary(warnings);
                    Err(error)
                }
                _ => Err(error),
            },
        };
    }
    // A Dockerfile from standard input is written where a frontend image can read it.
    let mut _stdin_dir = None;
    if let Some(source) = &source {
        let dir = if source.path == Path::new("-") {
            let dir = gateway::stdin_dockerfile(&source.bytes)?;
            let path = dir.path().to_owned();
            _stdin_dir = Some(dir);
            path
        } else {
            let parent = source.path.parent().filter(|p| !p.as_os_str().is_empty());
            fs_err::canonicalize(parent.unwrap_or(Path::new(".")))
                .context("opening the Dockerfile's directory")?
        };
        locals.insert("dockerfile".to_owned(), dir);
    }
    let new_session = |cache_imports| {
        Arc::new(Session::new(
            SessionConfig {
                store: store.clone(),
                executor: kiln_engine::executor(PathBuf::from(kiln_engine::RUNNER_STATE)),
                pull: pull.clone(),
                locals: locals.clone(),
                local_dirs: None,
                secrets: secrets.clone(),
                ssh: ssh.clone(),
                no_cache: args.no_cache,
                entitlements,
                cache_imports,
            },
            None,
        ))
    };
    let platforms = dockerfile::platforms(args)?;
    if platforms.len() > 1 {
        let (Some(dir), Some(source)) = (&context, &source) else {
            bail!(
                "--platform with several platforms builds a Dockerfile; an LLB Definition \
                 names the platform of each op"
            );
        };
        if args.print_llb {
            bail!("--print-llb prints one Definition: give one --platform");
        }
        let options = dockerfile::options(args, source, dir)?;
        let choice = gateway::choose(args, &options.build_args, &source.bytes)?;
        let frontend = attest::frontend_facts(args, &options, &choice);
        // A frontend image solves through the build's session, with its progress shown: both
        // are made before it runs (the built-in frontend converts first, then they are made).
        let mut shared: Option<(Arc<Session>, Progress)> = None;
        let mut definitions = Vec::with_capacity(platforms.len());
        let mut warnings = Vec::new();
        for platform in &platforms {
            let options = kiln_frontend::ConvertOptions {
                platform: platform.to_pb(),
                multi_platform: true,
                ..options.clone()
            };
            let builtin = || {
                dockerfile::convert(source, &options, store.clone(), &pull, &runtime)
                    .inspect_err(|error| lint_failed(args, error))
            };
            // A frontend image or command is asked for one platform at a time, as the
            // built-in frontend converts one; the graphs are then solved together.
            let ran = frontend_conversion(args, &choice, &options, dir, builtin, |syntax| {
                if shared.is_none() {
                    let session = new_session(imports.get(&runtime)?);
                    let progress = Progress::stderr(progress_flag(args)?)?;
                    noted.show_on(&progress);
                    shared = Some((session, progress));
                }
                let Some((session, _)) = &shared else {
                    unreachable!("made above");
                };
                Ok(gateway::run(
                    syntax,
                    &options,
                    gateway::extra_options(args)?,
                    args.no_cache,
                    session.clone(),
                    noted.recorder.clone(),
                    &runtime,
                ))
            })?;
            let mut converted = match ran {
                Ok(converted) => converted,
                Err(error) => {
                    if let Some((_, progress)) = &shared {
                        progress.finish();
                    }
                    return Err(error).context("failed to solve");
                }
            };
            for warning in std::mem::take(&mut converted.warnings) {
                if !warnings.contains(&warning) {
                    warnings.push(warning);
                }
            }
            let loaded = load_converted(converted.definition)?;
            definitions.push((platform.clone(), loaded, converted.config));
        }
        let (session, progress) = match shared {
            Some(shared) => shared,
            None => {
                let session = new_session(imports.get(&runtime)?);
                let progress = Progress::stderr(progress_flag(args)?)?;
                noted.show_on(&progress);
                (session, progress)
            }
        };
        let recorder = noted.recorder.clone();
        // One session solves every platform at once: a vertex the platforms share (the
        // context, a `FROM --platform=$BUILDPLATFORM` stage) runs once.
        let keyed = !cache_to.is_empty();
        let solves = definitions.iter().map(|(_, definition, _)| {
            let (session, reporter) = (session.clone(), recorder.clone());
            async move {
                match definition {
                    Some(definition) if keyed => session.solve_keyed(definition, reporter).await,
                    Some(definition) => session
                        .solve(definition, reporter)
                        .await
                        .map(|result| (result, None)),
                    None => Ok((kiln_solver::Ref::scratch(), None)),
                }
            }
        });
        let solved = runtime.block_on(futures::future::try_join_all(solves));
        progress.finish();
        show_warnings(args, &warnings);
        let status = match solved {
            Ok(_) => BuildStatus::Completed,
            Err(_) => BuildStatus::Failed,
        };
        let mut record = report_build(&recorder, args, Some(dir), status, Some(&progress))?;
        let export_started = Instant::now();
        let exported = (|| {
            let solved = solved.context("failed to solve")?;
            // One cache for every platform: their keys merged, shared vertices once.
            let mut keys: Option<kiln_cache::BuildKeys> = None;
            let mut results = Vec::with_capacity(solved.len());
            let mut definitions_llb = Vec::with_capacity(solved.len());
            // An inline cache: each platform's image carries its own platform's keys.
            let inline = cache_to.iter().any(kiln_engine::is_inline);
            let mut inline_keys = Vec::with_capacity(solved.len());
            for ((platform, definition, config), (result, platform_keys)) in
                definitions.into_iter().zip(solved)
            {
                definitions_llb.push(definition);
                inline_keys.push(platform_keys.clone().filter(|_| inline));
                match (&mut keys, platform_keys) {
                    (Some(keys), Some(more)) => keys.merge(more),
                    (keys @ None, more) => *keys = more,
                    (Some(_), None) => {}
                }
                results.push((platform, result, Some(config)));
            }
            let refs: Vec<&kiln_solver::Ref> = results.iter().map(|(_, r, _)| r).collect();
            runtime.block_on(kiln_engine::realize_results(
                &store,
                &refs,
                &outputs,
                attest.sbom,
                &pull,
            ))?;
            let attestations = kiln_engine::attestations(
                &attest,
                attest::request_facts(Some(frontend), Some(source), &locals, &secrets, &ssh),
                &record,
            );
            let llb: Vec<_> = definitions_llb
                .iter()
                .map(|d| d.as_ref().map(|d| d.definition()))
                .collect();
            let inline_keys: Vec<_> = inline_keys.iter().map(Option::as_ref).collect();
            let exported = kiln_engine::export_platforms_inline(
                &store,
                &results,
                &outputs,
                &pull,
                attestations,
                &llb,
                &inline_keys,
            )?;
            export_caches(&store, keys.as_ref(), &cache_to, &pull, &runtime)?;
            anyhow::Ok(exported)
        })();
        let exports = !outputs.is_empty() || !cache_to.is_empty();
        note_export(&mut record, &recorder, export_started, exports, &exported);
        return finish(&store, config, args, record, noted, lease, exported);
    }
    let mut session = None;
    let mut progress = None;
    // What the build checks found, shown once the build's progress is done.
    let mut warnings = Vec::new();
    // Notes the build's events for its record (`kiln history`, `kiln explain`).
    let recorder = noted.recorder.clone();
    // The image configuration of a Dockerfile build, for the exporters.
    // What the provenance says of the frontend: its name, attributes and Dockerfile.
    let mut frontend = None;
    let (definition, image_config) = match (&args.llb, &context, &source) {
        (Some(llb), _, _) => (Some(read_definition(llb)?), None),
        (None, Some(dir), Some(source)) => {
            let options = dockerfile::options(args, source, dir)?;
            let choice = gateway::choose(args, &options.build_args, &source.bytes)?;
            frontend = Some(attest::frontend_facts(args, &options, &choice));
            let builtin = || {
                dockerfile::convert(source, &options, store.clone(), &pull, &runtime)
                    .inspect_err(|error| lint_failed(args, error))
            };
            let ran = frontend_conversion(args, &choice, &options, dir, builtin, |syntax| {
                // The frontend image solves through the build's own session.
                let shared = new_session(imports.get(&runtime)?);
                let shown = Progress::stderr(progress_flag(args)?)?;
                noted.show_on(&shown);
                let ran = gateway::run(
                    syntax,
                    &options,
                    gateway::extra_options(args)?,
                    args.no_cache,
                    shared.clone(),
                    recorder.clone(),
                    &runtime,
                );
                session = Some(shared);
                progress = Some(shown);
                Ok(ran)
            })?;
            let mut converted = match ran {
                Ok(converted) => converted,
                Err(error) => {
                    if let Some(progress) = progress.take() {
                        progress.finish();
                    }
                    return Err(error).context("failed to solve");
                }
            };
            if args.print_llb {
                use std::io::Write as _;
                // Run as another build's `--frontend-exec`: the image config goes where it
                // asks for it.
                if let Some(path) = std::env::var_os(exec::CONFIG_VAR).filter(|p| !p.is_empty()) {
                    let config = serde_json::to_vec(&converted.config)
                        .context("writing the image config")?;
                    fs_err::write(&path, config)?;
                }
                let bytes = kiln_llb::prost::Message::encode_to_vec(&converted.definition);
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&bytes).context("writing the Definition")?;
                stdout.flush().context("writing the Definition")?;
                return Ok(ExitCode::SUCCESS);
            }
            warnings = std::mem::take(&mut converted.warnings);
            (
                load_converted(converted.definition)?,
                Some(converted.config),
            )
        }
        _ => unreachable!("a Dockerfile build has a context and a Dockerfile"),
    };
    let session = match session {
        Some(session) => session,
        None => new_session(imports.get(&runtime)?),
    };
    let progress = match progress {
        Some(progress) => progress,
        None => Progress::stderr(progress_flag(args)?)?,
    };
    noted.show_on(&progress);
    let solved = match &definition {
        Some(definition) if !cache_to.is_empty() => {
            runtime.block_on(session.solve_keyed(definition, recorder.clone()))
        }
        Some(definition) => runtime
            .block_on(session.solve(definition, recorder.clone()))
            .map(|result| (result, None)),
        None => Ok((kiln_solver::Ref::scratch(), None)),
    };
    progress.finish();
    show_warnings(args, &warnings);
    let status = match solved {
        Ok(_) => BuildStatus::Completed,
        Err(_) => BuildStatus::Failed,
    };
    let mut record = report_build(&recorder, args, context.as_deref(), status, Some(&progress))?;
    let export_started = Instant::now();
    let exported = (|| {
        let (result, keys) = solved.context("failed to solve")?;
        runtime.block_on(kiln_engine::realize_results(
            &store,
            &[&result],
            &outputs,
            attest.sbom,
            &pull,
        ))?;
        let inline = keys
            .as_ref()
            .filter(|_| cache_to.iter().any(kiln_engine::is_inline));
        let exported = kiln_engine::export(
            &store,
            &result,
            &outputs,
            image_config.as_ref(),
            &pull,
            inline,
            kiln_engine::attestations(
                &attest,
                attest::request_facts(frontend, source.as_ref(), &locals, &secrets, &ssh),
                &record,
            ),
            definition.as_ref().map(LoadedDefinition::definition),
        )?;
        export_caches(&store, keys.as_ref(), &cache_to, &pull, &runtime)?;
        Ok(exported)
    })();
    let exports = !outputs.is_empty() || !cache_to.is_empty();
    note_export(&mut record, &recorder, export_started, exports, &exported);
    finish(&store, config, args, record, noted, lease, exported)
}

/// What the frontend `choice` names makes of `options`: the built-in frontend's conversion
/// (`builtin`), a `--frontend-exec` command's output, or what a frontend image returns when
/// `run_image` runs it. The stock Dockerfile frontend that cannot be had gives way to the
/// built-in one, with a warning. A frontend image's own failure comes back as `Ok(Err(..))`,
/// for the caller to end the progress it shows before reporting it.
fn frontend_conversion(
    args: &BuildArgs,
    choice: &gateway::Choice,
    options: &kiln_frontend::ConvertOptions,
    dir: &Path,
    builtin: impl Fn() -> anyhow::Result<kiln_frontend::Converted>,
    run_image: impl FnOnce(
        &kiln_daemon::Syntax,
    ) -> anyhow::Result<
        Result<kiln_frontend::Converted, kiln_daemon::FrontendError>,
    >,
) -> anyhow::Result<Result<kiln_frontend::Converted, kiln_daemon::FrontendError>> {
    let converted = match choice {
        gateway::Choice::Builtin => builtin()?,
        gateway::Choice::Exec(command) => {
            let mut attrs = kiln_daemon::frontend_attrs(options, args.no_cache);
            attrs.extend(gateway::extra_options(args)?);
            exec::run(command, &attrs, dir)?
        }
        gateway::Choice::Image(syntax) => match run_image(syntax)? {
            Ok(converted) => converted,
            Err(error) if error.is_unavailable() && syntax.is_stock_dockerfile() => {
                warn(&format!(
                    "{:#}; using kiln's built-in Dockerfile frontend instead",
                    anyhow::Error::from(error)
                ));
                builtin()?
            }
            Err(error) => return Ok(Err(error)),
        },
    };
    Ok(Ok(converted))
}

/// Writes the build's cache keys to each `--cache-to` but inline ones (those go into the
/// image config); a failing export fails the build unless the request says `ignore-error`.
fn export_caches(
    store: &Arc<Store>,
    keys: Option<&kiln_cache::BuildKeys>,
    cache_to: &[CacheExportRequest],
    pull: &PullOptions,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let Some(keys) = keys else {
        return Ok(());
    };
    for request in cache_to.iter().filter(|r| !kiln_engine::is_inline(r)) {
        match runtime.block_on(kiln_engine::export_cache(store, keys, request, pull)) {
            Ok(()) => {}
            Err(error) if request.ignore_error => {
                warn(&format!("{:#}", anyhow::Error::from(error)));
            }
            Err(error) => return Err(error).context("failed to export the build cache"),
        }
    }
    Ok(())
}

/// The Definition a frontend made, loaded; a build of `scratch` alone has no ops, and its
/// result is the empty file system (`None`).
fn load_converted(
    definition: kiln_llb::pb::Definition,
) -> anyhow::Result<Option<LoadedDefinition>> {
    if definition.def.is_empty() {
        return Ok(None);
    }
    LoadedDefinition::from_definition(definition)
        .context("loading the Definition made from the Dockerfile")
        .map(Some)
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

/// The caches that could be opened, and why the others could not.
type OpenedImports = (Vec<Arc<kiln_cache::CacheSource>>, Vec<kiln_cache::Error>);

/// The `--cache-from` caches: opened in the background, awaited once by the first user.
enum CacheImports {
    Opening(Option<tokio::task::JoinHandle<OpenedImports>>),
    Opened(Vec<Arc<kiln_cache::CacheSource>>),
}

impl CacheImports {
    /// The caches that could be read; a cache that cannot be read is a warning, and the
    /// build goes on, as BuildKit's.
    fn get(
        &mut self,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Vec<Arc<kiln_cache::CacheSource>>> {
        if let Self::Opening(opening) = self {
            let Some(opening) = opening.take() else {
                bail!("the --cache-from caches were lost while opening");
            };
            let (imports, unreadable) = runtime
                .block_on(opening)
                .context("reading the --cache-from caches")?;
            for error in unreadable {
                warn(&format!("{:#}", anyhow::Error::from(error)));
            }
            *self = Self::Opened(imports);
        }
        match self {
            Self::Opened(imports) => Ok(imports.clone()),
            Self::Opening(_) => bail!("the --cache-from caches were lost while opening"),
        }
    }
}

/// Lists the build checks' warnings after the build, as buildx does (not with `-q`).
fn show_warnings(args: &BuildArgs, warnings: &[kiln_frontend::LintWarning]) {
    if !matches!(progress_flag(args), Ok("quiet")) {
        check::print_summary(warnings);
    }
}

/// With `error=true`, the build checks fail the conversion: their warnings are listed
/// before the error, as after a build.
fn lint_failed(args: &BuildArgs, error: &anyhow::Error) {
    if let Some(
        kiln_frontend::ConvertError::Lint { warnings, .. }
        | kiln_frontend::ConvertError::Checked { warnings, .. },
    ) = error.downcast_ref::<kiln_frontend::ConvertError>()
    {
        show_warnings(args, warnings);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        fs_err::write(&file, "s3cret").unwrap();
        let (id, data) = parse_secret(&format!("id=tok,src={}", file.display())).unwrap();
        assert_eq!(
            (id.as_str(), data.as_slice()),
            ("tok", b"s3cret".as_slice())
        );
        let err = parse_secret("src=/nowhere").unwrap_err().to_string();
        assert!(err.contains("reading secret /nowhere"), "{err}");
        let err = parse_secret("id=x,bogus=1").unwrap_err().to_string();
        assert_eq!(err, "unexpected key \"bogus\" in --secret \"id=x,bogus=1\"");
    }

    #[test]
    fn ssh_agents_are_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let (id, path) = parse_ssh(&format!("deploy={}", socket.display())).unwrap();
        assert_eq!((id.as_str(), path.as_path()), ("deploy", socket.as_path()));
        // A key file is refused, saying why.
        let key = dir.path().join("id_ed25519");
        fs_err::write(&key, "key").unwrap();
        let err = parse_ssh(&format!("default={}", key.display()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kiln cannot run an SSH agent in-process"),
            "{err}"
        );
        let err = parse_ssh("default=/a,/b").unwrap_err().to_string();
        assert!(err.contains("SSH key files are not supported"), "{err}");
        assert!(parse_ssh("=x").is_err());
    }
}
