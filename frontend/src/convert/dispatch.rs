//! Step 5 of the conversion: dispatching the needed stages of a [`Plan`] in file order. Each
//! stage starts from its base (`Plan::initial`: a dispatched stage, scratch, or an image with
//! its configuration's defaults) and each instruction, through `Step::dispatch`, extends the
//! stage's LLB state and image configuration. What every instruction shares (expansion against
//! the stage environment, op names with the `[stage n/total]` counter, history entries, the
//! shell form) goes here; the instructions themselves go in `config`, `run` and `copy`.

use std::collections::BTreeSet;

use kiln_llb::{LocalOptions, State, image_for, local_with, scratch};

use super::copy::CopyParams;
use super::plan::{Base, Plan, StagePlan};
use super::{
    COMMAND_KEY, ConvertError, ConvertErrorKind, DEFAULT_PATH, HISTORY_COMMENT, History,
    ImageConfig, at, set_env,
};
use crate::dockerignore::clean_path;
use crate::error::Location;
use crate::instructions::{Command, CommandKind};
use crate::lint;

/// A dispatched stage.
#[derive(Debug, Clone)]
pub(super) struct Dispatched {
    pub(super) state: State,
    pub(super) image: ImageConfig,
    pub(super) env: Vec<(String, String)>,
    pub(super) cwd: String,
    pub(super) build_args: Vec<(String, Option<String>)>,
    pub(super) cmd_index: usize,
    pub(super) cmd_set: bool,
    /// What the build checks remember of the stage.
    pub(super) seen: Seen,
}

/// What the build checks remember of a stage: whether it set an absolute `WORKDIR`, and
/// where its `CMD`, `ENTRYPOINT` and `HEALTHCHECK` are (only the last of each counts).
#[derive(Debug, Clone, Default)]
pub(super) struct Seen {
    pub(super) workdir: bool,
    cmd: Option<Location>,
    entrypoint: Option<Location>,
    healthcheck: Option<Location>,
}

pub(super) struct DispatchResult {
    pub(super) stages: Vec<Dispatched>,
    pub(super) context_paths: BTreeSet<String>,
}

