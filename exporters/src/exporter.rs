//! The exporter interface, in BuildKit's spirit: an [`Output`] request is resolved with what
//! every output of one build shares ([`ExportContext`]) into an [`Exporter`], which exports a
//! solved result (a snapshot key and the frontend's image config) and answers with an
//! [`ExportResponse`].
//!
//! # Overview
//! 1. `type=local` / `type=tar`: the merged tree of the snapshot ([`export_local`],
//!    [`export_tar`]).
//! 2. Images: the recipe ([`Exporter::image`]): snapshot chain → layers (each compressed once,
//!    [`chain_layers`]) → config (with the base image's history, [`base_histories`]) →
//!    manifest.
//! 3. Delivery ([`deliver_image`]): an OCI layout (tar or directory) or docker archive written
//!    whole or not at all ([`OutputFile`]), the image store, registry pushes. `kiln save` and
//!    `kiln push` deliver stored images the same way.

use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use kiln_cache::{Config, Credentials, Digest, Image, LayerOptions, PendingManifest, Store};

use crate::attestation::{Attestations, Statement, attestation_manifest};
use crate::error::Error;
use crate::image::{
    ImageOptions, base_histories, build_image, build_image_from_json, image_config,
};
use crate::index::ImageIndex;
use crate::layers::{ExistingLayers, chain_diff_ids, chain_layers_counted, snapshot_chain};
use crate::local::{export_local, export_tar};
use crate::options::{ImageFormat, ImageSettings, Output};
use crate::output::OutputFile;
use crate::phases::{ExportPhase, PhaseLog};

/// What every output of one export shares.
#[derive(Debug, Clone)]
pub struct ExportContext {
    /// The registry settings of pushes (plain HTTP hosts, `insecure`).
    pub registry: Config,
    /// Where registry credentials come from (default: Docker's credentials file).
    pub credentials: Arc<dyn Credentials>,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
    /// The build's time (seconds since 1970), the same for every output.
    pub build_time: Option<i64>,
    /// An image output that only stores the image under its names (neither pushed nor
    /// written to a file) stores it with its manifest pending: each new layer's diff ID is
    /// computed, no blob is compressed ([`kiln_cache::Store::store_pending_image`]), as
    /// `docker build -t` makes none; a push, a save or an export makes them later
    /// ([`crate::stored_image`]). Set it when no other output of the build needs the blobs.
    pub pending_manifest: bool,
    /// The attestations the build asks for (`--provenance`, `--sbom`): written beside the
    /// images of OCI layouts and pushes, as BuildKit's image and OCI exporters do; an image
    /// only stored (`-t`) or written as a docker archive goes without, as with buildx.
    pub attestations: Attestations,
    /// The phases of the export so far (`compress`, `diff`, `push`); each output's response
    /// takes those of its own export.
    pub phases: PhaseLog,
}

impl Default for ExportContext {
    fn default() -> Self {
        Self {
            registry: Config::default(),
            credentials: Arc::new(kiln_cache::DockerConfigFile::from_env()),
            source_date_epoch: None,
            build_time: None,
            pending_manifest: false,
            attestations: Attestations::default(),
            phases: PhaseLog::default(),
        }
    }
}

/// A resolved output, ready to export results.
#[derive(Debug)]
pub struct Exporter<'a> {
    output: &'a Output,
    context: &'a ExportContext,
}

/// What an export made.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportResponse {
    /// The image's id (image outputs): its manifest digest, or, for an image stored with its
    /// manifest pending (`kiln build -t`), its config digest, as docker's image id.
    pub image_digest: Option<Digest>,
    /// The image's config digest (image outputs).
    pub config_digest: Option<Digest>,
    /// The names the image was stored or pushed under.
    pub names: Vec<String>,
    /// Each pushed name with the manifest digest the registry has.
    pub pushed: Vec<(String, Digest)>,
    /// The provenance predicate of each platform's image, when the output took provenance
    /// (for `--metadata-file`'s `buildx.build.provenance`).
    pub provenance: Vec<(kiln_llb::Platform, serde_json::Value)>,
    /// The phases of this output's export, for the build's trace.
    pub phases: Vec<ExportPhase>,
}

