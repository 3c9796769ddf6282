//! Limits on what one untrusted layer may unpack to.
//!
//! A layer is a compressed stream from outside. Without limits a few megabytes of gzip (a
//! "bomb": one huge file of zeros) fill the disk, and a tar of millions of empty files exhausts
//! inodes. Three limits stop that while the layer is read, before its data reaches the disk:
//! 1. the uncompressed size of the tar stream ([`UnpackLimits::max_layer_size`]);
//! 2. the number of tar entries ([`UnpackLimits::max_layer_entries`]);
//! 3. the ratio of uncompressed to compressed bytes read so far
//!    ([`UnpackLimits::max_compression_ratio`]), checked once more than
//!    [`UnpackLimits::ratio_grace`] uncompressed bytes were read (small layers of text
//!    legitimately compress very well).
//!
//! The defaults are far beyond any real image. They are set in the configuration file:
//! ```toml
//! [unpack]
//! max-layer-size = 34359738368
//! max-layer-entries = 10000000
//! max-compression-ratio = 100
//! ratio-grace = 67108864
//! ```

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

use serde::Deserialize;

/// Limits applied while unpacking a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct UnpackLimits {
    /// The largest uncompressed tar stream, in bytes (default 32 GiB).
    pub max_layer_size: u64,
    /// The most tar entries in one layer (default 10 million).
    pub max_layer_entries: u64,
    /// The largest ratio of uncompressed to compressed bytes (default 100).
    pub max_compression_ratio: u64,
    /// How many uncompressed bytes may be read before the ratio is checked (default 64 MiB).
    pub ratio_grace: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_layer_size: 32 << 30,
            max_layer_entries: 10_000_000,
            max_compression_ratio: 100,
            ratio_grace: 64 << 20,
        }
    }
}

/// Which limit a layer exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerLimit {
    /// The uncompressed size, in bytes.
    Size,
    /// The number of entries.
    Entries,
    /// The compression ratio (uncompressed bytes per compressed byte).
    CompressionRatio,
}

impl fmt::Display for LayerLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Size => "uncompressed size",
            Self::Entries => "entry count",
            Self::CompressionRatio => "compression ratio",
        })
    }
}

/// A limit found exceeded: which, the value reached and the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exceeded {
    pub(crate) limit: LayerLimit,
    pub(crate) value: u64,
    pub(crate) max: u64,
    /// Uncompressed bytes read when it was found.
    pub(crate) read: u64,
}

/// Counts the bytes read through it (the compressed side of a layer).
pub(crate) struct CountingReader<R> {
    pub(crate) inner: R,
    pub(crate) count: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get().saturating_add(n as u64));
        Ok(n)
    }
}

/// Fails reads of the uncompressed side once the size or ratio limit is passed, recording
/// which in `exceeded` (the tar reader may wrap the I/O error it gets).
pub(crate) struct LimitedReader<R> {
    pub(crate) inner: R,
    pub(crate) limits: UnpackLimits,
    pub(crate) compressed: Rc<Cell<u64>>,
    pub(crate) read: u64,
    pub(crate) exceeded: Rc<Cell<Option<Exceeded>>>,
}

impl<R> LimitedReader<R> {
    fn check(&self) -> Option<Exceeded> {
        if self.read > self.limits.max_layer_size {
            return Some(Exceeded {
                limit: LayerLimit::Size,
                value: self.read,
                max: self.limits.max_layer_size,
                read: self.read,
            });
        }
        if self.read > self.limits.ratio_grace {
            let ratio = self.read / self.compressed.get().max(1);
            if ratio > self.limits.max_compression_ratio {
                return Some(Exceeded {
                    limit: LayerLimit::CompressionRatio,
                    value: ratio,
                    max: self.limits.max_compression_ratio,
                    read: self.read,
                });
            }
        }
        None
    }
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(exceeded) = self.exceeded.get() {
            return Err(io::Error::other(format!(
                "layer {} limit exceeded",
                exceeded.limit
            )));
        }
        let n = self.inner.read(buf)?;
        self.read = self.read.saturating_add(n as u64);
        if let Some(exceeded) = self.check() {
            self.exceeded.set(Some(exceeded));
            return Err(io::Error::other(format!(
                "layer {} limit exceeded",
                exceeded.limit
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(
        data: &[u8],
        compressed: u64,
        limits: UnpackLimits,
    ) -> (io::Result<u64>, Option<Exceeded>) {
        let exceeded = Rc::new(Cell::new(None));
        let mut reader = LimitedReader {
            inner: data,
            limits,
            compressed: Rc::new(Cell::new(compressed)),
            read: 0,
            exceeded: Rc::clone(&exceeded),
        };
        let result = io::copy(&mut reader, &mut io::sink());
        (result, exceeded.get())
    }

    #[test]
    fn size_limit_stops_the_stream() {
        let limits = UnpackLimits {
            max_layer_size: 10,
            ..UnpackLimits::default()
        };
        let (result, exceeded) = limited(&[0; 100], 100, limits);
        assert!(result.is_err());
        let exceeded = exceeded.unwrap();
        assert_eq!(exceeded.limit, LayerLimit::Size);
        assert_eq!(exceeded.max, 10);
        // Exactly the limit is allowed.
        let (result, exceeded) = limited(&[0; 10], 10, limits);
        assert_eq!(result.unwrap(), 10);
        assert_eq!(exceeded, None);
    }

    #[test]
    fn ratio_is_checked_only_after_the_grace() {
        let limits = UnpackLimits {
            max_compression_ratio: 10,
            ratio_grace: 1000,
            ..UnpackLimits::default()
        };
        // 1000 bytes from 1 compressed byte: within the grace.
        let (result, exceeded) = limited(&[0; 1000], 1, limits);
        assert_eq!(result.unwrap(), 1000);
        assert_eq!(exceeded, None);
        // 2000 bytes from 100: ratio 20.
        let (result, exceeded) = limited(&[0; 2000], 100, limits);
        assert!(result.is_err());
        let exceeded = exceeded.unwrap();
        assert_eq!(exceeded.limit, LayerLimit::CompressionRatio);
        assert!(exceeded.value > 10, "{exceeded:?}");
        // 2000 bytes from 1000: ratio 2.
        let (result, _) = limited(&[0; 2000], 1000, limits);
        assert_eq!(result.unwrap(), 2000);
    }

    #[test]
    fn limits_parse_from_kebab_case_keys() {
        let limits: UnpackLimits =
            toml::from_str("max-layer-size = 5\nmax-compression-ratio = 7").unwrap();
        assert_eq!(limits.max_layer_size, 5);
        assert_eq!(limits.max_compression_ratio, 7);
        assert_eq!(limits.max_layer_entries, 10_000_000);
        assert!(toml::from_str::<UnpackLimits>("max-layer-sise = 5").is_err());
    }
}
