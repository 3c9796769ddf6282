//! Errors of the kiln.yaml frontend: each names the file and, where it has one, the line and
//! column of the offending node (`kiln.yaml:12:9: unknown key "dset" (did you mean dest?)`).

use crate::convert::ConvertErrorKind;
use crate::error::ErrorKind;

/// A kiln.yaml file could not be converted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum YamlError {
    /// Something at a place in the file.
    #[error("{file}:{line}:{column}: {kind}")]
    At {
        /// The file name as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong.
        kind: Box<YamlErrorKind>,
    },
    /// Something about the build as a whole (a `--target` naming no stage).
    #[error("{file}: {kind}")]
    Build {
        /// The file name as given.
        file: String,
        /// What is wrong.
        kind: Box<YamlErrorKind>,
    },
}

impl YamlError {
    /// What went wrong, without the place.
    pub fn kind(&self) -> &YamlErrorKind {
        match self {
            YamlError::At { kind, .. } | YamlError::Build { kind, .. } => kind,
        }
    }

    /// The 1-based line and column, where there is one.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            YamlError::At { line, column, .. } => Some((*line, *column)),
            YamlError::Build { .. } => None,
        }
    }
}

/// What is wrong in a kiln.yaml file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum YamlErrorKind {
    /// The file is not UTF-8 text.
    #[error("the file is not UTF-8 text")]
    NotUtf8,
    /// The text is not valid YAML.
    #[error("{message}")]
    Syntax {
        /// The YAML parser's message.
        message: String,
    },
    /// Not exactly one YAML document.
    #[error("expected one YAML document, found {count}")]
    Documents {
        /// How many there are.
        count: usize,
    },
    /// A mapping key that is not a plain scalar.
    #[error("a mapping key must be a string")]
    KeyNotString,
    /// A YAML feature kiln.yaml does not take.
    #[error("YAML {what} are not supported in kiln.yaml")]
    Unsupported {
        /// The feature.
        what: &'static str,
    },
    /// A scalar the YAML loader could not read.
    #[error("invalid YAML value")]
    BadValue,
    /// A key the format does not have.
    #[error("unknown key {key:?}{}", hint(suggest))]
    UnknownKey {
        /// The key.
        key: String,
        /// A known key close to it.
        suggest: Option<String>,
    },
    /// The document does not follow the schema (`frontend/schema/kiln-v1.schema.json`).
    #[error("{message}")]
    Schema {
        /// The schema validator's message.
        message: String,
    },
    /// A stage name that is not `[a-z][a-z0-9-_.]*`.
    #[error(
        "invalid stage name {name:?}: a stage name is lower-case letters, digits, '-', '_' and '.', starting with a letter"
    )]
    InvalidStageName {
        /// The name.
        name: String,
    },
    /// A stage named `context`, which `copy.from` reserves for the build context.
    #[error("the stage name \"context\" is reserved for the build context")]
    ReservedStageName,
    /// `from` (of a stage, a copy or a mount) names the stage itself or a later one.
    #[error(
        "stage {name:?} is defined later in the file: a stage can use only the stages before it"
    )]
    LaterStage {
        /// The stage named.
        name: String,
    },
    /// A step with no action or more than one.
    #[error(
        "a step has exactly one of run, copy, add, env, workdir, user; this one has {}",
        found_list(found)
    )]
    StepKind {
        /// The action keys found.
        found: Vec<String>,
    },
    /// `image.target` or `--target` names no stage.
    #[error("target stage {target:?} could not be found{}", hint(suggest))]
    TargetNotFound {
        /// The name.
        target: String,
        /// A stage name close to it.
        suggest: Option<String>,
    },
    /// A value the instruction it becomes refuses (a health check duration).
    #[error(transparent)]
    Instruction(#[from] ErrorKind),
    /// The conversion to LLB failed.
    #[error(transparent)]
    Convert(#[from] ConvertErrorKind),
    /// A base image could not be resolved.
    #[error("{reference}: {message}")]
    Resolve {
        /// The image as written.
        reference: String,
        /// Why resolution failed.
        message: String,
    },
}

fn hint(suggest: &Option<String>) -> String {
    suggest
        .as_ref()
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() {
        "none".to_owned()
    } else {
        found.join(", ")
    }
}
