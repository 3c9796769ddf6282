//! `kiln run`: a command in a new container from a stored (or pulled) image, with docker's
//! semantics for the image config, overrides and exit codes (125 for kiln's own errors,
//! 128+N when the process is killed by signal N).
//!
//! Signals: kiln blocks the ones it forwards before it starts any thread, and one thread
//! waits for them. Until the container starts, SIGINT, SIGTERM (and the other forwarded ones)
//! abort kiln promptly, a pull included, with 128+N as docker's CLI does (130 for Ctrl-C);
//! once the container runs, they go on to its process.

use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context as _, bail};
use kiln_cache::{ImageRecord, PullOptions, Store};
use kiln_runner::{
    ExitStatus, Handle, ImageConfig, Mount, NetworkMode, Rootfs, RunOverrides, Runner, Signal,
    Stdio, TerminalSize, TmpfsOptions,
};
use nix::sys::signal::SigSet;
use nix::sys::termios::{self, SetArg, Termios};

use crate::args::RunArgs;
use crate::config::Config;

/// docker's exit code for errors of the runtime itself.
const EXIT_KILN_ERROR: u8 = 125;

/// Runs the container; a configuration that failed to load is reported as kiln's own error.
pub(crate) fn run(root: &Path, config: anyhow::Result<Config>, args: &RunArgs) -> ExitCode {
    match config.and_then(|config| run_container(root, &config, args)) {
        Ok(code) => code,
        Err(err) if err.downcast_ref::<Interrupted>().is_some() => {
            let signal = err.downcast_ref::<Interrupted>().map_or(0, |i| i.0 as i32);
            tracing::debug!(signal, "interrupted before the container started");
            ExitCode::from(128 + u8::try_from(signal).unwrap_or(0))
        }
        Err(err) => {
            #[expect(clippy::print_stderr, reason = "the binary reports its errors")]
            {
                eprintln!("kiln: {err}");
                for cause in err.chain().skip(1) {
                    eprintln!("  Caused by: {cause}");
                }
            }
            ExitCode::from(EXIT_KILN_ERROR)
        }
    }
}

/// Parses `HOST:CONTAINER[:ro|rw]`.
fn volume(spec: &str) -> anyhow::Result<Mount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, readonly) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        _ => bail!("invalid volume specification: '{spec}'"),
    };
    if !source.starts_with('/') || !target.starts_with('/') {
        bail!(
            "invalid volume specification: '{spec}': both paths must be absolute (HOST:CONTAINER[:ro])"
        );
    }
    Ok(Mount::Bind {
        source: fs_err::canonicalize(source)
            .with_context(|| format!("invalid volume specification: '{spec}'"))?,
        target: target.into(),
        readonly,
    })
}

/// Parses `PATH[:OPTIONS]` as `docker run --tmpfs` does: options as `mount -o` takes them
/// (`size=64m,mode=1777,exec`), over Docker's defaults `noexec,nosuid,nodev`.
fn tmpfs(spec: &str) -> anyhow::Result<Mount> {
    let (target, options) = spec.split_once(':').unwrap_or((spec, ""));
    if !target.starts_with('/') {
        bail!("invalid tmpfs specification: '{spec}': the path must be absolute");
    }
    Ok(Mount::Tmpfs {
        target: target.into(),
        options: TmpfsOptions::docker(options)
            .with_context(|| format!("invalid tmpfs specification: '{spec}'"))?,
    })
}

/// The value of `-m/--memory`: a size as docker takes it (`512`, `64m`, `1.5g`, `1GiB`).
fn parse_memory(text: &str) -> anyhow::Result<u64> {
    kiln_cache::parse_size(text)
        .with_context(|| format!("invalid argument {text:?} for \"-m, --memory\" flag"))
}

/// The environment entries of `--env-file` and `-e` (a bare `KEY` takes kiln's own value).
fn environment(args: &RunArgs) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut add = |entry: &str| {
        if entry.contains('=') {
            out.push(entry.to_owned());
        } else if let Ok(value) = std::env::var(entry) {
            out.push(format!("{entry}={value}"));
        }
    };
    for file in &args.env_file {
        let text = fs_err::read_to_string(file)?;
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                add(line);
            }
        }
    }
    for entry in &args.env {
        add(entry);
    }
    Ok(out)
}

