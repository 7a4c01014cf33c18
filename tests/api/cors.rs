//! Cross-origin access: closed unless `server.cors_origins` names the
//! origin, and then only for it.

use reqwest::{Method, Response, StatusCode};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example.net";

/// A browser's preflight for an authenticated POST from `origin`.
async fn preflight(app: &TestApp, origin: &str) -> Response {
    let url = format!("{}/api/v1/tasks", app.address);
    crate::helpers::client()
        .request(Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

/// `GET /api/v1/users/me` as a browser on `origin` sends it.
async fn read_from(app: &TestApp, token: &str, origin: &str) -> Response {
    let request = app.get("/api/v1/users/me").bearer_auth(token);
    request.header("origin", origin).send().await.unwrap()
}

fn allowed_origin(response: &Response) -> Option<&str> {
    let header = response.headers().get("access-control-allow-origin");
    header.map(|v| v.to_str().unwrap())
}

#[actix_web::test]
async fn by_default_no_origin_is_allowed() {
    let app = spawn_app().await;
    let user = app.new_user("closed").await;

    let asked = preflight(&app, APP).await;
    assert!(!asked.status().is_server_error());
    assert_eq!(allowed_origin(&asked), None);
    let read = read_from(&app, &user.token, APP).await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(allowed_origin(&read), None, "the browser keeps the answer");
}

#[actix_web::test]
async fn a_configured_origin_is_allowed_and_no_other() {
    let app = spawn_app_with(|s| s.server.cors_origins = vec![APP.parse().unwrap()]).await;
    let user = app.new_user("opened").await;

    let asked = preflight(&app, APP).await;
    assert_eq!(asked.status(), StatusCode::OK);
    assert_eq!(allowed_origin(&asked), Some(APP));
    let methods = asked.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let read = read_from(&app, &user.token, APP).await;
    assert_eq!(allowed_origin(&read), Some(APP));

    let refused = preflight(&app, EVIL).await;
    assert!(!refused.status().is_server_error());
    assert_eq!(allowed_origin(&refused), None);
    let read_elsewhere = read_from(&app, &user.token, EVIL).await;
    assert_eq!(allowed_origin(&read_elsewhere), None);
}
