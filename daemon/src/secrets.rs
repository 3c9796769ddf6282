//! The secrets a build's steps read (`RUN --mount=type=secret`, secret environment
//! variables), asked of the client's session (`Secrets.GetSecret`) before the build runs, so
//! the solver finds them as it finds `kiln build --secret`. A secret the client does not have
//! is left out: the step that needs it then fails as it does without `--secret` (or runs
//! without it when the mount is optional).

use std::collections::{BTreeSet, HashMap};

use kiln_llb::{LoadedDefinition, pb};
use tonic::{Code, Status};

use crate::pb::secrets::GetSecretRequest;
use crate::pb::secrets::secrets_client::SecretsClient;
use crate::session::ClientSession;

/// The method a client serves its secrets with.
pub(crate) const GET_SECRET: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";

/// The exec ops of a Definition, the steps that read secrets and mount SSH agents.
pub(crate) fn exec_ops(definition: &LoadedDefinition) -> impl Iterator<Item = &pb::ExecOp> {
    definition.ops().iter().filter_map(|op| match op.body() {
        Some(pb::op::Op::Exec(exec)) => Some(exec),
        _ => None,
    })
}

/// The secret ids the Definition's exec ops read.
pub(crate) fn secret_ids(definition: &LoadedDefinition) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for exec in exec_ops(definition) {
        for mount in &exec.mounts {
            if let Some(secret) = &mount.secret_opt {
                ids.insert(secret.id.clone());
            }
        }
        ids.extend(exec.secretenv.iter().map(|s| s.id.clone()));
    }
    ids
}

/// The secrets `ids` the client has.
pub(crate) async fn fetch(
    session: &ClientSession,
    ids: BTreeSet<String>,
) -> Result<HashMap<String, Vec<u8>>, Status> {
    let mut secrets = HashMap::new();
    if ids.is_empty() || !session.supports(GET_SECRET) {
        return Ok(secrets);
    }
    let mut client = SecretsClient::new(session.channel.clone())
        .max_decoding_message_size(crate::MAX_MESSAGE_SIZE);
    for id in ids {
        let request = GetSecretRequest {
            id: id.clone(),
            annotations: HashMap::new(),
        };
        match client.get_secret(request).await {
            Ok(response) => {
                secrets.insert(id, response.into_inner().data);
            }
            Err(status) if matches!(status.code(), Code::NotFound | Code::Unimplemented) => {}
            Err(status) => {
                return Err(Status::unknown(format!(
                    "reading secret {id} from the client: {}",
                    status.message()
                )));
            }
        }
    }
    Ok(secrets)
}
