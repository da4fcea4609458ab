//! Rules files (TOML) into the validated, merged [`Desired`] state: what `kiln apply` makes kiln
//! match. The schema is documented key by key in `rules/README.md`.
//!
//! Reading never stops at the first problem: every TOML syntax error, unknown key, missing key,
//! wrong type, invalid value and duplicate in every file is collected as a [`FileError`] naming
//! the file, line and column, and the key. No I/O here: the caller reads the files.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::domain::FieldError;
use crate::domain::build_limits::RuleNetwork;
use crate::domain::build_settings::{self, BuildSettings};
use crate::domain::clone_url::CloneUrl;
use crate::domain::names::{
    validate_category, validate_namespace_name, validate_repo_name, validate_summary,
};
use crate::domain::paths::PathPatterns;
use crate::domain::pattern::RefPattern;
use crate::domain::rules::{RefKind, normalize_repo_path, validate_rule};
use crate::domain::schedule::{CronSchedule, validate_rule_schedule};
use crate::notify::payload::{EVENTS, FORMATS};

/// The source providers a rules file may name (api.md), as the server accepts them.
pub const PROVIDERS: &[&str] = &["github", "gitlab", "gitea", "git"];
/// The longest repository `detail` the API accepts, in characters.
pub const MAX_DETAIL_CHARS: usize = 100_000;
/// The longest webhook `name` and `url` the API accepts, in characters and bytes.
pub const MAX_WEBHOOK_NAME_CHARS: usize = 100;
pub const MAX_WEBHOOK_URL_BYTES: usize = 2048;
/// The events a webhook gets when `events` is left out.
pub const DEFAULT_EVENTS: &[&str] = &["image.pushed"];

/// Where something is in a rules file (line and column from 1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem in a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub at: Location,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A rules file's name (as shown in errors) and its text.
#[derive(Debug, Clone)]
pub struct RulesFile {
    pub path: String,
    pub text: String,
}

/// Everything the files declare, merged, in file order.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub namespaces: Vec<DesiredNamespace>,
}

#[derive(Debug, Clone)]
pub struct DesiredNamespace {
    pub name: String,
    pub repos: Vec<DesiredRepo>,
    pub at: Location,
}

#[derive(Debug, Clone)]
pub struct DesiredRepo {
    pub name: String,
    pub summary: String,
    pub detail: String,
    pub category: String,
    pub hidden: bool,
    pub source: Option<DesiredSource>,
    pub rules: Vec<DesiredRule>,
    pub webhooks: Vec<DesiredWebhook>,
    pub at: Location,
}

#[derive(Debug, Clone)]
pub struct DesiredSource {
    pub provider: String,
    /// Never with credentials (they never go in a rules file).
    pub clone_url: String,
    /// The name of the environment variable holding the clone URL's credentials, `user:token`
    /// (never the credentials).
    pub credentials_env: Option<String>,
    /// The name of the environment variable holding the webhook secret (never the secret).
    pub webhook_secret_env: Option<String>,
    pub at: Location,
}

/// An outbound notification subscription, identified within its repository by `name`.
#[derive(Debug, Clone)]
pub struct DesiredWebhook {
    pub name: String,
    pub url: String,
    /// Sorted, without duplicates (the server keeps them so: a set).
    pub events: Vec<String>,
    /// `None`: every tag.
    pub tag_filter: Option<String>,
    pub payload_format: String,
    pub active: bool,
    /// The name of the environment variable holding the `whsec_…` secret (never the secret).
    pub secret_env: Option<String>,
    pub at: Location,
}

/// A build rule, with `dockerfile` and `context` normalized as the server stores them
/// (`./docker//Dockerfile` → `docker/Dockerfile`, the root context → `.`).
#[derive(Debug, Clone)]
pub struct DesiredRule {
    pub kind: RefKind,
    pub name: String,
    pub dockerfile: String,
    pub context: String,
    pub version: String,
    pub overwrite: bool,
    pub enabled: bool,
    /// Build settings (issue 9), validated as the server does.
    pub settings: BuildSettings,
    // -- schedules and path filters (issue 9) --
    pub schedule: Option<String>,
    pub paths: Vec<String>,
    pub ignore_paths: Vec<String>,
    pub at: Location,
}

/// What identifies a rule, since rules have no user-given id: a file rule and a server rule with
/// the same key are the same rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleKey {
    pub kind: String,
    pub name: String,
    pub dockerfile: String,
    pub context: String,
}

impl fmt::Display for RuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({} in {})",
            self.kind, self.name, self.dockerfile, self.context
        )
    }
}

impl DesiredRule {
    pub fn key(&self) -> RuleKey {
        RuleKey {
            kind: self.kind.as_str().to_string(),
            name: self.name.clone(),
            dockerfile: self.dockerfile.clone(),
            context: self.context.clone(),
        }
    }
}

/// A rule's `context` as the API shows it: normalized, the repository root as `.`.
pub fn display_context(context: &str) -> Option<String> {
    normalize_repo_path(context).map(|c| if c.is_empty() { ".".into() } else { c })
}

/// Why a source's credentials are refused in a rules file (the value is never repeated).
const CREDENTIALS_IN_FILE: &str = "credentials never go in a rules file: give clone_url without \
     them, put user:token in an environment variable and name that variable with credentials_env";

const TOP_KEYS: &[&str] = &["namespace"];
const NAMESPACE_KEYS: &[&str] = &["name", "repository"];
const REPO_KEYS: &[&str] = &[
    "name", "summary", "detail", "category", "hidden", "source", "rule", "webhook",
];
const SOURCE_KEYS: &[&str] = &[
    "provider",
    "clone_url",
    "webhook_secret_env",
    "credentials_env",
];
const WEBHOOK_KEYS: &[&str] = &[
    "name",
    "url",
    "events",
    "tag_filter",
    "payload_format",
    "active",
    "secret_env",
];
const RULE_KEYS: &[&str] = crate::domain::rules::RULE_FIELDS;

/// Reads, validates and merges rules files. `Err` holds every problem found, in file order.
pub fn load(files: &[RulesFile]) -> Result<Desired, Vec<FileError>> {
    let mut errors = Vec::new();
    let mut desired = Desired::default();
    // Where each repository was first defined, across files: a second definition is a conflict.
    let mut repo_at: HashMap<(String, String), Location> = HashMap::new();
    for file in files {
        let namespaces = read_file(file, &mut errors);
        for ns in namespaces {
            let index = match desired.namespaces.iter().position(|n| n.name == ns.name) {
                Some(i) => i,
                None => {
                    desired.namespaces.push(DesiredNamespace {
                        name: ns.name.clone(),
                        repos: Vec::new(),
                        at: ns.at.clone(),
                    });
                    desired.namespaces.len() - 1
                }
            };
            for repo in ns.repos {
                let key = (ns.name.clone(), repo.name.clone());
                if let Some(first) = repo_at.get(&key) {
                    errors.push(FileError {
                        at: repo.at.clone(),
                        message: format!(
                            "repository \"{}/{}\" is defined twice: here and at {first}",
                            ns.name, repo.name
                        ),
                    });
                    continue;
                }
                repo_at.insert(key, repo.at.clone());
                desired.namespaces[index].repos.push(repo);
            }
        }
    }
    if errors.is_empty() {
        Ok(desired)
    } else {
        Err(errors)
    }
}

/// One file's namespaces (repositories not yet merged with other files'); problems go to `errors`.
fn read_file(file: &RulesFile, errors: &mut Vec<FileError>) -> Vec<DesiredNamespace> {
    let first = errors.len();
    let namespaces = read_namespaces(file, errors);
    // In the order of the file, whatever order they were found in.
    errors[first..].sort_by_key(|e| (e.at.line, e.at.column));
    namespaces
}

