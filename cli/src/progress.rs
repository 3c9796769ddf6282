//! Renders solver progress events as text, in the style of BuildKit's `--progress=plain`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use kiln_solver::{Event, Reporter};

/// Prints `#N name`, `#N 0.123 output line`, `#N DONE 0.4s`, `#N CACHED`, `#N ERROR: ...`.
pub(crate) struct PlainProgress<W: Write + Send> {
    state: Mutex<State<W>>,
}

struct State<W> {
    out: W,
    numbers: HashMap<Arc<str>, (usize, Instant)>,
    next: usize,
    partial: HashMap<Arc<str>, Vec<u8>>,
}

impl<W: Write + Send> PlainProgress<W> {
    /// A renderer writing to `out`.
    pub(crate) fn new(out: W) -> Self {
        Self {
            state: Mutex::new(State {
                out,
                numbers: HashMap::new(),
                next: 1,
                partial: HashMap::new(),
            }),
        }
    }
}

impl<W> State<W> {
    fn number(&mut self, vertex: &Arc<str>) -> (usize, Instant) {
        if let Some(n) = self.numbers.get(vertex) {
            return *n;
        }
        let n = (self.next, Instant::now());
        self.next += 1;
        self.numbers.insert(vertex.clone(), n);
        n
    }
}

impl<W: Write + Send + 'static> Reporter for PlainProgress<W> {
    fn event(&self, event: Event) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        // Output is best effort: a closed terminal must not fail the build.
        let _ = match event {
            Event::Started { vertex, name } => {
                let (n, _) = state.number(&vertex);
                writeln!(state.out, "#{n} {name}")
            }
            Event::Cached { vertex, name } => {
                let (n, _) = state.number(&vertex);
                writeln!(state.out, "#{n} {name}\n#{n} CACHED\n")
            }
            Event::Log {
                vertex,
                stream: _,
                data,
            } => {
                let (n, started) = state.number(&vertex);
                let elapsed = started.elapsed().as_secs_f64();
                let buffer = state.partial.entry(vertex).or_default();
                buffer.extend_from_slice(&data);
                let mut result = Ok(());
                while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                    result = writeln!(state.out, "#{n} {elapsed:.3} {text}");
                }
                result
            }
            Event::Completed {
                vertex, duration, ..
            } => {
                let (n, _) = state.number(&vertex);
                let rest = flush_partial(state, &vertex, n);
                writeln!(
                    state.out,
                    "{rest}#{n} DONE {:.1}s\n",
                    duration.as_secs_f64()
                )
            }
            Event::Failed { vertex, error, .. } => {
                let (n, _) = state.number(&vertex);
                let rest = flush_partial(state, &vertex, n);
                let first = error.lines().next().unwrap_or_default().to_owned();
                writeln!(state.out, "{rest}#{n} ERROR: {first}\n")
            }
        };
        let _ = state.out.flush();
    }
}

/// An unterminated last line of output, as a line of its own.
fn flush_partial<W>(state: &mut State<W>, vertex: &Arc<str>, n: usize) -> String {
    match state.partial.remove(vertex) {
        Some(rest) if !rest.is_empty() => format!("#{n} {}\n", String::from_utf8_lossy(&rest)),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_progress_numbers_vertices_and_prefixes_output() {
        let buffer = Buffer::default();
        let progress = PlainProgress::new(buffer.clone());
        let a: Arc<str> = "sha256:a".into();
        let b: Arc<str> = "sha256:b".into();
        progress.event(Event::Cached {
            vertex: a.clone(),
            name: "[1/2] FROM busybox".into(),
        });
        progress.event(Event::Started {
            vertex: b.clone(),
            name: "[2/2] RUN echo hi".into(),
        });
        progress.event(Event::Log {
            vertex: b.clone(),
            stream: 1,
            data: b"hi\nthere".to_vec(),
        });
        progress.event(Event::Failed {
            vertex: b.clone(),
            name: "[2/2] RUN echo hi".into(),
            error:
                "process \"/bin/sh -c echo hi\" did not complete successfully: exit code: 1\n\nhi"
                    .into(),
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#1 [1/2] FROM busybox");
        assert_eq!(lines[1], "#1 CACHED");
        assert_eq!(lines[3], "#2 [2/2] RUN echo hi");
        assert!(
            lines[4].starts_with("#2 0.") && lines[4].ends_with(" hi"),
            "{}",
            lines[4]
        );
        assert_eq!(lines[5], "#2 there");
        assert_eq!(
            lines[6],
            "#2 ERROR: process \"/bin/sh -c echo hi\" did not complete successfully: exit code: 1"
        );
    }
}
