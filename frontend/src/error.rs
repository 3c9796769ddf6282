//! Errors of the Dockerfile parser, the instruction parser and shell-word expansion.
//!
//! Every error from a Dockerfile carries a [`Location`]: the file name, the line span, the column
//! where known and the source lines, and renders the way BuildKit prints it:
//!
//! ```text
//! Dockerfile:2
//! --------------------
//!    2 | >>> frobnicate x
//! --------------------
//! dockerfile parse error on line 2: unknown instruction: frobnicate
//! ```

use std::fmt;

use crate::quote::go_quote;
pub use crate::shell::ExpandErrorKind;

/// Where in a Dockerfile an error happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name as given to the parser (`Dockerfile` by default).
    pub file: String,
    /// First line of the offending instruction, 1-based.
    pub start_line: usize,
    /// Last line of the offending instruction (continuations and heredocs included), 1-based.
    pub end_line: usize,
    /// Column (1-based, in characters) of the offending token on `start_line`, where known.
    pub column: Option<usize>,
    /// The source lines `start_line..=end_line`, without line endings.
    pub source: Vec<String>,
}

/// At most this many source lines are printed for one error.
const MAX_SNIPPET_LINES: usize = 10;

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}:{}", self.file, self.start_line)?;
        writeln!(f, "--------------------")?;
        let width = self.end_line.to_string().len().max(4);
        for (i, line) in self.source.iter().take(MAX_SNIPPET_LINES).enumerate() {
            // Long lines are cut so that a 10 MB line does not become a 10 MB message.
            let shown: String = line.chars().take(200).collect();
            let cut = if shown.len() < line.len() { " ..." } else { "" };
            writeln!(f, "{:>width$} | >>> {shown}{cut}", self.start_line + i)?;
        }
        if self.source.len() > MAX_SNIPPET_LINES {
            writeln!(f, "{:>width$} | ...", "")?;
        }
        writeln!(f, "--------------------")
    }
}

/// An error in a Dockerfile, with its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a valid Dockerfile (directives, quoting, heredocs, JSON form, ...).
    #[error("{location}{kind}")]
    Syntax {
        /// Where.
        location: Box<Location>,
        /// What.
        kind: ErrorKind,
    },
    /// An instruction is malformed (unknown instruction or flag, wrong arguments, ...).
    #[error("{location}dockerfile parse error on line {line}: {kind}", line = location.start_line)]
    Instruction {
        /// Where.
        location: Box<Location>,
        /// What.
        kind: ErrorKind,
    },
}

impl Error {
    /// The location of the error.
    pub fn location(&self) -> &Location {
        match self {
            Error::Syntax { location, .. } | Error::Instruction { location, .. } => location,
        }
    }

    /// What went wrong, without the location.
    pub fn kind(&self) -> &ErrorKind {
        match self {
            Error::Syntax { kind, .. } | Error::Instruction { kind, .. } => kind,
        }
    }

    /// The first line of the offending instruction (1-based).
    pub fn line(&self) -> usize {
        self.location().start_line
    }
}

