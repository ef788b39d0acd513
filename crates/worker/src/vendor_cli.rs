//! Vendor agent CLIs (Claude Code, Codex, Gemini CLI) as runners: the review prompt on
//! stdin, the CLI's JSON event stream on stdout, parsed for the final answer, token usage,
//! cost and tool calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use deep_review_protocol::{AgentResult, AgentSpec, AgentTask, RunnerKind, Usage};
use serde_json::Value;
use tracing::Instrument;

use crate::answer::parse_answer_text;
use crate::command::{run_agent_process, stderr_tail, AgentProcess, ProcessOutput};
use crate::{
    AgentRunner, AnswerChannel, CodeAccess, PreparedChange, PriceTable, PromptBuilder, RunnerError,
};

/// The only tools Claude Code is given (`--tools`), all of them allowed without asking:
/// reading and searching the checkout. No shell, not even git: `git log --output=PATH`
/// (and `diff`/`show` alike) writes files, and the change's diff and history are in the
/// prompt already. The names are Claude Code's current built-in tools.
const CLAUDE_TOOLS: &str = "Read,Grep,Glob";

/// Tools Claude Code must not use in a review, denied as well in case `--tools` ever stops
/// restricting a newer CLI: nothing that runs commands, writes or reaches the web.
const CLAUDE_DISALLOWED_TOOLS: &str = "Bash,Edit,Write,NotebookEdit,WebFetch,WebSearch";

/// What Gemini CLI is told with `-p`; the review prompt itself arrives on stdin, which the
/// CLI puts before it.
const GEMINI_INSTRUCTION: &str =
    "Review the change described above and answer with the JSON object it asks for, and nothing else.";

/// The provider name a per-run Codex configuration gives the agent's `base_url`.
const CODEX_PROVIDER: &str = "deep-review";

/// Runs one vendor CLI as an agent, in a checkout of the head commit.
#[derive(Debug, Clone)]
pub struct VendorCliRunner {
    kind: RunnerKind,
    prompts: Arc<PromptBuilder>,
    prices: Arc<PriceTable>,
}

/// What one run of a CLI gets besides its arguments: variables, and a directory of its own
/// (removed when the run ends, even at a timeout) holding `home/`, for the configuration
/// written for it, and `tmp/`, its `TMPDIR`. A private `TMPDIR` keeps runs out of each
/// other's temporary files, and it is what lets Codex use a per-run home at all: Codex
/// refuses to set up its sandbox helpers in a `CODEX_HOME` under the temporary directory.
struct CliSetup {
    environment: Vec<(String, String)>,
    run_directory: tempfile::TempDir,
}

impl VendorCliRunner {
    /// A runner for `kind`, which must be one of the vendor CLIs.
    pub fn new(kind: RunnerKind, prompts: Arc<PromptBuilder>, prices: Arc<PriceTable>) -> Self {
        debug_assert!(kind.is_vendor_cli());
        VendorCliRunner {
            kind,
            prompts,
            prices,
        }
    }

