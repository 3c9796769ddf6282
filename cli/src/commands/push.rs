//! `kiln push`: a stored image to its registry.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_cache::Store;
use kiln_exporters::{ExportContext, ImageFormat, ImageIndex, ImageSettings};

use crate::args::PushArgs;
use crate::config::Config;

pub(crate) fn run(root: &Path, config: &Config, args: &PushArgs) -> anyhow::Result<ExitCode> {
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let record = store.find_image(&args.image)?;
    let context = ExportContext {
        registry: config.cache.clone(),
        ..ExportContext::default()
    };
    let settings = ImageSettings {
        names: vec![record.name.clone()],
        store: false,
        push: true,
        ..ImageSettings::default()
    };
    // A multi-platform image (`--platform a,b -t`) is pushed whole: every platform's image,
    // then its index under the name.
    let response = match ImageIndex::stored(&store, &record)? {
        Some(index) => kiln_exporters::deliver_index(
            &store,
            &index,
            ImageFormat::Store,
            None,
            &settings,
            &context,
        )?,
        None => kiln_exporters::deliver_image(
            &store,
            &kiln_exporters::stored_image(&store, &record)?,
            ImageFormat::Store,
            None,
            &settings,
            &context,
        )?,
    };
    let mut stdout = std::io::stdout().lock();
    for (name, digest) in &response.pushed {
        writeln!(stdout, "{name}: digest: {digest}").context("writing to standard output")?;
    }
    Ok(ExitCode::SUCCESS)
}
