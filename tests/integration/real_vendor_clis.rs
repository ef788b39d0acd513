//! The real Claude Code, Codex and Gemini CLIs, installed from the npm registry by
//! `scripts/vendor-clis.sh`, each run by `deep-review review` against a local model API
//! that speaks its provider's wire format ([`crate::vendor_api`]): one tool round trip in
//! the checkout, then the review. Faults the CLIs must recover from (a dropped stream, a
//! 429, a 500) still give the finding; a refused key and a run stopped at its timeout give
//! a failed or timed-out agent whose report says why.
//!
//! Skipped, loudly, only when the npm registry cannot be reached.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;

use deep_review_protocol::{AgentStatus, Report};

use crate::util::{read_report, review_known_problems};
use crate::vendor_api::{usage, Fault, VendorApi, KEY, TITLE};

/// The variable the agents name for their key.
const KEY_VARIABLE: &str = "VENDOR_TEST_KEY";

/// The folder with `claude`, `codex` and `gemini`, installed once per test run.
fn installed_clis() -> Option<PathBuf> {
    static INSTALLED: OnceLock<Option<PathBuf>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/vendor-clis.sh");
            let output = std::process::Command::new("bash")
                .arg(&script)
                .output()
                .expect("run scripts/vendor-clis.sh");
            let stderr = String::from_utf8_lossy(&output.stderr);
            match output.status.code() {
                Some(0) => {
                    let stdout = String::from_utf8_lossy(&output.stdout);
                    Some(PathBuf::from(stdout.lines().last().unwrap_or("").trim()))
                }
                Some(75) => {
                    eprintln!("\n\n*** SKIPPED: the real vendor CLI tests did not run: {stderr}\n");
                    None
                }
                _ => panic!(
                    "installing the vendor CLIs failed ({}): {stderr}",
                    output.status
                ),
            }
        })
        .clone()
}

#[derive(Clone, Copy)]
enum Cli {
    Claude,
    Codex,
    Gemini,
}

impl Cli {
    fn agent(self) -> &'static str {
        match self {
            Cli::Claude => "claude",
            Cli::Codex => "codex",
            Cli::Gemini => "gemini",
        }
    }

    fn configuration(self, url: &str, timeout: &str) -> String {
        let (runner, model, base_url) = match self {
            Cli::Claude => ("claude-code", "claude-sonnet-4-5", url.to_string()),
            // Codex's endpoint is an OpenAI-style base, with the API version in it.
            Cli::Codex => ("codex", "gpt-test", format!("{url}/v1")),
            Cli::Gemini => ("gemini-cli", "gemini-test", url.to_string()),
        };
        format!(
            r#"
[[agents]]
name = "{agent}"
runner = "{runner}"
model = "{model}"
base_url = "{base_url}"
api_key_env = "{KEY_VARIABLE}"
timeout = "{timeout}"

[models.prices."gpt-test"]
input_per_million_usd = 1.25
output_per_million_usd = 10.0
"#,
            agent = self.agent()
        )
    }

    /// The tool calls the retro must show for the one grep.
    fn tool_calls(self) -> BTreeMap<String, u64> {
        let name = match self {
            Cli::Claude => "Grep",
            Cli::Codex => "shell",
            Cli::Gemini => "grep_search",
        };
        BTreeMap::from([(name.to_string(), 1)])
    }

    /// Input and output tokens over the two review requests, on deep-review's one basis:
    /// cached prompt tokens are input, thinking is output.
    fn tokens(self) -> (u64, u64) {
        let sum = |table: &[(u64, u64, u64); 2], pick: fn(&(u64, u64, u64)) -> u64| {
            table.iter().map(pick).sum::<u64>()
        };
        match self {
            Cli::Claude => (
                sum(&usage::ANTHROPIC, |row| row.0 + row.1),
                sum(&usage::ANTHROPIC, |row| row.2),
            ),
            Cli::Codex => (
                sum(&usage::OPENAI, |row| row.0),
                sum(&usage::OPENAI, |row| row.2),
            ),
            Cli::Gemini => (
                sum(&usage::GEMINI, |row| row.0),
                sum(&usage::GEMINI, |row| row.1 + row.2),
            ),
        }
    }
}

/// One `deep-review review` of the known-problems repository by `cli` alone.
struct Run {
    report: Report,
    markdown: String,
    output: Output,
    api: VendorApi,
}

