//! The "add rule" / "edit rule" form: its fields as a person types them (multi-line lists,
//! `KEY=VALUE` build arguments, checkboxes), turned into the API's create and update bodies, so the
//! API's validation decides; and its errors put back next to the field they name.

use serde::{Deserialize, Serialize};

use crate::http::api::rules::{CreateRule, RuleView, UpdateRule};
use crate::http::console::error::api_text;
use crate::http::console::i18n::Lang;
use crate::http::error::{ApiError, ApiResult};

/// The form's fields, named like the API's. A checkbox is `Some` when ticked.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RuleForm {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub dockerfile: String,
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub version: String,
    pub overwrite: Option<String>,
    pub enabled: Option<String>,
    /// `KEY=VALUE`, one a line.
    #[serde(default)]
    pub build_args: String,
    #[serde(default)]
    pub target: String,
    pub no_cache: Option<String>,
    /// One tag template a line.
    #[serde(default)]
    pub extra_tags: String,
    /// Whole minutes; empty: the server's default.
    #[serde(default)]
    pub timeout_minutes: String,
    #[serde(default)]
    pub schedule: String,
    /// One glob a line.
    #[serde(default)]
    pub paths: String,
    #[serde(default)]
    pub ignore_paths: String,
    /// `default` or `none` (issue 11); empty: `default`.
    #[serde(default)]
    pub network: String,
}

/// Every field of the form (an error naming another field is shown on top of the form).
pub const FIELDS: &[&str] = crate::domain::rules::RULE_FIELDS;

const TICKED: &str = "on";

impl RuleForm {
    /// A new rule's form: a branch rule building `Dockerfile` at the repository's root, overwriting
    /// its tag, enabled.
    pub fn blank() -> RuleForm {
        RuleForm {
            kind: "branch".into(),
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
            overwrite: Some(TICKED.into()),
            enabled: Some(TICKED.into()),
            ..RuleForm::default()
        }
    }

    /// The form of an existing rule.
    pub fn of(rule: &RuleView) -> RuleForm {
        let tick = |b: bool| b.then(|| TICKED.to_string());
        RuleForm {
            kind: rule.kind.clone(),
            name: rule.name.clone(),
            dockerfile: rule.dockerfile.clone(),
            context: rule.context.clone(),
            version: rule.version.clone(),
            overwrite: tick(rule.overwrite),
            enabled: tick(rule.enabled),
            build_args: rule
                .build_args
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect(),
            target: rule.target.clone(),
            no_cache: tick(rule.no_cache),
            extra_tags: rule.extra_tags.iter().map(|t| format!("{t}\n")).collect(),
            timeout_minutes: rule
                .timeout_minutes
                .map(|m| m.to_string())
                .unwrap_or_default(),
            schedule: rule.schedule.clone().unwrap_or_default(),
            paths: rule.paths.iter().map(|p| format!("{p}\n")).collect(),
            ignore_paths: rule.ignore_paths.iter().map(|p| format!("{p}\n")).collect(),
            network: rule.network.as_str().to_string(),
        }
    }

    /// The API's create body: every field given.
    pub fn to_create(&self) -> ApiResult<CreateRule> {
        Ok(CreateRule {
            kind: self.kind.clone(),
            name: self.name.clone(),
            dockerfile: Some(self.dockerfile.clone()),
            context: Some(self.context.clone()),
            version: Some(self.version.clone()),
            overwrite: Some(self.overwrite.is_some()),
            enabled: Some(self.enabled.is_some()),
            build_args: Some(build_args(&self.build_args)?),
            target: Some(Some(self.target.trim().to_string())),
            no_cache: Some(Some(self.no_cache.is_some())),
            extra_tags: Some(Some(lines(&self.extra_tags))),
            timeout_minutes: Some(timeout(&self.timeout_minutes)?),
            schedule: Some(self.schedule.clone()),
            paths: Some(lines(&self.paths)),
            ignore_paths: Some(lines(&self.ignore_paths)),
            network: Some(Some(match self.network.trim() {
                "" => "default".to_string(),
                n => n.to_string(),
            })),
        })
    }

    /// The API's update body: every field given (the form shows them all).
    pub fn to_update(&self) -> ApiResult<UpdateRule> {
        let c = self.to_create()?;
        Ok(UpdateRule {
            kind: Some(c.kind),
            name: Some(c.name),
            dockerfile: c.dockerfile,
            context: c.context,
            version: c.version,
            overwrite: c.overwrite,
            enabled: c.enabled,
            build_args: c.build_args,
            target: c.target,
            no_cache: c.no_cache,
            extra_tags: c.extra_tags,
            timeout_minutes: c.timeout_minutes,
            schedule: Some(c.schedule),
            paths: c.paths,
            ignore_paths: c.ignore_paths,
            network: c.network,
        })
    }
}

