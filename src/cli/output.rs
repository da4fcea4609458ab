//! What the command line prints: aligned tables for people, JSON for scripts, and a plain
//! rendering of any JSON report.

use std::io::Write;

use serde_json::Value;

use super::client::{CliError, CliResult};

/// Writes to stdout at once (streams show up as they arrive); a closed pipe stops the command
/// quietly.
pub fn out(text: &str) -> CliResult<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::StdoutClosed),
        Err(e) => Err(CliError::msg(format!("cannot write to stdout: {e}"))),
    }
}

/// [`out`] plus a newline.
pub fn outln(text: &str) -> CliResult<()> {
    out(&format!("{text}\n"))
}

/// Progress and notes go to stderr, so stdout stays what was asked for.
pub fn note(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// JSON for scripts: pretty, one document.
pub fn json(value: &Value) -> CliResult<()> {
    outln(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()))
}

/// Columns aligned on the widest cell (counted in characters), two spaces apart; the last column
/// is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            s.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = line(headers.to_vec());
    for row in rows {
        s.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    s
}

/// A field of a JSON object as a table cell: strings as they are, `null` and missing as `-`.
pub fn cell(v: &Value, key: &str) -> String {
    scalar(&v[key])
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `yes` / `no` for a boolean field.
pub fn yes_no(v: &Value, key: &str) -> String {
    if v[key].as_bool().unwrap_or(false) {
        "yes".into()
    } else {
        "no".into()
    }
}

/// The first 7 characters of a commit id.
pub fn short_sha(v: &Value, key: &str) -> String {
    match v[key].as_str() {
        Some(s) if !s.is_empty() => s.chars().take(7).collect(),
        _ => "-".into(),
    }
}

/// Any JSON report for people: `key: value` lines, nested objects and lists indented.
pub fn report(v: &Value) -> String {
    let mut s = String::new();
    report_into(&mut s, v, 0);
    s
}

fn report_into(s: &mut String, v: &Value, depth: usize) {
    let indent = "  ".repeat(depth);
    match v {
        Value::Object(map) if map.is_empty() => s.push_str(&format!("{indent}(empty)\n")),
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        s.push_str(&format!("{indent}{k}:\n"));
                        report_into(s, v, depth + 1);
                    }
                    Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                        s.push_str(&format!("{indent}{k}:\n"));
                        report_into(s, v, depth + 1);
                    }
                    Value::Array(items) if items.is_empty() => {
                        s.push_str(&format!("{indent}{k}: (none)\n"))
                    }
                    Value::Array(items) => {
                        let list: Vec<String> = items.iter().map(scalar).collect();
                        s.push_str(&format!("{indent}{k}: {}\n", list.join(", ")));
                    }
                    other => s.push_str(&format!("{indent}{k}: {}\n", scalar(other))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        s.push_str(&format!("{indent}-\n"));
                        report_into(s, item, depth + 1);
                    }
                    other => s.push_str(&format!("{indent}- {}\n", scalar(other))),
                }
            }
        }
        other => s.push_str(&format!("{indent}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_on_characters() {
        let t = table(
            &["NAME", "SUMMARY"],
            &[
                vec!["api".into(), "The API".into()],
                vec!["größe".into(), "-".into()],
                vec!["a-very-long-name".into(), "x".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME              SUMMARY\n\
             api               The API\n\
             größe             -\n\
             a-very-long-name  x\n"
        );
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
        // An empty last cell leaves no trailing spaces.
        assert_eq!(
            table(&["A", "B"], &[vec!["x".into(), String::new()]]),
            "A  B\nx\n"
        );
    }

    #[test]
    fn cells() {
        let v = json!({"s": "x", "e": "", "n": null, "b": true, "i": 3, "sha": "0123456789"});
        assert_eq!(cell(&v, "s"), "x");
        assert_eq!(cell(&v, "e"), "-");
        assert_eq!(cell(&v, "n"), "-");
        assert_eq!(cell(&v, "missing"), "-");
        assert_eq!(cell(&v, "i"), "3");
        assert_eq!(yes_no(&v, "b"), "yes");
        assert_eq!(yes_no(&v, "missing"), "no");
        assert_eq!(short_sha(&v, "sha"), "0123456");
        assert_eq!(short_sha(&v, "n"), "-");
    }

    #[test]
    fn reports() {
        let v = json!({
            "repositories": 3,
            "added": ["acme/a:v1", "acme/b:v2"],
            "removed": [],
            "errors": [{"repository": "acme/c", "error": "timeout"}],
            "registry": {"url": "http://r"}
        });
        assert_eq!(
            report(&v),
            "added: acme/a:v1, acme/b:v2\n\
             errors:\n\
             \x20 -\n\
             \x20   error: timeout\n\
             \x20   repository: acme/c\n\
             registry:\n\
             \x20 url: http://r\n\
             removed: (none)\n\
             repositories: 3\n"
        );
        assert_eq!(report(&json!({})), "(empty)\n");
    }
}
