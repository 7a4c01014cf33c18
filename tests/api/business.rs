//! The split the older systems used: a separate business service (the
//! `business_service` example, run as its own process) that checks each
//! caller's token with Tollgate's introspection, and so keeps the caller's
//! session alive. Tollgate runs in the test, whose clock it moves by hand.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{client, refused_as_invalid_token, spawn_app_with};

const SERVICE_SECRET: &str = "a-service-credential-for-introspection";
const SECOND: Duration = Duration::from_secs(1);

/// The example's program, built as a program: `cargo test` builds
/// examples only wrapped in a test harness.
fn example_binary() -> PathBuf {
    // What cargo set for this test describes this crate, not the build:
    // passed on, it would make the build redo dependencies that read it.
    let about_this_crate = std::env::vars().map(|(name, _)| name).filter(|name| {
        [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "CARGO_PRIMARY_PACKAGE"
            || name == "CARGO_TARGET_TMPDIR"
    });
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "--example", "business_service"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for name in about_this_crate {
        build.env_remove(name);
    }
    let built = build.status().unwrap();
    assert!(built.success(), "cargo could not build the example");
    let deps = std::env::current_exe().unwrap();
    let binary = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/business_service");
    assert!(binary.exists(), "{} is missing", binary.display());
    binary
}

/// The business service, killed when dropped.
struct BusinessService {
    child: Child,
    address: String,
}

impl BusinessService {
    /// Starts the example on a port the system picks, and learns the port
    /// from the line it prints once it is listening: no port is guessed, so
    /// nothing else can take it first.
    async fn start(tollgate: &str) -> Self {
        // Building may take seconds: off this thread, which serves Tollgate.
        let binary = tokio::task::spawn_blocking(example_binary).await.unwrap();
        let mut child = Command::new(binary)
            .env_clear()
            .env("TOLLGATE_URL", tollgate)
            .env("INTROSPECTION_SECRET", SERVICE_SECRET)
            .env("BIND", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .unwrap()
        .unwrap();
        let address = line
            .split_whitespace()
            .find(|word| word.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("the business service did not start: {line:?}"))
            .trim_end_matches(',');
        Self {
            address: format!("http://{address}"),
            child,
        }
    }

    /// `GET /data` with the token in the old `token` header.
    async fn data(&self, token: &str) -> reqwest::Response {
        client()
            .get(format!("{}/data", self.address))
            .header("token", token)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for BusinessService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn using_the_business_service_keeps_the_session_alive_until_30_seconds_after_the_last_call() {
    let app = spawn_app_with(|s| s.auth.introspection_secret = Some(SERVICE_SECRET.into())).await;
    let business = BusinessService::start(&app.address).await;
    let user = app.new_user("customer").await;

    // Every 20 seconds for a minute: each call reinflates the session.
    for _ in 0..3 {
        app.clock.advance(20 * SECOND);
        let data = business.data(&user.token).await;
        let status = data.status();
        let body: Value = data.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["message"], "hello, customer");
    }
    let session: Value = app.session(&user.token).await.json().await.unwrap();
    assert_eq!(
        session["refresh_count"], 4,
        "three calls through the service, one here"
    );

    // 30 seconds after the last use, it has lapsed, for both services.
    app.clock.advance(30 * SECOND);
    let lapsed = business.data(&user.token).await;
    assert_eq!(lapsed.status(), StatusCode::UNAUTHORIZED);
    refused_as_invalid_token(app.session(&user.token).await).await;
    let forged = business.data("not-a-token").await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}
