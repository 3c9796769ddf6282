//! The errors of this crate.

use crate::Digest;

/// A malformed `sha256:<hex>` digest string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The string does not start with `sha256:`.
    #[error("digest {value:?} does not use the sha256 algorithm")]
    Algorithm {
        /// The rejected string.
        value: String,
    },
    /// The part after `sha256:` (or the whole of a bare hex digest) is not 64 lowercase hex
    /// digits.
    #[error("digest {value:?} does not have 64 lowercase hex digits")]
    Hex {
        /// The rejected string.
        value: String,
    },
}

/// Why a Definition could not be loaded.
///
/// Each variant about one op names it by digest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a protobuf `Definition`.
    #[error("the definition is not a valid protobuf Definition message")]
    DecodeDefinition {
        /// The decoder's complaint.
        #[source]
        source: prost::DecodeError,
    },
    /// An entry of `Definition.def` is not a protobuf `Op`.
    #[error("op {digest} (def entry {position}) is not a valid protobuf Op message")]
    DecodeOp {
        /// The digest of the entry's bytes.
        digest: Digest,
        /// The entry's position in `Definition.def`.
        position: usize,
        /// The decoder's complaint.
        #[source]
        source: prost::DecodeError,
    },
    /// `Definition.def` is empty.
    #[error("the definition has no ops")]
    Empty,
    /// The same op bytes appear twice in `Definition.def`.
    #[error("op {digest} appears more than once in the definition")]
    DuplicateOp {
        /// The repeated op.
        digest: Digest,
    },
    /// An input names its op with a string that is not a digest.
    #[error("op {digest}: input {input} has a malformed digest")]
    InputDigest {
        /// The op holding the input.
        digest: Digest,
        /// The input's position in `Op.inputs`.
        input: usize,
        /// What is wrong with the string.
        #[source]
        source: DigestError,
    },
    /// An input names an op that is not in the definition.
    #[error("op {digest}: input {input} refers to op {target}, which is not in the definition")]
    MissingInput {
        /// The op holding the input.
        digest: Digest,
        /// The input's position in `Op.inputs`.
        input: usize,
        /// The missing op.
        target: Digest,
    },
    /// An input asks for an output its op does not have.
    #[error(
        "op {digest}: input {input} asks for output {index} of op {target}, which has {outputs} output(s)"
    )]
    OutputOutOfRange {
        /// The op holding the input.
        digest: Digest,
        /// The input's position in `Op.inputs`.
        input: usize,
        /// The op the input refers to.
        target: Digest,
        /// The requested output index.
        index: i64,
        /// How many outputs `target` has.
        outputs: usize,
    },
    /// A field of an op's body refers to an input (or file action) that does not exist.
    #[error(
        "op {digest}: {field} is {index}, but the op has only {available} input(s) to refer to"
    )]
    InputIndexOutOfRange {
        /// The op.
        digest: Digest,
        /// Which field, such as `mounts[1].input`.
        field: String,
        /// The value of the field.
        index: i64,
        /// How many inputs the field may refer to.
        available: usize,
    },
    /// An exec mount's or file action's output number is not one of the op's outputs: each
    /// output is numbered once, from 0 to the number of outputs less one (-1 for none).
    #[error(
        "op {digest}: {field} is {index}, but the op's outputs are numbered 0 to {outputs} less one, once each"
    )]
    OutputIndex {
        /// The op.
        digest: Digest,
        /// Which field, such as `mounts[1].output`.
        field: String,
        /// The value of the field.
        index: i64,
        /// How many outputs the op has.
        outputs: usize,
    },
    /// The ops' inputs form a cycle.
    #[error("op {digest} depends on itself through a cycle of inputs")]
    Cycle {
        /// An op on the cycle.
        digest: Digest,
    },
    /// An op other than the last has no body (or one of a kind this crate does not know).
    #[error("op {digest} has no operation, or one of an unknown kind")]
    UnknownOpKind {
        /// The op.
        digest: Digest,
    },
    /// An op of a kind that only exists inside BuildKit.
    #[error("op {digest} is a {kind} op, which kiln does not support")]
    UnsupportedOpKind {
        /// The op.
        digest: Digest,
        /// The kind, such as `passthrough`.
        kind: &'static str,
    },
    /// The last op is not a terminal op (no body, exactly one input).
    #[error(
        "the last op {digest} is not a terminal op: it must have no operation and exactly one input ({problem})"
    )]
    NoTerminal {
        /// The last op.
        digest: Digest,
        /// What it has instead.
        problem: &'static str,
    },
    /// A metadata key is not a digest.
    #[error("metadata key {key:?} is not an op digest")]
    MetadataKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        #[source]
        source: DigestError,
    },
    /// A metadata key names an op that is not in the definition.
    #[error("metadata refers to op {digest}, which is not in the definition")]
    MetadataForUnknownOp {
        /// The key.
        digest: Digest,
    },
}

/// An error and its causes on one line, `: `-separated, as Go prints a wrapped error (and
/// BuildKit's messages read).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
