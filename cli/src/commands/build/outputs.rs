//! Wires the exporters of `--output` and `-t` (parsed by `kiln_exporters::outputs_from_args`).

use anyhow::Context as _;
use kiln_cache::Store;
use kiln_exporters::{ExportContext, Output};
use kiln_solver::Ref;

/// `SOURCE_DATE_EPOCH`, if set.
fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.is_empty() => Ok(Some(text.parse().with_context(|| {
            format!("invalid SOURCE_DATE_EPOCH {text:?}: expected seconds since 1970")
        })?)),
        _ => Ok(None),
    }
}

/// The time of this build (the same for every output, so they describe one image).
fn build_time() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Writes the result to each output, with the frontend's image config (none for `--llb`) and
/// the registry settings of kiln's configuration (for a push).
pub(super) fn export(
    store: &Store,
    result: &Ref,
    outputs: &[Output],
    config: Option<&kiln_frontend::ImageConfig>,
    registry: &kiln_cache::Config,
) -> anyhow::Result<()> {
    if outputs.is_empty() {
        return Ok(());
    }
    let config = config
        .map(serde_json::to_value)
        .transpose()
        .context("serialising the image config")?;
    let context = ExportContext {
        registry: registry.clone(),
        docker_config: kiln_cache::docker_config_path(),
        // Read only by the outputs that use it (a local export keeps the files' own times).
        source_date_epoch: if outputs.iter().all(|o| matches!(o, Output::Local { .. })) {
            None
        } else {
            source_date_epoch()?
        },
        build_time: Some(build_time()),
    };
    for output in outputs {
        output
            .resolve(&context)
            .export(store, result.key(), config.as_ref())?;
    }
    Ok(())
}
