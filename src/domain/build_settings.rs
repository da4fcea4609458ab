//! A rule's build settings: `build_args`, `target`, `no_cache`, `extra_tags`, `timeout_minutes`,
//! `network`.
//!
//! A build copies its rule's settings when it is queued and runs with that copy. Everything here is
//! pure: validation of each field (with the field named, `build_args.GREETING`, `extra_tags[1]`),
//! the extra tags a build pushes, the build arguments and OCI labels every image gets, and the
//! timeout message.

use std::collections::BTreeMap;
use std::time::Duration;

use super::build_limits::RuleNetwork;
use super::pattern::RefPattern;
use super::template::{TemplateVars, VersionTemplate};
use super::{describe_char, quote};

/// Build arguments kiln always passes; a rule may not set them.
pub const KILN_COMMIT: &str = "KILN_COMMIT";
pub const KILN_REF: &str = "KILN_REF";
pub const KILN_TAG: &str = "KILN_TAG";
pub const RESERVED_BUILD_ARGS: [&str; 3] = [KILN_COMMIT, KILN_REF, KILN_TAG];

/// At most this many build arguments per rule.
pub const MAX_BUILD_ARGS: usize = 64;
/// The longest build argument name, in bytes.
pub const MAX_BUILD_ARG_NAME_LEN: usize = 128;
/// The longest build argument value, in bytes.
pub const MAX_BUILD_ARG_VALUE_LEN: usize = 4096;
/// The longest `target` (a Dockerfile stage name).
pub const MAX_TARGET_LEN: usize = 128;
/// At most this many extra tags per rule.
pub const MAX_EXTRA_TAGS: usize = 16;
/// `timeout_minutes` is 1 to this (a day).
pub const MAX_TIMEOUT_MINUTES: u32 = 1440;

/// The settings a build runs with, as stored on a rule and copied onto each of its builds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BuildSettings {
    /// `--build-arg NAME=VALUE`, sorted by name.
    pub build_args: BTreeMap<String, String>,
    /// The Dockerfile stage to build; `""`: the last one.
    pub target: String,
    /// Build without the layer cache.
    pub no_cache: bool,
    /// Templates of further tags the image is pushed under (the `version` language).
    pub extra_tags: Vec<String>,
    /// `None`: the server's default (`KILN_BUILD_TIMEOUT_MINUTES`).
    pub timeout_minutes: Option<u32>,
    /// The network of the `RUN` steps: the server's (`KILN_BUILD_NETWORK`), or none (issue 11).
    #[serde(skip_serializing_if = "RuleNetwork::is_default")]
    pub network: RuleNetwork,
}

/// A bad setting, naming the field (`build_args.KILN_COMMIT`, `extra_tags[0]`, `target`); the HTTP
/// layer turns it into a 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SettingError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl SettingError {
    fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        SettingError {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}

/// A build argument name as Docker's `ARG` takes it: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// [`MAX_BUILD_ARG_NAME_LEN`] bytes, not one of [`RESERVED_BUILD_ARGS`].
pub fn validate_build_arg_name(name: &str) -> Result<(), SettingError> {
    let field = || format!("build_args.{name}");
    if name.is_empty() {
        return Err(SettingError::new(
            "build_args",
            "invalid_name",
            "a build argument name must not be empty",
        ));
    }
    if name.len() > MAX_BUILD_ARG_NAME_LEN {
        return Err(SettingError::new(
            format!("build_args.{}…", name.chars().take(32).collect::<String>()),
            "too_long",
            format!(
                "a build argument name must be at most {MAX_BUILD_ARG_NAME_LEN} bytes (got {})",
                name.len()
            ),
        ));
    }
    if let Some(c) = name
        .chars()
        .enumerate()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit())))
        .map(|(_, c)| c)
    {
        return Err(SettingError::new(
            field(),
            "invalid_name",
            format!(
                "{} is not a build argument name: letters, digits and '_', not starting with a \
                 digit (found {})",
                quote(name),
                describe_char(c)
            ),
        ));
    }
    if RESERVED_BUILD_ARGS.contains(&name) {
        return Err(SettingError::new(
            field(),
            "reserved",
            format!(
                "{name} is set by kiln for every build (KILN_COMMIT: the commit, KILN_REF: the ref, \
                 KILN_TAG: the image tag); declare `ARG {name}` in the Dockerfile to read it"
            ),
        ));
    }
    Ok(())
}