fn read_namespaces(file: &RulesFile, errors: &mut Vec<FileError>) -> Vec<DesiredNamespace> {
    let (doc, syntax) = DeTable::parse_recoverable(&file.text);
    let mut cx = Cx {
        file: &file.path,
        text: &file.text,
        errors,
    };
    if !syntax.is_empty() {
        // A recovered tree after a syntax error could report confusing follow-on problems.
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            cx.error(span, format!("TOML syntax: {}", e.message().trim()));
        }
        return Vec::new();
    }
    let top = Table {
        table: doc.get_ref(),
        span: 0..0,
        what: "the file".into(),
    };
    cx.check_keys(&top, TOP_KEYS, |_| None);
    let mut out: Vec<DesiredNamespace> = Vec::new();
    for (i, ns_table) in cx
        .tables(&top, "namespace", "[[namespace]]")
        .into_iter()
        .enumerate()
    {
        if let Some(ns) = read_namespace(&mut cx, ns_table, i + 1) {
            if let Some(first) = out.iter().find(|n| n.name == ns.name) {
                cx.errors.push(FileError {
                    at: ns.at.clone(),
                    message: format!(
                        "namespace \"{}\" is defined twice in this file (first at line {}): \
                         list all its repositories under one [[namespace]]",
                        ns.name, first.at.line
                    ),
                });
                continue;
            }
            out.push(ns);
        }
    }
    out
}

fn read_namespace(cx: &mut Cx, mut t: Table, index: usize) -> Option<DesiredNamespace> {
    t.what = format!("namespace #{index}");
    let name = cx
        .string(&t, "name", Required::Yes)
        .and_then(|(name, span)| {
            cx.field(validate_namespace_name(&name), &t, "name", span)
                .map(|()| name)
        });
    if let Some(name) = &name {
        t.what = format!("namespace \"{name}\"");
    }
    cx.check_keys(&t, NAMESPACE_KEYS, |_| None);
    let label = name.clone().unwrap_or_else(|| format!("#{index}"));
    let mut repos: Vec<DesiredRepo> = Vec::new();
    for (i, repo_table) in cx
        .tables(&t, "repository", "[[namespace.repository]]")
        .into_iter()
        .enumerate()
    {
        if let Some(repo) = read_repo(cx, repo_table, &label, i + 1) {
            if let Some(first) = repos.iter().find(|r| r.name == repo.name) {
                cx.errors.push(FileError {
                    at: repo.at.clone(),
                    message: format!(
                        "repository \"{label}/{}\" is defined twice: here and at {}",
                        repo.name, first.at
                    ),
                });
                continue;
            }
            repos.push(repo);
        }
    }
    Some(DesiredNamespace {
        name: name?,
        repos,
        at: cx.loc(t.span.start),
    })
}

fn read_repo(cx: &mut Cx, mut t: Table, ns: &str, index: usize) -> Option<DesiredRepo> {
    t.what = format!("repository #{index} of namespace \"{ns}\"");
    let name = cx
        .string(&t, "name", Required::Yes)
        .and_then(|(name, span)| {
            cx.field(validate_repo_name(&name), &t, "name", span)
                .map(|()| name)
        });
    if let Some(name) = &name {
        t.what = format!("repository \"{ns}/{name}\"");
    }
    cx.check_keys(&t, REPO_KEYS, |_| None);
    let full = format!("{ns}/{}", name.as_deref().unwrap_or("?"));
    let summary = match cx.string(&t, "summary", Required::No) {
        Some((s, span)) => cx
            .field(validate_summary(&s), &t, "summary", span)
            .map(|()| s),
        None => Some(String::new()),
    };
    let detail = match cx.string(&t, "detail", Required::No) {
        Some((d, span)) if d.chars().count() > MAX_DETAIL_CHARS => {
            let n = d.chars().count();
            cx.key_error(
                &t,
                "detail",
                span,
                format!("must be at most {MAX_DETAIL_CHARS} characters (got {n})"),
            );
            None
        }
        Some((d, _)) => Some(d),
        None => Some(String::new()),
    };
    let category = match cx.string(&t, "category", Required::No) {
        Some((c, span)) => cx
            .field(validate_category(&c), &t, "category", span)
            .map(|()| c),
        None => Some("other".to_string()),
    };
    let hidden = cx.boolean(&t, "hidden").unwrap_or(Some(false));
    let mut source_ok = true;
    let source = match cx.table(&t, "source", "[namespace.repository.source]") {
        Some(s) => {
            let s = read_source(cx, s, &full);
            source_ok = s.is_some();
            s
        }
        None => None,
    };
    let rule_tables = cx.tables(&t, "rule", "[[namespace.repository.rule]]");
    let mut rules: Vec<DesiredRule> = Vec::new();
    let mut all_rules_ok = true;
    for (i, rule_table) in rule_tables.into_iter().enumerate() {
        let span = rule_table.span.clone();
        match read_rule(cx, rule_table, &full, i + 1) {
            Some(rule) => {
                if let Some(first) = rules.iter().find(|r| r.key() == rule.key()) {
                    cx.errors.push(FileError {
                        at: rule.at.clone(),
                        message: format!(
                            "rule #{} of {full}: the same rule ({}) is already defined at line {}: \
                             a rule is identified by its type, name, dockerfile and context",
                            i + 1,
                            rule.key(),
                            first.at.line
                        ),
                    });
                    all_rules_ok = false;
                    continue;
                }
                rules.push(rule);
            }
            None => all_rules_ok = false,
        }
        if i == 0 && source.is_none() && source_ok {
            cx.error(
                span,
                format!(
                    "{}: build rules need a git source: add [namespace.repository.source] with \
                     provider and clone_url",
                    t.what
                ),
            );
        }
    }
    let mut webhooks: Vec<DesiredWebhook> = Vec::new();
    let mut all_webhooks_ok = true;
    // Names seen so far and the line of each, valid webhooks or not: a duplicate is reported
    // even when the first of the two has other problems.
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, hook_table) in cx
        .tables(&t, "webhook", "[[namespace.repository.webhook]]")
        .into_iter()
        .enumerate()
    {
        let at = cx.loc(hook_table.span.start);
        let peeked = lookup(hook_table.table, "name").and_then(|v| match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => None,
        });
        if let Some(name) = peeked {
            if let Some((_, line)) = seen.iter().find(|(n, _)| *n == name) {
                cx.errors.push(FileError {
                    at: at.clone(),
                    message: format!(
                        "webhook #{} of {full}: a webhook named \"{name}\" is already defined at \
                         line {line}: a webhook is identified by its name within its repository",
                        i + 1,
                    ),
                });
                all_webhooks_ok = false;
            } else {
                seen.push((name, at.line));
            }
        }
        match read_webhook(cx, hook_table, &full, i + 1) {
            Some(hook) => webhooks.push(hook),
            None => all_webhooks_ok = false,
        }
    }
    Some(DesiredRepo {
        name: name?,
        summary: summary?,
        detail: detail?,
        category: category?,
        hidden: hidden?,
        source: if source_ok { source } else { None },
        rules: if all_rules_ok { rules } else { Vec::new() },
        webhooks: if all_webhooks_ok {
            webhooks
        } else {
            Vec::new()
        },
        at: cx.loc(t.span.start),
    })
}

