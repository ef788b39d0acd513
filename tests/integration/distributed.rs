//! The distributed mode: scheduler, workers and consolidator as separate processes over the
//! real RabbitMQ and Redis, including crashes.

use std::time::Duration;

use crate::util::{
    accepted_id, deep_review_with, expect_success, fixture, read_report,
    repository_with_known_problems, Cluster, API_TOKEN, API_TOKEN_VARIABLE,
};

fn slow_agent_line_up(markers: &std::path::Path, seconds: &str, timeout: &str) -> String {
    format!(
        "[[agents]]\nname = \"builtin\"\nrunner = \"builtin\"\ntimeout = \"10s\"\n\n[[agents]]\nname = \"slow\"\nrunner = \"command\"\ncommand = [\"{}\", \"{}\", \"{seconds}\"]\ntimeout = \"{timeout}\"\n",
        fixture("agents/slow-agent.sh").display(),
        markers.display()
    )
}

fn starts(markers: &std::path::Path) -> usize {
    std::fs::read_dir(markers)
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn submit_wait_matches_the_embedded_review_across_many_reviews() {
    let mut cluster = Cluster::new("", "");
    cluster.start("scheduler");
    cluster.start("worker");
    cluster.start("worker");
    cluster.start("consolidator");
    cluster.wait_ready().await;
    let (repository, base) = repository_with_known_problems();
    let repository_path = repository.path().to_str().unwrap().to_string();

    // The embedded review of the same change, for comparison.
    let embedded = tempfile::tempdir().unwrap();
    expect_success(&crate::util::deep_review(&[
        "review",
        "--repo",
        &repository_path,
        "--base",
        &base,
        "--out",
        embedded.path().to_str().unwrap(),
        "--quiet",
    ]));
    let expected = read_report(embedded.path());

    // Many reviews at once, each waited for by its own client.
    let outputs: Vec<(tempfile::TempDir, std::process::Output)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let cluster = &cluster;
                let (repository, base) = (&repository, &base);
                scope.spawn(move || {
                    let out = tempfile::tempdir().unwrap();
                    let output = cluster.submit_and_wait(repository.path(), base, out.path(), &[]);
                    (out, output)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    let mut ids = std::collections::BTreeSet::new();
    for (out, output) in &outputs {
        expect_success(output);
        ids.insert(accepted_id(output));
        let report = read_report(out.path());
        assert_eq!(
            report.findings, expected.findings,
            "distributed and embedded reports agree"
        );
        assert_eq!(report.verdict, expected.verdict);
        for file in [
            "report.md",
            "report.html",
            "review.json",
            "agents/builtin.json",
        ] {
            assert!(
                out.path().join(file).is_file(),
                "{file} written by submit --wait"
            );
        }
        // The consolidator also wrote the files on its side.
        assert!(cluster
            .report_directory(&report.review_id)
            .join("report.md")
            .is_file());
    }
    assert_eq!(ids.len(), 8);
    for id in &ids {
        let state = cluster.state(id).await;
        assert_eq!(state["status"], "published");
        assert_eq!(state["cost_usd"], 0.0, "the builtin reviewer costs nothing");
    }
    // The consolidator recorded each review in the agent ledger in Redis, once.
    let stats = crate::util::expect_success(&crate::util::deep_review(&[
        "--config",
        cluster.config.to_str().unwrap(),
        "agents",
        "stats",
        "--distributed",
        "--json",
    ]));
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats[0]["agent"], "builtin", "{stats}");
    assert_eq!(stats[0]["reviews"], 8, "{stats}");
    assert_eq!(
        stats[0]["findings"]["critical"].as_u64().unwrap(),
        8 * expected.retro[0].findings.critical as u64,
        "{stats}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_killed_worker_task_is_redelivered_without_duplicates() {
    let markers = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(&slow_agent_line_up(markers.path(), "2", "30s"), "");
    cluster.let_agents_write(markers.path());
    cluster.start("scheduler");
    let doomed = cluster.start("worker");
    cluster.start("consolidator");
    cluster.wait_ready().await;
    let (repository, base) = repository_with_known_problems();
    let output = cluster.submit(&[
        "--repo",
        repository.path().to_str().unwrap(),
        "--base",
        &base,
    ]);
    let review_id = accepted_id(&expect_success_output(output));

    // Kill the worker while the slow agent runs.
    for _ in 0..100 {
        if starts(markers.path()) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        starts(markers.path()),
        1,
        "the slow agent started:\n{}",
        cluster.logs()
    );
    cluster.kill(doomed);
    cluster.start("worker");

    let state = cluster
        .wait_for_status(&review_id, "published", Duration::from_secs(30))
        .await;
    assert!(
        starts(markers.path()) >= 2,
        "the task was redelivered to the new worker"
    );
    let report: deep_review_protocol::Report =
        serde_json::from_value(state["report"].clone()).unwrap();
    let slow_findings = report
        .findings
        .iter()
        .filter(|finding| finding.title == "Slow agent's finding")
        .count();
    assert_eq!(slow_findings, 1, "no duplicate finding");
    assert_eq!(report.appendix.len(), 2);
    assert!(
        report.failed_agents.is_empty(),
        "{:?}",
        report.failed_agents
    );
    cluster.shutdown().await;
}

fn expect_success_output(output: std::process::Output) -> std::process::Output {
    expect_success(&output);
    output
}

#[tokio::test]
async fn a_restarted_consolidator_publishes_exactly_once() {
    let markers = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(&slow_agent_line_up(markers.path(), "2", "30s"), "");
    cluster.let_agents_write(markers.path());
    cluster.start("scheduler");
    cluster.start("worker");
    let first = cluster.start("consolidator");
    cluster.wait_ready().await;
    let (repository, base) = repository_with_known_problems();
    let review_id = accepted_id(&expect_success_output(cluster.submit(&[
        "--repo",
        repository.path().to_str().unwrap(),
        "--base",
        &base,
    ])));
    // Crash the consolidator mid-review, then start another.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(first);
    cluster.start("consolidator");
    cluster
        .wait_for_status(&review_id, "published", Duration::from_secs(30))
        .await;
    // Give a duplicate every chance to appear before checking there is none.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let redis = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let publications: Option<u64> = redis::cmd("HGET")
        .arg(format!("{}:{{{review_id}}}:state", cluster.prefix))
        .arg("publications")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(publications, Some(1), "{}", cluster.logs());
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_agent_that_never_answers_gives_a_partial_report_at_the_deadline() {
    let markers = tempfile::tempdir().unwrap();
    // The slow agent's queue has no consumer: only builtin tasks are taken.
    let mut cluster = Cluster::new(&slow_agent_line_up(markers.path(), "1", "2s"), "");
    cluster.let_agents_write(markers.path());
    let builtin_only = cluster.directory.path().join("builtin-only.toml");
    let text = std::fs::read_to_string(&cluster.config).unwrap().replace(
        "runners = [\"builtin\", \"command\"]",
        "runners = [\"builtin\"]",
    );
    assert!(text.contains("runners = [\"builtin\"]"));
    std::fs::write(&builtin_only, text).unwrap();
    cluster.start("scheduler");
    cluster.start_with_config("worker", &builtin_only);
    cluster.start("consolidator");
    cluster.wait_ready().await;
    let (repository, base) = repository_with_known_problems();
    let out = tempfile::tempdir().unwrap();
    let output = cluster.submit_and_wait(repository.path(), &base, out.path(), &[]);
    let stdout = expect_success(&output);
    assert!(stdout.contains("Agent slow did not complete"), "{stdout}");
    let report = read_report(out.path());
    assert!(report.partial);
    assert_eq!(report.failed_agents.len(), 1);
    assert_eq!(report.failed_agents[0].agent, "slow");
    assert!(report.failed_agents[0].reason.contains("deadline"));
    assert_eq!(starts(markers.path()), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_new_round_supersedes_the_unfinished_older_one() {
    let markers = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(&slow_agent_line_up(markers.path(), "2", "30s"), "");
    cluster.let_agents_write(markers.path());
    cluster.start("scheduler");
    cluster.start("worker");
    cluster.start("consolidator");
    cluster.wait_ready().await;
    let (repository, base) = repository_with_known_problems();
    let repository_path = repository.path().to_str().unwrap().to_string();
    let pull_request = ["--repository", "acme/shop", "--pr", "42"];
    let mut first_arguments = vec!["--repo", repository_path.as_str(), "--base", base.as_str()];
    first_arguments.extend(pull_request);
    let first = accepted_id(&expect_success_output(cluster.submit(&first_arguments)));
    let out = tempfile::tempdir().unwrap();
    let mut second_arguments = first_arguments.clone();
    second_arguments.extend([
        "--wait",
        "--timeout",
        "30s",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let second_output = cluster.submit(&second_arguments);
    let stdout = expect_success(&second_output);
    assert!(stdout.contains("(round 2)"), "{stdout}");
    let report = read_report(out.path());
    assert_eq!(report.header.round, 2);
    let older = cluster.state(&first).await;
    assert_eq!(older["status"], "superseded");
    assert!(
        older["report"].is_null(),
        "the superseded round's report is not published"
    );
    assert!(!cluster.report_directory(&first).exists());
    cluster.shutdown().await;
}

#[tokio::test]
async fn services_wait_for_their_dependencies_and_stop_on_sigterm() {
    // A broker nobody listens on: the worker retries instead of exiting, then stops cleanly.
    let mut cluster = Cluster::new("", "broker_url = \"amqp://guest:guest@127.0.0.1:1/%2f\"\n");
    let worker = cluster.start("worker");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = cluster.terminate(worker);
    let logs = cluster.logs();
    assert!(logs.contains("is unavailable; retrying"), "{logs}");
    assert!(
        logs.contains("guest:***@127.0.0.1:1"),
        "the password is not logged: {logs}"
    );
    assert!(!logs.contains("guest:guest"), "{logs}");
    assert!(
        !status.success(),
        "stopping before connecting is reported as a failure"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_git_url_review_is_read_through_the_workers_mirror() {
    let mut cluster = Cluster::new("", "");
    cluster.start("scheduler");
    cluster.start("worker");
    cluster.start("consolidator");
    cluster.wait_ready().await;
    let (repository, base) = repository_with_known_problems();
    let head = repository.git(&["rev-parse", "HEAD"]).trim().to_string();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/v1/reviews", cluster.port);
    let request = serde_json::json!({
        "source": {"kind": "git-remote", "url": format!("file://{}", repository.path().display()), "base_sha": base, "head_sha": head},
        "pull_request": {"repository": "acme/shop", "number": 3, "title": "From a URL"}
    });
    let response = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: serde_json::Value = response.json().await.unwrap();
    let review_id = accepted["id"].as_str().unwrap().to_string();
    let state = cluster
        .wait_for_status(&review_id, "published", Duration::from_secs(30))
        .await;
    let report: deep_review_protocol::Report =
        serde_json::from_value(state["report"].clone()).unwrap();
    assert_eq!(report.header.reviewed_sha.as_deref(), Some(head.as_str()));
    assert!(report.findings.iter().any(|finding| finding
        .locations
        .iter()
        .any(|location| location.to_string() == "config/settings.toml:2")));

    // Bad requests are refused with the reason.
    let mut short = request.clone();
    short["source"]["head_sha"] = serde_json::json!("abc123");
    let refused = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&short)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("full commit SHA"));
    let local = serde_json::json!({"source": {"kind": "local-repo", "path": "/srv/x", "base": "a", "head": "b"}});
    let mut no_sharing = Cluster::new("", "shared_filesystem = false\n");
    no_sharing.start("scheduler");
    no_sharing.wait_ready().await;
    let refused = client
        .post(format!("http://127.0.0.1:{}/v1/reviews", no_sharing.port))
        .bearer_auth(API_TOKEN)
        .json(&local)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("shared_filesystem"));
    // A git URL that names the workers' own disk is refused the same way.
    for local_url in [
        format!("file://{}", repository.path().display()),
        repository.path().display().to_string(),
    ] {
        let mut on_disk = request.clone();
        on_disk["source"]["url"] = serde_json::json!(local_url);
        let refused = client
            .post(format!("http://127.0.0.1:{}/v1/reviews", no_sharing.port))
            .bearer_auth(API_TOKEN)
            .json(&on_disk)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{local_url}");
        assert!(refused
            .text()
            .await
            .unwrap()
            .contains("workers' own filesystem"));
    }
    let garbage = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(garbage.status().is_client_error());
    no_sharing.shutdown().await;
    cluster.shutdown().await;
}

/// What the worker and consolidator log with the address of their telemetry endpoints.
const TELEMETRY_LISTENING: &str = "serving /metrics, /healthz and /readyz";

async fn scrape(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn readiness(port: u16) -> u16 {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}

/// The value of the sample line starting with `series` (name and labels), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[tokio::test]
async fn metrics_and_health_move_as_reviews_run() {
    let mut cluster = Cluster::new("", "agent_quality_refresh = \"1s\"\n");
    cluster.start("scheduler");
    let worker = cluster.start("worker");
    let consolidator = cluster.start("consolidator");
    cluster.wait_ready().await;
    let worker_port = cluster.logged_port(worker, TELEMETRY_LISTENING).await;
    let consolidator_port = cluster.logged_port(consolidator, TELEMETRY_LISTENING).await;
    for port in [worker_port, consolidator_port, cluster.port] {
        let mut status = 0;
        for _ in 0..100 {
            status = readiness(port).await;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status, 200, "port {port} ready:\n{}", cluster.logs());
    }

    let (repository, base) = repository_with_known_problems();
    let out = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        expect_success(&cluster.submit_and_wait(repository.path(), &base, out.path(), &[]));
    }
    let report = read_report(out.path());
    let worker_metrics = scrape(worker_port).await;
    assert_eq!(
        sample(
            &worker_metrics,
            "deep_review_agent_duration_seconds_count{agent=\"builtin\",outcome=\"completed\"}"
        ),
        Some(2.0),
        "{worker_metrics}"
    );
    assert_eq!(
        sample(
            &worker_metrics,
            "deep_review_queue_wait_seconds_count{agent=\"builtin\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &worker_metrics,
            "deep_review_tasks_in_flight{agent=\"builtin\"}"
        ),
        Some(0.0)
    );
    let consolidator_metrics = scrape(consolidator_port).await;
    assert_eq!(
        sample(
            &consolidator_metrics,
            "deep_review_reviews_total{outcome=\"published\"}"
        ),
        Some(2.0),
        "{consolidator_metrics}"
    );
    assert_eq!(
        sample(
            &consolidator_metrics,
            "deep_review_review_duration_seconds_count"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &consolidator_metrics,
            "deep_review_consolidation_duration_seconds_count"
        ),
        Some(2.0)
    );
    let critical = report
        .findings
        .iter()
        .filter(|finding| finding.severity == deep_review_protocol::Severity::Critical)
        .count();
    assert_eq!(
        sample(
            &consolidator_metrics,
            "deep_review_findings_total{severity=\"critical\"}"
        ),
        Some(2.0 * critical as f64)
    );
    assert!(
        !consolidator_metrics.contains(&report.review_id),
        "no review id in labels"
    );
    // The quality gauges come from the ledger in Redis at the next refresh.
    let builtin = "{agent=\"builtin\",model=\"\",runner=\"builtin\"}";
    let mut gauges = String::new();
    for _ in 0..50 {
        gauges = scrape(consolidator_port).await;
        if sample(
            &gauges,
            &format!("deep_review_agent_window_reviews{builtin}"),
        ) == Some(2.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        sample(
            &gauges,
            &format!("deep_review_agent_window_reviews{builtin}")
        ),
        Some(2.0),
        "{gauges}"
    );
    assert_eq!(
        sample(
            &gauges,
            &format!("deep_review_agent_failure_ratio{builtin}")
        ),
        Some(0.0)
    );
    // One agent: every finding is its alone.
    let expected_unique = if report.findings.is_empty() { 0.0 } else { 1.0 };
    assert_eq!(
        sample(
            &gauges,
            &format!("deep_review_agent_unique_insight_ratio{builtin}")
        ),
        Some(expected_unique),
        "{gauges}"
    );
    assert_eq!(
        sample(
            &gauges,
            &format!("deep_review_agent_cost_per_confirmed_finding_usd{builtin}")
        ),
        None,
        "nothing confirmed, no cost per confirmed finding"
    );
    // Service logs are JSON lines naming the review and agent of their span.
    let logs = cluster.logs();
    let finished: serde_json::Value = logs
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON log line"))
        .find(|line| line["fields"]["message"] == "agent finished")
        .unwrap_or_else(|| panic!("no agent-finished line:\n{logs}"));
    assert_eq!(finished["span"]["agent"], "builtin");
    assert!(finished["span"]["review"]
        .as_str()
        .is_some_and(|review| !review.is_empty()));
    assert_eq!(finished["fields"]["status"], "completed");
    let scheduler_metrics = scrape(cluster.port).await;
    // The scheduler serves the same registry; labelled families appear with their first
    // sample (webhooks arrive with the GitHub integration), unlabelled ones at once.
    assert_eq!(
        sample(&scheduler_metrics, "deep_review_partial_reports_total"),
        Some(0.0),
        "{scheduler_metrics}"
    );

    // SIGTERM stops the worker cleanly and it no longer reports ready. (That readiness turns
    // false during the drain itself is not observed here.)
    let status = cluster.terminate(worker);
    assert!(status.success(), "a clean stop:\n{}", cluster.logs());
    assert_ne!(readiness(worker_port).await, 200);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_draining_worker_is_not_ready_and_finishes_its_task() {
    let markers = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(&slow_agent_line_up(markers.path(), "2", "30s"), "");
    cluster.let_agents_write(markers.path());
    cluster.start("scheduler");
    let worker = cluster.start("worker");
    cluster.start("consolidator");
    cluster.wait_ready().await;
    let port = cluster.logged_port(worker, TELEMETRY_LISTENING).await;
    let (repository, base) = repository_with_known_problems();
    let review_id = accepted_id(&expect_success_output(cluster.submit(&[
        "--repo",
        repository.path().to_str().unwrap(),
        "--base",
        &base,
    ])));
    for _ in 0..100 {
        if starts(markers.path()) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(readiness(port).await, 200);

    // SIGTERM while the slow agent runs: not ready during the drain, yet still answering.
    cluster.signal_terminate(worker);
    let mut saw_draining = false;
    for _ in 0..40 {
        if readiness(port).await == 503 {
            saw_draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        saw_draining,
        "/readyz answered 503 while draining:\n{}",
        cluster.logs()
    );
    // And it keeps answering through the drain (the slow agent still runs), rather than
    // going dark the moment the signal arrives.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            readiness(port).await,
            503,
            "still answering mid-drain:\n{}",
            cluster.logs()
        );
    }
    assert!(
        cluster.wait(worker).success(),
        "a clean stop:\n{}",
        cluster.logs()
    );
    // The task in flight was finished during the drain, not abandoned.
    cluster
        .wait_for_status(&review_id, "published", Duration::from_secs(20))
        .await;
    assert_eq!(starts(markers.path()), 1, "no redelivery was needed");
    cluster.shutdown().await;
}

/// The API needs the bearer token; a request can only name agents of the line-up; the
/// scheduler will not start without a token; `/metrics` can have its own listener.
#[tokio::test]
async fn the_api_is_authenticated_and_takes_only_agent_names() {
    let mut cluster = Cluster::new(
        "[[agents]]\nname = \"builtin\"\nrunner = \"builtin\"\ntimeout = \"10s\"\n",
        "metrics_listen = \"127.0.0.1:0\"\n",
    );
    let scheduler = cluster.start("scheduler");
    cluster.wait_ready().await;
    let url = format!("http://127.0.0.1:{}/v1/reviews", cluster.port);
    let request = serde_json::json!({
        "source": {"kind": "inline-diff", "diff": "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"}
    });
    let client = reqwest::Client::new();
    let missing = client.post(&url).json(&request).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer"
    );
    assert!(missing.text().await.unwrap().contains(API_TOKEN_VARIABLE));
    let wrong = client
        .post(&url)
        .bearer_auth("not-the-token")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let state = client
        .get(format!("{url}/20260101-000000-00000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), 401, "reading a review needs the token too");

    // With the token, a request names agents; a definition is refused before anything runs.
    let mut defining = request.clone();
    defining["agents"] =
        serde_json::json!([{"name": "x", "runner": "command", "command": ["/bin/sh", "-c", "id"]}]);
    let refused = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&defining)
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    let mut unknown = request.clone();
    unknown["agents"] = serde_json::json!(["shell"]);
    let refused = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("no agent named `shell` is configured"));
    let mut named = request.clone();
    named["agents"] = serde_json::json!(["builtin"]);
    let accepted = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&named)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);

    // Probes stay open; /metrics moved to its own listener.
    let health = client
        .get(format!("http://127.0.0.1:{}/healthz", cluster.port))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics_on_api = client
        .get(format!("http://127.0.0.1:{}/metrics", cluster.port))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics_on_api.status(), 404);
    let metrics_port = cluster.logged_port(scheduler, TELEMETRY_LISTENING).await;
    let metrics = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);

    // No token, no scheduler.
    let config = cluster.config.to_str().unwrap().to_string();
    let output = deep_review_with(
        &["--config", &config, "scheduler"],
        &[(API_TOKEN_VARIABLE, "")],
        None,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("needs a token") && stderr.contains(API_TOKEN_VARIABLE),
        "{stderr}"
    );
    cluster.shutdown().await;
}
