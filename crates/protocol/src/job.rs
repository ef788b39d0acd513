use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::default_schema_version;

/// Which implementation runs an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RunnerKind {
    /// The offline static reviewer shipped with deep-review; needs no model.
    Builtin,
    /// Any executable that reads an [`AgentInput`] on stdin and prints an `AgentResult`.
    Command,
    /// Anthropic's Claude Code CLI in print mode (`claude -p --output-format stream-json`).
    ClaudeCode,
    /// OpenAI's Codex CLI (`codex exec --json`).
    Codex,
    /// Google's Gemini CLI in headless mode (`gemini -p --output-format stream-json`).
    GeminiCli,
    /// Anthropic's Messages API, with the worker's tool loop.
    Anthropic,
    /// OpenAI's Chat Completions API or any server compatible with it (vLLM, Ollama,
    /// LiteLLM), with the worker's tool loop.
    Openai,
    /// Google's Gemini API (`generateContent`), with the worker's tool loop.
    Gemini,
}

impl RunnerKind {
    /// The name used in configuration and queue names.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerKind::Builtin => "builtin",
            RunnerKind::Command => "command",
            RunnerKind::ClaudeCode => "claude-code",
            RunnerKind::Codex => "codex",
            RunnerKind::GeminiCli => "gemini-cli",
            RunnerKind::Anthropic => "anthropic",
            RunnerKind::Openai => "openai",
            RunnerKind::Gemini => "gemini",
        }
    }

    /// Every runner, for configuration errors and documentation.
    pub const ALL: [RunnerKind; 8] = [
        RunnerKind::Builtin,
        RunnerKind::Command,
        RunnerKind::ClaudeCode,
        RunnerKind::Codex,
        RunnerKind::GeminiCli,
        RunnerKind::Anthropic,
        RunnerKind::Openai,
        RunnerKind::Gemini,
    ];

    /// Whether the runner calls a model's HTTP API from the worker's own tool loop.
    pub fn is_model_api(self) -> bool {
        matches!(
            self,
            RunnerKind::Anthropic | RunnerKind::Openai | RunnerKind::Gemini
        )
    }

    /// Whether the runner drives a vendor's agent CLI.
    pub fn is_vendor_cli(self) -> bool {
        matches!(
            self,
            RunnerKind::ClaudeCode | RunnerKind::Codex | RunnerKind::GeminiCli
        )
    }

    /// The environment variable that holds the API key when the agent names none.
    pub fn default_api_key_variable(self) -> Option<&'static str> {
        match self {
            RunnerKind::ClaudeCode | RunnerKind::Anthropic => Some("ANTHROPIC_API_KEY"),
            RunnerKind::Codex | RunnerKind::Openai => Some("OPENAI_API_KEY"),
            RunnerKind::GeminiCli | RunnerKind::Gemini => Some("GEMINI_API_KEY"),
            RunnerKind::Builtin | RunnerKind::Command => None,
        }
    }
}

/// One reviewer in the line-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentSpec {
    /// Unique within a review; names the result file and the report column.
    pub name: String,
    /// How the agent runs.
    pub runner: RunnerKind,
    /// Model identifier passed to the runner, when it uses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Reasoning effort passed to the runner (`low`, `high`, …), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// How long the agent may run before it is stopped and reported as timed out.
    #[serde(with = "humantime_serde", default = "default_agent_timeout")]
    #[schemars(with = "String", example = &"15m")]
    pub timeout: Duration,
    /// The executable and its arguments, for the `command` runner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Agents of one family count as one opinion for consensus when configured so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// How the report names the reviewer, e.g. "Claude Opus 4.6"; defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Name of the environment variable holding the API key (model and CLI runners); the
    /// key itself never appears in configuration or on the queue. Defaults per runner,
    /// e.g. `ANTHROPIC_API_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// API endpoint for model runners, e.g. a local vLLM, Ollama or LiteLLM server for
    /// `openai`; defaults to the provider's public endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Most model turns (requests) a model runner may take; the last one must answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Most tokens (input plus output, over all turns) a model runner may spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Tokens the prompt may take; whole files of the diff are left out, and listed,
    /// beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Why this agent's findings are advisory, when they are: the line-up policy demoted
    /// it in this repository, or the operator runs it on trial. It runs and is recorded as
    /// usual, so its record can recover; but where others reported the same problem its
    /// severity vote does not count, and a problem only advisory agents reported stays a
    /// Suggestion unless deep-review's own verification confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisory: Option<String>,
}