fn read_source(cx: &mut Cx, mut t: Table, repo: &str) -> Option<DesiredSource> {
    t.what = format!("source of {repo}");
    cx.check_keys(&t, SOURCE_KEYS, |key| match key {
        "webhook_secret" | "secret" => Some(
            "secrets never go in a rules file: put the secret in an environment variable and \
             name that variable with webhook_secret_env"
                .to_string(),
        ),
        "credentials" | "password" | "token" => Some(CREDENTIALS_IN_FILE.to_string()),
        _ => None,
    });
    let provider = cx
        .string(&t, "provider", Required::Yes)
        .and_then(|(p, span)| {
            if PROVIDERS.contains(&p.as_str()) {
                Some(p)
            } else {
                cx.key_error(
                    &t,
                    "provider",
                    span,
                    format!("must be one of {} (got \"{p}\")", PROVIDERS.join(", ")),
                );
                None
            }
        });
    let clone_url = cx
        .string(&t, "clone_url", Required::Yes)
        .and_then(|(url, span)| match CloneUrl::parse(&url) {
            Ok(parsed) if parsed.credentials().is_some() => {
                cx.key_error(&t, "clone_url", span, CREDENTIALS_IN_FILE.to_string());
                None
            }
            Ok(parsed) => Some(parsed),
            Err(e) => {
                let message = e.message.strip_prefix("clone_url ").unwrap_or(&e.message);
                cx.key_error(&t, "clone_url", span, message.to_string());
                None
            }
        });
    let env = cx.env_name(&t, "webhook_secret_env");
    let credentials_env = cx.env_name(&t, "credentials_env");
    let clone_url = clone_url?;
    if credentials_env.as_ref().is_some_and(Option::is_some)
        && !matches!(clone_url, CloneUrl::Remote { .. })
    {
        cx.error(
            t.span.clone(),
            format!(
                "{}: credentials_env: a local repository takes no credentials",
                t.what
            ),
        );
    }
    Some(DesiredSource {
        provider: provider?,
        credentials_env: credentials_env?,
        clone_url: clone_url.url().to_string(),
        webhook_secret_env: env?,
        at: cx.loc(t.span.start),
    })
}

fn read_rule(cx: &mut Cx, mut t: Table, repo: &str, index: usize) -> Option<DesiredRule> {
    t.what = format!("rule #{index} of {repo}");
    cx.check_keys(&t, RULE_KEYS, |_| None);
    let kind = cx.string(&t, "type", Required::Yes).and_then(|(k, span)| {
        let parsed: Result<RefKind, FieldError> = k.parse();
        match parsed {
            Ok(kind) => Some(kind),
            Err(e) => {
                cx.key_error(&t, "type", span, e.message);
                None
            }
        }
    });
    let name = cx.string(&t, "name", Required::Yes);
    let dockerfile = cx.string(&t, "dockerfile", Required::No);
    let context = cx.string(&t, "context", Required::No);
    let version = cx.string(&t, "version", Required::No);
    let overwrite = cx.boolean(&t, "overwrite");
    let enabled = cx.boolean(&t, "enabled");

    // The server's checks, all of them: `validate_rule` stops at the first bad field, so check
    // again with that field replaced by a good value until nothing is left (a bad or missing name
    // also hides the version, whose captures depend on it).
    let given = |v: &Option<(String, Range<usize>)>, default: &str| {
        v.as_ref().map_or(default.to_string(), |(s, _)| s.clone())
    };
    let mut check = RuleStrings {
        name: given(&name, "main"),
        version: if name.is_some() {
            given(&version, "")
        } else {
            String::new()
        },
        dockerfile: given(&dockerfile, "Dockerfile"),
        context: given(&context, "."),
    };
    let mut valid = true;
    for _ in 0..4 {
        let Err(e) = validate_rule(
            kind.unwrap_or(RefKind::Branch),
            &check.name,
            &check.version,
            &check.dockerfile,
            &check.context,
        ) else {
            break;
        };
        valid = false;
        let span = match e.field {
            "name" => &name,
            "version" => &version,
            "dockerfile" => &dockerfile,
            "context" => &context,
            _ => &None,
        }
        .as_ref()
        .map_or(t.span.clone(), |(_, span)| span.clone());
        cx.key_error(&t, e.field, span, e.message);
        match e.field {
            "name" => {
                check.name = "main".into();
                check.version.clear();
            }
            "version" => check.version.clear(),
            "dockerfile" => check.dockerfile = "Dockerfile".into(),
            "context" => check.context = ".".into(),
            _ => break,
        }
    }
    let settings = read_rule_settings(cx, &t, name.as_ref().map(|(n, _)| n.as_str()));
    // -- schedules and path filters (issue 9) --
    let filters =
        read_rule_schedule_and_paths(cx, &t, kind, name.as_ref().map(|(n, _)| n.as_str()));
    if !valid {
        return None;
    }
    let (schedule, paths, ignore_paths) = filters?;
    Some(DesiredRule {
        schedule,
        paths,
        ignore_paths,
        kind: kind?,
        name: name?.0,
        dockerfile: normalize_repo_path(&check.dockerfile)?,
        context: display_context(&check.context)?,
        version: check.version,
        overwrite: overwrite.unwrap_or(Some(true))?,
        enabled: enabled.unwrap_or(Some(true))?,
        settings: settings?,
        at: cx.loc(t.span.start),
    })
}

/// A rule's build settings (`build_args`, `target`, `no_cache`, `extra_tags`, `timeout_minutes`),
/// each checked by the server's own rules; `None` when one is wrong (reported). `extra_tags` are
/// checked against the rule's `name` (its captures), when the name is valid.
fn read_rule_settings(cx: &mut Cx, t: &Table, name: Option<&str>) -> Option<BuildSettings> {
    let mut ok = true;
    let mut settings = BuildSettings::default();
    if let Some(v) = lookup(t.table, "build_args") {
        match v.get_ref() {
            DeValue::Table(table) => {
                for (key, value) in entries(table) {
                    let arg: &str = key.get_ref();
                    let checked = build_settings::validate_build_arg_name(arg).and_then(|()| {
                        match value.get_ref() {
                            DeValue::String(s) => {
                                build_settings::validate_build_arg_value(arg, s)
                                    .map(|()| s.to_string())
                            }
                            other => Err(build_settings::SettingError {
                                field: format!("build_args.{arg}"),
                                code: "invalid_type",
                                message: format!(
                                    "must be a string (got {}); quote numbers and booleans, like \"8080\"",
                                    other.type_str()
                                ),
                            }),
                        }
                    });
                    match checked {
                        Ok(s) => {
                            settings.build_args.insert(arg.to_string(), s);
                        }
                        Err(e) => {
                            let at = key.span().start.min(value.span().start);
                            cx.error(at..at, format!("{}: {}: {}", t.what, e.field, e.message));
                            ok = false;
                        }
                    }
                }
                if let Err(e) = build_settings::validate_build_args(&settings.build_args) {
                    cx.key_error(t, &e.field, v.span(), e.message);
                    ok = false;
                }
            }
            other => {
                cx.key_error(
                    t,
                    "build_args",
                    v.span(),
                    format!(
                        "must be a table of build argument names to strings, like \
                         build_args = {{ GREETING = \"hello\" }} (got {})",
                        other.type_str()
                    ),
                );
                ok = false;
            }
        }
    }
    if let Some((target, span)) = cx.string(t, "target", Required::No) {
        match build_settings::validate_target(&target) {
            Ok(()) => settings.target = target,
            Err(e) => {
                cx.key_error(t, "target", span, e.message);
                ok = false;
            }
        }
    }
    match cx.boolean(t, "no_cache") {
        Some(Some(b)) => settings.no_cache = b,
        Some(None) => ok = false,
        None => {}
    }
    // -- build limits (issue 11) --
    if lookup(t.table, "network").is_some() {
        match cx.string(t, "network", Required::No) {
            Some((network, span)) => match RuleNetwork::parse(&network) {
                Ok(n) => settings.network = n,
                Err(message) => {
                    cx.key_error(t, "network", span, message);
                    ok = false;
                }
            },
            None => ok = false,
        }
    }
    match cx.strings(t, "extra_tags") {
        Some(Some((list, span))) => {
            let templates: Vec<String> = list.iter().map(|(s, _)| s.clone()).collect();
            if let Some(pattern) = name.and_then(|n| RefPattern::parse(n).ok())
                && let Err(e) = build_settings::validate_extra_tags(&templates, &pattern)
            {
                // `extra_tags[i]`: point at that item.
                let at = e
                    .field
                    .strip_prefix("extra_tags[")
                    .and_then(|i| i.trim_end_matches(']').parse::<usize>().ok())
                    .and_then(|i| list.get(i))
                    .map_or(span, |(_, s)| s.clone());
                cx.key_error(t, &e.field, at, e.message);
                ok = false;
            }
            settings.extra_tags = templates;
        }
        Some(None) => ok = false,
        None => {}
    }
    if let Some(v) = lookup(t.table, "timeout_minutes") {
        let minutes = match v.get_ref() {
            DeValue::Integer(i) => i
                .as_str()
                .replace('_', "")
                .parse::<i64>()
                .ok()
                .filter(|_| i.radix() == 10)
                .ok_or_else(|| {
                    format!(
                        "must be a whole number of minutes, in decimal (got {})",
                        i.as_str()
                    )
                })
                .and_then(|m| build_settings::validate_timeout_minutes(m).map_err(|e| e.message)),
            other => Err(format!(
                "must be a whole number of minutes from 1 to {} (got {})",
                build_settings::MAX_TIMEOUT_MINUTES,
                other.type_str()
            )),
        };
        match minutes {
            Ok(m) => settings.timeout_minutes = Some(m),
            Err(message) => {
                cx.key_error(t, "timeout_minutes", v.span(), message);
                ok = false;
            }
        }
    }
    ok.then_some(settings)
}

