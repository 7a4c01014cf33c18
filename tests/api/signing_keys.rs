//! Signing keys: tokens signed with EdDSA (Ed25519), ES256 or HS256, each
//! naming its key by `kid`; a JWKS that an independent library verifies
//! tokens with; forged, confused and foreign tokens refused; keys rotated
//! under traffic with SIGHUP and no one signed out; replicas sharing keys.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate::auth::Key;
use tollgate::auth::keys::generate;
use tollgate::config::JwtAlgorithm;

use crate::helpers::{
    Server, TempDir, TestApp, TestRedis, TestSchema, as_env, claims_of, new_key_file, output_of,
    production_env, refused_as_invalid_token, spawn_app_with,
};

const SERVICE_SECRET: &str = "a-service-credential-for-introspection";
const ISSUER: &str = "tollgate";

async fn app_signing_with(dir: &TempDir, algorithm: JwtAlgorithm) -> (TestApp, PathBuf) {
    let key = new_key_file(dir, "signing.key", algorithm);
    let key_path = key.clone();
    let app = spawn_app_with(move |s| {
        s.auth.jwt_algorithm = algorithm;
        s.auth.jwt_key_file = Some(key_path);
        s.auth.introspection_secret = Some(SERVICE_SECRET.into());
    })
    .await;
    (app, key)
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

async fn jwks(url: &str) -> Value {
    let response = crate::helpers::client().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Signs `claims` with the key in `path` under `header`.
fn sign_with(path: &Path, algorithm: JwtAlgorithm, header: &Header, claims: &Value) -> String {
    tollgate::auth::signing::install();
    let key = Key::read(algorithm, path).unwrap();
    jsonwebtoken::encode(header, claims, &key.encoding).unwrap()
}

/// Verifies `token` with PyJWT against the key set at `jwks_url`, as a
/// service in another language would; answers what it printed, or why
/// it refused.
fn pyjwt_verifies(jwks_url: &str, token: &str) -> Result<Value, String> {
    const SCRIPT: &str = r#"
import json, sys, urllib.request
import jwt
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
keys = json.load(opener.open(sys.argv[1]))["keys"]
header = jwt.get_unverified_header(sys.argv[2])
jwk = next(k for k in keys if k["kid"] == header["kid"])
claims = jwt.decode(sys.argv[2], jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]], issuer=sys.argv[3])
print(json.dumps({"sub": claims["sub"], "alg": header["alg"], "kid": header["kid"]}))
"#;
    let schemathesis = crate::contract::schemathesis();
    let python = Path::new(&schemathesis).with_file_name("python");
    let output = Command::new(python)
        .args(["-c", SCRIPT, jwks_url, token, ISSUER])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    match output.status.success() {
        true => Ok(serde_json::from_str(&printed).unwrap()),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

async fn each_algorithm_signs_serves_and_introspects_with_a_named_key(algorithm: JwtAlgorithm) {
    let dir = TempDir::new("keys");
    let (app, key_file) = app_signing_with(&dir, algorithm).await;
    let user = app.new_user("signed").await;

    let header = header_of(&user.token);
    let me = app.me(&user.token).await;
    let introspected = app.introspect(Some(SERVICE_SECRET), &user.token).await;
    let set = jwks(&app.url("/.well-known/jwks.json")).await;

    assert_eq!(header["alg"], format!("{algorithm:?}"));
    let kid = header["kid"].as_str().expect("a kid").to_owned();
    assert_eq!(kid, Key::read(algorithm, &key_file).unwrap().kid);
    assert_eq!(me.status(), StatusCode::OK);
    let introspected: Value = introspected.json().await.unwrap();
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["sub"], user.id.as_str());
    if algorithm.is_asymmetric() {
        assert_eq!(set["keys"].as_array().unwrap().len(), 1, "{set}");
        assert_eq!(set["keys"][0]["kid"], kid.as_str());
        assert_eq!(set["keys"][0]["alg"], format!("{algorithm:?}"));
        assert!(set["keys"][0].get("d").is_none(), "no private part");
        let verified = pyjwt_verifies(&app.url("/.well-known/jwks.json"), &user.token);
        assert_eq!(verified.unwrap()["sub"], user.id.as_str());
    } else {
        assert_eq!(
            set,
            json!({ "keys": [] }),
            "an HMAC secret is never published"
        );
    }

    // A token of the same claims signed by a key not in the set, under its
    // own kid or under the service's, is refused.
    let claims = claims_of(&user.token);
    let stranger = new_key_file(&dir, "stranger.key", algorithm);
    let mut foreign = Header::new(algorithm.into());
    foreign.kid = Some(Key::read(algorithm, &stranger).unwrap().kid);
    refused_as_invalid_token(
        app.me(&sign_with(&stranger, algorithm, &foreign, &claims))
            .await,
    )
    .await;
    foreign.kid = Some(kid.clone());
    refused_as_invalid_token(
        app.me(&sign_with(&stranger, algorithm, &foreign, &claims))
            .await,
    )
    .await;
    if algorithm.is_asymmetric() {
        let forged = sign_with(&stranger, algorithm, &foreign, &claims);
        assert!(
            pyjwt_verifies(&app.url("/.well-known/jwks.json"), &forged).is_err(),
            "PyJWT refuses it too"
        );
    }
}

#[actix_web::test]
async fn eddsa_signs_serves_and_introspects_with_a_named_key() {
    each_algorithm_signs_serves_and_introspects_with_a_named_key(JwtAlgorithm::EdDSA).await;
}

#[actix_web::test]
async fn es256_signs_serves_and_introspects_with_a_named_key() {
    each_algorithm_signs_serves_and_introspects_with_a_named_key(JwtAlgorithm::ES256).await;
}

#[actix_web::test]
async fn hs256_signs_serves_and_introspects_with_a_named_key() {
    each_algorithm_signs_serves_and_introspects_with_a_named_key(JwtAlgorithm::HS256).await;
}

#[actix_web::test]
async fn an_hs256_token_keyed_with_the_public_key_or_unsigned_is_refused() {
    let dir = TempDir::new("keys");
    let (app, _) = app_signing_with(&dir, JwtAlgorithm::EdDSA).await;
    let user = app.new_user("confused").await;
    let set = jwks(&app.url("/.well-known/jwks.json")).await;
    let (kid, public) = (&set["keys"][0]["kid"], &set["keys"][0]["x"]);
    let claims = claims_of(&user.token);
    let encode = |header: &Value| {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    };

    // The published key, as the HMAC secret a confused verifier would take.
    let signed = encode(&json!({ "alg": "HS256", "typ": "JWT", "kid": kid }));
    let secret = URL_SAFE_NO_PAD.decode(public.as_str().unwrap()).unwrap();
    let mac = {
        use hmac::Mac as _;
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret)
            .unwrap()
            .chain_update(signed.as_bytes())
            .finalize()
            .into_bytes()
    };
    let confused = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac));
    let unsigned = format!(
        "{}.",
        encode(&json!({ "alg": "none", "typ": "JWT", "kid": kid }))
    );
    let kidless = {
        let header = Header::new(Algorithm::HS256);
        tollgate::auth::signing::install();
        let key = jsonwebtoken::EncodingKey::from_secret(&secret);
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };

    assert_eq!(app.me(&user.token).await.status(), StatusCode::OK);
    for forged in [confused, unsigned, kidless] {
        refused_as_invalid_token(app.me(&forged).await).await;
    }
}

