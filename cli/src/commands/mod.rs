//! One module per `kiln` command, each a thin wrapper over library calls.

pub(crate) mod build;
pub(crate) mod container;
pub(crate) mod daemon;
pub(crate) mod debug;
pub(crate) mod du;
pub(crate) mod exec;
pub(crate) mod explain;
pub(crate) mod history;
pub(crate) mod host;
pub(crate) mod images;
pub(crate) mod load;
pub(crate) mod prune;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod rmi;
pub(crate) mod run;
pub(crate) mod save;
pub(crate) mod supervise;
pub(crate) mod tag;
pub(crate) mod volume;
pub(crate) mod yaml;
