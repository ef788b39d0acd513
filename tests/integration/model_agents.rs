//! The model API runners against local servers that speak each provider's wire format:
//! the real reqwest code, tool loop, retries and schema checks are under test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deep_review_git::MirrorCache;
use deep_review_protocol::{
    AgentResult, AgentSpec, AgentTask, PullRequestMetadata, ReviewJob, RunnerKind, Source,
};
use deep_review_worker::{
    AgentRunner, ModelPrice, ModelRunner, ModelSettings, PreparedChange, PriceTable, PromptBuilder,
    RunnerError,
};
use serde_json::json;

use crate::model_server::{anthropic, gemini, openai, review_answer, ModelServer, Scripted};
use crate::util::repository_with_known_problems;

/// The runners read the key from the variable the agent names. Tests name one that is
/// always set rather than changing the environment of a multi-threaded test process.
const KEY_VARIABLE: &str = "HOME";

fn key() -> String {
    std::env::var(KEY_VARIABLE).expect("HOME is set")
}

fn agent(runner: RunnerKind, server: &ModelServer) -> AgentSpec {
    AgentSpec {
        model: Some("test-model".to_string()),
        timeout: Duration::from_secs(60),
        api_key_env: Some(KEY_VARIABLE.to_string()),
        base_url: Some(server.url.clone()),
        ..AgentSpec::new("model", runner)
    }
}

fn fast_retries() -> ModelSettings {
    ModelSettings {
        attempts: 5,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        request_timeout: Duration::from_secs(10),
        ..ModelSettings::default()
    }
}

/// Runs `agent` on the known-problems repository with a model runner.
async fn review(agent: AgentSpec, settings: ModelSettings) -> Result<AgentResult, RunnerError> {
    let prices = PriceTable::new(BTreeMap::from([(
        "test-model".to_string(),
        ModelPrice {
            input_per_million_usd: 3.0,
            output_per_million_usd: 15.0,
        },
    )]));
    let runner = ModelRunner::new(
        agent.runner,
        reqwest::Client::new(),
        Arc::new(PromptBuilder::default()),
        Arc::new(prices),
        settings,
    );
    run_on_known_problems(agent, &runner).await
}

