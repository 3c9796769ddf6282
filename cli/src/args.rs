//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// kiln: a container image build engine.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Where kiln keeps images, layers and build cache.
    #[arg(
        long,
        global = true,
        env = "KILN_ROOT",
        default_value = "/var/lib/kiln",
        value_name = "DIR"
    )]
    pub(crate) root: PathBuf,
    /// Configuration file (registry mirrors, plain HTTP) [default: /etc/kiln/kiln.toml].
    #[arg(long, global = true, env = "KILN_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Build in the kiln daemon (or BuildKit daemon) at this address instead of in-process,
    /// as docker's `-H`: `unix:///PATH`, or `tcp://HOST:PORT` with mutual TLS from
    /// `$KILN_CERT_PATH/{ca,cert,key}.pem` (`kiln build`, `du`, `prune`, `debug workers`).
    #[arg(
        long,
        short = 'H',
        global = true,
        env = "KILN_HOST",
        value_name = "unix:///PATH|tcp://HOST:PORT"
    )]
    pub(crate) host: Option<String>,
}

/// The kiln commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Debugging tools.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// kiln.yaml tools.
    #[command(subcommand)]
    Yaml(YamlCommand),
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// List images.
    Images,
    /// Build an image.
    Build(Box<BuildArgs>),
    /// Load images from an OCI image layout (directory or tar) or a docker-archive tar.
    Load(LoadArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Remove images by name.
    Rmi(RmiArgs),
    /// Run a command in a new container from an image.
    Run(Box<RunArgs>),
    /// List containers.
    Ps(PsArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Return low-level information on containers.
    Inspect(InspectArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Keep a detached container (`kiln run -d` starts it): run it in the foreground with its
    /// output to its log, apply its restart policy and health check.
    #[command(hide = true)]
    ContainerSupervise {
        /// The container's ID.
        id: String,
    },
    /// Write images to a docker-archive tar (or an OCI layout tar with `--format oci`).
    Save(SaveArgs),
    /// Push an image from the store to its registry.
    Push(PushArgs),
    /// Remove build cache.
    Prune(PruneArgs),
    /// List the builds recorded in this store, as `docker buildx history ls`.
    History(HistoryArgs),
    /// Say why each step of a build ran instead of coming from the cache.
    Explain(ExplainArgs),
    /// Show disk usage.
    Du(DuArgs),
    /// Serve BuildKit's control API, for buildctl and buildx.
    Daemon(DaemonArgs),
    /// Serve kiln's Dockerfile and kiln.yaml frontend to a builder over BuildKit's gateway API
    /// on standard input and output: the entrypoint of kiln's frontend image
    /// (`# syntax=IMAGE`, see docs/frontends.md).
    GatewayFrontend,
}

/// `kiln daemon` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct DaemonArgs {
    /// Where to listen (repeat for several): a unix socket, a TCP address (mutual TLS only),
    /// or `fd://`, the socket systemd passed (socket activation).
    #[arg(
        long,
        default_value = "unix:///run/kiln/kiln.sock",
        value_name = "unix:///PATH|tcp://HOST:PORT|fd://"
    )]
    pub(crate) addr: Vec<String>,
    /// The certificate (PEM) the daemon shows on TCP addresses.
    #[arg(long, value_name = "FILE", requires_all = ["tlskey", "tlscacert"])]
    pub(crate) tlscert: Option<PathBuf>,
    /// The private key (PEM) of --tlscert.
    #[arg(long, value_name = "FILE", requires_all = ["tlscert", "tlscacert"])]
    pub(crate) tlskey: Option<PathBuf>,
    /// The CA (PEM) that must have signed the certificate of every TCP client.
    #[arg(long, value_name = "FILE", requires_all = ["tlscert", "tlskey"])]
    pub(crate) tlscacert: Option<PathBuf>,
    /// The group (numeric id) of the socket, whose members may build [default: the daemon's].
    #[arg(long, value_name = "GID")]
    pub(crate) group: Option<u32>,
    /// Log each request and the builds' steps (the `KILN_LOG` filter `debug`).
    #[arg(long)]
    pub(crate) debug: bool,
}

