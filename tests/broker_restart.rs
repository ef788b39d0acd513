//! A RabbitMQ restart (`rabbitmqctl stop_app` / `start_app`) in the middle of reviews: the
//! services reconnect, re-declare and re-consume, and every review completes. And a Redis
//! outage while an agent runs: its finished result is kept, never thrown away. Both stop a
//! server every test shares, so they run in this binary of their own, one after the other.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

#[path = "integration/util.rs"]
#[allow(dead_code)]
mod util;

use std::process::Command;
use std::time::Duration;

use util::{accepted_id, expect_success, fixture, repository_with_known_problems, Cluster};

/// Each test stops a server the other needs: they take turns.
static ONE_OUTAGE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rabbitmqctl(action: &str) {
    let output = Command::new("rabbitmqctl")
        .arg(action)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {action}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn reviews_complete_across_a_broker_restart() {
    let _turn = ONE_OUTAGE_AT_A_TIME.lock().await;
    let markers = tempfile::tempdir().unwrap();
    let line_up = format!(
        "[[agents]]\nname = \"builtin\"\nrunner = \"builtin\"\ntimeout = \"20s\"\n\n[[agents]]\nname = \"slow\"\nrunner = \"command\"\ncommand = [\"{}\", \"{}\", \"3\"]\ntimeout = \"20s\"\n",
        fixture("agents/slow-agent.sh").display(),
        markers.path().display()
    );
    let mut cluster = Cluster::new(&line_up, "");
    cluster.let_agents_write(markers.path());
    cluster.start("scheduler");
    cluster.start("worker");
    cluster.start("consolidator");
    cluster.wait_ready().await;
    let (repository, base) = repository_with_known_problems();
    let repository_path = repository.path().to_str().unwrap().to_string();
    let submit = |cluster: &Cluster| {
        let output = cluster.submit(&["--repo", &repository_path, "--base", &base]);
        expect_success(&output);
        accepted_id(&output)
    };
    let before: Vec<String> = (0..3).map(|_| submit(&cluster)).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    rabbitmqctl("stop_app");
    // Readiness follows the broker: not ready while it is gone, ready again once it is back.
    let readiness = format!("http://127.0.0.1:{}/readyz", cluster.port);
    let probe = || async {
        let response = reqwest::get(&readiness).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let mut during = (0, String::new());
    for _ in 0..40 {
        during = probe().await;
        if during.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(during.0, 503, "ready without a broker: {}", during.1);
    assert!(during.1.contains("broker"), "{}", during.1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    rabbitmqctl("start_app");
    let mut recovered = (0, String::new());
    for _ in 0..120 {
        recovered = probe().await;
        if recovered.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        recovered.0, 200,
        "not ready after the broker returned: {}",
        recovered.1
    );

    // The scheduler publishes again once the broker is back.
    let mut after = None;
    for _ in 0..60 {
        let output = cluster.submit(&["--repo", &repository_path, "--base", &base]);
        if output.status.success() {
            after = Some(accepted_id(&output));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after =
        after.unwrap_or_else(|| panic!("the scheduler never published again:\n{}", cluster.logs()));

    for review_id in before.iter().chain(std::iter::once(&after)) {
        let state = cluster
            .wait_for_status(review_id, "published", Duration::from_secs(60))
            .await;
        let report: deep_review_protocol::Report =
            serde_json::from_value(state["report"].clone()).unwrap();
        if report.partial {
            // Where the missing task is (ready, unacknowledged, or gone) says whose fault it is.
            let queues = Command::new("rabbitmqctl")
                .args([
                    "list_queues",
                    "name",
                    "messages_ready",
                    "messages_unacknowledged",
                    "consumers",
                ])
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
                .unwrap_or_default();
            let consumers = Command::new("rabbitmqctl")
                .args([
                    "list_consumers",
                    "queue_name",
                    "channel_pid",
                    "prefetch_count",
                ])
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
                .unwrap_or_default();
            panic!(
                "{review_id} lost an agent:\n{}\n--- queues\n{queues}\n--- consumers\n{consumers}",
                cluster.logs()
            );
        }
        assert_eq!(
            report
                .findings
                .iter()
                .filter(|finding| finding.title == "Slow agent's finding")
                .count(),
            1
        );
    }
    let logs = cluster.logs();
    assert!(logs.contains("reconnected to RabbitMQ"), "{logs}");
    cluster.shutdown().await;
}

/// Stops Redis, saving its data so that the restart (as `scripts/services.sh` starts it,
/// in the folder the running server keeps its snapshot in) brings the reviews back: an
/// outage, not a loss of state. Returns that folder.
fn stop_redis() -> String {
    let directory = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "config", "get", "dir"])
        .output()
        .expect("run redis-cli");
    // `config get dir` answers the name, then the value.
    let directory = String::from_utf8_lossy(&directory.stdout)
        .lines()
        .nth(1)
        .unwrap_or("/tmp")
        .trim()
        .to_string();
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "shutdown", "save"])
        .output()
        .expect("run redis-cli");
    // redis-cli reports the dropped connection of a successful shutdown as an error.
    let pong = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "ping"])
        .output()
        .expect("run redis-cli");
    assert!(
        !String::from_utf8_lossy(&pong.stdout).contains("PONG"),
        "Redis still answers after shutdown: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    directory
}

fn start_redis(directory: &str) {
    let status = Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ])
        .status()
        .expect("run redis-server");
    assert!(status.success());
    for _ in 0..100 {
        let pong = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "6379", "ping"])
            .output()
            .expect("run redis-cli");
        if String::from_utf8_lossy(&pong.stdout).contains("PONG") {
            // The snapshot did its job; a later start must not bring these keys back.
            let _ = std::fs::remove_file(std::path::Path::new(directory).join("dump.rdb"));
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("Redis did not come back");
}

