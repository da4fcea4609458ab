//! Matching a push against a repository's rules: which images to build and,
//! for every rule that does not build, why (the "why didn't it build?" view).
//!
//! Checks per rule, in order; the first that fails is the reason:
//! 1. the repository is hidden ([`SkipReason::RepositoryHidden`], only in
//!    [`plan_builds`]);
//! 2. the rule is disabled;
//! 3. the rule is for the other kind of ref (branch vs tag);
//! 4. the rule name does not match the pushed name;
//! 5. the head commit message holds a skip marker (`[skip ci]`, `[ci skip]`,
//!    `[skip kiln]`, `[kiln skip]`, any case);
//! 6. the version template renders to nothing usable;
//! 7. an earlier rule in the same plan already builds the same tag (only in
//!    [`plan_builds`]): the first rule wins, one build per tag.
//!
//! A rule whose stored name or version no longer parses (they are validated
//! when the rule is created, so this should not happen) is reported as a
//! name mismatch or an empty version; nothing here panics.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::pattern::RefPattern;
use super::tag::image_tag;
use super::template::{TemplateVars, VersionTemplate};
use super::{FieldError, quote};

/// Whether a rule (or a push) is about branches or tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefKind {
    Branch,
    Tag,
}

impl RefKind {
    /// `"branch"` or `"tag"`, as stored and as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            RefKind::Branch => "branches",
            RefKind::Tag => "tags",
        }
    }

    fn ref_prefix(self) -> &'static str {
        match self {
            RefKind::Branch => "refs/heads/",
            RefKind::Tag => "refs/tags/",
        }
    }
}

impl fmt::Display for RefKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RefKind {
    type Err = FieldError;

    /// Exactly `branch` or `tag` (field `type`, code `invalid_value`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "branch" => Ok(RefKind::Branch),
            "tag" => Ok(RefKind::Tag),
            other => Err(FieldError::new(
                "type",
                "invalid_value",
                format!("must be 'branch' or 'tag' (got {})", quote(other)),
            )),
        }
    }
}

/// A pushed branch or tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef {
    pub kind: RefKind,
    /// The short name: `main`, `feature/login`, `v1.2.3`.
    pub name: String,
}

impl GitRef {
    /// `refs/heads/X` → branch `X`, `refs/tags/X` → tag `X`; anything else
    /// (other namespaces, an empty name) → `None`.
    pub fn parse(full: &str) -> Option<GitRef> {
        [RefKind::Branch, RefKind::Tag]
            .into_iter()
            .find_map(|kind| {
                let name = full.strip_prefix(kind.ref_prefix())?;
                (!name.is_empty()).then(|| GitRef {
                    kind,
                    name: name.to_string(),
                })
            })
    }

    /// The full ref name: `refs/heads/main`, `refs/tags/v1`.
    pub fn full(&self) -> String {
        format!("{}{}", self.kind.ref_prefix(), self.name)
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.ref_prefix(), self.name)
    }
}

/// A build rule as stored.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub id: String,
    pub kind: RefKind,
    /// Exact name, wildcard or `/regex/` (see [`RefPattern`]).
    pub name: String,
    pub dockerfile: String,
    pub context: String,
    /// Version template (see [`VersionTemplate`]); `""` means the ref name.
    pub version: String,
    /// `true`: the tag is the version itself and is overwritten by the next
    /// build; `false`: the tag is `{version}-{sha7}`.
    pub overwrite: bool,
    pub enabled: bool,
    /// Build settings (issue 9), copied onto each build the rule queues.
    pub settings: super::build_settings::BuildSettings,
}

/// The longest `dockerfile` or `context`, in bytes.
/// Every field a rule has, as the API, the rules files and the console's form name them.
pub const RULE_FIELDS: &[&str] = &[
    "type",
    "name",
    "dockerfile",
    "context",
    "version",
    "overwrite",
    "enabled",
    "build_args",
    "target",
    "no_cache",
    "extra_tags",
    "timeout_minutes",
    "schedule",
    "paths",
    "ignore_paths",
    "network",
];

pub const MAX_REPO_PATH_LEN: usize = 1024;

