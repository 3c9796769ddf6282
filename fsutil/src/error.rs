//! The errors of path resolution.

use std::io;
use std::path::PathBuf;

/// Why a path could not be resolved inside its root.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// More than 40 symbolic links were followed (a loop, most likely).
    #[error("{path}: too many levels of symbolic links")]
    TooManyLinks {
        /// The path being resolved, as given.
        path: PathBuf,
    },
    /// A component before the last one is not a directory.
    #[error("{path}: {component} is not a directory")]
    NotADirectory {
        /// The path being resolved, as given.
        path: PathBuf,
        /// The container path of the component that is not a directory.
        component: PathBuf,
    },
    /// Reading a layer failed.
    #[error("resolving {path}")]
    Io {
        /// The path being resolved, as given.
        path: PathBuf,
        /// The failed file system call (naming the host path).
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The `errno` the kernel's own path walk gives for the same failure (`ELOOP`, `ENOTDIR`,
    /// or the I/O error's).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::TooManyLinks { .. } => Some(libc::ELOOP),
            Self::NotADirectory { .. } => Some(libc::ENOTDIR),
            Self::Io { source, .. } => source.raw_os_error(),
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        let kind = match &err {
            Error::TooManyLinks { .. } => io::ErrorKind::Other,
            Error::NotADirectory { .. } => io::ErrorKind::NotADirectory,
            Error::Io { source, .. } => source.kind(),
        };
        io::Error::new(kind, err)
    }
}
