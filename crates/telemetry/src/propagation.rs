//! W3C trace context in and out of gRPC metadata, HTTP headers and the vm-agent `Hello`.

use std::collections::HashMap;

use covibe_proto::tonic;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A tonic client interceptor that puts the current span's context on every outgoing call.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceInterceptor;

impl tonic::service::Interceptor for TraceInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let context = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
        });
        Ok(request)
    }
}

/// Makes `span` a child of the trace whose context the incoming headers carry, if any.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

/// The current span's context as a `traceparent` value (empty when not tracing).
pub fn current_traceparent() -> String {
    let context = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier);
    });
    carrier.remove("traceparent").unwrap_or_default()
}

/// Makes `span` a child of the given `traceparent` value (ignored when empty or malformed).
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use covibe_proto::tonic::service::Interceptor;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn trace_id(span: &tracing::Span) -> opentelemetry::trace::TraceId {
        span.context().span().span_context().trace_id()
    }

    #[test]
    fn trace_context_crosses_a_grpc_hop_and_the_vm_agent_hello() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let client = tracing::info_span!("rest_call");
            let entered = client.enter();
            let sent = TraceInterceptor.call(tonic::Request::new(())).unwrap();
            let header = sent
                .metadata()
                .get("traceparent")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            assert!(header.starts_with("00-"), "{header}");

            // The server side adopts the caller's trace from the request headers.
            let server = tracing::info_span!("grpc");
            set_parent_from_headers(&server, &sent.metadata().clone().into_headers());
            assert_eq!(trace_id(&server), trace_id(&client));

            // And a vm-agent given the traceparent joins the same trace.
            let traceparent = current_traceparent();
            let agent = tracing::info_span!("vm_agent");
            set_parent_from_traceparent(&agent, &traceparent);
            assert_eq!(trace_id(&agent), trace_id(&client));

            drop(entered);
            // Garbage is ignored rather than failing the request.
            let stray = tracing::info_span!("stray");
            set_parent_from_traceparent(&stray, "garbage");
            assert_ne!(trace_id(&stray), trace_id(&client));
        });
    }
}