/// A rule's `schedule`, `paths` and `ignore_paths`, checked by the server's own code; `None` when one
/// is invalid (reported). A schedule of `""` is none, as in the API.
#[allow(clippy::type_complexity)]
fn read_rule_schedule_and_paths(
    cx: &mut Cx,
    t: &Table,
    kind: Option<RefKind>,
    name: Option<&str>,
) -> Option<(Option<String>, Vec<String>, Vec<String>)> {
    let mut ok = true;
    let schedule = match lookup(t.table, "schedule") {
        None => None,
        Some(_) => match cx.string(t, "schedule", Required::No) {
            None => {
                ok = false;
                None
            }
            Some((s, span)) => {
                let s = s.trim().to_string();
                if s.is_empty() {
                    None
                } else {
                    // The rule's own kind and name were reported above when bad: check against
                    // them only when known.
                    let result = match (kind, name) {
                        (Some(kind), Some(name)) => {
                            validate_rule_schedule(kind, name, &s).map(|_| ())
                        }
                        _ => CronSchedule::parse(&s).map(|_| ()),
                    };
                    if cx.field(result, t, "schedule", span).is_none() {
                        ok = false;
                    }
                    Some(s)
                }
            }
        },
    };
    let mut list = |cx: &mut Cx, key: &'static str| -> Vec<String> {
        match cx.strings(t, key) {
            None => vec![],
            Some(None) => {
                ok = false;
                vec![]
            }
            Some(Some((items, span))) => {
                let items: Vec<String> = items.into_iter().map(|(s, _)| s).collect();
                if cx
                    .field(PathPatterns::parse(key, &items).map(|_| ()), t, key, span)
                    .is_none()
                {
                    ok = false;
                }
                items
            }
        }
    };
    let paths = list(cx, "paths");
    let ignore_paths = list(cx, "ignore_paths");
    ok.then_some((schedule, paths, ignore_paths))
}

fn read_webhook(cx: &mut Cx, mut t: Table, repo: &str, index: usize) -> Option<DesiredWebhook> {
    t.what = format!("webhook #{index} of {repo}");
    let name = cx
        .string(&t, "name", Required::Yes)
        .and_then(|(name, span)| {
            let n = name.chars().count();
            let problem = if name.trim().is_empty() {
                Some("must not be empty".to_string())
            } else if name.trim() != name {
                Some("must not start or end with spaces (kiln trims them)".to_string())
            } else if n > MAX_WEBHOOK_NAME_CHARS {
                Some(format!(
                    "must be at most {MAX_WEBHOOK_NAME_CHARS} characters (got {n})"
                ))
            } else if name.chars().any(char::is_control) {
                Some("must not contain control characters".to_string())
            } else {
                None
            };
            match problem {
                Some(p) => {
                    cx.key_error(&t, "name", span, p);
                    None
                }
                None => Some(name),
            }
        });
    if let Some(name) = &name {
        t.what = format!("webhook \"{name}\" of {repo}");
    }
    cx.check_keys(&t, WEBHOOK_KEYS, |key| {
        matches!(key, "secret" | "webhook_secret").then(|| {
            "secrets never go in a rules file: put the whsec_ secret in an environment variable \
             and name that variable with secret_env"
                .to_string()
        })
    });
    let url =
        cx.string(&t, "url", Required::Yes)
            .and_then(|(url, span)| match check_webhook_url(&url) {
                Ok(()) => Some(url),
                Err(message) => {
                    cx.key_error(&t, "url", span, message);
                    None
                }
            });
    let events = match cx.strings(&t, "events") {
        None => Some(DEFAULT_EVENTS.iter().map(ToString::to_string).collect()),
        Some(None) => None,
        Some(Some((list, span))) => {
            let unknown: Vec<&(String, Range<usize>)> = list
                .iter()
                .filter(|(e, _)| !EVENTS.contains(&e.as_str()))
                .collect();
            if list.is_empty() {
                cx.key_error(
                    &t,
                    "events",
                    span,
                    format!(
                        "must name at least one event ({}); leave it out for [\"image.pushed\"]",
                        EVENTS.join(", ")
                    ),
                );
                None
            } else if !unknown.is_empty() {
                for (e, span) in unknown {
                    cx.key_error(
                        &t,
                        "events",
                        span.clone(),
                        format!("unknown event \"{e}\": use {}", EVENTS.join(", ")),
                    );
                }
                None
            } else {
                let mut events: Vec<String> = list.into_iter().map(|(e, _)| e).collect();
                events.sort();
                events.dedup();
                Some(events)
            }
        }
    };
    let tag_filter = match cx.string(&t, "tag_filter", Required::No) {
        None => Some(None),
        Some((f, _)) if f.is_empty() => Some(None),
        Some((f, span)) => match RefPattern::parse(&f) {
            Ok(_) => Some(Some(f)),
            Err(e) => {
                cx.key_error(&t, "tag_filter", span, e.message);
                None
            }
        },
    };
    let payload_format = match cx.string(&t, "payload_format", Required::No) {
        None => Some("kiln".to_string()),
        Some((f, _)) if FORMATS.contains(&f.as_str()) => Some(f),
        Some((f, span)) => {
            cx.key_error(
                &t,
                "payload_format",
                span,
                format!("must be one of {} (got \"{f}\")", FORMATS.join(", ")),
            );
            None
        }
    };
    let active = cx.boolean(&t, "active").unwrap_or(Some(true));
    let secret_env = cx.env_name(&t, "secret_env");
    Some(DesiredWebhook {
        name: name?,
        url: url?,
        events: events?,
        tag_filter: tag_filter?,
        payload_format: payload_format?,
        active: active?,
        secret_env: secret_env?,
        at: cx.loc(t.span.start),
    })
}

