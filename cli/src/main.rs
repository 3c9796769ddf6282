//! The `kiln` binary: builds container images from Dockerfiles or LLB, daemonless by default.
//!
//! It only wires the crates: flags in `args.rs` (clap), one file per command in `commands/`
//! (a thin wrapper over library calls), `kiln.toml` read once in `config.rs`, the solver's
//! build wiring it shares with the daemon in `kiln-engine`, progress rendering in `progress.rs`,
//! table, size and time formatting in `format.rs`. Where new code goes: a new command is a
//! file in `commands/` and a variant in `args.rs`; its work belongs in a library crate, never
//! here — the CLI does not touch snapshots or export by itself (a test enforces it).

use std::process::ExitCode;

mod args;
mod commands;
mod config;
mod format;
mod progress;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = args::Cli::parse();
    init_tracing(match &args.command {
        args::Command::Daemon(daemon) if daemon.debug => DAEMON_DEBUG,
        args::Command::Daemon(_) => "info",
        _ => "warn",
    });
    match run(args) {
        Ok(code) => code,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

fn run(args: args::Cli) -> anyhow::Result<ExitCode> {
    // Read once, by the commands that use it.
    let config = || config::Config::load(args.config.as_deref());
    // With `--host` (`$KILN_HOST`), the commands that have a daemon do their work there.
    if let Some(host) = args.host.as_deref().filter(|h| !h.is_empty()) {
        if let Some(done) = commands::host::run(host, &args.command) {
            return done;
        }
    }
    match args.command {
        args::Command::Debug(cmd) => commands::debug::run(cmd),
        args::Command::Yaml(cmd) => commands::yaml::run(cmd),
        args::Command::Pull(pull) => commands::pull::run(&args.root, &config()?, &pull),
        args::Command::Images => commands::images::run(&args.root),
        args::Command::Load(load) => commands::load::run(&args.root, &load),
        args::Command::Tag(tag) => commands::tag::run(&args.root, &tag),
        args::Command::Rmi(rmi) => commands::rmi::run(&args.root, &rmi),
        args::Command::Ps(ps) => commands::container::ps(&args.root, &ps),
        args::Command::Rm(rm) => commands::container::rm(&args.root, &rm),
        args::Command::Logs(logs) => commands::container::logs(&args.root, &logs),
        args::Command::Stop(stop) => commands::container::stop(&args.root, &stop),
        args::Command::Kill(kill) => commands::container::kill(&args.root, &kill),
        args::Command::Inspect(inspect) => commands::container::inspect(&args.root, &inspect),
        args::Command::Exec(exec) => Ok(commands::exec::run(&args.root, &exec)),
        args::Command::Volume(cmd) => commands::volume::run(&args.root, cmd),
        args::Command::ContainerSupervise { id } => {
            Ok(commands::supervise::run(&args.root, config(), &id))
        }
        args::Command::Save(save) => commands::save::run(&args.root, &config()?, &save),
        args::Command::Push(push) => commands::push::run(&args.root, &config()?, &push),
        args::Command::Run(run) => Ok(commands::run::run(
            &args.root,
            args.config.as_deref(),
            config(),
            &run,
        )),
        args::Command::Prune(prune) => commands::prune::run(&args.root, &prune),
        args::Command::Du(du) => commands::du::run(&args.root, &du),
        args::Command::History(history) => commands::history::run(&args.root, &history),
        args::Command::Explain(explain) => commands::explain::run(&args.root, &explain),
        args::Command::Build(build) => commands::build::run(&args.root, &config()?, &build),
        args::Command::Daemon(daemon) => commands::daemon::run(&args.root, &config()?, &daemon),
        args::Command::GatewayFrontend => commands::daemon::gateway_frontend(),
    }
}

/// `kiln daemon --debug`: kiln's own debug events, the libraries' warnings.
const DAEMON_DEBUG: &str = "warn,kiln=debug,kiln_daemon=debug,kiln_engine=debug,kiln_solver=debug,\
kiln_cache=debug,kiln_exporters=debug,kiln_runner=debug,kiln_frontend=debug";

/// Logs to stderr by `KILN_LOG`, else at `default_level`.
fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[expect(clippy::print_stderr, reason = "the binary reports errors on stderr")]
fn report(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  Caused by: {cause}");
    }
}
