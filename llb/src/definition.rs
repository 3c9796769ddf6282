//! Loading a marshalled Definition into a validated graph.
//!
//! # Overview
//!
//! [`LoadedDefinition::from_bytes`] turns the bytes a client sends into the graph the solver
//! walks:
//!
//! 1. decode the `Definition`, then each entry of `def` as an `Op`, naming each by the sha256 of
//!    its bytes (as they stand, never re-marshalled);
//! 2. check the last entry is the terminal op (no body, one input naming the result);
//! 3. check every other op has a known body whose input-index fields stay in range;
//! 4. resolve every input edge to an op of the definition and an output that op has;
//! 5. order the ops so each comes after its inputs, failing on a cycle;
//! 6. check every metadata key names an op.

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;

use crate::digest::Digest;
use crate::error::Error;
use crate::pb;

/// One output of one op: the value that flows along an edge of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    /// The op producing the value.
    pub digest: Digest,
    /// Which of its outputs.
    pub index: usize,
}

/// One op of a [`LoadedDefinition`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedOp {
    digest: Digest,
    bytes: Vec<u8>,
    op: pb::Op,
    inputs: Vec<Edge>,
    outputs: usize,
    metadata: Option<pb::OpMetadata>,
}

impl LoadedOp {
    /// The sha256 of the op's marshalled bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The op's marshalled bytes, exactly as found in `Definition.def`.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The decoded op.
    pub fn op(&self) -> &pb::Op {
        &self.op
    }

    /// The op's body (never `None` for ops returned by [`LoadedDefinition::ops`]).
    pub fn body(&self) -> Option<&pb::op::Op> {
        self.op.op.as_ref()
    }

    /// The op's input edges, in `Op.inputs` order.
    pub fn inputs(&self) -> &[Edge] {
        &self.inputs
    }

    /// How many outputs the op has.
    pub fn output_count(&self) -> usize {
        self.outputs
    }

    /// The op's entry in `Definition.metadata`, if any.
    pub fn metadata(&self) -> Option<&pb::OpMetadata> {
        self.metadata.as_ref()
    }
}

/// A validated Definition: its ops in dependency order and the edge it evaluates to.
///
/// Loading checks that every entry of `def` decodes, that the last is the terminal op (no
/// body, one input), that every other op has a known body whose input-index fields are in
/// range, that every input names an op of the definition and an output it has, that the
/// inputs form no cycle, and that every metadata key names an op.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedDefinition {
    ops: Vec<LoadedOp>,
    positions: HashMap<Digest, usize>,
    terminal: Digest,
    result: Edge,
    metadata: BTreeMap<Digest, pb::OpMetadata>,
    definition: pb::Definition,
}

/// The op marshalled at `position` of a Definition's `def`, with its digest.
pub(crate) fn decode_op(position: usize, bytes: &[u8]) -> Result<(Digest, pb::Op), Error> {
    let digest = Digest::from_bytes(bytes);
    let op = pb::Op::decode(bytes).map_err(|source| Error::DecodeOp {
        digest,
        position,
        source,
    })?;
    Ok((digest, op))
}

