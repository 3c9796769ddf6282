//! Sending an export back to the client through its session: `FileSend.DiffCopy`, as
//! BuildKit's exporters do. A `local` export travels as a file sync (fsutil packets, the
//! daemon sending); a `tar`, `oci` or `docker` archive as the call's raw bytes. The client
//! tells the exports apart by the `buildkit-attachable-exporter-id` metadata (the exporter's
//! index in the request).

use std::path::Path;

use tokio::sync::mpsc;
use tonic::metadata::AsciiMetadataValue;

use crate::filesync::{AbortOnDrop, Sender, SyncError, forward_packets};
use crate::pb::filesync::BytesMessage;
use crate::pb::filesync::file_send_client::FileSendClient;
use crate::pb::fsutil::types::Packet;
use crate::session::ClientSession;

/// The method a client receives exports with.
pub(crate) const FILE_SEND: &str = "/moby.filesync.v1.FileSend/DiffCopy";

pub(crate) const EXPORTER_ID: &str = "buildkit-attachable-exporter-id";

fn check(session: &ClientSession) -> Result<(), SyncError> {
    if session.supports(FILE_SEND) {
        Ok(())
    } else {
        Err(SyncError::Protocol(format!(
            "method {} not supported by the client",
            FILE_SEND.to_ascii_lowercase()
        )))
    }
}

fn with_id<T>(message: T, exporter: usize) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        EXPORTER_ID,
        AsciiMetadataValue::from(u64::try_from(exporter).unwrap_or(u64::MAX)),
    );
    request
}

/// Sends the directory `dir` as export `exporter` of the request.
pub(crate) async fn send_dir(
    session: &ClientSession,
    exporter: usize,
    dir: &Path,
) -> Result<(), SyncError> {
    check(session)?;
    let (outgoing, outgoing_stream) = mpsc::unbounded_channel::<Packet>();
    let request = with_id(
        tokio_stream::wrappers::UnboundedReceiverStream::new(outgoing_stream),
        exporter,
    );
    // The method is declared with byte messages; the directory form carries fsutil packets
    // on the same call, as BuildKit's sender does.
    let mut grpc = tonic::client::Grpc::new(session.channel.clone())
        .max_decoding_message_size(crate::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(crate::MAX_MESSAGE_SIZE);
    grpc.ready()
        .await
        .map_err(|e| SyncError::Call(tonic::Status::unavailable(e.to_string())))?;
    // The sender starts at once: the client answers nothing (not even its headers) before
    // it has the listing.
    let (packets, mut queue) = mpsc::channel::<Result<Packet, SyncError>>(64);
    let dir = dir.to_owned();
    let sending = tokio::task::spawn_blocking(move || {
        Sender {
            outgoing,
            next: Box::new(move || queue.blocking_recv()),
        }
        .run(&dir)
    });
    let codec = tonic_prost::ProstCodec::<Packet, Packet>::default();
    let path = http::uri::PathAndQuery::from_static(FILE_SEND);
    let incoming = match grpc.streaming(request, path, codec).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            drop(packets);
            let _ = sending.await;
            return Err(SyncError::Call(status));
        }
    };
    let _reader = AbortOnDrop(forward_packets(incoming, packets));
    sending
        .await
        .map_err(|e| SyncError::Io(std::io::Error::other(e)))??;
    Ok(())
}

/// Sends the file `path` as export `exporter` of the request.
pub(crate) async fn send_file(
    session: &ClientSession,
    exporter: usize,
    path: &Path,
) -> Result<(), SyncError> {
    check(session)?;
    let mut file = fs_err::File::open(path)?;
    let (chunks, chunk_stream) = mpsc::channel::<BytesMessage>(8);
    let request = with_id(
        tokio_stream::wrappers::ReceiverStream::new(chunk_stream),
        exporter,
    );
    let mut client = FileSendClient::new(session.channel.clone())
        .max_decoding_message_size(crate::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(crate::MAX_MESSAGE_SIZE);
    let feeding = tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buffer)?;
            if n == 0 {
                break;
            }
            let message = BytesMessage {
                data: buffer[..n].to_vec(),
            };
            if chunks.blocking_send(message).is_err() {
                break;
            }
        }
        Ok::<(), SyncError>(())
    });
    let call = async {
        let mut replies = client
            .diff_copy(request)
            .await
            .map_err(SyncError::Call)?
            .into_inner();
        // The client ends the call once it has the whole file.
        while replies.message().await.map_err(SyncError::Call)?.is_some() {}
        Ok::<(), SyncError>(())
    };
    let (fed, called) = tokio::join!(feeding, call);
    fed.map_err(|e| SyncError::Io(std::io::Error::other(e)))??;
    called
}
