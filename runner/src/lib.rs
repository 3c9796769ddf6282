//! kiln-runner: kiln's own OCI-style process runtime.
//!
//! It will run one process in fresh mount, PID, UTS, IPC and network namespaces over a root
//! filesystem (a directory or an overlayfs stack), with pivot_root, a minimal /dev and /proc,
//! cgroup limits and extra mounts, and return its exit status. Every `RUN` step of a build and
//! every `kiln run` goes through it. It depends on no other kiln crate.
