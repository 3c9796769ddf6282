//! The record of one build, for `kiln history` and `kiln explain`: what each step did, when,
//! for how long, and why it missed the cache.
//!
//! A [`Recorder`] is a [`Reporter`] placed in front of the build's own: it notes every event
//! and passes it on. [`Recorder::finish`] then makes the [`BuildRecord`] the caller stores
//! (the store keeps it as bytes, [`BuildRecord::to_json`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::history::MissReason;
use crate::scheduler::{Event, Reporter};

/// What became of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Taken from the cache.
    Cached,
    /// Ran and finished.
    Completed,
    /// Ran and failed.
    Failed,
    /// Missed the cache but never finished: the build ended first.
    Canceled,
}

/// One step (vertex) of a build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The vertex digest.
    pub vertex: String,
    /// Its name in the build (`[stage 2/4] RUN make`).
    pub name: String,
    /// What became of it.
    pub status: StepStatus,
    /// Why it missed the cache (steps that ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miss: Option<MissReason>,
    /// When it was first reported, in milliseconds since the build started.
    pub queued_ms: u64,
    /// When it started running, in milliseconds since the build started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// When it ended, in milliseconds since the build started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_ms: Option<u64>,
    /// The first line of its error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The digests of the vertices it reads, in order.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The phases its op reported, in the order they ended (at most [`MAX_PHASES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseRecord>,
}

/// How many phases a step keeps; an op reporting more (one per layer, say) keeps the first.
const MAX_PHASES: usize = 64;

/// A phase of a step (see [`Event::Phase`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// What the op did (`pull`, `unpack`, `checksum`, `transfer`, `mounts`, `run`, `commit`,
    /// `copy`).
    pub name: String,
    /// When it began, in milliseconds since the build started.
    pub started_ms: u64,
    /// When it ended, in milliseconds since the build started.
    pub ended_ms: u64,
    /// The bytes it moved or read, when the op counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl StepRecord {
    /// How long it ran, in milliseconds (0 for a cached step).
    pub fn ran_ms(&self) -> u64 {
        match (self.status, self.started_ms, self.completed_ms) {
            (StepStatus::Cached, _, _) => 0,
            (_, Some(start), Some(end)) => end.saturating_sub(start),
            _ => 0,
        }
    }
}

/// How a build ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildStatus {
    /// It made its result.
    Completed,
    /// It failed.
    Failed,
}

/// One build: its id, what it built, how it ended, and its steps in the order reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// The build's id (as buildx's build refs: 25 lowercase letters and digits).
    pub id: String,
    /// What was built: the Dockerfile's name and target, or the Definition's file.
    pub name: String,
    /// How it ended.
    pub status: BuildStatus,
    /// When it started (seconds since the Unix epoch).
    pub created: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The names of the build args it was given (not their values), so that a changed
    /// variable can be named as a build arg.
    #[serde(default)]
    pub build_args: Vec<String>,
    /// Its steps.
    pub steps: Vec<StepRecord>,
    /// How long its export took after its steps (images, files, caches), in milliseconds;
    /// `None` when it exported nothing or failed first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_ms: Option<u64>,
    /// The export's phases (`compress`, `diff`, `push`), in milliseconds since the build
    /// started, as the steps' phases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_phases: Vec<PhaseRecord>,
}

