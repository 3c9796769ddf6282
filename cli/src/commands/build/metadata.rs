//! `--iidfile` and `--metadata-file`: what the build made, for scripts, as buildx writes them.
//!
//! The image id file holds the id `kiln images` and `-q` show (no newline, as docker's). The
//! metadata file is one JSON object with buildx's keys: `containerimage.digest` (the manifest
//! digest; for an image stored with its manifest still to make, its id, the config digest, as
//! docker's image store answers), `containerimage.config.digest`, `image.name` (the names,
//! comma-separated), `buildx.build.ref` (`kiln/local/ID`, the build's id in `kiln history`) and,
//! for images with provenance, `buildx.build.provenance` (the SLSA predicate; with several
//! platforms, `buildx.build.provenance/linux/amd64`…).

use anyhow::{Context as _, bail};
use kiln_exporters::ExportResponse;

use crate::args::BuildArgs;

/// The image the build made: a response with a manifest digest first, else the first image.
fn image(exported: &[ExportResponse]) -> Option<&ExportResponse> {
    let images = || exported.iter().filter(|r| r.image_digest.is_some());
    images()
        .find(|r| r.image_digest != r.config_digest)
        .or_else(|| images().next())
}

/// The metadata document.
fn metadata(exported: &[ExportResponse], build_id: Option<&str>) -> serde_json::Value {
    let mut document = serde_json::Map::new();
    if let Some(image) = image(exported) {
        if let Some(digest) = &image.image_digest {
            document.insert("containerimage.digest".into(), digest.to_string().into());
        }
        if let Some(config) = &image.config_digest {
            document.insert(
                "containerimage.config.digest".into(),
                config.to_string().into(),
            );
        }
        let names: Vec<&str> = exported
            .iter()
            .flat_map(|r| r.names.iter().map(String::as_str))
            .collect();
        if !names.is_empty() {
            document.insert("image.name".into(), names.join(",").into());
        }
    }
    // buildx's key: the predicate, or one key per platform for several.
    if let Some(image) = exported.iter().find(|r| !r.provenance.is_empty()) {
        match image.provenance.as_slice() {
            [(_, predicate)] => {
                document.insert("buildx.build.provenance".into(), predicate.clone());
            }
            several => {
                for (platform, predicate) in several {
                    document.insert(
                        format!("buildx.build.provenance/{platform}"),
                        predicate.clone(),
                    );
                }
            }
        }
    }
    if let Some(id) = build_id {
        document.insert("buildx.build.ref".into(), format!("kiln/local/{id}").into());
    }
    document.into()
}

/// Writes the files `--iidfile` and `--metadata-file` ask for.
pub(super) fn write_files(
    args: &BuildArgs,
    exported: &[ExportResponse],
    build_id: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(path) = &args.iidfile {
        // The id `kiln images` shows: the first image output's.
        let Some(id) = exported.iter().find_map(|r| r.image_digest.as_ref()) else {
            bail!(
                "--iidfile: the build made no image (an image output is -t NAME, \
                 -o type=image, type=oci or type=docker)"
            );
        };
        fs_err::write(path, id.to_string()).context("writing the --iidfile")?;
    }
    if let Some(path) = &args.metadata_file {
        let mut text = serde_json::to_string_pretty(&metadata(exported, build_id))
            .context("writing the --metadata-file")?;
        text.push('\n');
        fs_err::write(path, text).context("writing the --metadata-file")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kiln_cache::Digest;

    use super::*;

    #[test]
    fn metadata_names_the_manifest_config_names_and_build() {
        let manifest = Digest::from_bytes(b"manifest");
        let config = Digest::from_bytes(b"config");
        let exported = [
            ExportResponse {
                image_digest: Some(config),
                config_digest: Some(config),
                names: vec!["docker.io/library/app:latest".into()],
                pushed: Vec::new(),
                provenance: Vec::new(),
                phases: Vec::new(),
            },
            ExportResponse {
                image_digest: Some(manifest),
                config_digest: Some(config),
                names: Vec::new(),
                pushed: Vec::new(),
                provenance: vec![(
                    kiln_llb::Platform::new("linux", "amd64", ""),
                    serde_json::json!({ "buildDefinition": {} }),
                )],
                phases: Vec::new(),
            },
        ];
        let document = metadata(&exported, Some("abc"));
        assert_eq!(document["containerimage.digest"], manifest.to_string());
        assert_eq!(document["containerimage.config.digest"], config.to_string());
        assert_eq!(document["image.name"], "docker.io/library/app:latest");
        assert_eq!(document["buildx.build.ref"], "kiln/local/abc");
        assert_eq!(
            document["buildx.build.provenance"],
            serde_json::json!({ "buildDefinition": {} })
        );
        // A local export makes no image: only the build is named.
        let document = metadata(&[], Some("abc"));
        assert_eq!(document.as_object().unwrap().len(), 1);
    }
}
