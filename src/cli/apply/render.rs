//! A plan as a diff people read: `+ create …`, `~ update …` with `field: old → new` lines,
//! `- delete …`, then notes about what is left alone. Pure.

use super::plan::{
    Change, FieldChange, Note, Plan, RuleFields, SourceAction, Value, WebhookFields,
};

/// Strings longer than this are cut in the diff (a repository's Markdown `detail`).
const MAX_SHOWN_CHARS: usize = 72;

/// The diff, one change per line (plus indented field lines), then the notes. Empty plan, no
/// notes: an empty string.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    for change in &plan.changes {
        render_change(&mut out, change);
    }
    if !plan.notes.is_empty() && !plan.changes.is_empty() {
        out.push('\n');
    }
    for note in &plan.notes {
        out.push_str(&render_note(note));
        out.push('\n');
    }
    out
}

/// The first line of a change, as in the diff (used to say which change failed).
pub fn headline(change: &Change) -> String {
    let mut out = String::new();
    render_change(&mut out, change);
    out.lines().next().unwrap_or_default().to_string()
}

fn render_change(out: &mut String, change: &Change) {
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    match change {
        Change::CreateNamespace { namespace } => line(format!("+ create namespace {namespace}")),
        Change::CreateRepo {
            namespace,
            name,
            summary,
            detail,
            category,
            hidden,
        } => {
            line(format!("+ create repository {namespace}/{name}"));
            line(format!("      summary: {}", shown(summary)));
            if !detail.is_empty() {
                line(format!("      detail: {}", shown(detail)));
            }
            line(format!("      category: {}", shown(category)));
            if *hidden {
                line("      hidden: true".to_string());
            }
        }
        Change::UpdateRepo {
            namespace,
            name,
            changes,
        } => {
            line(format!("~ update repository {namespace}/{name}"));
            field_lines(&mut line, changes);
        }
        Change::PutSource {
            namespace,
            repository,
            provider,
            clone_url,
            credentials_env,
            webhook_secret_env,
            action,
        } => {
            // Credentials are never shown: only where they come from.
            let credentials = match credentials_env {
                Some(var) => format!("; credentials from ${var}"),
                None => String::new(),
            };
            let secret = match webhook_secret_env {
                Some(var) => format!("webhook secret from ${var}"),
                None => "kiln generates the webhook secret".to_string(),
            };
            match action {
                SourceAction::Create => line(format!(
                    "+ create source {namespace}/{repository}: {provider} {clone_url} ({secret}{credentials})"
                )),
                SourceAction::Update { changes } => {
                    line(format!(
                        "~ update source {namespace}/{repository} ({}{credentials})",
                        match webhook_secret_env {
                            Some(var) => format!("webhook secret from ${var}"),
                            None => "the webhook secret is kept".to_string(),
                        }
                    ));
                    field_lines(&mut line, changes);
                }
                SourceAction::RotateSecret => line(format!(
                    "~ update source {namespace}/{repository}: rotate the webhook secret ({}{credentials})",
                    match webhook_secret_env {
                        Some(var) => format!("set from ${var}"),
                        None => "kiln generates a new one".to_string(),
                    }
                )),
            }
        }
        Change::CreateRule {
            namespace,
            repository,
            rule,
        } => {
            line(format!(
                "+ create rule {namespace}/{repository}: {}",
                rule.key()
            ));
            line(format!("      {}", rule_settings(rule)));
        }
        Change::UpdateRule {
            namespace,
            repository,
            id,
            rule,
            changes,
        } => {
            line(format!(
                "~ update rule {namespace}/{repository}: {} (id {id})",
                rule.key()
            ));
            field_lines(&mut line, changes);
        }
        Change::DeleteRule {
            namespace,
            repository,
            id,
            rule,
        } => line(format!(
            "- delete rule {namespace}/{repository}: {} (id {id})",
            rule.key()
        )),
        Change::CreateWebhook {
            namespace,
            repository,
            webhook,
            secret_env,
        } => {
            line(format!(
                "+ create webhook {namespace}/{repository}: {}",
                shown(&webhook.name)
            ));
            line(format!("      url: {}", shown(&webhook.url)));
            line(format!("      {}", webhook_settings(webhook)));
            line(format!(
                "      secret: {}",
                match secret_env {
                    Some(var) => format!("from ${var}"),
                    None => "kiln generates it (printed once)".to_string(),
                }
            ));
        }
        Change::UpdateWebhook {
            namespace,
            repository,
            id,
            name,
            changes,
            rotate_secret_from,
        } => {
            line(format!(
                "~ update webhook {namespace}/{repository}: {} (id {id})",
                shown(name)
            ));
            field_lines(&mut line, changes);
            if let Some(var) = rotate_secret_from {
                line(format!("      secret: rotated, set from ${var}"));
            }
        }
        Change::DeleteWebhook {
            namespace,
            repository,
            id,
            webhook,
        } => line(format!(
            "- delete webhook {namespace}/{repository}: {} (id {id}; {})",
            shown(&webhook.name),
            shown(&webhook.url)
        )),
        Change::DeleteSource {
            namespace,
            repository,
            clone_url,
        } => line(format!(
            "- delete source {namespace}/{repository} ({clone_url}; its rules stay, disabled)"
        )),
        Change::DeleteRepo { namespace, name } => line(format!(
            "- delete repository {namespace}/{name} (with its rules, builds, history and its tags in the registry)"
        )),
    }
}

