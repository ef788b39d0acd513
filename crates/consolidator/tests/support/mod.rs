//! Helpers shared by the consolidator's integration tests.

use chrono::{TimeZone, Utc};
use deep_review_protocol::{AgentResult, ReviewJob, ReviewManifest, Source, SCHEMA_VERSION};

/// A manifest expecting exactly the agents of `results`, created at a fixed time.
pub fn manifest(results: &[AgentResult]) -> ReviewManifest {
    let at = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    ReviewManifest {
        job: ReviewJob {
            schema_version: SCHEMA_VERSION,
            id: "test".into(),
            created_at: at,
            source: Source::InlineDiff {
                diff: String::new(),
            },
            pull_request: Default::default(),
            round: 1,
            agents: Vec::new(),
            deadline: at,
            repository_context: Vec::new(),
            declined: Vec::new(),
            notices: Vec::new(),
            earlier_findings: Vec::new(),
            trace_context: Default::default(),
            policy: Default::default(),
            supersedes: None,
        },
        expected_agents: results.iter().map(|result| result.agent.clone()).collect(),
    }
}
