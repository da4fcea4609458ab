//! What a notification says: kiln's own JSON (api.md) or CloudEvents 1.0 structured mode. Pure.

use serde_json::{Value, json};

use crate::domain::pattern::RefPattern;

pub const EVENTS: &[&str] = &[
    "image.pushed",
    "build.started",
    "build.succeeded",
    "build.failed",
];
pub const FORMATS: &[&str] = &["kiln", "cloudevents"];

/// A rendered message body and its content type.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub content_type: &'static str,
    pub body: String,
}

/// Renders `data` (whose `event` field names the event) for a subscription's `format`.
/// `source` is the repository's URL in kiln, `subject` the tag or build id it is about.
pub fn render(
    format: &str,
    message_id: &str,
    data: &Value,
    source: &str,
    subject: &str,
    time: &str,
) -> Rendered {
    match format {
        "cloudevents" => Rendered {
            content_type: "application/cloudevents+json",
            body: json!({
                "specversion": "1.0",
                "id": message_id,
                "source": source,
                "type": format!("io.kiln.{}", data["event"].as_str().unwrap_or("unknown")),
                "subject": subject,
                "time": time,
                "datacontenttype": "application/json",
                "data": data,
            })
            .to_string(),
        },
        _ => Rendered {
            content_type: "application/json",
            body: data.to_string(),
        },
    }
}

/// Does a subscription want this event for this tag? (`tag` is None when not known yet: a filter then
/// lets it through only if there is none.)
pub fn wants(events: &[String], tag_filter: Option<&str>, event: &str, tag: Option<&str>) -> bool {
    if event != "test" && !events.iter().any(|e| e == event) {
        return false;
    }
    match (tag_filter, tag) {
        (None, _) => true,
        (Some(_), None) => event == "test",
        (Some(f), Some(t)) => RefPattern::parse(f).is_ok_and(|p| p.matches(t).is_some()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn filters() {
        let pushed = ev(&["image.pushed"]);
        assert!(wants(&pushed, None, "image.pushed", Some("main")));
        assert!(!wants(&pushed, None, "build.failed", Some("main")));
        assert!(wants(&pushed, Some("v*"), "image.pushed", Some("v1.2")));
        assert!(!wants(&pushed, Some("v*"), "image.pushed", Some("main")));
        assert!(wants(
            &pushed,
            Some("/^v\\d+$/"),
            "image.pushed",
            Some("v12")
        ));
        assert!(!wants(
            &pushed,
            Some("/^v\\d+$/"),
            "image.pushed",
            Some("v1.2")
        ));
        assert!(!wants(&pushed, Some("v*"), "image.pushed", None));
        assert!(
            wants(&ev(&[]), Some("v*"), "test", None),
            "a test goes to every subscription"
        );
        let all = ev(EVENTS);
        for e in EVENTS {
            assert!(wants(&all, None, e, Some("x")));
        }
    }

    #[test]
    fn kiln_and_cloudevents_bodies() {
        let data = json!({"event": "image.pushed", "tag": "v1", "digest": "sha256:ab"});
        let k = render(
            "kiln",
            "msg_1",
            &data,
            "http://kiln/acme/api",
            "v1",
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(k.content_type, "application/json");
        assert_eq!(serde_json::from_str::<Value>(&k.body).unwrap(), data);
        let c = render(
            "cloudevents",
            "msg_1",
            &data,
            "http://kiln/acme/api",
            "v1",
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(c.content_type, "application/cloudevents+json");
        let v: Value = serde_json::from_str(&c.body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "msg_1");
        assert_eq!(v["type"], "io.kiln.image.pushed");
        assert_eq!(v["source"], "http://kiln/acme/api");
        assert_eq!(v["subject"], "v1");
        assert_eq!(v["time"], "2026-01-01T00:00:00Z");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"], data);
    }
}
