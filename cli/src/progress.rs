//! Renders solver progress events: BuildKit's `--progress=plain` text ([`PlainProgress`]) and
//! buildx's live multi-line view on a terminal ([`TtyProgress`]); [`Progress`] picks one.
//!
//! The live view is a model ([`TtyModel`]: what each vertex is doing, fed by the events) that
//! renders to lines for a given time and terminal size, drawn by indicatif as one multi-line
//! message and redrawn every 100 ms so running times move.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use kiln_solver::{Event, OutputLines, Reporter};

/// Prints `#N name`, `#N 0.123 output line`, `#N DONE 0.4s`, `#N CACHED`, `#N ERROR: ...`.
pub(crate) struct PlainProgress<W: Write + Send> {
    state: Mutex<State<W>>,
}

struct State<W> {
    out: W,
    numbers: HashMap<Arc<str>, (usize, Instant)>,
    next: usize,
    partial: HashMap<Arc<str>, OutputLines>,
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

impl<W: Write + Send> PlainProgress<W> {
    /// The number (`#N`) this progress gave the vertex, if it showed it.
    pub(crate) fn number_of(&self, vertex: &str) -> Option<usize> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.numbers.get(vertex).map(|(n, _)| *n)
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
        // Each event's text goes out in one write (stderr is unbuffered).
        let mut text = String::new();
        let _ = match event {
            Event::Started { vertex, name } => {
                let (n, _) = state.number(&vertex);
                writeln!(text, "#{n} {name}")
            }
            Event::Cached { vertex, name } => {
                let (n, _) = state.number(&vertex);
                writeln!(text, "#{n} {name}\n#{n} CACHED\n")
            }
            Event::Log {
                vertex,
                stream: _,
                data,
            } => {
                let (n, started) = state.number(&vertex);
                let elapsed = started.elapsed().as_secs_f64();
                let mut result = Ok(());
                state
                    .partial
                    .entry(vertex)
                    .or_insert_with(|| OutputLines::new(MAX_LINE))
                    .push(&data, |line| {
                        let line = String::from_utf8_lossy(line);
                        result = writeln!(text, "#{n} {elapsed:.3} {line}");
                    });
                result
            }
            Event::Completed {
                vertex, duration, ..
            } => {
                let (n, _) = state.number(&vertex);
                let rest = flush_partial(state, &vertex, n);
                writeln!(text, "{rest}#{n} DONE {:.1}s\n", duration.as_secs_f64())
            }
            Event::Failed { vertex, error, .. } => {
                let (n, _) = state.number(&vertex);
                let rest = flush_partial(state, &vertex, n);
                let first = error.lines().next().unwrap_or_default().to_owned();
                writeln!(text, "{rest}#{n} ERROR: {first}\n")
            }
            // Why it missed is for `kiln explain`, and its phases for `--trace`.
            Event::Missed { .. } | Event::Phase { .. } => Ok(()),
        };
        // Output is best effort: a closed terminal must not fail the build.
        let _ = state.out.write_all(text.as_bytes());
        let _ = state.out.flush();
    }
}

/// An unterminated last line of output, as a line of its own.
fn flush_partial<W>(state: &mut State<W>, vertex: &Arc<str>, n: usize) -> String {
    match state.partial.remove(vertex).and_then(OutputLines::finish) {
        Some(rest) => format!("#{n} {}\n", String::from_utf8_lossy(&rest)),
        None => String::new(),
    }
}

/// The longest line of step output kept whole: a longer one (a step writing without newlines)
/// is cut into lines of this size, so a renderer holds at most this much per vertex.
const MAX_LINE: usize = 16 * 1024;

/// How progress is shown, from `--progress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressMode {
    /// BuildKit's plain text.
    Plain,
    /// The live view.
    Tty,
    /// Nothing (`quiet` or `none`, as buildx).
    Quiet,
}

impl ProgressMode {
    /// Parses `--progress`; `auto` picks the live view when stderr is a terminal, as docker
    /// buildx does.
    pub(crate) fn from_flag(flag: &str, stderr_is_terminal: bool) -> anyhow::Result<Self> {
        match flag {
            "plain" => Ok(Self::Plain),
            "tty" => Ok(Self::Tty),
            "auto" if stderr_is_terminal => Ok(Self::Tty),
            "auto" => Ok(Self::Plain),
            "quiet" | "none" => Ok(Self::Quiet),
            other => {
                bail!("invalid --progress {other:?}: expected auto, plain, tty, quiet or none")
            }
        }
    }
}

