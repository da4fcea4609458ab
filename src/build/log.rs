//! A build's log: lines are written to SQLite as they arrive, and followers are woken.
//!
//! Bounded: a line is cut at [`MAX_LINE`] bytes (a partial line without a newline too, while it
//! arrives), and the build's output is kept up to the configured limit (`KILN_BUILD_LOG_LIMIT`):
//! there one line says where the log was cut, and later output is dropped while the build goes
//! on. kiln's own lines (stage ends, the outcome) are always written: there are a few per build.

use crate::app::App;
use crate::db;

/// Longest line kept; longer ones are cut (a build can print anything).
pub const MAX_LINE: usize = 16 * 1024;

pub struct BuildLog {
    app: App,
    build_id: String,
    next_seq: i64,
    /// Bytes written so far (each line and its newline, as the log is served).
    written: u64,
    limit: u64,
    /// The limit was reached: output is dropped.
    cut: bool,
    /// Lines could not be stored because the disk is full: the build fails with this reason.
    storage_full: bool,
}

impl BuildLog {
    pub async fn open(app: &App, build_id: &str) -> BuildLog {
        let (next_seq, written) = db::builds::log_size(&app.db, build_id)
            .await
            .unwrap_or((0, 0));
        let limit = app.config.build_log_limit;
        BuildLog {
            app: app.clone(),
            build_id: build_id.to_string(),
            next_seq,
            written,
            limit,
            cut: written >= limit,
            storage_full: false,
        }
    }

    /// One line of kiln's own: always written.
    pub async fn line(&mut self, line: &str) {
        let line = masked(clean_line(line));
        self.written += line.len() as u64 + 1;
        self.write(vec![line]).await;
    }

    /// Lines of the build's output: kept up to the log's limit.
    pub async fn lines<'a>(&mut self, lines: impl Iterator<Item = &'a str>) {
        if self.cut || self.storage_full {
            return;
        }
        let mut kept = Vec::new();
        for line in lines {
            let line = masked(clean_line(line));
            let size = line.len() as u64 + 1;
            if self.written + size > self.limit {
                kept.push(format!(
                    "[log cut at {} bytes (the limit is {}): later output is dropped, the build goes on]",
                    self.written, self.limit
                ));
                self.cut = true;
                break;
            }
            self.written += size;
            kept.push(line);
        }
        self.write(kept).await;
    }

    async fn write(&mut self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        match db::builds::append_log(&self.app.db, &self.build_id, self.next_seq, &lines).await {
            Ok(()) => self.next_seq += lines.len() as i64,
            Err(e) if db::is_storage_full(&e) => {
                // Said once: the build's output is dropped from now on, and the build fails.
                if !self.storage_full {
                    tracing::warn!(build_id = %self.build_id, error = %e, "the disk is full: cannot write the build log");
                }
                self.storage_full = true;
            }
            Err(e) => {
                tracing::warn!(build_id = %self.build_id, error = %e, "cannot write build log")
            }
        }
        self.app.builds.log_appended(&self.build_id);
    }

    /// Lines were lost because the disk holding kiln's data is full.
    pub fn storage_full(&self) -> bool {
        self.storage_full
    }

    /// Writes what is left of a partial line (output that did not end with a newline).
    pub async fn flush_partial(&mut self, pending: String) {
        if !pending.trim().is_empty() {
            self.lines(pending.lines()).await;
        }
    }
}

/// The build's output as it arrives, in pieces that need not end at a newline: gives back the
/// complete lines, and holds the rest. A line longer than [`MAX_LINE`] is cut there while it
/// arrives (what follows up to its newline is dropped), so a build printing without newlines
/// holds no more than [`MAX_LINE`] bytes here.
#[derive(Default)]
pub struct LineBuffer {
    pending: String,
    /// The line being received was cut: drop up to its newline.
    skipping: bool,
}

impl LineBuffer {
    pub fn push(&mut self, mut text: &str) -> Vec<String> {
        let mut complete = Vec::new();
        while !text.is_empty() {
            let (piece, rest, ends_line) = match text.find('\n') {
                Some(at) => (&text[..at], &text[at + 1..], true),
                None => (text, "", false),
            };
            text = rest;
            if !self.skipping {
                let room = MAX_LINE - self.pending.len();
                if piece.len() <= room {
                    self.pending.push_str(piece);
                } else {
                    let cut = piece.floor_char_boundary(room);
                    self.pending.push_str(&piece[..cut]);
                    complete.push(format!(
                        "{} [line cut at {MAX_LINE} bytes]",
                        std::mem::take(&mut self.pending)
                    ));
                    self.skipping = true;
                }
            }
            if ends_line {
                if !self.skipping {
                    complete.push(std::mem::take(&mut self.pending));
                }
                self.skipping = false;
            }
        }
        complete
    }

