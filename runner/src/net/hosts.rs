//! The /etc/hosts and /etc/resolv.conf of containers on a network.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use fs_err::os::unix::fs::OpenOptionsExt as _;

use super::leases::Lease;
use crate::error::{Error, Result};

/// Where a lease's /etc/hosts is kept.
pub(crate) fn path(dir: &Path, id: &str) -> PathBuf {
    dir.join("hosts").join(id)
}

/// The hosts file of `lease` among `all`: localhost, its hostname on its address, its
/// `--add-host` entries, then every other container of the network by name.
pub(crate) fn render(lease: &Lease, all: &[Lease]) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mut own = vec![lease.hostname.as_str()];
    own.extend(
        lease
            .names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != lease.hostname),
    );
    text.push_str(&format!("{}\t{}\n", lease.address, own.join(" ")));
    for (name, address) in &lease.extra_hosts {
        text.push_str(&format!("{address}\t{name}\n"));
    }
    for peer in all.iter().filter(|_| lease.peers) {
        if peer.id == lease.id || peer.address == Ipv4Addr::UNSPECIFIED || peer.names.is_empty() {
            continue;
        }
        text.push_str(&format!("{}\t{}\n", peer.address, peer.names.join(" ")));
    }
    text
}

/// Writes the new lease's hosts file.
pub(crate) fn write_own(dir: &Path, lease: &Lease, all: &[Lease]) -> Result<()> {
    let path = path(dir, &lease.id);
    crate::state::write_new(&path, render(lease, all).as_bytes(), 0o644)?;
    Ok(())
}

/// Rewrites every live lease's hosts file in place (the same inode: it is bind-mounted into a
/// running container).
pub(crate) fn rewrite_peers(dir: &Path, all: &[Lease]) {
    for lease in all.iter().filter(|lease| lease.peers) {
        let path = path(dir, &lease.id);
        let written = fs_err::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut file| file.write_all(render(lease, all).as_bytes()));
        if let Err(err) = written {
            tracing::debug!(error = %err, "cannot update a container's hosts file");
        }
    }
}

/// Removes a lease's hosts file.
pub(crate) fn remove(dir: &Path, id: &str) {
    match fs_err::remove_file(path(dir, id)) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(error = %err, "cannot remove a hosts file"),
    }
}

/// [`resolv_conf`] of this host's /etc/resolv.conf (empty when it has none).
pub fn host_resolv_conf(dns: &[String]) -> Result<String> {
    let host = match fs_err::read_to_string("/etc/resolv.conf") {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(Error::Prepare(err)),
    };
    resolv_conf(&host, dns)
}

/// The /etc/resolv.conf of a container in its own network namespace, as docker makes it:
/// `dns` servers when given (`--dns`), otherwise the host's file without its loopback
/// nameservers (a resolver on the host's 127.0.0.53 is not reachable from the container),
/// and Google's public servers when none is left.
pub fn resolv_conf(host: &str, dns: &[String]) -> Result<String> {
    for server in dns {
        server
            .parse::<std::net::IpAddr>()
            .map_err(|_| Error::Network {
                step: "set the DNS servers".to_owned(),
                source: format!("{server} is not an ip address").into(),
            })?;
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let server = words.next().unwrap_or("");
            let loopback = server
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
            if !dns.is_empty() || loopback {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !dns.is_empty() {
        for server in dns {
            out.push_str(&format!("nameserver {server}\n"));
        }
    } else if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    Ok(out)
}
