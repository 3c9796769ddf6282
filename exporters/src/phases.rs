//! The phases of an export, timed for the build's trace: `compress` (the image's new layer
//! blobs written), `diff` (the diff IDs of an image stored with its manifest pending) and
//! `push` (an image or index sent to one name). An [`ExportContext`](crate::ExportContext)
//! notes them as its outputs run; each output's [`ExportResponse`](crate::ExportResponse)
//! carries the phases of its own export.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// One phase of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPhase {
    /// What the export did (`compress`, `diff`, `push`).
    pub name: &'static str,
    /// When it began.
    pub started: Instant,
    /// When it ended.
    pub ended: Instant,
    /// The bytes it wrote, when it counts them.
    pub bytes: Option<u64>,
}

/// The phases noted so far; clones note into the same list.
#[derive(Debug, Clone, Default)]
pub struct PhaseLog(Arc<Mutex<Vec<ExportPhase>>>);

impl PhaseLog {
    /// Notes the phase `name` begun at `started`, ended now.
    pub fn note(&self, name: &'static str, started: Instant, bytes: Option<u64>) {
        let phase = ExportPhase {
            name,
            started,
            ended: Instant::now(),
            bytes,
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(phase);
    }

    /// The phases noted since the last take, in the order they ended.
    pub fn take(&self) -> Vec<ExportPhase> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
