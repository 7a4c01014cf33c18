//! Security headers on every kind of answer: success, refusal, unknown
//! route and health probe.

use reqwest::{Response, StatusCode};

use crate::helpers::spawn_app;

const EXPECTED: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

fn assert_secured(response: &Response) {
    for (name, value) in EXPECTED {
        assert_eq!(
            response.headers().get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name} on a {} answer",
            response.status()
        );
    }
    // Over plain HTTP (behind a proxy, or on loopback) HSTS would be a
    // promise the service cannot keep; the TLS test checks it is there.
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
}

#[actix_web::test]
async fn every_answer_carries_the_security_headers() {
    let app = spawn_app().await;
    let user = app.new_user("headers").await;

    let me = app.me(&user.token).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_secured(&me);

    let refused = app.me("not-a-token").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_secured(&refused);

    let unknown = app.get("/no/such/route").send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_secured(&unknown);

    let live = app.get("/health/live").send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert_secured(&live);
}
