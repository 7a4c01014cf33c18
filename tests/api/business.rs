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

use tollgate::config::JwtAlgorithm;

use crate::helpers::{
    Server, TempDir, TestRedis, TestSchema, as_env, client, new_key_file, production_env,
    refused_as_invalid_token, spawn_app_with,
};

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
        Self::start_with(tollgate, &[]).await
    }

    /// Like [`BusinessService::start`], with more of its settings.
    async fn start_with(tollgate: &str, env: &[(&str, &str)]) -> Self {
        // Building may take seconds: off this thread, which serves Tollgate.
        let binary = tokio::task::spawn_blocking(example_binary).await.unwrap();
        let mut child = Command::new(binary)
            .env_clear()
            .env("TOLLGATE_URL", tollgate)
            .env("INTROSPECTION_SECRET", SERVICE_SECRET)
            .env("BIND", "127.0.0.1:0")
            .envs(env.iter().copied())
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
        self.get("/data", token).await
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        client()
            .get(format!("{}{path}", self.address))
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

/// Writes a config file signing with `current` (EdDSA) and accepting
/// `previous` too.
fn configure_keys(
    config: &std::path::Path,
    current: &std::path::Path,
    previous: Option<&std::path::Path>,
) {
    let previous = previous
        .map(|path| format!("{:?}", path.display().to_string()))
        .unwrap_or_default();
    let toml = format!(
        "[auth]\njwt_algorithm = \"EdDSA\"\njwt_key_file = {:?}\nprevious_key_files = [{previous}]\n\
         introspection_secret = {SERVICE_SECRET:?}\n",
        current.display().to_string()
    );
    std::fs::write(config, toml).unwrap();
}

#[actix_web::test]
async fn a_service_verifying_with_the_jwks_follows_a_rotation_and_still_introspects_for_liveness() {
    let dir = TempDir::new("jwks-service");
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let (config, output) = (dir.join("tollgate.toml"), dir.join("output"));
    let first = new_key_file(&dir, "first.key", JwtAlgorithm::EdDSA);
    configure_keys(&config, &first, None);
    let config_arg = config.display().to_string();
    let env = production_env(&schema, &redis);
    let tollgate = Server::start_with_output(
        &["--config", &config_arg, "serve"],
        &as_env(&env),
        Some(&output),
    )
    .await;
    let service = BusinessService::start_with(
        &tollgate.address,
        &[("VERIFY", "jwks"), ("JWKS_MIN_REFRESH_SECS", "0")],
    )
    .await;
    tollgate.sign_up("verified-locally").await;
    let (first_token, _) = tollgate.sign_in("verified-locally").await;

    let checked: Value = service.data(&first_token).await.json().await.unwrap();

    assert_eq!(checked["data"]["checked_by"], "signature", "{checked}");

    // A rotation: the new key signs, the old one is still accepted. The
    // service meets the new kid and fetches the set again.
    let second = new_key_file(&dir, "second.key", JwtAlgorithm::EdDSA);
    configure_keys(&config, &second, Some(&first));
    tollgate.reload(&output).await;
    let (second_token, _) = tollgate.sign_in("verified-locally").await;
    assert_eq!(service.data(&second_token).await.status(), StatusCode::OK);
    assert_eq!(service.data(&first_token).await.status(), StatusCode::OK);
    assert_eq!(
        service.data("not.a.token").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Signed out: the signature still holds until the token expires, so
    // only introspection can tell the session has ended.
    let signout = tollgate.request(
        reqwest::Method::POST,
        "/api/v1/auth/signout",
        Some(&second_token),
    );
    assert_eq!(
        signout.send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(service.data(&second_token).await.status(), StatusCode::OK);
    let live = service.get("/data/live", &second_token).await;
    assert_eq!(live.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        service.get("/data/live", &first_token).await.status(),
        StatusCode::OK
    );
}
