//! `kiln run`'s network flags: `--network`, `-p/-P`, `--add-host`, `--dns`, `--hostname`.

use anyhow::{Context as _, bail};
use kiln_cache::{ImageRecord, Store};
use kiln_runner::NetworkMode;
use kiln_runner::net::{AttachOptions, Attachment, Publish};

use crate::args::RunArgs;

/// A container's network, set up: the runner's mode, the resolv.conf to give it (`None`: the
/// host's), and the attachment that holds the container's place on the bridge until dropped.
pub(crate) struct ContainerNetwork {
    pub(crate) mode: NetworkMode,
    pub(crate) resolv_conf: Option<String>,
    pub(crate) extra_hosts: Vec<(String, String)>,
    pub(crate) attachment: Option<Attachment>,
}

impl ContainerNetwork {
    /// The container's address on the bridge and its published ports (`0.0.0.0:8080->80/tcp`).
    pub(crate) fn summary(&self) -> Option<(std::net::Ipv4Addr, Vec<String>)> {
        self.attachment.as_ref().map(|a| {
            (
                a.address(),
                a.published().iter().map(ToString::to_string).collect(),
            )
        })
    }
}

/// Sets up the network `args` ask for, for the container `name` with `hostname`.
pub(crate) fn set_up(
    args: &RunArgs,
    name: Option<&str>,
    hostname: &str,
    store: &Store,
    record: &ImageRecord,
) -> anyhow::Result<ContainerNetwork> {
    let bridge = kiln_engine::default_network();
    let extra_hosts: Vec<(String, String)> =
        crate::args::add_hosts(&args.add_host, bridge.gateway().into())?
            .into_iter()
            .map(|(host, ip)| (host, ip.to_string()))
            .collect();
    let mut publish = Vec::new();
    for spec in &args.publish {
        publish.extend(Publish::parse(spec)?);
    }
    if args.publish_all {
        for exposed in exposed_ports(store, record)? {
            publish.extend(
                Publish::parse(&exposed)
                    .with_context(|| format!("the image's exposed port {exposed:?}"))?,
            );
        }
    }
    let plain = |mode| ContainerNetwork {
        mode,
        resolv_conf: None,
        extra_hosts: extra_hosts.clone(),
        attachment: None,
    };
    let network = args.network.as_str();
    if network != "bridge" && network != "default" && !publish.is_empty() {
        #[expect(clippy::print_stderr, reason = "docker's warning, on stderr")]
        {
            eprintln!("WARNING: Published ports are discarded when using {network} network mode");
        }
    }
    match network {
        "bridge" | "default" => {
            let resolv = match fs_err::read_to_string("/etc/resolv.conf") {
                Ok(text) => text,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(err) => return Err(err.into()),
            };
            let resolv_conf = kiln_runner::net::resolv_conf(&resolv, &args.dns)?;
            let attachment = bridge
                .attach(AttachOptions {
                    names: name
                        .into_iter()
                        .map(str::to_owned)
                        .chain((Some(hostname) != name).then(|| hostname.to_owned()))
                        .collect(),
                    hostname: hostname.to_owned(),
                    extra_hosts,
                    publish,
                    peers: true,
                })
                .context("connecting the container to the bridge network")?;
            Ok(ContainerNetwork {
                mode: NetworkMode::Join {
                    namespace: attachment.namespace(),
                    hosts: Some(attachment.hosts_file()),
                },
                resolv_conf: Some(resolv_conf),
                extra_hosts: Vec::new(),
                attachment: Some(attachment),
            })
        }
        "none" => Ok(plain(NetworkMode::None)),
        "host" => Ok(plain(NetworkMode::Host)),
        other => match other.strip_prefix("container:") {
            Some(peer) if !peer.is_empty() => {
                let (namespace, hosts) = bridge.lookup(peer)?.with_context(|| {
                    format!("cannot join network of container {peer}: no running container {peer} on the bridge network")
                })?;
                Ok(ContainerNetwork {
                    mode: NetworkMode::Join {
                        namespace,
                        hosts: Some(hosts),
                    },
                    resolv_conf: None,
                    extra_hosts: Vec::new(),
                    attachment: None,
                })
            }
            _ => bail!("network {other} not found: use bridge, none, host or container:NAME"),
        },
    }
}

/// The image's `ExposedPorts` (`80/tcp`), for `-P`.
fn exposed_ports(store: &Store, record: &ImageRecord) -> anyhow::Result<Vec<String>> {
    let bytes = store.read_blob(&record.config)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).context("reading the image config")?;
    Ok(value["config"]["ExposedPorts"]
        .as_object()
        .map(|ports| ports.keys().cloned().collect())
        .unwrap_or_default())
}