/// One build argument value: at most [`MAX_BUILD_ARG_VALUE_LEN`] bytes, no NUL.
pub fn validate_build_arg_value(name: &str, value: &str) -> Result<(), SettingError> {
    if value.len() > MAX_BUILD_ARG_VALUE_LEN {
        return Err(SettingError::new(
            format!("build_args.{name}"),
            "too_long",
            format!(
                "must be at most {MAX_BUILD_ARG_VALUE_LEN} bytes (got {})",
                value.len()
            ),
        ));
    }
    if value.contains('\0') {
        return Err(SettingError::new(
            format!("build_args.{name}"),
            "invalid_character",
            "must not contain the NUL character",
        ));
    }
    Ok(())
}

/// Parts of a build argument's name that say it holds a credential.
const SECRET_NAME_PARTS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "CREDENTIAL",
    "APIKEY",
    "API_KEY",
    "ACCESS_KEY",
    "PRIVATE_KEY",
];

/// Prefixes of well-known credentials (GitHub, GitLab, npm, Slack, AWS access key ids, PEM keys).
const SECRET_VALUE_PREFIXES: &[&str] = &[
    "ghp_",
    "gho_",
    "ghs_",
    "github_pat_",
    "glpat-",
    "npm_",
    "xoxb-",
    "xoxp-",
    "AKIA",
    "-----BEGIN",
];

/// Warnings for build arguments that look like secrets, by name (`NPM_TOKEN`, `DB_PASSWORD`,
/// `SSH_KEY`) or by value (a `ghp_…` token, a PEM key); the value is never quoted. Build arguments
/// are settings, not secrets: the rule shows them as they are (API, console, rules files), the
/// daemon gets them in the clear, and the image keeps them in its history (`docker history`). A
/// warning, not a refusal: a name like `TOKEN_URL` may well be harmless.
pub fn secret_warnings(args: &BTreeMap<String, String>) -> Vec<String> {
    args.iter()
        .filter(|(name, value)| name_looks_secret(name) || value_looks_secret(value))
        .map(|(name, _)| {
            format!(
                "build_args.{name} looks like a secret: build arguments are shown with the rule and \
                 kept in the image's history (docker history); pass secrets another way"
            )
        })
        .collect()
}

fn name_looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAME_PARTS.iter().any(|part| upper.contains(part))
        || upper == "KEY"
        || upper.ends_with("_KEY")
}

fn value_looks_secret(value: &str) -> bool {
    let value = value.trim_start();
    SECRET_VALUE_PREFIXES
        .iter()
        .any(|prefix| value.starts_with(prefix) && value.len() >= prefix.len() + 16)
}

/// Every name and value, and their number.
pub fn validate_build_args(args: &BTreeMap<String, String>) -> Result<(), SettingError> {
    if args.len() > MAX_BUILD_ARGS {
        return Err(SettingError::new(
            "build_args",
            "too_many",
            format!(
                "at most {MAX_BUILD_ARGS} build arguments (got {})",
                args.len()
            ),
        ));
    }
    for (name, value) in args {
        validate_build_arg_name(name)?;
        validate_build_arg_value(name, value)?;
    }
    Ok(())
}

