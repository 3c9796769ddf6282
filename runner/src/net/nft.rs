//! The network's nftables table, driven through the `nft` program: the table is one atomic
//! script, and each published port one map element added or deleted.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::leases::Lease;
use super::publish::Protocol;
use crate::error::{Error, Result};

/// The table's name: `ip kiln` for the default bridge, `ip kiln-<bridge>` for others.
fn table(bridge: &str) -> String {
    if bridge == super::DEFAULT_BRIDGE {
        "kiln".to_owned()
    } else {
        format!("kiln-{bridge}")
    }
}

/// Replaces the table (if any) with a fresh one for `bridge` and its subnet.
pub(crate) fn create_table(bridge: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    let table = table(bridge);
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let subnet = format!("{}/{prefix}", Ipv4Addr::from(u32::from(gateway) & mask));
    let script = format!(
        r#"add table ip {table}
delete table ip {table}
table ip {table} {{
    map publish_tcp {{ type inet_service : ipv4_addr . inet_service ; }}
    map publish_udp {{ type inet_service : ipv4_addr . inet_service ; }}
    map publish_addr_tcp {{ type ipv4_addr . inet_service : ipv4_addr . inet_service ; }}
    map publish_addr_udp {{ type ipv4_addr . inet_service : ipv4_addr . inet_service ; }}
    chain publish {{
        dnat ip to ip daddr . tcp dport map @publish_addr_tcp
        dnat ip to ip daddr . udp dport map @publish_addr_udp
        dnat ip to tcp dport map @publish_tcp
        dnat ip to udp dport map @publish_udp
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        fib daddr type local jump publish
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
        fib daddr type local jump publish
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} oifname != "{bridge}" masquerade
        oifname "{bridge}" fib saddr type local masquerade
    }}
    chain guard {{
        type filter hook prerouting priority raw; policy accept;
        iifname "{bridge}" ip daddr 127.0.0.0/8 drop
    }}
}}
"#
    );
    run(&script, "create the network's nftables table")
}

/// Adds (`add`) or deletes the map elements of a lease's published ports.
pub(crate) fn publish(bridge: &str, lease: &Lease, add: bool) -> Result<()> {
    if lease.publish.is_empty() {
        return Ok(());
    }
    let table = table(bridge);
    let verb = if add { "add" } else { "delete" };
    let mut script = String::new();
    for p in &lease.publish {
        let proto = match p.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        let (map, key) = match p.host_ip {
            Some(ip) => (
                format!("publish_addr_{proto}"),
                format!("{ip} . {}", p.host_port),
            ),
            None => (format!("publish_{proto}"), p.host_port.to_string()),
        };
        let element = if add {
            format!("{key} : {} . {}", lease.address, p.container_port)
        } else {
            key
        };
        script.push_str(&format!(
            "{verb} element ip {table} {map} {{ {element} }}\n"
        ));
    }
    run(&script, "publish the container's ports")
}

/// Whether the `nft` program is on the `PATH`.
pub(crate) fn available() -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs_err::metadata(dir.join("nft"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn run(script: &str, step: &str) -> Result<()> {
    let fail = |message: String| Error::Network {
        step: step.to_owned(),
        source: message.into(),
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| {
            fail(format!(
                "cannot run nft ({err}): install nftables (the Debian package `nftables`)"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|err| fail(format!("cannot write to nft: {err}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|err| fail(format!("nft failed: {err}")))?;
    if !output.status.success() {
        return Err(fail(format!(
            "nft: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
