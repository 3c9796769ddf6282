//! A typed API for building LLB graphs, in the spirit of BuildKit's Go `client/llb` package.
//!
//! A [`State`] is a filesystem value: the output of an op, or [`scratch`] (empty). Sources
//! ([`image`], [`local`], [`git`], [`http`]) start graphs; [`State::run`], [`State::file`],
//! [`merge()`] and [`diff`] derive new states. [`State::marshal`] turns the graph that produces a
//! state into a [`pb::Definition`]: ops in dependency order, each once, the terminal op last.
//! Equal graphs marshal to equal bytes.
//!
//! This file holds the graph itself ([`State`], its nodes and their inputs) and marshalling;
//! each kind of op is built beside it, and a new op kind gets a module of its own here:
//!
//! - `source`: the source ops (`docker-image://`, `local://`, `git://`, `http(s)://`);
//! - `exec`: [`State::run`] and [`ExecState`], with its mounts;
//! - `file`: [`State::file`] and the [`FileAction`] chains (mkdir, mkfile, rm, symlink, copy);
//! - `merge`: [`merge()`] and [`diff`].

mod exec;
mod file;
mod merge;
mod source;

use std::collections::HashMap;
use std::sync::Arc;

pub use exec::{ExecState, MountOptions};
pub use file::{Chown, CopyOptions, FileAction, MkdirOptions};
pub use merge::{diff, merge};
pub use source::{
    GitOptions, HttpOptions, LocalOptions, git, git_with, http, http_with, image, image_for, local,
    local_with, normalize_image_ref,
};

use crate::digest::Digest;
use crate::marshal::marshal_op;
use crate::pb;

/// Description key BuildKit and kiln show as an op's name.
pub const CUSTOM_NAME: &str = "llb.customname";

/// One op of a graph under construction; its inputs are other nodes' outputs.
#[derive(Debug)]
struct Node {
    /// The op without `inputs` (filled in at marshal time) and with body fields that refer to
    /// inputs by index into `inputs` below.
    op: pb::Op,
    inputs: Vec<Output>,
    metadata: pb::OpMetadata,
}

impl Drop for Node {
    /// Drops the graph behind this node iteratively: the default recursive drop would overflow
    /// the stack on long chains of ops.
    fn drop(&mut self) {
        let mut pending: Vec<Output> = std::mem::take(&mut self.inputs);
        while let Some(output) = pending.pop() {
            if let Some(mut node) = Arc::into_inner(output.node) {
                pending.append(&mut node.inputs);
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Output {
    node: Arc<Node>,
    index: i64,
}

/// A filesystem value in a graph under construction, with the process defaults (environment,
/// working directory, user, platform) that later [`State::run`] calls use.
#[derive(Debug, Clone, Default)]
pub struct State {
    output: Option<Output>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    user: Option<String>,
    platform: Option<pb::Platform>,
}

/// The empty filesystem.
pub fn scratch() -> State {
    State::default()
}

/// The platform of the running host (`linux` and the OCI name of its architecture).
pub fn default_platform() -> pb::Platform {
    crate::Platform::host().to_pb()
}

fn caps<'a>(names: impl IntoIterator<Item = &'a str>) -> pb::OpMetadata {
    pb::OpMetadata {
        caps: names.into_iter().map(|c| (c.to_owned(), true)).collect(),
        ..Default::default()
    }
}

/// Collects distinct input outputs, giving each an index.
#[derive(Default)]
struct Inputs {
    list: Vec<Output>,
}

impl Inputs {
    /// The input index of `state`, or -1 for scratch.
    fn index(&mut self, state: &State) -> i64 {
        let Some(output) = &state.output else {
            return -1;
        };
        let position = self
            .list
            .iter()
            .position(|o| Arc::ptr_eq(&o.node, &output.node) && o.index == output.index)
            .unwrap_or_else(|| {
                self.list.push(output.clone());
                self.list.len() - 1
            });
        position as i64
    }
}

impl State {
    /// Whether this is the empty filesystem.
    pub fn is_scratch(&self) -> bool {
        self.output.is_none()
    }

    /// Sets an environment variable for later [`State::run`] calls.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets the working directory for later [`State::run`] calls.
    pub fn cwd(mut self, dir: &str) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    /// Sets the user for later [`State::run`] calls.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// The platform of later exec ops: the one set, else the host's.
    pub fn platform_or_host(&self) -> pb::Platform {
        self.platform.clone().unwrap_or_else(default_platform)
    }

    /// Sets the platform of later exec ops.
    pub fn platform(mut self, platform: pb::Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Names the op producing this state (`llb.customname`), as progress output shows it.
    pub fn with_custom_name(self, name: &str) -> Self {
        self.with_metadata(|m| {
            m.description
                .insert(CUSTOM_NAME.to_owned(), name.to_owned());
        })
    }

    /// Edits the metadata of the op producing this state (no effect on scratch). Metadata does
    /// not change the op's digest.
    pub fn with_metadata(mut self, edit: impl FnOnce(&mut pb::OpMetadata)) -> Self {
        if let Some(output) = &mut self.output {
            let mut metadata = output.node.metadata.clone();
            edit(&mut metadata);
            output.node = Arc::new(Node {
                op: output.node.op.clone(),
                inputs: output.node.inputs.clone(),
                metadata,
            });
        }
        self
    }

    /// This state's process defaults, with a new filesystem value.
    fn derive(&self, node: Arc<Node>, index: i64) -> State {
        State {
            output: Some(Output { node, index }),
            ..self.clone()
        }
    }

    /// Marshals the graph producing this state: ops in dependency order, each once, then the
    /// terminal op. Scratch marshals to an empty Definition.
    pub fn marshal(&self) -> pb::Definition {
        let mut definition = pb::Definition::default();
        let Some(output) = &self.output else {
            return definition;
        };
        let mut done: HashMap<*const Node, Digest> = HashMap::new();
        let head = marshal_node(&output.node, &mut done, &mut definition);
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest: head.to_string(),
                index: output.index,
            }],
            ..Default::default()
        };
        definition.def.push(marshal_op(&terminal));
        definition
    }
}

/// Marshals `root` after its inputs (depth first, inputs in order), returning its digest.
///
/// Iterative, as graphs may be deep chains.
fn marshal_node(
    root: &Arc<Node>,
    done: &mut HashMap<*const Node, Digest>,
    definition: &mut pb::Definition,
) -> Digest {
    let mut stack: Vec<(&Arc<Node>, bool)> = vec![(root, false)];
    while let Some((node, inputs_done)) = stack.pop() {
        if done.contains_key(&Arc::as_ptr(node)) {
            continue;
        }
        if !inputs_done {
            stack.push((node, true));
            for input in node.inputs.iter().rev() {
                if !done.contains_key(&Arc::as_ptr(&input.node)) {
                    stack.push((&input.node, false));
                }
            }
            continue;
        }
        let mut op = node.op.clone();
        for input in &node.inputs {
            op.inputs.push(pb::Input {
                digest: done[&Arc::as_ptr(&input.node)].to_string(),
                index: input.index,
            });
        }
        let bytes = marshal_op(&op);
        let digest = Digest::from_bytes(&bytes);
        let key = digest.to_string();
        // Distinct nodes may marshal to the same op; keep it once.
        if !definition.metadata.contains_key(&key) {
            definition.def.push(bytes);
            definition.metadata.insert(key, node.metadata.clone());
        }
        done.insert(Arc::as_ptr(node), digest);
    }
    done[&Arc::as_ptr(root)]
}
