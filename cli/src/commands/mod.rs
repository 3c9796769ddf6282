//! One module per `kiln` command, each a thin wrapper over library calls.

pub(crate) mod build;
pub(crate) mod debug;
pub(crate) mod images;
pub(crate) mod pull;
