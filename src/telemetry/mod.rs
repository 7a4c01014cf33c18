//! Observability: structured logs through `tracing` (to standard output
//! and, if configured, a daily-rotated file), spans pushed over OTLP, and
//! the metrics every part records through [`Metrics`].

mod export;
mod metrics;
mod propagation;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

pub use export::MetricsExport;
pub use metrics::{Metrics, Pool};
pub use propagation::{TraceParent, continue_trace};

use crate::config::{LogFormat, TelemetrySettings};

/// What must live while the process logs, and be flushed when it stops.
#[must_use = "logs to a file and spans to a collector stop when this is dropped"]
pub struct LogGuard {
    _file: Option<WorkerGuard>,
    tracer: Option<SdkTracerProvider>,
}

impl LogGuard {
    /// Pushes the spans not yet pushed. Off the async thread: the push
    /// itself runs on it.
    pub async fn shutdown(self) {
        if let Some(tracer) = self.tracer {
            let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
        }
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The spans pushed to a collector, whatever `telemetry.log_level` says:
/// a quieter log must not break the traces.
const SPAN_LEVEL: &str = "info";

/// Installs the global subscriber: standard output in the configured format
/// and level, the log file if any, and the span push if a collector is
/// configured. Must run inside a Tokio runtime when pushing.
pub fn init(settings: &TelemetrySettings) -> anyhow::Result<LogGuard> {
    let level = || settings.log_level.filter();
    let mut layers: Vec<BoxedLayer> = vec![
        format(settings.log_format, fmt::layer())
            .with_filter(level())
            .boxed(),
    ];

    let file = match &settings.log_file {
        Some(file) => {
            let appender = RollingFileAppender::builder()
                .rotation(Rotation::DAILY)
                .filename_prefix(file.name())
                .build(file.directory())
                .with_context(|| format!("opening telemetry.log_file {}", file.path().display()))?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = fmt::layer().with_writer(writer).with_ansi(false);
            layers.push(
                format(settings.log_format, layer)
                    .with_filter(level())
                    .boxed(),
            );
            Some(guard)
        }
        None => None,
    };

    let tracer = match &settings.otlp_endpoint {
        Some(endpoint) => {
            let provider = export::tracer_provider(settings, endpoint.as_str())?;
            let tracer = provider.tracer("tollgate");
            let spans = tracing_opentelemetry::layer().with_tracer(tracer);
            layers.push(spans.with_filter(EnvFilter::new(SPAN_LEVEL)).boxed());
            Some(provider)
        }
        None => None,
    };

    // A second call (as in tests) finds a subscriber installed and leaves it.
    let _ = Registry::default().with(layers).try_init();
    Ok(LogGuard {
        _file: file,
        tracer,
    })
}

/// A formatting layer in the configured format, request ids and task ids
/// carried by the spans every line is logged in.
fn format<W>(
    format: LogFormat,
    layer: fmt::Layer<Registry, fmt::format::DefaultFields, fmt::format::Format, W>,
) -> BoxedLayer
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = layer.with_target(false);
    match format {
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => layer.boxed(),
    }
}