    fn default_program(&self) -> &'static str {
        match self.kind {
            RunnerKind::Codex => "codex",
            RunnerKind::GeminiCli => "gemini",
            _ => "claude",
        }
    }

    /// The CLI's own arguments for `agent`.
    fn arguments(&self, agent: &AgentSpec) -> Vec<String> {
        let mut arguments: Vec<String> = Vec::new();
        let mut push = |values: &[&str]| arguments.extend(values.iter().map(|v| v.to_string()));
        match self.kind {
            RunnerKind::Codex => {
                push(&[
                    "exec",
                    "--json",
                    "--sandbox",
                    "read-only",
                    "--skip-git-repo-check",
                    "--ephemeral",
                ]);
                if let Some(model) = &agent.model {
                    push(&["--model", model]);
                }
                if let Some(effort) = &agent.effort {
                    push(&["-c", &format!("model_reasoning_effort=\"{effort}\"")]);
                }
                // `-` reads the prompt from stdin: a diff can exceed the argument limit.
                push(&["-"]);
            }
            RunnerKind::GeminiCli => {
                // A fresh worktree is never a folder the user trusted; headless, the CLI
                // would exit (55) rather than ask.
                push(&["--skip-trust", "--output-format", "stream-json"]);
                if let Some(model) = &agent.model {
                    push(&["--model", model]);
                }
                push(&["-p", GEMINI_INSTRUCTION]);
            }
            _ => {
                push(&["-p", "--output-format", "stream-json", "--verbose"]);
                push(&["--tools", CLAUDE_TOOLS]);
                push(&["--allowedTools", CLAUDE_TOOLS]);
                push(&["--disallowedTools", CLAUDE_DISALLOWED_TOOLS]);
                // The checkout is the pull request's: its `.claude/` settings, hooks and
                // MCP servers are untrusted, and nothing of a run is kept.
                push(&[
                    "--setting-sources",
                    "user",
                    "--strict-mcp-config",
                    "--no-session-persistence",
                ]);
                if let Some(model) = &agent.model {
                    push(&["--model", model]);
                }
                if let Some(effort) = &agent.effort {
                    push(&["--effort", effort]);
                }
                if let Some(turns) = agent.max_turns {
                    push(&["--max-turns", &turns.to_string()]);
                }
            }
        }
        arguments
    }

    /// Variables the CLI may inherit from the worker besides its key: its own config home,
    /// where the operator set one.
    fn inherited(&self) -> &'static [&'static str] {
        match self.kind {
            RunnerKind::Codex => &["CODEX_HOME"],
            RunnerKind::GeminiCli => &[
                "GOOGLE_API_KEY",
                "GOOGLE_CLOUD_PROJECT",
                "GOOGLE_CLOUD_LOCATION",
                "GOOGLE_GENAI_USE_VERTEXAI",
            ],
            // How often it retries a failed request is the operator's to tune.
            _ => &[
                "ANTHROPIC_BASE_URL",
                "CLAUDE_CONFIG_DIR",
                "CLAUDE_CODE_MAX_RETRIES",
            ],
        }
    }

    /// The key under the CLI's own variable, the agent's endpoint in the form this CLI
    /// takes it, and the configuration it needs to run unattended.
    fn setup(&self, agent: &AgentSpec) -> Result<CliSetup, RunnerError> {
        let mut environment = Vec::new();
        // The CLI reads its key from its standard variable; the agent may keep it under
        // another name in the worker's environment.
        if let Some(standard) = self.kind.default_api_key_variable() {
            let source = agent.api_key_env.as_deref().unwrap_or(standard);
            if let Ok(key) = std::env::var(source) {
                environment.push((standard.to_string(), key));
            }
        }
        let run_directory = tempfile::Builder::new()
            .prefix(&format!("deep-review-{}-", self.default_program()))
            .tempdir()
            .map_err(|error| {
                RunnerError::failed(format!("could not create the CLI's run directory: {error}"))
            })?;
        let home = run_directory.path().join("home");
        let temporary = run_directory.path().join("tmp");
        for directory in [&home, &temporary] {
            std::fs::create_dir_all(directory).map_err(|error| {
                RunnerError::failed(format!("could not create {}: {error}", directory.display()))
            })?;
        }
        let mut set =
            |name: &str, value: &str| environment.push((name.to_string(), value.to_string()));
        set("TMPDIR", &temporary.display().to_string());
        match self.kind {
            RunnerKind::ClaudeCode => {
                if let Some(base_url) = &agent.base_url {
                    set("ANTHROPIC_BASE_URL", base_url);
                }
                // No auto-update, telemetry or error reporting from a review sandbox.
                set("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
                set("DISABLE_AUTOUPDATER", "1");
            }
            RunnerKind::Codex => {
                // Codex ignores OPENAI_BASE_URL: an endpoint is a model provider in its
                // configuration, so the run gets a CODEX_HOME of its own that names one.
                if let Some(base_url) = &agent.base_url {
                    write_config_file(&home.join("config.toml"), &codex_configuration(base_url)?)?;
                    set("CODEX_HOME", &home.display().to_string());
                }
            }
            _ => {
                // Gemini CLI picks its authentication interactively unless its settings
                // name one; a home of its own names the API key and trusts nothing else.
                let settings = home.join(".gemini");
                std::fs::create_dir_all(&settings).map_err(|error| {
                    RunnerError::failed(format!(
                        "could not create Gemini CLI's settings directory: {error}"
                    ))
                })?;
                write_config_file(
                    &settings.join("settings.json"),
                    &serde_json::json!({
                        "security": {"auth": {"selectedType": "gemini-api-key"}},
                        "privacy": {"usageStatisticsEnabled": false},
                    })
                    .to_string(),
                )?;
                set("GEMINI_CLI_HOME", &home.display().to_string());
                set("GEMINI_CLI_TRUST_WORKSPACE", "true");
                if let Some(base_url) = &agent.base_url {
                    set("GOOGLE_GEMINI_BASE_URL", base_url);
                }
            }
        }
        Ok(CliSetup {
            environment,
            run_directory,
        })
    }

    fn parse_events(&self, stdout: &str) -> StreamSummary {
        let mut summary = StreamSummary::default();
        for line in stdout.lines() {
            let Ok(event) = serde_json::from_str::<Value>(line.trim()) else {
                // CLIs print the odd plain line (warnings, banners); only events count.
                continue;
            };
            match self.kind {
                RunnerKind::Codex => summary.codex_event(&event),
                RunnerKind::GeminiCli => summary.gemini_event(&event),
                _ => summary.claude_event(&event),
            }
        }
        summary.finish();
        summary
    }

    /// Where to look when `error` says the provider refused the key.
    fn key_hint(&self, agent: &AgentSpec, error: &str) -> String {
        let lowered = error.to_ascii_lowercase();
        let refused = [
            "401",
            "403",
            "unauthorized",
            "authentication",
            "api key",
            "api_key",
        ]
        .iter()
        .any(|sign| lowered.contains(sign));
        let variable = agent
            .api_key_env
            .as_deref()
            .or(self.kind.default_api_key_variable());
        match variable {
            Some(variable) if refused => {
                format!(" (check the API key in the worker's `{variable}` variable)")
            }
            _ => String::new(),
        }
    }

    /// Tokens, cost and tool calls of a (possibly partial) stream.
    fn usage(&self, summary: &StreamSummary, model: Option<&str>) -> Usage {
        Usage {
            input_tokens: summary.input_tokens,
            output_tokens: summary.output_tokens,
            cost_usd: summary.cost_usd.or_else(|| {
                self.prices
                    .cost(model, summary.input_tokens, summary.output_tokens)
            }),
            tool_calls: summary.tool_calls.clone(),
        }
    }
}

