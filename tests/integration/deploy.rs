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
    // A gauge vector shows only once a series is set.
    let quality = &metrics.agent_quality;
    for gauge in [
        &quality.reviews,
        &quality.unique_insight_ratio,
        &quality.false_positive_ratio,
        &quality.failure_ratio,
        &quality.cost_per_confirmed_usd,
    ] {
        gauge.with_label_values(&["a", "builtin", ""]).set(1.0);
    }
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

/// The Kubernetes manifests: every overlay renders (`kubectl kustomize`), validates
/// offline against the Kubernetes schemas (kubernetes-validate, strict) and the custom
/// resources' schemas in `deploy/k8s/schemas/`, and keeps the invariants operators rely on.
mod kubernetes {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use deep_review_protocol::RunnerKind;
    use serde_json::Value;

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    /// The validator's python, or `None` (said loudly) when no registry could be reached.
    fn validator() -> Option<PathBuf> {
        let output = Command::new("bash")
            .arg(root().join("scripts/k8s-tools.sh"))
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        match output.status.code() {
            Some(0) => Some(PathBuf::from(
                String::from_utf8(output.stdout).unwrap().trim(),
            )),
            Some(75) => {
                eprintln!("*** SKIPPED: kubectl or kubernetes-validate could not be installed (no registry) ***");
                None
            }
            _ => panic!("scripts/k8s-tools.sh failed: {output:?}"),
        }
    }

    /// The rendered, validated objects of `overlay`.
    fn render(python: &Path, overlay: &Path) -> Vec<Value> {
        let rendered = Command::new("kubectl")
            .arg("kustomize")
            .arg(overlay)
            .output()
            .unwrap();
        assert!(
            rendered.status.success(),
            "kubectl kustomize {}: {rendered:?}",
            overlay.display()
        );
        let mut validation = Command::new(python)
            .arg(root().join("scripts/validate-manifests.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            validation
                .stdin
                .take()
                .unwrap()
                .write_all(&rendered.stdout)
                .unwrap();
        }
        let validated = validation.wait_with_output().unwrap();
        assert!(
            validated.status.success(),
            "{} does not validate:\n{}",
            overlay.display(),
            String::from_utf8_lossy(&validated.stderr)
        );
        serde_json::from_slice(&validated.stdout).unwrap()
    }

    fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
        objects
            .iter()
            .filter(|object| object["kind"] == kind)
            .collect()
    }

    fn name(object: &Value) -> &str {
        object["metadata"]["name"].as_str().unwrap()
    }

    /// Whether `selector` (matchLabels) picks pods labelled `labels`.
    fn selects(selector: &Value, labels: &Value) -> bool {
        selector["matchLabels"]
            .as_object()
            .is_some_and(|wanted| wanted.iter().all(|(key, value)| &labels[key] == value))
    }

    #[test]
    fn every_overlay_renders_validates_and_keeps_the_invariants() {
        let Some(python) = validator() else { return };
        let overlays: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/k8s/overlays"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert!(overlays.len() >= 2, "{overlays:?}");
        let config: toml::Value = toml::from_str(
            &std::fs::read_to_string(root().join("deploy/k8s/base/config.toml")).unwrap(),
        )
        .unwrap();
        let drain =
            humantime::parse_duration(config["distributed"]["drain_timeout"].as_str().unwrap())
                .unwrap();
        let prefix = config["distributed"]
            .get("prefix")
            .and_then(|prefix| prefix.as_str())
            .unwrap_or("deep-review");
        let mut runners: Vec<RunnerKind> = config["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|agent| {
                serde_json::from_value(serde_json::json!(agent["runner"].as_str().unwrap()))
                    .unwrap()
            })
            .collect();
        runners.dedup();
        let keys: Vec<&str> = RunnerKind::ALL
            .iter()
            .filter_map(|runner| runner.default_api_key_variable())
            .collect();

