//! The frontend step of a build: its Dockerfile converted by the built-in frontend, a
//! `--frontend-exec` command or a frontend image into a Definition and an image config (or
//! its `--llb` Definition loaded); `--call=check`, which stops there; `--print-llb`, which
//! prints the Definition; and the build checks' warnings.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use kiln_llb::LoadedDefinition;
use kiln_solver::Session;

use super::{
    Build, Noted, attest, check, dockerfile, exec, flags, gateway, progress_flag, show_progress,
    warn,
};
use crate::args::BuildArgs;
use crate::progress::Progress;

/// What the frontend made of a single-platform build, with the session and progress a
/// frontend image opened to solve through (the build goes on with them).
pub(super) struct Converted {
    /// The Definition (none: a build of `scratch` alone).
    pub(super) definition: Option<LoadedDefinition>,
    /// The image configuration of a Dockerfile build, for the exporters.
    pub(super) image_config: Option<kiln_frontend::ImageConfig>,
    /// What the provenance says of the frontend: its name, attributes and Dockerfile.
    pub(super) frontend: Option<attest::FrontendFacts>,
    /// What the build checks found, shown once the build's progress is done.
    pub(super) warnings: Vec<kiln_frontend::LintWarning>,
    pub(super) session: Option<Arc<Session>>,
    pub(super) progress: Option<Progress>,
}

/// `--call=check`: converts the Dockerfile for its build checks alone and reports them.
pub(super) fn check(build: &Build<'_>) -> anyhow::Result<ExitCode> {
    let Some((dir, source)) = build.dockerfile() else {
        unreachable!("a Dockerfile build has a context and a Dockerfile");
    };
    let args = build.args;
    let mut options = dockerfile::options(args, source, dir)?;
    // As BuildKit's lint request: without a target, every stage is checked.
    options.all_stages = args.target.is_none();
    match dockerfile::convert(
        source,
        &options,
        build.store.clone(),
        &build.pull,
        &build.runtime,
    ) {
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
    }
}

/// The frontend step of a single-platform build: the `--llb` Definition, or what the
/// Dockerfile's frontend makes of it; `None` when `--print-llb` printed it instead.
pub(super) fn single(
    build: &Build<'_>,
    imports: &mut super::CacheImports,
    noted: &Noted,
) -> anyhow::Result<Option<Converted>> {
    let args = build.args;
    if let Some(llb) = &args.llb {
        return Ok(Some(Converted {
            definition: Some(flags::read_definition(llb)?),
            image_config: None,
            frontend: None,
            warnings: Vec::new(),
            session: None,
            progress: None,
        }));
    }
    let Some((dir, source)) = build.dockerfile() else {
        unreachable!("a Dockerfile build has a context and a Dockerfile");
    };
    let options = dockerfile::options(args, source, dir)?;
    let choice = gateway::choose(args, &options.build_args, &source.bytes)?;
    let frontend = attest::frontend_facts(args, &options, &choice);
    let builtin = || builtin(build, source, &options);
    let mut session = None;
    let mut progress = None;
    let ran = frontend_conversion(args, &choice, &options, dir, builtin, |syntax| {
        // The frontend image solves through the build's own session.
        let shared = build.session(imports)?;
        let shown = show_progress(args, noted)?;
        let ran = run_image(build, syntax, &options, shared.clone(), noted)?;
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
        print_llb(&converted)?;
        return Ok(None);
    }
    Ok(Some(Converted {
        warnings: std::mem::take(&mut converted.warnings),
        definition: load_converted(converted.definition)?,
        image_config: Some(converted.config),
        frontend: Some(frontend),
        session,
        progress,
    }))
}

/// Converts `source` with the built-in frontend; with `error=true`, the build checks'
/// warnings are listed before the error.
pub(super) fn builtin(
    build: &Build<'_>,
    source: &dockerfile::Source,
    options: &kiln_frontend::ConvertOptions,
) -> anyhow::Result<kiln_frontend::Converted> {
    let (store, pull, runtime) = (build.store.clone(), &build.pull, &build.runtime);
    dockerfile::convert(source, options, store, pull, runtime)
        .inspect_err(|error| lint_failed(build.args, error))
}

/// Runs the frontend image `syntax` on `options`, solving through `session`.
pub(super) fn run_image(
    build: &Build<'_>,
    syntax: &kiln_daemon::Syntax,
    options: &kiln_frontend::ConvertOptions,
    session: Arc<Session>,
    noted: &Noted,
) -> anyhow::Result<Result<kiln_frontend::Converted, kiln_daemon::FrontendError>> {
    let args = build.args;
    Ok(gateway::run(
        syntax,
        options,
        gateway::extra_options(args)?,
        args.no_cache,
        session,
        noted.recorder.clone(),
        &build.runtime,
    ))
}

/// `--print-llb`: writes the Definition to standard output; run as another build's
/// `--frontend-exec`, the image config goes where it asks for it.
fn print_llb(converted: &kiln_frontend::Converted) -> anyhow::Result<()> {
    use std::io::Write as _;
    if let Some(path) = std::env::var_os(exec::CONFIG_VAR).filter(|p| !p.is_empty()) {
        let config = serde_json::to_vec(&converted.config).context("writing the image config")?;
        fs_err::write(&path, config)?;
    }
    let bytes = kiln_llb::prost::Message::encode_to_vec(&converted.definition);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&bytes).context("writing the Definition")?;
    stdout.flush().context("writing the Definition")?;
    Ok(())
}

/// What the frontend `choice` names makes of `options`: the built-in frontend's conversion
/// (`builtin`), a `--frontend-exec` command's output, or what a frontend image returns when
/// `run_image` runs it. The stock Dockerfile frontend that cannot be had gives way to the
/// built-in one, with a warning. A frontend image's own failure comes back as `Ok(Err(..))`,
/// for the caller to end the progress it shows before reporting it.
pub(super) fn frontend_conversion(
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

/// The Definition a frontend made, loaded; a build of `scratch` alone has no ops, and its
/// result is the empty file system (`None`).
pub(super) fn load_converted(
    definition: kiln_llb::pb::Definition,
) -> anyhow::Result<Option<LoadedDefinition>> {
    if definition.def.is_empty() {
        return Ok(None);
    }
    LoadedDefinition::from_definition(definition)
        .context("loading the Definition made from the Dockerfile")
        .map(Some)
}

/// Lists the build checks' warnings after the build, as buildx does (not with `-q`).
pub(super) fn show_warnings(args: &BuildArgs, warnings: &[kiln_frontend::LintWarning]) {
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
