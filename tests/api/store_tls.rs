//! TLS to PostgreSQL and Redis: with a private CA named in
//! `database.tls_ca_file` and `redis.tls_ca_file`, the production
//! configuration works against servers that take nothing but TLS; a
//! certificate the settings do not trust, or a server that does not speak
//! TLS, stops the start with the reason, never falling back to plaintext.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{
    JWT_SECRET, PrivatePostgres, PrivateRedis, Server, TestCa, TestRedis, eventually, output_of,
    refused_start,
};

const PRODUCTION: [&str; 2] = ["--config", "config/production.toml"];

/// The production file's settings pointed at `database_url` and
/// `redis_url`, each trusting `ca_file` when given, keys under `prefix`.
fn stores_env(
    database_url: &str,
    redis_url: &str,
    ca_file: Option<&Path>,
    prefix: &str,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
        ("TOLLGATE__DATABASE__URL", database_url.to_owned()),
        ("TOLLGATE__REDIS__URL", redis_url.to_owned()),
        ("TOLLGATE__REDIS__KEY_PREFIX", prefix.to_owned()),
    ];
    if let Some(ca_file) = ca_file {
        let ca_file = ca_file.display().to_string();
        env.push(("TOLLGATE__DATABASE__TLS_CA_FILE", ca_file.clone()));
        env.push(("TOLLGATE__REDIS__TLS_CA_FILE", ca_file));
    }
    env
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect()
}

#[actix_web::test]
async fn over_tls_with_a_private_ca_users_sessions_and_tasks_all_work() {
    let ca = TestCa::new("stores");
    let postgres = PrivatePostgres::start_with_tls(&ca).await;
    let redis = PrivateRedis::start_with_tls(&ca).await;
    // The test looks at the keys through the server's plaintext port.
    let keys = TestRedis::on(redis.url());
    let database_url = format!("{}?sslmode=verify-full", postgres.url());
    let env = stores_env(
        &database_url,
        &redis.tls_url(),
        Some(&ca.ca_file()),
        keys.prefix(),
    );
    let server = Server::start(&[&PRODUCTION[..], &["serve"]].concat(), &borrowed(&env)).await;

    server.sign_up("ada").await;
    let (token, _) = server.sign_in("ada").await;
    let accepted = server
        .request(Method::POST, "/api/v1/tasks", Some(&token))
        .json(&json!({ "kind": "sha256", "payload": { "data": "abc", "rounds": 2 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let location = accepted.headers()["location"].to_str().unwrap().to_owned();
    let finished = eventually(Duration::from_secs(30), || async {
        server.get_json(&location, &token).await["status"] == "succeeded"
    })
    .await;
    assert!(finished, "{}", server.get_json(&location, &token).await);

    // Two sessions (sign-up's and sign-in's) are in Redis...
    assert_eq!(keys.keys_matching(":session:*").await.len(), 2);
    // ...the user is in PostgreSQL, and every connection the service holds
    // there is encrypted (the server takes no other over TCP).
    assert_eq!(postgres.query("SELECT username FROM users"), "ada\n");
    let connections = postgres.query(
        "SELECT count(*), count(*) FILTER (WHERE ssl) FROM pg_stat_ssl \
         JOIN pg_stat_activity USING (pid) WHERE application_name = 'tollgate'",
    );
    let (all, encrypted) = connections.trim().split_once('|').unwrap();
    assert!(all.parse::<u32>().unwrap() > 0, "{connections}");
    assert_eq!(all, encrypted);
}

#[actix_web::test]
async fn a_certificate_the_settings_do_not_trust_stops_the_start_with_the_reason() {
    let (ca, stranger) = (TestCa::new("right"), TestCa::new("stranger"));
    let postgres = PrivatePostgres::start_with_tls(&ca).await;
    let redis = PrivateRedis::start_with_tls(&ca).await;
    let keys = TestRedis::on(redis.url());
    let verified = format!("{}?sslmode=verify-full", postgres.url());
    let serve = [&PRODUCTION[..], &["serve"]].concat();

    // Both stores' certificates checked against a CA that did not issue them.
    let env = stores_env(
        &verified,
        &redis.tls_url(),
        Some(&stranger.ca_file()),
        keys.prefix(),
    );
    let said = refused_start(&serve, &borrowed(&env)).await;
    assert!(said.contains("migrating the database"), "{said}");
    assert!(
        said.contains("invalid peer certificate: UnknownIssuer"),
        "{said}"
    );

    // PostgreSQL trusted, Redis not.
    let mut env = stores_env(
        &verified,
        &redis.tls_url(),
        Some(&ca.ca_file()),
        keys.prefix(),
    );
    env.retain(|(key, _)| *key != "TOLLGATE__REDIS__TLS_CA_FILE");
    env.push((
        "TOLLGATE__REDIS__TLS_CA_FILE",
        stranger.ca_file().display().to_string(),
    ));
    let said = refused_start(&serve, &borrowed(&env)).await;
    let port = redis.tls_url().rsplit(':').next().unwrap().to_owned();
    assert!(
        said.contains(&format!("redis.url: TLS with 127.0.0.1:{port} failed")),
        "{said}"
    );
    assert!(
        said.contains("invalid peer certificate: UnknownIssuer"),
        "{said}"
    );

    // rediss:// to a server port that speaks plaintext: no fallback.
    let plaintext = redis.url().replace("redis://", "rediss://");
    let env = stores_env(&verified, &plaintext, Some(&ca.ca_file()), keys.prefix());
    let said = refused_start(&serve, &borrowed(&env)).await;
    assert!(said.contains("redis.url: TLS with 127.0.0.1"), "{said}");

    // sslmode=require to a PostgreSQL without TLS: no fallback either.
    let plain_postgres = PrivatePostgres::start().await;
    let required = format!("{}?sslmode=require", plain_postgres.url());
    let env = stores_env(&required, &redis.url(), None, keys.prefix());
    let said = refused_start(&serve, &borrowed(&env)).await;
    assert!(said.contains("server does not support TLS"), "{said}");
}

#[test]
fn check_config_refuses_a_ca_file_that_would_not_be_used() {
    let ca = TestCa::new("unused");
    let ca_file = ca.ca_file().display().to_string();
    let check = [&PRODUCTION[..], &["check-config"]].concat();
    let base = [
        ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET),
        ("TOLLGATE__DATABASE__TLS_CA_FILE", ca_file.as_str()),
        ("TOLLGATE__REDIS__TLS_CA_FILE", ca_file.as_str()),
    ];

    let (unused, said) = output_of(&check, &base);
    assert!(!unused.status.success(), "{said}");
    assert!(
        said.contains("redis.tls_ca_file is set but redis.url is not rediss://"),
        "{said}"
    );
    assert!(
        said.contains("database.tls_ca_file is set but database.url's sslmode does not use it"),
        "{said}"
    );

    let verified = [
        (
            "TOLLGATE__DATABASE__URL",
            "postgres://tollgate@db.internal/tollgate?sslmode=verify-full",
        ),
        ("TOLLGATE__REDIS__URL", "rediss://cache.internal:6380"),
    ];
    let (used, said) = output_of(&check, &[&base[..], &verified[..]].concat());
    assert!(used.status.success(), "{said}");
}
