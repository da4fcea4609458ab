//! Property tests over hostile input (issue 11): random and adversarial strings for the name rule,
//! rule-name patterns (wildcards and regexes), version templates, tag sanitizing, the forge
//! parsers and the registry-event parser. Nothing panics, and every output obeys its rule, checked
//! against the rule as documented (a separate regex here, not the code under test).
//!
//! Case counts are kept small enough for the whole file to run in a few seconds.

use std::sync::LazyLock;

use kiln::domain::names::{validate_namespace_name, validate_repo_name};
use kiln::domain::pattern::RefPattern;
use kiln::domain::tag::{image_tag, is_valid_tag, sanitize_tag};
use kiln::domain::template::{TemplateVars, VersionTemplate};
use kiln::forge::{self, Outcome, gitea, github, gitlab};
use kiln::registry::events::manifest_pushes;
use proptest::prelude::*;
use regex::Regex;
use serde_json::{Value, json};

/// The name rule as `api.md` writes it: 2–64 characters of `a-z 0-9 - _ .`, no separator first or
/// last, no two in a row.
static NAME_GRAMMAR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:[-_.][a-z0-9]+)*$").unwrap());
/// The Distribution tag grammar, ASCII: `[\w][\w.-]{0,127}`.
static TAG_GRAMMAR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").unwrap());
/// The OCI digest grammar: `algorithm:encoded`.
static DIGEST_GRAMMAR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$").unwrap());
static SHA: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[0-9a-fA-F]{40}$").unwrap());

fn name_obeys_grammar(s: &str) -> bool {
    (2..=64).contains(&s.chars().count()) && NAME_GRAMMAR.is_match(s)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings people and attackers write: any Unicode, or mostly the characters a rule cares about
/// with a few odd ones mixed in.
fn hostile_string(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("(?s).{{0,{max}}}")).unwrap(),
        proptest::string::string_regex(&format!("[a-z0-9._/A-Z-]{{0,{max}}}")).unwrap(),
        proptest::string::string_regex(&format!(
            "[a-z0-9._\\-\u{0}\u{7f}\u{202e}\u{feff}é🦀 /*?{{}}\\\\]{{0,{max}}}"
        ))
        .unwrap(),
    ]
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        hostile_string(50).prop_map(Value::String),
        "[0-9a-f]{40}".prop_map(Value::String),
        Just(Value::String("0".repeat(40))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a field that should be a commit id: one, or something else entirely.
fn sha_like() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[0-9a-f]{40}".prop_map(Value::String),
        1 => Just(Value::String("0".repeat(40))),
        1 => "[0-9a-fA-Fg-z]{0,41}".prop_map(Value::String),
        1 => any_json(),
    ]
}

fn ref_like() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => (1000usize..1100).prop_map(|n| json!(format!("refs/heads/{}", "a".repeat(n)))),
        3 => hostile_string(40).prop_map(|s| json!(format!("refs/heads/{s}"))),
        2 => hostile_string(40).prop_map(|s| json!(format!("refs/tags/{s}"))),
        1 => hostile_string(40).prop_map(Value::String),
        1 => any_json(),
    ]
}

/// A push payload in GitHub's (and Gitea's) shape, each field valid or not.
fn github_push() -> impl Strategy<Value = Value> {
    (
        ref_like(),
        sha_like(),
        sha_like(),
        prop_oneof![any::<bool>().prop_map(Value::Bool), any_json()],
        prop_oneof![
            (
                sha_like(),
                prop_oneof![hostile_string(80).prop_map(Value::String), any_json()]
            )
                .prop_map(|(id, message)| json!({"id": id, "message": message})),
            Just(Value::Null),
            any_json(),
        ],
        any_json(),
    )
        .prop_map(|(r, before, after, deleted, head, repository)| {
            json!({"ref": r, "before": before, "after": after, "deleted": deleted,
                   "head_commit": head, "repository": repository})
        })
}

/// A push payload in GitLab's shape, each field valid or not.
fn gitlab_push() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(json!("push")), Just(json!("tag_push")), any_json()],
        ref_like(),
        sha_like(),
        sha_like(),
        prop_oneof![sha_like(), Just(Value::Null)],
        prop::collection::vec(
            (sha_like(), hostile_string(40))
                .prop_map(|(id, message)| json!({"id": id, "message": message})),
            0..3,
        ),
        any_json(),
    )
        .prop_map(|(kind, r, before, after, checkout, commits, project)| {
            json!({"object_kind": kind, "ref": r, "before": before, "after": after,
                   "checkout_sha": checkout, "commits": commits, "project": project})
        })
}

