//! A real browser for the tests: Debian's chromium, headless, driven over
//! the W3C WebDriver protocol through chromedriver on a spare port. Every
//! host but 127.0.0.1 resolves to nothing, so a page that reaches for the
//! network cannot get there, and the browser's own log names every request
//! it made. `make test` installs both.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{TempDir, client, eventually, on_a_fresh_runtime, spare_port};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a page gets to show what is waited for.
const PAGE_PATIENCE: Duration = Duration::from_secs(15);

pub struct Browser {
    driver: Child,
    session: String,
    client: reqwest::Client,
    _profile: TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        let port = spare_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs; `make test` installs it (Debian's chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let client = client();
        let ready = eventually(Duration::from_secs(20), || async {
            let status = client.get(format!("{base}/status")).send().await;
            match status {
                Ok(answer) => answer
                    .json::<Value>()
                    .await
                    .is_ok_and(|s| s["value"]["ready"] == true),
                Err(_) => false,
            }
        })
        .await;
        assert!(ready, "chromedriver did not start on port {port}");
        let profile = TempDir::new("chromium");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", "--no-first-run", "--no-default-browser-check",
                    "--disable-background-networking", "--disable-component-update",
                    format!("--user-data-dir={}", profile.display()),
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                ],
            },
            "goog:loggingPrefs": { "performance": "ALL" },
        } } });
        let answer: Value = client
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"));
        let browser = Self {
            session: format!("{base}/session/{session}"),
            driver,
            client,
            _profile: profile,
        };
        // What the browser loads for itself (its new tab page) is not the
        // pages' doing: a blank page, and the log starts afresh.
        browser.open("about:blank").await;
        browser.requests().await;
        browser
    }

    /// A WebDriver command; answers its `value`, which must not be an error.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut request = self.client.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(answer["value"]["error"].is_null(), "{path}: {answer}");
        answer["value"].clone()
    }

    pub async fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The element `css` selects, if there is one now.
    async fn find(&self, css: &str) -> Option<String> {
        let url = format!("{}/element", self.session);
        let body = json!({ "using": "css selector", "value": css });
        let answer: Value = self
            .client
            .post(url)
            .json(&body)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        answer["value"][ELEMENT].as_str().map(str::to_owned)
    }

    /// The element `css` selects, once the page shows it.
    pub async fn wait_for(&self, css: &str) -> String {
        let started = std::time::Instant::now();
        loop {
            if let Some(element) = self.find(css).await {
                return element;
            }
            assert!(
                started.elapsed() < PAGE_PATIENCE,
                "the page never showed {css}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css).await;
        let path = format!("/element/{element}/value");
        self.command(reqwest::Method::POST, &path, Some(json!({ "text": text })))
            .await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        let path = format!("/element/{element}/click");
        self.command(reqwest::Method::POST, &path, Some(json!({})))
            .await;
    }

    /// The text the page shows of the element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        let element = self.wait_for(css).await;
        let path = format!("/element/{element}/text");
        let text = self.command(reqwest::Method::GET, &path, None).await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// The window as a PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let shot = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap())
            .unwrap()
    }

    /// The address of every request the browser has made since the last
    /// call, from its performance log.
    pub async fn requests(&self) -> Vec<String> {
        let log = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({ "type": "performance" })),
            )
            .await;
        log.as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| serde_json::from_str::<Value>(entry["message"].as_str()?).ok())
            .filter(|entry| entry["message"]["method"] == "Network.requestWillBeSent")
            .filter_map(|entry| {
                entry["message"]["params"]["request"]["url"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser, then its driver.
        let session = self.session.clone();
        let _ = on_a_fresh_runtime(async move { client().delete(session).send().await.is_ok() });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
