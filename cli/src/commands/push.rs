//! `kiln push`: a stored image to its registry.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_cache::Store;

use crate::args::PushArgs;
use crate::config::Config;

pub(crate) fn run(root: &Path, config: &Config, args: &PushArgs) -> anyhow::Result<ExitCode> {
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let record = store.find_image(&args.image)?;
    let image = store.stored_image(&record)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let digest = runtime.block_on(kiln_exporters::push(
        &store,
        &image,
        &record.name,
        &config.cache,
        kiln_cache::docker_config_path().as_deref(),
    ))?;
    writeln!(
        std::io::stdout().lock(),
        "{}: digest: {digest}",
        record.name
    )
    .context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}