impl Plan<'_> {
    /// Dispatches every needed stage with `context` as the build context.
    pub(super) fn dispatch(&self, context: &State) -> Result<DispatchResult, ConvertError> {
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
                .map(|d| d.unwrap_or_else(|| Dispatched::new(scratch(), ImageConfig::default())))
                .collect(),
            context_paths,
        })
    }

    /// The state a stage starts from: its base, with the base image's defaults applied.
    fn initial(&self, i: usize, done: &[Option<Dispatched>]) -> Result<Dispatched, ConvertError> {
        let plan = &self.stages[i];
        let platform = plan.platform.clone();
        let mut d = match &plan.base {
            Base::Stage(j) => {
                let mut d = done[*j].clone().expect("a base stage is dispatched first");
                d.image.config.on_build.clear();
                d.cmd_index = 0;
                d.cmd_set = false;
                // An absolute `WORKDIR` of the base stage still counts, as in BuildKit.
                d.seen = Seen {
                    workdir: d.seen.workdir,
                    ..Seen::default()
                };
                return Ok(d);
            }
            Base::Local(name) => Dispatched::empty(
                local_with(
                    name,
                    LocalOptions {
                        shared_key_hint: Some(name.clone()),
                        // As the build context's: unique per invocation unless pinned.
                        unique: Some(
                            self.options
                                .local_unique
                                .clone()
                                .unwrap_or_else(super::new_id),
                        ),
                        ..LocalOptions::default()
                    },
                )
                .with_metadata(|m| {
                    m.description.insert(
                        kiln_llb::CUSTOM_NAME.to_owned(),
                        format!("[context {name}] load from client"),
                    );
                }),
                &platform,
            ),
            Base::Scratch => Dispatched::empty(scratch().platform(platform.clone()), &platform),
            Base::Image(_) => {
                let (pinned, mut config) =
                    plan.resolved.clone().expect("needed images are resolved");
                // The triggers run in this stage (see `resolve`); they do not carry over.
                if !plan.source_only {
                    config.config.on_build.clear();
                }
                let empty = config.rootfs.diff_ids.is_empty()
                    && config.history.iter().all(|h| h.empty_layer);
                let mut d = Dispatched::new(scratch().platform(platform.clone()), config);
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
    /// A stage starting on `state` with the image configuration `image`: no instruction
    /// dispatched yet.
    fn new(state: State, image: ImageConfig) -> Self {
        Self {
            state,
            image,
            env: Vec::new(),
            cwd: "/".to_owned(),
            build_args: Vec::new(),
            cmd_index: 0,
            cmd_set: false,
            seen: Seen::default(),
        }
    }

    /// A stage on `state` with an empty image configuration (scratch, a directory).
    fn empty(state: State, platform: &kiln_llb::pb::Platform) -> Self {
        Self::new(
            state,
            ImageConfig::empty(&platform.os, &platform.architecture),
        )
    }

    /// `[name n/total] text` as BuildKit names ops in progress output.
    pub(super) fn prefix(&mut self, plan: &StagePlan, text: &str) -> String {
        if plan.total == 0 {
            return text.to_owned();
        }
        let mut out = "[".to_owned();
        if !plan.platform_label.is_empty() {
            out.push_str(&plan.platform_label);
            out.push(' ');
        }
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

    pub(super) fn history(&mut self, created_by: String, layer: bool) {
        self.image.history.push(History {
            created_by: Some(created_by),
            comment: Some(HISTORY_COMMENT.to_owned()),
            empty_layer: !layer,
            ..History::default()
        });
    }
}

/// Go's `system.NormalizeWorkdir` on Linux: `requested` relative to `current`, cleaned.
pub(super) fn normalize_workdir(current: &str, requested: &str) -> String {
    let current = if current.is_empty() { "/" } else { current };
    if requested.starts_with('/') {
        clean_path(requested)
    } else {
        clean_path(&format!("/{current}/{requested}"))
    }
}

/// Dispatching one instruction of one stage.
pub(super) struct Step<'p, 'd> {
    pub(super) plan: &'p Plan<'p>,
    pub(super) stage: &'p StagePlan,
    pub(super) d: &'d mut Dispatched,
    pub(super) done: &'d [Option<Dispatched>],
    pub(super) context: &'d State,
    pub(super) context_paths: &'d mut BTreeSet<String>,
    pub(super) onbuild: bool,
}

impl Step<'_, '_> {
    /// Expands `word` in the stage's environment; a variable that is neither set nor a
    /// declared `ARG` of the stage is the build check `UndefinedVar`.
    pub(super) fn expand(&self, word: &str, location: &Location) -> Result<String, ConvertError> {
        let expansion = self
            .plan
            .lexer
            .process(word, &self.d.env)
            .map_err(|e| at(location, e))?;
        for name in &expansion.unmatched {
            if self.d.build_args.iter().any(|(k, _)| k == name) {
                continue;
            }
            let known: Vec<&str> = self.d.env.iter().map(|(k, _)| k.as_str()).collect();
            let mut message = format!("Usage of undefined variable '${name}'");
            if let Some(suggest) = crate::flags::suggest(name, &known, true) {
                message.push_str(&format!(" (did you mean ${suggest}?)"));
            }
            self.plan
                .linter
                .run(&lint::UNDEFINED_VAR, location, message);
        }
        Ok(expansion.word)
    }

    /// The build checks of an instruction that need no expansion: `CMD`, `ENTRYPOINT` and
    /// `HEALTHCHECK` given twice in a stage (the earlier one is reported: it is the one
    /// ignored), their shell form without a `SHELL`, and `ENV`/`LABEL` in the legacy
    /// `key value` form.
    fn check(&mut self, cmd: &Command) {
        let linter = self.plan.linter;
        // The instruction as written (`Cmd`, `cmd`), as BuildKit names it in messages.
        let keyword = cmd.code.split_whitespace().next().unwrap_or(&cmd.name);
        let location = &cmd.location;
        let (seen, line) = match &cmd.kind {
            CommandKind::Cmd(line) => (&mut self.d.seen.cmd, Some(line)),
            CommandKind::Entrypoint(line) => (&mut self.d.seen.entrypoint, Some(line)),
            CommandKind::Healthcheck(_) => (&mut self.d.seen.healthcheck, None),
            CommandKind::Env(pairs) | CommandKind::Label(pairs) => {
                if pairs.iter().any(|p| p.no_delim) {
                    linter.run(
                        &lint::LEGACY_KEY_VALUE_FORMAT,
                        location,
                        format!(
                            "\"{keyword} key=value\" should be used instead of legacy \"{keyword} key value\" format"
                        ),
                    );
                }
                return;
            }
            _ => return,
        };
        if let Some(previous) = seen.replace(location.clone()) {
            linter.run(
                &lint::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                &previous,
                format!(
                    "Multiple {keyword} instructions should not be used in the same stage because only the last one will be used"
                ),
            );
        }
        if line.is_some_and(|l| l.prepend_shell) && self.d.image.config.shell.is_empty() {
            linter.run(
                &lint::JSON_ARGS_RECOMMENDED,
                location,
                format!(
                    "JSON arguments recommended for {keyword} to prevent unintended behavior related to OS signals"
                ),
            );
        }
    }

    /// The op name of an instruction as BuildKit shows it.
    pub(super) fn op_name(&mut self, code: &str, raw: bool) -> String {
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

    pub(super) fn with_shell(&self, args: &[String]) -> Vec<String> {
        let mut shell = if self.d.image.config.shell.is_empty() {
            vec!["/bin/sh".to_owned(), "-c".to_owned()]
        } else {
            self.d.image.config.shell.clone()
        };
        shell.push(args.join(" "));
        shell
    }

    pub(super) fn source_state(
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

    /// Dispatches one instruction, as BuildKit's `dispatch` does: each kind has its method (`RUN`
    /// in `run`, `COPY` and `ADD` in `copy`, the others in `config`).
    fn dispatch(&mut self, cmd: &Command, sources: &[Option<usize>]) -> Result<(), ConvertError> {
        self.plan.linter.begin_instruction(&cmd.comments);
        let dispatched = self.dispatch_checked(cmd, sources);
        self.plan.linter.end_instruction();
        dispatched
    }

    /// [`dispatch`](Self::dispatch) with the instruction's build checks configured.
    fn dispatch_checked(
        &mut self,
        cmd: &Command,
        sources: &[Option<usize>],
    ) -> Result<(), ConvertError> {
        self.check(cmd);
        let loc = &cmd.location;
        match &cmd.kind {
            CommandKind::Env(pairs) => self.dispatch_env(pairs, loc)?,
            CommandKind::Label(pairs) => self.dispatch_label(pairs, loc)?,
            CommandKind::Maintainer(m) => self.dispatch_maintainer(m, loc)?,
            CommandKind::Onbuild(expression) => self.dispatch_onbuild(expression),
            CommandKind::Workdir(path) => self.dispatch_workdir(cmd, path)?,
            CommandKind::User(user) => self.dispatch_user(user, loc)?,
            CommandKind::Volume(volumes) => self.dispatch_volume(volumes, loc)?,
            CommandKind::StopSignal(signal) => self.dispatch_stop_signal(signal, loc)?,
            CommandKind::Shell(shell) => self.dispatch_shell(shell),
            CommandKind::Expose(ports) => self.dispatch_expose(ports, loc)?,
            CommandKind::Cmd(line) => self.dispatch_cmd(line),
            CommandKind::Entrypoint(line) => self.dispatch_entrypoint(line),
            CommandKind::Healthcheck(h) => self.dispatch_healthcheck(h),
            CommandKind::Arg(args) => self.dispatch_arg(args, loc)?,
            CommandKind::Run(run) => self.dispatch_run(cmd, run, sources)?,
            CommandKind::Copy(copy) => {
                let source = match sources.first().copied().flatten() {
                    Some(i) => Some(self.source_state(i, loc, &copy.from, None)?),
                    None => None,
                };
                self.dispatch_copy(cmd, &CopyParams::from_copy(copy), source)?;
            }
            CommandKind::Add(add) => self.dispatch_copy(cmd, &CopyParams::from_add(add), None)?,
        }
        Ok(())
    }
}
