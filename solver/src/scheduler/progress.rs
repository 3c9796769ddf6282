//! Progress as data: the events a solve reports, the [`Reporter`] that receives them, and the
//! [`OpContext`] through which an op reports its output and its phases.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::history::MissReason;

/// What a solve reports as it goes. Progress is data: the CLI renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The vertex missed the cache, and why; its op runs next (reported before
    /// [`Event::Started`], which may wait for inputs and a permit).
    Missed {
        /// The vertex digest.
        vertex: Arc<str>,
        /// Why it missed.
        reason: MissReason,
    },
    /// The op started running.
    Started {
        /// The vertex digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
    },
    /// The result came from the cache; the op did not run.
    Cached {
        /// The vertex digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
    },
    /// The op finished.
    Completed {
        /// The vertex digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// How long it ran.
        duration: Duration,
    },
    /// The op failed.
    Failed {
        /// The vertex digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// The error, as text.
        error: String,
    },
    /// A phase of an op ended: a part of its work with a name of its own (`pull`, `unpack`,
    /// `checksum`, `transfer`, `mounts`, `run`, `commit`, `copy`), reported by the op.
    Phase {
        /// The vertex digest.
        vertex: Arc<str>,
        /// What the op did (a remote build's progress names its own).
        name: Cow<'static, str>,
        /// When the phase began.
        started: Instant,
        /// When it ended.
        ended: Instant,
        /// The bytes it moved or read, when it counts them.
        bytes: Option<u64>,
    },
    /// Output of a running op (for exec: its stdout or stderr).
    Log {
        /// The vertex digest.
        vertex: Arc<str>,
        /// 1 for stdout, 2 for stderr.
        stream: u8,
        /// The bytes, as they came.
        data: Vec<u8>,
    },
}

/// Receives progress events.
pub trait Reporter: Send + Sync + 'static {
    /// Called for every event, from any thread.
    fn event(&self, event: Event);

    /// The input vertices of `vertex`, when they are learnt from elsewhere than the
    /// Definition the solve has (a build in a daemon names them in its progress).
    fn inputs(&self, _vertex: &Arc<str>, _inputs: &[String]) {}
}

/// A reporter that drops every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReporter;

impl Reporter for NoReporter {
    fn event(&self, _event: Event) {}
}

/// What an op gets to know about the vertex it runs for.
#[derive(Clone)]
pub struct OpContext {
    pub(super) vertex: Arc<str>,
    pub(super) reporter: Arc<dyn Reporter>,
}

impl OpContext {
    /// The digest of the vertex.
    pub fn vertex(&self) -> &Arc<str> {
        &self.vertex
    }

    /// Reports a chunk of the op's output (1 = stdout, 2 = stderr).
    pub fn log(&self, stream: u8, data: &[u8]) {
        self.reporter.event(Event::Log {
            vertex: self.vertex.clone(),
            stream,
            data: data.to_vec(),
        });
    }

    /// Starts a phase of the op; it is reported ([`Event::Phase`]) when the guard is dropped.
    pub fn phase(&self, name: &'static str) -> Phase {
        Phase {
            ctx: self.clone(),
            name,
            started: Instant::now(),
            bytes: None,
        }
    }

    /// Reports a phase that began at `started` and ends now.
    pub fn phase_ended(&self, name: &'static str, started: Instant, bytes: Option<u64>) {
        self.reporter.event(Event::Phase {
            vertex: self.vertex.clone(),
            name: Cow::Borrowed(name),
            started,
            ended: Instant::now(),
            bytes,
        });
    }
}

/// A phase of an op under way (see [`OpContext::phase`]); reported when dropped, also when
/// the op fails within it.
pub struct Phase {
    ctx: OpContext,
    name: &'static str,
    started: Instant,
    bytes: Option<u64>,
}

impl Phase {
    /// Sets the bytes the phase moved or read.
    pub fn bytes(&mut self, bytes: u64) {
        self.bytes = Some(bytes);
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        self.ctx.phase_ended(self.name, self.started, self.bytes);
    }
}