/// `build_args` as JSON: an object of strings (`null`: none). A value of another type is named:
/// `build_args.PORT: must be a string (got number); write "8080"`.
pub fn build_args_from_json(
    value: &serde_json::Value,
) -> Result<BTreeMap<String, String>, SettingError> {
    let object = match value {
        serde_json::Value::Null => return Ok(BTreeMap::new()),
        serde_json::Value::Object(o) => o,
        other => {
            return Err(SettingError::new(
                "build_args",
                "invalid_type",
                format!(
                    "must be an object of build argument names to string values, like \
                     {{\"GREETING\": \"hello\"}} (got {})",
                    json_type(other)
                ),
            ));
        }
    };
    let mut args = BTreeMap::new();
    for (name, v) in object {
        validate_build_arg_name(name)?;
        let serde_json::Value::String(s) = v else {
            return Err(SettingError::new(
                format!("build_args.{name}"),
                "invalid_type",
                format!(
                    "must be a string (got {}); quote numbers and booleans, like \"8080\"",
                    json_type(v)
                ),
            ));
        };
        args.insert(name.clone(), s.clone());
    }
    validate_build_args(&args)?;
    Ok(args)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// A Dockerfile stage name (`FROM … AS NAME`): `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most
/// [`MAX_TARGET_LEN`] bytes; `""` is the last stage.
pub fn validate_target(target: &str) -> Result<(), SettingError> {
    if target.len() > MAX_TARGET_LEN {
        return Err(SettingError::new(
            "target",
            "too_long",
            format!(
                "must be at most {MAX_TARGET_LEN} bytes (got {})",
                target.len()
            ),
        ));
    }
    let bad = target
        .chars()
        .enumerate()
        .find(|&(i, c)| !(c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '_' | '.' | '-'))));
    if let Some((i, c)) = bad {
        let which = if i == 0 { "start with" } else { "contain" };
        return Err(SettingError::new(
            "target",
            "invalid_stage",
            format!(
                "must be a stage name of the Dockerfile (FROM … AS NAME: letters, digits, '_', '.', \
                 '-', starting with a letter or digit), or empty for the last stage; it must not \
                 {which} {} (got {})",
                describe_char(c),
                quote(target)
            ),
        ));
    }
    Ok(())
}

/// 1 to [`MAX_TIMEOUT_MINUTES`].
pub fn validate_timeout_minutes(minutes: i64) -> Result<u32, SettingError> {
    u32::try_from(minutes)
        .ok()
        .filter(|m| (1..=MAX_TIMEOUT_MINUTES).contains(m))
        .ok_or_else(|| {
            SettingError::new(
                "timeout_minutes",
                "out_of_range",
                format!(
                    "must be a whole number of minutes from 1 to {MAX_TIMEOUT_MINUTES} (got \
                     {minutes}); leave it out for the server's default"
                ),
            )
        })
}

/// Each extra tag is a template in the `version` language for a rule named `pattern`; not empty, at
/// most [`MAX_EXTRA_TAGS`]. Repeats are allowed (and pushed once).
pub fn validate_extra_tags(templates: &[String], pattern: &RefPattern) -> Result<(), SettingError> {
    if templates.len() > MAX_EXTRA_TAGS {
        return Err(SettingError::new(
            "extra_tags",
            "too_many",
            format!(
                "at most {MAX_EXTRA_TAGS} extra tags (got {})",
                templates.len()
            ),
        ));
    }
    for (i, t) in templates.iter().enumerate() {
        let field = format!("extra_tags[{i}]");
        if t.is_empty() {
            return Err(SettingError::new(
                field,
                "required",
                "must not be empty: write a tag like \"latest\" or a template like \"{branch}-latest\"",
            ));
        }
        VersionTemplate::parse(t, pattern)
            .map_err(|e| SettingError::new(field, e.code, e.message))?;
    }
    Ok(())
}

/// Every setting of a rule named `pattern`.
pub fn validate_settings(s: &BuildSettings, pattern: &RefPattern) -> Result<(), SettingError> {
    validate_build_args(&s.build_args)?;
    validate_target(&s.target)?;
    validate_extra_tags(&s.extra_tags, pattern)?;
    if let Some(m) = s.timeout_minutes {
        validate_timeout_minutes(i64::from(m))?;
    }
    Ok(())
}