/// The stored image, pulled first if the store lacks it; a signal to kiln ends the pull.
fn image(
    store: &Arc<Store>,
    config: &Config,
    name: &str,
    platform: Option<&kiln_llb::Platform>,
    route: &SignalRoute,
) -> anyhow::Result<ImageRecord> {
    let options = PullOptions {
        config: config.cache.clone(),
        ..PullOptions::default()
    };
    let options = match platform {
        // The name may hold another platform's image: the pull finds the wanted one, in
        // the store when it is there.
        Some(platform) => PullOptions {
            prefer_local: true,
            ..options.for_platform(platform)
        },
        None => {
            if let Ok(record) = store.find_image(name) {
                return Ok(record);
            }
            options
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut aborted = route.aborted.subscribe();
    let pulled = runtime.block_on(async {
        tokio::select! {
            pulled = kiln_cache::pull(store.clone(), name, &options, &()) => Ok(pulled),
            signal = aborted.wait_for(Option::is_some) => {
                Err(signal.ok().and_then(|s| *s).unwrap_or(Signal::SIGINT))
            }
        }
    });
    let pulled = match pulled {
        Ok(pulled) => pulled,
        Err(signal) => {
            // The pull's tasks end with the runtime, without waiting for them; the blobs it
            // finished stay in the store.
            runtime.shutdown_background();
            return Err(Interrupted(signal).into());
        }
    };
    let pulled = pulled
        .with_context(|| format!("unable to find image '{name}' locally, and pulling it failed"))?;
    Ok(pulled.image)
}

fn image_config(store: &Store, record: &ImageRecord) -> anyhow::Result<ImageConfig> {
    let bytes = store.read_blob(&record.config)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).context("reading the image config")?;
    let config = &value["config"];
    let strings = |key: &str| -> Vec<String> {
        config[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let string = |key: &str| config[key].as_str().unwrap_or_default().to_owned();
    Ok(ImageConfig {
        entrypoint: strings("Entrypoint"),
        cmd: strings("Cmd"),
        env: strings("Env"),
        working_dir: string("WorkingDir"),
        user: string("User"),
    })
}

fn run_container(root: &Path, config: &Config, args: &RunArgs) -> anyhow::Result<ExitCode> {
    // Before any thread starts (opening the store starts one), so that every thread has them
    // blocked and none is killed by them or swallows them: they wait for the forwarding thread.
    let route = SignalRoute::start(block_signals(args.tty)?, args.tty)?;
    fs_err::create_dir_all(root)?;
    let root = fs_err::canonicalize(root)?;
    let store = Arc::new(
        Store::open(&root)
            .with_context(|| format!("opening the store at {}", root.display()))?
            .with_unpack_limits(config.cache.unpack),
    );
    let mounts = args
        .volume
        .iter()
        .map(|v| volume(v))
        .chain(args.tmpfs.iter().map(|t| tmpfs(t)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let network = match args.network.as_str() {
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => bail!("network {other:?} is not supported: use none or host"),
    };
    let memory = args.memory.as_deref().map(parse_memory).transpose()?;
    let env = environment(args)?;

    let platform = args
        .platform
        .as_deref()
        .map(kiln_llb::Platform::parse)
        .transpose()?;
    if let Some(platform) = &platform {
        kiln_engine::runnable(platform)
            .map_err(|reason| anyhow::anyhow!("cannot run a {platform} image here: {reason}"))?;
    }
    let record = image(&store, config, &args.image, platform.as_ref(), &route)?;
    let image_config = image_config(&store, &record)?;
    route.check()?;
    let _lease = store.lease()?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)));
    let snapshot = store
        .create_container(&name, &record)
        .with_context(|| format!("preparing the file system of the container {name}"))?;
    let overrides = RunOverrides {
        entrypoint: args.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        args: args.command.clone(),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: None,
    };
    let rootfs = Rootfs::Overlay {
        lowers: snapshot.lowers,
        upper: snapshot.upper,
        work: snapshot.work,
        readonly: args.read_only,
    };
    let result = (|| -> anyhow::Result<ExitStatus> {
        let mut spec = kiln_runner::run_spec(&image_config, &overrides, rootfs)?;
        spec.network = network;
        if args.privileged {
            spec.security = kiln_runner::Security::Insecure;
        }
        spec.mounts = mounts;
        spec.resources.memory = memory;
        spec.resources.pids = args.pids_limit;
        spec.ulimits = args.ulimit.clone();
        spec.cgroup_parent = args.cgroup_parent.clone();
        let stdin = || -> anyhow::Result<std::os::fd::OwnedFd> {
            Ok(std::io::stdin().as_fd().try_clone_to_owned()?)
        };
        spec.stdio = if args.tty {
            Stdio::Pty {
                size: own_terminal_size().unwrap_or(TerminalSize { rows: 24, cols: 80 }),
                input: if args.interactive {
                    Some(stdin()?)
                } else {
                    None
                },
            }
        } else if args.interactive {
            Stdio::CapturedWithInput(stdin()?)
        } else {
            Stdio::Captured
        };
        let runner = Runner::new(kiln_engine::RUNNER_STATE);
        let handle = Handle::new()?;
        route.attach(&handle, args.tty)?;
        let _raw = if args.tty && args.interactive {
            RawMode::enable()
        } else {
            None
        };
        let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
        Ok(runner.run(spec, &mut stdout, &mut stderr, &handle)?)
    })();
    // docker: 127 when the command is not found, 126 when it cannot be executed.
    let result = match result {
        Err(err) => match err.downcast_ref::<kiln_runner::Error>() {
            Some(kiln_runner::Error::Exec { program, source }) => {
                #[expect(clippy::print_stderr, reason = "the binary reports its errors")]
                {
                    eprintln!("kiln: cannot execute {program:?}: {}", source.desc());
                }
                let code = if *source == nix::errno::Errno::ENOENT {
                    127
                } else {
                    126
                };
                Ok(ExitStatus::Code(code))
            }
            _ => Err(err),
        },
        ok => ok,
    };
    // A container interrupted before it started is not kept.
    let interrupted = matches!(&result, Err(e) if e.downcast_ref::<Interrupted>().is_some());
    if args.rm || interrupted {
        store
            .remove_container(&name)
            .with_context(|| format!("removing the file system of the container {name}"))?;
    }
    Ok(match result? {
        ExitStatus::Code(code) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)),
        ExitStatus::Signal(signal) => {
            ExitCode::from(u8::try_from(128 + (signal & 0x7f)).unwrap_or(EXIT_KILN_ERROR))
        }
    })
}

