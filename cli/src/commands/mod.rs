//! One module per `kiln` command, each a thin wrapper over library calls.

pub(crate) mod build;
pub(crate) mod daemon;
pub(crate) mod debug;
pub(crate) mod du;
pub(crate) mod explain;
pub(crate) mod history;
pub(crate) mod images;
pub(crate) mod load;
pub(crate) mod prune;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod rmi;
pub(crate) mod run;
pub(crate) mod run_network;
pub(crate) mod save;
pub(crate) mod tag;
pub(crate) mod yaml;