/// Runs `agent` with `runner` on the known-problems repository, as a worker would: in a
/// fresh worktree of the head commit, removed afterwards.
pub async fn run_on_known_problems(
    agent: AgentSpec,
    runner: &dyn AgentRunner,
) -> Result<AgentResult, RunnerError> {
    let (repository, base) = repository_with_known_problems();
    let job = ReviewJob {
        pull_request: PullRequestMetadata {
            title: Some("Add billing".to_string()),
            ..PullRequestMetadata::default()
        },
        ..ReviewJob::new(
            format!("model-{}", uuid_like()),
            chrono::Utc::now(),
            Source::LocalRepo {
                path: repository.path().display().to_string(),
                base,
                head: "HEAD".to_string(),
            },
            vec![agent.clone()],
            chrono::Utc::now(),
        )
    };
    let task = AgentTask::new(&job, &agent);
    let scratch = tempfile::tempdir().unwrap();
    let mirrors = MirrorCache::new(scratch.path().join("mirrors"));
    let change = PreparedChange::prepare(&job, scratch.path(), true, &mirrors)
        .await
        .unwrap();
    let outcome = runner.run(&task, &change).await;
    change.cleanup().await;
    outcome
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn header(request: &crate::model_server::Recorded, name: &str) -> String {
    request
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn anthropic_reads_the_checkout_with_tools_then_submits() {
    let server = ModelServer::start(vec![
        anthropic::tool_use(
            "t1",
            "read_file",
            json!({"path": "app/service.py", "start_line": 5, "end_line": 9}),
            1000,
            20,
        ),
        anthropic::tool_use(
            "t2",
            "grep",
            json!({"pattern": "billing\\.charge"}),
            1500,
            10,
        ),
        anthropic::tool_use(
            "t3",
            "submit_review",
            review_answer("app/service.py", 8, "Failures of charge() are swallowed"),
            2000,
            70,
        ),
    ])
    .await;
    let with_effort = AgentSpec {
        effort: Some("high".to_string()),
        ..agent(RunnerKind::Anthropic, &server)
    };
    let result = review(with_effort, fast_retries()).await.unwrap();

    assert_eq!(result.findings.len(), 1);
    assert_eq!(
        result.findings[0].title,
        "Failures of charge() are swallowed"
    );
    assert_eq!(result.model.as_deref(), Some("test-model"));
    assert_eq!(
        (result.usage.input_tokens, result.usage.output_tokens),
        (4500, 100)
    );
    assert_eq!(
        result.usage.tool_calls,
        BTreeMap::from([("grep".to_string(), 1), ("read_file".to_string(), 1)])
    );
    let cost = result.usage.cost_usd.unwrap();
    assert!(
        (cost - (4500.0 * 3.0 + 100.0 * 15.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let first = &requests[0];
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(header(first, "x-api-key"), key());
    assert_eq!(header(first, "anthropic-version"), "2023-06-01");
    assert_eq!(first.body["model"], "test-model");
    assert_eq!(first.body["tool_choice"], json!({"type": "auto"}));
    assert_eq!(first.body["output_config"], json!({"effort": "high"}));
    assert!(first.body["system"].as_str().unwrap().contains("untrusted"));
    let prompt = first.body["messages"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(prompt.contains("<data name=\"diff\""), "{prompt}");
    assert!(
        prompt.contains("+    except Exception:"),
        "the diff is in the prompt"
    );
    let tools: Vec<&str> = first.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        [
            "read_file",
            "grep",
            "list_files",
            "git_log",
            "git_show",
            "git_blame",
            "submit_review"
        ]
    );
    assert!(first.body["tools"][6]["input_schema"]["properties"]["findings"].is_object());

    // The file's lines came back to the model as the tool's result.
    let second = &requests[1].body["messages"];
    let last = &second[second.as_array().unwrap().len() - 1];
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], "t1");
    let content = last["content"][0]["content"].as_str().unwrap();
    assert!(
        content.contains("     7\t        billing.charge(order)"),
        "{content}"
    );
    let third = &requests[2].body["messages"];
    let grep = third[third.as_array().unwrap().len() - 1]["content"][0]["content"]
        .as_str()
        .unwrap();
    assert_eq!(grep, "app/service.py:7:        billing.charge(order)");
}

#[tokio::test]
async fn openai_retries_rate_limits_server_errors_and_broken_bodies() {
    let answer = review_answer("src/lib.rs", 3, "parse() panics on bad input");
    let server = ModelServer::start(vec![
        Scripted::error(429, "Rate limit reached").with_header("retry-after", "1"),
        Scripted::error(500, "The server had an error"),
        Scripted {
            status: 200,
            headers: Vec::new(),
            body: "{\"choices\": [".to_string(),
        },
        openai::tool_call("call_1", "list_files", "{\"path\": \"src\"}", 800, 12),
        openai::text(
            &format!("Here is my review.\n```json\n{answer}\n```\n"),
            900,
            150,
        ),
    ])
    .await;
    let started = Instant::now();
    let result = review(agent(RunnerKind::Openai, &server), fast_retries())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured ({:?})",
        started.elapsed()
    );
    assert_eq!(result.findings[0].title, "parse() panics on bad input");
    assert_eq!(
        (result.usage.input_tokens, result.usage.output_tokens),
        (1700, 162)
    );
    assert_eq!(
        result.usage.tool_calls,
        BTreeMap::from([("list_files".to_string(), 1)])
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 5, "three failed attempts, then two turns");
    assert_eq!(requests[0].path, "/chat/completions");
    assert_eq!(
        header(&requests[0], "authorization"),
        format!("Bearer {}", key())
    );
    // A compatible server (vLLM, Ollama) is given the limit under its classic name.
    assert!(requests[0].body["max_tokens"].is_u64());
    assert_eq!(requests[0].body["messages"][0]["role"], "system");
    assert_eq!(requests[0].body["tool_choice"], "auto");
    let messages = requests[4].body["messages"].as_array().unwrap();
    let tool_message = messages.last().unwrap();
    assert_eq!(tool_message["role"], "tool");
    assert_eq!(tool_message["tool_call_id"], "call_1");
    assert_eq!(tool_message["content"], "src/lib.rs\n");
    let assistant = &messages[messages.len() - 2];
    assert_eq!(
        assistant["tool_calls"][0]["function"]["arguments"],
        "{\"path\":\"src\"}"
    );
}

#[tokio::test]
async fn gemini_reasks_once_when_the_review_breaks_the_schema() {
    let server = ModelServer::start(vec![
        gemini::function_call("git_log", json!({"max_count": 5}), 600, 8),
        gemini::function_call(
            "submit_review",
            json!({"findings": [{"title": "x", "severity": "catastrophic"}]}),
            700,
            30,
        ),
        gemini::function_call(
            "submit_review",
            review_answer("pkg/sync.go", 5, "Push errors are only logged"),
            800,
            40,
        ),
    ])
    .await;
    let with_effort = AgentSpec {
        effort: Some("low".to_string()),
        ..agent(RunnerKind::Gemini, &server)
    };
    let result = review(with_effort, fast_retries()).await.unwrap();
    assert_eq!(result.findings[0].title, "Push errors are only logged");
    assert_eq!(result.usage.input_tokens, 2100);
    assert_eq!(
        result.usage.tool_calls,
        BTreeMap::from([("git_log".to_string(), 1)])
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[0].path,
        "/v1beta/models/test-model:generateContent"
    );
    assert_eq!(header(&requests[0], "x-goog-api-key"), key());
    assert_eq!(
        requests[0].body["generationConfig"]["thinkingConfig"],
        json!({"thinkingLevel": "low"})
    );
    assert_eq!(
        requests[0].body["toolConfig"]["functionCallingConfig"]["mode"],
        "AUTO"
    );
    let declarations = &requests[0].body["tools"][0]["functionDeclarations"];
    assert!(declarations[6]["parametersJsonSchema"]["properties"]["findings"].is_object());
    let contents = requests[2].body["contents"].as_array().unwrap();
    // The model's turn goes back verbatim, thought signature included.
    let model_turn = &contents[contents.len() - 2];
    assert_eq!(model_turn["role"], "model");
    assert_eq!(
        model_turn["parts"][0]["thoughtSignature"],
        "signature-submit_review"
    );
    let correction = &contents[contents.len() - 1]["parts"][0]["functionResponse"];
    assert_eq!(correction["name"], "submit_review");
    let error = correction["response"]["error"].as_str().unwrap();
    assert!(
        error.contains("findings[0]") && error.contains("catastrophic"),
        "{error}"
    );
    let log = contents[2]["parts"][0]["functionResponse"]["response"]["output"]
        .as_str()
        .unwrap();
    assert!(
        log.contains("Add billing, parser, loader and sync"),
        "{log}"
    );
}

#[tokio::test]
async fn a_review_that_breaks_the_schema_twice_fails_and_keeps_what_the_model_said() {
    let server = ModelServer::start(vec![
        openai::text("Looks good to me!", 500, 5),
        openai::text("Still no JSON, sorry.", 600, 6),
    ])
    .await;
    let error = review(agent(RunnerKind::Openai, &server), fast_retries())
        .await
        .unwrap_err();
    assert!(
        error.message.contains("even when asked again"),
        "{}",
        error.message
    );
    let raw = error.raw_output.unwrap();
    assert!(
        raw.contains("Looks good to me!") && raw.contains("Still no JSON"),
        "{raw}"
    );
    let usage = error.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (1100, 11));
    let requests = server.requests();
    let reask = requests[1].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(reask["role"], "user");
    assert!(reask["content"]
        .as_str()
        .unwrap()
        .contains("no JSON object"));
}

#[tokio::test]
async fn bad_keys_and_oversized_prompts_are_clear_errors_and_not_retried() {
    let server = ModelServer::start(vec![Scripted::error(401, "invalid x-api-key")]).await;
    let error = review(agent(RunnerKind::Anthropic, &server), fast_retries())
        .await
        .unwrap_err();
    assert!(
        error
            .message
            .contains("Anthropic refused the API key (HTTP 401): invalid x-api-key")
            && error.message.contains("`HOME`"),
        "{}",
        error.message
    );
    assert_eq!(server.requests().len(), 1);

    let server = ModelServer::start(vec![Scripted::error(
        400,
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 190000 tokens.",
    )])
    .await;
    let error = review(agent(RunnerKind::Openai, &server), fast_retries())
        .await
        .unwrap_err();
    assert!(
        error.message.contains("too long for the model's context")
            && error.message.contains("prompt_tokens"),
        "{}",
        error.message
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn retries_end_with_the_last_failure_named() {
    let server = ModelServer::start(vec![
        Scripted::error(503, "overloaded"),
        Scripted::error(529, "Overloaded"),
        Scripted::error(500, "internal"),
    ])
    .await;
    let settings = ModelSettings {
        attempts: 3,
        ..fast_retries()
    };
    let error = review(agent(RunnerKind::Anthropic, &server), settings)
        .await
        .unwrap_err();
    assert_eq!(
        error.message,
        "Anthropic failed 3 times; last: HTTP 500: internal"
    );
}

#[tokio::test]
async fn the_last_allowed_turn_forces_the_answer() {
    let server = ModelServer::start(vec![
        anthropic::tool_use("t1", "list_files", json!({}), 100, 5),
        anthropic::tool_use(
            "t2",
            "submit_review",
            review_answer("web/app.js", 4, "Fetch errors are swallowed"),
            100,
            5,
        ),
    ])
    .await;
    let mut limited = agent(RunnerKind::Anthropic, &server);
    limited.max_turns = Some(2);
    review(limited, fast_retries()).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests[0].body["tool_choice"], json!({"type": "auto"}));
    assert_eq!(
        requests[1].body["tool_choice"],
        json!({"type": "tool", "name": "submit_review"})
    );
}

#[tokio::test]
async fn a_missing_key_is_named_before_any_request() {
    let server = ModelServer::start(Vec::new()).await;
    let mut keyless = agent(RunnerKind::Gemini, &server);
    keyless.api_key_env = Some("DEEP_REVIEW_TEST_UNSET_KEY".to_string());
    let error = review(keyless, fast_retries()).await.unwrap_err();
    assert!(
        error.message.contains("DEEP_REVIEW_TEST_UNSET_KEY") && error.message.contains("not set"),
        "{}",
        error.message
    );
    assert!(server.requests().is_empty());
}

/// A review that mixes the builtin reviewer, a model API agent and a vendor CLI agent, run
/// by the real binary: the report's retro carries each one's usage and tool calls, and a
/// prompt budget that leaves files out is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_line_up_reports_usage_tool_calls_and_omissions() {
    let server = ModelServer::start(vec![
        anthropic::tool_use(
            "t1",
            "read_file",
            json!({"path": "app/service.py"}),
            3000,
            40,
        ),
        anthropic::tool_use(
            "t2",
            "submit_review",
            review_answer("app/service.py", 8, "A failed charge is silently ignored"),
            3500,
            160,
        ),
    ])
    .await;
    let claude = crate::util::fixture("agents/bin/claude")
        .display()
        .to_string();
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("deep-review.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[agents]]
name = "builtin"
runner = "builtin"
timeout = "1m"

[[agents]]
name = "sonnet"
display_name = "Claude Sonnet (API)"
runner = "anthropic"
model = "claude-sonnet-4-5"
base_url = "{url}"
api_key_env = "TEAM_ANTHROPIC_KEY"
prompt_tokens = 4100
timeout = "1m"

[[agents]]
name = "claude-code"
runner = "claude-code"
command = ["{claude}"]
timeout = "1m"

[models.prices."claude-sonnet-4-5"]
input_per_million_usd = 3.0
output_per_million_usd = 15.0
"#,
            url = server.url
        ),
    )
    .unwrap();
    let out = directory.path().join("out");
    let (output, _repository) = {
        let config = config.display().to_string();
        let out = out.clone();
        tokio::task::spawn_blocking(move || {
            let (repository, output) = crate::util::review_known_problems(
                &out,
                &["--config", &config],
                &[],
                &[("TEAM_ANTHROPIC_KEY", "sk-test-123")],
            );
            (output, repository)
        })
        .await
        .unwrap()
    };
    crate::util::expect_success(&output);
    let report = crate::util::read_report(&out);

    let row = |agent: &str| {
        report
            .retro
            .iter()
            .find(|row| row.agent == agent)
            .unwrap_or_else(|| panic!("no retro row for {agent}"))
            .clone()
    };
    let sonnet = row("sonnet");
    assert_eq!((sonnet.input_tokens, sonnet.output_tokens), (6500, 200));
    assert_eq!(
        sonnet.tool_calls,
        BTreeMap::from([("read_file".to_string(), 1)])
    );
    let claude_code = row("claude-code");
    assert_eq!(
        (claude_code.input_tokens, claude_code.output_tokens),
        (5000, 800),
        "claude-code's result: {}",
        std::fs::read_to_string(out.join("agents/claude-code.json")).unwrap_or_default()
    );
    assert_eq!(
        claude_code.tool_calls,
        BTreeMap::from([
            ("Bash".to_string(), 1),
            ("Grep".to_string(), 1),
            ("Read".to_string(), 2)
        ])
    );
    assert_eq!(row("builtin").tool_calls, BTreeMap::new());

    let requests = server.requests();
    assert_eq!(header(&requests[0], "x-api-key"), "sk-test-123");
    // The three agents agree on the swallowed failure at app/service.py:8.
    let swallowed = report.findings.iter().find(|finding| {
        finding
            .locations
            .iter()
            .any(|location| location.path == "app/service.py")
            && finding.agents.len() == 3
    });
    assert!(swallowed.is_some(), "{:#?}", report.findings);

    // The API agent's budget left files out; the prompt and the report both say which.
    let prompt = requests[0].body["messages"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !report.omitted_content.is_empty(),
        "the budget should omit something"
    );
    for line in &report.omitted_content {
        let path = line.split('`').nth(1).unwrap();
        assert!(
            prompt.contains(&format!("- `{path}`:")),
            "{path} not listed in the prompt"
        );
        assert!(
            !prompt.contains(&format!("+++ b/{path}")),
            "{path} is in the diff"
        );
        assert!(line.contains("Claude Sonnet (API)"), "{line}");
    }
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        markdown.contains("4 (Read 2, Bash 1, Grep 1)"),
        "{markdown}"
    );
    assert!(markdown.contains("1 (read_file 1)"), "{markdown}");
}

