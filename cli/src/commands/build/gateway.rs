//! Frontend images in `kiln build`: `# syntax=IMAGE` (or `--build-arg BUILDKIT_SYNTAX=IMAGE`)
//! runs IMAGE through BuildKit's gateway API (`kiln_daemon::GatewayFrontend`) instead of the
//! built-in Dockerfile frontend, with the options the built-in one would get.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kiln_daemon::{FrontendError, Syntax};
use kiln_frontend::{ConvertOptions, Converted};
use kiln_solver::{Reporter, Session};

use crate::args::BuildArgs;

/// Which frontend converts a build's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Choice {
    /// The built-in Dockerfile (and kiln.yaml) frontend.
    Builtin,
    /// A frontend image.
    Image(Syntax),
    /// A command on the host (`--frontend-exec`).
    Exec(String),
}

/// Parses `--opt KEY=VALUE`.
pub(super) fn extra_options(args: &BuildArgs) -> anyhow::Result<BTreeMap<String, String>> {
    args.opt
        .iter()
        .map(|text| {
            text.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("invalid --opt {text:?}: expected KEY=VALUE"))
        })
        .collect()
}

/// The frontend `args` ask for, for the build file `file`: `--frontend-exec`, then
/// `--frontend gateway.v0 --opt source=IMAGE`, then `BUILDKIT_SYNTAX` or `# syntax=`.
pub(super) fn choose(
    args: &BuildArgs,
    build_args: &BTreeMap<String, String>,
    file: &[u8],
) -> anyhow::Result<Choice> {
    let options = extra_options(args)?;
    if let Some(command) = &args.frontend_exec {
        return Ok(Choice::Exec(command.clone()));
    }
    match args.frontend.as_deref() {
        None | Some("dockerfile.v0") => {
            if !options.is_empty() {
                bail!(
                    "--opt gives options to a frontend image (--frontend gateway.v0) or command \
                     (--frontend-exec); the built-in frontend takes kiln build's own flags"
                );
            }
            Ok(Syntax::of(build_args, file).map_or(Choice::Builtin, Choice::Image))
        }
        Some("gateway.v0") => {
            let image = options
                .get("source")
                .filter(|s| !s.is_empty())
                .context("--frontend gateway.v0 needs the frontend image: --opt source=IMAGE")?;
            Ok(Choice::Image(Syntax {
                image: image.clone(),
                cmdline: options.get("cmdline").cloned(),
            }))
        }
        Some(other) => bail!(
            "frontend {other:?} is not known: kiln has dockerfile.v0 (built in) and gateway.v0 \
             (a frontend image, --opt source=IMAGE), or --frontend-exec CMD"
        ),
    }
}

/// Runs the frontend image of `syntax` with the options of `options` (and `extra`, over them)
/// against `session`, and gives its Definition and image configuration as the built-in
/// frontend would.
pub(super) fn run(
    syntax: &Syntax,
    options: &ConvertOptions,
    extra: BTreeMap<String, String>,
    no_cache: bool,
    session: Arc<Session>,
    reporter: Arc<dyn Reporter>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Converted, FrontendError> {
    let mut frontend = syntax.frontend(kiln_daemon::frontend_attrs(options, no_cache));
    frontend.options.extend(extra);
    let result = runtime.block_on(frontend.run(session, reporter))?;
    for warning in &result.warnings {
        super::warn(warning);
    }
    result
        .into_converted()
        .map_err(|message| FrontendError::Returned {
            message: format!("frontend {}: {message}", syntax.image),
        })
}

/// Writes a Dockerfile read from standard input where a frontend image can read it: a
/// directory of its own, named `Dockerfile`.
pub(super) fn stdin_dockerfile(bytes: &[u8]) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("kiln-dockerfile-")
        .tempdir()
        .context("making a directory for the Dockerfile")?;
    fs_err::write(dir.path().join("Dockerfile"), bytes)?;
    Ok(dir)
}
