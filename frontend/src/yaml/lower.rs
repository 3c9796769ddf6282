//! Lowering a validated kiln.yaml tree to the typed [`Stages`] the Dockerfile instruction
//! parser makes, so that the one converter builds both formats.
//!
//! # Outline
//!
//! 1. `args` become meta arguments (`ARG NAME=default` before the first `FROM`);
//! 2. each stage becomes a [`Stage`] (`FROM from AS name`) whose commands are, in order:
//!    `ARG NAME` for every argument (so that `run` steps see them, as in a Dockerfile), the
//!    stage's `env`, `workdir` and `user`, one command per step, and, for the image's target
//!    stage, the `image` keys (`ENV`, `LABEL`, `WORKDIR`, `USER`, `EXPOSE`, `VOLUME`,
//!    `STOPSIGNAL`, `HEALTHCHECK`, `ENTRYPOINT`, `CMD`);
//! 3. every command carries a [`Location`] with the line and column of its node, and a
//!    Dockerfile-like `code` text for op names and history.
//!
//! Strings are passed on as written: the converter expands `${NAME}` in the fields it expands
//! for a Dockerfile, with a lexer that keeps quotes and refuses undefined names, and never
//! touches `run`, `cmd`, `entrypoint` or `healthcheck.test`.

use crate::error::Location;
use crate::flags::suggest;
use crate::instructions::{
    AddCommand, ArgDefinition, Command, CommandKind, CopyCommand, HealthConfig, KeyValuePair,
    NetworkMode, RunCommand, SecurityMode, ShellDependentCmdLine, SourcesAndDest, Stage, Stages,
    interval_value, is_valid_stage_name,
};
use crate::mount::parse_mount;

use super::error::YamlErrorKind;
use super::tree::{Node, Pos, Value};

/// The keys of a step of which there is exactly one.
const STEP_ACTIONS: [&str; 6] = ["run", "copy", "add", "env", "workdir", "user"];

/// Stages lowered from a kiln.yaml file.
pub(crate) struct Lowered {
    pub(crate) stages: Stages,
    /// `image.target`, where given.
    pub(crate) target: Option<String>,
}

type Result<T> = std::result::Result<T, (Pos, YamlErrorKind)>;

struct Lower<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
}

/// Lowers `root` (already valid under the schema) from the file `file` whose text is `source`.
pub(crate) fn lower(root: &Node, file: &str, source: &str) -> Result<Lowered> {
    let l = Lower {
        file,
        lines: source.lines().collect(),
    };
    let args: Vec<(String, String, Pos)> = root
        .get("args")
        .map(|a| {
            a.entries()
                .iter()
                .map(|(k, v)| (k.name.clone(), text(v), k.pos))
                .collect()
        })
        .unwrap_or_default();
    let meta_args = args
        .iter()
        .map(|(key, value, _)| ArgDefinition {
            key: key.clone(),
            value: Some(value.clone()),
            doc_comment: String::new(),
        })
        .collect();

    let stage_nodes = root.get("stages").map(Node::entries).unwrap_or_default();
    let names: Vec<&str> = stage_nodes.iter().map(|(k, _)| k.name.as_str()).collect();
    let image = root.get("image");
    let target = match image.and_then(|i| i.get("target")) {
        Some(t) => {
            let name = text(t);
            if !names.contains(&name.as_str()) {
                return Err((
                    t.pos,
                    YamlErrorKind::TargetNotFound {
                        suggest: suggest(&name, &names, true),
                        target: name,
                    },
                ));
            }
            Some(name)
        }
        None => None,
    };
    let image_stage = target
        .clone()
        .or_else(|| names.last().map(|n| (*n).to_owned()));

    let mut stages = Vec::with_capacity(stage_nodes.len());
    for (index, (key, node)) in stage_nodes.iter().enumerate() {
        check_sources(node, &names[index..])?;
        if !is_valid_stage_name(&key.name) {
            return Err((
                key.pos,
                YamlErrorKind::InvalidStageName {
                    name: key.name.clone(),
                },
            ));
        }
        if key.name == "context" {
            return Err((key.pos, YamlErrorKind::ReservedStageName));
        }
        let mut stage = l.stage(&key.name, key.pos, node);
        if let Some((_, _, pos)) = args.first() {
            let defs: Vec<ArgDefinition> = args
                .iter()
                .map(|(k, _, _)| ArgDefinition {
                    key: k.clone(),
                    value: None,
                    doc_comment: String::new(),
                })
                .collect();
            let names: Vec<&str> = args.iter().map(|(k, _, _)| k.as_str()).collect();
            stage.commands.push(l.command(
                *pos,
                "arg",
                format!("ARG {}", names.join(" ")),
                CommandKind::Arg(defs),
            ));
        }
        l.state_keys(node, &mut stage.commands);
        for step in node.get("steps").map(Node::items).unwrap_or_default() {
            stage.commands.push(l.step(step)?);
        }
        if image_stage.as_deref() == Some(key.name.as_str()) {
            if let Some(image) = image {
                l.image(image, &mut stage.commands)?;
            }
        }
        stages.push(stage);
    }
    Ok(Lowered {
        stages: Stages { stages, meta_args },
        target,
    })
}