fn field_lines(line: &mut impl FnMut(String), changes: &[FieldChange]) {
    for c in changes {
        line(format!(
            "      {}: {} → {}",
            c.field,
            shown_value(&c.old),
            shown_value(&c.new)
        ));
    }
}

fn rule_settings(rule: &RuleFields) -> String {
    let mut s = format!(
        "version: {}, overwrite: {}, enabled: {}",
        shown(&rule.version),
        rule.overwrite,
        rule.enabled
    );
    // Build settings (issue 9): only those that are not the default.
    if !rule.build_args.is_empty() {
        s.push_str(&format!(", build_args: {}", shown_map(&rule.build_args)));
    }
    if !rule.target.is_empty() {
        s.push_str(&format!(", target: {}", shown(&rule.target)));
    }
    if rule.no_cache {
        s.push_str(", no_cache: true");
    }
    if !rule.extra_tags.is_empty() {
        s.push_str(&format!(", extra_tags: {}", shown_list(&rule.extra_tags)));
    }
    if let Some(m) = rule.timeout_minutes {
        s.push_str(&format!(", timeout_minutes: {m}"));
    }
    if !rule.network.is_default() {
        s.push_str(&format!(", network: {}", shown(rule.network.as_str())));
    }
    // -- schedules and path filters (issue 9): shown when set --
    if let Some(schedule) = &rule.schedule {
        s.push_str(&format!(", schedule: {}", shown(schedule)));
    }
    if !rule.paths.is_empty() {
        s.push_str(&format!(", paths: {}", shown_list(&rule.paths)));
    }
    if !rule.ignore_paths.is_empty() {
        s.push_str(&format!(
            ", ignore_paths: {}",
            shown_list(&rule.ignore_paths)
        ));
    }
    s
}

/// Build arguments as `{NAME: "value", …}`.
fn shown_map(m: &std::collections::BTreeMap<String, String>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}: {}", shown(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// A webhook's settings but its name and URL; `tag_filter` only when there is one.
fn webhook_settings(w: &WebhookFields) -> String {
    let mut s = format!("events: {}", shown_list(&w.events));
    if let Some(filter) = &w.tag_filter {
        s.push_str(&format!(", tag_filter: {}", shown(filter)));
    }
    s.push_str(&format!(
        ", payload_format: {}, active: {}",
        shown(&w.payload_format),
        w.active
    ));
    s
}

fn shown_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| shown(i)).collect();
    format!("[{}]", items.join(", "))
}