/// The extra tags a build pushes besides `main_tag`: each template rendered like the version (and
/// made a valid tag), in order, without repeats and without `main_tag`. A template that renders to
/// nothing or no longer parses (the rule's name changed since) is returned in `skipped` with why.
pub fn render_extra_tags(
    templates: &[String],
    pattern: &RefPattern,
    vars: &TemplateVars,
    main_tag: &str,
) -> RenderedTags {
    let mut out = RenderedTags::default();
    for t in templates {
        let rendered = VersionTemplate::parse(t, pattern)
            .map_err(|e| e.message)
            .and_then(|tpl| {
                tpl.render(vars)
                    .ok_or_else(|| "it renders to an empty tag for this build".to_string())
            });
        match rendered {
            Ok(tag) => {
                if tag != main_tag && !out.tags.contains(&tag) {
                    out.tags.push(tag);
                }
            }
            Err(why) => out.skipped.push((t.clone(), why)),
        }
    }
    out
}

/// What [`render_extra_tags`] gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderedTags {
    pub tags: Vec<String>,
    /// (template, why)
    pub skipped: Vec<(String, String)>,
}

/// What a build is about, for its build arguments and labels.
#[derive(Debug, Clone, Copy)]
pub struct BuildFacts<'a> {
    /// The full commit id.
    pub commit: &'a str,
    /// The full ref: `refs/heads/main`.
    pub git_ref: &'a str,
    /// The image tag.
    pub tag: &'a str,
    /// The clone URL, without credentials.
    pub source: &'a str,
    /// When the build started (its `created` label).
    pub created: chrono::DateTime<chrono::Utc>,
}

