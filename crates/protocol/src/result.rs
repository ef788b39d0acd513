use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{default_schema_version, Finding, Severity};

/// How an agent's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// The agent finished and its output parsed.
    Completed,
    /// The agent crashed, could not start, or printed something unusable.
    Failed,
    /// The agent exceeded its timeout and was stopped.
    TimedOut,
    /// The review was superseded or shut down before the agent finished.
    Cancelled,
}

impl AgentStatus {
    /// Lower-case label for tables and progress lines.
    pub fn label(self) -> &'static str {
        match self {
            AgentStatus::Completed => "completed",
            AgentStatus::Failed => "failed",
            AgentStatus::TimedOut => "timed out",
            AgentStatus::Cancelled => "cancelled",
        }
    }
}

/// Tokens, cost and tool calls of one agent run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    /// Prompt tokens, as reported by the provider.
    #[serde(default)]
    pub input_tokens: u64,
    /// Completion tokens, as reported by the provider.
    #[serde(default)]
    pub output_tokens: u64,
    /// Cost in US dollars, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Tool calls by tool name, e.g. `{"Read": 18, "Bash": 11}`.
    #[serde(default)]
    pub tool_calls: BTreeMap<String, u64>,
}

impl Usage {
    /// Total tool calls across tools.
    pub fn total_tool_calls(&self) -> u64 {
        self.tool_calls.values().sum()
    }
}

/// Whether a design observation is a concern or a strength.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ObservationKind {
    /// Something to reconsider.
    Concern,
    /// Something done well, worth keeping.
    Strength,
}

/// Whether an observation should be acted on in this change or later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Within this change's scope.
    InScope,
    /// For a later change.
    Future,
}

/// A remark on the design rather than a defect at a line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DesignObservation {
    /// Concern or strength.
    #[serde(default = "default_observation_kind")]
    pub kind: ObservationKind,
    /// One line.
    pub title: String,
    /// Explanation in Markdown.
    #[serde(default)]
    pub body: String,
    /// In scope for this change or future work.
    #[serde(default = "default_scope")]
    pub scope: Scope,
}

fn default_observation_kind() -> ObservationKind {
    ObservationKind::Concern
}

fn default_scope() -> Scope {
    Scope::InScope
}

/// How an agent dealt with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileReviewStatus {
    /// Read and judged clean; a consolidated finding here counts as a coverage miss.
    ReviewedNoIssues,
    /// Read, and the agent reported something in it.
    HasFindings,
    /// Not reviewed; `reason` says why.
    Skipped,
}

/// One file's disposition in an agent's coverage summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileReview {
    /// Repository-relative path.
    pub path: String,
    /// What the agent did with it.
    pub status: FileReviewStatus,
    /// Why it was skipped, or any note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A file of the change left out of an agent's prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OmittedFile {
    /// Repository-relative path.
    pub path: String,
    /// Why it was left out, e.g. "lock file" or "over the prompt budget".
    pub reason: String,
}

/// Notes meant for the next review rather than for the PR author.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessNotes {
    /// Facts about the repository worth telling the next review of it.
    #[serde(default)]
    pub repo_context_updates: Vec<String>,
    /// Ways the prompt or skill could be improved.
    #[serde(default)]
    pub prompt_improvements: Vec<String>,
}

/// Everything one agent produced for one review.
///
/// Only `agent` is required, so hand-written results and other tools' output are accepted;
/// every list defaults to empty and `status` to completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentResult {
    /// Version of this format.
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
    /// The agent's name in the line-up.
    pub agent: String,
    /// Model used, for the report header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Effort used, for the report header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// How the run ended.
    #[serde(default = "default_status")]
    pub status: AgentStatus,
    /// Why it failed, timed out or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the agent finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Wall-clock duration of the run in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// Tokens, cost and tool calls.
    #[serde(default)]
    pub usage: Usage,
    /// Problems found.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Design concerns and strengths.
    #[serde(default)]
    pub design_observations: Vec<DesignObservation>,
    /// Missing tests, most risky first.
    #[serde(default)]
    pub testing_gaps: Vec<String>,
    /// Documentation remarks.
    #[serde(default)]
    pub documentation_notes: Vec<String>,
    /// Known limitations the change accepts, including items declined in earlier rounds.
    #[serde(default)]
    pub acknowledged_limitations: Vec<String>,
    /// Per-file coverage summary; drives the retro's coverage-miss count.
    #[serde(default)]
    pub files_reviewed: Vec<FileReview>,
    /// Notes for future reviews.
    #[serde(default)]
    pub process_notes: ProcessNotes,
    /// Files of the change the agent was not shown (its prompt budget ran out), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omitted_files: Vec<OmittedFile>,
    /// The agent's output as it printed it, kept for the appendix and for diagnosis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_output: Option<String>,
}

fn default_status() -> AgentStatus {
    AgentStatus::Completed
}

impl AgentResult {
    /// An empty completed result for `agent`, to be filled in.
    pub fn new(agent: impl Into<String>) -> Self {
        AgentResult {
            schema_version: crate::SCHEMA_VERSION,
            agent: agent.into(),
            model: None,
            effort: None,
            status: AgentStatus::Completed,
            error: None,
            started_at: None,
            finished_at: None,
            duration_ms: 0,
            usage: Usage::default(),
            findings: Vec::new(),
            design_observations: Vec::new(),
            testing_gaps: Vec::new(),
            documentation_notes: Vec::new(),
            acknowledged_limitations: Vec::new(),
            files_reviewed: Vec::new(),
            process_notes: ProcessNotes::default(),
            omitted_files: Vec::new(),
            raw_output: None,
        }
    }

    /// A result with no findings that records why the agent produced nothing usable.
    pub fn unsuccessful(
        agent: impl Into<String>,
        status: AgentStatus,
        error: impl Into<String>,
    ) -> Self {
        let mut result = AgentResult::new(agent);
        result.status = status;
        result.error = Some(error.into());
        result
    }

    /// Number of findings at `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.severity == severity)
            .count()
    }
}
