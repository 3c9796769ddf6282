//! Container networks: a bridge on the host, one network namespace per container on it, outbound
//! NAT and published ports through nftables, peers found by name through /etc/hosts.
//!
//! # Overview
//!
//! A [`Bridge`] is docker's default `bridge` network under another name: the host-side Linux
//! bridge `kiln0` with the gateway address `10.89.0.1/16`, and an nftables table `ip kiln`
//! that masquerades what containers send out and forwards published ports to them.
//! [`Bridge::attach`] gives a container its place on it:
//!
//! 1. Under the network's lock file it sweeps the attachments of dead processes (kiln killed
//!    with SIGKILL), makes the bridge and the table if they are missing (after a reboot they
//!    are, with /run), and leases the lowest free address, recorded with its owner process.
//! 2. A thread of this process enters a fresh network namespace (`unshare(CLONE_NEWNET)`
//!    affects only the calling thread), bind-mounts it to a file so that it outlives the
//!    thread, and configures it over netlink: `lo` up, then `eth0` — the peer of a veth pair
//!    whose host end joined the bridge — with the leased address and a default route through
//!    the gateway.
//! 3. Published ports become elements of the table's maps (host port, or host address and
//!    port, to container address and port), which its `dnat` rules look up for traffic to any
//!    local address, from outside (prerouting) and from the host itself (output, with
//!    `route_localnet` on the bridge and masquerading, as docker without its userland proxy).
//! 4. The container's /etc/hosts is a file the network keeps: its own name on its address,
//!    the `--add-host` entries, and every other live container on the network by name. When
//!    a container joins or leaves, the files of the others are rewritten in place (their
//!    processes see the bind-mounted file change).
//!
//! [`Attachment`] undoes all of it when dropped: the map elements, the namespace file (the
//! kernel then destroys the namespace and the veth pair with it, within milliseconds but off
//! the caller's path), the lease, the container from its peers' /etc/hosts. What a killed process left is swept by the next
//! attach in any process, or by [`Bridge::sweep`].
//!
//! Why these parts: netlink through `rtnetlink` (no `ip` processes: attaching stays within a
//! few milliseconds), nftables through the `nft` program (the kernel's NAT; the rules are one
//! atomic script and each publish is one element, so nothing is parsed back), rather than a
//! user-mode stack such as `pasta`: containers on one network must reach each other by
//! address and name, which a per-container user-mode stack does not give.
//!
//! Safety of the sandbox: a container on the bridge cannot reach the host's loopback
//! services — its 127.0.0.1 is its own, and packets addressed to 127.0.0.0/8 arriving from the
//! bridge are dropped before routing (with `route_localnet` on, the kernel would otherwise
//! accept them: the kube-proxy CVE-2020-8558 pattern).

mod hosts;
mod leases;
mod netlink;
mod nft;
mod publish;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use hosts::{host_resolv_conf, resolv_conf};
pub use publish::{Protocol, Publish};

use crate::error::{Error, Result};
use leases::{Lease, Leases};

/// The default network's bridge device.
pub const DEFAULT_BRIDGE: &str = "kiln0";
/// The default network's gateway (the bridge's own address) and prefix length.
pub const DEFAULT_GATEWAY: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 89, 0, 1), 16);

/// A bridge network on this host.
#[derive(Debug, Clone)]
pub struct Bridge {
    name: String,
    gateway: Ipv4Addr,
    prefix: u8,
    dir: PathBuf,
}

/// What a container asks of the network.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// The names other containers on the network reach it by (its `--name`, its hostname).
    pub names: Vec<String>,
    /// Its hostname, on its address in its own /etc/hosts.
    pub hostname: String,
    /// `--add-host` entries as `(name, address)`.
    pub extra_hosts: Vec<(String, String)>,
    /// Published ports.
    pub publish: Vec<Publish>,
    /// Whether its /etc/hosts lists the other containers of the network (`kiln run`'s do;
    /// build steps', which nothing names either, do not).
    pub peers: bool,
}

/// A container's place on a network, torn down when dropped.
#[derive(Debug)]
pub struct Attachment {
    bridge: Bridge,
    lease: Lease,
}

