//! kiln-runner: kiln's own OCI-style process runtime.
//!
//! [`Runner::run`] runs one process described by a [`Spec`] in fresh mount, PID, UTS, IPC and
//! (unless [`NetworkMode::Host`]) network namespaces, over a root filesystem that is a directory
//! or an overlayfs stack ([`Rootfs`]), and returns its [`ExitStatus`]. The process sees a fresh
//! /proc, a read-only /sys, a small /dev, generated /etc/hosts, /etc/resolv.conf and
//! /etc/hostname, Docker's default capabilities and seccomp profile, masked paths, nodev on
//! every mount but the allowed device nodes in /dev (plus device rules on cgroup v1), and the
//! cgroup limits of its [`Resources`] and the [`Ulimit`]s of its process; [`Security::Insecure`]
//! lifts the confinement (capabilities, seccomp, masks, nodev, device rules) for builds
//! allowed `security.insecure` and `kiln run --privileged`. The
//! process itself is PID 1 of its namespace, as under runc; when it exits the kernel kills
//! whatever else is left. Output streams to the caller's sinks as it arrives; a [`Handle`]
//! cancels, signals or resizes the container from another thread.
//!
//! Every `RUN` step of a build (the solver's `Executor`, adapted in `cli`) and every `kiln run`
//! ([`run_spec`] turns an image config plus Docker-style overrides into a spec) goes through
//! here. The crate depends on no other kiln crate.
//!
//! Containers are started by forking the calling process — no helper binary — so a step costs
//! little more than two forks and its mounts (`bench/runner.sh` compares it with runc); all
//! mounts are made inside the container's own mount namespace and vanish with it. See the
//! `sys::process` module for the fork discipline.
//!
//! Where new code goes: a new setting of a container is a field of [`Spec`] (`spec.rs`), turned
//! into mount and syscall steps by the plan (`plan/`, unit-tested against the recording fake in
//! `sys/fake.rs`); a new syscall is a method of the `Sys` trait (`sys/`), the only place with
//! `unsafe`; resource limits go into `cgroup/` or `ulimit.rs`, sandbox rules into `seccomp/`.
//!
//! ```no_run
//! use kiln_runner::{Handle, Rootfs, Runner, Spec};
//!
//! let runner = Runner::new("/run/kiln/runner");
//! let rootfs = Rootfs::Dir { path: "/var/lib/kiln/rootfs".into(), readonly: false };
//! let spec = Spec::new(rootfs, vec!["/bin/echo".into(), "hello".into()]);
//! let (mut out, mut err) = (Vec::new(), Vec::new());
//! let status = runner.run(spec, &mut out, &mut err, &Handle::new()?)?;
//! assert!(status.success());
//! assert_eq!(out, b"hello\n");
//! # Ok::<(), kiln_runner::Error>(())
//! ```

mod capability;
mod cgroup;
pub mod emulation;
mod error;
mod exec;
mod image;
mod plan;
mod run;
mod seccomp;
mod spec;
mod state;
mod stubs;
mod sys;
mod tmpfs;
mod ulimit;
mod user;
mod view;

pub use crate::capability::CapabilityChanges;
pub use crate::error::{Error, Result};
pub use crate::exec::{ExecProcess, ExecSpec, exec, parse_signal, signal_process, spawn_exec};
pub use crate::image::{ImageConfig, RunOverrides, run_spec};
pub use crate::run::{CancelOnDrop, DOCKER_DEFAULT_CAPABILITIES, Handle, Runner};
pub use crate::spec::{
    ExitStatus, Mount, NetworkMode, Resources, Rootfs, Security, Spec, Stdio, TerminalSize,
    TmpfsOptions,
};
pub use crate::ulimit::Ulimit;
pub use nix::sys::signal::Signal;
