//! A business service beside Tollgate, as the older systems split them: its
//! own small HTTP server whose `/data` serves only callers with a valid
//! Tollgate token. It checks a token one of two ways:
//!
//! - `VERIFY=introspect` (the default): each request's token goes to
//!   Tollgate's introspection endpoint, whose answer says whether the
//!   session is alive and also reinflates it, so using this service keeps
//!   a user signed in. A round trip per request.
//! - `VERIFY=jwks`, when Tollgate signs with `EdDSA` or `ES256`: the token's
//!   signature is checked here with the public keys Tollgate publishes at
//!   `/.well-known/jwks.json`, fetched once and again only when a token
//!   names a key not yet seen (a rotation). No round trip; but a signature
//!   proves only who the token was issued to and until when, not that its
//!   session is still alive: a signed-out token passes until it expires,
//!   and using this service does not keep the session alive.
//!
//! `/data/live` always introspects: the route for what must not be served
//! to a session that has ended.
//!
//! ```sh
//! TOLLGATE_URL=http://127.0.0.1:8080 \
//! INTROSPECTION_SECRET=... \
//! VERIFY=jwks \
//! BIND=127.0.0.1:8090 \
//! cargo run --example business_service
//! ```
//!
//! With `BIND=127.0.0.1:0` the system picks a free port; the first line on
//! standard output names it.
//!
//! Callers send `Authorization: Bearer <token>`, or the token alone in a
//! `token` header, as the older clients did.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, http::header, web};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

/// Where Tollgate is, and the credential it expects of services.
struct Tollgate {
    client: reqwest::Client,
    introspect_url: String,
    secret: String,
}

/// What Tollgate said of a caller's token.
enum Verdict {
    Active(Value),
    Inactive,
    /// Tollgate could not be asked: not the caller's fault.
    Unknown(String),
}

impl Tollgate {
    async fn introspect(&self, token: &str) -> Verdict {
        let asked = self
            .client
            .post(&self.introspect_url)
            .bearer_auth(&self.secret)
            .json(&json!({ "token": token }))
            .send()
            .await;
        let response = match asked {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => {
                return Verdict::Unknown(format!("Tollgate answered {}", response.status()));
            }
            Err(err) => return Verdict::Unknown(err.to_string()),
        };
        match response.json::<Value>().await {
            Ok(answer) if answer["active"] == true => Verdict::Active(answer),
            Ok(_) => Verdict::Inactive,
            Err(err) => Verdict::Unknown(err.to_string()),
        }
    }
}

/// The keys, and when they were last fetched.
#[derive(Default)]
struct Fetched {
    by_kid: HashMap<String, (Algorithm, DecodingKey)>,
    at: Option<Instant>,
}

/// Tollgate's public keys by `kid`, for checking signatures here.
struct LocalKeys {
    client: reqwest::Client,
    jwks_url: String,
    issuer: String,
    keys: Mutex<Fetched>,
    /// Held while fetching: requests that meet an unknown `kid` meanwhile
    /// wait for that fetch instead of making their own.
    fetching: tokio::sync::Mutex<()>,
    /// Least time between two fetches, however many unknown `kid`s come:
    /// a forged token cannot make this service hammer Tollgate.
    min_refresh: Duration,
}

/// How long a fetched key set is used before it is fetched again, as
/// Tollgate's `Cache-Control` says: a key Tollgate dropped stops working
/// here within it.
const KEYS_MAX_AGE: Duration = Duration::from_secs(300);

impl LocalKeys {
    /// The key `kid` names, unless the set is too old to trust.
    fn cached(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        let keys = self.fetched();
        let fresh = keys.at.is_some_and(|at| at.elapsed() < KEYS_MAX_AGE);
        keys.by_kid.get(kid).filter(|_| fresh).cloned()
    }

    fn fetched(&self) -> std::sync::MutexGuard<'_, Fetched> {
        self.keys
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Fetches the key set again to find `kid`, unless another request is
    /// doing so (then its answer is used) or it was fetched a moment ago.
    /// Only a fetch that worked counts against the pace.
    async fn refresh(&self, kid: &str) -> Result<(), String> {
        let _fetching = self.fetching.lock().await;
        if self.cached(kid).is_some() {
            return Ok(());
        }
        let at = self.fetched().at;
        if at.is_some_and(|at| at.elapsed() < self.min_refresh.min(KEYS_MAX_AGE)) {
            return Ok(());
        }
        let set: JwkSet = self
            .client
            .get(&self.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| err.to_string())?
            .json()
            .await
            .map_err(|err| err.to_string())?;
        let fetched = set
            .keys
            .iter()
            .filter_map(|jwk| {
                // Only the asymmetric algorithms Tollgate publishes, each
                // with a key of its own kind.
                let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm?) {
                    (AlgorithmParameters::OctetKeyPair(okp), KeyAlgorithm::EdDSA)
                        if okp.curve == EllipticCurve::Ed25519 =>
                    {
                        Algorithm::EdDSA
                    }
                    (AlgorithmParameters::EllipticCurve(ec), KeyAlgorithm::ES256)
                        if ec.curve == EllipticCurve::P256 =>
                    {
                        Algorithm::ES256
                    }
                    _ => return None,
                };
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((jwk.common.key_id.clone()?, (algorithm, key)))
            })
            .collect();
        *self.fetched() = Fetched {
            by_kid: fetched,
            at: Some(Instant::now()),
        };
        Ok(())
    }

    /// The token's claims if Tollgate's key signed it and it has not
    /// expired; nothing about its session.
    async fn verify(&self, token: &str) -> Verdict {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Verdict::Inactive;
        };
        let Some(kid) = header.kid else {
            return Verdict::Inactive;
        };
        let key = match self.cached(&kid) {
            Some(key) => key,
            None => {
                if let Err(why) = self.refresh(&kid).await {
                    return Verdict::Unknown(why);
                }
                match self.cached(&kid) {
                    Some(key) => key,
                    None => return Verdict::Inactive,
                }
            }
        };
        // The key's own algorithm, whatever the token's header says.
        let mut validation = Validation::new(key.0);
        validation.set_issuer(&[&self.issuer]);
        // Tollgate allows no slack on `exp` either.
        validation.leeway = 0;
        match jsonwebtoken::decode::<Value>(token, &key.1, &validation) {
            Ok(data) => Verdict::Active(data.claims),
            Err(_) => Verdict::Inactive,
        }
    }
}