fn write_config_file(path: &std::path::Path, contents: &str) -> Result<(), RunnerError> {
    std::fs::write(path, contents).map_err(|error| {
        RunnerError::failed(format!("could not write {}: {error}", path.display()))
    })
}

/// Codex's `config.toml` for an agent with its own endpoint: a Responses API provider at
/// `base_url` whose key is in `OPENAI_API_KEY`.
fn codex_configuration(base_url: &str) -> Result<String, RunnerError> {
    let mut provider = toml::Table::new();
    provider.insert("name".into(), "deep-review agent endpoint".into());
    provider.insert("base_url".into(), base_url.into());
    provider.insert("env_key".into(), "OPENAI_API_KEY".into());
    provider.insert("wire_api".into(), "responses".into());
    let mut providers = toml::Table::new();
    providers.insert(CODEX_PROVIDER.into(), provider.into());
    let mut configuration = toml::Table::new();
    configuration.insert("model_provider".into(), CODEX_PROVIDER.into());
    configuration.insert("model_providers".into(), providers.into());
    toml::to_string(&configuration).map_err(|error| {
        RunnerError::failed(format!("could not write Codex's configuration: {error}"))
    })
}

#[async_trait]
impl AgentRunner for VendorCliRunner {
    fn needs_worktree(&self) -> bool {
        true
    }

