//! The daemon served on a temporary socket and sent requests it must refuse: each is an error
//! for its caller, and the daemon keeps serving.

use std::path::Path;

use tonic::Code;
use tonic::transport::Channel;

use crate::pb::control::control_client::ControlClient;
use crate::pb::control::{ListWorkersRequest, PruneRequest, SolveRequest};
use crate::pb::gateway::llb_bridge_client::LlbBridgeClient;
use crate::{Address, Daemon, MAX_MESSAGE_SIZE};

pub(crate) async fn connect(socket: &Path) -> Channel {
    for _ in 0..100 {
        if let Ok(channel) = crate::client::connect_unix(socket).await {
            return channel;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the daemon does not listen on {}", socket.display());
}

/// A daemon over a store in `dir`, serving on `dir/kiln.sock` until told to stop.
pub(crate) fn serve(
    dir: &Path,
    config: kiln_cache::Config,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), crate::Error>>,
) {
    let daemon = Daemon::open(dir.join("root"), config).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let address = Address::Unix(dir.join("kiln.sock"));
    let server = tokio::spawn(async move {
        daemon
            .serve(&address, async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, server)
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

/// Sends bytes as they are and takes an answer's bytes: a client that may send anything.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let len = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, len).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

/// The unary methods of the control and gateway services, by path.
const UNARY_METHODS: &[&str] = &[
    "/moby.buildkit.v1.Control/DiskUsage",
    "/moby.buildkit.v1.Control/Solve",
    "/moby.buildkit.v1.Control/ListWorkers",
    "/moby.buildkit.v1.Control/Info",
    "/moby.buildkit.v1.frontend.LLBBridge/ResolveImageConfig",
    "/moby.buildkit.v1.frontend.LLBBridge/ResolveSourceMeta",
    "/moby.buildkit.v1.frontend.LLBBridge/Solve",
    "/moby.buildkit.v1.frontend.LLBBridge/ReadFile",
    "/moby.buildkit.v1.frontend.LLBBridge/ReadDir",
    "/moby.buildkit.v1.frontend.LLBBridge/StatFile",
    "/moby.buildkit.v1.frontend.LLBBridge/Ping",
    "/moby.buildkit.v1.frontend.LLBBridge/Return",
    "/moby.buildkit.v1.frontend.LLBBridge/Inputs",
    "/moby.buildkit.v1.frontend.LLBBridge/Warn",
];

/// Random request bodies to every unary method, then solves of random Definitions (made to
/// pass the loader's checks, so they reach planning and running: sources are pulled from the
/// test registry when it is up, exec steps run), for `KILN_DAEMON_FUZZ_SECONDS` (20 by
/// default; the 10-minute run is `KILN_DAEMON_FUZZ_SECONDS=600`). The daemon answers
/// `ListWorkers` after every request, nothing panics, and it stops cleanly at the end.
#[tokio::test(flavor = "multi_thread")]
async fn random_requests_and_definitions_never_take_the_daemon_down() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let seconds: u64 = std::env::var("KILN_DAEMON_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KILN_DAEMON_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kiln.sock");
    // docker.io comes from the test registry, so image sources resolve without a network.
    let config = kiln_cache::Config::parse(
        "[registry.\"docker.io\"]\nmirrors = [\"127.0.0.1:5000\"]\n\
         [registry.\"127.0.0.1:5000\"]\nhttp = true\n",
        Path::new("kiln.toml"),
    )
    .unwrap();
    let (stop, server) = serve(dir.path(), config);
    let channel = connect(&socket).await;
    let mut control = ControlClient::new(channel.clone());
    let mut raw = tonic::client::Grpc::new(channel.clone());
    let mut rng = fastrand::Rng::with_seed(seed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let (mut raw_requests, mut solves, mut solved) = (0, 0, 0);
    while std::time::Instant::now() < deadline {
        if rng.bool() {
            // Any bytes, to any method.
            let method = UNARY_METHODS[rng.usize(..UNARY_METHODS.len())];
            let body: Vec<u8> = (0..rng.usize(0..512)).map(|_| rng.u8(..)).collect();
            raw.ready().await.unwrap();
            let mut request = tonic::Request::new(body);
            request.set_timeout(std::time::Duration::from_secs(10));
            let _ = raw
                .unary(
                    request,
                    http::uri::PathAndQuery::from_static(method),
                    RawCodec,
                )
                .await;
            raw_requests += 1;
        } else {
            // A Definition that passes the loader's checks, solved and exported.
            let data: Vec<u8> = (0..rng.usize(0..400)).map(|_| rng.u8(..)).collect();
            let mut request = SolveRequest {
                r#ref: format!("fuzz-{solves}"),
                definition: Some(kiln_solver::testing::arbitrary_definition(&data)),
                ..SolveRequest::default()
            };
            if rng.bool() {
                let kinds = ["image", "oci", "local", "tar", "docker", "bogus", ""];
                request.exporters.push(crate::pb::control::Exporter {
                    r#type: kinds[rng.usize(..kinds.len())].to_owned(),
                    attrs: [("name".to_owned(), "127.0.0.1:5000/fuzz/x:1".to_owned())].into(),
                });
            }
            let mut request = tonic::Request::new(request);
            request.set_timeout(std::time::Duration::from_secs(5));
            if control.solve(request).await.is_ok() {
                solved += 1;
            }
            solves += 1;
        }
        let mut alive = tonic::Request::new(ListWorkersRequest::default());
        alive.set_timeout(std::time::Duration::from_secs(10));
        let workers = control.list_workers(alive).await;
        assert!(
            workers.is_ok(),
            "the daemon stopped answering after {raw_requests} raw requests and {solves} solves \
             (seed {seed}): {workers:?}"
        );
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the daemon panicked");
    assert!(!server.is_finished(), "the server stopped by itself");
    #[expect(
        clippy::print_stderr,
        reason = "how much was tried, for a long run's report"
    )]
    {
        eprintln!(
            "{raw_requests} raw requests, {solves} solves ({solved} succeeded) in {seconds} s"
        );
    }
    assert!(raw_requests > 0 && solves > 0);
    // Without open connections the daemon stops at once.
    drop((control, raw, channel));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