/// Refuses a `from` (of the stage, a `copy` or a mount) naming the stage itself or a later one,
/// which a Dockerfile would take for an image of that name.
fn check_sources(stage: &Node, later: &[&str]) -> Result<()> {
    let mut sources: Vec<&Node> = stage.get("from").into_iter().collect();
    for step in stage.get("steps").map(Node::items).unwrap_or_default() {
        sources.extend(step.get("copy").and_then(|c| c.get("from")));
        for mount in step.get("mounts").map(Node::items).unwrap_or_default() {
            sources.extend(mount.get("from"));
        }
    }
    for source in sources {
        let name = text(source);
        if later.contains(&name.as_str()) {
            return Err((source.pos, YamlErrorKind::LaterStage { name }));
        }
    }
    Ok(())
}

/// A scalar's text (the schema has checked the type).
fn text(node: &Node) -> String {
    node.text().unwrap_or_default()
}

fn texts(node: &Node) -> Vec<String> {
    match &node.value {
        Value::Seq(items) => items.iter().map(text).collect(),
        _ => vec![text(node)],
    }
}

/// The `--name=value` flags of a `COPY` or `ADD` line whose value is not empty.
fn push_values(code: &mut String, flags: [(&str, &str); 3]) {
    for (name, value) in flags {
        if !value.is_empty() {
            code.push_str(&format!(" --{name}={value}"));
        }
    }
}

/// The end of a `COPY` or `ADD` line: its `--exclude` patterns, its sources, its destination.
fn push_paths(code: &mut String, exclude: &[String], sources: &SourcesAndDest) {
    for pattern in exclude {
        code.push_str(&format!(" --exclude={pattern}"));
    }
    for src in &sources.source_paths {
        code.push_str(&format!(" {src}"));
    }
    code.push_str(&format!(" {}", sources.dest_path));
}