impl BuildRecord {
    /// The record as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a build record always serializes")
    }

    /// A record from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// How many steps came from the cache.
    pub fn cached_steps(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Cached)
            .count()
    }

    /// The step with this vertex digest.
    pub fn step(&self, vertex: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.vertex == vertex)
    }

    /// The critical path: the chain of steps, each reading the one before, whose running
    /// times add up to the most; with that sum in milliseconds. Steps are the vertices, their
    /// `inputs` the edges (inputs not recorded count as nothing).
    pub fn critical_path(&self) -> (u64, Vec<&StepRecord>) {
        let index: HashMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(n, s)| (s.vertex.as_str(), n))
            .collect();
        // The longest chain ending at each step, by depth-first search without recursion
        // (chains may be thousands deep); a cycle, which a Definition cannot have, is cut.
        let mut best: Vec<Option<(u64, Option<usize>)>> = vec![None; self.steps.len()];
        let mut open = vec![false; self.steps.len()];
        for start in 0..self.steps.len() {
            let mut stack = vec![(start, false)];
            while let Some((n, expanded)) = stack.pop() {
                if best[n].is_some() {
                    continue;
                }
                let inputs = self.steps[n]
                    .inputs
                    .iter()
                    .filter_map(|i| index.get(i.as_str()).copied());
                if expanded {
                    let before = inputs
                        .filter_map(|i| best[i].map(|(total, _)| (total, i)))
                        .max();
                    let own = self.steps[n].ran_ms();
                    best[n] = Some(match before {
                        Some((total, i)) => (total + own, Some(i)),
                        None => (own, None),
                    });
                    open[n] = false;
                } else if !open[n] {
                    open[n] = true;
                    stack.push((n, true));
                    stack.extend(inputs.filter(|&i| !open[i]).map(|i| (i, false)));
                }
            }
        }
        let Some((end, (total, _))) = best
            .iter()
            .enumerate()
            .filter_map(|(n, b)| b.map(|b| (n, b)))
            .max_by_key(|(_, (total, _))| *total)
        else {
            return (0, Vec::new());
        };
        let mut path = vec![&self.steps[end]];
        let mut at = best[end].and_then(|(_, before)| before);
        while let Some(n) = at {
            path.push(&self.steps[n]);
            at = best[n].and_then(|(_, before)| before);
        }
        path.reverse();
        (total, path)
    }
}

/// A new build id: 25 lowercase letters and digits, as buildx's build refs.
pub fn new_build_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..25)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

struct State {
    steps: Vec<StepRecord>,
    index: HashMap<Arc<str>, usize>,
    /// Inputs reported apart from the events ([`Reporter::inputs`]).
    inputs: HashMap<Arc<str>, Vec<String>>,
}

/// Notes a build's events for its [`BuildRecord`] and passes them on to `next`.
pub struct Recorder {
    started: Instant,
    created: u64,
    next: Arc<dyn Reporter>,
    state: Mutex<State>,
}

