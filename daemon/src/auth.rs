//! Registry credentials of a daemon build, asked of the client that started it
//! (`Auth.Credentials` in its session), as BuildKit asks them: the daemon reads no
//! credentials of its own, so one client's credentials never serve another client's build.
//! A client that serves no `Auth` (or has nothing for a host) gets anonymous access.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use futures::future::BoxFuture;
use kiln_cache::oci_client::secrets::RegistryAuth;
use tonic::Code;

use crate::pb::filesync::CredentialsRequest;
use crate::pb::filesync::auth_client::AuthClient;
use crate::session::Sessions;

/// The method a client serves its registry credentials with.
pub(crate) const CREDENTIALS: &str = "/moby.filesync.v1.Auth/Credentials";

/// The host BuildKit's clients know Docker Hub by (they look it up under Docker's index URL).
const DOCKER_HUB: &str = "registry-1.docker.io";

/// The credentials of one build's session, each host asked once.
pub(crate) struct SessionCredentials {
    sessions: Sessions,
    session: String,
    answers: Mutex<HashMap<String, RegistryAuth>>,
}

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl SessionCredentials {
    pub(crate) fn new(sessions: Sessions, session: String) -> Self {
        Self {
            sessions,
            session,
            answers: Mutex::default(),
        }
    }

    async fn ask(&self, host: &str) -> Result<RegistryAuth, kiln_cache::Error> {
        let failed = |problem: String| kiln_cache::Error::CredentialSource {
            host: host.to_owned(),
            origin: "the client".to_owned(),
            problem,
        };
        if self.session.is_empty() {
            return Ok(RegistryAuth::Anonymous);
        }
        let session = self
            .sessions
            .get(&self.session)
            .await
            .map_err(|status| failed(status.message().to_owned()))?;
        if !session.supports(CREDENTIALS) {
            return Ok(RegistryAuth::Anonymous);
        }
        let host = if kiln_cache::is_docker_hub(host) {
            DOCKER_HUB
        } else {
            host
        };
        let mut client = AuthClient::new(session.channel.clone())
            .max_decoding_message_size(crate::MAX_MESSAGE_SIZE);
        let request = CredentialsRequest {
            host: host.to_owned(),
        };
        let answer = match client.credentials(request).await {
            Ok(answer) => answer.into_inner(),
            Err(status) if matches!(status.code(), Code::NotFound | Code::Unimplemented) => {
                return Ok(RegistryAuth::Anonymous);
            }
            Err(status) => return Err(failed(status.message().to_owned())),
        };
        Ok(
            match (answer.username.is_empty(), answer.secret.is_empty()) {
                (_, true) => RegistryAuth::Anonymous,
                (true, false) => RegistryAuth::Bearer(answer.secret),
                (false, false) => RegistryAuth::Basic(answer.username, answer.secret),
            },
        )
    }
}

impl kiln_cache::Credentials for SessionCredentials {
    fn get<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<RegistryAuth, kiln_cache::Error>> {
        Box::pin(async move {
            let known = self
                .answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(host)
                .cloned();
            if let Some(auth) = known {
                return Ok(auth);
            }
            let auth = self.ask(host).await?;
            self.answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(host.to_owned(), auth.clone());
            Ok(auth)
        })
    }

    fn origin(&self) -> &str {
        "the client's session"
    }
}
