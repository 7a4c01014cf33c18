//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the body types' `ToSchema`, served at `/openapi.json`
//! with a page to read it at `/docs`.
//!
//! Each handler's attribute names the answers particular to it; an error
//! status named there without a body is a problem-details answer. The errors
//! that come with a kind of route are added here, by rule, so that no route
//! forgets one: a JSON body can be malformed, too large, of the wrong type
//! or invalid; a bearer token can be missing or no good; and any route that
//! answers with problem details can fail inside, find a store down or be
//! too busy.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use actix_web::{HttpResponse, http::header};
use utoipa::OpenApi;
use utoipa::openapi::{
    self, Components, Content, RefOr, Response,
    header::HeaderBuilder,
    security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme},
};

use super::{auth, compat, health, tasks, users};
use crate::error::{ErrorCode, Problem};

const PROBLEM_JSON: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate",
        description = "Sign-up and sign-in with sessions that lapse 30 seconds after their last \
            use and are reinflated by every use, and per-user task queues served fairly.\n\n\
            Errors are RFC 9457 problem details with a stable `code`. A method a route does not \
            serve gets 405 `method_not_allowed`; a path that is no route, 404 `not_found`. Every \
            answer carries `x-request-id`, echoed when the request sent one.",
    ),
    paths(
        auth::sign_up,
        auth::sign_in,
        auth::sign_out,
        auth::sign_out_all,
        auth::change_password,
        auth::current_session,
        auth::introspect,
        users::get_me,
        users::delete_me,
        tasks::enqueue_task,
        tasks::list_tasks,
        tasks::get_task,
        tasks::cancel_task,
        tasks::get_queue,
        health::live,
        health::ready,
        health::metrics,
        document,
        docs,
        compat::register,
        compat::login,
        compat::enqueue,
        compat::protected_route,
        compat::data,
        compat::validate_token,
        compat::profile,
        compat::auth_health,
    ),
    components(schemas(Problem)),
    modifiers(&CommonErrors),
    tags(
        (name = "auth", description = "Accounts, sessions and tokens"),
        (name = "users", description = "The signed-in user"),
        (name = "tasks", description = "The signed-in user's tasks and queue"),
        (name = "health", description = "Liveness, readiness, metrics and this document"),
        (name = "compat", description = "The routes of the services Tollgate replaces"),
    ),
)]
pub struct ApiDoc;

/// The document, rendered once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

/// The methods each route template serves, as an `Allow` header says them.
static ALLOW: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    let mut doc = ApiDoc::openapi();
    doc.paths
        .paths
        .iter_mut()
        .map(|(path, item)| {
            let methods = operations(item)
                .into_iter()
                .map(|(method, _)| method)
                .collect::<Vec<_>>()
                .join(", ");
            (path.clone(), methods)
        })
        .collect()
});

/// The `Allow` header for a route template: what a 405 must carry.
pub fn allowed_methods(route: &str) -> Option<&'static str> {
    ALLOW.get(route).map(String::as_str)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}

/// Scalar's reader, pinned to one release and checked by its digest, reads
/// the document from `/openapi.json`.
const DOCS_PAGE: &str = r#"<!doctype html>
<html>
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Tollgate API</title>
</head>
<body>
  <script id="api-reference" data-url="/openapi.json"></script>
  <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@1.72.1/dist/browser/standalone.js"
          integrity="sha384-U11tb2XnKvmwt8RlTvnwUnYgrN+ur4Xyh9htLhjajWNR/Oyl5AX5DEz00qRmlrmK"
          crossorigin="anonymous"></script>
</body>
</html>
"#;

/// What the page may load: the reader's script and styles from the CDN,
/// the document from here, and nothing else.
const DOCS_POLICY: &str = "default-src 'none'; script-src https://cdn.jsdelivr.net; \
     style-src 'unsafe-inline' https://cdn.jsdelivr.net; font-src https://cdn.jsdelivr.net \
     https://fonts.scalar.com; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// A page to read this document in a browser.
