//! What each rule decided for a push (the preview and the recent events), ready for the page: the
//! rule's name next to its id, and the reason a rule did not build in the viewer's language.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::http::api::rules::{Preview, RuleView};
use crate::http::console::i18n::Lang;

/// One rule's decision.
#[derive(Debug, Serialize)]
pub struct Decision {
    pub rule_id: String,
    /// `type name` of the rule (`branch main`), or its id when the rule is gone.
    pub rule: String,
    pub builds: bool,
    pub tag: Option<String>,
    /// The full image reference (preview only).
    pub image: Option<String>,
    /// A version with this tag exists (preview only): the build would replace it.
    pub would_overwrite: bool,
    /// Why it does not build.
    pub reason: Option<String>,
    /// The build a path filter skipped (events only).
    pub build_id: Option<String>,
}

/// The rules by id, as `type name` labels.
pub fn labels(lang: Lang, rules: &[RuleView]) -> HashMap<String, String> {
    rules
        .iter()
        .map(|r| {
            let kind = lang.text(&format!("rules.kind_{}", r.kind));
            (r.id.clone(), format!("{kind} {}", r.name))
        })
        .collect()
}

/// The decisions of a plan as stored (`[{rule_id, matched, tag, skipped}]`).
pub fn from_plan(lang: Lang, plan: &Value, labels: &HashMap<String, String>) -> Vec<Decision> {
    plan.as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|d| {
            let rule_id = d["rule_id"].as_str().unwrap_or_default().to_string();
            let skipped = &d["skipped"];
            Decision {
                rule: labels.get(&rule_id).cloned().unwrap_or(rule_id.clone()),
                builds: skipped.is_null() && d["matched"].as_bool().unwrap_or(false),
                tag: d["tag"].as_str().map(str::to_string),
                image: None,
                would_overwrite: false,
                reason: (!skipped.is_null()).then(|| reason(lang, skipped, labels)),
                build_id: skipped["build_id"].as_str().map(str::to_string),
                rule_id,
            }
        })
        .collect()
}

/// The preview's decisions, with the image and "would overwrite" of each build.
pub fn from_preview(
    lang: Lang,
    preview: &Preview,
    labels: &HashMap<String, String>,
) -> Vec<Decision> {
    let mut out = from_plan(lang, &preview.rules, labels);
    for d in &mut out {
        if let Some(b) = preview.builds.iter().find(|b| b.rule_id == d.rule_id) {
            d.builds = true;
            d.tag = Some(b.tag.clone());
            d.image = Some(b.image.clone());
            d.would_overwrite = b.would_overwrite;
        }
    }
    out
}

/// A skip reason (`{"reason": …, …, "message": …}`) for a reader of `lang`: English keeps kiln's own
/// sentence; another language fills the catalogue's `rules.reason.{reason}` with the reason's facts.
pub fn reason(lang: Lang, skipped: &Value, labels: &HashMap<String, String>) -> String {
    let message = skipped["message"].as_str().unwrap_or_default().to_string();
    let code = skipped["reason"].as_str().unwrap_or_default();
    if lang == Lang::En || code.is_empty() {
        return message;
    }
    let Some(mut text) = lang.lookup(&format!("rules.reason.{code}")) else {
        return message;
    };
    let fact = |name: &str| -> String {
        let v = skipped[name].as_str().unwrap_or_default();
        match name {
            "rule" | "pushed" => lang.text(&format!("rules.kind_{v}")),
            "rule_id" => labels.get(v).cloned().unwrap_or_else(|| v.to_string()),
            _ => v.to_string(),
        }
    };
    for name in ["rule", "pushed", "pattern", "name", "marker", "rule_id"] {
        let slot = format!("{{{name}}}");
        if text.contains(&slot) {
            text = text.replace(&slot, &fact(name));
        }
    }
    text.replace("{message}", &message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reasons_in_both_languages() {
        let labels = HashMap::from([("r1".to_string(), "branch main".to_string())]);
        let skipped = json!({"reason": "name_mismatch", "pattern": "v*", "name": "main",
            "message": "'main' does not match 'v*'"});
        assert_eq!(
            reason(Lang::En, &skipped, &labels),
            "'main' does not match 'v*'"
        );
        let zh = reason(Lang::ZhCn, &skipped, &labels);
        assert!(zh.contains("main") && zh.contains("v*"), "{zh}");
        assert!(!zh.contains('{'), "{zh}");
        let same = json!({"reason": "same_tag_as", "rule_id": "r1", "message": "m"});
        assert!(reason(Lang::ZhCn, &same, &labels).contains("main"));
        let unknown = json!({"reason": "new_reason", "message": "as is"});
        assert_eq!(reason(Lang::ZhCn, &unknown, &labels), "as is");
    }

    #[test]
    fn decisions_of_a_plan() {
        let labels = HashMap::from([("r1".to_string(), "branch main".to_string())]);
        let plan = json!([
            {"rule_id": "r1", "matched": true, "tag": "main", "skipped": null},
            {"rule_id": "gone", "matched": false, "tag": null,
             "skipped": {"reason": "rule_disabled", "message": "the rule is disabled"}},
        ]);
        let d = from_plan(Lang::En, &plan, &labels);
        assert!(d[0].builds);
        assert_eq!(d[0].rule, "branch main");
        assert_eq!(d[0].tag.as_deref(), Some("main"));
        assert!(!d[1].builds);
        assert_eq!(d[1].rule, "gone");
        assert_eq!(d[1].reason.as_deref(), Some("the rule is disabled"));
    }
}
