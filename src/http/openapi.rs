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

use std::collections::BTreeMap;
use std::sync::OnceLock;

use actix_web::{HttpResponse, http::header};
use utoipa::openapi::{
    self, Components, Content, RefOr, Response,
    header::HeaderBuilder,
    security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme},
};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorCode, Problem};

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
    components(schemas(Problem)),
    tags(
        (name = "auth", description = "Accounts, sessions and tokens"),
        (name = "users", description = "The signed-in user"),
        (name = "tasks", description = "The signed-in user's tasks and queue"),
        (name = "health", description = "Liveness, readiness, metrics and this document"),
        (name = "compat", description = "The routes of the services Tollgate replaces"),
    ),
)]
pub struct ApiDoc;

/// The document, rendered once, and the page that reads it to people.
static DOCUMENT: OnceLock<String> = OnceLock::new();
static DOCS: OnceLock<String> = OnceLock::new();

/// Renders the document from the route table's `operations`, described
/// here, with the errors every route of a kind can give added by rule.
/// Done as the server starts, so that a fault in it shows then rather
/// than on a request.
pub fn prepare(operations: impl FnOnce() -> openapi::OpenApi) {
    let document = DOCUMENT.get_or_init(|| {
        let mut document = ApiDoc::openapi();
        PublicSchemes.modify(&mut document);
        render(document, operations())
    });
    DOCS.get_or_init(|| {
        let document = serde_json::from_str(document).expect("the document is JSON");
        super::reference::render(&document, "/openapi.json")
    });
}

/// `base` with `operations` merged in and the errors every route of a kind
/// can give added, as JSON.
pub fn render(mut base: openapi::OpenApi, operations: openapi::OpenApi) -> String {
    base.merge(operations);
    CommonErrors.modify(&mut base);
    base.to_json().expect("the OpenAPI document serializes")
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.get().map_or("{}", String::as_str))
}

/// A page to read this document in a browser, rendered from it on the
/// server: nothing is loaded from anywhere else.
#[utoipa::path(get, path = "/docs", tag = "health",
    responses((status = 200, description = "An HTML page that reads /openapi.json to people", content_type = "text/html", body = String)))]
pub async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, super::reference::POLICY))
        .body(DOCS.get().map_or("", String::as_str))
}

/// The public listener's security schemes.
struct PublicSchemes;

impl Modify for PublicSchemes {
    fn modify(&self, doc: &mut openapi::OpenApi) {
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
            "service_basic",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "Any client name, and `auth.introspection_secret` as the password \
                         (RFC 7662 clients)",
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
    }
}

/// The security requirements whose bearer is checked as a token: a
/// missing or wrong one is a 401 with the RFC 6750 challenge.
const BEARER_SCHEMES: [&str; 2] = ["bearer", "admin"];

/// Adds the errors every route of a kind can give.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        use ErrorCode::*;
        for item in doc.paths.paths.values_mut() {
            for operation in operations(item) {
                let responses = &mut operation.responses.responses;
                // An error the handler names without a body is a problem.
                for (status, response) in responses.iter_mut() {
                    if let RefOr::T(response) = response
                        && is_error(status)
                        && response.content.is_empty()
                    {
                        response
                            .content
                            .insert(PROBLEM_JSON.to_owned(), problem_content());
                    }
                }
                let mut codes = Vec::new();
                let has_body = operation.request_body.is_some();
                if has_body {
                    codes.extend([
                        MalformedJson,
                        PayloadTooLarge,
                        RequestTimeout,
                        UnsupportedMediaType,
                        InvalidInput,
                    ]);
                }
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let bearer = operation.security.iter().flatten().any(|requirement| {
                    serde_json::to_value(requirement).is_ok_and(|value| {
                        BEARER_SCHEMES
                            .iter()
                            .any(|scheme| value.get(scheme).is_some())
                    })
                });
                if bearer {
                    codes.extend([MissingCredentials, InvalidToken]);
                }
                // A route with a body or credentials reaches a store through
                // an actor: either may be out of reach or too busy.
                if has_body || secured {
                    codes.extend([StorageUnavailable, ServiceUnavailable]);
                }
                let responses = &mut operation.responses.responses;
                if !codes.is_empty() || responses.values().any(is_problem) {
                    codes.push(Internal);
                }
                add_errors(responses, &codes);
                for (status, response) in responses.iter_mut() {
                    if let RefOr::T(response) = response {
                        describe_headers(status, response);
                    }
                }
            }
        }
    }
}

/// Every operation of a path. Tollgate serves no other methods.
fn operations(item: &mut openapi::PathItem) -> Vec<&mut openapi::path::Operation> {
    [item.get.as_mut(), item.post.as_mut(), item.delete.as_mut()]
        .into_iter()
        .flatten()
        .collect()
}

fn is_error(status: &str) -> bool {
    status.parse::<u16>().is_ok_and(|status| status >= 400)
}

fn is_problem(response: &RefOr<Response>) -> bool {
    matches!(response, RefOr::T(response) if response.content.contains_key(PROBLEM_JSON))
}

/// Adds `codes` to the answers, grouped by status, as problems: a status
/// the operation already documents gets the codes it does not name yet
/// appended to its description.
fn add_errors(responses: &mut BTreeMap<String, RefOr<Response>>, codes: &[ErrorCode]) {
    let mut by_status: BTreeMap<String, Vec<ErrorCode>> = BTreeMap::new();
    for &code in codes {
        by_status
            .entry(code.status().as_u16().to_string())
            .or_default()
            .push(code);
    }
    for (status, codes) in by_status {
        let response = responses
            .entry(status)
            .or_insert_with(|| RefOr::T(Response::new("")));
        let RefOr::T(response) = response else {
            continue;
        };
        response
            .content
            .entry(PROBLEM_JSON.to_owned())
            .or_insert_with(problem_content);
        let named = |code: &ErrorCode| format!("`{}`", code.as_str());
        let missing: Vec<String> = codes
            .iter()
            .map(named)
            .filter(|name| !response.description.contains(name.as_str()))
            .collect();
        if !missing.is_empty() {
            let joined = missing.join(", ");
            response.description = if response.description.is_empty() {
                joined
            } else {
                format!("{}; {joined}", response.description)
            };
        }
    }
}

/// The headers an answer can carry whatever its route: every one has
/// `x-request-id`, and a 401 has the RFC 6750 challenge.
fn describe_headers(status: &str, response: &mut Response) {
    let string_header = |description: &str| {
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(
                    openapi::ObjectBuilder::new().schema_type(openapi::Type::String),
                ))
                .description(Some(description))
                .build(),
        )
    };
    response.headers.insert(
        "x-request-id".to_owned(),
        string_header("The request's id: the client's own if it sent a printable one of at most 128 characters"),
    );
    if status == "401" {
        response.headers.insert(
            "www-authenticate".to_owned(),
            string_header(
                "`Bearer` without credentials, `Bearer error=\"invalid_token\"` with a bad token (RFC 6750)",
            ),
        );
    }
}

fn problem_content() -> RefOr<Content> {
    RefOr::T(Content::new(Some(RefOr::Ref(
        openapi::Ref::from_schema_name("Problem"),
    ))))
}
