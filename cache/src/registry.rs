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
//! `~/.docker/config.json`), as Docker reads them: the credential helper named for the host in
//! `credHelpers`, else the one in `credsStore`, else the `auth` (base64 `user:password`) or
//! `username`/`password` of the host's entry in `auths`. A helper is the program
//! `docker-credential-NAME` on the search path, run as `docker-credential-NAME get` with the
//! server URL on its standard input; it answers `{"Username": .., "Secret": ..}` (a username
//! of `<token>` makes the secret an identity token) or says `credentials not found`, in which
//! case the `auths` entry is used if there is one. oci-client reads none of this; given the
//! resulting basic credentials (or none) it answers the registry's bearer-token challenge
//! itself, for pulls and pushes alike.
//!
//! Where credentials come from is a seam, [`Credentials`]: kiln's own commands read Docker's
//! file ([`DockerConfigFile`]); a daemon build asks the client that started it, through its
//! session, so a daemon never lends one client's credentials to another.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use kiln_llb::ImageReference;
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
    /// Limits on the layers the store unpacks (`[unpack]`).
    #[serde(default)]
    pub unpack: crate::limits::UnpackLimits,
    /// Garbage collection after builds (`[gc]`, `[[gc.policy]]`).
    #[serde(default)]
    pub gc: crate::gcpolicy::GcConfig,
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
    /// Parses the text of the configuration file at `path` (named in errors); the CLI reads
    /// the file.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_owned(),
            source: Box::new(e),
        })
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

/// The registries (`HOST[:PORT]`) that answered an anonymous client's authentication
/// challenge (`GET /v2/`) without asking for a token, in this process.
static OPEN_REGISTRIES: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Notes that the registry `host` asks an anonymous client for no token: the registry client
/// then sends its requests there with no credentials, and asks again before each one.
pub(crate) fn note_open_registry(host: &str) {
    OPEN_REGISTRIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(host.to_owned());
}

/// Whether the registry `host` asked an anonymous client of this process for no token: an
/// anonymous client with no credentials stored for it sends the same requests, without asking
/// before each one.
pub fn is_open_registry(host: &str) -> bool {
    OPEN_REGISTRIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(host)
}

/// The name of `reference`'s repository pinned to `digest` (`host/repository@sha256:…`): how
/// one manifest of a multi-platform image is named, pushed and recorded.
pub fn digest_name(reference: &Reference, digest: &crate::Digest) -> String {
    format!(
        "{}/{}@{digest}",
        reference.registry(),
        reference.repository()
    )
}

/// Parses an image reference with Docker's normalisation (`busybox` is
/// `docker.io/library/busybox:latest`), by kiln's own grammar ([`ImageReference`]); the
/// client's reference is made from its parts, without the client's own parser (whose Unicode
/// regular expression took longer to compile than the rest of a cached build's start).
pub fn parse_reference(text: &str) -> Result<Reference, Error> {
    let parsed = ImageReference::parse(text).map_err(|source| Error::InvalidReference {
        reference: text.to_owned(),
        source,
    })?;
    let ImageReference {
        domain,
        path,
        tag,
        digest,
    } = parsed;
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(domain, path, tag, digest),
        (None, Some(digest)) => Reference::with_digest(domain, path, digest),
        (tag, None) => {
            Reference::with_tag(domain, path, tag.unwrap_or_else(|| "latest".to_owned()))
        }
    })
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    /// The credential helper for every registry without one in `credHelpers`.
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    /// Credential helpers by registry host.
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

/// What a credential helper prints for `get`.
#[derive(Debug, Deserialize)]
struct HelperCredentials {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The username with which a credential helper marks its secret as an identity token.
const IDENTITY_TOKEN_USER: &str = "<token>";

/// Whether `host` is Docker Hub under one of its names.
pub fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

#[derive(Debug, Default, Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Where a registry's credentials come from.
pub trait Credentials: Send + Sync + fmt::Debug {
    /// The credentials for the registry `host` (`HOST[:PORT]`, as in a reference), anonymous
    /// when there are none.
    fn get<'a>(
        &'a self,
        host: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<RegistryAuth, Error>>;