        for overlay in &overlays {
            let objects = render(&python, overlay);
            let place = overlay.display();
            let deployments = of_kind(&objects, "Deployment");
            assert!(deployments.len() >= 2 + runners.len(), "{place}");
            for deployment in &deployments {
                let pod = &deployment["spec"]["template"]["spec"];
                let what = format!("{place}: {}", name(deployment));
                assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
                assert_eq!(
                    pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                    "{what}"
                );
                assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
                let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
                assert!(
                    grace > drain.as_secs(),
                    "{what}: grace {grace}s is not above the {drain:?} drain timeout"
                );
                for container in pod["containers"].as_array().unwrap() {
                    assert_eq!(
                        container["livenessProbe"]["httpGet"]["path"], "/healthz",
                        "{what}"
                    );
                    assert_eq!(
                        container["readinessProbe"]["httpGet"]["path"], "/readyz",
                        "{what}"
                    );
                    for bound in ["requests", "limits"] {
                        for resource in ["cpu", "memory"] {
                            assert!(
                                container["resources"][bound][resource].is_string(),
                                "{what}: {bound}.{resource}"
                            );
                        }
                    }
                    let security = &container["securityContext"];
                    assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
                    assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
                    assert_eq!(
                        security["capabilities"]["drop"],
                        serde_json::json!(["ALL"]),
                        "{what}"
                    );
                    // A worker holds only its own provider's key.
                    let variables: Vec<&str> = container["env"]
                        .as_array()
                        .map(|env| {
                            env.iter()
                                .filter_map(|variable| variable["name"].as_str())
                                .collect()
                        })
                        .unwrap_or_default();
                    let runner =
                        deployment["metadata"]["labels"]["deep-review.dev/runner"].as_str();
                    for key in &keys {
                        let allowed = runner.and_then(|runner| {
                            RunnerKind::ALL
                                .iter()
                                .find(|kind| kind.as_str() == runner)
                                .and_then(|kind| kind.default_api_key_variable())
                        }) == Some(*key);
                        assert!(!variables.contains(key) || allowed, "{what} holds {key}");
                    }
                }
                let labels = &deployment["spec"]["template"]["metadata"]["labels"];
                assert!(
                    of_kind(&objects, "PodDisruptionBudget")
                        .iter()
                        .any(|budget| selects(&budget["spec"]["selector"], labels)),
                    "{what} has no PodDisruptionBudget"
                );
            }
            // Every runner of the line-up: a worker consuming its queue, scaled on it.
            let scaled = of_kind(&objects, "ScaledObject");
            for runner in &runners {
                let worker = deployments
                    .iter()
                    .find(|deployment| {
                        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|variable| {
                                variable["name"] == "DEEP_REVIEW_DISTRIBUTED__RUNNERS"
                                    && variable["value"] == runner.as_str()
                            })
                    })
                    .unwrap_or_else(|| {
                        panic!("{place}: no worker Deployment consumes {}", runner.as_str())
                    });
                let queue = deep_review_transport::RabbitSettings {
                    url: String::new(),
                    prefix: prefix.to_string(),
                    delivery_limit: 1,
                    runners: vec![*runner],
                    max_backoff: std::time::Duration::from_secs(1),
                }
                .task_queue(*runner);
                let scaler = scaled
                    .iter()
                    .find(|scaler| scaler["spec"]["scaleTargetRef"]["name"] == name(worker))
                    .unwrap_or_else(|| panic!("{place}: {} has no ScaledObject", name(worker)));
                let trigger = &scaler["spec"]["triggers"][0];
                assert_eq!(trigger["type"], "rabbitmq");
                assert_eq!(trigger["metadata"]["queueName"], queue.as_str(), "{place}");
                assert_eq!(
                    trigger["metadata"]["protocol"], "http",
                    "{place}: unacknowledged tasks must count"
                );
                assert_ne!(trigger["metadata"]["excludeUnacknowledged"], "true");
                let (minimum, maximum) = (
                    scaler["spec"]["minReplicaCount"].as_u64().unwrap(),
                    scaler["spec"]["maxReplicaCount"].as_u64().unwrap(),
                );
                assert!(minimum <= maximum, "{place}: {}", name(scaler));
            }
            // Workers leave the cluster only for HTTPS and SSH, besides DNS, broker and Redis.
            let policies = of_kind(&objects, "NetworkPolicy");
            assert!(policies
                .iter()
                .any(|policy| name(policy) == "deep-review-default-deny"
                    && policy["spec"]["egress"].is_null()
                    && policy["spec"]["ingress"].is_null()));
            let worker_labels = serde_json::json!({"app.kubernetes.io/name": "deep-review", "app.kubernetes.io/component": "worker"});
            let ports: BTreeSet<u64> = policies
                .iter()
                .filter(|policy| selects(&policy["spec"]["podSelector"], &worker_labels))
                .flat_map(|policy| {
                    policy["spec"]["egress"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .flat_map(|rule| rule["ports"].as_array().cloned().unwrap_or_default())
                .map(|port| port["port"].as_u64().unwrap())
                .collect();
            assert_eq!(ports, BTreeSet::from([22, 53, 443, 5672, 6379]), "{place}");
            assert_eq!(of_kind(&objects, "ServiceMonitor").len(), 1, "{place}");
        }
    }

    /// What the image promises (non-root, read-only root, git), checked on this machine.
    #[test]
    fn the_binary_runs_as_the_images_user_on_a_read_only_root() {
        let output = Command::new("bash")
            .arg(root().join("scripts/check-runtime.sh"))
            .arg(env!("CARGO_BIN_EXE_deep-review"))
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success()
                && printed.contains("runtime check passed: uid 65532, read-only root"),
            "{output:?}"
        );
    }

    #[test]
    fn a_worker_deployment_picks_its_runners_from_one_variable() {
        let output = crate::util::deep_review_with(
            &["config", "show"],
            &[("DEEP_REVIEW_DISTRIBUTED__RUNNERS", "claude-code,codex")],
            None,
        );
        let shown = crate::util::expect_success(&output);
        assert!(
            shown.contains("runners = [\n    \"claude-code\",\n    \"codex\",\n]")
                || shown.contains("runners = [\"claude-code\", \"codex\"]"),
            "{shown}"
        );
    }
}