/// The non-empty lines of a text area, trimmed.
pub fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `KEY=VALUE` lines as the API's `build_args` object (the API checks names and values). The value
/// is kept as typed, spaces included; a line without `=` or a name given twice is an error.
pub fn build_args(text: &str) -> ApiResult<serde_json::Value> {
    let mut args = serde_json::Map::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(ApiError::invalid(
                "build_args",
                "invalid_line",
                format!(
                    "line {}: write NAME=VALUE, one build argument a line",
                    n + 1
                ),
            ));
        };
        let name = name.trim();
        if args
            .insert(name.to_string(), serde_json::Value::String(value.into()))
            .is_some()
        {
            return Err(ApiError::invalid(
                "build_args",
                "duplicate",
                format!("line {}: {name} is set twice", n + 1),
            ));
        }
    }
    Ok(serde_json::Value::Object(args))
}

/// Whole minutes, or the server's default when empty (the API checks the range).
fn timeout(text: &str) -> ApiResult<Option<i64>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ApiError::invalid(
            "timeout_minutes",
            "invalid_number",
            "timeout_minutes must be a whole number of minutes",
        )
    })
}

/// An API error as `{field: sentence}` for a form with `fields`: a part of a field
/// (`build_args.PORT`, `extra_tags[1]`) is shown at the field, named; an error naming no field of
/// the form goes on top (`_`).
pub fn errors_for(lang: Lang, err: &ApiError, fields: &[&str]) -> serde_json::Value {
    let text = api_text(lang, err.code, &err.message);
    let field = err.field.as_deref().unwrap_or("_");
    let base = field.split(['.', '[']).next().unwrap_or(field);
    let (key, text) = if !fields.contains(&base) {
        ("_", text)
    } else if base != field {
        (base, format!("{field}: {text}"))
    } else {
        (base, text)
    };
    serde_json::json!({ key: text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_lines() {
        assert_eq!(
            build_args("A=1\r\n\nB = two words \nC=x=y\nD=").unwrap(),
            serde_json::json!({"A": "1", "B": " two words ", "C": "x=y", "D": ""})
        );
        let e = build_args("A=1\nnope").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("build_args"));
        assert!(e.message.contains("line 2"), "{}", e.message);
        let e = build_args("A=1\nA=2").unwrap_err();
        assert!(e.message.contains("A is set twice"), "{}", e.message);
    }

    #[test]
    fn lists_and_numbers() {
        assert_eq!(lines(" a \n\n b\r\n"), vec!["a", "b"]);
        assert_eq!(timeout(" ").unwrap(), None);
        assert_eq!(timeout("15").unwrap(), Some(15));
        assert_eq!(
            timeout("soon").unwrap_err().field.as_deref(),
            Some("timeout_minutes")
        );
    }

    #[test]
    fn errors_land_on_their_field() {
        let e = ApiError::invalid("build_args.PORT", "invalid_value", "bad");
        assert_eq!(
            errors_for(Lang::En, &e, FIELDS),
            serde_json::json!({"build_args": "build_args.PORT: bad"})
        );
        let e = ApiError::invalid("schedule", "invalid_schedule", "bad cron");
        assert_eq!(
            errors_for(Lang::En, &e, FIELDS),
            serde_json::json!({"schedule": "bad cron"})
        );
        let e = ApiError::conflict("no_source", "no source");
        assert_eq!(
            errors_for(Lang::En, &e, FIELDS),
            serde_json::json!({"_": "no source"})
        );
    }

    #[test]
    fn a_rule_reads_back_into_its_form() {
        let f = RuleForm {
            build_args: "A=1\n".into(),
            extra_tags: "latest\n".into(),
            timeout_minutes: "9".into(),
            ..RuleForm::blank()
        };
        let c = f.to_create().unwrap();
        assert_eq!(c.overwrite, Some(true));
        assert_eq!(c.no_cache, Some(Some(false)));
        assert_eq!(c.timeout_minutes, Some(Some(9)));
        assert_eq!(c.extra_tags, Some(Some(vec!["latest".to_string()])));
    }
    #[test]
    fn the_network_choice_goes_to_the_api_body() {
        let c = RuleForm::blank().to_create().unwrap();
        assert_eq!(c.network, Some(Some("default".to_string())));
        let f = RuleForm {
            network: "none".into(),
            ..RuleForm::blank()
        };
        assert_eq!(
            f.to_update().unwrap().network,
            Some(Some("none".to_string()))
        );
    }
}
