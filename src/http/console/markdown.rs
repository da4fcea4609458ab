//! A repository's `detail` (Markdown) as HTML safe to put in a page: rendered with pulldown-cmark
//! (tables, strikethrough, task lists), then cleaned by ammonia's allow-list (no scripts, no event
//! attributes, no `javascript:` URLs), links opened with `rel="noopener noreferrer"`.

use pulldown_cmark::{Options, Parser, html};

pub fn to_safe_html(markdown: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut raw = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut raw, Parser::new_ext(markdown, options));
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer"))
        .clean(&raw)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::to_safe_html;

    #[test]
    fn scripts_are_removed() {
        let html =
            to_safe_html("hello\n\n<script>alert(1)</script>\n\n<p>x<script>alert(2)</script></p>");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("alert"), "{html}");
        assert!(html.contains("hello"), "{html}");
    }

    #[test]
    fn event_attributes_are_removed() {
        let html = to_safe_html(
            r#"<img src="/x.png" onerror="alert(1)"> <a href="/y" onclick="alert(2)">y</a>"#,
        );
        assert!(!html.contains("onerror"), "{html}");
        assert!(!html.contains("onclick"), "{html}");
        assert!(html.contains(r#"src="/x.png""#), "{html}");
    }

    #[test]
    fn javascript_urls_are_removed() {
        for md in [
            "[click](javascript:alert(1))",
            r#"<a href="javascript:alert(1)">click</a>"#,
            r#"<a href="JaVaScRiPt:alert(1)">click</a>"#,
        ] {
            let html = to_safe_html(md);
            assert!(
                !html.to_lowercase().contains("javascript:"),
                "{md} -> {html}"
            );
            assert!(html.contains("click"), "{md} -> {html}");
        }
    }

    #[test]
    fn tables_and_code_are_kept() {
        let html = to_safe_html(
            "| a | b |\n|---|---|\n| 1 | 2 |\n\n```sh\ndocker run --rm x\n```\n\nuse `inline` code",
        );
        for want in [
            "<table>",
            "<th>a</th>",
            "<td>2</td>",
            "<pre><code",
            "docker run --rm x",
            "<code>inline</code>",
        ] {
            assert!(html.contains(want), "missing {want} in {html}");
        }
    }

    #[test]
    fn links_are_opened_without_the_opener() {
        let html = to_safe_html("[docs](https://example.com/docs)");
        assert!(
            html.contains(
                r#"<a href="https://example.com/docs" rel="noopener noreferrer">docs</a>"#
            ),
            "{html}"
        );
    }
}
