//! A client's content stores, through its session: containerd's `Content` service, which
//! BuildKit's clients serve for `type=local` caches (`--export-cache type=local,dest=DIR`,
//! `--import-cache type=local,src=DIR`), one store per directory, and for an image exported as
//! a layout directory (`--output type=oci|docker,tar=false,dest=DIR`), the store `export`;
//! the store is chosen by a header. An exported cache or image is written into the client's
//! directory and an imported cache read from it; the daemon never reads or writes a path a
//! client names on its own side.
//!
//! Both go through an OCI layout in the build's scratch directory, which the local cache code
//! and the exporters write as they do for `kiln build`: an import fetches the manifest the
//! client resolved (its `digest`) and the blobs the manifest names; an export sends the
//! layout's blobs the client does not have yet, and the client records the manifest in its
//! `index.json` (BuildKit's `cache.manifest` and `containerimage.descriptor` answers).

use std::path::{Path, PathBuf};

use kiln_cache::Digest;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

use crate::pb::content::content_client::ContentClient;
use crate::pb::content::{InfoRequest, ReadContentRequest, WriteAction, WriteContentRequest};
use crate::session::ClientSession;

/// The header that names the store a call is for.
pub(crate) const STORE_HEADER: &str = "buildkit-attachable-store-id";
/// The store an exporter with `tar=false` writes into (BuildKit has one per build).
pub(crate) const EXPORT_STORE: &str = "export";
/// The method a client's content stores are written with.
pub(crate) const WRITE: &str = "/containerd.services.content.v1.Content/Write";
/// The bytes sent per write message.
const CHUNK: usize = 1 << 20;
/// The largest cache manifest read (as the local cache import allows).
const MAX_MANIFEST: u64 = 16 << 20;

/// A content store the client serves: the one for a cache directory (`local:DIR`), or the
/// one an exporter writes an image layout into (`export`).
pub(crate) struct ClientStore {
    client: ContentClient<tonic::transport::Channel>,
    id: MetadataValue<tonic::metadata::Ascii>,
    /// What the store is, in messages: the cache directory as the client named it, or
    /// `the client's export`.
    label: String,
}

impl ClientStore {
    /// The store of the client's cache directory `dir` (as the client named it).
    pub(crate) fn cache(session: &ClientSession, dir: &str) -> Result<Self, Status> {
        let id = format!("local:{dir}")
            .parse()
            .map_err(|_| Status::invalid_argument(format!("cache directory {dir:?}")))?;
        Self::new(
            session,
            id,
            dir.to_owned(),
            "a local cache travels through the client's content store, which this client does not serve",
        )
    }

    /// The store the client serves for the image an `exporter` with `tar=false` writes.
    pub(crate) fn export(session: &ClientSession, exporter: &str) -> Result<Self, Status> {
        Self::new(
            session,
            MetadataValue::from_static(EXPORT_STORE),
            "the client's export".to_owned(),
            &format!(
                "the {exporter} exporter with tar=false writes into the client's content store, which this client does not serve"
            ),
        )
    }

    fn new(
        session: &ClientSession,
        id: MetadataValue<tonic::metadata::Ascii>,
        label: String,
        unserved: &str,
    ) -> Result<Self, Status> {
        if !session.supports(WRITE) {
            return Err(Status::unimplemented(unserved));
        }
        Ok(Self {
            client: ContentClient::new(session.channel.clone())
                .max_decoding_message_size(crate::MAX_MESSAGE_SIZE)
                .max_encoding_message_size(crate::MAX_MESSAGE_SIZE),
            id,
            label,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(STORE_HEADER, self.id.clone());
        request
    }

    fn failed(&self, what: String) -> impl Fn(Status) -> Status + '_ {
        move |status| {
            Status::new(
                status.code(),
                format!("{what} in {}: {}", self.label, status.message()),
            )
        }
    }

    /// The size of the blob `digest`, `None` when the store does not have it.
    pub(crate) async fn size(&self, digest: &Digest) -> Result<Option<u64>, Status> {
        let request = self.request(InfoRequest {
            digest: digest.to_string(),
        });
        match self.client.clone().info(request).await {
            Ok(response) => Ok(Some(
                response
                    .into_inner()
                    .info
                    .and_then(|i| u64::try_from(i.size).ok())
                    .unwrap_or(0),
            )),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(self.failed(format!("asking for {digest}"))(status)),
        }
    }

    /// Copies the blob `digest` of at most `limit` bytes into `path`.
    pub(crate) async fn read_into(
        &self,
        digest: &Digest,
        limit: u64,
        path: &Path,
    ) -> Result<(), Status> {
        let failed = self.failed(format!("reading {digest}"));
        let request = self.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        });
        let mut stream = self
            .client
            .clone()
            .read(request)
            .await
            .map_err(&failed)?
            .into_inner();
        let local =
            |e: std::io::Error| Status::internal(format!("writing {}: {e}", path.display()));
        let mut file = tokio::fs::File::create(path).await.map_err(local)?;
        let mut written = 0u64;
        while let Some(piece) = stream.message().await.map_err(&failed)? {
            written += piece.data.len() as u64;
            if written > limit {
                return Err(Status::out_of_range(format!(
                    "{digest} in {} is larger than the {limit} bytes it was said to be",
                    self.label
                )));
            }
            file.write_all(&piece.data).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        Ok(())
    }

