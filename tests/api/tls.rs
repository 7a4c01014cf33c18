//! HTTPS when `server.tls_cert` and `server.tls_key` are set: the server
//! answers TLS with that certificate, tells browsers to keep to it (HSTS),
//! and serves nothing in plain HTTP.

use reqwest::StatusCode;

use crate::helpers::{ADMIN_TOKEN, TempDir, admin_settings, spawn_app_with};

/// A self-signed certificate for `localhost`, written to `dir`; the
/// service settings that serve it.
fn certificate(
    dir: &TempDir,
) -> (
    rcgen::CertifiedKey<rcgen::KeyPair>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
    (issued, cert, key)
}

/// A client that trusts nothing but `issued`, reaching `localhost:port`:
/// an answer proves it is the certificate the server presents.
fn trusting(issued: &rcgen::CertifiedKey<rcgen::KeyPair>, port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(issued.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap()
}

#[actix_web::test]
async fn with_a_certificate_the_server_speaks_https_only() {
    let dir = TempDir::new("tls");
    let (issued, cert, key) = certificate(&dir);
    let app = spawn_app_with(|s| {
        s.server.tls_cert = Some(cert.clone());
        s.server.tls_key = Some(key.clone());
    })
    .await;
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();

    let secure = trusting(&issued, port)
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

#[actix_web::test]
async fn with_a_certificate_the_admin_listener_speaks_https_only_too() {
    let dir = TempDir::new("tls-admin");
    let (issued, cert, key) = certificate(&dir);
    let app = spawn_app_with(|s| {
        s.server.tls_cert = Some(cert.clone());
        s.server.tls_key = Some(key.clone());
        s.admin = Some(admin_settings(&dir));
    })
    .await;
    let admin = app.admin_address.clone().unwrap();
    let port: u16 = admin.rsplit(':').next().unwrap().parse().unwrap();
    let secure = trusting(&issued, port)
        .get(format!("https://localhost:{port}/admin/api/v1/users"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let plain = crate::helpers::client()
        .get(format!("{admin}/admin/api/v1/users"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await;

    assert_eq!(secure.status(), StatusCode::OK);
    assert_eq!(
        secure.headers()["strict-transport-security"],
        "max-age=63072000"
    );
    assert!(
        plain.is_err(),
        "the admin token must not go in plaintext: {plain:?}"
    );
}
