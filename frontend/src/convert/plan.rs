//! Steps 1 to 4 of the conversion: the [`Plan`] of the build before any op is made. It expands
//! the meta arguments and each `FROM`, finds the target stage, links stages through
//! `COPY --from` and `RUN --mount=from=` (adding the images these name as source-only
//! entries), rejects loops, resolves the base images of the needed stages through the
//! [`ImageMetaResolver`] and adds their `ONBUILD` triggers. What decides which stages and
//! images a build needs, and in which order, goes here.

use std::collections::BTreeSet;

use kiln_llb::{normalize_image_ref, pb};

use super::{
    ConvertError, ConvertErrorKind, ConvertOptions, ImageConfig, ImageMetaResolver, NamedContext,
    at, build_error, set_env,
};
use crate::error::Location;
use crate::instructions::{ArgDefinition, Command, CommandKind, Stage};
use crate::lint::{self, LintConfig, Linter};
use crate::parser::Parser;
use crate::shell::{Expansion, Lexer};

/// What a stage is built on.
#[derive(Debug, Clone)]
pub(super) enum Base {
    Scratch,
    Stage(usize),
    Image(String),
    /// A named context that is a directory of the client: the local source of this name.
    Local(String),
}

/// One stage (or an image named by `COPY --from`/`--mount=from=`) before dispatching.
#[derive(Debug, Clone)]
pub(super) struct StagePlan {
    /// The stage's name in progress output (`stage-N` when unnamed, empty for a lone stage).
    pub(super) display_name: String,
    /// The name to find it by (`AS name`), empty when unnamed or an image.
    pub(super) name: String,
    pub(super) stage: Stage,
    pub(super) base: Base,
    /// Stages this one copies or mounts from, with the instruction doing it.
    pub(super) deps: Vec<usize>,
    /// `ONBUILD` triggers of the base, run first.
    pub(super) onbuild: Vec<Command>,
    /// The source per instruction: `COPY --from`, and each `RUN --mount` with `from=`.
    pub(super) sources: Vec<Vec<Option<usize>>>,
    /// The resolved base image: normalised reference with digest, and configuration.
    pub(super) resolved: Option<(String, ImageConfig)>,
    /// Counted commands (progress `[n/total]`).
    pub(super) total: usize,
    /// An image used only as a source, not a `FROM` stage.
    pub(super) source_only: bool,
    /// The platform the stage is built for: `FROM --platform`, else its base stage's, else
    /// the target platform.
    pub(super) platform: pb::Platform,
    /// The platform in front of the stage's step names when several platforms are built
    /// (`[linux/arm64 stage-1 2/3]`, as BuildKit names them); empty otherwise.
    pub(super) platform_label: String,
}

/// The base a named context gives `name`: the context named so, or one named by the same
/// image reference (`alpine` and `docker.io/library/alpine:latest` are one name).
fn named_base(options: &ConvertOptions, name: &str) -> Option<Base> {
    let context = options.named_contexts.get(name).or_else(|| {
        let normalized = normalize_image_ref(name);
        options
            .named_contexts
            .iter()
            .find(|(key, _)| normalize_image_ref(key) == normalized)
            .map(|(_, context)| context)
    })?;
    Some(match context {
        NamedContext::Image(reference) => Base::Image(reference.clone()),
        NamedContext::Local(local) => Base::Local(local.clone()),
    })
}

pub(super) struct Plan<'a> {
    pub(super) options: &'a ConvertOptions,
    pub(super) lexer: &'a Lexer,
    pub(super) resolver: &'a dyn ImageMetaResolver,
    pub(super) linter: &'a Linter,
    pub(super) global_args: Vec<(String, String)>,
    pub(super) stages: Vec<StagePlan>,
    pub(super) target: usize,
}

fn platform_string(p: &pb::Platform) -> String {
    let mut s = format!("{}/{}", p.os, p.architecture);
    if !p.variant.is_empty() {
        s.push('/');
        s.push_str(&p.variant);
    }
    s
}

