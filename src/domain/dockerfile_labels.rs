//! Labels written into the Dockerfile the daemon builds, as one `LABEL` instruction.
//!
//! Docker 20.10's classic builder turns each `labels` build option into its own `LABEL` step (one
//! container and one commit each, about 0.1 s apiece on this machine), so kiln's five labels cost
//! half a second on every build. Instead kiln sends the daemon a copy of the rule's Dockerfile with
//! one `LABEL` appended to the built stage, under [`GENERATED_DOCKERFILE`] beside the user's own, and
//! lists that name in the context's `.dockerignore` so the daemon removes it from the context before
//! any `COPY` (the way the docker CLI sends a Dockerfile from outside the context). The user's
//! Dockerfile and every other file reach the build unchanged.
//!
//! [`with_labels`] returns `None` when it cannot tell for certain where the built stage ends (an
//! instruction still continued at the insertion point); the caller then falls back to the `labels`
//! build option.

/// The name of the generated Dockerfile at the root of the build context.
pub const GENERATED_DOCKERFILE: &str = ".kiln.Dockerfile";

/// `dockerfile` with one `LABEL` instruction setting `labels`, placed at the end of the stage the
/// build produces: the `target` stage when one is named and found (case-insensitively, as Docker
/// compares stage names), else the last stage. `None` when the end of that stage cannot be found
/// for certain, or there is nothing to add.
pub fn with_labels(dockerfile: &str, target: &str, labels: &[(&str, &str)]) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let escape = escape_char(dockerfile);
    let lines: Vec<&str> = dockerfile.split_inclusive('\n').collect();
    let instructions = instructions(&lines, escape);
    let stage_ends_at = |from_index: usize| {
        instructions
            .iter()
            .filter(|i| i.line > from_index && i.keyword.eq_ignore_ascii_case("FROM"))
            .map(|i| i.line)
            .next()
            .unwrap_or(lines.len())
    };
    let insert_at = match target.trim() {
        "" => lines.len(),
        target => instructions
            .iter()
            .filter(|i| i.keyword.eq_ignore_ascii_case("FROM"))
            .find(|i| stage_name(&i.rest).is_some_and(|name| name.eq_ignore_ascii_case(target)))
            .map_or(lines.len(), |stage| stage_ends_at(stage.line)),
    };
    // The instruction before the insertion point must be complete there.
    if continued_at(&lines, escape, insert_at) {
        return None;
    }
    let label = label_instruction(labels, escape);
    let mut out = String::with_capacity(dockerfile.len() + label.len() + 2);
    for line in &lines[..insert_at] {
        out.push_str(line);
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&label);
    out.push('\n');
    for line in &lines[insert_at..] {
        out.push_str(line);
    }
    Some(out)
}

/// The `.dockerignore` the daemon gets: the context's own (as sent) with the generated Dockerfile
/// listed, so the daemon drops it before the build; without one, a new file listing itself too, so
/// no file appears in the context that the repository does not have.
pub fn dockerignore_with_generated(original: Option<&[u8]>) -> Vec<u8> {
    match original {
        Some(bytes) => {
            let mut out = bytes.to_vec();
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(GENERATED_DOCKERFILE.as_bytes());
            out.push(b'\n');
            out
        }
        None => format!(".dockerignore\n{GENERATED_DOCKERFILE}\n").into_bytes(),
    }
}

/// The images the stages of `dockerfile` start `FROM` (`FROM [--platform=…] IMAGE [AS name]`), as
/// written (a stage name or an `$ARG` among them; the caller keeps what it recognises), each once.
pub fn base_images(dockerfile: &str) -> Vec<String> {
    let escape = escape_char(dockerfile);
    let lines: Vec<&str> = dockerfile.split_inclusive('\n').collect();
    let mut images: Vec<String> = Vec::new();
    for instruction in instructions(&lines, escape) {
        if !instruction.keyword.eq_ignore_ascii_case("FROM") {
            continue;
        }
        let image = instruction
            .rest
            .split_whitespace()
            .find(|w| !w.starts_with("--"));
        if let Some(image) = image
            && !images.iter().any(|i| i == image)
        {
            images.push(image.to_string());
        }
    }
    images
}

/// One instruction: the line it starts on, its keyword and the rest of that first line.
struct Instruction {
    line: usize,
    keyword: String,
    rest: String,
}

