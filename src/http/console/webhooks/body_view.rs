//! A recorded HTTP body as a record page shows it: JSON pretty-printed, and cut to a length a page
//! can hold, saying how much was left out. Pure.

use serde::Serialize;

/// The most of a body a record page shows (bytes of the text shown, after pretty-printing).
pub const SHOWN_LIMIT: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BodyView {
    /// What the page shows.
    pub text: String,
    /// The body was JSON, shown pretty-printed.
    pub json: bool,
    /// Bytes of the (pretty-printed) text not shown; 0 when all of it is.
    pub hidden_bytes: usize,
    /// Bytes the text has in all (pretty-printed when JSON).
    pub total_bytes: usize,
    /// kiln itself kept only the start of the body when it recorded it.
    pub stored_cut: bool,
}

/// `body` for display: pretty-printed when it is a whole JSON document, then cut at `limit` bytes
/// (at a character boundary). `stored_cut`: the record itself holds only the body's start (a cut
/// body is not valid JSON, so it is shown as it is).
pub fn body_view(body: &str, stored_cut: bool, limit: usize) -> BodyView {
    let pretty = if stored_cut { None } else { pretty_json(body) };
    let json = pretty.is_some();
    let full = pretty.unwrap_or_else(|| body.to_string());
    let total_bytes = full.len();
    let end = full.floor_char_boundary(limit);
    let mut text = full;
    text.truncate(end);
    BodyView {
        hidden_bytes: total_bytes - text.len(),
        text,
        json,
        total_bytes,
        stored_cut,
    }
}

/// `text` pretty-printed when it is one JSON object or array (not a bare number or string, which
/// gain nothing from it).
pub fn pretty_json(text: &str) -> Option<String> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    serde_json::to_string_pretty(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_pretty_printed() {
        let v = body_view(r#"{"a":1,"b":[true,null]}"#, false, SHOWN_LIMIT);
        assert!(v.json);
        assert_eq!(
            v.text,
            "{\n  \"a\": 1,\n  \"b\": [\n    true,\n    null\n  ]\n}"
        );
        assert_eq!(v.hidden_bytes, 0);
        assert_eq!(v.total_bytes, v.text.len());
    }

    #[test]
    fn other_text_is_shown_as_it_is() {
        for body in ["ok", "42", "\"a string\"", "{not json", "", "<html></html>"] {
            let v = body_view(body, false, SHOWN_LIMIT);
            assert!(!v.json, "{body}");
            assert_eq!(v.text, body);
            assert_eq!(v.hidden_bytes, 0);
        }
    }

    #[test]
    fn long_text_is_cut_and_says_how_much() {
        let body = "x".repeat(100);
        let v = body_view(&body, false, 30);
        assert_eq!(v.text, "x".repeat(30));
        assert_eq!(v.hidden_bytes, 70);
        assert_eq!(v.total_bytes, 100);
    }

    #[test]
    fn cuts_fall_between_characters() {
        // "é" is 2 bytes: a cut at 3 bytes keeps one character, hides the rest.
        let v = body_view("ééé", false, 3);
        assert_eq!(v.text, "é");
        assert_eq!(v.hidden_bytes, 4);
        let v = body_view("汉字", false, 4);
        assert_eq!(v.text, "汉");
        assert_eq!(v.hidden_bytes, 3);
    }

    #[test]
    fn pretty_json_is_cut_after_printing() {
        let body = format!("[{}]", vec!["1"; 200].join(","));
        let v = body_view(&body, false, 50);
        assert!(v.json);
        assert_eq!(v.text.len(), 50);
        assert_eq!(v.hidden_bytes, v.total_bytes - 50);
        assert!(v.total_bytes > body.len());
    }

    #[test]
    fn a_body_kiln_stored_cut_is_not_parsed() {
        let v = body_view("{\"a\":1}", true, SHOWN_LIMIT);
        assert!(!v.json);
        assert!(v.stored_cut);
        assert_eq!(v.text, "{\"a\":1}");
    }
}