/// `kiln debug` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum DebugCommand {
    /// List the workers of the daemon `--host` names, as `buildctl debug workers`.
    Workers {
        /// Show each worker's labels, platforms and garbage collection policies.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Print each op of an LLB Definition as one JSON object per line.
    DumpLlb {
        /// The marshalled Definition (`-` or absent: standard input).
        file: Option<PathBuf>,
        /// Print the graph in Graphviz DOT instead.
        #[arg(long)]
        dot: bool,
    },
}

/// `kiln yaml` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum YamlCommand {
    /// Write a Dockerfile as the equivalent kiln.yaml (the common subset: a construct kiln.yaml
    /// cannot say is an error naming its line).
    Convert {
        /// The Dockerfile (`-`: standard input).
        #[arg(default_value = "Dockerfile")]
        file: PathBuf,
        /// Where to write the kiln.yaml (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// `kiln pull` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct PullArgs {
    /// The image: `NAME[:TAG|@DIGEST]` (`busybox` is `docker.io/library/busybox:latest`).
    pub(crate) reference: String,
    /// Print only the image name at the end.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// `kiln build` arguments (docker buildx names).
#[derive(Debug, clap::Args)]
pub(crate) struct BuildArgs {
    /// Solve this marshalled LLB Definition (`-`: standard input) instead of a Dockerfile.
    #[arg(long, value_name = "FILE")]
    pub(crate) llb: Option<PathBuf>,
    /// A local source for the build graph: `NAME=DIR` (the Dockerfile's context is `context`).
    #[arg(long, value_name = "NAME=DIR")]
    pub(crate) local: Vec<String>,
    /// Output destination: `type=local,dest=DIR`.
    #[arg(long, short, value_name = "SPEC")]
    pub(crate) output: Vec<String>,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=PATH` or `id=ID,env=VAR`.
    #[arg(long, value_name = "SPEC")]
    pub(crate) secret: Vec<String>,
    /// An SSH agent for `RUN --mount=type=ssh` and git sources over SSH, as
    /// `docker buildx build --ssh`: `default` or `ID` (the agent at `$SSH_AUTH_SOCK`), or
    /// `ID=SOCKET`.
    #[arg(long, value_name = "default|ID[=SOCKET]")]
    pub(crate) ssh: Vec<String>,
    /// Do not use cached results.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// External cache sources, as `docker buildx build --cache-from`:
    /// `type=registry,ref=REF`, `type=local,src=DIR[,tag=TAG]`, or `REF` alone.
    #[arg(long, value_name = "SPEC")]
    pub(crate) cache_from: Vec<String>,
    /// Cache export destinations, as `docker buildx build --cache-to`:
    /// `type=registry,ref=REF`, `type=local,dest=DIR`, or `type=inline`, with `mode=min|max`.
    #[arg(long, value_name = "SPEC")]
    pub(crate) cache_to: Vec<String>,
    /// Always pull base images from their registry, never using a stored image instead (by
    /// default a tag is checked against its registry and the stored image used when it still
    /// matches or no registry answers).
    #[arg(long)]
    pub(crate) pull: bool,
    /// Allow extra privileged entitlement, as `docker buildx build --allow`: `network.host`
    /// (`RUN --network=host`) or `security.insecure` (`RUN --security=insecure`).
    #[arg(long, value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub(crate) allow: Vec<String>,
    /// Progress output: `auto` (tty on a terminal, else plain), `plain`, `tty`, `quiet` (as
    /// `-q`) or `none`.
    #[arg(long, default_value = "auto")]
    pub(crate) progress: String,
    /// Suppress the build output and print the image id (its manifest digest) on success, as
    /// `docker buildx build -q`.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Store the image in kiln's image store under this name (repeatable).
    #[arg(long, short = 't', value_name = "NAME")]
    pub(crate) tag: Vec<String>,
    /// Push the `-t` images to their registry.
    #[arg(long)]
    pub(crate) push: bool,
    /// The build context directory (the local source `context`).
    #[arg(value_name = "CONTEXT")]
    pub(crate) context: Option<PathBuf>,
    /// The Dockerfile (default: `CONTEXT/Dockerfile`; `-`: standard input), or a kiln.yaml
    /// file (named `*.yaml`/`*.yml`, or starting with `apiVersion: kiln/v1`).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// A build argument: `NAME=VALUE`.
    #[arg(long, value_name = "NAME=VALUE")]
    pub(crate) build_arg: Vec<String>,
    /// Set metadata for an image, as `docker buildx build --label`: `KEY=VALUE` (a bare `KEY`
    /// is an empty value), over the Dockerfile's `LABEL`s.
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) label: Vec<String>,
    /// Add a custom host-to-IP mapping to the `/etc/hosts` of every `RUN`, as
    /// `docker buildx build --add-host`: `NAME:IP` or `NAME=IP` (an IPv6 address may be in
    /// brackets; several addresses separated by commas).
    #[arg(long, value_name = "NAME:IP")]
    pub(crate) add_host: Vec<String>,
    /// Set the networking mode for the `RUN` instructions, as `docker buildx build --network`:
    /// `default`, `none` (only loopback) or `host` (needs `--allow network.host`).
    #[arg(long, default_value = "default", value_name = "MODE")]
    pub(crate) network: String,
    /// Shared memory size for build containers, as `docker buildx build --shm-size`: the size
    /// of every `RUN`'s `/dev/shm` (`128m`, `1g`; without a unit, bytes).
    #[arg(long, value_name = "BYTES")]
    pub(crate) shm_size: Option<String>,
    /// Additional build contexts, as `docker buildx build --build-context`: `NAME=DIR` or
    /// `NAME=docker-image://REF`; a stage called NAME is replaced, and `FROM NAME`,
    /// `COPY --from=NAME` and `RUN --mount=from=NAME` read it (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub(crate) build_context: Vec<String>,
    /// Do not cache specified stages, as `docker buildx build --no-cache-filter`: their `RUN`
    /// steps run again (repeatable, or names separated by commas).
    #[arg(long, value_name = "STAGE", value_delimiter = ',')]
    pub(crate) no_cache_filter: Vec<String>,
    /// Set method for evaluating build, as `docker buildx build --call`: `build` (the
    /// default), `check` (run the build checks and print their warnings, without building;
    /// exit code 1 when there are warnings) or `targets` (list the stages).
    #[arg(long, value_name = "METHOD", default_value = "build")]
    pub(crate) call: String,
    /// Shorthand for `--call=check`.
    #[arg(long, conflicts_with = "call")]
    pub(crate) check: bool,
    /// The stage to build (default: the last).
    #[arg(long, value_name = "STAGE")]
    pub(crate) target: Option<String>,
    /// The platforms to build for, as `docker buildx build --platform` (repeatable, or
    /// separated by commas): one image per platform, tied by an image index. Other
    /// architectures' steps run under QEMU user emulation (default: this host's platform).
    #[arg(long, value_name = "PLATFORM", value_delimiter = ',')]
    pub(crate) platform: Vec<String>,
    /// The frontend, as `buildctl build --frontend`: `dockerfile.v0` (the built-in Dockerfile
    /// frontend; a `# syntax=IMAGE` line still picks IMAGE) or `gateway.v0` (the frontend image
    /// `--opt source=IMAGE`, run through BuildKit's gateway API).
    #[arg(long, value_name = "NAME")]
    pub(crate) frontend: Option<String>,
    /// An option for a frontend image or command, as `buildctl build --opt`: `KEY=VALUE`, over
    /// the ones kiln makes from the other flags (`filename`, `target`, `build-arg:NAME`, ...).
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) opt: Vec<String>,
    /// Run this command on the host as the frontend (through `sh -c`, in the context
    /// directory): it gets the options as `BUILDKIT_FRONTEND_OPT_n=KEY=VALUE` and prints one
    /// marshalled LLB Definition on its standard output; it may write the image configuration
    /// (JSON) to the file `$KILN_FRONTEND_IMAGE_CONFIG` names.
    #[arg(long, value_name = "CMD", conflicts_with_all = ["llb", "frontend"])]
    pub(crate) frontend_exec: Option<String>,
    /// Print the marshalled LLB Definition to standard output instead of building (and, when
    /// `$KILN_FRONTEND_IMAGE_CONFIG` names a file, write the image configuration there: kiln is
    /// then a frontend command for `--frontend-exec`).
    #[arg(long)]
    pub(crate) print_llb: bool,
    /// After the build, say why each step that ran missed the cache (as `kiln explain`).
    #[arg(long)]
    pub(crate) explain: bool,
    /// Write the build's steps as a Chrome trace (JSON trace events, for ui.perfetto.dev):
    /// one span per step, with its queued and running phases.
    #[arg(long, value_name = "FILE")]
    pub(crate) trace: Option<PathBuf>,
    /// Write the build's graph in Graphviz DOT, its steps coloured by what became of them
    /// (grey: cached, green: ran, red: failed).
    #[arg(long, value_name = "FILE")]
    pub(crate) dot: Option<PathBuf>,
    /// Provenance attestation, as `docker buildx build --provenance`: `true` (`mode=min`),
    /// `mode=min`, `mode=max` (with the build's LLB and steps), `false`. Without it, images
    /// pushed to a registry get `mode=min`, as with buildx (not when
    /// `BUILDX_NO_DEFAULT_ATTESTATIONS` is set).
    #[arg(long, value_name = "VALUE", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) provenance: Option<String>,
    /// SBOM attestation, as `docker buildx build --sbom`: `true` for an SPDX document of the
    /// packages in the image, `false`.
    #[arg(long, value_name = "VALUE", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) sbom: Option<String>,
    /// An attestation, as `docker buildx build --attest`: `type=provenance[,mode=min|max]`,
    /// `type=sbom`, `type=…,disabled=true`.
    #[arg(long, value_name = "type=TYPE[,KEY=VALUE…]")]
    pub(crate) attest: Vec<String>,
    /// Write the image id to this file, as `docker buildx build --iidfile`.
    #[arg(long, value_name = "FILE")]
    pub(crate) iidfile: Option<PathBuf>,
    /// Write the build's result metadata (image and config digests, image names, the build's
    /// id) to this file as JSON, as `docker buildx build --metadata-file`.
    #[arg(long, value_name = "FILE")]
    pub(crate) metadata_file: Option<PathBuf>,
    /// A resource limit of every `RUN`, as `docker buildx build --ulimit`: `nofile=1024:2048`
    /// (`-1`: unlimited; names as `docker run --ulimit`).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub(crate) ulimit: Vec<kiln_runner::Ulimit>,
    /// The cgroup every `RUN` runs below, as `docker buildx build --cgroup-parent` (relative
    /// to the cgroup hierarchy's root).
    #[arg(long, value_name = "CGROUP")]
    pub(crate) cgroup_parent: Option<String>,
}

