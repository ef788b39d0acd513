//! OpenTelemetry: one review is one trace across the scheduler, the worker and the
//! consolidator, exported over OTLP/HTTP (JSON) to a local collector, and its trace id is
//! on the services' log lines.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use serde_json::Value;

use crate::util::{expect_success, repository_with_known_problems, Cluster};

/// One exported span, as the collector received it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    attributes: Value,
}

impl ReceivedSpan {
    fn attribute(&self, key: &str) -> Option<String> {
        self.attributes
            .as_array()?
            .iter()
            .find(|attribute| attribute["key"] == key)
            .and_then(|attribute| attribute["value"]["stringValue"].as_str())
            .map(str::to_string)
    }
}

/// A local OTLP/HTTP collector that keeps every span posted to `/v1/traces`.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&spans);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let spans = Arc::clone(&shared);
                async move {
                    let request: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                    let mut spans = spans.lock().unwrap();
                    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
                        let service = resource["resource"]["attributes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|attribute| attribute["key"] == "service.name")
                            .and_then(|attribute| attribute["value"]["stringValue"].as_str())
                            .unwrap_or_default()
                            .to_string();
                        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                            for span in scope["spans"].as_array().into_iter().flatten() {
                                let text = |field: &str| {
                                    span[field].as_str().unwrap_or_default().to_string()
                                };
                                spans.push(ReceivedSpan {
                                    service: service.clone(),
                                    trace_id: text("traceId"),
                                    span_id: text("spanId"),
                                    parent_span_id: text("parentSpanId"),
                                    name: text("name"),
                                    attributes: span["attributes"].clone(),
                                });
                            }
                        }
                    }
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Collector { url, spans, task }
    }

    fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_review_is_one_trace_across_the_three_processes() {
    let collector = Collector::start().await;
    let mut cluster = Cluster::new("", "");
    let environment = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let config = cluster.config.clone();
    let scheduler = cluster.start_with("scheduler", &config, &environment);
    let worker = cluster.start_with("worker", &config, &environment);
    let consolidator = cluster.start_with("consolidator", &config, &environment);
    cluster.wait_ready().await;

    let (repository, base) = repository_with_known_problems();
    let out = tempfile::tempdir().unwrap();
    let output = cluster.submit_and_wait(repository.path(), &base, out.path(), &[]);
    let stdout = expect_success(&output);
    let review_id = stdout
        .split_whitespace()
        .nth(1)
        .expect("Review <id> accepted")
        .to_string();

    // A clean stop flushes the spans still buffered.
    for index in [scheduler, worker, consolidator] {
        assert!(cluster.terminate(index).success());
    }
    let spans = collector.spans();
    let root = spans
        .iter()
        .find(|span| {
            span.name == "review" && span.attribute("review").as_deref() == Some(&review_id)
        })
        .unwrap_or_else(|| panic!("no review span for {review_id} in {spans:#?}"));
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == root.trace_id)
        .collect();
    let services: BTreeSet<&str> = trace.iter().map(|span| span.service.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from([
            "deep-review-consolidator",
            "deep-review-scheduler",
            "deep-review-worker"
        ]),
        "{trace:#?}"
    );
    let agent = trace
        .iter()
        .find(|span| span.name == "agent")
        .expect("the worker's agent span");
    assert_eq!(
        agent.parent_span_id, root.span_id,
        "the agent span continues the review span"
    );
    assert_eq!(agent.attribute("agent").as_deref(), Some("builtin"));
    let consolidate = trace
        .iter()
        .find(|span| span.name == "consolidate")
        .expect("the consolidator's span");
    assert_eq!(consolidate.parent_span_id, root.span_id);
    // No other review's spans leaked into this trace.
    assert!(trace
        .iter()
        .filter_map(|span| span.attribute("review"))
        .all(|review| review == review_id));

    // The services' log lines carry the trace id.
    let logs = cluster.logs();
    let traced_lines = logs
        .lines()
        .filter(|line| line.contains(&format!("\"trace_id\":\"{}\"", root.trace_id)))
        .count();
    assert!(traced_lines >= 2, "trace id missing from the logs:\n{logs}");
    cluster.shutdown().await;
}
