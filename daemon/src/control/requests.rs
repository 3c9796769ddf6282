//! What a `Control.Solve` or `Prune` request asks for, read into kiln's terms: outputs and
//! how each goes back to the client, cache exports and imports (the client's local caches
//! among them), entitlements, prune options, and what the build's record is named.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_cache::{CacheExportRequest, CacheImportRequest, CacheOptionsEntry, PruneOptions};
use kiln_solver::Entitlements;
use tonic::Status;

use super::error_text;
use crate::pb::control::{PruneRequest, SolveRequest};

/// The prune request as the store's options: BuildKit's durations are in nanoseconds, its
/// filters those of `kiln prune` ([`PruneOptions::add_filter`]).
pub(super) fn prune_options(request: &PruneRequest) -> Result<PruneOptions, Status> {
    let bytes = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    let mut options = PruneOptions {
        all: request.all,
        keep_duration: u64::try_from(request.keep_duration)
            .ok()
            .filter(|v| *v > 0)
            .map(Duration::from_nanos),
        reserved_space: bytes(request.reserved_space),
        max_used_space: bytes(request.max_used_space),
        min_free_space: bytes(request.min_free_space),
        ..PruneOptions::default()
    };
    // BuildKit's keep-duration alone keeps what was used that recently: the rest goes.
    let limited = options.reserved_space.is_some()
        || options.max_used_space.is_some()
        || options.min_free_space.is_some();
    if !limited {
        options.older_than = options.keep_duration.take();
    }
    for filter in &request.filter {
        options
            .add_filter(filter)
            .map_err(|e| Status::invalid_argument(error_text("invalid prune request", &e)))?;
    }
    Ok(options)
}

/// An export that goes back to the client: made at `path` on this host, then sent through
/// the client's session.
pub(super) struct Delivery {
    /// The exporter's index in the request.
    pub(super) exporter: usize,
    pub(super) path: PathBuf,
    pub(super) how: Sent,
}

/// How an export reaches the client.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// A directory, synced into the client's (`local`).
    Dir,
    /// An archive's bytes (`tar`, `oci`, `docker`).
    File,
    /// An image layout's blobs, into the client's content store (`oci` or `docker` with
    /// `tar=false`): the client records the image in its directory's `index.json`.
    Store,
}