/// `kiln history` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct HistoryArgs {
    /// `table` or `json` (one document, for tools).
    #[arg(long, value_enum, default_value_t = UsageFormat::Table)]
    pub(crate) format: UsageFormat,
}

/// `kiln explain` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ExplainArgs {
    /// The build's id (or a unique beginning of it), as `kiln history` lists it; `^N`: the
    /// Nth build before the last [default: the last build].
    #[arg(value_name = "BUILD")]
    pub(crate) build: Option<String>,
    /// `table` (text) or `json` (one document, for tools).
    #[arg(long, value_enum, default_value_t = UsageFormat::Table)]
    pub(crate) format: UsageFormat,
}

/// `kiln prune` arguments (docker buildx names).
#[derive(Debug, clap::Args)]
pub(crate) struct PruneArgs {
    /// Remove all build cache, not just what nothing refers to.
    #[arg(long, short)]
    pub(crate) all: bool,
    /// Provide filter values (e.g., "until=24h"): `until=DURATION` (`24h`, `1h30m`),
    /// `type=regular|exec.cachemount`.
    #[arg(long, value_name = "FILTER")]
    pub(crate) filter: Vec<String>,
    /// Amount of disk space to keep for cache: least recently used cache goes until the
    /// rest fits (`10GB`).
    #[arg(long, value_name = "BYTES")]
    pub(crate) keep_storage: Option<String>,
    /// Amount of disk space always allowed to keep for cache.
    #[arg(long, value_name = "BYTES")]
    pub(crate) reserved_space: Option<String>,
    /// Maximum amount of disk space allowed to keep for cache.
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_used_space: Option<String>,
    /// Target amount of free disk space after pruning.
    #[arg(long, value_name = "BYTES")]
    pub(crate) min_free_space: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub(crate) force: bool,
    /// Remove the records of past builds (`kiln history`, `kiln explain`) instead of cache.
    #[arg(long, conflicts_with_all = ["all", "filter", "keep_storage", "reserved_space", "max_used_space", "min_free_space"])]
    pub(crate) history: bool,
    /// `table` (docker's) or `json` (sizes in bytes, for scripts).
    #[arg(long, value_enum, default_value_t = UsageFormat::Table)]
    pub(crate) format: UsageFormat,
}