fn default_agent_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

impl AgentSpec {
    /// An agent named `name` on `runner` with every option at its default: no model, a
    /// 15-minute timeout. Fill in the rest with struct update syntax.
    pub fn new(name: impl Into<String>, runner: RunnerKind) -> Self {
        AgentSpec {
            name: name.into(),
            runner,
            model: None,
            effort: None,
            timeout: default_agent_timeout(),
            command: Vec::new(),
            family: None,
            display_name: None,
            api_key_env: None,
            base_url: None,
            max_turns: None,
            max_tokens: None,
            prompt_tokens: None,
            advisory: None,
        }
    }

    /// Why this agent's runner cannot honour one of its settings, if it cannot: an
    /// `effort` or `base_url` the runner has no use for, or an effort level its provider
    /// does not know. A setting must never be accepted and then silently do nothing.
    pub fn unsupported_setting(&self) -> Option<String> {
        let runner = self.runner.as_str();
        if let Some(effort) = &self.effort {
            let levels: &[&str] = match self.runner {
                // Claude Code's `--effort` and the Messages API's `output_config.effort`.
                RunnerKind::ClaudeCode | RunnerKind::Anthropic => {
                    &["low", "medium", "high", "xhigh", "max"]
                }
                // Codex's `model_reasoning_effort` and Chat Completions' `reasoning_effort`.
                RunnerKind::Codex | RunnerKind::Openai => {
                    &["none", "minimal", "low", "medium", "high", "xhigh"]
                }
                // The Gemini API's `thinkingConfig.thinkingLevel`.
                RunnerKind::Gemini => &["minimal", "low", "medium", "high"],
                RunnerKind::Builtin | RunnerKind::Command | RunnerKind::GeminiCli => {
                    return Some(format!(
                        "agent `{}` sets `effort`, which the {runner} runner has no way to pass on; remove it",
                        self.name
                    ));
                }
            };
            if !levels.contains(&effort.as_str()) {
                return Some(format!(
                    "agent `{}` sets `effort = \"{effort}\"`, which the {runner} runner does not know; use one of {}",
                    self.name,
                    levels.join(", ")
                ));
            }
        }
        if self.base_url.is_some()
            && matches!(self.runner, RunnerKind::Builtin | RunnerKind::Command)
        {
            return Some(format!(
                "agent `{}` sets `base_url`, which the {runner} runner calls no endpoint with; remove it",
                self.name
            ));
        }
        None
    }

    /// The name the report shows.
    pub fn display(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }
}

/// Where the code under review comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// A repository on a filesystem every process can read.
    LocalRepo {
        /// Path of the repository's work tree.
        path: String,
        /// Base revision; the scheduler resolves it to a full SHA.
        base: String,
        /// Head revision; the scheduler resolves it to a full SHA.
        head: String,
    },
    /// A repository that workers clone or fetch into a local mirror.
    GitRemote {
        /// Clone URL.
        url: String,
        /// Full SHA of the base commit.
        base_sha: String,
        /// Full SHA of the head commit, the one reviewed.
        head_sha: String,
    },
    /// A plain unified diff with no repository behind it.
    InlineDiff {
        /// The diff text.
        diff: String,
    },
}

impl Source {
    /// The reviewed commit, when the source has one.
    pub fn head_revision(&self) -> Option<&str> {
        match self {
            Source::LocalRepo { head, .. } => Some(head),
            Source::GitRemote { head_sha, .. } => Some(head_sha),
            Source::InlineDiff { .. } => None,
        }
    }
}

/// One commit of the change, for the report header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CommitSummary {
    /// Full SHA.
    pub sha: String,
    /// First line of the message.
    pub subject: String,
}

/// What is known of the pull request (or local change) under review.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PullRequestMetadata {
    /// `owner/name`, or the local directory name; keys repo context between reviews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// PR number, absent for a local change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    /// PR title, or the head commit's subject for a local change. Untrusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Author login or commit author name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Head branch name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// PR description. Untrusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Commits of the change, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<CommitSummary>,
}

