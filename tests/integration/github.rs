//! The GitHub integration end to end: webhook deliveries into the scheduler, the review
//! through workers and the consolidator, and the report published on a stub of GitHub's
//! API: one sticky comment, inline comments without duplicates, a neutral check run.

use std::path::Path;

use deep_review_github::webhook::sign;
use serde_json::{json, Value};

use crate::github_server::{files_and_diff, GitHubStub, StubPull, StubRepository, PLAIN_TOKEN};
use crate::util::{repository_with_known_problems, Cluster, GitRepo};

const SECRET: &str = "webhook-secret-for-tests";
const REPOSITORY: &str = "acme/widgets";

fn app_settings(stub: &GitHubStub) -> String {
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github/test-app-key.pem");
    format!(
        "\n[github]\napi_url = \"{}/api/v3\"\napp_id = 1\nprivate_key_path = \"{}\"\nreport_url_base = \"https://reviews.example.com/r\"\n",
        stub.url,
        key.display()
    )
}

pub(crate) fn stub_pull(repository: &GitRepo, base: &str, head: &str, title: &str) -> StubPull {
    let (files, diff) = files_and_diff(repository, base, head);
    let commits = repository
        .git(&[
            "log",
            "--reverse",
            "--format=%H %s",
            &format!("{base}..{head}"),
        ])
        .lines()
        .map(|line| {
            let (sha, subject) = line.split_once(' ').expect("log line");
            (sha.to_string(), subject.to_string())
        })
        .collect();
    StubPull {
        number: 7,
        title: title.to_string(),
        body: "Adds billing.\n\ncc @octocat".to_string(),
        author: "mona".to_string(),
        head_ref: "feature/billing".to_string(),
        head_sha: head.to_string(),
        base_sha: base.to_string(),
        draft: false,
        state: "open".to_string(),
        updated_at: chrono::Utc::now().to_rfc3339(),
        files,
        commits,
        diff: Some(diff),
    }
}