/// `kiln du` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct DuArgs {
    /// Show every record's details instead of a table.
    #[arg(long, short)]
    pub(crate) verbose: bool,
    /// `table` (docker's) or `json` (sizes in bytes, for scripts).
    #[arg(long, value_enum, default_value_t = UsageFormat::Table, conflicts_with = "verbose")]
    pub(crate) format: UsageFormat,
}

/// How `kiln du` and `kiln prune` print sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum UsageFormat {
    /// Docker's table, sizes rounded to three digits.
    Table,
    /// One JSON document, sizes in bytes.
    Json,
}

/// `kiln load` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// The OCI image layout (directory or tar) or docker-archive tar.
    #[arg(long, short)]
    pub(crate) input: Option<PathBuf>,
    /// The same, as a positional argument.
    #[arg(value_name = "PATH")]
    pub(crate) path: Option<PathBuf>,
}

/// `kiln tag` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct TagArgs {
    /// The existing image.
    pub(crate) source: String,
    /// The new name.
    pub(crate) target: String,
}

/// `kiln rmi` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct RmiArgs {
    /// The images to remove.
    #[arg(required = true)]
    pub(crate) images: Vec<String>,
}

/// Parses `--add-host NAME=IP` or `NAME:IP` as docker and buildx do: `=` first, an IP in
/// brackets, several IPs separated by commas (an entry each), `host-gateway` for `gateway`.
pub(crate) fn add_hosts(
    texts: &[String],
    gateway: std::net::IpAddr,
) -> anyhow::Result<Vec<(String, std::net::IpAddr)>> {
    use anyhow::Context as _;
    let mut out = Vec::new();
    for text in texts {
        let (host, ips) = text
            .split_once('=')
            .or_else(|| text.split_once(':'))
            .filter(|(host, ips)| !host.is_empty() && !ips.is_empty())
            .with_context(|| format!("invalid host {text}"))?;
        if ips == "host-gateway" {
            out.push((host.to_owned(), gateway));
            continue;
        }
        for ip in ips.split(',') {
            let ip = ip
                .strip_prefix('[')
                .and_then(|ip| ip.strip_suffix(']'))
                .unwrap_or(ip);
            let ip = ip.parse().with_context(|| format!("invalid host {text}"))?;
            out.push((host.to_owned(), ip));
        }
    }
    Ok(out)
}

