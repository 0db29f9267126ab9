//! Telemetry from the start: `tracing` everywhere, an OTLP exporter switched on by the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, and W3C trace context carried across every gRPC hop and into
//! the vm-agent stream, so one spawn is one trace from the REST call to the vm-agent.

mod propagation;

pub use propagation::{
    TraceInterceptor, current_traceparent, set_parent_from_headers, set_parent_from_traceparent,
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes and shuts the exporter down when dropped (or on `shutdown`).
#[must_use = "dropping the guard shuts telemetry down"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("telemetry shutdown failed: {err}");
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), text or JSON lines on
/// stderr, and an OTLP span exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Safe to call more
/// than once (later calls keep the first subscriber).
pub fn init(service_name: &str, json: bool) -> Guard {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = otlp_provider(service_name);
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("covibe")));
    let fmt_text = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let fmt_json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_text)
        .with(fmt_json)
        .with(otel_layer)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        tracing::info!(service = service_name, "exporting traces over otlp");
    }
    Guard {
        provider: if installed { provider } else { None },
    }
}

fn otlp_provider(service_name: &str) -> Option<SdkTracerProvider> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
    if endpoint.trim().is_empty() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("otlp exporter disabled: {err}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}
