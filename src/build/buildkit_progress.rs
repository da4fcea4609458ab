//! BuildKit's progress (the `moby.buildkit.trace` messages of a `version=2` build) as build log
//! lines, in the shape of `docker build --progress=plain`:
//!
//! ```text
//! #3 [2/3] COPY . /app
//! #3 DONE 0.1s
//! #4 [3/3] RUN make
//! #4 compiling…
//! #4 ERROR: process "/bin/sh -c make" did not complete successfully: exit code: 2
//! #2 [1/3] FROM docker.io/library/base
//! #2 CACHED
//! ```
//!
//! A step is numbered when it is first seen; its output lines are prefixed with its number (a line
//! split across two messages is joined first). Pure: the trace in, the lines out.

use std::collections::HashMap;

use bollard::moby::buildkit::v1::{StatusResponse, Vertex};

use super::log::LineBuffer;

/// One build's progress so far.
#[derive(Default)]
pub struct Progress {
    steps: HashMap<String, Step>,
    next: usize,
}

#[derive(Default)]
struct Step {
    number: usize,
    announced: bool,
    ended: bool,
    output: LineBuffer,
}

impl Progress {
    /// The log lines one trace message adds.
    pub fn lines(&mut self, status: &StatusResponse) -> Vec<String> {
        let mut out = Vec::new();
        for vertex in &status.vertexes {
            self.vertex(vertex, &mut out);
        }
        for log in &status.logs {
            let step = self.step(&log.vertex);
            let number = step.number;
            let text = String::from_utf8_lossy(&log.msg);
            out.extend(
                step.output
                    .push(&text)
                    .into_iter()
                    .map(|line| format!("#{number} {line}")),
            );
        }
        for warning in &status.warnings {
            let number = self.step(&warning.vertex).number;
            out.push(format!(
                "#{number} WARNING: {}",
                String::from_utf8_lossy(&warning.short).trim()
            ));
        }
        out
    }

    /// The partial output lines still held (at the end of the build).
    pub fn finish(&mut self) -> Vec<String> {
        let mut held: Vec<(usize, String)> = self
            .steps
            .values_mut()
            .filter_map(|s| held(&mut s.output).map(|line| (s.number, line)))
            .collect();
        held.sort();
        held.into_iter()
            .map(|(number, line)| format!("#{number} {line}"))
            .collect()
    }

    fn step(&mut self, digest: &str) -> &mut Step {
        let next = &mut self.next;
        self.steps.entry(digest.to_string()).or_insert_with(|| {
            *next += 1;
            Step {
                number: *next,
                ..Step::default()
            }
        })
    }

    fn vertex(&mut self, vertex: &Vertex, out: &mut Vec<String>) {
        let step = self.step(&vertex.digest);
        let number = step.number;
        let started = vertex.started.is_some() || vertex.cached;
        if started && !step.announced {
            step.announced = true;
            out.push(format!("#{number} {}", vertex.name));
        }
        if step.ended || !(vertex.cached || vertex.completed.is_some()) {
            return;
        }
        step.ended = true;
        if let Some(line) = held(&mut step.output) {
            out.push(format!("#{number} {line}"));
        }
        if !vertex.error.is_empty() {
            out.push(format!("#{number} ERROR: {}", vertex.error));
        } else if vertex.cached {
            out.push(format!("#{number} CACHED"));
        } else {
            let took = match (&vertex.started, &vertex.completed) {
                (Some(s), Some(c)) => {
                    let nanos = (i128::from(c.seconds) - i128::from(s.seconds)) * 1_000_000_000
                        + i128::from(c.nanos)
                        - i128::from(s.nanos);
                    nanos.max(0) as f64 / 1e9
                }
                _ => 0.0,
            };
            out.push(format!("#{number} DONE {took:.1}s"));
        }
    }
}