/// `kiln run` arguments (docker's names; `-h` is `--hostname`, as docker's).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub(crate) struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub(crate) help: Option<bool>,
    /// Remove the container's file system changes when it exits.
    #[arg(long)]
    pub(crate) rm: bool,
    /// Keep standard input open.
    #[arg(long, short)]
    pub(crate) interactive: bool,
    /// Give the process a terminal.
    #[arg(long, short)]
    pub(crate) tty: bool,
    /// Set an environment variable: `KEY=VALUE` (a bare `KEY` takes kiln's own value).
    #[arg(long, short, value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Read environment variables from a file (one `KEY=VALUE` a line).
    #[arg(long, value_name = "FILE")]
    pub(crate) env_file: Vec<PathBuf>,
    /// Bind-mount a host directory (`/HOST:CONTAINER[:ro]`) or mount a named volume, made on
    /// first use (`NAME:CONTAINER[:ro]`).
    #[arg(long, short, value_name = "SOURCE:CONTAINER[:ro]")]
    pub(crate) volume: Vec<String>,
    /// Mount a tmpfs on this directory, with `mount -o` options over Docker's defaults
    /// `noexec,nosuid,nodev` (`/run:size=64m,mode=1777,exec`).
    #[arg(long, value_name = "DIR[:OPTIONS]")]
    pub(crate) tmpfs: Vec<String>,
    /// Working directory inside the container.
    #[arg(long, short, value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// User (`name`, `uid`, `uid:gid`).
    #[arg(long, short, value_name = "USER")]
    pub(crate) user: Option<String>,
    /// Replace the image's entrypoint.
    #[arg(long, value_name = "COMMAND")]
    pub(crate) entrypoint: Option<String>,
    /// Run the container in the background and print its ID.
    #[arg(long, short)]
    pub(crate) detach: bool,
    /// Restart policy to apply when a container exits: `no`, `on-failure[:max-retries]`,
    /// `always`, `unless-stopped`.
    #[arg(long, default_value = "no", value_name = "POLICY")]
    pub(crate) restart: String,
    /// Number of CPUs (`1.5`).
    #[arg(long, value_name = "DECIMAL")]
    pub(crate) cpus: Option<String>,
    /// Add Linux capabilities (`NET_ADMIN`, `ALL`).
    #[arg(long, value_name = "CAP")]
    pub(crate) cap_add: Vec<String>,
    /// Drop Linux capabilities (`NET_RAW`, `ALL`).
    #[arg(long, value_name = "CAP")]
    pub(crate) cap_drop: Vec<String>,
    /// Signal to stop the container [default: the image's STOPSIGNAL, else SIGTERM].
    #[arg(long, value_name = "SIGNAL")]
    pub(crate) stop_signal: Option<String>,
    /// Command to run to check health (replaces the image's HEALTHCHECK).
    #[arg(long, value_name = "COMMAND")]
    pub(crate) health_cmd: Option<String>,
    /// Time between running the check (`ms|s|m|h`) [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub(crate) health_interval: Option<String>,
    /// Maximum time to allow one check to run (`ms|s|m|h`) [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub(crate) health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy [default: 3].
    #[arg(long, value_name = "N")]
    pub(crate) health_retries: Option<u32>,
    /// Start period for the container to initialize before starting health-retries countdown
    /// (`ms|s|m|h`) [default: 0s].
    #[arg(long, value_name = "DURATION")]
    pub(crate) health_start_period: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long)]
    pub(crate) no_healthcheck: bool,
    /// Connect the container to a network: `bridge` (kiln's default network, with NAT and
    /// name resolution between containers), `none`, `host`, or `container:NAME` (another
    /// container's network namespace).
    #[arg(
        long,
        visible_alias = "net",
        default_value = "bridge",
        value_name = "NETWORK"
    )]
    pub(crate) network: String,
    /// Publish a container's port to the host: `[IP:][HOST_PORT:]CONTAINER_PORT[/udp]`
    /// (an empty host port takes any free one).
    #[arg(long, short, value_name = "PORT")]
    pub(crate) publish: Vec<String>,
    /// Publish every port the image exposes (`EXPOSE`) to a free host port.
    #[arg(long, short = 'P')]
    pub(crate) publish_all: bool,
    /// Add a line to /etc/hosts: `HOST:IP` (`host-gateway` is the network's gateway).
    #[arg(long, value_name = "HOST:IP")]
    pub(crate) add_host: Vec<String>,
    /// Set a DNS server of the container.
    #[arg(long, value_name = "IP")]
    pub(crate) dns: Vec<String>,
    /// The container's hostname.
    #[arg(long, short = 'h', value_name = "NAME")]
    pub(crate) hostname: Option<String>,
    /// Give the container every capability, no seccomp filter and no masked paths, as
    /// `docker run --privileged`.
    #[arg(long)]
    pub(crate) privileged: bool,
    /// Mount the container's root file system read-only (its volumes and tmpfs mounts keep
    /// their own mode).
    #[arg(long)]
    pub(crate) read_only: bool,
    /// Memory limit in bytes (`k`, `m`, `g` suffixes).
    #[arg(long, short, value_name = "BYTES")]
    pub(crate) memory: Option<String>,
    /// Process count limit.
    #[arg(long, value_name = "N")]
    pub(crate) pids_limit: Option<u64>,
    /// A resource limit of the process: `nofile=1024:2048` (`-1`: unlimited).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub(crate) ulimit: Vec<kiln_runner::Ulimit>,
    /// The cgroup the container's cgroup goes below (relative to the hierarchy's root).
    #[arg(long, value_name = "CGROUP")]
    pub(crate) cgroup_parent: Option<String>,
    /// A name for the container (its snapshot's key when kept).
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Run the image of this platform (`linux/arm64`) from a multi-platform image, as
    /// `docker run --platform`; another architecture's runs under QEMU user emulation.
    #[arg(long, value_name = "PLATFORM")]
    pub(crate) platform: Option<String>,
    /// The image.
    pub(crate) image: String,
    /// The command and its arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