/// The progress renderer of a build, writing to stderr.
pub(crate) enum Progress {
    /// `--progress=plain`.
    Plain(Arc<PlainProgress<std::io::Stderr>>),
    /// `--progress=tty`.
    Tty(Arc<TtyProgress>),
    /// `-q`, `--progress=quiet|none`: no progress.
    Quiet,
}

impl Progress {
    /// The renderer `--progress` asks for.
    pub(crate) fn stderr(flag: &str) -> anyhow::Result<Self> {
        let mode = ProgressMode::from_flag(flag, std::io::stderr().is_terminal())?;
        Ok(match mode {
            ProgressMode::Plain => Self::Plain(Arc::new(PlainProgress::new(std::io::stderr()))),
            ProgressMode::Tty => Self::Tty(Arc::new(TtyProgress::new(Arc::new(
                console::Term::stderr(),
            )))),
            ProgressMode::Quiet => Self::Quiet,
        })
    }

    /// The events' receiver, for the solver.
    pub(crate) fn reporter(&self) -> Arc<dyn Reporter> {
        match self {
            Self::Plain(plain) => plain.clone(),
            Self::Tty(tty) => tty.clone(),
            Self::Quiet => Arc::new(kiln_solver::NoReporter),
        }
    }

    /// Ends the live view, leaving its final state on the terminal.
    pub(crate) fn finish(&self) {
        if let Self::Tty(tty) = self {
            tty.finish();
        }
    }
}

/// Log lines shown under a running vertex.
const LOG_LINES_SHOWN: usize = 6;
/// Log lines kept per vertex, shown when it fails.
const LOG_LINES_KEPT: usize = 20;

/// What the live view knows: each vertex's state and recent output, in the order they appeared.
pub(crate) struct TtyModel {
    started: Instant,
    finished: Option<Instant>,
    order: Vec<Arc<str>>,
    vertices: HashMap<Arc<str>, VertexView>,
}

struct VertexView {
    name: String,
    state: VertexState,
    logs: VecDeque<String>,
    partial: OutputLines,
}

enum VertexState {
    Running(Instant),
    Done(Duration),
    Cached,
    Failed(Duration),
}

impl VertexView {
    /// Takes in output, keeping the last [`LOG_LINES_KEPT`] lines.
    fn push(&mut self, data: &[u8]) {
        let logs = &mut self.logs;
        self.partial.push(data, |line| keep_line(logs, line));
    }

    fn flush_partial(&mut self) {
        let partial = std::mem::replace(&mut self.partial, OutputLines::new(MAX_LINE));
        if let Some(rest) = partial.finish() {
            keep_line(&mut self.logs, &rest);
        }
    }
}

/// Adds a line of output to a vertex's log, dropping the oldest beyond [`LOG_LINES_KEPT`].
fn keep_line(logs: &mut VecDeque<String>, line: &[u8]) {
    if logs.len() == LOG_LINES_KEPT {
        logs.pop_front();
    }
    logs.push_back(String::from_utf8_lossy(line).into_owned());
}

impl TtyModel {
    /// An empty view of a build that started at `started`.
    pub(crate) fn new(started: Instant) -> Self {
        Self {
            started,
            finished: None,
            order: Vec::new(),
            vertices: HashMap::new(),
        }
    }

    fn vertex(&mut self, vertex: &Arc<str>, name: Option<&str>, at: Instant) -> &mut VertexView {
        if !self.vertices.contains_key(vertex) {
            self.order.push(vertex.clone());
        }
        let view = self
            .vertices
            .entry(vertex.clone())
            .or_insert_with(|| VertexView {
                name: name.unwrap_or(vertex).to_owned(),
                state: VertexState::Running(at),
                logs: VecDeque::new(),
                partial: OutputLines::new(MAX_LINE),
            });
        if let Some(name) = name {
            name.clone_into(&mut view.name);
        }
        view
    }

