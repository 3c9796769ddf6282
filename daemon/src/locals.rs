//! A build's local sources, received from its client's session ([`kiln_solver::LocalDirs`]).
//!
//! Each directory is received into `ROOT/local-sync/KEY`, where KEY digests the client's
//! shared key (what its working directory is known by across sessions) and the source's name
//! or shared key hint, so that the next build from the same client receives only what changed
//! (the file sync compares what is already there). One build holds such a directory at a time
//! (the store's lock on it, [`kiln_cache::Store::take_local_source`], which a prune in any
//! process respects): a build that finds it held receives into a directory of its own,
//! removed when it ends (never waiting, so two builds cannot wait on each other). `du` lists
//! the directories as `source.local` records, and `prune` removes those no build holds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use kiln_cache::{LocalSourceDir, Store};
use kiln_solver::{LocalDirs, LocalRequest};

use crate::filesync;
use crate::session::Sessions;

/// The local sources of one build, from its client's session.
pub(crate) struct SessionLocals {
    pub(crate) sessions: Sessions,
    /// The build's session (a source's `local.session` may name another).
    pub(crate) session_id: String,
    pub(crate) store: Arc<Store>,
    /// The directories it received into, held until the build ends.
    held: Arc<Mutex<Vec<LocalSourceDir>>>,
}

impl SessionLocals {
    pub(crate) fn new(sessions: Sessions, session_id: String, store: Arc<Store>) -> Self {
        Self {
            sessions,
            session_id,
            store,
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
        let store = self.store.clone();
        let held = self.held.clone();
        async move {
            let session = sessions
                .get(&session_id)
                .await
                .map_err(|s| s.message().to_owned())?;
            let hint = request.shared_key_hint.as_deref().unwrap_or(&request.name);
            let key =
                kiln_llb::Digest::from_bytes(format!("{}\0{hint}", session.shared_key).as_bytes());
            let name = request.name.clone();
            let taken = tokio::task::spawn_blocking(move || {
                match store.take_local_source(&key.hex(), &name)? {
                    Some(dir) => Ok(dir),
                    None => store.private_local_source(&name),
                }
            })
            .await??;
            let dest = taken.path().to_owned();
            held.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(taken);
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
