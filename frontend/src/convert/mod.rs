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

mod error;
mod git;
mod image;

use std::collections::{BTreeMap, BTreeSet};

use kiln_llb::{
    Chown, CopyOptions, FileAction, GitOptions, HttpOptions, LocalOptions, MkdirOptions,
    MountOptions, State, git_with, http_with, image_for, local_with, merge, normalize_image_ref,
    pb, scratch,
};

pub use error::{ConvertError, ConvertErrorKind};
pub use image::{ContainerConfig, DEFAULT_PATH, Empty, Healthcheck, History, ImageConfig, RootFs};

use crate::dockerignore::clean_path;
use crate::error::Location;
use crate::instructions::{
    ArgDefinition, Command, CommandKind, CopyCommand, HealthConfig, NetworkMode, RunCommand,
    SecurityMode, SourcesAndDest, Stage,
};
use crate::mount::{CacheSharing, Mount, MountType};
use crate::parser::{Parser, chomp_heredoc_content, parse_heredoc};
use crate::quote::go_quote_list;
use crate::shell::Lexer;

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
    /// The platform built for (and built on).
    pub platform: pb::Platform,
    /// The `local.unique` value of the context source. BuildKit gives a context source without
    /// a session a fresh random id per invocation (so that its op digest is unique); `None` does
    /// the same. The solver leaves it out of cache keys.
    pub local_unique: Option<String>,
    /// Resource limits of every `RUN` (buildx `--ulimit`, the frontend's `ulimit` option).
    pub ulimits: Vec<pb::Ulimit>,
    /// The cgroup parent of every `RUN` (buildx `--cgroup-parent`, the frontend's
    /// `cgroup-parent` option).
    pub cgroup_parent: Option<String>,
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
            local_unique: None,
            ulimits: Vec::new(),
            cgroup_parent: None,
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
}

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
        .parse(dockerfile)?;
    let stages = crate::instructions::parse_stages(&parsed)?;
    if stages.stages.is_empty() {
        return Err(build_error(ConvertErrorKind::NoStages));
    }
    if let Some(pattern) = options.excludes.iter().find(|p| *p == "!") {
        return Err(build_error(ConvertErrorKind::InvalidIgnorePattern {
            pattern: pattern.clone(),
        }));
    }
    let lexer = Lexer::new(parsed.escape);
    let mut plan = Plan::new(options, &lexer, stages.stages, &stages.meta_args, resolver)?;
    plan.resolve()?;
    // First pass: learn which context paths the build reads.
    let probe = plan.dispatch(&scratch())?;
    let unique = options.local_unique.clone().unwrap_or_else(new_id);
    let context = context_source(options, &probe.context_paths, unique);
    let done = plan.dispatch(&context)?;
    let target = &done.stages[plan.target];
    let mut config = target.image.clone();
    config.architecture = options.platform.architecture.clone();
    config.os = options.platform.os.clone();
    Ok(Converted {
        definition: target.state.marshal(),
        config,
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

/// What a stage is built on.
#[derive(Debug, Clone)]
enum Base {
    Scratch,
    Stage(usize),
    Image(String),
}

/// One stage (or an image named by `COPY --from`/`--mount=from=`) before dispatching.
#[derive(Debug, Clone)]
struct StagePlan {
    /// The stage's name in progress output (`stage-N` when unnamed, empty for a lone stage).
    display_name: String,
    /// The name to find it by (`AS name`), empty when unnamed or an image.
    name: String,
    stage: Stage,
    base: Base,
    /// Stages this one copies or mounts from, with the instruction doing it.
    deps: Vec<usize>,
    /// `ONBUILD` triggers of the base, run first.
    onbuild: Vec<Command>,
    /// The source per instruction: `COPY --from`, and each `RUN --mount` with `from=`.
    sources: Vec<Vec<Option<usize>>>,
    /// The resolved base image: normalised reference with digest, and configuration.
    resolved: Option<(String, ImageConfig)>,
    /// Counted commands (progress `[n/total]`).
    total: usize,
    /// An image used only as a source, not a `FROM` stage.
    source_only: bool,
}

struct Plan<'a> {
    options: &'a ConvertOptions,
    lexer: &'a Lexer,
    resolver: &'a dyn ImageMetaResolver,
    global_args: Vec<(String, String)>,
    stages: Vec<StagePlan>,
    target: usize,
}

/// A dispatched stage.
#[derive(Debug, Clone)]
struct Dispatched {
    state: State,
    image: ImageConfig,
    env: Vec<(String, String)>,
    cwd: String,
    build_args: Vec<(String, Option<String>)>,
    cmd_index: usize,
    cmd_set: bool,
}

struct DispatchResult {
    stages: Vec<Dispatched>,
    context_paths: BTreeSet<String>,
}

fn platform_string(p: &pb::Platform) -> String {
    let mut s = format!("{}/{}", p.os, p.architecture);
    if !p.variant.is_empty() {
        s.push('/');
        s.push_str(&p.variant);
    }
    s
}

fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value.to_owned()));
}