/// How `/data` checks tokens.
enum Checker {
    Introspect,
    Jwks(LocalKeys),
}

/// The caller's token: a bearer token, or a bare `token` header.
fn token_of(req: &HttpRequest) -> Option<&str> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    bearer.or_else(|| req.headers().get("token")?.to_str().ok())
}

/// Serves `/data`, checking the token as `VERIFY` says.
async fn data(
    req: HttpRequest,
    tollgate: web::Data<Tollgate>,
    checker: web::Data<Checker>,
) -> HttpResponse {
    let Some(token) = token_of(&req) else {
        return HttpResponse::Unauthorized().json(json!({ "error": "a token is needed" }));
    };
    match checker.get_ref() {
        Checker::Introspect => answer(tollgate.introspect(token).await, "introspection"),
        Checker::Jwks(keys) => answer(keys.verify(token).await, "signature"),
    }
}

/// Serves `/data/live`: always asks Tollgate whether the session lives.
async fn live_data(req: HttpRequest, tollgate: web::Data<Tollgate>) -> HttpResponse {
    let Some(token) = token_of(&req) else {
        return HttpResponse::Unauthorized().json(json!({ "error": "a token is needed" }));
    };
    answer(tollgate.introspect(token).await, "introspection")
}

fn answer(verdict: Verdict, checked_by: &str) -> HttpResponse {
    match verdict {
        Verdict::Active(who) => HttpResponse::Ok().json(json!({
            "data": {
                "message": format!(
                    "hello, {}",
                    who["username"].as_str().or(who["sub"].as_str()).unwrap_or("you")
                ),
                "session_expires_at": who["expires_at"],
                "checked_by": checked_by,
            }
        })),
        Verdict::Inactive => {
            HttpResponse::Unauthorized().json(json!({ "error": "the token is not valid" }))
        }
        Verdict::Unknown(why) => {
            eprintln!("could not check a token: {why}");
            HttpResponse::ServiceUnavailable().json(json!({ "error": "try again shortly" }))
        }
    }
}

fn setting(name: &str, default: Option<&str>) -> std::io::Result<String> {
    match (std::env::var(name), default) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(default)) => Ok(default.to_owned()),
        (Err(_), None) => Err(std::io::Error::other(format!("set {name}"))),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let base = setting("TOLLGATE_URL", Some("http://127.0.0.1:8080"))?;
    let tollgate = web::Data::new(Tollgate {
        client: reqwest::Client::new(),
        introspect_url: format!("{}/api/v1/auth/introspect", base.trim_end_matches('/')),
        secret: setting("INTROSPECTION_SECRET", None)?,
    });
    tollgate::auth::signing::install();
    let checker = web::Data::new(match setting("VERIFY", Some("introspect"))?.as_str() {
        "introspect" => Checker::Introspect,
        "jwks" => Checker::Jwks(LocalKeys {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(std::io::Error::other)?,
            jwks_url: format!("{}/.well-known/jwks.json", base.trim_end_matches('/')),
            issuer: setting("ISSUER", Some("tollgate"))?,
            keys: Mutex::default(),
            fetching: tokio::sync::Mutex::default(),
            min_refresh: Duration::from_secs(
                setting("JWKS_MIN_REFRESH_SECS", Some("10"))?
                    .parse()
                    .map_err(std::io::Error::other)?,
            ),
        }),
        other => {
            return Err(std::io::Error::other(format!(
                "VERIFY is introspect or jwks, not {other}"
            )));
        }
    });
    let listener = std::net::TcpListener::bind(setting("BIND", Some("127.0.0.1:8090"))?)?;
    // The bound address, not the asked one: with port 0 the system picks it.
    let address = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(tollgate.clone())
            .app_data(checker.clone())
            .route("/data", web::get().to(data))
            .route("/data/live", web::get().to(live_data))
    })
    .listen(listener)?;
    println!("business service listening on {address}, asking Tollgate at {base}");
    server.run().await
}