/// `kiln save` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct SaveArgs {
    /// The file to write.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: PathBuf,
    /// `docker` (docker-archive) or `oci` (OCI image layout tar).
    #[arg(long, default_value = "docker")]
    pub(crate) format: String,
    /// The image.
    pub(crate) image: String,
}

/// `kiln push` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    /// The image (`host/repository:tag`).
    pub(crate) image: String,
}

/// `kiln rm` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(long, short)]
    pub(crate) force: bool,
    /// The containers (names or IDs).
    #[arg(required = true, value_name = "CONTAINER")]
    pub(crate) containers: Vec<String>,
}

/// `kiln ps` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(long, short)]
    pub(crate) all: bool,
    /// Only display container IDs.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub(crate) no_trunc: bool,
}

/// `kiln logs` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    /// Follow log output.
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// Number of lines to show from the end of the logs (`all` or a number).
    #[arg(long, short = 'n', default_value = "all")]
    pub(crate) tail: String,
    /// Show timestamps.
    #[arg(long, short)]
    pub(crate) timestamps: bool,
    /// The container (name or ID).
    #[arg(value_name = "CONTAINER")]
    pub(crate) container: String,
}

/// `kiln exec` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ExecArgs {
    /// Keep STDIN open.
    #[arg(long, short)]
    pub(crate) interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(long, short)]
    pub(crate) tty: bool,
    /// Set environment variables.
    #[arg(long, short, value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long, short, value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// Username or UID (format: `<name|uid>[:<group|gid>]`).
    #[arg(long, short, value_name = "USER")]
    pub(crate) user: Option<String>,
    /// Give extended privileges to the command.
    #[arg(long)]
    pub(crate) privileged: bool,
    /// The container (name or ID).
    #[arg(value_name = "CONTAINER")]
    pub(crate) container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

