//! `kiln save`: a stored image into a docker-archive tar (or an OCI image layout tar).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kiln_cache::Store;
use kiln_exporters::{ExportContext, ImageFormat, ImageSettings};

use crate::args::SaveArgs;
use crate::config::Config;

pub(crate) fn run(root: &Path, config: &Config, args: &SaveArgs) -> anyhow::Result<ExitCode> {
    let store = std::sync::Arc::new(
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?,
    );
    let _lease = store.lease().context("taking a lease on the store")?;
    let record = store.find_image(&args.image)?;
    let pull = kiln_cache::PullOptions {
        config: config.cache.clone(),
        ..kiln_cache::PullOptions::default()
    };
    crate::commands::realize_image(&store, &record, &pull)?;
    let image = kiln_exporters::stored_image(&store, &record)?;
    let format = match args.format.as_str() {
        "docker" => ImageFormat::Docker,
        "oci" => ImageFormat::Oci { tar: true },
        other => bail!("unknown format {other:?}: expected docker or oci"),
    };
    let settings = ImageSettings {
        names: vec![record.name.clone()],
        store: false,
        ..ImageSettings::default()
    };
    // Written beside the destination and renamed into place once complete.
    kiln_exporters::deliver_image(
        &store,
        &image,
        format,
        Some(&args.output),
        &settings,
        &ExportContext::default(),
    )?;
    Ok(ExitCode::SUCCESS)
}
