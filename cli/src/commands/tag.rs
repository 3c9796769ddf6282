//! `kiln tag`: give a stored image another name.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_cache::Store;

use crate::args::TagArgs;

pub(crate) fn run(root: &Path, args: &TagArgs) -> anyhow::Result<ExitCode> {
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    store
        .tag_image(&args.source, &args.target)
        .with_context(|| format!("tagging {} as {}", args.source, args.target))?;
    Ok(ExitCode::SUCCESS)
}