/// A review as the scheduler accepted it: the unit every task and the report belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReviewJob {
    /// Version of this message format.
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
    /// Unique review id, e.g. `20260415-103429-3f2a9c1d`.
    pub id: String,
    /// When the scheduler accepted the request.
    pub created_at: DateTime<Utc>,
    /// The code under review.
    pub source: Source,
    /// PR (or local change) metadata, when known.
    #[serde(default)]
    pub pull_request: PullRequestMetadata,
    /// The Nth review of the same PR; 1 for a first or local review.
    #[serde(default = "first_round")]
    pub round: u32,
    /// The agent line-up; one task is published per agent.
    pub agents: Vec<AgentSpec>,
    /// When the consolidator stops waiting and writes a partial report.
    pub deadline: DateTime<Utc>,
    /// Notes kept about the repository from earlier reviews (their repo context updates),
    /// handed to the agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_context: Vec<String>,
    /// Items declined in earlier rounds: listed as acknowledged limitations and not to be
    /// suggested again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declined: Vec<String>,
    /// Things the reader must know about how the review ran, e.g. that a spent budget
    /// switched it to a cheaper line-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// The previous round's findings, one line each (`[severity] path:line: title`), so
    /// agents check whether they were fixed instead of rediscovering them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_findings: Vec<String>,
    /// The W3C trace context (`traceparent`, `tracestate`) of the review's root span, so
    /// the workers' and the consolidator's spans join the scheduler's trace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace_context: BTreeMap<String, String>,
    /// What the repository's own `.deep-review.toml` asked for, within the operator's
    /// limits: paths left out of the review and severity rules.
    #[serde(default, skip_serializing_if = "RepositoryPolicy::is_default")]
    pub policy: RepositoryPolicy,
    /// The earlier round of the same pull request this review replaced; its report is
    /// never published, so what it started (a check run) must be closed by whoever
    /// started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
}

impl ReviewJob {
    /// A first-round review `id` of `source` by `agents`, accepted at `created_at` and due
    /// at `deadline`, with nothing else known: no pull request metadata, context, notices
    /// or repository rules. Fill in the rest with struct update syntax.
    pub fn new(
        id: impl Into<String>,
        created_at: DateTime<Utc>,
        source: Source,
        agents: Vec<AgentSpec>,
        deadline: DateTime<Utc>,
    ) -> Self {
        ReviewJob {
            schema_version: crate::SCHEMA_VERSION,
            id: id.into(),
            created_at,
            source,
            pull_request: PullRequestMetadata::default(),
            round: 1,
            agents,
            deadline,
            repository_context: Vec::new(),
            declined: Vec::new(),
            notices: Vec::new(),
            earlier_findings: Vec::new(),
            trace_context: BTreeMap::new(),
            policy: RepositoryPolicy::default(),
            supersedes: None,
        }
    }
}

/// A repository's own review rules (from `.deep-review.toml` on its default branch), as
/// far as the operator allows them. Carried in the job so workers and the consolidator
/// apply them without reading the repository's configuration again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RepositoryPolicy {
    /// Glob patterns (`generated/**`, `*.pb.go`) of paths whose changes agents never see;
    /// the report names the files left out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded_paths: Vec<String>,
    /// Overrides of the operator's consolidation rules.
    #[serde(skip_serializing_if = "SeverityRules::is_default")]
    pub severity: SeverityRules,
    /// How workers check the serious findings of this repository's reviews; absent, they
    /// verify nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationPolicy>,
}

/// A repository's verification command, from the `[verification]` table of its
/// `.deep-review.toml` on the default branch (never the PR's head: a PR must not choose
/// what runs to judge it). Workers run it with no secrets, no network and limits on time,
/// memory and output, in a fresh copy of the head commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationPolicy {
    /// The shell command that runs the repository's checks, e.g. `cargo test --offline`,
    /// `go test ./...` or `python -m pytest -q`. It must pick up a new test file by itself,
    /// so an agent's reproduction runs with it.
    pub command: String,
    /// Whether agents may propose a reproduction (a test file) for a finding.
    #[serde(default = "reproductions_by_default")]
    pub reproductions: bool,
}

fn reproductions_by_default() -> bool {
    true
}

