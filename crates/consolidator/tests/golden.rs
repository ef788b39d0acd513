//! Golden files for the three renderers. The report is built from the seed-000 fixture with
//! a fixed clock. After an intended change, rerun with `UPDATE_GOLDEN=1` and review the diff.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use deep_review_consolidator::{consolidate, render, ConsolidationSettings};
use deep_review_protocol::{
    parse_agent_result, AgentSpec, CommitSummary, PullRequestMetadata, Report, ReviewJob,
    ReviewManifest, RunnerKind, Source,
};

fn fixture_report() -> Report {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/seeds/000/agents");
    let results = ["claude", "codex", "gemini"]
        .iter()
        .map(|agent| {
            let text =
                std::fs::read_to_string(root.join(format!("{agent}.json"))).expect("fixture");
            parse_agent_result(&text).expect("valid fixture")
        })
        .collect();
    let created = Utc
        .with_ymd_and_hms(2026, 3, 15, 10, 0, 0)
        .single()
        .expect("date");
    let finished = Utc
        .with_ymd_and_hms(2026, 3, 15, 10, 19, 7)
        .single()
        .expect("date");
    let agent = |name: &str, display: &str, model: &str| AgentSpec {
        model: Some(model.to_string()),
        effort: Some("high".to_string()),
        timeout: std::time::Duration::from_secs(900),
        command: vec![format!("{name}-agent")],
        display_name: Some(display.to_string()),
        ..AgentSpec::new(name.to_string(), RunnerKind::Command)
    };
    let job = ReviewJob {
        pull_request: PullRequestMetadata {
            repository: Some("rancher-sandbox/rancher-desktop-daemon".to_string()),
            number: Some(188),
            title: Some("mock: namespaces: ensure we have all namespaces".to_string()),
            author: Some("jandubois".to_string()),
            branch: Some("mock-namespaces".to_string()),
            body: None,
            commits: vec![
                CommitSummary {
                    sha: "513f44d".to_string() + &"0".repeat(33),
                    subject: "API: containers: make pid optional".to_string(),
                },
                CommitSummary {
                    sha: "29d5ae6".to_string() + &"0".repeat(33),
                    subject: "mock: namespaces: ensure we have all namespaces".to_string(),
                },
            ],
        },
        ..ReviewJob::new(
            "20260315-100000-golden00",
            created,
            Source::GitRemote {
                url: "https://github.com/rancher-sandbox/rancher-desktop-daemon.git".to_string(),
                base_sha: "1".repeat(40),
                head_sha: "29d5ae6".to_string() + &"0".repeat(33),
            },
            vec![
                agent("claude", "Claude Opus 4.6", "claude-opus-4-6"),
                agent("codex", "Codex GPT 5.4", "gpt-5.4"),
                agent("gemini", "Gemini 3.1 Pro", "gemini-3.1-pro"),
            ],
            finished,
        )
    };
    consolidate(
        &ReviewManifest::for_job(&job),
        results,
        &ConsolidationSettings::default(),
        finished,
    )
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .position(|(left, right)| left != right)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from its golden file at line {}:\n  golden: {:?}\n  actual: {:?}\nrerun with UPDATE_GOLDEN=1 if the change is intended",
            first_difference + 1,
            expected.lines().nth(first_difference),
            actual.lines().nth(first_difference)
        );
    }
}

#[test]
fn markdown_matches_its_golden_file() {
    check("report.md", &render::markdown::render(&fixture_report()));
}

#[test]
fn html_matches_its_golden_file() {
    check("report.html", &render::html::render(&fixture_report()));
}

#[test]
fn json_matches_its_golden_file_and_reads_back() {
    let report = fixture_report();
    let json = render::json(&report).expect("json");
    check("report.json", &json);
    let read_back: Report = serde_json::from_str(&json).expect("report.json parses");
    assert_eq!(read_back, report);
}

/// `report.sarif` is a valid SARIF 2.1.0 log (checked against the OASIS schema, vendored
/// in `tests/schemas/`), matches its golden file, and carries every finding with its level
/// and locations.
#[test]
fn sarif_is_valid_against_the_sarif_schema_and_matches_its_golden_file() {
    let report = fixture_report();
    let text = render::sarif::render(&report).expect("sarif");
    check("report.sarif", &text);
    let log: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schema_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/sarif-schema-2.1.0.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "report.sarif breaks the schema: {errors:#?}"
    );

    let results = log["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), report.findings.len());
    for (result, finding) in results.iter().zip(&report.findings) {
        let expected = match finding.severity {
            deep_review_protocol::Severity::Critical => "error",
            deep_review_protocol::Severity::Important => "warning",
            deep_review_protocol::Severity::Suggestion => "note",
        };
        assert_eq!(result["level"], expected);
        assert!(result["message"]["text"]
            .as_str()
            .unwrap()
            .starts_with(&finding.title));
        assert_eq!(
            result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            finding.locations[0].path.as_str()
        );
        assert_eq!(
            result["properties"]["agents"],
            serde_json::json!(finding.agents)
        );
    }

    // A schema check that cannot fail proves nothing: a log missing a result's message is
    // refused.
    let mut broken = log.clone();
    broken["runs"][0]["results"][0]
        .as_object_mut()
        .unwrap()
        .remove("message");
    assert!(!validator.is_valid(&broken));
}
