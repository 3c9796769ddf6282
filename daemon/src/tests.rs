//! The daemon served on a temporary socket and sent requests it must refuse: each is an error
//! for its caller, and the daemon keeps serving.

use std::path::Path;

use hyper_util::rt::TokioIo;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::pb::control::control_client::ControlClient;
use crate::pb::control::{ListWorkersRequest, PruneRequest, SolveRequest};
use crate::pb::gateway::llb_bridge_client::LlbBridgeClient;
use crate::{Address, Daemon, MAX_MESSAGE_SIZE};

async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_owned();
    for _ in 0..100 {
        let socket = socket.clone();
        let connected = Endpoint::from_static("http://kiln.sock")
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    tokio::net::UnixStream::connect(socket)
                        .await
                        .map(TokioIo::new)
                }
            }))
            .await;
        if let Ok(channel) = connected {
            return channel;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the daemon does not listen on {}", socket.display());
}

fn solve(def: Vec<Vec<u8>>) -> SolveRequest {
    SolveRequest {
        r#ref: "test".to_owned(),
        definition: Some(kiln_llb::pb::Definition {
            def,
            ..kiln_llb::pb::Definition::default()
        }),
        ..SolveRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_refused_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kiln.sock");
    let daemon = Daemon::open(dir.path().join("root"), kiln_cache::Config::default()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let address = Address::Unix(socket.clone());
    let server = tokio::spawn(async move {
        daemon
            .serve(&address, async {
                let _ = stopped.await;
            })
            .await
    });
    let channel = connect(&socket).await;
    let mut control = ControlClient::new(channel.clone()).max_encoding_message_size(usize::MAX);

    let garbage = control.solve(solve(vec![b"\xff\xff\xff".to_vec()])).await;
    let status = garbage.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("invalid Definition: "),
        "{status:?}"
    );

    // Without a Definition the solve waits for the build's gateway client to return one; a
    // caller that gives up ends it.
    let mut waiting = tonic::Request::new(SolveRequest::default());
    waiting.set_timeout(std::time::Duration::from_millis(200));
    let gave_up = control.solve(waiting).await.unwrap_err();
    assert_eq!(gave_up.code(), Code::Cancelled, "{gave_up:?}");

    let oversized = control
        .solve(solve(vec![vec![0; MAX_MESSAGE_SIZE + 1]]))
        .await
        .unwrap_err();
    assert_eq!(oversized.code(), Code::OutOfRange, "{oversized:?}");

    let filter = control
        .prune(PruneRequest {
            filter: vec!["label=x".to_owned()],
            ..PruneRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(filter.code(), Code::InvalidArgument);
    assert_eq!(
        filter.message(),
        "invalid prune request: unsupported filter \"label\": only until=DURATION and type=TYPE are supported"
    );

    // A gateway call that names no build.
    let mut gateway = LlbBridgeClient::new(channel);
    let unnamed = gateway
        .solve(crate::pb::gateway::SolveRequest::default())
        .await
        .unwrap_err();
    assert_eq!(unnamed.code(), Code::InvalidArgument);

    let workers = control
        .list_workers(ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(workers.record.len(), 1);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!socket.exists(), "the socket is left behind");
}