/// What went wrong, independent of where.
///
/// Messages follow BuildKit's wording (BuildKit commit 73ed6825) so that users and tests that
/// know BuildKit's errors recognise them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file has no instructions (empty, or only comments and blank lines).
    #[error("file with no instructions")]
    NoInstructions,
    /// A heredoc was not closed by its delimiter before the end of the file.
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    /// A physical line is longer than BuildKit's scanner accepts.
    #[error("dockerfile line greater than max allowed size of {max}")]
    LineTooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// An instruction or heredoc line has bytes that are not UTF-8 (see
    /// [`Parser::strict_utf8`](crate::Parser::strict_utf8)).
    #[error("an instruction or heredoc line that is not UTF-8 text")]
    NotUtf8,
    /// A parser directive appears twice.
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective {
        /// The directive name, lower-cased.
        name: String,
    },
    /// `# escape=` names something other than `\` or `` ` ``.
    #[error("invalid escape token '{token}' does not match ` or \\")]
    InvalidEscapeToken {
        /// The value given.
        token: String,
    },
    /// A JSON-form array has a non-string element.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    /// `ENV key` / `LABEL key` with no value.
    #[error("{instruction} must have two arguments")]
    MissingValue {
        /// `ENV` or `LABEL`.
        instruction: String,
    },
    /// A `key=value` list has a word without `=`.
    #[error(
        "Syntax error - can't find = in {}. Must be of the form: name=value",
        go_quote(word)
    )]
    MissingEquals {
        /// The word.
        word: String,
    },
    /// An instruction keyword that does not exist.
    #[error("unknown instruction: {instruction}{}", suggestion(suggest))]
    UnknownInstruction {
        /// The keyword as written.
        instruction: String,
        /// A close known instruction, if any.
        suggest: Option<String>,
    },
    /// A `--flag` the instruction does not take.
    #[error("unknown flag: {flag}{}", suggestion(suggest))]
    UnknownFlag {
        /// The flag as written, with `--`.
        flag: String,
        /// A close known flag, if any.
        suggest: Option<String>,
    },
    /// A single-valued flag given twice.
    #[error("duplicate flag specified: {flag}")]
    DuplicateFlag {
        /// The flag, with `--`.
        flag: String,
    },
    /// A flag word that does not start with `--`.
    #[error("arg should start with -- : {arg}")]
    NotAFlag {
        /// The word.
        arg: String,
    },
    /// A flag that needs `=value` has none.
    #[error("missing a value on flag: {flag}")]
    MissingFlagValue {
        /// The flag, with `--`.
        flag: String,
    },
    /// A boolean flag with a value other than true/false.
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    NotABoolean {
        /// The flag, with `--`.
        flag: String,
        /// The value given.
        value: String,
    },
    /// The instruction needs at least one argument.
    #[error("{instruction} requires at least one argument")]
    AtLeastOneArgument {
        /// The instruction, upper-case.
        instruction: String,
    },
    /// The instruction needs exactly one argument.
    #[error("{instruction} requires exactly one argument")]
    ExactlyOneArgument {
        /// The instruction, upper-case.
        instruction: String,
    },
    /// `COPY`/`ADD` with only one argument.
    #[error(
        "{instruction} requires at least two arguments, but only one was provided. Destination could not be determined"
    )]
    NoDestination {
        /// `COPY` or `ADD`.
        instruction: String,
    },
    /// A heredoc where it cannot be used (e.g. as the destination of `COPY`).
    #[error("{instruction} cannot accept a heredoc as {role}")]
    BadHeredoc {
        /// The instruction.
        instruction: String,
        /// What the heredoc was used as.
        role: String,
    },
    /// An `ENV`/`LABEL`/`ARG` with an empty name.
    #[error("{instruction} names can not be blank")]
    BlankName {
        /// The instruction.
        instruction: String,
    },
    /// Key/value arguments that do not come in triples (cannot happen from the parser).
    #[error("Bad input to {instruction}, too many arguments")]
    TooManyArguments {
        /// The instruction.
        instruction: String,
    },
    /// `FROM` with two or more than three arguments, or three without `AS`.
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    /// `FROM x AS name` with a name that is not valid.
    #[error(
        "invalid name for build stage: {}, name can't start with a number or contain symbols",
        go_quote(name)
    )]
    InvalidStageName {
        /// The name as written.
        name: String,
    },
    /// `ONBUILD ONBUILD`.
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChaining,
    /// `ONBUILD FROM` / `ONBUILD MAINTAINER`.
    #[error("{instruction} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger {
        /// The trigger instruction, upper-case.
        instruction: String,
    },
    /// `HEALTHCHECK NONE` with arguments.
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    /// `HEALTHCHECK CMD` without a command.
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    /// `HEALTHCHECK` with a type other than `CMD` or `NONE`.
    #[error("Unknown type {} in HEALTHCHECK (try CMD)", go_quote(kind))]
    HealthcheckUnknownType {
        /// The type as written, upper-cased.
        kind: String,
    },
    /// A duration flag below 1ms (and not 0).
    #[error("Interval {} cannot be less than 1ms", go_quote(flag))]
    IntervalTooSmall {
        /// The flag name, without `--`.
        flag: String,
    },
    /// A duration flag that is not a Go duration.
    #[error("time: invalid duration {}", go_quote(value))]
    InvalidDuration {
        /// The value given.
        value: String,
    },
    /// `--retries` that is not an integer.
    #[error("strconv.ParseInt: parsing {}: invalid syntax", go_quote(value))]
    InvalidRetries {
        /// The value given.
        value: String,
    },
    /// `--retries` below zero.
    #[error("--retries cannot be negative ({retries})")]
    NegativeRetries {
        /// The value given.
        retries: i64,
    },
    /// `VOLUME ""`.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// An instruction that only has an exec (JSON) form was written in shell form.
    #[error("{instruction} requires the arguments to be in JSON form")]
    NotJson {
        /// The instruction.
        instruction: String,
    },
    /// An instruction other than `ARG` before the first `FROM`.
    #[error("no build stage in current context")]
    NoStage,
    /// `RUN --network=` with an unknown mode.
    #[error("invalid network mode {}", go_quote(value))]
    InvalidNetwork {
        /// The value given.
        value: String,
    },
    /// `RUN --security=` with an unknown mode.
    #[error("security {} is not valid", go_quote(value))]
    InvalidSecurity {
        /// The value given.
        value: String,
    },
    /// A `RUN --mount` specification is invalid.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// A `RUN --device` specification is invalid.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Variable expansion failed.
    #[error(transparent)]
    Expand(#[from] ExpandError),
}

