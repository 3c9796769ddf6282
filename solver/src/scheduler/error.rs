//! How ops and solves fail.

use std::sync::Arc;

/// The error an op returns. Ops are implemented outside the scheduler, so their errors are boxed.
pub type OpError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a solve failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SolveError {
    /// The graph names a vertex it does not hold.
    #[error("vertex {vertex} is not in the graph")]
    MissingVertex {
        /// The digest.
        vertex: Arc<str>,
    },
    /// An edge names an output the vertex does not have.
    #[error("vertex {vertex} ({name}) has {outputs} outputs, not {output}")]
    MissingOutput {
        /// The digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// The index asked for.
        output: usize,
        /// How many the op produced.
        outputs: usize,
    },
    /// Computing the cache key failed.
    #[error("computing the cache key of {name} ({vertex})")]
    CacheKey {
        /// The digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// What failed.
        #[source]
        source: Arc<OpError>,
    },
    /// Reading or writing the cache failed.
    #[error("cache of {name} ({vertex})")]
    Cache {
        /// The digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// What failed.
        #[source]
        source: Arc<OpError>,
    },
    /// The op failed.
    #[error("{name}")]
    Exec {
        /// The digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// What failed.
        #[source]
        source: Arc<OpError>,
    },
}

impl SolveError {
    /// The digest of the vertex that failed.
    pub fn vertex(&self) -> &Arc<str> {
        match self {
            Self::MissingVertex { vertex }
            | Self::MissingOutput { vertex, .. }
            | Self::CacheKey { vertex, .. }
            | Self::Cache { vertex, .. }
            | Self::Exec { vertex, .. } => vertex,
        }
    }
}