/// The type of the request's exporter `index`.
pub(super) fn exporter_kind(request: &SolveRequest, index: usize) -> &str {
    request
        .exporters
        .get(index)
        .map_or(request.exporter_deprecated.as_str(), |e| e.r#type.as_str())
}

/// The exporters of a request as kiln outputs. The attributes are BuildKit's, which kiln's
/// `--output` grammar shares (several image names go `;`-separated there). The client keeps
/// the destinations of `local`, `tar`, `oci` and `docker` exports: those are made under
/// `scratch` and delivered.
pub(super) fn outputs(
    request: &SolveRequest,
    scratch: &Path,
) -> Result<(Vec<kiln_exporters::Output>, Vec<Delivery>), Status> {
    let mut exporters: Vec<(&str, Vec<(&String, &String)>)> = request
        .exporters
        .iter()
        .map(|e| (e.r#type.as_str(), e.attrs.iter().collect()))
        .collect();
    if exporters.is_empty() && !request.exporter_deprecated.is_empty() {
        exporters.push((
            request.exporter_deprecated.as_str(),
            request.exporter_attrs_deprecated.iter().collect(),
        ));
    }
    let mut outputs = Vec::new();
    let mut deliveries = Vec::new();
    for (index, (kind, mut attrs)) in exporters.into_iter().enumerate() {
        attrs.retain(|(key, _)| key.as_str() != "dest");
        attrs.sort();
        let mut text = format!("type={kind}");
        for (key, value) in &attrs {
            text.push(',');
            text.push_str(key);
            text.push('=');
            if key.as_str() == "name" {
                text.push_str(&value.replace(',', ";"));
            } else {
                text.push_str(value);
            }
        }
        let tar = attrs
            .iter()
            .find(|(key, _)| key.as_str() == "tar")
            .is_none_or(|(_, value)| !matches!(value.as_str(), "false" | "0"));
        let delivered = match kind {
            "local" => Some(Sent::Dir),
            "tar" => Some(Sent::File),
            "oci" | "docker" if tar => Some(Sent::File),
            "oci" | "docker" => {
                if deliveries.iter().any(|d: &Delivery| d.how == Sent::Store) {
                    return Err(Status::invalid_argument(
                        "only one oci or docker exporter with tar=false per build: the client serves one export store",
                    ));
                }
                Some(Sent::Store)
            }
            _ => None,
        };
        if let Some(how) = delivered {
            let path = scratch.join(format!("export-{index}"));
            text.push_str(",dest=");
            text.push_str(&path.to_string_lossy());
            deliveries.push(Delivery {
                exporter: index,
                path,
                how,
            });
        }
        outputs.push(
            kiln_exporters::parse_output(&text).map_err(|e| {
                Status::invalid_argument(error_text(&format!("exporter {kind}"), &e))
            })?,
        );
    }
    Ok((outputs, deliveries))
}

/// A `type=local` cache of the client's: its directory as the client named it (the key of the
/// content store the client serves for it), and the OCI layout in the build's scratch
/// directory that stands for it here.
pub(super) struct LocalCache {
    pub(super) client_dir: String,
    pub(super) layout: PathBuf,
    /// An import: the manifest the client resolved from its `index.json`.
    pub(super) digest: Option<kiln_cache::Digest>,
    /// An export: the tag the client records the manifest under.
    pub(super) tag: String,
}

/// The request's cache exports and imports, and the local caches among them (read from and
/// written to the client's content stores through its session, through a layout in
/// `scratch`).
#[expect(clippy::type_complexity, reason = "the three lists one request names")]
pub(super) fn cache_requests(
    request: &SolveRequest,
    scratch: &Path,
) -> Result<
    (
        Vec<CacheExportRequest>,
        Vec<CacheImportRequest>,
        Vec<LocalCache>,
    ),
    Status,
> {
    let Some(cache) = &request.cache else {
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    };
    let mut locals = Vec::new();
    // A local cache's directory is the client's: the daemon reads and writes a layout of its
    // own in its place.
    let mut entry = |kind: &str, attrs: &HashMap<String, String>, dir_attr: &str| {
        let mut attrs: std::collections::BTreeMap<String, String> = attrs
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect();
        if kind == "local"
            && let Some(client_dir) = attrs.get(dir_attr).filter(|d| !d.is_empty()).cloned()
        {
            let layout = scratch.join(format!("local-cache-{}", locals.len()));
            let digest = match attrs.get("digest").filter(|d| !d.is_empty()) {
                Some(digest) => Some(digest.parse().map_err(|_| {
                    Status::invalid_argument(format!("invalid cache digest {digest:?}"))
                })?),
                None => None,
            };
            locals.push(LocalCache {
                client_dir,
                layout: layout.clone(),
                digest,
                tag: attrs
                    .get("tag")
                    .cloned()
                    .unwrap_or_else(|| "latest".to_owned()),
            });
            attrs.insert(dir_attr.to_owned(), layout.display().to_string());
        }
        Ok::<_, Status>(CacheOptionsEntry {
            kind: kind.to_owned(),
            attrs,
        })
    };
    let invalid = |e: kiln_cache::CacheOptionsError| {
        Status::invalid_argument(error_text("invalid cache option", &e))
    };
    let mut exports = Vec::new();
    for export in &cache.exports {
        exports.push(
            CacheExportRequest::from_entry(&entry(&export.r#type, &export.attrs, "dest")?)
                .map_err(invalid)?,
        );
    }
    if !cache.export_ref_deprecated.is_empty() {
        let mut attrs = cache.export_attrs_deprecated.clone();
        attrs.insert("ref".to_owned(), cache.export_ref_deprecated.clone());
        exports.push(
            CacheExportRequest::from_entry(&entry("registry", &attrs, "dest")?).map_err(invalid)?,
        );
    }
    let mut imports = Vec::new();
    for import in &cache.imports {
        if import.r#type == "local" && import.attrs.get("digest").is_none_or(String::is_empty) {
            // As BuildKit: the client resolves the manifest from its index.json.
            return Err(Status::invalid_argument(
                "local cache importer requires explicit digest",
            ));
        }
        imports.push(
            CacheImportRequest::from_entry(&entry(&import.r#type, &import.attrs, "src")?)
                .map_err(invalid)?,
        );
    }
    for reference in &cache.import_refs_deprecated {
        let attrs = HashMap::from([("ref".to_owned(), reference.clone())]);
        imports.push(
            CacheImportRequest::from_entry(&entry("registry", &attrs, "src")?).map_err(invalid)?,
        );
    }
    Ok((exports, imports, locals))
}

/// BuildKit's entitlement names.
pub(super) fn entitlements(names: &[String]) -> Result<Entitlements, Status> {
    let mut entitlements = Entitlements::default();
    for name in names {
        match name.as_str() {
            "network.host" => entitlements.network_host = true,
            "security.insecure" => entitlements.security_insecure = true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "invalid entitlement: {other}"
                )));
            }
        }
    }
    Ok(entitlements)
}

/// What a daemon build's record is named (the Dockerfile's name, with ` (TARGET)`, or `llb`
/// for a Definition), and the build args it names.
pub(super) fn record_name(attrs: &HashMap<String, String>) -> (String, Vec<String>) {
    let mut name = attrs
        .get("filename")
        .filter(|f| !f.is_empty())
        .cloned()
        .unwrap_or_else(|| "Dockerfile".to_owned());
    if attrs.is_empty() {
        name = "llb".to_owned();
    }
    if let Some(target) = attrs.get("target").filter(|t| !t.is_empty()) {
        name = format!("{name} ({target})");
    }
    let mut args: Vec<String> = attrs
        .keys()
        .filter_map(|k| k.strip_prefix("build-arg:"))
        .map(str::to_owned)
        .collect();
    args.sort();
    (name, args)
}