    /// Takes in an event that happened at `at`.
    pub(crate) fn apply(&mut self, event: Event, at: Instant) {
        match event {
            Event::Started { vertex, name } => {
                self.vertex(&vertex, Some(&name), at).state = VertexState::Running(at);
            }
            Event::Cached { vertex, name } => {
                self.vertex(&vertex, Some(&name), at).state = VertexState::Cached;
            }
            Event::Log { vertex, data, .. } => {
                self.vertex(&vertex, None, at).push(&data);
            }
            Event::Completed {
                vertex,
                name,
                duration,
            } => {
                let view = self.vertex(&vertex, Some(&name), at);
                view.flush_partial();
                view.state = VertexState::Done(duration);
            }
            Event::Failed { vertex, name, .. } => {
                let view = self.vertex(&vertex, Some(&name), at);
                view.flush_partial();
                let since = match view.state {
                    VertexState::Running(since) => since,
                    _ => at,
                };
                view.state = VertexState::Failed(at.saturating_duration_since(since));
            }
            // Why it missed is for `kiln explain`, and its phases for `--trace`.
            Event::Missed { .. } | Event::Phase { .. } => {}
        }
    }

    /// Marks the build as over: running vertices were cancelled.
    pub(crate) fn finish(&mut self, at: Instant) {
        self.finished.get_or_insert(at);
    }

