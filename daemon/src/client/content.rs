//! The content stores this client serves the daemon for `--cache-to type=local,dest=DIR`,
//! `--cache-from type=local,src=DIR` and `--output type=oci|docker,tar=false,dest=DIR`
//! (containerd's `Content` service, as BuildKit's clients serve it): each directory an OCI
//! layout, chosen by the store id in the `buildkit-attachable-store-id` header (`local:DIR`
//! for a cache, `export` for the image output). A blob is written to a temporary file beside the
//! layout's blobs and renamed into place only once its size and digest are the ones announced.

use std::collections::HashMap;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::PathBuf;

use kiln_cache::Digest;
use sha2::Digest as _;
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::content::STORE_HEADER;
use crate::pb::content::content_server::Content;
use crate::pb::content::{
    Info, InfoRequest, InfoResponse, ReadContentRequest, ReadContentResponse, WriteAction,
    WriteContentRequest, WriteContentResponse,
};

/// The bytes sent per read message.
const CHUNK: usize = 1 << 20;

/// The layouts served, by store id (`local:DIR`, `export`).
pub(super) struct LayoutStores {
    pub(super) dirs: HashMap<String, PathBuf>,
}

impl LayoutStores {
    fn choose(&self, metadata: &MetadataMap) -> Result<&PathBuf, Status> {
        let id = metadata
            .get(STORE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!("request lacks metadata {STORE_HEADER:?}"))
            })?;
        self.dirs
            .get(id)
            .ok_or_else(|| Status::not_found(format!("unknown store {id}")))
    }
}

fn digest(text: &str) -> Result<Digest, Status> {
    text.parse()
        .map_err(|_| Status::invalid_argument(format!("invalid digest {text:?}")))
}

fn io_error(e: &std::io::Error) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl Content for LayoutStores {
    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let dir = self.choose(request.metadata())?;
        let digest = digest(&request.get_ref().digest)?;
        match fs_err::metadata(kiln_cache::layout_blob_path(dir, &digest)) {
            Ok(meta) if meta.is_file() => Ok(Response::new(InfoResponse {
                info: Some(Info {
                    digest: digest.to_string(),
                    size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
                    ..Info::default()
                }),
            })),
            _ => Err(Status::not_found(format!("content {digest}: not found"))),
        }
    }

    async fn read(
        &self,
        request: Request<ReadContentRequest>,
    ) -> Result<Response<BoxStream<ReadContentResponse>>, Status> {
        let dir = self.choose(request.metadata())?;
        let ReadContentRequest {
            digest: text,
            offset,
            size,
        } = request.into_inner();
        let digest = digest(&text)?;
        let path = kiln_cache::layout_blob_path(dir, &digest);
        let mut file = fs_err::File::open(&path)
            .map_err(|_| Status::not_found(format!("content {digest}: not found")))?;
        let start = u64::try_from(offset).map_err(|_| Status::invalid_argument("offset"))?;
        file.seek(std::io::SeekFrom::Start(start))
            .map_err(|e| io_error(&e))?;
        // `size` 0 reads to the end.
        let mut left = match u64::try_from(size) {
            Ok(0) | Err(_) => u64::MAX,
            Ok(size) => size,
        };
        let (sender, receiver) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut offset = offset;
            while left > 0 {
                let mut data = vec![0; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
                let n = match file.read(&mut data) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = sender.blocking_send(Err(io_error(&e)));
                        break;
                    }
                };
                data.truncate(n);
                left -= n as u64;
                let piece = ReadContentResponse { offset, data };
                offset += i64::try_from(n).unwrap_or(i64::MAX);
                if sender.blocking_send(Ok(piece)).is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn write(
        &self,
        request: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<BoxStream<WriteContentResponse>>, Status> {
        let dir = self.choose(request.metadata())?.clone();
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no message"))?;
        if first.r#ref.is_empty() {
            return Err(Status::invalid_argument(
                "first message must have a reference",
            ));
        }
        let mut expected = match first.expected.as_str() {
            "" => None,
            text => Some(digest(text)?),
        };
        if let Some(digest) = &expected
            && kiln_cache::layout_blob_path(&dir, digest).is_file()
        {
            return Err(Status::already_exists(format!(
                "blob with expected digest {digest} exists"
            )));
        }
        let blobs = dir.join("blobs/sha256");
        fs_err::create_dir_all(&blobs).map_err(|e| io_error(&e))?;
        let mut file = tempfile::NamedTempFile::new_in(&blobs).map_err(|e| io_error(&e))?;
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut hasher = sha2::Sha256::new();
            let mut written = 0i64;
            let mut total = first.total;
            let mut message = Some(first);
            while let Some(request) = message.take() {
                let action = WriteAction::try_from(request.action).unwrap_or(WriteAction::Stat);
                let mut reply = WriteContentResponse {
                    action: request.action,
                    ..WriteContentResponse::default()
                };
                if request.total > 0 {
                    total = request.total;
                }
                if !request.expected.is_empty() {
                    match digest(&request.expected) {
                        Ok(digest) => expected = Some(digest),
                        Err(status) => {
                            let _ = sender.send(Err(status)).await;
                            return;
                        }
                    }
                }
                if action != WriteAction::Stat {
                    if request.offset > 0 && request.offset != written {
                        let status = Status::out_of_range(format!(
                            "write @{} must occur at current offset {written}",
                            request.offset
                        ));
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                    if let Err(e) = file.write_all(&request.data) {
                        let _ = sender.send(Err(io_error(&e))).await;
                        return;
                    }
                    hasher.update(&request.data);
                    written += i64::try_from(request.data.len()).unwrap_or(i64::MAX);
                }
                reply.offset = written;
                reply.total = total;
                if action == WriteAction::Commit {
                    let done = commit(file, hasher, written, total, expected);
                    let _ = sender
                        .send(done.map(|digest| {
                            reply.digest = digest.to_string();
                            reply
                        }))
                        .await;
                    return;
                }
                if sender.send(Ok(reply)).await.is_err() {
                    return;
                }
                message = match incoming.message().await {
                    Ok(next) => next,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// Puts the written blob in place if its size and digest are the ones announced.
fn commit(
    file: tempfile::NamedTempFile,
    hasher: sha2::Sha256,
    written: i64,
    total: i64,
    expected: Option<Digest>,
) -> Result<Digest, Status> {
    let digest = Digest::from_raw(hasher.finalize().into());
    if total > 0 && written != total {
        return Err(Status::failed_precondition(format!(
            "unexpected commit size {written}, expected {total}"
        )));
    }
    if let Some(expected) = expected
        && expected != digest
    {
        return Err(Status::failed_precondition(format!(
            "unexpected commit digest {digest}, expected {expected}"
        )));
    }
    let path = file
        .path()
        .parent()
        .map(|blobs| blobs.join(digest.hex()))
        .ok_or_else(|| Status::internal("a blob file without a directory"))?;
    file.persist(&path)
        .map_err(|e| Status::internal(format!("{}: {}", path.display(), e.error)))?;
    Ok(digest)
}
