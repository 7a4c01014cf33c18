//! What every request gets on its way through: an id (echoed from the
//! client when it sent a usable one) returned in `x-request-id`, a tracing
//! span carrying it, a log line when it is answered, and its place in the
//! HTTP metrics, labelled by route template, never by raw path.

use std::time::Instant;

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{
        Method,
        header::{HeaderName, HeaderValue},
    },
    middleware::Next,
    web,
};
use tracing::Instrument;

use super::AppState;
use crate::telemetry::{TraceParent, continue_trace};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent id that is echoed; longer ones are replaced.
const MAX_ECHOED_LEN: usize = 128;

/// The route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| (1..=MAX_ECHOED_LEN).contains(&v.len()))
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    // The route template, never the raw path: paths may carry ids.
    let route = req.match_pattern().unwrap_or_else(|| UNMATCHED.into());
    let method = known_method(req.method());
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.metrics.clone());
    let span = tracing::info_span!("request", request_id = %id, method, route = %route);
    // A caller that traces (a gateway, another service) is continued.
    let caller = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(|v| TraceParent(v.to_owned()));
    continue_trace(&span, caller.as_ref());
    let started = Instant::now();
    if let Some(metrics) = &metrics {
        metrics.request_started(method, &route);
    }

    let outcome = next.call(req).instrument(span.clone()).await;

    let status = match &outcome {
        Ok(response) => response.status(),
        Err(err) => err.as_response_error().status_code(),
    };
    let elapsed = started.elapsed();
    if let Some(metrics) = &metrics {
        metrics.request_finished(method, &route, status.as_u16(), elapsed.as_secs_f64());
    }
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "request handled"
        );
    });
    let mut response = outcome?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

/// The request's method if it is a standard one, else `_OTHER`: a client
/// can send any token as a method, and labels must stay a bounded set.
fn known_method(method: &Method) -> &'static str {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    STANDARD
        .iter()
        .find(|known| *known == method)
        .map_or("_OTHER", Method::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_methods_become_labels() {
        assert_eq!(known_method(&Method::POST), "POST");
        let invented = Method::from_bytes(b"SECRETTOKENabc123").unwrap();
        assert_eq!(known_method(&invented), "_OTHER");
    }
}