impl Output {
    /// Resolves this request with the shared `context` into an exporter.
    pub fn resolve<'a>(&'a self, context: &'a ExportContext) -> Exporter<'a> {
        Exporter {
            output: self,
            context,
        }
    }
}

impl Exporter<'_> {
    /// Exports the result `snapshot` (`None`: the empty file system) with the frontend's image
    /// `config` (as JSON; `None` for a bare LLB build).
    pub fn export(
        &self,
        store: &Store,
        snapshot: Option<&str>,
        config: Option<&serde_json::Value>,
    ) -> Result<ExportResponse, Error> {
        let mut response = self.export_one(store, snapshot, config)?;
        response.phases = self.context.phases.take();
        Ok(response)
    }

    fn export_one(
        &self,
        store: &Store,
        snapshot: Option<&str>,
        config: Option<&serde_json::Value>,
    ) -> Result<ExportResponse, Error> {
        match self.output {
            Output::Local { dest } => {
                export_local(store, snapshot, dest)?;
                Ok(ExportResponse::default())
            }
            Output::Tar { dest } => {
                let writing = |source| Error::Write {
                    dest: dest.clone(),
                    source: Box::new(source),
                };
                let out = export_tar(
                    store,
                    snapshot,
                    self.context.source_date_epoch,
                    BufWriter::new(OutputFile::create(store, dest)?),
                )
                .map_err(writing)?;
                finish(out, dest)?;
                Ok(ExportResponse::default())
            }
            Output::Image {
                format: ImageFormat::Store,
                dest: None,
                settings,
            } if self.context.pending_manifest
                && settings.store
                && !settings.push
                && !settings.names.is_empty() =>
            {
                self.store_pending(store, snapshot, config, settings)
            }
            Output::Image {
                format,
                dest,
                settings,
            } => {
                let image = self.image(store, snapshot, config, settings)?;
                let response = deliver_image(
                    store,
                    &image,
                    *format,
                    dest.as_deref(),
                    settings,
                    self.context,
                )?;
                tracing::info!(manifest = %image.manifest_digest, "exported the image");
                Ok(response)
            }
        }
    }

    /// Exports one result per platform (`--platform a,b`): images become one image per
    /// platform tied by an index (OCI layout, store, push); `type=local` and `type=tar` put
    /// each platform's files in a folder named after it (`linux_arm64`), as buildx's
    /// `platform-split`; the docker format holds one platform only, as docker's.
    pub fn export_platforms(
        &self,
        store: &Store,
        results: &[PlatformResult<'_>],
    ) -> Result<ExportResponse, Error> {
        let mut response = self.export_each(store, results)?;
        response.phases = self.context.phases.take();
        Ok(response)
    }

    fn export_each(
        &self,
        store: &Store,
        results: &[PlatformResult<'_>],
    ) -> Result<ExportResponse, Error> {
        match self.output {
            Output::Local { dest } => {
                for result in results {
                    export_local(
                        store,
                        result.snapshot,
                        &dest.join(result.platform.folder_name()),
                    )?;
                }
                Ok(ExportResponse::default())
            }
            Output::Tar { dest } => {
                let writing = |source| Error::Write {
                    dest: dest.clone(),
                    source: Box::new(source),
                };
                // The folders are gathered in the store's scratch space, then written as one
                // tar stream.
                let gathered = tempfile::tempdir_in(store.scratch_dir()?)?;
                for result in results {
                    let folder = gathered.path().join(result.platform.folder_name());
                    export_local(store, result.snapshot, &folder)?;
                }
                let options = kiln_cache::LayerOptions {
                    compression: kiln_cache::Compression::Uncompressed,
                    source_date_epoch: self.context.source_date_epoch,
                    threads: 1,
                };
                let out = kiln_cache::write_layer(
                    gathered.path(),
                    kiln_cache::DiffSource::Directory,
                    &options,
                    BufWriter::new(OutputFile::create(store, dest)?),
                )
                .map_err(|e| writing(e.into()))?
                .1;
                finish(out, dest)?;
                Ok(ExportResponse::default())
            }
            Output::Image {
                format: ImageFormat::Docker,
                ..
            } => Err(Error::ManifestList),
            Output::Image {
                format,
                dest,
                settings,
            } => {
                let mut images = Vec::with_capacity(results.len());
                let mut attestations = Vec::new();
                let mut provenance = Vec::new();
                let attest = self.attests(*format, settings);
                for result in results {
                    let image = self.image(store, result.snapshot, result.config, settings)?;
                    if attest {
                        let (names, _) = names_and_mtime(settings, self.context)?;
                        let statements = self.statements(store, result, &names, &image)?;
                        provenance.extend(
                            statements
                                .iter()
                                .filter(|s| {
                                    s.predicate_type == crate::provenance::PREDICATE_TYPE_SLSA_V1
                                })
                                .map(|s| (result.platform.clone(), s.predicate.clone())),
                        );
                        let manifest = attestation_manifest(
                            store,
                            &names,
                            result.platform,
                            &image,
                            &statements,
                        )?;
                        attestations.push((image.manifest_digest, manifest));
                    }
                    images.push((result.platform.clone(), image));
                }
                let index = ImageIndex::with_attestations(
                    store,
                    images,
                    attestations,
                    settings.oci_mediatypes,
                )?;
                let mut response = deliver_index(
                    store,
                    &index,
                    *format,
                    dest.as_deref(),
                    settings,
                    self.context,
                )?;
                response.provenance = provenance;
                tracing::info!(index = %index.digest, "exported the image index");
                Ok(response)
            }
        }
    }

    /// Whether this output takes the build's attestations: an image written as an OCI layout
    /// or pushed, in OCI media types (BuildKit's attestation manifests are OCI manifests).
    pub fn attests(&self, format: ImageFormat, settings: &ImageSettings) -> bool {
        if !self.context.attestations.any() {
            return false;
        }
        let wanted = matches!(format, ImageFormat::Oci { .. }) || settings.push;
        if wanted && !settings.oci_mediatypes {
            tracing::warn!("attestations need OCI media types: this output goes without");
            return false;
        }
        wanted && format != ImageFormat::Docker
    }

    /// The statements about one platform's image: its SBOM, its provenance.
    fn statements(
        &self,
        store: &Store,
        result: &PlatformResult<'_>,
        names: &[String],
        image: &Image,
    ) -> Result<Vec<Statement>, Error> {
        let mut statements = Vec::new();
        if self.context.attestations.sbom {
            let subject = crate::sbom::Subject {
                names,
                platform: result.platform,
                digest: &image.manifest_digest,
                created: self
                    .context
                    .source_date_epoch
                    .or(self.context.build_time)
                    .unwrap_or(0),
            };
            let keys = chain(store, result.snapshot)?;
            let predicate =
                crate::sbom::sbom_predicate(store, &keys, &subject).map_err(|e| Error::Step {
                    what: "making the image's SBOM",
                    source: Box::new(e),
                })?;
            statements.push(Statement {
                predicate_type: crate::sbom::PREDICATE_TYPE_SPDX,
                predicate,
            });
        }
        if let Some(request) = &self.context.attestations.provenance {
            statements.push(Statement {
                predicate_type: crate::provenance::PREDICATE_TYPE_SLSA_V1,
                predicate: crate::provenance::provenance_predicate(request, result.definition),
            });
        }
        Ok(statements)
    }

    /// The image recipe: the layers of the snapshot chain, the config, the manifest.
    pub fn image(
        &self,
        store: &Store,
        snapshot: Option<&str>,
        config: Option<&serde_json::Value>,
        settings: &ImageSettings,
    ) -> Result<Image, Error> {
        let keys = chain(store, snapshot)?;
        let started = std::time::Instant::now();
        let (layers, written) = chain_layers_counted(
            store,
            &keys,
            &self.layer_options(settings),
            existing(settings),
        )
        .map_err(|e| Error::Step {
            what: "writing the image layers",
            source: Box::new(e),
        })?;
        if written > 0 {
            self.context.phases.note("compress", started, Some(written));
        }
        let options = self.image_options(store, &keys, settings)?;
        match config {
            Some(config) => build_image_from_json(layers, config, &options),
            None => build_image(layers, None, &options),
        }
    }

    /// Stores the image under its names with its manifest pending: the layers' diff IDs and
    /// snapshots, the config; no compressed blob. Answers the image's ID, its config digest.
    fn store_pending(
        &self,
        store: &Store,
        snapshot: Option<&str>,
        config: Option<&serde_json::Value>,
        settings: &ImageSettings,
    ) -> Result<ExportResponse, Error> {
        let keys = chain(store, snapshot)?;
        let layer_options = self.layer_options(settings);
        let started = std::time::Instant::now();
        let layers =
            chain_diff_ids(store, &keys, &layer_options, existing(settings)).map_err(|e| {
                Error::Step {
                    what: "computing the image layers' diff IDs",
                    source: Box::new(e),
                }
            })?;
        self.context.phases.note("diff", started, None);
        let options = self.image_options(store, &keys, settings)?;
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
        let config = image_config(&diff_ids, config, &options)?;
        let pending = PendingManifest {
            blobs: layers.iter().map(|l| l.blob).collect(),
            compression: layer_options.compression,
            source_date_epoch: layer_options.source_date_epoch,
            oci_mediatypes: settings.oci_mediatypes,
        };
        let mut names = Vec::with_capacity(settings.names.len());
        let mut id = None;
        let mut config_digest = None;
        for name in &settings.names {
            let record = store
                .store_pending_image(&config, &layers, pending.clone(), name)
                .map_err(|source| Error::Store {
                    name: name.clone(),
                    source,
                })?;
            id = Some(record.id());
            config_digest = Some(record.config);
            names.push(record.name);
        }
        tracing::info!(config = ?id, "stored the image, its manifest pending");
        Ok(ExportResponse {
            image_digest: id,
            config_digest,
            names,
            pushed: Vec::new(),
            provenance: Vec::new(),
            phases: Vec::new(),
        })
    }

    /// How the image's new layers are written.
    fn layer_options(&self, settings: &ImageSettings) -> LayerOptions {
        LayerOptions {
            compression: settings.compression,
            source_date_epoch: self
                .context
                .source_date_epoch
                .filter(|_| settings.rewrite_timestamp),
            threads: 0,
        }
    }

    /// How the image's config is finished.
    fn image_options(
        &self,
        store: &Store,
        keys: &[String],
        settings: &ImageSettings,
    ) -> Result<ImageOptions, Error> {
        Ok(ImageOptions {
            oci_mediatypes: settings.oci_mediatypes,
            source_date_epoch: self.context.source_date_epoch,
            build_time: self.context.build_time,
            base_histories: base_histories(store, keys).map_err(|e| Error::Step {
                what: "reading the base image's history",
                source: Box::new(e),
            })?,
            layer_times: keys
                .iter()
                .map(|key| {
                    let record = store.snapshot(key)?;
                    Ok(record.and_then(|r| i64::try_from(r.created).ok()))
                })
                .collect::<Result<_, kiln_cache::Error>>()?,
        })
    }
}

/// The snapshot chain of a result (`None`: the empty file system), bottom first.
fn chain(store: &Store, snapshot: Option<&str>) -> Result<Vec<String>, Error> {
    match snapshot {
        Some(key) => snapshot_chain(store, key),
        None => Ok(Vec::new()),
    }
}

/// What an export does with a base image's blobs.
fn existing(settings: &ImageSettings) -> ExistingLayers {
    if settings.force_compression {
        ExistingLayers::Recompress
    } else {
        ExistingLayers::Reuse
    }
}

/// Syncs a finished export file and renames it into place.
fn finish(out: BufWriter<OutputFile>, dest: &Path) -> Result<(), Error> {
    let writing = |source| Error::Write {
        dest: dest.to_owned(),
        source: Box::new(source),
    };
    out.into_inner()
        .map_err(|e| writing(Error::Io(e.into_error())))?
        .finish()
        .map_err(writing)
}

/// The normalized names of an image output, and the time of its archive entries
/// (`SOURCE_DATE_EPOCH`, 0 without it).
fn names_and_mtime(
    settings: &ImageSettings,
    context: &ExportContext,
) -> Result<(Vec<String>, u64), Error> {
    let mtime = context
        .source_date_epoch
        .and_then(|e| u64::try_from(e).ok())
        .unwrap_or(0);
    let names = settings
        .names
        .iter()
        .map(|n| kiln_cache::normalize_name(n))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((names, mtime))
}

/// With `push`, pushes to each name in turn; answers each name with the digest the registry
/// has.
fn push_each<'a, F, Fut>(
    settings: &ImageSettings,
    names: &'a [String],
    phases: &PhaseLog,
    push: F,
) -> Result<Vec<(String, Digest)>, Error>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<Digest, Error>>,
{
    if !settings.push || names.is_empty() {
        return Ok(Vec::new());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    names
        .iter()
        .map(|name| {
            let started = std::time::Instant::now();
            let digest = runtime.block_on(push(name))?;
            phases.note("push", started, None);
            tracing::info!(image = %name, %digest, "pushed");
            Ok((name.clone(), digest))
        })
        .collect()
}

/// One platform's solved result: its snapshot (`None`: the empty file system) and the
/// frontend's image config (as JSON; `None` for a bare LLB build).
#[derive(Debug, Clone, Copy)]
pub struct PlatformResult<'a> {
    /// The platform it was built for.
    pub platform: &'a kiln_llb::Platform,
    /// The result's snapshot key.
    pub snapshot: Option<&'a str>,
    /// The image config.
    pub config: Option<&'a serde_json::Value>,
    /// The LLB it was solved from (`None`: `scratch`), for its provenance.
    pub definition: Option<&'a kiln_llb::pb::Definition>,
}

