//! The cache keys of one build, as the solver hands them to a cache export, and the record
//! digests both directions of the remote cache agree on.
//!
//! A [`BuildKeys`] lists every vertex a build reached, inputs before the vertices that read
//! them: its cache key, which output of which earlier vertex each input reads (and through
//! which selector), and, where the build has them, its outputs as committed snapshots. It is
//! plain data, made by the solver and read by the exporters, so neither depends on the other.
//!
//! In a cache export each output of a vertex is one record, whose digest is
//! [`output_record_digest`] of the vertex's key and the output's index; an import answers a
//! lookup of a key with the records of its outputs `0, 1, …`.

use kiln_llb::Digest;

/// The cache keys of one build, inputs first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildKeys {
    /// The vertices, each after the vertices it reads.
    pub nodes: Vec<KeyNode>,
    /// The build's result.
    pub target: KeyEdge,
    /// The build's other results: one per further platform of a multi-platform build
    /// ([`BuildKeys::merge`]).
    pub more_targets: Vec<KeyEdge>,
}

impl BuildKeys {
    /// Every result of the build: the target, then the others.
    pub fn targets(&self) -> impl Iterator<Item = KeyEdge> + '_ {
        std::iter::once(self.target).chain(self.more_targets.iter().copied())
    }

    /// Adds the keys of another solve of the same build (another platform's graph): a vertex
    /// both reached (the same key) is one node, the other's results become more targets.
    ///
    /// ```
    /// use kiln_cache::{BuildKeys, Digest, KeyEdge, KeyInput, KeyNode};
    /// let node = |name: &[u8], inputs: Vec<KeyInput>| KeyNode {
    ///     key: Digest::from_bytes(name),
    ///     alternatives: Vec::new(),
    ///     inputs,
    ///     outputs: None,
    /// };
    /// let read = |node| vec![KeyInput { edge: KeyEdge { node, output: 0 }, selector: None }];
    /// let shared = node(b"context", Vec::new());
    /// let mut amd64 = BuildKeys {
    ///     nodes: vec![shared.clone(), node(b"amd64 run", read(0))],
    ///     target: KeyEdge { node: 1, output: 0 },
    ///     more_targets: Vec::new(),
    /// };
    /// let arm64 = BuildKeys {
    ///     nodes: vec![shared, node(b"arm64 run", read(0))],
    ///     target: KeyEdge { node: 1, output: 0 },
    ///     more_targets: Vec::new(),
    /// };
    /// amd64.merge(arm64);
    /// assert_eq!(amd64.nodes.len(), 3);
    /// assert_eq!(amd64.nodes[2].inputs[0].edge.node, 0);
    /// assert_eq!(amd64.targets().collect::<Vec<_>>(), [
    ///     KeyEdge { node: 1, output: 0 },
    ///     KeyEdge { node: 2, output: 0 },
    /// ]);
    /// ```
    pub fn merge(&mut self, other: BuildKeys) {
        let mut known: std::collections::HashMap<Digest, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.key, i))
            .collect();
        let targets: Vec<KeyEdge> = other.targets().collect();
        let mut mapped = Vec::with_capacity(other.nodes.len());
        for mut node in other.nodes {
            if let Some(&at) = known.get(&node.key) {
                mapped.push(at);
                continue;
            }
            // Inputs come first, so each is mapped already.
            for input in &mut node.inputs {
                input.edge.node = mapped[input.edge.node];
            }
            let at = self.nodes.len();
            known.insert(node.key, at);
            mapped.push(at);
            self.nodes.push(node);
        }
        for edge in targets {
            let edge = KeyEdge {
                node: mapped[edge.node],
                output: edge.output,
            };
            if !self.targets().any(|t| t == edge) {
                self.more_targets.push(edge);
            }
        }
    }
}

/// One vertex of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNode {
    /// Its cache key (the definition-based one: nothing needs to run to know it).
    pub key: Digest,
    /// Other keys its outputs are known by (by the content of its inputs): an import that
    /// misses the definition-based key tries them, as the solver does locally.
    pub alternatives: Vec<Digest>,
    /// Its inputs, in order.
    pub inputs: Vec<KeyInput>,
    /// Its outputs, each a committed snapshot key (`None`: the empty file system), when the
    /// build has them (it ran the vertex or found it in the cache).
    pub outputs: Option<Vec<Option<String>>>,
}

/// An input of a vertex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInput {
    /// The output read.
    pub edge: KeyEdge,
    /// The part of it that matters to the vertex, if only a part does.
    pub selector: Option<String>,
}

/// An output of a vertex of a [`BuildKeys`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyEdge {
    /// The vertex's index in [`BuildKeys::nodes`].
    pub node: usize,
    /// The output's index.
    pub output: usize,
}

/// The digest of the cache record of output `output` of the vertex with cache key `key`.
///
/// ```
/// let key = kiln_cache::Digest::from_bytes(b"a key");
/// assert_ne!(
///     kiln_cache::output_record_digest(&key, 0),
///     kiln_cache::output_record_digest(&key, 1)
/// );
/// ```
pub fn output_record_digest(key: &Digest, output: usize) -> Digest {
    Digest::from_bytes(format!("{key}@{output}").as_bytes())
}
