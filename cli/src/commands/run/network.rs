//! `kiln run`'s network flags: `--network`, `-p/-P`, `--add-host`, `--dns`, `--hostname`.

use anyhow::{Context as _, bail};
use kiln_cache::{NetworkSettings, PortBinding};
use kiln_runner::net::{AttachOptions, Attachment, Publish};
use kiln_runner::{NetworkMode, Spec};

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
    /// Puts the network into the container's spec.
    pub(crate) fn apply(&self, spec: &mut Spec) {
        spec.network = self.mode.clone();
        if self.resolv_conf.is_some() {
            spec.resolv_conf = self.resolv_conf.clone();
        }
        spec.extra_hosts = self.extra_hosts.clone();
    }

    /// docker's `NetworkSettings` of the container: its address, gateway and published ports.
    pub(crate) fn settings(&self) -> NetworkSettings {
        let Some(attachment) = &self.attachment else {
            return NetworkSettings::default();
        };
        NetworkSettings {
            ip_address: attachment.address().to_string(),
            gateway: attachment.gateway().to_string(),
            mac_address: String::new(),
            ports: attachment
                .published()
                .iter()
                .map(|p| PortBinding {
                    container_port: p.container_port,
                    protocol: p.protocol.as_str().to_owned(),
                    host_ip: p
                        .host_ip
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)
                        .to_string(),
                    host_port: p.host_port,
                })
                .collect(),
        }
    }
}

/// Checks the network flags before anything is made: the network's name, the `-p` specs
/// (returned, parsed, for [`set_up`]), the `--dns` servers and the `--add-host` entries.
pub(crate) fn check(args: &RunArgs) -> anyhow::Result<Vec<Publish>> {
    match args.network.as_str() {
        "bridge" | "default" | "none" | "host" => {}
        other
            if other
                .strip_prefix("container:")
                .is_some_and(|c| !c.is_empty()) => {}
        other => bail!("network {other} not found: use bridge, none, host or container:NAME"),
    }
    let mut publish = Vec::new();
    for spec in &args.publish {
        publish.extend(Publish::parse(spec)?);
    }
    kiln_runner::net::resolv_conf("", &args.dns)?;
    crate::args::add_hosts(&args.add_host, std::net::Ipv4Addr::UNSPECIFIED.into())?;
    Ok(publish)
}

/// Sets up the network `args` ask for, for the container `name` with `hostname`, publishing
/// `publish` (the `-p` specs [`check`] parsed) and, with `-P`, the image's `exposed_ports`.
pub(crate) fn set_up(
    args: &RunArgs,
    name: &str,
    hostname: &str,
    mut publish: Vec<Publish>,
    exposed_ports: &[String],
) -> anyhow::Result<ContainerNetwork> {
    let bridge = kiln_engine::default_network();
    let extra_hosts: Vec<(String, String)> =
        crate::args::add_hosts(&args.add_host, bridge.gateway().into())?
            .into_iter()
            .map(|(host, ip)| (host, ip.to_string()))
            .collect();
    if args.publish_all {
        for exposed in exposed_ports {
            publish.extend(
                Publish::exposed(exposed)
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
            let resolv_conf = kiln_runner::net::host_resolv_conf(&args.dns)?;
            let attachment = bridge
                .attach(AttachOptions {
                    names: std::iter::once(name.to_owned())
                        .chain((hostname != name).then(|| hostname.to_owned()))
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
