//! Published ports: `docker run -p`'s grammar and the choice of host ports.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

use super::leases::Lease;
use crate::error::{Error, Result};

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A container port published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    /// The host address it is published on; `None`: every address.
    pub host_ip: Option<Ipv4Addr>,
    /// The host port; 0 until one is chosen for a publish that named none.
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl fmt::Display for Publish {
    /// As `docker ps` shows it: `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

fn invalid(spec: &str, why: &str) -> Error {
    Error::Network {
        step: "publish a port".to_owned(),
        source: format!("invalid publish spec {spec:?}: {why}").into(),
    }
}

/// A port or a `FIRST-LAST` range.
fn ports(spec: &str, text: &str) -> Result<(u16, u16)> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(spec, &format!("invalid port {p:?}")))
    };
    match text.split_once('-') {
        Some((first, last)) => {
            let (first, last) = (port(first)?, port(last)?);
            if last < first {
                return Err(invalid(spec, &format!("invalid range {text:?}")));
            }
            Ok((first, last))
        }
        None => port(text).map(|p| (p, p)),
    }
}

impl Publish {
    /// Parses `docker run -p`'s `[IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`, ranges included
    /// (`8000-8001:80-81`); an empty host port asks for any free one.
    pub fn parse(spec: &str) -> Result<Vec<Self>> {
        let (rest, protocol) = match spec.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Protocol::Tcp),
            Some((rest, "udp")) => (rest, Protocol::Udp),
            Some((_, other)) => return Err(invalid(spec, &format!("invalid proto {other:?}"))),
            None => (spec, Protocol::Tcp),
        };
        if rest.starts_with('[') {
            return Err(invalid(spec, "IPv6 host addresses are not supported"));
        }
        let parts: Vec<&str> = rest.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [container] => (None, "", *container),
            [host, container] => (None, *host, *container),
            [ip, host, container] => (Some(*ip), *host, *container),
            _ => return Err(invalid(spec, "too many colons")),
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(ip) => match ip.parse::<Ipv4Addr>() {
                Ok(ip) if ip.is_unspecified() => None,
                Ok(ip) => Some(ip),
                Err(_) => return Err(invalid(spec, &format!("invalid IP address {ip:?}"))),
            },
        };
        let (first, last) = ports(spec, container)?;
        let host_range = if host.is_empty() {
            None
        } else {
            let (h_first, h_last) = ports(spec, host)?;
            if h_last - h_first != last - first {
                return Err(invalid(
                    spec,
                    "the host and container port ranges differ in length",
                ));
            }
            Some(h_first)
        };
        Ok((first..=last)
            .map(|port| Self {
                host_ip,
                host_port: host_range.map_or(0, |h| h + (port - first)),
                container_port: port,
                protocol,
            })
            .collect())
    }

    /// The publishes `-P` makes of an image's exposed port (`80/tcp`, `8000-8001/udp`): each
    /// on a free host port. The image comes from anyone: a host address or port in it
    /// (`0.0.0.0:22:80`) is refused, never published.
    pub fn exposed(spec: &str) -> Result<Vec<Self>> {
        if spec.contains(':') {
            return Err(invalid(
                spec,
                "an exposed port names no host address or port",
            ));
        }
        Self::parse(spec)
    }

    /// Chooses a free host port when none was asked for, and refuses one that another
    /// container publishes or a host process holds.
    pub(crate) fn resolve_host_port(&mut self, leases: &[Lease]) -> Result<()> {
        let bind_ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let taken = |port: u16| {
            leases.iter().flat_map(|l| &l.publish).any(|p| {
                p.protocol == self.protocol
                    && p.host_port == port
                    && (p.host_ip.is_none() || self.host_ip.is_none() || p.host_ip == self.host_ip)
            })
        };
        for _ in 0..64 {
            let asked = self.host_port;
            if asked != 0 && taken(asked) {
                return Err(Error::Network {
                    step: "publish a port".to_owned(),
                    source: format!("Bind for {bind_ip}:{asked} failed: port is already allocated")
                        .into(),
                });
            }
            // The kernel's answer to a bind is both the free port and the check that no host
            // process holds it (published traffic would never reach such a process).
            let address = SocketAddrV4::new(bind_ip, asked);
            let bound = match self.protocol {
                Protocol::Tcp => TcpListener::bind(address).and_then(|l| l.local_addr()),
                Protocol::Udp => UdpSocket::bind(address).and_then(|s| s.local_addr()),
            };
            let port = bound
                .map_err(|err| Error::Network {
                    step: "publish a port".to_owned(),
                    source: format!("listen {}4 {address}: bind: {err}", self.protocol.as_str())
                        .into(),
                })?
                .port();
            if asked != 0 {
                return Ok(());
            }
            if !taken(port) {
                self.host_port = port;
                return Ok(());
            }
        }
        Err(invalid("", "no free host port"))
    }
}
