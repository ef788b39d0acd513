//! The agent ledger: one entry per agent per published report, so that which agents are
//! worth their cost can be read across many reviews (`deep-review agents stats`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{AgentStatus, Report, SeverityCounts, VerificationOutcome};

/// What one agent did in one published review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LedgerEntry {
    /// The review it took part in; with `agent`, the entry's identity (recorded once).
    pub review_id: String,
    /// When the report was published.
    pub recorded_at: DateTime<Utc>,
    /// `owner/repo`, when the review named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The agent's name in the line-up.
    pub agent: String,
    /// Its runner (`claude-code`, `openai`…).
    pub runner: String,
    /// The model it used, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How its run ended; absent when its result never arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
    /// Its findings, by the severity it gave them.
    pub findings: SeverityCounts,
    /// Consolidated findings it alone reported.
    pub unique_insights: usize,
    /// Consolidated findings it reported that verification confirmed.
    pub confirmed: usize,
    /// Its findings that were refuted or dropped as wrong.
    pub false_positives: usize,
    /// Files it said were fine where a critical or important finding lies.
    pub coverage_misses: usize,
    /// Prompt tokens (cached included).
    pub input_tokens: u64,
    /// Generated tokens (reasoning included).
    pub output_tokens: u64,
    /// What it cost, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// How long it ran.
    pub duration_ms: u64,
}

impl LedgerEntry {
    /// The entries of `report`: one per agent of its retro.
    pub fn from_report(report: &Report, recorded_at: DateTime<Utc>) -> Vec<LedgerEntry> {
        report
            .retro
            .iter()
            .map(|row| {
                let reviewer = report
                    .header
                    .reviewers
                    .iter()
                    .find(|reviewer| reviewer.agent == row.agent);
                let confirmed = report
                    .findings
                    .iter()
                    .filter(|finding| finding.agents.contains(&row.agent))
                    .filter(|finding| {
                        finding
                            .verification
                            .as_ref()
                            .map(|verification| verification.outcome)
                            == Some(VerificationOutcome::Confirmed)
                    })
                    .count();
                LedgerEntry {
                    review_id: report.review_id.clone(),
                    recorded_at,
                    repository: report.header.repository.clone(),
                    agent: row.agent.clone(),
                    runner: reviewer
                        .map(|reviewer| reviewer.runner.clone())
                        .unwrap_or_default(),
                    model: reviewer.and_then(|reviewer| reviewer.model.clone()),
                    status: row.status,
                    findings: row.findings,
                    unique_insights: row.unique_insights,
                    confirmed,
                    false_positives: row.false_positives,
                    coverage_misses: row.coverage_misses.len(),
                    input_tokens: row.input_tokens,
                    output_tokens: row.output_tokens,
                    cost_usd: row.cost_usd,
                    duration_ms: row.duration_ms,
                }
            })
            .collect()
    }

    /// The key an entry is recorded under exactly once.
    pub fn key(&self) -> String {
        format!("{}:{}", self.review_id, self.agent)
    }
}

/// One agent's ledger entries summed: the figures `deep-review agents stats` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentStats {
    /// The agent's name.
    pub agent: String,
    /// Its runner.
    pub runner: String,
    /// Its model, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Reviews it took part in.
    pub reviews: usize,
    /// Runs that failed.
    pub failures: usize,
    /// Runs stopped at their timeout (or whose result never arrived).
    pub timeouts: usize,
    /// Its findings, by severity.
    pub findings: SeverityCounts,
    /// Findings it alone reported.
    pub unique_insights: usize,
    /// Findings verification confirmed.
    pub confirmed: usize,
    /// Findings refuted or dropped as wrong.
    pub false_positives: usize,
    /// Files it passed where a serious finding lay.
    pub coverage_misses: usize,
    /// Tokens, input plus output.
    pub tokens: u64,
    /// Known cost.
    pub cost_usd: f64,
    /// Time it ran, summed.
    pub duration_ms: u64,
}

