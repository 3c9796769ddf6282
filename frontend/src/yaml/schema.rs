//! Validation against the published JSON Schema, `frontend/schema/kiln-v1.schema.json`, with
//! the `jsonschema` crate. A schema error's instance path is walked back through the YAML tree
//! to the node (or, for an unknown key, the key) it names, so the error has a line and column;
//! an unknown key gets a "did you mean" hint from the `properties` the schema allows there.

use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;

use super::error::YamlErrorKind;
use super::tree::{Node, Pos, Value};
use crate::flags::suggest;

/// The schema of `apiVersion: kiln/v1`.
pub const SCHEMA: &str = include_str!("../../schema/kiln-v1.schema.json");

static SCHEMA_JSON: LazyLock<serde_json::Value> = LazyLock::new(|| {
    serde_json::from_str(SCHEMA)
        .expect("the schema shipped in the crate is JSON (a unit test checks it)")
});

static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    jsonschema::validator_for(&SCHEMA_JSON)
        .expect("the schema shipped in the crate is valid (a unit test checks it)")
});

/// Longest schema message shown (the validator quotes whole values).
const MAX_MESSAGE: usize = 200;

/// Validates `root`; the error reported is the first unknown key, else the first error, in the
/// file.
pub(crate) fn validate(root: &Node) -> Result<(), (Pos, YamlErrorKind)> {
    let json = root.to_json();
    let mut first: Option<(Pos, YamlErrorKind)> = None;
    for error in VALIDATOR.iter_errors(&json) {
        let segments: Vec<Segment> = error
            .instance_path()
            .into_iter()
            .map(|s| match s {
                LocationSegment::Property(p) => Segment::Key(p.to_string()),
                LocationSegment::Index(i) => Segment::Index(i),
            })
            .collect();
        let node = walk(root, &segments);
        let (pos, kind) = match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let key = unexpected.first().cloned().unwrap_or_default();
                let pos = node.key(&key).map_or(node.pos, |k| k.pos);
                let allowed = allowed_keys(error.schema_path());
                let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
                (
                    pos,
                    YamlErrorKind::UnknownKey {
                        suggest: suggest(&key, &allowed, true),
                        key,
                    },
                )
            }
            ValidationErrorKind::PropertyNames { error } => {
                let key = error.instance().as_str().unwrap_or_default().to_owned();
                let pos = node.key(&key).map_or(node.pos, |k| k.pos);
                let what = match segments.last() {
                    Some(Segment::Key(k)) if k == "args" => {
                        "an argument name (letters, digits and '_', not starting with a digit)"
                    }
                    Some(Segment::Key(k)) if k == "env" => {
                        "a variable name (no '=' or white space)"
                    }
                    _ => "a name here",
                };
                (
                    pos,
                    YamlErrorKind::Schema {
                        message: format!("{key:?} is not {what}"),
                    },
                )
            }
            kind => {
                let message = match kind {
                    ValidationErrorKind::OneOfNotValid { .. } => {
                        "expected a string or a list of strings".to_owned()
                    }
                    // `1.20` loads as the float 1.2: say how to keep the text.
                    ValidationErrorKind::Type { .. } if matches!(node.value, Value::Float(_)) => {
                        format!("{error} (quote it to keep the text as written)")
                    }
                    _ => error.to_string(),
                };
                let message = match segments.last() {
                    Some(Segment::Key(k)) => format!("{k}: {message}"),
                    _ => message,
                };
                let message = if message.chars().count() > MAX_MESSAGE {
                    let cut: String = message.chars().take(MAX_MESSAGE).collect();
                    format!("{cut} ...")
                } else {
                    message
                };
                (node.pos, YamlErrorKind::Schema { message })
            }
        };
        // The first unknown key in the file (a misspelt key is also a missing one), else the
        // first error in the file.
        let rank = |k: &YamlErrorKind| !matches!(k, YamlErrorKind::UnknownKey { .. });
        if first
            .as_ref()
            .is_none_or(|(p, k)| (rank(&kind), pos) < (rank(k), *p))
        {
            first = Some((pos, kind));
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

/// The deepest node of `root` on the path.
fn walk<'a>(root: &'a Node, path: &[Segment]) -> &'a Node {
    let mut node = root;
    for segment in path {
        let next = match (segment, &node.value) {
            (Segment::Key(k), Value::Map(_)) => node.get(k),
            (Segment::Index(i), Value::Seq(items)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    node
}

/// The `properties` of the schema object whose `additionalProperties` failed, following
/// `$ref`s on the way.
fn allowed_keys(schema_path: &jsonschema::paths::Location) -> Vec<String> {
    let root: &serde_json::Value = &SCHEMA_JSON;
    let segments: Vec<String> = schema_path.into_iter().map(|s| s.to_string()).collect();
    let Some((_, parents)) = segments.split_last() else {
        return Vec::new();
    };
    let mut current = root;
    for segment in parents {
        let next = if segment == "$ref" {
            current
                .get("$ref")
                .and_then(|r| r.as_str())
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|pointer| root.pointer(pointer))
        } else {
            current.get(segment)
        };
        match next {
            Some(n) => current = n,
            None => return Vec::new(),
        }
    }
    current
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_compiles() {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        assert!(jsonschema::meta::is_valid(&schema));
        let _ = &*VALIDATOR;
    }
}
