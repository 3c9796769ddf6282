//! Why a build failed: a Definition kiln cannot plan ([`LlbError`]), an LLB op that failed
//! while it was keyed or ran ([`Error`]), or either in a solve ([`BuildError`]).
//!
//! The scheduler is generic over its ops, so it sees their errors boxed as an
//! [`OpError`](crate::OpError); the LLB ops fail with [`Error`], which the scheduler keeps as
//! that box's content. Errors from below (the store, the file system, the network) pass
//! through unchanged; each text is the one a user sees after the failed step's name.

use std::fmt;
use std::path::PathBuf;

use crate::llbsolver::fileop::FileError;
use crate::{ExecStatus, SolveError};

/// Why an LLB op failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] kiln_cache::Error),
    /// A file action failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// An I/O error outside a file action.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A system call failed.
    #[error(transparent)]
    Sys(#[from] nix::errno::Errno),
    /// An HTTP request failed.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// Work on the blocking pool panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Blocking(tokio::task::JoinError),

    /// An op, a mount or a file action names an input the op does not have.
    #[error("{by}refers to input {index}, which does not exist")]
    MissingInput {
        /// What names it.
        by: InputOf,
        /// The index.
        index: i64,
    },
    /// An exec op without a mount at `/`.
    #[error("exec op has no root mount")]
    NoRootMount,
    /// A source's attributes are invalid.
    #[error("{identifier}: {message}")]
    SourceAttribute {
        /// The source.
        identifier: String,
        /// What is wrong.
        message: String,
    },
    /// A container's mount that is not there was asked for.
    #[error("the container has no mount {index}")]
    NoSuchMount {
        /// The mount's index.
        index: usize,
    },
    /// A container's mount whose files only its processes see was asked for.
    #[error("mount {index} of the container is a {kind}: only its processes see its files")]
    UnreadableMount {
        /// The mount's index.
        index: usize,
        /// What kind of mount it is.
        kind: &'static str,
    },
    /// A step asks for more than the build's entitlements allow.
    #[error("{entitlement} is not allowed")]
    NotEntitled {
        /// The entitlement (`network.host`, `security.insecure`).
        entitlement: &'static str,
    },
    /// A secret the build was not given.
    #[error("secret {id} not found")]
    SecretNotFound {
        /// The secret id.
        id: String,
    },
    /// A secret of bytes other than text, asked for as an environment variable.
    #[error("secret {id} is not UTF-8 text, so it cannot be the environment variable {name}")]
    SecretNotText {
        /// The secret id.
        id: String,
        /// The variable.
        name: String,
    },
    /// The step's process ended with an exit code it is not allowed, or by a signal.
    #[error(
        "process \"{args}\" did not complete successfully: {}{}",
        Ended(*.status),
        Tail(.tail)
    )]
    ProcessFailed {
        /// The command line, space-separated.
        args: String,
        /// How it ended.
        status: ExecStatus,
        /// The last lines of its output.
        tail: String,
    },
    /// A read-only mount asked to be an output.
    #[error("the read-only mount at {dest} cannot have an output")]
    ReadOnlyOutput {
        /// The mount target.
        dest: String,
    },
    /// A mount's path inside its snapshot cannot be mounted.
    #[error("mounting {selector:?} of a snapshot at {dest}")]
    MountSelector {
        /// The path inside the snapshot.
        selector: String,
        /// The mount target.
        dest: String,
        /// What is wrong with it.
        #[source]
        source: SelectError,
    },
    /// A cache mount's source path inside its snapshot cannot seed the cache.
    #[error("the source {selector:?} of the cache mount at {dest}")]
    CacheMountSource {
        /// The path inside the snapshot.
        selector: String,
        /// The mount target.
        dest: String,
        /// What is wrong with it.
        #[source]
        source: SelectError,
    },
    /// A cache mount seed that is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The host path.
        path: PathBuf,
    },
    /// A mount type kiln does not make.
    #[error("mount type {mount_type} at {dest} is not supported yet")]
    UnsupportedMount {
        /// The LLB mount type.
        mount_type: i32,
        /// The mount target.
        dest: String,
    },
    /// Locking a `locked` cache mount did not lock it.
    #[error("locking a cache mount")]
    CacheMountLock,
    /// Every directory a `private` cache mount may use is taken.
    #[error("all {max} private cache directories of {id:?} are busy")]
    CacheMountBusy {
        /// The cache id.
        id: String,
        /// How many directories it may use.
        max: usize,
    },
    /// An SSH mount or a git source asks for an agent the build was not given.
    #[error(
        "no SSH key {id:?} forwarded from the client (pass `--ssh {id}` or `--ssh {id}=SOCKET`)"
    )]
    NoSshAgent {
        /// The SSH id.
        id: String,
    },
    /// The socket an SSH mount forwards through could not be made.
    #[error("creating an SSH agent socket")]
    SshSocket {
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// A local source names a directory the build was not given.
    #[error("no local directory named {name:?} was given (use --local {name}=DIR)")]
    NoLocalDirectory {
        /// The name.
        name: String,
    },
    /// A local source's directory could not be brought from the client.
    #[error("failed to transfer local directory {name:?}")]
    LocalSync {
        /// The local's name.
        name: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An image resolved to another digest than its source pins.
    #[error("image digest {resolved} for {reference} does not match expected checksum {expected}")]
    ImageChecksum {
        /// The image reference.
        reference: String,
        /// What it resolved to.
        resolved: String,
        /// The pinned digest.
        expected: String,
    },
    /// A download answered with an error status.
    #[error("downloading {url}: {status}")]
    DownloadStatus {
        /// The URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
    },
    /// A download announced more bytes than allowed.
    #[error("downloading {url}: {length} bytes is more than the {max} allowed")]
    DownloadLength {
        /// The URL.
        url: String,
        /// The announced length.
        length: u64,
        /// The limit.
        max: u64,
    },
    /// A download sent more bytes than allowed.
    #[error("downloading {url}: more than the {max} bytes allowed")]
    DownloadTooLarge {
        /// The URL.
        url: String,
        /// The limit.
        max: u64,
    },
    /// A download's digest is not the one its source pins.
    #[error("digest mismatch for {url}: expected {expected}, got {computed}")]
    DownloadDigest {
        /// The URL.
        url: String,
        /// The pinned digest.
        expected: String,
        /// The digest of what came.
        computed: String,
    },
    /// A git remote kiln refuses to reach.
    #[error("git remote {url:?} is not allowed: {reason}")]
    GitRemoteRefused {
        /// The remote.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// A git ref kiln refuses to pass to git.
    #[error("git ref {reference:?} is not allowed")]
    GitRefRefused {
        /// The ref.
        reference: String,
    },
    /// git could not be started.
    #[error("running git (is it installed?)")]
    GitMissing {
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// git failed.
    #[error("git {command}: {stderr}")]
    Git {
        /// The git command (`fetch`, `checkout`, ...).
        command: String,
        /// What it wrote to its standard error, trimmed.
        stderr: String,
    },
    /// The remote has no such ref.
    #[error("git ref {reference:?} not found in {url}")]
    GitRefNotFound {
        /// The ref.
        reference: String,
        /// The remote.
        url: String,
    },
    /// A `git.checksum` that is not hexadecimal.
    #[error("invalid checksum {checksum} for Git URL, expected hex commit hash")]
    GitChecksumSyntax {
        /// The checksum.
        checksum: String,
    },
    /// `git.fetchbycommit` without a checksum.
    #[error("fetch-by-commit requires a checksum or a commit SHA ref")]
    FetchByCommitWithoutChecksum,
    /// `git.fetchbycommit` with a checksum shorter than a commit.
    #[error("fetch-by-commit requires a full commit SHA checksum, got {checksum:?}")]
    FetchByCommitPartialChecksum {
        /// The checksum.
        checksum: String,
    },
    /// The commit a ref resolved to does not match `git.checksum`.
    #[error("expected checksum to match {checksum}, got {commit}")]
    GitChecksum {
        /// The checksum.
        checksum: String,
        /// The commit.
        commit: String,
    },
    /// Updating a checkout's submodules failed.
    #[error("failed to update submodules for {url}")]
    Submodules {
        /// The remote.
        url: String,
        /// Why.
        #[source]
        error: Box<Error>,
    },
    /// `git log` gave a commit time that is not a number.
    #[error("invalid commit time {time:?} of {commit}")]
    CommitTime {
        /// What git printed.
        time: String,
        /// The commit.
        commit: String,
    },
    /// A git source's subdirectory that is not a directory of the checkout.
    #[error("{subdir:?} is not a directory in {url}")]
    GitSubdirectory {
        /// The subdirectory.
        subdir: String,
        /// The remote.
        url: String,
    },
    /// A copy action without a source to copy from.
    #[error("copy without a source")]
    CopyWithoutSource,
    /// A file action without an action.
    #[error("file action without an action")]
    NoFileAction,
}

/// Why a Definition cannot be turned into a graph.
#[derive(Debug, thiserror::Error)]
pub enum LlbError {
    /// An op kind kiln does not run yet.
    #[error("op {digest}: {kind} ops are not supported")]
    Unsupported {
        /// The op digest.
        digest: String,
        /// What it is.
        kind: String,
    },
    /// A source op attribute kiln cannot read.
    #[error("op {digest}: {message}")]
    BadAttribute {
        /// The op digest.
        digest: String,
        /// What is wrong with it.
        message: String,
    },
    /// An exec op asks for more than the build's entitlements allow (`--allow`), found when
    /// the Definition is loaded.
    #[error("{entitlement} is not allowed")]
    NotEntitled {
        /// The op digest.
        digest: String,
        /// The entitlement (`network.host`, `security.insecure`).
        entitlement: &'static str,
    },
    /// A field kiln refuses rather than build something other than it asks (see `validate`).
    #[error("op {digest}: {field} is not supported: {reason}")]
    Refused {
        /// The op digest.
        digest: String,
        /// The field or attribute.
        field: String,
        /// Why.
        reason: String,
    },
    /// A source attribute kiln does not know.
    #[error("op {digest}: unknown attribute {key:?} for {scheme} sources")]
    UnknownAttribute {
        /// The op digest.
        digest: String,
        /// The source's scheme.
        scheme: &'static str,
        /// The attribute.
        key: String,
    },
    /// A source identifier kiln does not know.
    #[error("op {digest}: unsupported source {identifier:?}")]
    UnsupportedSource {
        /// The op digest.
        digest: String,
        /// The identifier.
        identifier: String,
    },
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Definition could not be turned into a graph.
    #[error(transparent)]
    Graph(#[from] LlbError),
    /// Solving failed.
    #[error(transparent)]
    Solve(#[from] SolveError),
}

/// What names an input, for [`Error::MissingInput`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputOf {
    /// An exec op's mount.
    Mount,
    /// A merge or diff op.
    Merge,
    /// A file action.
    FileAction,
}

impl fmt::Display for InputOf {
    /// The start of the error's text: what refers to the input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mount => "mount ",
            Self::Merge => "",
            Self::FileAction => "file action ",
        })
    }
}

/// How a process ended, as BuildKit words it.
struct Ended(ExecStatus);

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ExecStatus::Code(code) => write!(f, "exit code: {code}"),
            ExecStatus::Signal(signal) => write!(f, "signal: {signal}"),
        }
    }
}

/// A process's last lines after a blank line, or nothing without output.
struct Tail<'a>(&'a str);

impl fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        write!(f, "\n\n{}", self.0)
    }
}

/// Why a path inside a snapshot cannot be selected (for a mount's or a cache mount's source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// Resolving it inside the snapshot failed (a link loop, a path too deep, I/O).
    #[error(transparent)]
    Resolve(#[from] kiln_fsutil::Error),
    /// Nothing is there.
    #[error("{}: no such file or directory", path.display())]
    Missing {
        /// The path, resolved inside the snapshot.
        path: PathBuf,
    },
}
