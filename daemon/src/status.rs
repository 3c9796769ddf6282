//! Build progress for `Control.Status`: each build (by its ref) keeps the log of the
//! `StatusResponse`s its solve reported, and any number of `Status` streams read it from the
//! start, then follow it until the build ends. A `Status` may come before its `Solve` (buildctl
//! sends both at once), so either one makes the entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures::Stream;
use kiln_solver::{Event, Reporter};
use prost_types::Timestamp;
use tokio::sync::Notify;

use crate::pb::control::{StatusResponse, Vertex, VertexLog, VertexStatus};

/// How long a finished build's progress stays readable, for a `Status` that comes late.
const KEEP_FINISHED: Duration = Duration::from_secs(60);

/// The progress of one build.
#[derive(Default)]
pub(crate) struct Progress {
    state: Mutex<ProgressState>,
    changed: Notify,
}

#[derive(Default)]
struct ProgressState {
    log: Vec<StatusResponse>,
    done: bool,
    /// Each vertex as last reported (a vertex update repeats its whole state, as BuildKit's).
    vertexes: HashMap<Arc<str>, Vertex>,
    /// Each vertex's inputs, as the solve named them, for its first update.
    inputs: HashMap<Arc<str>, Vec<String>>,
}

impl Progress {
    fn push(&self, update: impl FnOnce(&mut ProgressState) -> StatusResponse) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let response = update(&mut state);
        state.log.push(response);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Ends the log: the streams reading it end after its last response.
    pub(crate) fn finish(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .done = true;
        self.changed.notify_waiters();
    }

    /// The log from its start, following it until the build ends.
    pub(crate) fn stream(self: Arc<Self>) -> impl Stream<Item = StatusResponse> + Send + 'static {
        futures::stream::unfold((self, 0usize), |(progress, next)| async move {
            loop {
                let notify = progress.clone();
                let changed = notify.changed.notified();
                {
                    let state = progress
                        .state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if let Some(response) = state.log.get(next) {
                        let response = response.clone();
                        drop(state);
                        return Some((response, (progress, next + 1)));
                    }
                    if state.done {
                        return None;
                    }
                }
                changed.await;
            }
        })
    }
}

fn timestamp(time: SystemTime) -> Timestamp {
    Timestamp::from(time)
}

impl Reporter for Progress {
    fn event(&self, event: Event) {
        // BuildKit's status has no place for why a vertex missed the cache.
        if matches!(event, Event::Missed { .. }) {
            return;
        }
        let now = SystemTime::now();
        self.push(|state| {
            let mut vertex_update = |digest: &Arc<str>, name: &str, edit: &dyn Fn(&mut Vertex)| {
                let vertex = state
                    .vertexes
                    .entry(digest.clone())
                    .or_insert_with(|| Vertex {
                        digest: digest.to_string(),
                        name: name.to_owned(),
                        inputs: state.inputs.get(digest).cloned().unwrap_or_default(),
                        ..Vertex::default()
                    });
                edit(vertex);
                StatusResponse {
                    vertexes: vec![vertex.clone()],
                    ..StatusResponse::default()
                }
            };
            match event {
                Event::Started { vertex, name } => vertex_update(&vertex, &name, &|v| {
                    v.started = Some(timestamp(now));
                }),
                Event::Cached { vertex, name } => vertex_update(&vertex, &name, &|v| {
                    v.cached = true;
                    v.started.get_or_insert(timestamp(now));
                    v.completed = Some(timestamp(now));
                }),
                Event::Completed { vertex, name, .. } => vertex_update(&vertex, &name, &|v| {
                    v.started.get_or_insert(timestamp(now));
                    v.completed = Some(timestamp(now));
                }),
                Event::Failed {
                    vertex,
                    name,
                    error,
                } => vertex_update(&vertex, &name, &|v| {
                    v.started.get_or_insert(timestamp(now));
                    v.completed = Some(timestamp(now));
                    v.error.clone_from(&error);
                }),
                // Not sent (see above).
                Event::Missed { .. } => StatusResponse::default(),
                // A phase is a status of its vertex, as BuildKit reports a layer's download.
                Event::Phase {
                    vertex,
                    name,
                    started,
                    ended,
                    bytes,
                } => {
                    let at = |instant: Instant| {
                        now.checked_sub(Instant::now().saturating_duration_since(instant))
                            .unwrap_or(now)
                    };
                    let bytes = bytes.map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX));
                    StatusResponse {
                        statuses: vec![VertexStatus {
                            id: name.to_string(),
                            vertex: vertex.to_string(),
                            name: name.into_owned(),
                            current: bytes,
                            total: bytes,
                            timestamp: Some(timestamp(now)),
                            started: Some(timestamp(at(started))),
                            completed: Some(timestamp(at(ended))),
                        }],
                        ..StatusResponse::default()
                    }
                }
                Event::Log {
                    vertex,
                    stream,
                    data,
                } => StatusResponse {
                    logs: vec![VertexLog {
                        vertex: vertex.to_string(),
                        timestamp: Some(timestamp(now)),
                        stream: i64::from(stream),
                        msg: data,
                    }],
                    ..StatusResponse::default()
                },
            }
        });
    }

    fn inputs(&self, vertex: &Arc<str>, inputs: &[String]) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .inputs
            .insert(vertex.clone(), inputs.to_vec());
    }
}

/// The progress of the builds, by ref.
#[derive(Default, Clone)]
pub(crate) struct Builds {
    progress: Arc<Mutex<HashMap<String, Arc<Progress>>>>,
}

impl Builds {
    /// The progress of the build `reference`, made if it is not there yet.
    pub(crate) fn get(&self, reference: &str) -> Arc<Progress> {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(reference.to_owned())
            .or_default()
            .clone()
    }

    /// Ends the progress of `reference`, and forgets it a while later.
    pub(crate) fn finish(&self, reference: &str) {
        self.get(reference).finish();
        let builds = self.clone();
        let reference = reference.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(KEEP_FINISHED).await;
            builds
                .progress
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&reference);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    #[tokio::test]
    async fn a_late_reader_sees_the_whole_build_and_then_its_end() {
        let builds = Builds::default();
        let progress = builds.get("b1");
        let vertex: Arc<str> = Arc::from("sha256:aa");
        progress.event(Event::Started {
            vertex: vertex.clone(),
            name: "step".into(),
        });
        progress.event(Event::Log {
            vertex: vertex.clone(),
            stream: 1,
            data: b"hello\n".to_vec(),
        });
        let reader = tokio::spawn(builds.get("b1").stream().collect::<Vec<_>>());
        progress.event(Event::Failed {
            vertex,
            name: "step".into(),
            error: "exit code 1".into(),
        });
        builds.finish("b1");
        let seen = reader.await.unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].vertexes[0].digest, "sha256:aa");
        assert!(seen[0].vertexes[0].started.is_some());
        assert_eq!(seen[1].logs[0].msg, b"hello\n");
        assert_eq!(seen[1].logs[0].stream, 1);
        let failed = &seen[2].vertexes[0];
        assert_eq!(failed.error, "exit code 1");
        assert_eq!(failed.started, seen[0].vertexes[0].started);
        assert!(failed.completed.is_some());
    }
}