#[utoipa::path(get, path = "/docs", tag = "health",
    responses((status = 200, description = "An HTML page that renders /openapi.json", content_type = "text/html", body = String)))]
pub async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, DOCS_POLICY))
        .body(DOCS_PAGE)
}

/// Adds the security schemes and the errors every route of a kind can give.
struct CommonErrors;

impl utoipa::Modify for CommonErrors {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        use ErrorCode::*;
        let components = doc.components.get_or_insert_with(Components::new);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An `access_token` from sign-up or sign-in"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "service",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`auth.introspection_secret`, presented by a resource server",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "token",
                "An `access_token`, raw, as the older business service took it",
            ))),
        );
        for item in doc.paths.paths.values_mut() {
            for (_, operation) in operations(item) {
                // An error the handler names without a body of its own is
                // a problem.
                for (status, response) in &mut operation.responses.responses {
                    if let RefOr::T(response) = response
                        && status.parse::<u16>().is_ok_and(|status| status >= 400)
                        && response.content.is_empty()
                    {
                        response
                            .content
                            .insert(PROBLEM_JSON.to_owned(), problem_content());
                    }
                }
                let mut codes = Vec::new();
                if operation.request_body.is_some() {
                    codes.extend([
                        MalformedJson,
                        PayloadTooLarge,
                        UnsupportedMediaType,
                        InvalidInput,
                    ]);
                }
                let bearer = operation.security.iter().flatten().any(|requirement| {
                    serde_json::to_value(requirement)
                        .is_ok_and(|value| value.get("bearer").is_some())
                });
                if bearer {
                    codes.extend([MissingCredentials, InvalidToken]);
                }
                let answers_problems =
                    !codes.is_empty() || operation.responses.responses.values().any(is_problem);
                if answers_problems {
                    codes.extend([Internal, StorageUnavailable, ServiceUnavailable]);
                }
                add_errors(&mut operation.responses.responses, &codes);
            }
        }
    }
}

/// Every operation of a path, with its method. Tollgate serves no others.
fn operations(item: &mut openapi::PathItem) -> Vec<(&'static str, &mut openapi::path::Operation)> {
    [
        ("GET", item.get.as_mut()),
        ("POST", item.post.as_mut()),
        ("DELETE", item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation?)))
    .collect()
}

fn is_problem(response: &RefOr<Response>) -> bool {
    matches!(response, RefOr::T(response) if response.content.contains_key(PROBLEM_JSON))
}

/// Adds `codes` to the answers, grouped by status: a status the operation
/// already documents gets the codes appended to its description.
fn add_errors(responses: &mut BTreeMap<String, RefOr<Response>>, codes: &[ErrorCode]) {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for &code in codes {
        by_status
            .entry(code.status().as_u16())
            .or_default()
            .push(code);
    }
    for (status, codes) in by_status {
        let names = codes
            .iter()
            .map(|code| format!("`{}`", code.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        match responses.get_mut(&status.to_string()) {
            Some(RefOr::T(response)) => {
                response.description = format!("{}; {names}", response.description);
                response
                    .content
                    .entry(PROBLEM_JSON.to_owned())
                    .or_insert_with(problem_content);
            }
            _ => {
                let mut response = Response::new(names);
                response
                    .content
                    .insert(PROBLEM_JSON.to_owned(), problem_content());
                if codes.contains(&ErrorCode::MissingCredentials) {
                    let challenge = HeaderBuilder::new()
                        .schema(Some(
                            openapi::ObjectBuilder::new().schema_type(openapi::Type::String),
                        ))
                        .description(Some(
                            "`Bearer`, or `Bearer error=\"invalid_token\"` (RFC 6750)",
                        ))
                        .build();
                    response
                        .headers
                        .insert("www-authenticate".to_owned(), RefOr::T(challenge));
                }
                responses.insert(status.to_string(), RefOr::T(response));
            }
        }
    }
}

fn problem_content() -> RefOr<Content> {
    RefOr::T(Content::new(Some(RefOr::Ref(
        openapi::Ref::from_schema_name("Problem"),
    ))))
}
