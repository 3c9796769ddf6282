//! Docker's default seccomp profile, compiled to a BPF program before the fork.
//!
//! # Overview
//!
//! The rules below are moby's `profiles/seccomp/default.json` from the moby/profiles repository
//! at commit 3c28324314729dbade8287e868eef6338c42807a (2026-05-06, the file's latest change
//! as of cd3bed8061c7b7378b61fc6827c7885779417a75), written out as Rust data:
//!
//! 1. everything not listed fails with `EPERM` (`defaultErrnoRet: 1`);
//! 2. a rule applies only when its conditions hold for this container: the capabilities it
//!    names are (or, for `unless`, are not) in the container's set, the machine's architecture
//!    is among its `arches` (Go names, as moby matches `runtime.GOARCH`), and the kernel is at
//!    least its `min_kernel`;
//! 3. syscall names are resolved by libseccomp for the native architecture and its
//!    compatibility ones (x86 and x32 beside x86_64, arm beside aarch64, as moby's `archMap`);
//!    names libseccomp does not know are skipped, as moby does (libseccomp 2.5.4 lacks the
//!    newest: `mseal`, `listmount`, `statmount`, `uretprobe`, the `*xattrat` family, which then
//!    fail with `EPERM`);
//! 4. libseccomp exports the filter as BPF once per capability set, and the forked child only
//!    hands that program to the kernel (`sys::process`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use crate::error::{Error, Result};

mod profile;

use profile::*;

/// The machine's architecture in Go's naming, which the profile's `arches` use.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Compatibility architectures filtered beside the native one (moby's `archMap`).
fn extra_arches() -> &'static [ScmpArch] {
    match std::env::consts::ARCH {
        "x86_64" => &[ScmpArch::X86, ScmpArch::X32],
        "aarch64" => &[ScmpArch::Arm],
        _ => &[],
    }
}

/// The running kernel's `(major, minor)`, or `None` if `uname` says something unexpected.
fn kernel_version() -> Option<(u32, u32)> {
    let uts = nix::sys::utsname::uname().ok()?;
    let release = uts.release().to_str()?;
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn compare(arg: Arg) -> ScmpArgCompare {
    match arg {
        Arg::Less(index, value) => ScmpArgCompare::new(index, ScmpCompareOp::Less, value),
        Arg::Equal(index, value) => ScmpArgCompare::new(index, ScmpCompareOp::Equal, value),
        Arg::Greater(index, value) => ScmpArgCompare::new(index, ScmpCompareOp::Greater, value),
        Arg::MaskedEqual { index, mask, value } => {
            ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(mask), value)
        }
    }
}

fn seccomp_error(what: &'static str) -> impl FnOnce(libseccomp::error::SeccompError) -> Error {
    move |source| Error::Seccomp {
        what,
        source: Box::new(source),
    }
}

/// The rules that apply to a container with `capabilities`, each with its syscall names.
fn applicable(capabilities: u64) -> impl Iterator<Item = Rule> {
    let arch = go_arch();
    let kernel = kernel_version();
    std::iter::once(allow(ALLOWED))
        .chain(RULES.iter().copied())
        .filter(move |rule| rule.applies(capabilities, arch, kernel))
}

/// Builds the libseccomp filter for a container with `capabilities`.
fn filter(capabilities: u64) -> Result<ScmpFilterContext> {
    let mut filter = ScmpFilterContext::new(ScmpAction::Errno(DEFAULT_ERRNO))
        .map_err(seccomp_error("create the filter"))?;
    for arch in extra_arches() {
        filter
            .add_arch(*arch)
            .map_err(seccomp_error("add an architecture"))?;
    }
    // The filter is loaded by the child with a bare seccomp(2); these only matter to `load`.
    filter
        .set_ctl_nnp(false)
        .map_err(seccomp_error("clear no_new_privs"))?;
    for rule in applicable(capabilities) {
        let action = rule.errno.map_or(ScmpAction::Allow, ScmpAction::Errno);
        let conditions: Vec<ScmpArgCompare> = rule.args.iter().copied().map(compare).collect();
        for name in rule.names {
            // As moby: a name this libseccomp does not know is skipped.
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                tracing::trace!(syscall = name, "not known to libseccomp, left out");
                continue;
            };
            filter
                .add_rule_conditional(action, syscall, &conditions)
                .map_err(seccomp_error("add a rule"))?;
        }
    }
    Ok(filter)
}

/// The BPF program of Docker's default profile for a container with `capabilities`, built
/// once per capability set and shared.
pub(crate) fn program(capabilities: u64) -> Result<Arc<Program>> {
    static PROGRAMS: OnceLock<Mutex<HashMap<u64, Arc<Program>>>> = OnceLock::new();
    let programs = PROGRAMS.get_or_init(Mutex::default);
    if let Some(program) = programs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&capabilities)
    {
        return Ok(Arc::clone(program));
    }
    let program = Arc::new(Program(export(&filter(capabilities)?)?));
    programs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(capabilities, Arc::clone(&program));
    Ok(program)
}

/// A compiled filter: the instructions `seccomp(SECCOMP_SET_MODE_FILTER)` takes.
pub(crate) struct Program(Vec<libc::sock_filter>);

impl Program {
    pub(crate) fn instructions(&self) -> &[libc::sock_filter] {
        &self.0
    }
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Program({} instructions)", self.0.len())
    }
}

/// The filter's BPF instructions, through a memory file (libseccomp writes to a descriptor).
fn export(filter: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    let memfd =
        nix::sys::memfd::memfd_create(c"kiln-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|source| Error::Syscall {
                call: "memfd_create",
                source,
            })?;
    filter
        .export_bpf(&memfd)
        .map_err(seccomp_error("export the filter"))?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match nix::sys::uio::pread(&memfd, &mut chunk, bytes.len() as libc::off_t) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(source) => {
                return Err(Error::Syscall {
                    call: "pread",
                    source,
                });
            }
        }
    }
    const SIZE: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % SIZE != 0 {
        return Err(Error::SeccompProgram { len: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(SIZE)
        .map(|chunk| libc::sock_filter {
            code: u16::from_ne_bytes([chunk[0], chunk[1]]),
            jt: chunk[2],
            jf: chunk[3],
            k: u32::from_ne_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests;
