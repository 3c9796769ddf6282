//! A build's local sources, received from its client's session ([`kiln_solver::LocalDirs`]).
//!
//! Each directory is received into `ROOT/local-sync/KEY`, where KEY digests the client's
//! shared key (what its working directory is known by across sessions) and the source's name
//! or shared key hint, so that the next build from the same client receives only what changed
//! (the file sync compares what is already there). One build uses such a directory at a time:
//! a build that finds it busy receives into a directory of its own, removed when it ends
//! (never waiting, so two builds cannot wait on each other).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use kiln_solver::{LocalDirs, LocalRequest};
use tokio::sync::OwnedMutexGuard;

use crate::filesync;
use crate::session::Sessions;

/// The receiving directories in use, daemon-wide.
#[derive(Default, Clone)]
pub(crate) struct SyncDirs {
    locks: Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
}

impl SyncDirs {
    /// The directory `dir` for one build, if no other build holds it.
    fn try_take(&self, dir: &Path) -> Option<OwnedMutexGuard<()>> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(dir.to_owned())
            .or_default()
            .clone();
        lock.try_lock_owned().ok()
    }
}

/// What a build holds while it runs: the directories it received into.
enum Held {
    Shared(#[expect(dead_code, reason = "held for its drop")] OwnedMutexGuard<()>),
    Private(#[expect(dead_code, reason = "held for its drop")] tempfile::TempDir),
}

/// The local sources of one build, from its client's session.
pub(crate) struct SessionLocals {
    pub(crate) sessions: Sessions,
    /// The build's session (a source's `local.session` may name another).
    pub(crate) session_id: String,
    /// `ROOT/local-sync`.
    pub(crate) root: PathBuf,
    pub(crate) dirs: SyncDirs,
    held: Arc<Mutex<Vec<Held>>>,
}

impl SessionLocals {
    pub(crate) fn new(
        sessions: Sessions,
        session_id: String,
        store_root: &Path,
        dirs: SyncDirs,
    ) -> Self {
        Self {
            sessions,
            session_id,
            root: store_root.join("local-sync"),
            dirs,
            held: Arc::default(),
        }
    }
}

impl LocalDirs for SessionLocals {
    fn sync(
        &self,
        request: LocalRequest,
    ) -> BoxFuture<'static, Result<PathBuf, Box<dyn std::error::Error + Send + Sync>>> {
        let sessions = self.sessions.clone();
        let session_id = request
            .session
            .clone()
            .unwrap_or_else(|| self.session_id.clone());
        let root = self.root.clone();
        let dirs = self.dirs.clone();
        let held = self.held.clone();
        async move {
            let session = sessions
                .get(&session_id)
                .await
                .map_err(|s| s.message().to_owned())?;
            let hint = request.shared_key_hint.as_deref().unwrap_or(&request.name);
            let key =
                kiln_llb::Digest::from_bytes(format!("{}\0{hint}", session.shared_key).as_bytes());
            fs_err::create_dir_all(&root)?;
            let shared = root.join(key.hex());
            let dest = match dirs.try_take(&shared) {
                Some(guard) => {
                    held.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Held::Shared(guard));
                    shared
                }
                None => {
                    let private = tempfile::Builder::new()
                        .prefix("private-")
                        .tempdir_in(&root)?;
                    let path = private.path().to_owned();
                    held.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Held::Private(private));
                    path
                }
            };
            let received = filesync::receive(&session, &request, &dest).await?;
            tracing::debug!(
                name = request.name,
                listed = received.listed,
                transferred = received.transferred,
                bytes = received.bytes,
                "local directory received"
            );
            Ok(dest)
        }
        .boxed()
    }
}
