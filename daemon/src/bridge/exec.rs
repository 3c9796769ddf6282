//! A frontend's own containers (`NewContainer`, `ReleaseContainer`) and the processes it runs
//! in them (`ExecProcess`), as BuildKit serves them: mounts of the frontend's results, and
//! for each process a stream that starts it (`Init`), carries its input (`File` on fd 0) and
//! its signals and terminal sizes one way, and answers `Started`, its output (`File` on fds 1
//! and 2, each ended by `EOF`), `Exit` with its code and, last, `Done`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use futures::Stream;
use kiln_solver::{Container, ExecControl, ExecIo, ExecStatus, Ref};
use tokio::io::AsyncWriteExt as _;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::service::Bridge;
use crate::pb::gateway::{
    DoneMessage, ExecMessage, ExitMessage, FdMessage, NewContainerRequest, StartedMessage,
    exec_message,
};
use crate::pb::google::rpc::Status as RpcStatus;

/// At most this many containers per frontend run.
pub(super) const MAX_CONTAINERS: usize = 64;

/// At most this many processes per `ExecProcess` stream.
const MAX_PROCESSES: usize = 64;

/// BuildKit's exit code of a process that did not end by itself (`UnknownExitStatus`).
const UNKNOWN_EXIT: u32 = 255;

/// How many output messages wait for the client before the process waits for it.
const OUTPUT_QUEUE: usize = 64;

/// The answer stream of `ExecProcess`.
pub(crate) type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecMessage, Status>> + Send>>;

/// The containers of one frontend run, by the ids the frontend gave them.
#[derive(Default)]
pub(super) struct Containers(Mutex<HashMap<String, Arc<Container>>>);

impl Containers {
    pub(super) fn get(&self, id: &str) -> Result<Arc<Container>, Status> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "container {id:?} previously released or not created"
                ))
            })
    }

    fn check_new(&self, id: &str) -> Result<(), Status> {
        let containers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if containers.contains_key(id) {
            return Err(Status::already_exists(format!(
                "container {id:?} exists already"
            )));
        }
        if containers.len() >= MAX_CONTAINERS {
            return Err(Status::resource_exhausted(format!(
                "a frontend may hold at most {MAX_CONTAINERS} containers"
            )));
        }
        Ok(())
    }

    fn insert(&self, id: String, container: Container) -> Result<(), Status> {
        self.check_new(&id)?;
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::new(container));
        Ok(())
    }

    /// Forgets the container `id`: its file system goes when its last process has ended.
    pub(super) fn release(&self, id: &str) -> Result<(), Status> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
            .map(drop)
            .ok_or_else(|| Status::not_found(format!("container {id:?} not found")))
    }
}

/// `NewContainer`: the mounts' results are solved (a mount without a result shows the empty
/// file system), then prepared as an exec step's.
pub(super) async fn new_container(
    bridge: &Bridge,
    request: NewContainerRequest,
) -> Result<(), Status> {
    let id = request.container_id;
    if id.is_empty() {
        return Err(Status::invalid_argument("ContainerID is required"));
    }
    bridge.containers.check_new(&id)?;
    let mut mounts = Vec::with_capacity(request.mounts.len());
    for mount in request.mounts {
        let result = if mount.result_id.is_empty() {
            Ref::scratch()
        } else {
            bridge.solved_ref(&mount.result_id).await?
        };
        mounts.push((mount, result));
    }
    let container = bridge
        .session
        .new_container(
            mounts,
            request.network,
            request.hostname,
            request.extra_hosts,
        )
        .await
        .map_err(|e| Status::unknown(kiln_llb::error_chain(&e)))?;
    bridge.containers.insert(id, container)
}

/// The input side of a running process.
struct Running {
    /// Its standard input; `None` once closed (or never opened).
    stdin: Option<pipe::Sender>,
    control: mpsc::UnboundedSender<ExecControl>,
}