#[tokio::test]
async fn a_redis_outage_while_an_agent_runs_keeps_its_result() {
    let _turn = ONE_OUTAGE_AT_A_TIME.lock().await;
    let markers = tempfile::tempdir().unwrap();
    let line_up = format!(
        "[[agents]]\nname = \"slow\"\nrunner = \"command\"\ncommand = [\"{}\", \"{}\", \"3\"]\ntimeout = \"30s\"\n",
        fixture("agents/slow-agent.sh").display(),
        markers.path().display()
    );
    let mut cluster = Cluster::new(&line_up, "");
    cluster.let_agents_write(markers.path());
    cluster.start("scheduler");
    cluster.start("worker");
    cluster.start("consolidator");
    cluster.wait_ready().await;
    let (repository, base) = repository_with_known_problems();
    let repository_path = repository.path().to_str().unwrap().to_string();
    let output = cluster.submit(&["--repo", &repository_path, "--base", &base]);
    expect_success(&output);
    let review_id = accepted_id(&output);
    // The agent is running (it takes 3 s) when Redis goes away, and finishes during the
    // outage: its result cannot be stored until Redis is back.
    for _ in 0..100 {
        if std::fs::read_dir(markers.path())
            .map(|entries| entries.count())
            .unwrap_or(0)
            > 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let directory = stop_redis();
    tokio::time::sleep(Duration::from_secs(6)).await;
    start_redis(&directory);

    let state = cluster
        .wait_for_status(&review_id, "published", Duration::from_secs(60))
        .await;
    let report: deep_review_protocol::Report =
        serde_json::from_value(state["report"].clone()).unwrap();
    let logs = cluster.logs();
    assert!(
        report.failed_agents.is_empty(),
        "{:?}\n{logs}",
        report.failed_agents
    );
    assert!(
        report
            .findings
            .iter()
            .any(|finding| finding.title == "Slow agent's finding"),
        "{logs}"
    );
    let starts = std::fs::read_dir(markers.path()).unwrap().count();
    assert_eq!(starts, 1, "the agent ran again for an outage:\n{logs}");
    assert!(
        logs.contains("could not store the result; keeping the task and trying again"),
        "{logs}"
    );
    cluster.shutdown().await;
}