async fn deliver(
    port: u16,
    event: &str,
    delivery: &str,
    payload: &Value,
    signature: Option<String>,
) -> (u16, Value) {
    let body = payload.to_string();
    let mut request = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/github/webhook"))
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("content-type", "application/json")
        .body(body.clone());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    let response = request.send().await.expect("deliver");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn deliver_signed(port: u16, event: &str, delivery: &str, payload: &Value) -> (u16, Value) {
    let signature = sign(SECRET.as_bytes(), payload.to_string().as_bytes());
    deliver(port, event, delivery, payload, Some(signature)).await
}

/// Delivers `payload` signed, and checks the answer's status and result.
async fn expect_delivery(
    port: u16,
    event: &str,
    delivery: &str,
    payload: &Value,
    status: u16,
    result: &str,
) {
    let (answered, answer) = deliver_signed(port, event, delivery, payload).await;
    assert_eq!(
        (answered, answer["result"].as_str()),
        (status, Some(result)),
        "{event} {delivery}: {answer}"
    );
}

fn pull_request_event(action: &str, head_sha: &str) -> Value {
    json!({
        "action": action,
        "number": 7,
        "pull_request": { "number": 7, "state": "open", "draft": false, "head": { "sha": head_sha } },
        "repository": { "full_name": REPOSITORY, "name": "widgets", "owner": { "login": "acme" } },
        "installation": { "id": crate::github_server::INSTALLATION_ID },
        "sender": { "login": "mona" }
    })
}

fn completed_runs(state: &crate::github_server::StubState, head_sha: &str) -> Vec<Value> {
    state
        .check_runs
        .iter()
        .filter(|run| run["head_sha"] == head_sha && run["status"] == "completed")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_produce_one_sticky_comment_inline_comments_and_a_neutral_check_run() {
    let (repository, base) = repository_with_known_problems();
    let head = repository.git(&["rev-parse", "HEAD"]).trim().to_string();
    let stub = GitHubStub::start().await;
    stub.with(|state| {
        // An Enterprise Server: REST under /api/v3, GraphQL at /api/graphql.
        state.enterprise = true;
        let mut pulls = std::collections::BTreeMap::new();
        pulls.insert(
            7,
            stub_pull(
                &repository,
                &base,
                &head,
                "Add billing for @octocat <img src=x onerror=alert(1)>",
            ),
        );
        state.repositories.insert(
            REPOSITORY.to_string(),
            StubRepository {
                clone_url: repository.path().display().to_string(),
                archived: false,
                config: Some("exclude = [\"docs/**\"]\n".to_string()),
                pulls,
            },
        );
    });
    let mut cluster = Cluster::new("", "");
    let mut config = std::fs::read_to_string(&cluster.config).expect("config");
    config.push_str(&app_settings(&stub));
    std::fs::write(&cluster.config, config).expect("config");
    let config = cluster.config.clone();
    let environment = [("GITHUB_WEBHOOK_SECRET", SECRET)];
    cluster.start_with("scheduler", &config, &environment);
    cluster.start_with("worker", &config, &environment);
    cluster.start_with("consolidator", &config, &environment);
    cluster.wait_ready().await;
    let port = cluster.webhook_port().await;
    // The webhook has its own listener: the API's does not serve it, nor it the API.
    let on_api = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/github/webhook", cluster.port))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(on_api.status(), 404);
    let api_on_webhook = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/reviews"))
        .bearer_auth(crate::util::API_TOKEN)
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(api_on_webhook.status(), 404);

    // Signatures: missing, wrong and for another body are all refused.
    let opened = pull_request_event("opened", &head);
    let (status, _) = deliver(port, "pull_request", "d-0", &opened, None).await;
    assert_eq!(status, 401);
    let (status, _) = deliver(
        port,
        "pull_request",
        "d-0",
        &opened,
        Some(sign(b"wrong", opened.to_string().as_bytes())),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = deliver(
        port,
        "pull_request",
        "d-0",
        &opened,
        Some("sha256=zz".to_string()),
    )
    .await;
    assert_eq!(status, 401);
    // A repository webhook set to form encoding sends `payload=<json>`, signed as sent.
    let closed = pull_request_event("closed", &head).to_string();
    let form = format!(
        "payload={}",
        percent_encoding::utf8_percent_encode(&closed, percent_encoding::NON_ALPHANUMERIC)
    );
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/github/webhook"))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", "d-form")
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-hub-signature-256",
            sign(SECRET.as_bytes(), form.as_bytes()),
        )
        .body(form)
        .send()
        .await
        .expect("deliver");
    assert_eq!(answer.status().as_u16(), 202);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["result"], "ignored", "{answer}");
    // Events that ask for nothing are accepted and ignored.
    expect_delivery(
        port,
        "ping",
        "d-ping",
        &json!({"zen": "Design for failure."}),
        202,
        "ignored",
    )
    .await;
    expect_delivery(
        port,
        "pull_request",
        "d-closed",
        &pull_request_event("closed", &head),
        202,
        "ignored",
    )
    .await;
    expect_delivery(
        port,
        "pull_request",
        "d-broken",
        &json!({"action": 5}),
        400,
        "bad_payload",
    )
    .await;

    // Round 1.
    expect_delivery(port, "pull_request", "d-1", &opened, 202, "accepted").await;
    expect_delivery(port, "pull_request", "d-1", &opened, 200, "duplicate").await;
    // A captured delivery replayed under a new id is refused too: its signed body was seen.
    let (status, answer) = deliver_signed(port, "pull_request", "d-1-replayed", &opened).await;
    assert_eq!(
        (status, answer["result"].as_str()),
        (200, Some("duplicate"))
    );
    // An unsigned delivery cannot make up a metric label.
    let (status, _) = deliver(port, "made_up_label_1", "d-x", &opened, None).await;
    assert_eq!(status, 401);
    stub.wait_for(
        "round 1's completed check run",
        |state| !completed_runs(state, &head).is_empty(),
        || cluster.logs(),
    )
    .await;
    let round_one_inline = stub.with(|state| {
        assert!(
            state.unauthorised.is_empty(),
            "requests without credentials: {:?}",
            state.unauthorised
        );
        // One token per process (the scheduler and the consolidator), cached in each.
        assert_eq!(state.tokens_minted, 2, "installation tokens are cached");
        // The check run was started in progress, then completed neutral.
        let history: Vec<(String, Option<String>)> = state
            .check_run_history
            .iter()
            .map(|run| {
                (
                    run["status"].as_str().unwrap_or("").to_string(),
                    run["conclusion"].as_str().map(str::to_string),
                )
            })
            .collect();
        assert_eq!(
            history.first().map(|entry| entry.0.as_str()),
            Some("in_progress"),
            "{history:?}"
        );
        assert_eq!(state.check_runs.len(), 1, "{:#?}", state.check_runs);
        let run = &state.check_runs[0];
        assert_eq!(run["conclusion"], "neutral");
        assert_eq!(run["name"], "deep-review");
        let summary = run["output"]["summary"].as_str().unwrap_or("");
        assert!(summary.contains("| Critical |"), "{summary}");
        assert!(run["details_url"]
            .as_str()
            .unwrap_or("")
            .starts_with("https://reviews.example.com/r/"));
        // One sticky comment, sanitised, with the appendix collapsed and the report link.
        assert_eq!(state.issue_comments.len(), 1);
        let body = state.issue_comments[0]["body"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            body.starts_with(deep_review_github::REPORT_MARKER),
            "{body}"
        );
        assert!(body.contains("<details>"), "{body}");
        assert!(body.contains("https://reviews.example.com/r/"), "{body}");
        assert!(
            !body.contains("<img"),
            "raw HTML reached the comment: {body}"
        );
        assert!(
            body.contains("<a id=\"I1\"></a>") && !body.contains("&lt;a id="),
            "{body}"
        );
        assert!(!body.contains(" @octocat"), "a mention would ping: {body}");
        // docs/ is excluded by the repository's .deep-review.toml: named, not reviewed.
        assert!(body.contains("docs/notes.md"), "{body}");
        // Inline comments on the lines of serious findings, each with a fingerprint.
        assert!(!state.review_comments.is_empty(), "no inline comments");
        assert_eq!(state.reviews.len(), 1);
        for comment in &state.review_comments {
            let text = comment["body"].as_str().unwrap_or("");
            assert!(text.contains("<!-- deep-review:finding:"), "{text}");
            assert_ne!(comment["path"], "docs/notes.md");
        }
        state.review_comments.len()
    });
    assert!(round_one_inline >= 2, "expected several serious findings");

    // Round 2: a push fixes the leaked key; the synchronize delivery updates everything.
    let leaked_settings =
        std::fs::read_to_string(repository.path().join("config/settings.toml")).expect("read");
    repository.write("config/settings.toml", "[aws]\nregion = \"eu-west-1\"\n");
    // A line above moves the other findings of this file down: their comments stand.
    let service = std::fs::read_to_string(repository.path().join("app/service.py")).expect("read");
    repository.write(
        "app/service.py",
        &format!("\"\"\"Billing.\"\"\"\n{service}"),
    );
    let head_two = push(
        &stub,
        &repository,
        &base,
        "Move the credentials out of the repository",
    );
    let (status, _) = deliver_signed(
        port,
        "pull_request",
        "d-2",
        &pull_request_event("synchronize", &head_two),
    )
    .await;
    assert_eq!(status, 202);
    stub.wait_for(
        "round 2's completed check run",
        |state| !completed_runs(state, &head_two).is_empty(),
        || cluster.logs(),
    )
    .await;
    stub.with(|state| {
        let body = state.sticky_comment();
        assert!(body.contains("round 2"), "{body}");
        assert_eq!(state.issue_comments[0]["edits"], 1);
        let mut fingerprints: Vec<String> = state
            .review_comments
            .iter()
            .filter_map(|comment| {
                let text = comment["body"].as_str()?;
                let start = text.find("<!-- deep-review:finding:")?;
                Some(text[start..].to_string())
            })
            .collect();
        let total = fingerprints.len();
        fingerprints.sort();
        fingerprints.dedup();
        assert_eq!(
            fingerprints.len(),
            total,
            "an inline comment was duplicated"
        );
        // The fixed finding's comment says so and its thread is resolved.
        let resolved: Vec<&Value> = state
            .review_comments
            .iter()
            .filter(|comment| {
                comment["body"]
                    .as_str()
                    .unwrap_or("")
                    .contains("No longer reported")
            })
            .collect();
        assert!(!resolved.is_empty(), "the fixed finding was not marked");
        assert!(resolved
            .iter()
            .all(|comment| comment["path"] == "config/settings.toml"));
        assert!(!state.resolved_threads.is_empty());
        assert_eq!(
            state.review_comments.len(),
            round_one_inline,
            "findings whose lines moved got new comments"
        );
        assert_eq!(completed_runs(state, &head_two)[0]["conclusion"], "neutral");
    });

    // Round 3 by command: same head, no new inline comments, still one sticky comment.
    let inline_before = stub.with(|state| state.review_comments.len());
    let command = json!({
        "action": "created",
        "issue": { "number": 7, "state": "open", "pull_request": { "url": "https://api.github.com/repos/acme/widgets/pulls/7" } },
        "comment": { "body": "/deep-review", "user": { "login": "mona", "type": "User" }, "author_association": "MEMBER" },
        "repository": { "full_name": REPOSITORY },
        "installation": { "id": crate::github_server::INSTALLATION_ID }
    });
    expect_delivery(port, "issue_comment", "d-3", &command, 202, "accepted").await;
    stub.wait_for(
        "round 3 in the sticky comment",
        |state| {
            state
                .issue_comments
                .first()
                .and_then(|comment| comment["body"].as_str())
                .is_some_and(|body| body.contains("round 3"))
        },
        || cluster.logs(),
    )
    .await;
    stub.wait_for(
        "every round's check run completed",
        |state| {
            state
                .check_runs
                .iter()
                .all(|run| run["status"] == "completed")
        },
        || cluster.logs(),
    )
    .await;
    stub.with(|state| {
        assert_eq!(state.issue_comments.len(), 1);
        assert_eq!(
            state.review_comments.len(),
            inline_before,
            "a re-run posted duplicates"
        );
        assert!(state.unauthorised.is_empty(), "{:?}", state.unauthorised);
    });

    // The other handled actions start rounds too; a draft does not.
    let mut draft = pull_request_event("opened", &head_two);
    draft["pull_request"]["draft"] = json!(true);
    expect_delivery(port, "pull_request", "d-draft", &draft, 202, "ignored").await;
    for (round, action) in [(4, "reopened"), (5, "ready_for_review")] {
        let delivery = format!("d-{action}");
        let event = pull_request_event(action, &head_two);
        expect_delivery(port, "pull_request", &delivery, &event, 202, "accepted").await;
        stub.wait_for(
            &format!("round {round} in the sticky comment"),
            |state| state.sticky_comment().contains(&format!("round {round}")),
            || cluster.logs(),
        )
        .await;
    }

    // Round 6: the leaked key comes back. Its old comment is reopened, not duplicated.
    let inline_before = stub.with(|state| state.review_comments.len());
    repository.write("config/settings.toml", &leaked_settings);
    let head_six = push(&stub, &repository, &base, "Put the credentials back");
    let event = pull_request_event("synchronize", &head_six);
    expect_delivery(port, "pull_request", "d-6", &event, 202, "accepted").await;
    stub.wait_for(
        "round 6's completed check run",
        |state| !completed_runs(state, &head_six).is_empty(),
        || cluster.logs(),
    )
    .await;
    stub.with(|state| {
        assert_eq!(
            state.review_comments.len(),
            inline_before,
            "a returned finding got a second comment"
        );
        let settings_comments: Vec<&str> = state
            .review_comments
            .iter()
            .filter(|comment| comment["path"] == "config/settings.toml")
            .filter_map(|comment| comment["body"].as_str())
            .collect();
        assert!(!settings_comments.is_empty());
        for body in settings_comments {
            assert!(body.starts_with("**Reported again**"), "{body}");
            assert!(!body.contains("No longer reported"), "{body}");
        }
        assert!(!state.reopened_threads.is_empty(), "no thread was reopened");
        assert!(
            state.resolved_threads.is_empty(),
            "{:?}",
            state.resolved_threads
        );
    });
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", cluster.port))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("deep_review_webhooks_total{event=\"other\",result=\"unauthorized\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("deep_review_webhooks_total{event=\"pull_request\",result=\"duplicate\"} 2"),
        "{metrics}"
    );
    assert!(!metrics.contains("made_up_label"), "{metrics}");
    cluster.shutdown().await;
}

