//! Merge and diff ops: states combined from other states' layers. An op of the same kind
//! (several filesystem inputs, one output) goes here.

use std::sync::Arc;

use super::{Inputs, Node, State, caps, scratch};
use crate::pb;

/// Layers `states` on top of one another, the first at the bottom; scratch inputs are skipped.
pub fn merge(states: &[State]) -> State {
    let mut inputs = Inputs::default();
    let mut merge_inputs = Vec::new();
    for state in states.iter().filter(|s| !s.is_scratch()) {
        merge_inputs.push(pb::MergeInput {
            input: inputs.index(state),
        });
    }
    if merge_inputs.is_empty() {
        return scratch();
    }
    let node = Node {
        op: pb::Op {
            constraints: Some(pb::WorkerConstraints::default()),
            op: Some(pb::op::Op::Merge(pb::MergeOp {
                inputs: merge_inputs,
            })),
            ..Default::default()
        },
        inputs: inputs.list,
        metadata: caps(["mergeop"]),
    };
    states[0].derive(Arc::new(node), 0)
}

/// The changes that turn `lower` into `upper`.
pub fn diff(lower: &State, upper: &State) -> State {
    let mut inputs = Inputs::default();
    let lower_index = inputs.index(lower);
    let upper_index = inputs.index(upper);
    let node = Node {
        op: pb::Op {
            constraints: Some(pb::WorkerConstraints::default()),
            op: Some(pb::op::Op::Diff(pb::DiffOp {
                lower: Some(pb::LowerDiffInput { input: lower_index }),
                upper: Some(pb::UpperDiffInput { input: upper_index }),
            })),
            ..Default::default()
        },
        inputs: inputs.list,
        metadata: caps(["diffop"]),
    };
    upper.derive(Arc::new(node), 0)
}
