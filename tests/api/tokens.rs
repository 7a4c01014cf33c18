//! Token attacks: every forged, altered or stale token is refused with 401
//! and the RFC 6750 challenge.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    JWT_SECRET, TestApp, claims_of, problem, refused_as_invalid_token, spawn_app,
};

fn sign(claims: &Value, algorithm: Algorithm, secret: &str) -> String {
    tollgate::auth::signing::install();
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn assert_refused(app: &TestApp, token: &str) {
    refused_as_invalid_token(app.me(token).await).await;
}

#[actix_web::test]
async fn the_genuine_token_works_so_the_refusals_below_mean_something() {
    let app = spawn_app().await;
    let user = app.new_user("genuine").await;
    let resigned = sign(&claims_of(&user.token), Algorithm::HS256, JWT_SECRET);

    assert_eq!(app.me(&user.token).await.status(), StatusCode::OK);
    assert_eq!(app.me(&resigned).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_tampered_signature_is_refused() {
    let app = spawn_app().await;
    let user = app.new_user("tampered").await;
    let (unsigned, signature) = user.token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };

    assert_refused(&app, &format!("{unsigned}.{flipped}{}", &signature[1..])).await;
}

#[actix_web::test]
async fn altered_claims_under_the_old_signature_are_refused() {
    let app = spawn_app().await;
    let user = app.new_user("altered").await;
    let mut claims = claims_of(&user.token);
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 86_400);
    let (header, rest) = user.token.split_once('.').unwrap();
    let signature = rest.split_once('.').unwrap().1;
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());

    assert_refused(&app, &format!("{header}.{payload}.{signature}")).await;
}

#[actix_web::test]
async fn an_unsigned_alg_none_token_is_refused() {
    let app = spawn_app().await;
    let user = app.new_user("nonesuch").await;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims_of(&user.token).to_string());

    assert_refused(&app, &format!("{header}.{payload}.")).await;
}

#[actix_web::test]
async fn another_algorithm_with_the_right_secret_is_refused() {
    let app = spawn_app().await;
    let user = app.new_user("switcher").await;

    assert_refused(
        &app,
        &sign(&claims_of(&user.token), Algorithm::HS512, JWT_SECRET),
    )
    .await;
}

#[actix_web::test]
async fn a_token_signed_with_another_key_is_refused() {
    let app = spawn_app().await;
    let user = app.new_user("forger").await;
    let other_secret = "someone-elses-secret-of-at-least-32-bytes";

    assert_refused(
        &app,
        &sign(&claims_of(&user.token), Algorithm::HS256, other_secret),
    )
    .await;
}

#[actix_web::test]
async fn an_expired_token_is_refused_even_while_its_session_lives() {
    let app = spawn_app().await;
    let user = app.new_user("expired").await;
    let mut claims = claims_of(&user.token);
    claims["exp"] = json!(app.clock.now().timestamp() - 1);

    assert_refused(&app, &sign(&claims, Algorithm::HS256, JWT_SECRET)).await;
}

#[actix_web::test]
async fn a_token_from_another_issuer_is_refused() {
    let app = spawn_app().await;
    let user = app.new_user("issuer").await;
    let mut claims = claims_of(&user.token);
    claims["iss"] = json!("not-tollgate");

    assert_refused(&app, &sign(&claims, Algorithm::HS256, JWT_SECRET)).await;
}

#[actix_web::test]
async fn a_signed_token_for_someone_elses_session_is_refused() {
    let app = spawn_app().await;
    let victim = app.new_user("victim").await;
    let attacker = app.new_user("attacker").await;
    let mut claims = claims_of(&attacker.token);
    claims["sid"] = claims_of(&victim.token)["sid"].clone();

    assert_refused(&app, &sign(&claims, Algorithm::HS256, JWT_SECRET)).await;
}

#[actix_web::test]
async fn a_signed_token_for_a_session_that_never_existed_is_refused() {
    let app = spawn_app().await;
    let user = app.new_user("phantom").await;
    let mut claims = claims_of(&user.token);
    claims["sid"] = json!(uuid::Uuid::new_v4());

    assert_refused(&app, &sign(&claims, Algorithm::HS256, JWT_SECRET)).await;
}

#[actix_web::test]
async fn garbage_is_an_invalid_token_and_no_token_is_a_bare_challenge() {
    let app = spawn_app().await;

    assert_refused(&app, "not.a.jwt").await;
    let missing = app.get("/api/v1/users/me").send().await.unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    problem(missing, StatusCode::UNAUTHORIZED, "missing_credentials").await;
    let basic = app
        .get("/api/v1/users/me")
        .basic_auth("ada", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.headers()["www-authenticate"], "Bearer");
}
