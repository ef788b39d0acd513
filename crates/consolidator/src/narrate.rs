//! The optional model-written pass over a built report: it rewrites the executive summary
//! and the retro's per-agent narratives. The deterministic text stays whenever the pass is
//! off or fails, and the report says which one the reader has.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deep_review_protocol::{Report, ReviewJob};

/// What a narrator wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narration {
    /// The new executive summary (Markdown).
    pub executive_summary: String,
    /// New narratives by agent name; agents left out keep theirs.
    pub narratives: BTreeMap<String, String>,
    /// Who wrote it, for the notice, e.g. "claude-sonnet-4-5".
    pub author: String,
}

/// Rewrites a report's prose from its structure, e.g. with a model.
#[async_trait]
pub trait Narrator: Send + Sync {
    /// The summary and narratives for `report` of `job`, or why there are none.
    async fn narrate(&self, report: &Report, job: &ReviewJob) -> Result<Narration, String>;
}

/// Longest summary accepted, in characters; a longer one is a model gone astray.
const LONGEST_SUMMARY: usize = 6_000;

/// Longest narrative accepted, in characters.
const LONGEST_NARRATIVE: usize = 3_000;

/// Applies `narrator`'s text to `report`, or keeps the deterministic text and says why.
pub async fn narrate(narrator: &dyn Narrator, report: &mut Report, job: &ReviewJob) {
    let outcome = narrator
        .narrate(report, job)
        .await
        .and_then(|narration| checked(narration, report));
    match outcome {
        Ok(narration) => {
            report.executive_summary = narration.executive_summary;
            for row in &mut report.retro {
                if let Some(narrative) = narration.narratives.get(&row.agent) {
                    row.narrative = narrative.clone();
                }
            }
            report.notices.push(format!(
                "The executive summary and the agents' narratives were written by {} from this \
                 report's findings; every number and finding above is the deterministic \
                 consolidation's.",
                narration.author
            ));
        }
        Err(error) => {
            tracing::warn!(%error, review = %report.review_id, "the summary pass failed; keeping the deterministic summary");
            report.notices.push(format!(
                "The model-written summary pass failed ({error}); the summary and narratives \
                 are the deterministic ones."
            ));
        }
    }
}

/// Refuses empty, oversized or misattributed text.
fn checked(narration: Narration, report: &Report) -> Result<Narration, String> {
    let summary = narration.executive_summary.trim();
    if summary.is_empty() {
        return Err("it wrote an empty summary".to_string());
    }
    if summary.chars().count() > LONGEST_SUMMARY {
        return Err(format!("its summary is over {LONGEST_SUMMARY} characters"));
    }
    for (agent, narrative) in &narration.narratives {
        if !report.retro.iter().any(|row| &row.agent == agent) {
            return Err(format!(
                "it wrote a narrative for `{agent}`, who is not in the review"
            ));
        }
        if narrative.trim().is_empty() || narrative.chars().count() > LONGEST_NARRATIVE {
            return Err(format!(
                "its narrative for `{agent}` is empty or over {LONGEST_NARRATIVE} characters"
            ));
        }
    }
    Ok(Narration {
        executive_summary: summary.to_string(),
        ..narration
    })
}
