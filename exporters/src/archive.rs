//! Writing images out: OCI image layout (directory or tar) and docker-archive tar.

use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use kiln_cache::{Digest, Image, Store, canonical_json};
use serde_json::json;

use crate::error::Error;
use crate::index::ImageIndex;
use crate::output::OutputFile;

/// Where the files of a layout go: a directory or a tar stream.
trait Sink {
    /// Adds a file of `size` bytes read from `data`.
    fn file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<(), Error>;
}

/// A layout directory: each file is written beside its name and renamed into place when
/// whole ([`OutputFile`]), and `index.json` comes last, so a layout cut short holds no
/// truncated file and names nothing missing.
struct DirSink<'a> {
    dir: PathBuf,
    store: &'a Store,
}

impl Sink for DirSink<'_> {
    fn file(&mut self, path: &str, _size: u64, data: &mut dyn Read) -> Result<(), Error> {
        let mut file = OutputFile::create(self.store, &self.dir.join(path))?;
        io::copy(data, &mut file)?;
        file.finish()
    }
}

struct TarSink<W: Write> {
    builder: tar::Builder<W>,
    mtime: u64,
    dirs: Vec<String>,
}

impl<W: Write> TarSink<W> {
    fn new(out: W, mtime: u64) -> Self {
        Self {
            builder: tar::Builder::new(out),
            mtime,
            dirs: Vec::new(),
        }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn finish(self) -> Result<W, Error> {
        Ok(self.builder.into_inner()?)
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<(), Error> {
        let mut prefix = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |p| p.1)
        {
            prefix.push_str(part);
            prefix.push('/');
            if !self.dirs.contains(&prefix) {
                let mut header = self.header(tar::EntryType::Directory, 0o755, 0);
                self.builder
                    .append_data(&mut header, &prefix, io::empty())?;
                self.dirs.push(prefix.clone());
            }
        }
        let mut header = self.header(tar::EntryType::Regular, 0o644, size);
        self.builder
            .append_data(&mut header, path, data.take(size))?;
        Ok(())
    }
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn bytes(sink: &mut dyn Sink, path: &str, data: &[u8]) -> Result<(), Error> {
    sink.file(path, data.len() as u64, &mut &data[..])
}

fn store_blob(sink: &mut dyn Sink, store: &Store, digest: &Digest) -> Result<(), Error> {
    let mut file = store.open_blob(digest)?;
    let size = file.metadata()?.len();
    sink.file(&blob_path(digest), size, &mut file)
}

/// The `org.opencontainers.image.ref.name` of a name: its tag (`latest` for `busybox`).
fn ref_name(name: &str) -> String {
    let without_digest = name.split('@').next().unwrap_or(name);
    match without_digest.rsplit_once(':') {
        Some((_, tag)) if !tag.contains('/') => tag.to_owned(),
        _ => "latest".to_owned(),
    }
}

/// What a layout's `index.json` names: one image, or an index of several.
#[derive(Clone, Copy)]
pub(crate) enum Top<'a> {
    Image(&'a Image),
    Index(&'a ImageIndex),
}

fn image_blobs(
    sink: &mut dyn Sink,
    store: &Store,
    image: &Image,
    written: &mut Vec<Digest>,
) -> Result<(), Error> {
    for layer in &image.layers {
        if !written.contains(&layer.digest) {
            store_blob(sink, store, &layer.digest)?;
            written.push(layer.digest);
        }
    }
    for (digest, data) in [
        (image.config_digest, &image.config),
        (image.manifest_digest, &image.manifest),
    ] {
        if !written.contains(&digest) {
            bytes(sink, &blob_path(&digest), data)?;
            written.push(digest);
        }
    }
    Ok(())
}

fn write_layout(
    sink: &mut dyn Sink,
    store: &Store,
    top: Top<'_>,
    name: Option<&str>,
) -> Result<(), Error> {
    bytes(sink, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut written = Vec::new();
    let (media_type, digest, size) = match top {
        Top::Image(image) => {
            image_blobs(sink, store, image, &mut written)?;
            (
                image.manifest_media_type.as_str(),
                image.manifest_digest,
                image.manifest.len(),
            )
        }
        Top::Index(index) => {
            for image in index
                .images
                .iter()
                .map(|(_, i)| i)
                .chain(index.attestations.iter().map(|(_, a)| a))
            {
                image_blobs(sink, store, image, &mut written)?;
            }
            bytes(sink, &blob_path(&index.digest), &index.index)?;
            (index.media_type.as_str(), index.digest, index.index.len())
        }
    };
    let index = layout_index(media_type, &digest, size as u64, name)?;
    bytes(sink, "index.json", &index)
}

/// The `index.json` of an OCI layout holding one image: its manifest (or image index)
/// `digest` of `size` bytes and `media_type`, annotated with the image's `name` and its tag
/// (`org.opencontainers.image.ref.name`) when it has one.
pub fn layout_index(
    media_type: &str,
    digest: &Digest,
    size: u64,
    name: Option<&str>,
) -> Result<Vec<u8>, Error> {
    let mut descriptor = json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": size,
    });
    if let Some(name) = name {
        descriptor["annotations"] = json!({
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": ref_name(name),
        });
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor],
    });
    Ok(canonical_json(&index, "index.json")?)
}

