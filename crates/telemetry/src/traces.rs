//! Logs and traces: `tracing` everywhere, with an OpenTelemetry layer whose spans are
//! exported over OTLP when the standard `OTEL_*` variables ask for it, and a W3C trace
//! context that travels with each review (in AMQP headers and in the Redis records), so a
//! review's spans in the scheduler, the workers and the consolidator form one trace.

use std::collections::{BTreeMap, HashMap};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, with the spans (review, agent, trace id) it happened in.
    Json,
    /// Human-readable lines, coloured when `ansi`.
    Text {
        /// Whether to colour.
        ansi: bool,
    },
}

/// Why logging or tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// The OTLP exporter could not be built from the `OTEL_*` variables.
    #[error("the OTLP span exporter could not be set up: {0}")]
    Exporter(String),
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` names a protocol this build does not speak.
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL=`{0}` is not supported; use `http/protobuf` (the default) or `http/json`"
    )]
    UnsupportedProtocol(String),
    /// A global subscriber was already installed.
    #[error("logging was already set up: {0}")]
    AlreadySet(String),
}

/// The process's tracer provider. [`Tracing::shutdown`] flushes the spans not yet exported;
/// call it on exit, outside the async runtime.
pub struct Tracing {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Tracing {
    /// Whether spans leave the process (an OTLP endpoint is configured).
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if self.exporting {
            if let Err(error) = self.provider.shutdown() {
                eprintln!("warning: exporting the last spans failed: {error}");
            }
        }
    }
}

/// Whether the `OTEL_*` variables ask for spans to be exported: `OTEL_TRACES_EXPORTER=otlp`,
/// or an OTLP endpoint with no exporter named; never under `OTEL_SDK_DISABLED=true`.
fn export_requested(variable: impl Fn(&str) -> Option<String>) -> bool {
    if variable("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return false;
    }
    match variable("OTEL_TRACES_EXPORTER") {
        Some(exporter) => exporter
            .split(',')
            .any(|name| name.trim().eq_ignore_ascii_case("otlp")),
        None => {
            variable("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || variable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        }
    }
}

/// The OTLP protocol from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL`; `http/protobuf` by default, as the specification says.
fn protocol(variable: impl Fn(&str) -> Option<String>) -> Result<Protocol, TracingError> {
    let configured = variable("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| variable("OTEL_EXPORTER_OTLP_PROTOCOL"));
    match configured.as_deref().map(str::trim) {
        None | Some("") | Some("http/protobuf") => Ok(Protocol::HttpBinary),
        Some("http/json") => Ok(Protocol::HttpJson),
        Some(other) => Err(TracingError::UnsupportedProtocol(other.to_string())),
    }
}

fn environment(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Installs the global subscriber: `filter`, log lines in `format` on stderr, and the
/// OpenTelemetry layer. Spans always get trace ids (so logs and propagated contexts carry
/// them); they are exported only when the `OTEL_*` variables ask for it. `service` names
/// the process unless `OTEL_SERVICE_NAME` does.
///
/// Call it before starting the async runtime: the OTLP exporter's HTTP client is a
/// blocking one, which must not be created or dropped inside a runtime, and the batch
/// processor exports from its own thread, where an async client would find no reactor.
pub fn init_tracing(
    service: &str,
    filter: EnvFilter,
    format: LogFormat,
) -> Result<Tracing, TracingError> {
    let exporting = export_requested(environment);
    let mut resource = Resource::builder();
    if environment("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_string());
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    if exporting {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(protocol(environment)?)
            .build()
            .map_err(|error| TracingError::Exporter(error.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer("deep-review");
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        // The span list carries the review, agent and trace id into every line.
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
        LogFormat::Text { ansi } => fmt.with_ansi(ansi).boxed(),
    };
    // The log filter applies to log lines only: spans at info and above always reach the
    // OpenTelemetry layer, so a quiet command line still traces.
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(LevelFilter::INFO),
        )
        .try_init()
        .map_err(|error| TracingError::AlreadySet(error.to_string()))?;
    Ok(Tracing {
        provider,
        exporting,
    })
}

/// The W3C trace context (`traceparent`, `tracestate`) of `span`, to send along with work
/// that continues the trace elsewhere.
pub fn trace_context_of(span: &tracing::Span) -> BTreeMap<String, String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.into_iter().collect()
}

/// Makes `span` a child of the trace in `context` (a W3C carrier from [`trace_context_of`],
/// possibly from another process) and records its trace id in the span's `trace_id` field.
/// An empty or unreadable context leaves `span` the root of a new trace.
pub fn continue_trace(span: &tracing::Span, context: &BTreeMap<String, String>) {
    if !context.is_empty() {
        let carrier: HashMap<String, String> = context.clone().into_iter().collect();
        let parent = TraceContextPropagator::new().extract(&carrier);
        if parent.span().span_context().is_valid() {
            // Fails only when the span is disabled by the filter; then there is nothing to
            // link.
            let _ignored = span.set_parent(parent);
        }
    }
    record_trace_id(span);
}

/// Records the trace id of `span` in its `trace_id` field, so log lines carry it.
pub fn record_trace_id(span: &tracing::Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn export_is_off_by_default_and_follows_the_standard_variables() {
        assert!(!export_requested(variables(&[])));
        assert!(export_requested(variables(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318"
        )])));
        assert!(export_requested(variables(&[(
            "OTEL_TRACES_EXPORTER",
            "otlp"
        )])));
        assert!(!export_requested(variables(&[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ])));
        assert!(!export_requested(variables(&[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ])));
    }

    #[test]
    fn protocol_defaults_to_protobuf_and_refuses_grpc() {
        assert_eq!(protocol(variables(&[])).unwrap(), Protocol::HttpBinary);
        assert_eq!(
            protocol(variables(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])).unwrap(),
            Protocol::HttpJson
        );
        assert_eq!(
            protocol(variables(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ]))
            .unwrap(),
            Protocol::HttpBinary
        );
        let error = protocol(variables(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap_err();
        assert!(
            error.to_string().contains("`grpc` is not supported"),
            "{error}"
        );
    }

    #[test]
    fn a_context_crosses_from_one_span_to_another() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let sender = tracing::info_span!("review", trace_id = tracing::field::Empty);
            let context = trace_context_of(&sender);
            let traceparent = context.get("traceparent").expect("a traceparent");
            assert_eq!(traceparent.split('-').count(), 4, "{traceparent}");

            let receiver = tracing::info_span!("agent", trace_id = tracing::field::Empty);
            continue_trace(&receiver, &context);
            let sent = sender.context().span().span_context().trace_id();
            let received = receiver.context().span().span_context().trace_id();
            assert_eq!(sent, received);

            let unrelated = tracing::info_span!("other", trace_id = tracing::field::Empty);
            continue_trace(&unrelated, &BTreeMap::new());
            assert_ne!(unrelated.context().span().span_context().trace_id(), sent);
        });
    }
}