/// Delivers a multi-platform image: an OCI layout naming the index, the store (each name
/// records the image of the platform this host runs, with the index beside it), the
/// registry (every manifest, then the index under each name).
pub fn deliver_index(
    store: &Store,
    index: &ImageIndex,
    format: ImageFormat,
    dest: Option<&Path>,
    settings: &ImageSettings,
    context: &ExportContext,
) -> Result<ExportResponse, Error> {
    let (names, mtime) = names_and_mtime(settings, context)?;
    let top = crate::archive::Top::Index(index);
    match (format, dest) {
        (ImageFormat::Oci { tar: true }, Some(dest)) => {
            let out = crate::archive::write_tar(
                store,
                top,
                names.first().map(String::as_str),
                BufWriter::new(OutputFile::create(store, dest)?),
                mtime,
            )?;
            finish(out, dest)?;
        }
        (ImageFormat::Oci { tar: false }, Some(dest)) => {
            crate::archive::write_dir(store, top, names.first().map(String::as_str), dest)?;
        }
        (ImageFormat::Docker, _) => return Err(Error::ManifestList),
        _ => {}
    }
    if format == ImageFormat::Store && settings.store {
        let stored = |image: &kiln_cache::Image, name: &str| {
            store
                .store_image_of_index(image, &index.digest, name)
                .map_err(|source| Error::Store {
                    name: name.to_owned(),
                    source,
                })
        };
        // Each platform's image is recorded under the repository and its digest (what keeps
        // it from garbage collection, and what a later push of the name sends), once per
        // repository however many names share it; each name runs the host's.
        let mut by_digest = std::collections::BTreeSet::new();
        for name in &names {
            let reference = kiln_cache::parse_reference(name)?;
            for (_, image) in &index.images {
                let pinned = kiln_cache::digest_name(&reference, &image.manifest_digest);
                if !by_digest.contains(&pinned) {
                    stored(image, &pinned)?;
                    by_digest.insert(pinned);
                }
            }
        }
        let host = index.host_image();
        for name in &names {
            stored(host, name)?;
        }
    }
    let pushed = push_each(settings, &names, &context.phases, |name| {
        crate::push::push_index(store, index, name, &context.registry, &context.credentials)
    })?;
    Ok(ExportResponse {
        image_digest: Some(index.digest),
        // An index has one config per platform, none of its own (buildx names none either).
        config_digest: None,
        names,
        pushed,
        provenance: Vec::new(),
        phases: Vec::new(),
    })
}