/// The escape character: `` ` `` when a parser directive at the top says so, else `\`.
fn escape_char(dockerfile: &str) -> char {
    for line in dockerfile.trim_start_matches('\u{feff}').lines() {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = directive.split_once('=') else {
            break;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphabetic()) {
            break;
        }
        if key.eq_ignore_ascii_case("escape") && value.trim() == "`" {
            return '`';
        }
    }
    '\\'
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

fn ends_with_escape(line: &str, escape: char) -> bool {
    line.trim_end().ends_with(escape)
}

/// Every instruction's first line. A line ending with the escape character continues on the next
/// line that is not blank or a comment.
fn instructions(lines: &[&str], escape: char) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut continuing = false;
    for (index, line) in lines.iter().enumerate() {
        if is_blank_or_comment(line) {
            continue;
        }
        if continuing {
            continuing = ends_with_escape(line, escape);
            continue;
        }
        let trimmed = line.trim();
        let (keyword, rest) = trimmed
            .split_once(char::is_whitespace)
            .unwrap_or((trimmed, ""));
        out.push(Instruction {
            line: index,
            keyword: keyword.to_string(),
            rest: rest.to_string(),
        });
        continuing = ends_with_escape(line, escape);
    }
    out
}

/// Whether an instruction is still continued where line `at` starts.
fn continued_at(lines: &[&str], escape: char, at: usize) -> bool {
    let mut continuing = false;
    for line in &lines[..at] {
        if is_blank_or_comment(line) {
            continue;
        }
        continuing = ends_with_escape(line, escape);
    }
    continuing
}

/// The name of a stage from the words after `FROM` (`[--platform=…] image [AS name]`).
fn stage_name(rest: &str) -> Option<&str> {
    let mut words = rest.split_whitespace().skip_while(|w| w.starts_with("--"));
    let _image = words.next()?;
    match (words.next(), words.next()) {
        (Some(as_), Some(name)) if as_.eq_ignore_ascii_case("AS") => Some(name),
        _ => None,
    }
}