/// The rule's build arguments plus `KILN_COMMIT`, `KILN_REF`, `KILN_TAG` (always passed; a
/// Dockerfile sees them when it declares `ARG KILN_COMMIT`).
pub fn build_args_for(
    settings: &BuildSettings,
    facts: &BuildFacts,
) -> std::collections::HashMap<String, String> {
    let mut args: std::collections::HashMap<String, String> = settings
        .build_args
        .iter()
        .filter(|(k, _)| !RESERVED_BUILD_ARGS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    args.insert(KILN_COMMIT.into(), facts.commit.into());
    args.insert(KILN_REF.into(), facts.git_ref.into());
    args.insert(KILN_TAG.into(), facts.tag.into());
    args
}

/// The OCI annotations every image carries as labels.
pub fn oci_labels(facts: &BuildFacts) -> std::collections::HashMap<String, String> {
    [
        (
            "org.opencontainers.image.revision",
            facts.commit.to_string(),
        ),
        ("org.opencontainers.image.source", facts.source.to_string()),
        (
            "org.opencontainers.image.created",
            facts
                .created
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        ("org.opencontainers.image.version", facts.tag.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// How long a build may run: the rule's minutes, else the server's default.
pub fn effective_timeout(settings: &BuildSettings, default: Duration) -> Duration {
    settings
        .timeout_minutes
        .map_or(default, |m| Duration::from_secs(u64::from(m) * 60))
}

/// The failure reason of a build stopped by its timeout: `timed out after 60 min` (seconds only
/// when the server default is not a whole number of minutes: `timed out after 90 s`).
pub fn timeout_message(timeout: Duration) -> String {
    let secs = timeout.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("timed out after {} min", secs / 60)
    } else {
        format!("timed out after {secs} s")
    }
}

/// Whole minutes, rounded up (for showing a default given in seconds).
pub fn whole_minutes(d: Duration) -> u64 {
    d.as_secs().div_ceil(60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};
    use serde_json::json;

    fn err_of<T: std::fmt::Debug>(r: Result<T, SettingError>) -> Option<(String, &'static str)> {
        r.err().map(|e| (e.field, e.code))
    }

    #[test]
    fn build_arg_names_table() {
        let long = "A".repeat(129);
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("GREETING", None),
            ("greeting", None),
            ("_X", None),
            ("A1_b2", None),
            ("HTTP_PROXY", None),
            ("KILN_OTHER", None),
            ("kiln_commit", None),
            (&"A".repeat(128), None),
            ("", Some(("build_args", "invalid_name"))),
            ("1A", Some(("build_args.1A", "invalid_name"))),
            ("A-B", Some(("build_args.A-B", "invalid_name"))),
            ("A B", Some(("build_args.A B", "invalid_name"))),
            ("A=B", Some(("build_args.A=B", "invalid_name"))),
            ("Ä", Some(("build_args.Ä", "invalid_name"))),
            ("A\0", Some(("build_args.A\0", "invalid_name"))),
            ("KILN_COMMIT", Some(("build_args.KILN_COMMIT", "reserved"))),
            ("KILN_REF", Some(("build_args.KILN_REF", "reserved"))),
            ("KILN_TAG", Some(("build_args.KILN_TAG", "reserved"))),
            (
                &long,
                Some(("build_args.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA…", "too_long")),
            ),
        ];
        for (name, want) in cases {
            let got = err_of(validate_build_arg_name(name));
            let want = want.map(|(f, c)| (f.to_string(), c));
            assert_eq!(got, want, "{name:?}");
        }
        let e = validate_build_arg_name("KILN_COMMIT").unwrap_err();
        assert!(e.message.contains("ARG KILN_COMMIT"), "{}", e.message);
        let e = validate_build_arg_name("A-B").unwrap_err();
        assert!(e.message.contains("'-'"), "{}", e.message);
    }

    #[test]
    fn build_args_json_table() {
        let big = "v".repeat(MAX_BUILD_ARG_VALUE_LEN + 1);
        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_BUILD_ARGS)
            .map(|i| (format!("A{i}"), json!("x")))
            .collect();
        /// (input, Ok(the arguments) or Err((field, code)))
        type Case<'a> = (
            serde_json::Value,
            Result<Vec<(&'a str, &'a str)>, (&'a str, &'a str)>,
        );
        let cases: Vec<Case> = vec![
            (json!(null), Ok(vec![])),
            (json!({}), Ok(vec![])),
            (
                json!({"GREETING": "hello", "EMPTY": ""}),
                Ok(vec![("EMPTY", ""), ("GREETING", "hello")]),
            ),
            (
                json!({"U": "ünï 😀 \n ok"}),
                Ok(vec![("U", "ünï 😀 \n ok")]),
            ),
            (json!([]), Err(("build_args", "invalid_type"))),
            (json!("A=B"), Err(("build_args", "invalid_type"))),
            (
                json!({"PORT": 8080}),
                Err(("build_args.PORT", "invalid_type")),
            ),
            (json!({"ON": true}), Err(("build_args.ON", "invalid_type"))),
            (json!({"N": null}), Err(("build_args.N", "invalid_type"))),
            (json!({"L": ["a"]}), Err(("build_args.L", "invalid_type"))),
            (
                json!({"O": {"a": "b"}}),
                Err(("build_args.O", "invalid_type")),
            ),
            (
                json!({"KILN_COMMIT": "x"}),
                Err(("build_args.KILN_COMMIT", "reserved")),
            ),
            (
                json!({"KILN_TAG": 1}),
                Err(("build_args.KILN_TAG", "reserved")),
            ),
            (json!({"1X": "x"}), Err(("build_args.1X", "invalid_name"))),
            (json!({"BIG": big}), Err(("build_args.BIG", "too_long"))),
            (
                json!({"Z": "a\u{0}b"}),
                Err(("build_args.Z", "invalid_character")),
            ),
            (
                serde_json::Value::Object(many),
                Err(("build_args", "too_many")),
            ),
        ];
        for (value, want) in cases {
            let got = build_args_from_json(&value);
            match want {
                Ok(pairs) => {
                    let got = got.unwrap_or_else(|e| panic!("{value}: {e}"));
                    let got: Vec<(&str, &str)> =
                        got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    assert_eq!(got, pairs, "{value}");
                }
                Err((field, code)) => {
                    assert_eq!(err_of(got), Some((field.to_string(), code)), "{value}")
                }
            }
        }
        let e = build_args_from_json(&json!({"PORT": 8080})).unwrap_err();
        assert_eq!(
            e.message,
            "must be a string (got number); quote numbers and booleans, like \"8080\""
        );
    }

    #[test]
    fn target_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", None),
            ("build", None),
            ("Runtime", None),
            ("stage-2", None),
            ("a.b_c-d", None),
            ("0", None),
            (&"s".repeat(128), None),
            (&"s".repeat(129), Some("too_long")),
            ("-x", Some("invalid_stage")),
            ("_x", Some("invalid_stage")),
            (".x", Some("invalid_stage")),
            ("a b", Some("invalid_stage")),
            ("a/b", Some("invalid_stage")),
            ("a:b", Some("invalid_stage")),
            ("ä", Some("invalid_stage")),
            ("a\n", Some("invalid_stage")),
        ];
        for (target, want) in cases {
            let got = validate_target(target).err();
            assert_eq!(got.as_ref().map(|e| e.code), *want, "{target:?}");
            if let Some(e) = got {
                assert_eq!(e.field, "target");
            }
        }
        let e = validate_target("a b").unwrap_err();
        assert!(e.message.contains("' ' (space)"), "{}", e.message);
    }

    #[test]
    fn timeout_table() {
        for (m, want) in [
            (1, Some(1)),
            (60, Some(60)),
            (1440, Some(1440)),
            (0, None),
            (-1, None),
            (1441, None),
            (i64::MAX, None),
            (i64::MIN, None),
        ] {
            let got = validate_timeout_minutes(m);
            assert_eq!(got.as_ref().ok().copied(), want, "{m}");
            if let Err(e) = got {
                assert_eq!(
                    (e.field.as_str(), e.code),
                    ("timeout_minutes", "out_of_range")
                );
                assert!(e.message.contains(&m.to_string()));
            }
        }
    }

    #[test]
    fn extra_tags_table() {
        let main = RefPattern::parse("main").unwrap();
        let semver = RefPattern::parse("/^v(\\d+)\\.(\\d+)$/").unwrap();
        let s = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let too_many: Vec<String> = (0..=MAX_EXTRA_TAGS).map(|i| format!("t{i}")).collect();
        /// (templates, rule name, None or Some((field, code)))
        type Case<'a> = (Vec<String>, &'a RefPattern, Option<(&'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            (s(&[]), &main, None),
            (s(&["latest"]), &main, None),
            (s(&["{branch}-latest", "stable", "latest"]), &main, None),
            (s(&["latest", "latest"]), &main, None),
            (s(&["{1}", "{1}.{2}", "v{1}-{sha7}-{date}"]), &semver, None),
            (s(&[""]), &main, Some(("extra_tags[0]", "required"))),
            (
                s(&["ok", "bad tag"]),
                &main,
                Some(("extra_tags[1]", "invalid_character")),
            ),
            (
                s(&["{1}"]),
                &main,
                Some(("extra_tags[0]", "unknown_capture")),
            ),
            (
                s(&["{3}"]),
                &semver,
                Some(("extra_tags[0]", "unknown_capture")),
            ),
            (
                s(&["{nope}"]),
                &main,
                Some(("extra_tags[0]", "unknown_placeholder")),
            ),
            (
                s(&["x", "-x"]),
                &main,
                Some(("extra_tags[1]", "invalid_start")),
            ),
            (
                s(&[&"x".repeat(129)]),
                &main,
                Some(("extra_tags[0]", "too_long")),
            ),
            (too_many, &main, Some(("extra_tags", "too_many"))),
        ];
        for (templates, pattern, want) in cases {
            let got = err_of(validate_extra_tags(&templates, pattern));
            let want = want.map(|(f, c)| (f.to_string(), c));
            assert_eq!(got, want, "{templates:?}");
        }
    }

    #[test]
    fn extra_tags_render_like_the_version() {
        let sha = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";
        let date = NaiveDate::from_ymd_opt(2024, 3, 7).unwrap();
        let feature = RefPattern::parse("feature/*").unwrap();
        let semver = RefPattern::parse("/^v(\\d+)\\.(\\d+)$/").unwrap();
        let s = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        type Case<'a> = (&'a RefPattern, &'a str, Vec<String>, &'a str, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                &feature,
                "feature/login",
                s(&["latest"]),
                "feature-login",
                vec!["latest"],
            ),
            (
                &feature,
                "feature/login",
                s(&["{branch}-latest", "{sha7}", "d{date}"]),
                "x",
                vec!["feature-login-latest", "1a2b3c4", "d20240307"],
            ),
            // the main tag and repeats are pushed once
            (
                &feature,
                "feature/login",
                s(&["latest", "{branch}", "latest", "LATEST"]),
                "feature-login",
                vec!["latest", "LATEST"],
            ),
            (
                &semver,
                "v1.22",
                s(&["{1}", "{1}.{2}", "v{1}"]),
                "v1.22",
                vec!["1", "1.22", "v1"],
            ),
            (&feature, "feature/login", s(&[]), "feature-login", vec![]),
        ];
        for (pattern, name, templates, main_tag, want) in cases {
            let captures = pattern.matches(name).unwrap();
            let vars = TemplateVars {
                ref_name: name,
                sha,
                date,
                captures: &captures,
            };
            let got = render_extra_tags(&templates, pattern, &vars, main_tag);
            assert_eq!(got.tags, want, "{templates:?}");
            assert!(got.skipped.is_empty());
            for t in &got.tags {
                assert!(crate::domain::tag::is_valid_tag(t), "{t}");
            }
        }
        // a capture that is empty for this push, a capture the (changed) rule name lacks
        let optional = RefPattern::parse("/^(x?)main$/").unwrap();
        let captures = optional.matches("main").unwrap();
        let vars = TemplateVars {
            ref_name: "main",
            sha,
            date,
            captures: &captures,
        };
        let got = render_extra_tags(&s(&["{1}", "ok", "{2}"]), &optional, &vars, "main");
        assert_eq!(got.tags, vec!["ok"]);
        assert_eq!(got.skipped.len(), 2);
        assert_eq!(got.skipped[0].0, "{1}");
        assert!(got.skipped[0].1.contains("empty"), "{:?}", got.skipped);
        assert!(
            got.skipped[1].1.contains("capture group 2"),
            "{:?}",
            got.skipped
        );
    }

    #[test]
    fn build_args_and_labels_for_a_build() {
        let settings = BuildSettings {
            build_args: [("GREETING".to_string(), "hi".to_string())].into(),
            ..Default::default()
        };
        let facts = BuildFacts {
            commit: "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b",
            git_ref: "refs/heads/main",
            tag: "main",
            source: "https://git.example.com/acme/app.git",
            created: chrono::Utc
                .with_ymd_and_hms(2026, 11, 27, 18, 5, 9)
                .unwrap(),
        };
        let args = build_args_for(&settings, &facts);
        let mut got: Vec<(&str, &str)> =
            args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("GREETING", "hi"),
                ("KILN_COMMIT", "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"),
                ("KILN_REF", "refs/heads/main"),
                ("KILN_TAG", "main"),
            ]
        );
        // a stored reserved name (never accepted, but) never overrides kiln's values
        let sneaky = BuildSettings {
            build_args: [("KILN_TAG".to_string(), "evil".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(build_args_for(&sneaky, &facts)["KILN_TAG"], "main");

        let labels = oci_labels(&facts);
        let mut got: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("org.opencontainers.image.created", "2026-11-27T18:05:09Z"),
                (
                    "org.opencontainers.image.revision",
                    "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
                ),
                (
                    "org.opencontainers.image.source",
                    "https://git.example.com/acme/app.git"
                ),
                ("org.opencontainers.image.version", "main"),
            ]
        );
    }

    #[test]
    fn timeouts_and_their_message() {
        let default = Duration::from_secs(3600);
        let mut s = BuildSettings::default();
        assert_eq!(effective_timeout(&s, default), default);
        s.timeout_minutes = Some(1);
        assert_eq!(effective_timeout(&s, default), Duration::from_secs(60));
        for (secs, want) in [
            (60, "timed out after 1 min"),
            (3600, "timed out after 60 min"),
            (86_400, "timed out after 1440 min"),
            (90, "timed out after 90 s"),
            (5, "timed out after 5 s"),
        ] {
            assert_eq!(timeout_message(Duration::from_secs(secs)), want);
        }
        assert_eq!(whole_minutes(Duration::from_secs(90)), 2);
        assert_eq!(whole_minutes(Duration::from_secs(3600)), 60);
    }

    #[test]
    fn settings_round_trip_as_json_with_defaults() {
        let s: BuildSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, BuildSettings::default());
        let full = BuildSettings {
            build_args: [("A".to_string(), "1".to_string())].into(),
            target: "build".into(),
            no_cache: true,
            extra_tags: vec!["latest".into()],
            timeout_minutes: Some(5),
            network: RuleNetwork::Default,
        };
        let text = serde_json::to_string(&full).unwrap();
        assert_eq!(
            text,
            r#"{"build_args":{"A":"1"},"target":"build","no_cache":true,"extra_tags":["latest"],"timeout_minutes":5}"#
        );
        assert_eq!(serde_json::from_str::<BuildSettings>(&text).unwrap(), full);
        let offline = BuildSettings {
            network: RuleNetwork::None,
            ..full.clone()
        };
        let text = serde_json::to_string(&offline).unwrap();
        assert!(text.ends_with(r#""network":"none"}"#), "{text}");
        assert_eq!(
            serde_json::from_str::<BuildSettings>(&text).unwrap(),
            offline
        );
        let main = RefPattern::parse("main").unwrap();
        assert_eq!(validate_settings(&full, &main), Ok(()));
        let mut bad = full.clone();
        bad.timeout_minutes = Some(0);
        assert_eq!(
            err_of(validate_settings(&bad, &main)),
            Some(("timeout_minutes".to_string(), "out_of_range"))
        );
    }

    #[test]
    fn build_args_that_look_like_secrets_are_warned_about_without_their_value() {
        let args = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let named = [
            "NPM_TOKEN",
            "db_password",
            "DB_PASSWD",
            "CLIENT_SECRET",
            "AWS_ACCESS_KEY_ID",
            "SSH_KEY",
            "KEY",
            "STRIPE_APIKEY",
            "GCP_CREDENTIALS",
            "Private_Key",
        ];
        for name in named {
            let warnings = secret_warnings(&args(&[(name, "x")]));
            assert_eq!(warnings.len(), 1, "{name}");
            assert!(
                warnings[0].starts_with(&format!("build_args.{name} looks like a secret: ")),
                "{warnings:?}"
            );
        }
        let token = format!("ghp_{}", "a".repeat(36));
        for value in [
            token.as_str(),
            "glpat-0123456789abcdefghij",
            "AKIAIOSFODNN7EXAMPLE1234",
            "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAA",
        ] {
            let warnings = secret_warnings(&args(&[("SETTING", value)]));
            assert_eq!(warnings.len(), 1, "{value}");
            assert!(!warnings[0].contains(value), "the value is never quoted");
        }
        // Ordinary settings, and short look-alikes, are not warned about.
        for (name, value) in [
            ("GREETING", "hello"),
            ("NODE_ENV", "production"),
            ("KEYBOARD", "us"),
            ("MONKEY_PATCH", "1"),
            ("AUTHOR", "kiln"),
            ("PREFIX", "ghp_"),
            ("REGION", "AKIA"),
        ] {
            assert_eq!(
                secret_warnings(&args(&[(name, value)])),
                Vec::<String>::new(),
                "{name}"
            );
        }
        assert_eq!(
            secret_warnings(&args(&[("A_TOKEN", "1"), ("B", "2"), ("C_SECRET", "3")])).len(),
            2
        );
    }
}
