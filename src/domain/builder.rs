//! Which of the Docker daemon's builders runs a build: BuildKit (the default: labels cost no
//! step, unchanged steps and contexts are cheaper), or the classic builder, which an operator may
//! choose (`KILN_BUILDER=classic`) and which kiln uses whenever builds have memory or CPU limits
//! (the daemon's BuildKit does not apply them), and for a context that needs the daemon to apply its
//! `.dockerignore` (a Dockerfile from outside the context directory, which kiln sends under its own
//! name, or a Dockerfile or `.dockerignore` the context's `.dockerignore` lists): the classic builder
//! drops those files before `COPY`; the daemon's BuildKit (Docker 20.10) would copy them into the
//! image, as it applies no `.dockerignore` to an uploaded context.

use super::build_limits::BuildLimits;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Builder {
    #[default]
    BuildKit,
    Classic,
}

impl Builder {
    /// `KILN_BUILDER`'s value.
    pub fn parse(text: &str) -> Result<Builder, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "buildkit" => Ok(Builder::BuildKit),
            "classic" => Ok(Builder::Classic),
            other => Err(format!(
                "unknown builder {other:?}: use \"buildkit\" or \"classic\""
            )),
        }
    }

    /// The builder a build runs on, and the log line saying which and why. `needs_dockerignore`:
    /// why the build's context relies on the daemon applying its `.dockerignore`, if it does
    /// (`ContextPlan::needs_daemon_dockerignore`).
    pub fn for_build(
        self,
        limits: &BuildLimits,
        needs_dockerignore: Option<&str>,
    ) -> (Builder, String) {
        match self {
            Builder::Classic => (
                Builder::Classic,
                "Builder: classic (KILN_BUILDER=classic)".into(),
            ),
            Builder::BuildKit if limits.memory.is_some() || limits.cpu_shares.is_some() => (
                Builder::Classic,
                "Builder: classic (the daemon's BuildKit does not apply memory and CPU limits)"
                    .into(),
            ),
            Builder::BuildKit => match needs_dockerignore {
                Some(why) => (Builder::Classic, format!("Builder: classic ({why})")),
                None => (Builder::BuildKit, "Builder: BuildKit".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_two_builders_and_refuses_the_rest() {
        assert_eq!(Builder::parse("buildkit"), Ok(Builder::BuildKit));
        assert_eq!(Builder::parse(" BuildKit "), Ok(Builder::BuildKit));
        assert_eq!(Builder::parse("classic"), Ok(Builder::Classic));
        for bad in ["", "v1", "buildx", "classic,buildkit"] {
            let e = Builder::parse(bad).unwrap_err();
            assert!(e.contains("\"buildkit\" or \"classic\""), "{bad}: {e}");
        }
    }

    #[test]
    fn limits_need_the_classic_builder() {
        let none = BuildLimits::default();
        assert_eq!(
            Builder::BuildKit.for_build(&none, None).0,
            Builder::BuildKit
        );
        assert_eq!(Builder::Classic.for_build(&none, None).0, Builder::Classic);
        let memory = BuildLimits {
            memory: Some(64 << 20),
            ..BuildLimits::default()
        };
        let cpu = BuildLimits {
            cpu_shares: Some(512),
            ..BuildLimits::default()
        };
        for limits in [memory, cpu] {
            let (builder, line) = Builder::BuildKit.for_build(&limits, None);
            assert_eq!(builder, Builder::Classic);
            assert!(line.contains("memory and CPU limits"), "{line}");
        }
    }

    #[test]
    fn a_context_relying_on_the_daemons_dockerignore_needs_the_classic_builder() {
        let none = BuildLimits::default();
        let why = Some("the Dockerfile lies outside the build context");
        assert_eq!(
            Builder::BuildKit.for_build(&none, why),
            (
                Builder::Classic,
                "Builder: classic (the Dockerfile lies outside the build context)".to_string()
            )
        );
        assert_eq!(
            Builder::Classic.for_build(&none, why),
            (
                Builder::Classic,
                "Builder: classic (KILN_BUILDER=classic)".to_string()
            )
        );
    }
}
