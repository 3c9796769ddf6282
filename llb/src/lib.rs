//! kiln-llb: the build graph, wire-compatible with BuildKit's LLB.
//!
//! LLB ("low-level build") is the content-addressed DAG every kiln build runs: each vertex is an
//! [`pb::Op`] (a source such as an image or a local directory, an exec step, a file operation,
//! a merge or a diff), named by the sha256 [`Digest`] of its marshalled bytes, and a
//! [`pb::Definition`] lists the marshalled ops, dependencies first, ending with a terminal op
//! whose single input is the result. The protobuf types follow BuildKit's `solver/pb/ops.proto`
//! field for field, so a Definition marshalled by BuildKit tooling loads here unchanged, and
//! ops marshalled here ([`marshal_op`]) have BuildKit's bytes and digests.
//!
//! # Place in the data path
//!
//! ```text
//! Dockerfile --frontend--> Definition --[this crate: load + validate]--> LoadedDefinition --> solver
//!            (uses the builder)         (or from external tools)
//! ```
//!
//! # Principal types
//!
//! - [`pb`]: the generated protobuf messages ([`pb::Definition`], [`pb::Op`], [`pb::ExecOp`],
//!   [`pb::FileOp`], [`pb::OpMetadata`], ...).
//! - [`Digest`]: `sha256:<hex>`, the project's one digest type (kiln-cache names blobs, layers
//!   and snapshots with it); [`marshal_op`] and [`op_digest`] give an op's exact bytes and
//!   digest.
//! - [`LoadedDefinition`]: a validated graph (ops in dependency order with their metadata and
//!   the result [`Edge`]), what the solver consumes; loading fails with an [`Error`] naming the
//!   offending op.
//! - The builder: [`State`] and its sources ([`image`], [`local`], [`git`], [`http`],
//!   [`scratch`]), [`State::run`] returning an [`ExecState`], [`State::file`] with
//!   [`FileAction`] chains, [`merge`] and [`diff`]; [`State::marshal`] produces a Definition.
//! - [`dump`]: `buildctl debug dump-llb`-identical JSON lines, and Graphviz DOT.
//!
//! # Example
//!
//! ```
//! use kiln_llb::{FileAction, LoadedDefinition, MkdirOptions, image, prost::Message as _};
//!
//! let built = image("busybox")
//!     .run(["sh", "-c", "echo hi > /hi"])
//!     .root()
//!     .file(FileAction::mkdir("/out", 0o755, MkdirOptions::default()));
//! let definition = built.marshal();
//! let bytes = definition.encode_to_vec();
//!
//! let loaded = LoadedDefinition::from_bytes(&bytes)?;
//! assert_eq!(loaded.ops().len(), 3); // image, exec, file (the terminal op is not listed)
//! assert_eq!(loaded.result().digest, loaded.ops()[2].digest());
//! let Some(kiln_llb::pb::op::Op::Source(source)) = loaded.ops()[0].body() else { panic!() };
//! assert_eq!(source.identifier, "docker-image://docker.io/library/busybox:latest");
//! # Ok::<(), kiln_llb::Error>(())
//! ```

mod builder;
mod definition;
mod digest;
pub mod dump;
mod error;
mod marshal;
mod modestr;
pub mod pb;

pub use crate::builder::{
    CUSTOM_NAME, Chown, CopyOptions, ExecState, FileAction, GitOptions, HttpOptions, LocalOptions,
    MkdirOptions, MountOptions, State, default_platform, diff, git, git_with, http, http_with,
    image, image_for, local, local_with, merge, normalize_image_ref, scratch,
};
pub use crate::definition::{Edge, LoadedDefinition, LoadedOp, op_kind, order_graph, output_count};
pub use crate::digest::Digest;
pub use crate::error::{DigestError, Error};
pub use crate::marshal::{marshal_op, op_digest};
pub use crate::modestr::{ModeSet, ModeSyntaxError};
pub use prost;