impl<'a> Plan<'a> {
    fn new(
        options: &'a ConvertOptions,
        lexer: &'a Lexer,
        stages: Vec<Stage>,
        meta_args: &[ArgDefinition],
        resolver: &'a dyn ImageMetaResolver,
    ) -> Result<Self, ConvertError> {
        let p = &options.platform;
        let target_name = match &options.target {
            Some(t) => t.clone(),
            None => stages.last().map(|s| s.name.clone()).unwrap_or_default(),
        };
        let mut global_args: Vec<(String, String)> = Vec::new();
        let predefined = [
            ("BUILDPLATFORM", platform_string(p)),
            ("BUILDOS", p.os.clone()),
            ("BUILDOSVERSION", p.os_version.clone()),
            ("BUILDARCH", p.architecture.clone()),
            ("BUILDVARIANT", p.variant.clone()),
            ("TARGETPLATFORM", platform_string(p)),
            ("TARGETOS", p.os.clone()),
            ("TARGETOSVERSION", p.os_version.clone()),
            ("TARGETARCH", p.architecture.clone()),
            ("TARGETVARIANT", p.variant.clone()),
            (
                "TARGETSTAGE",
                if target_name.is_empty() {
                    "default".to_owned()
                } else {
                    target_name
                },
            ),
        ];
        for (k, v) in predefined {
            let v = options.build_args.get(k).cloned().unwrap_or(v);
            set_env(&mut global_args, k, &v);
        }
        // Meta arguments: build arguments override defaults; defaults see earlier arguments.
        for arg in meta_args {
            let value = match options.build_args.get(&arg.key) {
                Some(v) => Some(v.clone()),
                None => match &arg.value {
                    Some(v) => Some(
                        lexer
                            .process_word(v, &global_args)
                            .map_err(|e| build_error(e.into()))?,
                    ),
                    None => None,
                },
            };
            if let Some(v) = value {
                set_env(&mut global_args, &arg.key, &v);
            }
        }

        let count = stages.len();
        let mut plans: Vec<StagePlan> = Vec::with_capacity(count);
        for (i, mut stage) in stages.into_iter().enumerate() {
            let base_name = lexer
                .process_word(&stage.base_name, &global_args)
                .map_err(|e| at(&stage.location, e))?;
            if base_name.is_empty() {
                return Err(at(
                    &stage.location,
                    ConvertErrorKind::BlankBaseName {
                        base: stage.base_name.clone(),
                    },
                ));
            }
            let base = if base_name.eq_ignore_ascii_case("scratch") {
                Base::Scratch
            } else if let Some(j) = plans
                .iter()
                .position(|s| !s.name.is_empty() && s.name.eq_ignore_ascii_case(&base_name))
            {
                Base::Stage(j)
            } else {
                Base::Image(base_name.clone())
            };
            stage.base_name = base_name;
            if !stage.platform.is_empty() {
                let platform = lexer
                    .process_word(&stage.platform, &global_args)
                    .map_err(|e| at(&stage.location, e))?;
                let wanted = platform_string(&options.platform);
                if platform != wanted && platform != format!("{wanted}/") {
                    return Err(unsupported(
                        &stage.location,
                        &format!("FROM --platform={platform} (only {wanted} is built)"),
                    ));
                }
            }
            let mut total = usize::from(matches!(base, Base::Image(_)));
            total += stage
                .commands
                .iter()
                .filter(|c| {
                    matches!(
                        c.kind,
                        CommandKind::Add(_)
                            | CommandKind::Copy(_)
                            | CommandKind::Run(_)
                            | CommandKind::Workdir(_)
                    )
                })
                .count();
            let display_name = if stage.name.is_empty() {
                format!("stage-{i}")
            } else {
                stage.name.clone()
            };
            plans.push(StagePlan {
                display_name,
                name: stage.name.clone(),
                stage,
                base,
                deps: Vec::new(),
                onbuild: Vec::new(),
                sources: Vec::new(),
                resolved: None,
                total,
                source_only: false,
            });
        }

        let target = match &options.target {
            None => count - 1,
            Some(t) => plans[..count]
                .iter()
                .position(|s| !s.name.is_empty() && s.name.eq_ignore_ascii_case(t))
                .ok_or_else(|| {
                    let names: Vec<&str> = plans
                        .iter()
                        .filter(|s| !s.name.is_empty())
                        .map(|s| s.name.as_str())
                        .collect();
                    build_error(ConvertErrorKind::TargetNotFound {
                        target: t.clone(),
                        suggest: crate::flags::suggest(t, &names, true),
                    })
                })?,
        };

        let mut plan = Plan {
            options,
            lexer,
            resolver,
            global_args,
            stages: plans,
            target,
        };
        for i in 0..count {
            let commands = plan.stages[i].stage.commands.clone();
            let mut sources = Vec::with_capacity(commands.len());
            for cmd in &commands {
                let s = plan.command_sources(cmd)?;
                for j in s.iter().flatten() {
                    if !plan.stages[i].deps.contains(j) {
                        plan.stages[i].deps.push(*j);
                    }
                }
                sources.push(s);
            }
            plan.stages[i].sources = sources;
        }
        plan.check_cycles()?;
        if plan.stages.len() == 1 {
            plan.stages[0].display_name.clear();
        }
        Ok(plan)
    }

    /// The stages (or images) `cmd` reads from, by position among its sources.
    fn command_sources(&mut self, cmd: &Command) -> Result<Vec<Option<usize>>, ConvertError> {
        match &cmd.kind {
            CommandKind::Copy(copy) if !copy.from.is_empty() => {
                let expanded = self
                    .lexer
                    .process_word(&copy.from, &crate::shell::EmptyEnv)
                    .map_err(|e| at(&cmd.location, e))?;
                if expanded != copy.from {
                    return Err(at(&cmd.location, ConvertErrorKind::FromVariable));
                }
                Ok(vec![Some(self.source_by_name(
                    &copy.from,
                    &cmd.location,
                    true,
                )?)])
            }
            CommandKind::Run(run) => {
                let mut out = Vec::new();
                for spec in &run.mount_specs {
                    let mut literal = |s: &str| Ok(s.to_owned());
                    let from = crate::mount::parse_mount(spec, Some(&mut literal))
                        .map(|m| m.from)
                        .unwrap_or_default();
                    if from.is_empty() {
                        out.push(None);
                    } else {
                        out.push(Some(self.source_by_name(&from, &cmd.location, false)?));
                    }
                }
                Ok(out)
            }
            _ => Ok(Vec::new()),
        }
    }

    fn source_by_name(
        &mut self,
        name: &str,
        location: &Location,
        allow_index: bool,
    ) -> Result<usize, ConvertError> {
        if allow_index {
            if let Ok(index) = name.parse::<i64>() {
                let count = self.stages.iter().filter(|s| !s.source_only).count();
                return usize::try_from(index)
                    .ok()
                    .filter(|&i| i < count)
                    .ok_or_else(|| at(location, ConvertErrorKind::InvalidStageIndex { index }));
            }
        }
        if let Some(i) = self
            .stages
            .iter()
            .position(|s| !s.name.is_empty() && s.name.eq_ignore_ascii_case(name))
        {
            return Ok(i);
        }
        if let Some(i) = self
            .stages
            .iter()
            .position(|s| s.source_only && s.stage.base_name == name)
        {
            return Ok(i);
        }
        let base = if name.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else {
            Base::Image(name.to_owned())
        };
        self.stages.push(StagePlan {
            display_name: String::new(),
            name: String::new(),
            stage: Stage {
                name: String::new(),
                base_name: name.to_owned(),
                platform: String::new(),
                orig_cmd: String::new(),
                source_code: String::new(),
                location: location.clone(),
                comments: Vec::new(),
                doc_comment: String::new(),
                commands: Vec::new(),
            },
            base,
            deps: Vec::new(),
            onbuild: Vec::new(),
            sources: Vec::new(),
            resolved: None,
            total: 0,
            source_only: true,
        });
        Ok(self.stages.len() - 1)
    }

    fn edges(&self, i: usize) -> Vec<usize> {
        let mut out = self.stages[i].deps.clone();
        if let Base::Stage(j) = self.stages[i].base {
            out.push(j);
        }
        out
    }

    fn check_cycles(&self) -> Result<(), ConvertError> {
        // 0: unvisited, 1: on the current path, 2: done.
        let mut mark = vec![0u8; self.stages.len()];
        fn visit(plan: &Plan<'_>, i: usize, mark: &mut [u8]) -> Result<(), ConvertError> {
            match mark[i] {
                1 => {
                    return Err(build_error(ConvertErrorKind::CircularDependency {
                        stage: plan.stages[i].display_name.clone(),
                    }));
                }
                2 => return Ok(()),
                _ => {}
            }
            mark[i] = 1;
            for j in plan.edges(i) {
                visit(plan, j, mark)?;
            }
            mark[i] = 2;
            Ok(())
        }
        for i in 0..self.stages.len() {
            visit(self, i, &mut mark)?;
        }
        Ok(())
    }

