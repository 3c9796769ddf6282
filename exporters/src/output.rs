//! Export files that appear whole or not at all.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kiln_cache::Store;

use crate::error::Error;

/// A file written under a temporary name beside its destination
/// (`.NAME.tmp-<owner tag>-XXXXXX`, from [`Store::temp_file_beside`]) and renamed over the
/// destination by [`OutputFile::finish`]: a failed or killed export never leaves a truncated
/// file under the final name. Dropped unfinished, the temporary file is removed; left by a
/// killed process, the store's next garbage collection removes it.
#[derive(Debug)]
pub struct OutputFile {
    temp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl OutputFile {
    /// Starts writing `dest` (its directory is made if missing).
    pub fn create(store: &Store, dest: &Path) -> Result<Self, Error> {
        Ok(Self {
            temp: store.temp_file_beside(dest)?,
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
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/image.tar");
        fs_err::create_dir_all(dest.parent().unwrap()).unwrap();
        fs_err::write(&dest, "old").unwrap();
        let mut out = OutputFile::create(&store, &dest).unwrap();
        out.write_all(b"new content").unwrap();
        // Until finished, the old file is untouched.
        assert_eq!(fs_err::read_to_string(&dest).unwrap(), "old");
        out.finish().unwrap();
        assert_eq!(fs_err::read_to_string(&dest).unwrap(), "new content");
        // An export that fails part way leaves neither a file nor its temporary.
        let failed = dir.path().join("failed.tar");
        let mut out = OutputFile::create(&store, &failed).unwrap();
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
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.tar"));
        let mut out = OutputFile::create(&store, &dest).unwrap();
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
