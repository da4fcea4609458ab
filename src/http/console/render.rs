//! Rendering console pages: one `Tera` with every template under `templates/` (compiled in), the
//! filters the pages share, and the context every page gets (`t`, `lang`, `langs`, `csrf`, `viewer`).

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};
use tera::{Context, Tera};

use super::files::TEMPLATES;
use super::i18n::Lang;
use super::session::Viewer;

static TERA: LazyLock<Tera> = LazyLock::new(|| {
    let mut tera = Tera::default();
    let html: Vec<(&str, &str)> = TEMPLATES
        .iter()
        .filter(|(name, _)| name.ends_with(".html"))
        .copied()
        .collect();
    tera.add_raw_templates(html)
        .unwrap_or_else(|e| panic!("console templates do not compile: {e:?}"));
    tera.register_filter("time", time_filter);
    tera.register_filter("short_digest", short_digest_filter);
    tera.register_filter("bytes", bytes_filter);
    tera.register_filter("ms", ms_filter);
    tera.register_filter("urlencode", urlencode_filter);
    tera
});

/// A page for a signed-in viewer, 200.
pub fn page(viewer: &Viewer, template: &str, ctx: Context) -> Response {
    page_with_status(viewer, template, ctx, StatusCode::OK)
}

pub fn page_with_status(
    viewer: &Viewer,
    template: &str,
    mut ctx: Context,
    status: StatusCode,
) -> Response {
    ctx.insert("csrf", &viewer.csrf);
    ctx.insert(
        "viewer",
        &json!({
            "namespace": viewer.caller.namespace,
            "role": viewer.caller.role.as_str(),
            "role_label": viewer.lang.text(&format!("common.role_{}", viewer.caller.role.as_str())),
            "admin": viewer.caller.namespace.is_none() && viewer.caller.role == crate::http::auth::Role::Admin,
        }),
    );
    guest_page(viewer.lang, &viewer.uri, template, ctx, status)
}

/// A page for anyone (sign-in, errors): no viewer, no CSRF token.
pub fn guest_page(
    lang: Lang,
    uri: &str,
    template: &str,
    mut ctx: Context,
    status: StatusCode,
) -> Response {
    ctx.insert("t", lang.messages());
    ctx.insert("lang", lang.code());
    ctx.insert("uri", uri);
    ctx.insert(
        "langs",
        &Lang::ALL
            .iter()
            .map(|l| json!({"code": l.code(), "name": l.text("common.language_name"), "href": with_query(uri, "lang", l.code()), "current": *l == lang}))
            .collect::<Vec<_>>(),
    );
    if let Some(key) = query_value(uri, "flash")
        && let Some(text) = lang.lookup(&format!("flash.{key}"))
    {
        ctx.insert("flash", &text);
    }
    match TERA.render(template, &ctx) {
        Ok(body) => {
            let mut response = (status, Html(body)).into_response();
            let h = response.headers_mut();
            h.insert(header::CACHE_CONTROL, "no-store".parse().expect("header"));
            h.insert(
                header::CONTENT_LANGUAGE,
                lang.code().parse().expect("header"),
            );
            response
        }
        Err(e) => {
            let mut chain = format!("{e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push_str(&format!(": {s}"));
                source = s.source();
            }
            tracing::error!(template, error = %chain, "cannot render console page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the server log",
            )
                .into_response()
        }
    }
}

/// The value of `key` in `uri`'s query.
pub fn query_value(uri: &str, key: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// `uri` with `key=value` in its query, replacing any `key` there, and without a `flash`.
pub fn with_query(uri: &str, key: &str, value: &str) -> String {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != key && k != "flash" {
            out.append_pair(&k, &v);
        }
    }
    out.append_pair(key, value);
    format!("{path}?{}", out.finish())
}

/// `2026-11-27T21:15:28.123456Z` → `2026-11-27 21:15:28` (UTC; the page's script shows local time).
fn time_filter(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let Some(s) = v.as_str() else {
        return Ok(Value::String(String::new()));
    };
    Ok(Value::String(
        match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => t
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
            Err(_) => s.to_string(),
        },
    ))
}

/// A query-string value, percent-encoded (`a b/c` → `a+b%2Fc`).
fn urlencode_filter(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    Ok(Value::String(
        form_urlencoded::byte_serialize(s.as_bytes()).collect(),
    ))
}

/// `sha256:0123456789abcdef…` → `0123456789ab`.
fn short_digest_filter(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let s = v.as_str().unwrap_or("");
    let hex = s.split_once(':').map_or(s, |(_, h)| h);
    Ok(Value::String(hex.chars().take(12).collect()))
}