    /// Where credentials are looked for, for messages ("no credentials for it in ORIGIN").
    fn origin(&self) -> &str;
}

/// Docker's credentials file and its credential helpers, as `docker` reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfigFile {
    /// The file (`None`: anonymous for every host).
    pub path: Option<PathBuf>,
    /// Where its credential helpers (`docker-credential-*`) are looked for, a `$PATH`-style
    /// list of directories.
    pub helper_path: Option<OsString>,
}

impl DockerConfigFile {
    /// The file of [`docker_config_path`], with helpers from `$PATH`.
    pub fn from_env() -> Self {
        Self {
            path: docker_config_path(),
            helper_path: std::env::var_os("PATH"),
        }
    }

    /// No file: anonymous access everywhere.
    pub fn anonymous() -> Self {
        Self {
            path: None,
            helper_path: None,
        }
    }

    /// The credentials for `host`, read now (the file and helpers are read on every call, as
    /// `docker login` may change them between two builds).
    pub fn for_host(&self, host: &str) -> Result<RegistryAuth, Error> {
        read_credentials(self.path.as_deref(), host, self.helper_path.as_deref())
    }
}

impl Credentials for DockerConfigFile {
    fn get<'a>(
        &'a self,
        host: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<RegistryAuth, Error>> {
        Box::pin(std::future::ready(self.for_host(host)))
    }

    fn origin(&self) -> &str {
        "the Docker config"
    }
}