/// Runs `deep-review --config CONFIG ARGUMENTS…` on a blocking thread, so the stub, which
/// answers on this test's runtime, keeps serving it.
pub(crate) fn deep_review_off_runtime(
    config: &Path,
    arguments: &[&str],
    environment: &[(&'static str, &'static str)],
) -> tokio::task::JoinHandle<std::process::Output> {
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(arguments.iter().map(|argument| argument.to_string()));
    let environment = environment.to_vec();
    tokio::task::spawn_blocking(move || {
        let arguments: Vec<&str> = all.iter().map(String::as_str).collect();
        crate::util::deep_review_with(&arguments, &environment, None)
    })
}

/// Commits what `repository` holds as a push to pull request 7 of the stub, and returns
/// the new head.
fn push(stub: &GitHubStub, repository: &GitRepo, base: &str, message: &str) -> String {
    let head = repository.commit(message);
    let pull = stub_pull(repository, base, &head, "Add billing");
    stub.with(|state| {
        state
            .repositories
            .get_mut(REPOSITORY)
            .expect("repository")
            .pulls
            .insert(7, pull);
    });
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_schedules_unreviewed_open_pull_requests_across_pages_within_the_limit() {
    let (repository, base) = repository_with_known_problems();
    let mut heads = Vec::new();
    for number in 1..=6 {
        repository.write("CHANGELOG.md", &format!("change {number}\n"));
        heads.push(repository.commit(&format!("Change {number}")));
    }
    let stub = GitHubStub::start().await;
    let clone_url = repository.path().display().to_string();
    let pull = |number: u64, draft: bool| {
        let mut pull = stub_pull(
            &repository,
            &base,
            &heads[number as usize - 1],
            &format!("Change {number}"),
        );
        pull.number = number;
        pull.draft = draft;
        pull
    };
    stub.with(|state| {
        let mut add = |name: &str, archived: bool, pulls: Vec<StubPull>| {
            state.repositories.insert(
                format!("acme/{name}"),
                StubRepository {
                    clone_url: clone_url.clone(),
                    archived,
                    config: None,
                    pulls: pulls.into_iter().map(|pull| (pull.number, pull)).collect(),
                },
            );
        };
        add(
            "api",
            false,
            vec![pull(1, false), pull(2, true), pull(3, false)],
        );
        add("billing", false, vec![pull(4, false)]);
        add("legacy", true, vec![pull(5, false)]);
        add("website", false, vec![pull(6, false)]);
        // #3's head was reviewed already, and #6's is being reviewed.
        state.check_runs.push(json!({
            "id": 1, "name": "deep-review", "head_sha": heads[2], "status": "completed",
            "conclusion": "neutral", "repository": "acme/api", "external_id": "earlier"
        }));
        let recently = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
        state.check_runs.push(json!({
            "id": 900, "name": "deep-review", "head_sha": heads[5], "status": "in_progress",
            "started_at": recently, "repository": "acme/website", "external_id": "running",
            "preloaded": true
        }));
        // #4's review was lost two days ago: its check run never finished.
        let long_ago = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
        state.check_runs.push(json!({
            "id": 901, "name": "deep-review", "head_sha": heads[3], "status": "in_progress",
            "started_at": long_ago, "repository": "acme/billing", "external_id": "lost",
            "preloaded": true
        }));
    });
    let mut cluster = Cluster::new("", "");
    let mut config = std::fs::read_to_string(&cluster.config).expect("config");
    config.push_str(&format!("\n[github]\napi_url = \"{}\"\n", stub.url));
    std::fs::write(&cluster.config, config).expect("config");
    let config = cluster.config.clone();
    let environment = [("GITHUB_TOKEN", PLAIN_TOKEN)];
    cluster.start_with("worker", &config, &environment);
    cluster.start_with("consolidator", &config, &environment);
    let dry_run = deep_review_off_runtime(
        &config,
        &["sweep", "--org", "acme", "--dry-run"],
        &environment,
    )
    .await
    .expect("dry run");
    let stdout = String::from_utf8_lossy(&dry_run.stdout);
    assert!(
        dry_run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&dry_run.stderr)
    );
    assert!(
        stdout.contains("acme: 4 open pull request(s), 2 already reviewed, 2 to review"),
        "{stdout}"
    );
    assert!(
        stdout.contains("would schedule acme/billing#4 and close 1 abandoned check run(s)"),
        "{stdout}"
    );
    assert!(!stdout.contains("acme/website#6"), "{stdout}");
    stub.with(|state| {
        assert_eq!(state.check_runs.len(), 3, "a dry run scheduled something");
        assert_eq!(
            state.check_run_history.len(),
            0,
            "a dry run changed a check run"
        );
    });
    let sweep = deep_review_off_runtime(
        &config,
        &[
            "sweep",
            "--org",
            "acme",
            "--repo-filter",
            "^(api|billing|legacy)$",
            "--since",
            "7d",
            "--max-in-flight",
            "1",
            "--wait",
        ],
        &environment,
    );
    let Ok(output) = tokio::time::timeout(std::time::Duration::from_secs(120), sweep).await else {
        panic!(
            "the sweep did not finish within 2 minutes:\n{}",
            cluster.logs()
        );
    };
    let output = output.expect("sweep");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
    assert!(
        stdout.contains("acme: 3 open pull request(s), 1 already reviewed, 2 finished, 0 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("finished acme/api#1") && stdout.contains("finished acme/billing#4"),
        "{stdout}"
    );
    let new_run_completed = |state: &crate::github_server::StubState, head: &str| {
        completed_runs(state, head)
            .iter()
            .any(|run| run["external_id"] != "lost")
    };
    stub.with(|state| {
        // --wait returned once both reviews were published.
        assert!(
            new_run_completed(state, &heads[0]) && new_run_completed(state, &heads[3]),
            "the sweep returned before its reviews finished: {:#?}",
            state.check_runs
        );
        assert_eq!(
            state.most_in_progress, 1,
            "more reviews ran at once than --max-in-flight allows"
        );
        assert!(state.unauthorised.is_empty(), "{:?}", state.unauthorised);
        // The lost review's check run is closed, pointing at its replacement; the running
        // one is left alone.
        let lost = state
            .check_runs
            .iter()
            .find(|run| run["id"] == 901)
            .expect("the lost review's run");
        assert_eq!(lost["status"], "completed");
        assert_eq!(lost["conclusion"], "neutral");
        assert!(
            lost["output"]["title"]
                .as_str()
                .unwrap_or("")
                .contains("never finished"),
            "{lost}"
        );
        let running = state
            .check_runs
            .iter()
            .find(|run| run["id"] == 900)
            .expect("the running review's run");
        assert_eq!(running["status"], "in_progress");
        let listed_pages = state
            .requests
            .iter()
            .filter(|(_, path)| path.starts_with("/orgs/acme/repos"))
            .count();
        assert_eq!(
            listed_pages, 4,
            "the repository list spans two pages, read by the dry run and the sweep"
        );
        for (skipped, why) in [
            (1, "a draft"),
            (4, "an archived repository"),
            (5, "a filtered-out repository"),
        ] {
            assert!(
                state
                    .check_runs
                    .iter()
                    .filter(|run| run["preloaded"] != true)
                    .all(|run| run["head_sha"] != heads[skipped].as_str()),
                "{why} was reviewed"
            );
        }
    });
    cluster.shutdown().await;
}

#[test]
fn sweep_needs_a_github_table() {
    let output = crate::util::deep_review(&["sweep", "--org", "acme"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[github]"), "{stderr}");
}

#[tokio::test]
async fn a_diff_github_will_not_render_falls_back_to_the_file_patches_with_a_note() {
    let (repository, base) = repository_with_known_problems();
    let head = repository.git(&["rev-parse", "HEAD"]).trim().to_string();
    let stub = GitHubStub::start().await;
    stub.with(|state| {
        let mut pull = stub_pull(&repository, &base, &head, "Large change");
        pull.diff = None;
        // A binary file has no patch.
        pull.files
            .push(json!({ "filename": "assets/logo.png", "status": "added", "patch": null }));
        state.repositories.insert(
            REPOSITORY.to_string(),
            StubRepository {
                clone_url: repository.path().display().to_string(),
                archived: false,
                config: Some("agents = [\"nobody\"]\n[budget]\ndaily_usd = 3\n".to_string()),
                pulls: [(7, pull)].into_iter().collect(),
            },
        );
    });
    let settings = deep_review_github::GitHubSettings {
        checkout: deep_review_github::CheckoutMode::Diff,
        ..stub.settings()
    };
    let github = stub.github();
    let name = deep_review_github::RepositoryName::parse(REPOSITORY).expect("name");
    let client = github.for_repository(&name, None).await.expect("client");
    let line_up = vec![deep_review_protocol::AgentSpec::new(
        "builtin",
        deep_review_protocol::RunnerKind::Builtin,
    )];
    let ingested = deep_review_github::ingest::pull_request(&client, &name, 7, &settings, &line_up)
        .await
        .expect("ingest");
    let deep_review_protocol::Source::InlineDiff { diff } = &ingested.request.source else {
        panic!("diff mode sends the diff inline");
    };
    // Every file GitHub lists (over several pages) with a patch is in the diff.
    for path in [
        "app/service.py",
        "src/lib.rs",
        "web/app.js",
        "config/settings.toml",
        "pkg/sync.go",
        "docs/notes.md",
    ] {
        assert!(
            diff.contains(&format!("+++ b/{path}")),
            "{path} missing:\n{diff}"
        );
    }
    let notices = ingested.request.notices.join("\n");
    assert!(notices.contains("GitHub would not render"), "{notices}");
    assert!(notices.contains("assets/logo.png"), "{notices}");
    assert!(notices.contains("`nobody`"), "{notices}");
    assert_eq!(ingested.request.daily_usd_limit, Some(3.0));
    assert_eq!(ingested.request.pull_request.commits.len(), 1);
    assert_eq!(ingested.head_sha, head);
    assert!(stub.with(|state| state.unauthorised.is_empty()));
}

#[tokio::test]
async fn a_superseded_round_s_check_run_is_closed_as_neutral() {
    let stub = GitHubStub::start().await;
    stub.with(|state| {
        state
            .repositories
            .insert(REPOSITORY.to_string(), StubRepository::default())
    });
    let settings = stub.settings();
    let github = stub.github();
    let name = deep_review_github::RepositoryName::parse(REPOSITORY).expect("name");
    let client = github.for_repository(&name, None).await.expect("client");
    let on_commit = |id: &str, sha: &str, round: u32| {
        let mut job = crate::transport::job(id, &["builtin"], chrono::Duration::minutes(5));
        job.source = deep_review_protocol::Source::GitRemote {
            url: "https://github.com/acme/widgets.git".into(),
            base_sha: "b".repeat(40),
            head_sha: sha.to_string(),
        };
        job.round = round;
        job
    };
    let (old_sha, new_sha) = ("1".repeat(40), "2".repeat(40));
    let older = on_commit("review-1", &old_sha, 1);
    let newer = on_commit("review-2", &new_sha, 2);
    deep_review_github::check_run(&client, &name, &old_sha, &older, None, &settings)
        .await
        .expect("start round 1");
    deep_review_github::check_run(&client, &name, &new_sha, &newer, None, &settings)
        .await
        .expect("start round 2");
    deep_review_github::close_superseded_check_run(&client, &name, &older, &newer, &settings)
        .await
        .expect("close round 1");
    stub.with(|state| {
        let old_run = state
            .check_runs
            .iter()
            .find(|run| run["head_sha"] == old_sha.as_str())
            .expect("round 1 run");
        assert_eq!(old_run["status"], "completed");
        assert_eq!(old_run["conclusion"], "neutral");
        assert!(
            old_run["output"]["title"]
                .as_str()
                .unwrap_or("")
                .contains("Superseded by round 2"),
            "{old_run}"
        );
        let new_run = state
            .check_runs
            .iter()
            .find(|run| run["head_sha"] == new_sha.as_str())
            .expect("round 2 run");
        assert_eq!(new_run["status"], "in_progress");
    });
    // Closing twice changes nothing (a completed run is left alone).
    deep_review_github::close_superseded_check_run(&client, &name, &older, &newer, &settings)
        .await
        .expect("close again");
    assert_eq!(stub.with(|state| state.check_run_history.len()), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_review_of_a_pull_request_posts_the_next_round() {
    let (repository, base) = repository_with_known_problems();
    let head = repository.git(&["rev-parse", "HEAD"]).trim().to_string();
    let stub = GitHubStub::start().await;
    stub.with(|state| {
        state.repositories.insert(
            REPOSITORY.to_string(),
            StubRepository {
                clone_url: repository.path().display().to_string(),
                archived: false,
                config: None,
                pulls: [(7, stub_pull(&repository, &base, &head, "Add billing"))]
                    .into_iter()
                    .collect(),
            },
        );
        // Someone else copied the marker into a comment of their own, claiming round 90;
        // deep-review must neither take its round nor edit it.
        state.issue_comments.push(json!({
            "id": 16, "body": format!("{}\nforged\n\n<sub>deep-review · review 0 · round 90</sub>\n", deep_review_github::REPORT_MARKER),
            "user": { "login": "mallory", "type": "User" },
            "repository": REPOSITORY, "issue_number": 7
        }));
        // The services reviewed this PR four times already, as the token's user.
        state.issue_comments.push(json!({
            "id": 17, "body": format!("{}\nold report\n\n<sub>deep-review · review 1 · round 4</sub>\n", deep_review_github::REPORT_MARKER),
            "user": { "login": crate::github_server::PLAIN_TOKEN_USER, "type": "User" },
            "repository": REPOSITORY, "issue_number": 7
        }));
    });
    let directory = tempfile::tempdir().expect("temporary directory");
    let config = directory.path().join("deep-review.toml");
    std::fs::write(&config, format!("[github]\napi_url = \"{}\"\n", stub.url)).expect("config");
    let out = directory.path().join("report");
    let output = deep_review_off_runtime(
        &config,
        &[
            "review",
            "--github",
            "https://github.com/acme/widgets/pull/7",
            "--publish",
            "--quiet",
            "--out",
            out.to_str().expect("utf-8"),
        ],
        &[("GITHUB_TOKEN", PLAIN_TOKEN)],
    )
    .await
    .expect("review");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(report.contains("acme/widgets PR #7"), "{report}");
    stub.with(|state| {
        assert_eq!(state.issue_comments.len(), 2, "no new comment");
        let forged = &state.issue_comments[0];
        assert!(forged["edits"].is_null(), "the forged comment was edited");
        let body = state.issue_comments[1]["body"].as_str().unwrap_or("");
        assert!(body.contains("round 5"), "{body}");
        assert!(!state.review_comments.is_empty());
        assert_eq!(state.check_runs.len(), 1);
        assert_eq!(state.check_runs[0]["status"], "completed");
        assert_eq!(state.check_runs[0]["conclusion"], "neutral");
    });
}

#[tokio::test]
async fn a_refusal_is_not_retried_but_an_outage_is() {
    let stub = GitHubStub::start().await;
    stub.with(|state| {
        state
            .repositories
            .insert(REPOSITORY.to_string(), StubRepository::default())
    });
    let publisher = deep_review_github::GitHubPublisher::new(
        std::sync::Arc::new(stub.github()),
        stub.settings(),
    );
    let mut job = crate::transport::job("review-9", &["builtin"], chrono::Duration::minutes(5));
    job.pull_request.repository = Some(REPOSITORY.to_string());
    job.pull_request.number = Some(7);
    let manifest = deep_review_protocol::ReviewManifest::for_job(&job);
    let report = deep_review_consolidator::consolidate(
        &manifest,
        Vec::new(),
        &Default::default(),
        chrono::Utc::now(),
    );
    use deep_review_consolidator::Publisher;
    // The App lost access: retrying cannot help, so the publication goes on without GitHub.
    stub.with(|state| {
        state.fail_with = Some((403, "Resource not accessible by integration".to_string()))
    });
    publisher
        .publish(&manifest, &report)
        .await
        .expect("a refusal is logged, not retried");
    let error = publisher
        .post_report(&manifest, &report)
        .await
        .expect_err("the CLI sees the refusal");
    assert!(
        error.to_string().contains("Resource not accessible"),
        "{error}"
    );
    // GitHub is down: the consolidator must try again.
    stub.with(|state| state.fail_with = Some((502, "Server Error".to_string())));
    let error = publisher
        .publish(&manifest, &report)
        .await
        .expect_err("an outage is retried");
    assert!(error.to_string().contains("502"), "{error}");
    // Back up: the retry posts the comment once.
    stub.with(|state| state.fail_with = None);
    publisher.publish(&manifest, &report).await.expect("posted");
    publisher
        .publish(&manifest, &report)
        .await
        .expect("posted again");
    assert!(stub.with(|state| state.sticky_comment().contains("deep-review:report")));
}