    /// What is held: a partial line.
    pub fn take(&mut self) -> String {
        self.skipping = false;
        std::mem::take(&mut self.pending)
    }
}

/// The line with every secret kiln knows replaced by `***` (a whole line at a time: a secret split
/// across the pieces a build's output arrives in is masked once [`LineBuffer`] has joined them).
fn masked(line: String) -> String {
    match crate::secrets::mask::mask(&line) {
        std::borrow::Cow::Borrowed(_) => line,
        std::borrow::Cow::Owned(masked) => masked,
    }
}

fn clean_line(line: &str) -> String {
    let line = line.trim_end_matches(['\r', '\n']);
    let line: String = line
        .chars()
        .filter(|c| *c == '\t' || !c.is_control())
        .collect();
    // The slack lets a line [`LineBuffer`] already cut (and marked) through unchanged.
    if line.len() > MAX_LINE + 32 {
        let cut = line.floor_char_boundary(MAX_LINE);
        format!("{} [line cut at {MAX_LINE} bytes]", &line[..cut])
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cleaned() {
        assert_eq!(
            clean_line("Step 1/2 : FROM scratch\r\n"),
            "Step 1/2 : FROM scratch"
        );
        assert_eq!(clean_line("\u{1b}[31mred\u{1b}[0m"), "[31mred[0m");
        assert_eq!(clean_line("a\tb"), "a\tb");
        let long = "é".repeat(20_000);
        let cut = clean_line(&long);
        assert!(cut.ends_with("[line cut at 16384 bytes]"));
        assert!(cut.len() < 16_500);
    }

    #[test]
    fn a_secret_split_across_pieces_is_masked_in_its_whole_line() {
        crate::secrets::mask::register("log-test-secret-0123456789");
        let mut buffer = LineBuffer::default();
        let mut lines = buffer.push("Step 2/2 : RUN echo $TOKEN\nlog-test-sec");
        lines.extend(buffer.push("ret-0123456789 and more\n"));
        let lines: Vec<String> = lines.into_iter().map(|l| masked(clean_line(&l))).collect();
        assert_eq!(lines, ["Step 2/2 : RUN echo $TOKEN", "*** and more"]);
    }

    #[test]
    fn the_line_buffer_gives_complete_lines_and_holds_the_rest() {
        let mut buffer = LineBuffer::default();
        assert_eq!(buffer.push("Step 1/2 : FR"), Vec::<String>::new());
        assert_eq!(
            buffer.push("OM scratch\n ---> abc\nStep"),
            ["Step 1/2 : FROM scratch", " ---> abc"]
        );
        assert_eq!(buffer.push("\n\n"), ["Step", ""]);
        assert_eq!(buffer.push("tail"), Vec::<String>::new());
        assert_eq!(buffer.take(), "tail");
        assert_eq!(buffer.take(), "");
    }

    #[test]
    fn a_partial_line_is_cut_while_it_arrives() {
        let mut buffer = LineBuffer::default();
        let mut lines = Vec::new();
        // 1 MiB without a newline, in 4 KiB pieces, as a build printing one long line sends it.
        let piece = "x".repeat(4096);
        for _ in 0..256 {
            lines.extend(buffer.push(&piece));
            assert!(buffer.pending.len() <= MAX_LINE);
        }
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0].len(),
            MAX_LINE + " [line cut at 16384 bytes]".len()
        );
        assert!(lines[0].starts_with("xxxx"));
        // The rest of that line is dropped; the next line comes through whole.
        assert_eq!(buffer.push("yyy\nnext line\n"), ["next line"]);
        assert_eq!(buffer.take(), "");

        // A multi-byte character is not split.
        let mut buffer = LineBuffer::default();
        let lines = buffer.push(&"é".repeat(MAX_LINE));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with("[line cut at 16384 bytes]"));
        assert!(lines[0].len() <= MAX_LINE + 30);
    }
}
