//! Dockerfile to LLB: [`convert`] turns a Dockerfile into one LLB Definition for the target stage
//! plus the image configuration of the result.
//!
//! # Overview
//!
//! The conversion follows BuildKit's `frontend/dockerfile/dockerfile2llb/convert.go` (commit
//! 73ed6825, read as the model) so that the same Dockerfile gives the same ops:
//!
//! 1. parse the Dockerfile into stages; expand the meta `ARG`s (before the first `FROM`) with the
//!    build arguments and the predefined platform arguments;
//! 2. expand each `FROM` with the meta arguments; a base naming an earlier stage makes the stage
//!    build on it, `scratch` on nothing, anything else on an image;
//! 3. pick the target stage (`--target`, else the last) and link stages through `COPY --from` and
//!    `RUN --mount=from=` (a name or index of a stage, else an image); reject loops;
//! 4. resolve the base images of the stages the target needs (digest and configuration through
//!    the [`ImageMetaResolver`]), adding the base image's `ONBUILD` triggers to the stage;
//! 5. dispatch the needed stages in file order, each instruction extending the stage's LLB state
//!    and image configuration as BuildKit does (variables expanded where BuildKit expands them);
//! 6. build the context source (`local://context`) with the paths the build uses and the
//!    `.dockerignore` patterns: dispatching is run once to learn the paths, then again with the
//!    final source, because an LLB state cannot be changed after ops use it.
//!
//! # Where things live
//!
//! - this file: the public API ([`convert`], [`ConvertOptions`], [`ImageMetaResolver`]), the
//!   error constructors and step 6, the context source; `convert_stages`, steps 2 to 6 on typed
//!   stages, is also the converter of the kiln.yaml frontend (`crate::yaml`), which lowers its
//!   files to the same stages;
//! - `plan`: steps 1 to 4: the stages, their bases and sources, the target, cycles, the resolved
//!   base images and their `ONBUILD` triggers;
//! - `dispatch`: step 5: the walk over the needed stages, the state each starts from, and
//!   `Step::dispatch`, which hands each instruction to its method;
//! - `config`: the instructions that set the image configuration and the stage environment
//!   (`ENV`, `ARG`, `LABEL`, `WORKDIR`, `USER`, `CMD`, `ENTRYPOINT`, `HEALTHCHECK`, `EXPOSE`, ...);
//! - `run`: `RUN`, with its mounts, secrets and SSH sockets;
//! - `copy`: `COPY` and `ADD` (context paths, URLs, git sources, inline files, `--link`,
//!   `--chown`/`--chmod`), with `git` parsing the git URLs `ADD` accepts;
//! - `image`: the [`ImageConfig`] types; `error`: [`ConvertError`].
//!
//! A new instruction gets a `dispatch_*` method in the module of its kind (a new module when it
//! is of none of these kinds) and an arm in `Step::dispatch`.

mod config;
mod copy;
mod dispatch;
mod error;
mod git;
mod image;
mod plan;
mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kiln_llb::{LocalOptions, State, local_with, pb, scratch};

pub use error::{ConvertError, ConvertErrorKind};
pub use image::{ContainerConfig, DEFAULT_PATH, Empty, Healthcheck, History, ImageConfig, RootFs};

use crate::dockerignore::clean_path;
use crate::error::Location;
use crate::lint::{LintConfig, LintWarning, Linter};
use crate::parser::Parser;
use crate::shell::Lexer;
use plan::Plan;

/// Description key holding the Dockerfile instruction an op comes from.
const COMMAND_KEY: &str = "com.docker.dockerfile.v1.command";
/// History comment of entries made by the converter.
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// An image's metadata as the [`ImageMetaResolver`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The manifest digest (`sha256:...`) the reference points to; empty to leave it unpinned.
    pub digest: String,
    /// The image configuration JSON blob.
    pub config: Vec<u8>,
}

/// Looks up base images for `FROM` and `COPY --from`; `cli` implements it with the registry
/// client and the content store.
pub trait ImageMetaResolver {
    /// Resolves `reference` (normalised: `docker.io/library/busybox:latest`) for `platform`.
    fn resolve(
        &self,
        reference: &str,
        platform: &pb::Platform,
    ) -> Result<ResolvedImage, Box<dyn std::error::Error + Send + Sync>>;
}

