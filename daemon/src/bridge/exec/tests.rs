//! The bridge served to a gRPC client in the test, as a frontend image would call it, with
//! kiln's runner behind it.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt as _;
use kiln_llb::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

use super::super::service::Bridge;
use super::exit_message;
use crate::pb::gateway::llb_bridge_client::LlbBridgeClient;
use crate::pb::gateway::llb_bridge_server::LlbBridgeServer;
use crate::pb::gateway::{
    ExecMessage, FdMessage, InitMessage, NewContainerRequest, ReadDirRequest, ReadFileRequest,
    ReleaseContainerRequest, SignalMessage, SolveRequest, StatFileRequest, exec_message, result,
};
use kiln_solver::ExecStatus;

pub(crate) const BUSYBOX: &str = "127.0.0.1:5000/library/busybox:latest";

/// A bridge over a fresh store in `root`, served on one in-memory connection.
fn serve(root: &std::path::Path) -> LlbBridgeClient<Channel> {
    let store = Arc::new(kiln_cache::Store::open(root).unwrap());
    let host = kiln_llb::Platform::host();
    let pull = kiln_cache::PullOptions {
        os: host.os.clone(),
        architecture: host.architecture.clone(),
        ..kiln_cache::PullOptions::default()
    };
    let session = Arc::new(kiln_solver::Session::new(
        kiln_solver::SessionConfig {
            store: store.clone(),
            executor: kiln_engine::executor(kiln_engine::RUNNER_STATE.into()),
            pull: pull.clone(),
            locals: HashMap::new(),
            local_dirs: None,
            secrets: HashMap::new(),
            ssh: HashMap::new(),
            no_cache: false,
            entitlements: kiln_solver::Entitlements::default(),
            cache_imports: Vec::new(),
        },
        None,
    ));
    let resolver = Arc::new(kiln_engine::StoreResolver::new(
        store,
        pull,
        tokio::runtime::Handle::current(),
    ));
    let bridge = Arc::new(Bridge::new(
        session,
        Arc::new(kiln_solver::NoReporter),
        HashMap::new(),
        host.to_pb(),
        0,
        None,
        resolver,
    ));
    let (client, server) = tokio::io::duplex(1 << 20);
    let incoming = futures::stream::once(async { Ok::<_, std::io::Error>(server) })
        .chain(futures::stream::pending());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LlbBridgeServer::new(bridge))
            .serve_with_incoming(incoming),
    );
    LlbBridgeClient::new(crate::session::one_connection(
        client,
        "http://bridge",
        "one connection",
    ))
}

/// What one process answered, in order.
#[derive(Debug, Default)]
pub(crate) struct Answered {
    pub(crate) started_first: bool,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) eofs: Vec<u32>,
    pub(crate) exit: Option<(u32, Option<String>)>,
    pub(crate) done_last: bool,
}

/// Reads the answers for `pid` until its `Done`.
pub(crate) async fn answers(stream: &mut tonic::Streaming<ExecMessage>, pid: &str) -> Answered {
    let mut answered = Answered::default();
    let mut first = true;
    while let Some(message) = stream.message().await.unwrap() {
        assert_eq!(message.process_id, pid);
        match message.input.unwrap() {
            exec_message::Input::Started(_) => answered.started_first = first,
            exec_message::Input::File(FdMessage { fd, eof, data }) => {
                assert!(answered.exit.is_none(), "output after the exit");
                if eof {
                    answered.eofs.push(fd);
                } else if fd == 1 {
                    answered.stdout.extend(data);
                } else {
                    assert_eq!(fd, 2);
                    answered.stderr.extend(data);
                }
            }
            exec_message::Input::Exit(exit) => {
                answered.exit = Some((exit.code, exit.error.map(|e| e.message)));
            }
            exec_message::Input::Done(_) => {
                answered.done_last = answered.exit.is_some();
                return answered;
            }
            other => panic!("unexpected answer {other:?}"),
        }
        first = false;
    }
    panic!("the stream ended before Done: {answered:?}");
}

