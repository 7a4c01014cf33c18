//! What wraps every route: security headers, cross-origin access, and a
//! problem body for actix's own 405. The request id, span, log line and
//! HTTP metrics are `observe`'s.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use actix_web::{
    Error, HttpMessage, ResponseError,
    body::{BoxBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    error::PayloadError,
    http::{StatusCode, header},
    middleware::{Condition, DefaultHeaders, ErrorHandlerResponse, ErrorHandlers, Next},
};
use futures_util::{Stream, StreamExt};

use super::error::{ApiError, ErrorCode};

/// Headers every answer carries unless its handler set them: nothing here
/// is a page to frame, sniff, cache or refer from, and answers hold tokens.
/// Served over TLS, browsers are also told to use nothing else for the
/// next two years (HSTS).
pub fn security_headers(tls: bool) -> DefaultHeaders {
    let headers = if tls {
        DefaultHeaders::new().add(("Strict-Transport-Security", "max-age=63072000"))
    } else {
        DefaultHeaders::new()
    };
    headers
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add((
            "Content-Security-Policy",
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("Cache-Control", "no-store"))
}

/// Cross-origin access for the configured browser origins only. With none
/// configured no CORS header is ever sent, so browsers keep other origins'
/// scripts out.
pub fn cors(origins: &[String]) -> Condition<actix_cors::Cors> {
    let allowed = origins
        .iter()
        .fold(actix_cors::Cors::default(), |cors, origin| {
            cors.allowed_origin(origin)
        });
    let cors = allowed
        .allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers([
            "authorization",
            "content-type",
            "idempotency-key",
            "x-request-id",
        ])
        .expose_headers([
            "location",
            "retry-after",
            "x-request-id",
            "idempotent-replayed",
        ])
        .max_age(3600);
    Condition::new(!origins.is_empty(), cors)
}

/// Gives actix's 405, which names the methods the route serves in `Allow`
/// (RFC 9110), a problem body like every other error.
pub fn method_not_allowed() -> ErrorHandlers<BoxBody> {
    ErrorHandlers::new().handler(StatusCode::METHOD_NOT_ALLOWED, |answer| {
        let (req, bare) = answer.into_parts();
        let mut problem = ApiError::new(
            ErrorCode::MethodNotAllowed,
            "this route does not serve that method",
        )
        .error_response();
        if let Some(allow) = bare.headers().get(header::ALLOW) {
            problem.headers_mut().insert(header::ALLOW, allow.clone());
        }
        let answer = ServiceResponse::new(req, problem).map_into_right_body();
        Ok(ErrorHandlerResponse::Response(answer))
    })
}

/// Bounds the time a client takes to send a request's body, counted from
/// the moment its head was read (actix bounds the head itself, through
/// `client_request_timeout`). A body still arriving at the deadline ends
/// in an I/O `TimedOut` error, which the extractors turn into 408.
pub async fn body_deadline(
    limit: Duration,
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length != "0");
    if has_body {
        let deadline = tokio::time::Instant::now() + limit;
        let body = req.take_payload();
        let timed = futures_util::stream::unfold(Some(body), move |body| async move {
            let mut body = body?;
            match tokio::time::timeout_at(deadline, body.next()).await {
                Ok(Some(chunk)) => Some((chunk, Some(body))),
                Ok(None) => None,
                Err(_) => {
                    let late = io::Error::new(io::ErrorKind::TimedOut, "request body too slow");
                    Some((Err(PayloadError::Io(late)), None))
                }
            }
        });
        let timed: Pin<Box<dyn Stream<Item = _>>> = Box::pin(timed);
        req.set_payload(Payload::from(timed));
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}