    async fn run(
        &self,
        task: &AgentTask,
        change: &PreparedChange,
    ) -> Result<AgentResult, RunnerError> {
        let agent = &task.agent;
        let access = if change.worktree().is_some() {
            CodeAccess::Checkout
        } else {
            CodeAccess::DiffOnly
        };
        let prompt = self
            .prompts
            .build(task, change, access, AnswerChannel::Json)
            .await
            .map_err(|error| RunnerError::failed(error.to_string()))?;
        let (program, extra_arguments) = match agent.command.split_first() {
            Some((program, extra)) => (program.as_str(), extra),
            None => (self.default_program(), &[][..]),
        };
        let mut arguments = self.arguments(agent);
        arguments.extend(extra_arguments.iter().cloned());
        // The run directory lives until the run ends, however it ends.
        let CliSetup {
            environment,
            run_directory,
        } = self.setup(agent)?;
        let ProcessOutput {
            status,
            stdout,
            stderr,
        } = run_agent_process(AgentProcess {
            program,
            arguments: &arguments,
            stdin: prompt.text.into_bytes(),
            environment,
            inherited: self.inherited(),
            worktree: change.worktree(),
            writable: vec![run_directory.path().to_path_buf()],
            deadline: change.deadline,
        })
        .instrument(tracing::info_span!("vendor_cli", program))
        .await
        .map_err(|mut error| {
            // Stopped at its deadline: what it streamed until then says what it spent and
            // what it was stuck on.
            if let Some(stream) = &error.raw_output {
                let summary = self.parse_events(stream);
                let model = summary.model.clone().or_else(|| agent.model.clone());
                error.usage = Some(self.usage(&summary, model.as_deref()));
                if let Some(trouble) = summary.retrying.as_deref().or(summary.error.as_deref()) {
                    error.message = format!(
                        "; it was retrying after: {trouble}{}{}",
                        self.key_hint(agent, trouble),
                        error.message
                    );
                }
            }
            error
        })?;
        let summary = self.parse_events(&stdout);
        let model = summary.model.clone().or_else(|| agent.model.clone());
        let usage = self.usage(&summary, model.as_deref());
        let raw_output = Some(if summary.final_text.is_empty() {
            stdout.clone()
        } else {
            summary.final_text.clone()
        });
        if !status.success() || summary.error.is_some() {
            let reason = summary
                .error
                .as_deref()
                .map(|error| format!("; it reported: {error}{}", self.key_hint(agent, error)))
                .unwrap_or_else(|| stderr_tail(&stderr));
            return Err(RunnerError {
                message: format!("`{program}` exited with {status}{reason}"),
                raw_output: Some(stdout),
                usage: Some(usage.clone()),
                timed_out: false,
            });
        }
        if summary.final_text.trim().is_empty() {
            return Err(RunnerError {
                message: format!(
                    "`{program}` printed no final answer in its event stream{}",
                    stderr_tail(&stderr)
                ),
                raw_output: Some(stdout),
                usage: Some(usage.clone()),
                timed_out: false,
            });
        }
        let mut result =
            parse_answer_text(&agent.name, &summary.final_text).map_err(|error| RunnerError {
                message: format!("`{program}`'s final answer is not a valid agent result: {error}"),
                raw_output: raw_output.clone(),
                usage: Some(usage.clone()),
                timed_out: false,
            })?;
        result.usage = usage;
        result.model = model;
        result.omitted_files = prompt.omitted;
        result.raw_output = raw_output;
        Ok(result)
    }
}

/// What a CLI's event stream said, across all its events.
#[derive(Debug, Default, PartialEq)]
struct StreamSummary {
    /// The last answer text (text after the last tool call, or the CLI's `result`).
    final_text: String,
    /// The model the CLI reported using.
    model: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    /// Cost, when the CLI reports it (Claude Code does).
    cost_usd: Option<f64>,
    tool_calls: BTreeMap<String, u64>,
    /// Why the run failed, when the stream says it did.
    error: Option<String>,
    /// An error the CLI reported that a later completed turn may still show it recovered
    /// from (Codex's "Reconnecting… 1/5"); fatal only if none follows.
    unresolved_error: Option<String>,
    /// The last trouble the CLI retried after (an API error, a dropped stream): what a run
    /// stopped at its deadline was doing.
    retrying: Option<String>,
}

fn number(value: &Value, field: &str) -> u64 {
    value.get(field).and_then(Value::as_u64).unwrap_or(0)
}

fn text(value: &Value, field: &str) -> Option<String> {
    value.get(field).and_then(Value::as_str).map(str::to_string)
}

impl StreamSummary {
    fn count_tool(&mut self, name: &str) {
        *self.tool_calls.entry(name.to_string()).or_default() += 1;
    }

    /// After the last event: an error nothing recovered from is the run's error.
    fn finish(&mut self) {
        if self.error.is_none() {
            self.error = self.unresolved_error.take();
        }
    }