/// A byte count as `1.5 MB` (powers of 1000, like the registry UIs users know).
fn bytes_filter(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let Some(n) = v.as_f64() else {
        return Ok(Value::String(String::new()));
    };
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut n = n;
    let mut unit = 0;
    while n >= 1000.0 && unit + 1 < units.len() {
        n /= 1000.0;
        unit += 1;
    }
    Ok(Value::String(if unit == 0 {
        format!("{n:.0} {}", units[unit])
    } else {
        format!("{n:.1} {}", units[unit])
    }))
}

/// Milliseconds as `850 ms`, `12.3 s`, `4 min 05 s`.
fn ms_filter(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let Some(ms) = v.as_f64() else {
        return Ok(Value::String(String::new()));
    };
    Ok(Value::String(if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        format!("{} min {:02} s", s / 60, s % 60)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(filter: fn(&Value, &HashMap<String, Value>) -> tera::Result<Value>, v: Value) -> String {
        filter(&v, &HashMap::new())
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn every_template_compiles() {
        assert!(TERA.get_template_names().count() >= 3);
    }

    #[test]
    fn filters() {
        assert_eq!(
            f(time_filter, json!("2026-11-27T21:15:28.123456Z")),
            "2026-11-27 21:15:28"
        );
        assert_eq!(f(time_filter, json!("not a time")), "not a time");
        assert_eq!(f(time_filter, json!(null)), "");
        assert_eq!(
            f(short_digest_filter, json!("sha256:0123456789abcdef")),
            "0123456789ab"
        );
        assert_eq!(f(bytes_filter, json!(999)), "999 B");
        assert_eq!(f(bytes_filter, json!(1_500_000)), "1.5 MB");
        assert_eq!(f(ms_filter, json!(850)), "850 ms");
        assert_eq!(f(urlencode_filter, json!("a b/c&d")), "a+b%2Fc%26d");
        assert_eq!(f(ms_filter, json!(12_345)), "12.3 s");
        assert_eq!(f(ms_filter, json!(245_000)), "4 min 05 s");
    }

    #[test]
    fn query_editing() {
        assert_eq!(
            with_query("/a?x=1&lang=en&flash=saved", "lang", "zh-CN"),
            "/a?x=1&lang=zh-CN"
        );
        assert_eq!(with_query("/a", "lang", "en"), "/a?lang=en");
        assert_eq!(
            query_value("/a?flash=saved", "flash").as_deref(),
            Some("saved")
        );
        assert_eq!(query_value("/a", "flash"), None);
    }

    /// Text a person could read, written in a template instead of taken from the catalogue: text
    /// between tags, and `aria-label`, `title`, `placeholder`, `alt` values, holding a letter.
    fn literals(template: &str) -> Vec<String> {
        let expr = regex::Regex::new(r"(?s)\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}").unwrap();
        let text = expr.replace_all(template, "");
        let blocks = regex::Regex::new(r"(?is)<script.*?</script>|<style.*?</style>").unwrap();
        let text = blocks.replace_all(&text, "");
        let entity = regex::Regex::new(r"&[a-zA-Z]+;|&#x?[0-9a-fA-F]+;").unwrap();
        let text = entity.replace_all(&text, "");
        let letter = regex::Regex::new(r"\p{L}").unwrap();
        let mut found = Vec::new();
        let tag = regex::Regex::new(r"(?s)<[^>]*>").unwrap();
        let attr = regex::Regex::new(r#"(?i)\b(aria-label|title|placeholder|alt)\s*=\s*"([^"]*)""#)
            .unwrap();
        for m in tag.find_iter(&text) {
            for c in attr.captures_iter(m.as_str()) {
                if letter.is_match(&c[2]) {
                    found.push(format!("{}=\"{}\"", &c[1], &c[2]));
                }
            }
        }
        for piece in tag.split(&text) {
            if letter.is_match(piece) {
                found.push(piece.trim().to_string());
            }
        }
        found
    }

    #[test]
    fn templates_take_every_word_from_the_catalogue() {
        assert_eq!(literals("<p>{{ t.a.b }}</p>"), Vec::<String>::new());
        assert_eq!(literals("<p>Hello</p>"), vec!["Hello"]);
        assert_eq!(literals(r#"<a title="Hi">x</a>"#).len(), 2);
        for (name, text) in TEMPLATES.iter().filter(|(n, _)| n.ends_with(".html")) {
            let found = literals(text);
            assert!(
                found.is_empty(),
                "{name} has text outside the catalogue: {found:?}"
            );
        }
    }
}