static ATTACH_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Bridge {
    /// The default network, keeping its state (leases, namespace files, hosts files) in
    /// `state_dir` — a root-only directory on a tmpfs such as /run, so that it goes with the
    /// links and rules at a reboot.
    pub fn default_network(state_dir: impl Into<PathBuf>) -> Self {
        let dir: PathBuf = state_dir.into();
        Self {
            name: DEFAULT_BRIDGE.to_owned(),
            gateway: DEFAULT_GATEWAY.0,
            prefix: DEFAULT_GATEWAY.1,
            dir: dir.join(DEFAULT_BRIDGE),
        }
    }

    /// The bridge device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The gateway address (the bridge's own).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Gives a container a network namespace on this bridge (see the module docs).
    pub fn attach(&self, options: AttachOptions) -> Result<Attachment> {
        let started = std::time::Instant::now();
        let mut leases = Leases::lock(&self.dir)?;
        self.sweep_locked(&mut leases);
        self.ensure(&leases)?;
        let pid = std::process::id();
        let id = format!(
            "{pid}-{}-{}",
            crate::state::start_time(pid).unwrap_or(0),
            ATTACH_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let address = leases.free_address(self.gateway, self.prefix)?;
        let mut lease = Lease {
            id,
            address,
            names: options.names,
            hostname: options.hostname,
            extra_hosts: options.extra_hosts,
            publish: options.publish,
            peers: options.peers,
        };
        for publish in &mut lease.publish {
            publish.resolve_host_port(leases.all())?;
        }
        // Recorded first: whatever the steps below leave behind, a sweep finds it.
        leases.insert(lease.clone())?;
        let attachment = Attachment {
            bridge: self.clone(),
            lease,
        };
        let made = (|| {
            hosts::write_own(&self.dir, &attachment.lease, leases.all())?;
            netlink::create_namespace(
                &leases::namespace_path(&self.dir, &attachment.lease.id),
                &self.name,
                &veth_name(address),
                address,
                self.prefix,
                self.gateway,
            )?;
            nft::publish(&self.name, &attachment.lease, true)?;
            hosts::rewrite_peers(&self.dir, leases.all());
            Ok(())
        })();
        drop(leases);
        made?;
        tracing::debug!(
            address = %address,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "attached to the network"
        );
        Ok(attachment)
    }

    /// The namespace file and /etc/hosts of the live container called `name` on this network
    /// (`--network container:NAME`).
    pub fn lookup(&self, name: &str) -> Result<Option<(PathBuf, PathBuf)>> {
        if !self.dir.exists() {
            return Ok(None);
        }
        let mut leases = Leases::lock(&self.dir)?;
        self.sweep_locked(&mut leases);
        Ok(leases
            .all()
            .iter()
            .find(|lease| lease.names.iter().any(|n| n == name))
            .map(|lease| {
                (
                    leases::namespace_path(&self.dir, &lease.id),
                    hosts::path(&self.dir, &lease.id),
                )
            }))
    }

    /// Removes what processes that died without detaching (kiln killed with SIGKILL) left on
    /// this network: their leases, published ports, veth pairs, namespace and hosts files.
    pub fn sweep(&self) {
        if !self.dir.exists() {
            return;
        }
        match Leases::lock(&self.dir) {
            Ok(mut leases) => self.sweep_locked(&mut leases),
            Err(err) => tracing::warn!(error = %err, "cannot sweep the network"),
        }
    }

    fn sweep_locked(&self, leases: &mut Leases) {
        let dead = leases.dead();
        if dead.is_empty() {
            return;
        }
        for lease in &dead {
            tracing::debug!(address = %lease.address, "removing the network attachment of a dead process");
            self.release(leases, lease);
        }
        hosts::rewrite_peers(&self.dir, leases.all());
    }

    /// Makes the bridge when its device is missing, and the nftables table when it was not
    /// made since the bridge was (a marker file beside the leases, on the same tmpfs).
    ///
    /// Without the `nft` program the network still isolates its containers, but they have no
    /// outbound access and cannot publish ports: a warning says so, and the table is made by
    /// the first attach after nftables is installed.
    fn ensure(&self, _locked: &Leases) -> Result<()> {
        let marker = self.dir.join("nat-ready");
        let bridge = netlink::link_exists(&self.name)?;
        if bridge && marker.exists() {
            return Ok(());
        }
        if nft::available() {
            nft::create_table(&self.name, self.gateway, self.prefix)?;
            fs_err::write(&marker, b"").map_err(|source| Error::Network {
                step: "record the network's nftables table".to_owned(),
                source: source.into(),
            })?;
        } else {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "nft not found (Debian package nftables): containers on the {} network \
                     have no outbound access and cannot publish ports",
                    self.name
                );
            });
        }
        if !bridge {
            netlink::create_bridge(&self.name, self.gateway, self.prefix)?;
            sysctl("net/ipv4/ip_forward", "1")?;
            sysctl(&format!("net/ipv4/conf/{}/route_localnet", self.name), "1")?;
        }
        Ok(())
    }

    /// Undoes one lease's set-up, each part on its own (a part that was never made is no error).
    fn release(&self, leases: &mut Leases, lease: &Lease) {
        if let Err(err) = nft::publish(&self.name, lease, false) {
            tracing::warn!(error = %err, "cannot remove published ports");
        }
        // The namespace goes with its file's unmount once no process is in it, and its veth
        // pair with it, in the kernel's own time: deleting the pair here would cost the caller
        // the ~20 ms of the kernel's synchronisation. A pair still there when its address is
        // leased again is deleted then (see `netlink::create_namespace`).
        leases::remove_namespace(&leases::namespace_path(&self.dir, &lease.id));
        hosts::remove(&self.dir, &lease.id);
        if let Err(err) = leases.remove(&lease.id) {
            tracing::warn!(error = %err, "cannot release the address");
        }
    }
}

impl Attachment {
    /// The container's address.
    pub fn address(&self) -> Ipv4Addr {
        self.lease.address
    }

    /// The published ports, with the host ports chosen for those that asked for any.
    pub fn published(&self) -> &[Publish] {
        &self.lease.publish
    }

    /// The file holding the network namespace, for the runner to join.
    pub fn namespace(&self) -> PathBuf {
        leases::namespace_path(&self.bridge.dir, &self.lease.id)
    }

    /// The container's /etc/hosts, kept up to date with its peers.
    pub fn hosts_file(&self) -> PathBuf {
        hosts::path(&self.bridge.dir, &self.lease.id)
    }

    /// The network's gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.bridge.gateway
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        match Leases::lock(&self.bridge.dir) {
            Ok(mut leases) => {
                self.bridge.release(&mut leases, &self.lease);
                hosts::rewrite_peers(&self.bridge.dir, leases.all());
            }
            Err(err) => tracing::warn!(error = %err, "cannot detach from the network"),
        }
    }
}

/// The host end of a container's veth pair, named after its address (unique while leased,
/// and within the 15 bytes of an interface name).
fn veth_name(address: Ipv4Addr) -> String {
    format!("kv{:08x}", u32::from(address))
}

fn sysctl(name: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(name);
    fs_err::write(&path, value).map_err(|source| Error::Network {
        step: format!("set {}", name.replace('/', ".")),
        source: source.into(),
    })
}

#[cfg(test)]
mod tests;