impl<'a> Plan<'a> {
    pub(super) fn new(
        options: &'a ConvertOptions,
        lexer: &'a Lexer,
        stages: Vec<Stage>,
        meta_args: &[ArgDefinition],
        resolver: &'a dyn ImageMetaResolver,
        linter: &'a Linter,
    ) -> Result<Self, ConvertError> {
        let (b, p) = (&options.build_platform, &options.platform);
        let target_name = match &options.target {
            Some(t) => t.clone(),
            None => stages.last().map(|s| s.name.clone()).unwrap_or_default(),
        };
        let mut predefined_args: Vec<(String, String)> = Vec::new();
        let predefined = [
            ("BUILDPLATFORM", platform_string(b)),
            ("BUILDOS", b.os.clone()),
            ("BUILDOSVERSION", b.os_version.clone()),
            ("BUILDARCH", b.architecture.clone()),
            ("BUILDVARIANT", b.variant.clone()),
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
            set_env(&mut predefined_args, k, &v);
        }
        // Meta arguments: build arguments override defaults; defaults see earlier arguments.
        let expand_meta = |build_args: Option<&std::collections::BTreeMap<String, String>>| {
            let mut args = predefined_args.clone();
            for arg in meta_args {
                let value = match build_args.and_then(|b| b.get(&arg.key)) {
                    Some(v) => Some(v.clone()),
                    None => match &arg.value {
                        Some(v) => Some(
                            lexer
                                .process_word(v, &args)
                                .map_err(|e| build_error(e.into()))?,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = value {
                    set_env(&mut args, &arg.key, &v);
                }
            }
            Ok::<_, ConvertError>(args)
        };
        // As BuildKit: the base images must be valid names with the defaults alone too.
        if let Ok(defaults) = expand_meta(None) {
            for stage in &stages {
                let Ok(name) = lexer.process_word(&stage.base_name, &defaults) else {
                    break;
                };
                if !crate::lint::is_valid_reference(&name) {
                    linter.run_with(
                        linter
                            .config()
                            .map(|c| c.with_comments(&stage.comments))
                            .as_ref(),
                        &lint::INVALID_DEFAULT_ARG_IN_FROM,
                        &stage.location,
                        format!(
                            "Default value for ARG {} results in empty or invalid base image name",
                            stage.base_name
                        ),
                    );
                }
            }
        }
        let global_args = expand_meta(Some(&options.build_args))?;
        // The names `FROM` may use: the predefined and the declared meta arguments.
        let declared: Vec<&str> = global_args
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(meta_args.iter().map(|a| a.key.as_str()))
            .collect();

        let count = stages.len();
        let mut plans: Vec<StagePlan> = Vec::with_capacity(count);
        for (i, mut stage) in stages.into_iter().enumerate() {
            let config = linter.config().map(|c| c.with_comments(&stage.comments));
            let undeclared = |unmatched: &std::collections::BTreeSet<String>| {
                for arg in unmatched.iter().filter(|a| !declared.contains(&a.as_str())) {
                    let suggest = crate::flags::suggest(arg, &declared, true);
                    let mut message = format!("FROM argument '{arg}' is not declared");
                    if let Some(suggest) = suggest {
                        message.push_str(&format!(" (did you mean {suggest}?)"));
                    }
                    linter.run_with(
                        config.as_ref(),
                        &lint::UNDEFINED_ARG_IN_FROM,
                        &stage.location,
                        message,
                    );
                }
            };
            let expansion = lexer.process(&stage.base_name, &global_args);
            if let Ok(expansion) = &expansion {
                undeclared(&expansion.unmatched);
            }
            let base_name = expansion
                .map(|e| e.word)
                .map_err(|e| at(&stage.location, e))?;
            if base_name.is_empty() {
                return Err(at(
                    &stage.location,
                    ConvertErrorKind::BlankBaseName {
                        base: stage.base_name.clone(),
                    },
                ));
            }
            let replaced = (!stage.name.is_empty())
                .then(|| named_base(options, &stage.name))
                .flatten();
            let base = if let Some(base) = replaced {
                // A named context of the stage's name stands for the whole stage.
                stage.commands.clear();
                base
            } else if base_name.eq_ignore_ascii_case("scratch") {
                Base::Scratch
            } else if let Some(j) = plans
                .iter()
                .position(|s| !s.name.is_empty() && s.name.eq_ignore_ascii_case(&base_name))
            {
                Base::Stage(j)
            } else if let Some(base) = named_base(options, &base_name) {
                base
            } else {
                Base::Image(base_name.clone())
            };
            stage.base_name = base_name;
            let platform = if stage.platform.is_empty() {
                match base {
                    Base::Stage(j) => plans[j].platform.clone(),
                    _ => options.platform.clone(),
                }
            } else {
                let expansion = lexer
                    .process(&stage.platform, &global_args)
                    .map_err(|e| at(&stage.location, e))?;
                undeclared(&expansion.unmatched);
                lint_platform(&stage, &expansion, &global_args, linter, config.as_ref());
                let text = expansion.word;
                kiln_llb::Platform::parse(&text)
                    .map_err(|e| {
                        at(
                            &stage.location,
                            ConvertErrorKind::InvalidPlatform {
                                text: e.text,
                                reason: e.reason.to_owned(),
                            },
                        )
                    })?
                    .to_pb()
            };
            let mut total = usize::from(matches!(base, Base::Image(_) | Base::Local(_)));
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
                platform_label: if options.multi_platform {
                    platform_string(&platform)
                } else {
                    String::new()
                },
                platform,
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
            linter,
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
        let base = if let Some(base) = named_base(self.options, name) {
            base
        } else if name.eq_ignore_ascii_case("scratch") {
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
            platform: self.options.platform.clone(),
            platform_label: String::new(),
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

    pub(super) fn reachable(&self) -> BTreeSet<usize> {
        if self.options.all_stages {
            return (0..self.stages.len()).collect();
        }
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
    pub(super) fn resolve(&mut self) -> Result<(), ConvertError> {
        let mut initialised = BTreeSet::new();
        loop {
            let reachable = self.reachable();
            for &i in &reachable {
                if let Base::Image(name) = &self.stages[i].base {
                    if self.stages[i].resolved.is_none() {
                        let stage = &self.stages[i];
                        let resolved =
                            self.resolve_image(name, &stage.stage.location, &stage.platform)?;
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
                    Base::Scratch | Base::Local(_) => Vec::new(),
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
        platform: &pb::Platform,
    ) -> Result<(String, ImageConfig), ConvertError> {
        let normalized = normalize_image_ref(name);
        let resolved =
            self.resolver
                .resolve(&normalized, platform)
                .map_err(|e| ConvertError::Resolve {
                    location: Box::new(location.clone()),
                    reference: name.to_owned(),
                    message: kiln_llb::error_chain(&*e),
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
        if !config.os.is_empty()
            && (config.os != platform.os || config.architecture != platform.architecture)
        {
            let actual = pb::Platform {
                os: config.os.clone(),
                architecture: config.architecture.clone(),
                variant: config.variant.clone().unwrap_or_default(),
                ..Default::default()
            };
            self.linter.run(
                &lint::INVALID_BASE_IMAGE_PLATFORM,
                location,
                format!(
                    "Base image {name} was pulled with platform {:?}, expected {:?} for current build",
                    platform_string(&actual),
                    platform_string(platform)
                ),
            );
        }
        let pinned = if resolved.digest.is_empty() || normalized.contains('@') {
            normalized
        } else {
            format!("{normalized}@{}", resolved.digest)
        };
        Ok((pinned, config))
    }
}

/// The checks on `FROM --platform`: `$TARGETPLATFORM` alone is the default anyway; a constant
/// platform is a mistake unless the stage's name says it is meant (`FROM --platform=linux/arm64
/// AS build-arm64`).
fn lint_platform(
    stage: &Stage,
    expansion: &Expansion,
    args: &[(String, String)],
    linter: &Linter,
    config: Option<&LintConfig>,
) {
    const TARGET_PLATFORM: &str = "TARGETPLATFORM";
    if expansion.unmatched.is_empty()
        && expansion.matched.len() == 1
        && expansion.matched.contains(TARGET_PLATFORM)
        && crate::shell::Env::get(args, TARGET_PLATFORM) == Some(expansion.word.as_str())
    {
        linter.run_with(
            config,
            &lint::REDUNDANT_TARGET_PLATFORM,
            &stage.location,
            format!(
                "Setting platform to predefined {} in FROM is redundant as this is the default behavior",
                stage.platform
            ),
        );
    }
    if !expansion.matched.is_empty() || !expansion.unmatched.is_empty() {
        return;
    }
    let Ok(platform) = kiln_llb::Platform::parse(&expansion.word) else {
        return;
    };
    if stage.name.contains(&platform.os) || stage.name.contains(&platform.architecture) {
        return;
    }
    linter.run_with(
        config,
        &lint::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
        &stage.location,
        format!(
            "FROM --platform flag should not use constant value {:?}",
            expansion.word
        ),
    );
}