/// Writes a config file naming `current` as the signing key and
/// `previous` as keys still accepted.
fn configure_keys(config: &Path, current: &Path, previous: &[&Path]) {
    let previous: Vec<String> = previous
        .iter()
        .map(|path| format!("{:?}", path.display().to_string()))
        .collect();
    let toml = format!(
        "[auth]\njwt_algorithm = \"EdDSA\"\njwt_key_file = {:?}\nprevious_key_files = [{}]\n",
        current.display().to_string(),
        previous.join(", ")
    );
    std::fs::write(config, toml).unwrap();
}

async fn status_with(server: &Server, token: &str) -> StatusCode {
    let request = server.request(Method::GET, "/api/v1/auth/session", Some(token));
    request.send().await.unwrap().status()
}

#[actix_web::test]
async fn a_key_rotated_under_traffic_signs_no_one_out_until_it_is_dropped() {
    let dir = TempDir::new("rotate");
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let first = new_key_file(&dir, "first.key", JwtAlgorithm::EdDSA);
    let (config, output) = (dir.join("tollgate.toml"), dir.join("output"));
    configure_keys(&config, &first, &[]);
    let config_arg = config.display().to_string();
    let env = production_env(&schema, &redis);
    let server = Server::start_with_output(
        &["--config", &config_arg, "serve"],
        &as_env(&env),
        Some(&output),
    )
    .await;
    server.sign_up("rotating").await;
    let (old_token, _) = server.sign_in("rotating").await;
    let old_kid = header_of(&old_token)["kid"].clone();

    // A client using its token every 100 ms through both reloads.
    let done = std::sync::atomic::AtomicBool::new(false);
    let client = async {
        let mut refused = Vec::new();
        let mut uses = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let status = status_with(&server, &old_token).await;
            if status != StatusCode::OK {
                refused.push(status);
            }
            uses += 1;
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        (uses, refused)
    };
    let rotation = async {
        let second = new_key_file(&dir, "second.key", JwtAlgorithm::EdDSA);
        configure_keys(&config, &second, &[&first]);
        server.reload(&output).await;
        let (new_token, _) = server.sign_in("rotating").await;
        let set = jwks(&server.url("/.well-known/jwks.json")).await;
        // Both keys published, the new one first, while the old verifies.
        let kids: Vec<Value> = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key["kid"].clone())
            .collect();
        // A few uses of the old token after the reload.
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (second, new_token, kids)
    };
    let ((uses, refused), (second, new_token, kids)) = futures_util::join!(client, rotation);

    assert!(uses >= 5, "the client made {uses} requests");
    assert!(
        refused.is_empty(),
        "refused during the rotation: {refused:?}"
    );
    let new_kid = header_of(&new_token)["kid"].clone();
    assert_ne!(new_kid, old_kid);
    assert_eq!(kids, [new_kid, old_kid]);

    // Dropped from the previous keys: its tokens end, the new ones live.
    configure_keys(&config, &second, &[]);
    server.reload(&output).await;
    let old = server.request(Method::GET, "/api/v1/auth/session", Some(&old_token));
    refused_as_invalid_token(old.send().await.unwrap()).await;
    assert_eq!(status_with(&server, &new_token).await, StatusCode::OK);
    assert_eq!(
        jwks(&server.url("/.well-known/jwks.json")).await["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[actix_web::test]
async fn three_replicas_with_the_same_keys_accept_each_others_tokens() {
    let dir = TempDir::new("replica-keys");
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let (current, previous) = (
        new_key_file(&dir, "current.key", JwtAlgorithm::ES256),
        new_key_file(&dir, "previous.key", JwtAlgorithm::EdDSA),
    );
    let mut env = production_env(&schema, &redis);
    env.extend([
        ("TOLLGATE__AUTH__JWT_ALGORITHM", "ES256".to_owned()),
        (
            "TOLLGATE__AUTH__JWT_KEY_FILE",
            current.display().to_string(),
        ),
        (
            "TOLLGATE__AUTH__PREVIOUS_KEY_FILES",
            previous.display().to_string(),
        ),
    ]);
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Server::start(&["serve"], &as_env(&env)).await);
    }
    let mut sets = Vec::new();
    for server in &servers {
        sets.push(jwks(&server.url("/.well-known/jwks.json")).await);
    }

    assert_eq!(sets[0]["keys"].as_array().unwrap().len(), 2);
    assert!(sets.iter().all(|set| *set == sets[0]), "{sets:?}");
    for (n, server) in servers.iter().enumerate() {
        let name = format!("everywhere-{n}");
        server.sign_up(&name).await;
        let (token, _) = server.sign_in(&name).await;
        for other in &servers {
            assert_eq!(status_with(other, &token).await, StatusCode::OK);
        }
    }
}

