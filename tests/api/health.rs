//! `/health/*`, and what clients see while PostgreSQL is out of reach.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TcpProxy, TestSchema, eventually, problem, spawn_app, spawn_app_on};

#[actix_web::test]
async fn liveness_and_readiness_answer_when_all_is_well() {
    let app = spawn_app().await;

    let live = app.get("/health/live").send().await.unwrap();
    let ready = app.get("/health/ready").send().await.unwrap();

    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "status": "ready", "checks": { "users": { "store": "postgres", "status": "up" } } })
    );
}

#[actix_web::test]
async fn with_postgres_unreachable_signin_is_a_503_sessions_live_on_and_all_recovers() {
    let proxy = TcpProxy::to_database().await;
    let schema = TestSchema::create().await;
    let app = spawn_app_on(schema, |s| s.url_via(proxy.address), |_| {}).await;
    let user = app.new_user("resilient").await;

    proxy.cut();

    let signin = app.sign_in("resilient", crate::helpers::PASSWORD).await;
    problem(
        signin,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    )
    .await;
    let signup = app.sign_up("newcomer", crate::helpers::PASSWORD).await;
    problem(
        signup,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    )
    .await;
    // Sessions live in the session actors, not in PostgreSQL.
    assert_eq!(app.session(&user.token).await.status(), StatusCode::OK);
    let ready = app.get("/health/ready").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["checks"]["users"]["status"],
        "down"
    );

    proxy.restore();

    let recovered = eventually(Duration::from_secs(15), || async {
        app.sign_in("resilient", crate::helpers::PASSWORD)
            .await
            .status()
            == StatusCode::OK
    })
    .await;
    assert!(
        recovered,
        "sign-in did not recover after PostgreSQL came back"
    );
    assert_eq!(
        app.get("/health/ready").send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        app.sign_up("newcomer", crate::helpers::PASSWORD)
            .await
            .status(),
        StatusCode::CREATED
    );
}