/// Runs the review; `claude_retries` caps Claude Code's retries of a failed request (its
/// default, ten over minutes, outlasts a test), `None` leaves its default.
async fn review(
    bin: &std::path::Path,
    cli: Cli,
    fault: Fault,
    key: &str,
    timeout: &str,
    claude_retries: Option<&'static str>,
) -> Run {
    let api = VendorApi::start(fault).await;
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("deep-review.toml");
    std::fs::write(&config, cli.configuration(&api.url, timeout)).unwrap();
    // The CLIs keep state in HOME; a run must not touch the developer's.
    let home = directory.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = directory.path().join("out");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = {
        let (config, out, key, home) = (
            config.display().to_string(),
            out.clone(),
            key.to_string(),
            home.display().to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let mut environment = vec![
                (KEY_VARIABLE, key.as_str()),
                ("PATH", path.as_str()),
                ("HOME", home.as_str()),
            ];
            environment.extend(claude_retries.map(|retries| ("CLAUDE_CODE_MAX_RETRIES", retries)));
            let (_repository, output) =
                review_known_problems(&out, &["--config", &config], &["--quiet"], &environment);
            output
        })
        .await
        .unwrap()
    };
    let report = read_report(&out);
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    Run {
        report,
        markdown,
        output,
        api,
    }
}

fn describe(run: &Run) -> String {
    format!(
        "exit {}\nstderr: {}\nagent result: {}",
        run.output.status,
        String::from_utf8_lossy(&run.output.stderr),
        serde_json::to_string_pretty(&run.report.appendix).unwrap_or_default()
    )
}

/// The finding, attributed to the CLI's agent alone, with the tool call and the tokens in
/// the retro; the grep really ran in the checkout.
fn assert_reviewed(cli: Cli, run: &Run, case: &str) {
    let agent = cli.agent();
    let context = || format!("{agent} {case}: {}", describe(run));
    assert_eq!(run.output.status.code(), Some(0), "{}", context());
    let finding = run
        .report
        .findings
        .iter()
        .find(|finding| finding.title == TITLE)
        .unwrap_or_else(|| panic!("no finding: {}", context()));
    assert_eq!(finding.agents, vec![agent.to_string()], "{}", context());
    assert_eq!(finding.locations[0].path, "app/service.py");
    let row = run
        .report
        .retro
        .iter()
        .find(|row| row.agent == agent)
        .unwrap_or_else(|| panic!("no retro row: {}", context()));
    assert_eq!(row.status, Some(AgentStatus::Completed), "{}", context());
    assert_eq!(row.tool_calls, cli.tool_calls(), "{}", context());
    assert_eq!(
        (row.input_tokens, row.output_tokens),
        cli.tokens(),
        "{}",
        context()
    );
    match cli {
        // Claude Code prices its own run; Codex's cost comes from the price table.
        Cli::Claude => assert!(row.cost_usd.unwrap_or(0.0) > 0.0, "{}", context()),
        Cli::Codex => {
            let (input, output) = cli.tokens();
            let expected = (input as f64 * 1.25 + output as f64 * 10.0) / 1e6;
            let cost = row.cost_usd.unwrap_or(0.0);
            assert!((cost - expected).abs() < 1e-9, "{cost}: {}", context());
        }
        Cli::Gemini => {}
    }
    // The request after the tool call carries the grep's real output from the checkout.
    let tool_output_came_back = run
        .api
        .requests()
        .iter()
        .any(|request| request.body.to_string().contains("except Exception:"));
    assert!(
        tool_output_came_back,
        "{agent} {case}: no request carried the grep's output"
    );
    assert!(
        !run.markdown.contains('\u{1b}'),
        "terminal escapes reached the report"
    );
}

/// The requests that offered the review's tool: the review requests, retries included.
fn review_requests(run: &Run) -> usize {
    run.api
        .requests()
        .iter()
        .filter(|request| request.body.get("tools").is_some())
        .count()
}

