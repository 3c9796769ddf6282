//! Registry configuration, credentials and reference handling.
//!
//! The configuration file uses BuildKit's `buildkitd.toml` registry syntax:
//! ```toml
//! [registry."docker.io"]
//! mirrors = ["127.0.0.1:5000"]
//!
//! [registry."127.0.0.1:5000"]
//! http = true
//! ```
//! Mirrors are tried in order, then the origin. Plain HTTP is used for `localhost`,
//! `127.0.0.1`, `[::1]` (any port) and registries with `http = true`.
//!
//! Credentials come from Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`): the `auth` (base64 `user:password`) or `username`/`password` of the
//! entry for the registry host. oci-client does not read that file; it does the bearer-token
//! exchange itself once given basic credentials (or none).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::error::Error;

/// The kiln configuration file (the parts the cache crate reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Config {
    /// Per-registry settings, by host (`docker.io`, `127.0.0.1:5000`).
    #[serde(default)]
    pub registry: BTreeMap<String, RegistryConfig>,
}

/// Settings of one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegistryConfig {
    /// Mirrors (`host[:port]`), tried in order before the registry itself.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Use plain HTTP for this host.
    #[serde(default)]
    pub http: bool,
    /// Accept invalid TLS certificates from this host.
    #[serde(default)]
    pub insecure: bool,
}

impl Config {
    /// Parses a configuration file's text.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Reads a configuration file; a missing file gives the default configuration unless
    /// `required` is set.
    pub fn load(path: &Path, required: bool) -> Result<Self, Error> {
        match fs_err::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `host` is reached over plain HTTP.
    pub fn is_plain_http(&self, host: &str) -> bool {
        let name = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        matches!(name, "localhost" | "127.0.0.1" | "[::1]")
            || self.registry.get(host).is_some_and(|r| r.http)
    }

    /// The mirrors of `host`, in order.
    pub fn mirrors(&self, host: &str) -> &[String] {
        self.registry
            .get(host)
            .map_or(&[], |r| r.mirrors.as_slice())
    }
}

/// Parses an image reference with Docker's normalisation (`busybox` is
/// `docker.io/library/busybox:latest`).
pub fn parse_reference(text: &str) -> Result<Reference, Error> {
    let reference: Reference = text.parse().map_err(|source| Error::InvalidReference {
        reference: text.to_owned(),
        source,
    })?;
    if reference.tag().is_none() && reference.digest().is_none() {
        return Ok(Reference::with_tag(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            "latest".to_owned(),
        ));
    }
    Ok(reference)
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Debug, Default, Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Docker's credentials file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// The credentials for `host` in a Docker `config.json` (anonymous when absent).
pub fn credentials(config_file: Option<&Path>, host: &str) -> Result<RegistryAuth, Error> {
    let Some(path) = config_file else {
        return Ok(RegistryAuth::Anonymous);
    };
    let text = match fs_err::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(e.into()),
    };
    let config: DockerConfig =
        serde_json::from_str(&text).map_err(|source| Error::Credentials {
            path: path.to_owned(),
            source,
        })?;
    let mut keys = vec![
        host.to_owned(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v1/"),
        format!("https://{host}/v2/"),
    ];
    if matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        keys.extend(
            [
                "https://index.docker.io/v1/",
                "index.docker.io",
                "docker.io",
                "registry-1.docker.io",
            ]
            .map(str::to_owned),
        );
    }
    for key in keys {
        let Some(entry) = config.auths.get(&key) else {
            continue;
        };
        if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
            return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
        }
        if let Some(auth) = &entry.auth {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                return Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()));
            }
            tracing::warn!(path = %path.display(), host, "unreadable `auth` entry ignored");
        }
    }
    Ok(RegistryAuth::Anonymous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_normalisation() {
        let cases = [
            ("busybox", "docker.io", "library/busybox", Some("latest")),
            ("busybox:1.36", "docker.io", "library/busybox", Some("1.36")),
            ("user/app", "docker.io", "user/app", Some("latest")),
            (
                "index.docker.io/library/busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
            ),
            (
                "127.0.0.1:5000/library/busybox",
                "127.0.0.1:5000",
                "library/busybox",
                Some("latest"),
            ),
            ("localhost/app:v1", "localhost", "app", Some("v1")),
            ("ghcr.io/o/r:t", "ghcr.io", "o/r", Some("t")),
        ];
        for (text, registry, repository, tag) in cases {
            let r = parse_reference(text).unwrap();
            assert_eq!(
                (r.registry(), r.repository(), r.tag()),
                (registry, repository, tag),
                "{text}"
            );
        }
        let by_digest = parse_reference(
            "busybox@sha256:d52f2e085b43a66eac685128644e8bf54be9a108b5ec88453584b34039ae7f89",
        )
        .unwrap();
        assert_eq!(by_digest.tag(), None);
        assert_eq!(
            by_digest.digest(),
            Some("sha256:d52f2e085b43a66eac685128644e8bf54be9a108b5ec88453584b34039ae7f89")
        );
        assert!(parse_reference("no spaces allowed").is_err());
        assert!(parse_reference("busybox:").is_err());
    }

    #[test]
    fn buildkit_registry_syntax() {
        let text = r#"
debug = true
[registry."docker.io"]
mirrors = ["127.0.0.1:5000", "mirror.example:443"]
[registry."reg.example:8080"]
http = true
"#;
        let config = Config::parse(text, Path::new("kiln.toml")).unwrap();
        assert_eq!(
            config.mirrors("docker.io"),
            ["127.0.0.1:5000", "mirror.example:443"]
        );
        assert!(config.mirrors("ghcr.io").is_empty());
        assert!(config.is_plain_http("127.0.0.1:5000"));
        assert!(config.is_plain_http("localhost"));
        assert!(config.is_plain_http("reg.example:8080"));
        assert!(!config.is_plain_http("docker.io"));
        assert!(!config.is_plain_http("mirror.example:443"));
        let err =
            Config::parse("[registry.\"x\"]\nmirrors = 3", Path::new("bad.toml")).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
    }

    #[test]
    fn credentials_from_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let alice = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        fs_err::write(
            &path,
            format!(
                r#"{{"auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{alice}"}},
                    "reg.example": {{"username": "bob", "password": "pw"}}
                }}}}"#
            ),
        )
        .unwrap();
        let show = |a: RegistryAuth| match a {
            RegistryAuth::Basic(u, p) => format!("{u}/{p}"),
            RegistryAuth::Anonymous => "anonymous".to_owned(),
            RegistryAuth::Bearer(_) => "bearer".to_owned(),
        };
        assert_eq!(
            show(credentials(Some(&path), "docker.io").unwrap()),
            "alice/s3cret:x"
        );
        assert_eq!(
            show(credentials(Some(&path), "reg.example").unwrap()),
            "bob/pw"
        );
        assert_eq!(
            show(credentials(Some(&path), "other.example").unwrap()),
            "anonymous"
        );
        assert_eq!(
            show(credentials(Some(&dir.path().join("missing.json")), "docker.io").unwrap()),
            "anonymous"
        );
    }
}
