//! Where metrics and traces go: a Prometheus registry that `/metrics`
//! renders (with the process's own CPU, memory, file and thread figures),
//! and, when `telemetry.otlp_endpoint` is set, an OpenTelemetry collector
//! that metrics and traces are pushed to over OTLP/HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus::{Encoder as _, Registry, TextEncoder};

use super::Metrics;
use crate::config::TelemetrySettings;

/// Bound on one push to the collector.
const OTLP_TIMEOUT: Duration = Duration::from_secs(10);

/// One service's metrics: the instruments and where they are read.
pub struct MetricsExport {
    registry: Registry,
    provider: SdkMeterProvider,
    metrics: Metrics,
}

impl MetricsExport {
    /// Sets up the registry and, if configured, the OTLP push. Must run
    /// inside a Tokio runtime, which carries the pushes.
    pub fn new(settings: &TelemetrySettings) -> anyhow::Result<Self> {
        let registry = Registry::new();
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()?;
        let mut provider = SdkMeterProvider::builder()
            .with_resource(resource(settings))
            .with_reader(prometheus);
        if let Some(endpoint) = &settings.otlp_endpoint {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_endpoint(format!(
                    "{}/v1/metrics",
                    endpoint.as_str().trim_end_matches('/')
                ))
                .with_http_client(OtlpClient::new()?)
                .with_timeout(OTLP_TIMEOUT)
                .build()
                .context("setting up the OTLP metrics exporter")?;
            let reader = PeriodicReader::builder(exporter)
                .with_interval(settings.otlp_interval())
                .build();
            provider = provider.with_reader(reader);
        }
        let provider = provider.build();
        let metrics = Metrics::new(&provider.meter("tollgate"));
        Ok(Self {
            registry,
            provider,
            metrics,
        })
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Every metric in Prometheus's text format.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut text = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut text)?;
        Ok(String::from_utf8(text)?)
    }

    /// Pushes what has not been pushed yet and stops. Off the async thread:
    /// the push itself runs on it.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// Dropped without [`MetricsExport::shutdown`] (a failed start, a test),
/// the provider would shut down on the dropping thread and wait there for
/// a push that needs that very thread. A thread of its own does it instead.
impl Drop for MetricsExport {
    fn drop(&mut self) {
        let provider = self.provider.clone();
        std::thread::spawn(move || {
            let _ = provider.shutdown();
        });
    }
}

/// The provider of spans pushed to the collector over OTLP.
pub fn tracer_provider(
    settings: &TelemetrySettings,
    endpoint: &str,
) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_http_client(OtlpClient::new()?)
        .with_timeout(OTLP_TIMEOUT)
        .build()
        .context("setting up the OTLP span exporter")?;
    Ok(SdkTracerProvider::builder()
        .with_resource(resource(settings))
        .with_batch_exporter(exporter)
        .build())
}

fn resource(settings: &TelemetrySettings) -> Resource {
    Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build()
}

/// The exporters' HTTP client: the service's own reqwest client, with each
/// request run on the Tokio runtime that set it up. The exporters call it
/// from threads of their own, which have no runtime.
#[derive(Debug, Clone)]
struct OtlpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    /// Pushes failed in a row: the first is logged, then the recovery.
    failures: Arc<AtomicUsize>,
}

impl OtlpClient {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(OTLP_TIMEOUT).build()?,
            runtime: tokio::runtime::Handle::try_current()
                .context("the OTLP exporters need a Tokio runtime")?,
            failures: Arc::default(),
        })
    }
}

#[async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let mut answer = http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(answer.body(body)?)
        });
        let sent = sent.await?;
        let failure = match &sent {
            Ok(answer) if answer.status().is_success() => None,
            Ok(answer) => Some(format!("the collector answered {}", answer.status())),
            Err(err) => Some(err.to_string()),
        };
        match failure {
            Some(failure) if self.failures.fetch_add(1, Ordering::Relaxed) == 0 => {
                tracing::warn!(failure, "could not push to the OpenTelemetry collector");
            }
            Some(_) => {}
            None => {
                if self.failures.swap(0, Ordering::Relaxed) > 0 {
                    tracing::info!("pushing to the OpenTelemetry collector again");
                }
            }
        }
        sent
    }
}