/// Writes `image` as an OCI image layout directory at `dest`.
pub fn write_oci_dir(
    store: &Store,
    image: &Image,
    name: Option<&str>,
    dest: &Path,
) -> Result<(), Error> {
    write_dir(store, Top::Image(image), name, dest)
}

/// Writes `top` as an OCI image layout directory at `dest`.
pub(crate) fn write_dir(
    store: &Store,
    top: Top<'_>,
    name: Option<&str>,
    dest: &Path,
) -> Result<(), Error> {
    fs_err::create_dir_all(dest)?;
    let mut sink = DirSink {
        dir: dest.to_owned(),
        store,
    };
    write_layout(&mut sink, store, top, name)
}

/// Writes `image` as an OCI image layout tar to `out`; every entry's mtime is `mtime`.
pub fn write_oci_tar<W: Write>(
    store: &Store,
    image: &Image,
    name: Option<&str>,
    out: W,
    mtime: u64,
) -> Result<W, Error> {
    write_tar(store, Top::Image(image), name, out, mtime)
}

/// Writes `top` as an OCI image layout tar to `out`; every entry's mtime is `mtime`.
pub(crate) fn write_tar<W: Write>(
    store: &Store,
    top: Top<'_>,
    name: Option<&str>,
    out: W,
    mtime: u64,
) -> Result<W, Error> {
    let mut sink = TarSink::new(out, mtime);
    write_layout(&mut sink, store, top, name)?;
    sink.finish()
}

/// Writes `image` as a docker-archive tar (what `docker load` reads) to `out`. Layers are
/// stored uncompressed, named by their diff IDs, as `docker save` does.
pub fn write_docker_tar<W: Write>(
    store: &Store,
    image: &Image,
    names: &[String],
    out: W,
    mtime: u64,
) -> Result<W, Error> {
    let mut sink = TarSink::new(out, mtime);
    let config_path = blob_path(&image.config_digest);
    bytes(&mut sink, &config_path, &image.config)?;
    let mut layer_paths = Vec::new();
    for layer in &image.layers {
        let path = blob_path(&layer.diff_id);
        if layer.digest == layer.diff_id {
            store_blob(&mut sink, store, &layer.digest)?;
        } else {
            // The tar header needs the size first: decompress to a temporary file.
            let mut temp = tempfile::tempfile_in(store.scratch_dir()?)?;
            let size = io::copy(
                &mut kiln_cache::decompress(store.open_blob(&layer.digest)?)?,
                &mut temp,
            )?;
            temp.rewind()?;
            sink.file(&path, size, &mut temp)?;
        }
        layer_paths.push(path);
    }
    let tags: Vec<String> = names.iter().map(|n| docker_tag(n)).collect();
    let manifest = json!([{
        "Config": config_path,
        "RepoTags": tags,
        "Layers": layer_paths,
    }]);
    bytes(
        &mut sink,
        "manifest.json",
        &canonical_json(&manifest, "manifest.json")?,
    )?;
    if let Some(top) = image.layers.last() {
        let mut repositories = serde_json::Map::new();
        for tag in &tags {
            if let Some((repo, t)) = tag.rsplit_once(':') {
                repositories.insert(repo.to_owned(), json!({ t: top.diff_id.hex() }));
            }
        }
        bytes(
            &mut sink,
            "repositories",
            &canonical_json(&repositories, "repositories")?,
        )?;
    }
    sink.finish()
}

/// Docker's short form of a normalised name (`docker.io/library/busybox:latest` is
/// `busybox:latest`).
pub(crate) fn docker_tag(name: &str) -> String {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_tags() {
        assert_eq!(ref_name("docker.io/library/busybox:latest"), "latest");
        assert_eq!(ref_name("127.0.0.1:5000/a/b"), "latest");
        assert_eq!(ref_name("127.0.0.1:5000/a/b:v1"), "v1");
        assert_eq!(docker_tag("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(docker_tag("docker.io/me/x:1"), "me/x:1");
        assert_eq!(docker_tag("ghcr.io/me/x:1"), "ghcr.io/me/x:1");
    }
}
