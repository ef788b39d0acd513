//! The Grafana dashboard and the Prometheus rules in `deploy/` refer only to metrics the
//! services export (a misspelt name would give an empty panel or an alert that never fires).
//! `.ci/run` also checks the rules with `promtool check rules` and `promtool test rules`.

use std::collections::BTreeSet;
use std::path::Path;

use deep_review_telemetry::Metrics;

/// Every metric family the services export, with histogram series suffixes.
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::new().unwrap();
    // Labelled families only appear once they have a sample.
    metrics
        .reviews_total
        .with_label_values(&["published"])
        .inc();
    metrics
        .queue_wait_seconds
        .with_label_values(&["a"])
        .observe(1.0);
    metrics
        .agent_duration_seconds
        .with_label_values(&["a", "completed"])
        .observe(1.0);
    metrics
        .agent_tokens_total
        .with_label_values(&["a", "input"])
        .inc();
    metrics.agent_cost_usd_total.with_label_values(&["a"]).inc();
    metrics
        .findings_total
        .with_label_values(&["critical"])
        .inc();
    metrics.tasks_in_flight.with_label_values(&["a"]).inc();
    metrics
        .task_retries_total
        .with_label_values(&["a", "redelivered"])
        .inc();
    metrics
        .webhooks_total
        .with_label_values(&["pull_request", "accepted"])
        .inc();
    metrics
        .agent_quality_total
        .with_label_values(&["a", "findings"])
        .inc();
    let mut names = BTreeSet::new();
    for line in metrics.render().lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap().to_string(), parts.next().unwrap());
            if kind == "histogram" {
                for suffix in ["_bucket", "_count", "_sum"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            names.insert(name);
        }
    }
    names
}

fn referenced(text: &str) -> BTreeSet<String> {
    regex::Regex::new(r"deep_review_[a-z_]+")
        .unwrap()
        .find_iter(text)
        .map(|found| found.as_str().to_string())
        .collect()
}

#[test]
fn the_dashboard_queries_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/grafana/deep-review.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    let exported = exported();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expression = target["expr"].as_str().expect("expr");
            for name in referenced(expression) {
                assert!(
                    exported.contains(&name),
                    "panel {} queries {name}, which no service exports",
                    panel["title"]
                );
            }
        }
    }
    let all = referenced(&text);
    for family in [
        "deep_review_reviews_total",
        "deep_review_review_duration_seconds_bucket",
        "deep_review_agent_duration_seconds_bucket",
        "deep_review_tasks_in_flight",
        "deep_review_agent_tokens_total",
        "deep_review_agent_cost_usd_total",
        "deep_review_partial_reports_total",
        "deep_review_findings_total",
    ] {
        assert!(all.contains(family), "the dashboard shows {family}");
    }
}

#[test]
fn the_alert_rules_use_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    let exported = exported();
    let names = referenced(&text);
    assert!(!names.is_empty());
    for name in names {
        assert!(
            exported.contains(&name),
            "a rule uses {name}, which no service exports"
        );
    }
}
