//! The OCI image configuration a Dockerfile build produces, with Docker's extensions
//! (`Healthcheck`, `OnBuild`, `Shell`, `ArgsEscaped`), serialised field for field as BuildKit
//! writes it (`application/vnd.oci.image.config.v1+json`).
//!
//! Our own serde types rather than `oci-spec`'s `ImageConfiguration`: that type has no field for
//! Docker's `Healthcheck`, `OnBuild` and `Shell`, which the Dockerfile instructions set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An image configuration (`config.json` of an image).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Creation time (RFC 3339); the converter leaves it unset, as BuildKit does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// `MAINTAINER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (`amd64`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The layers' uncompressed digests.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rootfs: RootFs,
    /// One entry per instruction (and per base image history entry).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub history: Vec<History>,
    /// The runtime defaults of containers made from the image.
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: ContainerConfig,
}

/// `rootfs` of an image configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub kind: String,
    /// `sha256:` digests of the uncompressed layers, bottom first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: "layers".to_owned(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction, as BuildKit words it (`RUN /bin/sh -c make # buildkit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// `buildkit.dockerfile.v0` for entries made by the converter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the instruction made no layer.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "null_as_default"
    )]
    pub empty_layer: bool,
}

/// An empty JSON object (the values of `ExposedPorts` and `Volumes`); any value reads as one,
/// `null` included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Empty {}

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(Self {})
    }
}

/// `config` of an image configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub user: String,
    /// `EXPOSE`: `80/tcp` and the like.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `ENV` (and the base image's), `KEY=VALUE`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub volumes: BTreeMap<String, Empty>,
    /// `WORKDIR`.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub working_dir: String,
    /// `LABEL`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub stop_signal: String,
    /// Set by `CMD`/`ENTRYPOINT` (Docker compatibility).
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "null_as_default"
    )]
    pub args_escaped: bool,
    /// `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// `ONBUILD` triggers.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub on_build: Vec<String>,
    /// `SHELL`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub shell: Vec<String>,
}

/// Docker's health check configuration; durations in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", command]`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_default"
    )]
    pub interval: i64,
    /// Time a check may take.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_default"
    )]
    pub timeout: i64,
    /// Start-up time during which failures do not count.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_default"
    )]
    pub start_period: i64,
    /// Time between checks during the start period.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_default"
    )]
    pub start_interval: i64,
    /// Consecutive failures that make the container unhealthy.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_default"
    )]
    pub retries: i64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Reads `null` as the field's default, as absent: Go writes nil slices and maps as `null`,
/// and images from `docker import`, `docker commit` and the classic builder have `null` in
/// many fields (`"Volumes":null`, `"Entrypoint":null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl ImageConfig {
    /// The configuration of an image made `FROM scratch` for `os`/`architecture`.
    pub fn empty(os: &str, architecture: &str) -> Self {
        Self {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            config: ContainerConfig {
                env: vec![format!("PATH={DEFAULT_PATH}")],
                working_dir: "/".to_owned(),
                ..ContainerConfig::default()
            },
            ..Self::default()
        }
    }

    /// The JSON bytes of the configuration.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an image configuration always serialises")
    }
}

/// The `PATH` a Linux container gets when its image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_base_image_config_and_writes_it_back() {
        let text = br#"{"architecture":"amd64","config":{"Cmd":["sh"],"Env":["PATH=/bin"],"OnBuild":null},"created":"1970-01-01T00:00:00Z","history":[{"created":"1970-01-01T00:00:00Z","created_by":"rootfs"}],"os":"linux","rootfs":{"diff_ids":["sha256:e3"],"type":"layers"}}"#;
        let config: ImageConfig = serde_json::from_slice(text).unwrap();
        assert_eq!(config.config.cmd, Some(vec!["sh".to_owned()]));
        assert_eq!(config.rootfs.diff_ids, ["sha256:e3"]);
        let out = String::from_utf8(config.to_json()).unwrap();
        assert_eq!(
            out,
            r#"{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:e3"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"rootfs"}],"config":{"Env":["PATH=/bin"],"Cmd":["sh"]}}"#
        );
    }

    #[test]
    fn null_fields_read_as_absent() {
        // As `docker commit`, `docker import` and the classic builder write configs.
        let text = br#"{"architecture":"amd64","os":"linux","author":null,"created":null,"history":null,"rootfs":{"type":"layers","diff_ids":null},"config":{"Hostname":"","User":null,"ExposedPorts":null,"Env":null,"Cmd":null,"Entrypoint":null,"Volumes":{"/data":null},"WorkingDir":null,"Labels":null,"StopSignal":null,"ArgsEscaped":null,"OnBuild":null,"Shell":null,"Healthcheck":{"Test":null,"Interval":null,"Retries":null}}}"#;
        let config: ImageConfig = serde_json::from_slice(text).unwrap();
        assert_eq!(config.history, []);
        assert_eq!(config.rootfs.diff_ids, Vec::<String>::new());
        let c = &config.config;
        assert_eq!((c.entrypoint.as_ref(), c.cmd.as_ref()), (None, None));
        assert!(c.env.is_empty() && c.labels.is_empty() && c.exposed_ports.is_empty());
        assert_eq!(c.volumes.keys().collect::<Vec<_>>(), ["/data"]);
        assert_eq!((c.user.as_str(), c.working_dir.as_str()), ("", ""));
        assert!(!c.args_escaped);
        assert_eq!(c.healthcheck, Some(Healthcheck::default()));
        let config: ImageConfig =
            serde_json::from_slice(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":null}"#)
                .unwrap();
        assert_eq!(config.config, ContainerConfig::default());
    }
}
