//! `kiln save`: a stored image into a docker-archive tar (or an OCI image layout tar).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kiln_cache::Store;

use crate::args::SaveArgs;

pub(crate) fn run(root: &Path, args: &SaveArgs) -> anyhow::Result<ExitCode> {
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let _lease = store.lease().context("taking a lease on the store")?;
    let record = store.find_image(&args.image)?;
    let image = store.stored_image(&record)?;
    // Written beside the destination and renamed into place once complete.
    let out = std::io::BufWriter::new(kiln_exporters::OutputFile::create(&store, &args.output)?);
    let out = match args.format.as_str() {
        "docker" => kiln_exporters::write_docker_tar(
            &store,
            &image,
            std::slice::from_ref(&record.name),
            out,
            0,
        )?,
        "oci" => kiln_exporters::write_oci_tar(&store, &image, Some(&record.name), out, 0)?,
        other => bail!("unknown format {other:?}: expected docker or oci"),
    };
    out.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", args.output.display()))?
        .finish()
        .with_context(|| format!("writing {}", args.output.display()))?;
    Ok(ExitCode::SUCCESS)
}
