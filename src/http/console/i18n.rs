//! The console's languages and message catalogues: `locales/{lang}/{area}.toml`, compiled in. A
//! template reads `t.{area}.{key}`; both languages must have exactly the same keys (tested).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::HeaderMap;
use serde_json::Value;

use super::files::LOCALES;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Lang {
    #[default]
    En,
    ZhCn,
}

/// The cookie that remembers a language picked with `?lang=`.
pub const LANG_COOKIE: &str = "kiln_lang";

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::ZhCn];

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    /// `en`, `zh-CN` (any case, `_` for `-`, and the bare `zh`).
    pub fn parse(s: &str) -> Option<Lang> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        match s.as_str() {
            "en" => Some(Lang::En),
            "zh-cn" | "zh" | "zh-hans" | "zh-hans-cn" => Some(Lang::ZhCn),
            _ => None,
        }
    }

    /// The best language of an `Accept-Language` header: the highest `q` among the ones kiln has
    /// (`en-*` counts as English, `zh`, `zh-CN`, `zh-Hans*` and `zh-SG` as Simplified Chinese).
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let mut best: Option<(f32, Lang)> = None;
        for part in header.split(',') {
            let mut bits = part.split(';');
            let tag = bits.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = bits
                .find_map(|b| b.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok());
            let Some(q) = q.filter(|q| q.is_finite() && *q > 0.0) else {
                continue;
            };
            let lang = if tag == "en" || tag.starts_with("en-") {
                Lang::En
            } else if tag == "zh" || tag == "zh-cn" || tag == "zh-sg" || tag.starts_with("zh-hans")
            {
                Lang::ZhCn
            } else {
                continue;
            };
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l)
    }

    /// The request's language: `?lang=`, else the remembered cookie, else `Accept-Language`, else English.
    pub fn of_request(query: Option<&str>, headers: &HeaderMap) -> Lang {
        query_lang(query)
            .or_else(|| super::session::cookie(headers, LANG_COOKIE).and_then(|v| Lang::parse(&v)))
            .or_else(|| {
                headers
                    .get(axum::http::header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Lang::from_accept_language)
            })
            .unwrap_or_default()
    }

    /// The catalogue: `{area: {key: text}}`.
    pub fn messages(self) -> &'static Value {
        &CATALOGUES[&self]
    }

    /// One message by `area.key`, or the key itself when it is missing (a test keeps none missing).
    pub fn text(self, key: &str) -> String {
        self.lookup(key).unwrap_or_else(|| key.to_string())
    }

    /// One message by `area.key`, when the catalogue has it (for keys made from data: error codes,
    /// skip reasons, flash keys).
    pub fn lookup(self, key: &str) -> Option<String> {
        let mut v = self.messages();
        for part in key.split('.') {
            v = v.get(part)?;
        }
        v.as_str().map(str::to_string)
    }
}

/// `?lang=` of a query string, when it names a language kiln has.
pub fn query_lang(query: Option<&str>) -> Option<Lang> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "lang")
        .and_then(|(_, v)| Lang::parse(&v))
}

static CATALOGUES: LazyLock<BTreeMap<Lang, Value>> = LazyLock::new(|| {
    let mut all = BTreeMap::new();
    for lang in Lang::ALL {
        let mut areas = serde_json::Map::new();
        for (path, text) in LOCALES {
            let Some(area) = path
                .strip_prefix(lang.code())
                .and_then(|p| p.strip_prefix('/'))
                .and_then(|p| p.strip_suffix(".toml"))
            else {
                continue;
            };
            let table: Value = toml::from_str(text)
                .unwrap_or_else(|e| panic!("locales/{path} is not valid TOML: {e}"));
            areas.insert(area.to_string(), table);
        }
        all.insert(lang, Value::Object(areas));
    }
    all
});

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    keys(&p, v, out);
                }
            }
            Value::String(s) => {
                assert!(!s.trim().is_empty(), "{prefix} is empty");
                out.push(prefix.to_string());
            }
            other => panic!("{prefix} must be text, is {other}"),
        }
    }

    #[test]
    fn both_languages_have_every_message() {
        let mut en = Vec::new();
        keys("", Lang::En.messages(), &mut en);
        let mut zh = Vec::new();
        keys("", Lang::ZhCn.messages(), &mut zh);
        assert!(en.len() > 20, "catalogue too small: {en:?}");
        let missing_zh: Vec<_> = en.iter().filter(|k| !zh.contains(k)).collect();
        let missing_en: Vec<_> = zh.iter().filter(|k| !en.contains(k)).collect();
        assert!(missing_zh.is_empty(), "missing in zh-CN: {missing_zh:?}");
        assert!(missing_en.is_empty(), "missing in en: {missing_en:?}");
    }

    #[test]
    fn chinese_is_really_chinese() {
        // Every zh-CN message holds at least one CJK character, unless it is the same in both
        // (a product name, a placeholder like "v1.2", a symbol).
        let mut zh = Vec::new();
        keys("", Lang::ZhCn.messages(), &mut zh);
        for k in zh {
            let z = Lang::ZhCn.text(&k);
            let e = Lang::En.text(&k);
            let cjk = z.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
            assert!(
                cjk || z == e,
                "{k}: zh-CN '{z}' has no Chinese and differs from '{e}'"
            );
        }
    }

    #[test]
    fn languages_parse() {
        assert_eq!(Lang::parse("zh-CN"), Some(Lang::ZhCn));
        assert_eq!(Lang::parse("zh_cn"), Some(Lang::ZhCn));
        assert_eq!(Lang::parse("EN"), Some(Lang::En));
        assert_eq!(Lang::parse("fr"), None);
        assert_eq!(Lang::parse(""), None);
    }

    #[test]
    fn accept_language_picks_the_best_known() {
        let cases = [
            ("zh-CN,zh;q=0.9,en;q=0.8", Some(Lang::ZhCn)),
            ("en-US,en;q=0.9", Some(Lang::En)),
            ("fr-FR,zh;q=0.5,en;q=0.4", Some(Lang::ZhCn)),
            ("fr-FR,de;q=0.5", None),
            ("en;q=0.2, zh-Hans-CN;q=0.7", Some(Lang::ZhCn)),
            ("zh-TW", None),
            ("zh-CN;q=0", None),
            ("zh-CN;q=abc,en", Some(Lang::En)),
            ("", None),
            (";;;,,,", None),
        ];
        for (header, want) in cases {
            assert_eq!(Lang::from_accept_language(header), want, "{header}");
        }
    }

    #[test]
    fn query_then_cookie_then_header() {
        let mut h = HeaderMap::new();
        h.insert("accept-language", "zh-CN".parse().unwrap());
        assert_eq!(Lang::of_request(None, &h), Lang::ZhCn);
        h.insert("cookie", "a=b; kiln_lang=en".parse().unwrap());
        assert_eq!(Lang::of_request(None, &h), Lang::En);
        assert_eq!(Lang::of_request(Some("x=1&lang=zh-CN"), &h), Lang::ZhCn);
        assert_eq!(Lang::of_request(Some("lang=xx"), &h), Lang::En);
        assert_eq!(Lang::of_request(None, &HeaderMap::new()), Lang::En);
    }

    #[test]
    fn text_falls_back_to_the_key() {
        assert_eq!(Lang::En.text("no.such.key"), "no.such.key");
    }
}
