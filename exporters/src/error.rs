//! The exporters' error type.

use kiln_cache::Digest;

/// An error while assembling, writing or pushing an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Cache(#[from] kiln_cache::Error),
    /// Reading or writing a file failed (the message names the path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Copying a result into a host directory failed.
    #[error("exporting to {}", dest.display())]
    Export {
        /// The destination directory.
        dest: std::path::PathBuf,
        /// The cause (naming the path).
        #[source]
        source: std::io::Error,
    },
    /// Writing an export file failed.
    #[error("writing {}", dest.display())]
    Write {
        /// The file.
        dest: std::path::PathBuf,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// A step of assembling an image failed.
    #[error("{what}")]
    Step {
        /// The step.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// A docker archive was asked for several platforms.
    #[error("docker exporter does not currently support exporting manifest lists")]
    ManifestList,
    /// A snapshot gave another diff ID than the one recorded for it.
    #[error(
        "snapshot {snapshot} changed: its layer has diff ID {found}, the image names {expected}"
    )]
    ChangedSnapshot {
        /// The snapshot key.
        snapshot: String,
        /// The diff ID recorded.
        expected: Digest,
        /// The diff ID written.
        found: Digest,
    },
    /// A stored image's snapshot chain does not match its layers.
    #[error("the image {name} has {layers} layers but {snapshots} snapshots")]
    PendingLayers {
        /// The image name.
        name: String,
        /// Snapshots in its chain.
        snapshots: usize,
        /// Its layers.
        layers: usize,
    },
    /// Storing an image under a name failed.
    #[error("storing the image {name}")]
    Store {
        /// The name.
        name: String,
        /// The cause.
        #[source]
        source: kiln_cache::Error,
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
    /// The registry refused a push.
    #[error("pushing {what} to {reference}")]
    Push {
        /// What was being pushed.
        what: String,
        /// The target reference.
        reference: String,
        /// The cause.
        #[source]
        source: kiln_cache::oci_client::errors::OciDistributionError,
    },
    /// A media type (from a stored manifest, so from outside) cannot be sent as a header.
    #[error("media type {media_type:?} is not a valid Content-Type header")]
    InvalidMediaType {
        /// The media type.
        media_type: String,
    },
}

impl Error {
    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            what: what.into(),
            source,
        }
    }
}