    /// Writes the file `path` as the blob `digest`, unless the store has it.
    pub(crate) async fn write_from(&self, digest: &Digest, path: &Path) -> Result<(), Status> {
        let failed = self.failed(format!("writing {digest}"));
        let total = tokio::fs::metadata(path)
            .await
            .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?
            .len();
        let total = i64::try_from(total).unwrap_or(i64::MAX);
        let (sender, messages) = mpsc::channel(4);
        let reference = format!("kiln-cache-{digest}");
        let expected = digest.to_string();
        let path = path.to_owned();
        // The first message opens the write; a store that has the blob refuses it
        // (AlreadyExists), which is success here.
        let feeding = tokio::spawn(async move {
            let stat = WriteContentRequest {
                action: WriteAction::Stat.into(),
                r#ref: reference.clone(),
                total,
                expected: expected.clone(),
                ..WriteContentRequest::default()
            };
            if sender.send(stat).await.is_err() {
                return Ok(());
            }
            let mut file = tokio::fs::File::open(&path).await?;
            let mut offset = 0i64;
            loop {
                let mut data = vec![0; CHUNK];
                let n = tokio::io::AsyncReadExt::read(&mut file, &mut data).await?;
                if n == 0 {
                    break;
                }
                data.truncate(n);
                let write = WriteContentRequest {
                    action: WriteAction::Write.into(),
                    r#ref: reference.clone(),
                    offset,
                    data,
                    ..WriteContentRequest::default()
                };
                offset += i64::try_from(n).unwrap_or(i64::MAX);
                if sender.send(write).await.is_err() {
                    return Ok(());
                }
            }
            let commit = WriteContentRequest {
                action: WriteAction::Commit.into(),
                r#ref: reference,
                total,
                expected,
                offset,
                ..WriteContentRequest::default()
            };
            let _ = sender.send(commit).await;
            Ok::<(), std::io::Error>(())
        });
        let outgoing = tokio_stream::wrappers::ReceiverStream::new(messages);
        let answer = async {
            let mut replies = self
                .client
                .clone()
                .write(self.request(outgoing))
                .await?
                .into_inner();
            // Every message is answered; the store ends the call after the commit.
            while replies.message().await?.is_some() {}
            Ok::<(), Status>(())
        }
        .await;
        let fed = feeding
            .await
            .map_err(|e| Status::internal(format!("reading {digest}: {e}")))?;
        match answer {
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(failed(status)),
            Ok(()) => fed.map_err(|e| Status::internal(format!("reading {digest}: {e}"))),
        }
    }
}

