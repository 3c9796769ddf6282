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
use std::sync::Arc;

use anyhow::{Context as _, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_cache::{
    ContainerConfig, ContainerRecord, ContainerRecords, ContainerStatus, Health, HealthConfig,
    HostConfig, ImageRecord, PullOptions, RestartPolicy, Store, Volumes,
};
use kiln_runner::{
    CapabilityChanges, ExecSpec, ExitStatus, Handle, ImageConfig, Mount, Rootfs, RunOverrides,
    Runner, Signal, Stdio, TerminalSize, TmpfsOptions,
};

mod network;
pub(crate) mod signals;

use signals::{Interrupted, RawMode, own_terminal_size};
pub(crate) use signals::{SignalRoute, block_signals};

use crate::args::RunArgs;
use crate::config::Config;

/// docker's exit code for errors of the runtime itself.
const EXIT_KILN_ERROR: u8 = 125;

/// Runs the container (or, with `-d`, starts its supervisor); a configuration that failed to
/// load is reported as kiln's own error.
pub(crate) fn run(
    root: &Path,
    config_path: Option<&Path>,
    config: anyhow::Result<Config>,
    args: &RunArgs,
) -> ExitCode {
    let attach = if args.detach {
        Attach::Detach { config_path }
    } else {
        Attach::Terminal
    };
    let terminal = args.tty && !args.detach;
    // Before any thread starts (opening the store starts one), so that every thread has them
    // blocked and none is killed by them or swallows them: they wait for the forwarding thread.
    let result = config.and_then(|config| {
        let route = SignalRoute::start(block_signals(terminal)?, terminal)?;
        run_container(root, &config, args, attach, &route)
    });
    exit_code(result)
}

/// Runs a detached container's process once, as its supervisor does.
pub(crate) fn run_supervised(
    root: &Path,
    config: &Config,
    args: &RunArgs,
    id: &str,
    route: &SignalRoute,
) -> anyhow::Result<u8> {
    run_container(root, config, args, Attach::Log { id }, route)
}

/// `kiln run`'s exit code: the container's, 128 + N when interrupted by signal N, 125 (with
/// the error on stderr) when kiln failed.
fn exit_code(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
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

/// Parses `SOURCE:CONTAINER[:ro|rw]`: a host path (absolute) or a named volume (made on
/// first use, as docker does).
fn volume(spec: &str, volumes: &Volumes) -> anyhow::Result<Mount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, readonly) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        _ => bail!("invalid volume specification: '{spec}'"),
    };
    if !target.starts_with('/') {
        bail!(
            "invalid volume specification: '{spec}': the container path must be absolute (SOURCE:CONTAINER[:ro])"
        );
    }
    if Volumes::is_name(source) {
        let (volume, _) = volumes.create(source)?;
        return Ok(Mount::Bind {
            source: volume.mountpoint,
            target: target.into(),
            readonly,
        });
    }
    if !source.starts_with('/') {
        bail!(
            "invalid volume specification: '{spec}': the host path must be absolute, or a volume name (SOURCE:CONTAINER[:ro])"
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
                crate::commands::realize_image(store, &record, &options)?;
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

/// What `kiln run` reads from an image's config beyond [`ImageConfig`].
struct ImageExtras {
    labels: BTreeMap<String, String>,
    stop_signal: String,
    healthcheck: Option<HealthConfig>,
    /// `ExposedPorts` (`80/tcp`), for `-P`.
    exposed_ports: Vec<String>,
}

fn image_config(store: &Store, record: &ImageRecord) -> anyhow::Result<(ImageConfig, ImageExtras)> {
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
    let labels = config["Labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let healthcheck = serde_json::from_value::<Option<HealthConfig>>(config["Healthcheck"].clone())
        .context("reading the image's health check")?;
    Ok((
        ImageConfig {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            working_dir: string("WorkingDir"),
            user: string("User"),
        },
        ImageExtras {
            labels,
            stop_signal: string("StopSignal"),
            healthcheck,
            exposed_ports: config["ExposedPorts"]
                .as_object()
                .map(|ports| ports.keys().cloned().collect())
                .unwrap_or_default(),
        },
    ))
}

/// A Go duration of a `--health-*` flag, in nanoseconds.
fn health_duration(flag: &str, text: Option<&String>) -> anyhow::Result<Option<u64>> {
    text.map(|text| {
        kiln_cache::parse_duration(text)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .with_context(|| format!("invalid argument {text:?} for \"--{flag}\" flag"))
    })
    .transpose()
}

/// The health check: the image's, with the `--health-*` flags over it; none with
/// `--no-healthcheck` or `HEALTHCHECK NONE`.
fn health_config(
    args: &RunArgs,
    image: Option<HealthConfig>,
) -> anyhow::Result<Option<HealthConfig>> {
    if args.no_healthcheck {
        if args.health_cmd.is_some() {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        return Ok(None);
    }
    let mut health = image.unwrap_or_default();
    if let Some(command) = &args.health_cmd {
        health.test = vec!["CMD-SHELL".to_owned(), command.clone()];
    }
    if let Some(interval) = health_duration("health-interval", args.health_interval.as_ref())? {
        health.interval = interval;
    }
    if let Some(timeout) = health_duration("health-timeout", args.health_timeout.as_ref())? {
        health.timeout = timeout;
    }
    if let Some(start) = health_duration("health-start-period", args.health_start_period.as_ref())?
    {
        health.start_period = start;
    }
    if let Some(retries) = args.health_retries {
        health.retries = retries;
    }
    let none = health.test.is_empty() || health.test.first().is_some_and(|t| t == "NONE");
    Ok((!none).then_some(health))
}

/// `--cpus`: a decimal number of CPUs, as billionths of a CPU.
fn parse_cpus(text: &str) -> anyhow::Result<u64> {
    match text.parse::<f64>() {
        Ok(cpus) if cpus.is_finite() && cpus >= 0.0 => Ok((cpus * 1e9).round() as u64),
        _ => bail!(
            "invalid argument {text:?} for \"--cpus\" flag: failed to parse {text} as a rational number"
        ),
    }
}

/// A random container name (docker's are two words; ours are hex, always valid).
fn random_name() -> String {
    format!("k{:015x}", fastrand::u64(..) >> 4)
}

/// Where a container's streams go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attach<'a> {
    /// `kiln run`: kiln's own standard streams.
    Terminal,
    /// `kiln run -d`: the container is made here and started by a supervisor (run with the
    /// given `--config`).
    Detach {
        /// kiln's `--config`, for the supervisor.
        config_path: Option<&'a Path>,
    },
    /// The supervisor of a detached container: the existing container `id`, its output to
    /// its log.
    Log {
        /// The container's ID.
        id: &'a str,
    },
}

fn run_container(
    root: &Path,
    config: &Config,
    args: &RunArgs,
    attach: Attach<'_>,
    route: &SignalRoute,
) -> anyhow::Result<u8> {
    fs_err::create_dir_all(root)?;
    let root = fs_err::canonicalize(root)?;
    let store = Arc::new(
        Store::open(&root)
            .with_context(|| format!("opening the store at {}", root.display()))?
            .with_unpack_limits(config.cache.unpack),
    );
    let records = ContainerRecords::new(&root);
    let volumes = Volumes::new(&root);
    // Named volumes this run makes: docker fills them with the image's files at their path.
    let new_volumes: Vec<(String, String)> = args
        .volume
        .iter()
        .filter_map(|spec| {
            let mut parts = spec.split(':');
            let (source, target) = (parts.next()?, parts.next()?);
            (Volumes::is_name(source) && volumes.get(source).is_err())
                .then(|| (source.to_owned(), target.to_owned()))
        })
        .collect();
    let mounts = args
        .volume
        .iter()
        .map(|v| volume(v, &volumes))
        .chain(args.tmpfs.iter().map(|t| tmpfs(t)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let publish = network::check(args)?;
    let memory = args.memory.as_deref().map(parse_memory).transpose()?;
    let nano_cpus = args.cpus.as_deref().map(parse_cpus).transpose()?;
    let capabilities = CapabilityChanges::new(&args.cap_add, &args.cap_drop)?;
    let restart = RestartPolicy::parse(&args.restart)?;
    if args.rm && restart != RestartPolicy::No {
        bail!("Conflicting options: --restart and --rm");
    }
    let env = environment(args)?;

    let platform = args
        .platform
        .as_deref()
        .map(kiln_llb::Platform::parse)
        .transpose()?;
    let emulator = match &platform {
        Some(platform) => kiln_engine::emulator(platform)
            .map_err(|reason| anyhow::anyhow!("cannot run a {platform} image here: {reason}"))?,
        None => None,
    };
    let image_record = image(&store, config, &args.image, platform.as_ref(), route)?;
    let (image_config, extras) = image_config(&store, &image_record)?;
    for (name, target) in &new_volumes {
        let volume = volumes.get(name)?;
        store
            .copy_image_dir(&image_record, Path::new(target), &volume.mountpoint)
            .with_context(|| format!("filling the new volume {name} from the image's {target}"))?;
    }
    let stop_signal = args.stop_signal.clone().unwrap_or(extras.stop_signal);
    if !stop_signal.is_empty() {
        kiln_runner::parse_signal(&stop_signal)?;
    }
    let healthcheck = health_config(args, extras.healthcheck)?;
    route.check()?;
    let _lease = store.lease()?;
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
    let placeholder = Rootfs::Dir {
        path: PathBuf::from("/"),
        readonly: args.read_only,
    };
    let mut spec = kiln_runner::run_spec(&image_config, &overrides, placeholder)?;
    spec.emulator = emulator;

    let (record, snapshot) = match attach {
        Attach::Log { id } => {
            let record = records.get(id)?;
            let snapshot = store.container_mounts(&record.name).with_context(|| {
                format!("finding the file system of the container {}", record.name)
            })?;
            (record, snapshot)
        }
        Attach::Terminal | Attach::Detach { .. } => {
            let mut record = ContainerRecord::new(&args.name.clone().unwrap_or_else(random_name));
            record.image = image_record.config.to_string();
            record.path = spec.args[0].clone();
            record.args = spec.args[1..].to_vec();
            record.config = ContainerConfig {
                image: args.image.clone(),
                cmd: if overrides.args.is_empty() && overrides.entrypoint.is_none() {
                    image_config.cmd.clone()
                } else {
                    overrides.args.clone()
                },
                entrypoint: overrides
                    .entrypoint
                    .clone()
                    .unwrap_or_else(|| image_config.entrypoint.clone()),
                env: spec.env.clone(),
                working_dir: spec.cwd.display().to_string(),
                user: spec.user.clone(),
                labels: extras.labels.clone(),
                stop_signal: stop_signal.clone(),
                healthcheck: healthcheck.clone(),
                tty: args.tty,
            };
            record.host_config = HostConfig {
                restart_policy: restart,
                memory: memory.unwrap_or(0),
                nano_cpus: nano_cpus.unwrap_or(0),
                pids_limit: args.pids_limit,
                readonly_rootfs: args.read_only,
                privileged: args.privileged,
                cap_add: args.cap_add.clone(),
                cap_drop: args.cap_drop.clone(),
                binds: args.volume.clone(),
                network_mode: args.network.clone(),
                auto_remove: args.rm,
            };
            record.detached = matches!(attach, Attach::Detach { .. });
            if record.detached {
                record.run_args = run_arguments();
            } else {
                record.state.keeper = Some(kiln_cache::Owner::current());
            }
            records.create(&record)?;
            let snapshot = match store.create_container(&record.name, &image_record) {
                Ok(snapshot) => snapshot,
                Err(err) => {
                    records.remove(&record.id)?;
                    return Err(anyhow::Error::new(err).context(format!(
                        "preparing the file system of the container {}",
                        record.name
                    )));
                }
            };
            (record, snapshot)
        }
    };
    if let Attach::Detach { config_path } = attach {
        return crate::commands::supervise::start(&root, config_path, &records, &record);
    }
    let name = record.name.clone();
    let id = record.id.clone();
    spec.rootfs = Rootfs::Overlay {
        lowers: snapshot.lowers,
        upper: snapshot.upper,
        work: snapshot.work,
        readonly: args.read_only,
    };
    // docker names a container's host after its short id.
    spec.hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| id.chars().take(12).collect());
    let result = (|| -> anyhow::Result<ExitStatus> {
        // Held until the container ends: dropping it takes the container off the network.
        let network = network::set_up(
            args,
            &name,
            &spec.hostname,
            publish.clone(),
            &extras.exposed_ports,
        )?;
        network.apply(&mut spec);
        records.update(&id, |r| r.network_settings = network.settings())?;
        if args.privileged {
            spec.security = kiln_runner::Security::Insecure;
        }
        spec.capabilities = capabilities.clone();
        spec.mounts = mounts;
        spec.resources.memory = memory;
        spec.resources.pids = args.pids_limit;
        spec.resources.cpu_quota = nano_cpus.map(|nano| (nano / 10_000, 100_000));
        spec.ulimits = args.ulimit.clone();
        spec.cgroup_parent = args.cgroup_parent.clone();
        let stdin = || -> anyhow::Result<std::os::fd::OwnedFd> {
            Ok(std::io::stdin().as_fd().try_clone_to_owned()?)
        };
        let detached = matches!(attach, Attach::Log { .. });
        spec.stdio = if args.tty {
            Stdio::Pty {
                size: own_terminal_size().unwrap_or(TerminalSize { rows: 24, cols: 80 }),
                input: if args.interactive && !detached {
                    Some(stdin()?)
                } else {
                    None
                },
            }
        } else if args.interactive && !detached {
            Stdio::CapturedWithInput(stdin()?)
        } else {
            Stdio::Captured
        };
        let exec = ExecSpec {
            args: Vec::new(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            user: spec.user.clone(),
            security: spec.security,
            capabilities: capabilities.clone(),
            terminal: None,
        };
        let runner = Runner::new(kiln_engine::RUNNER_STATE);
        let handle = Handle::new()?;
        let (health_stop, health_stopped) = std::sync::mpsc::channel::<()>();
        {
            let (records, id, healthcheck) = (records.clone(), id.clone(), healthcheck.clone());
            handle.on_start(move |pid| {
                let started = records.update(&id, |r| {
                    r.state.status = ContainerStatus::Running;
                    r.state.pid = pid;
                    r.state.keeper = Some(kiln_cache::Owner::current());
                    r.state.started_at = kiln_cache::now_rfc3339();
                    r.state.exit_code = 0;
                    r.state.error.clear();
                    if healthcheck.is_some() {
                        r.state.health = Some(Health {
                            status: "starting".to_owned(),
                            ..Health::default()
                        });
                    }
                });
                if let Err(err) = started {
                    tracing::warn!(error = %err, "cannot record the container's start");
                }
                if let Some(health) = healthcheck {
                    crate::commands::supervise::check_health(
                        records,
                        id,
                        pid,
                        health,
                        exec,
                        health_stopped,
                    );
                }
            });
        }
        route.attach(&handle, args.tty && !detached)?;
        let _raw = if args.tty && args.interactive && !detached {
            RawMode::enable()
        } else {
            None
        };
        let status = match attach {
            Attach::Log { id } => {
                let (mut stdout, mut stderr) =
                    crate::commands::supervise::JsonLog::pair(&records.log_path(id))?;
                runner.run(spec, &mut stdout, &mut stderr, &handle)
            }
            _ => {
                let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
                runner.run(spec, &mut stdout, &mut stderr, &handle)
            }
        };
        drop(health_stop);
        Ok(status?)
    })();
    // docker: 127 when the command is not found, 126 when it cannot be executed.
    let mut error = String::new();
    let result = match result {
        Err(err) => match err.downcast_ref::<kiln_runner::Error>() {
            Some(kiln_runner::Error::Exec { program, source }) => {
                error = format!("cannot execute {program:?}: {}", source.desc());
                #[expect(clippy::print_stderr, reason = "the binary reports its errors")]
                {
                    eprintln!("kiln: {error}");
                }
                Ok(ExitStatus::Code(exec_failure_code(*source)))
            }
            _ => Err(err),
        },
        ok => ok,
    };
    let code = match &result {
        Ok(status) => u8::try_from(status.docker_code() & 0xff).unwrap_or(EXIT_KILN_ERROR),
        Err(_) => EXIT_KILN_ERROR,
    };
    if let Err(err) = &result {
        error = format!("{err:#}");
    }
    // As docker: a container whose command could not be executed was never started.
    let started = records.get(&id)?.state.started_at != kiln_cache::ZERO_TIME;
    records.update(&id, |r| {
        r.state.status = if !started && !error.is_empty() {
            ContainerStatus::Created
        } else {
            ContainerStatus::Exited
        };
        r.state.pid = 0;
        r.state.keeper = None;
        r.state.exit_code = i32::from(code);
        r.state.error = error;
        r.state.finished_at = kiln_cache::now_rfc3339();
    })?;
    // A container interrupted before it started is not kept.
    let interrupted = matches!(&result, Err(e) if e.downcast_ref::<Interrupted>().is_some());
    if matches!(attach, Attach::Terminal) && (args.rm || interrupted) {
        remove_container(&store, &records, &id, &name)?;
    }
    result.map(|_| code)
}

/// docker's exit code for a command that could not be executed: 127 when it is not found,
/// 126 otherwise.
pub(crate) fn exec_failure_code(errno: nix::errno::Errno) -> i32 {
    if errno == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    }
}

/// Removes a container's file system and record.
pub(crate) fn remove_container(
    store: &Store,
    records: &ContainerRecords,
    id: &str,
    name: &str,
) -> anyhow::Result<()> {
    match store.remove_container(name) {
        Ok(()) | Err(kiln_cache::Error::NoSuchContainer { .. }) => {}
        Err(err) => {
            return Err(anyhow::Error::new(err)
                .context(format!("removing the file system of the container {name}")));
        }
    }
    records.remove(id)?;
    Ok(())
}

/// This process's `kiln run` arguments (those after `run`), for the supervisor to parse again.
fn run_arguments() -> Vec<String> {
    std::env::args()
        .skip(1)
        .skip_while(|arg| arg != "run")
        .skip(1)
        .collect()
}

/// The `kiln run` arguments of a detached container, parsed again by its supervisor.
pub(crate) fn parse_run_arguments(arguments: &[String]) -> anyhow::Result<RunArgs> {
    use clap::Parser as _;
    let cli = crate::args::Cli::try_parse_from(
        ["kiln", "run"]
            .into_iter()
            .map(str::to_owned)
            .chain(arguments.iter().cloned()),
    )
    .context("reading the container's run arguments")?;
    match cli.command {
        crate::args::Command::Run(args) => Ok(*args),
        _ => bail!("the container's run arguments are not a `kiln run`"),
    }
}

#[cfg(test)]
pub(crate) mod tests;