#[actix_web::test]
async fn check_config_refuses_a_mismatched_exposed_or_repeated_key() {
    let dir = TempDir::new("bad-keys");
    let ed = new_key_file(&dir, "ed.key", JwtAlgorithm::EdDSA);
    let es = new_key_file(&dir, "es.key", JwtAlgorithm::ES256);
    let write = |name: &str, text: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let exposed = write("exposed.key", &generate(JwtAlgorithm::EdDSA), 0o644);
    let exposed_secret = write("exposed.secret", &generate(JwtAlgorithm::HS256), 0o604);
    let public_default = write(
        "default.secret",
        "tollgate-embedded-default-secret-do-not-use-in-production",
        0o600,
    );
    let check = |algorithm: &str, key: &Path, previous: &str| {
        let key = key.display().to_string();
        output_of(
            &["check-config"],
            &[
                ("TOLLGATE__AUTH__JWT_ALGORITHM", algorithm),
                ("TOLLGATE__AUTH__JWT_KEY_FILE", &key),
                ("TOLLGATE__AUTH__PREVIOUS_KEY_FILES", previous),
            ],
        )
    };

    let (good, good_text) = check("EdDSA", &ed, &es.display().to_string());
    let (mismatch, mismatch_text) = check("ES256", &ed, "");
    let (open, open_text) = check("EdDSA", &exposed, "");
    let (repeated, repeated_text) = check("EdDSA", &ed, &ed.display().to_string());
    let (open_secret, open_secret_text) = check("HS256", &exposed_secret, "");
    let (public, public_text) = check("EdDSA", &ed, &public_default.display().to_string());
    let (overwrite, overwrite_text) = output_of(
        &[
            "keys",
            "generate",
            "--algorithm",
            "EdDSA",
            "--out",
            &ed.display().to_string(),
        ],
        &[],
    );

    assert!(good.status.success(), "{good_text}");
    assert!(good_text.contains("signing         EdDSA"), "{good_text}");
    assert!(!mismatch.status.success());
    assert!(
        mismatch_text.contains("is not a P-256 private key"),
        "{mismatch_text}"
    );
    assert!(!open.status.success());
    assert!(
        open_text.contains("is readable by others (mode 644)"),
        "{open_text}"
    );
    assert!(!repeated.status.success());
    assert!(
        repeated_text.contains("is the current signing key"),
        "{repeated_text}"
    );
    assert!(!open_secret.status.success());
    assert!(
        open_secret_text.contains("is readable by others (mode 604)"),
        "{open_secret_text}"
    );
    assert!(!public.status.success());
    assert!(
        public_text.contains("is the public default secret"),
        "{public_text}"
    );
    assert!(!overwrite.status.success(), "an existing key is kept");
    assert!(overwrite_text.contains("File exists"), "{overwrite_text}");
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(&ed).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600);
}