/// Normalizes a path inside the repository: `./a//b/` → `a/b`, `.` or `""`
/// → `""` (the root). `None` for an absolute path, a `..` component, or a
/// control character (NUL included).
pub fn normalize_repo_path(p: &str) -> Option<String> {
    if p.starts_with('/') || p.chars().any(char::is_control) {
        return None;
    }
    let mut parts = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

fn validate_repo_path(field: &'static str, p: &str) -> Result<String, FieldError> {
    super::check_length_and_controls(field, p, MAX_REPO_PATH_LEN, "")?;
    if p.starts_with('/') {
        return Err(FieldError::new(
            field,
            "absolute_path",
            format!(
                "must be a path relative to the repository root, not an absolute path (got {})",
                quote(p)
            ),
        ));
    }
    normalize_repo_path(p).ok_or_else(|| {
        FieldError::new(
            field,
            "parent_directory",
            format!(
                "must stay inside the repository: '..' is not allowed (got {})",
                quote(p)
            ),
        )
    })
}

/// Validates a rule before it is stored: `name` as a [`RefPattern`] (field
/// `name`), `version` as a [`VersionTemplate`] for that name (field
/// `version`), `dockerfile` (field `dockerfile`: a file inside the
/// repository, so not empty and not the root) and `context` (field
/// `context`: a directory inside the repository; `""` or `"."` is the root).
/// Paths may be written `./a//b/`; store [`normalize_repo_path`] of them.
///
/// `kind` does not change what is valid: `{branch}` in a tag rule and
/// `{tag}` in a branch rule both render as the pushed name.
pub fn validate_rule(
    kind: RefKind,
    name: &str,
    version: &str,
    dockerfile: &str,
    context: &str,
) -> Result<(), FieldError> {
    let _ = kind;
    let pattern = RefPattern::parse(name)?;
    VersionTemplate::parse(version, &pattern)?;
    if dockerfile.is_empty() {
        return Err(FieldError::new(
            "dockerfile",
            "required",
            "must not be empty (the path of the Dockerfile in the repository, e.g. 'Dockerfile')",
        ));
    }
    if validate_repo_path("dockerfile", dockerfile)?.is_empty() {
        return Err(FieldError::new(
            "dockerfile",
            "required",
            format!(
                "must name a file inside the repository, not its root (got {})",
                quote(dockerfile)
            ),
        ));
    }
    validate_repo_path("context", context)?;
    Ok(())
}

/// A push, forge-neutral, as far as the plan needs it.
#[derive(Debug, Clone)]
pub struct PushEvent {
    pub git_ref: GitRef,
    /// The pushed commit id (40 hex characters).
    pub commit: String,
    /// The head commit message, when the forge sent one.
    pub message: Option<String>,
    /// The date `{date}` renders (UTC).
    pub date: chrono::NaiveDate,
}

/// One image to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    pub rule_id: String,
    /// The image tag: `version`, or `{version}-{sha7}` without overwrite.
    pub tag: String,
    /// The rendered version template.
    pub version: String,
    /// As stored in the rule.
    pub dockerfile: String,
    /// As stored in the rule.
    pub context: String,
}

/// Why a rule did not build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    RepositoryHidden,
    RuleDisabled,
    WrongType { rule: RefKind, pushed: RefKind },
    NameMismatch { pattern: String, name: String },
    SkipMarker { marker: String },
    EmptyVersion,
    SameTagAs { rule_id: String },
}

impl SkipReason {
    /// A sentence for people, as the "why didn't it build?" view shows it.
    pub fn message(&self) -> String {
        match self {
            SkipReason::RepositoryHidden => {
                "the repository is hidden: hidden repositories do not build on push".to_string()
            }
            SkipReason::RuleDisabled => "the rule is disabled".to_string(),
            SkipReason::WrongType { rule, pushed } => format!(
                "rule builds {}, the push was to a {}",
                rule.plural(),
                pushed.as_str()
            ),
            SkipReason::NameMismatch { pattern, name } => {
                format!("{} does not match {}", quote(name), quote(pattern))
            }
            SkipReason::SkipMarker { marker } => {
                format!("commit message contains {marker}")
            }
            SkipReason::EmptyVersion => {
                "the version template gives an empty tag for this push".to_string()
            }
            SkipReason::SameTagAs { rule_id } => format!(
                "another rule ({}) already builds the same tag for this commit",
                quote(rule_id)
            ),
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// What happened to one rule for one push.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleOutcome {
    pub rule_id: String,
    /// Whether the rule's type and name match the pushed ref, whatever else
    /// (hidden repository, disabled rule, skip marker, …) stopped it.
    pub matched: bool,
    /// The tag, when one was worked out: for a build, and for
    /// [`SkipReason::SameTagAs`] (the tag the earlier rule builds).
    pub tag: Option<String>,
    /// `None` when the rule builds.
    pub skipped: Option<SkipReason>,
}

/// The builds for one push and the outcome of every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub builds: Vec<BuildPlan>,
    /// One per rule, in rule order.
    pub outcomes: Vec<RuleOutcome>,
}

/// Facts about the repository that the plan needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanContext {
    pub repository_hidden: bool,
}

