//! The error type of the cache crate.

use std::path::PathBuf;

use kiln_llb::Digest;

/// Everything that can go wrong in the content store, snapshots, layers and registry pulls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system operation failed (the path is in the message of the source).
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    /// A digest string is not `sha256:<64 lowercase hex>`.
    #[error(transparent)]
    InvalidDigest(#[from] kiln_llb::DigestError),
    /// Content did not hash to the digest it was expected to have.
    #[error("digest mismatch for {what}: expected {expected}, computed {computed}")]
    DigestMismatch {
        /// What was being verified (a blob, a layer's diff ID, a manifest).
        what: String,
        /// The digest the content should have.
        expected: Digest,
        /// The digest the content actually has.
        computed: Digest,
    },
    /// Content's size differs from the size its descriptor announces.
    #[error("size mismatch for {what}: its descriptor says {expected} bytes, it has {actual}")]
    SizeMismatch {
        /// What was being verified (a blob, a manifest).
        what: String,
        /// The size in the descriptor.
        expected: u64,
        /// The size of the content (or how far it got before it passed the expected size).
        actual: u64,
    },
    /// The metadata database reported an error.
    #[error("metadata database {path}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: Box<redb::Error>,
    },
    /// The metadata database stayed locked by another process for too long.
    #[error("metadata database {path} is busy (held by another kiln process)")]
    DatabaseBusy {
        /// The database file.
        path: PathBuf,
    },
    /// Another garbage collection kept the store's collection lock for too long.
    #[error("store {path} is busy (another garbage collection is running)")]
    StoreBusy {
        /// The lock file.
        path: PathBuf,
    },
    /// A metadata record could not be encoded or decoded.
    #[error("metadata record {key}")]
    Record {
        /// The record's key.
        key: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A tar entry would write outside the unpack root or do something the unpacker forbids.
    #[error("unsafe layer entry `{path}`: {reason}")]
    UnsafeEntry {
        /// The entry's path as written in the archive.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A file has an extended attribute whose name is not UTF-8: a layer carries xattrs in
    /// PAX records, whose keys are UTF-8.
    #[error(
        "extended attribute {name:?} of {}: the name is not UTF-8, which a layer cannot hold",
        path.display()
    )]
    XattrName {
        /// The file.
        path: PathBuf,
        /// The attribute's name.
        name: std::ffi::OsString,
    },
    /// A layer passed one of the unpack limits (a decompression bomb, or a layer larger than
    /// the store accepts); nothing of it is kept.
    #[error("layer exceeds the {limit} limit: {value} > {max} (after {read} uncompressed bytes)")]
    LayerLimit {
        /// Which limit.
        limit: crate::limits::LayerLimit,
        /// The value reached.
        value: u64,
        /// The configured maximum.
        max: u64,
        /// Uncompressed bytes read when the limit was found exceeded.
        read: u64,
    },
    /// A snapshot's files are read before its lazy layers were downloaded and unpacked.
    #[error("snapshot {key} is not downloaded yet")]
    LazySnapshot {
        /// The lazy snapshot's key.
        key: String,
    },
    /// A snapshot does not exist.
    #[error("snapshot {key} not found")]
    SnapshotNotFound {
        /// The snapshot key or chain ID.
        key: String,
    },
    /// A snapshot key is already in use.
    #[error("snapshot {key} already exists")]
    SnapshotExists {
        /// The snapshot key.
        key: String,
    },
    /// A build id is not letters, digits, `_` and `-`.
    #[error("invalid build id {id:?}")]
    InvalidBuildId {
        /// The rejected id.
        id: String,
    },
    /// A cache mount name is not a plain directory name.
    #[error("invalid cache mount name {name:?}")]
    InvalidCacheMount {
        /// The rejected name.
        name: String,
    },
    /// A local source directory name is not a plain directory name.
    #[error("invalid local source directory name {name:?}")]
    InvalidLocalSource {
        /// The rejected name.
        name: String,
    },
    /// A cache to import (`--cache-from`) is not a valid cache export.
    #[error("invalid cache import: {reason}")]
    InvalidCacheImport {
        /// What is wrong with it.
        reason: String,
    },
    /// A cache to export names a blob it has no descriptor for.
    #[error("the cache config names blob {digest}, which has no descriptor")]
    CacheBlobMissing {
        /// The blob.
        digest: Digest,
    },
    /// Importing a cache (`--cache-from`) failed: the caller may warn and build on.
    #[error("importing cache from {from}")]
    CacheImport {
        /// The reference or directory.
        from: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// An image stored with its manifest pending was read as a complete one.
    #[error("the manifest of {name} is not made yet")]
    ManifestPending {
        /// The image name.
        name: String,
    },
    /// An image is not in the store.
    #[error("no such image: {name}")]
    ImageNotFound {
        /// The image name.
        name: String,
    },
    /// A blob is not in the store.
    #[error("blob {digest} not found")]
    BlobNotFound {
        /// The blob digest.
        digest: Digest,
    },
    /// The size or free space of the store's file system could not be read.
    #[error("reading the file system size of {path}")]
    Statfs {
        /// A path on the file system.
        path: PathBuf,
        /// What `statvfs` reported.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file could not be parsed.
    #[error("configuration file {path}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What the TOML parser reported.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The Docker credentials file could not be parsed.
    #[error("docker credentials file {path}")]
    Credentials {
        /// The credentials file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A Docker credential helper could not be run or gave no usable answer.
    #[error("credential helper {program} for {server}: {problem}")]
    CredentialHelper {
        /// The helper program (`docker-credential-NAME`).
        program: String,
        /// The server URL it was asked about.
        server: String,
        /// What went wrong (its exit status and message, or why it could not run).
        problem: String,
    },
    /// Where credentials come from could not answer for a host.
    #[error("asking {origin} for the credentials of {host}: {problem}")]
    CredentialSource {
        /// The registry host.
        host: String,
        /// Who was asked (`the client`).
        origin: String,
        /// What went wrong.
        problem: String,
    },
    /// An image reference could not be parsed.
    #[error("invalid image reference `{reference}`")]
    InvalidReference {
        /// The rejected text.
        reference: String,
        /// What the parser reported.
        #[source]
        source: kiln_llb::ReferenceError,
    },
    /// The registry (and every mirror) failed.
    #[error("registry {registry}: {operation}")]
    Registry {
        /// The registry host that failed last.
        registry: String,
        /// What was being fetched.
        operation: String,
        /// What the client reported.
        #[source]
        source: Box<oci_client::errors::OciDistributionError>,
    },
    /// The registry's token service refused to issue a token for these credentials.
    #[error("registry {registry} refused {credentials}: {reason}")]
    Authentication {
        /// The registry host.
        registry: String,
        /// Whose credentials (`anonymous access` or `the credentials of user \`name\``).
        credentials: String,
        /// What the token service answered.
        reason: String,
    },
    /// Downloading a blob failed part way (including a digest check by the client).
    #[error("registry {registry}: downloading blob {digest}")]
    Download {
        /// The registry host.
        registry: String,
        /// The blob.
        digest: Digest,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A manifest, index or config from the registry is malformed or unsupported.
    #[error("{what}: {reason}")]
    BadManifest {
        /// Which document.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No manifest for the wanted platform in an index.
    #[error("no manifest for {platform} in {reference}")]
    NoMatchingPlatform {
        /// The wanted platform (`linux/amd64`).
        platform: String,
        /// The image reference.
        reference: String,
    },
    /// An OCI document could not be built.
    #[error("invalid OCI {what}")]
    Spec {
        /// Which document.
        what: &'static str,
        /// The cause.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A JSON document could not be read or written.
    #[error("invalid JSON in {what}")]
    Json {
        /// Which document.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A path holds neither an OCI image layout nor a docker archive.
    #[error("{} is not an OCI image layout or docker archive (no index.json or manifest.json)", path.display())]
    UnknownArchive {
        /// The path.
        path: PathBuf,
    },
    /// An image archive is malformed.
    #[error("bad image archive {}: {reason}", path.display())]
    BadArchive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A background task panicked or was cancelled.
    #[error("background task failed")]
    Task(#[from] tokio::task::JoinError),
    /// `kiln run --name` with a name another container has (docker's conflict error).
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    ContainerNameInUse {
        /// The name.
        name: String,
        /// The container that has it.
        id: String,
    },
    /// No container has this name or ID.
    #[error("No such container: {name}")]
    NoSuchContainer {
        /// The name.
        name: String,
    },
    /// Several containers' IDs begin with this.
    #[error("multiple containers found with provided prefix: {reference}")]
    AmbiguousContainer {
        /// The beginning of an ID.
        reference: String,
    },
    /// A container name docker would refuse.
    #[error("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidContainerName {
        /// The name.
        name: String,
    },
    /// A `--restart` value that is no policy.
    #[error("invalid restart policy format: {value}")]
    RestartPolicy {
        /// The value.
        value: String,
    },
    /// `--restart always:N` and the like.
    #[error("maximum retry count cannot be used with restart policy '{name}'")]
    RestartPolicyCount {
        /// The policy.
        name: String,
    },
    /// A volume name docker would refuse.
    #[error(
        "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
    )]
    InvalidVolumeName {
        /// The name.
        name: String,
    },
    /// A path of an image's file system could not be resolved.
    #[error("cannot resolve {} in the image", path.display())]
    ResolveInImage {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: kiln_fsutil::Error,
    },
    /// No volume has this name.
    #[error("get {name}: no such volume")]
    NoSuchVolume {
        /// The name.
        name: String,
    },
    /// `flock` failed.
    #[error("cannot lock {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::errno::Errno,
    },
}

impl Error {
    pub(crate) fn db(path: &std::path::Path, source: impl Into<redb::Error>) -> Self {
        Self::Database {
            path: path.to_owned(),
            source: Box::new(source.into()),
        }
    }

    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn spec(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> Self {
        move |source| Self::Spec { what, source }
    }
}

/// A size, duration or filter of a garbage collection policy or `kiln prune` that does not
/// parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// An empty duration.
    #[error("empty duration")]
    EmptyDuration,
    /// No number where one was expected.
    #[error("no number at {text:?}")]
    NoNumber {
        /// The text from there on.
        text: String,
    },
    /// A duration's unit is missing or unknown.
    #[error("unknown unit {unit:?} in {text:?} (use ns, us, ms, s, m or h)")]
    DurationUnit {
        /// The unit (empty when missing).
        unit: String,
        /// The whole duration.
        text: String,
    },
    /// A size's unit is unknown.
    #[error("unknown unit in {text:?} (use b, k, m, g, t or p)")]
    SizeUnit {
        /// The whole size.
        text: String,
    },
    /// A percentage that is not a whole number from 0 to 100.
    #[error("invalid percentage {text:?}: expected 0% to 100%")]
    Percentage {
        /// The text.
        text: String,
    },
    /// A value too large.
    #[error("{text:?} is out of range")]
    OutOfRange {
        /// The text.
        text: String,
    },
    /// A filter other than `type==TYPE`.
    #[error("unsupported filter {filter:?}: expected type==TYPE")]
    Filter {
        /// The filter.
        filter: String,
    },
    /// A prune filter that is not `KEY=VALUE`.
    #[error("invalid filter {filter:?}: expected KEY=VALUE")]
    PruneFilter {
        /// The filter.
        filter: String,
    },
    /// A prune filter on something other than `until` and `type`.
    #[error("unsupported filter {key:?}: only until=DURATION and type=TYPE are supported")]
    PruneFilterKey {
        /// The filter's key.
        key: String,
    },
    /// A prune filter `type=` naming neither `regular` nor `exec.cachemount`.
    #[error(
        "unsupported type in filter {filter:?}: expected regular, exec.cachemount or source.local"
    )]
    PruneFilterType {
        /// The filter.
        filter: String,
    },
    /// A prune filter `until=` whose duration does not parse.
    #[error("invalid duration in filter {filter:?}")]
    PruneFilterDuration {
        /// The filter.
        filter: String,
        /// Why.
        #[source]
        source: Box<ValueError>,
    },
    /// A cache type BuildKit does not have.
    #[error(
        "unknown cache type {value:?}: expected regular, exec.cachemount, source.local, source.git.checkout, internal or frontend"
    )]
    CacheType {
        /// The type.
        value: String,
    },
}