fn suggestion(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

/// A key of a `RUN --mount=...` or `RUN --device=...` field that the flag does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected key '{key}' in '{field}'{}", suggestion(suggest))]
pub struct UnknownKey {
    /// The key, lower-cased.
    pub key: String,
    /// The whole field.
    pub field: String,
    /// A close known key, if any.
    pub suggest: Option<String>,
}

impl UnknownKey {
    /// The key `key` of `field`, with the closest of the `known` keys as a suggestion.
    pub(crate) fn new(key: String, field: String, known: &[&str]) -> Self {
        Self {
            suggest: crate::flags::suggest(&key, known, true),
            key,
            field,
        }
    }
}

/// A `RUN --mount=...` specification that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The comma-separated list is not valid CSV.
    #[error("failed to parse csv mounts: {reason}")]
    Csv {
        /// What is wrong.
        reason: String,
    },
    /// A field without `=` that is not a known boolean key.
    #[error("invalid field '{field}' must be a key=value pair")]
    NotKeyValue {
        /// The field.
        field: String,
    },
    /// A key that the mount type does not take (`required`, `size`).
    #[error("unexpected key '{key}' for mount type '{mount_type}'")]
    KeyNotForType {
        /// The key.
        key: String,
        /// The mount type.
        mount_type: String,
    },
    /// `from=$var`.
    #[error("'{key}' doesn't support variable expansion, define alias stage instead")]
    FromExpansion {
        /// The key (`from`).
        key: String,
    },
    /// `type=` with an unknown type.
    #[error("unsupported mount type {}{}", go_quote(value), suggestion(suggest))]
    UnsupportedType {
        /// The value given.
        value: String,
        /// A close known type, if any.
        suggest: Option<String>,
    },
    /// A boolean or size value that cannot be parsed.
    #[error("invalid value for {key}: {value}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
    },
    /// `sharing=` with an unknown mode.
    #[error("unsupported sharing value {}{}", go_quote(value), suggestion(suggest))]
    UnsupportedSharing {
        /// The value given.
        value: String,
        /// A close known mode, if any.
        suggest: Option<String>,
    },
    /// `mode=`, `uid=` or `gid=` that is not a number.
    #[error("invalid value {value} for {key}")]
    InvalidNumber {
        /// The key.
        key: String,
        /// The value given.
        value: String,
    },
    /// An unknown key.
    #[error(transparent)]
    UnknownKey(#[from] UnknownKey),
    /// `mode`/`uid`/`gid` on a mount type without file info.
    #[error("{key} not allowed for {} type mounts", go_quote(mount_type))]
    FileInfoNotAllowed {
        /// `mode`, `uid` or `gid`.
        key: String,
        /// The mount type.
        mount_type: String,
    },
    /// A secret mount with `from=`.
    #[error("secret mount should not have a from")]
    SecretFrom,
    /// A secret mount with `sharing=`.
    #[error("secret mount should not define sharing")]
    SecretSharing,
    /// A secret mount with neither source, target nor id.
    #[error("invalid secret mount. one of source, target required")]
    SecretTarget,
    /// A secret mount with both `source` and `id`.
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    /// `sharing=` on a mount that is not a cache.
    #[error("invalid cache sharing set for {mount_type} mount")]
    SharingNotCache {
        /// The mount type.
        mount_type: String,
    },
    /// Expanding a value failed.
    #[error(transparent)]
    Expand(#[from] ExpandError),
}

/// A `RUN --device=...` specification that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The comma-separated list is not valid CSV.
    #[error("failed to parse csv devices: {reason}")]
    Csv {
        /// What is wrong.
        reason: String,
    },
    /// A second bare word after the name.
    #[error("invalid field '{field}' must be a key=value pair")]
    NotKeyValue {
        /// The field.
        field: String,
    },
    /// `name=` after the name was already given.
    #[error("device name already set to {name}")]
    NameAlreadySet {
        /// The name given first.
        name: String,
    },
    /// `required=` that is not a boolean.
    #[error("invalid value for {key}: {value}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
    },
    /// An unknown key.
    #[error(transparent)]
    UnknownKey(#[from] UnknownKey),
}

/// Shell-word expansion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpandError {
    /// Expanding `input` failed.
    #[error("failed to process {}: {kind}", go_quote(input))]
    Failed {
        /// The text being expanded.
        input: String,
        /// What went wrong.
        kind: ExpandErrorKind,
    },
}

impl ExpandError {
    /// What went wrong.
    pub fn kind(&self) -> &ExpandErrorKind {
        match self {
            ExpandError::Failed { kind, .. } => kind,
        }
    }
}