/// Docker's credentials file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// The credentials for `host` from a Docker `config.json` (anonymous when absent), looking
/// for `docker-credential-*` helpers in `search_path` (a `$PATH`-style list of directories).
/// An identity token from a helper is returned as [`RegistryAuth::Bearer`]; it is sent to the
/// registry as it is (oci-client has no OAuth refresh-token exchange).
fn read_credentials(
    config_file: Option<&Path>,
    host: &str,
    search_path: Option<&OsStr>,
) -> Result<RegistryAuth, Error> {
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
    let helper = config
        .cred_helpers
        .iter()
        .find(|(name, _)| {
            let name = name
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            name == host
                || is_docker_hub(host) && (is_docker_hub(name) || name == "index.docker.io/v1")
        })
        .map(|(_, helper)| helper)
        .or(config.creds_store.as_ref())
        .filter(|helper| !helper.is_empty());
    if let Some(helper) = helper {
        // Docker stores Docker Hub's credentials under its old index URL, others by host.
        let server = if is_docker_hub(host) {
            "https://index.docker.io/v1/"
        } else {
            host
        };
        if let Some(auth) = run_helper(helper, server, search_path)? {
            return Ok(auth);
        }
    }
    let mut keys = vec![
        host.to_owned(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v1/"),
        format!("https://{host}/v2/"),
    ];
    if is_docker_hub(host) {
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

/// Runs `docker-credential-<helper> get` for `server`; `None` when it has no credentials.
fn run_helper(
    helper: &str,
    server: &str,
    search_path: Option<&OsStr>,
) -> Result<Option<RegistryAuth>, Error> {
    let program = format!("docker-credential-{helper}");
    let failed = |problem: String| Error::CredentialHelper {
        program: program.clone(),
        server: server.to_owned(),
        problem,
    };
    let executable = search_path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&program))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt as _;
            fs_err::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| failed("not found in the search path".to_owned()))?;
    tracing::debug!(helper = %executable.display(), server, "asking a credential helper");
    let mut attempts = 0;
    let mut child = loop {
        let spawned = Command::new(&executable)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(child) => break child,
            // A helper just installed may still be open for writing in a child another
            // thread forked a moment ago; that passes.
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempts < 10 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(failed(format!(
                    "could not start {}: {e}",
                    executable.display()
                )));
            }
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is judged by its answer below.
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(format!("waiting for it: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = [stdout.trim(), stderr.trim()]
            .into_iter()
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if message.contains("credentials not found") {
            return Ok(None);
        }
        return Err(failed(format!("{}: {message}", output.status)));
    }
    let answer: HelperCredentials =
        serde_json::from_str(&stdout).map_err(|e| failed(format!("unreadable answer ({e})")))?;
    Ok(Some(match (answer.username.as_str(), answer.secret) {
        (_, secret) if secret.is_empty() => return Ok(None),
        (IDENTITY_TOKEN_USER, token) => RegistryAuth::Bearer(token),
        (user, secret) => RegistryAuth::Basic(user.to_owned(), secret),
    }))
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
        let credentials = |path: &Path, host: &str| {
            DockerConfigFile {
                path: Some(path.to_owned()),
                helper_path: None,
            }
            .for_host(host)
        };
        assert_eq!(
            show(credentials(&path, "docker.io").unwrap()),
            "alice/s3cret:x"
        );
        assert_eq!(show(credentials(&path, "reg.example").unwrap()), "bob/pw");
        assert_eq!(
            show(credentials(&path, "other.example").unwrap()),
            "anonymous"
        );
        assert_eq!(
            show(credentials(&dir.path().join("missing.json"), "docker.io").unwrap()),
            "anonymous"
        );
    }

    fn install_helper(dir: &Path, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(format!("docker-credential-{name}"));
        fs_err::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn credential_helpers_from_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs_err::create_dir(&bin).unwrap();
        install_helper(
            &bin,
            "hosts",
            r#"[ "$1" = get ] || { echo "bad action $1" >&2; exit 2; }
read -r server
case "$server" in
  reg.example) echo '{"ServerURL":"reg.example","Username":"carol","Secret":"from-helper"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"<token>","Secret":"identity-123"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"#,
        );
        install_helper(&bin, "broken", "echo 'keychain locked' >&2\nexit 3\n");
        install_helper(&bin, "garbage", "echo not-json\n");
        install_helper(
            &bin,
            "pinned",
            r#"read -r server; echo "{\"Username\":\"erin\",\"Secret\":\"for $server\"}""#,
        );
        let path = dir.path().join("config.json");
        fs_err::write(
            &path,
            r#"{
                "auths": {"fallback.example": {"username": "dave", "password": "pw"}},
                "credsStore": "hosts",
                "credHelpers": {
                    "pinned.example:5000": "pinned",
                    "broken.example": "broken",
                    "garbage.example": "garbage",
                    "missing.example": "absent"
                }
            }"#,
        )
        .unwrap();
        let search = std::env::join_paths([Path::new("/nonexistent"), &bin]).unwrap();
        let file = DockerConfigFile {
            path: Some(path.clone()),
            helper_path: Some(search),
        };
        let get = |host: &str| file.for_host(host);
        let show = |a: RegistryAuth| match a {
            RegistryAuth::Basic(u, p) => format!("{u}/{p}"),
            RegistryAuth::Anonymous => "anonymous".to_owned(),
            RegistryAuth::Bearer(t) => format!("bearer {t}"),
        };
        // credsStore for every host without its own helper; credHelpers wins for its host.
        assert_eq!(show(get("reg.example").unwrap()), "carol/from-helper");
        assert_eq!(
            show(get("pinned.example:5000").unwrap()),
            "erin/for pinned.example:5000"
        );
        // Docker Hub is asked for under its index URL; `<token>` is an identity token.
        assert_eq!(show(get("docker.io").unwrap()), "bearer identity-123");
        // Not found by the helper: the `auths` entry, else anonymous.
        assert_eq!(show(get("fallback.example").unwrap()), "dave/pw");
        assert_eq!(show(get("other.example").unwrap()), "anonymous");
        // Failures name the helper, the server and what went wrong.
        assert_eq!(
            get("broken.example").unwrap_err().to_string(),
            "credential helper docker-credential-broken for broken.example: \
             exit status: 3: keychain locked"
        );
        let err = get("garbage.example").unwrap_err().to_string();
        assert!(
            err.starts_with(
                "credential helper docker-credential-garbage for garbage.example: unreadable answer"
            ),
            "{err}"
        );
        assert_eq!(
            get("missing.example").unwrap_err().to_string(),
            "credential helper docker-credential-absent for missing.example: \
             not found in the search path"
        );
        let no_helpers = DockerConfigFile {
            path: Some(path.clone()),
            helper_path: None,
        };
        assert!(no_helpers.for_host("reg.example").is_err());
    }
}
