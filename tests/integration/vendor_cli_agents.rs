//! The vendor CLI runners (Claude Code, Codex, Gemini CLI) against stand-in executables that
//! print each CLI's event stream: for what the real CLIs ([`crate::real_vendor_clis`])
//! cannot be made to do (crash, hang, print garbage or prose) and to capture exactly what a
//! CLI is started with (arguments, environment, working directory, prompt).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use deep_review_protocol::{AgentSpec, RunnerKind};
use deep_review_worker::{ModelPrice, PriceTable, PromptBuilder, VendorCliRunner};

use crate::model_agents::run_on_known_problems;
use crate::util::fixture;

fn cli_agent(runner: RunnerKind, executable: &str, extra: &[&str]) -> AgentSpec {
    let mut command = vec![fixture(&format!("agents/bin/{executable}"))
        .display()
        .to_string()];
    command.extend(extra.iter().map(|argument| argument.to_string()));
    AgentSpec {
        model: Some(format!("{executable}-model")),
        effort: Some("high".to_string()),
        timeout: Duration::from_secs(60),
        command,
        // The key is read from the named variable and handed over under the CLI's own
        // name; HOME is always set, so the test need not change its environment.
        api_key_env: Some("HOME".to_string()),
        ..AgentSpec::new(executable, runner)
    }
}

fn runner(kind: RunnerKind) -> VendorCliRunner {
    let prices = PriceTable::new(BTreeMap::from([(
        "codex-model".to_string(),
        ModelPrice {
            input_per_million_usd: 1.25,
            output_per_million_usd: 10.0,
        },
    )]));
    VendorCliRunner::new(kind, Arc::new(PromptBuilder::default()), Arc::new(prices))
}

#[tokio::test]
async fn claude_code_runs_confined_and_reports_answer_usage_cost_and_tools() {
    // The stand-in reports what it was started with inside its answer: a sandboxed agent
    // cannot leave files behind.
    let agent = cli_agent(RunnerKind::ClaudeCode, "claude", &["--report-capture"]);
    let result = run_on_known_problems(agent, &runner(RunnerKind::ClaudeCode))
        .await
        .unwrap();
    assert_eq!(result.findings.len(), 1);
    assert_eq!(
        result.findings[0].title,
        "Failures of charge() are swallowed by except/pass"
    );
    assert_eq!(result.model.as_deref(), Some("claude-stand-in"));
    // Cache writes and reads are prompt tokens too.
    assert_eq!(
        (result.usage.input_tokens, result.usage.output_tokens),
        (5000, 800)
    );
    assert_eq!(result.usage.cost_usd, Some(0.0421));
    assert_eq!(
        result.usage.tool_calls,
        BTreeMap::from([
            ("Bash".to_string(), 1),
            ("Grep".to_string(), 1),
            ("Read".to_string(), 2)
        ])
    );

    let read = |name: &str| {
        use base64::Engine;
        let prefix = format!("capture:{name}:");
        let encoded = result
            .testing_gaps
            .iter()
            .find_map(|gap| gap.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} captured: {:?}", result.testing_gaps));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    };
    let arguments = read("args");
    for expected in [
        "-p --output-format stream-json --verbose",
        "--model claude-model",
        "--effort high",
        "--tools Read,Grep,Glob ",
        "--allowedTools Read,Grep,Glob ",
        "--setting-sources user",
        "--disallowedTools Bash,Edit,Write",
    ] {
        assert!(arguments.contains(expected), "{expected} in {arguments}");
    }
    // It ran in the worktree the worker made for this review (named after the review
    // id), not in the user's repository.
    let working_directory = read("cwd");
    let directory_name = std::path::Path::new(working_directory.trim())
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default()
        .to_string();
    assert!(directory_name.starts_with("model-"), "{working_directory}");
    let prompt = read("prompt");
    assert!(prompt.contains("Your working directory is a checkout of the head commit"));
    assert!(prompt.contains("+    except Exception:"));
    assert!(prompt.contains("reply with one JSON object and nothing else"));

    // Only the allowlisted variables reach the CLI, with its key under its own name.
    let environment = read("env");
    let names: BTreeSet<&str> = environment
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    let allowed: BTreeSet<&str> = [
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "TERM",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "CLAUDE_CONFIG_DIR",
        "CLAUDE_CODE_MAX_RETRIES",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_AUTOUPDATER",
        "DEEP_REVIEW_WORKTREE",
        // Set by the shell itself.
        "PWD",
        "SHLVL",
        "OLDPWD",
        "_",
    ]
    .into();
    let unexpected: Vec<&&str> = names.difference(&allowed).collect();
    assert!(unexpected.is_empty(), "leaked variables: {unexpected:?}");
    assert!(
        environment.contains(&format!(
            "ANTHROPIC_API_KEY={}",
            std::env::var("HOME").unwrap()
        )),
        "{environment}"
    );
}

#[tokio::test]
async fn crashes_failed_runs_garbage_and_prose_are_failed_results_that_keep_the_output() {
    let cases = [
        (RunnerKind::ClaudeCode, "claude", "crash", "API Error: 500"),
        (
            RunnerKind::ClaudeCode,
            "claude",
            "failed-run",
            "result `error_max_turns`",
        ),
        (
            RunnerKind::Codex,
            "codex",
            "failed-run",
            "stream disconnected",
        ),
        (
            RunnerKind::GeminiCli,
            "gemini",
            "failed-run",
            "turn limit exceeded",
        ),
        (RunnerKind::Codex, "codex", "garbage", "no final answer"),
        (
            RunnerKind::GeminiCli,
            "gemini",
            "prose",
            "not a valid agent result",
        ),
    ];
    for (kind, executable, mode, expected) in cases {
        let error = run_on_known_problems(
            cli_agent(kind, executable, &["--stand-in", mode]),
            &runner(kind),
        )
        .await
        .unwrap_err();
        assert!(
            error.message.contains(expected),
            "{executable} {mode}: {}",
            error.message
        );
        if mode != "crash" {
            assert!(
                error.raw_output.is_some(),
                "{executable} {mode} kept no output"
            );
        }
        if mode == "failed-run" && kind == RunnerKind::ClaudeCode {
            // A failed run still cost something, and says so.
            let usage = error.usage.unwrap();
            assert_eq!(usage.cost_usd, Some(0.01));
            assert_eq!(usage.input_tokens, 900);
        }
    }
}

#[tokio::test]
async fn a_hanging_cli_is_killed_with_its_children_when_the_timeout_drops_the_run() {
    let marker = format!("hang-marker-{}", std::process::id());
    let agent = cli_agent(
        RunnerKind::Codex,
        "codex",
        &["--stand-in", "hang", "--capture", &format!("/tmp/{marker}")],
    );
    let codex = runner(RunnerKind::Codex);
    let outcome =
        tokio::time::timeout(Duration::from_secs(2), run_on_known_problems(agent, &codex)).await;
    assert!(outcome.is_err(), "the stand-in should still be hanging");
    // The worker's timeout drops the run; the process group must be gone soon after.
    let mut survivors = String::new();
    for _ in 0..50 {
        let output = std::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .unwrap();
        survivors = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if survivors.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(survivors.is_empty(), "still running: {survivors}");
    for suffix in ["prompt", "env", "cwd", "args"] {
        let _removed = std::fs::remove_file(format!("/tmp/{marker}.{suffix}"));
    }
}