impl LoadedDefinition {
    /// Decodes and validates a marshalled `Definition`. Never panics, whatever the bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let definition =
            pb::Definition::decode(bytes).map_err(|source| Error::DecodeDefinition { source })?;
        Self::from_definition(definition)
    }

    /// Validates a decoded `Definition`.
    pub fn from_definition(definition: pb::Definition) -> Result<Self, Error> {
        let Some((last_bytes, body_bytes)) = definition.def.split_last() else {
            return Err(Error::Empty);
        };

        // 1. Decode; name each op by its bytes.
        let mut decoded = Vec::with_capacity(body_bytes.len());
        let mut positions = HashMap::with_capacity(body_bytes.len());
        for (position, bytes) in definition.def.iter().enumerate() {
            let (digest, op) = decode_op(position, bytes)?;
            if positions.insert(digest, position).is_some() {
                return Err(Error::DuplicateOp { digest });
            }
            decoded.push((digest, op));
        }
        let (terminal, terminal_op) = decoded.pop().expect("def is not empty");
        positions.remove(&terminal);
        debug_assert_eq!(Digest::from_bytes(last_bytes), terminal);

        // 2. The terminal op.
        let problem = match (&terminal_op.op, terminal_op.inputs.len()) {
            (Some(_), _) => Some("it has an operation"),
            (None, 0) => Some("it has no input"),
            (None, 1) => None,
            (None, _) => Some("it has several inputs"),
        };
        if let Some(problem) = problem {
            return Err(Error::NoTerminal {
                digest: terminal,
                problem,
            });
        }

        // 3. Bodies, and output counts.
        let mut outputs = HashMap::with_capacity(decoded.len());
        for (digest, op) in &decoded {
            check_body(*digest, op)?;
            outputs.insert(*digest, output_count(op));
        }

        // 4. Edges.
        let resolve = |digest: Digest, op: &pb::Op| -> Result<Vec<Edge>, Error> {
            op.inputs
                .iter()
                .enumerate()
                .map(|(input, edge)| resolve_edge(digest, input, edge, &outputs))
                .collect()
        };
        let result = resolve(terminal, &terminal_op)?[0];
        let mut ops = Vec::with_capacity(decoded.len());
        for ((digest, op), bytes) in decoded.into_iter().zip(body_bytes) {
            let inputs = resolve(digest, &op)?;
            let outputs = outputs[&digest];
            ops.push(LoadedOp {
                digest,
                bytes: bytes.clone(),
                op,
                inputs,
                outputs,
                metadata: None,
            });
        }

        // 5. Dependency order.
        let order = topological_order(&ops, &positions)?;
        let mut slots: Vec<Option<LoadedOp>> = ops.into_iter().map(Some).collect();
        let mut ops: Vec<LoadedOp> = order
            .into_iter()
            .map(|i| slots[i].take().expect("each op placed once"))
            .collect();
        let positions = ops
            .iter()
            .enumerate()
            .map(|(i, op)| (op.digest, i))
            .collect::<HashMap<_, _>>();

        // 6. Metadata.
        let mut metadata = BTreeMap::new();
        for (key, value) in &definition.metadata {
            let digest = Digest::parse(key).map_err(|source| Error::MetadataKey {
                key: key.clone(),
                source,
            })?;
            if digest != terminal && !positions.contains_key(&digest) {
                return Err(Error::MetadataForUnknownOp { digest });
            }
            metadata.insert(digest, value.clone());
        }
        for op in &mut ops {
            op.metadata = metadata.get(&op.digest).cloned();
        }

        tracing::debug!(ops = ops.len(), %terminal, "loaded definition");
        Ok(Self {
            ops,
            positions,
            terminal,
            result,
            metadata,
            definition,
        })
    }

    /// The ops, each after all of its inputs; the terminal op is not among them.
    pub fn ops(&self) -> &[LoadedOp] {
        &self.ops
    }

    /// The op with this digest (not the terminal op).
    pub fn get(&self, digest: &Digest) -> Option<&LoadedOp> {
        self.positions.get(digest).map(|&i| &self.ops[i])
    }

    /// The metadata of an op (or of the terminal op), if the definition has any.
    pub fn metadata(&self, digest: &Digest) -> Option<&pb::OpMetadata> {
        self.metadata.get(digest)
    }

    /// The digest of the terminal op.
    pub fn terminal(&self) -> Digest {
        self.terminal
    }

    /// The edge the whole definition evaluates to: the terminal op's input.
    pub fn result(&self) -> Edge {
        self.result
    }

    /// The definition as it was loaded.
    pub fn definition(&self) -> &pb::Definition {
        &self.definition
    }
}