/// Fetches the cache manifest `digest` of the client's directory `dir`, and every blob it
/// names, into the OCI layout `layout`.
pub(crate) async fn import(
    session: &ClientSession,
    dir: &str,
    digest: &Digest,
    layout: &Path,
) -> Result<(), Status> {
    let store = ClientStore::cache(session, dir)?;
    let blob = |digest: &Digest| kiln_cache::layout_blob_path(layout, digest);
    let blobs = layout.join("blobs/sha256");
    tokio::fs::create_dir_all(&blobs)
        .await
        .map_err(|e| Status::internal(format!("{}: {e}", blobs.display())))?;
    store.read_into(digest, MAX_MANIFEST, &blob(digest)).await?;
    // Small files, read at once.
    let manifest = fs_err::read(blob(digest)).map_err(|e| Status::internal(e.to_string()))?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).map_err(|e| {
        Status::invalid_argument(format!("the cache manifest {digest} in {dir}: {e}"))
    })?;
    // The image-manifest form names a config and layers; the index form lists them all.
    let named = manifest["config"]
        .as_object()
        .into_iter()
        .chain(
            manifest["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_object()),
        )
        .chain(
            manifest["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_object()),
        );
    for descriptor in named {
        let (Some(found), Some(size)) = (
            descriptor.get("digest").and_then(|d| d.as_str()),
            descriptor.get("size").and_then(serde_json::Value::as_u64),
        ) else {
            continue;
        };
        let found: Digest = found.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "the cache manifest {digest} in {dir} names {found:?}"
            ))
        })?;
        store.read_into(&found, size, &blob(&found)).await?;
    }
    Ok(())
}

/// Sends the blobs of the OCI layout `layout` the client's directory `dir` does not have;
/// answers the manifest's descriptor (tagged `tag` in the layout's `index.json`) as JSON, for
/// the client to record.
pub(crate) async fn export(
    session: &ClientSession,
    dir: &str,
    layout: &Path,
    tag: &str,
) -> Result<String, Status> {
    let store = ClientStore::cache(session, dir)?;
    let descriptor = send_layout(&store, layout, |m| {
        m["annotations"][kiln_cache::ANNOTATION_REF_NAME] == tag
    })
    .await?
    .ok_or_else(|| Status::internal(format!("the cache layout has no manifest {tag:?}")))?;
    Ok(descriptor.to_string())
}

/// Sends the image in the OCI layout `layout` (one image, as an exporter writes it) into the
/// client's export store (`exporter` names the exporter, for errors); answers its descriptor
/// as BuildKit's `containerimage.descriptor` carries it (base64 of the JSON), for the client
/// to record in its directory's `index.json`.
pub(crate) async fn export_image(
    session: &ClientSession,
    exporter: &str,
    layout: &Path,
) -> Result<String, Status> {
    let store = ClientStore::export(session, exporter)?;
    let descriptor = send_layout(&store, layout, |_| true)
        .await?
        .ok_or_else(|| Status::internal("the exported layout names no image"))?;
    Ok(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        descriptor.to_string(),
    ))
}

/// Sends the blobs of `layout` that `store` does not have; answers the descriptor of the
/// first manifest of its `index.json` that `pick` chooses, without its annotations (the
/// client adds its own names and tags).
async fn send_layout(
    store: &ClientStore,
    layout: &Path,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> Result<Option<serde_json::Value>, Status> {
    let index_path = layout.join("index.json");
    let index = fs_err::read(&index_path).map_err(|e| Status::internal(e.to_string()))?;
    let index: serde_json::Value =
        serde_json::from_slice(&index).map_err(|e| Status::internal(e.to_string()))?;
    let Some(mut descriptor) = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| pick(m))
        .cloned()
    else {
        return Ok(None);
    };
    if let Some(fields) = descriptor.as_object_mut() {
        fields.remove("annotations");
    }
    for (digest, path) in layout_blobs(layout).await? {
        // What an earlier export left there is not sent again.
        if store.size(&digest).await?.is_none() {
            store.write_from(&digest, &path).await?;
        }
    }
    Ok(Some(descriptor))
}

/// The blobs of the OCI layout `layout`: digest and file.
async fn layout_blobs(layout: &Path) -> Result<Vec<(Digest, PathBuf)>, Status> {
    let dir = layout.join("blobs/sha256");
    let mut entries = tokio::fs::read_dir(&dir)
        .await
        .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
    let mut blobs = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    {
        let name = entry.file_name();
        if let Some(digest) = name
            .to_str()
            .and_then(|n| format!("sha256:{n}").parse().ok())
        {
            blobs.push((digest, entry.path()));
        }
    }
    blobs.sort();
    Ok(blobs)
}
