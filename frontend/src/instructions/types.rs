//! The typed instructions and stages [`parse_stages`](super::parse_stages) makes.

use std::time::Duration;

use crate::error::Location;
use crate::mount::{Device, Mount, MountExpander, parse_mount};

/// A `key=value` pair of `ENV` or `LABEL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValuePair {
    /// The key, unexpanded.
    pub key: String,
    /// The value, unexpanded, quotes kept.
    pub value: String,
    /// True for the legacy `ENV key value` form (no `=`).
    pub no_delim: bool,
}

/// An `ARG` name with its optional default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDefinition {
    /// The name.
    pub key: String,
    /// The default value, if given (`ARG x=` gives `Some("")`).
    pub value: Option<String>,
    /// The description from a preceding `# NAME description` comment.
    pub doc_comment: String,
}

/// A command line of `RUN`, `CMD` or `ENTRYPOINT`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShellDependentCmdLine {
    /// Exec form: the arguments; shell form: one string (to be run by the stage's shell).
    pub cmd_line: Vec<String>,
    /// Heredoc bodies from the instruction.
    pub files: Vec<ShellInlineFile>,
    /// True for shell form (the converter prepends the shell).
    pub prepend_shell: bool,
}

/// A heredoc attached to `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellInlineFile {
    /// The delimiter word.
    pub name: String,
    /// The body.
    pub data: String,
    /// Whether leading tabs are to be stripped (`<<-`).
    pub chomp: bool,
    /// Whether variables in the body are expanded (delimiter unquoted).
    pub expand: bool,
}

/// An inline source of `COPY`/`ADD` (a heredoc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceContent {
    /// The file name (the heredoc delimiter).
    pub path: String,
    /// The content (tabs already stripped for `<<-`).
    pub data: String,
    /// Whether variables in the content are expanded.
    pub expand: bool,
}

/// Sources and destination of `COPY`/`ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourcesAndDest {
    /// The destination (last argument).
    pub dest_path: String,
    /// Source paths or URLs.
    pub source_paths: Vec<String>,
    /// Heredoc sources.
    pub source_contents: Vec<SourceContent>,
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyCommand {
    /// What to copy and where.
    pub sources: SourcesAndDest,
    /// `--from`: a stage name or index, or an image.
    pub from: String,
    /// `--chown`.
    pub chown: String,
    /// `--chmod`.
    pub chmod: String,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddCommand {
    /// What to add and where.
    pub sources: SourcesAndDest,
    /// `--chown`.
    pub chown: String,
    /// `--chmod`.
    pub chmod: String,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`, if given.
    pub keep_git_dir: Option<bool>,
    /// `--checksum`.
    pub checksum: String,
    /// `--unpack`, if given.
    pub unpack: Option<bool>,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
}

/// `RUN --network` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The default network.
    #[default]
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// `RUN --security` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityMode {
    /// The default sandbox.
    #[default]
    Sandbox,
    /// Extra privileges (needs an entitlement).
    Insecure,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunCommand {
    /// The command.
    pub cmd: ShellDependentCmdLine,
    /// The raw `--mount` values, in order; see [`RunCommand::mounts`].
    pub mount_specs: Vec<String>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--security`.
    pub security: SecurityMode,
    /// `--device` values.
    pub devices: Vec<Device>,
    /// The flags given, sorted.
    pub flags_used: Vec<String>,
}

impl RunCommand {
    /// Parses the `--mount` values, expanding each value with `expand`.
    pub fn mounts(
        &self,
        expand: MountExpander<'_>,
    ) -> Result<Vec<Mount>, crate::error::MountError> {
        let mut out = Vec::with_capacity(self.mount_specs.len());
        for spec in &self.mount_specs {
            out.push(parse_mount(spec, Some(&mut *expand))?);
        }
        Ok(out)
    }
}

/// A health check configuration (the image config's `Healthcheck`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// `--interval` (zero: inherit).
    pub interval: Duration,
    /// `--timeout` (zero: inherit).
    pub timeout: Duration,
    /// `--start-period` (zero: inherit).
    pub start_period: Duration,
    /// `--start-interval` (zero: inherit).
    pub start_interval: Duration,
    /// `--retries` (zero: inherit).
    pub retries: i64,
}

/// The instruction-specific part of a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandKind {
    /// `ENV`.
    Env(Vec<KeyValuePair>),
    /// `LABEL`.
    Label(Vec<KeyValuePair>),
    /// `MAINTAINER` (deprecated).
    Maintainer(String),
    /// `ADD`.
    Add(AddCommand),
    /// `COPY`.
    Copy(CopyCommand),
    /// `ONBUILD`: the trigger text, heredoc bodies appended.
    Onbuild(String),
    /// `WORKDIR`.
    Workdir(String),
    /// `RUN`.
    Run(RunCommand),
    /// `CMD`.
    Cmd(ShellDependentCmdLine),
    /// `ENTRYPOINT` (`ENTRYPOINT []` clears it).
    Entrypoint(ShellDependentCmdLine),
    /// `HEALTHCHECK`.
    Healthcheck(HealthConfig),
    /// `EXPOSE` ports, sorted.
    Expose(Vec<String>),
    /// `USER`.
    User(String),
    /// `VOLUME` paths.
    Volume(Vec<String>),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `ARG`.
    Arg(Vec<ArgDefinition>),
    /// `SHELL`.
    Shell(Vec<String>),
}

/// An instruction inside a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The instruction name, lower-case.
    pub name: String,
    /// The instruction text (logical line, trimmed).
    pub code: String,
    /// Where it is, for errors raised while converting it.
    pub location: Location,
    /// The comment lines right before it (a `# check=` one configures the build checks of
    /// this instruction).
    pub comments: Vec<String>,
    /// What it says.
    pub kind: CommandKind,
}

/// A build stage: a `FROM` and the commands after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// `AS name`, lower-cased (empty when unnamed).
    pub name: String,
    /// The base image or stage, unexpanded.
    pub base_name: String,
    /// `--platform`, unexpanded (empty when absent).
    pub platform: String,
    /// The `FROM` keyword as written.
    pub orig_cmd: String,
    /// The `FROM` line, trimmed.
    pub source_code: String,
    /// Where the `FROM` is.
    pub location: Location,
    /// Comments before the `FROM`.
    pub comments: Vec<String>,
    /// The description from a `# name description` comment.
    pub doc_comment: String,
    /// The commands of the stage.
    pub commands: Vec<Command>,
}

/// One parsed instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM` starts a stage.
    Stage(Stage),
    /// Everything else.
    Command(Command),
}

/// The stages of a Dockerfile and the `ARG`s before the first `FROM`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stages {
    /// The stages in order.
    pub stages: Vec<Stage>,
    /// The meta arguments (global `ARG`s).
    pub meta_args: Vec<ArgDefinition>,
}

impl Stages {
    /// The index of the stage named `name` (case-insensitive).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| !s.name.is_empty() && s.name.eq_ignore_ascii_case(name))
    }
}
