//! The YAML document as a tree whose every node and mapping key knows its position, loaded
//! with `saphyr` (a YAML 1.2 loader that keeps spans and refuses duplicate keys and runaway
//! aliases), and its JSON form for the schema.

use saphyr::{LoadableYamlNode as _, MarkedYaml, Scalar, YamlData};

use super::error::YamlErrorKind;

/// A position in the file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// A mapping key with its position.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) pos: Pos,
}

/// A node and where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) pos: Pos,
    pub(crate) value: Value,
}

/// What a node holds.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Node {
    /// The value of `key` in a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.entries()
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// The key named `key` in a mapping.
    pub(crate) fn key(&self, key: &str) -> Option<&Key> {
        self.entries()
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, _)| k)
    }

    /// The entries of a mapping (none for other nodes).
    pub(crate) fn entries(&self) -> &[(Key, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The items of a sequence (none for other nodes).
    pub(crate) fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// A scalar as text: strings as they are, integers and booleans as YAML writes them.
    pub(crate) fn text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The JSON form of the node, for the schema.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Loads the one document of `text`.
pub(crate) fn load(text: &str) -> Result<Node, (Pos, YamlErrorKind)> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let m = e.marker();
        (
            Pos {
                line: m.line(),
                column: m.col() + 1,
            },
            YamlErrorKind::Syntax {
                message: e.info().to_owned(),
            },
        )
    })?;
    match docs.as_slice() {
        [doc] => convert(doc),
        [] => Err((
            Pos { line: 1, column: 1 },
            YamlErrorKind::Documents { count: 0 },
        )),
        [_, second, ..] => Err((
            pos_of(second),
            YamlErrorKind::Documents { count: docs.len() },
        )),
    }
}

fn pos_of(node: &MarkedYaml<'_>) -> Pos {
    Pos {
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

fn convert(node: &MarkedYaml<'_>) -> Result<Node, (Pos, YamlErrorKind)> {
    let pos = pos_of(node);
    let value = match &node.data {
        YamlData::Value(scalar) => scalar_value(scalar),
        YamlData::Representation(text, _, _) => Value::Str(text.to_string()),
        YamlData::Sequence(items) => {
            Value::Seq(items.iter().map(convert).collect::<Result<_, _>>()?)
        }
        YamlData::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map {
                let name = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                    YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                    _ => return Err((pos_of(k), YamlErrorKind::KeyNotString)),
                };
                entries.push((
                    Key {
                        name,
                        pos: pos_of(k),
                    },
                    convert(v)?,
                ));
            }
            Value::Map(entries)
        }
        YamlData::Tagged(..) => {
            return Err((pos, YamlErrorKind::Unsupported { what: "tags" }));
        }
        YamlData::Alias(_) => {
            return Err((pos, YamlErrorKind::Unsupported { what: "aliases" }));
        }
        YamlData::BadValue => return Err((pos, YamlErrorKind::BadValue)),
    };
    Ok(Node { pos, value })
}

fn scalar_value(scalar: &Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Int(*i),
        Scalar::FloatingPoint(f) => Value::Float(f.0),
        Scalar::String(s) => Value::Str(s.to_string()),
    }
}