    /// Claude Code's `stream-json`: `system` (init), `assistant` and `user` messages, and
    /// a closing `result` with the answer, cost and usage.
    fn claude_event(&mut self, event: &Value) {
        match event.get("type").and_then(Value::as_str) {
            Some("system") if text(event, "subtype").as_deref() == Some("api_retry") => {
                self.retrying = Some(format!(
                    "API error {} ({}), attempt {} of {}",
                    event
                        .get("error_status")
                        .map(Value::to_string)
                        .unwrap_or_else(|| "without a status".to_string()),
                    text(event, "error").unwrap_or_default(),
                    number(event, "attempt"),
                    number(event, "max_retries"),
                ));
            }
            Some("system") => {
                if let Some(model) = text(event, "model") {
                    self.model = Some(model);
                }
            }
            Some("assistant") => {
                let blocks = event
                    .pointer("/message/content")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for block in &blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("tool_use") => {
                            self.count_tool(&text(block, "name").unwrap_or_default());
                            self.final_text.clear();
                        }
                        Some("text") => self
                            .final_text
                            .push_str(&text(block, "text").unwrap_or_default()),
                        _ => {}
                    }
                }
            }
            Some("result") => {
                if let Some(result) = text(event, "result") {
                    self.final_text = result;
                }
                // `modelUsage` covers every model the run called, side requests (titles,
                // summaries on a smaller model) included; `usage` only the main model's.
                // Cached prompt tokens are prompt tokens too.
                if let Some(models) = event.get("modelUsage").and_then(Value::as_object) {
                    self.input_tokens = models
                        .values()
                        .map(|model| {
                            number(model, "inputTokens")
                                + number(model, "cacheReadInputTokens")
                                + number(model, "cacheCreationInputTokens")
                        })
                        .sum();
                    self.output_tokens = models
                        .values()
                        .map(|model| number(model, "outputTokens"))
                        .sum();
                } else if let Some(usage) = event.get("usage") {
                    self.input_tokens = number(usage, "input_tokens")
                        + number(usage, "cache_creation_input_tokens")
                        + number(usage, "cache_read_input_tokens");
                    self.output_tokens = number(usage, "output_tokens");
                }
                self.cost_usd = event.get("total_cost_usd").and_then(Value::as_f64);
                let subtype = text(event, "subtype").unwrap_or_default();
                let is_error = event
                    .get("is_error")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if is_error || (!subtype.is_empty() && subtype != "success") {
                    // A refused request ends as an error `result` whose text says why.
                    self.error = Some(match event.get("api_error_status") {
                        Some(Value::Number(status)) => format!(
                            "API error {status}: {}",
                            text(event, "result").unwrap_or_default()
                        ),
                        _ => format!("result `{subtype}`"),
                    });
                }
            }
            _ => {}
        }
    }

    /// Codex's `exec --json`: thread and turn events, and items (messages, commands, tool
    /// calls) started and completed.
    fn codex_event(&mut self, event: &Value) {
        match event.get("type").and_then(Value::as_str) {
            Some("item.completed") => {
                let Some(item) = event.get("item") else {
                    return;
                };
                match item.get("type").and_then(Value::as_str) {
                    Some("agent_message") => {
                        self.final_text = text(item, "text").unwrap_or_default();
                    }
                    Some("reasoning") | Some("todo_list") | Some("error") | None => {}
                    Some("command_execution") => self.count_tool("shell"),
                    Some("file_change") => self.count_tool("apply_patch"),
                    Some("mcp_tool_call") => {
                        let name = text(item, "tool").unwrap_or_else(|| "mcp".to_string());
                        self.count_tool(&name);
                    }
                    Some(other) => self.count_tool(other),
                }
            }
            Some("turn.completed") => {
                if let Some(usage) = event.get("usage") {
                    // `cached_input_tokens` is the cached part of `input_tokens`, and
                    // `reasoning_output_tokens` the reasoning part of `output_tokens`.
                    self.input_tokens += number(usage, "input_tokens");
                    self.output_tokens += number(usage, "output_tokens");
                }
                // The turn completed: whatever it reported on the way, it recovered.
                self.unresolved_error = None;
            }
            Some("turn.failed") => {
                self.error = event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| Some("turn failed".to_string()));
            }
            Some("error") => {
                // Codex reports retries ("Reconnecting... 1/5") as top-level errors too;
                // only one that no completed turn follows ends the run.
                self.unresolved_error =
                    text(event, "message").or_else(|| Some("error".to_string()));
                self.retrying.clone_from(&self.unresolved_error);
            }
            _ => {}
        }
    }

    /// Gemini CLI's `stream-json`: `init`, `message` chunks, `tool_use`, `tool_result`,
    /// `error` and a closing `result` with statistics.
    fn gemini_event(&mut self, event: &Value) {
        match event.get("type").and_then(Value::as_str) {
            Some("init") => {
                if let Some(model) = text(event, "model") {
                    self.model = Some(model);
                }
            }
            Some("message") if text(event, "role").as_deref() == Some("assistant") => {
                let content = text(event, "content").unwrap_or_default();
                if event.get("delta").and_then(Value::as_bool).unwrap_or(false) {
                    self.final_text.push_str(&content);
                } else {
                    self.final_text = content;
                }
            }
            Some("tool_use") => {
                self.count_tool(&text(event, "tool_name").unwrap_or_default());
                self.final_text.clear();
            }
            Some("error") if text(event, "severity").as_deref() == Some("error") => {
                self.error = text(event, "message");
            }
            Some("error") => self.retrying = text(event, "message"),
            Some("result") => {
                if let Some(stats) = event.get("stats") {
                    // `output_tokens` leaves out thinking, which is billed as output (and
                    // counted so by the gemini API runner); `total_tokens` includes it.
                    self.input_tokens = number(stats, "input_tokens");
                    self.output_tokens = number(stats, "output_tokens")
                        .max(number(stats, "total_tokens").saturating_sub(self.input_tokens));
                }
                if text(event, "status").as_deref() == Some("error") {
                    self.error = event
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .or_else(|| Some("status `error`".to_string()));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(kind: RunnerKind) -> VendorCliRunner {
        VendorCliRunner::new(kind, Arc::default(), Arc::default())
    }

    #[test]
    fn claude_stream_gives_answer_usage_cost_and_tools() {
        let stream = r#"{"type":"system","subtype":"init","model":"claude-sonnet-4-5","tools":["Read"]}
{"type":"assistant","message":{"content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"t1","name":"Read","input":{}}]}}
{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"..."}]}}
{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t2","name":"Bash","input":{}},{"type":"tool_use","id":"t3","name":"Read","input":{}}]}}
{"type":"assistant","message":{"content":[{"type":"text","text":"{\"findings\":[]}"}]}}
{"type":"result","subtype":"success","is_error":false,"result":"{\"findings\":[]}","total_cost_usd":0.42,"usage":{"input_tokens":100,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":7}}"#;
        let summary = runner(RunnerKind::ClaudeCode).parse_events(stream);
        assert_eq!(summary.final_text, "{\"findings\":[]}");
        assert_eq!(summary.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!((summary.input_tokens, summary.output_tokens), (150, 7));
        assert_eq!(summary.cost_usd, Some(0.42));
        assert_eq!(
            summary.tool_calls,
            BTreeMap::from([("Bash".to_string(), 1), ("Read".to_string(), 2)])
        );
        assert_eq!(summary.error, None);

        let failed = runner(RunnerKind::ClaudeCode)
            .parse_events(r#"{"type":"result","subtype":"error_max_turns","is_error":true}"#);
        assert_eq!(failed.error.as_deref(), Some("result `error_max_turns`"));
    }

    #[test]
    fn codex_stream_sums_turns_and_counts_items() {
        let stream = r#"{"type":"thread.started","thread_id":"th_1"}
{"type":"turn.started"}
{"type":"item.started","item":{"id":"i0","type":"command_execution","command":"git log","status":"in_progress"}}
{"type":"item.completed","item":{"id":"i0","type":"command_execution","command":"git log","exit_code":0,"status":"completed"}}
{"type":"item.completed","item":{"id":"i1","type":"reasoning","text":"thinking"}}
{"type":"item.completed","item":{"id":"i2","type":"mcp_tool_call","server":"s","tool":"search","status":"completed"}}
{"type":"item.completed","item":{"id":"i3","type":"agent_message","text":"{\"findings\":[]}"}}
{"type":"turn.completed","usage":{"input_tokens":1000,"cached_input_tokens":400,"output_tokens":50}}
{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":0,"output_tokens":5}}"#;
        let summary = runner(RunnerKind::Codex).parse_events(stream);
        assert_eq!(summary.final_text, "{\"findings\":[]}");
        assert_eq!((summary.input_tokens, summary.output_tokens), (1010, 55));
        assert_eq!(
            summary.tool_calls,
            BTreeMap::from([("search".to_string(), 1), ("shell".to_string(), 1)])
        );
        let failed = runner(RunnerKind::Codex)
            .parse_events(r#"{"type":"turn.failed","error":{"message":"stream disconnected"}}"#);
        assert_eq!(failed.error.as_deref(), Some("stream disconnected"));
    }

    #[test]
    fn gemini_stream_joins_deltas_after_the_last_tool_call() {
        let stream = r#"{"type":"init","timestamp":"t","session_id":"s","model":"gemini-2.5-pro"}
{"type":"message","timestamp":"t","role":"user","content":"prompt"}
{"type":"message","timestamp":"t","role":"assistant","content":"I will read {it}.","delta":true}
{"type":"tool_use","timestamp":"t","tool_name":"read_file","tool_id":"1","parameters":{}}
{"type":"tool_result","timestamp":"t","tool_id":"1","status":"success","output":"..."}
{"type":"message","timestamp":"t","role":"assistant","content":"{\"findings\":","delta":true}
{"type":"message","timestamp":"t","role":"assistant","content":" []}","delta":true}
{"type":"error","timestamp":"t","severity":"warning","message":"slow"}
{"type":"result","timestamp":"t","status":"success","stats":{"total_tokens":30,"input_tokens":20,"output_tokens":10,"cached":0,"input":20,"duration_ms":5,"tool_calls":1}}"#;
        let summary = runner(RunnerKind::GeminiCli).parse_events(stream);
        assert_eq!(summary.final_text, "{\"findings\": []}");
        assert_eq!(summary.model.as_deref(), Some("gemini-2.5-pro"));
        assert_eq!((summary.input_tokens, summary.output_tokens), (20, 10));
        assert_eq!(
            summary.tool_calls,
            BTreeMap::from([("read_file".to_string(), 1)])
        );
        assert_eq!(summary.error, None);
    }

    #[test]
    fn arguments_carry_model_effort_and_read_only_limits() {
        let mut agent = AgentSpec {
            model: Some("opus".to_string()),
            effort: Some("high".to_string()),
            timeout: std::time::Duration::from_secs(1),
            max_turns: Some(40),
            ..AgentSpec::new("a".to_string(), RunnerKind::ClaudeCode)
        };
        let claude = runner(RunnerKind::ClaudeCode).arguments(&agent).join(" ");
        for expected in [
            "-p --output-format stream-json --verbose",
            "--model opus",
            "--effort high",
            "--max-turns 40",
            "--tools Read,Grep,Glob ",
            "--allowedTools Read,Grep,Glob ",
            "--disallowedTools Bash,Edit,Write",
            "--setting-sources user",
            "--strict-mcp-config",
        ] {
            assert!(claude.contains(expected), "{expected} in {claude}");
        }
        assert!(
            !CLAUDE_TOOLS.contains("Bash"),
            "no shell command, git included, may run unasked"
        );
        agent.runner = RunnerKind::Codex;
        let codex = runner(RunnerKind::Codex).arguments(&agent).join(" ");
        assert!(
            codex.starts_with("exec --json --sandbox read-only"),
            "{codex}"
        );
        assert!(codex.contains("model_reasoning_effort=\"high\""), "{codex}");
        assert!(codex.ends_with(" -"), "{codex}");
        let gemini = runner(RunnerKind::GeminiCli).arguments(&agent).join(" ");
        assert!(
            gemini.starts_with("--skip-trust --output-format stream-json --model opus -p"),
            "{gemini}"
        );
    }

    #[test]
    fn a_codex_error_it_recovers_from_is_not_fatal() {
        let recovered = r#"{"type":"thread.started","thread_id":"th_1"}
{"type":"turn.started"}
{"type":"error","message":"Reconnecting... 1/5 (stream disconnected before completion)"}
{"type":"item.completed","item":{"id":"i1","type":"agent_message","text":"{\"findings\":[]}"}}
{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":0,"output_tokens":5}}"#;
        let summary = runner(RunnerKind::Codex).parse_events(recovered);
        assert_eq!(summary.error, None);
        assert_eq!(summary.final_text, "{\"findings\":[]}");

        let gave_up = r#"{"type":"turn.started"}
{"type":"error","message":"Reconnecting... 5/5"}
{"type":"error","message":"unexpected status 401 Unauthorized"}"#;
        let summary = runner(RunnerKind::Codex).parse_events(gave_up);
        assert_eq!(
            summary.error.as_deref(),
            Some("unexpected status 401 Unauthorized")
        );
    }

    #[test]
    fn claude_tokens_count_every_model_of_the_run() {
        let stream = r#"{"type":"result","subtype":"success","is_error":false,"result":"{}","total_cost_usd":0.02,"usage":{"input_tokens":100,"cache_read_input_tokens":50,"output_tokens":10},"modelUsage":{"claude-opus":{"inputTokens":100,"outputTokens":10,"cacheReadInputTokens":50,"cacheCreationInputTokens":5},"claude-haiku":{"inputTokens":30,"outputTokens":3,"cacheReadInputTokens":0,"cacheCreationInputTokens":0}}}"#;
        let summary = runner(RunnerKind::ClaudeCode).parse_events(stream);
        assert_eq!((summary.input_tokens, summary.output_tokens), (185, 13));
    }

    #[test]
    fn gemini_thinking_tokens_count_as_output() {
        let stream = r#"{"type":"result","status":"success","stats":{"total_tokens":1950,"input_tokens":1800,"output_tokens":120,"cached":0,"input":1800,"tool_calls":1}}"#;
        let summary = runner(RunnerKind::GeminiCli).parse_events(stream);
        assert_eq!((summary.input_tokens, summary.output_tokens), (1800, 150));
    }

    #[test]
    fn codex_configuration_names_the_endpoint_as_a_responses_provider() {
        let text = codex_configuration("http://127.0.0.1:9/v1 \"quoted\"").unwrap();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["model_provider"].as_str(), Some(CODEX_PROVIDER));
        let provider = &parsed["model_providers"][CODEX_PROVIDER];
        assert_eq!(
            provider["base_url"].as_str(),
            Some("http://127.0.0.1:9/v1 \"quoted\"")
        );
        assert_eq!(provider["env_key"].as_str(), Some("OPENAI_API_KEY"));
        assert_eq!(provider["wire_api"].as_str(), Some("responses"));
    }

    #[test]
    fn each_cli_gets_its_endpoint_in_its_own_form() {
        let agent = AgentSpec {
            base_url: Some("http://127.0.0.1:9".to_string()),
            api_key_env: Some("HOME".to_string()),
            ..AgentSpec::new("a", RunnerKind::GeminiCli)
        };
        let variables = |setup: &CliSetup| -> BTreeMap<String, String> {
            setup.environment.iter().cloned().collect()
        };
        let gemini = runner(RunnerKind::GeminiCli).setup(&agent).unwrap();
        let environment = variables(&gemini);
        assert_eq!(environment["GOOGLE_GEMINI_BASE_URL"], "http://127.0.0.1:9");
        assert_eq!(environment["GEMINI_CLI_TRUST_WORKSPACE"], "true");
        assert_eq!(
            environment["GEMINI_API_KEY"],
            std::env::var("HOME").unwrap()
        );
        let settings = std::fs::read_to_string(
            std::path::Path::new(&environment["GEMINI_CLI_HOME"]).join(".gemini/settings.json"),
        )
        .unwrap();
        assert!(settings.contains("gemini-api-key"), "{settings}");

        let codex = runner(RunnerKind::Codex).setup(&agent).unwrap();
        let home = variables(&codex)["CODEX_HOME"].clone();
        // Codex sets up its sandbox helpers only in a home outside its temporary directory.
        assert!(
            !std::path::Path::new(&home).starts_with(&variables(&codex)["TMPDIR"]),
            "{home}"
        );
        let configuration =
            std::fs::read_to_string(std::path::Path::new(&home).join("config.toml")).unwrap();
        assert!(
            configuration.contains("http://127.0.0.1:9"),
            "{configuration}"
        );
        drop(codex);
        assert!(
            !std::path::Path::new(&home).exists(),
            "the run's configuration outlived it"
        );

        let claude = runner(RunnerKind::ClaudeCode).setup(&agent).unwrap();
        assert_eq!(
            variables(&claude)["ANTHROPIC_BASE_URL"],
            "http://127.0.0.1:9"
        );
    }
}
