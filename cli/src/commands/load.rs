//! `kiln load`: images from an OCI image layout or a docker-archive tar into the store.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kiln_cache::Store;

use crate::args::LoadArgs;

pub(crate) fn run(root: &Path, args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let path = match (&args.input, &args.path) {
        (Some(p), None) | (None, Some(p)) => p,
        (Some(_), Some(_)) => bail!("pass the archive either with --input or as an argument"),
        (None, None) => bail!("nothing to load: pass a FILE or DIR (or --input FILE)"),
    };
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let images = store
        .load(path)
        .with_context(|| format!("loading {}", path.display()))?;
    let mut stdout = std::io::stdout().lock();
    for image in images {
        writeln!(stdout, "Loaded image: {}", image.name).context("writing to standard output")?;
    }
    Ok(ExitCode::SUCCESS)
}
