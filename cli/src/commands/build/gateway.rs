//! Frontend images in `kiln build`: `# syntax=IMAGE` (or `--build-arg BUILDKIT_SYNTAX=IMAGE`)
//! runs IMAGE through BuildKit's gateway API (`kiln_daemon::GatewayFrontend`) instead of the
//! built-in Dockerfile frontend, with the options the built-in one would get.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kiln_daemon::{FrontendError, GatewayFrontend};
use kiln_frontend::{ConvertOptions, Converted, ImageConfig};
use kiln_solver::{Reporter, Session};

use crate::args::BuildArgs;

/// The build argument that names a frontend image, as BuildKit's.
const SYNTAX_ARG: &str = "BUILDKIT_SYNTAX";

/// A frontend image a build asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Syntax {
    /// The image reference.
    pub(super) image: String,
    /// The whole `syntax` value (the image, then the frontend's own arguments); `None` for a
    /// frontend named by `--frontend gateway.v0 --opt source=IMAGE`.
    pub(super) cmdline: Option<String>,
}

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
            Ok(syntax(build_args, file).map_or(Choice::Builtin, Choice::Image))
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

/// The frontend image of a build: `BUILDKIT_SYNTAX` wins over the file's `syntax` directive,
/// as in BuildKit.
pub(super) fn syntax(build_args: &BTreeMap<String, String>, file: &[u8]) -> Option<Syntax> {
    let cmdline = match build_args.get(SYNTAX_ARG) {
        Some(value) => value.trim().to_owned(),
        None => kiln_frontend::detect_syntax(file)?.value,
    };
    let image = cmdline.split_whitespace().next()?.to_owned();
    Some(Syntax {
        image,
        cmdline: Some(cmdline),
    })
}

/// Whether `image` names BuildKit's stock Dockerfile frontend (`docker/dockerfile`, any tag or
/// digest), which the built-in frontend stands in for when it cannot be pulled.
pub(super) fn is_stock_dockerfile(image: &str) -> bool {
    let normalized = kiln_llb::normalize_image_ref(image);
    let name = normalized.split('@').next().unwrap_or_default();
    let name = match name.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => name,
    };
    name == "docker.io/docker/dockerfile"
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
    let mut frontend = GatewayFrontend::new(&syntax.image);
    frontend.options = kiln_daemon::frontend_attrs(options, no_cache);
    // As BuildKit forwards a `# syntax=` build: the frontend is told it was chosen, so it
    // does not forward again.
    if let Some(cmdline) = &syntax.cmdline {
        frontend
            .options
            .insert("cmdline".to_owned(), cmdline.clone());
    }
    frontend
        .options
        .insert("source".to_owned(), syntax.image.clone());
    frontend.options.extend(extra);
    let result = runtime.block_on(frontend.run(session, reporter))?;
    for warning in &result.warnings {
        super::warn(warning);
    }
    let config =
        image_config(result.config.as_deref()).map_err(|message| FrontendError::Returned {
            message: format!("frontend {}: {message}", syntax.image),
        })?;
    Ok(Converted {
        definition: result.definition.unwrap_or_default(),
        config,
    })
}

/// The image configuration a frontend returned (none: an empty one).
pub(super) fn image_config(bytes: Option<&[u8]>) -> Result<ImageConfig, String> {
    match bytes {
        Some(bytes) => serde_json::from_slice::<ImageConfig>(bytes)
            .map_err(|e| format!("invalid image config: {e}")),
        None => Ok(ImageConfig::default()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_argument_wins_over_the_directive() {
        let file = b"# syntax=docker/dockerfile:1.7 --flag\nFROM busybox\n";
        assert_eq!(
            syntax(&BTreeMap::new(), file),
            Some(Syntax {
                image: "docker/dockerfile:1.7".to_owned(),
                cmdline: Some("docker/dockerfile:1.7 --flag".to_owned()),
            })
        );
        let args = BTreeMap::from([(SYNTAX_ARG.to_owned(), " reg/fe:2 ".to_owned())]);
        assert_eq!(
            syntax(&args, file).map(|s| s.image),
            Some("reg/fe:2".to_owned())
        );
        assert_eq!(syntax(&BTreeMap::new(), b"FROM busybox\n"), None);
        let empty = BTreeMap::from([(SYNTAX_ARG.to_owned(), "  ".to_owned())]);
        assert_eq!(syntax(&empty, file), None);
    }

    #[test]
    fn the_stock_frontend_is_known_by_any_spelling() {
        for image in [
            "docker/dockerfile",
            "docker/dockerfile:1",
            "docker.io/docker/dockerfile:1.7-labs",
            "docker/dockerfile@sha256:0e49dff8ac8ed9eb3d7788808095d032a0311807d6c24fdf138edffbc22ce8ea",
        ] {
            assert!(is_stock_dockerfile(image), "{image}");
        }
        for image in [
            "docker/dockerfile-upstream:1",
            "127.0.0.1:5000/docker/dockerfile:1",
            "example/dockerfile:1",
        ] {
            assert!(!is_stock_dockerfile(image), "{image}");
        }
    }
}