impl AgentStats {
    /// Sums `entries` per agent, runner and model, most reviews first.
    pub fn summarise<'a>(entries: impl IntoIterator<Item = &'a LedgerEntry>) -> Vec<AgentStats> {
        let mut stats: BTreeMap<(String, String, Option<String>), AgentStats> = BTreeMap::new();
        for entry in entries {
            let key = (
                entry.agent.clone(),
                entry.runner.clone(),
                entry.model.clone(),
            );
            stats
                .entry(key)
                .or_insert_with(|| AgentStats::row_for(entry))
                .add(entry);
        }
        let mut rows: Vec<AgentStats> = stats.into_values().collect();
        Self::most_reviews_first(&mut rows);
        rows
    }

    /// Orders `rows` as the stats table shows them: most reviews first, then by name.
    pub fn most_reviews_first(rows: &mut [AgentStats]) {
        rows.sort_by(|left, right| {
            right
                .reviews
                .cmp(&left.reviews)
                .then(left.agent.cmp(&right.agent))
        });
    }

    /// An empty row for the agent, runner and model of `entry`.
    pub fn row_for(entry: &LedgerEntry) -> AgentStats {
        AgentStats {
            agent: entry.agent.clone(),
            runner: entry.runner.clone(),
            model: entry.model.clone(),
            ..AgentStats::default()
        }
    }

    /// Adds the counts of `other`, a row of the same agent (over other reviews).
    pub fn merge(&mut self, other: &AgentStats) {
        self.reviews += other.reviews;
        self.failures += other.failures;
        self.timeouts += other.timeouts;
        self.findings.critical += other.findings.critical;
        self.findings.important += other.findings.important;
        self.findings.suggestion += other.findings.suggestion;
        self.unique_insights += other.unique_insights;
        self.confirmed += other.confirmed;
        self.false_positives += other.false_positives;
        self.coverage_misses += other.coverage_misses;
        self.tokens += other.tokens;
        self.cost_usd += other.cost_usd;
        self.duration_ms += other.duration_ms;
    }

    /// Counts one more review, `entry`.
    pub fn add(&mut self, entry: &LedgerEntry) {
        self.reviews += 1;
        match entry.status {
            Some(AgentStatus::Failed) => self.failures += 1,
            Some(AgentStatus::TimedOut) | None => self.timeouts += 1,
            _ => {}
        }
        self.findings.critical += entry.findings.critical;
        self.findings.important += entry.findings.important;
        self.findings.suggestion += entry.findings.suggestion;
        self.unique_insights += entry.unique_insights;
        self.confirmed += entry.confirmed;
        self.false_positives += entry.false_positives;
        self.coverage_misses += entry.coverage_misses;
        self.tokens += entry.input_tokens + entry.output_tokens;
        self.cost_usd += entry.cost_usd.unwrap_or(0.0);
        self.duration_ms += entry.duration_ms;
    }

    /// Findings of every severity.
    pub fn total_findings(&self) -> usize {
        self.findings.critical + self.findings.important + self.findings.suggestion
    }

    /// Dollars per confirmed finding; absent with none confirmed.
    pub fn cost_per_confirmed(&self) -> Option<f64> {
        (self.confirmed > 0).then(|| self.cost_usd / self.confirmed as f64)
    }

    /// Share of its findings that nobody else reported.
    pub fn unique_insight_rate(&self) -> f64 {
        share(self.unique_insights, self.total_findings())
    }

    /// Share of its findings that were refuted or dropped.
    pub fn false_positive_rate(&self) -> f64 {
        share(self.false_positives, self.total_findings())
    }

    /// Share of its runs that failed or timed out.
    pub fn failure_rate(&self) -> f64 {
        share(self.failures + self.timeouts, self.reviews)
    }
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(agent: &str, status: AgentStatus, critical: usize, unique: usize) -> LedgerEntry {
        LedgerEntry {
            review_id: format!("r-{agent}-{critical}"),
            recorded_at: Utc::now(),
            repository: Some("acme/shop".to_string()),
            agent: agent.to_string(),
            runner: "command".to_string(),
            model: None,
            status: Some(status),
            findings: SeverityCounts {
                critical,
                important: 0,
                suggestion: 2,
            },
            unique_insights: unique,
            confirmed: critical,
            false_positives: 1,
            coverage_misses: 0,
            input_tokens: 100,
            output_tokens: 10,
            cost_usd: Some(0.5),
            duration_ms: 1000,
        }
    }

    #[test]
    fn stats_sum_entries_per_agent_and_give_the_rates() {
        let entries = [
            entry("claude", AgentStatus::Completed, 2, 1),
            entry("claude", AgentStatus::Completed, 0, 1),
            entry("claude", AgentStatus::Failed, 0, 0),
            entry("codex", AgentStatus::TimedOut, 0, 0),
        ];
        let stats = AgentStats::summarise(&entries);
        assert_eq!(stats[0].agent, "claude");
        let claude = &stats[0];
        assert_eq!(
            (claude.reviews, claude.failures, claude.timeouts),
            (3, 1, 0)
        );
        assert_eq!(claude.total_findings(), 8);
        assert_eq!(claude.confirmed, 2);
        assert_eq!(claude.cost_per_confirmed(), Some(0.75));
        assert!((claude.unique_insight_rate() - 0.25).abs() < 1e-12);
        assert!((claude.false_positive_rate() - 3.0 / 8.0).abs() < 1e-12);
        assert!((claude.failure_rate() - 1.0 / 3.0).abs() < 1e-12);
        let codex = &stats[1];
        assert_eq!((codex.timeouts, codex.cost_per_confirmed()), (1, None));
        assert_eq!(codex.failure_rate(), 1.0);
    }
}
