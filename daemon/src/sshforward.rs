//! The client's SSH agents for `RUN --mount=type=ssh`, forwarded through its session
//! (`SSH.ForwardAgent`): for each agent id the build's steps use and the client has
//! (`SSH.CheckAgent`), the daemon listens on a unix socket of the build's own; each connection
//! to it becomes one `ForwardAgent` call (the id in its `buildkit.ssh.id` metadata) carrying
//! the connection's bytes both ways. The solver mounts these sockets as it mounts
//! `kiln build --ssh` agents.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_llb::LoadedDefinition;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tonic::metadata::AsciiMetadataValue;
use tonic::{Code, Status};

use crate::pb::sshforward::ssh_client::SshClient;
use crate::pb::sshforward::{BytesMessage, CheckAgentRequest};
use crate::session::ClientSession;

pub(crate) const FORWARD_AGENT: &str = "/moby.sshforward.v1.SSH/ForwardAgent";
pub(crate) const SSH_ID: &str = "buildkit.ssh.id";

/// The agent ids the Definition's exec ops mount (`default` when a mount names none).
pub(crate) fn ssh_ids(definition: &LoadedDefinition) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for exec in crate::secrets::exec_ops(definition) {
        for ssh in exec.mounts.iter().filter_map(|m| m.ssh_opt.as_ref()) {
            ids.insert(if ssh.id.is_empty() {
                "default".to_owned()
            } else {
                ssh.id.clone()
            });
        }
    }
    ids
}

/// The forwarding sockets of one build; they close when this is dropped.
#[derive(Default)]
pub(crate) struct Forwarders {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Forwarders {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Sockets in `dir` forwarding to the client's agents `ids` (those it has), by id.
pub(crate) async fn forward(
    session: Arc<ClientSession>,
    ids: BTreeSet<String>,
    dir: &Path,
) -> Result<(HashMap<String, PathBuf>, Forwarders), Status> {
    let mut sockets = HashMap::new();
    let mut forwarders = Forwarders::default();
    if ids.is_empty() || !session.supports(FORWARD_AGENT) {
        return Ok((sockets, forwarders));
    }
    let mut client = SshClient::new(session.channel.clone());
    for (index, id) in ids.into_iter().enumerate() {
        match client
            .check_agent(CheckAgentRequest { id: id.clone() })
            .await
        {
            Ok(_) => {}
            Err(status) if matches!(status.code(), Code::NotFound | Code::Unimplemented) => {
                continue;
            }
            Err(status) => {
                return Err(Status::unknown(format!(
                    "checking SSH agent {id} of the client: {}",
                    status.message()
                )));
            }
        }
        let path = dir.join(format!("ssh-{index}.sock"));
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(|e| Status::internal(format!("listening on {}: {e}", path.display())))?;
        let session = session.clone();
        let agent = id.clone();
        forwarders.tasks.push(tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                let session = session.clone();
                let agent = agent.clone();
                // A connection ends with the build's sockets: the call is dropped with it.
                tokio::spawn(async move {
                    if let Err(e) = forward_connection(&session, &agent, connection).await {
                        tracing::debug!(agent, error = %e, "SSH agent connection ended");
                    }
                });
            }
        }));
        sockets.insert(id, path);
    }
    Ok((sockets, forwarders))
}

/// Carries one connection to the client's agent `id`.
async fn forward_connection(
    session: &ClientSession,
    id: &str,
    connection: UnixStream,
) -> Result<(), Status> {
    let (mut reader, mut writer) = connection.into_split();
    let (outgoing, outgoing_stream) = mpsc::channel::<BytesMessage>(16);
    let mut request =
        tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(outgoing_stream));
    let value: AsciiMetadataValue = id
        .parse()
        .map_err(|_| Status::invalid_argument(format!("SSH agent id {id:?}")))?;
    request.metadata_mut().insert(SSH_ID, value);
    let to_agent = async move {
        let mut buffer = vec![0; 32 << 10];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = BytesMessage {
                        data: buffer[..n].to_vec(),
                    };
                    if outgoing.send(message).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let from_agent = async {
        let mut client = SshClient::new(session.channel.clone());
        let mut replies = client.forward_agent(request).await?.into_inner();
        while let Some(message) = replies.message().await? {
            if writer.write_all(&message.data).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
        Ok::<(), Status>(())
    };
    let ((), replied) = tokio::join!(to_agent, from_agent);
    replied
}
