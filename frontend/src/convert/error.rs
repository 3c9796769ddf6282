//! Errors of the Dockerfile-to-LLB conversion, worded as BuildKit words them.

use crate::error::{Error, ExpandError, Location, MountError};

/// A conversion failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The Dockerfile does not parse.
    #[error(transparent)]
    Parse(#[from] Error),
    /// An instruction cannot be converted.
    #[error("{location}{kind}")]
    At {
        /// The offending instruction.
        location: Box<Location>,
        /// What went wrong.
        kind: ConvertErrorKind,
    },
    /// The build as a whole cannot be converted.
    #[error("{kind}")]
    Build {
        /// What went wrong.
        kind: ConvertErrorKind,
    },
    /// The metadata of a base image could not be resolved.
    #[error("{location}{reference}: {message}")]
    Resolve {
        /// The `FROM` (or `COPY --from`) naming the image.
        location: Box<Location>,
        /// The image as written.
        reference: String,
        /// Why resolution failed (the resolver's error, with its causes).
        message: String,
    },
    /// Build checks found something and `error=true` makes that fail the build.
    #[error("lint violation found for rules: {}", rules.join(", "))]
    Lint {
        /// The rules that found something, sorted.
        rules: Vec<String>,
        /// What they found.
        warnings: Vec<crate::LintWarning>,
    },
    /// The conversion failed after the build checks had found something: the error (shown
    /// as itself), with the warnings BuildKit prints before it.
    #[error("{error}")]
    Checked {
        /// What failed.
        error: Box<ConvertError>,
        /// What the build checks had found by then.
        warnings: Vec<crate::LintWarning>,
    },
}

/// What went wrong while converting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertErrorKind {
    /// The Dockerfile is empty.
    #[error("the Dockerfile cannot be empty")]
    EmptyDockerfile,
    /// The `# check=` directive or the `BUILDKIT_DOCKERFILE_CHECK` build argument does not
    /// parse.
    #[error("failed to parse {what}: {message}")]
    CheckOptions {
        /// `check options` (the directive) or the build argument.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The Dockerfile has no `FROM`.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// `--target` names no stage.
    #[error("target stage {target:?} could not be found{}", suggestion(suggest))]
    TargetNotFound {
        /// The name given.
        target: String,
        /// A stage name close to it.
        suggest: Option<String>,
    },
    /// A `.dockerignore` pattern is invalid.
    #[error("illegal exclusion pattern: {pattern:?}")]
    InvalidIgnorePattern {
        /// The pattern.
        pattern: String,
    },
    /// `FROM` expanded to nothing.
    #[error("base name ({base}) should not be blank")]
    BlankBaseName {
        /// The unexpanded base name.
        base: String,
    },
    /// `FROM --platform` expanded to something that is not a platform.
    #[error("failed to parse platform {text}: {reason}")]
    InvalidPlatform {
        /// The expanded text.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Stages depend on each other in a loop.
    #[error("circular dependency detected on stage: {stage}")]
    CircularDependency {
        /// A stage in the loop.
        stage: String,
    },
    /// `COPY --from=N` with no stage `N`.
    #[error("invalid stage index {index}")]
    InvalidStageIndex {
        /// The index given.
        index: i64,
    },
    /// `COPY --from` names a stage defined later.
    #[error(
        "cannot copy from stage {from:?}, it needs to be defined before current stage {stage:?}"
    )]
    CopyFromLaterStage {
        /// The stage named.
        from: String,
        /// The current stage.
        stage: String,
    },
    /// `RUN --mount,from=` names a stage defined later.
    #[error(
        "cannot mount from stage {from:?} to {target:?}, stage needs to be defined before current command"
    )]
    MountFromLaterStage {
        /// The stage named.
        from: String,
        /// The mount target.
        target: String,
    },
    /// `COPY --from=$VAR`.
    #[error(
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
    )]
    FromVariable,
    /// Expanding a variable failed.
    #[error(transparent)]
    Expand(#[from] ExpandError),
    /// A `RUN --mount` is invalid.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// `--chmod` is not an octal mode.
    #[error(
        "invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777"
    )]
    InvalidChmod {
        /// The value given.
        value: String,
    },
    /// A mount target resolves to `/`.
    #[error("invalid mount target {target:?}")]
    InvalidMountTarget {
        /// The resolved target.
        target: String,
    },
    /// A secret mount has neither source nor target.
    #[error("one of source, target required")]
    SecretWithoutTarget,
    /// `--checksum` on `COPY`.
    #[error("checksum can't be specified for COPY")]
    ChecksumForCopy,
    /// A URL in `COPY`.
    #[error("source can't be a URL for COPY")]
    UrlForCopy,
    /// `VOLUME ""` after expansion.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// `STOPSIGNAL` names no signal.
    #[error("Invalid signal: {signal}")]
    InvalidSignal {
        /// The value given.
        signal: String,
    },
    /// `EXPOSE` with a malformed port.
    #[error("invalid containerPort: {port}")]
    InvalidPort {
        /// The value given.
        port: String,
    },
    /// The base image's configuration is not valid JSON.
    #[error("failed to parse image config: {message}")]
    BadImageConfig {
        /// The JSON error.
        message: String,
    },
    /// `RUN --mount=type=ssh,source=...`.
    #[error("ssh does not support source")]
    SshSource,
    /// A git URL in `COPY`.
    #[error("source can't be a git ref for COPY")]
    GitForCopy,
    /// A git URL that looks like one but cannot be used (bad query, conflicting refs).
    #[error("{message}")]
    InvalidGitRef {
        /// What is wrong, in BuildKit's words.
        message: String,
    },
    /// `--keep-git-dir` disagrees with the URL's `keep-git-dir` query.
    #[error("inconsistent keep-git-dir configuration")]
    InconsistentKeepGitDir,
    /// `--checksum` disagrees with the URL's `checksum` query.
    #[error("checksum mismatch {flag:?} != {url:?}")]
    GitChecksumMismatch {
        /// The `--checksum` value.
        flag: String,
        /// The URL's value.
        url: String,
    },
    /// `--checksum` with more than one source.
    #[error("checksum can't be specified for multiple sources")]
    ChecksumMultipleSources,
    /// `--checksum` for a local source.
    #[error("checksum requires HTTP(S) or Git sources")]
    ChecksumNeedsRemote,
    /// A symbolic `--chmod` that does not parse.
    #[error("{message}")]
    InvalidModeString {
        /// What is wrong, in BuildKit's words.
        message: String,
    },
    /// A feature this converter does not implement yet.
    #[error("{feature} is not supported yet")]
    Unsupported {
        /// What was asked for.
        feature: String,
    },
}

fn suggestion(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}