/// A captured payload with one top-level field replaced by anything (or removed).
fn mutated(captured: &'static [u8]) -> impl Strategy<Value = Value> {
    let base: Value = serde_json::from_slice(captured).unwrap();
    let keys: Vec<String> = base.as_object().unwrap().keys().cloned().collect();
    (0..keys.len(), prop::option::of(any_json())).prop_map(move |(i, replacement)| {
        let mut v = base.clone();
        let object = v.as_object_mut().unwrap();
        match replacement {
            Some(r) => object.insert(keys[i].clone(), r),
            None => object.remove(&keys[i]),
        };
        v
    })
}

/// A parsed push obeys its rules: a full ref, commit ids, a deleted push builds its `after`.
fn check_outcome(outcome: Result<Outcome, forge::MalformedPayload>) -> Result<(), TestCaseError> {
    if let Ok(Outcome::Push(p)) = outcome {
        prop_assert!(p.git_ref.starts_with("refs/"), "{p:?}");
        prop_assert!(p.git_ref.len() <= forge::MAX_REF_LEN, "{p:?}");
        prop_assert!(!p.git_ref.chars().any(char::is_control), "{p:?}");
        prop_assert!(SHA.is_match(&p.before), "{p:?}");
        prop_assert!(SHA.is_match(&p.after), "{p:?}");
        prop_assert!(SHA.is_match(&p.commit), "{p:?}");
        if p.deleted {
            prop_assert_eq!(&p.commit, &p.after);
        }
        if p.after.bytes().all(|b| b == b'0') {
            prop_assert!(p.deleted, "{p:?}");
        }
    }
    Ok(())
}

/// A glob with `*` (any run, `/` included) and `?` (one character), as the rule-name docs say:
/// the reference the wildcard matcher is checked against.
fn glob(pattern: &[char], name: &[char]) -> bool {
    let mut m = vec![vec![false; name.len() + 1]; pattern.len() + 1];
    m[0][0] = true;
    for i in 1..=pattern.len() {
        m[i][0] = m[i - 1][0] && pattern[i - 1] == '*';
        for j in 1..=name.len() {
            m[i][j] = match pattern[i - 1] {
                '*' => m[i - 1][j] || m[i][j - 1],
                '?' => m[i - 1][j - 1],
                c => m[i - 1][j - 1] && c == name[j - 1],
            };
        }
    }
    m[pattern.len()][name.len()]
}

