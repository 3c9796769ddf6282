//! Export files that appear whole or not at all.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// A file written under a temporary name beside its destination (`.NAME.tmp-XXXXXX`) and
/// renamed over the destination by [`OutputFile::finish`]: a failed or killed export never
/// leaves a truncated file under the final name. Dropped unfinished, the temporary file is
/// removed.
#[derive(Debug)]
pub struct OutputFile {
    temp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl OutputFile {
    /// Starts writing `dest` (its directory is made if missing).
    pub fn create(dest: &Path) -> Result<Self, Error> {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        fs_err::create_dir_all(&parent)?;
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(dest.file_name().unwrap_or("output".as_ref()));
        prefix.push(".tmp-");
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .tempfile_in(&parent)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("creating a file in {}: {e}", parent.display()),
                )
            })?;
        Ok(Self {
            temp,
            dest: dest.to_owned(),
        })
    }

    /// Syncs the file and renames it to its destination.
    pub fn finish(mut self) -> Result<(), Error> {
        self.temp.flush()?;
        self.temp.as_file().sync_all().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("syncing {}: {e}", self.temp.path().display()),
            )
        })?;
        self.temp.persist(&self.dest).map_err(|e| {
            io::Error::new(
                e.error.kind(),
                format!("renaming to {}: {}", self.dest.display(), e.error),
            )
        })?;
        Ok(())
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destination_appears_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/image.tar");
        fs_err::create_dir_all(dest.parent().unwrap()).unwrap();
        fs_err::write(&dest, "old").unwrap();
        let mut out = OutputFile::create(&dest).unwrap();
        out.write_all(b"new content").unwrap();
        // Until finished, the old file is untouched.
        assert_eq!(fs_err::read_to_string(&dest).unwrap(), "old");
        out.finish().unwrap();
        assert_eq!(fs_err::read_to_string(&dest).unwrap(), "new content");
        // An export that fails part way leaves neither a file nor its temporary.
        let failed = dir.path().join("failed.tar");
        let mut out = OutputFile::create(&failed).unwrap();
        out.write_all(b"partial").unwrap();
        drop(out);
        assert!(!failed.exists());
        let names: Vec<_> = fs_err::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["image.tar"]);
        assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_destination_name_that_is_not_utf8_names_its_temporary() {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.tar"));
        let mut out = OutputFile::create(&dest).unwrap();
        let names: Vec<_> = fs_err::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(
            names[0].as_bytes().starts_with(b".caf\xe9.tar.tmp-"),
            "{names:?}"
        );
        out.write_all(b"x").unwrap();
        out.finish().unwrap();
        assert_eq!(fs_err::read(&dest).unwrap(), b"x");
    }
}
