//! Synthetic agent results shared by the consolidation benchmarks.

use chrono::Utc;
use deep_review_protocol::{
    AgentResult, Finding, Location, ReviewJob, ReviewManifest, Severity, Source,
};

const WORDS: [&str; 24] = [
    "null",
    "pointer",
    "parser",
    "retry",
    "loop",
    "secret",
    "logged",
    "race",
    "counter",
    "lock",
    "deadlock",
    "overflow",
    "index",
    "bounds",
    "timeout",
    "leak",
    "handle",
    "cache",
    "stale",
    "ownership",
    "finalizer",
    "namespace",
    "condition",
    "generation",
];

/// `agents` results of `per_agent` findings spread over `files` files, with titles drawn
/// from a small vocabulary so that agents agree on some findings.
pub fn results(agents: usize, per_agent: usize, files: usize) -> Vec<AgentResult> {
    (0..agents)
        .map(|agent| {
            let mut result = AgentResult::new(format!("agent{agent}"));
            result.findings = (0..per_agent)
                .map(|index| {
                    let seed = index * 7 + agent * 3;
                    let title = format!(
                        "{} {} {} in {}",
                        WORDS[seed % 24],
                        WORDS[(seed / 3) % 24],
                        WORDS[(index * 5) % 24],
                        WORDS[(index + agent) % 24]
                    );
                    let line = u32::try_from((index * 13 + agent) % 2000 + 1).unwrap_or(1);
                    Finding {
                        id: Some(format!("F{index}")),
                        severity: [
                            Severity::Suggestion,
                            Severity::Important,
                            Severity::Critical,
                        ][seed % 3],
                        title,
                        body: format!(
                            "Explanation {index}: {} then {}.",
                            WORDS[(seed + 5) % 24],
                            WORDS[(seed + 11) % 24]
                        ),
                        category: None,
                        tag: None,
                        locations: vec![Location::lines(
                            format!("src/file{}.rs", index % files),
                            line,
                            line + 3,
                        )],
                        code_excerpt: None,
                        fix: None,
                        confidence: None,
                        verification: None,
                        reproduction: None,
                    }
                })
                .collect();
            result
        })
        .collect()
}

pub fn manifest(agents: usize) -> ReviewManifest {
    let now = Utc::now();
    ReviewManifest {
        job: ReviewJob::new(
            "bench",
            now,
            Source::InlineDiff {
                diff: String::new(),
            },
            Vec::new(),
            now,
        ),
        expected_agents: (0..agents).map(|agent| format!("agent{agent}")).collect(),
    }
}