/// The server's check of a webhook URL: http or https, with a host, at most 2048 bytes.
fn check_webhook_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("must be a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".to_string());
    }
    if url.len() > MAX_WEBHOOK_URL_BYTES {
        return Err(format!(
            "must be at most {MAX_WEBHOOK_URL_BYTES} bytes (got {})",
            url.len()
        ));
    }
    Ok(())
}

/// The string fields of a rule, as checked together.
struct RuleStrings {
    name: String,
    version: String,
    dockerfile: String,
    context: String,
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A table being read, with what to call it in errors (`repository "acme/api"`).
struct Table<'t, 'i> {
    table: &'t DeTable<'i>,
    /// Its header (`[[namespace.repository]]`), or where an inline table starts.
    span: Range<usize>,
    what: String,
}

enum Required {
    Yes,
    No,
}

/// The file being read and the errors found so far.
struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    errors: &'a mut Vec<FileError>,
}

impl Cx<'_> {
    fn loc(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: self.file.to_string(),
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }

    fn error(&mut self, span: Range<usize>, message: String) {
        let at = self.loc(span.start);
        self.errors.push(FileError { at, message });
    }

    fn key_error(&mut self, t: &Table, key: &str, span: Range<usize>, message: String) {
        self.error(span, format!("{}: {key}: {message}", t.what));
    }

    /// A validation result from `domain`, reported on `key`; `Some(())` when valid.
    fn field(
        &mut self,
        result: Result<(), FieldError>,
        t: &Table,
        key: &str,
        span: Range<usize>,
    ) -> Option<()> {
        match result {
            Ok(()) => Some(()),
            Err(e) => {
                self.key_error(t, key, span, e.message);
                None
            }
        }
    }

    /// Refuses the keys of `t` not in `known`; `special` may explain a key better than "unknown".
    fn check_keys(&mut self, t: &Table, known: &[&str], special: impl Fn(&str) -> Option<String>) {
        for (key, value) in entries(t.table) {
            let name: &str = key.get_ref();
            // A table header (`[[namespace.repository.webhook]]`) starts before its last key.
            let at = key.span().start.min(value.span().start);
            if known.contains(&name) {
                continue;
            }
            let message = special(name).unwrap_or_else(|| {
                let hint = match closest(name, known) {
                    Some(k) => format!("did you mean \"{k}\"?"),
                    None => format!("known keys: {}", known.join(", ")),
                };
                format!("unknown key ({hint})")
            });
            self.key_error(t, name, at..at, message);
        }
    }

    /// A string value: `None` (reported) when required and missing, or of another type.
    fn string(
        &mut self,
        t: &Table,
        key: &str,
        required: Required,
    ) -> Option<(String, Range<usize>)> {
        match lookup(t.table, key) {
            None => {
                if let Required::Yes = required {
                    self.error(
                        t.span.clone(),
                        format!("{}: the required key \"{key}\" is missing", t.what),
                    );
                }
                None
            }
            Some(v) => match v.get_ref() {
                DeValue::String(s) => Some((s.to_string(), v.span())),
                other => {
                    self.key_error(
                        t,
                        key,
                        v.span(),
                        format!("must be a string (got {})", other.type_str()),
                    );
                    None
                }
            },
        }
    }

    /// The name of an environment variable: `Some(None)` when missing, `None` when invalid
    /// (reported).
    fn env_name(&mut self, t: &Table, key: &str) -> Option<Option<String>> {
        match self.string(t, key, Required::No) {
            Some((var, span)) if !is_env_name(&var) => {
                self.key_error(
                    t,
                    key,
                    span,
                    format!(
                        "must be the name of an environment variable (letters, digits and '_', \
                         not starting with a digit), not the secret itself (got {} characters)",
                        var.chars().count()
                    ),
                );
                None
            }
            Some((var, _)) => Some(Some(var)),
            None => Some(None),
        }
    }

    /// An array of strings, each with its span, and the array's span: `None` when missing,
    /// `Some(None)` when of the wrong type (reported).
    #[allow(clippy::type_complexity)]
    fn strings(
        &mut self,
        t: &Table,
        key: &str,
    ) -> Option<Option<(Vec<(String, Range<usize>)>, Range<usize>)>> {
        let v = lookup(t.table, key)?;
        let DeValue::Array(array) = v.get_ref() else {
            self.key_error(
                t,
                key,
                v.span(),
                format!(
                    "must be an array of strings (got {})",
                    v.get_ref().type_str()
                ),
            );
            return Some(None);
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in array.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), item.span())),
                other => {
                    self.key_error(
                        t,
                        key,
                        item.span(),
                        format!("must hold strings (got {})", other.type_str()),
                    );
                    ok = false;
                }
            }
        }
        Some(ok.then_some((out, v.span())))
    }

    /// `None` when missing (use the default), `Some(None)` when of the wrong type (reported).
    fn boolean(&mut self, t: &Table, key: &str) -> Option<Option<bool>> {
        let v = lookup(t.table, key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(Some(*b)),
            other => {
                self.key_error(
                    t,
                    key,
                    v.span(),
                    format!("must be true or false (got {})", other.type_str()),
                );
                Some(None)
            }
        }
    }

    /// A sub-table (`[namespace.repository.source]` or an inline table).
    fn table<'t, 'i>(
        &mut self,
        t: &Table<'t, 'i>,
        key: &str,
        header: &str,
    ) -> Option<Table<'t, 'i>> {
        let v = lookup(t.table, key)?;
        match v.get_ref() {
            DeValue::Table(table) => Some(Table {
                table,
                span: v.span(),
                what: String::new(),
            }),
            other => {
                self.key_error(
                    t,
                    key,
                    v.span(),
                    format!(
                        "must be a table, written {header} (got {})",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// An array of tables (`[[namespace]]`), in file order; missing → empty.
    fn tables<'t, 'i>(&mut self, t: &Table<'t, 'i>, key: &str, header: &str) -> Vec<Table<'t, 'i>> {
        let Some(v) = lookup(t.table, key) else {
            return Vec::new();
        };
        let array = match v.get_ref() {
            DeValue::Array(a) => a,
            DeValue::Table(_) => {
                self.key_error(
                    t,
                    key,
                    v.span(),
                    format!("there can be several: write {header}, with double brackets"),
                );
                return Vec::new();
            }
            other => {
                self.key_error(
                    t,
                    key,
                    v.span(),
                    format!(
                        "must be tables, written {header} (got {})",
                        other.type_str()
                    ),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in array.iter() {
            match item.get_ref() {
                DeValue::Table(table) => out.push(Table {
                    table,
                    span: item.span(),
                    what: String::new(),
                }),
                other => self.key_error(
                    t,
                    key,
                    item.span(),
                    format!(
                        "must hold tables, written {header} (got {})",
                        other.type_str()
                    ),
                ),
            }
        }
        out
    }
}

type Entry<'t, 'i> = (
    &'t Spanned<std::borrow::Cow<'i, str>>,
    &'t Spanned<DeValue<'i>>,
);

/// A table's entries in file order (the parser keeps them sorted by name).
fn entries<'t, 'i>(t: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut all: Vec<Entry> = t.iter().collect();
    all.sort_by_key(|(k, _)| k.span().start);
    all
}

fn lookup<'t, 'i>(t: &'t DeTable<'i>, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
    t.iter()
        .find(|(k, _)| AsRef::<str>::as_ref(k.get_ref()) == key)
        .map(|(_, v)| v)
}

/// The known key nearest to a misspelt one (edit distance at most 2).
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> RulesFile {
        RulesFile {
            path: path.into(),
            text: text.into(),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        load(&[file("t.toml", text)])
            .expect_err("the file has errors")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const FULL: &str = r#"
[[namespace]]
name = "acme"

[[namespace.repository]]
name = "api"
summary = "The API"
category = "server"

[namespace.repository.source]
provider = "github"
clone_url = "https://github.com/acme/api.git"
webhook_secret_env = "ACME_API_SECRET"

[[namespace.repository.rule]]
type = "branch"
name = "main"

[[namespace.repository.rule]]
type = "tag"
name = "/^v(\\d+)\\.(\\d+)$/"
version = "{1}.{2}"
dockerfile = "./docker//Dockerfile"
context = "docker/"
overwrite = false

[[namespace.repository]]
name = "web"
hidden = true
"#;

    #[test]
    fn a_full_file_with_defaults() {
        let d = load(&[file("t.toml", FULL)]).unwrap();
        assert_eq!(d.namespaces.len(), 1);
        let ns = &d.namespaces[0];
        assert_eq!((ns.name.as_str(), ns.at.line), ("acme", 2));
        let api = &ns.repos[0];
        assert_eq!(api.summary, "The API");
        assert_eq!(api.category, "server");
        assert!(!api.hidden);
        assert_eq!(api.at.line, 5);
        let src = api.source.as_ref().unwrap();
        assert_eq!(src.webhook_secret_env.as_deref(), Some("ACME_API_SECRET"));
        let r = &api.rules[0];
        assert_eq!(
            (r.kind, r.dockerfile.as_str(), r.context.as_str()),
            (RefKind::Branch, "Dockerfile", ".")
        );
        assert_eq!(
            (r.version.as_str(), r.overwrite, r.enabled),
            ("", true, true)
        );
        let r = &api.rules[1];
        assert_eq!(r.dockerfile, "docker/Dockerfile");
        assert_eq!(r.context, "docker");
        assert_eq!(r.version, "{1}.{2}");
        assert!(!r.overwrite);
        let web = &ns.repos[1];
        assert_eq!((web.hidden, web.category.as_str()), (true, "other"));
        assert!(web.source.is_none() && web.rules.is_empty());
    }

    /// Issue 9: schedules and path filters are read and checked by the server's rules.
    #[test]
    fn rule_schedules_and_path_filters() {
        let head = "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n\
            [namespace.repository.source]\nprovider = \"github\"\nclone_url = \"https://github.com/acme/api.git\"\n";
        let good = format!(
            "{head}[[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\n\
             schedule = \"*/2 * * * * *\"\npaths = [\"src/**\", \"!src/**/*.md\"]\nignore_paths = [\"docs/**\"]\n"
        );
        let d = load(&[file("t.toml", &good)]).unwrap();
        let r = &d.namespaces[0].repos[0].rules[0];
        assert_eq!(r.schedule.as_deref(), Some("*/2 * * * * *"));
        assert_eq!(r.paths, vec!["src/**", "!src/**/*.md"]);
        assert_eq!(r.ignore_paths, vec!["docs/**"]);

        let bad = format!(
            "{head}[[namespace.repository.rule]]\ntype = \"tag\"\nname = \"v*\"\nschedule = \"0 3 * * *\"\n\
             [[namespace.repository.rule]]\ntype = \"branch\"\nname = \"dev\"\nschedule = \"61 * * * *\"\n\
             paths = [\"src/[a\"]\nignore_paths = \"docs\"\n"
        );
        let errors = errors(&bad);
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0]
                .contains("rule #1 of acme/api: schedule: only a branch rule with an exact name"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].contains(
                "rule #2 of acme/api: schedule: '61 * * * *' is not a valid cron expression"
            ),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].contains("rule #2 of acme/api: paths: 'src/[a' is not a valid glob"),
            "{}",
            errors[2]
        );
        assert!(
            errors[3].contains(
                "rule #2 of acme/api: ignore_paths: must be an array of strings (got string)"
            ),
            "{}",
            errors[3]
        );
    }

    #[test]
    fn every_error_is_listed_with_its_line_and_key() {
        let text = r#"[[namespace]]
name = "acme"
colour = "red"

[[namespace.repository]]
name = "Api"
summary = 5

[[namespace.repository]]
name = "web"
categry = "server"
hidden = "yes"

[namespace.repository.source]
provider = "svn"
clone_url = "relative/path"
webhook_secret = "hunter2"

[[namespace.repository.rule]]
type = "branch"
dockerfile = "../Dockerfile"

[[namespace.repository.rule]]
type = "commit"
name = "main"
version = "{3}"

[[namespace.repository.webhook]]
name = "ci"
url = "ftp://hooks.example.com/x"
events = ["image.pushed", "image.deleted"]
payload_format = "xml"
secret = "whsec_AAAA"
tag_filter = "/(/"

[[namespace.repository.webhook]]
name = "ci"
url = "https://hooks.example.com/y"
"#;
        let cases: &[(&str, &str)] = &[
            ("t.toml:3:1", "namespace \"acme\": colour: unknown key"),
            (
                "t.toml:6:8",
                "repository #1 of namespace \"acme\": name: must not contain uppercase 'A'",
            ),
            ("t.toml:7:11", "summary: must be a string (got integer)"),
            (
                "t.toml:11:1",
                "repository \"acme/web\": categry: unknown key (did you mean \"category\"?)",
            ),
            ("t.toml:12:10", "hidden: must be true or false (got string)"),
            (
                "t.toml:15:12",
                "source of acme/web: provider: must be one of github, gitlab, gitea, git",
            ),
            ("t.toml:16:13", "clone_url: must be a URL"),
            (
                "t.toml:17:1",
                "webhook_secret: secrets never go in a rules file",
            ),
            (
                "t.toml:19:1",
                "rule #1 of acme/web: the required key \"name\" is missing",
            ),
            (
                "t.toml:21:14",
                "rule #1 of acme/web: dockerfile: must stay inside the repository",
            ),
            (
                "t.toml:24:8",
                "rule #2 of acme/web: type: must be 'branch' or 'tag'",
            ),
            ("t.toml:26:11", "rule #2 of acme/web: version: "),
            (
                "t.toml:30:7",
                "webhook \"ci\" of acme/web: url: must be an http:// or https:// URL with a host",
            ),
            (
                "t.toml:31:27",
                "webhook \"ci\" of acme/web: events: unknown event \"image.deleted\": use image.pushed, build.started, build.succeeded, build.failed",
            ),
            (
                "t.toml:32:18",
                "webhook \"ci\" of acme/web: payload_format: must be one of kiln, cloudevents (got \"xml\")",
            ),
            (
                "t.toml:33:1",
                "webhook \"ci\" of acme/web: secret: secrets never go in a rules file",
            ),
            ("t.toml:34:14", "webhook \"ci\" of acme/web: tag_filter: "),
            (
                "t.toml:36:1",
                "webhook #2 of acme/web: a webhook named \"ci\" is already defined at line 28",
            ),
        ];
        let got = errors(text);
        for (at, text) in cases {
            assert!(
                got.iter().any(|e| e.starts_with(at) && e.contains(text)),
                "no error at {at} containing {text:?} in:\n{}",
                got.join("\n")
            );
        }
        assert_eq!(got.len(), cases.len(), "{}", got.join("\n"));
    }

    #[test]
    fn rule_build_settings_are_read_and_checked_like_the_server() {
        let head = "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n\
                    [namespace.repository.source]\nprovider = \"github\"\nclone_url = \"https://x.example/a.git\"\n";
        let good = format!(
            "{head}[[namespace.repository.rule]]\ntype = \"tag\"\nname = '/^v(\\d+)\\.(\\d+)$/'\n\
             build_args = {{ GREETING = \"hello\", EMPTY = \"\" }}\ntarget = \"build\"\nno_cache = true\n\
             extra_tags = [\"latest\", \"{{1}}\", \"{{1}}.{{2}}\"]\ntimeout_minutes = 1_0\n\
             [[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\n"
        );
        let d = load(&[file("t.toml", &good)]).unwrap_or_else(|e| panic!("{e:?}"));
        let rules = &d.namespaces[0].repos[0].rules;
        let s = &rules[0].settings;
        assert_eq!(
            s.build_args
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            vec![("EMPTY", ""), ("GREETING", "hello")]
        );
        assert_eq!(s.target, "build");
        assert!(s.no_cache);
        assert_eq!(s.extra_tags, vec!["latest", "{1}", "{1}.{2}"]);
        assert_eq!(s.timeout_minutes, Some(10));
        assert_eq!(rules[1].settings, BuildSettings::default(), "defaults");

        let bad = format!(
            "{head}[[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\n\
             build_args = {{ KILN_COMMIT = \"x\", PORT = 8080, \"A-B\" = \"y\" }}\n\
             target = \"-x\"\nno_cache = \"yes\"\nextra_tags = [\"ok\", \"{{1}}\"]\ntimeout_minutes = 0\n\
             [[namespace.repository.rule]]\ntype = \"branch\"\nname = \"dev\"\n\
             build_args = \"A=B\"\nextra_tags = \"latest\"\ntimeout_minutes = 1.5\n"
        );
        let got = errors(&bad);
        let cases: &[(&str, &str)] = &[
            (
                "t.toml:11:16",
                "rule #1 of acme/api: build_args.KILN_COMMIT: KILN_COMMIT is set by kiln",
            ),
            (
                "t.toml:11:35",
                "rule #1 of acme/api: build_args.PORT: must be a string (got integer)",
            ),
            (
                "t.toml:11:48",
                "rule #1 of acme/api: build_args.A-B: 'A-B' is not a build argument name",
            ),
            (
                "t.toml:12:10",
                "rule #1 of acme/api: target: must be a stage name",
            ),
            (
                "t.toml:13:12",
                "rule #1 of acme/api: no_cache: must be true or false (got string)",
            ),
            (
                "t.toml:14:21",
                "rule #1 of acme/api: extra_tags[1]: {1} refers to capture group 1",
            ),
            (
                "t.toml:15:19",
                "rule #1 of acme/api: timeout_minutes: must be a whole number of minutes from 1 to 1440 (got 0)",
            ),
            (
                "t.toml:19:14",
                "rule #2 of acme/api: build_args: must be a table",
            ),
            (
                "t.toml:20:14",
                "rule #2 of acme/api: extra_tags: must be an array of strings (got string)",
            ),
            (
                "t.toml:21:19",
                "rule #2 of acme/api: timeout_minutes: must be a whole number of minutes from 1 to 1440 (got float)",
            ),
        ];
        for (at, text) in cases {
            assert!(
                got.iter().any(|e| e.starts_with(at) && e.contains(text)),
                "no error at {at} containing {text:?} in:\n{}",
                got.join("\n")
            );
        }
        assert_eq!(got.len(), cases.len(), "{}", got.join("\n"));
    }

    #[test]
    fn missing_and_misplaced_things() {
        let cases: &[(&str, &str)] = &[
            (
                "[[namespace]]\n",
                "t.toml:1:1: namespace #1: the required key \"name\" is missing",
            ),
            (
                "[namespace]\nname = \"a\"\n",
                "namespace: there can be several: write [[namespace]]",
            ),
            (
                "namespace = 3\n",
                "namespace: must be tables, written [[namespace]] (got integer)",
            ),
            (
                "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n[[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\n",
                "t.toml:5:1: repository \"acme/api\": build rules need a git source",
            ),
            (
                "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\nsource = \"x\"\n",
                "source: must be a table, written [namespace.repository.source] (got string)",
            ),
            (
                "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n[namespace.repository.source]\nprovider = \"github\"\nclone_url = \"https://x/y\"\nwebhook_secret_env = \"s3cr3t value\"\n",
                "webhook_secret_env: must be the name of an environment variable",
            ),
            (
                "name = \"x\"\n[[namespace]\n",
                "t.toml:2:13: TOML syntax: unclosed array table",
            ),
            ("a = 1\na = 2\n", "t.toml:2:1: TOML syntax: duplicate key"),
            (
                "nmespace = []\n",
                "the file: nmespace: unknown key (did you mean \"namespace\"?)",
            ),
        ];
        for (text, want) in cases {
            let got = errors(text);
            assert!(
                got.iter().any(|e| e.contains(want)),
                "{text:?}: no error containing {want:?} in {got:#?}"
            );
        }
    }

    #[test]
    fn duplicates_within_and_across_files() {
        let dup_rule = "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n\
            [namespace.repository.source]\nprovider = \"github\"\nclone_url = \"https://x/y\"\n\
            [[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\n\
            [[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\ndockerfile = \"./Dockerfile\"\nversion = \"x\"\n";
        let got = errors(dup_rule);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("t.toml:11:1: rule #2 of acme/api: the same rule (branch main (Dockerfile in .)) is already defined at line 8"), "{got:?}");

        let dup_repo = "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n[[namespace.repository]]\nname = \"api\"\n";
        let got = errors(dup_repo);
        assert!(
            got[0].starts_with(
                "t.toml:5:1: repository \"acme/api\" is defined twice: here and at t.toml:3:1"
            ),
            "{got:?}"
        );

        let dup_ns = "[[namespace]]\nname = \"acme\"\n[[namespace]]\nname = \"acme\"\n";
        let got = errors(dup_ns);
        assert!(
            got[0].contains("namespace \"acme\" is defined twice in this file (first at line 1)"),
            "{got:?}"
        );

        // Across files a namespace merges; a repository defined in both conflicts.
        let a = file(
            "a.toml",
            "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n",
        );
        let b = file(
            "b.toml",
            "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"web\"\n[[namespace]]\nname = \"other\"\n",
        );
        let d = load(&[a.clone(), b]).unwrap();
        let names: Vec<(&str, Vec<&str>)> = d
            .namespaces
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.repos.iter().map(|r| r.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(names, vec![("acme", vec!["api", "web"]), ("other", vec![])]);
        let c = file(
            "c.toml",
            "\n[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\nsummary = \"x\"\n",
        );
        let got: Vec<String> = load(&[a, c])
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            vec!["c.toml:4:1: repository \"acme/api\" is defined twice: here and at a.toml:3:1"]
        );
    }

    #[test]
    fn inline_tables_and_empty_files() {
        let d = load(&[file("t.toml", "")]).unwrap();
        assert!(d.namespaces.is_empty());
        let d = load(&[file(
            "t.toml",
            "namespace = [{ name = \"acme\", repository = [{ name = \"api\", source = { provider = \"gitea\", clone_url = \"/srv/git/api.git\" }, rule = [{ type = \"tag\", name = \"v*\" }] }] }]\n",
        )])
        .unwrap();
        let repo = &d.namespaces[0].repos[0];
        assert_eq!(repo.source.as_ref().unwrap().provider, "gitea");
        assert_eq!(repo.rules[0].name, "v*");
    }

    #[test]
    fn the_examples_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/examples");
        let mut files: Vec<RulesFile> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                file(
                    &p.display().to_string(),
                    &std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        assert!(files.len() >= 4, "{files:?}");
        for f in &files {
            if let Err(errors) = load(std::slice::from_ref(f)) {
                panic!(
                    "{}:\n{}",
                    f.path,
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
        // ci.toml and regex.toml both declare acme (they merge); push-only.toml and schedules.toml too.
        let d = load(&files).unwrap();
        let acme = d.namespaces.iter().find(|n| n.name == "acme").unwrap();
        let mut repos: Vec<&str> = acme.repos.iter().map(|r| r.name.as_str()).collect();
        repos.sort();
        assert_eq!(repos, vec!["api", "cli", "postgres", "worker"]);
    }

    #[test]
    fn webhooks_with_their_defaults() {
        let d = load(&[file(
            "t.toml",
            "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n\
             [[namespace.repository.webhook]]\nname = \"plain\"\nurl = \"http://ci.internal:8080/kiln\"\n\
             [[namespace.repository.webhook]]\nname = \"all\"\nurl = \"https://x.example.com/\"\n\
             events = [\"build.failed\", \"image.pushed\", \"build.failed\"]\ntag_filter = \"v*\"\n\
             payload_format = \"cloudevents\"\nactive = false\nsecret_env = \"ALL_SECRET\"\n\
             [[namespace.repository.webhook]]\nname = \"unfiltered\"\nurl = \"https://y.example.com/\"\ntag_filter = \"\"\n",
        )])
        .unwrap();
        let hooks = &d.namespaces[0].repos[0].webhooks;
        let plain = &hooks[0];
        assert_eq!(plain.events, vec!["image.pushed"]);
        assert_eq!(plain.tag_filter, None);
        assert_eq!(plain.payload_format, "kiln");
        assert!(plain.active);
        assert_eq!(plain.secret_env, None);
        assert_eq!(plain.at.line, 5);
        let all = &hooks[1];
        assert_eq!(all.events, vec!["build.failed", "image.pushed"], "a set");
        assert_eq!(all.tag_filter.as_deref(), Some("v*"));
        assert_eq!(
            (all.payload_format.as_str(), all.active),
            ("cloudevents", false)
        );
        assert_eq!(all.secret_env.as_deref(), Some("ALL_SECRET"));
        assert_eq!(hooks[2].tag_filter, None, "\"\" is no filter");

        let base = "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n\
                    [[namespace.repository.webhook]]\n";
        let cases: &[(&str, &str)] = &[
            (
                "name = \"x\"\n",
                "webhook \"x\" of acme/api: the required key \"url\" is missing",
            ),
            (
                "url = \"https://x/\"\n",
                "webhook #1 of acme/api: the required key \"name\" is missing",
            ),
            (
                "name = \" x\"\nurl = \"https://x/\"\n",
                "name: must not start or end with spaces",
            ),
            ("name = \"x\"\nurl = \"not a url\"\n", "url: must be a URL"),
            (
                "name = \"x\"\nurl = \"https://x/\"\nevents = []\n",
                "events: must name at least one event",
            ),
            (
                "name = \"x\"\nurl = \"https://x/\"\nevents = \"image.pushed\"\n",
                "events: must be an array of strings (got string)",
            ),
            (
                "name = \"x\"\nurl = \"https://x/\"\nevents = [1]\n",
                "events: must hold strings (got integer)",
            ),
            (
                "name = \"x\"\nurl = \"https://x/\"\nactive = \"yes\"\n",
                "active: must be true or false",
            ),
            (
                "name = \"x\"\nurl = \"https://x/\"\nsecret_env = \"whsec_abc=\"\n",
                "secret_env: must be the name of an environment variable",
            ),
            (
                "name = \"x\"\nurl = \"https://x/\"\nevent = []\n",
                "event: unknown key (did you mean \"events\"?)",
            ),
            (
                "name = \"x\"\nurl = \"https://x/\"\nwebhook_secret = \"s\"\n",
                "webhook_secret: secrets never go in a rules file",
            ),
        ];
        for (text, want) in cases {
            let got = errors(&format!("{base}{text}"));
            assert!(
                got.iter().any(|e| e.contains(want)),
                "{text:?}: no error containing {want:?} in {got:#?}"
            );
        }
    }

    #[test]
    fn clone_url_credentials_never_go_in_a_file() {
        let base = "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n\
                    [namespace.repository.source]\nprovider = \"github\"\n";
        for (text, want) in [
            (
                "clone_url = \"https://bot:s3cr3t-tok@github.com/acme/api.git\"\n",
                "source of acme/api: clone_url: credentials never go in a rules file",
            ),
            (
                "clone_url = \"https://s3cr3t-tok@github.com/acme/api.git\"\n",
                "clone_url: credentials never go in a rules file",
            ),
            (
                "clone_url = \"https://github.com/acme/api.git\"\ntoken = \"s3cr3t-tok\"\n",
                "token: credentials never go in a rules file",
            ),
            (
                "clone_url = \"https://github.com/acme/api.git\"\ncredentials_env = \"bot:s3cr3t-tok\"\n",
                "credentials_env: must be the name of an environment variable",
            ),
            (
                "clone_url = \"/srv/git/api.git\"\ncredentials_env = \"API_GIT\"\n",
                "credentials_env: a local repository takes no credentials",
            ),
            (
                "clone_url = \"git@github.com:acme/api.git\"\n",
                "clone_url: ssh URLs are not supported",
            ),
        ] {
            let got = errors(&format!("{base}{text}"));
            assert!(
                got.iter().any(|e| e.contains(want)),
                "{text:?}: no error containing {want:?} in {got:#?}"
            );
            assert!(!got.iter().any(|e| e.contains("s3cr3t")), "{got:#?}");
        }
        let file = format!(
            "{base}clone_url = \"https://github.com/acme/api.git\"\ncredentials_env = \"API_GIT\"\n"
        );
        let d = load(&[RulesFile {
            path: "t.toml".into(),
            text: file,
        }])
        .unwrap();
        let source = d.namespaces[0].repos[0].source.as_ref().unwrap();
        assert_eq!(source.credentials_env.as_deref(), Some("API_GIT"));
        assert_eq!(source.clone_url, "https://github.com/acme/api.git");
    }

    #[test]
    fn near_keys() {
        assert_eq!(closest("dockerfle", RULE_KEYS), Some("dockerfile"));
        assert_eq!(closest("verison", RULE_KEYS), Some("version"));
        assert_eq!(closest("colour", RULE_KEYS), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_X", "ACME_API_SECRET", "a1"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "has space", "é"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }
    #[test]
    fn a_rules_network_is_read_and_checked() {
        let head = "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n\
                    [namespace.repository.source]\nprovider = \"github\"\nclone_url = \"https://x.example/a.git\"\n";
        let good = format!(
            "{head}[[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\nnetwork = \"none\"\n\
             [[namespace.repository.rule]]\ntype = \"branch\"\nname = \"dev\"\nnetwork = \"default\"\n"
        );
        let d = load(&[file("t.toml", &good)]).unwrap_or_else(|e| panic!("{e:?}"));
        let rules = &d.namespaces[0].repos[0].rules;
        assert_eq!(rules[0].settings.network, RuleNetwork::None);
        assert_eq!(rules[1].settings.network, RuleNetwork::Default);

        let bad = format!(
            "{head}[[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\nnetwork = \"host\"\n\
             [[namespace.repository.rule]]\ntype = \"branch\"\nname = \"dev\"\nnetwork = false\n"
        );
        let got = errors(&bad).join("\n");
        assert!(
            got.contains("rule #1 of acme/api: network: must be \"default\" or \"none\": host networking is set for the whole server"),
            "{got}"
        );
        assert!(
            got.contains("rule #2 of acme/api: network: must be a string (got boolean)"),
            "{got}"
        );
    }
}