/// The skip markers, lowercase; matched case-insensitively (ASCII).
pub const SKIP_MARKERS: &[&str] = &["[skip ci]", "[ci skip]", "[skip kiln]", "[kiln skip]"];

fn skip_marker(message: Option<&str>) -> Option<&'static str> {
    let lower = message?.to_ascii_lowercase();
    SKIP_MARKERS.iter().copied().find(|m| lower.contains(m))
}

/// Whether the rule's type and name match the pushed ref (its captures).
fn match_rule(rule: &RuleSpec, git_ref: &GitRef) -> Option<(RefPattern, Vec<String>)> {
    if rule.kind != git_ref.kind {
        return None;
    }
    let pattern = RefPattern::parse(&rule.name).ok()?;
    let captures = pattern.matches(&git_ref.name)?;
    Some((pattern, captures))
}

/// Plans one rule for one push, ignoring whether the repository is hidden
/// and whether another rule builds the same tag (used by "build now").
pub fn plan_rule(rule: &RuleSpec, event: &PushEvent) -> Result<BuildPlan, SkipReason> {
    if !rule.enabled {
        return Err(SkipReason::RuleDisabled);
    }
    if rule.kind != event.git_ref.kind {
        return Err(SkipReason::WrongType {
            rule: rule.kind,
            pushed: event.git_ref.kind,
        });
    }
    let Some((pattern, captures)) = match_rule(rule, &event.git_ref) else {
        return Err(SkipReason::NameMismatch {
            pattern: rule.name.clone(),
            name: event.git_ref.name.clone(),
        });
    };
    if let Some(marker) = skip_marker(event.message.as_deref()) {
        return Err(SkipReason::SkipMarker {
            marker: marker.to_string(),
        });
    }
    let template =
        VersionTemplate::parse(&rule.version, &pattern).map_err(|_| SkipReason::EmptyVersion)?;
    let version = template
        .render(&TemplateVars {
            ref_name: &event.git_ref.name,
            sha: &event.commit,
            date: event.date,
            captures: &captures,
        })
        .ok_or(SkipReason::EmptyVersion)?;
    let tag = image_tag(&version, &event.commit, rule.overwrite);
    Ok(BuildPlan {
        rule_id: rule.id.clone(),
        tag,
        version,
        dockerfile: rule.dockerfile.clone(),
        context: rule.context.clone(),
    })
}

