//! Hashing while data streams through: the sha256 [`Digest`] of blobs and layers as they
//! are written or read, with a byte count.

use std::fmt;
use std::io::{self, Write};

use kiln_llb::Digest;
use sha2::{Digest as _, Sha256};

/// A running sha256 plus a byte count.
#[derive(Clone, Default)]
pub(crate) struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }

    pub(crate) fn finish(self) -> (Digest, u64) {
        (Digest::from_raw(self.sha.finalize().into()), self.len)
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher").field("len", &self.len).finish()
    }
}

/// A writer that hashes what passes through it.
pub(crate) struct HashWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Hasher,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what is read through it.
pub(crate) struct HashReader<R> {
    pub(crate) inner: R,
    pub(crate) hasher: Hasher,
}

impl<R: io::Read> io::Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_counts_what_passes_through() {
        let mut writer = HashWriter {
            inner: Vec::new(),
            hasher: Hasher::default(),
        };
        writer.write_all(b"hel").unwrap();
        writer.write_all(b"lo").unwrap();
        assert_eq!(writer.inner, b"hello");
        assert_eq!(writer.hasher.finish(), (Digest::from_bytes(b"hello"), 5));
        let mut reader = HashReader {
            inner: &b"hello"[..],
            hasher: Hasher::default(),
        };
        io::copy(&mut reader, &mut io::sink()).unwrap();
        assert_eq!(reader.hasher.finish(), (Digest::from_bytes(b"hello"), 5));
        // sha256("") from FIPS 180-2 test vectors.
        assert_eq!(
            Hasher::default().finish().0.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