/// The name of an op's kind (`exec`, `source`, `file`, `build`, `merge`, `diff`, `passthrough`),
/// or `None` for an op without a body, such as the terminal op.
pub fn op_kind(op: &pb::Op) -> Option<&'static str> {
    Some(match op.op.as_ref()? {
        pb::op::Op::Exec(_) => "exec",
        pb::op::Op::Source(_) => "source",
        pb::op::Op::File(_) => "file",
        pb::op::Op::Build(_) => "build",
        pb::op::Op::Merge(_) => "merge",
        pb::op::Op::Diff(_) => "diff",
        pb::op::Op::Passthrough(_) => "passthrough",
    })
}

/// The output of an exec op's mount, if it makes one: bind and cache mounts do; as in
/// BuildKit, the `output` field of a secret, SSH or tmpfs mount means nothing (its Dockerfile
/// frontend leaves it 0 there).
pub fn mount_output(mount: &pb::Mount) -> Option<usize> {
    // An unknown type counts as one that does: the solver refuses it by name later.
    let makes_output = !matches!(
        pb::MountType::try_from(mount.mount_type),
        Ok(pb::MountType::Secret | pb::MountType::Ssh | pb::MountType::Tmpfs)
    );
    makes_output
        .then(|| usize::try_from(mount.output).ok())
        .flatten()
}

/// How many outputs an op has: exec and file ops one per mount or action with `output >= 0`,
/// other kinds one, an op without a body none.
pub fn output_count(op: &pb::Op) -> usize {
    match &op.op {
        Some(pb::op::Op::Exec(exec)) => exec.mounts.iter().filter_map(mount_output).count(),
        Some(pb::op::Op::File(file)) => file.actions.iter().filter(|a| a.output >= 0).count(),
        Some(pb::op::Op::Passthrough(pass)) => pass.outputs.len(),
        Some(_) => 1,
        None => 0,
    }
}

fn resolve_edge(
    digest: Digest,
    input: usize,
    edge: &pb::Input,
    outputs: &HashMap<Digest, usize>,
) -> Result<Edge, Error> {
    let target = Digest::parse(&edge.digest).map_err(|source| Error::InputDigest {
        digest,
        input,
        source,
    })?;
    let Some(&count) = outputs.get(&target) else {
        return Err(Error::MissingInput {
            digest,
            input,
            target,
        });
    };
    match usize::try_from(edge.index) {
        Ok(index) if index < count => Ok(Edge {
            digest: target,
            index,
        }),
        _ => Err(Error::OutputOutOfRange {
            digest,
            input,
            target,
            index: edge.index,
            outputs: count,
        }),
    }
}

/// Checks the body of a non-terminal op: a known kind whose input-index fields are in range.
fn check_body(digest: Digest, op: &pb::Op) -> Result<(), Error> {
    let inputs = op.inputs.len();
    let check = |field: String, index: i64, allow_empty: bool, available: usize| {
        let ok = (allow_empty && index == -1)
            || usize::try_from(index).is_ok_and(|index| index < available);
        if ok {
            Ok(())
        } else {
            Err(Error::InputIndexOutOfRange {
                digest,
                field,
                index,
                available,
            })
        }
    };
    match &op.op {
        None => return Err(Error::UnknownOpKind { digest }),
        Some(pb::op::Op::Passthrough(_)) => {
            return Err(Error::UnsupportedOpKind {
                digest,
                kind: "passthrough",
            });
        }
        Some(pb::op::Op::Source(_) | pb::op::Op::Build(_)) => {}
        Some(pb::op::Op::Exec(exec)) => {
            for (i, mount) in exec.mounts.iter().enumerate() {
                check(format!("mounts[{i}].input"), mount.input, true, inputs)?;
            }
            check_outputs(
                digest,
                exec.mounts
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| mount_output(m).is_some() || m.output < 0)
                    .map(|(i, m)| (format!("mounts[{i}].output"), m.output)),
            )?;
        }
        Some(pb::op::Op::File(file)) => {
            // An action may also refer to the result of an earlier action, numbered after
            // the op's inputs.
            for (i, action) in file.actions.iter().enumerate() {
                check(
                    format!("actions[{i}].input"),
                    action.input,
                    true,
                    inputs + i,
                )?;
                check(
                    format!("actions[{i}].secondaryInput"),
                    action.secondary_input,
                    true,
                    inputs + i,
                )?;
            }
            check_outputs(
                digest,
                file.actions
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (format!("actions[{i}].output"), a.output)),
            )?;
        }
        Some(pb::op::Op::Merge(merge)) => {
            for (i, input) in merge.inputs.iter().enumerate() {
                check(format!("inputs[{i}].input"), input.input, false, inputs)?;
            }
        }
        Some(pb::op::Op::Diff(diff)) => {
            if let Some(lower) = &diff.lower {
                check("lower.input".to_owned(), lower.input, true, inputs)?;
            }
            if let Some(upper) = &diff.upper {
                check("upper.input".to_owned(), upper.input, true, inputs)?;
            }
        }
    }
    Ok(())
}

