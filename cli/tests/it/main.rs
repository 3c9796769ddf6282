//! The CLI's end-to-end tests: one test binary, a module per area, so that changing the CLI or a
//! helper links one executable instead of one per area. Tests that need root, namespaces or the
//! test registry skip with a reason when those are missing (`KILN_TEST_REQUIRE_ALL=1` makes a
//! skip fail); tests named `serial_*` share process-global state and run one at a time under
//! nextest (`.config/nextest.toml`).

mod common;

mod attestations;
mod build_checks;
mod build_dockerfile;
mod build_dockerfile_sources;
mod build_flags;
mod build_yaml;
mod daemon;
mod daemon_attestations;
mod daemon_checks;
mod daemon_client;
mod daemon_layouts;
mod daemon_local_sources;
mod debug_dump_llb;
mod dependency_direction;
mod explain;
mod exporters;
mod file_names;
mod gateway;
mod llb_cache;
mod llb_exec_mounts;
mod llb_git;
mod llb_http;
mod llb_image;
mod llb_merge_diff;
mod llb_vectors;
mod multiplatform;
mod path_escapes;
mod prune_du;
mod registry_tls;
mod remote_cache;
mod run;
mod run_lifecycle;
mod run_network;
mod store_leases;