/// Runs an embedded review of the known problems with `[narrator]` pointed at `server`.
async fn review_with_narrator(server: &ModelServer) -> deep_review_protocol::Report {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("deep-review.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[narrator]
name = "narrator"
display_name = "Claude Sonnet"
runner = "anthropic"
model = "claude-sonnet-4-5"
base_url = "{url}"
api_key_env = "TEAM_ANTHROPIC_KEY"

[models]
attempts = 2
initial_backoff = "10ms"
"#,
            url = server.url
        ),
    )
    .unwrap();
    let out = directory.path().join("out");
    let output = {
        let config = config.display().to_string();
        let out = out.clone();
        tokio::task::spawn_blocking(move || {
            crate::util::review_known_problems(
                &out,
                &["--config", &config],
                &[],
                &[("TEAM_ANTHROPIC_KEY", "sk-test-123")],
            )
            .1
        })
        .await
        .unwrap()
    };
    crate::util::expect_success(&output);
    crate::util::read_report(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_narrator_rewrites_the_summary_and_narratives_or_the_deterministic_text_stays() {
    let server = ModelServer::start(vec![anthropic::tool_use(
        "n1",
        "write_summary",
        json!({
            "executive_summary": "This change adds billing; a swallowed charge failure makes it Rework.",
            "narratives": {"builtin": "The builtin reviewer caught the swallowed failure."},
        }),
        900,
        60,
    )])
    .await;
    let report = review_with_narrator(&server).await;
    assert_eq!(
        report.executive_summary,
        "This change adds billing; a swallowed charge failure makes it Rework."
    );
    assert_eq!(
        report.retro[0].narrative,
        "The builtin reviewer caught the swallowed failure."
    );
    assert!(
        report
            .notices
            .iter()
            .any(|notice| notice.contains("written by Claude Sonnet")),
        "{:?}",
        report.notices
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].body["tool_choice"],
        json!({"type": "tool", "name": "write_summary"})
    );
    let prompt = requests[0].body["messages"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(prompt.contains("\"deterministic_summary\""), "{prompt}");
    assert!(
        prompt.contains("Add billing, parser, loader and sync"),
        "the PR title is given"
    );

    // A failing model, or one that invents an agent, leaves the deterministic text.
    let deterministic = {
        let server = ModelServer::start(vec![
            Scripted::error(500, "boom"),
            Scripted::error(500, "boom again"),
        ])
        .await;
        let report = review_with_narrator(&server).await;
        assert!(
            report
                .notices
                .iter()
                .any(|notice| notice.contains("summary pass failed")
                    && notice.contains("boom again")),
            "{:?}",
            report.notices
        );
        report.executive_summary
    };
    assert!(deterministic.contains("Rework"), "{deterministic}");
    let server = ModelServer::start(vec![anthropic::tool_use(
        "n2",
        "write_summary",
        json!({"executive_summary": "Fine.", "narratives": {"ghost": "Did great."}}),
        10,
        10,
    )])
    .await;
    let report = review_with_narrator(&server).await;
    assert_eq!(report.executive_summary, deterministic);
    assert!(report
        .notices
        .iter()
        .any(|notice| notice.contains("`ghost`, who is not in the review")));
}