/// Options of [`convert`].
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The stage to build (`--target`); `None` builds the last stage.
    pub target: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The name of the local source holding the build context.
    pub context_name: String,
    /// The Dockerfile's name in error messages.
    pub file_name: String,
    /// Exclude patterns of the context (from `.dockerignore`).
    pub excludes: Vec<String>,
    /// The platform built for (`TARGETPLATFORM`): stages without `FROM --platform` are built
    /// for it.
    pub platform: pb::Platform,
    /// The platform built on (`BUILDPLATFORM`).
    pub build_platform: pb::Platform,
    /// Whether this is one of several platforms of one build: step names then begin with
    /// their stage's platform.
    pub multi_platform: bool,
    /// The `local.unique` value of the context source. BuildKit gives a context source without
    /// a session a fresh random id per invocation (so that its op digest is unique); `None` does
    /// the same. The solver leaves it out of cache keys.
    pub local_unique: Option<String>,
    /// Resource limits of every `RUN` (buildx `--ulimit`, the frontend's `ulimit` option).
    pub ulimits: Vec<pb::Ulimit>,
    /// The cgroup parent of every `RUN` (buildx `--cgroup-parent`, the frontend's
    /// `cgroup-parent` option).
    pub cgroup_parent: Option<String>,
    /// Labels of the result image (buildx `--label`, the frontend's `label:KEY` options),
    /// over those the Dockerfile's `LABEL`s set.
    pub labels: BTreeMap<String, String>,
    /// `/etc/hosts` entries of every `RUN` (buildx `--add-host`, the frontend's `add-hosts`
    /// option); names are lower-cased, as BuildKit's frontend reads them.
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// The network of every `RUN` without a `--network` of its own (buildx `--network`, the
    /// frontend's `force-network-mode` option); `Unset` leaves it to the executor.
    pub network: pb::NetMode,
    /// The size in bytes of every `RUN`'s `/dev/shm` (buildx `--shm-size`, the frontend's
    /// `shm-size` option): a tmpfs of that size is mounted there; 0 leaves the executor's.
    pub shm_size: u64,
    /// Stages whose `RUN` steps ignore the cache (buildx `--no-cache-filter`, the frontend's
    /// `no-cache` option with stage names), matched regardless of case as BuildKit does.
    pub no_cache_stages: Vec<String>,
    /// Named contexts (buildx `--build-context NAME=…`, the frontend's `context:NAME`
    /// options): a stage called NAME is replaced by the context, and `FROM NAME`,
    /// `COPY --from=NAME` and `RUN --mount=from=NAME` read it instead of an image.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Converts every stage, not only those the target needs, so that the build checks see
    /// them all (`--check` without `--target`, as BuildKit's lint request).
    pub all_stages: bool,
}

/// What a named context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`: an image.
    Image(String),
    /// A directory of the client: the local source of this name.
    Local(String),
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            target: None,
            build_args: BTreeMap::new(),
            context_name: "context".to_owned(),
            file_name: "Dockerfile".to_owned(),
            excludes: Vec::new(),
            platform: pb::Platform {
                architecture: "amd64".to_owned(),
                os: "linux".to_owned(),
                ..Default::default()
            },
            build_platform: pb::Platform {
                architecture: "amd64".to_owned(),
                os: "linux".to_owned(),
                ..Default::default()
            },
            multi_platform: false,
            local_unique: None,
            ulimits: Vec::new(),
            cgroup_parent: None,
            labels: BTreeMap::new(),
            extra_hosts: Vec::new(),
            network: pb::NetMode::Unset,
            shm_size: 0,
            no_cache_stages: Vec::new(),
            named_contexts: BTreeMap::new(),
            all_stages: false,
        }
    }
}

/// The result of [`convert`].
#[derive(Debug, Clone)]
pub struct Converted {
    /// The LLB Definition building the target stage.
    pub definition: pb::Definition,
    /// The image configuration of the target stage.
    pub config: ImageConfig,
    /// What the build checks found, in the order found (empty when they are skipped).
    pub warnings: Vec<LintWarning>,
}

/// The build argument that replaces the `# check=` directive, as in BuildKit.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// Converts a Dockerfile into an LLB Definition and an image configuration.
pub fn convert(
    dockerfile: &[u8],
    options: &ConvertOptions,
    resolver: &dyn ImageMetaResolver,
) -> Result<Converted, ConvertError> {
    if dockerfile.is_empty() {
        return Err(build_error(ConvertErrorKind::EmptyDockerfile));
    }
    let parsed = Parser::new()
        .file_name(options.file_name.clone())
        .strict_utf8()
        .parse(dockerfile)?;
    let linter = Linter::new(lint_config(&parsed, options)?);
    crate::lint::check_nodes(&parsed, &linter);
    let converted = crate::instructions::parse_stages(&parsed)
        .map_err(ConvertError::from)
        .and_then(|stages| {
            convert_stages(
                stages,
                &Lexer::new(parsed.escape),
                options,
                resolver,
                &linter,
            )
        });
    match converted {
        // As BuildKit: what the checks found before the conversion failed is shown too.
        Err(error) if !matches!(error, ConvertError::Lint { .. }) => {
            let warnings = linter.take();
            Err(if warnings.is_empty() {
                error
            } else {
                ConvertError::Checked {
                    error: Box::new(error),
                    warnings,
                }
            })
        }
        other => other,
    }
}

