//! What a build's state is as a commit status on the git host (issue 12): the state, the
//! description and the context. Pure: the outbox (`db::commit_statuses`) stores what this says.

use crate::forge::client::StatusState;

/// The status a build in `status` shows on its commit: queued → pending "queued", building →
/// running "building", succeeded → success with the image tag, failed → failure with the
/// one-line reason, cancelled → cancelled, skipped → success saying why it did not build.
/// None for a status kiln does not know.
pub fn for_build(
    status: &str,
    tag: Option<&str>,
    error: Option<&str>,
) -> Option<(StatusState, String)> {
    let reason = |fallback: &str| {
        error
            .and_then(|e| e.lines().map(str::trim).find(|l| !l.is_empty()))
            .unwrap_or(fallback)
            .to_string()
    };
    Some(match status {
        "queued" => (StatusState::Pending, "queued".into()),
        "building" => (StatusState::Running, "building".into()),
        "succeeded" => (
            StatusState::Success,
            match tag {
                Some(t) if !t.is_empty() => format!("built {t}"),
                _ => "built".into(),
            },
        ),
        "failed" => (StatusState::Failure, reason("failed")),
        "cancelled" => (StatusState::Cancelled, "cancelled".into()),
        "skipped" => (
            StatusState::Success,
            format!("skipped: {}", reason("nothing to build")),
        ),
        _ => return None,
    })
}

/// `kiln/{rule name}`, or `kiln/{ref}` (without `refs/heads/`, `refs/tags/`) for a build
/// without a rule.
pub fn context(rule_name: Option<&str>, git_ref: &str) -> String {
    match rule_name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => format!("kiln/{name}"),
        None => {
            let short = git_ref
                .strip_prefix("refs/heads/")
                .or_else(|| git_ref.strip_prefix("refs/tags/"))
                .unwrap_or(git_ref);
            format!("kiln/{short}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (build status, tag, error) → (state, description).
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        StatusState,
        &'a str,
    );

    #[test]
    fn states_and_descriptions() {
        let cases: &[Case] = &[
            ("queued", None, None, StatusState::Pending, "queued"),
            (
                "building",
                Some("main"),
                None,
                StatusState::Running,
                "building",
            ),
            (
                "succeeded",
                Some("main-1a2b3c4"),
                None,
                StatusState::Success,
                "built main-1a2b3c4",
            ),
            ("succeeded", None, None, StatusState::Success, "built"),
            (
                "failed",
                Some("x"),
                Some("\n  docker build: step 2 failed\nmore detail"),
                StatusState::Failure,
                "docker build: step 2 failed",
            ),
            ("failed", None, None, StatusState::Failure, "failed"),
            (
                "cancelled",
                None,
                Some("cancelled by user"),
                StatusState::Cancelled,
                "cancelled",
            ),
            (
                "skipped",
                None,
                Some("no changed file matches the rule's paths"),
                StatusState::Success,
                "skipped: no changed file matches the rule's paths",
            ),
        ];
        for (status, tag, error, state, description) in cases {
            assert_eq!(
                for_build(status, *tag, *error),
                Some((*state, description.to_string())),
                "{status}"
            );
        }
        assert_eq!(for_build("", None, None), None);
        assert_eq!(for_build("weird\0", None, None), None);
    }

    #[test]
    fn contexts() {
        assert_eq!(
            context(Some("api image"), "refs/heads/main"),
            "kiln/api image"
        );
        assert_eq!(context(None, "refs/heads/main"), "kiln/main");
        assert_eq!(context(Some("  "), "refs/tags/v1.0"), "kiln/v1.0");
        assert_eq!(context(None, "HEAD"), "kiln/HEAD");
        assert_eq!(context(None, ""), "kiln/");
    }
}
