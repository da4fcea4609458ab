//! A real browser for the console's browser tests: Debian's `chromedriver` (`/usr/bin/chromedriver`)
//! started on a free loopback port, driving headless `/usr/bin/chromium` through WebDriver
//! (`fantoccini`). Missing pieces fail loudly with the package to install; nothing is skipped.
//!
//! [`Browser::start`] opens a session at desktop size (1280×900) in a language; helpers sign in
//! through the real form, wait for elements and text (polling, with a timeout, never a fixed sleep),
//! resize the window, and save full-page screenshots under `target/screenshots/`.
//! The driver runs in its own process group (chromium is its child); dropping the [`Browser`] ends
//! that group, so a failed test leaves no browser behind. [`Browser::close`] ends the session first.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The packages the browser tests need (what `.ci/run` installs).
const PACKAGES: &str = "chromium chromium-driver fonts-noto-cjk";

/// Desktop and phone window sizes of the screenshots.
pub const DESKTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (390, 844);

/// How long a page, an element or a text may take to show up.
pub const WAIT: Duration = Duration::from_secs(20);
const DRIVER_START: Duration = Duration::from_secs(30);

pub struct Browser {
    pub client: Client,
    /// kiln's base URL (`http://127.0.0.1:PORT`), which paths are relative to.
    pub base: String,
    driver: Child,
    driver_log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless chromium whose preferred language is `lang` (`en-US`,
    /// `zh-CN`: its `Accept-Language`), at desktop size, for the kiln at `base`.
    pub async fn start(base: &str, lang: &str) -> Browser {
        require_tools();
        // A failure's screenshot from an earlier run would mislead.
        let _ = fs::remove_file(screenshots_dir().join("FAILED.png"));
        let profile = tempfile::Builder::new()
            .prefix("kiln-browser-")
            .tempdir()
            .expect("a temp dir for the browser profile");
        let port = super::free_port();
        let driver_log = profile.path().join("chromedriver.log");
        let log = fs::File::create(&driver_log).expect("create the chromedriver log");
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log handle"))
                .stderr(log)
                // Its own group: chromium and its helpers join it, and `Drop` ends them all.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"))
        };
        let mut browser_parts = (driver, driver_log);
        let url = format!("http://127.0.0.1:{port}");
        wait_for_driver(&url, &mut browser_parts).await;
        let (driver, driver_log) = browser_parts;

        let (w, h) = DESKTOP;
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    "--no-first-run",
                    "--no-default-browser-check",
                    format!("--window-size={w},{h}"),
                    format!("--lang={lang}"),
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                ],
                "prefs": { "intl.accept_languages": lang },
            }),
        );
        let client = match ClientBuilder::native()
            .capabilities(caps)
            .connect(&url)
            .await
        {
            Ok(client) => client,
            Err(e) => panic!(
                "chromedriver could not start {CHROMIUM} ({e}); its log:\n{}",
                fs::read_to_string(&driver_log).unwrap_or_default()
            ),
        };
        let browser = Browser {
            client,
            base: base.trim_end_matches('/').to_string(),
            driver,
            driver_log,
            _profile: profile,
        };
        browser.set_size(DESKTOP).await;
        browser
    }

    /// Ends the WebDriver session (chromium quits), then the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        // `Drop` ends the driver's process group.
    }

    /// Opens `path` (relative to kiln's base URL, or a full URL).
    pub async fn goto(&self, path: &str) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The current URL's path and query (`/repos/a/b?x=1`).
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The elements matching `css` right now.
    pub async fn all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
    }

    /// Whether an element matches `css` right now.
    pub async fn has(&self, css: &str) -> bool {
        !self.all(css).await.is_empty()
    }

    /// Waits until an element matches `css` (and is displayed) and returns it.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + WAIT;
        loop {
            for el in self.all(css).await {
                if el.is_displayed().await.unwrap_or(false) {
                    return el;
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!("no visible {css} after {WAIT:?}")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the first element matching `css` contains `text`; returns that text.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> String {
        self.wait_for_text_within(css, text, WAIT).await
    }

    pub async fn wait_for_text_within(&self, css: &str, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Some(el) = self.all(css).await.into_iter().next() {
                last = el.text().await.unwrap_or_default();
                if last.contains(text) {
                    return last;
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{css} does not say {text:?} after {timeout:?} (it says {last:?})"
                ))
                .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `script` (a JavaScript expression's body: `return …;`) gives `true`.
    pub async fn wait_for_js(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out after {timeout:?} waiting until {what}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the current path starts with `prefix` (after a form or a link).
    pub async fn wait_for_path(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let path = self.path().await;
            if path.starts_with(prefix) && self.ready().await {
                return path;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("still on {path}, not on {prefix}…"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ready(&self) -> bool {
        self.js("return document.readyState === 'complete';").await == Value::Bool(true)
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("run {script:?}: {e}"))
    }

    /// The visible text of the whole page.
    pub async fn page_text(&self) -> String {
        self.js("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Replaces the value of the field matching `css` with `value`.
    pub async fn fill(&self, css: &str, value: &str) {
        let el = self.wait_for(css).await;
        el.clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        el.send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Chooses the option with value `value` in the `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.wait_for(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choose {value} in {css}: {e}"));
    }

    /// The current value of the field matching `css`.
    pub async fn value(&self, css: &str) -> String {
        self.wait_for(css)
            .await
            .prop("value")
            .await
            .unwrap_or_else(|e| panic!("value of {css}: {e}"))
            .unwrap_or_default()
    }

    /// The text of the first element matching `css` (waiting for it).
    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// Attribute `attr` of the first element matching `css` (waiting for it).
    pub async fn attr(&self, css: &str, attr: &str) -> Option<String> {
        self.wait_for(css)
            .await
            .attr(attr)
            .await
            .unwrap_or_else(|e| panic!("{attr} of {css}: {e}"))
    }

    /// Clicks the (visible) element matching `css`.
    pub async fn click(&self, css: &str) {
        let el = self.wait_for(css).await;
        // Out of view (a phone-width page), a click can land on whatever covers it: bring it in.
        let _ = self
            .client
            .execute(
                "arguments[0].scrollIntoView({block: 'center'});",
                vec![serde_json::to_value(&el).expect("element as JSON")],
            )
            .await;
        el.click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Signs in through the real form at `/login` with `token`, and waits to leave the form.
    pub async fn sign_in(&self, token: &str) {
        self.submit_sign_in(token).await;
        self.wait_for_js(
            "the sign-in form to let us in",
            "return document.readyState === 'complete' && location.pathname !== '/login';",
            WAIT,
        )
        .await;
    }

    /// Fills and submits the sign-in form with `token` (whatever the answer).
    pub async fn submit_sign_in(&self, token: &str) {
        if !self.path().await.starts_with("/login") {
            self.goto("/login").await;
        }
        self.fill("#token", token).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
    }

    /// Sets the window so that the page's viewport is `(width, height)` CSS pixels.
    pub async fn set_size(&self, (width, height): (u32, u32)) {
        self.client
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("resize to {width}×{height}: {e}"));
        // The window's frame (if any) eats into the viewport: grow the window by the difference.
        let inner = self
            .js("return [window.innerWidth, window.innerHeight];")
            .await;
        let (iw, ih) = (
            inner[0].as_u64().unwrap_or(0) as u32,
            inner[1].as_u64().unwrap_or(0) as u32,
        );
        if (iw, ih) != (width, height) && iw > 0 && ih > 0 {
            self.client
                .set_window_size(
                    width + width.saturating_sub(iw),
                    height + height.saturating_sub(ih),
                )
                .await
                .unwrap_or_else(|e| panic!("resize to {width}×{height}: {e}"));
        }
        let inner = self.js("return window.innerWidth;").await;
        assert_eq!(
            inner.as_u64(),
            Some(u64::from(width)),
            "the browser's viewport is not {width} px wide"
        );
    }

    /// Saves the whole page (not only the visible part) as
    /// `target/screenshots/{name}-{desktop|phone}.png`, at desktop and phone width, then goes
    /// back to desktop width. Returns the two files.
    pub async fn screenshots(&self, name: &str) -> [PathBuf; 2] {
        let desktop = self.screenshot(&format!("{name}-desktop")).await;
        self.set_size(PHONE).await;
        let phone = self.screenshot(&format!("{name}-phone")).await;
        self.no_sideways_scroll(name).await;
        self.set_size(DESKTOP).await;
        [desktop, phone]
    }

    /// Panics when the page is wider than the window (a phone would scroll it sideways), naming
    /// the elements that stick out. Wide content belongs in a box that scrolls (`.table-wrap`).
    pub async fn no_sideways_scroll(&self, page: &str) {
        let found = self
            .js(
                "const w = document.documentElement.clientWidth;
                 if (document.documentElement.scrollWidth <= w) return [];
                 const out = [];
                 for (const el of document.body.querySelectorAll('*')) {
                   const r = el.getBoundingClientRect();
                   if (r.right <= w + 1 || r.width === 0) continue;
                   let inside = false;
                   for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
                     const o = getComputedStyle(p).overflowX;
                     if (o === 'auto' || o === 'scroll' || o === 'hidden') { inside = true; break; }
                   }
                   if (inside) continue;
                   out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
                     (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : '') +
                     ' (right edge ' + Math.round(r.right) + ' px)');
                   if (out.length >= 8) break;
                 }
                 return [document.documentElement.scrollWidth + ' px wide', ...out];",
            )
            .await;
        let found: Vec<String> = serde_json::from_value(found).unwrap_or_default();
        assert!(
            found.is_empty(),
            "the {page} page scrolls sideways at {} px: {}",
            PHONE.0,
            found.join(", ")
        );
    }

    /// Saves the whole page as `target/screenshots/{file}.png` at the current window size.
    pub async fn screenshot(&self, file: &str) -> PathBuf {
        let dir = screenshots_dir();
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // Let web fonts and layout settle: the document is loaded and fonts are ready.
        self.wait_for_js(
            "the page and its fonts to be ready",
            "return document.readyState === 'complete' && document.fonts.status === 'loaded';",
            WAIT,
        )
        .await;
        let metrics = self.cdp("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let viewport = self
            .js("return [window.innerWidth, window.innerHeight];")
            .await;
        let width = viewport[0].as_f64().unwrap_or(0.0);
        // The whole page, and never less than the window (a short page keeps its footer low).
        let height = size["height"]
            .as_f64()
            .unwrap_or(0.0)
            .max(viewport[1].as_f64().unwrap_or(0.0))
            .ceil();
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                }),
            )
            .await;
        let png = STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        let path = dir.join(format!("{file}.png"));
        fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.client
            .issue_cmd(Cdp {
                cmd: cmd.to_string(),
                params,
            })
            .await
            .unwrap_or_else(|e| panic!("DevTools {cmd}: {e}"))
    }

    /// Panics with `why`, the current URL and the page's text (and saves a screenshot of it).
    pub async fn fail(&self, why: &str) -> ! {
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let text = self.page_text().await;
        let shot = self
            .client
            .screenshot()
            .await
            .ok()
            .map(|png| {
                let dir = screenshots_dir();
                let _ = fs::create_dir_all(&dir);
                let path = dir.join("FAILED.png");
                let _ = fs::write(&path, png);
                path.display().to_string()
            })
            .unwrap_or_default();
        panic!("{why}\n  at {url} (screenshot: {shot})\n  the page says:\n{text}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver's process group: chromedriver, chromium and its helpers.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = &self.driver_log;
    }
}

/// `target/screenshots/` of this crate.
pub fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// Panics, saying what to install, when chromium, its driver or a Chinese font is missing.
fn require_tools() {
    for (tool, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
        assert!(
            Path::new(tool).exists(),
            "the browser tests need {tool} (Debian package {package}): \
             `apt-get install -y {PACKAGES}`"
        );
    }
    let fonts = Command::new("fc-list")
        .args([":lang=zh-cn", "family"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run fc-list ({e}): `apt-get install -y {PACKAGES}`"));
    assert!(
        !String::from_utf8_lossy(&fonts.stdout).trim().is_empty(),
        "no font for Chinese (fc-list :lang=zh-cn finds none): the Chinese pages would show \
         boxes; `apt-get install -y fonts-noto-cjk`"
    );
}

/// Waits until chromedriver at `url` says it is ready (`GET /status`), or panics with its log.
async fn wait_for_driver(url: &str, (driver, log): &mut (Child, PathBuf)) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + DRIVER_START;
    loop {
        if let Ok(Some(status)) = driver.try_wait() {
            panic!(
                "{CHROMEDRIVER} exited at start ({status}); its log:\n{}",
                fs::read_to_string(&*log).unwrap_or_default()
            );
        }
        let ready = match http
            .get(format!("{url}/status"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["value"]["ready"] == Value::Bool(true)),
            Err(_) => false,
        };
        if ready {
            return;
        }
        if Instant::now() >= deadline {
            let _ = driver.kill();
            panic!(
                "{CHROMEDRIVER} did not answer on {url} within {DRIVER_START:?}; its log:\n{}",
                fs::read_to_string(&*log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// chromedriver's `POST /session/{id}/goog/cdp/execute`: one DevTools command.
#[derive(Debug)]
struct Cdp {
    cmd: String,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({"cmd": self.cmd, "params": self.params}).to_string()),
        )
    }
}
