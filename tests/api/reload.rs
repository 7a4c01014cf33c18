//! Tuning a running service: on SIGHUP the binary re-reads its config file
//! and its pools grow or shrink to the new sizes, while requests go on; a
//! file that does not load changes nothing.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{PASSWORD, PATIENCE, Server, TempDir, eventually};

/// The workers, the newcomers' workers and the hashers as
/// `tollgate.pool.size` reports them: each is `(target, actual)`.
async fn pool_sizes(server: &Server) -> [(f64, f64); 3] {
    let scrape = server.metrics().await;
    ["workers", "newcomer_workers", "hashers"].map(|pool| {
        let size = |kind| {
            let labels = [("pool", pool), ("kind", kind)];
            scrape.value("tollgate_pool_size", &labels).unwrap_or(-1.0)
        };
        (size("target"), size("actual"))
    })
}

/// Writes a config file with these pool sizes, `[workers, newcomer
/// workers, hashers]`, and per-user limit.
fn configure(path: &Path, [workers, newcomers, hashers]: [usize; 3], max_running: usize) {
    let toml = format!(
        "[queue]\nworkers = {workers}\nnewcomer_workers = {newcomers}\n\
         max_running_per_user = {max_running}\n\n[auth]\nhasher_threads = {hashers}\n"
    );
    std::fs::write(path, toml).unwrap();
}

/// Waits until every pool reports `(target, actual)` as `sizes` gives,
/// signing in and running a task meanwhile to show the service keeps
/// serving.
async fn converge(server: &Server, token: &str, sizes: [usize; 3]) {
    let wanted = sizes.map(|size| (size as f64, size as f64));
    let converged = eventually(PATIENCE, || async {
        let signin = server.request(Method::POST, "/api/v1/auth/signin", None);
        let credentials = json!({ "username": "tuner", "password": PASSWORD });
        assert_eq!(
            signin.json(&credentials).send().await.unwrap().status(),
            StatusCode::OK
        );
        let enqueue = server.request(Method::POST, "/api/v1/tasks", Some(token));
        let task = enqueue
            .json(&json!({ "kind": "echo" }))
            .send()
            .await
            .unwrap();
        assert_eq!(task.status(), StatusCode::ACCEPTED);
        pool_sizes(server).await == wanted
    })
    .await;
    assert!(
        converged,
        "pools at {:?}, not {wanted:?}",
        pool_sizes(server).await
    );
}

#[actix_web::test]
async fn sighup_resizes_the_pools_while_requests_go_on_and_a_bad_file_changes_nothing() {
    let dir = TempDir::new("reload");
    let (config, output) = (dir.join("tollgate.toml"), dir.join("output"));
    configure(&config, [2, 1, 1], 0);
    let config_arg = config.display().to_string();
    let args = ["--config", config_arg.as_str(), "serve"];
    let server = Server::start_with_output(&args, &[], Some(&output)).await;
    server.sign_up("tuner").await;
    let (token, _) = server.sign_in("tuner").await;
    converge(&server, &token, [2, 1, 1]).await;

    configure(&config, [5, 3, 3], 4);
    server.signal("HUP");
    converge(&server, &token, [5, 3, 3]).await;
    let queue = server.get_json("/api/v1/queue", &token).await;
    assert_eq!(queue["max_running"], 4, "per-user limits are reloaded too");

    configure(&config, [1, 0, 2], 3);
    server.signal("HUP");
    converge(&server, &token, [1, 0, 2]).await;
    let queue = server.get_json("/api/v1/queue", &token).await;
    assert_eq!(queue["max_running"], 3);

    std::fs::write(&config, "[queue]\nworkers = \"many\"\n").unwrap();
    server.signal("HUP");
    let refused = eventually(PATIENCE, || async {
        std::fs::read_to_string(&output)
            .unwrap()
            .contains("reload refused")
    })
    .await;
    assert!(refused, "the refusal is logged");
    assert_eq!(
        pool_sizes(&server).await,
        [(1.0, 1.0), (0.0, 0.0), (2.0, 2.0)]
    );
    let queue = server.get_json("/api/v1/queue", &token).await;
    assert_eq!(queue["max_running"], 3, "not the default either");
}
