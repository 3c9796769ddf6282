//! The build cache from and to elsewhere: the `--cache-from` caches, opened in the background
//! while the frontend converts, and the `--cache-to` exports once the build is solved.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use kiln_cache::{CacheExportRequest, CacheImportRequest, PullOptions, Store};

use super::warn;

/// The caches that could be opened, and why the others could not.
type OpenedImports = (Vec<Arc<kiln_cache::CacheSource>>, Vec<kiln_cache::Error>);

/// The `--cache-from` caches: opened in the background, awaited once by the first user.
pub(super) enum CacheImports {
    Opening(Option<tokio::task::JoinHandle<OpenedImports>>),
    Opened(Vec<Arc<kiln_cache::CacheSource>>),
}

impl CacheImports {
    /// Starts opening the caches `requests` name on `runtime`.
    pub(super) fn open(
        requests: &[CacheImportRequest],
        pull: &PullOptions,
        runtime: &tokio::runtime::Runtime,
    ) -> Self {
        let (requests, pull) = (requests.to_vec(), pull.clone());
        Self::Opening(Some(runtime.spawn(async move {
            kiln_engine::open_cache_imports(&requests, &pull).await
        })))
    }

    /// The caches that could be read; a cache that cannot be read is a warning, and the
    /// build goes on, as BuildKit's.
    pub(super) fn get(
        &mut self,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Vec<Arc<kiln_cache::CacheSource>>> {
        if let Self::Opening(opening) = self {
            let Some(opening) = opening.take() else {
                bail!("the --cache-from caches were lost while opening");
            };
            let (imports, unreadable) = runtime
                .block_on(opening)
                .context("reading the --cache-from caches")?;
            for error in unreadable {
                warn(&format!("{:#}", anyhow::Error::from(error)));
            }
            *self = Self::Opened(imports);
        }
        match self {
            Self::Opened(imports) => Ok(imports.clone()),
            Self::Opening(_) => bail!("the --cache-from caches were lost while opening"),
        }
    }
}

/// Writes the build's cache keys to each `--cache-to` but inline ones (those go into the
/// image config); a failing export fails the build unless the request says `ignore-error`.
pub(super) fn export(
    store: &Arc<Store>,
    keys: Option<&kiln_cache::BuildKeys>,
    cache_to: &[CacheExportRequest],
    pull: &PullOptions,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let Some(keys) = keys else {
        return Ok(());
    };
    for request in cache_to.iter().filter(|r| !kiln_engine::is_inline(r)) {
        match runtime.block_on(kiln_engine::export_cache(store, keys, request, pull)) {
            Ok(()) => {}
            Err(error) if request.ignore_error => {
                warn(&format!("{:#}", anyhow::Error::from(error)));
            }
            Err(error) => return Err(error).context("failed to export the build cache"),
        }
    }
    Ok(())
}