fn shown_value(v: &Value) -> String {
    match v {
        Value::Str(s) => shown(s),
        Value::Bool(b) => b.to_string(),
        Value::List(l) => shown_list(l),
        Value::Map(m) => shown_map(m),
        Value::Minutes(Some(m)) => m.to_string(),
        Value::Minutes(None) => "default".to_string(),
    }
}

/// A string in double quotes, cut when long. Quotes and control characters are escaped;
/// backslashes are not, so Docker Hub's `{\1}` reads as written in the file.
fn shown(s: &str) -> String {
    let n = s.chars().count();
    let quote = |text: &str| {
        let mut q = String::from("\"");
        for c in text.chars() {
            match c {
                '"' => q.push_str("\\\""),
                c if c.is_control() => q.extend(c.escape_debug()),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    };
    if n <= MAX_SHOWN_CHARS {
        return quote(s);
    }
    let head: String = s.chars().take(MAX_SHOWN_CHARS).collect();
    format!("{} ({n} characters)", quote(&format!("{head}…")))
}

fn render_note(note: &Note) -> String {
    match note {
        Note::Kept { what } => format!("  kept (not in the files; --prune deletes it): {what}"),
        Note::NamespaceLeftAlone {
            namespace,
            repositories,
        } => format!(
            "  left alone: namespace {namespace} is not in the files (kiln cannot delete \
             namespaces; its {repositories} {} kept)",
            if *repositories == 1 {
                "repository is"
            } else {
                "repositories are"
            }
        ),
        Note::SecretNotRotated { webhook } => format!(
            "  warning: secret not rotated: webhook {webhook} has no secret_env, and kiln \
             generates a webhook secret only when it creates the webhook (name a variable with \
             secret_env, or delete the webhook and apply again)"
        ),
    }
}

/// The line after a dry run.
pub fn dry_run_summary(plan: &Plan) -> String {
    if plan.is_empty() {
        return "no changes".into();
    }
    let (c, u, d) = plan.counts();
    format!("plan: {c} to create, {u} to update, {d} to delete (dry run: nothing was changed)")
}

/// The line after applying (`done` of the plan's changes ran).
pub fn applied_summary(plan: &Plan, done: usize) -> String {
    if plan.is_empty() {
        return "no changes".into();
    }
    let ran = Plan {
        changes: plan.changes[..done.min(plan.changes.len())].to_vec(),
        notes: Vec::new(),
    };
    let (c, u, d) = ran.counts();
    let mut s = format!("applied: {c} created, {u} updated, {d} deleted");
    if done < plan.changes.len() {
        s.push_str(&format!(
            " ({} of {} changes not applied)",
            plan.changes.len() - done,
            plan.changes.len()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::plan::{Options, ServerState, plan};
    use super::super::schema::{RulesFile, load};
    use super::*;

    fn rule() -> RuleFields {
        RuleFields {
            kind: "tag".into(),
            name: "/^v(\\d+)\\.(\\d+)$/".into(),
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
            version: "{1}.{2}".into(),
            overwrite: false,
            enabled: true,
            ..Default::default()
        }
    }

    fn hook() -> WebhookFields {
        WebhookFields {
            name: "Slack alerts".into(),
            url: "https://hooks.example.com/x".into(),
            events: vec!["build.failed".into(), "image.pushed".into()],
            tag_filter: Some("v*".into()),
            payload_format: "cloudevents".into(),
            active: true,
        }
    }

    #[test]
    fn each_change_renders_as_a_diff_line() {
        let cases: Vec<(Change, &str)> = vec![
            (
                Change::CreateNamespace {
                    namespace: "acme".into(),
                },
                "+ create namespace acme\n",
            ),
            (
                Change::CreateRepo {
                    namespace: "acme".into(),
                    name: "api".into(),
                    summary: "The API".into(),
                    detail: String::new(),
                    category: "server".into(),
                    hidden: true,
                },
                "+ create repository acme/api\n      summary: \"The API\"\n      category: \"server\"\n      hidden: true\n",
            ),
            (
                Change::UpdateRepo {
                    namespace: "acme".into(),
                    name: "api".into(),
                    changes: vec![
                        FieldChange {
                            field: "summary",
                            old: Value::Str("old".into()),
                            new: Value::Str("new".into()),
                        },
                        FieldChange {
                            field: "hidden",
                            old: Value::Bool(true),
                            new: Value::Bool(false),
                        },
                    ],
                },
                "~ update repository acme/api\n      summary: \"old\" → \"new\"\n      hidden: true → false\n",
            ),
            (
                Change::PutSource {
                    namespace: "acme".into(),
                    repository: "api".into(),
                    provider: "github".into(),
                    clone_url: "https://github.com/acme/api.git".into(),
                    credentials_env: None,
                    webhook_secret_env: Some("API_SECRET".into()),
                    action: SourceAction::Create,
                },
                "+ create source acme/api: github https://github.com/acme/api.git (webhook secret from $API_SECRET)\n",
            ),
            (
                Change::PutSource {
                    namespace: "acme".into(),
                    repository: "api".into(),
                    provider: "github".into(),
                    clone_url: "https://x/new".into(),
                    credentials_env: None,
                    webhook_secret_env: None,
                    action: SourceAction::Update {
                        changes: vec![FieldChange {
                            field: "clone_url",
                            old: Value::Str("https://x/old".into()),
                            new: Value::Str("https://x/new".into()),
                        }],
                    },
                },
                "~ update source acme/api (the webhook secret is kept)\n      clone_url: \"https://x/old\" → \"https://x/new\"\n",
            ),
            (
                Change::PutSource {
                    namespace: "acme".into(),
                    repository: "api".into(),
                    provider: "github".into(),
                    clone_url: "https://x/new".into(),
                    credentials_env: Some("API_GIT_TOKEN".into()),
                    webhook_secret_env: Some("S".into()),
                    action: SourceAction::RotateSecret,
                },
                "~ update source acme/api: rotate the webhook secret (set from $S; credentials from $API_GIT_TOKEN)\n",
            ),
            (
                Change::CreateRule {
                    namespace: "acme".into(),
                    repository: "api".into(),
                    rule: rule(),
                },
                "+ create rule acme/api: tag /^v(\\d+)\\.(\\d+)$/ (Dockerfile in .)\n      version: \"{1}.{2}\", overwrite: false, enabled: true\n",
            ),
            (
                Change::UpdateRule {
                    namespace: "acme".into(),
                    repository: "api".into(),
                    id: "r1".into(),
                    rule: rule(),
                    changes: vec![FieldChange {
                        field: "version",
                        old: Value::Str(String::new()),
                        new: Value::Str("{1}.{2}".into()),
                    }],
                },
                "~ update rule acme/api: tag /^v(\\d+)\\.(\\d+)$/ (Dockerfile in .) (id r1)\n      version: \"\" → \"{1}.{2}\"\n",
            ),
            (
                Change::DeleteRule {
                    namespace: "acme".into(),
                    repository: "api".into(),
                    id: "r1".into(),
                    rule: rule(),
                },
                "- delete rule acme/api: tag /^v(\\d+)\\.(\\d+)$/ (Dockerfile in .) (id r1)\n",
            ),
            (
                Change::CreateWebhook {
                    namespace: "acme".into(),
                    repository: "api".into(),
                    webhook: hook(),
                    secret_env: None,
                },
                "+ create webhook acme/api: \"Slack alerts\"\n      url: \"https://hooks.example.com/x\"\n      events: [\"build.failed\", \"image.pushed\"], tag_filter: \"v*\", payload_format: \"cloudevents\", active: true\n      secret: kiln generates it (printed once)\n",
            ),
            (
                Change::CreateWebhook {
                    namespace: "acme".into(),
                    repository: "api".into(),
                    webhook: WebhookFields {
                        tag_filter: None,
                        ..hook()
                    },
                    secret_env: Some("SLACK_SECRET".into()),
                },
                "+ create webhook acme/api: \"Slack alerts\"\n      url: \"https://hooks.example.com/x\"\n      events: [\"build.failed\", \"image.pushed\"], payload_format: \"cloudevents\", active: true\n      secret: from $SLACK_SECRET\n",
            ),
            (
                Change::UpdateWebhook {
                    namespace: "acme".into(),
                    repository: "api".into(),
                    id: "w1".into(),
                    name: "Slack alerts".into(),
                    changes: vec![
                        FieldChange {
                            field: "events",
                            old: Value::List(vec!["image.pushed".into()]),
                            new: Value::List(vec!["build.failed".into(), "image.pushed".into()]),
                        },
                        FieldChange {
                            field: "tag_filter",
                            old: Value::Str("v*".into()),
                            new: Value::Str(String::new()),
                        },
                    ],
                    rotate_secret_from: Some("SLACK_SECRET".into()),
                },
                "~ update webhook acme/api: \"Slack alerts\" (id w1)\n      events: [\"image.pushed\"] → [\"build.failed\", \"image.pushed\"]\n      tag_filter: \"v*\" → \"\"\n      secret: rotated, set from $SLACK_SECRET\n",
            ),
            (
                Change::DeleteWebhook {
                    namespace: "acme".into(),
                    repository: "api".into(),
                    id: "w1".into(),
                    webhook: hook(),
                },
                "- delete webhook acme/api: \"Slack alerts\" (id w1; \"https://hooks.example.com/x\")\n",
            ),
            (
                Change::DeleteSource {
                    namespace: "acme".into(),
                    repository: "api".into(),
                    clone_url: "https://x/y".into(),
                },
                "- delete source acme/api (https://x/y; its rules stay, disabled)\n",
            ),
            (
                Change::DeleteRepo {
                    namespace: "acme".into(),
                    name: "old".into(),
                },
                "- delete repository acme/old (with its rules, builds, history and its tags in the registry)\n",
            ),
        ];
        for (change, want) in cases {
            let plan = Plan {
                changes: vec![change.clone()],
                notes: vec![],
            };
            assert_eq!(render_plan(&plan), want, "{change:?}");
            assert_eq!(headline(&change), want.lines().next().unwrap());
        }
    }

    #[test]
    fn long_strings_are_cut() {
        let long = "x".repeat(500);
        assert_eq!(
            shown(&long),
            format!("\"{}…\" (500 characters)", "x".repeat(72))
        );
        assert_eq!(shown("a\"b\nc"), "\"a\\\"b\\nc\"");
        assert_eq!(shown("release-{\\1}"), "\"release-{\\1}\"");
    }

    #[test]
    fn notes_and_summaries() {
        let only_notes = Plan {
            changes: vec![],
            notes: vec![
                Note::Kept {
                    what: "repository acme/old".into(),
                },
                Note::NamespaceLeftAlone {
                    namespace: "other".into(),
                    repositories: 1,
                },
                Note::SecretNotRotated {
                    webhook: "acme/api: \"ci\" (id w1)".into(),
                },
            ],
        };
        assert_eq!(
            render_plan(&only_notes),
            "  kept (not in the files; --prune deletes it): repository acme/old\n  left alone: namespace other is not in the files (kiln cannot delete namespaces; its 1 repository is kept)\n  warning: secret not rotated: webhook acme/api: \"ci\" (id w1) has no secret_env, and kiln generates a webhook secret only when it creates the webhook (name a variable with secret_env, or delete the webhook and apply again)\n"
        );
        assert_eq!(dry_run_summary(&only_notes), "no changes");
        assert_eq!(applied_summary(&only_notes, 0), "no changes");

        let d = load(&[RulesFile {
            path: "t.toml".into(),
            text: "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n"
                .into(),
        }])
        .unwrap();
        let p = plan(&d, &ServerState::default(), Options::default());
        assert_eq!(
            dry_run_summary(&p),
            "plan: 2 to create, 0 to update, 0 to delete (dry run: nothing was changed)"
        );
        assert_eq!(
            applied_summary(&p, 2),
            "applied: 2 created, 0 updated, 0 deleted"
        );
        assert_eq!(
            applied_summary(&p, 1),
            "applied: 1 created, 0 updated, 0 deleted (1 of 2 changes not applied)"
        );
    }
}