/// `kiln stop` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct StopArgs {
    /// Signal to send to the container [default: its stop signal].
    #[arg(long, short, value_name = "SIGNAL")]
    pub(crate) signal: Option<String>,
    /// Seconds to wait before killing the container.
    #[arg(
        long,
        short = 't',
        value_name = "SECONDS",
        default_value_t = 10,
        allow_negative_numbers = true
    )]
    pub(crate) time: i64,
    /// The containers (names or IDs).
    #[arg(required = true, value_name = "CONTAINER")]
    pub(crate) containers: Vec<String>,
}

/// `kiln kill` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct KillArgs {
    /// Signal to send to the container.
    #[arg(long, short, default_value = "KILL", value_name = "SIGNAL")]
    pub(crate) signal: String,
    /// The containers (names or IDs).
    #[arg(required = true, value_name = "CONTAINER")]
    pub(crate) containers: Vec<String>,
}

/// `kiln inspect` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// The containers or volumes (names or IDs).
    #[arg(required = true, value_name = "NAME|ID")]
    pub(crate) objects: Vec<String>,
}

/// `kiln volume` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum VolumeCommand {
    /// Create a volume.
    Create {
        /// The volume's name [default: a random one].
        name: Option<String>,
    },
    /// List volumes.
    Ls {
        /// Only display volume names.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Remove one or more volumes.
    Rm {
        /// Force the removal of one or more volumes (no error for a missing one).
        #[arg(long, short)]
        force: bool,
        /// The volumes.
        #[arg(required = true, value_name = "VOLUME")]
        volumes: Vec<String>,
    },
    /// Display detailed information on one or more volumes.
    Inspect {
        /// The volumes.
        #[arg(required = true, value_name = "VOLUME")]
        volumes: Vec<String>,
    },
}