pub(crate) fn init(container: &str, pid: &str, script: &str, fds: &[u32]) -> ExecMessage {
    ExecMessage {
        process_id: pid.to_owned(),
        input: Some(exec_message::Input::Init(InitMessage {
            container_id: container.to_owned(),
            meta: Some(pb::Meta {
                args: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
                env: vec!["PATH=/bin:/usr/bin".to_owned()],
                cwd: "/".to_owned(),
                ..pb::Meta::default()
            }),
            fds: fds.to_vec(),
            ..InitMessage::default()
        })),
    }
}

fn stdin(pid: &str, data: &[u8], eof: bool) -> ExecMessage {
    ExecMessage {
        process_id: pid.to_owned(),
        input: Some(exec_message::Input::File(FdMessage {
            fd: 0,
            eof,
            data: data.to_vec(),
        })),
    }
}

/// Whether containers of the test registry's images run here (else the test is skipped).
pub(crate) fn runs_containers() -> bool {
    if !kiln_testdata::is_root() {
        kiln_testdata::skip("containers need root (namespaces, overlay mounts)");
        return false;
    }
    if !kiln_testdata::registry_up() {
        kiln_testdata::skip("the test registry is not serving 127.0.0.1:5000");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frontend_runs_processes_in_a_container_of_its_results() {
    if !runs_containers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut client = serve(&dir.path().join("root"));

    let busybox = busybox_ref(&mut client).await;
    client
        .new_container(NewContainerRequest {
            container_id: "c1".to_owned(),
            mounts: vec![
                pb::Mount {
                    dest: "/".to_owned(),
                    result_id: busybox.id.clone(),
                    output: -1,
                    ..pb::Mount::default()
                },
                pb::Mount {
                    dest: "/scratch".to_owned(),
                    mount_type: pb::MountType::Tmpfs as i32,
                    output: -1,
                    ..pb::Mount::default()
                },
            ],
            network: pb::NetMode::None as i32,
            ..NewContainerRequest::default()
        })
        .await
        .unwrap();
    let again = client
        .new_container(NewContainerRequest {
            container_id: "c1".to_owned(),
            ..NewContainerRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    let (send, mut stream) = exec_stream(&mut client).await;

    // Input in two pieces, output on both streams, an exit code.
    send.send(init(
        "c1",
        "p1",
        "cat > /state; cat /state; mount | grep -c ' /scratch type tmpfs' >&2; exit 3",
        &[0, 1, 2],
    ))
    .unwrap();
    send.send(stdin("p1", b"hello ", false)).unwrap();
    send.send(stdin("p1", b"from stdin", true)).unwrap();
    let first = answers(&mut stream, "p1").await;
    assert!(first.started_first, "{first:?}");
    assert_eq!(String::from_utf8_lossy(&first.stdout), "hello from stdin");
    assert_eq!(String::from_utf8_lossy(&first.stderr), "1\n");
    assert_eq!(first.eofs, [1, 2]);
    assert_eq!(first.exit, Some((3, Some("exit code: 3".to_owned()))));
    assert!(first.done_last, "{first:?}");

    // The next process sees what the first one wrote; without fd 0 its input is empty.
    send.send(init("c1", "p2", "cat; cat /state", &[1, 2]))
        .unwrap();
    let second = answers(&mut stream, "p2").await;
    assert_eq!(String::from_utf8_lossy(&second.stdout), "hello from stdin");
    assert_eq!(second.exit, Some((0, None)));

    // A signal by name (the process is its namespace's PID 1: only a handled signal ends it).
    send.send(init(
        "c1",
        "p3",
        "trap 'exit 7' TERM; echo waiting; while :; do sleep 0.1; done",
        &[1, 2],
    ))
    .unwrap();
    let started = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        started.input,
        Some(exec_message::Input::Started(_))
    ));
    let waiting = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(&waiting.input, Some(exec_message::Input::File(f)) if f.data == b"waiting\n"),
        "{waiting:?}"
    );
    send.send(ExecMessage {
        process_id: "p3".to_owned(),
        input: Some(exec_message::Input::Signal(SignalMessage {
            name: "TERM".to_owned(),
        })),
    })
    .unwrap();
    let third = answers(&mut stream, "p3").await;
    assert_eq!(third.exit, Some((7, Some("exit code: 7".to_owned()))));

    // Released, the container is gone for the next process.
    client
        .release_container(ReleaseContainerRequest {
            container_id: "c1".to_owned(),
        })
        .await
        .unwrap();
    send.send(init("c1", "p4", "true", &[1, 2])).unwrap();
    let gone = stream.message().await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    assert_eq!(
        gone.message(),
        "container \"c1\" previously released or not created"
    );
}

/// A ref of busybox, lazily solved: a container of it solves it.
async fn busybox_ref(client: &mut LlbBridgeClient<Channel>) -> crate::pb::gateway::Ref {
    let definition = kiln_llb::image_for(BUSYBOX, kiln_llb::Platform::host().to_pb()).marshal();
    let solved = client
        .solve(SolveRequest {
            definition: Some(definition),
            allow_result_array_ref: true,
            ..SolveRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(result::Result::Ref(busybox)) = solved.result.and_then(|r| r.result) else {
        panic!("no ref");
    };
    busybox
}

/// Makes container `id` of busybox, with a tmpfs at `/scratch` (its mount 1).
async fn busybox_container(client: &mut LlbBridgeClient<Channel>, id: &str) {
    let busybox = busybox_ref(client).await;
    client
        .new_container(NewContainerRequest {
            container_id: id.to_owned(),
            mounts: vec![
                pb::Mount {
                    dest: "/".to_owned(),
                    result_id: busybox.id,
                    output: -1,
                    ..pb::Mount::default()
                },
                pb::Mount {
                    dest: "/scratch".to_owned(),
                    mount_type: pb::MountType::Tmpfs as i32,
                    output: -1,
                    ..pb::Mount::default()
                },
            ],
            network: pb::NetMode::None as i32,
            ..NewContainerRequest::default()
        })
        .await
        .unwrap();
}

/// `ReadFileContainer` of `path` in mount `index` of container `id`.
async fn read_in(
    client: &mut LlbBridgeClient<Channel>,
    id: &str,
    index: i32,
    path: &str,
) -> Result<Vec<u8>, tonic::Status> {
    client
        .read_file_container(ReadFileRequest {
            r#ref: id.to_owned(),
            file_path: path.to_owned(),
            mount_index: index,
            ..ReadFileRequest::default()
        })
        .await
        .map(|r| r.into_inner().data)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_s_files_are_read_with_its_processes_writes_and_never_outside_it() {
    if !runs_containers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A host file that a link in the container names, by its host path and climbing out.
    let host = tempfile::tempdir().unwrap();
    fs_err::write(host.path().join("secret"), "host secret\n").unwrap();
    let secret = host.path().join("secret");
    let secret = secret.to_str().unwrap();
    let mut client = serve(&dir.path().join("root"));
    busybox_container(&mut client, "c1").await;

    let (send, mut stream) = exec_stream(&mut client).await;
    let script = format!(
        "mkdir -p /made && printf 'written by the process' > /made/file && \
         ln -s /made/file /made/inside && ln -s {secret} /made/absolute && \
         ln -s ../../../../../../../../..{secret} /made/climbing && \
         echo tmp > /scratch/file"
    );
    send.send(init("c1", "p1", &script, &[1, 2])).unwrap();
    let ran = answers(&mut stream, "p1").await;
    assert_eq!(ran.exit, Some((0, None)), "{ran:?}");

    assert_eq!(
        read_in(&mut client, "c1", 0, "/made/file").await.unwrap(),
        b"written by the process"
    );
    assert_eq!(
        read_in(&mut client, "c1", 0, "made/inside").await.unwrap(),
        b"written by the process"
    );
    // The image's own files are there too.
    assert!(
        !read_in(&mut client, "c1", 0, "/etc/passwd")
            .await
            .unwrap()
            .is_empty()
    );
    // Links resolve inside the container: the host file is not there.
    for link in ["/made/absolute", "/made/climbing"] {
        let escaped = read_in(&mut client, "c1", 0, link).await.unwrap_err();
        assert_eq!(escaped.code(), Code::NotFound, "{link}: {escaped:?}");
        assert!(
            escaped.message().ends_with("no such file or directory"),
            "{escaped:?}"
        );
    }
    let listed = client
        .read_dir_container(ReadDirRequest {
            r#ref: "c1".to_owned(),
            dir_path: "/made".to_owned(),
            ..ReadDirRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["absolute", "climbing", "file", "inside"]);
    let stat = client
        .stat_file_container(StatFileRequest {
            r#ref: "c1".to_owned(),
            path: "/made/file".to_owned(),
            ..StatFileRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .stat
        .unwrap();
    assert_eq!(stat.size, 22);

    // A tmpfs is only in the processes' view; a mount that is not there is refused.
    let tmpfs = read_in(&mut client, "c1", 1, "/file").await.unwrap_err();
    assert_eq!(
        tmpfs.message(),
        "mount 1 of the container is a tmpfs: only its processes see its files"
    );
    let missing = read_in(&mut client, "c1", 2, "/file").await.unwrap_err();
    assert_eq!(missing.message(), "the container has no mount 2");

    // Released, the container's files are gone.
    client
        .release_container(ReleaseContainerRequest {
            container_id: "c1".to_owned(),
        })
        .await
        .unwrap();
    let gone = read_in(&mut client, "c1", 0, "/made/file")
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
}

/// Opens an `ExecProcess` stream: its sender and its answers.
async fn exec_stream(
    client: &mut LlbBridgeClient<Channel>,
) -> (
    mpsc::UnboundedSender<ExecMessage>,
    tonic::Streaming<ExecMessage>,
) {
    let (send, outgoing) = mpsc::unbounded_channel();
    let stream = client
        .exec_process(UnboundedReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    (send, stream)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_run_at_once_in_one_container_and_see_each_other_s_files() {
    if !runs_containers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut client = serve(&dir.path().join("root"));
    busybox_container(&mut client, "c1").await;

    // The first waits for a file that only the second one writes.
    let (first, mut first_answers) = exec_stream(&mut client).await;
    first
        .send(init(
            "c1",
            "waiter",
            "i=0; while [ ! -e /shared ]; do i=$((i+1)); [ $i -gt 300 ] && exit 9; sleep 0.1; done; \
             cat /shared",
            &[1, 2],
        ))
        .unwrap();
    let started = first_answers.message().await.unwrap().unwrap();
    assert!(
        matches!(started.input, Some(exec_message::Input::Started(_))),
        "{started:?}"
    );
    let (second, mut second_answers) = exec_stream(&mut client).await;
    second
        .send(init(
            "c1",
            "writer",
            "echo written by the second > /shared.tmp && mv /shared.tmp /shared && echo wrote",
            &[1, 2],
        ))
        .unwrap();
    let wrote = answers(&mut second_answers, "writer").await;
    assert_eq!(
        String::from_utf8_lossy(&wrote.stdout),
        "wrote\n",
        "{wrote:?}"
    );
    assert_eq!(wrote.exit, Some((0, None)), "{wrote:?}");
    let waited = answers(&mut first_answers, "waiter").await;
    assert_eq!(
        String::from_utf8_lossy(&waited.stdout),
        "written by the second\n",
        "{waited:?}"
    );
    assert_eq!(waited.exit, Some((0, None)), "{waited:?}");

    // Both ended, the next process starts the container anew, with their files.
    let (third, mut third_answers) = exec_stream(&mut client).await;
    third
        .send(init("c1", "after", "cat /shared", &[1, 2]))
        .unwrap();
    let after = answers(&mut third_answers, "after").await;
    assert_eq!(
        String::from_utf8_lossy(&after.stdout),
        "written by the second\n"
    );
}

#[test]
fn exits_are_told_as_buildkit_tells_them() {
    let ok = exit_message(Ok(ExecStatus::Code(0)));
    assert_eq!((ok.code, ok.error), (0, None));
    let failed = exit_message(Ok(ExecStatus::Code(3)));
    assert_eq!(failed.code, 3);
    assert_eq!(failed.error.unwrap().message, "exit code: 3");
    let killed = exit_message(Ok(ExecStatus::Signal(9)));
    assert_eq!(killed.code, 137);
    assert_eq!(killed.error.unwrap().message, "exit code: 137");
    let refused = exit_message(Err("secret s not found".into()));
    assert_eq!(refused.code, 255);
    assert_eq!(refused.error.unwrap().message, "secret s not found");
}

/// Runs `git` in `dir`, which must succeed.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Kills a child process when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn git_and_http_sources_resolve_to_their_checksums() {
    use crate::pb::gateway::ResolveSourceMetaRequest;

    let dir = tempfile::tempdir().unwrap();
    let mut client = serve(&dir.path().join("root"));
    let resolve = |identifier: String| ResolveSourceMetaRequest {
        source: Some(pb::SourceOp {
            identifier,
            ..pb::SourceOp::default()
        }),
        ..ResolveSourceMetaRequest::default()
    };

    // A repository with a branch and an annotated tag, served by `git daemon`.
    let repo = dir.path().join("repos/project");
    fs_err::create_dir_all(&repo).unwrap();
    fs_err::write(repo.join("a"), "one\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "one"]);
    git(&repo, &["tag", "-a", "-m", "release", "v1"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    let tag = git(&repo, &["rev-parse", "v1"]);
    assert_ne!(commit, tag);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = dir.path().join("repos");
    let _daemon = Killed(
        std::process::Command::new("git")
            .arg("daemon")
            .arg(format!("--base-path={}", base.display()))
            .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(&base)
            // Its per-connection children hold no pipe of the test's.
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let url = format!("git://127.0.0.1:{port}/project");
    let branch = client
        .resolve_source_meta(resolve(url.clone()))
        .await
        .unwrap()
        .into_inner()
        .git
        .unwrap();
    assert_eq!(
        (
            branch.r#ref.as_str(),
            branch.checksum.as_str(),
            branch.commit_checksum.as_str()
        ),
        ("refs/heads/main", commit.as_str(), "")
    );
    let tagged = client
        .resolve_source_meta(resolve(format!("{url}#v1")))
        .await
        .unwrap()
        .into_inner()
        .git
        .unwrap();
    assert_eq!(
        (
            tagged.r#ref.as_str(),
            tagged.checksum.as_str(),
            tagged.commit_checksum.as_str()
        ),
        ("refs/tags/v1", tag.as_str(), commit.as_str())
    );
    let missing = client
        .resolve_source_meta(resolve(format!("{url}#nope")))
        .await
        .unwrap_err();
    assert_eq!(
        missing.message(),
        format!("git ref \"nope\" not found in {url}")
    );

    // A file over HTTP: its digest, name and modification time.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0; 4096];
            let _ = stream.read(&mut request).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\
                      Last-Modified: Tue, 15 Nov 1994 08:12:31 GMT\r\n\
                      Connection: close\r\n\r\nhello\n",
                )
                .await;
        }
    });
    let http = client
        .resolve_source_meta(resolve(format!("http://{address}/files/hello.txt")))
        .await
        .unwrap()
        .into_inner()
        .http
        .unwrap();
    assert_eq!(
        http.checksum,
        "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    );
    assert_eq!(http.filename, "hello.txt");
    assert_eq!(http.last_modified.map(|t| t.seconds), Some(784_887_151));
}
