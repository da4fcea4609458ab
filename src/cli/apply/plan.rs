//! What `kiln apply` has to do: the desired state (from the files) against the server's state,
//! as an ordered list of [`Change`]s. Pure: the caller fetches the state and runs the changes.
//!
//! Order: creates and updates first, each repository's in dependency order (namespace, then
//! repository, then source, then rules, then webhooks); then the deletes, in reverse (rules,
//! webhooks, sources, repositories). Without `prune`, nothing is deleted: what the server has and the files don't
//! is reported as a [`Note`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::schema::{Desired, DesiredRepo, DesiredRule, DesiredWebhook, RuleKey};
use crate::domain::clone_url::origin_of;

/// The server's state, as far as the files can describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerState {
    pub namespaces: Vec<ServerNamespace>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerNamespace {
    pub name: String,
    /// Every repository, hidden ones included. For a namespace the files do not declare only the
    /// names matter (sources and rules are not fetched).
    pub repos: Vec<ServerRepo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRepo {
    pub name: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub source: Option<ServerSource>,
    #[serde(default)]
    pub rules: Vec<ServerRule>,
    /// Fetched only for the repositories the files declare.
    #[serde(default)]
    pub webhooks: Vec<ServerWebhook>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerWebhook {
    pub id: String,
    #[serde(flatten)]
    pub fields: WebhookFields,
}

/// A webhook's fields as the API takes and shows them (the secret is write-only: never here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookFields {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub tag_filter: Option<String>,
    pub payload_format: String,
    pub active: bool,
}

impl From<&DesiredWebhook> for WebhookFields {
    fn from(w: &DesiredWebhook) -> Self {
        WebhookFields {
            name: w.name.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            tag_filter: w.tag_filter.clone(),
            payload_format: w.payload_format.clone(),
            active: w.active,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSource {
    pub provider: String,
    /// Never with credentials (the API keeps them apart and never shows them).
    pub clone_url: String,
    #[serde(default)]
    pub has_credentials: bool,
}

impl ServerSource {
    /// The source as kiln keeps it after a PUT of `clone_url` (without credentials) and maybe
    /// `credentials`: credentials not given are kept while the URL stays on the same origin.
    pub fn after_put(
        old: Option<&ServerSource>,
        provider: &str,
        clone_url: &str,
        credentials: bool,
    ) -> ServerSource {
        let kept = old.is_some_and(|old| {
            old.has_credentials
                && origin_of(&old.clone_url).is_some()
                && origin_of(&old.clone_url) == origin_of(clone_url)
        });
        ServerSource {
            provider: provider.to_string(),
            clone_url: clone_url.to_string(),
            has_credentials: credentials || kept,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRule {
    pub id: String,
    #[serde(flatten)]
    pub fields: RuleFields,
}

/// A rule's fields as the API takes and shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFields {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub dockerfile: String,
    pub context: String,
    pub version: String,
    pub overwrite: bool,
    pub enabled: bool,
    // Build settings (issue 9); a server without them shows the defaults.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub no_cache: bool,
    #[serde(default)]
    pub extra_tags: Vec<String>,
    /// `None`: the server's default.
    #[serde(default)]
    pub timeout_minutes: Option<u32>,
    // -- schedules and path filters (issue 9) --
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub ignore_paths: Vec<String>,
    // -- build limits (issue 11); left out of a body when it is the default --
    #[serde(
        default,
        skip_serializing_if = "crate::domain::build_limits::RuleNetwork::is_default"
    )]
    pub network: crate::domain::build_limits::RuleNetwork,
}

impl RuleFields {
    pub fn key(&self) -> RuleKey {
        RuleKey {
            kind: self.kind.clone(),
            name: self.name.clone(),
            dockerfile: self.dockerfile.clone(),
            context: self.context.clone(),
        }
    }
}

impl From<&DesiredRule> for RuleFields {
    fn from(r: &DesiredRule) -> Self {
        RuleFields {
            kind: r.kind.as_str().to_string(),
            name: r.name.clone(),
            dockerfile: r.dockerfile.clone(),
            context: r.context.clone(),
            version: r.version.clone(),
            overwrite: r.overwrite,
            enabled: r.enabled,
            build_args: r.settings.build_args.clone(),
            target: r.settings.target.clone(),
            no_cache: r.settings.no_cache,
            extra_tags: r.settings.extra_tags.clone(),
            timeout_minutes: r.settings.timeout_minutes,
            schedule: r.schedule.clone(),
            paths: r.paths.clone(),
            ignore_paths: r.ignore_paths.clone(),
            network: r.settings.network,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Delete what the server has and the files don't (repositories, sources, rules).
    pub prune: bool,
    /// Set every declared source's webhook secret again (from its `webhook_secret_env`, or a new
    /// one kiln generates), and every declared webhook's secret that has a `secret_env`.
    pub rotate_secrets: bool,
}

/// A field's value in a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Str(String),
    Bool(bool),
    /// A set of strings (webhook events), sorted; or a list in its order (a rule's extra tags and
    /// path filters).
    List(Vec<String>),
    /// A rule's build arguments.
    Map(BTreeMap<String, String>),
    /// A rule's timeout in minutes; `None` (null): the server's default.
    Minutes(Option<u32>),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::List(l) => write!(f, "{l:?}"),
            Value::Map(m) => write!(f, "{m:?}"),
            Value::Minutes(Some(m)) => write!(f, "{m}"),
            Value::Minutes(None) => f.write_str("default"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub old: Value,
    pub new: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceAction {
    Create,
    Update { changes: Vec<FieldChange> },
    RotateSecret,
}

/// One step of a plan, in API terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    CreateNamespace {
        namespace: String,
    },
    CreateRepo {
        namespace: String,
        name: String,
        summary: String,
        detail: String,
        category: String,
        hidden: bool,
    },
    UpdateRepo {
        namespace: String,
        name: String,
        /// Among `summary`, `detail`, `category` (PATCH) and `hidden` (hide/unhide).
        changes: Vec<FieldChange>,
    },
    PutSource {
        namespace: String,
        repository: String,
        provider: String,
        /// Without credentials.
        clone_url: String,
        /// The variable holding the credentials to set (`user:token`), sent embedded in the clone
        /// URL, never shown.
        credentials_env: Option<String>,
        webhook_secret_env: Option<String>,
        action: SourceAction,
    },
    CreateRule {
        namespace: String,
        repository: String,
        rule: RuleFields,
    },
    UpdateRule {
        namespace: String,
        repository: String,
        id: String,
        /// The rule as it will be.
        rule: RuleFields,
        changes: Vec<FieldChange>,
    },
    DeleteRule {
        namespace: String,
        repository: String,
        id: String,
        rule: RuleFields,
    },
    CreateWebhook {
        namespace: String,
        repository: String,
        webhook: WebhookFields,
        /// Where the secret comes from; `None`: kiln generates it (and apply prints it once).
        secret_env: Option<String>,
    },
    UpdateWebhook {
        namespace: String,
        repository: String,
        id: String,
        name: String,
        /// Among `url`, `events`, `tag_filter` (`""`: none), `payload_format` and `active`.
        changes: Vec<FieldChange>,
        /// `--rotate-secrets` with a `secret_env`: the PATCH sends the variable's secret.
        rotate_secret_from: Option<String>,
    },
    DeleteWebhook {
        namespace: String,
        repository: String,
        id: String,
        webhook: WebhookFields,
    },
    DeleteSource {
        namespace: String,
        repository: String,
        clone_url: String,
    },
    DeleteRepo {
        namespace: String,
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Create,
    Update,
    Delete,
}

impl Change {
    pub fn effect(&self) -> Effect {
        match self {
            Change::CreateNamespace { .. }
            | Change::CreateRepo { .. }
            | Change::CreateRule { .. }
            | Change::CreateWebhook { .. }
            | Change::PutSource {
                action: SourceAction::Create,
                ..
            } => Effect::Create,
            Change::UpdateRepo { .. }
            | Change::PutSource { .. }
            | Change::UpdateRule { .. }
            | Change::UpdateWebhook { .. } => Effect::Update,
            Change::DeleteRule { .. }
            | Change::DeleteWebhook { .. }
            | Change::DeleteSource { .. }
            | Change::DeleteRepo { .. } => Effect::Delete,
        }
    }
}

/// Something the plan leaves alone, said so the reader is not surprised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// On the server, not in the files, kept because `prune` is off.
    Kept { what: String },
    /// With `prune`: a namespace not in the files. The API cannot delete namespaces, and kiln
    /// does not touch the repositories of a namespace the files do not declare.
    NamespaceLeftAlone {
        namespace: String,
        repositories: usize,
    },
    /// With `rotate_secrets`: a webhook without `secret_env` keeps its secret (the API generates
    /// a webhook secret only at creation).
    SecretNotRotated { webhook: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub notes: Vec<Note>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many changes create, update and delete.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |e| self.changes.iter().filter(|c| c.effect() == e).count();
        (n(Effect::Create), n(Effect::Update), n(Effect::Delete))
    }
}

/// The changes that make `state` match `desired`.
pub fn plan(desired: &Desired, state: &ServerState, options: Options) -> Plan {
    let mut plan = Plan::default();
    let mut deletes = Deletes::default();
    for ns in &desired.namespaces {
        let server_ns = state.namespaces.iter().find(|n| n.name == ns.name);
        if server_ns.is_none() {
            plan.changes.push(Change::CreateNamespace {
                namespace: ns.name.clone(),
            });
        }
        for repo in &ns.repos {
            let server_repo = server_ns.and_then(|n| n.repos.iter().find(|r| r.name == repo.name));
            plan_repo(
                &ns.name,
                repo,
                server_repo,
                options,
                &mut plan,
                &mut deletes,
            );
        }
        for server_repo in server_ns.map_or(&[][..], |n| &n.repos) {
            if ns.repos.iter().any(|r| r.name == server_repo.name) {
                continue;
            }
            if options.prune {
                deletes.repos.push(Change::DeleteRepo {
                    namespace: ns.name.clone(),
                    name: server_repo.name.clone(),
                });
            } else {
                plan.notes.push(Note::Kept {
                    what: format!("repository {}/{}", ns.name, server_repo.name),
                });
            }
        }
    }
    if options.prune {
        for server_ns in &state.namespaces {
            if !desired.namespaces.iter().any(|n| n.name == server_ns.name) {
                plan.notes.push(Note::NamespaceLeftAlone {
                    namespace: server_ns.name.clone(),
                    repositories: server_ns.repos.len(),
                });
            }
        }
    }
    plan.changes.extend(deletes.rules);
    plan.changes.extend(deletes.webhooks);
    plan.changes.extend(deletes.sources);
    plan.changes.extend(deletes.repos);
    plan
}

/// The deletes, kept apart until the end of the plan.
#[derive(Default)]
struct Deletes {
    rules: Vec<Change>,
    webhooks: Vec<Change>,
    sources: Vec<Change>,
    repos: Vec<Change>,
}

fn plan_repo(
    ns: &str,
    repo: &DesiredRepo,
    server: Option<&ServerRepo>,
    options: Options,
    plan: &mut Plan,
    deletes: &mut Deletes,
) {
    let full = format!("{ns}/{}", repo.name);
    match server {
        None => plan.changes.push(Change::CreateRepo {
            namespace: ns.to_string(),
            name: repo.name.clone(),
            summary: repo.summary.clone(),
            detail: repo.detail.clone(),
            category: repo.category.clone(),
            hidden: repo.hidden,
        }),
        Some(s) => {
            let mut changes = Vec::new();
            diff_str(&mut changes, "summary", &s.summary, &repo.summary);
            diff_str(&mut changes, "detail", &s.detail, &repo.detail);
            diff_str(&mut changes, "category", &s.category, &repo.category);
            diff_bool(&mut changes, "hidden", s.hidden, repo.hidden);
            if !changes.is_empty() {
                plan.changes.push(Change::UpdateRepo {
                    namespace: ns.to_string(),
                    name: repo.name.clone(),
                    changes,
                });
            }
        }
    }

    let server_source = server.and_then(|s| s.source.as_ref());
    match (&repo.source, server_source) {
        (Some(want), have) => {
            let action = match have {
                None => Some(SourceAction::Create),
                Some(have) => {
                    let mut changes = Vec::new();
                    diff_str(&mut changes, "provider", &have.provider, &want.provider);
                    diff_str(&mut changes, "clone_url", &have.clone_url, &want.clone_url);
                    let after = ServerSource::after_put(
                        Some(have),
                        &want.provider,
                        &want.clone_url,
                        want.credentials_env.is_some(),
                    );
                    diff_bool(
                        &mut changes,
                        "has_credentials",
                        have.has_credentials,
                        after.has_credentials,
                    );
                    if !changes.is_empty() {
                        Some(SourceAction::Update { changes })
                    } else if options.rotate_secrets {
                        Some(SourceAction::RotateSecret)
                    } else {
                        None
                    }
                }
            };
            if let Some(action) = action {
                plan.changes.push(Change::PutSource {
                    namespace: ns.to_string(),
                    repository: repo.name.clone(),
                    provider: want.provider.clone(),
                    clone_url: want.clone_url.clone(),
                    credentials_env: want.credentials_env.clone(),
                    webhook_secret_env: want.webhook_secret_env.clone(),
                    action,
                });
            }
        }
        (None, Some(have)) if options.prune => deletes.sources.push(Change::DeleteSource {
            namespace: ns.to_string(),
            repository: repo.name.clone(),
            clone_url: have.clone_url.clone(),
        }),
        (None, Some(have)) => plan.notes.push(Note::Kept {
            what: format!("the git source of {full} ({})", have.clone_url),
        }),
        (None, None) => {}
    }

    let server_rules = server.map_or(&[][..], |s| &s.rules);
    let mut matched = vec![false; server_rules.len()];
    for rule in &repo.rules {
        let want = RuleFields::from(rule);
        let key = want.key();
        let found = server_rules
            .iter()
            .enumerate()
            .position(|(i, r)| !matched[i] && r.fields.key() == key);
        match found {
            None => plan.changes.push(Change::CreateRule {
                namespace: ns.to_string(),
                repository: repo.name.clone(),
                rule: want,
            }),
            Some(i) => {
                matched[i] = true;
                let have = &server_rules[i];
                let mut changes = Vec::new();
                diff_str(&mut changes, "version", &have.fields.version, &want.version);
                diff_bool(
                    &mut changes,
                    "overwrite",
                    have.fields.overwrite,
                    want.overwrite,
                );
                diff_bool(&mut changes, "enabled", have.fields.enabled, want.enabled);
                diff_rule_settings(&mut changes, &have.fields, &want);
                // -- schedules and path filters (issue 9): "" is no schedule; lists keep their order
                // (a later `!pattern` overrides an earlier one).
                diff_str(
                    &mut changes,
                    "schedule",
                    have.fields.schedule.as_deref().unwrap_or(""),
                    want.schedule.as_deref().unwrap_or(""),
                );
                diff_list(&mut changes, "paths", &have.fields.paths, &want.paths);
                diff_list(
                    &mut changes,
                    "ignore_paths",
                    &have.fields.ignore_paths,
                    &want.ignore_paths,
                );
                if !changes.is_empty() {
                    plan.changes.push(Change::UpdateRule {
                        namespace: ns.to_string(),
                        repository: repo.name.clone(),
                        id: have.id.clone(),
                        rule: want,
                        changes,
                    });
                }
            }
        }
    }
    for (rule, _) in server_rules.iter().zip(&matched).filter(|(_, m)| !**m) {
        if options.prune {
            deletes.rules.push(Change::DeleteRule {
                namespace: ns.to_string(),
                repository: repo.name.clone(),
                id: rule.id.clone(),
                rule: rule.fields.clone(),
            });
        } else {
            plan.notes.push(Note::Kept {
                what: format!("rule {full}: {} (id {})", rule.fields.key(), rule.id),
            });
        }
    }

    let server_hooks = server.map_or(&[][..], |s| &s.webhooks);
    for hook in &repo.webhooks {
        let want = WebhookFields::from(hook);
        let Some(have) = server_hooks.iter().find(|h| h.fields.name == want.name) else {
            plan.changes.push(Change::CreateWebhook {
                namespace: ns.to_string(),
                repository: repo.name.clone(),
                webhook: want,
                secret_env: hook.secret_env.clone(),
            });
            continue;
        };
        let mut changes = Vec::new();
        diff_str(&mut changes, "url", &have.fields.url, &want.url);
        let set = |events: &[String]| {
            let mut v = events.to_vec();
            v.sort();
            v.dedup();
            v
        };
        let (old_events, new_events) = (set(&have.fields.events), set(&want.events));
        if old_events != new_events {
            changes.push(FieldChange {
                field: "events",
                old: Value::List(old_events),
                new: Value::List(new_events),
            });
        }
        diff_str(
            &mut changes,
            "tag_filter",
            have.fields.tag_filter.as_deref().unwrap_or(""),
            want.tag_filter.as_deref().unwrap_or(""),
        );
        diff_str(
            &mut changes,
            "payload_format",
            &have.fields.payload_format,
            &want.payload_format,
        );
        diff_bool(&mut changes, "active", have.fields.active, want.active);
        let rotate_secret_from = if options.rotate_secrets {
            if hook.secret_env.is_none() {
                plan.notes.push(Note::SecretNotRotated {
                    webhook: format!("{full}: {:?} (id {})", want.name, have.id),
                });
            }
            hook.secret_env.clone()
        } else {
            None
        };
        if !changes.is_empty() || rotate_secret_from.is_some() {
            plan.changes.push(Change::UpdateWebhook {
                namespace: ns.to_string(),
                repository: repo.name.clone(),
                id: have.id.clone(),
                name: want.name,
                changes,
                rotate_secret_from,
            });
        }
    }
    for have in server_hooks {
        if repo.webhooks.iter().any(|w| w.name == have.fields.name) {
            continue;
        }
        if options.prune {
            deletes.webhooks.push(Change::DeleteWebhook {
                namespace: ns.to_string(),
                repository: repo.name.clone(),
                id: have.id.clone(),
                webhook: have.fields.clone(),
            });
        } else {
            plan.notes.push(Note::Kept {
                what: format!("webhook {full}: {:?} (id {})", have.fields.name, have.id),
            });
        }
    }
}

fn diff_str(out: &mut Vec<FieldChange>, field: &'static str, old: &str, new: &str) {
    if old != new {
        out.push(FieldChange {
            field,
            old: Value::Str(old.to_string()),
            new: Value::Str(new.to_string()),
        });
    }
}

/// A rule's build settings (issue 9), field by field.
fn diff_rule_settings(out: &mut Vec<FieldChange>, have: &RuleFields, want: &RuleFields) {
    if have.build_args != want.build_args {
        out.push(FieldChange {
            field: "build_args",
            old: Value::Map(have.build_args.clone()),
            new: Value::Map(want.build_args.clone()),
        });
    }
    diff_str(out, "target", &have.target, &want.target);
    diff_bool(out, "no_cache", have.no_cache, want.no_cache);
    if have.extra_tags != want.extra_tags {
        out.push(FieldChange {
            field: "extra_tags",
            old: Value::List(have.extra_tags.clone()),
            new: Value::List(want.extra_tags.clone()),
        });
    }
    if have.timeout_minutes != want.timeout_minutes {
        out.push(FieldChange {
            field: "timeout_minutes",
            old: Value::Minutes(have.timeout_minutes),
            new: Value::Minutes(want.timeout_minutes),
        });
    }
    diff_str(out, "network", have.network.as_str(), want.network.as_str());
}

/// An ordered list (path filters).
fn diff_list(out: &mut Vec<FieldChange>, field: &'static str, old: &[String], new: &[String]) {
    if old != new {
        out.push(FieldChange {
            field,
            old: Value::List(old.to_vec()),
            new: Value::List(new.to_vec()),
        });
    }
}

fn diff_bool(out: &mut Vec<FieldChange>, field: &'static str, old: bool, new: bool) {
    if old != new {
        out.push(FieldChange {
            field,
            old: Value::Bool(old),
            new: Value::Bool(new),
        });
    }
}

/// What the server holds after `changes` run, as the API would do them (for tests: a plan
/// computed against it must be empty). New rule ids are `new-1`, `new-2`, ….
pub fn simulate(state: &ServerState, changes: &[Change]) -> Result<ServerState, String> {
    let mut s = state.clone();
    let mut next_id = 0;
    fn ns_mut<'s>(s: &'s mut ServerState, ns: &str) -> Result<&'s mut ServerNamespace, String> {
        s.namespaces
            .iter_mut()
            .find(|n| n.name == ns)
            .ok_or_else(|| format!("namespace {ns} not found"))
    }
    fn repo_mut<'s>(
        s: &'s mut ServerState,
        ns: &str,
        name: &str,
    ) -> Result<&'s mut ServerRepo, String> {
        ns_mut(s, ns)?
            .repos
            .iter_mut()
            .find(|r| r.name == name)
            .ok_or_else(|| format!("repository {ns}/{name} not found"))
    }
    for change in changes {
        match change {
            Change::CreateNamespace { namespace } => {
                if s.namespaces.iter().any(|n| &n.name == namespace) {
                    return Err(format!("namespace {namespace} already exists"));
                }
                s.namespaces.push(ServerNamespace {
                    name: namespace.clone(),
                    repos: Vec::new(),
                });
            }
            Change::CreateRepo {
                namespace,
                name,
                summary,
                detail,
                category,
                hidden,
            } => {
                let ns = ns_mut(&mut s, namespace)?;
                if ns.repos.iter().any(|r| &r.name == name) {
                    return Err(format!("repository {namespace}/{name} already exists"));
                }
                ns.repos.push(ServerRepo {
                    name: name.clone(),
                    summary: summary.clone(),
                    detail: detail.clone(),
                    category: category.clone(),
                    hidden: *hidden,
                    source: None,
                    rules: Vec::new(),
                    webhooks: Vec::new(),
                });
            }
            Change::UpdateRepo {
                namespace,
                name,
                changes,
            } => {
                let repo = repo_mut(&mut s, namespace, name)?;
                for c in changes {
                    match (c.field, &c.new) {
                        ("summary", Value::Str(v)) => repo.summary = v.clone(),
                        ("detail", Value::Str(v)) => repo.detail = v.clone(),
                        ("category", Value::Str(v)) => repo.category = v.clone(),
                        ("hidden", Value::Bool(v)) => repo.hidden = *v,
                        other => return Err(format!("cannot change {other:?} of a repository")),
                    }
                }
            }
            Change::PutSource {
                namespace,
                repository,
                provider,
                clone_url,
                credentials_env,
                ..
            } => {
                let repo = repo_mut(&mut s, namespace, repository)?;
                repo.source = Some(ServerSource::after_put(
                    repo.source.as_ref(),
                    provider,
                    clone_url,
                    credentials_env.is_some(),
                ));
            }
            Change::CreateRule {
                namespace,
                repository,
                rule,
            } => {
                let repo = repo_mut(&mut s, namespace, repository)?;
                if repo.source.is_none() {
                    return Err(format!("{namespace}/{repository} has no git source"));
                }
                next_id += 1;
                repo.rules.push(ServerRule {
                    id: format!("new-{next_id}"),
                    fields: rule.clone(),
                });
            }
            Change::UpdateRule {
                namespace,
                repository,
                id,
                rule,
                ..
            } => {
                let repo = repo_mut(&mut s, namespace, repository)?;
                let r = repo
                    .rules
                    .iter_mut()
                    .find(|r| &r.id == id)
                    .ok_or_else(|| format!("rule {id} not found"))?;
                r.fields = rule.clone();
            }
            Change::DeleteRule {
                namespace,
                repository,
                id,
                ..
            } => {
                let repo = repo_mut(&mut s, namespace, repository)?;
                let before = repo.rules.len();
                repo.rules.retain(|r| &r.id != id);
                if repo.rules.len() == before {
                    return Err(format!("rule {id} not found"));
                }
            }
            Change::CreateWebhook {
                namespace,
                repository,
                webhook,
                ..
            } => {
                let repo = repo_mut(&mut s, namespace, repository)?;
                if repo.webhooks.iter().any(|w| w.fields.name == webhook.name) {
                    return Err(format!("a webhook named {:?} exists already", webhook.name));
                }
                next_id += 1;
                let mut fields = webhook.clone();
                fields.events.sort();
                fields.events.dedup();
                repo.webhooks.push(ServerWebhook {
                    id: format!("new-{next_id}"),
                    fields,
                });
            }
            Change::UpdateWebhook {
                namespace,
                repository,
                id,
                changes,
                ..
            } => {
                let repo = repo_mut(&mut s, namespace, repository)?;
                let w = repo
                    .webhooks
                    .iter_mut()
                    .find(|w| &w.id == id)
                    .ok_or_else(|| format!("webhook {id} not found"))?;
                for c in changes {
                    match (c.field, &c.new) {
                        ("url", Value::Str(v)) => w.fields.url = v.clone(),
                        ("events", Value::List(v)) => w.fields.events = v.clone(),
                        ("tag_filter", Value::Str(v)) => {
                            w.fields.tag_filter = (!v.is_empty()).then(|| v.clone())
                        }
                        ("payload_format", Value::Str(v)) => w.fields.payload_format = v.clone(),
                        ("active", Value::Bool(v)) => w.fields.active = *v,
                        other => return Err(format!("cannot change {other:?} of a webhook")),
                    }
                }
            }
            Change::DeleteWebhook {
                namespace,
                repository,
                id,
                ..
            } => {
                let repo = repo_mut(&mut s, namespace, repository)?;
                let before = repo.webhooks.len();
                repo.webhooks.retain(|w| &w.id != id);
                if repo.webhooks.len() == before {
                    return Err(format!("webhook {id} not found"));
                }
            }
            Change::DeleteSource {
                namespace,
                repository,
                ..
            } => {
                let repo = repo_mut(&mut s, namespace, repository)?;
                if repo.source.take().is_none() {
                    return Err(format!("{namespace}/{repository} has no source"));
                }
                // As the server does: the rules stay, disabled.
                for r in &mut repo.rules {
                    r.fields.enabled = false;
                }
            }
            Change::DeleteRepo { namespace, name } => {
                let ns = ns_mut(&mut s, namespace)?;
                let before = ns.repos.len();
                ns.repos.retain(|r| &r.name != name);
                if ns.repos.len() == before {
                    return Err(format!("repository {namespace}/{name} not found"));
                }
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::super::schema::{RulesFile, load};
    use super::*;

    fn desired(text: &str) -> Desired {
        load(&[RulesFile {
            path: "t.toml".into(),
            text: text.into(),
        }])
        .unwrap_or_else(|e| panic!("{e:#?}"))
    }

    const ACME: &str = r#"
[[namespace]]
name = "acme"

[[namespace.repository]]
name = "api"
summary = "The API"
category = "server"

[namespace.repository.source]
provider = "github"
clone_url = "https://github.com/acme/api.git"
webhook_secret_env = "API_SECRET"

[[namespace.repository.rule]]
type = "branch"
name = "main"

[[namespace.repository.rule]]
type = "tag"
name = "v*"
overwrite = false

[[namespace.repository.webhook]]
name = "ci"
url = "https://ci.example.com/hook"
events = ["image.pushed", "build.failed", "image.pushed"]
secret_env = "CI_HOOK_SECRET"

[[namespace.repository]]
name = "web"
hidden = true

[[namespace.repository.webhook]]
name = "Slack alerts"
url = "https://hooks.example.com/x"
"#;

    fn rule(id: &str, kind: &str, name: &str) -> ServerRule {
        ServerRule {
            id: id.into(),
            fields: RuleFields {
                kind: kind.into(),
                name: name.into(),
                dockerfile: "Dockerfile".into(),
                context: ".".into(),
                version: String::new(),
                overwrite: true,
                enabled: true,
                ..Default::default()
            },
        }
    }

    fn hook(id: &str, name: &str, url: &str, events: &[&str]) -> ServerWebhook {
        ServerWebhook {
            id: id.into(),
            fields: WebhookFields {
                name: name.into(),
                url: url.into(),
                events: events.iter().map(ToString::to_string).collect(),
                tag_filter: None,
                payload_format: "kiln".into(),
                active: true,
            },
        }
    }

    /// `acme` as ACME describes it, plus what the files don't know about.
    fn matching_state() -> ServerState {
        let mut tag = rule("r2", "tag", "v*");
        tag.fields.overwrite = false;
        ServerState {
            namespaces: vec![
                ServerNamespace {
                    name: "acme".into(),
                    repos: vec![
                        ServerRepo {
                            name: "api".into(),
                            summary: "The API".into(),
                            detail: String::new(),
                            category: "server".into(),
                            hidden: false,
                            source: Some(ServerSource {
                                provider: "github".into(),
                                clone_url: "https://github.com/acme/api.git".into(),
                                has_credentials: false,
                            }),
                            rules: vec![rule("r1", "branch", "main"), tag],
                            webhooks: vec![hook(
                                "w1",
                                "ci",
                                "https://ci.example.com/hook",
                                &["build.failed", "image.pushed"],
                            )],
                        },
                        ServerRepo {
                            name: "web".into(),
                            category: "other".into(),
                            hidden: true,
                            webhooks: vec![hook(
                                "w2",
                                "Slack alerts",
                                "https://hooks.example.com/x",
                                &["image.pushed"],
                            )],
                            ..ServerRepo::default()
                        },
                    ],
                },
                ServerNamespace {
                    name: "other".into(),
                    repos: vec![ServerRepo {
                        name: "x".into(),
                        ..ServerRepo::default()
                    }],
                },
            ],
        }
    }

    fn ops(plan: &Plan) -> Vec<String> {
        plan.changes
            .iter()
            .map(|c| {
                let v = serde_json::to_value(c).unwrap();
                let op = v["op"].as_str().unwrap().to_string();
                let target = [
                    &v["namespace"],
                    &v["repository"],
                    &v["name"],
                    &v["rule"]["name"],
                    &v["webhook"]["name"],
                    &v["id"],
                ]
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join("/");
                format!("{op} {target}")
            })
            .collect()
    }

    #[test]
    fn from_nothing_everything_is_created_in_dependency_order() {
        let p = plan(&desired(ACME), &ServerState::default(), Options::default());
        assert_eq!(
            ops(&p),
            vec![
                "create_namespace acme",
                "create_repo acme/api",
                "put_source acme/api",
                "create_rule acme/api/main",
                "create_rule acme/api/v*",
                "create_webhook acme/api/ci",
                "create_repo acme/web",
                "create_webhook acme/web/Slack alerts",
            ]
        );
        assert_eq!(p.counts(), (8, 0, 0));
        let Change::CreateWebhook {
            webhook,
            secret_env,
            ..
        } = &p.changes[5]
        else {
            panic!()
        };
        assert_eq!(webhook.events, vec!["build.failed", "image.pushed"]);
        assert_eq!(secret_env.as_deref(), Some("CI_HOOK_SECRET"));
        let Change::CreateWebhook {
            webhook,
            secret_env,
            ..
        } = &p.changes[7]
        else {
            panic!()
        };
        assert_eq!(
            (
                webhook.events.clone(),
                webhook.payload_format.as_str(),
                webhook.active
            ),
            (vec!["image.pushed".to_string()], "kiln", true),
            "the defaults"
        );
        assert_eq!(secret_env, &None);
        assert!(p.notes.is_empty());
    }

    #[test]
    fn plans_are_idempotent() {
        let cases: &[(&str, ServerState, Options)] = &[
            ("empty server", ServerState::default(), Options::default()),
            ("matching server", matching_state(), Options::default()),
            (
                "matching server, prune",
                matching_state(),
                Options {
                    prune: true,
                    rotate_secrets: false,
                },
            ),
            ("drifted server", drifted_state(), Options::default()),
            (
                "drifted server, prune",
                drifted_state(),
                Options {
                    prune: true,
                    rotate_secrets: false,
                },
            ),
        ];
        let d = desired(ACME);
        for (name, state, options) in cases {
            let first = plan(&d, state, *options);
            let after = simulate(state, &first.changes).unwrap_or_else(|e| panic!("{name}: {e}"));
            let second = plan(&d, &after, *options);
            assert!(second.is_empty(), "{name}: {:#?}", second.changes);
            // And once more: nothing moves.
            assert_eq!(simulate(&after, &second.changes).unwrap(), after, "{name}");
        }
    }

    #[test]
    fn rule_build_settings_are_updated_in_place_and_back_to_their_defaults() {
        let with_settings = ACME.replace(
            "type = \"branch\"\nname = \"main\"\n",
            "type = \"branch\"\nname = \"main\"\nbuild_args = { GREETING = \"hi\" }\n\
             target = \"build\"\nno_cache = true\nextra_tags = [\"latest\"]\ntimeout_minutes = 5\n",
        );
        let d = desired(&with_settings);
        let state = matching_state();
        let p = plan(&d, &state, Options::default());
        assert_eq!(ops(&p), vec!["update_rule acme/api/main/r1"]);
        let Change::UpdateRule { changes, .. } = &p.changes[0] else {
            panic!("{:?}", p.changes)
        };
        let lines: Vec<String> = changes
            .iter()
            .map(|c| format!("{}: {} → {}", c.field, c.old, c.new))
            .collect();
        assert_eq!(
            lines,
            vec![
                "build_args: {} → {\"GREETING\": \"hi\"}",
                "target: \"\" → \"build\"",
                "no_cache: false → true",
                "extra_tags: [] → [\"latest\"]",
                "timeout_minutes: default → 5",
            ]
        );
        // The PATCH body: each field as the API takes it.
        let patch: serde_json::Map<String, serde_json::Value> = changes
            .iter()
            .map(|c| (c.field.to_string(), serde_json::json!(c.new)))
            .collect();
        assert_eq!(
            serde_json::Value::Object(patch),
            serde_json::json!({"build_args": {"GREETING": "hi"}, "target": "build", "no_cache": true,
                               "extra_tags": ["latest"], "timeout_minutes": 5})
        );
        let after = simulate(&state, &p.changes).unwrap();
        assert!(plan(&d, &after, Options::default()).is_empty());

        // A file without them sets them back; the timeout to the server's default (null).
        let back = plan(&desired(ACME), &after, Options::default());
        let Change::UpdateRule { changes, .. } = &back.changes[0] else {
            panic!("{:?}", back.changes)
        };
        let timeout = changes
            .iter()
            .find(|c| c.field == "timeout_minutes")
            .unwrap();
        assert_eq!(serde_json::json!(timeout.new), serde_json::Value::Null);
        assert_eq!(changes.len(), 5);
        // An older server shows no settings: they read as the defaults.
        let old: ServerRule = serde_json::from_value(serde_json::json!({
            "id": "r1", "type": "branch", "name": "main", "dockerfile": "Dockerfile", "context": ".",
            "version": "", "overwrite": true, "enabled": true
        }))
        .unwrap();
        assert_eq!(old, rule("r1", "branch", "main"));
    }

    /// The server after people changed things by hand.
    fn drifted_state() -> ServerState {
        let mut s = matching_state();
        let acme = &mut s.namespaces[0];
        let api = &mut acme.repos[0];
        api.summary = "old summary".into();
        api.hidden = true;
        api.source.as_mut().unwrap().clone_url = "https://github.com/acme/old-api.git".into();
        api.rules[1].fields.version = "{sha7}".into();
        api.rules[1].fields.enabled = false;
        api.rules.push(rule("r3", "branch", "dev"));
        // Events in another order are the same set; a filter and a format set by hand go back
        // to the file's defaults.
        api.webhooks[0].fields.events = vec!["image.pushed".into(), "build.failed".into()];
        api.webhooks[0].fields.tag_filter = Some("v*".into());
        api.webhooks[0].fields.payload_format = "cloudevents".into();
        api.webhooks.push(hook(
            "w9",
            "old-hook",
            "https://old.example.com/",
            &["build.started"],
        ));
        acme.repos[1].webhooks[0].fields.events = vec!["build.failed".into()];
        acme.repos[1].webhooks[0].fields.active = false;
        acme.repos[1].source = Some(ServerSource {
            provider: "github".into(),
            clone_url: "https://x/web".into(),
            has_credentials: false,
        });
        acme.repos.push(ServerRepo {
            name: "legacy".into(),
            ..ServerRepo::default()
        });
        s
    }

    #[test]
    fn drift_is_updated_and_only_pruned_when_asked() {
        let d = desired(ACME);
        let p = plan(&d, &drifted_state(), Options::default());
        assert_eq!(
            ops(&p),
            vec![
                "update_repo acme/api",
                "put_source acme/api",
                "update_rule acme/api/v*/r2",
                "update_webhook acme/api/ci/w1",
                "update_webhook acme/web/Slack alerts/w2",
            ]
        );
        let field_lines = |c: &Change| match c {
            Change::UpdateWebhook { changes, .. } => changes
                .iter()
                .map(|c| format!("{}: {} → {}", c.field, c.old, c.new))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field_lines(&p.changes[3]),
            vec![
                "tag_filter: \"v*\" → \"\"",
                "payload_format: \"cloudevents\" → \"kiln\""
            ]
        );
        assert_eq!(
            field_lines(&p.changes[4]),
            vec![
                "events: [\"build.failed\"] → [\"image.pushed\"]",
                "active: false → true"
            ]
        );
        let Change::UpdateRepo { changes, .. } = &p.changes[0] else {
            panic!()
        };
        let fields: Vec<_> = changes.iter().map(|c| c.field).collect();
        assert_eq!(fields, vec!["summary", "hidden"]);
        let Change::UpdateRule { changes, .. } = &p.changes[2] else {
            panic!()
        };
        assert_eq!(
            changes
                .iter()
                .map(|c| format!("{}: {} → {}", c.field, c.old, c.new))
                .collect::<Vec<_>>(),
            vec!["version: \"{sha7}\" → \"\"", "enabled: false → true"]
        );
        let kept: Vec<String> = p
            .notes
            .iter()
            .map(|n| match n {
                Note::Kept { what } => what.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kept,
            vec![
                "rule acme/api: branch dev (Dockerfile in .) (id r3)",
                "webhook acme/api: \"old-hook\" (id w9)",
                "the git source of acme/web (https://x/web)",
                "repository acme/legacy",
            ]
        );

        let p = plan(
            &d,
            &drifted_state(),
            Options {
                prune: true,
                rotate_secrets: false,
            },
        );
        assert_eq!(
            ops(&p),
            vec![
                "update_repo acme/api",
                "put_source acme/api",
                "update_rule acme/api/v*/r2",
                "update_webhook acme/api/ci/w1",
                "update_webhook acme/web/Slack alerts/w2",
                "delete_rule acme/api/dev/r3",
                "delete_webhook acme/api/old-hook/w9",
                "delete_source acme/web",
                "delete_repo acme/legacy",
            ]
        );
        assert_eq!(p.counts(), (0, 5, 4));
        assert_eq!(
            p.notes,
            vec![Note::NamespaceLeftAlone {
                namespace: "other".into(),
                repositories: 1
            }]
        );
    }

    /// Issue 9: `schedule`, `paths` and `ignore_paths` update a rule in place (paths keep their order),
    /// and the simulated result plans nothing.
    #[test]
    fn schedules_and_path_filters_update_rules_in_place() {
        let file = ACME.replace(
            "type = \"branch\"\nname = \"main\"\n",
            "type = \"branch\"\nname = \"main\"\nschedule = \"0 3 * * *\"\npaths = [\"src/**\", \"!src/**/*.md\"]\nignore_paths = [\"docs/**\"]\n",
        );
        let want = desired(&file);
        let state = matching_state();
        let p = plan(&want, &state, Options::default());
        assert_eq!(ops(&p), vec!["update_rule acme/api/main/r1"]);
        let Change::UpdateRule { changes, .. } = &p.changes[0] else {
            panic!("{:?}", p.changes)
        };
        let fields: Vec<(&str, String)> = changes
            .iter()
            .map(|c| (c.field, c.new.to_string()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("schedule", "\"0 3 * * *\"".to_string()),
                ("paths", "[\"src/**\", \"!src/**/*.md\"]".to_string()),
                ("ignore_paths", "[\"docs/**\"]".to_string()),
            ]
        );
        let after = simulate(&state, &p.changes).unwrap();
        assert!(plan(&want, &after, Options::default()).changes.is_empty());
        // Dropping them from the file sets them back: no schedule, no filters.
        let p = plan(&desired(ACME), &after, Options::default());
        let Change::UpdateRule { changes, .. } = &p.changes[0] else {
            panic!("{:?}", p.changes)
        };
        let fields: Vec<(&str, String)> = changes
            .iter()
            .map(|c| (c.field, c.new.to_string()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("schedule", "\"\"".to_string()),
                ("paths", "[]".to_string()),
                ("ignore_paths", "[]".to_string()),
            ]
        );
    }

    #[test]
    fn rules_match_on_type_name_dockerfile_and_context() {
        let mut state = matching_state();
        // Same name, another Dockerfile: a different rule.
        state.namespaces[0].repos[0].rules[0].fields.dockerfile = "docker/Dockerfile".into();
        let p = plan(&desired(ACME), &state, Options::default());
        assert_eq!(ops(&p), vec!["create_rule acme/api/main"]);
        assert_eq!(p.notes.len(), 1);

        // Two identical rules on the server: one matches, the other is extra.
        let mut state = matching_state();
        state.namespaces[0].repos[0]
            .rules
            .push(rule("r9", "branch", "main"));
        let p = plan(
            &desired(ACME),
            &state,
            Options {
                prune: true,
                rotate_secrets: false,
            },
        );
        assert_eq!(ops(&p), vec!["delete_rule acme/api/main/r9"]);
    }

    #[test]
    fn deletes_come_last_in_reverse_dependency_order() {
        let mut state = drifted_state();
        state.namespaces[0].repos.push(ServerRepo {
            name: "zzz".into(),
            source: Some(ServerSource {
                provider: "github".into(),
                clone_url: "https://x/z".into(),
                has_credentials: false,
            }),
            rules: vec![rule("z1", "branch", "main")],
            ..ServerRepo::default()
        });
        let p = plan(
            &desired(ACME),
            &state,
            Options {
                prune: true,
                rotate_secrets: false,
            },
        );
        let effects: Vec<Effect> = p.changes.iter().map(Change::effect).collect();
        let first_delete = effects.iter().position(|e| *e == Effect::Delete).unwrap();
        assert!(effects[first_delete..].iter().all(|e| *e == Effect::Delete));
        let deletes: Vec<String> = ops(&p).split_off(first_delete);
        assert_eq!(
            deletes,
            vec![
                "delete_rule acme/api/dev/r3",
                "delete_webhook acme/api/old-hook/w9",
                "delete_source acme/web",
                "delete_repo acme/legacy",
                "delete_repo acme/zzz",
            ],
            "a pruned repository takes its rules and source with it"
        );
    }

    #[test]
    fn rotating_secrets_puts_every_declared_source_again() {
        let p = plan(
            &desired(ACME),
            &matching_state(),
            Options {
                prune: false,
                rotate_secrets: true,
            },
        );
        assert_eq!(
            ops(&p),
            vec!["put_source acme/api", "update_webhook acme/api/ci/w1"]
        );
        let Change::UpdateWebhook {
            changes,
            rotate_secret_from,
            ..
        } = &p.changes[1]
        else {
            panic!()
        };
        assert!(changes.is_empty());
        assert_eq!(rotate_secret_from.as_deref(), Some("CI_HOOK_SECRET"));
        // Without secret_env the API cannot give a webhook a new secret: said, not pretended.
        assert_eq!(
            p.notes,
            vec![Note::SecretNotRotated {
                webhook: "acme/web: \"Slack alerts\" (id w2)".into()
            }]
        );
        let Change::PutSource {
            action,
            webhook_secret_env,
            ..
        } = &p.changes[0]
        else {
            panic!()
        };
        assert_eq!(action, &SourceAction::RotateSecret);
        assert_eq!(webhook_secret_env.as_deref(), Some("API_SECRET"));
        assert_eq!(p.counts(), (0, 2, 0));
    }

    #[test]
    fn an_unlinked_source_comes_back_with_its_rules_enabled() {
        // DELETE .../source disabled the rules; the files still declare them.
        let state = simulate(
            &matching_state(),
            &[Change::DeleteSource {
                namespace: "acme".into(),
                repository: "api".into(),
                clone_url: String::new(),
            }],
        )
        .unwrap();
        let p = plan(&desired(ACME), &state, Options::default());
        assert_eq!(
            ops(&p),
            vec![
                "put_source acme/api",
                "update_rule acme/api/main/r1",
                "update_rule acme/api/v*/r2"
            ]
        );
        let after = simulate(&state, &p.changes).unwrap();
        assert_eq!(after, matching_state());
    }

    #[test]
    fn an_empty_file_changes_nothing_and_prunes_no_namespace() {
        let p = plan(
            &Desired::default(),
            &matching_state(),
            Options {
                prune: true,
                rotate_secrets: false,
            },
        );
        assert!(p.is_empty());
        assert_eq!(p.notes.len(), 2);
    }
    #[test]
    fn a_rules_network_is_updated_in_place_and_back() {
        let offline = ACME.replace(
            "type = \"branch\"\nname = \"main\"\n",
            "type = \"branch\"\nname = \"main\"\nnetwork = \"none\"\n",
        );
        let state = matching_state();
        let p = plan(&desired(&offline), &state, Options::default());
        assert_eq!(ops(&p), vec!["update_rule acme/api/main/r1"]);
        let Change::UpdateRule { changes, .. } = &p.changes[0] else {
            panic!("{:?}", p.changes)
        };
        let lines: Vec<String> = changes
            .iter()
            .map(|c| format!("{}: {} → {}", c.field, c.old, c.new))
            .collect();
        assert_eq!(lines, vec!["network: \"default\" → \"none\""]);
        assert_eq!(serde_json::json!(changes[0].new), serde_json::json!("none"));
        let after = simulate(&state, &p.changes).unwrap();
        assert!(plan(&desired(&offline), &after, Options::default()).is_empty());
        let back = plan(&desired(ACME), &after, Options::default());
        assert_eq!(ops(&back), vec!["update_rule acme/api/main/r1"]);
    }
}
