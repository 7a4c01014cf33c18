//! The `tollgate` binary itself, as an operator runs it: `make run`'s
//! embedded default, the production file, `check-config` and `migrate`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    JWT_SECRET, PASSWORD, Server, TempDir, TestSchema, client, eventually, output_of,
};

/// Signs up and in as the README shows, returning the sign-in token.
async fn sign_up_and_in(server: &Server) -> String {
    server.sign_up("ada").await;
    server.sign_in("ada").await.0
}

#[actix_web::test]
async fn the_embedded_default_serves_signup_signin_profile_and_tasks() {
    let log = std::env::temp_dir().join(format!("tollgate-embedded-{}.log", uuid::Uuid::new_v4()));
    let server = Server::start_with_output(&["serve"], &[], Some(&log)).await;
    // Nothing here is durable, and start-up says so out loud.
    let printed = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    for store in ["users", "tasks"] {
        let warning = format!("{store} are kept IN MEMORY ONLY");
        assert!(printed.contains(&warning), "{printed}");
    }

    let token = sign_up_and_in(&server).await;
    let me = server.get_json("/api/v1/users/me", &token).await;
    let enqueue = server.request(reqwest::Method::POST, "/api/v1/tasks", Some(&token));
    let accepted = enqueue
        .json(&json!({ "kind": "sha256", "payload": { "data": "abc", "rounds": 2 } }))
        .send()
        .await
        .unwrap();

    assert_eq!(me["username"], "ada");
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let location = accepted.headers()["location"].to_str().unwrap().to_owned();
    let finished = eventually(Duration::from_secs(30), || async {
        server.get_json(&location, &token).await["status"] == "succeeded"
    })
    .await;
    let task = server.get_json(&location, &token).await;
    assert!(finished, "{task}");
    assert_eq!(task["result"]["rounds"], 2);
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
async fn a_jwt_key_file_signs_the_tokens_and_a_short_one_is_refused() {
    let schema = TestSchema::create().await;
    let url = schema.url();
    let dir = TempDir::new("key");
    let (key, short) = (dir.join("jwt.key"), dir.join("short.key"));
    let secret = "a-signing-key-read-from-a-file-not-the-environment";
    std::fs::write(&key, format!("{secret}\n")).unwrap();
    std::fs::write(&short, "too-short\n").unwrap();
    for file in [&key, &short] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let production = ["--config", "config/production.toml"];
    let with_key = |file: &std::path::Path| {
        [
            ("TOLLGATE__DATABASE__URL", url.clone()),
            ("TOLLGATE__AUTH__JWT_KEY_FILE", file.display().to_string()),
        ]
    };

    let env = with_key(&key);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(&[&production[..], &["serve"]].concat(), &env).await;
    let token = sign_up_and_in(&server).await;
    let env = with_key(&short);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (refused, said) = output_of(&[&production[..], &["check-config"]].concat(), &env);

    // Signed with the file's contents, its line ending left off.
    tollgate::auth::signing::install();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["tollgate"]);
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let decoded = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation);
    assert!(decoded.is_ok(), "{decoded:?}");
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("auth.jwt_key_file must hold at least 32 bytes"),
        "{said}"
    );
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
    assert!(first_text.contains("applied 2 migration"), "{first_text}");
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
            ("TOLLGATE__SESSION__MAX_PER_USER", "500"),
            ("TOLLGATE__QUEUE__KINDS__WEBHOOK__MAX_PER_SECOND", "0"),
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
    assert!(
        text.contains("session.max_per_user must be between 1 and 200 (got 500)"),
        "{text}"
    );
    assert!(
        text.contains("queue.kinds.webhook.max_per_second must be between 1 and 1000 (got 0)"),
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
    let public = tollgate::config::Settings::embedded_default()
        .auth
        .jwt_secret
        .unwrap();
    let public = secrecy::ExposeSecret::expose_secret(&public).to_owned();
    let (public_secret, public_secret_text) = output_of(
        &["--config", "config/production.toml", "check-config"],
        &[("TOLLGATE__AUTH__JWT_SECRET", &public)],
    );

    assert!(default.status.success(), "{default_text}");
    assert!(production.status.success(), "{production_text}");
    assert!(production_text.contains("postgres"), "{production_text}");
    assert!(!no_secret.status.success());
    assert!(
        no_secret_text.contains("TOLLGATE__AUTH__JWT_SECRET"),
        "{no_secret_text}"
    );
    // The embedded default's secret is public: never with durable stores.
    assert!(!public_secret.status.success(), "{public_secret_text}");
    assert!(
        public_secret_text.contains("auth.jwt_secret"),
        "{public_secret_text}"
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
    assert!(
        stdout.contains(r#""kind":"echo","payload":{"hello":"world"}"#),
        "the task was accepted and read back: {stdout}"
    );
    assert!(stdout.contains(r#""limit":100000"#), "{stdout}");
    assert!(stdout.ends_with("after signout: 401"), "{stdout}");
}
