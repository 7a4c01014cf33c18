//! The `tollgate` binary itself, as an operator runs it: `make run`'s
//! embedded default, the production file, `check-config` and `migrate`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, PASSWORD, TestSchema, client, eventually};

const BINARY: &str = env!("CARGO_BIN_EXE_tollgate");

/// A `tollgate` command with a clean environment: only what the test sets.
fn tollgate(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command
}

fn output_of(args: &[&str], env: &[(&str, &str)]) -> (Output, String) {
    let output = tollgate(args, env).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// A running server process, killed when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bind = format!("127.0.0.1:{port}");
        let mut env = env.to_vec();
        env.push(("TOLLGATE__SERVER__BIND", &bind));
        env.push(("TOLLGATE__AUTH__BCRYPT_COST", "4"));
        let child = tollgate(args, &env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            address: format!("http://{bind}"),
        };
        let up = eventually(Duration::from_secs(30), || async {
            client()
                .get(format!("{}/health/live", server.address))
                .send()
                .await
                .is_ok()
        })
        .await;
        assert!(up, "tollgate did not start listening on {bind}");
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Sends SIGTERM, as an orchestrator stopping the service would.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(status.unwrap().success());
    }

    /// Waits for the process to exit, for at most `limit`.
    async fn exit_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tollgate did not exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs up and in as the README shows, returning the sign-in token.
async fn sign_up_and_in(server: &Server) -> String {
    let http = client();
    let credentials = json!({ "username": "ada", "password": PASSWORD });
    let signup = http
        .post(server.url("/api/v1/auth/signup"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), StatusCode::CREATED);
    let signin = http
        .post(server.url("/api/v1/auth/signin"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), StatusCode::OK);
    let body: Value = signin.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn the_embedded_default_serves_signup_signin_and_profile() {
    let server = Server::start(&["serve"], &[]).await;

    let token = sign_up_and_in(&server).await;
    let me = client()
        .get(server.url("/api/v1/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.json::<Value>().await.unwrap()["username"], "ada");
}

#[actix_web::test]
async fn on_the_system_clock_use_reinflates_and_idleness_expires() {
    // Real time, with a two-second idle timeout standing in for thirty.
    let server = Server::start(&["serve"], &[("TOLLGATE__SESSION__IDLE_TTL_SECS", "2")]).await;
    let token = sign_up_and_in(&server).await;
    let session = || {
        client()
            .get(server.url("/api/v1/auth/session"))
            .bearer_auth(&token)
            .send()
    };

    // Used every 1.2 s, the session outlives its 2 s idle timeout...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(session().await.unwrap().status(), StatusCode::OK);
    }
    let body: Value = session().await.unwrap().json().await.unwrap();
    assert_eq!(body["refresh_count"], 4);
    // ...and left idle past it, it is gone.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(session().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn the_production_file_serves_users_from_postgres() {
    let schema = TestSchema::create().await;
    let url = schema.url();
    let env = [
        ("TOLLGATE__DATABASE__URL", url.as_str()),
        ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET),
    ];

    let server = Server::start(&["--config", "config/production.toml", "serve"], &env).await;
    sign_up_and_in(&server).await;

    assert_eq!(schema.count("users").await, 1);
}

#[actix_web::test]
async fn migrate_applies_the_schema_once() {
    let schema = TestSchema::create().await;
    let url = schema.url();
    let env = [
        ("TOLLGATE__DATABASE__URL", url.as_str()),
        ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET),
    ];

    let (first, first_text) = output_of(&["migrate"], &env);
    let (second, second_text) = output_of(&["migrate"], &env);

    assert!(first.status.success(), "{first_text}");
    assert!(first_text.contains("applied 1 migration"), "{first_text}");
    assert!(second.status.success(), "{second_text}");
    assert!(second_text.contains("applied 0 migration"), "{second_text}");
    assert_eq!(schema.count("users").await, 0);
}

#[actix_web::test]
async fn check_config_names_every_bad_value_and_fails() {
    let (output, text) = output_of(
        &["check-config"],
        &[
            ("TOLLGATE__AUTH__BCRYPT_COST", "99"),
            ("TOLLGATE__SESSION__IDLE_TTL_SECS", "0"),
        ],
    );

    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("auth.bcrypt_cost must be between 4 and 31 (got 99)"),
        "{text}"
    );
    assert!(
        text.contains("session.idle_ttl_secs must be between 1 and 86400 (got 0)"),
        "{text}"
    );
}

#[actix_web::test]
async fn check_config_accepts_the_embedded_default_and_the_production_file_with_a_secret() {
    let (default, default_text) = output_of(&["check-config"], &[]);
    let (production, production_text) = output_of(
        &["--config", "config/production.toml", "check-config"],
        &[("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET)],
    );
    let (no_secret, no_secret_text) =
        output_of(&["--config", "config/production.toml", "check-config"], &[]);

    assert!(default.status.success(), "{default_text}");
    assert!(production.status.success(), "{production_text}");
    assert!(production_text.contains("postgres"), "{production_text}");
    assert!(!no_secret.status.success());
    assert!(
        no_secret_text.contains("TOLLGATE__AUTH__JWT_SECRET"),
        "{no_secret_text}"
    );
}

#[actix_web::test]
async fn sigterm_lets_requests_in_flight_finish_then_exits_cleanly() {
    // One hasher thread at cost 11: the sign-ins below queue for a while.
    let env = [
        ("TOLLGATE__AUTH__HASHER_THREADS", "1"),
        ("TOLLGATE__AUTH__BCRYPT_COST", "11"),
    ];
    let mut server = Server::start(&["serve"], &env).await;
    sign_up_and_in(&server).await;
    let credentials = json!({ "username": "ada", "password": PASSWORD });
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let signins: Vec<_> = (0..4)
        .map(|_| {
            let request = client()
                .post(server.url("/api/v1/auth/signin"))
                .json(&credentials);
            let finished = finished.clone();
            actix_web::rt::spawn(async move {
                let status = request.send().await.map(|r| r.status());
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                status
            })
        })
        .collect();
    let first_done = eventually(Duration::from_secs(30), || async {
        finished.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    assert!(first_done);

    server.terminate();

    for signin in signins {
        assert_eq!(signin.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert!(server.exit_status(Duration::from_secs(30)).await.success());
}

#[actix_web::test]
async fn the_readme_walkthrough_runs_as_written() {
    let server = Server::start(&["serve"], &[]).await;
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let walkthrough = readme
        .split("With `make run` going in another terminal:")
        .nth(1)
        .and_then(|rest| rest.split("```sh").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the README has its curl walkthrough");
    let host = server.address.trim_start_matches("http://");
    // The walkthrough, pointed at this server, then one more call with the
    // signed-out token.
    let script = format!(
        "{}\ncurl -s -o /dev/null -w 'after signout: %{{http_code}}' {host}/api/v1/users/me \
         -H \"authorization: Bearer $TOKEN\"\n",
        walkthrough.replace("localhost:8080", host)
    );

    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("bash runs");

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(r#""username":"ada""#), "{stdout}");
    assert!(
        stdout.contains(r#""refresh_count":2"#),
        "the session call reinflated twice: {stdout}"
    );
    assert!(stdout.ends_with("after signout: 401"), "{stdout}");
}