    fn reachable(&self) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![self.target];
        while let Some(i) = todo.pop() {
            if seen.insert(i) {
                todo.extend(self.edges(i));
            }
        }
        seen
    }

    /// Resolves the base images of the needed stages and adds `ONBUILD` triggers.
    fn resolve(&mut self) -> Result<(), ConvertError> {
        let mut initialised = BTreeSet::new();
        loop {
            let reachable = self.reachable();
            for &i in &reachable {
                if let Base::Image(name) = &self.stages[i].base {
                    if self.stages[i].resolved.is_none() {
                        let resolved = self.resolve_image(name, &self.stages[i].stage.location)?;
                        self.stages[i].resolved = Some(resolved);
                    }
                }
            }
            let mut new_deps = false;
            for &i in &reachable {
                if !initialised.insert(i) {
                    continue;
                }
                let triggers: Vec<String> = match &self.stages[i].base {
                    Base::Image(_) => self.stages[i]
                        .resolved
                        .as_ref()
                        .map(|(_, c)| c.config.on_build.clone())
                        .unwrap_or_default(),
                    Base::Stage(j) => self.stages[*j]
                        .stage
                        .commands
                        .iter()
                        .filter_map(|c| match &c.kind {
                            CommandKind::Onbuild(e) => Some(e.clone()),
                            _ => None,
                        })
                        .collect(),
                    Base::Scratch => Vec::new(),
                };
                if triggers.is_empty() {
                    continue;
                }
                let location = self.stages[i].stage.location.clone();
                let mut commands = Vec::new();
                let mut sources = Vec::new();
                for trigger in &triggers {
                    let parsed = Parser::new()
                        .file_name(self.options.file_name.clone())
                        .parse(trigger.as_bytes())?;
                    let Some(mut node) = parsed.nodes.into_iter().next() else {
                        continue;
                    };
                    // Errors of a trigger point at the `FROM` of the stage running it.
                    node.start_line = location.start_line;
                    node.end_line = location.end_line;
                    node.source = location.source.clone();
                    let crate::instructions::Instruction::Command(cmd) =
                        crate::instructions::parse_instruction(&node, &self.options.file_name)?
                    else {
                        continue;
                    };
                    let s = self.command_sources(&cmd)?;
                    for j in s.iter().flatten() {
                        new_deps = true;
                        if !self.stages[i].deps.contains(j) {
                            self.stages[i].deps.push(*j);
                        }
                    }
                    sources.push(s);
                    commands.push(cmd);
                }
                // As in BuildKit, every trigger counts towards the progress total.
                self.stages[i].total += commands.len();
                self.stages[i].onbuild = commands;
                let mut all = sources;
                all.append(&mut self.stages[i].sources);
                self.stages[i].sources = all;
            }
            if !new_deps {
                break;
            }
            self.check_cycles()?;
        }
        Ok(())
    }

    fn resolve_image(
        &self,
        name: &str,
        location: &Location,
    ) -> Result<(String, ImageConfig), ConvertError> {
        let normalized = normalize_image_ref(name);
        let resolved = self
            .resolver
            .resolve(&normalized, &self.options.platform)
            .map_err(|e| {
                let mut message = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    message.push_str(": ");
                    message.push_str(&s.to_string());
                    source = s.source();
                }
                ConvertError::Resolve {
                    location: Box::new(location.clone()),
                    reference: name.to_owned(),
                    message,
                }
            })?;
        let mut config: ImageConfig = serde_json::from_slice(&resolved.config).map_err(|e| {
            at(
                location,
                ConvertErrorKind::BadImageConfig {
                    message: e.to_string(),
                },
            )
        })?;
        config.created = None;
        let pinned = if resolved.digest.is_empty() || normalized.contains('@') {
            normalized
        } else {
            format!("{normalized}@{}", resolved.digest)
        };
        Ok((pinned, config))
    }

    /// Dispatches every needed stage with `context` as the build context.
    fn dispatch(&self, context: &State) -> Result<DispatchResult, ConvertError> {
        let reachable = self.reachable();
        let mut done: Vec<Option<Dispatched>> = vec![None; self.stages.len()];
        let mut context_paths = BTreeSet::new();
        // Sources that are images come first: they are ready before any stage.
        for &i in &reachable {
            let plan = &self.stages[i];
            if plan.source_only {
                let mut d = self.initial(i, &done)?;
                d.cmd_index = 0;
                done[i] = Some(d);
            }
        }
        for i in 0..self.stages.len() {
            if !reachable.contains(&i) || self.stages[i].source_only {
                continue;
            }
            let mut d = self.initial(i, &done)?;
            let plan = &self.stages[i];
            let commands: Vec<(&Command, bool)> = plan
                .onbuild
                .iter()
                .map(|c| (c, true))
                .chain(plan.stage.commands.iter().map(|c| (c, false)))
                .collect();
            for (n, (cmd, onbuild)) in commands.into_iter().enumerate() {
                let sources = plan.sources.get(n).cloned().unwrap_or_default();
                let mut step = Step {
                    plan: self,
                    stage: plan,
                    d: &mut d,
                    done: &done,
                    context,
                    context_paths: &mut context_paths,
                    onbuild,
                };
                step.dispatch(cmd, &sources)?;
            }
            done[i] = Some(d);
        }
        Ok(DispatchResult {
            stages: done
                .into_iter()
                .map(|d| {
                    d.unwrap_or_else(|| Dispatched {
                        state: scratch(),
                        image: ImageConfig::default(),
                        env: Vec::new(),
                        cwd: "/".to_owned(),
                        build_args: Vec::new(),
                        cmd_index: 0,
                        cmd_set: false,
                    })
                })
                .collect(),
            context_paths,
        })
    }

    /// The state a stage starts from: its base, with the base image's defaults applied.
    fn initial(&self, i: usize, done: &[Option<Dispatched>]) -> Result<Dispatched, ConvertError> {
        let plan = &self.stages[i];
        let platform = self.options.platform.clone();
        let mut d = match &plan.base {
            Base::Stage(j) => {
                let mut d = done[*j].clone().expect("a base stage is dispatched first");
                d.image.config.on_build.clear();
                d.cmd_index = 0;
                d.cmd_set = false;
                return Ok(d);
            }
            Base::Scratch => Dispatched {
                state: scratch().platform(platform.clone()),
                image: ImageConfig::empty(&platform.os, &platform.architecture),
                env: Vec::new(),
                cwd: "/".to_owned(),
                build_args: Vec::new(),
                cmd_index: 0,
                cmd_set: false,
            },
            Base::Image(_) => {
                let (pinned, mut config) =
                    plan.resolved.clone().expect("needed images are resolved");
                // The triggers run in this stage (see `resolve`); they do not carry over.
                if !plan.source_only {
                    config.config.on_build.clear();
                }
                let empty = config.rootfs.diff_ids.is_empty()
                    && config.history.iter().all(|h| h.empty_layer);
                let mut d = Dispatched {
                    state: scratch().platform(platform.clone()),
                    image: config,
                    env: Vec::new(),
                    cwd: "/".to_owned(),
                    build_args: Vec::new(),
                    cmd_index: 0,
                    cmd_set: false,
                };
                if !empty {
                    let name = d.prefix(plan, &format!("FROM {pinned}"));
                    let command = plan.stage.source_code.clone();
                    d.state = image_for(&pinned, platform.clone()).with_metadata(|m| {
                        m.description.insert(COMMAND_KEY.to_owned(), command);
                        m.description.insert(kiln_llb::CUSTOM_NAME.to_owned(), name);
                    });
                }
                d
            }
        };
        if !d.image.config.env.iter().any(|e| e.starts_with("PATH=")) {
            d.image.config.env.push(format!("PATH={DEFAULT_PATH}"));
        }
        for entry in d.image.config.env.clone() {
            let (k, v) = entry.split_once('=').unwrap_or((&entry, ""));
            d.state = d.state.env(k, v);
            set_env(&mut d.env, k, v);
        }
        if !d.image.config.working_dir.is_empty() {
            let wd = normalize_workdir("/", &d.image.config.working_dir.clone());
            d.image.config.working_dir = wd.clone();
            d.state = d.state.cwd(&wd);
            d.cwd = wd;
        }
        if !d.image.config.user.is_empty() {
            d.state = d.state.user(&d.image.config.user.clone());
        }
        Ok(d)
    }
}