/// `kiln ps`: the kept containers, newest first.
pub(crate) fn ps(root: &Path) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let mut containers = store.containers()?;
    containers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "NAMES").context("writing to standard output")?;
    for (name, _) in containers {
        writeln!(stdout, "{name}").context("writing to standard output")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln rm`: removes kept containers' file systems.
pub(crate) fn rm(root: &Path, args: &crate::args::RmArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let mut stdout = std::io::stdout().lock();
    for name in &args.containers {
        store.remove_container(name)?;
        writeln!(stdout, "{name}").context("writing to standard output")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Signals kiln receives that go on to the container's process, as `docker run` does.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The size of kiln's own terminal (standard output's, else standard input's), if it has one.
fn own_terminal_size() -> Option<TerminalSize> {
    TerminalSize::of(std::io::stdout()).or_else(|| TerminalSize::of(std::io::stdin()))
}

/// Blocks the forwarded signals in this thread and the threads it starts later (the
/// container's processes unblock them), and with a terminal (`tty`) `SIGWINCH` too. Returns
/// the set for [`SignalRoute::start`].
fn block_signals(tty: bool) -> anyhow::Result<SigSet> {
    let mut set = SigSet::empty();
    for signal in FORWARDED {
        set.add(signal);
    }
    if tty {
        set.add(Signal::SIGWINCH);
    }
    set.thread_block().context("blocking signals")?;
    Ok(set)
}

/// kiln was ended by this signal before the container started.
#[derive(Debug)]
struct Interrupted(Signal);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Where the signals kiln receives go: before the container starts they abort kiln (and wake
/// a pull through `aborted`), afterwards they go to the container.
struct SignalRoute {
    /// The running container's handle, once it starts.
    handle: Arc<Mutex<Option<Handle>>>,
    /// The first aborting signal.
    aborted: tokio::sync::watch::Sender<Option<Signal>>,
}

impl SignalRoute {
    /// Starts a thread that waits for the signals of `set` (blocked by [`block_signals`]).
    /// `SIGWINCH` resizes the container's terminal to kiln's terminal's new size, as
    /// `docker run -t` does.
    fn start(set: SigSet, tty: bool) -> anyhow::Result<Self> {
        let handle: Arc<Mutex<Option<Handle>>> = Arc::default();
        let aborted = tokio::sync::watch::Sender::new(None);
        let (target, abort) = (Arc::clone(&handle), aborted.clone());
        std::thread::Builder::new()
            .name("signals".to_owned())
            .spawn(move || {
                while let Ok(signal) = set.wait() {
                    let target = target.lock().unwrap_or_else(PoisonError::into_inner);
                    match (&*target, signal) {
                        (Some(handle), Signal::SIGWINCH) => {
                            if tty && let Some(size) = own_terminal_size() {
                                tracing::debug!(rows = size.rows, cols = size.cols, "resizing");
                                handle.resize(size);
                            }
                        }
                        (None, Signal::SIGWINCH) => {}
                        (Some(handle), _) => {
                            tracing::debug!(%signal, "forwarding");
                            handle.signal(signal);
                        }
                        (None, _) => {
                            tracing::debug!(%signal, "aborting before the container starts");
                            abort.send_if_modified(|first| {
                                first.is_none() && first.replace(signal).is_none()
                            });
                        }
                    }
                }
            })
            .context("starting the signal thread")?;
        Ok(Self { handle, aborted })
    }

    /// Fails with [`Interrupted`] if a signal has aborted kiln.
    fn check(&self) -> anyhow::Result<()> {
        match *self.aborted.borrow() {
            Some(signal) => Err(Interrupted(signal).into()),
            None => Ok(()),
        }
    }

    /// From now on signals go to the container of `handle` (queued until it runs), unless
    /// one has aborted kiln already.
    fn attach(&self, handle: &Handle, tty: bool) -> anyhow::Result<()> {
        let mut target = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        self.check()?;
        if tty && let Some(size) = own_terminal_size() {
            // A resize before SIGWINCH was blocked went unnoticed: send the size once more.
            handle.resize(size);
        }
        *target = Some(handle.clone());
        Ok(())
    }
}

/// The terminal of standard input in raw mode (for `-it`), restored when dropped.
struct RawMode(Termios);

impl RawMode {
    fn enable() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_specs_are_checked_like_docker() {
        let err = volume("relative:/x").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid volume specification: 'relative:/x'"),
            "{err}"
        );
        let err = volume("/a:/b:bogus").unwrap_err().to_string();
        assert_eq!(err, "invalid volume specification: '/a:/b:bogus'");
        let Mount::Bind { readonly, .. } = volume("/tmp:/data:ro").unwrap() else {
            panic!("not a bind mount");
        };
        assert!(readonly);
    }

    /// The `kiln` binary of this build (cargo builds it for the package's integration tests).
    fn kiln_binary() -> Option<std::path::PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let path = exe.parent()?.parent()?.join("kiln");
        path.is_file().then_some(path)
    }

    /// Reads everything written to a pseudo-terminal's master side, in the background.
    fn collect(master: std::os::fd::OwnedFd) -> std::sync::mpsc::Receiver<Vec<u8>> {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last slave descriptor is closed.
            while let Ok(n @ 1..) = nix::unistd::read(&master, &mut buf) {
                if sender.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        receiver
    }

    /// Waits (up to 30 s) until `output` plus what `receiver` brings contains `text`.
    fn wait_for(receiver: &std::sync::mpsc::Receiver<Vec<u8>>, output: &mut String, text: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !output.contains(text) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match receiver.recv_timeout(left) {
                Ok(bytes) => output.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("no {text:?} in the terminal's output: {output:?}"),
            }
        }
    }

    #[test]
    fn tty_containers_get_kilns_terminal_size_and_its_changes() {
        use std::process::{Command, Stdio as ProcessStdio};

        if !kiln_testdata::is_root() {
            kiln_testdata::skip("needs root for namespaces and overlayfs");
            return;
        }
        let Some(kiln) = kiln_binary() else {
            kiln_testdata::skip("the kiln binary is not built next to the tests");
            return;
        };
        let root = tempfile::tempdir().unwrap();
        let loaded = Command::new(&kiln)
            .arg("--root")
            .arg(root.path())
            .arg("load")
            .arg(kiln_testdata::busybox_layout())
            .stdout(ProcessStdio::null())
            .status()
            .unwrap();
        assert!(loaded.success());

        // kiln's terminal: a pseudo-terminal of 33x101.
        let size = nix::pty::Winsize {
            ws_row: 33,
            ws_col: 101,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let terminal = nix::unistd::ttyname(&pty.slave).unwrap();
        let script = "stty size; i=0; while [ $i -lt 300 ]; do s=$(stty size); \
                      [ \"$s\" != '33 101' ] && break; sleep 0.1; i=$((i+1)); done; echo \"now $s\"";
        let mut child = Command::new(&kiln)
            .arg("--root")
            .arg(root.path())
            .args(["run", "--rm", "-t", "busybox", "sh", "-c", script])
            .stdin(ProcessStdio::null())
            .stdout(ProcessStdio::from(pty.slave.try_clone().unwrap()))
            .stderr(ProcessStdio::from(pty.slave))
            .spawn()
            .unwrap();
        let output = collect(pty.master);
        let mut text = String::new();
        // The initial size is kiln's terminal's, not a default.
        wait_for(&output, &mut text, "33 101");

        // Resize kiln's terminal and tell kiln, as the terminal emulator does.
        let resized = Command::new("stty")
            .arg("-F")
            .arg(&terminal)
            .args(["rows", "40", "cols", "120"])
            .status()
            .unwrap();
        assert!(resized.success());
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, Signal::SIGWINCH).unwrap();
        wait_for(&output, &mut text, "now 40 120");
        assert!(child.wait().unwrap().success(), "{text:?}");
    }

    #[test]
    fn memory_takes_docker_sizes() {
        assert_eq!(parse_memory("512").unwrap(), 512);
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(
            format!("{:#}", parse_memory("lots").unwrap_err()),
            format!(
                "invalid argument \"lots\" for \"-m, --memory\" flag: {}",
                kiln_cache::parse_size("lots").unwrap_err()
            )
        );
        assert!(parse_memory("17179869184p").is_err());
    }
}
