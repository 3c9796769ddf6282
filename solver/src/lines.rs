//! Splitting a step's output into lines: [`OutputLines`], for everything that reads the `Log`
//! events' data or a process's output (the step's error tail here, the CLI's renderers).

/// Splits output that arrives in chunks into lines (without their `\n`), cutting a line that
/// grows past `max` bytes into pieces of `max`, so a reader holds less than `max` bytes of an
/// unterminated line whatever a step writes.
#[derive(Debug, Clone)]
pub struct OutputLines {
    max: usize,
    /// The unterminated end of the output so far, shorter than `max`.
    partial: Vec<u8>,
    /// Whether the current line was cut already (its first pieces went out as lines): its
    /// newline then ends it without a line of its own when nothing followed the cut.
    cut: bool,
}

impl OutputLines {
    /// A splitter cutting lines at `max` bytes (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            partial: Vec::new(),
            cut: false,
        }
    }

    /// Takes in `data`, calling `line` for each line it completes. Only `data` is searched for
    /// newlines, so output without them costs linear time.
    pub fn push(&mut self, mut data: &[u8], mut line: impl FnMut(&[u8])) {
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&data[..end]);
            if self.partial.is_empty() && !self.cut {
                line(b"");
            }
            for piece in self.partial.chunks(self.max) {
                line(piece);
            }
            self.partial.clear();
            self.cut = false;
            data = &data[end + 1..];
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() >= self.max {
            let whole = self.partial.len() / self.max * self.max;
            for piece in self.partial[..whole].chunks(self.max) {
                line(piece);
            }
            self.partial.drain(..whole);
            self.cut = true;
        }
    }

    /// The unterminated end of the output so far.
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// The unterminated last line, if any.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then_some(self.partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    fn split(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
        let mut lines = OutputLines::new(MAX);
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk, |line| out.push(line.to_vec()));
        }
        (out, lines.finish())
    }

    #[test]
    fn output_splits_into_lines_across_chunks_keeping_empty_ones() {
        let (lines, rest) = split(&[b"one\ntw", b"o\n", b"\n", b"\nthr", b"ee"]);
        assert_eq!(lines, [&b"one"[..], b"two", b"", b""]);
        assert_eq!(rest.as_deref(), Some(&b"three"[..]));
        let (lines, rest) = split(&[b"x\n"]);
        assert_eq!(lines, [b"x"]);
        assert_eq!(rest, None);
    }

    #[test]
    fn output_without_newlines_is_cut_into_bounded_lines() {
        // 10 MiB and a bit in 4 KiB chunks, no newline until the end.
        let total = 10 * 1024 * 1024 + 100;
        let data: Vec<u8> = (0..total).map(|i| b'a' + (i % 26) as u8).collect();
        let mut lines = OutputLines::new(MAX);
        let mut out: Vec<Vec<u8>> = Vec::new();
        for chunk in data.chunks(4096) {
            lines.push(chunk, |line| out.push(line.to_vec()));
            assert!(lines.partial().len() < MAX, "{}", lines.partial().len());
        }
        assert!(out.iter().all(|l| l.len() == MAX));
        assert_eq!(out.len(), total / MAX);
        lines.push(b"\n", |line| out.push(line.to_vec()));
        assert_eq!(out.last().unwrap().len(), 100);
        assert_eq!(out.concat(), data, "no byte lost or added");

        // A cut that falls on the newline adds no empty line.
        let (lines, rest) = split(&[&vec![b'x'; MAX], b"\ny\n"]);
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[1], b"y");
        assert_eq!(rest, None);
    }
}
