//! Properties of consolidation over generated agent results.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use deep_review_consolidator::{consolidate, ConsolidationSettings};
use deep_review_protocol::{AgentResult, Finding, Location, Report, ReviewManifest, Severity};
use proptest::prelude::*;

mod support;
use support::manifest;

const PATHS: [&str; 3] = ["src/a.rs", "src/b.rs", "tests/c.rs"];
const TITLES: [&str; 6] = [
    "Null pointer dereference in parser",
    "Parser dereferences a null pointer",
    "Unbounded retry loop",
    "Retry loop never backs off",
    "Secret logged at info level",
    "Rename helper for clarity",
];

fn severity(index: u8) -> Severity {
    [
        Severity::Suggestion,
        Severity::Important,
        Severity::Critical,
    ][usize::from(index % 3)]
}

fn finding_strategy() -> impl Strategy<Value = Finding> {
    (
        0..PATHS.len(),
        1u32..60,
        0u32..4,
        0..TITLES.len(),
        any::<u8>(),
    )
        .prop_map(|(path, start, length, title, rating)| Finding {
            id: None,
            severity: severity(rating),
            title: TITLES[title].to_string(),
            body: String::new(),
            category: None,
            tag: None,
            locations: vec![Location::lines(PATHS[path], start, start + length)],
            code_excerpt: None,
            fix: None,
            confidence: None,
            verification: None,
            reproduction: None,
        })
}

fn results_strategy() -> impl Strategy<Value = Vec<AgentResult>> {
    prop::collection::vec(prop::collection::vec(finding_strategy(), 0..8), 1..5).prop_map(
        |agents| {
            agents
                .into_iter()
                .enumerate()
                .map(|(index, findings)| {
                    let mut result = AgentResult::new(format!("agent{index}"));
                    result.findings = findings;
                    result
                })
                .collect()
        },
    )
}

fn run(results: Vec<AgentResult>) -> Report {
    let manifest = manifest(&results);
    run_with(&manifest, results)
}

/// Consolidates `results` (in their arrival order) for the line-up in `manifest`.
fn run_with(manifest: &ReviewManifest, results: Vec<AgentResult>) -> Report {
    consolidate(
        manifest,
        results,
        &ConsolidationSettings::default(),
        manifest.job.created_at,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arrival_order_does_not_matter(results in results_strategy(), rotation in 0usize..5, reverse_findings in any::<bool>()) {
        let line_up = manifest(&results);
        let expected = run_with(&line_up, results.clone());
        let mut shuffled = results;
        let turns = rotation % shuffled.len();
        shuffled.rotate_left(turns);
        if reverse_findings {
            for result in &mut shuffled {
                result.findings.reverse();
            }
        }
        let actual = run_with(&line_up, shuffled);
        prop_assert_eq!(&actual.findings, &expected.findings);
        prop_assert_eq!(&actual.verdict, &expected.verdict);
        prop_assert_eq!(&actual.reconciliations, &expected.reconciliations);
        prop_assert_eq!(&actual.retro, &expected.retro);
    }

    #[test]
    fn no_finding_is_lost_and_no_agent_is_counted_twice(results in results_strategy()) {
        let total: usize = results.iter().map(|result| result.findings.len()).sum();
        let report = run(results);
        let kept: usize = report.findings.iter().map(|finding| finding.originals.len()).sum();
        prop_assert_eq!(kept + report.dropped_findings.len(), total);
        for finding in &report.findings {
            let mut agents = finding.agents.clone();
            agents.sort();
            agents.dedup();
            prop_assert_eq!(agents.len(), finding.agents.len(), "one agent twice in {:?}", finding.agents);
            prop_assert_eq!(finding.consensus, finding.agents.len());
        }
        let severities: Vec<Severity> = report.findings.iter().map(|finding| finding.severity).collect();
        let mut sorted = severities.clone();
        sorted.sort_by(|left, right| right.cmp(left));
        prop_assert_eq!(severities, sorted, "most severe first");
    }
}
