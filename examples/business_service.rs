//! A business service beside Tollgate, as the older systems split them: its
//! own small HTTP server whose `/data` serves only callers with a live
//! Tollgate token. It keeps no keys and no sessions: each request's token
//! goes to Tollgate's introspection endpoint, whose answer also reinflates
//! the caller's session, so using this service keeps a user signed in.
//!
//! ```sh
//! TOLLGATE_URL=http://127.0.0.1:8080 \
//! INTROSPECTION_SECRET=... \
//! BIND=127.0.0.1:8090 \
//! cargo run --example business_service
//! ```
//!
//! With `BIND=127.0.0.1:0` the system picks a free port; the first line on
//! standard output names it.
//!
//! Callers send `Authorization: Bearer <token>`, or the token alone in a
//! `token` header, as the older clients did.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, http::header, web};
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

async fn data(req: HttpRequest, tollgate: web::Data<Tollgate>) -> HttpResponse {
    let Some(token) = token_of(&req) else {
        return HttpResponse::Unauthorized().json(json!({ "error": "a token is needed" }));
    };
    match tollgate.introspect(token).await {
        Verdict::Active(who) => HttpResponse::Ok().json(json!({
            "data": {
                "message": format!("hello, {}", who["username"].as_str().unwrap_or("you")),
                "session_expires_at": who["expires_at"],
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
    let listener = std::net::TcpListener::bind(setting("BIND", Some("127.0.0.1:8090"))?)?;
    // The bound address, not the asked one: with port 0 the system picks it.
    let address = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(tollgate.clone())
            .route("/data", web::get().to(data))
    })
    .listen(listener)?;
    println!("business service listening on {address}, asking Tollgate at {base}");
    server.run().await
}
