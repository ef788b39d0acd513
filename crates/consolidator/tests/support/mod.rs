//! Helpers shared by the consolidator's integration tests.

use chrono::{TimeZone, Utc};
use deep_review_protocol::{AgentResult, ReviewJob, ReviewManifest, Source};

/// A manifest expecting exactly the agents of `results`, created at a fixed time.
pub fn manifest(results: &[AgentResult]) -> ReviewManifest {
    let at = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    ReviewManifest {
        job: ReviewJob::new(
            "test",
            at,
            Source::InlineDiff {
                diff: String::new(),
            },
            Vec::new(),
            at,
        ),
        expected_agents: results.iter().map(|result| result.agent.clone()).collect(),
    }
}
