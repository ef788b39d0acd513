//! Consolidation speed: 5 agents × 200 findings (target: well under 100 ms), and how the
//! cost grows with the number of findings in one file (target: no worse than quadratic).

use std::hint::black_box;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use deep_review_consolidator::{consolidate, ConsolidationSettings};
use deep_review_protocol::{
    AgentResult, Finding, Location, ReviewJob, ReviewManifest, Severity, Source, SCHEMA_VERSION,
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
fn results(agents: usize, per_agent: usize, files: usize) -> Vec<AgentResult> {
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
                    }
                })
                .collect();
            result
        })
        .collect()
}

fn manifest(agents: usize) -> ReviewManifest {
    let now = Utc::now();
    ReviewManifest {
        job: ReviewJob {
            schema_version: SCHEMA_VERSION,
            id: "bench".into(),
            created_at: now,
            source: Source::InlineDiff {
                diff: String::new(),
            },
            pull_request: Default::default(),
            round: 1,
            agents: Vec::new(),
            deadline: now,
            repository_context: Vec::new(),
            declined: Vec::new(),
            notices: Vec::new(),
            earlier_findings: Vec::new(),
            trace_context: Default::default(),
            policy: Default::default(),
            supersedes: None,
        },
        expected_agents: (0..agents).map(|agent| format!("agent{agent}")).collect(),
    }
}

fn five_agents_by_two_hundred(criterion: &mut Criterion) {
    let manifest = manifest(5);
    let settings = ConsolidationSettings::default();
    let input = results(5, 200, 40);
    criterion.bench_function("consolidate 5 agents x 200 findings", |bencher| {
        bencher.iter(|| {
            consolidate(
                black_box(&manifest),
                black_box(input.clone()),
                &settings,
                Utc::now(),
            )
        })
    });
}

fn growth_within_one_file(criterion: &mut Criterion) {
    let manifest = manifest(5);
    let settings = ConsolidationSettings::default();
    let mut group = criterion.benchmark_group("findings in one file (5 agents)");
    for per_agent in [25, 50, 100, 200] {
        let input = results(5, per_agent, 1);
        group.bench_with_input(
            BenchmarkId::from_parameter(per_agent * 5),
            &input,
            |bencher, input| {
                bencher.iter(|| {
                    consolidate(
                        black_box(&manifest),
                        black_box(input.clone()),
                        &settings,
                        Utc::now(),
                    )
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, five_agents_by_two_hundred, growth_within_one_file);
criterion_main!(benches);
