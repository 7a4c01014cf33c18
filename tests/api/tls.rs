//! HTTPS when `server.tls_cert` and `server.tls_key` are set: the server
//! answers TLS with that certificate, tells browsers to keep to it (HSTS),
//! and serves nothing in plain HTTP.

use reqwest::StatusCode;

use crate::helpers::{TempDir, spawn_app_with};

#[actix_web::test]
async fn with_a_certificate_the_server_speaks_https_only() {
    let dir = TempDir::new("tls");
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
    let app = spawn_app_with(|s| {
        s.server.tls_cert = Some(cert.clone());
        s.server.tls_key = Some(key.clone());
    })
    .await;
    let port = app.address.rsplit(':').next().unwrap();
    // Trusts nothing but the issued certificate: an answer proves it is the
    // one the server presents.
    let trusting = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(issued.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port.parse().unwrap()).into())
        .build()
        .unwrap();

    let secure = trusting
        .get(format!("https://localhost:{port}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(secure.status(), StatusCode::OK);
    assert_eq!(secure.version(), reqwest::Version::HTTP_11);
    assert_eq!(
        secure.headers()["strict-transport-security"],
        "max-age=63072000"
    );

    let plain = crate::helpers::client()
        .get(format!("http://127.0.0.1:{port}/health/live"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");
}