/// The build checks' configuration: the [`CHECK_BUILD_ARG`] build argument if given, else the
/// `# check=` directive.
fn lint_config(
    parsed: &crate::parser::Dockerfile,
    options: &ConvertOptions,
) -> Result<LintConfig, ConvertError> {
    let (what, text) = match options.build_args.get(CHECK_BUILD_ARG) {
        Some(text) => ("build-arg:BUILDKIT_DOCKERFILE_CHECK", text.as_str()),
        None => ("check options", parsed.directive("check").unwrap_or("")),
    };
    LintConfig::parse(text)
        .map_err(|message| build_error(ConvertErrorKind::CheckOptions { what, message }))
}

/// Converts typed stages (from a Dockerfile, or from another frontend such as kiln.yaml that
/// lowers its format to the same instructions), expanding variables with `lexer`.
pub(crate) fn convert_stages(
    stages: crate::instructions::Stages,
    lexer: &Lexer,
    options: &ConvertOptions,
    resolver: &dyn ImageMetaResolver,
    linter: &Linter,
) -> Result<Converted, ConvertError> {
    if stages.stages.is_empty() {
        return Err(build_error(ConvertErrorKind::NoStages));
    }
    if let Some(pattern) = options.excludes.iter().find(|p| *p == "!") {
        return Err(build_error(ConvertErrorKind::InvalidIgnorePattern {
            pattern: pattern.clone(),
        }));
    }
    crate::lint::check_stages(&stages, linter);
    let mut plan = Plan::new(
        options,
        lexer,
        stages.stages,
        &stages.meta_args,
        resolver,
        linter,
    )?;
    plan.resolve()?;
    // First pass: learn which context paths the build reads.
    let probe = plan.dispatch(&scratch())?;
    let unique = options.local_unique.clone().unwrap_or_else(new_id);
    let context = context_source(options, &probe.context_paths, unique);
    let done = plan.dispatch(&context)?;
    let target = &done.stages[plan.target];
    let mut config = target.image.clone();
    let platform = &plan.stages[plan.target].platform;
    config.architecture = platform.architecture.clone();
    config.os = platform.os.clone();
    config.variant = Some(platform.variant.clone()).filter(|v| !v.is_empty());
    // As BuildKit's `finalizeResultImage`: the build's labels go over the Dockerfile's.
    config.config.labels.extend(options.labels.clone());
    // As BuildKit's `finalizeResultImage`: with `error=true`, a warning fails the build.
    if let Some(rules) = linter.failed_rules() {
        return Err(ConvertError::Lint {
            rules,
            warnings: linter.take(),
        });
    }
    Ok(Converted {
        definition: target.state.marshal(),
        config,
        warnings: linter.take(),
    })
}

fn build_error(kind: ConvertErrorKind) -> ConvertError {
    ConvertError::Build { kind }
}

fn at(location: &Location, kind: impl Into<ConvertErrorKind>) -> ConvertError {
    ConvertError::At {
        location: Box::new(location.clone()),
        kind: kind.into(),
    }
}

fn unsupported(location: &Location, feature: &str) -> ConvertError {
    at(
        location,
        ConvertErrorKind::Unsupported {
            feature: feature.to_owned(),
        },
    )
}

/// The context source, as BuildKit's Dockerfile frontend makes it.
fn context_source(options: &ConvertOptions, paths: &BTreeSet<String>, unique: String) -> State {
    let mut follow = Vec::new();
    if !paths.contains("/") {
        follow = paths
            .iter()
            .map(|p| clean_path(p.trim_start_matches('/')))
            .collect();
        follow.sort();
    }
    let has_follow = !follow.is_empty();
    let has_excludes = !options.excludes.is_empty();
    local_with(
        &options.context_name,
        LocalOptions {
            exclude_patterns: options.excludes.clone(),
            follow_paths: follow,
            shared_key_hint: Some(options.context_name.clone()),
            unique: Some(unique),
            ..LocalOptions::default()
        },
    )
    .with_metadata(|m| {
        m.description.insert(
            kiln_llb::CUSTOM_NAME.to_owned(),
            "[internal] load build context".to_owned(),
        );
        m.caps.insert("source.local.sharedkeyhint".to_owned(), true);
        m.caps.insert("source.local.unique".to_owned(), true);
        if has_follow {
            m.caps.insert("source.local.followpaths".to_owned(), true);
        }
        if has_excludes {
            m.caps
                .insert("source.local.excludepatterns".to_owned(), true);
        }
    })
}

/// A random id in the format of BuildKit's `identity.NewID`: 17 random bytes with the top bit
/// set, in base 36, the 25 digits after the leading one.
fn new_id() -> String {
    let mut bytes: Vec<u8> = (0..17).map(|_| fastrand::u8(..)).collect();
    bytes[0] |= 0x80;
    let mut digits = Vec::new();
    while bytes.iter().any(|&b| b != 0) {
        let mut remainder = 0u32;
        for b in &mut bytes {
            let value = (remainder << 8) | u32::from(*b);
            *b = (value / 36) as u8;
            remainder = value % 36;
        }
        digits.push(char::from_digit(remainder, 36).unwrap_or('0'));
    }
    digits.iter().rev().skip(1).take(25).collect()
}

fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value.to_owned()));
}