async fn exercise(cli: Cli) {
    let Some(bin) = installed_clis() else {
        return;
    };
    let agent = cli.agent();

    let run = review(&bin, cli, Fault::None, KEY, "2m", Some("2")).await;
    assert_reviewed(cli, &run, "answered");
    // The requests came from the real CLI, at the version the install script pins, for
    // the configured model.
    let (client, model) = match cli {
        Cli::Claude => ("claude-cli/2.1.197", "\"model\":\"claude-sonnet-4-5\""),
        Cli::Codex => ("codex_exec/0.171.0", "\"model\":\"gpt-test\""),
        Cli::Gemini => ("GeminiCLI-tui/0.61.0/gemini-test", ""),
    };
    let requests = run.api.requests();
    // Claude Code also probes the endpoint itself (`HEAD /`, from its runtime's client).
    let requests: Vec<_> = requests
        .into_iter()
        .filter(|request| request.path != "/")
        .collect();
    for request in &requests {
        let user_agent = request
            .headers
            .get("user-agent")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        assert!(
            user_agent.contains(client),
            "{agent}: {} from {user_agent}",
            request.path
        );
    }
    assert!(
        requests.iter().all(|request| match cli {
            Cli::Gemini => request.path.contains("/models/gemini-test:"),
            _ => request.body.to_string().contains(model),
        }),
        "{agent}: the configured model was not the one asked for"
    );
    // The tools the CLI offered its model: read-only ones (Codex's shell runs in its
    // read-only sandbox).
    let offered: std::collections::BTreeSet<String> = requests
        .iter()
        .filter_map(|request| request.body.get("tools"))
        .flat_map(|tools| {
            let tools = tools.as_array().cloned().unwrap_or_default();
            tools.into_iter().flat_map(|tool| {
                // Gemini nests its declarations; the others list tools by name.
                match tool.get("functionDeclarations").and_then(|d| d.as_array()) {
                    Some(declarations) => declarations
                        .iter()
                        .filter_map(|d| d["name"].as_str().map(str::to_string))
                        .collect::<Vec<_>>(),
                    None => tool["name"]
                        .as_str()
                        .map(str::to_string)
                        .into_iter()
                        .collect(),
                }
            })
        })
        .collect();
    match cli {
        Cli::Claude => assert_eq!(
            offered,
            ["Glob", "Grep", "Read"].map(str::to_string).into(),
            "Claude Code offered more than its read-only tools"
        ),
        _ => {
            for writer in ["write_file", "replace", "run_shell_command", "apply_patch"] {
                assert!(
                    !offered.contains(writer),
                    "{agent} offered {writer}: {offered:?}"
                );
            }
        }
    }

    for fault in [Fault::DropStream, Fault::Status(429), Fault::Status(500)] {
        let run = review(&bin, cli, fault, KEY, "2m", Some("2")).await;
        let case = format!("{fault:?}");
        assert_reviewed(cli, &run, &case);
        assert!(
            review_requests(&run) >= 3,
            "{agent} {case}: no retry was made: {}",
            describe(&run)
        );
    }

    // A refused key: the agent failed, the report says so and where the key comes from,
    // and a review that nobody completed is Incomplete (exit 4), never Merge.
    let run = review(&bin, cli, Fault::None, "sk-wrong", "2m", Some("2")).await;
    assert_eq!(run.output.status.code(), Some(4), "{}", describe(&run));
    let failed = run
        .report
        .failed_agents
        .iter()
        .find(|failed| failed.agent == agent)
        .unwrap_or_else(|| panic!("{agent} is not named as failed: {}", describe(&run)));
    assert!(
        failed.reason.contains("401")
            && failed.reason.contains(&format!(
                "check the API key in the worker's `{KEY_VARIABLE}`"
            )),
        "{agent}: {}",
        failed.reason
    );
    assert!(
        !run.markdown.contains('\u{1b}'),
        "terminal escapes reached the report"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_reviews_against_the_messages_api_and_recovers_from_faults() {
    exercise(Cli::Claude).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_reviews_against_the_responses_api_and_recovers_from_faults() {
    exercise(Cli::Codex).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_reviews_against_stream_generate_content_and_recovers_from_faults() {
    exercise(Cli::Gemini).await;
}

/// Stopped at its timeout while it retries a refused key, Claude Code's agent is timed out
/// with its stream kept: the report says what it was retrying, and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_stopped_at_its_timeout_keeps_its_stream_and_the_diagnosis() {
    let Some(bin) = installed_clis() else {
        return;
    };
    // Its default retries (ten, minutes apart at the end) outlast the timeout.
    let run = review(&bin, Cli::Claude, Fault::None, "sk-wrong", "6s", None).await;
    assert_eq!(run.output.status.code(), Some(4), "{}", describe(&run));
    let report = &run.report;
    let result = &report.appendix[0];
    assert_eq!(result.status, AgentStatus::TimedOut, "{result:?}");
    let error = result.error.clone().unwrap_or_default();
    assert!(
        error.contains("6s timeout")
            && error.contains("it was retrying after: API error 401 (authentication_failed)")
            && error.contains(&format!("`{KEY_VARIABLE}`")),
        "{error}"
    );
    let stream = result.raw_output.clone().unwrap_or_default();
    assert!(stream.contains("\"subtype\":\"api_retry\""), "{stream}");
    assert!(
        run.api.requests().len() >= 2,
        "it retried before the timeout"
    );
}
