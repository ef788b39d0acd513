use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    default_schema_version, AgentResult, AgentStatus, CommitSummary, DesignObservation, Finding,
    Location, ObservationKind, Scope, Severity, Tag, Verification,
};

/// The outcome a report recommends. deep-review never approves on GitHub; this is advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing blocks merging.
    Merge,
    /// Merge once the important findings are fixed.
    MergeWithFixes,
    /// Critical problems: rework before merging.
    Rework,
    /// The review could not run (no agent completed, or the change could not be read):
    /// nothing was reviewed, so nothing may be concluded, least of all Merge.
    Incomplete,
}

impl Verdict {
    /// Label as shown in the report header.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Merge => "Merge",
            Verdict::MergeWithFixes => "Merge with fixes",
            Verdict::Rework => "Rework",
            Verdict::Incomplete => "Incomplete",
        }
    }
}

/// The verdict and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VerdictDecision {
    /// The recommendation.
    pub verdict: Verdict,
    /// One line saying what decided it.
    pub reason: String,
}

/// One reviewer in the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReviewerLine {
    /// Agent name in the line-up.
    pub agent: String,
    /// Name shown to readers.
    pub display_name: String,
    /// Runner kind, e.g. `builtin`.
    pub runner: String,
    /// Model, when the agent used one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Effort, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
}

/// The report header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReportHeader {
    /// When the report was built.
    pub date: DateTime<Utc>,
    /// `owner/name` or the local directory name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// PR number, when reviewing a PR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_number: Option<u64>,
    /// PR title or head commit subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The Nth review of this PR.
    pub round: u32,
    /// PR or commit author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Head branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commits of the change, oldest first.
    #[serde(default)]
    pub commits: Vec<CommitSummary>,
    /// The head SHA reviewed; absent for a plain diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_sha: Option<String>,
    /// The line-up.
    pub reviewers: Vec<ReviewerLine>,
    /// From request accepted to report built, in milliseconds.
    pub wall_clock_ms: u64,
}

/// One agent's original report of a consolidated finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OriginalFinding {
    /// The agent that reported it.
    pub agent: String,
    /// The finding exactly as the agent reported it.
    pub finding: Finding,
}

/// A problem as the report presents it, merged across agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConsolidatedFinding {
    /// `C1`, `I2`, `S3`…: severity letter and rank within the severity.
    pub id: String,
    /// Reconciled severity.
    pub severity: Severity,
    /// Title of the representative report.
    pub title: String,
    /// Explanation in Markdown, from the representative report.
    pub body: String,
    /// Category, when any agent gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Regression or gap, when any agent determined it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    /// Union of all reports' locations, primary first.
    pub locations: Vec<Location>,
    /// Code excerpt, from the representative report or the first that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_excerpt: Option<String>,
    /// Fix, from the representative report or the first that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Agents that reported it, in line-up order.
    pub agents: Vec<String>,
    /// Distinct opinions behind it (agents, or families when families count as one).
    pub consensus: usize,
    /// Verification evidence, confirmed first, when any agent verified it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Every agent's original report, for the appendix and the retro.
    pub originals: Vec<OriginalFinding>,
    /// Why the reconciled severity differs from some agent's, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_note: Option<String>,
    /// Why each further agent's report was grouped into this finding, so a reader can
    /// audit the merge: empty when one agent reported it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grouping: Vec<GroupingEvidence>,
}

/// Which rule let two findings merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupingRule {
    /// They point at the same place and say the same thing there.
    SamePlace,
    /// They say the same thing (near-identical titles or quoted code) wherever they point.
    SameContent,
}

/// The evidence that put one agent's finding into a consolidated finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupingEvidence {
    /// The agent whose finding joined.
    pub agent: String,
    /// That agent's own id for the finding, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_id: Option<String>,
    /// The agent of the already grouped finding it matched best.
    pub matched_agent: String,
    /// Combined score from 0 to 1 against the best-matched finding, compared with the
    /// threshold.
    pub score: f64,
    /// Its mean score against every finding already in the group, which must reach four
    /// fifths of the threshold, so one good match cannot chain two different problems.
    pub group_mean: f64,
    /// The score a merge needs, as configured, so the margin is visible.
    pub threshold: f64,
    /// The rule that allowed the merge with the best-matched finding.
    pub rule: GroupingRule,
    /// Each signal behind the score, worded for a reader, e.g. `same line (src/a.rs:12)`.
    pub signals: Vec<String>,
}

/// A design observation, merged across agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConsolidatedObservation {
    /// Concern or strength.
    pub kind: ObservationKind,
    /// In scope or future.
    pub scope: Scope,
    /// Title.
    pub title: String,
    /// Body, from the first agent that reported it.
    pub body: String,
    /// Agents that made it.
    pub agents: Vec<String>,
    /// Each agent's original, for the appendix.
    pub originals: Vec<(String, DesignObservation)>,
}

/// A plain remark (testing gap, documentation note, limitation, repo context update)
/// with the agents that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttributedNote {
    /// The remark.
    pub text: String,
    /// Agents that made it.
    pub agents: Vec<String>,
}

/// A severity change or drop made by consolidation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reconciliation {
    /// The agent whose rating changed.
    pub agent: String,
    /// The agent's own id for the finding, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_id: Option<String>,
    /// The agent's title, to recognise it.
    pub title: String,
    /// The agent's severity.
    pub from: Severity,
    /// The consolidated severity; absent when the finding was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Severity>,
    /// The consolidated finding it became, when kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consolidated_id: Option<String>,
    /// Why.
    pub reason: String,
}