impl Dispatched {
    /// `[name n/total] text` as BuildKit names ops in progress output.
    fn prefix(&mut self, plan: &StagePlan, text: &str) -> String {
        if plan.total == 0 {
            return text.to_owned();
        }
        let mut out = "[".to_owned();
        if !plan.display_name.is_empty() {
            out.push_str(&plan.display_name);
            out.push(' ');
        }
        self.cmd_index += 1;
        let width = plan.total.to_string().len();
        out.push_str(&format!(
            "{:>width$}/{}] ",
            self.cmd_index,
            plan.total,
            width = width
        ));
        out + text
    }

    fn history(&mut self, created_by: String, layer: bool) {
        self.image.history.push(History {
            created_by: Some(created_by),
            comment: Some(HISTORY_COMMENT.to_owned()),
            empty_layer: !layer,
            ..History::default()
        });
    }
}

/// Go's `system.NormalizeWorkdir` on Linux: `requested` relative to `current`, cleaned.
fn normalize_workdir(current: &str, requested: &str) -> String {
    let current = if current.is_empty() { "/" } else { current };
    if requested.starts_with('/') {
        clean_path(requested)
    } else {
        clean_path(&format!("/{current}/{requested}"))
    }
}

/// BuildKit's `NormalizePath(parent, path, keepSlash)` for Linux paths (cleaned, as the LLB
/// copy source path is cleaned when marshalled).
fn normalize_path(parent: &str, path: &str, keep_slash: bool) -> String {
    let mut out = if path.starts_with('/') {
        clean_path(path)
    } else {
        clean_path(&format!("/{parent}/{path}"))
    };
    if keep_slash {
        if path.ends_with('/') && !out.ends_with('/') {
            out.push('/');
        } else if path.ends_with("/.") {
            if out != "/" {
                out.push('/');
            }
            out.push('.');
        }
    }
    out
}

/// A destination of `COPY`/`ADD` relative to the working directory.
fn dest_path(cwd: &str, dest: &str) -> String {
    if dest.starts_with('/') {
        return normalize_path("/", dest, true);
    }
    let dest = if dest == "." || dest.is_empty() {
        "./"
    } else {
        dest
    };
    normalize_path(cwd, dest, true)
}

/// `user[:group]` as a file op owner (numbers are ids).
fn chown(spec: &str) -> Chown {
    let one = |s: &str| match s.parse::<u32>() {
        Ok(id) => pb::user_opt::User::ById(id),
        Err(_) => pb::user_opt::User::ByName(pb::NamedUserOpt {
            name: s.to_owned(),
            input: -1,
        }),
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    Chown {
        user: Some(one(user)),
        group: group.map(one),
    }
}

/// Formats a duration like Go's `time.Duration.String`.
fn go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let hours = nanos / 3_600_000_000_000;
    let rest = nanos % 3_600_000_000_000;
    let minutes = rest / 60_000_000_000;
    let seconds = rest % 60_000_000_000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", trim_fraction(seconds, 1_000_000_000)));
    out
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = unit.to_string().len() - 1;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

fn health_string(h: &HealthConfig) -> String {
    format!(
        "{{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        h.test.join(" "),
        go_duration(h.interval),
        go_duration(h.timeout),
        go_duration(h.start_period),
        go_duration(h.start_interval),
        h.retries
    )
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The signals `STOPSIGNAL` accepts by name (Linux numbering), without `SIG`.
const SIGNALS: [&str; 31] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM",
];

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return n > 0 && n < 65;
    }
    let upper = s.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.contains(&name)
        || name
            .strip_prefix("RTMIN")
            .or_else(|| name.strip_prefix("RTMAX"))
            .is_some_and(|r| {
                r.is_empty() || r.trim_start_matches(['+', '-']).parse::<u32>().is_ok()
            })
}

