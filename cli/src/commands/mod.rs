//! One module per `kiln` command, each a thin wrapper over library calls.

pub(crate) mod debug;
