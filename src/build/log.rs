//! A build's log: lines are written to SQLite as they arrive, and followers are woken.

use crate::app::App;
use crate::db;

/// Longest line kept; longer ones are cut (a build can print anything).
const MAX_LINE: usize = 16 * 1024;

pub struct BuildLog {
    app: App,
    build_id: String,
    next_seq: i64,
}

impl BuildLog {
    pub async fn open(app: &App, build_id: &str) -> BuildLog {
        let next_seq = match db::builds::log_lines(&app.db, build_id, -1).await {
            Ok(lines) => lines.last().map_or(0, |(seq, _)| seq + 1),
            Err(_) => 0,
        };
        BuildLog {
            app: app.clone(),
            build_id: build_id.to_string(),
            next_seq,
        }
    }

    pub async fn line(&mut self, line: &str) {
        self.lines(std::iter::once(line)).await;
    }

    pub async fn lines<'a>(&mut self, lines: impl Iterator<Item = &'a str>) {
        let lines: Vec<String> = lines.map(clean_line).collect();
        if lines.is_empty() {
            return;
        }
        match db::builds::append_log(&self.app.db, &self.build_id, self.next_seq, &lines).await {
            Ok(()) => self.next_seq += lines.len() as i64,
            Err(e) => {
                tracing::warn!(build_id = %self.build_id, error = %e, "cannot write build log")
            }
        }
        self.app.builds.log_appended(&self.build_id);
    }

    /// Writes what is left of a partial line (output that did not end with a newline).
    pub async fn flush_partial(&mut self, pending: &mut String) {
        if !pending.trim().is_empty() {
            let text = std::mem::take(pending);
            self.lines(text.lines()).await;
        }
        pending.clear();
    }
}

fn clean_line(line: &str) -> String {
    let line = line.trim_end_matches(['\r', '\n']);
    let line: String = line
        .chars()
        .filter(|c| *c == '\t' || !c.is_control())
        .collect();
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{} [line cut at {MAX_LINE} bytes]", &line[..cut])
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::clean_line;

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
}