/// `EXPOSE` port specifications as `port/proto` keys (ranges expanded).
fn parse_ports(specs: &[String], location: &Location) -> Result<Vec<String>, ConvertError> {
    let mut out = Vec::new();
    for spec in specs {
        let bad = || {
            at(
                location,
                ConvertErrorKind::InvalidPort { port: spec.clone() },
            )
        };
        // `ip:hostPort:containerPort` forms keep only the container port.
        let raw = spec.rsplit(':').next().unwrap_or(spec);
        let (ports, proto) = raw.split_once('/').unwrap_or((raw, "tcp"));
        let (start, end) = match ports.split_once('-') {
            Some((a, b)) => (
                a.parse::<u32>().map_err(|_| bad())?,
                b.parse::<u32>().map_err(|_| bad())?,
            ),
            None => {
                let p = ports.parse::<u32>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if start > end || end > 65535 {
            return Err(bad());
        }
        for p in start..=end {
            out.push(format!("{p}/{}", proto.to_lowercase()));
        }
    }
    Ok(out)
}

/// Dispatching one instruction of one stage.
struct Step<'p, 'd> {
    plan: &'p Plan<'p>,
    stage: &'p StagePlan,
    d: &'d mut Dispatched,
    done: &'d [Option<Dispatched>],
    context: &'d State,
    context_paths: &'d mut BTreeSet<String>,
    onbuild: bool,
}

impl Step<'_, '_> {
    fn expand(&self, word: &str, location: &Location) -> Result<String, ConvertError> {
        self.plan
            .lexer
            .process_word(word, &self.d.env)
            .map_err(|e| at(location, e))
    }

    /// The op name of an instruction as BuildKit shows it.
    fn op_name(&mut self, code: &str, raw: bool) -> String {
        let lexer = if raw {
            (*self.plan.lexer).raw_quotes(true).skip_unset_env(true)
        } else {
            *self.plan.lexer
        };
        let text = lexer
            .process_word(code, &self.d.env)
            .unwrap_or_else(|_| code.to_owned());
        let text = match text.split_once(' ') {
            Some((first, rest)) => format!("{} {rest}", first.to_uppercase()),
            None => text.to_uppercase(),
        };
        let text = if self.onbuild {
            format!("ONBUILD {text}")
        } else {
            text
        };
        // `ONBUILD` goes after the counter: `[stage 1/2] ONBUILD RUN ...`.
        self.d.prefix(self.stage, &text)
    }

    fn with_shell(&self, args: &[String]) -> Vec<String> {
        let mut shell = if self.d.image.config.shell.is_empty() {
            vec!["/bin/sh".to_owned(), "-c".to_owned()]
        } else {
            self.d.image.config.shell.clone()
        };
        shell.push(args.join(" "));
        shell
    }

    fn source_state(
        &self,
        index: usize,
        location: &Location,
        from: &str,
        mount: Option<&str>,
    ) -> Result<State, ConvertError> {
        match &self.done[index] {
            Some(d) => Ok(d.state.clone()),
            None => Err(at(
                location,
                match mount {
                    Some(target) => ConvertErrorKind::MountFromLaterStage {
                        from: from.to_owned(),
                        target: target.to_owned(),
                    },
                    None => ConvertErrorKind::CopyFromLaterStage {
                        from: from.to_owned(),
                        stage: self.stage.display_name.clone(),
                    },
                },
            )),
        }
    }

    fn dispatch(&mut self, cmd: &Command, sources: &[Option<usize>]) -> Result<(), ConvertError> {
        let loc = &cmd.location;
        match &cmd.kind {
            CommandKind::Env(pairs) => {
                let mut message = "ENV".to_owned();
                for pair in pairs {
                    let key = self.expand(&pair.key, loc)?;
                    let value = self.expand(&pair.value, loc)?;
                    message.push_str(&format!(" {key}={value}"));
                    self.d.state = self.d.state.clone().env(&key, &value);
                    set_env(&mut self.d.env, &key, &value);
                    add_env(&mut self.d.image.config.env, &key, &value);
                }
                self.d.history(message, false);
            }
            CommandKind::Label(pairs) => {
                let mut message = "LABEL".to_owned();
                for pair in pairs {
                    let key = self.expand(&pair.key, loc)?;
                    let value = self.expand(&pair.value, loc)?;
                    message.push_str(&format!(" {key}={value}"));
                    self.d.image.config.labels.insert(key, value);
                }
                self.d.history(message, false);
            }
            CommandKind::Maintainer(m) => {
                let m = self.expand(m, loc)?;
                self.d.image.author = Some(m.clone());
                self.d.history(format!("MAINTAINER {m}"), false);
            }
            CommandKind::Onbuild(expression) => {
                self.d.image.config.on_build.push(expression.clone());
            }
            CommandKind::Workdir(path) => {
                let path = self.expand(path, loc)?;
                let wd = normalize_workdir(&self.d.image.config.working_dir, &path);
                self.d.image.config.working_dir = wd.clone();
                self.d.cwd = wd.clone();
                self.d.state = self.d.state.clone().cwd(&wd);
                let layer = wd != "/";
                if layer {
                    let name = self.op_name(&cmd.code, false);
                    let user = self.d.image.config.user.clone();
                    let options = MkdirOptions {
                        make_parents: true,
                        owner: (!user.is_empty()).then(|| chown(&user)),
                        ..MkdirOptions::default()
                    };
                    self.d.state = self
                        .d
                        .state
                        .file(FileAction::mkdir(&wd, 0o755, options))
                        .with_custom_name(&name);
                }
                self.d.history(format!("WORKDIR {wd}"), layer);
            }
            CommandKind::User(user) => {
                let user = self.expand(user, loc)?;
                self.d.state = self.d.state.clone().user(&user);
                self.d.image.config.user = user.clone();
                self.d.history(format!("USER {user}"), false);
            }
            CommandKind::Volume(volumes) => {
                let mut expanded = Vec::new();
                for v in volumes {
                    let v = self.expand(v, loc)?;
                    if v.is_empty() {
                        return Err(at(loc, ConvertErrorKind::EmptyVolume));
                    }
                    self.d.image.config.volumes.insert(v.clone(), Empty {});
                    expanded.push(v);
                }
                self.d
                    .history(format!("VOLUME [{}]", expanded.join(" ")), false);
            }
            CommandKind::StopSignal(signal) => {
                let signal = self.expand(signal, loc)?;
                if !valid_signal(&signal) {
                    return Err(at(loc, ConvertErrorKind::InvalidSignal { signal }));
                }
                self.d.image.config.stop_signal = signal.clone();
                self.d.history(format!("STOPSIGNAL {signal}"), false);
            }
            CommandKind::Shell(shell) => {
                self.d.image.config.shell = shell.clone();
                self.d
                    .history(format!("SHELL [{}]", shell.join(" ")), false);
            }
            CommandKind::Expose(ports) => {
                let mut words = Vec::new();
                for p in ports {
                    words.extend(
                        self.plan
                            .lexer
                            .process_words(p, &self.d.env)
                            .map_err(|e| at(loc, e))?,
                    );
                }
                let parsed = parse_ports(&words, loc)?;
                for p in &parsed {
                    self.d
                        .image
                        .config
                        .exposed_ports
                        .insert(p.clone(), Empty {});
                }
                self.d
                    .history(format!("EXPOSE [{}]", parsed.join(" ")), false);
            }
            CommandKind::Cmd(line) => {
                let args = if line.prepend_shell {
                    self.with_shell(&line.cmd_line)
                } else {
                    line.cmd_line.clone()
                };
                self.d
                    .history(format!("CMD {}", go_quote_list(&args)), false);
                self.d.image.config.cmd = Some(args);
                self.d.image.config.args_escaped = true;
                self.d.cmd_set = true;
            }
            CommandKind::Entrypoint(line) => {
                let args = if line.prepend_shell {
                    self.with_shell(&line.cmd_line)
                } else {
                    line.cmd_line.clone()
                };
                self.d
                    .history(format!("ENTRYPOINT {}", go_quote_list(&args)), false);
                self.d.image.config.entrypoint = Some(args);
                if !self.d.cmd_set {
                    self.d.image.config.cmd = None;
                }
            }
            CommandKind::Healthcheck(h) => {
                let config = Healthcheck {
                    test: h.test.clone(),
                    interval: nanos(h.interval),
                    timeout: nanos(h.timeout),
                    start_period: nanos(h.start_period),
                    start_interval: nanos(h.start_interval),
                    retries: h.retries,
                };
                self.d.image.config.healthcheck = Some(config);
                self.d
                    .history(format!("HEALTHCHECK {}", health_string(h)), false);
            }
            CommandKind::Arg(args) => self.dispatch_arg(args, loc)?,
            CommandKind::Run(run) => self.dispatch_run(cmd, run, sources)?,
            CommandKind::Copy(copy) => {
                let source = match sources.first().copied().flatten() {
                    Some(i) => Some(self.source_state(i, loc, &copy.from, None)?),
                    None => None,
                };
                self.dispatch_copy(cmd, &CopyParams::from_copy(copy), source)?;
            }
            CommandKind::Add(add) => {
                let params = CopyParams {
                    sources: add.sources.clone(),
                    chown: add.chown.clone(),
                    chmod: add.chmod.clone(),
                    link: add.link,
                    parents: false,
                    exclude: add.exclude.clone(),
                    is_add: true,
                    checksum: add.checksum.clone(),
                    unpack: add.unpack,
                    keep_git_dir: add.keep_git_dir,
                };
                self.dispatch_copy(cmd, &params, None)?;
            }
        }
        Ok(())
    }

    fn dispatch_arg(&mut self, args: &[ArgDefinition], loc: &Location) -> Result<(), ConvertError> {
        let mut parts = Vec::new();
        for arg in args {
            let given = self.plan.options.build_args.get(&arg.key);
            let mut value = arg.value.clone();
            if value.is_none() && given.is_none() {
                if let Some(v) = crate::shell::Env::get(&self.plan.global_args, &arg.key) {
                    value = Some(v.to_owned());
                }
            }
            if let Some(v) = given {
                value = Some(v.clone());
            } else if let Some(v) = &arg.value {
                value = Some(self.expand(v, loc)?);
            }
            if let Some(v) = &value {
                self.d.state = self.d.state.clone().env(&arg.key, v);
                set_env(&mut self.d.env, &arg.key, v);
            }
            self.d.build_args.push((arg.key.clone(), value.clone()));
            parts.push(match &value {
                Some(v) => format!("{}={v}", arg.key),
                None => arg.key.clone(),
            });
        }
        self.d.history(format!("ARG {}", parts.join(" ")), false);
        Ok(())
    }

    fn dispatch_run(
        &mut self,
        cmd: &Command,
        run: &RunCommand,
        sources: &[Option<usize>],
    ) -> Result<(), ConvertError> {
        let loc = &cmd.location;
        let mut custom = cmd.code.clone();
        let mut args = run.cmd.cmd_line.clone();
        let mut mounts: Vec<(String, State, MountOptions)> = Vec::new();
        if let Some(first) = run.cmd.files.first() {
            let heredoc = args
                .first()
                .and_then(|a| parse_heredoc(a).ok().flatten())
                .filter(|_| args.len() == 1 && run.cmd.prepend_shell);
            if heredoc.is_some() {
                let data = if first.chomp {
                    chomp_heredoc_content(&first.data)
                } else {
                    first.data.clone()
                };
                if data.starts_with("#!") {
                    let file = scratch()
                        .file(FileAction::mkfile(
                            &format!("/{}", first.name),
                            0o755,
                            data.as_bytes(),
                        ))
                        .with_custom_name("[internal] preparing inline document");
                    mounts.push((
                        "/dev/pipes/".to_owned(),
                        file,
                        MountOptions {
                            readonly: true,
                            selector: Some("/".to_owned()),
                            ..MountOptions::default()
                        },
                    ));
                    args = vec![format!("/dev/pipes/{}", first.name)];
                } else {
                    args = vec![data];
                }
                let trimmed = first.data.trim();
                let normalized = trimmed.replace("\r\n", "\n");
                let mut lines = normalized.split('\n');
                let mut summary = lines.next().unwrap_or_default().to_owned();
                if lines.next().is_some() {
                    summary.push_str("...");
                }
                custom.push_str(&format!(" ({summary})"));
            } else {
                let mut text = args.first().cloned().unwrap_or_default();
                for file in &run.cmd.files {
                    text.push('\n');
                    text.push_str(&file.data);
                    text.push_str(&file.name);
                }
                args = vec![text];
            }
        }
        if run.cmd.prepend_shell {
            args = self.with_shell(&args);
        }

        // Mounts, expanded against the stage environment.
        let env = self.d.env.clone();
        let lexer = *self.plan.lexer;
        let mut expand = |s: &str| lexer.process_word(s, &env);
        let parsed: Vec<Mount> = run.mounts(&mut expand).map_err(|e| at(loc, e))?;
        // Secrets exposed as environment variables: (id, variable, optional).
        let mut secret_envs: Vec<(String, String, bool)> = Vec::new();
        let mut ssh_count = 0usize;
        let mut first_ssh: Option<String> = None;
        for (i, mount) in parsed.iter().enumerate() {
            let mut state = match sources.get(i).copied().flatten() {
                Some(j) => self.source_state(j, loc, &mount.from, Some(&mount.target))?,
                None if mount.kind == MountType::Cache => scratch(),
                None => self.context.clone(),
            };
            let mut options = MountOptions::default();
            match mount.kind {
                MountType::Secret => {
                    let mut id = mount.cache_id.clone();
                    if !mount.source.is_empty() {
                        id = mount.source.clone();
                    }
                    if id.is_empty() {
                        if mount.target.is_empty() {
                            return Err(at(loc, ConvertErrorKind::SecretWithoutTarget));
                        }
                        id = mount
                            .target
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                    }
                    if let Some(name) = &mount.env {
                        secret_envs.push((id.clone(), name.clone(), !mount.required));
                        // With `env=` alone the secret is only in the environment.
                        if mount.target.is_empty() {
                            continue;
                        }
                    }
                    let target = if mount.target.is_empty() {
                        format!("/run/secrets/{}", id.rsplit('/').next().unwrap_or_default())
                    } else {
                        mount.target.clone()
                    };
                    options.secret = Some(pb::SecretOpt {
                        id,
                        uid: mount.uid.unwrap_or(0),
                        gid: mount.gid.unwrap_or(0),
                        mode: mount.mode.unwrap_or(0o400),
                        optional: !mount.required,
                    });
                    mounts.push((target, scratch(), options));
                    continue;
                }
                MountType::Ssh => {
                    if !mount.source.is_empty() {
                        return Err(at(loc, ConvertErrorKind::SshSource));
                    }
                    // BuildKit's `AddSSHSocket`: socket targets default to
                    // `/run/buildkit/ssh_agent.N`, N counting the step's ssh mounts.
                    let target = if mount.target.is_empty() {
                        format!("/run/buildkit/ssh_agent.{ssh_count}")
                    } else {
                        mount.target.clone()
                    };
                    ssh_count += 1;
                    options.ssh = Some(pb::SshOpt {
                        id: mount.cache_id.clone(),
                        uid: mount.uid.unwrap_or(0),
                        gid: mount.gid.unwrap_or(0),
                        mode: mount.mode.unwrap_or(0o600),
                        optional: !mount.required,
                    });
                    first_ssh.get_or_insert_with(|| target.clone());
                    mounts.push((target, scratch(), options));
                    continue;
                }
                MountType::Tmpfs => {
                    state = scratch();
                    options.tmpfs = Some(mount.size_limit);
                }
                _ => {}
            }
            if mount.read_only {
                options.readonly = true;
            }
            if mount.kind == MountType::Cache {
                let sharing = match mount.cache_sharing {
                    Some(CacheSharing::Private) => pb::CacheSharingOpt::Private,
                    Some(CacheSharing::Locked) => pb::CacheSharingOpt::Locked,
                    _ => pb::CacheSharingOpt::Shared,
                };
                let id = if mount.cache_id.is_empty() {
                    clean_path(&mount.target)
                } else {
                    mount.cache_id.clone()
                };
                options.cache = Some((format!("/{id}"), sharing));
            }
            let target = if mount.target.starts_with('/') {
                clean_path(&mount.target)
            } else {
                clean_path(&format!("/{}/{}", self.d.cwd, mount.target))
            };
            if target == "/" {
                return Err(at(loc, ConvertErrorKind::InvalidMountTarget { target }));
            }
            let source = clean_path(&format!("/{}", mount.source));
            if source != "/" {
                options.selector = Some(source.clone());
            } else if mount.uid.is_some() || mount.gid.is_some() || mount.mode.is_some() {
                // BuildKit's setCacheUIDGID: the mount shows a `/cache` directory made with
                // the requested owner and mode on top of the source.
                let owner = Chown {
                    user: Some(pb::user_opt::User::ById(mount.uid.unwrap_or(0))),
                    group: Some(pb::user_opt::User::ById(mount.gid.unwrap_or(0))),
                };
                state = state
                    .file(FileAction::mkdir(
                        "/cache",
                        mount.mode.unwrap_or(0o755),
                        MkdirOptions {
                            owner: Some(owner),
                            ..MkdirOptions::default()
                        },
                    ))
                    .with_custom_name("[internal] settings cache mount permissions");
                options.selector = Some("/cache".to_owned());
            }
            // As in BuildKit, a mount without `from` reads its source from the context (a
            // cache without `from` starts empty instead; a tmpfs counts as reading `/`).
            if mount.kind != MountType::Cache && sources.get(i).copied().flatten().is_none() {
                self.context_paths.insert(source);
            }
            mounts.push((target, state, options));
        }

        // As BuildKit's `withSecretEnvMask`: secret variables show as `****` in the op's name.
        let name = if secret_envs.is_empty() {
            self.op_name(&custom, true)
        } else {
            let saved = self.d.env.clone();
            for (_, variable, _) in &secret_envs {
                set_env(&mut self.d.env, variable, "****");
            }
            let name = self.op_name(&custom, true);
            self.d.env = saved;
            name
        };
        let mut exec = self.d.state.run(args.clone());
        exec = exec.remove_mount_stubs_recursive(true);
        for (dest, state, options) in mounts {
            exec = exec.with_mount(&dest, state, options);
        }
        for (id, name, optional) in &secret_envs {
            exec = exec.secret_env(id, name, *optional);
        }
        // As BuildKit's exec op does: the first agent socket is `SSH_AUTH_SOCK` unless the
        // environment sets it already.
        if let Some(socket) = first_ssh {
            if crate::shell::Env::get(&self.d.env, "SSH_AUTH_SOCK").is_none() {
                exec = exec.env("SSH_AUTH_SOCK", &socket);
            }
        }
        match run.network {
            NetworkMode::Default => {}
            NetworkMode::None => exec = exec.network(pb::NetMode::None),
            NetworkMode::Host => exec = exec.network(pb::NetMode::Host),
        }
        if run.security == SecurityMode::Insecure {
            exec = exec.security(pb::SecurityMode::Insecure);
        }
        for ulimit in &self.plan.options.ulimits {
            exec = exec.add_ulimit(&ulimit.name, ulimit.soft, ulimit.hard);
        }
        if let Some(parent) = &self.plan.options.cgroup_parent {
            exec = exec.cgroup_parent(parent);
        }
        let code = cmd.code.clone();
        self.d.state = exec.root().with_metadata(|m| {
            m.description.insert(COMMAND_KEY.to_owned(), code);
            m.description.insert(kiln_llb::CUSTOM_NAME.to_owned(), name);
            m.caps.insert("exec.meta.setsdefaultpath".to_owned(), true);
        });

        // History: `RUN |N K=V ... args`, the stage's arguments first.
        let mut build_env: Vec<String> = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (key, value) in &self.d.build_args {
            let v = crate::shell::Env::get(&self.d.env, key)
                .map(str::to_owned)
                .or_else(|| value.clone())
                .unwrap_or_default();
            let entry = format!("{key}={v}");
            match seen.get(key) {
                Some(&i) => build_env[i] = entry,
                None => {
                    seen.insert(key.clone(), build_env.len());
                    build_env.push(entry);
                }
            }
        }
        let mut parts = Vec::new();
        if !build_env.is_empty() {
            parts.push(format!("|{}", build_env.len()));
            parts.extend(build_env);
        }
        parts.extend(args);
        self.d
            .history(format!("RUN {} # buildkit", parts.join(" ")), true);
        Ok(())
    }

    /// The git source of `ADD <git url>`, as BuildKit's `dispatchCopy` makes it.
    fn git_source(
        &self,
        loc: &Location,
        params: &CopyParams,
        reference: &git::GitRef,
        name: &str,
    ) -> Result<State, ConvertError> {
        let mut keep = params.keep_git_dir;
        if let (Some(flag), Some(query)) = (keep, reference.keep_git_dir) {
            if flag != query {
                return Err(at(loc, ConvertErrorKind::InconsistentKeepGitDir));
            }
        }
        if reference.keep_git_dir.is_some() {
            keep = reference.keep_git_dir;
        }
        let mut checksum = params.checksum.clone();
        if !checksum.is_empty() && !reference.checksum.is_empty() && checksum != reference.checksum
        {
            return Err(at(
                loc,
                ConvertErrorKind::GitChecksumMismatch {
                    flag: checksum,
                    url: reference.checksum.clone(),
                },
            ));
        }
        if !reference.checksum.is_empty() {
            checksum = reference.checksum.clone();
        }
        let fragment = if reference.subdir.is_empty() {
            reference.reference.clone()
        } else {
            format!("{}:{}", reference.reference, reference.subdir)
        };
        Ok(git_with(
            &reference.remote,
            &fragment,
            GitOptions {
                keep_git_dir: keep.unwrap_or(false),
                checksum: (!checksum.is_empty()).then_some(checksum),
                skip_submodules: reference.submodules == Some(false),
                fetch_by_commit: reference.fetch_by_commit,
            },
        )
        .with_custom_name(name))
    }

    fn dispatch_copy(
        &mut self,
        cmd: &Command,
        params: &CopyParams,
        from: Option<State>,
    ) -> Result<(), ConvertError> {
        let loc = &cmd.location;
        let expand = |s: &str| self.expand(s, loc);
        let dest_raw = expand(&params.sources.dest_path)?;
        let chown_spec = expand(&params.chown)?;
        let chmod_spec = expand(&params.chmod)?;
        let mut srcs = Vec::new();
        for s in &params.sources.source_paths {
            srcs.push(expand(s)?);
        }
        let dest = dest_path(&self.d.cwd, &dest_raw);
        let owner = (!chown_spec.is_empty()).then(|| chown(&chown_spec));
        let (mode, mode_str) = chmod_option(&chmod_spec).map_err(|kind| at(loc, kind))?;
        if !params.checksum.is_empty() {
            if !params.is_add {
                return Err(at(loc, ConvertErrorKind::ChecksumForCopy));
            }
            if srcs.len() != 1 {
                return Err(at(loc, ConvertErrorKind::ChecksumMultipleSources));
            }
            let remote = matches!(git::parse(&srcs[0]), git::Parsed::Git(_))
                || srcs[0].starts_with("http://")
                || srcs[0].starts_with("https://");
            if !remote {
                return Err(at(loc, ConvertErrorKind::ChecksumNeedsRemote));
            }
        }
        let mut message = if params.is_add { "ADD" } else { "COPY" }.to_owned();
        if params.parents {
            message.push_str(" --parents");
        }
        if !chown_spec.is_empty() {
            message.push_str(&format!(" --chown={chown_spec}"));
        }
        if !chmod_spec.is_empty() {
            message.push_str(&format!(" --chmod={chmod_spec}"));
        }
        let name = self.op_name(&cmd.code, false);
        let source = from.clone().unwrap_or_else(|| self.context.clone());
        let mut action: Option<FileAction> = None;
        let push =
            |action: &mut Option<FileAction>, state: &State, src: &str, opts: CopyOptions| {
                *action = Some(match action.take() {
                    None => FileAction::copy(state, src, &dest, opts),
                    Some(a) => a.then_copy(state, src, &dest, opts),
                });
            };
        for src in &srcs {
            message.push_str(&format!(" {src}"));
            match git::parse(src) {
                git::Parsed::Invalid(message) => {
                    return Err(at(loc, ConvertErrorKind::InvalidGitRef { message }));
                }
                git::Parsed::Git(reference) => {
                    if !params.is_add {
                        return Err(at(loc, ConvertErrorKind::GitForCopy));
                    }
                    let repo = self.git_source(loc, params, &reference, &name)?;
                    push(
                        &mut action,
                        &repo,
                        "/",
                        CopyOptions {
                            owner: owner.clone(),
                            mode,
                            mode_str: mode_str.clone(),
                            create_dest_path: true,
                            exclude_patterns: params.exclude.clone(),
                            ..CopyOptions::default()
                        },
                    );
                    // As in BuildKit, an ADD source that is not an http(s) URL counts as a
                    // context path, even a git one.
                    if from.is_none() && !src.starts_with("http://") && !src.starts_with("https://")
                    {
                        self.context_paths.insert(clean_path(&format!("/{src}")));
                    }
                    continue;
                }
                git::Parsed::NotGit => {}
            }
            let is_url = src.starts_with("http://") || src.starts_with("https://");
            if is_url {
                if !params.is_add {
                    return Err(at(loc, ConvertErrorKind::UrlForCopy));
                }
                let path_part = src
                    .split_once("://")
                    .map(|(_, r)| r)
                    .unwrap_or(src)
                    .split(['?', '#'])
                    .next()
                    .unwrap_or_default();
                let base = path_part
                    .split_once('/')
                    .map(|(_, p)| p.rsplit('/').next().unwrap_or_default())
                    .unwrap_or_default();
                let file = if base.is_empty() || base == "." {
                    "__unnamed__".to_owned()
                } else {
                    base.to_owned()
                };
                let checksum =
                    if params.checksum.is_empty() {
                        None
                    } else {
                        Some(params.checksum.parse().map_err(|_| {
                            unsupported(loc, &format!("checksum {}", params.checksum))
                        })?)
                    };
                let http = http_with(
                    src,
                    HttpOptions {
                        checksum,
                        filename: Some(file.clone()),
                        chmod: None,
                    },
                )
                .with_custom_name(&name);
                push(
                    &mut action,
                    &http,
                    &file,
                    CopyOptions {
                        owner: owner.clone(),
                        mode,
                        mode_str: mode_str.clone(),
                        create_dest_path: true,
                        attempt_unpack_docker_compatibility: params.unpack.unwrap_or(false),
                        exclude_patterns: params.exclude.clone(),
                        ..CopyOptions::default()
                    },
                );
                continue;
            }
            let mut src_path = src.clone();
            let mut include = Vec::new();
            let mut required = Vec::new();
            if params.parents {
                let (parent, pattern) = match src.split_once("/./") {
                    Some((p, pat)) => (p.to_owned(), pat.to_owned()),
                    None => ("/".to_owned(), src.clone()),
                };
                // `NormalizePath` keeps an absolute pattern as written (`/a/b/.`).
                let pattern = if pattern.starts_with('/') {
                    pattern
                } else {
                    normalize_path("/", &pattern, false)
                };
                // Only a path without wildcards must exist (BuildKit's `requiredPaths`).
                if !contains_wildcards(&parent) && !contains_wildcards(&pattern) {
                    required.push(normalize_path("/", &format!("{parent}/{pattern}"), false));
                }
                src_path = parent;
                include.push(pattern.trim_start_matches('/').to_owned());
            }
            let normalized = normalize_path("/", &src_path, false);
            if from.is_none() {
                self.context_paths.insert(clean_path(&format!("/{src}")));
            }
            push(
                &mut action,
                &source,
                &normalized,
                CopyOptions {
                    owner: owner.clone(),
                    mode,
                    mode_str: mode_str.clone(),
                    follow_symlink: true,
                    dir_copy_contents: true,
                    attempt_unpack_docker_compatibility: params.unpack.unwrap_or(params.is_add),
                    create_dest_path: true,
                    allow_wildcard: true,
                    allow_empty_wildcard: true,
                    include_patterns: include,
                    exclude_patterns: params.exclude.clone(),
                    required_paths: required,
                    ..CopyOptions::default()
                },
            );
        }
        for content in &params.sources.source_contents {
            message.push_str(&format!(" <<{}", content.path));
            let data = if content.expand {
                Lexer::new('\\')
                    .skip_process_quotes(true)
                    .process_word(&content.data, &self.d.env)
                    .map_err(|e| at(loc, e))?
            } else {
                content.data.clone()
            };
            // Relative to the root, as the scratch state's working directory is `/`.
            let inline_path = clean_path(&format!("/{}", content.path));
            let file = scratch()
                .file(FileAction::mkfile(&inline_path, 0o644, data.as_bytes()))
                .with_custom_name("[internal] preparing inline document");
            push(
                &mut action,
                &file,
                &inline_path,
                CopyOptions {
                    owner: owner.clone(),
                    mode,
                    mode_str: mode_str.clone(),
                    create_dest_path: true,
                    exclude_patterns: params.exclude.clone(),
                    ..CopyOptions::default()
                },
            );
        }
        message.push_str(&format!(" {}", params.sources.dest_path));
        let Some(action) = action else {
            return Ok(());
        };
        if params.link && chmod_spec.is_empty() {
            let copied = scratch()
                .platform(self.plan.options.platform.clone())
                .file(action)
                .with_custom_name(&name);
            // The merge shows as `LINK <instruction>` under the same counter.
            self.d.cmd_index -= 1;
            let link_name = {
                let text = name
                    .split_once("] ")
                    .map(|(head, rest)| format!("{head}] LINK {rest}"))
                    .unwrap_or_else(|| format!("LINK {name}"));
                self.d.cmd_index += 1;
                text
            };
            self.d.state = merge(&[self.d.state.clone(), copied]).with_custom_name(&link_name);
        } else {
            self.d.state = self.d.state.file(action).with_custom_name(&name);
        }
        self.d.history(format!("{message} # buildkit"), true);
        Ok(())
    }
}

/// The parts of `COPY` and `ADD` the copy logic needs.
struct CopyParams {
    sources: SourcesAndDest,
    chown: String,
    chmod: String,
    link: bool,
    parents: bool,
    exclude: Vec<String>,
    is_add: bool,
    checksum: String,
    unpack: Option<bool>,
    keep_git_dir: Option<bool>,
}

impl CopyParams {
    fn from_copy(copy: &CopyCommand) -> Self {
        Self {
            sources: copy.sources.clone(),
            chown: copy.chown.clone(),
            chmod: copy.chmod.clone(),
            link: copy.link,
            parents: copy.parents,
            exclude: copy.exclude.clone(),
            is_add: false,
            checksum: String::new(),
            unpack: None,
            keep_git_dir: None,
        }
    }
}

/// `--chmod`: an octal mode, or a symbolic one passed on as `modeStr` (BuildKit's rules: a
/// value that looks numeric but is not octal up to 07777 is an invalid chmod parameter).
fn chmod_option(spec: &str) -> Result<(Option<i32>, Option<String>), ConvertErrorKind> {
    if spec.is_empty() {
        return Ok((None, None));
    }
    let invalid = || ConvertErrorKind::InvalidChmod {
        value: spec.to_owned(),
    };
    if let Ok(m) = u32::from_str_radix(spec, 8) {
        if m > 0o7777 {
            return Err(invalid());
        }
        return Ok((Some(m as i32), None));
    }
    if spec.as_bytes()[0].is_ascii_digit() {
        return Err(invalid());
    }
    if kiln_llb::ModeSet::parse(spec).is_err() {
        return Err(ConvertErrorKind::InvalidModeString {
            message: "invalid syntax".to_owned(),
        });
    }
    Ok((None, Some(spec.to_owned())))
}

/// BuildKit's `containsWildcards`: `*`, `?` or `[` not escaped by `\`.
fn contains_wildcards(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'*' | b'?' | b'[' => return true,
            b'\\' => i += 1,
            _ => {}
        }
        i += 1;
    }
    false
}