impl RepositoryPolicy {
    /// Whether the policy asks for nothing (the operator's rules apply unchanged).
    pub fn is_default(&self) -> bool {
        self == &RepositoryPolicy::default()
    }
}

/// A repository's overrides of how severities and the verdict are decided; absent fields
/// keep the operator's setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SeverityRules {
    /// Whether findings only in test or mock code drop one severity level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower_test_code_findings: Option<bool>,
    /// Rework when at least this many critical findings remain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rework_min_critical: Option<usize>,
    /// Rework when at least this many important findings remain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rework_min_important: Option<usize>,
    /// Merge with fixes when at least this many important findings remain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixes_min_important: Option<usize>,
}

impl SeverityRules {
    /// Whether no rule is overridden.
    pub fn is_default(&self) -> bool {
        self == &SeverityRules::default()
    }
}

fn first_round() -> u32 {
    1
}

/// One agent's share of a review, as published on the task queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentTask {
    /// Version of this message format.
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
    /// Deterministic id `{review}:{agent}`, so redeliveries and re-publishes collapse.
    pub task_id: String,
    /// The agent to run.
    pub agent: AgentSpec,
    /// The review it belongs to, carried whole so a worker needs nothing else.
    pub job: ReviewJob,
}

impl AgentTask {
    /// Builds the task of `agent` in `job`, with its deterministic id.
    pub fn new(job: &ReviewJob, agent: &AgentSpec) -> Self {
        AgentTask {
            schema_version: crate::SCHEMA_VERSION,
            task_id: format!("{}:{}", job.id, agent.name),
            agent: agent.clone(),
            job: job.clone(),
        }
    }
}

/// What a `command` agent receives on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentInput {
    /// Version of this message format.
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
    /// The task, including the agent spec and the review job.
    pub task: AgentTask,
    /// The unified diff under review.
    pub diff: String,
    /// A checkout of the head commit the agent may read, when the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
}

/// What the result store records about a review when it is scheduled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReviewManifest {
    /// The review.
    pub job: ReviewJob,
    /// Names of the agents whose results complete the review.
    pub expected_agents: Vec<String>,
}

impl ReviewManifest {
    /// The manifest of `job`: every agent of its line-up is expected.
    pub fn for_job(job: &ReviewJob) -> Self {
        ReviewManifest {
            expected_agents: job.agents.iter().map(|agent| agent.name.clone()).collect(),
            job: job.clone(),
        }
    }
}

/// A request for a review, from the CLI, the HTTP API, a webhook or a sweep. The scheduler
/// turns it into a [`ReviewJob`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReviewRequest {
    /// Version of this message format.
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
    /// The code to review.
    pub source: Source,
    /// PR metadata the requester already knows; the scheduler fills gaps from git.
    #[serde(default)]
    pub pull_request: PullRequestMetadata,
    /// Round number, when the requester tracks rounds; 1 otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// Names of agents from the operator's line-up to run; empty means the whole line-up.
    /// Only names: a request can never define a runner, a command, an endpoint or the
    /// variable a key is read from, since whoever can reach the API could otherwise run
    /// code on the workers or send their secrets anywhere.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Items declined in earlier rounds ("do not re-suggest").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declined: Vec<String>,
    /// The repository's own rules, already checked against the operator's limits.
    #[serde(default, skip_serializing_if = "RepositoryPolicy::is_default")]
    pub policy: RepositoryPolicy,
    /// Daily budget of this repository in US dollars, when its configuration sets one
    /// below the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_usd_limit: Option<f64>,
    /// Things the report must tell the reader about how the request was made, e.g. that
    /// the repository's `.deep-review.toml` was ignored and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
}

impl ReviewRequest {
    /// A request to review `source` with nothing else known: the whole line-up, a first
    /// round, no repository rules. Fill in the rest with struct update syntax.
    pub fn for_source(source: Source) -> Self {
        ReviewRequest {
            schema_version: crate::SCHEMA_VERSION,
            source,
            pull_request: PullRequestMetadata::default(),
            round: None,
            agents: Vec::new(),
            declined: Vec::new(),
            policy: RepositoryPolicy::default(),
            daily_usd_limit: None,
            notices: Vec::new(),
        }
    }
}
