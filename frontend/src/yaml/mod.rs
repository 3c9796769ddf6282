//! The kiln.yaml frontend (`apiVersion: kiln/v1`): a declarative build file of named stages of
//! steps and an image configuration, converted by the same code as a Dockerfile.
//!
//! # Overview
//!
//! 1. `tree`: load the one YAML document with `saphyr`, keeping the line and column of every
//!    node and mapping key;
//! 2. `schema`: validate its JSON form against `frontend/schema/kiln-v1.schema.json` with the
//!    `jsonschema` crate, mapping the first error back to its node (unknown keys get a "did you
//!    mean" hint);
//! 3. `lower`: turn the tree into the typed [`Stages`](crate::Stages) the Dockerfile
//!    instruction parser makes (each command located at its node);
//! 4. run the Dockerfile converter on them, with a lexer that keeps quotes as written and makes
//!    an undefined `${NAME}` an error; its errors are located at their node again.
//!
//! Every error is a [`YamlError`] that renders as `kiln.yaml:LINE:COL: message`.

mod error;
mod from_dockerfile;
mod lower;
mod schema;
mod tree;

pub use error::{YamlError, YamlErrorKind};
pub use from_dockerfile::{FromDockerfileError, dockerfile_to_yaml};
pub use schema::SCHEMA;

use crate::convert::{
    ConvertError, ConvertErrorKind, ConvertOptions, Converted, ImageMetaResolver, convert_stages,
};
use crate::error::ExpandError;
use crate::shell::Lexer;
use tree::{Node, Pos, Value};

/// Whether a build file is a kiln.yaml file: its name ends in `.yaml` or `.yml`, or its first
/// line that is neither blank nor a comment is `apiVersion: kiln/...`.
pub fn is_kiln_yaml(file_name: &str, contents: &[u8]) -> bool {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        return true;
    }
    let text = String::from_utf8_lossy(&contents[..contents.len().min(4096)]);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && l != &"---")
        .and_then(|l| l.strip_prefix("apiVersion:"))
        .is_some_and(|v| v.trim().trim_matches(['"', '\'']).starts_with("kiln/"))
}

/// Converts a kiln.yaml file into an LLB Definition and an image configuration, as
/// [`convert`](crate::convert) does for a Dockerfile (the same options; `file_name` names the
/// file in errors, `target` defaults to `image.target`).
pub fn convert_yaml(
    contents: &[u8],
    options: &ConvertOptions,
    resolver: &dyn ImageMetaResolver,
) -> Result<Converted, YamlError> {
    let file = options.file_name.as_str();
    let at = |(pos, kind): (Pos, YamlErrorKind)| YamlError::At {
        file: file.to_owned(),
        line: pos.line,
        column: pos.column,
        kind: Box::new(kind),
    };
    let text = std::str::from_utf8(contents).map_err(|e| {
        let before = &contents[..e.valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
        at((Pos { line, column }, YamlErrorKind::NotUtf8))
    })?;
    let root = tree::load(text).map_err(at)?;
    schema::validate(&root).map_err(at)?;
    let lowered = lower::lower(&root, file, text).map_err(at)?;
    let mut options = options.clone();
    if options.target.is_none() {
        options.target = lowered.target;
    }
    let lexer = Lexer::default()
        .skip_process_quotes(true)
        .error_on_unset(true);
    convert_stages(
        lowered.stages,
        &lexer,
        &options,
        resolver,
        &crate::lint::Linter::disabled(),
    )
    .map_err(|e| {
        let (pos, kind) = match e {
            ConvertError::At { location, kind } => {
                let pos = Pos {
                    line: location.start_line,
                    column: location.column.unwrap_or(1),
                };
                (Some(refine(&root, &kind, pos)), kind.into())
            }
            ConvertError::Resolve {
                location,
                reference,
                message,
            } => (
                Some(Pos {
                    line: location.start_line,
                    column: location.column.unwrap_or(1),
                }),
                YamlErrorKind::Resolve { reference, message },
            ),
            ConvertError::Build {
                kind: ConvertErrorKind::TargetNotFound { target, suggest },
            } => (None, YamlErrorKind::TargetNotFound { target, suggest }),
            ConvertError::Build { kind } => {
                let pos = refine(&root, &kind, Pos::default());
                ((pos != Pos::default()).then_some(pos), kind.into())
            }
            ConvertError::Parse(e) => {
                let location = e.location();
                (
                    Some(Pos {
                        line: location.start_line,
                        column: location.column.unwrap_or(1),
                    }),
                    YamlErrorKind::Instruction(e.kind().clone()),
                )
            }
            ConvertError::Lint { .. } | ConvertError::Checked { .. } => {
                unreachable!("kiln.yaml files are converted without build checks")
            }
        };
        match pos {
            Some(pos) => at((pos, kind)),
            None => YamlError::Build {
                file: file.to_owned(),
                kind: Box::new(kind),
            },
        }
    })
}

/// The place of an expansion error: the string node holding the text that failed, the first
/// at or after `from` (the command), else the first in the file; `from` when there is none.
fn refine(root: &Node, kind: &ConvertErrorKind, from: Pos) -> Pos {
    let ConvertErrorKind::Expand(ExpandError::Failed { input, .. }) = kind else {
        return from;
    };
    let mut found = Vec::new();
    find_text(root, input, &mut found);
    found
        .iter()
        .find(|p| **p >= from)
        .or_else(|| found.first())
        .copied()
        .unwrap_or(from)
}

fn find_text(node: &Node, text: &str, out: &mut Vec<Pos>) {
    match &node.value {
        Value::Str(s) if s == text => out.push(node.pos),
        Value::Seq(items) => items.iter().for_each(|n| find_text(n, text, out)),
        Value::Map(entries) => entries.iter().for_each(|(_, n)| find_text(n, text, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