fn flag(node: &Node, key: &str) -> Option<bool> {
    match node.get(key).map(|n| &n.value) {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn string(node: &Node, key: &str) -> String {
    node.get(key).map(text).unwrap_or_default()
}

/// A command line: a string is the shell form, a list the exec form.
fn command_line(node: &Node) -> ShellDependentCmdLine {
    let shell = !matches!(node.value, Value::Seq(_));
    ShellDependentCmdLine {
        cmd_line: texts(node),
        files: Vec::new(),
        prepend_shell: shell,
    }
}

/// A command line as a Dockerfile writes it (for op names and history).
fn command_code(line: &ShellDependentCmdLine) -> String {
    if line.prepend_shell {
        line.cmd_line.join(" ")
    } else {
        serde_json::to_string(&line.cmd_line).unwrap_or_default()
    }
}

fn pairs(node: &Node) -> Vec<KeyValuePair> {
    node.entries()
        .iter()
        .map(|(k, v)| KeyValuePair {
            key: k.name.clone(),
            value: text(v),
            no_delim: false,
        })
        .collect()
}

fn pairs_code(pairs: &[KeyValuePair]) -> String {
    pairs
        .iter()
        .map(|p| format!("{}={}", p.key, p.value))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One field of a `--mount` value, quoted as CSV where it needs it.
fn csv_field(key: &str, value: &str) -> String {
    let field = format!("{key}={value}");
    if field.contains([',', '"', '\n', '\r']) || field.starts_with(' ') {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// The `--mount` value of a mount mapping.
fn mount_spec(node: &Node) -> String {
    node.entries()
        .iter()
        .map(|(k, v)| csv_field(&k.name, &text(v)))
        .collect::<Vec<_>>()
        .join(",")
}

impl Lower<'_> {
    fn location(&self, pos: Pos) -> Location {
        Location {
            file: self.file.to_owned(),
            start_line: pos.line,
            end_line: pos.line,
            column: Some(pos.column),
            source: self
                .lines
                .get(pos.line.saturating_sub(1))
                .map(|l| vec![(*l).to_owned()])
                .unwrap_or_default(),
        }
    }

    fn command(&self, pos: Pos, name: &str, code: String, kind: CommandKind) -> Command {
        Command {
            name: name.to_owned(),
            code,
            location: self.location(pos),
            comments: Vec::new(),
            kind,
        }
    }

    fn stage(&self, name: &str, pos: Pos, node: &Node) -> Stage {
        let from = string(node, "from");
        let platform = string(node, "platform");
        let mut source_code = String::from("FROM ");
        if !platform.is_empty() {
            source_code.push_str(&format!("--platform={platform} "));
        }
        source_code.push_str(&format!("{from} AS {name}"));
        Stage {
            name: name.to_owned(),
            base_name: from,
            platform,
            orig_cmd: "FROM".to_owned(),
            source_code,
            location: self.location(node.get("from").map_or(pos, |v| v.pos)),
            comments: Vec::new(),
            doc_comment: String::new(),
            commands: Vec::new(),
        }
    }

    /// The instruction of the one-text key `name` of `node` (`workdir: /app` is `WORKDIR /app`),
    /// if `node` has that key.
    fn text_command(
        &self,
        node: &Node,
        name: &str,
        kind: fn(String) -> CommandKind,
    ) -> Option<Command> {
        let (key, value) = (node.key(name)?, text(node.get(name)?));
        let code = format!("{} {value}", name.to_ascii_uppercase());
        Some(self.command(key.pos, name, code, kind(value)))
    }

    /// `env`, `workdir` and `user` of a stage, a step or the image, in that order.
    fn state_keys(&self, node: &Node, out: &mut Vec<Command>) {
        if let (Some(key), Some(env)) = (node.key("env"), node.get("env")) {
            let pairs = pairs(env);
            if !pairs.is_empty() {
                out.push(self.command(
                    key.pos,
                    "env",
                    format!("ENV {}", pairs_code(&pairs)),
                    CommandKind::Env(pairs),
                ));
            }
        }
        out.extend(self.text_command(node, "workdir", CommandKind::Workdir));
        out.extend(self.text_command(node, "user", CommandKind::User));
    }

    fn step(&self, step: &Node) -> Result<Command> {
        let found: Vec<String> = STEP_ACTIONS
            .iter()
            .filter(|a| step.get(a).is_some())
            .map(|a| (*a).to_owned())
            .collect();
        let [action] = found.as_slice() else {
            return Err((step.pos, YamlErrorKind::StepKind { found }));
        };
        let pos = step.pos;
        Ok(match action.as_str() {
            "run" => self.run(step)?,
            "copy" => self.copy(step.get("copy").unwrap_or(step), pos),
            "add" => self.add(step.get("add").unwrap_or(step), pos),
            _ => {
                let mut out = Vec::new();
                self.state_keys(step, &mut out);
                match out.pop() {
                    Some(cmd) => cmd,
                    // An empty `env: {}`: nothing to set.
                    None => {
                        self.command(pos, "env", "ENV".to_owned(), CommandKind::Env(Vec::new()))
                    }
                }
            }
        })
    }

    fn run(&self, step: &Node) -> Result<Command> {
        let cmd = command_line(step.get("run").unwrap_or(step));
        let mut mount_specs = Vec::new();
        for mount in step.get("mounts").map(Node::items).unwrap_or_default() {
            let spec = mount_spec(mount);
            // As the Dockerfile's instruction parser does: a mount without variables is checked
            // now, so that its error points at it.
            if !spec.contains('$') {
                let mut literal = |s: &str| Ok(s.to_owned());
                parse_mount(&spec, Some(&mut literal))
                    .map_err(|e| (mount.pos, YamlErrorKind::Convert(e.into())))?;
            }
            mount_specs.push(spec);
        }
        let network = match string(step, "network").as_str() {
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            _ => NetworkMode::Default,
        };
        let security = match string(step, "security").as_str() {
            "insecure" => SecurityMode::Insecure,
            _ => SecurityMode::Sandbox,
        };
        let mut flags_used = Vec::new();
        let mut code = String::from("RUN");
        for spec in &mount_specs {
            code.push_str(&format!(" --mount={spec}"));
        }
        if !mount_specs.is_empty() {
            flags_used.push("mount".to_owned());
        }
        for (name, given) in [
            ("network", step.get("network")),
            ("security", step.get("security")),
        ] {
            if let Some(value) = given {
                flags_used.push(name.to_owned());
                code.push_str(&format!(" --{name}={}", text(value)));
            }
        }
        code.push(' ');
        code.push_str(&command_code(&cmd));
        Ok(self.command(
            step.pos,
            "run",
            code,
            CommandKind::Run(RunCommand {
                cmd,
                mount_specs,
                network,
                security,
                devices: Vec::new(),
                flags_used,
            }),
        ))
    }

    fn sources(node: &Node) -> SourcesAndDest {
        SourcesAndDest {
            dest_path: string(node, "dest"),
            source_paths: node.get("src").map(texts).unwrap_or_default(),
            source_contents: Vec::new(),
        }
    }

    fn copy(&self, node: &Node, pos: Pos) -> Command {
        let from = match string(node, "from").as_str() {
            "context" => String::new(),
            other => other.to_owned(),
        };
        let copy = CopyCommand {
            sources: Self::sources(node),
            from,
            chown: string(node, "chown"),
            chmod: string(node, "chmod"),
            link: flag(node, "link").unwrap_or(false),
            parents: flag(node, "parents").unwrap_or(false),
            exclude: node.get("exclude").map(texts).unwrap_or_default(),
        };
        let mut code = String::from("COPY");
        push_values(
            &mut code,
            [
                ("from", &copy.from),
                ("chown", &copy.chown),
                ("chmod", &copy.chmod),
            ],
        );
        for (name, on) in [("link", copy.link), ("parents", copy.parents)] {
            if on {
                code.push_str(&format!(" --{name}"));
            }
        }
        push_paths(&mut code, &copy.exclude, &copy.sources);
        self.command(pos, "copy", code, CommandKind::Copy(copy))
    }

    fn add(&self, node: &Node, pos: Pos) -> Command {
        let add = AddCommand {
            sources: Self::sources(node),
            chown: string(node, "chown"),
            chmod: string(node, "chmod"),
            link: flag(node, "link").unwrap_or(false),
            keep_git_dir: flag(node, "keep_git_dir"),
            checksum: string(node, "checksum"),
            unpack: flag(node, "unpack"),
            exclude: node.get("exclude").map(texts).unwrap_or_default(),
        };
        let mut code = String::from("ADD");
        push_values(
            &mut code,
            [
                ("chown", &add.chown),
                ("chmod", &add.chmod),
                ("checksum", &add.checksum),
            ],
        );
        if add.link {
            code.push_str(" --link");
        }
        for (name, value) in [("keep-git-dir", add.keep_git_dir), ("unpack", add.unpack)] {
            if let Some(v) = value {
                code.push_str(&format!(" --{name}={v}"));
            }
        }
        push_paths(&mut code, &add.exclude, &add.sources);
        self.command(pos, "add", code, CommandKind::Add(add))
    }

    /// The `image` keys, as the instructions that set the image configuration.
    fn image(&self, image: &Node, out: &mut Vec<Command>) -> Result<()> {
        if let (Some(key), Some(labels)) = (image.key("labels"), image.get("labels")) {
            let pairs = pairs(labels);
            if !pairs.is_empty() {
                out.push(self.command(
                    key.pos,
                    "label",
                    format!("LABEL {}", pairs_code(&pairs)),
                    CommandKind::Label(pairs),
                ));
            }
        }
        self.state_keys(image, out);
        if let (Some(key), Some(ports)) = (image.key("expose"), image.get("expose")) {
            let mut ports = texts(ports);
            if !ports.is_empty() {
                ports.sort();
                out.push(self.command(
                    key.pos,
                    "expose",
                    format!("EXPOSE {}", ports.join(" ")),
                    CommandKind::Expose(ports),
                ));
            }
        }
        if let (Some(key), Some(volumes)) = (image.key("volumes"), image.get("volumes")) {
            let volumes = texts(volumes);
            if !volumes.is_empty() {
                out.push(self.command(
                    key.pos,
                    "volume",
                    format!("VOLUME {}", volumes.join(" ")),
                    CommandKind::Volume(volumes),
                ));
            }
        }
        out.extend(self.text_command(image, "stopsignal", CommandKind::StopSignal));
        if let (Some(key), Some(health)) = (image.key("healthcheck"), image.get("healthcheck")) {
            let config = healthcheck(health)?;
            out.push(self.command(
                key.pos,
                "healthcheck",
                format!("HEALTHCHECK {}", config.test.join(" ")),
                CommandKind::Healthcheck(config),
            ));
        }
        for (name, upper) in [("entrypoint", "ENTRYPOINT"), ("cmd", "CMD")] {
            if let (Some(key), Some(node)) = (image.key(name), image.get(name)) {
                let line = command_line(node);
                let code = format!("{upper} {}", command_code(&line));
                let kind = if name == "cmd" {
                    CommandKind::Cmd(line)
                } else {
                    CommandKind::Entrypoint(line)
                };
                out.push(self.command(key.pos, name, code, kind));
            }
        }
        Ok(())
    }
}

/// `image.healthcheck`: `test` (a string runs in a shell, as `CMD-SHELL`; a list is `CMD`),
/// or `disable: true` (`NONE`), with durations and retries as `HEALTHCHECK` takes them.
fn healthcheck(node: &Node) -> Result<HealthConfig> {
    if flag(node, "disable") == Some(true) {
        return Ok(HealthConfig {
            test: vec!["NONE".to_owned()],
            ..HealthConfig::default()
        });
    }
    let Some(test) = node.get("test") else {
        return Err((
            node.pos,
            YamlErrorKind::Instruction(crate::error::ErrorKind::HealthcheckMissingCommand),
        ));
    };
    let line = command_line(test);
    let kind = if line.prepend_shell {
        "CMD-SHELL"
    } else {
        "CMD"
    };
    let mut config = HealthConfig {
        test: std::iter::once(kind.to_owned())
            .chain(line.cmd_line)
            .collect(),
        ..HealthConfig::default()
    };
    for (key, flag_name, slot) in [
        ("interval", "interval", &mut config.interval),
        ("timeout", "timeout", &mut config.timeout),
        ("start_period", "start-period", &mut config.start_period),
        (
            "start_interval",
            "start-interval",
            &mut config.start_interval,
        ),
    ] {
        if let Some(value) = node.get(key) {
            *slot = interval_value(flag_name, &text(value))
                .map_err(|e| (value.pos, YamlErrorKind::Instruction(e)))?;
        }
    }
    if let Some(Value::Int(n)) = node.get("retries").map(|n| &n.value) {
        config.retries = *n;
    }
    Ok(config)
}
