//! The control socket's `LLBBridge` driven as buildctl drives it: a gateway client of its own
//! build, each call naming the build in `buildkit-controlapi-buildid`, served by the same
//! bridge as a frontend image.

use std::path::Path;

use kiln_llb::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;

use super::BUILD_ID;
use crate::bridge::exec_tests::{BUSYBOX, answers, init, runs_containers};
use crate::pb::control::SolveRequest as ControlSolveRequest;
use crate::pb::control::control_client::ControlClient;
use crate::pb::gateway::llb_bridge_client::LlbBridgeClient;
use crate::pb::gateway::{
    NewContainerRequest, PingRequest, ReadDirRequest, ReadFileRequest, ReleaseContainerRequest,
    ResolveImageConfigRequest, ReturnRequest, SolveRequest, result,
};

/// `message` as a call of build `build`.
fn of<T>(build: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(BUILD_ID, build.parse().unwrap());
    request
}

/// Solves `definition` lazily in build `build` and gives its ref.
async fn solve(
    gateway: &mut LlbBridgeClient<tonic::transport::Channel>,
    build: &str,
    definition: pb::Definition,
) -> String {
    let solved = gateway
        .solve(of(
            build,
            SolveRequest {
                definition: Some(definition),
                allow_result_array_ref: true,
                ..SolveRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    match solved.result.and_then(|r| r.result) {
        Some(result::Result::Ref(reference)) => reference.id,
        other => panic!("no ref: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_client_of_the_control_socket_reads_files_resolves_images_and_runs_processes() {
    if !runs_containers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kiln.sock");
    let config = kiln_cache::Config::parse(
        "[registry.\"127.0.0.1:5000\"]\nhttp = true\n",
        Path::new("kiln.toml"),
    )
    .unwrap();
    let (stop, server) = crate::tests::serve(dir.path(), config);
    let channel = crate::tests::connect(&socket).await;
    let mut gateway = LlbBridgeClient::new(channel.clone());

    // A build no Control.Solve started is refused, once its wait is over.
    let unknown = gateway
        .ping(of("no-such-build", PingRequest {}))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(
        unknown
            .message()
            .starts_with("no build \"no-such-build\" runs on this daemon"),
        "{unknown:?}"
    );

    // The build's Control.Solve, without a Definition: it exports what its client returns,
    // here as an image in the store.
    let mut control = ControlClient::new(channel.clone());
    let build = tokio::spawn(async move {
        control
            .solve(ControlSolveRequest {
                r#ref: "gw-1".to_owned(),
                exporters: vec![crate::pb::control::Exporter {
                    r#type: "image".to_owned(),
                    attrs: [("name".to_owned(), "kiln-test/gateway:1".to_owned())].into(),
                }],
                ..ControlSolveRequest::default()
            })
            .await
    });

    let files =
        kiln_llb::scratch()
            .file(
                kiln_llb::FileAction::mkfile("/hello", 0o644, b"hello from the gateway\n")
                    .then_mkdir("/sub", 0o755, kiln_llb::MkdirOptions::default()),
            )
            .marshal();
    let files = solve(&mut gateway, "gw-1", files).await;
    let read = gateway
        .read_file(of(
            "gw-1",
            ReadFileRequest {
                r#ref: files.clone(),
                file_path: "/hello".to_owned(),
                ..ReadFileRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.data, b"hello from the gateway\n");
    let listed = gateway
        .read_dir(of(
            "gw-1",
            ReadDirRequest {
                r#ref: files.clone(),
                dir_path: "/".to_owned(),
                ..ReadDirRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["hello", "sub"]);

    let resolved = gateway
        .resolve_image_config(of(
            "gw-1",
            ResolveImageConfigRequest {
                r#ref: BUSYBOX.to_owned(),
                ..ResolveImageConfigRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.digest, kiln_testdata::BUSYBOX_MANIFEST_DIGEST);

    // A process in a container of a result, its output read back.
    let busybox = kiln_llb::image_for(BUSYBOX, kiln_llb::Platform::host().to_pb()).marshal();
    let busybox = solve(&mut gateway, "gw-1", busybox).await;
    gateway
        .new_container(of(
            "gw-1",
            NewContainerRequest {
                container_id: "c1".to_owned(),
                mounts: vec![pb::Mount {
                    dest: "/".to_owned(),
                    result_id: busybox,
                    output: -1,
                    ..pb::Mount::default()
                }],
                network: pb::NetMode::None as i32,
                ..NewContainerRequest::default()
            },
        ))
        .await
        .unwrap();
    let (send, outgoing) = mpsc::unbounded_channel();
    let mut stream = gateway
        .exec_process(of("gw-1", UnboundedReceiverStream::new(outgoing)))
        .await
        .unwrap()
        .into_inner();
    send.send(init(
        "c1",
        "p1",
        "echo ran in $(hostname -s 2>/dev/null || echo it)",
        &[1, 2],
    ))
    .unwrap();
    let ran = answers(&mut stream, "p1").await;
    assert!(
        String::from_utf8_lossy(&ran.stdout).starts_with("ran in "),
        "{ran:?}"
    );
    assert_eq!(ran.exit, Some((0, None)));
    gateway
        .release_container(of(
            "gw-1",
            ReleaseContainerRequest {
                container_id: "c1".to_owned(),
            },
        ))
        .await
        .unwrap();

    // Returned, the build's Control.Solve solves and exports it, with the image config
    // the client returned beside it.
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Env":["FROM_THE_CLIENT=1"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    gateway
        .r#return(of(
            "gw-1",
            ReturnRequest {
                result: Some(crate::pb::gateway::Result {
                    result: Some(result::Result::Ref(crate::pb::gateway::Ref {
                        id: files,
                        def: None,
                    })),
                    metadata: [(crate::bridge::IMAGE_CONFIG_KEY.to_owned(), config.to_vec())]
                        .into(),
                }),
                ..ReturnRequest::default()
            },
        ))
        .await
        .unwrap();
    let response = build.await.unwrap().unwrap().into_inner();
    let digest: kiln_cache::Digest = response.exporter_response["containerimage.config.digest"]
        .parse()
        .unwrap();
    let store = kiln_cache::Store::open(dir.path().join("root")).unwrap();
    let stored: serde_json::Value =
        serde_json::from_slice(&fs_err::read(store.blob_path(&digest)).unwrap()).unwrap();
    assert_eq!(
        stored["config"]["Env"],
        serde_json::json!(["FROM_THE_CLIENT=1"]),
        "{stored:#}"
    );

    // Its build ended, the bridge is gone.
    let ended = gateway.ping(of("gw-1", PingRequest {})).await.unwrap_err();
    assert_eq!(ended.code(), Code::NotFound, "{ended:?}");

    drop((gateway, channel));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