/// Checks that the output numbers of an exec op's mounts or a file op's actions are -1 (none)
/// or each of 0 to n-1 once, n being how many are not -1: the solver sizes its results by them.
fn check_outputs(
    digest: Digest,
    fields: impl Iterator<Item = (String, i64)> + Clone,
) -> Result<(), Error> {
    let outputs = fields.clone().filter(|(_, o)| *o != -1).count();
    let mut seen = vec![false; outputs];
    for (field, index) in fields {
        if index == -1 {
            continue;
        }
        match usize::try_from(index).ok().and_then(|i| seen.get_mut(i)) {
            Some(used) if !*used => *used = true,
            _ => {
                return Err(Error::OutputIndex {
                    digest,
                    field,
                    index,
                    outputs,
                });
            }
        }
    }
    Ok(())
}

/// Orders ops so that each comes after its inputs, keeping the given order where it allows.
///
/// Iterative depth-first search (the graph may be deep), emitting each op after its inputs.
fn topological_order(
    ops: &[LoadedOp],
    positions: &HashMap<Digest, usize>,
) -> Result<Vec<usize>, Error> {
    let edges: Vec<Vec<usize>> = ops
        .iter()
        .map(|op| op.inputs.iter().map(|e| positions[&e.digest]).collect())
        .collect();
    order_graph(&edges).map_err(|i| Error::Cycle {
        digest: ops[i].digest,
    })
}

/// Depth-first post-order over `edges` (node -> its dependencies, all in range): every node
/// after the nodes it depends on. `Err(node)` names a node on a cycle. Iterative, so a deep
/// hostile graph cannot overflow the stack; linear in nodes and edges.
pub fn order_graph(edges: &[Vec<usize>]) -> Result<Vec<usize>, usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    let mut order = Vec::with_capacity(edges.len());
    for root in 0..edges.len() {
        if marks[root] != Mark::New {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        marks[root] = Mark::Open;
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&dep) = edges[node].get(*next) {
                *next += 1;
                match marks[dep] {
                    Mark::New => {
                        marks[dep] = Mark::Open;
                        stack.push((dep, 0));
                    }
                    Mark::Open => return Err(dep),
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::order_graph;

    #[test]
    fn order_puts_dependencies_first() {
        // 0 <- 2 <- 1, and 3 alone.
        let edges = vec![vec![], vec![2], vec![0], vec![]];
        assert_eq!(order_graph(&edges), Ok(vec![0, 2, 1, 3]));
    }

    #[test]
    fn order_detects_cycles() {
        let edges = vec![vec![1], vec![2], vec![0]];
        assert!(order_graph(&edges).is_err());
        let self_loop = vec![vec![], vec![1]];
        assert_eq!(order_graph(&self_loop), Err(1));
    }
}
