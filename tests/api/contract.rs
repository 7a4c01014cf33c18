//! The OpenAPI document against the service it describes: it is OpenAPI
//! 3.1, names every error code, every route in it is served and every other
//! method of those routes gets 405 with `Allow`; and Schemathesis, driven by
//! the document alone, finds no 5xx and no answer the document does not
//! describe, from the real binary on PostgreSQL and Redis.

use std::path::Path;
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tollgate::http::ErrorCode;

use crate::helpers::{
    ADMIN_TOKEN, JWT_SECRET, Server, TempDir, TestRedis, TestSchema, admin_settings, spare_port,
    spawn_app, spawn_app_with,
};

/// The introspection credential the contract run's server accepts.
const SERVICE_SECRET: &str = "contract-run-introspection-secret";

/// Examples per operation and phase when the environment does not say:
/// a short run for `make test`; `make fuzz` asks for many more.
const DEFAULT_EXAMPLES: &str = "30";
/// A fixed seed keeps `make test` repeatable; `make fuzz` draws a new one.
const DEFAULT_SEED: &str = "20261124";

async fn document(address: &str) -> Value {
    let response = reqwest::get(format!("{address}/openapi.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.unwrap()
}

/// Every `(method, path)` the document describes, in upper case.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let paths = doc["paths"].as_object().unwrap();
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

#[actix_web::test]
async fn every_documented_route_is_served_and_other_methods_get_405_with_allow() {
    let app = spawn_app().await;
    let doc = document(&app.address).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = operations(&doc);
    operations.sort();
    // DESIGN §3's routes and the older services' routes, no more, no less.
    let mut designed: Vec<(String, String)> = [
        ("POST", "/api/v1/auth/signup"),
        ("POST", "/api/v1/auth/signin"),
        ("POST", "/api/v1/auth/signout"),
        ("POST", "/api/v1/auth/signout-all"),
        ("POST", "/api/v1/auth/password"),
        ("GET", "/api/v1/auth/session"),
        ("GET", "/api/v1/auth/sessions"),
        ("DELETE", "/api/v1/auth/sessions/{id}"),
        ("POST", "/api/v1/auth/introspect"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/api/v1/users/me"),
        ("DELETE", "/api/v1/users/me"),
        ("POST", "/api/v1/tasks"),
        ("GET", "/api/v1/tasks"),
        ("GET", "/api/v1/tasks/{id}"),
        ("DELETE", "/api/v1/tasks/{id}"),
        ("GET", "/api/v1/queue"),
        ("GET", "/metrics"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("POST", "/register"),
        ("POST", "/login"),
        ("POST", "/enqueue"),
        ("GET", "/protected-route"),
        ("GET", "/data"),
        ("POST", "/validateToken"),
        ("GET", "/profile"),
        ("GET", "/auth/health"),
    ]
    .map(|(method, path)| (method.to_owned(), path.to_owned()))
    .into();
    designed.sort();
    assert_eq!(operations, designed);

    for (method, path) in &operations {
        let url = app.url(&path.replace("{id}", &uuid::Uuid::now_v7().to_string()));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        // Without credentials or a body: 401, 415, 200 ... but never the
        // answers of a route that is not there.
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {status} {body}"
        );
    }

    // `Allow` comes from the router: it must name the documented methods.
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        let mut documented: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        documented.sort();
        let url = app.url(&path.replace("{id}", &uuid::Uuid::now_v7().to_string()));
        let response = app.client.put(&url).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "PUT {path}"
        );
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        let mut allowed: Vec<String> = allow.split(", ").map(str::to_owned).collect();
        allowed.sort();
        assert_eq!(allowed, documented, "Allow of {path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "method_not_allowed");
    }
}

#[actix_web::test]
async fn an_independent_validator_finds_the_document_valid_openapi_3_1() {
    let validator = Path::new(&schemathesis()).with_file_name("openapi-spec-validator");
    let app = spawn_app().await;
    let text = document(&app.address).await.to_string();
    let file = std::env::temp_dir().join(format!("tollgate-openapi-{}.json", app.redis.prefix()));
    std::fs::write(&file, text).unwrap();

    let checked = Command::new(&validator).arg(&file).output();
    std::fs::remove_file(&file).ok();

    let checked = checked.expect("openapi-spec-validator runs");
    let said = String::from_utf8_lossy(&checked.stdout).into_owned()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{said}");
    assert!(said.trim_end().ends_with(": OK"), "{said}");
}

#[actix_web::test]
async fn the_documents_name_every_error_code_and_the_problem_shape() {
    let dir = TempDir::new("contract");
    let app = spawn_app_with(|s| s.admin = Some(admin_settings(&dir))).await;
    let doc = document(&app.address).await;
    let admin_doc = app.admin_json("/admin/openapi.json").await;
    // Each code is named by the public API's document or the admin API's.
    let text = doc.to_string() + &admin_doc.to_string();
    for code in ErrorCode::ALL {
        assert!(
            text.contains(&format!("`{}`", code.as_str())),
            "{} is not documented",
            code.as_str()
        );
    }
    assert_eq!(
        admin_doc["components"]["schemas"]["Problem"],
        doc["components"]["schemas"]["Problem"]
    );
    let problem = &doc["components"]["schemas"]["Problem"];
    let codes: Vec<&str> = problem["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let expected: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, expected);

    // A route behind a bearer token documents both 401s and the challenge.
    let unauthorized = &doc["paths"]["/api/v1/users/me"]["get"]["responses"]["401"];
    let description = unauthorized["description"].as_str().unwrap();
    assert!(
        description.contains("`missing_credentials`"),
        "{description}"
    );
    assert!(description.contains("`invalid_token`"), "{description}");
    assert!(unauthorized["headers"]["www-authenticate"].is_object());
    assert_eq!(
        unauthorized["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
}

#[actix_web::test]
async fn the_docs_page_is_the_document_rendered_on_the_server_and_loads_nothing() {
    let app = spawn_app().await;
    let response = app.get("/docs").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'none';"), "{policy}");
    assert!(!policy.contains("script-src"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    let page = response.text().await.unwrap();
    let document = document(&app.address).await;
    // Every operation of the document is on the page.
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let heading = format!(
                "<span class=\"method {method}\">{}</span> <code>{path}</code>",
                method.to_uppercase()
            );
            assert!(page.contains(&heading), "{heading} is not on the page");
        }
    }
    assert!(!page.contains("<script"), "the page runs no script");
    assert!(
        !page.contains("https://"),
        "the page links nothing elsewhere"
    );
}

/// The Schemathesis command `make test` provides (see `.ci/ensure-services`);
/// openapi-spec-validator is installed beside it.
pub fn schemathesis() -> String {
    let path = std::env::var("TOLLGATE_SCHEMATHESIS").unwrap_or_default();
    assert!(
        !path.is_empty() && Path::new(&path).exists(),
        "Schemathesis is missing: run the tests with `make test` (which installs it), or \
         set TOLLGATE_SCHEMATHESIS to its `schemathesis` command (now {path:?})"
    );
    path
}

#[actix_web::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let env = [
        ("TOLLGATE__DATABASE__URL", schema.url()),
        ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
        (
            "TOLLGATE__AUTH__INTROSPECTION_SECRET",
            SERVICE_SECRET.to_owned(),
        ),
        ("TOLLGATE__QUEUE__BACKEND", "redis".to_owned()),
        ("TOLLGATE__SESSION__STORE", "redis".to_owned()),
        ("TOLLGATE__REDIS__URL", crate::helpers::redis_url()),
        ("TOLLGATE__REDIS__KEY_PREFIX", redis.prefix().to_owned()),
        ("TOLLGATE__TELEMETRY__LOG_LEVEL", "warn".to_owned()),
        // Every request comes from one address, the fuzzer's wrong
        // sign-ins and the hooks' right ones alike: limit by login only.
        (
            "TOLLGATE__RATE_LIMIT__SIGNIN_PER_MINUTE_PER_IP",
            "0".to_owned(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(&["serve"], &env).await;
    let doc = document(&server.address).await;

    let output = run_schemathesis(
        &server.url("/openapi.json"),
        "schemathesis.toml",
        &[
            ("TOLLGATE_URL", server.address.as_str()),
            ("TOLLGATE_INTROSPECTION_SECRET", SERVICE_SECRET),
        ],
        &[],
        redis.prefix(),
    )
    .await;
    // Every operation was exercised but `GET /openapi.json`, which
    // Schemathesis leaves out as the document it read.
    all_tested(&output, operations(&doc).len() - 1, 500);
}

#[actix_web::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_admin_document() {
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let dir = TempDir::new("contract-admin");
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    let admin_bind = format!("127.0.0.1:{}", spare_port());
    let env = [
        ("TOLLGATE__DATABASE__URL", schema.url()),
        ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
        ("TOLLGATE__QUEUE__BACKEND", "redis".to_owned()),
        ("TOLLGATE__SESSION__STORE", "redis".to_owned()),
        ("TOLLGATE__REDIS__URL", crate::helpers::redis_url()),
        ("TOLLGATE__REDIS__KEY_PREFIX", redis.prefix().to_owned()),
        ("TOLLGATE__TELEMETRY__LOG_LEVEL", "warn".to_owned()),
        ("TOLLGATE__ADMIN__BIND", admin_bind.clone()),
        (
            "TOLLGATE__ADMIN__TOKEN_FILE",
            token_file.display().to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(&["serve"], &env).await;
    // Something to find: a user with a session and a task.
    server.sign_up("seeded").await;
    let admin = format!("http://{admin_bind}");
    let doc: Value = reqwest::get(format!("{admin}/admin/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let authorization = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let output = run_schemathesis(
        &format!("{admin}/admin/openapi.json"),
        "schemathesis-admin.toml",
        &[],
        &["--header", &authorization],
        redis.prefix(),
    )
    .await;
    all_tested(&output, operations(&doc).len() - 1, 200);
}

/// Runs Schemathesis on the document at `url` with the settings in
/// `tests/contract/<config>`; answers what it printed, which must say it
/// passed.
async fn run_schemathesis(
    url: &str,
    config: &str,
    env: &[(&str, &str)],
    args: &[&str],
    scratch: &str,
) -> String {
    let schemathesis = schemathesis();
    let examples =
        std::env::var("TOLLGATE_CONTRACT_EXAMPLES").unwrap_or_else(|_| DEFAULT_EXAMPLES.to_owned());
    let seed = std::env::var("TOLLGATE_CONTRACT_SEED").unwrap_or_else(|_| DEFAULT_SEED.to_owned());
    let contract = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract");
    // Schemathesis keeps a cache in its working directory: not in ours.
    let workdir = std::env::temp_dir().join(format!("tollgate-contract-{scratch}-{config}"));
    std::fs::create_dir_all(&workdir).unwrap();
    let mut command = Command::new(&schemathesis);
    command
        .current_dir(&workdir)
        .env("PYTHONPATH", &contract)
        .envs(env.iter().copied())
        .arg("--config-file")
        .arg(contract.join(config))
        .arg("run")
        .arg(url)
        .args(["--max-examples", &examples, "--no-color"])
        .args(args);
    if seed != "random" {
        command.args(["--seed", &seed]);
    }
    let run = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("schemathesis runs");
    std::fs::remove_dir_all(&workdir).ok();
    let output =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    println!("{output}");
    assert!(run.status.success(), "schemathesis failed:\n{output}");
    output
}

/// Checks that Schemathesis's `output` says it tested all of `operations`
/// and generated at least `TOLLGATE_CONTRACT_MIN_CASES` cases
/// (`default_minimum` if unset).
fn all_tested(output: &str, operations: usize, default_minimum: usize) {
    assert!(
        output.contains(&format!("Selected: {operations}/{operations}"))
            && output.contains(&format!("Tested: {operations}")),
        "not every operation was tested:\n{output}"
    );
    let generated: usize = output
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|pair| pair[1] == "generated,")
        .and_then(|pair| pair[0].parse().ok())
        .expect("schemathesis says how many cases it generated");
    let minimum: usize = std::env::var("TOLLGATE_CONTRACT_MIN_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default_minimum);
    assert!(generated >= minimum, "only {generated} cases:\n{output}");
}
