//! A browser without a browser: a cookie-keeping HTTP client for kiln's web console, for handler
//! tests of its pages and forms. It signs in through `/login` like a person, reads pages as
//! HTML ([`Page`], CSS selectors), and posts forms with the page's CSRF token.

use reqwest::StatusCode;
use reqwest::redirect::Policy;

pub struct Console {
    pub url: String,
    pub http: reqwest::Client,
}

/// A console page as received: status, final URL (after redirects) and HTML.
pub struct Page {
    pub status: StatusCode,
    pub url: String,
    pub html: String,
}

impl Console {
    /// A client with its own cookie jar, not signed in. It follows redirects (303 after a form).
    pub fn new(url: &str) -> Console {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::limited(5))
            .build()
            .expect("http client");
        Console {
            url: url.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// Signs in with `token` (through the real form) and returns the page it lands on.
    pub async fn sign_in(url: &str, token: &str) -> Console {
        let console = Console::new(url);
        let page = console.try_sign_in(token).await;
        assert_eq!(page.status, StatusCode::OK, "sign-in failed: {}", page.html);
        assert!(!page.url.contains("/login"), "still on {}", page.url);
        console
    }

    /// Submits the sign-in form with `token`; the answer (a failure stays on /login with 401).
    pub async fn try_sign_in(&self, token: &str) -> Page {
        let form = self.get("/login").await;
        let csrf = form.csrf();
        self.send_form("/login", &[("token", token), ("_csrf", &csrf)])
            .await
    }

    pub async fn get(&self, path: &str) -> Page {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Page::read(r).await
    }

    /// Posts `fields` to `path` with the CSRF token of the page at `from` (fetched first).
    pub async fn post(&self, from: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("_csrf", &csrf));
        self.send_form(path, &all).await
    }

    /// Posts exactly `fields` (no CSRF token added: for testing refusals).
    pub async fn send_form(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .form(fields)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Page::read(r).await
    }
}

impl Page {
    async fn read(r: reqwest::Response) -> Page {
        let status = r.status();
        let url = r.url().to_string();
        let html = r.text().await.expect("page body");
        Page { status, url, html }
    }

    fn doc(&self) -> scraper::Html {
        scraper::Html::parse_document(&self.html)
    }

    /// The text of every element matching `css`, whitespace collapsed.
    pub fn texts(&self, css: &str) -> Vec<String> {
        let sel = scraper::Selector::parse(css).unwrap_or_else(|e| panic!("selector {css}: {e:?}"));
        self.doc()
            .select(&sel)
            .map(|e| {
                e.text()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    /// The text of the first element matching `css` (panics, with the page, when none does).
    pub fn text(&self, css: &str) -> String {
        self.texts(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no {css} on {}:\n{}", self.url, self.html))
    }

    pub fn has(&self, css: &str) -> bool {
        !self.texts(css).is_empty()
    }

    /// Attribute `attr` of every element matching `css`.
    pub fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        let sel = scraper::Selector::parse(css).unwrap_or_else(|e| panic!("selector {css}: {e:?}"));
        self.doc()
            .select(&sel)
            .filter_map(|e| e.value().attr(attr).map(str::to_string))
            .collect()
    }

    /// The page's CSRF token (the first `_csrf` field of its forms).
    pub fn csrf(&self) -> String {
        self.attrs("input[name=_csrf]", "value")
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no CSRF field on {}:\n{}", self.url, self.html))
    }
}
