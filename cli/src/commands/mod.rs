//! One module per `kiln` command, each a thin wrapper over library calls.

pub(crate) mod build;
pub(crate) mod container;
pub(crate) mod daemon;
pub(crate) mod debug;
pub(crate) mod du;
pub(crate) mod exec;
pub(crate) mod explain;
pub(crate) mod history;
pub(crate) mod host;
pub(crate) mod images;
pub(crate) mod load;
pub(crate) mod prune;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod rmi;
pub(crate) mod run;
pub(crate) mod save;
pub(crate) mod supervise;
pub(crate) mod tag;
pub(crate) mod volume;
pub(crate) mod yaml;

/// Downloads and unpacks the layers of a stored image that a build pushed without
/// downloading them (lazy layers of a remote cache or a base image), before its files or
/// blobs are read (`kiln run`, `kiln save`).
pub(crate) fn realize_image(
    store: &std::sync::Arc<kiln_cache::Store>,
    record: &kiln_cache::ImageRecord,
    options: &kiln_cache::PullOptions,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let Some(top) = record.chain_id.map(|c| c.to_string()) else {
        return Ok(());
    };
    if !store.is_lazy(&top).unwrap_or(false) {
        return Ok(());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(kiln_cache::realize(store, &top, options))
        .with_context(|| format!("downloading the layers of {}", record.name))
}
