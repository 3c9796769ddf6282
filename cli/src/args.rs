//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// kiln: a container image build engine.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The kiln commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Debugging tools.
    #[command(subcommand)]
    Debug(DebugCommand),
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