/// Plans a push against all of a repository's rules, in rule order: the
/// builds to queue (at most one per tag) and an outcome for every rule.
pub fn plan_builds(rules: &[RuleSpec], event: &PushEvent, ctx: &PlanContext) -> Plan {
    let mut builds = Vec::new();
    let mut outcomes = Vec::with_capacity(rules.len());
    let mut tag_owner: HashMap<String, String> = HashMap::new();
    for rule in rules {
        let matched = match_rule(rule, &event.git_ref).is_some();
        let outcome = |tag: Option<String>, skipped: Option<SkipReason>| RuleOutcome {
            rule_id: rule.id.clone(),
            matched,
            tag,
            skipped,
        };
        if ctx.repository_hidden {
            outcomes.push(outcome(None, Some(SkipReason::RepositoryHidden)));
            continue;
        }
        match plan_rule(rule, event) {
            Err(reason) => outcomes.push(outcome(None, Some(reason))),
            Ok(build) => {
                if let Some(first) = tag_owner.get(&build.tag) {
                    let reason = SkipReason::SameTagAs {
                        rule_id: first.clone(),
                    };
                    outcomes.push(outcome(Some(build.tag), Some(reason)));
                } else {
                    tag_owner.insert(build.tag.clone(), rule.id.clone());
                    outcomes.push(outcome(Some(build.tag.clone()), None));
                    builds.push(build);
                }
            }
        }
    }
    Plan { builds, outcomes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    const SHA: &str = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";

    fn rule(id: &str, kind: RefKind, name: &str, version: &str, overwrite: bool) -> RuleSpec {
        RuleSpec {
            id: id.to_string(),
            kind,
            name: name.to_string(),
            dockerfile: "Dockerfile".to_string(),
            context: String::new(),
            version: version.to_string(),
            overwrite,
            enabled: true,
            settings: Default::default(),
        }
    }

    fn branch(id: &str, name: &str, version: &str, overwrite: bool) -> RuleSpec {
        rule(id, RefKind::Branch, name, version, overwrite)
    }

    fn tag(id: &str, name: &str, version: &str, overwrite: bool) -> RuleSpec {
        rule(id, RefKind::Tag, name, version, overwrite)
    }

    fn push(full_ref: &str, message: Option<&str>) -> PushEvent {
        PushEvent {
            git_ref: GitRef::parse(full_ref).unwrap(),
            commit: SHA.to_string(),
            message: message.map(str::to_string),
            date: NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(),
        }
    }

    fn visible() -> PlanContext {
        PlanContext {
            repository_hidden: false,
        }
    }

    fn tags(plan: &Plan) -> Vec<(&str, &str)> {
        plan.builds
            .iter()
            .map(|b| (b.rule_id.as_str(), b.tag.as_str()))
            .collect()
    }

    #[test]
    fn ref_kind_strings() {
        assert_eq!(RefKind::Branch.as_str(), "branch");
        assert_eq!(RefKind::Tag.as_str(), "tag");
        assert_eq!(RefKind::Tag.to_string(), "tag");
        assert_eq!("branch".parse::<RefKind>(), Ok(RefKind::Branch));
        assert_eq!("tag".parse::<RefKind>(), Ok(RefKind::Tag));
        for bad in ["", "Branch", "TAG", "tags", " tag", "heads", "tag\0"] {
            let e = bad.parse::<RefKind>().unwrap_err();
            assert_eq!((e.field, e.code), ("type", "invalid_value"), "{bad:?}");
        }
        assert_eq!(
            "x".parse::<RefKind>().unwrap_err().message,
            "must be 'branch' or 'tag' (got 'x')"
        );
    }

    #[test]
    fn ref_kind_serde() {
        assert_eq!(
            serde_json::to_string(&RefKind::Branch).unwrap(),
            "\"branch\""
        );
        assert_eq!(
            serde_json::from_str::<RefKind>("\"tag\"").unwrap(),
            RefKind::Tag
        );
        assert!(serde_json::from_str::<RefKind>("\"Tag\"").is_err());
    }

    #[test]
    fn git_ref_parse_table() {
        let cases: &[(&str, Option<(RefKind, &str)>)] = &[
            ("refs/heads/main", Some((RefKind::Branch, "main"))),
            (
                "refs/heads/feature/login",
                Some((RefKind::Branch, "feature/login")),
            ),
            ("refs/tags/v1.2.3", Some((RefKind::Tag, "v1.2.3"))),
            ("refs/tags/release/1.0", Some((RefKind::Tag, "release/1.0"))),
            (
                "refs/heads/refs/tags/x",
                Some((RefKind::Branch, "refs/tags/x")),
            ),
            ("refs/heads/😀", Some((RefKind::Branch, "😀"))),
            ("refs/heads/", None),
            ("refs/tags/", None),
            ("refs/heads", None),
            ("main", None),
            ("", None),
            ("refs/remotes/origin/main", None),
            ("refs/pull/1/head", None),
            ("refs/notes/commits", None),
            ("REFS/HEADS/main", None),
            ("/refs/heads/main", None),
            (" refs/heads/main", None),
        ];
        for (full, want) in cases {
            let got = GitRef::parse(full);
            let want = want.map(|(kind, name)| GitRef {
                kind,
                name: name.to_string(),
            });
            assert_eq!(got, want, "{full:?}");
            if let Some(r) = got {
                assert_eq!(r.full(), *full);
                assert_eq!(r.to_string(), *full);
            }
        }
    }

    #[test]
    fn normalize_repo_path_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            (".", Some("")),
            ("./", Some("")),
            ("./.", Some("")),
            ("Dockerfile", Some("Dockerfile")),
            ("./Dockerfile", Some("Dockerfile")),
            ("./a//b/", Some("a/b")),
            ("a/./b", Some("a/b")),
            ("docker/Dockerfile.prod", Some("docker/Dockerfile.prod")),
            (".hidden/x", Some(".hidden/x")),
            ("...", Some("...")),
            ("a..b", Some("a..b")),
            ("a b/ü/😀", Some("a b/ü/😀")),
            ("..", None),
            ("../x", None),
            ("a/../b", None),
            ("a/..", None),
            ("./../a", None),
            ("/", None),
            ("/etc/passwd", None),
            ("//x", None),
            ("a\0b", None),
            ("a\nb", None),
        ];
        for (p, want) in cases {
            assert_eq!(normalize_repo_path(p).as_deref(), *want, "{p:?}");
        }
    }

    #[test]
    fn validate_rule_table() {
        let semver = "/^v(\\d+)\\.(\\d+)\\.(\\d+)$/";
        let long_path = "a/".repeat(600);
        // (kind, name, version, dockerfile, context) -> Ok or (field, code)
        type Case<'a> = (
            RefKind,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            Option<(&'a str, &'a str)>,
        );
        let cases: Vec<Case> = vec![
            (RefKind::Branch, "main", "", "Dockerfile", ".", None),
            (RefKind::Branch, "main", "latest", "Dockerfile", "", None),
            (
                RefKind::Tag,
                "v*",
                "{tag}",
                "docker/Dockerfile",
                "docker",
                None,
            ),
            (RefKind::Tag, semver, "{1}.{2}", "./Dockerfile", "./", None),
            (RefKind::Tag, "v*", "{branch}", "Dockerfile", ".", None),
            (RefKind::Branch, "main", "{tag}", "Dockerfile", ".", None),
            (
                RefKind::Branch,
                "",
                "",
                "Dockerfile",
                ".",
                Some(("name", "required")),
            ),
            (
                RefKind::Branch,
                "/(/",
                "",
                "Dockerfile",
                ".",
                Some(("name", "invalid_regex")),
            ),
            (
                RefKind::Branch,
                "a\0",
                "",
                "Dockerfile",
                ".",
                Some(("name", "invalid_character")),
            ),
            (
                RefKind::Branch,
                "main",
                "{1}",
                "Dockerfile",
                ".",
                Some(("version", "unknown_capture")),
            ),
            (
                RefKind::Tag,
                semver,
                "{4}",
                "Dockerfile",
                ".",
                Some(("version", "unknown_capture")),
            ),
            (
                RefKind::Branch,
                "main",
                "{",
                "Dockerfile",
                ".",
                Some(("version", "syntax")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "",
                ".",
                Some(("dockerfile", "required")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                ".",
                ".",
                Some(("dockerfile", "required")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "./",
                ".",
                Some(("dockerfile", "required")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "/Dockerfile",
                ".",
                Some(("dockerfile", "absolute_path")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "../Dockerfile",
                ".",
                Some(("dockerfile", "parent_directory")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "a/../../b",
                ".",
                Some(("dockerfile", "parent_directory")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "Docker\0file",
                ".",
                Some(("dockerfile", "invalid_character")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                &long_path,
                ".",
                Some(("dockerfile", "too_long")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "Dockerfile",
                "/",
                Some(("context", "absolute_path")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "Dockerfile",
                "/srv",
                Some(("context", "absolute_path")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "Dockerfile",
                "..",
                Some(("context", "parent_directory")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "Dockerfile",
                "a/../..",
                Some(("context", "parent_directory")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "Dockerfile",
                "a\nb",
                Some(("context", "invalid_character")),
            ),
            (
                RefKind::Branch,
                "main",
                "",
                "Dockerfile",
                &long_path,
                Some(("context", "too_long")),
            ),
        ];
        for (kind, name, version, dockerfile, context, want) in cases {
            let got = validate_rule(kind, name, version, dockerfile, context)
                .err()
                .map(|e| (e.field, e.code));
            assert_eq!(got, want, "{name:?} {version:?} {dockerfile:?} {context:?}");
        }
        let e = validate_rule(RefKind::Branch, "main", "", "../Dockerfile", ".").unwrap_err();
        assert_eq!(
            e.message,
            "must stay inside the repository: '..' is not allowed (got '../Dockerfile')"
        );
    }

    #[test]
    fn one_exact_branch_rule() {
        let rules = [branch("r1", "main", "", false)];
        let plan = plan_builds(&rules, &push("refs/heads/main", Some("fix")), &visible());
        assert_eq!(
            plan.builds,
            vec![BuildPlan {
                rule_id: "r1".into(),
                tag: "main-1a2b3c4".into(),
                version: "main".into(),
                dockerfile: "Dockerfile".into(),
                context: String::new(),
            }]
        );
        assert_eq!(
            plan.outcomes,
            vec![RuleOutcome {
                rule_id: "r1".into(),
                matched: true,
                tag: Some("main-1a2b3c4".into()),
                skipped: None,
            }]
        );
    }

    #[test]
    fn overwrite_on_and_off() {
        let rules = [
            branch("plain", "main", "", true),
            branch("sha", "main", "edge", false),
            branch("latest", "main", "latest", true),
        ];
        let plan = plan_builds(&rules, &push("refs/heads/main", None), &visible());
        assert_eq!(
            tags(&plan),
            vec![
                ("plain", "main"),
                ("sha", "edge-1a2b3c4"),
                ("latest", "latest")
            ]
        );
        assert_eq!(plan.builds[1].version, "edge");
    }

    #[test]
    fn feature_branch_becomes_a_valid_tag() {
        let rules = [
            branch("f", "feature/*", "", false),
            branch("g", "feature/*", "", true),
        ];
        let plan = plan_builds(&rules, &push("refs/heads/feature/login", None), &visible());
        assert_eq!(
            tags(&plan),
            vec![("f", "feature-login-1a2b3c4"), ("g", "feature-login")]
        );
        assert_eq!(plan.builds[1].version, "feature-login");
    }

    #[test]
    fn wildcard_and_regex_tag_rules() {
        let semver = "/^v(\\d+)\\.(\\d+)\\.(\\d+)$/";
        let rules = [
            tag("all-v", "v*", "", true),
            tag("v-dot", "v*.*", "{tag}", true),
            tag("minor", semver, "{1}.{2}", true),
            tag("major", semver, "{\\1}", true),
            tag("release", "release-*", "", true),
            tag("dated", "v*", "{tag}-{date}", true),
        ];
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "refs/tags/v1.22.333",
                &[
                    ("all-v", "v1.22.333"),
                    ("minor", "1.22"),
                    ("major", "1"),
                    ("dated", "v1.22.333-20240307"),
                ],
            ),
            ("refs/tags/v2", &[("all-v", "v2"), ("dated", "v2-20240307")]),
            (
                "refs/tags/v2.0",
                &[("all-v", "v2.0"), ("dated", "v2.0-20240307")],
            ),
            ("refs/tags/release-7", &[("release", "release-7")]),
            ("refs/tags/1.2.3", &[]),
            ("refs/heads/v1.2.3", &[]),
        ];
        for (full, want) in cases {
            let plan = plan_builds(&rules, &push(full, None), &visible());
            assert_eq!(tags(&plan), want.to_vec(), "{full}");
            assert_eq!(plan.outcomes.len(), rules.len());
        }
        // v*.* and v* both give "v1.22.333": the second is a duplicate
        let plan = plan_builds(&rules, &push("refs/tags/v1.22.333", None), &visible());
        assert_eq!(
            plan.outcomes[1],
            RuleOutcome {
                rule_id: "v-dot".into(),
                matched: true,
                tag: Some("v1.22.333".into()),
                skipped: Some(SkipReason::SameTagAs {
                    rule_id: "all-v".into()
                }),
            }
        );
        // release-* does not match: a reason with the names
        assert_eq!(
            plan.outcomes[4].skipped,
            Some(SkipReason::NameMismatch {
                pattern: "release-*".into(),
                name: "v1.22.333".into()
            })
        );
        assert!(!plan.outcomes[4].matched);
    }

    #[test]
    fn two_rules_same_tag_one_build() {
        let mut second = branch("r2", "*", "{branch}", false);
        second.dockerfile = "other/Dockerfile".into();
        let rules = [
            branch("r1", "main", "", false),
            second,
            branch("r3", "main", "x", false),
        ];
        let plan = plan_builds(&rules, &push("refs/heads/main", None), &visible());
        assert_eq!(
            tags(&plan),
            vec![("r1", "main-1a2b3c4"), ("r3", "x-1a2b3c4")]
        );
        assert_eq!(plan.builds[0].dockerfile, "Dockerfile");
        assert_eq!(
            plan.outcomes[1].skipped,
            Some(SkipReason::SameTagAs {
                rule_id: "r1".into()
            })
        );
        assert_eq!(plan.outcomes[1].tag.as_deref(), Some("main-1a2b3c4"));
        assert!(plan.outcomes[1].matched);
    }

    #[test]
    fn every_skip_reason() {
        let mut disabled = branch("disabled", "main", "", false);
        disabled.enabled = false;
        // stored before validation existed: must not panic, just not match
        let broken_name = branch("broken-name", "/(/", "", false);
        let mut broken_version = branch("broken-version", "main", "", false);
        broken_version.version = "{nope}".into();
        let rules = [
            disabled,
            tag("wrong-type", "main", "", false),
            branch("mismatch", "develop", "", false),
            broken_name,
            branch("empty", "/^(x?)main$/", "{1}", false),
            broken_version,
            branch("ok", "main", "", false),
            branch("dup", "main", "", false),
        ];
        let ev = push("refs/heads/main", None);
        let plan = plan_builds(&rules, &ev, &visible());
        let got: Vec<(&str, bool, Option<SkipReason>)> = plan
            .outcomes
            .iter()
            .map(|o| (o.rule_id.as_str(), o.matched, o.skipped.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("disabled", true, Some(SkipReason::RuleDisabled)),
                (
                    "wrong-type",
                    false,
                    Some(SkipReason::WrongType {
                        rule: RefKind::Tag,
                        pushed: RefKind::Branch
                    })
                ),
                (
                    "mismatch",
                    false,
                    Some(SkipReason::NameMismatch {
                        pattern: "develop".into(),
                        name: "main".into()
                    })
                ),
                (
                    "broken-name",
                    false,
                    Some(SkipReason::NameMismatch {
                        pattern: "/(/".into(),
                        name: "main".into()
                    })
                ),
                ("empty", true, Some(SkipReason::EmptyVersion)),
                ("broken-version", true, Some(SkipReason::EmptyVersion)),
                ("ok", true, None),
                (
                    "dup",
                    true,
                    Some(SkipReason::SameTagAs {
                        rule_id: "ok".into()
                    })
                ),
            ]
        );
        assert_eq!(tags(&plan), vec![("ok", "main-1a2b3c4")]);

        // skip marker
        let plan = plan_builds(
            &rules,
            &push("refs/heads/main", Some("docs: typo\n\n[skip ci]")),
            &visible(),
        );
        assert!(plan.builds.is_empty());
        assert_eq!(
            plan.outcomes[6].skipped,
            Some(SkipReason::SkipMarker {
                marker: "[skip ci]".into()
            })
        );
        // earlier checks still come first
        assert_eq!(plan.outcomes[0].skipped, Some(SkipReason::RuleDisabled));
        assert!(matches!(
            plan.outcomes[2].skipped,
            Some(SkipReason::NameMismatch { .. })
        ));

        // hidden repository: every rule, before anything else
        let plan = plan_builds(
            &rules,
            &ev,
            &PlanContext {
                repository_hidden: true,
            },
        );
        assert!(plan.builds.is_empty());
        assert_eq!(plan.outcomes.len(), rules.len());
        for o in &plan.outcomes {
            assert_eq!(o.skipped, Some(SkipReason::RepositoryHidden));
            assert_eq!(o.tag, None);
        }
        assert!(plan.outcomes[6].matched);
        assert!(!plan.outcomes[2].matched);
    }

    #[test]
    fn skip_markers_table() {
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (None, None),
            (Some(""), None),
            (Some("fix things"), None),
            (Some("[skip ci]"), Some("[skip ci]")),
            (Some("docs [SKIP CI]"), Some("[skip ci]")),
            (Some("[Ci Skip] wip"), Some("[ci skip]")),
            (Some("x\n\n[skip kiln]"), Some("[skip kiln]")),
            (Some("[KILN SKIP]"), Some("[kiln skip]")),
            (Some("skip ci"), None),
            (Some("[skip  ci]"), None),
            (Some("[skip-ci]"), None),
            (Some("[skipci]"), None),
            (Some("[s\u{212a}ip ci]"), None), // Kelvin sign is not 'k'
            (Some("😀 [skip ci] 😀"), Some("[skip ci]")),
        ];
        let rules = [branch("r", "main", "", false)];
        for (message, want) in cases {
            let plan = plan_builds(&rules, &push("refs/heads/main", *message), &visible());
            let got = match &plan.outcomes[0].skipped {
                Some(SkipReason::SkipMarker { marker }) => Some(marker.as_str()),
                None => None,
                other => panic!("{other:?}"),
            };
            assert_eq!(got, *want, "{message:?}");
            assert_eq!(plan.builds.len(), usize::from(want.is_none()));
        }
    }

    #[test]
    fn plan_rule_ignores_hidden_and_duplicates() {
        let r = branch("r", "main", "", true);
        let ev = push("refs/heads/main", None);
        let b = plan_rule(&r, &ev).unwrap();
        assert_eq!((b.tag.as_str(), b.version.as_str()), ("main", "main"));
        assert_eq!(plan_rule(&r, &ev), Ok(b));
        let mut off = r.clone();
        off.enabled = false;
        assert_eq!(plan_rule(&off, &ev), Err(SkipReason::RuleDisabled));
        assert_eq!(
            plan_rule(&r, &push("refs/tags/main", None)),
            Err(SkipReason::WrongType {
                rule: RefKind::Branch,
                pushed: RefKind::Tag
            })
        );
    }

    #[test]
    fn long_names_stay_within_128() {
        let name = format!("feature/{}", "x".repeat(300));
        let rules = [
            branch("a", "feature/*", "", false),
            branch("b", "feature/*", "", true),
        ];
        let plan = plan_builds(
            &rules,
            &push(&format!("refs/heads/{name}"), None),
            &visible(),
        );
        assert_eq!(plan.builds.len(), 2);
        let a = &plan.builds[0];
        assert_eq!(a.tag.len(), 128);
        assert_eq!(a.tag, format!("feature-{}-1a2b3c4", "x".repeat(112)));
        assert_eq!(a.version.len(), 128);
        let b = &plan.builds[1];
        assert_eq!(b.tag, format!("feature-{}", "x".repeat(120)));
    }

    #[test]
    fn hostile_pushes_never_panic() {
        let names = [
            "x".repeat(10_000),
            "\u{301}\u{301}".into(),
            "😀".into(),
            "\u{202e}kcah".into(),
            "../../x".into(),
            "a\0b".into(),
            "ｍａｉｎ".into(),
            "-".into(),
        ];
        let rules = [
            branch("all", "*", "", false),
            branch("re", "/^(.*)$/", "{1}", true),
            branch("opt", "/(a)?(b)?/", "{1}{2}", false),
        ];
        for name in &names {
            let ev = PushEvent {
                git_ref: GitRef {
                    kind: RefKind::Branch,
                    name: name.clone(),
                },
                commit: String::new(),
                message: Some("\0".repeat(100)),
                date: NaiveDate::MIN,
            };
            let plan = plan_builds(&rules, &ev, &visible());
            assert_eq!(plan.outcomes.len(), 3);
            for b in &plan.builds {
                assert!(crate::domain::tag::is_valid_tag(&b.tag), "{:?}", b.tag);
            }
            for o in &plan.outcomes {
                if let Some(r) = &o.skipped {
                    assert!(r.message().len() < 300);
                }
            }
        }
    }

    #[test]
    fn skip_reason_messages() {
        let cases: Vec<(SkipReason, &str)> = vec![
            (
                SkipReason::RepositoryHidden,
                "the repository is hidden: hidden repositories do not build on push",
            ),
            (SkipReason::RuleDisabled, "the rule is disabled"),
            (
                SkipReason::WrongType {
                    rule: RefKind::Tag,
                    pushed: RefKind::Branch,
                },
                "rule builds tags, the push was to a branch",
            ),
            (
                SkipReason::WrongType {
                    rule: RefKind::Branch,
                    pushed: RefKind::Tag,
                },
                "rule builds branches, the push was to a tag",
            ),
            (
                SkipReason::NameMismatch {
                    pattern: "release-*".into(),
                    name: "v1".into(),
                },
                "'v1' does not match 'release-*'",
            ),
            (
                SkipReason::SkipMarker {
                    marker: "[skip ci]".into(),
                },
                "commit message contains [skip ci]",
            ),
            (
                SkipReason::EmptyVersion,
                "the version template gives an empty tag for this push",
            ),
            (
                SkipReason::SameTagAs {
                    rule_id: "r1".into(),
                },
                "another rule ('r1') already builds the same tag for this commit",
            ),
        ];
        for (reason, want) in cases {
            assert_eq!(reason.message(), want);
            assert_eq!(reason.to_string(), want);
        }
    }

    #[test]
    fn outcomes_serialize_for_the_api() {
        let cases: Vec<(SkipReason, &str)> = vec![
            (
                SkipReason::RepositoryHidden,
                r#"{"reason":"repository_hidden"}"#,
            ),
            (SkipReason::RuleDisabled, r#"{"reason":"rule_disabled"}"#),
            (
                SkipReason::WrongType {
                    rule: RefKind::Tag,
                    pushed: RefKind::Branch,
                },
                r#"{"reason":"wrong_type","rule":"tag","pushed":"branch"}"#,
            ),
            (
                SkipReason::NameMismatch {
                    pattern: "v*".into(),
                    name: "main".into(),
                },
                r#"{"reason":"name_mismatch","pattern":"v*","name":"main"}"#,
            ),
            (
                SkipReason::SkipMarker {
                    marker: "[ci skip]".into(),
                },
                r#"{"reason":"skip_marker","marker":"[ci skip]"}"#,
            ),
            (SkipReason::EmptyVersion, r#"{"reason":"empty_version"}"#),
            (
                SkipReason::SameTagAs {
                    rule_id: "r1".into(),
                },
                r#"{"reason":"same_tag_as","rule_id":"r1"}"#,
            ),
        ];
        for (reason, want) in cases {
            assert_eq!(serde_json::to_string(&reason).unwrap(), want);
        }
        let o = RuleOutcome {
            rule_id: "r1".into(),
            matched: true,
            tag: None,
            skipped: Some(SkipReason::RuleDisabled),
        };
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"rule_id":"r1","matched":true,"tag":null,"skipped":{"reason":"rule_disabled"}}"#
        );
    }
}
