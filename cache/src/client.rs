//! Registry clients: how one is made, with the system's root certificates read once per
//! process, and a pull source's client made on its first request.
//!
//! Making an oci-client client reads and parses the system's root certificates (the bundle and
//! the certificate directory, or those `SSL_CERT_FILE` and `SSL_CERT_DIR` name); a build makes
//! several, and the reading came to a tenth of a cached build's time. Here the certificates are
//! read once ([`root_certificates`], by the same loader, so the same variables are honoured)
//! and each client is given them as its only roots; a source's client is made when a request
//! needs it ([`LazyClient`]), so the registry behind a mirror that answers costs nothing.
//! Clients are not shared between callers: each keeps its own credentials and tokens, and its
//! connections belong to the runtime that opened them.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};

/// How a registry client reaches its registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    /// The hosts it reaches over plain HTTP.
    pub plain_http: Vec<String>,
    /// Whether it accepts invalid TLS certificates.
    pub insecure: bool,
    /// Whether it pushes a blob in one request rather than in chunks.
    pub monolithic_push: bool,
}

impl ClientSettings {
    /// A new client with these settings, trusting the system's root certificates.
    pub fn client(&self) -> oci_client::Client {
        oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.plain_http.clone()),
            accept_invalid_certificates: self.insecure,
            use_monolithic_push: self.monolithic_push,
            tls_certs_only: root_certificates().to_vec(),
            ..ClientConfig::default()
        })
    }
}

/// A client made from its settings on first use; its clones share it.
#[derive(Clone)]
pub(crate) struct LazyClient {
    settings: ClientSettings,
    client: Arc<OnceLock<oci_client::Client>>,
}

impl LazyClient {
    pub(crate) fn new(settings: ClientSettings) -> Self {
        Self {
            settings,
            client: Arc::default(),
        }
    }
}

impl std::ops::Deref for LazyClient {
    type Target = oci_client::Client;

    fn deref(&self) -> &oci_client::Client {
        self.client.get_or_init(|| self.settings.client())
    }
}

/// The system's root certificates as the TLS stack's own loader finds them (`SSL_CERT_FILE`
/// and `SSL_CERT_DIR` when set, else the system's bundle and certificate directory), read once
/// per process; each certificate once, and only those that serve as trust anchors. Empty when
/// there are none: a client given none looks for them itself and reports what is missing.
fn root_certificates() -> &'static [Certificate] {
    static ROOTS: OnceLock<Vec<Certificate>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::debug!(%error, "reading the system's root certificates");
        }
        let mut anchors = rustls::RootCertStore::empty();
        let mut seen = HashSet::new();
        loaded
            .certs
            .into_iter()
            .filter(|der| seen.insert(der.to_vec()) && anchors.add(der.clone()).is_ok())
            .map(|der| Certificate {
                encoding: CertificateEncoding::Der,
                data: der.to_vec(),
            })
            .collect()
    })
}
