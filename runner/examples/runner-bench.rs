//! Runs `/bin/true` in fresh containers and prints per-run wall-clock times.
//!
//! `runner-bench ROOTFS [COUNT]` runs COUNT containers one after another from this process (what
//! a build sees) and prints one line per run in microseconds, then the median. With COUNT 1 it
//! is the one-container-per-process variant that `bench/runner.sh` times against other CLIs.
#![expect(clippy::print_stdout, reason = "a benchmark's output is its report")]

use std::time::Instant;

use kiln_runner::{Handle, NetworkMode, Rootfs, Runner, Spec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // KILN_LOG=kiln_runner=debug shows each run's phases.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("KILN_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let rootfs = args.next().ok_or("usage: runner-bench ROOTFS [COUNT]")?;
    let count: usize = args.next().map_or(Ok(1), |c| c.parse())?;
    let state = std::env::var("KILN_RUNNER_STATE")
        .unwrap_or_else(|_| "/dev/shm/kiln-runner-bench".to_owned());
    let runner = Runner::new(state);
    // KILN_BENCH_NETWORK=host skips the network namespace, to see what it costs.
    let host_network = std::env::var("KILN_BENCH_NETWORK").as_deref() == Ok("host");
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let mut spec = Spec::new(
            Rootfs::Dir {
                path: rootfs.clone().into(),
                readonly: false,
            },
            vec!["/bin/true".to_owned()],
        );
        if host_network {
            spec.network = NetworkMode::Host;
        }
        let started = Instant::now();
        let status = runner.run(
            spec,
            &mut std::io::sink(),
            &mut std::io::sink(),
            &Handle::new()?,
        )?;
        times.push(started.elapsed().as_micros());
        if !status.success() {
            return Err(format!("/bin/true ended with {status:?}").into());
        }
    }
    if count > 1 {
        for t in &times {
            println!("run_us {t}");
        }
        times.sort_unstable();
        println!("median_us {}", times[times.len() / 2]);
    }
    Ok(())
}