/// Delivers `image`: writes it as `format` to `dest` (OCI layout or docker archive), stores
/// it under its names (`type=image` with `store`), pushes it (`push`). Archive entries get
/// `SOURCE_DATE_EPOCH` as their time (0 without it).
pub fn deliver_image(
    store: &Store,
    image: &Image,
    format: ImageFormat,
    dest: Option<&Path>,
    settings: &ImageSettings,
    context: &ExportContext,
) -> Result<ExportResponse, Error> {
    let (names, mtime) = names_and_mtime(settings, context)?;
    let create = |dest: &Path| -> Result<BufWriter<OutputFile>, Error> {
        Ok(BufWriter::new(OutputFile::create(store, dest)?))
    };
    match (format, dest) {
        (ImageFormat::Oci { tar: true }, Some(dest)) => {
            let out = crate::archive::write_oci_tar(
                store,
                image,
                names.first().map(String::as_str),
                create(dest)?,
                mtime,
            )?;
            finish(out, dest)?;
        }
        (ImageFormat::Oci { tar: false }, Some(dest)) => {
            crate::archive::write_oci_dir(store, image, names.first().map(String::as_str), dest)?;
        }
        (ImageFormat::Docker, Some(dest)) => {
            let out = crate::archive::write_docker_tar(store, image, &names, create(dest)?, mtime)?;
            finish(out, dest)?;
        }
        _ => {}
    }
    if format == ImageFormat::Store && settings.store {
        for name in &names {
            store
                .store_image(image, name)
                .map_err(|source| Error::Store {
                    name: name.clone(),
                    source,
                })?;
        }
    }
    let pushed = push_each(settings, &names, &context.phases, |name| {
        crate::push::push(store, image, name, &context.registry, &context.credentials)
    })?;
    Ok(ExportResponse {
        image_digest: Some(image.manifest_digest),
        config_digest: Some(image.config_digest),
        names,
        pushed,
        provenance: Vec::new(),
        phases: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_output;

    #[test]
    fn an_image_output_answers_its_digest_and_names_and_writes_its_file() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let context = ExportContext {
            build_time: Some(0),
            ..ExportContext::default()
        };
        let layout = out.path().join("layout");
        let oci = parse_output(&format!("type=oci,dest={},tar=false", layout.display())).unwrap();
        let response = oci.resolve(&context).export(&store, None, None).unwrap();
        let digest = response.image_digest.expect("an image digest");
        let index = fs_err::read_to_string(layout.join("index.json")).unwrap();
        assert!(index.contains(&digest.to_string()), "{index}");
        assert!(response.pushed.is_empty());
        // The same result stored under a name is the same image.
        let stored = parse_output("type=image,name=example.com/a:1").unwrap();
        let response = stored.resolve(&context).export(&store, None, None).unwrap();
        assert_eq!(response.image_digest, Some(digest));
        assert_eq!(response.names, ["example.com/a:1"]);
        let record = store.find_image("example.com/a:1").unwrap();
        assert_eq!(store.stored_image(&record).unwrap().manifest_digest, digest);
    }
}