/// A finding consolidation removed, with the reason; nothing disappears unexplained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DroppedFinding {
    /// The agent that reported it.
    pub agent: String,
    /// The finding as reported.
    pub finding: Finding,
    /// Why it was dropped.
    pub reason: String,
}

/// An agent that did not deliver a usable result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FailedAgent {
    /// Agent name.
    pub agent: String,
    /// How it ended; absent when no result arrived before the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
    /// Why.
    pub reason: String,
}

/// Finding counts by severity, shown as `1C 2I 3S`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SeverityCounts {
    /// Critical findings.
    pub critical: usize,
    /// Important findings.
    pub important: usize,
    /// Suggestions.
    pub suggestion: usize,
}

impl SeverityCounts {
    /// Counts one more finding at `severity`.
    pub fn add(&mut self, severity: Severity) {
        match severity {
            Severity::Critical => self.critical += 1,
            Severity::Important => self.important += 1,
            Severity::Suggestion => self.suggestion += 1,
        }
    }

    /// Count at one severity.
    pub fn get(&self, severity: Severity) -> usize {
        match severity {
            Severity::Critical => self.critical,
            Severity::Important => self.important,
            Severity::Suggestion => self.suggestion,
        }
    }

    /// Sum over severities.
    pub fn total(&self) -> usize {
        self.critical + self.important + self.suggestion
    }
}

impl std::fmt::Display for SeverityCounts {
    /// `1C 2I 3S`, leaving out zeros; `none` when empty.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = Severity::MOST_SEVERE_FIRST
            .iter()
            .filter(|severity| self.get(**severity) > 0)
            .map(|severity| format!("{}{}", self.get(*severity), severity.letter()))
            .collect();
        if parts.is_empty() {
            formatter.write_str("none")
        } else {
            formatter.write_str(&parts.join(" "))
        }
    }
}

/// One agent's row and narrative in the performance retro.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentRetro {
    /// Agent name (`Total` for the totals row).
    pub agent: String,
    /// Name shown to readers.
    pub display_name: String,
    /// How its run ended; absent when no result arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
    /// Run duration in milliseconds.
    pub duration_ms: u64,
    /// Findings as the agent rated them.
    pub findings: SeverityCounts,
    /// Tool calls by tool name.
    pub tool_calls: BTreeMap<String, u64>,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost in US dollars, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Design observations made.
    pub design_observations: usize,
    /// Findings refuted by verification or dropped as wrong.
    pub false_positives: usize,
    /// Consolidated findings only this agent reported.
    pub unique_insights: usize,
    /// Files in its coverage summary that it reviewed (not skipped).
    pub files_reviewed: usize,
    /// Files it marked clean that hold a consolidated critical or important finding.
    pub coverage_misses: Vec<String>,
    /// Its findings rated lower after consolidation.
    pub downgraded: usize,
    /// Its findings rated higher after consolidation.
    pub upgraded: usize,
    /// Its findings removed by consolidation.
    pub dropped: usize,
    /// A short deterministic account of what it contributed and missed.
    pub narrative: String,
}

/// The consolidated review: everything every renderer needs, and nothing renderer-specific.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Version of this format.
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
    /// The review this reports on.
    pub review_id: String,
    /// Header facts.
    pub header: ReportHeader,
    /// Verdict and reason.
    pub verdict: VerdictDecision,
    /// A summary that reads on its own.
    pub executive_summary: String,
    /// True when some expected agent delivered nothing before the deadline.
    pub partial: bool,
    /// Findings, most severe first, with ids.
    pub findings: Vec<ConsolidatedFinding>,
    /// Design concerns and strengths.
    pub design_observations: Vec<ConsolidatedObservation>,
    /// Missing tests, in the order agents ranked them.
    pub testing_gaps: Vec<AttributedNote>,
    /// Documentation remarks.
    pub documentation_notes: Vec<AttributedNote>,
    /// Accepted limitations and declined items ("do not re-suggest").
    pub acknowledged_limitations: Vec<AttributedNote>,
    /// Per-agent retro, in line-up order.
    pub retro: Vec<AgentRetro>,
    /// Sums over agents.
    pub retro_totals: AgentRetro,
    /// Every severity change and drop, with its reason.
    pub reconciliations: Vec<Reconciliation>,
    /// Findings removed, with reasons.
    pub dropped_findings: Vec<DroppedFinding>,
    /// Agents that failed, timed out, were cancelled or never answered.
    pub failed_agents: Vec<FailedAgent>,
    /// Parts of the change no agent saw (e.g. left out of the diff budget), and why.
    pub omitted_content: Vec<String>,
    /// How the review ran differently from the configuration (e.g. a cheaper line-up
    /// because a cost budget was spent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// Repo context updates for the next review of this repository.
    pub repo_context_updates: Vec<AttributedNote>,
    /// Prompt or skill improvements suggested by the agents.
    pub prompt_improvements: Vec<AttributedNote>,
    /// Every agent's result as received.
    pub appendix: Vec<AgentResult>,
}

impl Report {
    /// The name the report shows for `agent`: its display name in the line-up, else itself.
    pub fn display_name(&self, agent: &str) -> String {
        self.header
            .reviewers
            .iter()
            .find(|reviewer| reviewer.agent == agent)
            .map(|reviewer| reviewer.display_name.clone())
            .unwrap_or_else(|| agent.to_string())
    }

    /// Display names of `agents`, in the given order.
    pub fn display_names(&self, agents: &[String]) -> Vec<String> {
        agents
            .iter()
            .map(|agent| self.display_name(agent))
            .collect()
    }
}
