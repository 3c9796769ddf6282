//! What the shared build wiring can fail with.

/// An error of the build wiring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `SOURCE_DATE_EPOCH` is not a number of seconds.
    #[error("invalid SOURCE_DATE_EPOCH {value:?}: expected seconds since 1970")]
    SourceDateEpoch {
        /// The variable's text.
        value: String,
        /// Why it did not parse.
        #[source]
        source: std::num::ParseIntError,
    },
    /// The frontend's image configuration could not be serialised.
    #[error("serialising the image config")]
    ImageConfig(#[source] serde_json::Error),
    /// A cache export (`--cache-to`) failed.
    #[error("exporting the build cache")]
    CacheExport(#[source] kiln_exporters::Error),
    /// An output failed.
    #[error("exporting the result")]
    Export(#[source] kiln_exporters::Error),
}
