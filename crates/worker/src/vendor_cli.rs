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

/// Tools Claude Code may use without asking: reading and searching the checkout. No shell,
/// not even git: `git log --output=PATH` (and `diff`/`show` alike) writes files, and the
/// change's diff and history are in the prompt already.
const CLAUDE_ALLOWED_TOOLS: &str = "Read,Grep,Glob,LS";

/// Tools Claude Code must not use in a review: nothing that runs commands, writes or
/// reaches the web.
const CLAUDE_DISALLOWED_TOOLS: &str = "Bash,Edit,Write,MultiEdit,NotebookEdit,WebFetch,WebSearch";

/// What Gemini CLI is told with `-p`; the review prompt itself arrives on stdin, which the
/// CLI puts before it.
const GEMINI_INSTRUCTION: &str =
    "Review the change described above and answer with the JSON object it asks for, and nothing else.";

/// Runs one vendor CLI as an agent, in a checkout of the head commit.
#[derive(Debug, Clone)]
pub struct VendorCliRunner {
    kind: RunnerKind,
    prompts: Arc<PromptBuilder>,
    prices: Arc<PriceTable>,
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
                push(&["--output-format", "stream-json"]);
                if let Some(model) = &agent.model {
                    push(&["--model", model]);
                }
                push(&["-p", GEMINI_INSTRUCTION]);
            }
            _ => {
                push(&["-p", "--output-format", "stream-json", "--verbose"]);
                push(&["--allowedTools", CLAUDE_ALLOWED_TOOLS]);
                push(&["--disallowedTools", CLAUDE_DISALLOWED_TOOLS]);
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

    /// Variables the CLI may inherit besides its key: endpoints and its own config home.
    fn inherited(&self) -> &'static [&'static str] {
        match self.kind {
            RunnerKind::Codex => &["OPENAI_BASE_URL", "CODEX_HOME"],
            RunnerKind::GeminiCli => &[
                "GOOGLE_API_KEY",
                "GOOGLE_CLOUD_PROJECT",
                "GOOGLE_CLOUD_LOCATION",
                "GOOGLE_GENAI_USE_VERTEXAI",
            ],
            _ => &["ANTHROPIC_BASE_URL", "CLAUDE_CONFIG_DIR"],
        }
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
        summary
    }
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

        // The CLI reads its key from its standard variable; the agent may keep it under
        // another name in the worker's environment.
        let mut environment = Vec::new();
        if let Some(standard) = self.kind.default_api_key_variable() {
            let source = agent.api_key_env.as_deref().unwrap_or(standard);
            if let Ok(key) = std::env::var(source) {
                environment.push((standard.to_string(), key));
            }
        }
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
        })
        .instrument(tracing::info_span!("vendor_cli", program))
        .await?;
        let summary = self.parse_events(&stdout);
        let model = summary.model.clone().or_else(|| agent.model.clone());
        let usage = Usage {
            input_tokens: summary.input_tokens,
            output_tokens: summary.output_tokens,
            cost_usd: summary.cost_usd.or_else(|| {
                self.prices.cost(
                    model.as_deref(),
                    summary.input_tokens,
                    summary.output_tokens,
                )
            }),
            tool_calls: summary.tool_calls.clone(),
        };
        let raw_output = Some(if summary.final_text.is_empty() {
            stdout.clone()
        } else {
            summary.final_text.clone()
        });
        if !status.success() || summary.error.is_some() {
            let reason = summary
                .error
                .clone()
                .map(|error| format!("; it reported: {error}"))
                .unwrap_or_else(|| stderr_tail(&stderr));
            return Err(RunnerError {
                message: format!("`{program}` exited with {status}{reason}"),
                raw_output: Some(stdout),
                usage: Some(usage.clone()),
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
            });
        }
        let mut result =
            parse_answer_text(&agent.name, &summary.final_text).map_err(|error| RunnerError {
                message: format!("`{program}`'s final answer is not a valid agent result: {error}"),
                raw_output: raw_output.clone(),
                usage: Some(usage.clone()),
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

    /// Claude Code's `stream-json`: `system` (init), `assistant` and `user` messages, and
    /// a closing `result` with the answer, cost and usage.
    fn claude_event(&mut self, event: &Value) {
        match event.get("type").and_then(Value::as_str) {
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
                if let Some(usage) = event.get("usage") {
                    // Cached prompt tokens are prompt tokens too.
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
                    self.error = Some(format!("result `{subtype}`"));
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
                    // `cached_input_tokens` is the cached part of `input_tokens`.
                    self.input_tokens += number(usage, "input_tokens");
                    self.output_tokens += number(usage, "output_tokens");
                }
            }
            Some("turn.failed") => {
                self.error = event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| Some("turn failed".to_string()));
            }
            Some("error") => {
                self.error = text(event, "message").or_else(|| Some("error".to_string()));
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
            Some("result") => {
                if let Some(stats) = event.get("stats") {
                    self.input_tokens = number(stats, "input_tokens");
                    self.output_tokens = number(stats, "output_tokens");
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
            "--allowedTools Read,Grep,Glob,LS ",
            "--disallowedTools Bash,Edit,Write",
        ] {
            assert!(claude.contains(expected), "{expected} in {claude}");
        }
        assert!(
            !CLAUDE_ALLOWED_TOOLS.contains("Bash"),
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
            gemini.contains("--output-format stream-json --model opus -p"),
            "{gemini}"
        );
    }
}
