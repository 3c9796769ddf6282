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
}

/// The kiln commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Debugging tools.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// List images.
    Images,
    /// Build an image.
    Build(BuildArgs),
}

/// `kiln debug` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum DebugCommand {
    /// Print each op of an LLB Definition as one JSON object per line.
    DumpLlb {
        /// The marshalled Definition (`-` or absent: standard input).
        file: Option<PathBuf>,
        /// Print the graph in Graphviz DOT instead.
        #[arg(long)]
        dot: bool,
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
    /// Do not use cached results.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Progress output: `auto`, `plain` or `tty` (all plain for now).
    #[arg(long, default_value = "auto")]
    pub(crate) progress: String,
}
