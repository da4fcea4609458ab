//! A build's settings (issue 9) as the worker applies them: the extra tags it pushes, and the log
//! line that says what the settings change. The rules themselves are in `domain::build_settings`.

use super::log::BuildLog;
use crate::domain::build_settings::{self, BuildSettings};
use crate::domain::pattern::RefPattern;
use crate::domain::rules::GitRef;
use crate::domain::template::TemplateVars;

/// The extra tags of this build: the settings' templates rendered for its ref and commit, with the
/// rule's name for captures (the ref's own name when the rule is gone). What cannot render is said
/// in the log and left out.
pub async fn extra_tags(
    settings: &BuildSettings,
    rule_name: Option<&str>,
    git_ref: &str,
    commit: &str,
    tag: &str,
    date: chrono::NaiveDate,
    log: &mut BuildLog,
) -> Vec<String> {
    if settings.extra_tags.is_empty() {
        return Vec::new();
    }
    let ref_name = GitRef::parse(git_ref).map_or_else(|| git_ref.to_string(), |r| r.name);
    let pattern = rule_name
        .and_then(|n| RefPattern::parse(n).ok())
        .or_else(|| RefPattern::parse(&ref_name).ok());
    let Some(pattern) = pattern else {
        log.line("Extra tags left out: the rule's name cannot be read")
            .await;
        return Vec::new();
    };
    let captures = pattern.matches(&ref_name).unwrap_or_default();
    let rendered = build_settings::render_extra_tags(
        &settings.extra_tags,
        &pattern,
        &TemplateVars {
            ref_name: &ref_name,
            sha: commit,
            date,
            captures: &captures,
        },
        tag,
    );
    for (template, why) in &rendered.skipped {
        log.line(&format!("Extra tag {template:?} left out: {why}"))
            .await;
    }
    rendered.tags
}

/// One log line saying what the settings change (build argument names, never their values).
pub fn summary(settings: &BuildSettings, extra_tags: &[String]) -> String {
    let mut args: Vec<&str> = settings.build_args.keys().map(String::as_str).collect();
    args.extend(build_settings::RESERVED_BUILD_ARGS);
    let mut parts = vec![format!("build arguments {}", args.join(", "))];
    if !settings.target.is_empty() {
        parts.push(format!("target stage {}", settings.target));
    }
    if settings.no_cache {
        parts.push("no cache".into());
    }
    if !extra_tags.is_empty() {
        parts.push(format!("extra tags {}", extra_tags.join(", ")));
    }
    format!("Build settings: {}", parts.join("; "))
}
