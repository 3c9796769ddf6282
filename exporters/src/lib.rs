//! kiln-exporters: turns a solved result into something other tools accept.
//!
//! It will own the OCI image layout (directory or tar), the docker-archive tar that `docker load`
//! reads, the local directory and tar outputs, and registry push. Layers come from `kiln-cache`,
//! compressed once and shared between outputs.
