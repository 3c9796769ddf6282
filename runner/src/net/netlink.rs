//! Links, addresses and routes over netlink (`rtnetlink`), each call on a small
//! current-thread runtime of its own: the callers are blocking, and a socket's network
//! namespace is the one its thread was in when it was opened.

use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::path::Path;

use futures::TryStreamExt as _;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::error::{Error, Result};

fn failed(step: &str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Network {
        step: step.to_owned(),
        source: source.into(),
    }
}

/// Runs `work` with a netlink handle opened in the calling thread's network namespace.
fn with_handle<T>(step: &str, work: impl AsyncFnOnce(Handle) -> Result<T>) -> Result<T> {
    block_on(step, async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|err| failed(step, err))?;
        tokio::spawn(connection);
        work(handle).await
    })
}

fn block_on<T>(step: &str, future: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|err| failed(step, err))?
        .block_on(future)
}

/// Runs `work` on a thread of its own (one that may leave the caller's namespaces for good);
/// a panic of it is answered as a failure of `step`.
fn on_own_thread<T: Send>(step: &str, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(work)
            .join()
            .unwrap_or_else(|_| Err(failed(step, "the thread panicked")))
    })
}

/// The index of link `name`, `None` when there is none.
async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>> {
    match handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(rtnetlink::Error::NetlinkError(message))
            if message.code.is_some_and(|c| c.get() == -libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(err) => Err(failed(&format!("look up the link {name}"), err)),
    }
}

/// Whether a netlink error says the thing is already there.
fn is_exists(err: &rtnetlink::Error) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(m) if m.code.is_some_and(|c| c.get() == -libc::EEXIST))
}

/// `Ok` for a request that failed because what it makes already exists.
fn existing_is_fine(
    result: std::result::Result<(), rtnetlink::Error>,
) -> std::result::Result<(), rtnetlink::Error> {
    match result {
        Err(err) if is_exists(&err) => Ok(()),
        other => other,
    }
}

/// Whether the host has a link named `name`.
pub(crate) fn link_exists(name: &str) -> Result<bool> {
    with_handle("look up the bridge", async |handle| {
        Ok(index_of(&handle, name).await?.is_some())
    })
}

/// Creates the bridge with the gateway address, up.
pub(crate) fn create_bridge(name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    let step = format!("create the bridge {name}");
    with_handle(&step, async |handle| {
        let fail = |err| failed(&step, err);
        // Another process may have made it first.
        existing_is_fine(
            handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await,
        )
        .map_err(fail)?;
        let index = index_of(&handle, name)
            .await?
            .ok_or_else(|| failed(&step, "the bridge vanished"))?;
        existing_is_fine(
            handle
                .address()
                .add(index, gateway.into(), prefix)
                .execute()
                .await,
        )
        .map_err(fail)?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(fail)
    })
}

/// Makes a network namespace bind-mounted on `path`, with `lo` up and `eth0` — the peer of
/// the veth `veth` on `bridge` — holding `address/prefix` and a default route via `gateway`.
pub(crate) fn create_namespace(
    path: &Path,
    bridge: &str,
    veth: &str,
    address: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<()> {
    let step = "create the network namespace";
    // On a thread of its own: the unshare below leaves the host's network namespace for good.
    on_own_thread(step, || {
        block_on(step, async {
            // Opened before the unshare: it stays in the host's namespace.
            let (connection, host, _) = rtnetlink::new_connection().map_err(|e| failed(step, e))?;
            tokio::spawn(connection);
            let bridge_index = index_of(&host, bridge)
                .await?
                .ok_or_else(|| failed(step, format!("the bridge {bridge} is missing")))?;

            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| failed(step, std::io::Error::from(e)))?;
            crate::state::write_new(path, b"", 0o600)?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| failed("bind-mount the network namespace", std::io::Error::from(e)))?;
            let namespace = fs_err::File::open(path).map_err(|e| failed(step, e))?;
            let (connection, inner, _) =
                rtnetlink::new_connection().map_err(|e| failed(step, e))?;
            tokio::spawn(connection);

            let step = "create the veth pair";
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name("eth0".to_owned())
                .setns_by_fd(namespace.as_raw_fd())
                .build();
            let pair = || {
                LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                    .name(veth.to_owned())
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.clone())))
                    .controller(bridge_index)
                    .up()
                    .build()
            };
            match host.link().add(pair()).execute().await {
                Ok(()) => {}
                // A pair of a dead attachment with this address, not yet gone with its namespace.
                Err(err) if is_exists(&err) => {
                    if let Some(index) = index_of(&host, veth).await? {
                        host.link()
                            .del(index)
                            .execute()
                            .await
                            .map_err(|e| failed(step, e))?;
                    }
                    host.link()
                        .add(pair())
                        .execute()
                        .await
                        .map_err(|e| failed(step, e))?;
                }
                Err(err) => return Err(failed(step, err)),
            }

            let step = "configure the container's network";
            let fail = |e| failed(step, e);
            let lo = index_of(&inner, "lo")
                .await?
                .ok_or_else(|| failed(step, "no loopback"))?;
            inner
                .link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .map_err(fail)?;
            let eth0 = index_of(&inner, "eth0")
                .await?
                .ok_or_else(|| failed(step, "eth0 did not arrive"))?;
            inner
                .address()
                .add(eth0, address.into(), prefix)
                .execute()
                .await
                .map_err(fail)?;
            inner
                .link()
                .set(LinkUnspec::new_with_index(eth0).up().build())
                .execute()
                .await
                .map_err(fail)?;
            inner
                .route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(gateway)
                        .build(),
                )
                .execute()
                .await
                .map_err(fail)?;
            Ok(())
        })
    })
}