/// `ExecProcess`: serves one stream of process messages until the client ends it and its
/// processes have ended (or the client goes away, which kills them).
pub(super) fn exec_process(bridge: Arc<Bridge>, incoming: Streaming<ExecMessage>) -> ExecStream {
    let (out, answers) = mpsc::channel(OUTPUT_QUEUE);
    tokio::spawn(async move {
        if let Err(status) = serve(&bridge, incoming, &out).await {
            let _ = out.send(Err(status)).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(answers))
}

type Answers = mpsc::Sender<Result<ExecMessage, Status>>;

fn message(pid: &str, input: exec_message::Input) -> Result<ExecMessage, Status> {
    Ok(ExecMessage {
        process_id: pid.to_owned(),
        input: Some(input),
    })
}

async fn serve(
    bridge: &Bridge,
    mut incoming: Streaming<ExecMessage>,
    out: &Answers,
) -> Result<(), Status> {
    let mut processes: HashMap<String, Running> = HashMap::new();
    while let Some(ExecMessage { process_id, input }) = incoming.message().await? {
        if process_id.is_empty() {
            return Err(Status::invalid_argument("ProcessID required"));
        }
        let Some(input) = input else {
            continue;
        };
        let running = || Status::not_found(format!("IO for process {process_id:?} not found"));
        match input {
            exec_message::Input::Init(init) => {
                if processes.contains_key(&process_id) {
                    return Err(Status::already_exists(format!(
                        "process {process_id} already exists"
                    )));
                }
                if processes.len() >= MAX_PROCESSES {
                    return Err(Status::resource_exhausted(format!(
                        "at most {MAX_PROCESSES} processes per stream"
                    )));
                }
                let container = bridge.containers.get(&init.container_id)?;
                let started = start(container, process_id.clone(), init, out.clone())?;
                processes.insert(process_id, started);
            }
            exec_message::Input::File(file) => {
                let process = processes.get_mut(&process_id).ok_or_else(running)?;
                if file.fd != 0 {
                    return Err(Status::out_of_range(format!(
                        "fd {} unavailable to write",
                        file.fd
                    )));
                }
                let Some(stdin) = process.stdin.as_mut() else {
                    return Err(Status::out_of_range("fd 0 unavailable to write"));
                };
                // A process that stopped reading (it exited) closed its input.
                if !file.data.is_empty() && stdin.write_all(&file.data).await.is_err() {
                    process.stdin = None;
                }
                if file.eof {
                    process.stdin = None;
                }
            }
            exec_message::Input::Resize(size) => {
                let process = processes.get(&process_id).ok_or_else(running)?;
                let clamp = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
                let _ = process.control.send(ExecControl::Resize {
                    rows: clamp(size.rows),
                    cols: clamp(size.cols),
                });
            }
            exec_message::Input::Signal(signal) => {
                let process = processes.get(&process_id).ok_or_else(running)?;
                let number = kiln_runner::parse_signal(&signal.name).map_err(|_| {
                    Status::invalid_argument(format!("Unknown signal {}", signal.name))
                })?;
                let _ = process.control.send(ExecControl::Signal(number as i32));
            }
            exec_message::Input::Started(_)
            | exec_message::Input::Exit(_)
            | exec_message::Input::Done(_) => {
                return Err(Status::invalid_argument(format!(
                    "process {process_id}: a client sends Init, File, Resize and Signal only"
                )));
            }
        }
    }
    // The client sent all it will: the processes' inputs close, and the stream ends when
    // they have ended.
    Ok(())
}

/// Starts the process `init` asks for in `container`; its answers go to `out`.
fn start(
    container: Arc<Container>,
    pid: String,
    init: crate::pb::gateway::InitMessage,
    out: Answers,
) -> Result<Running, Status> {
    let wanted = init.fds.clone();
    let wants = |fd: u32| wanted.contains(&fd);
    let io_error = |e: std::io::Error| Status::internal(format!("process {pid}: {e}"));
    let (stdin_read, stdin) = if wants(0) {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_error(e.into()))?;
        let write = pipe::Sender::from_owned_fd(write).map_err(io_error)?;
        (Some(read), Some(write))
    } else {
        (None, None)
    };
    let (control, controls) = mpsc::unbounded_channel();
    let tty = init.tty;
    let io = ExecIo {
        stdin: stdin_read,
        tty: tty.then_some((24, 80)),
        control: controls,
        started: None,
    };
    // The output as it comes, to the fds the client asked for (a terminal's is all fd 1).
    let fds: Vec<u32> = [1, 2].into_iter().filter(|fd| wants(*fd)).collect();
    let sink_out = out.clone();
    let sink_pid = pid.clone();
    let sink_fds = fds.clone();
    let output: kiln_solver::OutputSink = Arc::new(move |stream, data| {
        let fd = u32::from(stream);
        if !sink_fds.contains(&fd) {
            return;
        }
        let file = exec_message::Input::File(FdMessage {
            fd,
            eof: false,
            data: data.to_vec(),
        });
        // Called on the runner's thread: waiting here slows the process to the client's pace.
        let _ = sink_out.blocking_send(message(&sink_pid, file));
    });
    let meta = init.meta.unwrap_or_default();
    let (secretenv, security) = (init.secretenv, init.security);
    tokio::spawn(async move {
        if out
            .send(message(
                &pid,
                exec_message::Input::Started(StartedMessage {}),
            ))
            .await
            .is_err()
        {
            return;
        }
        // A client that goes away kills the process (dropping the run kills it).
        let ran = tokio::select! {
            ran = container.run(meta, &secretenv, security, io, output) => ran,
            () = out.closed() => return,
        };
        for fd in &fds {
            let eof = exec_message::Input::File(FdMessage {
                fd: *fd,
                eof: true,
                data: Vec::new(),
            });
            let _ = out.send(message(&pid, eof)).await;
        }
        let exit = exit_message(ran);
        let _ = out
            .send(message(&pid, exec_message::Input::Exit(exit)))
            .await;
        let _ = out
            .send(message(&pid, exec_message::Input::Done(DoneMessage {})))
            .await;
    });
    Ok(Running { stdin, control })
}

/// How a process ended, as BuildKit tells it: its exit code (128 + the signal that killed
/// it), with an error unless it was 0; a process that could not run has code 255 and the
/// error.
fn exit_message(ran: Result<ExecStatus, kiln_solver::OpError>) -> ExitMessage {
    let failed = |code: u32, message: String| ExitMessage {
        code,
        error: Some(RpcStatus {
            code: tonic::Code::Unknown as i32,
            message,
            details: Vec::new(),
        }),
    };
    match ran {
        Ok(ExecStatus::Code(0)) => ExitMessage {
            code: 0,
            error: None,
        },
        Ok(ExecStatus::Code(code)) => {
            let code = u32::try_from(code).unwrap_or(UNKNOWN_EXIT);
            failed(code, format!("exit code: {code}"))
        }
        Ok(ExecStatus::Signal(signal)) => {
            let code = 128 + u32::try_from(signal).unwrap_or(0);
            failed(code, format!("exit code: {code}"))
        }
        Err(error) => failed(UNKNOWN_EXIT, kiln_llb::error_chain(error.as_ref())),
    }
}

#[cfg(test)]
pub(crate) mod tests;