/// The partial line a buffer holds, if any.
fn held(output: &mut LineBuffer) -> Option<String> {
    Some(output.take()).filter(|line| !line.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::moby::buildkit::v1::{VertexLog, VertexWarning};
    use bollard_buildkit_proto::google::protobuf::Timestamp;

    fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn vertex(digest: &str, name: &str) -> Vertex {
        Vertex {
            digest: digest.into(),
            name: name.into(),
            ..Vertex::default()
        }
    }

    fn log(digest: &str, msg: &str) -> VertexLog {
        VertexLog {
            vertex: digest.into(),
            msg: msg.as_bytes().to_vec(),
            ..VertexLog::default()
        }
    }

    fn status(vertexes: Vec<Vertex>, logs: Vec<VertexLog>) -> StatusResponse {
        StatusResponse {
            vertexes,
            logs,
            ..StatusResponse::default()
        }
    }

    #[test]
    fn steps_are_numbered_announced_once_and_timed() {
        let mut p = Progress::default();
        let run = "sha256:run";
        let mut started = vertex(run, "[2/2] RUN make");
        started.started = at(10, 0);
        // Seen before it starts: numbered, not announced.
        assert_eq!(
            p.lines(&status(vec![vertex(run, "[2/2] RUN make")], vec![])),
            Vec::<String>::new()
        );
        assert_eq!(
            p.lines(&status(vec![started.clone()], vec![])),
            ["#1 [2/2] RUN make"]
        );
        // The same state again says nothing new.
        assert!(p.lines(&status(vec![started.clone()], vec![])).is_empty());
        let mut done = started;
        done.completed = at(11, 250_000_000);
        assert_eq!(
            p.lines(&status(vec![done.clone()], vec![])),
            ["#1 DONE 1.2s"]
        );
        assert!(p.lines(&status(vec![done], vec![])).is_empty());
    }

    #[test]
    fn cached_and_failed_steps_say_so() {
        let mut p = Progress::default();
        let mut from = vertex("sha256:from", "[1/2] FROM base");
        from.cached = true;
        from.started = at(1, 0);
        from.completed = at(1, 0);
        let mut run = vertex("sha256:run", "[2/2] RUN false");
        run.started = at(1, 0);
        run.completed = at(2, 0);
        run.error =
            "process \"/bin/sh -c false\" did not complete successfully: exit code: 1".into();
        assert_eq!(
            p.lines(&status(vec![from, run], vec![])),
            [
                "#1 [1/2] FROM base",
                "#1 CACHED",
                "#2 [2/2] RUN false",
                "#2 ERROR: process \"/bin/sh -c false\" did not complete successfully: exit code: 1",
            ]
        );
    }

    #[test]
    fn output_lines_are_joined_across_messages_and_prefixed() {
        let mut p = Progress::default();
        let mut run = vertex("sha256:run", "[2/2] RUN echo");
        run.started = at(1, 0);
        assert_eq!(
            p.lines(&status(vec![run.clone()], vec![log("sha256:run", "hel")])),
            ["#1 [2/2] RUN echo"]
        );
        assert_eq!(
            p.lines(&status(vec![], vec![log("sha256:run", "lo\nwor")])),
            ["#1 hello"]
        );
        // A step that ends says its last partial line first.
        run.completed = at(1, 0);
        assert_eq!(
            p.lines(&status(vec![run], vec![])),
            ["#1 wor", "#1 DONE 0.0s"]
        );
        assert!(p.finish().is_empty());
    }

    #[test]
    fn what_is_held_at_the_end_comes_out_in_step_order() {
        let mut p = Progress::default();
        p.lines(&status(
            vec![],
            vec![log("sha256:a", "one"), log("sha256:b", "two")],
        ));
        assert_eq!(p.finish(), ["#1 one", "#2 two"]);
        assert!(p.finish().is_empty());
    }

    #[test]
    fn warnings_and_bad_bytes_do_not_break_the_log() {
        let mut p = Progress::default();
        let warning = VertexWarning {
            vertex: "sha256:a".into(),
            short: b"  something odd \n".to_vec(),
            ..VertexWarning::default()
        };
        let mut s = status(
            vec![],
            vec![VertexLog {
                vertex: "sha256:a".into(),
                msg: vec![0xff, b'x', b'\n'],
                ..VertexLog::default()
            }],
        );
        s.warnings = vec![warning];
        assert_eq!(p.lines(&s), ["#1 \u{fffd}x", "#1 WARNING: something odd"]);
        // A completed timestamp before the start (clock skew) is no negative time.
        let mut v = vertex("sha256:c", "[1/1] FROM x");
        v.started = at(5, 0);
        v.completed = at(4, 0);
        assert_eq!(
            p.lines(&status(vec![v], vec![])),
            ["#2 [1/1] FROM x", "#2 DONE 0.0s"]
        );
    }
}
