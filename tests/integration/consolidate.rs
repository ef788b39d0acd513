//! `deep-review consolidate` on hand-written agent results.

use deep_review_protocol::{Severity, Verdict};

use crate::util::{deep_review, expect_success, read_report};

const CLAUDE: &str = r#"{
  "agent": "claude",
  "duration_ms": 384000,
  "usage": {"tool_calls": {"Read": 18, "Bash": 11, "Agent": 1}},
  "findings": [
    {"id": "I1", "severity": "important", "title": "rancher-desktop namespace overwrites its own ownerReference",
     "body": "The For handler enqueues rancher-desktop itself.",
     "locations": [{"path": "pkg/mock/kube_namespace_reconciler.go", "start_line": 31, "end_line": 55}]},
    {"id": "S1", "severity": "suggestion", "title": "getVolumeName always returns a constant namespace",
     "locations": [{"path": "pkg/mock/volumes.go", "start_line": 12}]}
  ],
  "design_observations": [{"title": "For + Watches on the same type creates a footgun"}],
  "files_reviewed": [{"path": "pkg/mock/kube_namespace_reconciler.go", "status": "has_findings"}]
}"#;

const CODEX: &str = r#"{
  "agent": "codex",
  "duration_ms": 349000,
  "findings": [
    {"id": "F1", "severity": "important", "title": "Self-referential ownerReference on the rancher-desktop namespace",
     "locations": [{"path": "pkg/mock/kube_namespace_reconciler.go", "start_line": 41, "end_line": 55}],
     "verification": {"command": "kubectl get ns rancher-desktop -o yaml", "output": "ownerReferences: rancher-desktop", "outcome": "confirmed"}},
    {"id": "F2", "severity": "important", "title": "Namespace cache never invalidated",
     "locations": [{"path": "pkg/mock/cache.go", "start_line": 7}],
     "verification": {"command": "go test ./pkg/mock -run Cache", "output": "ok", "outcome": "refuted"}}
  ],
  "design_observations": [{"title": "A dedicated reconciler for a single static namespace adds complexity"}]
}"#;

const GEMINI: &str = r#"{
  "agent": "gemini",
  "duration_ms": 284000,
  "findings": [
    {"severity": "critical", "title": "rancher-desktop ownerReference points at itself",
     "locations": [{"path": "pkg/mock/kube_namespace_reconciler.go", "start_line": 49, "end_line": 55}]},
    {"severity": "suggestion", "title": "Missing IsNotFound handling causes retry churn",
     "locations": [{"path": "pkg/mock/kube_namespace_reconciler.go", "start_line": 31, "end_line": 35}]}
  ],
  "design_observations": [{"title": "For and Watches on the same type is a footgun"}],
  "files_reviewed": [{"path": "pkg/mock/volumes.go", "status": "reviewed_no_issues"}]
}"#;

fn write_agents(results: &[(&str, &str)]) -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    let agents = directory.path().join("agents");
    std::fs::create_dir_all(&agents).unwrap();
    for (name, content) in results {
        std::fs::write(agents.join(format!("{name}.json")), content).unwrap();
    }
    directory
}

#[test]
fn hand_written_results_are_consolidated() {
    let input = write_agents(&[("claude", CLAUDE), ("codex", CODEX), ("gemini", GEMINI)]);
    let out = tempfile::tempdir().unwrap();
    let stdout = expect_success(&deep_review(&[
        "consolidate",
        "--agents-dir",
        input.path().join("agents").to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]));
    assert!(stdout.contains("Verdict: Merge with fixes"), "{stdout}");
    let report = read_report(out.path());
    assert_eq!(report.verdict.verdict, Verdict::MergeWithFixes);

    // Three agents agree on the ownership bug; Gemini's Critical is outvoted.
    let ownership = &report.findings[0];
    assert_eq!(ownership.id, "I1");
    assert_eq!(ownership.severity, Severity::Important);
    assert_eq!(ownership.agents, vec!["claude", "codex", "gemini"]);
    assert_eq!(ownership.consensus, 3);
    assert_eq!(
        ownership
            .verification
            .as_ref()
            .map(|verification| verification.command.as_str()),
        Some("kubectl get ns rancher-desktop -o yaml")
    );
    assert!(report
        .reconciliations
        .iter()
        .any(|change| change.agent == "gemini"
            && change.from == Severity::Critical
            && change.to == Some(Severity::Important)));

    // The refuted finding is dropped as a false positive, with its reason.
    assert_eq!(report.dropped_findings.len(), 1);
    assert!(report.dropped_findings[0].reason.contains("refuted"));
    let codex = report
        .retro
        .iter()
        .find(|row| row.agent == "codex")
        .unwrap();
    assert_eq!((codex.false_positives, codex.dropped), (1, 1));

    // Each of the other findings is one agent's unique insight.
    let claude = report
        .retro
        .iter()
        .find(|row| row.agent == "claude")
        .unwrap();
    let gemini = report
        .retro
        .iter()
        .find(|row| row.agent == "gemini")
        .unwrap();
    assert_eq!(
        (
            claude.unique_insights,
            codex.unique_insights,
            gemini.unique_insights
        ),
        (1, 0, 1)
    );
    assert_eq!(gemini.downgraded, 1);
    assert_eq!(claude.tool_calls.values().sum::<u64>(), 30);
    // Gemini called volumes.go clean, but only a suggestion lies there: no coverage miss.
    assert!(gemini.coverage_misses.is_empty());
    assert_eq!(report.findings.len(), 3);
    assert_eq!(
        report.design_observations.len(),
        2,
        "the two footgun observations merge"
    );
}

#[test]
fn invalid_result_names_the_file_and_field() {
    let broken = r#"{"agent": "x", "findings": [{"severity": "blocker", "title": "t"}]}"#;
    let input = write_agents(&[("claude", CLAUDE), ("broken", broken)]);
    let out = tempfile::tempdir().unwrap();
    let output = deep_review(&[
        "consolidate",
        "--agents-dir",
        input.path().join("agents").to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.json"), "{stderr}");
    assert!(stderr.contains("findings[0].severity"), "{stderr}");
    assert!(stderr.contains("blocker"), "{stderr}");
    assert!(
        !out.path().join("report.json").exists(),
        "no report from incomplete input"
    );
}

#[test]
fn rebuilding_a_review_gives_the_same_findings() {
    let first = tempfile::tempdir().unwrap();
    let (_repository, output) =
        crate::util::review_known_problems(first.path(), &[], &["--quiet"], &[]);
    expect_success(&output);
    let second = tempfile::tempdir().unwrap();
    expect_success(&deep_review(&[
        "consolidate",
        "--agents-dir",
        first.path().join("agents").to_str().unwrap(),
        "--out",
        second.path().to_str().unwrap(),
    ]));
    let (original, rebuilt) = (read_report(first.path()), read_report(second.path()));
    assert_eq!(original.findings, rebuilt.findings);
    assert_eq!(original.verdict, rebuilt.verdict);
    assert_eq!(
        original.header.commits, rebuilt.header.commits,
        "the job beside agents/ is read back"
    );
}

#[test]
fn schema_describes_agent_results() {
    let stdout = expect_success(&deep_review(&["schema", "agent-result"]));
    let schema: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(schema["required"], serde_json::json!(["agent"]));
    assert!(schema["properties"]["findings"].is_object());
    let report: serde_json::Value =
        serde_json::from_str(&expect_success(&deep_review(&["schema", "report"]))).unwrap();
    assert!(report["properties"]["retro"].is_object());
}