/// `LABEL "k"="v" …`, each key and value double-quoted with `"`, `$` and the escape character
/// escaped, control characters (a newline would end the instruction) turned into spaces.
fn label_instruction(labels: &[(&str, &str)], escape: char) -> String {
    let quote = |s: &str| {
        let mut q = String::with_capacity(s.len() + 2);
        q.push('"');
        for c in s.chars() {
            match c {
                '"' | '$' => {
                    q.push(escape);
                    q.push(c);
                }
                c if c == escape => {
                    q.push(escape);
                    q.push(c);
                }
                c if c.is_control() => q.push(' '),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    };
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect();
    format!("LABEL {}", pairs.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_images_are_the_words_after_from() {
        let dockerfile = "# syntax=docker/dockerfile:1\nARG BASE=x\nFROM --platform=linux/amd64 reg:5000/red/base:1 AS build\nRUN echo \\\n  FROM not/this\nfrom build\nFROM $BASE\nFROM reg:5000/red/base:1\nFROM\n";
        assert_eq!(
            base_images(dockerfile),
            ["reg:5000/red/base:1", "build", "$BASE"]
        );
        assert!(base_images("").is_empty());
    }

    const LABELS: &[(&str, &str)] = &[("a.b", "1"), ("c", "x y")];
    const LABEL: &str = "LABEL \"a.b\"=\"1\" \"c\"=\"x y\"\n";

    #[test]
    fn appended_to_the_last_stage() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("FROM scratch\nCOPY . /\n", "FROM scratch\nCOPY . /\n"),
            // No final newline: one is added before the label.
            ("FROM scratch\nCOPY . /", "FROM scratch\nCOPY . /\n"),
            // CRLF files keep their lines.
            ("FROM scratch\r\nCOPY . /\r\n", "FROM scratch\r\nCOPY . /\r\n"),
            // A continued instruction that ends before the end of the file.
            ("FROM scratch\nRUN a \\\n  # comment\n  && b\n", "FROM scratch\nRUN a \\\n  # comment\n  && b\n"),
            ("FROM scratch\nRUN a\n# trailing comment\n\n", "FROM scratch\nRUN a\n# trailing comment\n\n"),
            ("", ""),
        ];
        for (dockerfile, before) in cases {
            assert_eq!(
                with_labels(dockerfile, "", LABELS).as_deref(),
                Some(format!("{before}{LABEL}").as_str()),
                "{dockerfile:?}"
            );
        }
    }

    #[test]
    fn placed_at_the_end_of_the_target_stage() {
        let dockerfile = "FROM busybox AS build\nRUN make\n\nFROM --platform=linux/amd64 scratch as Final\nCOPY --from=build /x /x\nFROM scratch AS test\nRUN test\n";
        let at = |target: &str| with_labels(dockerfile, target, LABELS).unwrap();
        assert_eq!(
            at("build"),
            format!(
                "FROM busybox AS build\nRUN make\n\n{LABEL}FROM --platform=linux/amd64 scratch as Final\nCOPY --from=build /x /x\nFROM scratch AS test\nRUN test\n"
            )
        );
        // Stage names compare without case; the last stage needs no target.
        assert_eq!(
            at("final"),
            format!(
                "FROM busybox AS build\nRUN make\n\nFROM --platform=linux/amd64 scratch as Final\nCOPY --from=build /x /x\n{LABEL}FROM scratch AS test\nRUN test\n"
            )
        );
        assert_eq!(at("test"), format!("{dockerfile}{LABEL}"));
        assert_eq!(at(""), format!("{dockerfile}{LABEL}"));
        // A target that is not there: at the end (the daemon says the target is missing).
        assert_eq!(at("nope"), format!("{dockerfile}{LABEL}"));
        // "from" inside a continued line does not start a stage.
        let continued = "FROM a AS one\nRUN echo \\\nFROM b\nFROM c AS two\n";
        assert_eq!(
            with_labels(continued, "one", LABELS).unwrap(),
            format!("FROM a AS one\nRUN echo \\\nFROM b\n{LABEL}FROM c AS two\n")
        );
    }

    #[test]
    fn values_are_quoted_for_the_escape_character_in_use() {
        let labels = [("k", "a\"b$c\\d\ne")];
        assert_eq!(
            with_labels("FROM scratch\n", "", &labels).unwrap(),
            "FROM scratch\nLABEL \"k\"=\"a\\\"b\\$c\\\\d e\"\n"
        );
        let backtick = "# escape=`\nFROM scratch\nRUN a `\n  b\n";
        assert_eq!(
            with_labels(backtick, "", &labels).unwrap(),
            format!("{backtick}LABEL \"k\"=\"a`\"b`$c\\d e\"\n")
        );
        // A directive after an instruction is only a comment.
        assert_eq!(escape_char("FROM scratch\n# escape=`\n"), '\\');
        assert_eq!(escape_char("\u{feff}# ESCAPE = `\nFROM x\n"), '`');
        assert_eq!(escape_char("# syntax=x\n# escape=`\nFROM x\n"), '`');
    }

    #[test]
    fn no_labels_or_an_unfinished_instruction_falls_back() {
        assert_eq!(with_labels("FROM scratch\n", "", &[]), None);
        // The file ends inside a continued instruction: the label would join it.
        assert_eq!(with_labels("FROM scratch\nRUN a \\\n", "", LABELS), None);
        assert_eq!(
            with_labels("FROM scratch\nRUN a \\\n\n# c\n", "", LABELS),
            None
        );
    }

    #[test]
    fn the_dockerignore_lists_the_generated_dockerfile() {
        assert_eq!(
            dockerignore_with_generated(None),
            b".dockerignore\n.kiln.Dockerfile\n".to_vec()
        );
        assert_eq!(
            dockerignore_with_generated(Some(b".git")),
            b".git\n.kiln.Dockerfile\n".to_vec()
        );
        assert_eq!(
            dockerignore_with_generated(Some(b"*.md\n")),
            b"*.md\n.kiln.Dockerfile\n".to_vec()
        );
        assert_eq!(
            dockerignore_with_generated(Some(b"")),
            b".kiln.Dockerfile\n".to_vec()
        );
    }

    #[test]
    fn total_over_odd_input() {
        for odd in [
            "\\",
            "`",
            "FROM",
            "FROM\n",
            "\n\n\n",
            "#",
            "# escape=\n",
            "é\u{0}\r\r\n",
            "FROM a AS",
        ] {
            for target in ["", "a", "AS"] {
                let _ = with_labels(odd, target, LABELS);
            }
        }
    }
}