    /// The view at `now` for a terminal `width` columns wide; with a `height`, the oldest
    /// finished vertices are left out so that the view fits.
    pub(crate) fn render(&self, now: Instant, width: usize, height: Option<usize>) -> Vec<String> {
        let end = self.finished.unwrap_or(now);
        let done = self
            .vertices
            .values()
            .filter(|v| matches!(v.state, VertexState::Done(_) | VertexState::Cached))
            .count();
        let header = format!(
            "[+] Building {:.1}s ({done}/{}){}",
            end.saturating_duration_since(self.started).as_secs_f64(),
            self.vertices.len(),
            if self.finished.is_some() {
                " FINISHED"
            } else {
                ""
            }
        );
        let mut groups: Vec<(bool, Vec<String>)> = Vec::with_capacity(self.order.len());
        for digest in &self.order {
            let view = &self.vertices[digest];
            let (label, took, live) = match view.state {
                VertexState::Running(since) if self.finished.is_some() => {
                    ("CANCELED ", end.saturating_duration_since(since), false)
                }
                VertexState::Running(since) => ("", end.saturating_duration_since(since), true),
                VertexState::Done(took) => ("", took, false),
                VertexState::Cached => ("CACHED ", Duration::ZERO, false),
                VertexState::Failed(took) => ("ERROR ", took, self.finished.is_none()),
            };
            let mut lines = vec![fit(
                &format!(" => {label}{}", view.name),
                &format!("{:.1}s", took.as_secs_f64()),
                width,
            )];
            if live {
                let skip = view.logs.len().saturating_sub(LOG_LINES_SHOWN);
                for log in view.logs.iter().skip(skip) {
                    lines.push(truncate(&format!(" => => # {log}"), width));
                }
            }
            groups.push((!live, lines));
        }
        if let Some(height) = height {
            let room = height.saturating_sub(1).max(2) - 1;
            let mut total: usize = groups.iter().map(|(_, l)| l.len()).sum();
            let mut i = 0;
            while total > room && i < groups.len() {
                if groups[i].0 {
                    total -= groups[i].1.len();
                    groups.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        let mut lines = vec![header];
        lines.extend(groups.into_iter().flat_map(|(_, l)| l));
        if let Some(height) = height {
            let room = height.saturating_sub(1).max(2);
            if lines.len() > room {
                lines.drain(1..=lines.len() - room);
            }
        }
        lines
    }

    /// For each failed vertex, a block with its name and last lines of output, as buildx
    /// prints after the view.
    pub(crate) fn failures(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for digest in &self.order {
            let view = &self.vertices[digest];
            if matches!(view.state, VertexState::Failed(_)) {
                lines.push("------".to_owned());
                lines.push(format!(" > {}:", view.name));
                lines.extend(view.logs.iter().cloned());
                lines.push("------".to_owned());
            }
        }
        lines
    }
}

/// `left` and `right` on one line of `width` columns, `right` at the right edge.
fn fit(left: &str, right: &str, width: usize) -> String {
    let right_len = right.chars().count();
    if width < right_len + 12 {
        return format!("{left} {right}");
    }
    let room = width - right_len - 1;
    let left = truncate(left, room);
    let pad = room - left.chars().count();
    format!("{left}{:pad$} {right}", "")
}

/// At most `width` characters of `text`.
fn truncate(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

/// buildx's live view: a header with the elapsed time and a line per vertex, with the last
/// lines of output of running ones, redrawn in place; at the end, the final state stays.
pub(crate) struct TtyProgress {
    shared: Arc<TtyShared>,
    ticker: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

struct TtyShared {
    model: Mutex<TtyModel>,
    bar: ProgressBar,
    term: Arc<dyn TermLike>,
}

impl TtyShared {
    fn redraw(&self) {
        let model = lock(&self.model);
        if model.finished.is_some() {
            return; // the final view is printed once, by `finish`
        }
        let lines = model.render(
            Instant::now(),
            self.term.width().into(),
            Some(self.term.height().into()),
        );
        self.bar.set_message(lines.join("\n"));
    }
}

/// Lets indicatif draw on a terminal the renderer also asks for its size and writes the final
/// view to (indicatif takes its target by value).
#[derive(Debug)]
struct SharedTerm(Arc<dyn TermLike>);

impl TermLike for SharedTerm {
    fn width(&self) -> u16 {
        self.0.width()
    }
    fn height(&self) -> u16 {
        self.0.height()
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.0.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl TtyProgress {
    /// A live view on `term`, redrawn every 100 ms until [`TtyProgress::finish`].
    pub(crate) fn new(term: Arc<dyn TermLike>) -> Self {
        let bar = ProgressBar::with_draw_target(
            None,
            ProgressDrawTarget::term_like_with_hz(Box::new(SharedTerm(term.clone())), 20),
        );
        bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
        let shared = Arc::new(TtyShared {
            model: Mutex::new(TtyModel::new(Instant::now())),
            bar,
            term,
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let ticking = shared.clone();
        let ticker = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(100))
            {
                ticking.redraw();
            }
        });
        Self {
            shared,
            ticker: Mutex::new(Some((stop, ticker))),
        }
    }

    /// Stops redrawing and replaces the live view with the final one, followed by the output
    /// of failed vertices. Later calls do nothing.
    pub(crate) fn finish(&self) {
        let Some((stop, ticker)) = lock(&self.ticker).take() else {
            return;
        };
        drop(stop);
        let _ = ticker.join();
        let shared = &self.shared;
        let mut model = lock(&shared.model);
        model.finish(Instant::now());
        shared.bar.finish_and_clear();
        let mut lines = model.render(Instant::now(), shared.term.width().into(), None);
        lines.extend(model.failures());
        // Output is best effort: a closed terminal must not fail the build.
        for line in lines {
            let _ = shared.term.write_line(&line);
        }
        let _ = shared.term.flush();
    }
}

impl Drop for TtyProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Reporter for TtyProgress {
    fn event(&self, event: Event) {
        lock(&self.shared.model).apply(event, Instant::now());
        self.shared.redraw();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn started(vertex: &str, name: &str) -> Event {
        Event::Started {
            vertex: vertex.into(),
            name: name.into(),
        }
    }

    fn log(vertex: &str, data: &str) -> Event {
        Event::Log {
            vertex: vertex.into(),
            stream: 1,
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn tty_model_shows_header_vertices_times_and_recent_logs_of_running_ones() {
        let base = Instant::now();
        let mut model = TtyModel::new(base);
        model.apply(
            Event::Cached {
                vertex: "a".into(),
                name: "[1/3] FROM busybox".into(),
            },
            at(base, 100),
        );
        model.apply(started("b", "[2/3] RUN make"), at(base, 200));
        for i in 1..=8 {
            model.apply(log("b", &format!("line {i}\n")), at(base, 300));
        }
        model.apply(log("b", "partial"), at(base, 300));
        model.apply(started("c", "[3/3] RUN true"), at(base, 250));
        model.apply(
            Event::Completed {
                vertex: "c".into(),
                name: "[3/3] RUN true".into(),
                duration: Duration::from_millis(400),
            },
            at(base, 650),
        );
        let lines = model.render(at(base, 1200), 40, None);
        assert_eq!(
            lines,
            [
                "[+] Building 1.2s (2/3)",
                " => CACHED [1/3] FROM busybox       0.0s",
                " => [2/3] RUN make                  1.0s",
                " => => # line 3",
                " => => # line 4",
                " => => # line 5",
                " => => # line 6",
                " => => # line 7",
                " => => # line 8",
                " => [3/3] RUN true                  0.4s",
            ]
        );
        assert!(lines.iter().all(|l| l.chars().count() <= 40));

        // A short terminal: finished vertices make room for running ones first.
        let short = model.render(at(base, 1200), 40, Some(6));
        assert_eq!(short[0], "[+] Building 1.2s (2/3)");
        assert_eq!(short.len(), 5);
        assert_eq!(short[4], " => => # line 8");
        assert!(!short.iter().any(|l| l.contains("CACHED")));

        // The vertex fails: its partial line is kept, logs move to the failure block.
        model.apply(
            Event::Failed {
                vertex: "b".into(),
                name: "[2/3] RUN make".into(),
                error: "exit code: 2".into(),
            },
            at(base, 1500),
        );
        model.finish(at(base, 1600));
        let lines = model.render(at(base, 9000), 40, None);
        assert_eq!(
            lines,
            [
                "[+] Building 1.6s (2/3) FINISHED",
                " => CACHED [1/3] FROM busybox       0.0s",
                " => ERROR [2/3] RUN make            1.3s",
                " => [3/3] RUN true                  0.4s",
            ]
        );
        let failures = model.failures();
        assert_eq!(failures[0], "------");
        assert_eq!(failures[1], " > [2/3] RUN make:");
        assert_eq!(failures[2], "line 1");
        assert_eq!(failures[9], "line 8");
        assert_eq!(failures[10], "partial");
        assert_eq!(failures[11], "------");
        assert_eq!(failures.len(), 12);
    }

    #[test]
    fn tty_model_marks_vertices_still_running_at_the_end_as_canceled() {
        let base = Instant::now();
        let mut model = TtyModel::new(base);
        model.apply(started("a", "sleep 100"), at(base, 0));
        model.apply(log("a", "zzz\n"), at(base, 10));
        model.finish(at(base, 2000));
        assert_eq!(
            model.render(at(base, 5000), 30, None),
            [
                "[+] Building 2.0s (0/1) FINISHED",
                " => CANCELED sleep 100    2.0s"
            ]
        );
        assert!(model.failures().is_empty());
    }

    #[test]
    fn auto_picks_tty_only_on_a_terminal() {
        for (flag, terminal, mode) in [
            ("auto", true, ProgressMode::Tty),
            ("auto", false, ProgressMode::Plain),
            ("tty", false, ProgressMode::Tty),
            ("plain", true, ProgressMode::Plain),
            ("quiet", true, ProgressMode::Quiet),
            ("none", false, ProgressMode::Quiet),
        ] {
            assert_eq!(
                ProgressMode::from_flag(flag, terminal).unwrap(),
                mode,
                "--progress {flag} on a terminal: {terminal}"
            );
        }
        let err = ProgressMode::from_flag("fancy", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --progress \"fancy\": expected auto, plain, tty, quiet or none"
        );
    }

    #[test]
    fn tty_progress_draws_live_on_a_terminal_and_leaves_the_final_view() {
        let term = Arc::new(indicatif::InMemoryTerm::new(12, 50));
        let progress = TtyProgress::new(term.clone());
        progress.event(started("a", "[1/1] RUN make"));
        progress.event(log("a", "compiling\n"));
        // The ticker redraws at least every 100 ms.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !term.contents().contains("=> => # compiling") {
            assert!(Instant::now() < deadline, "{}", term.contents());
            std::thread::sleep(Duration::from_millis(20));
        }
        let live = term.contents();
        assert!(live.starts_with("[+] Building "), "{live}");
        assert!(live.contains(" (0/1)\n => [1/1] RUN make "), "{live}");
        progress.event(Event::Completed {
            vertex: "a".into(),
            name: "[1/1] RUN make".into(),
            duration: Duration::from_millis(1234),
        });
        progress.finish();
        let done = term.contents();
        let lines: Vec<&str> = done.lines().collect();
        assert!(
            lines[0].starts_with("[+] Building ") && lines[0].ends_with(" (1/1) FINISHED"),
            "{done}"
        );
        assert_eq!(
            lines[1].trim_end(),
            format!(" => [1/1] RUN make{:>32}", "1.2s")
        );
        assert_eq!(lines.len(), 2, "the live lines are gone: {done}");
        progress.finish(); // idempotent
        assert_eq!(term.contents(), done);
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