impl Recorder {
    /// A recorder passing every event on to `next`; the build's clock starts now.
    pub fn new(next: Arc<dyn Reporter>) -> Self {
        Self {
            started: Instant::now(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            next,
            state: Mutex::new(State {
                steps: Vec::new(),
                index: HashMap::new(),
                inputs: HashMap::new(),
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.started.elapsed())
    }

    /// The time `at`, in milliseconds since the build started (0 for an earlier time).
    pub fn ms_at(&self, at: Instant) -> u64 {
        millis(at.saturating_duration_since(self.started))
    }

    /// The build's record; steps still running are canceled.
    pub fn finish(
        &self,
        id: String,
        name: String,
        status: BuildStatus,
        build_args: Vec<String>,
    ) -> BuildRecord {
        let (mut steps, inputs) = {
            let state = lock(&self.state);
            (state.steps.clone(), state.inputs.clone())
        };
        let end = self.now_ms();
        for step in &mut steps {
            if let Some(inputs) = inputs.get(step.vertex.as_str()) {
                inputs.clone_into(&mut step.inputs);
            }
            if step.completed_ms.is_none() && step.status != StepStatus::Cached {
                step.status = StepStatus::Canceled;
                step.completed_ms = Some(end);
            }
        }
        BuildRecord {
            id,
            name,
            status,
            created: self.created,
            duration_ms: end,
            build_args,
            steps,
            export_ms: None,
            export_phases: Vec::new(),
        }
    }
}

impl Reporter for Recorder {
    fn event(&self, event: Event) {
        let at = self.now_ms();
        {
            let mut state = lock(&self.state);
            let state = &mut *state;
            let mut step = |vertex: &Arc<str>, name: Option<&str>| -> usize {
                let n = *state.index.entry(vertex.clone()).or_insert_with(|| {
                    state.steps.push(StepRecord {
                        vertex: vertex.to_string(),
                        name: String::new(),
                        status: StepStatus::Canceled,
                        miss: None,
                        queued_ms: at,
                        started_ms: None,
                        completed_ms: None,
                        error: None,
                        inputs: Vec::new(),
                        phases: Vec::new(),
                    });
                    state.steps.len() - 1
                });
                if let Some(name) = name.filter(|n| !n.is_empty()) {
                    name.clone_into(&mut state.steps[n].name);
                }
                n
            };
            match &event {
                Event::Missed { vertex, reason } => {
                    let n = step(vertex, None);
                    state.steps[n].miss = Some(reason.clone());
                }
                Event::Started { vertex, name } => {
                    let n = step(vertex, Some(name));
                    state.steps[n].started_ms = Some(at);
                }
                Event::Cached { vertex, name } => {
                    let n = step(vertex, Some(name));
                    let s = &mut state.steps[n];
                    s.status = StepStatus::Cached;
                    s.completed_ms = Some(at);
                }
                Event::Completed { vertex, name, .. } => {
                    let n = step(vertex, Some(name));
                    let s = &mut state.steps[n];
                    s.status = StepStatus::Completed;
                    s.completed_ms = Some(at);
                }
                Event::Failed {
                    vertex,
                    name,
                    error,
                } => {
                    let n = step(vertex, Some(name));
                    let s = &mut state.steps[n];
                    s.status = StepStatus::Failed;
                    s.completed_ms = Some(at);
                    s.error = error.lines().next().map(str::to_owned);
                }
                Event::Phase {
                    vertex,
                    name,
                    started,
                    ended,
                    bytes,
                } => {
                    let n = step(vertex, None);
                    let phases = &mut state.steps[n].phases;
                    if phases.len() < MAX_PHASES {
                        phases.push(PhaseRecord {
                            name: name.to_string(),
                            started_ms: self.ms_at(*started),
                            ended_ms: self.ms_at(*ended),
                            bytes: *bytes,
                        });
                    }
                }
                Event::Log { .. } => {}
            }
        }
        self.next.event(event);
    }

    fn inputs(&self, vertex: &Arc<str>, inputs: &[String]) {
        lock(&self.state)
            .inputs
            .insert(vertex.clone(), inputs.to_vec());
        self.next.inputs(vertex, inputs);
    }
}

/// Milliseconds, as records keep times.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_notes_each_step_and_passes_events_on() {
        struct Count(Mutex<usize>);
        impl Reporter for Count {
            fn event(&self, _: Event) {
                *lock(&self.0) += 1;
            }
        }
        let count = Arc::new(Count(Mutex::new(0)));
        let recorder = Recorder::new(count.clone());
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        recorder.event(Event::Cached {
            vertex: a.clone(),
            name: "base".into(),
        });
        recorder.event(Event::Missed {
            vertex: b.clone(),
            reason: MissReason::NoRecord,
        });
        recorder.event(Event::Started {
            vertex: b.clone(),
            name: "run".into(),
        });
        recorder.event(Event::Failed {
            vertex: b.clone(),
            name: "run".into(),
            error: "exit code 1\nmore".into(),
        });
        recorder.event(Event::Missed {
            vertex: c.clone(),
            reason: MissReason::Ignored,
        });
        let record = recorder.finish(
            new_build_id(),
            "Dockerfile".into(),
            BuildStatus::Failed,
            vec!["V".into()],
        );
        assert_eq!(*lock(&count.0), 5);
        assert_eq!(record.id.len(), 25);
        assert_eq!(record.cached_steps(), 1);
        let run = record.step("b").unwrap();
        assert_eq!(run.name, "run");
        assert_eq!(run.status, StepStatus::Failed);
        assert_eq!(run.miss, Some(MissReason::NoRecord));
        assert_eq!(run.error.as_deref(), Some("exit code 1"));
        assert_eq!(record.step("c").unwrap().status, StepStatus::Canceled);
        let back = BuildRecord::from_json(&record.to_json()).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn the_critical_path_is_the_longest_chain_of_running_times() {
        let step = |vertex: &str, ran: u64, inputs: &[&str]| StepRecord {
            vertex: vertex.into(),
            name: vertex.into(),
            status: StepStatus::Completed,
            miss: None,
            queued_ms: 0,
            started_ms: Some(10),
            completed_ms: Some(10 + ran),
            error: None,
            phases: Vec::new(),
            inputs: inputs.iter().map(|i| (*i).to_owned()).collect(),
        };
        // base(5) -> a(100) -> top(1); base -> b(50) -> top: a's chain is the longer.
        let record = BuildRecord {
            id: "x".into(),
            name: "x".into(),
            status: BuildStatus::Completed,
            created: 0,
            duration_ms: 200,
            build_args: Vec::new(),
            steps: vec![
                step("top", 1, &["a", "b"]),
                step("b", 50, &["base"]),
                step("a", 100, &["base"]),
                step("base", 5, &[]),
            ],
            export_ms: None,
            export_phases: Vec::new(),
        };
        let (total, path) = record.critical_path();
        assert_eq!(total, 106);
        let names: Vec<&str> = path.iter().map(|s| s.vertex.as_str()).collect();
        assert_eq!(names, ["base", "a", "top"]);
    }
}
