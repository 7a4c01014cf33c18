//! Trace context that travels with a task: taken from the request that
//! enqueued it (a W3C `traceparent`), stored with the task, and made the
//! parent of each attempt's span, so one trace runs from the HTTP request
//! through the queue to the worker.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A W3C `traceparent` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(pub String);

const TRACEPARENT: &str = "traceparent";

impl TraceParent {
    /// The trace the current span belongs to, if spans are being traced.
    pub fn current() -> Option<Self> {
        let context = tracing::Span::current().context();
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        carrier.remove(TRACEPARENT).map(Self)
    }
}

/// Makes `span` a child of the trace `parent` names.
pub fn continue_trace(span: &tracing::Span, parent: Option<&TraceParent>) {
    let Some(TraceParent(parent)) = parent else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), parent.clone())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    // Without a span subscriber (no collector configured) there is nothing
    // to attach to, and nothing lost.
    let _ = span.set_parent(context);
}