/// BuildKit's `addEnv`: replaces the entry for `key` in place, or appends one.
fn add_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    for e in env.iter_mut() {
        if e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key {
            *e = entry;
            return;
        }
    }
    env.push(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_like_buildkit() {
        assert_eq!(dest_path("/app", "."), "/app/");
        assert_eq!(dest_path("/app", "sub"), "/app/sub");
        assert_eq!(dest_path("/app", "sub/"), "/app/sub/");
        assert_eq!(dest_path("/", "/dst2/"), "/dst2/");
        assert_eq!(dest_path("/", "/"), "/");
        assert_eq!(normalize_path("/", "dir/", false), "/dir");
        assert_eq!(normalize_workdir("/test1", "test2"), "/test1/test2");
        assert_eq!(normalize_workdir("/a", "/b/../c"), "/c");
    }

    #[test]
    fn go_durations_format() {
        use std::time::Duration;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(5)), "5ms");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn ports_and_signals() {
        let loc = Location {
            file: "Dockerfile".into(),
            start_line: 1,
            end_line: 1,
            column: None,
            source: vec![],
        };
        assert_eq!(
            parse_ports(&["80".into(), "53/UDP".into(), "8000-8001".into()], &loc).unwrap(),
            ["80/tcp", "53/udp", "8000/tcp", "8001/tcp"]
        );
        assert!(parse_ports(&["x".into()], &loc).is_err());
        assert!(valid_signal("SIGTERM"));
        assert!(valid_signal("9"));
        assert!(!valid_signal("SIGBOGUS"));
    }
}