proptest! {
    #![proptest_config(config(2000))]

    /// A name is accepted exactly when it matches the documented grammar; a refusal names the
    /// field.
    #[test]
    fn the_name_rule_is_its_grammar(s in hostile_string(70)) {
        let repo = validate_repo_name(&s);
        prop_assert_eq!(repo.is_ok(), name_obeys_grammar(&s), "{:?}: {:?}", s, repo);
        prop_assert_eq!(validate_namespace_name(&s).is_ok(), repo.is_ok());
        if let Err(e) = repo {
            prop_assert_eq!(e.field, "name");
            prop_assert!(!e.message.is_empty());
        }
    }

    /// Names made from the grammar's own alphabet, where the near misses are.
    #[test]
    fn the_name_rule_near_its_edges(s in "[a-z0-9._-]{0,66}") {
        prop_assert_eq!(validate_repo_name(&s).is_ok(), name_obeys_grammar(&s), "{:?}", s);
    }

    /// Whatever goes in, a sanitized tag is a valid tag (or nothing), and sanitizing it again
    /// changes nothing.
    #[test]
    fn sanitized_tags_obey_the_tag_grammar(s in hostile_string(300)) {
        if let Some(tag) = sanitize_tag(&s) {
            prop_assert!(TAG_GRAMMAR.is_match(&tag), "{:?} -> {:?}", s, tag);
            prop_assert!(is_valid_tag(&tag));
            prop_assert_eq!(sanitize_tag(&tag), Some(tag.clone()));
        }
        prop_assert_eq!(is_valid_tag(&s), TAG_GRAMMAR.is_match(&s), "{:?}", s);
    }

    /// The image tag of a build is always a valid tag, whatever version and commit it is given.
    #[test]
    fn image_tags_obey_the_tag_grammar(
        version in hostile_string(200),
        sha in prop_oneof!["[0-9a-f]{40}", hostile_string(60)],
        overwrite in any::<bool>(),
    ) {
        let tag = image_tag(&version, &sha, overwrite);
        prop_assert!(TAG_GRAMMAR.is_match(&tag), "{:?} {:?} -> {:?}", version, sha, tag);
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Any rule name parses or is refused (field `name`); whatever it becomes, matching any ref
    /// name does not panic, and a match has the whole name first and one entry per group.
    #[test]
    fn rule_names_parse_and_match_without_panicking(
        src in prop_oneof![
            hostile_string(80),
            hostile_string(60).prop_map(|s| format!("/{s}/")),
            "[a-z*?/.-]{1,30}",
        ],
        names in prop::collection::vec(hostile_string(120), 1..4),
    ) {
        match RefPattern::parse(&src) {
            Err(e) => prop_assert_eq!(e.field, "name"),
            Ok(pattern) => {
                for name in &names {
                    if let Some(captures) = pattern.matches(name) {
                        prop_assert_eq!(&captures[0], name);
                        prop_assert_eq!(captures.len(), pattern.capture_count() + 1);
                    }
                }
            }
        }
    }

    /// A wildcard matches exactly what the documented glob matches.
    #[test]
    fn wildcards_match_as_documented(
        src in "[ab/*?.]{1,12}",
        name in "[ab/.]{0,16}",
    ) {
        prop_assume!(src.contains(['*', '?']));
        prop_assume!(!(src.len() >= 2 && src.starts_with('/') && src.ends_with('/')));
        let pattern = RefPattern::parse(&src).unwrap();
        let want = glob(&src.chars().collect::<Vec<_>>(), &name.chars().collect::<Vec<_>>());
        prop_assert_eq!(pattern.matches(&name).is_some(), want, "{:?} ~ {:?}", src, name);
    }

    /// A rendered template is a valid tag or nothing, whatever the ref name, commit and captures
    /// are; a template that does not parse is refused on field `version`.
    #[test]
    fn rendered_templates_obey_the_tag_grammar(
        template in prop_oneof![
            hostile_string(60),
            prop::collection::vec(
                prop_oneof![
                    Just("{sourceref}".to_string()),
                    Just("{branch}".to_string()),
                    Just("{tag}".to_string()),
                    Just("{sha}".to_string()),
                    Just("{sha7}".to_string()),
                    Just("{date}".to_string()),
                    Just("{1}".to_string()),
                    Just("{\\2}".to_string()),
                    "[A-Za-z0-9_.-]{0,8}",
                    hostile_string(6),
                ],
                0..8,
            )
            .prop_map(|parts| parts.concat()),
        ],
        ref_name in hostile_string(200),
        sha in prop_oneof!["[0-9a-f]{40}", hostile_string(50)],
        captures in prop::collection::vec(hostile_string(40), 0..4),
        day in 0u32..3_000_000,
    ) {
        let pattern = RefPattern::parse("/^(.*)-(.*)$/").unwrap();
        match VersionTemplate::parse(&template, &pattern) {
            Err(e) => prop_assert_eq!(e.field, "version"),
            Ok(t) => {
                let mut all = vec![ref_name.clone()];
                all.extend(captures);
                let date = chrono::NaiveDate::from_num_days_from_ce_opt(day as i32 + 1)
                    .unwrap_or_default();
                let vars = TemplateVars { ref_name: &ref_name, sha: &sha, date, captures: &all };
                if let Some(tag) = t.render(&vars) {
                    prop_assert!(TAG_GRAMMAR.is_match(&tag), "{:?} -> {:?}", template, tag);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config(600))]

    /// Random bytes: every forge parser answers, with an error or an outcome that obeys its rules.
    #[test]
    fn forge_parsers_take_random_bytes(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..400),
            hostile_string(200).prop_map(String::into_bytes),
        ],
        event in prop_oneof![
            Just("push".to_string()),
            Just("ping".to_string()),
            Just("Push Hook".to_string()),
            Just("Tag Push Hook".to_string()),
            hostile_string(20),
        ],
        header in hostile_string(80),
    ) {
        check_outcome(github::parse(&event, &body))?;
        check_outcome(gitlab::parse(&event, &body))?;
        let _ = github::repository_urls(&body);
        let _ = gitlab::repository_urls(&body);
        // A random header never verifies (and checking one never panics).
        prop_assert!(!github::verify_signature(b"secret", &body, &header));
        prop_assert!(!gitea::verify_signature(b"secret", &body, &header));
        prop_assert!(!gitlab::verify_token(b"secret", &body, &header));
    }

    /// Push payloads of the right shape with every field valid or not (GitHub's, which Gitea
    /// shares, and GitLab's), and the captured payloads with a field replaced.
    #[test]
    fn forge_parsers_take_payloads_of_any_shape(
        gh in github_push(),
        gl in gitlab_push(),
        gh_mutated in mutated(include_bytes!("data/github/push_tag_annotated.json")),
        gitea_mutated in mutated(include_bytes!("data/gitea/push.json")),
        gl_mutated in mutated(include_bytes!("data/gitlab/tag_push_annotated.json")),
    ) {
        for body in [&gh, &gh_mutated, &gitea_mutated] {
            let bytes = serde_json::to_vec(body).unwrap();
            check_outcome(github::parse("push", &bytes))?;
            let _ = github::repository_urls(&bytes);
        }
        for (body, event) in [(&gl, "Push Hook"), (&gl_mutated, "Tag Push Hook")] {
            let bytes = serde_json::to_vec(body).unwrap();
            check_outcome(gitlab::parse(event, &bytes))?;
            let _ = gitlab::repository_urls(&bytes);
        }
    }

    /// The registry-event parser: random bytes and envelopes of the right shape with any values.
    /// What it returns names a namespace and a repository kiln can hold, a valid tag and a digest.
    #[test]
    fn registry_events_obey_their_rules(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        events in prop::collection::vec(
            (
                prop_oneof![Just(json!("push")), Just(json!("pull")), any_json()],
                prop_oneof![
                    Just(json!("application/vnd.docker.distribution.manifest.v2+json")),
                    Just(json!("application/vnd.oci.image.index.v1+json")),
                    any_json(),
                ],
                prop_oneof![
                    "[a-z0-9._/-]{0,30}".prop_map(Value::String),
                    hostile_string(30).prop_map(Value::String),
                    any_json(),
                ],
                prop_oneof![
                    "[A-Za-z0-9_.-]{0,20}".prop_map(Value::String),
                    hostile_string(140).prop_map(Value::String),
                    any_json(),
                ],
                prop_oneof![
                    "sha256:[0-9a-f]{64}".prop_map(Value::String),
                    hostile_string(70).prop_map(Value::String),
                    any_json(),
                ],
                prop_oneof![hostile_string(40).prop_map(Value::String), any_json()],
            ),
            0..5,
        ),
        mutated_envelope in mutated(include_bytes!("data/registry/manifest-push.json")),
    ) {
        let _ = manifest_pushes(&bytes);
        let events: Vec<Value> = events
            .into_iter()
            .map(|(action, media_type, repository, tag, digest, id)| json!({
                "id": id, "action": action,
                "target": {"mediaType": media_type, "repository": repository, "tag": tag,
                           "digest": digest},
            }))
            .collect();
        for body in [json!({"events": events}), mutated_envelope] {
            let Ok(pushes) = manifest_pushes(&serde_json::to_vec(&body).unwrap()) else {
                continue;
            };
            for p in pushes {
                prop_assert!(name_obeys_grammar(&p.namespace), "{:?}", p);
                prop_assert!(name_obeys_grammar(&p.repository), "{:?}", p);
                prop_assert!(TAG_GRAMMAR.is_match(&p.tag), "{:?}", p);
                prop_assert!(DIGEST_GRAMMAR.is_match(&p.digest), "{:?}", p);
                prop_assert!(
                    !p.event_id.is_empty()
                        && p.event_id.len() <= 256
                        && !p.event_id.chars().any(char::is_control),
                    "{:?}", p
                );
            }
        }
    }
}

/// Patterns that take exponential time in a backtracking engine, over long inputs: the regex
/// engine is linear, so they simply answer (a hang here would stop the test run). Patterns whose
/// compiled form is huge are refused when the rule is made.
#[test]
fn pathological_regexes_are_linear_or_refused() {
    let long_a = "a".repeat(20_000);
    for src in [
        "/^(a+)+$/",
        "/^(a|aa)+$/",
        "/^(a|a?)+$/",
        "/(.*a){20}/",
        "/^(\\w+\\s?)*$/",
    ] {
        let pattern = RefPattern::parse(src).unwrap();
        for name in [format!("{long_a}!"), long_a.clone()] {
            let _ = pattern.matches(&name);
        }
    }
    for src in [
        "/\\w{1000}\\w{1000}\\w{1000}/",
        "/(((a{100}){100}){100})/",
        "/(?:\\pL{100}){100}/",
    ] {
        let e = RefPattern::parse(src).expect_err(src);
        assert_eq!((e.field, e.code), ("name", "invalid_regex"), "{src}");
    }
}
